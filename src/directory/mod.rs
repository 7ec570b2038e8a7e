//! Organisations and their people: users, typed platform identities, roles, superiors.

pub mod orgs;
pub mod sync;
pub mod users;
