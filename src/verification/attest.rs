//! Attested evidence: where no platform record can back a claim (or the record is
//! missing), the rep attaches proof and a direct superior confirms or rejects it on a
//! card. A confirmed claim counts as `attested` wherever the platform's evidence policy
//! accepts attested evidence.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use crate::access::Actor;
use crate::cards;
use crate::db::{new_id, Db, Tx};
use crate::error::{Error, Result};
use crate::policy::authority::{self, Managed, Who};
use crate::security::fields::{self, ATTESTATION_NOTE};
use crate::security::Cipher;

/// The purpose cards for attestations carry; clicks on them come back here.
pub const PURPOSE: &str = "attestation";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAttestation {
    /// The rep who made the claim (the point's actor).
    pub actor: String,
    /// A proof document of the same customer (upload it with kind `proof`).
    pub document: Option<String>,
    /// What happened, for the superior to judge.
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attestation {
    pub id: String,
    pub point: String,
    pub requested_by: String,
    pub approver: String,
    pub document: Option<String>,
    pub note: Option<String>,
    /// `pending`, `confirmed` or `rejected`.
    pub status: String,
    pub created_at: String,
    pub decided_at: Option<String>,
}

fn from_row(cipher: &Cipher, r: &sqlx::any::AnyRow) -> Result<Attestation> {
    Ok(Attestation {
        id: r.get("id"),
        point: r.get("point_id"),
        requested_by: r.get("requested_by"),
        approver: r.get("approver_user_id"),
        document: r.get("document_id"),
        note: fields::open_opt(cipher, ATTESTATION_NOTE, r.get("note_enc"))?,
        status: r.get("status"),
        created_at: crate::clock::rfc3339(r.get("created_at")),
        decided_at: r
            .get::<Option<i64>, _>("decided_at")
            .map(crate::clock::rfc3339),
    })
}

const COLUMNS: &str =
    "SELECT id, point_id, requested_by, approver_user_id, document_id, note_enc, status, created_at, \
     decided_at FROM attestations";

/// The rep asks their direct superior to confirm a claim; the card goes out with the
/// request, in one transaction.
#[allow(clippy::too_many_arguments)]
pub async fn request(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    point_id: &str,
    new: NewAttestation,
) -> Result<Attestation> {
    let note = crate::validate::opt_text("note", new.note.as_deref(), 1000)?;
    if note.is_none() && new.document.is_none() {
        return Err(Error::invalid(
            "请附上证明文件或说明 (attach a proof document or a note)",
        ));
    }
    let mut tx = db.begin().await?;
    let claim = sqlx::query(
        "SELECT v.status, v.actor_user_id, v.customer_id, t.action, t.occurred_at, \
         (SELECT name FROM users WHERE id = v.actor_user_id) AS rep, \
         (SELECT name FROM customers WHERE id = v.customer_id) AS customer, \
         (SELECT timezone FROM organisations WHERE id = v.org_id) AS tz \
         FROM point_verifications v JOIN tracking_points t ON t.id = v.point_id \
         WHERE v.point_id = $1 AND v.org_id = $2",
    )
    .bind(point_id)
    .bind(org_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound {
        what: "claim to verify",
    })?;
    let rep: String = claim.get("actor_user_id");
    if rep != new.actor {
        return Err(Error::Forbidden(
            "只有记录该动作的销售本人可以提交证明 (only the rep who made the claim)".into(),
        ));
    }
    let status: String = claim.get("status");
    if status == "verified" || status == "attested" {
        let shown = if status == "verified" {
            "已核验"
        } else {
            "已证明"
        };
        return Err(Error::Conflict(format!(
            "该记录已是「{shown}」，无需证明 (already backed by evidence)"
        )));
    }
    let customer: String = claim.get("customer_id");
    if let Some(d) = &new.document {
        let ok = sqlx::query(
            "SELECT 1 FROM documents WHERE id = $1 AND org_id = $2 AND customer_id = $3",
        )
        .bind(d)
        .bind(org_id)
        .bind(&customer)
        .fetch_optional(&mut *tx)
        .await?;
        if ok.is_none() {
            return Err(Error::UnknownReference(format!(
                "document `{d}` does not exist for this customer"
            )));
        }
    }
    let pending =
        sqlx::query("SELECT 1 FROM attestations WHERE point_id = $1 AND status = 'pending'")
            .bind(point_id)
            .fetch_optional(&mut *tx)
            .await?;
    if pending.is_some() {
        return Err(Error::Conflict(
            "该记录已有待确认的证明 (a request is already waiting)".into(),
        ));
    }
    let Some(approver) = crate::antifraud::direct_superiors(&mut tx, &rep)
        .await?
        .into_iter()
        .next()
    else {
        return Err(Error::invalid(format!(
            "您没有直属上级，无法提交证明：请联系管理员在 {} 中设置您的直属上级，或在通讯录中填写",
            crate::access::WHERE_ROLES_ARE_SET
        )));
    };
    let id = new_id();
    let card = cards::templates::compose(
        "attestation",
        &[
            (
                "rep",
                claim.get::<Option<String>, _>("rep").unwrap_or_default(),
            ),
            (
                "customer",
                claim
                    .get::<Option<String>, _>("customer")
                    .unwrap_or_default(),
            ),
            (
                "action",
                crate::text::action(&claim.get::<String, _>("action")).to_string(),
            ),
            (
                "time",
                crate::text::time_short(
                    claim.get("occurred_at"),
                    crate::text::zone(&claim.get::<Option<String>, _>("tz").unwrap_or_default()),
                ),
            ),
            ("note", note.clone().unwrap_or_else(|| "（见附件）".into())),
        ],
    );
    let card_id = cards::send(
        &mut tx,
        cipher,
        now_ms,
        org_id,
        &approver,
        PURPOSE,
        Some(&id),
        &card,
    )
    .await?;
    sqlx::query(
        "INSERT INTO attestations (id, org_id, point_id, requested_by, approver_user_id, document_id, note_enc, status, \
         card_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(point_id)
    .bind(&rep)
    .bind(&approver)
    .bind(&new.document)
    .bind(note.as_deref().map(|n| cipher.encrypt(ATTESTATION_NOTE, n)))
    .bind(&card_id)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "attestation.request",
            ("attestation", &id),
            json!({"point": point_id, "approver": approver}),
        )
        .await?;
    tx.commit().await?;
    get(db, cipher, org_id, &id).await
}

pub async fn get(db: &Db, cipher: &Cipher, org_id: &str, id: &str) -> Result<Attestation> {
    let row = sqlx::query(&format!("{COLUMNS} WHERE id = $1 AND org_id = $2"))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(Error::NotFound {
            what: "attestation",
        })?;
    from_row(cipher, &row)
}

/// The proof document attached to attestation `id`, for someone with authority over the
/// rep who asked (`policy::authority`: a manager, an admin, the rep's direct superior; the
/// card asking the superior to decide links here). An attestation with a note only has
/// no document to open.
pub async fn proof(
    db: &Db,
    cipher: &Cipher,
    blobs: &crate::storage::BlobStore,
    org_id: &str,
    who: Who<'_>,
    id: &str,
) -> Result<(crate::documents::Document, Vec<u8>)> {
    let a = get(db, cipher, org_id, id).await?;
    let mut conn = db.pool.acquire().await?;
    authority::require(
        &mut conn,
        org_id,
        who,
        Managed::Proof {
            rep: &a.requested_by,
        },
    )
    .await?;
    drop(conn);
    let document = a.document.ok_or(Error::NotFound {
        what: "proof document",
    })?;
    crate::documents::content(db, cipher, blobs, org_id, &document).await
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Confirmed,
    Rejected,
    /// Already decided: nothing changed.
    Repeat,
}

/// The superior confirms or rejects. Only the approver may decide; a second decision
/// (double click, platform retry) changes nothing.
#[allow(clippy::too_many_arguments)]
pub async fn decide(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    id: &str,
    approve: bool,
    by_user: &str,
    actor: &Actor,
) -> Result<Decided> {
    let row = sqlx::query(&format!("{COLUMNS} WHERE id = $1 AND org_id = $2"))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::NotFound {
            what: "attestation",
        })?;
    let a = from_row(cipher, &row)?;
    if a.approver != by_user {
        return Err(Error::Forbidden(
            "只有指定的上级可以确认 (only the named superior may decide)".into(),
        ));
    }
    let status = if approve { "confirmed" } else { "rejected" };
    let changed = sqlx::query(
        "UPDATE attestations SET status = $1, decided_at = $2 WHERE id = $3 AND status = 'pending'",
    )
    .bind(status)
    .bind(now_ms)
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(Decided::Repeat);
    }
    if approve {
        sqlx::query(
            "UPDATE point_verifications SET status = 'attested', evidence_source = 'attestation', evidence_ref = $1, \
             duration_s = NULL, decided_at = $2, updated_at = $2 WHERE point_id = $3",
        )
        .bind(id)
        .bind(now_ms)
        .bind(&a.point)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE tracking_points SET verification = 'attested' WHERE id = $1")
            .bind(&a.point)
            .execute(&mut **tx)
            .await?;
    }
    actor
        .audit(
            tx,
            now_ms,
            org_id,
            &format!("attestation.{status}"),
            ("attestation", id),
            json!({"point": a.point, "by": by_user}),
        )
        .await?;
    Ok(if approve {
        Decided::Confirmed
    } else {
        Decided::Rejected
    })
}

/// Clicks on attestation cards: the superior's 确认 (`confirm`) or 驳回.
pub struct CardClicks {
    pub cipher: Cipher,
}

impl cards::ClickHandler for CardClicks {
    fn customer<'a>(
        &'a self,
        tx: &'a mut Tx,
        org_id: &'a str,
        object: &'a str,
    ) -> crate::jobs::BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            Ok(sqlx::query(
                "SELECT p.customer_id FROM attestations a JOIN tracking_points p ON p.id = a.point_id \
                 WHERE a.id = $1 AND a.org_id = $2",
            )
            .bind(object)
            .bind(org_id)
            .fetch_optional(&mut **tx)
            .await?
            .and_then(|r| r.get("customer_id")))
        })
    }

    fn click<'a>(
        &'a self,
        tx: &'a mut Tx,
        click: &'a cards::ClickContext,
    ) -> crate::jobs::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let actor = Actor {
                kind: "user",
                id: Some(click.clicker.clone()),
            };
            decide(
                tx,
                &self.cipher,
                click.now_ms,
                &click.org_id,
                &click.object,
                click.action == "confirm",
                &click.clicker,
                &actor,
            )
            .await
            .map(|_| ())
        })
    }
}
