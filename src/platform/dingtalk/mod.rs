//! DingTalk (钉钉).

pub mod crypto;
