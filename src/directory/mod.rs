//! Organisations and their people: users, typed platform identities, roles, superiors.

pub mod ldap;
pub mod orgs;
pub mod sync;
pub mod users;
