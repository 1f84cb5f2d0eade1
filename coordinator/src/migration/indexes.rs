//! Deferred secondary indexes. The shadow table is copied without its plain secondary indexes
//! (non-unique B-tree `KEY`s); `RestoreSecondaryIndexes` adds them back in one online `ALTER`,
//! which builds each index by sorting instead of inserting every copied row into it. Unique
//! keys stay (they must refuse duplicates while rows arrive), and so do FULLTEXT and SPATIAL
//! keys (their builds cannot run beside writes). The definitions come from the server's own
//! `SHOW CREATE TABLE` text, so an index is added back exactly as the ALTER asked for it, in
//! its place among the table's keys.

use mysql_async::prelude::Queryable;

use super::Error;

/// A plain secondary index of a `SHOW CREATE TABLE` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Its name, unquoted.
    pub name: String,
    /// Its definition as the server prints it (``KEY `k` (`c`)``), valid after `ADD`.
    pub definition: String,
}

/// The plain secondary indexes of a `SHOW CREATE TABLE` text, in the order it lists them.
pub fn plain_indexes(create_table: &str) -> Vec<Index> {
    create_table
        .lines()
        .filter_map(|line| {
            let definition = line.trim().trim_end_matches(',');
            let name = unquote(definition.strip_prefix("KEY ")?)?;
            Some(Index {
                name,
                definition: definition.to_owned(),
            })
        })
        .collect()
}

/// The name a definition starts with (a backtick-quoted identifier, doubled backticks escaped).
fn unquote(text: &str) -> Option<String> {
    let mut chars = text.strip_prefix('`')?.chars().peekable();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        if c == '`' {
            if chars.peek() == Some(&'`') {
                chars.next();
            } else {
                return Some(name);
            }
        }
        name.push(c);
    }
    None
}

/// `ALTER TABLE … DROP INDEX …` for `indexes`; `None` when there are none.
pub fn drop_statement(qualified: &str, indexes: &[Index]) -> Option<String> {
    let drops: Vec<String> = indexes
        .iter()
        .map(|index| {
            format!(
                "DROP INDEX {}",
                shoal_common::sql::quote_identifier(&index.name)
            )
        })
        .collect();
    (!drops.is_empty()).then(|| format!("ALTER TABLE {qualified} {}", drops.join(", ")))
}

/// The deferred definitions the table lacks (`present` lists the plain indexes it has; a
/// restore interrupted after its `ALTER` finds them all there).
pub fn missing<'a>(deferred: &'a [String], present: &[Index]) -> Vec<&'a str> {
    deferred
        .iter()
        .filter(|definition| {
            plain_indexes(definition)
                .first()
                .is_none_or(|index| present.iter().all(|have| have.name != index.name))
        })
        .map(String::as_str)
        .collect()
}

/// `ALTER TABLE … ADD …` for `definitions`; `None` when there are none.
pub fn restore_statement(qualified: &str, definitions: &[&str]) -> Option<String> {
    let adds: Vec<String> = definitions
        .iter()
        .map(|definition| format!("ADD {definition}"))
        .collect();
    (!adds.is_empty()).then(|| format!("ALTER TABLE {qualified} {}", adds.join(", ")))
}

async fn create_table(
    connection: &mut mysql_async::Conn,
    qualified: &str,
) -> Result<String, Error> {
    let row: Option<(String, String)> = connection
        .query_first(format!("SHOW CREATE TABLE {qualified}"))
        .await?;
    row.map(|(_, text)| text)
        .ok_or_else(|| Error::Preflight(format!("table {qualified} vanished")))
}

/// Drops the shadow table's plain secondary indexes; returns their definitions (to be saved in
/// the checkpoint before any row is copied).
pub async fn defer(
    connection: &mut mysql_async::Conn,
    qualified: &str,
) -> Result<Vec<String>, Error> {
    let indexes = plain_indexes(&create_table(connection, qualified).await?);
    if let Some(statement) = drop_statement(qualified, &indexes) {
        connection.query_drop(statement).await?;
    }
    Ok(indexes.into_iter().map(|index| index.definition).collect())
}

/// Adds back the deferred indexes the shadow table lacks, online (the server's default: no lock
/// where the build allows it, so the change stream keeps applying meanwhile). Returns how many
/// it added.
pub async fn restore(
    connection: &mut mysql_async::Conn,
    qualified: &str,
    deferred: &[String],
) -> Result<usize, Error> {
    let present = plain_indexes(&create_table(connection, qualified).await?);
    let missing = missing(deferred, &present);
    if let Some(statement) = restore_statement(qualified, &missing) {
        connection.query_drop(statement).await?;
    }
    Ok(missing.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWN: &str = "CREATE TABLE `o` (\n  `id` int(11) NOT NULL,\n  `a` int(11) DEFAULT NULL,\n  \
        `b` varchar(20) DEFAULT NULL,\n  `c` text DEFAULT NULL,\n  `u` int(11) DEFAULT NULL,\n  \
        `KEY x` int DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `uu` (`u`),\n  \
        KEY `ka` (`a`),\n  KEY `kb` (`b`(5) DESC) COMMENT 'x`y',\n  KEY `we``ird` (`a`,`b`),\n  \
        FULLTEXT KEY `fc` (`c`)\n) ENGINE=InnoDB DEFAULT CHARSET=latin1";

    #[test]
    fn only_plain_keys_are_deferred_with_their_whole_definition() {
        let indexes = plain_indexes(SHOWN);
        let names: Vec<&str> = indexes.iter().map(|index| index.name.as_str()).collect();
        assert_eq!(names, ["ka", "kb", "we`ird"]);
        assert_eq!(
            indexes[1].definition,
            "KEY `kb` (`b`(5) DESC) COMMENT 'x`y'"
        );
        assert_eq!(indexes[2].definition, "KEY `we``ird` (`a`,`b`)");
    }

    #[test]
    fn a_table_without_plain_keys_defers_nothing() {
        let shown = "CREATE TABLE `t` (\n  `id` int NOT NULL,\n  PRIMARY KEY (`id`)\n)";
        assert!(plain_indexes(shown).is_empty());
        assert_eq!(drop_statement("`d`.`t`", &[]), None);
    }

    #[test]
    fn drop_quotes_every_name() {
        let statement = drop_statement("`d`.`_o_new`", &plain_indexes(SHOWN));
        assert_eq!(
            statement.as_deref(),
            Some("ALTER TABLE `d`.`_o_new` DROP INDEX `ka`, DROP INDEX `kb`, DROP INDEX `we``ird`")
        );
    }

    #[test]
    fn restore_adds_only_what_is_missing() {
        let deferred: Vec<String> = plain_indexes(SHOWN)
            .into_iter()
            .map(|index| index.definition)
            .collect();
        let partly =
            "CREATE TABLE `o` (\n  `id` int NOT NULL,\n  KEY `kb` (`b`(5) DESC) COMMENT 'x`y'\n)";
        let missing = missing(&deferred, &plain_indexes(partly));
        assert_eq!(
            restore_statement("`d`.`o`", &missing).as_deref(),
            Some("ALTER TABLE `d`.`o` ADD KEY `ka` (`a`), ADD KEY `we``ird` (`a`,`b`)")
        );
        assert!(super::missing(&deferred, &plain_indexes(SHOWN)).is_empty());
        assert_eq!(restore_statement("`d`.`o`", &[]), None);
    }
}
