//! The real `closeloop` binary: help, `config check`, configuration errors, `apikey`,
//! `migrate`, and the data key file written on first start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use closeloop::access::{apikeys, ApiKeyRole};
use closeloop::db::Db;
use sqlx::Row;

use crate::helpers::TEST_DATA_KEY;

/// The binary, run in `dir`, with no `CLOSELOOP_*` variable of the test's own environment
/// (the test sets what it needs) and default logging.
pub(crate) fn closeloop(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_closeloop"));
    cmd.current_dir(dir).env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLOSELOOP_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Output {
    fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run closeloop");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.success,
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out
}

/// Runs a command expected to fail; returns its stderr, which must be a single line.
fn fails_with_one_line(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(!out.success, "{cmd:?} succeeded: {}", out.both());
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout on failure: {}",
        out.stdout
    );
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {}", out.stderr);
    lines[0].to_string()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("closeloop.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}/{file}", dir.display())
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn help_is_available_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let top = ok(closeloop(dir.path()).arg("--help")).stdout;
    for word in [
        "serve",
        "migrate",
        "config",
        "apikey",
        "demo",
        "--config",
        "--log-format",
    ] {
        assert!(top.contains(word), "`{word}` missing from --help:\n{top}");
    }
    let apikey = ok(closeloop(dir.path()).args(["apikey", "--help"])).stdout;
    for word in ["create", "revoke", "list"] {
        assert!(apikey.contains(word), "`{word}` missing:\n{apikey}");
    }
    let create = ok(closeloop(dir.path()).args(["apikey", "create", "--help"])).stdout;
    for word in [
        "--name",
        "--role",
        "--expires",
        "--org",
        "admin",
        "integration",
        "read-only",
    ] {
        assert!(create.contains(word), "`{word}` missing:\n{create}");
    }
    let config = ok(closeloop(dir.path()).args(["config", "--help"])).stdout;
    assert!(config.contains("check"), "{config}");
    for cmd in ["serve", "migrate", "demo"] {
        let help = ok(closeloop(dir.path()).args([cmd, "--help"])).stdout;
        assert!(help.contains("Usage"), "{cmd}: {help}");
    }

    // Misuse is an error, not a silent default.
    assert!(!run(&mut closeloop(dir.path())).success);
    let out = run(closeloop(dir.path()).args(["apikey", "create"]));
    assert!(!out.success);
    assert!(out.stderr.contains("--name"), "{}", out.stderr);
    let out =
        run(closeloop(dir.path()).args(["apikey", "create", "--name", "x", "--role", "root"]));
    assert!(!out.success);
    assert!(out.stderr.contains("root"), "{}", out.stderr);
}

const PG_PASSWORD: &str = "Pg-pa55word-x9";
const WECOM_SECRET: &str = "wecom-app-secret-7f3a";
const WECOM_CONTACT_SECRET: &str = "wecom-contact-secret-19bd";
const WECOM_TOKEN: &str = "wecomT0kenQ";
const WECOM_AES: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const DING_SECRET: &str = "ding-app-secret-55aa";
const DING_TOKEN: &str = "dingT0kenZ";
const DING_AES: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
const FEISHU_SECRET: &str = "feishu-app-secret-c0ffee";
const FEISHU_ENCRYPT: &str = "feishu-encrypt-key-beef";
const OLD_DATA_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn config_with_secrets() -> String {
    format!(
        r#"
listen = "127.0.0.1:8181"
database_url = "postgres://closeloop:{PG_PASSWORD}@db.internal:5432/closeloop"
timezone = "Asia/Shanghai"

[security]
data_key = "{TEST_DATA_KEY}"
old_data_keys = ["{OLD_DATA_KEY}"]

[wecom]
corp_id = "wwfromfile"
agent_id = 1000002
secret = "{WECOM_SECRET}"
contact_secret = "{WECOM_CONTACT_SECRET}"
token = "{WECOM_TOKEN}"
encoding_aes_key = "{WECOM_AES}"

[dingtalk]
app_key = "dingappkey"
app_secret = "{DING_SECRET}"
token = "{DING_TOKEN}"
aes_key = "{DING_AES}"

[feishu]
app_id = "cli_a1b2c3"
app_secret = "{FEISHU_SECRET}"
encrypt_key = "{FEISHU_ENCRYPT}"
"#
    )
}

#[test]
fn config_check_prints_the_effective_configuration_with_every_secret_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_with_secrets());
    let out = ok(closeloop(dir.path())
        .args(["config", "check", "--config"])
        .arg(&path)
        .env(
            "CLOSELOOP_FEISHU__VERIFICATION_TOKEN",
            "feishu-verify-from-env",
        ));
    let shown = out.both();
    for secret in [
        PG_PASSWORD,
        TEST_DATA_KEY,
        OLD_DATA_KEY,
        WECOM_SECRET,
        WECOM_CONTACT_SECRET,
        WECOM_TOKEN,
        WECOM_AES,
        DING_SECRET,
        DING_TOKEN,
        DING_AES,
        FEISHU_SECRET,
        FEISHU_ENCRYPT,
        "feishu-verify-from-env",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    assert!(out.stdout.contains("[redacted]"), "{}", out.stdout);

    // It is the effective configuration: non-secret values and defaults are shown.
    let effective: toml::Value = toml::from_str(&out.stdout).expect("stdout is TOML");
    assert_eq!(effective["listen"].as_str(), Some("127.0.0.1:8181"));
    assert_eq!(
        effective["database_url"].as_str(),
        Some("postgres://closeloop:[redacted]@db.internal:5432/closeloop")
    );
    assert_eq!(effective["wecom"]["corp_id"].as_str(), Some("wwfromfile"));
    assert_eq!(effective["wecom"]["agent_id"].as_str(), Some("1000002"));
    assert_eq!(effective["wecom"]["secret"].as_str(), Some("[redacted]"));
    assert_eq!(
        effective["wecom"]["api_base"].as_str(),
        Some("https://qyapi.weixin.qq.com")
    );
    assert_eq!(
        effective["security"]["data_key"].as_str(),
        Some("[redacted]")
    );
    assert_eq!(
        effective["feishu"]["verification_token"].as_str(),
        Some("[redacted]"),
        "a secret from the environment is redacted too"
    );
    assert_eq!(
        effective["dingtalk"]["app_key"].as_str(),
        Some("dingappkey")
    );

    // The same file found through CLOSELOOP_CONFIG.
    let out = ok(closeloop(dir.path())
        .args(["config", "check"])
        .env("CLOSELOOP_CONFIG", &path));
    assert!(out.stdout.contains("wwfromfile"));
    assert!(!out.both().contains(WECOM_SECRET));
}

#[test]
fn environment_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:8080\"\n[wecom]\ncorp_id = \"wwfromfile\"\nagent_id = 1000002\n\
             secret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"{WECOM_AES}\"\n"
        ),
    );
    // No --config: ./closeloop.toml in the working directory is read.
    let out = ok(closeloop(dir.path())
        .args(["config", "check"])
        .env("CLOSELOOP_WECOM__CORP_ID", "wwfromenv")
        .env("CLOSELOOP_LISTEN", "0.0.0.0:9999")
        .env("CLOSELOOP_TIMEZONE", "Europe/Berlin")
        .env("CLOSELOOP_WECOM__SECRET", "env-secret-abc123")
        // Not a configuration key: ignored rather than rejected as unknown.
        .env(
            "CLOSELOOP_TEST_POSTGRES_URL",
            "postgres://ignored@nowhere/x",
        ));
    let effective: toml::Value = toml::from_str(&out.stdout).expect("stdout is TOML");
    assert_eq!(effective["wecom"]["corp_id"].as_str(), Some("wwfromenv"));
    assert_eq!(effective["listen"].as_str(), Some("0.0.0.0:9999"));
    assert_eq!(effective["timezone"].as_str(), Some("Europe/Berlin"));
    assert!(!out.stdout.contains("wwfromfile"), "{}", out.stdout);
    assert!(!out.both().contains("env-secret-abc123"));

    // Without the variables the file's values are back.
    let out = ok(closeloop(dir.path()).args(["config", "check"]));
    let effective: toml::Value = toml::from_str(&out.stdout).unwrap();
    assert_eq!(effective["wecom"]["corp_id"].as_str(), Some("wwfromfile"));
    assert_eq!(effective["listen"].as_str(), Some("127.0.0.1:8080"));
}

#[test]
fn an_invalid_value_stops_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let check = |file: &str, env: &[(&str, &str)], command: &[&str]| {
        let path = write_config(dir.path(), file);
        let mut cmd = closeloop(dir.path());
        cmd.args(command).arg("--config").arg(&path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        fails_with_one_line(&mut cmd)
    };
    let check_cmd = ["config", "check"];

    let line = check("timezone = \"Mars/Base\"\n", &[], &check_cmd);
    assert!(line.contains("`timezone`"), "{line}");
    assert!(line.contains("Mars/Base"), "{line}");

    let line = check("", &[("CLOSELOOP_LISTEN", "nope")], &check_cmd);
    assert!(line.contains("listen"), "{line}");

    let line = check("databse_url = \"sqlite://x.db\"\n", &[], &check_cmd);
    assert!(line.contains("databse_url"), "{line}");

    let line = check(
        &format!("database_url = \"postgres://u:{PG_PASSWORD}@localhost/db\"\n"),
        &[],
        &check_cmd,
    );
    assert!(line.contains("security.data_key"), "{line}");
    assert!(!line.contains(PG_PASSWORD), "{line}");

    let line = check(
        "[wecom]\ncorp_id = \"ww1\"\nagent_id = 1\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"short\"\n",
        &[],
        &check_cmd,
    );
    assert!(line.contains("wecom.encoding_aes_key"), "{line}");
    assert!(!line.contains("short"), "the secret is not echoed: {line}");

    let line = check("[security]\ndata_key = \"not-base64!\"\n", &[], &check_cmd);
    assert!(line.contains("security.data_key"), "{line}");
    assert!(!line.contains("not-base64!"), "{line}");

    let line = check("", &[("CLOSELOOP_MAX_BODY_BYTES", "12")], &check_cmd);
    assert!(line.contains("max_body_bytes"), "{line}");

    // Start-up refuses the same way, before touching anything.
    let line = check("timezone = \"Mars/Base\"\n", &[], &["serve"]);
    assert!(line.contains("`timezone`"), "{line}");
    let line = check("timezone = \"Mars/Base\"\n", &[], &["migrate"]);
    assert!(line.contains("`timezone`"), "{line}");

    let mut cmd = closeloop(dir.path());
    cmd.args(["config", "check", "--config", "no/such/file.toml"]);
    let line = fails_with_one_line(&mut cmd);
    assert!(line.contains("no/such/file.toml"), "{line}");
}

async fn key_row(db: &Db, name: &str) -> sqlx::any::AnyRow {
    sqlx::query(
        "SELECT id, org_id, role, prefix, key_hash, expires_at, revoked_at FROM api_keys WHERE name = $1",
    )
    .bind(name)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn key_count(db: &Db) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM api_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn apikey_create_prints_the_key_once_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "x.db");
    let config = write_config(dir.path(), &format!("database_url = \"{url}\"\n"));
    let apikey = |args: &[&str]| {
        let mut cmd = closeloop(dir.path());
        cmd.arg("--config").arg(&config).arg("apikey").args(args);
        cmd
    };

    let out = ok(&mut apikey(&[
        "create",
        "--name",
        "ci",
        "--role",
        "read-only",
    ]));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the key alone on stdout: {:?}", out.stdout);
    let key = lines[0];
    assert!(key.starts_with("clk_"), "{key}");
    assert!(key.len() >= 30, "{key}");
    assert!(
        !out.stderr.contains(key),
        "the key is shown once: {}",
        out.stderr
    );

    let db = Db::connect(&url).await.unwrap();
    let row = key_row(&db, "ci").await;
    let hash: String = row.get("key_hash");
    assert_ne!(hash, key);
    assert!(!hash.contains(&key[4..]), "{hash}");
    assert_eq!(row.get::<String, _>("role"), "read-only");
    assert!(row.get::<Option<i64>, _>("expires_at").is_none());
    let (default_org,): (String,) =
        sqlx::query_as("SELECT id FROM organisations WHERE slug = 'default'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(row.get::<String, _>("org_id"), default_org);

    // What was printed is the working key.
    let principal = apikeys::authenticate(&db, chrono::Utc::now().timestamp_millis(), key)
        .await
        .unwrap();
    assert_eq!(principal.role, ApiKeyRole::ReadOnly);
    assert_eq!(principal.org_id, default_org);

    // Each key is new; the default role is integration.
    let other = ok(&mut apikey(&["create", "--name", "sync"])).stdout;
    assert_ne!(other.trim(), key);
    assert_eq!(
        key_row(&db, "sync").await.get::<String, _>("role"),
        "integration"
    );

    let dated = ok(&mut apikey(&[
        "create",
        "--name",
        "dated",
        "--expires",
        "2099-12-31",
    ]));
    assert!(dated.stdout.trim().starts_with("clk_"));
    let expires: Option<i64> = key_row(&db, "dated").await.get("expires_at");
    // The end of 2099-12-31 in Asia/Shanghai: 2099-12-31T16:00:00Z.
    assert_eq!(expires, Some(4_102_416_000_000));

    let before = key_count(&db).await;
    let out = run(&mut apikey(&[
        "create",
        "--name",
        "old",
        "--expires",
        "2000-01-01",
    ]));
    assert!(!out.success, "an expiry in the past is refused");
    assert!(out.stdout.is_empty(), "no key printed: {}", out.stdout);
    assert!(out.stderr.contains("expir"), "{}", out.stderr);
    let out = run(&mut apikey(&[
        "create",
        "--name",
        "bad",
        "--expires",
        "next week",
    ]));
    assert!(!out.success);
    assert!(out.stderr.contains("--expires"), "{}", out.stderr);
    let out = run(&mut apikey(&[
        "create",
        "--name",
        "elsewhere",
        "--org",
        "nosuch",
    ]));
    assert!(!out.success);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("nosuch"), "{}", out.stderr);
    assert_eq!(key_count(&db).await, before, "failed creates store nothing");

    // Revoking works once.
    let id: String = key_row(&db, "ci").await.get("id");
    let out = ok(&mut apikey(&["revoke", &id]));
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(key_row(&db, "ci")
        .await
        .get::<Option<i64>, _>("revoked_at")
        .is_some());
    let err = apikeys::authenticate(&db, chrono::Utc::now().timestamp_millis(), key)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let out = run(&mut apikey(&["revoke", &id]));
    assert!(!out.success, "revoking twice fails");
    assert!(out.stderr.contains(&id), "{}", out.stderr);
    let out = run(&mut apikey(&["revoke", "no-such-key"]));
    assert!(!out.success);

    // The listing shows the state, never a key.
    let listed = ok(&mut apikey(&["list"])).stdout;
    assert!(
        listed.contains(&id) && listed.contains("revoked"),
        "{listed}"
    );
    assert!(!listed.contains(key), "{listed}");
    db.close().await;
}

#[tokio::test]
async fn migrate_creates_a_fresh_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fresh.db");
    assert!(!file.exists());
    let url = sqlite_url(dir.path(), "fresh.db");
    let config = write_config(dir.path(), &format!("database_url = \"{url}\"\n"));
    let migrate = || {
        let mut cmd = closeloop(dir.path());
        cmd.arg("--config").arg(&config).arg("migrate");
        cmd
    };
    let out = ok(&mut migrate());
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(file.exists(), "migrate created {}", file.display());
    let db = Db::connect(&url).await.unwrap();
    for table in [
        "organisations",
        "users",
        "customers",
        "tracking_points",
        "api_keys",
        "inbox",
    ] {
        sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{table} missing: {e}"));
    }
    let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(journal.to_lowercase(), "wal");
    db.close().await;

    // Running it again is harmless.
    ok(&mut migrate());

    // The environment overrides the file's database.
    let other = dir.path().join("from-env.db");
    ok(migrate().env(
        "CLOSELOOP_DATABASE_URL",
        sqlite_url(dir.path(), "from-env.db"),
    ));
    assert!(other.exists());

    let line =
        fails_with_one_line(migrate().env("CLOSELOOP_DATABASE_URL", "mysql://root@localhost/x"));
    assert!(line.contains("database_url"), "{line}");
}

/// The configuration file is optional: without one (and without `--config`) the
/// documented defaults apply.
#[tokio::test]
async fn without_a_configuration_file_the_defaults_apply() {
    let bare = tempfile::tempdir().unwrap();
    let out = ok(closeloop(bare.path()).args(["config", "check"]));
    let effective: toml::Value = toml::from_str(&out.stdout).expect("stdout is TOML");
    assert_eq!(
        effective["database_url"].as_str(),
        Some("sqlite://closeloop.db")
    );
    assert_eq!(effective["listen"].as_str(), Some("127.0.0.1:8080"));

    ok(closeloop(bare.path()).arg("migrate"));
    assert!(bare.path().join("closeloop.db").exists());
    let out = ok(closeloop(bare.path())
        .arg("migrate")
        .env("CLOSELOOP_DATABASE_URL", sqlite_url(bare.path(), "env.db")));
    assert!(out.stdout.is_empty());
    assert!(bare.path().join("env.db").exists());
}

/// Starts `serve` on `config`, waits until it answers `/healthz`, stops it with SIGTERM
/// and returns its log.
async fn serve_once(dir: &Path, config: &Path, port: u16, run_name: &str) -> String {
    let log_path = dir.join(format!("serve-{run_name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = closeloop(dir)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if res.status() == 200 {
                break;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "serve exited early with {status}: {}",
                std::fs::read_to_string(&log_path).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "serve ended with {status} on SIGTERM");
    std::fs::read_to_string(&log_path).unwrap()
}

#[tokio::test]
async fn first_start_without_a_data_key_writes_an_owner_only_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{}\"\n",
            sqlite_url(dir.path(), "x.db")
        ),
    );
    let key_file = dir.path().join("x.db.key");

    assert!(!key_file.exists());
    let log = serve_once(dir.path(), &config, port, "first").await;
    assert!(
        key_file.exists(),
        "no key file after first start; log:\n{log}"
    );
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode is {mode:o}");
    let key = std::fs::read_to_string(&key_file).unwrap();
    closeloop::security::DataKey::from_base64(&key).expect("the file holds a data key");
    assert!(
        log.contains("x.db.key"),
        "the log says where the key went:\n{log}"
    );
    assert!(!log.contains(key.trim()), "the key is never logged");

    // Later starts reuse it.
    let log = serve_once(dir.path(), &config, port, "second").await;
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    assert!(!log.contains("generated"), "{log}");
}
