//! The one task that writes what requests produce: audit decision records,
//! usage events, events relays publish, token and web session last use. Requests queue
//! their writes and go on; the writer takes everything queued (waiting up to
//! 5 ms for more while nobody waits on the batch) and commits it as one
//! transaction (group commit: one fsync for many requests). A
//! request that must not go on before its record is durable (a write, an
//! exec, reading secrets; relays' events before they are acknowledged)
//! waits for the commit of its batch.
//!
//! The task belongs to the control plane, not to any request, so a client
//! that disconnects cannot cancel a write half-way. A batch the database
//! cannot take (unreachable, busy) is kept and retried until it commits;
//! waiters give up after their own deadline and say so. A batch it refuses
//! for what it holds (a constraint, a value it cannot store) is committed
//! in halves, down to the one write refused, which is set aside in the
//! dead letters and its waiter told: one bad write never holds back every
//! tenant's records behind it.
//!
//! At shutdown the writer commits what is queued. With a spool directory,
//! a batch the database still refuses when the drain's time is up is
//! written to disk instead ([`spool`]), and committed by the next start on
//! that directory: an audit event is never dropped because the database
//! was down when a replica stopped.

mod spool;

pub use spool::check_dir as check_spool_dir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, AuditEntry};
use crate::store::{Db, Scope, StoreError};

/// Writes one batch holds at most.
const MAX_BATCH: usize = 2048;
/// Longest queued writes wait for others to share their commit.
const LINGER: Duration = Duration::from_millis(5);
/// Writes waiting in the queue at most; past it, queueing waits (backpressure).
const QUEUE: usize = 65_536;

/// One write. (Spooled to disk at a drain: every field has a default, so
/// that a file an older version wrote still reads after a field is added.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Write {
    /// An audit event appended to `tenant`'s chain (skipped if its id is stored).
    Audit {
        /// The tenant whose chain it joins.
        #[serde(default)]
        tenant: String,
        /// The event.
        #[serde(default)]
        entry: Box<AuditEntry>,
    },
    /// A usage event (stored once per id).
    Usage {
        /// Event id.
        #[serde(default)]
        id: String,
        /// Tenant.
        #[serde(default)]
        tenant: String,
        /// Cluster ("" if none).
        #[serde(default)]
        cluster: String,
        /// One of [`audit::USAGE_TYPES`].
        #[serde(default)]
        usage_type: String,
        /// Quantity.
        #[serde(default)]
        quantity: f64,
        /// Unix milliseconds.
        #[serde(default)]
        time_ms: i64,
    },
    /// A usage the control plane measured itself (a command it counted).
    /// Nobody retries it, so it needs no id of its own: the batch sums those
    /// of one tenant, cluster, type and hour into one stored event (a row
    /// per batch, not per command; usage is billed by its sum).
    Meter {
        /// Tenant.
        #[serde(default)]
        tenant: String,
        /// Cluster ("" if none).
        #[serde(default)]
        cluster: String,
        /// One of [`audit::USAGE_TYPES`].
        #[serde(default)]
        usage_type: String,
        /// Quantity.
        #[serde(default)]
        quantity: f64,
        /// Unix milliseconds.
        #[serde(default)]
        time_ms: i64,
    },
    /// An API token was used at `at` (Unix seconds).
    TokenUsed {
        /// The token's id.
        #[serde(default)]
        token_id: String,
        /// When.
        #[serde(default)]
        at: i64,
    },
    /// A web app session was used at `at_ms` (Unix milliseconds).
    SessionSeen {
        /// The session's id (its cookie's hash).
        #[serde(default)]
        id_hash: String,
        /// When.
        #[serde(default)]
        at_ms: i64,
    },
}

/// Why a write did not happen in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The writer has stopped (the control plane is shutting down).
    #[error("the writer has stopped")]
    Stopped,
    /// The batch was not committed before the caller's deadline (the
    /// database is unreachable or slow); it stays queued and will commit.
    #[error("the batch was not committed within {0:?}")]
    Timeout(Duration),
    /// The database refused these writes (their indices among those
    /// given) for what they hold, each tried alone; they are
    /// set aside in the dead letters, not stored. The others committed.
    #[error("the database refused {} of the writes; they are set aside in the writer's dead letters", .0.len())]
    Refused(Vec<usize>),
}

impl WriteError {
    /// What became of the writes, for a log line ("…; {fate}").
    pub fn fate(&self) -> &'static str {
        match self {
            Self::Stopped => "it was not queued: the writer has stopped",
            Self::Timeout(_) => "it stays queued and will commit",
            Self::Refused(_) => {
                "the database refused it; it is set aside (the dead letters, or logged whole), not stored"
            }
        }
    }
}

struct Job {
    writes: Vec<Write>,
    done: Option<oneshot::Sender<Result<(), WriteError>>>,
    /// Commit without lingering (a request is waiting on it).
    urgent: bool,
    /// The last job: commit and stop.
    stop: bool,
}

/// The writer of one database. Cheap to share.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    /// Ends the linger when an urgent job is queued.
    urgent: Arc<Notify>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    stats: Arc<Stats>,
    /// Whether it has a spool directory.
    spooling: bool,
    /// Tells the task to spool what it holds and stop.
    spool_now: CancellationToken,
}

/// Counters of the writer, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Writes committed.
    pub writes: AtomicU64,
    /// Commits the database refused (each retried).
    pub failures: AtomicU64,
    /// Writes the database refused for what they hold, set aside.
    pub set_aside: AtomicU64,
    /// Commit tries left behind past [`TRY_DEADLINE`].
    pub stragglers: AtomicU64,
}

impl Writer {
    /// Starts the writer task of `db`. With `spool`, it first commits what
    /// an earlier drain spooled there, and a drain spools there what the
    /// database has not taken in time ([`close`](Self::close)).
    pub fn start(db: Db, spool: Option<PathBuf>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let urgent = Arc::new(Notify::new());
        let spool_now = CancellationToken::new();
        let spooling = spool.is_some();
        let task = Task { db, stats: stats.clone(), spool, spool_now: spool_now.clone() };
        let task = tokio::spawn(run(task, rx, urgent.clone()));
        Self { tx, urgent, task: Arc::new(Mutex::new(Some(task))), stats, spooling, spool_now }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues `writes` and returns at once (it waits only while the queue is
    /// full). They commit with the next batch.
    pub async fn queue(&self, writes: Vec<Write>) -> Result<(), WriteError> {
        self.tx.send(Job { writes, done: None, urgent: false, stop: false }).await.map_err(|_| WriteError::Stopped)
    }

    /// Queues `writes` if the queue has room, without waiting (for writes
    /// that may be lost under overload, like a token's last use).
    pub fn try_queue(&self, writes: Vec<Write>) -> Result<(), WriteError> {
        self.tx.try_send(Job { writes, done: None, urgent: false, stop: false }).map_err(|_| WriteError::Stopped)
    }

    /// Queues `writes` and waits until their batch is committed, at most
    /// `within`. The batch commits at once: for a request that waits on it.
    pub async fn commit(&self, writes: Vec<Write>, within: Duration) -> Result<(), WriteError> {
        self.wait_for(writes, true, within).await
    }

    /// Queues `writes` and waits until their batch is committed, at most
    /// `within`, letting the batch linger like queued writes do: for
    /// callers no request waits on (relays' events, acknowledged once
    /// stored), so that their commits share one transaction and one fsync.
    pub async fn commit_batched(&self, writes: Vec<Write>, within: Duration) -> Result<(), WriteError> {
        self.wait_for(writes, false, within).await
    }

    async fn wait_for(&self, writes: Vec<Write>, urgent: bool, within: Duration) -> Result<(), WriteError> {
        let (done, committed) = oneshot::channel();
        let job = Job { writes, done: Some(done), urgent, stop: false };
        let wait = async {
            self.tx.send(job).await.map_err(|_| WriteError::Stopped)?;
            if urgent {
                self.urgent.notify_one();
            }
            committed.await.map_err(|_| WriteError::Stopped)?
        };
        tokio::time::timeout(within, wait).await.map_err(|_| WriteError::Timeout(within))?
    }

    /// Commits everything queued, then stops the task (at shutdown, after
    /// the listeners drained). Writes queued later are refused. With a
    /// spool directory, what the database has not taken `within` is written
    /// there instead (for the next start to commit); without one, this
    /// waits for the database however long it takes.
    pub async fn close(&self, within: Duration) {
        let Some(mut task) = self.task.lock().await.take() else { return };
        let stop = async {
            // Waits while the queue is full (the database down for long).
            let _ = self.tx.send(Job { writes: Vec::new(), done: None, urgent: true, stop: true }).await;
            self.urgent.notify_one();
            let _ = (&mut task).await;
        };
        if !self.spooling {
            stop.await;
        } else if tokio::time::timeout(within, stop).await.is_err() {
            self.spool_now.cancel();
            let _ = task.await;
        }
    }
}

/// What the writer task holds.
struct Task {
    db: Db,
    stats: Arc<Stats>,
    /// The spool directory (also where refused writes are set aside).
    spool: Option<PathBuf>,
    /// Spool what is held and stop.
    spool_now: CancellationToken,
}

/// Where a write came from: its job's index in the batch, and its index
/// among that job's writes.
type Origin = (usize, usize);

/// How long one commit try may go unanswered before another is started
/// beside it (see [`Task::commit_until`]).
/// Above the pool's acquire timeout, so a database that cannot be reached
/// fails a try with its own error first.
pub const TRY_DEADLINE: Duration = Duration::from_secs(15);

/// The origin of a write that no job waits on (a sum of meters, a spooled write).
const NO_JOB: Origin = (usize::MAX, 0);

/// How one try at committing some writes ended.
enum Try {
    Committed,
    /// The database refused them for what they hold (a constraint, a value
    /// it cannot store): tried again as they are, they would fail again.
    Refused(String),
    /// Told to spool before they committed.
    Interrupted,
}

async fn run(task: Task, mut rx: mpsc::Receiver<Job>, urgent: Arc<Notify>) {
    // What the last drain spooled, before anything queued since.
    let spooled = match task.spool.clone() {
        Some(dir) => tokio::task::spawn_blocking(move || spool::load(&dir)).await.unwrap_or_default(),
        None => Vec::new(),
    };
    for (path, writes) in spooled {
        let n = writes.len();
        if let Err(rest) = task.commit_all(writes, vec![NO_JOB; n]).await {
            // Stopped before the database answered: the file stays, with
            // only what is left of it, and what is queued joins a new one.
            if rest.len() < n
                && let Err(e) = spool::replace(&path, &rest.iter().collect::<Vec<_>>())
            {
                // Kept whole: tried whole again (nothing is lost).
                tracing::warn!(file = %path.display(), error = %e, "a spool file could not be cut to what is left of it");
            }
            task.spool_rest(&mut rx, &[]);
            return;
        }
        task.stats.batches.fetch_add(1, Ordering::Relaxed);
        task.stats.writes.fetch_add(n as u64, Ordering::Relaxed);
        tracing::info!(file = %path.display(), writes = n, "committed the writes an earlier drain spooled");
        spool::remove(&path);
    }
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
            () = task.spool_now.cancelled() => {
                task.spool_rest(&mut rx, &[]);
                return;
            }
        };
        // Nobody in a hurry: linger a moment so one commit takes many
        // requests' writes. A sleep, not a receive per job: queueing a
        // write then wakes nobody. An urgent waiter (a must-audit request,
        // a refusal) ends the wait at once. (A stale notification only
        // ends some later linger early.)
        if !(first.urgent || first.stop) {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = urgent.notified() => {}
            }
        }
        let mut n = first.writes.len();
        let mut jobs = vec![first];
        while n < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.writes.len();
                    jobs.push(job);
                }
                // Drained, or closed: commit what we have.
                Err(_) => break,
            }
        }
        let stop = jobs.iter().any(|j| j.stop);
        if let Err(rest) = task.process(jobs).await {
            task.spool_rest(&mut rx, &rest);
            return;
        }
        if stop {
            rx.close();
            // What was queued before the close still commits.
            let mut rest = Vec::new();
            while let Ok(job) = rx.try_recv() {
                rest.push(job);
            }
            if let Err(rest) = task.process(rest).await {
                task.spool_rest(&mut rx, &rest);
            }
            return;
        }
    }
}

impl Task {
    /// Commits the writes of `jobs` (kept until they commit: nothing queued
    /// is ever dropped) and tells their waiters. `Err`: told to spool
    /// first, with the writes not committed (their waiters are told the
    /// writer stopped).
    async fn process(&self, mut jobs: Vec<Job>) -> Result<(), Vec<Write>> {
        // As queued (a batch's meters count each, not once per sum).
        let queued: usize = jobs.iter().map(|j| j.writes.len()).sum();
        let (writes, origins) = take_batch(&mut jobs);
        let refused = if writes.is_empty() { Vec::new() } else { self.commit_all(writes, origins).await? };
        if queued > 0 {
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.writes.fetch_add(queued as u64, Ordering::Relaxed);
        }
        for (i, job) in jobs.into_iter().enumerate() {
            if let Some(done) = job.done {
                let mine: Vec<usize> = refused.iter().filter(|(j, _)| *j == i).map(|(_, w)| *w).collect();
                let _ = done.send(if mine.is_empty() { Ok(()) } else { Err(WriteError::Refused(mine)) });
            }
        }
        Ok(())
    }

    /// Commits `writes` (`origins`: the job each came from), retrying while
    /// the database is unreachable. A part it refuses for what it holds is
    /// split in halves, committed in order, down to the one write refused,
    /// which is set aside ([`Self::set_aside`]): one bad write never holds
    /// back the others. The origins of the writes set aside; `Err`: told to
    /// spool first, with the writes not committed.
    async fn commit_all(&self, writes: Vec<Write>, origins: Vec<Origin>) -> Result<Vec<Origin>, Vec<Write>> {
        let mut parts = std::collections::VecDeque::from([(Arc::new(writes), origins)]);
        let mut set_aside = Vec::new();
        while let Some((part, origins)) = parts.pop_front() {
            match self.commit_until(&part).await {
                Try::Committed => {}
                Try::Interrupted => {
                    let mut rest = Arc::unwrap_or_clone(part);
                    rest.extend(parts.into_iter().flat_map(|(p, _)| Arc::unwrap_or_clone(p)));
                    return Err(rest);
                }
                Try::Refused(why) if part.len() > 1 => {
                    tracing::warn!(error = %why, writes = part.len(), "the database refused a batch; committing it in halves");
                    let mut first = Arc::unwrap_or_clone(part);
                    let second = first.split_off(first.len() / 2);
                    let mut first_origins = origins;
                    let second_origins = first_origins.split_off(first.len());
                    parts.push_front((Arc::new(second), second_origins));
                    parts.push_front((Arc::new(first), first_origins));
                }
                // Tried alone once: none of the writer's statements can be
                // refused by a race (no foreign keys, the chain head
                // row-locked, inserts `ON CONFLICT DO NOTHING`), and every
                // try holds up every tenant's writes.
                Try::Refused(why) => {
                    self.set_aside(&part[0], &why).await;
                    set_aside.extend(origins.into_iter().filter(|&o| o != NO_JOB));
                }
            }
        }
        Ok(set_aside)
    }

    /// Tries `writes` until they commit, the database refuses them, or the
    /// writer is told to spool. Each try runs in a task of its own, which
    /// goes on when nobody waits for it any more: it commits, or fails and
    /// rolls back, and if the process exits first the database rolls its
    /// transaction back; no future dropped half-way leaves a connection
    /// inside one. (A try that commits after all, its writes spooled too,
    /// is harmless: the next start's commit of the spool stores nothing
    /// twice.)
    ///
    /// A try with no answer within [`TRY_DEADLINE`] (its connection gone
    /// silent mid-transaction: only TCP's own give-up, ~15 min, would end
    /// it) is left to finish on its own and another is started beside it;
    /// at most one is left behind at a time, and if it commits after all,
    /// so have these writes.
    async fn commit_until(&self, writes: &Arc<Vec<Write>>) -> Try {
        let mut backoff = Duration::from_millis(20);
        let mut straggler: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;
        loop {
            let mut attempt = tokio::spawn({
                let (db, writes) = (self.db.clone(), writes.clone());
                async move { commit(&db, &writes).await }
            });
            let deadline = tokio::time::Instant::now() + TRY_DEADLINE;
            let error = loop {
                tokio::select! {
                    biased;
                    result = &mut attempt => break match classify(result, self.db.backend()) {
                        Ok(()) => return Try::Committed,
                        Err(Failure::Refused(why)) => return Try::Refused(why),
                        Err(Failure::Transient(error)) => error,
                    },
                    result = async { straggler.as_mut().expect("guarded").await }, if straggler.is_some() => {
                        straggler = None;
                        // Committed late: so are these writes (the try
                        // under way stores nothing twice).
                        match classify(result, self.db.backend()) {
                            Ok(()) => return Try::Committed,
                            Err(Failure::Refused(e) | Failure::Transient(e)) => {
                                tracing::warn!(error = %e, "a commit try left behind failed; the one beside it goes on");
                            }
                        }
                    }
                    () = tokio::time::sleep_until(deadline), if straggler.is_none() => {
                        self.stats.stragglers.fetch_add(1, Ordering::Relaxed);
                        straggler = Some(attempt);
                        break format!("no answer within {TRY_DEADLINE:?}; trying again beside it");
                    }
                    () = self.spool_now.cancelled() => return Try::Interrupted,
                }
            };
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %error, writes = writes.len(), "a batch of writes was not committed; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.spool_now.cancelled() => return Try::Interrupted,
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Keeps a write the database refused, tried alone, out of the way:
    /// appended to `dead-letters.jsonl` in the spool directory (fsynced),
    /// or, without one, logged whole (audit records and usage hold no
    /// secrets). Counted in `kubechat_cp_writer_set_aside_total`.
    async fn set_aside(&self, write: &Write, why: &str) {
        self.stats.set_aside.fetch_add(1, Ordering::Relaxed);
        // (The fsync off the runtime's threads.)
        let kept = match self.spool.clone() {
            Some(dir) => {
                let (line, why) = (write.clone(), why.to_string());
                let appended =
                    tokio::task::spawn_blocking(move || spool::set_aside(&dir, &line, &why, spool::DEAD_LETTERS_MAX))
                        .await;
                Some(appended.unwrap_or_else(|e| Err(std::io::Error::other(e))))
            }
            None => None,
        };
        match kept {
            Some(Ok(path)) => tracing::error!(
                file = %path.display(),
                error = %why,
                "the database refused a write; it is set aside in the dead letters"
            ),
            Some(Err(_)) | None => tracing::error!(
                write = %serde_json::to_string(write).unwrap_or_default(),
                error = %why,
                set_aside_error = %kept.and_then(Result::err).map(|e| e.to_string()).unwrap_or_default(),
                "the database refused a write and the dead letters cannot keep it (no spool directory, or set_aside_error says why); it is logged here"
            ),
        }
    }

    /// At the drain's end, the database still not answering: writes
    /// `current` (writes not committed) and everything still queued to the
    /// spool. Their waiters are told the writer stopped.
    fn spool_rest(&self, rx: &mut mpsc::Receiver<Job>, current: &[Write]) {
        rx.close();
        let mut rest = Vec::new();
        while let Ok(job) = rx.try_recv() {
            rest.push(job);
        }
        let (rest, _) = take_batch(&mut rest);
        let writes: Vec<&Write> = current.iter().chain(&rest).collect();
        if writes.is_empty() {
            return;
        }
        let dir = self.spool.as_deref();
        match dir.map(|d| (d, spool::save(d, &writes))) {
            Some((_, Ok(path))) => tracing::warn!(
                file = %path.display(),
                writes = writes.len(),
                "the database did not take these writes before the drain ended; spooled for the next start to commit"
            ),
            Some((d, Err(e))) => tracing::error!(
                dir = %d.display(),
                error = %e,
                writes = writes.len(),
                "writes LOST: the database did not take them before the drain ended and they could not be spooled"
            ),
            None => tracing::error!(writes = writes.len(), "writes LOST: no spool directory (--spool-dir)"),
        }
    }
}

/// Why a commit try failed.
#[derive(Debug)]
enum Failure {
    /// Trying the same writes again would fail again.
    Refused(String),
    /// The database is unreachable, busy or shutting down: retried.
    Transient(String),
}

/// How a commit try's task ended. A panic inside it is a refusal: the same
/// writes would panic the same way, and retrying them for ever would hold
/// back every tenant's writes (they are split and set aside instead).
fn classify(
    result: Result<Result<(), StoreError>, tokio::task::JoinError>,
    backend: crate::store::Backend,
) -> Result<(), Failure> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if refused(&e, backend) => Err(Failure::Refused(e.to_string())),
        Ok(Err(e)) => Err(Failure::Transient(e.to_string())),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Failure::Refused(format!("committing these writes panicked: {what}")))
        }
        Err(e) => Err(Failure::Transient(e.to_string())),
    }
}

/// Whether the database refused a commit for what it holds (a constraint,
/// a value it cannot store, a limit), so that trying the same writes again
/// would fail again — not for being unreachable, busy or shutting down.
fn refused(e: &StoreError, backend: crate::store::Backend) -> bool {
    match e {
        StoreError::Conflict { .. } | StoreError::LimitReached { .. } | StoreError::Corrupt(_) => true,
        // (sqlx's constraint kinds are all class 23 / SQLITE_CONSTRAINT.)
        StoreError::Unavailable(sqlx::Error::Database(d)) => {
            d.code().is_some_and(|code| match backend {
                // SQLSTATE classes 22 (data exception), 23 (integrity
                // constraint violation), 54 (program limit exceeded).
                crate::store::Backend::Postgres => ["22", "23", "54"].iter().any(|c| code.starts_with(c)),
                // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH,
                // their extended codes included.
                crate::store::Backend::Sqlite => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 18..=20)),
            })
        }
        StoreError::Unavailable(_) => false,
    }
}

/// The batch's [`Write::Meter`]s summed per tenant, cluster, type and UTC
/// hour, as usage events with ids of their own. Made once a batch, before
/// its first try: a commit that went through but was reported failed is
/// retried with the same ids, so it is not counted twice.
fn sum_metered<'a>(writes: impl Iterator<Item = &'a Write>) -> Vec<Write> {
    let mut sums: BTreeMap<(&str, &str, &str, i64), (f64, i64)> = BTreeMap::new();
    for w in writes {
        if let Write::Meter { tenant, cluster, usage_type, quantity, time_ms } = w {
            let sum =
                sums.entry((tenant, cluster, usage_type, time_ms.div_euclid(3_600_000))).or_insert((0.0, *time_ms));
            sum.0 += quantity;
            sum.1 = sum.1.max(*time_ms);
        }
    }
    sums.into_iter()
        .map(|((tenant, cluster, usage_type, _), (quantity, time_ms))| Write::Usage {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.to_string(),
            cluster: cluster.to_string(),
            usage_type: usage_type.to_string(),
            quantity,
            time_ms,
        })
        .collect()
}

/// The writes `jobs` leave to commit (taken out of them): all but their
/// meters, then the meters summed ([`sum_metered`]); and where each came
/// from ([`NO_JOB`] for the sums).
fn take_batch(jobs: &mut [Job]) -> (Vec<Write>, Vec<Origin>) {
    let summed = sum_metered(jobs.iter().flat_map(|j| j.writes.iter()));
    let mut writes = Vec::new();
    let mut origins = Vec::new();
    for (i, job) in jobs.iter_mut().enumerate() {
        for (k, w) in std::mem::take(&mut job.writes).into_iter().enumerate() {
            if !matches!(w, Write::Meter { .. }) {
                writes.push(w);
                origins.push((i, k));
            }
        }
    }
    origins.resize(writes.len() + summed.len(), NO_JOB);
    writes.extend(summed);
    (writes, origins)
}

/// One transaction for the whole batch.
async fn commit(db: &Db, writes: &[Write]) -> Result<(), StoreError> {
    let mut tx = db.begin(&Scope::Platform).await?;
    // Audit events per tenant, in queue order within each chain.
    let mut chains: BTreeMap<&str, Vec<AuditEntry>> = BTreeMap::new();
    for w in writes {
        if let Write::Audit { tenant, entry } = w {
            chains.entry(tenant.as_str()).or_default().push((**entry).clone());
        }
    }
    for (tenant, entries) in chains {
        audit::append_in(&mut tx, db.backend(), tenant, entries).await?;
    }
    // Usage rows in one statement; each token's and session's latest use once.
    let mut usage = Vec::new();
    let mut token_used: BTreeMap<&str, i64> = BTreeMap::new();
    let mut session_seen: BTreeMap<&str, i64> = BTreeMap::new();
    for w in writes {
        match w {
            Write::Usage { id, tenant, cluster, usage_type, quantity, time_ms } => {
                usage.push(audit::UsageRow { id, tenant, cluster, usage_type, quantity: *quantity, time_ms: *time_ms })
            }
            // Summed into usage events before the batch (`sum_metered`).
            Write::Meter { .. } => {}
            Write::TokenUsed { token_id, at } => {
                let latest = token_used.entry(token_id.as_str()).or_insert(*at);
                *latest = (*latest).max(*at);
            }
            Write::SessionSeen { id_hash, at_ms } => {
                let latest = session_seen.entry(id_hash.as_str()).or_insert(*at_ms);
                *latest = (*latest).max(*at_ms);
            }
            Write::Audit { .. } => {}
        }
    }
    audit::add_usage_rows_in(&mut tx, db.backend(), &usage).await?;
    for (token_id, at) in token_used {
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at)
        .bind(token_id.to_string())
        .execute(&mut *tx)
        .await?;
    }
    for (id_hash, at_ms) in session_seen {
        sqlx::query("UPDATE ui_sessions SET last_seen_ms = $1 WHERE id_hash = $2 AND last_seen_ms < $1")
            .bind(at_ms)
            .bind(id_hash.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(cluster: &str, time_ms: i64, quantity: f64) -> Write {
        Write::Meter {
            tenant: "t1".into(),
            cluster: cluster.into(),
            usage_type: "command_executed".into(),
            quantity,
            time_ms,
        }
    }

    /// A commit try that panics is a refusal (split, set aside), not a
    /// failure to retry for ever; one cancelled, or a database that does
    /// not answer, is retried.
    #[tokio::test]
    async fn a_commit_try_that_panics_is_refused_and_one_that_cannot_reach_the_database_is_retried() {
        use crate::store::Backend::Sqlite;
        let panicked = tokio::spawn(async { panic!("an index out of range") }).await;
        match classify(panicked, Sqlite) {
            Err(Failure::Refused(why)) => assert!(why.contains("panicked: an index out of range"), "{why}"),
            other => panic!("a panic is not a refusal: {other:?}"),
        }
        let formatted = tokio::spawn(async { panic!("{} out of range", 7) }).await;
        assert!(matches!(classify(formatted, Sqlite), Err(Failure::Refused(why)) if why.contains("7 out of range")));
        let down = Ok(Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)));
        assert!(matches!(classify(down, Sqlite), Err(Failure::Transient(_))));
        let never = tokio::spawn(std::future::pending::<Result<(), StoreError>>());
        never.abort();
        assert!(matches!(classify(never.await, Sqlite), Err(Failure::Transient(_))));
        assert!(classify(Ok(Ok(())), Sqlite).is_ok());
    }

    #[test]
    fn meters_are_summed_per_cluster_and_hour_and_the_rest_goes_as_queued() {
        let hour = 3_600_000;
        let relay_usage = Write::Usage {
            id: "from-a-relay".into(),
            tenant: "t1".into(),
            cluster: "c1".into(),
            usage_type: "api_request".into(),
            quantity: 1.0,
            time_ms: 10,
        };
        let writes = [
            meter("c1", 10, 1.0),
            meter("c1", 20, 2.0),
            relay_usage,
            meter("c2", 30, 1.0),
            meter("c1", hour + 5, 1.0),
            Write::TokenUsed { token_id: "k".into(), at: 1 },
        ];
        let summed = sum_metered(writes.iter());
        let mut jobs = [Job { writes: writes.to_vec(), done: None, urgent: false, stop: false }];
        let got: Vec<(String, f64, i64)> = summed
            .iter()
            .map(|w| match w {
                Write::Usage { cluster, quantity, time_ms, .. } => (cluster.clone(), *quantity, *time_ms),
                other => panic!("not a usage event: {other:?}"),
            })
            .collect();
        assert_eq!(got, [("c1".into(), 3.0, 20), ("c1".into(), 1.0, hour + 5), ("c2".into(), 1.0, 30)]);
        // Each summed event has an id of its own.
        let ids: std::collections::HashSet<&str> = summed
            .iter()
            .filter_map(|w| if let Write::Usage { id, .. } = w { Some(id.as_str()) } else { None })
            .collect();
        assert_eq!(ids.len(), 3);
        // The batch: no meter, the relay's event as sent, the token, the sums.
        let (batch, origins) = take_batch(&mut jobs);
        assert_eq!(batch.len(), 2 + 3);
        assert_eq!(origins, [(0, 2), (0, 5), NO_JOB, NO_JOB, NO_JOB], "the sums belong to no job");
        assert!(jobs[0].writes.is_empty(), "taken out of the job");
        assert!(!batch.iter().any(|w| matches!(w, Write::Meter { .. })));
        assert!(batch.iter().any(|w| matches!(w, Write::Usage { id, .. } if id == "from-a-relay")));
    }

    /// One API request of tenant t1 on `cluster`, with its own id.
    fn usage(id: &str, cluster: &str) -> Write {
        Write::Usage {
            id: id.into(),
            tenant: "t1".into(),
            cluster: cluster.into(),
            usage_type: "api_request".into(),
            quantity: 1.0,
            time_ms: 10,
        }
    }

    fn audit(id: &str) -> Write {
        Write::Audit {
            tenant: "t1".into(),
            entry: Box::new(AuditEntry {
                id: id.into(),
                tenant_id: "t1".into(),
                kind: "decision".into(),
                decision: "allow".into(),
                ..Default::default()
            }),
        }
    }

    async fn stored_ids(db: &Db) -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM audit_events WHERE tenant_id = 't1' ORDER BY seq")
            .fetch_all(db.pool())
            .await
            .expect("audit events")
    }

    /// A SQLite database and a spool directory under `dir`.
    async fn database_and_spool(dir: &std::path::Path) -> (String, PathBuf, Db) {
        let url = format!("sqlite://{}?mode=rwc", dir.join("cp.db").display());
        let db = Db::connect(&url).await.expect("database");
        (url, dir.join("spool"), db)
    }

    /// The database goes away while requests go on queueing writes (a warm
    /// request needs none), then the replica drains: what the database did
    /// not take is spooled, and the next start commits it, once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_with_the_database_down_spools_its_writes_and_the_next_start_commits_them() {
        let dir = tempfile::tempdir().expect("dir");
        let (url, spool_dir, db) = database_and_spool(dir.path()).await;
        let writer = Writer::start(db.clone(), Some(spool_dir.clone()));
        writer.commit(vec![audit("before")], Duration::from_secs(10)).await.expect("committed while up");

        // Closing the pool fails every later transaction at once.
        drop(db.pool().close());
        writer.queue(vec![audit("e1"), audit("e2"), meter("c1", 10, 1.0), meter("c1", 20, 2.0)]).await.expect("queued");
        let waited = writer.commit(vec![audit("e3")], Duration::from_millis(100)).await;
        assert_eq!(waited, Err(WriteError::Timeout(Duration::from_millis(100))), "a waiter is told, not hung");
        writer.close(Duration::from_millis(200)).await;
        assert!(writer.stats().failures.load(Ordering::Relaxed) > 0, "the database refused the batch");
        assert!(writer.queue(vec![audit("late")]).await.is_err(), "a write after the close is refused");

        let spooled = spool::load(&spool_dir);
        assert_eq!(spooled.len(), 1, "one file for the drain");
        let kinds: Vec<&str> = spooled[0]
            .1
            .iter()
            .map(|w| match w {
                Write::Audit { entry, .. } => entry.id.as_str(),
                Write::Usage { quantity, .. } => {
                    assert_eq!(*quantity, 3.0, "the meters, summed");
                    "usage"
                }
                other => panic!("unexpected write {other:?}"),
            })
            .collect();
        // e3 may have joined the batch or queued behind it: in order either way.
        let audits: Vec<&str> = kinds.iter().copied().filter(|k| *k != "usage").collect();
        assert_eq!(audits, ["e1", "e2", "e3"]);
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        // The same file twice (as when a commit went through but was
        // reported failed, and was spooled too).
        let again: Vec<&Write> = spooled[0].1.iter().collect();
        spool::save(&spool_dir, &again).expect("spooled again");

        // The next start on the same directory commits it before anything else.
        let db = Db::connect(&url).await.expect("database");
        let writer = Writer::start(db.clone(), Some(spool_dir.clone()));
        writer.commit(vec![audit("after")], Duration::from_secs(10)).await.expect("committed");
        assert_eq!(stored_ids(&db).await, ["before", "e1", "e2", "e3", "after"], "each once, in order");
        let usage: Vec<f64> = sqlx::query_scalar("SELECT quantity FROM usage_events WHERE tenant_id = 't1'")
            .fetch_all(db.pool())
            .await
            .expect("usage");
        assert_eq!(usage, [3.0], "the summed meter, stored once");
        assert!(spool::load(&spool_dir).is_empty(), "committed files are deleted");
        writer.close(Duration::from_secs(10)).await;
    }

    /// One write the database refuses (a trigger here) among others that
    /// two jobs queued: the others commit, only the refused one's waiter is
    /// told (with its index), it is set aside in the dead letters, and the
    /// writer goes on.
    /// A spooled file whose replay sets a write aside and is then cut
    /// short (the database stops answering, the writer is closed) keeps
    /// only what is left: the next start commits that and sets nothing
    /// aside twice. Before, the file stayed whole and its refused write was
    /// appended to the dead letters again at every start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_replay_keeps_only_what_is_left_and_sets_nothing_aside_twice() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, spool_dir, db) = database_and_spool(dir.path()).await;
        let spooled = [usage("u1", "poison"), usage("u2", "flaky")];
        let path = spool::save(&spool_dir, &spooled.iter().collect::<Vec<_>>()).expect("save");
        // One write refused for what it holds; one that fails as if the
        // database were unreachable (an error at run time that is not a
        // refusal: an integer overflow), until the trigger goes.
        for trigger in [
            "CREATE TRIGGER poison BEFORE INSERT ON usage_events WHEN NEW.cluster_id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'a poisoned row'); END",
            "CREATE TRIGGER flaky BEFORE INSERT ON usage_events WHEN NEW.cluster_id = 'flaky' \
             BEGIN SELECT abs(-9223372036854775807 - 1); END",
        ] {
            sqlx::query(trigger).execute(db.pool()).await.expect("trigger");
        }
        let writer = Writer::start(db.clone(), Some(spool_dir.clone()));
        let started = std::time::Instant::now();
        while writer.stats().set_aside.load(Ordering::Relaxed) == 0 {
            assert!(started.elapsed() < Duration::from_secs(30), "the refused write was never set aside");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        writer.close(Duration::from_millis(200)).await;
        let left = spool::load(&spool_dir);
        assert_eq!(left.len(), 1, "one file");
        assert_eq!(left[0].0, path, "under its own name (its place in the order)");
        let ids: Vec<String> = left[0]
            .1
            .iter()
            .map(|w| match w {
                Write::Usage { id, .. } => id.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["u2"], "only what is left");
        sqlx::query("DROP TRIGGER flaky").execute(db.pool()).await.expect("drop");
        let writer = Writer::start(db.clone(), Some(spool_dir.clone()));
        writer.commit(vec![audit("after")], Duration::from_secs(10)).await.expect("committed");
        writer.close(Duration::from_secs(10)).await;
        let usage_ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM usage_events ORDER BY id").fetch_all(db.pool()).await.expect("usage");
        assert_eq!(usage_ids, ["u2"]);
        let letters = std::fs::read_to_string(spool_dir.join(spool::DEAD_LETTERS)).expect("dead letters");
        assert_eq!(letters.lines().count(), 1, "set aside once: {letters}");
        assert!(spool::load(&spool_dir).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_write_is_set_aside_alone_and_only_its_waiter_is_told() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, spool_dir, db) = database_and_spool(dir.path()).await;
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON usage_events WHEN NEW.cluster_id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'a poisoned row'); END",
        )
        .execute(db.pool())
        .await
        .expect("trigger");
        let writer = Writer::start(db.clone(), Some(spool_dir.clone()));
        let within = Duration::from_secs(10);
        let (a, b) = tokio::join!(
            writer.commit_batched(vec![audit("a1"), usage("u1", "c1")], within),
            writer.commit_batched(vec![usage("u2", "c1"), usage("u3", "poison"), audit("b1")], within),
        );
        assert_eq!(a, Ok(()));
        assert_eq!(b, Err(WriteError::Refused(vec![1])), "the second job's second write");
        let mut ids = stored_ids(&db).await;
        ids.sort();
        assert_eq!(ids, ["a1", "b1"]);
        let usage_ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM usage_events ORDER BY id").fetch_all(db.pool()).await.expect("usage");
        assert_eq!(usage_ids, ["u1", "u2"]);
        assert_eq!(writer.stats().set_aside.load(Ordering::Relaxed), 1);
        let letters = std::fs::read_to_string(spool_dir.join(spool::DEAD_LETTERS)).expect("dead letters");
        let lines: Vec<serde_json::Value> =
            letters.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.len(), 1, "{letters}");
        assert_eq!(lines[0]["write"]["id"], "u3", "{letters}");
        assert!(lines[0]["error"].as_str().is_some_and(|e| e.contains("poisoned")), "{letters}");
        // Not a spool file to commit at the next start.
        assert!(spool::load(&spool_dir).is_empty());
        writer.commit(vec![audit("after")], within).await.expect("the writer goes on");
        writer.close(within).await;
    }
}
