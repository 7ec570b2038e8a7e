//! Personal data at rest (docs/personal-data.md): a database filled through the product
//! holds no phone number, e-mail address, contact name or typed text in the clear, nor
//! does the blob store, and rows (and files) written before the encryption are sealed once
//! at start-up. On SQLite the raw files are read (database, write-ahead log, shared
//! memory); on PostgreSQL, where the files belong to the server, every row of every table
//! is read as text through SQL instead. The blob store's files are read on both.

use closeloop::config::StorageConfig;
use closeloop::db::Db;
use closeloop::emulator::wecom::Emulator;
use closeloop::security::{Cipher, DataKey};
use closeloop::storage::BlobStore;
use serde_json::{json, Value};

use crate::callbacks::{deliver, CORP};
use crate::helpers::{
    error_code, fresh_database, on_postgres, spawn_app_with, TestApp, TEST_DATA_KEY,
};

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
/// Free text typed into the product, one phrase per place it is typed (each also carries a
/// name, a number or an address when it is used).
const ASK: &str = "私有化部署报价";
const HANDOFF: &str = "产线质检需求概述";
const ANSWER: &str = "支持本地机房部署";
const RETURN: &str = "预算截图模糊不清";
const NOTE: &str = "客户来电走个人手机";
const ROLLBACK: &str = "通话记录造假退回";
const REASSIGN: &str = "客户要求更换对接人";
const LIFT: &str = "已核实为重复点击";
const PROOF: &str = "名片扫描件内容";
const TEXTS: [&str; 9] = [
    ASK, HANDOFF, ANSWER, RETURN, NOTE, ROLLBACK, REASSIGN, LIFT, PROOF,
];

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
    all.extend(TEXTS.iter().map(|t| t.to_string()));
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

/// Every needle found in a file of the blob store under `root`.
fn found_in_blob_files(root: &std::path::Path, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for n in needles {
                if contains(&bytes, n.as_bytes()) {
                    found.push(format!("{n} in {}", path.display()));
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
    let files = tempfile::tempdir().unwrap();
    let app = spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\n\
         contact_secret = \"contact-secret\"\ndial_secret = \"dial-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n\
         [storage]\npath = \"{}\"\n",
        emulator.base_url(),
        files.path().display()
    ))
    .await;
    let manager = app.user("王经理", &["manager"]).await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"], "superiors": [manager],
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

    // The ledger refuses a number however it is written, and names with spaces. (The
    // contacts added above are points already.)
    let points_before = app.count("tracking_points").await;
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
    assert_eq!(app.count("tracking_points").await, points_before);

    let rep_id = rep["id"].as_str().unwrap();
    let typed = Typed::fill(&app, &manager, rep_id).await;

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

    typed.reads_show_the_text(&app).await;

    let needles = needles();
    let found = found_in_blob_files(files.path(), &needles);
    assert!(found.is_empty(), "files stored in the clear: {found:#?}");
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

/// What the fill test typed into the product besides contacts, and where it went.
struct Typed {
    ask: String,
    handoff: String,
    attestation: String,
    proof: String,
    proof_name: String,
    proof_bytes: Vec<u8>,
    deal: String,
    customer: String,
    freeze: String,
}

/// A text that carries a free-text phrase and a person's name, number or address.
fn typed(phrase: &str, personal: &str) -> String {
    format!("{phrase}：{personal}")
}

impl Typed {
    /// Quick-ask and handoff content, an answer and a return reason, an uploaded proof with
    /// its file name, an attestation note, a rollback, a reassignment and a freeze lifted,
    /// each with a reason: all through the API, their cards delivered on WeCom.
    async fn fill(app: &TestApp, manager: &str, rep: &str) -> Typed {
        closeloop::rules::store::import(
            &app.db,
            chrono::Utc::now().timestamp_millis(),
            &app.org_id,
            &closeloop::access::Actor::cli(),
            "[[stages]]\nname = \"初步咨询\"\n[[stages]]\nname = \"需求确认\"\n",
        )
        .await
        .unwrap();
        // A customer of its own: no official call record backs the claim attested below.
        let customer = app.customer("西部精工", Some(rep)).await;
        let customer = customer.as_str();
        let presales = app.user("张工", &["presales"]).await;
        let colleague = app.user("赵强", &["sales"]).await;
        let res = app
            .client
            .put(app.url(&format!(
                "/api/v1/customers/{customer}/assignments/presales"
            )))
            .bearer_auth(&app.key)
            .json(&json!({"user": presales}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);

        let upload = |kind: &'static str, name: String, bytes: Vec<u8>| async move {
            let res = app
                .client
                .post(app.url(&format!("/api/v1/customers/{customer}/documents")))
                .bearer_auth(&app.key)
                .query(&[("actor", rep), ("kind", kind), ("filename", name.as_str())])
                .header("content-type", "image/png")
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let proof_name = format!("{}-名片.png", NAMES[3]);
        let proof_bytes =
            format!("\u{89}PNG {PROOF} {} {} {}", NAMES[2], PHONES[2], EMAILS[1]).into_bytes();
        let proof = upload("proof", proof_name.clone(), proof_bytes.clone()).await;
        let mut artefacts = serde_json::Map::new();
        for name in ["客户需求清单", "竞品对比表", "预算范围确认截图"] {
            let doc = upload("artefact", format!("{name}-{}.pdf", NAMES[1]), name.into()).await;
            artefacts.insert(name.into(), json!(doc));
        }
        // The proof goes to the customer as a tracked link too.
        let link = app
            .create(
                &format!("/api/v1/documents/{proof}/links"),
                json!({"actor": rep}),
            )
            .await;
        // The link names the public address; the token is its last segment.
        let token = link["url"].as_str().unwrap().rsplit('/').next().unwrap();
        let opened = app
            .client
            .get(app.url(&format!("/d/{token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(opened.status(), 200);
        assert!(opened.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("-%E5%90%8D%E7%89%87.png"));
        assert_eq!(opened.bytes().await.unwrap(), proof_bytes);

        // A quick-ask answered and a handoff returned, each with text.
        let ask = app
            .create(
                "/api/v1/collab/requests",
                json!({"type": "presales_question", "customer": customer, "initiator": rep,
                       "content": {"问题": typed(ASK, &format!("{} {}", NAMES[0], PHONES[0]))}}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        for (step, body) in [
            ("accept", json!({"actor": presales})),
            (
                "answer",
                json!({"actor": presales, "text": typed(ANSWER, EMAILS[0])}),
            ),
        ] {
            let res = app
                .post(&format!("/api/v1/collab/requests/{ask}/{step}"), &body)
                .await;
            assert_eq!(res.status(), 200, "{step}: {}", res.text().await.unwrap());
        }
        let handoff = app
            .create(
                "/api/v1/collab/requests",
                json!({"type": "sales_to_presales", "customer": customer, "initiator": rep,
                       "content": {"客户需求概述": typed(HANDOFF, NAMES[1])}, "artefacts": artefacts}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let res = app
            .post(
                &format!("/api/v1/collab/requests/{handoff}/return"),
                &json!({"actor": presales, "reason": typed(RETURN, PHONES[1])}),
            )
            .await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

        // A claimed call backed by the proof and a note, for the superior to confirm.
        let tap = |action: &'static str| async move {
            app.post(
                "/api/v1/events",
                &json!({"actor": rep, "customer": customer, "action": action}),
            )
            .await
        };
        let claim: Value = tap("已电话沟通").await.json().await.unwrap();
        let attestation = app
            .create(
                &format!(
                    "/api/v1/events/{}/attestations",
                    claim["id"].as_str().unwrap()
                ),
                json!({"actor": rep, "document": proof,
                       "note": typed(NOTE, &format!("{} {}", NAMES[2], PHONES[2]))}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();

        // A deal moved forward, rolled back and handed over, each with a reason.
        let deal = app
            .create(
                "/api/v1/deals",
                json!({"customer": customer, "title": "质检方案", "owner": rep}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        for (step, body) in [
            ("advance", json!({"actor": rep})),
            (
                "rollback",
                json!({"to": "初步咨询", "actor": manager,
                       "reason": typed(ROLLBACK, &format!("{} {}", NAMES[3], PHONES[3]))}),
            ),
            (
                "reassign",
                json!({"owner": colleague, "actor": manager,
                       "reason": typed(REASSIGN, EMAILS[1])}),
            ),
        ] {
            let res = app
                .post(&format!("/api/v1/deals/{deal}/{step}"), &body)
                .await;
            assert_eq!(res.status(), 200, "{step}: {}", res.text().await.unwrap());
        }

        // The repeat rule freezes the rep; the superior lifts it with a reason.
        for _ in 0..10 {
            if tap("已电话沟通").await.status() != 201 {
                break;
            }
        }
        let freezes: Value = app
            .get("/api/v1/freezes?active=true")
            .await
            .json()
            .await
            .unwrap();
        let freeze = freezes["items"][0]["id"].as_str().unwrap().to_string();
        let res = app
            .post(
                &format!("/api/v1/freezes/{freeze}/lift"),
                &json!({"actor": manager, "reason": typed(LIFT, PHONES[4])}),
            )
            .await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

        app.worker.drain().await.unwrap();
        Typed {
            ask,
            handoff,
            attestation,
            proof,
            proof_name,
            proof_bytes,
            deal,
            customer: customer.to_string(),
            freeze,
        }
    }

    /// Those who saw the text before it was encrypted still see it.
    async fn reads_show_the_text(&self, app: &TestApp) {
        let get = |path: String| async move {
            let res = app.get(&path).await;
            assert_eq!(res.status(), 200, "{path}");
            res.json::<Value>().await.unwrap()
        };
        let ask = get(format!("/api/v1/collab/requests/{}", self.ask)).await;
        assert_eq!(
            ask["content"]["问题"],
            typed(ASK, &format!("{} {}", NAMES[0], PHONES[0]))
        );
        assert_eq!(ask["answer"], typed(ANSWER, EMAILS[0]));
        let answered = ask["trail"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "answered")
            .unwrap();
        assert_eq!(answered["detail"]["answer"], typed(ANSWER, EMAILS[0]));
        let handoff = get(format!("/api/v1/collab/requests/{}", self.handoff)).await;
        assert_eq!(handoff["content"]["客户需求概述"], typed(HANDOFF, NAMES[1]));
        assert_eq!(handoff["return_reason"], typed(RETURN, PHONES[1]));

        let attestation = closeloop::verification::attest::get(
            &app.db,
            &app.cipher,
            &app.org_id,
            &self.attestation,
        )
        .await
        .unwrap();
        let note = typed(NOTE, &format!("{} {}", NAMES[2], PHONES[2]));
        assert_eq!(attestation.note.as_deref(), Some(note.as_str()));
        // The superior's card shows it.
        let (card,): (String,) = sqlx::query_as(
            "SELECT content_enc FROM cards WHERE purpose = 'attestation' AND object_ref = $1",
        )
        .bind(&self.attestation)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        let card = app.cipher.decrypt("cards.content", &card).unwrap();
        assert!(card.contains(&note), "{card}");
        let proof = get(format!("/api/v1/documents/{}", self.proof)).await;
        assert_eq!(proof["filename"], self.proof_name);
        let content = app
            .get(&format!("/api/v1/documents/{}/content", self.proof))
            .await;
        assert_eq!(content.bytes().await.unwrap(), self.proof_bytes);

        let deal = get(format!("/api/v1/deals/{}", self.deal)).await;
        let rollback = deal["stage_history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["kind"] == "rollback")
            .unwrap();
        assert_eq!(
            rollback["reason"],
            typed(ROLLBACK, &format!("{} {}", NAMES[3], PHONES[3]))
        );
        let owners = get(format!("/api/v1/customers/{}/owners", self.customer)).await;
        let owners = owners.as_array().or(owners["items"].as_array()).unwrap();
        let last = owners.last().unwrap();
        assert_eq!(
            (&last["reason"], &last["note"]),
            (&json!("reassigned"), &json!(typed(REASSIGN, EMAILS[1])))
        );
        let freezes = get(format!("/api/v1/freezes?customer={}", self.customer)).await;
        let lifted = freezes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == self.freeze.as_str())
            .unwrap();
        assert_eq!(lifted["lift_reason"], typed(LIFT, PHONES[4]));

        // The audit log and the ledger name the rows that hold the reasons.
        let (detail,): (String,) = sqlx::query_as(
            "SELECT detail FROM audit_log WHERE action = 'deal.reassign' AND target_id = $1",
        )
        .bind(&self.deal)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        let detail: Value = serde_json::from_str(&detail).unwrap();
        assert!(
            detail["ownership"].is_string() && detail.get("reason").is_none(),
            "{detail}"
        );
        let (payload,): (String,) = sqlx::query_as(
            "SELECT payload FROM tracking_points WHERE action = 'stage.rollback' AND deal_id = $1",
        )
        .bind(&self.deal)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        let payload: Value = serde_json::from_str(&payload).unwrap();
        assert!(
            payload["stage_history"].is_string() && payload.get("reason").is_none(),
            "{payload}"
        );
    }
}

/// The migrations before personal data was sealed, to build a database as it was.
async fn migrate_to_before_sealing(db: &Db) {
    crate::helpers::migrate_to_before(db, "20261207000400").await
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
    // Free text as the earlier version kept it: collaboration text, a trail with the answer,
    // an attestation note, a card, a file name, reasons in rows, audit entries, ledger
    // payloads and a queued webhook delivery.
    let reasons =
        json!({"from": "需求确认", "to": "初步咨询", "reason": typed(ROLLBACK, PHONES[3])});
    let reassigned = json!({"from": "u1", "to": "u2", "reason": typed(REASSIGN, EMAILS[1])});
    let card = json!({"title": "售前快速提问", "description": null,
                      "fields": [["问题", typed(ASK, NAMES[0])]], "buttons": []});
    let webhook = json!({"webhook_id": "w1", "event_id": "p2", "event": {"type": "point.created",
                         "data": {"id": "p2", "action": "stage.rollback", "payload": reasons}}});
    let free_text: Vec<(&str, Vec<String>)> = vec![
        ("INSERT INTO users (id, org_id, name, created_at, updated_at) VALUES ($1, 'org', '李明', 0, 0)", vec!["u1".into()]),
        ("INSERT INTO users (id, org_id, name, created_at, updated_at) VALUES ($1, 'org', '王经理', 0, 0)", vec!["u2".into()]),
        ("INSERT INTO deals (id, org_id, customer_id, title, stage, created_at, updated_at) VALUES ($1, 'org', 'c1', '质检方案', '初步咨询', 0, 0)", vec!["d1".into()]),
        ("INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, deal_id, action, occurred_at, source, payload) VALUES ($1, 'org', 'u1', 'c1', 'd1', $2, 4, 'system', $3)",
         vec!["p2".into(), "stage.rollback".into(), reasons.to_string()]),
        ("INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, deal_id, action, occurred_at, source, payload) VALUES ($1, 'org', 'u2', 'c1', 'd1', $2, 5, 'system', $3)",
         vec!["p3".into(), "deal.reassigned".into(), reassigned.to_string()]),
        ("INSERT INTO deal_stage_history (id, deal_id, from_stage, to_stage, actor_user_id, reason, at, kind) VALUES ($1, 'd1', '需求确认', '初步咨询', 'u2', $2, 4, 'rollback')",
         vec!["h1".into(), typed(ROLLBACK, PHONES[3])]),
        ("INSERT INTO deal_stage_history (id, deal_id, from_stage, to_stage, reason, at) VALUES ($1, 'd1', NULL, '初步咨询', 'created', 1)", vec!["h0".into()]),
        ("INSERT INTO customer_owners (id, customer_id, user_id, from_at, reason) VALUES ($1, 'c1', 'u2', 5, 'reassigned')", vec!["o1".into()]),
        ("INSERT INTO audit_log (id, org_id, at, actor_kind, action, target_kind, target_id, detail) VALUES ($1, 'org', 4, 'user', 'deal.rollback', 'deal', 'd1', $2)",
         vec!["l1".into(), reasons.to_string()]),
        ("INSERT INTO audit_log (id, org_id, at, actor_kind, action, target_kind, target_id, detail) VALUES ($1, 'org', 5, 'user', 'deal.reassign', 'deal', 'd1', $2)",
         vec!["l2".into(), reassigned.to_string()]),
        ("INSERT INTO audit_log (id, org_id, at, actor_kind, action, target_kind, target_id, detail) VALUES ($1, 'org', 6, 'user', 'antifraud.lift', 'action_freeze', 'f1', $2)",
         vec!["l3".into(), json!({"reason": typed(LIFT, PHONES[4]), "lifted_by": "u2"}).to_string()]),
        ("INSERT INTO action_freezes (id, org_id, user_id, customer_id, rule, reason, frozen_at, lifted_at, lifted_by, lift_reason) VALUES ($1, 'org', 'u1', 'c1', 'rule.repeat_limit', '同类动作超过次数', 2, 6, 'u2', $2)",
         vec!["f1".into(), typed(LIFT, PHONES[4])]),
        ("INSERT INTO collab_requests (id, org_id, kind, type_key, title, customer_id, initiator_user_id, responsible_role, assignee_user_id, status, content, content_hash, answer, due_at, created_at, updated_at) \
          VALUES ($1, 'org', 'quick_ask', 'presales_question', '售前快速提问', 'c1', 'u1', 'presales', 'u2', 'answered', $2, 'h', $3, 9, 0, 0)",
         vec!["q1".into(), json!({"问题": typed(ASK, NAMES[0])}).to_string(), typed(ANSWER, EMAILS[0])]),
        ("INSERT INTO collab_requests (id, org_id, kind, type_key, title, customer_id, initiator_user_id, responsible_role, assignee_user_id, status, content, content_hash, return_reason, due_at, created_at, updated_at) \
          VALUES ($1, 'org', 'handoff', 'sales_to_presales', '交接', 'c1', 'u1', 'presales', 'u2', 'returned', $2, 'h', $3, 9, 0, 0)",
         vec!["q2".into(), json!({"客户需求概述": typed(HANDOFF, NAMES[1])}).to_string(), typed(RETURN, PHONES[1])]),
        ("INSERT INTO collab_events (id, request_id, at, actor_user_id, action, detail) VALUES ($1, 'q1', 3, 'u2', 'answered', $2)",
         vec!["e1".into(), json!({"answer": typed(ANSWER, EMAILS[0]), "date": "2026-12-01", "reason": null}).to_string()]),
        ("INSERT INTO collab_events (id, request_id, at, actor_user_id, action, detail) VALUES ($1, 'q2', 3, 'u2', 'returned', $2)",
         vec!["e2".into(), json!({"answer": null, "date": null, "reason": typed(RETURN, PHONES[1])}).to_string()]),
        ("INSERT INTO cards (id, org_id, recipient_user_id, purpose, object_ref, content, created_at, updated_at) VALUES ($1, 'org', 'u2', 'collab.request', 'q1', $2, 0, 0)",
         vec!["card1".into(), card.to_string()]),
        ("INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source, payload) VALUES ($1, 'org', 'u1', 'c1', '已电话沟通', 2, 'api', '{}')",
         vec!["p1".into()]),
        ("INSERT INTO blobs (id, org_id, sha256, size_bytes, content_type, filename, storage_key, created_at) VALUES ($1, 'org', 'ab01', 10, 'image/png', $2, 'org/ab/ab01', 0)",
         vec!["b1".into(), format!("{}-名片.png", NAMES[3])]),
        ("INSERT INTO documents (id, org_id, customer_id, kind, blob_id, uploaded_by, created_at) VALUES ($1, 'org', 'c1', 'proof', 'b1', 'u1', 0)", vec!["doc1".into()]),
        ("INSERT INTO attestations (id, org_id, point_id, requested_by, approver_user_id, document_id, note, status, created_at) VALUES ($1, 'org', 'p1', 'u1', 'u2', 'doc1', $2, 'pending', 0)",
         vec!["a1".into(), typed(NOTE, NAMES[2])]),
        ("INSERT INTO jobs (id, org_id, kind, payload, status, run_at, max_attempts, created_at, updated_at) VALUES ($1, 'org', 'webhook.deliver', $2, 'queued', 0, 12, 0, 0)",
         vec!["j2".into(), webhook.to_string()]),
    ];
    for (sql, binds) in &free_text {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(&db.pool).await.unwrap();
    }
    // A proof in the blob store as the earlier version kept it: in the clear.
    let blobs = BlobStore::from_config(
        &StorageConfig {
            path: dir.path().join("blobs"),
            ..StorageConfig::default()
        },
        cipher.clone(),
    )
    .unwrap();
    let proof = format!("{PROOF} {} {}", NAMES[2], PHONES[2]);
    std::fs::create_dir_all(dir.path().join("blobs/org/ab")).unwrap();
    std::fs::write(dir.path().join("blobs/org/ab/ab01"), &proof).unwrap();

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
    let ran = closeloop::personal_data::migrate(&db, &cipher, &blobs, 1)
        .await
        .unwrap();
    assert_eq!(ran, ["seal_personal_data_v1", "seal_personal_data_v2"]);
    assert!(
        closeloop::personal_data::migrate(&db, &cipher, &blobs, 2)
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

    sealed_free_text_reads_back(&db, &cipher, &blobs, &proof).await;

    let needles = needles();
    let found = found_in_blob_files(&dir.path().join("blobs"), &needles);
    assert!(found.is_empty(), "files left in the clear: {found:#?}");
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

/// After `seal_personal_data_v2`: the old free text decrypts where it is kept, and is gone
/// from where it was copied.
async fn sealed_free_text_reads_back(db: &Db, cipher: &Cipher, blobs: &BlobStore, proof: &str) {
    let one = |sql: &'static str| async move {
        let (v,): (Option<String>,) = sqlx::query_as(sql).fetch_one(&db.pool).await.unwrap();
        v
    };
    let open = |context: &str, sealed: Option<String>| {
        cipher.decrypt(context, &sealed.expect(context)).unwrap()
    };
    let tz = chrono_tz::Asia::Shanghai;
    let q1 = closeloop::collab::requests::get(db, cipher, "org", tz, "q1")
        .await
        .unwrap();
    assert_eq!(q1.content, json!({"问题": typed(ASK, NAMES[0])}));
    assert_eq!(
        q1.answer.as_deref(),
        Some(typed(ANSWER, EMAILS[0]).as_str())
    );
    let answered = &q1.trail[0];
    assert_eq!(answered.detail["answer"], typed(ANSWER, EMAILS[0]));
    assert_eq!(answered.detail["date"], "2026-12-01");
    let q2 = closeloop::collab::requests::get(db, cipher, "org", tz, "q2")
        .await
        .unwrap();
    assert_eq!(
        q2.return_reason.as_deref(),
        Some(typed(RETURN, PHONES[1]).as_str())
    );
    assert_eq!(
        serde_json::from_str::<Value>(
            &one("SELECT detail FROM collab_events WHERE id = 'e1'")
                .await
                .unwrap()
        )
        .unwrap(),
        json!({"date": "2026-12-01"})
    );

    let a1 = closeloop::verification::attest::get(db, cipher, "org", "a1")
        .await
        .unwrap();
    assert_eq!(a1.note.as_deref(), Some(typed(NOTE, NAMES[2]).as_str()));
    let card = open(
        "cards.content",
        one("SELECT content_enc FROM cards WHERE id = 'card1'").await,
    );
    assert_eq!(
        serde_json::from_str::<Value>(&card).unwrap()["fields"][0][1],
        typed(ASK, NAMES[0])
    );
    let (doc, bytes) = closeloop::documents::content(db, cipher, blobs, "org", "doc1")
        .await
        .unwrap();
    assert_eq!(doc.filename, format!("{}-名片.png", NAMES[3]));
    assert_eq!(bytes, proof.as_bytes());

    assert_eq!(
        open(
            "action_freezes.lift_reason",
            one("SELECT lift_reason_enc FROM action_freezes WHERE id = 'f1'").await
        ),
        typed(LIFT, PHONES[4])
    );
    assert_eq!(
        open(
            "deal_stage_history.reason",
            one("SELECT reason_enc FROM deal_stage_history WHERE id = 'h1'").await
        ),
        typed(ROLLBACK, PHONES[3])
    );
    assert_eq!(
        one("SELECT reason FROM deal_stage_history WHERE id = 'h1'").await,
        None
    );
    assert_eq!(
        one("SELECT reason FROM deal_stage_history WHERE id = 'h0'")
            .await
            .as_deref(),
        Some("created"),
        "codes stay"
    );
    assert_eq!(
        open(
            "customer_owners.note",
            one("SELECT note_enc FROM customer_owners WHERE id = 'o1'").await
        ),
        typed(REASSIGN, EMAILS[1])
    );
    for sql in [
        "SELECT detail FROM audit_log WHERE id = 'l1'",
        "SELECT detail FROM audit_log WHERE id = 'l2'",
        "SELECT detail FROM audit_log WHERE id = 'l3'",
        "SELECT payload FROM tracking_points WHERE id = 'p2'",
        "SELECT payload FROM tracking_points WHERE id = 'p3'",
    ] {
        let v: Value = serde_json::from_str(&one(sql).await.unwrap()).unwrap();
        assert!(
            v.get("reason").is_none() && !v.as_object().unwrap().is_empty(),
            "{sql}: {v}"
        );
    }
    let job: Value = serde_json::from_str(
        &one("SELECT payload FROM jobs WHERE id = 'j2'")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        job["event"]["data"]["payload"],
        json!({"from": "需求确认", "to": "初步咨询"})
    );
}

#[tokio::test]
async fn a_number_is_marked_invalid_with_a_reason_code_never_typed_text() {
    let app = spawn_app_with("").await;
    let customer = app
        .create(
            "/api/v1/customers",
            json!({"name": "华南智造", "contacts": [{"name": NAMES[0], "phones": [PHONES[0]]}]}),
        )
        .await;
    let phone = customer["contacts"][0]["phones"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let put = |body: Value| {
        let app = &app;
        let phone = phone.clone();
        async move {
            app.client
                .put(app.url(&format!("/api/v1/phones/{phone}/validity")))
                .bearer_auth(&app.key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // The reason is kept in the clear and audited, so it is a code: typed text (here a
    // name) is refused and nothing changes.
    let (status, code, _) =
        error_code(put(json!({"valid": false, "reason": typed("客户说打错了", NAMES[1])})).await)
            .await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));
    assert_eq!(app.count("contact_phones WHERE valid = 1").await, 1);
    assert_eq!(
        app.count("audit_log WHERE action = 'phone.mark_invalid'")
            .await,
        0
    );
    let res = put(json!({"valid": false, "reason": " 空号 "})).await;
    assert_eq!(res.status(), 200);
    let marked: Value = res.json().await.unwrap();
    assert_eq!(
        (&marked["valid"], &marked["invalid_reason"]),
        (&json!(false), &json!("空号"))
    );
}
