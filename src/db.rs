//! Storage: one sqlx `Any` pool over SQLite or PostgreSQL, picked once from the URL.
//!
//! Queries are written once with `$1` placeholders and portable types (see the migration
//! header); the few dialect-specific statements branch on [`Backend`].

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};

pub use crate::config::Backend;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

pub type Tx = Transaction<'static, Any>;

impl Db {
    /// Connects; a missing SQLite file is created and switched to WAL with full sync,
    /// so a commit survives power loss.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)
            .context("database_url must start with sqlite:// or postgres://")?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url).with_context(|| {
            format!(
                "invalid database_url {}",
                crate::config::redact_url_password(&url)
            )
        })?;
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                                 PRAGMA foreign_keys=ON; PRAGMA busy_timeout=15000;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await
            }
        }
        .with_context(|| {
            format!(
                "cannot open database {}",
                crate::config::redact_url_password(&url)
            )
        })?;
        Ok(Db { pool, backend })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("database migration failed")
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`)
    /// so two writers wait on `busy_timeout` instead of failing on lock upgrade.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A new time-ordered id (UUIDv7), unique across replicas.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// True when a write failed on a unique constraint (the portable way to spot duplicates).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_unique_violation(),
        _ => false,
    }
}

/// True when a write failed on a foreign key.
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_foreign_key_violation(),
        _ => false,
    }
}

/// A bind value for queries whose WHERE clause is assembled at run time.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(String),
    Int(i64),
}

/// Builds `SELECT … WHERE a AND b … ORDER BY … LIMIT` with numbered placeholders, which
/// both dialects accept (`QueryBuilder` cannot know the dialect behind `Any`).
#[derive(Debug, Default)]
pub struct Select {
    conditions: Vec<String>,
    args: Vec<Arg>,
}

impl Select {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition; each `{}` in it becomes the next placeholder bound to `arg`.
    pub fn and(&mut self, condition: &str, arg: Arg) -> &mut Self {
        self.and_all(condition, vec![arg])
    }

    /// Adds a condition with several placeholders, bound in order.
    pub fn and_all(&mut self, condition: &str, args: Vec<Arg>) -> &mut Self {
        let mut cond = condition.to_string();
        for a in args {
            self.args.push(a);
            cond = cond.replacen("{}", &format!("${}", self.args.len()), 1);
        }
        self.conditions.push(cond);
        self
    }

    /// Adds `column = value` for every filter that is set.
    pub fn equal_each(&mut self, filters: &[(&str, &Option<String>)]) -> &mut Self {
        for (column, value) in filters {
            if let Some(v) = value {
                self.and(&format!("{column} = {{}}"), Arg::Text(v.clone()));
            }
        }
        self
    }

    /// The start of every organisation-scoped page: `org_id = … AND id > cursor`.
    pub fn org_page(org_id: &str, page: &crate::page::PageRequest) -> Select {
        let mut sel = Select::new();
        sel.and("org_id = {}", Arg::Text(org_id.into()));
        if let Some(after) = &page.after {
            sel.and("id > {}", Arg::Text(after.clone()));
        }
        sel
    }

    /// `head` is everything before WHERE; `tail` is ORDER BY / LIMIT. `limit` is bound last.
    pub fn sql(&self, head: &str, tail: &str) -> String {
        let mut sql = head.to_string();
        if !self.conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.conditions.join(" AND "));
        }
        sql.push(' ');
        sql.push_str(&tail.replace("{limit}", &format!("${}", self.args.len() + 1)));
        sql
    }

    pub fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}
