//! WeCom access tokens (docs/protocols/wecom.md#access-tokens-and-limits): one per secret — the
//! app, customer-contact (客户联系) and 公费电话 secrets each get their own — cached until shortly before
//! they expire.
//!
//! - **Single flight**: one refresh per secret at a time; callers that queued behind it use
//!   its result, so a burst of callers on a cold cache makes one `gettoken` call.
//! - **Invalidation** names the token that failed, so a token already replaced by a
//!   concurrent caller is not thrown away again.
//! - **Wrong credentials** (40001, 40013) are a configuration error: logged loudly and
//!   remembered for a back-off period in which no `gettoken` is sent, because WeCom bans an
//!   IP that keeps presenting a bad secret.
//! - **Across replicas** (PostgreSQL): with a shared store, a refresh takes an advisory
//!   lock on the token's key and first looks at the token another replica may have just
//!   stored (encrypted with the data key), so replicas make one `gettoken` call between them.
//! - Secrets and tokens never appear in errors, logs or `Debug`: the `gettoken` URL carries
//!   the secret, so transport errors are reported without their URL.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::clock::SharedClock;
use crate::config::{Secret, WecomConfig};
use crate::jobs::JobError;

/// Refresh a token when less than this is left of its lifetime.
const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How long a rejected secret is not presented to WeCom again.
const DEFAULT_CONFIG_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// WeCom documents 7200 s; used when a response omits `expires_in`.
const DEFAULT_EXPIRES_IN: u64 = 7200;

/// Which WeCom secret a token is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// The self-built app's `secret`.
    App,
    /// The customer-contact (客户联系) `contact_secret`.
    Contact,
    /// The 公费电话 `dial_secret`.
    Dial,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::App => "app",
            SecretKind::Contact => "contact",
            SecretKind::Dial => "dial",
        }
    }

    /// The configuration key an operator has to fix when WeCom rejects the secret.
    pub fn config_key(self) -> &'static str {
        match self {
            SecretKind::App => "wecom.secret",
            SecretKind::Contact => "wecom.contact_secret",
            SecretKind::Dial => "wecom.dial_secret",
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An access token; shown as `[redacted]`.
#[derive(Clone)]
pub struct AccessToken(SecretString);

impl AccessToken {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The secret or corp id is wrong or missing: retrying cannot help until an operator
    /// fixes the configuration.
    #[error("WeCom rejected the {kind} credentials (errcode {errcode}: {errmsg}); fix {key} — no new token is requested until the back-off ends", key = kind.config_key())]
    Configuration {
        kind: SecretKind,
        errcode: i64,
        errmsg: String,
    },
    #[error("no {key} is configured", key = kind.config_key())]
    NotConfigured { kind: SecretKind },
    /// A network failure, 5xx or `system busy`: worth retrying later.
    #[error("fetching a WeCom {kind} access token failed: {message}")]
    Transient { kind: SecretKind, message: String },
}

impl From<TokenError> for JobError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Transient { .. } => JobError::Retry(e.to_string()),
            TokenError::Configuration { .. } | TokenError::NotConfigured { .. } => {
                JobError::GiveUp(e.to_string())
            }
        }
    }
}

/// Caches the access tokens of one corp, one per configured secret. Cheap to clone.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
    refresh_margin: Duration,
    config_backoff: Duration,
    shared: Option<Shared>,
}

/// The database every replica sees; used on PostgreSQL only (an SQLite deployment is one
/// process, and holding its single write lock across an HTTP call would stall writers).
#[derive(Clone)]
struct Shared {
    db: crate::db::Db,
    cipher: crate::security::Cipher,
}

const TOKEN_CONTEXT: &str = "platform_tokens.token";

struct Inner {
    client: reqwest::Client,
    api_base: String,
    corp_id: String,
    clock: SharedClock,
    slots: HashMap<SecretKind, Slot>,
}

struct Slot {
    secret: SecretString,
    state: Mutex<SlotState>,
    /// Held across a `gettoken` call: the single flight.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotState {
    token: Option<Cached>,
    /// SHA-256 of the last token the platform refused: a copy of it in the shared store
    /// is stale too.
    refused: Option<String>,
    /// A rejection of the credentials and when it stops blocking new attempts (epoch ms).
    rejected: Option<(TokenError, i64)>,
    /// Counts finished fetches, so callers that queued behind a failed one share its error
    /// instead of each trying again.
    fetches: u64,
    last_error: Option<TokenError>,
}

struct Cached {
    token: AccessToken,
    expires_at_ms: i64,
}

#[derive(Deserialize)]
struct GettokenResponse {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<_> = self.inner.slots.keys().map(|k| k.as_str()).collect();
        kinds.sort_unstable();
        f.debug_struct("TokenCache")
            .field("corp_id", &self.inner.corp_id)
            .field("api_base", &self.inner.api_base)
            .field("kinds", &kinds)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache for `corp_id` holding one token per given secret.
    pub fn new(
        corp_id: impl Into<String>,
        secrets: Vec<(SecretKind, Secret)>,
        api_base: impl Into<String>,
        client: reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        let slots = secrets
            .into_iter()
            .map(|(kind, secret)| {
                let slot = Slot {
                    secret: SecretString::from(secret.expose().to_string()),
                    state: Mutex::new(SlotState::default()),
                    refresh: tokio::sync::Mutex::new(()),
                };
                (kind, slot)
            })
            .collect();
        TokenCache {
            inner: Arc::new(Inner {
                client,
                api_base: api_base.into().trim_end_matches('/').to_string(),
                corp_id: corp_id.into(),
                clock,
                slots,
            }),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            config_backoff: DEFAULT_CONFIG_BACKOFF,
            shared: None,
        }
    }

    /// Shares tokens with the other replicas through the database (PostgreSQL only; on
    /// SQLite this changes nothing).
    pub fn shared_through(mut self, db: crate::db::Db, cipher: crate::security::Cipher) -> Self {
        if db.backend == crate::config::Backend::Postgres {
            self.shared = Some(Shared { db, cipher });
        }
        self
    }

    /// A cache for every secret `[wecom]` configures.
    pub fn from_config(cfg: &WecomConfig, client: reqwest::Client, clock: SharedClock) -> Self {
        let secrets = [
            (SecretKind::App, Some(&cfg.secret)),
            (SecretKind::Contact, cfg.contact_secret.as_ref()),
            (SecretKind::Dial, cfg.dial_secret.as_ref()),
        ]
        .into_iter()
        .filter_map(|(kind, secret)| secret.map(|s| (kind, s.clone())))
        .collect();
        TokenCache::new(cfg.corp_id.clone(), secrets, &cfg.api_base, client, clock)
    }

    /// Overrides how long before expiry a token is refreshed and how long a rejected secret
    /// is left alone.
    pub fn with_timings(mut self, refresh_margin: Duration, config_backoff: Duration) -> Self {
        self.refresh_margin = refresh_margin;
        self.config_backoff = config_backoff;
        self
    }

    /// A token for `kind` with more than the refresh margin left, fetching one if needed.
    pub async fn get(&self, kind: SecretKind) -> Result<AccessToken, TokenError> {
        let slot = self.slot(kind)?;
        if let Some(token) = self.usable(slot)? {
            return Ok(token);
        }
        let seen = lock(&slot.state).fetches;
        let _flight = slot.refresh.lock().await;
        // Whoever held the lock before us may have refreshed already, or failed to.
        if let Some(token) = self.usable(slot)? {
            return Ok(token);
        }
        {
            let state = lock(&slot.state);
            if let (true, Some(e)) = (state.fetches != seen, &state.last_error) {
                return self.still_valid(&state, e.clone());
            }
        }
        let fetched = match &self.shared {
            Some(shared) => self.fetch_shared(shared, kind, slot).await,
            None => self.fetch(kind, slot).await,
        };
        {
            let mut state = lock(&slot.state);
            state.fetches += 1;
            state.last_error = fetched.as_ref().err().cloned();
        }
        match fetched {
            Ok((token, expires_in)) => {
                let expires_at_ms = self
                    .now_ms()
                    .saturating_add(duration_ms(Duration::from_secs(expires_in)));
                let mut state = lock(&slot.state);
                state.rejected = None;
                state.token = Some(Cached {
                    token: token.clone(),
                    expires_at_ms,
                });
                Ok(token)
            }
            Err(e @ TokenError::Configuration { .. }) => {
                tracing::error!(
                    platform = "wecom",
                    kind = kind.as_str(),
                    config_key = kind.config_key(),
                    backoff_secs = self.config_backoff.as_secs(),
                    error = %e,
                    "WeCom rejected a configured secret; fix the configuration",
                );
                let until = self
                    .now_ms()
                    .saturating_add(duration_ms(self.config_backoff));
                let mut state = lock(&slot.state);
                state.token = None;
                state.rejected = Some((e.clone(), until));
                Err(e)
            }
            Err(e) => {
                tracing::warn!(platform = "wecom", kind = kind.as_str(), error = %e,
                    "fetching a WeCom access token failed");
                self.still_valid(&lock(&slot.state), e)
            }
        }
    }

    /// After a failed refresh, a token that is due for refresh but not yet expired still
    /// works.
    fn still_valid(&self, state: &SlotState, e: TokenError) -> Result<AccessToken, TokenError> {
        match &state.token {
            Some(cached) if cached.expires_at_ms > self.now_ms() => Ok(cached.token.clone()),
            _ => Err(e),
        }
    }

    /// Forgets `token` after WeCom refused it (40014, 42001). Does nothing if the cache
    /// already holds a different token, so concurrent failures cause one refresh.
    pub fn invalidate(&self, kind: SecretKind, token: &AccessToken) {
        let Some(slot) = self.inner.slots.get(&kind) else {
            return;
        };
        let mut state = lock(&slot.state);
        if state
            .token
            .as_ref()
            .is_some_and(|cached| cached.token.expose() == token.expose())
        {
            state.token = None;
        }
        state.refused = Some(token_hash(token.expose()));
    }

    /// The shared store's key for a secret: platform, corp, kind and a hash of the
    /// secret (a rotated secret starts afresh; the secret itself is never stored).
    fn shared_key(&self, kind: SecretKind, slot: &Slot) -> String {
        format!(
            "wecom:{}:{}:{}",
            self.inner.corp_id,
            kind.as_str(),
            &token_hash(slot.secret.expose_secret())[..16]
        )
    }

    /// A refresh under the cross-replica lock: the token another replica stored, when it
    /// is fresh and not the one just refused; otherwise a `gettoken` call whose result is
    /// stored for the others. Returns the remaining lifetime in seconds.
    async fn fetch_shared(
        &self,
        shared: &Shared,
        kind: SecretKind,
        slot: &Slot,
    ) -> Result<(AccessToken, u64), TokenError> {
        let transient = |message: String| TokenError::Transient { kind, message };
        let db_error = |e: sqlx::Error| {
            tracing::warn!(error = %e, "shared token store unavailable");
            transient("the shared token store is unavailable".into())
        };
        let key = self.shared_key(kind, slot);
        let mut tx = shared.db.pool.begin().await.map_err(db_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT token_enc, expires_at FROM platform_tokens WHERE key = $1")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let now = self.now_ms();
        let refused = lock(&slot.state).refused.clone();
        if let Some((sealed, expires_at)) = row {
            if let Ok(token) = shared.cipher.decrypt(TOKEN_CONTEXT, &sealed) {
                let fresh = expires_at.saturating_sub(now) > duration_ms(self.refresh_margin);
                if fresh && refused.as_deref() != Some(token_hash(&token).as_str()) {
                    tx.commit().await.map_err(db_error)?;
                    let left = u64::try_from((expires_at - now) / 1000).unwrap_or(0);
                    return Ok((AccessToken(SecretString::from(token)), left));
                }
            }
        }
        let (token, expires_in) = self.fetch(kind, slot).await?;
        let expires_at = now.saturating_add(duration_ms(Duration::from_secs(expires_in)));
        sqlx::query(
            "INSERT INTO platform_tokens (key, token_enc, expires_at, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET token_enc = excluded.token_enc, expires_at = excluded.expires_at, \
             updated_at = excluded.updated_at",
        )
        .bind(&key)
        .bind(shared.cipher.encrypt(TOKEN_CONTEXT, token.expose()))
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok((token, expires_in))
    }

    fn slot(&self, kind: SecretKind) -> Result<&Slot, TokenError> {
        self.inner
            .slots
            .get(&kind)
            .ok_or(TokenError::NotConfigured { kind })
    }

    /// The cached token if it is fresh enough; the remembered rejection while it lasts.
    fn usable(&self, slot: &Slot) -> Result<Option<AccessToken>, TokenError> {
        let now = self.now_ms();
        let state = lock(&slot.state);
        if let Some((error, until)) = &state.rejected {
            if now < *until {
                return Err(error.clone());
            }
        }
        let margin = duration_ms(self.refresh_margin);
        Ok(state
            .token
            .as_ref()
            .filter(|cached| cached.expires_at_ms.saturating_sub(now) > margin)
            .map(|cached| cached.token.clone()))
    }

    async fn fetch(&self, kind: SecretKind, slot: &Slot) -> Result<(AccessToken, u64), TokenError> {
        let transient = |message: String| TokenError::Transient { kind, message };
        let response = self
            .inner
            .client
            .get(format!("{}/cgi-bin/gettoken", self.inner.api_base))
            .query(&[
                ("corpid", self.inner.corp_id.as_str()),
                ("corpsecret", slot.secret.expose_secret()),
            ])
            .send()
            .await
            .map_err(|e| transient(describe_transport(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(transient(format!("HTTP {status}")));
        }
        let body: GettokenResponse = response
            .json()
            .await
            .map_err(|e| transient(format!("unreadable response: {}", describe_transport(&e))))?;
        let errmsg = redact(&body.errmsg, slot.secret.expose_secret());
        match body.errcode {
            0 => match body.access_token.filter(|t| !t.is_empty()) {
                Some(token) => Ok((
                    AccessToken(SecretString::from(token)),
                    body.expires_in.unwrap_or(DEFAULT_EXPIRES_IN),
                )),
                None => Err(transient("errcode 0 without an access_token".into())),
            },
            // 40001 wrong secret, 40013 wrong corp id, 40091 secret invalid (older docs).
            40001 | 40013 | 40091 => Err(TokenError::Configuration {
                kind,
                errcode: body.errcode,
                errmsg,
            }),
            code => Err(transient(format!("errcode {code}: {errmsg}"))),
        }
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }
}

/// A transport error in words of our own: reqwest's `Display` includes the URL, and URLs
/// carry the secret or the access token.
pub(crate) fn describe_transport(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_decode() {
        "could not decode the body"
    } else if e.is_body() {
        "could not read the body"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    match e.status() {
        Some(status) => format!("{what} (HTTP {status})"),
        None => what.to_string(),
    }
}

/// Removes a secret value from text that came from outside.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "[redacted]")
    }
}

fn token_hash(value: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.as_bytes()))
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn lock(state: &Mutex<SlotState>) -> MutexGuard<'_, SlotState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
