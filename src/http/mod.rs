//! HTTP transport: routing, extractors, middleware. Handlers are thin; rules live in the
//! capability modules.

pub mod api;
mod callbacks;
pub(crate) mod documents;
mod domain_verify;
mod extract;
mod failure;
pub mod guard;
mod ops;
pub mod pages;
pub mod serve;
mod web;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Db;
use crate::directory::orgs::Org;
use crate::error::Error;
use crate::security::Cipher;
use crate::tracking::Ledger;

pub use extract::{AdminKey, ApiJson, ApiQuery, ClientIp, Reader, Writer};

/// Cheap handles shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub cipher: Cipher,
    pub ledger: Ledger,
    pub inbox: crate::inbox::InboxWriter,
    /// Reads of customer-level objects, written in batches off the request path.
    pub access_log: crate::access_log::AccessLog,
    pub default_org: Arc<Org>,
    pub metrics: PrometheusHandle,
    /// Present when `[wecom]` is configured.
    pub wecom: Option<Arc<crate::platform::wecom::inbound::WecomInbound>>,
    pub wecom_web: Option<Arc<crate::platform::wecom::jsapi::WecomWeb>>,
    /// Present when `[dingtalk]` is configured.
    pub dingtalk: Option<Arc<crate::platform::dingtalk::inbound::DingtalkInbound>>,
    pub dingtalk_web: Option<Arc<crate::http::pages::dingtalk::DingtalkWeb>>,
    /// Present when `[feishu]` is configured.
    pub feishu: Option<Arc<crate::platform::feishu::inbound::FeishuInbound>>,
    pub feishu_web: Option<Arc<crate::http::pages::feishu::FeishuWeb>>,
    /// The rule set in force (versioned in the database).
    pub rules: crate::rules::Rules,
    pub blobs: crate::storage::BlobStore,
    /// The work calendar SLA clocks count business hours in.
    pub calendar: Arc<crate::collab::calendar::WorkCalendar>,
    /// `closeloop demo` only: sign in as any sample user without a platform. Never set
    /// from configuration.
    pub dev_sign_in: bool,
}

/// The public router. `/metrics` is on it unless `metrics_listen` moves it elsewhere.
pub fn router(state: AppState) -> Router {
    let trusted = Arc::new(state.config.trusted_proxies.clone());
    let mut app = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .nest("/api/v1", api::router())
        .route("/auth/wecom/login", get(web::wecom_login))
        .route("/auth/wecom/callback", get(web::wecom_callback))
        .route("/auth/logout", axum::routing::post(web::logout))
        .route("/web/session", get(web::current))
        .route("/web/wecom/js-config", get(web::wecom_js_config))
        .route("/web/wecom/customer", get(web::wecom_customer))
        .route(
            "/callback/wecom",
            get(callbacks::wecom_verify)
                .post(callbacks::wecom_receive)
                .layer(DefaultBodyLimit::max(callbacks::MAX_CALLBACK_BYTES)),
        )
        .route(
            "/callback/dingtalk",
            axum::routing::post(callbacks::dingtalk_receive)
                .layer(DefaultBodyLimit::max(callbacks::MAX_CALLBACK_BYTES)),
        )
        .route(
            "/callback/dingtalk/card",
            axum::routing::post(callbacks::dingtalk_card)
                .layer(DefaultBodyLimit::max(callbacks::MAX_CALLBACK_BYTES)),
        )
        .route(
            "/callback/feishu",
            axum::routing::post(callbacks::feishu_receive)
                .layer(DefaultBodyLimit::max(callbacks::MAX_CALLBACK_BYTES)),
        )
        .route("/calendar/{file}", get(calendar_feed))
        .merge(documents::routes())
        .merge(crate::http::pages::dingtalk::routes())
        .merge(crate::http::pages::feishu::routes())
        .merge(crate::http::pages::sidebar::routes())
        .merge(crate::http::pages::health::routes())
        .merge(crate::http::pages::sidebar_tools::routes())
        .merge(crate::http::pages::collab::routes())
        .merge(crate::http::pages::people::routes())
        .merge(crate::http::pages::rules::routes())
        .merge(crate::http::pages::access_requests::routes())
        .merge(crate::http::pages::audit::routes())
        .merge(domain_verify::routes(&state.config))
        .fallback(|| async { Error::NotFound { what: "route" } });
    if state.config.metrics_listen.is_none() {
        app = app.route("/metrics", get(ops::metrics));
    }
    // No route runs unguarded: a route without an access rule stops the server here.
    let routes = guard::routes_of(&app);
    assert!(
        routes.len() > 50,
        "could not list the router's routes ({} found): the access guard cannot check them",
        routes.len()
    );
    let missing = guard::unguarded(&app);
    assert!(
        missing.is_empty(),
        "routes without an access rule: {missing:?}"
    );
    app.layer(middleware::from_fn_with_state(
        state.clone(),
        guard::enforce,
    ))
    .layer(middleware::from_fn(failure::catch_panic))
    .layer(middleware::from_fn(failure::json_errors))
    .layer(middleware::from_fn(crate::http::pages::chinese_errors))
    .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
    .layer(middleware::from_fn(observe))
    .layer(middleware::from_fn_with_state(trusted, client_ip))
    .with_state(state)
}

/// `GET /calendar/<token>.ics`: a person's dated entries for any calendar app. The token
/// is the credential; only its hash is stored.
async fn calendar_feed(
    State(s): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Result<Response, Error> {
    let token = file
        .strip_suffix(".ics")
        .ok_or(Error::NotFound { what: "calendar" })?;
    let body = crate::collab::calendar_feed::feed(&s.db, s.clock.now_ms(), token).await?;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/calendar; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "private, no-store"),
        ],
        body,
    )
        .into_response())
}

/// The private metrics router for `metrics_listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { Error::NotFound { what: "route" } })
        .layer(middleware::from_fn(failure::catch_panic))
        .layer(middleware::from_fn(failure::json_errors))
        .with_state(state)
}

/// The methods a metric label may name; a client can send any token as a method, and each
/// would otherwise become a series of its own on the public `/metrics`.
const LABELLED_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

/// Request count and latency by method and matched route (never the raw URI: it can hold
/// signatures and tokens), and one debug log line per request. Methods outside
/// [`LABELLED_METHODS`] count as `other`, requests no route matched as `unmatched`.
async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = if LABELLED_METHODS.contains(req.method()) {
        req.method().as_str().to_owned()
    } else {
        "other".to_owned()
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let elapsed = start.elapsed();
    let labels = [
        ("method", method.clone()),
        ("route", route.clone()),
        ("status", status.clone()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, %status, latency_ms = elapsed.as_secs_f64() * 1e3, "request");
    response
}

/// The client's address: the socket peer, unless the peer is a trusted proxy, in which
/// case the right-most `X-Forwarded-For` entry not itself a trusted proxy.
async fn client_ip(
    State(trusted): State<Arc<Vec<IpNet>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = peer.map(|p| resolve_client_ip(p, req.headers(), &trusted));
    req.extensions_mut().insert(ClientIp(ip));
    // Audit entries of this request record the IP; a platform's callback is the
    // platform's server, not the person.
    let audited = ip
        .filter(|_| !req.uri().path().starts_with("/callback/"))
        .map(|ip| ip.to_string());
    crate::access::audit::CLIENT_IP
        .scope(audited, next.run(req))
        .await
        .into_response()
}

pub fn resolve_client_ip(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(v) = value.to_str() else { return peer };
        for part in v.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.7".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.4".parse().unwrap();
        assert_eq!(
            resolve_client_ip(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve_client_ip(stranger, &h, &trusted), stranger);
        h.insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(resolve_client_ip(proxy, &h, &trusted), proxy);
    }
}
