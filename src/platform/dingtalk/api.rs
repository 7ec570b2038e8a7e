//! The DingTalk API client and its access token
//! (docs/protocols/dingtalk.md#access-tokens-and-limits).
//!
//! - One token per app from `POST /v1.0/oauth2/accessToken`, cached until shortly before it
//!   expires; it is sent as `x-acs-dingtalk-access-token` to the new API.
//! - **Single flight**: the refresh holds the cache lock, so callers queued behind it use
//!   its token and a burst on a cold cache makes one token request.
//! - A call refused for its token (401 `InvalidAuthentication`, or errcode 40014 / 42001 /
//!   41001) drops that token and is retried once with a fresh one.
//! - **Wrong credentials** are a configuration error: the job gives up and no token is
//!   requested again for a back-off period, instead of presenting a bad secret in a loop.
//! - **Throttling** (the per-IP ban, QPS limits, HTTP 429) delays the job; a 2xx that is not
//!   a complete API answer is retried, never taken for success.
//! - The secret and tokens never appear in errors, logs or `Debug`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::clock::SharedClock;
use crate::config::DingtalkConfig;
use crate::jobs::JobError;

/// Refresh a token when less than this is left of its lifetime.
const REFRESH_MARGIN_MS: i64 = 5 * 60 * 1000;
/// How long rejected credentials are not presented again.
const CONFIG_BACKOFF_MS: i64 = 5 * 60 * 1000;
const ACCESS_TOKEN: &str = "/v1.0/oauth2/accessToken";
const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";
/// The `status` of DingTalk's per-IP ban answer, and the ban it documents.
const IP_BANNED: i64 = 1111;
const IP_BAN_MINUTES: u64 = 5;
/// A `wait` beyond this is taken as a typo, not as a day-long stall of every job.
const MAX_IP_BAN_MINUTES: u64 = 60;

/// A DingTalk API client for one app. Cheap to clone.
#[derive(Clone)]
pub struct DingtalkApi {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    api_base: String,
    oapi_base: String,
    app_key: String,
    app_secret: SecretString,
    clock: SharedClock,
    cache: tokio::sync::Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    token: Option<(SecretString, i64)>,
    /// Until when (epoch ms) the credentials are known to be wrong.
    rejected_until: Option<i64>,
}

impl fmt::Debug for DingtalkApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DingtalkApi")
            .field("app_key", &self.inner.app_key)
            .finish_non_exhaustive()
    }
}

impl DingtalkApi {
    pub fn from_config(cfg: &DingtalkConfig, client: reqwest::Client, clock: SharedClock) -> Self {
        DingtalkApi {
            inner: Arc::new(Inner {
                client,
                api_base: cfg.api_base.trim_end_matches('/').to_string(),
                oapi_base: cfg.oapi_base.trim_end_matches('/').to_string(),
                app_key: cfg.app_key.clone(),
                app_secret: SecretString::from(cfg.app_secret.expose().to_string()),
                clock,
                cache: tokio::sync::Mutex::new(Cache::default()),
            }),
        }
    }

    /// A live access token, fetched if the cache has none.
    async fn token(&self) -> Result<SecretString, JobError> {
        let now = self.inner.clock.now_ms();
        let mut cache = self.inner.cache.lock().await;
        if let Some((token, expires)) = &cache.token {
            if *expires - REFRESH_MARGIN_MS > now {
                return Ok(token.clone());
            }
        }
        if cache.rejected_until.is_some_and(|until| until > now) {
            return Err(configuration_error());
        }
        let res = self
            .inner
            .client
            .post(format!("{}{ACCESS_TOKEN}", self.inner.api_base))
            .json(&serde_json::json!({
                "appKey": self.inner.app_key,
                "appSecret": self.inner.app_secret.expose_secret(),
            }))
            .send()
            .await
            .map_err(|e| {
                JobError::Retry(format!(
                    "fetching a DingTalk access token failed: {}",
                    e.without_url()
                ))
            })?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        // Throttling is not a verdict on the credentials: no back-off blackout for it.
        if let Some(e) = throttled(status, &body, ACCESS_TOKEN) {
            return Err(e);
        }
        if status.is_server_error() {
            return Err(JobError::Retry(format!(
                "fetching a DingTalk access token failed: HTTP {status}"
            )));
        }
        let token = body["accessToken"].as_str().filter(|t| !t.is_empty());
        let Some(token) = token.filter(|_| status.is_success()) else {
            if status.is_client_error() {
                cache.rejected_until = Some(now + CONFIG_BACKOFF_MS);
                tracing::error!(
                    platform = "dingtalk",
                    code = body["code"].as_str().unwrap_or_default(),
                    "DingTalk rejected the app credentials; fix dingtalk.app_key / dingtalk.app_secret"
                );
                return Err(configuration_error());
            }
            return Err(JobError::Retry(
                "DingTalk answered the token request without a token".into(),
            ));
        };
        let expires_in = body["expireIn"].as_i64().unwrap_or(7200);
        let token = SecretString::from(token.to_string());
        cache.token = Some((token.clone(), now + expires_in * 1000));
        cache.rejected_until = None;
        Ok(token)
    }

    /// Forgets `token` if it is still the cached one (a concurrent caller may have
    /// replaced it already).
    async fn invalidate(&self, token: &SecretString) {
        let mut cache = self.inner.cache.lock().await;
        if cache
            .token
            .as_ref()
            .is_some_and(|(t, _)| t.expose_secret() == token.expose_secret())
        {
            cache.token = None;
        }
    }

    /// Calls the new API (`api.dingtalk.com`) with a JSON body (`Value::Null`: none, for a
    /// GET), refreshing the token once if it was refused.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, JobError> {
        self.request(false, method, path, body).await
    }

    /// Calls the old API (`oapi.dingtalk.com`, `?access_token=`) with a JSON body; the same
    /// token serves both.
    pub async fn call_oapi(&self, path: &str, body: &Value) -> Result<Value, JobError> {
        self.request(true, reqwest::Method::POST, path, body).await
    }

    async fn request(
        &self,
        oapi: bool,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, JobError> {
        let mut refreshed = false;
        loop {
            let token = self.token().await?;
            let request = if oapi {
                self.inner
                    .client
                    .request(method.clone(), format!("{}{path}", self.inner.oapi_base))
                    .query(&[("access_token", token.expose_secret())])
            } else {
                self.inner
                    .client
                    .request(method.clone(), format!("{}{path}", self.inner.api_base))
                    .header(TOKEN_HEADER, token.expose_secret())
            };
            // A GET carries its parameters in the path's query string and has no body.
            let request = if body.is_null() {
                request
            } else {
                request.json(body)
            };
            let res = request.send().await.map_err(|e| {
                JobError::Retry(format!("DingTalk {path} failed: {}", e.without_url()))
            })?;
            let status = res.status();
            let answer: Value = res.json().await.unwrap_or(Value::Null);
            if let Some(e) = throttled(status, &answer, path) {
                return Err(e);
            }
            let code = answer["code"].as_str().unwrap_or_default();
            let token_refused = code == "InvalidAuthentication"
                || matches!(answer["errcode"].as_i64(), Some(40014 | 42001 | 41001));
            if token_refused {
                self.invalidate(&token).await;
                if refreshed {
                    return Err(JobError::RefreshCredentials(format!(
                        "DingTalk refused a fresh access token for {path}"
                    )));
                }
                refreshed = true;
                continue;
            }
            if status.is_server_error() {
                return Err(JobError::Retry(format!("DingTalk {path}: HTTP {status}")));
            }
            if !status.is_success() || answer["errcode"].as_i64().is_some_and(|c| c != 0) {
                return Err(JobError::GiveUp(format!(
                    "DingTalk {path} refused the request: HTTP {status} {code}{}",
                    answer["errcode"]
                        .as_i64()
                        .map(|c| format!(" errcode {c}"))
                        .unwrap_or_default()
                )));
            }
            // A 2xx that is not the API's own answer (a gateway page, a cut-off body) must not
            // pass for success: callers would read an empty `result` as "nothing there".
            let complete = if oapi {
                answer["errcode"].as_i64() == Some(0)
            } else {
                answer.is_object()
            };
            if !complete {
                return Err(JobError::Retry(format!(
                    "DingTalk {path} answered HTTP {status} without {}",
                    if oapi { "errcode 0" } else { "a JSON object" }
                )));
            }
            return Ok(answer);
        }
    }
}

/// DingTalk's "slow down" answers, as a delay that does not count as a failed attempt
/// (docs/protocols/dingtalk.md#access-tokens-and-limits; open.dingtalk.com
/// `how-to-process-api-throttling-on-the-dingtalk-server`):
/// - the per-IP ban (over 10000 calls in 20 s, banned for 5 minutes) is a gateway answer
///   without an errcode, `{"status":1111,"wait":5,…}`; `wait` is taken as minutes because
///   the doc pairs `"wait":5` with "禁止调用5分钟";
/// - per-app and global QPS limits: oapi errcode 90018 / 90002, new-API codes
///   `Forbidden.AccessDenied.QpsLimitForAppkeyAndApi` / `…QpsLimitForApi` (1 s suffices);
/// - HTTP 429 from either API.
fn throttled(status: reqwest::StatusCode, answer: &Value, path: &str) -> Option<JobError> {
    if answer["status"].as_i64() == Some(IP_BANNED) {
        let wait = &answer["wait"];
        let minutes = wait
            .as_u64()
            .or_else(|| wait.as_str().and_then(|w| w.parse().ok()))
            .filter(|m| *m > 0)
            .unwrap_or(IP_BAN_MINUTES)
            .min(MAX_IP_BAN_MINUTES);
        return Some(JobError::RateLimited {
            retry_after: Some(Duration::from_secs(minutes * 60)),
            message: format!("DingTalk banned this egress IP for {minutes} min ({path})"),
        });
    }
    let code = answer["code"].as_str().unwrap_or_default();
    let limited = status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || matches!(answer["errcode"].as_i64(), Some(90002 | 90018))
        || code.starts_with("Forbidden.AccessDenied.QpsLimit")
        || code.contains("Throttling");
    limited.then(|| JobError::RateLimited {
        retry_after: Some(Duration::from_secs(1)),
        message: format!("DingTalk {path} is rate limited"),
    })
}

fn configuration_error() -> JobError {
    JobError::GiveUp(
        "DingTalk rejected the app credentials; fix dingtalk.app_key / dingtalk.app_secret \
         (no new token is requested until the back-off ends)"
            .into(),
    )
}

/// The `errcode` of a refusal from [`DingtalkApi::call_oapi`] (the ` errcode N` that ends
/// its `GiveUp` message), for callers to whom one code means an answer, not a failure.
pub fn refusal_errcode(e: &JobError) -> Option<i64> {
    match e {
        JobError::GiveUp(message) => message.rsplit_once(" errcode ")?.1.parse().ok(),
        _ => None,
    }
}
