//! The API's contract: permission is decided before anything a caller sent is read, and the
//! OpenAPI document describes every route as the server answers it.

use closeloop::access::ApiKeyRole;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{error_code, spawn_app, TestApp};

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// A concrete path for a templated one: every `{param}` becomes `x`.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push('x');
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

async fn openapi(app: &TestApp) -> Value {
    let res = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Every documented operation, as (method, path template, operation).
fn operations(doc: &Value) -> Vec<(Method, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            out.push((method, path.clone(), op.clone()));
        }
    }
    out
}

async fn send_malformed(app: &TestApp, key: &str, method: Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body("{\"nam")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_without_the_permission_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    let read_only = app.key_with_role(ApiKeyRole::ReadOnly).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let doc = openapi(&app).await;

    let writes: Vec<_> = operations(&doc)
        .into_iter()
        .filter(|(m, _, _)| *m != Method::GET)
        .collect();
    assert!(writes.len() > 20, "{} writes documented", writes.len());
    for (method, template, _) in writes {
        let path = concrete(&template);
        let res = send_malformed(&app, &read_only, method.clone(), &path).await;
        let (status, code, message) = error_code(res).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "forbidden"),
            "read-only {method} {template}: {message}"
        );
    }

    // The shape of a body the key may not send is not revealed either.
    let res = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&read_only)
        .json(&serde_json::json!({"nam": 1}))
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_code(res).await;
    assert_eq!(status, 403);
    assert!(!message.contains("name"), "{message}");

    // Admin-only routes refuse an integration key before its body or query.
    let res = send_malformed(&app, &integration, Method::POST, "/api/v1/webhooks").await;
    assert_eq!(error_code(res).await.0, 403);
    let res = app
        .client
        .get(app.url("/api/v1/jobs?limit=many"))
        .bearer_auth(&integration)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await.0, 403);

    // A key that may write still learns what was wrong with its body.
    let res = send_malformed(&app, &integration, Method::POST, "/api/v1/users").await;
    assert_eq!(error_code(res).await.0, 400);
    let res = app
        .client
        .get(app.url("/api/v1/jobs?limit=many"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await.0, 422);
}

/// The API paths the router declares, read from the router's source: `.route("…", …)`
/// literals (relative to `/api/v1` in the API module, absolute in the documents module).
fn routed_paths() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let literals = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let mut out = Vec::new();
        for chunk in text.split(".route(").skip(1) {
            let start = chunk.find('"').unwrap() + 1;
            let len = chunk[start..].find('"').unwrap();
            out.push(chunk[start..start + len].to_string());
        }
        out
    };
    let mut paths: Vec<String> = literals("src/http/api/mod.rs")
        .into_iter()
        .map(|p| format!("/api/v1{p}"))
        .collect();
    paths.extend(
        literals("src/http/documents.rs")
            .into_iter()
            .filter(|p| p.starts_with("/api/v1/")),
    );
    paths.retain(|p| p != "/api/v1/openapi.json");
    paths
}

#[tokio::test]
async fn every_api_route_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let paths = routed_paths();
    assert!(paths.len() > 40, "{paths:?}");
    let mut routed = 0;
    for template in &paths {
        for method in METHODS {
            let res = app
                .client
                .request(method.clone(), app.url(&concrete(template)))
                .send()
                .await
                .unwrap();
            if res.status() == 405 {
                continue;
            }
            routed += 1;
            // Authentication comes before anything else on every API route.
            assert_eq!(res.status(), 401, "{method} {template}");
            let op = &doc["paths"][template][method.as_str().to_lowercase()];
            assert!(op.is_object(), "{method} {template} is not documented");
        }
    }
    let documented = operations(&doc).len();
    assert_eq!(
        routed, documented,
        "routes answered vs operations documented"
    );
}

#[tokio::test]
async fn the_openapi_document_declares_pages_errors_and_limits() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let schemas = &doc["components"]["schemas"];
    let success_schema = |path: &str| -> String {
        doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // The two lists that are answered whole are pages like every other list.
    for (path, page) in [
        ("/api/v1/customers/{id}/owners", "Page_Ownership"),
        ("/api/v1/webhooks", "Page_Webhook"),
    ] {
        assert_eq!(success_schema(path), format!("#/components/schemas/{page}"));
        let schema = &schemas[page];
        assert_eq!(schema["properties"]["items"]["type"], "array", "{schema}");
        assert!(schema["properties"]["next_cursor"].is_object(), "{schema}");
    }

    let error_ref = "#/components/schemas/ErrorBody";
    for (method, path, op) in operations(&doc) {
        let responses = &op["responses"];
        for status in ["401", "403"] {
            assert_eq!(
                responses[status]["content"]["application/json"]["schema"]["$ref"], error_ref,
                "{method} {path} does not document {status}"
            );
        }
        let reads_body = op["requestBody"].is_object();
        for status in ["400", "413"] {
            if reads_body {
                assert!(
                    responses[status].is_object(),
                    "{method} {path} reads a body but does not document {status}"
                );
            }
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        if !params.is_empty() {
            assert!(
                responses["422"].is_object(),
                "{method} {path} takes parameters but does not document 422"
            );
        }
        if let Some(limit) = params.iter().find(|p| p["name"] == "limit") {
            assert_eq!(limit["schema"]["minimum"], 1, "{method} {path}");
            assert_eq!(
                limit["schema"]["maximum"],
                closeloop::page::MAX_LIMIT,
                "{method} {path}"
            );
        }
        // A list answers a page and takes the page parameters.
        let success = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_default();
        let answered_whole = path.ends_with("/owners") || path == "/api/v1/webhooks";
        if success.starts_with("#/components/schemas/Page_") && !answered_whole {
            assert!(
                params.iter().any(|p| p["name"] == "limit"),
                "{method} {path} answers a page but takes no limit"
            );
        }
    }
    let error = &schemas["ErrorBody"]["properties"]["error"];
    assert_eq!(error["$ref"], "#/components/schemas/ErrorDetail");
    assert_eq!(
        schemas["ErrorDetail"]["required"],
        serde_json::json!(["code", "message"])
    );
}
