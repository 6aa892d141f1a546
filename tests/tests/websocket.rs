//! The WebSocket fallback: an agent whose QUIC cannot get out connects over
//! WebSocket (TLS over TCP, yamux streams) on its own, and everything works
//! over it — the whole kubectl suite.

use kubechat_tests::kubectl_suite as suite;
use kubechat_tests::stack::KubeStack;
use kubechat_tests::tinyproxy::Tinyproxy;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_real_https_proxy_the_websocket_tunnel_carries_kubectl() {
    let proxy = Tinyproxy::start().await;
    let port = proxy.port;
    let s = KubeStack::start_over_websocket_with(|c| c.https_proxy = Some(format!("http://127.0.0.1:{port}"))).await;
    assert_eq!(s.relay.handle.tunnel_transports(), vec!["websocket".to_string()]);
    suite::all(&s.kubectl(USER, USER_GROUPS)).await;
    let log = proxy.log();
    let ws = s.relay.ws.expect("ws listener");
    assert!(log.contains("CONNECT") && log.contains(&format!("127.0.0.1:{}", ws.port())), "{log}");
}

/// A UDP forwarder to the relay's QUIC port that drops everything while
/// blocked: a firewall the test can open.
struct UdpGate {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UdpGate {
    async fn start(relay: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let outer = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let inner = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        inner.connect(relay).await.expect("connect");
        let addr = outer.local_addr().expect("addr");
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = std::sync::Arc::new(std::sync::Mutex::new(None::<std::net::SocketAddr>));
        let (o, i, op, c) = (outer.clone(), inner.clone(), open.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = o.recv_from(&mut buf).await {
                if op.load(Ordering::SeqCst) {
                    *c.lock().expect("lock") = Some(from);
                    let _ = i.send(&buf[..n]).await;
                }
            }
        });
        let (o, op) = (outer, open.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = inner.recv(&mut buf).await {
                let to = *client.lock().expect("lock");
                if let (true, Some(to)) = (op.load(Ordering::SeqCst), to) {
                    let _ = o.send_to(&buf[..n], to).await;
                }
            }
        });
        Self { addr, open }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_moves_back_to_quic_once_udp_gets_through() {
    use std::time::Duration;
    let ws_port = kubechat_tests::stack::free_port();
    let pki = kubechat_tests::pki::TestPki::new();
    let backend = kubechat_tests::backend::Backend::start(kubechat_tests::stack::CLUSTER).await;
    let relay =
        kubechat_tests::stack::start_relay(&pki, |c| c.ws_listen = Some(([127, 0, 0, 1], ws_port).into())).await;
    let gate = UdpGate::start(relay.quic).await;
    let cert = pki.agent_cert(kubechat_tests::stack::TENANT, kubechat_tests::stack::CLUSTER);
    let agent = kubechat_tests::stack::start_agent(&pki, &[relay.quic], &cert, &backend.url(), |a| {
        a.relays = vec![
            kubechat_agent::RelayEndpoint::parse(&gate.addr.to_string()).expect("addr").with_ws_port(Some(ws_port)),
        ];
        a.connect_timeout = Duration::from_secs(1);
        a.quic_retry_after = Duration::from_secs(1);
    })
    .await;
    agent.wait_tunnels(1).await;
    assert_eq!(relay.handle.tunnel_transports(), vec!["websocket".to_string()]);
    // The firewall opens: the next probe moves the tunnel to QUIC.
    gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
    let h = relay.handle.clone();
    kubechat_tests::wait::eventually("the tunnel back on QUIC", Duration::from_secs(30), || {
        let h = h.clone();
        async move { h.tunnel_transports() == vec!["quic".to_string()] }
    })
    .await;
    let client = kubechat_tests::client::InternalClient::new(relay.internal, &pki.internal_client(), &pki.relay_ca());
    assert_eq!(client.get(kubechat_tests::stack::CLUSTER, "/small").await.status, http::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_tunnel_is_detected_within_the_heartbeat_timeout_and_replaced() {
    use std::time::{Duration, Instant};
    let pki = kubechat_tests::pki::TestPki::new();
    let backend = kubechat_tests::backend::Backend::start(kubechat_tests::stack::CLUSTER).await;
    let relay = kubechat_tests::stack::start_relay(&pki, |c| {
        c.heartbeat_interval = Duration::from_millis(300);
        c.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let gate = UdpGate::start(relay.quic).await;
    gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
    let cert = pki.agent_cert(kubechat_tests::stack::TENANT, kubechat_tests::stack::CLUSTER);
    let agent = kubechat_tests::stack::start_agent(&pki, &[relay.quic], &cert, &backend.url(), |a| {
        a.relays = vec![kubechat_agent::RelayEndpoint::parse(&gate.addr.to_string()).expect("addr")];
        a.heartbeat_interval = Duration::from_millis(300);
        a.heartbeat_timeout = Duration::from_secs(2);
        a.connect_timeout = Duration::from_secs(1);
    })
    .await;
    agent.wait_tunnels(1).await;
    // The path goes silent: no close, no reset, nothing.
    gate.open.store(false, std::sync::atomic::Ordering::SeqCst);
    let silent = Instant::now();
    let h = agent.handle.clone();
    kubechat_tests::wait::eventually("the agent notices", Duration::from_secs(30), || {
        let h = h.clone();
        async move { h.tunnels_connected() == 0 }
    })
    .await;
    // Not before the heartbeat timeout would allow (a lower bound: cannot flake).
    assert!(silent.elapsed() >= Duration::from_millis(1500), "declared dead after {:?}", silent.elapsed());
    // The path heals: a new tunnel replaces the dead one.
    gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
    agent.wait_tunnels(1).await;
    // The relay dropped the dead one on its own idle timeout.
    let rh = relay.handle.clone();
    kubechat_tests::wait::eventually("one tunnel on the relay", Duration::from_secs(30), || {
        let rh = rh.clone();
        async move { rh.tunnel_count() == 1 }
    })
    .await;
    let client = kubechat_tests::client::InternalClient::new(relay.internal, &pki.internal_client(), &pki.relay_ca());
    assert_eq!(client.get(kubechat_tests::stack::CLUSTER, "/small").await.status, http::StatusCode::OK);
}

/// A TLS front for a plain proxy: an `https://` proxy as the agent sees it.
async fn tls_front(upstream: u16, id: kubechat_transport::tls::Identity) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let cfg = rustls::ServerConfig::builder_with_provider(kubechat_transport::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .expect("cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_https_proxy_with_its_own_ca_the_websocket_tunnel_carries_kubectl() {
    let proxy = Tinyproxy::start().await;
    let port = proxy.port;
    // The proxy's certificate comes from a CA of its own, which the agent is given.
    let proxy_pki = kubechat_transport::pki::DevPki::generate().expect("pki");
    let cert = proxy_pki.relay_cert("proxy", &["127.0.0.1"]).expect("cert");
    let front = tls_front(port, cert.identity().expect("identity")).await;
    let ca = kubechat_transport::tls::parse_ca_pem(proxy_pki.relay_ca.cert_pem()).expect("ca");
    let s = KubeStack::start_over_websocket_with(|c| {
        c.https_proxy = Some(format!("https://127.0.0.1:{front}"));
        c.proxy_ca = ca;
    })
    .await;
    assert_eq!(s.relay.handle.tunnel_transports(), vec!["websocket".to_string()]);
    suite::version_and_get_pods_across_namespaces(&s.kubectl(USER, USER_GROUPS)).await;
    assert!(proxy.log().contains("CONNECT"), "{}", proxy.log());
}
