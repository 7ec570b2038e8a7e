//! WeCom (企业微信).

pub mod api;
pub mod cards;
pub mod contacts;
pub mod crypto;
pub mod dial;
pub mod events;
pub mod inbound;
pub mod jsapi;
pub mod schedule;
pub mod token;
