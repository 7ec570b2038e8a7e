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
            .context("database migration failed")?;
        self.ledger_nullable_columns()
            .await
            .context("database migration failed (ledger_nullable_actor_customer)")
    }

    /// Makes `tracking_points.actor_user_id` and `customer_id` nullable (migration
    /// `20261208000300_ledger_sources`), once. PostgreSQL drops the constraints in place;
    /// SQLite cannot, so the table is rebuilt with its rows, its indexes and the references
    /// to it (the documented twelve-step procedure: foreign keys off on this connection,
    /// one transaction, a foreign-key check before the commit).
    async fn ledger_nullable_columns(&self) -> anyhow::Result<()> {
        const NAME: &str = "ledger_nullable_actor_customer";
        let mut conn = self.pool.acquire().await?;
        let done = sqlx::query("SELECT name FROM data_migrations WHERE name = $1")
            .bind(NAME)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if done {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        match self.backend {
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let claimed = sqlx::query(
                    "INSERT INTO data_migrations (name, applied_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                )
                .bind(NAME)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 1 {
                    tx.execute(
                        "ALTER TABLE tracking_points ALTER COLUMN actor_user_id DROP NOT NULL, \
                         ALTER COLUMN customer_id DROP NOT NULL",
                    )
                    .await?;
                }
                tx.commit().await?;
            }
            Backend::Sqlite => {
                conn.execute("PRAGMA foreign_keys=OFF").await?;
                let rebuilt = rebuild_tracking_points(&mut conn, NAME, now).await;
                // The connection goes back to the pool: restore it whatever happened.
                let restored = conn.execute("PRAGMA foreign_keys=ON").await;
                rebuilt?;
                restored?;
            }
        }
        Ok(())
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

/// The SQLite half of [`Db::ledger_nullable_columns`], on a connection with foreign keys
/// off: new table, rows copied, old table dropped, new one renamed, indexes made again.
async fn rebuild_tracking_points(
    conn: &mut sqlx::pool::PoolConnection<Any>,
    name: &str,
    now_ms: i64,
) -> anyhow::Result<()> {
    use sqlx::Row;
    conn.execute("BEGIN IMMEDIATE").await?;
    let result: anyhow::Result<()> = async {
        let claimed = sqlx::query(
            "INSERT INTO data_migrations (name, applied_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms)
        .execute(&mut **conn)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(());
        }
        let indexes: Vec<String> = sqlx::query(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tracking_points' \
             AND sql IS NOT NULL ORDER BY name",
        )
        .fetch_all(&mut **conn)
        .await?
        .iter()
        .map(|r| r.get("sql"))
        .collect();
        conn.execute(
            "CREATE TABLE tracking_points_rebuilt (
                id              TEXT PRIMARY KEY,
                org_id          TEXT NOT NULL REFERENCES organisations(id),
                actor_user_id   TEXT REFERENCES users(id),
                customer_id     TEXT REFERENCES customers(id),
                deal_id         TEXT REFERENCES deals(id),
                action          TEXT NOT NULL,
                occurred_at     BIGINT NOT NULL,
                source          TEXT NOT NULL,
                platform        TEXT,
                client_ip       TEXT,
                user_agent      TEXT,
                payload         TEXT NOT NULL DEFAULT '{}',
                verification    TEXT NOT NULL DEFAULT 'not_applicable',
                idempotency_key TEXT,
                request_hash    TEXT,
                api_key_id      TEXT,
                actor_kind      TEXT NOT NULL DEFAULT 'user',
                external_id     TEXT
            )",
        )
        .await?;
        const COLUMNS: &str = "id, org_id, actor_user_id, customer_id, deal_id, action, occurred_at, source, \
             platform, client_ip, user_agent, payload, verification, idempotency_key, request_hash, \
             api_key_id, actor_kind, external_id";
        conn.execute(
            format!(
                "INSERT INTO tracking_points_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM tracking_points"
            )
            .as_str(),
        )
        .await?;
        conn.execute("DROP TABLE tracking_points").await?;
        conn.execute("ALTER TABLE tracking_points_rebuilt RENAME TO tracking_points")
            .await?;
        for sql in &indexes {
            conn.execute(sql.as_str()).await?;
        }
        let broken = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&mut **conn)
            .await?;
        anyhow::ensure!(
            broken.is_empty(),
            "{} rows would lose a reference",
            broken.len()
        );
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            conn.execute("COMMIT").await?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            Err(e)
        }
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
