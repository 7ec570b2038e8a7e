//! The `closeloop` command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{NaiveDate, TimeZone};
use clap::{Args, Parser, Subcommand};

use crate::access::{apikeys, ApiKeyRole, NewApiKey};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::db::Db;
use crate::directory::orgs;
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
    /// Start a demonstration server on a local SQLite database with sample data.
    Demo(DemoArgs),
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
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo serves.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The demo database (recreated on every start).
    #[arg(long, default_value = "closeloop-demo.db")]
    pub database: PathBuf,
}

/// Runs a parsed command line. Errors are printed by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            let config = Config::load(cli.config.as_deref())?;
            print!("{}", config.redacted_toml());
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Migrate => {
            let config = Config::load(cli.config.as_deref())?;
            let db = Db::connect(&config.database_url).await?;
            db.migrate().await?;
            eprintln!("database is up to date");
            Ok(())
        }
        Command::Serve => {
            let config = Config::load(cli.config.as_deref())?;
            serve(config).await
        }
        Command::Apikey(cmd) => {
            let config = Config::load(cli.config.as_deref())?;
            apikey(config, cmd).await
        }
        Command::Jobs(cmd) => {
            let config = Config::load(cli.config.as_deref())?;
            jobs(config, cmd).await
        }
        Command::Demo(args) => crate::demo::run(args).await,
    }
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
        } => {
            let org = org_of(org).await?;
            let expires_at_ms = expires
                .map(|e| parse_expiry(&e, org.timezone))
                .transpose()?;
            let role =
                ApiKeyRole::parse(&role).context("role must be admin, integration or read-only")?;
            let (id, key) = apikeys::create(
                &db,
                now,
                NewApiKey {
                    org_id: org.id.clone(),
                    name,
                    role,
                    expires_at_ms,
                },
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
    }
    db.close().await;
    Ok(())
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
