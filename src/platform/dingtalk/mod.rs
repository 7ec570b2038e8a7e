//! DingTalk (钉钉).

pub mod api;
pub mod cards;
pub mod conference;
pub mod contacts;
pub mod crypto;
pub mod directory;
pub mod events;
pub mod inbound;
