//! Small input checks shared by the API's create/update paths.

use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};

use crate::error::{Error, Result};
use crate::platform::event::Platform;

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

/// The chat platforms, as the API spells them.
pub fn platform() -> Object {
    one_of(&Platform::ALL.map(Platform::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

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
