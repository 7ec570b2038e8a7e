//! The `closeloop` command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{NaiveDate, TimeZone};
use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};

use crate::access::{apikeys, Actor, ApiKeyRole, NewApiKey};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::db::Db;
use crate::demo::DemoArgs;
use crate::directory::orgs;
use crate::directory::users::{self, UserPatch};
use crate::policy::Grant;
use crate::rules::store::Imported;
use crate::rules::{candidate, RuleSet, Rules};
use crate::telemetry::LogFormat;
use crate::App;

#[derive(Debug, Parser)]
#[command(
    name = "closeloop",
    version,
    about = "Closed-loop sales process on WeCom, DingTalk and Feishu"
)]
pub struct Cli {
    /// Configuration file (default: ./closeloop.toml when present).
    #[arg(long, global = true, env = "CLOSELOOP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Inspect and re-drive durable jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The rule set (stages, gates, evidence policies, anti-fraud thresholds, actions) as TOML.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Start a demonstration server on a local SQLite database with sample data.
    Demo(DemoArgs),
    /// Check the configuration against the live platforms: a token from each secret, one
    /// read per feature, and a signed URL check of each callback at `public_url`.
    Doctor,
    /// People and roles: members' closeloop roles and direct superiors, and who answers a
    /// customer's presales, delivery and finance requests (also on the page 管理 → 人员与角色).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Customers already on the chat platform.
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// The audit log's hash chain: verify it, print its head for anchoring.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// People from a directory source other than the chat platforms.
    #[command(subcommand)]
    Directory(DirectoryCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Seal the unsealed entries, then recompute every organisation's chain (or one's,
    /// with `--org`); names the first broken entry of each broken chain and exits 2 when
    /// an entry was changed, inserted or deleted.
    Verify {
        /// A head hash anchored earlier (`audit head`, the daily anchor card): it must be
        /// the hash of an entry of the intact chain of the `--org` organisation (the
        /// default one without `--org`).
        #[arg(long, value_name = "HASH")]
        anchor: Option<String>,
        /// Only this organisation (its id or slug).
        #[arg(long, value_name = "ID")]
        org: Option<String>,
    },
    /// Seal the unsealed entries and print the chain head (seq and hash) to anchor.
    Head {
        /// The organisation (its id or slug); the default one without it.
        #[arg(long, value_name = "ID")]
        org: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Read the directory once and sync people, departments, managers and group roles
    /// (audited as `directory.sync`). A re-run without changes changes nothing.
    Sync {
        /// The directory: `ldap` (the `[ldap]` section; Active Directory too).
        #[arg(long, value_parser = ["ldap"])]
        source: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List members with their roles and direct superiors.
    List {
        /// Only members holding this role.
        #[arg(long, value_parser = PossibleValuesParser::new(users::ROLES))]
        role: Option<String>,
    },
    /// Explain a member's effective permissions: each permission package they hold, why
    /// they hold it, and what it grants.
    Explain {
        /// The member, named as for set-roles.
        user: String,
    },
    /// Replace a member's closeloop roles (audited).
    SetRoles {
        /// The member: an id, wecom:USERID (dingtalk:, feishu:, ldap:), or a name no one else has.
        user: String,
        /// The roles the member holds from now on.
        #[arg(required_unless_present = "none", value_parser = PossibleValuesParser::new(users::ROLES))]
        roles: Vec<String>,
        /// Take every role away.
        #[arg(long, conflicts_with = "roles")]
        none: bool,
    },
    /// Set a member's direct superiors by hand; the directory sync keeps them (audited).
    SetSuperiors {
        /// The member, named as for set-roles.
        user: String,
        /// The superiors, named the same way.
        #[arg(required_unless_present_any = ["none", "directory"])]
        superiors: Vec<String>,
        /// No superior, kept so by the directory sync.
        #[arg(long, conflicts_with_all = ["superiors", "directory"])]
        none: bool,
        /// Hand the superiors back to the directory sync, which sets them on its next run.
        #[arg(long, conflicts_with = "superiors")]
        directory: bool,
    },
    /// Assign who answers a customer's requests for a role, or clear it (audited).
    Assign {
        /// The customer: an id or a name no other customer has.
        customer: String,
        /// Usually presales, delivery or finance.
        #[arg(value_parser = PossibleValuesParser::new(users::ROLES))]
        role: String,
        /// The member, named as for set-roles.
        #[arg(required_unless_present = "clear")]
        user: Option<String>,
        /// Remove the assignment: the role's queue answers again.
        #[arg(long, conflicts_with = "user")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// Import the external contacts the members already have as customers (`source =
    /// import`, no lead); audited. A re-run changes nothing.
    Import {
        /// The platform to read: WeCom (each member's customers) or DingTalk (the
        /// organisation's external-contact book); Feishu has no such API.
        #[arg(long, value_parser = ["wecom", "dingtalk"])]
        platform: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets redacted.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create a key and print it (alone, once) on stdout; only its hash is stored.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// What the key may do.
        #[arg(long, default_value = "integration", value_parser = ["admin", "integration", "read-only"])]
        role: String,
        /// Last day the key is valid (YYYY-MM-DD, organisation time zone), or an RFC 3339 time.
        #[arg(long, value_name = "DATE")]
        expires: Option<String>,
        /// Organisation slug (default: this deployment's own organisation).
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
        /// Whom the key acts for: the organisation (its role decides), or the member each
        /// request names in `X-Closeloop-Actor` / `actor` (that member's permissions apply).
        #[arg(long, default_value = "organisation", value_parser = ["organisation", "actor"])]
        acting: String,
    },
    /// Revoke a key by its id or by the prefix shown in `apikey list`.
    Revoke {
        /// Key id or prefix.
        key: String,
    },
    /// List keys of an organisation (never the keys themselves).
    List {
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest last.
    List {
        /// queued, running, done or dead
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Queue a dead job again with a fresh set of attempts.
    Retry {
        /// Job id.
        id: String,
    },
    /// Run a scheduled job kind now, outside its timing (e.g. `collab.health_weekly`, the
    /// Monday collaboration report); audited. A running server's job worker runs it.
    RunNow {
        /// A scheduled job kind (an unknown one is refused with the list).
        kind: String,
        /// How long to wait for the worker to finish it (`0s`: return once queued).
        #[arg(long, default_value = "30s", value_name = "DURATION")]
        wait: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Print the rule set in force as TOML, its version in a comment at the top.
    Export {
        /// Write here instead of stdout.
        file: Option<PathBuf>,
    },
    /// Check FILE and put it in force as the next version (audited); running servers
    /// pick it up on their next request.
    Import { file: PathBuf },
    /// Check FILE without touching any database and summarise it.
    Check { file: PathBuf },
    /// Replay the ledger against FILE and report what it would have refused, flagged or
    /// judged differently from the rules in force. Writes nothing.
    Simulate {
        file: PathBuf,
        /// How far back to replay, e.g. 30d, 12h.
        #[arg(long, default_value = "30d", value_name = "DURATION")]
        since: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line. Errors are printed by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            print!("{}", config.redacted_toml());
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Migrate => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            let db = Db::connect(&config.database_url).await?;
            db.migrate().await?;
            eprintln!("database is up to date");
            Ok(())
        }
        Command::Serve => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            serve(config).await
        }
        Command::Apikey(cmd) => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            apikey(config, cmd).await
        }
        Command::Jobs(cmd) => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            jobs(config, cmd).await
        }
        Command::Rules(cmd) => rules(cli.config.as_deref(), cmd).await,
        Command::Users(cmd) => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            people(config, cmd).await
        }
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Doctor => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            crate::doctor::cli(&config).await
        }
        Command::Customers(CustomersCommand::Import { platform }) => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            import_customers(config, &platform).await
        }
        Command::Audit(cmd) => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            audit(config, cmd).await
        }
        Command::Directory(DirectoryCommand::Sync { source }) => {
            let config = crate::app::load_config(cli.config.as_deref())?;
            directory_sync(config, &source).await
        }
    }
}

/// `audit verify` and `audit head`.
async fn audit(config: Config, cmd: AuditCommand) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await?;
    let result = audit_in(&db, cmd).await;
    db.close().await;
    result
}

async fn audit_in(db: &Db, cmd: AuditCommand) -> anyhow::Result<()> {
    use crate::access::audit;
    let now = SystemClock.now_ms();
    match cmd {
        AuditCommand::Head { org } => {
            let org = audit_org(db, org.as_deref()).await?;
            let head = audit::head(db, &org.id, now).await?;
            println!("seq {}\nhash {}", head.seq, head.hash);
        }
        AuditCommand::Verify { anchor, org } => {
            let anchor = anchor.map(|a| a.trim().to_ascii_lowercase());
            let anchored = if anchor.is_some() || org.is_some() {
                Some(audit_org(db, org.as_deref()).await?.id)
            } else {
                None
            };
            let orgs = match &org {
                Some(_) => crate::directory::orgs::all(db)
                    .await?
                    .into_iter()
                    .filter(|o| Some(&o.id) == anchored.as_ref())
                    .collect(),
                None => crate::directory::orgs::all(db).await?,
            };
            let mut broken = Vec::new();
            for o in &orgs {
                let a = anchor
                    .as_deref()
                    .filter(|_| Some(&o.id) == anchored.as_ref());
                match audit::verify(db, &o.id, now, a).await? {
                    Ok(v) => {
                        println!(
                            "organisation {} ({}): audit chain intact: {} entries\nseq {}\nhash {}",
                            o.slug, o.id, v.entries, v.head.seq, v.head.hash
                        );
                        if a.is_some() {
                            println!("anchor found in the chain");
                        }
                    }
                    Err(b) => broken.push(format!(
                        "organisation {} ({}): audit chain broken at {b}",
                        o.slug, o.id
                    )),
                }
            }
            if !broken.is_empty() {
                anyhow::bail!("{}", broken.join("\n"));
            }
        }
    }
    Ok(())
}

/// The organisation `audit` works on: the one named by id or slug, else the default.
async fn audit_org(db: &Db, named: Option<&str>) -> anyhow::Result<crate::directory::orgs::Org> {
    let Some(n) = named.map(str::trim) else {
        return existing_default_org(db).await;
    };
    if let Some(o) = crate::directory::orgs::by_id(db, n).await? {
        return Ok(o);
    }
    crate::directory::orgs::by_slug(db, n)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no organisation with the id or slug `{n}`"))
}

/// `customers import --platform wecom|dingtalk`: progress on stderr, the totals on stdout.
/// `directory sync --source ldap`: one sync of the `[ldap]` directory, its counts on stdout.
async fn directory_sync(config: Config, source: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        source == "ldap",
        "--source: `{source}` is not a directory source (ldap)"
    );
    let ldap = config
        .ldap
        .as_ref()
        .context("directory sync --source ldap needs the [ldap] section")?;
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await?;
    let org = existing_default_org(&db).await?;
    let result =
        crate::directory::ldap::sync(&db, SystemClock.now_ms(), &org.id, ldap, &Actor::cli()).await;
    db.close().await;
    let out = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "ldap: created {}, updated {}, left {}, kept active (listing shrank too sharply) {}, roles granted {}, roles revoked {}",
        out.members.created,
        out.members.updated,
        out.members.left,
        out.members.withheld_left,
        out.roles_granted,
        out.roles_revoked
    );
    Ok(())
}

async fn import_customers(config: Config, platform: &str) -> anyhow::Result<()> {
    use crate::chat::event::Platform;
    let platform = match platform {
        "wecom" => {
            let wecom = config
                .wecom
                .as_ref()
                .context("customers import --platform wecom needs the [wecom] section")?;
            anyhow::ensure!(
                wecom.contact_secret.is_some(),
                "customers import needs `[wecom] contact_secret` (客户联系 Secret) to list external contacts"
            );
            Platform::Wecom
        }
        "dingtalk" => {
            config
                .dingtalk
                .as_ref()
                .context("customers import --platform dingtalk needs the [dingtalk] section")?;
            Platform::Dingtalk
        }
        other => anyhow::bail!(
            "--platform: `{other}` cannot be imported (wecom or dingtalk; Feishu has no API listing external contacts)"
        ),
    };
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await?;
    let cipher = crate::app::load_cipher(&config)?;
    let org = existing_default_org(&db).await?;
    let clock: crate::clock::SharedClock = Arc::new(SystemClock);
    let client = crate::app::http_client(&config)?;
    let book: Box<dyn crate::customers::import::ContactBook> =
        match (config.wecom.as_ref(), config.dingtalk.as_ref()) {
            (Some(wecom), _) if platform == Platform::Wecom => Box::new(
                // WeCom's tokens are shared through the database.
                crate::platform::wecom::api::WecomApi::from_config(wecom, client, clock.clone())
                    .shared_through(db.clone(), cipher.clone()),
            ),
            (_, Some(dingtalk)) => {
                Box::new(crate::platform::dingtalk::api::DingtalkApi::from_config(
                    dingtalk,
                    client,
                    clock.clone(),
                ))
            }
            _ => anyhow::bail!(
                "--platform {}: its configuration section is missing",
                platform.as_str()
            ),
        };
    let line = |p: &crate::customers::import::Progress| {
        format!(
            "members done {}/{}, contacts seen {}, created {}, linked {}, unchanged {}",
            p.members_done, p.members, p.contacts_seen, p.created, p.linked, p.unchanged
        )
    };
    let done = crate::customers::import::run(
        &db,
        &cipher,
        clock.now_ms(),
        &org.id,
        &Actor::cli(),
        platform,
        book.as_ref(),
        |p| eprintln!("{}", line(p)),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"));
    db.close().await;
    println!("imported: {}", line(&done?));
    Ok(())
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (key `listen`)", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (key `metrics_listen`)"))?,
        ),
        None => None,
    };
    let app = App::build(config, Arc::new(SystemClock)).await?;
    app.serve(listener, metrics_listener, crate::app::shutdown_signal())
        .await
}

async fn apikey(config: Config, cmd: ApikeyCommand) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await?;
    let now = SystemClock.now_ms();
    let default_org = orgs::ensure_default(&db, now, config.org_timezone()?)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let org_of = |slug: Option<String>| {
        let db = db.clone();
        let default_org = default_org.clone();
        async move {
            match slug {
                None => Ok(default_org),
                Some(s) => orgs::by_slug(&db, &s)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .ok_or_else(|| anyhow::anyhow!("organisation `{s}` does not exist")),
            }
        }
    };
    match cmd {
        ApikeyCommand::Create {
            name,
            role,
            expires,
            org,
            acting,
        } => {
            let org = org_of(org).await?;
            let expires_at_ms = expires
                .map(|e| parse_expiry(&e, org.timezone))
                .transpose()?;
            let role =
                ApiKeyRole::parse(&role).context("role must be admin, integration or read-only")?;
            let acting = crate::access::Acting::parse(&acting)
                .context("acting must be organisation or actor")?;
            let (id, key) = apikeys::create_acting(
                &db,
                now,
                NewApiKey {
                    org_id: org.id.clone(),
                    name,
                    role,
                    expires_at_ms,
                },
                acting,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created API key {id} ({}) for organisation `{}`",
                role.as_str(),
                org.slug
            );
            println!("{key}");
        }
        ApikeyCommand::Revoke { key } => {
            let done = apikeys::revoke(&db, now, &key)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(done, "no active API key with id or prefix `{key}`");
            eprintln!("revoked");
        }
        ApikeyCommand::List { org } => {
            let org = org_of(org).await?;
            for k in apikeys::list(&db, &org.id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                let state = match (k.revoked_at, k.expires_at) {
                    (Some(_), _) => "revoked".to_string(),
                    (None, Some(e)) if e <= now => "expired".to_string(),
                    (None, Some(e)) => {
                        format!("expires {}", crate::clock::in_zone(e, org.timezone))
                    }
                    (None, None) => "active".to_string(),
                };
                println!("{}\t{}\t{}\t{}\t{}", k.id, k.prefix, k.role, k.name, state);
            }
        }
    }
    db.close().await;
    Ok(())
}

async fn jobs(config: Config, cmd: JobsCommand) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await?;
    match cmd {
        JobsCommand::List {
            status,
            kind,
            limit,
        } => {
            let page = crate::page::PageParams {
                limit: Some(limit),
                cursor: None,
            }
            .validate()
            .map_err(|e| anyhow::anyhow!("--limit: {e}"))?;
            let filter = crate::jobs::JobFilter { status, kind };
            let jobs = crate::jobs::list(&db, None, &filter, &page)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("id\tkind\tstatus\tattempts\trun_at\tlast_error");
            for j in jobs.items {
                println!(
                    "{}\t{}\t{}\t{}/{}\t{}\t{}",
                    j.id,
                    j.kind,
                    j.status,
                    j.attempts,
                    j.max_attempts,
                    j.run_at,
                    j.last_error.unwrap_or_default()
                );
            }
        }
        JobsCommand::Retry { id } => {
            crate::jobs::retry_dead(&db, SystemClock.now_ms(), None, &id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("job {id} queued again");
        }
        JobsCommand::RunNow { kind, wait } => run_now(&db, &kind, &wait).await?,
    }
    db.close().await;
    Ok(())
}

/// `jobs run-now`: queues the kind's jobs (their ids on stdout), then waits up to `wait` for
/// a worker to finish them; a job that dies is an error.
async fn run_now(db: &Db, kind: &str, wait: &str) -> anyhow::Result<()> {
    let wait = humantime::parse_duration(wait)
        .map_err(|e| anyhow::anyhow!("--wait `{wait}`: {e} (e.g. 30s, 0s)"))?;
    let ids = crate::jobs::schedule::run_now(db, SystemClock.now_ms(), None, kind, &Actor::cli())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for id in &ids {
        println!("{id}");
    }
    eprintln!("queued {kind} ({} job)", ids.len());
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending = ids;
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let mut still = Vec::new();
        for id in pending {
            match crate::jobs::status(db, &id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                Some((status, _)) if status == "done" => eprintln!("job {id} done"),
                Some((status, error)) if status == "dead" => anyhow::bail!(
                    "job {id} failed: {}",
                    error.unwrap_or_else(|| "no error recorded".into())
                ),
                _ => still.push(id),
            }
        }
        pending = still;
    }
    if !pending.is_empty() && !wait.is_zero() {
        eprintln!(
            "not finished within {}: the job worker of a running `closeloop serve` runs it",
            humantime::format_duration(wait)
        );
    }
    Ok(())
}

async fn people(config: Config, cmd: UsersCommand) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await?;
    let result = people_in(&db, config.org_timezone()?, cmd).await;
    db.close().await;
    result
}

async fn people_in(db: &Db, tz: chrono_tz::Tz, cmd: UsersCommand) -> anyhow::Result<()> {
    let domain = |e: crate::Error| anyhow::anyhow!("{e}");
    let now = SystemClock.now_ms();
    let org = orgs::ensure_default(db, now, tz).await.map_err(domain)?;
    let org = org.id.as_str();
    let members = users::all(db, org).await.map_err(domain)?;
    let name_of = |id: &str| {
        members
            .iter()
            .find(|u| u.id == id)
            .map_or(id.to_string(), |u| u.name.clone())
    };
    let update = move |user: String, patch: UserPatch| async move {
        users::update(db, now, org, &Actor::cli(), Grant::Allowed, &user, patch)
            .await
            .map_err(domain)
    };
    match cmd {
        UsersCommand::List { role } => {
            println!("id\tname\tstatus\troles\tsuperiors\tsuperiors_from\tidentities");
            for u in members
                .iter()
                .filter(|u| role.as_ref().is_none_or(|r| u.roles.contains(r)))
            {
                let sups: Vec<String> = u.superiors.iter().map(|s| name_of(s)).collect();
                let ids: Vec<String> = u
                    .identities
                    .iter()
                    .map(|i| format!("{}:{}={}", i.platform, i.kind, i.value))
                    .collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    u.id,
                    u.name,
                    u.status,
                    u.roles.join(","),
                    sups.join(","),
                    u.superior_source,
                    ids.join(",")
                );
            }
        }
        UsersCommand::Explain { user } => {
            let user = users::find(db, org, &user).await.map_err(domain)?;
            let rules = crate::rules::Rules::new(db.clone())
                .current(org)
                .await
                .map_err(domain)?;
            let mut conn = db.pool.acquire().await?;
            let policy = crate::policy::Policy::load(
                &mut conn,
                &rules,
                org,
                crate::policy::Subject::Person(user.id.clone()),
            )
            .await
            .map_err(domain)?;
            print!(
                "{}",
                crate::policy::explain::explain(&rules, &policy).to_text()
            );
        }
        UsersCommand::SetRoles { user, roles, .. } => {
            let user = users::find(db, org, &user).await.map_err(domain)?;
            let patch = UserPatch {
                roles: Some(roles),
                ..UserPatch::default()
            };
            let u = update(user.id, patch).await?;
            println!("{}: roles {}", u.name, list_or_none(&u.roles));
        }
        UsersCommand::SetSuperiors {
            user,
            superiors,
            directory,
            ..
        } => {
            let user = users::find(db, org, &user).await.map_err(domain)?;
            let patch = if directory {
                UserPatch {
                    superior_source: Some("directory".into()),
                    ..UserPatch::default()
                }
            } else {
                let mut ids = Vec::new();
                for s in &superiors {
                    ids.push(users::find(db, org, s).await.map_err(domain)?.id);
                }
                UserPatch {
                    superiors: Some(ids),
                    ..UserPatch::default()
                }
            };
            let u = update(user.id, patch).await?;
            let names: Vec<String> = u.superiors.iter().map(|s| name_of(s)).collect();
            if directory {
                println!(
                    "{}: superiors {} until the next directory sync sets them",
                    u.name,
                    list_or_none(&names)
                );
            } else {
                println!(
                    "{}: superiors {} (set by hand; the directory sync keeps them)",
                    u.name,
                    list_or_none(&names)
                );
            }
        }
        UsersCommand::Assign {
            customer,
            role,
            user,
            ..
        } => {
            let c = crate::collab::assignments::find_customer(db, org, &customer)
                .await
                .map_err(domain)?;
            let user = match user {
                Some(u) => Some(users::find(db, org, &u).await.map_err(domain)?),
                None => None,
            };
            crate::collab::assignments::set(
                db,
                now,
                org,
                &Actor::cli(),
                Grant::Allowed,
                &c.id,
                &role,
                user.as_ref().map(|u| u.id.as_str()),
            )
            .await
            .map_err(domain)?;
            match user {
                Some(u) => {
                    if !u.roles.contains(&role) {
                        eprintln!("note: {} does not hold the role {role}", u.name);
                    }
                    println!("{}: {role} is {}", c.name, u.name);
                }
                None => println!(
                    "{}: no one assigned for {role}; the role's queue answers",
                    c.name
                ),
            }
        }
    }
    Ok(())
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// Reads a rule-set file and checks it; every error is one line naming the key.
fn read_rules(path: &Path) -> anyhow::Result<(String, RuleSet)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rules = candidate::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((text, rules))
}

/// The deployment's organisation, read without creating anything.
async fn existing_default_org(db: &Db) -> anyhow::Result<orgs::Org> {
    orgs::by_slug(db, orgs::DEFAULT_SLUG)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot read the database ({e}); run `closeloop migrate` first")
        })?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the database has no organisation yet: the server creates it on its first start"
            )
        })
}

async fn rules(config_path: Option<&Path>, cmd: RulesCommand) -> anyhow::Result<()> {
    // Checking a file needs neither the configuration nor a database.
    if let RulesCommand::Check { file } = &cmd {
        let (_, rules) = read_rules(file)?;
        print!("{}", candidate::summary(&rules));
        return Ok(());
    }
    let config = crate::app::load_config(config_path)?;
    let db = Db::connect(&config.database_url).await?;
    let now = SystemClock.now_ms();
    let result = match cmd {
        RulesCommand::Check { .. } => Ok(()), // answered above, without a database
        RulesCommand::Export { file } => {
            // Before the first start there is no organisation, and so only the defaults.
            let v = match existing_default_org(&db).await {
                Ok(org) => Rules::new(db.clone())
                    .current_version(&org.id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                Err(_) => crate::rules::store::Version {
                    version: 0,
                    rules: Arc::new(RuleSet::default()),
                },
            };
            let text = candidate::export(v.version, &v.rules);
            match file {
                None => print!("{text}"),
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("exported version {} to {}", v.version, path.display());
                }
            }
            Ok(())
        }
        RulesCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            db.migrate().await?;
            let org = orgs::ensure_default(&db, now, config.org_timezone()?)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match candidate::import(&db, now, &org.id, &Actor::cli(), &text)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            {
                Imported::New(v) => println!("imported version {v}"),
                Imported::Unchanged(v) => println!("unchanged (version {v})"),
            }
            Ok(())
        }
        RulesCommand::Simulate { file, since, json } => {
            let (_, candidate) = read_rules(&file)?;
            let back = humantime::parse_duration(&since)
                .map_err(|e| anyhow::anyhow!("--since `{since}`: {e} (e.g. 30d, 12h)"))?;
            let since_ms = now.saturating_sub(i64::try_from(back.as_millis()).unwrap_or(i64::MAX));
            let org = existing_default_org(&db).await?;
            let report = crate::simulate::against_in_force(
                &db,
                &org.id,
                org.timezone,
                &candidate,
                since_ms,
                now,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
    };
    db.close().await;
    result
}

/// `YYYY-MM-DD` means valid through that day in the organisation's zone.
fn parse_expiry(s: &str, tz: chrono_tz::Tz) -> anyhow::Result<i64> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let next = d
            .succ_opt()
            .and_then(|n| n.and_hms_opt(0, 0, 0))
            .context("--expires date out of range")?;
        let at = tz
            .from_local_datetime(&next)
            .earliest()
            .context("--expires falls in a time-zone gap")?;
        return Ok(at.timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| anyhow::anyhow!("--expires must be YYYY-MM-DD or an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn expiry_date_is_the_end_of_that_day_in_the_org_zone() {
        let ms = parse_expiry("2027-01-31", chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(crate::clock::rfc3339(ms), "2027-01-31T16:00:00.000Z");
        assert!(parse_expiry("31/01/2027", chrono_tz::Asia::Shanghai).is_err());
    }
}
