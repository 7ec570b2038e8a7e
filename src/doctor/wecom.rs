//! WeCom's checks: a token and one read per secret, the JS-SDK ticket, and the URL check
//! of `/callback/wecom`.
//!
//! The errcodes explained here are WeCom's global codes as `xen0n/go-workwx`
//! `errcodes/mod.go` transcribes them from developer.work.weixin.qq.com `path/90313`:
//! 40001 invalid secret, 40013 invalid corp id, 48002 "API接口无权限调用" (customer-contact
//! APIs only for the 客户联系 app or an app on its 「可调用应用」 list), 60020 "不安全的访问IP"
//! (the server's IP must be in the app's 企业可信IP, effective after about a minute),
//! 84062 "未开启公费电话应用", and for `externalcontact/get` 40096 (not a valid external
//! userid) and 84061 (no such contact relation). Unconfirmed: that WeCom checks the token's
//! rights before the external userid, which the contact check relies on when it asks for a
//! contact no corp has and takes "no such contact" for a token that may call the API.

use std::time::Duration;

use serde_json::json;

use super::{fresh_echo, now_ms, url_check, Ctx, Expected, Feature};
use crate::chat::event::Platform;
use crate::config::WecomConfig;
use crate::jobs::JobError;
use crate::platform::crypto::{random_nonce, EncodingAesKey};
use crate::platform::wecom::api::WecomApi;
use crate::platform::wecom::crypto::WecomCrypto;
use crate::platform::wecom::token::SecretKind;

/// WeCom wants the URL check's answer within one second (docs/protocols/wecom.md).
const URL_CHECK_LIMIT: Duration = Duration::from_secs(1);
/// An external userid no corp has.
const PROBE_EXTERNAL_USERID: &str = "closeloop-doctor-probe";

const APP: Feature = Feature::new(
    Platform::Wecom,
    "app",
    "应用与通讯录",
    "wecom.corp_id, wecom.secret",
);
const SIDEBAR: Feature = Feature::new(Platform::Wecom, "sidebar", "侧边栏 JS-SDK", "wecom.secret");
const CONTACT: Feature = Feature::new(
    Platform::Wecom,
    "contact",
    "客户联系",
    "wecom.contact_secret",
);
const DIAL: Feature = Feature::new(Platform::Wecom, "dial", "公费电话", "wecom.dial_secret");
const CALLBACK: Feature = Feature::new(
    Platform::Wecom,
    "callback",
    "回调 URL",
    "public_url, wecom.token, wecom.encoding_aes_key",
);

pub(super) async fn check(cfg: &WecomConfig, ctx: &Ctx) -> Vec<super::Check> {
    let api = WecomApi::from_config(cfg, ctx.api.clone(), ctx.clock.clone());
    let mut out = Vec::new();

    out.push(
        match api
            .get(SecretKind::App, "/cgi-bin/department/list", &[])
            .await
        {
            Ok(answer) => {
                let n = answer["department"].as_array().map_or(0, Vec::len);
                APP.ok(format!("令牌已取得，通讯录可读取（可见部门 {n} 个）"))
            }
            Err(e) => APP.failed(problem(
                &e,
                "wecom.secret",
                "应用需要通讯录读取权限，可见范围要包含销售团队",
            )),
        },
    );

    out.push(
        match api
            .get(
                SecretKind::App,
                "/cgi-bin/ticket/get",
                &[("type", "agent_config")],
            )
            .await
        {
            Ok(_) => SIDEBAR.ok("JS-SDK 应用票据可取得（wx.agentConfig）"),
            Err(e) => SIDEBAR.failed(problem(
                &e,
                "wecom.secret",
                "确认它是 agent_id 这个应用的 Secret",
            )),
        },
    );

    out.push(match &cfg.contact_secret {
        None => CONTACT.off(
            "未配置：成员添加的外部联系人不会成为 closeloop 的客户（读不到 externalcontact/get）",
        ),
        Some(_) => match api
            .get(
                SecretKind::Contact,
                "/cgi-bin/externalcontact/get",
                &[("external_userid", PROBE_EXTERNAL_USERID)],
            )
            .await
        {
            // Any answer about the contact itself means the token may call the API.
            Ok(_) => CONTACT.ok("令牌已取得，externalcontact/get 可调用"),
            Err(e) if matches!(errcode(&e), Some(84061 | 40096)) => {
                CONTACT.ok("令牌已取得，externalcontact/get 可调用")
            }
            Err(e) => CONTACT.failed(problem(
                &e,
                "wecom.contact_secret",
                "填客户联系的 Secret，或在「客户联系 → API → 可调用应用」中加入本应用",
            )),
        },
    });

    out.push(match &cfg.dial_secret {
        None => DIAL.off("未配置：「已电话沟通」无法用公费电话记录核验，通话只能由上级证明属实"),
        Some(_) => {
            let now = now_ms(ctx) / 1000;
            let body = json!({"start_time": now - 3600, "end_time": now, "offset": 0, "limit": 1});
            match api
                .call_json(SecretKind::Dial, "/cgi-bin/dial/get_dial_record", &body)
                .await
            {
                Ok(_) => DIAL.ok("令牌已取得，dial/get_dial_record 可调用"),
                Err(e) => DIAL.failed(problem(
                    &e,
                    "wecom.dial_secret",
                    "填公费电话的 Secret（管理后台 → 应用管理 → 公费电话 → API）",
                )),
            }
        }
    });

    out.push(callback(cfg, ctx).await);
    out
}

/// The URL check WeCom sends when the admin saves the callback URL: a GET with an
/// encrypted `echostr`, answered with its plaintext alone.
async fn callback(cfg: &WecomConfig, ctx: &Ctx) -> super::Check {
    let key = match EncodingAesKey::parse(cfg.encoding_aes_key.expose()) {
        Ok(key) => key,
        Err(e) => return CALLBACK.failed(format!("wecom.encoding_aes_key 无效：{e}")),
    };
    let crypto = WecomCrypto::new(cfg.token.expose(), key, cfg.corp_id.clone());
    let echo = fresh_echo();
    let echostr = crypto.encrypt_random(&echo);
    let timestamp = (now_ms(ctx) / 1000).to_string();
    let nonce = random_nonce();
    let signature = crypto.signature(&timestamp, &nonce, &echostr);
    let url = ctx.callback_url("/callback/wecom");
    let request = ctx.callback.get(&url).query(&[
        ("msg_signature", signature.as_str()),
        ("timestamp", timestamp.as_str()),
        ("nonce", nonce.as_str()),
        ("echostr", echostr.as_str()),
    ]);
    let expected = Expected {
        feature: CALLBACK,
        url: &url,
        limit: URL_CHECK_LIMIT,
        otherwise: "不是解密后的 echostr：企业微信会判定这个 URL 无效",
        keys: "wecom.token、wecom.encoding_aes_key 或 wecom.corp_id",
    };
    url_check(ctx, expected, request, |body| body == echo).await
}

/// The errcode an API client's error carries (`… errcode 48002: …`), if any.
fn errcode(e: &JobError) -> Option<i64> {
    let text = e.to_string();
    let rest = &text[text.find("errcode ")? + "errcode ".len()..];
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

/// A failed call in words an admin can act on; `hint` says how to grant a missing right.
fn problem(e: &JobError, key: &str, hint: &str) -> String {
    match errcode(e) {
        Some(code @ (40001 | 40091)) => {
            format!("企业微信拒绝了这个 Secret（errcode {code}）：请核对 {key}")
        }
        Some(40013) => "企业微信不认识这个企业ID（errcode 40013）：请核对 wecom.corp_id".into(),
        Some(60020) => {
            "本机的出口 IP 不在应用的「企业可信IP」中（errcode 60020）：加入后约 1 分钟生效".into()
        }
        Some(84062) => "企业还没有开启公费电话（errcode 84062）".into(),
        Some(code @ (48001 | 48002)) => format!("{key} 无权调用这个接口（errcode {code}）：{hint}"),
        _ => format!("调用失败：{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errcode_is_read_from_the_clients_message() {
        let e = JobError::GiveUp("WeCom /cgi-bin/x: errcode 48002: api forbidden".into());
        assert_eq!(errcode(&e), Some(48002));
        let e = JobError::Retry("WeCom /cgi-bin/x: errcode -1: system busy".into());
        assert_eq!(errcode(&e), Some(-1));
        let e = JobError::GiveUp("WeCom rejected the dial credentials (errcode 40001: invalid credential); fix wecom.dial_secret".into());
        assert_eq!(errcode(&e), Some(40001));
        assert!(problem(&e, "wecom.dial_secret", "").contains("wecom.dial_secret"));
        assert_eq!(errcode(&JobError::Retry("could not connect".into())), None);
    }
}
