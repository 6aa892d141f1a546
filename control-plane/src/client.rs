//! A small REST client of the control plane, for the CLI and tests.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::auth::Secret;

/// How long one request (answer included) may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A response: status, `Retry-After` if any, JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
    /// The body (JSON, or a string if it was not JSON).
    pub body: Value,
}

/// Talks to one control plane as one token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<Secret>,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    /// A client of `base` (e.g. `http://127.0.0.1:8443`) using `token`.
    pub fn new(base: &str, token: Option<Secret>) -> Self {
        Self::with_roots(base, token, rustls::RootCertStore::empty())
    }

    /// A client of an HTTPS `base` that trusts the CA in `ca_pem`.
    pub fn new_tls(base: &str, token: Option<Secret>, ca_pem: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for ca in kubechat_transport::tls::parse_ca_pem(ca_pem).unwrap_or_default() {
            let _ = roots.add(ca);
        }
        Self::with_roots(base, token, roots)
    }

    /// A client of an HTTPS `base` trusting `ca_pem` that presents
    /// `identity` as its TLS client certificate (an agent renewing).
    pub fn new_mtls(base: &str, ca_pem: &str, identity: &kubechat_transport::tls::Identity) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for ca in kubechat_transport::tls::parse_ca_pem(ca_pem).unwrap_or_default() {
            let _ = roots.add(ca);
        }
        Self::build(base, None, roots, Some(identity))
    }

    fn with_roots(base: &str, token: Option<Secret>, roots: rustls::RootCertStore) -> Self {
        Self::build(base, token, roots, None)
    }

    fn build(
        base: &str,
        token: Option<Secret>,
        roots: rustls::RootCertStore,
        identity: Option<&kubechat_transport::tls::Identity>,
    ) -> Self {
        let builder = rustls::ClientConfig::builder_with_provider(kubechat_transport::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_root_certificates(roots);
        let tls = match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .expect("a loaded identity is a usable client certificate"),
            None => builder.with_no_client_auth(),
        };
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: HyperClient::builder(TokioExecutor::new()).build(https),
        }
    }

    /// The same server as another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self { token: Some(Secret(token.to_string())), ..self.clone() }
    }

    /// Sends raw bytes (tests of malformed bodies use this).
    pub async fn raw(&self, method: Method, path: &str, body: Bytes) -> Result<Reply, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {}", t.0));
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| format!("cannot reach the control plane at {}: {e}", self.base))?;
            let status = resp.status().as_u16();
            let retry_after =
                resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| {
            format!("the control plane at {} did not answer within {} s", self.base, REQUEST_TIMEOUT.as_secs())
        })??;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Reply { status, retry_after, body })
    }

    /// Opens a Server-Sent Events stream (`GET path`); its events as they
    /// come. An error answer is an `Err` with its message.
    pub async fn events(&self, path: &str) -> Result<Events, String> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.base))
            .header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {}", t.0));
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| format!("the control plane at {} did not answer", self.base))?
            .map_err(|e| format!("cannot reach the control plane at {}: {e}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let m = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("the stream was refused");
            return Err(format!("HTTP {status}: {m}"));
        }
        Ok(Events { body: resp.into_body(), buf: Vec::new() })
    }

    /// Sends `body` as JSON.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default())).unwrap_or_default();
        self.raw(method, path, bytes).await
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Reply, String> {
        self.send(Method::GET, path, None).await
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, String> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// PUT JSON.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Reply, String> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<Reply, String> {
        self.send(Method::DELETE, path, None).await
    }
}

/// A Server-Sent Events stream being read.
pub struct Events {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Events {
    /// The next event: its name (`message` if none) and data; `None` when
    /// the stream ends.
    pub async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 2);
                let mut event = "message".to_string();
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                    }
                }
                if data.is_empty() && event == "message" {
                    continue;
                }
                return Some((event, data.join("\n")));
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }
}
