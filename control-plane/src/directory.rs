//! The tunnel directory: which relay holds which cluster's tunnels, from the
//! relays' presence reports, with leases so a relay that stops reporting
//! (crashed, partitioned) drops out on its own; and the revocation list that
//! goes back to relays in every answer.

use kubechat_protocol::presence::PresenceReport;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::StoreError;
use crate::store::{Db, Scope, now};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A relay that holds a live tunnel of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The relay's id (from its certificate).
    pub relay_id: String,
    /// Its region.
    pub region: String,
    /// `host:port` of its internal listener.
    pub internal_address: String,
    /// The signing key id whose grants may go to this relay, for this
    /// cluster, without their Ed25519 signature: the relay holds that key
    /// id's gate key and every tunnel of the cluster there names it as its
    /// cluster grant key's. `None`: sign.
    pub mac_key_id: Option<String>,
}

impl Route {
    /// Whether grants of signing key `key_id` may go by this route without
    /// a signature (see [`Route::mac_key_id`]).
    pub fn macs_suffice(&self, key_id: &str) -> bool {
        self.mac_key_id.as_deref() == Some(key_id)
    }
}

/// Whether a grant of signing key `key_id` that may go by any of `routes`
/// may go without its signature: only if there is a route and every one
/// passes it by MACs (the request may end up on any of them).
pub fn macs_suffice_on_all(routes: &[Route], key_id: &str) -> bool {
    !routes.is_empty() && routes.iter().all(|r| r.macs_suffice(key_id))
}

/// The gate key ids of a report as the `relays` table keeps them: sorted,
/// space-separated, an id with whitespace left out (it names no key).
fn gate_key_ids(r: &PresenceReport) -> String {
    let mut ids: Vec<&str> = r
        .gate_key_ids
        .iter()
        .map(String::as_str)
        .filter(|id| !id.is_empty() && !id.contains(char::is_whitespace))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.join(" ")
}

/// One live tunnel, as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelView {
    /// The relay holding it.
    pub relay_id: String,
    /// The relay's region.
    pub region: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Cluster id.
    pub cluster_id: String,
    /// The agent instance (pod name).
    pub agent_id: String,
    /// The agent's version.
    pub agent_version: String,
    /// `quic` or `websocket`.
    pub transport: String,
    /// The agent's address as the relay sees it.
    pub remote_addr: String,
    /// When the tunnel came up (Unix ms).
    pub connected_at_ms: i64,
    /// Serial of the agent certificate in use.
    pub certificate_serial: String,
    /// Until when the relay's last report counts (Unix ms).
    pub lease_expires_at_ms: i64,
    /// Round-trip time the relay measured, microseconds.
    pub rtt_us: i64,
    /// Request streams open.
    pub open_streams: i64,
    /// Bytes carried to the agent.
    pub bytes_to_agent: i64,
    /// Bytes carried from the agent.
    pub bytes_from_agent: i64,
    /// The agent's last heartbeat (Unix ms).
    pub last_heartbeat_ms: i64,
    /// Times the cluster reconnected to that relay since it started.
    pub reconnects: i64,
}

/// What applying a relay's report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: a delta the directory cannot place (unknown relay or epoch,
    /// or not newer than the last report); the relay must send a full
    /// snapshot.
    NeedFull,
    /// Stored.
    Stored {
        /// The relay's lease had run out before this report renewed it
        /// (lookups meanwhile saw none of its tunnels), so cached routes
        /// should be read again.
        lapsed: bool,
        /// The relay's gate key ids changed, so which of its routes may
        /// carry unsigned grants did too: cached routes should be read again.
        rekeyed: bool,
    },
}

/// Applies a relay's report.
pub async fn apply_report(db: &Db, r: &PresenceReport) -> Result<Applied, StoreError> {
    let mut tx = db.begin(&Scope::Platform).await?;
    let mut lapsed = false;
    let gate_keys = gate_key_ids(r);
    let mut rekeyed = false;
    let known = sqlx::query("SELECT epoch, seq, lease_expires_at_ms, gate_key_ids FROM relays WHERE relay_id = $1")
        .bind(r.relay_id.clone())
        .fetch_optional(&mut *tx)
        .await?;
    let follows = match &known {
        Some(row) => {
            let epoch: String = row.try_get("epoch")?;
            let lease: i64 = row.try_get("lease_expires_at_ms")?;
            lapsed = lease < now_ms();
            rekeyed = row.try_get::<String, _>("gate_key_ids")? != gate_keys;
            let seq: i64 = row.try_get("seq")?;
            epoch == r.epoch && i64::try_from(r.seq).unwrap_or(i64::MAX) > seq
        }
        None => false,
    };
    if !r.full && !follows {
        return Ok(Applied::NeedFull);
    }
    if r.full {
        sqlx::query("DELETE FROM relay_tunnels WHERE relay_id = $1").bind(r.relay_id.clone()).execute(&mut *tx).await?;
    }
    let lease = now_ms() + i64::from(r.lease_ms);
    sqlx::query(
        "INSERT INTO relays (relay_id, region, internal_address, epoch, seq, lease_expires_at_ms, updated_at, gate_key_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (relay_id) DO UPDATE SET region = excluded.region, internal_address = excluded.internal_address, epoch = excluded.epoch, seq = excluded.seq, lease_expires_at_ms = excluded.lease_expires_at_ms, updated_at = excluded.updated_at, gate_key_ids = excluded.gate_key_ids",
    )
    .bind(r.relay_id.clone())
    .bind(r.region.clone())
    .bind(r.internal_address.clone())
    .bind(r.epoch.clone())
    .bind(i64::try_from(r.seq).unwrap_or(i64::MAX))
    .bind(lease)
    .bind(now())
    .bind(gate_keys)
    .execute(&mut *tx)
    .await?;
    for t in &r.down {
        sqlx::query("DELETE FROM relay_tunnels WHERE relay_id = $1 AND tunnel_id = $2")
            .bind(r.relay_id.clone())
            .bind(i64::try_from(t.tunnel_id).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
    }
    for t in &r.up {
        sqlx::query(
            "INSERT INTO relay_tunnels (relay_id, tunnel_id, tenant_id, cluster_id, agent_id, agent_version, transport, remote_addr, connected_at_ms, certificate_serial, rtt_us, open_streams, bytes_to_agent, bytes_from_agent, last_heartbeat_ms, reconnects, cluster_grant_key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (relay_id, tunnel_id) DO UPDATE SET tenant_id = excluded.tenant_id, cluster_id = excluded.cluster_id, agent_id = excluded.agent_id, agent_version = excluded.agent_version, transport = excluded.transport, remote_addr = excluded.remote_addr, connected_at_ms = excluded.connected_at_ms, certificate_serial = excluded.certificate_serial, rtt_us = excluded.rtt_us, open_streams = excluded.open_streams, bytes_to_agent = excluded.bytes_to_agent, bytes_from_agent = excluded.bytes_from_agent, last_heartbeat_ms = excluded.last_heartbeat_ms, reconnects = excluded.reconnects, cluster_grant_key_id = excluded.cluster_grant_key_id",
        )
        .bind(r.relay_id.clone())
        .bind(i64::try_from(t.tunnel_id).unwrap_or(i64::MAX))
        .bind(t.tenant.clone())
        .bind(t.cluster.clone())
        .bind(t.agent_id.clone())
        .bind(t.agent_version.clone())
        .bind(t.transport.clone())
        .bind(t.remote_addr.clone())
        .bind(t.connected_at_ms)
        .bind(t.certificate_serial.clone())
        .bind(i64::try_from(t.rtt_us).unwrap_or(i64::MAX))
        .bind(i64::from(t.open_streams))
        .bind(i64::try_from(t.bytes_to_agent).unwrap_or(i64::MAX))
        .bind(i64::try_from(t.bytes_from_agent).unwrap_or(i64::MAX))
        .bind(t.last_heartbeat_ms)
        .bind(i64::try_from(t.reconnects).unwrap_or(i64::MAX))
        .bind(t.cluster_grant_key_id.clone())
        .execute(&mut *tx)
        .await?;
    }
    // Relays gone for an hour are forgotten entirely.
    let stale = now_ms() - 3_600_000;
    sqlx::query(
        "DELETE FROM relay_tunnels WHERE relay_id IN (SELECT relay_id FROM relays WHERE lease_expires_at_ms < $1)",
    )
    .bind(stale)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM relays WHERE lease_expires_at_ms < $1").bind(stale).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Applied::Stored { lapsed, rekeyed })
}

/// Relays with a live lease that hold a tunnel of `cluster`.
pub async fn routes(db: &Db, tenant_id: &str, cluster_id: &str) -> Result<Vec<Route>, StoreError> {
    let mut tx = db.read(&Scope::Tenant(tenant_id.to_string())).await?;
    let rows = sqlx::query(
        "SELECT r.relay_id, r.region, r.internal_address, r.gate_key_ids, MIN(t.cluster_grant_key_id) AS key_min, MAX(t.cluster_grant_key_id) AS key_max \
         FROM relay_tunnels t JOIN relays r ON r.relay_id = t.relay_id \
         WHERE t.tenant_id = $1 AND t.cluster_id = $2 AND r.lease_expires_at_ms > $3 \
         GROUP BY r.relay_id, r.region, r.internal_address, r.gate_key_ids ORDER BY r.relay_id",
    )
    .bind(tenant_id.to_string())
    .bind(cluster_id.to_string())
    .bind(now_ms())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (gates, min, max): (String, String, String) =
                (r.try_get("gate_key_ids")?, r.try_get("key_min")?, r.try_get("key_max")?);
            // One key id for every tunnel there, and the relay's gate key of it.
            let every_tunnel = !min.is_empty() && min == max;
            let mac_key_id = (every_tunnel && gates.split(' ').any(|id| id == min)).then_some(min);
            Ok(Route {
                relay_id: r.try_get("relay_id")?,
                region: r.try_get("region")?,
                internal_address: r.try_get("internal_address")?,
                mac_key_id,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Live tunnels, of one tenant (and optionally one cluster) or, with
/// `Scope::Platform`, of everyone.
pub async fn tunnels(db: &Db, scope: &Scope, cluster_id: Option<&str>) -> Result<Vec<TunnelView>, StoreError> {
    let mut tx = db.read(scope).await?;
    // An empty tenant or cluster filter matches every row.
    let sql = "SELECT t.*, r.region, r.lease_expires_at_ms FROM relay_tunnels t JOIN relays r ON r.relay_id = t.relay_id \
               WHERE r.lease_expires_at_ms > $1 AND ($2 = '' OR t.tenant_id = $2) AND ($3 = '' OR t.cluster_id = $3) \
               ORDER BY t.tenant_id, t.cluster_id, t.relay_id, t.tunnel_id";
    let tenant = match scope {
        Scope::Tenant(t) => t.clone(),
        Scope::Platform => String::new(),
    };
    let rows = sqlx::query(sql)
        .bind(now_ms())
        .bind(tenant)
        .bind(cluster_id.unwrap_or_default().to_string())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(TunnelView {
                relay_id: r.try_get("relay_id")?,
                region: r.try_get("region")?,
                tenant_id: r.try_get("tenant_id")?,
                cluster_id: r.try_get("cluster_id")?,
                agent_id: r.try_get("agent_id")?,
                agent_version: r.try_get("agent_version")?,
                transport: r.try_get("transport")?,
                remote_addr: r.try_get("remote_addr")?,
                connected_at_ms: r.try_get("connected_at_ms")?,
                certificate_serial: r.try_get("certificate_serial")?,
                lease_expires_at_ms: r.try_get("lease_expires_at_ms")?,
                rtt_us: r.try_get("rtt_us")?,
                open_streams: r.try_get("open_streams")?,
                bytes_to_agent: r.try_get("bytes_to_agent")?,
                bytes_from_agent: r.try_get("bytes_from_agent")?,
                last_heartbeat_ms: r.try_get("last_heartbeat_ms")?,
                reconnects: r.try_get("reconnects")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// What relays must refuse: revoked clusters and individually revoked
/// (unexpired) agent certificates, with a version that changes whenever
/// either list does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    /// Cluster ids.
    pub clusters: Vec<String>,
    /// Hex certificate serials.
    pub certificates: Vec<String>,
    /// Nonzero digest of both lists.
    pub version: u64,
}

/// The current revocation list.
pub async fn revocations(db: &Db) -> Result<RevocationList, StoreError> {
    let mut tx = db.begin(&Scope::Platform).await?;
    let clusters: Vec<String> = sqlx::query("SELECT cluster_id FROM revoked_clusters ORDER BY cluster_id")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("cluster_id"))
        .collect::<Result<_, _>>()?;
    let certificates: Vec<String> = sqlx::query(
        "SELECT serial FROM agent_certificates WHERE revoked_at IS NOT NULL AND revoked_at <= $1 AND not_after > $1 ORDER BY serial",
    )
    .bind(now())
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.try_get("serial"))
    .collect::<Result<_, _>>()?;
    tx.commit().await?;
    let mut h = Sha256::new();
    for c in &clusters {
        h.update(b"c:");
        h.update(c.as_bytes());
        h.update(b"\n");
    }
    for s in &certificates {
        h.update(b"s:");
        h.update(s.as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    let mut v = [0u8; 8];
    v.copy_from_slice(&digest[..8]);
    Ok(RevocationList { clusters, certificates, version: u64::from_be_bytes(v).max(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(relay: &str, mac_key_id: Option<&str>) -> Route {
        Route {
            relay_id: relay.into(),
            region: "eu".into(),
            internal_address: "127.0.0.1:1".into(),
            mac_key_id: mac_key_id.map(str::to_string),
        }
    }

    #[test]
    fn a_grant_goes_unsigned_only_if_every_route_it_may_take_passes_it_by_macs() {
        assert!(macs_suffice_on_all(&[route("a", Some("k1")), route("b", Some("k1"))], "k1"));
        assert!(!macs_suffice_on_all(&[route("a", Some("k1")), route("b", None)], "k1"));
        assert!(!macs_suffice_on_all(&[route("a", None), route("b", Some("k1"))], "k1"));
        assert!(!macs_suffice_on_all(&[route("a", Some("k1")), route("b", Some("k0"))], "k1"));
        assert!(!macs_suffice_on_all(&[route("a", Some("k0"))], "k1"));
        assert!(!macs_suffice_on_all(&[], "k1"), "no route: nothing to say it may");
    }
}
