//! The WebSocket fallback: an agent whose QUIC cannot get out connects over
//! WebSocket (TLS over TCP, yamux streams) on its own, and everything works
//! over it — the whole kubectl suite.

use kubechat_tests::kubectl_suite as suite;
use kubechat_tests::stack::KubeStack;

const USER: &str = "kubechat:user:alice@example.com";
const USER_GROUPS: &[&str] = &["kubechat:tenant:acme", "kubechat:role:tenant_user"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_blocked_the_agent_falls_back_to_websocket_and_kubectl_works() {
    let s = KubeStack::start_over_websocket().await;
    let (transport, n) = {
        let t = s.relay.handle.tunnel_transports();
        (t.first().cloned().unwrap_or_default(), t.len())
    };
    assert_eq!((transport.as_str(), n), ("websocket", 1));
    suite::all(&s.kubectl(USER, USER_GROUPS)).await;
}

/// A tinyproxy of our own on a free port (the binary comes from
/// `scripts/install-tinyproxy.sh`, which the test command runs).
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start() -> Self {
        let bin = std::env::var("KUBECHAT_TINYPROXY")
            .expect("KUBECHAT_TINYPROXY is not set: run `bash scripts/test.sh` (it installs tinyproxy)");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = kubechat_tests::stack::free_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 600\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 100\n",
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
        Self { child, port, log, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_real_https_proxy_the_websocket_tunnel_carries_kubectl() {
    let proxy = Tinyproxy::start();
    // Wait until it listens.
    let port = proxy.port;
    kubechat_tests::wait::eventually("tinyproxy listens", std::time::Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    let s = KubeStack::start_over_websocket_with(|c| c.https_proxy = Some(format!("http://127.0.0.1:{port}"))).await;
    assert_eq!(s.relay.handle.tunnel_transports(), vec!["websocket".to_string()]);
    let k = s.kubectl(USER, USER_GROUPS);
    suite::version_and_get_pods_across_namespaces(&k).await;
    suite::exec_runs_commands_and_cat_echoes_stdin(&k).await;
    let log = proxy.log();
    let ws = s.relay.ws.expect("ws listener");
    assert!(log.contains("CONNECT") && log.contains(&format!("127.0.0.1:{}", ws.port())), "{log}");
}
