//! Who may do what: API keys as principals, roles, and the audit log.

pub mod apikeys;
pub mod audit;

pub use apikeys::{ApiKeyRole, NewApiKey, Permission, Principal};

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
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor {
            kind: "api_key",
            id: Some(self.api_key_id.clone()),
        }
    }
}
