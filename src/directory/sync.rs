//! Keeping users in step with a platform's directory: names, departments and direct
//! superiors come from the platform; closeloop roles are never touched, so they survive
//! every sync, and neither are superiors an admin set by hand. Members the platform no
//! longer lists are marked `left` (their history and customers stay; hand-over is an
//! ownership change) — unless the listing shrank so much that it is more likely cut short
//! than true (see [`MAX_LEFT_SHARE_PERCENT`]).

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use crate::chat::event::Platform;
use crate::db::{new_id, Db, Tx};
use crate::error::Result;

/// A full sync that would mark more than this share of the active members `left` at once
/// (and more than [`MAX_QUIET_LEAVERS`] of them), or would leave nobody listed, marks no one:
/// such a listing is more likely a partial answer or a lost permission than a wave of
/// departures. The next sync or an admin decides; a departure the platform reports on its
/// own (a user-left event) still applies.
pub const MAX_LEFT_SHARE_PERCENT: usize = 20;
/// Up to this many members may leave in one sync whatever their share (small teams).
pub const MAX_QUIET_LEAVERS: usize = 5;

pub use crate::chat::Member;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SyncOutcome {
    pub created: usize,
    pub updated: usize,
    pub left: usize,
    /// Members no longer listed but kept active because the listing shrank too sharply.
    pub withheld_left: usize,
}

/// Where a directory's member ids live in `user_identities`: a chat platform's member ids,
/// or another directory's (LDAP: `ldap`/`uid`). New members get an identity of the first
/// kind; a look-up tries the kinds in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSpace {
    pub platform: &'static str,
    pub kinds: &'static [&'static str],
}

/// Where LDAP people's ids are kept in `user_identities` (the LDAP directory,
/// [`super::ldap`]; here so that users and the sync need not import it).
pub const LDAP_ID_SPACE: IdSpace = IdSpace {
    platform: "ldap",
    kinds: &["uid"],
};

impl From<Platform> for IdSpace {
    /// Feishu names a member by `open_id` where the app may not read `user_id` (card
    /// clicks, sign-in), so there an `open_id` identity is tried next.
    fn from(p: Platform) -> IdSpace {
        let kinds: &'static [&'static str] = match p {
            Platform::Feishu => &["user_id", "open_id"],
            Platform::Wecom | Platform::Dingtalk => &["userid"],
        };
        debug_assert_eq!(kinds[0], p.member_id_kind());
        IdSpace {
            platform: p.as_str(),
            kinds,
        }
    }
}

/// The closeloop user behind a directory member id.
pub async fn user_of(
    tx: &mut Tx,
    org_id: &str,
    space: impl Into<IdSpace>,
    platform_id: &str,
) -> Result<Option<String>> {
    let space = space.into();
    for kind in space.kinds {
        let found = sqlx::query(
            "SELECT user_id FROM user_identities WHERE org_id = $1 AND platform = $2 AND kind = $3 AND value = $4",
        )
        .bind(org_id)
        .bind(space.platform)
        .bind(*kind)
        .bind(platform_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.get("user_id"));
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Creates or updates one member (without superiors); returns (user id, created).
pub async fn upsert_member(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    space: impl Into<IdSpace>,
    m: &Member,
) -> Result<(String, bool)> {
    let space = space.into();
    let name: String = m
        .name
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let name = if name.trim().is_empty() {
        m.platform_id.clone()
    } else {
        name
    };
    let department: Option<String> = m.department.as_ref().map(|d| d.chars().take(200).collect());
    let status = if m.active { "active" } else { "left" };
    if let Some(id) = user_of(tx, org_id, space, &m.platform_id).await? {
        sqlx::query("UPDATE users SET name = $1, department = $2, status = $3, updated_at = $4 WHERE id = $5")
            .bind(&name)
            .bind(&department)
            .bind(status)
            .bind(now_ms)
            .bind(&id)
            .execute(&mut **tx)
            .await?;
        return Ok((id, false));
    }
    let id = new_id();
    sqlx::query(
        "INSERT INTO users (id, org_id, name, department, region, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, NULL, $5, $6, $6)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&name)
    .bind(&department)
    .bind(status)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO user_identities (org_id, platform, kind, value, user_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(org_id)
    .bind(space.platform)
    .bind(space.kinds[0])
    .bind(&m.platform_id)
    .bind(&id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok((id, true))
}

/// Replaces a user's superiors with the members behind `leaders` (unknown ones skipped),
/// unless an admin set them by hand (`superior_source = 'manual'`): those the directory
/// never overrides.
pub async fn set_leaders(
    tx: &mut Tx,
    org_id: &str,
    space: impl Into<IdSpace>,
    user_id: &str,
    leaders: &[String],
) -> Result<()> {
    let space = space.into();
    let manual = sqlx::query("SELECT 1 FROM users WHERE id = $1 AND superior_source = 'manual'")
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if manual {
        return Ok(());
    }
    sqlx::query("DELETE FROM user_superiors WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for l in leaders {
        if let Some(sup) = user_of(tx, org_id, space, l).await? {
            if sup != user_id {
                sqlx::query("INSERT INTO user_superiors (user_id, superior_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(user_id)
                    .bind(&sup)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Marks the member `left` (deleted on the platform).
pub async fn member_left(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    platform: Platform,
    platform_id: &str,
) -> Result<bool> {
    let Some(id) = user_of(tx, org_id, platform, platform_id).await? else {
        return Ok(false);
    };
    sqlx::query("UPDATE users SET status = 'left', updated_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// A full sync: every listed member upserted, then superiors (leaders may be listed
/// after their reports), then everyone with this platform's id who is no longer listed
/// marked `left` (unless too many would be: see [`MAX_LEFT_SHARE_PERCENT`]). One
/// transaction, audited as `directory.sync` by the system with the counts.
pub async fn full_sync(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    space: impl Into<IdSpace>,
    members: &[Member],
) -> Result<SyncOutcome> {
    let space = space.into();
    let mut tx = db.begin().await?;
    let out = full_sync_in(&mut tx, now_ms, org_id, space, members).await?;
    crate::access::Actor::system()
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "directory.sync",
            ("directory", space.platform),
            serde_json::to_value(&out).unwrap_or_default(),
        )
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// [`full_sync`] in the caller's transaction.
pub async fn full_sync_in(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    space: impl Into<IdSpace>,
    members: &[Member],
) -> Result<SyncOutcome> {
    let space = space.into();
    let mut out = SyncOutcome::default();
    let mut ids: HashMap<&str, String> = HashMap::new();
    for m in members {
        let (id, created) = upsert_member(tx, now_ms, org_id, space, m).await?;
        if created {
            out.created += 1;
        } else {
            out.updated += 1;
        }
        ids.insert(&m.platform_id, id);
    }
    for m in members {
        set_leaders(tx, org_id, space, &ids[m.platform_id.as_str()], &m.leaders).await?;
    }
    let listed: std::collections::HashSet<&str> =
        members.iter().map(|m| m.platform_id.as_str()).collect();
    let known = sqlx::query(
        "SELECT i.value, u.id FROM user_identities i JOIN users u ON u.id = i.user_id \
         WHERE i.org_id = $1 AND i.platform = $2 AND i.kind = $3 AND u.status = 'active'",
    )
    .bind(org_id)
    .bind(space.platform)
    .bind(space.kinds[0])
    .fetch_all(&mut **tx)
    .await?;
    let active = known.len();
    let missing: Vec<String> = known
        .into_iter()
        .filter(|row| !listed.contains(row.get::<String, _>("value").as_str()))
        .map(|row| row.get("id"))
        .collect();
    let too_many =
        missing.len() > MAX_QUIET_LEAVERS && missing.len() * 100 > active * MAX_LEFT_SHARE_PERCENT;
    if !missing.is_empty() && (members.is_empty() || too_many) {
        tracing::warn!(
            platform = space.platform,
            org = org_id,
            unlisted = missing.len(),
            active,
            "the directory listing shrank too sharply to trust; nobody is marked left"
        );
        out.withheld_left = missing.len();
    } else {
        for id in &missing {
            sqlx::query("UPDATE users SET status = 'left', updated_at = $1 WHERE id = $2")
                .bind(now_ms)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            // A departure found by reading the directory: closeloop's own finding about
            // the member, once (only active members are compared).
            let point = crate::tracking::NewPoint {
                actor_kind: crate::tracking::ActorKind::Platform,
                customer: None,
                platform: Some(space.platform.into()),
                ..crate::tracking::NewPoint::new(
                    org_id,
                    id,
                    "",
                    MEMBER_LEFT,
                    crate::tracking::Source::System,
                    serde_json::json!({"via": "directory_sync"}),
                )
            };
            crate::tracking::write_in(tx, now_ms, &point, chrono_tz::UTC).await?;
        }
        out.left = missing.len();
    }
    Ok(out)
}

/// The scheduled full sync of every configured platform's directory.
pub struct SyncJob {
    pub db: Db,
    pub clock: crate::clock::SharedClock,
    pub org_id: String,
    pub directories: Vec<(Platform, std::sync::Arc<dyn crate::chat::Directory>)>,
}

pub const KIND: &str = "directory.sync";

impl crate::jobs::Handler for SyncJob {
    fn perform<'a>(
        &'a self,
        _job: &'a crate::jobs::ClaimedJob,
    ) -> crate::jobs::BoxFuture<'a, std::result::Result<serde_json::Value, crate::jobs::JobError>>
    {
        Box::pin(async move {
            let mut report = serde_json::Map::new();
            for (platform, dir) in &self.directories {
                let members = dir.members().await?;
                let out = full_sync(
                    &self.db,
                    self.clock.now_ms(),
                    &self.org_id,
                    *platform,
                    &members,
                )
                .await?;
                report.insert(
                    platform.as_str().into(),
                    serde_json::to_value(out).unwrap_or_default(),
                );
            }
            Ok(serde_json::Value::Object(report))
        })
    }
}

/// A member deleted on the platform (source `platform_event`, actor kind `platform`, the
/// actor the member who left). Leaving moves no customer: hand-over is an ownership change.
pub const MEMBER_LEFT: &str = "platform.member_left";

/// The inbox handler of directory events: members created, updated or deleted one by
/// one, and several changes at once (read the directory again).
pub struct MemberEvents {
    /// Per platform: where a member's details are read.
    pub directories: HashMap<Platform, std::sync::Arc<dyn crate::chat::Directory>>,
}

impl MemberEvents {
    async fn handle(
        &self,
        tx: &mut Tx,
        ev: &crate::inbox::Incoming,
        fetched: &serde_json::Value,
    ) -> Result<crate::inbox::Outcome> {
        use crate::chat::event::EventKind;
        let (org_id, p, now) = (ev.org_id.as_str(), ev.platform, ev.now_ms);
        match &ev.event.kind {
            EventKind::UserDeleted { user_id } => {
                if member_left(tx, now, org_id, p, user_id).await? {
                    let member = user_of(tx, org_id, p, user_id).await?;
                    let point = crate::tracking::NewPoint::from_platform(
                        org_id,
                        crate::tracking::ActorKind::Platform,
                        member.as_deref(),
                        None,
                        MEMBER_LEFT,
                        crate::tracking::Source::PlatformEvent,
                        p.as_str(),
                        &ev.dedupe_key,
                        serde_json::json!({}),
                    );
                    crate::tracking::write_in(tx, now, &point, ev.tz).await?;
                }
                Ok(("processed", None))
            }
            EventKind::UserCreated { user_id } | EventKind::UserUpdated { user_id, .. } => {
                let Ok(member) = serde_json::from_value::<Member>(fetched["member"].clone()) else {
                    return Ok(("ignored", Some("no directory for this platform".into())));
                };
                if member.platform_id != *user_id {
                    // The userid itself changed: move the identity first.
                    sqlx::query(
                        "UPDATE user_identities SET value = $1 WHERE org_id = $2 AND platform = $3 AND kind = $4 AND value = $5",
                    )
                    .bind(&member.platform_id)
                    .bind(org_id)
                    .bind(p.as_str())
                    .bind(p.member_id_kind())
                    .bind(user_id)
                    .execute(&mut **tx)
                    .await?;
                }
                let (id, _) = upsert_member(tx, now, org_id, p, &member).await?;
                set_leaders(tx, org_id, p, &id, &member.leaders).await?;
                Ok(("processed", None))
            }
            EventKind::DirectoryChanged => {
                crate::jobs::enqueue(
                    tx,
                    now,
                    crate::jobs::NewJob::new(KIND, serde_json::json!({}))
                        .org(org_id)
                        .dedupe(format!("{KIND}:event:{}", ev.inbox_id)),
                )
                .await?;
                Ok((
                    "processed",
                    Some("several changes at once: the directory is read again".into()),
                ))
            }
            _ => Ok(("ignored", Some("not a directory event".into()))),
        }
    }
}

impl crate::inbox::EventHandler for MemberEvents {
    fn fetch<'a>(
        &'a self,
        _org_id: &'a str,
        platform: Platform,
        event: &'a crate::chat::event::InboundEvent,
    ) -> crate::jobs::BoxFuture<'a, std::result::Result<serde_json::Value, crate::jobs::JobError>>
    {
        use crate::chat::event::EventKind;
        Box::pin(async move {
            let Some(dir) = self.directories.get(&platform) else {
                return Ok(serde_json::Value::Null);
            };
            match &event.kind {
                EventKind::UserCreated { user_id } => {
                    Ok(serde_json::json!({"member": dir.member(user_id).await?}))
                }
                EventKind::UserUpdated {
                    user_id,
                    new_user_id,
                } => {
                    let id = new_user_id.as_deref().unwrap_or(user_id);
                    Ok(serde_json::json!({"member": dir.member(id).await?}))
                }
                _ => Ok(serde_json::Value::Null),
            }
        })
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        incoming: &'a crate::inbox::Incoming,
        fetched: &'a serde_json::Value,
    ) -> crate::jobs::BoxFuture<'a, Result<crate::inbox::Outcome>> {
        Box::pin(self.handle(tx, incoming, fetched))
    }
}
