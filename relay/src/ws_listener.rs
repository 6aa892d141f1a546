//! The WebSocket fallback listener: agents that cannot use QUIC (UDP
//! blocked, HTTPS proxy only) connect here with TLS over TCP, the same agent
//! certificate (identity and revocation checked exactly as for QUIC), and a
//! WebSocket on `/v1/tunnel` carrying yamux-multiplexed streams.

use std::sync::Arc;
use std::time::Duration;

use kubechat_transport::tls;
use kubechat_transport::ws::{TUNNEL_PATH, WsConnection, WsIo};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tracing::{debug, warn};

use crate::state::RelayState;
use crate::tunnel;

/// Accepts WebSocket tunnels until shutdown (then refuses new ones).
pub(crate) async fn serve(listener: TcpListener, tls: rustls::ServerConfig, state: Arc<RelayState>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = state.shutdown.cancelled() => break,
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, state2) = (acceptor.clone(), state.clone());
        state.tasks.spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = tls::handshake_failure_reason(None, &e.to_string());
                    warn!(%peer, reason, error = %e, "websocket tunnel handshake refused");
                    state2.metrics.handshake_failures.inc(reason);
                    return;
                }
                Err(_) => {
                    state2.metrics.handshake_failures.inc("timeout");
                    return;
                }
            };
            let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
            let Some(leaf) = leaf else {
                state2.metrics.handshake_failures.inc("certificate_required");
                return;
            };
            let identity = match tls::cluster_identity(&leaf) {
                Ok(id) => id,
                Err(e) => {
                    warn!(%peer, error = %e, "websocket tunnel refused: no valid kubechat identity");
                    state2.metrics.handshake_failures.inc("identity_invalid");
                    return;
                }
            };
            let serial = tls::certificate_serial(&leaf).unwrap_or_default();
            if let Some(why) = state2.revoked(&identity.cluster, &serial) {
                warn!(%peer, cluster = %identity.cluster, why, "websocket tunnel refused: credentials revoked");
                state2.metrics.handshake_failures.inc("revoked");
                return;
            }
            // The callback's type is tungstenite's; its error is large by design.
            #[allow(clippy::result_large_err)]
            let check_path = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                if req.uri().path() == TUNNEL_PATH {
                    Ok(resp)
                } else {
                    let mut e = ErrorResponse::new(Some(format!("the tunnel is at {TUNNEL_PATH}")));
                    *e.status_mut() = http::StatusCode::NOT_FOUND;
                    Err(e)
                }
            };
            let config = Some(kubechat_transport::ws::websocket_config());
            let ws = match tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, config).await {
                Ok(ws) => ws,
                Err(e) => {
                    debug!(%peer, error = %e, "websocket upgrade failed");
                    state2.metrics.handshake_failures.inc("websocket");
                    return;
                }
            };
            let conn = WsConnection::new(WsIo::new(ws), false, peer);
            tunnel::serve(Arc::new(conn), identity, serial, state2).await;
        });
    }
}
