//! A local WeCom server speaking the real API (docs/protocols/wecom.md): tests point closeloop at
//! it, and `closeloop demo` runs it in place of qyapi.weixin.qq.com. It issues and checks access
//! tokens, records what it is sent, and fails on request (5xx, timeouts, errcodes). For the sidebar
//! it also plays the browser side: the OAuth2 authorize page and a JS-SDK stand-in. And it stands
//! in for the members' chat clients: `/chat` shows, per member, the cards `message/send` delivered
//! (with what `update_template_card` changed), and a button pressed there reaches closeloop as
//! WeCom's own signed, encrypted `template_card_event`. There a member can also place a 公费电话
//! call (a record `dial/get_dial_record` then serves), add an external contact (WeCom calls the
//! app back with `change_external_contact`), and open the app's pages signed in as themselves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

mod chat;

const GETTOKEN: &str = "/cgi-bin/gettoken";
const MESSAGE_SEND: &str = "/cgi-bin/message/send";
const SCHEDULE_ADD: &str = "/cgi-bin/oa/schedule/add";
const DIAL_RECORD: &str = "/cgi-bin/dial/get_dial_record";
const UPDATE_CARD: &str = "/cgi-bin/message/update_template_card";
const EXTERNAL_CONTACT: &str = "/cgi-bin/externalcontact/get";
const EXTERNAL_CONTACT_LIST: &str = "/cgi-bin/externalcontact/list";
const EXTERNAL_CONTACT_BATCH: &str = "/cgi-bin/externalcontact/batch/get_by_user";
const DEPARTMENT_LIST: &str = "/cgi-bin/department/list";
const JSAPI_TICKET: &str = "/cgi-bin/get_jsapi_ticket";
const AGENT_TICKET: &str = "/cgi-bin/ticket/get";
const GETUSERINFO: &str = "/cgi-bin/auth/getuserinfo";
const USER_LIST: &str = "/cgi-bin/user/list";
const USER_GET: &str = "/cgi-bin/user/get";
const OAUTH_AUTHORIZE: &str = "/connect/oauth2/authorize";
/// The official JS-SDK's path on res.wx.qq.com; the stand-in is served at the same path.
pub const JSSDK_PATH: &str = "/wwopen/js/jwxwork-1.0.0.js";
const TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// The chat view: every member's received cards, readable and clickable.
const CHAT: &str = "/chat";
/// The agent id `deliver_callback` puts on the envelope.
const DEFAULT_AGENT_ID: &str = "1000002";

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
    /// Bodies `oa/schedule/add` accepted (日程).
    schedules: Vec<Value>,
    injected: super::kit::Injected<Failure>,
    next_msgid: u64,
    /// 公费电话 records served by `dial/get_dial_record`.
    dial_records: Vec<Value>,
    dial_requests: Vec<Value>,
    /// One-shot card codes issued and not yet used.
    response_codes: std::collections::HashSet<String>,
    card_updates: Vec<Value>,
    /// `externalcontact/get` answers, by external userid.
    external_contacts: HashMap<String, Value>,
    /// Bodies `externalcontact/batch/get_by_user` was sent, oldest first.
    batch_requests: Vec<Value>,
    departments: Vec<Value>,
    users: Vec<Value>,
    /// OAuth codes not yet exchanged → userid (None: a non-member).
    oauth_codes: HashMap<String, Option<String>>,
    ticket_calls: usize,
    /// Who the OAuth authorize page signs in (None: someone outside the corp).
    current_member: Option<String>,
    /// The external contact whose chat the sidebar is open on (`getCurExternalContact`).
    current_external_contact: Option<String>,
    /// When each of `messages` arrived (epoch ms), for the chat view.
    message_times: Vec<i64>,
    /// The card (`task_id`) each response code was issued for, so the chat view can show
    /// an update on the card it changed.
    code_tasks: HashMap<String, String>,
    /// Where the chat view delivers clicks.
    callback: Option<CallbackTarget>,
    /// Buttons pressed in the chat view, oldest first.
    chat_clicks: Vec<ChatClick>,
    /// The app's page that starts the WeCom sign-in (closeloop's `/auth/wecom/login`, taking
    /// `next`): links the chat view opens on its origin go through it, so the app signs
    /// the browser in as the member whose chat the link is in.
    sign_in_url: Option<String>,
    /// The chat-toolbar (聊天工具栏) page configured for the app, opened beside a customer's chat.
    toolbar_url: Option<String>,
    /// Called after a call placed in the chat view added a 公费电话 record.
    on_dial_record: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// closeloop's callback URL (`/callback/wecom`) with the app's callback token and
/// EncodingAESKey, as configured in the WeCom admin console.
#[derive(Clone)]
struct CallbackTarget {
    url: String,
    token: String,
    encoding_aes_key: String,
}

/// A button pressed in the chat view.
struct ChatClick {
    at_ms: i64,
    userid: String,
    task_id: String,
    key: String,
    /// The HTTP status of each delivery attempt (0: no answer).
    statuses: Vec<u16>,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("the WeCom emulator cannot bind a local port: {e}"));
        Self::start_on(listener, corp_id, secrets)
    }

    /// As [`Emulator::start`], on a listener the caller bound (`closeloop demo
    /// --emulator-port`).
    pub fn start_on(
        listener: tokio::net::TcpListener,
        corp_id: impl Into<String>,
        secrets: Vec<(String, &'static str)>,
    ) -> Self {
        let state = Arc::new(Shared {
            corp_id: corp_id.into(),
            secrets,
            state: Mutex::new(EmulatorState::default()),
        });
        let router = Router::new()
            .route(GETTOKEN, get(gettoken))
            .route(MESSAGE_SEND, post(message_send))
            .route(SCHEDULE_ADD, post(schedule_add))
            .route(DIAL_RECORD, post(dial_record))
            .route(UPDATE_CARD, post(update_template_card))
            .route(EXTERNAL_CONTACT, get(external_contact))
            .route(EXTERNAL_CONTACT_LIST, get(external_contact_list))
            .route(EXTERNAL_CONTACT_BATCH, post(external_contact_batch))
            .route(DEPARTMENT_LIST, get(department_list))
            .route(JSAPI_TICKET, get(jsapi_ticket))
            .route(AGENT_TICKET, get(agent_ticket))
            .route(GETUSERINFO, get(getuserinfo))
            .route(USER_LIST, get(user_list))
            .route(USER_GET, get(user_get))
            .route(OAUTH_AUTHORIZE, get(oauth_authorize))
            .route(JSSDK_PATH, get(jssdk))
            .route(CHAT, get(chat::chat_members))
            .route("/chat/{userid}", get(chat::chat_member))
            .route("/chat/{userid}/click", post(chat::chat_click))
            .route("/chat/{userid}/open", get(chat::chat_open))
            .route("/chat/{userid}/call", post(chat::chat_call))
            .route("/chat/{userid}/contacts", post(chat::chat_add_contact))
            .with_state(state.clone());
        let (addr, server) = super::kit::serve_on(listener, router, "WeCom");
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

    /// The JSON bodies `oa/schedule/add` accepted, oldest first.
    pub fn schedules(&self) -> Vec<Value> {
        self.state.lock().schedules.clone()
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

    /// The bodies `externalcontact/batch/get_by_user` was sent, oldest first.
    pub fn batch_requests(&self) -> Vec<Value> {
        self.state.lock().batch_requests.clone()
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

    /// Who the OAuth authorize page (`/connect/oauth2/authorize`) signs in from now on;
    /// `None` (the default) stands for someone outside the corp.
    pub fn set_current_member(&self, userid: Option<&str>) {
        self.state.lock().current_member = userid.map(str::to_string);
    }

    /// The external contact whose chat the JS-SDK stand-in reports as open
    /// (`getCurExternalContact`); `None` makes that call fail, as outside a customer chat.
    pub fn set_current_external_contact(&self, external_userid: Option<&str>) {
        self.state.lock().current_external_contact = external_userid.map(str::to_string);
    }

    /// What to configure as `wecom.jssdk_url`: the JS-SDK stand-in.
    pub fn jssdk_url(&self) -> String {
        format!("{}{JSSDK_PATH}", self.base_url())
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
        let target = CallbackTarget {
            url: callback_url.to_string(),
            token: token.to_string(),
            encoding_aes_key: encoding_aes_key.to_string(),
        };
        post_callback(&self.state.corp_id, DEFAULT_AGENT_ID, &target, plain).await
    }

    /// Where buttons pressed in the chat view are delivered: closeloop's `/callback/wecom`
    /// URL, with the callback `token` and `encoding_aes_key` closeloop is configured with
    /// (WeCom's 接收消息 settings of the app).
    pub fn set_callback_target(
        &self,
        url: impl Into<String>,
        token: impl Into<String>,
        encoding_aes_key: impl Into<String>,
    ) {
        self.state.lock().callback = Some(CallbackTarget {
            url: url.into(),
            token: token.into(),
            encoding_aes_key: encoding_aes_key.into(),
        });
    }

    /// The chat view's address: every member's received cards, clickable.
    pub fn chat_url(&self) -> String {
        format!("{}{CHAT}", self.base_url())
    }

    /// The app's page that starts its WeCom sign-in and takes the page to show after it as
    /// `next` (closeloop's `/auth/wecom/login`). The chat view opens links on its origin
    /// through it, as the member whose chat they are in: one browser plays every member,
    /// where WeCom gives each member a client of their own.
    pub fn set_sign_in_url(&self, url: impl Into<String>) {
        self.state.lock().sign_in_url = Some(url.into());
    }

    /// The app's chat-toolbar page (聊天工具栏 → 配置页面), which the chat view opens beside
    /// a customer's chat.
    pub fn set_chat_toolbar_url(&self, url: impl Into<String>) {
        self.state.lock().toolbar_url = Some(url.into());
    }

    /// Called (on the emulator's task, without waiting) each time a call placed in the
    /// chat view adds a 公费电话 record; WeCom tells nobody, so an app finds it by polling.
    pub fn on_dial_record(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.state.lock().on_dial_record = Some(Arc::new(hook));
    }

    /// The 公费电话 records `dial/get_dial_record` serves, oldest first.
    pub fn dial_records(&self) -> Vec<Value> {
        self.state.lock().dial_records.clone()
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
        self.state.lock().injected.push(path, n, failure);
    }

    /// How long a [`Failure::Timeout`] keeps the client waiting.
    pub fn set_timeout_delay(&self, delay: Duration) {
        self.state.lock().injected.set_timeout(delay);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Posts `plain` (a decrypted callback XML) to closeloop as WeCom does: encrypted for
/// `corp_id`, signed with the target's token at the current time; anything but a 200
/// within 5 s is retried, three times at most, each retry freshly encrypted. Returns the
/// statuses seen (0 for no answer).
async fn post_callback(
    corp_id: &str,
    agent_id: &str,
    target: &CallbackTarget,
    plain: &str,
) -> Vec<u16> {
    let Ok(key) = crate::platform::crypto::EncodingAesKey::parse(&target.encoding_aes_key) else {
        return Vec::new();
    };
    let crypto =
        crate::platform::wecom::crypto::WecomCrypto::new(&target.token, key, corp_id.to_string());
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
            "<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><AgentID><![CDATA[{agent_id}]]></AgentID>\
             <Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        );
        let status = client
            .post(&target.url)
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the next injected failure for `path` and acts it out; `None` means answer
    /// normally.
    async fn injected(&self, path: &str) -> Option<Response> {
        let (failure, delay) = self.lock().injected.pop(path)?;
        Some(match failure {
            Failure::Http5xx => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
            }
            Failure::Timeout => {
                tokio::time::sleep(delay).await;
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

/// A live token issued for the secret whose tokens start with `prefix` (`contact-`,
/// `dial-`); otherwise WeCom's errcode (48002 for another secret's token).
fn secret_token(
    state: &EmulatorState,
    query: &HashMap<String, String>,
    prefix: &str,
) -> Result<(), i64> {
    match valid_token(state, query) {
        Err(code) => Err(code),
        Ok(token) if !token.starts_with(prefix) => Err(48002),
        Ok(_) => Ok(()),
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

/// `oa/schedule/add`: a 日程 with a start before its end and at least a summary or an
/// attendee (40058 otherwise, as WeCom answers a missing or inconsistent parameter).
async fn schedule_add(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.injected(SCHEDULE_ADD).await {
        return failure;
    }
    let mut state = shared.lock();
    if let Err(code) = valid_token(&state, &query) {
        return errcode(code, errmsg_for(code));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    let s = &body["schedule"];
    let (Some(start), Some(end)) = (s["start_time"].as_i64(), s["end_time"].as_i64()) else {
        return errcode(40058, "missing paramters start_time");
    };
    if end <= start {
        return errcode(40058, "end_time must be after start_time");
    }
    state.schedules.push(body);
    let id = format!("emulated-schedule-{}", state.schedules.len());
    Json(json!({"errcode": 0, "errmsg": "ok", "schedule_id": id})).into_response()
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
    if is_card {
        if let Err(problem) = check_template_card(&message["template_card"]) {
            return errcode(40058, &problem);
        }
    }
    // Only cards that can be answered come back with a code to update them by.
    let card = &message["template_card"];
    let answerable = matches!(
        card["card_type"].as_str(),
        Some("button_interaction" | "vote_interaction" | "multiple_interaction")
    ) || card.get("action_menu").is_some();
    let task_id = card["task_id"].as_str().unwrap_or_default().to_string();
    state.messages.push(message);
    state
        .message_times
        .push(chrono::Utc::now().timestamp_millis());
    state.next_msgid += 1;
    let mut answer = json!({
        "errcode": 0,
        "errmsg": "ok",
        "invaliduser": "",
        "msgid": format!("emulated-msg-{}", state.next_msgid),
    });
    // Answerable template cards come back with the one-shot code that may update them (72 h).
    if is_card && answerable {
        let code = format!("emulated-rc-{}", uuid::Uuid::new_v4().simple());
        state.response_codes.insert(code.clone());
        state.code_tasks.insert(code.clone(), task_id);
        answer["response_code"] = json!(code);
    }
    Json(answer).into_response()
}

/// What WeCom's documentation marks as required in a template card
/// (`docs/protocols/wecom.md`); the first thing missing, as WeCom's errmsg would name it.
/// The errcode for it is not documented: the emulator answers 40058 (invalid parameter).
fn check_template_card(card: &Value) -> Result<(), String> {
    let text = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    let list = |name: &str| card[name].as_array().cloned().unwrap_or_default();
    let task_id = card["task_id"].as_str();
    if let Some(id) = task_id {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_-@".contains(c);
        if id.is_empty() || id.len() > 128 || !id.chars().all(allowed) {
            return Err("invalid task_id".into());
        }
    }
    if list("horizontal_content_list").len() > 6
        || list("horizontal_content_list")
            .iter()
            .any(|h| !text(&h["keyname"]))
    {
        return Err("invalid horizontal_content_list".into());
    }
    let titled = text(&card["main_title"]["title"]) || text(&card["sub_title_text"]);
    let jump = |action: &Value| match action["type"].as_i64() {
        Some(1) => text(&action["url"]),
        Some(2) => text(&action["appid"]),
        _ => false,
    };
    let card_type = card["card_type"].as_str().unwrap_or_default();
    match card_type {
        "text_notice" | "news_notice" => {
            if !titled {
                return Err("missing main_title.title or sub_title_text".into());
            }
            if !jump(&card["card_action"]) {
                return Err(format!(
                    "{card_type} needs card_action of type 1 (url) or 2 (appid)"
                ));
            }
            if card_type == "news_notice"
                && card.get("card_image").is_none()
                && card.get("image_text_area").is_none()
            {
                return Err("news_notice needs card_image or image_text_area".into());
            }
            if card.get("action_menu").is_some() && task_id.is_none() {
                return Err("task_id is required with action_menu".into());
            }
        }
        "button_interaction" => {
            if !card["main_title"].is_object() || !titled {
                return Err("missing main_title".into());
            }
            if task_id.is_none() {
                return Err("missing task_id".into());
            }
            let buttons = list("button_list");
            if buttons.is_empty() || buttons.len() > 6 {
                return Err("button_list needs 1 to 6 buttons".into());
            }
            let pressable = |b: &Value| match b["type"].as_i64().unwrap_or(0) {
                0 => text(&b["key"]),
                1 => text(&b["url"]),
                _ => false,
            };
            if buttons.iter().any(|b| !text(&b["text"]) || !pressable(b)) {
                return Err("invalid button in button_list".into());
            }
        }
        "vote_interaction" | "multiple_interaction" => {}
        _ => return Err("invalid card_type".into()),
    }
    Ok(())
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
    if let Err(code) = secret_token(&state, &query, "dial-") {
        return errcode(code, errmsg_for(code));
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

/// `message/update_template_card`: each response code works once
/// (docs/protocols/wecom.md#updating-a-card). A used or unknown code answers 40058 (WeCom's general
/// "invalid parameter"; the documentation names no dedicated code for it).
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
    if let Err(code) = secret_token(&state, &query, "contact-") {
        return errcode(code, errmsg_for(code));
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

/// The customers `member` follows, by external userid: (external contact, follow entry).
fn followed_by<'a>(state: &'a EmulatorState, member: &str) -> Vec<(&'a Value, &'a Value)> {
    let mut found: Vec<(&Value, &Value)> = state
        .external_contacts
        .values()
        .filter_map(|c| {
            let follow = c["follow_user"]
                .as_array()?
                .iter()
                .find(|f| f["userid"].as_str() == Some(member))?;
            Some((&c["external_contact"], follow))
        })
        .collect();
    found.sort_by(|a, b| {
        a.0["external_userid"]
            .as_str()
            .cmp(&b.0["external_userid"].as_str())
    });
    found
}

/// `externalcontact/list?userid=…`: the external userids of the member's customers; 84061
/// when the member has none. Needs a token of the 客户联系 secret.
async fn external_contact_list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(EXTERNAL_CONTACT_LIST).await {
        return failure;
    }
    let state = shared.lock();
    if let Err(code) = secret_token(&state, &query, "contact-") {
        return errcode(code, errmsg_for(code));
    }
    let member = query.get("userid").cloned().unwrap_or_default();
    let ids: Vec<&Value> = followed_by(&state, &member)
        .into_iter()
        .map(|(c, _)| &c["external_userid"])
        .collect();
    if ids.is_empty() {
        return errcode(84061, "not external contact");
    }
    Json(json!({"errcode": 0, "errmsg": "ok", "external_userid": ids})).into_response()
}

/// `externalcontact/batch/get_by_user`: `userid_list` (1 to 100 members), `cursor` (the
/// previous page's `next_cursor`, empty for the first), `limit` (default 50, above 100
/// counts as 100). One entry per (customer, member), by member then external userid, each
/// `{external_contact, follow_info}`; `next_cursor` is empty on the last page. A cursor it
/// did not issue, or a bad `userid_list`, answers 40058 (invalid parameter).
async fn external_contact_batch(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.injected(EXTERNAL_CONTACT_BATCH).await {
        return failure;
    }
    let mut state = shared.lock();
    if let Err(code) = secret_token(&state, &query, "contact-") {
        return errcode(code, errmsg_for(code));
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    state.batch_requests.push(request.clone());
    let members: Vec<&str> = request["userid_list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if members.is_empty() || members.len() > 100 {
        return errcode(40058, "invalid userid_list");
    }
    let offset = match request["cursor"].as_str().unwrap_or_default() {
        "" => 0,
        c => match c
            .strip_prefix("emulated-cursor-")
            .and_then(|n| n.parse().ok())
        {
            Some(n) => n,
            None => return errcode(40058, "invalid cursor"),
        },
    };
    let limit = request["limit"].as_u64().unwrap_or(50).clamp(1, 100) as usize;
    let all: Vec<Value> = members
        .iter()
        .flat_map(|m| followed_by(&state, m))
        .map(|(c, f)| json!({"external_contact": c, "follow_info": f}))
        .collect();
    let page: Vec<&Value> = all.iter().skip(offset).take(limit).collect();
    let next = if offset + limit < all.len() {
        format!("emulated-cursor-{}", offset + limit)
    } else {
        String::new()
    };
    Json(json!({"errcode": 0, "errmsg": "ok", "external_contact_list": page, "next_cursor": next}))
        .into_response()
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

/// The OAuth2 authorize page: WeCom signs the person in inside its client and sends the
/// browser straight back to `redirect_uri` with a fresh one-time `code` and the `state`.
/// Here the person is whoever [`Emulator::set_current_member`] named.
async fn oauth_authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("appid") != Some(&shared.corp_id) {
        return (StatusCode::BAD_REQUEST, "invalid appid").into_response();
    }
    let Some(redirect_uri) = query
        .get("redirect_uri")
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    else {
        return (StatusCode::BAD_REQUEST, "invalid redirect_uri").into_response();
    };
    let code = format!("emulated-code-{}", uuid::Uuid::new_v4().simple());
    {
        let mut state = shared.lock();
        let member = state.current_member.clone();
        state.oauth_codes.insert(code.clone(), member);
    }
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!(
        "{redirect_uri}{sep}code={}&state={}",
        enc(&code),
        enc(query.get("state").map(String::as_str).unwrap_or_default())
    );
    (
        StatusCode::FOUND,
        [(axum::http::header::LOCATION, location)],
    )
        .into_response()
}

/// The JS-SDK stand-in: `wx.config`, `wx.ready`, `wx.error`, `wx.agentConfig` and
/// `wx.invoke`, answering as the WeCom client does inside a customer chat. It checks that
/// the signature fields are present and name this corp, and keeps every call in
/// `wx.__calls` (so a test can read what `sendChatMessage` would have sent).
async fn jssdk(State(shared): State<Arc<Shared>>) -> Response {
    let settings = {
        let state = shared.lock();
        json!({
            "corpId": shared.corp_id,
            "externalUserId": state.current_external_contact,
        })
    };
    // JSON is valid JavaScript; escaping `<` keeps a value from closing a script tag.
    let settings = settings.to_string().replace('<', "\\u003c");
    let body = JSSDK_STAND_IN.replace("__SETTINGS__", &settings);
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

const JSSDK_STAND_IN: &str = r#"/* closeloop WeCom emulator: JS-SDK stand-in (not the official jwxwork). */
(function () {
  'use strict';
  var settings = __SETTINGS__;
  var calls = [];
  var configured = null;
  var configError = null;
  var agentConfigured = false;
  var onReady = [];
  var onError = [];
  function later(f, arg) { setTimeout(function () { f(arg); }, 0); }
  function missing(o, keys) {
    return keys.filter(function (k) {
      return !o || o[k] === undefined || o[k] === null || o[k] === '';
    });
  }
  var wx = {
    __emulated: true,
    __calls: calls,
    config: function (c) {
      calls.push({ api: 'config', args: c });
      var gaps = missing(c, ['appId', 'timestamp', 'nonceStr', 'signature']);
      setTimeout(function () {
        if (gaps.length || c.appId !== settings.corpId) {
          configured = false;
          configError = { errMsg: 'config:fail ' + (gaps.length ? 'missing ' + gaps.join(',') : 'invalid appId') };
          onError.forEach(function (f) { f(configError); });
        } else {
          configured = true;
          onReady.forEach(function (f) { f(); });
        }
      }, 0);
    },
    ready: function (f) { if (configured === true) { later(f); } else { onReady.push(f); } },
    error: function (f) { if (configured === false) { later(f, configError); } else { onError.push(f); } },
    agentConfig: function (c) {
      calls.push({ api: 'agentConfig', args: { corpid: c.corpid, agentid: c.agentid, jsApiList: c.jsApiList } });
      var gaps = missing(c, ['corpid', 'agentid', 'timestamp', 'nonceStr', 'signature']);
      setTimeout(function () {
        if (!gaps.length && c.corpid === settings.corpId) {
          agentConfigured = true;
          if (c.success) { c.success({ errMsg: 'agentConfig:ok' }); }
        } else if (c.fail) {
          c.fail({ errMsg: 'agentConfig:fail ' + (gaps.length ? 'missing ' + gaps.join(',') : 'invalid corpid') });
        }
      }, 0);
    },
    invoke: function (name, args, cb) {
      calls.push({ api: name, args: args });
      setTimeout(function () {
        var res;
        if (!agentConfigured) {
          res = { err_msg: name + ':fail no permission' };
        } else if (name === 'getCurExternalContact') {
          res = settings.externalUserId
            ? { err_msg: 'getCurExternalContact:ok', userId: settings.externalUserId }
            : { err_msg: 'getCurExternalContact:fail' };
        } else if (name === 'getContext') {
          res = { err_msg: 'getContext:ok', entry: settings.externalUserId ? 'single_chat_tools' : 'normal' };
        } else if (name === 'sendChatMessage') {
          res = { err_msg: 'sendChatMessage:ok' };
        } else {
          res = { err_msg: name + ':fail not emulated' };
        }
        if (cb) { cb(res); }
      }, 0);
    }
  };
  window.wx = wx;
  window.jWeixin = wx;
})();
"#;
