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
    /// Their name, which every page shows as the one signed in.
    pub user_name: String,
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
    cookie_named(headers, COOKIE)
}

fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
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
        // Found once per request by the access guard.
        if let Some(s) = parts.extensions.get::<Session>() {
            return Ok(s.clone());
        }
        let value = cookie_value(&parts.headers)
            .ok_or_else(|| Error::Unauthenticated("请先登录 (sign in first)".into()))?;
        let row = sqlx::query(
            "SELECT s.user_id, s.org_id, s.csrf_token, s.platform, u.name AS user_name FROM web_sessions s JOIN users u ON u.id = s.user_id \
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
            user_name: row.get("user_name"),
        })
    }
}

/// The pre-login cookie that binds an OAuth `state` to the browser that asked for it, so a
/// callback URL opened anywhere else signs no one in (login CSRF). Over TLS it is a
/// `__Host-` cookie, which no sibling subdomain can set or shadow; over plain http (the
/// demo, tests) `__Host-` is not allowed, so it is scoped to `/auth` instead.
pub fn signin_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-closeloop_signin"
    } else {
        "closeloop_signin"
    }
}

/// How long a sign-in may take: the `state` and its cookie live this long.
const SIGNIN_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// The browser's sign-in binding and the `Set-Cookie` that (re)sets it. A browser that
/// already holds one keeps it, so sign-ins started in two tabs can both finish.
pub fn signin_binding(headers: &HeaderMap, secure: bool) -> (String, String) {
    let name = signin_cookie_name(secure);
    let value = cookie_named(headers, name)
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .unwrap_or_else(random_token);
    let attributes = if secure {
        "Path=/; Secure"
    } else {
        "Path=/auth"
    };
    let set = format!(
        "{name}={value}; {attributes}; HttpOnly; SameSite=Lax; Max-Age={}",
        SIGNIN_LIFETIME_MS / 1000
    );
    (value, set)
}

/// Remembers where to go after sign-in under a fresh single-use `state`, bound to the
/// browser holding the sign-in cookie `browser`; returns the state.
pub async fn new_oauth_state(
    db: &Db,
    now_ms: i64,
    next_path: &str,
    browser: &str,
) -> Result<String> {
    let state = random_token();
    sqlx::query(
        "INSERT INTO oauth_states (state_hash, next_path, expires_at, browser_hash) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash(&state))
    .bind(next_path)
    .bind(now_ms + SIGNIN_LIFETIME_MS)
    .bind(hash(browser))
    .execute(&db.pool)
    .await?;
    Ok(state)
}

/// What a callback's `state` allows.
#[derive(Debug, PartialEq, Eq)]
pub enum OAuthState {
    /// Consumed; go on to this path once signed in.
    Next(String),
    /// The state is live but this browser did not start it (no or another sign-in
    /// cookie). It stays usable by the browser that did.
    OtherBrowser,
}

/// Consumes a `state` presented with the request's `headers`: an error when it is
/// unknown, used or expired.
pub async fn take_oauth_state(
    db: &Db,
    now_ms: i64,
    state: &str,
    headers: &HeaderMap,
    secure: bool,
) -> Result<OAuthState> {
    let gone = || Error::invalid("登录请求已失效，请重试 (sign-in state unknown, used or expired)");
    sqlx::query("DELETE FROM oauth_states WHERE expires_at <= $1")
        .bind(now_ms)
        .execute(&db.pool)
        .await?;
    let row = sqlx::query("SELECT next_path, browser_hash FROM oauth_states WHERE state_hash = $1")
        .bind(hash(state))
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(gone)?;
    let bound: Option<String> = row.get("browser_hash");
    let presented = cookie_named(headers, signin_cookie_name(secure)).map(|v| hash(&v));
    let same_browser = match (bound, presented) {
        (Some(bound), Some(presented)) => bool::from(bound.as_bytes().ct_eq(presented.as_bytes())),
        _ => false,
    };
    if !same_browser {
        return Ok(OAuthState::OtherBrowser);
    }
    // Two requests racing with the same state: only the one whose delete lands wins.
    let taken = sqlx::query("DELETE FROM oauth_states WHERE state_hash = $1 AND expires_at > $2")
        .bind(hash(state))
        .bind(now_ms)
        .execute(&db.pool)
        .await?
        .rows_affected();
    if taken == 1 {
        Ok(OAuthState::Next(row.get("next_path")))
    } else {
        Err(gone())
    }
}

/// The page a person sees when the sign-in they arrived with was started in another
/// browser: nothing was created, and starting again from here works.
pub fn other_browser_page() -> axum::response::Response {
    crate::http::pages::sidebar::message_page(
        axum::http::StatusCode::FORBIDDEN,
        "无法完成登录",
        "该登录链接不是在当前浏览器中发起的，为保护您的账号已拒绝登录。请在本浏览器中重新打开页面登录。",
    )
}

/// Whether a state-changing request without a session (DingTalk's 免登 code) comes from
/// our own page: `Sec-Fetch-Site: same-origin`, or, from a browser that does not send
/// fetch metadata, an `Origin` equal to `public_url`'s. Browsers send one or the other on
/// every POST, so a request with neither, or with a cross-site one, is refused — another
/// site cannot post its own code to sign a visitor into the wrong account.
pub fn from_our_page(headers: &HeaderMap, public_url: &str) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return site.eq_ignore_ascii_case("same-origin");
    }
    let origin_of = |url: &str| {
        reqwest::Url::parse(url)
            .ok()
            .map(|u| u.origin())
            .filter(|o| o.is_tuple())
    };
    match (header("origin").and_then(origin_of), origin_of(public_url)) {
        (Some(origin), Some(ours)) => origin == ours,
        _ => false,
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
    use super::{from_our_page, safe_next};
    use axum::http::HeaderMap;

    #[test]
    fn only_our_own_page_may_post_a_sign_in() {
        let ours = "https://cl.example.com/";
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            from_our_page(&h, ours)
        };
        assert!(with(&[("sec-fetch-site", "same-origin")]));
        assert!(with(&[("origin", "https://cl.example.com")]));
        assert!(with(&[("origin", "https://CL.example.com:443")]));
        assert!(with(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://cl.example.com")
        ]));
        for refused in [
            &[][..],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "none")],
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://cl.example.com"),
            ],
            &[("origin", "null")],
            &[("origin", "https://evil.example")],
            &[("origin", "http://cl.example.com")],
            &[("origin", "https://cl.example.com.evil.example")],
            &[("origin", "https://cl.example.com:8443")],
        ] {
            assert!(!with(refused), "{refused:?}");
        }
    }

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
