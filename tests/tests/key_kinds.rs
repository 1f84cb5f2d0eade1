//! Every kind of primary key migrates exactly under a concurrent writer: composite keys, character
//! keys under case-insensitive and binary collations (4-byte characters, latin1), BINARY(16) with
//! trailing zero bytes, DATETIME(6), DECIMAL, DATE, and signed and unsigned BIGINT at their
//! extremes with huge gaps. The writer upserts, deletes, updates and moves keys (including to a
//! key equal under the collation but spelt differently) all through the copy, and keeps its own
//! ledger of what it committed; the migrated table must equal that ledger row for row, keys
//! compared byte for byte, and the checksum must have found nothing to repair (so that the change
//! path, not a repair, made the table right). Half the cases copy in buffered mode (rows pass
//! through the worker, with a pause between read and write), half in server mode.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use shoal_tests::scenario::{expect_success, shoal_run};
use shoal_tests::servers;
use shoal_tests::writer::SplitMix;
use tokio_util::sync::CancellationToken;

/// One primary-key column of a case.
struct KeyColumn {
    /// Column definition, e.g. "`a` SMALLINT NOT NULL".
    definition: &'static str,
    /// Column name.
    name: &'static str,
    /// Expression reading the column back as the text `generate` predicts.
    read: &'static str,
    /// A value: what to bind, and the exact text the server will give back.
    generate: fn(&mut SplitMix) -> (Value, String),
    /// Keys equal under this text are one key on the server (the collation's view).
    normalize: fn(&str) -> String,
    /// Another spelling of the same key (a case variant under a case-insensitive collation).
    respell: fn(&str, &mut SplitMix) -> String,
}

fn exact(text: &str) -> String {
    text.to_owned()
}

fn same(text: &str, _: &mut SplitMix) -> String {
    text.to_owned()
}

/// Case-insensitive, PAD SPACE: ASCII case and trailing spaces do not count.
fn folded(text: &str) -> String {
    text.trim_end_matches(' ').to_ascii_lowercase()
}

/// PAD SPACE binary collations: trailing spaces do not count.
fn padded(text: &str) -> String {
    text.trim_end_matches(' ').to_owned()
}

fn flip_case(text: &str, random: &mut SplitMix) -> String {
    text.chars()
        .map(|c| {
            if random.below(2) == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Accent- and case-insensitive, NO PAD (MySQL's `utf8mb4_0900_ai_ci`, MariaDB's
/// `utf8mb4_unicode_520_nopad_ci`): the accents the generator uses, and case, do not count;
/// trailing spaces do.
fn accents_folded(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' => 'e',
            'à' | 'â' | 'À' => 'a',
            'ü' | 'û' | 'Ü' => 'u',
            'ï' | 'î' => 'i',
            'ç' | 'Ç' => 'c',
            'ö' | 'Ö' => 'o',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// Another spelling under an accent- and case-insensitive collation: accents added or dropped,
/// case flipped (trailing spaces kept: they count under NO PAD).
fn flip_accents(text: &str, random: &mut SplitMix) -> String {
    let respelt: String = text
        .chars()
        .map(|c| match (c, random.below(3)) {
            ('e', 0) => 'é',
            ('é', 0) => 'E',
            ('a', 0) => 'à',
            ('à', 0) => 'A',
            ('u', 0) => 'ü',
            ('ü', 0) => 'u',
            ('c', 0) => 'Ç',
            ('ç', 0) => 'c',
            (other, _) => other,
        })
        .collect();
    flip_case(&respelt, random)
}

fn accented_word(random: &mut SplitMix) -> (Value, String) {
    const WORDS: [&str; 5] = ["résumé", "cafe", "Façade", "über", "naïve"];
    let word = WORDS[random.below(WORDS.len() as u64) as usize];
    let mut text = flip_accents(&format!("{word}-{}", random.below(300)), random);
    if random.below(6) == 0 {
        text.push(' ');
    }
    text_value(text)
}

fn text_value(text: String) -> (Value, String) {
    (Value::Bytes(text.clone().into_bytes()), text)
}

fn small_int(random: &mut SplitMix) -> (Value, String) {
    let value = random.below(60) as i64 - 30;
    (Value::Int(value), value.to_string())
}

fn mid_int(random: &mut SplitMix) -> (Value, String) {
    let value = random.below(200) as i64;
    (Value::Int(value), value.to_string())
}

fn sparse_signed(random: &mut SplitMix) -> (Value, String) {
    let r = random.below(1_000) as i64;
    let value = match random.below(5) {
        0 => i64::MIN + r,
        1 => -r * 1_000_000_000_000,
        2 => r - 500,
        3 => r * 1_000_000_000_000_000,
        _ => i64::MAX - r,
    };
    (Value::Int(value), value.to_string())
}

fn extreme_unsigned(random: &mut SplitMix) -> (Value, String) {
    let r = random.below(1_000);
    let value = match random.below(3) {
        0 => r,
        1 => (1 << 63) - 500 + r,
        _ => u64::MAX - r,
    };
    (Value::UInt(value), value.to_string())
}

fn ci_word(random: &mut SplitMix) -> (Value, String) {
    const WORDS: [&str; 6] = ["alpha", "Beta", "GAMMA", "delta", "Epsilon", "zeta"];
    let word = WORDS[random.below(WORDS.len() as u64) as usize];
    let mut text = flip_case(&format!("{word}-{}", random.below(400)), random);
    if random.below(8) == 0 {
        text.push_str("  ");
    }
    text_value(text)
}

fn four_byte_word(random: &mut SplitMix) -> (Value, String) {
    const WORDS: [&str; 5] = ["🐟", "🌊fish", "Zoë", "日本", "a"];
    let word = WORDS[random.below(WORDS.len() as u64) as usize];
    let mut text = format!("{word}{}", random.below(500));
    if random.below(8) == 0 {
        text.push(' ');
    }
    text_value(text)
}

fn latin1_word(random: &mut SplitMix) -> (Value, String) {
    const WORDS: [&str; 4] = ["café", "naïve", "über", "plain"];
    let word = WORDS[random.below(WORDS.len() as u64) as usize];
    text_value(format!("{word}{}", random.below(300)))
}

fn uuid_bytes(random: &mut SplitMix) -> (Value, String) {
    let mut bytes: Vec<u8> = (0..16).map(|_| random.below(256) as u8).collect();
    // The binlog drops trailing zero bytes of BINARY values: make many keys end in some.
    let zeros = random.below(4) as usize;
    for byte in bytes.iter_mut().rev().take(zeros) {
        *byte = 0;
    }
    // Few distinct keys, so that the writer hits existing rows.
    bytes[0] = random.below(8) as u8;
    let hex = bytes.iter().map(|byte| format!("{byte:02X}")).collect();
    (Value::Bytes(bytes), hex)
}

fn short_bytes(random: &mut SplitMix) -> (Value, String) {
    let length = random.below(4) as usize;
    let bytes: Vec<u8> = (0..length).map(|_| random.below(3) as u8 * 0x7f).collect();
    let hex = bytes.iter().map(|byte| format!("{byte:02X}")).collect();
    (Value::Bytes(bytes), hex)
}

fn datetime6(random: &mut SplitMix) -> (Value, String) {
    let year = 1000 + random.below(9000) as u16;
    let (month, day) = (1 + random.below(12) as u8, 1 + random.below(28) as u8);
    let (hour, minute, second) = (
        random.below(24) as u8,
        random.below(60) as u8,
        random.below(60) as u8,
    );
    let micros = random.below(4) as u32 * 250_001;
    let text =
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}");
    (
        Value::Date(year, month, day, hour, minute, second, micros),
        text,
    )
}

fn date(random: &mut SplitMix) -> (Value, String) {
    let year = [1000, 1970, 2024, 9999][random.below(4) as usize];
    let (month, day) = (1 + random.below(12) as u8, 1 + random.below(28) as u8);
    (
        Value::Date(year, month, day, 0, 0, 0, 0),
        format!("{year:04}-{month:02}-{day:02}"),
    )
}

fn decimal(random: &mut SplitMix) -> (Value, String) {
    let micros = random.below(4_000_000_000_000) as i64 - 2_000_000_000_000;
    let sign = if micros < 0 { "-" } else { "" };
    let text = format!(
        "{sign}{}.{:06}",
        micros.unsigned_abs() / 1_000_000,
        micros.unsigned_abs() % 1_000_000
    );
    text_value(text)
}

macro_rules! column {
    ($name:literal, $type:literal, $read:literal, $generate:expr) => {
        column!($name, $type, $read, $generate, exact, same)
    };
    ($name:literal, $type:literal, $read:literal, $generate:expr, $normalize:expr, $respell:expr) => {
        KeyColumn {
            definition: concat!("`", $name, "` ", $type, " NOT NULL"),
            name: $name,
            read: $read,
            generate: $generate,
            normalize: $normalize,
            respell: $respell,
        }
    };
}

/// The writer's ledger: normalized key → (bound key values, exact key text, payload).
type Ledger = BTreeMap<Vec<String>, (Vec<Value>, Vec<String>, String)>;

struct Table<'a> {
    columns: &'a [KeyColumn],
}

impl Table<'_> {
    fn key(&self, random: &mut SplitMix) -> (Vec<Value>, Vec<String>) {
        self.columns
            .iter()
            .map(|column| (column.generate)(random))
            .unzip()
    }

    fn normalized(&self, exact: &[String]) -> Vec<String> {
        self.columns
            .iter()
            .zip(exact)
            .map(|(column, text)| (column.normalize)(text))
            .collect()
    }

    /// An existing key, possibly spelt differently (same row on the server).
    fn existing(
        &self,
        ledger: &Ledger,
        random: &mut SplitMix,
    ) -> Option<(Vec<Value>, Vec<String>)> {
        if ledger.is_empty() {
            return None;
        }
        let index = random.below(ledger.len() as u64) as usize;
        let (_, (values, exact, _)) = ledger.iter().nth(index)?;
        let mut values = values.clone();
        let mut exact = exact.clone();
        for (position, column) in self.columns.iter().enumerate() {
            let respelt = (column.respell)(&exact[position], random);
            if respelt != exact[position] {
                values[position] = Value::Bytes(respelt.clone().into_bytes());
                exact[position] = respelt;
            }
        }
        Some((values, exact))
    }

    fn where_key(&self) -> String {
        self.columns
            .iter()
            .map(|column| format!("`{}` = ?", column.name))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|column| format!("`{}`", column.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One random change, committed (autocommit) or refused; the ledger follows what committed.
    async fn change(
        &self,
        connection: &mut Conn,
        ledger: &mut Ledger,
        random: &mut SplitMix,
        serial: u64,
    ) -> Result<bool, mysql_async::Error> {
        let payload = format!("v{serial}");
        let pick = random.below(10);
        let target = if pick < 4 || ledger.is_empty() {
            self.key(random)
        } else {
            self.existing(ledger, random).unwrap()
        };
        let (values, exact) = target;
        let normalized = self.normalized(&exact);
        let outcome = match pick {
            // Insert or replace: the row's key is spelt as written.
            0..=4 => {
                let placeholders = vec!["?"; values.len() + 1].join(", ");
                let mut params = values.clone();
                params.push(Value::from(payload.clone()));
                connection
                    .exec_drop(
                        format!(
                            "REPLACE INTO t ({}, v) VALUES ({placeholders})",
                            self.names()
                        ),
                        params,
                    )
                    .await?;
                ledger.insert(normalized, (values, exact, payload));
                true
            }
            5 | 6 => {
                connection
                    .exec_drop(format!("DELETE FROM t WHERE {}", self.where_key()), values)
                    .await?;
                ledger.remove(&normalized).is_some()
            }
            7 => {
                let mut params = vec![Value::from(payload.clone())];
                params.extend(values);
                connection
                    .exec_drop(
                        format!("UPDATE t SET v = ? WHERE {}", self.where_key()),
                        params,
                    )
                    .await?;
                match ledger.get_mut(&normalized) {
                    Some(entry) => {
                        entry.2 = payload;
                        true
                    }
                    None => false,
                }
            }
            // Move the row to another key (refused if that key is taken).
            _ => {
                let (new_values, new_exact) = self.key(random);
                let new_normalized = self.normalized(&new_exact);
                let sets = self
                    .columns
                    .iter()
                    .map(|column| format!("`{}` = ?", column.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut params = new_values.clone();
                params.extend(values);
                match connection
                    .exec_drop(
                        format!("UPDATE t SET {sets} WHERE {}", self.where_key()),
                        params,
                    )
                    .await
                {
                    Err(mysql_async::Error::Server(error)) if error.code == 1062 => false,
                    Err(error) => return Err(error),
                    Ok(()) => match ledger.remove(&normalized) {
                        Some((_, _, row_payload)) => {
                            ledger.insert(new_normalized, (new_values, new_exact, row_payload));
                            true
                        }
                        None => false,
                    },
                }
            }
        };
        Ok(outcome)
    }

    /// The table as the ledger would hold it.
    async fn read(&self, connection: &mut Conn) -> BTreeMap<Vec<String>, (Vec<String>, String)> {
        let reads: Vec<&str> = self.columns.iter().map(|column| column.read).collect();
        let rows: Vec<mysql_async::Row> = connection
            .query(format!("SELECT {}, v FROM t", reads.join(", ")))
            .await
            .unwrap();
        rows.into_iter()
            .map(|row| {
                let mut texts: Vec<String> = (0..row.len())
                    .map(|index| row.get::<String, _>(index).unwrap())
                    .collect();
                let payload = texts.pop().unwrap();
                (self.normalized(&texts), (texts, payload))
            })
            .collect()
    }
}

/// Migrates a table keyed by `columns` with `shoal run --copy-mode <mode>` under the writer.
async fn migrates_exactly(label: &str, mode: &str, columns: &[KeyColumn]) {
    let table = Table { columns };
    let database = servers::shared().database(label).await.unwrap();
    let mut connection = database.connect().await.unwrap();
    let definitions: Vec<&str> = columns.iter().map(|column| column.definition).collect();
    connection
        .query_drop(format!(
            "CREATE TABLE t ({}, v VARCHAR(40) NOT NULL, PRIMARY KEY ({})) ENGINE=InnoDB",
            definitions.join(", "),
            table.names()
        ))
        .await
        .unwrap();
    let mut random = SplitMix::new(0x6b65_7973);
    let mut ledger = Ledger::new();
    // Seed: about 2,000 rows, committed as one transaction for speed.
    connection.query_drop("START TRANSACTION").await.unwrap();
    for serial in 0..2_000 {
        let (values, exact) = table.key(&mut random);
        let mut params = values.clone();
        params.push(Value::from(format!("seed{serial}")));
        let placeholders = vec!["?"; params.len()].join(", ");
        connection
            .exec_drop(
                format!(
                    "REPLACE INTO t ({}, v) VALUES ({placeholders})",
                    table.names()
                ),
                params,
            )
            .await
            .unwrap();
        ledger.insert(
            table.normalized(&exact),
            (values, exact, format!("seed{serial}")),
        );
    }
    connection.query_drop("COMMIT").await.unwrap();

    // Buffered copies read a chunk, pause, then write it: changes land between the two.
    let failpoint = match mode {
        "buffered" => "copy.after_read=sleep(30)",
        _ => "copy.server_sleep=sleep(30)",
    };
    let mut shoal = shoal_run(
        &database,
        "ALTER TABLE t ADD COLUMN extra INT NULL",
        &[
            "--chunk-rows",
            "40",
            "--target-chunk-time",
            "0",
            "--copy-mode",
            mode,
        ],
        failpoint,
    );
    let stop = CancellationToken::new();
    let writer = {
        let stop = stop.clone();
        let mut connection = database.connect().await.unwrap();
        let table = &table;
        async move {
            let mut committed = 0u64;
            let mut serial = 0u64;
            while !stop.is_cancelled() {
                serial += 1;
                match table
                    .change(&mut connection, &mut ledger, &mut random, serial)
                    .await
                {
                    Ok(true) => committed += 1,
                    Ok(false) => {}
                    // A lock wait or deadlock against the copy: rolled back, ledger untouched.
                    Err(mysql_async::Error::Server(error)) if matches!(error.code, 1205 | 1213) => {
                    }
                    Err(error) => panic!("writer: {error}"),
                }
            }
            (ledger, committed, connection)
        }
    };
    let (writer_result, logs) = tokio::join!(writer, async {
        let logs = expect_success(&mut shoal).await;
        stop.cancel();
        logs
    });
    let (ledger, committed, mut connection) = writer_result;
    assert!(
        committed >= 200,
        "only {committed} changes committed during the migration"
    );
    // The change path alone must be right: a checksum repair would hide its mistakes.
    assert!(
        logs.contains(" 0 range(s) repaired"),
        "{label}: the checksum had to repair ranges:\n{logs}"
    );
    let create: (String, String) = connection
        .query_first("SHOW CREATE TABLE t")
        .await
        .unwrap()
        .unwrap();
    assert!(
        create.1.contains("`extra`"),
        "not migrated:\n{}\n{logs}",
        create.1
    );
    let actual = table.read(&mut connection).await;
    let expected: BTreeMap<Vec<String>, (Vec<String>, String)> = ledger
        .into_iter()
        .map(|(normalized, (_, exact, payload))| (normalized, (exact, payload)))
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|(key, row)| actual.get(*key) != Some(row))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|(key, _)| !expected.contains_key(*key))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && actual.len() == expected.len(),
        "{label}: {} rows expected, {} found; differing or missing: {missing:?}; unexpected: {extra:?}\n{logs}",
        expected.len(),
        actual.len()
    );
    eprintln!(
        "{label}: {} rows exact after {committed} concurrent changes",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_integer_key() {
    migrates_exactly(
        "composite_int",
        "buffered",
        &[
            column!("a", "SMALLINT", "CAST(a AS CHAR)", small_int),
            column!("b", "INT UNSIGNED", "CAST(b AS CHAR)", mid_int),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_column_key_of_date_bytes_and_integer() {
    migrates_exactly(
        "composite3",
        "server",
        &[
            column!("d", "DATE", "CAST(d AS CHAR)", date),
            column!("b", "VARBINARY(8)", "HEX(b)", short_bytes),
            column!("n", "SMALLINT", "CAST(n AS CHAR)", small_int),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_insensitive_varchar_key() {
    migrates_exactly(
        "varchar_ci",
        "buffered",
        &[column!(
            "s",
            "VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
            "s",
            ci_word,
            folded,
            flip_case
        )],
    )
    .await;
}

/// MySQL's default collation, `utf8mb4_0900_ai_ci` (on MariaDB its nearest,
/// `utf8mb4_unicode_520_nopad_ci`): keys equal without their accents and case are one row,
/// while a trailing space makes another key (NO PAD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accent_insensitive_no_pad_key() {
    let definition = match servers::flavour() {
        servers::Flavour::MySql => {
            "`s` VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_0900_ai_ci NOT NULL"
        }
        servers::Flavour::MariaDb => {
            "`s` VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_nopad_ci NOT NULL"
        }
    };
    migrates_exactly(
        "varchar_ai",
        "buffered",
        &[KeyColumn {
            definition,
            name: "s",
            read: "s",
            generate: accented_word,
            normalize: accents_folded,
            respell: flip_accents,
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_collation_key_with_four_byte_characters() {
    migrates_exactly(
        "varchar_bin",
        "server",
        &[column!(
            "s",
            "VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "s",
            four_byte_word,
            padded,
            same
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_key_beside_an_integer() {
    migrates_exactly(
        "latin1",
        "buffered",
        &[
            column!(
                "s",
                "VARCHAR(20) CHARACTER SET latin1",
                "s",
                latin1_word,
                folded,
                flip_case
            ),
            column!("n", "INT", "CAST(n AS CHAR)", small_int),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary16_uuid_key() {
    migrates_exactly(
        "uuid",
        "server",
        &[column!("id", "BINARY(16)", "HEX(id)", uuid_bytes)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datetime6_key() {
    migrates_exactly(
        "datetime6",
        "buffered",
        &[column!("at", "DATETIME(6)", "CAST(at AS CHAR)", datetime6)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_key() {
    migrates_exactly(
        "decimal",
        "server",
        &[column!(
            "amount",
            "DECIMAL(20,6)",
            "CAST(amount AS CHAR)",
            decimal
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_signed_bigint_key_at_its_extremes() {
    migrates_exactly(
        "bigint_signed",
        "buffered",
        &[column!("id", "BIGINT", "CAST(id AS CHAR)", sparse_signed)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_bigint_key_above_the_signed_range() {
    migrates_exactly(
        "bigint_unsigned",
        "server",
        &[column!(
            "id",
            "BIGINT UNSIGNED",
            "CAST(id AS CHAR)",
            extreme_unsigned
        )],
    )
    .await;
}
