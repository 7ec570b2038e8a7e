//! Cards on Feishu (docs/protocols/feishu.md#cards): the card model rendered as an interactive
//! message card, sent with `im/v1/messages` (`msg_type` `interactive`) to the recipient's
//! `user_id`. Each button's `value` is `{"key": "<action>:<card id>"}`, so a `card.action.trigger`
//! names the card and the action. Cards declare `update_multi`, so after a click the message itself
//! is replaced through `PATCH im/v1/messages/:message_id` (valid for 14 days).

use serde_json::{json, Value};
use sqlx::Row;

use super::token::FeishuApi;
use crate::cards::{button_key, outcome, ButtonStyle, Card, Preview, Tone};
use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::db::{Db, Tx};
use crate::jobs::{BoxFuture, ClaimedJob, Handler, JobError};

pub const MESSAGES: &str = "/open-apis/im/v1/messages";
/// Feishu lets a message be edited for 14 days.
const PATCH_WINDOW_MS: i64 = 14 * 24 * 3600 * 1000;

/// The card JSON for `card`. `done`, once the recipient has chosen, replaces the buttons
/// with that outcome.
pub fn render(card: &Card, card_id: &str, link: Option<&str>, done: Option<&str>) -> Value {
    let mut elements = Vec::new();
    if let Some(d) = &card.description {
        elements.push(json!({"tag": "div", "text": {"tag": "plain_text", "content": d}}));
    }
    if !card.fields.is_empty() {
        let fields: Vec<Value> = card
            .fields
            .iter()
            .map(|(k, v)| {
                json!({"is_short": true,
                       "text": {"tag": "lark_md", "content": format!("**{}**\n{}", md(k), md(v))}})
            })
            .collect();
        elements.push(json!({"tag": "div", "fields": fields}));
    }
    match done {
        Some(outcome) => {
            elements.push(
                json!({"tag": "note", "elements": [{"tag": "plain_text", "content": outcome}]}),
            );
        }
        None if !card.buttons.is_empty() => {
            let actions: Vec<Value> = card
                .buttons
                .iter()
                .map(|b| {
                    let kind = match b.style {
                        ButtonStyle::Primary => "primary",
                        ButtonStyle::Default => "default",
                        ButtonStyle::Danger => "danger",
                    };
                    json!({"tag": "button", "text": {"tag": "plain_text", "content": b.label},
                           "type": kind, "value": {"key": button_key(&b.action, card_id)}})
                })
                .collect();
            elements.push(json!({"tag": "action", "actions": actions}));
        }
        None => {}
    }
    let mut out = json!({
        "config": {"wide_screen_mode": true, "update_multi": true},
        "header": {"title": {"tag": "plain_text", "content": card.title},
                   "template": match (done, card.tone) {
                       (Some(_), _) => "grey",
                       (None, Tone::Info) => "blue",
                       (None, Tone::Warning) => "orange",
                       (None, Tone::Danger) => "red",
                   }},
        "elements": elements,
    });
    if let Some(url) = link {
        out["card_link"] = json!({"url": url});
    }
    out
}

/// lark_md treats `*`, `_`, `~` and `[` specially; user text is shown as written.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '_' | '~' | '[' | ']' | '`' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The answer to a button press, within Feishu's 3 s
/// (docs/protocols/feishu.md#the-card-callback-cardactiontrigger): a toast and the card as it looks
/// once the press is processed — buttons gone, the outcome shown. A press by someone other than the
/// recipient, or on a card closeloop does not know, gets a toast and leaves the card as it is.
pub async fn click_answer(
    db: &Db,
    cipher: &crate::security::Cipher,
    org_id: &str,
    public_url: &str,
    click: &super::inbound::Click,
) -> crate::error::Result<Value> {
    let toast = |kind: &str, text: &str| json!({"toast": {"type": kind, "content": text}});
    let preview = crate::cards::preview_click(
        db,
        cipher,
        org_id,
        Platform::Feishu,
        &click.user,
        &click.key,
    )
    .await?;
    Ok(match preview {
        Preview::Unknown => toast("error", "卡片已失效"),
        Preview::NotRecipient => toast("warning", "这张卡片不是发给您的，操作未记录"),
        Preview::Chosen {
            card,
            label,
            repeat,
            link,
        } => {
            let card_id = crate::cards::parse_button_key(&click.key)
                .map(|(_, id)| id)
                .unwrap_or_default();
            let link = link.map(|p| format!("{}{p}", public_url.trim_end_matches('/')));
            let mut answer = if repeat {
                toast("info", &format!("您已选择过：{label}"))
            } else {
                toast("success", &label)
            };
            answer["card"] = json!({"type": "raw",
                                    "data": render(&card, card_id, link.as_deref(), Some(&label))});
            answer
        }
    })
}

/// Delivers queued cards through Feishu.
pub struct DeliverCard {
    pub api: FeishuApi,
    pub db: Db,
    pub cipher: crate::security::Cipher,
    pub clock: SharedClock,
    /// `public_url`, for the card's details link.
    pub public_url: String,
}

impl DeliverCard {
    async fn deliver(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let card_id = job.payload["card_id"].as_str().unwrap_or_default();
        let crate::cards::Outgoing {
            card,
            address: user_id,
            link,
            ..
        } = crate::cards::outgoing(
            &self.db,
            &self.cipher,
            self.clock.now_ms(),
            card_id,
            Platform::Feishu,
        )
        .await?;
        let link = link.map(|p| format!("{}{p}", self.public_url.trim_end_matches('/')));
        let content = render(&card, card_id, link.as_deref(), None).to_string();
        let answer = self
            .api
            .call_json(
                reqwest::Method::POST,
                MESSAGES,
                &[("receive_id_type", "user_id")],
                Some(
                    &json!({"receive_id": user_id, "msg_type": "interactive", "content": content}),
                ),
            )
            .await?;
        let message_id = answer["data"]["message_id"]
            .as_str()
            .ok_or_else(|| JobError::Retry("send answer without a message_id".into()))?;
        Ok(json!({ "message_id": message_id }))
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
            crate::cards::mark_sent(
                tx,
                self.clock.now_ms(),
                job.payload["card_id"].as_str().unwrap_or_default(),
                Platform::Feishu,
                out["message_id"].as_str(),
                None,
            )
            .await?;
            Ok(())
        })
    }
}

/// After the recipient's click, replaces the card (buttons gone, the outcome shown) by
/// editing the message; works for every viewer because the card declares `update_multi`.
pub struct UpdateCard {
    pub api: FeishuApi,
    pub db: Db,
    pub cipher: crate::security::Cipher,
    pub clock: SharedClock,
}

impl UpdateCard {
    async fn update(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let card_id = job.payload["card_id"].as_str().unwrap_or_default();
        let row = sqlx::query(
            "SELECT content_enc, clicked_action, status_text, platform_message_id, sent_at FROM cards WHERE id = $1",
        )
        .bind(card_id)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| JobError::GiveUp(format!("card {card_id} does not exist")))?;
        let Some(message_id) = row.get::<Option<String>, _>("platform_message_id") else {
            return Err(JobError::GiveUp("the card has no Feishu message".into()));
        };
        if row
            .get::<Option<i64>, _>("sent_at")
            .is_some_and(|t| t + PATCH_WINDOW_MS <= self.clock.now_ms())
        {
            return Err(JobError::GiveUp(
                "the card is older than 14 days: Feishu no longer lets it change".into(),
            ));
        }
        let card: Card = crate::cards::stored(
            &self.cipher,
            &row.get::<String, _>("content_enc"),
            Platform::Feishu,
        )
        .map_err(|e| JobError::GiveUp(format!("stored card unreadable: {e}")))?;
        let action = row
            .get::<Option<String>, _>("clicked_action")
            .unwrap_or_default();
        let label = outcome(&card, &action, row.get("status_text"));
        let content = render(&card, card_id, None, Some(&label)).to_string();
        self.api
            .call_json(
                reqwest::Method::PATCH,
                &format!("{MESSAGES}/{message_id}"),
                &[],
                Some(&json!({ "content": content })),
            )
            .await?;
        Ok(json!({ "outcome": label }))
    }
}

impl Handler for UpdateCard {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.update(job))
    }

    /// The click's delayed-update token is not used (the message edit needs none): forget it.
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

    fn card() -> Card {
        Card {
            title: "售前快速提问".into(),
            description: Some("李明 · 华南智造".into()),
            fields: vec![("问题".into(), "支持*私有化*部署？".into())],
            buttons: vec![
                Button {
                    action: "accept".into(),
                    label: "接受".into(),
                    style: ButtonStyle::Primary,
                },
                Button {
                    action: "reject".into(),
                    label: "退回".into(),
                    style: ButtonStyle::Danger,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn renders_an_interactive_card_with_button_keys() {
        let c = render(&card(), "card1", Some("https://cl.example.com/x"), None);
        assert_eq!(c["config"]["update_multi"], true);
        assert_eq!(c["header"]["title"]["content"], "售前快速提问");
        let actions = &c["elements"][2]["actions"];
        assert_eq!(actions[0]["value"]["key"], "accept:card1");
        assert_eq!(actions[1]["type"], "danger");
        assert_eq!(c["card_link"]["url"], "https://cl.example.com/x");
        assert!(c["elements"][1]["fields"][0]["text"]["content"]
            .as_str()
            .unwrap()
            .contains("\\*私有化\\*"));
        // The key parses back to the button the click came from.
        let key = crate::platform::feishu::events::button_key(&actions[1]["value"]).unwrap();
        assert_eq!(
            crate::cards::parse_button_key(&key),
            Some(("reject", "card1"))
        );
    }

    #[test]
    fn a_chosen_card_shows_the_outcome_instead_of_buttons() {
        let label = outcome(&card(), "accept", None);
        assert_eq!(label, "已接受");
        assert_eq!(outcome(&card(), "x", Some("已转交".into())), "已转交");
        let c = render(&card(), "card1", None, Some(&label));
        let s = c.to_string();
        assert!(!s.contains("\"button\""));
        assert!(s.contains("已接受"));
        assert_eq!(c["config"]["update_multi"], true);
    }
}
