//! The agent as an HTTPS client of its control plane: trust (the given CA,
//! else the system's CA bundle), an optional client certificate, the egress
//! proxy unless `NO_PROXY` exempts the control plane, and a JSON POST whose
//! `201` answer is returned. Redirects are not followed.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kubechat_transport::tls::{self, Identity};
use rustls_pki_types::ServerName;
use serde_json::Value;

use crate::enroll::EnrollError;
use crate::proxy::{EgressProxy, Pipe};

/// Where the system's CA bundle usually is (Debian/Ubuntu/Alpine/distroless,
/// RHEL/Fedora, others); `SSL_CERT_FILE` first.
const SYSTEM_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// The roots to trust for the control plane: `ca_pem` if given, else the
/// system's CA bundle.
fn roots(ca_pem: Option<&str>) -> Result<rustls::RootCertStore, EnrollError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = match ca_pem {
        Some(pem) => tls::parse_ca_pem(pem).map_err(|e| EnrollError::Trust(format!("the control-plane CA: {e}")))?,
        None => {
            let from_env = std::env::var("SSL_CERT_FILE").ok();
            let path = from_env
                .iter()
                .map(String::as_str)
                .chain(SYSTEM_BUNDLES.iter().copied())
                .find(|p| Path::new(p).is_file());
            let path = path.ok_or_else(|| {
                EnrollError::Trust(
                    "no --control-plane-ca given and no system CA bundle found; pass --control-plane-ca".into(),
                )
            })?;
            tls::load_certs(Path::new(path), "system CA bundle").map_err(|e| EnrollError::Trust(e.to_string()))?
        }
    };
    for c in certs {
        // A system bundle may hold certificates webpki cannot use; skip them.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(EnrollError::Trust("the control-plane CA bundle holds no usable certificate".into()));
    }
    Ok(roots)
}

/// How long one request to the control plane may take, end to end.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A client of one control plane. Each request dials afresh (enrollment
/// and renewal are rare), directly or through the egress proxy.
pub(crate) struct ControlPlane {
    base: String,
    /// The URL's path (without a trailing `/`), prefixed to every request.
    prefix: String,
    /// `host:port` to dial.
    target: String,
    /// TLS to the control plane (`None` for a plain `http://` URL).
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Verifies an `https://` proxy when no proxy CA is given.
    roots: rustls::RootCertStore,
    proxy: EgressProxy,
}

impl ControlPlane {
    /// A client of `url`, trusting `ca_pem` (else the system's CA bundle),
    /// presenting `client_cert` when given (HTTPS only then), reached
    /// through `proxy` unless its `NO_PROXY` exempts the host.
    pub(crate) fn new(
        url: &str,
        ca_pem: Option<&str>,
        client_cert: Option<&Identity>,
        proxy: &EgressProxy,
    ) -> Result<Self, EnrollError> {
        let bad = |why: &str| EnrollError::Trust(format!("the control-plane URL {url:?} {why}"));
        let uri: http::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if client_cert.is_none() => false,
            Some("http") => return Err(bad("must be https:// to present a client certificate")),
            _ => return Err(bad("must start with https://")),
        };
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        let host = uri.host().ok_or_else(|| bad("names no host"))?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let roots = roots(ca_pem)?;
        let tls = if https {
            let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| EnrollError::Trust(e.to_string()))?
                .with_root_certificates(roots.clone());
            let mut config = match client_cert {
                Some(id) => builder
                    .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                    .map_err(|e| EnrollError::Trust(format!("the agent certificate: {e}")))?,
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host).map_err(|_| bad("has a host TLS cannot verify"))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Self { base: url.trim_end_matches('/').to_string(), prefix, target, tls, roots, proxy: proxy.clone() })
    }

    /// One HTTP/1.1 connection to the control plane.
    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let (pipe, _) = self.proxy.connect(&self.target, &self.roots).await.map_err(|e| e.to_string())?;
        let io: Box<dyn Pipe> = match &self.tls {
            Some((config, name)) => Box::new(
                tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), pipe)
                    .await
                    .map_err(|e| format!("TLS: {}", error_chain(&e)))?,
            ),
            None => pipe,
        };
        let (send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| error_chain(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// POSTs `body` to `path`; the answer's JSON when the status is 201.
    /// `what` ("enrollment", "renewal") names the request in errors. The
    /// body is never logged. The whole exchange (connecting, through a proxy
    /// too, TLS, request and answer) gets [`REQUEST_TIMEOUT`]; running out
    /// is "unreachable", which callers retry.
    pub(crate) async fn post(&self, path: &str, body: &Value, what: &'static str) -> Result<Value, EnrollError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |detail: String| EnrollError::Unreachable { url: url.clone(), detail };
        let req = http::Request::post(format!("{}{path}", self.prefix))
            .header(http::header::HOST, self.target.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let mut send = self.connect().await?;
            let resp = send.send_request(req).await.map_err(|e| error_chain(&e))?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
            .map_err(unreachable)?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status != 201 {
            let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message").to_string();
            return Err(EnrollError::Refused { what, status, message });
        }
        Ok(v)
    }
}

/// `e` and its sources, for "connection refused" or a TLS alert to show.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        next = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-request HTTP server: answers `status` with `body` and returns
    /// the request head it got.
    async fn one_request(status: &'static str, body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.expect("read");
            let resp = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            s.write_all(resp.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn a_path_in_the_url_prefixes_every_request() {
        let (base, server) = one_request("201 Created", r#"{"ok":true}"#).await;
        let cp = ControlPlane::new(&format!("{base}/kubechat/"), None, None, &EgressProxy::default()).expect("client");
        let v = cp.post("/v1/enroll", &serde_json::json!({}), "enrollment").await.expect("answer");
        assert_eq!(v["ok"], true);
        let head = server.await.expect("server");
        assert!(head.starts_with("POST /kubechat/v1/enroll HTTP/1.1\r\n"), "{head}");
    }

    #[tokio::test]
    async fn redirects_are_refusals_not_followed() {
        let (base, server) = one_request("302 Found\r\nlocation: http://elsewhere.example/v1/enroll", "").await;
        let cp = ControlPlane::new(&base, None, None, &EgressProxy::default()).expect("client");
        let err = cp.post("/v1/enroll", &serde_json::json!({}), "enrollment").await.expect_err("refused");
        assert!(matches!(err, EnrollError::Refused { status: 302, .. }), "{err}");
        server.await.expect("server");
        assert!(ControlPlane::new("https://cp.example/?a=b", None, None, &EgressProxy::default()).is_err());
    }
}
