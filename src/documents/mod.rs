//! Documents attached to a customer (proposals, proofs, handoff artefacts) and the tracked
//! links they reach the customer by.
//!
//! An upload stores the file in the blob store, then records the rep's upload action
//! (上传方案 for a proposal) through the ledger; the document rows are written inside the
//! point's transaction, so a refused action (a frozen rep) leaves no document behind. A
//! link carries a random token of which only the hash is stored; its first open is a
//! `document.opened` tracking point, written exactly once however many opens race.

use std::str::FromStr as _;
use std::sync::Arc;

use axum::body::Bytes;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::access::Actor;
use crate::db::{new_id, Arg, Db, Select, Tx};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::rules::{ActionDef, ActionKind, RuleSet, Rules};
use crate::security::fields::{self, BLOB_FILENAME};
use crate::security::Cipher;
use crate::storage::{BlobStore, Stored};
use crate::tracking::{self, After, AfterWrite, Ledger, NewPoint, Recorded, Source, TrackingPoint};

pub const SENT: &str = "document.sent";
pub const OPENED: &str = "document.opened";
/// How long a link works unless the sender asks otherwise.
pub const DEFAULT_LINK_DAYS: i64 = 30;
pub const MAX_LINK_DAYS: i64 = 365;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Document {
    pub id: String,
    pub customer: String,
    pub deal: Option<String>,
    /// `proposal`, or another kind an upload action of the rule set declares.
    pub kind: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    pub uploaded_by: String,
    /// The upload's tracking point.
    pub point: Option<String>,
    pub created_at: String,
}

/// A document to upload, as the caller describes it.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub org_id: String,
    /// The rep uploading.
    pub actor: String,
    pub customer: String,
    pub deal: Option<String>,
    pub kind: String,
    pub filename: String,
    /// As the client declared it; none means opaque bytes.
    pub content_type: Option<String>,
    pub source: Source,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub api_key_id: Option<String>,
    /// The chat platform the rep uploaded from (the sidebar's sign-in), if any.
    pub platform: Option<String>,
}

/// The upload action that stores documents of `kind` (上传方案 for `proposal`).
pub fn upload_action<'r>(rules: &'r RuleSet, kind: &str) -> Result<&'r ActionDef> {
    rules
        .actions
        .iter()
        .find(|a| a.kind == ActionKind::Upload && a.document.as_deref() == Some(kind))
        .ok_or_else(|| {
            let kinds: Vec<&str> = rules
                .actions
                .iter()
                .filter(|a| a.kind == ActionKind::Upload)
                .filter_map(|a| a.document.as_deref())
                .collect();
            Error::invalid(format!(
                "文档类型「{kind}」无对应的上传动作 (kind `{kind}` is not one the rule set uploads; use one of: {})",
                kinds.join(", ")
            ))
        })
}

/// A file name as shown to people: 1 to 200 characters, no path, no control characters.
pub fn filename(value: &str) -> Result<String> {
    let v = value.trim();
    let n = v.chars().count();
    if n == 0
        || n > 200
        || v == "."
        || v == ".."
        || v.chars().any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(Error::invalid(
            "文件名须为 1 到 200 个字符，且不含路径分隔符或控制字符 \
             (filename must be 1 to 200 characters without path separators or control characters)",
        ));
    }
    Ok(v.to_string())
}

/// A media type such as `application/pdf`; none given means opaque bytes.
pub fn content_type(value: Option<&str>) -> Result<String> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok("application/octet-stream".into());
    };
    let printable = v.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !printable || v.len() > 255 || !v.contains('/') {
        return Err(Error::invalid(
            "Content-Type 须为媒体类型，如 application/pdf (Content-Type must be a media type such as application/pdf)",
        ));
    }
    Ok(v.to_string())
}

/// An upload whose description has been checked; only the bytes are still to come.
#[derive(Debug)]
pub struct Upload {
    new: NewDocument,
    action: String,
    content_type: String,
}

impl Upload {
    /// Checks the name, the media type and the kind against the rules in force, so that
    /// a bad request is refused before its body is read.
    pub async fn check(rules: &Rules, mut new: NewDocument) -> Result<Upload> {
        new.filename = filename(&new.filename)?;
        let content_type = content_type(new.content_type.as_deref())?;
        let action = upload_action(&*rules.current(&new.org_id).await?, &new.kind)?
            .name
            .clone();
        Ok(Upload {
            new,
            action,
            content_type,
        })
    }
}

/// Stores the file, then records the upload action; the document exists once the point
/// does. A refusal by the anti-fraud rules leaves only the (content-addressed,
/// unreferenced) file behind.
pub async fn upload(
    ledger: &Ledger,
    cipher: &Cipher,
    blobs: &BlobStore,
    upload: Upload,
    bytes: Bytes,
    tz: chrono_tz::Tz,
) -> Result<Document> {
    if bytes.is_empty() {
        return Err(Error::invalid("文件为空 (the file is empty)"));
    }
    let Upload {
        new,
        action,
        content_type,
    } = upload;
    let stored = blobs.put(&new.org_id, bytes).await?;
    let rows = Arc::new(DocumentRows {
        document_id: new_id(),
        blob_id: new_id(),
        org_id: new.org_id.clone(),
        kind: new.kind,
        // Sealed here, so the ledger writer that inserts the row does no cryptography.
        filename_enc: cipher.encrypt(BLOB_FILENAME, &new.filename),
        filename: new.filename,
        content_type,
        stored,
    });
    let point = NewPoint {
        org_id: new.org_id,
        actor_kind: crate::tracking::ActorKind::User,
        actor: Some(new.actor),
        customer: Some(new.customer),
        deal: new.deal,
        action,
        // The id, never the file name: names can carry personal data.
        payload: json!({"document": rows.document_id, "kind": rows.kind}),
        source: new.source,
        platform: new.platform,
        external_id: None,
        client_ip: new.client_ip,
        user_agent: new.user_agent,
        idempotency_key: None,
        api_key_id: new.api_key_id,
        after: Some(After(rows.clone())),
    };
    match ledger.record(point, tz).await? {
        Recorded::Created(p) => Ok(rows.document(&p)),
        Recorded::Replayed(_) => Err(Error::Internal(anyhow::anyhow!(
            "an upload without an idempotency key was answered as a replay"
        ))),
    }
}

/// The `blobs` and `documents` rows of an upload, written with its tracking point.
struct DocumentRows {
    document_id: String,
    blob_id: String,
    org_id: String,
    kind: String,
    filename: String,
    filename_enc: String,
    content_type: String,
    stored: Stored,
}

impl DocumentRows {
    fn document(&self, p: &TrackingPoint) -> Document {
        Document {
            id: self.document_id.clone(),
            customer: p.customer_id().to_string(),
            deal: p.deal.clone(),
            kind: self.kind.clone(),
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            size_bytes: self.stored.size as i64,
            sha256: self.stored.sha256.clone(),
            uploaded_by: p.actor_id().to_string(),
            point: Some(p.id.clone()),
            created_at: p.occurred_at.clone(),
        }
    }
}

impl AfterWrite for DocumentRows {
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        point: &'a TrackingPoint,
    ) -> crate::jobs::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let at = chrono::DateTime::parse_from_rfc3339(&point.occurred_at)
                .map_err(|e| Error::Internal(anyhow::anyhow!("point time: {e}")))?
                .timestamp_millis();
            sqlx::query(
                "INSERT INTO blobs (id, org_id, sha256, size_bytes, content_type, filename_enc, storage_key, \
                 uploaded_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&self.blob_id)
            .bind(&self.org_id)
            .bind(&self.stored.sha256)
            .bind(self.stored.size as i64)
            .bind(&self.content_type)
            .bind(&self.filename_enc)
            .bind(&self.stored.key)
            .bind(&point.actor)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO documents (id, org_id, customer_id, deal_id, kind, blob_id, uploaded_by, \
                 point_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&self.document_id)
            .bind(&self.org_id)
            .bind(&point.customer)
            .bind(&point.deal)
            .bind(&self.kind)
            .bind(&self.blob_id)
            .bind(&point.actor)
            .bind(&point.id)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            Ok(())
        })
    }
}

const DOCUMENT_COLUMNS: &str =
    "SELECT d.id, d.customer_id, d.deal_id, d.kind, d.uploaded_by, d.point_id, \
     d.created_at, b.filename_enc, b.content_type, b.size_bytes, b.sha256, b.storage_key \
     FROM documents d JOIN blobs b ON b.id = d.blob_id";

fn from_row(cipher: &Cipher, r: &sqlx::any::AnyRow) -> Result<Document> {
    Ok(Document {
        id: r.get("id"),
        customer: r.get("customer_id"),
        deal: r.get("deal_id"),
        kind: r.get("kind"),
        filename: fields::open(cipher, BLOB_FILENAME, &r.get::<String, _>("filename_enc"))?,
        content_type: r.get("content_type"),
        size_bytes: r.get("size_bytes"),
        sha256: r.get("sha256"),
        uploaded_by: r.get("uploaded_by"),
        point: r.get("point_id"),
        created_at: crate::clock::rfc3339(r.get("created_at")),
    })
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DocumentFilter {
    pub customer: Option<String>,
    pub kind: Option<String>,
}

pub async fn list(
    db: &Db,
    cipher: &Cipher,
    org_id: &str,
    f: &DocumentFilter,
    page: &PageRequest,
) -> Result<Page<Document>> {
    let mut sel = Select::new();
    sel.and("d.org_id = {}", Arg::Text(org_id.into()));
    if let Some(after) = &page.after {
        sel.and("d.id > {}", Arg::Text(after.clone()));
    }
    sel.equal_each(&[("d.customer_id", &f.customer), ("d.kind", &f.kind)]);
    let sql = sel.sql(DOCUMENT_COLUMNS, "ORDER BY d.id LIMIT {limit}");
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let items = rows
        .iter()
        .map(|r| from_row(cipher, r))
        .collect::<Result<_>>()?;
    Ok(Page::from_rows(items, page, |d| &d.id))
}

pub async fn get(db: &Db, cipher: &Cipher, org_id: &str, id: &str) -> Result<Document> {
    from_row(cipher, &get_row(db, org_id, id).await?)
}

async fn get_row(db: &Db, org_id: &str, id: &str) -> Result<sqlx::any::AnyRow> {
    sqlx::query(&format!(
        "{DOCUMENT_COLUMNS} WHERE d.id = $1 AND d.org_id = $2"
    ))
    .bind(id)
    .bind(org_id)
    .fetch_optional(&db.pool)
    .await?
    .ok_or(Error::NotFound { what: "document" })
}

/// A document and its bytes.
pub async fn content(
    db: &Db,
    cipher: &Cipher,
    blobs: &BlobStore,
    org_id: &str,
    id: &str,
) -> Result<(Document, Vec<u8>)> {
    let row = get_row(db, org_id, id).await?;
    let key: String = row.get("storage_key");
    Ok((from_row(cipher, &row)?, blobs.get(&key).await?))
}

/// A document sent to its customer as a tracked link.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Link {
    pub id: String,
    pub document: String,
    pub customer: String,
    pub sent_by: String,
    /// What the customer opens. Shown once: only a hash of its token is kept.
    pub url: String,
    pub sent_at: String,
    pub expires_at: String,
    /// The `document.sent` tracking point.
    pub point: String,
}

#[derive(Debug, Clone)]
pub struct NewLink {
    pub org_id: String,
    pub document: String,
    /// The rep sending it.
    pub actor: String,
    /// Days until the link stops working (default 30).
    pub expires_in_days: Option<i64>,
    pub source: Source,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub api_key_id: Option<String>,
    /// The chat platform the rep sent it from (the sidebar's sign-in), if any.
    pub platform: Option<String>,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates the link and its `document.sent` point in one transaction.
pub async fn create_link(
    db: &Db,
    now: i64,
    public_url: &str,
    tz: chrono_tz::Tz,
    new: NewLink,
) -> Result<Link> {
    let days = new.expires_in_days.unwrap_or(DEFAULT_LINK_DAYS);
    if !(1..=MAX_LINK_DAYS).contains(&days) {
        return Err(Error::invalid(format!(
            "有效期须为 1 到 {MAX_LINK_DAYS} 天 (expires_in_days must be between 1 and {MAX_LINK_DAYS})"
        )));
    }
    crate::validate::id("document", &new.document)?;
    crate::validate::id("actor", &new.actor)?;
    let mut tx = db.begin().await?;
    let customer: String =
        sqlx::query("SELECT customer_id FROM documents WHERE id = $1 AND org_id = $2")
            .bind(&new.document)
            .bind(&new.org_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound { what: "document" })?
            .get("customer_id");
    let sender = sqlx::query("SELECT status FROM users WHERE id = $1 AND org_id = $2")
        .bind(&new.actor)
        .bind(&new.org_id)
        .fetch_optional(&mut *tx)
        .await?;
    match sender.map(|r| r.get::<String, _>("status")) {
        None => {
            return Err(Error::UnknownReference(format!(
                "actor `{}` does not exist",
                new.actor
            )))
        }
        Some(s) if s != "active" => {
            return Err(Error::invalid(format!(
                "actor `{}` has left and cannot send documents",
                new.actor
            )))
        }
        Some(_) => {}
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let id = new_id();
    let expires_at = now + days * DAY_MS;
    let point = tracking::write_in(
        &mut tx,
        now,
        &NewPoint {
            deal: None,
            client_ip: new.client_ip,
            user_agent: new.user_agent,
            api_key_id: new.api_key_id.clone(),
            platform: new.platform,
            ..NewPoint::new(
                &new.org_id,
                &new.actor,
                &customer,
                SENT,
                new.source,
                json!({"document": new.document, "link": id}),
            )
        },
        tz,
    )
    .await?;
    sqlx::query(
        "INSERT INTO document_links (id, org_id, document_id, customer_id, token_hash, sent_by, sent_at, \
         sent_point_id, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(&new.org_id)
    .bind(&new.document)
    .bind(&customer)
    .bind(token_hash(&token))
    .bind(&new.actor)
    .bind(now)
    .bind(&point.id)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    crate::access::audit::CLIENT_IP
        .scope(
            point.client_ip.clone(),
            Actor::key_or_user(new.api_key_id.as_deref(), &new.actor).audit(
                &mut tx,
                now,
                &new.org_id,
                "document.link",
                ("customer", &customer),
                json!({"document": new.document, "link": id, "days": days}),
            ),
        )
        .await?;
    tx.commit().await?;
    tracing::info!(link = %id, document = %new.document, "document link created");
    Ok(Link {
        id,
        document: new.document,
        customer,
        sent_by: new.actor,
        url: format!("{}/d/{token}", public_url.trim_end_matches('/')),
        sent_at: crate::clock::rfc3339(now),
        expires_at: crate::clock::rfc3339(expires_at),
        point: point.id,
    })
}

/// Who is opening a link, as far as the request tells.
#[derive(Debug, Clone)]
pub struct Opener {
    /// A HEAD request, a preview or a signed-in colleague: served, not counted.
    pub counts: bool,
    pub ip: Option<String>,
}

/// What opening a link found.
#[derive(Debug)]
pub enum Opening {
    Unknown,
    Expired,
    File {
        filename: String,
        content_type: String,
        bytes: Vec<u8>,
    },
}

/// Serves a link. A counted open increments `open_count`; the first one also writes the
/// `document.opened` point, in the same transaction as the conditional update that
/// claims it, so racing opens write exactly one point.
pub async fn open(
    db: &Db,
    cipher: &Cipher,
    blobs: &BlobStore,
    now: i64,
    token: &str,
    opener: &Opener,
) -> Result<Opening> {
    // Tokens are 32 random bytes in unpadded base64url; anything else was never issued.
    if token.len() != 43
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok(Opening::Unknown);
    }
    let Some(row) = sqlx::query(
        "SELECT l.id, l.org_id, l.document_id, l.customer_id, l.sent_by, l.expires_at, \
         b.filename_enc, b.content_type, b.storage_key, o.timezone, \
         (SELECT client_ip FROM tracking_points WHERE id = l.sent_point_id) AS sent_ip \
         FROM document_links l JOIN documents d ON d.id = l.document_id \
         JOIN blobs b ON b.id = d.blob_id JOIN organisations o ON o.id = l.org_id \
         WHERE l.token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(&db.pool)
    .await?
    else {
        return Ok(Opening::Unknown);
    };
    if row.get::<i64, _>("expires_at") <= now {
        return Ok(Opening::Expired);
    }
    // Read before counting: an open is recorded only when the file can be served.
    let key: String = row.get("storage_key");
    let bytes = blobs.get(&key).await?;
    if opener.counts {
        count_open(db, now, &row, opener).await?;
    }
    Ok(Opening::File {
        filename: fields::open(cipher, BLOB_FILENAME, &row.get::<String, _>("filename_enc"))?,
        content_type: row.get("content_type"),
        bytes,
    })
}

async fn count_open(db: &Db, now: i64, link: &sqlx::any::AnyRow, opener: &Opener) -> Result<()> {
    let id: String = link.get("id");
    let mut tx = db.begin().await?;
    let first = sqlx::query(
        "UPDATE document_links SET first_opened_at = $2, open_count = open_count + 1 \
         WHERE id = $1 AND first_opened_at IS NULL",
    )
    .bind(&id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if first {
        let tz = chrono_tz::Tz::from_str(&link.get::<String, _>("timezone"))
            .map_err(|e| Error::Internal(anyhow::anyhow!("organisation time zone: {e}")))?;
        let mut payload =
            json!({"document": link.get::<String, _>("document_id"), "link": id, "by": "customer"});
        // Whether the "customer" opened it from the address the rep sent it from: a
        // self-opened link is not a customer's interest. The address itself stays out.
        let sent_ip: Option<String> = link.get("sent_ip");
        if let (Some(sent), Some(ip)) = (sent_ip, &opener.ip) {
            payload["from_sender_ip"] = json!(&sent == ip);
        }
        let point = tracking::write_in(
            &mut tx,
            now,
            // The customer acted; `actor` names the rep whose link it was.
            &NewPoint {
                actor_kind: tracking::ActorKind::Customer,
                ..NewPoint::new(
                    &link.get::<String, _>("org_id"),
                    &link.get::<String, _>("sent_by"),
                    &link.get::<String, _>("customer_id"),
                    OPENED,
                    Source::System,
                    payload,
                )
            },
            tz,
        )
        .await?;
        sqlx::query("UPDATE document_links SET opened_point_id = $2 WHERE id = $1")
            .bind(&id)
            .bind(&point.id)
            .execute(&mut *tx)
            .await?;
        tracing::info!(link = %id, "document link opened for the first time");
    } else {
        sqlx::query("UPDATE document_links SET open_count = open_count + 1 WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_names_not_paths() {
        assert_eq!(filename(" 方案 v2.pdf ").unwrap(), "方案 v2.pdf");
        for bad in [
            "", "  ", "../x.pdf", "a/b.pdf", "a\\b.pdf", "a\nb.pdf", "..", ".",
        ] {
            assert!(filename(bad).is_err(), "{bad:?}");
        }
        assert!(filename(&"方".repeat(200)).is_ok());
        assert!(filename(&"方".repeat(201)).is_err());
    }

    #[test]
    fn media_types_are_checked() {
        assert_eq!(content_type(None).unwrap(), "application/octet-stream");
        assert_eq!(
            content_type(Some("application/pdf")).unwrap(),
            "application/pdf"
        );
        assert!(content_type(Some("pdf")).is_err());
        assert!(content_type(Some("text/html\r\nX: y")).is_err());
    }

    #[test]
    fn only_declared_upload_kinds_are_accepted() {
        let rules = RuleSet::default();
        assert_eq!(upload_action(&rules, "proposal").unwrap().name, "上传方案");
        let err = upload_action(&rules, "contract").unwrap_err().to_string();
        assert!(err.contains("proposal"), "{err}");
    }
}
