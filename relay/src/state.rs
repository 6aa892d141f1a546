//! State shared by the relay's listeners.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kubechat_protocol::grant::GateKey;

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
    /// This relay's gate keys, from the control plane's presence answers:
    /// grants carrying a MAC under their key id's skip the signature check
    /// here.
    pub(crate) grant_gate: std::sync::RwLock<GateKeys>,
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
        let gate = GateKeys {
            configured: config.grant_gate_key.as_deref().and_then(kubechat_protocol::grant::gate_key),
            learnt: Vec::new(),
        };
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

/// The gate keys a relay holds: one from its configuration (for any key id), and
/// those the control plane's presence answers gave, by the id of the signing
/// key each derives from (several while replicas with different signing
/// keys answer, as during a key rotation).
pub(crate) struct GateKeys {
    configured: Option<GateKey>,
    learnt: Vec<(String, GateKey)>,
}

/// Gate keys learnt at most; past it the oldest is forgotten.
const MAX_GATE_KEYS: usize = 4;

impl GateKeys {
    /// The gate key of grants of signing key `key_id`.
    pub(crate) fn for_key(&self, key_id: &str) -> Option<&GateKey> {
        self.learnt.iter().find(|(id, _)| id == key_id).map(|(_, k)| k).or(self.configured.as_ref())
    }

    /// Learns (or replaces, in its place) the gate key of signing key
    /// `key_id`; one of no key id (a control plane from before key ids were
    /// sent) stands for any, like a configured one.
    pub(crate) fn learn(&mut self, key_id: &str, key: GateKey) {
        if key_id.is_empty() {
            self.configured = Some(key);
            return;
        }
        match self.learnt.iter_mut().find(|(id, _)| id == key_id) {
            Some((_, held)) => *held = key,
            None => {
                self.learnt.push((key_id.to_string(), key));
                if self.learnt.len() > MAX_GATE_KEYS {
                    self.learnt.remove(0);
                }
            }
        }
    }

    /// The key ids learnt, sorted, for the presence report (the same list
    /// whichever replica answered last, so the directory sees no change).
    pub(crate) fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.learnt.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> GateKey {
        kubechat_protocol::grant::gate_key(&[b; 32]).expect("32 bytes")
    }

    fn tag(k: Option<&GateKey>) -> Option<Vec<u8>> {
        k.map(|k| ring::hmac::sign(k, b"grant").as_ref().to_vec())
    }

    #[test]
    fn gate_keys_are_kept_by_key_id_with_the_configured_one_for_any_other() {
        let mut g = GateKeys { configured: None, learnt: Vec::new() };
        assert!(g.for_key("k1").is_none());
        g.learn("k1", key(1));
        g.learn("k2", key(2));
        assert_eq!(tag(g.for_key("k1")), tag(Some(&key(1))));
        assert_eq!(tag(g.for_key("k2")), tag(Some(&key(2))));
        assert!(g.for_key("k3").is_none());
        // A key id answered again with another key replaces its key, in
        // its place: answers alternating between replicas change nothing.
        g.learn("k1", key(9));
        assert_eq!(tag(g.for_key("k1")), tag(Some(&key(9))));
        assert_eq!(g.key_ids(), ["k1", "k2"]);
        g.learn("k2", key(2));
        assert_eq!(g.key_ids(), ["k1", "k2"]);
        // At most four; the first learnt goes first.
        for id in ["k5", "k4", "k3"] {
            g.learn(id, key(3));
        }
        assert_eq!(g.key_ids(), ["k2", "k3", "k4", "k5"]);
        assert!(g.for_key("k1").is_none());
        // A configured key stands for any key id not learnt, and is not named.
        let g = GateKeys { configured: Some(key(7)), ..g };
        assert_eq!(tag(g.for_key("k1")), tag(Some(&key(7))));
        assert_eq!(tag(g.for_key("k2")), tag(Some(&key(2))));
        let mut g = g;
        g.learn("", key(8));
        assert_eq!(tag(g.for_key("k1")), tag(Some(&key(8))));
        assert_eq!(g.key_ids(), ["k2", "k3", "k4", "k5"]);
    }
}
