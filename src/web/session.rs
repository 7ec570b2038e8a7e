//! Sessions live in the database behind an HttpOnly cookie; only a hash of the cookie
//! value is stored. State-changing requests must echo the session's CSRF token in
//! `X-CSRF-Token` (the page reads it from the sign-in response, never from a cookie).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::AppState;

pub const COOKIE: &str = "closeloop_session";
/// A working day and then some: the sidebar signs in again silently through OAuth.
pub const LIFETIME_MS: i64 = 12 * 3600 * 1000;

fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

pub fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub org_id: String,
    pub csrf_token: String,
    /// How they signed in: `wecom`, or `dev` (the demo's sign-in).
    pub platform: Option<String>,
}

impl Session {
    /// Refuses a state-changing request whose `X-CSRF-Token` is missing or wrong.
    pub fn require_csrf(&self, headers: &HeaderMap) -> Result<()> {
        let given = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if given.as_bytes().ct_eq(self.csrf_token.as_bytes()).into() {
            Ok(())
        } else {
            Err(Error::Forbidden("missing or wrong X-CSRF-Token".into()))
        }
    }
}

/// Creates a session; returns (cookie value, CSRF token).
pub async fn create(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    user_id: &str,
    platform: &str,
) -> Result<(String, String)> {
    let value = random_token();
    let csrf = random_token();
    sqlx::query(
        "INSERT INTO web_sessions (id_hash, org_id, user_id, csrf_token, platform, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(hash(&value))
    .bind(org_id)
    .bind(user_id)
    .bind(&csrf)
    .bind(platform)
    .bind(now_ms)
    .bind(now_ms + LIFETIME_MS)
    .execute(&db.pool)
    .await?;
    Ok((value, csrf))
}

pub async fn delete(db: &Db, value: &str) -> Result<()> {
    sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
        .bind(hash(value))
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// The session cookie's value in a request, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value: HttpOnly always, Secure when we are served over TLS.
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        LIFETIME_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = cookie_value(&parts.headers)
            .ok_or_else(|| Error::Unauthenticated("请先登录 (sign in first)".into()))?;
        let row = sqlx::query(
            "SELECT s.user_id, s.org_id, s.csrf_token, s.platform FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.status = 'active'",
        )
        .bind(hash(&value))
        .bind(state.clock.now_ms())
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| Error::Unauthenticated("登录已过期，请重新登录 (session expired)".into()))?;
        Ok(Session {
            user_id: row.get("user_id"),
            org_id: row.get("org_id"),
            csrf_token: row.get("csrf_token"),
            platform: row.get("platform"),
        })
    }
}

/// Remembers where to go after sign-in under a fresh single-use `state`; returns it.
pub async fn new_oauth_state(db: &Db, now_ms: i64, next_path: &str) -> Result<String> {
    let state = random_token();
    sqlx::query("INSERT INTO oauth_states (state_hash, next_path, expires_at) VALUES ($1, $2, $3)")
        .bind(hash(&state))
        .bind(next_path)
        .bind(now_ms + 10 * 60 * 1000)
        .execute(&db.pool)
        .await?;
    Ok(state)
}

/// Consumes a `state`: the path to go to, or an error when unknown, used or expired.
pub async fn take_oauth_state(db: &Db, now_ms: i64, state: &str) -> Result<String> {
    let mut tx = db.begin().await?;
    let row = sqlx::query("SELECT next_path, expires_at FROM oauth_states WHERE state_hash = $1")
        .bind(hash(state))
        .fetch_optional(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM oauth_states WHERE state_hash = $1 OR expires_at < $2")
        .bind(hash(state))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    match row {
        Some(r) if r.get::<i64, _>("expires_at") > now_ms => Ok(r.get("next_path")),
        _ => Err(Error::invalid(
            "登录请求已失效，请重试 (sign-in state unknown, used or expired)",
        )),
    }
}

/// Only same-site paths may follow a sign-in (no open redirects). Browsers drop tabs and
/// line breaks from a URL, so `/\t/evil.example` would become `//evil.example`: a path
/// with any whitespace or control character, a backslash, or a second leading slash is
/// refused.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && p.len() < 512
                && !p.contains('\\')
                && !p.chars().any(|c| c.is_whitespace() || c.is_control())
                && !p[1..].starts_with('/') =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod next_tests {
    use super::safe_next;

    #[test]
    fn only_plain_local_paths_follow_a_sign_in() {
        for ok in ["/sidebar", "/collab/requests/1?x=%2F%2Fa", "/"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "https://evil.example",
            "evil",
            "/x\u{7f}",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
