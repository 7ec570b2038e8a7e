//! Outbound webhooks: an integration (a CRM, a data warehouse) subscribes to ledger
//! events and receives each as a signed POST.
//!
//! A delivery is a durable job enqueued in the same transaction as the tracking point,
//! so no committed point is ever missed. Sending is at least once (a crash between the
//! send and its record resends; receivers dedupe on `X-Closeloop-Delivery`); the
//! delivery record in our database is written exactly once, in the job's fenced
//! completing transaction.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Row;

pub mod destination;
pub mod filter;

use crate::access::Actor;
use crate::config::WebhooksConfig;
use crate::db::{new_id, Db, Tx};
use crate::error::{Error, Result};
use crate::jobs::{self, BoxFuture, ClaimedJob, Handler, JobError, NewJob};
use crate::security::Cipher;
use crate::tracking::TrackingPoint;
use destination::{AllowPrivate, Destinations};
use filter::Filter;

pub const KIND: &str = "webhook.deliver";
pub const POINT_CREATED: &str = "tracking_point.created";
pub const EVENTS: [&str; 1] = [POINT_CREATED];
const SECRET_CONTEXT: &str = "webhooks.secret";

fn events_schema() -> utoipa::openapi::schema::Array {
    let mut list = crate::validate::list_of(&EVENTS);
    list.min_items = Some(1);
    list
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where to POST; http:// or https://.
    #[schema(min_length = 1)]
    pub url: String,
    /// Event types; `tracking_point.created` is the one so far.
    #[schema(schema_with = events_schema)]
    pub events: Vec<String>,
    /// Only points of these sources; omitted: every source.
    #[serde(default)]
    #[schema(schema_with = filter::sources_schema)]
    pub sources: Option<Vec<String>>,
    /// Only points whose action is one of these names, or starts with the part before a
    /// final `*` (`rule.*`); omitted: every action.
    #[serde(default)]
    #[schema(schema_with = filter::actions_schema)]
    pub actions: Option<Vec<String>>,
    /// The body's shape: 1 (the default) or 2.
    #[serde(default)]
    #[schema(schema_with = filter::version_schema)]
    pub payload_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// The source filter; null: every source.
    #[schema(schema_with = filter::sources_shown_schema)]
    pub sources: Option<Vec<String>>,
    /// The action filter; null: every action.
    #[schema(schema_with = filter::actions_shown_schema)]
    pub actions: Option<Vec<String>>,
    #[schema(schema_with = filter::version_schema)]
    pub payload_version: i64,
    pub active: bool,
    pub created_at: String,
    /// Returned once, on creation: the HMAC-SHA256 key for `X-Closeloop-Signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Subscribes `new.url`; `[webhooks] allow_private` names the internal receivers allowed on
/// special addresses.
pub async fn create(
    db: &Db,
    cipher: &Cipher,
    cfg: &WebhooksConfig,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    new: NewWebhook,
) -> Result<Webhook> {
    let url = new.url.trim().to_string();
    let parsed = reqwest::Url::parse(&url).map_err(|_| Error::invalid("url is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || url.len() > 2000
    {
        return Err(Error::invalid("url must be an http:// or https:// address"));
    }
    let allow = AllowPrivate::parse(&cfg.allow_private)
        .map_err(|m| Error::Internal(anyhow::anyhow!("webhooks.allow_private: {m}")))?;
    destination::check_registration(&parsed, &allow)?;
    if new.events.is_empty() {
        return Err(Error::invalid("events must name at least one event type"));
    }
    for e in &new.events {
        if !EVENTS.contains(&e.as_str()) {
            return Err(Error::invalid(format!(
                "unknown event `{e}`; known: {}",
                EVENTS.join(", ")
            )));
        }
    }
    let chosen = Filter::parse(new.sources, new.actions)?;
    let payload_version = filter::check_version(new.payload_version)?;
    let (sources, actions) = chosen.stored();
    let mut raw = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret = format!("whsec_{}", hex::encode(raw));
    let id = new_id();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO webhooks (id, org_id, url, secret_enc, events, sources, actions, payload_version, active, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&url)
    .bind(cipher.encrypt(SECRET_CONTEXT, &secret))
    .bind(new.events.join(","))
    .bind(sources)
    .bind(actions)
    .bind(payload_version)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "webhook.create",
            ("webhook", &id),
            json!({
                "url": url,
                "events": new.events,
                "sources": chosen.sources,
                "actions": chosen.actions,
                "payload_version": payload_version,
            }),
        )
        .await?;
    tx.commit().await?;
    Ok(Webhook {
        id,
        url,
        events: new.events,
        sources: chosen.sources,
        actions: chosen.actions,
        payload_version,
        active: true,
        created_at: crate::clock::rfc3339(now_ms),
        secret: Some(secret),
    })
}

pub async fn list(db: &Db, org_id: &str) -> Result<Vec<Webhook>> {
    let rows = sqlx::query(
        "SELECT id, url, events, sources, actions, payload_version, CAST(active AS BIGINT) AS active, \
         created_at FROM webhooks WHERE org_id = $1 ORDER BY id",
    )
    .bind(org_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let chosen = stored_filter(r)?;
            Ok(Webhook {
                id: r.get("id"),
                url: r.get("url"),
                events: r
                    .get::<String, _>("events")
                    .split(',')
                    .map(str::to_string)
                    .collect(),
                sources: chosen.sources,
                actions: chosen.actions,
                payload_version: r.get("payload_version"),
                active: r.get::<i64, _>("active") != 0,
                created_at: crate::clock::rfc3339(r.get("created_at")),
                secret: None,
            })
        })
        .collect()
}

fn stored_filter(r: &sqlx::any::AnyRow) -> Result<Filter> {
    Filter::from_stored(
        r.get::<Option<String>, _>("sources").as_deref(),
        r.get::<Option<String>, _>("actions").as_deref(),
    )
}

/// Stops deliveries; queued ones give up when they run.
pub async fn deactivate(db: &Db, now_ms: i64, org_id: &str, actor: &Actor, id: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    let n = sqlx::query("UPDATE webhooks SET active = 0 WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::NotFound { what: "webhook" });
    }
    let row =
        sqlx::query("SELECT url, sources, actions, payload_version FROM webhooks WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let chosen = stored_filter(&row)?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "webhook.deactivate",
            ("webhook", id),
            json!({
                "url": row.get::<String, _>("url"),
                "sources": chosen.sources,
                "actions": chosen.actions,
                "payload_version": row.get::<i64, _>("payload_version"),
            }),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// One active subscription as the ledger writer needs it.
struct Subscription {
    id: String,
    filter: Filter,
    version: i64,
}

/// Active subscribers of one organisation, looked up once per ledger batch.
#[derive(Default)]
pub struct Subscribers {
    by_org: HashMap<String, Vec<Subscription>>,
}

impl Subscribers {
    /// Enqueues a delivery of `point` to every subscriber that wants it (its source and
    /// action filters), inside the point's transaction.
    pub async fn enqueue_point(
        &mut self,
        tx: &mut Tx,
        now_ms: i64,
        org_id: &str,
        point: &TrackingPoint,
    ) -> Result<()> {
        if !self.by_org.contains_key(org_id) {
            let rows = sqlx::query(
                "SELECT id, events, sources, actions, payload_version FROM webhooks \
                 WHERE org_id = $1 AND active = 1",
            )
            .bind(org_id)
            .fetch_all(&mut **tx)
            .await?;
            let mut subs = Vec::with_capacity(rows.len());
            for r in &rows {
                if !r
                    .get::<String, _>("events")
                    .split(',')
                    .any(|e| e == POINT_CREATED)
                {
                    continue;
                }
                subs.push(Subscription {
                    id: r.get("id"),
                    filter: stored_filter(r)?,
                    version: r.get("payload_version"),
                });
            }
            self.by_org.insert(org_id.to_string(), subs);
        }
        // Serialized once per point, and only when someone wants it.
        let mut whole: Option<Value> = None;
        for sub in &self.by_org[org_id] {
            if !sub.filter.wants(&point.source, &point.action) {
                continue;
            }
            let whole = match &whole {
                Some(v) => v,
                None => whole.insert(
                    serde_json::to_value(point)
                        .map_err(|e| Error::Internal(anyhow::anyhow!("point as JSON: {e}")))?,
                ),
            };
            let body = match sub.version {
                1 => match filter::v1_body(whole) {
                    Some(b) => b,
                    None => continue,
                },
                _ => filter::v2_body(&sub.id, whole),
            };
            let payload = json!({
                "webhook_id": sub.id,
                "event_id": point.id,
                "payload_version": sub.version,
                "event": body,
            });
            jobs::enqueue(
                tx,
                now_ms,
                NewJob::new(KIND, payload)
                    .org(org_id)
                    .dedupe(format!("webhook:{}:{}", sub.id, point.id))
                    .max_attempts(12),
            )
            .await?;
        }
        Ok(())
    }
}

/// Sends one delivery.
pub struct Deliver {
    pub db: Db,
    pub clock: crate::clock::SharedClock,
    pub cipher: Cipher,
    pub destinations: Destinations,
}

impl Deliver {
    async fn send(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let hook = job.payload["webhook_id"].as_str().unwrap_or_default();
        let row = sqlx::query(
            "SELECT url, secret_enc, CAST(active AS BIGINT) AS active FROM webhooks WHERE id = $1",
        )
        .bind(hook)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| JobError::GiveUp("webhook no longer exists".into()))?;
        if row.get::<i64, _>("active") == 0 {
            return Err(JobError::GiveUp("webhook was deactivated".into()));
        }
        let secret = self
            .cipher
            .decrypt(SECRET_CONTEXT, &row.get::<String, _>("secret_enc"))
            .map_err(|e| JobError::GiveUp(format!("webhook secret unreadable: {e}")))?;
        let url: String = row.get("url");
        let url = reqwest::Url::parse(&url)
            .map_err(|_| JobError::GiveUp("webhook url is not a URL".into()))?;
        let body = job.payload["event"].to_string();
        // Jobs queued before subscriptions had versions carry none: they are version 1.
        let version = job.payload["payload_version"].as_i64().unwrap_or(1);
        let timestamp = (self.clock.now_ms() / 1000).to_string();
        post_signed(
            &self.destinations,
            url,
            Signed {
                secret: &secret,
                timestamp: &timestamp,
                event: POINT_CREATED,
                delivery: &job.id,
                payload_version: Some(version),
            },
            body,
        )
        .await
    }
}

/// The headers of a signed POST.
pub struct Signed<'a> {
    pub secret: &'a str,
    pub timestamp: &'a str,
    /// `X-Closeloop-Event`.
    pub event: &'a str,
    /// `X-Closeloop-Delivery`: the job's id, the same on every retry.
    pub delivery: &'a str,
    pub payload_version: Option<i64>,
}

/// POSTs `body` to `url`, signed (`X-Closeloop-Signature: sha256=`[`sign`]), through the
/// destination rules; the answer as a job's outcome: 2xx done, 429 later, 5xx and 408 and
/// connection failures retried, anything else given up.
pub async fn post_signed(
    destinations: &Destinations,
    url: reqwest::Url,
    h: Signed<'_>,
    body: String,
) -> Result<Value, JobError> {
    let client = destinations
        .client_for(&url)
        .map_err(|refused| JobError::GiveUp(refused.to_string()))?;
    let signature = sign(h.secret, h.timestamp, &body);
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-closeloop-event", h.event)
        .header("x-closeloop-delivery", h.delivery)
        .header("x-closeloop-timestamp", h.timestamp)
        .header("x-closeloop-signature", format!("sha256={signature}"));
    if let Some(v) = h.payload_version {
        request = request.header("x-closeloop-payload-version", v.to_string());
    }
    let response = request.body(body).send().await.map_err(|e| {
        if destination::was_refused(&e) {
            JobError::GiveUp(destination::REFUSED.into())
        } else {
            // Timeouts, resets and refusals alike: which one would tell a prober what
            // listens where.
            JobError::Retry("connection failed".into())
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(json!({"status": status.as_u16()}));
    }
    if status.as_u16() == 429 {
        let hint = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(JobError::RateLimited {
            retry_after: hint,
            message: "webhook answered 429".into(),
        });
    }
    if status.is_server_error() || status.as_u16() == 408 {
        return Err(JobError::Retry(format!("webhook answered {status}")));
    }
    Err(JobError::GiveUp(format!("webhook answered {status}")))
}

/// `hex(HMAC-SHA256(secret, timestamp + "." + body))`.
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl Handler for Deliver {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.send(job))
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        output: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, job_id, event_id, status_code, delivered_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(new_id())
            .bind(job.payload["webhook_id"].as_str().unwrap_or_default())
            .bind(&job.id)
            .bind(job.payload["event_id"].as_str().unwrap_or_default())
            .bind(output["status"].as_i64().unwrap_or_default())
            .bind(self.clock.now_ms())
            .execute(&mut **tx)
            .await?;
            Ok(())
        })
    }
}
