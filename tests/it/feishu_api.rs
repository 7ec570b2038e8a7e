//! The Feishu API client against the Feishu emulator: one tenant token for a burst of calls,
//! refreshed when Feishu invalidates it, a wrong secret reported once and not retried, and
//! the directory read across pages and departments.

use std::time::Duration;

use closeloop::chat::Directory;
use closeloop::clock::SystemClock;
use closeloop::config::FeishuConfig;
use closeloop::emulator::feishu::{Emulator, Failure, MESSAGES, TENANT_TOKEN};
use closeloop::jobs::JobError;
use closeloop::platform::feishu::contacts::FeishuDirectory;
use closeloop::platform::feishu::token::{FeishuApi, FeishuError};
use serde_json::{json, Value};

fn api(emu: &Emulator, secret: &str) -> FeishuApi {
    let cfg: FeishuConfig = serde_json::from_value(json!({
        "app_id": "cli_test",
        "app_secret": secret,
        "api_base": emu.base_url(),
    }))
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    FeishuApi::from_config(&cfg, client, std::sync::Arc::new(SystemClock))
}

fn message() -> Value {
    json!({"receive_id": "u1", "msg_type": "interactive", "content": "{}"})
}

async fn send_message(api: &FeishuApi) -> Result<Value, FeishuError> {
    api.call_json(
        reqwest::Method::POST,
        MESSAGES,
        &[("receive_id_type", "user_id")],
        Some(&message()),
    )
    .await
}

#[tokio::test]
async fn one_token_request_for_a_burst_and_refresh_on_invalidation() {
    let emu = Emulator::start("cli_test", "secret").await;
    let api = api(&emu, "secret");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let api = api.clone();
        calls.spawn(async move { send_message(&api).await });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(emu.token_calls(), 1);
    // Feishu invalidates the token early: one refresh, the call retried once.
    emu.invalidate_tokens();
    send_message(&api).await.unwrap();
    assert_eq!(emu.token_calls(), 2);
    assert_eq!(emu.messages().len(), 9);
    // A token error twice in a row is not retried in a loop.
    emu.fail_next(MESSAGES, 2, Failure::Code(99991663));
    assert!(matches!(
        send_message(&api).await,
        Err(FeishuError::Transient(_))
    ));
    assert_eq!(emu.token_calls(), 3);
    // The token that failed last is not reused.
    send_message(&api).await.unwrap();
    assert_eq!(emu.token_calls(), 4);
}

#[tokio::test]
async fn a_wrong_secret_is_a_configuration_error_not_a_loop() {
    let emu = Emulator::start("cli_test", "secret").await;
    let api = api(&emu, "wrong-secret");
    for _ in 0..3 {
        let err = send_message(&api).await.unwrap_err();
        assert!(matches!(err, FeishuError::Configuration { .. }));
        assert!(!err.to_string().contains("wrong-secret"));
        assert!(matches!(JobError::from(err), JobError::GiveUp(_)));
    }
    assert_eq!(emu.token_calls(), 1);
    assert!(!format!("{api:?}").contains("wrong-secret"));
}

#[tokio::test]
async fn server_errors_and_timeouts_are_transient() {
    let emu = Emulator::start("cli_test", "secret").await;
    let api = api(&emu, "secret");
    emu.fail_next(TENANT_TOKEN, 1, Failure::Http5xx);
    assert!(matches!(
        send_message(&api).await,
        Err(FeishuError::Transient(_))
    ));
    emu.set_timeout_delay(Duration::from_secs(2));
    emu.fail_next(MESSAGES, 1, Failure::Timeout);
    let err = send_message(&api).await.unwrap_err();
    assert!(matches!(&err, FeishuError::Transient(m) if m == "timed out"));
    assert!(matches!(JobError::from(err), JobError::Retry(_)));
    send_message(&api).await.unwrap();
    emu.fail_next(MESSAGES, 1, Failure::Code(230002));
    assert!(matches!(
        send_message(&api).await,
        Err(FeishuError::Api { code: 230002, .. })
    ));
}

#[tokio::test]
async fn lists_every_member_across_pages_and_departments() {
    let emu = Emulator::start("cli_test", "secret").await;
    let mut users: Vec<Value> = (0..60)
        .map(|i| {
            json!({"user_id": format!("u{i}"), "name": format!("成员{i}"),
                        "department_ids": ["D1"], "leader_user_id": "boss"})
        })
        .collect();
    users.push(json!({"user_id": "boss", "name": "王总", "department_ids": ["0"]}));
    emu.set_directory(
        vec![json!({"department_id": "D1", "name": "华南销售部"})],
        users,
    );
    let cfg: FeishuConfig = serde_json::from_value(json!({
        "app_id": "cli_test", "app_secret": "secret", "api_base": emu.base_url(),
    }))
    .unwrap();
    let dir = FeishuDirectory {
        api: FeishuApi::from_config(
            &cfg,
            reqwest::Client::new(),
            std::sync::Arc::new(SystemClock),
        ),
    };
    let members = dir.members().await.unwrap();
    assert_eq!(members.len(), 61);
    let u = members.iter().find(|m| m.platform_id == "u59").unwrap();
    assert_eq!(u.leaders, vec!["boss".to_string()]);
    assert_eq!(u.department.as_deref(), Some("华南销售部"));
    let boss = dir.member("boss").await.unwrap();
    assert_eq!((boss.name.as_str(), boss.department), ("王总", None));
    assert!(dir.member("nobody").await.is_err());
    assert!(dir.external_contact("x", "y").await.is_err());
}
