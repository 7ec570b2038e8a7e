//! Rules as data: stages and their gates, evidence policies, verification and anti-fraud
//! thresholds, contact validity, credibility, and the sidebar's action catalog. A rule set
//! is versioned in the database (the highest version is in force), moves to and from TOML,
//! is checked before it is stored, and every import is audited. The running server picks a
//! new version up on its next use, on every replica, without a restart.

pub mod access;
pub mod candidate;
pub mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{duration, show_duration};
use crate::error::{Error, Result};

pub use store::Rules;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSet {
    /// The pipeline, first stage first. A deal enters a stage only when that stage's
    /// requirements hold; a manager may roll it back to any earlier stage.
    pub stages: Vec<Stage>,
    /// The sidebar's buttons, in display order.
    pub actions: Vec<ActionDef>,
    pub verification: VerificationRules,
    /// Which evidence counts, per platform (`wecom`, `dingtalk`, `feishu`) and for points
    /// recorded without one (`default`).
    pub evidence: BTreeMap<String, EvidencePolicy>,
    pub antifraud: AntifraudRules,
    pub contacts: ContactRules,
    pub credibility: CredibilityRules,
    /// Lead source channels and their weight.
    pub lead_channels: BTreeMap<String, f64>,
    /// Quick-asks and handoffs between roles: who answers, what must come with it, how
    /// long it may take.
    pub collaboration: Vec<CollabType>,
    /// Why a deal can end lost (输单): the reasons offered, one of which must be chosen.
    pub lost_reasons: Vec<String>,
    /// Ad-hoc anchored actions (「发起协作」): subjects to pick from, and their clocks.
    pub adhoc: AdhocRules,
    /// The roles people can hold (the built-in ones and any added here).
    pub roles: Vec<access::RoleDef>,
    /// Permission packages: what holders of which roles may do (权限包).
    pub packages: Vec<access::Package>,
    /// Permission requests: the circuit breaker and how long an approval grants access.
    pub access_requests: AccessRequestRules,
}

/// Permission requests (`src/approvals/`): more than `limit` requests by one person within
/// `window` pause that person's requests until a security officer lifts the pause; an
/// approved request grants access for the duration of its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessRequestRules {
    /// Requests one person may make within `window` (0 turns the breaker off).
    pub limit: u32,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub window: Duration,
    /// How long an approved field reveal lasts.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub field_grant: Duration,
    /// How long an approved region lasts.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub region_grant: Duration,
    /// How long an approved customer lasts.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub customer_grant: Duration,
}

impl Default for AccessRequestRules {
    fn default() -> Self {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        AccessRequestRules {
            limit: 5,
            window: Duration::from_secs(3600),
            field_grant: days(7),
            region_grant: days(30),
            customer_grant: days(30),
        }
    }
}

impl AccessRequestRules {
    /// How long an approved request of `kind` (`field`, `region`, `customer`) grants access.
    pub fn grant_duration(&self, kind: &str) -> Duration {
        match kind {
            "field" => self.field_grant,
            "region" => self.region_grant,
            _ => self.customer_grant,
        }
    }
}

/// The roles a collaboration request can go to.
pub const COLLAB_ROLES: [&str; 6] = [
    "presales", "delivery", "finance", "legal", "sales", "manager",
];

/// Ad-hoc anchored actions: the initiator picks (or types) a subject, chooses the
/// responsible role and names a member holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdhocRules {
    /// The subjects offered, in order (the initiator may also type one).
    pub subjects: Vec<String>,
    /// Time to answer.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub sla: Duration,
    /// Count `sla` in working hours of the work calendar.
    pub business_hours: bool,
    /// Time to acknowledge (确认收到) before a reminder.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub ack_within: Duration,
}

impl Default for AdhocRules {
    fn default() -> Self {
        AdhocRules {
            subjects: ["合同条款修订", "付款条件调整", "发票开具", "其他"]
                .map(String::from)
                .to_vec(),
            sla: Duration::from_secs(8 * 3600),
            business_hours: true,
            ack_within: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollabKind {
    /// A templated question to a role (opened from the sidebar).
    QuickAsk,
    /// Handing a customer over to a role, with required artefacts.
    Handoff,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollabType {
    /// Stable key, e.g. `presales_question`.
    pub key: String,
    pub kind: CollabKind,
    /// The sidebar action that opens it (a `quick_ask` action's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The role that answers: `presales`, `delivery`, `finance`, `legal`.
    pub role: String,
    /// The card's title.
    pub title: String,
    /// What the initiator fills in (the request template).
    #[serde(default)]
    pub prompts: Vec<String>,
    /// Documents a handoff must carry; one missing and it is refused.
    #[serde(default)]
    pub artefacts: Vec<String>,
    /// Time to answer.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub sla: Duration,
    /// Count `sla` in working hours of the work calendar.
    #[serde(default)]
    pub business_hours: bool,
    /// Time to acknowledge (确认收到) before a reminder.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub ack_within: Duration,
    /// The answer confirms a date (delivery), which goes to the initiator's calendar.
    #[serde(default)]
    pub confirms_date: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// What must hold before a deal enters this stage.
    #[serde(default)]
    pub requires: Requirements,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Requirements {
    /// Valid communications with the customer (each one piece of evidence the platform's
    /// policy accepts).
    pub communications: u32,
    /// Proposal documents uploaded for the customer.
    pub proposals: u32,
    /// The customer has at least one phone number not flagged invalid.
    pub valid_contact: bool,
    /// Proposal documents sent to the customer as tracked links (sent, not just uploaded).
    pub proposals_sent: u32,
    /// Proposal documents the customer has opened (an open from the address the rep sent
    /// the link from does not count).
    pub proposals_opened: u32,
    /// Claimed calls verified against the platform's own record: a 公费电话 record, or a
    /// meeting record on DingTalk and Feishu (not attested, not chat).
    pub verified_calls: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// One tap records a tracking point.
    Tap,
    /// Uploads a document (the point is written with the upload).
    Upload,
    /// Opens a templated request to another role (the collaboration capability).
    QuickAsk,
}

/// What a tap claims happened, checked against evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    Call,
}

impl Claim {
    pub fn as_str(self) -> &'static str {
        match self {
            Claim::Call => "call",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDef {
    /// The action as the ledger records it and the button shows it, e.g. 已电话沟通.
    pub name: String,
    #[serde(default = "ActionDef::default_kind")]
    pub kind: ActionKind,
    /// A claim to verify (`call`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// The kind of document an upload stores (`proposal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// The role a quick-ask goes to (`presales`, `delivery`, `finance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Subject to the anti-fraud rules.
    #[serde(default = "yes")]
    pub guarded: bool,
}

fn yes() -> bool {
    true
}

impl ActionDef {
    fn default_kind() -> ActionKind {
        ActionKind::Tap
    }

    fn tap(name: &str) -> ActionDef {
        ActionDef {
            name: name.into(),
            kind: ActionKind::Tap,
            claim: None,
            document: None,
            role: None,
            guarded: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationRules {
    /// A call record counts for a claimed call when it started within this much of the
    /// tap, before or after.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub call_window: Duration,
    /// Talk time below this is `too_short`.
    pub min_call_seconds: u64,
    /// How long after the window closes records may still arrive (the poll's lag) before
    /// a claim without one is `unverified`.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub settle: Duration,
    /// Messages in one day's chat that make it a valid communication.
    pub chat_min_messages: u32,
}

impl Default for VerificationRules {
    fn default() -> Self {
        VerificationRules {
            call_window: Duration::from_secs(30 * 60),
            min_call_seconds: 180,
            settle: Duration::from_secs(15 * 60),
            chat_min_messages: 3,
        }
    }
}

/// A source of evidence for a valid communication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// Official call records (WeCom 公费电话).
    Call,
    /// Meeting records (DingTalk conferences, Feishu VC).
    Meeting,
    /// One day's chat with at least `chat_min_messages` messages.
    Chat,
    /// Proof attached by the rep and confirmed by the direct superior.
    Attested,
}

impl EvidenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Call => "call",
            EvidenceKind::Meeting => "meeting",
            EvidenceKind::Chat => "chat",
            EvidenceKind::Attested => "attested",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidencePolicy {
    pub accepts: Vec<EvidenceKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntifraudRules {
    /// The same action on the same customer more than this many times within
    /// `repeat_window` is refused and freezes the rep's actions on that customer
    /// (0 turns the rule off).
    pub repeat_limit: u32,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub repeat_window: Duration,
    /// This many records or more by one rep from one IP within `ip_burst_window` are
    /// flagged (0 turns the rule off).
    pub ip_burst_count: u32,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub ip_burst_window: Duration,
}

impl Default for AntifraudRules {
    fn default() -> Self {
        AntifraudRules {
            repeat_limit: 2,
            repeat_window: Duration::from_secs(24 * 3600),
            ip_burst_count: 3,
            ip_burst_window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactRules {
    /// Consecutive failed (zero-length) calls to a number that flag it invalid
    /// (0 turns the rule off).
    pub failed_calls_to_invalidate: u32,
}

impl Default for ContactRules {
    fn default() -> Self {
        ContactRules {
            failed_calls_to_invalidate: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredibilityRules {
    /// Below this ratio the direct superior is alerted and the rep gets a review task.
    pub threshold: f64,
    /// A ratio over fewer records than this is not judged.
    pub min_samples: u32,
}

impl Default for CredibilityRules {
    fn default() -> Self {
        CredibilityRules {
            threshold: 0.7,
            min_samples: 1,
        }
    }
}

/// The seed's defaults.
impl Default for RuleSet {
    fn default() -> Self {
        let stage = |name: &str, requires: Requirements| Stage {
            name: name.into(),
            requires,
        };
        let quick = |name: &str, role: &str| ActionDef {
            kind: ActionKind::QuickAsk,
            role: Some(role.into()),
            guarded: false,
            ..ActionDef::tap(name)
        };
        let policy = |accepts: &[EvidenceKind]| EvidencePolicy {
            accepts: accepts.to_vec(),
        };
        use EvidenceKind::*;
        RuleSet {
            stages: vec![
                stage(FIRST_STAGE, Requirements::default()),
                stage(
                    "需求确认",
                    Requirements {
                        communications: 2,
                        proposals: 1,
                        valid_contact: true,
                        ..Requirements::default()
                    },
                ),
                // A quote needs the proposal in the customer's hands, ...
                stage(
                    "方案报价",
                    Requirements {
                        valid_contact: true,
                        proposals_sent: 1,
                        ..Requirements::default()
                    },
                ),
                // ... negotiation needs the customer to have read it, ...
                stage(
                    "商务谈判",
                    Requirements {
                        valid_contact: true,
                        proposals_opened: 1,
                        ..Requirements::default()
                    },
                ),
                // ... and a win at least one call the platform's records confirm.
                stage(
                    "赢单",
                    Requirements {
                        valid_contact: true,
                        verified_calls: 1,
                        ..Requirements::default()
                    },
                ),
            ],
            actions: vec![
                ActionDef {
                    claim: Some(Claim::Call),
                    ..ActionDef::tap("已电话沟通")
                },
                ActionDef::tap("已发送样品清单"),
                ActionDef::tap("客户提出价格异议"),
                ActionDef {
                    kind: ActionKind::Upload,
                    document: Some("proposal".into()),
                    ..ActionDef::tap("上传方案")
                },
                // Proof for an attestation: a frozen rep must still be able to explain.
                ActionDef {
                    kind: ActionKind::Upload,
                    document: Some("proof".into()),
                    guarded: false,
                    ..ActionDef::tap("上传证明")
                },
                // A handoff carries several artefacts at once: not a repeatable claim.
                ActionDef {
                    kind: ActionKind::Upload,
                    document: Some("artefact".into()),
                    guarded: false,
                    ..ActionDef::tap("上传交接资料")
                },
                quick("@售前快速提问", "presales"),
                quick("@交付查排期", "delivery"),
                quick("@财务查回款", "finance"),
            ],
            verification: VerificationRules::default(),
            evidence: BTreeMap::from([
                ("wecom".into(), policy(&[Call, Chat, Attested])),
                ("dingtalk".into(), policy(&[Meeting, Chat, Attested])),
                ("feishu".into(), policy(&[Meeting, Chat, Attested])),
                ("default".into(), policy(&[Call, Meeting, Chat, Attested])),
            ]),
            antifraud: AntifraudRules::default(),
            contacts: ContactRules::default(),
            credibility: CredibilityRules::default(),
            lead_channels: BTreeMap::from([("抖音表单".into(), 1.0), ("公众号菜单".into(), 0.7)]),
            collaboration: default_collaboration(),
            lost_reasons: ["价格", "竞品", "预算取消", "需求变化", "失去联系", "其他"]
                .map(String::from)
                .to_vec(),
            adhoc: AdhocRules::default(),
            roles: access::default_roles(),
            packages: access::default_packages(),
            access_requests: AccessRequestRules::default(),
        }
    }
}

fn default_collaboration() -> Vec<CollabType> {
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let ask = |key: &str, action: &str, role: &str, title: &str, prompt: &str| CollabType {
        key: key.into(),
        kind: CollabKind::QuickAsk,
        action: Some(action.into()),
        role: role.into(),
        title: title.into(),
        prompts: vec![prompt.into()],
        artefacts: Vec::new(),
        sla: hours(4),
        business_hours: true,
        ack_within: Duration::from_secs(30 * 60),
        confirms_date: false,
    };
    vec![
        ask(
            "presales_question",
            "@售前快速提问",
            "presales",
            "售前快速提问",
            "问题",
        ),
        CollabType {
            confirms_date: true,
            ..ask(
                "delivery_schedule",
                "@交付查排期",
                "delivery",
                "交付排期查询",
                "需要交付的内容",
            )
        },
        ask(
            "finance_payment",
            "@财务查回款",
            "finance",
            "回款查询",
            "合同或订单",
        ),
        CollabType {
            key: "sales_to_presales".into(),
            kind: CollabKind::Handoff,
            action: None,
            role: "presales".into(),
            title: "销售→售前交接：方案初稿".into(),
            prompts: vec!["客户需求概述".into()],
            artefacts: vec![
                "客户需求清单".into(),
                "竞品对比表".into(),
                "预算范围确认截图".into(),
            ],
            sla: hours(4),
            business_hours: true,
            ack_within: Duration::from_secs(30 * 60),
            confirms_date: false,
        },
        // A contract to legal: one working day of the default calendar (7.5 working hours).
        CollabType {
            key: "legal_contract_review".into(),
            kind: CollabKind::Handoff,
            action: None,
            role: "legal".into(),
            title: "合同法务审核".into(),
            prompts: vec!["审核要点".into()],
            artefacts: vec!["合同文件".into()],
            sla: Duration::from_secs(15 * 1800),
            business_hours: true,
            ack_within: Duration::from_secs(60 * 60),
            confirms_date: false,
        },
    ]
}

const POLICY_KEYS: [&str; 4] = ["wecom", "dingtalk", "feishu", "default"];

impl RuleSet {
    /// Parses TOML and checks it; errors name the offending key.
    pub fn from_toml(text: &str) -> Result<RuleSet> {
        let rules: RuleSet =
            toml::from_str(text).map_err(|e| Error::invalid(format!("rule set: {e}")))?;
        rules.check()?;
        Ok(rules)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a rule set always serialises")
    }

    /// Everything that must hold before a rule set may be put in force.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("rule set: {m}")));
        if self.stages.len() < 2 {
            return bad("`stages` needs at least two stages".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.stages {
            if s.name.trim().is_empty() || s.name.chars().count() > 32 {
                return bad("every stage needs a name of 1 to 32 characters".into());
            }
            if !names.insert(s.name.as_str()) {
                return bad(format!("stage `{}` appears twice", s.name));
            }
        }
        if self.stages[0].requires != Requirements::default() {
            return bad(format!(
                "the first stage `{}` cannot have requirements: deals start there",
                self.stages[0].name
            ));
        }
        let mut actions = std::collections::BTreeSet::new();
        for a in &self.actions {
            if a.name.trim().is_empty() || a.name.chars().count() > 32 {
                return bad("every action needs a name of 1 to 32 characters".into());
            }
            // The ledger refuses such names, so a catalog holding one could never be tapped.
            if a.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(format!(
                    "action `{}`: names must not contain spaces or control characters",
                    a.name.escape_debug()
                ));
            }
            if is_reserved(&a.name) {
                return bad(format!(
                    "action `{}`: names starting with {} are reserved",
                    a.name,
                    RESERVED_PREFIXES.join(", ")
                ));
            }
            if !actions.insert(a.name.as_str()) {
                return bad(format!("action `{}` appears twice", a.name));
            }
            match a.kind {
                ActionKind::Upload if a.document.is_none() => {
                    return bad(format!(
                        "upload action `{}` needs `document` (e.g. \"proposal\")",
                        a.name
                    ))
                }
                ActionKind::QuickAsk if a.role.is_none() => {
                    return bad(format!(
                        "quick-ask action `{}` needs `role` (presales, delivery or finance)",
                        a.name
                    ))
                }
                _ => {}
            }
            if a.claim.is_some() && a.kind != ActionKind::Tap {
                return bad(format!("only a tap can claim something (`{}`)", a.name));
            }
        }
        let needs_proposals = self.stages.iter().any(|s| {
            let r = &s.requires;
            r.proposals > 0 || r.proposals_sent > 0 || r.proposals_opened > 0
        });
        let uploads_proposals = self
            .actions
            .iter()
            .any(|a| a.document.as_deref() == Some("proposal"));
        if needs_proposals && !uploads_proposals {
            return bad(
                "a stage requires proposals but no action uploads a `proposal` document".into(),
            );
        }
        for (k, p) in &self.evidence {
            if !POLICY_KEYS.contains(&k.as_str()) {
                return bad(format!(
                    "`evidence.{k}`: the keys are wecom, dingtalk, feishu and default"
                ));
            }
            if p.accepts.is_empty() {
                return bad(format!(
                    "`evidence.{k}.accepts` is empty: a team on it could never pass a gate"
                ));
            }
        }
        let v = &self.verification;
        if v.call_window.is_zero() || v.call_window > Duration::from_secs(24 * 3600) {
            return bad("`verification.call_window` must be between 1s and 24h".into());
        }
        if v.settle > Duration::from_secs(24 * 3600) {
            return bad("`verification.settle` must be at most 24h".into());
        }
        let a = &self.antifraud;
        if a.repeat_limit > 0 && a.repeat_window.is_zero() {
            return bad("`antifraud.repeat_window` must be positive".into());
        }
        if a.ip_burst_count > 0 && a.ip_burst_window.is_zero() {
            return bad("`antifraud.ip_burst_window` must be positive".into());
        }
        let c = &self.credibility;
        if !(c.threshold > 0.0 && c.threshold <= 1.0) {
            return bad("`credibility.threshold` must be in (0, 1]".into());
        }
        let mut keys = std::collections::BTreeSet::new();
        for c in &self.collaboration {
            if c.key.is_empty() || !c.key.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_') {
                return bad(format!(
                    "collaboration key `{}` must be lowercase letters and underscores",
                    c.key
                ));
            }
            if !keys.insert(c.key.as_str()) {
                return bad(format!("collaboration `{}` appears twice", c.key));
            }
            if !COLLAB_ROLES.contains(&c.role.as_str()) {
                return bad(format!(
                    "collaboration `{}`: role `{}` is not presales, delivery, finance, legal, sales or manager",
                    c.key, c.role
                ));
            }
            if c.sla.is_zero() || c.ack_within.is_zero() {
                return bad(format!(
                    "collaboration `{}`: `sla` and `ack_within` must be positive",
                    c.key
                ));
            }
            if c.title.trim().is_empty() {
                return bad(format!("collaboration `{}` needs a title", c.key));
            }
            // Without an action of its own, a request is recorded under its title, and the
            // ledger refuses action names with spaces or control characters.
            if c.action.is_none()
                && c.title
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return bad(format!(
                    "collaboration `{}` has no action, so its title names its tracking points: \
                     the title must not contain spaces or control characters",
                    c.key
                ));
            }
            if let Some(a) = &c.action {
                match self.action(a) {
                    Some(d) if d.kind == ActionKind::QuickAsk => {}
                    _ => {
                        return bad(format!(
                        "collaboration `{}`: action `{a}` is not a quick_ask action of the catalog",
                        c.key
                    ))
                    }
                }
            }
        }
        if self.lost_reasons.is_empty() {
            return bad("`lost_reasons` is empty: a deal could never end lost".into());
        }
        let mut reasons = std::collections::BTreeSet::new();
        for r in &self.lost_reasons {
            if r.trim().is_empty() || r.chars().count() > 32 || r.chars().any(char::is_control) {
                return bad(
                    "every entry of `lost_reasons` needs 1 to 32 characters, no control characters"
                        .into(),
                );
            }
            if !reasons.insert(r.as_str()) {
                return bad(format!("lost reason `{r}` appears twice"));
            }
        }
        let a = &self.adhoc;
        if a.sla.is_zero() || a.ack_within.is_zero() {
            return bad("`adhoc.sla` and `adhoc.ack_within` must be positive".into());
        }
        let mut subjects = std::collections::BTreeSet::new();
        for s in &a.subjects {
            if s.trim().is_empty() || s.chars().count() > 32 || s.chars().any(|c| c.is_control()) {
                return bad(format!(
                    "`adhoc.subjects`: `{}` must be 1 to 32 characters without control characters",
                    s.escape_debug()
                ));
            }
            if !subjects.insert(s.as_str()) {
                return bad(format!("`adhoc.subjects`: `{s}` appears twice"));
            }
        }
        for (k, w) in &self.lead_channels {
            if !(0.0..=10.0).contains(w) {
                return bad(format!("`lead_channels.{k}` must be between 0 and 10"));
            }
        }
        access::check(&self.roles, &self.packages).or_else(bad)?;
        let r = &self.access_requests;
        if r.limit > 0 && r.window.is_zero() {
            return bad("`access_requests.window` must be positive".into());
        }
        if [r.field_grant, r.region_grant, r.customer_grant]
            .iter()
            .any(Duration::is_zero)
        {
            return bad(
                "`access_requests.field_grant`, `region_grant` and `customer_grant` must be positive"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether `key` is one of the roles people can hold.
    pub fn has_role(&self, key: &str) -> bool {
        self.roles.iter().any(|r| r.key == key)
    }

    /// The role's label, or the key itself for a role no longer in the set.
    pub fn role_label<'a>(&'a self, key: &'a str) -> &'a str {
        self.roles
            .iter()
            .find(|r| r.key == key)
            .map_or(key, |r| r.label.as_str())
    }

    pub fn collab(&self, key: &str) -> Option<&CollabType> {
        self.collaboration.iter().find(|c| c.key == key)
    }

    /// The collaboration type a sidebar quick-ask action opens.
    pub fn collab_for_action(&self, action: &str) -> Option<&CollabType> {
        self.collaboration
            .iter()
            .find(|c| c.action.as_deref() == Some(action))
    }

    pub fn action(&self, name: &str) -> Option<&ActionDef> {
        self.actions.iter().find(|a| a.name == name)
    }

    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// The evidence policy for points recorded on `platform` (None: through the API).
    pub fn policy(&self, platform: Option<&str>) -> &[EvidenceKind] {
        platform
            .and_then(|p| self.evidence.get(p))
            .or_else(|| self.evidence.get("default"))
            .map(|p| p.accepts.as_slice())
            .unwrap_or(&[
                EvidenceKind::Call,
                EvidenceKind::Meeting,
                EvidenceKind::Chat,
                EvidenceKind::Attested,
            ])
    }

    /// Every action name that claims `claim`.
    pub fn actions_claiming(&self, claim: Claim) -> Vec<&str> {
        self.actions
            .iter()
            .filter(|a| a.claim == Some(claim))
            .map(|a| a.name.as_str())
            .collect()
    }

    /// Every action name that uploads documents of `kind`.
    pub fn actions_uploading(&self, kind: &str) -> Vec<&str> {
        self.actions
            .iter()
            .filter(|a| a.document.as_deref() == Some(kind))
            .map(|a| a.name.as_str())
            .collect()
    }
}

/// The first stage of the default rule set (seed: 初步咨询 → 需求确认 → …).
pub const FIRST_STAGE: &str = "初步咨询";

/// Action prefixes closeloop writes itself (rule hits, document opens, stage moves, card clicks,
/// platform events, collaboration steps, chat days); the
/// API and the action catalog cannot use them, so nobody can fake one.
pub const RESERVED_PREFIXES: [&str; 10] = [
    "rule.",
    "system.",
    "document.",
    "stage.",
    "deal.",
    "attestation.",
    "card.",
    "platform.",
    "collab.",
    "chat.",
];

pub fn is_reserved(action: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| action.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_and_survive_toml() {
        let d = RuleSet::default();
        d.check().unwrap();
        assert_eq!(d.stages[1].name, "需求确认");
        assert_eq!(d.stages[1].requires.communications, 2);
        assert_eq!(d.stages[1].requires.proposals, 1);
        assert_eq!(d.antifraud.repeat_limit, 2);
        assert_eq!(d.verification.min_call_seconds, 180);
        let text = d.to_toml();
        assert!(text.contains("call_window = \"30m\""), "{text}");
        assert_eq!(RuleSet::from_toml(&text).unwrap(), d);
    }

    #[test]
    fn bad_rule_sets_are_refused_with_the_key() {
        let mut r = RuleSet::default();
        r.stages[0].requires.proposals = 1;
        assert!(r.check().unwrap_err().to_string().contains("first stage"));
        let mut r = RuleSet::default();
        r.actions.retain(|a| a.kind != ActionKind::Upload);
        assert!(r.check().unwrap_err().to_string().contains("proposal"));
        let mut r = RuleSet::default();
        r.evidence
            .insert("slack".into(), r.evidence["wecom"].clone());
        assert!(r
            .check()
            .unwrap_err()
            .to_string()
            .contains("evidence.slack"));
        let err = RuleSet::from_toml("[antifraud]\nrepeat_limt = 3\n").unwrap_err();
        assert!(err.to_string().contains("repeat_limt"), "{err}");
        let mut r = RuleSet::default();
        r.credibility.threshold = 1.5;
        assert!(r.check().is_err());
        let mut r = RuleSet::default();
        let c = r.collaboration.iter_mut().find(|c| c.action.is_none());
        let c = c.expect("a default collaboration type without an action");
        c.title = "售前 交接".into();
        assert!(r.check().unwrap_err().to_string().contains("title"));
        let mut r = RuleSet::default();
        r.lost_reasons.clear();
        assert!(r.check().unwrap_err().to_string().contains("lost_reasons"));
        let mut r = RuleSet::default();
        r.lost_reasons.push("价格".into());
        assert!(r.check().unwrap_err().to_string().contains("twice"));
        let mut r = RuleSet::default();
        r.actions.retain(|a| a.kind != ActionKind::Upload);
        r.stages[1].requires.proposals = 0;
        assert!(
            r.check().unwrap_err().to_string().contains("proposal"),
            "a sent-proposal gate needs a way to upload one"
        );
        let mut r = RuleSet::default();
        r.adhoc.subjects.push("其他".into());
        assert!(r
            .check()
            .unwrap_err()
            .to_string()
            .contains("adhoc.subjects"));
        let mut r = RuleSet::default();
        r.adhoc.sla = Duration::ZERO;
        assert!(r.check().unwrap_err().to_string().contains("adhoc.sla"));
    }

    #[test]
    fn a_stored_rule_set_without_adhoc_loads_with_the_defaults() {
        let r = RuleSet::from_toml("[antifraud]\nrepeat_limit = 5\n").unwrap();
        assert_eq!(r.adhoc, AdhocRules::default());
        assert_eq!(r.adhoc.subjects[0], "合同条款修订");
        let legal = RuleSet::default();
        let legal = legal.collab("legal_contract_review").unwrap();
        assert_eq!(legal.role, "legal");
        assert_eq!(legal.artefacts, vec!["合同文件".to_string()]);
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let r = RuleSet::from_toml("[antifraud]\nrepeat_limit = 5\n").unwrap();
        assert_eq!(r.antifraud.repeat_limit, 5);
        assert_eq!(r.antifraud.ip_burst_count, 3);
        assert_eq!(r.stages, RuleSet::default().stages);
        assert_eq!(r.lost_reasons, RuleSet::default().lost_reasons);
    }

    #[test]
    fn stored_sets_without_the_new_fields_still_load() {
        let r = RuleSet::from_toml(
            "[[stages]]\nname = \"初步咨询\"\n[[stages]]\nname = \"赢单\"\n[stages.requires]\nvalid_contact = true\n",
        )
        .unwrap();
        assert_eq!(r.stages[1].requires.proposals_sent, 0);
        assert_eq!(r.stages[1].requires.verified_calls, 0);
        assert_eq!(r.lost_reasons.len(), 6);
        let d = RuleSet::default();
        assert_eq!(d.stage_named("方案报价").requires.proposals_sent, 1);
        assert_eq!(d.stage_named("商务谈判").requires.proposals_opened, 1);
        assert_eq!(d.stage_named("赢单").requires.verified_calls, 1);
    }

    impl RuleSet {
        fn stage_named(&self, name: &str) -> &Stage {
            self.stages.iter().find(|s| s.name == name).unwrap()
        }
    }
}
