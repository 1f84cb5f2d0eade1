//! The user's `ALTER TABLE` statement: which table it names, and the text applied to the shadow
//! table with only the table name replaced (never a re-serialised AST).
//!
//! # Design decisions
//! A small lexer (identifiers, quoted strings, comments) is enough to find the table name and
//! to refuse, before anything is touched, clauses shoal cannot run exactly: renames of the table
//! or of columns (`RENAME TO`, `RENAME COLUMN`, `CHANGE`), `ALGORITHM=`/`LOCK=` (shoal picks the
//! algorithm itself), partitioning, and several statements in one. Refusing is better than a
//! silent loss: column renames will be supported when the column mapping understands them.

use shoal_common::sql::{quote_identifier, quote_qualified};

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not an `ALTER TABLE` statement.
    #[error(
        "not an ALTER TABLE statement: {0:?}; pass e.g. --alter 'ALTER TABLE t ADD COLUMN c INT'"
    )]
    NotAlter(String),
    /// The statement has no changes after the table name.
    #[error("ALTER TABLE {0} has no changes")]
    Empty(String),
    /// A quoted identifier or string is not closed.
    #[error("unterminated quote in the ALTER statement")]
    Unterminated,
    /// Several statements.
    #[error("the ALTER contains ';': pass exactly one statement")]
    MultipleStatements,
    /// An executable comment, which the server runs as code.
    #[error(
        "the ALTER contains an executable comment (/*! … */ or /*M! … */), which the server runs \
         as code: write its content as plain SQL, or remove it"
    )]
    ExecutableComment,
    /// A clause shoal refuses.
    #[error("{clause} is not supported: {why}")]
    Unsupported {
        /// The clause.
        clause: &'static str,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// `CHANGE` renaming a column.
    #[error(
        "CHANGE COLUMN is not supported when it renames (`{old}` to `{new}`): renames are refused \
         until shoal maps renamed columns exactly; to change only the definition, name the column \
         twice (CHANGE `{old}` `{old}` …) or use MODIFY"
    )]
    RenamingChange {
        /// The column's name.
        old: String,
        /// The name it would get.
        new: String,
    },
    /// A column dropped and added again in one statement.
    #[error(
        "the ALTER drops column `{0}` and adds it again; shoal maps columns by name and would \
         carry the old values into the new column: run the DROP and the ADD as two migrations"
    )]
    DropAndAdd(String),
    /// A name the server would refuse.
    #[error("{0}")]
    BadName(String),
    /// The statement names another schema than the one connected to.
    #[error("the ALTER names schema `{named}` but the DSN selects `{connected}`; they must match")]
    OtherSchema {
        /// Schema in the statement.
        named: String,
        /// Schema of the connection.
        connected: String,
    },
}

/// A parsed `ALTER TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterStatement {
    /// Schema named in the statement, if qualified.
    pub schema: Option<String>,
    /// Table named in the statement.
    pub table: String,
    /// Everything after the table name, verbatim.
    pub changes: String,
    /// Whether the statement sets the table's `AUTO_INCREMENT` counter itself (then the
    /// source's counter is not carried over).
    pub sets_auto_increment: bool,
    /// Columns the statement drops, as written: a source column missing from the shadow table
    /// must be one of them, or shoal refuses (a column it cannot map would be lost).
    pub dropped_columns: Vec<String>,
}

/// Whether two column names written by a user name the same column: the servers compare column
/// names in lower case (accents count). Rust's lower case is close to the server's, not equal;
/// this only refuses a statement early. The column mapping asks the server
/// ([`super::columns::name_keys`]).
pub fn same_column_name(left: &str, right: &str) -> bool {
    left.to_lowercase() == right.to_lowercase()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Bare word (keyword or identifier), uppercased for comparison, with its original text.
    Word(String, String),
    /// Backquoted identifier, unescaped.
    Quoted(String),
    /// A string literal (content irrelevant).
    Literal,
    /// Any other character.
    Symbol(char),
}

/// What the lexer does with an executable comment (`/*! … */`, `/*M! … */`), which the server
/// runs as code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Executable {
    /// Refuse it: a user's ALTER must say what it does in plain text.
    Refuse,
    /// Read its content as code, as the server does (statements found in the binlog).
    AsCode,
}

/// Whether the byte after `--` makes it a comment: the server's rule is a whitespace or control
/// character (or the end of the text); `1--1` is one minus minus one.
fn starts_dash_comment(next: Option<&u8>) -> bool {
    next.is_none_or(|&byte| byte.is_ascii_whitespace() || byte.is_ascii_control())
}

/// Tokens with the byte offset just past each, read as the server reads them under shoal's own
/// `sql_mode` (no `ANSI_QUOTES`, no `NO_BACKSLASH_ESCAPES`): `#` and `-- ` comments to the end of
/// the line, `/* */` comments, quoted strings with backslash and doubled-quote escapes, and
/// backquoted identifiers.
fn lex(text: &str, executable: Executable) -> Result<Vec<(Token, usize)>, Error> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut index = 0;
    // Inside an executable comment read as code: its closing `*/` is not a token.
    let mut in_executable = false;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            // The server's spaces: `\t \n \v \f \r` and the space (Rust's ASCII whitespace
            // lacks `\v`).
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => index += 1,
            // The server may end the statement there: nothing after it could be vetted.
            0 => {
                return Err(Error::Unsupported {
                    clause: "a NUL byte",
                    why: "remove it from the statement",
                });
            }
            b'-' if bytes.get(index + 1) == Some(&b'-')
                && starts_dash_comment(bytes.get(index + 2)) =>
            {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'#' => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'*' if in_executable && bytes.get(index + 1) == Some(&b'/') => {
                in_executable = false;
                index += 2;
            }
            b'/' if bytes.get(index + 1) == Some(&b'*') => {
                let body = &text[index + 2..];
                let marker = if body.starts_with('!') {
                    Some(1)
                } else if body.starts_with("M!") {
                    Some(2)
                } else {
                    None
                };
                match (marker, executable) {
                    (Some(_), Executable::Refuse) => return Err(Error::ExecutableComment),
                    (Some(length), Executable::AsCode) => {
                        if in_executable {
                            return Err(Error::ExecutableComment);
                        }
                        in_executable = true;
                        index += 2 + length;
                        // The optional server version: the content runs on newer servers.
                        while index < bytes.len() && bytes[index].is_ascii_digit() {
                            index += 1;
                        }
                    }
                    (None, _) => {
                        let end = body.find("*/").ok_or(Error::Unterminated)?;
                        index += 2 + end + 2;
                    }
                }
            }
            b'`' => {
                let mut name = String::new();
                index += 1;
                loop {
                    let Some(&next) = bytes.get(index) else {
                        return Err(Error::Unterminated);
                    };
                    if next == b'`' {
                        if bytes.get(index + 1) == Some(&b'`') {
                            name.push('`');
                            index += 2;
                            continue;
                        }
                        index += 1;
                        break;
                    }
                    let ch = text[index..].chars().next().ok_or(Error::Unterminated)?;
                    name.push(ch);
                    index += ch.len_utf8();
                }
                tokens.push((Token::Quoted(name), index));
            }
            b'\'' | b'"' => {
                let quote = byte;
                index += 1;
                loop {
                    let Some(&next) = bytes.get(index) else {
                        return Err(Error::Unterminated);
                    };
                    if next == b'\\' {
                        index += 2;
                        continue;
                    }
                    if next == quote {
                        if bytes.get(index + 1) == Some(&quote) {
                            index += 2;
                            continue;
                        }
                        index += 1;
                        break;
                    }
                    index += 1;
                }
                tokens.push((Token::Literal, index));
            }
            _ if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80 => {
                let start = index;
                while index < bytes.len() {
                    let next = bytes[index];
                    if next.is_ascii_alphanumeric() || next == b'_' || next == b'$' || next >= 0x80
                    {
                        index += 1;
                    } else {
                        break;
                    }
                }
                let word = &text[start..index];
                tokens.push((
                    Token::Word(word.to_ascii_uppercase(), word.to_owned()),
                    index,
                ));
            }
            _ => {
                let ch = text[index..].chars().next().ok_or(Error::Unterminated)?;
                index += ch.len_utf8();
                tokens.push((Token::Symbol(ch), index));
            }
        }
    }
    if in_executable {
        return Err(Error::Unterminated);
    }
    Ok(tokens)
}

fn is_word(token: Option<&(Token, usize)>, keyword: &str) -> bool {
    matches!(token, Some((Token::Word(upper, _), _)) if upper == keyword)
}

fn identifier(token: Option<&(Token, usize)>) -> Option<(String, usize)> {
    match token {
        Some((Token::Quoted(name), end)) => Some((name.clone(), *end)),
        Some((Token::Word(_, original), end)) => Some((original.clone(), *end)),
        _ => None,
    }
}

/// Keywords after `ADD` / `DROP` that name something other than a column.
const NOT_A_COLUMN: [&str; 13] = [
    "INDEX",
    "KEY",
    "UNIQUE",
    "PRIMARY",
    "FOREIGN",
    "CONSTRAINT",
    "FULLTEXT",
    "SPATIAL",
    "CHECK",
    "PARTITION",
    "PERIOD",
    "SYSTEM",
    "VECTOR",
];

/// The columns a clause starting at `tokens[0]` (`ADD` or `DROP`) names: one, several for
/// `ADD [COLUMN] (a INT, b INT)`, or none for an index, key or constraint.
fn clause_columns(tokens: &[(Token, usize)]) -> Vec<String> {
    let mut at = 1;
    if is_word(tokens.get(at), "COLUMN") {
        at += 1;
    }
    // `IF EXISTS` / `IF NOT EXISTS`.
    if is_word(tokens.get(at), "IF") {
        at += 1;
        if is_word(tokens.get(at), "NOT") {
            at += 1;
        }
        at += 1;
    }
    match tokens.get(at) {
        Some((Token::Word(upper, _), _)) if NOT_A_COLUMN.contains(&upper.as_str()) => Vec::new(),
        Some((Token::Symbol('('), _)) => {
            // A parenthesised list: each element at depth 1 starts with its column's name.
            let mut names = Vec::new();
            let mut depth = 0;
            let mut element_starts = true;
            for (position, (token, _)) in tokens.iter().enumerate().skip(at) {
                match token {
                    Token::Symbol('(') => {
                        depth += 1;
                        if depth == 1 {
                            element_starts = true;
                            continue;
                        }
                    }
                    Token::Symbol(')') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Symbol(',') if depth == 1 => {
                        element_starts = true;
                        continue;
                    }
                    _ => {}
                }
                if element_starts && depth == 1 {
                    names.extend(identifier(tokens.get(position)).map(|(name, _)| name));
                }
                element_starts = false;
            }
            names
        }
        Some((Token::Symbol(_), _)) => Vec::new(),
        token => identifier(token)
            .map(|(name, _)| name)
            .into_iter()
            .collect(),
    }
}

/// The positions of the tokens that start a clause: the first, and each after a comma outside
/// parentheses.
fn clause_starts(tokens: &[(Token, usize)]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut depth = 0_i32;
    let mut after_comma = true;
    for (position, (token, _)) in tokens.iter().enumerate() {
        if after_comma {
            starts.push(position);
        }
        after_comma = false;
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            Token::Symbol(',') if depth == 0 => after_comma = true,
            _ => {}
        }
    }
    starts
}

/// The columns the statement drops and those it adds, as written.
fn dropped_and_added(tokens: &[(Token, usize)]) -> (Vec<String>, Vec<String>) {
    let mut dropped = Vec::new();
    let mut added = Vec::new();
    for position in clause_starts(tokens) {
        if let Token::Word(word, _) = &tokens[position].0 {
            match word.as_str() {
                "DROP" => dropped.extend(clause_columns(&tokens[position..])),
                "ADD" => added.extend(clause_columns(&tokens[position..])),
                _ => {}
            }
        }
    }
    (dropped, added)
}

/// Parses and vets an `ALTER TABLE` statement.
pub fn parse(statement: &str) -> Result<AlterStatement, Error> {
    let trimmed = statement.trim().trim_end_matches(';').trim_end();
    let tokens = lex(trimmed, Executable::Refuse)?;
    if !is_word(tokens.first(), "ALTER") || !is_word(tokens.get(1), "TABLE") {
        return Err(Error::NotAlter(trimmed.chars().take(60).collect()));
    }
    let (first, mut end) =
        identifier(tokens.get(2)).ok_or_else(|| Error::NotAlter(trimmed.to_owned()))?;
    let mut next = 3;
    let (schema, table) = if matches!(tokens.get(3), Some((Token::Symbol('.'), _))) {
        let (table, table_end) =
            identifier(tokens.get(4)).ok_or_else(|| Error::NotAlter(trimmed.to_owned()))?;
        end = table_end;
        next = 5;
        (Some(first), table)
    } else {
        (None, first)
    };
    shoal_common::sql::check_name("table name", &table).map_err(Error::BadName)?;
    if let Some(schema) = &schema {
        shoal_common::sql::check_name("schema name", schema).map_err(Error::BadName)?;
    }
    let rest = &tokens[next..];
    // Up to the end of the last token: a trailing comment cannot swallow what follows it.
    let Some(&(_, changes_end)) = rest.last() else {
        return Err(Error::Empty(table));
    };
    let changes = trimmed[end..changes_end].trim().to_owned();
    let (dropped_columns, added_columns) = dropped_and_added(rest);
    if let Some(column) = dropped_columns.iter().find(|dropped| {
        added_columns
            .iter()
            .any(|added| same_column_name(dropped, added))
    }) {
        return Err(Error::DropAndAdd(column.to_lowercase()));
    }
    for (position, (token, _)) in rest.iter().enumerate() {
        let following = rest.get(position + 1);
        match token {
            Token::Symbol(';') => return Err(Error::MultipleStatements),
            Token::Word(word, _) => match word.as_str() {
                "RENAME" if is_word(following, "INDEX") || is_word(following, "KEY") => {}
                "RENAME" if is_word(following, "COLUMN") => {
                    return Err(Error::Unsupported {
                        clause: "RENAME COLUMN",
                        why: "column renames are refused until shoal maps renamed columns exactly",
                    });
                }
                "RENAME" => {
                    return Err(Error::Unsupported {
                        clause: "RENAME TO",
                        why: "rename the table with RENAME TABLE after the migration",
                    });
                }
                "CHANGE" => {
                    // `CHANGE [COLUMN] [IF EXISTS] old new …`: naming the column twice only
                    // redefines it (as MODIFY does); a rename is refused for now.
                    let mut at = position + 1;
                    if is_word(rest.get(at), "COLUMN") {
                        at += 1;
                    }
                    if is_word(rest.get(at), "IF") && is_word(rest.get(at + 1), "EXISTS") {
                        at += 2;
                    }
                    match (identifier(rest.get(at)), identifier(rest.get(at + 1))) {
                        (Some((old, _)), Some((new, _))) if same_column_name(&old, &new) => {}
                        (Some((old, _)), Some((new, _))) => {
                            return Err(Error::RenamingChange { old, new });
                        }
                        _ => {
                            return Err(Error::Unsupported {
                                clause: "CHANGE COLUMN",
                                why: "write CHANGE old_name new_name definition, or MODIFY",
                            });
                        }
                    }
                }
                "ALGORITHM" | "LOCK" => {
                    return Err(Error::Unsupported {
                        clause: "ALGORITHM= / LOCK=",
                        why: "shoal chooses how to apply the change; remove the clause",
                    });
                }
                "PARTITION" | "PARTITIONS" | "PARTITIONING" => {
                    return Err(Error::Unsupported {
                        clause: "partitioning (PARTITION BY, REMOVE PARTITIONING, … PARTITION …)",
                        why: "shoal does not change partitioning yet; run it with the server's own \
                              ALTER TABLE, or with another online tool",
                    });
                }
                _ => {}
            },
            _ => {}
        }
    }
    // The table option `AUTO_INCREMENT [=] n`, not the column attribute.
    let sets_auto_increment = rest.iter().enumerate().any(|(position, (token, _))| {
        matches!(token, Token::Word(word, _) if word == "AUTO_INCREMENT")
            && match rest.get(position + 1) {
                Some((Token::Symbol('='), _)) => true,
                Some((Token::Word(next, _), _)) => next.starts_with(|c: char| c.is_ascii_digit()),
                _ => false,
            }
    });
    Ok(AlterStatement {
        schema,
        table,
        changes,
        sets_auto_increment,
        dropped_columns,
    })
}

/// What a statement found in the binlog (a Query event) means for the migrated table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// It does not touch the table (or is only comments, `BEGIN`, `COMMIT`, `ROLLBACK`).
    Unrelated,
    /// DDL naming the table (`ALTER`, `RENAME`, `CREATE INDEX … ON`, `DROP`, `TRUNCATE`, …).
    Ddl,
    /// A statement-format change naming the table.
    Statement,
}

/// Classifies `statement` (run with default schema `default_schema`) against `schema`.`table`,
/// reading it as the server does: leading comments skipped, executable comments read as code,
/// names qualified or not, compared as `lower_case_table_names` says (`names_fold_case`). A
/// statement that does not lex is DDL (refusing is the safe side).
pub fn classify_query(
    statement: &str,
    default_schema: &str,
    schema: &str,
    table: &str,
    names_fold_case: bool,
) -> QueryKind {
    let Ok(tokens) = lex(statement, Executable::AsCode) else {
        return QueryKind::Ddl;
    };
    let Some((Token::Word(first_word, _), _)) = tokens.first() else {
        return if tokens.is_empty() {
            QueryKind::Unrelated
        } else if mentions_table(&tokens, default_schema, schema, table, names_fold_case) {
            QueryKind::Statement
        } else {
            QueryKind::Unrelated
        };
    };
    // Transaction control, and maintenance that changes neither rows nor the definition
    // (OPTIMIZE rebuilds the same definition; the cut-over compares definitions anyway).
    if matches!(
        first_word.as_str(),
        "BEGIN" | "COMMIT" | "ROLLBACK" | "ANALYZE" | "OPTIMIZE" | "FLUSH" | "CHECK" | "REPAIR"
    ) || !mentions_table(&tokens, default_schema, schema, table, names_fold_case)
    {
        return QueryKind::Unrelated;
    }
    if matches!(
        first_word.as_str(),
        "ALTER" | "RENAME" | "DROP" | "TRUNCATE" | "CREATE"
    ) {
        QueryKind::Ddl
    } else {
        QueryKind::Statement
    }
}

/// Whether `tokens` name `schema`.`table`, qualified or (with default schema `default_schema`)
/// not.
fn mentions_table(
    tokens: &[(Token, usize)],
    default_schema: &str,
    schema: &str,
    table: &str,
    names_fold_case: bool,
) -> bool {
    let same = |left: &str, right: &str| {
        if names_fold_case {
            left.to_lowercase() == right.to_lowercase()
        } else {
            left == right
        }
    };
    let name = |token: &Token| match token {
        Token::Quoted(name) | Token::Word(_, name) => Some(name.clone()),
        _ => None,
    };
    let mut index = 0;
    while index < tokens.len() {
        let Some(first) = name(&tokens[index].0) else {
            index += 1;
            continue;
        };
        let qualified = matches!(tokens.get(index + 1), Some((Token::Symbol('.'), _)));
        if qualified && let Some(second) = tokens.get(index + 2).and_then(|(token, _)| name(token))
        {
            if same(&first, schema) && same(&second, table) {
                return true;
            }
            index += 3;
            continue;
        }
        if same(&first, table) && same(default_schema, schema) {
            return true;
        }
        index += 1;
    }
    false
}

impl AlterStatement {
    /// Checks the statement's schema (if any) against the connection's.
    pub fn check_schema(&self, connected: &str) -> Result<(), Error> {
        match &self.schema {
            Some(named) if named != connected => Err(Error::OtherSchema {
                named: named.clone(),
                connected: connected.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// The same changes applied to `target` in `schema`.
    pub fn applied_to(&self, schema: &str, target: &str) -> String {
        format!(
            "ALTER TABLE {} {}",
            quote_qualified(schema, target),
            self.changes
        )
    }

    /// The statement with `ALGORITHM=INSTANT` placed first (a clause appended after the user's
    /// text could be swallowed by it), on the original table.
    pub fn instant(&self, schema: &str) -> String {
        format!(
            "ALTER TABLE {} ALGORITHM=INSTANT, {}",
            quote_qualified(schema, &self.table),
            self.changes
        )
    }

    /// The table name, quoted.
    pub fn quoted_table(&self) -> String {
        quote_identifier(&self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_table_and_keeps_the_changes_verbatim() {
        let parsed = parse(
            "  alter table orders ADD COLUMN note VARCHAR(64) DEFAULT 'a;b', ADD INDEX k (note);",
        )
        .unwrap();
        assert_eq!(parsed.schema, None);
        assert_eq!(parsed.table, "orders");
        assert_eq!(
            parsed.changes,
            "ADD COLUMN note VARCHAR(64) DEFAULT 'a;b', ADD INDEX k (note)"
        );
        assert_eq!(
            parsed.applied_to("shop", "_orders_new"),
            "ALTER TABLE `shop`.`_orders_new` ADD COLUMN note VARCHAR(64) DEFAULT 'a;b', ADD INDEX k (note)"
        );
        assert_eq!(
            parsed.instant("shop"),
            "ALTER TABLE `shop`.`orders` ALGORITHM=INSTANT, ADD COLUMN note VARCHAR(64) DEFAULT 'a;b', ADD INDEX k (note)"
        );
    }

    #[test]
    fn a_double_dash_is_a_comment_only_before_whitespace_as_on_the_server() {
        assert_eq!(
            parse("ALTER TABLE t ADD COLUMN x INT DEFAULT (1--1); DROP TABLE victim; #"),
            Err(Error::MultipleStatements)
        );
        assert_eq!(
            parse("ALTER TABLE t ADD COLUMN x INT DEFAULT (1--1)")
                .unwrap()
                .changes,
            "ADD COLUMN x INT DEFAULT (1--1)"
        );
        // Before whitespace, a control character or the end it is a comment.
        assert!(parse("ALTER TABLE t ADD COLUMN x INT -- ; DROP TABLE victim").is_ok());
        assert!(parse("ALTER TABLE t ADD COLUMN x INT --\t; DROP TABLE victim").is_ok());
        assert!(parse("ALTER TABLE t ADD COLUMN x INT --").is_ok());
        // Escapes inside strings do not end them.
        assert!(
            parse(r"ALTER TABLE t ADD COLUMN x VARCHAR(9) DEFAULT 'a\'; DROP TABLE v; -- '")
                .is_ok()
        );
        assert_eq!(
            parse(r"ALTER TABLE t ADD COLUMN x VARCHAR(9) DEFAULT 'a\\'; DROP TABLE v"),
            Err(Error::MultipleStatements)
        );
    }

    #[test]
    fn executable_comments_are_refused() {
        for sql in [
            "ALTER TABLE t ADD x INT /*!, RENAME TO t2 */",
            "ALTER TABLE t /*!100000 CHANGE c2 c3 INT NULL */",
            "ALTER TABLE t ADD x INT /*M!100000 , DROP COLUMN y */",
        ] {
            assert_eq!(parse(sql), Err(Error::ExecutableComment), "{sql}");
        }
        // A plain comment, and an optimizer-hint-looking one, are comments.
        assert!(parse("ALTER TABLE t ADD x INT /* ! */").is_ok());
        assert!(parse("ALTER TABLE t ADD x INT /*+ hint */").is_ok());
    }

    #[test]
    fn a_trailing_comment_cannot_swallow_shoals_clauses() {
        for sql in [
            "ALTER TABLE t ADD COLUMN x INT -- note",
            "ALTER TABLE t ADD COLUMN x INT # note",
            "ALTER TABLE t ADD COLUMN x INT /* note */",
        ] {
            let parsed = parse(sql).unwrap();
            assert_eq!(parsed.changes, "ADD COLUMN x INT", "{sql}");
            assert_eq!(
                parsed.instant("s"),
                "ALTER TABLE `s`.`t` ALGORITHM=INSTANT, ADD COLUMN x INT"
            );
        }
    }

    #[test]
    fn dropped_columns_are_read_from_every_form() {
        let dropped = |sql: &str| parse(sql).unwrap().dropped_columns;
        assert_eq!(
            dropped("ALTER TABLE t DROP c, DROP COLUMN `d`, DROP IF EXISTS e, DROP INDEX k"),
            ["c", "d", "e"]
        );
        assert_eq!(
            dropped("ALTER TABLE t DROP PRIMARY KEY, DROP FOREIGN KEY f, ADD x DECIMAL(10, 2)"),
            Vec::<String>::new()
        );
        assert_eq!(
            parse("ALTER TABLE t DROP COLUMN y, ADD COLUMN (y INT)"),
            Err(Error::DropAndAdd("y".to_owned()))
        );
        assert_eq!(
            parse("ALTER TABLE t DROP COLUMN z, ADD COLUMN (y DECIMAL(3,1), z INT)"),
            Err(Error::DropAndAdd("z".to_owned()))
        );
        assert!(parse("ALTER TABLE t DROP COLUMN w, ADD COLUMN (y DECIMAL(3,1), z INT)").is_ok());
        // A vertical tab is a space to the server.
        assert_eq!(
            parse("ALTER TABLE t DROP\x0bb, ADD b INT NOT NULL DEFAULT 0"),
            Err(Error::DropAndAdd("b".to_owned()))
        );
        assert_eq!(
            parse("ALTER TABLE t ADD x INT,\x0bDROP COLUMN b, ADD COLUMN b INT"),
            Err(Error::DropAndAdd("b".to_owned()))
        );
        assert!(same_column_name("Ü", "ü"));
        assert!(same_column_name("I", "i"));
        assert!(!same_column_name("u", "ü"));
    }

    #[test]
    fn quoted_and_qualified_names() {
        let parsed = parse("ALTER TABLE `my db`.`we``ird` /* c */ ADD x INT").unwrap();
        assert_eq!(parsed.schema.as_deref(), Some("my db"));
        assert_eq!(parsed.table, "we`ird");
        assert_eq!(parsed.changes, "/* c */ ADD x INT");
        assert!(parsed.check_schema("my db").is_ok());
        assert!(matches!(
            parsed.check_schema("other"),
            Err(Error::OtherSchema { .. })
        ));
        assert_eq!(parsed.quoted_table(), "`we``ird`");
    }

    #[test]
    fn classifies_binlog_statements_as_the_server_reads_them() {
        use QueryKind::{Ddl, Statement, Unrelated};
        let kind = |sql: &str, default: &str| classify_query(sql, default, "shop", "orders", false);
        assert_eq!(kind("ALTER TABLE orders ADD x INT", "shop"), Ddl);
        assert_eq!(
            kind("RENAME TABLE `shop`.`orders` TO `shop`.`o2`", "other"),
            Ddl
        );
        assert_eq!(kind("ALTER TABLE orders ADD x INT", "other"), Unrelated);
        assert_eq!(
            kind(
                "CREATE TABLE `test2`.`_orders_new` LIKE `test2`.`orders`",
                "test2"
            ),
            Unrelated
        );
        assert_eq!(
            kind("ALTER TABLE orders_archive ADD x INT", "shop"),
            Unrelated
        );
        assert_eq!(
            kind("ALTER TABLE `unterminated", "shop"),
            Ddl,
            "unparsable: DDL"
        );
        // Leading comments, executable comments, other forms naming the table.
        assert_eq!(
            kind("/* ticket 42 */ ALTER TABLE orders ADD INDEX k (c)", "shop"),
            Ddl
        );
        assert_eq!(
            kind("# note\nALTER TABLE orders ADD INDEX k (c)", "shop"),
            Ddl
        );
        assert_eq!(kind("-- note\nDROP TABLE orders", "shop"), Ddl);
        assert_eq!(
            kind("/*!40000 ALTER TABLE orders DISABLE KEYS */", "shop"),
            Ddl
        );
        assert_eq!(kind("CREATE INDEX k ON orders (c)", "shop"), Ddl);
        assert_eq!(kind("RENAME TABLE o2 TO shop.orders", "x"), Ddl);
        assert_eq!(kind("TRUNCATE orders", "shop"), Ddl);
        assert_eq!(kind("UPDATE orders SET c = 1", "shop"), Statement);
        assert_eq!(kind("/* x */ DELETE FROM shop.orders", "y"), Statement);
        // MariaDB's rewritten events and transaction control.
        assert_eq!(
            kind(
                "# Dummy event replacing event type 160 that slave cannot handle.",
                "shop"
            ),
            Unrelated
        );
        assert_eq!(kind("BEGIN", "shop"), Unrelated);
        assert_eq!(kind("ANALYZE TABLE orders", "shop"), Unrelated);
        assert_eq!(kind("OPTIMIZE TABLE shop.orders", "x"), Unrelated);
        assert_eq!(kind("COMMIT", "shop"), Unrelated);
        // Table names as lower_case_table_names says.
        assert_eq!(kind("ALTER TABLE ORDERS ADD x INT", "shop"), Unrelated);
        assert_eq!(
            classify_query(
                "ALTER TABLE ORDERS ADD x INT",
                "SHOP",
                "shop",
                "orders",
                true
            ),
            Ddl
        );
    }

    #[test]
    fn the_auto_increment_table_option_is_told_from_the_column_attribute() {
        let sets = |sql: &str| parse(sql).unwrap().sets_auto_increment;
        assert!(sets("ALTER TABLE t AUTO_INCREMENT = 500"));
        assert!(sets("ALTER TABLE t ADD COLUMN x INT, AUTO_INCREMENT 9"));
        assert!(!sets(
            "ALTER TABLE t MODIFY id BIGINT NOT NULL AUTO_INCREMENT"
        ));
        assert!(!sets(
            "ALTER TABLE t MODIFY id BIGINT AUTO_INCREMENT, ADD COLUMN x INT"
        ));
    }

    #[test]
    fn a_column_dropped_and_added_again_is_refused() {
        assert_eq!(
            parse("ALTER TABLE t DROP COLUMN c, ADD COLUMN c INT"),
            Err(Error::DropAndAdd("c".to_owned()))
        );
        assert_eq!(
            parse("ALTER TABLE t ADD `C` INT, DROP IF EXISTS c"),
            Err(Error::DropAndAdd("c".to_owned()))
        );
        // Indexes of the same name as a column, and different columns, are fine.
        assert!(parse("ALTER TABLE t DROP INDEX c, ADD INDEX c (c)").is_ok());
        assert!(parse("ALTER TABLE t DROP COLUMN a, ADD COLUMN b INT").is_ok());
        assert!(parse("ALTER TABLE t DROP COLUMN c, ADD INDEX k (c)").is_ok());
    }

    #[test]
    fn refuses_what_it_cannot_run_exactly() {
        assert!(matches!(parse("DROP TABLE t"), Err(Error::NotAlter(_))));
        assert!(matches!(parse("ALTER TABLE t"), Err(Error::Empty(_))));
        assert!(matches!(
            parse("ALTER TABLE t ADD x INT; DROP TABLE t"),
            Err(Error::MultipleStatements)
        ));
        assert!(matches!(
            parse("ALTER TABLE t RENAME TO u"),
            Err(Error::Unsupported {
                clause: "RENAME TO",
                ..
            })
        ));
        assert!(matches!(
            parse("ALTER TABLE t RENAME COLUMN a TO b"),
            Err(Error::Unsupported {
                clause: "RENAME COLUMN",
                ..
            })
        ));
        assert!(matches!(
            parse("ALTER TABLE t CHANGE a b INT"),
            Err(Error::RenamingChange { .. })
        ));
        // The same name twice (in any case) only redefines the column.
        for same in [
            "ALTER TABLE t CHANGE a a BIGINT",
            "ALTER TABLE t CHANGE COLUMN `a` A BIGINT NULL FIRST",
            "ALTER TABLE t CHANGE COLUMN IF EXISTS a a BIGINT, CHANGE b b INT",
        ] {
            assert!(parse(same).is_ok(), "{same}");
        }
        assert!(matches!(
            parse("ALTER TABLE t CHANGE a a BIGINT, CHANGE b c INT"),
            Err(Error::RenamingChange { .. })
        ));
        assert!(matches!(
            parse("ALTER TABLE t ADD x INT, ALGORITHM=COPY"),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            parse("ALTER TABLE t ADD x INT, LOCK=NONE"),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            parse("ALTER TABLE `t ADD x INT"),
            Err(Error::Unterminated)
        ));
        assert!(parse("ALTER TABLE t RENAME INDEX a TO b").is_ok());
        // Keywords inside strings and quoted identifiers are not clauses.
        assert!(
            parse("ALTER TABLE t ADD COLUMN `lock` INT DEFAULT 0 COMMENT 'rename; change'").is_ok()
        );
    }
}
