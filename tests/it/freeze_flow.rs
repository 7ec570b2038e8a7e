//! The freeze as the people around it meet it: the sidebar warns the rep before the tap
//! that would freeze (counting exactly what the screen counts); the freeze sends the rep's
//! direct superiors a card whose one tap lifts it — on WeCom, DingTalk and Feishu alike —
//! and a later click changes nothing; a rep without superiors is told nobody was notified;
//! and the attestation card links to the proof, which only those with authority over the
//! rep may open.

use closeloop::clock::Clock;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_clocked, ManualClock, TestApp};
use crate::parity::{Chat, Received};

const ACTION: &str = "客户提出价格异议";

/// 王经理 (no role of closeloop's own) is 李明's direct superior in the platform's address
/// book; both come in with the start-up directory sync. Returns (boss, rep, customer).
async fn team(chat: &Chat) -> (TestApp, std::sync::Arc<ManualClock>, String, String, String) {
    chat.set_members(&[
        ("wangjl", "王经理", None),
        ("liming", "李明", Some("wangjl")),
    ]);
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_app_clocked(&chat.config(), clock.clone()).await;
    chat.connect(&app);
    app.worker.drain().await.unwrap();
    let mut ids = Vec::new();
    for member in ["wangjl", "liming"] {
        let i = chat.identity(member);
        let page: Value = app
            .get(&format!(
                "/api/v1/users?platform={}&identity_kind={}&identity_value={member}",
                i["platform"].as_str().unwrap(),
                i["kind"].as_str().unwrap()
            ))
            .await
            .json()
            .await
            .unwrap();
        ids.push(page["items"][0]["id"].as_str().unwrap().to_string());
    }
    let [boss, rep] = <[String; 2]>::try_from(ids).unwrap();
    let customer = app.customer("华南智造", Some(&rep)).await;
    (app, clock, boss, rep, customer)
}

/// A manager over `boss` (so the rep is in their directory subtree).
async fn manager_over(app: &TestApp, boss: &str) -> String {
    let manager = app.user("赵总监", &["manager"]).await;
    let res = app
        .patch(
            &format!("/api/v1/users/{boss}"),
            &json!({"superiors": [manager]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    manager
}

async fn tap(app: &TestApp, rep: &str, customer: &str, action: &str) -> u16 {
    app.post(
        "/api/v1/events",
        &json!({"actor": rep, "customer": customer, "action": action}),
    )
    .await
    .status()
    .as_u16()
}

/// The rep's freezes (the API's view, lift reason decrypted).
async fn freezes(app: &TestApp, rep: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("/api/v1/freezes?user={rep}"))
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

async fn clicks(app: &TestApp, customer: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!(
            "/api/v1/events?customer={customer}&action=card.click"
        ))
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

/// A web session for `user`: (Cookie header value, CSRF token).
async fn session(app: &TestApp, user: &str) -> (String, String) {
    let (value, csrf) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        user,
        "wecom",
    )
    .await
    .unwrap();
    (
        format!("{}={value}", closeloop::http::pages::session::COOKIE),
        csrf,
    )
}

async fn page(app: &TestApp, path: &str, cookie: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut req = crate::sidebar::no_redirects().get(app.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, res.bytes().await.unwrap().to_vec())
}

/// The `data-warn` of the action button `action` on the customer page, if it has one.
fn warning_of(html: &str, action: &str) -> Option<String> {
    let at = html.find(&format!("data-action=\"{action}\""))?;
    let tag = &html[at..at + html[at..].find('>').unwrap()];
    let w = tag.split("data-warn=\"").nth(1)?;
    Some(w[..w.find('"').unwrap()].to_string())
}

/// The warning counts what the repeat limit counts, with the rules in force: another
/// action, a card click or a platform event of the same action do not count; the rep's own
/// sidebar and API records do. The rep is warned exactly before the tap that freezes.
#[tokio::test]
async fn the_page_warns_before_the_tap_that_would_freeze_as_the_rules_count() {
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_app_clocked("", clock.clone()).await;
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let (cookie, _) = session(&app, &rep).await;
    let path = format!("/sidebar/customers/{customer}");
    let html = || async { String::from_utf8(page(&app, &path, Some(&cookie)).await.2).unwrap() };

    assert_eq!(tap(&app, &rep, &customer, ACTION).await, 201);
    assert_eq!(tap(&app, &rep, &customer, "已发送样品清单").await, 201);
    // Points the rule does not count, of the same action: closeloop's own and a card's.
    for (source, kind) in [("system", "system"), ("card", "user")] {
        sqlx::query(
            "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source, \
             payload, verification, actor_kind) VALUES ($1, $2, $3, $4, $5, $6, $7, '{}', 'not_applicable', $8)",
        )
        .bind(format!("uncounted-{source}"))
        .bind(&app.org_id)
        .bind(&rep)
        .bind(&customer)
        .bind(ACTION)
        .bind(clock.now_ms())
        .bind(source)
        .bind(kind)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    let first = html().await;
    assert_eq!(
        warning_of(&first, ACTION),
        None,
        "one counted record: {first}"
    );
    assert!(first.contains("id=\"freeze-warning\""));

    assert_eq!(tap(&app, &rep, &customer, ACTION).await, 201);
    let second = html().await;
    assert_eq!(
        warning_of(&second, ACTION).as_deref(),
        Some("24小时内已记录2次「客户提出价格异议」，再记录将被冻结")
    );
    assert_eq!(warning_of(&second, "已发送样品清单"), None);
    // Unguarded actions never warn.
    assert_eq!(warning_of(&second, "上传证明"), None);

    // The rule set in force decides the numbers and the duration.
    let mut rules = closeloop::rules::RuleSet::default();
    rules.antifraud.repeat_limit = 3;
    rules.antifraud.repeat_window = std::time::Duration::from_secs(3600);
    closeloop::rules::store::import(
        &app.db,
        clock.now_ms(),
        &app.org_id,
        &closeloop::access::Actor::cli(),
        &rules.to_toml(),
    )
    .await
    .unwrap();
    assert_eq!(warning_of(&html().await, ACTION), None, "2 of 3");
    assert_eq!(tap(&app, &rep, &customer, ACTION).await, 201);
    assert_eq!(
        warning_of(&html().await, ACTION).as_deref(),
        Some("1小时内已记录3次「客户提出价格异议」，再记录将被冻结")
    );
    // The window slides: an hour later the records are outside it.
    clock.advance(std::time::Duration::from_secs(3601));
    assert_eq!(warning_of(&html().await, ACTION), None);
    app.stop().await;
}

/// The rep without a direct superior: the freeze sends no card, and the banner says so.
#[tokio::test]
async fn a_rep_without_superiors_is_told_nobody_was_notified() {
    let app = crate::helpers::spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    for _ in 0..2 {
        assert_eq!(tap(&app, &rep, &customer, ACTION).await, 201);
    }
    assert_eq!(tap(&app, &rep, &customer, ACTION).await, 409);
    assert_eq!(
        app.count("cards WHERE purpose = 'antifraud.freeze'").await,
        0
    );
    let (cookie, _) = session(&app, &rep).await;
    let (_, _, html) = page(
        &app,
        &format!("/sidebar/customers/{customer}"),
        Some(&cookie),
    )
    .await;
    let html = String::from_utf8(html).unwrap();
    assert!(
        html.contains("您没有直属上级，冻结通知未发给任何人"),
        "{html}"
    );
    // Frozen: no warning any more (every tap is refused, none freezes anew).
    assert_eq!(warning_of(&html, ACTION), None);
    app.stop().await;
}

/// The scenario on one platform: the third repeat freezes; 王经理 gets the card on his
/// platform, naming the rep, the customer, the rule and the time; his one tap lifts the
/// freeze (audited, with the card's reason), the card then shows who lifted it, the click
/// is a point on the customer, and a second tap changes nothing.
async fn the_superior_lifts_with_one_tap(chat: Chat) {
    let (app, clock, boss, rep, customer) = team(&chat).await;
    for _ in 0..2 {
        assert_eq!(tap(&app, &rep, &customer, ACTION).await, 201);
    }
    assert_eq!(tap(&app, &rep, &customer, ACTION).await, 409);
    app.worker.drain().await.unwrap();

    // (Three records from one address within a minute also brought an IP-burst alert.)
    let got: Vec<Received> = chat
        .cards_to("wangjl")
        .into_iter()
        .filter(|c| c.title.contains("冻结"))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    let card = &got[0];
    assert!(card.title.contains("冻结"), "{}", card.title);
    assert_eq!(card.actions.len(), 1, "{card:?}");
    let lift = card.actions[0].clone();
    assert!(lift.starts_with("lift:"), "{lift}");
    let (content,): (String,) =
        sqlx::query_as("SELECT content_enc FROM cards WHERE purpose = 'antifraud.freeze'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let shown = closeloop::cards::stored(
        &app.cipher,
        &content,
        closeloop::chat::event::Platform::parse(chat.platform()).unwrap(),
    )
    .unwrap();
    let fields: Vec<String> = shown
        .fields
        .iter()
        .map(|(l, v)| format!("{l}:{v}"))
        .collect();
    assert!(fields.contains(&"销售:李明".to_string()), "{fields:?}");
    assert!(fields.contains(&"客户:华南智造".to_string()), "{fields:?}");
    assert!(
        fields.contains(&format!("规则:同类动作「{ACTION}」在24小时内超过2次")),
        "{fields:?}"
    );
    let frozen_at = closeloop::text::time_short(clock.now_ms(), chrono_tz::Asia::Shanghai);
    assert!(
        fields.contains(&format!("冻结时间:{frozen_at}")),
        "{fields:?}"
    );
    assert_eq!(shown.buttons[0].label, "解除冻结");

    chat.press(&app, clock.now_ms(), "wangjl", card, &lift)
        .await;
    app.worker.drain().await.unwrap();
    let f = &freezes(&app, &rep).await[0];
    assert_eq!(f["lifted_by"], boss.as_str(), "{f}");
    assert_eq!(f["lift_reason"], "主管通过卡片一键解除");
    assert_eq!(
        app.count("audit_log WHERE action = 'antifraud.lift'").await,
        1
    );
    assert!(
        chat.updates().iter().any(|u| u.contains("已由王经理解除")),
        "{:?}",
        chat.updates()
    );
    let c = clicks(&app, &customer).await;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["actor"], boss.as_str());
    assert_eq!(c[0]["payload"]["purpose"], "antifraud.freeze");
    // The rep may record on this customer again.
    assert_eq!(tap(&app, &rep, &customer, "已发送样品清单").await, 201);

    // A second tap changes nothing. On WeCom the card's button is gone once updated (the
    // platform refuses the press); DingTalk reports the same press under the same key (one
    // click); Feishu delivers it again, recorded as a repeat.
    if !matches!(chat, Chat::Wecom(_)) {
        chat.press(&app, clock.now_ms(), "wangjl", card, &lift)
            .await;
        app.worker.drain().await.unwrap();
    }
    assert_eq!(
        app.count("audit_log WHERE action = 'antifraud.lift'").await,
        1
    );
    assert_eq!(freezes(&app, &rep).await[0]["lifted_by"], boss.as_str());
    let c = clicks(&app, &customer).await;
    let repeats = c.iter().filter(|p| p["payload"]["repeat"] == true).count();
    assert_eq!(repeats, c.len() - 1, "{c:?}");
    if matches!(chat, Chat::Feishu(_)) {
        assert_eq!(c.len(), 2, "{c:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_superior_lifts_a_freeze_with_one_tap_on_wecom() {
    the_superior_lifts_with_one_tap(Chat::start("wecom").await).await;
}

#[tokio::test]
async fn the_superior_lifts_a_freeze_with_one_tap_on_dingtalk() {
    the_superior_lifts_with_one_tap(Chat::start("dingtalk").await).await;
}

#[tokio::test]
async fn the_superior_lifts_a_freeze_with_one_tap_on_feishu() {
    the_superior_lifts_with_one_tap(Chat::start("feishu").await).await;
}

/// Lifted elsewhere first (here by a manager through the API): the superior's tap on the
/// card changes nothing, and the card shows who lifted it.
#[tokio::test]
async fn a_tap_after_a_lift_elsewhere_changes_nothing_and_says_who() {
    let chat = Chat::start("wecom").await;
    let (app, clock, boss, rep, customer) = team(&chat).await;
    let manager = manager_over(&app, &boss).await;
    for _ in 0..2 {
        assert_eq!(tap(&app, &rep, &customer, ACTION).await, 201);
    }
    assert_eq!(tap(&app, &rep, &customer, ACTION).await, 409);
    app.worker.drain().await.unwrap();
    let id = freezes(&app, &rep).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .post(
            &format!("/api/v1/freezes/{id}/lift"),
            &json!({"actor": manager, "reason": "已电话核实"}),
        )
        .await;
    assert_eq!(res.status(), 200);

    let got: Vec<Received> = chat
        .cards_to("wangjl")
        .into_iter()
        .filter(|c| c.title.contains("冻结"))
        .collect();
    let card = &got[0];
    chat.press(&app, clock.now_ms(), "wangjl", card, &card.actions[0])
        .await;
    app.worker.drain().await.unwrap();
    let f = &freezes(&app, &rep).await[0];
    assert_eq!(f["lifted_by"], manager.as_str(), "{f}");
    assert_eq!(f["lift_reason"], "已电话核实");
    assert_eq!(
        app.count("audit_log WHERE action = 'antifraud.lift'").await,
        1
    );
    assert!(
        chat.updates().iter().any(|u| u.contains("已由赵总监解除")),
        "{:?}",
        chat.updates()
    );
    app.stop().await;
}

/// The attestation card opens the proof: after sign-in, for the superior (and managers),
/// never for the rep or a colleague; a note-only attestation has no file to show.
#[tokio::test]
async fn the_attestation_card_links_to_the_proof_for_those_over_the_rep() {
    let chat = Chat::start("wecom").await;
    let (app, _clock, boss, rep, customer) = team(&chat).await;
    let colleague = app.user("王芳", &["sales"]).await;
    let manager = manager_over(&app, &boss).await;
    let claim = app
        .create(
            "/api/v1/events",
            json!({"actor": rep, "customer": customer, "action": "已电话沟通"}),
        )
        .await;
    let res = app
        .client
        .post(app.url(&format!("/api/v1/customers/{customer}/documents")))
        .query(&[
            ("actor", rep.as_str()),
            ("kind", "proof"),
            ("filename", "通话截图.png"),
        ])
        .bearer_auth(&app.key)
        .header("content-type", "image/png")
        .body(b"\x89PNG proof".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let document: Value = res.json().await.unwrap();
    let att = app
        .create(
            &format!(
                "/api/v1/events/{}/attestations",
                claim["id"].as_str().unwrap()
            ),
            json!({"actor": rep, "document": document["id"]}),
        )
        .await;
    let att = att["id"].as_str().unwrap();
    app.worker.drain().await.unwrap();

    let Chat::Wecom(emulator) = &chat else {
        unreachable!()
    };
    let sent = emulator.received_messages();
    let card = sent
        .iter()
        .find(|m| m["touser"] == "wangjl")
        .expect("the card reached the superior");
    let link = format!("/web/attestations/{att}/proof");
    let url = card["template_card"]["card_action"]["url"]
        .as_str()
        .unwrap();
    assert!(url.ends_with(&link), "{card}");

    // Not signed in: to the sign-in, coming back here.
    let (status, location, _) = page(&app, &link, None).await;
    assert!(status == 302 || status == 303, "{status}");
    assert!(!location.is_empty());
    for (who, want) in [
        (&boss, 200),
        (&manager, 200),
        (&rep, 403),
        // The colleague may not even see the rep's customer.
        (&colleague, 404),
    ] {
        let (cookie, _) = session(&app, who).await;
        let (status, _, body) = page(&app, &link, Some(&cookie)).await;
        assert_eq!(status, want, "{who}");
        if want == 200 {
            assert_eq!(body, b"\x89PNG proof");
        } else if want == 403 {
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains("可以查看证明"), "{text}");
        }
    }

    // A note-only attestation: the link says there is no file.
    let other = app
        .create(
            "/api/v1/events",
            json!({"actor": rep, "customer": customer, "action": "已电话沟通"}),
        )
        .await;
    let noted = app
        .create(
            &format!(
                "/api/v1/events/{}/attestations",
                other["id"].as_str().unwrap()
            ),
            json!({"actor": rep, "note": "客户用座机回拨"}),
        )
        .await;
    let (cookie, _) = session(&app, &boss).await;
    let (status, _, body) = page(
        &app,
        &format!("/web/attestations/{}/proof", noted["id"].as_str().unwrap()),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 404);
    assert!(String::from_utf8(body).unwrap().contains("没有上传文件"));
    app.stop().await;
}
