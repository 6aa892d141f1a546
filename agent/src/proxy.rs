//! The egress proxy (`HTTPS_PROXY`, `NO_PROXY`): a TCP connection to a
//! target, directly or tunnelled through an `http://` or `https://` proxy
//! with CONNECT. Used for the relays' WebSocket fallback and for the
//! control plane (enrollment and renewal), so an agent whose only way out
//! is the proxy still enrolls and connects.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream to a target (TCP, or a tunnel through a proxy).
pub(crate) trait Pipe: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Pipe for T {}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// The settings are unusable (a bad proxy CA or name).
    Setup(String),
    /// The proxy or the target could not be reached, or CONNECT was refused.
    Connect(String),
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Setup(m) | Self::Connect(m) => f.write_str(m),
        }
    }
}

/// The agent's egress proxy settings; the default is no proxy.
#[derive(Debug, Clone, Default)]
pub struct EgressProxy {
    /// `http://host:port` or `https://host:port`.
    pub url: Option<String>,
    /// Hosts reached directly (`NO_PROXY` entries).
    pub no_proxy: Vec<String>,
    /// CA bundle of an `https://` proxy (else the caller's fallback roots).
    pub ca: Vec<CertificateDer<'static>>,
}

/// Whether `host` is exempt from the proxy (`NO_PROXY` entries: exact hosts,
/// `.suffix` or `suffix` domains, `*`).
pub(crate) fn bypasses_proxy(host: &str, no_proxy: &[String]) -> bool {
    no_proxy.iter().any(|e| {
        let e = e.trim().trim_start_matches('.');
        !e.is_empty() && (e == "*" || host == e || host.ends_with(&format!(".{e}")))
    })
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub(crate) fn host_of(target: &str) -> &str {
    target.rsplit_once(':').map_or(target, |(h, _)| h).trim_matches(['[', ']'])
}

impl EgressProxy {
    /// The proxy to use for `target` (`host:port`), if any.
    pub(crate) fn for_target(&self, target: &str) -> Option<&str> {
        self.url.as_deref().filter(|_| !bypasses_proxy(host_of(target), &self.no_proxy))
    }

    /// A connection to `target`, and the peer's address when direct:
    /// through the proxy unless `NO_PROXY` exempts it. An `https://` proxy
    /// is verified against the proxy CA, else `fallback_roots` — never the
    /// web PKI by default.
    pub(crate) async fn connect(
        &self,
        target: &str,
        fallback_roots: &rustls::RootCertStore,
    ) -> Result<(Box<dyn Pipe>, Option<std::net::SocketAddr>), ProxyError> {
        match self.for_target(target) {
            Some(proxy) => {
                let roots = if self.ca.is_empty() {
                    fallback_roots.clone()
                } else {
                    let mut roots = rustls::RootCertStore::empty();
                    for ca in &self.ca {
                        roots.add(ca.clone()).map_err(|e| ProxyError::Setup(format!("proxy CA: {e}")))?;
                    }
                    roots
                };
                Ok((via_proxy(proxy, roots, target).await?, None))
            }
            None => {
                let tcp = TcpStream::connect(target)
                    .await
                    .map_err(|e| ProxyError::Connect(format!("cannot reach {target}: {e}")))?;
                let _ = tcp.set_nodelay(true);
                let peer = tcp.peer_addr().ok();
                Ok((Box::new(tcp), peer))
            }
        }
    }
}

/// Asks the proxy on `io` to CONNECT to `target`; `io` then carries the tunnel.
async fn connect_through<S: Pipe>(mut io: S, target: &str) -> Result<S, ProxyError> {
    let failed = |e: std::io::Error| ProxyError::Connect(format!("proxy: {e}"));
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    io.write_all(req.as_bytes()).await.map_err(failed)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || io.read(&mut byte).await.map_err(failed)? == 0 {
            return Err(ProxyError::Connect("the proxy closed the connection during CONNECT".into()));
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head);
    let line = status.lines().next().unwrap_or_default().to_string();
    if line.split_whitespace().nth(1) != Some("200") {
        return Err(ProxyError::Connect(format!("the proxy refused CONNECT {target}: {line}")));
    }
    Ok(io)
}

/// A connection to `target` through `proxy` (`http://host:port`, or
/// `https://host:port`: TLS to the proxy, trusting `roots`).
async fn via_proxy(proxy: &str, roots: rustls::RootCertStore, target: &str) -> Result<Box<dyn Pipe>, ProxyError> {
    let (tls, addr) = match proxy.strip_prefix("https://") {
        Some(a) => (true, a),
        None => (false, proxy.strip_prefix("http://").unwrap_or(proxy)),
    };
    let addr = addr.trim_end_matches('/');
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ProxyError::Connect(format!("cannot reach the proxy {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Box::new(connect_through(tcp, target).await?));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(kubechat_transport::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        ServerName::try_from(host_of(addr).to_string()).map_err(|e| ProxyError::Setup(format!("proxy name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| ProxyError::Connect(format!("TLS to the proxy {addr}: {e}")))?;
    Ok(Box::new(connect_through(stream, target).await?))
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

    #[test]
    fn the_proxy_applies_per_target() {
        let p =
            EgressProxy { url: Some("http://proxy:3128".into()), no_proxy: vec!["10.0.0.1".into()], ca: Vec::new() };
        assert_eq!(p.for_target("relay.example:443"), Some("http://proxy:3128"));
        assert_eq!(p.for_target("10.0.0.1:6443"), None);
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(EgressProxy::default().for_target("relay.example:443"), None);
    }
}
