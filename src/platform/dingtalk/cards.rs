//! Cards on DingTalk (docs/protocols/dingtalk.md#cards): a card template registered on the platform
//! (`dingtalk.card_template_id`, imported from `cards/dingtalk/`), filled from the card model
//! through `cardParamMap`, delivered with `createAndDeliver` to the recipient's robot chat,
//! and updated with `PUT /v1.0/card/instances`. The card id is the `outTrackId`; a pressed
//! button's action id is the model's action, so a click comes back as
//! `<action>:<card id>` like on every platform.

use serde_json::{json, Value};
use sqlx::Row;

use super::api::DingtalkApi;
use crate::cards::{ButtonStyle, Card, Tone};
use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::db::{Db, Tx};
use crate::jobs::{BoxFuture, ClaimedJob, Handler, JobError};

const CREATE_AND_DELIVER: &str = "/v1.0/card/instances/createAndDeliver";
const UPDATE: &str = "/v1.0/card/instances";
/// The route key closeloop's card callback URL is registered under
/// (`POST /v1.0/card/callbacks/register`).
pub const CALLBACK_ROUTE_KEY: &str = "closeloop";

/// DingTalk updates a card by its `outTrackId` and gives no one-shot code for it. A click
/// records this in the code's place, so a card answered on DingTalk can later show who
/// handled its request and when, once, like the other platforms' cards.
pub const UPDATE_BY_TRACK_ID: &str = "dingtalk:out-track-id";

/// The template's variables for a card model: every value is a string, as `cardParamMap`
/// requires. `buttons` is a JSON list the template's button group iterates over.
pub fn params(card: &Card, card_id: &str) -> Value {
    let fields: String = card
        .fields
        .iter()
        .map(|(k, v)| format!("**{k}**：{v}"))
        .collect::<Vec<_>>()
        .join("\n\n");
    let buttons: Vec<Value> = card
        .buttons
        .iter()
        .map(|b| {
            let style = match b.style {
                ButtonStyle::Primary => "blue",
                ButtonStyle::Default => "gray",
                ButtonStyle::Danger => "red",
            };
            json!({"action": b.action, "label": b.label, "style": style})
        })
        .collect();
    json!({
        "card_id": card_id,
        "title": card.title,
        "description": card.description.clone().unwrap_or_default(),
        "fields": fields,
        "buttons": Value::Array(buttons).to_string(),
        "status": "",
        "tone": match card.tone {
            Tone::Info => "info",
            Tone::Warning => "warning",
            Tone::Danger => "danger",
        },
    })
}

/// The `createAndDeliver` body: one card to one member's robot chat.
pub fn render(
    card: &Card,
    card_id: &str,
    userid: &str,
    template_id: &str,
    robot_code: &str,
) -> Value {
    json!({
        "cardTemplateId": template_id,
        "outTrackId": card_id,
        "callbackType": "HTTP",
        "callbackRouteKey": CALLBACK_ROUTE_KEY,
        "cardData": {"cardParamMap": params(card, card_id)},
        "openSpaceId": format!("dtv1.card//IM_ROBOT.{userid}"),
        "imRobotOpenSpaceModel": {"supportForward": false},
        "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT", "robotCode": robot_code},
        "userIdType": 1,
    })
}

/// Delivers queued cards through DingTalk.
pub struct DeliverCard {
    pub api: DingtalkApi,
    pub db: Db,
    pub cipher: crate::security::Cipher,
    pub clock: SharedClock,
    /// `dingtalk.card_template_id`.
    pub template_id: Option<String>,
    /// `dingtalk.card_templates`: card name → a template of its own.
    pub templates: std::collections::BTreeMap<String, String>,
    /// `dingtalk.robot_code`, or the AppKey (an internal app's robot code).
    pub robot_code: String,
}

impl DeliverCard {
    async fn deliver(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let card_id = job.payload["card_id"].as_str().unwrap_or_default();
        let crate::cards::Outgoing {
            card,
            address: userid,
            ..
        } = crate::cards::outgoing(
            &self.db,
            &self.cipher,
            self.clock.now_ms(),
            card_id,
            Platform::Dingtalk,
        )
        .await?;
        let template_id = card
            .template
            .as_ref()
            .and_then(|name| self.templates.get(name))
            .or(self.template_id.as_ref())
            .ok_or_else(|| {
                JobError::GiveUp("dingtalk.card_template_id is not configured".into())
            })?;
        let answer = self
            .api
            .call(
                reqwest::Method::POST,
                CREATE_AND_DELIVER,
                &render(&card, card_id, &userid, template_id, &self.robot_code),
            )
            .await?;
        // The call can succeed while the card reached nobody: each space reports its own
        // `success` (and `errorMsg`). Such a card failed, visibly.
        let refused = answer["result"]["deliverResults"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .find(|r| r["success"] == false)
            .map(|r| {
                r["errorMsg"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string()
            });
        if let Some(reason) = refused {
            crate::cards::mark_failed(&self.db, self.clock.now_ms(), card_id).await?;
            return Err(JobError::GiveUp(format!(
                "DingTalk did not deliver the card: {reason}"
            )));
        }
        Ok(json!({"out_track_id": card_id}))
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
                Platform::Dingtalk,
                out["out_track_id"].as_str(),
                None,
            )
            .await?;
            Ok(())
        })
    }
}

/// After the recipient's first click: shows what was chosen and removes the buttons.
pub struct UpdateCard {
    pub api: DingtalkApi,
    pub db: Db,
    pub cipher: crate::security::Cipher,
    pub clock: SharedClock,
}

impl UpdateCard {
    async fn update(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let card_id = job.payload["card_id"].as_str().unwrap_or_default();
        let row =
            sqlx::query("SELECT content_enc, clicked_action, status_text FROM cards WHERE id = $1")
                .bind(card_id)
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or_else(|| JobError::GiveUp(format!("card {card_id} does not exist")))?;
        let card: Card = crate::cards::stored(
            &self.cipher,
            &row.get::<String, _>("content_enc"),
            Platform::Dingtalk,
        )
        .map_err(|e| JobError::GiveUp(format!("stored card unreadable: {e}")))?;
        let action = row
            .get::<Option<String>, _>("clicked_action")
            .unwrap_or_default();
        let label = crate::cards::outcome(&card, &action, row.get("status_text"));
        self.api
            .call(
                reqwest::Method::PUT,
                UPDATE,
                &json!({
                    "outTrackId": card_id,
                    "cardData": {"cardParamMap": {"status": label, "buttons": "[]"}},
                    "cardUpdateOptions": {"updateCardDataByKey": true},
                    "userIdType": 1,
                }),
            )
            .await?;
        Ok(json!({"status": label}))
    }
}

impl Handler for UpdateCard {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.update(job))
    }

    /// The card's update mark is spent (see `UPDATE_BY_TRACK_ID`).
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

/// The answer to a card button press (DingTalk waits 2 s for it,
/// docs/protocols/dingtalk.md#the-card-callback): the card's new variables when the recipient
/// pressed — the outcome shown, the buttons gone — and nothing (`{}`) otherwise, which leaves the
/// card as it is.
pub fn click_answer(preview: &crate::cards::Preview) -> Value {
    match preview {
        crate::cards::Preview::Chosen { label, .. } => json!({
            "cardData": {"cardParamMap": {"status": label, "buttons": "[]"}},
            "cardUpdateOptions": {"updateCardDataByKey": true},
        }),
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cards::Button;

    #[test]
    fn renders_template_parameters_as_strings() {
        let card = Card {
            title: "售前快速提问".into(),
            description: None,
            fields: vec![("客户".into(), "华南智造".into())],
            buttons: vec![Button {
                action: "accept".into(),
                label: "接受".into(),
                style: ButtonStyle::Primary,
            }],
            ..Default::default()
        };
        let body = render(&card, "c1", "zhanggong", "tpl.schema", "dingrobot");
        assert_eq!(body["outTrackId"], "c1");
        assert_eq!(body["openSpaceId"], "dtv1.card//IM_ROBOT.zhanggong");
        let map = body["cardData"]["cardParamMap"].as_object().unwrap();
        assert!(map.values().all(Value::is_string));
        let buttons: Value = serde_json::from_str(map["buttons"].as_str().unwrap()).unwrap();
        assert_eq!(buttons[0]["action"], "accept");
    }
}
