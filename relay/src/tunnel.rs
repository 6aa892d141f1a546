//! One agent tunnel: its control stream (Hello, heartbeats, GoAway) and the
//! state requests need (stream slots, draining flag, counters).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubechat_protocol::events::{AuditBody, UsageType, event};
use kubechat_protocol::messages::{GoAway, HelloAck, Pong, control_message};
use kubechat_protocol::{ClusterIdentity, ErrorCode, FrameError, version};
use kubechat_transport::{Connection, FramedRecv, FramedSend, StreamError};
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, debug, info, warn};

use crate::state::RelayState;

/// Largest frame accepted on the control stream.
const MAX_CONTROL_FRAME: usize = 64 * 1024;
/// How long an agent has to open the control stream and say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest cluster grant key id a Hello may name.
const MAX_KEY_ID: usize = 128;

/// A live tunnel.
pub(crate) struct Tunnel {
    /// Unique within this relay process.
    pub(crate) id: u64,
    /// Tenant and cluster, from the agent's certificate.
    pub(crate) identity: ClusterIdentity,
    /// The transport connection.
    pub(crate) conn: Arc<dyn Connection>,
    /// One permit per request stream that may be open at once.
    pub(crate) streams: Arc<Semaphore>,
    /// The stream limit.
    pub(crate) max_streams: usize,
    /// When the tunnel came up.
    pub(crate) connected_at: SystemTime,
    /// The agent's software version (from Hello).
    pub(crate) agent_version: String,
    /// The agent's instance id (from Hello).
    pub(crate) agent_id: String,
    /// The signing key id of the agent's cluster grant key (from Hello;
    /// empty: none). Grants sent without a signature go only to tunnels
    /// whose key id is theirs.
    pub(crate) cluster_grant_key_id: String,
    /// Hex serial of the agent certificate (for per-certificate revocation).
    pub(crate) certificate_serial: String,
    /// Request bytes carried to the agent.
    pub(crate) bytes_to_agent: AtomicU64,
    /// Response bytes carried from the agent.
    pub(crate) bytes_from_agent: AtomicU64,
    last_heartbeat_ms: AtomicU64,
    draining: AtomicBool,
    /// The GOAWAY message was written to the control stream.
    pub(crate) goaway_written: AtomicBool,
    control: mpsc::Sender<control_message::Kind>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Tunnel {
    /// Whether the tunnel takes no new requests.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Request streams open now.
    pub(crate) fn open_streams(&self) -> usize {
        self.max_streams - self.streams.available_permits()
    }

    /// Unix time of the last heartbeat, in milliseconds.
    pub(crate) fn last_heartbeat_ms(&self) -> u64 {
        self.last_heartbeat_ms.load(Ordering::Relaxed)
    }

    /// Stops new requests and tells the agent to connect a replacement.
    pub(crate) fn go_away(&self, reason: &str, grace: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let msg = control_message::Kind::GoAway(GoAway {
            reason: reason.to_string(),
            grace_period_ms: u32::try_from(grace.as_millis()).unwrap_or(u32::MAX),
        });
        if self.control.try_send(msg).is_err() {
            debug!("control stream gone; goaway not sent");
        }
    }
}

/// Audits a tunnel coming up or going down.
fn tunnel_event(state: &RelayState, tunnel: &Tunnel, kind: &str, reason: &str) {
    let body = AuditBody {
        kind: kind.to_string(),
        user: format!("agent:{}", tunnel.agent_id),
        decision: "allow".into(),
        reason: reason.to_string(),
        client_address: tunnel.conn.remote_addr().to_string(),
        ..Default::default()
    };
    let id = &tunnel.identity;
    crate::events::record(state, crate::events::event(state, &id.tenant, &id.cluster, "", event::Body::Audit(body)));
}

/// The error code to close a tunnel with after a bad frame or message.
pub(crate) fn close_code_for(e: &StreamError) -> ErrorCode {
    match e {
        StreamError::Frame(FrameError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
        _ => ErrorCode::Protocol,
    }
}

/// Serves an authenticated tunnel until it ends.
pub(crate) async fn serve(
    conn: Arc<dyn Connection>,
    identity: ClusterIdentity,
    certificate_serial: String,
    state: Arc<RelayState>,
) {
    let span = tracing::info_span!("tunnel", tenant = %identity.tenant, cluster = %identity.cluster, relay = %state.config.relay_id, peer = %conn.remote_addr());
    serve_inner(conn, identity, certificate_serial, state).instrument(span).await;
}

async fn serve_inner(
    conn: Arc<dyn Connection>,
    identity: ClusterIdentity,
    certificate_serial: String,
    state: Arc<RelayState>,
) {
    let stream = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_stream()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(error = %e, "tunnel closed before its control stream");
            return;
        }
        Err(_) => {
            warn!("agent opened no control stream in time");
            state.metrics.handshake_failures.inc("hello_timeout");
            conn.close(ErrorCode::Protocol, "no control stream");
            return;
        }
    };
    let mut recv = FramedRecv::for_small_messages(stream.recv, MAX_CONTROL_FRAME);
    let mut send = FramedSend::new(stream.send);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, recv.next_control_message()).await {
        Ok(Ok(Some(control_message::Kind::Hello(h)))) => h,
        Ok(Ok(other)) => {
            warn!(got = ?other.map(|_| "another message"), "expected hello on the control stream");
            state.metrics.handshake_failures.inc("protocol");
            state.metrics.protocol_errors.inc();
            conn.close(ErrorCode::Protocol, "expected hello");
            return;
        }
        Ok(Err(e)) => {
            warn!(error = %e, "bad hello");
            state.metrics.handshake_failures.inc("protocol");
            state.metrics.protocol_errors.inc();
            conn.close(close_code_for(&e), &e.to_string());
            return;
        }
        Err(_) => {
            warn!("agent sent no hello in time");
            state.metrics.handshake_failures.inc("hello_timeout");
            conn.close(ErrorCode::Protocol, "no hello");
            return;
        }
    };
    let Some(v) = version::negotiate(&hello.versions) else {
        warn!(offered = ?hello.versions, "no common protocol version");
        state.metrics.handshake_failures.inc("version_mismatch");
        conn.close(ErrorCode::VersionMismatch, "no common protocol version");
        return;
    };
    let ack = control_message::Kind::HelloAck(HelloAck {
        version: v,
        capabilities: version::common_capabilities(&hello.capabilities),
        relay_id: state.config.relay_id.clone(),
        heartbeat_interval_ms: u32::try_from(state.config.heartbeat_interval.as_millis()).unwrap_or(u32::MAX),
    });
    if let Err(e) = send.send_control_message(ack).await {
        debug!(error = %e, "tunnel lost during hello");
        return;
    }

    let (control_tx, mut control_rx) = mpsc::channel(4);
    let max_streams = state.config.max_streams_per_tunnel;
    let tunnel = Arc::new(Tunnel {
        id: state.next_tunnel_id(),
        identity,
        conn: conn.clone(),
        streams: Arc::new(Semaphore::new(max_streams)),
        max_streams,
        connected_at: SystemTime::now(),
        agent_version: hello.agent_version,
        agent_id: hello.agent_id,
        // A key id is short; anything longer names no key of ours.
        cluster_grant_key_id: if hello.cluster_grant_key_id.len() <= MAX_KEY_ID {
            hello.cluster_grant_key_id
        } else {
            String::new()
        },
        certificate_serial,
        bytes_to_agent: AtomicU64::new(0),
        bytes_from_agent: AtomicU64::new(0),
        last_heartbeat_ms: AtomicU64::new(now_ms()),
        draining: AtomicBool::new(false),
        goaway_written: AtomicBool::new(false),
        control: control_tx,
    });
    if !state.registry.insert(tunnel.clone()) {
        warn!("cluster id is connected under another tenant; refusing tunnel");
        state.metrics.handshake_failures.inc("identity_conflict");
        conn.close(ErrorCode::IdentityInvalid, "cluster id held by another tenant");
        return;
    }
    if state.shutdown.is_cancelled() {
        // A tunnel that slipped in while the relay started draining is not
        // kept: the agent must find another relay.
        state.registry.remove(&tunnel);
        conn.close(ErrorCode::GoingAway, "relay shutting down");
        return;
    }
    state.metrics.tunnels_connected.inc();
    state.metrics.tunnels_total.inc();
    state.presence_changed.notify_one();
    tunnel_event(&state, &tunnel, "tunnel_connect", "");
    let id = &tunnel.identity;
    crate::events::record(
        &state,
        crate::events::event(
            &state,
            &id.tenant,
            &id.cluster,
            "",
            crate::events::usage(UsageType::ClusterConnected, 1.0),
        ),
    );
    info!(agent_version = %tunnel.agent_version, agent_id = %tunnel.agent_id, transport = conn.kind().as_str(), "tunnel up");

    // Why the agent retired the tunnel, if it said so before it closed.
    let mut retired: Option<String> = None;
    let reason = loop {
        tokio::select! {
            msg = recv.next_control_message() => match msg {
                Ok(Some(control_message::Kind::Ping(p))) => {
                    tunnel.last_heartbeat_ms.store(now_ms(), Ordering::Relaxed);
                    if let Err(e) = send.send_control_message(control_message::Kind::Pong(Pong { nonce: p.nonce })).await {
                        break format!("control stream write failed: {e}");
                    }
                }
                Ok(Some(control_message::Kind::Pong(_))) => {
                    tunnel.last_heartbeat_ms.store(now_ms(), Ordering::Relaxed);
                }
                Ok(Some(control_message::Kind::GoAway(g))) => {
                    // The agent retires this tunnel (renewed certificate,
                    // shutdown): no new streams; in-flight ones finish.
                    info!(reason = %g.reason, "agent is retiring the tunnel");
                    retired = Some(g.reason.chars().take(200).collect());
                    tunnel.draining.store(true, Ordering::Relaxed);
                    state.presence_changed.notify_one();
                }
                Ok(Some(_)) => {
                    conn.close(ErrorCode::Protocol, "unexpected control message");
                    break "unexpected control message".to_string();
                }
                Ok(None) => {
                    conn.close(ErrorCode::Ok, "control stream closed");
                    break "agent closed the control stream".to_string();
                }
                Err(StreamError::Io(e)) => break format!("control stream lost: {e}"),
                Err(e) => {
                    warn!(error = %e, "malformed control frame; closing tunnel");
                    state.metrics.protocol_errors.inc();
                    conn.close(close_code_for(&e), &e.to_string());
                    break format!("malformed control frame: {e}");
                }
            },
            Some(out) = control_rx.recv() => {
                let is_goaway = matches!(out, control_message::Kind::GoAway(_));
                if let Err(e) = send.send_control_message(out).await {
                    break format!("control stream write failed: {e}");
                }
                if is_goaway {
                    tunnel.goaway_written.store(true, Ordering::Relaxed);
                }
            }
            e = conn.closed() => break e.to_string(),
        }
    };
    // What the agent said outranks how the connection then ended.
    let reason = match retired {
        Some(r) => format!("the agent retired it: {r} (then {reason})"),
        None => reason,
    };
    state.registry.remove(&tunnel);
    state.metrics.tunnels_connected.dec();
    state.presence_changed.notify_one();
    tunnel_event(&state, &tunnel, "tunnel_disconnect", &reason);
    info!(%reason, "tunnel down");
}
