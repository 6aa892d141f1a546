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
//! refuses (unreachable, busy) is kept and retried until it commits; waiters
//! give up after their own deadline and say so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::audit::{self, AuditEntry};
use crate::store::{Db, Scope, StoreError};

/// Writes one batch holds at most.
const MAX_BATCH: usize = 2048;
/// Longest queued writes wait for others to share their commit.
const LINGER: Duration = Duration::from_millis(5);
/// Writes waiting in the queue at most; past it, queueing waits (backpressure).
const QUEUE: usize = 65_536;

/// One write.
#[derive(Debug, Clone)]
pub enum Write {
    /// An audit event appended to `tenant`'s chain (skipped if its id is stored).
    Audit {
        /// The tenant whose chain it joins.
        tenant: String,
        /// The event.
        entry: Box<AuditEntry>,
    },
    /// A usage event (stored once per id).
    Usage {
        /// Event id.
        id: String,
        /// Tenant.
        tenant: String,
        /// Cluster ("" if none).
        cluster: String,
        /// One of [`audit::USAGE_TYPES`].
        usage_type: String,
        /// Quantity.
        quantity: f64,
        /// Unix milliseconds.
        time_ms: i64,
    },
    /// A usage the control plane measured itself (a command it counted).
    /// Nobody retries it, so it needs no id of its own: the batch sums those
    /// of one tenant, cluster, type and hour into one stored event (a row
    /// per batch, not per command; usage is billed by its sum).
    Meter {
        /// Tenant.
        tenant: String,
        /// Cluster ("" if none).
        cluster: String,
        /// One of [`audit::USAGE_TYPES`].
        usage_type: String,
        /// Quantity.
        quantity: f64,
        /// Unix milliseconds.
        time_ms: i64,
    },
    /// An API token was used at `at` (Unix seconds).
    TokenUsed {
        /// The token's id.
        token_id: String,
        /// When.
        at: i64,
    },
    /// A web app session was used at `at_ms` (Unix milliseconds).
    SessionSeen {
        /// The session's id (its cookie's hash).
        id_hash: String,
        /// When.
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
}

struct Job {
    writes: Vec<Write>,
    done: Option<oneshot::Sender<()>>,
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
}

impl Writer {
    /// Starts the writer task of `db`.
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let urgent = Arc::new(Notify::new());
        let task = tokio::spawn(run(db, rx, urgent.clone(), stats.clone()));
        Self { tx, urgent, task: Arc::new(Mutex::new(Some(task))), stats }
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
            committed.await.map_err(|_| WriteError::Stopped)
        };
        tokio::time::timeout(within, wait).await.map_err(|_| WriteError::Timeout(within))?
    }

    /// Commits everything queued, then stops the task (at shutdown, after
    /// the listeners drained). Writes queued later are refused.
    pub async fn close(&self) {
        let Some(task) = self.task.lock().await.take() else { return };
        let _ = self.tx.send(Job { writes: Vec::new(), done: None, urgent: true, stop: true }).await;
        self.urgent.notify_one();
        let _ = task.await;
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Job>, urgent: Arc<Notify>, stats: Arc<Stats>) {
    while let Some(first) = rx.recv().await {
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
        let summed = sum_metered(jobs.iter().flat_map(|j| j.writes.iter()));
        let writes = batch(jobs.iter().flat_map(|j| j.writes.iter()), &summed);
        if !writes.is_empty() {
            let mut backoff = Duration::from_millis(20);
            // Kept until it commits: nothing queued is ever dropped.
            while let Err(e) = commit(&db, &writes).await {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, writes = writes.len(), "a batch of writes was not committed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            stats.batches.fetch_add(1, Ordering::Relaxed);
            // As queued (a batch's meters count each, not once per sum).
            stats.writes.fetch_add(n as u64, Ordering::Relaxed);
        }
        for job in jobs {
            if let Some(done) = job.done {
                let _ = done.send(());
            }
        }
        if stop {
            rx.close();
            // What was queued before the close still commits.
            let mut rest = Vec::new();
            while let Ok(job) = rx.try_recv() {
                rest.push(job);
            }
            let summed = sum_metered(rest.iter().flat_map(|j| j.writes.iter()));
            let writes = batch(rest.iter().flat_map(|j| j.writes.iter()), &summed);
            if !writes.is_empty() && commit(&db, &writes).await.is_err() {
                tracing::error!(writes = writes.len(), "writes queued at shutdown were not committed");
            }
            for job in rest {
                if let Some(done) = job.done {
                    let _ = done.send(());
                }
            }
            return;
        }
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

/// The writes a batch commits: `writes` but their meters, then `summed`.
fn batch<'a>(writes: impl Iterator<Item = &'a Write>, summed: &'a [Write]) -> Vec<&'a Write> {
    writes.filter(|w| !matches!(w, Write::Meter { .. })).chain(summed).collect()
}

/// One transaction for the whole batch.
async fn commit(db: &Db, writes: &[&Write]) -> Result<(), StoreError> {
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
        let batch = batch(writes.iter(), &summed);
        assert_eq!(batch.len(), 2 + 3);
        assert!(!batch.iter().any(|w| matches!(w, Write::Meter { .. })));
        assert!(batch.iter().any(|w| matches!(w, Write::Usage { id, .. } if id == "from-a-relay")));
    }
}
