//! Who may do what: API keys as principals, roles, authority, and the audit log.

pub mod apikeys;
pub mod audit;
pub mod audit_actions;

pub use apikeys::{Acting, ApiKeyRole, NewApiKey, Permission, Principal};

/// Where roles, superiors and per-customer assignments are set (the people page; the
/// command line's `closeloop users`), for every message that names a role or a superior.
pub const WHERE_ROLES_ARE_SET: &str = "管理 → 人员与角色";

/// Who made a change, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub kind: &'static str,
    pub id: Option<String>,
}

impl Actor {
    pub fn cli() -> Actor {
        Actor {
            kind: "cli",
            id: None,
        }
    }

    pub fn system() -> Actor {
        Actor {
            kind: "system",
            id: None,
        }
    }

    /// A signed-in member.
    pub fn user(id: &str) -> Actor {
        Actor {
            kind: "user",
            id: Some(id.to_string()),
        }
    }

    /// The API key a request came with, else the member it is by.
    pub fn key_or_user(api_key: Option<&str>, user: &str) -> Actor {
        match api_key {
            Some(key) => Actor {
                kind: "api_key",
                id: Some(key.to_string()),
            },
            None => Actor::user(user),
        }
    }
}

impl Actor {
    /// Records what this actor did to `target` (kind, id) in the caller's transaction.
    pub async fn audit(
        &self,
        tx: &mut crate::db::Tx,
        at_ms: i64,
        org_id: &str,
        action: &str,
        target: (&str, &str),
        detail: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        audit::record(
            tx,
            at_ms,
            audit::AuditEntry {
                org_id: Some(org_id),
                actor_kind: self.kind,
                actor_id: self.id.as_deref(),
                action,
                target_kind: Some(target.0),
                target_id: Some(target.1),
                detail,
            },
        )
        .await
    }
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor {
            kind: "api_key",
            id: Some(self.api_key_id.clone()),
        }
    }
}
