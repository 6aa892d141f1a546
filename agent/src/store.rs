//! Where the agent keeps its credentials between restarts: a directory (the
//! files `kubechat-agent enroll` writes) or a Kubernetes Secret, read and
//! written with the agent's own kube client.
//!
//! The Helm chart creates the Secret and grants the agent only `get` and
//! `update` on it, by name: the store reads it, treats a Secret without
//! data as empty and writes with an update. Only when the Secret does not
//! exist (development) does it create it.
//!
//! Nothing here logs or formats the Secret's contents.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tracing::debug;

use crate::credentials::{Credentials, Summary};

/// Secret data key of the private key.
pub const SECRET_KEY: &str = "tls.key";
/// Secret data key of the certificate.
pub const SECRET_CERT: &str = "tls.crt";
/// Secret data key of the relay CA.
pub const SECRET_RELAY_CA: &str = "relay-ca.crt";
/// Secret data key (and file name, mode 0600) of the cluster grant key.
pub const CLUSTER_GRANT_KEY: &str = "cluster-grant.key";
/// Secret data key (and file name) of the summary: relays, grant keys,
/// identity, expiry, control plane.
pub const ENROLLMENT_JSON: &str = "enrollment.json";

const DIR_KEY: &str = "agent.key";
const DIR_CERT: &str = "agent.crt";
const DIR_RELAY_CA: &str = "relay-ca.crt";

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What is stored cannot be parsed (the agent enrolls again).
    #[error("the credentials in {store} are unusable: {detail}")]
    Unusable {
        /// The store.
        store: String,
        /// What is wrong (never the contents).
        detail: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The API server refused or failed a request.
    #[error("cannot {action} {store}: {source}")]
    Kube {
        /// "read", "update" or "create".
        action: &'static str,
        /// The store.
        store: String,
        /// The kube error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The agent's service account may not do what the store needs.
    #[error(
        "the agent may not {verb} {store}: grant its service account `{verb}` on that Secret (the Helm chart's Role does)"
    )]
    Forbidden {
        /// The missing verb.
        verb: &'static str,
        /// The store.
        store: String,
    },
    /// The Secret does not exist and the agent may not create it.
    #[error(
        "{store} does not exist and the agent may not create it: create the Secret (the Helm chart does) or grant the agent's service account `create` on secrets in namespace {namespace}"
    )]
    CannotCreate {
        /// The store.
        store: String,
        /// Its namespace.
        namespace: String,
    },
}

/// Where the credentials are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `agent.key`, `agent.crt`, `relay-ca.crt` and `enrollment.json` in a
    /// directory.
    Dir(PathBuf),
    /// A Secret with data keys `tls.key`, `tls.crt`, `relay-ca.crt` and
    /// `enrollment.json`.
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// The service account's namespace when running in a pod, else `default`.
pub fn default_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// A credential store.
pub struct CredentialStore {
    backend: Backend,
}

enum Backend {
    Dir(PathBuf),
    Secret { api: Box<Api<Secret>>, namespace: String, name: String },
}

impl std::fmt::Display for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Dir(p) => write!(f, "directory {}", p.display()),
            Backend::Secret { namespace, name, .. } => write!(f, "Secret {namespace}/{name}"),
        }
    }
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialStore({self})")
    }
}

fn is_status(e: &kube::Error, f: fn(&kube::core::Status) -> bool) -> bool {
    matches!(e, kube::Error::Api(s) if f(s))
}

impl CredentialStore {
    /// The files in `dir`.
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        Self { backend: Backend::Dir(dir.into()) }
    }

    /// Secret `name` in `namespace`, through `client`.
    pub fn secret(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            backend: Backend::Secret {
                api: Box::new(Api::namespaced(client, namespace)),
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        }
    }

    /// The store at `location` (a Secret is reached through `client`).
    pub fn open(location: &StoreLocation, client: &kube::Client) -> Self {
        match location {
            StoreLocation::Dir(d) => Self::dir(d.clone()),
            StoreLocation::Secret { namespace, name } => Self::secret(client.clone(), namespace, name),
        }
    }

    fn unusable(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Unusable { store: self.to_string(), detail: detail.into() }
    }

    fn kube_error(&self, action: &'static str, source: kube::Error) -> StoreError {
        if is_status(&source, kube::core::Status::is_forbidden) {
            let verb = match action {
                "read" => "get",
                other => other,
            };
            return StoreError::Forbidden { verb, store: self.to_string() };
        }
        StoreError::Kube { action, store: self.to_string(), source: Box::new(source) }
    }

    /// The stored credentials; `None` when nothing (or no key and
    /// certificate) is stored. `StoreError::Unusable` when what is stored
    /// cannot be parsed.
    pub async fn load(&self) -> Result<Option<Credentials>, StoreError> {
        let (key, cert, relay_ca, cluster_grant_key, summary) = match &self.backend {
            Backend::Dir(dir) => {
                let read = |f: &str| -> Result<Option<String>, StoreError> {
                    let path = dir.join(f);
                    match std::fs::read(&path) {
                        Ok(b) => String::from_utf8(b).map(Some).map_err(|_| self.unusable(format!("{f} is not UTF-8"))),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                        Err(source) => Err(StoreError::Io { action: "read", path, source }),
                    }
                };
                (read(DIR_KEY)?, read(DIR_CERT)?, read(DIR_RELAY_CA)?, read(CLUSTER_GRANT_KEY)?, read(ENROLLMENT_JSON)?)
            }
            Backend::Secret { api, name, .. } => {
                let Some(secret) = api.get_opt(name).await.map_err(|e| self.kube_error("read", e))? else {
                    return Ok(None);
                };
                let data = secret.data.unwrap_or_default();
                let read = |k: &str| -> Result<Option<String>, StoreError> {
                    data.get(k)
                        .map(|b| String::from_utf8(b.0.clone()).map_err(|_| self.unusable(format!("{k} is not UTF-8"))))
                        .transpose()
                };
                (
                    read(SECRET_KEY)?,
                    read(SECRET_CERT)?,
                    read(SECRET_RELAY_CA)?,
                    read(CLUSTER_GRANT_KEY)?,
                    read(ENROLLMENT_JSON)?,
                )
            }
        };
        let (Some(key), Some(cert)) = (key, cert) else { return Ok(None) };
        if key.trim().is_empty() || cert.trim().is_empty() {
            return Ok(None);
        }
        let summary = match summary {
            Some(json) => serde_json::from_str::<Summary>(&json)
                .map_err(|e| self.unusable(format!("{ENROLLMENT_JSON} is invalid: {e}")))?,
            None => Summary::default(),
        };
        Ok(Some(Credentials::from_parts(key, cert, relay_ca.unwrap_or_default(), cluster_grant_key, summary)))
    }

    /// Makes sure a later [`save`](Self::save) can succeed, before a
    /// one-time bootstrap token is spent: creates the directory, or checks
    /// that the Secret exists (creating it empty if missing and allowed)
    /// and may be updated (a dry-run update).
    pub async fn prepare(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Dir(dir) => {
                create_dir(dir)?;
                let probe = dir.join(".kubechat-write-test");
                std::fs::write(&probe, b"").map_err(|source| StoreError::Io {
                    action: "write",
                    path: probe.clone(),
                    source,
                })?;
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            Backend::Secret { api, name, .. } => {
                match api.get_opt(name).await.map_err(|e| self.kube_error("read", e))? {
                    Some(existing) => {
                        let dry = PostParams { dry_run: true, ..Default::default() };
                        match api.replace(name, &dry, &existing).await {
                            Ok(_) => Ok(()),
                            // Another replica wrote it meanwhile: the update
                            // was authorized, which is what is checked here.
                            Err(e) if is_status(&e, kube::core::Status::is_conflict) => Ok(()),
                            Err(e) => Err(self.kube_error("update", e)),
                        }
                    }
                    None => self.create_secret(BTreeMap::new()).await.map(|_| ()),
                }
            }
        }
    }

    /// Stores `c`, replacing what was stored.
    pub async fn save(&self, c: &Credentials) -> Result<(), StoreError> {
        let summary = serde_json::to_string_pretty(&c.summary()).expect("the summary serializes");
        match &self.backend {
            Backend::Dir(dir) => {
                create_dir(dir)?;
                write_file(&dir.join(DIR_KEY), &c.key_pem, 0o600)?;
                write_file(&dir.join(DIR_CERT), &c.cert_pem, 0o644)?;
                write_file(&dir.join(DIR_RELAY_CA), &c.relay_ca_pem, 0o644)?;
                let grant_key = dir.join(CLUSTER_GRANT_KEY);
                match &c.cluster_grant_key {
                    Some(k) => write_file(&grant_key, k, 0o600)?,
                    // None given: none kept from another enrollment.
                    None => match std::fs::remove_file(&grant_key) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(StoreError::Io { action: "remove", path: grant_key, source: e });
                        }
                        _ => {}
                    },
                }
                write_file(&dir.join(ENROLLMENT_JSON), &summary, 0o644)
            }
            Backend::Secret { api, name, .. } => {
                // No cluster grant key given: an empty one, so none is kept
                // from another enrollment.
                let ours: BTreeMap<String, ByteString> = [
                    (SECRET_KEY, c.key_pem.as_str()),
                    (SECRET_CERT, c.cert_pem.as_str()),
                    (SECRET_RELAY_CA, c.relay_ca_pem.as_str()),
                    (CLUSTER_GRANT_KEY, c.cluster_grant_key.as_deref().unwrap_or_default()),
                    (ENROLLMENT_JSON, summary.as_str()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect();
                // A conflict (another writer between our read and write) or
                // a Secret created meanwhile: read again and retry.
                for attempt in 1..=3 {
                    let last = attempt == 3;
                    match api.get_opt(name).await.map_err(|e| self.kube_error("read", e))? {
                        Some(mut secret) => {
                            let mut data = secret.data.take().unwrap_or_default();
                            data.extend(ours.clone());
                            secret.data = Some(data);
                            secret.string_data = None;
                            match api.replace(name, &PostParams::default(), &secret).await {
                                Ok(_) => return Ok(()),
                                Err(e) if !last && is_status(&e, kube::core::Status::is_conflict) => {
                                    debug!(store = %self, "conflicting update; retrying");
                                }
                                Err(e) => return Err(self.kube_error("update", e)),
                            }
                        }
                        None => match self.create_secret(ours.clone()).await {
                            Ok(true) => return Ok(()),
                            Ok(false) if !last => debug!(store = %self, "created meanwhile; retrying"),
                            Ok(false) => {
                                return Err(self.unusable("the Secret keeps appearing and disappearing"));
                            }
                            Err(e) => return Err(e),
                        },
                    }
                }
                Err(self.unusable("the Secret keeps changing under the agent"))
            }
        }
    }

    /// Creates the Secret with `data`; `Ok(false)` if it exists already.
    async fn create_secret(&self, data: BTreeMap<String, ByteString>) -> Result<bool, StoreError> {
        let Backend::Secret { api, namespace, name } = &self.backend else { return Ok(false) };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "kubechat-agent".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: (!data.is_empty()).then_some(data),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(store = %self, "created the credentials Secret");
                Ok(true)
            }
            Err(e) if is_status(&e, kube::core::Status::is_already_exists) => Ok(false),
            Err(e) if is_status(&e, kube::core::Status::is_forbidden) => {
                Err(StoreError::CannotCreate { store: self.to_string(), namespace: namespace.clone() })
            }
            Err(e) => Err(self.kube_error("create", e)),
        }
    }
}

/// Writes `path` through a temporary file and a rename, so a reader never
/// sees half a key; `mode` from the start.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { action: "write", path: dir.to_path_buf(), source })
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| StoreError::Io { action: "write", path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    use kubechat_transport::pki::DevPki;

    use super::*;
    use crate::credentials::tests::bundle;

    #[tokio::test]
    async fn the_directory_round_trips_and_keeps_the_key_private() {
        let pki = DevPki::generate().expect("pki");
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = CredentialStore::dir(tmp.path().join("state"));
        assert!(store.load().await.expect("load").is_none(), "nothing stored yet");
        store.prepare().await.expect("prepare");
        let first = bundle(&pki, Duration::from_secs(3600));
        store.save(&first).await.expect("save");
        assert_eq!(store.load().await.expect("load"), Some(first.clone()));
        for secret in ["agent.key", "cluster-grant.key"] {
            let mode = std::fs::metadata(tmp.path().join("state").join(secret)).expect(secret).permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
        let summary = std::fs::read_to_string(tmp.path().join("state/enrollment.json")).expect("summary");
        assert!(!summary.contains("BBBB"), "the cluster grant key is not in the readable summary: {summary}");

        let mut second = bundle(&pki, Duration::from_secs(7200));
        second.relays = vec!["a:1".into(), "b:2".into()];
        second.control_plane_ca = Some("-----BEGIN CERTIFICATE-----\n".into());
        second.cluster_grant_key = None;
        store.save(&second).await.expect("update");
        assert_eq!(store.load().await.expect("load"), Some(second));
        assert!(!tmp.path().join("state/cluster-grant.key").exists(), "none kept from the earlier enrollment");
        assert!(!tmp.path().join("state/agent.key.tmp").exists());
    }

    #[tokio::test]
    async fn the_directory_reads_what_kubechat_agent_enroll_wrote_before() {
        let pki = DevPki::generate().expect("pki");
        let c = bundle(&pki, Duration::from_secs(3600));
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("agent.key"), &c.key_pem).expect("write");
        std::fs::write(tmp.path().join("agent.crt"), &c.cert_pem).expect("write");
        std::fs::write(tmp.path().join("relay-ca.crt"), &c.relay_ca_pem).expect("write");
        // The earlier format: no control plane, expiresAt possibly null.
        std::fs::write(
            tmp.path().join("enrollment.json"),
            r#"{"identity":"spiffe://kubechat/tenant/acme/cluster/prod","relays":["r:1"],"grantKeys":["k=v"],"expiresAt":null}"#,
        )
        .expect("write");
        let loaded = CredentialStore::dir(tmp.path()).load().await.expect("load").expect("stored");
        assert_eq!(loaded.relays, ["r:1"]);
        assert_eq!(loaded.grant_keys, ["k=v"]);
        assert_eq!(loaded.cluster_grant_key, None, "enrolled before cluster grant keys: signatures only");
        assert_eq!(loaded.expires_at, c.expires_at, "taken from the certificate");
        assert_eq!(loaded.control_plane_url, None);
        loaded.check(crate::credentials::unix_now()).expect("usable");

        std::fs::write(tmp.path().join("enrollment.json"), "{not json").expect("write");
        let err = CredentialStore::dir(tmp.path()).load().await.expect_err("invalid");
        assert!(matches!(err, StoreError::Unusable { .. }), "{err}");
        std::fs::remove_file(tmp.path().join("agent.crt")).expect("rm");
        assert!(CredentialStore::dir(tmp.path()).load().await.expect("load").is_none());
    }
}
