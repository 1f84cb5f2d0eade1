//! Primary-key values: what a key column holds, and when shoal may order keys itself.
//!
//! A key is one part per primary-key column, in key order. Keys and tuples of keys compare
//! part by part, so a composite key orders as the server's row comparison does — provided every
//! part compares in Rust as the server compares it.
//!
//! # Invariants
//! - INV-K1: shoal compares two keys itself only when their shape is [`KeyShape::is_ordered`]
//!   (integers, byte strings, dates and datetimes: Rust's order is the server's order). Keys of
//!   any other shape (character columns under a collation, DECIMAL) are compared by the server
//!   alone: their chunk bounds come from the server, and their buffered changes are deferred
//!   until the whole copy is drained (design "Change capture").
//!
//! # Design decisions
//! Character parts carry the bytes as received (the binlog gives them in the column's own
//! character set, a probe in the session's) and are never compared in Rust; equal-under-collation
//! keys such as `'a'` and `'A'` are therefore distinct buffer entries (why one flush of both stays
//! right: `crate::changes`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a key column's values are held and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyKind {
    /// Signed integer columns.
    Signed,
    /// Unsigned integer columns.
    Unsigned,
    /// BINARY and VARBINARY: compared byte-wise, as the server does.
    Bytes,
    /// DATE and DATETIME: compared by their fields.
    Temporal,
    /// Character strings under a collation, DECIMAL: only the server orders them (INV-K1).
    ServerOrdered,
}

impl KeyKind {
    /// The kind of a key column of SQL type `data_type` (lower case, as
    /// `information_schema.COLUMNS.DATA_TYPE`), or `None` if shoal cannot key on it.
    pub fn of(data_type: &str, unsigned: bool) -> Option<Self> {
        match data_type {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
                Some(if unsigned {
                    KeyKind::Unsigned
                } else {
                    KeyKind::Signed
                })
            }
            "binary" | "varbinary" => Some(KeyKind::Bytes),
            "date" | "datetime" => Some(KeyKind::Temporal),
            "char" | "varchar" | "decimal" => Some(KeyKind::ServerOrdered),
            _ => None,
        }
    }
}

/// Date and time fields, in significance order (so the derived order is the calendar's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DateTime {
    /// Year.
    pub year: u16,
    /// Month (1–12, 0 in zero dates).
    pub month: u8,
    /// Day.
    pub day: u8,
    /// Hour.
    pub hour: u8,
    /// Minute.
    pub minute: u8,
    /// Second.
    pub second: u8,
    /// Microsecond.
    pub micros: u32,
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.micros
        )
    }
}

impl DateTime {
    /// Parses `YYYY-MM-DD[ HH:MM:SS[.ffffff]]`, the form the server and [`fmt::Display`] print.
    pub fn parse(text: &str) -> Option<Self> {
        let (date, time) = text.split_once(' ').unwrap_or((text, "00:00:00"));
        let mut date = date.splitn(3, '-');
        let year = date.next()?.parse().ok()?;
        let month = date.next()?.parse().ok()?;
        let day = date.next()?.parse().ok()?;
        let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
        let mut clock = clock.splitn(3, ':');
        let hour = clock.next()?.parse().ok()?;
        let minute = clock.next()?.parse().ok()?;
        let second = clock.next()?.parse().ok()?;
        let micros = if fraction.is_empty() {
            0
        } else if fraction.len() <= 6 && fraction.bytes().all(|b| b.is_ascii_digit()) {
            format!("{fraction:0<6}").parse().ok()?
        } else {
            return None;
        };
        Some(Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        })
    }
}

/// One column of a key value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyPart {
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A byte string (BINARY, VARBINARY; BINARY padded to its length).
    Bytes(Vec<u8>),
    /// A DATE or DATETIME.
    Temporal(DateTime),
    /// A value only the server orders: character bytes, or a DECIMAL's text.
    Opaque(Vec<u8>),
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Int(value) => write!(f, "{value}"),
            KeyPart::UInt(value) => write!(f, "{value}"),
            KeyPart::Bytes(bytes) => {
                write!(f, "0x")?;
                bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
            KeyPart::Temporal(datetime) => write!(f, "'{datetime}'"),
            KeyPart::Opaque(bytes) => write!(f, "{:?}", String::from_utf8_lossy(bytes)),
        }
    }
}

/// A primary-key value: one part per key column, in key order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(pub Vec<KeyPart>);

impl Key {
    /// A single signed integer key (tests and integer tables).
    pub fn int(value: i64) -> Self {
        Key(vec![KeyPart::Int(value)])
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [single] => write!(f, "{single}"),
            parts => {
                write!(f, "(")?;
                for (index, part) in parts.iter().enumerate() {
                    if index > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{part}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// The primary key's columns and their kinds, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyShape {
    /// Column names, in key order.
    pub columns: Vec<String>,
    /// Kind of each column.
    pub kinds: Vec<KeyKind>,
}

impl KeyShape {
    /// Whether shoal may order keys of this shape itself (INV-K1).
    pub fn is_ordered(&self) -> bool {
        !self.kinds.contains(&KeyKind::ServerOrdered)
    }

    /// Whether the key is one integer column, cut arithmetically rather than by probing.
    pub fn is_integer(&self) -> bool {
        matches!(self.kinds.as_slice(), [KeyKind::Signed | KeyKind::Unsigned])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_order_part_by_part() {
        let key = |a: i64, b: &[u8]| Key(vec![KeyPart::Int(a), KeyPart::Bytes(b.to_vec())]);
        assert!(key(1, b"z") < key(2, b"a"));
        assert!(key(2, b"a") < key(2, b"ab"));
        assert!(key(-5, b"\xff") < key(-4, b""));
        assert!(Key(vec![KeyPart::UInt(u64::MAX)]) > Key(vec![KeyPart::UInt(1 << 63)]));
    }

    #[test]
    fn datetimes_parse_print_and_order() {
        let early = DateTime::parse("1000-01-01 00:00:00").unwrap();
        let late = DateTime::parse("9999-12-31 23:59:59.999999").unwrap();
        let fraction = DateTime::parse("2026-11-23 09:13:41.5").unwrap();
        assert_eq!(fraction.micros, 500_000);
        assert!(early < fraction && fraction < late);
        assert_eq!(DateTime::parse(&late.to_string()), Some(late));
        assert_eq!(
            DateTime::parse("2026-11-23").unwrap().to_string(),
            "2026-11-23 00:00:00.000000"
        );
        assert_eq!(DateTime::parse("2026-11-23 1:2"), None);
        assert_eq!(DateTime::parse("2026-11-23 01:02:03.1234567"), None);
    }

    #[test]
    fn shapes_know_what_shoal_may_order() {
        let shape = |kinds: Vec<KeyKind>| KeyShape {
            columns: kinds.iter().map(|kind| format!("{kind:?}")).collect(),
            kinds,
        };
        assert!(shape(vec![KeyKind::Signed]).is_integer());
        assert!(shape(vec![KeyKind::Unsigned]).is_integer());
        assert!(!shape(vec![KeyKind::Signed, KeyKind::Signed]).is_integer());
        assert!(shape(vec![KeyKind::Bytes, KeyKind::Temporal]).is_ordered());
        assert!(!shape(vec![KeyKind::Signed, KeyKind::ServerOrdered]).is_ordered());
        assert_eq!(KeyKind::of("bigint", true), Some(KeyKind::Unsigned));
        assert_eq!(KeyKind::of("varchar", false), Some(KeyKind::ServerOrdered));
        assert_eq!(KeyKind::of("float", false), None);
        assert_eq!(KeyKind::of("timestamp", false), None);
    }
}
