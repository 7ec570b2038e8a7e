//! Cards on WeCom: the card model rendered as a template card — `button_interaction` when
//! it has buttons, `text_notice` when it only informs — and sent with `message/send`
//! (`docs/protocols/wecom.md`). The card id is the `task_id`, button keys
//! are `<action>:<card id>`, and WeCom's own duplicate check guards the one window where a
//! crash between the send and its record could resend.

use serde_json::{json, Value};
use sqlx::Row;

use super::api::WecomApi;
use super::token::SecretKind;
use crate::cards::{button_key, ButtonStyle, Card};
use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::db::{Db, Tx};
use crate::jobs::{BoxFuture, ClaimedJob, Handler, JobError};
use crate::text;

const SEND: &str = "/cgi-bin/message/send";
/// WeCom's response_code can update a card once, within 72 hours.
const RESPONSE_CODE_TTL_MS: i64 = 72 * 3600 * 1000;
/// WeCom accepts at most 30 messages a minute to one member; closeloop paces itself
/// rather than collect 45033s.
const PER_MEMBER_PER_MINUTE: i64 = 30;

/// Seconds in which WeCom drops a repeat of the same message.
const DUPLICATE_CHECK_INTERVAL: i64 = 1800;

/// WeCom suggests short texts (`text::WECOM_CARD`: a title of 26 characters, buttons of
/// 10…); longer ones are cut with an ellipsis rather than refused, and a description keeps
/// its closing instruction.
const LIMITS: text::CardLimits = text::WECOM_CARD;

/// The page a card without a details page of its own opens when tapped: WeCom requires a
/// tap target on `text_notice` cards (`docs/protocols/wecom.md`).
pub const START_PAGE: &str = "/collab";

/// The `message/send` body for one card to one WeCom user. A card with buttons is a
/// `button_interaction` card (its `task_id` is the card id, which every click carries
/// back); one without is a `text_notice`, which WeCom documents for cards that only
/// inform. `link` is where tapping the card opens (its details page), if it has one;
/// `start_page` is where a `text_notice` without one opens (absolute URLs both).
pub fn render(
    card: &Card,
    card_id: &str,
    to_userid: &str,
    agent_id: i64,
    link: Option<&str>,
    start_page: &str,
) -> Value {
    let mut main_title = json!({"title": text::fit(&card.title, LIMITS.title)});
    if let Some(d) = &card.description {
        main_title["desc"] = json!(text::fit_keeping_end(d, LIMITS.description));
    }
    let fields: Vec<Value> = card
        .fields
        .iter()
        .map(|(k, v)| json!({"keyname": text::fit(k, LIMITS.label), "value": text::fit(v, LIMITS.value)}))
        .collect();
    let mut template_card = json!({
        "source": {"desc": "closeloop"},
        "main_title": main_title,
        "horizontal_content_list": fields,
        "task_id": card_id,
    });
    if card.buttons.is_empty() {
        template_card["card_type"] = json!("text_notice");
        template_card["card_action"] = json!({"type": 1, "url": link.unwrap_or(start_page)});
    } else {
        let buttons: Vec<Value> = card
            .buttons
            .iter()
            .map(|b| {
                let style = match b.style {
                    ButtonStyle::Primary => 1,
                    ButtonStyle::Default => 2,
                    ButtonStyle::Danger => 3,
                };
                json!({"text": text::fit(&b.label, LIMITS.button), "style": style, "key": button_key(&b.action, card_id)})
            })
            .collect();
        template_card["card_type"] = json!("button_interaction");
        template_card["button_list"] = json!(buttons);
        if let Some(url) = link {
            template_card["card_action"] = json!({"type": 1, "url": url});
        }
    }
    json!({
        "touser": to_userid,
        "msgtype": "template_card",
        "agentid": agent_id,
        "template_card": template_card,
        "enable_duplicate_check": 1,
        "duplicate_check_interval": DUPLICATE_CHECK_INTERVAL,
    })
}

/// Delivers queued cards through WeCom.
pub struct DeliverCard {
    pub api: WecomApi,
    pub db: Db,
    pub cipher: crate::security::Cipher,
    pub clock: SharedClock,
    pub agent_id: i64,
    /// `public_url`, for the card's details link.
    pub public_url: String,
}

impl DeliverCard {
    async fn deliver(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let card_id = job.payload["card_id"].as_str().unwrap_or_default();
        let crate::cards::Outgoing {
            card,
            recipient_user_id,
            address: userid,
            link,
        } = crate::cards::outgoing(
            &self.db,
            &self.cipher,
            self.clock.now_ms(),
            card_id,
            Platform::Wecom,
        )
        .await?;
        let now = self.clock.now_ms();
        let window = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(MIN(sent_at) AS BIGINT) AS oldest FROM cards \
             WHERE recipient_user_id = $1 AND sent_at > $2",
        )
        .bind(&recipient_user_id)
        .bind(now - 60_000)
        .fetch_one(&self.db.pool)
        .await?;
        if window.get::<i64, _>("n") >= PER_MEMBER_PER_MINUTE {
            let oldest: i64 = window.get::<Option<i64>, _>("oldest").unwrap_or(now);
            return Err(JobError::RateLimited {
                retry_after: Some(std::time::Duration::from_millis(
                    (oldest + 60_000 - now).max(1000) as u64,
                )),
                message: "30 messages a minute to this member already".into(),
            });
        }
        let base = self.public_url.trim_end_matches('/');
        let response = self
            .api
            .call_json(
                SecretKind::App,
                SEND,
                &render(
                    &card,
                    card_id,
                    &userid,
                    self.agent_id,
                    link.map(|p| format!("{base}{p}")).as_deref(),
                    &format!("{base}{START_PAGE}"),
                ),
            )
            .await?;
        if response["invaliduser"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
        {
            return Err(JobError::GiveUp(
                "WeCom refused the recipient (not in the app's visible range)".into(),
            ));
        }
        Ok(json!({"msgid": response["msgid"], "response_code": response["response_code"]}))
    }
}

impl Handler for DeliverCard {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.deliver(job))
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        out: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            crate::cards::mark_sent(
                tx,
                now,
                job.payload["card_id"].as_str().unwrap_or_default(),
                Platform::Wecom,
                out["msgid"].as_str(),
                out["response_code"]
                    .as_str()
                    .map(|c| (c, now + RESPONSE_CODE_TTL_MS)),
            )
            .await?;
            Ok(())
        })
    }
}

const UPDATE: &str = "/cgi-bin/message/update_template_card";

/// After the recipient's first click, greys the buttons out with what was chosen, using
/// the click's one-shot response code (valid 72 h).
pub struct UpdateCard {
    pub api: WecomApi,
    pub db: Db,
    pub cipher: crate::security::Cipher,
    pub clock: SharedClock,
    pub agent_id: i64,
}

impl UpdateCard {
    async fn update(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let card_id = job.payload["card_id"].as_str().unwrap_or_default();
        let row = sqlx::query(
            "SELECT c.content_enc, c.clicked_action, c.status_text, c.response_code, c.response_code_expires_at, i.value AS userid \
             FROM cards c LEFT JOIN user_identities i ON i.user_id = c.recipient_user_id \
             AND i.platform = 'wecom' AND i.kind = 'userid' WHERE c.id = $1",
        )
        .bind(card_id)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| JobError::GiveUp(format!("card {card_id} does not exist")))?;
        let (Some(code), Some(userid)) = (
            row.get::<Option<String>, _>("response_code"),
            row.get::<Option<String>, _>("userid"),
        ) else {
            return Err(JobError::GiveUp(
                "no response code or recipient to update the card with".into(),
            ));
        };
        if row
            .get::<Option<i64>, _>("response_code_expires_at")
            .is_some_and(|e| e <= self.clock.now_ms())
        {
            return Err(JobError::GiveUp(
                "the card's response code expired (72 h)".into(),
            ));
        }
        let card: Card = crate::cards::stored(
            &self.cipher,
            &row.get::<String, _>("content_enc"),
            Platform::Wecom,
        )
        .map_err(|e| JobError::GiveUp(format!("stored card unreadable: {e}")))?;
        let action = row
            .get::<Option<String>, _>("clicked_action")
            .unwrap_or_default();
        let label = match row.get::<Option<String>, _>("status_text") {
            Some(text) => text,
            None => card
                .buttons
                .iter()
                .find(|b| b.action == action)
                .map_or("已处理".to_string(), |b| format!("已{}", b.label)),
        };
        self.api
            .call_json(
                SecretKind::App,
                UPDATE,
                &json!({"userids": [userid], "agentid": self.agent_id, "response_code": code,
                        "button": {"replace_name": text::fit(&label, LIMITS.button)}}),
            )
            .await?;
        Ok(json!({"replace_name": label}))
    }
}

impl Handler for UpdateCard {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.update(job))
    }

    /// The code is spent: forget it.
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        _out: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            crate::cards::spend_update_code(
                tx,
                self.clock.now_ms(),
                job.payload["card_id"].as_str().unwrap_or_default(),
            )
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cards::Button;

    #[test]
    fn renders_a_button_interaction_card() {
        let card = Card {
            title: "售前快速提问：华南智造科技有限公司的智能质检方案需要确认".into(),
            description: Some("李明 发起".into()),
            fields: vec![("客户".into(), "华南智造".into())],
            buttons: vec![Button {
                action: "accept".into(),
                label: "接受".into(),
                style: ButtonStyle::Primary,
            }],
            ..Default::default()
        };
        let start = "https://cl.example.com/collab";
        let body = render(&card, "0193-card", "zhanggong", 1_000_002, None, start);
        assert!(body["template_card"].get("card_action").is_none());
        let linked = render(
            &card,
            "0193-card",
            "zhanggong",
            1_000_002,
            Some("https://cl.example.com/collab/requests/r1"),
            start,
        );
        assert_eq!(linked["template_card"]["card_action"]["type"], 1);
        assert_eq!(body["msgtype"], "template_card");
        assert_eq!(body["enable_duplicate_check"], 1);
        let t = &body["template_card"];
        assert_eq!(t["card_type"], "button_interaction");
        assert_eq!(t["task_id"], "0193-card");
        assert_eq!(t["button_list"][0]["key"], "accept:0193-card");
        assert_eq!(
            t["main_title"]["title"].as_str().unwrap().chars().count(),
            26
        );
        assert!(t["main_title"]["title"].as_str().unwrap().ends_with('…'));
    }

    #[test]
    fn a_card_without_buttons_is_a_text_notice_that_opens_a_page() {
        let card = Card {
            title: "【提醒】是否支持私有化部署？".into(),
            fields: vec![("客户".into(), "华南智造".into())],
            ..Default::default()
        };
        let start = "https://cl.example.com/collab";
        let t = &render(&card, "c1", "zhanggong", 1, None, start)["template_card"];
        assert_eq!(t["card_type"], "text_notice");
        assert!(t.get("button_list").is_none());
        assert_eq!(t["card_action"], json!({"type": 1, "url": start}));
        let details = "https://cl.example.com/collab/requests/r1";
        let t = &render(&card, "c1", "zhanggong", 1, Some(details), start)["template_card"];
        assert_eq!(t["card_action"]["url"], details);
    }
}
