//! State shared by the relay's listeners.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::RelayMetrics;
use crate::registry::Registry;

/// Shared by every task of one relay.
pub(crate) struct RelayState {
    pub(crate) config: Config,
    pub(crate) registry: Registry,
    pub(crate) metrics: RelayMetrics,
    /// Cancelled when the relay starts draining.
    pub(crate) shutdown: CancellationToken,
    /// Every spawned task (tunnels, requests, upgrades).
    pub(crate) tasks: TaskTracker,
    /// Clusters and certificates the control plane revoked.
    pub(crate) revocations: std::sync::RwLock<crate::presence::Revocations>,
    /// This relay's gate key, from the control plane's latest presence
    /// answer: grants carrying its MAC skip the signature check here.
    pub(crate) grant_gate: std::sync::RwLock<Option<kubechat_protocol::grant::GateKey>>,
    /// Notified when a tunnel comes up, goes down or starts draining.
    pub(crate) presence_changed: tokio::sync::Notify,
    /// The event spool, when events are recorded.
    pub(crate) spool: Option<std::sync::Arc<crate::spool::Spool>>,
    /// Events the control plane refused, kept beside the spool.
    pub(crate) dead_letters: Option<std::sync::Arc<crate::dead_letter::DeadLetters>>,
    next_tunnel: AtomicU64,
}

impl RelayState {
    pub(crate) fn new(
        config: Config,
        shutdown: CancellationToken,
        spool: Option<std::sync::Arc<crate::spool::Spool>>,
        dead_letters: Option<std::sync::Arc<crate::dead_letter::DeadLetters>>,
    ) -> Self {
        let gate = config.grant_gate_key.as_deref().and_then(kubechat_protocol::grant::gate_key);
        Self {
            config,
            registry: Registry::default(),
            metrics: RelayMetrics::default(),
            shutdown,
            tasks: TaskTracker::new(),
            revocations: std::sync::RwLock::new(crate::presence::Revocations::default()),
            grant_gate: std::sync::RwLock::new(gate),
            presence_changed: tokio::sync::Notify::new(),
            spool,
            dead_letters,
            next_tunnel: AtomicU64::new(1),
        }
    }

    pub(crate) fn next_tunnel_id(&self) -> u64 {
        self.next_tunnel.fetch_add(1, Ordering::Relaxed)
    }
}
