//! Configuration: defaults → `closeloop.toml` → `CLOSELOOP_*` environment (`__` nests).
//!
//! Every value is validated once here; the rest of the program trusts `Config`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// Environment variables with the `CLOSELOOP_` prefix that are not configuration keys.
const NOT_KEYS: [&str; 2] = ["CONFIG", "TEST_POSTGRES_URL"];

/// A configured secret: never printed, serialised as `"[redacted]"`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(#[serde(deserialize_with = "secret_from_scalar")] SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// Environment values are parsed as TOML scalars, so a numeric secret arrives as a number.
fn secret_from_scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    Ok(SecretString::from(scalar_string(d)?))
}

fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
    })
}

fn opt_scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    scalar_string(d).map(Some)
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// How platforms and browsers reach this server (OAuth redirects, card links).
    pub public_url: String,
    pub database_url: String,
    /// Time zone of the deployment's own organisation.
    pub timezone: String,
    /// Peers whose `X-Forwarded-For` header is believed for the client IP.
    pub trusted_proxies: Vec<IpNet>,
    /// Optional private listener for `/metrics`; when unset `/metrics` is on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Connection limits of the HTTP listeners.
    pub http: HttpConfig,
    /// Record reads of customer-level objects in the access log.
    pub access_log: bool,
    /// How long access log entries are kept.
    #[serde(deserialize_with = "duration", serialize_with = "show_days")]
    pub access_log_retention: Duration,
    pub security: SecurityConfig,
    pub storage: StorageConfig,
    pub jobs: JobsConfig,
    /// Working days and hours for SLA clocks counted in business time.
    pub calendar: CalendarConfig,
    pub cards: CardsConfig,
    pub webhooks: WebhooksConfig,
    pub audit: AuditConfig,
    pub wecom: Option<WecomConfig>,
    pub dingtalk: Option<DingtalkConfig>,
    pub feishu: Option<FeishuConfig>,
    /// An LDAP / Active Directory server as a directory source (`closeloop directory sync
    /// --source ldap`).
    pub ldap: Option<LdapConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            database_url: "sqlite://closeloop.db".into(),
            timezone: "Asia/Shanghai".into(),
            trusted_proxies: Vec::new(),
            metrics_listen: None,
            max_body_bytes: 1024 * 1024,
            http: HttpConfig::default(),
            access_log: true,
            access_log_retention: Duration::from_secs(180 * 24 * 3600),
            security: SecurityConfig::default(),
            storage: StorageConfig::default(),
            jobs: JobsConfig::default(),
            calendar: Default::default(),
            cards: CardsConfig::default(),
            webhooks: WebhooksConfig::default(),
            audit: AuditConfig::default(),
            wecom: None,
            dingtalk: None,
            feishu: None,
            ldap: None,
        }
    }
}

/// How long a client may take and how many may be connected at once, per listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// From the first byte of a request (or the connection's opening) to the end of its
    /// headers; a client slower than this is disconnected.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub keep_alive_timeout: Duration,
    /// Connections served at once; further ones wait to be accepted until one closes.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Base64 AES-256 key encrypting sensitive fields at rest.
    pub data_key: Option<Secret>,
    /// Previous keys, kept to decrypt and look up data written before a rotation.
    pub old_data_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `local` (a folder) is the only kind so far.
    pub kind: String,
    pub path: PathBuf,
    /// Largest accepted upload (a proposal, a proof); other requests keep `max_body_bytes`.
    pub max_upload_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: "local".into(),
            path: PathBuf::from("blobs"),
            max_upload_bytes: 20 * 1024 * 1024,
        }
    }
}

/// A duration as `"5m"`, `"90s"`, `"0"`, or a bare number of seconds (environment values
/// arrive as numbers).
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = scalar_string(d)?;
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration such as \"5m\" or \"0\": {e}"
        ))
    })
}

pub(crate) fn show_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// A whole number of days as `"180d"` (humantime would say `"5months 27days 19h 12m"`).
fn show_days<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    match d.as_secs() {
        secs if secs % 86_400 == 0 && d.subsec_nanos() == 0 => {
            s.serialize_str(&format!("{}d", secs / 86_400))
        }
        _ => show_duration(d, s),
    }
}

/// Card templates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardsConfig {
    /// A folder of `<card>.toml` files replacing the embedded templates of the same name
    /// (wording and layout; actions stay as code defines them).
    pub override_dir: Option<PathBuf>,
}

/// The audit log's daily anchor: besides the card, optionally a signed POST of the chain
/// head to an address outside the database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `https://…` the daily anchor is POSTed to (as a durable job, with retries). A
    /// loopback or private receiver must be listed in `webhooks.allow_private`.
    pub anchor_webhook: Option<String>,
    /// The HMAC-SHA256 key of the POST's `X-Closeloop-Signature` (at least 16 characters;
    /// required with `anchor_webhook`).
    pub anchor_webhook_secret: Option<Secret>,
}

/// Outbound webhook deliveries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// `host:port` receivers that may be on loopback, private or other special addresses
    /// (everything else must be public).
    pub allow_private: Vec<String>,
}

impl WebhooksConfig {
    /// The `allow_private` entries as `(host, port)`, the host as the URL parser normalises
    /// it (`127.1` is `127.0.0.1`); an entry that is not exactly `host:port` is an error
    /// naming it.
    pub fn private_receivers(&self) -> Result<Vec<(String, u16)>, String> {
        let mut allowed = Vec::new();
        for entry in &self.allow_private {
            let url = reqwest::Url::parse(&format!("http://{}/", entry.trim()))
                .ok()
                .filter(|u| u.path() == "/" && u.username().is_empty() && u.password().is_none());
            match url.as_ref().and_then(|u| Some((u.host_str()?, u.port()?))) {
                Some((host, port)) => allowed.push((host.to_string(), port)),
                None => {
                    return Err(format!(
                        "`{entry}` is not host:port, e.g. \"10.0.0.5:8080\" or \"[fd00::5]:443\""
                    ))
                }
            }
        }
        Ok(allowed)
    }
}

/// The durable job worker of this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Run a worker in this process; `false` makes an API-only replica.
    pub worker: bool,
    /// Jobs run at once.
    pub concurrency: usize,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub poll_interval: Duration,
    /// How long a claimed job stays with its worker before another may take it.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub lease: Duration,
    /// Longest single run; must be shorter than `lease`.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub timeout: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            worker: true,
            concurrency: 8,
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(120),
            timeout: Duration::from_secs(60),
        }
    }
}

fn default_skew() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WecomConfig {
    #[serde(deserialize_with = "scalar_string")]
    pub corp_id: String,
    #[serde(deserialize_with = "scalar_string")]
    pub agent_id: String,
    /// The self-built app's secret.
    pub secret: Secret,
    /// 客户联系 secret.
    pub contact_secret: Option<Secret>,
    /// 公费电话 secret.
    pub dial_secret: Option<Secret>,
    pub token: Secret,
    pub encoding_aes_key: Secret,
    #[serde(default = "WecomConfig::default_api_base")]
    pub api_base: String,
    /// Where browsers are sent to sign in (OAuth2 authorize).
    #[serde(default = "WecomConfig::default_oauth_base")]
    pub oauth_base: String,
    /// The JS-SDK the sidebar page loads at run time (its origin is allowed by the page's
    /// Content-Security-Policy).
    #[serde(default = "WecomConfig::default_jssdk_url")]
    pub jssdk_url: String,
    #[serde(
        default = "default_skew",
        deserialize_with = "duration",
        serialize_with = "show_duration"
    )]
    pub max_clock_skew: Duration,
    /// The domain-verification file WeCom offers when the app's trusted domain (可信域名)
    /// is set, `WW_verify_….txt`; served at `/<its file name>` (docs/go-live-wecom.md).
    #[serde(default)]
    pub domain_verify_file: Option<PathBuf>,
}

impl WecomConfig {
    /// The name the domain-verification file is served under, when one is configured.
    pub fn domain_verify_name(&self) -> Option<&str> {
        self.domain_verify_file.as_deref()?.file_name()?.to_str()
    }

    fn default_api_base() -> String {
        "https://qyapi.weixin.qq.com".into()
    }
    fn default_oauth_base() -> String {
        "https://open.weixin.qq.com".into()
    }
    fn default_jssdk_url() -> String {
        "https://res.wx.qq.com/wwopen/js/jsapi/jweixin-1.0.0.js".into()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingtalkConfig {
    #[serde(deserialize_with = "scalar_string")]
    pub app_key: String,
    pub app_secret: Secret,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub agent_id: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub corp_id: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub robot_code: Option<String>,
    pub token: Secret,
    pub aes_key: Secret,
    pub card_callback_secret: Option<Secret>,
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub card_template_id: Option<String>,
    /// A card template of its own for some cards (card name → template id), e.g.
    /// `card_templates = { "collab.request" = "…schema" }`; the others use
    /// `card_template_id`.
    #[serde(default)]
    pub card_templates: std::collections::BTreeMap<String, String>,
    #[serde(default = "DingtalkConfig::default_api_base")]
    pub api_base: String,
    #[serde(default = "DingtalkConfig::default_oapi_base")]
    pub oapi_base: String,
    /// Poll video conferences as meeting records (needs `VideoConference.Conference.Read`).
    #[serde(default)]
    pub poll_meetings: bool,
    /// The JSAPI script the sidebar pages load inside DingTalk (its origin is allowed by
    /// the pages' Content-Security-Policy).
    #[serde(default = "DingtalkConfig::default_jsapi_url")]
    pub jsapi_url: String,
    #[serde(
        default = "default_skew",
        deserialize_with = "duration",
        serialize_with = "show_duration"
    )]
    pub max_clock_skew: Duration,
}

impl DingtalkConfig {
    fn default_api_base() -> String {
        "https://api.dingtalk.com".into()
    }
    fn default_oapi_base() -> String {
        "https://oapi.dingtalk.com".into()
    }
    /// The CDN address open.dingtalk.com's 客户端SDK介绍 page gives.
    fn default_jsapi_url() -> String {
        "https://g.alicdn.com/dingding/dingtalk-jsapi/3.1.0/dingtalk.open.js".into()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeishuConfig {
    #[serde(deserialize_with = "scalar_string")]
    pub app_id: String,
    pub app_secret: Secret,
    pub verification_token: Option<Secret>,
    pub encrypt_key: Option<Secret>,
    #[serde(default = "FeishuConfig::default_api_base")]
    pub api_base: String,
    #[serde(default = "FeishuConfig::default_accounts_base")]
    pub accounts_base: String,
    /// Poll ended VC meetings as meeting records (needs the VC meeting-data permission).
    #[serde(default)]
    pub poll_meetings: bool,
    /// The JSSDK (`window.h5sdk`) the sidebar pages load inside Feishu (its origin is
    /// allowed by the pages' Content-Security-Policy).
    #[serde(default = "FeishuConfig::default_h5sdk_url")]
    pub h5sdk_url: String,
    #[serde(
        default = "default_skew",
        deserialize_with = "duration",
        serialize_with = "show_duration"
    )]
    pub max_clock_skew: Duration,
}

impl FeishuConfig {
    fn default_api_base() -> String {
        "https://open.feishu.cn".into()
    }
    fn default_accounts_base() -> String {
        "https://accounts.feishu.cn".into()
    }
    /// The script open.feishu.cn's web-app (网页应用) introduction names.
    fn default_h5sdk_url() -> String {
        "https://lf1-cdn-tos.bytegoofy.com/goofy/lark/op/h5-js-sdk-1.5.23.js".into()
    }
}

/// An LDAP directory: people (with department and manager) under `base_dn` matching
/// `user_filter`, read with a simple bind over plain `ldap://`; `group_roles` maps group DNs
/// (as listed in a person's `memberOf`) to closeloop roles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port` (`ldaps://` and StartTLS are not supported yet).
    pub url: String,
    /// The account the sync binds as; without it the sync binds anonymously.
    #[serde(default)]
    pub bind_dn: Option<String>,
    #[serde(default)]
    pub bind_password: Option<Secret>,
    pub base_dn: String,
    #[serde(default = "LdapConfig::default_user_filter")]
    pub user_filter: String,
    /// The attribute holding a person's stable id (`uid`; `sAMAccountName` on AD).
    #[serde(default = "LdapConfig::default_id_attribute")]
    pub id_attribute: String,
    /// The display name: the first of these a person has (`displayName`, then `cn`).
    #[serde(default = "LdapConfig::default_name_attributes")]
    pub name_attributes: Vec<String>,
    /// The attribute naming the direct superior by DN.
    #[serde(default = "LdapConfig::default_manager_attribute")]
    pub manager_attribute: String,
    /// The department (`departmentNumber`, `ou`, or AD's `department`).
    #[serde(default = "LdapConfig::default_department_attribute")]
    pub department_attribute: String,
    /// The attribute listing the groups a person belongs to (OpenLDAP's memberof overlay
    /// and Active Directory both use `memberOf`).
    #[serde(default = "LdapConfig::default_groups_attribute")]
    pub groups_attribute: String,
    /// Group DN → the closeloop roles its members hold.
    #[serde(default)]
    pub group_roles: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(
        default = "LdapConfig::default_timeout",
        deserialize_with = "duration",
        serialize_with = "show_duration"
    )]
    pub timeout: Duration,
}

impl LdapConfig {
    fn default_user_filter() -> String {
        "(objectClass=inetOrgPerson)".into()
    }
    fn default_id_attribute() -> String {
        "uid".into()
    }
    fn default_name_attributes() -> Vec<String> {
        vec!["displayName".into(), "cn".into()]
    }
    fn default_manager_attribute() -> String {
        "manager".into()
    }
    fn default_department_attribute() -> String {
        "departmentNumber".into()
    }
    fn default_groups_attribute() -> String {
        "memberOf".into()
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }
}

/// One configuration problem, naming the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Which database a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

impl Config {
    /// Loads the file (if any) and the environment, then validates.
    ///
    /// `path` is the explicit `--config`/`CLOSELOOP_CONFIG`; without it `closeloop.toml`
    /// in the working directory is read when present.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::new(
                        "config",
                        format!("file {} does not exist", p.display()),
                    ));
                }
                figment = figment.merge(Toml::file_exact(p));
            }
            // Only the working directory: `Toml::file` would also search parent folders.
            None if Path::new("closeloop.toml").exists() => {
                figment = figment.merge(Toml::file_exact("closeloop.toml"))
            }
            None => {}
        }
        Self::from_figment(figment.merge(env_provider()))
    }

    /// Builds a configuration from a TOML string plus the environment (tests, demo).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .merge(env_provider());
        Self::from_figment(figment)
    }

    /// Builds a configuration from a TOML string alone, ignoring the environment.
    pub fn from_toml_only(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let key = if e.path.is_empty() {
                "(root)".to_string()
            } else {
                e.path.join(".")
            };
            ConfigError::new(key, e.kind.to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let backend = Backend::from_url(&self.database_url).ok_or_else(|| {
            ConfigError::new(
                "database_url",
                "must start with sqlite:// or postgres:// (or postgresql://)",
            )
        })?;
        self.org_timezone()?;
        if self.storage.max_upload_bytes == 0 {
            return Err(ConfigError::new(
                "storage.max_upload_bytes",
                "must be positive (the largest upload accepted, in bytes)",
            ));
        }
        let url = self.public_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            return Err(ConfigError::new(
                "public_url",
                "must be an absolute http:// or https:// address",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1024"));
        }
        let within = |d: Duration, max: Duration| d >= Duration::from_millis(100) && d <= max;
        if !within(self.http.header_read_timeout, Duration::from_secs(300)) {
            return Err(ConfigError::new(
                "http.header_read_timeout",
                "must be between 100ms and 5m",
            ));
        }
        if !within(self.http.keep_alive_timeout, Duration::from_secs(3600)) {
            return Err(ConfigError::new(
                "http.keep_alive_timeout",
                "must be between 100ms and 1h",
            ));
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return Err(ConfigError::new(
                "http.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if self.access_log_retention < Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new(
                "access_log_retention",
                "must be at least 1d (e.g. \"180d\"; a bare number is seconds)",
            ));
        }
        if let Some(m) = self.metrics_listen {
            if m == self.listen {
                return Err(ConfigError::new(
                    "metrics_listen",
                    "must differ from `listen` (leave it unset to serve /metrics on `listen`)",
                ));
            }
        }
        if backend == Backend::Postgres && self.security.data_key.is_none() {
            return Err(ConfigError::new(
                "security.data_key",
                "is required with PostgreSQL: every replica must share the same key \
                 (generate one with `openssl rand -base64 32`)",
            ));
        }
        if let Some(k) = &self.security.data_key {
            crate::security::DataKey::from_base64(k.expose())
                .map_err(|e| ConfigError::new("security.data_key", e.to_string()))?;
        }
        for (i, k) in self.security.old_data_keys.iter().enumerate() {
            crate::security::DataKey::from_base64(k.expose()).map_err(|e| {
                ConfigError::new(format!("security.old_data_keys[{i}]"), e.to_string())
            })?;
        }
        if !(1..=256).contains(&self.jobs.concurrency) {
            return Err(ConfigError::new(
                "jobs.concurrency",
                "must be between 1 and 256",
            ));
        }
        if self.jobs.poll_interval < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "jobs.poll_interval",
                "must be at least 10ms",
            ));
        }
        if self.jobs.timeout >= self.jobs.lease {
            return Err(ConfigError::new(
                "jobs.timeout",
                "must be shorter than jobs.lease, or a slow run could finish after losing its lease",
            ));
        }
        self.webhooks
            .private_receivers()
            .map_err(|m| ConfigError::new("webhooks.allow_private", m))?;
        if let Some(url) = &self.audit.anchor_webhook {
            if reqwest::Url::parse(url).is_err() {
                return Err(ConfigError::new(
                    "audit.anchor_webhook",
                    "must be an http:// or https:// address",
                ));
            }
            base_url("audit.anchor_webhook", url)?;
            match &self.audit.anchor_webhook_secret {
                Some(secret) if secret.expose().trim().chars().count() >= 16 => {}
                _ => {
                    return Err(ConfigError::new(
                        "audit.anchor_webhook_secret",
                        "required with audit.anchor_webhook: at least 16 characters to sign the anchor with",
                    ))
                }
            }
        }
        if let Some(l) = &self.ldap {
            if !l.url.starts_with("ldap://") {
                return Err(ConfigError::new(
                    "ldap.url",
                    "must start with ldap:// (ldaps:// and StartTLS are not supported yet)",
                ));
            }
            if l.bind_dn.is_some() != l.bind_password.is_some() {
                return Err(ConfigError::new(
                    "ldap.bind_password",
                    "bind_dn and bind_password go together (neither: an anonymous bind)",
                ));
            }
        }
        if self.storage.kind != "local" {
            return Err(ConfigError::new(
                "storage.kind",
                "only `local` is supported",
            ));
        }
        if let Some(w) = &self.wecom {
            non_empty("wecom.corp_id", &w.corp_id)?;
            if !w.agent_id.chars().all(|c| c.is_ascii_digit()) || w.agent_id.is_empty() {
                return Err(ConfigError::new(
                    "wecom.agent_id",
                    "must be the numeric AgentId",
                ));
            }
            non_empty("wecom.secret", w.secret.expose())?;
            non_empty("wecom.token", w.token.expose())?;
            base_url("wecom.api_base", &w.api_base)?;
            base_url("wecom.oauth_base", &w.oauth_base)?;
            base_url("wecom.jssdk_url", &w.jssdk_url)?;
            if let Some(path) = &w.domain_verify_file {
                domain_verify_file(path)?;
            }
        }
        if let Some(d) = &self.dingtalk {
            non_empty("dingtalk.app_key", &d.app_key)?;
            non_empty("dingtalk.app_secret", d.app_secret.expose())?;
            non_empty("dingtalk.token", d.token.expose())?;
            base_url("dingtalk.api_base", &d.api_base)?;
            base_url("dingtalk.oapi_base", &d.oapi_base)?;
            base_url("dingtalk.jsapi_url", &d.jsapi_url)?;
            for (card, id) in &d.card_templates {
                non_empty(&format!("dingtalk.card_templates.{card}"), id)?;
            }
        }
        if let Some(f) = &self.feishu {
            non_empty("feishu.app_id", &f.app_id)?;
            non_empty("feishu.app_secret", f.app_secret.expose())?;
            if f.verification_token.is_none() && f.encrypt_key.is_none() {
                return Err(ConfigError::new(
                    "feishu.verification_token",
                    "set verification_token or encrypt_key (or both) to authenticate events",
                ));
            }
            base_url("feishu.api_base", &f.api_base)?;
            base_url("feishu.accounts_base", &f.accounts_base)?;
            base_url("feishu.h5sdk_url", &f.h5sdk_url)?;
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        Backend::from_url(&self.database_url).expect("validated at load")
    }

    pub fn org_timezone(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            ConfigError::new(
                "timezone",
                format!(
                    "`{}` is not an IANA time zone such as Asia/Shanghai",
                    self.timezone
                ),
            )
        })
    }

    /// The effective configuration as TOML with every secret shown as `[redacted]`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = redact_url_password(&self.database_url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The database URL may hold a password, so Debug shows the redacted form.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_toml())
    }
}

/// `CLOSELOOP_WECOM__CORP_ID` → `wecom.corp_id`.
fn env_provider() -> Env {
    Env::prefixed("CLOSELOOP_").split("__").ignore(&NOT_KEYS)
}

fn non_empty(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        Err(ConfigError::new(key, "must not be empty"))
    } else {
        Ok(())
    }
}

fn base_url(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.starts_with("http://") || v.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            "must be an http:// or https:// base address",
        ))
    }
}

/// Largest domain-verification file accepted: WeCom's holds a short code.
const MAX_DOMAIN_VERIFY_BYTES: u64 = 4096;

/// `WW_verify_` + letters and digits + `.txt`: the shape of every file WeCom issues for a
/// trusted domain (16 characters in every one seen; the length is not documented). Nothing
/// else may be served at the domain root, and no name can leave it.
fn is_wecom_verify_name(name: &str) -> bool {
    name.strip_prefix("WW_verify_")
        .and_then(|rest| rest.strip_suffix(".txt"))
        .is_some_and(|code| {
            (1..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// `[wecom] domain_verify_file` names WeCom's file, which exists and can be read.
fn domain_verify_file(path: &Path) -> Result<(), ConfigError> {
    const KEY: &str = "wecom.domain_verify_file";
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !is_wecom_verify_name(name) {
        return Err(ConfigError::new(
            KEY,
            format!(
                "`{}` is not WeCom's domain-verification file: its name must be WW_verify_, \
                 letters and digits, then .txt (e.g. WW_verify_7rG3kjVbXHngiald.txt), as the \
                 admin console offers it when the app's trusted domain is set",
                path.display()
            ),
        ));
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::new(KEY, format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(ConfigError::new(
            KEY,
            format!("{} is not a file", path.display()),
        ));
    }
    if meta.len() > MAX_DOMAIN_VERIFY_BYTES {
        return Err(ConfigError::new(
            KEY,
            format!(
                "{} is {} bytes; WeCom's verification file holds a short code \
                 (at most {MAX_DOMAIN_VERIFY_BYTES} bytes are served)",
                path.display(),
                meta.len()
            ),
        ));
    }
    std::fs::read(path)
        .map(|_| ())
        .map_err(|e| ConfigError::new(KEY, format!("cannot read {}: {e}", path.display())))
}

/// Database URLs may carry a password; show the rest.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `[calendar]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarConfig {
    /// Working weekdays: `mon` … `sun`.
    pub work_days: Vec<String>,
    /// Working periods of a working day, `HH:MM-HH:MM`, in order.
    pub work_hours: Vec<String>,
    /// Days off on what would be working days: `2026-10-01`, or a range
    /// `2026-10-01..2026-10-07` (both ends included).
    pub holidays: Vec<String>,
    /// 调休: weekend days worked instead, same spellings.
    pub make_up_workdays: Vec<String>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            work_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            work_hours: vec!["09:00-12:00".into(), "13:30-18:00".into()],
            holidays: Vec::new(),
            make_up_workdays: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::from_toml_only("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://closeloop.db");
        assert_eq!(c.timezone, "Asia/Shanghai");
        assert_eq!(c.backend(), Backend::Sqlite);
    }

    #[test]
    fn invalid_value_names_the_key() {
        let e = Config::from_toml_only("timezone = \"Mars/Base\"").unwrap_err();
        assert_eq!(e.key, "timezone");
        let e = Config::from_toml_only("listen = \"nope\"").unwrap_err();
        assert_eq!(e.key, "listen");
        let e = Config::from_toml_only("[wecom]\ncorp_id = \"ww1\"\n").unwrap_err();
        assert!(e.key.starts_with("wecom"), "{e}");
        let e = Config::from_toml_only("databse_url = \"x\"").unwrap_err();
        assert!(e.problem.contains("databse_url"), "{e}");
    }

    #[test]
    fn durations_read_text_or_seconds() {
        let base = "[feishu]\napp_id = \"cli_x\"\napp_secret = \"s\"\nverification_token = \"v\"\n";
        let c = Config::from_toml_only(&format!("{base}max_clock_skew = \"90s\"")).unwrap();
        assert_eq!(c.feishu.unwrap().max_clock_skew, Duration::from_secs(90));
        let c = Config::from_toml_only(base).unwrap();
        assert_eq!(c.feishu.unwrap().max_clock_skew, Duration::from_secs(300));
        let e = Config::from_toml_only(&format!("{base}max_clock_skew = \"soon\"")).unwrap_err();
        assert_eq!(e.key, "feishu.max_clock_skew");
    }

    #[test]
    fn connection_limits_have_defaults_and_are_checked() {
        let c = Config::from_toml_only("").unwrap();
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.keep_alive_timeout, Duration::from_secs(60));
        assert_eq!(c.http.max_connections, 10_000);
        let c = Config::from_toml_only(
            "[http]\nheader_read_timeout = \"2s\"\nkeep_alive_timeout = 90\nmax_connections = 5",
        )
        .unwrap();
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.http.keep_alive_timeout, Duration::from_secs(90));
        assert_eq!(c.http.max_connections, 5);
        for (text, key) in [
            ("header_read_timeout = \"0s\"", "http.header_read_timeout"),
            ("header_read_timeout = \"soon\"", "http.header_read_timeout"),
            ("keep_alive_timeout = \"2h\"", "http.keep_alive_timeout"),
            ("max_connections = 0", "http.max_connections"),
        ] {
            let e = Config::from_toml_only(&format!("[http]\n{text}")).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn postgres_requires_a_data_key() {
        let e = Config::from_toml_only("database_url = \"postgres://u@h/db\"").unwrap_err();
        assert_eq!(e.key, "security.data_key");
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let text = r#"
            database_url = "postgres://app:hunter2@db:5432/cl"
            [security]
            data_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
            [wecom]
            corp_id = "ww0123"
            agent_id = 1000002
            secret = "topsecretvalue"
            token = "tok123"
            encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
            max_clock_skew = 0
        "#;
        let c = Config::from_toml_only(text).unwrap();
        let shown = c.redacted_toml();
        for secret in ["hunter2", "AAECAwQF", "topsecretvalue", "tok123", "jWmYm7"] {
            assert!(!shown.contains(secret), "{secret} leaked in:\n{shown}");
            assert!(
                !format!("{c:?}").contains(secret),
                "{secret} leaked in Debug"
            );
        }
        assert!(shown.contains("app:[redacted]@db:5432"));
        assert!(shown.contains("max_clock_skew = \"0s\""), "{shown}");
        let w = c.wecom.unwrap();
        assert_eq!(w.agent_id, "1000002");
        assert_eq!(w.max_clock_skew, Duration::ZERO);
        assert_eq!(w.api_base, "https://qyapi.weixin.qq.com");
    }
}
