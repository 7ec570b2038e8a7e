//! The chat platforms. Each hides behind one interface (later issues); here live the
//! pieces that need no network: callback signatures and encryption.

pub mod crypto;
pub mod dingtalk;
pub mod event;
pub mod feishu;
pub mod wecom;

/// Parses a stored callback body of `platform` again (inbox processing).
pub fn parse_stored(platform: event::Platform, body: &str) -> Result<event::InboundEvent, String> {
    match platform {
        event::Platform::Wecom => wecom::inbound::parse(body),
        other => Err(format!("no parser for {} callbacks yet", other.as_str())),
    }
}
