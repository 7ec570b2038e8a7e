//! The inbox: every accepted platform callback, written before it is acknowledged.
//!
//! A unique dedupe key per (organisation, platform, app) makes a platform's retry of the
//! same event a no-op. Bodies are customer content, so they are stored encrypted; what
//! the API shows is the summary (the parsed event without personal content).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::db::{new_id, Arg, Db, Select};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::security::Cipher;

const BODY_CONTEXT: &str = "inbox.body";

/// Group commit for callbacks: concurrent callbacks share one transaction (one fsync),
/// and each is acknowledged only after that commit.
#[derive(Clone)]
pub struct InboxWriter {
    queue: mpsc::Sender<(Owned, oneshot::Sender<Result<Option<String>>>)>,
    /// The event kinds a capability registered a handler for (see [`Handlers`]), set once
    /// at start-up; callbacks of other kinds are kept as `ignored` and cost no job.
    handled: std::sync::Arc<std::sync::OnceLock<std::collections::HashSet<&'static str>>>,
}

const MAX_BATCH: usize = 256;

/// An entry ready to write: the body already encrypted.
struct Owned {
    org_id: String,
    platform: String,
    app: String,
    dedupe_key: String,
    event_type: String,
    body_enc: String,
    summary: String,
    status: String,
    error: Option<String>,
    process: bool,
    ordering_key: Option<String>,
}

/// The job that turns a stored callback into its effects, enqueued with the entry.
pub const PROCESS: &str = "inbox.process";

impl InboxWriter {
    /// Tells the writer which event kinds are handled (once, when the handlers are built).
    pub fn set_handled(&self, kinds: std::collections::HashSet<&'static str>) {
        let _ = self.handled.set(kinds);
    }

    /// Whether a capability handles events of `kind`; before the handlers are known, every
    /// kind is processed (processing marks the unhandled ones `ignored`).
    pub fn handles(&self, kind: &str) -> bool {
        self.handled.get().is_none_or(|k| k.contains(kind))
    }

    pub fn start(db: Db, clock: crate::clock::SharedClock) -> (InboxWriter, JoinHandle<()>) {
        let (queue, mut rx) =
            mpsc::channel::<(Owned, oneshot::Sender<Result<Option<String>>>)>(4096);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(x) => batch.push(x),
                        Err(_) => break,
                    }
                }
                let now = clock.now_ms();
                let entries: Vec<&Owned> = batch.iter().map(|(e, _)| e).collect();
                match insert_all(&db, now, &entries).await {
                    Ok(ids) => {
                        for ((_, reply), id) in batch.drain(..).zip(ids) {
                            let _ = reply.send(Ok(id));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "inbox batch failed; writing entries one by one");
                        for (entry, reply) in batch.drain(..) {
                            let one = insert_all(&db, now, &[&entry])
                                .await
                                .map(|mut ids| ids.pop().flatten());
                            let _ = reply.send(one.map_err(Into::into));
                        }
                    }
                }
            }
        });
        (
            InboxWriter {
                queue,
                handled: Default::default(),
            },
            task,
        )
    }

    /// Writes the entry durably; `None` when an entry with the same dedupe key exists.
    pub async fn record(&self, cipher: &Cipher, e: NewEntry<'_>) -> Result<Option<String>> {
        let owned = Owned {
            org_id: e.org_id.into(),
            platform: e.platform.into(),
            app: e.app.into(),
            dedupe_key: e.dedupe_key.into(),
            event_type: e.event_type.into(),
            body_enc: cipher.encrypt(BODY_CONTEXT, e.body),
            summary: {
                let mut summary = e.summary;
                strip_free_text(&mut summary);
                summary.to_string()
            },
            status: e.status.into(),
            error: e.error.map(str::to_string),
            process: e.status == "received" && e.process,
            ordering_key: e.ordering_key,
        };
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((owned, reply))
            .await
            .map_err(|_| Error::Unavailable("the inbox is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("inbox writer stopped")))?
    }
}

async fn insert_all(
    db: &Db,
    now_ms: i64,
    entries: &[&Owned],
) -> Result<Vec<Option<String>>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut ids = Vec::with_capacity(entries.len());
    for e in entries {
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO inbox (id, org_id, platform, app, dedupe_key, event_type, received_at, body, status, error, summary) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (org_id, platform, app, dedupe_key) DO NOTHING",
        )
        .bind(&id)
        .bind(&e.org_id)
        .bind(&e.platform)
        .bind(&e.app)
        .bind(&e.dedupe_key)
        .bind(&e.event_type)
        .bind(now_ms)
        .bind(&e.body_enc)
        .bind(&e.status)
        .bind(&e.error)
        .bind(&e.summary)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 && e.process {
            // Processing is committed with the entry, so an acknowledged callback always
            // gets processed.
            let mut job = crate::jobs::NewJob::new(PROCESS, serde_json::json!({"inbox_id": id}))
                .org(e.org_id.clone())
                .dedupe(format!("{PROCESS}:{id}"));
            job.ordering_key = e.ordering_key.clone();
            crate::jobs::enqueue(&mut tx, now_ms, job)
                .await
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        }
        ids.push((inserted == 1).then_some(id));
    }
    tx.commit().await?;
    Ok(ids)
}

pub struct NewEntry<'a> {
    pub org_id: &'a str,
    pub platform: &'a str,
    pub app: &'a str,
    pub dedupe_key: &'a str,
    pub event_type: &'a str,
    pub body: &'a str,
    pub summary: Value,
    /// `received`, or `quarantined` for a signed body that could not be parsed.
    pub status: &'a str,
    pub error: Option<&'a str>,
    /// Whether a processing job goes with the entry (events closeloop acts on).
    pub process: bool,
    /// Callbacks with the same key are processed one at a time, in arrival order (one
    /// person's clicks, say).
    pub ordering_key: Option<String>,
}

/// The stored body of an entry, decrypted (for processing and inspection tools).
pub async fn body(db: &Db, cipher: &Cipher, org_id: &str, id: &str) -> Result<String> {
    let row = sqlx::query("SELECT body FROM inbox WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org_id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(Error::NotFound {
            what: "platform event",
        })?;
    cipher
        .decrypt(BODY_CONTEXT, &row.get::<String, _>("body"))
        .map_err(|e| Error::Internal(anyhow::anyhow!("inbox body unreadable: {e}")))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InboxItem {
    pub id: String,
    pub platform: String,
    pub app: String,
    /// e.g. `change_external_contact.add_external_contact`, `template_card_event`, `text`.
    pub event_type: String,
    pub dedupe_key: String,
    pub received_at: String,
    /// `received`, `processed`, `ignored`, `quarantined` or `failed`.
    pub status: String,
    pub error: Option<String>,
    /// The parsed event without personal content.
    #[schema(value_type = Object)]
    pub summary: Value,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxFilter {
    pub platform: Option<String>,
    /// Exact event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub status: Option<String>,
    /// RFC 3339; received at or after.
    #[param(format = DateTime)]
    pub since: Option<String>,
}

pub async fn list(
    db: &Db,
    org_id: &str,
    f: &InboxFilter,
    page: &PageRequest,
) -> Result<Page<InboxItem>> {
    let mut sel = Select::org_page(org_id, page);
    sel.equal_each(&[
        ("platform", &f.platform),
        ("event_type", &f.event_type),
        ("status", &f.status),
    ]);
    if let Some(s) = &f.since {
        sel.and(
            "received_at >= {}",
            Arg::Int(crate::validate::time("since", s)?),
        );
    }
    let sql = sel.sql(
        "SELECT id, platform, app, event_type, dedupe_key, received_at, status, error, summary FROM inbox",
        "ORDER BY id LIMIT {limit}",
    );
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let items = rows
        .iter()
        .map(|r| InboxItem {
            id: r.get("id"),
            platform: r.get("platform"),
            app: r.get("app"),
            event_type: r.get("event_type"),
            dedupe_key: r.get("dedupe_key"),
            received_at: crate::clock::rfc3339(r.get("received_at")),
            status: r.get("status"),
            error: r.get("error"),
            summary: r
                .get::<Option<String>, _>("summary")
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null),
        })
        .collect();
    Ok(Page::from_rows(items, page, |i| &i.id))
}

/// What processing made of an event: the inbox status (`processed`, `ignored` or `failed`)
/// and a note for people reading the inbox.
pub type Outcome = (&'static str, Option<String>);

/// One stored event being processed, as its handler sees it.
pub struct Incoming {
    pub org_id: String,
    pub platform: crate::chat::event::Platform,
    pub inbox_id: String,
    /// The platform's id for this callback (the inbox dedupe key): the external id of the
    /// tracking point the event becomes, so a retried callback never writes twice.
    pub dedupe_key: String,
    pub event: crate::chat::event::InboundEvent,
    pub now_ms: i64,
    /// The organisation's time zone.
    pub tz: chrono_tz::Tz,
}

/// What a capability does with one kind of event. Registered at start-up under the event
/// kind's name ([`crate::chat::event::EventKind::name`]), so the inbox knows no
/// capability.
pub trait EventHandler: Send + Sync + 'static {
    /// Outside lookups the event needs (a contact's details, a member), done before the
    /// processing transaction; `Null` when none.
    fn fetch<'a>(
        &'a self,
        _org_id: &'a str,
        _platform: crate::chat::event::Platform,
        _event: &'a crate::chat::event::InboundEvent,
    ) -> crate::jobs::BoxFuture<'a, std::result::Result<Value, crate::jobs::JobError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    /// The event's effects (and its tracking point), inside the processing transaction.
    fn apply<'a>(
        &'a self,
        tx: &'a mut crate::db::Tx,
        incoming: &'a Incoming,
        fetched: &'a Value,
    ) -> crate::jobs::BoxFuture<'a, Result<Outcome>>;
}

/// The event handlers, by event kind name.
#[derive(Clone, Default)]
pub struct Handlers(std::collections::HashMap<&'static str, std::sync::Arc<dyn EventHandler>>);

impl Handlers {
    /// The event kinds handled.
    pub fn kinds(&self) -> std::collections::HashSet<&'static str> {
        self.0.keys().copied().collect()
    }

    pub fn register(&mut self, kind: &'static str, handler: std::sync::Arc<dyn EventHandler>) {
        self.0.insert(kind, handler);
    }

    fn get(&self, kind: &str) -> Option<&std::sync::Arc<dyn EventHandler>> {
        self.0.get(kind)
    }
}

/// Reads a stored (decrypted) callback body of one platform back into an event.
pub type Parser = fn(&str) -> std::result::Result<crate::chat::event::InboundEvent, String>;

/// The parsers, by platform; registered by the platform side at start-up.
#[derive(Clone, Default)]
pub struct Parsers(std::collections::HashMap<crate::chat::event::Platform, Parser>);

impl Parsers {
    pub fn register(&mut self, platform: crate::chat::event::Platform, parser: Parser) {
        self.0.insert(platform, parser);
    }

    fn parse(
        &self,
        platform: crate::chat::event::Platform,
        body: &str,
    ) -> std::result::Result<crate::chat::event::InboundEvent, String> {
        match self.0.get(&platform) {
            Some(parse) => parse(body),
            None => Err(format!("no parser for {}", platform.as_str())),
        }
    }
}

/// Turns a stored callback into its effects, inside the job's fenced transaction, so each
/// callback is applied exactly once.
pub struct Process {
    pub db: Db,
    pub cipher: Cipher,
    pub clock: crate::clock::SharedClock,
    pub parsers: Parsers,
    pub handlers: Handlers,
}

impl Process {
    /// The stored event, parsed again: (organisation, platform, event).
    async fn stored_event(
        &self,
        inbox_id: &str,
    ) -> Result<
        Option<(
            String,
            crate::chat::event::Platform,
            crate::chat::event::InboundEvent,
        )>,
    > {
        let Some(row) = sqlx::query("SELECT org_id, platform, body FROM inbox WHERE id = $1")
            .bind(inbox_id)
            .fetch_optional(&self.db.pool)
            .await?
        else {
            return Ok(None);
        };
        let Some(platform) = crate::chat::event::Platform::parse(&row.get::<String, _>("platform"))
        else {
            return Ok(None);
        };
        let body = self
            .cipher
            .decrypt(BODY_CONTEXT, &row.get::<String, _>("body"))
            .map_err(|e| Error::Internal(anyhow::anyhow!("inbox body unreadable: {e}")))?;
        Ok(self
            .parsers
            .parse(platform, &body)
            .ok()
            .map(|ev| (row.get("org_id"), platform, ev)))
    }

    /// The outside lookups an event needs, done before the processing transaction.
    async fn fetch(&self, inbox_id: &str) -> std::result::Result<Value, crate::jobs::JobError> {
        let Some((org_id, platform, event)) = self.stored_event(inbox_id).await? else {
            return Ok(Value::Null);
        };
        match self.handlers.get(event.kind.name()) {
            Some(handler) => handler.fetch(&org_id, platform, &event).await,
            None => Ok(Value::Null),
        }
    }

    async fn process(&self, tx: &mut crate::db::Tx, inbox_id: &str, fetched: &Value) -> Result<()> {
        use crate::chat::event::Platform;

        let Some(row) = sqlx::query(
            "SELECT i.org_id, i.platform, i.body, i.status, i.dedupe_key, o.timezone \
             FROM inbox i JOIN organisations o ON o.id = i.org_id WHERE i.id = $1",
        )
        .bind(inbox_id)
        .fetch_optional(&mut **tx)
        .await?
        else {
            return Ok(());
        };
        if row.get::<String, _>("status") != "received" {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let platform = Platform::parse(&row.get::<String, _>("platform"));
        let body = self
            .cipher
            .decrypt(BODY_CONTEXT, &row.get::<String, _>("body"))
            .map_err(|e| Error::Internal(anyhow::anyhow!("inbox body unreadable: {e}")))?;
        let event = platform
            .ok_or_else(|| "unknown platform".to_string())
            .and_then(|p| self.parsers.parse(p, &body));
        let (status, note): Outcome = match (event, platform) {
            (Err(e), _) => ("failed", Some(e)),
            (Ok(_), None) => ("failed", Some("unknown platform".into())),
            (Ok(event), Some(platform)) => match self.handlers.get(event.kind.name()) {
                None => ("ignored", Some("no handler for this event type yet".into())),
                Some(handler) => {
                    let incoming = Incoming {
                        org_id: row.get("org_id"),
                        platform,
                        inbox_id: inbox_id.to_string(),
                        dedupe_key: row.get("dedupe_key"),
                        event,
                        now_ms: now,
                        tz: row
                            .get::<String, _>("timezone")
                            .parse()
                            .unwrap_or(chrono_tz::Asia::Shanghai),
                    };
                    handler.apply(tx, &incoming, fetched).await?
                }
            },
        };
        sqlx::query("UPDATE inbox SET status = $1, processed_at = $2, error = $3 WHERE id = $4")
            .bind(status)
            .bind(now)
            .bind(note)
            .bind(inbox_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// The fetched contact or member (names, numbers) serves the processing only: the job row
/// keeps which lookups were made.
pub fn stored_output(output: &Value) -> Value {
    match output.as_object() {
        Some(fetched) => serde_json::json!({"fetched": fetched.keys().collect::<Vec<_>>()}),
        None => Value::Null,
    }
}

impl crate::jobs::Handler for Process {
    fn perform<'a>(
        &'a self,
        job: &'a crate::jobs::ClaimedJob,
    ) -> crate::jobs::BoxFuture<'a, Result<Value, crate::jobs::JobError>> {
        Box::pin(self.fetch(job.payload["inbox_id"].as_str().unwrap_or_default()))
    }

    fn stored_output(&self, output: &Value) -> Value {
        stored_output(output)
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut crate::db::Tx,
        job: &'a crate::jobs::ClaimedJob,
        output: &'a Value,
    ) -> crate::jobs::BoxFuture<'a, Result<(), crate::jobs::JobError>> {
        Box::pin(async move {
            let id = job.payload["inbox_id"].as_str().unwrap_or_default();
            self.process(tx, id, output).await.map_err(Into::into)
        })
    }
}

/// Drops free text from an inbox summary (a message's `text`); `true` when something was
/// dropped. Summaries are shown without decryption, so they keep ids and types only.
pub fn strip_free_text(summary: &mut serde_json::Value) -> bool {
    summary
        .as_object_mut()
        .is_some_and(|o| o.remove("text").is_some())
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    #[test]
    fn message_text_leaves_the_summary() {
        let mut s =
            serde_json::json!({"type": "message", "user_id": "liming", "text": "13800138000"});
        assert!(strip_free_text(&mut s));
        assert_eq!(
            s,
            serde_json::json!({"type": "message", "user_id": "liming"})
        );
        let mut other = serde_json::json!({"type": "enter_app", "user_id": "liming"});
        assert!(!strip_free_text(&mut other));
    }
}
