//! The chat platforms. Each hides behind one interface (later issues); here live the
//! pieces that need no network: callback signatures and encryption.

pub mod crypto;
pub mod dingtalk;
pub mod event;
pub mod feishu;
pub mod inbound;
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
