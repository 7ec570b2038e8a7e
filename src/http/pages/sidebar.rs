//! The sidebar page shown in the chat toolbar (聊天工具栏) next to a customer's chat:
//! server-rendered, mobile-first, in Simplified Chinese, with its CSS and JavaScript
//! embedded in the binary (no build step, no CDN). Inside WeCom the page loads the
//! platform's JS-SDK at run time to learn which customer the chat is with; inside DingTalk
//! (H5 微应用) and Feishu (网页应用), which name no open chat, it lists the rep's
//! customers and loads that platform's SDK for the page's own use. One tap on an
//! action button records a tracking point through the ledger, where the anti-fraud rules
//! apply; a quick-ask or handoff opens its request form (src/http/pages/collab.rs); sending a
//! proposal, attesting a claim, contact validity and the manager's tools live in
//! src/http/pages/sidebar_tools.rs. `closeloop demo` adds a development sign-in that lists
//! sample users.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::access::Actor;
use crate::access_log::{AccessEntry, Object, Purpose};
use crate::antifraud;
use crate::chat::event::Platform;
use crate::customers;
use crate::error::{Error, Result};
use crate::gates::{self, Mover};
use crate::http::pages::session::{self, Session};
use crate::http::pages::sidebar_tools as tools;
use crate::http::{ApiJson, ApiQuery, AppState, ClientIp};
use crate::rules::{ActionKind, RuleSet};
use crate::tracking::{NewPoint, Recorded, Source};

const CSS: &str = include_str!("../../../assets/sidebar.css");
const JS: &str = include_str!("../../../assets/sidebar.js");
/// The collaboration pages' script (src/http/pages/collab.rs), loaded after `sidebar.js`.
const COLLAB_JS: &str = include_str!("../../../assets/collab.js");
/// The customer page's tools (src/http/pages/sidebar_tools.rs), loaded after `sidebar.js`.
const TOOLS_JS: &str = include_str!("../../../assets/tools.js");

/// A short hash of the embedded assets: changed assets get new URLs, so browsers may keep
/// them for a year without ever running a stale script.
static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    h.update(CSS.as_bytes());
    h.update(JS.as_bytes());
    h.update(COLLAB_JS.as_bytes());
    h.update(TOOLS_JS.as_bytes());
    hex::encode(h.finalize())[..12].to_string()
});

/// Longest user agent kept on a tracking point.
const MAX_USER_AGENT: usize = 512;
/// Touches listed on a customer's page.
const RECENT_TOUCHES: i64 = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sidebar", get(entry))
        .route("/sidebar/customers/{id}", get(customer_page))
        .route("/web/customers/{id}/actions", post(record_action))
        .route("/web/deals/{id}/advance", post(advance_deal))
        .route("/auth/dev", get(dev_page).post(dev_sign_in))
        .route("/assets/{version}/{file}", get(asset))
}

fn asset_url(file: &str) -> String {
    format!("/assets/{}/{file}", *ASSET_VERSION)
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Result<Response> {
    let (body, content_type) = match file.as_str() {
        "sidebar.css" => (CSS, "text/css; charset=utf-8"),
        "sidebar.js" => (JS, "application/javascript; charset=utf-8"),
        "collab.js" => (COLLAB_JS, "application/javascript; charset=utf-8"),
        "tools.js" => (TOOLS_JS, "application/javascript; charset=utf-8"),
        _ => return Err(Error::NotFound { what: "asset" }),
    };
    // An old page asking for an old version must not cache today's file under that URL.
    if version != *ASSET_VERSION {
        return Err(Error::NotFound { what: "asset" });
    }
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}

// ----------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
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

/// Everything but RFC 3986's unreserved characters, for a path segment or a query value.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

/// `scheme://host[:port]` of an http(s) address, or None when it is not one. The host is
/// checked character by character because it goes into a header.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    ok.then(|| format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// Only our own scripts, styles and requests, plus the platform's JS-SDK when the page
/// loads it.
fn content_security_policy(jssdk_origin: Option<&str>) -> String {
    let scripts = match jssdk_origin {
        Some(o) => format!("'self' {o}"),
        None => "'self'".into(),
    };
    format!(
        "default-src 'none'; script-src {scripts}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    )
}

#[derive(Default)]
pub(crate) struct Html {
    pub(crate) title: String,
    /// `data-page` of `<main>`, which tells the script what to wire up.
    pub(crate) page: &'static str,
    pub(crate) main_attrs: String,
    pub(crate) body: String,
    pub(crate) csrf: Option<String>,
    /// The platform JS-SDK, loaded before our script.
    pub(crate) jssdk: Option<String>,
    /// `data-platform` of `<main>`: the client the page runs in, which tells the script
    /// which SDK to configure.
    pub(crate) platform: Option<Platform>,
    /// The name of the person signed in, shown at the top of every page that has one.
    pub(crate) signed_in: Option<String>,
}

impl Html {
    pub(crate) fn into_response(self, status: StatusCode) -> Response {
        let mut head = String::new();
        if let Some(t) = &self.csrf {
            head.push_str(&format!(
                "<meta name=\"csrf-token\" content=\"{}\">\n",
                escape(t)
            ));
        }
        let mut scripts = String::new();
        if let Some(src) = &self.jssdk {
            // WeCom's SDK recognises the calling domain by the Referer; our page policy
            // (same-origin) would strip it on this one cross-origin request.
            scripts.push_str(&format!(
                "<script src=\"{}\" referrerpolicy=\"origin\"></script>\n",
                escape(src)
            ));
        }
        for file in ["sidebar.js", "collab.js", "tools.js"] {
            scripts.push_str(&format!("<script src=\"{}\"></script>\n", asset_url(file)));
        }
        let doc = format!(
            "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1, viewport-fit=cover\">\n\
             <title>{title}</title>\n{head}<link rel=\"stylesheet\" href=\"{css}\">\n</head>\n<body>\n\
             {who}<main data-page=\"{page}\"{platform}{attrs}>\n{body}</main>\n\
             <div id=\"toast\" class=\"toast\" role=\"status\" hidden></div>\n{scripts}</body>\n</html>\n",
            title = escape(&self.title),
            css = asset_url("sidebar.css"),
            page = self.page,
            platform = self
                .platform
                .map(|p| format!(" data-platform=\"{}\"", p.as_str()))
                .unwrap_or_default(),
            attrs = self.main_attrs,
            body = self.body,
            who = self
                .signed_in
                .as_deref()
                .map(|n| format!(
                    "<p class=\"signed-in\">当前登录：<strong class=\"signed-in-name\">{}</strong></p>\n",
                    escape(n)
                ))
                .unwrap_or_default(),
        );
        let csp = content_security_policy(self.jssdk.as_deref().and_then(origin).as_deref());
        let mut res = (status, doc).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        // Pages carry the CSRF token and personal data: never cache or share them.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        res
    }
}

/// A page handler's error, shown as a page rather than as the API's JSON.
pub(crate) struct PageError(pub(crate) Error);

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let message = match &self.0 {
            Error::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error on a sidebar page");
                "服务器内部错误，请稍后重试".to_string()
            }
            Error::NotFound { .. } => "未找到该页面或客户".to_string(),
            other => crate::text::error_for_people(other.code(), &other.to_string()),
        };
        message_page(self.0.status(), "出错了", &message)
    }
}

pub(crate) type PageResult = std::result::Result<Response, PageError>;

pub(crate) fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    Html {
        title: title.into(),
        page: "message",
        body: format!(
            "<h1>{}</h1>\n<p class=\"notice error\">{}</p>\n",
            escape(title),
            escape(message)
        ),
        ..Html::default()
    }
    .into_response(status)
}

pub(crate) fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// The platforms this deployment can sign a browser in through, WeCom first. DingTalk's
/// 免登 names the organisation by its CorpId, so without `dingtalk.corp_id` it cannot.
fn sign_in_platforms(s: &AppState) -> Vec<Platform> {
    let mut offered = Vec::new();
    if s.wecom_web.is_some() {
        offered.push(Platform::Wecom);
    }
    if s.dingtalk_web
        .as_ref()
        .is_some_and(|d| !d.corp_id.is_empty())
    {
        offered.push(Platform::Dingtalk);
    }
    if s.feishu_web.is_some() {
        offered.push(Platform::Feishu);
    }
    offered
}

/// The client a request comes from, by the markers the platforms' in-app browsers put in
/// their User-Agent: `DingTalk` (as in `AliApp(DingTalk/6.5.20)`), `Lark`/`Feishu` (as in
/// `Lark/5.10.4 … ChannelName/Feishu`), `wxwork` (WeCom).
fn client_of(headers: &HeaderMap) -> Option<Platform> {
    let ua = headers.get(header::USER_AGENT)?.to_str().ok()?;
    if ua.contains("DingTalk") {
        Some(Platform::Dingtalk)
    } else if ua.contains("Lark") || ua.contains("Feishu") {
        Some(Platform::Feishu)
    } else if ua.contains("wxwork") {
        Some(Platform::Wecom)
    } else {
        None
    }
}

/// Which sign-in someone without a session gets: the platform whose client they are in,
/// else the only one configured, else WeCom; `None` when none of these applies.
fn sign_in_platform(offered: &[Platform], client: Option<Platform>) -> Option<Platform> {
    let only = match offered {
        [only] => Some(*only),
        _ => None,
    };
    let wecom = offered
        .contains(&Platform::Wecom)
        .then_some(Platform::Wecom);
    client.filter(|p| offered.contains(p)).or(only).or(wecom)
}

fn platform_label(p: Platform) -> &'static str {
    match p {
        Platform::Wecom => "企业微信",
        Platform::Dingtalk => "钉钉",
        Platform::Feishu => "飞书",
    }
}

/// Where someone without a session goes: the chosen platform's sign-in, the development
/// sign-in in the demo, otherwise a page saying where to open the sidebar.
fn sign_in_first(s: &AppState, headers: &HeaderMap, next: &str) -> Response {
    let offered = sign_in_platforms(s);
    let next = enc(next);
    match sign_in_platform(&offered, client_of(headers)) {
        Some(Platform::Wecom) => redirect(&format!("/auth/wecom/login?next={next}")),
        Some(Platform::Dingtalk) => redirect(&format!("/auth/dingtalk/login?next={next}")),
        Some(Platform::Feishu) => redirect(&format!("/auth/feishu/login?next={next}")),
        None if s.dev_sign_in => redirect(&format!("/auth/dev?next={next}")),
        None if offered.is_empty() => message_page(
            StatusCode::UNAUTHORIZED,
            "请先登录",
            "本服务尚未配置企业微信、钉钉或飞书登录，请联系管理员。",
        ),
        None => {
            let names: Vec<&str> = offered.iter().map(|p| platform_label(*p)).collect();
            message_page(
                StatusCode::UNAUTHORIZED,
                "请先登录",
                &format!("请在{}客户端的工作台中打开本页面。", names.join("或")),
            )
        }
    }
}

/// The answer to a page request whose session could not be read: sign in when there is
/// none, an error page otherwise.
pub(crate) fn not_signed_in(s: &AppState, headers: &HeaderMap, e: Error, next: &str) -> Response {
    match e {
        Error::Unauthenticated(_) => sign_in_first(s, headers, next),
        other => PageError(other).into_response(),
    }
}

pub(crate) async fn org_timezone(s: &AppState, org_id: &str) -> Result<chrono_tz::Tz> {
    if org_id == s.default_org.id {
        return Ok(s.default_org.timezone);
    }
    Ok(crate::directory::orgs::by_id(&s.db, org_id)
        .await?
        .map_or(s.default_org.timezone, |o| o.timezone))
}

// ----------------------------------------------------------------------------------------
// Pages

/// The platform client a page runs in and the JS-SDK it loads there: the platform the
/// person signed in through, while that platform is configured. WeCom's page runs
/// `wx.config` and `wx.agentConfig`, DingTalk's `dd.config`, Feishu's `h5sdk.config`.
fn client_for(s: &AppState, session: &Session) -> Option<(Platform, String)> {
    let platform = Platform::parse(session.platform.as_deref()?)?;
    let jssdk = match platform {
        Platform::Wecom if s.wecom_web.is_some() => s.config.wecom.as_ref()?.jssdk_url.clone(),
        Platform::Dingtalk if s.dingtalk_web.is_some() => {
            s.config.dingtalk.as_ref()?.jsapi_url.clone()
        }
        Platform::Feishu if s.feishu_web.is_some() => s.config.feishu.as_ref()?.h5sdk_url.clone(),
        _ => return None,
    };
    Some((platform, jssdk))
}

/// `GET /sidebar`: what the chat toolbar opens. Inside WeCom it finds the customer of the
/// open chat through the JS-SDK; elsewhere (DingTalk, Feishu, the demo) it lists the rep's
/// customers.
async fn entry(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
) -> PageResult {
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, "/sidebar")),
    };
    match client_for(&s, &session) {
        Some((Platform::Wecom, jssdk)) => Ok(Html {
            title: "客户侧边栏".into(),
            page: "bridge",
            body: "<h1>客户侧边栏</h1>\n\
                   <p id=\"status\" class=\"notice\" role=\"status\">正在识别当前聊天的客户…</p>\n"
                .into(),
            csrf: Some(session.csrf_token),
            jssdk: Some(jssdk),
            platform: Some(Platform::Wecom),
            signed_in: Some(session.user_name),
            ..Html::default()
        }
        .into_response(StatusCode::OK)),
        client => customer_list(&s, &session, client).await,
    }
}

async fn customer_list(
    s: &AppState,
    session: &Session,
    client: Option<(Platform, String)>,
) -> PageResult {
    let rows = sqlx::query(
        "SELECT id, name, tier FROM customers WHERE org_id = $1 AND owner_user_id = $2 \
         ORDER BY name, id LIMIT 200",
    )
    .bind(&session.org_id)
    .bind(&session.user_id)
    .fetch_all(&s.db.pool)
    .await
    .map_err(Error::from)?;
    let mut body = String::from("<h1>我的客户</h1>\n");
    if rows.is_empty() {
        body.push_str("<p class=\"empty\">您名下还没有客户。</p>\n");
    } else {
        body.push_str("<ul class=\"list customers\">\n");
        for r in &rows {
            let id: String = r.get("id");
            let name: String = r.get("name");
            let tier: Option<String> = r.get("tier");
            body.push_str(&format!(
                "<li><a href=\"/sidebar/customers/{}\">{}</a>{}</li>\n",
                enc(&id),
                escape(&name),
                tier_badge(tier.as_deref())
            ));
        }
        body.push_str("</ul>\n");
    }
    if s.dev_sign_in {
        body.push_str("<p class=\"meta\"><a href=\"/auth/dev?next=%2Fsidebar\">切换用户</a></p>\n");
    }
    let (platform, jssdk) = client.unzip();
    Ok(Html {
        title: "我的客户".into(),
        page: "list",
        body,
        csrf: Some(session.csrf_token.clone()),
        jssdk,
        platform,
        signed_in: Some(session.user_name.clone()),
        ..Html::default()
    }
    .into_response(StatusCode::OK))
}

fn tier_badge(tier: Option<&str>) -> String {
    match tier {
        Some(t) => format!(
            " <span class=\"tier tier-{}\">{} 级</span>",
            escape(&t.to_ascii_lowercase()),
            escape(t)
        ),
        None => " <span class=\"tier\">未分级</span>".into(),
    }
}

fn verification_label(status: &str) -> Option<&'static str> {
    match status {
        "pending" => Some("待核验"),
        "verified" => Some("已核验"),
        "too_short" => Some("通话过短"),
        "unverified" => Some("未核验"),
        "attested" => Some("已证明"),
        _ => None,
    }
}

/// `GET /sidebar/customers/{id}`: the customer, their open deals and what the next stage
/// still needs, the last touches, the customer's timeline (the ledger), a freeze banner, the phone numbers (masked) and the
/// action buttons of the rule set in force.
async fn customer_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path(id): Path<String>,
) -> PageResult {
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            return Ok(not_signed_in(
                &s,
                &headers,
                e,
                &format!("/sidebar/customers/{id}"),
            ))
        }
    };
    let id =
        crate::validate::id("customer", &id).map_err(|_| Error::NotFound { what: "customer" })?;
    let org = &session.org_id;
    let tz = org_timezone(&s, org).await?;
    let customer = customers::get(&s.db, &s.cipher, org, &id).await?;
    s.access_log.record(AccessEntry::by_member(
        org,
        &session.user_id,
        Object::Customer,
        &customer.id,
        Purpose::View,
    ));
    let rules = s.rules.current(org).await?;
    let freeze = antifraud::active_freeze(&s.db, org, &session.user_id, &id).await?;
    let now = s.clock.now_ms();
    let notified = match &freeze {
        Some(f) => antifraud::superiors_notified(&s.db, org, &f.id).await?,
        None => false,
    };
    let warnings =
        antifraud::repeat_warnings(&s.db, &rules, org, &session.user_id, &id, now).await?;
    let viewer = tools::Viewer::load(&s, org, &session.user_id, now).await?;
    let (platform, jssdk) = client_for(&s, &session).unzip();

    let mut body = format!(
        "<header class=\"customer\">\n<h1>{}</h1>{}\n</header>\n",
        escape(&customer.name),
        tier_badge(customer.tier.as_deref())
    );
    body.push_str(&freeze_section(freeze.as_ref(), notified));
    body.push_str(&viewer.freezes_section(&s, org, &id, tz).await?);
    body.push_str("<div id=\"notice\" class=\"notice\" role=\"alert\" hidden></div>\n");
    body.push_str(&actions_section(&rules, &warnings));
    let in_wecom = platform == Some(Platform::Wecom);
    body.push_str(&tools::proposals_section(&s, org, &id, tz, in_wecom).await?);
    body.push_str(&crate::http::pages::access_requests::sidebar_link(&id));
    body.push_str(
        &crate::http::pages::collab::sidebar_sections(&s, &rules, org, &id, tz, now).await?,
    );
    body.push_str(&deals_section(&s, &rules, &viewer, org, &id, tz).await?);
    body.push_str(&touches_section(&s, &viewer, org, &id, tz).await?);
    body.push_str(&crate::http::pages::timeline::section(&s, org, &id, tz).await?);
    body.push_str(&contacts_section(&customer));
    Ok(Html {
        title: customer.name.clone(),
        page: "customer",
        main_attrs: format!(" data-customer=\"{}\"", escape(&id)),
        body,
        csrf: Some(session.csrf_token),
        jssdk,
        platform,
        signed_in: Some(session.user_name),
    }
    .into_response(StatusCode::OK))
}

/// The rep's freeze on this customer, if any, and whether the freeze card reached anyone
/// (`notified`): a rep without direct superiors is told that nobody got it.
fn freeze_section(freeze: Option<&antifraud::Freeze>, notified: bool) -> String {
    let inner = match freeze {
        Some(f) => format!(
            "<p class=\"banner frozen\">您对该客户的操作已冻结：{}。{}</p>\n",
            escape(&crate::text::durations_in(&f.reason)),
            if notified {
                "已通知您的直属上级，可由其一键解除。".to_string()
            } else {
                format!(
                    "您没有直属上级，冻结通知未发给任何人：请直接联系主管解除，或请管理员在 {} 中设置您的直属上级。",
                    crate::access::WHERE_ROLES_ARE_SET
                )
            }
        ),
        None => String::new(),
    };
    format!("<section id=\"freeze\" data-refresh>{inner}</section>\n")
}

/// The action buttons. A guarded action whose next record the repeat limit would refuse
/// and freeze carries its warning (`warnings`, from `antifraud::repeat_warnings`) in
/// `data-warn`: the script asks 仍要记录 / 取消 before sending it. The buttons are
/// re-rendered after each action, so the warning follows the count.
fn actions_section(rules: &RuleSet, warnings: &HashMap<String, String>) -> String {
    let mut out = String::from(
        "<section class=\"actions\">\n<h2>记录跟进</h2>\n<div class=\"buttons\" id=\"action-buttons\" data-refresh>\n",
    );
    for a in &rules.actions {
        let name = escape(&a.name);
        let warn = warnings
            .get(&a.name)
            .map(|w| format!(" data-warn=\"{}\"", escape(w)))
            .unwrap_or_default();
        let line = match a.kind {
            ActionKind::Tap => format!(
                "<button type=\"button\" class=\"action tap\" data-kind=\"tap\" data-action=\"{name}\"{warn}>{name}</button>\n"
            ),
            // A quick-ask with a collaboration type opens its form (src/http/pages/collab.rs).
            ActionKind::QuickAsk => format!(
                "<button type=\"button\" class=\"action quick-ask\"{} data-kind=\"quick_ask\" data-action=\"{name}\"{warn}>{name}</button>\n",
                rules
                    .collab_for_action(&a.name)
                    .map(|c| format!(" data-collab=\"{}\"", escape(&c.key)))
                    .unwrap_or_default()
            ),
            ActionKind::Upload => format!(
                "<button type=\"button\" class=\"action upload\" data-kind=\"upload\" data-action=\"{name}\" \
                 data-document=\"{}\"{warn}>{name}</button>\n",
                escape(a.document.as_deref().unwrap_or_default())
            ),
        };
        out.push_str(&line);
    }
    // Outside the refreshed buttons: the script keeps hold of the file picker and the
    // confirmation.
    out.push_str(
        "</div>\n<div id=\"freeze-warning\" class=\"notice warning\" role=\"alertdialog\" hidden>\n\
         <p class=\"warning-text\"></p>\n<div class=\"form-actions\">\
         <button type=\"button\" class=\"action\" data-warn-go>仍要记录</button>\
         <button type=\"button\" class=\"cancel\" data-warn-cancel>取消</button></div>\n</div>\n\
         <input type=\"file\" id=\"file-picker\" hidden>\n</section>\n",
    );
    out
}

async fn deals_section(
    s: &AppState,
    rules: &RuleSet,
    viewer: &tools::Viewer,
    org: &str,
    customer: &str,
    tz: chrono_tz::Tz,
) -> Result<String> {
    let rows = sqlx::query(
        "SELECT id, title, stage, owner_user_id, outcome, closed_at, lost_reason, lost_note_enc \
         FROM deals WHERE org_id = $1 AND customer_id = $2 ORDER BY created_at, id",
    )
    .bind(org)
    .bind(customer)
    .fetch_all(&s.db.pool)
    .await?;
    let last = rules.stages.last().map(|st| st.name.as_str());
    let mut items = String::new();
    let mut closed = String::new();
    for r in &rows {
        let deal: String = r.get("id");
        let title: String = r.get("title");
        let stage: String = r.get("stage");
        let owner: Option<String> = r.get("owner_user_id");
        let outcome: String = r.get("outcome");
        // A deal in the last stage is won, whatever rule set it got there under.
        let won = outcome == "won" || (outcome == "open" && Some(stage.as_str()) == last);
        if won || outcome == "lost" {
            let note = crate::security::fields::open_opt(
                &s.cipher,
                crate::security::fields::LOST_NOTE,
                r.get("lost_note_enc"),
            )?;
            closed.push_str(&closed_deal(
                rules,
                viewer,
                ClosedDeal {
                    deal: &deal,
                    title: &title,
                    stage: &stage,
                    owner: owner.as_deref(),
                    won,
                    closed_at: r.get("closed_at"),
                    reason: r.get("lost_reason"),
                    note,
                },
                tz,
            ));
            continue;
        }
        let report = gates::report(&s.db, rules, org, &deal).await?;
        let next = match (&report.to, report.passed) {
            (None, _) => String::new(),
            // The move waits for 确认推进 in the page (assets/sidebar.js).
            (Some(to), true) => format!(
                "<p class=\"next ok\">已满足进入「{to}」的条件</p>\n\
                 <button type=\"button\" class=\"advance\" data-advance-open>推进到「{to}」</button>\n\
                 <div class=\"confirm\" data-advance-confirm hidden>\n\
                 <p class=\"confirm-text\">确认将「{title}」从「{from}」推进到「{to}」？推进后只能由主管回退。</p>\n\
                 <div class=\"form-actions\"><button type=\"button\" class=\"action\" data-advance=\"{deal}\">确认推进</button>\
                 <button type=\"button\" class=\"cancel\" data-advance-cancel>取消</button></div>\n</div>\n",
                to = escape(to),
                from = escape(&stage),
                title = escape(&title),
                deal = escape(&deal)
            ),
            (Some(to), false) => {
                let mut list = String::new();
                for m in &report.missing {
                    list.push_str(&format!(
                        "<li data-missing=\"{}\">{}</li>\n",
                        escape(m.code),
                        escape(&m.message)
                    ));
                }
                format!(
                    "<p class=\"next\">进入「{}」还需：</p>\n<ul class=\"missing\">\n{list}</ul>\n",
                    escape(to)
                )
            }
        };
        let manage = viewer.deal_tools(rules, &deal, &stage, owner.as_deref());
        items.push_str(&format!(
            "<li class=\"deal\" data-deal=\"{}\">\n<div class=\"deal-title\">{}</div>\n\
             <div class=\"stage\">当前阶段：<strong>{}</strong></div>\n{next}{manage}</li>\n",
            escape(&deal),
            escape(&title),
            escape(&stage)
        ));
    }
    let inner = if items.is_empty() {
        "<p class=\"empty\">暂无进行中的商机。</p>\n".to_string()
    } else {
        format!("<ul class=\"list deals\">\n{items}</ul>\n")
    };
    let ended = if closed.is_empty() {
        String::new()
    } else {
        format!("<h2>已结束的商机</h2>\n<ul class=\"list deals closed-deals\">\n{closed}</ul>\n")
    };
    Ok(format!(
        "<section id=\"deals\" class=\"deals\" data-refresh>\n<h2>进行中的商机</h2>\n{inner}{ended}</section>\n"
    ))
}

/// A won or lost deal as the customer page lists it.
struct ClosedDeal<'a> {
    deal: &'a str,
    title: &'a str,
    stage: &'a str,
    owner: Option<&'a str>,
    won: bool,
    closed_at: Option<i64>,
    reason: Option<String>,
    note: Option<String>,
}

/// 赢单 or 输单 with the stage, the reason, the date, and for a manager 回退阶段 (won) or
/// 重新打开 (lost).
fn closed_deal(
    rules: &RuleSet,
    viewer: &tools::Viewer,
    d: ClosedDeal<'_>,
    tz: chrono_tz::Tz,
) -> String {
    let when = d
        .closed_at
        .map(|at| {
            format!(
                "<div class=\"meta\">结束于 {}</div>\n",
                crate::text::time(at, tz)
            )
        })
        .unwrap_or_default();
    let (badge, detail) = if d.won {
        (
            "<span class=\"outcome outcome-won\">赢单</span>".to_string(),
            String::new(),
        )
    } else {
        let note = d
            .note
            .as_deref()
            .map(|n| format!("（{}）", escape(n)))
            .unwrap_or_default();
        (
            "<span class=\"outcome outcome-lost\">输单</span>".to_string(),
            format!(
                "<div class=\"lost-reason\">输单原因：{}{note}</div>\n",
                escape(d.reason.as_deref().unwrap_or("—"))
            ),
        )
    };
    let manage = viewer.closed_deal_tools(rules, d.deal, d.stage, d.owner, d.won);
    format!(
        "<li class=\"deal closed\" data-deal=\"{deal}\" data-outcome=\"{outcome}\">\n\
         <div class=\"deal-title\">{title} {badge}</div>\n\
         <div class=\"stage\">{label}：<strong>{stage}</strong></div>\n{detail}{when}{manage}</li>\n",
        deal = escape(d.deal),
        outcome = if d.won { "won" } else { "lost" },
        title = escape(d.title),
        label = if d.won { "阶段" } else { "输单时阶段" },
        stage = escape(d.stage),
    )
}

async fn touches_section(
    s: &AppState,
    viewer: &tools::Viewer,
    org: &str,
    customer: &str,
    tz: chrono_tz::Tz,
) -> Result<String> {
    // closeloop's own points (rule hits, stage moves, document opens) are not touches.
    let rows = sqlx::query(
        "SELECT p.id, p.actor_user_id, p.action, p.occurred_at, p.verification, u.name AS actor_name \
         FROM tracking_points p LEFT JOIN users u ON u.id = p.actor_user_id \
         WHERE p.org_id = $1 AND p.customer_id = $2 AND p.source <> 'system' \
         ORDER BY p.occurred_at DESC, p.id DESC LIMIT $3",
    )
    .bind(org)
    .bind(customer)
    .bind(RECENT_TOUCHES)
    .fetch_all(&s.db.pool)
    .await?;
    let claims: Vec<tools::Touch> = rows
        .iter()
        .map(|r| tools::Touch {
            point: r.get("id"),
            actor: r.get("actor_user_id"),
        })
        .collect();
    let mut extra = viewer.touch_tools(s, org, &claims).await?;
    let mut items = String::new();
    for (r, claim) in rows.iter().zip(&claims) {
        let action: String = r.get("action");
        let at: i64 = r.get("occurred_at");
        let verification: String = r.get("verification");
        let who: Option<String> = r.get("actor_name");
        let when = crate::text::time_short(at, tz);
        let status = verification_label(&verification)
            .map(|label| {
                format!(
                    " <span class=\"status status-{}\">{label}</span>",
                    escape(&verification)
                )
            })
            .unwrap_or_default();
        let attest = extra.remove(&claim.point).unwrap_or_default();
        items.push_str(&format!(
            "<li class=\"touch\" data-point=\"{}\" data-verification=\"{}\"><span class=\"what\">{}</span>{status}\
             <div class=\"meta\">{when} · {}</div>{attest}</li>\n",
            escape(&claim.point),
            escape(&verification),
            escape(crate::text::action(&action)),
            escape(who.as_deref().unwrap_or("—"))
        ));
    }
    let inner = if items.is_empty() {
        "<p class=\"empty\">还没有跟进记录。</p>\n".to_string()
    } else {
        format!("<ol class=\"list touches\">\n{items}</ol>\n")
    };
    Ok(format!(
        "<section id=\"touches\" data-refresh>\n<h2>最近跟进</h2>\n{inner}</section>\n"
    ))
}

fn contacts_section(c: &customers::Customer) -> String {
    let mut items = String::new();
    for contact in &c.contacts {
        let mut phones = String::new();
        for p in &contact.phones {
            let validity = if p.valid {
                "<span class=\"valid\">有效</span>".to_string()
            } else {
                match &p.invalid_reason {
                    Some(r) => format!(
                        "<span class=\"invalid\">已失效（{}）</span>",
                        // Set by the call-record check (verification::calls), not by a person.
                        escape(if r == "failed_calls" {
                            "多次呼叫无人接听"
                        } else {
                            r
                        })
                    ),
                    None => "<span class=\"invalid\">已失效</span>".to_string(),
                }
            };
            phones.push_str(&format!(
                "<li class=\"phone\" data-phone=\"{}\"><span class=\"number\">{}</span> {validity}{}</li>\n",
                escape(&p.id),
                escape(&p.masked),
                tools::phone_tools(p)
            ));
        }
        let title = contact
            .title
            .as_deref()
            .map(|t| format!(" <span class=\"meta\">{}</span>", escape(t)))
            .unwrap_or_default();
        items.push_str(&format!(
            "<li class=\"contact\"><div>{}{title}</div>\n<ul class=\"phones\">\n{phones}</ul></li>\n",
            escape(&contact.name)
        ));
    }
    let inner = if items.is_empty() {
        "<p class=\"empty\">暂无联系人。</p>\n".to_string()
    } else {
        format!("<ul class=\"list contacts\">\n{items}</ul>\n")
    };
    format!("<section id=\"contacts\" class=\"contacts\" data-refresh>\n<h2>联系人</h2>\n{inner}</section>\n")
}

// ----------------------------------------------------------------------------------------
// What the page's script calls

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tap {
    action: String,
    deal: Option<String>,
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers.get(header::USER_AGENT).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(MAX_USER_AGENT)
            .collect()
    })
}

/// `POST /web/customers/{id}/actions` `{"action": "...", "deal": optional}`: one tap, one
/// tracking point (server time, the signed-in user, client IP, user agent). Only taps and
/// quick-asks of the catalog in force are accepted; uploads go with their document.
async fn record_action(
    State(s): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(tap): ApiJson<Tap>,
) -> Result<Response> {
    session.require_csrf(&headers)?;
    let org = &session.org_id;
    let rules = s.rules.current(org).await?;
    match rules.action(&tap.action).map(|a| a.kind) {
        Some(ActionKind::Tap | ActionKind::QuickAsk) => {}
        Some(ActionKind::Upload) => {
            return Err(Error::invalid(format!(
                "「{}」需要上传文件，不能直接点按 (an upload action records with its document)",
                tap.action
            )))
        }
        None => {
            return Err(Error::invalid(format!(
                "「{}」不在当前的动作目录中 (not an action of the rule set in force)",
                tap.action
            )))
        }
    }
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let point = NewPoint {
        org_id: org.clone(),
        actor_kind: crate::tracking::ActorKind::User,
        actor: Some(session.user_id.clone()),
        customer: Some(id),
        deal: tap.deal,
        action: tap.action,
        payload: serde_json::json!({}),
        source: Source::Sidebar,
        platform: session.platform.clone(),
        external_id: None,
        client_ip: ip.map(|i| i.to_string()),
        user_agent: user_agent(&headers),
        idempotency_key,
        api_key_id: None,
        after: None,
    };
    let tz = org_timezone(&s, org).await?;
    Ok(match s.ledger.record(point, tz).await? {
        Recorded::Created(p) => (StatusCode::CREATED, Json(p)).into_response(),
        Recorded::Replayed(p) => (StatusCode::OK, Json(p)).into_response(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    to: Option<String>,
    /// The person confirmed the move on the page (确认推进); without it nothing moves.
    confirm: Option<bool>,
}

/// `POST /web/deals/{id}/advance` `{"confirm": true, "to": optional}`: moves the deal to
/// its next stage when the gate holds; a refusal (`gate_not_met`) lists what is missing.
/// Without `"confirm": true` (the page's 确认推进) it answers 400 `confirmation_required`
/// and moves nothing, so a stray tap cannot move a deal.
async fn advance_deal(
    State(s): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<AdvanceBody>,
) -> Result<Response> {
    session.require_csrf(&headers)?;
    if b.confirm != Some(true) {
        return Ok(crate::error::error_response(
            StatusCode::BAD_REQUEST,
            "confirmation_required",
            "推进阶段前请先确认 (confirm the move: {\"confirm\": true})",
        ));
    }
    let org = &session.org_id;
    let rules = s.rules.current(org).await?;
    let tz = org_timezone(&s, org).await?;
    let by = Mover {
        actor: Actor {
            kind: "user",
            id: Some(session.user_id.clone()),
        },
        user: Some(session.user_id.clone()),
        platform: session.platform.clone(),
        key: None,
    };
    let deal = gates::advance(
        &s.db,
        &s.cipher,
        &rules,
        s.clock.now_ms(),
        org,
        tz,
        &id,
        b.to.as_deref(),
        &by,
    )
    .await?;
    Ok(Json(deal).into_response())
}

// ----------------------------------------------------------------------------------------
// Development sign-in (`closeloop demo` only)

fn dev_only(s: &AppState) -> Result<()> {
    if s.dev_sign_in {
        Ok(())
    } else {
        Err(Error::NotFound { what: "route" })
    }
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// `GET /auth/dev`: pick a sample user to act as.
async fn dev_page(State(s): State<AppState>, ApiQuery(q): ApiQuery<NextQuery>) -> Result<Response> {
    dev_only(&s)?;
    let next = session::safe_next(q.next.as_deref().or(Some("/sidebar")));
    let rows = sqlx::query(
        "SELECT id, name, department FROM users WHERE org_id = $1 AND status = 'active' ORDER BY name, id",
    )
    .bind(&s.default_org.id)
    .fetch_all(&s.db.pool)
    .await?;
    let mut body = String::from(
        "<h1>开发登录</h1>\n<p class=\"banner\">仅用于演示：选择一位成员，以其身份使用侧边栏。</p>\n",
    );
    if rows.is_empty() {
        body.push_str("<p class=\"empty\">还没有成员。</p>\n");
    } else {
        body.push_str("<ul class=\"list users\">\n");
        for r in &rows {
            let id: String = r.get("id");
            let name: String = r.get("name");
            let department: Option<String> = r.get("department");
            let department = department
                .map(|d| format!(" <span class=\"meta\">{}</span>", escape(&d)))
                .unwrap_or_default();
            body.push_str(&format!(
                "<li><form method=\"post\" action=\"/auth/dev\">\
                 <input type=\"hidden\" name=\"user_id\" value=\"{}\">\
                 <input type=\"hidden\" name=\"next\" value=\"{}\">\
                 <button type=\"submit\" class=\"action\">{}</button>{department}</form></li>\n",
                escape(&id),
                escape(&next),
                escape(&name)
            ));
        }
        body.push_str("</ul>\n");
    }
    Ok(Html {
        title: "开发登录".into(),
        page: "dev",
        body,
        ..Html::default()
    }
    .into_response(StatusCode::OK))
}

#[derive(Debug, Deserialize)]
struct DevSignIn {
    user_id: String,
    next: Option<String>,
}

/// `application/x-www-form-urlencoded` pairs (axum's form extractor is not compiled in).
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Login CSRF: no session (so no CSRF token) exists yet, and a cross-site form could sign
/// a visitor's browser in as someone else. A browser always sends `Origin` on a POST
/// (and `Referer` under our same-origin referrer policy), and a page cannot forge either,
/// so the request must come from our own origin: the configured `public_url`, or the
/// address the browser used to reach us (`Host`; the demo is often opened as localhost
/// rather than 127.0.0.1). A request carrying neither header does not come from a modern
/// browser's cross-site form; it is accepted unless `Sec-Fetch-Site` says it is cross-site.
fn same_origin(public_url: &str, headers: &HeaderMap) -> bool {
    let ours: Vec<String> = {
        let mut v: Vec<String> = origin(public_url).into_iter().collect();
        if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            for scheme in ["http", "https"] {
                if let Some(o) = origin(&format!("{scheme}://{host}")) {
                    v.push(o);
                }
            }
        }
        v
    };
    let header_origin = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(|v| origin(v).unwrap_or_default())
    };
    if let Some(o) = header_origin(header::ORIGIN) {
        return ours.contains(&o);
    }
    if let Some(o) = header_origin(header::REFERER) {
        return ours.contains(&o);
    }
    !matches!(
        headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
        Some("cross-site" | "same-site")
    )
}

/// `POST /auth/dev` (form or JSON `{"user_id": "...", "next": "/sidebar"}`): a session for
/// that active user, then on to the sidebar.
async fn dev_sign_in(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    dev_only(&s)?;
    if !same_origin(&s.config.public_url, &headers) {
        return Err(Error::Forbidden(
            "登录请求必须来自本站页面 (sign-in must come from this site)".into(),
        ));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let form: DevSignIn = if is_json {
        serde_json::from_slice(&body)
            .map_err(|e| Error::MalformedBody(format!("expected {{\"user_id\": \"...\"}}: {e}")))?
    } else {
        let pairs = form_pairs(&body);
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        DevSignIn {
            user_id: get("user_id").ok_or_else(|| Error::invalid("user_id is required"))?,
            next: get("next"),
        }
    };
    let user = crate::validate::id("user_id", &form.user_id)?;
    let active =
        sqlx::query("SELECT 1 FROM users WHERE id = $1 AND org_id = $2 AND status = 'active'")
            .bind(&user)
            .bind(&s.default_org.id)
            .fetch_optional(&s.db.pool)
            .await?;
    if active.is_none() {
        return Err(Error::UnknownReference(format!("no active user `{user}`")));
    }
    let (value, _csrf) =
        session::create(&s.db, s.clock.now_ms(), &s.default_org.id, &user, "dev").await?;
    let next = session::safe_next(form.next.as_deref().or(Some("/sidebar")));
    Ok((
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                session::set_cookie(&value, s.config.public_url.starts_with("https://")),
            ),
            (header::LOCATION, next),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(escape("已电话沟通"), "已电话沟通");
    }

    #[test]
    fn the_client_and_then_the_configuration_choose_the_sign_in() {
        use Platform::{Dingtalk, Feishu, Wecom};
        let ua = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::USER_AGENT, v.parse().unwrap());
            client_of(&h)
        };
        assert_eq!(
            ua("Mozilla/5.0 AliApp(DingTalk/6.5.20) language/zh-CN"),
            Some(Dingtalk)
        );
        assert_eq!(ua("Mozilla/5.0 Lark/5.10.4 LarkLocale/zh_CN"), Some(Feishu));
        assert_eq!(ua("Mozilla/5.0 ChannelName/Feishu"), Some(Feishu));
        assert_eq!(
            ua("Mozilla/5.0 wxwork/4.1.10 MicroMessenger/7.0.1"),
            Some(Wecom)
        );
        assert_eq!(ua("Mozilla/5.0 Chrome/120.0 Safari/537.36"), None);
        assert_eq!(client_of(&HeaderMap::new()), None);

        assert_eq!(
            sign_in_platform(&[Wecom, Dingtalk, Feishu], Some(Feishu)),
            Some(Feishu)
        );
        assert_eq!(
            sign_in_platform(&[Wecom, Dingtalk, Feishu], None),
            Some(Wecom)
        );
        assert_eq!(sign_in_platform(&[Dingtalk], None), Some(Dingtalk));
        assert_eq!(sign_in_platform(&[Dingtalk], Some(Feishu)), Some(Dingtalk));
        assert_eq!(sign_in_platform(&[Dingtalk, Feishu], Some(Wecom)), None);
        assert_eq!(sign_in_platform(&[], Some(Dingtalk)), None);
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            origin("https://res.wx.qq.com/wwopen/js/jwxwork-1.0.0.js").as_deref(),
            Some("https://res.wx.qq.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080?x").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin("javascript:alert(1)"), None);
        assert_eq!(origin("https://evil.example; script-src *"), None);
    }

    #[test]
    fn sign_in_posts_must_come_from_our_origin() {
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            same_origin("http://127.0.0.1:8080", &h)
        };
        assert!(with(&[("origin", "http://127.0.0.1:8080")]));
        assert!(with(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080")
        ]));
        assert!(!with(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example")
        ]));
        assert!(!with(&[("origin", "null")]));
        assert!(with(&[("referer", "http://127.0.0.1:8080/auth/dev")]));
        assert!(!with(&[("referer", "http://evil.example/x")]));
        assert!(with(&[]));
        assert!(!with(&[("sec-fetch-site", "cross-site")]));
    }

    #[test]
    fn form_bodies_decode() {
        assert_eq!(
            form_pairs(b"user_id=u-1&next=%2Fsidebar%3Fa%3D1&x=a+b"),
            vec![
                ("user_id".to_string(), "u-1".to_string()),
                ("next".to_string(), "/sidebar?a=1".to_string()),
                ("x".to_string(), "a b".to_string())
            ]
        );
    }
}
