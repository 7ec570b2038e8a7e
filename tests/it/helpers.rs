use std::sync::Arc;

use closeloop::access::{apikeys, ApiKeyRole, NewApiKey};
use closeloop::clock::SystemClock;
use closeloop::db::Db;
use closeloop::{App, Config};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TEST_DATA_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub org_id: String,
    /// An admin API key of the default organisation.
    pub key: String,
    pub database_url: String,
    /// The app's job worker, not looping: tests step it.
    pub worker: closeloop::jobs::Worker,
    /// The data-key cipher the server loaded.
    pub cipher: closeloop::security::Cipher,
    /// The server's access log (tests flush it).
    pub access_log: closeloop::access_log::AccessLog,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A database URL of its own for one test.
pub async fn fresh_database(dir: &std::path::Path) -> String {
    match std::env::var("CLOSELOOP_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("cltest_{}", uuid::Uuid::new_v4().simple());
            let admin = Db::connect(&base)
                .await
                .expect("connect to CLOSELOOP_TEST_POSTGRES_URL");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin.pool)
                .await
                .expect("create test schema");
            admin.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{schema}")
        }
        _ => format!("sqlite://{}/closeloop.db", dir.display()),
    }
}

/// The SQL migrations named before `version`.
pub async fn migrate_to_before(db: &Db, version: &str) {
    let old = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("migrations").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < version {
            std::fs::copy(&path, old.path().join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(&db.pool)
        .await
        .unwrap();
}

pub fn on_postgres() -> bool {
    std::env::var("CLOSELOOP_TEST_POSTGRES_URL").is_ok_and(|v| !v.is_empty())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

/// Starts the server; `extra` is TOML appended to the test configuration.
pub async fn spawn_app_with(extra: &str) -> TestApp {
    spawn_app_clocked(extra, Arc::new(SystemClock)).await
}

/// Starts the server on a clock the test controls (a [`ManualClock`]).
pub async fn spawn_app_clocked(extra: &str, clock: closeloop::clock::SharedClock) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(dir.path()).await;
    let data_key = if on_postgres() {
        format!("data_key = \"{TEST_DATA_KEY}\"")
    } else {
        String::new()
    };
    // Tests step the worker themselves unless they ask for the loop.
    let jobs = if extra.contains("[jobs]") {
        ""
    } else {
        "[jobs]\nworker = false\n"
    };
    let toml =
        format!("database_url = \"{database_url}\"\n{extra}\n{jobs}[security]\n{data_key}\n");
    let config = Config::from_toml_only(&toml).expect("test config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = App::build(config, clock).await.expect("build app");
    let db = app.state.db.clone();
    let worker = app.worker.clone();
    let cipher = app.state.cipher.clone();
    let access_log = app.state.access_log.clone();
    let org_id = app.state.default_org.id.clone();
    let (_, key) = apikeys::create(
        &db,
        chrono::Utc::now().timestamp_millis(),
        NewApiKey {
            org_id: org_id.clone(),
            name: "test-admin".into(),
            role: ApiKeyRole::Admin,
            expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, None, async move {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        db,
        org_id,
        key,
        database_url,
        worker,
        cipher,
        access_log,
        stop: Some(stop),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A key of another role for the default organisation.
    pub async fn key_with_role(&self, role: ApiKeyRole) -> String {
        apikeys::create(
            &self.db,
            chrono::Utc::now().timestamp_millis(),
            NewApiKey {
                org_id: self.org_id.clone(),
                name: format!("test-{}", role.as_str()),
                role,
                expires_at_ms: None,
            },
        )
        .await
        .unwrap()
        .1
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs and expects 201; returns the body.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let res = self.post(path, &body).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "POST {path} answered {body}");
        body
    }

    /// A page read as `user`, signed in by a fresh web session: (status, body).
    pub async fn page_as(&self, user: &str, path: &str) -> (u16, String) {
        let (cookie, _) = closeloop::http::pages::session::create(
            &self.db,
            chrono::Utc::now().timestamp_millis(),
            &self.org_id,
            user,
            "dev",
        )
        .await
        .unwrap();
        let res = self
            .client
            .get(self.url(path))
            .header(
                "cookie",
                format!("{}={cookie}", closeloop::http::pages::session::COOKIE),
            )
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    pub async fn user(&self, name: &str, roles: &[&str]) -> String {
        let u = self
            .create("/api/v1/users", json!({"name": name, "roles": roles}))
            .await;
        u["id"].as_str().unwrap().to_string()
    }

    pub async fn customer(&self, name: &str, owner: Option<&str>) -> String {
        let c = self
            .create(
                "/api/v1/customers",
                json!({"name": name, "owner": owner, "contacts": [{"name": "张总", "phones": ["13800138000"]}]}),
            )
            .await;
        c["id"].as_str().unwrap().to_string()
    }

    pub async fn count(&self, table: &str) -> i64 {
        let row: (i64,) = sqlx::query_as(&format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"))
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        row.0
    }

    /// Stops the server gracefully and waits until it has finished. The returned folder
    /// holds the SQLite database; keep it to inspect what was written.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap().unwrap();
        }
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self._dir, placeholder)
    }
}

pub async fn error_code(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.expect("error body is JSON");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(start_ms)))
    }

    pub fn advance(&self, d: std::time::Duration) {
        self.0
            .fetch_add(d.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl closeloop::clock::Clock for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        closeloop::clock::from_ms(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}
