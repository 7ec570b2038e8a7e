//! WeCom (企业微信).

pub mod crypto;
