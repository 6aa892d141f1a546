//! Waiting for conditions (never for durations), and counting panics in
//! spawned tasks, which tokio would otherwise swallow.

use std::future::Future;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Logs to the test output when `TEST_LOG` is set (e.g. `TEST_LOG=debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Installs (once per process) a panic hook that counts every panic.
pub fn count_panics() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            prev(info);
        }));
    });
}

/// Panics seen since [`count_panics`] was installed.
pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// Polls `cond` until it is true or `within` has passed; panics with `what`
/// on timeout. The deadline only bounds a hang: tests never assert timing.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `fut`, failing the test with `what` if it hangs beyond `within`.
pub async fn within<T>(what: &str, within: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("hung: {what}"),
    }
}
