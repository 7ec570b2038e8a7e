//! The chat platforms. Each hides behind one interface (later issues); here live the
//! pieces that need no network: callback signatures and encryption.

pub mod crypto;
pub mod dingtalk;
pub mod emulator_kit;
pub mod event;
pub mod feishu;
pub mod wecom;

/// A customer as a platform describes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExternalContact {
    pub external_user_id: String,
    pub name: String,
    pub corp_name: Option<String>,
    pub position: Option<String>,
    /// Numbers the rep noted for this customer.
    pub phones: Vec<String>,
}

/// What domain code may ask a platform about people, without naming the platform.
pub trait Directory: Send + Sync + 'static {
    /// The customer `external_user_id` as seen by the rep `follow_user` (platform id).
    fn external_contact<'a>(
        &'a self,
        external_user_id: &'a str,
        follow_user: &'a str,
    ) -> crate::jobs::BoxFuture<'a, Result<ExternalContact, crate::jobs::JobError>>;

    /// Every member of the organisation, with department and direct superiors.
    fn members(
        &self,
    ) -> crate::jobs::BoxFuture<
        '_,
        Result<Vec<crate::directory::sync::Member>, crate::jobs::JobError>,
    >;

    /// One member by platform id.
    fn member<'a>(
        &'a self,
        platform_id: &'a str,
    ) -> crate::jobs::BoxFuture<'a, Result<crate::directory::sync::Member, crate::jobs::JobError>>;
}

/// Parses a stored callback body of `platform` again (inbox processing).
/// How long after a click a card can still be changed on its platform: WeCom's one-shot
/// `response_code` lasts 72 hours; Feishu edits a message for 14 days after it was sent
/// (its update job checks that too); DingTalk updates a card by its `outTrackId` with no
/// documented limit — 30 days keeps a forgotten request from editing an old card.
pub fn card_update_window_ms(platform: Option<event::Platform>) -> i64 {
    const HOUR: i64 = 3600 * 1000;
    match platform {
        Some(event::Platform::Feishu) => 14 * 24 * HOUR,
        Some(event::Platform::Dingtalk) => 30 * 24 * HOUR,
        Some(event::Platform::Wecom) | None => 72 * HOUR,
    }
}

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
