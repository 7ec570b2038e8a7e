//! The chat platforms' adapters: callback signatures and encryption, API clients, cards,
//! directories, call and meeting records. They depend on the domain; the domain knows the
//! platforms only through the neutral types of [`crate::chat`].

pub use crate::chat::event;

pub mod crypto;
pub mod dingtalk;
pub mod feishu;
pub mod inbound;
pub mod wecom;

/// Parses a stored callback body of `platform` again (inbox processing).
/// The job that reads a meeting's records once a platform says it began or ended (queued
/// by the event's processing, keyed so a poll that saw the meeting adds nothing).
pub fn meeting_fetch_job(
    platform: event::Platform,
    org_id: &str,
    meeting_id: &str,
    ended: bool,
    now_ms: i64,
) -> Option<crate::jobs::NewJob> {
    match platform {
        event::Platform::Dingtalk => Some(dingtalk::conference::fetch_job(
            org_id, meeting_id, 1, now_ms, ended,
        )),
        event::Platform::Feishu => Some(feishu::vc::fetch_job(org_id, meeting_id, now_ms)),
        event::Platform::Wecom => None,
    }
}

pub fn parse_stored(platform: event::Platform, body: &str) -> Result<event::InboundEvent, String> {
    match platform {
        event::Platform::Wecom => wecom::inbound::parse(body),
        event::Platform::Feishu => feishu::inbound::parse(body),
        event::Platform::Dingtalk => dingtalk::inbound::parse(body),
    }
}
