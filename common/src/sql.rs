//! SQL text helpers. Identifiers are always quoted; values are always bound as parameters, never
//! formatted into SQL.

/// Quotes an identifier for MySQL/MariaDB: wrapped in backticks, inner backticks doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes `schema`.`table`.
pub fn quote_qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_identifier(schema), quote_identifier(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_escapes_backticks() {
        assert_eq!(quote_identifier("orders"), "`orders`");
        assert_eq!(quote_identifier("we`ird"), "`we``ird`");
        assert_eq!(
            quote_identifier("a`; DROP TABLE t; --"),
            "`a``; DROP TABLE t; --`"
        );
        assert_eq!(
            quote_qualified("shop", "order items"),
            "`shop`.`order items`"
        );
    }
}
