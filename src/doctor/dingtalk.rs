//! DingTalk's checks: the app's token with an address-book read, the JSAPI ticket, cards,
//! card callbacks, conference polling, and the `check_url` push to `/callback/dingtalk`
//! (docs/protocols/dingtalk.md#callback-security-and-crypto).

use std::time::Duration;

use serde_json::{json, Value};

use super::{now_ms, url_check, Ctx, Expected, Feature};
use crate::chat::event::Platform;
use crate::config::DingtalkConfig;
use crate::jobs::JobError;
use crate::platform::crypto::{random_nonce, EncodingAesKey};
use crate::platform::dingtalk::api::DingtalkApi;
use crate::platform::dingtalk::crypto::DingtalkCrypto;
use crate::platform::dingtalk::{conference, directory};

/// DingTalk wants the encrypted `success` within 1500 ms.
const URL_CHECK_LIMIT: Duration = Duration::from_millis(1500);
/// The root department, which every address book has.
const ROOT_DEPARTMENT: i64 = 1;

const APP: Feature = Feature::new(
    Platform::Dingtalk,
    "app",
    "应用与通讯录",
    "dingtalk.app_key, dingtalk.app_secret",
);
const SIDEBAR: Feature = Feature::new(
    Platform::Dingtalk,
    "sidebar",
    "工作台免登",
    "dingtalk.corp_id, dingtalk.agent_id",
);
const CARDS: Feature = Feature::new(
    Platform::Dingtalk,
    "cards",
    "互动卡片",
    "dingtalk.card_template_id, dingtalk.robot_code",
);
const CARD_CALLBACK: Feature = Feature::new(
    Platform::Dingtalk,
    "card_callback",
    "卡片按钮回调",
    "dingtalk.card_callback_secret",
);
const MEETINGS: Feature = Feature::new(
    Platform::Dingtalk,
    "meetings",
    "会议轮询",
    "dingtalk.poll_meetings",
);
const CALLBACK: Feature = Feature::new(
    Platform::Dingtalk,
    "callback",
    "事件订阅 URL",
    "public_url, dingtalk.token, dingtalk.aes_key",
);

pub(super) async fn check(cfg: &DingtalkConfig, ctx: &Ctx) -> Vec<super::Check> {
    let api = DingtalkApi::from_config(cfg, ctx.api.clone(), ctx.clock.clone());
    let mut out = Vec::new();

    out.push(
        match api
            .call_oapi(
                directory::DEPARTMENTS,
                &json!({ "dept_id": ROOT_DEPARTMENT }),
            )
            .await
        {
            Ok(answer) => {
                let n = answer["result"].as_array().map_or(0, Vec::len);
                APP.ok(format!("令牌已取得，通讯录可读取（根部门下 {n} 个部门）"))
            }
            Err(e) => APP.failed(problem(&e, "应用需要通讯录只读权限")),
        },
    );

    let ids = [&cfg.corp_id, &cfg.agent_id].map(|v| v.as_deref().filter(|s| !s.is_empty()));
    out.push(match ids {
        [Some(_), Some(_)] => match api
            .call(
                reqwest::Method::POST,
                "/v1.0/oauth2/jsapiTickets",
                &json!({}),
            )
            .await
        {
            Ok(_) => SIDEBAR.ok("JSAPI 票据可取得（dd.config）"),
            Err(e) => SIDEBAR.failed(problem(&e, "")),
        },
        _ => SIDEBAR.off(
            "未配置 corp_id 或 agent_id：工作台里的 closeloop 页面无法免登，也无法签 dd.config",
        ),
    });

    out.push(match &cfg.card_template_id {
        Some(id) => CARDS.ok(format!(
            "模板 {id}，机器人 {}（模板是否已导入，要到发卡片时才由钉钉核对）",
            cfg.robot_code.as_deref().unwrap_or(&cfg.app_key)
        )),
        None if cfg.card_templates.is_empty() => CARDS.off(
            "未配置 card_template_id：卡片发不到钉钉（导入 cards/dingtalk/ 的模板后填它的 ID）",
        ),
        None => CARDS.off(
            "未配置 card_template_id：只有 card_templates 列出的卡片能发到钉钉，其余卡片发送失败",
        ),
    });

    out.push(match &cfg.card_callback_secret {
        Some(_) => {
            CARD_CALLBACK.ok("已配置（须与注册卡片回调时的 apiSecret 相同，本检查无法向钉钉核对）")
        }
        None => {
            CARD_CALLBACK.off("未配置：卡片按钮的点击无法验签，会被拒绝，钉钉卡片上的按钮不起作用")
        }
    });

    out.push(if cfg.poll_meetings {
        match api
            .call(
                reqwest::Method::GET,
                &format!("{}?maxResults=1", conference::ONGOING),
                &Value::Null,
            )
            .await
        {
            Ok(_) => MEETINGS.ok("conference/orgConferences 可调用"),
            Err(e) => MEETINGS.failed(problem(&e, "应用需要 VideoConference.Conference.Read 权限")),
        }
    } else {
        MEETINGS.off("未开启：只在钉钉推送「视频会议状态变更」时读取会议记录")
    });

    out.push(callback(cfg, ctx).await);
    out
}

/// The push DingTalk sends when the admin saves the subscription URL: an encrypted
/// `{"EventType":"check_url"}`, answered with the encrypted, signed `success`.
async fn callback(cfg: &DingtalkConfig, ctx: &Ctx) -> super::Check {
    let key = match EncodingAesKey::parse(cfg.aes_key.expose()) {
        Ok(key) => key,
        Err(e) => return CALLBACK.failed(format!("dingtalk.aes_key 无效：{e}")),
    };
    let crypto = DingtalkCrypto::new(cfg.token.expose(), key, cfg.app_key.clone());
    let encrypt = crypto.encrypt_random(&json!({"EventType": "check_url"}).to_string());
    let timestamp = now_ms(ctx).to_string();
    let nonce = random_nonce();
    let signature = crypto.signature(&timestamp, &nonce, &encrypt);
    let url = ctx.callback_url("/callback/dingtalk");
    let request = ctx
        .callback
        .post(&url)
        .query(&[
            ("signature", signature.as_str()),
            ("timestamp", timestamp.as_str()),
            ("nonce", nonce.as_str()),
        ])
        .json(&json!({ "encrypt": encrypt }));
    let expected = Expected {
        feature: CALLBACK,
        url: &url,
        limit: URL_CHECK_LIMIT,
        otherwise: "不是加密并签名的 success：钉钉会判定推送失败",
        keys: "dingtalk.token、dingtalk.aes_key 或 dingtalk.app_key",
    };
    url_check(ctx, expected, request, |body| {
        crypto.is_success_reply(body.as_bytes())
    })
    .await
}

/// A failed call in words an admin can act on; `hint` says which right a refused call
/// needs. The client names rejected credentials in its message.
fn problem(e: &JobError, hint: &str) -> String {
    let text = e.to_string();
    if text.starts_with("DingTalk rejected the app credentials") {
        "钉钉拒绝了应用凭据：请核对 dingtalk.app_key 和 dingtalk.app_secret".into()
    } else if matches!(e, JobError::GiveUp(_)) && !hint.is_empty() {
        format!("钉钉拒绝了这个调用（{text}）：{hint}")
    } else {
        format!("调用失败：{text}")
    }
}
