//! Tunnels that recover, and tunnels that must never come up: the relay
//! binary killed and restarted, certificates from another CA, expired or
//! without an identity, and a relay that stops answering heartbeats.

use std::time::Duration;

use http::StatusCode;
use kubechat_protocol::messages::{HelloAck, control_message};
use kubechat_protocol::{ErrorCode, ErrorCodeExt, version};
use kubechat_tests::backend::Backend;
use kubechat_tests::client::InternalClient;
use kubechat_tests::pki::TestPki;
use kubechat_tests::stack::{CLUSTER, RelayProcess, TENANT, free_port, start_agent, start_relay, try_http_get};
use kubechat_tests::wait::{eventually, init_logging, within};
use kubechat_transport::pki::{LeafSpec, Validity};
use kubechat_transport::quic::{self, QuicSettings};
use kubechat_transport::{FramedRecv, FramedSend, tls};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_and_restarted_the_agent_comes_back() {
    init_logging();
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write_relay_files(dir.path());
    let bin = env!("CARGO_BIN_EXE_test-relay");
    let (q, i, a) = (free_port(), free_port(), free_port());
    let mut relay = RelayProcess::spawn(bin, dir.path(), q, i, a);
    let admin = relay.admin;
    eventually("relay binary ready", LONG, || async move {
        try_http_get(admin, "/readyz").await.is_some_and(|r| r.0 == 200)
    })
    .await;

    let backend = Backend::start(CLUSTER).await;
    let agent = start_agent(&pki, &[relay.quic], &pki.agent_cert(TENANT, CLUSTER), &backend.url(), |_| {}).await;
    agent.wait_tunnels(1).await;
    let client = InternalClient::new(relay.internal, &pki.internal_client(), &pki.relay_ca());
    assert_eq!(client.get(CLUSTER, "/small").await.status, StatusCode::OK);
    let attempts = agent.handle.metrics().connect_attempts.get();

    // kill -9: no GOAWAY, no CONNECTION_CLOSE. Restart on the same ports.
    relay.kill();
    let relay = RelayProcess::spawn(bin, dir.path(), q, i, a);
    let h = agent.handle.clone();
    eventually("agent reconnected to the new relay process", LONG, || {
        let h = h.clone();
        async move { h.metrics().connect_attempts.get() > attempts && h.tunnels_connected() == 1 }
    })
    .await;
    let c = client.clone();
    eventually("requests succeed through the restarted relay", LONG, || {
        let c = c.clone();
        async move { c.try_get(CLUSTER, "/small").await.is_ok_and(|r| r.status == StatusCode::OK) }
    })
    .await;
    let (_, tunnels) = try_http_get(relay.admin, "/v1/tunnels").await.expect("admin");
    assert!(tunnels.contains(CLUSTER), "{tunnels}");

    // SIGTERM: the relay drains (GOAWAY to the agent) and exits cleanly.
    let mut relay = relay;
    let goaways = agent.handle.metrics().goaways.get();
    let pid = relay.child.id().to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(sent.success());
    let status = within("relay exits after SIGTERM", LONG, async {
        loop {
            if let Some(s) = relay.child.try_wait().expect("wait") {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "relay exited with {status}");
    assert!(agent.handle.metrics().goaways.get() > goaways, "the agent got no GOAWAY");
}

#[test]
fn relay_binary_writes_dev_certs_and_checks_config() {
    let bin = env!("CARGO_BIN_EXE_test-relay");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("certs");
    let st = std::process::Command::new(bin).args(["dev-certs", "--out"]).arg(&out).status().expect("run");
    assert!(st.success());
    for f in ["agent-ca.crt", "relay-ca.crt", "internal-ca.crt", "relay.crt", "relay.key", "agent.crt", "agent.key"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let check = |extra: &[&str]| {
        std::process::Command::new(bin)
            .arg("--check-config")
            .arg("--tls-cert")
            .arg(out.join("relay.crt"))
            .arg("--tls-key")
            .arg(out.join("relay.key"))
            .arg("--agent-ca")
            .arg(out.join("agent-ca.crt"))
            .arg("--internal-ca")
            .arg(out.join("internal-ca.crt"))
            .args(extra)
            .output()
            .expect("run")
    };
    assert!(check(&[]).status.success());
    let bad = check(&["--quic-listen", "not-an-address"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--quic-listen"), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad = check(&["--grant-key", "cp-1=not-a-key"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("grant key \"cp-1\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let good_key = format!("cp-1={}", "A".repeat(43));
    assert!(check(&["--grant-key", &good_key]).status.success());
    // A config file with an unknown key is refused, naming the key.
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "quic-listen = \"127.0.0.1:0\"\nmax-streams = 3\n").expect("write");
    let bad = check(&["--config", file.to_str().expect("utf-8 path")]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("max-streams"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// Starts an agent with `cert` and waits until the relay refuses it for `reason`.
async fn assert_refused(cert: &kubechat_transport::pki::IssuedCert, pki: &TestPki, reason: &str) {
    let relay = start_relay(pki, |_| {}).await;
    let backend = Backend::start(CLUSTER).await;
    let agent = start_agent(pki, &[relay.quic], cert, &backend.url(), |_| {}).await;
    let h = relay.handle.clone();
    eventually(&format!("relay refuses with {reason}"), LONG, || {
        let h = h.clone();
        async move { h.metrics().handshake_failures.get(reason) >= 2 }
    })
    .await;
    assert_eq!(relay.handle.tunnel_count(), 0);
    assert_eq!(agent.handle.tunnels_connected(), 0);
    assert!(agent.handle.metrics().connect_failures.get("handshake") >= 1);
    let client = InternalClient::new(relay.internal, &pki.internal_client(), &pki.relay_ca());
    assert_eq!(client.get(CLUSTER, "/small").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    init_logging();
    let pki = TestPki::new();
    // A CA nobody trusts...
    let stranger = kubechat_transport::pki::CertAuthority::new("Stranger CA").expect("ca");
    let id = kubechat_protocol::ClusterIdentity::new(TENANT, CLUSTER).expect("id");
    let spec =
        LeafSpec { common_name: "agent".into(), uris: vec![id.spiffe_uri()], client: true, ..Default::default() };
    let cert = stranger.issue(&spec, Validity::for_duration(Duration::from_secs(600))).expect("cert");
    assert_refused(&cert, &pki, "unknown_ca").await;
    // ...and an impostor CA with the very same name as the real one.
    let impostor = TestPki::new();
    assert_refused(&impostor.agent_cert(TENANT, CLUSTER), &pki, "bad_signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() {
    init_logging();
    let pki = TestPki::new();
    assert_refused(&pki.agent_cert_valid(TENANT, CLUSTER, Validity::expired()), &pki, "certificate_expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_without_identity_is_refused() {
    init_logging();
    let pki = TestPki::new();
    let spec = LeafSpec {
        common_name: "prod".into(),
        uris: vec!["spiffe://kubechat/tenant/acme/cluster/prod/../other".into()],
        client: true,
        ..Default::default()
    };
    let cert = pki.pki.agent_ca.issue(&spec, Validity::for_duration(Duration::from_secs(600))).expect("cert");
    assert_refused(&cert, &pki, "identity_invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_a_relay_it_does_not_pin() {
    init_logging();
    let pki = TestPki::new();
    let impostor = TestPki::new();
    // The relay presents a certificate from another relay CA.
    let relay = start_relay(&impostor, |c| c.agent_ca = pki.agent_ca()).await;
    let backend = Backend::start(CLUSTER).await;
    let agent = start_agent(&pki, &[relay.quic], &pki.agent_cert(TENANT, CLUSTER), &backend.url(), |_| {}).await;
    let h = agent.handle.clone();
    eventually("agent refuses the impostor relay", LONG, || {
        let h = h.clone();
        async move { h.metrics().connect_failures.get("handshake") >= 2 }
    })
    .await;
    assert_eq!(agent.handle.tunnels_connected(), 0);
    assert_eq!(relay.handle.tunnel_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_relay_is_detected_by_heartbeats_and_replaced() {
    init_logging();
    let pki = TestPki::new();
    // A relay that completes Hello and then never answers a ping.
    let server_tls = tls::tunnel_server_config(&pki.relay_identity(), &pki.agent_ca()).expect("tls");
    let endpoint =
        quic::server_endpoint(([127, 0, 0, 1], 0).into(), server_tls, &QuicSettings::default()).expect("endpoint");
    let addr = endpoint.local_addr().expect("addr");
    let backend = Backend::start(CLUSTER).await;
    let agent = start_agent(&pki, &[addr], &pki.agent_cert(TENANT, CLUSTER), &backend.url(), |c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.heartbeat_timeout = Duration::from_secs(1);
    })
    .await;

    let mut codes = Vec::new();
    for _ in 0..2 {
        let conn = within("agent dials", LONG, endpoint.accept()).await.expect("incoming").await.expect("handshake");
        let (send, recv) = within("control stream", LONG, conn.accept_bi()).await.expect("stream");
        let mut send = FramedSend::new(Box::new(send));
        let mut recv = FramedRecv::new(Box::new(recv), 1 << 16);
        assert!(matches!(recv.next_control_message().await, Ok(Some(control_message::Kind::Hello(_)))));
        let ack =
            HelloAck { version: version::SUPPORTED_VERSIONS[0], heartbeat_interval_ms: 200, ..Default::default() };
        send.send_control_message(control_message::Kind::HelloAck(ack)).await.expect("ack");
        // Read pings, answer nothing; QUIC itself stays alive (acks flow).
        let reader = tokio::spawn(async move { while let Ok(Some(_)) = recv.next_control_message().await {} });
        let err = within("agent gives up on the silent relay", LONG, conn.closed()).await;
        reader.abort();
        let code = match err {
            quinn::ConnectionError::ApplicationClosed(c) => ErrorCode::from_close_code(c.error_code.into_inner()),
            other => panic!("expected the agent to close the connection, got {other}"),
        };
        codes.push(code);
    }
    assert_eq!(codes, vec![Some(ErrorCode::HeartbeatTimeout); 2]);
    assert!(agent.handle.metrics().connect_attempts.get() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_two_tunnels_to_distinct_relays_and_moves_off_a_dead_one() {
    init_logging();
    let pki = TestPki::new();
    let backend = Backend::start(CLUSTER).await;
    let a = start_relay(&pki, |_| {}).await;
    let b = start_relay(&pki, |_| {}).await;
    let c = start_relay(&pki, |_| {}).await;
    let cert = pki.agent_cert(TENANT, CLUSTER);
    let agent = start_agent(&pki, &[a.quic, b.quic, c.quic], &cert, &backend.url(), |cfg| {
        cfg.relay_connections = 2;
    })
    .await;
    agent.wait_tunnels(2).await;
    let held =
        |rs: &[&kubechat_tests::stack::TestRelay]| rs.iter().map(|r| r.handle.tunnel_count()).collect::<Vec<_>>();
    assert_eq!(held(&[&a, &b, &c]), vec![1, 1, 0], "two distinct relays, the third spare");
    // The first relay dies: its slot moves to the spare one.
    a.shutdown.cancel();
    a.task.await.expect("relay stops");
    let (bh, ch) = (b.handle.clone(), c.handle.clone());
    eventually("two tunnels again, on the other relays", LONG, || {
        let (bh, ch) = (bh.clone(), ch.clone());
        async move { bh.tunnel_count() == 1 && ch.tunnel_count() == 1 }
    })
    .await;
    assert_eq!(agent.handle.tunnels_connected(), 2);
}
