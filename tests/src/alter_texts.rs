//! Generated `ALTER TABLE` texts for comparing shoal's reading with the server's
//! (`tests/alter_reading.rs`): proptest strategies over names, gaps (spaces and comments of every
//! form), literals, clauses and ways to bend a statement, and the text each case renders to with
//! what the generator meant by it.

use std::collections::BTreeSet;

use proptest::prelude::*;
use shoal_common::sql::quote_identifier;

/// Pieces of names: quotes, comment and statement markers, spaces, unicode (identifiers are
/// utf8mb3: no 4-byte characters).
pub const NAME_PIECES: [&str; 18] = [
    "`", "'", "\"", " ", "\\", "%", ".", "-", "--", "#", "/*", "*/", ";", ",", "ü", "名", "select",
    "Key",
];

/// Pieces of comments and string literals.
pub const TEXT_PIECES: [&str; 24] = [
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
pub const EXISTING: usize = 4;

pub fn name_strategy(prefix: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&NAME_PIECES[..]), 0..4).prop_map(move |pieces| {
        // Ends in a letter: a trailing space is not allowed in a name.
        format!("{prefix}{}z", pieces.concat())
    })
}

pub fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&TEXT_PIECES[..]), 0..6)
        .prop_map(|pieces| pieces.concat())
}

/// A name as written: bare when the server reads it bare, else backquoted.
#[derive(Debug, Clone)]
pub struct Name {
    pub name: String,
    pub bare: bool,
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
pub enum Gap {
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

pub fn gap_strategy() -> impl Strategy<Value = Gap> {
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
pub struct Literal {
    pub text: String,
    pub double: bool,
    pub doubled: bool,
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

pub fn literal_strategy() -> impl Strategy<Value = Literal> {
    (text_strategy(), any::<bool>(), any::<bool>()).prop_map(|(text, double, doubled)| Literal {
        text,
        double,
        doubled,
    })
}

#[derive(Debug, Clone)]
pub enum Default {
    Number(i32),
    Text(Literal),
    /// `(1--1)`: a minus minus one, not a comment.
    MinusMinus,
}

#[derive(Debug, Clone)]
pub enum Clause {
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

pub fn clause_strategy() -> impl Strategy<Value = Clause> {
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
pub enum Variant {
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

pub fn variant_strategy() -> impl Strategy<Value = Variant> {
    prop_oneof![
        12 => Just(Variant::Plain),
        2 => Just(Variant::Second),
        1 => any::<bool>().prop_map(Variant::Executable),
        1 => Just(Variant::DoubleQuoted),
        4 => (300..1000u16).prop_map(Variant::Truncated),
    ]
}

#[derive(Debug, Clone)]
pub struct Case {
    pub table: Name,
    pub qualified: bool,
    pub columns: Vec<Name>,
    pub clauses: Vec<Clause>,
    pub gaps: Vec<Gap>,
    pub variant: Variant,
}

pub fn case_strategy() -> impl Strategy<Value = Case> {
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
#[derive(Debug)]
pub struct Written {
    pub text: String,
    pub dropped: BTreeSet<String>,
    pub sets_auto_increment: bool,
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

    pub fn render(&self, schema: &str) -> Written {
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
