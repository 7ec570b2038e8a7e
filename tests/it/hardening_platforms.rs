//! Platform hardening: Feishu bodies read as Feishu's official SDK reads them (checked
//! against lark-oapi itself), a demo that never destroys a database it did not make, and
//! cards sent as the type their content calls for.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use closeloop::platform::feishu::crypto::{
    FeishuCrypto, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};

// ---------------------------------------------------------------------------------------
// Feishu: the same bodies to lark-oapi and to closeloop

/// The lark-oapi release the differential test runs against.
const LARK_OAPI: &str = "1.7.5";
const TOKEN: &str = "vtoken-diff";
const KEY: &str = "Fq3BucfwoJQMjXxrwi3I6fFildR0NgmI";

/// A Python with lark-oapi installed in a virtualenv of its own (made once, kept under the
/// test's target folder). `None`, with a note, where Python or PyPI cannot be had — unless
/// `CI_REQUIRE_LARK=1` (CI), where that fails the test.
fn lark_python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lark-oapi-{LARK_OAPI}"));
    let python = venv.join("bin").join("python");
    if python.exists() {
        return Some(python);
    }
    let building = venv.with_extension(format!("partial-{}", std::process::id()));
    let run = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&o.stderr).into_owned())
                }
            })
    };
    let made = run(Command::new("python3").args(["-m", "venv"]).arg(&building)).and_then(|()| {
        run(Command::new(building.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("lark-oapi=={LARK_OAPI}"),
        ]))
    });
    match made {
        // Another test process may have finished first; either copy will do.
        Ok(()) => match std::fs::rename(&building, &venv) {
            Ok(()) => Some(python),
            Err(_) if python.exists() => {
                let _ = std::fs::remove_dir_all(&building);
                Some(python)
            }
            Err(e) => panic!("cannot move the lark-oapi virtualenv into place: {e}"),
        },
        Err(e) => {
            let _ = std::fs::remove_dir_all(&building);
            assert!(
                std::env::var("CI_REQUIRE_LARK").as_deref() != Ok("1"),
                "lark-oapi=={LARK_OAPI} could not be installed (CI_REQUIRE_LARK=1): {e}"
            );
            println!("note: lark-oapi could not be installed; differential test skipped: {e}");
            None
        }
    }
}

/// How a case is put on the wire.
#[derive(Clone, Copy)]
enum Wire {
    /// The payload as it is, no signature headers.
    Plain,
    /// Encrypted with the Encrypt Key and signed, as Feishu sends with a key configured.
    Sealed,
    /// Encrypted, without signature headers (the console's URL check may come so).
    SealedUnsigned,
    /// In the clear, but signed with the Encrypt Key.
    PlainSigned,
    /// Encrypted, with a signature that does not hold.
    BadSignature,
}

struct Case {
    name: &'static str,
    payload: String,
    wire: Wire,
}

fn case(name: &'static str, payload: Value, wire: Wire) -> Case {
    Case {
        name,
        payload: payload.to_string(),
        wire,
    }
}

fn v2(event_id: &str, extra: Value, header_extra: Value) -> Value {
    let mut body = json!({
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "contact.user.created_v3",
                   "create_time": "1603977298000", "app_id": "cli_x", "tenant_key": "t"},
        "event": {"object": {"user_id": "u1", "open_id": "ou_1"}}
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    for (k, v) in header_extra.as_object().unwrap() {
        body["header"][k] = v.clone();
    }
    body
}

/// The bodies both readers get: the precedence rules of lark-oapi's dispatcher, case by case.
fn cases(keyed: bool) -> Vec<Case> {
    let sealed = if keyed { Wire::Sealed } else { Wire::Plain };
    let mut out = vec![
        case(
            "url check",
            json!({"type": "url_verification", "challenge": "ch-1", "token": TOKEN}),
            sealed,
        ),
        case(
            "url check, wrong token",
            json!({"type": "url_verification", "challenge": "ch-2", "token": "nope"}),
            sealed,
        ),
        case(
            "url check, no token",
            json!({"type": "url_verification", "challenge": "ch-3"}),
            sealed,
        ),
        case(
            "2.0 event",
            v2("e-1", json!({}), json!({"token": TOKEN})),
            sealed,
        ),
        case(
            "2.0 event with a top-level url_verification and no top-level token",
            v2(
                "e-2",
                json!({"type": "url_verification", "challenge": "ch-4"}),
                json!({"token": TOKEN}),
            ),
            sealed,
        ),
        case(
            "2.0 event: the top-level token does not count",
            v2("e-3", json!({"token": TOKEN}), json!({"token": "nope"})),
            sealed,
        ),
        case(
            "2.0 event without any token",
            v2("e-4", json!({}), json!({})),
            sealed,
        ),
        case(
            "2.0 event whose token is not a string",
            v2("e-5", json!({}), json!({"token": 7})),
            sealed,
        ),
        case(
            "2.0 body whose header names the URL check",
            v2(
                "e-6",
                json!({"challenge": "ch-5"}),
                json!({"token": TOKEN, "event_type": "url_verification"}),
            ),
            sealed,
        ),
        case(
            "1.0 event",
            json!({"uuid": "u-1", "token": TOKEN, "ts": "1603977298", "type": "event_callback",
                   "event": {"type": "message"}}),
            sealed,
        ),
        case(
            "1.0 event with a top-level url_verification",
            json!({"uuid": "u-2", "token": TOKEN, "type": "url_verification",
                   "challenge": "ch-6", "event": {"type": "message"}}),
            sealed,
        ),
        case(
            "1.0 event, wrong token",
            json!({"uuid": "u-3", "token": "nope", "type": "event_callback",
                   "event": {"type": "message"}}),
            sealed,
        ),
        case(
            "a header without a schema",
            json!({"header": {"event_id": "e-7", "event_type": "contact.user.created_v3",
                              "token": TOKEN}, "event": {}}),
            sealed,
        ),
    ];
    if keyed {
        out.extend([
            case(
                "url check, unsigned",
                json!({"type": "url_verification", "challenge": "ch-7", "token": TOKEN}),
                Wire::SealedUnsigned,
            ),
            case(
                "2.0 event, unsigned",
                v2("e-8", json!({}), json!({"token": TOKEN})),
                Wire::SealedUnsigned,
            ),
            case(
                "2.0 event, bad signature",
                v2("e-9", json!({}), json!({"token": TOKEN})),
                Wire::BadSignature,
            ),
            case(
                "2.0 event in the clear, signed",
                v2("e-10", json!({}), json!({"token": TOKEN})),
                Wire::PlainSigned,
            ),
            case(
                "url check in the clear, unsigned",
                json!({"type": "url_verification", "challenge": "ch-8", "token": TOKEN}),
                Wire::Plain,
            ),
        ]);
    } else {
        out.push(Case {
            name: "an encrypted body without a configured key",
            payload: json!({"encrypt": FeishuCrypto::new(KEY).unwrap().encrypt_random("{}")})
                .to_string(),
            wire: Wire::Plain,
        });
    }
    out
}

/// Where closeloop deliberately reads a body otherwise than the SDK, and what each does:
/// a body whose signature holds is kept (quarantined) when it cannot be read, and a 2.0
/// event needs its `event_id` (the dedupe key). Listed in docs/protocols/feishu.md.
fn known_difference(keyed: bool, name: &str) -> Option<(&'static str, &'static str)> {
    match (keyed, name) {
        (true, "a header without a schema") => Some(("kept", "refused")),
        _ => None,
    }
}

/// The raw request (headers, body) for a case.
fn wire(c: &Case, ts: &str, nonce: &str) -> (Vec<(&'static str, String)>, String) {
    let crypto = FeishuCrypto::new(KEY).unwrap();
    let sign = |body: &str| {
        vec![
            (TIMESTAMP_HEADER, ts.to_string()),
            (NONCE_HEADER, nonce.to_string()),
            (
                SIGNATURE_HEADER,
                crypto.signature(ts, nonce, body.as_bytes()),
            ),
        ]
    };
    let sealed = || json!({"encrypt": crypto.encrypt_random(&c.payload)}).to_string();
    match c.wire {
        Wire::Plain => (Vec::new(), c.payload.clone()),
        Wire::Sealed => {
            let body = sealed();
            (sign(&body), body)
        }
        Wire::SealedUnsigned => (Vec::new(), sealed()),
        Wire::PlainSigned => (sign(&c.payload), c.payload.clone()),
        Wire::BadSignature => {
            let body = sealed();
            let mut headers = sign(&body);
            headers[2].1 = "0".repeat(64);
            (headers, body)
        }
    }
}

/// What closeloop made of one request: the same words as the harness prints, and `kept`
/// for a signed body stored in quarantine.
async fn closeloop_outcome(app: &TestApp, headers: &[(&str, String)], body: String) -> String {
    let before: Vec<(String,)> = sqlx::query_as("SELECT id FROM inbox")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let mut req = app
        .client
        .post(app.url("/callback/feishu"))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let res = req.send().await.unwrap();
    if res.status() != 200 {
        return "refused".into();
    }
    let answer: Value = res.json().await.unwrap();
    if let Some(challenge) = answer["challenge"].as_str() {
        return format!("challenge:{challenge}");
    }
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, event_type, status FROM inbox")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let new: Vec<_> = rows
        .into_iter()
        .filter(|(id, ..)| !before.iter().any(|(b,)| b == id))
        .collect();
    match new.as_slice() {
        [(_, _, status)] if status == "quarantined" => "kept".into(),
        [(_, event_type, _)] => format!("event:{event_type}"),
        other => panic!("an acknowledged callback wrote {other:?}"),
    }
}

fn sdk_outcomes(
    python: &Path,
    keyed: bool,
    requests: &[(Vec<(&str, String)>, String)],
) -> Vec<String> {
    let spec = json!({
        "encrypt_key": if keyed { KEY } else { "" },
        "verification_token": TOKEN,
        "p2_types": ["contact.user.created_v3"],
        "p1_types": ["message"],
        "cases": requests.iter().map(|(headers, body)| json!({
            "headers": headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "body": body,
        })).collect::<Vec<_>>(),
    });
    let harness = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/harness/lark_dispatch.py"
    );
    let mut child = Command::new(python)
        .arg(harness)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the lark-oapi harness failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn feishu_bodies_are_read_as_the_official_sdk_reads_them() {
    let Some(python) = lark_python() else {
        return;
    };
    for keyed in [false, true] {
        let key = if keyed {
            format!("encrypt_key = \"{KEY}\"\n")
        } else {
            String::new()
        };
        let app = spawn_app_with(&format!(
            "[feishu]\napp_id = \"cli_diff\"\napp_secret = \"s\"\nverification_token = \"{TOKEN}\"\n\
             {key}api_base = \"http://127.0.0.1:9\"\n"
        ))
        .await;
        let cases = cases(keyed);
        let ts = chrono::Utc::now().timestamp().to_string();
        let requests: Vec<_> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| wire(c, &ts, &format!("nonce-{i}")))
            .collect();
        let sdk = sdk_outcomes(&python, keyed, &requests);
        assert_eq!(sdk.len(), cases.len());
        let mut ours = Vec::new();
        for (headers, body) in &requests {
            ours.push(closeloop_outcome(&app, headers, body.clone()).await);
        }
        let mut report = Vec::new();
        for ((c, sdk), ours) in cases.iter().zip(&sdk).zip(&ours) {
            let agreed = match known_difference(keyed, c.name) {
                Some((want_ours, want_sdk)) => ours == want_ours && sdk == want_sdk,
                None => ours == sdk,
            };
            if !agreed {
                report.push(format!(
                    "{} (key: {keyed}): closeloop {ours}, lark-oapi {sdk}",
                    c.name
                ));
            }
        }
        assert!(
            report.is_empty(),
            "closeloop and lark-oapi disagree:\n{}",
            report.join("\n")
        );
        // The defect this test was written for: a 2.0 event is the header's event.
        let i = cases
            .iter()
            .position(|c| {
                c.name
                    .starts_with("2.0 event with a top-level url_verification")
            })
            .unwrap();
        assert_eq!(ours[i], "event:contact.user.created_v3");
    }
}

// ---------------------------------------------------------------------------------------
// The demo never destroys data

/// Runs `closeloop demo` in `dir` until it exits; (exit code, stderr).
fn demo_exits(dir: &Path, listen: &str, database: &str) -> (Option<i32>, String) {
    let out = crate::cli::closeloop(dir)
        .args(["demo", "--listen", listen, "--database", database])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A real (non-demo) SQLite database with its key file and blob folder.
async fn precious(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions as _, Connection as _};
    let db = dir.join("real.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE customers (name TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    std::fs::write(
        dir.join("real.db.key"),
        "the only key that decrypts real.db",
    )
    .unwrap();
    std::fs::create_dir(dir.join("real.db-files")).unwrap();
    std::fs::write(dir.join("real.db-files").join("proof.pdf"), "%PDF").unwrap();
    snapshot(dir)
}

/// Every file under `dir` (but the demo's log) with its content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    errors[0]
}

#[tokio::test]
async fn the_demo_refuses_a_busy_port_or_a_database_it_did_not_make_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let before = precious(dir.path()).await;

    // A busy port: refused before any file is looked at.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    let (code, stderr) = demo_exits(dir.path(), &listen, "real.db");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(error_line(&stderr).contains("cannot listen on"), "{stderr}");
    assert_eq!(snapshot(dir.path()), before, "a busy port changed files");
    drop(busy);

    // A free port, but a database the demo did not make.
    let free = format!("127.0.0.1:{}", crate::cli::free_port());
    let (code, stderr) = demo_exits(dir.path(), &free, "real.db");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        error_line(&stderr).contains("was not created by closeloop demo"),
        "{stderr}"
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a foreign database was touched"
    );

    // A key file (or blob folder) whose database is gone is not the demo's to delete.
    std::fs::rename(dir.path().join("real.db"), dir.path().join("moved.db")).unwrap();
    let before = snapshot(dir.path());
    let (code, stderr) = demo_exits(dir.path(), &free, "real.db");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(error_line(&stderr).contains("real.db"), "{stderr}");
    assert_eq!(snapshot(dir.path()), before, "a stray key file was touched");
    assert!(!dir.path().join("real.db").exists());
}

/// Starts the demo and waits until it has printed its admin key; the child is killed on drop.
fn demo_ready(dir: &Path, database: &str) -> std::process::Child {
    use std::io::BufRead as _;
    let mut child = crate::cli::closeloop(dir)
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{}", crate::cli::free_port()),
            "--database",
            database,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().contains("API key (admin)") {
            return child;
        }
    }
    let status = child.wait().unwrap();
    panic!("the demo exited ({status}) before it was ready");
}

#[tokio::test]
async fn the_demo_recreates_a_database_it_made_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = demo_ready(dir.path(), "demo.db");
    first.kill().unwrap();
    first.wait().unwrap();
    let header = std::fs::read(dir.path().join("demo.db")).unwrap();
    assert!(header.starts_with(b"SQLite format 3\0"));
    assert_eq!(&header[68..72], b"CLDM", "the demo's mark is in the header");
    let key = std::fs::read(dir.path().join("demo.db.key")).unwrap();
    // Killed, not stopped: the next start still knows the file as its own and replaces it,
    // key and all.
    let mut second = demo_ready(dir.path(), "demo.db");
    second.kill().unwrap();
    second.wait().unwrap();
    assert_ne!(std::fs::read(dir.path().join("demo.db.key")).unwrap(), key);
}

// ---------------------------------------------------------------------------------------
// Cards without buttons go out as the platform documents them

const CORP: &str = "wwcl0000000000001";

async fn wecom_app() -> (closeloop::emulator::wecom::Emulator, TestApp) {
    let emulator =
        closeloop::emulator::wecom::Emulator::start(CORP, vec![("app-secret".to_string(), "app")])
            .await;
    let app = spawn_app_with(&format!(
        "public_url = \"https://cl.example.com\"\n\
         [wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    (emulator, app)
}

/// Queues card `template` (composed from the shipped templates) for `to` under `purpose`.
async fn queue(app: &TestApp, to: &str, template: &str, purpose: &str, object: &str) -> String {
    let vars: Vec<(&str, String)> = [
        "rep",
        "customer",
        "action",
        "ip",
        "time",
        "count",
        "title",
        "assignees",
        "initiator",
        "text",
        "verb",
        "handler",
        "answer",
        "week",
        "requests",
        "mean",
        "overdue",
        "returns",
        "worst",
        "link",
    ]
    .into_iter()
    .map(|k| (k, format!("样例{k}")))
    .collect();
    let card = closeloop::cards::templates::compose(template, &vars);
    let mut tx = app.db.begin().await.unwrap();
    let id = closeloop::cards::send(
        &mut tx,
        &app.cipher,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        to,
        purpose,
        Some(object),
        &card,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn wecom_cards_without_buttons_are_text_notices_that_open_a_page() {
    let (emulator, app) = wecom_app().await;
    let user = app
        .create(
            "/api/v1/users",
            json!({"name": "王经理", "identities": [{"platform": "wecom", "kind": "userid", "value": "wangjl"}]}),
        )
        .await;
    let to = user["id"].as_str().unwrap();
    // The IP-burst alert, the reminder after acceptance, the escalation, the answer, the
    // weekly report — and, for contrast, a card that asks for a decision.
    let sent = [
        (
            "antifraud.ip_burst",
            "antifraud.ip_burst",
            "point-1",
            "https://cl.example.com/collab",
        ),
        (
            "collab.nudge",
            "collab.request",
            "req-1",
            "https://cl.example.com/collab/requests/req-1",
        ),
        (
            "collab.escalation",
            "collab.escalation",
            "req-2",
            "https://cl.example.com/collab/requests/req-2",
        ),
        (
            "collab.reply",
            "collab.reply",
            "req-3",
            "https://cl.example.com/collab/requests/req-3",
        ),
        (
            "collab.health",
            "collab.health",
            "2026-11-30",
            "https://cl.example.com/collab/health?week=2026-11-30",
        ),
    ];
    let mut ids = Vec::new();
    for (template, purpose, object, _) in sent {
        ids.push(queue(&app, to, template, purpose, object).await);
    }
    let asking = queue(&app, to, "collab.request", "collab.request", "req-4").await;
    app.worker.drain().await.unwrap();

    let messages = emulator.received_messages();
    assert_eq!(
        messages.len(),
        sent.len() + 1,
        "every card accepted: {messages:#?}"
    );
    for ((template, _, _, url), id) in sent.iter().zip(&ids) {
        let m = messages
            .iter()
            .find(|m| m["template_card"]["task_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{template} not sent"));
        let card = &m["template_card"];
        assert_eq!(card["card_type"], "text_notice", "{template}: {card}");
        assert!(card.get("button_list").is_none(), "{template}: {card}");
        assert_eq!(
            card["card_action"],
            json!({"type": 1, "url": url}),
            "{template}"
        );
        assert!(card["main_title"]["title"]
            .as_str()
            .is_some_and(|t| !t.is_empty()));
    }
    let m = messages
        .iter()
        .find(|m| m["template_card"]["task_id"] == asking.as_str())
        .unwrap();
    assert_eq!(m["template_card"]["card_type"], "button_interaction");
    assert_eq!(
        m["template_card"]["button_list"].as_array().unwrap().len(),
        1
    );
    // Every card is marked sent; only the answerable one holds a code to update it by.
    let sent_cards: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, response_code FROM cards WHERE status = 'sent'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(sent_cards.len(), sent.len() + 1);
    for (id, code) in sent_cards {
        assert_eq!(code.is_some(), id == asking, "{id}");
    }
}

#[tokio::test]
async fn the_wecom_emulator_refuses_template_cards_missing_what_wecom_requires() {
    let (emulator, _app) = wecom_app().await;
    let http = reqwest::Client::new();
    let token: Value = http
        .get(format!(
            "{}/cgi-bin/gettoken?corpid={CORP}&corpsecret=app-secret",
            emulator.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/cgi-bin/message/send?access_token={}",
        emulator.base_url(),
        token["access_token"].as_str().unwrap()
    );
    let send = |card: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let body = json!({"touser": "wangjl", "msgtype": "template_card", "agentid": 1000002,
                              "template_card": card});
            let answer: Value = http
                .post(&url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer
        }
    };
    let title = json!({"title": "提醒"});
    let refused = [
        // What closeloop sent before: a button card without buttons.
        json!({"card_type": "button_interaction", "main_title": title, "task_id": "t1", "button_list": []}),
        json!({"card_type": "button_interaction", "main_title": title,
               "button_list": [{"text": "接受", "key": "accept:t2"}]}),
        json!({"card_type": "text_notice", "main_title": title}),
        json!({"card_type": "text_notice", "main_title": title, "card_action": {"type": 1}}),
        json!({"card_type": "text_notice", "main_title": {"desc": "无标题"},
               "card_action": {"type": 1, "url": "https://cl.example.com/collab"}}),
        json!({"card_type": "text_notice", "main_title": title,
               "card_action": {"type": 1, "url": "https://cl.example.com/collab"},
               "action_menu": {"desc": "更多", "action_list": [{"text": "不再提醒", "key": "mute"}]}}),
    ];
    for card in refused {
        let answer = send(card.clone()).await;
        assert_eq!(answer["errcode"], 40058, "{card} was accepted: {answer}");
    }
    assert!(emulator.received_messages().is_empty());
    let notice = send(json!({"card_type": "text_notice", "main_title": title,
                             "card_action": {"type": 1, "url": "https://cl.example.com/collab"}}))
    .await;
    assert_eq!(notice["errcode"], 0, "{notice}");
    assert!(notice.get("response_code").is_none(), "{notice}");
    let buttons = send(
        json!({"card_type": "button_interaction", "main_title": title, "task_id": "t3",
                              "button_list": [{"text": "接受", "key": "accept:t3"}]}),
    )
    .await;
    assert_eq!(buttons["errcode"], 0, "{buttons}");
    assert!(buttons["response_code"].is_string(), "{buttons}");
}
