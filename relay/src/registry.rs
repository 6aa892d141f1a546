//! Which clusters have live tunnels on this relay.
//!
//! Several tunnels per cluster are allowed (an agent's replicas, or a
//! replacement dialled during a drain); requests are spread round-robin over
//! the tunnels that are not draining and have a free stream slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use dashmap::DashMap;
use tokio::sync::OwnedSemaphorePermit;

use crate::tunnel::Tunnel;

/// Why no tunnel could be picked for a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PickError {
    /// The cluster has no live tunnel; when its last one went away, if ever.
    NoTunnel { last_seen: Option<SystemTime> },
    /// Every tunnel of the cluster is at its stream limit.
    Busy { limit: usize },
    /// The grant carries no signature and no live tunnel of the cluster
    /// holds the cluster grant key of its key id (an agent that does not
    /// came up since the control plane last read this relay's tunnels).
    NoKeyHolder { key_id: String },
}

#[derive(Default)]
struct ClusterEntry {
    tunnels: Vec<Arc<Tunnel>>,
    last_seen: Option<SystemTime>,
    /// Tunnels this cluster has opened on this relay since it started.
    connects: u64,
}

/// The registry of cluster id → live tunnels.
#[derive(Default)]
pub(crate) struct Registry {
    clusters: DashMap<String, ClusterEntry>,
    next: AtomicUsize,
}

impl Registry {
    /// Adds a tunnel. Refused (returns `false`) when the cluster id is
    /// already held by tunnels of another tenant: cluster ids are unique, so
    /// this can only be a mis-issued certificate.
    pub(crate) fn insert(&self, tunnel: Arc<Tunnel>) -> bool {
        let mut entry = self.clusters.entry(tunnel.identity.cluster.clone()).or_default();
        if entry.tunnels.iter().any(|t| t.identity.tenant != tunnel.identity.tenant) {
            return false;
        }
        entry.tunnels.push(tunnel);
        entry.connects += 1;
        true
    }

    /// How often `cluster` reconnected to this relay since it started.
    pub(crate) fn reconnects(&self, cluster: &str) -> u64 {
        self.clusters.get(cluster).map_or(0, |e| e.connects.saturating_sub(1))
    }

    /// Removes a tunnel and remembers when its cluster was last seen.
    pub(crate) fn remove(&self, tunnel: &Tunnel) {
        if let Some(mut entry) = self.clusters.get_mut(&tunnel.identity.cluster) {
            entry.tunnels.retain(|t| t.id != tunnel.id);
            entry.last_seen = Some(SystemTime::now());
        }
    }

    /// Picks a tunnel for `cluster` and reserves a stream slot on it; with
    /// `key_holder`, only among tunnels whose agent holds the cluster grant
    /// key of that key id (for a grant without a signature).
    pub(crate) fn pick(
        &self,
        cluster: &str,
        key_holder: Option<&str>,
    ) -> Result<(Arc<Tunnel>, OwnedSemaphorePermit), PickError> {
        let Some(entry) = self.clusters.get(cluster) else {
            return Err(PickError::NoTunnel { last_seen: None });
        };
        let mut live: Vec<&Arc<Tunnel>> = entry.tunnels.iter().filter(|t| !t.is_draining()).collect();
        if live.is_empty() {
            return Err(PickError::NoTunnel { last_seen: entry.last_seen });
        }
        if let Some(id) = key_holder {
            live.retain(|t| t.cluster_grant_key_id == id);
            if live.is_empty() {
                return Err(PickError::NoKeyHolder { key_id: id.to_string() });
            }
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..live.len() {
            let t = live[(start + i) % live.len()];
            if let Ok(permit) = t.streams.clone().try_acquire_owned() {
                return Ok((t.clone(), permit));
            }
        }
        Err(PickError::Busy { limit: live[0].max_streams })
    }

    /// Every live tunnel, for draining and for `/v1/tunnels`.
    pub(crate) fn all(&self) -> Vec<Arc<Tunnel>> {
        self.clusters.iter().flat_map(|e| e.tunnels.clone()).collect()
    }

    /// Number of live tunnels.
    pub(crate) fn len(&self) -> usize {
        self.clusters.iter().map(|e| e.tunnels.len()).sum()
    }
}
