//! Metering, quotas and invoices: plan prices, the monthly command quota on
//! the kube path, invoices from the usage ledger, upgrades, and MRR.
//!
//! A kubectl invocation is one command: kubectl sends the same random
//! `Kubectl-Session` header on every request of one invocation, so the first
//! request of a session counts it and the rest ride along (for a bounded
//! window). A request without that header (the chat UI, scripts) is a
//! command of its own. The quota is decided in memory from allotments
//! reserved from a per-tenant, per-month counter ([`Quota`]), so replicas
//! sharing a database never overshoot and a warm request does not touch it.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sqlx::Row;
use tokio_util::task::TaskTracker;

use crate::audit;
use crate::model::{Plan, Tenant};
use crate::store::StoreError;
use crate::store::{Db, Scope};

/// What a plan costs: a monthly base and a price per metered unit, in
/// micro-dollars (USD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Monthly base fee.
    pub base_micros: i64,
    /// Per kubectl command.
    pub command_micros: i64,
    /// Per API request.
    pub api_request_micros: i64,
    /// Per exported audit event.
    pub audit_export_micros: i64,
}

/// The price list.
pub fn price(plan: Plan) -> Price {
    match plan {
        Plan::Free => Price { base_micros: 0, command_micros: 0, api_request_micros: 0, audit_export_micros: 0 },
        Plan::Team => {
            Price { base_micros: 99_000_000, command_micros: 1_000, api_request_micros: 10, audit_export_micros: 5 }
        }
        Plan::Enterprise => {
            Price { base_micros: 999_000_000, command_micros: 500, api_request_micros: 5, audit_export_micros: 0 }
        }
    }
}

/// The first instant of the month after `month` (`YYYY-MM`), RFC 3339.
pub fn month_reset(month: &str) -> (String, i64) {
    let (y, m) = month
        .split_once('-')
        .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u8>().ok()?)))
        .unwrap_or((1970, 1));
    let (y, m) = if m >= 12 { (y + 1, 1) } else { (y, m + 1) };
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap_or(time::Month::January), 1)
        .unwrap_or(time::Date::MIN);
    let t = date.with_hms(0, 0, 0).unwrap_or(time::PrimitiveDateTime::MIN).assume_utc();
    (format!("{y:04}-{m:02}-01T00:00:00Z"), t.unix_timestamp())
}

/// Why a command was not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExhausted {
    /// The plan.
    pub plan: Plan,
    /// The monthly limit.
    pub limit: i64,
    /// The month.
    pub month: String,
    /// When the count starts over (RFC 3339).
    pub resets_at: String,
}

/// How long the requests of one `Kubectl-Session` count as one command.
pub const SESSION_WINDOW_MS: i64 = 60_000;
/// How many requests of one `Kubectl-Session` count as one command.
pub const SESSION_WINDOW_REQUESTS: i64 = 100;

/// A reservation takes at most this share of what remains of a quota …
const RESERVE_SHARE: i64 = 16;
/// … and at most this many commands.
const RESERVE_MAX: i64 = 50;
/// Sessions remembered per replica at most (the oldest go first).
const MAX_SESSIONS: usize = 100_000;

/// One `Kubectl-Session`'s counting window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started_ms: i64,
    requests: i64,
}

/// The command quota, decided in memory.
///
/// Each replica holds an allotment per tenant and month, reserved from the
/// database's counter in one conditional statement that never raises it
/// past the limit; a command spends one from the allotment. When an
/// allotment falls to [`RESERVE_AHEAD`], a task of the control plane's
/// reserves more in the background (no request waits for it, none can
/// cancel it); only an empty allotment makes a request go to the database
/// itself (the first command of a month on a replica, or a burst faster
/// than a reservation). A reservation takes at most 1/16 of what remains,
/// and never brings what the replica holds past 50. So replicas together
/// never exceed a quota (the bound is 0). The price: a replica may hold up
/// to 50 reserved commands it does not use, so near the limit a tenant may
/// be refused up to 50 commands early per replica that served it. A replica
/// that drains gives back what it holds ([`Quota::release`]) and from then
/// on reserves only what a late command spends, so a restart or a rolling
/// deploy costs no tenant any of its quota; a replica that
/// crashes loses what it held (at most 50 a tenant). Usage billed is what
/// ran (`command_executed` events), not what was reserved.
///
/// Sessions are counted per replica: kubectl keeps one connection, so one
/// invocation meets one replica; if a load balancer splits one, each
/// replica counts it once (counting more, never less).
#[derive(Debug, Default)]
pub struct Quota {
    allotments: Arc<std::sync::Mutex<HashMap<Slot, Allotment>>>,
    sessions: std::sync::Mutex<HashMap<Slot, Window>>,
    /// Reservations go one at a time (ahead of time or not).
    reserving: Arc<tokio::sync::Mutex<()>>,
    /// Set by [`Quota::release`]: from then on nothing is reserved ahead,
    /// and a late command reserves only itself, so nothing is left held.
    released: Arc<std::sync::atomic::AtomicBool>,
}

/// A tenant id and a month.
type Slot = (String, String);

/// What a replica holds of one tenant's quota for one month.
#[derive(Debug, Clone, Copy, Default)]
struct Allotment {
    /// Commands reserved and not spent.
    left: i64,
    /// A reservation ahead of time is running, or the last one found the
    /// quota used up: do not start another (a request that finds the
    /// allotment empty still reserves, and clears this when it is granted).
    ahead: bool,
}

/// Reserve more in the background once an allotment falls to this.
pub const RESERVE_AHEAD: i64 = RESERVE_MAX / 2;

impl Quota {
    /// Counts a command for `tenant` unless this month's quota is used up.
    /// `session` is kubectl's `Kubectl-Session` (empty, or over 128 bytes:
    /// every request counts); the requests of one session count as one
    /// command for at most [`SESSION_WINDOW_MS`] or
    /// [`SESSION_WINDOW_REQUESTS`] requests, then the session counts again.
    /// Returns `Ok(true)` when a new command was counted, `Ok(false)` for a
    /// request of a command already counted. Reservations ahead of time run
    /// on `tasks` (the control plane's, awaited when it drains).
    pub async fn count(
        &self,
        db: &Db,
        tasks: &TaskTracker,
        tenant: &Tenant,
        session: &str,
    ) -> Result<Result<bool, QuotaExhausted>, StoreError> {
        let now = crate::directory::now_ms();
        let session = if session.len() > 128 { "" } else { session };
        let key = (tenant.id.clone(), session.to_string());
        if !session.is_empty() {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(w) = sessions.get_mut(&key)
                && w.started_ms > now - SESSION_WINDOW_MS
                && w.requests < SESSION_WINDOW_REQUESTS
            {
                w.requests += 1;
                return Ok(Ok(false));
            }
        }
        let month = audit::this_month();
        let slot = (tenant.id.clone(), month.clone());
        let limit = tenant.subscription.limits.max_commands_per_month;
        match self.take(&slot) {
            Some(ahead) => {
                if ahead {
                    self.reserve_ahead(db, tasks, slot, limit);
                }
            }
            None => {
                let _one_at_a_time = self.reserving.lock().await;
                if self.take(&slot).is_none() {
                    let max = if self.released.load(std::sync::atomic::Ordering::Acquire) { 1 } else { RESERVE_MAX };
                    match reserve(db, &tenant.id, &month, limit, max).await? {
                        0 => {
                            let (resets_at, _) = month_reset(&month);
                            return Ok(Err(QuotaExhausted { plan: tenant.subscription.plan, limit, month, resets_at }));
                        }
                        granted => {
                            let mut a = self.allotments.lock().unwrap_or_else(|p| p.into_inner());
                            let a = a.entry(slot).or_default();
                            a.left += granted - 1;
                            a.ahead = false;
                        }
                    }
                }
            }
        }
        if !session.is_empty() {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if sessions.len() >= MAX_SESSIONS {
                sessions.retain(|_, w| w.started_ms > now - SESSION_WINDOW_MS);
            }
            sessions.insert(key, Window { started_ms: now, requests: 1 });
        }
        Ok(Ok(true))
    }

    /// Spends one command of the allotment, if there is one: `Some(true)`
    /// when the allotment is now low and a reservation ahead should start
    /// (it is marked as started).
    fn take(&self, slot: &Slot) -> Option<bool> {
        let mut a = self.allotments.lock().unwrap_or_else(|p| p.into_inner());
        match a.get_mut(slot) {
            Some(a) if a.left > 0 => {
                a.left -= 1;
                let ahead = a.left <= RESERVE_AHEAD && !a.ahead;
                a.ahead |= ahead;
                Some(ahead)
            }
            _ => None,
        }
    }

    /// Reserves more of `slot` in a task of its own, topping what the
    /// replica holds up to at most [`RESERVE_MAX`].
    fn reserve_ahead(&self, db: &Db, tasks: &TaskTracker, slot: Slot, limit: i64) {
        let (db, allotments, reserving, released) =
            (db.clone(), self.allotments.clone(), self.reserving.clone(), self.released.clone());
        tasks.spawn(async move {
            let _one_at_a_time = reserving.lock().await;
            if released.load(std::sync::atomic::Ordering::Acquire) {
                // Queued behind the release: reserving now would be lost.
                return;
            }
            let held = allotments.lock().unwrap_or_else(|p| p.into_inner()).get(&slot).map_or(0, |a| a.left);
            let room = RESERVE_MAX - held;
            let granted = if room > 0 { reserve(&db, &slot.0, &slot.1, limit, room).await } else { Ok(0) };
            let mut a = allotments.lock().unwrap_or_else(|p| p.into_inner());
            let a = a.entry(slot).or_default();
            match granted {
                Ok(n) if n > 0 => {
                    a.left += n;
                    a.ahead = false;
                }
                Ok(_) if room <= 0 => a.ahead = false,
                // Used up: stays marked until a request is granted some.
                Ok(_) => {}
                Err(e) => {
                    a.ahead = false;
                    tracing::warn!(error = %e, "could not reserve commands ahead; a request will when the allotment is empty");
                }
            }
        });
    }

    /// Gives back to the database every command this replica reserved and
    /// did not spend, and holds none afterwards: the last step of a drain,
    /// once no request and no reservation ahead is running (from then on a
    /// late command reserves only itself, and nothing is reserved ahead).
    /// Returns how many commands went back; a tenant whose commands cannot
    /// be given back (the database is down) keeps them reserved until the
    /// month ends, and is logged.
    pub async fn release(&self, db: &Db) -> i64 {
        let _one_at_a_time = self.reserving.lock().await;
        self.released.store(true, std::sync::atomic::Ordering::Release);
        let held: Vec<(Slot, i64)> = {
            let mut a = self.allotments.lock().unwrap_or_else(|p| p.into_inner());
            a.drain().filter(|(_, a)| a.left > 0).map(|(slot, a)| (slot, a.left)).collect()
        };
        let mut released = 0;
        for ((tenant, month), left) in held {
            match give_back(db, &tenant, &month, left).await {
                Ok(true) => released += left,
                Ok(false) => {
                    tracing::warn!(%tenant, %month, left, "the command counter is gone or below what this replica held; nothing given back")
                }
                Err(e) => {
                    tracing::warn!(%tenant, %month, left, error = %e, "could not give back reserved commands; they stay spent this month")
                }
            }
        }
        released
    }
}

/// Lowers `tenant`'s counter for `month` by `n`, unless the row is gone
/// (the tenant was purged) or below `n`: whether it was lowered.
async fn give_back(db: &Db, tenant: &str, month: &str, n: i64) -> Result<bool, StoreError> {
    let mut tx = db.begin(&Scope::Tenant(tenant.to_string())).await?;
    let lowered = sqlx::query(
        "UPDATE command_counters SET commands = commands - $3 WHERE tenant_id = $1 AND month = $2 AND commands >= $3",
    )
    .bind(tenant.to_string())
    .bind(month.to_string())
    .bind(n)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(lowered.rows_affected() == 1)
}

/// Reserves up to `max` commands of `tenant`'s quota for `month`: the
/// number granted (0: the quota is used up). The counter never passes
/// `limit`.
async fn reserve(db: &Db, tenant: &str, month: &str, limit: i64, max: i64) -> Result<i64, StoreError> {
    let mut tx = db.begin(&Scope::Tenant(tenant.to_string())).await?;
    sqlx::query("INSERT INTO command_counters (tenant_id, month, commands) VALUES ($1, $2, 0) ON CONFLICT (tenant_id, month) DO NOTHING")
        .bind(tenant.to_string())
        .bind(month.to_string())
        .execute(&mut *tx)
        .await?;
    loop {
        let used: i64 = sqlx::query("SELECT commands FROM command_counters WHERE tenant_id = $1 AND month = $2")
            .bind(tenant.to_string())
            .bind(month.to_string())
            .fetch_one(&mut *tx)
            .await?
            .try_get("commands")?;
        let remaining = limit - used;
        if remaining <= 0 {
            tx.commit().await?;
            return Ok(0);
        }
        let k = (remaining / RESERVE_SHARE).clamp(1, max.max(1));
        let raised = sqlx::query(
            "UPDATE command_counters SET commands = commands + $3 WHERE tenant_id = $1 AND month = $2 AND commands = $4 AND commands + $3 <= $5",
        )
        .bind(tenant.to_string())
        .bind(month.to_string())
        .bind(k)
        .bind(used)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        if raised.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(k);
        }
        // Another replica reserved meanwhile: read again.
    }
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// What it is for.
    pub description: String,
    /// The usage type it meters, if any.
    pub usage_type: Option<String>,
    /// How many units.
    pub quantity: f64,
    /// Price per unit, micro-dollars.
    pub unit_price_micros: i64,
    /// quantity × unit price, micro-dollars.
    pub amount_micros: i64,
}

/// A tenant's invoice for one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    /// Tenant id.
    pub tenant_id: String,
    /// `YYYY-MM`.
    pub month: String,
    /// The plan billed.
    pub plan: Plan,
    /// Always USD.
    pub currency: &'static str,
    /// The lines.
    pub lines: Vec<Line>,
    /// Sum of the lines, micro-dollars.
    pub total_micros: i64,
    /// The total in cents, rounded half up.
    pub total_cents: i64,
}

/// The invoice of `tenant` for `month` (`YYYY-MM`), from the usage ledger and
/// the tenant's current plan.
pub async fn invoice(db: &Db, tenant: &Tenant, month: &str) -> Result<Invoice, StoreError> {
    let p = price(tenant.subscription.plan);
    let mut lines = vec![Line {
        description: format!("{} plan, {month}", tenant.subscription.plan.as_str()),
        usage_type: None,
        quantity: 1.0,
        unit_price_micros: p.base_micros,
        amount_micros: p.base_micros,
    }];
    for (usage_type, quantity) in audit::usage_totals(db, &tenant.id, month).await? {
        let unit = match usage_type.as_str() {
            "command_executed" => p.command_micros,
            "api_request" => p.api_request_micros,
            "audit_export" => p.audit_export_micros,
            _ => 0,
        };
        lines.push(Line {
            description: usage_type.replace('_', " "),
            usage_type: Some(usage_type),
            quantity,
            unit_price_micros: unit,
            amount_micros: (quantity * unit as f64).round() as i64,
        });
    }
    let total_micros: i64 = lines.iter().map(|l| l.amount_micros).sum();
    Ok(Invoice {
        tenant_id: tenant.id.clone(),
        month: month.to_string(),
        plan: tenant.subscription.plan,
        currency: "USD",
        lines,
        total_micros,
        total_cents: (total_micros + 5_000) / 10_000,
    })
}

/// Monthly recurring revenue over every active tenant, by plan.
pub async fn mrr(db: &Db) -> Result<serde_json::Value, StoreError> {
    let tenants = db.tenants(&Scope::Platform).await?;
    let mut by_plan = serde_json::Map::new();
    let mut total = 0i64;
    for plan in [Plan::Free, Plan::Team, Plan::Enterprise] {
        let count =
            |status| tenants.iter().filter(|t| t.subscription.plan == plan && t.status == status).count() as i64;
        // Only active tenants pay; trials are shown beside them.
        let (n, trials) = (count(crate::model::TenantStatus::Active), count(crate::model::TenantStatus::Trial));
        let mrr = n * price(plan).base_micros;
        total += mrr;
        by_plan.insert(plan.as_str().into(), serde_json::json!({"tenants": n, "trials": trials, "mrrMicros": mrr}));
    }
    Ok(
        serde_json::json!({"currency": "USD", "mrrMicros": total, "mrrCents": (total + 5_000) / 10_000, "byPlan": by_plan}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(limit: i64) -> Tenant {
        let mut limits = Plan::Team.limits();
        limits.max_commands_per_month = limit;
        Tenant {
            id: "tquota".into(),
            name: "Quota".into(),
            slug: "quota".into(),
            domain: None,
            status: crate::model::TenantStatus::Active,
            home_region: "local".into(),
            settings: serde_json::json!({}),
            subscription: crate::model::Subscription {
                plan: Plan::Team,
                limits,
                billing_cycle: "monthly".into(),
                next_billing_date: "2027-01-01".into(),
            },
            created_at: 0,
        }
    }

    /// A fresh SQLite database (kept while the directory lives).
    async fn sqlite() -> (tempfile::TempDir, Db) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("q.db").display())).await.expect("db");
        (dir, db)
    }

    async fn counter(db: &Db) -> i64 {
        let mut tx = db.begin(&Scope::Platform).await.expect("begin");
        let n = sqlx::query("SELECT commands FROM command_counters WHERE tenant_id = 'tquota'")
            .fetch_optional(&mut *tx)
            .await
            .expect("select")
            .map_or(0, |r| r.try_get::<i64, _>("commands").expect("commands"));
        tx.commit().await.expect("commit");
        n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_reserve_ahead_in_the_background_and_never_hold_more_than_the_bound() {
        let (_dir, db) = sqlite().await;
        let (quota, tasks, t) = (Quota::default(), TaskTracker::new(), tenant(1_000_000));
        // The first command reserves (the allotment is empty) ...
        assert_eq!(quota.count(&db, &tasks, &t, "").await.expect("count"), Ok(true));
        assert_eq!(counter(&db).await, RESERVE_MAX);
        // ... and the command that leaves RESERVE_AHEAD starts a reservation
        // no request waits for, topping the allotment back up to the bound.
        for _ in 0..(RESERVE_MAX - 1 - RESERVE_AHEAD) {
            assert_eq!(quota.count(&db, &tasks, &t, "").await.expect("count"), Ok(true));
        }
        tasks.close();
        tasks.wait().await;
        let spent = RESERVE_MAX - RESERVE_AHEAD;
        assert_eq!(counter(&db).await, spent + RESERVE_MAX, "reserved ahead up to what one replica may hold");
        // Many more commands: the counter stays ahead of them, by at most the bound.
        let tasks = TaskTracker::new();
        for i in 1..=500 {
            assert_eq!(quota.count(&db, &tasks, &t, "").await.expect("count"), Ok(true));
            let held = counter(&db).await - (spent + i);
            assert!((0..=RESERVE_MAX).contains(&held), "after {} commands the replica holds {held}", spent + i);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_commands_of_a_quota_pass_and_the_next_is_refused() {
        let (_dir, db) = sqlite().await;
        let (quota, tasks, t) = (Quota::default(), TaskTracker::new(), tenant(120));
        for i in 0..120 {
            assert_eq!(quota.count(&db, &tasks, &t, "").await.expect("count"), Ok(true), "command {i}");
        }
        let refused = quota.count(&db, &tasks, &t, "").await.expect("count");
        assert!(matches!(refused, Err(QuotaExhausted { limit: 120, .. })), "{refused:?}");
        assert_eq!(counter(&db).await, 120);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drained_replica_gives_back_what_it_reserved_and_did_not_spend() {
        let (_dir, db) = sqlite().await;
        let (quota, tasks, t) = (Quota::default(), TaskTracker::new(), tenant(1_000));
        for _ in 0..30 {
            assert_eq!(quota.count(&db, &tasks, &t, "").await.expect("count"), Ok(true));
        }
        tasks.close();
        tasks.wait().await;
        assert!(counter(&db).await > 30, "reserved ahead of the 30 commands spent");
        let held = counter(&db).await - 30;
        assert_eq!(quota.release(&db).await, held);
        assert_eq!(counter(&db).await, 30, "only what ran stays counted");
        // It holds nothing now: a second release gives back nothing, and
        // a late command reserves only itself.
        assert_eq!(quota.release(&db).await, 0);
        assert_eq!(counter(&db).await, 30);
        assert_eq!(quota.count(&db, &TaskTracker::new(), &t, "").await.expect("count"), Ok(true));
        assert_eq!(counter(&db).await, 31, "a late command holds nothing back");
        // A reservation ahead queued behind the release reserves nothing.
        let (tasks_after, slot) = (TaskTracker::new(), (t.id.clone(), audit::this_month()));
        quota.reserve_ahead(&db, &tasks_after, slot, 1_000);
        tasks_after.close();
        tasks_after.wait().await;
        assert_eq!(counter(&db).await, 31, "nothing reserved ahead after the release");
    }

    #[test]
    fn the_quota_resets_on_the_first_of_next_month() {
        assert_eq!(month_reset("2026-11").0, "2026-12-01T00:00:00Z");
        assert_eq!(month_reset("2026-12").0, "2027-01-01T00:00:00Z");
        assert_eq!(month_reset("2026-12").1, 1_798_761_600);
    }

    #[test]
    fn plans_cost_more_as_they_go_up() {
        assert!(price(Plan::Free).base_micros < price(Plan::Team).base_micros);
        assert!(price(Plan::Team).base_micros < price(Plan::Enterprise).base_micros);
    }
}
