//! WeCom's domain-verification file at the domain root: when an admin sets the app's trusted
//! domain (可信域名), WeCom fetches `/<file name>` from that domain and expects the file it
//! issued (docs/go-live-wecom.md, step 4). `[wecom] domain_verify_file` names the file; its
//! name was checked when the configuration loaded, and its bytes are served unchanged.

use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::config::Config;

/// `GET /<WW_verify_….txt>` when the file is configured; nothing otherwise, so the path
/// answers 404 like any other unknown one.
pub(crate) fn routes(config: &Config) -> Router<AppState> {
    let Some(wecom) = &config.wecom else {
        return Router::new();
    };
    let (Some(name), Some(path)) = (wecom.domain_verify_name(), &wecom.domain_verify_file) else {
        return Router::new();
    };
    // Read once at start: the file is small and fixed, and validation already read it.
    let body = match std::fs::read(path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            tracing::error!(
                file = %path.display(),
                error = %e,
                "wecom.domain_verify_file cannot be read: WeCom's trusted-domain check will fail"
            );
            return Router::new();
        }
    };
    Router::new().route(
        &format!("/{name}"),
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "text/plain")], body) }
        }),
    )
}
