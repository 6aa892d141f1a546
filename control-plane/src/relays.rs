//! Connections to relays' internal listeners: one pooled HTTP/2 client over
//! mutual TLS for ordinary requests (many streams per connection, one
//! connection per relay), and a fresh HTTP/1.1 connection per upgrade
//! (exec, attach, port-forward), which HTTP/2 cannot carry for kubectl.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kubechat_transport::tls::{self, Identity, TlsError};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// How the control plane reaches relays.
#[derive(Clone)]
pub struct RelayClients {
    h2: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    h1: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for RelayClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClients").finish_non_exhaustive()
    }
}

impl RelayClients {
    /// Clients presenting `identity` (the control plane's internal client
    /// certificate) and trusting `relay_ca` for relays' certificates.
    pub fn new(identity: &Identity, relay_ca: &[CertificateDer<'static>]) -> Result<Self, TlsError> {
        // ALPN (h2) is set by hyper-rustls, which refuses a preset list.
        let h2_tls = tls::internal_client_config(identity, relay_ca, &[])?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(h2_tls)
            .https_only()
            .enable_http2()
            .wrap_connector(http);
        let h2 = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_only(true)
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(std::time::Duration::from_secs(20))
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build(https);
        let h1 = Arc::new(tls::internal_client_config(identity, relay_ca, &[b"http/1.1"])?);
        Ok(Self { h2, h1 })
    }

    /// Sends `req` (absolute `https://<relay>/…` URI) on the pooled HTTP/2
    /// connection to its relay.
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.h2.request(req).await
    }

    /// Opens an HTTP/1.1 connection to `address` for one upgrade request.
    pub async fn upgrade_connection(
        &self,
        address: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address).trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("bad relay address {address}: {e}"))?;
        let tcp = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let tls =
            tokio_rustls::TlsConnector::from(self.h1.clone()).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(send)
    }
}
