//! Bringing in the customers a team already has on a chat platform (`closeloop customers
//! import`): every external contact of the members closeloop knows becomes a customer —
//! through the same code path as an added contact ([`super::link_external_as`]) — or is
//! linked to the customer already holding one of its numbers. Imported customers carry
//! `source = import` and no lead, so they never count as new leads. Everything is read from
//! the platform first and written in one transaction, so a failure writes nothing; a
//! contact already linked is left as it is, so a re-run changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;

use crate::access::Actor;
use crate::chat::event::Platform;
use crate::chat::ExternalContact;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::jobs::{BoxFuture, JobError};
use crate::security::{normalize_phone, Cipher};

/// Members asked about in one listing call (WeCom's `userid_list` takes at most 100).
pub const MEMBERS_PER_CALL: usize = 100;

/// A platform's listing of the customers its members added.
pub trait ContactBook: Send + Sync {
    /// The external ids of the customers `member` (platform id) added.
    fn contacts_of<'a>(
        &'a self,
        member: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Vec<String>, JobError>>;

    /// One page of the customers `members` (at most [`MEMBERS_PER_CALL`]) added, each with
    /// the member who added them; `cursor` is the previous page's `next_cursor`.
    fn page<'a>(
        &'a self,
        members: &'a [String],
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, std::result::Result<ContactPage, JobError>>;

    /// One customer as `member` sees them, for a listed customer the pages left out.
    fn contact<'a>(
        &'a self,
        external_user_id: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, std::result::Result<ExternalContact, JobError>>;
}

/// A customer as one member sees them (the numbers are the ones that member noted).
#[derive(Debug, Clone)]
pub struct Followed {
    pub contact: ExternalContact,
    /// The member's platform id.
    pub member: String,
    /// When the member added them (Unix seconds), when the platform says.
    pub added_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ContactPage {
    pub items: Vec<Followed>,
    pub next_cursor: Option<String>,
}

/// How far an import has come; reported after each member batch and at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub members: usize,
    pub members_done: usize,
    /// Distinct customers the platform listed.
    pub contacts_seen: usize,
    pub created: usize,
    /// Existing customers (found by a number) now linked to the platform's contact.
    pub linked: usize,
    /// Customers already linked: left as they are.
    pub unchanged: usize,
}

/// Imports the external contacts of the organisation's active members on `platform`.
/// `report` is called as the listing advances and once at the end.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    platform: Platform,
    book: &dyn ContactBook,
    mut report: impl FnMut(&Progress),
) -> Result<Progress> {
    let members = members(db, org_id, platform).await?;
    let mut progress = Progress {
        members: members.len(),
        ..Progress::default()
    };
    let fetch = |e: JobError| Error::invalid(format!("{} import: {e}", platform.as_str()));
    // Every customer seen, with each member who added them.
    let mut seen: BTreeMap<String, Vec<Followed>> = BTreeMap::new();
    for batch in members.chunks(MEMBERS_PER_CALL) {
        let ids: Vec<String> = batch.iter().map(|(pid, _)| pid.clone()).collect();
        let mut listed: BTreeSet<(String, String)> = BTreeSet::new();
        for member in &ids {
            for ext in book.contacts_of(member).await.map_err(fetch)? {
                listed.insert((ext, member.clone()));
            }
        }
        let mut cursor: Option<String> = None;
        loop {
            let page = book.page(&ids, cursor.as_deref()).await.map_err(fetch)?;
            for f in page.items {
                listed.remove(&(f.contact.external_user_id.clone(), f.member.clone()));
                seen.entry(f.contact.external_user_id.clone())
                    .or_default()
                    .push(f);
            }
            match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => break,
            }
        }
        // Listed but not on any page (the platform changed meanwhile): read one by one.
        for (ext, member) in listed {
            let contact = book.contact(&ext, &member).await.map_err(fetch)?;
            seen.entry(ext).or_default().push(Followed {
                contact,
                member,
                added_at: None,
            });
        }
        progress.members_done += batch.len();
        progress.contacts_seen = seen.len();
        report(&progress);
    }

    let by_platform_id: BTreeMap<&str, &str> = members
        .iter()
        .map(|(pid, uid)| (pid.as_str(), uid.as_str()))
        .collect();
    let mut tx = db.begin().await?;
    for followers in seen.values_mut() {
        // The member who added the customer first owns them.
        followers.sort_by(|a, b| {
            (a.added_at.unwrap_or(i64::MAX), &a.member)
                .cmp(&(b.added_at.unwrap_or(i64::MAX), &b.member))
        });
        let first = &followers[0];
        let owner = by_platform_id.get(first.member.as_str()).copied();
        let ext = &first.contact.external_user_id;
        if super::events::customer_of(&mut tx, org_id, platform, ext)
            .await?
            .is_some()
        {
            progress.unchanged += 1;
            continue;
        }
        let phones: Vec<&str> = followers
            .iter()
            .flat_map(|f| f.contact.phones.iter().map(String::as_str))
            .collect();
        if let Some((customer, contact)) = by_number(&mut tx, cipher, org_id, &phones).await? {
            link_contact(&mut tx, now_ms, org_id, platform, ext, &customer, &contact).await?;
            let current: Option<String> =
                sqlx::query("SELECT owner_user_id FROM customers WHERE id = $1")
                    .bind(&customer)
                    .fetch_one(&mut *tx)
                    .await?
                    .get("owner_user_id");
            if let (None, Some(o)) = (current, owner) {
                super::transfer_owner(&mut tx, now_ms, &customer, Some(o), "created", None).await?;
            }
            progress.linked += 1;
            continue;
        }
        let mut contact = first.contact.clone();
        contact.phones = phones.iter().map(|p| p.to_string()).collect();
        let link = super::ExternalLink {
            platform,
            contact: &contact,
            owner,
            source_channel: "",
        };
        super::link_external_as(&mut tx, cipher, now_ms, org_id, link, None).await?;
        progress.created += 1;
    }
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "customer.import",
            ("platform", platform.as_str()),
            serde_json::to_value(&progress).unwrap_or_default(),
        )
        .await?;
    tx.commit().await?;
    report(&progress);
    Ok(progress)
}

/// Active members with an identity on `platform`: (platform id, user id), by platform id.
async fn members(db: &Db, org_id: &str, platform: Platform) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT i.value, i.user_id FROM user_identities i JOIN users u ON u.id = i.user_id \
         WHERE i.org_id = $1 AND i.platform = $2 AND i.kind = $3 AND u.status = 'active' \
         ORDER BY i.value",
    )
    .bind(org_id)
    .bind(platform.as_str())
    .bind(platform.member_id_kind())
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("value"), r.get("user_id")))
        .collect())
}

/// The one customer (and its contact) holding one of `phones`; none when no customer or
/// several do (an ambiguous number links nothing: a new customer is created instead).
async fn by_number(
    tx: &mut Tx,
    cipher: &Cipher,
    org_id: &str,
    phones: &[&str],
) -> Result<Option<(String, String)>> {
    let mut found: BTreeSet<(String, String)> = BTreeSet::new();
    for p in phones {
        let Ok(e164) = normalize_phone(p, super::DEFAULT_REGION) else {
            continue;
        };
        for hash in cipher.lookup_hashes(super::PHONE_CONTEXT, &e164) {
            let rows = sqlx::query(
                "SELECT c.customer_id, c.id FROM contact_phones p JOIN contacts c ON c.id = p.contact_id \
                 WHERE p.org_id = $1 AND p.phone_hash = $2",
            )
            .bind(org_id)
            .bind(&hash)
            .fetch_all(&mut **tx)
            .await?;
            found.extend(rows.iter().map(|r| (r.get("customer_id"), r.get("id"))));
        }
    }
    let customers: BTreeSet<&String> = found.iter().map(|(c, _)| c).collect();
    Ok(if customers.len() == 1 {
        found.into_iter().next()
    } else {
        None
    })
}

async fn link_contact(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    platform: Platform,
    external_user_id: &str,
    customer_id: &str,
    contact_id: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO customer_external_ids (org_id, platform, external_user_id, customer_id, contact_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(org_id)
    .bind(platform.as_str())
    .bind(external_user_id)
    .bind(customer_id)
    .bind(contact_id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
