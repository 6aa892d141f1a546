//! The KubeChat agent: runs in a customer's cluster, dials out to its
//! relays over mutual-TLS QUIC, and forwards each tunnelled request to its
//! own API server as the requesting user (impersonation), and to nothing else.
//!
//! Two ways to start: with a certificate, relay CA and relays given by hand
//! ([`Config::new`]), or in enrollment mode ([`Config::enrolling`]): the
//! agent keeps its credentials in a Kubernetes Secret (or a directory),
//! enrolls with a one-time bootstrap token when none is stored, reuses them
//! on restart, and renews its certificate at 2/3 of its life, rotating every
//! tunnel onto the new one.
//!
//! # Layout
//! - [`config`]: the validated configuration.
//! - [`cli`]: command line, configuration file and environment; `main`.
//! - `tunnel`: dialling relays, Hello, heartbeats, reconnects, GOAWAY, and
//!   rotation onto a renewed certificate.
//! - [`backoff`]: exponential backoff with full jitter.
//! - [`credentials`]: the credential bundle (key, certificate, relay CA,
//!   relays, grant keys) and the renewal time.
//! - [`store`]: keeping the bundle in a Secret or a directory.
//! - [`enroll`]: key, CSR and bootstrap token → credentials.
//! - [`proxy`]: the egress proxy (`HTTPS_PROXY`, `NO_PROXY`) for the WebSocket fallback and the control plane.
//! - `renew`: renewal at 2/3 of the certificate's life, with retries.
//! - `control_plane`: the HTTPS client of the control plane.
//! - `forward`: one request to the API server and its response back.
//! - [`metrics`]: Prometheus metrics.
//! - `admin`: `/healthz`, `/readyz` (ready while a tunnel is up), `/metrics`.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod enroll;
pub mod metrics;
pub mod proxy;
pub mod store;

mod admin;
mod control_plane;
mod forward;
mod renew;
mod state;
mod tunnel;
mod ws_dial;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, error, info, warn};

pub use config::{BootstrapToken, Config, Enrollment, RelayEndpoint};
pub use credentials::Credentials;
pub use metrics::AgentMetrics;
pub use store::{CredentialStore, StoreLocation};

use credentials::{CredentialsError, unix_now};
use enroll::EnrollError;
use renew::Renewer;
use state::{ActiveIdentity, AgentState};
use store::StoreError;

/// What went wrong starting the agent, or renewing its certificate.
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
    /// A relay endpoint (stored or configured) is invalid.
    #[error("invalid relay endpoint: {0}")]
    InvalidRelay(String),
    /// Neither a certificate nor enrollment mode is configured.
    #[error(
        "no agent certificate: pass --tls-cert and --tls-key, or --state-secret (or --state-dir) with --control-plane to enroll"
    )]
    NoIdentity,
    /// The credential store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Enrollment or renewal with the control plane failed.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    /// The credentials cannot be used.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// Enrollment is needed and no bootstrap token was given.
    #[error(
        "{store} holds no usable credentials and no bootstrap token was given: pass --bootstrap-token or --bootstrap-token-file (KUBECHAT_BOOTSTRAP_TOKEN) with a fresh token from the control plane"
    )]
    NeedsBootstrapToken {
        /// The store.
        store: String,
    },
    /// Enrollment is needed and no control plane URL is known.
    #[error("{store} holds no usable credentials and no control plane is known: pass --control-plane")]
    NoControlPlane {
        /// The store.
        store: String,
    },
    /// Enrolled, but the credentials could not be stored.
    #[error(
        "enrolled as {identity}, but cannot keep the credentials: {source}; the bootstrap token is spent: fix the store and issue a new token"
    )]
    SaveAfterEnroll {
        /// The enrolled identity.
        identity: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
    /// Renewal was asked of an agent that does not renew.
    #[error(
        "this agent does not renew its certificate: renewal needs enrollment mode (--state-secret or --state-dir) with a known control plane, and no --tls-cert"
    )]
    NotRenewable,
    /// The agent was shut down before it could start.
    #[error("shut down before enrollment finished")]
    Interrupted,
}

/// An agent ready to run.
pub struct Agent {
    state: Arc<AgentState>,
    admin: Option<TcpListener>,
}

/// A view of a running agent, and a way to renew its certificate now.
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

    /// The serial number of the certificate the agent presents now (new
    /// tunnels use it), lower-case hex; empty if it does not parse.
    pub fn certificate_serial(&self) -> String {
        self.state.active().serial.clone()
    }

    /// Successful certificate renewals since start.
    pub fn renewals(&self) -> u64 {
        self.state.metrics.renewals.get("success")
    }

    /// Renews the certificate now, whatever its age: new key and CSR,
    /// `POST /v1/renew` with the current certificate, saves the answer to
    /// the store and switches to it. Returns once the new certificate is in
    /// use for new tunnels; existing tunnels are rotated in the background
    /// (watch [`AgentHandle::certificate_serial`] and
    /// `metrics().tunnel_rotations`).
    pub async fn renew_now(&self) -> Result<(), AgentError> {
        let renewer = self.state.renewer.as_ref().ok_or(AgentError::NotRenewable)?;
        renewer.renew(&self.state).await
    }
}

/// The identity tunnels use for `c`, with the configuration's overrides
/// (relay CA, grant keys) applied.
pub(crate) fn active_identity(config: &Config, c: &Credentials) -> Result<ActiveIdentity, AgentError> {
    let tls = match &config.tls {
        Some(id) => id.clone(),
        None => c.tls_identity()?,
    };
    let relay_ca = if config.relay_ca.is_empty() { c.relay_ca()? } else { config.relay_ca.clone() };
    let grants = if config.grants.is_empty() {
        let keys = c
            .grant_keys
            .iter()
            .map(|k| kubechat_protocol::grant::parse_key_spec(k.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CredentialsError::Invalid(format!("grant key: {e}")))?;
        kubechat_protocol::grant::GrantVerifier::new(keys)
    } else {
        config.grants.clone()
    };
    // The cluster grant key lets the agent pass grants by their MAC; an
    // unusable one only means every grant's signature is checked.
    let grants = match &c.cluster_grant_key {
        Some(spec) => grants.clone().with_cluster_key(spec).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the stored cluster grant key is unusable: grants are checked by signature until the next renewal");
            grants
        }),
        None => grants,
    };
    Ok(ActiveIdentity::new(tls, relay_ca, grants))
}

/// Replicas of one Deployment share the state Secret and the one-time
/// bootstrap token: all but the first are refused. They then wait for the
/// first one's credentials to appear in the store and use those. `None`
/// when nothing usable appeared within `wait` (the token was wrong or
/// spent long ago).
async fn sibling_credentials(
    store: &CredentialStore,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Credentials>, AgentError> {
    info!(store = %store, wait_secs = wait.as_secs(), "the bootstrap token was refused; waiting for another replica's credentials");
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Ok(Some(c)) = store.load().await
            && c.check(unix_now()).is_ok()
        {
            info!(store = %store, identity = %c.identity, "another replica enrolled; using its credentials");
            return Ok(Some(c));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = shutdown.cancelled() => return Err(AgentError::Interrupted),
        }
    }
}

/// The stored credentials if they are usable now; else enrolls with the
/// bootstrap token (after checking the store can be written) and stores
/// the result. Transient enrollment failures are retried until `shutdown`.
async fn load_or_enroll(
    store: &CredentialStore,
    e: &Enrollment,
    proxy: &proxy::EgressProxy,
    sibling_wait: Duration,
    shutdown: &CancellationToken,
) -> Result<Credentials, AgentError> {
    let mut stored_cp = (None, None);
    match store.load().await {
        Ok(Some(c)) => match c.check(unix_now()) {
            Ok(v) => {
                info!(store = %store, identity = %c.identity, not_after = v.not_after, "using the stored credentials");
                return Ok(c);
            }
            Err(why) => {
                warn!(store = %store, reason = %why, "the stored credentials are unusable; enrolling again");
                stored_cp = (c.control_plane_url, c.control_plane_ca);
            }
        },
        Ok(None) => info!(store = %store, "no stored credentials; enrolling"),
        Err(err @ StoreError::Unusable { .. }) => warn!(error = %err, "enrolling again"),
        Err(err) => return Err(err.into()),
    }
    let token =
        e.bootstrap_token.as_ref().ok_or_else(|| AgentError::NeedsBootstrapToken { store: store.to_string() })?;
    let url = e
        .control_plane_url
        .clone()
        .or(stored_cp.0)
        .ok_or_else(|| AgentError::NoControlPlane { store: store.to_string() })?;
    let ca = e.control_plane_ca.clone().or(stored_cp.1);
    // Before the one-time token is spent.
    store.prepare().await?;
    let mut backoff = backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let creds = loop {
        let attempt = tokio::select! {
            r = enroll::request_credentials(&url, token.expose(), ca.as_deref(), proxy) => r,
            () = shutdown.cancelled() => return Err(AgentError::Interrupted),
        };
        match attempt {
            Ok(c) => break c,
            Err(err) if err.is_transient() => {
                let delay = backoff.next_delay(rand::rng().random::<f64>()).max(Duration::from_millis(200));
                warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "enrollment failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Err(AgentError::Interrupted),
                }
            }
            Err(err) => {
                if matches!(err, EnrollError::Refused { status: 401, .. })
                    && let Some(c) = sibling_credentials(store, sibling_wait, shutdown).await?
                {
                    return Ok(c);
                }
                return Err(err.into());
            }
        }
    };
    if let Err(source) = store.save(&creds).await {
        error!(identity = %creds.identity, store = %store, error = %source, "enrolled, but cannot store the credentials");
        return Err(AgentError::SaveAfterEnroll { identity: creds.identity, source: Box::new(source) });
    }
    info!(identity = %creds.identity, store = %store, "enrolled; credentials stored");
    Ok(creds)
}

impl Agent {
    /// Builds the kube client and binds the admin listener. In enrollment
    /// mode ([`Config::enrolling`]) it first loads the stored credentials,
    /// or enrolls with the bootstrap token and stores them (retrying while
    /// the control plane is unreachable, until `shutdown`).
    pub async fn new(mut config: Config, shutdown: CancellationToken) -> Result<Self, AgentError> {
        let mut kube_config = config.kube.clone();
        kube_config.default_retry = false;
        // Watches, logs -f and exec sessions last as long as the caller wants.
        kube_config.read_timeout = None;
        if kube_config.proxy_url.take().is_some() {
            warn!("ignoring the kubeconfig's proxy-url: the agent dials only its API server and relays");
        }
        let client = kube::Client::try_from(kube_config)?;
        let (active, renewer) = match config.enrollment.clone() {
            Some(enrollment) => {
                let store = CredentialStore::open(&enrollment.store, &client);
                let creds =
                    load_or_enroll(&store, &enrollment, &config.egress_proxy(), config.sibling_wait, &shutdown).await?;
                if config.relays.is_empty() {
                    config.relays = creds
                        .relays
                        .iter()
                        .map(|r| RelayEndpoint::parse(r.trim()))
                        .collect::<Result<_, _>>()
                        .map_err(AgentError::InvalidRelay)?;
                }
                let active = active_identity(&config, &creds)?;
                let control_plane = enrollment.control_plane_url.clone().or(creds.control_plane_url.clone());
                let renewer = match control_plane {
                    _ if config.tls.is_some() => {
                        warn!("--tls-cert overrides the stored certificate: it will not be renewed");
                        None
                    }
                    None => {
                        warn!("no control plane is known (--control-plane): the certificate will not be renewed");
                        None
                    }
                    Some(url) => {
                        let ca = enrollment.control_plane_ca.clone().or(creds.control_plane_ca.clone());
                        Some(Renewer::new(store, url, ca, config.egress_proxy(), creds))
                    }
                };
                (active, renewer)
            }
            None => {
                let tls = config.tls.clone().ok_or(AgentError::NoIdentity)?;
                (ActiveIdentity::new(tls, config.relay_ca.clone(), config.grants.clone()), None)
            }
        };
        if config.relay_ws_port.is_some() {
            let port = config.relay_ws_port;
            config.relays =
                config.relays.into_iter().map(|r| if r.ws_port.is_none() { r.with_ws_port(port) } else { r }).collect();
        }
        if config.relays.is_empty() {
            return Err(AgentError::NoRelays);
        }
        if active.cluster.is_none() {
            warn!("the agent certificate carries no kubechat identity; relays will refuse it");
        }
        let admin = match config.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| AgentError::Bind { addr, source })?),
            None => None,
        };
        let state = AgentState::new(config, client, active, renewer, shutdown);
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

    /// Keeps a tunnel to every relay (and, in enrollment mode, the
    /// certificate renewed) until shutdown; then lets in-flight streams
    /// finish within the grace period.
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
        let renewal = state.renewer.is_some().then(|| tokio::spawn(renew::schedule(state.clone()).in_current_span()));
        let relays = TaskTracker::new();
        let all = state.config.relays.clone();
        if all.len() <= state.config.relay_connections {
            for relay in all {
                relays.spawn(tunnel::maintain(relay, state.clone()));
            }
        } else {
            // More relays than connections wanted: each slot holds a
            // distinct relay and moves to another when it fails.
            let claimed = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
            for slot in 0..state.config.relay_connections {
                relays.spawn(tunnel::maintain_slot(slot, all.clone(), claimed.clone(), state.clone()));
            }
        }
        relays.close();
        relays.wait().await;
        if let Some(r) = renewal {
            // It stops at shutdown, as the tunnels did.
            let _ = r.await;
        }
        state.tasks.close();
        let _ = tokio::time::timeout(state.config.grace_period, state.tasks.wait()).await;
        admin_token.cancel();
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        info!("agent stopped");
    }
}

/// Builds and runs an agent until `shutdown` is cancelled (in enrollment
/// mode, loading or enrolling first).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    match Agent::new(config, shutdown).await {
        Ok(agent) => {
            agent.run().await;
            Ok(())
        }
        Err(AgentError::Interrupted) => Ok(()),
        Err(e) => Err(e),
    }
}
