//! Tunnel presence: the relay reports its tunnels to the control plane over
//! gRPC (mutual TLS with the relay's own certificate, which names it), and
//! takes the revocation list from each answer.
//!
//! Each report is a delta against the last acknowledged state (or a full
//! snapshot when the control plane asks for one), so applying a report twice
//! is harmless and a lost answer costs nothing. Draining tunnels are reported
//! as gone, so the control plane stops routing to a relay that is shutting
//! down. Between changes the relay reports every `interval`, renewing its
//! lease; a relay that crashes simply stops, and the control plane forgets
//! its tunnels when the lease expires.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubechat_protocol::ErrorCode;
use kubechat_protocol::presence::presence_client::PresenceClient;
use kubechat_protocol::presence::{PresenceAck, PresenceReport, TunnelInfo};
use tracing::{debug, info, warn};

use crate::state::RelayState;

/// Where and how to report presence.
#[derive(Clone)]
pub struct PresenceTarget {
    /// The control plane's internal gRPC URL, `https://host:port`.
    pub url: String,
    /// mTLS client configuration: the relay's certificate, the control
    /// plane's CA. Any ALPN list is replaced by h2.
    pub tls: rustls::ClientConfig,
    /// Report at least this often (the lease is three intervals, at least
    /// [`MIN_LEASE`]).
    pub interval: Duration,
    /// The internal listener's address as the control plane dials it;
    /// default: the bound address.
    pub advertise: Option<String>,
}

impl std::fmt::Debug for PresenceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceTarget")
            .field("url", &self.url)
            .field("interval", &self.interval)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// Revoked clusters and certificates, as the control plane last said.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    pub(crate) clusters: HashSet<String>,
    pub(crate) certificates: HashSet<String>,
    pub(crate) version: u64,
}

impl Revocations {
    /// Why a tunnel with this cluster and certificate serial is refused, if it is.
    pub(crate) fn refuses(&self, cluster: &str, serial: &str) -> Option<&'static str> {
        if self.clusters.contains(cluster) {
            Some("cluster revoked")
        } else if self.certificates.contains(serial) {
            Some("certificate revoked")
        } else {
            None
        }
    }
}

impl crate::state::RelayState {
    /// Why a tunnel with this cluster and certificate serial is refused at
    /// handshake, if it is (the current revocation list).
    pub(crate) fn revoked(&self, cluster: &str, serial: &str) -> Option<&'static str> {
        self.revocations.read().unwrap_or_else(|p| p.into_inner()).refuses(cluster, serial)
    }
}

/// Takes a new revocation list and closes every live tunnel it refuses.
pub(crate) fn apply_revocations(state: &RelayState, ack: &PresenceAck) {
    let new = Revocations {
        clusters: ack.revoked_clusters.iter().cloned().collect(),
        certificates: ack.revoked_certificates.iter().cloned().collect(),
        version: ack.revocations_version,
    };
    for t in state.registry.all() {
        if let Some(why) = new.refuses(&t.identity.cluster, &t.certificate_serial) {
            warn!(cluster = %t.identity.cluster, serial = %t.certificate_serial, why, "credentials revoked; closing the tunnel");
            state.metrics.handshake_failures.inc("revoked");
            t.conn.close(ErrorCode::IdentityInvalid, why);
        }
    }
    *state.revocations.write().unwrap_or_else(|p| p.into_inner()) = new;
}

fn snapshot(state: &RelayState) -> HashMap<u64, TunnelInfo> {
    state
        .registry
        .all()
        .into_iter()
        .filter(|t| !t.is_draining() && !state.shutdown.is_cancelled())
        .map(|t| {
            let info = TunnelInfo {
                tunnel_id: t.id,
                tenant: t.identity.tenant.clone(),
                cluster: t.identity.cluster.clone(),
                agent_id: t.agent_id.clone(),
                agent_version: t.agent_version.clone(),
                transport: t.conn.kind().as_str().to_string(),
                remote_addr: t.conn.remote_addr().to_string(),
                connected_at_ms: t.connected_at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
                certificate_serial: t.certificate_serial.clone(),
                cluster_grant_key_id: t.cluster_grant_key_id.clone(),
                rtt_us: t.conn.rtt().as_micros() as u64,
                open_streams: u32::try_from(t.open_streams()).unwrap_or(u32::MAX),
                bytes_to_agent: t.bytes_to_agent.load(std::sync::atomic::Ordering::Relaxed),
                bytes_from_agent: t.bytes_from_agent.load(std::sync::atomic::Ordering::Relaxed),
                last_heartbeat_ms: i64::try_from(t.last_heartbeat_ms()).unwrap_or(i64::MAX),
                reconnects: state.registry.reconnects(&t.identity.cluster),
            };
            (t.id, info)
        })
        .collect()
}

/// Reports between two refreshes of every tunnel's live figures.
const STATS_EVERY: u64 = 15;

/// The shortest lease a relay asks for, whatever its interval: a report
/// late on a busy host must not make live tunnels unroutable (a crashed
/// relay is forgotten within max(three intervals, this)).
const MIN_LEASE: Duration = Duration::from_secs(3);

/// An HTTP/2 channel to the control plane's internal gRPC endpoint, for
/// both presence and events.
pub(crate) type Channel = Client<hyper_rustls::HttpsConnector<HttpConnector>, tonic::body::Body>;

/// The channel and origin URI `target` names.
pub(crate) fn channel(target: &PresenceTarget) -> Result<(Channel, http::Uri), String> {
    // hyper-rustls sets ALPN (h2) itself and refuses a preset list.
    let mut tls = target.tls.clone();
    tls.alpn_protocols.clear();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http2().build();
    let http = Client::builder(TokioExecutor::new()).http2_only(true).build(https);
    let origin = target.url.parse().map_err(|e| format!("bad control-plane URL {}: {e}", target.url))?;
    Ok((http, origin))
}

type Grpc = PresenceClient<Channel>;

fn client(target: &PresenceTarget) -> Result<Grpc, String> {
    let (http, origin) = channel(target)?;
    Ok(PresenceClient::with_origin(http, origin))
}

/// Reports until shutdown; the last report (on drain) withdraws every tunnel.
pub(crate) async fn run(target: PresenceTarget, state: Arc<RelayState>, internal_addr: String) {
    let mut grpc = match client(&target) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "presence reporting disabled");
            return;
        }
    };
    let epoch = uuid::Uuid::now_v7().to_string();
    let address = target.advertise.clone().unwrap_or(internal_addr);
    let lease = (target.interval * 3).max(MIN_LEASE);
    let mut seq = 0u64;
    let mut acked: HashMap<u64, TunnelInfo> = HashMap::new();
    let mut full = true;
    let mut reported_ok = false;
    loop {
        let last = state.shutdown.is_cancelled();
        let current = snapshot(&state);
        seq += 1;
        // Every STATS_EVERY reports, a full snapshot refreshes the live
        // figures (RTT, streams, bytes) the control plane shows.
        if seq.is_multiple_of(STATS_EVERY) {
            full = true;
        }
        let (up, down) = if full {
            (current.values().cloned().collect(), Vec::new())
        } else {
            (
                current.iter().filter(|(id, _)| !acked.contains_key(id)).map(|(_, t)| t.clone()).collect(),
                acked.iter().filter(|(id, _)| !current.contains_key(id)).map(|(_, t)| t.clone()).collect(),
            )
        };
        let report = PresenceReport {
            relay_id: state.config.relay_id.clone(),
            region: state.config.region.clone(),
            internal_address: address.clone(),
            epoch: epoch.clone(),
            seq,
            full,
            up,
            down,
            lease_ms: if last { 0 } else { u32::try_from(lease.as_millis()).unwrap_or(u32::MAX) },
            revocations_version: state.revocations.read().unwrap_or_else(|p| p.into_inner()).version,
            // Only a relay that checks grants may be sent them unsigned: one
            // that does not would send them to any agent.
            gate_key_ids: if state.config.grants.is_empty() {
                Vec::new()
            } else {
                state.grant_gate.read().unwrap_or_else(|p| p.into_inner()).key_ids()
            },
        };
        match tokio::time::timeout(target.interval.max(Duration::from_secs(1)) * 2, grpc.report(report)).await {
            Ok(Ok(resp)) => {
                let ack = resp.into_inner();
                state.metrics.presence_reports.inc("ok");
                if !reported_ok {
                    info!(url = %target.url, tunnels = current.len(), "reporting tunnel presence to the control plane");
                    reported_ok = true;
                }
                if ack.resend_full {
                    full = true;
                } else {
                    acked = current;
                    full = false;
                }
                if ack.revocations_changed {
                    apply_revocations(&state, &ack);
                }
                if let Some(key) = kubechat_protocol::grant::gate_key(&ack.grant_gate_key) {
                    let mut gates = state.grant_gate.write().unwrap_or_else(|p| p.into_inner());
                    if !ack.grant_key_id.is_empty() && !gates.key_ids().contains(&ack.grant_key_id) {
                        // Reported at once: grants of this key id may now
                        // come here without their signature.
                        state.presence_changed.notify_one();
                    }
                    gates.learn(&ack.grant_key_id, key);
                }
            }
            Ok(Err(status)) => {
                state.metrics.presence_reports.inc("refused");
                warn!(code = ?status.code(), message = %status.message(), "the control plane refused a presence report");
                reported_ok = false;
            }
            Err(_) => {
                state.metrics.presence_reports.inc("timeout");
                debug!("presence report timed out");
                reported_ok = false;
            }
        }
        if last {
            return;
        }
        tokio::select! {
            () = state.presence_changed.notified() => {
                // Let a burst of changes (a drain, a reconnect storm) land in one report.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            () = tokio::time::sleep(target.interval) => {}
            () = state.shutdown.cancelled() => {}
        }
    }
}
