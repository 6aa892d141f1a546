//! A real HTTP proxy (tinyproxy, from Debian's packages; the test command
//! installs it with `scripts/install-tinyproxy.sh`) for egress-proxy tests.

/// A tinyproxy of our own on a free port (the binary comes from
/// `scripts/install-tinyproxy.sh`, which the test command runs).
pub struct Tinyproxy {
    child: std::process::Child,
    /// Where it listens (127.0.0.1).
    pub port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts it and waits until it listens.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts it with extra configuration lines (e.g. `BasicAuth user pw`).
    pub async fn start_with(extra_config: &str) -> Self {
        let bin = std::env::var("KUBECHAT_TINYPROXY")
            .expect("KUBECHAT_TINYPROXY is not set: run `bash scripts/test.sh` (it installs tinyproxy)");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::stack::free_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 600\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 100\n{extra_config}\n",
                log.display()
            ),
        )
        .expect("write config");
        let child = std::process::Command::new(bin)
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tinyproxy");
        crate::wait::eventually("tinyproxy listens", std::time::Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Self { child, port, log, _dir: dir }
    }

    /// Its log (`LogLevel Connect`: one line per CONNECT).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
