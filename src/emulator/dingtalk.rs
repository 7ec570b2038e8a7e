//! A local DingTalk server speaking the documented protocol (docs/protocols/dingtalk.md): tests
//! point closeloop at it (`dingtalk.api_base` and `dingtalk.oapi_base` both name it), and the demo
//! can run it in place of api.dingtalk.com / oapi.dingtalk.com. It issues and checks access tokens
//! for the new and the old API, accepts interactive cards, records what it is sent, fails on
//! request (5xx, timeouts, error codes), and pushes events to closeloop signed and encrypted as
//! DingTalk does, checking the encrypted `success` answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::platform::crypto::{random_nonce, EncodingAesKey};
use crate::platform::dingtalk::crypto::DingtalkCrypto;

/// New API (api.dingtalk.com).
pub const ACCESS_TOKEN: &str = "/v1.0/oauth2/accessToken";
pub const CARD_CREATE_AND_DELIVER: &str = "/v1.0/card/instances/createAndDeliver";
pub const CARD_INSTANCES: &str = "/v1.0/card/instances";
/// Old API (oapi.dingtalk.com).
pub const GETTOKEN: &str = "/gettoken";
pub const DEPARTMENT_LISTSUB: &str = "/topapi/v2/department/listsub";
pub const USER_LIST: &str = "/topapi/v2/user/list";
pub const USER_GET: &str = "/topapi/v2/user/get";
pub const JSAPI_TICKETS: &str = "/v1.0/oauth2/jsapiTickets";
pub const GETUSERINFO: &str = "/topapi/v2/user/getuserinfo";
pub const EXTCONTACT_LIST: &str = "/topapi/extcontact/list";
pub const EXTCONTACT_GET: &str = "/topapi/extcontact/get";
const TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// The header the new API takes its access token in.
pub const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

/// A fault the emulator injects instead of answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 500 with a non-JSON body, as a failing gateway answers.
    Http5xx,
    /// Answers only after [`Emulator::set_timeout_delay`] (default 30 s).
    Timeout,
    /// The error code: old-API paths answer HTTP 200 `{"errcode":…}`; new-API paths answer
    /// HTTP 400 `{"code":…,"message":…}` (401 `InvalidAuthentication` for the token codes).
    Errcode(i64),
    /// The per-IP ban (docs/protocols/dingtalk.md#access-tokens-and-limits): HTTP 200 with the
    /// gateway's non-standard JSON `{"status":1111,"wait":5,…}`, no errcode.
    IpBanned,
}

/// A running DingTalk emulator on `127.0.0.1`; stops when dropped.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    app_key: String,
    app_secret: String,
    state: Mutex<EmulatorState>,
}

#[derive(Default)]
struct EmulatorState {
    tokens: HashMap<String, IssuedToken>,
    /// The live token: DingTalk returns the same token while it is valid.
    current: Option<String>,
    token_calls: usize,
    injected: super::kit::Injected<Failure>,
    /// Bodies of accepted `createAndDeliver` calls, oldest first.
    cards: Vec<Value>,
    /// Members whose robot chat refuses cards (`deliverResults[].success` false).
    undeliverable: Vec<String>,
    /// Bodies of accepted `PUT /v1.0/card/instances` calls, oldest first.
    card_updates: Vec<Value>,
    /// Every event push attempt: (event JSON, HTTP status, whether the answer was the
    /// correctly encrypted and signed `success`).
    pushes: Vec<PushAttempt>,
    /// Address book: `listsub` entries (`dept_id`, `name`, `parent_id`) and users
    /// (`userid`, `name`, `dept_id_list`, `manager_userid`, `active`).
    departments: Vec<Value>,
    users: Vec<Value>,
    /// 免登 codes not yet used → userid.
    auth_codes: HashMap<String, String>,
    /// The live jsapi ticket.
    jsapi_ticket: Option<String>,
    /// Video conferences (see [`Emulator::set_conferences`]).
    conferences: Vec<Value>,
    /// The organisation's external-contact book (外部联系人), in listing order.
    ext_contacts: Vec<Value>,
    /// `extcontact/list` requests received: (offset, size).
    ext_list_calls: Vec<(u64, u64)>,
}

/// One attempt to push an event to closeloop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAttempt {
    pub event: String,
    /// 0 when no answer came.
    pub status: u16,
    pub success_reply: bool,
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

/// closeloop's `/callback/dingtalk` as configured in the developer console: the URL, the
/// token, the aes_key, and the owner key (AppKey for an app-level subscription, CorpId for
/// an enterprise-level one).
#[derive(Clone)]
pub struct PushTarget {
    pub url: String,
    pub token: String,
    pub aes_key: String,
    pub owner_key: String,
}

impl Emulator {
    /// Starts serving on `127.0.0.1:0` for one app with these credentials.
    pub async fn start(app_key: impl Into<String>, app_secret: impl Into<String>) -> Self {
        let state = Arc::new(Shared {
            app_key: app_key.into(),
            app_secret: app_secret.into(),
            state: Mutex::new(EmulatorState::default()),
        });
        let router = Router::new()
            .route(ACCESS_TOKEN, post(access_token))
            .route(GETTOKEN, get(gettoken))
            .route(CARD_CREATE_AND_DELIVER, post(card_create))
            .route(CARD_INSTANCES, axum::routing::put(card_update))
            .route(DEPARTMENT_LISTSUB, post(department_listsub))
            .route(USER_LIST, post(user_list))
            .route(USER_GET, post(user_get))
            .route(JSAPI_TICKETS, post(jsapi_tickets))
            .route(GETUSERINFO, post(getuserinfo))
            .route(EXTCONTACT_LIST, post(extcontact_list))
            .route(EXTCONTACT_GET, post(extcontact_get))
            .merge(conference_routes())
            .with_state(state.clone());
        let (addr, server) = super::kit::serve(router, "DingTalk").await;
        Emulator {
            addr,
            state,
            server,
        }
    }

    /// What to configure as `dingtalk.api_base` and `dingtalk.oapi_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Token requests answered, both APIs together.
    pub fn token_calls(&self) -> usize {
        self.state.lock().token_calls
    }

    /// Makes every token issued so far invalid (new API 401 `InvalidAuthentication`, old
    /// API 42001); the next token request issues a new one.
    pub fn expire_tokens(&self) {
        let mut state = self.state.lock();
        for token in state.tokens.values_mut() {
            token.invalidated = true;
        }
        state.current = None;
    }

    /// The next `n` requests to `path` (e.g. [`CARD_CREATE_AND_DELIVER`]) fail with `failure`.
    pub fn fail_next(&self, path: &str, n: usize, failure: Failure) {
        self.state.lock().injected.push(path, n, failure);
    }

    /// How long a [`Failure::Timeout`] keeps the client waiting.
    pub fn set_timeout_delay(&self, delay: Duration) {
        self.state.lock().injected.set_timeout(delay);
    }

    /// Cards to `userid` are refused per space (`deliverResults[].success` false), as for
    /// a member outside the robot's visible range.
    pub fn refuse_cards_to(&self, userid: &str) {
        self.state.lock().undeliverable.push(userid.to_string());
    }

    /// Accepted `createAndDeliver` bodies, oldest first.
    pub fn cards(&self) -> Vec<Value> {
        self.state.lock().cards.clone()
    }

    /// Accepted card update bodies, oldest first.
    pub fn card_updates(&self) -> Vec<Value> {
        self.state.lock().card_updates.clone()
    }

    /// Sets the address book: departments (`dept_id`, `name`, `parent_id`) and users
    /// (`userid`, `name`, `dept_id_list`, `manager_userid`, `active`).
    pub fn set_directory(&self, departments: Vec<Value>, users: Vec<Value>) {
        let mut state = self.state.lock();
        state.departments = departments;
        state.users = users;
    }

    /// Sets the external-contact book: contacts with `userid`, `name`, `mobile`,
    /// `state_code`, `company_name`, `title`, `follower_user_id`, `share_user_ids`.
    pub fn set_ext_contacts(&self, contacts: Vec<Value>) {
        self.state.lock().ext_contacts = contacts;
    }

    /// The `extcontact/list` pages asked for: (offset, size), in order.
    pub fn ext_list_calls(&self) -> Vec<(u64, u64)> {
        self.state.lock().ext_list_calls.clone()
    }

    /// Issues a 免登 code for `userid`, as `dd.runtime.permission.requestAuthCode` would
    /// in the member's client; it can be exchanged once.
    pub fn issue_auth_code(&self, userid: &str) -> String {
        let code = format!("emulated-code-{}", uuid::Uuid::new_v4().simple());
        self.state
            .lock()
            .auth_codes
            .insert(code.clone(), userid.to_string());
        code
    }

    /// The jsapi ticket handed out, if any.
    pub fn jsapi_ticket(&self) -> Option<String> {
        self.state.lock().jsapi_ticket.clone()
    }

    /// Presses `action` on the card `out_track_id` as `user_id`, the way DingTalk calls a
    /// registered HTTP card callback: the `actionCallback` JSON, signed with `api_secret`
    /// over the current millisecond timestamp. Returns the HTTP status (0: no answer).
    pub async fn press_card_button(
        &self,
        callback_url: &str,
        api_secret: &str,
        out_track_id: &str,
        user_id: &str,
        action: &str,
    ) -> u16 {
        self.press_card_button_answer(callback_url, api_secret, out_track_id, user_id, action)
            .await
            .0
    }

    /// As `press_card_button`, also returning the answer's JSON (the card's new variables,
    /// which DingTalk applies at once; `Null` when there is none).
    pub async fn press_card_button_answer(
        &self,
        callback_url: &str,
        api_secret: &str,
        out_track_id: &str,
        user_id: &str,
        action: &str,
    ) -> (u16, Value) {
        let now = chrono::Utc::now().timestamp_millis();
        self.press_card_button_at(now, callback_url, api_secret, out_track_id, user_id, action)
            .await
    }

    /// As `press_card_button_answer`, signed at `timestamp_ms` — DingTalk's clock, for a
    /// test whose server runs on a clock of its own.
    pub async fn press_card_button_at(
        &self,
        timestamp_ms: i64,
        callback_url: &str,
        api_secret: &str,
        out_track_id: &str,
        user_id: &str,
        action: &str,
    ) -> (u16, Value) {
        let content =
            json!({"cardPrivateData": {"actionIds": [action], "params": {"action": action}}});
        let body = json!({
            "type": "actionCallback",
            "outTrackId": out_track_id,
            "userId": user_id,
            "content": content.to_string(),
        });
        let ts = timestamp_ms.to_string();
        let Ok(res) = reqwest::Client::new()
            .post(callback_url)
            .header(
                "x-ddpaas-signature",
                crate::platform::dingtalk::inbound::card_signature(api_secret, &ts),
            )
            .header("x-ddpaas-signature-timestamp", &ts)
            .json(&body)
            .send()
            .await
        else {
            return (0, Value::Null);
        };
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Every push attempt so far, oldest first.
    pub fn pushes(&self) -> Vec<PushAttempt> {
        self.state.lock().pushes.clone()
    }

    /// Pushes `event` (the plaintext JSON) to closeloop as DingTalk does: encrypted for the
    /// target's owner key, signed with a millisecond timestamp and a fresh nonce, body
    /// `{"encrypt":…}`. An answer that is not a 200 carrying the encrypted, correctly signed
    /// `success` within 1.5 s counts as failed and is retried, three times at most, each
    /// retry freshly encrypted (DingTalk's own retry schedule is not documented). Returns
    /// the attempts made.
    pub async fn push_event(&self, target: &PushTarget, event: &str) -> Vec<PushAttempt> {
        let Ok(key) = EncodingAesKey::parse(&target.aes_key) else {
            return Vec::new();
        };
        let crypto = DingtalkCrypto::new(&target.token, key, target.owner_key.clone());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(1500))
            .build()
            .expect("a plain HTTP client builds");
        let mut attempts = Vec::new();
        for _ in 0..4 {
            let ts = chrono::Utc::now().timestamp_millis().to_string();
            let nonce = random_nonce();
            let encrypted = crypto.encrypt_random(event);
            let signature = crypto.signature(&ts, &nonce, &encrypted);
            let answer = client
                .post(&target.url)
                .query(&[
                    ("signature", signature.as_str()),
                    ("timestamp", ts.as_str()),
                    ("nonce", nonce.as_str()),
                ])
                .json(&json!({ "encrypt": encrypted }))
                .send()
                .await;
            let (status, success_reply) = match answer {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let body = res.bytes().await.unwrap_or_default();
                    (status, status == 200 && crypto.is_success_reply(&body))
                }
                Err(_) => (0, false),
            };
            let attempt = PushAttempt {
                event: event.to_string(),
                status,
                success_reply,
            };
            self.state.lock().pushes.push(attempt.clone());
            attempts.push(attempt);
            if success_reply {
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the next injected failure for `path` and acts it out.
    async fn injected(&self, path: &str) -> Option<Response> {
        let (failure, delay) = self.lock().injected.pop(path)?;
        let new_api = path.starts_with("/v1.0/");
        Some(match failure {
            Failure::Http5xx => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
            }
            Failure::Timeout => {
                tokio::time::sleep(delay).await;
                (StatusCode::GATEWAY_TIMEOUT, "timeout").into_response()
            }
            Failure::Errcode(code) if new_api => match code {
                40014 | 42001 | 41001 => invalid_authentication(),
                _ => new_api_error(StatusCode::BAD_REQUEST, &code.to_string(), errmsg_for(code)),
            },
            Failure::Errcode(code) => errcode(code),
            Failure::IpBanned => Json(json!({
                "status": 1111, "wait": 5, "source": "x5", "punish": "deny",
                "uuid": uuid::Uuid::new_v4().simple().to_string(),
            }))
            .into_response(),
        })
    }

    /// Issues (or renews) the app's token: the same token while it is valid.
    fn issue(&self) -> (String, u64) {
        let mut state = self.lock();
        state.token_calls += 1;
        let live = state
            .current
            .clone()
            .filter(|t| state.tokens.get(t).is_some_and(|t| !t.expired()));
        let token = live.unwrap_or_else(|| {
            let token = format!("dt-{}", uuid::Uuid::new_v4().simple());
            state.tokens.insert(
                token.clone(),
                IssuedToken {
                    issued: Instant::now(),
                    invalidated: false,
                },
            );
            state.current = Some(token.clone());
            token
        });
        // "有效期内重复获取会返回相同结果并自动续期": a repeat request renews it.
        if let Some(t) = state.tokens.get_mut(&token) {
            t.issued = Instant::now();
        }
        (token, TOKEN_LIFETIME.as_secs())
    }

    /// The old API's check of `access_token`: 41001 missing, 40014 unknown, 42001 expired.
    fn check_old_token(&self, token: Option<&str>) -> Result<(), i64> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(41001);
        };
        match self.lock().tokens.get(token) {
            None => Err(40014),
            Some(t) if t.expired() => Err(42001),
            Some(_) => Ok(()),
        }
    }

    /// The new API's check of the `x-acs-dingtalk-access-token` header.
    fn new_token_valid(&self, headers: &HeaderMap) -> bool {
        let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        self.check_old_token(token).is_ok()
    }
}

fn errcode(code: i64) -> Response {
    Json(json!({ "errcode": code, "errmsg": errmsg_for(code) })).into_response()
}

fn new_api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let requestid = uuid::Uuid::new_v4().simple().to_string();
    (
        status,
        Json(json!({ "code": code, "message": message, "requestid": requestid })),
    )
        .into_response()
}

fn invalid_authentication() -> Response {
    new_api_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthentication",
        "不合法的access_token",
    )
}

fn errmsg_for(code: i64) -> &'static str {
    match code {
        40014 => "不合法的access_token",
        41001 => "缺少access_token参数",
        42001 => "access_token超时",
        40089 => "不合法的corpid或corpsecret",
        90002 => "服务器繁忙",
        40035 => "不合法的参数",
        60121 => "找不到该用户",
        40078 => "不存在的临时授权码",
        _ => "emulated error",
    }
}

/// `POST /v1.0/oauth2/accessToken {appKey, appSecret}` → `{accessToken, expireIn}`.
async fn access_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if let Some(failure) = shared.injected(ACCESS_TOKEN).await {
        return failure;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body["appKey"].as_str() != Some(shared.app_key.as_str())
        || body["appSecret"].as_str() != Some(shared.app_secret.as_str())
    {
        shared.lock().token_calls += 1;
        // The exact code for wrong credentials is not documented
        // (docs/protocols/dingtalk.md#unverified); a 400 is what counts.
        return new_api_error(
            StatusCode::BAD_REQUEST,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        );
    }
    let (token, expire_in) = shared.issue();
    Json(json!({ "accessToken": token, "expireIn": expire_in })).into_response()
}

/// `GET /gettoken?appkey=&appsecret=` → `{errcode:0, access_token, expires_in}`.
async fn gettoken(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = shared.injected(GETTOKEN).await {
        return failure;
    }
    if query.get("appkey") != Some(&shared.app_key)
        || query.get("appsecret") != Some(&shared.app_secret)
    {
        shared.lock().token_calls += 1;
        return errcode(40089);
    }
    let (token, expires_in) = shared.issue();
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "access_token": token,
        "expires_in": expires_in,
    }))
    .into_response()
}

/// `POST /v1.0/card/instances/createAndDeliver`: needs a template id and an `outTrackId`.
async fn card_create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.injected(CARD_CREATE_AND_DELIVER).await {
        return failure;
    }
    if !shared.new_token_valid(&headers) {
        return invalid_authentication();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return new_api_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "body is not JSON",
        );
    };
    let missing = ["cardTemplateId", "outTrackId", "openSpaceId"]
        .into_iter()
        .find(|k| body[*k].as_str().is_none_or(str::is_empty));
    if let Some(k) = missing {
        return new_api_error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            &format!("{k} is mandatory"),
        );
    }
    if let Err(problem) = check_card(&body) {
        return new_api_error(StatusCode::BAD_REQUEST, "InvalidParameter", &problem);
    }
    let out_track_id = body["outTrackId"].as_str().unwrap_or_default().to_string();
    let space = body["openSpaceId"].as_str().unwrap_or_default().to_string();
    let mut state = shared.lock();
    let refused = state
        .undeliverable
        .iter()
        .any(|u| space.ends_with(&format!(".{u}")));
    if refused {
        return Json(json!({
            "success": true,
            "result": {"outTrackId": out_track_id, "deliverResults": [
                {"spaceType": "IM_ROBOT", "spaceId": space, "success": false,
                 "errorMsg": "user not in the robot's visible range"}]}
        }))
        .into_response();
    }
    state.cards.push(body);
    Json(json!({
        "success": true,
        "result": {"outTrackId": out_track_id, "deliverResults": [
            {"spaceType": "IM_ROBOT", "spaceId": space, "success": true}]}
    }))
    .into_response()
}

/// What the `createAndDeliver` documentation requires beyond the ids
/// (`docs/protocols/dingtalk.md`): every `cardParamMap` value is a string, HTTP callbacks
/// name their route key, and a robot chat space comes with the robot that delivers to it.
fn check_card(body: &Value) -> Result<(), String> {
    let params = body["cardData"]["cardParamMap"]
        .as_object()
        .ok_or("cardData.cardParamMap is mandatory")?;
    if let Some((k, _)) = params.iter().find(|(_, v)| !v.is_string()) {
        return Err(format!("cardParamMap.{k} must be a string"));
    }
    if body["callbackType"] == "HTTP" && body["callbackRouteKey"].as_str().is_none_or(str::is_empty)
    {
        return Err("callbackRouteKey is mandatory when callbackType is HTTP".into());
    }
    let space = body["openSpaceId"].as_str().unwrap_or_default();
    if space.contains("IM_ROBOT.")
        && (body["imRobotOpenDeliverModel"]["spaceType"] != "IM_ROBOT"
            || body["imRobotOpenDeliverModel"]["robotCode"]
                .as_str()
                .is_none_or(str::is_empty))
    {
        return Err(
            "imRobotOpenDeliverModel with spaceType IM_ROBOT and robotCode is mandatory".into(),
        );
    }
    Ok(())
}

/// `PUT /v1.0/card/instances`: updates a card delivered before, by `outTrackId`.
async fn card_update(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(failure) = shared.injected(CARD_INSTANCES).await {
        return failure;
    }
    if !shared.new_token_valid(&headers) {
        return invalid_authentication();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return new_api_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "body is not JSON",
        );
    };
    let mut state = shared.lock();
    let known = state
        .cards
        .iter()
        .any(|c| c["outTrackId"] == body["outTrackId"]);
    if !known {
        return new_api_error(
            StatusCode::BAD_REQUEST,
            "param.outTrackIdNotExist",
            "card not found",
        );
    }
    state.card_updates.push(body);
    Json(json!({ "success": true, "result": true })).into_response()
}

/// The old API's request checks: injected failure, then `access_token`, then a JSON body.
async fn oapi_request(
    shared: &Shared,
    path: &str,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Value, Response> {
    if let Some(failure) = shared.injected(path).await {
        return Err(failure);
    }
    shared
        .check_old_token(query.get("access_token").map(String::as_str))
        .map_err(errcode)?;
    serde_json::from_slice(body).map_err(|_| errcode(40035))
}

/// `topapi/v2/department/listsub {dept_id}`: the direct children of a department.
async fn department_listsub(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = match oapi_request(&shared, DEPARTMENT_LISTSUB, &query, &body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parent = body["dept_id"].as_i64().unwrap_or(1);
    let children: Vec<Value> = shared
        .lock()
        .departments
        .iter()
        .filter(|d| d["parent_id"].as_i64() == Some(parent))
        .cloned()
        .collect();
    Json(json!({"errcode": 0, "errmsg": "ok", "result": children})).into_response()
}

/// `topapi/v2/user/list {dept_id, cursor, size}`: one page of a department's members.
async fn user_list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = match oapi_request(&shared, USER_LIST, &query, &body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let dept = body["dept_id"].as_i64().unwrap_or(1);
    let cursor = body["cursor"].as_u64().unwrap_or(0) as usize;
    let size = body["size"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let all: Vec<Value> = shared
        .lock()
        .users
        .iter()
        .filter(|u| {
            u["dept_id_list"]
                .as_array()
                .is_some_and(|l| l.iter().any(|d| d.as_i64() == Some(dept)))
        })
        .cloned()
        .collect();
    let page: Vec<Value> = all.iter().skip(cursor).take(size).cloned().collect();
    let next = cursor + page.len();
    let has_more = next < all.len();
    let mut result = json!({"has_more": has_more, "list": page});
    if has_more {
        result["next_cursor"] = json!(next);
    }
    Json(json!({"errcode": 0, "errmsg": "ok", "result": result})).into_response()
}

/// `topapi/v2/user/get {userid}`: one member; 60121 when there is none.
async fn user_get(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = match oapi_request(&shared, USER_GET, &query, &body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let found = shared
        .lock()
        .users
        .iter()
        .find(|u| u["userid"] == body["userid"])
        .cloned();
    match found {
        Some(user) => Json(json!({"errcode": 0, "errmsg": "ok", "result": user})).into_response(),
        None => errcode(60121),
    }
}

/// `topapi/extcontact/list {offset, size}` → `results`: one page of the external-contact
/// book. `size` is at most 100 (a larger or missing one is refused as an invalid
/// parameter here; what DingTalk answers then is not documented). No cursor: the page is
/// short at the end.
async fn extcontact_list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = match oapi_request(&shared, EXTCONTACT_LIST, &query, &body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let offset = body["offset"].as_u64().unwrap_or(0);
    let Some(size) = body["size"].as_u64().filter(|s| (1..=100).contains(s)) else {
        return errcode(40035);
    };
    let mut state = shared.lock();
    state.ext_list_calls.push((offset, size));
    let page: Vec<Value> = state
        .ext_contacts
        .iter()
        .skip(offset as usize)
        .take(size as usize)
        .cloned()
        .collect();
    Json(json!({"errcode": 0, "errmsg": "ok", "results": page})).into_response()
}

/// `topapi/extcontact/get {user_id}` → `result`: one contact; 40035 when there is none
/// (the code DingTalk gives for an unknown contact is not documented).
async fn extcontact_get(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = match oapi_request(&shared, EXTCONTACT_GET, &query, &body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let found = shared
        .lock()
        .ext_contacts
        .iter()
        .find(|c| c["userid"] == body["user_id"])
        .cloned();
    match found {
        Some(c) => Json(json!({"errcode": 0, "errmsg": "ok", "result": c})).into_response(),
        None => errcode(40035),
    }
}

/// `POST /v1.0/oauth2/jsapiTickets` → `{jsapiTicket, expireIn}`: the same ticket while live.
async fn jsapi_tickets(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(failure) = shared.injected(JSAPI_TICKETS).await {
        return failure;
    }
    if !shared.new_token_valid(&headers) {
        return invalid_authentication();
    }
    let mut state = shared.lock();
    let ticket = state
        .jsapi_ticket
        .get_or_insert_with(|| format!("ticket-{}", uuid::Uuid::new_v4().simple()))
        .clone();
    Json(json!({"jsapiTicket": ticket, "expireIn": 7200})).into_response()
}

/// `POST topapi/v2/user/getuserinfo {code}`: a 免登 code, once; 40078 for an unknown or
/// used code.
async fn getuserinfo(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = match oapi_request(&shared, GETUSERINFO, &query, &body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let code = body["code"].as_str().unwrap_or_default();
    match shared.lock().auth_codes.remove(code) {
        Some(userid) => Json(json!({
            "errcode": 0, "errmsg": "ok",
            "result": {"userid": userid, "unionid": format!("union-{userid}"), "sys_level": 0}
        }))
        .into_response(),
        None => errcode(40078),
    }
}

// ---------------------------------------------------------------------------------------
// Video conferences (meeting records, issue 7): `orgConferences` (conferences in
// progress), one conference's info and members, and unionId → userid. Failures injected
// with `fail_next` apply under the route patterns below.
// ---------------------------------------------------------------------------------------

pub const ORG_CONFERENCES: &str = "/v1.0/conference/orgConferences";
pub const CONFERENCE_INFO: &str = "/v1.0/conference/videoConferences/{conferenceId}";
pub const CONFERENCE_MEMBERS: &str = "/v1.0/conference/videoConferences/{conferenceId}/members";
pub const GETBYUNIONID: &str = "/topapi/user/getbyunionid";

fn conference_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(ORG_CONFERENCES, get(org_conferences))
        .route(CONFERENCE_INFO, get(conference_info))
        .route(CONFERENCE_MEMBERS, get(conference_members))
        .route(GETBYUNIONID, post(getbyunionid))
}

impl Emulator {
    /// Sets the organisation's conferences: `confInfo` fields (`conferenceId`, `title`,
    /// `status` 2 running / 1 ended, `startTime`, `endTime`, `creatorId`, `bizType`) plus
    /// `members`, the `memberModels` entries (`unionId`, `userNick`, `joinTime`,
    /// `leaveTime`, `duration` in ms, `attendStatus`, `outerOrgMember`, `pstnJoin`).
    /// Directory users (see [`Emulator::set_directory`]) with a `unionid` are found by
    /// `getbyunionid`.
    pub fn set_conferences(&self, conferences: Vec<Value>) {
        self.state.lock().conferences = conferences;
    }
}

/// One page by the numeric cursor `nextToken` (an offset) and `maxResults`.
fn conference_page(
    items: &[Value],
    query: &HashMap<String, String>,
    default_size: usize,
) -> (Vec<Value>, Option<String>) {
    let size = query
        .get("maxResults")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default_size);
    let start = query
        .get("nextToken")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0)
        .min(items.len());
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    (items[start..end].to_vec(), next)
}

/// A new-API request's checks: injected failure first, then the token header.
async fn conference_request(shared: &Shared, path: &str, headers: &HeaderMap) -> Option<Response> {
    if let Some(failure) = shared.injected(path).await {
        return Some(failure);
    }
    (!shared.new_token_valid(headers)).then(invalid_authentication)
}

fn conference_not_found() -> Response {
    new_api_error(StatusCode::NOT_FOUND, "roomNotFound", "ROOM NOT FOUND")
}

/// `GET /v1.0/conference/orgConferences?nextToken=&maxResults=`: running conferences only.
async fn org_conferences(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = conference_request(&shared, ORG_CONFERENCES, &headers).await {
        return r;
    }
    let running: Vec<Value> = shared
        .lock()
        .conferences
        .iter()
        .filter(|c| c["status"].as_i64() == Some(2))
        .map(|c| {
            let mut c = c.clone();
            if let Some(o) = c.as_object_mut() {
                o.remove("members");
            }
            c
        })
        .collect();
    let (page, next) = conference_page(&running, &query, 20);
    let mut answer = json!({
        "totalCount": running.len(),
        "hasMore": next.is_some(),
        "onGoingConfList": page,
    });
    if let Some(next) = next {
        answer["nextToken"] = Value::String(next);
    }
    Json(answer).into_response()
}

fn find_conference(shared: &Shared, id: &str) -> Option<Value> {
    shared
        .lock()
        .conferences
        .iter()
        .find(|c| c["conferenceId"].as_str() == Some(id))
        .cloned()
}

/// `GET /v1.0/conference/videoConferences/{conferenceId}` → `{confInfo}`; `endTime` only
/// once the conference has ended.
async fn conference_info(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = conference_request(&shared, CONFERENCE_INFO, &headers).await {
        return r;
    }
    let Some(mut info) = find_conference(&shared, &id) else {
        return conference_not_found();
    };
    let attended = info["members"].as_array().map_or(0, Vec::len);
    if let Some(o) = info.as_object_mut() {
        o.remove("members");
        o.insert("attendNum".into(), json!(attended));
        if o.get("status").and_then(Value::as_i64) != Some(1) {
            o.remove("endTime");
        }
    }
    Json(json!({ "confInfo": info })).into_response()
}

/// `GET /v1.0/conference/videoConferences/{conferenceId}/members?nextToken=&maxResults=`.
async fn conference_members(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = conference_request(&shared, CONFERENCE_MEMBERS, &headers).await {
        return r;
    }
    let Some(conference) = find_conference(&shared, &id) else {
        return conference_not_found();
    };
    let members: Vec<Value> = conference["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut m| {
            m["conferenceId"] = Value::String(id.clone());
            m
        })
        .collect();
    let (page, next) = conference_page(&members, &query, 128);
    let mut answer = json!({ "memberModels": page, "totalCount": members.len() });
    if let Some(next) = next {
        answer["nextToken"] = Value::String(next);
    }
    Json(answer).into_response()
}

/// `POST /topapi/user/getbyunionid {unionid}` → `result {contact_type, userid}`; 60121 for
/// a unionId of nobody in the directory.
async fn getbyunionid(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = match oapi_request(&shared, GETBYUNIONID, &query, &body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let found = shared
        .lock()
        .users
        .iter()
        .find(|u| u["unionid"].is_string() && u["unionid"] == body["unionid"])
        .and_then(|u| u["userid"].as_str().map(str::to_string));
    match found {
        Some(userid) => Json(json!({
            "errcode": 0, "errmsg": "ok",
            "result": {"contact_type": 0, "userid": userid},
            "request_id": uuid::Uuid::new_v4().simple().to_string(),
        }))
        .into_response(),
        None => errcode(60121),
    }
}

#[cfg(test)]
mod card_tests {
    use super::*;

    #[test]
    fn cards_missing_what_dingtalk_requires_are_refused() {
        let good = json!({
            "cardTemplateId": "t.schema", "outTrackId": "c1", "callbackType": "HTTP",
            "callbackRouteKey": "closeloop", "openSpaceId": "dtv1.card//IM_ROBOT.u1",
            "cardData": {"cardParamMap": {"title": "提醒", "buttons": "[]"}},
            "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT", "robotCode": "ding1"},
        });
        assert!(check_card(&good).is_ok());
        let broken = |path: &[&str], value: Value| {
            let mut b = good.clone();
            let mut cur = &mut b;
            for p in &path[..path.len() - 1] {
                cur = &mut cur[*p];
            }
            cur[path[path.len() - 1]] = value;
            check_card(&b)
        };
        assert!(broken(&["cardData", "cardParamMap", "buttons"], json!([])).is_err());
        assert!(broken(&["callbackRouteKey"], Value::Null).is_err());
        assert!(broken(&["imRobotOpenDeliverModel", "robotCode"], json!("")).is_err());
        assert!(broken(&["cardData"], json!({})).is_err());
    }
}
