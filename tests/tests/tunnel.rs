//! The tunnel core end to end: relay and agent on 127.0.0.1:0 with fresh
//! certificates, the built-in backend standing in for the API server, and
//! real HTTP/1.1, HTTP/2 and WebSocket clients of the relay.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use kubechat_tests::backend::{Backend, pattern, sha256_hex};
use kubechat_tests::client::{InternalClient, TEST_USER, buffer};
use kubechat_tests::stack::{CLUSTER, Stack, TENANT, http_get, start_agent, start_relay};
use kubechat_tests::wait::{eventually, within};
use tokio_tungstenite::tungstenite::Message;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_request_round_trips_over_http1_and_http2() {
    let s = Stack::start().await;
    let r = s.client.get(CLUSTER, "/small").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"hello");

    let mut h2 = s.client.h2().await;
    for _ in 0..5 {
        let req = s.client.request("GET", CLUSTER, "/small", true).body(Full::new(Bytes::new())).expect("request");
        let r = buffer(h2.send_request(req).await.expect("h2 send")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"hello");
    }
    assert_eq!(s.backend.hits("/small"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_arrive_intact() {
    let s = Stack::start().await;
    const N: usize = 100 << 20;
    let data = pattern(N);
    let expect = sha256_hex(&data);

    let req = s.client.request("POST", CLUSTER, "/sha256", false).body(Full::new(Bytes::from(data))).expect("request");
    let r = within("upload 100 MiB", LONG, async { buffer(s.client.send(req).await).await }).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["len"], N);
    assert_eq!(v["sha256"], expect.as_str());

    let r = within("download 100 MiB", LONG, s.client.get(CLUSTER, &format!("/bytes?n={N}"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), N);
    assert_eq!(sha256_hex(&r.body), expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_arrives_chunk_by_chunk() {
    let s = Stack::start().await;
    let gate = s.backend.open_gate("g1");
    let req = s.client.request("GET", CLUSTER, "/gate/g1", false).body(Full::new(Bytes::new())).expect("request");
    let resp = within("response head", LONG, s.client.send(req)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    for i in 0..4 {
        let chunk = Bytes::from(format!("chunk-{i}\n"));
        gate.send(chunk.clone()).await.expect("backend gate open");
        // The backend has not finished (the gate is still open), yet the
        // chunk must arrive: nothing between buffers the whole response.
        let got = within("next chunk", LONG, body.frame()).await.expect("a frame").expect("ok frame");
        assert_eq!(got.into_data().expect("data"), chunk);
    }
    drop(gate);
    assert!(within("end of body", LONG, body.frame()).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams() {
    let s = Stack::start().await;
    let mut h2 = s.client.h2().await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let req = s.client.request("GET", CLUSTER, "/hold?n=200", true).body(Full::new(Bytes::new())).expect("request");
        let fut = h2.send_request(req);
        tasks.push(tokio::spawn(async move { buffer(fut.await.expect("send")).await }));
        h2.ready().await.expect("h2 ready");
    }
    // The backend releases nobody until all 200 are held at once.
    for t in tasks {
        let r = within("held request", LONG, t).await.expect("task");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"released");
    }
    assert_eq!(s.backend.hits("/hold"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_stall_other_streams() {
    stalled_readers_do_not_stall_others(Stack::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_websocket_a_stalled_reader_does_not_stall_other_streams_either() {
    // UDP answers nothing: the agent uses the WebSocket fallback, where
    // yamux's per-stream windows must keep the other streams moving.
    let ws_port = kubechat_tests::stack::free_port();
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let quic = dead.local_addr().expect("addr").to_string();
    let s = Stack::start_with(
        |c| c.ws_listen = Some(([127, 0, 0, 1], ws_port).into()),
        |a| {
            a.relays = vec![kubechat_agent::RelayEndpoint::parse(&quic).expect("addr").with_ws_port(Some(ws_port))];
            a.connect_timeout = Duration::from_secs(2);
        },
    )
    .await;
    assert_eq!(s.relay.handle.tunnel_transports(), vec!["websocket".to_string()]);
    stalled_readers_do_not_stall_others(s).await;
    drop(dead);
}

async fn stalled_readers_do_not_stall_others(s: Stack) {
    // Several large responses nobody reads.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let req = s
            .client
            .request("GET", CLUSTER, &format!("/bytes?n={}", 256 << 20), false)
            .body(Full::new(Bytes::new()))
            .expect("request");
        stalled.push(within("stalled response head", LONG, s.client.send(req)).await);
    }
    for _ in 0..20 {
        let r = within("small request beside stalled streams", LONG, s.client.get(CLUSTER, "/small")).await;
        assert_eq!(&r.body[..], b"hello");
    }
    // The stalled streams are still alive and readable.
    let first = stalled.remove(0).into_body().frame().await.expect("frame").expect("ok");
    assert!(!first.into_data().expect("data").is_empty());
    drop(stalled);
    // Dropping them releases their stream slots on the relay.
    let h = s.relay.handle.clone();
    eventually("stream slots released", LONG, || {
        let h = h.clone();
        async move { h.metrics().streams_open.get() == 0 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_carries_bytes_both_ways() {
    let s = Stack::start().await;
    let mut ws = within("websocket handshake", LONG, s.client.websocket(CLUSTER, "/ws")).await;
    ws.send(Message::text("ping")).await.expect("send text");
    let m = within("echo", LONG, ws.next()).await.expect("message").expect("ok");
    assert_eq!(m, Message::text("ping"));
    let big: Vec<u8> = pattern(1 << 20);
    ws.send(Message::binary(big.clone())).await.expect("send binary");
    let m = within("binary echo", LONG, ws.next()).await.expect("message").expect("ok");
    assert_eq!(m.into_data().to_vec(), big);
    ws.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_impersonation_headers_never_reach_the_backend() {
    let s = Stack::start().await;
    let req = s
        .client
        .request("GET", CLUSTER, "/headers", false)
        .header("Impersonate-User", "system:admin")
        .header("impersonate-group", "system:masters")
        .header("IMPERSONATE-GROUP", "system:nodes")
        .header("Impersonate-Extra-Scopes", "all")
        .header("Authorization", "Bearer stolen-token")
        .header("Connection", "X-Hop, impersonate-uid")
        .header("X-Hop", "secret")
        .header("Impersonate-Uid", "0")
        .header("kubechat-group", "kubechat:tenant:acme")
        .header("kubechat-group", "kubechat:role:tenant_user")
        .header("Kubectl-Command", "kubectl get")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = buffer(s.client.send(req).await).await;
    assert_eq!(r.status, StatusCode::OK);
    let h = r.json();
    assert_eq!(h["impersonate-user"], serde_json::json!([TEST_USER]));
    assert_eq!(h["impersonate-group"], serde_json::json!(["kubechat:tenant:acme", "kubechat:role:tenant_user"]));
    assert!(h["impersonate-extra-kubechat.io%2frequest-id"][0].as_str().is_some_and(|v| !v.is_empty()));
    for gone in
        ["impersonate-uid", "impersonate-extra-scopes", "authorization", "x-hop", "kubechat-user", "kubechat-group"]
    {
        assert!(h.get(gone).is_none(), "{gone} reached the backend: {h}");
    }
    assert_eq!(h["kubectl-command"], serde_json::json!(["kubectl get"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_returned_not_followed() {
    let s = Stack::start().await;
    let r = s.client.get(CLUSTER, "/redirect").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "/small");
    assert_eq!(s.backend.hits("/small"), 0, "the redirect was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_without_tunnel_gets_a_status_503() {
    let s = Stack::start().await;
    let r = s.client.get("nowhere", "/api/v1/pods").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let v = r.json();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["code"], 503);
    assert_eq!(v["reason"], "ServiceUnavailable");
    let msg = v["message"].as_str().expect("message");
    assert!(msg.contains("cluster nowhere has no connected agent"), "{msg}");
    assert!(msg.contains("not seen"), "{msg}");

    // After the agent goes away, the message says when it was last seen.
    s.agent.shutdown.cancel();
    let h = s.relay.handle.clone();
    eventually("tunnel gone", LONG, || {
        let h = h.clone();
        async move { h.tunnel_count() == 0 }
    })
    .await;
    let r = s.client.get(CLUSTER, "/small").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let msg = r.json()["message"].as_str().expect("message").to_string();
    assert!(msg.contains(&format!("cluster {CLUSTER} has no connected agent (last seen")), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_only_ever_receives_its_own_clusters_traffic() {
    let s = Stack::start().await;
    let other_backend = Backend::start("other").await;
    let other =
        start_agent(&s.pki, &[s.relay.quic], &s.pki.agent_cert(TENANT, "other"), &other_backend.url(), |_| {}).await;
    other.wait_tunnels(1).await;
    for _ in 0..10 {
        assert_eq!(&s.client.get(CLUSTER, "/whoami").await.body[..], CLUSTER.as_bytes());
        assert_eq!(&s.client.get("other", "/whoami").await.body[..], b"other");
    }
    assert_eq!(s.backend.total_hits(), 10);
    assert_eq!(other_backend.total_hits(), 10);
    let mut tunnels = s.relay.handle.tunnels();
    tunnels.sort();
    assert_eq!(tunnels, vec![(TENANT.into(), "other".into()), (TENANT.into(), CLUSTER.into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_tunnel() {
    let s = Stack::start_with(|_| {}, |a| a.ready_grace = Duration::from_millis(300)).await;
    assert_eq!(http_get(s.agent.admin, "/readyz").await.0, 200);
    assert_eq!(http_get(s.agent.admin, "/healthz").await.0, 200);
    let (code, metrics) = http_get(s.relay.admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("kubechat_relay_tunnels_connected 1"), "{metrics}");
    let (code, tunnels) = http_get(s.relay.admin, "/v1/tunnels").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&tunnels).expect("json");
    assert_eq!(v["tunnels"][0]["cluster"], CLUSTER);
    assert_eq!(v["tunnels"][0]["transport"], "quic");

    s.relay.shutdown.cancel();
    let admin = s.agent.admin;
    // Not ready once no tunnel has been up for the grace period, and it says why.
    eventually("agent not ready without a tunnel", LONG, || async move { http_get(admin, "/readyz").await.0 == 503 })
        .await;
    let (_, why) = http_get(admin, "/readyz").await;
    assert!(why.contains("no tunnel to any relay has been up for"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_rides_out_a_reconnect_within_its_grace() {
    // A long grace: the relay going away briefly does not flip readiness.
    let s = Stack::start_with(|_| {}, |a| a.ready_grace = Duration::from_secs(3600)).await;
    s.relay.shutdown.cancel();
    let h = s.agent.handle.clone();
    eventually("tunnel down", LONG, || {
        let h = h.clone();
        async move { h.tunnels_connected() == 0 }
    })
    .await;
    assert_eq!(http_get(s.agent.admin, "/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_relay_finishes_in_flight_streams_and_sends_goaway() {
    let s = Stack::start().await;
    let gate = s.backend.open_gate("drain");
    let req = s.client.request("GET", CLUSTER, "/gate/drain", false).body(Full::new(Bytes::new())).expect("request");
    let resp = within("response head", LONG, s.client.send(req)).await;
    gate.send(Bytes::from_static(b"before ")).await.expect("gate");

    // Read before the drain starts: the agent dials its replacement at once.
    let h = s.agent.handle.clone();
    let attempts = h.metrics().connect_attempts.get();
    s.relay.shutdown.cancel();
    eventually("agent got goaway and dialled a replacement", LONG, || {
        let h = h.clone();
        async move { h.metrics().goaways.get() >= 1 && h.metrics().connect_attempts.get() > attempts }
    })
    .await;
    // The draining relay refuses the replacement at once instead of leaving
    // it to time out.
    eventually("replacement refused", LONG, || {
        let h = h.clone();
        async move { h.metrics().connect_failures.get("handshake") >= 1 }
    })
    .await;
    // New requests are refused while draining (the listener is closed)...
    if let Ok(r) = s.client.try_get(CLUSTER, "/small").await {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // ...but the in-flight one completes.
    gate.send(Bytes::from_static(b"after")).await.expect("gate");
    drop(gate);
    let body = within("drained body", LONG, resp.into_body().collect()).await.expect("body").to_bytes();
    assert_eq!(&body[..], b"before after");
    within("relay stops", LONG, s.relay.task).await.expect("relay task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_with_fifty_requests_in_flight_completes_every_one() {
    let s = Stack::start().await;
    let mut pending = Vec::new();
    for i in 0..50 {
        let name = format!("drain{i}");
        let gate = s.backend.open_gate(&name);
        let req = s
            .client
            .request("GET", CLUSTER, &format!("/gate/{name}"), false)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = within("response head", LONG, s.client.send(req)).await;
        gate.send(Bytes::from_static(b"before ")).await.expect("gate");
        pending.push((gate, resp));
    }
    s.relay.shutdown.cancel();
    let h = s.agent.handle.clone();
    eventually("agent got goaway", LONG, || {
        let h = h.clone();
        async move { h.metrics().goaways.get() >= 1 }
    })
    .await;
    let mut bodies = Vec::new();
    for (gate, resp) in pending {
        gate.send(Bytes::from_static(b"after")).await.expect("gate");
        drop(gate);
        bodies.push(tokio::spawn(async move { resp.into_body().collect().await.map(|b| b.to_bytes()) }));
    }
    for b in bodies {
        let body = within("drained body", LONG, b).await.expect("task").expect("body");
        assert_eq!(&body[..], b"before after");
    }
    within("relay stops", LONG, s.relay.task).await.expect("relay task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_a_registry_shape() {
    // A second relay knows nothing of the first one's tunnels.
    let s = Stack::start().await;
    let second = start_relay(&s.pki, |_| {}).await;
    let c2 = InternalClient::new(second.internal, &s.pki.internal_client(), &s.pki.relay_ca());
    assert_eq!(c2.get(CLUSTER, "/small").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s.client.get(CLUSTER, "/small").await.status, StatusCode::OK);
}
