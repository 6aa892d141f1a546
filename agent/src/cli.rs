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

use crate::config::{Config, RelayEndpoint};

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
    /// Seconds in-flight streams get on shutdown [default: 30].
    #[arg(long, env = "KUBECHAT_GRACE_PERIOD_SECS")]
    grace_period_secs: Option<u64>,
    /// Control-plane grant key, `key-id=base64url-ed25519-public-key`;
    /// repeat (or comma-separate). With any set, every request must carry a
    /// valid grant for this agent's cluster.
    #[arg(long = "grant-key", env = "KUBECHAT_GRANT_KEYS", value_delimiter = ',')]
    #[serde(default)]
    grant_key: Vec<String>,
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
            grant_key: if self.grant_key.is_empty() { file.grant_key } else { self.grant_key },
        }
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
        anyhow::ensure!(!self.relay.is_empty(), "at least one --relay host:port is required (or KUBECHAT_RELAYS)");
        let relays = self
            .relay
            .iter()
            .map(|r| RelayEndpoint::parse(r.trim()).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let identity = Identity::from_files(&need(self.tls_cert, "tls-cert")?, &need(self.tls_key, "tls-key")?)?;
        let relay_ca = tls::load_certs(&need(self.relay_ca, "relay-ca")?, "relay CA bundle")?;
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
        let mut c = Config::new(relays, identity, relay_ca, kube);
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
        if let Some(s) = self.grace_period_secs {
            c.grace_period = Duration::from_secs(s);
        }
        let keys = self
            .grant_key
            .iter()
            .map(|k| kubechat_protocol::grant::parse_key_spec(k).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if keys.is_empty() {
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

/// The agent binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_tracing();
    let rt = match process::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(process::EXIT_FAILURE);
        }
    };
    if let Some(AgentCommand::Enroll { control_plane, bootstrap_token, ca_file, out }) = &cli.command {
        return rt.block_on(async {
            let ca = match ca_file.as_deref().map(std::fs::read_to_string).transpose() {
                Ok(ca) => ca,
                Err(e) => return process::config_error(&format!("cannot read --ca-file: {e}")),
            };
            match crate::enroll::enroll(control_plane, bootstrap_token, ca.as_deref(), out).await {
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
