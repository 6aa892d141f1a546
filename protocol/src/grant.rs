//! Per-request grants: the control plane signs (Ed25519) exactly what one
//! request may do — tenant, cluster, user, groups, method, path, for at most
//! [`MAX_VALIDITY_MS`] — and the relay and the agent each verify it before
//! the request goes further. The relay checks the control plane's HMAC under
//! that relay's gate key ([`GrantSigner::gate_key`],
//! [`GrantVerifier::verify_gated`]), else the signature. The agent checks
//! the grant's cluster MAC under its cluster grant key
//! ([`GrantSigner::cluster_key`], given to the cluster's agents at
//! enrollment and renewal and never to a relay), else the signature. Either
//! MAC costs about a microsecond against tens for a signature check, and
//! neither key lets a relay make a grant the agent accepts. Sans-IO:
//! callers pass the time.
//!
//! On the wire (the `kubechat-grant` header, and `StreamOpen.grant`) a grant
//! is a protobuf [`SignedGrant`]; in headers it is base64url without padding.

use std::collections::HashMap;

use base64::Engine;
use prost::Message;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::messages::{Grant, SignedGrant};

/// Longest a grant may be valid: 60 s.
pub const MAX_VALIDITY_MS: u64 = 60_000;
/// Clock skew tolerated between the control plane and verifiers.
pub const CLOCK_SKEW_MS: u64 = 5_000;
/// Header carrying the grant from the control plane to the relay.
pub const HEADER: &str = "kubechat-grant";
/// Header carrying the relay gate's MAC of the grant (see [`gate_mac`]).
pub const GATE_HEADER: &str = "kubechat-grant-gate";
/// Header on a relay's 503 for a grant without its signature that it could
/// not pass or route (no gate key of its key id, no agent holding its
/// cluster key): the request went no further, and the control plane sends it
/// again with its signature ([`GrantSigner::sign_again`]).
pub const RESEND_SIGNED_HEADER: &str = "kubechat-grant-resend-signed";
/// A relay's gate key, ready to check MACs with.
pub type GateKey = ring::hmac::Key;
/// Domain of the key the relay gate keys are derived from.
const GATE_DOMAIN: &[u8] = b"kubechat relay gate v1\0";
/// Domain of the key the cluster grant keys are derived from.
const CLUSTER_DOMAIN: &[u8] = b"kubechat cluster grant key v1\0";

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The request carries no grant.
    #[error("the request carries no grant")]
    Missing,
    /// Not base64 / protobuf.
    #[error("the grant is malformed")]
    Malformed,
    /// Signed with a key this verifier does not know.
    #[error("the grant is signed with unknown key {0:?}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the grant's signature is invalid")]
    BadSignature,
    /// No signature, and no MAC this verifier holds a key for verifies
    /// (see [`GrantSigner::sign_macs_only`]).
    #[error("the grant carries no signature and no MAC this hop can check")]
    Unsigned,
    /// Past its expiry.
    #[error("the grant expired {0} ms ago")]
    Expired(u64),
    /// Issued in the future (beyond skew) or valid longer than allowed.
    #[error("the grant's validity window is invalid")]
    BadWindow,
    /// For another cluster than the one it arrived on.
    #[error("the grant is for cluster {granted:?}, not {actual:?}")]
    WrongCluster {
        /// Cluster in the grant.
        granted: String,
        /// Cluster of the tunnel.
        actual: String,
    },
    /// For another method or path.
    #[error("the grant does not cover {method} {path}")]
    WrongRequest {
        /// Method of the request.
        method: String,
        /// Path of the request.
        path: String,
    },
}

/// Parses a `key-id=base64url-public-key` setting (as given to
/// `--grant-key`) into a key id and a raw 32-byte Ed25519 public key.
pub fn parse_key_spec(spec: &str) -> Result<(String, Vec<u8>), String> {
    let (id, key) =
        spec.split_once('=').ok_or_else(|| format!("grant key {spec:?} is not key-id=base64url-public-key"))?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key.trim())
        .map_err(|_| format!("grant key {id:?} is not base64url (no padding)"))?;
    if id.trim().is_empty() || raw.len() != 32 {
        return Err(format!("grant key {id:?} must name an id and a 32-byte Ed25519 public key"));
    }
    Ok((id.trim().to_string(), raw))
}

/// Encodes a signed grant for the `kubechat-grant` header.
pub fn to_header(signed: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed)
}

/// Decodes the `kubechat-grant` header.
pub fn from_header(value: &str) -> Result<Vec<u8>, GrantError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim()).map_err(|_| GrantError::Malformed)
}

/// Signs grants with one Ed25519 key.
pub struct GrantSigner {
    key_id: String,
    /// ed25519-dalek's key (precomputed basepoint tables): a fifth faster
    /// than ring's signing on this project's hosts, the same signatures.
    key: ed25519_dalek::SigningKey,
    /// Derives the relay gate keys ([`GrantSigner::gate_key`]).
    gate: ring::hmac::Key,
    /// Derives the cluster grant keys ([`GrantSigner::cluster_key`]).
    cluster: ring::hmac::Key,
}

impl std::fmt::Debug for GrantSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantSigner").field("key_id", &self.key_id).field("key", &"***").finish()
    }
}

impl GrantSigner {
    /// A signer from a PKCS#8 Ed25519 private key.
    pub fn from_pkcs8(key_id: &str, pkcs8: &[u8]) -> Result<Self, GrantError> {
        // ring checks the document (v2, the public key matches the seed);
        // every document it accepts has the seed at one place, and the key
        // made from it must give the same public key.
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| GrantError::Malformed)?;
        let seed: [u8; 32] = match pkcs8.get(12..48) {
            Some([0x04, 0x22, 0x04, 0x20, rest @ ..]) => rest.try_into().map_err(|_| GrantError::Malformed)?,
            _ => return Err(GrantError::Malformed),
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes() != pair.public_key().as_ref() {
            return Err(GrantError::Malformed);
        }
        let derive = |domain: &[u8]| {
            let mut seed = ring::digest::Context::new(&ring::digest::SHA256);
            seed.update(domain);
            seed.update(pkcs8);
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.finish().as_ref())
        };
        Ok(Self { key_id: key_id.to_string(), key, gate: derive(GATE_DOMAIN), cluster: derive(CLUSTER_DOMAIN) })
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte public key, for verifiers.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.verifying_key().as_bytes().to_vec()
    }

    /// Signs arbitrary bytes with the same key (audit checkpoints). Callers
    /// prefix a domain string so such a signature can never pass for a grant.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        ed25519_dalek::Signer::sign(&self.key, message).to_bytes().to_vec()
    }

    /// Verifies a signature made by [`GrantSigner::sign_bytes`] with this key.
    pub fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|signature| self.key.verifying_key().verify_strict(message, &signature).is_ok())
    }

    /// The gate key of relay `relay_id`: a secret only that relay (told in
    /// its presence answers) and the holders of this private key can
    /// derive, so a gate MAC ([`gate_mac`]) under it proves the grant came
    /// from the control plane to that relay. Every replica with the same
    /// key derives the same gate keys.
    pub fn gate_key(&self, relay_id: &str) -> [u8; 32] {
        let tag = ring::hmac::sign(&self.gate, relay_id.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        key
    }

    /// The cluster grant key of `cluster` in `tenant`: a secret the
    /// control plane gives that cluster's agents when it issues their
    /// certificates (enrollment and renewal, over TLS straight to the
    /// control plane), never to a relay. Every replica with the same
    /// private key derives the same one; it changes with the key.
    pub fn cluster_key(&self, tenant: &str, cluster: &str) -> [u8; 32] {
        // The tenant's length first: no two (tenant, cluster) pairs give
        // the same input.
        let mut ctx = ring::hmac::Context::with_key(&self.cluster);
        ctx.update(&(tenant.len() as u64).to_be_bytes());
        ctx.update(tenant.as_bytes());
        ctx.update(cluster.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.sign().as_ref());
        key
    }

    /// [`GrantSigner::cluster_key`] as the agent stores and
    /// [`GrantVerifier::with_cluster_key`] takes it:
    /// `key-id=base64url-key`. A secret: never log it.
    pub fn cluster_key_spec(&self, tenant: &str, cluster: &str) -> String {
        format!("{}={}", self.key_id, to_header(&self.cluster_key(tenant, cluster)))
    }

    /// Signs `grant` (its `key_id` is set to this signer's) and MACs it
    /// under its cluster's grant key.
    pub fn sign(&self, grant: Grant) -> Vec<u8> {
        self.seal(grant, true)
    }

    /// Like [`GrantSigner::sign`] but without the Ed25519 signature (about
    /// 19 µs of a kube request's CPU here): only the cluster MAC. For a
    /// grant that goes only through a relay holding this signer's gate key
    /// (which passes it by its gate MAC) to agents holding this key id's
    /// cluster grant key (which pass it by its cluster MAC). Anywhere else
    /// it is refused as [`GrantError::Unsigned`], never passed: leaving the
    /// signature out can cost availability, not safety.
    pub fn sign_macs_only(&self, grant: Grant) -> Vec<u8> {
        self.seal(grant, false)
    }

    /// The grant in `sealed` (as this signer sealed it) again, with its
    /// signature; `None` if it is not a grant of this signer's key.
    pub fn sign_again(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let s = SignedGrant::decode(sealed).ok()?;
        let grant = Grant::decode(s.grant).ok()?;
        (grant.key_id == self.key_id).then(|| self.sign(grant))
    }

    fn seal(&self, mut grant: Grant, with_signature: bool) -> Vec<u8> {
        grant.key_id = self.key_id.clone();
        let bytes = grant.encode_to_vec();
        let signature = if with_signature {
            ed25519_dalek::Signer::sign(&self.key, &bytes).to_bytes().to_vec()
        } else {
            Vec::new()
        };
        let cluster_key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.cluster_key(&grant.tenant, &grant.cluster));
        let cluster_mac = ring::hmac::sign(&cluster_key, &bytes).as_ref().to_vec();
        SignedGrant { grant: bytes.into(), signature: signature.into(), cluster_mac: cluster_mac.into() }
            .encode_to_vec()
    }
}

/// Whether the encoded grant `signed` carries an Ed25519 signature (see
/// [`GrantSigner::sign_macs_only`]); `false` for anything undecodable.
pub fn is_signed(signed: &[u8]) -> bool {
    SignedGrant::decode(signed).is_ok_and(|s| !s.signature.is_empty())
}

/// What a verifier expects a grant to cover.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The cluster of the tunnel the request arrived on (from its certificate).
    pub cluster: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// The request's path and query, as sent to the API server.
    pub path: &'a str,
}

/// Verifies grants against a set of control-plane public keys (and, on an
/// agent, its cluster grant key).
#[derive(Clone, Default)]
pub struct GrantVerifier {
    /// Key id → its key, decompressed once (`None`: not a valid Ed25519
    /// public key, so nothing verifies against it).
    keys: HashMap<String, Option<ed25519_dalek::VerifyingKey>>,
    /// The cluster grant key (an agent's): the id of the signing key it
    /// was derived from, and the key.
    cluster_key: Option<(String, ring::hmac::Key)>,
}

impl std::fmt::Debug for GrantVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantVerifier")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("cluster_key", &self.cluster_key.as_ref().map(|(id, _)| id))
            .finish()
    }
}

impl GrantVerifier {
    /// A verifier trusting `keys` (key id → raw Ed25519 public key).
    pub fn new(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        let parse = |raw: Vec<u8>| {
            let bytes: [u8; 32] = raw.try_into().ok()?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
        };
        Self { keys: keys.into_iter().map(|(id, raw)| (id, parse(raw))).collect(), cluster_key: None }
    }

    /// This verifier, also passing grants by their cluster MAC under the
    /// cluster grant key `spec` (`key-id=base64url-32-byte-key`, as
    /// [`GrantSigner::cluster_key_spec`] makes it) when they were signed
    /// with that key id. Only an agent holds one.
    pub fn with_cluster_key(mut self, spec: &str) -> Result<Self, String> {
        let (id, key) = spec.split_once('=').ok_or("the cluster grant key is not key-id=base64url-key")?;
        let raw = from_header(key).map_err(|_| "the cluster grant key is not base64url (no padding)")?;
        if id.trim().is_empty() || raw.len() != 32 {
            return Err("the cluster grant key must name a key id and 32 bytes".into());
        }
        self.cluster_key = Some((id.trim().to_string(), ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw)));
        Ok(self)
    }

    /// Whether grants of signing key `key_id` may verify here by signature
    /// (one of the configured public keys).
    pub fn trusts(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// The signing key id of the cluster grant key, if this verifier holds
    /// one (an agent tells its relays in `Hello.cluster_grant_key_id`).
    pub fn cluster_key_id(&self) -> Option<&str> {
        self.cluster_key.as_ref().map(|(id, _)| id.as_str())
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.cluster_key.is_none()
    }

    /// Verifies `signed` at time `now_ms` for `expected`; returns the grant.
    pub fn verify(&self, signed: &[u8], now_ms: u64, expected: Expected<'_>) -> Result<Grant, GrantError> {
        self.verify_gated(signed, None, now_ms, expected).map(|(grant, _)| grant)
    }

    /// Like [`GrantVerifier::verify`], but a grant whose `gate` MAC (the
    /// [`GATE_HEADER`] value) verifies under the gate key passes without
    /// its Ed25519 signature being checked; every other check is the same.
    /// Only a relay may take this shortcut: the agent behind it checks the
    /// grant itself. A missing or wrong MAC falls back to the signature.
    ///
    /// With a cluster grant key ([`GrantVerifier::with_cluster_key`]), a
    /// grant of that key id whose cluster MAC verifies passes the same way;
    /// a missing or wrong one falls back to the signature.
    pub fn verify_gated(
        &self,
        signed: &[u8],
        gate: Option<(&GateKey, &str)>,
        now_ms: u64,
        expected: Expected<'_>,
    ) -> Result<(Grant, Checked), GrantError> {
        self.verify_gated_by(signed, |_| gate, now_ms, expected).map(|v| (v.grant, v.checked))
    }

    /// [`GrantVerifier::verify_gated`] with the gate key and MAC chosen by
    /// the grant's signing key id (a relay holds one gate key per key id).
    pub fn verify_gated_by<'k>(
        &self,
        signed: &[u8],
        gate: impl FnOnce(&str) -> Option<(&'k GateKey, &'k str)>,
        now_ms: u64,
        expected: Expected<'_>,
    ) -> Result<Verified, GrantError> {
        if signed.is_empty() {
            return Err(GrantError::Missing);
        }
        let s = SignedGrant::decode(signed).map_err(|_| GrantError::Malformed)?;
        let grant = Grant::decode(s.grant.clone()).map_err(|_| GrantError::Malformed)?;
        let gated = gate(&grant.key_id).is_some_and(|(key, mac)| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(mac)
                .is_ok_and(|mac| ring::hmac::verify(key, signed, &mac).is_ok())
        });
        let by_cluster_key = || {
            self.cluster_key.as_ref().is_some_and(|(id, key)| {
                *id == grant.key_id && ring::hmac::verify(key, &s.grant, &s.cluster_mac).is_ok()
            })
        };
        let checked = if gated {
            Checked::Gate
        } else if by_cluster_key() {
            Checked::ClusterKey
        } else {
            if s.signature.is_empty() {
                return Err(GrantError::Unsigned);
            }
            let key = self.keys.get(&grant.key_id).ok_or_else(|| GrantError::UnknownKey(grant.key_id.clone()))?;
            // Strict: a non-canonical signature or a small-order key is refused.
            let signature = ed25519_dalek::Signature::from_slice(&s.signature).map_err(|_| GrantError::BadSignature)?;
            key.as_ref()
                .ok_or(GrantError::BadSignature)?
                .verify_strict(&s.grant, &signature)
                .map_err(|_| GrantError::BadSignature)?;
            Checked::Signature
        };
        if grant.expires_at_ms < grant.issued_at_ms
            || grant.expires_at_ms - grant.issued_at_ms > MAX_VALIDITY_MS
            || grant.issued_at_ms > now_ms + CLOCK_SKEW_MS
        {
            return Err(GrantError::BadWindow);
        }
        if now_ms > grant.expires_at_ms + CLOCK_SKEW_MS {
            return Err(GrantError::Expired(now_ms - grant.expires_at_ms));
        }
        if grant.cluster != expected.cluster {
            return Err(GrantError::WrongCluster {
                granted: grant.cluster.clone(),
                actual: expected.cluster.to_string(),
            });
        }
        if !grant.method.eq_ignore_ascii_case(expected.method) || grant.path != expected.path {
            return Err(GrantError::WrongRequest {
                method: expected.method.to_string(),
                path: expected.path.to_string(),
            });
        }
        Ok(Verified { signed: !s.signature.is_empty(), grant, checked })
    }
}

/// A grant [`GrantVerifier::verify_gated_by`] passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The grant.
    pub grant: Grant,
    /// How its origin was checked.
    pub checked: Checked,
    /// Whether it carries an Ed25519 signature (see
    /// [`GrantSigner::sign_macs_only`]).
    pub signed: bool,
}

/// How a grant's origin was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// By the relay gate's MAC.
    Gate,
    /// By the cluster MAC under the agent's cluster grant key.
    ClusterKey,
    /// By the Ed25519 signature.
    Signature,
}

impl Checked {
    /// The metric label: `gate`, `cluster_key` or `signature`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Gate => "gate",
            Self::ClusterKey => "cluster_key",
            Self::Signature => "signature",
        }
    }
}

/// The gate MAC of the signed grant `signed` under a relay's gate key
/// (HMAC-SHA256, base64url without padding): what the control plane puts
/// in [`GATE_HEADER`] so that relay can pass the grant with a MAC check
/// (about a microsecond) instead of a signature check (tens).
pub fn gate_mac(gate_key: &[u8], signed: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, gate_key);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, signed).as_ref())
}

/// A relay's gate key as [`GrantVerifier::verify_gated`] takes it, if
/// `raw` is one (32 bytes).
pub fn gate_key(raw: &[u8]) -> Option<GateKey> {
    (raw.len() == 32).then(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn signer(id: &str) -> GrantSigner {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        GrantSigner::from_pkcs8(id, pkcs8.as_ref()).expect("signer")
    }

    #[test]
    fn the_signer_makes_ring_s_signatures_from_the_same_pkcs8_key() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        let ring_pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ring parses it");
        let s = GrantSigner::from_pkcs8("k1", pkcs8.as_ref()).expect("signer");
        assert_eq!(s.public_key(), ring_pair.public_key().as_ref());
        let message = b"kubechat audit checkpoint v1\0...";
        let signature = s.sign_bytes(message);
        assert_eq!(signature, ring_pair.sign(message).as_ref(), "Ed25519 is deterministic: the same key signs alike");
        assert!(s.verify_bytes(message, &signature));
        assert!(!s.verify_bytes(b"another message", &signature));
        assert!(!s.verify_bytes(message, &signature[..63]));
        // A document whose seed is not where ring's are, or not a key at all.
        let mut moved = pkcs8.as_ref().to_vec();
        moved[14] = 0x05;
        assert!(GrantSigner::from_pkcs8("k1", &moved).is_err());
        assert!(GrantSigner::from_pkcs8("k1", &pkcs8.as_ref()[..40]).is_err());
    }

    fn grant(now: u64) -> Grant {
        Grant {
            request_id: "r1".into(),
            tenant: "acme".into(),
            cluster: "prod".into(),
            user: "kubechat:user:a@b.c".into(),
            groups: vec!["kubechat:role:tenant_user".into()],
            method: "GET".into(),
            path: "/api/v1/pods?limit=500".into(),
            issued_at_ms: now,
            expires_at_ms: now + 30_000,
            key_id: String::new(),
            client_address: String::new(),
            must_audit: false,
        }
    }

    const NOW: u64 = 1_800_000_000_000;
    const OK: Expected<'static> = Expected { cluster: "prod", method: "GET", path: "/api/v1/pods?limit=500" };

    #[test]
    fn parses_key_specs() {
        let s = signer("cp-1");
        let spec = format!("cp-1={}", to_header(&s.public_key()));
        assert_eq!(parse_key_spec(&spec).expect("valid"), ("cp-1".to_string(), s.public_key()));
        assert!(parse_key_spec("cp-1").is_err());
        assert!(parse_key_spec("cp-1=AAAA").is_err());
        assert!(parse_key_spec("=AAAA").is_err());
    }

    #[test]
    fn valid_grant_verifies_and_round_trips_through_the_header() {
        let s = signer("k1");
        let v = GrantVerifier::new([("k1".to_string(), s.public_key())]);
        let wire = from_header(&to_header(&s.sign(grant(NOW)))).expect("decodes");
        let g = v.verify(&wire, NOW + 1000, OK).expect("valid");
        assert_eq!(g.user, "kubechat:user:a@b.c");
    }

    #[test]
    fn a_gate_mac_stands_in_for_the_signature_at_its_own_relay_only() {
        let s = signer("k1");
        let v = GrantVerifier::new([("k1".to_string(), s.public_key())]);
        let key_a = s.gate_key("relay-a");
        let gate_a = gate_key(&key_a).expect("32 bytes");
        // Same private key, same gate keys (every replica); other relays differ.
        assert_ne!(key_a, s.gate_key("relay-b"));
        assert_ne!(key_a, signer("k1").gate_key("relay-a"));
        let signed = s.sign(grant(NOW));
        let mac = gate_mac(&key_a, &signed);
        assert_eq!(v.verify_gated(&signed, Some((&gate_a, &mac)), NOW, OK).map(|(_, c)| c), Ok(Checked::Gate));
        // No MAC, another relay's MAC, or garbage: the signature decides.
        let mac_b = gate_mac(&s.gate_key("relay-b"), &signed);
        for m in [None, Some(mac_b.as_str()), Some("not base64!"), Some("")] {
            let checked = v.verify_gated(&signed, m.map(|m| (&gate_a, m)), NOW, OK).map(|(_, c)| c);
            assert_eq!(checked, Ok(Checked::Signature), "{m:?}");
        }
        // A forged grant passes the gate only with the gate key's MAC…
        let forged = signer("k1").sign(grant(NOW));
        assert_eq!(
            v.verify_gated(&forged, Some((&gate_a, &mac)), NOW, OK).map(|(_, c)| c),
            Err(GrantError::BadSignature),
            "a MAC of another grant covers nothing else"
        );
        let forged_mac = gate_mac(&key_a, &forged);
        assert_eq!(v.verify_gated(&forged, Some((&gate_a, &forged_mac)), NOW, OK).map(|(_, c)| c), Ok(Checked::Gate));
        // …and a gated grant still meets every other check.
        let other = Expected { cluster: "staging", ..OK };
        assert!(matches!(
            v.verify_gated(&signed, Some((&gate_a, &mac)), NOW, other),
            Err(GrantError::WrongCluster { .. })
        ));
        assert!(matches!(
            v.verify_gated(&signed, Some((&gate_a, &mac)), NOW + 40_000, OK),
            Err(GrantError::Expired(_))
        ));
        assert!(gate_key(&key_a[..31]).is_none());
    }

    #[test]
    fn a_cluster_mac_stands_in_for_the_signature_at_that_cluster_s_agents_only() {
        let s = signer("k1");
        let public = || GrantVerifier::new([("k1".to_string(), s.public_key())]);
        let agent = public().with_cluster_key(&s.cluster_key_spec("acme", "prod")).expect("a valid spec");
        let checked = |v: &GrantVerifier, signed: &[u8]| v.verify_gated(signed, None, NOW, OK).map(|(_, c)| c);
        let signed = s.sign(grant(NOW));
        assert_eq!(checked(&agent, &signed), Ok(Checked::ClusterKey));
        // A verifier without the key (a relay) checks the signature.
        assert_eq!(checked(&public(), &signed), Ok(Checked::Signature));
        // Same private key, same cluster keys (every replica); other
        // clusters, tenants and private keys differ, however the two
        // names split.
        assert_eq!(s.cluster_key("acme", "prod"), s.cluster_key("acme", "prod"));
        assert_ne!(s.cluster_key("acme", "prod"), s.cluster_key("acme", "staging"));
        assert_ne!(s.cluster_key("acme", "prod"), s.cluster_key("globex", "prod"));
        assert_ne!(s.cluster_key("a", "b\0c"), s.cluster_key("a\0b", "c"));
        assert_ne!(s.cluster_key("ab", "c"), s.cluster_key("a", "bc"));
        assert_ne!(s.cluster_key("acme", "prod"), signer("k1").cluster_key("acme", "prod"));
        assert_ne!(s.cluster_key("acme", "prod"), s.gate_key("acme\0prod"), "cluster keys are not gate keys");
        // Another cluster's key, or a key of another key id: the signature
        // decides, and a forged one is refused.
        let forged = signer("k1").sign(Grant { user: "kubechat:user:mallory@b.c".into(), ..grant(NOW) });
        for spec in [s.cluster_key_spec("acme", "staging"), format!("k2={}", to_header(&s.cluster_key("acme", "prod")))]
        {
            let v = public().with_cluster_key(&spec).expect("a valid spec");
            assert_eq!(checked(&v, &signed), Ok(Checked::Signature), "{spec}");
            assert_eq!(checked(&v, &forged), Err(GrantError::BadSignature), "{spec}");
        }
        assert_eq!(checked(&agent, &forged), Err(GrantError::BadSignature), "a forger's MAC is under its own key");
        // A MAC of another grant covers nothing else; a stripped MAC falls
        // back to the signature.
        let mut swapped = SignedGrant::decode(forged.as_slice()).expect("decodes");
        swapped.cluster_mac = SignedGrant::decode(signed.as_slice()).expect("decodes").cluster_mac;
        assert_eq!(checked(&agent, &swapped.encode_to_vec()), Err(GrantError::BadSignature));
        let mut stripped = SignedGrant::decode(signed.as_slice()).expect("decodes");
        stripped.cluster_mac = Default::default();
        assert_eq!(checked(&agent, &stripped.encode_to_vec()), Ok(Checked::Signature));
        // A grant passed by its cluster MAC still meets every other check.
        assert!(matches!(
            agent.verify(&signed, NOW, Expected { cluster: "staging", ..OK }),
            Err(GrantError::WrongCluster { .. })
        ));
        assert!(matches!(agent.verify(&signed, NOW + 40_000, OK), Err(GrantError::Expired(_))));
        // The key's id and 32 bytes, or nothing.
        for bad in ["", "k1", "k1=AAAA", "=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "k1=not base64!"] {
            assert!(public().with_cluster_key(bad).is_err(), "{bad:?}");
        }
        assert!(
            !GrantVerifier::default().with_cluster_key(&s.cluster_key_spec("acme", "prod")).expect("ok").is_empty()
        );
        assert!(!format!("{agent:?}").contains(&to_header(&s.cluster_key("acme", "prod"))), "Debug shows no key");
    }

    #[test]
    fn a_grant_without_its_signature_passes_only_by_a_mac_and_is_refused_elsewhere() {
        let s = signer("k1");
        let public = || GrantVerifier::new([("k1".to_string(), s.public_key())]);
        let agent = public().with_cluster_key(&s.cluster_key_spec("acme", "prod")).expect("a valid spec");
        assert_eq!(agent.cluster_key_id(), Some("k1"));
        assert_eq!(public().cluster_key_id(), None);
        let checked = |v: &GrantVerifier, signed: &[u8], gate: Option<(&GateKey, &str)>| {
            v.verify_gated(signed, gate, NOW, OK).map(|(_, c)| c)
        };
        let unsigned = s.sign_macs_only(grant(NOW));
        assert!(!is_signed(&unsigned) && is_signed(&s.sign(grant(NOW))) && !is_signed(b"not a grant"));
        // The relay holding the gate key, and the agent holding the cluster
        // key, pass it.
        let gate = s.gate_key("relay-a");
        let mac = gate_mac(&gate, &unsigned);
        let gate_a = gate_key(&gate).expect("32 bytes");
        assert_eq!(checked(&public(), &unsigned, Some((&gate_a, &mac))), Ok(Checked::Gate));
        assert_eq!(checked(&agent, &unsigned, None), Ok(Checked::ClusterKey));
        // Anyone else refuses it, and says why: no gate MAC or another
        // relay's, an agent without the key or with another cluster's.
        let mac_b = gate_mac(&s.gate_key("relay-b"), &unsigned);
        assert_eq!(checked(&public(), &unsigned, None), Err(GrantError::Unsigned));
        assert_eq!(checked(&public(), &unsigned, Some((&gate_a, &mac_b))), Err(GrantError::Unsigned));
        let elsewhere = public().with_cluster_key(&s.cluster_key_spec("acme", "staging")).expect("a valid spec");
        assert_eq!(checked(&elsewhere, &unsigned, None), Err(GrantError::Unsigned));
        // One a relay makes (its own cluster MAC) is refused by the agent.
        let forged = signer("k1").sign_macs_only(Grant { user: "kubechat:user:mallory@b.c".into(), ..grant(NOW) });
        assert_eq!(checked(&agent, &forged, None), Err(GrantError::Unsigned));
        // Signed again, it passes the signature check, as the same grant.
        let again = s.sign_again(&unsigned).expect("the signer's own grant");
        assert!(is_signed(&again));
        let (g, by) = public().verify_gated(&again, None, NOW, OK).expect("signed");
        assert_eq!((g.request_id.as_str(), by), ("r1", Checked::Signature));
        assert!(signer("k2").sign_again(&unsigned).is_none(), "another key's grant");
        assert!(s.sign_again(b"not a grant").is_none());
        // The relay's gate key is chosen by the grant's key id.
        let by_id = |id: &str| (id == "k1").then_some((&gate_a, mac.as_str()));
        let v = public().verify_gated_by(&unsigned, by_id, NOW, OK).expect("passed by the gate");
        assert_eq!((v.checked, v.signed), (Checked::Gate, false));
        let by_other = |id: &str| (id == "k2").then_some((&gate_a, mac.as_str()));
        assert_eq!(public().verify_gated_by(&unsigned, by_other, NOW, OK), Err(GrantError::Unsigned));
        assert!(public().trusts("k1") && !public().trusts("k2"));
        // A MAC passes only the grant it was made for: the unsigned grant
        // is still checked for everything else.
        assert!(matches!(
            agent.verify(&unsigned, NOW, Expected { path: "/api/v1/secrets", ..OK }),
            Err(GrantError::WrongRequest { .. })
        ));
    }

    #[test]
    fn refuses_forged_expired_other_cluster_and_other_request() {
        let s = signer("k1");
        let v = GrantVerifier::new([("k1".to_string(), s.public_key())]);
        let forger = signer("k1");
        assert_eq!(v.verify(&forger.sign(grant(NOW)), NOW, OK), Err(GrantError::BadSignature));
        assert!(matches!(v.verify(&signer("k9").sign(grant(NOW)), NOW, OK), Err(GrantError::UnknownKey(_))));
        assert!(matches!(v.verify(&s.sign(grant(NOW)), NOW + 40_000, OK), Err(GrantError::Expired(_))));
        let long = Grant { expires_at_ms: NOW + 120_000, ..grant(NOW) };
        assert_eq!(v.verify(&s.sign(long), NOW, OK), Err(GrantError::BadWindow));
        let future = grant(NOW + 60_000);
        assert_eq!(v.verify(&s.sign(future), NOW, OK), Err(GrantError::BadWindow));
        let other = Expected { cluster: "staging", ..OK };
        assert!(matches!(v.verify(&s.sign(grant(NOW)), NOW, other), Err(GrantError::WrongCluster { .. })));
        let delete = Expected { method: "DELETE", ..OK };
        assert!(matches!(v.verify(&s.sign(grant(NOW)), NOW, delete), Err(GrantError::WrongRequest { .. })));
        let path = Expected { path: "/api/v1/secrets", ..OK };
        assert!(matches!(v.verify(&s.sign(grant(NOW)), NOW, path), Err(GrantError::WrongRequest { .. })));
        assert_eq!(v.verify(b"", NOW, OK), Err(GrantError::Missing));
        assert_eq!(v.verify(b"\xff\xff", NOW, OK), Err(GrantError::Malformed));
        // A tampered grant body fails the signature.
        let mut wire = SignedGrant::decode(s.sign(grant(NOW)).as_slice()).expect("decodes");
        let mut g = Grant::decode(wire.grant.clone()).expect("decodes");
        g.user = "system:admin".into();
        wire.grant = g.encode_to_vec().into();
        assert_eq!(v.verify(&wire.encode_to_vec(), NOW, OK), Err(GrantError::BadSignature));
        // A signature of the wrong length, or a non-canonical one (S + ℓ).
        let mut short = SignedGrant::decode(s.sign(grant(NOW)).as_slice()).expect("decodes");
        short.signature = short.signature.slice(..63);
        assert_eq!(v.verify(&short.encode_to_vec(), NOW, OK), Err(GrantError::BadSignature));
        let mut malleated = SignedGrant::decode(s.sign(grant(NOW)).as_slice()).expect("decodes");
        let mut sig = malleated.signature.to_vec();
        add_group_order(&mut sig[32..]);
        malleated.signature = sig.into();
        assert_eq!(v.verify(&malleated.encode_to_vec(), NOW, OK), Err(GrantError::BadSignature));
    }

    /// Adds ℓ (the group order) to a little-endian 32-byte scalar.
    fn add_group_order(s: &mut [u8]) {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (b, l) in s.iter_mut().zip(L) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
    }

    #[test]
    fn a_key_that_is_not_a_curve_point_verifies_nothing() {
        let s = signer("k1");
        for bad in [vec![0u8; 31], vec![0xffu8; 32]] {
            let v = GrantVerifier::new([("k1".to_string(), bad)]);
            assert_eq!(v.verify(&s.sign(grant(NOW)), NOW, OK), Err(GrantError::BadSignature));
        }
    }
}
