//! Certificate authorities and certificates (rcgen), for the `dev-certs`
//! subcommand and for tests, which mint a fresh set each time.
//!
//! Three CAs, as in production: the **agent CA** signs agent client
//! certificates (URI SAN `spiffe://kubechat/tenant/<t>/cluster/<c>`), the
//! **relay CA** signs relay server certificates (agents pin it), and the
//! **internal CA** signs the control plane's client certificate for the
//! relay's internal listener.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use kubechat_protocol::ClusterIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::OffsetDateTime;

use crate::tls::{Identity, TlsError};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The result could not be loaded back.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Files could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from an hour ago for `life`.
    pub fn for_duration(life: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self { not_before: now - time::Duration::hours(1), not_after: now + life }
    }

    /// Expired a day ago (for tests of refusal).
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self { not_before: now - time::Duration::days(2), not_after: now - time::Duration::days(1) }
    }
}

/// A PEM certificate and its PEM private key. `Debug` hides the key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate (leaf only).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("key_pem", &"***").finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// As a rustls identity.
    pub fn identity(&self) -> Result<Identity, TlsError> {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Writes `<stem>.crt` and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(), PkiError> {
        write_file(&dir.join(format!("{stem}.crt")), &self.cert_pem)?;
        write_file(&dir.join(format!("{stem}.key")), &self.key_pem)
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(|source| PkiError::Write { path: path.display().to_string(), source })
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Default)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// TLS server authentication.
    pub server: bool,
    /// TLS client authentication.
    pub client: bool,
}

/// A certificate authority that can issue leaf certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A new self-signed CA valid for ten years.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "KubeChat");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let v = Validity::for_duration(Duration::from_secs(10 * 365 * 24 * 3600));
        params.not_before = v.not_before;
        params.not_after = v.not_after;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), key_pem: key.serialize_pem(), issuer: Issuer::new(params, key) })
    }

    /// Loads a CA from its PEM certificate and PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self { issuer, cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() })
    }

    /// A second handle on the same CA (certificate and key).
    pub fn try_clone(&self) -> Result<Self, PkiError> {
        Self::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs an agent's certificate signing request for `identity`. Only the
    /// CSR's public key is used (its signature proves possession); names,
    /// extensions and validity come from here, whatever the CSR asked for.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        identity: &ClusterIdentity,
        validity: Validity,
    ) -> Result<String, PkiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("kubechat-agent {identity}"));
        params.distinguished_name.push(DnType::OrganizationName, "KubeChat");
        params.subject_alt_names = vec![SanType::URI(identity.spiffe_uri().as_str().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// Issues a leaf certificate with a fresh key.
    pub fn issue(&self, spec: &LeafSpec, validity: Validity) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name.push(DnType::OrganizationName, "KubeChat");
        for d in &spec.dns_names {
            params.subject_alt_names.push(SanType::DnsName(d.as_str().try_into()?));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for u in &spec.uris {
            params.subject_alt_names.push(SanType::URI(u.as_str().try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Checks that `csr_pem` is a well-formed, correctly self-signed CSR (what
/// [`CertAuthority::sign_agent_csr`] needs), without signing anything.
pub fn check_csr(csr_pem: &str) -> Result<(), PkiError> {
    rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
    Ok(())
}

/// A random positive 128-bit serial: every certificate gets its own, so one
/// can be revoked without touching its renewal.
fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system random source works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// A fresh key and a certificate signing request (PEM) for it, as an agent
/// makes them: the key never leaves the caller. `uri` is what the CSR asks
/// for (the signer decides what the certificate says).
pub fn new_csr(uri: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "kubechat-agent");
    params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// The three CAs of a KubeChat deployment.
#[derive(Debug)]
pub struct DevPki {
    /// Signs agent client certificates.
    pub agent_ca: CertAuthority,
    /// Signs relay server certificates; agents and the control plane pin it.
    pub relay_ca: CertAuthority,
    /// Signs the control plane's client certificate for relays.
    pub internal_ca: CertAuthority,
}

impl DevPki {
    /// Fresh CAs.
    pub fn generate() -> Result<Self, PkiError> {
        Ok(Self {
            agent_ca: CertAuthority::new("KubeChat agent CA")?,
            relay_ca: CertAuthority::new("KubeChat relay CA")?,
            internal_ca: CertAuthority::new("KubeChat internal CA")?,
        })
    }

    /// A relay certificate for `names` (DNS names or IP addresses), used for
    /// the tunnel and internal listeners and, as a client certificate naming
    /// `spiffe://kubechat/relay/<relay_id>`, for reporting presence to the
    /// control plane.
    pub fn relay_cert(&self, relay_id: &str, names: &[&str]) -> Result<IssuedCert, PkiError> {
        let mut spec = LeafSpec {
            common_name: format!("kubechat-relay {relay_id}"),
            uris: vec![crate::tls::relay_spiffe_uri(relay_id)],
            server: true,
            client: true,
            ..Default::default()
        };
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(ip) => spec.ips.push(ip),
                Err(_) => spec.dns_names.push((*n).to_string()),
            }
        }
        self.relay_ca.issue(&spec, Validity::for_duration(Duration::from_secs(365 * 24 * 3600)))
    }

    /// An agent client certificate naming `id`.
    pub fn agent_cert(&self, id: &ClusterIdentity, validity: Validity) -> Result<IssuedCert, PkiError> {
        let spec = LeafSpec {
            common_name: format!("kubechat-agent {id}"),
            uris: vec![id.spiffe_uri()],
            client: true,
            ..Default::default()
        };
        self.agent_ca.issue(&spec, validity)
    }

    /// The control plane's client certificate for relays' internal listeners.
    pub fn internal_client_cert(&self, name: &str) -> Result<IssuedCert, PkiError> {
        let spec = LeafSpec { common_name: name.into(), client: true, ..Default::default() };
        self.internal_ca.issue(&spec, Validity::for_duration(Duration::from_secs(365 * 24 * 3600)))
    }

    /// Writes a complete development set into `dir`: the CA certificates,
    /// `relay.{crt,key}` (for `names`), `agent.{crt,key}` (for `agent`) and
    /// `internal-client.{crt,key}`, and the agent CA's key (`agent-ca.key`,
    /// development only, so more agent certificates can be issued until
    /// enrollment exists). The other CA keys are not written.
    pub fn write_dev_set(
        &self,
        dir: &Path,
        relay_id: &str,
        names: &[&str],
        agent: &ClusterIdentity,
    ) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.display().to_string(), source })?;
        write_file(&dir.join("agent-ca.crt"), self.agent_ca.cert_pem())?;
        write_file(&dir.join("agent-ca.key"), &self.agent_ca.key_pem)?;
        write_file(&dir.join("relay-ca.crt"), self.relay_ca.cert_pem())?;
        write_file(&dir.join("internal-ca.crt"), self.internal_ca.cert_pem())?;
        self.relay_cert(relay_id, names)?.write(dir, "relay")?;
        self.agent_cert(agent, Validity::for_duration(Duration::from_secs(30 * 24 * 3600)))?.write(dir, "agent")?;
        self.internal_client_cert("kubechat-control-plane")?.write(dir, "internal-client")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls;

    #[test]
    fn agent_cert_carries_its_identity() {
        let pki = DevPki::generate().expect("pki");
        let id = ClusterIdentity::new("acme", "prod").expect("valid");
        let cert = pki.agent_cert(&id, Validity::for_duration(Duration::from_secs(60))).expect("cert");
        let identity = cert.identity().expect("loads");
        assert_eq!(tls::cluster_identity(&identity.chain[0]).expect("has identity"), id);
    }

    #[test]
    fn signed_csr_names_only_the_given_identity() {
        let pki = DevPki::generate().expect("pki");
        let (key, csr) = new_csr("spiffe://kubechat/tenant/evil/cluster/other").expect("csr");
        let id = ClusterIdentity::new("acme", "prod").expect("valid");
        let cert =
            pki.agent_ca.sign_agent_csr(&csr, &id, Validity::for_duration(Duration::from_secs(60))).expect("signed");
        let identity = Identity::from_pem(&cert, &key).expect("loads");
        assert_eq!(tls::cluster_identity(&identity.chain[0]).expect("identity"), id);
        assert!(
            pki.agent_ca.sign_agent_csr("not a csr", &id, Validity::for_duration(Duration::from_secs(60))).is_err()
        );
    }

    #[test]
    fn cert_without_identity_is_rejected() {
        let pki = DevPki::generate().expect("pki");
        let cert = pki.relay_cert("relay-0", &["localhost"]).expect("cert").identity().expect("loads");
        assert!(tls::cluster_identity(&cert.chain[0]).is_err());
    }

    #[test]
    fn relay_cert_names_its_relay_and_serials_differ() {
        let pki = DevPki::generate().expect("pki");
        let a = pki.relay_cert("eu-1", &["localhost"]).expect("cert").identity().expect("loads");
        let b = pki.relay_cert("eu-1", &["localhost"]).expect("cert").identity().expect("loads");
        assert_eq!(tls::relay_identity(&a.chain[0]).expect("relay id"), "eu-1");
        assert_ne!(tls::certificate_serial(&a.chain[0]), tls::certificate_serial(&b.chain[0]));
        let id = ClusterIdentity::new("acme", "prod").expect("valid");
        let agent = pki.agent_cert(&id, Validity::for_duration(Duration::from_secs(60))).expect("cert");
        assert!(tls::relay_identity(&agent.identity().expect("loads").chain[0]).is_err());
    }

    #[test]
    fn debug_never_prints_keys() {
        let pki = DevPki::generate().expect("pki");
        let cert = pki.internal_client_cert("x").expect("cert");
        assert!(!format!("{cert:?}").contains("PRIVATE"));
        assert!(!format!("{:?}", cert.identity().expect("loads")).contains("PRIVATE"));
    }
}
