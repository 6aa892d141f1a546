//! The `kubechat-control-plane` server's command line and `main`:
//! configuration from [`crate::config`], `--check-config`, signals.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kubechat_transport::process;
use tokio_util::sync::CancellationToken;

use crate::ControlPlane;
use crate::config::RawConfig;

/// The KubeChat control plane.
#[derive(Debug, Parser)]
#[command(name = "kubechat-control-plane", version, about)]
pub struct Cli {
    #[command(flatten)]
    serve: RawConfig,
    /// Configuration file (TOML, keys as the long flags).
    #[arg(long, env = "KUBECHAT_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

/// The server binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_tracing();
    let file = match cli.config.as_deref().map(RawConfig::load).transpose() {
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
