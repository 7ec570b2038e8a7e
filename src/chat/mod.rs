//! What the domain knows of the chat platforms, without naming one: the event model every
//! platform's callbacks map into, a customer and a member as a platform describes them, and
//! the directory the domain may ask about people. The platform adapters (`crate::platform`)
//! implement these; no domain module imports an adapter.

pub mod event;

pub use event::Platform;

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
    fn members(&self) -> crate::jobs::BoxFuture<'_, Result<Vec<Member>, crate::jobs::JobError>>;

    /// One member by platform id.
    fn member<'a>(
        &'a self,
        platform_id: &'a str,
    ) -> crate::jobs::BoxFuture<'a, Result<Member, crate::jobs::JobError>>;
}

/// A member as a platform's directory lists them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The platform's member id (WeCom userid).
    pub platform_id: String,
    pub name: String,
    pub department: Option<String>,
    /// Platform ids of direct superiors.
    pub leaders: Vec<String>,
    pub active: bool,
}

/// How long after a click a card can still be changed on its platform: WeCom's one-shot
/// `response_code` lasts 72 hours; Feishu edits a message for 14 days after it was sent
/// (its update job checks that too); DingTalk updates a card by its `outTrackId` with no
/// documented limit — 30 days keeps a forgotten request from editing an old card.
pub fn card_update_window_ms(platform: Option<Platform>) -> i64 {
    const HOUR: i64 = 3600 * 1000;
    match platform {
        Some(Platform::Feishu) => 14 * 24 * HOUR,
        Some(Platform::Dingtalk) => 30 * 24 * HOUR,
        Some(Platform::Wecom) | None => 72 * HOUR,
    }
}

/// The chat platforms, as the API spells them (`wecom`, `dingtalk`, `feishu`).
pub fn platform_schema() -> utoipa::openapi::schema::Object {
    crate::validate::one_of(&Platform::ALL.map(Platform::as_str))
}
