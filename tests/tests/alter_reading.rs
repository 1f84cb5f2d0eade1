//! shoal's reading of an `ALTER TABLE` text, proven against the server's: generated texts
//! (comments of every form, `--` that is and is not a comment, string literals in both quotes
//! with both escapes, hostile and unicode names, double-quoted names, second statements,
//! executable comments, truncations) are read by shoal (`alter::parse`) and run by the server
//! with the prepared protocol on scratch temporary tables. The two must agree on the statement
//! count, the table, the columns dropped and the `AUTO_INCREMENT` option; the text shoal applies
//! to its shadow table (the changes after the table name, spliced behind another name) must
//! leave a copy defined exactly as the server's own run left the original. On the server under
//! test (MariaDB and MySQL: the test runs in both passes).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeSet;
use std::sync::Mutex;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use shoal_common::sql::{quote_identifier, quote_qualified};
use shoal_coordinator::migration::alter::{self, AlterStatement};
use shoal_tests::servers;

/// Generated texts per server (the acceptance asks for at least 10,000).
const CASES: u32 = 10_000;

/// Pieces of names: quotes, comment and statement markers, spaces, unicode (identifiers are
/// utf8mb3: no 4-byte characters).
const NAME_PIECES: [&str; 18] = [
    "`", "'", "\"", " ", "\\", "%", ".", "-", "--", "#", "/*", "*/", ";", ",", "ü", "名", "select",
    "Key",
];

/// Pieces of comments and string literals.
const TEXT_PIECES: [&str; 24] = [
    "a",
    "Z",
    " ",
    "'",
    "\"",
    "`",
    ";",
    "\\",
    "--",
    "-- ",
    "#",
    "/*",
    "*",
    "/",
    "\n",
    "\t",
    "ü",
    "名",
    ",",
    "(",
    ")",
    "DROP COLUMN c0",
    "RENAME TO x",
    "ALGORITHM=COPY",
];

/// Existing columns of the scratch table besides `id`.
const EXISTING: usize = 4;

fn name_strategy(prefix: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&NAME_PIECES[..]), 0..4).prop_map(move |pieces| {
        // Ends in a letter: a trailing space is not allowed in a name.
        format!("{prefix}{}z", pieces.concat())
    })
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&TEXT_PIECES[..]), 0..6)
        .prop_map(|pieces| pieces.concat())
}

/// A name as written: bare when the server reads it bare, else backquoted.
#[derive(Debug, Clone)]
struct Name {
    name: String,
    bare: bool,
}

impl Name {
    fn render(&self) -> String {
        let plain = self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii());
        if self.bare && plain {
            self.name.clone()
        } else {
            quote_identifier(&self.name)
        }
    }
}

/// What separates two tokens.
#[derive(Debug, Clone)]
enum Gap {
    Space,
    Newline,
    Tab,
    /// `/* … */`.
    Block(String),
    /// `-- …` to the end of the line.
    Dash(String),
    /// `# …` to the end of the line.
    Hash(String),
}

impl Gap {
    fn render(&self) -> String {
        match self {
            Gap::Space => " ".to_owned(),
            Gap::Newline => "\n".to_owned(),
            Gap::Tab => "\t".to_owned(),
            Gap::Block(text) => format!("/*{}*/", text.replace("*/", "* /")),
            Gap::Dash(text) => format!("-- {}\n", text.replace('\n', " ")),
            Gap::Hash(text) => format!("#{}\n", text.replace('\n', " ")),
        }
    }
}

fn gap_strategy() -> impl Strategy<Value = Gap> {
    prop_oneof![
        4 => Just(Gap::Space),
        1 => Just(Gap::Newline),
        1 => Just(Gap::Tab),
        2 => text_strategy().prop_map(Gap::Block),
        2 => text_strategy().prop_map(Gap::Dash),
        1 => text_strategy().prop_map(Gap::Hash),
    ]
}

/// A string literal: its content, its quote, and how the quote is escaped inside it.
#[derive(Debug, Clone)]
struct Literal {
    text: String,
    double: bool,
    doubled: bool,
}

impl Literal {
    fn render(&self) -> String {
        let quote = if self.double { '"' } else { '\'' };
        let mut out = String::from(quote);
        for c in self.text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c == quote && self.doubled => {
                    out.push(quote);
                    out.push(quote);
                }
                c if c == quote => {
                    out.push('\\');
                    out.push(quote);
                }
                c => out.push(c),
            }
        }
        out.push(quote);
        out
    }
}

fn literal_strategy() -> impl Strategy<Value = Literal> {
    (text_strategy(), any::<bool>(), any::<bool>()).prop_map(|(text, double, doubled)| Literal {
        text,
        double,
        doubled,
    })
}

#[derive(Debug, Clone)]
enum Default {
    Number(i32),
    Text(Literal),
    /// `(1--1)`: a minus minus one, not a comment.
    MinusMinus,
}

#[derive(Debug, Clone)]
enum Clause {
    Add {
        column: Name,
        keyword: bool,
        text: bool,
        default: Option<Default>,
        comment: Option<Literal>,
    },
    Drop {
        column: usize,
        keyword: bool,
    },
    Modify {
        column: usize,
        keyword: bool,
        comment: Option<Literal>,
    },
    /// `CHANGE [COLUMN] c c …`: the name twice, quoted either way the second time.
    Change {
        column: usize,
        keyword: bool,
        quoted: bool,
    },
    AddIndex {
        name: Name,
        column: usize,
    },
    TableComment {
        equals: bool,
        text: Literal,
    },
    AutoIncrement {
        equals: bool,
        value: u32,
    },
}

fn clause_strategy() -> impl Strategy<Value = Clause> {
    let column = 0..EXISTING;
    prop_oneof![
        3 => (
            name_strategy("n"),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(prop_oneof![
                (-5..5i32).prop_map(Default::Number),
                literal_strategy().prop_map(Default::Text),
                Just(Default::MinusMinus),
            ]),
            prop::option::of(literal_strategy()),
        )
            .prop_map(|(name, bare, keyword, text, default, comment)| Clause::Add {
                column: Name { name, bare },
                keyword,
                text,
                default,
                comment,
            }),
        2 => (column.clone(), any::<bool>())
            .prop_map(|(column, keyword)| Clause::Drop { column, keyword }),
        1 => (column.clone(), any::<bool>(), prop::option::of(literal_strategy())).prop_map(
            |(column, keyword, comment)| Clause::Modify {
                column,
                keyword,
                comment,
            }
        ),
        1 => (column.clone(), any::<bool>(), any::<bool>()).prop_map(
            |(column, keyword, quoted)| Clause::Change {
                column,
                keyword,
                quoted,
            }
        ),
        1 => (name_strategy("i"), any::<bool>(), column).prop_map(|(name, bare, column)| {
            Clause::AddIndex {
                name: Name { name, bare },
                column,
            }
        }),
        1 => (any::<bool>(), literal_strategy())
            .prop_map(|(equals, text)| Clause::TableComment { equals, text }),
        1 => (any::<bool>(), 2..1000u32)
            .prop_map(|(equals, value)| Clause::AutoIncrement { equals, value }),
    ]
}

/// How the generated statement is bent.
#[derive(Debug, Clone)]
enum Variant {
    /// As generated: the server must run it.
    Plain,
    /// A second statement after a `;`: both must refuse it.
    Second,
    /// An executable comment in the first gap: shoal refuses it.
    Executable(bool),
    /// The table name in double quotes (`ANSI_QUOTES` style, a string under shoal's `sql_mode`).
    DoubleQuoted,
    /// Cut after this many per mille of its characters.
    Truncated(u16),
}

fn variant_strategy() -> impl Strategy<Value = Variant> {
    prop_oneof![
        12 => Just(Variant::Plain),
        2 => Just(Variant::Second),
        1 => any::<bool>().prop_map(Variant::Executable),
        1 => Just(Variant::DoubleQuoted),
        4 => (300..1000u16).prop_map(Variant::Truncated),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    table: Name,
    qualified: bool,
    columns: Vec<Name>,
    clauses: Vec<Clause>,
    gaps: Vec<Gap>,
    variant: Variant,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (name_strategy("t"), any::<bool>()),
        any::<bool>(),
        prop::collection::vec((name_strategy("c"), any::<bool>()), EXISTING),
        prop::collection::vec(clause_strategy(), 1..5),
        prop::collection::vec(gap_strategy(), 16),
        variant_strategy(),
    )
        .prop_map(
            |((table, bare), qualified, columns, clauses, gaps, variant)| Case {
                table: Name { name: table, bare },
                qualified,
                // Distinct prefixes: column names compare case-insensitively.
                columns: columns
                    .into_iter()
                    .enumerate()
                    .map(|(index, (name, bare))| Name {
                        name: format!("c{index}{name}"),
                        bare,
                    })
                    .collect(),
                clauses,
                gaps,
                variant,
            },
        )
}

/// What the generated text means, as the generator wrote it.
struct Written {
    text: String,
    dropped: BTreeSet<String>,
    sets_auto_increment: bool,
}

impl Case {
    /// The clauses the server accepts together: each existing column dropped or modified once,
    /// indexes only on columns kept, added names distinct.
    fn valid_clauses(&self) -> Vec<&Clause> {
        let mut touched = BTreeSet::new();
        let mut dropped = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut kept = Vec::new();
        for clause in &self.clauses {
            let keep = match clause {
                Clause::Drop { column, .. } => {
                    dropped.insert(*column);
                    touched.insert(*column)
                }
                Clause::Modify { column, .. } | Clause::Change { column, .. } => {
                    touched.insert(*column)
                }
                Clause::Add { column, .. } => names.insert(column.name.to_lowercase()),
                Clause::AddIndex { name, .. } => names.insert(name.name.to_lowercase()),
                Clause::TableComment { .. } | Clause::AutoIncrement { .. } => true,
            };
            if keep {
                kept.push(clause);
            }
        }
        kept.retain(|clause| match clause {
            Clause::AddIndex { column, .. } => !dropped.contains(column),
            _ => true,
        });
        kept
    }

    fn render(&self, schema: &str) -> Written {
        let mut gaps = self.gaps.iter().cycle();
        let mut gap = || gaps.next().map(Gap::render).unwrap_or_default();
        let mut text = format!("ALTER{}TABLE{}", gap(), gap());
        let table = match self.variant {
            Variant::DoubleQuoted => format!("\"{}\"", self.table.name.replace('"', "\"\"")),
            _ => self.table.render(),
        };
        if self.qualified {
            text.push_str(&format!("{}.", quote_identifier(schema)));
        }
        text.push_str(&table);
        let mut dropped = BTreeSet::new();
        let mut sets_auto_increment = false;
        for (index, clause) in self.valid_clauses().into_iter().enumerate() {
            text.push_str(&gap());
            if index > 0 {
                text.push(',');
                text.push_str(&gap());
            }
            let column_keyword = |keyword: bool| if keyword { "COLUMN " } else { "" };
            match clause {
                Clause::Add {
                    column,
                    keyword,
                    text: is_text,
                    default,
                    comment,
                } => {
                    let kind = if *is_text { "VARCHAR(200)" } else { "INT" };
                    text.push_str(&format!(
                        "ADD {}{} {kind}",
                        column_keyword(*keyword),
                        column.render()
                    ));
                    match (default, is_text) {
                        (Some(Default::Text(literal)), true) => {
                            text.push_str(&format!(" DEFAULT {}", literal.render()));
                        }
                        (Some(Default::Number(number)), _) => {
                            text.push_str(&format!(" DEFAULT {number}"));
                        }
                        (Some(Default::MinusMinus), false) => text.push_str(" DEFAULT (1--1)"),
                        _ => {}
                    }
                    if let Some(comment) = comment {
                        text.push_str(&format!("{}COMMENT{}{}", gap(), gap(), comment.render()));
                    }
                }
                Clause::Drop { column, keyword } => {
                    let name = &self.columns[*column];
                    dropped.insert(name.name.to_lowercase());
                    text.push_str(&format!(
                        "DROP{}{}{}",
                        gap(),
                        column_keyword(*keyword),
                        name.render()
                    ));
                }
                Clause::Modify {
                    column,
                    keyword,
                    comment,
                } => {
                    text.push_str(&format!(
                        "MODIFY {}{} BIGINT NULL",
                        column_keyword(*keyword),
                        self.columns[*column].render()
                    ));
                    if let Some(comment) = comment {
                        text.push_str(&format!(" COMMENT {}", comment.render()));
                    }
                }
                Clause::Change {
                    column,
                    keyword,
                    quoted,
                } => {
                    let name = &self.columns[*column];
                    let again = if *quoted {
                        quote_identifier(&name.name)
                    } else {
                        name.render()
                    };
                    text.push_str(&format!(
                        "CHANGE{}{}{}{}{again} BIGINT NULL",
                        gap(),
                        column_keyword(*keyword),
                        name.render(),
                        gap()
                    ));
                }
                Clause::AddIndex { name, column } => text.push_str(&format!(
                    "ADD INDEX {}{}({})",
                    name.render(),
                    gap(),
                    self.columns[*column].render()
                )),
                Clause::TableComment { equals, text: body } => text.push_str(&format!(
                    "COMMENT{}{}",
                    if *equals { " = " } else { " " },
                    body.render()
                )),
                Clause::AutoIncrement { equals, value } => {
                    sets_auto_increment = true;
                    text.push_str(&format!(
                        "AUTO_INCREMENT{}{value}",
                        if *equals { "=" } else { " " }
                    ));
                }
            }
        }
        match self.variant {
            Variant::Second => {
                text.push(';');
                text.push_str(&gap());
                text.push_str("DROP TEMPORARY TABLE victim");
            }
            Variant::Executable(mariadb_form) => {
                let marker = if mariadb_form { "/*M!" } else { "/*!" };
                text = text.replacen("TABLE", &format!("{marker}50000 TABLE*/"), 1);
            }
            Variant::Truncated(per_mille) => {
                let keep = text.chars().count() * usize::from(per_mille) / 1000;
                text = text.chars().take(keep).collect();
            }
            Variant::Plain | Variant::DoubleQuoted => {}
        }
        Written {
            text,
            dropped,
            sets_auto_increment,
        }
    }
}

/// The server's reading: its columns and its definition.
async fn columns(connection: &mut Conn, schema: &str, table: &str) -> BTreeSet<String> {
    let rows: Vec<mysql_async::Row> = connection
        .query(format!(
            "SHOW COLUMNS FROM {}",
            quote_qualified(schema, table)
        ))
        .await
        .unwrap();
    rows.into_iter()
        .map(|row| row.get::<String, _>(0).unwrap().to_lowercase())
        .collect()
}

async fn definition(connection: &mut Conn, schema: &str, table: &str) -> String {
    let row: (String, String) = connection
        .query_first(format!(
            "SHOW CREATE TABLE {}",
            quote_qualified(schema, table)
        ))
        .await
        .unwrap()
        .unwrap();
    row.1
}

const COPY: &str = "shoal copy";
/// The scratch table's `AUTO_INCREMENT` counter: no generated value (at most 999) equals it.
const COUNTER: u32 = 5000;

async fn check(connection: &mut Conn, schema: &str, case: &Case) -> Result<(), TestCaseError> {
    let written = case.render(schema);
    let text = written.text.clone();
    let table = &case.table.name;
    let columns_sql: Vec<String> = case
        .columns
        .iter()
        .map(|column| format!("{} INT NULL", quote_identifier(&column.name)))
        .collect();
    let create = |name: &str| {
        format!(
            "CREATE TEMPORARY TABLE {} (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, {}) \
             ENGINE=InnoDB AUTO_INCREMENT={COUNTER}",
            quote_identifier(name),
            columns_sql.join(", ")
        )
    };
    let setup = [
        // Whatever an earlier case left (a panic skips its cleanup).
        format!(
            "DROP TEMPORARY TABLE IF EXISTS {}, {}, victim",
            quote_identifier(table),
            quote_identifier(COPY)
        ),
        create(table),
        create(COPY),
        "CREATE TEMPORARY TABLE victim (id INT)".to_owned(),
    ];
    for statement in &setup {
        connection.query_drop(statement).await.unwrap();
    }
    let before = columns(connection, schema, table).await;
    let shoal = alter::parse(&text);
    let server = connection.exec_drop(text.as_str(), ()).await;
    let outcome = compare(connection, schema, case, &written, &before, &shoal, &server).await;
    connection
        .query_drop(format!(
            "DROP TEMPORARY TABLE IF EXISTS {}, {}, victim",
            quote_identifier(table),
            quote_identifier(COPY)
        ))
        .await
        .unwrap();
    outcome.map_err(|why| {
        TestCaseError::fail(format!(
            "{why}\ntext: {text:?}\nshoal: {shoal:?}\nserver: {server:?}"
        ))
    })
}

async fn compare(
    connection: &mut Conn,
    schema: &str,
    case: &Case,
    written: &Written,
    before: &BTreeSet<String>,
    shoal: &Result<AlterStatement, alter::Error>,
    server: &Result<(), mysql_async::Error>,
) -> Result<(), String> {
    let table = &case.table.name;
    match (&case.variant, shoal, server) {
        (Variant::Second, Err(alter::Error::MultipleStatements), Err(_)) => {
            let victim: Option<i64> = connection
                .query_first("SELECT COUNT(*) FROM victim")
                .await
                .map_err(|error| format!("the second statement ran: {error}"))?;
            victim
                .map(|_| ())
                .ok_or_else(|| "victim unreadable".to_owned())
        }
        (Variant::Second, _, _) => {
            Err("a second statement: shoal must refuse it, the server must too".to_owned())
        }
        (Variant::Executable(_), Err(alter::Error::ExecutableComment), _) => Ok(()),
        (Variant::Executable(_), _, _) => Err("shoal missed an executable comment".to_owned()),
        (Variant::DoubleQuoted, Err(_), Err(_)) => Ok(()),
        (Variant::DoubleQuoted, _, _) => {
            Err("a double-quoted name is a string to both, never a table".to_owned())
        }
        (Variant::Plain, _, Err(error)) => Err(format!(
            "the server refused a generated statement (a generator bug?): {error}"
        )),
        // A statement without changes is a no-op to the server; shoal refuses it as such.
        (Variant::Truncated(_), Err(alter::Error::Empty(_)), Ok(())) => Ok(()),
        (Variant::Plain | Variant::Truncated(_), Err(error), Ok(())) => {
            Err(format!("shoal refused what the server ran: {error}"))
        }
        (Variant::Truncated(_), Err(_), Err(_)) => Ok(()),
        (Variant::Plain | Variant::Truncated(_), Ok(read), Ok(())) => {
            same_reading(connection, schema, case, written, before, read).await
        }
        (Variant::Truncated(_), Ok(read), Err(_)) => {
            // The server refused the text: the one shoal would run on its shadow must fail too.
            match connection
                .exec_drop(read.applied_to(schema, COPY), ())
                .await
            {
                Ok(()) => Err(format!(
                    "the server refused the text but ran shoal's rewrite for table {table:?}"
                )),
                Err(_) => Ok(()),
            }
        }
    }
}

async fn same_reading(
    connection: &mut Conn,
    schema: &str,
    case: &Case,
    written: &Written,
    before: &BTreeSet<String>,
    read: &AlterStatement,
) -> Result<(), String> {
    let table = &case.table.name;
    if &read.table != table {
        return Err(format!("shoal read table {:?}, not {table:?}", read.table));
    }
    let expected_schema = case.qualified.then(|| schema.to_owned());
    if read.schema != expected_schema {
        return Err(format!("shoal read schema {:?}", read.schema));
    }
    let after = columns(connection, schema, table).await;
    let server_dropped: BTreeSet<String> = before.difference(&after).cloned().collect();
    let shoal_dropped: BTreeSet<String> = read
        .dropped_columns
        .iter()
        .map(|column| column.to_lowercase())
        .collect();
    if shoal_dropped != server_dropped {
        return Err(format!(
            "dropped columns: shoal read {shoal_dropped:?}, the server dropped {server_dropped:?}"
        ));
    }
    let original = definition(connection, schema, table).await;
    // Any value the statement sets replaces the counter the table was made with (a value of 1
    // is not shown at all).
    let server_sets = !original.contains(&format!("AUTO_INCREMENT={COUNTER}"));
    if read.sets_auto_increment != server_sets {
        return Err(format!(
            "AUTO_INCREMENT option: shoal read {}, the server's definition: {original}",
            read.sets_auto_increment
        ));
    }
    if let Variant::Plain = case.variant
        && (written.dropped != server_dropped || written.sets_auto_increment != server_sets)
    {
        return Err("the server's reading differs from the generator's".to_owned());
    }
    connection
        .exec_drop(read.applied_to(schema, COPY), ())
        .await
        .map_err(|error| format!("shoal's rewrite failed where the text ran: {error}"))?;
    let copy = definition(connection, schema, COPY).await.replacen(
        &quote_identifier(COPY),
        &quote_identifier(table),
        1,
    );
    if copy != original {
        return Err(format!(
            "shoal's rewrite defines another table:\n{copy}\nthe text's:\n{original}"
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_reads_generated_alter_texts_as_the_server_does() {
    let database = servers::shared().database("alter_reading").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    for statement in shoal_worker::session::session_setup(std::time::Duration::from_secs(5)) {
        connection.query_drop(statement).await.unwrap();
    }
    let connection = Mutex::new(connection);
    let handle = tokio::runtime::Handle::current();
    let schema = database.name.clone();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&case_strategy(), |case| {
                let mut connection = connection
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                handle.block_on(check(&mut connection, &schema, &case))
            })
            .map_err(|failure| failure.to_string())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
