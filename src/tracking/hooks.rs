//! What the ledger writer calls around each point, registered at start-up (`app.rs`) so
//! the ledger imports none of the capabilities that act on its points: the anti-fraud
//! rules screen an attempt and act on their hits, a claimed call opens its verification,
//! and webhook subscribers get a delivery per written point. The calls are in-process and
//! run inside the point's transaction.

use std::sync::{Arc, OnceLock, RwLock};

use serde_json::{json, Value};

use super::{NewPoint, TrackingPoint};
use crate::db::Tx;
use crate::error::{Error, Result};
use crate::jobs::BoxFuture;
use crate::rules::{Claim, RuleSet};
use crate::security::Cipher;

/// The rule hit written in place of a refused attempt of a repeated action.
pub const REPEAT_LIMIT: &str = "rule.repeat_limit";
/// The rule hit written in place of an attempt on a frozen customer.
pub const FROZEN: &str = "rule.frozen";
/// The flag written next to the record that completed an IP burst.
pub const IP_BURST: &str = "rule.ip_burst";

/// What the rules say about one attempt.
#[derive(Debug, Default)]
pub struct Screen {
    pub refusal: Option<Refusal>,
    /// Records by this rep from this IP in the burst window, this one included, when
    /// that reaches the threshold and the burst has not been flagged yet.
    pub burst: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Refusal {
    /// The rule-hit action written in place of the attempt.
    pub rule: &'static str,
    pub freeze: bool,
    /// Records of this action on this customer in the window before this attempt.
    pub count: i64,
    pub limit: u32,
    pub window: String,
}

impl Refusal {
    pub fn payload(&self, attempted: &str) -> Value {
        json!({
            "attempted": attempted,
            "refused": true,
            "count_in_window": self.count,
            "limit": self.limit,
            "window": self.window,
        })
    }

    /// The refusal a rule-hit point records (for answering retries the same way).
    pub fn from_hit(p: &TrackingPoint) -> Option<Refusal> {
        let rule = match p.action.as_str() {
            REPEAT_LIMIT => REPEAT_LIMIT,
            FROZEN => FROZEN,
            _ => return None,
        };
        let num = |k: &str| p.payload.get(k).and_then(Value::as_i64).unwrap_or(0);
        Some(Refusal {
            rule,
            freeze: rule == REPEAT_LIMIT,
            count: num("count_in_window"),
            limit: num("limit") as u32,
            window: p
                .payload
                .get("window")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    pub fn error(&self) -> Error {
        match self.rule {
            REPEAT_LIMIT => Error::Refused {
                code: "repeat_limit",
                message: format!(
                    "同一客户的同类动作在{}内已记录{}次（上限{}次），本次未记录；您对该客户的操作已冻结，请联系主管解除 \
                     (the same action on this customer was already recorded {} times within {}; refused, and your actions on this customer are frozen until a manager lifts it)",
                    crate::text::durations_in(&self.window), self.count, self.limit, self.count, self.window
                ),
                details: json!({"rule": self.rule, "count_in_window": self.count, "limit": self.limit, "window": self.window, "frozen": true}),
            },
            _ => Error::Refused {
                code: "action_frozen",
                message: "您对该客户的操作已被冻结，请联系主管解除 (your actions on this customer are frozen until a manager lifts it)".into(),
                details: json!({"rule": self.rule, "frozen": true}),
            },
        }
    }
}

/// Webhook deliveries for the points of one transaction (the implementation may cache
/// the subscriber list for the batch).
pub trait Deliveries: Send {
    fn enqueue<'a>(
        &'a mut self,
        tx: &'a mut Tx,
        at: i64,
        org_id: &'a str,
        point: &'a TrackingPoint,
    ) -> BoxFuture<'a, Result<()>>;
}

/// The calls the ledger writer makes around a point.
pub trait LedgerHooks: Send + Sync + 'static {
    /// The rules' verdict on one attempt of a guarded action, before it is written.
    fn screen<'a>(
        &'a self,
        tx: &'a mut Tx,
        rules: &'a RuleSet,
        p: &'a NewPoint,
        at: i64,
    ) -> BoxFuture<'a, Result<Screen>>;

    /// A refused attempt's rule hit (`hit`) was written: act on it (a freeze).
    fn refused<'a>(
        &'a self,
        tx: &'a mut Tx,
        at: i64,
        p: &'a NewPoint,
        refusal: &'a Refusal,
        hit: &'a TrackingPoint,
    ) -> BoxFuture<'a, Result<()>>;

    /// An IP burst's flag (`flag`) was written: audit and alert.
    fn burst<'a>(
        &'a self,
        tx: &'a mut Tx,
        cipher: &'a Cipher,
        at: i64,
        p: &'a NewPoint,
        count: i64,
        flag: &'a TrackingPoint,
    ) -> BoxFuture<'a, Result<()>>;

    /// A point that claims something (a call) was written: open its verification and
    /// return the status it starts with.
    fn claimed<'a>(
        &'a self,
        tx: &'a mut Tx,
        rules: &'a RuleSet,
        point: &'a TrackingPoint,
        claim: Claim,
        at: i64,
    ) -> BoxFuture<'a, Result<String>>;

    /// Fresh delivery state for one transaction's points.
    fn deliveries(&self) -> Box<dyn Deliveries>;
}

fn registry() -> &'static RwLock<Option<Arc<dyn LedgerHooks>>> {
    static CELL: OnceLock<RwLock<Option<Arc<dyn LedgerHooks>>>> = OnceLock::new();
    CELL.get_or_init(|| RwLock::new(None))
}

/// Registers the hooks of this process (at start-up; a later call replaces them).
pub fn install(hooks: Arc<dyn LedgerHooks>) {
    *registry().write().unwrap_or_else(|e| e.into_inner()) = Some(hooks);
}

/// The registered hooks; an error before start-up registered any, so that no point is
/// written without its deliveries.
pub fn installed() -> Result<Arc<dyn LedgerHooks>> {
    registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("the ledger hooks are not installed")))
}
