//! Platform events about customers: an external contact added by a rep becomes (or finds)
//! a customer; an added or removed contact is a tracking point on the customer's timeline.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::Row;

use crate::chat::event::{EventKind, InboundEvent, Platform};
use crate::db::Tx;
use crate::error::Result;
use crate::inbox::{EventHandler, Incoming, Outcome};
use crate::jobs::{BoxFuture, JobError};
use crate::security::Cipher;
use crate::tracking::{self, ActorKind, NewPoint, Source};

/// A rep added a customer as an external contact (source `platform_event`).
pub const CONTACT_ADDED: &str = "platform.contact_added";
/// The relationship ended: the rep removed the customer, or the customer the rep.
pub const CONTACT_REMOVED: &str = "platform.contact_removed";

/// The inbox handler of `external_contact_added` and `external_contact_removed`.
pub struct ContactEvents {
    pub cipher: Cipher,
    /// Per platform: where a contact's details are read.
    pub directories: HashMap<Platform, Arc<dyn crate::chat::Directory>>,
}

/// The customer linked to a platform's external contact, if any.
pub(super) async fn customer_of(
    tx: &mut Tx,
    org_id: &str,
    platform: Platform,
    external_user_id: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query(
        "SELECT customer_id FROM customer_external_ids WHERE org_id = $1 AND platform = $2 AND external_user_id = $3",
    )
    .bind(org_id)
    .bind(platform.as_str())
    .bind(external_user_id)
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| r.get("customer_id")))
}

/// The rep as the point's actor; a rep closeloop does not know leaves the platform as the
/// actor.
fn rep_actor(rep: Option<&str>) -> ActorKind {
    match rep {
        Some(_) => ActorKind::User,
        None => ActorKind::Platform,
    }
}

impl ContactEvents {
    async fn handle(&self, tx: &mut Tx, ev: &Incoming, fetched: &Value) -> Result<Outcome> {
        match &ev.event.kind {
            EventKind::ExternalContactAdded { user_id, state, .. } => {
                let Ok(contact) = serde_json::from_value::<crate::chat::ExternalContact>(
                    fetched["external_contact"].clone(),
                ) else {
                    return Ok((
                        "ignored",
                        Some("no customer directory for this platform".into()),
                    ));
                };
                let owner =
                    crate::directory::sync::user_of(tx, &ev.org_id, ev.platform, user_id).await?;
                // The channel code (`State`) the customer came through names the lead source.
                let channel = state.as_deref().unwrap_or("企业微信添加好友");
                let link = super::ExternalLink {
                    platform: ev.platform,
                    contact: &contact,
                    owner: owner.as_deref(),
                    source_channel: channel,
                };
                let (customer, created) =
                    super::link_external(tx, &self.cipher, ev.now_ms, &ev.org_id, link).await?;
                let point = NewPoint::from_platform(
                    &ev.org_id,
                    rep_actor(owner.as_deref()),
                    owner.as_deref(),
                    Some(&customer),
                    CONTACT_ADDED,
                    Source::PlatformEvent,
                    ev.platform.as_str(),
                    &ev.dedupe_key,
                    json!({"new_customer": created}),
                );
                tracking::write_in(tx, ev.now_ms, &point, ev.tz).await?;
                Ok(if created {
                    ("processed", None)
                } else {
                    ("processed", Some("the customer was known already".into()))
                })
            }
            EventKind::ExternalContactRemoved {
                user_id,
                external_user_id,
                by_customer,
            } => {
                let Some(customer) =
                    customer_of(tx, &ev.org_id, ev.platform, external_user_id).await?
                else {
                    return Ok((
                        "ignored",
                        Some("the contact is not linked to a customer".into()),
                    ));
                };
                let rep =
                    crate::directory::sync::user_of(tx, &ev.org_id, ev.platform, user_id).await?;
                let actor_kind = if *by_customer {
                    ActorKind::Customer
                } else {
                    rep_actor(rep.as_deref())
                };
                let point = NewPoint::from_platform(
                    &ev.org_id,
                    actor_kind,
                    rep.as_deref(),
                    Some(&customer),
                    CONTACT_REMOVED,
                    Source::PlatformEvent,
                    ev.platform.as_str(),
                    &ev.dedupe_key,
                    json!({"by_customer": by_customer}),
                );
                tracking::write_in(tx, ev.now_ms, &point, ev.tz).await?;
                Ok(("processed", None))
            }
            _ => Ok(("ignored", Some("not a contact event".into()))),
        }
    }
}

impl EventHandler for ContactEvents {
    fn fetch<'a>(
        &'a self,
        _org_id: &'a str,
        platform: Platform,
        event: &'a InboundEvent,
    ) -> BoxFuture<'a, std::result::Result<Value, JobError>> {
        Box::pin(async move {
            match (&event.kind, self.directories.get(&platform)) {
                (
                    EventKind::ExternalContactAdded {
                        user_id,
                        external_user_id,
                        ..
                    },
                    Some(dir),
                ) => {
                    let contact = dir.external_contact(external_user_id, user_id).await?;
                    Ok(json!({"external_contact": contact}))
                }
                _ => Ok(Value::Null),
            }
        })
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        incoming: &'a Incoming,
        fetched: &'a Value,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.handle(tx, incoming, fetched))
    }
}
