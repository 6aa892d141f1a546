//! Keeping tunnels to relays: dial, Hello, heartbeats, accept request
//! streams, reconnect with backoff, replace a draining tunnel early.

use std::sync::Arc;
use std::time::Duration;

use kubechat_protocol::messages::{Hello, Ping, Pong, control_message};
use kubechat_protocol::{ErrorCode, version};
use kubechat_transport::quic::{self, QuicConnection};
use kubechat_transport::{Connection, FramedRecv, FramedSend, StreamError, TransportError};
use rand::Rng;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::backoff::Backoff;
use crate::config::RelayEndpoint;
use crate::forward;
use crate::state::AgentState;

const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("{0}")]
    Setup(String),
    #[error("handshake with the relay failed: {0}")]
    Handshake(String),
    #[error("timed out")]
    Timeout,
    #[error("hello failed: {0}")]
    Hello(String),
}

impl ConnectError {
    fn label(&self) -> &'static str {
        match self {
            Self::Resolve(..) => "resolve",
            Self::Setup(_) => "setup",
            Self::Handshake(_) => "handshake",
            Self::Timeout => "timeout",
            Self::Hello(_) => "hello",
        }
    }
}

/// An established tunnel, after Hello.
pub(crate) struct Session {
    conn: Arc<dyn Connection>,
    control_send: FramedSend,
    control_recv: FramedRecv,
    heartbeat: Duration,
    relay_id: String,
}

async fn connect(relay: &RelayEndpoint, state: &AgentState) -> Result<Session, ConnectError> {
    let addr = tokio::net::lookup_host(&relay.address)
        .await
        .map_err(|e| ConnectError::Resolve(relay.address.clone(), e.to_string()))?
        .next()
        .ok_or_else(|| ConnectError::Resolve(relay.address.clone(), "no addresses".into()))?;
    let tls = kubechat_transport::tls::tunnel_client_config(&state.config.tls, &state.config.relay_ca)
        .map_err(|e| ConnectError::Setup(e.to_string()))?;
    let settings = quic::QuicSettings {
        idle_timeout: state.config.heartbeat_timeout,
        keep_alive: state.config.heartbeat_interval,
        max_incoming_streams: state.config.max_concurrent_streams,
        ..Default::default()
    };
    let client = quic::client_config(tls, &settings).map_err(|e| ConnectError::Setup(e.to_string()))?;
    let endpoint = quic::client_endpoint(addr).map_err(|e| ConnectError::Setup(e.to_string()))?;
    let connecting = endpoint
        .connect_with(client, addr, &relay.server_name)
        .map_err(|e| ConnectError::Setup(format!("cannot dial {addr}: {e}")))?;
    let conn = tokio::time::timeout(state.config.connect_timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let quinn_conn = conn.clone();
    let conn: Arc<dyn Connection> = Arc::new(QuicConnection::new(conn));

    let hello = async {
        let stream = conn.open_stream().await.map_err(|e| ConnectError::Hello(e.to_string()))?;
        let mut send = FramedSend::new(stream.send);
        let mut recv = FramedRecv::new(stream.recv, MAX_CONTROL_FRAME);
        let hello = control_message::Kind::Hello(Hello {
            versions: version::SUPPORTED_VERSIONS.to_vec(),
            capabilities: version::CAPABILITIES.iter().map(|c| (*c).to_string()).collect(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_id: state.config.agent_id.clone(),
        });
        send.send_control_message(hello).await.map_err(|e| ConnectError::Hello(e.to_string()))?;
        match recv.next_control_message().await {
            Ok(Some(control_message::Kind::HelloAck(ack))) => Ok((send, recv, ack)),
            Ok(other) => Err(ConnectError::Hello(format!("expected HelloAck, got {other:?}"))),
            Err(e) => Err(ConnectError::Hello(e.to_string())),
        }
    };
    let (control_send, control_recv, ack) = match tokio::time::timeout(state.config.connect_timeout, hello).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            // TLS 1.3 lets the client finish before the relay has checked
            // its certificate: a refusal shows up here, as the close reason.
            match quinn_conn.close_reason() {
                Some(quinn::ConnectionError::ConnectionClosed(c)) => {
                    return Err(ConnectError::Handshake(format!("relay refused the connection: {c}")));
                }
                Some(quinn::ConnectionError::ApplicationClosed(c)) => {
                    return Err(ConnectError::Handshake(format!("relay refused the tunnel: {c}")));
                }
                _ => {}
            }
            conn.close(ErrorCode::Protocol, "hello failed");
            return Err(e);
        }
        Err(_) => {
            conn.close(ErrorCode::Protocol, "hello timed out");
            return Err(ConnectError::Timeout);
        }
    };
    if !version::SUPPORTED_VERSIONS.contains(&ack.version) {
        conn.close(ErrorCode::VersionMismatch, "relay chose an unknown version");
        return Err(ConnectError::Hello(format!("relay chose unknown version {}", ack.version)));
    }
    let heartbeat = match ack.heartbeat_interval_ms {
        0 => state.config.heartbeat_interval,
        ms => Duration::from_millis(u64::from(ms)).min(state.config.heartbeat_interval),
    };
    Ok(Session { conn, control_send, control_recv, heartbeat, relay_id: ack.relay_id })
}

/// How a session ended.
enum SessionEnd {
    /// The connection closed or was judged dead.
    Closed(String),
    /// The relay closed the tunnel with GOING_AWAY (it is draining); the
    /// GOAWAY message itself may not have arrived before the close.
    Drained,
    /// The agent is shutting down.
    Shutdown,
}

/// Runs one tunnel: accepts request streams, answers and sends heartbeats,
/// reports a GOAWAY through `goaway` (the tunnel keeps serving in-flight
/// streams until the relay closes it).
async fn run_session(mut s: Session, state: Arc<AgentState>, goaway: oneshot::Sender<()>) -> SessionEnd {
    let mut goaway = Some(goaway);
    let mut ticker = tokio::time::interval(s.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_answer = Instant::now();
    let mut nonce: u64 = 0;
    let mut ping_sent: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            stream = s.conn.accept_stream() => match stream {
                Ok(stream) => {
                    let st = state.clone();
                    state.tasks.spawn(forward::serve_stream(stream, st).in_current_span());
                }
                Err(TransportError::ClosedByPeer { code: Some(ErrorCode::GoingAway), .. }) => {
                    if goaway.is_some() {
                        state.metrics.goaways.inc();
                    }
                    return SessionEnd::Drained;
                }
                Err(e) => return SessionEnd::Closed(e.to_string()),
            },
            msg = s.control_recv.next_control_message() => match msg {
                Ok(Some(control_message::Kind::Pong(p))) => {
                    last_answer = Instant::now();
                    if let Some((_, at)) = ping_sent.take().filter(|(n, _)| *n == p.nonce) {
                        state.metrics.heartbeat_rtt_us.set(at.elapsed().as_micros() as i64);
                    }
                }
                Ok(Some(control_message::Kind::Ping(p))) => {
                    last_answer = Instant::now();
                    let _ = s.control_send.send_control_message(control_message::Kind::Pong(Pong { nonce: p.nonce })).await;
                }
                Ok(Some(control_message::Kind::GoAway(g))) => {
                    info!(reason = %g.reason, grace_ms = g.grace_period_ms, "relay is draining; connecting a replacement");
                    state.metrics.goaways.inc();
                    if let Some(tx) = goaway.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Some(_)) => {
                    s.conn.close(ErrorCode::Protocol, "unexpected control message");
                    return SessionEnd::Closed("relay sent an unexpected control message".into());
                }
                Ok(None) => {
                    // The relay ended the control stream: wait for in-flight streams.
                    let e = s.conn.closed().await;
                    return SessionEnd::Closed(format!("relay ended the control stream ({e})"));
                }
                Err(StreamError::Io(e)) => return SessionEnd::Closed(format!("control stream lost: {e}")),
                Err(e) => {
                    warn!(error = %e, "malformed control frame from relay; closing tunnel");
                    s.conn.close(ErrorCode::Protocol, &e.to_string());
                    return SessionEnd::Closed(e.to_string());
                }
            },
            _ = ticker.tick() => {
                if last_answer.elapsed() > state.config.heartbeat_timeout {
                    s.conn.close(ErrorCode::HeartbeatTimeout, "no heartbeat answer");
                    return SessionEnd::Closed(format!("no heartbeat answer for {:?}", last_answer.elapsed()));
                }
                nonce += 1;
                ping_sent = Some((nonce, Instant::now()));
                if let Err(e) = s.control_send.send_control_message(control_message::Kind::Ping(Ping { nonce })).await {
                    return SessionEnd::Closed(format!("heartbeat write failed: {e}"));
                }
            }
            () = state.shutdown.cancelled() => {
                drain(&s.conn, &state).await;
                return SessionEnd::Shutdown;
            }
        }
    }
}

/// On shutdown: stop taking streams, let in-flight ones finish, close.
async fn drain(conn: &Arc<dyn Connection>, state: &AgentState) {
    let deadline = Instant::now() + state.config.grace_period;
    while state.metrics.streams_open.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conn.close(ErrorCode::GoingAway, "agent shutting down");
}

/// Keeps one tunnel to `relay` up until shutdown.
pub(crate) async fn maintain(relay: RelayEndpoint, state: Arc<AgentState>) {
    let span = tracing::info_span!("relay", address = %relay.address);
    async move {
        let mut backoff = Backoff::new(state.config.backoff_base, state.config.backoff_cap);
        loop {
            if state.shutdown.is_cancelled() {
                return;
            }
            state.metrics.connect_attempts.inc();
            match connect(&relay, &state).await {
                Ok(session) => {
                    let started = Instant::now();
                    let relay_id = session.relay_id.clone();
                    info!(relay_id = %relay_id, "tunnel up");
                    state.metrics.tunnels_connected.inc();
                    let (tx, rx) = oneshot::channel();
                    let st = state.clone();
                    let mut task = state.tasks.spawn(
                        async move {
                            let end = run_session(session, st.clone(), tx).await;
                            st.metrics.tunnels_connected.dec();
                            end
                        }
                        .in_current_span(),
                    );
                    tokio::select! {
                        Ok(()) = rx => {
                            // Draining relay: dial the replacement now; the old
                            // session finishes its streams in its own task.
                            backoff.reset();
                            continue;
                        }
                        end = &mut task => {
                            match end {
                                Ok(SessionEnd::Shutdown) => return,
                                Ok(SessionEnd::Drained) => {
                                    // Dial a replacement at once, as for a GOAWAY.
                                    info!(relay_id = %relay_id, "relay closed the tunnel while draining; reconnecting");
                                    backoff.reset();
                                    continue;
                                }
                                Ok(SessionEnd::Closed(why)) => info!(relay_id = %relay_id, reason = %why, "tunnel down"),
                                Err(e) => warn!(error = %e, "tunnel task failed"),
                            }
                            if started.elapsed() >= state.config.stable_after {
                                backoff.reset();
                            }
                        }
                    }
                }
                Err(e) => {
                    state.metrics.connect_failures.inc(e.label());
                    warn!(error = %e, attempt = backoff.attempts() + 1, "cannot connect to relay");
                }
            }
            let delay = backoff.next_delay(rand::rng().random::<f64>());
            debug!(delay_ms = delay.as_millis() as u64, "reconnecting after backoff");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = state.shutdown.cancelled() => return,
            }
        }
    }
    .instrument(span)
    .await;
}
