//! Clients of the relay's internal listener, authenticated with the control
//! plane's client certificate: HTTP/1.1, HTTP/2 and WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubechat_transport::tls::{self, Identity};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The identity the test requests are made as.
pub const TEST_USER: &str = "kubechat:user:alice@example.com";

/// A client of one relay's internal listener.
#[derive(Clone)]
pub struct InternalClient {
    addr: SocketAddr,
    h1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

/// A buffered response.
#[derive(Debug)]
pub struct Buffered {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Buffered {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not json ({e}): {:?}", self.body))
    }
}

impl InternalClient {
    /// A client for the relay at `addr`, presenting `id`, trusting `relay_ca`.
    pub fn new(addr: SocketAddr, id: &Identity, relay_ca: &[CertificateDer<'static>]) -> Self {
        let h1 = tls::internal_client_config(id, relay_ca, &[b"http/1.1"]).expect("client tls");
        let h2 = tls::internal_client_config(id, relay_ca, &[b"h2"]).expect("client tls");
        Self { addr, h1: Arc::new(h1), h2: Arc::new(h2) }
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new TLS connection (ALPN h2 or http/1.1).
    pub async fn tls(&self, h2: bool) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let cfg = if h2 { self.h2.clone() } else { self.h1.clone() };
        let name = ServerName::IpAddress(self.addr.ip().into());
        TlsConnector::from(cfg).connect(name, tcp).await
    }

    /// A new HTTP/1.1 connection.
    pub async fn h1(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let io = TokioIo::new(self.tls(false).await.expect("tls connect"));
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1 handshake");
        tokio::spawn(conn.with_upgrades());
        send
    }

    /// A new HTTP/2 connection.
    pub async fn h2(&self) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
        let io = TokioIo::new(self.tls(true).await.expect("tls connect"));
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .adaptive_window(true)
            .handshake(io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        send
    }

    /// A request builder for `path` on `cluster`'s API, as [`TEST_USER`].
    /// `absolute` gives an absolute URI (needed on HTTP/2).
    pub fn request(&self, method: &str, cluster: &str, path: &str, absolute: bool) -> http::request::Builder {
        let p = format!("/v1/clusters/{cluster}/k8s{path}");
        let uri = if absolute { format!("https://{}{p}", self.addr) } else { p };
        let mut b = Request::builder().method(method).uri(uri).header("kubechat-user", TEST_USER);
        if !absolute {
            b = b.header(http::header::HOST, self.addr.to_string());
        }
        b
    }

    /// Sends `req` on a new HTTP/1.1 connection and returns the streaming response.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> http::Response<Incoming> {
        self.h1().await.send_request(req).await.expect("send request")
    }

    /// GET over a new HTTP/1.1 connection, returning connection-level
    /// failures (refused, reset) as errors instead of panicking.
    pub async fn try_get(&self, cluster: &str, path: &str) -> Result<Buffered, String> {
        let io = TokioIo::new(self.tls(false).await.map_err(|e| e.to_string())?);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = self.request("GET", cluster, path, false).body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Buffered { status: parts.status, headers: parts.headers, body })
    }

    /// GET `path` on `cluster` over a new HTTP/1.1 connection; buffers the response.
    pub async fn get(&self, cluster: &str, path: &str) -> Buffered {
        let req = self.request("GET", cluster, path, false).body(Full::new(Bytes::new())).expect("request");
        buffer(self.send(req).await).await
    }

    /// Opens a WebSocket to `path` on `cluster` through the relay.
    pub async fn websocket(
        &self,
        cluster: &str,
        path: &str,
    ) -> tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("wss://{}/v1/clusters/{cluster}/k8s{path}", self.addr);
        let mut req = url.into_client_request().expect("ws request");
        req.headers_mut().insert("kubechat-user", TEST_USER.parse().expect("header"));
        let stream = self.tls(false).await.expect("tls connect");
        let (ws, resp) = tokio_tungstenite::client_async(req, stream).await.expect("websocket handshake");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws
    }
}

/// Reads a whole response.
pub async fn buffer(resp: http::Response<Incoming>) -> Buffered {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Buffered { status: parts.status, headers: parts.headers, body }
}
