//! This relay's audit and usage events: built when a request ends or a
//! tunnel comes or goes, written to the spool (see [`crate::spool`]) and
//! published to the control plane over gRPC, which acknowledges each one.
//! An event it refuses goes to the dead-letter file
//! ([`crate::dead_letter`]) before the spool lets it go.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kubechat_protocol::events::events_client::EventsClient;
use kubechat_protocol::events::{AuditBody, DeadLetter, Event, EventBatch, Rejected, UsageBody, UsageType, event};
use tracing::{debug, info, warn};

use crate::presence::PresenceTarget;
use crate::state::RelayState;

/// Events per published batch.
const BATCH: usize = 500;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new event of this relay.
pub(crate) fn event(state: &RelayState, tenant: &str, cluster: &str, request_id: &str, body: event::Body) -> Event {
    Event {
        id: uuid::Uuid::now_v7().to_string(),
        time_ms: now_ms(),
        tenant: tenant.to_string(),
        cluster: cluster.to_string(),
        relay: state.config.relay_id.clone(),
        request_id: request_id.to_string(),
        body: Some(body),
    }
}

/// A usage event body.
pub(crate) fn usage(kind: UsageType, quantity: f64) -> event::Body {
    event::Body::Usage(UsageBody { r#type: kind as i32, quantity })
}

/// Writes an event to the spool (when events are on); a drop (the spool's
/// reserve is used up too) is counted and logged, never silent.
pub(crate) fn record(state: &RelayState, e: Event) {
    let Some(spool) = &state.spool else { return };
    if !spool.append(e) {
        state.metrics.events_dropped.inc("spool_full");
        warn!(spool_bytes = spool.bytes(), "event spool full beyond its reserve; an event was dropped");
    }
}

/// Whether a request must be audited before it may run: writes and
/// exec/attach/port-forward (upgrades); the grant can say so too (reading
/// secrets).
pub(crate) fn must_audit(method: &str, upgrade: bool) -> bool {
    upgrade || !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// The audit record of one request, filled in as the request goes and
/// written when the last part of it (response body, upgraded connection) ends.
pub(crate) struct RequestAudit {
    state: Arc<RelayState>,
    started: Instant,
    tenant: String,
    cluster: String,
    request_id: String,
    body: std::sync::Mutex<AuditBody>,
    /// Request bytes carried to the agent.
    pub(crate) bytes_in: AtomicU64,
    /// Response bytes carried back.
    pub(crate) bytes_out: AtomicU64,
}

impl RequestAudit {
    /// Starts the record of a request for `tenant`/`cluster`.
    pub(crate) fn new(
        state: Arc<RelayState>,
        tenant: &str,
        cluster: &str,
        request_id: &str,
        body: AuditBody,
    ) -> Arc<Self> {
        Arc::new(Self {
            state,
            started: Instant::now(),
            tenant: tenant.to_string(),
            cluster: cluster.to_string(),
            request_id: request_id.to_string(),
            body: std::sync::Mutex::new(body),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut AuditBody) -> R) -> R {
        f(&mut self.body.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The request went to the agent.
    pub(crate) fn forwarded(&self) {
        self.with(|b| b.decision = "allow".into());
    }

    /// The status the caller was answered with (a request never forwarded
    /// is a `deny`).
    pub(crate) fn answered(&self, status: u16) {
        self.with(|b| {
            b.status = u32::from(status);
            if b.decision.is_empty() {
                b.decision = "deny".into();
            }
        });
    }

    /// The relay refused before forwarding, for `reason`.
    pub(crate) fn refused(&self, reason: &str) {
        self.with(|b| {
            b.decision = "deny".into();
            b.reason = reason.to_string();
        });
    }
}

impl Drop for RequestAudit {
    fn drop(&mut self) {
        let mut body = std::mem::take(&mut *self.body.lock().unwrap_or_else(|p| p.into_inner()));
        body.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        body.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        body.duration_ms = self.started.elapsed().as_millis() as u64;
        let forwarded = body.decision == "allow";
        let audit = event(&self.state, &self.tenant, &self.cluster, &self.request_id, event::Body::Audit(body));
        record(&self.state, audit);
        if forwarded {
            let u =
                event(&self.state, &self.tenant, &self.cluster, &self.request_id, usage(UsageType::ApiRequest, 1.0));
            record(&self.state, u);
        }
    }
}

/// Writes the events of `batch` the control plane `rejected` to the
/// dead-letter file; `false` if that failed (they must not be forgotten).
async fn dead_letter(state: &Arc<RelayState>, batch: &[Event], rejected: &[Rejected]) -> bool {
    let Some(dead) = state.dead_letters.clone() else { return false };
    let at = now_ms();
    let letters: Vec<DeadLetter> = rejected
        .iter()
        .map(|r| {
            warn!(id = %r.id, reason = %r.reason, "the control plane rejected an event; it is kept in the dead-letter file");
            DeadLetter { event: batch.iter().find(|e| e.id == r.id).cloned(), reason: r.reason.clone(), rejected_at_ms: at }
        })
        .collect();
    let n = letters.len() as u64;
    let written = tokio::task::spawn_blocking(move || dead.append(&letters).map(|()| dead.count())).await;
    match written {
        Ok(Ok(count)) => {
            state.metrics.events_dead_lettered.add(n);
            state.metrics.dead_letter_events.set(count as i64);
            true
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot write the dead-letter file; the rejected events stay in the spool");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "the dead-letter write did not finish; the rejected events stay in the spool");
            false
        }
    }
}

type Grpc = EventsClient<crate::presence::Channel>;

fn client(target: &PresenceTarget) -> Result<Grpc, String> {
    let (http, origin) = crate::presence::channel(target)?;
    Ok(EventsClient::with_origin(http, origin).max_decoding_message_size(64 << 20))
}

/// Publishes spooled events until shutdown (then for up to two more
/// seconds, to leave as little as possible on disk).
pub(crate) async fn publish(target: PresenceTarget, state: Arc<RelayState>) {
    let Some(spool) = state.spool.clone() else { return };
    let mut grpc = match client(&target) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "event publishing disabled");
            return;
        }
    };
    let mut backoff = Duration::from_millis(100);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut healthy = false;
    loop {
        state.metrics.spool_bytes.set(spool.bytes() as i64);
        state.metrics.spool_write_failures.set(spool.write_failures() as i64);
        state.metrics.events_pending.set(spool.pending() as i64);
        if state.shutdown.is_cancelled() {
            let d = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(2));
            if tokio::time::Instant::now() >= d || spool.pending() == 0 {
                return;
            }
        }
        let batch = spool.take(BATCH);
        if batch.is_empty() {
            tokio::select! {
                () = spool.ready.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = state.shutdown.cancelled(), if deadline.is_none() => {}
            }
            continue;
        }
        let ids: Vec<String> = batch.iter().map(|e| e.id.clone()).collect();
        let sent =
            tokio::time::timeout(Duration::from_secs(10), grpc.publish(EventBatch { events: batch.clone() })).await;
        match sent {
            Ok(Ok(resp)) => {
                let mut ack = resp.into_inner();
                // What the control plane refused is kept in the dead-letter
                // file before the spool may forget it; if that cannot be
                // written, those events stay in the spool and go again.
                if !ack.rejected.is_empty() && !dead_letter(&state, &batch, &ack.rejected).await {
                    ack.rejected.clear();
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = state.shutdown.cancelled(), if deadline.is_none() => {}
                    }
                }
                let answered: std::collections::HashSet<&str> =
                    ack.accepted.iter().chain(ack.rejected.iter().map(|r| &r.id)).map(String::as_str).collect();
                spool.acknowledge(ids.iter().map(String::as_str).filter(|id| answered.contains(id)));
                state.metrics.events_published.add(ack.accepted.len() as u64);
                state.metrics.events_rejected.add(ack.rejected.len() as u64);
                let unanswered: Vec<_> = batch.into_iter().filter(|e| !answered.contains(e.id.as_str())).collect();
                if !unanswered.is_empty() {
                    spool.put_back(unanswered);
                }
                if !healthy {
                    info!(url = %target.url, "publishing events to the control plane");
                    healthy = true;
                }
                backoff = Duration::from_millis(100);
            }
            failed => {
                spool.put_back(batch);
                let why = match failed {
                    Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                    _ => "timed out".to_string(),
                };
                if healthy {
                    warn!(error = %why, pending = spool.pending(), "cannot publish events; they stay in the spool");
                } else {
                    debug!(error = %why, "cannot publish events yet");
                }
                healthy = false;
                state.metrics.publish_failures.inc();
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = state.shutdown.cancelled(), if deadline.is_none() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
