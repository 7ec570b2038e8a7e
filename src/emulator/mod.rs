//! Local stand-ins for the chat platforms (WeCom, DingTalk, Feishu), speaking each one's
//! documented protocol on a local port: `closeloop demo` runs the WeCom one in place of
//! qyapi.weixin.qq.com, and the tests point closeloop at all three.
//!
//! Built into the binary for the demo and the tests only: the emulators use `crate::platform`
//! (signatures, encryption, event formats), and nothing but `demo.rs` and `tests/` uses them.
//! A platform adapter never imports an emulator.

pub mod dingtalk;
pub mod feishu;
pub mod kit;
pub mod wecom;
