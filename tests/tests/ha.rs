//! High availability: an agent holds tunnels to two relays; one relay is
//! killed with SIGKILL while requests flow through the control plane; only a
//! request in flight on it may fail (with a clear error), the rest go through
//! the other relay, and the agent restores both tunnels when it returns.

use std::time::Duration;

use kubechat_tests::platform::world_full;
use kubechat_tests::stack::start_agent;
use kubechat_tests::wait::eventually;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_relays_fails_at_most_the_request_in_flight_on_it() {
    // Rate limits out of the way: 120 requests in a row, served from memory.
    let w = world_full(
        json!({}),
        |_| {},
        |c| {
            c.per_token_rps = 10_000.0;
            c.per_tenant_rps = 10_000.0;
        },
    )
    .await;
    // A second relay, as its own process, reporting to the control plane.
    let spec = w.relay_spec("relay-p", &["--idle-timeout-secs", "6", "--heartbeat-secs", "1"]);
    let bin = env!("CARGO_BIN_EXE_test-relay");
    let mut relay_p = spec.spawn(bin);

    // One agent (a new cluster), a tunnel to each relay.
    let c = w.api.post(&format!("/v1/tenants/{}/clusters", w.tenant), &json!({"name": "ha"})).await.expect("reach");
    let cluster = c.body["id"].as_str().expect("id").to_string();
    let kube = w.agent_kube_config().await;
    let cert = w.pki.agent_cert(&w.tenant, &cluster);
    let key = w.grant_key.clone();
    let agent = start_agent(&w.pki, &[w.relay.quic, relay_p.quic], &cert, &w.sim.url(), |a| {
        a.kube = kube.clone();
        a.grants =
            kubechat_protocol::grant::GrantVerifier::new(
                [kubechat_protocol::grant::parse_key_spec(&key).expect("key")],
            );
        a.heartbeat_interval = Duration::from_secs(1);
        a.heartbeat_timeout = Duration::from_secs(3);
    })
    .await;
    agent.wait_tunnels(2).await;
    let (api, t, cl) = (w.api.clone(), w.tenant.clone(), cluster.clone());
    eventually("both tunnels in the directory", LONG, || {
        let (api, t, cl) = (api.clone(), t.clone(), cl.clone());
        async move {
            let r = api.get(&format!("/v1/tenants/{t}/clusters/{cl}")).await.expect("reach");
            r.body["tunnels"].as_array().is_some_and(|t| t.len() == 2)
        }
    })
    .await;

    // Requests flow; the process relay is killed among them.
    let path = format!("/k8s/clusters/{cluster}/api/v1/namespaces/web/pods");
    let mut failures = Vec::new();
    let mut ok = 0;
    for i in 0..120 {
        if i == 40 {
            // Requests were spread over both relays before the kill.
            let streams = relay_streams(relay_p.admin).await;
            assert!(streams > 0, "nothing went through the second relay");
            relay_p.kill();
        }
        let r = w.api.get(&path).await.expect("reach");
        if r.status == 200 {
            ok += 1;
        } else {
            failures.push((i, r.status, r.body["message"].as_str().unwrap_or_default().to_string()));
        }
    }
    // Only requests that were on their way to the killed relay as it died
    // (sent on its connection before the control plane saw it closed) may fail.
    assert!(failures.len() <= 2, "more than the in-flight requests failed: {failures:?}");
    for (i, status, msg) in &failures {
        assert!((40..=42).contains(i), "request {i} failed long after the kill: {status} {msg}");
        assert!(msg.contains("relay") && (msg.contains("failed while forwarding") || msg.contains("reached")), "{msg}");
    }
    assert!(ok >= 118);

    // The relay comes back on the same ports: the agent has two tunnels again.
    let _relay_p = spec.spawn(bin);
    agent.wait_tunnels(2).await;
}

/// `kubechat_relay_streams_total` of a relay process.
async fn relay_streams(admin: std::net::SocketAddr) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.lines().find_map(|l| l.strip_prefix("kubechat_relay_streams_total ")?.parse().ok()).unwrap_or(0)
}
