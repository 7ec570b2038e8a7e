//! The rule set over the API: the version in force as TOML, and a check of a candidate
//! (the same check and summary as `closeloop rules check` and the rules page).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::http::{AdminKey, ApiJson, AppState, Reader};
use crate::rules::{candidate, store};

/// The rule set in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RulesInForce {
    /// 0: the built-in defaults, never imported.
    pub version: i64,
    /// The rule set as `closeloop rules export` writes it.
    pub toml: String,
    /// When the version was imported (RFC 3339, UTC); null for the defaults.
    pub imported_at: Option<String>,
    /// Who imported it: `cli`, an API key id or a user id; null for the defaults.
    pub imported_by: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/rules", tag = "rules",
    responses((status = 200, description = "The rule set in force, its version and who imported it when", body = RulesInForce),
        (status = 401, description = "`unauthenticated`: no API key, or one that is unknown, revoked or expired", body = super::ErrorBody),
        (status = 403, description = "`forbidden`: the key's role may not do this", body = super::ErrorBody)))]
pub async fn get(State(s): State<AppState>, Reader(p): Reader) -> Result<Json<RulesInForce>> {
    let current = s.rules.current_version(&p.org_id).await?;
    let about = store::provenance(&s.db, &p.org_id)
        .await?
        .filter(|a| a.version == current.version);
    Ok(Json(RulesInForce {
        version: current.version,
        toml: candidate::export(current.version, &current.rules),
        imported_at: about
            .as_ref()
            .map(|a| crate::clock::rfc3339(a.created_at_ms)),
        imported_by: about.and_then(|a| a.created_by),
    }))
}

/// A candidate rule set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// The rule set as TOML (keys left out keep their defaults).
    pub toml: String,
}

/// A candidate that passed the check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checked {
    /// What `closeloop rules check` prints: stages, gates, actions and thresholds.
    pub summary: String,
}

#[utoipa::path(post, path = "/api/v1/rules/check", tag = "rules", request_body = CheckBody,
    responses((status = 200, description = "The candidate is valid; nothing was stored", body = Checked),
        (status = 400, description = "`malformed_body`: not JSON, or Content-Type is not application/json", body = super::ErrorBody),
        (status = 401, description = "`unauthenticated`: no API key, or one that is unknown, revoked or expired", body = super::ErrorBody),
        (status = 403, description = "`forbidden`: only an admin key may check rule sets", body = super::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit", body = super::ErrorBody),
        (status = 422, description = "`invalid_input`: the candidate is not a valid rule set; the message names the key (and the line)", body = super::ErrorBody)))]
pub async fn check(
    AdminKey(_key): AdminKey,
    ApiJson(b): ApiJson<CheckBody>,
) -> Result<Json<Checked>> {
    match candidate::parse(&b.toml) {
        Ok(rules) => Ok(Json(Checked {
            summary: candidate::summary(&rules),
        })),
        Err(e) => Err(Error::invalid(format!("规则未通过检查 ({e})"))),
    }
}
