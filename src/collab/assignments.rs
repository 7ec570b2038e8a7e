//! Who answers a customer's requests for a role: the customer's assigned presales, delivery,
//! finance and legal people (routing in [`super::requests`]; without one a request goes to the
//! role's queue). Set through the API, `closeloop users assign` and the people page, each
//! change audited.

use std::collections::BTreeMap;

use serde_json::json;
use sqlx::Row;

use crate::access::Actor;
use crate::db::Db;
use crate::directory::users;
use crate::error::{Error, Result};
use crate::policy::Grant;

/// The roles the people page assigns per customer.
pub const ASSIGNED_ROLES: [&str; 4] = ["presales", "delivery", "finance", "legal"];

/// A customer with its owner and assigned people.
#[derive(Debug, Clone)]
pub struct CustomerAssignments {
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    /// Role → user id.
    pub assigned: BTreeMap<String, String>,
}

/// Assigns `user` to the customer for `role`, or clears the assignment (`None`: the role's
/// queue answers again). Only a writer that may grant; each change audited
/// (`customer.assign`, `customer.unassign`); clearing what is not set changes nothing.
#[allow(clippy::too_many_arguments)]
pub async fn set(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    grant: Grant,
    customer: &str,
    role: &str,
    user: Option<&str>,
) -> Result<()> {
    grant.require(&["assignments"])?;
    match user {
        Some(user) => assign(db, now_ms, org_id, actor, customer, role, user).await,
        None => unassign(db, now_ms, org_id, actor, customer, role).await,
    }
}

/// An assignment's role must be a user role. The role is not echoed: through the API it
/// arrives in the path, and may be anything.
pub(crate) fn check_role(role: &str) -> Result<()> {
    if users::ROLES.contains(&role) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the role must be one of {}",
        users::ROLES.join(", ")
    )))
}

async fn unassign(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    customer: &str,
    role: &str,
) -> Result<()> {
    check_role(role)?;
    let mut tx = db.begin().await?;
    if !crate::customers::exists_in(&mut tx, org_id, customer).await? {
        return Err(Error::UnknownReference("customer does not exist".into()));
    }
    let removed =
        sqlx::query("DELETE FROM customer_assignments WHERE customer_id = $1 AND role = $2")
            .bind(customer)
            .bind(role)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if removed > 0 {
        actor
            .audit(
                &mut tx,
                now_ms,
                org_id,
                "customer.unassign",
                ("customer", customer),
                json!({"role": role}),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One page of the organisation's customers by name (`offset` rows skipped), with their
/// assignments; the flag says whether more follow.
pub async fn page(
    db: &Db,
    org_id: &str,
    offset: i64,
    limit: i64,
) -> Result<(Vec<CustomerAssignments>, bool)> {
    let rows = sqlx::query(
        "SELECT id, name, owner_user_id FROM customers WHERE org_id = $1 \
         ORDER BY name, id LIMIT $2 OFFSET $3",
    )
    .bind(org_id)
    .bind(limit + 1)
    .bind(offset)
    .fetch_all(&db.pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let mut out: Vec<CustomerAssignments> = rows
        .iter()
        .take(limit as usize)
        .map(|r| CustomerAssignments {
            id: r.get("id"),
            name: r.get("name"),
            owner: r.get("owner_user_id"),
            assigned: BTreeMap::new(),
        })
        .collect();
    if out.is_empty() {
        return Ok((out, more));
    }
    let ids: Vec<String> = out.iter().map(|c| c.id.clone()).collect();
    let sql = format!(
        "SELECT customer_id, role, user_id FROM customer_assignments WHERE customer_id IN ({})",
        users::in_list(ids.len())
    );
    let mut assigned: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in users::bind_all(sqlx::query(&sql), &ids)
        .fetch_all(&db.pool)
        .await?
    {
        assigned
            .entry(r.get("customer_id"))
            .or_default()
            .insert(r.get("role"), r.get("user_id"));
    }
    for c in &mut out {
        c.assigned = assigned.remove(&c.id).unwrap_or_default();
    }
    Ok((out, more))
}

/// One customer with its assignments.
pub async fn of_customer(db: &Db, org_id: &str, customer: &str) -> Result<CustomerAssignments> {
    let row =
        sqlx::query("SELECT id, name, owner_user_id FROM customers WHERE id = $1 AND org_id = $2")
            .bind(customer)
            .bind(org_id)
            .fetch_optional(&db.pool)
            .await?
            .ok_or(Error::NotFound { what: "customer" })?;
    let assigned: BTreeMap<String, String> =
        sqlx::query("SELECT role, user_id FROM customer_assignments WHERE customer_id = $1")
            .bind(customer)
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|r| (r.get("role"), r.get("user_id")))
            .collect();
    Ok(CustomerAssignments {
        id: row.get("id"),
        name: row.get("name"),
        owner: row.get("owner_user_id"),
        assigned,
    })
}

/// The customer an operator names: an id, or a name no other customer has.
pub async fn find_customer(db: &Db, org_id: &str, which: &str) -> Result<CustomerAssignments> {
    let which = which.trim();
    if crate::validate::id("customer", which).is_ok() {
        match of_customer(db, org_id, which).await {
            Ok(c) => return Ok(c),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let ids: Vec<String> =
        sqlx::query("SELECT id FROM customers WHERE org_id = $1 AND name = $2 ORDER BY id")
            .bind(org_id)
            .bind(which)
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|r| r.get("id"))
            .collect();
    match ids.as_slice() {
        [id] => of_customer(db, org_id, id).await,
        [] => Err(Error::UnknownReference(format!(
            "no customer is called or has the id `{which}`"
        ))),
        _ => Err(Error::Conflict(format!(
            "several customers are called `{which}`: {}; name one by id",
            ids.join(", ")
        ))),
    }
}

/// Assigns the customer's person for a role (routing for later requests), audited: the
/// assignee receives the customer's requests for that role.
pub async fn assign(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    customer: &str,
    role: &str,
    user: &str,
) -> Result<()> {
    check_role(role)?;
    let mut tx = db.begin().await?;
    let ok = sqlx::query(
        "SELECT (SELECT id FROM customers WHERE id = $1 AND org_id = $3) AS c, \
                (SELECT id FROM users WHERE id = $2 AND org_id = $3) AS u",
    )
    .bind(customer)
    .bind(user)
    .bind(org_id)
    .fetch_one(&mut *tx)
    .await?;
    if ok.get::<Option<String>, _>("c").is_none() || ok.get::<Option<String>, _>("u").is_none() {
        return Err(Error::UnknownReference(
            "customer or user does not exist".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO customer_assignments (customer_id, role, user_id, assigned_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id, role) DO UPDATE SET user_id = excluded.user_id, assigned_at = excluded.assigned_at",
    )
    .bind(customer)
    .bind(role)
    .bind(user)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "customer.assign",
            ("customer", customer),
            json!({"role": role, "user": user}),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
