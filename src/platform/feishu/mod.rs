//! Feishu / Lark (飞书).

pub mod cards;
pub mod contacts;
pub mod crypto;
pub mod events;
pub mod inbound;
pub mod token;
pub mod vc;
