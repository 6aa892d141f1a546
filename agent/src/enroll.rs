//! Enrollment from the agent's side: make a key that never leaves the
//! cluster, send a CSR with the one-time bootstrap token, and keep what the
//! control plane answers (certificate, relay CA to pin, relays, grant keys).
//! Storing them in a Kubernetes Secret and renewal at 2/3 of the
//! certificate's life come with the Helm chart.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Key or CSR generation failed.
    #[error("cannot make a key and CSR: {0}")]
    Csr(String),
    /// The control plane could not be reached.
    #[error("cannot reach the control plane at {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The control plane refused.
    #[error("the control plane refused enrollment (HTTP {status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// Files could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What enrollment wrote.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// `spiffe://kubechat/tenant/<t>/cluster/<c>`.
    pub identity: String,
    /// Relay endpoints to dial.
    pub relays: Vec<String>,
    /// Grant keys to trust (`--grant-key` values).
    pub grant_keys: Vec<String>,
}

fn write(path: PathBuf, contents: &str, private: bool) -> Result<(), EnrollError> {
    std::fs::write(&path, contents).map_err(|source| EnrollError::Write { path: path.clone(), source })?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| EnrollError::Write { path, source })?;
    }
    Ok(())
}

/// Enrolls with `control_plane` (trusting `ca_pem` for HTTPS) using
/// `bootstrap_token`; writes `agent.key`, `agent.crt`, `relay-ca.crt` and
/// `enrollment.json` into `out`.
pub async fn enroll(
    control_plane: &str,
    bootstrap_token: &str,
    ca_pem: Option<&str>,
    out: &Path,
) -> Result<Enrolled, EnrollError> {
    let (key, csr) =
        kubechat_transport::pki::new_csr("spiffe://kubechat/enrolling").map_err(|e| EnrollError::Csr(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in ca_pem
        .map(kubechat_transport::tls::parse_ca_pem)
        .transpose()
        .map_err(|e| EnrollError::Csr(e.to_string()))?
        .unwrap_or_default()
    {
        let _ = roots.add(ca);
    }
    let tls = rustls::ClientConfig::builder_with_provider(kubechat_transport::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| EnrollError::Csr(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let url = format!("{}/v1/enroll", control_plane.trim_end_matches('/'));
    let body = json!({"bootstrapToken": bootstrap_token, "csr": csr}).to_string();
    let req = http::Request::post(&url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| EnrollError::Unreachable { url: url.clone(), detail: e.to_string() })?;
    let resp =
        client.request(req).await.map_err(|e| EnrollError::Unreachable { url: url.clone(), detail: e.to_string() })?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| EnrollError::Unreachable { url: url.clone(), detail: e.to_string() })?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status != 201 {
        let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message").to_string();
        return Err(EnrollError::Refused { status, message });
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    std::fs::create_dir_all(out).map_err(|source| EnrollError::Write { path: out.to_path_buf(), source })?;
    write(out.join("agent.key"), &key, true)?;
    write(out.join("agent.crt"), &s("certificate"), false)?;
    write(out.join("relay-ca.crt"), &s("relayCa"), false)?;
    let enrolled = Enrolled { identity: s("identity"), relays: list("relays"), grant_keys: list("grantKeys") };
    let summary = json!({"identity": enrolled.identity, "relays": enrolled.relays, "grantKeys": enrolled.grant_keys, "expiresAt": v.get("expiresAt")});
    write(out.join("enrollment.json"), &summary.to_string(), false)?;
    Ok(enrolled)
}
