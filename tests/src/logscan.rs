//! Captures every log line a test process produces — our crates at TRACE,
//! dependencies at DEBUG — so a test can assert that no token or private key
//! ever reaches a log. With `TEST_LOG` set, lines are printed as well.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// What the capture keeps.
const FILTER: &str = "debug,kubechat_relay=trace,kubechat_agent=trace,kubechat_control_plane=trace,kubechat_transport=trace,kubechat_protocol=trace,kube_sim=trace";

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Set by a program that logs as the binaries do instead (the benchmark).
static OPTED_OUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For a program that is not a test (the benchmark): it installs its own
/// subscriber, nothing is captured, and [`assert_no_secrets`] checks nothing.
pub fn opt_out() {
    OPTED_OUT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Installs the capturing subscriber (once per process; later calls do nothing).
pub fn install() {
    if OPTED_OUT.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let buffer = BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new()))).clone();
    let capture = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(move || Sink(buffer.clone()))
        .with_filter(EnvFilter::new(FILTER));
    let print = std::env::var("TEST_LOG")
        .ok()
        .map(|f| tracing_subscriber::fmt::layer().with_test_writer().with_filter(EnvFilter::new(f)));
    let _ = tracing_subscriber::registry().with(capture).with(print).try_init();
}

/// Every captured line so far.
pub fn captured() -> String {
    BUFFER
        .get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap_or_else(|p| p.into_inner())).into_owned())
        .unwrap_or_default()
}

/// Where a secret shows in `logs`: the given literal strings, PEM private
/// keys, KubeChat API tokens (`kc_` + 40 hex digits) and bootstrap tokens
/// (`kcb_…`). Returns the offending line, shortened so the secret itself is
/// not printed in full.
pub fn find_secret(logs: &str, literals: &[&str]) -> Option<String> {
    let hit = |line: &str| -> bool {
        literals.iter().any(|s| !s.is_empty() && line.contains(s))
            || line.contains("PRIVATE KEY")
            || line.contains("kcb_")
            || line.match_indices("kc_").any(|(i, _)| {
                let rest = &line.as_bytes()[i + 3..];
                rest.len() >= 40 && rest[..40].iter().all(u8::is_ascii_hexdigit)
            })
    };
    logs.lines().find(|l| hit(l)).map(|l| l.chars().take(120).collect())
}

/// Panics if any captured line holds a secret (see [`find_secret`]).
pub fn assert_no_secrets(literals: &[&str]) {
    if OPTED_OUT.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let logs = captured();
    assert!(!logs.is_empty(), "no log line was captured: is logscan::install() called?");
    if let Some(line) = find_secret(&logs, literals) {
        panic!("a secret reached the logs: {line}…");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_keys_and_literals() {
        let token = format!("kc_{}", "ab12".repeat(10));
        assert!(find_secret(&format!("x authorization: Bearer {token}"), &[]).is_some());
        assert!(find_secret("-----BEGIN PRIVATE KEY-----", &[]).is_some());
        assert!(find_secret("bootstrap kcb_0123", &[]).is_some());
        assert!(find_secret("agent token sim-agent-token", &["sim-agent-token"]).is_some());
        assert!(find_secret("kc_ prefix only kc_123", &[]).is_none());
        assert!(find_secret("tunnel up cluster=c123", &["sim-agent-token"]).is_none());
    }
}
