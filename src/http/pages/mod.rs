//! The browser side: sessions after a platform sign-in, CSRF protection, and the
//! endpoints the sidebar page's JavaScript calls.

pub mod access_requests;
pub mod audit;
pub mod collab;
pub mod dingtalk;
pub mod feishu;
pub mod health;
pub mod people;
pub mod rules;
pub mod session;
pub mod sidebar;
pub mod sidebar_tools;
pub mod timeline;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

/// Largest error body rewritten; larger ones pass unchanged.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The paths whose errors a page shows to a person: what the pages' scripts call and the
/// sign-ins.
fn for_people(path: &str) -> bool {
    path.starts_with("/web/") || path.starts_with("/auth/")
}

/// The API's error messages are bilingual (`中文 (English)`); a page shows people the
/// Chinese alone. Error answers on the pages' own endpoints keep their code and details and
/// get a message from `crate::text::error_for_people`.
pub async fn chinese_errors(req: Request, next: Next) -> Response {
    let rewrite = for_people(req.uri().path());
    let response = next.run(req).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !rewrite || !json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    if let Some(error) = value.get_mut("error").and_then(|e| e.as_object_mut()) {
        let code = error
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_default();
        let message = error.get("message").and_then(|m| m.as_str());
        if let Some(message) = message.map(|m| crate::text::error_for_people(code, m)) {
            error.insert("message".into(), message.into());
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(value.to_string()))
}
