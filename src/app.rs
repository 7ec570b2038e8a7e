//! Builds the application from configuration and serves it until a shutdown future ends.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::access_log::{self, AccessLog};
use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::config::{Backend, Config, ConfigError};
use crate::db::Db;
use crate::directory::orgs;
use crate::http::{self, AppState};
use crate::inbox::InboxWriter;
use crate::jobs::schedule::{self, Every, Misfire, ScheduleSpec};
use crate::jobs::worker::default_owner;
use crate::jobs::{cleanup, Registry, Worker, WorkerConfig};
use crate::platform::crypto::EncodingAesKey;
use crate::platform::wecom::api::WecomApi;
use crate::platform::wecom::dial;
use crate::security::{load_or_create_key_file, Cipher, DataKey};
use crate::tracking::{Deliveries, Ledger, LedgerHooks};
use crate::webhooks;

pub struct App {
    pub state: AppState,
    /// The job worker of this process (stepped by tests, looped by `serve`).
    pub worker: Worker,
    ledger_task: JoinHandle<()>,
    inbox_task: JoinHandle<()>,
    access_log_task: Option<JoinHandle<()>>,
}

impl App {
    /// Connects, migrates, loads the data key, makes sure the deployment's organisation
    /// exists and starts the ledger writer.
    pub async fn build(config: Config, clock: SharedClock) -> anyhow::Result<App> {
        let db = Db::connect(&config.database_url).await?;
        db.migrate().await?;
        let cipher = load_cipher(&config)?;
        let blobs = crate::storage::BlobStore::from_config(&config.storage, cipher.clone())?;
        for name in crate::personal_data::migrate(&db, &cipher, &blobs, clock.now_ms()).await? {
            tracing::info!(migration = name, "data migration applied");
        }
        let tz = config.org_timezone()?;
        let org = orgs::ensure_default(&db, clock.now_ms(), tz)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the default organisation: {e}"))?;
        let rules = crate::rules::Rules::new(db.clone());
        let calendar = Arc::new(work_calendar(&config)?);
        crate::cards::templates::install(card_templates(&config)?);
        let hooks: Arc<dyn LedgerHooks> = Arc::new(RuleHooks {
            cipher: cipher.clone(),
        });
        crate::tracking::hooks::install(hooks.clone());
        let (ledger, ledger_task) = Ledger::start(
            db.clone(),
            clock.clone(),
            rules.clone(),
            cipher.clone(),
            hooks,
        );
        let (inbox, inbox_task) = InboxWriter::start(db.clone(), clock.clone());
        let (access_log, access_log_task) = if config.access_log {
            let (log, task) = AccessLog::start(db.clone(), clock.clone(), Default::default());
            (log, Some(task))
        } else {
            (AccessLog::disabled(), None)
        };
        let client = http_client(&config)?;
        // One API client per platform: its token cache (and single-flight refresh) is
        // shared by every job kind and the sign-in endpoints.
        let wecom_api = config.wecom.as_ref().map(|w| {
            WecomApi::from_config(w, client.clone(), clock.clone())
                .shared_through(db.clone(), cipher.clone())
        });
        let dingtalk_api = config.dingtalk.as_ref().map(|d| {
            crate::platform::dingtalk::api::DingtalkApi::from_config(
                d,
                client.clone(),
                clock.clone(),
            )
        });
        let feishu_api = config.feishu.as_ref().map(|f| {
            crate::platform::feishu::token::FeishuApi::from_config(f, client.clone(), clock.clone())
        });
        let worker = build_worker(
            &db,
            &clock,
            &cipher,
            &config,
            &org,
            PlatformApis {
                wecom: wecom_api.clone(),
                dingtalk: dingtalk_api.clone(),
                feishu: feishu_api.clone(),
            },
            &rules,
            &inbox,
        )
        .await?;
        let wecom = match &config.wecom {
            Some(w) => Some(Arc::new(
                crate::platform::wecom::inbound::WecomInbound::from_config(w, &org.id)?,
            )),
            None => None,
        };
        let wecom_web = match (&config.wecom, &wecom_api) {
            (Some(w), Some(api)) => Some(Arc::new(crate::platform::wecom::jsapi::WecomWeb {
                api: api.clone(),
                tickets: crate::platform::wecom::jsapi::Tickets::new(api.clone(), clock.clone()),
                corp_id: w.corp_id.clone(),
                agent_id: w.agent_id.clone(),
                oauth_base: w.oauth_base.clone(),
            })),
            _ => None,
        };
        let feishu = match &config.feishu {
            Some(f) => Some(Arc::new(
                crate::platform::feishu::inbound::FeishuInbound::from_config(f, &org.id)?,
            )),
            None => None,
        };
        let dingtalk = match &config.dingtalk {
            Some(d) => Some(Arc::new(
                crate::platform::dingtalk::inbound::DingtalkInbound::from_config(d, &org.id)?,
            )),
            None => None,
        };
        let dingtalk_web = config.dingtalk.as_ref().zip(dingtalk_api).map(|(d, api)| {
            Arc::new(crate::http::pages::dingtalk::DingtalkWeb::new(
                api,
                clock.clone(),
                d.corp_id.clone().unwrap_or_default(),
                d.agent_id.clone().unwrap_or_default(),
            ))
        });
        let feishu_web = config.feishu.as_ref().zip(feishu_api).map(|(f, api)| {
            Arc::new(crate::http::pages::feishu::FeishuWeb::from_config(
                f,
                api,
                client.clone(),
                clock.clone(),
            ))
        });
        let state = AppState {
            wecom,
            dingtalk,
            dingtalk_web,
            feishu,
            feishu_web,
            wecom_web,
            db,
            config: Arc::new(config),
            clock,
            cipher,
            ledger,
            inbox,
            access_log,
            default_org: Arc::new(org),
            metrics: crate::telemetry::metrics_handle(),
            rules,
            blobs,
            calendar,
            dev_sign_in: false,
        };
        Ok(App {
            state,
            worker,
            ledger_task,
            inbox_task,
            access_log_task,
        })
    }

    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish, drains the
    /// ledger queue, writes the queued access log entries and closes the database.
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            state,
            worker,
            ledger_task,
            inbox_task,
            access_log_task,
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker_task = state
            .config
            .jobs
            .worker
            .then(|| tokio::spawn(worker.run(stop_rx.clone())));
        let metrics_task = metrics_listener.map(|l| {
            let router = http::metrics_router(state.clone());
            let limits = state.config.http.clone();
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                http::serve::serve(l, router, &limits, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            })
        });
        let router = http::router(state.clone());
        let db = state.db.clone();
        let access_log = state.access_log.clone();
        let limits = state.config.http.clone();
        drop(state);
        tracing::info!(addr = %listener.local_addr()?, "closeloop listening");
        http::serve::serve(listener, router, &limits, {
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                // The worker stops claiming while the last requests finish.
                let _ = stop_tx.send(true);
            }
        })
        .await;
        let _ = stop_tx.send(true);
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        if let Some(t) = worker_task {
            let _ = t.await;
        }
        // Every request handle is gone now, so the writer sees its queue close once it
        // has written what was queued.
        let _ = ledger_task.await;
        let _ = inbox_task.await;
        // Closed explicitly: a handle may outlive the router (a test's).
        access_log.close().await;
        if let Some(t) = access_log_task {
            let _ = t.await;
        }
        db.close().await;
        tracing::info!("closeloop stopped");
        Ok(())
    }
}

/// One outbound request ends a second before its job's run would time out.
/// The checks of a configuration that need the capabilities' own knowledge (the work
/// calendar, the card templates and names, the platforms' key formats); `Config` checks the
/// rest itself when it is read. Every command that reads a configuration runs both.
pub fn check_config(config: &Config) -> Result<(), ConfigError> {
    work_calendar(config)?;
    card_templates(config)?;
    if let Some(w) = &config.wecom {
        EncodingAesKey::parse(w.encoding_aes_key.expose())
            .map_err(|e| ConfigError::new("wecom.encoding_aes_key", e.to_string()))?;
    }
    if let Some(d) = &config.dingtalk {
        EncodingAesKey::parse(d.aes_key.expose())
            .map_err(|e| ConfigError::new("dingtalk.aes_key", e.to_string()))?;
        let known: Vec<&str> = crate::cards::templates::SPECS
            .iter()
            .map(|s| s.name)
            .collect();
        if let Some(card) = d
            .card_templates
            .keys()
            .find(|c| !known.contains(&c.as_str()))
        {
            return Err(ConfigError::new(
                "dingtalk.card_templates",
                format!("no card is called `{card}` (known: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Reads the configuration file and checks all of it ([`check_config`]).
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    check_config(&config)?;
    Ok(config)
}

/// The checked card templates (embedded, with the admin's overrides).
pub fn card_templates(config: &Config) -> Result<crate::cards::templates::Templates, ConfigError> {
    crate::cards::templates::Templates::load(config.cards.override_dir.as_deref())
        .map_err(|m| ConfigError::new("cards.override_dir", m))
}

/// The checked work calendar in the organisation's zone.
pub fn work_calendar(
    config: &Config,
) -> Result<crate::collab::calendar::WorkCalendar, ConfigError> {
    crate::collab::calendar::WorkCalendar::new(&config.calendar, config.org_timezone()?).map_err(
        |m| {
            let key = m
                .strip_prefix('`')
                .and_then(|r| r.split_once('`'))
                .map_or("calendar".to_string(), |(k, _)| format!("calendar.{k}"));
            ConfigError::new(key, m)
        },
    )
}

fn delivery_timeout(config: &Config) -> std::time::Duration {
    config
        .jobs
        .timeout
        .saturating_sub(std::time::Duration::from_secs(1))
        .max(std::time::Duration::from_secs(1))
}

/// The outbound HTTP client shared by every platform adapter (webhook deliveries have
/// their own, see `webhooks::destination`).
pub(crate) fn http_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(delivery_timeout(config))
        .user_agent(concat!("closeloop/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")
}

/// Each platform's one API client (cheap handles on a shared token cache and back-off),
/// used by the worker's jobs and by the sign-in endpoints alike.
struct PlatformApis {
    wecom: Option<WecomApi>,
    dingtalk: Option<crate::platform::dingtalk::api::DingtalkApi>,
    feishu: Option<crate::platform::feishu::token::FeishuApi>,
}

#[allow(clippy::too_many_arguments)]
async fn build_worker(
    db: &Db,
    clock: &SharedClock,
    cipher: &Cipher,
    config: &Config,
    org: &orgs::Org,
    apis: PlatformApis,
    rules: &crate::rules::Rules,
    inbox: &InboxWriter,
) -> anyhow::Result<Worker> {
    let PlatformApis {
        wecom: wecom_api,
        dingtalk: dingtalk_api,
        feishu: feishu_api,
    } = apis;
    let mut registry = Registry::new();
    registry.register(
        crate::collab::requests::SLA_JOB,
        crate::collab::sla::SlaClock {
            clock: clock.clone(),
            cipher: cipher.clone(),
        },
    );
    registry.register(
        crate::collab::requests::ACK_JOB,
        crate::collab::sla::AckClock {
            clock: clock.clone(),
            cipher: cipher.clone(),
        },
    );
    {
        use crate::collab::health;
        registry.register(
            health::KIND,
            health::Weekly {
                clock: clock.clone(),
                cipher: cipher.clone(),
                org_id: org.id.clone(),
                tz: org.timezone,
                public_url: config.public_url.clone(),
            },
        );
        schedule::upsert(
            db,
            clock.now_ms(),
            &ScheduleSpec {
                id: format!("{}:{}", health::KIND, org.id),
                org_id: Some(org.id.clone()),
                kind: health::KIND.into(),
                payload: serde_json::json!({}),
                every: Every::Cron(health::CRON.into()),
                timezone: org.timezone,
                misfire: Misfire::Once,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot register the weekly collaboration report: {e}"))?;
    }
    {
        use crate::audit_anchor as anchor;
        registry.register(
            anchor::SEAL_KIND,
            anchor::Seal {
                clock: clock.clone(),
                org_id: org.id.clone(),
            },
        );
        registry.register(
            anchor::ANCHOR_KIND,
            anchor::Anchor {
                clock: clock.clone(),
                cipher: cipher.clone(),
                org_id: org.id.clone(),
                tz: org.timezone,
                webhook: config.audit.anchor_webhook.is_some(),
            },
        );
        if let (Some(url), Some(secret)) = (
            &config.audit.anchor_webhook,
            &config.audit.anchor_webhook_secret,
        ) {
            registry.register(
                anchor::DELIVER_KIND,
                anchor::DeliverAnchor {
                    clock: clock.clone(),
                    url: reqwest::Url::parse(url)?,
                    secret: secret.expose().to_string(),
                    destinations: webhooks::destination::Destinations::new(
                        &config.webhooks,
                        delivery_timeout(config),
                    )?,
                },
            );
        }
        for (kind, every) in [
            (anchor::SEAL_KIND, Every::Interval(anchor::SEAL_EVERY)),
            (anchor::ANCHOR_KIND, Every::Cron(anchor::ANCHOR_CRON.into())),
        ] {
            schedule::upsert(
                db,
                clock.now_ms(),
                &ScheduleSpec {
                    id: format!("{kind}:{}", org.id),
                    org_id: Some(org.id.clone()),
                    kind: kind.into(),
                    payload: serde_json::json!({}),
                    every,
                    timezone: org.timezone,
                    misfire: Misfire::Once,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot register the audit schedule {kind}: {e}"))?;
        }
    }
    registry.register(
        crate::verification::claims::SETTLE,
        crate::verification::claims::Settle {
            rules: rules.clone(),
            clock: clock.clone(),
        },
    );
    registry.register(
        webhooks::KIND,
        webhooks::Deliver {
            db: db.clone(),
            clock: clock.clone(),
            cipher: cipher.clone(),
            destinations: webhooks::destination::Destinations::new(
                &config.webhooks,
                delivery_timeout(config),
            )?,
        },
    );
    registry.register(
        cleanup::KIND,
        cleanup::Cleanup {
            db: db.clone(),
            clock: clock.clone(),
        },
    );
    let mut directories: std::collections::HashMap<Platform, Arc<dyn crate::chat::Directory>> =
        std::collections::HashMap::new();
    if let Some(api) = &wecom_api {
        directories.insert(Platform::Wecom, Arc::new(api.clone()));
    }
    if let Some(api) = &dingtalk_api {
        directories.insert(Platform::Dingtalk, Arc::new(api.clone()));
    }
    if let Some(api) = &feishu_api {
        directories.insert(
            Platform::Feishu,
            Arc::new(crate::platform::feishu::contacts::FeishuDirectory { api: api.clone() }),
        );
    }
    // Meeting records: DingTalk conferences and Feishu VC meetings are read when the
    // platform reports one ended (the admin subscribes the app to 视频会议状态变更 /
    // vc.meeting.meeting_ended_v1), and also polled when `poll_meetings` is switched on.
    {
        use crate::platform::{dingtalk::conference, feishu::vc};
        let mut polls = Vec::new();
        if let Some(api) = &dingtalk_api {
            registry.register(
                conference::FETCH_KIND,
                conference::ConferenceFetch {
                    api: api.clone(),
                    db: db.clone(),
                    clock: clock.clone(),
                    org_id: org.id.clone(),
                    rules: rules.clone(),
                },
            );
            if config.dingtalk.as_ref().is_some_and(|d| d.poll_meetings) {
                registry.register(
                    conference::POLL_KIND,
                    conference::ConferencePoll {
                        api: api.clone(),
                        clock: clock.clone(),
                        org_id: org.id.clone(),
                    },
                );
                polls.push((conference::POLL_KIND, conference::EVERY));
            }
        }
        if let Some(api) = &feishu_api {
            registry.register(
                vc::FETCH_KIND,
                vc::MeetingFetch {
                    api: api.clone(),
                    db: db.clone(),
                    clock: clock.clone(),
                    org_id: org.id.clone(),
                    rules: rules.clone(),
                },
            );
            if config.feishu.as_ref().is_some_and(|f| f.poll_meetings) {
                registry.register(
                    vc::KIND,
                    vc::VcPoll {
                        api: api.clone(),
                        db: db.clone(),
                        clock: clock.clone(),
                        org_id: org.id.clone(),
                        rules: rules.clone(),
                    },
                );
                polls.push((vc::KIND, vc::EVERY));
            }
        }
        for (kind, every) in polls {
            schedule::upsert(
                db,
                clock.now_ms(),
                &ScheduleSpec {
                    id: format!("{kind}:{}", org.id),
                    org_id: Some(org.id.clone()),
                    kind: kind.into(),
                    payload: serde_json::json!({}),
                    every: Every::Interval(every),
                    timezone: org.timezone,
                    misfire: Misfire::Once,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot register the meeting-record poll {kind}: {e}"))?;
        }
    }
    if !directories.is_empty() {
        use crate::directory::sync;
        registry.register(
            sync::KIND,
            sync::SyncJob {
                db: db.clone(),
                clock: clock.clone(),
                org_id: org.id.clone(),
                directories: directories.iter().map(|(p, d)| (*p, d.clone())).collect(),
            },
        );
        nightly_and_at_start(db, clock, org, sync::KIND, "directory sync").await?;
    }
    if let Some(ldap) = &config.ldap {
        use crate::directory::ldap;
        registry.register(
            ldap::KIND,
            ldap::SyncJob {
                db: db.clone(),
                clock: clock.clone(),
                org_id: org.id.clone(),
                config: ldap.clone(),
            },
        );
        nightly_and_at_start(db, clock, org, ldap::KIND, "LDAP directory sync").await?;
    }
    // Card purposes and inbox event kinds are registered by the capabilities that handle
    // them: neither cards nor the inbox knows a capability.
    let mut purposes = crate::cards::Purposes::default();
    purposes.register(
        crate::collab::requests::CARD_PURPOSE,
        Arc::new(crate::collab::requests::CardClicks {
            cipher: cipher.clone(),
        }),
    );
    purposes.register(
        crate::antifraud::FREEZE_CARD,
        Arc::new(crate::antifraud::FreezeCardClicks {
            cipher: cipher.clone(),
        }),
    );
    purposes.register(
        crate::verification::attest::PURPOSE,
        Arc::new(crate::verification::attest::CardClicks {
            cipher: cipher.clone(),
        }),
    );
    purposes.register(
        crate::approvals::requests::REQUEST_CARD,
        Arc::new(crate::approvals::requests::RequestCardClicks {
            cipher: cipher.clone(),
            rules: rules.clone(),
        }),
    );
    purposes.register(
        crate::approvals::requests::PAUSE_CARD,
        Arc::new(crate::approvals::requests::PauseCardClicks),
    );
    let mut handlers = crate::inbox::Handlers::default();
    handlers.register(
        "card_action",
        Arc::new(crate::cards::CardClicks {
            cipher: cipher.clone(),
            purposes,
        }),
    );
    let contacts = Arc::new(crate::customers::events::ContactEvents {
        cipher: cipher.clone(),
        directories: directories.clone(),
    });
    handlers.register("external_contact_added", contacts.clone());
    handlers.register("external_contact_removed", contacts);
    let members = Arc::new(crate::directory::sync::MemberEvents { directories });
    for kind in [
        "user_created",
        "user_updated",
        "user_deleted",
        "directory_changed",
    ] {
        handlers.register(kind, members.clone());
    }
    handlers.register("meeting_changed", Arc::new(crate::platform::MeetingEvents));
    inbox.set_handled(handlers.kinds());
    registry.register(
        crate::inbox::PROCESS,
        crate::inbox::Process {
            db: db.clone(),
            cipher: cipher.clone(),
            clock: clock.clone(),
            parsers: crate::platform::parsers(),
            handlers,
        },
    );
    if let (Some(wecom), Some(api)) = (&config.wecom, &wecom_api) {
        registry.register(
            crate::collab::calendar_feed::PUSH,
            crate::platform::wecom::schedule::PushSchedule {
                api: api.clone(),
                db: db.clone(),
                clock: clock.clone(),
                agent_id: wecom.agent_id.parse().context("wecom.agent_id")?,
                tz: org.timezone,
            },
        );
    } else {
        registry.register(
            crate::collab::calendar_feed::PUSH,
            crate::collab::calendar_feed::NoPlatformCalendar,
        );
    }
    // Cards go out on the platforms configured, each person on one they are on.
    let mut deliver: Vec<(Platform, Arc<dyn crate::jobs::Handler>)> = Vec::new();
    let mut update: Vec<(Platform, Arc<dyn crate::jobs::Handler>)> = Vec::new();
    if let (Some(wecom), Some(api)) = (&config.wecom, &wecom_api) {
        let agent_id: i64 = wecom.agent_id.parse().context("wecom.agent_id")?;
        update.push((
            Platform::Wecom,
            Arc::new(crate::platform::wecom::cards::UpdateCard {
                api: api.clone(),
                db: db.clone(),
                cipher: cipher.clone(),
                clock: clock.clone(),
                agent_id,
            }),
        ));
        deliver.push((
            Platform::Wecom,
            Arc::new(crate::platform::wecom::cards::DeliverCard {
                api: api.clone(),
                db: db.clone(),
                cipher: cipher.clone(),
                clock: clock.clone(),
                agent_id,
                public_url: config.public_url.clone(),
            }),
        ));
    }
    if let Some(api) = feishu_api {
        update.push((
            Platform::Feishu,
            Arc::new(crate::platform::feishu::cards::UpdateCard {
                api: api.clone(),
                db: db.clone(),
                cipher: cipher.clone(),
                clock: clock.clone(),
            }),
        ));
        deliver.push((
            Platform::Feishu,
            Arc::new(crate::platform::feishu::cards::DeliverCard {
                api,
                db: db.clone(),
                cipher: cipher.clone(),
                clock: clock.clone(),
                public_url: config.public_url.clone(),
            }),
        ));
    }
    if let (Some(d), Some(api)) = (&config.dingtalk, dingtalk_api) {
        update.push((
            Platform::Dingtalk,
            Arc::new(crate::platform::dingtalk::cards::UpdateCard {
                api: api.clone(),
                db: db.clone(),
                cipher: cipher.clone(),
                clock: clock.clone(),
            }),
        ));
        deliver.push((
            Platform::Dingtalk,
            Arc::new(crate::platform::dingtalk::cards::DeliverCard {
                api,
                db: db.clone(),
                cipher: cipher.clone(),
                clock: clock.clone(),
                template_id: d.card_template_id.clone(),
                templates: d.card_templates.clone(),
                robot_code: d.robot_code.clone().unwrap_or_else(|| d.app_key.clone()),
            }),
        ));
    }
    if !deliver.is_empty() {
        registry.register(
            crate::cards::DELIVER,
            crate::cards::route::ByPlatform {
                db: db.clone(),
                channels: deliver,
                by_card: false,
                undelivered: Some(Arc::new(crate::collab::requests::Undelivered {
                    cipher: cipher.clone(),
                })),
            },
        );
        registry.register(
            crate::cards::UPDATE,
            crate::cards::route::ByPlatform {
                db: db.clone(),
                channels: update,
                by_card: true,
                undelivered: None,
            },
        );
    }
    let dial = config
        .wecom
        .as_ref()
        .is_some_and(|w| w.dial_secret.is_some());
    if let Some(api) = wecom_api.as_ref().filter(|_| dial) {
        registry.register(
            dial::KIND,
            dial::DialPoll {
                api: api.clone(),
                db: db.clone(),
                cipher: cipher.clone(),
                clock: clock.clone(),
                org_id: org.id.clone(),
                rules: rules.clone(),
            },
        );
        schedule::upsert(
            db,
            clock.now_ms(),
            &ScheduleSpec {
                id: format!("{}:{}", dial::KIND, org.id),
                org_id: Some(org.id.clone()),
                kind: dial::KIND.into(),
                payload: serde_json::json!({}),
                every: Every::Interval(dial::EVERY),
                timezone: org.timezone,
                misfire: Misfire::Once,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot register the call-record poll: {e}"))?;
    }
    // Credibility: every Monday 08:00 (org zone), last week's ratios per rep.
    {
        use crate::credibility;
        registry.register(
            credibility::KIND,
            credibility::Weekly {
                rules: rules.clone(),
                clock: clock.clone(),
                cipher: cipher.clone(),
            },
        );
        schedule::upsert(
            db,
            clock.now_ms(),
            &ScheduleSpec {
                id: format!("{}:{}", credibility::KIND, org.id),
                org_id: Some(org.id.clone()),
                kind: credibility::KIND.into(),
                payload: serde_json::json!({}),
                every: Every::Cron(credibility::CRON.into()),
                timezone: org.timezone,
                misfire: Misfire::Once,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot register the weekly credibility job: {e}"))?;
    }
    registry.register(
        access_log::retention::KIND,
        access_log::retention::Prune {
            db: db.clone(),
            clock: clock.clone(),
            keep: config.access_log_retention,
        },
    );
    schedule::upsert(
        db,
        clock.now_ms(),
        &ScheduleSpec {
            id: access_log::retention::KIND.into(),
            org_id: None,
            kind: access_log::retention::KIND.into(),
            payload: serde_json::json!({}),
            every: Every::Cron(access_log::retention::CRON.into()),
            timezone: org.timezone,
            misfire: Misfire::Once,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot register the access log retention: {e}"))?;
    schedule::upsert(
        db,
        clock.now_ms(),
        &ScheduleSpec {
            id: "jobs.cleanup".into(),
            org_id: None,
            kind: cleanup::KIND.into(),
            payload: serde_json::json!({}),
            every: Every::Cron("30 3 * * *".into()),
            timezone: org.timezone,
            misfire: Misfire::Once,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot register the cleanup schedule: {e}"))?;
    let jc = &config.jobs;
    Ok(Worker::new(
        db.clone(),
        clock.clone(),
        registry,
        WorkerConfig {
            concurrency: jc.concurrency,
            lease: jc.lease,
            timeout: jc.timeout,
            poll_interval: jc.poll_interval,
            owner: default_owner(),
        },
    ))
}

/// The data key: configured, or (SQLite only) generated into an owner-only file next to
/// the database on first start.
pub(crate) fn load_cipher(config: &Config) -> anyhow::Result<Cipher> {
    let old = config
        .security
        .old_data_keys
        .iter()
        .map(|k| DataKey::from_base64(k.expose()))
        .collect::<Result<Vec<_>, _>>()
        .context("security.old_data_keys")?;
    let active = match &config.security.data_key {
        Some(k) => DataKey::from_base64(k.expose()).context("security.data_key")?,
        None => {
            anyhow::ensure!(
                config.backend() == Backend::Sqlite,
                "security.data_key is required with PostgreSQL"
            );
            match sqlite_key_file(&config.database_url) {
                Some(path) => {
                    let (key, created) = load_or_create_key_file(&path)?;
                    if created {
                        tracing::warn!(
                            path = %path.display(),
                            key_id = key.id(),
                            "no security.data_key configured: generated a new data key into an owner-only file; \
                             back it up, data encrypted under it is unreadable without it"
                        );
                    } else {
                        tracing::info!(path = %path.display(), key_id = key.id(), "data key loaded from file");
                    }
                    key
                }
                None => {
                    tracing::warn!(
                        "in-memory database without security.data_key: using a throw-away data key"
                    );
                    DataKey::generate()
                }
            }
        }
    };
    Ok(Cipher::new(active, old))
}

/// `sqlite://dir/closeloop.db?mode=rwc` → `dir/closeloop.db.key`; None for in-memory.
/// A directory sync job `kind` every night at 02:00 (organisation zone) and once at start:
/// replicas starting together (or restarts within the hour) share that one.
async fn nightly_and_at_start(
    db: &Db,
    clock: &SharedClock,
    org: &orgs::Org,
    kind: &str,
    what: &str,
) -> anyhow::Result<()> {
    schedule::upsert(
        db,
        clock.now_ms(),
        &ScheduleSpec {
            id: format!("{kind}:{}", org.id),
            org_id: Some(org.id.clone()),
            kind: kind.into(),
            payload: serde_json::json!({}),
            every: Every::Cron("0 2 * * *".into()),
            timezone: org.timezone,
            misfire: Misfire::Once,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot register the {what}: {e}"))?;
    let now = clock.now_ms();
    crate::jobs::enqueue_now(
        db,
        now,
        crate::jobs::NewJob::new(kind, serde_json::json!({}))
            .org(org.id.clone())
            .dedupe(format!("{kind}:start:{}", now / 3_600_000)),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot queue the start-up {what}: {e}"))?;
    Ok(())
}

fn sqlite_key_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(PathBuf::from(format!("{path}.key")))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// The rules and subscribers the ledger writer calls around each point: anti-fraud
/// screens guarded actions and acts on its hits, a claimed call opens its verification,
/// and every written point is offered to the webhook subscribers. `cipher` seals the cards
/// a freeze sends.
struct RuleHooks {
    cipher: Cipher,
}

/// One transaction's webhook deliveries (the subscriber list looked up once per batch).
struct WebhookDeliveries(webhooks::Subscribers);

impl Deliveries for WebhookDeliveries {
    fn enqueue<'a>(
        &'a mut self,
        tx: &'a mut crate::db::Tx,
        at: i64,
        org_id: &'a str,
        point: &'a crate::tracking::TrackingPoint,
    ) -> crate::jobs::BoxFuture<'a, crate::Result<()>> {
        Box::pin(self.0.enqueue_point(tx, at, org_id, point))
    }
}

impl LedgerHooks for RuleHooks {
    fn screen<'a>(
        &'a self,
        tx: &'a mut crate::db::Tx,
        rules: &'a crate::rules::RuleSet,
        p: &'a crate::tracking::NewPoint,
        at: i64,
    ) -> crate::jobs::BoxFuture<'a, crate::Result<crate::antifraud::Screen>> {
        Box::pin(crate::antifraud::screen(tx, rules, p, at))
    }

    fn refused<'a>(
        &'a self,
        tx: &'a mut crate::db::Tx,
        at: i64,
        p: &'a crate::tracking::NewPoint,
        refusal: &'a crate::antifraud::Refusal,
        hit: &'a crate::tracking::TrackingPoint,
    ) -> crate::jobs::BoxFuture<'a, crate::Result<()>> {
        Box::pin(async move {
            if refusal.freeze {
                crate::antifraud::freeze(tx, &self.cipher, at, p, refusal, &hit.id).await?;
            }
            Ok(())
        })
    }

    fn burst<'a>(
        &'a self,
        tx: &'a mut crate::db::Tx,
        cipher: &'a Cipher,
        at: i64,
        p: &'a crate::tracking::NewPoint,
        count: i64,
        flag: &'a crate::tracking::TrackingPoint,
    ) -> crate::jobs::BoxFuture<'a, crate::Result<()>> {
        Box::pin(crate::antifraud::alert_burst(
            tx, cipher, at, p, count, &flag.id,
        ))
    }

    fn claimed<'a>(
        &'a self,
        tx: &'a mut crate::db::Tx,
        rules: &'a crate::rules::RuleSet,
        point: &'a crate::tracking::TrackingPoint,
        claim: crate::rules::Claim,
        at: i64,
    ) -> crate::jobs::BoxFuture<'a, crate::Result<String>> {
        Box::pin(async move {
            let status = crate::verification::claims::open(tx, rules, point, claim, at).await?;
            Ok(status.as_str().to_string())
        })
    }

    fn deliveries(&self) -> Box<dyn Deliveries> {
        Box::new(WebhookDeliveries(webhooks::Subscribers::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dingtalk_card_templates_must_name_known_cards() {
        let base = "[dingtalk]\napp_key = \"k\"\napp_secret = \"s\"\ntoken = \"t\"\n\
                    aes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n";
        let ok = Config::from_toml_only(&format!(
            "{base}card_templates = {{ \"collab.request\" = \"tpl-req.schema\" }}\n"
        ))
        .unwrap();
        check_config(&ok).unwrap();
        let bad = Config::from_toml_only(&format!(
            "{base}card_templates = {{ \"collab.requests\" = \"tpl.schema\" }}\n"
        ))
        .unwrap();
        let e = check_config(&bad).unwrap_err();
        assert_eq!(e.key, "dingtalk.card_templates");
        assert!(e.problem.contains("collab.requests"), "{}", e.problem);
    }

    #[test]
    fn a_broken_card_template_override_stops_start_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("collab.request.toml"),
            "title = \"{oops}\"\n",
        )
        .unwrap();
        let toml = format!("[cards]\noverride_dir = \"{}\"\n", dir.path().display());
        let e = check_config(&Config::from_toml_only(&toml).unwrap()).unwrap_err();
        assert_eq!(e.key, "cards.override_dir");
        assert!(e.problem.contains("collab.request"), "{e}");
    }

    #[test]
    fn calendars_and_platform_keys_are_checked_with_their_keys_named() {
        let check = |toml: &str| check_config(&Config::from_toml_only(toml).unwrap()).unwrap_err();
        let e = check("[calendar]\nholidays = [\"2026-02-30\"]");
        assert_eq!(e.key, "calendar.holidays", "{e}");
        let e = check("[calendar]\nwork_hours = []");
        assert_eq!(e.key, "calendar", "{e}");
        let e = check(
            "[dingtalk]\napp_key = \"k\"\napp_secret = \"s\"\ntoken = \"t\"\naes_key = \"short\"\n",
        );
        assert_eq!(e.key, "dingtalk.aes_key", "{e}");
    }

    use super::sqlite_key_file;
    use std::path::PathBuf;

    #[test]
    fn key_file_sits_beside_the_database() {
        assert_eq!(
            sqlite_key_file("sqlite://closeloop.db"),
            Some(PathBuf::from("closeloop.db.key"))
        );
        assert_eq!(
            sqlite_key_file("sqlite:///var/lib/cl/x.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/cl/x.db.key"))
        );
        assert_eq!(sqlite_key_file("sqlite::memory:"), None);
    }
}
