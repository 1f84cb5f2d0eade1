//! SQL text helpers. Identifiers are always quoted; values are always bound as parameters, never
//! formatted into SQL.

/// Quotes an identifier for MySQL/MariaDB: wrapped in backticks, inner backticks doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Refuses a name the servers refuse as a schema, table or column name, saying why: empty,
/// longer than 64 characters, a NUL, a character outside the Basic Multilingual Plane
/// (identifiers are utf8mb3), or a trailing space. `what` names it in the message
/// ("table name", "schema name").
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "is empty".to_owned()
    } else if name.chars().count() > 64 {
        format!(
            "is {} characters long; the servers allow 64",
            name.chars().count()
        )
    } else if name.contains('\0') {
        "holds a NUL character, which no server name may".to_owned()
    } else if let Some(wide) = name.chars().find(|c| u32::from(*c) > 0xFFFF) {
        format!(
            "holds U+{:X}, outside the Basic Multilingual Plane: server names are utf8mb3 \
             (no emoji or other 4-byte characters)",
            u32::from(wide)
        )
    } else if name.ends_with(' ') {
        "ends with a space, which the servers refuse in names".to_owned()
    } else {
        return Ok(());
    };
    Err(format!(
        "{what} {} {problem}; use a name the server accepts",
        quote_identifier(name)
    ))
}

/// Quotes `schema`.`table`.
pub fn quote_qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_identifier(schema), quote_identifier(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_servers_identifier_rules() {
        for good in [
            "t",
            "my table",
            "名前",
            "a`b",
            "x.y",
            "select",
            &"n".repeat(64),
            " lead",
        ] {
            assert_eq!(check_name("table name", good), Ok(()), "{good:?}");
        }
        for (bad, says) in [
            ("", "is empty"),
            (&"n".repeat(65) as &str, "65 characters long"),
            ("a\0b", "NUL"),
            ("cake🍰", "U+1F370"),
            ("trailing ", "ends with a space"),
        ] {
            let error = check_name("table name", bad).unwrap_err();
            assert!(
                error.contains(says) && error.starts_with("table name `"),
                "{error}"
            );
        }
    }

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
