//! A person's effective permissions, explained: which package they hold, why, and what
//! it grants (`closeloop users explain USER` and the permissions page).

use serde::Serialize;

use super::{Policy, Subject};
use crate::rules::access::{Ability, Action, Scope};
use crate::rules::RuleSet;

/// One package a person holds, in words.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PackageLine {
    pub key: String,
    pub label: String,
    /// Why the person holds it, e.g. 「角色：销售代表」 or 「有直属下属」.
    pub why: String,
    /// 「本人负责的客户：查看、记录跟进、编辑」, one line per scope.
    pub grants: Vec<String>,
    /// 「从线索池领取线索」…
    pub abilities: Vec<String>,
}

/// What a person may do, and through which package.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub user: String,
    pub name: String,
    /// Labels of the roles held.
    pub roles: Vec<String>,
    pub region: Option<String>,
    pub direct_reports: usize,
    pub subtree: usize,
    pub packages: Vec<PackageLine>,
    /// Per scope, the union of actions over all packages: the effective permission.
    pub effective: Vec<String>,
    /// Abilities over all packages.
    pub effective_abilities: Vec<String>,
    /// Set when the person holds nothing (not an active member, or no package applies).
    pub note: Option<String>,
}

fn actions_text(actions: &[Action]) -> String {
    let mut all: Vec<Action> = actions.to_vec();
    if !all.contains(&Action::View) {
        all.push(Action::View);
    }
    all.sort();
    all.dedup();
    all.iter().map(|a| a.label()).collect::<Vec<_>>().join("、")
}

/// Explains `policy` (loaded for a person) under `rules`.
pub fn explain(rules: &RuleSet, policy: &Policy) -> Explanation {
    let user = match &policy.subject {
        Subject::Person(p) => p.clone(),
        _ => String::new(),
    };
    let me = policy.me.clone().unwrap_or_default();
    let packages: Vec<PackageLine> = policy
        .held
        .iter()
        .map(|h| PackageLine {
            key: h.key.clone(),
            label: h.label.clone(),
            why: h.why.clone(),
            grants: h
                .grants
                .iter()
                .map(|g| format!("{}：{}", g.scope.label(), actions_text(&g.actions)))
                .collect(),
            abilities: h.abilities.iter().map(|a| a.label().to_string()).collect(),
        })
        .collect();
    let mut effective = Vec::new();
    for scope in Scope::ALL {
        let actions: Vec<Action> = policy
            .held
            .iter()
            .flat_map(|h| h.grants.iter())
            .filter(|g| g.scope == scope)
            .flat_map(|g| g.actions.iter().copied())
            .collect();
        if !actions.is_empty() {
            effective.push(format!("{}：{}", scope.label(), actions_text(&actions)));
        }
    }
    let effective_abilities = Ability::ALL
        .iter()
        .filter(|a| policy.has(**a))
        .map(|a| a.label().to_string())
        .collect();
    let note = if policy.me.is_none() {
        Some("不是本组织的在职成员：没有任何权限".to_string())
    } else if policy.held.is_empty() {
        Some("没有任何权限包适用于此人的角色：只能看到自己的个人信息".to_string())
    } else {
        None
    };
    Explanation {
        user,
        name: me.name.clone(),
        roles: me
            .roles
            .iter()
            .map(|r| rules.role_label(r).to_string())
            .collect(),
        region: me.region.clone(),
        direct_reports: me.reports.len(),
        subtree: me.subtree.len(),
        packages,
        effective,
        effective_abilities,
        note,
    }
}

impl Explanation {
    /// Plain text for the command line.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}（{}）\n角色：{}\n区域：{}\n直属下属 {} 人，全部下属 {} 人\n",
            self.name,
            self.user,
            if self.roles.is_empty() {
                "无".to_string()
            } else {
                self.roles.join("、")
            },
            self.region.as_deref().unwrap_or("未设置"),
            self.direct_reports,
            self.subtree
        );
        if let Some(n) = &self.note {
            out.push_str(&format!("{n}\n"));
        }
        for p in &self.packages {
            out.push_str(&format!("\n权限包「{}」（{}）\n", p.label, p.why));
            for g in &p.grants {
                out.push_str(&format!("  · {g}\n"));
            }
            for a in &p.abilities {
                out.push_str(&format!("  · {a}\n"));
            }
        }
        if !self.effective.is_empty() || !self.effective_abilities.is_empty() {
            out.push_str("\n合计生效：\n");
            for e in self.effective.iter().chain(&self.effective_abilities) {
                out.push_str(&format!("  · {e}\n"));
            }
        }
        out
    }
}
