//! The DingTalk API client and its access token (PROTOCOLS §2.7).
//!
//! - One token per app from `POST /v1.0/oauth2/accessToken`, cached until shortly before it
//!   expires; it is sent as `x-acs-dingtalk-access-token` to the new API.
//! - **Single flight**: the refresh holds the cache lock, so callers queued behind it use
//!   its token and a burst on a cold cache makes one token request.
//! - A call refused for its token (401 `InvalidAuthentication`, or errcode 40014 / 42001 /
//!   41001) drops that token and is retried once with a fresh one.
//! - **Wrong credentials** are a configuration error: the job gives up and no token is
//!   requested again for a back-off period, instead of presenting a bad secret in a loop.
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
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
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
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || answer["errcode"].as_i64() == Some(90002)
                || code.contains("Throttling")
            {
                return Err(JobError::RateLimited {
                    retry_after: Some(Duration::from_secs(1)),
                    message: format!("DingTalk {path} is rate limited"),
                });
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
            return Ok(answer);
        }
    }
}

fn configuration_error() -> JobError {
    JobError::GiveUp(
        "DingTalk rejected the app credentials; fix dingtalk.app_key / dingtalk.app_secret \
         (no new token is requested until the back-off ends)"
            .into(),
    )
}
