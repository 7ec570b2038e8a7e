//! What a candidate rule set would have done: the ledger since a moment is replayed in
//! memory under both the rules in force and the candidate, and every decision that comes
//! out differently is reported. Nothing is written: the replay reads inside a transaction
//! that is rolled back (and on PostgreSQL is `READ ONLY`).
//!
//! - **Anti-fraud**: the attempts of catalog actions are rebuilt from the ledger in time
//!   order — ordinary points written for a person, and the attempts the rules refused,
//!   which the ledger keeps as `rule.repeat_limit` / `rule.frozen` points naming the
//!   `attempted` action (`rule.ip_burst` points are flags, not attempts). Each rule set
//!   runs over them with the semantics of [`crate::antifraud`]. A freeze a rule set puts
//!   on a rep and customer ends when a manager actually lifted one for them
//!   (`action_freezes.lifted_at`), or never. Points before the window count as they
//!   happened (they fill the rolling windows), and freezes in force when the window
//!   opens apply to both.
//! - **Verification**: decided call claims with a talk time, against the minimum.
//! - **Gates**: every forward stage move (and every refused attempt) since then, against
//!   the evidence that existed at that moment. Contact validity is taken as of now: the
//!   ledger does not keep its history.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use crate::antifraud::{FROZEN, IP_BURST, REPEAT_LIMIT};
use crate::db::{Backend, Db};
use crate::error::Result;
use crate::rules::store::Version;
use crate::rules::RuleSet;

/// Ledger rows read per round trip.
const BATCH: i64 = 5000;
/// Never frozen past this: a freeze nobody lifted.
const FOREVER: i64 = i64::MAX;

/// How one rule set answered one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    RefusedRepeatLimit,
    RefusedFrozen,
}

impl Outcome {
    fn refused(self) -> bool {
        self != Outcome::Allowed
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "放行 allowed",
            Outcome::RefusedRepeatLimit => "拒绝 refused (repeat_limit)",
            Outcome::RefusedFrozen => "拒绝 refused (frozen)",
        }
    }
}

/// An attempt the two rule sets answer differently.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptChange {
    /// The ledger point of the attempt (the rule hit, for a refused one).
    pub point: String,
    pub at: String,
    pub rep: String,
    pub rep_name: Option<String>,
    pub customer: String,
    pub customer_name: Option<String>,
    pub action: String,
    pub in_force: Outcome,
    pub candidate: Outcome,
    /// `would_be_allowed` or `would_be_refused` under the candidate.
    pub change: &'static str,
}

/// An IP burst one rule set flags and the other does not.
#[derive(Debug, Clone, Serialize)]
pub struct BurstChange {
    /// The point whose attempt raised (or would raise) the flag.
    pub point: String,
    pub at: String,
    pub rep: String,
    pub rep_name: Option<String>,
    pub ip: String,
    pub customer: String,
    pub customer_name: Option<String>,
    pub action: String,
    /// Records by the rep from the IP in the flagging rule set's window.
    pub records_in_window: i64,
    /// `would_be_flagged` or `would_not_be_flagged` under the candidate.
    pub change: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerificationChange {
    pub point: String,
    pub at: String,
    pub rep: String,
    pub rep_name: Option<String>,
    pub customer: String,
    pub customer_name: Option<String>,
    pub duration_s: i64,
    /// `verified` or `too_short`.
    pub in_force: &'static str,
    pub candidate: &'static str,
}

/// How a rule set judges a stage move on the evidence of its moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "missing")]
pub enum GateOutcome {
    Passed,
    /// What was missing (`communications`, `proposals`, `valid_contact`).
    Refused(Vec<String>),
    /// The target stage is not in this rule set.
    UnknownStage,
}

impl GateOutcome {
    fn passed(&self) -> bool {
        *self == GateOutcome::Passed
    }

    fn label(&self) -> String {
        match self {
            GateOutcome::Passed => "通过 passed".into(),
            GateOutcome::Refused(m) => format!("拒绝 refused ({})", m.join(", ")),
            GateOutcome::UnknownStage => "无此阶段 no such stage".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GateChange {
    pub deal: String,
    pub at: String,
    /// Who moved (or tried to move) the deal, if a person did.
    pub rep: Option<String>,
    pub rep_name: Option<String>,
    pub customer: String,
    pub customer_name: Option<String>,
    pub from: Option<String>,
    pub to: String,
    /// `advance` (the deal moved) or `refused_attempt` (a `rule.gate` point).
    pub kind: &'static str,
    pub in_force: GateOutcome,
    pub candidate: GateOutcome,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub would_be_allowed: usize,
    pub would_be_refused: usize,
    pub would_be_flagged: usize,
    pub would_not_be_flagged: usize,
    pub verified_to_too_short: usize,
    pub too_short_to_verified: usize,
    pub moves_would_be_refused: usize,
    pub refused_moves_would_pass: usize,
}

impl Summary {
    pub fn total(&self) -> usize {
        self.would_be_allowed
            + self.would_be_refused
            + self.would_be_flagged
            + self.would_not_be_flagged
            + self.verified_to_too_short
            + self.too_short_to_verified
            + self.moves_would_be_refused
            + self.refused_moves_would_pass
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Replayed {
    /// Attempts of actions in either catalog, within the window.
    pub attempts: usize,
    pub call_claims: usize,
    pub stage_moves: usize,
    pub refused_stage_moves: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub in_force_version: i64,
    /// The window, in the organisation's zone.
    pub since: String,
    pub until: String,
    pub replayed: Replayed,
    pub summary: Summary,
    pub attempts: Vec<AttemptChange>,
    pub bursts: Vec<BurstChange>,
    pub verifications: Vec<VerificationChange>,
    pub stage_moves: Vec<GateChange>,
    pub notes: Vec<String>,
}

/// Replays `org_id`'s ledger from `since_ms` to `until_ms` under the version in force now
/// and under `candidate` (what `closeloop rules simulate` and the rules page run).
pub async fn against_in_force(
    db: &Db,
    org_id: &str,
    tz: chrono_tz::Tz,
    candidate: &RuleSet,
    since_ms: i64,
    until_ms: i64,
) -> Result<Report> {
    let in_force = crate::rules::Rules::new(db.clone())
        .current_version(org_id)
        .await?;
    simulate(db, org_id, tz, &in_force, candidate, since_ms, until_ms).await
}

/// Replays `org_id`'s ledger from `since_ms` to `until_ms` under the rules in force and
/// under `candidate`.
pub async fn simulate(
    db: &Db,
    org_id: &str,
    tz: chrono_tz::Tz,
    in_force: &Version,
    candidate: &RuleSet,
    since_ms: i64,
    until_ms: i64,
) -> Result<Report> {
    let current = in_force.rules.as_ref();
    let mut tx = db.pool.begin().await?;
    if db.backend == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    let conn: &mut AnyConnection = &mut tx;
    let mut replayed = Replayed::default();

    let (attempts, bursts) = replay_antifraud(
        conn,
        org_id,
        current,
        candidate,
        since_ms,
        until_ms,
        &mut replayed,
    )
    .await?;
    let verifications = replay_verifications(
        conn,
        org_id,
        current,
        candidate,
        since_ms,
        until_ms,
        &mut replayed,
    )
    .await?;
    let moves = replay_gates(
        conn,
        org_id,
        current,
        candidate,
        since_ms,
        until_ms,
        &mut replayed,
    )
    .await?;

    let mut summary = Summary::default();
    for a in &attempts {
        match a.candidate.refused() {
            false => summary.would_be_allowed += 1,
            true => summary.would_be_refused += 1,
        }
    }
    for b in &bursts {
        match b.change {
            "would_be_flagged" => summary.would_be_flagged += 1,
            _ => summary.would_not_be_flagged += 1,
        }
    }
    for v in &verifications {
        match v.candidate {
            "too_short" => summary.verified_to_too_short += 1,
            _ => summary.too_short_to_verified += 1,
        }
    }
    for g in &moves {
        match g.candidate.passed() {
            true => summary.refused_moves_would_pass += 1,
            false => summary.moves_would_be_refused += 1,
        }
    }

    let mut report = Report {
        in_force_version: in_force.version,
        since: crate::clock::in_zone(since_ms, tz),
        until: crate::clock::in_zone(until_ms, tz),
        replayed,
        summary,
        attempts,
        bursts,
        verifications,
        stage_moves: moves,
        notes: vec![
            "联系电话有效性按当前状态计 (contact validity is taken as of now)".into(),
            "窗口开始前的记录与冻结按实际发生计 (points and freezes before the window count as they happened)"
                .into(),
        ],
    };
    name_everyone(conn, org_id, &mut report, tz).await?;
    tx.rollback().await?;
    Ok(report)
}

/// One ledger row as the replay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub customer: String,
    pub ip: Option<String>,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A person's attempt of `action`; `refused`: the ledger holds it as a rule hit.
    Attempt { action: String, refused: bool },
    /// A point closeloop wrote itself (no rules screened it); it still counts.
    Written { action: String },
    /// An IP-burst flag.
    Flag,
}

impl EntryKind {
    fn action(&self) -> Option<&str> {
        match self {
            EntryKind::Attempt { action, .. } | EntryKind::Written { action } => Some(action),
            EntryKind::Flag => None,
        }
    }
}

/// What one rule set decided about one attempt in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub outcome: Outcome,
    /// Records in the burst window when this attempt raised a flag.
    pub burst: Option<i64>,
}

/// Freezes a manager lifted, per rep and customer, in time order.
pub(crate) type Lifts = HashMap<(String, String), Vec<i64>>;

/// The anti-fraud state of one rule set during a replay.
pub(crate) struct Replay<'r> {
    rules: &'r RuleSet,
    /// Points of an action by rep on customer that exist under these rules (times).
    accepted: HashMap<(String, String, String), VecDeque<i64>>,
    /// Points by rep from an IP (every kind but flags).
    records: HashMap<(String, String), VecDeque<i64>>,
    last_flag: HashMap<(String, String), i64>,
    frozen_until: HashMap<(String, String), i64>,
}

fn prune(q: &mut VecDeque<i64>, after: i64) {
    while q.front().is_some_and(|t| *t <= after) {
        q.pop_front();
    }
}

impl<'r> Replay<'r> {
    pub fn new(rules: &'r RuleSet, frozen_at_start: &HashMap<(String, String), i64>) -> Self {
        Replay {
            rules,
            accepted: HashMap::new(),
            records: HashMap::new(),
            last_flag: HashMap::new(),
            frozen_until: frozen_at_start.clone(),
        }
    }

    fn guards(&self, action: &str) -> bool {
        self.rules.action(action).is_some_and(|a| a.guarded)
    }

    /// Takes one entry in ledger order. Entries before the window (`in_window` false) are
    /// taken as they happened; attempts in it are decided by these rules.
    pub fn step(&mut self, e: &Entry, in_window: bool, lifts: &Lifts) -> Option<Decision> {
        let a = &self.rules.antifraud;
        let (action, refused_in_ledger) = match &e.kind {
            EntryKind::Flag => {
                if !in_window {
                    if let Some(ip) = &e.ip {
                        self.last_flag.insert((e.actor.clone(), ip.clone()), e.at);
                    }
                }
                return None;
            }
            EntryKind::Written { action } => (action, false),
            EntryKind::Attempt { action, refused } => (action, *refused),
        };
        let screened = in_window && matches!(e.kind, EntryKind::Attempt { .. });
        let mut decision = None;
        let mut accepted = !refused_in_ledger;
        if screened {
            let mut outcome = Outcome::Allowed;
            let mut burst = None;
            if self.guards(action) {
                let pair = (e.actor.clone(), e.customer.clone());
                if self.frozen_until.get(&pair).is_some_and(|u| e.at < *u) {
                    outcome = Outcome::RefusedFrozen;
                } else if a.repeat_limit > 0 {
                    let key = (e.actor.clone(), e.customer.clone(), action.clone());
                    let count = self.accepted.get_mut(&key).map_or(0, |q| {
                        prune(q, e.at - a.repeat_window.as_millis() as i64);
                        q.len()
                    });
                    if count >= a.repeat_limit as usize {
                        outcome = Outcome::RefusedRepeatLimit;
                        let until = lifts
                            .get(&pair)
                            .and_then(|l| l.iter().find(|t| **t > e.at).copied())
                            .unwrap_or(FOREVER);
                        self.frozen_until.insert(pair, until);
                    }
                }
                if let (Some(ip), true) = (&e.ip, a.ip_burst_count > 0) {
                    let since = e.at - a.ip_burst_window.as_millis() as i64;
                    let key = (e.actor.clone(), ip.clone());
                    let n = self.records.get_mut(&key).map_or(0, |q| {
                        prune(q, since);
                        q.len() as i64
                    }) + 1;
                    let flagged = self.last_flag.get(&key).is_some_and(|t| *t > since);
                    if n >= i64::from(a.ip_burst_count) && !flagged {
                        burst = Some(n);
                    }
                }
            }
            accepted = !outcome.refused();
            decision = Some(Decision { outcome, burst });
        }
        if accepted {
            self.accepted
                .entry((e.actor.clone(), e.customer.clone(), action.clone()))
                .or_default()
                .push_back(e.at);
        }
        if let Some(ip) = &e.ip {
            let key = (e.actor.clone(), ip.clone());
            self.records.entry(key.clone()).or_default().push_back(e.at);
            if decision.is_some_and(|d| d.burst.is_some()) {
                self.last_flag.insert(key, e.at);
            }
        }
        decision
    }
}

fn entry_from_row(r: &sqlx::any::AnyRow) -> Entry {
    let action: String = r.get("action");
    let source: String = r.get("source");
    let kind = if action == IP_BURST {
        EntryKind::Flag
    } else if action == REPEAT_LIMIT || action == FROZEN {
        let attempted = r
            .get::<Option<String>, _>("payload")
            .and_then(|p| serde_json::from_str::<Value>(&p).ok())
            .and_then(|p| p.get("attempted").and_then(Value::as_str).map(String::from));
        match attempted {
            Some(a) => EntryKind::Attempt {
                action: a,
                refused: true,
            },
            None => EntryKind::Written { action },
        }
    } else if source == "system" {
        EntryKind::Written { action }
    } else {
        EntryKind::Attempt {
            action,
            refused: false,
        }
    };
    Entry {
        id: r.get("id"),
        at: r.get("occurred_at"),
        actor: r.get("actor_user_id"),
        customer: r.get("customer_id"),
        ip: r.get("client_ip"),
        kind,
    }
}

#[allow(clippy::too_many_arguments)]
async fn replay_antifraud(
    conn: &mut AnyConnection,
    org_id: &str,
    current: &RuleSet,
    candidate: &RuleSet,
    since_ms: i64,
    until_ms: i64,
    replayed: &mut Replayed,
) -> Result<(Vec<AttemptChange>, Vec<BurstChange>)> {
    let warm_up = [current, candidate]
        .iter()
        .flat_map(|r| [r.antifraud.repeat_window, r.antifraud.ip_burst_window])
        .max()
        .unwrap_or_default()
        .as_millis() as i64;
    let start = since_ms.saturating_sub(warm_up);

    // Freezes in force when the window opens, and every lift (which ends a freeze).
    let mut frozen_at_start = HashMap::new();
    let mut lifts: Lifts = HashMap::new();
    let rows = sqlx::query(
        "SELECT user_id, customer_id, frozen_at, lifted_at FROM action_freezes WHERE org_id = $1 \
         ORDER BY frozen_at, id",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        let pair: (String, String) = (r.get("user_id"), r.get("customer_id"));
        let frozen_at: i64 = r.get("frozen_at");
        let lifted_at: Option<i64> = r.get("lifted_at");
        if frozen_at < since_ms && lifted_at.is_none_or(|l| l > since_ms) {
            frozen_at_start.insert(pair.clone(), lifted_at.unwrap_or(FOREVER));
        }
        if let Some(l) = lifted_at {
            lifts.entry(pair).or_default().push(l);
        }
    }
    for l in lifts.values_mut() {
        l.sort_unstable();
    }

    let mut a = Replay::new(current, &frozen_at_start);
    let mut b = Replay::new(candidate, &frozen_at_start);
    let mut attempts = Vec::new();
    let mut bursts = Vec::new();
    let mut cursor = (start - 1, String::new());
    loop {
        let rows = sqlx::query(
            &"SELECT id, actor_user_id, customer_id, action, occurred_at, source, client_ip, \
             CASE WHEN action = $5 OR action = $6 THEN payload ELSE NULL END AS payload \
             FROM tracking_points WHERE org_id = $1 AND occurred_at <= $4 \
             AND (occurred_at > $2 OR (occurred_at = $2 AND id > $3)) \
             AND actor_user_id IS NOT NULL AND customer_id IS NOT NULL \
             AND ((COUNTED) OR action IN ($5, $6, $8)) \
             ORDER BY occurred_at, id LIMIT $7"
                .replace("COUNTED", &crate::antifraud::counted_clause()),
        )
        .bind(org_id)
        .bind(cursor.0)
        .bind(&cursor.1)
        .bind(until_ms)
        .bind(REPEAT_LIMIT)
        .bind(FROZEN)
        .bind(BATCH)
        .bind(IP_BURST)
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            let e = entry_from_row(r);
            let in_window = e.at >= since_ms;
            let da = a.step(&e, in_window, &lifts);
            let db = b.step(&e, in_window, &lifts);
            let (Some(da), Some(db)) = (da, db) else {
                continue;
            };
            let action = e.kind.action().unwrap_or_default().to_string();
            if current.action(&action).is_some() || candidate.action(&action).is_some() {
                replayed.attempts += 1;
            }
            if da.outcome.refused() != db.outcome.refused() {
                attempts.push(AttemptChange {
                    point: e.id.clone(),
                    at: crate::clock::rfc3339(e.at),
                    rep: e.actor.clone(),
                    rep_name: None,
                    customer: e.customer.clone(),
                    customer_name: None,
                    action: action.clone(),
                    in_force: da.outcome,
                    candidate: db.outcome,
                    change: if db.outcome.refused() {
                        "would_be_refused"
                    } else {
                        "would_be_allowed"
                    },
                });
            }
            if da.burst.is_some() != db.burst.is_some() {
                bursts.push(BurstChange {
                    point: e.id.clone(),
                    at: crate::clock::rfc3339(e.at),
                    rep: e.actor.clone(),
                    rep_name: None,
                    ip: e.ip.clone().unwrap_or_default(),
                    customer: e.customer.clone(),
                    customer_name: None,
                    action,
                    records_in_window: da.burst.or(db.burst).unwrap_or_default(),
                    change: if db.burst.is_some() {
                        "would_be_flagged"
                    } else {
                        "would_not_be_flagged"
                    },
                });
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == BATCH => {
                cursor = (last.get("occurred_at"), last.get("id"));
            }
            _ => break,
        }
    }
    Ok((attempts, bursts))
}

fn call_status(duration_s: i64, rules: &RuleSet) -> &'static str {
    if duration_s >= rules.verification.min_call_seconds as i64 {
        "verified"
    } else {
        "too_short"
    }
}

async fn replay_verifications(
    conn: &mut AnyConnection,
    org_id: &str,
    current: &RuleSet,
    candidate: &RuleSet,
    since_ms: i64,
    until_ms: i64,
    replayed: &mut Replayed,
) -> Result<Vec<VerificationChange>> {
    let rows = sqlx::query(
        "SELECT point_id, actor_user_id, customer_id, occurred_at, duration_s FROM point_verifications \
         WHERE org_id = $1 AND claim = 'call' AND status IN ('verified', 'too_short') \
         AND duration_s IS NOT NULL AND occurred_at >= $2 AND occurred_at <= $3 \
         ORDER BY occurred_at, point_id",
    )
    .bind(org_id)
    .bind(since_ms)
    .bind(until_ms)
    .fetch_all(&mut *conn)
    .await?;
    replayed.call_claims = rows.len();
    let mut out = Vec::new();
    for r in &rows {
        let d: i64 = r.get("duration_s");
        let (a, b) = (call_status(d, current), call_status(d, candidate));
        if a != b {
            out.push(VerificationChange {
                point: r.get("point_id"),
                at: crate::clock::rfc3339(r.get("occurred_at")),
                rep: r.get("actor_user_id"),
                rep_name: None,
                customer: r.get("customer_id"),
                customer_name: None,
                duration_s: d,
                in_force: a,
                candidate: b,
            });
        }
    }
    Ok(out)
}

async fn judge(
    conn: &mut AnyConnection,
    rules: &RuleSet,
    customer: &str,
    to: &str,
    at: i64,
) -> Result<GateOutcome> {
    if rules.stage_index(to).is_none() {
        return Ok(GateOutcome::UnknownStage);
    }
    let evidence = crate::gates::evidence(conn, rules, customer, at).await?;
    let missing = crate::gates::missing_for(rules, to, &evidence);
    Ok(if missing.is_empty() {
        GateOutcome::Passed
    } else {
        GateOutcome::Refused(missing.iter().map(|m| m.code.to_string()).collect())
    })
}

struct Move {
    deal: String,
    at: i64,
    rep: Option<String>,
    customer: String,
    from: Option<String>,
    to: String,
    kind: &'static str,
}

async fn replay_gates(
    conn: &mut AnyConnection,
    org_id: &str,
    current: &RuleSet,
    candidate: &RuleSet,
    since_ms: i64,
    until_ms: i64,
    replayed: &mut Replayed,
) -> Result<Vec<GateChange>> {
    let mut moves = Vec::new();
    let rows = sqlx::query(
        "SELECT h.deal_id, h.at, h.actor_user_id, h.from_stage, h.to_stage, d.customer_id \
         FROM deal_stage_history h JOIN deals d ON d.id = h.deal_id \
         WHERE d.org_id = $1 AND h.kind = 'advance' AND h.from_stage IS NOT NULL \
         AND h.at >= $2 AND h.at <= $3 ORDER BY h.at, h.id",
    )
    .bind(org_id)
    .bind(since_ms)
    .bind(until_ms)
    .fetch_all(&mut *conn)
    .await?;
    replayed.stage_moves = rows.len();
    for r in &rows {
        moves.push(Move {
            deal: r.get("deal_id"),
            at: r.get("at"),
            rep: r.get("actor_user_id"),
            customer: r.get("customer_id"),
            from: r.get("from_stage"),
            to: r.get("to_stage"),
            kind: "advance",
        });
    }
    // Refused attempts: what a looser candidate would have let through.
    let rows = sqlx::query(
        "SELECT actor_user_id, customer_id, occurred_at, payload FROM tracking_points \
         WHERE org_id = $1 AND action = 'rule.gate' AND occurred_at >= $2 AND occurred_at <= $3 \
         ORDER BY occurred_at, id",
    )
    .bind(org_id)
    .bind(since_ms)
    .bind(until_ms)
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        let payload: Value =
            serde_json::from_str(&r.get::<String, _>("payload")).unwrap_or_default();
        let text = |k: &str| payload.get(k).and_then(Value::as_str).map(String::from);
        let (Some(deal), Some(to)) = (text("deal"), text("to")) else {
            continue;
        };
        replayed.refused_stage_moves += 1;
        moves.push(Move {
            deal,
            at: r.get("occurred_at"),
            rep: Some(r.get("actor_user_id")),
            customer: r.get("customer_id"),
            from: text("from"),
            to,
            kind: "refused_attempt",
        });
    }
    moves.sort_by_key(|m| m.at);
    let mut out = Vec::new();
    for m in moves {
        let a = judge(conn, current, &m.customer, &m.to, m.at).await?;
        let b = judge(conn, candidate, &m.customer, &m.to, m.at).await?;
        if a.passed() != b.passed() {
            out.push(GateChange {
                deal: m.deal,
                at: crate::clock::rfc3339(m.at),
                rep: m.rep,
                rep_name: None,
                customer: m.customer,
                customer_name: None,
                from: m.from,
                to: m.to,
                kind: m.kind,
                in_force: a,
                candidate: b,
            });
        }
    }
    Ok(out)
}

/// Fills in the names of the reps and customers the report mentions, and shows times in
/// the organisation's zone.
async fn name_everyone(
    conn: &mut AnyConnection,
    org_id: &str,
    report: &mut Report,
    tz: chrono_tz::Tz,
) -> Result<()> {
    let mut users = BTreeSet::new();
    let mut customers = BTreeSet::new();
    for a in &report.attempts {
        users.insert(a.rep.clone());
        customers.insert(a.customer.clone());
    }
    for b in &report.bursts {
        users.insert(b.rep.clone());
        customers.insert(b.customer.clone());
    }
    for v in &report.verifications {
        users.insert(v.rep.clone());
        customers.insert(v.customer.clone());
    }
    for g in &report.stage_moves {
        users.extend(g.rep.clone());
        customers.insert(g.customer.clone());
    }
    let mut names: HashMap<String, String> = HashMap::new();
    for (table, ids) in [("users", &users), ("customers", &customers)] {
        for id in ids {
            let row = sqlx::query(&format!(
                "SELECT name FROM {table} WHERE id = $1 AND org_id = $2"
            ))
            .bind(id)
            .bind(org_id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(r) = row {
                names.insert(id.clone(), r.get("name"));
            }
        }
    }
    let name = |id: &str| names.get(id).cloned();
    let local = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| crate::clock::in_zone(d.timestamp_millis(), tz))
            .unwrap_or_else(|_| t.to_string())
    };
    for a in &mut report.attempts {
        a.rep_name = name(&a.rep);
        a.customer_name = name(&a.customer);
        a.at = local(&a.at);
    }
    for b in &mut report.bursts {
        b.rep_name = name(&b.rep);
        b.customer_name = name(&b.customer);
        b.at = local(&b.at);
    }
    for v in &mut report.verifications {
        v.rep_name = name(&v.rep);
        v.customer_name = name(&v.customer);
        v.at = local(&v.at);
    }
    for g in &mut report.stage_moves {
        g.rep_name = g.rep.as_deref().and_then(name);
        g.customer_name = name(&g.customer);
        g.at = local(&g.at);
    }
    Ok(())
}

fn who(id: &str, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("{n} ({id})"),
        None => id.to_string(),
    }
}

/// The human summary: counts per category, then every difference.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        let r = &self.replayed;
        writeln!(
            f,
            "规则模拟 rule simulation: 候选规则 candidate vs 生效版本 version {} in force",
            self.in_force_version
        )?;
        writeln!(f, "区间 window: {} → {}", self.since, self.until)?;
        writeln!(
            f,
            "回放 replayed: {} 次动作尝试 attempts, {} 条通话核验 call claims, {} 次阶段推进 stage moves, {} 次被拒推进 refused moves",
            r.attempts, r.call_claims, r.stage_moves, r.refused_stage_moves
        )?;
        writeln!(f)?;
        writeln!(f, "差异 differences: {}", s.total())?;
        for (label, n) in [
            ("将被放行 would be allowed", s.would_be_allowed),
            ("将被拒绝 would be refused", s.would_be_refused),
            ("将被标记 would be flagged (IP burst)", s.would_be_flagged),
            (
                "不再标记 would not be flagged (IP burst)",
                s.would_not_be_flagged,
            ),
            ("核验 verified → too_short", s.verified_to_too_short),
            ("核验 too_short → verified", s.too_short_to_verified),
            (
                "推进将被拒绝 stage moves would be refused",
                s.moves_would_be_refused,
            ),
            (
                "被拒推进将通过 refused moves would pass",
                s.refused_moves_would_pass,
            ),
        ] {
            writeln!(f, "  {label}: {n}")?;
        }
        if !self.attempts.is_empty() {
            writeln!(f)?;
            writeln!(f, "动作尝试 attempts:")?;
            for a in &self.attempts {
                writeln!(
                    f,
                    "  {}  {}  客户 customer {}  「{}」  生效 in force: {} → 候选 candidate: {}  [{}]",
                    a.at,
                    who(&a.rep, &a.rep_name),
                    who(&a.customer, &a.customer_name),
                    a.action,
                    a.in_force.label(),
                    a.candidate.label(),
                    a.point
                )?;
            }
        }
        if !self.bursts.is_empty() {
            writeln!(f)?;
            writeln!(f, "同一 IP 集中记录 IP bursts:")?;
            for b in &self.bursts {
                let change = match b.change {
                    "would_be_flagged" => "将被标记 would be flagged",
                    _ => "不再标记 would not be flagged",
                };
                writeln!(
                    f,
                    "  {}  {}  IP {}  客户 customer {}  「{}」  {} 条 records in window: {}  [{}]",
                    b.at,
                    who(&b.rep, &b.rep_name),
                    b.ip,
                    who(&b.customer, &b.customer_name),
                    b.action,
                    b.records_in_window,
                    change,
                    b.point
                )?;
            }
        }
        if !self.verifications.is_empty() {
            writeln!(f)?;
            writeln!(f, "通话核验 call verification:")?;
            for v in &self.verifications {
                writeln!(
                    f,
                    "  {}  {}  客户 customer {}  通话 {} 秒 s  {} → {}  [{}]",
                    v.at,
                    who(&v.rep, &v.rep_name),
                    who(&v.customer, &v.customer_name),
                    v.duration_s,
                    v.in_force,
                    v.candidate,
                    v.point
                )?;
            }
        }
        if !self.stage_moves.is_empty() {
            writeln!(f)?;
            writeln!(f, "阶段推进 stage moves:")?;
            for g in &self.stage_moves {
                let rep = g
                    .rep
                    .as_deref()
                    .map(|r| who(r, &g.rep_name))
                    .unwrap_or_else(|| "-".into());
                writeln!(
                    f,
                    "  {}  {}  客户 customer {}  商机 deal {}  「{}」→「{}」 ({})  生效 in force: {} → 候选 candidate: {}",
                    g.at,
                    rep,
                    who(&g.customer, &g.customer_name),
                    g.deal,
                    g.from.as_deref().unwrap_or("-"),
                    g.to,
                    g.kind,
                    g.in_force.label(),
                    g.candidate.label()
                )?;
            }
        }
        writeln!(f)?;
        for n in &self.notes {
            writeln!(f, "注 note: {n}")?;
        }
        write!(f, "未写入任何数据 nothing was written.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn attempt(id: &str, at_s: i64, customer: &str, refused: bool) -> Entry {
        Entry {
            id: id.into(),
            at: at_s * 1000,
            actor: "rep".into(),
            customer: customer.into(),
            ip: Some("10.0.0.1".into()),
            kind: EntryKind::Attempt {
                action: "已电话沟通".into(),
                refused,
            },
        }
    }

    fn run(rules: &RuleSet, entries: &[Entry], since_s: i64, lifts: &Lifts) -> Vec<Decision> {
        let mut r = Replay::new(rules, &HashMap::new());
        entries
            .iter()
            .filter_map(|e| r.step(e, e.at >= since_s * 1000, lifts))
            .collect()
    }

    #[test]
    fn the_third_tap_is_refused_and_freezes_until_a_lift() {
        let rules = RuleSet::default();
        let hour = 3600;
        let entries = [
            attempt("1", 0, "c1", false),
            attempt("2", hour, "c1", false),
            attempt("3", 2 * hour, "c1", false),
            attempt("4", 3 * hour, "c1", false),
            attempt("5", 5 * hour, "c1", false),
            attempt("6", 5 * hour + 10, "c2", false),
        ];
        let lifts = Lifts::from([(("rep".into(), "c1".into()), vec![4 * hour * 1000])]);
        let got: Vec<Outcome> = run(&rules, &entries, 0, &lifts)
            .iter()
            .map(|d| d.outcome)
            .collect();
        assert_eq!(
            got,
            [
                Outcome::Allowed,
                Outcome::Allowed,
                Outcome::RefusedRepeatLimit,
                Outcome::RefusedFrozen,
                // Lifted at 4 h, but two taps are still within 24 h: refused and frozen again.
                Outcome::RefusedRepeatLimit,
                Outcome::Allowed,
            ]
        );
        let mut loose = RuleSet::default();
        loose.antifraud.repeat_limit = 5;
        assert!(run(&loose, &entries, 0, &lifts)
            .iter()
            .all(|d| d.outcome == Outcome::Allowed));
    }

    #[test]
    fn points_before_the_window_fill_it_as_they_happened() {
        let rules = RuleSet::default();
        let entries = [
            attempt("1", 0, "c1", false),
            attempt("2", 10, "c1", true),
            attempt("3", 100, "c1", false),
            attempt("4", 200, "c1", false),
        ];
        // "2" was refused in the ledger, so only "1" and "3" exist before "4".
        let got = run(&rules, &entries, 150, &Lifts::new());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].outcome, Outcome::RefusedRepeatLimit);
    }

    #[test]
    fn an_ip_burst_is_flagged_once_per_window() {
        let mut rules = RuleSet::default();
        rules.antifraud.repeat_limit = 0;
        let entries: Vec<Entry> = (0..5)
            .map(|i| attempt(&i.to_string(), i * 10, &format!("c{i}"), false))
            .chain([attempt("late", 200, "c9", false)])
            .collect();
        let bursts: Vec<Option<i64>> = run(&rules, &entries, 0, &Lifts::new())
            .iter()
            .map(|d| d.burst)
            .collect();
        assert_eq!(bursts, [None, None, Some(3), None, None, None]);
        rules.antifraud.ip_burst_window = Duration::from_secs(300);
        rules.antifraud.ip_burst_count = 6;
        let bursts: Vec<Option<i64>> = run(&rules, &entries, 0, &Lifts::new())
            .iter()
            .map(|d| d.burst)
            .collect();
        assert_eq!(bursts, [None, None, None, None, None, Some(6)]);
    }

    #[test]
    fn unguarded_actions_are_never_refused() {
        let mut rules = RuleSet::default();
        rules.actions[0].guarded = false;
        let entries: Vec<Entry> = (0..4)
            .map(|i| attempt(&i.to_string(), i, "c1", false))
            .collect();
        assert!(run(&rules, &entries, 0, &Lifts::new())
            .iter()
            .all(|d| d.outcome == Outcome::Allowed && d.burst.is_none()));
    }
}
