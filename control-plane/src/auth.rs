//! API tokens: generation (shown once), hashing (stored), and the caller
//! they authenticate.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::model::{Role, User};

/// Prefix of every KubeChat API token.
pub const TOKEN_PREFIX: &str = "kc_";

/// A secret string whose `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A fresh token: `kc_` and 40 hex characters (160 random bits).
pub fn new_token() -> Secret {
    let bytes: [u8; 20] = rand::rng().random();
    Secret(format!("{TOKEN_PREFIX}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// The stored form of a token: hex SHA-256.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The displayable start of a token.
pub fn prefix(token: &str) -> String {
    token.chars().take(10).collect()
}

/// A random id with a one-letter kind prefix, e.g. `t1a2b3c4d5e6f`.
pub fn new_id(kind: char) -> String {
    let bytes: [u8; 6] = rand::rng().random();
    format!("{kind}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user: User,
    /// The token used.
    pub token_id: String,
    /// The slug of the caller's own tenant (none for platform admins).
    pub tenant_slug: Option<String>,
}

impl Principal {
    /// Whether the caller operates the platform.
    pub fn is_platform(&self) -> bool {
        self.user.role == Role::PlatformAdmin
    }

    /// Whether the caller may administer `tenant_id`.
    pub fn is_admin_of(&self, tenant_id: &str) -> bool {
        self.is_platform() || (self.user.role == Role::TenantAdmin && self.user.tenant_id.as_deref() == Some(tenant_id))
    }

    /// Whether the caller belongs to `tenant_id` (or is platform).
    pub fn can_see(&self, tenant_id: &str) -> bool {
        self.is_platform() || self.user.tenant_id.as_deref() == Some(tenant_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert!(a.0.starts_with("kc_") && a.0.len() == 43);
        assert_ne!(a, b);
        assert_eq!(hash(&a.0).len(), 64);
        assert_ne!(hash(&a.0), a.0);
        assert_eq!(format!("{a:?}"), "***");
    }
}
