//! Dialling a relay's WebSocket fallback: TCP (directly, or through an HTTP
//! or HTTPS proxy with CONNECT), TLS with the agent's certificate pinning the
//! relay CA, a WebSocket on `/v1/tunnel`, yamux on top.

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

/// A byte stream to the relay's WebSocket port (TCP, or a tunnel through a proxy).
pub(crate) trait Pipe: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Pipe for T {}

/// Asks the proxy on `io` to CONNECT to `target`; `io` then carries the tunnel.
async fn connect_through<S: Pipe>(mut io: S, target: &str) -> Result<S, ConnectError> {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    io.write_all(req.as_bytes()).await.map_err(|e| ConnectError::Handshake(format!("proxy: {e}")))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192
            || io.read(&mut byte).await.map_err(|e| ConnectError::Handshake(format!("proxy: {e}")))? == 0
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
    Ok(io)
}

/// A connection to `target` through the proxy `proxy` (`http://host:port`,
/// or `https://host:port`: TLS to the proxy, trusting `proxy_ca` if given,
/// else the relay CA — never the web PKI).
async fn via_proxy(
    proxy: &str,
    proxy_ca: &[rustls_pki_types::CertificateDer<'static>],
    target: &str,
) -> Result<Box<dyn Pipe>, ConnectError> {
    let (tls, addr) = match proxy.strip_prefix("https://") {
        Some(a) => (true, a),
        None => (false, proxy.strip_prefix("http://").unwrap_or(proxy)),
    };
    let addr = addr.trim_end_matches('/');
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ConnectError::Handshake(format!("cannot reach the proxy {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Box::new(connect_through(tcp, target).await?));
    }
    let mut roots = rustls::RootCertStore::empty();
    for ca in proxy_ca {
        roots.add(ca.clone()).map_err(|e| ConnectError::Setup(format!("proxy CA: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(kubechat_transport::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_string()).map_err(|e| ConnectError::Setup(format!("proxy name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| ConnectError::Handshake(format!("TLS to the proxy {addr}: {e}")))?;
    Ok(Box::new(connect_through(stream, target).await?))
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
        let (pipe, peer): (Box<dyn Pipe>, std::net::SocketAddr) = match &state.config.https_proxy {
            Some(proxy) if !bypasses_proxy(&host, &state.config.no_proxy) => {
                let ca = if state.config.proxy_ca.is_empty() { &active.relay_ca } else { &state.config.proxy_ca };
                let peer = tokio::net::lookup_host(&target)
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
                (via_proxy(proxy, ca, &target).await?, peer)
            }
            _ => {
                let tcp = TcpStream::connect(&target)
                    .await
                    .map_err(|e| ConnectError::Handshake(format!("cannot reach {target}: {e}")))?;
                let _ = tcp.set_nodelay(true);
                let peer = tcp.peer_addr().map_err(|e| ConnectError::Setup(e.to_string()))?;
                (Box::new(tcp), peer)
            }
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
