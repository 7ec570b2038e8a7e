//! Who may see and do what: the one place that answers it, for every route, page, card
//! click and job. The packages are data (`crate::rules::access`); this module loads what a
//! person holds — their roles, region, reports and subtree — and decides.
//!
//! A customer the asker has no relation to through any package is hidden: the caller
//! answers 404, exactly as for a customer that does not exist. A customer they may see
//! but not change gives 403 with the reason (which package grants what).

pub mod authority;
pub mod explain;

pub use authority::{Authority, Grant, Managed, Who};

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::{AnyConnection, Row};

use crate::access::ApiKeyRole;
use crate::db::{Arg, Select};
use crate::error::{Error, Result};
use crate::rules::access::{Ability, Action, Package, Scope, ScopeGrant};
use crate::rules::RuleSet;

/// How long a closed collaboration request keeps its customer visible to the person who
/// answered it.
pub const AFTER_REQUEST_MS: i64 = 7 * 24 * 3600 * 1000;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A member: signed in, clicking a card, or named as `actor` by an API key (the key's
    /// own role then adds nothing).
    Person(String),
    /// An API key acting for the organisation.
    Key(ApiKeyRole),
    /// The command line and the server's own jobs.
    System,
}

/// What a package gives one subject, and why they hold it.
#[derive(Debug, Clone)]
pub struct Held {
    pub key: String,
    pub label: String,
    /// Why it applies, in Chinese: 「角色：销售代表」, 「有直属下属」, 「管理员密钥」.
    pub why: String,
    pub grants: Vec<ScopeGrant>,
    pub abilities: Vec<Ability>,
}

impl Held {
    fn from_package(p: &Package, why: String) -> Held {
        Held {
            key: p.key.clone(),
            label: p.label.clone(),
            why,
            grants: p.grants.clone(),
            abilities: p.abilities.clone(),
        }
    }

    fn synthetic(key: &str, label: &str, actions: &[Action], abilities: &[Ability]) -> Held {
        Held {
            key: key.into(),
            label: label.into(),
            why: label.into(),
            grants: vec![ScopeGrant {
                scope: Scope::All,
                actions: actions.to_vec(),
            }],
            abilities: abilities.to_vec(),
        }
    }
}

/// The asker as a member of the organisation.
#[derive(Debug, Clone, Default)]
pub struct Me {
    pub id: String,
    pub name: String,
    pub region: Option<String>,
    pub roles: Vec<String>,
    /// Direct reports.
    pub reports: HashSet<String>,
    /// Direct and indirect reports.
    pub subtree: HashSet<String>,
}

/// The outcome of one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by this package (its label).
    Allowed(String),
    /// Visible, but not this action: the reason, in Chinese.
    Refused(String),
    /// Not visible at all.
    Hidden,
}

/// A customer as the policy sees it.
#[derive(Debug, Clone)]
pub struct CustomerFacts {
    pub id: String,
    pub owner: Option<String>,
    pub region: Option<String>,
}

/// Everything one subject may do in one organisation, loaded once per request.
#[derive(Debug, Clone)]
pub struct Policy {
    pub org_id: String,
    pub subject: Subject,
    /// Present for a person who is an active member.
    pub me: Option<Me>,
    pub held: Vec<Held>,
}

impl Policy {
    /// Loads what `subject` holds under `rules`. A person who is not an active member of
    /// the organisation holds nothing.
    pub async fn load(
        conn: &mut AnyConnection,
        rules: &RuleSet,
        org_id: &str,
        subject: Subject,
    ) -> Result<Policy> {
        let mut policy = Policy {
            org_id: org_id.to_string(),
            subject: subject.clone(),
            me: None,
            held: Vec::new(),
        };
        match &subject {
            Subject::System => {
                policy.held.push(Held::synthetic(
                    "system",
                    "系统",
                    &Action::ALL,
                    &Ability::ALL,
                ));
            }
            Subject::Key(role) => policy.held.push(key_package(*role)),
            Subject::Person(id) => {
                if let Some(me) = load_me(conn, org_id, id).await? {
                    policy.held = packages_of(rules, &me);
                    // What approved permission requests grant, while they last.
                    policy.held.push(Held {
                        key: "granted".into(),
                        label: "经批准的权限申请".into(),
                        why: "权限申请获批（有期限）".into(),
                        grants: vec![ScopeGrant {
                            scope: Scope::Granted,
                            actions: vec![Action::View, Action::Note],
                        }],
                        abilities: Vec::new(),
                    });
                    policy.me = Some(me);
                }
            }
        }
        Ok(policy)
    }

    /// The policy of a key acting for the organisation, or of the system: decided by the
    /// key's role alone, without the database. A person gets an empty policy here; use
    /// [`Policy::load`].
    pub fn of_key(org_id: &str, subject: Subject) -> Policy {
        let held = match &subject {
            Subject::Key(role) => vec![key_package(*role)],
            Subject::System => vec![Held::synthetic(
                "system",
                "系统",
                &Action::ALL,
                &Ability::ALL,
            )],
            Subject::Person(_) => Vec::new(),
        };
        Policy {
            org_id: org_id.to_string(),
            subject,
            me: None,
            held,
        }
    }

    /// The person asking, when it is one.
    pub fn person(&self) -> Option<&str> {
        match &self.subject {
            Subject::Person(p) => Some(p),
            _ => None,
        }
    }

    /// Whether some package gives `ability`.
    pub fn has(&self, ability: Ability) -> bool {
        self.held.iter().any(|h| h.abilities.contains(&ability))
    }

    /// Refuses (403, with which ability is missing) unless some package gives `ability`.
    pub fn require(&self, ability: Ability) -> Result<()> {
        if self.has(ability) {
            return Ok(());
        }
        if let Subject::Key(role) = &self.subject {
            return Err(Error::Forbidden(format!(
                "an API key with role `{}` may not do this: it needs `{}`",
                role.as_str(),
                ability.as_str()
            )));
        }
        Err(Error::Forbidden(format!(
            "「{}」仅限管理员或获得相应权限包的成员：您的权限包都不包含它（角色在 {} 中设置，权限包在 管理 → 规则设置 中配置）",
            ability.label(),
            crate::access::WHERE_ROLES_ARE_SET
        )))
    }

    /// Whether any held grant uses `scope`.
    pub fn uses(&self, scope: Scope) -> bool {
        self.held
            .iter()
            .any(|h| h.grants.iter().any(|g| g.scope == scope))
    }

    /// How the person `user` relates to the asker: what a package scope would match if
    /// `user` owned a customer (their own region counts as the asker's region when both
    /// are in the same one).
    pub fn person_relations(&self, user: Option<&str>, region: Option<&str>) -> BTreeSet<Scope> {
        let mut out = BTreeSet::from([Scope::All]);
        if let Some(me) = &self.me {
            if let Some(u) = user {
                if u == me.id {
                    out.insert(Scope::Own);
                }
                if me.reports.contains(u) {
                    out.insert(Scope::Team);
                }
                if me.subtree.contains(u) {
                    out.insert(Scope::Subtree);
                }
            }
            if me.region.is_some() && me.region.as_deref() == region {
                out.insert(Scope::Region);
            }
        }
        out
    }

    /// How `customer` relates to the asker (the `assigned` scope costs a query, asked only
    /// when some package uses it).
    pub async fn relations(
        &self,
        conn: &mut AnyConnection,
        customer: &CustomerFacts,
        now_ms: i64,
    ) -> Result<BTreeSet<Scope>> {
        let mut out = self.person_relations(customer.owner.as_deref(), customer.region.as_deref());
        if let Some(me) = &self.me {
            if self.uses(Scope::Assigned) && assigned(conn, me, &customer.id, now_ms).await? {
                out.insert(Scope::Assigned);
            }
            if self.uses(Scope::Granted)
                && granted(conn, &self.org_id, me, customer, now_ms).await?
            {
                out.insert(Scope::Granted);
            }
        }
        Ok(out)
    }

    /// Decides `action` given the relations the object has to the asker.
    pub fn decide(&self, relations: &BTreeSet<Scope>, action: Action) -> Decision {
        let mut seen: Option<(&Held, &ScopeGrant)> = None;
        for h in &self.held {
            for g in &h.grants {
                if !relations.contains(&g.scope) {
                    continue;
                }
                if action == Action::View || g.actions.contains(&action) {
                    return Decision::Allowed(h.label.clone());
                }
                seen.get_or_insert((h, g));
            }
        }
        if let (Subject::Key(role), Some(_)) = (&self.subject, seen) {
            return Decision::Refused(format!(
                "an API key with role `{}` may not {} here; a key acting for a member \
                 (`X-Closeloop-Actor`) has that member's permissions",
                role.as_str(),
                action.as_str()
            ));
        }
        match seen {
            None => Decision::Hidden,
            Some((h, g)) => Decision::Refused(format!(
                "您对该客户只有「{}」的权限（来自权限包「{}」：{}），不能{}",
                g.actions
                    .iter()
                    .map(|a| a.label())
                    .collect::<Vec<_>>()
                    .join("、"),
                h.label,
                g.scope.label(),
                action.label()
            )),
        }
    }

    /// Decides `action` on the customer `id`; a customer of another organisation or none
    /// at all is [`Decision::Hidden`] like one the asker may not see.
    pub async fn customer(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<Decision> {
        let Some(facts) = customer_facts(conn, &self.org_id, id).await? else {
            return Ok(Decision::Hidden);
        };
        let relations = self.relations(conn, &facts, now_ms).await?;
        Ok(self.decide(&relations, action))
    }

    /// [`Policy::customer`] as a result: 404 when hidden, 403 with the reason when refused.
    pub async fn require_customer(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<()> {
        self.customer(conn, id, action, now_ms)
            .await?
            .into_result("customer")
    }

    /// Restricts a query of customers (columns `id`, `owner_user_id`, `region`, and the
    /// organisation already restricted) to those the asker may see.
    pub fn restrict_customers(&self, sel: &mut Select, now_ms: i64) {
        let scopes: BTreeSet<Scope> = self
            .held
            .iter()
            .flat_map(|h| h.grants.iter().map(|g| g.scope))
            .collect();
        if scopes.contains(&Scope::All) {
            return;
        }
        let Some(me) = &self.me else {
            sel.and_all("1 = 0", Vec::new());
            return;
        };
        let mut ors: Vec<String> = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        let mut owners: BTreeSet<&str> = BTreeSet::new();
        if scopes.contains(&Scope::Own) {
            owners.insert(&me.id);
        }
        if scopes.contains(&Scope::Team) {
            owners.extend(me.reports.iter().map(String::as_str));
        }
        if scopes.contains(&Scope::Subtree) {
            owners.extend(me.subtree.iter().map(String::as_str));
        }
        if !owners.is_empty() {
            ors.push(format!(
                "owner_user_id IN ({})",
                vec!["{}"; owners.len()].join(", ")
            ));
            args.extend(owners.iter().map(|o| Arg::Text(o.to_string())));
        }
        if let (true, Some(region)) = (scopes.contains(&Scope::Region), &me.region) {
            ors.push("region = {}".into());
            args.push(Arg::Text(region.clone()));
        }
        if scopes.contains(&Scope::Assigned) {
            let mut assigned = String::from(
                "(id IN (SELECT customer_id FROM customer_assignments WHERE user_id = {}) \
                 OR id IN (SELECT customer_id FROM collab_requests WHERE assignee_user_id = {} \
                 AND (closed_at IS NULL OR closed_at > {}))",
            );
            args.push(Arg::Text(me.id.clone()));
            args.push(Arg::Text(me.id.clone()));
            args.push(Arg::Int(now_ms - AFTER_REQUEST_MS));
            if !me.roles.is_empty() {
                assigned.push_str(&format!(
                    " OR id IN (SELECT customer_id FROM collab_requests WHERE assignee_user_id IS NULL \
                     AND closed_at IS NULL AND responsible_role IN ({}))",
                    vec!["{}"; me.roles.len()].join(", ")
                ));
                args.extend(me.roles.iter().map(|r| Arg::Text(r.clone())));
            }
            assigned.push(')');
            ors.push(assigned);
        }
        if scopes.contains(&Scope::Granted) {
            ors.push(
                "(id IN (SELECT target FROM access_grants WHERE org_id = {} AND user_id = {} \
                 AND kind = 'customer' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > {})) \
                 OR region IN (SELECT target FROM access_grants WHERE org_id = {} AND user_id = {} \
                 AND kind = 'region' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > {})))"
                    .into(),
            );
            for _ in 0..2 {
                args.push(Arg::Text(self.org_id.clone()));
                args.push(Arg::Text(me.id.clone()));
                args.push(Arg::Int(now_ms));
            }
        }
        if ors.is_empty() {
            sel.and_all("1 = 0", Vec::new());
        } else {
            sel.and_all(&format!("({})", ors.join(" OR ")), args);
        }
    }
}

impl Decision {
    /// 404 naming `what` when hidden, 403 with the reason when refused.
    pub fn into_result(self, what: &'static str) -> Result<()> {
        match self {
            Decision::Allowed(_) => Ok(()),
            Decision::Refused(reason) => Err(Error::Forbidden(reason)),
            Decision::Hidden => Err(Error::NotFound { what }),
        }
    }

    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }
}

/// What an API key acting for the organisation may do, by its role.
fn key_package(role: ApiKeyRole) -> Held {
    match role {
        ApiKeyRole::Admin => {
            Held::synthetic("admin_key", "管理员密钥", &Action::ALL, &Ability::ALL)
        }
        ApiKeyRole::Integration => Held::synthetic(
            "integration_key",
            "集成密钥",
            &[Action::View, Action::Note, Action::Edit],
            &[Ability::TeamReports],
        ),
        ApiKeyRole::ReadOnly => Held::synthetic(
            "read_only_key",
            "只读密钥",
            &[Action::View],
            &[Ability::TeamReports],
        ),
    }
}

/// The packages `me` holds under `rules`, with why.
pub fn packages_of(rules: &RuleSet, me: &Me) -> Vec<Held> {
    let mut out = Vec::new();
    for p in &rules.packages {
        let by_role = p.roles.iter().find(|r| me.roles.contains(r));
        let why = match by_role {
            Some(r) => format!("角色：{}", rules.role_label(r)),
            None if p.superiors && !me.reports.is_empty() => "有直属下属".to_string(),
            None if p.everyone => "全体成员".to_string(),
            None => continue,
        };
        out.push(Held::from_package(p, why));
    }
    out
}

async fn load_me(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<Option<Me>> {
    let Some(row) = sqlx::query(
        "SELECT name, region FROM users WHERE id = $1 AND org_id = $2 AND status = 'active'",
    )
    .bind(id)
    .bind(org_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let roles: Vec<String> =
        sqlx::query("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get("role"))
            .collect();
    // The organisation's reporting lines, walked down from the asker.
    let mut below: HashMap<String, Vec<String>> = HashMap::new();
    for r in sqlx::query(
        "SELECT s.user_id, s.superior_id FROM user_superiors s JOIN users u ON u.id = s.user_id \
         WHERE u.org_id = $1",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?
    {
        below
            .entry(r.get("superior_id"))
            .or_default()
            .push(r.get("user_id"));
    }
    let reports: HashSet<String> = below
        .get(id)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut subtree: HashSet<String> = HashSet::new();
    let mut todo: Vec<String> = reports.iter().cloned().collect();
    while let Some(u) = todo.pop() {
        if u == id || !subtree.insert(u.clone()) {
            continue;
        }
        todo.extend(below.get(&u).cloned().unwrap_or_default());
    }
    Ok(Some(Me {
        id: id.to_string(),
        name: row.get("name"),
        region: row.get("region"),
        roles,
        reports,
        subtree,
    }))
}

/// The owner and region of a customer of `org_id`.
pub async fn customer_facts(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<CustomerFacts>> {
    Ok(
        sqlx::query("SELECT owner_user_id, region FROM customers WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| CustomerFacts {
                id: id.to_string(),
                owner: r.get("owner_user_id"),
                region: r.get("region"),
            }),
    )
}

/// Whether an approved permission request still grants `me` the customer or its region.
async fn granted(
    conn: &mut AnyConnection,
    org_id: &str,
    me: &Me,
    customer: &CustomerFacts,
    now_ms: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM access_grants WHERE org_id = $1 AND user_id = $2 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $3) \
         AND ((kind = 'customer' AND target = $4) OR (kind = 'region' AND target = $5)) LIMIT 1",
    )
    .bind(org_id)
    .bind(&me.id)
    .bind(now_ms)
    .bind(&customer.id)
    // No region: `target = NULL` matches nothing.
    .bind(customer.region.as_deref())
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

/// Whether `me` is assigned to the customer, or answers a request about it that is open
/// or closed less than [`AFTER_REQUEST_MS`] ago, or could take one waiting in the queue
/// of a role they hold.
async fn assigned(conn: &mut AnyConnection, me: &Me, customer: &str, now_ms: i64) -> Result<bool> {
    let direct = sqlx::query(
        "SELECT 1 FROM customer_assignments WHERE customer_id = $1 AND user_id = $2 \
         UNION ALL SELECT 1 FROM collab_requests WHERE customer_id = $1 AND assignee_user_id = $2 \
         AND (closed_at IS NULL OR closed_at > $3) LIMIT 1",
    )
    .bind(customer)
    .bind(&me.id)
    .bind(now_ms - AFTER_REQUEST_MS)
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if direct || me.roles.is_empty() {
        return Ok(direct);
    }
    let marks: Vec<String> = (0..me.roles.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT 1 FROM collab_requests WHERE customer_id = $1 AND assignee_user_id IS NULL \
         AND closed_at IS NULL AND responsible_role IN ({}) LIMIT 1",
        marks.join(", ")
    );
    let mut q = sqlx::query(&sql).bind(customer);
    for r in &me.roles {
        q = q.bind(r);
    }
    Ok(q.fetch_optional(&mut *conn).await?.is_some())
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn key_held(role: ApiKeyRole) -> Vec<Held> {
        vec![key_package(role)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(id: &str, region: Option<&str>, reports: &[&str], subtree: &[&str]) -> Me {
        Me {
            id: id.into(),
            name: id.into(),
            region: region.map(Into::into),
            roles: vec!["sales".into()],
            reports: reports.iter().map(|s| s.to_string()).collect(),
            subtree: subtree.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn policy_for(rules: &RuleSet, me: Me) -> Policy {
        Policy {
            org_id: "o".into(),
            subject: Subject::Person(me.id.clone()),
            held: packages_of(rules, &me),
            me: Some(me),
        }
    }

    #[test]
    fn a_rep_edits_their_own_customers_and_only_sees_their_region() {
        let rules = RuleSet::default();
        let p = policy_for(&rules, me("rep", Some("华东"), &[], &[]));
        let own = p.person_relations(Some("rep"), Some("华北"));
        assert!(p.decide(&own, Action::Edit).allowed());
        let region = p.person_relations(Some("other"), Some("华东"));
        assert!(p.decide(&region, Action::View).allowed());
        assert!(
            matches!(p.decide(&region, Action::Edit), Decision::Refused(r) if r.contains("销售代表"))
        );
        let elsewhere = p.person_relations(Some("other"), Some("华北"));
        assert_eq!(p.decide(&elsewhere, Action::View), Decision::Hidden);
    }

    #[test]
    fn anyone_with_reports_is_a_team_lead_and_managers_see_their_subtree() {
        let rules = RuleSet::default();
        let lead = policy_for(&rules, me("lead", None, &["rep"], &["rep", "deep"]));
        assert!(lead
            .held
            .iter()
            .any(|h| h.key == "team_lead" && h.why == "有直属下属"));
        let team = lead.person_relations(Some("rep"), None);
        assert!(lead.decide(&team, Action::Note).allowed());
        assert!(lead.decide(&team, Action::Manage).allowed());
        assert!(matches!(
            lead.decide(&team, Action::Edit),
            Decision::Refused(_)
        ));
        // An indirect report's customer is not the team lead's (no manager role).
        assert_eq!(
            lead.decide(&lead.person_relations(Some("deep"), None), Action::View),
            Decision::Hidden
        );

        let mut m = me("boss", None, &["lead"], &["lead", "rep"]);
        m.roles = vec!["manager".into()];
        let boss = policy_for(&rules, m);
        assert!(boss
            .decide(&boss.person_relations(Some("rep"), None), Action::Manage)
            .allowed());
        assert!(boss.has(Ability::AssignLeads));
        assert_eq!(
            boss.decide(&boss.person_relations(Some("stranger"), None), Action::View),
            Decision::Hidden
        );
    }

    #[test]
    fn keys_act_by_role_and_a_stranger_holds_nothing() {
        let ro = Policy {
            org_id: "o".into(),
            subject: Subject::Key(ApiKeyRole::ReadOnly),
            me: None,
            held: vec![key_package(ApiKeyRole::ReadOnly)],
        };
        let rel = ro.person_relations(Some("x"), None);
        assert!(ro.decide(&rel, Action::View).allowed());
        assert!(matches!(
            ro.decide(&rel, Action::Edit),
            Decision::Refused(_)
        ));
        assert!(!ro.has(Ability::ManagePeople));
        let nobody = Policy {
            org_id: "o".into(),
            subject: Subject::Person("gone".into()),
            me: None,
            held: vec![],
        };
        assert_eq!(nobody.decide(&rel, Action::View), Decision::Hidden);
        assert!(nobody.require(Ability::ReadAudit).is_err());
    }
}
