//! Customers (companies), their contacts (people) and who owned them when.
//!
//! Phone numbers are normalised to E.164, encrypted at rest, and findable through a keyed
//! hash; e-mail addresses and contact names are encrypted too. Reads return masked numbers
//! and addresses, and names decrypted (docs/personal-data.md).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::access::Actor;
use crate::db::{new_id, Arg, Db, Select, Tx};
use crate::directory::users::{self, bind_all, in_list};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::policy::Grant;
use crate::security::fields::CONTACT_NAME;
use crate::security::{mask_phone, normalize_phone, Cipher};
use crate::validate;

pub mod events;
pub mod import;

pub const PHONE_CONTEXT: &str = "contact_phones.phone";
pub const EMAIL_CONTEXT: &str = "contacts.email";
/// Numbers written without a country code are read as Chinese numbers.
pub const DEFAULT_REGION: &str = "CN";
pub const TIERS: [&str; 3] = ["A", "B", "C"];
/// Why an owner changed: `leaver_handover` is 离职继承.
pub const OWNER_REASONS: [&str; 2] = ["reassigned", "leaver_handover"];

fn tier_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&TIERS)
}

/// Where a customer came from (`customers.source`).
pub const SOURCES: [&str; 3] = ["api", "platform_event", "import"];

fn source_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&SOURCES)
}

fn owner_reason_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&OWNER_REASONS)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[schema(max_length = 100)]
    pub title: Option<String>,
    #[schema(max_length = 254)]
    pub email: Option<String>,
    /// Any common spelling; stored as E.164 (numbers without +/00 are read as CN).
    #[serde(default)]
    pub phones: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `A`, `B` or `C`.
    #[schema(schema_with = tier_schema)]
    pub tier: Option<String>,
    /// User id of the owning rep.
    pub owner: Option<String>,
    /// The customer's region (区域); defaults to the owner's region.
    #[schema(max_length = 100)]
    pub region: Option<String>,
    #[serde(default)]
    pub contacts: Vec<NewContact>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(schema_with = tier_schema)]
    pub tier: Option<String>,
    /// New owner; the hand-over is kept in the ownership history.
    pub owner: Option<String>,
    /// Why the owner changed: `reassigned` (default) or `leaver_handover` (离职继承).
    #[schema(schema_with = owner_reason_schema)]
    pub owner_reason: Option<String>,
    /// The customer's region; an empty string clears it. A new owner does not change it.
    #[schema(max_length = 100)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Phone {
    pub id: String,
    /// Masked for display, e.g. `+86 138****8000`.
    pub masked: String,
    pub valid: bool,
    pub invalid_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Contact {
    pub id: String,
    pub name: String,
    pub title: Option<String>,
    /// Masked, e.g. `z***@example.com`.
    pub email_masked: Option<String>,
    pub phones: Vec<Phone>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Customer {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub tier: Option<String>,
    pub owner: Option<String>,
    /// The customer's region (区域): what a package's `region` scope matches.
    pub region: Option<String>,
    pub contacts: Vec<Contact>,
    /// Where the customer came from: `api`, `platform_event` (added as an external contact)
    /// or `import` (`closeloop customers import`).
    #[schema(schema_with = source_schema)]
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ownership {
    pub user: String,
    pub from: String,
    pub until: Option<String>,
    /// `created`, `reassigned` or `leaver_handover`.
    pub reason: String,
    /// What the manager wrote when reassigning the deal that moved the customer.
    pub note: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerFilter {
    /// Owner's user id.
    pub owner: Option<String>,
    #[param(schema_with = tier_schema)]
    pub tier: Option<String>,
    /// Finds customers having a contact with this number (any spelling).
    pub phone: Option<String>,
    pub region: Option<String>,
}

fn check_tier(t: Option<&str>) -> Result<Option<String>> {
    match t {
        None | Some("") => Ok(None),
        Some(t) if TIERS.contains(&t) => Ok(Some(t.to_string())),
        Some(_) => Err(Error::invalid("tier must be A, B or C")),
    }
}

fn mask_email(e: &str) -> String {
    match e.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

struct CheckedContact {
    name: String,
    title: Option<String>,
    email: Option<String>,
    phones: Vec<String>,
}

fn check_contact(c: &NewContact) -> Result<CheckedContact> {
    let name = validate::text("contact name", &c.name, 100)?;
    let title = validate::opt_text("contact title", c.title.as_deref(), 100)?;
    let email = validate::opt_text("contact email", c.email.as_deref(), 254)?;
    if let Some(e) = &email {
        let ok = e
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'));
        if !ok {
            return Err(Error::invalid("contact email is not an e-mail address"));
        }
    }
    if c.phones.len() > 10 {
        return Err(Error::invalid("a contact has at most 10 phone numbers"));
    }
    let mut phones = Vec::new();
    for p in &c.phones {
        let e164 = normalize_phone(p, DEFAULT_REGION)
            .map_err(|e| Error::invalid(format!("contact phone: {e}")))?;
        if !phones.contains(&e164) {
            phones.push(e164);
        }
    }
    Ok(CheckedContact {
        name,
        title,
        email,
        phones,
    })
}

async fn insert_contact(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    customer_id: &str,
    c: &CheckedContact,
) -> Result<String> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO contacts (id, org_id, customer_id, name_enc, title, email_enc, email_masked, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(customer_id)
    .bind(cipher.encrypt(CONTACT_NAME, &c.name))
    .bind(&c.title)
    .bind(c.email.as_ref().map(|e| cipher.encrypt(EMAIL_CONTEXT, e)))
    .bind(c.email.as_deref().map(mask_email))
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    for p in &c.phones {
        sqlx::query(
            "INSERT INTO contact_phones (id, org_id, contact_id, phone_enc, phone_hash, phone_masked, valid, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7)",
        )
        .bind(new_id())
        .bind(org_id)
        .bind(&id)
        .bind(cipher.encrypt(PHONE_CONTEXT, p))
        .bind(cipher.lookup_hash(PHONE_CONTEXT, p))
        .bind(mask_phone(p))
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

async fn check_owner(tx: &mut Tx, org_id: &str, owner: Option<&str>) -> Result<Option<String>> {
    let Some(o) = owner else { return Ok(None) };
    let o = validate::id("owner", o)?;
    if !users::exists_in(tx, org_id, &o).await? {
        return Err(Error::UnknownReference(format!(
            "owner `{o}` does not exist"
        )));
    }
    Ok(Some(o))
}

/// The region of `owner`, which a new customer of theirs starts in.
async fn owner_region(tx: &mut Tx, owner: Option<&str>) -> Result<Option<String>> {
    let Some(owner) = owner else { return Ok(None) };
    Ok(sqlx::query("SELECT region FROM users WHERE id = $1")
        .bind(owner)
        .fetch_optional(&mut **tx)
        .await?
        .and_then(|r| r.get::<Option<String>, _>("region")))
}

pub async fn create(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    new: NewCustomer,
) -> Result<Customer> {
    let name = validate::text("name", &new.name, 200)?;
    let tier = check_tier(new.tier.as_deref())?;
    if new.contacts.len() > 50 {
        return Err(Error::invalid("at most 50 contacts per request"));
    }
    let contacts = new
        .contacts
        .iter()
        .map(check_contact)
        .collect::<Result<Vec<_>>>()?;
    let id = new_id();
    let mut tx = db.begin().await?;
    let owner = check_owner(&mut tx, org_id, new.owner.as_deref()).await?;
    let region = match validate::opt_text("region", new.region.as_deref(), 100)? {
        Some(r) => Some(r),
        None => owner_region(&mut tx, owner.as_deref()).await?,
    };
    sqlx::query(
        "INSERT INTO customers (id, org_id, name, tier, owner_user_id, region, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&name)
    .bind(&tier)
    .bind(&owner)
    .bind(&region)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    if let Some(o) = &owner {
        open_ownership(&mut tx, &id, o, now_ms, "created", None).await?;
    }
    for c in &contacts {
        insert_contact(&mut tx, cipher, now_ms, org_id, &id, c).await?;
    }
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "customer.create",
            ("customer", &id),
            serde_json::json!({"contacts": contacts.len()}),
        )
        .await?;
    tx.commit().await?;
    get(db, cipher, org_id, &id).await
}

/// Hands the customer to `owner` (or nobody), closing the current ownership period.
/// `note_enc` is a typed reason, already encrypted (`REASSIGN_REASON`). Returns the id of
/// the new ownership period, if any.
pub async fn transfer_owner(
    tx: &mut Tx,
    now_ms: i64,
    customer_id: &str,
    owner: Option<&str>,
    reason: &str,
    note_enc: Option<&str>,
) -> Result<Option<String>> {
    sqlx::query(
        "UPDATE customer_owners SET until_at = $1 WHERE customer_id = $2 AND until_at IS NULL",
    )
    .bind(now_ms)
    .bind(customer_id)
    .execute(&mut **tx)
    .await?;
    let opened = match owner {
        Some(o) => Some(open_ownership(tx, customer_id, o, now_ms, reason, note_enc).await?),
        None => None,
    };
    sqlx::query("UPDATE customers SET owner_user_id = $1, updated_at = $2 WHERE id = $3")
        .bind(owner)
        .bind(now_ms)
        .bind(customer_id)
        .execute(&mut **tx)
        .await?;
    Ok(opened)
}

async fn open_ownership(
    tx: &mut Tx,
    customer_id: &str,
    user_id: &str,
    now_ms: i64,
    reason: &str,
    note_enc: Option<&str>,
) -> Result<String> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO customer_owners (id, customer_id, user_id, from_at, until_at, reason, note_enc) \
         VALUES ($1, $2, $3, $4, NULL, $5, $6)",
    )
    .bind(&id)
    .bind(customer_id)
    .bind(user_id)
    .bind(now_ms)
    .bind(reason)
    .bind(note_enc)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

pub async fn add_contact(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    customer_id: &str,
    new: NewContact,
) -> Result<Customer> {
    let c = check_contact(&new)?;
    let mut tx = db.begin().await?;
    if !exists_in(&mut tx, org_id, customer_id).await? {
        return Err(Error::NotFound { what: "customer" });
    }
    let contact_id = insert_contact(&mut tx, cipher, now_ms, org_id, customer_id, &c).await?;
    sqlx::query("UPDATE customers SET updated_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "contact.create",
            ("contact", &contact_id),
            serde_json::json!({"customer": customer_id}),
        )
        .await?;
    tx.commit().await?;
    get(db, cipher, org_id, customer_id).await
}

/// Changes a customer; the audit entry names the fields changed. The owner sees and
/// works the customer, so only a writer that may grant hands it to someone else.
#[allow(clippy::too_many_arguments)]
pub async fn update(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    grant: Grant,
    id: &str,
    patch: CustomerPatch,
) -> Result<Customer> {
    if patch.owner.is_some() {
        grant.require(&["owner"])?;
    }
    let mut tx = db.begin().await?;
    let current = sqlx::query("SELECT owner_user_id FROM customers WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound { what: "customer" })?;
    let current_owner: Option<String> = current.get("owner_user_id");
    let mut changed: Vec<&str> = Vec::new();
    if let Some(n) = &patch.name {
        let n = validate::text("name", n, 200)?;
        sqlx::query("UPDATE customers SET name = $1 WHERE id = $2")
            .bind(n)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        changed.push("name");
    }
    if let Some(t) = &patch.tier {
        let t = check_tier(Some(t))?;
        sqlx::query("UPDATE customers SET tier = $1 WHERE id = $2")
            .bind(t)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        changed.push("tier");
    }
    if let Some(r) = &patch.region {
        let r = validate::opt_text("region", Some(r), 100)?.filter(|r| !r.is_empty());
        sqlx::query("UPDATE customers SET region = $1 WHERE id = $2")
            .bind(r)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        changed.push("region");
    }
    let reason = patch.owner_reason.as_deref().unwrap_or("reassigned");
    if !OWNER_REASONS.contains(&reason) {
        return Err(Error::invalid(
            "owner_reason must be `reassigned` or `leaver_handover`",
        ));
    }
    if let Some(o) = &patch.owner {
        let o = check_owner(&mut tx, org_id, Some(o)).await?;
        if o != current_owner {
            transfer_owner(&mut tx, now_ms, id, o.as_deref(), reason, None).await?;
            changed.push("owner");
        }
    }
    sqlx::query("UPDATE customers SET updated_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "customer.update",
            ("customer", id),
            serde_json::json!({"fields": changed}),
        )
        .await?;
    tx.commit().await?;
    get(db, cipher, org_id, id).await
}

/// Who the customer is on a chat platform: an id the platform gives the customer's people
/// (DingTalk unionId, Feishu user id of an external participant, WeCom external userid).
/// Meeting records with that participant then count for this customer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExternalId {
    /// `wecom`, `dingtalk` or `feishu`.
    #[schema(schema_with = crate::chat::platform_schema)]
    pub platform: String,
    #[schema(min_length = 1, max_length = 128)]
    pub external_user_id: String,
}

/// Links a platform id to the customer. Linking it again is a no-op; an id already linked
/// to another customer is refused (`external_id_taken`).
pub async fn add_external_id(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    customer_id: &str,
    new: NewExternalId,
) -> Result<()> {
    let platform = crate::chat::event::Platform::parse(&new.platform)
        .ok_or_else(|| Error::invalid("platform must be one of wecom, dingtalk, feishu"))?;
    let ext = new.external_user_id.trim();
    if ext.is_empty() || ext.len() > 128 || ext.chars().any(char::is_control) {
        return Err(Error::invalid(
            "external_user_id must be 1 to 128 characters without control characters",
        ));
    }
    let mut tx = db.begin().await?;
    if !exists_in(&mut tx, org_id, customer_id).await? {
        return Err(Error::NotFound { what: "customer" });
    }
    let taken: Option<String> = sqlx::query(
        "SELECT customer_id FROM customer_external_ids WHERE org_id = $1 AND platform = $2 AND external_user_id = $3",
    )
    .bind(org_id)
    .bind(platform.as_str())
    .bind(ext)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| r.get("customer_id"));
    match taken {
        Some(c) if c == customer_id => return Ok(()),
        Some(_) => {
            return Err(Error::Refused {
                code: "external_id_taken",
                message: "该平台账号已关联到其他客户".into(),
                details: serde_json::json!({"platform": platform.as_str()}),
            })
        }
        None => {}
    }
    sqlx::query(
        "INSERT INTO customer_external_ids (org_id, platform, external_user_id, customer_id, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(org_id)
    .bind(platform.as_str())
    .bind(ext)
    .bind(customer_id)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "customer.external_id",
            ("customer", customer_id),
            serde_json::json!({"platform": platform.as_str()}),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn exists_in(tx: &mut Tx, org_id: &str, id: &str) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM customers WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&mut **tx)
            .await?
            .is_some(),
    )
}

pub async fn ownership_history(
    db: &Db,
    cipher: &Cipher,
    org_id: &str,
    id: &str,
) -> Result<Vec<Ownership>> {
    let mut tx = db.pool.begin().await?;
    if !exists_in(&mut tx, org_id, id).await? {
        return Err(Error::NotFound { what: "customer" });
    }
    let rows = sqlx::query(
        "SELECT user_id, from_at, until_at, reason, note_enc FROM customer_owners \
         WHERE customer_id = $1 ORDER BY from_at, id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Ownership {
                user: r.get("user_id"),
                from: crate::clock::rfc3339(r.get("from_at")),
                until: r
                    .get::<Option<i64>, _>("until_at")
                    .map(crate::clock::rfc3339),
                reason: r.get("reason"),
                note: crate::security::fields::open_opt(
                    cipher,
                    crate::security::fields::REASSIGN_REASON,
                    r.get("note_enc"),
                )?,
            })
        })
        .collect()
}

pub async fn get(db: &Db, cipher: &Cipher, org_id: &str, id: &str) -> Result<Customer> {
    let mut sel = Select::new();
    sel.and("org_id = {}", Arg::Text(org_id.into()))
        .and("id = {}", Arg::Text(id.into()));
    load(db, cipher, &sel, "LIMIT {limit}", 1)
        .await?
        .pop()
        .ok_or(Error::NotFound { what: "customer" })
}

/// A page of the organisation's customers, restricted to those `visible` may see when
/// given (the asker's policy).
pub async fn list(
    db: &Db,
    cipher: &Cipher,
    org_id: &str,
    filter: &CustomerFilter,
    page: &PageRequest,
    visible: Option<(&crate::policy::Policy, i64)>,
) -> Result<Page<Customer>> {
    let mut sel = Select::org_page(org_id, page);
    if let Some((policy, now_ms)) = visible {
        policy.restrict_customers(&mut sel, now_ms);
    }
    if let Some(o) = &filter.owner {
        sel.and("owner_user_id = {}", Arg::Text(o.clone()));
    }
    if let Some(t) = &filter.tier {
        sel.and("tier = {}", Arg::Text(t.clone()));
    }
    if let Some(r) = &filter.region {
        sel.and("region = {}", Arg::Text(r.clone()));
    }
    if let Some(p) = &filter.phone {
        let e164 = normalize_phone(p, DEFAULT_REGION)
            .map_err(|e| Error::invalid(format!("phone: {e}")))?;
        let hashes = cipher.lookup_hashes(PHONE_CONTEXT, &e164);
        let marks = vec!["{}"; hashes.len()].join(", ");
        sel.and_all(
            &format!(
                "id IN (SELECT c.customer_id FROM contacts c JOIN contact_phones p ON p.contact_id = c.id \
                 WHERE p.org_id = {{}} AND p.phone_hash IN ({marks}))"
            ),
            std::iter::once(Arg::Text(org_id.into()))
                .chain(hashes.into_iter().map(Arg::Text))
                .collect(),
        );
    }
    let rows = load(
        db,
        cipher,
        &sel,
        "ORDER BY id LIMIT {limit}",
        page.limit + 1,
    )
    .await?;
    Ok(Page::from_rows(rows, page, |c| &c.id))
}

/// Customers whose name contains `text` (at most `limit`, by name): `(id, name)`.
pub async fn named(db: &Db, org_id: &str, text: &str, limit: i64) -> Result<Vec<(String, String)>> {
    let escaped = text
        .trim()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let rows = sqlx::query(
        "SELECT id, name FROM customers WHERE org_id = $1 AND name LIKE $2 ESCAPE '\\' ORDER BY name, id LIMIT $3",
    )
    .bind(org_id)
    .bind(format!("%{escaped}%"))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get("id"), r.get("name"))).collect())
}

/// The names of the customers among `ids` that exist in the organisation.
pub async fn names_of(db: &Db, org_id: &str, ids: &[String]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT id, name FROM customers WHERE org_id = $1 AND id IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(org_id);
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.fetch_all(&db.pool).await? {
            out.insert(r.get("id"), r.get("name"));
        }
    }
    Ok(out)
}

async fn load(
    db: &Db,
    cipher: &Cipher,
    sel: &Select,
    tail: &str,
    limit: i64,
) -> Result<Vec<Customer>> {
    let sql = sel.sql(
        "SELECT id, org_id, name, tier, owner_user_id, region, source, created_at, updated_at FROM customers",
        tail,
    );
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    let mut customers: Vec<Customer> = rows
        .iter()
        .map(|r| Customer {
            id: r.get("id"),
            org_id: r.get("org_id"),
            name: r.get("name"),
            tier: r.get("tier"),
            owner: r.get("owner_user_id"),
            region: r.get("region"),
            contacts: Vec::new(),
            source: r.get("source"),
            created_at: crate::clock::rfc3339(r.get("created_at")),
            updated_at: crate::clock::rfc3339(r.get("updated_at")),
        })
        .collect();
    if customers.is_empty() {
        return Ok(customers);
    }
    let ids: Vec<String> = customers.iter().map(|c| c.id.clone()).collect();
    let marks = in_list(ids.len());
    let sql = format!(
        "SELECT id, customer_id, name_enc, title, email_masked FROM contacts WHERE customer_id IN ({marks}) ORDER BY id"
    );
    let contact_rows = bind_all(sqlx::query(&sql), &ids)
        .fetch_all(&db.pool)
        .await?;
    let sql = format!(
        "SELECT p.id, p.contact_id, p.phone_masked, CAST(p.valid AS BIGINT) AS valid, p.invalid_reason FROM contact_phones p \
         JOIN contacts c ON c.id = p.contact_id WHERE c.customer_id IN ({marks}) ORDER BY p.id"
    );
    let mut phones: HashMap<String, Vec<Phone>> = HashMap::new();
    for r in bind_all(sqlx::query(&sql), &ids)
        .fetch_all(&db.pool)
        .await?
    {
        phones.entry(r.get("contact_id")).or_default().push(Phone {
            id: r.get("id"),
            masked: r.get("phone_masked"),
            valid: r.get::<i64, _>("valid") != 0,
            invalid_reason: r.get("invalid_reason"),
        });
    }
    let mut contacts: HashMap<String, Vec<Contact>> = HashMap::new();
    for r in &contact_rows {
        let id: String = r.get("id");
        let name = cipher
            .decrypt(CONTACT_NAME, &r.get::<String, _>("name_enc"))
            .map_err(|e| Error::Internal(anyhow::anyhow!("contact {id}: name unreadable: {e}")))?;
        contacts
            .entry(r.get("customer_id"))
            .or_default()
            .push(Contact {
                phones: phones.remove(&id).unwrap_or_default(),
                id,
                name,
                title: r.get("title"),
                email_masked: r.get("email_masked"),
            });
    }
    for c in &mut customers {
        c.contacts = contacts.remove(&c.id).unwrap_or_default();
    }
    Ok(customers)
}

/// A platform's customer and who added them, through which channel.
pub struct ExternalLink<'a> {
    pub platform: crate::chat::event::Platform,
    pub contact: &'a crate::chat::ExternalContact,
    /// The rep who added them (closeloop user id), when known.
    pub owner: Option<&'a str>,
    pub source_channel: &'a str,
}

/// Finds or creates the customer behind a platform's external contact: on first sight a
/// customer (named after the company when known), its contact with the numbers the rep
/// noted, the rep as owner, and a lead carrying the source channel. Returns the customer
/// id and whether it was created now.
pub async fn link_external(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    link: ExternalLink<'_>,
) -> Result<(String, bool)> {
    let lead = Some(link.source_channel);
    link_external_as(tx, cipher, now_ms, org_id, link, lead).await
}

/// [`link_external`], with the lead optional: `lead` None is an import of a customer the
/// team already had (`source = import`), which must not count as a new lead.
pub(crate) async fn link_external_as(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    link: ExternalLink<'_>,
    lead: Option<&str>,
) -> Result<(String, bool)> {
    let ExternalLink {
        platform,
        contact,
        owner,
        ..
    } = link;
    let source = if lead.is_some() {
        "platform_event"
    } else {
        "import"
    };
    let existing = sqlx::query(
        "SELECT customer_id FROM customer_external_ids WHERE org_id = $1 AND platform = $2 AND external_user_id = $3",
    )
    .bind(org_id)
    .bind(platform.as_str())
    .bind(&contact.external_user_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = existing {
        return Ok((row.get("customer_id"), false));
    }
    // Names from the platform are free text; keep them within the model's limits.
    let clip = |s: &str, n: usize| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(n)
            .collect::<String>()
    };
    let person = clip(&contact.name, 100);
    // Customer names are stored in the clear: a person without a known company is not
    // named in full there (the contact keeps the name, encrypted).
    let name = match contact.corp_name.as_deref().map(|c| clip(c, 200)) {
        Some(company) if !company.trim().is_empty() => company,
        _ => customer_name_for_person(&person),
    };
    let phones: Vec<String> = contact
        .phones
        .iter()
        .filter_map(|p| normalize_phone(p, DEFAULT_REGION).ok())
        .take(10)
        .collect();
    let id = new_id();
    let region = owner_region(tx, owner).await?;
    sqlx::query(
        "INSERT INTO customers (id, org_id, name, tier, owner_user_id, region, source, created_at, updated_at) \
         VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&name)
    .bind(owner)
    .bind(&region)
    .bind(source)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    if let Some(o) = owner {
        open_ownership(tx, &id, o, now_ms, "created", None).await?;
    }
    let contact_id = insert_contact(
        tx,
        cipher,
        now_ms,
        org_id,
        &id,
        &CheckedContact {
            name: if person.trim().is_empty() {
                "联系人".into()
            } else {
                person
            },
            title: contact.position.as_deref().map(|p| clip(p, 100)),
            email: None,
            phones,
        },
    )
    .await?;
    sqlx::query(
        "INSERT INTO customer_external_ids (org_id, platform, external_user_id, customer_id, contact_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(org_id)
    .bind(platform.as_str())
    .bind(&contact.external_user_id)
    .bind(&id)
    .bind(&contact_id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    if let Some(channel) = lead {
        sqlx::query(
            "INSERT INTO leads (id, org_id, customer_id, source_channel, owner_user_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'open', $6, $6)",
        )
        .bind(new_id())
        .bind(org_id)
        .bind(&id)
        .bind(clip(channel, 64))
        .bind(owner)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok((id, true))
}

/// Why a person marks a number invalid. Codes, not free text: the reason is kept in the
/// clear and in the audit entry (docs/personal-data.md).
pub const INVALID_REASONS: [&str; 4] = ["停机", "空号", "非本人", "其他"];

/// Marks one of a customer's numbers valid again or invalid (a dead number blocks the
/// stage gates that need a valid contact). Audited; `by` is the person who checked it.
pub async fn set_phone_validity(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    phone_id: &str,
    valid: bool,
    reason: Option<&str>,
) -> Result<Phone> {
    let reason = match (valid, reason) {
        (true, _) => None,
        (false, Some(r)) => {
            let r = r.trim();
            if !INVALID_REASONS.contains(&r) {
                return Err(Error::invalid(format!(
                    "号码无效的原因须为：{} (reason must be one of these)",
                    INVALID_REASONS.join("、")
                )));
            }
            Some(r.to_string())
        }
        (false, None) => Some("marked_by_user".to_string()),
    };
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE contact_phones SET valid = $1, invalid_reason = $2, invalid_at = $3, invalid_by = $4 \
         WHERE id = $5 AND org_id = $6",
    )
    .bind(i16::from(valid))
    .bind(&reason)
    .bind((!valid).then_some(now_ms))
    .bind(if valid { None } else { actor.id.clone() })
    .bind(phone_id)
    .bind(org_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(Error::NotFound { what: "phone" });
    }
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            if valid {
                "phone.mark_valid"
            } else {
                "phone.mark_invalid"
            },
            ("contact_phone", phone_id),
            serde_json::json!({"reason": reason}),
        )
        .await?;
    let row = sqlx::query(
        "SELECT id, phone_masked, CAST(valid AS BIGINT) AS valid, invalid_reason FROM contact_phones WHERE id = $1",
    )
    .bind(phone_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Phone {
        id: row.get("id"),
        masked: row.get("phone_masked"),
        valid: row.get::<i64, _>("valid") == 1,
        invalid_reason: row.get("invalid_reason"),
    })
}

/// What a customer is called when the platform knows a person but no company: the person's
/// masked name (张**), since customer names are stored and shown in the clear.
pub fn customer_name_for_person(person: &str) -> String {
    let mut chars = person.trim().chars();
    match chars.next() {
        Some(first) => {
            let hidden = chars.count().clamp(1, 3);
            format!("{first}{}（个人）", "*".repeat(hidden))
        }
        None => "未命名客户".into(),
    }
}

#[cfg(test)]
mod person_name_tests {
    use super::*;

    #[test]
    fn a_person_becomes_a_masked_customer_name() {
        assert_eq!(customer_name_for_person("欧阳明月"), "欧***（个人）");
        assert_eq!(customer_name_for_person("张三"), "张*（个人）");
        assert_eq!(customer_name_for_person("Z"), "Z*（个人）");
        assert_eq!(customer_name_for_person("  "), "未命名客户");
        assert!(!customer_name_for_person("Zhang Weiguo").contains("Weiguo"));
    }
}
