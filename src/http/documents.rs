//! Document upload, tracked links, and the public link a customer opens.
//!
//! Uploads are the raw file as the request body (its media type in `Content-Type`), read
//! here against `storage.max_upload_bytes` rather than the global `max_body_bytes`: the
//! limit comes from configuration, which `routes()` does not see, so the handler reads the
//! body itself instead of through a `DefaultBodyLimit` layer.

use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::{ApiJson, ApiQuery, AppState, ClientIp, Reader, Writer};
use crate::documents::{
    self, Document, DocumentFilter, Link, NewDocument, NewLink, Opener, Opening, Upload,
};
use crate::error::{Error, Result};
use crate::http::pages::session::Session;
use crate::page::{Page, PageParams};
use crate::tracking::Source;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/web/customers/{id}/documents", post(web_upload))
        .route("/web/documents/{id}/links", post(web_link))
        .route("/api/v1/customers/{id}/documents", post(api_upload))
        .route("/api/v1/documents", get(api_list))
        .route("/api/v1/documents/{id}", get(api_get))
        .route("/api/v1/documents/{id}/content", get(api_content))
        .route("/api/v1/documents/{id}/links", post(api_link))
        .route("/d/{token}", get(open))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApiUploadQuery {
    /// User id of the rep uploading.
    actor: String,
    /// `proposal`, or another kind an upload action of the rule set declares.
    kind: String,
    /// The file's name as people see it (1 to 200 characters, no path).
    #[param(min_length = 1, max_length = 200)]
    filename: String,
    /// A deal of this customer the document belongs to.
    deal: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebUploadQuery {
    kind: String,
    filename: String,
    deal: Option<String>,
}

// Describes a raw file body in the OpenAPI document (a `Vec<u8>` reads as integers there).
/// The file's raw bytes.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct FileBytes(Vec<u8>);

/// A link to send; the sender is the actor.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLinkBody {
    /// User id of the rep sending the document.
    actor: String,
    /// Days until the link stops working, 1 to 365 (default 30).
    #[schema(minimum = 1, maximum = 365)]
    expires_in_days: Option<i64>,
}

/// The client's user agent, cut to what the ledger keeps.
fn user_agent(headers: &HeaderMap) -> Result<Option<String>> {
    headers
        .get(header::USER_AGENT)
        .map(|v| {
            v.to_str()
                .map(|ua| ua.chars().take(512).collect())
                .map_err(|_| Error::invalid("User-Agent must be ASCII"))
        })
        .transpose()
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>> {
    headers
        .get(&name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::invalid(format!("{name} must be ASCII")))
        })
        .transpose()
}

fn too_large(max: usize) -> Error {
    Error::PayloadTooLarge(format!(
        "文件超过上限 {max} 字节 (the file is larger than storage.max_upload_bytes, {max} bytes)"
    ))
}

/// Reads an upload's body, refusing it as soon as it is known to exceed `max`.
async fn read_upload(headers: &HeaderMap, mut body: Body, max: usize) -> Result<Bytes> {
    let declared =
        header_text(headers, header::CONTENT_LENGTH)?.and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame
            .map_err(|_| Error::MalformedBody("上传中断 (the upload was interrupted)".into()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large(max));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// The time zone of the organisation a signed-in person belongs to.
async fn org_tz(s: &AppState, org_id: &str) -> Result<chrono_tz::Tz> {
    if org_id == s.default_org.id {
        return Ok(s.default_org.timezone);
    }
    crate::directory::orgs::by_id(&s.db, org_id)
        .await?
        .map(|o| o.timezone)
        .ok_or(Error::NotFound {
            what: "organisation",
        })
}

struct UploadRequest {
    org_id: String,
    actor: String,
    customer: String,
    deal: Option<String>,
    kind: String,
    filename: String,
    source: Source,
    api_key_id: Option<String>,
    platform: Option<String>,
    tz: chrono_tz::Tz,
}

/// Checks what can be checked before the body is read, reads it, stores it.
async fn upload(
    s: &AppState,
    r: UploadRequest,
    ip: ClientIp,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let new = NewDocument {
        org_id: r.org_id,
        actor: r.actor,
        customer: r.customer,
        deal: r.deal,
        kind: r.kind,
        filename: r.filename,
        content_type: header_text(headers, header::CONTENT_TYPE)?.map(str::to_string),
        source: r.source,
        client_ip: ip.0.map(|i| i.to_string()),
        user_agent: user_agent(headers)?,
        api_key_id: r.api_key_id,
        platform: r.platform,
    };
    let checked = Upload::check(&s.rules, new).await?;
    let bytes = read_upload(headers, body, s.config.storage.max_upload_bytes).await?;
    let doc = documents::upload(&s.ledger, &s.cipher, &s.blobs, checked, bytes, r.tz).await?;
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

/// `POST /web/customers/{id}/documents?kind=proposal&filename=…`: the sidebar's upload.
async fn web_upload(
    State(s): State<AppState>,
    session: Session,
    ip: ClientIp,
    Path(customer): Path<String>,
    ApiQuery(q): ApiQuery<WebUploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    session.require_csrf(&headers)?;
    let tz = org_tz(&s, &session.org_id).await?;
    let r = UploadRequest {
        org_id: session.org_id,
        actor: session.user_id,
        customer,
        deal: q.deal,
        kind: q.kind,
        filename: q.filename,
        source: Source::Sidebar,
        api_key_id: None,
        // Where the sidebar runs (`dev` for the demo's sign-in), as taps record it.
        platform: session.platform.clone(),
        tz,
    };
    upload(&s, r, ip, &headers, body).await
}

#[utoipa::path(post, path = "/api/v1/customers/{id}/documents", tag = "documents",
    params(("id" = String, Path, description = "Customer id"), ApiUploadQuery),
    request_body(content = FileBytes, content_type = "*/*",
        description = "The file itself; its media type in Content-Type is stored and served back"),
    responses((status = 201, description = "Stored, with the upload action's tracking point", body = Document), crate::http::api::WriteErrors, (status = 409, description = "Refused by an anti-fraud rule (e.g. `action_frozen`)", body = crate::http::api::ErrorBody), (status = 413, description = "Larger than storage.max_upload_bytes", body = crate::http::api::ErrorBody)))]
pub async fn api_upload(
    State(s): State<AppState>,
    Writer(p): Writer,
    ip: ClientIp,
    Path(customer): Path<String>,
    ApiQuery(q): ApiQuery<ApiUploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let r = UploadRequest {
        org_id: p.org_id,
        actor: q.actor,
        customer,
        deal: q.deal,
        kind: q.kind,
        filename: q.filename,
        source: Source::Api,
        api_key_id: Some(p.api_key_id),
        platform: None,
        tz: p.tz,
    };
    upload(&s, r, ip, &headers, body).await
}

#[utoipa::path(get, path = "/api/v1/documents", tag = "documents", params(PageParams, DocumentFilter),
    responses((status = 200, description = "A page of documents, oldest first", body = Page<Document>), crate::http::api::ReadErrors))]
pub async fn api_list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<DocumentFilter>,
) -> Result<Json<Page<Document>>> {
    Ok(Json(
        documents::list(&s.db, &s.cipher, &p.org_id, &f, &page.validate()?).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/documents/{id}", tag = "documents",
    responses((status = 200, body = Document), crate::http::api::ReadErrors))]
pub async fn api_get(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<Document>> {
    Ok(Json(
        documents::get(&s.db, &s.cipher, &p.org_id, &id).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/documents/{id}/content", tag = "documents",
    responses((status = 200, description = "The file, as an attachment", content_type = "*/*", body = FileBytes), crate::http::api::ReadErrors))]
pub async fn api_content(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Response> {
    let (doc, bytes) = documents::content(&s.db, &s.cipher, &s.blobs, &p.org_id, &id).await?;
    Ok(file_response(
        "attachment",
        &doc.filename,
        &doc.content_type,
        bytes,
    ))
}

struct LinkRequest {
    org_id: String,
    document: String,
    actor: String,
    expires_in_days: Option<i64>,
    source: Source,
    api_key_id: Option<String>,
    platform: Option<String>,
    tz: chrono_tz::Tz,
}

async fn create_link(
    s: &AppState,
    r: LinkRequest,
    ip: ClientIp,
    headers: &HeaderMap,
) -> Result<Response> {
    let new = NewLink {
        org_id: r.org_id,
        document: r.document,
        actor: r.actor,
        expires_in_days: r.expires_in_days,
        source: r.source,
        client_ip: ip.0.map(|i| i.to_string()),
        user_agent: user_agent(headers)?,
        api_key_id: r.api_key_id,
        platform: r.platform,
    };
    let link =
        documents::create_link(&s.db, s.clock.now_ms(), &s.config.public_url, r.tz, new).await?;
    Ok((StatusCode::CREATED, Json(link)).into_response())
}

/// `POST /web/documents/{id}/links`: the signed-in rep sends a document.
async fn web_link(
    State(s): State<AppState>,
    session: Session,
    ip: ClientIp,
    Path(document): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    session.require_csrf(&headers)?;
    let tz = org_tz(&s, &session.org_id).await?;
    let r = LinkRequest {
        org_id: session.org_id,
        document,
        actor: session.user_id,
        expires_in_days: None,
        source: Source::Sidebar,
        api_key_id: None,
        // Where the sidebar runs (`dev` for the demo's sign-in), as taps record it.
        platform: session.platform.clone(),
        tz,
    };
    create_link(&s, r, ip, &headers).await
}

#[utoipa::path(post, path = "/api/v1/documents/{id}/links", tag = "documents", request_body = NewLinkBody,
    responses((status = 201, description = "The link (its URL is shown only here) and its `document.sent` point", body = Link), crate::http::api::WriteErrors))]
pub async fn api_link(
    State(s): State<AppState>,
    Writer(p): Writer,
    ip: ClientIp,
    Path(document): Path<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<NewLinkBody>,
) -> Result<Response> {
    let r = LinkRequest {
        org_id: p.org_id,
        document,
        actor: b.actor,
        expires_in_days: b.expires_in_days,
        source: Source::Api,
        api_key_id: Some(p.api_key_id),
        platform: None,
        tz: p.tz,
    };
    create_link(&s, r, ip, &headers).await
}

/// `GET /d/{token}`: what the customer opens. A signed-in colleague (the rep checking
/// the link) and HEAD requests are served without counting as the customer's open.
async fn open(
    State(s): State<AppState>,
    method: Method,
    colleague: std::result::Result<Session, Error>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
) -> Result<Response> {
    let opener = Opener {
        counts: method != Method::HEAD && colleague.is_err(),
        ip: ip.map(|i| i.to_string()),
    };
    Ok(
        match documents::open(
            &s.db,
            &s.cipher,
            &s.blobs,
            s.clock.now_ms(),
            &token,
            &opener,
        )
        .await?
        {
            Opening::File {
                filename,
                content_type,
                bytes,
            } => file_response("inline", &filename, &content_type, bytes),
            Opening::Expired => page(
                StatusCode::GONE,
                "链接已过期",
                "请联系发送给您的销售顾问重新发送。",
            ),
            Opening::Unknown => page(
                StatusCode::NOT_FOUND,
                "链接无效",
                "请检查链接是否完整，或联系发送给您的销售顾问。",
            ),
        },
    )
}

/// RFC 5987 `attr-char`: everything else in a `filename*` value is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Uploaded content is untrusted: never sniffed, sandboxed if it is a page, never cached
/// by shared caches, and no Referer carries the link's token onwards.
pub(crate) fn file_response(
    disposition: &str,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Response {
    let disposition = format!(
        "{disposition}; filename*=UTF-8''{}",
        utf8_percent_encode(filename, ATTR_CHAR)
    );
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// A small page for the customer's browser.
fn page(status: StatusCode, title: &str, hint: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body style=\"font-family:sans-serif;text-align:center;padding:3em 1em\">\
         <h1>{title}</h1><p>{hint}</p></body></html>"
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_percent_encoded_for_content_disposition() {
        let res = file_response("inline", "报价 方案\"v2\".pdf", "application/pdf", vec![1]);
        assert_eq!(
            res.headers()[header::CONTENT_DISPOSITION],
            "inline; filename*=UTF-8''%E6%8A%A5%E4%BB%B7%20%E6%96%B9%E6%A1%88%22v2%22.pdf"
        );
        assert_eq!(res.headers()[header::CONTENT_SECURITY_POLICY], "sandbox");
    }

    #[test]
    fn the_api_operations_describe_themselves() {
        #[derive(utoipa::OpenApi)]
        #[openapi(paths(api_upload, api_list, api_get, api_content, api_link))]
        struct Doc;
        let doc = serde_json::to_value(<Doc as utoipa::OpenApi>::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.contains_key("/api/v1/customers/{id}/documents"));
        assert!(paths.contains_key("/api/v1/documents/{id}/links"));
        assert!(
            doc["components"]["schemas"]["Document"].is_object(),
            "{doc}"
        );
    }
}
