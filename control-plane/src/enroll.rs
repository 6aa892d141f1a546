//! Agent enrollment: a cluster's one-time, expiring bootstrap token plus the
//! agent's CSR (its key never leaves the cluster) buy a short-lived client
//! certificate whose URI SAN is the identity bound to the token — whatever
//! the CSR asked for — with the relay CA to pin, the relays of the tenant's
//! region and the grant-verification keys.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use kubechat_protocol::ClusterIdentity;
use kubechat_transport::pki::{CertAuthority, Validity};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::App;
use crate::auth;
use crate::db::now;
use crate::error::ApiError;

/// Prefix of bootstrap tokens.
pub const BOOTSTRAP_PREFIX: &str = "kcb_";

/// What enrollment hands out, and how it signs.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// Signs agent certificates.
    pub agent_ca: Arc<CertAuthority>,
    /// The relay CA agents pin (PEM).
    pub relay_ca_pem: String,
    /// Relay endpoints (`host:port`) agents dial.
    pub relays: Vec<String>,
    /// Life of an agent certificate (24 h by default).
    pub cert_lifetime: Duration,
    /// Life of a bootstrap token (1 h by default).
    pub bootstrap_lifetime: Duration,
}

/// Creates a bootstrap token for a cluster; returns (token, expiry).
pub async fn issue_bootstrap(
    app: &App,
    tenant_id: &str,
    cluster_id: &str,
    life: Option<Duration>,
) -> Result<(String, i64), ApiError> {
    let e = app.enrollment.as_ref().ok_or_else(not_configured)?;
    let secret = auth::new_token().0.replacen(auth::TOKEN_PREFIX, BOOTSTRAP_PREFIX, 1);
    let expires = now() + life.unwrap_or(e.bootstrap_lifetime).as_secs() as i64;
    app.db.add_bootstrap_token(tenant_id, cluster_id, &auth::hash(&secret), expires).await?;
    Ok((secret, expires))
}

fn not_configured() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "enrollment_disabled",
        message: "this control plane has no agent CA configured".into(),
        retry_after: None,
    }
}

/// The `helm install` command for a cluster.
pub fn helm_command(app: &App, token: &str) -> String {
    format!(
        "helm install kubechat-agent ./charts/kubechat-agent --namespace kubechat --create-namespace --set controlPlaneUrl={} --set bootstrapToken={token}",
        app.public_url
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EnrollRequest {
    bootstrap_token: String,
    csr: String,
}

/// `POST /v1/enroll`.
pub(crate) async fn enroll(app: &App, b: EnrollRequest) -> Result<(StatusCode, Value), ApiError> {
    let e = app.enrollment.as_ref().ok_or_else(not_configured)?;
    let refused = || {
        ApiError::unauthenticated(
            "the bootstrap token is invalid, already used or expired; register the cluster again for a new one",
        )
    };
    if !b.bootstrap_token.starts_with(BOOTSTRAP_PREFIX) {
        return Err(refused());
    }
    // The CSR is checked before the token is spent, so a typo does not burn it.
    if !b.csr.contains("CERTIFICATE REQUEST") || b.csr.len() > 16 * 1024 {
        return Err(ApiError::bad_request("invalid_csr", "csr must be a PEM certificate signing request"));
    }
    let (tenant, cluster) = app.db.use_bootstrap_token(&auth::hash(&b.bootstrap_token)).await?.ok_or_else(refused)?;
    let identity = ClusterIdentity::new(&tenant, &cluster).map_err(|_| ApiError::internal())?;
    let validity = Validity::for_duration(e.cert_lifetime);
    let cert = e
        .agent_ca
        .sign_agent_csr(&b.csr, &identity, validity)
        .map_err(|err| ApiError::bad_request("invalid_csr", format!("the CSR could not be signed: {err}")))?;
    tracing::info!(tenant = %tenant, cluster = %cluster, "agent enrolled");
    let key = kubechat_protocol::grant::to_header(&app.signer.public_key());
    Ok((
        StatusCode::CREATED,
        json!({
            "identity": identity.spiffe_uri(),
            "certificate": cert,
            "caCertificate": e.agent_ca.cert_pem(),
            "relayCa": e.relay_ca_pem,
            "relays": e.relays,
            "grantKeys": [format!("{}={key}", app.signer.key_id())],
            "expiresAt": validity.not_after.unix_timestamp(),
        }),
    ))
}
