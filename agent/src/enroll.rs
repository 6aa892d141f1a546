//! Enrollment from the agent's side: make a key that never leaves the
//! cluster, send a CSR with the one-time bootstrap token, and keep what the
//! control plane answers (certificate, relay CA to pin, relays, grant keys)
//! in a [`CredentialStore`]: a directory
//! (`kubechat-agent enroll`) or a Kubernetes Secret (the agent started with
//! `--state-secret`, which enrolls on first start and reuses the Secret
//! afterwards). Renewal at 2/3 of the certificate's life, with the current
//! certificate instead of a token, is in the `renew` module.

use std::path::Path;

use serde_json::json;

use crate::control_plane::ControlPlane;
use crate::credentials::{Credentials, CredentialsError};
use crate::proxy::EgressProxy;
use crate::store::{CredentialStore, StoreError};

/// Why enrollment (or a renewal) with the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Key or CSR generation failed.
    #[error("cannot make a key and CSR: {0}")]
    Csr(String),
    /// No CA to trust for the control plane, or an unusable one.
    #[error("cannot set up TLS to the control plane: {0}")]
    Trust(String),
    /// The control plane could not be reached.
    #[error("cannot reach the control plane at {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The control plane refused.
    #[error("the control plane refused {what} (HTTP {status}): {message}")]
    Refused {
        /// "enrollment" or "renewal".
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The control plane's answer is not usable.
    #[error("the control plane's answer is unusable: {0}")]
    Answer(#[source] CredentialsError),
    /// The credentials could not be stored.
    #[error(transparent)]
    Save(#[from] StoreError),
}

impl EnrollError {
    /// Worth trying again later: the control plane was unreachable or
    /// failed on its side, rather than refusing this agent.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
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

/// Enrolls with `control_plane` (trusting `ca_pem` for HTTPS, else the
/// system's CA bundle; through `proxy` unless exempt) using
/// `bootstrap_token`: a fresh key, kept here, and a CSR. Returns the new
/// credentials; stores nothing.
pub async fn request_credentials(
    control_plane: &str,
    bootstrap_token: &str,
    ca_pem: Option<&str>,
    proxy: &EgressProxy,
) -> Result<Credentials, EnrollError> {
    let (key, csr) =
        kubechat_transport::pki::new_csr("spiffe://kubechat/enrolling").map_err(|e| EnrollError::Csr(e.to_string()))?;
    let cp = ControlPlane::new(control_plane, ca_pem, None, proxy)?;
    let answer = cp.post("/v1/enroll", &json!({"bootstrapToken": bootstrap_token, "csr": csr}), "enrollment").await?;
    Credentials::from_answer(key, &answer, None, control_plane, ca_pem).map_err(EnrollError::Answer)
}

/// Enrolls with `control_plane` (trusting `ca_pem` for HTTPS; through
/// `proxy` unless exempt) using `bootstrap_token`; writes `agent.key`,
/// `agent.crt`, `relay-ca.crt` and `enrollment.json` into `out`.
pub async fn enroll(
    control_plane: &str,
    bootstrap_token: &str,
    ca_pem: Option<&str>,
    proxy: &EgressProxy,
    out: &Path,
) -> Result<Enrolled, EnrollError> {
    let store = CredentialStore::dir(out);
    // Before the one-time token is spent.
    store.prepare().await?;
    let c = request_credentials(control_plane, bootstrap_token, ca_pem, proxy).await?;
    store.save(&c).await?;
    Ok(Enrolled { identity: c.identity, relays: c.relays, grant_keys: c.grant_keys })
}
