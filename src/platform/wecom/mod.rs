//! WeCom (企业微信).

pub mod crypto;
pub mod dial;
pub mod events;
pub mod inbound;
