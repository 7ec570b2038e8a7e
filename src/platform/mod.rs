//! The chat platforms. Each hides behind one interface (later issues); here live the
//! pieces that need no network: callback signatures and encryption.

pub mod crypto;
pub mod dingtalk;
pub mod event;
pub mod feishu;
pub mod wecom;
