//! WeCom access tokens and API calls against the WeCom emulator: single flight, expiry in
//! mid-flight, wrong secrets, rate limits, 5xx and timeouts — and no secret in any error.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use closeloop::clock::{from_ms, Clock, SharedClock, SystemClock};
use closeloop::config::Secret;
use closeloop::emulator::wecom::{Emulator, Failure};
use closeloop::jobs::JobError;
use closeloop::platform::wecom::api::WecomApi;
use closeloop::platform::wecom::token::{SecretKind, TokenCache, TokenError};
use serde_json::{json, Value};

const CORP: &str = "ww-emulated-corp";
const SECRET: &str = "app-secret-do-not-leak";
const CONTACT_SECRET: &str = "contact-secret-do-not-leak";
const SEND: &str = "/cgi-bin/message/send";

/// A clock the test moves by hand.
struct ManualClock(AtomicI64);

impl ManualClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        from_ms(self.0.load(Ordering::SeqCst))
    }
}

async fn emulator() -> Emulator {
    Emulator::start(
        CORP,
        vec![
            (SECRET.to_string(), "app"),
            (CONTACT_SECRET.to_string(), "contact"),
        ],
    )
    .await
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

fn cache_with(emu: &Emulator, secret: &str, clock: SharedClock) -> TokenCache {
    TokenCache::new(
        CORP,
        vec![
            (SecretKind::App, Secret::new(secret)),
            (SecretKind::Contact, Secret::new(CONTACT_SECRET)),
        ],
        emu.base_url(),
        client(Duration::from_secs(5)),
        clock,
    )
}

fn api_with(emu: &Emulator, secret: &str, timeout: Duration) -> WecomApi {
    let client = client(timeout);
    let tokens = TokenCache::new(
        CORP,
        vec![(SecretKind::App, Secret::new(secret))],
        emu.base_url(),
        client.clone(),
        Arc::new(SystemClock),
    );
    WecomApi::new(tokens, client, emu.base_url())
}

fn card(n: u32) -> Value {
    json!({"touser": "zhangsan", "msgtype": "text", "agentid": 1000002, "text": {"content": format!("hello {n}")}})
}

/// Every way an error can be shown must keep the secrets out.
fn assert_no_secret(shown: &str) {
    for secret in [SECRET, CONTACT_SECRET, "wrong-secret-do-not-leak"] {
        assert!(!shown.contains(secret), "secret leaked in {shown:?}");
    }
}

fn assert_job_error_clean(e: &JobError) {
    assert_no_secret(&e.to_string());
    assert_no_secret(&format!("{e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_100_callers_on_a_cold_cache_makes_one_gettoken_call() {
    let emu = emulator().await;
    let cache = cache_with(&emu, SECRET, Arc::new(SystemClock));
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(SecretKind::App).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for caller in callers {
        tokens.push(caller.await.unwrap().unwrap().expose().to_string());
    }
    assert_eq!(emu.gettoken_calls(), 1);
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_no_secret(&format!("{cache:?}"));
    assert!(!format!("{:?}", cache.get(SecretKind::App).await.unwrap()).contains(&tokens[0]));

    // Each secret has its own token.
    let contact = cache.get(SecretKind::Contact).await.unwrap();
    assert_ne!(contact.expose(), tokens[0]);
    assert_eq!(emu.gettoken_calls(), 2);
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry() {
    let emu = emulator().await;
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let cache = cache_with(&emu, SECRET, clock.clone());
    cache.get(SecretKind::App).await.unwrap();
    clock.advance(Duration::from_secs(7200 - 10 * 60));
    cache.get(SecretKind::App).await.unwrap();
    assert_eq!(emu.gettoken_calls(), 1, "ten minutes left: still cached");
    clock.advance(Duration::from_secs(6 * 60));
    cache.get(SecretKind::App).await.unwrap();
    assert_eq!(emu.gettoken_calls(), 2, "four minutes left: refreshed");
}

#[tokio::test]
async fn a_token_expiring_in_mid_flight_is_refreshed_once_and_the_call_succeeds() {
    let emu = emulator().await;
    let api = api_with(&emu, SECRET, Duration::from_secs(5));
    api.call_json(SecretKind::App, SEND, &card(0))
        .await
        .unwrap();
    assert_eq!(emu.gettoken_calls(), 1);

    emu.expire_tokens();
    let sent = api
        .call_json(SecretKind::App, SEND, &card(1))
        .await
        .unwrap();
    assert_eq!(sent["errcode"], 0);
    assert!(sent["msgid"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(emu.gettoken_calls(), 2);
    assert_eq!(emu.received_messages(), vec![card(0), card(1)]);
}

#[tokio::test]
async fn concurrent_callers_with_an_expired_token_cause_one_refresh() {
    let emu = emulator().await;
    let api = api_with(&emu, SECRET, Duration::from_secs(5));
    api.call_json(SecretKind::App, SEND, &card(0))
        .await
        .unwrap();
    emu.expire_tokens();
    let calls: Vec<_> = (1..=20)
        .map(|n| {
            let api = api.clone();
            tokio::spawn(async move { api.call_json(SecretKind::App, SEND, &card(n)).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(emu.gettoken_calls(), 2);
    assert_eq!(emu.received_messages().len(), 21);
}

#[tokio::test]
async fn a_token_refused_twice_is_a_retry() {
    let emu = emulator().await;
    let api = api_with(&emu, SECRET, Duration::from_secs(5));
    emu.fail_next(SEND, 2, Failure::Errcode(40014));
    let err = api
        .call_json(SecretKind::App, SEND, &card(0))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Retry(_)), "{err:?}");
    assert!(err.to_string().contains("40014"));
    assert_job_error_clean(&err);
    assert_eq!(emu.gettoken_calls(), 2, "one refresh, not a loop");
    api.call_json(SecretKind::App, SEND, &card(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_wrong_secret_gives_up_and_is_not_presented_again_during_the_backoff() {
    let emu = emulator().await;
    let api = api_with(&emu, "wrong-secret-do-not-leak", Duration::from_secs(5));
    let err = api
        .call_json(SecretKind::App, SEND, &card(0))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::GiveUp(_)), "{err:?}");
    assert!(err.to_string().contains("40001"), "{err}");
    assert!(err.to_string().contains("wecom.secret"), "{err}");
    assert_job_error_clean(&err);
    assert_eq!(emu.gettoken_calls(), 1);

    let again = api
        .call_json(SecretKind::App, SEND, &card(1))
        .await
        .unwrap_err();
    assert!(matches!(again, JobError::GiveUp(_)), "{again:?}");
    let direct = api.tokens().get(SecretKind::App).await.unwrap_err();
    assert!(matches!(
        direct,
        TokenError::Configuration { errcode: 40001, .. }
    ));
    assert_eq!(emu.gettoken_calls(), 1, "no gettoken during the back-off");
    assert!(emu.received_messages().is_empty());
}

#[tokio::test]
async fn a_wrong_corp_id_is_a_configuration_error_until_the_backoff_ends() {
    let emu = emulator().await;
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let cache = TokenCache::new(
        "ww-some-other-corp",
        vec![(SecretKind::App, Secret::new(SECRET))],
        emu.base_url(),
        client(Duration::from_secs(5)),
        clock.clone(),
    );
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(SecretKind::App).await })
        })
        .collect();
    for caller in callers {
        let err = caller.await.unwrap().unwrap_err();
        assert!(matches!(
            err,
            TokenError::Configuration { errcode: 40013, .. }
        ));
        assert_no_secret(&format!("{err} {err:?}"));
    }
    assert_eq!(emu.gettoken_calls(), 1);
    clock.advance(Duration::from_secs(6 * 60));
    assert!(cache.get(SecretKind::App).await.is_err());
    assert_eq!(
        emu.gettoken_calls(),
        2,
        "one new attempt after the back-off"
    );
}

#[tokio::test]
async fn an_unconfigured_secret_kind_gives_up_without_calling_wecom() {
    let emu = emulator().await;
    let api = api_with(&emu, SECRET, Duration::from_secs(5));
    let err = api
        .call_json(
            SecretKind::Dial,
            "/cgi-bin/dial/get_dial_record",
            &json!({}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::GiveUp(_)), "{err:?}");
    assert!(err.to_string().contains("wecom.dial_secret"));
    assert_eq!(emu.gettoken_calls(), 0);
}

#[tokio::test]
async fn rate_limits_delay_the_retry() {
    let emu = emulator().await;
    let api = api_with(&emu, SECRET, Duration::from_secs(5));
    for code in [45009, 45033] {
        emu.fail_next(SEND, 1, Failure::Errcode(code));
        let err = api
            .call_json(SecretKind::App, SEND, &card(0))
            .await
            .unwrap_err();
        match &err {
            JobError::RateLimited { retry_after, .. } => {
                assert_eq!(*retry_after, Some(Duration::from_secs(60)))
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert!(err.to_string().contains(&code.to_string()));
        assert_job_error_clean(&err);
    }
    assert_eq!(emu.gettoken_calls(), 1);
}

#[tokio::test]
async fn server_errors_and_system_busy_are_retried() {
    let emu = emulator().await;
    let api = api_with(&emu, SECRET, Duration::from_secs(5));
    emu.fail_next(SEND, 1, Failure::Http5xx);
    let err = api
        .call_json(SecretKind::App, SEND, &card(0))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Retry(_)), "{err:?}");
    assert_job_error_clean(&err);

    emu.fail_next(SEND, 1, Failure::Errcode(-1));
    let err = api
        .call_json(SecretKind::App, SEND, &card(1))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Retry(_)), "{err:?}");

    // gettoken itself failing is passing too, and the secret stays out of the message.
    let cold = api_with(&emu, SECRET, Duration::from_secs(5));
    emu.fail_next("/cgi-bin/gettoken", 1, Failure::Http5xx);
    let err = cold
        .call_json(SecretKind::App, SEND, &card(2))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Retry(_)), "{err:?}");
    assert_job_error_clean(&err);
    cold.call_json(SecretKind::App, SEND, &card(3))
        .await
        .unwrap();
    assert_eq!(emu.received_messages(), vec![card(3)]);
}

#[tokio::test]
async fn timeouts_are_retried_without_showing_the_url() {
    let emu = emulator().await;
    emu.set_timeout_delay(Duration::from_secs(5));
    let api = api_with(&emu, SECRET, Duration::from_millis(300));
    let token = api.tokens().get(SecretKind::App).await.unwrap();

    emu.fail_next(SEND, 1, Failure::Timeout);
    let err = api
        .call_json(SecretKind::App, SEND, &card(0))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Retry(_)), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(!err.to_string().contains(token.expose()), "{err}");
    assert_job_error_clean(&err);

    let cold = api_with(&emu, SECRET, Duration::from_millis(300));
    emu.fail_next("/cgi-bin/gettoken", 1, Failure::Timeout);
    let err = cold
        .call_json(SecretKind::App, SEND, &card(1))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Retry(_)), "{err:?}");
    assert_job_error_clean(&err);
}

#[tokio::test]
async fn other_errcodes_give_up_with_the_code_and_message() {
    let emu = emulator().await;
    let api = api_with(&emu, SECRET, Duration::from_secs(5));
    emu.fail_next(SEND, 1, Failure::Errcode(81013));
    let err = api
        .call_json(SecretKind::App, SEND, &card(0))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::GiveUp(_)), "{err:?}");
    assert!(err.to_string().contains("81013"), "{err}");
    assert_job_error_clean(&err);

    emu.fail_next(SEND, 1, Failure::Errcode(40001));
    let err = api
        .call_json(SecretKind::App, SEND, &card(1))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::GiveUp(_)), "{err:?}");
    assert_job_error_clean(&err);
}

/// Two replicas on PostgreSQL share one token: a burst spread over both makes one
/// `gettoken` call, and a token refused on one replica is refreshed once for both. (On
/// SQLite a deployment is one process and the in-process single flight is the whole story,
/// tested above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_postgres_share_one_token_refresh() {
    if !crate::helpers::on_postgres() {
        return;
    }
    let app = crate::helpers::spawn_app().await;
    let emu = emulator().await;
    let replica = || {
        cache_with(&emu, SECRET, Arc::new(SystemClock))
            .shared_through(app.db.clone(), app.cipher.clone())
    };
    let (a, b) = (replica(), replica());
    let mut calls = Vec::new();
    for i in 0..100 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(
            async move { cache.get(SecretKind::App).await },
        ));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for c in calls {
        tokens.insert(c.await.unwrap().unwrap().expose().to_string());
    }
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    assert_eq!(emu.gettoken_calls(), 1, "one gettoken across both replicas");
    let stored: (String,) = sqlx::query_as("SELECT token_enc FROM platform_tokens")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let first = tokens.into_iter().next().unwrap();
    assert!(!stored.0.contains(&first), "stored encrypted");

    // WeCom refuses the token on replica A: one refresh, and B picks the new one up
    // when it sees its own copy refused.
    let old = a.get(SecretKind::App).await.unwrap();
    emu.expire_tokens();
    a.invalidate(SecretKind::App, &old);
    let new_a = a.get(SecretKind::App).await.unwrap();
    assert_ne!(new_a.expose(), old.expose());
    b.invalidate(SecretKind::App, &old);
    let new_b = b.get(SecretKind::App).await.unwrap();
    assert_eq!(new_b.expose(), new_a.expose());
    assert_eq!(emu.gettoken_calls(), 2);
}
