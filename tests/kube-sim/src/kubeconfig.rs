//! Writing kubeconfig files for kube-sim, the relay and (later) the control
//! plane, so tests and the dev stack hand kubectl exactly what a user gets.

/// Base64 (standard alphabet, padded) of `data`.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How the kubeconfig's user authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A bearer token.
    Token(String),
    /// A client certificate and key (PEM).
    ClientCert {
        /// Certificate PEM.
        cert_pem: String,
        /// Key PEM.
        key_pem: String,
    },
}

/// A kubeconfig with one cluster, user and context named `name`.
#[derive(Debug, Clone)]
pub struct KubeconfigSpec {
    /// Cluster, user and context name.
    pub name: String,
    /// The server URL.
    pub server: String,
    /// CA PEM to trust, if HTTPS.
    pub ca_pem: Option<String>,
    /// Credentials.
    pub credentials: Credentials,
    /// `as` (impersonate this user), if any.
    pub impersonate_user: Option<String>,
    /// `as-groups`.
    pub impersonate_groups: Vec<String>,
    /// Default namespace of the context.
    pub namespace: Option<String>,
}

impl KubeconfigSpec {
    /// The YAML text.
    pub fn to_yaml(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut y = String::from("apiVersion: v1\nkind: Config\nclusters:\n- name: ");
        y += &q(&self.name);
        y += "\n  cluster:\n    server: ";
        y += &q(&self.server);
        y.push('\n');
        if let Some(ca) = &self.ca_pem {
            y += &format!("    certificate-authority-data: {}\n", base64(ca.as_bytes()));
        }
        y += &format!("users:\n- name: {}\n  user:\n", q(&self.name));
        match &self.credentials {
            Credentials::Token(t) => y += &format!("    token: {}\n", q(t)),
            Credentials::ClientCert { cert_pem, key_pem } => {
                y += &format!("    client-certificate-data: {}\n", base64(cert_pem.as_bytes()));
                y += &format!("    client-key-data: {}\n", base64(key_pem.as_bytes()));
            }
        }
        if let Some(u) = &self.impersonate_user {
            y += &format!("    as: {}\n", q(u));
            if !self.impersonate_groups.is_empty() {
                y += "    as-groups:\n";
                for g in &self.impersonate_groups {
                    y += &format!("    - {}\n", q(g));
                }
            }
        }
        y += &format!("contexts:\n- name: {0}\n  context:\n    cluster: {0}\n    user: {0}\n", q(&self.name));
        if let Some(ns) = &self.namespace {
            y += &format!("    namespace: {}\n", q(ns));
        }
        y += &format!("current-context: {}\n", q(&self.name));
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
