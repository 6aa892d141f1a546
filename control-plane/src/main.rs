//! The `kubechat-control-plane` server binary.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use kubechat_control_plane::{Config, ControlPlane, Secret};
use kubechat_transport::process;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_tracing();
    if cli.per_token_rps <= 0.0 || cli.per_tenant_rps <= 0.0 {
        return process::config_error(&"rate limits must be positive");
    }
    let mut config = Config::new(&cli.database_url);
    config.listen = cli.listen;
    config.platform_admin_token = cli.platform_admin_token.map(Secret);
    config.default_region = cli.default_region;
    config.per_token_rps = cli.per_token_rps;
    config.per_tenant_rps = cli.per_tenant_rps;
    let rt = match process::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(process::EXIT_FAILURE);
        }
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
        tracing::info!(addr = %cp.addr(), "control plane serving");
        let shutdown = CancellationToken::new();
        process::cancel_on_signals(shutdown.clone());
        cp.run(shutdown).await;
        ExitCode::SUCCESS
    })
}
