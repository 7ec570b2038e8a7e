//! The ledger's actor kinds and sources against the rules: the repeat limit and the IP
//! burst count only the rep's own sidebar and API records; card clicks, platform events,
//! customers' and closeloop's own points never push them. Also the points that chat
//! counts and collaboration steps write, and a customer's timeline (API and sidebar).

use std::sync::Arc;
use std::time::Duration;

use closeloop::clock::Clock;
use closeloop::tracking::{self, ActorKind, NewPoint, Source};
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app_clocked, ManualClock, TestApp};

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

struct Ledger {
    app: TestApp,
    clock: Arc<ManualClock>,
    rep: String,
    customer: String,
}

async fn setup() -> Ledger {
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_app_clocked("", clock.clone()).await;
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华东医疗器械", Some(&rep)).await;
    Ledger {
        app,
        clock,
        rep,
        customer,
    }
}

impl Ledger {
    async fn tap(&self, action: &str) -> reqwest::Response {
        self.app
            .post(
                "/api/v1/events",
                &json!({"actor": self.rep, "customer": self.customer, "action": action}),
            )
            .await
    }

    async fn tap_ok(&self, action: &str) -> Value {
        let res = self.tap(action).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Writes a point as closeloop's own writers do (card clicks, platform events, system
    /// facts), in a transaction of its own.
    async fn write(&self, p: NewPoint) -> tracking::TrackingPoint {
        let mut tx = self.app.db.begin().await.unwrap();
        let point = tracking::write_in(&mut tx, self.clock.now_ms(), &p, TZ)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        point
    }

    /// The same rep, customer and action, from every source and actor kind that is not
    /// the rep's own sidebar or API record, carrying `ip`.
    fn others(&self, action: &str, ip: Option<&str>) -> Vec<NewPoint> {
        let base = |kind: ActorKind, source: Source, n: usize| NewPoint {
            actor_kind: kind,
            client_ip: ip.map(str::to_string),
            external_id: Some(format!("{}-{n}", source.as_str())),
            platform: Some("wecom".into()),
            ..NewPoint::new(
                &self.app.org_id,
                &self.rep,
                &self.customer,
                action,
                source,
                json!({}),
            )
        };
        vec![
            // A card click by the rep.
            base(ActorKind::User, Source::Card, 1),
            base(ActorKind::User, Source::Card, 2),
            base(ActorKind::User, Source::Card, 3),
            // A platform event about the rep.
            base(ActorKind::Platform, Source::PlatformEvent, 4),
            base(ActorKind::Platform, Source::PlatformEvent, 5),
            // closeloop's own points about the rep.
            base(ActorKind::System, Source::System, 6),
            base(ActorKind::System, Source::System, 7),
            // The customer's own doing.
            base(ActorKind::Customer, Source::System, 8),
            // Even a sidebar-sourced point is not the rep's when someone else made it.
            base(ActorKind::System, Source::Sidebar, 9),
        ]
    }

    async fn points(&self, action: &str) -> i64 {
        self.app
            .count(&format!("tracking_points WHERE action = '{action}'"))
            .await
    }
}

#[tokio::test]
async fn card_platform_customer_and_system_points_do_not_push_the_repeat_counter() {
    let l = setup().await;
    let action = "客户提出价格异议";
    for p in l.others(action, None) {
        l.write(p).await;
    }
    // The default limit is two in 24 hours: the rep's own two records still pass...
    l.tap_ok(action).await;
    l.tap_ok(action).await;
    assert_eq!(l.points("rule.repeat_limit").await, 0);
    // ... and the third of the rep's own is refused: the counter counts the rep's records.
    let (status, code, _) = error_code(l.tap(action).await).await;
    assert_eq!((status, code.as_str()), (409, "repeat_limit"));
    // The hit is closeloop's point about the rep, not the rep's action.
    let (kind, source, actor): (String, String, Option<String>) = sqlx::query_as(
        "SELECT actor_kind, source, actor_user_id FROM tracking_points WHERE action = 'rule.repeat_limit'",
    )
    .fetch_one(&l.app.db.pool)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), source.as_str()), ("system", "system"));
    assert_eq!(actor.as_deref(), Some(l.rep.as_str()));
}

#[tokio::test]
async fn system_and_card_points_from_the_same_address_do_not_make_an_ip_burst() {
    let l = setup().await;
    let first = l.tap_ok("已发送样品清单").await;
    let ip = first["client_ip"]
        .as_str()
        .expect("the API records the address");
    // Many points about the rep from the same address, none the rep's own record.
    for p in l.others("客户提出价格异议", Some(ip)) {
        l.write(p).await;
    }
    l.tap_ok("已电话沟通").await;
    assert_eq!(
        l.points("rule.ip_burst").await,
        0,
        "two of the rep's own records in the minute; the rest are not the rep's"
    );
    // The rep's third own record within the minute is the burst (threshold 3).
    l.clock.advance(Duration::from_secs(5));
    l.tap_ok("客户提出价格异议").await;
    assert_eq!(l.points("rule.ip_burst").await, 1);
    let (kind, source): (String, String) = sqlx::query_as(
        "SELECT actor_kind, source FROM tracking_points WHERE action = 'rule.ip_burst'",
    )
    .fetch_one(&l.app.db.pool)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), source.as_str()), ("system", "system"));
}

#[test]
fn each_rule_names_what_it_counts() {
    assert_eq!(
        closeloop::antifraud::COUNTED_SOURCES,
        [Source::Sidebar, Source::Api]
    );
    assert_eq!(closeloop::antifraud::COUNTED_ACTOR, ActorKind::User);
    assert_eq!(
        closeloop::antifraud::BURST_REFUSED_ATTEMPTS,
        ["rule.repeat_limit", "rule.frozen"]
    );
    assert_eq!(
        closeloop::credibility::COUNTED_SOURCES,
        [Source::Sidebar, Source::Api]
    );
    assert_eq!(closeloop::credibility::COUNTED_ACTOR, ActorKind::User);
    assert_eq!(closeloop::credibility::COUNTED_CLAIM.as_str(), "call");
    assert_eq!(closeloop::credibility::COUNTED_DOCUMENT, "proposal");
}

#[tokio::test]
async fn a_claimed_call_from_a_card_does_not_count_for_credibility() {
    let l = setup().await;
    // The rep's claimed call through the API opens a verification and counts.
    l.tap_ok("已电话沟通").await;
    // A call claim on a point that is not the rep's own record (a card click) does not.
    let card = l
        .write(NewPoint {
            external_id: Some("click-1".into()),
            ..NewPoint::new(
                &l.app.org_id,
                &l.rep,
                &l.customer,
                "已电话沟通",
                Source::Card,
                json!({}),
            )
        })
        .await;
    sqlx::query(
        "INSERT INTO point_verifications (point_id, org_id, customer_id, actor_user_id, claim, platform, status, \
         occurred_at, window_closes_at, updated_at) \
         SELECT id, org_id, customer_id, actor_user_id, 'call', platform, 'pending', occurred_at, occurred_at, occurred_at \
         FROM tracking_points WHERE id = $1",
    )
    .bind(&card.id)
    .execute(&l.app.db.pool)
    .await
    .unwrap();
    let rules = closeloop::rules::CredibilityRules::default();
    let week = closeloop::credibility::Week::containing(
        closeloop::clock::from_ms(l.clock.now_ms())
            .with_timezone(&TZ)
            .date_naive(),
        TZ,
    )
    .unwrap();
    let mut conn = l.app.db.pool.acquire().await.unwrap();
    let conn: &mut sqlx::AnyConnection = &mut conn;
    let figures = closeloop::credibility::figures(conn, &rules, &l.app.org_id, &week)
        .await
        .unwrap();
    let mine = figures.iter().find(|f| f.user == l.rep).unwrap();
    assert_eq!(mine.calls_recorded, 1, "{figures:?}");
}

#[tokio::test]
async fn a_contact_day_is_one_point_updated_in_place() {
    let l = setup().await;
    let put = |messages: i64, day: &'static str| {
        let app = &l.app;
        let body = json!({"user": l.rep, "customer": l.customer, "day": day,
                          "messages": messages, "source": "wecom"});
        async move {
            app.client
                .put(app.url("/api/v1/chat-counts"))
                .bearer_auth(&app.key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(put(3, "2026-12-01").await.status(), 204);
    l.clock.advance(Duration::from_secs(60));
    assert_eq!(put(7, "2026-12-01").await.status(), 204);
    let rows: Vec<(String, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT actor_kind, source, payload, external_id, actor_user_id FROM tracking_points \
         WHERE action = 'chat.day' ORDER BY occurred_at, id",
    )
    .fetch_all(&l.app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "one point per contact-day: {rows:?}");
    let (kind, source, payload, external, actor) = &rows[0];
    assert_eq!((kind.as_str(), source.as_str()), ("user", "api"));
    assert_eq!(actor, &l.rep);
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(
        payload,
        json!({"day": "2026-12-01", "messages": 7, "source": "wecom"})
    );
    assert_eq!(
        external.as_deref(),
        Some(format!("{}:{}:2026-12-01", l.rep, l.customer).as_str())
    );
    // Another day is another point; a refused count writes none.
    assert_eq!(put(2, "2026-12-02").await.status(), 204);
    assert_eq!(put(-1, "2026-12-03").await.status(), 422);
    assert_eq!(l.points("chat.day").await, 2);
}

/// action, source, actor kind, actor, customer, payload
type StepRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
);

#[tokio::test]
async fn collaboration_steps_are_points_from_where_they_were_taken() {
    let l = setup().await;
    let presales = l
        .app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "roles": ["presales"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ask = |text: &'static str| {
        let app = &l.app;
        let body = json!({"type": "presales_question", "customer": l.customer, "initiator": l.rep,
                          "content": {"问题": text}});
        async move { app.create("/api/v1/collab/requests", body).await }
    };
    // Accepted and answered through the API.
    let first = ask("是否支持私有化部署？").await;
    let id = first["id"].as_str().unwrap();
    for (step, body) in [
        ("accept", json!({"actor": presales})),
        ("answer", json!({"actor": presales, "text": "支持"})),
    ] {
        let res = l
            .app
            .post(&format!("/api/v1/collab/requests/{id}/{step}"), &body)
            .await;
        assert_eq!(res.status(), 200, "{step}");
    }
    // A repeated accept changes nothing and writes no point.
    let res = l
        .app
        .post(
            &format!("/api/v1/collab/requests/{id}/accept"),
            &json!({"actor": presales}),
        )
        .await;
    assert_eq!(res.status(), 200);
    // Accepted from a card (the path a card click takes).
    let second = ask("交付周期多久？").await;
    let second_id = second["id"].as_str().unwrap().to_string();
    let mut tx = l.app.db.begin().await.unwrap();
    let changed = closeloop::collab::requests::step_in(
        &mut tx,
        &l.app.cipher,
        l.clock.now_ms(),
        &l.app.org_id,
        TZ,
        &second_id,
        &presales,
        &closeloop::collab::requests::Step::Accept,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(changed);
    let rows: Vec<StepRow> =
        sqlx::query_as(
            "SELECT action, source, actor_kind, actor_user_id, customer_id, payload FROM tracking_points \
             WHERE action LIKE 'collab.%' ORDER BY occurred_at, id",
        )
        .fetch_all(&l.app.db.pool)
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("collab.accept", "api", "user"),
            ("collab.answer", "api", "user"),
            ("collab.accept", "card", "user"),
        ]
    );
    for r in &rows {
        assert_eq!(r.3.as_deref(), Some(presales.as_str()));
        assert_eq!(r.4.as_deref(), Some(l.customer.as_str()));
    }
    let payload: Value = serde_json::from_str(&rows[2].5).unwrap();
    assert_eq!(payload["request"], second_id);
}

#[tokio::test]
async fn a_customers_timeline_is_its_ledger_in_time_order_and_pages() {
    let l = setup().await;
    let other = l.app.customer("另一家", Some(&l.rep)).await;
    let tapped = l.tap_ok("已发送样品清单").await;
    // A point written later but stamped earlier (ids and times need not agree) comes
    // first: the timeline is ordered by time, then id.
    let earlier = {
        let mut tx = l.app.db.begin().await.unwrap();
        let p = tracking::write_in(
            &mut tx,
            l.clock.now_ms() - 60_000,
            &NewPoint::new(
                &l.app.org_id,
                &l.rep,
                &l.customer,
                "stage.advance",
                Source::System,
                json!({}),
            ),
            TZ,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        p
    };
    l.clock.advance(Duration::from_secs(1));
    let card = l
        .write(NewPoint {
            external_id: Some("c-1".into()),
            ..NewPoint::new(
                &l.app.org_id,
                &l.rep,
                &l.customer,
                "card.click",
                Source::Card,
                json!({"button": "accept"}),
            )
        })
        .await;
    // Not this customer's.
    l.write(NewPoint::new(
        &l.app.org_id,
        &l.rep,
        &other,
        "已电话沟通",
        Source::System,
        json!({}),
    ))
    .await;
    let path = format!("/api/v1/customers/{}/timeline", l.customer);
    let whole: Value = l.app.get(&path).await.json().await.unwrap();
    let ids: Vec<&str> = whole["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            earlier.id.as_str(),
            tapped["id"].as_str().unwrap(),
            card.id.as_str()
        ]
    );
    assert_eq!(whole["next_cursor"], Value::Null);
    // One at a time, following the cursor, gives the same order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=1&cursor={c}"),
            None => format!("{path}?limit=1"),
        };
        let page: Value = l.app.get(&url).await.json().await.unwrap();
        for p in page["items"].as_array().unwrap() {
            paged.push(p["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, ids);
    // Unknown customers are not found; a forged cursor is refused.
    let res = l
        .app
        .get(&format!(
            "/api/v1/customers/{}/timeline",
            closeloop::db::new_id()
        ))
        .await;
    assert_eq!(res.status(), 404);
    let res = l.app.get(&format!("{path}?cursor=bm9wZQ")).await;
    assert_eq!(res.status(), 422);
    // A reader key may read it.
    let reader = l
        .app
        .key_with_role(closeloop::access::ApiKeyRole::ReadOnly)
        .await;
    let res = l
        .app
        .client
        .get(l.app.url(&path))
        .bearer_auth(reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_sidebar_shows_the_customers_timeline_in_chinese() {
    let app = crate::sidebar::spawn_sidebar("", false).await;
    let rep = app.member("李明", "liming").await;
    let customer = app.customer("华东医疗器械", &rep).await;
    let (cookie, csrf) = app.session(&rep, "wecom").await;
    let res = app
        .tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "已发送样品清单"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let mut tx = app.db.begin().await.unwrap();
    tracking::write_in(
        &mut tx,
        chrono::Utc::now().timestamp_millis() + 1000,
        &NewPoint {
            external_id: Some("c-1".into()),
            ..NewPoint::new(
                &app.org_id,
                &rep,
                &customer,
                "card.click",
                Source::Card,
                json!({}),
            )
        },
        TZ,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    assert_eq!(status, 200);
    let start = html
        .find("<section id=\"timeline\"")
        .expect("a timeline section");
    let section = &html[start..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(section.contains("客户时间线"), "{section}");
    let tap = section.find("已发送样品清单").expect("the tap");
    let click = section
        .find("点击卡片")
        .expect("the card click, in Chinese");
    assert!(tap < click, "oldest first: {section}");
    assert!(
        section.contains("侧边栏") && section.contains("卡片"),
        "{section}"
    );
    assert!(
        !section.contains(">card.click<"),
        "shown in Chinese: {section}"
    );
    app.stop().await;
}
