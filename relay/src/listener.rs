//! The QUIC tunnel listener: handshakes, identity from the certificate, and
//! a task per tunnel.

use std::sync::Arc;
use std::time::Duration;

use kubechat_protocol::{ClusterIdentity, ErrorCode};
use kubechat_transport::quic::QuicConnection;
use kubechat_transport::tls;
use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::state::RelayState;
use crate::tunnel;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Names why a QUIC handshake failed, for logs and the
/// `handshake_failures_total{reason}` metric.
pub(crate) fn handshake_reason(e: &quinn::ConnectionError) -> &'static str {
    let crypto_alert = |code: u64| (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8);
    match e {
        quinn::ConnectionError::TransportError(te) => {
            tls::handshake_failure_reason(crypto_alert(u64::from(te.code)), &te.reason)
        }
        quinn::ConnectionError::ConnectionClosed(c) => {
            tls::handshake_failure_reason(crypto_alert(u64::from(c.error_code)), &String::from_utf8_lossy(&c.reason))
        }
        quinn::ConnectionError::TimedOut => "timeout",
        quinn::ConnectionError::VersionMismatch => "quic_version",
        _ => "other",
    }
}

/// The identity of an authenticated peer, from its certificate only.
fn peer_identity(conn: &quinn::Connection) -> Result<ClusterIdentity, String> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| "no client certificate".to_string())?;
    let leaf = certs.first().ok_or_else(|| "empty client certificate chain".to_string())?;
    tls::cluster_identity(leaf).map_err(|e| e.to_string())
}

/// The hex serial of the peer's leaf certificate ("" if unavailable).
fn peer_serial(conn: &quinn::Connection) -> String {
    conn.peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().and_then(tls::certificate_serial))
        .unwrap_or_default()
}

/// Accepts tunnels until shutdown.
pub(crate) async fn serve(endpoint: quinn::Endpoint, state: Arc<RelayState>) {
    let handshakes = Arc::new(Semaphore::new(state.config.max_concurrent_handshakes));
    loop {
        let incoming = tokio::select! {
            biased;
            () = state.shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            state.metrics.handshake_failures.inc("overloaded");
            incoming.refuse();
            continue;
        };
        let state2 = state.clone();
        state.tasks.spawn(async move {
            let peer = incoming.remote_address();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, async { incoming.accept()?.await }).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let reason = handshake_reason(&e);
                    warn!(%peer, reason, error = %e, "tunnel handshake refused");
                    state2.metrics.handshake_failures.inc(reason);
                    return;
                }
                Err(_) => {
                    debug!(%peer, "tunnel handshake timed out");
                    state2.metrics.handshake_failures.inc("timeout");
                    return;
                }
            };
            drop(permit);
            let identity = match peer_identity(&conn) {
                Ok(id) => id,
                Err(why) => {
                    warn!(%peer, reason = "identity_invalid", error = %why, "tunnel refused: certificate carries no valid kubechat identity");
                    state2.metrics.handshake_failures.inc("identity_invalid");
                    conn.close(quinn::VarInt::from_u32(ErrorCode::IdentityInvalid as u32), why.as_bytes());
                    return;
                }
            };
            let serial = peer_serial(&conn);
            if let Some(why) = state2.revoked(&identity.cluster, &serial) {
                warn!(%peer, cluster = %identity.cluster, %serial, reason = "revoked", why, "tunnel refused: the credentials were revoked");
                state2.metrics.handshake_failures.inc("revoked");
                conn.close(quinn::VarInt::from_u32(ErrorCode::IdentityInvalid as u32), why.as_bytes());
                return;
            }
            tunnel::serve(Arc::new(QuicConnection::new(conn)), identity, serial, state2).await;
        });
    }
    // While in-flight streams drain, refuse every new connection at once (an
    // agent dialling its replacement learns immediately to go elsewhere,
    // instead of waiting for its connect timeout), until the endpoint closes.
    // (Removing the server config instead would make quinn drop the packets
    // silently.)
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            state.metrics.handshake_failures.inc("draining");
            incoming.refuse();
        }
    });
}
