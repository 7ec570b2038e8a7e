//! `closeloop doctor` (issue 14) against the three platform emulators and a running
//! closeloop: everything configured and right exits 0; a missing secret turns its feature
//! off with the reason; a wrong secret is a failure and a non-zero exit; a `public_url`
//! that does not answer, or answers as something else, fails its callback checks.

use std::path::Path;

use closeloop::chat::event::Platform;
use closeloop::doctor::{self, Report, Status};
use closeloop::emulator::dingtalk::Emulator as DingtalkEmulator;
use closeloop::emulator::feishu::Emulator as FeishuEmulator;
use closeloop::emulator::wecom::Emulator as WecomEmulator;
use closeloop::Config;
use serde_json::json;

use crate::helpers::spawn_app_with;

const WC_CORP: &str = "wwdoctor0000001";
const WC_APP: &str = "wecom-app-secret-1";
const WC_CONTACT: &str = "wecom-contact-secret-1";
const WC_DIAL: &str = "wecom-dial-secret-1";
const WC_TOKEN: &str = "wecomCallbackToken1";
const WC_AES: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const DT_KEY: &str = "dingdoctorapp01";
const DT_SECRET: &str = "dingtalk-app-secret-1";
const DT_TOKEN: &str = "dingtalkCallbackToken1";
const DT_AES: &str = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7";
const DT_CARD_SECRET: &str = "dingtalk-card-secret-1";
const FS_APP: &str = "cli_doctor000001";
const FS_SECRET: &str = "feishu-app-secret-1";
const FS_TOKEN: &str = "feishuVerificationToken1";
const FS_KEY: &str = "Fq3BucfwoJQMjXxrwi3I6fFildR0NgmI";

/// Every secret above: none may appear in what the doctor prints.
const SECRETS: [&str; 11] = [
    WC_APP,
    WC_CONTACT,
    WC_DIAL,
    WC_TOKEN,
    WC_AES,
    DT_SECRET,
    DT_TOKEN,
    DT_AES,
    DT_CARD_SECRET,
    FS_SECRET,
    FS_KEY,
];

struct Platforms {
    wecom: WecomEmulator,
    dingtalk: DingtalkEmulator,
    feishu: FeishuEmulator,
}

impl Platforms {
    async fn start() -> Platforms {
        let wecom = WecomEmulator::start(
            WC_CORP,
            vec![
                (WC_APP.to_string(), "app"),
                (WC_CONTACT.to_string(), "contact"),
                (WC_DIAL.to_string(), "dial"),
            ],
        )
        .await;
        wecom.set_directory(
            vec![json!({"id": 2, "name": "华南区", "parentid": 1})],
            vec![],
        );
        let dingtalk = DingtalkEmulator::start(DT_KEY, DT_SECRET).await;
        dingtalk.set_directory(
            vec![json!({"dept_id": 2, "name": "华南区", "parent_id": 1})],
            vec![],
        );
        let feishu = FeishuEmulator::start(FS_APP, FS_SECRET).await;
        Platforms {
            wecom,
            dingtalk,
            feishu,
        }
    }

    /// The three platform sections with every feature on, pointing at the emulators.
    fn sections(&self) -> String {
        format!(
            "[wecom]\ncorp_id = \"{WC_CORP}\"\nagent_id = 1000002\nsecret = \"{WC_APP}\"\n\
             contact_secret = \"{WC_CONTACT}\"\ndial_secret = \"{WC_DIAL}\"\ntoken = \"{WC_TOKEN}\"\n\
             encoding_aes_key = \"{WC_AES}\"\napi_base = \"{wc}\"\n\
             [dingtalk]\napp_key = \"{DT_KEY}\"\napp_secret = \"{DT_SECRET}\"\n\
             corp_id = \"dingcorpdoctor1\"\nagent_id = \"3000001\"\nrobot_code = \"dingrobot1\"\n\
             token = \"{DT_TOKEN}\"\naes_key = \"{DT_AES}\"\ncard_callback_secret = \"{DT_CARD_SECRET}\"\n\
             card_template_id = \"tpl-closeloop.schema\"\npoll_meetings = true\n\
             api_base = \"{dt}\"\noapi_base = \"{dt}\"\n\
             [feishu]\napp_id = \"{FS_APP}\"\napp_secret = \"{FS_SECRET}\"\n\
             verification_token = \"{FS_TOKEN}\"\nencrypt_key = \"{FS_KEY}\"\npoll_meetings = true\n\
             api_base = \"{fs}\"\n",
            wc = self.wecom.base_url(),
            dt = self.dingtalk.base_url(),
            fs = self.feishu.base_url(),
        )
    }
}

/// `sections` without the lines that start with any of `prefixes`.
fn without(sections: &str, prefixes: &[&str]) -> String {
    sections
        .lines()
        .filter(|l| !prefixes.iter().any(|p| l.starts_with(p)))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The doctor's configuration: the platform sections, and `public_url` naming `base`.
fn doctor_config(base: &str, sections: &str) -> String {
    format!("public_url = \"{base}\"\n{sections}")
}

async fn run(base: &str, sections: &str) -> Report {
    let config = Config::from_toml_only(&doctor_config(base, sections)).expect("doctor config");
    doctor::run(&config).await.expect("doctor runs")
}

struct CliRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `closeloop doctor --config FILE` as an admin runs it, while this test's emulators and
/// server keep serving.
async fn run_cli(dir: &Path, base: &str, sections: &str) -> CliRun {
    let path = dir.join("doctor.toml");
    std::fs::write(&path, doctor_config(base, sections)).unwrap();
    let mut cmd = crate::cli::closeloop(dir);
    cmd.arg("--config").arg(&path).arg("doctor");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run closeloop doctor"))
        .await
        .unwrap();
    let run = CliRun {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    for secret in SECRETS {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "a secret was printed:\n{}{}",
            run.stdout,
            run.stderr
        );
    }
    run
}

fn line<'a>(stdout: &'a str, start: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{stdout}"))
}

#[tokio::test]
async fn all_good_on_the_three_platforms_exits_zero() {
    let p = Platforms::start().await;
    let app = spawn_app_with(&p.sections()).await;
    let dir = tempfile::tempdir().unwrap();

    let out = run_cli(dir.path(), &app.base, &p.sections()).await;

    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let checks: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("共"))
        .collect();
    assert_eq!(checks.len(), 16, "{}", out.stdout);
    assert!(
        checks.iter().all(|l| l.starts_with('✓')),
        "every check passes:\n{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("共 16 项：16 项正常，0 项未启用，0 项失败"));
    let wecom = line(&out.stdout, "✓ 企业微信 · 回调 URL");
    assert!(
        wecom.contains("（public_url, wecom.token, wecom.encoding_aes_key）")
            && wecom.contains(&format!("{}/callback/wecom 答复正确", app.base))
            && wecom.contains("本机或内网地址"),
        "{wecom}"
    );
    line(&out.stdout, "✓ 钉钉 · 事件订阅 URL");
    line(&out.stdout, "✓ 飞书 · 事件请求地址");
    assert!(line(&out.stdout, "✓ 企业微信 · 应用与通讯录").contains("可见部门 1 个"));
    line(&out.stdout, "✓ 企业微信 · 客户联系（wecom.contact_secret）");
    line(&out.stdout, "✓ 企业微信 · 公费电话（wecom.dial_secret）");
    // A token from each secret, and the calls the checks name.
    assert_eq!(p.wecom.gettoken_calls(), 3);
    assert_eq!(p.wecom.dial_requests().len(), 1);
    assert!(p.dingtalk.jsapi_ticket().is_some());
    assert!(p.feishu.jsapi_ticket().is_some());
}

#[tokio::test]
async fn a_missing_secret_turns_its_feature_off_with_the_reason() {
    let p = Platforms::start().await;
    let sections = without(
        &p.sections(),
        &[
            "contact_secret =",
            "dial_secret =",
            "corp_id = \"ding",
            "card_callback_secret =",
            "card_template_id =",
            "encrypt_key =",
            "poll_meetings =",
        ],
    );
    let app = spawn_app_with(&sections).await;

    let report = run(&app.base, &sections).await;

    let off = |platform, feature: &str, reason: &str| {
        let c = report.get(platform, feature).expect(feature);
        assert_eq!(c.status, Status::Off, "{c}");
        assert!(c.detail.contains(reason), "{c}");
    };
    off(
        Platform::Wecom,
        "dial",
        "「已电话沟通」无法用公费电话记录核验",
    );
    off(Platform::Wecom, "contact", "不会成为 closeloop 的客户");
    off(Platform::Dingtalk, "sidebar", "无法免登");
    off(Platform::Dingtalk, "card_callback", "按钮不起作用");
    off(Platform::Dingtalk, "cards", "卡片发不到钉钉");
    off(Platform::Dingtalk, "meetings", "未开启");
    off(
        Platform::Feishu,
        "encryption",
        "只凭 verification_token 认证",
    );
    off(Platform::Feishu, "meetings", "未开启");
    assert_eq!(report.count(Status::Failed), 0, "{:#?}", report.checks);
    for (platform, feature) in [
        (Platform::Wecom, "app"),
        (Platform::Wecom, "callback"),
        (Platform::Dingtalk, "app"),
        (Platform::Dingtalk, "callback"),
        (Platform::Feishu, "app"),
        // Unencrypted: the URL check goes as plaintext with the Verification Token.
        (Platform::Feishu, "callback"),
    ] {
        let c = report.get(platform, feature).unwrap();
        assert_eq!(c.status, Status::Ok, "{c}");
    }
    // Only the app secret was presented, and nothing was asked of 公费电话.
    assert_eq!(p.wecom.gettoken_calls(), 1);
    assert!(p.wecom.dial_requests().is_empty());

    // Off is not a failure: the command succeeds and prints the reason.
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(dir.path(), &app.base, &sections).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(line(
        &out.stdout,
        "— 企业微信 · 公费电话（wecom.dial_secret）：未配置"
    )
    .contains("通话只能由上级证明属实"));
}

#[tokio::test]
async fn a_wrong_secret_fails_and_exits_non_zero() {
    let p = Platforms::start().await;
    let right = p.sections();
    let app = spawn_app_with(&right).await;
    let wrong = right
        .replace(WC_DIAL, "wecom-dial-wrong")
        .replace(DT_SECRET, "dingtalk-secret-wrong")
        .replace(FS_SECRET, "feishu-secret-wrong");
    let dir = tempfile::tempdir().unwrap();

    let out = run_cli(dir.path(), &app.base, &wrong).await;

    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("check(s) failed"), "{}", out.stderr);
    let dial = line(&out.stdout, "✗ 企业微信 · 公费电话（wecom.dial_secret）");
    assert!(
        dial.contains("企业微信拒绝了这个 Secret（errcode 40001）：请核对 wecom.dial_secret"),
        "{dial}"
    );
    // The other WeCom secrets are fine, and say so.
    line(&out.stdout, "✓ 企业微信 · 应用与通讯录");
    line(&out.stdout, "✓ 企业微信 · 客户联系");
    let dingtalk = line(&out.stdout, "✗ 钉钉 · 应用与通讯录");
    assert!(
        dingtalk.contains("请核对 dingtalk.app_key 和 dingtalk.app_secret"),
        "{dingtalk}"
    );
    let feishu = line(&out.stdout, "✗ 飞书 · 应用与通讯录");
    assert!(
        feishu.contains("飞书拒绝了应用凭据") && feishu.contains("feishu.app_secret"),
        "{feishu}"
    );
    // Callbacks do not depend on the API secrets.
    line(&out.stdout, "✓ 企业微信 · 回调 URL");
    line(&out.stdout, "✓ 钉钉 · 事件订阅 URL");
    line(&out.stdout, "✓ 飞书 · 事件请求地址");
    for wrong in [
        "wecom-dial-wrong",
        "dingtalk-secret-wrong",
        "feishu-secret-wrong",
    ] {
        assert!(!out.stdout.contains(wrong) && !out.stderr.contains(wrong));
    }
}

#[tokio::test]
async fn a_public_url_that_does_not_answer_or_answers_wrong_fails() {
    let p = Platforms::start().await;
    let sections = p.sections();
    let app = spawn_app_with(&sections).await;
    let callbacks = [Platform::Wecom, Platform::Dingtalk, Platform::Feishu];

    // Nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let report = run(&closed, &sections).await;
    for platform in callbacks {
        let c = report.get(platform, "callback").unwrap();
        assert_eq!(c.status, Status::Failed, "{c}");
        assert!(c.detail.contains("无法连接"), "{c}");
        assert_eq!(report.get(platform, "app").unwrap().status, Status::Ok);
    }

    // Something else answers there.
    let report = run(&p.wecom.base_url(), &sections).await;
    for platform in callbacks {
        let c = report.get(platform, "callback").unwrap();
        assert_eq!(c.status, Status::Failed, "{c}");
        assert!(c.detail.contains("答复 404"), "{c}");
    }

    // A closeloop answers, but with other callback secrets than this configuration's.
    let other = sections
        .replace(WC_TOKEN, "anotherWecomToken")
        .replace(DT_TOKEN, "anotherDingtalkToken")
        .replace(FS_KEY, "anotherFeishuEncryptKey");
    let report = run(&app.base, &other).await;
    for platform in callbacks {
        let c = report.get(platform, "callback").unwrap();
        assert_eq!(c.status, Status::Failed, "{c}");
        assert!(
            c.detail.contains("拒绝了请求（HTTP 401") && c.detail.contains("与本配置不一致"),
            "{c}"
        );
    }
}
