//! Proposals: upload into the blob store with the 上传方案 point, tracked links whose first
//! open is a `document.opened` point, and the rules that refuse uploads.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{error_code, spawn_app_with, TestApp};

const PUBLIC_URL: &str = "https://closeloop.example.com";

/// A server whose blob store is a folder of the test's own.
struct Docs {
    app: TestApp,
    blobs: tempfile::TempDir,
}

async fn spawn(extra_storage: &str) -> Docs {
    let blobs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(&format!(
        "public_url = \"{PUBLIC_URL}\"\n[storage]\npath = \"{}\"\n{extra_storage}\n",
        blobs.path().display()
    ))
    .await;
    Docs { app, blobs }
}

impl Docs {
    async fn rep_and_customer(&self) -> (String, String) {
        let rep = self.app.user("李明", &["sales"]).await;
        let customer = self.app.customer("华南智造", Some(&rep)).await;
        (rep, customer)
    }

    async fn upload(
        &self,
        customer: &str,
        actor: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        self.app
            .client
            .post(
                self.app
                    .url(&format!("/api/v1/customers/{customer}/documents")),
            )
            .bearer_auth(&self.app.key)
            .query(&[
                ("actor", actor),
                ("kind", "proposal"),
                ("filename", filename),
            ])
            .header("content-type", "application/pdf")
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    async fn uploaded(&self, customer: &str, actor: &str, bytes: Vec<u8>) -> Value {
        let res = self.upload(customer, actor, "方案.pdf", bytes).await;
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }

    async fn link(&self, document: &str, actor: &str) -> Value {
        self.app
            .create(
                &format!("/api/v1/documents/{document}/links"),
                json!({"actor": actor}),
            )
            .await
    }

    async fn points(&self, customer: &str, action: &str) -> Vec<Value> {
        let page: Value = self
            .app
            .client
            .get(self.app.url("/api/v1/events"))
            .bearer_auth(&self.app.key)
            .query(&[("customer", customer), ("action", action)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["items"].as_array().unwrap().clone()
    }

    /// Every file in the blob store.
    fn stored_files(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.blobs.path(), &mut out);
        out
    }

    async fn link_row(&self, link: &str) -> (Option<i64>, Option<String>, i64) {
        sqlx::query_as(
            "SELECT first_opened_at, opened_point_id, open_count FROM document_links WHERE id = $1",
        )
        .bind(link)
        .fetch_one(&self.app.db.pool)
        .await
        .unwrap()
    }
}

/// Bytes no two tests share, larger than the 1 MiB limit other requests have.
fn file(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn token_of(link: &Value) -> String {
    let url = link["url"].as_str().unwrap();
    url.strip_prefix(&format!("{PUBLIC_URL}/d/"))
        .unwrap_or_else(|| panic!("link url {url}"))
        .to_string()
}

#[tokio::test]
async fn a_proposal_is_stored_listed_and_served_back_byte_for_byte() {
    let d = spawn("").await;
    let (rep, customer) = d.rep_and_customer().await;
    let bytes = file(1536 * 1024, 7);
    let doc = d.uploaded(&customer, &rep, bytes.clone()).await;
    let id = doc["id"].as_str().unwrap();
    assert_eq!(doc["customer"], customer.as_str());
    assert_eq!(doc["kind"], "proposal");
    assert_eq!(doc["filename"], "方案.pdf");
    assert_eq!(doc["content_type"], "application/pdf");
    assert_eq!(doc["size_bytes"], bytes.len());
    let sha = hex::encode(Sha256::digest(&bytes));
    assert_eq!(doc["sha256"], sha.as_str());
    assert_eq!(doc["uploaded_by"], rep.as_str());

    // Content addressed under the organisation, and nothing else left behind.
    let expected = d
        .blobs
        .path()
        .join(&d.app.org_id)
        .join(&sha[..2])
        .join(&sha);
    assert_eq!(d.stored_files(), vec![expected]);

    // The rep's tap is in the ledger, naming the document and never the file.
    let points = d.points(&customer, "上传方案").await;
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0]["id"], doc["point"]);
    assert_eq!(points[0]["actor"], rep.as_str());
    assert_eq!(points[0]["source"], "api");
    assert_eq!(
        points[0]["payload"],
        json!({"document": id, "kind": "proposal"})
    );

    let other = d.app.customer("北方重工", Some(&rep)).await;
    let second = d.uploaded(&customer, &rep, file(10, 1)).await;
    d.uploaded(&other, &rep, file(10, 2)).await;
    let page: Value = d
        .app
        .get(&format!("/api/v1/documents?customer={customer}&limit=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], id);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = d
        .app
        .get(&format!(
            "/api/v1/documents?customer={customer}&limit=1&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"][0]["id"], second["id"]);
    assert!(rest["next_cursor"].is_null());

    let res = d.app.get(&format!("/api/v1/documents/{id}/content")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/pdf");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename*=UTF-8''%E6%96%B9%E6%A1%88.pdf"));
    assert!(res.bytes().await.unwrap() == bytes);
    assert_eq!(
        d.app.get("/api/v1/documents/nope/content").await.status(),
        404
    );
}

#[tokio::test]
async fn oversized_empty_and_misnamed_uploads_store_nothing() {
    let d = spawn("max_upload_bytes = 4096").await;
    let (rep, customer) = d.rep_and_customer().await;

    let (status, code, _) =
        error_code(d.upload(&customer, &rep, "a.pdf", file(4097, 0)).await).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    // Without a Content-Length the limit holds while the body streams in.
    let addr = d.app.base.strip_prefix("http://").unwrap().to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/customers/{customer}/documents?actor={rep}&kind=proposal&filename=a.pdf HTTP/1.1\r\n\
         Host: {addr}\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        d.app.key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..2 {
        tcp.write_all(b"801\r\n").await.unwrap();
        tcp.write_all(&file(0x801, 3)).await.unwrap();
        tcp.write_all(b"\r\n").await.unwrap();
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    let (status, code, _) = error_code(d.upload(&customer, &rep, "a.pdf", Vec::new()).await).await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));
    for name in ["../etc/passwd", "a\\b.pdf", "", &"长".repeat(201)] {
        let (status, _, _) = error_code(d.upload(&customer, &rep, name, file(10, 0)).await).await;
        assert_eq!(status, 422, "{name:?}");
    }
    let res = d
        .app
        .client
        .post(
            d.app
                .url(&format!("/api/v1/customers/{customer}/documents")),
        )
        .bearer_auth(&d.app.key)
        .query(&[
            ("actor", rep.as_str()),
            ("kind", "contract"),
            ("filename", "a.pdf"),
        ])
        .body(file(10, 0))
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_code(res).await;
    assert_eq!(status, 422);
    assert!(message.contains("proposal"), "{message}");

    assert!(d.stored_files().is_empty(), "{:?}", d.stored_files());
    assert_eq!(d.app.count("blobs").await, 0);
    assert_eq!(d.app.count("documents").await, 0);
    assert_eq!(d.app.count("tracking_points").await, 0);

    // Exactly at the limit is fine.
    d.uploaded(&customer, &rep, file(4096, 0)).await;
    assert_eq!(d.app.count("documents").await, 1);
}

#[tokio::test]
async fn a_sent_link_writes_one_opened_point_however_often_it_is_opened() {
    let d = spawn("").await;
    let (rep, customer) = d.rep_and_customer().await;
    let bytes = file(300_000, 9);
    let doc = d.uploaded(&customer, &rep, bytes.clone()).await;
    let document = doc["id"].as_str().unwrap();

    let link = d.link(document, &rep).await;
    let link_id = link["id"].as_str().unwrap();
    let token = token_of(&link);
    assert_eq!(link["document"], document);
    assert_eq!(link["customer"], customer.as_str());
    let sent_at = chrono::DateTime::parse_from_rfc3339(link["sent_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(link["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - sent_at, chrono::Duration::days(30));

    // Only the token's hash is kept.
    let (hash,): (String,) = sqlx::query_as("SELECT token_hash FROM document_links WHERE id = $1")
        .bind(link_id)
        .fetch_one(&d.app.db.pool)
        .await
        .unwrap();
    assert_eq!(hash, hex::encode(Sha256::digest(token.as_bytes())));

    let sent = d.points(&customer, "document.sent").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["id"], link["point"]);
    assert_eq!(sent[0]["actor"], rep.as_str());
    assert_eq!(
        sent[0]["payload"],
        json!({"document": document, "link": link_id})
    );

    // A HEAD (a preview fetching headers) is served but is not an open.
    let head = d
        .app
        .client
        .head(d.app.url(&format!("/d/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(d.link_row(link_id).await, (None, None, 0));

    let opens: Vec<_> = (0..5)
        .map(|_| {
            let client = d.app.client.clone();
            let url = d.app.url(&format!("/d/{token}"));
            tokio::spawn(async move { client.get(url).send().await.unwrap() })
        })
        .collect();
    for open in opens {
        let res = open.await.unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers().clone();
        assert_eq!(h["content-type"], "application/pdf");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-security-policy"], "sandbox");
        assert_eq!(h["cache-control"], "private, no-store");
        assert_eq!(
            h["content-disposition"],
            "inline; filename*=UTF-8''%E6%96%B9%E6%A1%88.pdf"
        );
        assert!(res.bytes().await.unwrap() == bytes);
    }
    let again = d
        .app
        .client
        .get(d.app.url(&format!("/d/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);

    let opened = d.points(&customer, "document.opened").await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let p = &opened[0];
    assert_eq!(p["actor"], rep.as_str());
    assert_eq!(p["source"], "system");
    assert_eq!(p["payload"]["document"], document);
    assert_eq!(p["payload"]["link"], link_id);
    assert_eq!(p["payload"]["by"], "customer");
    // Opened from the address it was sent from (both are the test's loopback).
    assert_eq!(p["payload"]["from_sender_ip"], true);
    let (first, point, count) = d.link_row(link_id).await;
    assert!(first.is_some());
    assert_eq!(point.as_deref(), p["id"].as_str());
    assert_eq!(count, 6);

    // A second link of the same document has its own first open.
    let second = d.link(document, &rep).await;
    assert_ne!(token_of(&second), token);
    let res = d
        .app
        .client
        .get(d.app.url(&format!("/d/{}", token_of(&second))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(d.points(&customer, "document.opened").await.len(), 2);
}

#[tokio::test]
async fn expired_and_unknown_links_serve_nothing_and_record_nothing() {
    let d = spawn("").await;
    let (rep, customer) = d.rep_and_customer().await;
    let doc = d.uploaded(&customer, &rep, file(100, 4)).await;
    let link = d.link(doc["id"].as_str().unwrap(), &rep).await;
    sqlx::query("UPDATE document_links SET expires_at = $1 WHERE id = $2")
        .bind(chrono::Utc::now().timestamp_millis() - 1)
        .bind(link["id"].as_str().unwrap())
        .execute(&d.app.db.pool)
        .await
        .unwrap();
    let res = d
        .app
        .client
        .get(d.app.url(&format!("/d/{}", token_of(&link))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("链接已过期"));

    let unknown = "A".repeat(43);
    for token in [unknown.as_str(), "short", "not%20a%20token"] {
        let res = d
            .app
            .client
            .get(d.app.url(&format!("/d/{token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{token}");
    }
    assert!(d.points(&customer, "document.opened").await.is_empty());
    assert_eq!(
        d.link_row(link["id"].as_str().unwrap()).await,
        (None, None, 0)
    );

    // Links are only for documents of the caller's organisation and active senders.
    let res = d
        .app
        .post("/api/v1/documents/nope/links", &json!({"actor": rep}))
        .await;
    assert_eq!(res.status(), 404);
    let res = d
        .app
        .post(
            &format!("/api/v1/documents/{}/links", doc["id"].as_str().unwrap()),
            &json!({"actor": "0190-nobody"}),
        )
        .await;
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (422, "unknown_reference"));
}

#[tokio::test]
async fn a_frozen_rep_cannot_upload_a_proposal() {
    let d = spawn("").await;
    let (rep, customer) = d.rep_and_customer().await;
    sqlx::query(
        "INSERT INTO action_freezes (id, org_id, user_id, customer_id, rule, reason, frozen_at) \
         VALUES ($1, $2, $3, $4, 'rule.repeat_limit', 'test', $5)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&d.app.org_id)
    .bind(&rep)
    .bind(&customer)
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&d.app.db.pool)
    .await
    .unwrap();
    let res = d.upload(&customer, &rep, "方案.pdf", file(100, 5)).await;
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (409, "action_frozen"));
    assert_eq!(d.app.count("documents").await, 0);
    assert_eq!(d.app.count("blobs").await, 0);
    assert!(d.points(&customer, "上传方案").await.is_empty());
    assert_eq!(d.points(&customer, "rule.frozen").await.len(), 1);

    // Another rep on the same customer is not frozen.
    let other = d.app.user("王芳", &["sales"]).await;
    d.uploaded(&customer, &other, file(100, 5)).await;
    assert_eq!(d.app.count("documents").await, 1);
}

#[tokio::test]
async fn the_sidebar_uploads_and_sends_with_its_session() {
    let d = spawn("").await;
    let (rep, customer) = d.rep_and_customer().await;
    let (cookie, csrf) = closeloop::http::pages::session::create(
        &d.app.db,
        chrono::Utc::now().timestamp_millis(),
        &d.app.org_id,
        &rep,
        "wecom",
    )
    .await
    .unwrap();
    let cookie = format!("{}={cookie}", closeloop::http::pages::session::COOKIE);
    let upload = |csrf: Option<&str>| {
        let mut req = d
            .app
            .client
            .post(d.app.url(&format!("/web/customers/{customer}/documents")))
            .header("cookie", &cookie)
            .header("content-type", "application/vnd.ms-powerpoint")
            .query(&[("kind", "proposal"), ("filename", "报价 v2.ppt")])
            .body(file(2048, 6));
        if let Some(c) = csrf {
            req = req.header("x-csrf-token", c);
        }
        req.send()
    };
    let (status, _, _) = error_code(upload(None).await.unwrap()).await;
    assert_eq!(status, 403);
    let (status, _, _) = error_code(upload(Some("wrong")).await.unwrap()).await;
    assert_eq!(status, 403);
    assert!(d.stored_files().is_empty());
    let res = upload(Some(&csrf)).await.unwrap();
    assert_eq!(res.status(), 201);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["uploaded_by"], rep.as_str());
    let points = d.points(&customer, "上传方案").await;
    assert_eq!(points.len(), 1);
    assert_eq!(points[0]["source"], "sidebar");

    let send = d
        .app
        .client
        .post(d.app.url(&format!(
            "/web/documents/{}/links",
            doc["id"].as_str().unwrap()
        )))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(send.status(), 201);
    let link: Value = send.json().await.unwrap();
    assert_eq!(link["sent_by"], rep.as_str());
    let sent = d.points(&customer, "document.sent").await;
    assert_eq!(sent[0]["source"], "sidebar");

    // The rep checking the link is not the customer opening it.
    let url = d.app.url(&format!("/d/{}", token_of(&link)));
    let own = d
        .app
        .client
        .get(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(d.points(&customer, "document.opened").await.is_empty());
    let theirs = d.app.client.get(&url).send().await.unwrap();
    assert_eq!(theirs.status(), 200);
    assert_eq!(d.points(&customer, "document.opened").await.len(), 1);

    // Without a session nothing is accepted.
    let res = d
        .app
        .client
        .post(d.app.url(&format!("/web/customers/{customer}/documents")))
        .query(&[("kind", "proposal"), ("filename", "a.pdf")])
        .body(file(10, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
