//! The KubeChat agent: runs in a customer's cluster, dials out to its
//! relays over mutual-TLS QUIC, and forwards each tunnelled request to its
//! own API server as the requesting user (impersonation), and to nothing else.
//!
//! # Layout
//! - [`config`]: the validated configuration.
//! - [`cli`]: command line, configuration file and environment; `main`.
//! - `tunnel`: dialling relays, Hello, heartbeats, reconnects, GOAWAY.
//! - [`backoff`]: exponential backoff with full jitter.
//! - [`enroll`]: key, CSR and bootstrap token → certificate and relay settings.
//! - `forward`: one request to the API server and its response back.
//! - [`metrics`]: Prometheus metrics.
//! - `admin`: `/healthz`, `/readyz` (ready while a tunnel is up), `/metrics`.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod enroll;
pub mod metrics;

mod admin;
mod forward;
mod state;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, RelayEndpoint};
pub use metrics::AgentMetrics;

use state::AgentState;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The kube client could not be built from the configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The admin listener could not be bound.
    #[error("cannot listen for the admin endpoints on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No relay is configured.
    #[error("no relay configured; pass --relay host:port")]
    NoRelays,
}

/// An agent ready to run.
pub struct Agent {
    state: Arc<AgentState>,
    admin: Option<TcpListener>,
}

/// A read-only view of a running agent.
#[derive(Clone)]
pub struct AgentHandle {
    state: Arc<AgentState>,
}

impl AgentHandle {
    /// The agent's metrics.
    pub fn metrics(&self) -> &AgentMetrics {
        &self.state.metrics
    }

    /// Tunnels up now.
    pub fn tunnels_connected(&self) -> i64 {
        self.state.metrics.tunnels_connected.get()
    }
}

impl Agent {
    /// Builds the kube client and binds the admin listener.
    pub async fn new(config: Config, shutdown: CancellationToken) -> Result<Self, AgentError> {
        if config.relays.is_empty() {
            return Err(AgentError::NoRelays);
        }
        let mut kube_config = config.kube.clone();
        kube_config.default_retry = false;
        // Watches, logs -f and exec sessions last as long as the caller wants.
        kube_config.read_timeout = None;
        if kube_config.proxy_url.take().is_some() {
            warn!("ignoring the kubeconfig's proxy-url: the agent dials only its API server and relays");
        }
        let client = kube::Client::try_from(kube_config)?;
        let admin = match config.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| AgentError::Bind { addr, source })?),
            None => None,
        };
        let identity = config.tls.chain.first().and_then(|leaf| kubechat_transport::tls::cluster_identity(leaf).ok());
        if identity.is_none() {
            warn!("the agent certificate carries no kubechat identity; relays will refuse it");
        }
        let state = AgentState {
            config,
            client,
            metrics: AgentMetrics::default(),
            identity,
            shutdown,
            tasks: TaskTracker::new(),
        };
        Ok(Self { state: Arc::new(state), admin })
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle for inspecting the agent while it runs.
    pub fn handle(&self) -> AgentHandle {
        AgentHandle { state: self.state.clone() }
    }

    /// Keeps a tunnel to every relay until shutdown; then lets in-flight
    /// streams finish within the grace period.
    pub async fn run(self) {
        let state = self.state;
        info!(relays = state.config.relays.len(), api_server = %state.config.kube.cluster_url, "agent starting");
        let admin_token = CancellationToken::new();
        let admin_task = self.admin.map(|l| {
            tokio::spawn(kubechat_transport::admin::serve(
                l,
                Arc::new(admin::AgentAdmin::new(state.clone())),
                admin_token.clone(),
            ))
        });
        let relays = TaskTracker::new();
        for relay in state.config.relays.clone() {
            relays.spawn(tunnel::maintain(relay, state.clone()));
        }
        relays.close();
        relays.wait().await;
        state.tasks.close();
        let _ = tokio::time::timeout(state.config.grace_period, state.tasks.wait()).await;
        admin_token.cancel();
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        info!("agent stopped");
    }
}

/// Builds and runs an agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::new(config, shutdown).await?.run().await;
    Ok(())
}
