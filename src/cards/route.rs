//! Which platform a card goes out on. Every configured platform registers its delivery
//! and update handlers here; a card is delivered on the first configured platform its
//! recipient has an identity on (a person may be linked across platforms), and updated on
//! the platform it was delivered on (`cards.platform`). Domain code never names one.

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::Row;

use crate::chat::event::Platform;
use crate::db::{Db, Tx};
use crate::jobs::{BoxFuture, ClaimedJob, Handler, JobError};

/// The `card.deliver` or `card.update` handler over every configured platform.
pub struct ByPlatform {
    pub db: Db,
    /// In order of preference.
    pub channels: Vec<(Platform, Arc<dyn Handler>)>,
    /// `true` for updates: use the platform the card was delivered on.
    pub by_card: bool,
    /// Told of each card whose delivery ended dead (deliveries only).
    pub undelivered: Option<Arc<dyn crate::cards::Undelivered>>,
}

impl ByPlatform {
    async fn choose(&self, job: &ClaimedJob) -> Result<(Platform, Arc<dyn Handler>), JobError> {
        let card = job.payload["card_id"].as_str().unwrap_or_default();
        let platforms: Vec<String> = if self.by_card {
            sqlx::query("SELECT platform FROM cards WHERE id = $1 AND platform IS NOT NULL")
                .bind(card)
                .fetch_all(&self.db.pool)
                .await?
                .iter()
                .map(|r| r.get("platform"))
                .collect()
        } else {
            sqlx::query(
                "SELECT DISTINCT i.platform FROM user_identities i JOIN cards c ON c.recipient_user_id = i.user_id \
                 WHERE c.id = $1",
            )
            .bind(card)
            .fetch_all(&self.db.pool)
            .await?
            .iter()
            .map(|r| r.get("platform"))
            .collect()
        };
        self.channels
            .iter()
            .find(|(p, _)| platforms.iter().any(|x| x == p.as_str()))
            .map(|(p, h)| (*p, h.clone()))
            .ok_or_else(|| {
                JobError::GiveUp(if self.by_card {
                    "the card was not delivered on a configured platform".into()
                } else {
                    "the recipient has no identity on a configured platform".into()
                })
            })
    }
}

impl Handler for ByPlatform {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move {
            let (platform, handler) = match self.choose(job).await {
                Ok(c) => c,
                Err(e) => {
                    if !self.by_card {
                        sqlx::query("UPDATE cards SET status = 'failed' WHERE id = $1")
                            .bind(job.payload["card_id"].as_str().unwrap_or_default())
                            .execute(&self.db.pool)
                            .await?;
                    }
                    return Err(e);
                }
            };
            let out = handler.perform(job).await?;
            Ok(json!({"platform": platform.as_str(), "out": out}))
        })
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        output: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let platform = output["platform"].as_str().unwrap_or_default();
            let Some((_, handler)) = self.channels.iter().find(|(p, _)| p.as_str() == platform)
            else {
                return Err(JobError::GiveUp(format!(
                    "platform `{platform}` is no longer configured"
                )));
            };
            handler.apply(tx, job, &output["out"]).await
        })
    }

    fn refresh_credentials<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok((_, handler)) = self.choose(job).await {
                handler.refresh_credentials(job).await;
            }
        })
    }

    /// A delivery that ended dead fails its card with the reason, and the capability that
    /// sent it hears of it; an update that ended dead leaves the card as it is.
    fn died<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        now_ms: i64,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if self.by_card {
                return Ok(());
            }
            let card_id = job.payload["card_id"].as_str().unwrap_or_default();
            let Some(failed) = crate::cards::undelivered(tx, now_ms, card_id, error).await? else {
                return Ok(());
            };
            if let Some(hook) = &self.undelivered {
                hook.undelivered(tx, now_ms, &failed).await?;
            }
            Ok(())
        })
    }

    fn retry_policy(&self) -> crate::jobs::RetryPolicy {
        self.channels
            .first()
            .map(|(_, h)| h.retry_policy())
            .unwrap_or_default()
    }
}
