//! One cross-platform scenario, run against each platform's emulator in turn: a team on
//! WeCom, DingTalk or Feishu alone gets the same loop. The rep asks presales a question;
//! the card reaches presales on that platform; presales accepts by pressing the button (the
//! platform's own signed callback); the deadline passes, so the card's escalation reaches
//! presales' superior; presales answers; the answer reaches the rep as a card and the
//! original card is updated to show it — each card worded from that platform's templates.
//! A last test splits one team across two platforms at once.

use std::time::Duration;

use closeloop::clock::Clock;
use closeloop::emulator::dingtalk::Emulator as DingtalkEmulator;
use closeloop::emulator::feishu::{Emulator as FeishuEmulator, EventTarget};
use closeloop::emulator::wecom::Emulator as WecomEmulator;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_clocked, ManualClock, TestApp};

/// Friday 2026-11-27 16:00 in Shanghai.
const FRIDAY_4PM: i64 = 1_795_766_400_000;

const WECOM_CORP: &str = "wwcl0000000000001";
const WECOM_TOKEN: &str = "QDG6eK";
const WECOM_AES: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const DT_KEY: &str = "dingclapp0000001";
const DT_SECRET: &str = "app-secret-xyz";
const DT_CARD_SECRET: &str = "card-callback-secret";
const FS_APP: &str = "cli_a1b2c3d4e5f6";
const FS_SECRET: &str = "feishu-app-secret";
const FS_TOKEN: &str = "vtoken-123";
const FS_KEY: &str = "Fq3BucfwoJQMjXxrwi3I6fFildR0NgmI";

/// One platform's emulator, as the scenario drives it (also by `freeze_flow`).
pub(crate) enum Chat {
    Wecom(WecomEmulator),
    Dingtalk(DingtalkEmulator),
    Feishu(FeishuEmulator),
}

/// A card as a member saw it arrive: its id, title and what its buttons press.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) card_id: String,
    pub(crate) title: String,
    pub(crate) actions: Vec<String>,
}

impl Chat {
    pub(crate) async fn start(platform: &str) -> Chat {
        match platform {
            "wecom" => Chat::Wecom(
                WecomEmulator::start(WECOM_CORP, vec![("app-secret".to_string(), "app")]).await,
            ),
            "dingtalk" => Chat::Dingtalk(DingtalkEmulator::start(DT_KEY, DT_SECRET).await),
            _ => {
                let emu = FeishuEmulator::start(FS_APP, FS_SECRET).await;
                emu.set_retry_delays(vec![Duration::from_millis(10); 2]);
                Chat::Feishu(emu)
            }
        }
    }

    pub(crate) fn platform(&self) -> &'static str {
        match self {
            Chat::Wecom(_) => "wecom",
            Chat::Dingtalk(_) => "dingtalk",
            Chat::Feishu(_) => "feishu",
        }
    }

    /// The platform's configuration section, pointing at the emulator. Callbacks come from
    /// the emulators at wall-clock time while the server runs on the test's clock, so the
    /// timestamp window is off (`0s`); signatures and encryption are checked as ever.
    pub(crate) fn config(&self) -> String {
        match self {
            Chat::Wecom(e) => format!(
                "[wecom]\ncorp_id = \"{WECOM_CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\n\
                 token = \"{WECOM_TOKEN}\"\nencoding_aes_key = \"{WECOM_AES}\"\napi_base = \"{}\"\n\
                 max_clock_skew = \"0s\"\n",
                e.base_url()
            ),
            Chat::Dingtalk(e) => format!(
                "[dingtalk]\napp_key = \"{DT_KEY}\"\napp_secret = \"{DT_SECRET}\"\ncorp_id = \"dingcorp00000001\"\n\
                 token = \"mryue\"\naes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n\
                 max_clock_skew = \"0s\"\napi_base = \"{b}\"\noapi_base = \"{b}\"\n\
                 card_callback_secret = \"{DT_CARD_SECRET}\"\ncard_template_id = \"tpl-closeloop.schema\"\n\
                 robot_code = \"dingrobot1\"\n",
                b = e.base_url()
            ),
            Chat::Feishu(e) => format!(
                "[feishu]\napp_id = \"{FS_APP}\"\napp_secret = \"{FS_SECRET}\"\n\
                 verification_token = \"{FS_TOKEN}\"\nencrypt_key = \"{FS_KEY}\"\n\
                 max_clock_skew = \"0s\"\napi_base = \"{}\"\n",
                e.base_url()
            ),
        }
    }

    /// The platform's address book: (member id, name, their leader's member id).
    pub(crate) fn set_members(&self, members: &[(&str, &str, Option<&str>)]) {
        match self {
            Chat::Wecom(e) => e.set_directory(
                vec![json!({"id": 2, "name": "华南区", "parentid": 1})],
                members
                    .iter()
                    .map(|(id, name, leader)| {
                        json!({"userid": id, "name": name, "department": [2], "main_department": 2,
                               "status": 1, "direct_leader": leader.map(|l| vec![l]).unwrap_or_default()})
                    })
                    .collect(),
            ),
            Chat::Dingtalk(e) => e.set_directory(
                vec![json!({"dept_id": 2, "name": "华南区", "parent_id": 1})],
                members
                    .iter()
                    .map(|(id, name, leader)| {
                        json!({"userid": id, "name": name, "dept_id_list": [2],
                               "manager_userid": leader.unwrap_or_default(), "active": true})
                    })
                    .collect(),
            ),
            Chat::Feishu(e) => e.set_directory(
                vec![json!({"department_id": "D2", "name": "华南区"})],
                members
                    .iter()
                    .map(|(id, name, leader)| {
                        let mut m = json!({"user_id": id, "name": name, "department_ids": ["D2"]});
                        if let Some(l) = leader {
                            m["leader_user_id"] = json!(l);
                        }
                        m
                    })
                    .collect(),
            ),
        }
    }

    /// Where the platform calls closeloop back, once the server runs.
    pub(crate) fn connect(&self, app: &TestApp) {
        if let Chat::Wecom(e) = self {
            e.set_callback_target(app.url("/callback/wecom"), WECOM_TOKEN, WECOM_AES);
        }
    }

    pub(crate) fn identity(&self, member: &str) -> Value {
        let kind = match self {
            Chat::Feishu(_) => "user_id",
            _ => "userid",
        };
        json!({"platform": self.platform(), "kind": kind, "value": member})
    }

    /// The cards `member` has received so far, oldest first.
    pub(crate) fn cards_to(&self, member: &str) -> Vec<Received> {
        match self {
            Chat::Wecom(e) => e
                .received_messages()
                .into_iter()
                .filter(|m| m["touser"] == member)
                .map(|m| {
                    let c = &m["template_card"];
                    Received {
                        card_id: c["task_id"].as_str().unwrap().to_string(),
                        title: c["main_title"]["title"].as_str().unwrap().to_string(),
                        actions: c["button_list"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or_default()
                            .iter()
                            .map(|b| b["key"].as_str().unwrap().to_string())
                            .collect(),
                    }
                })
                .collect(),
            Chat::Dingtalk(e) => e
                .cards()
                .into_iter()
                .filter(|c| c["openSpaceId"] == format!("dtv1.card//IM_ROBOT.{member}").as_str())
                .map(|c| {
                    let params = &c["cardData"]["cardParamMap"];
                    let buttons: Vec<Value> =
                        serde_json::from_str(params["buttons"].as_str().unwrap()).unwrap();
                    let id = c["outTrackId"].as_str().unwrap().to_string();
                    Received {
                        title: params["title"].as_str().unwrap().to_string(),
                        actions: buttons
                            .iter()
                            .map(|b| format!("{}:{id}", b["action"].as_str().unwrap()))
                            .collect(),
                        card_id: id,
                    }
                })
                .collect(),
            Chat::Feishu(e) => e
                .messages()
                .into_iter()
                .filter(|m| m["receive_id"] == member)
                .map(|m| {
                    let card: Value = serde_json::from_str(m["content"].as_str().unwrap()).unwrap();
                    let actions: Vec<String> = card["elements"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|e| e["tag"] == "action")
                        .flat_map(|e| e["actions"].as_array().unwrap().clone())
                        .map(|b| b["value"]["key"].as_str().unwrap().to_string())
                        .collect();
                    Received {
                        card_id: m["message_id"].as_str().unwrap().to_string(),
                        title: card["header"]["title"]["content"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                        actions,
                    }
                })
                .collect(),
        }
    }

    /// `member` presses the button `key` (`<action>:<card id>`) on a card they received,
    /// the way the platform reports it: a signed (and, but for DingTalk's card route,
    /// encrypted) callback. Returns what closeloop answered the platform with, where the
    /// platform shows that answer at once (Feishu, DingTalk).
    pub(crate) async fn press(
        &self,
        app: &TestApp,
        now_ms: i64,
        member: &str,
        received: &Received,
        key: &str,
    ) -> Value {
        match self {
            Chat::Wecom(e) => {
                let res = app
                    .client
                    .post(format!("{}/chat/{member}/click", e.base_url()))
                    .form(&[("task_id", received.card_id.as_str()), ("key", key)])
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                Value::Null
            }
            Chat::Dingtalk(e) => {
                let (action, card) = key.split_once(':').unwrap();
                // Signed on the server's clock: DingTalk's clock and ours agree.
                let (status, answer) = e
                    .press_card_button_at(
                        now_ms,
                        &app.url("/callback/dingtalk/card"),
                        DT_CARD_SECRET,
                        card,
                        member,
                        action,
                    )
                    .await;
                assert_eq!(status, 200);
                answer
            }
            Chat::Feishu(e) => {
                let event = e.event(
                    "card.action.trigger",
                    FS_TOKEN,
                    json!({"operator": {"user_id": member, "open_id": format!("ou_{member}")},
                           "token": format!("c-{}", received.card_id),
                           "action": {"tag": "button", "value": {"key": key}},
                           "context": {"open_message_id": received.card_id}}),
                );
                let target = EventTarget {
                    url: app.url("/callback/feishu"),
                    encrypt_key: Some(FS_KEY.into()),
                    verification_token: FS_TOKEN.into(),
                };
                let answer = e.push(&target, &event).await;
                assert_eq!(answer[0].status, 200);
                answer[0].body.clone().unwrap_or(Value::Null)
            }
        }
    }

    /// Every card update the platform received, as text.
    pub(crate) fn updates(&self) -> Vec<String> {
        match self {
            Chat::Wecom(e) => e.card_updates().iter().map(Value::to_string).collect(),
            Chat::Dingtalk(e) => e.card_updates().iter().map(Value::to_string).collect(),
            Chat::Feishu(e) => e
                .message_updates()
                .iter()
                .map(|u| u["content"].as_str().unwrap_or_default().to_string())
                .collect(),
        }
    }
}

struct Team {
    app: TestApp,
    clock: std::sync::Arc<ManualClock>,
    rep: String,
    presales: String,
    boss: String,
    customer: String,
}

/// The team: 李明 (sales) on `rep_on`, 张工 (presales) and his superior 售前总监 on
/// `presales_on`, each in that platform's address book (superiors come from it); the server
/// configured with every platform given. Roles are closeloop's own, set through the API.
async fn team(chats: &[&Chat], rep_on: &Chat, presales_on: &Chat) -> Team {
    let people = [
        (presales_on, "shouqianzongjian", "售前总监", None, "manager"),
        (
            presales_on,
            "zhanggong",
            "张工",
            Some("shouqianzongjian"),
            "presales",
        ),
        (rep_on, "liming", "李明", None, "sales"),
    ];
    for chat in chats {
        let members: Vec<(&str, &str, Option<&str>)> = people
            .iter()
            .filter(|(on, ..)| on.platform() == chat.platform())
            .map(|(_, id, name, leader, _)| (*id, *name, *leader))
            .collect();
        chat.set_members(&members);
    }
    let clock = ManualClock::new(FRIDAY_4PM);
    let config: String = chats.iter().map(|c| c.config()).collect();
    let app = spawn_app_clocked(&config, clock.clone()).await;
    for c in chats {
        c.connect(&app);
    }
    app.worker.drain().await.unwrap(); // the start-up directory sync
    let mut ids = Vec::new();
    for (on, member, name, _, role) in people {
        let i = on.identity(member);
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
        let user = &page["items"][0];
        assert_eq!(user["name"], name, "{member} came in from the address book");
        let id = user["id"].as_str().unwrap().to_string();
        let res = app
            .patch(&format!("/api/v1/users/{id}"), &json!({"roles": [role]}))
            .await;
        assert_eq!(res.status(), 200);
        ids.push(id);
    }
    let [boss, presales, rep] = <[String; 3]>::try_from(ids).unwrap();
    let customer = app.customer("华南智造", Some(&rep)).await;
    Team {
        app,
        clock,
        rep,
        presales,
        boss,
        customer,
    }
}

impl Team {
    async fn request(&self, id: &str) -> Value {
        self.app
            .get(&format!("/api/v1/collab/requests/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }

    async fn card_platforms(&self) -> Vec<(String, Option<String>, String)> {
        sqlx::query_as(
            "SELECT recipient_user_id, platform, status FROM cards ORDER BY created_at, id",
        )
        .fetch_all(&self.app.db.pool)
        .await
        .unwrap()
    }
}

/// The scenario, on whichever platforms the rep and presales are.
async fn quick_ask_loop(chats: &[&Chat], rep_on: &Chat, presales_on: &Chat) {
    let t = team(chats, rep_on, presales_on).await;

    // 李明 asks presales (the sidebar's @售前快速提问 makes the same request).
    let r = t
        .app
        .create(
            "/api/v1/collab/requests",
            json!({"type": "presales_question", "customer": t.customer, "initiator": t.rep,
                   "content": {"问题": "是否支持私有化部署？"}}),
        )
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    t.app.worker.drain().await.unwrap();

    let got = presales_on.cards_to("zhanggong");
    assert_eq!(got.len(), 1, "the card reached presales: {got:?}");
    let card = &got[0];
    assert_eq!(card.title, "售前快速提问");
    let accept = card
        .actions
        .iter()
        .find(|a| a.starts_with("accept:"))
        .expect("an accept button")
        .clone();

    // 张工 presses 确认收到并接受 on the platform; a second delivery changes nothing.
    let answer = presales_on
        .press(&t.app, t.clock.now_ms(), "zhanggong", card, &accept)
        .await;
    match presales_on {
        Chat::Feishu(_) => {
            assert_eq!(answer["card"]["type"], "raw", "{answer}");
            assert!(answer["card"]["data"]
                .to_string()
                .contains("已确认收到并接受"));
        }
        Chat::Dingtalk(_) => {
            assert_eq!(answer["cardData"]["cardParamMap"]["buttons"], "[]");
            assert_eq!(
                answer["cardData"]["cardParamMap"]["status"],
                "已确认收到并接受"
            );
        }
        Chat::Wecom(_) => {}
    }
    t.app.worker.drain().await.unwrap();
    let accepted = t.request(&id).await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    assert_eq!(accepted["assignee"], t.presales.as_str());

    // Monday 11:01: four working hours have passed (the weekend does not count). Overdue:
    // 张工 is reminded and his superior gets the escalation, on their platform.
    t.clock
        .set(FRIDAY_4PM + (3 * 24 * 3600 - 5 * 3600 + 60) * 1000);
    t.app.worker.drain().await.unwrap();
    assert_eq!(t.request(&id).await["overdue"], true);
    // (Monday 08:00 also brought managers the weekly collaboration report.)
    let escalations: Vec<Received> = presales_on
        .cards_to("shouqianzongjian")
        .into_iter()
        .filter(|c| c.title.contains("升级"))
        .collect();
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    let expected = match presales_on {
        // WeCom cards have no header colour: the title carries the urgency.
        Chat::Wecom(_) => "【超时升级】售前快速提问",
        _ => "超时升级：售前快速提问",
    };
    assert_eq!(escalations[0].title, expected);
    assert_eq!(
        presales_on.cards_to("zhanggong").len(),
        2,
        "and 张工 a reminder"
    );

    // 张工 answers: the rep gets the answer on the rep's platform, the original card shows
    // who answered.
    let res = t
        .app
        .post(
            &format!("/api/v1/collab/requests/{id}/answer"),
            &json!({"actor": t.presales, "text": "支持，需 8 核 32G"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    t.app.worker.drain().await.unwrap();
    let replies = rep_on.cards_to("liming");
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].title, "售前快速提问：已答复");
    let updates = presales_on.updates();
    assert!(
        updates.iter().any(|u| u.contains("张工已答复")),
        "the original card shows who answered: {updates:?}"
    );

    // Every card went out on its recipient's platform, none failed.
    let cards = t.card_platforms().await;
    assert!(cards.len() >= 4, "{cards:?}");
    for (recipient, platform, status) in &cards {
        let want = if *recipient == t.rep {
            rep_on.platform()
        } else {
            assert!(*recipient == t.presales || *recipient == t.boss);
            presales_on.platform()
        };
        assert_eq!(platform.as_deref(), Some(want), "{cards:?}");
        assert_eq!(status, "sent", "{cards:?}");
    }
}

#[tokio::test]
async fn the_quick_ask_loop_runs_on_wecom() {
    let chat = Chat::start("wecom").await;
    quick_ask_loop(&[&chat], &chat, &chat).await;
}

#[tokio::test]
async fn the_quick_ask_loop_runs_on_dingtalk() {
    let chat = Chat::start("dingtalk").await;
    quick_ask_loop(&[&chat], &chat, &chat).await;
}

#[tokio::test]
async fn the_quick_ask_loop_runs_on_feishu() {
    let chat = Chat::start("feishu").await;
    quick_ask_loop(&[&chat], &chat, &chat).await;
}

/// Several platforms at once: the rep on DingTalk, presales on Feishu. Each card goes out
/// on its recipient's platform.
#[tokio::test]
async fn one_team_across_dingtalk_and_feishu() {
    let dingtalk = Chat::start("dingtalk").await;
    let feishu = Chat::start("feishu").await;
    quick_ask_loop(&[&dingtalk, &feishu], &dingtalk, &feishu).await;
    assert!(
        dingtalk.cards_to("zhanggong").is_empty(),
        "presales is not on DingTalk"
    );
    assert!(
        feishu.cards_to("liming").is_empty(),
        "the rep is not on Feishu"
    );
}
