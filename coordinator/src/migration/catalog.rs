//! What the server says about a table and about itself: columns, primary key, binlog settings.

use mysql_async::prelude::Queryable;
use shoal_common::sql::quote_qualified;

use super::Error;

/// One column, as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// `DATA_TYPE` (e.g. `int`, `varchar`).
    pub data_type: String,
    /// `COLUMN_TYPE` (e.g. `int(10) unsigned`).
    pub column_type: String,
    /// Generated (virtual or stored) columns are never written; the server computes them.
    pub generated: bool,
    /// Character set of a character column (`CHARACTER_SET_NAME`), `None` for other types.
    pub charset: Option<String>,
    /// The column may hold NULL (`IS_NULLABLE`).
    pub nullable: bool,
}

impl Column {
    /// This column as the checksum's row hash sees it.
    pub fn hashed(&self) -> shoal_worker::checksum::HashColumn {
        shoal_worker::checksum::HashColumn {
            name: self.name.clone(),
            // MySQL's VECTOR goes into no string function as it is (1210 in CONCAT_WS).
            text: self.charset.is_some() || self.data_type == "vector",
            nullable: self.nullable,
        }
    }

    /// The labels of an ENUM or SET column, in definition order (from `COLUMN_TYPE`).
    pub fn labels(&self) -> Vec<String> {
        let Some(body) = self
            .column_type
            .strip_prefix("enum(")
            .or_else(|| self.column_type.strip_prefix("set("))
            .and_then(|rest| rest.strip_suffix(')'))
        else {
            return Vec::new();
        };
        let mut labels = Vec::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\'' {
                continue;
            }
            let mut label = String::new();
            while let Some(c) = chars.next() {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        label.push('\'');
                        continue;
                    }
                    break;
                }
                label.push(c);
            }
            labels.push(label);
        }
        labels
    }

    /// Bit width of an unsigned integer column, for repairing binlog values decoded as signed.
    pub fn unsigned_bits(&self) -> Option<u32> {
        if !self.column_type.contains("unsigned") {
            return None;
        }
        match self.data_type.as_str() {
            "tinyint" => Some(8),
            "smallint" => Some(16),
            "mediumint" => Some(24),
            "int" | "integer" => Some(32),
            "bigint" => Some(64),
            _ => None,
        }
    }
}

/// A table's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Columns in ordinal order (the binlog's order).
    pub columns: Vec<Column>,
    /// Primary-key columns in key order.
    pub primary_key: Vec<String>,
}

impl TableInfo {
    /// Index of a column by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }
}

/// Reads a table's columns and primary key; `None` if the table does not exist.
pub async fn read_table(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
) -> Result<Option<TableInfo>, Error> {
    let rows: Vec<(String, String, String, String, Option<String>, String)> = connection
        .exec(
            // Generated columns have an expression on both servers (MariaDB's `IS_GENERATED`
            // does not exist on MySQL; MySQL's `DEFAULT_GENERATED` is a default, not generated).
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, \
             IF(COALESCE(GENERATION_EXPRESSION, '') = '', 'NEVER', 'ALWAYS'), CHARACTER_SET_NAME, \
             IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns = rows
        .into_iter()
        .map(
            |(name, data_type, column_type, generated, charset, nullable)| Column {
                name,
                data_type: data_type.to_ascii_lowercase(),
                column_type: column_type.to_ascii_lowercase(),
                generated: generated != "NEVER",
                charset: charset.map(|charset| charset.to_ascii_lowercase()),
                nullable: nullable != "NO",
            },
        )
        .collect();
    let primary_key: Vec<String> = connection
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (schema, table),
        )
        .await?;
    Ok(Some(TableInfo {
        columns,
        primary_key,
    }))
}

/// The server's estimate of a table's rows (`information_schema.TABLES.TABLE_ROWS`), 0 if none.
pub async fn estimated_rows(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
) -> Result<u64, Error> {
    let rows: Option<Option<u64>> = connection
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await?;
    Ok(rows.flatten().unwrap_or(0))
}

/// Whether a table exists.
pub async fn table_exists(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
) -> Result<bool, Error> {
    let found: Option<u8> = connection
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await?;
    Ok(found.is_some())
}

/// Refuses a view, a sequence or a system table by what it is (it has no rows of its own to
/// copy, or no primary key to name): a missing name is left to [`read_table`].
pub async fn refuse_other_than_tables(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
) -> Result<(), Error> {
    let kind: Option<String> = connection
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await?;
    let qualified = quote_qualified(schema, table);
    match kind.as_deref() {
        None | Some("BASE TABLE") => Ok(()),
        Some("SYSTEM VERSIONED") => Err(Error::Preflight(format!(
            "{qualified} is system-versioned: a copy would keep only its current rows and lose \
             its history; run this change with the server's own ALTER TABLE"
        ))),
        Some("VIEW") => Err(Error::Preflight(format!(
            "{qualified} is a view, not a table: a view has no rows of its own to copy; ALTER \
             the table it reads from, or change the view itself with CREATE OR REPLACE VIEW"
        ))),
        Some(other) => Err(Error::Preflight(format!(
            "{qualified} is a {}, not a base table: shoal alters base tables only",
            other.to_lowercase()
        ))),
    }
}

/// Server facts shoal depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `VERSION()`.
    pub version: String,
    /// Whether the server is MariaDB.
    pub mariadb: bool,
    /// `@@server_id`.
    pub server_id: u32,
    /// `@@hostname`.
    pub hostname: String,
    /// `@@lower_case_table_names` is not 0: the server compares table and schema names without
    /// regard to case.
    pub names_fold_case: bool,
}

impl ServerInfo {
    /// What a checkpoint records of the server.
    pub fn identity(&self) -> shoal_common::checkpoint::SourceIdentity {
        shoal_common::checkpoint::SourceIdentity {
            server_id: self.server_id,
            hostname: self.hostname.clone(),
        }
    }
}

/// `SHOW CREATE TABLE` of `schema`.`table` without its `AUTO_INCREMENT=` table option (the
/// counter moves with every insert; any other change is a change of the definition).
pub async fn definition(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
) -> Result<String, Error> {
    let shown: Option<(String, String)> = connection
        .query_first(format!(
            "SHOW CREATE TABLE {}",
            quote_qualified(schema, table)
        ))
        .await?;
    let (_, ddl) = shown.ok_or_else(|| {
        Error::Preflight(format!(
            "SHOW CREATE TABLE of `{schema}`.`{table}` returned nothing"
        ))
    })?;
    Ok(without_auto_increment(&ddl))
}

/// `ddl` (a `SHOW CREATE TABLE`) without the ` AUTO_INCREMENT=<n>` table option, which follows
/// the column list's closing parenthesis (at the start of a line: the server escapes newlines in
/// names and comments).
pub fn without_auto_increment(ddl: &str) -> String {
    let Some(options_start) = ddl.rfind("\n)") else {
        return ddl.to_owned();
    };
    let (columns, options) = ddl.split_at(options_start);
    let Some(at) = options.find(" AUTO_INCREMENT=") else {
        return ddl.to_owned();
    };
    let digits_start = at + " AUTO_INCREMENT=".len();
    let digits_end = options[digits_start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(options.len(), |end| digits_start + end);
    format!("{columns}{}{}", &options[..at], &options[digits_end..])
}

/// Checks the binlog settings shoal needs and returns server facts.
pub async fn check_server(connection: &mut impl Queryable) -> Result<ServerInfo, Error> {
    // The global settings: they are what the application's sessions log with.
    let (version, server_id, log_bin, format, image): (String, u32, i64, String, String) =
        connection
            .query_first(
                "SELECT VERSION(), @@server_id, @@GLOBAL.log_bin, @@GLOBAL.binlog_format, \
                 @@GLOBAL.binlog_row_image",
            )
            .await?
            .ok_or_else(|| Error::Preflight("the server returned no settings".to_owned()))?;
    if log_bin != 1 {
        return Err(Error::Preflight(
            "the binary log is off (log_bin=OFF); start the server with log_bin, binlog_format=ROW \
             and binlog_row_image=FULL"
                .to_owned(),
        ));
    }
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(Error::Preflight(format!(
            "binlog_format is {format}; shoal needs ROW: SET GLOBAL binlog_format=ROW (and in my.cnf)"
        )));
    }
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(Error::Preflight(format!(
            "binlog_row_image is {image}; shoal needs FULL: SET GLOBAL binlog_row_image=FULL (and in my.cnf)"
        )));
    }
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    if mariadb {
        let compressed: Option<i64> = connection.query_first("SELECT @@log_bin_compress").await?;
        if compressed == Some(1) {
            return Err(Error::Preflight(
                "log_bin_compress=ON: compressed binlog events cannot be decoded and would be lost; \
                 SET GLOBAL log_bin_compress=OFF"
                    .to_owned(),
            ));
        }
    } else {
        // MySQL 8.0.3+: partial JSON updates log a diff, not the document.
        let options: Option<String> = connection
            .query_first("SELECT @@GLOBAL.binlog_row_value_options")
            .await?;
        if options.is_some_and(|options| options.to_ascii_uppercase().contains("PARTIAL_JSON")) {
            return Err(Error::Preflight(
                "binlog_row_value_options=PARTIAL_JSON: updates of JSON columns log diffs, not \
                 the documents shoal must copy; SET GLOBAL binlog_row_value_options='' (and in \
                 my.cnf)"
                    .to_owned(),
            ));
        }
    }
    let (hostname, lower_case_table_names): (Option<String>, i64) = connection
        .query_first("SELECT @@hostname, @@lower_case_table_names")
        .await?
        .ok_or_else(|| Error::Preflight("the server returned no settings".to_owned()))?;
    Ok(ServerInfo {
        version,
        mariadb,
        server_id,
        hostname: hostname.unwrap_or_default(),
        names_fold_case: lower_case_table_names != 0,
    })
}

/// Privileges shoal needs on the table's schema (globally or on the schema).
const SCHEMA_PRIVILEGES: [&str; 8] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "LOCK TABLES",
];

/// The privileges shoal needs that `global` (granted on `*.*`) and `schema` (granted on the
/// schema) lack, as `GRANT` names: reading the binlog needs `REPLICATION SLAVE` and one of
/// `BINLOG MONITOR` (MariaDB 10.5+), `REPLICATION CLIENT` (MySQL) or `SUPER`; a takeover needs
/// `PROCESS` to see the previous owner's transactions.
pub fn missing_privileges(global: &[String], schema: &[String]) -> Vec<&'static str> {
    let granted = |list: &[String], privilege: &str| {
        list.iter()
            .any(|granted| granted.eq_ignore_ascii_case(privilege))
    };
    let mut missing = Vec::new();
    if !granted(global, "REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE");
    }
    if !["BINLOG MONITOR", "REPLICATION CLIENT", "SUPER"]
        .iter()
        .any(|privilege| granted(global, privilege))
    {
        missing.push("BINLOG MONITOR");
    }
    // A takeover finds a stalled owner's transaction in information_schema.INNODB_TRX.
    if !granted(global, "PROCESS") {
        missing.push("PROCESS");
    }
    for privilege in SCHEMA_PRIVILEGES {
        if !granted(global, privilege) && !granted(schema, privilege) {
            missing.push(privilege);
        }
    }
    missing
}

/// Refuses, naming them, when the account lacks privileges shoal needs on `schema`. Grants
/// through roles are not listed where this looks: an account with an enabled role is let
/// through (a missing privilege then fails the statement that needs it).
pub async fn check_privileges(
    connection: &mut impl Queryable,
    schema: &str,
    mariadb: bool,
) -> Result<(), Error> {
    let user: Option<String> = connection.query_first("SELECT CURRENT_USER()").await?;
    let user = user.unwrap_or_default();
    // `CURRENT_USER()` is `user@host`; grantees are written `'user'@'host'`.
    let grantee = match user.rsplit_once('@') {
        Some((name, host)) => format!("'{name}'@'{host}'"),
        None => format!("'{user}'"),
    };
    let global: Vec<String> = connection
        .exec(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?",
            (&grantee,),
        )
        .await?;
    let on_schema: Vec<String> = connection
        .exec(
            "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
             WHERE GRANTEE = ? AND ? LIKE TABLE_SCHEMA",
            (&grantee, schema),
        )
        .await?;
    let missing = missing_privileges(&global, &on_schema);
    if missing.is_empty() {
        return check_lock_waits_readable(connection, mariadb).await;
    }
    let roles: Option<i64> = connection
        .query_first("SELECT COUNT(ROLE_NAME) FROM information_schema.ENABLED_ROLES")
        .await?;
    if roles.unwrap_or(0) > 0 {
        return check_lock_waits_readable(connection, mariadb).await;
    }
    Err(Error::Preflight(format!(
        "the account {grantee} lacks privileges shoal needs: {}; grant them (REPLICATION SLAVE, \
         BINLOG MONITOR (MariaDB) or REPLICATION CLIENT (MySQL) and PROCESS on *.*, the others \
         on {}.*)",
        missing.join(", "),
        shoal_common::sql::quote_identifier(schema)
    )))
}

/// A takeover finds a stalled previous owner's transactions in
/// `performance_schema.data_lock_waits` on MySQL, which `PROCESS` does not open.
async fn check_lock_waits_readable(
    connection: &mut impl Queryable,
    mariadb: bool,
) -> Result<(), Error> {
    if mariadb {
        return Ok(());
    }
    match connection
        .query_drop("SELECT 1 FROM performance_schema.data_lock_waits LIMIT 0")
        .await
    {
        Err(mysql_async::Error::Server(server)) if server.code == 1142 => Err(Error::Preflight(
            "the account cannot read performance_schema.data_lock_waits, which a takeover \
             needs to find a stalled owner's transactions: GRANT SELECT ON \
             performance_schema.data_lock_waits TO the account"
                .to_owned(),
        )),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auto_increment_counter_is_not_part_of_the_definition() {
        let shown = "CREATE TABLE `t` (\n  `id` int NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n) \
                     ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4 COMMENT='a)b'";
        assert_eq!(
            without_auto_increment(shown),
            "CREATE TABLE `t` (\n  `id` int NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='a)b'"
        );
        let plain = "CREATE TABLE `t` (\n  `id` int NOT NULL\n) ENGINE=InnoDB";
        assert_eq!(without_auto_increment(plain), plain);
    }

    fn names(privileges: &[&str]) -> Vec<String> {
        privileges.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn privileges_come_from_the_global_or_the_schema_grant() {
        let on_schema = names(&SCHEMA_PRIVILEGES);
        let mut all_global = on_schema.clone();
        all_global.extend(names(&["REPLICATION SLAVE", "BINLOG MONITOR", "PROCESS"]));
        assert!(missing_privileges(&all_global, &[]).is_empty());
        let replication = names(&["REPLICATION SLAVE", "REPLICATION CLIENT", "PROCESS"]);
        let mut lower_case = on_schema.clone();
        lower_case[0] = lower_case[0].to_lowercase();
        assert!(missing_privileges(&replication, &lower_case).is_empty());
        assert_eq!(
            missing_privileges(&[], &on_schema),
            ["REPLICATION SLAVE", "BINLOG MONITOR", "PROCESS"]
        );
        assert_eq!(
            missing_privileges(
                &names(&["SUPER", "REPLICATION SLAVE", "PROCESS"]),
                &names(&["SELECT"])
            ),
            SCHEMA_PRIVILEGES[1..]
        );
    }

    fn column(data_type: &str, column_type: &str) -> Column {
        Column {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            generated: false,
            charset: None,
            nullable: false,
        }
    }

    #[test]
    fn enum_and_set_labels() {
        let enumeration = Column {
            name: "e".into(),
            data_type: "enum".into(),
            column_type: "enum('a','it''s','c,d')".into(),
            generated: false,
            charset: Some("utf8mb4".into()),
            nullable: false,
        };
        assert_eq!(enumeration.labels(), vec!["a", "it's", "c,d"]);
        assert!(column("int", "int(11)").labels().is_empty());
    }

    #[test]
    fn unsigned_widths() {
        assert_eq!(column("int", "int(10) unsigned").unsigned_bits(), Some(32));
        assert_eq!(
            column("bigint", "bigint(20) unsigned zerofill").unsigned_bits(),
            Some(64)
        );
        assert_eq!(column("int", "int(11)").unsigned_bits(), None);
        assert_eq!(
            column("decimal", "decimal(10,2) unsigned").unsigned_bits(),
            None
        );
    }
}
