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

/// A parsed proxy URL: `http://[user:password@]host:port` or `https://…`.
/// Its `Debug` and every message leave the credentials out.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProxyUrl {
    /// TLS to the proxy itself.
    pub(crate) tls: bool,
    /// `host:port`.
    pub(crate) addr: String,
    /// `Basic …` for `Proxy-Authorization`, from the URL's user info.
    auth: Option<String>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let creds = if self.auth.is_some() { "***@" } else { "" };
        write!(f, "{}://{creds}{}", if self.tls { "https" } else { "http" }, self.addr)
    }
}

/// `%XX` escapes of URL user info, decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ProxyUrl {
    /// Parses `url`; errors say what is wrong without repeating the URL
    /// (it may hold a password).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("HTTPS_PROXY must start with http:// or https:// (a CONNECT proxy)".into());
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('?') {
            return Err("HTTPS_PROXY must be scheme://host:port, without a path".into());
        }
        let (auth, addr) = match authority.rsplit_once('@') {
            Some((userinfo, addr)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let pair = format!("{}:{}", percent_decode(user), percent_decode(password));
                use base64::Engine;
                (Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))), addr)
            }
            None => (None, authority),
        };
        let port_ok = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err("HTTPS_PROXY must name a host and a port (http://host:port)".into());
        }
        Ok(Self { tls, addr: addr.to_string(), auth })
    }
}

/// Asks the proxy on `io` to CONNECT to `target`; `io` then carries the tunnel.
async fn connect_through<S: Pipe>(mut io: S, target: &str, auth: Option<&str>) -> Result<S, ProxyError> {
    let failed = |e: std::io::Error| ProxyError::Connect(format!("proxy: {e}"));
    let auth = auth.map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
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

/// A connection to `target` through `proxy` (TLS to an `https://` proxy,
/// trusting `roots`), with the URL's credentials if it has any.
async fn via_proxy(proxy: &str, roots: rustls::RootCertStore, target: &str) -> Result<Box<dyn Pipe>, ProxyError> {
    let proxy = ProxyUrl::parse(proxy).map_err(ProxyError::Setup)?;
    let addr = proxy.addr.as_str();
    let auth = proxy.auth.as_deref();
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ProxyError::Connect(format!("cannot reach the proxy {proxy}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if !proxy.tls {
        return Ok(Box::new(connect_through(tcp, target, auth).await?));
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
        .map_err(|e| ProxyError::Connect(format!("TLS to the proxy {proxy}: {e}")))?;
    Ok(Box::new(connect_through(stream, target, auth).await?))
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
    fn proxy_urls_keep_their_credentials_out_of_messages() {
        let p = ProxyUrl::parse("http://alice:s%3Acret@proxy.corp:3128/").expect("parses");
        assert_eq!(p.addr, "proxy.corp:3128");
        assert_eq!(p.auth.as_deref(), Some("Basic YWxpY2U6czpjcmV0"), "alice:s:cret");
        assert_eq!(p.to_string(), "http://***@proxy.corp:3128");
        assert_eq!(format!("{p:?}"), "http://***@proxy.corp:3128");
        assert!(ProxyUrl::parse("https://proxy:443").expect("parses").tls);
        for bad in ["socks5://u:secret@p:1080", "http://u:secret@proxy", "http://u:secret@p:3128/path", "http://:3128"]
        {
            let e = ProxyUrl::parse(bad).expect_err(bad);
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[tokio::test]
    async fn connect_sends_proxy_credentials_and_reports_refusals() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.expect("read");
            s.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await.expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let p = EgressProxy { url: Some(format!("http://bob:pw@{addr}")), no_proxy: Vec::new(), ca: Vec::new() };
        let err = p.connect("cp.example:443", &rustls::RootCertStore::empty()).await.err().expect("refused");
        let req = server.await.expect("server");
        assert!(req.starts_with("CONNECT cp.example:443 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Proxy-Authorization: Basic Ym9iOnB3\r\n"), "{req}");
        let msg = err.to_string();
        assert!(msg.contains("407") && !msg.contains("pw"), "{msg}");
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
