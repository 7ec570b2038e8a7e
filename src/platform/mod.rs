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

/// Each platform's parser of stored callback bodies, for the inbox.
pub fn parsers() -> crate::inbox::Parsers {
    let mut parsers = crate::inbox::Parsers::default();
    parsers.register(event::Platform::Wecom, |b| {
        parse_stored(event::Platform::Wecom, b)
    });
    parsers.register(event::Platform::Feishu, |b| {
        parse_stored(event::Platform::Feishu, b)
    });
    parsers.register(event::Platform::Dingtalk, |b| {
        parse_stored(event::Platform::Dingtalk, b)
    });
    parsers
}

/// A meeting ended (source `platform_event`, actor kind `platform`, no customer: the
/// meeting's records, read afterwards, name the people in it).
pub const MEETING_ENDED: &str = "platform.meeting_ended";

/// The inbox handler of `meeting_changed`: queues the reading of the meeting's records,
/// and an ended meeting is a tracking point.
pub struct MeetingEvents;

impl crate::inbox::EventHandler for MeetingEvents {
    fn apply<'a>(
        &'a self,
        tx: &'a mut crate::db::Tx,
        ev: &'a crate::inbox::Incoming,
        _fetched: &'a serde_json::Value,
    ) -> crate::jobs::BoxFuture<'a, crate::error::Result<crate::inbox::Outcome>> {
        Box::pin(async move {
            let event::EventKind::MeetingChanged { meeting_id, ended } = &ev.event.kind else {
                return Ok(("ignored", Some("not a meeting event".into())));
            };
            let Some(job) =
                meeting_fetch_job(ev.platform, &ev.org_id, meeting_id, *ended, ev.now_ms)
            else {
                return Ok((
                    "ignored",
                    Some("no meeting records on this platform".into()),
                ));
            };
            crate::jobs::enqueue(tx, ev.now_ms, job).await?;
            if *ended {
                let mut point = crate::tracking::NewPoint::from_platform(
                    &ev.org_id,
                    crate::tracking::ActorKind::Platform,
                    None,
                    None,
                    MEETING_ENDED,
                    crate::tracking::Source::PlatformEvent,
                    ev.platform.as_str(),
                    // Keyed by the meeting, not the callback: a platform that reports the
                    // same end again under a new event id adds no second point.
                    &format!("meeting_ended:{meeting_id}"),
                    serde_json::json!({"meeting": meeting_id}),
                );
                // A platform's id that happens to read like a phone number stays out.
                if crate::tracking::check(&point).is_err() {
                    point.payload = serde_json::json!({});
                }
                crate::tracking::write_in(tx, ev.now_ms, &point, ev.tz).await?;
            }
            Ok(("processed", None))
        })
    }
}
