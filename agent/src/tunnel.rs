//! Keeping tunnels to relays: dial, Hello, heartbeats, accept request
//! streams, reconnect with backoff, replace a draining tunnel early, and
//! rotate every tunnel onto a renewed certificate: the replacement is dialled
//! first, the old tunnel closes once its own streams have finished.

use std::sync::Arc;
use std::time::Duration;

use kubechat_protocol::messages::{Hello, Ping, Pong, control_message};
use kubechat_protocol::{ErrorCode, version};
use kubechat_transport::quic::{self, QuicConnection};
use kubechat_transport::{Connection, FramedRecv, FramedSend, StreamError, TransportError};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::backoff::Backoff;
use crate::config::RelayEndpoint;
use crate::credentials::unix_now;
use crate::forward;
use crate::state::{ActiveIdentity, AgentState};

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
    /// The serial of the certificate this session presented.
    serial: String,
    /// When that certificate expires (Unix seconds), if known.
    not_after: Option<i64>,
    /// The relay accepts GoAway from the agent.
    relay_takes_goaway: bool,
    /// The identity this session was opened with: its streams' grants are
    /// checked with its keys (those its Hello named).
    identity: Arc<ActiveIdentity>,
}

impl Session {
    /// Tells the relay to open no new stream here (when it understands it).
    async fn go_away(&mut self, reason: &str) {
        if !self.relay_takes_goaway {
            return;
        }
        let msg = control_message::Kind::GoAway(kubechat_protocol::messages::GoAway {
            reason: reason.to_string(),
            grace_period_ms: 0,
        });
        if let Err(e) = self.control_send.send_control_message(msg).await {
            debug!(error = %e, "goaway to the relay not sent");
        }
    }
}

/// Request streams open on one session: the count, and a way to wait until
/// none is.
#[derive(Clone, Default)]
struct OpenStreams(Arc<watch::Sender<usize>>);

/// One open stream; dropping it closes it in the count.
struct StreamGuard(OpenStreams);

impl OpenStreams {
    fn open(&self) -> StreamGuard {
        self.0.send_modify(|n| *n += 1);
        StreamGuard(self.clone())
    }

    /// Resolves once no stream is open (at once if none is). Cancel-safe.
    async fn idle(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn is_idle(&self) -> bool {
        *self.0.borrow() == 0
    }

    /// Resolves once no stream has been open for [`linger`]. Not
    /// cancel-safe (the wait starts over).
    async fn quiet(&self, conn: &dyn Connection) {
        loop {
            self.idle().await;
            tokio::time::sleep(linger(conn)).await;
            if self.is_idle() {
                return;
            }
        }
    }
}

/// How long to keep a connection open after its last stream is done: a
/// stream is done for us when its last bytes are written, but closing the
/// connection discards what the relay has not acknowledged yet.
fn linger(conn: &dyn Connection) -> Duration {
    (conn.rtt() * 3 + Duration::from_millis(100)).min(Duration::from_secs(2))
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Dials the relay over QUIC.
async fn dial_quic(
    relay: &RelayEndpoint,
    state: &AgentState,
    active: &ActiveIdentity,
    timeout: Duration,
) -> Result<quinn::Connection, ConnectError> {
    let addr = tokio::net::lookup_host(&relay.address)
        .await
        .map_err(|e| ConnectError::Resolve(relay.address.clone(), e.to_string()))?
        .next()
        .ok_or_else(|| ConnectError::Resolve(relay.address.clone(), "no addresses".into()))?;
    let tls = kubechat_transport::tls::tunnel_client_config(&active.tls, &active.relay_ca)
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
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|e| ConnectError::Handshake(e.to_string()))
}

async fn connect(
    relay: &RelayEndpoint,
    state: &AgentState,
    active: &Arc<ActiveIdentity>,
) -> Result<Session, ConnectError> {
    connect_via(relay, state, active, false).await
}

/// Like [`connect`]; with `quic_only`, never falls back to WebSocket (a
/// probe whether QUIC works again).
async fn connect_via(
    relay: &RelayEndpoint,
    state: &AgentState,
    active: &Arc<ActiveIdentity>,
    quic_only: bool,
) -> Result<Session, ConnectError> {
    // With a WebSocket fallback, QUIC gets a short chance (UDP may be
    // blocked) and is skipped for a while after it failed.
    let ws = if quic_only { None } else { relay.ws_address() };
    let prefer_ws = ws.is_some() && relay.quic_failed_recently(state.config.quic_retry_after);
    let (conn, quinn_conn): (Arc<dyn Connection>, Option<quinn::Connection>) = if prefer_ws {
        (crate::ws_dial::dial(relay, state, active).await?, None)
    } else {
        let timeout = if ws.is_some() {
            state.config.connect_timeout.min(Duration::from_secs(3))
        } else {
            state.config.connect_timeout
        };
        match dial_quic(relay, state, active, timeout).await {
            Ok(c) => {
                relay.quic_worked();
                (Arc::new(QuicConnection::new(c.clone())), Some(c))
            }
            Err(e) if quic_only => {
                relay.quic_failed();
                return Err(e);
            }
            Err(e @ (ConnectError::Timeout | ConnectError::Handshake(_))) if ws.is_some() => {
                relay.quic_failed();
                info!(error = %e, "QUIC cannot reach the relay; falling back to WebSocket");
                (crate::ws_dial::dial(relay, state, active).await?, None)
            }
            Err(e) => return Err(e),
        }
    };

    let hello = async {
        let stream = conn.open_stream().await.map_err(|e| ConnectError::Hello(e.to_string()))?;
        let mut send = FramedSend::new(stream.send);
        let mut recv = FramedRecv::for_small_messages(stream.recv, MAX_CONTROL_FRAME);
        let hello = control_message::Kind::Hello(Hello {
            versions: version::SUPPORTED_VERSIONS.to_vec(),
            capabilities: version::CAPABILITIES.iter().map(|c| (*c).to_string()).collect(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_id: state.config.agent_id.clone(),
            cluster_grant_key_id: active.grants.cluster_key_id().unwrap_or_default().to_string(),
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
            match quinn_conn.as_ref().and_then(|q| q.close_reason()) {
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
    Ok(Session {
        conn,
        control_send,
        control_recv,
        heartbeat,
        relay_id: ack.relay_id,
        serial: active.serial.clone(),
        not_after: active.validity.map(|v| v.not_after),
        relay_takes_goaway: ack.capabilities.iter().any(|c| c == version::CAP_AGENT_GOAWAY),
        identity: active.clone(),
    })
}

/// How a session ended.
enum SessionEnd {
    /// The connection closed or was judged dead.
    Closed(String),
    /// The relay closed the tunnel with GOING_AWAY (it is draining); the
    /// GOAWAY message itself may not have arrived before the close.
    Drained,
    /// Replaced by a tunnel with a renewed certificate, and closed once its
    /// streams had finished.
    Retired,
    /// The agent is shutting down.
    Shutdown,
}

/// Runs one tunnel: accepts request streams, answers and sends heartbeats,
/// reports a GOAWAY by cancelling `goaway` (the tunnel keeps serving
/// in-flight streams until the relay closes it). Once `retire` is
/// cancelled (a replacement with a renewed certificate is up) it closes the
/// tunnel as soon as none of its own streams is open, or when its
/// certificate expires.
async fn run_session(
    mut s: Session,
    state: Arc<AgentState>,
    goaway: CancellationToken,
    retire: CancellationToken,
) -> SessionEnd {
    let streams = OpenStreams::default();
    let mut ticker = tokio::time::interval(s.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_answer = Instant::now();
    let mut nonce: u64 = 0;
    let mut ping_sent: Option<(u64, Instant)> = None;
    // Set once retired: the latest moment to close regardless of streams.
    let mut retire_by: Option<Instant> = None;
    // Set while retired and no stream is open: when to close.
    let mut close_at: Option<Instant> = None;
    loop {
        tokio::select! {
            stream = s.conn.accept_stream() => match stream {
                Ok(stream) => {
                    close_at = None;
                    let (st, identity) = (state.clone(), s.identity.clone());
                    let open = streams.open();
                    state.tasks.spawn(
                        async move {
                            forward::serve_stream(stream, st, identity).await;
                            drop(open);
                        }
                        .in_current_span(),
                    );
                }
                Err(TransportError::ClosedByPeer { code: Some(ErrorCode::GoingAway), .. }) => {
                    if !goaway.is_cancelled() {
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
                    goaway.cancel();
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
            () = retire.cancelled(), if retire_by.is_none() => {
                // No reason to keep a tunnel whose certificate has expired.
                let left = s.not_after.map_or(state.config.grace_period, |t| {
                    Duration::from_secs(u64::try_from(t - unix_now()).unwrap_or(0))
                });
                info!(serial = %s.serial, "replaced by a tunnel with the renewed certificate; closing once its streams finish");
                retire_by = Some(Instant::now() + left);
                s.go_away("certificate renewed").await;
            }
            () = streams.idle(), if retire_by.is_some() && close_at.is_none() => {
                close_at = Some(Instant::now() + linger(s.conn.as_ref()));
            }
            () = tokio::time::sleep_until(close_at.unwrap_or_else(Instant::now)), if close_at.is_some() => {
                if !streams.is_idle() {
                    close_at = None;
                    continue;
                }
                s.conn.close(ErrorCode::GoingAway, "certificate renewed");
                return SessionEnd::Retired;
            }
            () = tokio::time::sleep_until(retire_by.unwrap_or_else(Instant::now)), if retire_by.is_some() => {
                warn!(serial = %s.serial, "the replaced tunnel's certificate expires; closing it with streams still open");
                s.conn.close(ErrorCode::GoingAway, "certificate renewed");
                return SessionEnd::Retired;
            }
            () = state.shutdown.cancelled() => {
                s.go_away("agent shutting down").await;
                drain(&s.conn, &streams, &state).await;
                return SessionEnd::Shutdown;
            }
        }
    }
}

/// On shutdown: let this tunnel's in-flight streams finish within the grace
/// period, then close.
async fn drain(conn: &Arc<dyn Connection>, streams: &OpenStreams, state: &AgentState) {
    let _ = tokio::time::timeout(state.config.grace_period, streams.quiet(conn.as_ref())).await;
    conn.close(ErrorCode::GoingAway, "agent shutting down");
}

/// A running session, seen from [`maintain`].
struct Live {
    task: JoinHandle<SessionEnd>,
    /// Cancelled by the session on a GOAWAY.
    goaway: CancellationToken,
    /// Cancelled by `maintain` once a replacement is up.
    retire: CancellationToken,
    relay_id: String,
    started: Instant,
}

impl Live {
    fn spawn(session: Session, state: &Arc<AgentState>) -> Self {
        let relay_id = session.relay_id.clone();
        info!(relay_id = %relay_id, serial = %session.serial, "tunnel up");
        state.metrics.tunnels_connected.inc();
        let (goaway, retire) = (CancellationToken::new(), CancellationToken::new());
        let st = state.clone();
        let (g, r) = (goaway.clone(), retire.clone());
        let task = state.tasks.spawn(
            async move {
                let end = run_session(session, st.clone(), g, r).await;
                st.metrics.tunnels_connected.dec();
                if st.metrics.tunnels_connected.get() == 0 {
                    *st.last_tunnel_down.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                }
                if let SessionEnd::Retired = end {
                    info!("tunnel with the replaced certificate closed");
                }
                end
            }
            .in_current_span(),
        );
        Self { task, goaway, retire, relay_id, started: Instant::now() }
    }
}

/// What [`maintain`] does once a session is gone or being replaced.
enum Next {
    /// Dial again at once (a draining relay).
    DialNow,
    /// Dial again after the backoff delay.
    Backoff,
    /// Stop: the agent is shutting down.
    Return,
}

/// Watches a live session until it ends or is replaced: a GOAWAY dials the
/// replacement at once (via [`Next::DialNow`]); a renewed certificate dials
/// one here and retires the old session once the new one is up.
async fn supervise(
    session: Session,
    relay: &RelayEndpoint,
    state: &Arc<AgentState>,
    renewed: &mut watch::Receiver<Arc<ActiveIdentity>>,
    backoff: &mut Backoff,
) -> Next {
    // On the WebSocket fallback, probe QUIC now and then and move back to it.
    let mut quic_probe_at = (session.conn.kind() == kubechat_transport::TransportKind::WebSocket)
        .then(|| Instant::now() + state.config.quic_retry_after);
    let mut live = Live::spawn(session, state);
    // Set while a renewed certificate waits for its tunnel: when to dial.
    let mut rotate_at: Option<Instant> = None;
    let mut rotate_backoff = Backoff::new(state.config.backoff_base, state.config.backoff_cap);
    loop {
        tokio::select! {
            () = live.goaway.cancelled() => {
                // Draining relay: dial the replacement now; the old session
                // finishes its streams in its own task.
                backoff.reset();
                return Next::DialNow;
            }
            r = renewed.changed(), if rotate_at.is_none() => match r {
                Ok(()) => rotate_at = Some(Instant::now()),
                // The state (which holds the sender) outlives every tunnel.
                Err(_) => return Next::Return,
            },
            () = tokio::time::sleep_until(rotate_at.unwrap_or_else(Instant::now)), if rotate_at.is_some() => {
                let active = renewed.borrow_and_update().clone();
                state.metrics.connect_attempts.inc();
                match connect(relay, state, &active).await {
                    Ok(replacement) => {
                        state.metrics.tunnel_rotations.inc();
                        live.retire.cancel();
                        live = Live::spawn(replacement, state);
                        rotate_at = None;
                        rotate_backoff.reset();
                    }
                    Err(e) => {
                        state.metrics.connect_failures.inc(e.label());
                        let delay = rotate_backoff.next_delay(rand::rng().random::<f64>());
                        warn!(
                            error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "cannot dial a tunnel with the renewed certificate; the current tunnel stays up"
                        );
                        rotate_at = Some(Instant::now() + delay);
                    }
                }
            }
            () = tokio::time::sleep_until(quic_probe_at.unwrap_or_else(Instant::now)), if quic_probe_at.is_some() => {
                let active = renewed.borrow().clone();
                match connect_via(relay, state, &active, true).await {
                    Ok(replacement) => {
                        info!(relay_id = %live.relay_id, "QUIC works again; moving the tunnel off WebSocket");
                        state.metrics.tunnel_rotations.inc();
                        live.retire.cancel();
                        live = Live::spawn(replacement, state);
                        quic_probe_at = None;
                    }
                    Err(e) => {
                        debug!(error = %e, "QUIC still cannot reach the relay; staying on WebSocket");
                        quic_probe_at = Some(Instant::now() + state.config.quic_retry_after);
                    }
                }
            }
            end = &mut live.task => {
                match end {
                    Ok(SessionEnd::Shutdown) => return Next::Return,
                    Ok(SessionEnd::Drained) => {
                        // Dial a replacement at once, as for a GOAWAY.
                        info!(relay_id = %live.relay_id, "relay closed the tunnel while draining; reconnecting");
                        backoff.reset();
                        return Next::DialNow;
                    }
                    Ok(SessionEnd::Retired) => return Next::DialNow,
                    Ok(SessionEnd::Closed(why)) => info!(relay_id = %live.relay_id, reason = %why, "tunnel down"),
                    Err(e) => warn!(error = %e, "tunnel task failed"),
                }
                if live.started.elapsed() >= state.config.stable_after {
                    backoff.reset();
                }
                return Next::Backoff;
            }
        }
    }
}

/// Keeps one tunnel to `relay` up until shutdown, on the current
/// certificate.
pub(crate) async fn maintain(relay: RelayEndpoint, state: Arc<AgentState>) {
    maintain_on(relay, state, false).await;
}

/// Keeps `state.config.relay_connections` tunnels up over a longer list of
/// relays: this slot holds one relay at a time (one no other slot holds),
/// and moves to the next free one when it fails.
pub(crate) async fn maintain_slot(
    slot: usize,
    relays: Vec<RelayEndpoint>,
    claimed: Arc<std::sync::Mutex<std::collections::HashSet<usize>>>,
    state: Arc<AgentState>,
) {
    let mut next = slot;
    let mut backoff = Backoff::new(state.config.backoff_base, state.config.backoff_cap);
    while !state.shutdown.is_cancelled() {
        let pick = {
            let mut c = claimed.lock().unwrap_or_else(|p| p.into_inner());
            let found = (0..relays.len()).map(|k| (next + k) % relays.len()).find(|i| !c.contains(i));
            if let Some(i) = found {
                c.insert(i);
            }
            found
        };
        let Some(i) = pick else { return };
        let shutdown = maintain_on(relays[i].clone(), state.clone(), true).await;
        claimed.lock().unwrap_or_else(|p| p.into_inner()).remove(&i);
        if shutdown {
            return;
        }
        next = i + 1;
        // A full round of failures backs off; moving on does not wait.
        if next % relays.len() == slot % relays.len() {
            let delay = backoff.next_delay(rand::rng().random::<f64>());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = state.shutdown.cancelled() => return,
            }
        }
    }
}

/// Keeps a tunnel to `relay`; with `move_on`, returns `false` after the
/// first failure (for [`maintain_slot`]). Returns `true` on shutdown.
async fn maintain_on(relay: RelayEndpoint, state: Arc<AgentState>, move_on: bool) -> bool {
    let span = tracing::info_span!("relay", address = %relay.address);
    async move {
        let mut backoff = Backoff::new(state.config.backoff_base, state.config.backoff_cap);
        let mut renewed = state.watch_active();
        loop {
            if state.shutdown.is_cancelled() {
                return true;
            }
            let active = renewed.borrow_and_update().clone();
            state.metrics.connect_attempts.inc();
            match connect(&relay, &state, &active).await {
                Ok(session) => match supervise(session, &relay, &state, &mut renewed, &mut backoff).await {
                    Next::Return => return true,
                    Next::DialNow => continue,
                    Next::Backoff => {}
                },
                Err(e) => {
                    state.metrics.connect_failures.inc(e.label());
                    warn!(error = %e, attempt = backoff.attempts() + 1, "cannot connect to relay");
                }
            }
            if move_on {
                return false;
            }
            let delay = backoff.next_delay(rand::rng().random::<f64>());
            debug!(delay_ms = delay.as_millis() as u64, "reconnecting after backoff");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = state.shutdown.cancelled() => return true,
            }
        }
    }
    .instrument(span)
    .await
}
