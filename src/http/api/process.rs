//! The verified loop over the API: stage gates and moves, freezes, claim verification,
//! attestations, contact validity and chat-message counts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use sqlx::Row;

use crate::access::Principal;
use crate::antifraud::{self, Freeze, FreezeFilter};
use crate::customers::{self, Phone};
use crate::error::{Error, Result};
use crate::gates::{self, GateReport, Mover};
use crate::http::{ApiJson, ApiQuery, AppState, Reader, Writer};
use crate::page::{Page, PageParams};
use crate::pipeline::Deal;
use crate::policy::Who;
use crate::tracking;
use crate::verification::attest::{self, Attestation, NewAttestation};
use crate::verification::claims::{self, Verification};

fn mover(p: &Principal, user: Option<String>) -> Mover {
    Mover {
        actor: p.actor(),
        user,
        platform: None,
        key: Some(p.role),
    }
}

#[utoipa::path(get, path = "/api/v1/deals/{id}/gate", tag = "gates",
    responses((status = 200, description = "The gate to the next stage and what is missing", body = GateReport), super::ReadErrors))]
pub async fn gate(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<GateReport>> {
    let rules = s.rules.current(&p.org_id).await?;
    Ok(Json(gates::report(&s.db, &rules, &p.org_id, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Advance {
    /// The next stage (the default); any other stage is refused.
    pub to: Option<String>,
    /// The person moving the deal, if the integration acts for one.
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/deals/{id}/advance", tag = "gates", request_body = Advance,
    responses((status = 200, body = Deal), super::WriteErrors, (status = 409, description = "`gate_not_met` (details.missing lists exactly what is missing), `illegal_stage_move`, `deal_lost` (reopen it first) or `deal_closed` (won)", body = super::ErrorBody)))]
pub async fn advance(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Advance>,
) -> Result<Json<Deal>> {
    let rules = s.rules.current(&p.org_id).await?;
    Ok(Json(
        gates::advance(
            &s.db,
            &s.cipher,
            &rules,
            s.clock.now_ms(),
            &p.org_id,
            p.tz,
            &id,
            b.to.as_deref(),
            &mover(&p, b.actor),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// An earlier stage.
    pub to: String,
    /// Why (required; kept in the stage history).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// The manager acting, if the integration acts for one.
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/deals/{id}/rollback", tag = "gates", request_body = Rollback,
    responses((status = 200, body = Deal), super::WriteErrors))]
pub async fn rollback(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Rollback>,
) -> Result<Json<Deal>> {
    let rules = s.rules.current(&p.org_id).await?;
    Ok(Json(
        gates::rollback(
            &s.db,
            &s.cipher,
            &rules,
            s.clock.now_ms(),
            &p.org_id,
            p.tz,
            &id,
            &b.to,
            &b.reason,
            &mover(&p, b.actor),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lose {
    /// One of the rule set's `lost_reasons` (default 价格, 竞品, 预算取消, 需求变化, 失去联系, 其他).
    #[schema(min_length = 1, max_length = 32)]
    pub reason: String,
    /// Free text, kept encrypted on the deal.
    #[schema(max_length = 500)]
    pub note: Option<String>,
    /// The person ending it, if the integration acts for one: the deal's owner or whoever
    /// may manage the deal.
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/deals/{id}/lose", tag = "gates", request_body = Lose,
    responses((status = 200, description = "The deal, now `outcome: lost` in the stage it was in", body = Deal), super::WriteErrors, (status = 409, description = "`deal_closed` (already won or lost) or `conflict`", body = super::ErrorBody)))]
pub async fn lose(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Lose>,
) -> Result<Json<Deal>> {
    let rules = s.rules.current(&p.org_id).await?;
    Ok(Json(
        gates::lose(
            &s.db,
            &s.cipher,
            &rules,
            s.clock.now_ms(),
            &p.org_id,
            p.tz,
            &id,
            &b.reason,
            b.note.as_deref(),
            &mover(&p, b.actor),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reopen {
    /// Why (required; kept, encrypted, in the stage history).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// The manager acting, if the integration acts for one.
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/deals/{id}/reopen", tag = "gates", request_body = Reopen,
    responses((status = 200, description = "The deal, open again in the stage it was lost in", body = Deal), super::WriteErrors, (status = 409, description = "`deal_not_lost` (only a lost deal reopens) or `conflict`", body = super::ErrorBody)))]
pub async fn reopen(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Reopen>,
) -> Result<Json<Deal>> {
    Ok(Json(
        gates::reopen(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            &p.org_id,
            p.tz,
            &id,
            &b.reason,
            &mover(&p, b.actor),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reassign {
    /// The rep taking over the deal, its lead and its customer.
    pub owner: String,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/deals/{id}/reassign", tag = "gates", request_body = Reassign,
    responses((status = 200, body = Deal), super::WriteErrors))]
pub async fn reassign(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Reassign>,
) -> Result<Json<Deal>> {
    Ok(Json(
        gates::reassign(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            &p.org_id,
            p.tz,
            &id,
            &b.owner,
            &b.reason,
            &mover(&p, b.actor),
        )
        .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/freezes", tag = "antifraud", params(PageParams, FreezeFilter),
    responses((status = 200, description = "A page of freezes", body = Page<Freeze>), super::ReadErrors))]
pub async fn list_freezes(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<FreezeFilter>,
) -> Result<Json<Page<Freeze>>> {
    Ok(Json(
        antifraud::list(&s.db, &s.cipher, &p.org_id, &f, &page.validate()?).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lift {
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// The person lifting it, if the integration acts for one.
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/freezes/{id}/lift", tag = "antifraud", request_body = Lift,
    responses((status = 200, body = Freeze), super::WriteErrors))]
pub async fn lift(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Lift>,
) -> Result<Json<Freeze>> {
    Ok(Json(
        antifraud::lift(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            &p.org_id,
            &p.actor(),
            Who::acting(&p, b.actor.as_deref()),
            &id,
            &b.reason,
        )
        .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/events/{id}/verification", tag = "tracking",
    responses((status = 200, body = Verification), super::ReadErrors, (status = 404, description = "No such point, or it claims nothing to verify", body = super::ErrorBody)))]
pub async fn verification(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<Verification>> {
    claims::get(&s.db, &p.org_id, &id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound {
            what: "verification",
        })
}

#[utoipa::path(post, path = "/api/v1/events/{id}/attestations", tag = "tracking", request_body = NewAttestation,
    responses((status = 201, body = Attestation), super::WriteErrors))]
pub async fn request_attestation(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<NewAttestation>,
) -> Result<(StatusCode, Json<Attestation>)> {
    let a = attest::request(
        &s.db,
        &s.cipher,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        &id,
        b,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(a)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The superior deciding (must be the attestation's approver).
    pub actor: String,
    pub approve: bool,
}

#[utoipa::path(post, path = "/api/v1/attestations/{id}/decision", tag = "tracking", request_body = Decision,
    responses((status = 200, body = Attestation), super::WriteErrors))]
pub async fn decide_attestation(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Decision>,
) -> Result<Json<Attestation>> {
    let mut tx = s.db.begin().await?;
    attest::decide(
        &mut tx,
        &s.cipher,
        s.clock.now_ms(),
        &p.org_id,
        &id,
        b.approve,
        &b.actor,
        &p.actor(),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(attest::get(&s.db, &s.cipher, &p.org_id, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    pub valid: bool,
    /// Why it is invalid (e.g. 停机, 空号).
    #[schema(max_length = 200)]
    pub reason: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/phones/{id}/validity", tag = "customers", request_body = Validity,
    responses((status = 200, body = Phone), super::WriteErrors))]
pub async fn phone_validity(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Validity>,
) -> Result<Json<Phone>> {
    Ok(Json(
        customers::set_phone_validity(
            &s.db,
            s.clock.now_ms(),
            &p.org_id,
            &p.actor(),
            &id,
            b.valid,
            b.reason.as_deref(),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatCount {
    pub user: String,
    pub customer: String,
    /// The day in the organisation's zone, `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub day: String,
    /// Messages exchanged that day (both directions).
    #[schema(minimum = 0, maximum = 100_000)]
    pub messages: i64,
    /// The message source: `wecom`, `dingtalk`, `feishu` (its evidence policy applies).
    #[schema(schema_with = crate::chat::platform_schema)]
    pub source: String,
}

#[utoipa::path(put, path = "/api/v1/chat-counts", tag = "tracking", request_body = ChatCount,
    responses((status = 204, description = "Stored (the latest count for that day wins)"), super::WriteErrors))]
pub async fn chat_count(
    State(s): State<AppState>,
    Writer(p): Writer,
    ApiJson(b): ApiJson<ChatCount>,
) -> Result<StatusCode> {
    crate::validate::date("day", &b.day)?;
    if !(0..=100_000).contains(&b.messages) {
        return Err(Error::invalid("messages must be between 0 and 100000"));
    }
    if crate::chat::event::Platform::parse(&b.source).is_none() {
        return Err(Error::invalid("source must be wecom, dingtalk or feishu"));
    }
    let known = sqlx::query(
        "SELECT (SELECT id FROM users WHERE id = $1 AND org_id = $3) AS u, \
                (SELECT id FROM customers WHERE id = $2 AND org_id = $3) AS c",
    )
    .bind(&b.user)
    .bind(&b.customer)
    .bind(&p.org_id)
    .fetch_one(&s.db.pool)
    .await?;
    if known.get::<Option<String>, _>("u").is_none() {
        return Err(Error::UnknownReference(format!(
            "user `{}` does not exist",
            b.user
        )));
    }
    if known.get::<Option<String>, _>("c").is_none() {
        return Err(Error::UnknownReference(format!(
            "customer `{}` does not exist",
            b.customer
        )));
    }
    let now = s.clock.now_ms();
    let mut tx = s.db.begin().await?;
    sqlx::query(
        "INSERT INTO chat_message_days (org_id, user_id, customer_id, day, messages, source, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id, user_id, customer_id, day) \
         DO UPDATE SET messages = excluded.messages, source = excluded.source, updated_at = excluded.updated_at",
    )
    .bind(&p.org_id)
    .bind(&b.user)
    .bind(&b.customer)
    .bind(&b.day)
    .bind(b.messages)
    .bind(&b.source)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // One point per contact-day, updated in place as the count changes.
    tracking::upsert_in(&mut tx, now, &chat_day_point(&p.org_id, &b), p.tz).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The action of a contact-day's point.
pub const CHAT_DAY: &str = "chat.day";

/// The tracking point for one rep's messages with one customer on one day: keyed by
/// `<user>:<customer>:<day>` (the count's own key), so a new count for the same day
/// updates it rather than adding another.
fn chat_day_point(org_id: &str, b: &ChatCount) -> tracking::NewPoint {
    tracking::NewPoint {
        external_id: Some(format!("{}:{}:{}", b.user, b.customer, b.day)),
        ..tracking::NewPoint::new(
            org_id,
            &b.user,
            &b.customer,
            CHAT_DAY,
            tracking::Source::Api,
            serde_json::json!({"day": b.day, "messages": b.messages, "source": b.source}),
        )
    }
}
