//! Dialling a relay's WebSocket fallback: TCP (directly, or through an HTTP
//! or HTTPS proxy with CONNECT, see [`crate::proxy`]), TLS with the agent's certificate pinning the
//! relay CA, a WebSocket on `/v1/tunnel`, yamux on top.

use std::sync::Arc;

use kubechat_transport::Connection;
use kubechat_transport::ws::{TUNNEL_PATH, WsConnection, WsIo};
use rustls_pki_types::ServerName;

use crate::config::RelayEndpoint;
use crate::proxy::ProxyError;
use crate::state::{ActiveIdentity, AgentState};
use crate::tunnel::ConnectError;

/// A tunnel connection over the relay's WebSocket fallback.
pub(crate) async fn dial(
    relay: &RelayEndpoint,
    state: &AgentState,
    active: &ActiveIdentity,
) -> Result<Arc<dyn Connection>, ConnectError> {
    let target = relay.ws_address().ok_or_else(|| ConnectError::Setup("no websocket port for this relay".into()))?;
    let dial = async {
        // The relay CA also verifies an https:// proxy unless --proxy-ca is given.
        let mut relay_roots = rustls::RootCertStore::empty();
        for ca in &active.relay_ca {
            relay_roots.add(ca.clone()).map_err(|e| ConnectError::Setup(format!("relay CA: {e}")))?;
        }
        let (pipe, peer) = state.config.egress_proxy().connect(&target, &relay_roots).await.map_err(|e| match e {
            ProxyError::Setup(m) => ConnectError::Setup(m),
            ProxyError::Connect(m) => ConnectError::Handshake(m),
        })?;
        // Through a proxy, the relay's address is what its name resolves to.
        let peer = match peer {
            Some(p) => p,
            None => tokio::net::lookup_host(&target)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
        };
        let mut tls = kubechat_transport::tls::tunnel_client_config(&active.tls, &active.relay_ca)
            .map_err(|e| ConnectError::Setup(e.to_string()))?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(relay.server_name.clone())
            .map_err(|e| ConnectError::Setup(format!("bad relay name {}: {e}", relay.server_name)))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, pipe)
            .await
            .map_err(|e| ConnectError::Handshake(format!("websocket tls: {e}")))?;
        let url = format!("wss://{target}{TUNNEL_PATH}");
        let config = Some(kubechat_transport::ws::websocket_config());
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, config)
            .await
            .map_err(|e| ConnectError::Handshake(format!("websocket upgrade: {e}")))?;
        Ok::<Arc<dyn Connection>, ConnectError>(Arc::new(WsConnection::new(WsIo::new(ws), true, peer)))
    };
    tokio::time::timeout(state.config.connect_timeout, dial).await.map_err(|_| ConnectError::Timeout)?
}
