//! `closeloop doctor`: a configuration checked against the live platforms.
//!
//! For every configured platform: a token from each configured secret, one read call for
//! each feature that is on (through the platform's own API client, so the doctor sees what
//! the server would see), and a URL check of the platform's callback at `public_url`,
//! signed and encrypted the way the platform signs its own, whose answer must be the one
//! the platform expects. A feature whose configuration is missing is reported off, with
//! what that costs the team. Nothing is written: closeloop answers URL checks without
//! touching its inbox, and the platform calls only read.

mod dingtalk;
mod feishu;
mod wecom;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chat::event::Platform;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;

/// How long one platform call or callback answer may take before the check fails.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Checked against the platform, and working.
    Ok,
    /// Turned off by the configuration; the detail says what that costs.
    Off,
    /// Checked, and broken.
    Failed,
}

impl Status {
    pub fn mark(self) -> char {
        match self {
            Status::Ok => '✓',
            Status::Off => '—',
            Status::Failed => '✗',
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub platform: Platform,
    /// A stable name for scripts and tests: `section`, `app`, `sidebar`, `contact`,
    /// `dial`, `cards`, `card_callback`, `encryption`, `meetings` or `callback`.
    pub feature: &'static str,
    /// The feature, in Chinese.
    pub title: &'static str,
    /// The configuration keys behind it, as an admin finds them in `closeloop.toml`.
    pub keys: &'static str,
    pub status: Status,
    /// What was found, in Chinese; never a secret.
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} · {}（{}）：{}",
            self.status.mark(),
            platform_name(self.platform),
            self.title,
            self.keys,
            self.detail
        )
    }
}

fn platform_name(p: Platform) -> &'static str {
    match p {
        Platform::Wecom => "企业微信",
        Platform::Dingtalk => "钉钉",
        Platform::Feishu => "飞书",
    }
}

/// A feature before it is checked: where it belongs and what configures it.
#[derive(Clone, Copy)]
struct Feature {
    platform: Platform,
    name: &'static str,
    title: &'static str,
    keys: &'static str,
}

impl Feature {
    const fn new(
        platform: Platform,
        name: &'static str,
        title: &'static str,
        keys: &'static str,
    ) -> Feature {
        Feature {
            platform,
            name,
            title,
            keys,
        }
    }

    fn with(self, status: Status, detail: impl Into<String>) -> Check {
        Check {
            platform: self.platform,
            feature: self.name,
            title: self.title,
            keys: self.keys,
            status,
            detail: detail.into(),
        }
    }

    fn ok(self, detail: impl Into<String>) -> Check {
        self.with(Status::Ok, detail)
    }

    fn off(self, detail: impl Into<String>) -> Check {
        self.with(Status::Off, detail)
    }

    fn failed(self, detail: impl Into<String>) -> Check {
        self.with(Status::Failed, detail)
    }
}

/// Every check, in the order printed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The check of `feature` on `platform`, if it ran.
    pub fn get(&self, platform: Platform, feature: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.platform == platform && c.feature == feature)
    }
}

/// The HTTP clients and the clock the checks share.
struct Ctx {
    /// For the platforms' APIs.
    api: reqwest::Client,
    /// For closeloop's own callback URLs: no redirects, since the platforms follow none.
    callback: reqwest::Client,
    clock: SharedClock,
    /// `public_url` without a trailing slash.
    public_url: String,
}

impl Ctx {
    fn callback_url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }
}

/// Runs every check of `config`.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    let agent = concat!("closeloop-doctor/", env!("CARGO_PKG_VERSION"));
    let ctx = Ctx {
        api: reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(agent)
            .build()?,
        callback: reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(agent)
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        clock: Arc::new(SystemClock),
        public_url: config.public_url.trim_end_matches('/').to_string(),
    };
    let mut checks = Vec::new();
    match &config.wecom {
        Some(cfg) => checks.extend(wecom::check(cfg, &ctx).await),
        None => checks.push(not_configured(Platform::Wecom, "[wecom]")),
    }
    match &config.dingtalk {
        Some(cfg) => checks.extend(dingtalk::check(cfg, &ctx).await),
        None => checks.push(not_configured(Platform::Dingtalk, "[dingtalk]")),
    }
    match &config.feishu {
        Some(cfg) => checks.extend(feishu::check(cfg, &ctx).await),
        None => checks.push(not_configured(Platform::Feishu, "[feishu]")),
    }
    Ok(Report { checks })
}

fn not_configured(platform: Platform, keys: &'static str) -> Check {
    Feature::new(platform, "section", "平台", keys)
        .off("未配置：这个平台的成员收不到卡片，也无法登录")
}

/// `closeloop doctor`: one line per check on stdout, then a summary; an error (exit 2)
/// when any check failed.
pub async fn cli(config: &Config) -> anyhow::Result<()> {
    let report = run(config).await?;
    for check in &report.checks {
        println!("{check}");
    }
    let failed = report.count(Status::Failed);
    println!(
        "共 {} 项：{} 项正常，{} 项未启用，{failed} 项失败",
        report.checks.len(),
        report.count(Status::Ok),
        report.count(Status::Off),
    );
    anyhow::ensure!(
        failed == 0,
        "{failed} 项检查失败（见上方 ✗ 行）/ {failed} check(s) failed"
    );
    Ok(())
}

/// What the platform requires of the answer to its URL check.
struct Expected<'a> {
    feature: Feature,
    url: &'a str,
    /// How long the platform waits.
    limit: Duration,
    /// What the platform makes of a 200 with another body.
    otherwise: &'a str,
    /// The keys the closeloop that answers must share with this configuration.
    keys: &'a str,
}

/// Sends a URL check and judges the answer; `correct` tells a right body of a 200.
async fn url_check(
    ctx: &Ctx,
    expected: Expected<'_>,
    request: reqwest::RequestBuilder,
    correct: impl Fn(&str) -> bool,
) -> Check {
    let Expected {
        feature,
        url,
        limit,
        otherwise,
        keys,
    } = expected;
    match send(request).await {
        Err(why) => feature.failed(format!("{url}：{why}")),
        Ok(a) if a.status == 200 && correct(&a.body) => {
            answered(feature, url, a.elapsed, limit, ctx)
        }
        Ok(a) if a.status == 200 => feature.failed(format!("{url} 答复了 200，但{otherwise}")),
        Ok(a) => feature.failed(refusal(url, &a, keys)),
    }
}

/// What a callback URL answered.
struct Answer {
    status: u16,
    body: String,
    location: Option<String>,
    elapsed: Duration,
}

/// Sends a callback request; the error says in Chinese why nothing usable came back.
async fn send(request: reqwest::RequestBuilder) -> Result<Answer, String> {
    let started = Instant::now();
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("{} 秒内没有答复", TIMEOUT.as_secs())
        } else if e.is_connect() {
            "无法连接（地址、端口或防火墙不对，或 closeloop 没有运行）".to_string()
        } else {
            "请求失败".to_string()
        }
    })?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .text()
        .await
        .map_err(|_| "答复读不完整".to_string())?;
    Ok(Answer {
        status,
        body,
        location,
        elapsed: started.elapsed(),
    })
}

/// Why a callback URL did not answer 200: `keys` are what must match between this
/// configuration and the closeloop that answered.
fn refusal(url: &str, answer: &Answer, keys: &str) -> String {
    let code = serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
    let status = answer.status;
    match (status, code.as_deref()) {
        (300..=399, _) => format!(
            "{url} 重定向到 {}：平台不跟随重定向，public_url 应直接指向 closeloop",
            answer.location.as_deref().unwrap_or("别处")
        ),
        (404, _) => format!(
            "{url} 答复 404：那里的 closeloop 没有配置这个平台，或 public_url 指向了别的服务"
        ),
        (_, Some("stale_timestamp")) => format!(
            "{url} 拒绝了时间戳（stale_timestamp）：本机与服务器的时钟相差超过 max_clock_skew"
        ),
        (401, Some(code)) => format!(
            "{url} 拒绝了请求（HTTP 401，{code}）：那里的 closeloop 的 {keys} 与本配置不一致"
        ),
        (_, Some(code)) => format!("{url} 拒绝了请求（HTTP {status}，{code}）"),
        _ => format!("{url} 答复 HTTP {status}，不是平台要的答复"),
    }
}

/// A correct answer: still a failure when slower than the platform waits.
fn answered(feature: Feature, url: &str, elapsed: Duration, limit: Duration, ctx: &Ctx) -> Check {
    let ms = elapsed.as_millis();
    if elapsed > limit {
        return feature.failed(format!(
            "{url} 答复正确，但用了 {ms} 毫秒，超过平台等待的 {} 毫秒",
            limit.as_millis()
        ));
    }
    let mut detail = format!("{url} 答复正确（{ms} 毫秒）");
    if !reachable_from_outside(&ctx.public_url) {
        detail.push_str("；注意：public_url 是本机或内网地址，平台从外网无法回调");
    }
    feature.ok(detail)
}

/// Whether `public_url` names a host the platforms could reach: not loopback, not a
/// private or link-local address.
fn reachable_from_outside(public_url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
    else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return false;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => !(ip.is_loopback() || ip.is_private() || ip.is_link_local()),
        Ok(IpAddr::V6(ip)) => !(ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00),
        Err(_) => true,
    }
}

/// A fresh text no one can predict, for the URL checks' echo.
fn fresh_echo() -> String {
    format!("closeloop-doctor-{}", uuid::Uuid::new_v4().simple())
}

fn now_ms(ctx: &Ctx) -> i64 {
    ctx.clock.now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_hosts_count_as_reachable() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "https://10.0.0.5",
            "https://192.168.1.2/cl",
            "http://[::1]:80",
            "http://[fd00::5]",
        ] {
            assert!(!reachable_from_outside(url), "{url}");
        }
        for url in ["https://crm.example.com", "https://203.0.113.9/closeloop"] {
            assert!(reachable_from_outside(url), "{url}");
        }
    }

    #[test]
    fn a_refusal_says_what_to_look_at() {
        let answer = |status, body: &str, location: Option<&str>| Answer {
            status,
            body: body.into(),
            location: location.map(str::to_string),
            elapsed: Duration::ZERO,
        };
        let url = "https://crm.example.com/callback/wecom";
        let said = |a: &Answer| refusal(url, a, "wecom.token");
        let signature = answer(401, r#"{"error":{"code":"bad_signature"}}"#, None);
        assert!(said(&signature).contains(
            "（HTTP 401，bad_signature）：那里的 closeloop 的 wecom.token 与本配置不一致"
        ));
        let clock = answer(401, r#"{"error":{"code":"stale_timestamp"}}"#, None);
        assert!(said(&clock).contains("时钟相差超过 max_clock_skew"));
        let moved = answer(301, "", Some("https://elsewhere.example.com/"));
        assert!(said(&moved).contains("重定向到 https://elsewhere.example.com/"));
        assert!(said(&answer(404, "", None)).contains("答复 404"));
        assert!(said(&answer(502, "<html>", None)).contains("答复 HTTP 502"));
    }

    #[test]
    fn a_line_names_the_platform_the_feature_and_its_keys() {
        let check =
            Feature::new(Platform::Wecom, "dial", "公费电话", "wecom.dial_secret").off("未配置");
        assert_eq!(
            check.to_string(),
            "— 企业微信 · 公费电话（wecom.dial_secret）：未配置"
        );
    }
}
