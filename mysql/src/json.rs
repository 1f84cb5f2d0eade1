//! MySQL's binary JSON from the row binlog, written back without changing a type.
//!
//! JSON text cannot say everything binary JSON holds: `1.50` read back is a DOUBLE, not the
//! DECIMAL it was; an unsigned integer becomes signed; a DATETIME, DATE or TIME becomes a string.
//! The copy path (`INSERT … SELECT`) keeps them, so the change path must too, or the shadow
//! table would differ from the original in ways a text comparison does not see. A document made
//! of null, booleans, signed integers, doubles, strings, arrays and objects travels as JSON text
//! (the common case); any other one travels as a [`Json`] tree and is rebuilt by a typed SQL
//! expression (`JSON_OBJECT`/`JSON_ARRAY` with a `CAST` per scalar, every value bound). Scalars
//! that neither can rebuild exactly (TIMESTAMP, and opaque values such as BLOB, BIT or GEOMETRY
//! inside a document) stop the migration, naming the column (see [`from_binlog`]).
//!
//! MariaDB stores JSON as text (`LONGTEXT` with a check): none of this applies there.

use mysql_async::Value;
use mysql_async::binlog::jsonb::{self, JsonDom, JsonNumber, JsonScalar};
use mysql_async::consts::ColumnType;
use serde::{Deserialize, Serialize};

/// A JSON document with MySQL's scalar types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer (`INTEGER`).
    Int(i64),
    /// An unsigned integer (`UNSIGNED INTEGER`).
    Uint(u64),
    /// A double (`DOUBLE`).
    Double(f64),
    /// A string.
    String(String),
    /// A DECIMAL, as its text (its scale is its digits after the point).
    Decimal(String),
    /// A DATE, as `YYYY-MM-DD`.
    Date(String),
    /// A TIME, as `[-]hh:mm:ss[.ffffff]`.
    Time(String),
    /// A DATETIME, as `YYYY-MM-DD hh:mm:ss[.ffffff]`.
    DateTime(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, in the document's key order.
    Object(Vec<(String, Json)>),
}

/// The first bytes of a typed document in a row image: no JSON text starts with a NUL byte.
const TYPED_PREFIX: &[u8] = b"\0shoal:typed-json\0";

/// Reads a binlog JSON value; errors name what cannot be written back exactly.
pub fn from_binlog(value: &jsonb::Value<'_>) -> Result<Json, String> {
    use jsonb::Value as V;
    let invalid = |error: std::io::Error| format!("an unreadable binary JSON value: {error}");
    Ok(match value {
        V::Null => Json::Null,
        V::Bool(value) => Json::Bool(*value),
        V::I16(value) => Json::Int(i64::from(*value)),
        V::I32(value) => Json::Int(i64::from(*value)),
        V::I64(value) => Json::Int(*value),
        V::U16(value) => Json::Uint(u64::from(*value)),
        V::U32(value) => Json::Uint(u64::from(*value)),
        V::U64(value) => Json::Uint(*value),
        V::F64(value) => Json::Double(*value),
        V::String(string) => Json::String(
            String::from_utf8(string.str_raw().to_vec())
                .map_err(|_| "a JSON string that is not UTF-8".to_owned())?,
        ),
        V::SmallArray(array) => {
            let mut items = Vec::new();
            for at in 0..array.element_count() {
                let item = array.elem_at(at).map_err(invalid)?;
                items.push(from_binlog(&item.ok_or("a short JSON array")?)?);
            }
            Json::Array(items)
        }
        V::LargeArray(array) => {
            let mut items = Vec::new();
            for at in 0..array.element_count() {
                let item = array.elem_at(at).map_err(invalid)?;
                items.push(from_binlog(&item.ok_or("a short JSON array")?)?);
            }
            Json::Array(items)
        }
        V::SmallObject(object) => {
            let mut members = Vec::new();
            for member in object.iter() {
                let (key, value) = member.map_err(invalid)?;
                members.push((key.value().into_owned(), from_binlog(&value)?));
            }
            Json::Object(members)
        }
        V::LargeObject(object) => {
            let mut members = Vec::new();
            for member in object.iter() {
                let (key, value) = member.map_err(invalid)?;
                members.push((key.value().into_owned(), from_binlog(&value)?));
            }
            Json::Object(members)
        }
        V::Opaque(opaque) => {
            let kind = opaque.value_type();
            let parsed = V::Opaque(opaque.clone()).parse().map_err(invalid)?;
            match (kind, parsed) {
                (
                    ColumnType::MYSQL_TYPE_NEWDECIMAL,
                    JsonDom::Scalar(JsonScalar::Number(JsonNumber::Decimal(decimal))),
                ) => Json::Decimal(decimal.to_string()),
                (ColumnType::MYSQL_TYPE_DATE, JsonDom::Scalar(JsonScalar::DateTime(time))) => {
                    Json::Date(time.to_string())
                }
                // `.6`: without a precision the microseconds are not printed.
                (ColumnType::MYSQL_TYPE_TIME, JsonDom::Scalar(JsonScalar::DateTime(time))) => {
                    Json::Time(format!("{time:.6}"))
                }
                (ColumnType::MYSQL_TYPE_DATETIME, JsonDom::Scalar(JsonScalar::DateTime(time))) => {
                    Json::DateTime(format!("{time:.6}"))
                }
                (kind, _) => {
                    return Err(format!(
                        "a JSON document holds a {kind:?} value, which shoal cannot write back \
                         with its type"
                    ));
                }
            }
        }
    })
}

/// How a JSON column's value from the binlog travels to the shadow table: JSON text when text
/// keeps every type, else the typed tree (see [`typed`]).
pub fn row_value(value: &jsonb::Value<'_>) -> Result<Value, String> {
    let json = from_binlog(value)?;
    if json.is_plain() {
        return Ok(Value::Bytes(json.text().into_bytes()));
    }
    let mut bytes = TYPED_PREFIX.to_vec();
    bytes.extend(serde_json::to_vec(&json).map_err(|error| error.to_string())?);
    Ok(Value::Bytes(bytes))
}

/// The typed document a [`row_value`] carries, if it carries one. A carried document that
/// cannot be read back is an error, never passed on as bytes.
pub fn typed(value: &Value) -> Result<Option<Json>, String> {
    let Value::Bytes(bytes) = value else {
        return Ok(None);
    };
    let Some(rest) = bytes.strip_prefix(TYPED_PREFIX) else {
        return Ok(None);
    };
    // MySQL nests documents up to 100 levels, more than serde_json's default limit of 128
    // allows for this tree's two or three levels per container.
    let mut reader = serde_json::Deserializer::from_slice(rest);
    reader.disable_recursion_limit();
    Json::deserialize(&mut reader)
        .map(Some)
        .map_err(|error| format!("a typed JSON document could not be read back: {error}"))
}

impl Json {
    /// Whether JSON text says this document exactly (no unsigned integer, DECIMAL or temporal).
    pub fn is_plain(&self) -> bool {
        match self {
            Json::Null | Json::Bool(_) | Json::Int(_) | Json::Double(_) | Json::String(_) => true,
            Json::Uint(_)
            | Json::Decimal(_)
            | Json::Date(_)
            | Json::Time(_)
            | Json::DateTime(_) => false,
            Json::Array(items) => items.iter().all(Json::is_plain),
            Json::Object(members) => members.iter().all(|(_, value)| value.is_plain()),
        }
    }

    /// JSON text (exact for a [`plain`](Json::is_plain) document; a double keeps its point, so
    /// that it is read back as a DOUBLE).
    pub fn text(&self) -> String {
        serde_json::Value::from(self).to_string()
    }

    /// A SQL expression of this document as a JSON value, its values bound in order into
    /// `params`.
    pub fn expression(&self, params: &mut Vec<Value>) -> String {
        match self {
            Json::Array(_) | Json::Object(_) => self.part(params),
            // A scalar on its own: JSON_ARRAY keeps its type, `$[0]` takes it out.
            scalar => format!("JSON_EXTRACT(JSON_ARRAY({}), '$[0]')", scalar.part(params)),
        }
    }

    /// Placeholders this document binds.
    pub fn param_count(&self) -> usize {
        match self {
            Json::Null | Json::Bool(_) => 0,
            Json::Array(_) | Json::Object(_) if self.is_plain() => 1,
            Json::Array(items) => items.iter().map(Json::param_count).sum(),
            Json::Object(members) => members
                .iter()
                .map(|(_, value)| 1 + value.param_count())
                .sum(),
            _ => 1,
        }
    }

    fn part(&self, params: &mut Vec<Value>) -> String {
        let mut bind = |value: Value, sql: &str| {
            params.push(value);
            sql.to_owned()
        };
        match self {
            Json::Null => "NULL".to_owned(),
            Json::Bool(true) => "CAST('true' AS JSON)".to_owned(),
            Json::Bool(false) => "CAST('false' AS JSON)".to_owned(),
            Json::Int(value) => bind(Value::Int(*value), "CAST(? AS SIGNED)"),
            Json::Uint(value) => bind(Value::UInt(*value), "CAST(? AS UNSIGNED)"),
            Json::Double(value) => bind(Value::Double(*value), "CAST(? AS DOUBLE)"),
            Json::String(text) => bind(text_value(text), "CONVERT(? USING utf8mb4)"),
            Json::Decimal(text) => {
                let (precision, scale) = decimal_shape(text);
                bind(
                    text_value(text),
                    &format!("CAST(? AS DECIMAL({precision}, {scale}))"),
                )
            }
            Json::Date(text) => bind(text_value(text), "CAST(? AS DATE)"),
            Json::Time(text) => bind(text_value(text), "CAST(? AS TIME(6))"),
            Json::DateTime(text) => bind(text_value(text), "CAST(? AS DATETIME(6))"),
            // A container JSON text says exactly: one placeholder for all of it.
            container @ (Json::Array(_) | Json::Object(_)) if container.is_plain() => {
                bind(text_value(&container.text()), "CAST(? AS JSON)")
            }
            Json::Array(items) => {
                let parts: Vec<String> = items.iter().map(|item| item.part(params)).collect();
                format!("JSON_ARRAY({})", parts.join(", "))
            }
            Json::Object(members) => {
                let mut parts = Vec::with_capacity(members.len());
                for (key, value) in members {
                    params.push(text_value(key));
                    parts.push(format!("CONVERT(? USING utf8mb4), {}", value.part(params)));
                }
                format!("JSON_OBJECT({})", parts.join(", "))
            }
        }
    }
}

fn text_value(text: &str) -> Value {
    Value::Bytes(text.as_bytes().to_vec())
}

/// `DECIMAL(precision, scale)` that holds `text` exactly (MySQL's limits: 65 digits, scale 30).
fn decimal_shape(text: &str) -> (usize, usize) {
    let digits = text.trim_start_matches('-');
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = fraction.len().min(30);
    let precision = (whole.trim_start_matches('0').len() + scale).clamp(scale.max(1), 65);
    (precision, scale)
}

impl From<&Json> for serde_json::Value {
    fn from(json: &Json) -> Self {
        use serde_json::Value as J;
        match json {
            Json::Null => J::Null,
            Json::Bool(value) => J::Bool(*value),
            Json::Int(value) => J::from(*value),
            Json::Uint(value) => J::from(*value),
            Json::Double(value) => serde_json::Number::from_f64(*value).map_or(J::Null, J::Number),
            Json::String(text)
            | Json::Decimal(text)
            | Json::Date(text)
            | Json::Time(text)
            | Json::DateTime(text) => J::String(text.clone()),
            Json::Array(items) => J::Array(items.iter().map(J::from).collect()),
            Json::Object(members) => J::Object(
                members
                    .iter()
                    .map(|(key, value)| (key.clone(), J::from(value)))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_keep_their_point_in_text() {
        assert_eq!(Json::Double(2.0).text(), "2.0");
        assert_eq!(
            Json::Array(vec![Json::Int(2), Json::Double(2.5), Json::Null]).text(),
            "[2,2.5,null]"
        );
    }

    #[test]
    fn typed_scalars_are_cast_and_bound() {
        let document = Json::Object(vec![
            ("d".into(), Json::Decimal("-12.50".into())),
            ("u".into(), Json::Uint(7)),
            (
                "a".into(),
                Json::Array(vec![
                    Json::Bool(true),
                    Json::DateTime("2026-01-02 03:04:05".into()),
                ]),
            ),
        ]);
        assert!(!document.is_plain());
        let mut params = Vec::new();
        let sql = document.expression(&mut params);
        assert_eq!(
            sql,
            "JSON_OBJECT(CONVERT(? USING utf8mb4), CAST(? AS DECIMAL(4, 2)), \
             CONVERT(? USING utf8mb4), CAST(? AS UNSIGNED), CONVERT(? USING utf8mb4), \
             JSON_ARRAY(CAST('true' AS JSON), CAST(? AS DATETIME(6))))"
        );
        assert_eq!(params.len(), document.param_count());
        assert_eq!(params[1], Value::Bytes(b"-12.50".to_vec()));
        assert_eq!(params[3], Value::UInt(7));
        let mut params = Vec::new();
        assert_eq!(
            Json::Uint(3).expression(&mut params),
            "JSON_EXTRACT(JSON_ARRAY(CAST(? AS UNSIGNED)), '$[0]')"
        );
    }

    #[test]
    fn deep_documents_read_back_and_broken_ones_are_errors() {
        let mut document = Json::Decimal("1.5".into());
        for _ in 0..100 {
            document = Json::Object(vec![("k".into(), Json::Array(vec![document]))]);
        }
        let mut bytes = TYPED_PREFIX.to_vec();
        bytes.extend(serde_json::to_vec(&document).unwrap_or_default());
        assert_eq!(typed(&Value::Bytes(bytes.clone())), Ok(Some(document)));
        bytes.truncate(bytes.len() - 1);
        assert!(typed(&Value::Bytes(bytes)).is_err());
    }

    #[test]
    fn plain_parts_of_a_typed_document_are_one_placeholder() {
        let document = Json::Array(vec![
            Json::Uint(1),
            Json::Object(vec![(
                "a".into(),
                Json::Array(vec![Json::Int(1), Json::Null]),
            )]),
        ]);
        let mut params = Vec::new();
        assert_eq!(
            document.expression(&mut params),
            "JSON_ARRAY(CAST(? AS UNSIGNED), CAST(? AS JSON))"
        );
        assert_eq!(params[1], Value::Bytes(br#"{"a":[1,null]}"#.to_vec()));
    }

    #[test]
    fn decimals_get_a_type_that_holds_them() {
        assert_eq!(decimal_shape("1.50"), (3, 2));
        assert_eq!(decimal_shape("-0.001"), (3, 3));
        assert_eq!(decimal_shape("0"), (1, 0));
        assert_eq!(decimal_shape("12345"), (5, 0));
    }

    fn json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(Json::Int),
            any::<u64>().prop_map(Json::Uint),
            any::<f64>()
                .prop_filter("finite", |value| value.is_finite())
                .prop_map(Json::Double),
            ".{0,8}".prop_map(Json::String),
            "-?[0-9]{1,5}\\.[0-9]{1,3}".prop_map(Json::Decimal),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                proptest::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(Json::Object),
            ]
        })
    }

    proptest! {
        #[test]
        fn typed_documents_survive_the_row_image(document in json()) {
            let mut bytes = TYPED_PREFIX.to_vec();
            bytes.extend(serde_json::to_vec(&document).unwrap_or_default());
            prop_assert_eq!(typed(&Value::Bytes(bytes)), Ok(Some(document.clone())));
            let mut params = Vec::new();
            let sql = document.expression(&mut params);
            prop_assert_eq!(params.len(), document.param_count());
            prop_assert_eq!(sql.matches('?').count(), params.len());
        }

        #[test]
        fn plain_text_reads_back_as_the_same_document(document in json()) {
            prop_assume!(document.is_plain());
            let text = document.text();
            prop_assert_eq!(typed(&Value::Bytes(text.clone().into_bytes())), Ok(None));
            let back: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            prop_assert_eq!(back, serde_json::Value::from(&document));
        }
    }
}
