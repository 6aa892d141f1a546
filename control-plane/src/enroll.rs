//! Agent enrollment: a cluster's one-time, expiring bootstrap token plus the
//! agent's CSR (its key never leaves the cluster) buy a short-lived client
//! certificate whose URI SAN is the identity bound to the token — whatever
//! the CSR asked for — with the relay CA to pin, the relays of the tenant's
//! region and the grant-verification keys.
//!
//! Renewal (`POST /v1/renew`) happens over the agent's current identity: the
//! agent presents its certificate as the TLS client certificate (verified
//! against the agent CA by the listener) and sends a CSR for a new key. The
//! new certificate names the same identity; the old one is revoked after
//! `renewal_overlap` (relays then refuse it). Every issued certificate is
//! recorded, so an admin can list and revoke them one by one.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use kubechat_protocol::ClusterIdentity;
use kubechat_transport::pki::{CertAuthority, Validity};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth;
use crate::error::ApiError;
use crate::store::now;

/// Prefix of bootstrap tokens.
pub const BOOTSTRAP_PREFIX: &str = "kcb_";

/// What enrollment hands out, and how it signs.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// Signs agent certificates.
    pub agent_ca: Arc<CertAuthority>,
    /// The relay CA agents pin (PEM).
    pub relay_ca_pem: String,
    /// Relay endpoints agents dial, by region: `(region, host:port)`. An
    /// agent is given only its tenant's home region's relays.
    pub relays: Vec<(String, String)>,
    /// Life of an agent certificate (24 h by default).
    pub cert_lifetime: Duration,
    /// Life of a bootstrap token (1 h by default).
    pub bootstrap_lifetime: Duration,
    /// How long a renewed certificate stays valid next to its successor
    /// (the agent moves its tunnels to the new one at once).
    pub renewal_overlap: Duration,
}

/// The agent certificate a TLS connection presented (verified by the
/// listener against the agent CA).
#[derive(Debug, Clone)]
pub struct AgentPeer {
    /// Tenant and cluster, from the certificate.
    pub identity: ClusterIdentity,
    /// Hex serial.
    pub serial: String,
}

impl AgentPeer {
    /// Reads the identity and serial of a verified agent certificate.
    pub fn from_certificate(leaf: &rustls_pki_types::CertificateDer<'_>) -> Option<Self> {
        Some(Self {
            identity: kubechat_transport::tls::cluster_identity(leaf).ok()?,
            serial: kubechat_transport::tls::certificate_serial(leaf)?,
        })
    }
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

/// The `helm install` command and values for a cluster's bootstrap token.
pub fn helm_install(app: &App, token: &str) -> crate::helm::HelmInstall {
    crate::helm::install(&app.agent_chart, &app.public_url, app.public_ca_pem.as_deref(), token)
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
    // Everything that can fail is checked before the token is spent, so a
    // typo or a missing relay does not burn it.
    if !b.csr.contains("CERTIFICATE REQUEST") || b.csr.len() > 16 * 1024 {
        return Err(ApiError::bad_request("invalid_csr", "csr must be a PEM certificate signing request"));
    }
    kubechat_transport::pki::check_csr(&b.csr)
        .map_err(|err| ApiError::bad_request("invalid_csr", format!("the CSR is not valid: {err}")))?;
    let hash = auth::hash(&b.bootstrap_token);
    let (tenant, _) = app.db.peek_bootstrap_token(&hash).await?.ok_or_else(refused)?;
    home_relays(app, e, &tenant).await?;
    let (tenant, cluster) = app.db.use_bootstrap_token(&hash).await?.ok_or_else(refused)?;
    let identity = ClusterIdentity::new(&tenant, &cluster).map_err(|_| ApiError::internal())?;
    let (answer, serial) = issue(app, e, &b.csr, &identity).await?;
    tracing::info!(tenant = %tenant, cluster = %cluster, %serial, "agent enrolled");
    Ok((StatusCode::CREATED, answer))
}

/// Signs `csr` for `identity`, records the certificate, and builds the
/// answer enrollment and renewal share; returns it and the new serial.
/// The relays of `tenant_id`'s home region, and the region; an error a
/// person can act on when there are none.
async fn home_relays(app: &App, e: &Enrollment, tenant_id: &str) -> Result<(Vec<String>, String), ApiError> {
    let tenant = app
        .db
        .tenant(&crate::store::Scope::Platform, tenant_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("the tenant no longer exists"))?;
    let relays: Vec<String> =
        e.relays.iter().filter(|(r, _)| *r == tenant.home_region).map(|(_, a)| a.clone()).collect();
    if relays.is_empty() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "no_relays",
            message: format!(
                "no relay serves region {}, the tenant's home region; the operator must add one (--enroll-relay {}=host:port)",
                tenant.home_region, tenant.home_region
            ),
            retry_after: None,
        });
    }
    Ok((relays, tenant.home_region))
}

async fn issue(app: &App, e: &Enrollment, csr: &str, identity: &ClusterIdentity) -> Result<(Value, String), ApiError> {
    let (relays, region) = home_relays(app, e, &identity.tenant).await?;
    let validity = Validity::for_duration(e.cert_lifetime);
    let cert = e
        .agent_ca
        .sign_agent_csr(csr, identity, validity)
        .map_err(|err| ApiError::bad_request("invalid_csr", format!("the CSR could not be signed: {err}")))?;
    let der = kubechat_transport::tls::parse_ca_pem(&cert).map_err(|_| ApiError::internal())?;
    let serial = der.first().and_then(kubechat_transport::tls::certificate_serial).ok_or_else(ApiError::internal)?;
    let not_after = validity.not_after.unix_timestamp();
    app.db.add_agent_certificate(&identity.tenant, &identity.cluster, &serial, not_after).await?;
    let key = kubechat_protocol::grant::to_header(&app.signer.public_key());
    Ok((
        json!({
            "identity": identity.spiffe_uri(),
            "certificate": cert,
            "serial": serial,
            "caCertificate": e.agent_ca.cert_pem(),
            "relayCa": e.relay_ca_pem,
            "relays": relays,
            "region": region,
            "grantKeys": [format!("{}={key}", app.signer.key_id())],
            // A secret for this cluster's agents alone (this answer goes over
            // TLS straight to the agent, never through a relay): they pass
            // grants by its MAC instead of checking each signature.
            "clusterGrantKey": app.signer.cluster_key_spec(&identity.tenant, &identity.cluster),
            "expiresAt": not_after,
        }),
        serial,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RenewRequest {
    csr: String,
}

/// `POST /v1/renew`: a new certificate for the identity of the agent
/// certificate this connection presented.
pub(crate) async fn renew(
    app: &App,
    peer: Option<&AgentPeer>,
    b: RenewRequest,
) -> Result<(StatusCode, Value), ApiError> {
    let e = app.enrollment.as_ref().ok_or_else(not_configured)?;
    let peer = peer.ok_or_else(|| {
        ApiError::unauthenticated(
            "renewal needs the current agent certificate as the TLS client certificate (and a TLS connection straight to the control plane)",
        )
    })?;
    if !b.csr.contains("CERTIFICATE REQUEST") || b.csr.len() > 16 * 1024 {
        return Err(ApiError::bad_request("invalid_csr", "csr must be a PEM certificate signing request"));
    }
    let refused = |why: &str| ApiError {
        status: StatusCode::FORBIDDEN,
        code: "revoked",
        message: format!("{why}; enroll again with a new bootstrap token"),
        retry_after: None,
    };
    let id = &peer.identity;
    if app.db.cluster_revoked(&id.cluster).await? || !app.db.cluster_exists(&id.tenant, &id.cluster).await? {
        return Err(refused("the cluster was deleted or its credentials revoked"));
    }
    if app.db.agent_certificate_revoked(&peer.serial).await? {
        return Err(refused("this certificate was revoked"));
    }
    let (answer, serial) = issue(app, e, &b.csr, id).await?;
    let retire_at = now() + e.renewal_overlap.as_secs() as i64;
    app.db.supersede_agent_certificate(&peer.serial, &serial, retire_at).await?;
    tracing::info!(tenant = %id.tenant, cluster = %id.cluster, old = %peer.serial, new = %serial, "agent certificate renewed");
    Ok((StatusCode::CREATED, answer))
}
