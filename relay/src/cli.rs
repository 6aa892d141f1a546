//! Command line, configuration file and environment, and `main`.
//!
//! Precedence: defaults < file (`--config`, TOML) < environment
//! (`KUBECHAT_*`) < flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kubechat_protocol::ClusterIdentity;
use kubechat_transport::pki::DevPki;
use kubechat_transport::process;
use kubechat_transport::tls::{self, Identity};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The KubeChat relay.
#[derive(Debug, Parser)]
#[command(name = "kubechat-relay", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: RawConfig,
    /// Configuration file (TOML, keys as the long flags).
    #[arg(long, env = "KUBECHAT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a development CA set and certificates for a relay, an agent and
    /// the internal client.
    DevCerts(DevCertsArgs),
    /// Issue another agent certificate from a dev-certs directory's agent CA
    /// (development only; enrollment replaces this).
    DevAgentCert(DevAgentCertArgs),
}

#[derive(Debug, Args)]
struct DevAgentCertArgs {
    /// The dev-certs directory (holds agent-ca.crt and agent-ca.key).
    #[arg(long, default_value = ".dev/certs")]
    dir: PathBuf,
    /// Tenant id.
    #[arg(long)]
    tenant: String,
    /// Cluster id.
    #[arg(long)]
    cluster: String,
    /// File stem to write (`<stem>.crt`, `<stem>.key`) in the directory.
    #[arg(long, default_value = "agent")]
    stem: String,
}

#[derive(Debug, Args)]
struct DevCertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = ".dev/certs")]
    out: PathBuf,
    /// Tenant of the agent certificate.
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Cluster of the agent certificate.
    #[arg(long, default_value = "dev")]
    cluster: String,
    /// The relay id the relay certificate names.
    #[arg(long, default_value = "relay-0")]
    relay_id: String,
    /// Names (DNS or IP) for the relay certificate; repeatable.
    #[arg(long = "name", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string()])]
    names: Vec<String>,
}

/// Every setting, all optional, as flags/environment and as file keys.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    /// Relay instance id.
    #[arg(long, env = "KUBECHAT_RELAY_ID")]
    relay_id: Option<String>,
    /// Region served.
    #[arg(long, env = "KUBECHAT_REGION")]
    region: Option<String>,
    /// UDP address of the QUIC tunnel listener [default: 0.0.0.0:7443].
    #[arg(long, env = "KUBECHAT_QUIC_LISTEN")]
    quic_listen: Option<String>,
    /// TCP address of the WebSocket fallback listener (TLS; for agents that
    /// cannot use UDP), e.g. 0.0.0.0:443 [default: off].
    #[arg(long, env = "KUBECHAT_WS_LISTEN")]
    ws_listen: Option<String>,
    /// TCP address of the internal HTTPS listener [default: 0.0.0.0:7444].
    #[arg(long, env = "KUBECHAT_INTERNAL_LISTEN")]
    internal_listen: Option<String>,
    /// TCP address of the admin listener [default: 127.0.0.1:9090]; "off" disables it.
    #[arg(long, env = "KUBECHAT_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Relay certificate chain (PEM).
    #[arg(long, env = "KUBECHAT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Relay private key (PEM).
    #[arg(long, env = "KUBECHAT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA bundle agent certificates must chain to (PEM).
    #[arg(long, env = "KUBECHAT_AGENT_CA")]
    agent_ca: Option<PathBuf>,
    /// CA bundle control-plane client certificates must chain to (PEM).
    #[arg(long, env = "KUBECHAT_INTERNAL_CA")]
    internal_ca: Option<PathBuf>,
    /// Request streams one tunnel may carry at once [default: 1024].
    #[arg(long, env = "KUBECHAT_MAX_STREAMS_PER_TUNNEL")]
    max_streams_per_tunnel: Option<usize>,
    /// Largest request head in bytes [default: 65536].
    #[arg(long, env = "KUBECHAT_MAX_HEADER_BYTES")]
    max_header_bytes: Option<usize>,
    /// Heartbeat interval asked of agents, seconds [default: 5].
    #[arg(long, env = "KUBECHAT_HEARTBEAT_SECS")]
    heartbeat_secs: Option<u64>,
    /// Drop a silent tunnel after this many seconds [default: 15].
    #[arg(long, env = "KUBECHAT_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Seconds in-flight streams get on shutdown [default: 30].
    #[arg(long, env = "KUBECHAT_GRACE_PERIOD_SECS")]
    grace_period_secs: Option<u64>,
    /// Development only: without a kubechat-user header, take the identity
    /// from Impersonate-User/Group (kubectl --as) [default: false].
    #[arg(long, env = "KUBECHAT_DEV_IDENTITY_FROM_IMPERSONATION")]
    dev_identity_from_impersonation: Option<bool>,
    /// Control-plane grant key, `key-id=base64url-ed25519-public-key`;
    /// repeat (or comma-separate) for rotation. With any set, every request
    /// must carry a valid grant.
    #[arg(long = "grant-key", env = "KUBECHAT_GRANT_KEYS", value_delimiter = ',')]
    grant_key: Option<Vec<String>>,
    /// The control plane's internal gRPC endpoint, e.g. https://cp:8444:
    /// tunnel presence is reported there (mutual TLS with this relay's
    /// certificate) and revocations come back.
    #[arg(long, env = "KUBECHAT_CONTROL_PLANE_URL")]
    control_plane_url: Option<String>,
    /// CA bundle to trust for the control plane's internal endpoint (PEM).
    #[arg(long, env = "KUBECHAT_CONTROL_PLANE_CA")]
    control_plane_ca: Option<PathBuf>,
    /// The internal listener's address as the control plane should dial it
    /// [default: the bound --internal-listen address].
    #[arg(long, env = "KUBECHAT_ADVERTISE_INTERNAL")]
    advertise_internal: Option<String>,
    /// Report presence at least this often, milliseconds (the lease is three
    /// intervals, at least 3 s) [default: 2000].
    #[arg(long, env = "KUBECHAT_PRESENCE_INTERVAL_MS")]
    presence_interval_ms: Option<u64>,
    /// Directory of the audit and usage event spool (events stay here until
    /// the control plane acknowledges them) [default: none, development only].
    #[arg(long, env = "KUBECHAT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Spool size in MiB past which writes, exec, attach and port-forward are
    /// refused [default: 256].
    #[arg(long, env = "KUBECHAT_SPOOL_MAX_MIB")]
    spool_max_mib: Option<u64>,
}

macro_rules! merge {
    ($a:ident, $b:ident, $($f:ident),*) => { RawConfig { $($f: $a.$f.or($b.$f)),* } };
}

impl RawConfig {
    /// `self` (flags and environment) over `file`.
    fn over(self, file: Self) -> Self {
        merge!(
            self,
            file,
            relay_id,
            region,
            quic_listen,
            ws_listen,
            internal_listen,
            admin_listen,
            tls_cert,
            tls_key,
            agent_ca,
            internal_ca,
            max_streams_per_tunnel,
            max_header_bytes,
            heartbeat_secs,
            idle_timeout_secs,
            grace_period_secs,
            dev_identity_from_impersonation,
            grant_key,
            control_plane_url,
            control_plane_ca,
            advertise_internal,
            presence_interval_ms,
            spool_dir,
            spool_max_mib
        )
    }

    fn validate(self) -> anyhow::Result<Config> {
        fn need<T>(v: Option<T>, flag: &str) -> anyhow::Result<T> {
            v.with_context(|| {
                format!(
                    "--{flag} is required (or KUBECHAT_{} / `{flag}` in the file)",
                    flag.to_uppercase().replace('-', "_")
                )
            })
        }
        fn addr(v: Option<String>, default: &str, flag: &str) -> anyhow::Result<std::net::SocketAddr> {
            let s = v.unwrap_or_else(|| default.to_string());
            s.parse().with_context(|| format!("--{flag} {s:?} is not an address like 0.0.0.0:7443"))
        }
        let cert = need(self.tls_cert, "tls-cert")?;
        let key = need(self.tls_key, "tls-key")?;
        let identity = Identity::from_files(&cert, &key)?;
        let agent_ca = tls::load_certs(&need(self.agent_ca, "agent-ca")?, "agent CA bundle")?;
        let internal_ca = tls::load_certs(&need(self.internal_ca, "internal-ca")?, "internal CA bundle")?;
        let mut c = Config::new(identity, agent_ca, internal_ca);
        c.relay_id = self.relay_id.unwrap_or_else(|| "relay-0".into());
        c.region = self.region.unwrap_or_else(|| "local".into());
        c.quic_listen = addr(self.quic_listen, "0.0.0.0:7443", "quic-listen")?;
        c.internal_listen = addr(self.internal_listen, "0.0.0.0:7444", "internal-listen")?;
        c.ws_listen = match self.ws_listen {
            Some(s) if s != "off" => Some(addr(Some(s), "", "ws-listen")?),
            _ => None,
        };
        c.admin_listen = match self.admin_listen.as_deref() {
            Some("off") => None,
            other => Some(addr(other.map(str::to_string), "127.0.0.1:9090", "admin-listen")?),
        };
        if let Some(n) = self.max_streams_per_tunnel {
            anyhow::ensure!(n > 0, "--max-streams-per-tunnel must be at least 1");
            c.max_streams_per_tunnel = n;
        }
        if let Some(n) = self.max_header_bytes {
            anyhow::ensure!(n >= 1024, "--max-header-bytes must be at least 1024");
            c.max_header_bytes = n;
        }
        if let Some(s) = self.heartbeat_secs {
            anyhow::ensure!(s > 0, "--heartbeat-secs must be at least 1");
            c.heartbeat_interval = Duration::from_secs(s);
        }
        if let Some(s) = self.idle_timeout_secs {
            anyhow::ensure!(
                s > c.heartbeat_interval.as_secs(),
                "--idle-timeout-secs must exceed the heartbeat interval"
            );
            c.idle_timeout = Duration::from_secs(s);
        }
        if let Some(s) = self.grace_period_secs {
            c.grace_period = Duration::from_secs(s);
        }
        c.identity_from_impersonation = self.dev_identity_from_impersonation.unwrap_or(false);
        let keys = self
            .grant_key
            .unwrap_or_default()
            .iter()
            .map(|k| kubechat_protocol::grant::parse_key_spec(k).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if keys.is_empty() {
            tracing::warn!("no --grant-key: requests are not checked against control-plane grants (development only)");
        }
        c.grants = kubechat_protocol::grant::GrantVerifier::new(keys);
        if let Some(url) = self.control_plane_url {
            anyhow::ensure!(url.starts_with("https://"), "--control-plane-url must be https://host:port");
            let ca = need(self.control_plane_ca, "control-plane-ca")?;
            let roots = tls::load_certs(&ca, "control-plane CA bundle")?;
            let client = tls::internal_client_config(&c.tls, &roots, &[b"h2"])?;
            let interval = Duration::from_millis(self.presence_interval_ms.unwrap_or(2000).max(100));
            c.presence = Some(crate::presence::PresenceTarget {
                url,
                tls: client,
                interval,
                advertise: self.advertise_internal,
            });
        } else {
            tracing::warn!(
                "no --control-plane-url: tunnels are not reported and revocations are not received (development only)"
            );
        }
        c.spool_dir = self.spool_dir;
        if c.spool_dir.is_none() {
            tracing::warn!("no --spool-dir: no audit or usage events are recorded (development only)");
        }
        if let Some(m) = self.spool_max_mib {
            anyhow::ensure!(m >= 1, "--spool-max-mib must be at least 1");
            c.spool_max_bytes = m << 20;
        }
        Ok(c)
    }
}

fn load_file(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn dev_agent_cert(args: &DevAgentCertArgs) -> anyhow::Result<()> {
    let read = |f: &str| {
        std::fs::read_to_string(args.dir.join(f)).with_context(|| format!("cannot read {f} in {}", args.dir.display()))
    };
    let ca = kubechat_transport::pki::CertAuthority::from_pem(&read("agent-ca.crt")?, &read("agent-ca.key")?)?;
    let id = ClusterIdentity::new(&args.tenant, &args.cluster)?;
    let spec = kubechat_transport::pki::LeafSpec {
        common_name: format!("kubechat-agent {id}"),
        uris: vec![id.spiffe_uri()],
        client: true,
        ..Default::default()
    };
    ca.issue(&spec, kubechat_transport::pki::Validity::for_duration(Duration::from_secs(30 * 24 * 3600)))?
        .write(&args.dir, &args.stem)?;
    println!("wrote {}/{}.crt for {id}", args.dir.display(), args.stem);
    Ok(())
}

fn dev_certs(args: &DevCertsArgs) -> anyhow::Result<()> {
    let id = ClusterIdentity::new(&args.tenant, &args.cluster)?;
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    DevPki::generate()?.write_dev_set(&args.out, &args.relay_id, &names, &id).context("writing dev certificates")?;
    println!("wrote a development CA set and certificates to {}", args.out.display());
    Ok(())
}

/// The relay binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_tracing();
    if let Some(Command::DevAgentCert(args)) = &cli.command {
        return match dev_agent_cert(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(process::EXIT_FAILURE)
            }
        };
    }
    if let Some(Command::DevCerts(args)) = &cli.command {
        return match dev_certs(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(process::EXIT_FAILURE)
            }
        };
    }
    let file = match cli.config.as_deref().map(load_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return process::config_error(&format!("{e:#}")),
    };
    let config = match cli.serve.over(file).validate() {
        Ok(c) => c,
        Err(e) => return process::config_error(&format!("{e:#}")),
    };
    if cli.check_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let rt = match process::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        process::cancel_on_signals(shutdown.clone());
        match crate::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "relay failed");
                ExitCode::from(process::EXIT_FAILURE)
            }
        }
    })
}
