//! Feishu's checks: the tenant token with an address-book read, the JSSDK ticket, event
//! encryption, meeting polling, and the `url_verification` POST to `/callback/feishu`
//! (docs/protocols/feishu.md#callback-security-and-crypto).

use std::time::Duration;

use serde_json::{json, Value};

use super::{fresh_echo, now_ms, url_check, Ctx, Expected, Feature};
use crate::chat::event::Platform;
use crate::config::FeishuConfig;
use crate::platform::crypto::random_nonce;
use crate::platform::feishu::contacts::DEPARTMENT_CHILDREN;
use crate::platform::feishu::crypto::{
    FeishuCrypto, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use crate::platform::feishu::token::{FeishuApi, FeishuError};
use crate::platform::feishu::vc::MEETING_LIST;

/// Feishu wants the challenge back within one second.
const URL_CHECK_LIMIT: Duration = Duration::from_secs(1);

const APP: Feature = Feature::new(
    Platform::Feishu,
    "app",
    "应用与通讯录",
    "feishu.app_id, feishu.app_secret",
);
const SIDEBAR: Feature = Feature::new(
    Platform::Feishu,
    "sidebar",
    "网页应用 JSSDK",
    "feishu.app_id, feishu.app_secret",
);
const ENCRYPTION: Feature = Feature::new(
    Platform::Feishu,
    "encryption",
    "事件加密与签名",
    "feishu.encrypt_key",
);
const MEETINGS: Feature = Feature::new(
    Platform::Feishu,
    "meetings",
    "会议轮询",
    "feishu.poll_meetings",
);
const CALLBACK: Feature = Feature::new(
    Platform::Feishu,
    "callback",
    "事件请求地址",
    "public_url, feishu.verification_token, feishu.encrypt_key",
);

pub(super) async fn check(cfg: &FeishuConfig, ctx: &Ctx) -> Vec<super::Check> {
    let api = FeishuApi::from_config(cfg, ctx.api.clone(), ctx.clock.clone());
    let mut out = Vec::new();

    let directory = match api.token().await {
        Ok(_) => {
            let query = [
                ("fetch_child", "true"),
                ("department_id_type", "department_id"),
                ("page_size", "1"),
            ];
            api.call_json(reqwest::Method::GET, DEPARTMENT_CHILDREN, &query, None)
                .await
        }
        Err(e) => Err(e),
    };
    out.push(match directory {
        Ok(_) => APP.ok("令牌已取得，通讯录可读取"),
        Err(e) => APP.failed(problem(
            &e,
            "应用需要通讯录读取权限，通讯录权限范围要包含销售团队",
        )),
    });

    out.push(
        match api
            .call_json(
                reqwest::Method::POST,
                "/open-apis/jssdk/ticket/get",
                &[],
                Some(&json!({})),
            )
            .await
        {
            Ok(_) => SIDEBAR.ok("JSSDK 票据可取得（h5sdk.config）"),
            Err(e) => SIDEBAR.failed(problem(&e, "在开发者后台启用「网页应用」")),
        },
    );

    out.push(match encrypt_key(cfg) {
        Some(_) => ENCRYPTION.ok("已配置：下面的回调检查按 Encrypt Key 加密并签名"),
        None => ENCRYPTION.off("未配置：事件以明文送达、没有签名，只凭 verification_token 认证"),
    });

    out.push(if cfg.poll_meetings {
        let end = now_ms(ctx) / 1000;
        let (start, end) = ((end - 3600).to_string(), end.to_string());
        match api
            .call_json(
                reqwest::Method::GET,
                MEETING_LIST,
                &[
                    ("start_time", start.as_str()),
                    ("end_time", end.as_str()),
                    ("meeting_status", "2"),
                    ("page_size", "20"),
                    ("user_id_type", "user_id"),
                ],
                None,
            )
            .await
        {
            Ok(_) => MEETINGS.ok("vc/v1/meeting_list 可调用"),
            Err(e) => MEETINGS.failed(problem(
                &e,
                "meeting_list 需要飞书已不再授予新应用的旧版权限；可关闭 poll_meetings，会议结束事件照样读取会议记录",
            )),
        }
    } else {
        MEETINGS.off("未开启：只在飞书推送 vc.meeting.meeting_ended_v1 时读取会议记录")
    });

    out.push(callback(cfg, ctx).await);
    out
}

/// The URL check Feishu sends when the admin saves the request URL:
/// `{"challenge", "token", "type": "url_verification"}`, encrypted and signed when an
/// Encrypt Key is set, answered with `{"challenge"}` as sent.
async fn callback(cfg: &FeishuConfig, ctx: &Ctx) -> super::Check {
    let challenge = fresh_echo();
    let mut payload = json!({"challenge": challenge, "type": "url_verification"});
    if let Some(token) = cfg
        .verification_token
        .as_ref()
        .filter(|t| !t.expose().is_empty())
    {
        payload["token"] = json!(token.expose());
    }
    let url = ctx.callback_url("/callback/feishu");
    let mut request = ctx
        .callback
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    match encrypt_key(cfg).map(FeishuCrypto::new) {
        None => request = request.body(payload.to_string()),
        Some(Err(e)) => return CALLBACK.failed(format!("feishu.encrypt_key 无效：{e}")),
        Some(Ok(crypto)) => {
            let body =
                json!({ "encrypt": crypto.encrypt_random(&payload.to_string()) }).to_string();
            let timestamp = (now_ms(ctx) / 1000).to_string();
            let nonce = random_nonce();
            let signature = crypto.signature(&timestamp, &nonce, body.as_bytes());
            request = request
                .header(TIMESTAMP_HEADER, timestamp)
                .header(NONCE_HEADER, nonce)
                .header(SIGNATURE_HEADER, signature)
                .body(body);
        }
    }
    let expected = Expected {
        feature: CALLBACK,
        url: &url,
        limit: URL_CHECK_LIMIT,
        otherwise: "没有原样返回 challenge：飞书会判定这个地址无效",
        keys: "feishu.verification_token 或 feishu.encrypt_key",
    };
    url_check(ctx, expected, request, |body| echoes(body, &challenge)).await
}

/// The Encrypt Key, unless unset or empty (closeloop treats both alike).
fn encrypt_key(cfg: &FeishuConfig) -> Option<&str> {
    cfg.encrypt_key
        .as_ref()
        .map(|k| k.expose())
        .filter(|k| !k.is_empty())
}

fn echoes(body: &str, challenge: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| v["challenge"] == challenge)
}

/// A failed call in words an admin can act on; `hint` says which right a refused call
/// needs.
fn problem(e: &FeishuError, hint: &str) -> String {
    match e {
        FeishuError::Configuration { code, .. } => {
            format!("飞书拒绝了应用凭据（code {code}）：请核对 feishu.app_id 和 feishu.app_secret")
        }
        FeishuError::Api { code, msg } => {
            format!("飞书拒绝了这个调用（code {code}：{msg}）：{hint}")
        }
        other => format!("调用失败：{other}"),
    }
}
