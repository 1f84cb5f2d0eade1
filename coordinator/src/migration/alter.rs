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
    /// A clause shoal refuses.
    #[error("{clause} is not supported: {why}")]
    Unsupported {
        /// The clause.
        clause: &'static str,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// A column dropped and added again in one statement.
    #[error(
        "the ALTER drops column `{0}` and adds it again; shoal maps columns by name and would \
         carry the old values into the new column: run the DROP and the ADD as two migrations"
    )]
    DropAndAdd(String),
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

/// Tokens with the byte offset just past each.
fn lex(text: &str) -> Result<Vec<(Token, usize)>, Error> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b' ' | b'\t' | b'\r' | b'\n' => index += 1,
            b'-' if bytes.get(index + 1) == Some(&b'-') => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'#' => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'/' if bytes.get(index + 1) == Some(&b'*') => {
                let end = text[index + 2..].find("*/").ok_or(Error::Unterminated)?;
                index += 2 + end + 2;
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

/// The column a clause starting at `tokens[0]` (`ADD` or `DROP`) names, if it names one.
fn clause_column(tokens: &[(Token, usize)]) -> Option<String> {
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
        Some((Token::Word(upper, _), _)) if NOT_A_COLUMN.contains(&upper.as_str()) => None,
        Some((Token::Symbol(_), _)) => None,
        token => identifier(token).map(|(name, _)| name.to_lowercase()),
    }
}

/// A column both dropped and added by one statement: shoal maps columns by name, so the old
/// values would be carried into the new column.
fn dropped_and_added(tokens: &[(Token, usize)]) -> Option<String> {
    let mut dropped = Vec::new();
    let mut added = Vec::new();
    for (position, (token, _)) in tokens.iter().enumerate() {
        let starts_clause = position == 0 || matches!(tokens[position - 1].0, Token::Symbol(','));
        if !starts_clause {
            continue;
        }
        if let Token::Word(word, _) = token {
            match word.as_str() {
                "DROP" => dropped.extend(clause_column(&tokens[position..])),
                "ADD" => added.extend(clause_column(&tokens[position..])),
                _ => {}
            }
        }
    }
    dropped.into_iter().find(|name| added.contains(name))
}

/// Parses and vets an `ALTER TABLE` statement.
pub fn parse(statement: &str) -> Result<AlterStatement, Error> {
    let trimmed = statement.trim().trim_end_matches(';').trim_end();
    let tokens = lex(trimmed)?;
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
    let changes = trimmed[end..].trim().to_owned();
    if changes.is_empty() {
        return Err(Error::Empty(table));
    }
    let rest = &tokens[next..];
    if let Some(column) = dropped_and_added(rest) {
        return Err(Error::DropAndAdd(column));
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
                    return Err(Error::Unsupported {
                        clause: "CHANGE COLUMN",
                        why: "use MODIFY COLUMN to change a type; renames are refused for now",
                    });
                }
                "ALGORITHM" | "LOCK" => {
                    return Err(Error::Unsupported {
                        clause: "ALGORITHM= / LOCK=",
                        why: "shoal chooses how to apply the change; remove the clause",
                    });
                }
                "PARTITION" | "PARTITIONS" => {
                    return Err(Error::Unsupported {
                        clause: "partitioning",
                        why: "partition changes are not supported",
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
    })
}

/// Whether `statement` (run with default schema `default_schema`) names `schema`.`table`,
/// qualified or not. Used to spot DDL on the migrated table in the binlog; on a statement that
/// does not lex, it answers yes (refusing is the safe side).
pub fn mentions_table(statement: &str, default_schema: &str, schema: &str, table: &str) -> bool {
    let Ok(tokens) = lex(statement) else {
        return true;
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
            if first == schema && second == table {
                return true;
            }
            index += 3;
            continue;
        }
        if first == table && default_schema == schema {
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

    /// The statement with `ALGORITHM=INSTANT` appended, on the original table.
    pub fn instant(&self, schema: &str) -> String {
        format!(
            "ALTER TABLE {} {}, ALGORITHM=INSTANT",
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
            "ALTER TABLE `shop`.`orders` ADD COLUMN note VARCHAR(64) DEFAULT 'a;b', ADD INDEX k (note), ALGORITHM=INSTANT"
        );
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
    fn finds_mentions_of_the_table_in_its_schema_only() {
        assert!(mentions_table(
            "ALTER TABLE orders ADD x INT",
            "shop",
            "shop",
            "orders"
        ));
        assert!(mentions_table(
            "RENAME TABLE `shop`.`orders` TO `shop`.`o2`",
            "other",
            "shop",
            "orders"
        ));
        assert!(!mentions_table(
            "ALTER TABLE orders ADD x INT",
            "other",
            "shop",
            "orders"
        ));
        assert!(!mentions_table(
            "CREATE TABLE `test2`.`_orders_new` LIKE `test2`.`orders`",
            "test2",
            "shop",
            "orders"
        ));
        assert!(!mentions_table(
            "ALTER TABLE orders_archive ADD x INT",
            "shop",
            "shop",
            "orders"
        ));
        assert!(
            mentions_table("ALTER TABLE `unterminated", "shop", "shop", "orders"),
            "unparsable: assume yes"
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
            Err(Error::Unsupported { .. })
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
