//! A fresh set of CAs and certificates for each test.

use std::path::Path;
use std::time::Duration;

use kubechat_protocol::ClusterIdentity;
use kubechat_transport::pki::{DevPki, IssuedCert, Validity};
use kubechat_transport::tls::{self, Identity};
use rustls_pki_types::CertificateDer;

/// The three CAs of a test deployment.
pub struct TestPki {
    /// The underlying CA set.
    pub pki: DevPki,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// Fresh CAs.
    pub fn new() -> Self {
        Self { pki: DevPki::generate().expect("generate test CAs") }
    }

    /// The certificate of relay `relay-0` for 127.0.0.1 and localhost.
    pub fn relay_cert(&self) -> IssuedCert {
        self.relay_cert_for("relay-0")
    }

    /// The certificate of relay `relay_id` for 127.0.0.1 and localhost.
    pub fn relay_cert_for(&self, relay_id: &str) -> IssuedCert {
        self.pki.relay_cert(relay_id, &["127.0.0.1", "localhost"]).expect("relay cert")
    }

    /// The relay's identity for 127.0.0.1 and localhost.
    pub fn relay_identity(&self) -> Identity {
        self.relay_cert().identity().expect("relay identity")
    }

    /// A valid agent certificate for `tenant`/`cluster`.
    pub fn agent_cert(&self, tenant: &str, cluster: &str) -> IssuedCert {
        self.agent_cert_valid(tenant, cluster, Validity::for_duration(Duration::from_secs(3600)))
    }

    /// An agent certificate with the given validity.
    pub fn agent_cert_valid(&self, tenant: &str, cluster: &str, validity: Validity) -> IssuedCert {
        let id = ClusterIdentity::new(tenant, cluster).expect("valid identity");
        self.pki.agent_cert(&id, validity).expect("agent cert")
    }

    /// The control plane's client certificate.
    pub fn internal_client(&self) -> Identity {
        self.pki.internal_client_cert("test-control-plane").expect("internal cert").identity().expect("identity")
    }

    /// The agent CA.
    pub fn agent_ca(&self) -> Vec<CertificateDer<'static>> {
        tls::parse_ca_pem(self.pki.agent_ca.cert_pem()).expect("agent ca")
    }

    /// The relay CA.
    pub fn relay_ca(&self) -> Vec<CertificateDer<'static>> {
        tls::parse_ca_pem(self.pki.relay_ca.cert_pem()).expect("relay ca")
    }

    /// The internal CA.
    pub fn internal_ca(&self) -> Vec<CertificateDer<'static>> {
        tls::parse_ca_pem(self.pki.internal_ca.cert_pem()).expect("internal ca")
    }

    /// Writes the relay's files (for running the relay binary) into `dir`.
    pub fn write_relay_files(&self, dir: &Path) {
        self.relay_cert().write(dir, "relay").expect("write relay cert");
        std::fs::write(dir.join("agent-ca.crt"), self.pki.agent_ca.cert_pem()).expect("write");
        std::fs::write(dir.join("internal-ca.crt"), self.pki.internal_ca.cert_pem()).expect("write");
    }
}
