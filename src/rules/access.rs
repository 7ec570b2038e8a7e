//! Roles and permission packages as data (权限包): part of the rule set, so they are
//! versioned, checked before they are stored, and every change is audited like any other
//! rule change. `crate::policy` reads them; nothing else decides who may do what.
//!
//! A package is given to the holders of some roles (and, with `superiors = true`, to
//! anyone with direct reports in the directory). It grants actions on customers through a
//! scope — how the customer relates to the person — and abilities that belong to no
//! customer (claiming from the lead pool, reading the audit log, …). Packages combine:
//! a person's permissions are the union of the packages they hold.

use serde::{Deserialize, Serialize};

/// A role people can hold. The set is configurable; the built-in ones are referenced by
/// the code (collaboration queues, card recipients) and cannot be removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    /// Lowercase letters, digits and underscores, e.g. `product`, `cto`.
    pub key: String,
    /// What people see, e.g. 「产品经理」.
    pub label: String,
}

/// How a customer relates to the person asking.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The person owns the customer.
    Own,
    /// The customer is in the person's region.
    Region,
    /// The owner is one of the person's direct reports.
    Team,
    /// The owner is in the person's directory subtree (direct and indirect reports).
    Subtree,
    /// The person is assigned to the customer (presales, delivery, finance, legal), or
    /// answers a collaboration request about it — while it is open and for seven days
    /// after it closed.
    Assigned,
    /// Every customer of the organisation.
    All,
    /// A customer, or the customers of a region, an approved permission request grants
    /// the person until the grant ends (`access_grants`).
    Granted,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Own,
        Scope::Region,
        Scope::Team,
        Scope::Subtree,
        Scope::Assigned,
        Scope::All,
        Scope::Granted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Own => "own",
            Scope::Region => "region",
            Scope::Team => "team",
            Scope::Subtree => "subtree",
            Scope::Assigned => "assigned",
            Scope::All => "all",
            Scope::Granted => "granted",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Scope::Own => "本人负责的客户",
            Scope::Region => "本区域的客户",
            Scope::Team => "直属下属负责的客户",
            Scope::Subtree => "所有下属（含间接）负责的客户",
            Scope::Assigned => "分配给本人或本人处理中协作请求的客户",
            Scope::All => "全部客户",
            Scope::Granted => "经批准的权限申请所涉客户或区域",
        }
    }
}

/// What may be done to a customer and everything under it (deals, contacts, tracking
/// points, documents, collaboration requests). Every action includes `view`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// See it (sensitive fields stay masked unless a field policy reveals them).
    View,
    /// Add follow-ups: tracking points, notes, collaboration requests, answers.
    Note,
    /// Change it: its fields and contacts, advance its deals, upload documents.
    Edit,
    /// Manage others' work on it: roll back, reassign, reopen, lift freezes, see proofs.
    Manage,
    /// Give it to someone: owner and per-customer assignments.
    Assign,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::View,
        Action::Note,
        Action::Edit,
        Action::Manage,
        Action::Assign,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Note => "note",
            Action::Edit => "edit",
            Action::Manage => "manage",
            Action::Assign => "assign",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Action::View => "查看",
            Action::Note => "记录跟进",
            Action::Edit => "编辑",
            Action::Manage => "管理（回退、改派、解冻）",
            Action::Assign => "分配",
        }
    }
}

/// What a package allows beyond customers.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Ability {
    /// Take an unassigned lead from the lead pool.
    #[serde(rename = "leads.claim")]
    ClaimLeads,
    /// Give a lead from the pool to someone they may assign to.
    #[serde(rename = "leads.assign")]
    AssignLeads,
    /// Team reports: collaboration health, credibility, tasks.
    #[serde(rename = "reports.team")]
    TeamReports,
    /// Read and search the audit log and the access log.
    #[serde(rename = "audit.read")]
    ReadAudit,
    /// Read permission reports and explain anyone's permissions.
    #[serde(rename = "permissions.report")]
    PermissionReports,
    /// People, roles, superiors, identities, API keys.
    #[serde(rename = "people.manage")]
    ManagePeople,
    /// The rule set (stages, actions, packages).
    #[serde(rename = "rules.manage")]
    ManageRules,
    /// Jobs, webhooks, platform events: operating the server.
    #[serde(rename = "ops.manage")]
    Operate,
}

impl Ability {
    pub const ALL: [Ability; 8] = [
        Ability::ClaimLeads,
        Ability::AssignLeads,
        Ability::TeamReports,
        Ability::ReadAudit,
        Ability::PermissionReports,
        Ability::ManagePeople,
        Ability::ManageRules,
        Ability::Operate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ability::ClaimLeads => "leads.claim",
            Ability::AssignLeads => "leads.assign",
            Ability::TeamReports => "reports.team",
            Ability::ReadAudit => "audit.read",
            Ability::PermissionReports => "permissions.report",
            Ability::ManagePeople => "people.manage",
            Ability::ManageRules => "rules.manage",
            Ability::Operate => "ops.manage",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Ability::ClaimLeads => "从线索池领取线索",
            Ability::AssignLeads => "分配线索池中的线索",
            Ability::TeamReports => "查看团队报表（协作健康度、可信度、待办）",
            Ability::ReadAudit => "查阅审计日志与访问日志",
            Ability::PermissionReports => "查看权限报告、解释任何人的权限",
            Ability::ManagePeople => "管理人员、角色与上级",
            Ability::ManageRules => "管理规则与权限包",
            Ability::Operate => "运维：任务、Webhook 与平台事件",
        }
    }
}

/// Actions granted on the customers of one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeGrant {
    pub scope: Scope,
    pub actions: Vec<Action>,
}

/// A permission package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub key: String,
    pub label: String,
    /// Holders of any of these roles get the package.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Anyone with at least one direct report in the directory gets it too.
    #[serde(default)]
    pub superiors: bool,
    /// Every active member gets it.
    #[serde(default)]
    pub everyone: bool,
    #[serde(default)]
    pub grants: Vec<ScopeGrant>,
    #[serde(default)]
    pub abilities: Vec<Ability>,
}

/// The roles the code refers to by key.
pub const BUILTIN_ROLES: [&str; 9] = [
    "sales",
    "team_lead",
    "presales",
    "delivery",
    "finance",
    "legal",
    "manager",
    "admin",
    "security",
];

pub fn default_roles() -> Vec<RoleDef> {
    crate::text::BUILTIN_ROLE_LABELS
        .map(|(key, label)| RoleDef {
            key: key.into(),
            label: label.into(),
        })
        .to_vec()
}

/// The seed's packages (「权限精细化管理」).
pub fn default_packages() -> Vec<Package> {
    use Action::*;
    let grant = |scope: Scope, actions: &[Action]| ScopeGrant {
        scope,
        actions: actions.to_vec(),
    };
    let package = |key: &str, label: &str, roles: &[&str]| Package {
        key: key.into(),
        label: label.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        superiors: false,
        everyone: false,
        grants: Vec::new(),
        abilities: Vec::new(),
    };
    vec![
        // Whoever owns a customer works it, whatever their role.
        Package {
            everyone: true,
            grants: vec![grant(Scope::Own, &[View, Note, Edit])],
            ..package("member", "全体成员", &[])
        },
        Package {
            grants: vec![
                grant(Scope::Own, &[View, Note, Edit]),
                grant(Scope::Region, &[View]),
            ],
            abilities: vec![Ability::ClaimLeads],
            ..package("sales_rep", "销售代表", &["sales"])
        },
        Package {
            superiors: true,
            grants: vec![grant(Scope::Team, &[View, Note, Manage])],
            abilities: vec![
                Ability::ClaimLeads,
                Ability::AssignLeads,
                Ability::TeamReports,
            ],
            ..package("team_lead", "销售组长", &["team_lead"])
        },
        Package {
            grants: vec![grant(Scope::Subtree, &[View, Note, Edit, Manage, Assign])],
            abilities: vec![
                Ability::ClaimLeads,
                Ability::AssignLeads,
                Ability::TeamReports,
            ],
            ..package("manager", "销售经理", &["manager"])
        },
        Package {
            grants: vec![grant(Scope::Assigned, &[View, Note])],
            ..package("finance", "财务", &["finance"])
        },
        Package {
            grants: vec![grant(Scope::Assigned, &[View, Note])],
            ..package(
                "collaborator",
                "售前 / 交付 / 法务",
                &["presales", "delivery", "legal"],
            )
        },
        Package {
            abilities: vec![Ability::ReadAudit, Ability::PermissionReports],
            ..package("security", "安全官", &["security"])
        },
        Package {
            grants: vec![grant(Scope::All, &Action::ALL)],
            abilities: Ability::ALL.to_vec(),
            ..package("admin", "管理员", &["admin"])
        },
    ]
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 32
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_label(label: &str) -> bool {
    let n = label.trim().chars().count();
    (1..=24).contains(&n) && !label.chars().any(char::is_control)
}

/// Checks roles and packages; the message names the offending key.
pub fn check(roles: &[RoleDef], packages: &[Package]) -> std::result::Result<(), String> {
    let mut keys = std::collections::BTreeSet::new();
    for r in roles {
        if !valid_key(&r.key) {
            return Err(format!(
                "role `{}`: keys are 1 to 32 lowercase letters, digits or underscores",
                r.key
            ));
        }
        if !valid_label(&r.label) {
            return Err(format!(
                "role `{}` needs a label of 1 to 24 characters",
                r.key
            ));
        }
        if !keys.insert(r.key.as_str()) {
            return Err(format!("role `{}` appears twice", r.key));
        }
    }
    for b in BUILTIN_ROLES {
        if !keys.contains(b) {
            return Err(format!(
                "role `{b}` is built in (the code refers to it) and cannot be removed"
            ));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for p in packages {
        if !valid_key(&p.key) {
            return Err(format!(
                "package `{}`: keys are 1 to 32 lowercase letters, digits or underscores",
                p.key
            ));
        }
        if !valid_label(&p.label) {
            return Err(format!(
                "package `{}` needs a label of 1 to 24 characters",
                p.key
            ));
        }
        if !names.insert(p.key.as_str()) {
            return Err(format!("package `{}` appears twice", p.key));
        }
        if p.roles.is_empty() && !p.superiors && !p.everyone {
            return Err(format!(
                "package `{}` is given to nobody: name `roles`, or set `superiors` or `everyone` to true",
                p.key
            ));
        }
        if let Some(r) = p.roles.iter().find(|r| !keys.contains(r.as_str())) {
            return Err(format!("package `{}`: role `{r}` is not in `roles`", p.key));
        }
        let mut scopes = std::collections::BTreeSet::new();
        for g in &p.grants {
            if g.actions.is_empty() {
                return Err(format!(
                    "package `{}`: the grant on scope `{}` has no actions",
                    p.key,
                    g.scope.as_str()
                ));
            }
            if !scopes.insert(g.scope) {
                return Err(format!(
                    "package `{}`: scope `{}` is granted twice",
                    p.key,
                    g.scope.as_str()
                ));
            }
        }
    }
    // Somebody must be able to undo a mistake made here.
    for needed in [Ability::ManagePeople, Ability::ManageRules] {
        if !packages
            .iter()
            .any(|p| p.abilities.contains(&needed) && p.roles.iter().any(|r| r == "admin"))
        {
            return Err(format!(
                "no package gives the `admin` role `{}`: nobody could change people or rules again",
                needed.as_str()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_every_builtin_role_is_there() {
        check(&default_roles(), &default_packages()).unwrap();
    }

    #[test]
    fn mistakes_are_named() {
        let roles = default_roles();
        let mut packages = default_packages();
        packages[0].roles.push("cto".into());
        assert!(check(&roles, &packages).unwrap_err().contains("`cto`"));

        let mut roles = default_roles();
        roles.retain(|r| r.key != "security");
        assert!(check(&roles, &default_packages())
            .unwrap_err()
            .contains("`security` is built in"));

        let mut packages = default_packages();
        packages.retain(|p| p.key != "admin");
        assert!(check(&default_roles(), &packages)
            .unwrap_err()
            .contains("nobody could change"));

        let mut packages = default_packages();
        packages[0].grants.push(ScopeGrant {
            scope: Scope::Own,
            actions: vec![Action::View],
        });
        assert!(check(&default_roles(), &packages)
            .unwrap_err()
            .contains("granted twice"));
    }

    #[test]
    fn a_new_role_needs_no_code() {
        let mut roles = default_roles();
        roles.push(RoleDef {
            key: "cto".into(),
            label: "CTO".into(),
        });
        let mut packages = default_packages();
        packages.push(Package {
            key: "cto".into(),
            label: "技术负责人".into(),
            roles: vec!["cto".into()],
            superiors: false,
            everyone: false,
            grants: vec![ScopeGrant {
                scope: Scope::All,
                actions: vec![Action::View],
            }],
            abilities: vec![],
        });
        check(&roles, &packages).unwrap();
    }
}
