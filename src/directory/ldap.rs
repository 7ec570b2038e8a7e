//! An LDAP / Active Directory server as a directory source: people with their department and
//! manager become users (identity `ldap`/`uid`), synced like a chat platform's directory
//! (see [`super::sync::full_sync_in`]: superiors set by hand stay, people gone are marked
//! `left`), and group memberships (`memberOf`) grant closeloop roles per
//! `[ldap.group_roles]`. Roles granted so are recorded with `source = 'ldap'` and follow
//! the membership; roles an admin set (`source = 'admin'`) are never touched.

use std::collections::{BTreeSet, HashMap, HashSet};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use serde::Serialize;
use sqlx::Row;

use super::sync::{full_sync_in, IdSpace, Member, SyncOutcome};
use crate::access::Actor;
use crate::config::LdapConfig;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};

/// Where LDAP people's ids are kept in `user_identities`.
pub const ID_SPACE: IdSpace = super::sync::LDAP_ID_SPACE;

/// The source recorded on a role the LDAP sync granted.
pub const ROLE_SOURCE: &str = super::users::LDAP_ROLE_SOURCE;

/// Entries asked for per page (the paged-results control, RFC 2696); Active Directory
/// answers at most 1000 entries per search without it.
const PAGE_SIZE: i32 = 500;

/// One person as read from the directory, before the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub member: Member,
    /// Closeloop roles from the person's groups.
    pub roles: BTreeSet<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LdapSyncOutcome {
    #[serde(flatten)]
    pub members: SyncOutcome,
    pub roles_granted: usize,
    pub roles_revoked: usize,
}

/// A DN compared the way directories do for the usual cases: case-insensitive, spaces
/// around `,` and `=` ignored (escaped characters are compared as written).
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

fn first<'a>(entry: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

fn all<'a>(entry: &'a SearchEntry, attr: &str) -> &'a [String] {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map_or(&[], |(_, v)| v.as_slice())
}

/// Active Directory's `userAccountControl` flag of a disabled account (ACCOUNTDISABLE).
const ACCOUNT_DISABLE: u32 = 0x2;

/// The people among `entries` (those without the id attribute are skipped): manager DNs
/// resolved to ids through the same listing (a manager outside it is no superior), groups
/// mapped to roles. An Active Directory account whose `userAccountControl` has the
/// disabled bit is listed as not active.
pub fn people(config: &LdapConfig, entries: &[SearchEntry]) -> Vec<Person> {
    let group_roles: HashMap<String, &Vec<String>> = config
        .group_roles
        .iter()
        .map(|(dn, roles)| (normalize_dn(dn), roles))
        .collect();
    let id_of_dn: HashMap<String, &str> = entries
        .iter()
        .filter_map(|e| Some((normalize_dn(&e.dn), first(e, &config.id_attribute)?)))
        .collect();
    let mut out = Vec::new();
    for e in entries {
        let Some(id) = first(e, &config.id_attribute) else {
            continue;
        };
        let name = config
            .name_attributes
            .iter()
            .find_map(|a| first(e, a))
            .unwrap_or(id);
        let leaders: Vec<String> = all(e, &config.manager_attribute)
            .iter()
            .filter_map(|dn| id_of_dn.get(&normalize_dn(dn)))
            .map(|id| id.to_string())
            .collect();
        let disabled = first(e, "userAccountControl")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .is_some_and(|flags| flags & ACCOUNT_DISABLE != 0);
        let roles: BTreeSet<String> = if disabled {
            BTreeSet::new()
        } else {
            all(e, &config.groups_attribute)
                .iter()
                .filter_map(|g| group_roles.get(&normalize_dn(g)))
                .flat_map(|roles| roles.iter().cloned())
                .collect()
        };
        out.push(Person {
            member: Member {
                platform_id: id.to_string(),
                name: name.to_string(),
                department: first(e, &config.department_attribute).map(str::to_string),
                leaders,
                active: !disabled,
            },
            roles,
        });
    }
    out
}

fn ldap_error(config: &LdapConfig, e: ldap3::LdapError) -> Error {
    // The error names the server and what failed, never the bind password.
    Error::Unavailable(format!("LDAP server {}: {e}", config.url))
}

/// Reads every person under `base_dn` matching `user_filter` (paged, bound as `bind_dn`).
pub async fn read(config: &LdapConfig) -> Result<Vec<SearchEntry>> {
    let err = |e| ldap_error(config, e);
    let settings = LdapConnSettings::new().set_conn_timeout(config.timeout);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &config.url)
        .await
        .map_err(err)?;
    ldap3::drive!(conn);
    if let (Some(dn), Some(pw)) = (&config.bind_dn, &config.bind_password) {
        ldap.with_timeout(config.timeout)
            .simple_bind(dn, pw.expose())
            .await
            .and_then(|r| r.success())
            .map_err(err)?;
    }
    let mut attrs: Vec<String> = vec![
        config.id_attribute.clone(),
        config.manager_attribute.clone(),
        config.department_attribute.clone(),
        config.groups_attribute.clone(),
        "userAccountControl".into(),
    ];
    attrs.extend(config.name_attributes.iter().cloned());
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(PAGE_SIZE)),
    ];
    let mut stream = ldap
        .with_timeout(config.timeout)
        .streaming_search_with(
            adapters,
            &config.base_dn,
            Scope::Subtree,
            &config.user_filter,
            attrs,
        )
        .await
        .map_err(err)?;
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await.map_err(err)? {
        entries.push(SearchEntry::construct(entry));
    }
    stream.finish().await.success().map_err(err)?;
    let _ = ldap.unbind().await;
    Ok(entries)
}

/// Reads the directory and syncs it: [`read`], then [`apply`].
pub async fn sync(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    config: &LdapConfig,
    actor: &Actor,
) -> Result<LdapSyncOutcome> {
    check_roles(config)?;
    let entries = read(config).await?;
    apply(db, now_ms, org_id, &people(config, &entries), actor).await
}

fn check_roles(config: &LdapConfig) -> Result<()> {
    for (group, roles) in &config.group_roles {
        if let Some(r) = roles
            .iter()
            .find(|r| !super::users::ROLES.contains(&r.as_str()))
        {
            return Err(Error::invalid(format!(
                "LDAP 组角色配置有误 (ldap.group_roles: group `{group}` maps to unknown role `{r}`; roles are {})",
                super::users::ROLES.join(", ")
            )));
        }
    }
    Ok(())
}

/// One transaction: the people synced as a directory, their LDAP-granted roles made to
/// match their groups (roles an admin set are untouched), LDAP-granted roles of people
/// marked `left` taken away, and a `directory.sync` audit entry with the counts.
pub async fn apply(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    people: &[Person],
    actor: &Actor,
) -> Result<LdapSyncOutcome> {
    let mut tx = db.begin().await?;
    let members: Vec<Member> = people.iter().map(|p| p.member.clone()).collect();
    let mut out = LdapSyncOutcome {
        members: full_sync_in(&mut tx, now_ms, org_id, ID_SPACE, &members).await?,
        ..LdapSyncOutcome::default()
    };
    let known = sqlx::query(
        "SELECT i.value, u.id, u.status FROM user_identities i JOIN users u ON u.id = i.user_id \
         WHERE i.org_id = $1 AND i.platform = $2 AND i.kind = $3",
    )
    .bind(org_id)
    .bind(ID_SPACE.platform)
    .bind(ID_SPACE.kinds[0])
    .fetch_all(&mut *tx)
    .await?;
    let wanted: HashMap<&str, &BTreeSet<String>> = people
        .iter()
        .map(|p| (p.member.platform_id.as_str(), &p.roles))
        .collect();
    let none = BTreeSet::new();
    for row in known {
        let value: String = row.get("value");
        let user_id: String = row.get("id");
        let status: String = row.get("status");
        let roles = match wanted.get(value.as_str()) {
            Some(roles) => *roles,
            // Not listed: once marked left, the memberships are gone with the person.
            None if status == "left" => &none,
            None => continue,
        };
        let (granted, revoked) = set_ldap_roles(&mut tx, &user_id, roles).await?;
        out.roles_granted += granted;
        out.roles_revoked += revoked;
    }
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "directory.sync",
            ("directory", ID_SPACE.platform),
            serde_json::to_value(&out).unwrap_or_default(),
        )
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// Makes the user's LDAP-granted roles `roles`: a role already held (from an admin or
/// LDAP) is left as it is; returns (granted, revoked).
async fn set_ldap_roles(
    tx: &mut Tx,
    user_id: &str,
    roles: &BTreeSet<String>,
) -> Result<(usize, usize)> {
    let held: HashSet<String> =
        sqlx::query("SELECT role FROM user_roles WHERE user_id = $1 AND source = $2")
            .bind(user_id)
            .bind(ROLE_SOURCE)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|r| r.get("role"))
            .collect();
    let mut revoked = 0;
    for r in held.iter().filter(|r| !roles.contains(*r)) {
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2 AND source = $3")
            .bind(user_id)
            .bind(r)
            .bind(ROLE_SOURCE)
            .execute(&mut **tx)
            .await?;
        revoked += 1;
    }
    let mut granted = 0;
    for r in roles.iter().filter(|r| !held.contains(*r)) {
        let done = sqlx::query(
            "INSERT INTO user_roles (user_id, role, source) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(r)
        .bind(ROLE_SOURCE)
        .execute(&mut **tx)
        .await?;
        granted += done.rows_affected() as usize;
    }
    Ok((granted, revoked))
}

/// The scheduled LDAP sync (nightly, and once at start), audited as the system.
pub const KIND: &str = "directory.ldap_sync";

pub struct SyncJob {
    pub db: Db,
    pub clock: crate::clock::SharedClock,
    pub org_id: String,
    pub config: LdapConfig,
}

impl crate::jobs::Handler for SyncJob {
    fn perform<'a>(
        &'a self,
        _job: &'a crate::jobs::ClaimedJob,
    ) -> crate::jobs::BoxFuture<'a, std::result::Result<serde_json::Value, crate::jobs::JobError>>
    {
        Box::pin(async move {
            let out = sync(
                &self.db,
                self.clock.now_ms(),
                &self.org_id,
                &self.config,
                &Actor::system(),
            )
            .await?;
            Ok(serde_json::to_value(out).unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LdapConfig {
        crate::Config::from_toml_only(
            "[ldap]\nurl = \"ldap://127.0.0.1:389\"\nbase_dn = \"dc=example,dc=com\"\n\
             [ldap.group_roles]\n\"CN=Sales,OU=Groups,DC=example,DC=com\" = [\"sales\"]\n",
        )
        .unwrap()
        .ldap
        .unwrap()
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn managers_resolve_by_dn_and_disabled_accounts_are_inactive_without_roles() {
        let entries = vec![
            entry(
                "uid=boss,ou=people,dc=example,dc=com",
                &[("uid", &["boss"]), ("cn", &["Boss"])],
            ),
            entry(
                "uid=rep,ou=people,dc=example,dc=com",
                &[
                    ("UID", &["rep"]),
                    ("displayName", &["销售代表"]),
                    ("cn", &["Rep"]),
                    ("manager", &["UID=boss, OU=people, DC=example, DC=com"]),
                    ("memberOf", &["cn=sales,ou=groups,dc=example,dc=com"]),
                ],
            ),
            entry(
                "uid=gone,ou=people,dc=example,dc=com",
                &[
                    ("uid", &["gone"]),
                    ("userAccountControl", &["514"]),
                    ("memberOf", &["cn=sales,ou=groups,dc=example,dc=com"]),
                ],
            ),
            entry("cn=no-id,dc=example,dc=com", &[("cn", &["x"])]),
        ];
        let people = people(&config(), &entries);
        assert_eq!(people.len(), 3);
        assert_eq!(people[1].member.name, "销售代表");
        assert_eq!(people[1].member.leaders, vec!["boss".to_string()]);
        assert_eq!(people[1].roles, BTreeSet::from(["sales".to_string()]));
        assert_eq!(people[0].member.name, "Boss");
        assert!(people[0].member.active && people[0].roles.is_empty());
        assert_eq!(people[2].member.name, "gone");
        assert!(!people[2].member.active && people[2].roles.is_empty());
    }
}
