//! Personal data at rest (docs/personal-data.md): a database filled through the product
//! holds no phone number, e-mail address or contact name in the clear, and rows written
//! before the encryption are sealed once at start-up. On SQLite the raw files are read
//! (database, write-ahead log, shared memory); on PostgreSQL, where the files belong to
//! the server, every row of every table is read as text through SQL instead.

use closeloop::db::Db;
use closeloop::platform::wecom::emulator::Emulator;
use closeloop::security::{Cipher, DataKey};
use serde_json::{json, Value};

use crate::callbacks::{deliver, CORP};
use crate::helpers::{error_code, fresh_database, on_postgres, spawn_app_with, TEST_DATA_KEY};

const PHONES: [&str; 5] = [
    "13812345678",
    "13987654321",
    "13655556666",
    "13577778888",
    "13711112222",
];
const EMAILS: [&str; 2] = ["ouyang.mingyue@huanan.example.com", "feiyan.sg@example.org"];
const NAMES: [&str; 4] = ["欧阳明月", "上官飞燕", "司马青衫", "诸葛云飞"];
/// Free text written to the app in a message.
const MESSAGE: &str = "请尽快回拨客户";

/// A phone number the ways it is written: bare, grouped with spaces or dashes.
fn spellings(phone: &str) -> Vec<String> {
    let (a, b, c) = (&phone[..3], &phone[3..7], &phone[7..]);
    vec![
        phone.to_string(),
        format!("{a} {b} {c}"),
        format!("{a}-{b}-{c}"),
    ]
}

fn needles() -> Vec<String> {
    let mut all: Vec<String> = PHONES.iter().flat_map(|p| spellings(p)).collect();
    all.extend(EMAILS.iter().map(|e| e.to_string()));
    all.extend(NAMES.iter().map(|n| n.to_string()));
    all.push(MESSAGE.to_string());
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every needle found in the SQLite files of `db_path` (the file, `-wal`, `-shm`).
fn found_in_sqlite_files(db_path: &std::path::Path, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut files = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db_path.display()));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        files += 1;
        for n in needles {
            if contains(&bytes, n.as_bytes()) {
                found.push(format!("{n} in {}", path.display()));
            }
        }
    }
    assert!(files > 0, "no database file at {}", db_path.display());
    found
}

/// Every needle found in any row of any table, each row read as text (PostgreSQL).
async fn found_in_postgres_rows(db: &Db, needles: &[String]) -> Vec<String> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(tables.len() > 20, "schema not found: {tables:?}");
    let mut found = Vec::new();
    for (table,) in tables {
        let rows: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT CAST(t AS TEXT) FROM {table} t"))
                .fetch_all(&db.pool)
                .await
                .unwrap();
        for (row,) in rows {
            for n in needles {
                if row.contains(n.as_str()) {
                    found.push(format!("{n} in {table}: {row}"));
                }
            }
        }
    }
    found
}

fn sqlite_path(database_url: &str) -> std::path::PathBuf {
    let path = database_url.trim_start_matches("sqlite://");
    std::path::PathBuf::from(path.split('?').next().unwrap())
}

fn message(text: &str, msg_id: u64, ts: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[liming]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>\
         <MsgId>{msg_id}</MsgId><AgentID>1000002</AgentID></xml>"
    )
}

fn contact_added(external: &str, ts: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
         <UserID><![CDATA[liming]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>\
         <State><![CDATA[qr-expo]]></State></xml>"
    )
}

#[tokio::test]
async fn a_database_filled_through_the_product_holds_no_personal_data_in_the_clear() {
    let emulator = Emulator::start(
        CORP,
        vec![
            ("app-secret".to_string(), "app"),
            ("contact-secret".to_string(), "contact"),
            ("dial-secret".to_string(), "dial"),
        ],
    )
    .await;
    let app = spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\n\
         contact_secret = \"contact-secret\"\ndial_secret = \"dial-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"],
                   "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await;

    // Through the API: a customer with a contact, and a second contact added later.
    let customer = app
        .create(
            "/api/v1/customers",
            json!({"name": "华南智造", "owner": rep["id"], "contacts": [{"name": NAMES[0],
                   "email": EMAILS[0], "phones": ["+86 138-1234-5678"]}]}),
        )
        .await;
    let customer_id = customer["id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/api/v1/customers/{customer_id}/contacts"),
            &json!({"name": NAMES[1], "email": EMAILS[1], "phones": ["139 8765 4321"]}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    // Through WeCom: two external contacts (one without a company), a message to the app
    // and the 公费电话 records of calls to a known and an unknown number.
    emulator.add_external_contact(
        json!({"external_userid": "wmPII001", "name": NAMES[2], "type": 1}),
        json!([{"userid": "liming", "createtime": 1764206400, "state": "qr-expo",
                "remark_mobiles": [PHONES[2]]}]),
    );
    emulator.add_external_contact(
        json!({"external_userid": "wmPII002", "name": NAMES[3], "corp_name": "东方精密", "type": 1}),
        json!([{"userid": "liming", "createtime": 1764206400, "state": "qr-expo",
                "remark_mobiles": [PHONES[3]]}]),
    );
    let ts = chrono::Utc::now().timestamp();
    for (i, xml) in [
        contact_added("wmPII001", ts),
        contact_added("wmPII002", ts + 1),
        message(
            &format!("{MESSAGE}{} 电话{}", NAMES[0], PHONES[0]),
            7_091_000_001,
            ts,
        ),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(deliver(&app, xml, CORP, ts + i as i64).await.status(), 200);
    }
    emulator.add_dial_records(vec![
        json!({"call_time": ts - 600, "call_type": 1, "caller": {"userid": "liming", "duration": 300},
               "callee": [{"phone": PHONES[0].parse::<u64>().unwrap(), "duration": 296}]}),
        json!({"call_time": ts - 300, "call_type": 1, "caller": {"userid": "liming", "duration": 20},
               "callee": [{"phone": PHONES[4], "duration": 0}]}),
    ]);
    closeloop::jobs::enqueue_now(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        closeloop::jobs::NewJob::new("wecom.dial_poll", json!({})).org(&app.org_id),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
    assert_eq!(app.count("call_records").await, 2);
    assert_eq!(app.count("customers").await, 3);

    // The ledger refuses a number however it is written, and names with spaces.
    for (action, payload) in [
        (
            "已电话沟通",
            json!({"n": PHONES[0].parse::<u64>().unwrap()}),
        ),
        ("已电话沟通", json!({PHONES[1]: "called"})),
        ("已电话沟通", json!({"note": "１３６.５５５５.６６６６"})),
        (" rule.repeat_limit", json!({})),
    ] {
        let res = app
            .post(
                "/api/v1/events",
                &json!({"actor": rep["id"], "customer": customer_id, "action": action, "payload": payload}),
            )
            .await;
        let (status, code, _) = error_code(res).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "invalid_input"),
            "{action:?} {payload}"
        );
    }
    assert_eq!(app.count("tracking_points").await, 0);

    // Reads still show the names to those who may see them, and a number still finds its
    // customer.
    let read: Value = app
        .get(&format!("/api/v1/customers/{customer_id}"))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = read["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [NAMES[0], NAMES[1]]);
    let by_phone: Value = app
        .get(&format!("/api/v1/customers?phone={}", PHONES[2]))
        .await
        .json()
        .await
        .unwrap();
    let person = &by_phone["items"][0];
    assert_eq!(person["contacts"][0]["name"], NAMES[2]);
    assert_eq!(
        person["name"], "司***（个人）",
        "named after the masked person"
    );

    let needles = needles();
    if on_postgres() {
        let found = found_in_postgres_rows(&app.db, &needles).await;
        assert!(found.is_empty(), "stored in the clear: {found:#?}");
    } else {
        let path = sqlite_path(&app.database_url);
        let dir = app.stop().await;
        let found = found_in_sqlite_files(&path, &needles);
        assert!(found.is_empty(), "stored in the clear: {found:#?}");
        drop(dir);
    }
}

/// The migrations before personal data was sealed, to build a database as it was.
async fn migrate_to_before_sealing(db: &Db) {
    let old = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("migrations").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < "20261207000400" {
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

#[tokio::test]
async fn rows_written_before_sealing_are_sealed_once_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(dir.path()).await;
    let cipher = Cipher::new(DataKey::from_base64(TEST_DATA_KEY).unwrap(), Vec::new());
    let db = Db::connect(&url).await.unwrap();
    migrate_to_before_sealing(&db).await;

    // Rows as the earlier version wrote them: contact names and call-record keys in the
    // clear, a customer named after its person, a message's text in an inbox summary.
    let statements: Vec<(&str, Vec<String>)> = vec![
        ("INSERT INTO organisations (id, slug, name, timezone, is_default, created_at) VALUES ($1, 'o', 'o', 'Asia/Shanghai', 1, 0)", vec!["org".into()]),
        ("INSERT INTO customers (id, org_id, name, created_at, updated_at) VALUES ($1, 'org', $2, 0, 0)", vec!["c1".into(), "华南智造".into()]),
        ("INSERT INTO customers (id, org_id, name, created_at, updated_at) VALUES ($1, 'org', $2, 0, 0)", vec!["c2".into(), NAMES[2].into()]),
        ("INSERT INTO contacts (id, org_id, customer_id, name, created_at, updated_at) VALUES ($1, 'org', 'c1', $2, 0, 0)", vec!["k1".into(), NAMES[0].into()]),
        ("INSERT INTO contacts (id, org_id, customer_id, name, created_at, updated_at) VALUES ($1, 'org', 'c2', $2, 0, 0)", vec!["k2".into(), NAMES[2].into()]),
        ("INSERT INTO customer_external_ids (org_id, platform, external_user_id, customer_id, contact_id, created_at) VALUES ('org', 'wecom', 'wmOLD', 'c2', $1, 0)", vec!["k2".into()]),
        ("INSERT INTO call_records (id, org_id, platform, record_key, caller_platform_id, started_at, duration_s, fetched_at) VALUES ($1, 'org', 'wecom', $2, 'liming', 0, 30, 0)", vec!["r1".into(), format!("1796090220:liming:{}", PHONES[0])]),
        ("INSERT INTO inbox (id, org_id, platform, dedupe_key, event_type, received_at, body, summary) VALUES ($1, 'org', 'feishu', 'm1', 'im.message.receive_v1', 0, $2, $3)",
         vec!["i1".into(), cipher.encrypt("inbox.body", MESSAGE), json!({"type": "message", "user_id": "ou_1", "text": format!("{MESSAGE} {}", PHONES[1])}).to_string()]),
        ("INSERT INTO jobs (id, org_id, kind, payload, status, run_at, max_attempts, created_at, updated_at, output) VALUES ($1, 'org', 'inbox.process', '{}', 'done', 0, 5, 0, 0, $2)",
         vec!["j1".into(), json!({"external_contact": {"name": NAMES[3], "phones": [PHONES[3]]}}).to_string()]),
    ];
    for (sql, binds) in &statements {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(&db.pool).await.unwrap();
    }
    // Deleted rows leave their bytes in free pages until the file is rebuilt.
    sqlx::query("INSERT INTO contacts (id, org_id, customer_id, name, created_at, updated_at) VALUES ('k3', 'org', 'c1', $1, 0, 0)")
        .bind(NAMES[1])
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM contacts WHERE id = 'k3'")
        .execute(&db.pool)
        .await
        .unwrap();
    db.close().await;

    // Start-up: the SQL migrations, then the data migration, as `App::build` runs them.
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let ran = closeloop::personal_data::migrate(&db, &cipher, 1)
        .await
        .unwrap();
    assert_eq!(ran, ["seal_personal_data_v1"]);
    assert!(
        closeloop::personal_data::migrate(&db, &cipher, 2)
            .await
            .unwrap()
            .is_empty(),
        "a data migration runs once"
    );

    let (name_enc,): (String,) = sqlx::query_as("SELECT name_enc FROM contacts WHERE id = 'k1'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        cipher.decrypt("contacts.name", &name_enc).unwrap(),
        NAMES[0],
        "sealed once, not twice"
    );
    let customer = closeloop::customers::get(&db, &cipher, "org", "c2")
        .await
        .unwrap();
    assert_eq!(customer.name, "司***（个人）");
    assert_eq!(customer.contacts[0].name, NAMES[2]);
    let (key,): (String,) = sqlx::query_as("SELECT record_key FROM call_records WHERE id = 'r1'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        key,
        cipher.lookup_hash(
            "call_records.record_key",
            &format!("1796090220:liming:{}", PHONES[0])
        )
    );
    let (summary,): (String,) = sqlx::query_as("SELECT summary FROM inbox WHERE id = 'i1'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&summary).unwrap(),
        json!({"type": "message", "user_id": "ou_1"})
    );

    let (output,): (String,) = sqlx::query_as("SELECT output FROM jobs WHERE id = 'j1'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&output).unwrap(),
        json!({"fetched": ["external_contact"]})
    );

    let needles = needles();
    if on_postgres() {
        // PostgreSQL's files are the server's; its rows are what this installation controls.
        let found = found_in_postgres_rows(&db, &needles).await;
        assert!(found.is_empty(), "stored in the clear: {found:#?}");
        db.close().await;
    } else {
        db.close().await;
        let found = found_in_sqlite_files(&sqlite_path(&url), &needles);
        assert!(found.is_empty(), "left on disk: {found:#?}");
    }
}
