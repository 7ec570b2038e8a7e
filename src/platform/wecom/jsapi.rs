//! The sidebar's WeCom side (docs/protocols/wecom.md#sidebar-js-sdk-and-oauth): the two JS-SDK
//! tickets (the enterprise one for `wx.config`, the app one for `wx.agentConfig`), cached until
//! shortly before they expire and fetched one at a time, and OAuth `code` → member userid.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::api::WecomApi;
use super::crypto::jsapi_signature;
use super::token::SecretKind;
use crate::clock::SharedClock;
use crate::jobs::JobError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ticket {
    /// `get_jsapi_ticket`, for `wx.config`.
    Corp,
    /// `ticket/get?type=agent_config`, for `wx.agentConfig`.
    Agent,
}

/// Refresh this long before a ticket expires.
const MARGIN_MS: i64 = 5 * 60 * 1000;

pub struct Tickets {
    api: WecomApi,
    clock: SharedClock,
    /// Held across a fetch: one `get_jsapi_ticket` at a time per process.
    cache: Mutex<HashMap<Ticket, (String, i64)>>,
}

impl Tickets {
    pub fn new(api: WecomApi, clock: SharedClock) -> Self {
        Tickets {
            api,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, which: Ticket) -> Result<String, JobError> {
        let mut cache = self.cache.lock().await;
        let now = self.clock.now_ms();
        if let Some((t, expires)) = cache.get(&which) {
            if *expires - MARGIN_MS > now {
                return Ok(t.clone());
            }
        }
        let response = match which {
            Ticket::Corp => {
                self.api
                    .get(SecretKind::App, "/cgi-bin/get_jsapi_ticket", &[])
                    .await?
            }
            Ticket::Agent => {
                self.api
                    .get(
                        SecretKind::App,
                        "/cgi-bin/ticket/get",
                        &[("type", "agent_config")],
                    )
                    .await?
            }
        };
        let ticket = response["ticket"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| JobError::Retry("WeCom returned no ticket".into()))?
            .to_string();
        let expires = now + response["expires_in"].as_i64().unwrap_or(7200) * 1000;
        cache.insert(which, (ticket.clone(), expires));
        Ok(ticket)
    }
}

/// What the sidebar page passes to `wx.config` and `wx.agentConfig`.
#[derive(Debug, Clone, Serialize)]
pub struct JsConfig {
    pub corp_id: String,
    pub agent_id: String,
    pub timestamp: String,
    pub nonce_str: String,
    /// For `wx.config` (enterprise ticket).
    pub signature: String,
    /// For `wx.agentConfig` (app ticket).
    pub agent_signature: String,
}

pub async fn js_config(
    tickets: &Tickets,
    corp_id: &str,
    agent_id: &str,
    now_s: i64,
    url: &str,
) -> Result<JsConfig, JobError> {
    // The signed URL is the page's, without its fragment.
    let url = url.split('#').next().unwrap_or_default();
    let corp = tickets.get(Ticket::Corp).await?;
    let agent = tickets.get(Ticket::Agent).await?;
    let nonce: String = crate::platform::crypto::random_nonce();
    let ts = now_s.to_string();
    Ok(JsConfig {
        corp_id: corp_id.to_string(),
        agent_id: agent_id.to_string(),
        signature: jsapi_signature(&corp, &nonce, &ts, url),
        agent_signature: jsapi_signature(&agent, &nonce, &ts, url),
        timestamp: ts,
        nonce_str: nonce,
    })
}

/// `auth/getuserinfo`: the member's userid, or `None` for someone outside the corp.
pub async fn userid_for_code(api: &WecomApi, code: &str) -> Result<Option<String>, JobError> {
    let r: Value = api
        .get(
            SecretKind::App,
            "/cgi-bin/auth/getuserinfo",
            &[("code", code)],
        )
        .await?;
    Ok(r["userid"]
        .as_str()
        .or_else(|| r["UserId"].as_str())
        .filter(|u| !u.is_empty())
        .map(str::to_string))
}

/// The OAuth2 authorize address the browser is sent to.
pub fn authorize_url(
    oauth_base: &str,
    corp_id: &str,
    agent_id: &str,
    redirect_uri: &str,
    state: &str,
) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "{}/connect/oauth2/authorize?appid={}&redirect_uri={}&response_type=code&scope=snsapi_base&state={}&agentid={}#wechat_redirect",
        oauth_base.trim_end_matches('/'),
        enc(corp_id),
        enc(redirect_uri),
        enc(state),
        enc(agent_id)
    )
}

/// What the browser-facing endpoints need of WeCom.
pub struct WecomWeb {
    pub api: WecomApi,
    pub tickets: Tickets,
    pub corp_id: String,
    pub agent_id: String,
    pub oauth_base: String,
}
