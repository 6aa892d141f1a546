//! What every KubeChat binary's `main` does: install logging, turn signals
//! into a cancellation, and map errors to exit codes.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// Exit code for invalid configuration (EX_USAGE), before anything starts.
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

/// Installs the fmt subscriber; the filter comes from `KUBECHAT_LOG`
/// (e.g. `info,kubechat_relay=debug`), default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBECHAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Cancels `token` on the first SIGTERM or SIGINT; a second signal exits
/// the process at once with code 130.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down (send again to force)");
        token.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal; exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers there is nothing to wait for.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Prints a configuration error and returns [`EXIT_CONFIG`].
pub fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: invalid configuration: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Builds the multi-threaded tokio runtime every binary uses; if it
/// cannot, says why on stderr and gives the exit code to return.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_FAILURE)
    })
}
