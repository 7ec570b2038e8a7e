//! Leads (with their source channel) and deals (amount in fen, region, product line,
//! stage and stage history). Stage moves with gates come with the verified-loop capability;
//! here a deal is created in its first stage and its other fields can change.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::access::Actor;
use crate::customers;
use crate::db::{new_id, Arg, Db, Select, Tx};
use crate::directory::users;
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::security::fields::{self, LOST_NOTE, ROLLBACK_REASON};
use crate::security::Cipher;
use crate::validate;

pub use crate::rules::FIRST_STAGE;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLead {
    pub customer: String,
    /// Where the lead came from, e.g. 抖音表单 or 公众号菜单.
    #[schema(min_length = 1, max_length = 64)]
    pub source_channel: String,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Lead {
    pub id: String,
    pub customer: String,
    pub source_channel: String,
    pub owner: Option<String>,
    pub status: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeal {
    pub customer: String,
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    pub lead: Option<String>,
    /// Integer fen (1 CNY = 100 fen).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100_000_000_000_000_i64)]
    pub amount_fen: i64,
    /// ISO 4217, default CNY.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    #[schema(max_length = 100)]
    pub region: Option<String>,
    #[schema(max_length = 100)]
    pub product_line: Option<String>,
    pub owner: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DealPatch {
    #[schema(min_length = 1, max_length = 200)]
    pub title: Option<String>,
    #[schema(minimum = 0, maximum = 100_000_000_000_000_i64)]
    pub amount_fen: Option<i64>,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    #[schema(max_length = 100)]
    pub region: Option<String>,
    #[schema(max_length = 100)]
    pub product_line: Option<String>,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StageChange {
    /// `created`, `advance`, `rollback`, `lost` (输单: `reason` is the rule set's reason)
    /// or `reopen`.
    pub kind: String,
    pub from: Option<String>,
    pub to: String,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Deal {
    pub id: String,
    pub customer: String,
    pub lead: Option<String>,
    pub title: String,
    pub amount_fen: i64,
    pub currency: String,
    pub region: Option<String>,
    pub product_line: Option<String>,
    pub stage: String,
    /// `open`, `won` (it reached the last stage) or `lost` (输单; `stage` is the stage it
    /// was lost in).
    pub outcome: String,
    /// When it was won or lost.
    pub closed_at: Option<String>,
    /// Why it was lost: one of the rule set's `lost_reasons`.
    pub lost_reason: Option<String>,
    /// What the rep wrote when it was lost. Filled on single reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_note: Option<String>,
    pub owner: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Filled on single reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_history: Option<Vec<StageChange>>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DealFilter {
    pub customer: Option<String>,
    pub owner: Option<String>,
    pub stage: Option<String>,
    /// `open`, `won` or `lost`.
    pub outcome: Option<String>,
    pub region: Option<String>,
    pub product_line: Option<String>,
}

fn check_amount(a: i64) -> Result<i64> {
    if !(0..=100_000_000_000_000).contains(&a) {
        return Err(Error::invalid(
            "amount_fen must be between 0 and 100,000,000,000,000",
        ));
    }
    Ok(a)
}

fn check_currency(c: Option<&str>) -> Result<String> {
    let c = c.unwrap_or("CNY");
    if c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "currency must be a 3-letter ISO 4217 code such as CNY",
        ));
    }
    Ok(c.to_string())
}

async fn check_user(
    tx: &mut Tx,
    org_id: &str,
    field: &str,
    v: Option<&str>,
) -> Result<Option<String>> {
    let Some(v) = v else { return Ok(None) };
    let v = validate::id(field, v)?;
    if !users::exists_in(tx, org_id, &v).await? {
        return Err(Error::UnknownReference(format!(
            "{field} `{v}` does not exist"
        )));
    }
    Ok(Some(v))
}

async fn check_customer(tx: &mut Tx, org_id: &str, v: &str) -> Result<String> {
    let v = validate::id("customer", v)?;
    if !customers::exists_in(tx, org_id, &v).await? {
        return Err(Error::UnknownReference(format!(
            "customer `{v}` does not exist"
        )));
    }
    Ok(v)
}

pub async fn create_lead(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    new: NewLead,
) -> Result<Lead> {
    let channel = validate::text("source_channel", &new.source_channel, 64)?;
    let mut tx = db.begin().await?;
    let customer = check_customer(&mut tx, org_id, &new.customer).await?;
    let owner = check_user(&mut tx, org_id, "owner", new.owner.as_deref()).await?;
    let id = new_id();
    sqlx::query(
        "INSERT INTO leads (id, org_id, customer_id, source_channel, owner_user_id, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'open', $6, $6)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&customer)
    .bind(&channel)
    .bind(&owner)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "lead.create",
            ("lead", &id),
            serde_json::json!({"customer": customer, "source_channel": channel}),
        )
        .await?;
    tx.commit().await?;
    Ok(Lead {
        id,
        customer,
        source_channel: channel,
        owner,
        status: "open".into(),
        created_at: crate::clock::rfc3339(now_ms),
    })
}

pub async fn list_leads(
    db: &Db,
    org_id: &str,
    customer: Option<&str>,
    page: &PageRequest,
) -> Result<Page<Lead>> {
    let mut sel = Select::org_page(org_id, page);
    if let Some(c) = customer {
        sel.and("customer_id = {}", Arg::Text(c.into()));
    }
    let sql = sel.sql(
        "SELECT id, customer_id, source_channel, owner_user_id, status, created_at FROM leads",
        "ORDER BY id LIMIT {limit}",
    );
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let leads = rows
        .iter()
        .map(|r| Lead {
            id: r.get("id"),
            customer: r.get("customer_id"),
            source_channel: r.get("source_channel"),
            owner: r.get("owner_user_id"),
            status: r.get("status"),
            created_at: crate::clock::rfc3339(r.get("created_at")),
        })
        .collect();
    Ok(Page::from_rows(leads, page, |l| &l.id))
}

pub async fn create_deal(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    new: NewDeal,
) -> Result<Deal> {
    let title = validate::text("title", &new.title, 200)?;
    let amount = check_amount(new.amount_fen)?;
    let currency = check_currency(new.currency.as_deref())?;
    let region = validate::opt_text("region", new.region.as_deref(), 100)?;
    let product_line = validate::opt_text("product_line", new.product_line.as_deref(), 100)?;
    let mut tx = db.begin().await?;
    let customer = check_customer(&mut tx, org_id, &new.customer).await?;
    let owner = check_user(&mut tx, org_id, "owner", new.owner.as_deref()).await?;
    let lead = match &new.lead {
        None => None,
        Some(l) => {
            let l = validate::id("lead", l)?;
            let found = sqlx::query(
                "SELECT 1 FROM leads WHERE id = $1 AND org_id = $2 AND customer_id = $3",
            )
            .bind(&l)
            .bind(org_id)
            .bind(&customer)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Err(Error::UnknownReference(format!(
                    "lead `{l}` does not exist for this customer"
                )));
            }
            Some(l)
        }
    };
    let id = new_id();
    sqlx::query(
        "INSERT INTO deals (id, org_id, customer_id, lead_id, title, amount_fen, currency, region, product_line, \
         stage, owner_user_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&customer)
    .bind(&lead)
    .bind(&title)
    .bind(amount)
    .bind(&currency)
    .bind(&region)
    .bind(&product_line)
    .bind(FIRST_STAGE)
    .bind(&owner)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO deal_stage_history (id, deal_id, from_stage, to_stage, actor_user_id, actor_api_key_id, reason, at) \
         VALUES ($1, $2, NULL, $3, NULL, $4, 'created', $5)",
    )
    .bind(new_id())
    .bind(&id)
    .bind(FIRST_STAGE)
    .bind(actor.id.as_deref())
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "deal.create",
            ("deal", &id),
            serde_json::json!({"customer": customer}),
        )
        .await?;
    tx.commit().await?;
    get_deal(db, cipher, org_id, &id).await
}

pub async fn update_deal(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    id: &str,
    patch: DealPatch,
) -> Result<Deal> {
    let mut tx = db.begin().await?;
    let found = sqlx::query("SELECT 1 FROM deals WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
    if found.is_none() {
        return Err(Error::NotFound { what: "deal" });
    }
    let mut changed: Vec<&str> = Vec::new();
    if let Some(t) = &patch.title {
        set_text(&mut tx, "title", Some(validate::text("title", t, 200)?), id).await?;
        changed.push("title");
    }
    if let Some(a) = patch.amount_fen {
        sqlx::query("UPDATE deals SET amount_fen = $1 WHERE id = $2")
            .bind(check_amount(a)?)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        changed.push("amount_fen");
    }
    if let Some(c) = &patch.currency {
        set_text(&mut tx, "currency", Some(check_currency(Some(c))?), id).await?;
        changed.push("currency");
    }
    if let Some(r) = &patch.region {
        set_text(
            &mut tx,
            "region",
            validate::opt_text("region", Some(r), 100)?,
            id,
        )
        .await?;
        changed.push("region");
    }
    if let Some(p) = &patch.product_line {
        set_text(
            &mut tx,
            "product_line",
            validate::opt_text("product_line", Some(p), 100)?,
            id,
        )
        .await?;
        changed.push("product_line");
    }
    if let Some(o) = &patch.owner {
        let o = check_user(&mut tx, org_id, "owner", Some(o)).await?;
        set_text(&mut tx, "owner_user_id", o, id).await?;
        changed.push("owner");
    }
    sqlx::query("UPDATE deals SET updated_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "deal.update",
            ("deal", id),
            serde_json::json!({"fields": changed}),
        )
        .await?;
    tx.commit().await?;
    get_deal(db, cipher, org_id, id).await
}

/// `column` is one of a fixed set chosen above, never user input.
async fn set_text(tx: &mut Tx, column: &'static str, v: Option<String>, id: &str) -> Result<()> {
    sqlx::query(&format!("UPDATE deals SET {column} = $1 WHERE id = $2"))
        .bind(v)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const DEAL_COLUMNS: &str =
    "SELECT id, customer_id, lead_id, title, amount_fen, currency, region, product_line, \
     stage, outcome, closed_at, lost_reason, owner_user_id, created_at, updated_at FROM deals";

/// `DEAL_COLUMNS` with the lost deal's note, for single reads.
const DEAL_COLUMNS_NOTE: &str =
    "SELECT id, customer_id, lead_id, title, amount_fen, currency, region, product_line, \
     stage, outcome, closed_at, lost_reason, lost_note_enc, owner_user_id, created_at, updated_at FROM deals";

fn deal_from_row(r: &sqlx::any::AnyRow) -> Deal {
    Deal {
        id: r.get("id"),
        customer: r.get("customer_id"),
        lead: r.get("lead_id"),
        title: r.get("title"),
        amount_fen: r.get("amount_fen"),
        currency: r.get("currency"),
        region: r.get("region"),
        product_line: r.get("product_line"),
        stage: r.get("stage"),
        outcome: r.get("outcome"),
        closed_at: r
            .get::<Option<i64>, _>("closed_at")
            .map(crate::clock::rfc3339),
        lost_reason: r.get("lost_reason"),
        lost_note: None,
        owner: r.get("owner_user_id"),
        created_at: crate::clock::rfc3339(r.get("created_at")),
        updated_at: crate::clock::rfc3339(r.get("updated_at")),
        stage_history: None,
    }
}

pub async fn get_deal(db: &Db, cipher: &Cipher, org_id: &str, id: &str) -> Result<Deal> {
    let row = sqlx::query(&format!(
        "{DEAL_COLUMNS_NOTE} WHERE id = $1 AND org_id = $2"
    ))
    .bind(id)
    .bind(org_id)
    .fetch_optional(&db.pool)
    .await?
    .ok_or(Error::NotFound { what: "deal" })?;
    let mut deal = deal_from_row(&row);
    deal.lost_note = fields::open_opt(cipher, LOST_NOTE, row.get("lost_note_enc"))?;
    let history = sqlx::query(
        "SELECT from_stage, to_stage, actor_user_id, reason, reason_enc, at, kind FROM deal_stage_history \
         WHERE deal_id = $1 ORDER BY at, id",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    deal.stage_history = Some(
        history
            .iter()
            .map(|r| {
                // `reason` holds codes (`created`); a typed reason is encrypted.
                let code: Option<String> = r.get("reason");
                let typed = fields::open_opt(cipher, ROLLBACK_REASON, r.get("reason_enc"))?;
                Ok(StageChange {
                    kind: if code.as_deref() == Some("created")
                        && r.get::<String, _>("kind") == "advance"
                    {
                        "created".into()
                    } else {
                        r.get("kind")
                    },
                    from: r.get("from_stage"),
                    to: r.get("to_stage"),
                    actor: r.get("actor_user_id"),
                    reason: typed.or(code),
                    at: crate::clock::rfc3339(r.get("at")),
                })
            })
            .collect::<Result<_>>()?,
    );
    Ok(deal)
}

pub async fn list_deals(
    db: &Db,
    org_id: &str,
    f: &DealFilter,
    page: &PageRequest,
) -> Result<Page<Deal>> {
    let mut sel = Select::org_page(org_id, page);
    sel.equal_each(&[
        ("customer_id", &f.customer),
        ("owner_user_id", &f.owner),
        ("stage", &f.stage),
        ("outcome", &f.outcome),
        ("region", &f.region),
        ("product_line", &f.product_line),
    ]);
    let sql = sel.sql(DEAL_COLUMNS, "ORDER BY id LIMIT {limit}");
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let deals = rows.iter().map(deal_from_row).collect();
    Ok(Page::from_rows(deals, page, |d| &d.id))
}
