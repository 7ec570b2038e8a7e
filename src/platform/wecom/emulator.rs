//! A local WeCom server speaking the real API (PROTOCOLS §1.7): tests point closeloop at it,
//! and `closeloop demo` runs it in place of qyapi.weixin.qq.com. It issues and checks access
//! tokens, records what it is sent, and fails on request (5xx, timeouts, errcodes).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const GETTOKEN: &str = "/cgi-bin/gettoken";
const MESSAGE_SEND: &str = "/cgi-bin/message/send";
const DIAL_RECORD: &str = "/cgi-bin/dial/get_dial_record";
const UPDATE_CARD: &str = "/cgi-bin/message/update_template_card";
const EXTERNAL_CONTACT: &str = "/cgi-bin/externalcontact/get";
const DEPARTMENT_LIST: &str = "/cgi-bin/department/list";
const JSAPI_TICKET: &str = "/cgi-bin/get_jsapi_ticket";
const AGENT_TICKET: &str = "/cgi-bin/ticket/get";
const GETUSERINFO: &str = "/cgi-bin/auth/getuserinfo";
const USER_LIST: &str = "/cgi-bin/user/list";
const USER_GET: &str = "/cgi-bin/user/get";
const TOKEN_LIFETIME: Duration = Duration::from_secs(7200);

/// A fault the emulator injects instead of answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 500 with a non-JSON body, as a failing gateway answers.
    Http5xx,
    /// Answers only after [`Emulator::set_timeout_delay`] (default 30 s): longer than any
    /// sensible client timeout.
    Timeout,
    /// HTTP 200 with this errcode.
    Errcode(i64),
}

/// A running WeCom emulator on `127.0.0.1`; stops when dropped.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    corp_id: String,
    /// (secret, which) where which is `app`, `contact` or `dial`.
    secrets: Vec<(String, &'static str)>,
    state: Mutex<EmulatorState>,
}

#[derive(Default)]
struct EmulatorState {
    tokens: HashMap<String, IssuedToken>,
    /// The live token per secret: WeCom hands out the same token until it expires.
    current: HashMap<&'static str, String>,
    gettoken_calls: usize,
    messages: Vec<Value>,
    failures: HashMap<String, VecDeque<Failure>>,
    timeout_delay: Option<Duration>,
    next_msgid: u64,
    /// 公费电话 records served by `dial/get_dial_record`.
    dial_records: Vec<Value>,
    dial_requests: Vec<Value>,
    /// One-shot card codes issued and not yet used.
    response_codes: std::collections::HashSet<String>,
    card_updates: Vec<Value>,
    /// `externalcontact/get` answers, by external userid.
    external_contacts: HashMap<String, Value>,
    departments: Vec<Value>,
    users: Vec<Value>,
    /// OAuth codes not yet exchanged → userid (None: a non-member).
    oauth_codes: HashMap<String, Option<String>>,
    ticket_calls: usize,
}

struct IssuedToken {
    issued: Instant,
    invalidated: bool,
}

impl IssuedToken {
    fn expired(&self) -> bool {
        self.invalidated || self.issued.elapsed() >= TOKEN_LIFETIME
    }
}

impl Emulator {
    /// Starts serving on `127.0.0.1:0`. `secrets` are the secrets WeCom would accept for
    /// `corp_id`, each with the kind of app it belongs to (`app`, `contact` or `dial`).
    pub async fn start(corp_id: impl Into<String>, secrets: Vec<(String, &'static str)>) -> Self {
        let state = Arc::new(Shared {
            corp_id: corp_id.into(),
            secrets,
            state: Mutex::new(EmulatorState::default()),
        });
        let router = Router::new()
            .route(GETTOKEN, get(gettoken))
            .route(MESSAGE_SEND, post(message_send))
            .route(DIAL_RECORD, post(dial_record))
            .route(UPDATE_CARD, post(update_template_card))
            .route(EXTERNAL_CONTACT, get(external_contact))
            .route(DEPARTMENT_LIST, get(department_list))
            .route(JSAPI_TICKET, get(jsapi_ticket))
            .route(AGENT_TICKET, get(agent_ticket))
            .route(GETUSERINFO, get(getuserinfo))
            .route(USER_LIST, get(user_list))
            .route(USER_GET, get(user_get))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the WeCom emulator binds a local port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "WeCom emulator stopped");
            }
        });
        Emulator {
            addr,
            state,
            server,
        }
    }

    /// What to configure as `wecom.api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn gettoken_calls(&self) -> usize {
        self.state.lock().gettoken_calls
    }

    /// The JSON bodies `message/send` accepted, oldest first.
    pub fn received_messages(&self) -> Vec<Value> {
        self.state.lock().messages.clone()
    }

    /// Registers a customer for `externalcontact/get`: `contact` is the
    /// `external_contact` object, `follow_user` the `follow_user` list.
    pub fn add_external_contact(&self, contact: Value, follow_user: Value) {
        let id = contact["external_userid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.state.lock().external_contacts.insert(
            id,
            json!({"external_contact": contact, "follow_user": follow_user}),
        );
    }

    /// The enterprise JS-SDK ticket this emulator hands out.
    pub const CORP_TICKET: &'static str = "emulated-corp-jsapi-ticket";
    /// The app (agent_config) JS-SDK ticket this emulator hands out.
    pub const AGENT_TICKET: &'static str = "emulated-agent-config-ticket";

    /// A one-time OAuth code as WeCom would append to the redirect after sign-in;
    /// `userid` None stands for someone outside the corp.
    pub fn issue_oauth_code(&self, userid: Option<&str>) -> String {
        let code = format!("emulated-code-{}", uuid::Uuid::new_v4().simple());
        self.state
            .lock()
            .oauth_codes
            .insert(code.clone(), userid.map(str::to_string));
        code
    }

    /// How many ticket requests (both kinds) arrived.
    pub fn ticket_calls(&self) -> usize {
        self.state.lock().ticket_calls
    }

    /// Delivers `plain` (a decrypted callback XML) to closeloop as WeCom does: encrypted
    /// for this corp, signed with `token` at the current time, POSTed to `callback_url`
    /// (closeloop's `/callback/wecom`); anything but a 200 within 5 s is retried, three
    /// times at most, each retry freshly encrypted. Returns the statuses seen (0 for no
    /// answer).
    pub async fn deliver_callback(
        &self,
        callback_url: &str,
        token: &str,
        encoding_aes_key: &str,
        plain: &str,
    ) -> Vec<u16> {
        let Ok(key) = crate::platform::crypto::EncodingAesKey::parse(encoding_aes_key) else {
            return Vec::new();
        };
        let crypto = super::crypto::WecomCrypto::new(token, key, self.state.corp_id.clone());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("a plain HTTP client builds");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let ts = chrono::Utc::now().timestamp().to_string();
            let nonce = crate::platform::crypto::random_nonce();
            let encrypted = crypto.encrypt_random(plain);
            let signature = crypto.signature(&ts, &nonce, &encrypted);
            let body = format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID>\
                 <Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>",
                self.state.corp_id
            );
            let status = client
                .post(callback_url)
                .query(&[
                    ("msg_signature", signature.as_str()),
                    ("timestamp", ts.as_str()),
                    ("nonce", nonce.as_str()),
                ])
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            seen.push(status);
            if status == 200 {
                break;
            }
        }
        seen
    }

    /// Sets the directory: `department/list` entries and `user/list` members.
    pub fn set_directory(&self, departments: Vec<Value>, users: Vec<Value>) {
        let mut state = self.state.lock();
        state.departments = departments;
        state.users = users;
    }

    /// Issues a card response code, as WeCom puts one in each card-click callback.
    pub fn issue_response_code(&self) -> String {
        let code = format!("emulated-rc-{}", uuid::Uuid::new_v4().simple());
        self.state.lock().response_codes.insert(code.clone());
        code
    }

    /// The bodies `update_template_card` accepted, oldest first.
    pub fn card_updates(&self) -> Vec<Value> {
        self.state.lock().card_updates.clone()
    }

    /// Adds 公费电话 records (each shaped as in `dial/get_dial_record`'s `record` list).
    pub fn add_dial_records(&self, records: Vec<Value>) {
        self.state.lock().dial_records.extend(records);
    }

    /// The request bodies `dial/get_dial_record` answered, oldest first.
    pub fn dial_requests(&self) -> Vec<Value> {
        self.state.lock().dial_requests.clone()
    }

    /// Makes every token issued so far answer 42001, as WeCom may do early "出于运营需要";
    /// the next `gettoken` issues a new one.
    pub fn expire_tokens(&self) {
        let mut state = self.state.lock();
        for token in state.tokens.values_mut() {
            token.invalidated = true;
        }
        state.current.clear();
    }

    /// The next `n` requests to `path` (e.g. `/cgi-bin/message/send`) fail with `failure`.
    pub fn fail_next(&self, path: &str, n: usize, failure: Failure) {
        self.state
            .lock()
            .failures
            .entry(path.to_string())
            .or_default()
            .extend(std::iter::repeat_n(failure, n));
    }

    /// How long a [`Failure::Timeout`] keeps the client waiting.
    pub fn set_timeout_delay(&self, delay: Duration) {
        self.state.lock().timeout_delay = Some(delay);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the next injected failure for `path` and acts it out; `None` means answer
    /// normally.
    async fn injected(&self, path: &str) -> Option<Response> {
        let (failure, delay) = {
            let mut state = self.lock();
            let failure = state.failures.get_mut(path)?.pop_front()?;
            (failure, state.timeout_delay)
        };
        Some(match failure {
            Failure::Http5xx => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
            }
            Failure::Timeout => {
                tokio::time::sleep(delay.unwrap_or(Duration::from_secs(30))).await;
                errcode(-1, "system busy")
            }
            Failure::Errcode(code) => errcode(code, errmsg_for(code)),
        })
    }
}

/// The request's access token if it is live; otherwise WeCom's errcode (41001 missing,
/// 40014 unknown, 42001 expired).
fn valid_token<'a>(
    state: &EmulatorState,
    query: &'a HashMap<String, String>,
) -> Result<&'a str, i64> {
    let Some(token) = query.get("access_token").filter(|t| !t.is_empty()) else {
        return Err(41001);
    };
    match state.tokens.get(token) {
        None => Err(40014),
        Some(t) if t.expired() => Err(42001),
        Some(_) => Ok(token),
    }
}

fn errcode(code: i64, msg: &str) -> Response {
    Json(json!({ "errcode": code, "errmsg": msg })).into_response()
}

fn errmsg_for(code: i64) -> &'static str {
    match code {
        -1 => "system busy",
        40001 => "invalid credential",
        40013 => "invalid corpid",
        40014 => "invalid access_token",
        41001 => "access_token missing",
        42001 => "access_token expired",
        45009 => "reach max api daily quota limit",
        45033 => "api concurrent out of limit",
        48002 => "api forbidden",
        _ => "emulated error",
    }
}

async fn gettoken(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    shared.lock().gettoken_calls += 1;
    if let Some(failure) = shared.injected(GETTOKEN).await {
        return failure;
    }
    if query.get("corpid") != Some(&shared.corp_id) {
        return errcode(40013, errmsg_for(40013));
    }
    let Some(which) = query.get("corpsecret").and_then(|given| {
        shared
            .secrets
            .iter()
            .find(|(secret, _)| secret == given)
            .map(|(_, which)| *which)
    }) else {
        return errcode(40001, errmsg_for(40001));
    };
    let mut state = shared.lock();
    let live = state
        .current
        .get(which)
        .filter(|token| state.tokens.get(*token).is_some_and(|t| !t.expired()))
        .cloned();
    let token = live.unwrap_or_else(|| {
        let token = format!("{which}-{}", uuid::Uuid::new_v4().simple());
        state.tokens.insert(
            token.clone(),
            IssuedToken {
                issued: Instant::now(),
                invalidated: false,
            },
        );
        state.current.insert(which, token.clone());
        token
    });
    let remaining = state.tokens.get(&token).map_or(TOKEN_LIFETIME, |t| {
        TOKEN_LIFETIME.saturating_sub(t.issued.elapsed())
    });
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "access_token": token,
        "expires_in": remaining.as_secs(),
    }))
    .into_response()
}

async fn message_send(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.injected(MESSAGE_SEND).await {
        return failure;
    }
    let mut state = shared.lock();
    if let Err(code) = valid_token(&state, &query) {
        return errcode(code, errmsg_for(code));
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    let is_card = message["msgtype"] == "template_card";
    state.messages.push(message);
    state.next_msgid += 1;
    let mut answer = json!({
        "errcode": 0,
        "errmsg": "ok",
        "invaliduser": "",
        "msgid": format!("emulated-msg-{}", state.next_msgid),
    });
    // Template cards come back with the one-shot code that may update them (72 h).
    if is_card {
        let code = format!("emulated-rc-{}", uuid::Uuid::new_v4().simple());
        state.response_codes.insert(code.clone());
        answer["response_code"] = json!(code);
    }
    Json(answer).into_response()
}

/// `dial/get_dial_record`: only a token of the 公费电话 secret may read records; the time
/// window and offset/limit paging behave as documented (limit above 100 counts as 100).
async fn dial_record(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.injected(DIAL_RECORD).await {
        return failure;
    }
    let mut state = shared.lock();
    let token = match valid_token(&state, &query) {
        Ok(t) => t.to_string(),
        Err(code) => return errcode(code, errmsg_for(code)),
    };
    if !token.starts_with("dial-") {
        return errcode(48002, "api forbidden");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    state.dial_requests.push(request.clone());
    let start = request["start_time"].as_i64().unwrap_or(i64::MIN);
    let end = request["end_time"].as_i64().unwrap_or(i64::MAX);
    let offset = request["offset"].as_u64().unwrap_or(0) as usize;
    let limit = request["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let mut matching: Vec<&Value> = state
        .dial_records
        .iter()
        .filter(|r| {
            r["call_time"]
                .as_i64()
                .is_some_and(|t| t >= start && t <= end)
        })
        .collect();
    matching.sort_by_key(|r| r["call_time"].as_i64());
    let page: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .cloned()
        .collect();
    Json(json!({"errcode": 0, "errmsg": "ok", "record": page})).into_response()
}

/// `message/update_template_card`: each response code works once (PROTOCOLS.md §1.4).
/// A used or unknown code answers 40058 (WeCom's general "invalid parameter"; the
/// documentation names no dedicated code for it).
async fn update_template_card(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.injected(UPDATE_CARD).await {
        return failure;
    }
    let mut state = shared.lock();
    if let Err(code) = valid_token(&state, &query) {
        return errcode(code, errmsg_for(code));
    }
    let Ok(update) = serde_json::from_slice::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    let code = update["response_code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !state.response_codes.remove(&code) {
        return errcode(40058, "invalid response_code");
    }
    state.card_updates.push(update);
    Json(json!({"errcode": 0, "errmsg": "ok", "invaliduser": []})).into_response()
}

/// `externalcontact/get`: needs a token of the 客户联系 secret (or the app's, when the app
/// has customer-contact rights — here only the contact secret); 84061 when the person is
/// not an external contact of the corp.
async fn external_contact(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(EXTERNAL_CONTACT).await {
        return failure;
    }
    let state = shared.lock();
    let token = match valid_token(&state, &query) {
        Ok(t) => t.to_string(),
        Err(code) => return errcode(code, errmsg_for(code)),
    };
    if !token.starts_with("contact-") {
        return errcode(48002, "api forbidden");
    }
    let id = query.get("external_userid").cloned().unwrap_or_default();
    match state.external_contacts.get(&id) {
        Some(found) => {
            let mut answer = found.clone();
            answer["errcode"] = json!(0);
            answer["errmsg"] = json!("ok");
            Json(answer).into_response()
        }
        None => errcode(84061, "not external contact"),
    }
}

/// Directory reads take any token but the 公费电话 one (48002); the errcode otherwise.
fn directory_token(shared: &Shared, query: &HashMap<String, String>) -> Result<(), i64> {
    let state = shared.lock();
    let token = valid_token(&state, query)?;
    if token.starts_with("dial-") {
        return Err(48002);
    }
    Ok(())
}

/// `department/list`.
async fn department_list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(DEPARTMENT_LIST).await {
        return failure;
    }
    if let Err(code) = directory_token(&shared, &query) {
        return errcode(code, errmsg_for(code));
    }
    let departments = shared.lock().departments.clone();
    Json(json!({"errcode": 0, "errmsg": "ok", "department": departments})).into_response()
}

/// `user/list` (this emulator lists everyone from the root with `fetch_child=1`).
async fn user_list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(USER_LIST).await {
        return failure;
    }
    if let Err(code) = directory_token(&shared, &query) {
        return errcode(code, errmsg_for(code));
    }
    let users = shared.lock().users.clone();
    Json(json!({"errcode": 0, "errmsg": "ok", "userlist": users})).into_response()
}

/// `user/get`; 60111 when the userid is not in the directory.
async fn user_get(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(USER_GET).await {
        return failure;
    }
    if let Err(code) = directory_token(&shared, &query) {
        return errcode(code, errmsg_for(code));
    }
    let wanted = query.get("userid").cloned().unwrap_or_default();
    let found = shared
        .lock()
        .users
        .iter()
        .find(|u| u["userid"] == wanted.as_str())
        .cloned();
    match found {
        Some(mut u) => {
            u["errcode"] = json!(0);
            u["errmsg"] = json!("ok");
            Json(u).into_response()
        }
        None => errcode(60111, "userid not found"),
    }
}

async fn ticket(shared: &Shared, query: &HashMap<String, String>, ticket: &str) -> Response {
    let mut state = shared.lock();
    state.ticket_calls += 1;
    if let Err(code) = valid_token(&state, query) {
        return errcode(code, errmsg_for(code));
    }
    Json(json!({"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": 7200}))
        .into_response()
}

/// `get_jsapi_ticket`: the enterprise ticket for `wx.config`.
async fn jsapi_ticket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(JSAPI_TICKET).await {
        return failure;
    }
    ticket(&shared, &query, Emulator::CORP_TICKET).await
}

/// `ticket/get?type=agent_config`: the app ticket for `wx.agentConfig`.
async fn agent_ticket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(AGENT_TICKET).await {
        return failure;
    }
    if query.get("type").map(String::as_str) != Some("agent_config") {
        return errcode(40001, "invalid type");
    }
    ticket(&shared, &query, Emulator::AGENT_TICKET).await
}

/// `auth/getuserinfo`: each code works once; 40029 for an unknown or used code.
async fn getuserinfo(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(GETUSERINFO).await {
        return failure;
    }
    let mut state = shared.lock();
    if let Err(code) = valid_token(&state, &query) {
        return errcode(code, errmsg_for(code));
    }
    let code = query.get("code").cloned().unwrap_or_default();
    match state.oauth_codes.remove(&code) {
        Some(Some(userid)) => {
            Json(json!({"errcode": 0, "errmsg": "ok", "userid": userid})).into_response()
        }
        Some(None) => {
            Json(json!({"errcode": 0, "errmsg": "ok", "openid": "emulated-openid"})).into_response()
        }
        None => errcode(40029, "invalid code"),
    }
}
