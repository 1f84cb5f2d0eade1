//! DSNs: `mysql://user:password@host:port/schema?options`, read into mysql_async's options.
//!
//! The options are mysql_async's (`require_ssl`, `verify_ca`, `verify_identity`,
//! `built_in_roots`, pool and socket settings) plus one of shoal's: `ssl_ca=<path>`, a PEM file
//! of the certificate authorities to trust (it implies `require_ssl=true`). TLS modes:
//!
//! | DSN options | connection |
//! |---|---|
//! | none | plain TCP, even if the server offers TLS |
//! | `require_ssl=true` | TLS; the server's certificate must chain to the built-in web roots and name the host |
//! | `ssl_ca=/etc/shoal/ca.pem` | TLS; the certificate must chain to that CA (only: add `built_in_roots=true` to trust the web roots too) and name the host |
//! | `…&verify_identity=false` | refused: mysql_async 0.37.1 ignores it on rustls (its issue #404) |
//! | `require_ssl=true&verify_ca=false` | TLS, nothing verified: encrypted, not authenticated |
//!
//! Errors never contain the DSN (its password): callers show it redacted.

use std::path::PathBuf;

use mysql_async::{Opts, OptsBuilder};

/// The options `dsn` asks for.
pub fn opts(dsn: &str) -> Result<Opts, String> {
    let (base, query) = split_query(dsn);
    let mut kept = Vec::new();
    let mut ca: Option<PathBuf> = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("ssl_ca", path)) => {
                let path = percent_decode(path)?;
                if path.is_empty() {
                    return Err("ssl_ca is empty: give the path of a PEM file".to_owned());
                }
                ca = Some(PathBuf::from(path));
            }
            _ => kept.push(pair),
        }
    }
    if ca.is_some() && kept.contains(&"require_ssl=false") {
        return Err("ssl_ca asks for TLS and require_ssl=false refuses it: drop one".to_owned());
    }
    if ca.is_some() && kept.contains(&"verify_ca=false") {
        return Err(
            "ssl_ca names a CA to verify with and verify_ca=false verifies nothing: drop one"
                .to_owned(),
        );
    }
    // With a CA of its own, the built-in web roots are not trusted unless asked for.
    if ca.is_some() && !kept.iter().any(|pair| pair.starts_with("built_in_roots=")) {
        kept.push("built_in_roots=false");
    }
    // mysql_async applies `verify_ca`/`verify_identity` only when it builds TLS options itself.
    if ca.is_some() && !kept.iter().any(|pair| pair.starts_with("require_ssl=")) {
        kept.push("require_ssl=true");
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    // With reserved characters in the user part the driver's error may quote a piece of the
    // password (a raw `?` starts the query): only the hint is shown then.
    let opts = Opts::from_url(&url).map_err(|error| match unencoded_in_userinfo(dsn) {
        reserved if reserved.is_empty() => error.to_string(),
        reserved => format!(
            "the DSN is not a valid URL: the user name or password holds characters a URL \
             reserves ({}); percent-encode them (@ as %40, : as %3A, / as %2F, ? as %3F, # as \
             %23, % as %25)",
            reserved
                .iter()
                .map(|c| format!("'{c}'"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    })?;
    if opts
        .ssl_opts()
        .is_some_and(|tls| tls.skip_domain_validation() && !tls.accept_invalid_certs())
    {
        return Err(
            "verify_identity=false is not honoured by the MySQL driver shoal uses (mysql_async \
             0.37.1 with rustls: every name mismatch is still refused, its issue #404): use a \
             server certificate that names the DSN's host, or verify_ca=false (encrypted, not \
             authenticated)"
                .to_owned(),
        );
    }
    let Some(ca) = ca else {
        return Ok(opts);
    };
    if !ca.is_file() {
        return Err(format!(
            "ssl_ca={}: no such file (a PEM file of the certificate authorities to trust)",
            ca.display()
        ));
    }
    let ssl = opts
        .ssl_opts()
        .cloned()
        .unwrap_or_default()
        .with_root_certs(vec![ca.into()]);
    Ok(OptsBuilder::from_opts(opts).ssl_opts(Some(ssl)).into())
}

/// Where `dsn`'s user part ends: at the last `@` with a `/` after it (an `@` in an option's
/// value, such as an `ssl_ca` file name, has none), if there is one.
fn user_end(dsn: &str) -> Option<usize> {
    dsn.rfind('@').filter(|&at| dsn[at..].contains('/'))
}

/// `dsn` before and after its query's `?`: the first `?` after the user part, so that a raw `?`
/// in a password is not taken for the query.
fn split_query(dsn: &str) -> (&str, &str) {
    let user_end = user_end(dsn).unwrap_or(0);
    match dsn[user_end..].find('?') {
        Some(at) => (&dsn[..user_end + at], &dsn[user_end + at + 1..]),
        None => (dsn, ""),
    }
}

/// The characters of `dsn`'s user part (between `://` and [`user_end`]) that a URL reserves
/// there unencoded: `/ ? #` end the authority, a second `:` starts a port, a `%` not followed by
/// two hex digits is no escape. Distinct, in order of appearance; never the text itself.
fn unencoded_in_userinfo(dsn: &str) -> Vec<char> {
    let (Some(start), Some(end)) = (dsn.find("://").map(|at| at + 3), user_end(dsn)) else {
        return Vec::new();
    };
    let Some(userinfo) = dsn.get(start..end) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut colons = 0;
    for (at, c) in userinfo.char_indices() {
        let reserved = match c {
            '/' | '?' | '#' => true,
            ':' => {
                colons += 1;
                colons > 1
            }
            '%' => userinfo
                .get(at + 1..at + 3)
                .is_none_or(|hex| !hex.bytes().all(|byte| byte.is_ascii_hexdigit())),
            _ => false,
        };
        if reserved && !found.contains(&c) {
            found.push(c);
        }
    }
    found
}

/// `%XX` escapes decoded (a path in a URL may escape `&`, `=` or `%`).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text
                .get(at + 1..at + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| "ssl_ca holds a bad %-escape".to_owned())?;
            out.push(hex);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "ssl_ca is not UTF-8".to_owned())
}

/// Whether `opts` asks for TLS.
pub fn uses_tls(opts: &Opts) -> bool {
    opts.ssl_opts().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_turns_tls_on_and_other_options_pass_through() {
        let dir = std::env::temp_dir();
        let ca = dir.join(format!("shoal-dsn-test-{}.pem", std::process::id()));
        std::fs::write(&ca, "not parsed here").unwrap_or_default();
        let dsn = format!("mysql://u:p@127.0.0.1:3307/db?ssl_ca={}", ca.display());
        let read = opts(&dsn).unwrap_or_else(|error| panic!("{error}"));
        assert!(uses_tls(&read));
        assert_eq!(read.tcp_port(), 3307);
        assert_eq!(read.db_name(), Some("db"));
        let ignored = opts(&format!("{dsn}&verify_identity=false")).unwrap_err();
        assert!(ignored.contains("#404"), "{ignored}");
        let unverified =
            opts("mysql://u:p@h/db?require_ssl=true&verify_ca=false&verify_identity=false");
        assert!(unverified.is_ok_and(|read| uses_tls(&read)));
        let _ = std::fs::remove_file(&ca);
    }

    #[test]
    fn a_password_with_reserved_characters_is_named_with_the_fix_not_shown() {
        let error = opts("mysql://shoal:p@ss:w/rd%@127.0.0.1:3306/db")
            .err()
            .unwrap_or_default();
        assert!(error.contains("percent-encode"), "{error}");
        assert!(error.contains("':' '/' '%'"), "{error}");
        assert!(
            !error.contains("p@ss") && !error.contains("w/rd"),
            "{error}"
        );
        // A raw `?` once made the driver quote the password's tail as an unknown option.
        let error = opts("mysql://shoal:1234?Xy7q@h/db")
            .err()
            .unwrap_or_default();
        assert!(error.contains("'?'") && !error.contains("Xy7q"), "{error}");
        let with_at = opts("mysql://u:p@h/db?ssl_ca=/nonexistent/a@b.pem")
            .err()
            .unwrap_or_default();
        assert!(with_at.contains("no such file"), "{with_at}");
        let encoded = opts("mysql://shoal:p%40ss%3Aw%2Frd%25@127.0.0.1:3306/db")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(encoded.pass(), Some("p@ss:w/rd%"));
    }

    #[test]
    fn plain_unless_asked_and_bad_options_are_named_without_the_password() {
        let plain = opts("mysql://u:secret@h/db").unwrap_or_else(|error| panic!("{error}"));
        assert!(!uses_tls(&plain));
        let missing = opts("mysql://u:secret@h/db?ssl_ca=/nonexistent/ca.pem").unwrap_err();
        assert!(missing.contains("/nonexistent/ca.pem") && !missing.contains("secret"));
        let unknown = opts("mysql://u:secret@h/db?sslmode=required").unwrap_err();
        assert!(
            unknown.contains("sslmode") && !unknown.contains("secret"),
            "{unknown}"
        );
        assert!(opts("mysql://u:secret@h/db?ssl_ca=%zz").is_err());
        let dir = std::env::temp_dir();
        let ca = dir.join(format!("shoal-dsn-test-b-{}.pem", std::process::id()));
        std::fs::write(&ca, "x").unwrap_or_default();
        let only_ca = opts(&format!("mysql://u:p@h/db?ssl_ca={}", ca.display()));
        assert!(only_ca.is_ok_and(|read| {
            read.ssl_opts()
                .is_some_and(mysql_async::SslOpts::disable_built_in_roots)
        }));
        assert!(
            opts(&format!(
                "mysql://u:p@h/db?ssl_ca={}&verify_ca=false",
                ca.display()
            ))
            .is_err()
        );
        let _ = std::fs::remove_file(&ca);
        assert_eq!(percent_decode("a%26b"), Ok("a&b".to_owned()));
    }
}
