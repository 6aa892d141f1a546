//! Nobody can hold the control plane's public listener: a connection that
//! never starts TLS, a TLS connection that never finishes its headers and a
//! trickled body are cut at the configured timeouts; hundreds of idle
//! connections from one address are capped and do not stop another client
//! being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kubechat_control_plane::client::Client;
use kubechat_control_plane::{Config, ControlPlane, Secret};
use kubechat_transport::limits::Limits;
use kubechat_transport::pki::{CertAuthority, LeafSpec, Validity};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "kc_listenerstestplatformadmintoken00000000";

struct Served {
    addr: SocketAddr,
    ca_pem: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(limits: Limits, request_timeout: Duration) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertAuthority::new("listener test CA").expect("ca");
    let spec =
        LeafSpec { common_name: "cp".into(), ips: vec![[127, 0, 0, 1].into()], server: true, ..Default::default() };
    let id = ca.issue(&spec, Validity::for_duration(Duration::from_secs(3600))).expect("cert").identity().expect("id");
    let mut cfg = Config::new(&format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display()));
    cfg.platform_admin_token = Some(Secret(ADMIN.into()));
    cfg.tls = Some(id);
    cfg.limits = limits;
    cfg.request_timeout = request_timeout;
    let cp = ControlPlane::bind(cfg).await.expect("control plane");
    let addr = cp.addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(cp.run(shutdown.clone()));
    Served { addr, ca_pem: ca.cert_pem().to_string(), shutdown, _dir: dir }
}

fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in kubechat_transport::tls::parse_ca_pem(ca_pem).expect("ca") {
        roots.add(c).expect("add");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(kubechat_transport::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Waits until the server closes `stream` (a read returns 0 or fails),
/// at most `within`; `true` if it did.
async fn closed_by_server<S: AsyncReadExt + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

/// A TCP connection from `local` (another loopback address stands for
/// another client).
async fn connect_from(local: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from((local, 0))).expect("bind the client address");
    s.connect(to).await.expect("connect")
}

fn limits() -> Limits {
    Limits {
        max_connections: 400,
        max_per_address: 100,
        handshake_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_at_the_configured_timeouts() {
    let s = serve(limits(), Duration::from_secs(2)).await;
    // Nothing after TCP: cut at the handshake timeout (no longer than 60 s
    // open as before: here well within 30 s).
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    assert!(
        closed_by_server(&mut tcp, Duration::from_secs(30)).await,
        "a connection that never starts TLS stayed open"
    );
    // Half a handshake: the same.
    let mut half = TcpStream::connect(s.addr).await.expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.expect("write");
    assert!(closed_by_server(&mut half, Duration::from_secs(30)).await, "a half handshake stayed open");
    // TLS, then headers that never finish: cut at the header timeout.
    let tls = tokio_rustls::TlsConnector::from(tls_config(&s.ca_pem));
    let name = ServerName::IpAddress(s.addr.ip().into());
    let mut t = tls.connect(name.clone(), TcpStream::connect(s.addr).await.expect("connect")).await.expect("tls");
    t.write_all(b"GET /v1/tenants HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
    assert!(closed_by_server(&mut t, Duration::from_secs(30)).await, "unfinished headers stayed open");
    // A trickled body: the request is answered when its deadline passes.
    let mut b = tls.connect(name, TcpStream::connect(s.addr).await.expect("connect")).await.expect("tls");
    b.write_all(
        format!("POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na").as_bytes(),
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            match b.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("the trickled request was answered");
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // And the server still serves.
    let c = Client::new_tls(&format!("https://{}", s.addr), Some(Secret(ADMIN.into())), &s.ca_pem);
    assert_eq!(c.get("/v1/tenants").await.expect("reach").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_others_are_still_served() {
    let slow =
        Limits { handshake_timeout: Duration::from_secs(60), header_timeout: Duration::from_secs(60), ..limits() };
    let s = serve(slow, Duration::from_secs(30)).await;
    // 300 idle connections from one address (127.0.0.2): at most 100 are kept.
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let mut c = connect_from([127, 0, 0, 2], s.addr).await;
        checks.spawn(async move {
            let closed = closed_by_server(&mut c, Duration::from_secs(2)).await;
            (closed, c)
        });
    }
    let mut refused = 0;
    let mut idle = Vec::new();
    while let Some(r) = checks.join_next().await {
        let (closed, c) = r.expect("check");
        if closed {
            refused += 1;
        } else {
            idle.push(c);
        }
    }
    assert!(refused >= 200, "only {refused} of 300 idle connections from one address were refused (cap 100)");
    assert!(idle.len() <= 100, "{} idle connections kept from one address", idle.len());
    // Another client (127.0.0.1) is served meanwhile.
    let c = Client::new_tls(&format!("https://{}", s.addr), Some(Secret(ADMIN.into())), &s.ca_pem);
    for _ in 0..5 {
        assert_eq!(c.get("/v1/tenants").await.expect("reach").status, 200);
    }
    drop(idle);
}
