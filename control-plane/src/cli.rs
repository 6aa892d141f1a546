//! The `kubechat-control-plane` server's command line and `main`.

use std::net::SocketAddr;
use std::process::ExitCode;

use std::path::PathBuf;

use crate::{Config, ControlPlane, RelayTls, Secret};
use anyhow::Context as _;
use clap::Parser;
use kubechat_transport::process;
use kubechat_transport::tls;
use tokio_util::sync::CancellationToken;

/// The KubeChat control plane.
#[derive(Parser)]
#[command(name = "kubechat-control-plane", version, about)]
struct Cli {
    /// Address of the REST API.
    #[arg(long, env = "KUBECHAT_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// sqlite://path?mode=rwc (embedded default) or postgres://user@host/db.
    #[arg(
        long,
        env = "KUBECHAT_DATABASE_URL",
        default_value = "sqlite://kubechat.db?mode=rwc",
        hide_env_values = true
    )]
    database_url: String,
    /// The platform admin's token to create on first start (kc_…); without
    /// it one is generated and printed once.
    #[arg(long, env = "KUBECHAT_PLATFORM_ADMIN_TOKEN", hide_env_values = true)]
    platform_admin_token: Option<String>,
    /// Home region of new tenants when none is given.
    #[arg(long, env = "KUBECHAT_DEFAULT_REGION", default_value = "local")]
    default_region: String,
    /// Requests per second per API token.
    #[arg(long, env = "KUBECHAT_PER_TOKEN_RPS", default_value_t = 50.0)]
    per_token_rps: f64,
    /// Requests per second per tenant.
    #[arg(long, env = "KUBECHAT_PER_TENANT_RPS", default_value_t = 200.0)]
    per_tenant_rps: f64,
    /// Serving certificate (PEM); with --tls-key, serve HTTPS (kubectl sends
    /// tokens only over TLS).
    #[arg(long, env = "KUBECHAT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "KUBECHAT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Address of the internal gRPC listener relays report tunnel presence
    /// to (mutual TLS; needs --tls-cert, --relay-ca and the relay client
    /// certificate). Kube requests go to whichever relay reports the cluster.
    #[arg(long, env = "KUBECHAT_INTERNAL_LISTEN")]
    internal_listen: Option<SocketAddr>,
    /// CA bundle relays' certificates chain to (PEM).
    #[arg(long, env = "KUBECHAT_RELAY_CA")]
    relay_ca: Option<PathBuf>,
    /// The control plane's client certificate for relays (PEM).
    #[arg(long, env = "KUBECHAT_RELAY_CLIENT_CERT")]
    relay_client_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long, env = "KUBECHAT_RELAY_CLIENT_KEY")]
    relay_client_key: Option<PathBuf>,
    /// The agent CA certificate (PEM); with --agent-ca-key, enables enrollment.
    #[arg(long, env = "KUBECHAT_AGENT_CA_CERT")]
    agent_ca_cert: Option<PathBuf>,
    /// The agent CA key (PEM).
    #[arg(long, env = "KUBECHAT_AGENT_CA_KEY")]
    agent_ca_key: Option<PathBuf>,
    /// Relay endpoints given to enrolling agents, `region=host:port` (plain
    /// `host:port`: the default region), with `#ws=PORT` for the relay's
    /// WebSocket fallback; repeatable. Agents get only their tenant's home
    /// region's relays.
    #[arg(long = "enroll-relay", env = "KUBECHAT_ENROLL_RELAYS", value_delimiter = ',')]
    enroll_relays: Vec<String>,
    /// Life of agent certificates, hours.
    #[arg(long, env = "KUBECHAT_AGENT_CERT_HOURS", default_value_t = 24)]
    agent_cert_hours: u64,
    /// Seconds a renewed agent certificate stays valid next to its successor.
    #[arg(long, env = "KUBECHAT_RENEWAL_OVERLAP_SECS", default_value_t = 300)]
    renewal_overlap_secs: u64,
    /// URL users reach the control plane at, for kubeconfigs [default: https://<listen>].
    #[arg(long, env = "KUBECHAT_PUBLIC_URL")]
    public_url: Option<String>,
    /// CA bundle (PEM) kubeconfigs tell kubectl to trust.
    #[arg(long, env = "KUBECHAT_PUBLIC_CA")]
    public_ca: Option<PathBuf>,
    /// Agent chart named by the registration's `helm install` command (an
    /// OCI reference, a repo/chart, or a local path such as ./charts/kubechat-agent).
    #[arg(long, env = "KUBECHAT_AGENT_CHART", default_value = crate::helm::DEFAULT_AGENT_CHART)]
    agent_chart: String,
    /// Admin listener (plain HTTP: /healthz, /readyz, /metrics); "off" disables it.
    #[arg(long, env = "KUBECHAT_ADMIN_LISTEN", default_value = "127.0.0.1:9092")]
    admin_listen: String,
    /// Upstream failures in a row (relay unreachable, 502/503/504) that pause
    /// a tenant's kube requests.
    #[arg(long, env = "KUBECHAT_BREAKER_THRESHOLD", default_value_t = 20)]
    breaker_threshold: u32,
    /// Seconds a tenant's paused kube requests stay refused before a trial.
    #[arg(long, env = "KUBECHAT_BREAKER_COOLDOWN_SECS", default_value_t = 10)]
    breaker_cooldown_secs: u64,
    /// Grant signing key, key-id=base64url(PKCS#8 Ed25519) [default: generated per start].
    #[arg(long, env = "KUBECHAT_GRANT_SIGNING_KEY", hide_env_values = true)]
    grant_signing_key: Option<String>,
}

fn enrollment(cli: &Cli) -> anyhow::Result<Option<crate::enroll::Enrollment>> {
    let (Some(cert), Some(key)) = (&cli.agent_ca_cert, &cli.agent_ca_key) else {
        anyhow::ensure!(
            cli.agent_ca_cert.is_none() && cli.agent_ca_key.is_none(),
            "--agent-ca-cert and --agent-ca-key go together"
        );
        return Ok(None);
    };
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
    let ca = kubechat_transport::pki::CertAuthority::from_pem(&read(cert)?, &read(key)?)?;
    let relay_ca = read(cli.relay_ca.as_ref().context("enrollment needs --relay-ca (the CA agents pin)")?)?;
    anyhow::ensure!(!cli.enroll_relays.is_empty(), "enrollment needs at least one --enroll-relay host:port");
    anyhow::ensure!(cli.agent_cert_hours >= 1, "--agent-cert-hours must be at least 1");
    Ok(Some(crate::enroll::Enrollment {
        agent_ca: std::sync::Arc::new(ca),
        relay_ca_pem: relay_ca,
        relays: cli
            .enroll_relays
            .iter()
            .map(|r| match r.split_once('=') {
                // `region=host:port…`: a region never holds ':' or '#' (the
                // `#ws=` suffix of an address does).
                Some((region, addr)) if !region.contains([':', '#']) => (region.to_string(), addr.to_string()),
                _ => (cli.default_region.clone(), r.clone()),
            })
            .collect(),
        cert_lifetime: std::time::Duration::from_secs(cli.agent_cert_hours * 3600),
        bootstrap_lifetime: std::time::Duration::from_secs(3600),
        renewal_overlap: std::time::Duration::from_secs(cli.renewal_overlap_secs),
    }))
}

fn relay_tls(cli: &Cli) -> anyhow::Result<Option<RelayTls>> {
    let (Some(cert), Some(key)) = (&cli.relay_client_cert, &cli.relay_client_key) else {
        anyhow::ensure!(
            cli.relay_client_cert.is_none() && cli.relay_client_key.is_none(),
            "--relay-client-cert and --relay-client-key go together"
        );
        anyhow::ensure!(
            cli.internal_listen.is_none(),
            "--internal-listen needs --relay-client-cert/--relay-client-key"
        );
        return Ok(None);
    };
    let ca = cli.relay_ca.as_ref().context("--relay-client-cert needs --relay-ca")?;
    Ok(Some(RelayTls {
        client: tls::Identity::from_files(cert, key)?,
        relay_ca: tls::load_certs(ca, "relay CA bundle")?,
    }))
}

/// The server binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_tracing();
    if cli.per_token_rps <= 0.0 || cli.per_tenant_rps <= 0.0 {
        return process::config_error(&"rate limits must be positive");
    }
    let relays = match relay_tls(&cli) {
        Ok(r) => r,
        Err(e) => return process::config_error(&format!("{e:#}")),
    };
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(c), Some(k)) => match tls::Identity::from_files(c, k) {
            Ok(id) => Some(id),
            Err(e) => return process::config_error(&e),
        },
        (None, None) => None,
        _ => return process::config_error(&"--tls-cert and --tls-key go together"),
    };
    let enrollment = match enrollment(&cli) {
        Ok(e) => e,
        Err(e) => return process::config_error(&format!("{e:#}")),
    };
    let mut config = Config::new(&cli.database_url);
    config.enrollment = enrollment;
    config.relays = relays;
    config.internal_listen = cli.internal_listen;
    config.tls = tls;
    config.grant_signing_key = cli.grant_signing_key.clone().map(Secret);
    config.public_url = cli.public_url.clone();
    config.agent_chart = cli.agent_chart.clone();
    config.public_ca_pem = match &cli.public_ca {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(pem) => Some(pem),
            Err(e) => return process::config_error(&format!("cannot read --public-ca {}: {e}", f.display())),
        },
        None => None,
    };
    config.listen = cli.listen;
    config.platform_admin_token = cli.platform_admin_token.map(Secret);
    config.default_region = cli.default_region;
    config.per_token_rps = cli.per_token_rps;
    config.per_tenant_rps = cli.per_tenant_rps;
    config.admin_listen = match cli.admin_listen.as_str() {
        "off" => None,
        a => match a.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                return process::config_error(&format!("--admin-listen {a:?} is not an address like 127.0.0.1:9092"));
            }
        },
    };
    config.breaker_threshold = cli.breaker_threshold;
    config.breaker_cooldown = std::time::Duration::from_secs(cli.breaker_cooldown_secs);
    let rt = match process::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let cp = match ControlPlane::bind(config).await {
            Ok(cp) => cp,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(process::EXIT_FAILURE);
            }
        };
        if let Some(t) = &cp.created_admin_token {
            // Printed once, to stdout only; never logged.
            println!("platform admin token (shown once, store it now): {}", t.0);
        }
        let (key_id, _) = cp.grant_public_key();
        tracing::info!(addr = %cp.addr(), grant_key = %key_id, "control plane serving; relays and agents get the grant key from /v1/grant-keys");
        let shutdown = CancellationToken::new();
        process::cancel_on_signals(shutdown.clone());
        cp.run(shutdown).await;
        ExitCode::SUCCESS
    })
}
