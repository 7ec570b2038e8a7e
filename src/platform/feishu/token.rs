//! Feishu tenant access tokens (docs/protocols/feishu.md#tokens-and-limits) and the authenticated
//! API call.
//!
//! - **Cache** until shortly before `expire` (the official Go SDK keeps a 3-minute margin).
//! - **Single flight**: one `tenant_access_token/internal` request at a time; callers queued
//!   behind it use its result.
//! - **Token-invalid codes** (99991663, 99991664, 99991671) from an API call drop exactly the
//!   token that failed, fetch a new one and retry the call once.
//! - **Wrong app credentials** are a configuration error, remembered for a back-off period in
//!   which no token request is sent, so a bad secret is not presented in a loop. Only the
//!   credential codes count: any other refusal of the token request is retried.
//! - **Rate limits** (HTTP 429 or code 99991400) delay the job instead of failing it.
//! - Secrets and tokens never appear in errors, logs or `Debug`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::clock::SharedClock;
use crate::config::FeishuConfig;
use crate::jobs::JobError;

pub const TENANT_TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";
/// Codes meaning "this token is no longer accepted" (oapi-sdk-go `core/constants.go`).
pub const TOKEN_INVALID_CODES: [i64; 3] = [99991663, 99991664, 99991671];
/// The token endpoint's answers to wrong app credentials: 10014 "app secret invalid" (the
/// `tenant_access_token/internal` endpoint) and 99991543 "app_id or app_secret is incorrect"
/// (larksuite/cli `internal/output/lark_errors.go`); 10003 "invalid parameter" (Feishu's
/// generic error codes), as that request carries nothing but the app id and secret.
pub const BAD_CREDENTIAL_CODES: [i64; 3] = [10003, 10014, 99991543];
/// "request trigger frequency limit", sent with HTTP 429 (HTTP 400 by older APIs) and an
/// `x-ogw-ratelimit-reset` header in seconds
/// (https://open.feishu.cn/document/server-docs/api-call-guide/frequency-control).
pub const RATE_LIMITED: i64 = 99991400;
const RATE_LIMIT_RESET_HEADER: &str = "x-ogw-ratelimit-reset";
const REFRESH_MARGIN: Duration = Duration::from_secs(3 * 60);
const CONFIG_BACKOFF: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, thiserror::Error)]
pub enum FeishuError {
    /// The app id or secret is wrong: retrying cannot help until an operator fixes it.
    #[error("Feishu rejected the app credentials (code {code}: {msg}); fix feishu.app_id / feishu.app_secret — no new token is requested until the back-off ends")]
    Configuration { code: i64, msg: String },
    /// A network failure, 5xx or unreadable answer: worth retrying later.
    #[error("Feishu request failed: {0}")]
    Transient(String),
    /// Feishu's frequency control: wait (at least `retry_after`) and try again.
    #[error("Feishu rate limited the request")]
    RateLimited { retry_after: Option<Duration> },
    /// The API answered with a non-zero `code` other than a token error.
    #[error("Feishu API error {code}: {msg}")]
    Api { code: i64, msg: String },
}

impl From<FeishuError> for JobError {
    fn from(e: FeishuError) -> Self {
        match e {
            FeishuError::Transient(_) => JobError::Retry(e.to_string()),
            FeishuError::RateLimited { retry_after } => JobError::RateLimited {
                retry_after,
                message: e.to_string(),
            },
            FeishuError::Configuration { .. } | FeishuError::Api { .. } => {
                JobError::GiveUp(e.to_string())
            }
        }
    }
}

/// A tenant access token; shown as `[redacted]`.
#[derive(Clone)]
pub struct TenantToken(SecretString);

impl TenantToken {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for TenantToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The Feishu open API of one app, with its token cache. Cheap to clone.
#[derive(Clone)]
pub struct FeishuApi {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    api_base: String,
    app_id: String,
    app_secret: SecretString,
    clock: SharedClock,
    state: Mutex<State>,
    /// Held across a token request: the single flight.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The token and when to stop using it (epoch ms).
    token: Option<(TenantToken, i64)>,
    /// Until when (epoch ms) rejected credentials are not presented again, and why.
    rejected: Option<(i64, i64, String)>,
    token_requests: usize,
}

impl fmt::Debug for FeishuApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeishuApi")
            .field("api_base", &self.inner.api_base)
            .field("app_id", &self.inner.app_id)
            .finish_non_exhaustive()
    }
}

impl FeishuApi {
    pub fn from_config(cfg: &FeishuConfig, client: reqwest::Client, clock: SharedClock) -> Self {
        FeishuApi {
            inner: Arc::new(Inner {
                client,
                api_base: cfg.api_base.trim_end_matches('/').to_string(),
                app_id: cfg.app_id.clone(),
                app_secret: SecretString::from(cfg.app_secret.expose().to_string()),
                clock,
                state: Mutex::new(State::default()),
                refresh: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// How many token requests this process has sent.
    pub fn token_requests(&self) -> usize {
        self.inner.lock().token_requests
    }

    /// A live tenant access token, fetched when the cache has none.
    pub async fn token(&self) -> Result<TenantToken, FeishuError> {
        if let Some(t) = self.cached()? {
            return Ok(t);
        }
        let _flight = self.inner.refresh.lock().await;
        // Whoever held the flight before us may have fetched one.
        if let Some(t) = self.cached()? {
            return Ok(t);
        }
        self.fetch().await
    }

    /// Drops `failed` if it is still the cached token (a newer one is kept).
    pub fn invalidate(&self, failed: &TenantToken) {
        let mut state = self.inner.lock();
        if state
            .token
            .as_ref()
            .is_some_and(|(t, _)| t.expose() == failed.expose())
        {
            state.token = None;
        }
    }

    /// Calls `method path` with the tenant token and a JSON body; a token-invalid answer
    /// refreshes the token and retries once. Returns the whole answer when `code` is 0.
    pub async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, FeishuError> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let mut req = self
                .inner
                .client
                .request(method.clone(), format!("{}{path}", self.inner.api_base))
                .bearer_auth(token.expose())
                .query(query);
            if let Some(body) = body {
                req = req.json(body);
            }
            let answer = send(req).await?;
            let code = answer["code"].as_i64().unwrap_or(-1);
            if code == 0 {
                return Ok(answer);
            }
            let msg = answer["msg"].as_str().unwrap_or_default().to_string();
            if TOKEN_INVALID_CODES.contains(&code) {
                self.invalidate(&token);
                if !retried {
                    retried = true;
                    continue;
                }
                return Err(FeishuError::Transient(format!(
                    "token rejected twice (code {code})"
                )));
            }
            return Err(FeishuError::Api { code, msg });
        }
    }

    fn cached(&self) -> Result<Option<TenantToken>, FeishuError> {
        let now = self.inner.clock.now_ms();
        let state = self.inner.lock();
        if let Some((until, code, msg)) = &state.rejected {
            if now < *until {
                return Err(FeishuError::Configuration {
                    code: *code,
                    msg: msg.clone(),
                });
            }
        }
        Ok(state
            .token
            .as_ref()
            .filter(|(_, use_until)| now < *use_until)
            .map(|(t, _)| t.clone()))
    }

    async fn fetch(&self) -> Result<TenantToken, FeishuError> {
        self.inner.lock().token_requests += 1;
        let req = self
            .inner
            .client
            .post(format!("{}{TENANT_TOKEN_PATH}", self.inner.api_base))
            .json(&json!({
                "app_id": self.inner.app_id,
                "app_secret": self.inner.app_secret.expose_secret(),
            }));
        let answer = send(req).await?;
        let code = answer["code"].as_i64().unwrap_or(-1);
        let now = self.inner.clock.now_ms();
        match (code, answer["tenant_access_token"].as_str()) {
            (0, Some(token)) if !token.is_empty() => {
                let expire = answer["expire"].as_u64().unwrap_or(7200);
                let use_for = Duration::from_secs(expire).saturating_sub(REFRESH_MARGIN);
                let token = TenantToken(SecretString::from(token.to_string()));
                let mut state = self.inner.lock();
                state.token = Some((token.clone(), now + use_for.as_millis() as i64));
                state.rejected = None;
                Ok(token)
            }
            (0, _) => Err(FeishuError::Transient(
                "token answer without a token".into(),
            )),
            (-1, _) => Err(FeishuError::Transient("token answer without a code".into())),
            (code, _) if !BAD_CREDENTIAL_CODES.contains(&code) => {
                let msg = answer["msg"].as_str().unwrap_or_default();
                Err(FeishuError::Transient(format!(
                    "token request refused (code {code}: {msg})"
                )))
            }
            (code, _) => {
                let msg = answer["msg"].as_str().unwrap_or_default().to_string();
                tracing::error!(
                    platform = "feishu",
                    code,
                    %msg,
                    "Feishu rejected the app credentials; check feishu.app_id and feishu.app_secret"
                );
                self.inner.lock().rejected =
                    Some((now + CONFIG_BACKOFF.as_millis() as i64, code, msg.clone()));
                Err(FeishuError::Configuration { code, msg })
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sends and reads a JSON answer; a rate-limit answer is an error. Transport errors are
/// reported without their URL.
async fn send(req: reqwest::RequestBuilder) -> Result<Value, FeishuError> {
    let res = req
        .send()
        .await
        .map_err(|e| FeishuError::Transient(transport(&e)))?;
    let status = res.status();
    if status.is_server_error() {
        return Err(FeishuError::Transient(format!("HTTP {status}")));
    }
    let retry_after = res
        .headers()
        .get(RATE_LIMIT_RESET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs);
    let answer = res.json::<Value>().await;
    let limited = status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || answer
            .as_ref()
            .is_ok_and(|a| a["code"].as_i64() == Some(RATE_LIMITED));
    if limited {
        return Err(FeishuError::RateLimited { retry_after });
    }
    answer.map_err(|_| FeishuError::Transient(format!("HTTP {status} without a JSON body")))
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "transport error".into()
    }
}
