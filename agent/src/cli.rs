//! Command line, configuration file and environment, and `main`.
//!
//! Precedence: defaults < file (`--config`, TOML) < environment
//! (`KUBECHAT_*`) < flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser};
use kubechat_transport::process;
use kubechat_transport::tls::{self, Identity};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{BootstrapToken, Config, Enrollment, RelayEndpoint};
use crate::store::{StoreLocation, default_namespace};

/// The KubeChat agent.
#[derive(Debug, Parser)]
#[command(name = "kubechat-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    raw: RawConfig,
    /// Configuration file (TOML, keys as the long flags).
    #[arg(long, env = "KUBECHAT_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// Enroll with the control plane: make a key, send a CSR with the
    /// bootstrap token, write agent.key/agent.crt/relay-ca.crt/enrollment.json.
    Enroll {
        /// Control plane URL.
        #[arg(long, env = "KUBECHAT_CONTROL_PLANE_URL")]
        control_plane: String,
        /// The one-time bootstrap token (kcb_…).
        #[arg(long, env = "KUBECHAT_BOOTSTRAP_TOKEN", hide_env_values = true)]
        bootstrap_token: String,
        /// CA bundle to trust for the control plane (PEM).
        #[arg(long, env = "KUBECHAT_CONTROL_PLANE_CA")]
        ca_file: Option<PathBuf>,
        /// CA bundle (PEM) of an https:// HTTPS_PROXY [default: the control-plane CA].
        #[arg(long, env = "KUBECHAT_PROXY_CA")]
        proxy_ca: Option<PathBuf>,
        /// Directory to write into.
        #[arg(long, default_value = "/var/run/kubechat")]
        out: PathBuf,
    },
}

/// Every setting, all optional, as flags/environment and as file keys.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    /// Relay `host:port`; repeat (or comma-separate) for several relays.
    #[arg(long = "relay", env = "KUBECHAT_RELAYS", value_delimiter = ',')]
    #[serde(default)]
    relay: Vec<String>,
    /// Agent certificate chain (PEM).
    #[arg(long, env = "KUBECHAT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Agent private key (PEM).
    #[arg(long, env = "KUBECHAT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The relay CA to pin (PEM).
    #[arg(long, env = "KUBECHAT_RELAY_CA")]
    relay_ca: Option<PathBuf>,
    /// kubeconfig for the API server [default: in-cluster, then $KUBECONFIG].
    #[arg(long, env = "KUBECHAT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Admin listener address [default: 0.0.0.0:9090]; "off" disables it.
    #[arg(long, env = "KUBECHAT_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// This instance's id [default: $POD_NAME or $HOSTNAME].
    #[arg(long, env = "KUBECHAT_AGENT_ID")]
    agent_id: Option<String>,
    /// Request streams a relay may open at once per tunnel [default: 1024].
    #[arg(long, env = "KUBECHAT_MAX_CONCURRENT_STREAMS")]
    max_concurrent_streams: Option<u32>,
    /// Largest request body forwarded, bytes [default: 134217728].
    #[arg(long, env = "KUBECHAT_MAX_REQUEST_BODY_BYTES")]
    max_request_body_bytes: Option<usize>,
    /// A tunnel without heartbeat answers this long is dead, seconds [default: 15].
    #[arg(long, env = "KUBECHAT_HEARTBEAT_TIMEOUT_SECS")]
    heartbeat_timeout_secs: Option<u64>,
    /// Largest reconnect delay, seconds [default: 30].
    #[arg(long, env = "KUBECHAT_BACKOFF_CAP_SECS")]
    backoff_cap_secs: Option<u64>,
    /// TCP port of the relays' WebSocket fallback (same hosts as --relay);
    /// used when QUIC cannot connect, through HTTPS_PROXY/NO_PROXY if set.
    #[arg(long, env = "KUBECHAT_RELAY_WS_PORT")]
    relay_ws_port: Option<u16>,
    /// CA bundle (PEM) for an https:// HTTPS_PROXY [default: the relay CA].
    #[arg(long, env = "KUBECHAT_PROXY_CA")]
    proxy_ca: Option<PathBuf>,
    /// Tunnels to keep, each to a distinct relay of the list [default: 2].
    #[arg(long, env = "KUBECHAT_RELAY_CONNECTIONS")]
    relay_connections: Option<usize>,
    /// Seconds readiness stays true after the last tunnel went down [default: 10].
    #[arg(long, env = "KUBECHAT_READY_GRACE_SECS")]
    ready_grace_secs: Option<u64>,
    /// Seconds in-flight streams get on shutdown [default: 30].
    #[arg(long, env = "KUBECHAT_GRACE_PERIOD_SECS")]
    grace_period_secs: Option<u64>,
    /// Control-plane grant key, `key-id=base64url-ed25519-public-key`;
    /// repeat (or comma-separate). With any set, every request must carry a
    /// valid grant for this agent's cluster.
    #[arg(long = "grant-key", env = "KUBECHAT_GRANT_KEYS", value_delimiter = ',')]
    #[serde(default)]
    grant_key: Vec<String>,
    /// Enrollment mode: keep the credentials (key, certificate, relay CA,
    /// relays, grant keys) in this Secret, enrolling with the bootstrap token
    /// when it holds none that is usable; --relay, --grant-key, --relay-ca
    /// and --tls-cert/--tls-key, if given, override what it holds.
    #[arg(long, env = "KUBECHAT_STATE_SECRET", conflicts_with = "state_dir")]
    state_secret: Option<String>,
    /// Namespace of --state-secret [default: the pod's namespace, else "default"].
    #[arg(long, env = "KUBECHAT_STATE_NAMESPACE")]
    state_namespace: Option<String>,
    /// Enrollment mode with the credentials in this directory (the files
    /// `kubechat-agent enroll` writes) instead of a Secret.
    #[arg(long, env = "KUBECHAT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Control plane URL, to enroll and to renew the certificate
    /// [default: the one stored at enrollment].
    #[arg(long, env = "KUBECHAT_CONTROL_PLANE_URL")]
    control_plane: Option<String>,
    /// CA bundle to trust for the control plane (PEM) [default: the one
    /// stored at enrollment, else the system's CA bundle].
    #[arg(long, env = "KUBECHAT_CONTROL_PLANE_CA")]
    control_plane_ca: Option<PathBuf>,
    /// The one-time bootstrap token (kcb_…); used only when no usable
    /// credentials are stored.
    #[arg(long, env = "KUBECHAT_BOOTSTRAP_TOKEN", hide_env_values = true, conflicts_with = "bootstrap_token_file")]
    bootstrap_token: Option<BootstrapToken>,
    /// File holding the bootstrap token; a missing file means no token (the
    /// stored credentials must then be usable).
    #[arg(long, env = "KUBECHAT_BOOTSTRAP_TOKEN_FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// Renew the certificate at this fraction of its life, from notBefore
    /// [default: 0.667].
    #[arg(long, env = "KUBECHAT_RENEW_AT_FRACTION")]
    renew_at_fraction: Option<f64>,
}

impl RawConfig {
    /// `self` (flags and environment) over `file`.
    fn over(self, file: Self) -> Self {
        Self {
            relay: if self.relay.is_empty() { file.relay } else { self.relay },
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            relay_ca: self.relay_ca.or(file.relay_ca),
            kubeconfig: self.kubeconfig.or(file.kubeconfig),
            admin_listen: self.admin_listen.or(file.admin_listen),
            agent_id: self.agent_id.or(file.agent_id),
            max_concurrent_streams: self.max_concurrent_streams.or(file.max_concurrent_streams),
            max_request_body_bytes: self.max_request_body_bytes.or(file.max_request_body_bytes),
            heartbeat_timeout_secs: self.heartbeat_timeout_secs.or(file.heartbeat_timeout_secs),
            backoff_cap_secs: self.backoff_cap_secs.or(file.backoff_cap_secs),
            grace_period_secs: self.grace_period_secs.or(file.grace_period_secs),
            ready_grace_secs: self.ready_grace_secs.or(file.ready_grace_secs),
            relay_connections: self.relay_connections.or(file.relay_connections),
            relay_ws_port: self.relay_ws_port.or(file.relay_ws_port),
            proxy_ca: self.proxy_ca.or(file.proxy_ca),
            grant_key: if self.grant_key.is_empty() { file.grant_key } else { self.grant_key },
            state_secret: self.state_secret.or(file.state_secret),
            state_namespace: self.state_namespace.or(file.state_namespace),
            state_dir: self.state_dir.or(file.state_dir),
            control_plane: self.control_plane.or(file.control_plane),
            control_plane_ca: self.control_plane_ca.or(file.control_plane_ca),
            bootstrap_token: self.bootstrap_token.or(file.bootstrap_token),
            bootstrap_token_file: self.bootstrap_token_file.or(file.bootstrap_token_file),
            renew_at_fraction: self.renew_at_fraction.or(file.renew_at_fraction),
        }
    }

    /// Enrollment mode's settings, if a store is configured.
    fn enrollment(&self) -> anyhow::Result<Option<Enrollment>> {
        let store = match (&self.state_secret, &self.state_dir) {
            (Some(_), Some(_)) => anyhow::bail!("pass --state-secret or --state-dir, not both"),
            (Some(name), None) => StoreLocation::Secret {
                namespace: self.state_namespace.clone().unwrap_or_else(default_namespace),
                name: name.clone(),
            },
            (None, Some(dir)) => StoreLocation::Dir(dir.clone()),
            (None, None) => {
                anyhow::ensure!(
                    self.control_plane.is_none()
                        && self.bootstrap_token.is_none()
                        && self.bootstrap_token_file.is_none(),
                    "--control-plane and --bootstrap-token need --state-secret (or --state-dir) to keep the credentials"
                );
                return Ok(None);
            }
        };
        if let Some(url) = &self.control_plane {
            let uri: http::Uri = url.parse().with_context(|| format!("--control-plane {url:?} is not a URL"))?;
            anyhow::ensure!(
                uri.scheme_str() == Some("https") && uri.host().is_some(),
                "--control-plane {url:?} must be an https:// URL"
            );
        }
        let control_plane_ca = match &self.control_plane_ca {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --control-plane-ca {}", path.display()))?;
                tls::parse_ca_pem(&pem).with_context(|| format!("invalid --control-plane-ca {}", path.display()))?;
                Some(pem)
            }
            None => None,
        };
        let bootstrap_token = match (&self.bootstrap_token, &self.bootstrap_token_file) {
            (Some(_), Some(_)) => anyhow::bail!("pass --bootstrap-token or --bootstrap-token-file, not both"),
            (Some(t), None) => Some(t.clone()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) => Some(BootstrapToken::new(text.trim())),
                // The token's Secret may be gone once the agent has enrolled.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => anyhow::bail!("cannot read --bootstrap-token-file {}: {e}", path.display()),
            },
            (None, None) => None,
        };
        Ok(Some(Enrollment {
            store,
            control_plane_url: self.control_plane.clone(),
            control_plane_ca,
            bootstrap_token: bootstrap_token.filter(|t| !t.expose().is_empty()),
        }))
    }

    async fn validate(self) -> anyhow::Result<Config> {
        fn need<T>(v: Option<T>, flag: &str) -> anyhow::Result<T> {
            v.with_context(|| {
                format!(
                    "--{flag} is required (or KUBECHAT_{} / `{flag}` in the file)",
                    flag.to_uppercase().replace('-', "_")
                )
            })
        }
        let enrollment = self.enrollment()?;
        if enrollment.is_none() {
            anyhow::ensure!(
                !self.relay.is_empty(),
                "at least one --relay host:port is required (or KUBECHAT_RELAYS), or --state-secret to enroll"
            );
        }
        let relays = self
            .relay
            .iter()
            .map(|r| RelayEndpoint::parse(r.trim()).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let identity = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(Identity::from_files(&cert, &key)?),
            (None, None) => None,
            (cert, key) => Some(Identity::from_files(&need(cert, "tls-cert")?, &need(key, "tls-key")?)?),
        };
        let relay_ca = self.relay_ca.map(|path| tls::load_certs(&path, "relay CA bundle")).transpose()?;
        let kube = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("invalid kubeconfig {}", path.display()))?
            }
            None => kube::Config::infer().await.context("no in-cluster service account and no usable $KUBECONFIG")?,
        };
        let enrolling = enrollment.is_some();
        let mut c = match enrollment {
            Some(e) => {
                Config { relays, tls: identity, relay_ca: relay_ca.unwrap_or_default(), ..Config::enrolling(kube, e) }
            }
            None => Config::new(relays, need(identity, "tls-cert")?, need(relay_ca, "relay-ca")?, kube),
        };
        if let Some(f) = self.renew_at_fraction {
            anyhow::ensure!(f > 0.0 && f < 1.0, "--renew-at-fraction must be between 0 and 1 (exclusive)");
            c.renew_at_fraction = f;
        }
        c.admin_listen = match self.admin_listen.as_deref() {
            Some("off") => None,
            Some(a) => Some(a.parse().with_context(|| format!("--admin-listen {a:?} is not an address"))?),
            None => Some(([0, 0, 0, 0], 9090).into()),
        };
        c.agent_id = self
            .agent_id
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "agent-0".into());
        if let Some(n) = self.max_concurrent_streams {
            anyhow::ensure!(n > 0, "--max-concurrent-streams must be at least 1");
            c.max_concurrent_streams = n;
        }
        if let Some(n) = self.max_request_body_bytes {
            c.max_request_body = n;
        }
        if let Some(s) = self.heartbeat_timeout_secs {
            anyhow::ensure!(s >= 2, "--heartbeat-timeout-secs must be at least 2");
            c.heartbeat_timeout = Duration::from_secs(s);
            c.heartbeat_interval = c.heartbeat_interval.min(Duration::from_secs(s) / 3).max(Duration::from_millis(500));
        }
        if let Some(s) = self.backoff_cap_secs {
            anyhow::ensure!(s >= 1, "--backoff-cap-secs must be at least 1");
            c.backoff_cap = Duration::from_secs(s);
        }
        c.relay_ws_port = self.relay_ws_port;
        let proxy = proxy_from_env(self.proxy_ca.as_deref())?;
        (c.https_proxy, c.no_proxy, c.proxy_ca) = (proxy.url, proxy.no_proxy, proxy.ca);
        if let Some(n) = self.relay_connections {
            anyhow::ensure!(n >= 1, "--relay-connections must be at least 1");
            c.relay_connections = n;
        }
        if let Some(s) = self.ready_grace_secs {
            c.ready_grace = Duration::from_secs(s);
        }
        if let Some(s) = self.grace_period_secs {
            c.grace_period = Duration::from_secs(s);
        }
        let keys = self
            .grant_key
            .iter()
            .map(|k| kubechat_protocol::grant::parse_key_spec(k).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if keys.is_empty() && !enrolling {
            tracing::warn!("no --grant-key: requests are not checked against control-plane grants (development only)");
        }
        c.grants = kubechat_protocol::grant::GrantVerifier::new(keys);
        Ok(c)
    }
}

fn load_file(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The egress proxy from `HTTPS_PROXY`/`NO_PROXY` (or their lower-case
/// forms) and `proxy_ca`.
fn proxy_from_env(proxy_ca: Option<&std::path::Path>) -> anyhow::Result<crate::proxy::EgressProxy> {
    let env = |k: &str| std::env::var(k).or_else(|_| std::env::var(k.to_lowercase())).ok().filter(|v| !v.is_empty());
    let url = env("HTTPS_PROXY");
    if let Some(p) = &url {
        // The message never repeats the URL: it may hold a password.
        crate::proxy::ProxyUrl::parse(p).map_err(anyhow::Error::msg)?;
    }
    let no_proxy = env("NO_PROXY").map(|v| v.split(',').map(|s| s.trim().to_string()).collect()).unwrap_or_default();
    let ca = match proxy_ca {
        Some(f) => kubechat_transport::tls::load_certs(f, "proxy CA bundle")?,
        None => Vec::new(),
    };
    Ok(crate::proxy::EgressProxy { url, no_proxy, ca })
}

/// The agent binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_tracing();
    let rt = match process::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if let Some(AgentCommand::Enroll { control_plane, bootstrap_token, ca_file, proxy_ca, out }) = &cli.command {
        return rt.block_on(async {
            let ca = match ca_file.as_deref().map(std::fs::read_to_string).transpose() {
                Ok(ca) => ca,
                Err(e) => return process::config_error(&format!("cannot read --ca-file: {e}")),
            };
            let proxy = match proxy_from_env(proxy_ca.as_deref()) {
                Ok(p) => p,
                Err(e) => return process::config_error(&format!("{e:#}")),
            };
            match crate::enroll::enroll(control_plane, bootstrap_token, ca.as_deref(), &proxy, out).await {
                Ok(e) => {
                    println!("enrolled as {}; relays {}; wrote {}", e.identity, e.relays.join(","), out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(process::EXIT_FAILURE)
                }
            }
        });
    }
    rt.block_on(async {
        let file = match cli.config.as_deref().map(load_file).transpose() {
            Ok(f) => f.unwrap_or_default(),
            Err(e) => return process::config_error(&format!("{e:#}")),
        };
        let config = match cli.raw.over(file).validate().await {
            Ok(c) => c,
            Err(e) => return process::config_error(&format!("{e:#}")),
        };
        if cli.check_config {
            println!("configuration is valid");
            return ExitCode::SUCCESS;
        }
        let shutdown = CancellationToken::new();
        process::cancel_on_signals(shutdown.clone());
        match crate::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "agent failed");
                ExitCode::from(process::EXIT_FAILURE)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn kubeconfig(dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
        )
        .expect("write kubeconfig");
        path
    }

    #[tokio::test]
    async fn a_state_secret_and_a_control_plane_make_enrollment_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, "kcb_fromfile\n").expect("write");
        let flags = Cli::try_parse_from([
            "kubechat-agent",
            "--state-secret",
            "kubechat-agent-state",
            "--state-namespace",
            "kubechat",
            "--control-plane",
            "https://cp.example",
            "--bootstrap-token-file",
            token_file.to_str().expect("path"),
            "--admin-listen",
            "off",
        ])
        .expect("parse");
        let file: RawConfig = toml::from_str(&format!(
            "kubeconfig = {:?}\ncontrol-plane = \"https://ignored.example\"\nrenew-at-fraction = 0.5\n",
            kubeconfig(tmp.path())
        ))
        .expect("toml");
        let c = flags.raw.over(file).validate().await.expect("valid");
        let e = c.enrollment.as_ref().expect("enrollment mode");
        assert_eq!(
            e.store,
            StoreLocation::Secret { namespace: "kubechat".into(), name: "kubechat-agent-state".into() }
        );
        // Flags over the file.
        assert_eq!(e.control_plane_url.as_deref(), Some("https://cp.example"));
        assert_eq!(e.bootstrap_token.as_ref().map(BootstrapToken::expose), Some("kcb_fromfile"));
        assert!((c.renew_at_fraction - 0.5).abs() < f64::EPSILON);
        assert!(c.tls.is_none() && c.relays.is_empty() && c.relay_ca.is_empty());
        assert!(!format!("{c:?}").contains("kcb_fromfile"));
    }

    #[tokio::test]
    async fn enrollment_settings_need_a_store_and_one_token_source() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let kc = kubeconfig(tmp.path());
        let raw = |args: &[&str]| {
            let mut all = vec!["kubechat-agent", "--kubeconfig", kc.to_str().expect("path")];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| c.raw)
        };
        let err = raw(&["--control-plane", "https://cp"]).expect("parse").validate().await.expect_err("no store");
        assert!(err.to_string().contains("--state-secret"), "{err}");
        let err = raw(&["--state-dir", "/x", "--control-plane", "http://cp"])
            .expect("parse")
            .validate()
            .await
            .expect_err("plain http");
        assert!(err.to_string().contains("https://"), "{err}");
        assert!(raw(&["--state-secret", "s", "--state-dir", "/x"]).is_err(), "both stores");
        assert!(raw(&["--bootstrap-token", "a", "--bootstrap-token-file", "/x"]).is_err(), "both tokens");
        let err = raw(&["--state-dir", "/x", "--renew-at-fraction", "1.5"])
            .expect("parse")
            .validate()
            .await
            .expect_err("fraction");
        assert!(err.to_string().contains("--renew-at-fraction"), "{err}");
        // A token file that is gone is no token (the stored credentials serve).
        let c = raw(&["--state-dir", "/x", "--bootstrap-token-file", "/nonexistent/token"])
            .expect("parse")
            .validate()
            .await
            .expect("valid");
        assert!(c.enrollment.expect("enrollment").bootstrap_token.is_none());
        // Without a store, the old flags stay required.
        let err = raw(&[]).expect("parse").validate().await.expect_err("nothing");
        assert!(err.to_string().contains("--relay"), "{err}");
    }
}
