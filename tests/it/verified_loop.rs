//! The verified loop: claimed calls checked against official records, stage gates on
//! evidence, anti-fraud rules, attested evidence, contact validity — and the seed's
//! troubleshooting case end to end.

use std::sync::Arc;
use std::time::Duration;

use closeloop::access::Actor;
use closeloop::chat::event::Platform;
use closeloop::clock::Clock as _;
use closeloop::rules::RuleSet;
use closeloop::verification::calls::{self, CallRecord};
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{error_code, spawn_app_clocked, ManualClock, TestApp};

const MIN: Duration = Duration::from_secs(60);

struct Loop {
    app: TestApp,
    clock: Arc<ManualClock>,
    manager: String,
    rep: String,
    customer: String,
    deal: String,
}

async fn setup() -> Loop {
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_app_clocked("", clock.clone()).await;
    let manager = app.user("王经理", &["manager"]).await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"], "superiors": [manager],
                   "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("华东医疗器械", Some(&rep)).await;
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "质检方案", "owner": rep}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    Loop {
        app,
        clock,
        manager,
        rep,
        customer,
        deal,
    }
}

impl Loop {
    async fn tap(&self, action: &str) -> reqwest::Response {
        self.app
            .post(
                "/api/v1/events",
                &json!({"actor": self.rep, "customer": self.customer, "action": action}),
            )
            .await
    }

    async fn tap_ok(&self, action: &str) -> String {
        let res = self.tap(action).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// An official call by the rep to the customer's number, `offset` after now.
    async fn call(&self, key: &str, offset_ms: i64, secs: i64) {
        let rec = CallRecord {
            platform: Platform::Wecom,
            record_key: key.into(),
            caller: "liming".into(),
            callee_phone: Some("+86 138 0013 8000".into()),
            started_at_ms: self.clock.now_ms() + offset_ms,
            duration_s: secs,
            call_type: Some("single".into()),
        };
        let rules = self.app_rules().await;
        calls::store(
            &self.app.db,
            &self.app.cipher,
            &rules,
            self.clock.now_ms(),
            &self.app.org_id,
            &[rec],
        )
        .await
        .unwrap();
    }

    async fn app_rules(&self) -> RuleSet {
        closeloop::rules::Rules::new(self.app.db.clone())
            .current(&self.app.org_id)
            .await
            .unwrap()
            .as_ref()
            .clone()
    }

    async fn status(&self, point: &str) -> String {
        let v: Value = self
            .app
            .get(&format!("/api/v1/events/{point}/verification"))
            .await
            .json()
            .await
            .unwrap();
        v["status"].as_str().unwrap_or("none").to_string()
    }

    /// Moves past the claim window and its settling time, then runs due jobs.
    async fn settle(&self) {
        self.clock.advance(46 * MIN);
        self.app.worker.drain().await.unwrap();
    }

    async fn advance(&self) -> reqwest::Response {
        self.app
            .post(
                &format!("/api/v1/deals/{}/advance", self.deal),
                &json!({"actor": self.rep}),
            )
            .await
    }

    async fn proposal(&self) {
        let now = self.clock.now_ms();
        let blob = closeloop::db::new_id();
        sqlx::query(
            "INSERT INTO blobs (id, org_id, sha256, size_bytes, content_type, filename_enc, storage_key, uploaded_by, created_at) \
             VALUES ($1, $2, 'x', 1, 'application/pdf', $5, 'k', $3, $4)",
        )
        .bind(&blob)
        .bind(&self.app.org_id)
        .bind(&self.rep)
        .bind(now)
        .bind(self.app.cipher.encrypt("blobs.filename", "p.pdf"))
        .execute(&self.app.db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO documents (id, org_id, customer_id, kind, blob_id, uploaded_by, created_at) \
             VALUES ($1, $2, $3, 'proposal', $4, $5, $6)",
        )
        .bind(closeloop::db::new_id())
        .bind(&self.app.org_id)
        .bind(&self.customer)
        .bind(&blob)
        .bind(&self.rep)
        .bind(now)
        .execute(&self.app.db.pool)
        .await
        .unwrap();
    }

    async fn attest(&self, point: &str, actor: &str) -> reqwest::Response {
        self.app
            .post(
                &format!("/api/v1/events/{point}/attestations"),
                &json!({"actor": actor, "note": "客户来电，走的是个人手机"}),
            )
            .await
    }

    async fn decide(&self, id: &str, actor: &str, approve: bool) -> reqwest::Response {
        self.app
            .post(
                &format!("/api/v1/attestations/{id}/decision"),
                &json!({"actor": actor, "approve": approve}),
            )
            .await
    }

    async fn rollback(&self, body: Value) -> reqwest::Response {
        self.app
            .post(&format!("/api/v1/deals/{}/rollback", self.deal), &body)
            .await
    }

    async fn chat(&self, messages: i64, day: &str) -> reqwest::Response {
        self.app
            .client
            .put(self.app.url("/api/v1/chat-counts"))
            .bearer_auth(&self.app.key)
            .json(&json!({"user": self.rep, "customer": self.customer, "day": day, "messages": messages, "source": "wecom"}))
            .send()
            .await
            .unwrap()
    }

    async fn points(&self, action: &str) -> i64 {
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM tracking_points WHERE action = $1")
            .bind(action)
            .fetch_one(&self.app.db.pool)
            .await
            .unwrap()
            .get("n")
    }

    async fn import(&self, toml: &str) {
        closeloop::rules::store::import(
            &self.app.db,
            self.clock.now_ms(),
            &self.app.org_id,
            &Actor::cli(),
            toml,
        )
        .await
        .unwrap();
    }
}

async fn missing_codes(res: reqwest::Response) -> Vec<String> {
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gate_not_met", "{body}");
    body["error"]["details"]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["code"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_claimed_call_is_verified_too_short_or_unverified_by_the_official_records() {
    let l = setup().await;
    // Verified: a 4-minute call 10 minutes before the tap.
    let verified = l.tap_ok("已电话沟通").await;
    assert_eq!(l.status(&verified).await, "pending");
    l.call("r1", -10 * 60_000, 240).await;
    assert_eq!(l.status(&verified).await, "verified");
    let v: Value = l
        .app
        .get(&format!("/api/v1/events/{verified}/verification"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["evidence_source"], "call_record");
    assert_eq!(v["duration_s"], 240);
    let ev: Value = l
        .app
        .get(&format!("/api/v1/events/{verified}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        ev["verification"], "verified",
        "the ledger shows the outcome"
    );

    // A record backs one claim only: a second tap 5 minutes later finds nothing else.
    l.clock.advance(5 * MIN);
    let second = l.tap_ok("已电话沟通").await;
    assert_eq!(l.status(&second).await, "pending");
    l.settle().await;
    assert_eq!(l.status(&second).await, "unverified");
    assert_eq!(
        l.status(&verified).await,
        "verified",
        "settling never downgrades"
    );

    // A late record (the poll's lag) still upgrades an unverified claim.
    l.call("r2", -45 * 60_000, 200).await;
    assert_eq!(l.status(&second).await, "verified");

    // Too short: only a 1-minute call in the window.
    l.clock.advance(24 * 60 * MIN);
    let short = l.tap_ok("已电话沟通").await;
    l.call("r3", 60_000, 60).await;
    assert_eq!(
        l.status(&short).await,
        "pending",
        "a short call does not settle before the window closes"
    );
    l.settle().await;
    assert_eq!(l.status(&short).await, "too_short");

    // A call outside the window does not count.
    l.clock.advance(24 * 60 * MIN);
    let outside = l.tap_ok("已电话沟通").await;
    l.call("r4", -31 * 60_000, 600).await;
    l.settle().await;
    assert_eq!(l.status(&outside).await, "unverified");

    // Actions that claim nothing are not verified.
    let other = l.tap_ok("已发送样品清单").await;
    assert_eq!(l.status(&other).await, "none");
}

#[tokio::test]
async fn the_gate_needs_two_valid_communications_and_a_proposal() {
    let l = setup().await;
    let codes = missing_codes(l.advance().await).await;
    assert_eq!(codes, ["communications", "proposals"]);

    // One verified call, one day of chat with 3 messages, one proposal.
    l.tap_ok("已电话沟通").await;
    l.call("r1", -60_000, 200).await;
    assert_eq!(l.chat(2, "2026-11-20").await.status(), 204);
    let res = l.advance().await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["error"]["details"]["evidence"]["communications"], 1,
        "two messages in a day are not a communication: {body}"
    );
    assert_eq!(l.chat(3, "2026-11-21").await.status(), 204);
    assert_eq!(
        missing_codes(l.advance().await).await,
        ["proposals"],
        "the refusal lists exactly what is missing"
    );
    l.proposal().await;
    let res = l.advance().await;
    assert_eq!(res.status(), 200);
    let deal: Value = res.json().await.unwrap();
    assert_eq!(deal["stage"], "需求确认");
    let last = deal["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["kind"], "advance");
    assert_eq!(last["actor"], l.rep.as_str());
    assert_eq!(l.points("stage.advance").await, 1);
    assert_eq!(l.points("rule.gate").await, 3, "every refusal is a point");

    // Skipping a stage, or going back through advance, is illegal.
    let res = l
        .app
        .post(
            &format!("/api/v1/deals/{}/advance", l.deal),
            &json!({"to": "赢单"}),
        )
        .await;
    assert_eq!(error_code(res).await.1, "illegal_stage_move");
}

#[tokio::test]
async fn evidence_policies_decide_what_counts_and_attestation_fills_the_gap() {
    let l = setup().await;
    // A platform without call records: only attested evidence counts for the API.
    l.import("[evidence.default]\naccepts = [\"meeting\", \"attested\"]\n")
        .await;
    let a = l.tap_ok("已电话沟通").await;
    let b = l.tap_ok("已电话沟通").await;
    l.call("r1", 0, 300).await;
    l.proposal().await;
    assert_eq!(
        l.status(&a).await,
        "pending",
        "call records do not count under this policy"
    );
    assert_eq!(missing_codes(l.advance().await).await, ["communications"]);

    // The rep attests; the direct superior confirms on a card.
    let other = l.app.user("路人", &["sales"]).await;
    assert_eq!(error_code(l.attest(&a, &other).await).await.0, 403);
    let att: Value = l.attest(&a, &l.rep).await.json().await.unwrap();
    assert_eq!(att["approver"], l.manager.as_str());
    assert_eq!(att["status"], "pending");
    let card: (String, String) =
        sqlx::query_as("SELECT recipient_user_id, purpose FROM cards WHERE object_ref = $1")
            .bind(att["id"].as_str().unwrap())
            .fetch_one(&l.app.db.pool)
            .await
            .unwrap();
    assert_eq!(card, (l.manager.clone(), "attestation".to_string()));

    let att_id = att["id"].as_str().unwrap().to_string();
    assert_eq!(
        error_code(l.decide(&att_id, &l.rep, true).await).await.0,
        403,
        "not the rep's to decide"
    );
    let done: Value = l
        .decide(&att_id, &l.manager, true)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "confirmed");
    let again: Value = l
        .decide(&att_id, &l.manager, false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["status"], "confirmed",
        "a second decision changes nothing"
    );
    assert_eq!(l.status(&a).await, "attested");
    assert_eq!(
        missing_codes(l.advance().await).await,
        ["communications"],
        "one attested communication of two"
    );
    let att_b: Value = l.attest(&b, &l.rep).await.json().await.unwrap();
    let res = l
        .decide(att_b["id"].as_str().unwrap(), &l.manager, true)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(l.advance().await.status(), 200);
}

#[tokio::test]
async fn a_dead_number_blocks_the_gate_until_fixed() {
    let l = setup().await;
    l.import("[[stages]]\nname = \"初步咨询\"\n[[stages]]\nname = \"需求确认\"\n[stages.requires]\nvalid_contact = true\n")
        .await;
    // Three calls with no talk time flag the number (the seed's 停机 case).
    for (i, at) in [-50, -40, -30].iter().enumerate() {
        l.call(&format!("dead{i}"), at * 60_000, 0).await;
    }
    let phone: (i64, Option<String>, String) =
        sqlx::query_as("SELECT CAST(valid AS BIGINT), invalid_reason, id FROM contact_phones")
            .fetch_one(&l.app.db.pool)
            .await
            .unwrap();
    assert_eq!((phone.0, phone.1.as_deref()), (0, Some("failed_calls")));
    assert_eq!(missing_codes(l.advance().await).await, ["valid_contact"]);
    // Someone checks the number and marks it valid again.
    let res = l
        .app
        .client
        .put(l.app.url(&format!("/api/v1/phones/{}/validity", phone.2)))
        .bearer_auth(&l.app.key)
        .json(&json!({"valid": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(l.advance().await.status(), 200);
    // And marked invalid by hand it blocks again (after a rollback to try once more).
    let res = l
        .app
        .client
        .put(l.app.url(&format!("/api/v1/phones/{}/validity", phone.2)))
        .bearer_auth(&l.app.key)
        .json(&json!({"valid": false, "reason": "空号"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["valid"], false);
    assert_eq!(body["invalid_reason"], "空号");
}

#[tokio::test]
async fn the_ip_rule_is_per_rep_and_the_repeat_rule_per_action_and_customer() {
    let l = setup().await;
    let colleague = l.app.user("同事", &["sales"]).await;
    // Two reps behind one office NAT: 2 + 1 records in a minute flag nobody.
    l.tap_ok("已发送样品清单").await;
    l.tap_ok("客户提出价格异议").await;
    let res = l
        .app
        .post(
            "/api/v1/events",
            &json!({"actor": colleague, "customer": l.customer, "action": "已发送样品清单"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(l.points("rule.ip_burst").await, 0);
    // A third record by the same rep within the minute is flagged once, not refused.
    l.clock.advance(Duration::from_secs(20));
    l.tap_ok("已电话沟通").await;
    assert_eq!(l.points("rule.ip_burst").await, 1);
    l.tap_ok("已电话沟通").await;
    assert_eq!(l.points("rule.ip_burst").await, 1, "one flag per burst");
    // Different actions on the same customer each have their own count.
    l.clock.advance(2 * MIN);
    l.tap_ok("客户提出价格异议").await;
    let (status, code, _) = error_code(l.tap("客户提出价格异议").await).await;
    assert_eq!((status, code.as_str()), (409, "repeat_limit"));
    // The freeze covers every guarded action on that customer, not others.
    let (_, code, _) = error_code(l.tap("已发送样品清单").await).await;
    assert_eq!(code, "action_frozen");
    let elsewhere = l.app.customer("另一家", Some(&l.rep)).await;
    let res = l
        .app
        .post(
            "/api/v1/events",
            &json!({"actor": l.rep, "customer": elsewhere, "action": "客户提出价格异议"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    // After 24 hours the window has rolled, but the freeze holds until lifted.
    l.clock.advance(25 * 60 * MIN);
    let (_, code, _) = error_code(l.tap("客户提出价格异议").await).await;
    assert_eq!(code, "action_frozen");
    let freezes: Value = l
        .app
        .get("/api/v1/freezes?active=true")
        .await
        .json()
        .await
        .unwrap();
    let id = freezes["items"][0]["id"].as_str().unwrap().to_string();
    let lift = l
        .app
        .post(
            &format!("/api/v1/freezes/{id}/lift"),
            &json!({"reason": "已核实"}),
        )
        .await;
    assert_eq!(lift.status(), 200);
    l.tap_ok("客户提出价格异议").await;
    // System names cannot be written through the API, nor uploads without their file.
    let (status, _, _) = error_code(l.tap("rule.repeat_limit").await).await;
    assert_eq!(status, 422);
    let (status, _, message) = error_code(l.tap("上传方案").await).await;
    assert_eq!(status, 422);
    assert!(message.contains("documents"), "{message}");
}

#[tokio::test]
async fn a_retried_refusal_gets_the_same_answer_and_writes_nothing_more() {
    let l = setup().await;
    l.tap_ok("已发送样品清单").await;
    l.tap_ok("已发送样品清单").await;
    let send = || {
        l.app
            .client
            .post(l.app.url("/api/v1/events"))
            .bearer_auth(&l.app.key)
            .header("Idempotency-Key", "tap-3")
            .json(&json!({"actor": l.rep, "customer": l.customer, "action": "已发送样品清单"}))
            .send()
    };
    let first = error_code(send().await.unwrap()).await;
    let before = l.app.count("tracking_points").await;
    let second = error_code(send().await.unwrap()).await;
    assert_eq!(first.1, "repeat_limit");
    assert_eq!(second.1, "repeat_limit");
    assert_eq!(l.app.count("tracking_points").await, before);
    assert_eq!(l.app.count("action_freezes").await, 1);
}

/// The seed's 故障排查案例: three fake 「已电话沟通」 within one minute from one IP with no
/// call record → flagged, frozen, unverified, the stage move refused; the manager rolls
/// the stage back and reassigns the lead; the history shows it all.
#[tokio::test]
async fn the_seed_troubleshooting_case_end_to_end() {
    let l = setup().await;
    // Before the rule existed the deal was moved up on claims alone.
    l.import("[[stages]]\nname = \"初步咨询\"\n[[stages]]\nname = \"需求确认\"\n[antifraud]\nrepeat_limit = 0\nip_burst_count = 0\n")
        .await;
    assert_eq!(l.advance().await.status(), 200);
    // The seed's rules are put back in force (an import, no restart).
    l.import(&RuleSet::default().to_toml()).await;

    // Three fake calls within a minute from one IP.
    let first = l.tap_ok("已电话沟通").await;
    l.clock.advance(Duration::from_secs(15));
    let second = l.tap_ok("已电话沟通").await;
    l.clock.advance(Duration::from_secs(15));
    let (status, code, message) = error_code(l.tap("已电话沟通").await).await;
    assert_eq!((status, code.as_str()), (409, "repeat_limit"));
    assert!(message.contains("冻结"), "{message}");
    // Flagged: a rule-hit point, an audit entry and a card to the direct superior.
    assert_eq!(l.points("rule.ip_burst").await, 1);
    assert_eq!(l.points("rule.repeat_limit").await, 1);
    let audit: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'antifraud.%' ORDER BY at, id",
    )
    .fetch_all(&l.app.db.pool)
    .await
    .unwrap();
    assert_eq!(audit, ["antifraud.freeze", "antifraud.ip_burst"]);
    let alert: (String,) =
        sqlx::query_as("SELECT recipient_user_id FROM cards WHERE purpose = 'antifraud.ip_burst'")
            .fetch_one(&l.app.db.pool)
            .await
            .unwrap();
    assert_eq!(alert.0, l.manager);
    // Frozen: further actions on this customer are refused.
    assert_eq!(
        error_code(l.tap("已发送样品清单").await).await.1,
        "action_frozen"
    );
    // Unverified: no call record once the window has closed.
    l.settle().await;
    assert_eq!(l.status(&first).await, "unverified");
    assert_eq!(l.status(&second).await, "unverified");

    // Roll back (reason required, managers only) and reassign.
    assert_eq!(
        error_code(l.rollback(json!({"to": "初步咨询", "reason": ""})).await)
            .await
            .0,
        422
    );
    assert_eq!(
        error_code(
            l.rollback(json!({"to": "初步咨询", "reason": "虚假跟进", "actor": l.rep}))
                .await
        )
        .await
        .0,
        403,
        "a rep cannot roll back"
    );
    let res = l
        .rollback(
            json!({"to": "初步咨询", "reason": "虚假跟进：三条记录无通话记录", "actor": l.manager}),
        )
        .await;
    assert_eq!(res.status(), 200);
    // The stage move is refused now: no valid communication, frozen.
    let codes = missing_codes(l.advance().await).await;
    assert_eq!(codes, ["communications", "proposals", "frozen"]);
    let other_rep = l.app.user("赵强", &["sales"]).await;
    let res = l
        .app
        .post(
            &format!("/api/v1/deals/{}/reassign", l.deal),
            &json!({"owner": other_rep, "reason": "重新分配线索", "actor": l.manager}),
        )
        .await;
    let deal: Value = res.json().await.unwrap();
    assert_eq!(deal["owner"], other_rep.as_str());
    assert_eq!(deal["stage"], "初步咨询");
    let kinds: Vec<&str> = deal["stage_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "advance", "rollback"]);
    let rb = &deal["stage_history"][2];
    assert_eq!(rb["reason"], "虚假跟进：三条记录无通话记录");
    assert_eq!(rb["actor"], l.manager.as_str());
    let owners: Value = l
        .app
        .get(&format!("/api/v1/customers/{}/owners", l.customer))
        .await
        .json()
        .await
        .unwrap();
    let last = owners
        .as_array()
        .or(owners["items"].as_array())
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["user"], other_rep.as_str());
    // The ledger tells the whole story for this customer.
    let events: Value = l
        .app
        .get(&format!("/api/v1/events?customer={}&limit=100", l.customer))
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "stage.advance",
        "已电话沟通",
        "rule.repeat_limit",
        "rule.ip_burst",
        "rule.frozen",
        "stage.rollback",
        "rule.gate",
        "deal.reassigned",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
}

/// Where the platform has meeting records (DingTalk, Feishu), a meeting with the customer
/// backs a claimed call under an evidence policy that accepts meetings.
#[tokio::test]
async fn a_meeting_record_verifies_a_claim_where_meetings_count() {
    use closeloop::verification::meetings::{self, MeetingRecord};
    let l = setup().await;
    sqlx::query(
        "INSERT INTO user_identities (org_id, platform, kind, value, user_id, created_at) \
         VALUES ($1, 'dingtalk', 'userid', 'liming-dd', $2, 0)",
    )
    .bind(&l.app.org_id)
    .bind(&l.rep)
    .execute(&l.app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO customer_external_ids (org_id, platform, external_user_id, customer_id, created_at) \
         VALUES ($1, 'dingtalk', 'ext-zhang', $2, 0)",
    )
    .bind(&l.app.org_id)
    .bind(&l.customer)
    .execute(&l.app.db.pool)
    .await
    .unwrap();
    let claim = l.tap_ok("已电话沟通").await;
    let record = |id: &str, secs: i64| MeetingRecord {
        platform: Platform::Dingtalk,
        meeting_id: id.into(),
        member: "liming-dd".into(),
        external_participants: vec!["ext-zhang".into()],
        kind: "call".into(),
        topic: Some("需求沟通".into()),
        started_at_ms: l.clock.now_ms() - 5 * 60_000,
        duration_s: secs,
    };
    let rules = l.app_rules().await;
    let out = meetings::store(
        &l.app.db,
        &rules,
        l.clock.now_ms(),
        &l.app.org_id,
        &[record("m1", 600)],
    )
    .await
    .unwrap();
    assert_eq!((out.inserted, out.unmatched), (1, 0));
    assert_eq!(l.status(&claim).await, "verified");
    let v: Value = l
        .app
        .get(&format!("/api/v1/events/{claim}/verification"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["evidence_source"], "meeting");
    let again = meetings::store(
        &l.app.db,
        &rules,
        l.clock.now_ms(),
        &l.app.org_id,
        &[record("m1", 600)],
    )
    .await
    .unwrap();
    assert_eq!(again.duplicates, 1, "a record is stored once");
}
