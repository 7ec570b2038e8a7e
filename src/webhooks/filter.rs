//! What a subscription receives (its source and action filters) and in which shape
//! (its payload version).
//!
//! Filters are checked once when a subscription is created and matched in memory for each
//! tracking point, so the ledger's group-commit writer pays one lookup per batch and
//! organisation and nothing per point beyond a few string comparisons.

use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};

use crate::error::{Error, Result};

use super::POINT_CREATED;

/// The tracking-point sources a subscription may name, as points spell them.
pub const SOURCES: [&str; 5] = ["sidebar", "api", "card", "platform_event", "system"];
/// At most this many action names or prefixes per subscription.
pub const MAX_ACTIONS: usize = 50;
/// An action filter is at most this many characters, like an action name.
pub const MAX_ACTION_CHARS: usize = 64;
/// The payload versions a subscription may choose; `1` when the request names none.
pub const VERSIONS: [i64; 2] = [1, 2];
pub const DEFAULT_VERSION: i64 = 1;

/// The point's fields in a version-1 body: exactly the keys a delivery carried before
/// subscriptions had versions. Fields the point gains later appear only in version 2.
pub const V1_POINT_KEYS: [&str; 13] = [
    "action",
    "actor",
    "client_ip",
    "customer",
    "deal",
    "id",
    "occurred_at",
    "occurred_at_local",
    "payload",
    "platform",
    "source",
    "user_agent",
    "verification",
];

/// Which points a subscription wants; `None` is every source or every action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub sources: Option<Vec<String>>,
    pub actions: Option<Vec<String>>,
}

impl Filter {
    /// Checks what a request asked for: known sources, well-formed action patterns.
    /// Duplicates are dropped, the order kept.
    pub fn parse(sources: Option<Vec<String>>, actions: Option<Vec<String>>) -> Result<Filter> {
        let sources = match sources {
            None => None,
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::invalid(
                        "sources must name at least one source; omit it to receive every source",
                    ));
                }
                for s in &list {
                    if !SOURCES.contains(&s.as_str()) {
                        return Err(Error::invalid(format!(
                            "unknown source `{}`; known: {}",
                            s.escape_debug(),
                            SOURCES.join(", ")
                        )));
                    }
                }
                Some(dedupe(list))
            }
        };
        let actions = match actions {
            None => None,
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::invalid(
                        "actions must name at least one action; omit it to receive every action",
                    ));
                }
                if list.len() > MAX_ACTIONS {
                    return Err(Error::invalid(format!(
                        "actions may list at most {MAX_ACTIONS} entries"
                    )));
                }
                for a in &list {
                    check_action_pattern(a)?;
                }
                Some(dedupe(list))
            }
        };
        Ok(Filter { sources, actions })
    }

    /// Whether a point of `source` and `action` goes to this subscription.
    pub fn wants(&self, source: &str, action: &str) -> bool {
        let source_ok = self
            .sources
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == source));
        source_ok
            && self
                .actions
                .as_ref()
                .is_none_or(|list| list.iter().any(|p| action_matches(p, action)))
    }

    /// The stored form of each list: a JSON array, or NULL for "all".
    pub fn stored(&self) -> (Option<String>, Option<String>) {
        let store =
            |l: &Option<Vec<String>>| l.as_ref().map(|l| Value::from(l.clone()).to_string());
        (store(&self.sources), store(&self.actions))
    }

    /// Reads the stored columns back.
    pub fn from_stored(sources: Option<&str>, actions: Option<&str>) -> Result<Filter> {
        let read = |column: &str, v: Option<&str>| -> Result<Option<Vec<String>>> {
            v.map(|text| {
                serde_json::from_str::<Vec<String>>(text).map_err(|e| {
                    Error::Internal(anyhow::anyhow!("webhooks.{column} is not a JSON list: {e}"))
                })
            })
            .transpose()
        };
        Ok(Filter {
            sources: read("sources", sources)?,
            actions: read("actions", actions)?,
        })
    }
}

fn dedupe(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for v in list {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// An action name, or a prefix followed by one `*` (`rule.*`), spelled as actions are:
/// no spaces, no control characters.
fn check_action_pattern(p: &str) -> Result<()> {
    let shown = p.escape_debug();
    if p.is_empty() {
        return Err(Error::invalid("actions must not contain an empty entry"));
    }
    if p.chars().count() > MAX_ACTION_CHARS {
        return Err(Error::invalid(format!(
            "action filter `{shown}` is longer than {MAX_ACTION_CHARS} characters"
        )));
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(format!(
            "action filter `{shown}` must not contain spaces or control characters"
        )));
    }
    let stem = p.strip_suffix('*').unwrap_or(p);
    if stem.is_empty() || stem.contains('*') {
        return Err(Error::invalid(format!(
            "action filter `{shown}`: `*` may only end a filter, after at least one character (such as `rule.*`); omit actions to receive every action"
        )));
    }
    Ok(())
}

/// `rule.*` matches every action starting with `rule.`; anything else matches itself.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

pub fn check_version(v: Option<i64>) -> Result<i64> {
    match v {
        None => Ok(DEFAULT_VERSION),
        Some(v) if VERSIONS.contains(&v) => Ok(v),
        Some(v) => Err(Error::invalid(format!(
            "payload_version must be 1 or 2, not {v}"
        ))),
    }
}

/// The body of a version-1 delivery: `{"type", "data"}` with the point cut to
/// [`V1_POINT_KEYS`]. `None` for a point version 1 cannot carry — one without an actor or a
/// customer, which no point had when version 1 was the only shape.
pub fn v1_body(point: &Value) -> Option<Value> {
    if !point["actor"].is_string() || !point["customer"].is_string() {
        return None;
    }
    let mut data = Map::new();
    for key in V1_POINT_KEYS {
        data.insert(key.into(), point.get(key).cloned().unwrap_or(Value::Null));
    }
    Some(json!({"type": POINT_CREATED, "data": data}))
}

/// The body of a version-2 delivery: an envelope around the whole point.
pub fn v2_body(webhook_id: &str, point: &Value) -> Value {
    json!({
        "version": 2,
        "event": POINT_CREATED,
        "id": point["id"],
        "webhook_id": webhook_id,
        "occurred_at": point["occurred_at"],
        "point": point,
    })
}

// ----------------------------------------------------------------------------------------
// OpenAPI schemas, built from the constants above.

fn sources_array() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(crate::validate::one_of(&SOURCES))
        .min_items(Some(1))
        .max_items(Some(SOURCES.len()))
        .unique_items(true)
}

fn action_pattern() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_ACTION_CHARS))
        .pattern(Some(r"^[^\s*]+\*?$"))
        .build()
}

fn actions_array() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(action_pattern())
        .min_items(Some(1))
        .max_items(Some(MAX_ACTIONS))
}

fn nullable_array() -> SchemaType {
    SchemaType::from_iter([Type::Array, Type::Null])
}

pub fn sources_schema() -> Array {
    sources_array()
        .description(Some("Only points of these sources; omitted: every source."))
        .build()
}

pub fn actions_schema() -> Array {
    actions_array()
        .description(Some(
            "Only points whose action is one of these names, or starts with the part before a final `*` (`rule.*`); omitted: every action.",
        ))
        .build()
}

pub fn sources_shown_schema() -> Array {
    sources_array()
        .schema_type(nullable_array())
        .description(Some("The source filter; null: every source."))
        .build()
}

pub fn actions_shown_schema() -> Array {
    actions_array()
        .schema_type(nullable_array())
        .description(Some("The action filter; null: every action."))
        .build()
}

pub fn version_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .enum_values(Some(VERSIONS))
        .description(Some(
            "Body shape: 1 (`{type, data}`, the default) or 2 (an envelope around the whole point).",
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::Source;

    fn list(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_sources_are_the_ledgers_own() {
        for s in SOURCES {
            let parsed: Source = serde_json::from_value(json!(s)).unwrap();
            assert_eq!(parsed.as_str(), s);
        }
    }

    #[test]
    fn filters_match_sources_and_actions_in_memory() {
        let all = Filter::default();
        assert!(all.wants("system", "rule.frozen"));
        let f = Filter::parse(list(&["sidebar", "api"]), list(&["rule.*", "已电话沟通"])).unwrap();
        assert!(f.wants("sidebar", "已电话沟通"));
        assert!(f.wants("api", "rule.repeat_limit"));
        assert!(!f.wants("system", "rule.repeat_limit"), "source filtered");
        assert!(!f.wants("sidebar", "已电话沟通过"), "exact names are exact");
        assert!(!f.wants("sidebar", "rule"), "the prefix includes the dot");
        let round = Filter::from_stored(f.stored().0.as_deref(), f.stored().1.as_deref()).unwrap();
        assert_eq!(round, f);
        assert_eq!(Filter::default().stored(), (None, None));
    }

    #[test]
    fn bad_filters_are_refused_with_their_reason() {
        for (sources, actions, says) in [
            (list(&["email"]), None, "unknown source"),
            (list(&[]), None, "at least one source"),
            (None, list(&[]), "at least one action"),
            (None, list(&["*"]), "`*` may only end"),
            (None, list(&["a*b"]), "`*` may only end"),
            (None, list(&["rule.**"]), "`*` may only end"),
            (None, list(&["a b"]), "spaces"),
            (None, list(&["a\u{7}"]), "control"),
            (None, list(&[""]), "empty entry"),
            (None, Some(vec!["长".repeat(65)]), "longer than 64"),
            (None, Some(vec!["x".into(); 51]), "at most 50"),
        ] {
            let err = Filter::parse(sources, actions).unwrap_err().to_string();
            assert!(err.contains(says), "{err} should say {says}");
        }
        assert!(Filter::parse(None, Some(vec!["长".repeat(64)])).is_ok());
        let deduped = Filter::parse(list(&["api", "api"]), list(&["x", "x"])).unwrap();
        assert_eq!(deduped.sources, list(&["api"]));
        assert_eq!(deduped.actions, list(&["x"]));
        assert_eq!(check_version(None).unwrap(), 1);
        assert_eq!(check_version(Some(2)).unwrap(), 2);
        assert!(check_version(Some(3)).is_err());
        assert!(check_version(Some(0)).is_err());
    }

    #[test]
    fn version_one_keeps_its_keys_and_skips_what_it_cannot_carry() {
        let point = json!({
            "id": "p1", "actor": "u1", "customer": "c1", "deal": null, "action": "a",
            "occurred_at": "t", "occurred_at_local": "l", "source": "api", "platform": null,
            "client_ip": null, "user_agent": null, "payload": {}, "verification": "not_applicable",
            "actor_kind": "user", "external_id": null
        });
        let body = v1_body(&point).unwrap();
        let keys: Vec<&str> = body["data"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys, V1_POINT_KEYS,
            "new point fields stay out of version 1"
        );
        assert_eq!(body["type"], POINT_CREATED);
        let mut no_customer = point.clone();
        no_customer["customer"] = Value::Null;
        assert!(v1_body(&no_customer).is_none());
        let mut no_actor = point.clone();
        no_actor["actor"] = Value::Null;
        assert!(v1_body(&no_actor).is_none());
        let v2 = v2_body("w1", &no_customer);
        assert_eq!(
            v2["point"], no_customer,
            "version 2 carries the whole point"
        );
        assert_eq!(v2["point"]["actor_kind"], "user");
        assert_eq!(
            (v2["version"].as_i64(), v2["id"].as_str()),
            (Some(2), Some("p1"))
        );
    }
}
