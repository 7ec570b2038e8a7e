//! Calls to the WeCom server API with an access token attached, and WeCom's errcodes translated
//! into what the job runner should do next (docs/protocols/wecom.md#access-tokens-and-limits).
//!
//! | errcode / failure            | outcome                                              |
//! |------------------------------|------------------------------------------------------|
//! | 0                            | `Ok(body)`                                           |
//! | 40014, 42001, 41001 (token)  | invalidate, fetch a new token, retry once at once; then `Retry` |
//! | 45009, 45033 (rate limits)   | `RateLimited`, retry after 60 s                      |
//! | 40001 (wrong secret)         | `GiveUp`: a configuration error                      |
//! | -1 (busy), 5xx, timeouts     | `Retry`                                              |
//! | anything else                | `GiveUp` with errcode and errmsg                     |

use std::time::Duration;

use serde_json::Value;

use super::token::{describe_transport, redact, AccessToken, SecretKind, TokenCache};
use crate::clock::SharedClock;
use crate::config::WecomConfig;
use crate::jobs::JobError;

/// How long to wait after WeCom reports a rate limit; its limits are per minute.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The WeCom server API of one corp.
#[derive(Debug, Clone)]
pub struct WecomApi {
    tokens: TokenCache,
    client: reqwest::Client,
    api_base: String,
}

/// What one attempt came to, before deciding whether to retry it with a new token.
enum Attempt {
    Done(Result<Value, JobError>),
    TokenRefused(AccessToken, JobError),
}

impl WecomApi {
    pub fn new(tokens: TokenCache, client: reqwest::Client, api_base: impl Into<String>) -> Self {
        WecomApi {
            tokens,
            client,
            api_base: api_base.into().trim_end_matches('/').to_string(),
        }
    }

    pub fn from_config(cfg: &WecomConfig, client: reqwest::Client, clock: SharedClock) -> Self {
        let tokens = TokenCache::from_config(cfg, client.clone(), clock);
        WecomApi::new(tokens, client, &cfg.api_base)
    }

    /// Shares access tokens with other replicas through the database (PostgreSQL).
    pub fn shared_through(mut self, db: crate::db::Db, cipher: crate::security::Cipher) -> Self {
        self.tokens = self.tokens.shared_through(db, cipher);
        self
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// POSTs `body` as JSON to `path` (e.g. `/cgi-bin/message/send`) with a token for
    /// `kind`, and returns the response body when its errcode is 0.
    pub async fn call_json(
        &self,
        kind: SecretKind,
        path: &str,
        body: &Value,
    ) -> Result<Value, JobError> {
        self.call(kind, path, &[], Some(body)).await
    }

    /// GETs `path` with `query` (plus the token), with the same error handling.
    pub async fn get(
        &self,
        kind: SecretKind,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, JobError> {
        self.call(kind, path, query, None).await
    }

    async fn call(
        &self,
        kind: SecretKind,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, JobError> {
        let first = self.attempt(kind, path, query, body).await?;
        match first {
            Attempt::Done(result) => result,
            Attempt::TokenRefused(token, _) => {
                self.tokens.invalidate(kind, &token);
                match self.attempt(kind, path, query, body).await? {
                    Attempt::Done(result) => result,
                    Attempt::TokenRefused(token, error) => {
                        self.tokens.invalidate(kind, &token);
                        Err(error)
                    }
                }
            }
        }
    }

    async fn attempt(
        &self,
        kind: SecretKind,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Attempt, JobError> {
        let token = self.tokens.get(kind).await?;
        let url = format!("{}{path}", self.api_base);
        let request = match body {
            Some(b) => self.client.post(url).json(b),
            None => self.client.get(url),
        };
        let response = request
            .query(&[("access_token", token.expose())])
            .query(query)
            .send()
            .await
            .map_err(|e| JobError::Retry(format!("WeCom {path}: {}", describe_transport(&e))))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(JobError::Retry(format!("WeCom {path}: HTTP {status}")));
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(JobError::RateLimited {
                retry_after: Some(RATE_LIMIT_WAIT),
                message: format!("WeCom {path}: HTTP {status}"),
            });
        }
        if !status.is_success() {
            return Err(JobError::GiveUp(format!("WeCom {path}: HTTP {status}")));
        }
        let value: Value = response.json().await.map_err(|e| {
            JobError::Retry(format!(
                "WeCom {path}: unreadable response: {}",
                describe_transport(&e)
            ))
        })?;
        let errcode = value.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        let errmsg = redact(
            value.get("errmsg").and_then(Value::as_str).unwrap_or(""),
            token.expose(),
        );
        let described = format!("WeCom {path}: errcode {errcode}: {errmsg}");
        Ok(match errcode {
            0 => Attempt::Done(Ok(value)),
            40014 | 41001 | 42001 => Attempt::TokenRefused(token, JobError::Retry(described)),
            45009 | 45033 => Attempt::Done(Err(JobError::RateLimited {
                retry_after: Some(RATE_LIMIT_WAIT),
                message: described,
            })),
            40001 => {
                tracing::error!(
                    platform = "wecom",
                    kind = kind.as_str(),
                    config_key = kind.config_key(),
                    path,
                    "WeCom rejected the credentials behind an access token; fix the configuration",
                );
                Attempt::Done(Err(JobError::GiveUp(format!(
                    "{described} (check {})",
                    kind.config_key()
                ))))
            }
            -1 => Attempt::Done(Err(JobError::Retry(described))),
            _ => Attempt::Done(Err(JobError::GiveUp(described))),
        })
    }
}
