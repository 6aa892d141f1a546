//! State shared by the agent's tasks.

use std::sync::Arc;

use kubechat_protocol::grant::GrantVerifier;
use kubechat_transport::tls::{self, Identity};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::credentials::CertValidity;
use crate::metrics::AgentMetrics;
use crate::renew::Renewer;

/// What tunnels present and trust now; replaced as a whole on renewal.
pub(crate) struct ActiveIdentity {
    /// The agent's certificate and key.
    pub(crate) tls: Identity,
    /// The relay CA to pin.
    pub(crate) relay_ca: Vec<CertificateDer<'static>>,
    /// Keys whose grants requests must carry (none: grants are not checked).
    pub(crate) grants: GrantVerifier,
    /// This agent's tenant and cluster, from its own certificate.
    pub(crate) cluster: Option<kubechat_protocol::ClusterIdentity>,
    /// The certificate's serial, lower-case hex.
    pub(crate) serial: String,
    /// The certificate's validity, if it parses.
    pub(crate) validity: Option<CertValidity>,
}

impl ActiveIdentity {
    pub(crate) fn new(tls: Identity, relay_ca: Vec<CertificateDer<'static>>, grants: GrantVerifier) -> Self {
        let leaf = tls.chain.first();
        Self {
            cluster: leaf.and_then(|l| tls::cluster_identity(l).ok()),
            serial: leaf.and_then(tls::certificate_serial).unwrap_or_default(),
            validity: leaf.and_then(|l| CertValidity::of(l).ok()),
            tls,
            relay_ca,
            grants,
        }
    }
}

/// Shared by every task of one agent.
pub(crate) struct AgentState {
    pub(crate) config: Config,
    /// The kube client for the API server (retries off, no read timeout).
    pub(crate) client: kube::Client,
    pub(crate) metrics: AgentMetrics,
    active: watch::Sender<Arc<ActiveIdentity>>,
    /// Renews the certificate (enrollment mode only).
    pub(crate) renewer: Option<Renewer>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// When the last tunnel went down (none up since), for readiness.
    pub(crate) last_tunnel_down: std::sync::Mutex<Option<std::time::Instant>>,
}

impl AgentState {
    pub(crate) fn new(
        config: Config,
        client: kube::Client,
        active: ActiveIdentity,
        renewer: Option<Renewer>,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = AgentMetrics::default();
        metrics.certificate_expiry.set(active.validity.map_or(0, |v| v.not_after));
        Self {
            config,
            client,
            metrics,
            active: watch::Sender::new(Arc::new(active)),
            renewer,
            shutdown,
            tasks: TaskTracker::new(),
            last_tunnel_down: std::sync::Mutex::new(None),
        }
    }

    /// What tunnels present and trust now.
    pub(crate) fn active(&self) -> Arc<ActiveIdentity> {
        self.active.borrow().clone()
    }

    /// Follows renewals.
    pub(crate) fn watch_active(&self) -> watch::Receiver<Arc<ActiveIdentity>> {
        self.active.subscribe()
    }

    /// Switches to a renewed identity: new tunnels use it at once, and
    /// every tunnel is rotated onto it.
    pub(crate) fn install(&self, active: ActiveIdentity) {
        self.metrics.certificate_expiry.set(active.validity.map_or(0, |v| v.not_after));
        self.active.send_replace(Arc::new(active));
    }
}
