//! Every failure answers the API's JSON error shape: a handler's panic becomes a 500
//! logged once with its message and location, and the framework's own rejections — plain
//! text or an empty body — are rewritten.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::error_response;

thread_local! {
    /// Set while a request is polled under [`catch_panic`]: its panics are answered there.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the guarded panic being unwound; only the panic hook
    /// sees the location.
    static CAUGHT: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Guarded panics are recorded for [`catch_panic`] to log; every other panic goes to the
/// hook that was there before (the default one prints it).
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let location = info
                    .location()
                    .map_or_else(|| "unknown".to_string(), |l| l.to_string());
                let message = panic_message(info.payload());
                CAUGHT.with(|c| *c.borrow_mut() = Some((message, location)));
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic without a message".to_string())
}

/// A panic while handling the request answers 500 `internal` instead of dropping the
/// connection; the response says nothing about it, the log says what and where.
pub async fn catch_panic(req: Request, next: Next) -> Response {
    install_hook();
    Guarded(Box::pin(next.run(req))).await
}

struct Guarded<F>(Pin<Box<F>>);

impl<F: Future<Output = Response>> Future for Guarded<F> {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let outer = GUARDED.with(|g| g.replace(true));
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx)));
        GUARDED.with(|g| g.set(outer));
        match polled {
            Ok(poll) => poll,
            Err(payload) => {
                let (message, location) = CAUGHT
                    .with(|c| c.borrow_mut().take())
                    .unwrap_or_else(|| (panic_message(payload.as_ref()), "unknown".into()));
                tracing::error!(panic = %message, %location, "request handler panicked");
                Poll::Ready(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                ))
            }
        }
    }
}

/// Rejection texts are short; anything longer is not one.
const MAX_REJECTION_TEXT: usize = 4096;

/// Error statuses without a body of their own type come from the framework (a body over
/// the limit, a path that is not UTF-8, a method the route does not take, a query it
/// cannot read): they become the JSON shape. Bodies meant as they are — HTML pages, the
/// callbacks' plain replies, the calendar feed, metrics — are successes or carry their own
/// content type, and pass untouched.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(|t| t.starts_with("text/plain")),
    };
    if !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", text),
        StatusCode::NOT_FOUND => ("not_found", "not found".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "request body is larger than this endpoint accepts".to_string(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid_input", text),
        s if s.is_server_error() => {
            tracing::error!(status = s.as_u16(), detail = %text, "framework error");
            ("internal", "internal error".to_string())
        }
        _ => ("rejected", text),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        message
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut json = error_response(status, code, &message);
    json.headers_mut().extend(parts.headers);
    json
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;

    use super::*;

    /// Log lines written while the test runs, as the subscriber formats them.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn boom() -> &'static str {
        panic!("secret table users_private is corrupt")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_and_is_logged_once_with_its_location() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(catch_panic));

        let res = app
            .clone()
            .oneshot(
                Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "internal", "message": "internal error"}})
        );

        let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            logged.matches("request handler panicked").count(),
            1,
            "{logged}"
        );
        assert!(logged.contains("ERROR"), "{logged}");
        assert!(
            logged.contains("secret table users_private is corrupt"),
            "{logged}"
        );
        assert!(
            logged.contains(concat!(file!(), ":")),
            "no location in {logged}"
        );

        // The service keeps serving.
        let res = app
            .oneshot(
                Request::get("/fine")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn framework_rejections_become_json_and_other_bodies_stay() {
        let app = Router::new()
            .route("/text", get(|| async { "plain success" }))
            .route(
                "/page",
                get(|| async {
                    (
                        StatusCode::FORBIDDEN,
                        axum::response::Html("<p>仅限主管查看</p>"),
                    )
                }),
            )
            .route(
                "/id/{id}",
                get(|axum::extract::Path(id): axum::extract::Path<String>| async move { id }),
            )
            .layer(axum::middleware::from_fn(json_errors));
        let call = |req: Request| {
            let app = app.clone();
            async move {
                let res = app.oneshot(req).await.unwrap();
                let status = res.status();
                let kind = res
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let allow = res.headers().get(header::ALLOW).cloned();
                let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
                (
                    status,
                    kind,
                    allow,
                    String::from_utf8(body.to_vec()).unwrap(),
                )
            }
        };
        let empty = axum::body::Body::empty;

        let (status, kind, allow, body) = call(Request::post("/text").body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(kind, "application/json");
        assert!(allow.is_some(), "the Allow header is kept");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "method_not_allowed");

        let (status, kind, _, body) = call(Request::get("/id/%FF").body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(kind, "application/json", "{body}");

        let (status, kind, _, body) = call(Request::get("/text").body(empty()).unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "plain success"));
        assert!(kind.starts_with("text/plain"));

        let (status, kind, _, body) = call(Request::get("/page").body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(kind.starts_with("text/html"));
        assert!(body.contains("仅限主管查看"));
    }
}
