//! Dialling a relay's WebSocket fallback: TCP (directly, or through an HTTP
//! proxy with CONNECT), TLS with the agent's certificate pinning the relay
//! CA, a WebSocket on `/v1/tunnel`, yamux on top.

use std::sync::Arc;

use kubechat_transport::Connection;
use kubechat_transport::ws::{TUNNEL_PATH, WsConnection, WsIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::RelayEndpoint;
use crate::state::{ActiveIdentity, AgentState};
use crate::tunnel::ConnectError;

/// Whether `host` is exempt from the proxy (`NO_PROXY` entries: exact hosts,
/// `.suffix` or `suffix` domains, `*`).
pub(crate) fn bypasses_proxy(host: &str, no_proxy: &[String]) -> bool {
    no_proxy.iter().any(|e| {
        let e = e.trim().trim_start_matches('.');
        !e.is_empty() && (e == "*" || host == e || host.ends_with(&format!(".{e}")))
    })
}

/// Opens a TCP connection to `target` through the HTTP proxy `proxy`
/// (`http://host:port`) with CONNECT.
async fn via_proxy(proxy: &str, target: &str) -> Result<TcpStream, ConnectError> {
    let addr = proxy.strip_prefix("http://").unwrap_or(proxy).trim_end_matches('/');
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ConnectError::Handshake(format!("cannot reach the proxy {addr}: {e}")))?;
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.map_err(|e| ConnectError::Handshake(format!("proxy: {e}")))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192
            || tcp.read(&mut byte).await.map_err(|e| ConnectError::Handshake(format!("proxy: {e}")))? == 0
        {
            return Err(ConnectError::Handshake("the proxy closed the connection during CONNECT".into()));
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head);
    let line = status.lines().next().unwrap_or_default().to_string();
    if line.split_whitespace().nth(1) != Some("200") {
        return Err(ConnectError::Handshake(format!("the proxy refused CONNECT {target}: {line}")));
    }
    Ok(tcp)
}

/// A tunnel connection over the relay's WebSocket fallback.
pub(crate) async fn dial(
    relay: &RelayEndpoint,
    state: &AgentState,
    active: &ActiveIdentity,
) -> Result<Arc<dyn Connection>, ConnectError> {
    let target = relay.ws_address().ok_or_else(|| ConnectError::Setup("no websocket port for this relay".into()))?;
    let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h).trim_matches(['[', ']']).to_string();
    let dial = async {
        let tcp = match &state.config.https_proxy {
            Some(proxy) if !bypasses_proxy(&host, &state.config.no_proxy) => via_proxy(proxy, &target).await?,
            _ => TcpStream::connect(&target)
                .await
                .map_err(|e| ConnectError::Handshake(format!("cannot reach {target}: {e}")))?,
        };
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr().map_err(|e| ConnectError::Setup(e.to_string()))?;
        let mut tls = kubechat_transport::tls::tunnel_client_config(&active.tls, &active.relay_ca)
            .map_err(|e| ConnectError::Setup(e.to_string()))?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(relay.server_name.clone())
            .map_err(|e| ConnectError::Setup(format!("bad relay name {}: {e}", relay.server_name)))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_hosts_and_domains() {
        let list = vec!["localhost".to_string(), ".internal.example".to_string(), "corp.example".to_string()];
        assert!(bypasses_proxy("localhost", &list));
        assert!(bypasses_proxy("relay.internal.example", &list));
        assert!(bypasses_proxy("a.corp.example", &list));
        assert!(!bypasses_proxy("relay.kubechat.io", &list));
        assert!(!bypasses_proxy("evilcorp.example", &list));
        assert!(bypasses_proxy("anything", &["*".to_string()]));
    }
}
