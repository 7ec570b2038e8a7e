//! Feishu / Lark (飞书).

pub mod crypto;
