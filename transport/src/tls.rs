//! Certificates, keys, rustls configurations and peer identities.
//!
//! Every configuration uses the ring crypto provider explicitly, so no
//! process-wide default has to be installed first.

use std::path::Path;
use std::sync::Arc;

use kubechat_protocol::{ALPN_TUNNEL, ClusterIdentity, IdentityError};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material or configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {detail}")]
    Pem {
        /// "certificate chain", "private key" or "CA bundle".
        what: &'static str,
        /// Where it was read from.
        path: String,
        /// The underlying error.
        detail: String,
    },
    /// The material was read but does not make a valid configuration.
    #[error("invalid tls configuration: {0}")]
    Config(String),
    /// A socket could not be set up.
    #[error("{0}")]
    Io(String),
}

/// A certificate chain and its private key. `Debug` never prints the key.
pub struct Identity {
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("chain_len", &self.chain.len()).field("key", &"***").finish()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key from files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self { chain: load_certs(cert, "certificate chain")?, key: load_key(key)? })
    }

    /// Parses a PEM certificate chain and a PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let chain = parse_certs(cert_pem.as_bytes(), "certificate chain", "<memory>")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            what: "private key",
            path: "<memory>".into(),
            detail: e.to_string(),
        })?;
        Ok(Self { chain, key })
    }
}

/// The ring crypto provider used by every configuration here.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &[u8], what: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem {
        what,
        path: path.into(),
        detail: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, path: path.into(), detail: "no PEM certificate found".into() });
    }
    Ok(certs)
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Pem {
        what,
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    parse_certs(&pem, what, &path.display().to_string())
}

/// Parses a PEM CA bundle held in memory.
pub fn parse_ca_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(pem.as_bytes(), "CA bundle", "<memory>")
}

/// Loads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn roots(cas: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for ca in cas {
        store.add(ca.clone()).map_err(|e| TlsError::Config(format!("bad CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

fn client_verifier(
    cas: &[CertificateDer<'static>],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots(cas)?, provider())
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))
}

/// Server side of the tunnel: TLS 1.3 only, client certificate required and
/// chaining to `agent_ca`, ALPN `kubechat-tunnel/1`.
pub fn tunnel_server_config(
    id: &Identity,
    agent_ca: &[CertificateDer<'static>],
) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(client_verifier(agent_ca)?)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Config(format!("relay tunnel certificate: {e}")))?;
    cfg.alpn_protocols = vec![ALPN_TUNNEL.to_vec()];
    Ok(cfg)
}

/// Client side of the tunnel: TLS 1.3, trusts only `relay_ca` (pinned, never
/// the web PKI), presents the agent's certificate.
pub fn tunnel_client_config(
    id: &Identity,
    relay_ca: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(relay_ca)?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Config(format!("agent certificate: {e}")))?;
    cfg.alpn_protocols = vec![ALPN_TUNNEL.to_vec()];
    Ok(cfg)
}

/// The relay's internal HTTPS listener: client certificate required and
/// chaining to `internal_ca`; ALPN h2 and http/1.1.
pub fn internal_server_config(
    id: &Identity,
    internal_ca: &[CertificateDer<'static>],
) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(client_verifier(internal_ca)?)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Config(format!("relay internal certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A client of the relay's internal listener (the control plane, tests).
pub fn internal_client_config(
    id: &Identity,
    relay_ca: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(relay_ca)?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Config(format!("internal client certificate: {e}")))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// Reads the KubeChat identity from the URI SAN of a verified leaf
/// certificate. Exactly one `spiffe://kubechat/…` URI must be present; other
/// URI SANs (a service mesh's, say) are ignored.
pub fn cluster_identity(leaf: &CertificateDer<'_>) -> Result<ClusterIdentity, IdentityError> {
    match kubechat_uris(leaf)?.as_slice() {
        [one] => ClusterIdentity::from_spiffe_uri(one),
        other => Err(IdentityError::Count(other.len())),
    }
}

/// The SPIFFE URI naming relay `relay_id`.
pub fn relay_spiffe_uri(relay_id: &str) -> String {
    format!("spiffe://{}/relay/{relay_id}", kubechat_protocol::identity::TRUST_DOMAIN)
}

fn kubechat_uris(leaf: &CertificateDer<'_>) -> Result<Vec<String>, IdentityError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| IdentityError::Malformed(format!("unparsable certificate: {e}")))?;
    let san =
        cert.subject_alternative_name().map_err(|e| IdentityError::Malformed(format!("bad subjectAltName: {e}")))?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                })
                .filter(|u| ClusterIdentity::is_kubechat_uri(u))
                .collect()
        })
        .unwrap_or_default())
}

/// Reads a relay's id from the single `spiffe://kubechat/relay/<id>` URI SAN
/// of its verified certificate.
pub fn relay_identity(leaf: &CertificateDer<'_>) -> Result<String, IdentityError> {
    match kubechat_uris(leaf)?.as_slice() {
        [one] => {
            let id = one
                .strip_prefix(&relay_spiffe_uri(""))
                .filter(|id| kubechat_protocol::identity::is_dns_label(id))
                .ok_or_else(|| IdentityError::Malformed(one.clone()))?;
            Ok(id.to_string())
        }
        other => Err(IdentityError::Count(other.len())),
    }
}

/// The certificate's serial number as lower-case hex (how revocation lists
/// name individual certificates); `None` if it does not parse.
pub fn certificate_serial(leaf: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
}

/// The certificate's `notAfter`, in Unix seconds; `None` if it does not parse.
pub fn certificate_not_after(leaf: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Names the reason of a failed TLS handshake from rustls's error text when
/// it is specific, else from the alert it produced; for metrics labels and
/// logs.
pub fn handshake_failure_reason(alert: Option<u8>, detail: &str) -> &'static str {
    const BY_DETAIL: &[(&str, &str)] = &[
        ("Expired", "certificate_expired"),
        ("NotValidYet", "certificate_not_yet_valid"),
        ("UnknownIssuer", "unknown_ca"),
        ("BadSignature", "bad_signature"),
        ("Revoked", "certificate_revoked"),
        ("NoCertificatesPresented", "certificate_required"),
        ("InvalidPurpose", "wrong_key_usage"),
        ("NotValidForName", "wrong_name"),
    ];
    if let Some((_, label)) = BY_DETAIL.iter().find(|(needle, _)| detail.contains(needle)) {
        return label;
    }
    use rustls::AlertDescription as A;
    match alert.map(A::from) {
        Some(A::CertificateExpired) => "certificate_expired",
        Some(A::UnknownCA) => "unknown_ca",
        Some(A::BadCertificate) => "bad_certificate",
        Some(A::CertificateRequired) => "certificate_required",
        Some(A::CertificateRevoked) => "certificate_revoked",
        Some(A::NoApplicationProtocol) => "no_application_protocol",
        Some(A::HandshakeFailure) => "handshake_failure",
        Some(A::DecryptError) => "decrypt_error",
        Some(_) => "tls_alert",
        None => "other",
    }
}
