//! Binlog positions, and the file names rotate events give.

/// A position in the binlog: (file, offset). Files compare by name (same base, numbered).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinlogPos {
    /// Binlog file name.
    pub file: String,
    /// Offset within the file.
    pub pos: u64,
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// The file a rotate event names, given the file being read.
///
/// The first (fake) rotate of a dump names the file being read with the 4 bytes of its checksum
/// appended (mysql_async #189), and those bytes can be anything, digits and dots included: a name
/// that starts with the current file's is the current file. A real rotate names the next file;
/// its sequence number keeps as many digits as the current one's (servers zero-pad it), and
/// anything after them is dropped (real rotates carry no checksum bytes in their name; a name
/// that only grows digits is a sequence past 999999).
///
/// Getting this wrong is not cosmetic: positions compare by file name first, so a name with
/// trailing bytes sorts after every real position in its file, and "caught up" would be believed
/// at once while events are still on their way.
pub fn next_file_name(current: &str, raw: &str) -> String {
    if raw.starts_with(current) {
        return current.to_owned();
    }
    let width = current
        .rsplit_once('.')
        .map_or(6, |(_, sequence)| sequence.len().max(1));
    // The last dot followed by a full-width sequence number.
    let Some(dot) = raw.rmatch_indices('.').map(|(dot, _)| dot).find(|dot| {
        raw[dot + 1..]
            .chars()
            .take(width)
            .filter(char::is_ascii_digit)
            .count()
            == width
    }) else {
        return raw.to_owned();
    };
    let sequence: String = raw[dot + 1..].chars().take(width).collect();
    // A sequence past 999999 grows a digit: keep a seventh digit only when nothing follows it.
    let rest: String = raw[dot + 1 + width..].chars().collect();
    if rest.chars().all(|c| c.is_ascii_digit()) {
        return raw.to_owned();
    }
    format!("{}.{sequence}", &raw[..dot])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_trailing_garbage() {
        let current = "mariadb-bin.000001";
        // The fake rotate names the current file plus checksum bytes: digits and dots included.
        for garbage in ["\u{1}\u{2}ab", "\u{fffd}D.", "8", "7\u{3}.9", ""] {
            assert_eq!(
                next_file_name(current, &format!("{current}{garbage}")),
                current,
                "{garbage:?}"
            );
        }
        // A real rotate names the next file.
        assert_eq!(
            next_file_name(current, "mariadb-bin.000002"),
            "mariadb-bin.000002"
        );
        assert_eq!(
            next_file_name(current, "mariadb-bin.000002\u{fffd}.x"),
            "mariadb-bin.000002"
        );
        // A dotted base keeps its dots.
        assert_eq!(
            next_file_name("db.host-bin.000009", "db.host-bin.000010"),
            "db.host-bin.000010"
        );
        // Past 999999 the sequence grows a digit.
        assert_eq!(next_file_name("bin.999999", "bin.1000000"), "bin.1000000");
    }

    #[test]
    fn positions_order_by_file_then_offset() {
        let first = BinlogPos {
            file: "b.000001".into(),
            pos: 900,
        };
        let second = BinlogPos {
            file: "b.000002".into(),
            pos: 4,
        };
        assert!(first < second);
        assert!(
            BinlogPos {
                file: "b.000002".into(),
                pos: 5
            } > second
        );
    }
}
