//! A local WeCom server speaking the real API (docs/protocols/wecom.md): tests point closeloop at
//! it, and `closeloop demo` runs it in place of qyapi.weixin.qq.com. It issues and checks access
//! tokens, records what it is sent, and fails on request (5xx, timeouts, errcodes). For the sidebar
//! it also plays the browser side: the OAuth2 authorize page and a JS-SDK stand-in. And it stands
//! in for the members' chat clients: `/chat` shows, per member, the cards `message/send` delivered
//! (with what `update_template_card` changed), and a button pressed there reaches closeloop as
//! WeCom's own signed, encrypted `template_card_event`.

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

const GETTOKEN: &str = "/cgi-bin/gettoken";
const MESSAGE_SEND: &str = "/cgi-bin/message/send";
const SCHEDULE_ADD: &str = "/cgi-bin/oa/schedule/add";
const DIAL_RECORD: &str = "/cgi-bin/dial/get_dial_record";
const UPDATE_CARD: &str = "/cgi-bin/message/update_template_card";
const EXTERNAL_CONTACT: &str = "/cgi-bin/externalcontact/get";
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
    injected: crate::platform::emulator_kit::Injected<Failure>,
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
            .route(DEPARTMENT_LIST, get(department_list))
            .route(JSAPI_TICKET, get(jsapi_ticket))
            .route(AGENT_TICKET, get(agent_ticket))
            .route(GETUSERINFO, get(getuserinfo))
            .route(USER_LIST, get(user_list))
            .route(USER_GET, get(user_get))
            .route(OAUTH_AUTHORIZE, get(oauth_authorize))
            .route(JSSDK_PATH, get(jssdk))
            .route(CHAT, get(chat_members))
            .route("/chat/{userid}", get(chat_member))
            .route("/chat/{userid}/click", post(chat_click))
            .with_state(state.clone());
        let (addr, server) = crate::platform::emulator_kit::serve(router, "WeCom").await;
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
    let crypto = super::crypto::WecomCrypto::new(&target.token, key, corp_id.to_string());
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

// ----------------------------------------------------------------------------------------
// The chat view: what each member's WeCom client would show.

/// Escapes text for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A path segment or query value, percent-encoded.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A CDATA section holding `s`, even when `s` contains `]]>`.
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// A JSON string or number as text (WeCom sends ids either way).
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Beijing time, as the members' clients show it.
fn local_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono_tz::Asia::Shanghai)
                .format("%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// Whether `message` (a `message/send` body) went to `userid`.
fn received_by(message: &Value, userid: &str) -> bool {
    let to = message["touser"].as_str().unwrap_or_default();
    to == "@all" || to.split('|').any(|u| u == userid)
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(body).split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k) == name).then(|| decode(v))
    })
}

impl EmulatorState {
    /// The members the chat view lists: the directory's, in its order, then anyone else a
    /// message went to. Each with their name when the directory has it.
    fn chat_members(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = self
            .users
            .iter()
            .filter_map(|u| Some((json_text(&u["userid"])?, json_text(&u["name"]))))
            .collect();
        let mut others: Vec<String> = self
            .messages
            .iter()
            .flat_map(|m| {
                m["touser"]
                    .as_str()
                    .unwrap_or_default()
                    .split('|')
                    .filter(|u| !u.is_empty() && *u != "@all")
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|u| !out.iter().any(|(known, _)| known == u))
            .collect();
        others.sort();
        others.dedup();
        out.extend(others.into_iter().map(|u| (u, None)));
        out
    }

    /// The last `update_template_card` that changed card `task_id` for `userid`.
    fn last_update(&self, task_id: &str, userid: &str) -> Option<&Value> {
        self.card_updates.iter().rev().find(|u| {
            let code = u["response_code"].as_str().unwrap_or_default();
            let for_user = u["userids"]
                .as_array()
                .is_none_or(|ids| ids.is_empty() || ids.iter().any(|i| i == userid));
            self.code_tasks.get(code).is_some_and(|t| t == task_id) && for_user
        })
    }

    /// A card still waiting for `userid`'s answer: it has callback buttons, nobody has
    /// updated it, and they have not pressed one.
    fn awaits_click(&self, message: &Value, userid: &str) -> bool {
        let card = &message["template_card"];
        let Some(task_id) = card["task_id"].as_str() else {
            return false;
        };
        let has_buttons = card["button_list"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["type"].as_i64().unwrap_or(0) == 0));
        has_buttons
            && self.last_update(task_id, userid).is_none()
            && !self
                .chat_clicks
                .iter()
                .any(|c| c.task_id == task_id && c.userid == userid)
    }
}

const CHAT_CSS: &str = "body{font-family:-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;\
background:#ededed;margin:0;padding:16px;color:#222}main{max-width:640px;margin:0 auto}\
h1{font-size:20px}a{color:#1a5fb4}.banner{background:#fff8e1;border:1px solid #f0d58c;padding:8px 12px;\
border-radius:6px;font-size:13px}.notice{padding:8px 12px;border-radius:6px;background:#e7f6ec;\
border:1px solid #9fd6b0}.notice.error{background:#fdecea;border-color:#f2a8a0}\
ul.members{list-style:none;padding:0}ul.members li{background:#fff;margin:6px 0;padding:10px 12px;\
border-radius:6px}.meta{color:#777;font-size:12px}.card{background:#fff;border-radius:8px;\
margin:12px 0;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}.card h2{font-size:16px;\
margin:6px 0}.card dl{display:grid;grid-template-columns:6em 1fr;gap:4px 8px;font-size:14px;margin:8px 0}\
.card dt{color:#777}.card dd{margin:0}.buttons{display:flex;flex-wrap:wrap;gap:8px;margin-top:10px}\
.buttons form{margin:0}button,.linkbutton{font-size:14px;padding:6px 14px;border-radius:4px;\
border:1px solid #ccc;background:#f7f7f7;cursor:pointer;text-decoration:none;color:#222}\
.s1{background:#1a73e8;border-color:#1a73e8;color:#fff}.s3{color:#d93025;border-color:#d93025}\
.s4{background:#d93025;border-color:#d93025;color:#fff}button[disabled]{background:#eee;color:#999;\
border-color:#ddd;cursor:default}.updated{font-size:13px;color:#8a6d00}";

/// An HTML page of the chat view.
fn chat_page(status: StatusCode, title: &str, refresh: Option<&str>, body: &str) -> Response {
    let refresh = refresh
        .map(|to| {
            format!(
                "<meta http-equiv=\"refresh\" content=\"2;url={}\">",
                esc(to)
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{}</title><style>{CHAT_CSS}</style></head>\n<body><main>\n{body}</main></body></html>\n",
        esc(title)
    );
    (
        status,
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn chat_error(status: StatusCode, message: &str) -> Response {
    chat_page(
        status,
        "模拟企业微信",
        None,
        &format!(
            "<h1>模拟企业微信</h1>\n<p class=\"notice error\">{}</p>\n<p><a href=\"{CHAT}\">返回成员列表</a></p>\n",
            esc(message)
        ),
    )
}

/// `GET /chat`: the members, each with how many cards they received and how many still
/// wait for an answer.
async fn chat_members(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.lock();
    let mut body = String::from(
        "<h1>模拟企业微信 · 成员消息</h1>\n<p class=\"banner\">这里是内置的企业微信模拟器：\
         每位成员收到的卡片都可以阅读和点击，点击会以企业微信的签名与加密方式回调 closeloop。</p>\n",
    );
    let members = state.chat_members();
    if members.is_empty() {
        body.push_str("<p class=\"meta\">还没有成员。</p>\n");
    } else {
        body.push_str("<ul class=\"members\">\n");
        for (userid, name) in &members {
            let received: Vec<&Value> = state
                .messages
                .iter()
                .filter(|m| received_by(m, userid))
                .collect();
            let waiting = received
                .iter()
                .filter(|m| state.awaits_click(m, userid))
                .count();
            let waiting = if waiting > 0 {
                format!("，<strong>{waiting} 张待处理</strong>")
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<li><a href=\"{CHAT}/{}\">{}</a> <span class=\"meta\">{}</span><br>\
                 <span class=\"meta\">收到 {} 条消息{waiting}</span></li>\n",
                enc(userid),
                esc(name.as_deref().unwrap_or(userid)),
                esc(userid),
                received.len(),
            ));
        }
        body.push_str("</ul>\n");
    }
    drop(state);
    chat_page(StatusCode::OK, "模拟企业微信 · 成员消息", None, &body)
}

#[derive(Debug, serde::Deserialize)]
struct ChatQuery {
    /// The statuses of a click's delivery attempts, after the click's redirect.
    delivered: Option<String>,
}

/// `GET /chat/{userid}`: what the member received, newest first.
async fn chat_member(
    State(shared): State<Arc<Shared>>,
    Path(userid): Path<String>,
    Query(query): Query<ChatQuery>,
) -> Response {
    let state = shared.lock();
    let members = state.chat_members();
    let Some((_, name)) = members.iter().find(|(u, _)| *u == userid) else {
        return chat_error(
            StatusCode::NOT_FOUND,
            "没有这位成员，也没有发给 TA 的消息。",
        );
    };
    let display = name.as_deref().unwrap_or(&userid);
    let mut body = format!(
        "<p><a href=\"{CHAT}\">← 全部成员</a> · <a href=\"{CHAT}/{}\">刷新</a></p>\n\
         <h1>{} <span class=\"meta\">{}</span></h1>\n",
        enc(&userid),
        esc(display),
        esc(&userid)
    );
    if let Some(delivered) = &query.delivered {
        if delivered.split(',').next_back() == Some("200") {
            body.push_str(
                "<p class=\"notice\">已点击：回调已送达 closeloop（HTTP 200）。卡片更新稍后显示。</p>\n",
            );
        } else {
            body.push_str(&format!(
                "<p class=\"notice error\">回调未被接受，各次尝试的 HTTP 状态：{}（0 表示无应答）</p>\n",
                esc(delivered)
            ));
        }
    }
    let received: Vec<(usize, &Value)> = state
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| received_by(m, &userid))
        .collect();
    if received.is_empty() {
        body.push_str("<p class=\"meta\">还没有收到消息。</p>\n");
    }
    for (i, message) in received.into_iter().rev() {
        let at = state.message_times.get(i).copied().unwrap_or_default();
        body.push_str(&message_html(&state, &userid, at, message));
    }
    drop(state);
    let refresh = query
        .delivered
        .as_ref()
        .map(|_| format!("{CHAT}/{}", enc(&userid)));
    chat_page(
        StatusCode::OK,
        &format!("模拟企业微信 · {display}"),
        refresh.as_deref(),
        &body,
    )
}

/// One received message as the member's client would show it.
fn message_html(state: &EmulatorState, userid: &str, at_ms: i64, message: &Value) -> String {
    let when = local_time(at_ms);
    match message["msgtype"].as_str().unwrap_or_default() {
        "template_card" => card_html(state, userid, &when, &message["template_card"]),
        "text" => format!(
            "<section class=\"card\"><p class=\"meta\">{when} · 文本消息</p><p>{}</p></section>\n",
            esc(message["text"]["content"].as_str().unwrap_or_default())
        ),
        other => format!(
            "<section class=\"card\"><p class=\"meta\">{when} · {} 消息（模拟器不显示此类消息）</p></section>\n",
            esc(other)
        ),
    }
}

/// A template card: source, title, description, fields, the card's link, and its buttons
/// as forms that press them — or, once `update_template_card` replaced them, the text
/// they were replaced with.
fn card_html(state: &EmulatorState, userid: &str, when: &str, sent: &Value) -> String {
    let task_id = sent["task_id"].as_str().unwrap_or_default();
    let update = state.last_update(task_id, userid);
    let card = update
        .and_then(|u| u.get("template_card"))
        .filter(|c| c.is_object())
        .unwrap_or(sent);
    let mut out = format!(
        "<section class=\"card\" data-task-id=\"{}\">\n<p class=\"meta\">{} · {when}</p>\n",
        esc(task_id),
        esc(card["source"]["desc"].as_str().unwrap_or("应用消息"))
    );
    out.push_str(&format!(
        "<h2>{}</h2>\n",
        esc(card["main_title"]["title"].as_str().unwrap_or_default())
    ));
    for text in [&card["main_title"]["desc"], &card["sub_title_text"]] {
        if let Some(t) = text.as_str().filter(|t| !t.is_empty()) {
            out.push_str(&format!("<p>{}</p>\n", esc(t)));
        }
    }
    if let Some(fields) = card["horizontal_content_list"]
        .as_array()
        .filter(|f| !f.is_empty())
    {
        out.push_str("<dl>\n");
        for f in fields {
            out.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>\n",
                esc(f["keyname"].as_str().unwrap_or_default()),
                esc(f["value"].as_str().unwrap_or_default())
            ));
        }
        out.push_str("</dl>\n");
    }
    if let Some(url) = card["card_action"]["url"]
        .as_str()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    {
        out.push_str(&format!(
            "<p><a href=\"{}\" target=\"_blank\" rel=\"noopener\">查看详情（点击卡片打开的页面）</a></p>\n",
            esc(url)
        ));
    }
    let replaced = update.and_then(|u| u["button"]["replace_name"].as_str());
    let buttons = card["button_list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(name) = replaced {
        out.push_str(&format!(
            "<div class=\"buttons\"><button type=\"button\" disabled>{}</button></div>\n\
             <p class=\"updated\">卡片已由 closeloop 更新（update_template_card），按钮替换为「{}」</p>\n",
            esc(name),
            esc(name)
        ));
    } else if !buttons.is_empty() {
        out.push_str("<div class=\"buttons\">\n");
        for b in buttons {
            let text = esc(b["text"].as_str().unwrap_or_default());
            let style = b["style"].as_i64().unwrap_or(2);
            match (b["type"].as_i64().unwrap_or(0), b["url"].as_str()) {
                (1, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                    out.push_str(&format!(
                        "<a class=\"linkbutton s{style}\" href=\"{}\" target=\"_blank\" rel=\"noopener\">{text}</a>\n",
                        esc(url)
                    ))
                }
                (1, _) => {}
                _ => out.push_str(&format!(
                    "<form method=\"post\" action=\"{CHAT}/{}/click\">\
                     <input type=\"hidden\" name=\"task_id\" value=\"{}\">\
                     <input type=\"hidden\" name=\"key\" value=\"{}\">\
                     <button type=\"submit\" class=\"s{style}\">{text}</button></form>\n",
                    enc(userid),
                    esc(task_id),
                    esc(b["key"].as_str().unwrap_or_default())
                )),
            }
        }
        out.push_str("</div>\n");
    } else if update.is_some() {
        out.push_str("<p class=\"updated\">卡片已由 closeloop 更新（update_template_card）</p>\n");
    }
    for c in state
        .chat_clicks
        .iter()
        .filter(|c| c.task_id == task_id && c.userid == userid)
    {
        let label = buttons
            .iter()
            .find(|b| b["key"].as_str() == Some(c.key.as_str()))
            .and_then(|b| b["text"].as_str())
            .unwrap_or(&c.key);
        let statuses: Vec<String> = c.statuses.iter().map(u16::to_string).collect();
        out.push_str(&format!(
            "<p class=\"meta\">{} 点击了「{}」，回调 HTTP {}</p>\n",
            local_time(c.at_ms),
            esc(label),
            esc(&statuses.join("、"))
        ));
    }
    out.push_str("</section>\n");
    out
}

/// `POST /chat/{userid}/click` (form: `task_id`, `key`): the member presses a card's
/// button. WeCom then calls the app back with a `template_card_event` carrying the key, the
/// card's task id and a fresh one-shot response code for updating the card — signed and
/// encrypted, retried as WeCom retries. Back to the member's page afterwards.
async fn chat_click(
    State(shared): State<Arc<Shared>>,
    Path(userid): Path<String>,
    body: Bytes,
) -> Response {
    let (Some(task_id), Some(key)) = (form_value(&body, "task_id"), form_value(&body, "key"))
    else {
        return chat_error(StatusCode::BAD_REQUEST, "缺少 task_id 或 key。");
    };
    let (target, agent_id, plain) = {
        let mut state = shared.lock();
        let Some(target) = state.callback.clone() else {
            return chat_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "模拟器还不知道应用的回调地址（set_callback_target），无法回调。",
            );
        };
        let Some(message) = state
            .messages
            .iter()
            .rev()
            .find(|m| m["template_card"]["task_id"] == task_id.as_str() && received_by(m, &userid))
            .cloned()
        else {
            return chat_error(StatusCode::NOT_FOUND, "该成员没有收到这张卡片。");
        };
        let card = &message["template_card"];
        let pressable = card["button_list"].as_array().is_some_and(|buttons| {
            buttons
                .iter()
                .any(|b| b["key"] == key.as_str() && b["type"].as_i64().unwrap_or(0) == 0)
        });
        if !pressable {
            return chat_error(StatusCode::BAD_REQUEST, "这张卡片上没有这个按钮。");
        }
        if state.last_update(&task_id, &userid).is_some() {
            return chat_error(StatusCode::CONFLICT, "卡片已更新，按钮不能再点击。");
        }
        let code = format!("emulated-rc-{}", uuid::Uuid::new_v4().simple());
        state.response_codes.insert(code.clone());
        state.code_tasks.insert(code.clone(), task_id.clone());
        let agent_id =
            json_text(&message["agentid"]).unwrap_or_else(|| DEFAULT_AGENT_ID.to_string());
        let plain = format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName>\
             <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[template_card_event]]></Event><EventKey>{}</EventKey>\
             <TaskId>{}</TaskId><CardType>{}</CardType><ResponseCode>{}</ResponseCode>\
             <AgentID>{}</AgentID></xml>",
            cdata(&shared.corp_id),
            cdata(&userid),
            chrono::Utc::now().timestamp(),
            cdata(&key),
            cdata(&task_id),
            cdata(card["card_type"].as_str().unwrap_or("button_interaction")),
            cdata(&code),
            esc(&agent_id),
        );
        (target, agent_id, plain)
    };
    let statuses = post_callback(&shared.corp_id, &agent_id, &target, &plain).await;
    let delivered: Vec<String> = statuses.iter().map(u16::to_string).collect();
    shared.lock().chat_clicks.push(ChatClick {
        at_ms: chrono::Utc::now().timestamp_millis(),
        userid: userid.clone(),
        task_id,
        key,
        statuses,
    });
    (
        StatusCode::SEE_OTHER,
        [(
            axum::http::header::LOCATION,
            format!("{CHAT}/{}?delivered={}", enc(&userid), delivered.join(",")),
        )],
    )
        .into_response()
}
