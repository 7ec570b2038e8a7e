//! Authority, decided once for the API and the web pages alike.
//!
//! Two questions live here. Who may manage someone's work — roll a deal back, reassign
//! it, lift a freeze on a rep, open the proof a rep attached to an attestation: whoever
//! the policy (`crate::policy`) gives the `manage` action on that person's customers —
//! by default an admin key acting for nobody, and a person (signed in, or named as
//! `actor` by any key) holding `admin`, a `manager` whose subtree holds the owner or
//! rep, or their direct superior; never someone lifting their own freeze. And who may change what grants authority — users' roles, platform identities,
//! superiors and status, customers' owners and assignments, calendar feeds: admin keys,
//! the command line, the server itself and signed-in members holding the `admin` role,
//! never an integration key (an identity it could set is a sign-in it could take over).

use sqlx::AnyConnection;

use crate::access::{ApiKeyRole, Principal};
use crate::error::{Error, Result};
use crate::policy::{Policy, Subject};
use crate::rules::access::{Action, Scope};

/// Who asks to manage someone's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who<'a> {
    /// An API key acting for nobody: only an admin key may.
    Key(ApiKeyRole),
    /// A person, signed in or named as `actor` by a key; the key's own role adds nothing,
    /// so an integration key gets that person's authority and no more.
    Person(&'a str),
}

impl<'a> Who<'a> {
    /// The person a key names as `actor`, else the key itself.
    pub fn acting(key: &Principal, actor: Option<&'a str>) -> Who<'a> {
        actor.map_or(Who::Key(key.role), Who::Person)
    }
}

/// What is to be managed.
#[derive(Debug, Clone, Copy)]
pub enum Managed<'a> {
    /// Rolling back, reassigning or reopening a deal with this owner.
    Deal { owner: Option<&'a str> },
    /// Ending a deal with this owner as lost (输单): its owner may, as may whoever may
    /// manage the deal.
    Closing { owner: Option<&'a str> },
    /// Lifting this rep's freeze.
    Freeze { rep: &'a str },
    /// Opening the proof this rep attached to an attestation (the superior's card links
    /// to it).
    Proof { rep: &'a str },
}

/// What one asker may manage, loaded once so a page can ask about many deals: the
/// asker's policy (`crate::policy`), asked for the `manage` action on the person whose
/// work it is.
#[derive(Debug, Clone)]
pub struct Authority {
    policy: Policy,
}

impl Authority {
    /// A person who is not an active member of the organisation has no authority.
    pub async fn load(conn: &mut AnyConnection, org_id: &str, who: Who<'_>) -> Result<Authority> {
        let rules = crate::rules::store::in_force(conn, org_id).await?;
        let subject = match who {
            Who::Key(role) => Subject::Key(role),
            Who::Person(p) => Subject::Person(p.to_string()),
        };
        Ok(Authority {
            policy: Policy::load(conn, &rules, org_id, subject).await?,
        })
    }

    /// The asker's whole policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn manages(&self, person: Option<&str>) -> bool {
        // A person's work is matched by who they are, not by where they work.
        let relations = self.policy.person_relations(person, None);
        self.policy.decide(&relations, Action::Manage).allowed()
    }

    /// The one rule for rollbacks, reassignments and lifting freezes.
    pub fn allows(&self, what: Managed<'_>) -> bool {
        let me = self.policy.person();
        match what {
            Managed::Deal { owner } => self.manages(owner),
            Managed::Closing { owner } => (me.is_some() && me == owner) || self.manages(owner),
            Managed::Freeze { rep } => me != Some(rep) && self.manages(Some(rep)),
            Managed::Proof { rep } => self.manages(Some(rep)),
        }
    }

    /// Whether any deal or freeze could be theirs to manage (the page then offers the
    /// organisation's members to reassign to).
    pub fn manages_anyone(&self) -> bool {
        self.policy.held.iter().any(|h| {
            h.grants.iter().any(|g| {
                g.actions.contains(&Action::Manage)
                    && match g.scope {
                        Scope::All => true,
                        Scope::Team | Scope::Subtree => self
                            .policy
                            .me
                            .as_ref()
                            .is_some_and(|m| !m.reports.is_empty()),
                        _ => false,
                    }
            })
        })
    }
}

/// Refuses (403) unless `who` may manage `what`.
pub async fn require(
    conn: &mut AnyConnection,
    org_id: &str,
    who: Who<'_>,
    what: Managed<'_>,
) -> Result<()> {
    if Authority::load(conn, org_id, who).await?.allows(what) {
        return Ok(());
    }
    let message = match (who, what) {
        (Who::Key(role), _) => format!(
            "an API key with role `{}` manages deals and freezes only for a person named in \
             `actor`, with that person's authority",
            role.as_str()
        ),
        (Who::Person(p), Managed::Freeze { rep }) if p == rep => {
            "不能解除对自己的冻结，请联系主管 (nobody lifts their own freeze)".into()
        }
        (Who::Person(_), Managed::Freeze { .. }) => format!(
            "只有该销售的上级（直属或经理）或管理员可以解除冻结（角色与上级在 {} 中设置）",
            crate::access::WHERE_ROLES_ARE_SET
        ),
        (Who::Person(_), Managed::Proof { .. }) => format!(
            "只有该销售的上级（直属或经理）或管理员可以查看证明（角色与上级在 {} 中设置）",
            crate::access::WHERE_ROLES_ARE_SET
        ),
        (Who::Person(_), Managed::Deal { .. }) => format!(
            "只有负责人的上级（直属或经理）或管理员可以回退阶段、重新分配或重新打开商机（角色与上级在 {} 中设置）",
            crate::access::WHERE_ROLES_ARE_SET
        ),
        (Who::Person(_), Managed::Closing { .. }) => format!(
            "只有商机负责人、负责人的上级（直属或经理）或管理员可以标记输单（角色与上级在 {} 中设置）",
            crate::access::WHERE_ROLES_ARE_SET
        ),
    };
    Err(Error::Forbidden(message))
}

/// Whether a writer may change what grants authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Admin keys, the command line, the server itself (directory sync, the demo) and
    /// members holding the `admin` role on the people page.
    Allowed,
    /// Integration keys: they write business data and grant nothing.
    Refused,
}

impl Grant {
    /// Refuses (403) a change to any of `fields` unless granting is allowed.
    pub fn require(self, fields: &[&str]) -> Result<()> {
        if self == Grant::Allowed || fields.is_empty() {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "only an admin key may change {}: they grant authority",
            fields.join(", ")
        )))
    }

    /// A signed-in person grants — sees and changes roles, superiors and per-customer
    /// assignments on the people page — when they are an active member holding the
    /// `admin` role.
    pub async fn of_member(conn: &mut AnyConnection, org_id: &str, user: &str) -> Result<Grant> {
        let admin = sqlx::query(
            "SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id \
             WHERE u.id = $1 AND u.org_id = $2 AND u.status = 'active' AND r.role = 'admin'",
        )
        .bind(user)
        .bind(org_id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
        Ok(if admin {
            Grant::Allowed
        } else {
            Grant::Refused
        })
    }
}

impl Principal {
    pub fn grant(&self) -> Grant {
        if self.role == ApiKeyRole::Admin {
            Grant::Allowed
        } else {
            Grant::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{packages_of, Me};
    use crate::rules::RuleSet;

    /// `me` holding `roles`, with these direct reports and subtree.
    fn person(roles: &[&str], reports: &[&str], subtree: &[&str]) -> Authority {
        let me = Me {
            id: "me".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            reports: reports.iter().map(|r| r.to_string()).collect(),
            subtree: subtree.iter().map(|r| r.to_string()).collect(),
            ..Me::default()
        };
        Authority {
            policy: Policy {
                org_id: "o".into(),
                subject: Subject::Person("me".into()),
                held: packages_of(&RuleSet::default(), &me),
                me: Some(me),
            },
        }
    }

    fn key(role: ApiKeyRole) -> Authority {
        Authority {
            policy: Policy {
                org_id: "o".into(),
                subject: Subject::Key(role),
                me: None,
                held: crate::policy::tests_support::key_held(role),
            },
        }
    }

    #[test]
    fn admins_manage_everyone_managers_their_subtree_superiors_their_reports() {
        let admin = person(&["admin"], &[], &[]);
        assert!(admin.allows(Managed::Deal { owner: Some("u-1") }));
        assert!(admin.allows(Managed::Deal { owner: None }));
        assert!(admin.allows(Managed::Freeze { rep: "u-1" }));
        let manager = person(&["manager"], &["lead"], &["lead", "u-1"]);
        assert!(manager.allows(Managed::Deal { owner: Some("u-1") }));
        assert!(!manager.allows(Managed::Deal { owner: Some("u-2") }));
        let lead = person(&["sales"], &["u-1"], &["u-1"]);
        assert!(lead.allows(Managed::Deal { owner: Some("u-1") }));
        assert!(lead.allows(Managed::Freeze { rep: "u-1" }));
        assert!(!lead.allows(Managed::Deal { owner: Some("u-2") }));
        assert!(!lead.allows(Managed::Deal { owner: None }));
        assert!(lead.allows(Managed::Proof { rep: "u-1" }));
        assert!(!lead.allows(Managed::Proof { rep: "u-2" }));
        assert!(lead.manages_anyone() && !person(&["sales"], &[], &[]).manages_anyone());
    }

    #[test]
    fn nobody_lifts_their_own_freeze_but_may_close_their_own_deal() {
        let admin = person(&["admin"], &[], &[]);
        assert!(!admin.allows(Managed::Freeze { rep: "me" }));
        assert!(admin.allows(Managed::Deal { owner: Some("me") }));
        let rep = person(&["sales"], &[], &[]);
        assert!(rep.allows(Managed::Closing { owner: Some("me") }));
        assert!(!rep.allows(Managed::Deal { owner: Some("me") }));
    }

    #[test]
    fn a_key_acting_for_nobody_manages_only_when_it_is_an_admin_key() {
        let deal = Managed::Deal { owner: Some("u-1") };
        assert!(key(ApiKeyRole::Admin).allows(deal));
        assert!(!key(ApiKeyRole::Integration).allows(deal));
        assert!(!key(ApiKeyRole::ReadOnly).allows(Managed::Freeze { rep: "u-1" }));
    }

    #[test]
    fn only_an_admin_key_grants() {
        assert!(Grant::Allowed.require(&["roles"]).is_ok());
        assert!(Grant::Refused.require(&[]).is_ok());
        let err = Grant::Refused
            .require(&["roles", "identities"])
            .unwrap_err();
        assert!(matches!(err, Error::Forbidden(m) if m.contains("roles, identities")));
    }
}
