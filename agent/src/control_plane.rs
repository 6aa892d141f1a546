//! The agent as an HTTPS client of its control plane: trust (the given CA,
//! else the system's CA bundle), an optional client certificate, and a JSON
//! POST whose `201` answer is returned.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubechat_transport::tls::{self, Identity};
use serde_json::Value;

use crate::enroll::EnrollError;

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

/// A client of one control plane.
pub(crate) struct ControlPlane {
    base: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ControlPlane {
    /// A client of `url`, trusting `ca_pem` (else the system's CA bundle),
    /// presenting `client_cert` when given (HTTPS only then).
    pub(crate) fn new(url: &str, ca_pem: Option<&str>, client_cert: Option<&Identity>) -> Result<Self, EnrollError> {
        let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| EnrollError::Trust(e.to_string()))?
            .with_root_certificates(roots(ca_pem)?);
        let config = match client_cert {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| EnrollError::Trust(format!("the agent certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
        let https = match client_cert {
            // A client certificate means nothing over plain HTTP.
            Some(_) => https.https_only(),
            None => https.https_or_http(),
        };
        let client = Client::builder(TokioExecutor::new()).build(https.enable_http1().build());
        Ok(Self { base: url.trim_end_matches('/').to_string(), client })
    }

    /// POSTs `body` to `path`; the answer's JSON when the status is 201.
    /// `what` ("enrollment", "renewal") names the request in errors. The
    /// body is never logged.
    pub(crate) async fn post(&self, path: &str, body: &Value, what: &'static str) -> Result<Value, EnrollError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |detail: String| EnrollError::Unreachable { url: url.clone(), detail };
        let req = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
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
