//! The KubeChat relay: terminates agent tunnels (mutual-TLS QUIC), keeps a
//! registry of which cluster is connected here, and carries requests from the
//! control plane's internal HTTPS calls to the right agent.
//!
//! The relay is a transport, not an authority: a tunnel's identity comes from
//! the agent's verified certificate only, and (from the grant issue on) each
//! request must carry a grant the control plane signed.
//!
//! # Layout
//! - [`config`]: the validated configuration.
//! - [`cli`]: command-line and file configuration, `dev-certs`, `main`.
//! - `listener`: QUIC accept loop, handshake limits, identity from certificates.
//! - `tunnel`: one tunnel's control stream (Hello, heartbeats, GoAway).
//! - `registry`: cluster → live tunnels, round-robin picking.
//! - `internal`: the HTTPS listener for the control plane.
//! - `forward`: one request carried to an agent and its response back.
//! - [`metrics`]: Prometheus metrics.
//! - `admin`: `/healthz`, `/readyz`, `/metrics`, `/v1/tunnels`.
//! - `spool`, `events`: audit and usage events, on disk until the control
//!   plane acknowledges them.
//! - `dead_letter`: events the control plane refused, kept for an operator.
//! - `record`: the checksummed record format of both files.
//! - [`presence`]: reporting tunnels to the control plane over gRPC; the
//!   revocation list that comes back (revoked tunnels are dropped and refused).

pub mod cli;
pub mod config;
pub mod metrics;

mod admin;
mod dead_letter;
mod events;
mod forward;
mod internal;
mod listener;
pub mod presence;
mod record;
mod registry;
mod spool;
mod state;
mod tunnel;
mod ws_listener;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kubechat_protocol::{ErrorCode, ErrorCodeExt};
use kubechat_transport::quic::{self, QuicSettings};
use kubechat_transport::tls::{self, TlsError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;
pub use forward::{GROUP_HEADER, REQUEST_ID_HEADER, USER_HEADER};
pub use metrics::RelayMetrics;

use state::RelayState;

/// Why the relay could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Certificates or keys are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The event spool could not be opened.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A relay whose listeners are bound but not yet serving.
pub struct Relay {
    state: Arc<RelayState>,
    endpoint: quinn::Endpoint,
    internal: TcpListener,
    ws: Option<TcpListener>,
    admin: Option<TcpListener>,
}

/// A read-only view of a running relay, for tests and tools.
#[derive(Clone)]
pub struct RelayHandle {
    state: Arc<RelayState>,
}

impl RelayHandle {
    /// The relay's metrics.
    pub fn metrics(&self) -> &RelayMetrics {
        &self.state.metrics
    }

    /// Live tunnels as `(tenant, cluster)` pairs.
    pub fn tunnels(&self) -> Vec<(String, String)> {
        self.state.registry.all().iter().map(|t| (t.identity.tenant.clone(), t.identity.cluster.clone())).collect()
    }

    /// The transport (`quic`, `websocket`) of each live tunnel.
    pub fn tunnel_transports(&self) -> Vec<String> {
        self.state.registry.all().iter().map(|t| t.conn.kind().as_str().to_string()).collect()
    }

    /// Number of live tunnels.
    pub fn tunnel_count(&self) -> usize {
        self.state.registry.len()
    }

    /// Events in the spool awaiting the control plane's acknowledgement.
    pub fn events_pending(&self) -> usize {
        self.state.spool.as_ref().map_or(0, |s| s.pending())
    }

    /// Events the control plane refused, kept in the dead-letter file.
    pub fn dead_letters(&self) -> u64 {
        self.state.dead_letters.as_ref().map_or(0, |d| d.count())
    }

    /// Bytes of events in the spool (written or queued for writing).
    pub fn spool_bytes(&self) -> u64 {
        self.state.spool.as_ref().map_or(0, |s| s.bytes())
    }

    /// Bytes of events written to the spool, without those still queued
    /// (which may shrink as usage events merge on the way to disk).
    pub fn spool_written_bytes(&self) -> u64 {
        self.state.spool.as_ref().map_or(0, |s| s.written_bytes())
    }
}

impl Relay {
    /// Binds every listener of `config`. Nothing is served until [`Relay::run`].
    pub async fn bind(config: Config, shutdown: CancellationToken) -> Result<Self, RelayError> {
        let tunnel_tls = tls::tunnel_server_config(&config.tls, &config.agent_ca)?;
        let settings = QuicSettings {
            idle_timeout: config.idle_timeout,
            keep_alive: config.heartbeat_interval,
            max_incoming_streams: 4,
            ..QuicSettings::default()
        };
        let endpoint = quic::server_endpoint(config.quic_listen, tunnel_tls, &settings)?;
        let internal = TcpListener::bind(config.internal_listen).await.map_err(|source| RelayError::Bind {
            what: "the internal listener",
            addr: config.internal_listen,
            source,
        })?;
        let admin = match config.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| RelayError::Bind {
                what: "the admin listener",
                addr,
                source,
            })?),
            None => None,
        };
        let ws = match config.ws_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| RelayError::Bind {
                what: "the websocket listener",
                addr,
                source,
            })?),
            None => None,
        };
        let (spool, dead_letters) = match &config.spool_dir {
            Some(dir) => (
                Some(spool::Spool::open(dir, config.spool_max_bytes)?),
                Some(Arc::new(dead_letter::DeadLetters::open(dir)?)),
            ),
            None => (None, None),
        };
        if let Some(d) = dead_letters.as_ref().filter(|d| d.count() > 0) {
            tracing::warn!(
                count = d.count(),
                "the dead-letter file holds events the control plane refused; see GET /v1/dead-letters"
            );
        }
        let state = RelayState::new(config, shutdown, spool, dead_letters);
        state.metrics.dead_letter_events.set(state.dead_letters.as_ref().map_or(0, |d| d.count() as i64));
        Ok(Self { state: Arc::new(state), endpoint, internal, ws, admin })
    }

    /// The bound UDP address of the QUIC listener.
    pub fn quic_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or(self.state.config.quic_listen)
    }

    /// The bound address of the internal HTTPS listener.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal.local_addr().unwrap_or(self.state.config.internal_listen)
    }

    /// The bound address of the WebSocket fallback listener, if any.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle for inspecting the relay while it runs.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle { state: self.state.clone() }
    }

    /// Serves until the shutdown token is cancelled, then drains: GOAWAY to
    /// every agent, no new connections, in-flight streams finish within the
    /// grace period, tunnels closed with `GOING_AWAY`.
    pub async fn run(self) -> Result<(), RelayError> {
        let state = self.state;
        let internal_tls = tls::internal_server_config(&state.config.tls, &state.config.internal_ca)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(internal_tls));
        info!(
            relay = %state.config.relay_id,
            region = %state.config.region,
            quic = %self.endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            internal = %self.internal.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "relay serving"
        );
        let admin_token = CancellationToken::new();
        let admin_task = self.admin.map(|l| {
            tokio::spawn(kubechat_transport::admin::serve(
                l,
                Arc::new(admin::RelayAdmin::new(state.clone())),
                admin_token.clone(),
            ))
        });
        let quic_task = tokio::spawn(listener::serve(self.endpoint.clone(), state.clone()));
        if let Some(target) = state.config.presence.clone() {
            let internal = self.internal.local_addr().map(|a| a.to_string()).unwrap_or_default();
            state.tasks.spawn(presence::run(target.clone(), state.clone(), internal));
            state.tasks.spawn(events::publish(target, state.clone()));
        }
        let internal_task = tokio::spawn(internal::serve(self.internal, acceptor, state.clone()));
        if let Some(listener) = self.ws {
            let mut ws_tls = tls::tunnel_server_config(&state.config.tls, &state.config.agent_ca)?;
            ws_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            state.tasks.spawn(ws_listener::serve(listener, ws_tls, state.clone()));
        }

        state.shutdown.cancelled().await;
        let grace = state.config.grace_period;
        info!(grace_secs = grace.as_secs_f64(), "relay draining");
        for t in state.registry.all() {
            t.go_away("relay shutting down", grace);
        }
        let _ = quic_task.await;
        // Give every GOAWAY the chance to leave before anything is closed.
        let written = tokio::time::Instant::now() + Duration::from_secs(2);
        while state.registry.all().iter().any(|t| !t.goaway_written.load(std::sync::atomic::Ordering::Relaxed))
            && tokio::time::Instant::now() < written
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        let _ = tokio::time::timeout_at(deadline, internal_task).await;
        while state.metrics.streams_open.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in state.registry.all() {
            t.conn.close(ErrorCode::GoingAway, "relay shutting down");
        }
        self.endpoint.close(quinn::VarInt::from_u32(ErrorCode::GoingAway.close_code()), b"relay shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        state.tasks.close();
        // The event publisher gets up to two seconds to empty the spool.
        let _ = tokio::time::timeout(Duration::from_secs(3), state.tasks.wait()).await;
        if let Some(spool) = state.spool.clone() {
            let _ = tokio::task::spawn_blocking(move || spool.close()).await;
        }
        admin_token.cancel();
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        info!("relay stopped");
        Ok(())
    }
}

/// Binds and serves `config` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RelayError> {
    Relay::bind(config, shutdown).await?.run().await
}
