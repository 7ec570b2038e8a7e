//! A local Feishu server speaking the real protocol (docs/protocols/feishu.md): tests point
//! closeloop at it, and `closeloop demo` can run it in place of open.feishu.cn. It issues and
//! checks tenant access tokens, records what it is sent, fails on request (5xx, timeouts, error
//! codes), and pushes events to closeloop's `/callback/feishu` signed and encrypted as Feishu does,
//! re-pushing what is not acknowledged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::platform::feishu::crypto::{
    FeishuCrypto, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

pub const TENANT_TOKEN: &str = "/open-apis/auth/v3/tenant_access_token/internal";
pub const MESSAGES: &str = "/open-apis/im/v1/messages";
pub const AUTHORIZE: &str = "/open-apis/authen/v1/authorize";
pub const OAUTH_TOKEN: &str = "/open-apis/authen/v2/oauth/token";
pub const USER_INFO: &str = "/open-apis/authen/v1/user_info";
pub const JSAPI_TICKET: &str = "/open-apis/jssdk/ticket/get";
/// The emulator's answer to an unknown, used or expired sign-in code. The real code is not
/// documented (docs/protocols/feishu.md#unverified); closeloop treats any non-zero code from the
/// token endpoint as a refused code.
pub const BAD_OAUTH_CODE: i64 = 20003;
/// A tenant access token lives two hours.
const TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// With less than this left, asking again issues a new token (the old one stays valid).
const REISSUE_WINDOW: Duration = Duration::from_secs(30 * 60);
/// The token error codes (oapi-sdk-go `core/constants.go`).
pub const TENANT_TOKEN_INVALID: i64 = 99991663;
pub const APP_TOKEN_INVALID: i64 = 99991664;
pub const ACCESS_TOKEN_INVALID: i64 = 99991671;
/// The emulator's answer to a wrong app id or secret. The real code is not documented
/// (docs/protocols/feishu.md#unverified); closeloop treats this and the other credential codes
/// (`token::BAD_CREDENTIAL_CODES`) as a configuration error and retries any other refusal.
pub const BAD_APP_CREDENTIALS: i64 = 10014;
/// Feishu's re-push schedule after an unacknowledged push, as the newer quote gives it
/// (docs/protocols/feishu.md#retries-timeouts-and-dedupe).
pub const DOCUMENTED_RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(15),
    Duration::from_secs(5 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(6 * 60 * 60),
];

/// A fault the emulator injects instead of answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 500 with a non-JSON body, as a failing gateway answers.
    Http5xx,
    /// Answers only after [`Emulator::set_timeout_delay`] (default 30 s).
    Timeout,
    /// HTTP 200 with this `code`.
    Code(i64),
    /// Frequency control: HTTP 429, code 99991400 and `x-ogw-ratelimit-reset: 2` (seconds).
    RateLimited,
}

/// Where pushed events go: closeloop's `/callback/feishu` with the app's Encrypt Key (none:
/// plaintext, unsigned) and Verification Token, as configured in the developer console.
#[derive(Debug, Clone)]
pub struct EventTarget {
    pub url: String,
    pub encrypt_key: Option<String>,
    pub verification_token: String,
}

/// One push attempt of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub event_id: String,
    /// HTTP status (0: no answer within the timeout).
    pub status: u16,
    /// The answer body, when there was one.
    pub body: Option<Value>,
}

/// A running Feishu emulator on `127.0.0.1`; stops when dropped.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    app_id: String,
    app_secret: String,
    state: Mutex<EmulatorState>,
}

#[derive(Default)]
struct EmulatorState {
    tokens: HashMap<String, IssuedToken>,
    /// The newest token; handed out again until it is within the re-issue window.
    current: Option<String>,
    token_calls: usize,
    messages: Vec<Value>,
    /// `PATCH im/v1/messages/:message_id` bodies accepted, with the `message_id` added.
    message_updates: Vec<Value>,
    injected: super::kit::Injected<Failure>,
    retry_delays: Option<Vec<Duration>>,
    deliveries: Vec<Delivery>,
    /// The address book: departments (`department_id`, `name`) and users (contact v3 shape).
    departments: Vec<Value>,
    users: Vec<Value>,
    next_id: u64,
    /// Who the authorize page signs in (`user_id`, `open_id`, `name`); `None`: an outsider
    /// known only by an `open_id`.
    current_member: Option<Value>,
    /// Unused sign-in codes and whom they name.
    oauth_codes: HashMap<String, Value>,
    /// User access tokens issued for codes.
    user_tokens: HashMap<String, Value>,
    oauth_token_calls: usize,
    jsapi_ticket: Option<String>,
    ticket_calls: usize,
    /// VC meetings (see [`Emulator::set_vc_meetings`]).
    vc_meetings: Vec<Value>,
}

struct IssuedToken {
    issued: Instant,
    lifetime: Duration,
    invalidated: bool,
}

impl IssuedToken {
    fn remaining(&self) -> Duration {
        self.lifetime.saturating_sub(self.issued.elapsed())
    }

    fn valid(&self) -> bool {
        !self.invalidated && !self.remaining().is_zero()
    }
}

impl Emulator {
    /// Starts serving on `127.0.0.1:0` for one self-built app.
    pub async fn start(app_id: impl Into<String>, app_secret: impl Into<String>) -> Self {
        let state = Arc::new(Shared {
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            state: Mutex::new(EmulatorState::default()),
        });
        let router = Router::new()
            .route(TENANT_TOKEN, post(tenant_access_token))
            .route(MESSAGES, post(send_message))
            .route(
                "/open-apis/im/v1/messages/{message_id}",
                axum::routing::patch(patch_message),
            )
            .route(
                "/open-apis/contact/v3/departments/{department_id}/children",
                axum::routing::get(department_children),
            )
            .route(
                "/open-apis/contact/v3/users/find_by_department",
                axum::routing::get(users_by_department),
            )
            .route(
                "/open-apis/contact/v3/users/{user_id}",
                axum::routing::get(user_get),
            )
            .route(AUTHORIZE, axum::routing::get(authorize))
            .route(OAUTH_TOKEN, post(oauth_token))
            .route(USER_INFO, axum::routing::get(user_info))
            .route(JSAPI_TICKET, post(jssdk_ticket))
            .merge(vc_routes())
            .with_state(state.clone());
        let (addr, server) = super::kit::serve(router, "Feishu").await;
        Emulator {
            addr,
            state,
            server,
        }
    }

    /// What to configure as `feishu.api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_calls(&self) -> usize {
        self.state.lock().token_calls
    }

    /// The bodies `im/v1/messages` accepted, oldest first, with the `receive_id_type` added.
    pub fn messages(&self) -> Vec<Value> {
        self.state.lock().messages.clone()
    }

    /// Sets the address book: every department below the root, and the users (each with
    /// `user_id`, `name`, `department_ids`, optional `leader_user_id` and `status`).
    pub fn set_directory(&self, departments: Vec<Value>, users: Vec<Value>) {
        let mut state = self.state.lock();
        state.departments = departments;
        state.users = users;
    }

    /// Whom the authorize page signs in from now on (`user_id`, `open_id`, `name`); `None`:
    /// someone outside the organisation.
    pub fn set_current_member(&self, member: Option<Value>) {
        self.state.lock().current_member = member;
    }

    /// A single-use sign-in code for `member` (as the authorize page would issue).
    pub fn issue_oauth_code(&self, member: Option<Value>) -> String {
        self.state.issue_code(member)
    }

    /// How many code exchanges were asked for.
    pub fn oauth_token_calls(&self) -> usize {
        self.state.lock().oauth_token_calls
    }

    /// The JSAPI ticket last issued, if any.
    pub fn jsapi_ticket(&self) -> Option<String> {
        self.state.lock().jsapi_ticket.clone()
    }

    /// How many JSAPI tickets were asked for.
    pub fn ticket_calls(&self) -> usize {
        self.state.lock().ticket_calls
    }

    /// The message edits accepted, oldest first.
    pub fn message_updates(&self) -> Vec<Value> {
        self.state.lock().message_updates.clone()
    }

    /// Every push attempt so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().deliveries.clone()
    }

    /// Makes every token issued so far answer 99991663, as Feishu may do before expiry; the
    /// next token request issues a new one.
    pub fn invalidate_tokens(&self) {
        let mut state = self.state.lock();
        for token in state.tokens.values_mut() {
            token.invalidated = true;
        }
        state.current = None;
    }

    /// Makes the current token expire in `left`, e.g. to enter the re-issue window.
    pub fn age_current_token(&self, left: Duration) {
        let mut state = self.state.lock();
        if let Some(current) = state.current.clone() {
            if let Some(t) = state.tokens.get_mut(&current) {
                t.lifetime = t.issued.elapsed() + left;
            }
        }
    }

    /// Whether `token` would be accepted now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        self.state
            .lock()
            .tokens
            .get(token)
            .is_some_and(|t| t.valid())
    }

    /// The next `n` requests to `path` fail with `failure`.
    pub fn fail_next(&self, path: &str, n: usize, failure: Failure) {
        self.state.lock().injected.push(path, n, failure);
    }

    /// How long a [`Failure::Timeout`] keeps the client waiting.
    pub fn set_timeout_delay(&self, delay: Duration) {
        self.state.lock().injected.set_timeout(delay);
    }

    /// The waits between re-pushes (default [`DOCUMENTED_RETRY_DELAYS`]); tests shorten them.
    pub fn set_retry_delays(&self, delays: Vec<Duration>) {
        self.state.lock().retry_delays = Some(delays);
    }

    /// A schema 2.0 event of `event_type` with a fresh `event_id`, as Feishu would send it.
    pub fn event(&self, event_type: &str, verification_token: &str, event: Value) -> Value {
        let id = {
            let mut state = self.state.lock();
            state.next_id += 1;
            state.next_id
        };
        json!({
            "schema": "2.0",
            "header": {
                "event_id": format!("{:032x}", u128::from(id) ^ rand::random::<u64>() as u128),
                "event_type": event_type,
                "create_time": chrono::Utc::now().timestamp_millis().to_string(),
                "token": verification_token,
                "app_id": self.state.app_id,
                "tenant_key": "emulated-tenant",
            },
            "event": event,
        })
    }

    /// Pushes `payload` (the decrypted event JSON) to `target` as Feishu does: encrypted and
    /// signed when an Encrypt Key is set; anything but a 200 (or no answer within 3 s) is
    /// pushed again after each of the retry delays. Returns this event's attempts.
    pub async fn push(&self, target: &EventTarget, payload: &Value) -> Vec<Delivery> {
        let event_id = payload["header"]["event_id"]
            .as_str()
            .or_else(|| payload["uuid"].as_str())
            .unwrap_or_default()
            .to_string();
        let delays = self
            .state
            .lock()
            .retry_delays
            .clone()
            .unwrap_or_else(|| DOCUMENTED_RETRY_DELAYS.to_vec());
        let mut attempts = Vec::new();
        for attempt in 0..=delays.len() {
            if attempt > 0 {
                tokio::time::sleep(delays[attempt - 1]).await;
            }
            let (status, body) = post_event(target, payload).await;
            let delivery = Delivery {
                event_id: event_id.clone(),
                status,
                body,
            };
            self.state.lock().deliveries.push(delivery.clone());
            attempts.push(delivery);
            if status == 200 {
                break;
            }
        }
        attempts
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The request closeloop receives for `payload`: body and headers, signed at `timestamp`.
pub fn signed_request(
    target: &EventTarget,
    payload: &Value,
    timestamp: &str,
    nonce: &str,
) -> (Vec<(&'static str, String)>, String) {
    let plain = payload.to_string();
    match target.encrypt_key.as_deref().map(FeishuCrypto::new) {
        Some(Ok(crypto)) => {
            let body = json!({ "encrypt": crypto.encrypt_random(&plain) }).to_string();
            let signature = crypto.signature(timestamp, nonce, body.as_bytes());
            let headers = vec![
                (TIMESTAMP_HEADER, timestamp.to_string()),
                (NONCE_HEADER, nonce.to_string()),
                (SIGNATURE_HEADER, signature),
            ];
            (headers, body)
        }
        _ => (Vec::new(), plain),
    }
}

async fn post_event(target: &EventTarget, payload: &Value) -> (u16, Option<Value>) {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = crate::platform::crypto::random_nonce();
    let (headers, body) = signed_request(target, payload, &timestamp, &nonce);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("a plain HTTP client builds");
    let mut request = client
        .post(&target.url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.ok())
        }
        Err(_) => (0, None),
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A single-use sign-in code for `member`; `None`: an outsider with only an `open_id`.
    fn issue_code(&self, member: Option<Value>) -> String {
        let mut state = self.lock();
        state.next_id += 1;
        let n = state.next_id;
        let code = format!("code-emulated-{n}-{}", uuid::Uuid::new_v4().simple());
        let member = member
            .unwrap_or_else(|| json!({"open_id": format!("ou_outsider_{n}"), "name": "外部人员"}));
        state.oauth_codes.insert(code.clone(), member);
        code
    }

    /// Takes the next injected failure for `path` and acts it out; `None`: answer normally.
    async fn injected(&self, path: &str) -> Option<Response> {
        let (failure, delay) = self.lock().injected.pop(path)?;
        Some(match failure {
            Failure::Http5xx => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
            }
            Failure::Timeout => {
                tokio::time::sleep(delay).await;
                code(-1, "system busy")
            }
            Failure::Code(c) => code(c, msg_for(c)),
            Failure::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                [("x-ogw-ratelimit-reset", "2")],
                Json(json!({"code": 99991400, "msg": "request trigger frequency limit"})),
            )
                .into_response(),
        })
    }

    /// The bearer token of the request if it is live; otherwise Feishu's token error code.
    fn check_bearer(&self, headers: &HeaderMap) -> Result<(), i64> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty())
            .ok_or(ACCESS_TOKEN_INVALID)?;
        match self.lock().tokens.get(token) {
            Some(t) if t.valid() => Ok(()),
            _ => Err(TENANT_TOKEN_INVALID),
        }
    }
}

fn code(code: i64, msg: &str) -> Response {
    Json(json!({ "code": code, "msg": msg })).into_response()
}

fn msg_for(code: i64) -> &'static str {
    match code {
        TENANT_TOKEN_INVALID => {
            "Invalid access token for authorization. Please make a request with token attached."
        }
        APP_TOKEN_INVALID => "app access token invalid",
        ACCESS_TOKEN_INVALID => "access token invalid",
        BAD_APP_CREDENTIALS => "app secret invalid",
        -1 => "system busy",
        _ => "emulated error",
    }
}

async fn tenant_access_token(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(failure) = shared.injected(TENANT_TOKEN).await {
        return failure;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = shared.lock();
    state.token_calls += 1;
    if req["app_id"].as_str() != Some(shared.app_id.as_str())
        || req["app_secret"].as_str() != Some(shared.app_secret.as_str())
    {
        return code(BAD_APP_CREDENTIALS, msg_for(BAD_APP_CREDENTIALS));
    }
    let live = state
        .current
        .as_ref()
        .and_then(|c| state.tokens.get(c).map(|t| (c.clone(), t)))
        .filter(|(_, t)| t.valid() && t.remaining() >= REISSUE_WINDOW)
        .map(|(c, t)| (c, t.remaining()));
    let (token, remaining) = match live {
        Some(live) => live,
        None => {
            // A new token; one issued before stays valid until its own expiry.
            let token = format!("t-emulated-{}", uuid::Uuid::new_v4().simple());
            state.tokens.insert(
                token.clone(),
                IssuedToken {
                    issued: Instant::now(),
                    lifetime: TOKEN_LIFETIME,
                    invalidated: false,
                },
            );
            state.current = Some(token.clone());
            (token, TOKEN_LIFETIME)
        }
    };
    Json(json!({
        "code": 0,
        "msg": "ok",
        "tenant_access_token": token,
        "expire": remaining.as_secs(),
    }))
    .into_response()
}

async fn send_message(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(failure) = shared.injected(MESSAGES).await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let Ok(mut message) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON").into_response();
    };
    let id_type = query.get("receive_id_type").cloned().unwrap_or_default();
    if !["open_id", "user_id", "union_id", "email", "chat_id"].contains(&id_type.as_str())
        || message["receive_id"].as_str().is_none_or(str::is_empty)
        || message["msg_type"].as_str().is_none()
        || message["content"].as_str().is_none()
    {
        return code(230001, "invalid parameter");
    }
    if message["msg_type"] == "interactive" {
        if let Err(problem) = check_card(message["content"].as_str().unwrap_or_default()) {
            return code(230099, &problem);
        }
    }
    message["receive_id_type"] = Value::String(id_type);
    let message_id = {
        let mut state = shared.lock();
        state.next_id += 1;
        let id = format!("om_emulated_{}", state.next_id);
        message["message_id"] = Value::String(id.clone());
        state.messages.push(message);
        id
    };
    Json(json!({"code": 0, "msg": "success", "data": {"message_id": message_id}})).into_response()
}

/// What Feishu's card documentation marks as required in a message card
/// (`docs/protocols/feishu.md`): the content is a card object whose header has a title, and
/// an `action` module holds at least one interactive component, each button with its text.
/// Feishu answers a card it cannot render with 230099.
fn check_card(content: &str) -> Result<(), String> {
    let card: Value =
        serde_json::from_str(content).map_err(|_| "card content is not JSON".to_string())?;
    if !card.is_object() {
        return Err("card content is not a JSON object".into());
    }
    if card["header"].is_object()
        && card["header"]["title"]["content"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        return Err("card header without a title".into());
    }
    for element in card["elements"].as_array().into_iter().flatten() {
        if element["tag"] != "action" {
            continue;
        }
        let actions = element["actions"].as_array().cloned().unwrap_or_default();
        if actions.is_empty() {
            return Err("action module without actions".into());
        }
        let untitled = |a: &Value| {
            a["tag"] == "button" && a["text"]["content"].as_str().is_none_or(str::is_empty)
        };
        if actions.iter().any(untitled) {
            return Err("button without text".into());
        }
    }
    Ok(())
}

/// Whether a card's JSON (as the `content` string) declares `config.update_multi`.
fn update_multi(content: Option<&str>) -> bool {
    content
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .is_some_and(|card| card["config"]["update_multi"] == true)
}

async fn patch_message(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(message_id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = format!("{MESSAGES}/{{message_id}}");
    if let Some(failure) = shared.injected(&path).await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let Ok(mut update) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON").into_response();
    };
    let mut state = shared.lock();
    let Some(original) = state
        .messages
        .iter()
        .find(|m| m["message_id"] == message_id.as_str())
    else {
        return code(230001, "message not found");
    };
    // Both the sent card and its replacement must allow shared updates.
    if original["msg_type"] != "interactive"
        || !update_multi(original["content"].as_str())
        || !update_multi(update["content"].as_str())
    {
        return code(230099, "card is not update_multi");
    }
    update["message_id"] = Value::String(message_id);
    state.message_updates.push(update);
    Json(json!({"code": 0, "msg": "success", "data": {}})).into_response()
}

type Params = axum::extract::Query<HashMap<String, String>>;

/// One page of `items` by the numeric `page_token` (an offset) and `page_size` (≤ 50).
fn page(items: Vec<Value>, query: &HashMap<String, String>) -> Response {
    let size: usize = query
        .get("page_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
        .clamp(1, 50);
    let start: usize = query
        .get("page_token")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let end = (start + size).min(items.len());
    let has_more = end < items.len();
    let mut data = json!({
        "items": items.get(start.min(end)..end).unwrap_or_default(),
        "has_more": has_more,
    });
    if has_more {
        data["page_token"] = Value::String(end.to_string());
    }
    Json(json!({"code": 0, "msg": "success", "data": data})).into_response()
}

async fn department_children(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(_department_id): axum::extract::Path<String>,
    axum::extract::Query(query): Params,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = shared.injected("/open-apis/contact/v3/departments").await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let departments = shared.lock().departments.clone();
    page(departments, &query)
}

async fn users_by_department(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): Params,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = shared.injected("/open-apis/contact/v3/users").await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let department = query.get("department_id").cloned().unwrap_or_default();
    let users: Vec<Value> = shared
        .lock()
        .users
        .iter()
        .filter(|u| {
            u["department_ids"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d == department.as_str()))
        })
        .cloned()
        .collect();
    page(users, &query)
}

async fn user_get(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(user_id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = shared.injected("/open-apis/contact/v3/users").await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let user = shared
        .lock()
        .users
        .iter()
        .find(|u| u["user_id"] == user_id.as_str())
        .cloned();
    match user {
        Some(user) => {
            Json(json!({"code": 0, "msg": "success", "data": {"user": user}})).into_response()
        }
        None => code(41050, "no such user (emulated code)"),
    }
}

/// `GET authen/v1/authorize`: signs in the current member at once and sends the browser
/// back to `redirect_uri` with a fresh code and the `state` it was given.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): Params,
) -> Response {
    if let Some(failure) = shared.injected(AUTHORIZE).await {
        return failure;
    }
    let redirect_uri = query.get("redirect_uri").cloned().unwrap_or_default();
    if query.get("client_id") != Some(&shared.app_id)
        || query.get("response_type").map(String::as_str) != Some("code")
        || !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://"))
    {
        return (StatusCode::BAD_REQUEST, "invalid authorize request").into_response();
    }
    let member = shared.lock().current_member.clone();
    let emu_code = shared.issue_code(member);
    let mut params = vec![("code", emu_code.as_str())];
    if let Some(state) = query.get("state") {
        params.push(("state", state.as_str()));
    }
    match reqwest::Url::parse_with_params(&redirect_uri, &params) {
        Ok(url) => (StatusCode::FOUND, [("location", url.to_string())]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "invalid redirect_uri").into_response(),
    }
}

/// `POST authen/v2/oauth/token`: a code (single use) → a user access token.
async fn oauth_token(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    if let Some(failure) = shared.injected(OAUTH_TOKEN).await {
        return failure;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = shared.lock();
    state.oauth_token_calls += 1;
    if req["client_id"].as_str() != Some(shared.app_id.as_str())
        || req["client_secret"].as_str() != Some(shared.app_secret.as_str())
    {
        return code(BAD_APP_CREDENTIALS, msg_for(BAD_APP_CREDENTIALS));
    }
    let member = match (req["grant_type"].as_str(), req["code"].as_str()) {
        (Some("authorization_code"), Some(c)) => state.oauth_codes.remove(c),
        _ => None,
    };
    let Some(member) = member else {
        return Json(json!({
            "code": BAD_OAUTH_CODE,
            "error": "invalid_grant",
            "error_description": "the code is invalid, used or expired",
        }))
        .into_response();
    };
    let token = format!("u-emulated-{}", uuid::Uuid::new_v4().simple());
    state.user_tokens.insert(token.clone(), member);
    Json(json!({
        "code": 0,
        "access_token": token,
        "expires_in": 7200,
        "token_type": "Bearer",
        "scope": "",
    }))
    .into_response()
}

/// `GET authen/v1/user_info` with a user access token.
async fn user_info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(failure) = shared.injected(USER_INFO).await {
        return failure;
    }
    let member = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| shared.lock().user_tokens.get(t).cloned());
    match member {
        Some(member) => Json(json!({"code": 0, "msg": "success", "data": member})).into_response(),
        None => code(ACCESS_TOKEN_INVALID, msg_for(ACCESS_TOKEN_INVALID)),
    }
}

/// `POST jssdk/ticket/get` with the tenant access token.
async fn jssdk_ticket(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(failure) = shared.injected(JSAPI_TICKET).await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let ticket = format!("jsapi-emulated-{}", uuid::Uuid::new_v4().simple());
    let mut state = shared.lock();
    state.ticket_calls += 1;
    state.jsapi_ticket = Some(ticket.clone());
    Json(json!({
        "code": 0,
        "msg": "ok",
        "data": {"ticket": ticket, "expire_in": 7200},
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// VC meeting data (meeting records, issue 7): `vc/v1/meeting_list` and
// `vc/v1/participant_list`. Failures injected with `fail_next` apply under these paths.
// ---------------------------------------------------------------------------------------

pub const VC_MEETING_LIST: &str = "/open-apis/vc/v1/meeting_list";
pub const VC_PARTICIPANT_LIST: &str = "/open-apis/vc/v1/participant_list";
/// Feishu's "param error" and "cannot find meeting according to the params you provide".
pub const VC_PARAM_ERROR: i64 = 121003;
pub const VC_NO_MEETING: i64 = 126009;

/// `GET vc/v1/meetings/:meeting_id` (meeting details), by the meeting's instance id.
pub const VC_MEETING: &str = "/open-apis/vc/v1/meetings";
/// The emulator's answer for a meeting it does not hold (the real code is unconfirmed).
pub const VC_MEETING_NOT_FOUND: i64 = 121004;

fn vc_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            &format!("{VC_MEETING}/{{meeting_id}}"),
            axum::routing::get(vc_meeting),
        )
        .route(VC_MEETING_LIST, axum::routing::get(vc_meeting_list))
        .route(VC_PARTICIPANT_LIST, axum::routing::get(vc_participant_list))
}

impl Emulator {
    /// Sets the VC meetings: `meeting_list` entries (`meeting_id` the 9-digit number,
    /// `meeting_topic`, `meeting_start_time`/`meeting_end_time` as Feishu formats them,
    /// `meeting_duration`, `meeting_subtype`, `meeting_instance_id`, …) with their
    /// `participants` (`participant_list` entries: `user_id`, `participant_name`,
    /// `join_time`, `leave_time`, `time_in_meeting`, `is_external`). All count as ended.
    pub fn set_vc_meetings(&self, meetings: Vec<Value>) {
        self.state.lock().vc_meetings = meetings;
    }
}

fn vc_error(status: StatusCode, c: i64, msg: &str) -> Response {
    (status, Json(json!({ "code": c, "msg": msg }))).into_response()
}

/// Unix seconds from a query parameter.
fn vc_seconds(query: &HashMap<String, String>, key: &str) -> Option<i64> {
    query.get(key)?.parse().ok()
}

/// One page by the numeric `page_token` (an offset) and `page_size` (20–100).
fn vc_page(items: &[Value], query: &HashMap<String, String>, key: &str) -> Response {
    let size: usize = query
        .get("page_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .clamp(20, 100);
    let start: usize = query
        .get("page_token")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
        .min(items.len());
    let end = (start + size).min(items.len());
    let mut data = json!({ key: items[start..end].to_vec(), "has_more": end < items.len() });
    if end < items.len() {
        data["page_token"] = Value::String(end.to_string());
    }
    Json(json!({"code": 0, "msg": "success", "data": data})).into_response()
}

fn vc_start_secs(meeting: &Value) -> Option<i64> {
    crate::platform::feishu::vc::parse_time(&meeting["meeting_start_time"]).map(|ms| ms / 1000)
}

/// `GET vc/v1/meetings/:meeting_id?with_participants=true`: one meeting loaded with
/// `set_vc_meetings` (found by its `meeting_instance_id`), in the meeting-details shape:
/// unix-second strings, participants with `id`, `first_join_time`, `in_meeting_duration`.
async fn vc_meeting(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(meeting_id): axum::extract::Path<String>,
    axum::extract::Query(query): Params,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = shared.injected(VC_MEETING).await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let Some(m) = shared
        .lock()
        .vc_meetings
        .iter()
        .find(|m| m["meeting_instance_id"] == meeting_id.as_str())
        .cloned()
    else {
        return vc_error(
            StatusCode::BAD_REQUEST,
            VC_MEETING_NOT_FOUND,
            "meeting not found",
        );
    };
    let secs = |v: &Value| {
        crate::platform::feishu::vc::parse_time(v)
            .map(|ms| (ms / 1000).to_string())
            .unwrap_or_default()
    };
    let mut meeting = json!({
        "id": meeting_id, "topic": m["meeting_topic"], "meeting_no": m["meeting_id"],
        "start_time": secs(&m["meeting_start_time"]), "end_time": secs(&m["meeting_end_time"]),
        "status": 3,
    });
    if query.get("with_participants").is_some_and(|w| w == "true") {
        let people: Vec<Value> = m["participants"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                json!({"id": p["user_id"], "first_join_time": secs(&p["join_time"]),
                       "final_leave_time": secs(&p["leave_time"]),
                       "in_meeting_duration": crate::platform::feishu::vc::parse_duration(&p["time_in_meeting"])
                           .unwrap_or(0).to_string(),
                       "is_external": p["is_external"], "user_type": 1})
            })
            .collect();
        meeting["participants"] = Value::Array(people);
    }
    Json(json!({"code": 0, "msg": "success", "data": {"meeting": meeting}})).into_response()
}

/// `GET vc/v1/meeting_list?start_time&end_time&page_size&page_token…`: the ended meetings
/// that started in the window.
async fn vc_meeting_list(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): Params,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = shared.injected(VC_MEETING_LIST).await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let (Some(from), Some(to)) = (
        vc_seconds(&query, "start_time"),
        vc_seconds(&query, "end_time"),
    ) else {
        return vc_error(StatusCode::BAD_REQUEST, VC_PARAM_ERROR, "param error");
    };
    if query.get("meeting_status").is_some_and(|s| s != "2") {
        return vc_page(&[], &query, "meeting_list");
    }
    let meetings: Vec<Value> = shared
        .lock()
        .vc_meetings
        .iter()
        .filter(|m| vc_start_secs(m).is_some_and(|s| s >= from && s <= to))
        .map(|m| {
            let mut m = m.clone();
            if let Some(o) = m.as_object_mut() {
                o.remove("participants");
            }
            m
        })
        .collect();
    vc_page(&meetings, &query, "meeting_list")
}

/// `GET vc/v1/participant_list?meeting_no&meeting_start_time&meeting_end_time…`.
async fn vc_participant_list(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): Params,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = shared.injected(VC_PARTICIPANT_LIST).await {
        return failure;
    }
    if let Err(c) = shared.check_bearer(&headers) {
        return code(c, msg_for(c));
    }
    let (Some(number), Some(from), Some(to)) = (
        query.get("meeting_no"),
        vc_seconds(&query, "meeting_start_time"),
        vc_seconds(&query, "meeting_end_time"),
    ) else {
        return vc_error(StatusCode::BAD_REQUEST, VC_PARAM_ERROR, "param error");
    };
    let meeting = shared
        .lock()
        .vc_meetings
        .iter()
        .find(|m| {
            m["meeting_id"].as_str() == Some(number.as_str())
                && vc_start_secs(m).is_some_and(|s| s >= from && s <= to)
        })
        .cloned();
    let Some(meeting) = meeting else {
        return vc_error(
            StatusCode::BAD_REQUEST,
            VC_NO_MEETING,
            "cannot find meeting according to the params you provide",
        );
    };
    let participants = meeting["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    vc_page(&participants, &query, "participants")
}

#[cfg(test)]
mod tests {

    #[test]
    fn cards_missing_what_feishu_requires_are_refused() {
        let button = json!({"tag": "button", "text": {"tag": "plain_text", "content": "接受"},
                            "value": {"key": "accept:c1"}});
        let card = |elements: Value| {
            json!({"header": {"title": {"tag": "plain_text", "content": "提醒"}},
                   "elements": elements})
            .to_string()
        };
        assert!(check_card(&card(json!([]))).is_ok());
        assert!(check_card(&card(json!([{"tag": "action", "actions": [button]}]))).is_ok());
        assert!(check_card(&card(json!([{"tag": "action", "actions": []}]))).is_err());
        let blank = json!({"tag": "button", "text": {"tag": "plain_text", "content": ""}});
        assert!(check_card(&card(json!([{"tag": "action", "actions": [blank]}]))).is_err());
        assert!(check_card(&json!({"header": {"title": {}}, "elements": []}).to_string()).is_err());
        assert!(check_card("[]").is_err());
        assert!(check_card("not json").is_err());
    }

    use super::*;

    async fn token(client: &reqwest::Client, emu: &Emulator, secret: &str) -> Value {
        client
            .post(format!("{}{TENANT_TOKEN}", emu.base_url()))
            .json(&json!({"app_id": "cli_test", "app_secret": secret}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn tokens_follow_the_reissue_rules() {
        let emu = Emulator::start("cli_test", "secret").await;
        let client = reqwest::Client::new();
        let first = token(&client, &emu, "secret").await;
        assert_eq!(first["code"], 0);
        assert_eq!(first["expire"], 7200);
        let t1 = first["tenant_access_token"].as_str().unwrap().to_string();
        // Plenty of time left: the same token again.
        let again = token(&client, &emu, "secret").await;
        assert_eq!(again["tenant_access_token"], t1.as_str());
        // Inside the last 30 minutes: a new token, and the old one still works.
        emu.age_current_token(Duration::from_secs(600));
        let second = token(&client, &emu, "secret").await;
        let t2 = second["tenant_access_token"].as_str().unwrap().to_string();
        assert_ne!(t1, t2);
        assert!(emu.token_is_valid(&t1) && emu.token_is_valid(&t2));
        emu.invalidate_tokens();
        assert!(!emu.token_is_valid(&t2));
        let bad = token(&client, &emu, "wrong").await;
        assert_eq!(bad["code"], BAD_APP_CREDENTIALS);
        assert!(bad.get("tenant_access_token").is_none());
        assert_eq!(emu.token_calls(), 4);

        emu.fail_next(TENANT_TOKEN, 1, Failure::Http5xx);
        let res = client
            .post(format!("{}{TENANT_TOKEN}", emu.base_url()))
            .json(&json!({"app_id": "cli_test", "app_secret": "secret"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
    }

    #[tokio::test]
    async fn messages_need_a_live_token() {
        let emu = Emulator::start("cli_test", "secret").await;
        let client = reqwest::Client::new();
        let t = token(&client, &emu, "secret").await["tenant_access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let send = |token: String| {
            client
                .post(format!(
                    "{}{MESSAGES}?receive_id_type=user_id",
                    emu.base_url()
                ))
                .bearer_auth(token)
                .json(&json!({"receive_id": "u1", "msg_type": "interactive", "content": "{}"}))
                .send()
        };
        let ok: Value = send(t.clone()).await.unwrap().json().await.unwrap();
        assert_eq!(ok["code"], 0);
        emu.invalidate_tokens();
        let stale: Value = send(t).await.unwrap().json().await.unwrap();
        assert_eq!(stale["code"], TENANT_TOKEN_INVALID);
        assert_eq!(emu.messages().len(), 1);
        assert_eq!(emu.messages()[0]["receive_id_type"], "user_id");
    }
}
