//! Interactive cards, platform-neutral: one card model (title, fields, buttons) that each
//! platform renders its own way. Sending is a durable job enqueued in the caller's
//! transaction; button keys come from code (`<action>:<card id>`), so what a click means
//! never depends on wording.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::{new_id, Tx};
use crate::error::{Error, Result};
use crate::jobs::{self, NewJob};
use crate::security::fields::CARD_CONTENT;
use crate::security::Cipher;

/// The job kind that delivers a card through the configured platform.
pub const DELIVER: &str = "card.deliver";
pub mod clicks;
pub mod route;
pub mod templates;

pub use clicks::{CardClicks, ClickContext, ClickHandler, Purposes, CLICK};

pub const MAX_FIELDS: usize = 6;
pub const MAX_BUTTONS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonStyle {
    Primary,
    Default,
    Danger,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    /// What the click does, e.g. `accept`, `answer`, `reject` (from code).
    pub action: String,
    pub label: String,
    pub style: ButtonStyle,
}

/// How urgent a card looks, on platforms whose cards have a coloured header (Feishu).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    #[default]
    Info,
    Warning,
    Danger,
}

impl Tone {
    fn is_info(&self) -> bool {
        *self == Tone::Info
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub title: String,
    pub description: Option<String>,
    /// Label and value pairs, shown in order.
    pub fields: Vec<(String, String)>,
    pub buttons: Vec<Button>,
    #[serde(default, skip_serializing_if = "Tone::is_info")]
    pub tone: Tone,
    /// The template it was composed from (`cards/<platform>/<name>.toml`), if any: a
    /// platform may render some cards with a template of their own (DingTalk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The same card as one platform's templates word it (`cards/<platform>/`), where that
    /// differs from this one. Buttons carry the same actions on every platform.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, Card>,
}

impl Card {
    /// The card as it is shown on `platform`.
    pub fn into_platform(mut self, platform: crate::chat::event::Platform) -> Card {
        self.variants.remove(platform.as_str()).unwrap_or(Card {
            variants: BTreeMap::new(),
            ..self
        })
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.title.trim().is_empty() {
            return Err(Error::invalid("a card needs a title"));
        }
        if self.fields.len() > MAX_FIELDS {
            return Err(Error::invalid(format!(
                "a card has at most {MAX_FIELDS} fields"
            )));
        }
        if self.buttons.len() > MAX_BUTTONS {
            return Err(Error::invalid(format!(
                "a card has at most {MAX_BUTTONS} buttons"
            )));
        }
        for b in &self.buttons {
            if b.action.is_empty() || !b.action.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                return Err(Error::invalid(
                    "button actions are lowercase words from code",
                ));
            }
        }
        Ok(())
    }
}

/// A card as `cards.content_enc` stores it: its JSON, encrypted with the data key, since
/// cards carry what people typed (requests, answers, notes).
pub fn seal(cipher: &Cipher, card: &Card) -> Result<String> {
    let json = serde_json::to_string(card).map_err(|e| Error::Internal(e.into()))?;
    Ok(cipher.encrypt(CARD_CONTENT, &json))
}

/// The card `cards.content_enc` holds, with every platform's wording.
fn unseal(cipher: &Cipher, sealed: &str) -> anyhow::Result<Card> {
    let json = cipher.decrypt(CARD_CONTENT, sealed)?;
    Ok(serde_json::from_str::<Card>(&json)?)
}

/// A stored card (`cards.content_enc`) as it is shown on `platform`.
pub fn stored(
    cipher: &Cipher,
    sealed: &str,
    platform: crate::chat::event::Platform,
) -> anyhow::Result<Card> {
    Ok(unseal(cipher, sealed)?.into_platform(platform))
}

/// The page a card of `purpose` about `object_ref` opens when tapped (relative to
/// `public_url`), if it has one.
pub fn link_path(purpose: &str, object_ref: Option<&str>) -> Option<String> {
    let id = object_ref?;
    // `collab::health::CARD_PURPOSE`, named here as text: cards do not depend on collab.
    // The weekly report's object is its Monday.
    if purpose == "collab.health" {
        return Some(format!("/collab/health?week={id}"));
    }
    // `verification::attest::PURPOSE`: the superior opens the proof the rep attached.
    if purpose == "attestation" {
        return Some(format!("/web/attestations/{id}/proof"));
    }
    // `approvals::REQUEST_CARD`: the approver opens the request to decide it.
    if purpose == "access.request" {
        return Some(format!("/web/access-requests/{id}"));
    }
    purpose
        .starts_with(DEFERRED_UPDATE_PREFIX)
        .then(|| format!("/collab/requests/{id}"))
}

/// The key a button click carries back: the action and the card it belongs to.
pub fn button_key(action: &str, card_id: &str) -> String {
    format!("{action}:{card_id}")
}

/// Splits a clicked key into (action, card id).
pub fn parse_button_key(key: &str) -> Option<(&str, &str)> {
    key.split_once(':')
        .filter(|(a, c)| !a.is_empty() && !c.is_empty())
}

/// Queues a card for `recipient` inside the caller's transaction; the card exists and will
/// be delivered if and only if the transaction commits. Returns the card id.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    recipient_user_id: &str,
    purpose: &str,
    object_ref: Option<&str>,
    card: &Card,
) -> Result<String> {
    card.check()?;
    let id = new_id();
    sqlx::query(
        "INSERT INTO cards (id, org_id, recipient_user_id, purpose, object_ref, content_enc, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(recipient_user_id)
    .bind(purpose)
    .bind(object_ref)
    .bind(seal(cipher, card)?)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    jobs::enqueue(
        tx,
        now_ms,
        NewJob::new(DELIVER, serde_json::json!({"card_id": id}))
            .org(org_id)
            // One person's cards go out one at a time, in order: they read them in
            // sequence, and per-person rate limits can be counted exactly.
            .ordered_by(format!("cards-to:{recipient_user_id}"))
            .dedupe(format!("card.deliver:{id}")),
    )
    .await?;
    Ok(id)
}

/// The job kind that updates a clicked card on its platform.
pub const UPDATE: &str = "card.update";

/// What a click did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Click {
    /// The recipient's first answer: recorded, and the card update queued.
    Recorded,
    /// A double click or a repeat: nothing changes.
    Repeat,
    /// Someone other than the recipient clicked (a forwarded card): refused.
    NotRecipient,
    UnknownCard,
}

/// Records the recipient's first click on a card, idempotently, and queues the card's
/// update in the same transaction. `response_code` is the fresh one-shot code the click
/// delivered, if the platform sends one.
#[allow(clippy::too_many_arguments)]
pub async fn record_click(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    card_id: &str,
    action: &str,
    clicker_user_id: Option<&str>,
    response_code: Option<&str>,
) -> Result<Click> {
    let row = sqlx::query(
        "SELECT recipient_user_id, content_enc, platform FROM cards WHERE id = $1 AND org_id = $2",
    )
    .bind(card_id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(Click::UnknownCard);
    };
    use sqlx::Row;
    // Buttons carry the same actions on every platform: any wording will do.
    let card = unseal(cipher, &row.get::<String, _>("content_enc"))
        .map_err(|e| Error::Internal(e.context(format!("card {card_id}"))))?;
    if !card.buttons.iter().any(|b| b.action == action) {
        return Ok(Click::UnknownCard);
    }
    let recipient: String = row.get("recipient_user_id");
    if clicker_user_id != Some(recipient.as_str()) {
        return Ok(Click::NotRecipient);
    }
    let window = crate::chat::card_update_window_ms(
        row.get::<Option<String>, _>("platform")
            .as_deref()
            .and_then(crate::chat::event::Platform::parse),
    );
    let first = sqlx::query(
        "UPDATE cards SET clicked_action = $1, clicked_by_user_id = $2, clicked_at = $3, \
         response_code = COALESCE($4, response_code), \
         response_code_expires_at = CASE WHEN $4 IS NULL THEN response_code_expires_at ELSE $5 END, updated_at = $3 \
         WHERE id = $6 AND clicked_action IS NULL",
    )
    .bind(action)
    .bind(&recipient)
    .bind(now_ms)
    .bind(response_code)
    .bind(now_ms + window)
    .bind(card_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !first {
        return Ok(Click::Repeat);
    }
    let purpose: String = sqlx::query("SELECT purpose FROM cards WHERE id = $1")
        .bind(card_id)
        .fetch_one(&mut **tx)
        .await?
        .get("purpose");
    // A collaboration card keeps its one-shot code until the request is closed, so the
    // card can then show who handled it and when.
    if !purpose.starts_with(DEFERRED_UPDATE_PREFIX) {
        enqueue_update(tx, now_ms, org_id, card_id).await?;
    }
    Ok(Click::Recorded)
}

/// A queued card as a platform's delivery needs it.
pub struct Outgoing {
    /// As the platform shows it.
    pub card: Card,
    pub recipient_user_id: String,
    /// The recipient's id on the platform.
    pub address: String,
    /// The details page (relative to `public_url`), if the card has one.
    pub link: Option<String>,
}

/// Loads card `card_id` for delivery on `platform` to the recipient's identity of the
/// platform's member kind. A recipient without one, or a card that cannot be read, fails
/// the card visibly and gives the job up.
pub async fn outgoing(
    db: &crate::db::Db,
    cipher: &Cipher,
    now_ms: i64,
    card_id: &str,
    platform: crate::chat::event::Platform,
) -> std::result::Result<Outgoing, crate::jobs::JobError> {
    use crate::jobs::JobError;
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT c.content_enc, c.recipient_user_id, c.purpose, c.object_ref, i.value AS address FROM cards c \
         LEFT JOIN user_identities i ON i.user_id = c.recipient_user_id AND i.platform = $2 AND i.kind = $3 \
         WHERE c.id = $1",
    )
    .bind(card_id)
    .bind(platform.as_str())
    .bind(platform.member_id_kind())
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| JobError::GiveUp(format!("card {card_id} does not exist")))?;
    let Some(address) = row.get::<Option<String>, _>("address") else {
        mark_failed(db, now_ms, card_id).await?;
        return Err(JobError::GiveUp(format!(
            "the recipient has no {} {}",
            platform.as_str(),
            platform.member_id_kind()
        )));
    };
    let card = stored(cipher, &row.get::<String, _>("content_enc"), platform)
        .map_err(|e| JobError::GiveUp(format!("stored card unreadable: {e}")))?;
    Ok(Outgoing {
        card,
        recipient_user_id: row.get("recipient_user_id"),
        address,
        link: link_path(
            &row.get::<String, _>("purpose"),
            row.get::<Option<String>, _>("object_ref").as_deref(),
        ),
    })
}

/// A card that cannot go out: shown as failed (its job is dead with the reason).
pub async fn mark_failed(db: &crate::db::Db, now_ms: i64, card_id: &str) -> Result<()> {
    sqlx::query("UPDATE cards SET status = 'failed', updated_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(card_id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// After a platform accepted a card: where it went, its message id there, and the one-shot
/// update code the send returned (WeCom), kept until `code_expires_at`.
pub async fn mark_sent(
    tx: &mut Tx,
    now_ms: i64,
    card_id: &str,
    platform: crate::chat::event::Platform,
    message_id: Option<&str>,
    code: Option<(&str, i64)>,
) -> Result<()> {
    sqlx::query(
        "UPDATE cards SET status = 'sent', platform = $1, platform_message_id = $2, \
         response_code = COALESCE($3, response_code), \
         response_code_expires_at = CASE WHEN $3 IS NULL THEN response_code_expires_at ELSE $4 END, \
         updated_at = $5, sent_at = $5 WHERE id = $6",
    )
    .bind(platform.as_str())
    .bind(message_id)
    .bind(code.map(|(c, _)| c))
    .bind(code.map(|(_, until)| until))
    .bind(now_ms)
    .bind(card_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// After a card's update: the one-shot code (WeCom response_code, Feishu delayed-update
/// token) is spent or no longer needed, so it is forgotten.
pub async fn spend_update_code(tx: &mut Tx, now_ms: i64, card_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE cards SET response_code = NULL, response_code_expires_at = NULL, updated_at = $1 WHERE id = $2",
    )
    .bind(now_ms)
    .bind(card_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a card shows once answered: its status text, else 「已<label of the chosen button>」.
pub fn outcome(card: &Card, action: &str, status_text: Option<String>) -> String {
    status_text.unwrap_or_else(|| {
        card.buttons
            .iter()
            .find(|b| b.action == action)
            .map_or("已处理".to_string(), |b| format!("已{}", b.label))
    })
}

/// How a button press will leave its card, for platforms that answer the press itself with
/// the updated card (Feishu within 3 s, DingTalk within 2 s). The press is already stored;
/// this only reads. Until the press is processed, a press shows its own choice; the first
/// stored press decides, and the update that follows shows that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// The key is not a closeloop button key, or the card has no such button.
    Unknown,
    /// Pressed by someone the card was not sent to: nothing changes.
    NotRecipient,
    Chosen {
        /// The card as the platform shows it.
        card: Box<Card>,
        /// The outcome line that replaces the buttons.
        label: String,
        /// An earlier press chose something else; `label` shows that.
        repeat: bool,
        /// The card's details page (relative to `public_url`), if any.
        link: Option<String>,
    },
}

pub async fn preview_click(
    db: &crate::db::Db,
    cipher: &Cipher,
    org_id: &str,
    platform: crate::chat::event::Platform,
    platform_user: &str,
    key: &str,
) -> Result<Preview> {
    use sqlx::Row;
    let Some((action, card_id)) = parse_button_key(key) else {
        return Ok(Preview::Unknown);
    };
    let row = sqlx::query(
        "SELECT content_enc, recipient_user_id, clicked_action, status_text, purpose, object_ref \
         FROM cards WHERE id = $1 AND org_id = $2",
    )
    .bind(card_id)
    .bind(org_id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Ok(Preview::Unknown);
    };
    let mut tx = db.begin().await?;
    let clicker = crate::directory::sync::user_of(&mut tx, org_id, platform, platform_user).await?;
    tx.rollback().await?;
    if clicker.as_deref() != Some(row.get::<String, _>("recipient_user_id").as_str()) {
        return Ok(Preview::NotRecipient);
    }
    let card = stored(cipher, &row.get::<String, _>("content_enc"), platform)
        .map_err(|e| Error::Internal(e.context(format!("card {card_id}"))))?;
    if !card.buttons.iter().any(|b| b.action == action) {
        return Ok(Preview::Unknown);
    }
    let chosen: Option<String> = row.get("clicked_action");
    let label = outcome(
        &card,
        chosen.as_deref().unwrap_or(action),
        row.get("status_text"),
    );
    let link = link_path(
        &row.get::<String, _>("purpose"),
        row.get::<Option<String>, _>("object_ref").as_deref(),
    );
    Ok(Preview::Chosen {
        repeat: chosen.as_deref().is_some_and(|c| c != action),
        card: Box::new(card),
        label,
        link,
    })
}

/// Purposes whose cards are updated when their object is done, not on the first click.
pub const DEFERRED_UPDATE_PREFIX: &str = "collab.";

async fn enqueue_update(tx: &mut Tx, now_ms: i64, org_id: &str, card_id: &str) -> Result<()> {
    jobs::enqueue(
        tx,
        now_ms,
        NewJob::new(UPDATE, serde_json::json!({"card_id": card_id}))
            .org(org_id)
            .ordered_by(format!("card:{card_id}"))
            .dedupe(format!("card.update:{card_id}")),
    )
    .await?;
    Ok(())
}

/// Replaces a clicked card's buttons with `text` (e.g. 张工 已答复 11-27 14:30), when the
/// platform still allows an update (a click left a fresh one-shot code). Returns whether
/// an update was queued.
pub async fn show_status(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    card_id: &str,
    text: &str,
) -> Result<bool> {
    let changed = sqlx::query(
        "UPDATE cards SET status_text = $1, updated_at = $2 WHERE id = $3 AND org_id = $4 \
         AND response_code IS NOT NULL AND response_code_expires_at > $2",
    )
    .bind(text)
    .bind(now_ms)
    .bind(card_id)
    .bind(org_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 1 {
        enqueue_update(tx, now_ms, org_id, card_id).await?;
    }
    Ok(changed == 1)
}

/// How long a card's update stays possible: until the request is done (a WeCom card's
/// one-shot code is kept for that), or now (the card's part is over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// An intermediate state (accepted): shown where the platform can update a card again
    /// later (DingTalk, Feishu); a WeCom card keeps its one-shot code for the outcome.
    Interim,
    /// The card's last word: shown on every platform that still lets the card change.
    Last,
}

/// Shows `text` on a delivered card in place of its buttons — clicked or not — through the
/// platform's update path, where the platform allows one: DingTalk and Feishu cards within
/// their update window, a WeCom card while it holds an unexpired one-shot code (from its
/// send or a click) and `moment` is [`Moment::Last`]. Returns whether an update was queued.
pub async fn refresh_status(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    card_id: &str,
    text: &str,
    moment: Moment,
) -> Result<bool> {
    use crate::chat::event::Platform;
    use sqlx::Row;
    let Some(row) = sqlx::query(
        "SELECT platform, sent_at, response_code, response_code_expires_at FROM cards \
         WHERE id = $1 AND org_id = $2 AND status = 'sent'",
    )
    .bind(card_id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(false);
    };
    let platform = row
        .get::<Option<String>, _>("platform")
        .as_deref()
        .and_then(Platform::parse);
    let code_live = row.get::<Option<String>, _>("response_code").is_some()
        && row
            .get::<Option<i64>, _>("response_code_expires_at")
            .is_some_and(|e| e > now_ms);
    let sent_at: Option<i64> = row.get("sent_at");
    let in_window =
        sent_at.is_some_and(|t| t + crate::chat::card_update_window_ms(platform) > now_ms);
    let allowed = match platform {
        Some(Platform::Wecom) => moment == Moment::Last && code_live,
        Some(Platform::Dingtalk | Platform::Feishu) => in_window,
        None => false,
    };
    if !allowed {
        return Ok(false);
    }
    sqlx::query("UPDATE cards SET status_text = $1, updated_at = $2 WHERE id = $3")
        .bind(text)
        .bind(now_ms)
        .bind(card_id)
        .execute(&mut **tx)
        .await?;
    // A card's changes go out in order; each new text queues its own update.
    use sha2::Digest;
    let text_key = hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8]);
    jobs::enqueue(
        tx,
        now_ms,
        NewJob::new(UPDATE, serde_json::json!({"card_id": card_id}))
            .org(org_id)
            .ordered_by(format!("card:{card_id}"))
            .dedupe(format!("card.update:{card_id}:{text_key}")),
    )
    .await?;
    Ok(true)
}

/// Why a card could not be delivered, as `cards.failure_reason` keeps it (a code; the
/// pages say it in Chinese with [`failure_text`], never the platform's raw error).
pub fn failure_reason(error: &str) -> &'static str {
    if error.contains("has no identity") || error.contains("the recipient has no ") {
        "no_identity"
    } else if error.contains("visible range") || error.contains("errcode 81013") {
        "not_visible"
    } else if error.contains("rate limited") {
        "rate_limited"
    } else {
        "platform_refused"
    }
}

/// A failure reason in Chinese.
pub fn failure_text(reason: &str) -> &'static str {
    match reason {
        "no_identity" => "收件人未绑定可用的企业微信、钉钉或飞书账号",
        "not_visible" => "收件人不在应用的可见范围内",
        "rate_limited" => "平台持续限流，多次重试后仍未送达",
        _ => "平台拒绝或多次无法送达",
    }
}

/// A card whose delivery ended dead, as the capability that sent it hears of it.
#[derive(Debug, Clone)]
pub struct FailedCard {
    pub id: String,
    pub org_id: String,
    pub recipient_user_id: String,
    pub purpose: String,
    pub object_ref: Option<String>,
    /// See [`failure_reason`].
    pub reason: &'static str,
}

/// What a capability does when one of its cards could not be delivered (registered at
/// start-up, so cards know no capability).
pub trait Undelivered: Send + Sync + 'static {
    fn undelivered<'a>(
        &'a self,
        tx: &'a mut Tx,
        now_ms: i64,
        card: &'a FailedCard,
    ) -> jobs::BoxFuture<'a, Result<()>>;
}

/// The delivery of `card_id` ended dead with `error`: the card is marked failed with its
/// reason, in the transaction that marks the job dead. Returns the card, if it exists.
pub async fn undelivered(
    tx: &mut Tx,
    now_ms: i64,
    card_id: &str,
    error: &str,
) -> Result<Option<FailedCard>> {
    use sqlx::Row;
    let reason = failure_reason(error);
    let Some(row) = sqlx::query(
        "SELECT org_id, recipient_user_id, purpose, object_ref FROM cards WHERE id = $1",
    )
    .bind(card_id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE cards SET status = 'failed', failure_reason = $1, updated_at = $2 WHERE id = $3",
    )
    .bind(reason)
    .bind(now_ms)
    .bind(card_id)
    .execute(&mut **tx)
    .await?;
    Ok(Some(FailedCard {
        id: card_id.to_string(),
        org_id: row.get("org_id"),
        recipient_user_id: row.get("recipient_user_id"),
        purpose: row.get("purpose"),
        object_ref: row.get("object_ref"),
        reason,
    }))
}

/// After the recipient's first click: the card's purpose decides what the click does,
/// through the handler registered for it ([`Purposes`]).
pub async fn dispatch_click(
    tx: &mut Tx,
    purposes: &Purposes,
    click: &ClickContext,
    purpose: &str,
) -> Result<()> {
    let Some(handler) = purposes.get(purpose) else {
        return Ok(());
    };
    match handler.click(tx, click).await {
        // Someone else took the request, or the click is not theirs to make: the click is
        // recorded on the card and changes nothing else.
        Err(Error::Forbidden(_) | Error::Conflict(_)) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = button_key("accept", "0192-abc");
        assert_eq!(parse_button_key(&k), Some(("accept", "0192-abc")));
        assert_eq!(parse_button_key("nokey"), None);
        assert_eq!(parse_button_key(":x"), None);
    }
}
