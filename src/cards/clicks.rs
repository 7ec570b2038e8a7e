//! Card clicks: what a purpose does with its cards' clicks (registered at start-up by the
//! capability that sends them, so cards know no capability), and the inbox handler that
//! records each click as a tracking point in the transaction of its effect.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::Row;

use crate::chat::event::EventKind;
use crate::db::Tx;
use crate::error::Result;
use crate::inbox::{EventHandler, Incoming, Outcome};
use crate::jobs::BoxFuture;
use crate::security::Cipher;
use crate::tracking::{self, ActorKind, NewPoint, Source};

/// The tracking point of a card click (source `card`).
pub const CLICK: &str = "card.click";

/// One click, as a purpose's handler sees it.
pub struct ClickContext {
    pub now_ms: i64,
    pub org_id: String,
    /// The organisation's time zone.
    pub tz: chrono_tz::Tz,
    /// The clicked card.
    pub card: String,
    /// The card's object (a request, an attestation).
    pub object: String,
    /// The button's action key (`accept`, `confirm`, ...).
    pub action: String,
    /// The member who clicked (the card's recipient).
    pub clicker: String,
}

/// What a card purpose does with clicks on its cards.
pub trait ClickHandler: Send + Sync + 'static {
    /// The customer the card's object concerns, if any.
    fn customer<'a>(
        &'a self,
        tx: &'a mut Tx,
        org_id: &'a str,
        object: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>>;

    /// The effect of the recipient's first click. `Forbidden` and `Conflict` (someone else
    /// took the request) leave the click recorded and change nothing else.
    fn click<'a>(&'a self, tx: &'a mut Tx, click: &'a ClickContext) -> BoxFuture<'a, Result<()>>;
}

/// The click handlers, by card purpose.
#[derive(Clone, Default)]
pub struct Purposes(HashMap<&'static str, Arc<dyn ClickHandler>>);

impl Purposes {
    pub fn register(&mut self, purpose: &'static str, handler: Arc<dyn ClickHandler>) {
        self.0.insert(purpose, handler);
    }

    pub fn get(&self, purpose: &str) -> Option<&Arc<dyn ClickHandler>> {
        self.0.get(purpose)
    }
}

/// The inbox handler of `card_action` events: records the click on its card, applies the
/// recipient's first click through its purpose, and writes the click's tracking point —
/// all in the processing transaction.
pub struct CardClicks {
    pub cipher: Cipher,
    pub purposes: Purposes,
}

impl CardClicks {
    async fn handle(&self, tx: &mut Tx, ev: &Incoming) -> Result<Outcome> {
        let EventKind::CardAction {
            user_id,
            task_id,
            action_key,
            response_code,
            ..
        } = &ev.event.kind
        else {
            return Ok(("ignored", Some("not a card click".into())));
        };
        let Some((action, card)) =
            super::parse_button_key(action_key).filter(|(_, c)| c == task_id)
        else {
            return Ok((
                "ignored",
                Some("the button key is not from a closeloop card".into()),
            ));
        };
        let clicker = crate::directory::sync::user_of(tx, &ev.org_id, ev.platform, user_id).await?;
        let click = super::record_click(
            tx,
            &self.cipher,
            ev.now_ms,
            &ev.org_id,
            card,
            action,
            clicker.as_deref(),
            response_code.as_deref(),
        )
        .await?;
        if click == super::Click::UnknownCard {
            return Ok(("ignored", Some("no such card or button".into())));
        }
        let row =
            sqlx::query("SELECT purpose, object_ref FROM cards WHERE id = $1 AND org_id = $2")
                .bind(card)
                .bind(&ev.org_id)
                .fetch_one(&mut **tx)
                .await?;
        let purpose: String = row.get("purpose");
        let object: Option<String> = row.get("object_ref");
        let handler = self.purposes.get(&purpose);
        if let (super::Click::Recorded, Some(object), Some(clicker)) = (&click, &object, &clicker) {
            let context = ClickContext {
                now_ms: ev.now_ms,
                org_id: ev.org_id.clone(),
                tz: ev.tz,
                card: card.to_string(),
                object: object.clone(),
                action: action.to_string(),
                clicker: clicker.clone(),
            };
            super::dispatch_click(tx, &self.purposes, &context, &purpose).await?;
        }
        // A click by someone closeloop does not know names no actor: it stays in the inbox.
        if let Some(clicker) = &clicker {
            let customer = match (handler, &object) {
                (Some(h), Some(o)) => h.customer(tx, &ev.org_id, o).await?,
                _ => None,
            };
            let point = NewPoint::from_platform(
                &ev.org_id,
                ActorKind::User,
                Some(clicker),
                customer.as_deref(),
                CLICK,
                Source::Card,
                ev.platform.as_str(),
                &ev.dedupe_key,
                click_payload(card, &purpose, action, &click),
            );
            tracking::write_in(tx, ev.now_ms, &point, ev.tz).await?;
        }
        Ok(match click {
            super::Click::Recorded => ("processed", None),
            super::Click::Repeat => ("processed", Some("a repeat click: nothing changed".into())),
            super::Click::NotRecipient => (
                "ignored",
                Some("clicked by someone other than the recipient".into()),
            ),
            super::Click::UnknownCard => unreachable!("returned above"),
        })
    }
}

/// What a click point carries: the card, its purpose, the button, whether the card had
/// been answered already (`repeat`) and whether its recipient clicked (`recipient`).
fn click_payload(card: &str, purpose: &str, button: &str, click: &super::Click) -> Value {
    json!({
        "card": card,
        "purpose": purpose,
        "button": button,
        "repeat": *click == super::Click::Repeat,
        "recipient": *click != super::Click::NotRecipient,
    })
}

impl EventHandler for CardClicks {
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        incoming: &'a Incoming,
        _fetched: &'a Value,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.handle(tx, incoming))
    }
}
