//! The `Events` gRPC service relays publish audit and usage events to (on
//! the internal listener, mutual TLS; the relay is its certificate). Each
//! event is validated on its own: a malformed one is rejected with a reason
//! (the relay keeps it in its dead-letter spool), the valid ones in the same
//! batch are stored. Over-long fields are cut and marked, never a reason to
//! reject.
//! Ids already stored are acknowledged again without a second copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kubechat_protocol::events::events_server::Events;
use kubechat_protocol::events::{BatchAck, Event, EventBatch, Rejected, UsageType, event};

use crate::app::App;
use crate::audit::AuditEntry;
use crate::writer::{Write, WriteError};

/// Most events in one batch.
pub const MAX_BATCH: usize = 5000;

/// The relay a connection authenticated as.
#[derive(Debug, Clone)]
pub(crate) struct RelayPeer(pub(crate) String);

/// What a valid event becomes.
enum Valid {
    Audit(Box<AuditEntry>),
    Usage { tenant: String, cluster: String, usage_type: &'static str, quantity: f64 },
}

fn usage_name(t: i32) -> Option<&'static str> {
    match UsageType::try_from(t).ok()? {
        UsageType::CommandExecuted => Some("command_executed"),
        UsageType::ApiRequest => Some("api_request"),
        UsageType::ClusterConnected => Some("cluster_connected"),
        UsageType::UserSession => Some("user_session"),
        UsageType::AuditExport => Some("audit_export"),
        UsageType::Unspecified => None,
    }
}

/// Checks one event; the reason if it is malformed.
fn validate(e: &Event, relay: &str) -> Result<Valid, String> {
    if uuid::Uuid::parse_str(&e.id).is_err() {
        return Err("id must be a UUID".into());
    }
    if e.relay != relay {
        return Err(format!("event names relay {:?} but was sent by {relay:?}", e.relay));
    }
    if e.tenant.is_empty() || e.time_ms <= 0 {
        return Err("tenant and time are required".into());
    }
    for (name, v) in [("tenant", &e.tenant), ("cluster", &e.cluster), ("request_id", &e.request_id)] {
        if v.len() > 256 {
            return Err(format!("{name} is longer than 256 bytes"));
        }
        // They place the event (and name rows), so they are not stored
        // altered, as the rest of an audit body may be (`audit::bound`).
        if v.chars().any(char::is_control) {
            return Err(format!("{name} holds a control character"));
        }
    }
    match &e.body {
        None => Err("an event needs an audit or a usage body".into()),
        Some(event::Body::Usage(u)) => {
            let usage_type = usage_name(u.r#type).ok_or("unknown usage type")?;
            if !u.quantity.is_finite() || u.quantity < 0.0 || u.quantity > 1e9 {
                return Err("usage quantity must be between 0 and 1e9".into());
            }
            Ok(Valid::Usage { tenant: e.tenant.clone(), cluster: e.cluster.clone(), usage_type, quantity: u.quantity })
        }
        Some(event::Body::Audit(a)) => {
            if !matches!(a.kind.as_str(), "request" | "tunnel_connect" | "tunnel_disconnect") {
                return Err(format!("unknown audit kind {:?}", a.kind));
            }
            if !matches!(a.decision.as_str(), "allow" | "deny") {
                return Err("decision must be allow or deny".into());
            }
            // Over-long fields are cut and marked when stored (audit::bound),
            // never refused: a caller must not keep a request out of the log
            // by making it large.
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            Ok(Valid::Audit(Box::new(AuditEntry {
                id: e.id.clone(),
                time_ms: e.time_ms,
                tenant_id: e.tenant.clone(),
                cluster_id: e.cluster.clone(),
                relay_id: e.relay.clone(),
                request_id: e.request_id.clone(),
                kind: a.kind.clone(),
                user: a.user.clone(),
                groups: a.groups.clone(),
                verb: a.verb.clone(),
                api_group: a.api_group.clone(),
                resource: a.resource.clone(),
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                subresource: a.subresource.clone(),
                method: a.method.clone(),
                path: a.path.clone(),
                status: i64::from(a.status),
                bytes_in: n(a.bytes_in),
                bytes_out: n(a.bytes_out),
                duration_ms: n(a.duration_ms),
                decision: a.decision.clone(),
                reason: a.reason.clone(),
                client_address: a.client_address.clone(),
                kubectl_command: a.kubectl_command.clone(),
                kubectl_session: a.kubectl_session.clone(),
                ..Default::default()
            })))
        }
    }
}

/// Stores a batch (already attributed to `relay`); returns the answer.
pub async fn ingest(app: &App, relay: &str, batch: Vec<Event>) -> Result<BatchAck, Unstored> {
    let mut ack = BatchAck::default();
    let mut audits: BTreeMap<String, Vec<AuditEntry>> = BTreeMap::new();
    let mut known_tenants: HashMap<String, bool> = HashMap::new();
    let mut usages = Vec::new();
    for e in batch {
        let valid = match validate(&e, relay) {
            Ok(v) => v,
            Err(reason) => {
                ack.rejected.push(Rejected { id: e.id, reason });
                continue;
            }
        };
        let exists = match known_tenants.get(&e.tenant) {
            Some(k) => *k,
            None => {
                let k = app.cache.tenant(&e.tenant).await?.is_some();
                known_tenants.insert(e.tenant.clone(), k);
                k
            }
        };
        if !exists {
            ack.rejected.push(Rejected { id: e.id, reason: format!("no tenant {}", e.tenant) });
            continue;
        }
        match valid {
            Valid::Audit(a) => audits.entry(a.tenant_id.clone()).or_default().push(*a),
            Valid::Usage { tenant, cluster, usage_type, quantity } => {
                usages.push((e.id, tenant, cluster, usage_type, quantity, e.time_ms));
            }
        }
    }
    // Acknowledged only once committed: the relay forgets what we answer.
    let mut writes = Vec::new();
    for (tenant, entries) in audits {
        for e in entries {
            ack.accepted.push(e.id.clone());
            writes.push(Write::Audit { tenant: tenant.clone(), entry: Box::new(e) });
        }
    }
    for (id, tenant, cluster, usage_type, quantity, time_ms) in usages {
        ack.accepted.push(id.clone());
        writes.push(Write::Usage { id, tenant, cluster, usage_type: usage_type.to_string(), quantity, time_ms });
    }
    if !writes.is_empty() {
        match app.writer.commit_batched(writes, COMMIT_TIMEOUT).await {
            Ok(()) => {}
            // Stored but these (in `accepted`'s order, which is the writes'),
            // refused for what they hold: the relay keeps them in its dead
            // letters instead of sending them again and again.
            Err(WriteError::Refused(which)) => {
                let mut accepted = Vec::new();
                for (i, id) in std::mem::take(&mut ack.accepted).into_iter().enumerate() {
                    if which.contains(&i) {
                        let reason = "the control plane's database refused it (also set aside in its dead letters)";
                        ack.rejected.push(Rejected { id, reason: reason.into() });
                    } else {
                        accepted.push(id);
                    }
                }
                ack.accepted = accepted;
            }
            Err(e) => return Err(Unstored(e.to_string())),
        }
    }
    Ok(ack)
}

/// How long a batch of events waits for its commit before the relay is told
/// to retry (it keeps the events meanwhile; duplicates are skipped by id).
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Events that were not stored (the relay keeps them and retries).
#[derive(Debug, thiserror::Error)]
#[error("events not stored: {0}")]
pub struct Unstored(String);

impl From<crate::store::StoreError> for Unstored {
    fn from(e: crate::store::StoreError) -> Self {
        Self(e.to_string())
    }
}

/// The `Events` service.
pub(crate) struct EventsService {
    pub(crate) app: Arc<App>,
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, request: tonic::Request<EventBatch>) -> Result<tonic::Response<BatchAck>, tonic::Status> {
        let peer = request
            .extensions()
            .get::<RelayPeer>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("no relay certificate"))?;
        let batch = request.into_inner().events;
        if batch.len() > MAX_BATCH {
            return Err(tonic::Status::invalid_argument(format!("at most {MAX_BATCH} events per batch")));
        }
        match ingest(&self.app, &peer.0, batch).await {
            Ok(ack) => {
                self.app.metrics.events_accepted.add(ack.accepted.len() as u64);
                self.app.metrics.events_rejected.add(ack.rejected.len() as u64);
                Ok(tonic::Response::new(ack))
            }
            Err(e) => {
                tracing::warn!(error = %e, "events not stored");
                Err(tonic::Status::unavailable("storage failure; retry"))
            }
        }
    }
}
