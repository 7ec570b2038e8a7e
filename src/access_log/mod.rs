//! The access log: who read which customer-level object or sensitive field, when, and from
//! where. Reads are not changes, so they are not audited in the writer's transaction;
//! instead a request hands its entry to [`AccessLog::record`], which never waits, and a
//! background writer stores the entries in batches (one transaction per batch, multi-row
//! `INSERT`s). Entries hold ids and fixed keys only ([`Object`], [`Field`], [`Purpose`]),
//! never a personal value.
//!
//! Old entries are deleted by the daily [`retention`] job; [`search`] reads them
//! (`GET /api/v1/access-log`).

pub mod retention;
mod search;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::access::Principal;
use crate::clock::SharedClock;
use crate::db::{new_id, Db};

pub use search::{search, AccessFilter, AccessItem};

/// What was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Customer,
    Contact,
    Deal,
    Request,
    Export,
}

/// The `object_kind` values, in the order of [`Object`].
pub const OBJECT_KINDS: [&str; 5] = ["customer", "contact", "deal", "request", "export"];

impl Object {
    pub fn as_str(self) -> &'static str {
        OBJECT_KINDS[self as usize]
    }
}

/// Which part of the object, when not the whole of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Phone,
    Email,
    Amount,
    DecisionChain,
    /// A customer's timeline (the ledger's points on it).
    Timeline,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Phone => "phone",
            Field::Email => "email",
            Field::Amount => "amount",
            Field::DecisionChain => "decision_chain",
            Field::Timeline => "timeline",
        }
    }
}

/// Why it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Shown on its own.
    View,
    /// A masked value shown in full.
    Reveal,
    Export,
    /// Part of a listed page.
    List,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::View => "view",
            Purpose::Reveal => "reveal",
            Purpose::Export => "export",
            Purpose::List => "list",
        }
    }
}

/// One read: who (a member or an API key), what, and why. The time and the client IP are
/// taken by [`AccessLog::record`].
#[derive(Debug, Clone)]
pub struct AccessEntry {
    pub org_id: String,
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub object: Object,
    pub object_id: String,
    pub field: Option<Field>,
    pub purpose: Purpose,
}

impl AccessEntry {
    /// A read through the API by `p`'s key.
    pub fn by_key(p: &Principal, object: Object, object_id: &str, purpose: Purpose) -> Self {
        AccessEntry {
            org_id: p.org_id.clone(),
            user_id: None,
            api_key_id: Some(p.api_key_id.clone()),
            object,
            object_id: object_id.to_string(),
            field: None,
            purpose,
        }
    }

    /// A read by a signed-in member.
    pub fn by_member(
        org_id: &str,
        user_id: &str,
        object: Object,
        object_id: &str,
        purpose: Purpose,
    ) -> Self {
        AccessEntry {
            org_id: org_id.to_string(),
            user_id: Some(user_id.to_string()),
            api_key_id: None,
            object,
            object_id: object_id.to_string(),
            field: None,
            purpose,
        }
    }

    /// The same read, of one field.
    pub fn field(mut self, field: Field) -> Self {
        self.field = Some(field);
        self
    }
}

/// An entry as it is written.
#[derive(Debug)]
struct Row {
    id: String,
    at: i64,
    client_ip: Option<String>,
    entry: AccessEntry,
}

enum Msg {
    Rows(Vec<Row>),
    /// Write what is queued, then answer.
    Flush(oneshot::Sender<()>),
    /// Write what is queued, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages (one per [`AccessLog::record`] or [`AccessLog::record_all`] call) the queue
    /// holds; beyond that entries are dropped and counted.
    pub capacity: usize,
    /// Entries that make a batch be written at once.
    pub batch: usize,
    /// The longest an entry waits for its batch.
    pub interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: 8192,
            batch: 500,
            interval: Duration::from_millis(200),
        }
    }
}

/// Rows per `INSERT` (10 parameters each; both databases accept far more).
const ROWS_PER_INSERT: usize = 500;
/// At most one "queue full" warning per this many milliseconds.
const WARN_EVERY_MS: i64 = 10_000;

/// The handle every request holds (cheap to clone). A disabled log records nothing.
#[derive(Clone)]
pub struct AccessLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    queue: mpsc::Sender<Msg>,
    clock: SharedClock,
    dropped: AtomicU64,
    started: Instant,
    /// Milliseconds since `started` of the last "queue full" warning (-1: none yet).
    last_warning: AtomicI64,
}

impl AccessLog {
    /// Starts the writer. The task ends after [`AccessLog::close`] (or when every handle
    /// is gone), having written what was queued.
    pub fn start(db: Db, clock: SharedClock, options: Options) -> (AccessLog, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(options.capacity.max(1));
        let task = tokio::spawn(write_loop(db, rx, options));
        (AccessLog::on(queue, clock), task)
    }

    /// `access_log = false`: nothing is recorded.
    pub fn disabled() -> AccessLog {
        AccessLog { inner: None }
    }

    fn on(queue: mpsc::Sender<Msg>, clock: SharedClock) -> AccessLog {
        AccessLog {
            inner: Some(Arc::new(Inner {
                queue,
                clock,
                dropped: AtomicU64::new(0),
                started: Instant::now(),
                last_warning: AtomicI64::new(-1),
            })),
        }
    }

    /// Queues one entry without waiting: when the queue is full it is dropped, counted in
    /// `access_log_dropped_total` and warned about (at most every 10 s). Call it in the
    /// request's task, which carries the client IP.
    pub fn record(&self, entry: AccessEntry) {
        self.record_all([entry]);
    }

    /// Queues several entries as one message (a listed page).
    pub fn record_all(&self, entries: impl IntoIterator<Item = AccessEntry>) {
        let Some(inner) = &self.inner else { return };
        let at = inner.clock.now_ms();
        let client_ip = crate::access::audit::CLIENT_IP
            .try_with(Clone::clone)
            .ok()
            .flatten();
        let rows: Vec<Row> = entries
            .into_iter()
            .map(|entry| Row {
                id: new_id(),
                at,
                client_ip: client_ip.clone(),
                entry,
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let n = rows.len() as u64;
        match inner.queue.try_send(Msg::Rows(rows)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => inner.dropped(n, "queue_full"),
            Err(mpsc::error::TrySendError::Closed(_)) => inner.dropped(n, "stopped"),
        }
    }

    /// A read by `p`'s key of the whole object (the one line a read handler adds).
    pub fn key_read(&self, p: &Principal, object: Object, object_id: &str, purpose: Purpose) {
        self.record(AccessEntry::by_key(p, object, object_id, purpose));
    }

    /// Waits until everything queued before the call is written.
    pub async fn flush(&self) {
        self.ask(Msg::Flush).await;
    }

    /// Writes what is queued and stops the writer (the server's shutdown, after the last
    /// request). Later entries are dropped.
    pub async fn close(&self) {
        self.ask(Msg::Close).await;
    }

    async fn ask(&self, msg: fn(oneshot::Sender<()>) -> Msg) {
        let Some(inner) = &self.inner else { return };
        let (reply, done) = oneshot::channel();
        if inner.queue.send(msg(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Entries this handle's log dropped since it started (queue full or writer stopped).
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }
}

impl Inner {
    fn dropped(&self, n: u64, reason: &'static str) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("access_log_dropped_total", "reason" => reason).increment(n);
        let now = self.started.elapsed().as_millis() as i64;
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last < 0 || now - last >= WARN_EVERY_MS)
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                reason,
                dropped_so_far = self.dropped.load(Ordering::Relaxed),
                "access log entries dropped: the writer is behind (or stopped); see access_log_dropped_total"
            );
        }
    }
}

/// Collects entries until a batch is full, `interval` has passed since the first unwritten
/// one, or someone asks for a flush; then writes them in one transaction.
async fn write_loop(db: Db, mut rx: mpsc::Receiver<Msg>, options: Options) {
    let mut pending: Vec<Row> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            () = timer => {
                write(&db, &mut pending).await;
                deadline = None;
                continue;
            }
        };
        match msg {
            Some(Msg::Rows(rows)) => {
                pending.extend(rows);
                if pending.len() >= options.batch {
                    write(&db, &mut pending).await;
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + options.interval);
                }
            }
            Some(Msg::Flush(reply)) => {
                write(&db, &mut pending).await;
                deadline = None;
                let _ = reply.send(());
            }
            Some(Msg::Close(reply)) => {
                rx.close();
                let mut waiting = vec![reply];
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Rows(rows) => pending.extend(rows),
                        Msg::Flush(r) | Msg::Close(r) => waiting.push(r),
                    }
                }
                write(&db, &mut pending).await;
                for r in waiting {
                    let _ = r.send(());
                }
                return;
            }
            None => {
                write(&db, &mut pending).await;
                return;
            }
        }
    }
}

/// Writes and empties `pending`; a failed batch is tried once more, then dropped, counted
/// and logged (by count only).
async fn write(db: &Db, pending: &mut Vec<Row>) {
    if pending.is_empty() {
        return;
    }
    let mut result = insert(db, pending).await;
    if result.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = insert(db, pending).await;
    }
    let n = pending.len() as u64;
    match result {
        Ok(()) => {
            metrics::counter!("access_log_written_total").increment(n);
            metrics::histogram!("access_log_batch_size").record(n as f64);
        }
        Err(e) => {
            metrics::counter!("access_log_dropped_total", "reason" => "write_failed").increment(n);
            tracing::warn!(error = %e, entries = n, "access log batch could not be written; dropped");
        }
    }
    pending.clear();
}

async fn insert(db: &Db, rows: &[Row]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO access_log (id, org_id, at, user_id, api_key_id, object_kind, object_id, \
             field, purpose, client_ip) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let b = i * 10;
            sql.push('(');
            for c in 1..=10 {
                if c > 1 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", b + c));
            }
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for r in chunk {
            let e = &r.entry;
            q = q
                .bind(r.id.as_str())
                .bind(e.org_id.as_str())
                .bind(r.at)
                .bind(e.user_id.as_deref())
                .bind(e.api_key_id.as_deref())
                .bind(e.object.as_str())
                .bind(e.object_id.as_str())
                .bind(e.field.map(Field::as_str))
                .bind(e.purpose.as_str())
                .bind(r.client_ip.as_deref());
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> AccessEntry {
        AccessEntry::by_member(
            "org",
            "u1",
            Object::Customer,
            &format!("c{n}"),
            Purpose::View,
        )
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (queue, mut rx) = mpsc::channel(2);
        let log = AccessLog::on(queue, Arc::new(crate::clock::SystemClock));
        // No writer drains the queue: the third and later calls must return at once.
        let started = Instant::now();
        for n in 0..5 {
            log.record(entry(n));
        }
        log.record_all((5..8).map(entry));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            log.dropped(),
            3 + 3,
            "2 queued, 3 single entries and a page of 3 dropped"
        );
        let mut queued = Vec::new();
        while let Ok(Msg::Rows(rows)) = rx.try_recv() {
            queued.extend(rows.into_iter().map(|r| r.entry.object_id));
        }
        assert_eq!(queued, ["c0", "c1"]);
    }

    #[tokio::test]
    async fn a_disabled_log_records_nothing_and_flushes_at_once() {
        let log = AccessLog::disabled();
        log.record(entry(1));
        log.flush().await;
        log.close().await;
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn kinds_are_fixed_keys() {
        assert_eq!(Object::Export.as_str(), "export");
        assert_eq!(Object::Customer.as_str(), "customer");
        assert_eq!(Field::DecisionChain.as_str(), "decision_chain");
        assert_eq!(Purpose::List.as_str(), "list");
    }
}
