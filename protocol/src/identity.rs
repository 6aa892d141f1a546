//! Tunnel identities: `spiffe://kubechat/tenant/<tenant>/cluster/<cluster>`.
//!
//! The relay reads an agent's identity from the URI SAN of its verified client
//! certificate and from nothing else; this module only parses and formats it.

use std::fmt;

/// The SPIFFE trust domain of KubeChat identities.
pub const TRUST_DOMAIN: &str = "kubechat";

/// The tenant and cluster a tunnel belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterIdentity {
    /// Tenant id (a DNS label).
    pub tenant: String,
    /// Cluster id (a DNS label), unique across tenants.
    pub cluster: String,
}

/// Why a string is not a valid KubeChat identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The URI is not `spiffe://kubechat/tenant/<t>/cluster/<c>`.
    #[error("{0:?} is not a kubechat cluster identity (want spiffe://kubechat/tenant/<tenant>/cluster/<cluster>)")]
    Malformed(String),
    /// A tenant or cluster id is not a DNS label.
    #[error("{what} id {value:?} is not a DNS label (lowercase letters, digits and '-', at most 63)")]
    BadName {
        /// "tenant" or "cluster".
        what: &'static str,
        /// The rejected value.
        value: String,
    },
    /// The certificate carries no kubechat identity, or more than one.
    #[error("certificate carries {0} kubechat identities, want exactly one")]
    Count(usize),
}

/// Whether `s` is a DNS label (RFC 1123): `[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?`.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl ClusterIdentity {
    /// Builds an identity, checking both ids are DNS labels.
    pub fn new(tenant: impl Into<String>, cluster: impl Into<String>) -> Result<Self, IdentityError> {
        let (tenant, cluster) = (tenant.into(), cluster.into());
        if !is_dns_label(&tenant) {
            return Err(IdentityError::BadName { what: "tenant", value: tenant });
        }
        if !is_dns_label(&cluster) {
            return Err(IdentityError::BadName { what: "cluster", value: cluster });
        }
        Ok(Self { tenant, cluster })
    }

    /// Parses `spiffe://kubechat/tenant/<t>/cluster/<c>` exactly (no query,
    /// fragment, extra segments, percent-encoding or upper case).
    pub fn from_spiffe_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::Malformed(uri.to_string());
        let rest = uri
            .strip_prefix("spiffe://")
            .and_then(|r| r.strip_prefix(TRUST_DOMAIN))
            .and_then(|r| r.strip_prefix("/tenant/"))
            .ok_or_else(malformed)?;
        let (tenant, rest) = rest.split_once('/').ok_or_else(malformed)?;
        let cluster = rest.strip_prefix("cluster/").ok_or_else(malformed)?;
        Self::new(tenant, cluster)
    }

    /// Whether `uri` is in the kubechat trust domain at all (so a certificate
    /// with other URI SANs, e.g. of a service mesh, is not misread).
    pub fn is_kubechat_uri(uri: &str) -> bool {
        uri.starts_with("spiffe://kubechat/")
    }

    /// The SPIFFE URI of this identity.
    pub fn spiffe_uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/tenant/{}/cluster/{}", self.tenant, self.cluster)
    }
}

impl fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_valid_uri() {
        let id = ClusterIdentity::from_spiffe_uri("spiffe://kubechat/tenant/acme/cluster/prod-eu").expect("valid");
        assert_eq!(id, ClusterIdentity::new("acme", "prod-eu").expect("valid"));
    }

    #[test]
    fn rejects_tricks() {
        for bad in [
            "spiffe://kubechat/tenant/acme/cluster/prod/extra",
            "spiffe://kubechat/tenant/acme/cluster/",
            "spiffe://kubechat/tenant//cluster/x",
            "spiffe://kubechat/tenant/Acme/cluster/x",
            "spiffe://kubechat/tenant/a%2fb/cluster/x",
            "spiffe://kubechat/tenant/acme/cluster/x?y",
            "spiffe://other/tenant/acme/cluster/x",
            "spiffe://kubechat.evil/tenant/acme/cluster/x",
            "https://kubechat/tenant/acme/cluster/x",
            "spiffe://kubechat/tenant/acme/cluster/-x",
            "spiffe://kubechat/tenant/acme/cluster/../x",
        ] {
            assert!(ClusterIdentity::from_spiffe_uri(bad).is_err(), "{bad} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn round_trips(t in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", c in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?") {
            let id = ClusterIdentity::new(t, c).expect("valid labels");
            prop_assert_eq!(ClusterIdentity::from_spiffe_uri(&id.spiffe_uri()).expect("parses"), id);
        }

        #[test]
        fn never_panics(s in ".{0,100}") {
            let _ = ClusterIdentity::from_spiffe_uri(&s);
        }
    }
}
