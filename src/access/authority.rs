//! Authority, decided once for the API and the web pages alike.
//!
//! Two questions live here. Who may manage someone's work — roll a deal back, reassign
//! it, lift a freeze on a rep, open the proof a rep attached to an attestation: an admin key acting for nobody; a person (signed in, or
//! named as `actor` by any key) who holds the `manager` or `admin` role or is a direct
//! superior of the deal's owner or the frozen rep; never someone lifting their own
//! freeze. And who may change what grants authority — users' roles, platform identities,
//! superiors and status, customers' owners and assignments, calendar feeds: admin keys,
//! the command line, the server itself and signed-in members holding the `admin` role,
//! never an integration key (an identity it could set is a sign-in it could take over).

use std::collections::HashSet;

use sqlx::{AnyConnection, Row};

use super::{ApiKeyRole, Principal};
use crate::error::{Error, Result};

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

/// What one asker may manage, loaded once so a page can ask about many deals.
#[derive(Debug, Clone)]
pub struct Authority {
    person: Option<String>,
    /// An admin key, or a person with the `manager` or `admin` role.
    everyone: bool,
    /// The person's direct reports.
    reports: HashSet<String>,
}

impl Authority {
    fn of_key(role: ApiKeyRole) -> Authority {
        Authority {
            person: None,
            everyone: role == ApiKeyRole::Admin,
            reports: HashSet::new(),
        }
    }

    /// A person who is not an active member of the organisation has no authority.
    pub async fn load(conn: &mut AnyConnection, org_id: &str, who: Who<'_>) -> Result<Authority> {
        let user = match who {
            Who::Key(role) => return Ok(Authority::of_key(role)),
            Who::Person(user) => user,
        };
        let member =
            sqlx::query("SELECT 1 FROM users WHERE id = $1 AND org_id = $2 AND status = 'active'")
                .bind(user)
                .bind(org_id)
                .fetch_optional(&mut *conn)
                .await?
                .is_some();
        let mut out = Authority {
            person: Some(user.to_string()),
            everyone: false,
            reports: HashSet::new(),
        };
        if !member {
            return Ok(out);
        }
        out.everyone = sqlx::query(
            "SELECT 1 FROM user_roles WHERE user_id = $1 AND role IN ('manager', 'admin') LIMIT 1",
        )
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
        out.reports = sqlx::query("SELECT user_id FROM user_superiors WHERE superior_id = $1")
            .bind(user)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get("user_id"))
            .collect();
        Ok(out)
    }

    /// The one rule for rollbacks, reassignments and lifting freezes.
    pub fn allows(&self, what: Managed<'_>) -> bool {
        let subject = match what {
            Managed::Deal { owner } => owner,
            Managed::Closing { owner } => {
                if self.person.is_some() && self.person.as_deref() == owner {
                    return true;
                }
                owner
            }
            Managed::Freeze { rep } => {
                if self.person.as_deref() == Some(rep) {
                    return false;
                }
                Some(rep)
            }
            Managed::Proof { rep } => Some(rep),
        };
        self.everyone || subject.is_some_and(|s| self.reports.contains(s))
    }

    /// Whether any deal or freeze could be theirs to manage (the page then offers the
    /// organisation's members to reassign to).
    pub fn manages_anyone(&self) -> bool {
        self.everyone || !self.reports.is_empty()
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
            "只有主管、管理员或该销售的直属上级可以解除冻结（角色与上级在 {} 中设置）",
            super::WHERE_ROLES_ARE_SET
        ),
        (Who::Person(_), Managed::Proof { .. }) => format!(
            "只有主管、管理员或该销售的直属上级可以查看证明（角色与上级在 {} 中设置）",
            super::WHERE_ROLES_ARE_SET
        ),
        (Who::Person(_), Managed::Deal { .. }) => format!(
            "只有主管、管理员或负责人的直属上级可以回退阶段、重新分配或重新打开商机（角色与上级在 {} 中设置）",
            super::WHERE_ROLES_ARE_SET
        ),
        (Who::Person(_), Managed::Closing { .. }) => format!(
            "只有商机负责人、主管、管理员或负责人的直属上级可以标记输单（角色与上级在 {} 中设置）",
            super::WHERE_ROLES_ARE_SET
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

    fn person(everyone: bool, reports: &[&str]) -> Authority {
        Authority {
            person: Some("me".into()),
            everyone,
            reports: reports.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn managers_manage_everyone_superiors_their_reports() {
        let manager = person(true, &[]);
        assert!(manager.allows(Managed::Deal { owner: Some("u-1") }));
        assert!(manager.allows(Managed::Deal { owner: None }));
        assert!(manager.allows(Managed::Freeze { rep: "u-1" }));
        let lead = person(false, &["u-1"]);
        assert!(lead.allows(Managed::Deal { owner: Some("u-1") }));
        assert!(lead.allows(Managed::Freeze { rep: "u-1" }));
        assert!(!lead.allows(Managed::Deal { owner: Some("u-2") }));
        assert!(!lead.allows(Managed::Deal { owner: None }));
        assert!(lead.allows(Managed::Proof { rep: "u-1" }));
        assert!(!lead.allows(Managed::Proof { rep: "u-2" }));
        assert!(lead.manages_anyone() && !person(false, &[]).manages_anyone());
    }

    #[test]
    fn nobody_lifts_their_own_freeze_but_may_manage_their_own_deal() {
        let manager = person(true, &[]);
        assert!(!manager.allows(Managed::Freeze { rep: "me" }));
        assert!(manager.allows(Managed::Deal { owner: Some("me") }));
    }

    #[test]
    fn a_key_acting_for_nobody_manages_only_when_it_is_an_admin_key() {
        let deal = Managed::Deal { owner: Some("u-1") };
        assert!(Authority::of_key(ApiKeyRole::Admin).allows(deal));
        assert!(!Authority::of_key(ApiKeyRole::Integration).allows(deal));
        assert!(!Authority::of_key(ApiKeyRole::ReadOnly).allows(Managed::Freeze { rep: "u-1" }));
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
