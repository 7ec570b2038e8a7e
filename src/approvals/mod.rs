//! Approvals: who decides what a member asks for, and what an approval grants.
//!
//! - [`approver_for`]: the approver chain (issue 15, items 4 and 5): the requester's first
//!   direct superior; when that superior is not an active member, that superior's first
//!   superior, and so on up (a chain that comes back on itself stops); else an active
//!   member holding the `security` role (安全官). "First" is the first in the order the
//!   directory lists a user's superiors (by id, as `GET /api/v1/users/{id}` shows them).
//!   Never the requester.
//! - [`requests`]: permission requests (a field reveal, a region, a customer), their
//!   decision on a card, the page or the API, and the circuit breaker that pauses a member
//!   who asks too often.
//! - [`grants_for`]: the grants in force for a member, which the central policy reads.

pub mod requests;

use std::collections::HashSet;

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::db::Tx;
use crate::error::Result;

/// The role that holds the last word: 安全官.
pub const SECURITY_ROLE: &str = "security";

/// Why someone is the approver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The requester's first direct superior (直属上级).
    DirectSuperior,
    /// A superior further up, because the first direct superior is not an active member
    /// (上级的上级).
    HigherSuperior,
    /// No active superior up the chain: a security officer (安全官).
    Security,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::DirectSuperior => "direct_superior",
            Why::HigherSuperior => "higher_superior",
            Why::Security => "security",
        }
    }

    pub fn parse(s: &str) -> Option<Why> {
        match s {
            "direct_superior" => Some(Why::DirectSuperior),
            "higher_superior" => Some(Why::HigherSuperior),
            "security" => Some(Why::Security),
            _ => None,
        }
    }

    /// As people read it.
    pub fn label(self) -> &'static str {
        match self {
            Why::DirectSuperior => "直属上级",
            Why::HigherSuperior => "上级的上级",
            Why::Security => "安全官",
        }
    }
}

/// Who decides a member's request, and why them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    pub user_id: String,
    pub why: Why,
}

/// The first superior of `user` (in the directory's order) and whether they are an active
/// member of the organisation.
async fn first_superior(
    conn: &mut AnyConnection,
    org_id: &str,
    user: &str,
) -> Result<Option<(String, bool)>> {
    Ok(sqlx::query(
        "SELECT s.superior_id, u.status FROM user_superiors s JOIN users u ON u.id = s.superior_id \
         WHERE s.user_id = $1 AND u.org_id = $2 ORDER BY s.superior_id LIMIT 1",
    )
    .bind(user)
    .bind(org_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| {
        (
            r.get::<String, _>("superior_id"),
            r.get::<String, _>("status") == "active",
        )
    }))
}

/// The approver of `requester`'s requests (see the module's description), or `None` when
/// the chain ends without an active superior and no other active member holds `security`.
pub async fn approver_for(tx: &mut Tx, org_id: &str, requester: &str) -> Result<Option<Approver>> {
    let mut seen = HashSet::from([requester.to_string()]);
    let mut current = requester.to_string();
    let mut why = Why::DirectSuperior;
    while let Some((superior, active)) = first_superior(tx, org_id, &current).await? {
        // A chain that comes back to someone already passed (or to the requester) ends.
        if !seen.insert(superior.clone()) {
            break;
        }
        if active {
            return Ok(Some(Approver {
                user_id: superior,
                why,
            }));
        }
        current = superior;
        why = Why::HigherSuperior;
    }
    let officers = crate::directory::users::active_with_role(tx, org_id, SECURITY_ROLE).await?;
    Ok(officers
        .into_iter()
        .find(|o| o != requester)
        .map(|user_id| Approver {
            user_id,
            why: Why::Security,
        }))
}

/// Access a member holds beyond their own: a field reveal, a region or a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Grant {
    /// `field`, `region` or `customer`.
    pub kind: String,
    /// A field key, a region name or a customer id.
    pub target: String,
    /// When it ends (milliseconds since the epoch); `None`: until revoked.
    pub expires_at: Option<i64>,
}

/// The grants in force for `user_id` at `now_ms`: not revoked and not expired. The central
/// policy calls this to widen what a member may see.
pub async fn grants_for(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<Vec<Grant>> {
    Ok(sqlx::query(
        "SELECT kind, target, expires_at FROM access_grants WHERE org_id = $1 AND user_id = $2 \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3) \
         ORDER BY kind, target, id",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Grant {
        kind: r.get("kind"),
        target: r.get("target"),
        expires_at: r.get("expires_at"),
    })
    .collect())
}
