//! The relay's admin endpoints, including `/v1/tunnels` for SREs and
//! `/v1/dead-letters` (events the control plane refused).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use kubechat_transport::admin::AdminHandler;
use serde::Serialize;

use crate::state::RelayState;

pub(crate) struct RelayAdmin {
    state: Arc<RelayState>,
}

impl RelayAdmin {
    pub(crate) fn new(state: Arc<RelayState>) -> Self {
        Self { state }
    }
}

/// One row of `/v1/dead-letters`.
#[derive(Serialize)]
struct DeadLetterInfo {
    id: String,
    tenant: String,
    cluster: String,
    request_id: String,
    time_ms: i64,
    reason: String,
    rejected_at_ms: i64,
    kind: &'static str,
}

impl RelayAdmin {
    /// The newest 1000 dead letters, as JSON.
    fn dead_letters(&self) -> Vec<u8> {
        let Some(d) = &self.state.dead_letters else {
            return br#"{"count":0,"items":[],"note":"this relay keeps no events (no --spool-dir)"}"#.to_vec();
        };
        let items: Vec<DeadLetterInfo> = match d.newest(1000) {
            Ok(all) => all
                .into_iter()
                .map(|l| {
                    let e = l.event.unwrap_or_default();
                    let kind = match e.body {
                        Some(kubechat_protocol::events::event::Body::Audit(_)) => "audit",
                        Some(kubechat_protocol::events::event::Body::Usage(_)) => "usage",
                        None => "",
                    };
                    DeadLetterInfo {
                        id: e.id,
                        tenant: e.tenant,
                        cluster: e.cluster,
                        request_id: e.request_id,
                        time_ms: e.time_ms,
                        reason: l.reason,
                        rejected_at_ms: l.rejected_at_ms,
                        kind,
                    }
                })
                .collect(),
            Err(e) => {
                return serde_json::to_vec(
                    &serde_json::json!({"error": format!("cannot read the dead-letter file: {e}")}),
                )
                .unwrap_or_default();
            }
        };
        serde_json::to_vec(&serde_json::json!({"count": d.count(), "items": items})).unwrap_or_default()
    }
}

/// One row of `/v1/tunnels`.
#[derive(Serialize)]
struct TunnelInfo {
    tenant: String,
    cluster: String,
    relay: String,
    region: String,
    agent_version: String,
    agent_id: String,
    transport: &'static str,
    remote_addr: String,
    connected_since_unix_ms: u64,
    rtt_us: u64,
    open_streams: usize,
    bytes_to_agent: u64,
    bytes_from_agent: u64,
    last_heartbeat_unix_ms: u64,
    draining: bool,
    reconnects: u64,
}

impl AdminHandler for RelayAdmin {
    fn ready(&self) -> Result<(), String> {
        if self.state.shutdown.is_cancelled() {
            return Err("draining".into());
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        self.state.metrics.render()
    }

    fn route(&self, path: &str) -> Option<(&'static str, Vec<u8>)> {
        if path == "/v1/dead-letters" {
            return Some(("application/json", self.dead_letters()));
        }
        if path != "/v1/tunnels" {
            return None;
        }
        use std::sync::atomic::Ordering::Relaxed;
        let rows: Vec<TunnelInfo> = self
            .state
            .registry
            .all()
            .iter()
            .map(|t| TunnelInfo {
                tenant: t.identity.tenant.clone(),
                cluster: t.identity.cluster.clone(),
                relay: self.state.config.relay_id.clone(),
                region: self.state.config.region.clone(),
                agent_version: t.agent_version.clone(),
                agent_id: t.agent_id.clone(),
                transport: t.conn.kind().as_str(),
                remote_addr: t.conn.remote_addr().to_string(),
                connected_since_unix_ms: t
                    .connected_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                rtt_us: t.conn.rtt().as_micros() as u64,
                open_streams: t.open_streams(),
                bytes_to_agent: t.bytes_to_agent.load(Relaxed),
                bytes_from_agent: t.bytes_from_agent.load(Relaxed),
                last_heartbeat_unix_ms: t.last_heartbeat_ms(),
                draining: t.is_draining(),
                reconnects: self.state.registry.reconnects(&t.identity.cluster),
            })
            .collect();
        Some(("application/json", serde_json::to_vec(&serde_json::json!({ "tunnels": rows })).unwrap_or_default()))
    }
}
