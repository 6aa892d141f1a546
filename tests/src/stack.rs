//! Starting relays and agents in-process on 127.0.0.1:0, and the relay
//! binary as a child process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kubechat_agent::{AgentHandle, RelayEndpoint};
use kubechat_relay::RelayHandle;
use kubechat_transport::pki::IssuedCert;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::client::InternalClient;
use crate::pki::TestPki;
use crate::wait::eventually;

/// The tenant of the default stack.
pub const TENANT: &str = "acme";
/// The cluster of the default stack.
pub const CLUSTER: &str = "prod";

/// An in-process relay.
pub struct TestRelay {
    /// Inspect tunnels and metrics.
    pub handle: RelayHandle,
    /// QUIC address.
    pub quic: SocketAddr,
    /// Internal HTTPS address.
    pub internal: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// WebSocket fallback address, if the relay has one.
    pub ws: Option<SocketAddr>,
    /// Cancel to drain and stop.
    pub shutdown: CancellationToken,
    /// Resolves when the relay has stopped.
    pub task: JoinHandle<()>,
}

/// Starts a relay with test defaults, after `tweak` edits its config.
pub async fn start_relay(pki: &TestPki, tweak: impl FnOnce(&mut kubechat_relay::Config)) -> TestRelay {
    let mut cfg = kubechat_relay::Config::new(pki.relay_identity(), pki.agent_ca(), pki.internal_ca());
    cfg.grace_period = Duration::from_secs(10);
    tweak(&mut cfg);
    let shutdown = CancellationToken::new();
    let relay = kubechat_relay::Relay::bind(cfg, shutdown.clone()).await.expect("bind relay");
    let (handle, quic, internal, ws) = (relay.handle(), relay.quic_addr(), relay.internal_addr(), relay.ws_addr());
    let admin = relay.admin_addr().expect("admin listener");
    let task = tokio::spawn(async move { relay.run().await.expect("relay run") });
    TestRelay { handle, quic, internal, admin, ws, shutdown, task }
}

/// An in-process agent.
pub struct TestAgent {
    /// Inspect tunnels and metrics.
    pub handle: AgentHandle,
    /// Admin address.
    pub admin: SocketAddr,
    /// Cancel to stop.
    pub shutdown: CancellationToken,
    /// Resolves when the agent has stopped.
    pub task: JoinHandle<()>,
}

impl TestAgent {
    /// Waits until `n` tunnels are up.
    pub async fn wait_tunnels(&self, n: i64) {
        let h = self.handle.clone();
        eventually(&format!("agent has {n} tunnels"), Duration::from_secs(30), || {
            let h = h.clone();
            async move { h.tunnels_connected() >= n }
        })
        .await;
    }
}

/// Starts an agent for `cert` dialling `relays`, forwarding to `api_url`.
pub async fn start_agent(
    pki: &TestPki,
    relays: &[SocketAddr],
    cert: &IssuedCert,
    api_url: &str,
    tweak: impl FnOnce(&mut kubechat_agent::Config),
) -> TestAgent {
    let relays = relays.iter().map(|a| RelayEndpoint::parse(&a.to_string()).expect("relay address")).collect();
    let kube = kube::Config::new(api_url.parse().expect("api url"));
    let mut cfg = kubechat_agent::Config::new(relays, cert.identity().expect("agent identity"), pki.relay_ca(), kube);
    cfg.backoff_base = Duration::from_millis(20);
    cfg.backoff_cap = Duration::from_millis(500);
    cfg.grace_period = Duration::from_secs(10);
    tweak(&mut cfg);
    let shutdown = CancellationToken::new();
    let agent = kubechat_agent::Agent::new(cfg, shutdown.clone()).await.expect("agent");
    let handle = agent.handle();
    let admin = agent.admin_addr().expect("admin listener");
    let task = tokio::spawn(agent.run());
    TestAgent { handle, admin, shutdown, task }
}

/// Backend + relay + agent for one tenant/cluster, and a client.
pub struct Stack {
    /// The test's certificates.
    pub pki: TestPki,
    /// The API-server stand-in.
    pub backend: Backend,
    /// The relay.
    pub relay: TestRelay,
    /// The agent.
    pub agent: TestAgent,
    /// A control-plane client of the relay.
    pub client: InternalClient,
}

impl Stack {
    /// Starts everything and waits until the tunnel is up.
    pub async fn start() -> Self {
        Self::start_with(|_| {}, |_| {}).await
    }

    /// Like [`Stack::start`], with the relay's and agent's configs tweaked.
    pub async fn start_with(
        relay_tweak: impl FnOnce(&mut kubechat_relay::Config),
        agent_tweak: impl FnOnce(&mut kubechat_agent::Config),
    ) -> Self {
        crate::wait::count_panics();
        crate::wait::init_logging();
        let pki = TestPki::new();
        let backend = Backend::start(CLUSTER).await;
        let relay = start_relay(&pki, relay_tweak).await;
        let agent =
            start_agent(&pki, &[relay.quic], &pki.agent_cert(TENANT, CLUSTER), &backend.url(), agent_tweak).await;
        agent.wait_tunnels(1).await;
        let client = InternalClient::new(relay.internal, &pki.internal_client(), &pki.relay_ca());
        Self { pki, backend, relay, agent, client }
    }
}

/// Plain GET of `http://addr/path`, or `None` if nothing answers.
pub async fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .ok()?;
    let resp = send.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Plain GET of `http://addr/path`, returning status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The relay binary running as a child process.
pub struct RelayProcess {
    /// The child.
    pub child: Child,
    /// QUIC address.
    pub quic: SocketAddr,
    /// Internal address.
    pub internal: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
}

/// A free TCP and UDP port pair on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl RelayProcess {
    /// Starts the relay binary `bin` (an integration test passes
    /// `env!("CARGO_BIN_EXE_test-relay")`) with certificates from `dir`, on
    /// the given ports (so a restart can reuse them).
    pub fn spawn(bin: &str, dir: &std::path::Path, quic_port: u16, internal_port: u16, admin_port: u16) -> Self {
        Self::spawn_with(bin, dir, quic_port, internal_port, admin_port, &[])
    }

    /// Like [`RelayProcess::spawn`], with more arguments.
    pub fn spawn_with(
        bin: &str,
        dir: &std::path::Path,
        quic_port: u16,
        internal_port: u16,
        admin_port: u16,
        extra: &[String],
    ) -> Self {
        let p = |f: &str| -> PathBuf { dir.join(f) };
        let child = Command::new(bin)
            .args(extra)
            .args(["--quic-listen", &format!("127.0.0.1:{quic_port}")])
            .args(["--internal-listen", &format!("127.0.0.1:{internal_port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--tls-cert")
            .arg(p("relay.crt"))
            .arg("--tls-key")
            .arg(p("relay.key"))
            .arg("--agent-ca")
            .arg(p("agent-ca.crt"))
            .arg("--internal-ca")
            .arg(p("internal-ca.crt"))
            .env("KUBECHAT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("spawn relay binary");
        let a = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self { child, quic: a(quic_port), internal: a(internal_port), admin: a(admin_port) }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no GOAWAY, no close frames.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// kube-sim behind a relay and an agent, and kubectl pointed at the relay.
pub struct KubeStack {
    /// The test's certificates.
    pub pki: TestPki,
    /// The simulated API server.
    pub sim: kube_sim::TestSim,
    /// The relay.
    pub relay: TestRelay,
    /// The agent.
    pub agent: TestAgent,
}

/// The agent's service-account token in kube-sim.
pub const AGENT_TOKEN: &str = "agent-token-for-tests";

impl KubeStack {
    /// Starts kube-sim (demo data, fast logs), a relay that takes kubectl's
    /// `--as` as the identity, and an agent with the agent's token.
    pub async fn start() -> Self {
        Self::start_over(false).await
    }

    /// Like [`KubeStack::start`], with the agent unable to use QUIC (its
    /// relay's UDP port answers nothing): it must use the WebSocket fallback.
    pub async fn start_over_websocket() -> Self {
        Self::start_over(true).await
    }

    /// Like [`KubeStack::start_over_websocket`], the agent's config further
    /// edited by `tweak` (a proxy, say).
    pub async fn start_over_websocket_with(tweak: impl FnOnce(&mut kubechat_agent::Config)) -> Self {
        Self::start_over_with(true, tweak).await
    }

    async fn start_over(websocket: bool) -> Self {
        Self::start_over_with(websocket, |_| {}).await
    }

    async fn start_over_with(websocket: bool, tweak: impl FnOnce(&mut kubechat_agent::Config)) -> Self {
        crate::wait::count_panics();
        crate::wait::init_logging();
        let mut tokens = std::collections::HashMap::new();
        tokens.insert(
            AGENT_TOKEN.to_string(),
            kube_sim::UserInfo {
                name: kube_sim::seed::AGENT_USER.into(),
                groups: vec!["system:serviceaccounts".into()],
            },
        );
        let mut config = kube_sim::SimConfig::with_tokens(tokens);
        config.log_interval = Duration::from_millis(200);
        let sim = kube_sim::TestSim::start(config, true).await;
        let pki = TestPki::new();
        let relay = start_relay(&pki, |c| {
            c.identity_from_impersonation = true;
            c.ws_listen = Some(([127, 0, 0, 1], 0).into());
        })
        .await;
        let kubeconfig = kube_sim::kubeconfig::KubeconfigSpec {
            name: "sim".into(),
            server: sim.url(),
            ca_pem: Some(sim.ca_pem.clone()),
            credentials: kube_sim::kubeconfig::Credentials::Token(AGENT_TOKEN.into()),
            impersonate_user: None,
            impersonate_groups: Vec::new(),
            namespace: None,
        };
        let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig.to_yaml()).expect("kubeconfig");
        let kube_config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kube config");
        let ws_port = relay.ws.map(|a| a.port());
        let agent = start_agent(&pki, &[relay.quic], &pki.agent_cert(TENANT, CLUSTER), &sim.url(), |c| {
            c.kube = kube_config;
            if websocket {
                // A UDP port nobody answers on: QUIC times out, WebSocket works.
                let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                let addr = dead.local_addr().expect("addr").to_string();
                std::mem::forget(dead);
                c.relays = vec![RelayEndpoint::parse(&addr).expect("address").with_ws_port(ws_port)];
                c.connect_timeout = Duration::from_secs(2);
            }
            tweak(c);
        })
        .await;
        agent.wait_tunnels(1).await;
        Self { pki, sim, relay, agent }
    }

    /// kubectl talking to the relay as `user` in `groups`.
    pub fn kubectl(&self, user: &str, groups: &[&str]) -> crate::kubectl::Kubectl {
        let client = self.pki.pki.internal_client_cert("test-control-plane").expect("client cert");
        let spec = kube_sim::kubeconfig::KubeconfigSpec {
            name: "kubechat".into(),
            server: format!("https://{}/v1/clusters/{CLUSTER}/k8s", self.relay.internal),
            ca_pem: Some(self.pki.pki.relay_ca.cert_pem().to_string()),
            credentials: kube_sim::kubeconfig::Credentials::ClientCert {
                cert_pem: client.cert_pem,
                key_pem: client.key_pem,
            },
            impersonate_user: Some(user.into()),
            impersonate_groups: groups.iter().map(|g| (*g).to_string()).collect(),
            namespace: None,
        };
        crate::kubectl::Kubectl::new(&spec.to_yaml())
    }
}
