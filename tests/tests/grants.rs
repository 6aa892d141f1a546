//! Signed grants: with control-plane keys configured, the relay and the
//! agent each refuse forged, expired and other-cluster grants on their own,
//! and take the identity from the grant alone.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use kubechat_protocol::grant::{self, GrantSigner, GrantVerifier};
use kubechat_protocol::messages::Grant;
use kubechat_tests::client::Buffered;
use kubechat_tests::stack::{CLUSTER, Stack, TENANT, start_agent};
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;

fn signer(id: &str) -> GrantSigner {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
    GrantSigner::from_pkcs8(id, pkcs8.as_ref()).expect("signer")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

fn grant_for(cluster: &str, path: &str) -> Grant {
    let now = now_ms();
    Grant {
        request_id: "req-42".into(),
        tenant: TENANT.into(),
        cluster: cluster.into(),
        user: "kubechat:user:granted@example.com".into(),
        groups: vec!["kubechat:role:tenant_viewer".into()],
        method: "GET".into(),
        path: path.into(),
        issued_at_ms: now,
        expires_at_ms: now + 30_000,
        key_id: String::new(),
        client_address: String::new(),
        must_audit: false,
    }
}

async fn get_with_grant(s: &Stack, path: &str, signed: Option<Vec<u8>>) -> Buffered {
    let mut req =
        s.client.request("GET", CLUSTER, path, false).header("kubechat-user", "kubechat:user:header@example.com");
    if let Some(g) = signed {
        req = req.header(grant::HEADER, grant::to_header(&g));
    }
    kubechat_tests::client::buffer(s.client.send(req.body(Full::new(Bytes::new())).expect("request")).await).await
}

async fn assert_refused(s: &Stack, signed: Option<Vec<u8>>, by: &str, why: &str) {
    let r = get_with_grant(s, "/headers", signed).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["kind"], "Status");
    let msg = v["message"].as_str().expect("message");
    assert!(msg.contains(&format!("the {by} refused the request")) && msg.contains(why), "{msg}");
    assert_eq!(s.backend.hits("/headers"), 0, "a refused request reached the API server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_agent_accept_a_valid_grant_and_impersonate_its_identity() {
    let cp = signer("cp-1");
    let keys = || GrantVerifier::new([("cp-1".to_string(), cp.public_key())]);
    let s = Stack::start_with(|r| r.grants = keys(), |a| a.grants = keys()).await;
    let r = get_with_grant(&s, "/headers", Some(cp.sign(grant_for(CLUSTER, "/headers")))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let h = r.json();
    // The grant's identity, not the header's.
    assert_eq!(h["impersonate-user"], serde_json::json!(["kubechat:user:granted@example.com"]));
    assert_eq!(h["impersonate-group"], serde_json::json!(["kubechat:role:tenant_viewer"]));
    assert_eq!(h["impersonate-extra-kubechat.io%2frequest-id"], serde_json::json!(["req-42"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_bad_grants_on_its_own() {
    let cp = signer("cp-1");
    // The agent trusts nothing here: only the relay checks.
    let s = Stack::start_with(|r| r.grants = GrantVerifier::new([("cp-1".to_string(), cp.public_key())]), |_| {}).await;
    assert_refused(&s, None, "relay", "carries no grant").await;
    assert_refused(&s, Some(signer("cp-1").sign(grant_for(CLUSTER, "/headers"))), "relay", "signature is invalid")
        .await;
    let mut expired = grant_for(CLUSTER, "/headers");
    expired.issued_at_ms -= 120_000;
    expired.expires_at_ms -= 120_000;
    assert_refused(&s, Some(cp.sign(expired)), "relay", "expired").await;
    assert_refused(&s, Some(cp.sign(grant_for("other", "/headers"))), "relay", "is for cluster \"other\"").await;
    assert_refused(&s, Some(cp.sign(grant_for(CLUSTER, "/api/v1/secrets"))), "relay", "does not cover").await;
    assert!(s.relay.handle.metrics().requests_refused.get("grant_invalid") >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_bad_grants_on_its_own() {
    let cp = signer("cp-1");
    // The relay checks nothing here (a compromised relay): the agent still refuses.
    let s = Stack::start_with(|_| {}, |a| a.grants = GrantVerifier::new([("cp-1".to_string(), cp.public_key())])).await;
    assert_refused(&s, None, "agent", "carries no grant").await;
    assert_refused(&s, Some(signer("cp-1").sign(grant_for(CLUSTER, "/headers"))), "agent", "signature is invalid")
        .await;
    let mut expired = grant_for(CLUSTER, "/headers");
    expired.issued_at_ms -= 120_000;
    expired.expires_at_ms -= 120_000;
    assert_refused(&s, Some(cp.sign(expired)), "agent", "expired").await;
    assert_refused(&s, Some(cp.sign(grant_for("other", "/headers"))), "agent", "is for cluster \"other\"").await;
    let mut other_tenant = grant_for(CLUSTER, "/headers");
    other_tenant.tenant = "someone-else".into();
    assert_refused(&s, Some(cp.sign(other_tenant)), "agent", "someone-else").await;
    assert!(s.agent.handle.metrics().stream_errors.get("grant_invalid") >= 5);
}

async fn get_gated(s: &Stack, signed: &[u8], mac: &str) -> Buffered {
    let req = s
        .client
        .request("GET", CLUSTER, "/headers", false)
        .header(grant::HEADER, grant::to_header(signed))
        .header(grant::GATE_HEADER, mac);
    kubechat_tests::client::buffer(s.client.send(req.body(Full::new(Bytes::new())).expect("request")).await).await
}

fn refused_by(r: &Buffered, by: &str, why: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let msg = r.json()["message"].as_str().expect("message").to_string();
    assert!(msg.contains(&format!("the {by} refused the request")) && msg.contains(why), "{msg}");
}

/// A stack whose relay trusts `cp`'s key and holds its gate key for the
/// relay under test, and whose agent checks grants with `agent_grants`.
async fn gated_stack(cp: &GrantSigner, agent_grants: GrantVerifier) -> Stack {
    let gate = cp.gate_key("relay-under-test");
    let keys = GrantVerifier::new([("cp-1".to_string(), cp.public_key())]);
    Stack::start_with(
        |r| {
            r.grants = keys;
            r.grant_gate_key = Some(gate.to_vec());
        },
        |a| a.grants = agent_grants,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_passes_a_grant_by_its_gate_mac_and_the_agent_still_checks_the_signature() {
    let cp = signer("cp-1");
    let gate = cp.gate_key("relay-under-test");
    let keys = || GrantVerifier::new([("cp-1".to_string(), cp.public_key())]);
    let s = gated_stack(&cp, keys()).await;
    let checked = |by: &str| s.relay.handle.metrics().grants_checked.get(by);
    // A grant and its MAC: served, passed by the gate, no signature check.
    let signed = cp.sign(grant_for(CLUSTER, "/headers"));
    let r = get_gated(&s, &signed, &grant::gate_mac(&gate, &signed)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["impersonate-user"], serde_json::json!(["kubechat:user:granted@example.com"]));
    assert_eq!((checked("gate"), checked("signature")), (1, 0));
    // Another relay's MAC: the signature decides, and it is good.
    let r = get_gated(&s, &signed, &grant::gate_mac(&cp.gate_key("relay-elsewhere"), &signed)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!((checked("gate"), checked("signature")), (1, 1));
    assert_eq!(s.backend.hits("/headers"), 2);
    // A forged grant with another relay's MAC: the relay refuses it.
    let forged = signer("cp-1").sign(grant_for(CLUSTER, "/headers"));
    let r = get_gated(&s, &forged, &grant::gate_mac(&cp.gate_key("relay-elsewhere"), &forged)).await;
    refused_by(&r, "relay", "signature is invalid");
    // A forged grant with this relay's MAC (only this relay, compromised,
    // could make one): it passes the relay, and the agent refuses it.
    let r = get_gated(&s, &forged, &grant::gate_mac(&gate, &forged)).await;
    refused_by(&r, "agent", "signature is invalid");
    // A grant of a key this relay does not trust: its MAC stands in for
    // nothing, and the relay refuses it.
    let untrusted = signer("cp-9").sign(grant_for(CLUSTER, "/headers"));
    let r = get_gated(&s, &untrusted, &grant::gate_mac(&gate, &untrusted)).await;
    refused_by(&r, "relay", "unknown key \"cp-9\"");
    // A gated grant still meets the relay's other checks.
    let other = cp.sign(grant_for("other", "/headers"));
    let r = get_gated(&s, &other, &grant::gate_mac(&gate, &other)).await;
    refused_by(&r, "relay", "is for cluster \"other\"");
    assert_eq!(s.backend.hits("/headers"), 2, "a refused request reached the API server");
}

/// The agent passes the control plane's grants by their MAC under its
/// cluster grant key, which the relay never holds: a grant a compromised
/// relay makes (passing its own gate) carries a signature and a cluster MAC
/// of the relay's making, and the agent refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_passes_a_grant_by_its_cluster_mac_and_no_relay_can_make_one() {
    let cp = signer("cp-1");
    let gate = cp.gate_key("relay-under-test");
    let keys = || GrantVerifier::new([("cp-1".to_string(), cp.public_key())]);
    let cluster_key = cp.cluster_key_spec(TENANT, CLUSTER);
    let s = gated_stack(&cp, keys().with_cluster_key(&cluster_key).expect("a cluster grant key")).await;
    let checked = |by: &str| s.agent.handle.metrics().grants_checked.get(by);
    // The control plane's grant: passed by the cluster MAC, no signature check.
    let signed = cp.sign(grant_for(CLUSTER, "/headers"));
    let r = get_gated(&s, &signed, &grant::gate_mac(&gate, &signed)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["impersonate-user"], serde_json::json!(["kubechat:user:granted@example.com"]));
    assert_eq!((checked("cluster_key"), checked("signature")), (1, 0));
    // A grant the relay makes: its own key under the control plane's key
    // id, its own cluster MAC, its own gate MAC. The relay passes it; the
    // agent finds the MAC wrong, checks the signature and refuses.
    let relay_made = signer("cp-1").sign(grant_for(CLUSTER, "/headers"));
    let r = get_gated(&s, &relay_made, &grant::gate_mac(&gate, &relay_made)).await;
    refused_by(&r, "agent", "signature is invalid");
    // The control plane's grant for another cluster (whose MAC is under
    // that cluster's key) is refused as another cluster's.
    let other = cp.sign(grant_for("other", "/headers"));
    let r = get_gated(&s, &other, &grant::gate_mac(&gate, &other)).await;
    refused_by(&r, "relay", "is for cluster \"other\"");
    assert_eq!(s.backend.hits("/headers"), 1, "a refused request reached the API server");
    assert_eq!((checked("cluster_key"), checked("signature")), (1, 0));
}

/// A grant without its signature passes the relay by its gate MAC and goes
/// only to an agent holding the cluster grant key of its key id, however
/// many agents without it the cluster also has; with none connected, or
/// without its gate MAC, the relay answers 503 with the header that has the
/// control plane send it again signed, and sends it nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_sends_a_grant_without_its_signature_only_to_an_agent_that_holds_its_cluster_key() {
    let cp = signer("cp-1");
    let gate = cp.gate_key("relay-under-test");
    let keys = || GrantVerifier::new([("cp-1".to_string(), cp.public_key())]);
    // An agent enrolled before cluster grant keys.
    let s = gated_stack(&cp, keys()).await;
    let resend = |r: &Buffered| {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert_eq!(r.headers.get(grant::RESEND_SIGNED_HEADER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(r.headers.get(http::header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        r.json()["message"].as_str().expect("message").to_string()
    };
    let unsigned = cp.sign_macs_only(grant_for(CLUSTER, "/headers"));
    let msg = resend(&get_gated(&s, &unsigned, &grant::gate_mac(&gate, &unsigned)).await);
    assert!(msg.contains("hold no cluster grant key \"cp-1\"") && msg.contains("retry"), "{msg}");
    assert_eq!(s.relay.handle.metrics().requests_refused.get("no_key_holder"), 1);
    // The same grant signed is served by that agent.
    let signed = cp.sign_again(&unsigned).expect("the signer's own grant");
    assert!(grant::is_signed(&signed));
    let r = get_gated(&s, &signed, &grant::gate_mac(&gate, &signed)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(s.backend.hits("/headers"), 1);

    // A second agent of the cluster holding the key: every unsigned grant
    // goes to it, none to the first.
    let cluster_key = cp.cluster_key_spec(TENANT, CLUSTER);
    let holder = start_agent(&s.pki, &[s.relay.quic], &s.pki.agent_cert(TENANT, CLUSTER), &s.backend.url(), |a| {
        a.grants = keys().with_cluster_key(&cluster_key).expect("a cluster grant key")
    })
    .await;
    holder.wait_tunnels(1).await;
    for _ in 0..12 {
        let unsigned = cp.sign_macs_only(grant_for(CLUSTER, "/headers"));
        let r = get_gated(&s, &unsigned, &grant::gate_mac(&gate, &unsigned)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let checked = |a: &kubechat_tests::stack::TestAgent, by: &str| a.handle.metrics().grants_checked.get(by);
    assert_eq!((checked(&holder, "cluster_key"), checked(&holder, "signature")), (12, 0));
    assert_eq!((checked(&s.agent, "cluster_key"), checked(&s.agent, "signature")), (0, 1));
    // Signed grants still go to either.
    for _ in 0..12 {
        let signed = cp.sign(grant_for(CLUSTER, "/headers"));
        let r = get_gated(&s, &signed, &grant::gate_mac(&gate, &signed)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    assert!(checked(&s.agent, "signature") > 1, "the relay sent no signed grant to the first agent");
    // Without its gate MAC the relay cannot check it: sent again signed.
    let before = s.backend.hits("/headers");
    let msg = resend(&get_gated(&s, &unsigned, &grant::gate_mac(&cp.gate_key("relay-elsewhere"), &unsigned)).await);
    assert!(msg.contains("holds no gate key for this grant"), "{msg}");
    assert_eq!(s.relay.handle.metrics().requests_refused.get("grant_unsigned"), 1);
    assert_eq!(s.backend.hits("/headers"), before, "a refused request reached the API server");
}
