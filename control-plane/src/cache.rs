//! What a warm request reads, from memory: token → owner, tenants,
//! clusters, cross-tenant roles, web app sessions, and the relays holding
//! a cluster's tunnel.
//!
//! Invalidation is explicit. Every write that changes what an entry says
//! (a revoked token, a deleted user, a role change, a suspended tenant, a
//! deleted cluster or a changed policy, a cross-tenant grant) records a row
//! in `cache_changes` in its own transaction; every replica polls that log
//! every [`POLL_INTERVAL`] and drops what it names, and the replica that
//! wrote drops it at once. So a revocation is in force on every replica
//! within the poll interval plus one query (≤ 1 s documented; 250 ms
//! typical). Entries also expire after [`MAX_AGE`], a safety net should a
//! change row be missed.
//!
//! A read that raced with an invalidation never stores its (possibly
//! stale) answer: each map has a generation that invalidations bump.
//!
//! Tunnel routes are not in the change log (relays report presence every
//! few seconds): they are refreshed in the background once older than
//! [`ROUTES_FRESH`] and read from the database only when older than
//! [`ROUTES_MAX_AGE`] or missing; this replica drops them when a report it
//! receives changes the cluster's tunnels.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::directory::Route;
use crate::model::{Cluster, Role, Tenant};
use crate::store::sessions::StoredSession;
use crate::store::{Db, Scope, StoreError, TokenOwner};

/// How long entries are trusted once the change log cannot be read
/// (unless configured otherwise).
pub const OFFLINE_TRUST: Duration = Duration::from_secs(1);
/// How often each replica reads the change log.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long a read on a miss may take (waiting for a connection included)
/// before the request gets 503 "storage unavailable; retry": a query whose
/// connection went silent mid-way (a failed-over database host) would
/// otherwise wait for TCP's own give-up, ~15 min.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// `load`, or a storage error once [`LOAD_TIMEOUT`] is over. The read runs
/// in a task of its own: given up on, it still ends on its own (answered,
/// or failed when its connection does), never dropped half-way (sqlx's
/// `begin` is not cancel-safe, transact-rs/sqlx#4394).
async fn bounded<V: Send + 'static>(
    load: impl Future<Output = Result<V, StoreError>> + Send + 'static,
) -> Result<V, StoreError> {
    let failed = |why: String| StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(why)));
    match tokio::time::timeout(LOAD_TIMEOUT, tokio::spawn(load)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(failed(format!("the read failed: {e}"))),
        Err(_) => Err(failed(format!("the database did not answer within {LOAD_TIMEOUT:?}"))),
    }
}

/// How long one read of the change log may take before another is started
/// beside it (the first may hang on a connection that went silent
/// mid-query, which nothing but TCP's own give-up, ~15 min, would end).
/// Twice the offline window: a read that slow has already cost the cache.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
/// Longest an entry is trusted without being read again.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Age after which routes are refreshed in the background.
pub const ROUTES_FRESH: Duration = Duration::from_millis(500);
/// Age after which routes are read again before use.
pub const ROUTES_MAX_AGE: Duration = Duration::from_secs(5);
/// How far back each poll reads the change log again.
const RECHECK: Duration = Duration::from_secs(5);
/// Entries one map holds at most (unknown tokens included); past it the
/// map is emptied.
const MAX_ENTRIES: usize = 100_000;

/// What a change-log row invalidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Tokens and their owners (a token revoked, a user deleted or changed).
    Tokens,
    /// One tenant (`key` its id).
    Tenant,
    /// One cluster (`key` its id).
    Cluster,
    /// Cross-tenant roles.
    Access,
    /// One web app session (`key` its cookie's hash), ended.
    Session,
    /// Everything (a tenant purged).
    All,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Tenant => "tenant",
            Self::Cluster => "cluster",
            Self::Access => "access",
            Self::Session => "session",
            Self::All => "all",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "tokens" => Self::Tokens,
            "tenant" => Self::Tenant,
            "cluster" => Self::Cluster,
            "access" => Self::Access,
            "session" => Self::Session,
            _ => Self::All,
        }
    }
}

/// Records `change` of `key` in the change log, within `tx` (the write's
/// own transaction, so the two commit together).
pub async fn note(tx: &mut sqlx::Transaction<'static, sqlx::Any>, change: Change, key: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO cache_changes (kind, key, at_ms) VALUES ($1, $2, $3)")
        .bind(change.as_str())
        .bind(key.to_string())
        .bind(crate::directory::now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

struct Entry<T> {
    value: T,
    at: Instant,
}

/// One map of entries with its generation.
struct Map<K, V> {
    entries: RwLock<HashMap<K, Entry<V>>>,
    generation: AtomicU64,
}

impl<K: Eq + Hash + Clone, V: Clone> Map<K, V> {
    fn new() -> Self {
        Self { entries: RwLock::new(HashMap::new()), generation: AtomicU64::new(0) }
    }

    fn get(&self, k: &K, max_age: Duration) -> Option<(V, Duration)> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        map.get(k).map(|e| (e.value.clone(), e.at.elapsed())).filter(|(_, age)| *age <= max_age)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Stores `v` unless the map was invalidated since `generation`.
    fn put(&self, k: K, v: V, generation: u64) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(k, Entry { value: v, at: Instant::now() });
    }

    /// Changes the entry of `k` in place, if there is one (its age kept).
    fn update(&self, k: &K, f: impl FnOnce(&mut V)) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(k) {
            f(&mut e.value);
        }
    }

    fn remove(&self, k: &K) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.remove(k);
    }

    fn clear(&self) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }

    /// Makes every entry at least `age` old (kept, but due for a refresh).
    fn age_out(&self, age: Duration) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let Some(then) = Instant::now().checked_sub(age) else { return };
        for e in map.values_mut() {
            e.at = e.at.min(then);
        }
    }
}

/// The cache of one control plane.
pub struct Cache {
    db: Db,
    tokens: Map<String, Option<TokenOwner>>,
    tenants: Map<String, Option<Tenant>>,
    clusters: Map<String, Option<Cluster>>,
    access: Map<(String, String, String), Option<Role>>,
    sessions: Map<String, Option<StoredSession>>,
    routes: Map<(String, String), Vec<Route>>,
    refreshing: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// Background refreshes, awaited when the control plane drains.
    tasks: tokio_util::task::TaskTracker,
    /// The last change-log position applied.
    seen: AtomicI64,
    /// When the last change-log read that succeeded *started*, in ms of
    /// [`Cache::epoch`] (a monotonic clock: a wall clock stepped back must
    /// not extend the trust window).
    synced_at_ms: AtomicI64,
    /// The origin of [`Cache::synced_at_ms`].
    epoch: Instant,
    /// How long entries are trusted while the change log cannot be read
    /// (ms); see [`Cache::set_offline_trust`].
    offline_trust_ms: AtomicI64,
    /// Reads answered from memory, and from the database.
    pub hits: AtomicU64,
    /// Reads that went to the database.
    pub misses: AtomicU64,
    /// Polls of the change log that failed.
    pub sync_failures: AtomicU64,
    /// Times the whole cache was dropped because the change log could not
    /// be read for longer than the offline window.
    pub drops: AtomicU64,
    /// Change-log reads left behind past [`READ_DEADLINE`].
    pub stragglers: AtomicU64,
    /// Dropped since the last read of the change log.
    dropped: std::sync::atomic::AtomicBool,
    /// When it was last dropped, in ms of [`Cache::epoch`].
    dropped_at_ms: AtomicI64,
}

impl Cache {
    /// An empty cache over `db`, positioned at the end of its change log.
    pub async fn new(db: Db) -> Result<Arc<Self>, StoreError> {
        let epoch = Instant::now();
        let mut tx = db.read(&Scope::Platform).await?;
        let seen: Option<i64> =
            sqlx::query("SELECT MAX(seq) AS s FROM cache_changes").fetch_one(&mut *tx).await?.try_get("s")?;
        tx.commit().await?;
        Ok(Arc::new(Self {
            db,
            tokens: Map::new(),
            tenants: Map::new(),
            clusters: Map::new(),
            access: Map::new(),
            sessions: Map::new(),
            routes: Map::new(),
            refreshing: Default::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            seen: AtomicI64::new(seen.unwrap_or(0)),
            synced_at_ms: AtomicI64::new(0),
            epoch,
            offline_trust_ms: AtomicI64::new(OFFLINE_TRUST.as_millis() as i64),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            stragglers: AtomicU64::new(0),
            dropped: std::sync::atomic::AtomicBool::new(false),
            dropped_at_ms: AtomicI64::new(0),
        }))
    }

    /// How long, once the change log cannot be read (the database is
    /// unreachable), entries are still trusted before the whole cache is
    /// dropped. A revocation needs the database, so none can be missed
    /// while it is down for everyone; the window bounds what a replica cut
    /// off from a database others still reach may miss. Default
    /// [`OFFLINE_TRUST`], the documented revocation bound.
    pub fn set_offline_trust(&self, d: Duration) {
        self.offline_trust_ms.store(i64::try_from(d.as_millis()).unwrap_or(i64::MAX), Ordering::Release);
    }

    fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// `key` from `map`, or from `load` (then kept unless `map` was
    /// invalidated while it loaded), `load` given the database and the key
    /// after the generation is read.
    async fn read_through<K, V, F>(
        &self,
        map: &Map<K, V>,
        key: K,
        load: impl FnOnce(Db, K) -> F,
    ) -> Result<V, StoreError>
    where
        K: Eq + Hash + Clone,
        V: Clone + Send + 'static,
        F: Future<Output = Result<V, StoreError>> + Send + 'static,
    {
        if let Some((v, _)) = map.get(&key, MAX_AGE) {
            self.hit();
            return Ok(v);
        }
        self.miss();
        let generation = map.generation();
        let v = bounded(load(self.db.clone(), key.clone())).await?;
        map.put(key, v.clone(), generation);
        Ok(v)
    }

    /// The owner of the token whose hash is `hash` (`None`: no such token).
    pub async fn token_owner(&self, hash: &str) -> Result<Option<TokenOwner>, StoreError> {
        self.read_through(&self.tokens, hash.to_string(), |db, h| async move { db.token_owner(&h).await }).await
    }

    /// Tenant `id` (read with platform scope: callers check access).
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        self.read_through(&self.tenants, id.to_string(), |db, id| async move { db.tenant(&Scope::Platform, &id).await })
            .await
    }

    /// Cluster `id`, of any tenant.
    pub async fn cluster(&self, id: &str) -> Result<Option<Cluster>, StoreError> {
        self.read_through(&self.clusters, id.to_string(), |db, id| async move { db.cluster_by_id(&id).await }).await
    }

    /// The role a cross-tenant grant of `tenant` gives `email` of tenant `home_slug`.
    pub async fn access_role(&self, tenant: &str, email: &str, home_slug: &str) -> Result<Option<Role>, StoreError> {
        let key = (tenant.to_string(), email.to_string(), home_slug.to_string());
        self.read_through(&self.access, key, |db, (t, e, h)| async move { db.access_role(&t, &e, &h).await }).await
    }

    /// The web app session whose cookie hashes to `id_hash`.
    pub async fn session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        self.read_through(&self.sessions, id_hash.to_string(), |db, h| async move { db.session(&h).await }).await
    }

    /// Session `id_hash` was used at `now_ms` (this replica's copy; the
    /// writer stores it). Other replicas read it when their copy ages out.
    pub fn session_seen(&self, id_hash: &str, now_ms: i64) {
        self.sessions.update(&id_hash.to_string(), |s| {
            if let Some(s) = s {
                s.last_seen_ms = s.last_seen_ms.max(now_ms);
            }
        });
    }

    /// The relays holding a live tunnel of `cluster` (leases checked when read).
    pub async fn routes(self: &Arc<Self>, tenant: &str, cluster: &str) -> Result<Vec<Route>, StoreError> {
        let key = (tenant.to_string(), cluster.to_string());
        if let Some((v, age)) = self.routes.get(&key, ROUTES_MAX_AGE) {
            self.hit();
            if age > ROUTES_FRESH {
                self.refresh_routes(key);
            }
            return Ok(v);
        }
        self.miss();
        let generation = self.routes.generation();
        let v = self.read_routes(&key).await?;
        self.routes.put(key, v.clone(), generation);
        Ok(v)
    }

    /// Reads a cluster's routes again in the background (one at a time).
    fn refresh_routes(self: &Arc<Self>, key: (String, String)) {
        {
            let mut busy = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
            if !busy.insert(key.clone()) {
                return;
            }
        }
        let cache = self.clone();
        self.tasks.spawn(async move {
            let generation = cache.routes.generation();
            match cache.read_routes(&key).await {
                Ok(v) => cache.routes.put(key.clone(), v, generation),
                Err(e) => tracing::debug!(error = %e, "routes not refreshed"),
            }
            cache.refreshing.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        });
    }

    /// Drops what `change` of `key` names (this replica wrote it, or the
    /// change log says another did).
    pub fn invalidate(&self, change: Change, key: &str) {
        match change {
            Change::Tokens => self.tokens.clear(),
            Change::Tenant => self.tenants.remove(&key.to_string()),
            Change::Cluster => {
                self.clusters.remove(&key.to_string());
                self.routes.clear();
            }
            Change::Access => self.access.clear(),
            Change::Session => self.sessions.remove(&key.to_string()),
            Change::All => {
                self.tokens.clear();
                self.tenants.clear();
                self.clusters.clear();
                self.access.clear();
                self.sessions.clear();
                self.routes.clear();
            }
        }
    }

    /// The routes of `(tenant, cluster)` from the database, bounded by
    /// [`LOAD_TIMEOUT`].
    async fn read_routes(&self, key: &(String, String)) -> Result<Vec<Route>, StoreError> {
        let (db, (t, c)) = (self.db.clone(), key.clone());
        bounded(async move { crate::directory::routes(&db, &t, &c).await }).await
    }

    /// A relay reported a tunnel of `cluster` whose agent holds the cluster
    /// grant key of `key_id` (empty: none): cached routes that do not name
    /// that relay are dropped (read again on next use), and so are routes
    /// through it that carry unsigned grants of another key id (the new
    /// tunnel's agent could not check them).
    pub fn saw_tunnel(&self, tenant: &str, cluster: &str, relay_id: &str, key_id: &str) {
        let key = (tenant.to_string(), cluster.to_string());
        let still_true = |r: &Route| r.mac_key_id.as_ref().is_none_or(|id| id == key_id);
        let known = self
            .routes
            .get(&key, Duration::MAX)
            .is_some_and(|(v, _)| v.iter().any(|r| r.relay_id == relay_id && still_true(r)));
        if !known {
            self.routes.remove(&key);
        }
    }

    /// Drops the cached routes of `cluster` (a relay answered that one of
    /// them no longer holds): read again on next use.
    pub fn forget_routes(&self, tenant: &str, cluster: &str) {
        self.routes.remove(&(tenant.to_string(), cluster.to_string()));
    }

    /// Drops every cached route (a relay's tunnels went away: reports name
    /// them by id only).
    pub fn invalidate_all_routes(&self) {
        self.routes.clear();
    }

    /// Keeps the cached routes but has each refreshed on its next use (a
    /// relay sent its full state, which usually changes nothing).
    pub fn refresh_all_routes(&self) {
        self.routes.age_out(ROUTES_FRESH + Duration::from_millis(1));
    }

    /// [`Cache::sync`] within [`LOAD_TIMEOUT`] (after a write, before its
    /// answer: a silent connection must not hold the answer).
    pub async fn bounded_sync(self: &Arc<Self>) -> Result<usize, StoreError> {
        let cache = self.clone();
        bounded(async move { cache.sync().await }).await
    }

    /// Applies the change log since the last position read; returns how
    /// many changes were applied.
    pub async fn sync(&self) -> Result<usize, StoreError> {
        let mut tx = self.db.read(&Scope::Platform).await?;
        // What the read sees is as of its transaction's start (or later):
        // the trust window counts from here, so a slow read does not
        // stretch it (and waiting for a pooled connection does not count:
        // a busy pool must not make every read "stale").
        let started = self.mono_ms();
        // Also the last few seconds again: on PostgreSQL a row can commit
        // after a later-numbered one was read (invalidating twice is harmless).
        let rows = sqlx::query(
            "SELECT seq, kind, key FROM cache_changes WHERE seq > $1 OR at_ms > $2 ORDER BY seq LIMIT 1000",
        )
        .bind(self.seen.load(Ordering::Acquire))
        .bind(crate::directory::now_ms() - RECHECK.as_millis() as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // A straggler finishing after a later read, or one that started
        // before the cache was last dropped, changes nothing here.
        if self.synced_at_ms.fetch_max(started, Ordering::AcqRel) <= started
            && started >= self.dropped_at_ms.load(Ordering::Acquire)
        {
            self.dropped.store(false, Ordering::Release);
        }
        for r in &rows {
            let (seq, kind, key): (i64, String, String) = (r.try_get("seq")?, r.try_get("kind")?, r.try_get("key")?);
            self.invalidate(Change::parse(&kind), &key);
            self.seen.fetch_max(seq, Ordering::AcqRel);
        }
        Ok(rows.len())
    }

    /// Polls the change log until `shutdown`, and prunes rows older than
    /// ten minutes (any replica may; every replica has read them by then).
    pub async fn follow(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut prune_at = Instant::now();
        // A read past its deadline, left to finish on its own (never
        // aborted mid-query); at most one, so a connection that went silent
        // mid-query (nothing ever answers on it) holds one of the pool's
        // connections, not all of them.
        let mut straggler: Option<tokio::task::JoinHandle<Result<usize, StoreError>>> = None;
        loop {
            // Each read in a task of its own, checked on at every poll: a
            // database that does not answer at all (a partition; the pool
            // waits up to its acquire timeout for a connection) must not
            // hold the trust window open while the read hangs.
            let mut read = tokio::spawn({
                let cache = self.clone();
                async move { cache.sync().await }
            });
            let started = Instant::now();
            let outcome = loop {
                tokio::select! {
                    r = &mut read => break Some(r.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()))),
                    _ = async { straggler.as_mut().expect("guarded").await }, if straggler.is_some() => straggler = None,
                    () = tokio::time::sleep(POLL_INTERVAL) => {
                        self.distrust_if_stale("the change log has not answered");
                        // Past its deadline: start another read beside it
                        // (on another connection) unless one already hangs.
                        if started.elapsed() >= READ_DEADLINE && straggler.is_none() {
                            tracing::warn!(after = ?started.elapsed(), "a read of the cache change log hangs; reading beside it");
                            self.stragglers.fetch_add(1, Ordering::Relaxed);
                            straggler = Some(read);
                            break None;
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
            };
            if let Some(Err(e)) = outcome {
                self.sync_failures.fetch_add(1, Ordering::Relaxed);
                self.distrust_if_stale(&e);
            }
            if prune_at.elapsed() > Duration::from_secs(60) {
                prune_at = Instant::now();
                // Not waited for: a database that does not answer must not
                // stop the reads above (the next prune is a minute away).
                let db = self.db.clone();
                self.tasks.spawn(async move {
                    let cutoff = crate::directory::now_ms() - 600_000;
                    if let Ok(mut tx) = db.begin(&Scope::Platform).await {
                        let _ = sqlx::query("DELETE FROM cache_changes WHERE at_ms < $1")
                            .bind(cutoff)
                            .execute(&mut *tx)
                            .await;
                        let _ = tx.commit().await;
                    }
                });
            }
            tokio::select! {
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// How long ago the last change-log read that succeeded started (what
    /// the cache has missed at most, were a change made now elsewhere).
    pub fn change_log_age(&self) -> Duration {
        Duration::from_millis((self.mono_ms() - self.synced_at_ms.load(Ordering::Acquire)).max(0) as u64)
    }

    /// Milliseconds since [`Cache::epoch`].
    fn mono_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    /// Drops the whole cache if the change log was last read longer ago
    /// than the offline window (`why`: what the last read did): entries
    /// are trusted for that window after the last read, then dropped.
    fn distrust_if_stale(&self, why: &str) {
        let since = self.change_log_age().as_millis() as i64;
        if since <= self.offline_trust_ms.load(Ordering::Acquire) {
            tracing::debug!(error = %why, since_ms = since, "cannot read the cache change log; trusting the cache a little longer");
            return;
        }
        // Logged and counted once an outage; dropped at every check (what a
        // miss reads back meanwhile is not trusted either).
        if !self.dropped.swap(true, Ordering::AcqRel) {
            self.dropped_at_ms.store(self.mono_ms(), Ordering::Release);
            self.drops.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %why, since_ms = since, "cannot read the cache change log; dropping the cache");
        }
        self.invalidate(Change::All, "");
    }
}
