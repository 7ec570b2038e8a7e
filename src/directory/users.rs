//! Users: people of an organisation with roles, department, region, several direct
//! superiors, and typed platform identities (one person may be linked across platforms).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::access::Actor;
use crate::db::{self, new_id, Arg, Db, Select, Tx};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::policy::Grant;
use crate::validate;

/// The built-in roles; an organisation's rule set may add more (`[[roles]]`).
pub const ROLES: [&str; 9] = crate::rules::access::BUILTIN_ROLES;

/// `left`: 离职, kept for history and hand-over.
pub const STATUSES: [&str; 2] = ["active", "left"];

/// Who set a user's direct superiors: the platform's directory sync, or an admin by hand
/// (then the sync leaves them alone until they are handed back to the directory).
pub const SUPERIOR_SOURCES: [&str; 2] = ["directory", "manual"];

/// The `user_roles.source` of a role the LDAP directory sync granted: it follows group
/// membership, and the next sync grants it again if an admin removes it.
pub const LDAP_ROLE_SOURCE: &str = "ldap";

/// The user's roles granted by the LDAP directory sync (sorted).
pub async fn directory_roles(db: &Db, user_id: &str) -> Result<Vec<String>> {
    Ok(
        sqlx::query("SELECT role FROM user_roles WHERE user_id = $1 AND source = $2 ORDER BY role")
            .bind(user_id)
            .bind(LDAP_ROLE_SOURCE)
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|r| r.get("role"))
            .collect(),
    )
}

/// Where a person's identities come from: the three chat platforms and the LDAP directory.
pub const IDENTITY_SOURCES: [&str; 4] = ["wecom", "dingtalk", "feishu", "ldap"];

/// The id kinds each identity source issues for a person.
pub fn identity_kinds(platform: &str) -> Option<&'static [&'static str]> {
    match platform {
        "wecom" => Some(&["userid", "open_userid"]),
        "dingtalk" => Some(&["userid", "unionid"]),
        "feishu" => Some(&["user_id", "open_id", "union_id"]),
        "ldap" => Some(super::sync::LDAP_ID_SPACE.kinds),
        _ => None,
    }
}

fn identity_source_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&IDENTITY_SOURCES)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `wecom`, `dingtalk`, `feishu`, or `ldap` (a member synced from the LDAP directory).
    #[schema(schema_with = identity_source_schema)]
    pub platform: String,
    /// wecom: userid | open_userid; dingtalk: userid | unionid; feishu: user_id | open_id | union_id; ldap: uid.
    #[schema(schema_with = identity_kind_schema)]
    pub kind: String,
    #[schema(min_length = 1, max_length = 128)]
    pub value: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub department: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    #[schema(schema_with = roles_schema)]
    pub roles: Vec<String>,
    /// Ids of the user's direct superiors.
    #[serde(default)]
    pub superiors: Vec<String>,
    #[serde(default)]
    pub identities: Vec<Identity>,
}

/// Fields left out stay as they are; lists given replace the stored ones.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    pub department: Option<String>,
    pub region: Option<String>,
    /// `active` or `left` (离职).
    #[schema(schema_with = status_schema)]
    pub status: Option<String>,
    #[schema(schema_with = roles_schema)]
    pub roles: Option<Vec<String>>,
    /// Replaces the direct superiors; they become `manual` (kept by the directory sync)
    /// unless `superior_source` says otherwise.
    pub superiors: Option<Vec<String>>,
    /// `manual`: the directory sync leaves the superiors alone; `directory`: handed back,
    /// the next sync sets them from the platform's 直属上级.
    #[schema(schema_with = superior_source_schema)]
    pub superior_source: Option<String>,
    pub identities: Option<Vec<Identity>>,
}

/// The names of the given fields among those that grant authority.
fn given(fields: [(&'static str, bool); 4]) -> Vec<&'static str> {
    fields
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(name, _)| name)
        .collect()
}

impl NewUser {
    /// Roles, superiors and platform identities grant authority (an identity is a sign-in).
    fn granting(&self) -> Vec<&'static str> {
        given([
            ("status", false),
            ("roles", !self.roles.is_empty()),
            ("superiors", !self.superiors.is_empty()),
            ("identities", !self.identities.is_empty()),
        ])
    }
}

impl UserPatch {
    /// As for a new user, and the status too: a leaver re-activated signs in again.
    fn granting(&self) -> Vec<&'static str> {
        given([
            ("status", self.status.is_some()),
            ("roles", self.roles.is_some()),
            (
                "superiors",
                self.superiors.is_some() || self.superior_source.is_some(),
            ),
            ("identities", self.identities.is_some()),
        ])
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub department: Option<String>,
    pub region: Option<String>,
    pub status: String,
    pub roles: Vec<String>,
    pub superiors: Vec<String>,
    /// `directory` (kept in step by the directory sync) or `manual` (set by an admin; the
    /// sync leaves them alone).
    #[schema(schema_with = superior_source_schema)]
    pub superior_source: String,
    pub identities: Vec<Identity>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Only users holding this role.
    #[param(schema_with = role_schema)]
    pub role: Option<String>,
    /// With `identity_kind` and `identity_value`: the user behind a platform (or LDAP) id.
    #[param(schema_with = identity_source_schema)]
    pub platform: Option<String>,
    #[param(schema_with = identity_kind_schema)]
    pub identity_kind: Option<String>,
    pub identity_value: Option<String>,
}

/// A role key: the built-in ones or any the organisation's rule set adds.
fn role_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some("^[a-z0-9_]{1,32}$"))
        .description(Some(format!(
            "a role of the rule set in force; built in: {}",
            ROLES.join(", ")
        )))
        .build()
}

fn roles_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(role_schema())
        .build()
}

fn status_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&STATUSES)
}

fn superior_source_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&SUPERIOR_SOURCES)
}

/// Every kind some platform issues (which kinds go with which platform is checked too).
fn identity_kind_schema() -> utoipa::openapi::Object {
    let mut kinds: Vec<&str> = IDENTITY_SOURCES
        .iter()
        .flat_map(|p| identity_kinds(p).unwrap_or_default())
        .copied()
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    crate::validate::one_of(&kinds)
}

/// Roles must be in the organisation's rule set in force (`[[roles]]`).
async fn check_roles(db: &Db, org_id: &str, roles: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if roles.is_empty() {
        return Ok(out);
    }
    let rules = crate::rules::Rules::new(db.clone()).current(org_id).await?;
    for r in roles {
        if !rules.has_role(r) {
            let known: Vec<&str> = rules.roles.iter().map(|r| r.key.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown role `{r}`; roles are {} (roles are set in the rule set)",
                known.join(", ")
            )));
        }
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    Ok(out)
}

fn check_identities(ids: &[Identity]) -> Result<Vec<Identity>> {
    let mut out: Vec<Identity> = Vec::new();
    for i in ids {
        let kinds = identity_kinds(&i.platform).ok_or_else(|| {
            Error::invalid(format!(
                "unknown platform `{}`; use wecom, dingtalk, feishu or ldap",
                i.platform
            ))
        })?;
        if !kinds.contains(&i.kind.as_str()) {
            return Err(Error::invalid(format!(
                "identity kind `{}` is not one of {} for {}",
                i.kind,
                kinds.join(", "),
                i.platform
            )));
        }
        let value = validate::text("identity value", &i.value, 128)?;
        let id = Identity {
            platform: i.platform.clone(),
            kind: i.kind.clone(),
            value,
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Superiors must be other users of the same organisation.
async fn check_superiors(
    tx: &mut Tx,
    org_id: &str,
    user_id: &str,
    sups: &[String],
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for s in sups {
        let s = validate::id("superior", s)?;
        if s == user_id {
            return Err(Error::invalid("a user cannot be their own superior"));
        }
        if !exists_in(tx, org_id, &s).await? {
            return Err(Error::UnknownReference(format!(
                "superior `{s}` does not exist"
            )));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The ids of the organisation's active members holding `role`, in id order.
pub async fn active_with_role(tx: &mut Tx, org_id: &str, role: &str) -> Result<Vec<String>> {
    Ok(sqlx::query(
        "SELECT u.id FROM users u JOIN user_roles r ON r.user_id = u.id \
         WHERE u.org_id = $1 AND r.role = $2 AND u.status = 'active' ORDER BY u.id",
    )
    .bind(org_id)
    .bind(role)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| r.get("id"))
    .collect())
}

pub async fn exists_in(tx: &mut Tx, org_id: &str, id: &str) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM users WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&mut **tx)
            .await?
            .is_some(),
    )
}

/// Roles kept keep their source (one the LDAP sync granted stays LDAP-managed); roles
/// added are the admin's (`source = 'admin'`, the column's default).
async fn write_roles(tx: &mut Tx, user_id: &str, roles: &[String]) -> Result<()> {
    let held: Vec<String> = sqlx::query("SELECT role FROM user_roles WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| r.get("role"))
        .collect();
    for r in held.iter().filter(|r| !roles.contains(r)) {
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
            .bind(user_id)
            .bind(r)
            .execute(&mut **tx)
            .await?;
    }
    for r in roles.iter().filter(|r| !held.contains(r)) {
        sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
            .bind(user_id)
            .bind(r)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn write_superiors(tx: &mut Tx, user_id: &str, sups: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM user_superiors WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for s in sups {
        sqlx::query("INSERT INTO user_superiors (user_id, superior_id) VALUES ($1, $2)")
            .bind(user_id)
            .bind(s)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn write_identities(
    tx: &mut Tx,
    org_id: &str,
    user_id: &str,
    ids: &[Identity],
    now_ms: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM user_identities WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for i in ids {
        let res = sqlx::query(
            "INSERT INTO user_identities (org_id, platform, kind, value, user_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(org_id)
        .bind(&i.platform)
        .bind(&i.kind)
        .bind(&i.value)
        .bind(user_id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => {
                return Err(Error::Conflict(format!(
                    "{} {} `{}` already belongs to another user",
                    i.platform, i.kind, i.value
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Creates a user; only a writer that may grant gives them roles, superiors or identities.
pub async fn create(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    grant: Grant,
    new: NewUser,
) -> Result<User> {
    let granted = new.granting();
    grant.require(&granted)?;
    let name = validate::text("name", &new.name, 100)?;
    let department = validate::opt_text("department", new.department.as_deref(), 200)?;
    let region = validate::opt_text("region", new.region.as_deref(), 100)?;
    let roles = check_roles(db, org_id, &new.roles).await?;
    let identities = check_identities(&new.identities)?;
    let id = new_id();
    let mut tx = db.begin().await?;
    let superiors = check_superiors(&mut tx, org_id, &id, &new.superiors).await?;
    sqlx::query(
        "INSERT INTO users (id, org_id, name, department, region, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&name)
    .bind(&department)
    .bind(&region)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    write_roles(&mut tx, &id, &roles).await?;
    write_superiors(&mut tx, &id, &superiors).await?;
    write_identities(&mut tx, org_id, &id, &identities, now_ms).await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "user.create",
            ("user", &id),
            serde_json::json!({"roles": roles, "fields": granted}),
        )
        .await?;
    tx.commit().await?;
    get(db, org_id, &id).await
}

/// Changes a user; the audit entry names the fields changed. Only a writer that may
/// grant changes the status, roles, superiors or identities.
pub async fn update(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    grant: Grant,
    id: &str,
    patch: UserPatch,
) -> Result<User> {
    grant.require(&patch.granting())?;
    let new_roles = match &patch.roles {
        Some(r) => Some(check_roles(db, org_id, r).await?),
        None => None,
    };
    let mut tx = db.begin().await?;
    if !exists_in(&mut tx, org_id, id).await? {
        return Err(Error::NotFound { what: "user" });
    }
    let mut changed: Vec<&str> = Vec::new();
    // What the authority-granting fields became, beside the names of the fields given.
    let mut detail = serde_json::Map::new();
    if let Some(n) = &patch.name {
        let n = validate::text("name", n, 100)?;
        set_column(&mut tx, "name", Some(n), id).await?;
        changed.push("name");
    }
    if let Some(d) = &patch.department {
        let d = validate::opt_text("department", Some(d), 200)?;
        set_column(&mut tx, "department", d, id).await?;
        changed.push("department");
    }
    if let Some(r) = &patch.region {
        let r = validate::opt_text("region", Some(r), 100)?;
        set_column(&mut tx, "region", r, id).await?;
        changed.push("region");
    }
    if let Some(s) = &patch.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Error::invalid("status must be `active` or `left`"));
        }
        set_column(&mut tx, "status", Some(s.clone()), id).await?;
        changed.push("status");
    }
    if let Some(roles) = new_roles {
        write_roles(&mut tx, id, &roles).await?;
        changed.push("roles");
        detail.insert("roles".into(), serde_json::json!(roles));
    }
    if let Some(s) = &patch.superiors {
        let sups = check_superiors(&mut tx, org_id, id, s).await?;
        write_superiors(&mut tx, id, &sups).await?;
        changed.push("superiors");
        detail.insert("superiors".into(), serde_json::json!(sups));
    }
    // Superiors set by hand are kept by the directory sync, unless handed back.
    let source = match (&patch.superior_source, &patch.superiors) {
        (Some(s), _) if SUPERIOR_SOURCES.contains(&s.as_str()) => Some(s.as_str()),
        (Some(_), _) => {
            return Err(Error::invalid(
                "superior_source must be `directory` or `manual`",
            ))
        }
        (None, Some(_)) => Some("manual"),
        (None, None) => None,
    };
    if let Some(source) = source {
        set_column(&mut tx, "superior_source", Some(source.into()), id).await?;
        if patch.superior_source.is_some() {
            changed.push("superior_source");
        }
        detail.insert("superior_source".into(), source.into());
    }
    if let Some(i) = &patch.identities {
        let ids = check_identities(i)?;
        write_identities(&mut tx, org_id, id, &ids, now_ms).await?;
        changed.push("identities");
    }
    detail.insert("fields".into(), serde_json::json!(changed));
    sqlx::query("UPDATE users SET updated_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "user.update",
            ("user", id),
            serde_json::Value::Object(detail),
        )
        .await?;
    tx.commit().await?;
    get(db, org_id, id).await
}

/// `column` is always one of a fixed set chosen by the caller above, never user input.
async fn set_column(
    tx: &mut Tx,
    column: &'static str,
    value: Option<String>,
    id: &str,
) -> Result<()> {
    sqlx::query(&format!("UPDATE users SET {column} = $1 WHERE id = $2"))
        .bind(value)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get(db: &Db, org_id: &str, id: &str) -> Result<User> {
    let mut sel = Select::new();
    sel.and("org_id = {}", Arg::Text(org_id.into()))
        .and("id = {}", Arg::Text(id.into()));
    let mut users = load(db, &sel, "LIMIT {limit}", 1).await?;
    users.pop().ok_or(Error::NotFound { what: "user" })
}

pub async fn list(
    db: &Db,
    org_id: &str,
    filter: &UserFilter,
    page: &PageRequest,
) -> Result<Page<User>> {
    let mut sel = Select::org_page(org_id, page);
    if let Some(role) = &filter.role {
        sel.and(
            "id IN (SELECT user_id FROM user_roles WHERE role = {})",
            Arg::Text(role.clone()),
        );
    }
    match (
        &filter.platform,
        &filter.identity_kind,
        &filter.identity_value,
    ) {
        (Some(p), Some(k), Some(v)) => {
            sel.and_all(
                "id IN (SELECT user_id FROM user_identities \
                 WHERE platform = {} AND kind = {} AND value = {})",
                vec![
                    Arg::Text(p.clone()),
                    Arg::Text(k.clone()),
                    Arg::Text(v.clone()),
                ],
            );
        }
        (None, None, None) => {}
        _ => {
            return Err(Error::invalid(
                "platform, identity_kind and identity_value go together",
            ))
        }
    }
    let users = load(db, &sel, "ORDER BY id LIMIT {limit}", page.limit + 1).await?;
    Ok(Page::from_rows(users, page, |u| &u.id))
}

/// Every user of the organisation, active ones first, each group by name.
pub async fn all(db: &Db, org_id: &str) -> Result<Vec<User>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = crate::page::PageParams {
            limit: Some(crate::page::MAX_LIMIT),
            cursor,
        }
        .validate()?;
        let mut got = list(db, org_id, &UserFilter::default(), &page).await?;
        out.append(&mut got.items);
        cursor = got.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| (&a.status, &a.name, &a.id).cmp(&(&b.status, &b.name, &b.id)));
    Ok(out)
}

/// The user an operator names: an id, a platform member id as `wecom:USERID` (also
/// `dingtalk:`, `feishu:`, and `ldap:UID`), or a name no one else has.
pub async fn find(db: &Db, org_id: &str, who: &str) -> Result<User> {
    let who = who.trim();
    if let Some((platform, value)) = who.split_once(':') {
        let space = match crate::chat::event::Platform::parse(platform) {
            Some(p) => Some(super::sync::IdSpace::from(p)),
            None if platform == super::sync::LDAP_ID_SPACE.platform => {
                Some(super::sync::LDAP_ID_SPACE)
            }
            None => None,
        };
        if let Some(space) = space {
            let filter = UserFilter {
                role: None,
                platform: Some(space.platform.into()),
                identity_kind: Some(space.kinds[0].into()),
                identity_value: Some(value.into()),
            };
            let page = PageRequest {
                limit: 1,
                after: None,
            };
            let found = list(db, org_id, &filter, &page).await?.items.pop();
            return found.ok_or_else(|| {
                Error::UnknownReference(format!("no member has the {platform} id `{value}`"))
            });
        }
    }
    if validate::id("user", who).is_ok() {
        match get(db, org_id, who).await {
            Ok(u) => return Ok(u),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut named: Vec<User> = all(db, org_id)
        .await?
        .into_iter()
        .filter(|u| u.name == who)
        .collect();
    match named.len() {
        1 => Ok(named.remove(0)),
        0 => Err(Error::UnknownReference(format!(
            "no member is called or has the id `{who}`; `closeloop users list` shows them"
        ))),
        _ => Err(Error::Conflict(format!(
            "several members are called `{who}`: {}; name one by id",
            named
                .iter()
                .map(|u| u.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn load(db: &Db, sel: &Select, tail: &str, limit: i64) -> Result<Vec<User>> {
    let sql = sel.sql(
        "SELECT id, org_id, name, department, region, status, superior_source, created_at, updated_at FROM users",
        tail,
    );
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    let mut users: Vec<User> = rows
        .iter()
        .map(|r| User {
            id: r.get("id"),
            org_id: r.get("org_id"),
            name: r.get("name"),
            department: r.get("department"),
            region: r.get("region"),
            status: r.get("status"),
            roles: Vec::new(),
            superiors: Vec::new(),
            superior_source: r.get("superior_source"),
            identities: Vec::new(),
            created_at: crate::clock::rfc3339(r.get("created_at")),
            updated_at: crate::clock::rfc3339(r.get("updated_at")),
        })
        .collect();
    if users.is_empty() {
        return Ok(users);
    }
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let placeholders = in_list(ids.len());
    let mut roles: HashMap<String, Vec<String>> = HashMap::new();
    let mut sups: HashMap<String, Vec<String>> = HashMap::new();
    let mut idents: HashMap<String, Vec<Identity>> = HashMap::new();

    let sql = format!(
        "SELECT user_id, role FROM user_roles WHERE user_id IN ({placeholders}) ORDER BY role"
    );
    for r in bind_all(sqlx::query(&sql), &ids)
        .fetch_all(&db.pool)
        .await?
    {
        roles
            .entry(r.get("user_id"))
            .or_default()
            .push(r.get("role"));
    }
    let sql = format!(
        "SELECT user_id, superior_id FROM user_superiors WHERE user_id IN ({placeholders}) ORDER BY superior_id"
    );
    for r in bind_all(sqlx::query(&sql), &ids)
        .fetch_all(&db.pool)
        .await?
    {
        sups.entry(r.get("user_id"))
            .or_default()
            .push(r.get("superior_id"));
    }
    let sql = format!(
        "SELECT user_id, platform, kind, value FROM user_identities WHERE user_id IN ({placeholders}) \
         ORDER BY platform, kind, value"
    );
    for r in bind_all(sqlx::query(&sql), &ids)
        .fetch_all(&db.pool)
        .await?
    {
        idents.entry(r.get("user_id")).or_default().push(Identity {
            platform: r.get("platform"),
            kind: r.get("kind"),
            value: r.get("value"),
        });
    }
    for u in &mut users {
        u.roles = roles.remove(&u.id).unwrap_or_default();
        u.superiors = sups.remove(&u.id).unwrap_or_default();
        u.identities = idents.remove(&u.id).unwrap_or_default();
    }
    Ok(users)
}

/// `$1, $2, …, $n` for an `IN (…)` list.
pub fn in_list(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for v in values {
        q = q.bind(v.as_str());
    }
    q
}
