//! The audit trail cannot be voided by a caller: an over-long header or an
//! exec with a 9 KB command is audited with its fields cut and marked, never
//! refused; a relay killed with SIGKILL while a `kubectl exec` runs leaves
//! the control plane's decision record behind and the chain verifies; an
//! event the control plane still refuses is kept in the relay's dead-letter
//! file, counted and listed, never forgotten.

use std::time::Duration;

use kubechat_tests::platform::{World, world, world_with};
use kubechat_tests::raw::RawClient;
use kubechat_tests::stack::start_agent;
use kubechat_tests::wait::{eventually, within};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

async fn joined(w: &World, id: &str) -> Value {
    let r = w.api.get(&format!("/v1/tenants/{}/audit/requests/{id}", w.tenant)).await.expect("reach");
    assert_eq!(r.status, 200, "request {id}: {}", r.body);
    r.body
}

async fn verified(w: &World) {
    let v = w.api.get(&format!("/v1/tenants/{}/audit/verify", w.tenant)).await.expect("reach");
    assert_eq!(v.body["intact"], true, "{}", v.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_kib_header_and_a_9_kb_exec_are_audited_with_truncated_fields_marked() {
    let spool = tempfile::tempdir().expect("tempdir");
    let dir = spool.path().to_path_buf();
    let w = world_with(json!({}), |c| c.spool_dir = Some(dir)).await;
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;

    let command = format!("kubectl get {}", "x".repeat(60 * 1024));
    let r = raw
        .send(
            "GET",
            &format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster),
            &token,
            &[("Kubectl-Command", &command), ("Kubectl-Session", "5d6f7a8b-0000-4000-8000-00000000000a")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("kubechat-request-id").expect("request id").to_string();
    let (api, tenant, id2) = (w.api.clone(), w.tenant.clone(), id.clone());
    eventually("the relay's record of the request", LONG, || {
        let (api, tenant, id) = (api.clone(), tenant.clone(), id2.clone());
        async move {
            let r = api.get(&format!("/v1/tenants/{tenant}/audit/requests/{id}")).await.expect("reach");
            r.body["complete"] == json!(true)
        }
    })
    .await;
    let j = joined(&w, &id).await;
    for record in [&j["decision"], &j["outcomes"][0]] {
        let kept = record["kubectlCommand"].as_str().expect("kubectlCommand");
        assert_eq!(kept.len(), kubechat_control_plane::audit::MAX_FIELD, "{record}");
        assert!(command.starts_with(kept));
        assert_eq!(record["truncated"]["kubectlCommand"], command.len(), "the cut is marked: {record}");
    }
    assert_eq!(j["outcomes"][0]["status"], 200);

    // An exec whose command is 9 KB: the path is cut and marked, the command runs.
    let pod = w.pod("web", "api-");
    let word = "y".repeat(9 * 1024);
    let user = w.kubectl(&token, &w.cluster);
    let out = user.ok(&["exec", &pod, "-n", "web", "--", "echo", &word]).await;
    assert_eq!(out.trim(), word);
    let (api, tenant) = (w.api.clone(), w.tenant.clone());
    eventually("the exec's records, cut and marked", LONG, || {
        let (api, tenant) = (api.clone(), tenant.clone());
        async move {
            let r = api.get(&format!("/v1/tenants/{tenant}/audit?limit=1000&resource=pods")).await.expect("reach");
            let execs: Vec<&Value> = r.body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["subresource"] == "exec" && e["truncated"]["path"].as_u64().is_some_and(|n| n > 9 * 1024))
                .collect();
            execs.iter().any(|e| e["kind"] == "decision") && execs.iter().any(|e| e["kind"] == "request")
        }
    })
    .await;
    // No event was refused for its size, and the chain verifies.
    assert_eq!(w.relay.handle.dead_letters(), 0);
    assert_eq!(w.relay.handle.metrics().events_rejected.get(), 0);
    verified(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_during_kubectl_exec_leaves_the_decision_record_and_the_chain_verifies() {
    let w = world(json!({})).await;
    // A relay of its own, as a process, reporting to the control plane.
    let mut spec = w.relay_spec("relay-k", &[]);
    let spool = spec.dir.path().join("spool").display().to_string();
    spec.args.extend(["--spool-dir".to_string(), spool]);
    let mut relay = spec.spawn(env!("CARGO_BIN_EXE_test-relay"));
    // A cluster whose only tunnel is on that relay.
    let c = w.api.post(&format!("/v1/tenants/{}/clusters", w.tenant), &json!({"name": "kx"})).await.expect("reach");
    let cluster = c.body["id"].as_str().expect("id").to_string();
    let kube = w.agent_kube_config().await;
    let cert = w.pki.agent_cert(&w.tenant, &cluster);
    let grants = w.grants.clone();
    let agent = start_agent(&w.pki, &[relay.quic], &cert, &w.sim.url(), |a| {
        a.kube = kube;
        a.grants = grants;
    })
    .await;
    agent.wait_tunnels(1).await;
    let (api, t, cl) = (w.api.clone(), w.tenant.clone(), cluster.clone());
    eventually("the tunnel in the directory", LONG, || {
        let (api, t, cl) = (api.clone(), t.clone(), cl.clone());
        async move {
            api.get(&format!("/v1/tenants/{t}/clusters/{cl}")).await.expect("reach").body["connected"] == json!(true)
        }
    })
    .await;

    // kubectl exec -i … cat: a session that stays open while stdin does.
    let pod = w.pod("web", "api-");
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let (mut child, _stdin) = w.kubectl(&token, &cluster).cat_session(&pod, "web").await;
    // The session is live: its decision is on record already.
    let r = w
        .api
        .get(&format!("/v1/tenants/{}/audit?limit=1000&kind=decision&cluster={cluster}", w.tenant))
        .await
        .expect("reach");
    let exec = r.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["subresource"] == "exec" && e["decision"] == "allow")
        .cloned()
        .unwrap_or_else(|| panic!("no decision record for the running exec: {}", r.body));
    assert_eq!(exec["name"], pod.as_str());
    assert_eq!(exec["user"], "kubechat:user:ursula@acme.example");

    relay.kill();
    let status = within("kubectl exec ends with the relay gone", LONG, child.wait()).await.expect("wait");
    assert!(!status.success(), "kubectl exec did not notice the relay die");
    let j = joined(&w, exec["requestId"].as_str().expect("request id")).await;
    assert_eq!(j["decision"]["decision"], "allow");
    assert_eq!(j["complete"], false, "no outcome can have come from a relay killed mid-stream: {j}");
    verified(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_control_plane_refuses_is_kept_in_the_relays_dead_letter_file() {
    let spool = tempfile::tempdir().expect("tempdir");
    let dir = spool.path().to_path_buf();
    let w = world_with(json!({}), |c| c.spool_dir = Some(dir)).await;
    // An agent whose certificate names a tenant the control plane does not
    // know: the relay's tunnel_connect event for it cannot be stored.
    let cert = w.pki.agent_cert("ghost-tenant", "ghost-cluster");
    let _ghost = start_agent(&w.pki, &[w.relay.quic], &cert, &w.sim.url(), |_| {}).await;
    let h = w.relay.handle.clone();
    eventually("the refused event in the dead-letter file", LONG, || {
        let h = h.clone();
        async move { h.dead_letters() >= 1 }
    })
    .await;
    let (code, body) = kubechat_tests::stack::http_get(w.relay.admin, "/v1/dead-letters").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let item = v["items"].as_array().and_then(|i| i.first()).cloned().expect("a dead letter");
    assert_eq!(item["tenant"], "ghost-tenant");
    assert!(item["reason"].as_str().is_some_and(|r| r.contains("no tenant ghost-tenant")), "{item}");
    let (_, metrics) = kubechat_tests::stack::http_get(w.relay.admin, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("kubechat_relay_dead_letter_events ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(metrics.contains("kubechat_relay_events_dead_lettered_total"), "{metrics}");
    // The spool forgot it only because it is kept there: nothing pending.
    eventually("the spool empties", LONG, || {
        let h = h.clone();
        async move { h.events_pending() == 0 }
    })
    .await;
}
