//! The agent's credential bundle: its key and certificate, the relay CA it
//! pins, the relays and grant keys it was given and its control plane; and
//! when the certificate is due for renewal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubechat_transport::tls::{self, Identity};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a credential bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A required part is missing or empty.
    #[error("the credentials have no {0}")]
    Missing(&'static str),
    /// A part does not parse, or the key does not match the certificate.
    #[error("the credentials are unusable: {0}")]
    Invalid(String),
    /// The certificate's validity has ended.
    #[error("the certificate expired {ago}s ago (notAfter {not_after}, Unix seconds)")]
    Expired {
        /// `notAfter`, Unix seconds.
        not_after: i64,
        /// Seconds since then.
        ago: i64,
    },
}

/// Everything enrollment (or a renewal) gives the agent. `Debug` never prints
/// the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The agent's private key (PEM). It never leaves the cluster.
    pub key_pem: String,
    /// The agent's certificate (PEM, leaf first).
    pub cert_pem: String,
    /// The relay CA to pin (PEM).
    pub relay_ca_pem: String,
    /// Relay endpoints, `host:port`.
    pub relays: Vec<String>,
    /// Grant keys to trust, `key-id=base64url-ed25519-public-key`.
    pub grant_keys: Vec<String>,
    /// The cluster grant key, `key-id=base64url-key`: a secret shared with
    /// the control plane only, by which the agent checks grants without
    /// their signature (see `kubechat_protocol::grant`). Stored next to
    /// the private key, never in `enrollment.json`.
    pub cluster_grant_key: Option<String>,
    /// `spiffe://kubechat/tenant/<t>/cluster/<c>`.
    pub identity: String,
    /// When the certificate expires, Unix seconds.
    pub expires_at: i64,
    /// The control plane that issued the certificate (and renews it).
    pub control_plane_url: Option<String>,
    /// The CA bundle trusted for the control plane (PEM), when not the
    /// system's.
    pub control_plane_ca: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("relays", &self.relays)
            .field("grant_keys", &self.grant_keys.len())
            .field("cluster_grant_key", &self.cluster_grant_key.as_ref().map(|_| "***"))
            .field("expires_at", &self.expires_at)
            .field("control_plane_url", &self.control_plane_url)
            .field("key_pem", &"***")
            .finish_non_exhaustive()
    }
}

/// `enrollment.json`: the bundle without its PEM parts.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Summary {
    #[serde(default)]
    pub(crate) identity: String,
    #[serde(default)]
    pub(crate) relays: Vec<String>,
    #[serde(default)]
    pub(crate) grant_keys: Vec<String>,
    #[serde(default)]
    pub(crate) expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) control_plane_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) control_plane_ca: Option<String>,
}

/// When a certificate is valid, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertValidity {
    /// `notBefore`.
    pub not_before: i64,
    /// `notAfter`.
    pub not_after: i64,
}

impl CertValidity {
    /// Reads the validity of a certificate.
    pub fn of(leaf: &CertificateDer<'_>) -> Result<Self, CredentialsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| CredentialsError::Invalid(format!("unparsable certificate: {e}")))?;
        let v = cert.validity();
        Ok(Self { not_before: v.not_before.timestamp(), not_after: v.not_after.timestamp() })
    }

    /// When renewal is due: `notBefore + fraction × (notAfter − notBefore)`.
    pub fn renew_at(&self, fraction: f64) -> i64 {
        let life = (self.not_after - self.not_before).max(0);
        self.not_before + (life as f64 * fraction.clamp(0.0, 1.0)) as i64
    }

    /// How long from `now` until renewal is due (zero if it already is).
    pub fn until_renewal(&self, fraction: f64, now: i64) -> Duration {
        Duration::from_secs(u64::try_from(self.renew_at(fraction) - now).unwrap_or(0))
    }
}

/// The wall clock, Unix seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Credentials {
    /// Assembles a bundle from its stored parts.
    pub(crate) fn from_parts(
        key_pem: String,
        cert_pem: String,
        relay_ca_pem: String,
        cluster_grant_key: Option<String>,
        s: Summary,
    ) -> Self {
        let mut c = Self {
            key_pem,
            cert_pem,
            relay_ca_pem,
            relays: s.relays,
            grant_keys: s.grant_keys,
            cluster_grant_key: cluster_grant_key.filter(|k| !k.trim().is_empty()),
            identity: s.identity,
            expires_at: s.expires_at.unwrap_or_default(),
            control_plane_url: s.control_plane_url,
            control_plane_ca: s.control_plane_ca,
        };
        c.fill_from_certificate();
        c
    }

    /// The parts `enrollment.json` holds.
    pub(crate) fn summary(&self) -> Summary {
        Summary {
            identity: self.identity.clone(),
            relays: self.relays.clone(),
            grant_keys: self.grant_keys.clone(),
            expires_at: Some(self.expires_at),
            control_plane_url: self.control_plane_url.clone(),
            control_plane_ca: self.control_plane_ca.clone(),
        }
    }

    /// The control plane's answer to an enrollment or a renewal (`201`),
    /// for the key the CSR was made from. Relays, the relay CA, grant keys
    /// and the cluster grant key an answer leaves out are kept from
    /// `previous`; a renewal must name the same identity as `previous`.
    pub(crate) fn from_answer(
        key_pem: String,
        answer: &Value,
        previous: Option<&Self>,
        control_plane_url: &str,
        control_plane_ca: Option<&str>,
    ) -> Result<Self, CredentialsError> {
        let text = |k: &str| answer.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let list = |k: &str| -> Vec<String> {
            answer
                .get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let or_previous = |v: Vec<String>, f: fn(&Self) -> &Vec<String>| match previous {
            Some(p) if v.is_empty() => f(p).clone(),
            _ => v,
        };
        let mut relay_ca_pem = text("relayCa");
        if relay_ca_pem.trim().is_empty() {
            relay_ca_pem = previous.map(|p| p.relay_ca_pem.clone()).unwrap_or_default();
        }
        let mut c = Self {
            key_pem,
            cert_pem: text("certificate"),
            relay_ca_pem,
            relays: or_previous(list("relays"), |p| &p.relays),
            grant_keys: or_previous(list("grantKeys"), |p| &p.grant_keys),
            cluster_grant_key: Some(text("clusterGrantKey"))
                .filter(|k| !k.trim().is_empty())
                .or_else(|| previous.and_then(|p| p.cluster_grant_key.clone())),
            identity: text("identity"),
            expires_at: answer.get("expiresAt").and_then(Value::as_i64).unwrap_or_default(),
            control_plane_url: Some(control_plane_url.to_string()),
            control_plane_ca: control_plane_ca.map(str::to_string),
        };
        if c.cert_pem.trim().is_empty() {
            return Err(CredentialsError::Missing("certificate in the control plane's answer"));
        }
        c.fill_from_certificate();
        if let Some(p) = previous {
            let (was, now) = (p.cluster_uri(), c.cluster_uri());
            if was.is_some() && was != now {
                return Err(CredentialsError::Invalid(format!(
                    "the renewed certificate names {}, not {}",
                    now.unwrap_or_else(|| "no kubechat identity".into()),
                    was.unwrap_or_default()
                )));
            }
        }
        Ok(c)
    }

    /// The identity and expiry from the certificate itself, where the
    /// stored summary lacks them.
    fn fill_from_certificate(&mut self) {
        let Ok(chain) = tls::parse_ca_pem(&self.cert_pem) else { return };
        let Some(leaf) = chain.first() else { return };
        if let Some(not_after) = tls::certificate_not_after(leaf) {
            self.expires_at = not_after;
        }
        if self.identity.is_empty()
            && let Ok(id) = tls::cluster_identity(leaf)
        {
            self.identity = id.spiffe_uri();
        }
    }

    fn cluster_uri(&self) -> Option<String> {
        let chain = tls::parse_ca_pem(&self.cert_pem).ok()?;
        tls::cluster_identity(chain.first()?).ok().map(|id| id.spiffe_uri())
    }

    /// The certificate and key as a TLS identity.
    pub fn tls_identity(&self) -> Result<Identity, CredentialsError> {
        if self.key_pem.trim().is_empty() {
            return Err(CredentialsError::Missing("private key"));
        }
        if self.cert_pem.trim().is_empty() {
            return Err(CredentialsError::Missing("certificate"));
        }
        // The error names the part, never its contents.
        Identity::from_pem(&self.cert_pem, &self.key_pem).map_err(|e| CredentialsError::Invalid(e.to_string()))
    }

    /// The relay CA bundle.
    pub fn relay_ca(&self) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
        if self.relay_ca_pem.trim().is_empty() {
            return Err(CredentialsError::Missing("relay CA"));
        }
        tls::parse_ca_pem(&self.relay_ca_pem).map_err(|e| CredentialsError::Invalid(format!("relay CA: {e}")))
    }

    /// Checks that the bundle can be used at `now` (Unix seconds): the key
    /// matches the certificate, the relay CA parses, the certificate has
    /// not expired. Returns the certificate's validity.
    pub fn check(&self, now: i64) -> Result<CertValidity, CredentialsError> {
        let id = self.tls_identity()?;
        let relay_ca = self.relay_ca()?;
        // Building the tunnel's TLS configuration checks that key and
        // certificate belong together.
        tls::tunnel_client_config(&id, &relay_ca).map_err(|e| CredentialsError::Invalid(e.to_string()))?;
        let leaf = id.chain.first().ok_or(CredentialsError::Missing("certificate"))?;
        let validity = CertValidity::of(leaf)?;
        if now >= validity.not_after {
            return Err(CredentialsError::Expired { not_after: validity.not_after, ago: now - validity.not_after });
        }
        Ok(validity)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kubechat_protocol::ClusterIdentity;
    use kubechat_transport::pki::{DevPki, Validity};

    /// A usable bundle for acme/prod from a fresh PKI.
    pub(crate) fn bundle(pki: &DevPki, life: Duration) -> Credentials {
        let id = ClusterIdentity::new("acme", "prod").expect("identity");
        let cert = pki.agent_cert(&id, Validity::for_duration(life)).expect("cert");
        Credentials::from_parts(
            cert.key_pem,
            cert.cert_pem,
            pki.relay_ca.cert_pem().to_string(),
            Some("cp-1=BBBB".into()),
            Summary {
                relays: vec!["relay.example:7443".into()],
                grant_keys: vec!["cp-1=AAAA".into()],
                control_plane_url: Some("https://cp.example".into()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_life() {
        let v = CertValidity { not_before: 1_000, not_after: 4_000 };
        assert_eq!(v.renew_at(2.0 / 3.0), 3_000);
        assert_eq!(v.renew_at(0.5), 2_500);
        assert_eq!(v.until_renewal(2.0 / 3.0, 1_000), Duration::from_secs(2_000));
        assert_eq!(v.until_renewal(2.0 / 3.0, 2_999), Duration::from_secs(1));
        // Due already: no waiting, never a negative duration.
        assert_eq!(v.until_renewal(2.0 / 3.0, 3_500), Duration::ZERO);
        assert_eq!(v.until_renewal(2.0 / 3.0, 9_000), Duration::ZERO);
        // Out-of-range fractions and inverted validity stay inside it.
        assert_eq!(v.renew_at(7.0), 4_000);
        assert_eq!(CertValidity { not_before: 10, not_after: 5 }.renew_at(2.0 / 3.0), 10);
    }

    #[test]
    fn a_real_certificate_is_renewed_two_thirds_into_its_life() {
        let pki = DevPki::generate().expect("pki");
        let c = bundle(&pki, Duration::from_secs(2 * 3600));
        let v = c.check(unix_now()).expect("usable");
        // Validity::for_duration starts an hour ago: three hours in all.
        assert_eq!(v.not_after - v.not_before, 3 * 3600);
        assert_eq!(v.renew_at(2.0 / 3.0), v.not_before + 2 * 3600);
        assert_eq!(c.expires_at, v.not_after);
        assert_eq!(c.identity, "spiffe://kubechat/tenant/acme/cluster/prod");
    }

    #[test]
    fn check_refuses_expired_mismatched_and_missing_parts() {
        let pki = DevPki::generate().expect("pki");
        let c = bundle(&pki, Duration::from_secs(3600));
        let later = c.expires_at + 10;
        assert!(matches!(c.check(later), Err(CredentialsError::Expired { ago: 10, .. })));
        let other = bundle(&pki, Duration::from_secs(3600));
        let mismatched = Credentials { key_pem: other.key_pem.clone(), ..c.clone() };
        let err = mismatched.check(unix_now()).expect_err("mismatched key");
        assert!(matches!(err, CredentialsError::Invalid(_)), "{err}");
        assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
        let no_ca = Credentials { relay_ca_pem: String::new(), ..c.clone() };
        assert!(matches!(no_ca.check(unix_now()), Err(CredentialsError::Missing("relay CA"))));
        assert!(!format!("{c:?}").contains(&c.key_pem));
    }

    #[test]
    fn a_renewal_answer_keeps_what_it_leaves_out_and_must_keep_the_identity() {
        let pki = DevPki::generate().expect("pki");
        let old = bundle(&pki, Duration::from_secs(3600));
        let new = bundle(&pki, Duration::from_secs(7200));
        let answer = serde_json::json!({"certificate": new.cert_pem, "identity": new.identity, "expiresAt": 5});
        let renewed =
            Credentials::from_answer(new.key_pem.clone(), &answer, Some(&old), "https://cp", None).expect("renewed");
        assert_eq!(renewed.relays, old.relays);
        assert_eq!(renewed.grant_keys, old.grant_keys);
        assert_eq!(renewed.relay_ca_pem, old.relay_ca_pem);
        // The certificate's own notAfter wins over the answer's.
        assert_eq!(renewed.expires_at, new.expires_at);
        renewed.check(unix_now()).expect("usable");

        let id = ClusterIdentity::new("acme", "staging").expect("identity");
        let other = pki.agent_cert(&id, Validity::for_duration(Duration::from_secs(60))).expect("cert");
        let answer = serde_json::json!({"certificate": other.cert_pem});
        let err = Credentials::from_answer(other.key_pem, &answer, Some(&old), "https://cp", None).expect_err("other");
        assert!(err.to_string().contains("cluster/staging"), "{err}");
        let err = Credentials::from_answer(String::new(), &serde_json::json!({}), None, "https://cp", None)
            .expect_err("no certificate");
        assert!(matches!(err, CredentialsError::Missing(_)));
    }
}
