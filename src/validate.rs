//! Small input checks shared by the API's create/update paths.

use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};

use crate::error::{Error, Result};

/// A required, trimmed text field of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::invalid(format!("{field} must not be empty")));
    }
    if v.chars().count() > max {
        return Err(Error::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v.to_string())
}

/// Like [`text`], but line breaks are allowed (answers, notes); `\r\n` becomes `\n`.
pub fn multiline(field: &str, value: &str, max: usize) -> Result<String> {
    let v = value.replace("\r\n", "\n");
    let v = v.trim();
    if v.is_empty() {
        return Err(Error::invalid(format!("{field} must not be empty")));
    }
    if v.chars().count() > max {
        return Err(Error::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v.to_string())
}

/// An optional text field; an empty string clears it.
pub fn opt_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => text(field, v, max).map(Some),
    }
}

/// An identifier passed by the caller (ids are UUIDs; anything longer is wrong).
pub fn id(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid(format!("{field} is not a valid id")));
    }
    Ok(v.to_string())
}

/// The dates a request may name: `YYYY-MM-DD` in 1970–9999. Stored times are epoch
/// milliseconds, and week or day arithmetic on a date at chrono's far ends would panic;
/// dates stored as text keep this one spelling.
pub fn date(field: &str, value: &str) -> Result<chrono::NaiveDate> {
    let bad = || {
        Error::invalid(format!(
            "{field} must be a date from 1970-01-01 to 9999-12-31 written YYYY-MM-DD, such as 2026-11-23"
        ))
    };
    let v = value.trim();
    let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad())?;
    if !(1970..=9999).contains(&chrono::Datelike::year(&d)) || d.format("%Y-%m-%d").to_string() != v
    {
        return Err(bad());
    }
    Ok(d)
}

/// An RFC 3339 time given by the caller, as epoch milliseconds.
pub fn time(field: &str, value: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Error::invalid(format!(
                "{field} must be an RFC 3339 time such as 2026-01-31T08:00:00+08:00"
            ))
        })
}

/// A string field limited to `values`, for the OpenAPI document: built from the same
/// constants the checks use, so the document cannot drift from them.
pub fn one_of(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// A list whose items are limited to `values` (see [`one_of`]).
pub fn list_of(values: &[&str]) -> Array {
    ArrayBuilder::new().items(one_of(values)).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_stay_inside_the_calendar_the_server_can_count() {
        assert_eq!(
            date("week", " 2026-11-23 ").unwrap().to_string(),
            "2026-11-23"
        );
        assert!(date("week", "1970-01-01").is_ok());
        assert!(date("week", "9999-12-31").is_ok());
        for bad in [
            "-262143-01-01",
            "+262142-12-31",
            "1969-12-31",
            "10000-01-01",
            "0000-01-03",
            "2026-2-3",
            "+2026-11-23",
            "2026-02-30",
            "",
        ] {
            let e = date("week", bad).unwrap_err();
            assert_eq!(e.code(), "invalid_input", "{bad}");
            assert!(e.to_string().starts_with("week must be"), "{bad}: {e}");
        }
    }

    #[test]
    fn multiline_keeps_line_breaks_but_not_other_controls() {
        assert_eq!(
            multiline("a", " 第一行\r\n第二行 ", 20).unwrap(),
            "第一行\n第二行"
        );
        assert!(multiline("a", "bell\u{7}", 20).is_err());
        assert!(text("a", "x\ny", 20).is_err());
    }
}
