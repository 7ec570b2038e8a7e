//! One shape for every platform callback: verify → inbox → acknowledge.
//!
//! Each platform implements [`Inbound`] for each kind of request it receives: `verify`
//! proves the request came from the platform (signature, timestamp window, decryption,
//! receiver) and says what to store — the body, the platform's dedupe key, the parsed event
//! or why it could not be parsed — and the platform's own answer. [`receive`] then writes
//! the inbox and hands the answer back only after the write committed: nothing is
//! acknowledged that is not stored, a platform's retry of a stored event is acknowledged
//! without being stored or processed again, and a body that is signed but cannot be parsed
//! is kept as `quarantined`. A request that fails verification writes nothing.

use std::collections::HashMap;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::chat::event::{EventKind, InboundEvent, Platform};
use crate::error::{Error, Result};
use crate::inbox::{InboxWriter, NewEntry};
use crate::platform::crypto::CryptoError;
use crate::security::Cipher;

/// Where a platform's callbacks go in the inbox: the platform's name and the organisation
/// and app that configured it.
#[derive(Debug, Clone)]
pub struct Source {
    pub platform: &'static str,
    pub org_id: String,
    pub app: String,
}

impl Source {
    pub fn new(platform: &'static str, org_id: &str) -> Source {
        Source {
            platform,
            org_id: org_id.to_string(),
            app: "default".into(),
        }
    }
}

/// A platform's side of one kind of callback request `R`.
pub trait Inbound<R> {
    /// What the platform is answered with once the callback is stored.
    type Ack;

    fn source(&self) -> &Source;

    /// Proves the request is the platform's and says what to store. An error refuses the
    /// request; nothing is written then.
    fn verify(&self, request: R, now_ms: i64) -> Result<Verified<Self::Ack>>;
}

/// A request whose origin is proven.
#[derive(Debug)]
pub struct Verified<A> {
    /// What goes into the inbox; `None` for a request answered without storing anything
    /// (a platform checking the callback URL).
    pub entry: Option<Entry>,
    /// The platform's answer, given only after `entry` is committed.
    pub ack: A,
}

impl<A> Verified<A> {
    /// Answered at once; nothing stored.
    pub fn answer(ack: A) -> Verified<A> {
        Verified { entry: None, ack }
    }

    /// Stored, then answered.
    pub fn store(entry: Entry, ack: A) -> Verified<A> {
        Verified {
            entry: Some(entry),
            ack,
        }
    }
}

/// A verified callback as the inbox keeps it.
#[derive(Debug)]
pub struct Entry {
    /// The platform's identity of the event: a retry carries the same key.
    pub dedupe_key: String,
    /// The body as stored (decrypted where the platform encrypts).
    pub body: String,
    pub content: Content,
}

#[derive(Debug)]
pub enum Content {
    Event(InboundEvent),
    /// Signed, but unreadable: kept for inspection, never processed.
    Quarantined {
        event_type: &'static str,
        error: String,
    },
}

impl Entry {
    /// A parsed event, or when it could not be parsed, an `unparsable` one in quarantine.
    pub fn parsed(
        dedupe_key: String,
        body: String,
        parsed: std::result::Result<InboundEvent, String>,
    ) -> Entry {
        match parsed {
            Ok(event) => Entry {
                dedupe_key,
                body,
                content: Content::Event(event),
            },
            Err(error) => Entry::quarantined(dedupe_key, "unparsable", body, error),
        }
    }

    pub fn quarantined(
        dedupe_key: String,
        event_type: &'static str,
        body: String,
        error: String,
    ) -> Entry {
        Entry {
            dedupe_key,
            body,
            content: Content::Quarantined { event_type, error },
        }
    }
}

/// The dedupe key of a body that carries no id of its own: its digest.
pub fn digest_key(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// What became of a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered without storing (a URL check).
    Answered,
    /// Written to the inbox.
    New {
        inbox_id: String,
        event_type: String,
    },
    /// The platform retried an event already held: acknowledged, not processed again.
    Duplicate,
    /// Signed but unreadable: kept for inspection.
    Quarantined { inbox_id: String },
}

/// The outcome, and the platform's answer to send.
#[derive(Debug)]
pub struct Received<A> {
    pub outcome: Outcome,
    pub ack: A,
}

/// Verify → inbox → acknowledge, for every platform and kind of callback.
pub async fn receive<R, I: Inbound<R> + ?Sized>(
    inbound: &I,
    inbox: &InboxWriter,
    cipher: &Cipher,
    now_ms: i64,
    request: R,
) -> Result<Received<I::Ack>> {
    let Verified { entry, ack } = inbound.verify(request, now_ms)?;
    let source = inbound.source();
    let platform = source.platform;
    let Some(entry) = entry else {
        tracing::debug!(platform, "url check answered");
        return Ok(Received {
            outcome: Outcome::Answered,
            ack,
        });
    };
    let (event_type, summary, status, error, ordering_key) = match &entry.content {
        Content::Event(event) => {
            // Events no capability registered a handler for are kept, marked as such, and
            // cost no processing job.
            let (status, note) = if inbox.handles(event.kind.name()) {
                ("received", None)
            } else {
                ("ignored", Some("no handler for this event type yet"))
            };
            (
                event.type_name.clone(),
                summary(event),
                status,
                note,
                ordering_key(platform, &event.kind),
            )
        }
        Content::Quarantined { event_type, error } => (
            event_type.to_string(),
            Value::Null,
            "quarantined",
            Some(error.as_str()),
            None,
        ),
    };
    let id = inbox
        .record(
            cipher,
            NewEntry {
                org_id: &source.org_id,
                platform,
                app: &source.app,
                dedupe_key: &entry.dedupe_key,
                event_type: &event_type,
                body: &entry.body,
                summary,
                status,
                error,
                process: status == "received",
                ordering_key,
            },
        )
        .await?;
    let outcome = match id {
        None => {
            count(platform, "duplicate");
            tracing::debug!(platform, "duplicate callback acknowledged");
            Outcome::Duplicate
        }
        Some(inbox_id) if status == "quarantined" => {
            count(platform, "quarantined");
            tracing::warn!(platform, inbox = %inbox_id, "signed callback could not be parsed; quarantined");
            Outcome::Quarantined { inbox_id }
        }
        Some(inbox_id) => {
            count(platform, "new");
            tracing::debug!(platform, %event_type, "callback stored");
            Outcome::New {
                inbox_id,
                event_type,
            }
        }
    };
    Ok(Received { outcome, ack })
}

/// Which callbacks must be processed in arrival order: clicks on one card, changes of one
/// customer, and a platform's directory changes. Messages and meetings need no order.
fn ordering_key(platform: &str, kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::CardAction { task_id, .. } => Some(format!("card:{task_id}")),
        EventKind::ExternalContactAdded {
            external_user_id, ..
        }
        | EventKind::ExternalContactEdited {
            external_user_id, ..
        }
        | EventKind::ExternalContactRemoved {
            external_user_id, ..
        }
        | EventKind::ExternalContactTransferFailed {
            external_user_id, ..
        } => Some(format!("{platform}:external:{external_user_id}")),
        EventKind::UserCreated { .. }
        | EventKind::UserUpdated { .. }
        | EventKind::UserDeleted { .. }
        | EventKind::DepartmentCreated { .. }
        | EventKind::DepartmentUpdated { .. }
        | EventKind::DepartmentDeleted { .. }
        | EventKind::DirectoryChanged => Some(format!("{platform}:directory")),
        _ => None,
    }
}

/// The event as the inbox API shows it: ids and types, no message text, and no one-shot
/// credential for updating a card (WeCom's and Feishu's `response_code`; DingTalk's is
/// the fixed marker that it updates cards by their track id, shown as it is).
fn summary(event: &InboundEvent) -> Value {
    let mut v = serde_json::to_value(&event.kind).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        match &event.kind {
            EventKind::Message { .. } => {
                m.remove("text");
            }
            EventKind::CardAction { .. } if event.platform != Platform::Dingtalk => {
                m.remove("response_code");
            }
            _ => {}
        }
    }
    v
}

/// Counts a callback's outcome (`closeloop_callbacks_total`).
pub fn count(platform: &'static str, outcome: &'static str) {
    metrics::counter!("closeloop_callbacks_total", "platform" => platform, "outcome" => outcome)
        .increment(1);
}

/// A refused callback: counted under `code`, answered with a 4xx that names it.
pub fn refused(platform: &'static str, code: &'static str, message: impl Into<String>) -> Error {
    count(platform, code);
    Error::CallbackRejected {
        code,
        message: message.into(),
    }
}

/// Refuses a signed time further than `max_skew` from the server clock (`now_ms`); zero
/// turns the check off.
pub fn check_skew(
    platform: &'static str,
    max_skew: Duration,
    now_ms: i64,
    signed_ms: i64,
) -> Result<()> {
    if max_skew.is_zero() {
        return Ok(());
    }
    let skew_ms = (now_ms - signed_ms).unsigned_abs();
    if skew_ms > max_skew.as_millis() as u64 {
        count(platform, "stale");
        return Err(Error::CallbackRejected {
            code: "stale_timestamp",
            message: format!(
                "callback timestamp is {} s away from the server clock ({platform}.max_clock_skew is {} s)",
                skew_ms / 1000,
                max_skew.as_secs()
            ),
        });
    }
    Ok(())
}

/// A failure of the query-signed envelope (WeCom, DingTalk) as the answer to give: a
/// malformed request is a 400, anything else a refusal named by what failed.
pub fn envelope_refused(platform: &'static str, e: CryptoError) -> Error {
    let code = match e {
        CryptoError::BadSignature => "bad_signature",
        CryptoError::ReceiverMismatch => "wrong_receiver",
        CryptoError::MalformedEnvelope(_)
        | CryptoError::MissingParam(_)
        | CryptoError::InvalidTimestamp => return Error::MalformedBody(e.to_string()),
        _ => "undecryptable",
    };
    refused(platform, code, format!("callback refused: {e}"))
}

/// Percent-decodes a query string. `+` stays `+`: the platforms' base64 values contain it.
pub fn query_params(raw: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| Error::MalformedBody("query string is not valid UTF-8".into()))
        };
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(platform: Platform, kind: EventKind) -> InboundEvent {
        InboundEvent {
            platform,
            kind,
            created_at: None,
            type_name: "t".into(),
        }
    }

    #[test]
    fn summaries_hide_one_shot_codes_but_not_dingtalks_marker() {
        let click = |platform| {
            event(
                platform,
                EventKind::CardAction {
                    user_id: "u".into(),
                    task_id: "t1".into(),
                    action_key: "k".into(),
                    response_code: Some("code".into()),
                    card_type: None,
                },
            )
        };
        for platform in [Platform::Wecom, Platform::Feishu] {
            let s = summary(&click(platform));
            assert!(s.get("response_code").is_none(), "{platform:?}");
            assert_eq!(s["task_id"], "t1");
        }
        assert_eq!(summary(&click(Platform::Dingtalk))["response_code"], "code");
    }

    #[test]
    fn ordering_keys_are_per_card_customer_and_directory() {
        let card = EventKind::CardAction {
            user_id: "u".into(),
            task_id: "t1".into(),
            action_key: "k".into(),
            response_code: None,
            card_type: None,
        };
        assert_eq!(ordering_key("feishu", &card).as_deref(), Some("card:t1"));
        assert_eq!(
            ordering_key("dingtalk", &EventKind::DirectoryChanged).as_deref(),
            Some("dingtalk:directory")
        );
    }

    #[test]
    fn stale_timestamps_are_refused_unless_the_check_is_off() {
        let minute = Duration::from_secs(60);
        assert!(check_skew("wecom", minute, 1_000_000, 1_000_000 - 60_000).is_ok());
        let err = check_skew("wecom", minute, 1_000_000, 1_000_000 - 61_000).unwrap_err();
        assert!(matches!(
            err,
            Error::CallbackRejected { code: "stale_timestamp", ref message }
                if message.contains("wecom.max_clock_skew is 60 s")
        ));
        assert!(check_skew("wecom", Duration::ZERO, 0, i64::MAX / 2).is_ok());
    }
}
