//! The kubectl path through the control plane: kubectl with a KubeChat token
//! → control plane (authorize, sign a grant) → relay (verify) → agent
//! (verify, impersonate) → kube-sim.

use std::time::Duration;

use base64::Engine;
use kubechat_control_plane::Secret;
use kubechat_control_plane::client::Client;
use kubechat_tests::platform::{ADMIN, world};
use kubechat_tests::stack::start_agent;
use kubechat_transport::pki::Validity;
use kubechat_transport::tls;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_through_the_control_plane_follows_the_role_matrix() {
    let w = world(json!({})).await;
    // The kubeconfig the API hands out works as it is.
    let user = w.kubectl_downloaded(&w.user("ursula@acme.example", "tenant_user").await).await;
    let out = user.ok(&["get", "pods", "-A"]).await;
    assert!(out.contains("frontend-") && out.contains("Running"), "{out}");
    let pod = user
        .ok(&["get", "pods", "-n", "web", "-l", "app=api", "-o", "name"])
        .await
        .trim()
        .trim_start_matches("pod/")
        .to_string();
    assert_eq!(user.ok(&["exec", &pod, "-n", "web", "--", "hostname"]).await.trim(), pod);
    // The customer's RBAC sees the KubeChat identity.
    assert_eq!(user.ok(&["auth", "can-i", "delete", "pods", "-n", "web"]).await.trim(), "yes");

    let viewer = w.kubectl(&w.user("victor@acme.example", "tenant_viewer").await, &w.cluster);
    assert!(viewer.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
    assert!(viewer.ok(&["logs", &pod, "-n", "web", "--tail=1"]).await.contains("handled request"));
    let err = viewer.fails(&["delete", "pod", &pod, "-n", "web"]).await;
    assert!(
        err.contains("Error from server (Forbidden): pods is forbidden: KubeChat: tenant_viewer can only read"),
        "{err}"
    );
    let err = viewer.fails(&["get", "secrets", "-n", "web"]).await;
    assert!(err.contains("tenant_viewer cannot read secrets"), "{err}");
    let err = viewer.fails(&["exec", &pod, "-n", "web", "--", "hostname"]).await;
    assert!(err.contains("pods is forbidden: KubeChat: tenant_viewer can only read; create pods/exec needs"), "{err}");

    // A token that is not valid, and a cluster id that is not the tenant's.
    let bogus = w.kubectl("kc_not-a-real-token-000000000000000000000", &w.cluster);
    let err = bogus.fails(&["get", "pods"]).await;
    assert!(err.contains("Unauthorized") || err.contains("must be logged in"), "{err}");
    let missing = w.kubectl(&w.user("mia@acme.example", "tenant_admin").await, "c000000000000");
    let err = missing.fails(&["get", "pods"]).await;
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubectl_suite_passes_through_the_control_plane_for_a_tenant_user() {
    let w = world(json!({})).await;
    let user = w.kubectl_downloaded(&w.user("ursula@acme.example", "tenant_user").await).await;
    kubechat_tests::kubectl_suite::all(&user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_policy_limits_namespaces_and_writes() {
    let w = world(json!({"allowedNamespaces": ["web"]})).await;
    let user = w.kubectl(&w.user("ursula@acme.example", "tenant_user").await, &w.cluster);
    assert!(user.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
    let err = user.fails(&["get", "pods", "-n", "default"]).await;
    assert!(err.contains("allows only namespaces web, not default"), "{err}");
    let admin = w.kubectl(&w.user("ada@acme.example", "tenant_admin").await, &w.cluster);
    assert!(admin.ok(&["get", "pods", "-n", "default"]).await.contains("hello-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tenants_and_path_tricks_get_the_same_not_found_as_a_missing_cluster() {
    let w = world(json!({})).await;
    let platform = Client::new_tls(&w.cp_url, Some(Secret(ADMIN.into())), &w.cp_ca);
    let r = platform
        .post(
            "/v1/tenants",
            &json!({"name": "Other", "slug": "other", "plan": "team", "adminEmail": "admin@other.example"}),
        )
        .await
        .expect("reach");
    let other = platform.with_token(r.body["token"].as_str().expect("token"));
    let mine = w.api.clone();
    let missing = mine.get("/k8s/clusters/c000000000000/api/v1/pods").await.expect("reach");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["kind"], "Status");
    let shape =
        |r: &kubechat_control_plane::client::Reply| (r.status, r.body["reason"].clone(), r.body["code"].clone());
    // Another tenant's token on this tenant's cluster id.
    let theirs = other.get(&format!("/k8s/clusters/{}/api/v1/pods", w.cluster)).await.expect("reach");
    assert_eq!(shape(&theirs), shape(&missing), "{}", theirs.body);
    assert_eq!(theirs.body["message"], format!("cluster {} not found", w.cluster));
    // Path tricks never reach another cluster, or this one under a twisted name.
    let c = &w.cluster;
    for path in [
        format!("/k8s/clusters/{c}%2F..%2Fc000000000000/api/v1/pods"),
        format!("/k8s/clusters/..%2F{c}/api/v1/pods"),
        format!("/k8s/clusters/{c}%252F/api/v1/pods"),
        format!("/k8s/clusters/{c}x/api/v1/pods"),
        format!("/k8s/clusters/%63{}/api/v1/pods", &c[1..]),
    ] {
        let r = mine.get(&path).await.expect("reach");
        assert_eq!(shape(&r), shape(&missing), "{path}: {}", r.body);
    }
    // The real path works for the owner.
    let ok = mine.get(&format!("/k8s/clusters/{c}/api/v1/namespaces/web/pods")).await.expect("reach");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["kind"], "PodList");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_drops_its_tunnel_and_refuses_reconnects() {
    let w = world(json!({})).await;
    assert_eq!(w.relay.handle.tunnel_count(), 1);
    let r = w.api.delete(&format!("/v1/tenants/{}/clusters/{}", w.tenant, w.cluster)).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    // Gone within the 5 s the product promises (the relay polls every 200 ms here).
    let h = w.relay.handle.clone();
    kubechat_tests::wait::eventually("tunnel dropped after the cluster was deleted", Duration::from_secs(5), || {
        let h = h.clone();
        async move { h.tunnel_count() == 0 }
    })
    .await;
    // The agent keeps dialling; every attempt is refused as revoked.
    let before = w.relay.handle.metrics().handshake_failures.get("revoked");
    kubechat_tests::wait::eventually("reconnects refused", Duration::from_secs(30), || {
        let h = h.clone();
        async move { h.metrics().handshake_failures.get("revoked") >= before + 2 }
    })
    .await;
    assert_eq!(w.relay.handle.tunnel_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_access_reaches_the_cluster_with_the_granted_role_until_revoked() {
    let w = world(json!({})).await;
    let platform = Client::new_tls(&w.cp_url, Some(Secret(ADMIN.into())), &w.cp_ca);
    let r = platform
        .post(
            "/v1/tenants",
            &json!({"name": "Consultants", "slug": "consultants", "plan": "team", "adminEmail": "bob@consultants.example"}),
        )
        .await
        .expect("reach");
    assert_eq!(r.status, 201, "{}", r.body);
    let bob_token = r.body["token"].as_str().expect("token").to_string();
    let bob = w.kubectl(&bob_token, &w.cluster);
    // No grant: the cluster does not exist for bob.
    let err = bob.fails(&["get", "pods", "-n", "web"]).await;
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");

    let g = w
        .api
        .post(
            &format!("/v1/tenants/{}/cross-tenant-access", w.tenant),
            &json!({"granteeEmail": "bob@consultants.example", "granteeTenant": "consultants", "role": "tenant_viewer"}),
        )
        .await
        .expect("reach");
    assert_eq!(g.status, 201, "{}", g.body);
    // With it: bob reads as a viewer of acme (his own tenant_admin role does not carry over).
    assert!(bob.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
    let err = bob.fails(&["delete", "pods", "--all", "-n", "web"]).await;
    assert!(err.contains("KubeChat: tenant_viewer can only read"), "{err}");
    // The cluster's RBAC sees the granted role's group.
    assert_eq!(bob.run(&["auth", "can-i", "delete", "pods", "-n", "web"]).await.stdout.trim(), "no");

    // Revoked: gone again.
    let gid = g.body["id"].as_str().expect("id");
    let r = w.api.delete(&format!("/v1/tenants/{}/cross-tenant-access/{gid}", w.tenant)).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    let err = bob.fails(&["get", "pods", "-n", "web"]).await;
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
}

/// The agent's namespace and state Secret in kube-sim, with the least
/// privilege the Helm chart grants: get and update on that one Secret.
fn prepare_state_secret(sim: &kube_sim::TestSim) {
    let create = |plural: &str, ns: &str, obj: serde_json::Value| {
        let r = sim.sim.cluster.resource_by_plural(plural).expect("built-in resource");
        sim.sim.cluster.create(&r, ns, obj).expect("create");
    };
    // (The seeded cluster already has the `kubechat` namespace.)
    create("secrets", "kubechat", json!({"metadata": {"name": "kubechat-agent-state"}, "type": "Opaque"}));
    create(
        "roles",
        "kubechat",
        json!({"metadata": {"name": "state"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["kubechat-agent-state"], "verbs": ["get", "update"]}]}),
    );
    create(
        "rolebindings",
        "kubechat",
        json!({
            "metadata": {"name": "state"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "state"},
            "subjects": [{"kind": "ServiceAccount", "name": "kubechat-agent", "namespace": "kubechat"}],
        }),
    );
}

/// The certificate and key the agent keeps in its Secret.
fn stored_credentials(sim: &kube_sim::TestSim) -> kubechat_transport::pki::IssuedCert {
    let r = sim.sim.cluster.resource_by_plural("secrets").expect("secrets");
    let s = sim.sim.cluster.store.get(&r, "kubechat", "kubechat-agent-state").expect("the state Secret");
    let field = |k: &str| {
        let b64 = s["data"][k].as_str().unwrap_or_else(|| panic!("{k} stored"));
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("utf-8")
    };
    kubechat_transport::pki::IssuedCert { cert_pem: field("tls.crt"), key_pem: field("tls.key") }
}

/// One field of the agent's state Secret, decoded.
fn stored_field(sim: &kube_sim::TestSim, key: &str) -> String {
    let r = sim.sim.cluster.resource_by_plural("secrets").expect("secrets");
    let s = sim.sim.cluster.store.get(&r, "kubechat", "kubechat-agent-state").expect("the state Secret");
    let b64 = s["data"][key].as_str().unwrap_or_else(|| panic!("{key} stored"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("utf-8")
}

/// The agent's stored `enrollment.json`.
fn stored_enrollment(sim: &kube_sim::TestSim) -> serde_json::Value {
    let r = sim.sim.cluster.resource_by_plural("secrets").expect("secrets");
    let s = sim.sim.cluster.store.get(&r, "kubechat", "kubechat-agent-state").expect("the state Secret");
    let b64 = s["data"]["enrollment.json"].as_str().expect("enrollment.json stored");
    serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("json")
}

fn serial_of(cert: &kubechat_transport::pki::IssuedCert) -> String {
    tls::certificate_serial(&cert.identity().expect("identity").chain[0]).expect("serial")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_keeps_its_identity_in_a_secret_renews_and_its_old_certificate_is_refused() {
    let w = world(json!({})).await;
    // A second cluster, whose agent enrolls through the real bootstrap-token path.
    let c =
        w.api.post(&format!("/v1/tenants/{}/clusters", w.tenant), &json!({"name": "staging"})).await.expect("reach");
    assert_eq!(c.status, 201, "{}", c.body);
    let staging = c.body["id"].as_str().expect("id").to_string();
    let bootstrap = c.body["bootstrapToken"].as_str().expect("token").to_string();
    prepare_state_secret(&w.sim);
    let kube = w.agent_kube_config().await;
    let enrolling = |token: Option<String>| {
        let mut cfg = kubechat_agent::Config::enrolling(
            kube.clone(),
            kubechat_agent::Enrollment {
                store: kubechat_agent::StoreLocation::Secret {
                    namespace: "kubechat".into(),
                    name: "kubechat-agent-state".into(),
                },
                control_plane_url: Some(w.cp_url.clone()),
                control_plane_ca: Some(w.cp_ca.clone()),
                bootstrap_token: token.map(kubechat_agent::BootstrapToken::new),
            },
        );
        cfg.backoff_base = Duration::from_millis(20);
        cfg.backoff_cap = Duration::from_millis(500);
        cfg
    };
    let start = |cfg: kubechat_agent::Config| async move {
        let shutdown = CancellationToken::new();
        let agent = kubechat_agent::Agent::new(cfg, shutdown.clone()).await.expect("agent starts");
        let handle = agent.handle();
        let task = tokio::spawn(agent.run());
        (handle, shutdown, task)
    };
    let tunnel_serials = || {
        let (api, t, c) = (w.api.clone(), w.tenant.clone(), staging.clone());
        async move {
            let r = api.get(&format!("/v1/tenants/{t}/clusters/{c}")).await.expect("reach");
            r.body["tunnels"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t["certificateSerial"].as_str().map(str::to_string)).collect())
                .unwrap_or_else(Vec::<String>::new)
        }
    };

    let (agent, stop, task) = start(enrolling(Some(bootstrap.clone()))).await;
    // Enrollment handed out the relay with its WebSocket fallback.
    let stored = stored_enrollment(&w.sim);
    assert!(stored["relays"][0].as_str().is_some_and(|r| r.contains("#ws=")), "{stored}");
    let first = stored_credentials(&w.sim);
    let first_serial = serial_of(&first);
    assert_eq!(agent.certificate_serial(), first_serial);
    kubechat_tests::wait::eventually("the enrolled tunnel in the directory", Duration::from_secs(10), || {
        let (f, s) = (tunnel_serials(), first_serial.clone());
        async move { f.await == vec![s] }
    })
    .await;
    let user = w.kubectl(&w.user("ursula@acme.example", "tenant_user").await, &staging);
    assert!(user.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
    // Enrollment gave it the cluster grant key, kept in the Secret (not in
    // enrollment.json), by which it passes the control plane's grants
    // without checking their signatures.
    let checked = |by: &str| agent.metrics().grants_checked.get(by);
    assert!(
        checked("cluster_key") >= 1 && checked("signature") == 0,
        "{} / {}",
        checked("cluster_key"),
        checked("signature")
    );
    let cluster_key = stored_field(&w.sim, "cluster-grant.key");
    assert_eq!(cluster_key, w.app.signer.cluster_key_spec(&w.tenant, &staging));
    assert!(!stored.to_string().contains(cluster_key.split_once('=').expect("id=key").1));

    // Renewal: a new certificate for the same identity, stored first, then
    // every tunnel moves to it; the old one (overlap 0 here) is revoked.
    agent.renew_now().await.expect("renewal");
    let second = stored_credentials(&w.sim);
    let second_serial = serial_of(&second);
    assert_ne!(second_serial, first_serial);
    assert_eq!(agent.certificate_serial(), second_serial);
    let id = tls::cluster_identity(&second.identity().expect("identity").chain[0]).expect("identity");
    assert_eq!((id.tenant.as_str(), id.cluster.as_str()), (w.tenant.as_str(), staging.as_str()));
    kubechat_tests::wait::eventually("tunnels on the renewed certificate only", Duration::from_secs(20), || {
        let (f, s) = (tunnel_serials(), second_serial.clone());
        async move { f.await == vec![s] }
    })
    .await;
    assert!(user.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
    assert_eq!(checked("signature"), 0, "the renewed credentials keep the cluster grant key");

    // The old certificate is refused by the relay from now on.
    let before = w.relay.handle.metrics().handshake_failures.get("revoked");
    let old = start_agent(&w.pki, &[w.relay.quic], &first, &w.sim.url(), |a| a.kube = kube.clone()).await;
    let h = w.relay.handle.clone();
    kubechat_tests::wait::eventually("the old certificate refused as revoked", Duration::from_secs(20), || {
        let h = h.clone();
        async move { h.metrics().handshake_failures.get("revoked") > before }
    })
    .await;
    assert_eq!(old.handle.tunnels_connected(), 0);
    drop(old);

    // A restarted agent needs no bootstrap token: the Secret has all it needs.
    stop.cancel();
    task.await.expect("agent stops");
    let (agent, _stop, _task) = start(enrolling(None)).await;
    assert_eq!(agent.certificate_serial(), second_serial);
    // Its own tunnel first: the directory may still list the stopped
    // agent's tunnel (same serial) until the relay reports it gone.
    let a = agent.clone();
    kubechat_tests::wait::eventually("the restarted agent connects", Duration::from_secs(20), || {
        let a = a.clone();
        async move { a.tunnels_connected() >= 1 }
    })
    .await;
    kubechat_tests::wait::eventually("the restarted agent's tunnel", Duration::from_secs(20), || {
        let (f, s) = (tunnel_serials(), second_serial.clone());
        async move { f.await == vec![s] }
    })
    .await;
    assert!(user.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_failing_upstream_is_paused_by_its_breaker_and_others_are_served() {
    let w = kubechat_tests::platform::world_full(
        json!({}),
        |_| {},
        |c| {
            c.breaker_threshold = 3;
            c.breaker_cooldown = Duration::from_secs(2);
        },
    )
    .await;
    // A second tenant whose agent's API server is gone.
    let platform = Client::new_tls(&w.cp_url, Some(Secret(ADMIN.into())), &w.cp_ca);
    let r = platform
        .post("/v1/tenants", &json!({"name": "Beta", "slug": "beta", "plan": "team", "adminEmail": "b@beta.example"}))
        .await
        .expect("reach");
    let beta_tenant = r.body["tenant"]["id"].as_str().expect("id").to_string();
    let beta = platform.with_token(r.body["token"].as_str().expect("token"));
    let c = beta.post(&format!("/v1/tenants/{beta_tenant}/clusters"), &json!({"name": "broken"})).await.expect("reach");
    let beta_cluster = c.body["id"].as_str().expect("id").to_string();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let cert = w.pki.agent_cert(&beta_tenant, &beta_cluster);
    let _beta_agent = start_agent(&w.pki, &[w.relay.quic], &cert, &dead_url, |_| {}).await;
    let path = format!("/k8s/clusters/{beta_cluster}/api/v1/namespaces/default/pods");
    let (b2, p2) = (beta.clone(), path.clone());
    kubechat_tests::wait::eventually("beta's tunnel routed", Duration::from_secs(10), || {
        let (b, p) = (b2.clone(), p2.clone());
        async move { b.get(&p).await.is_ok_and(|r| r.status == 503 && !r.body.to_string().contains("not connected")) }
    })
    .await;
    // Failures in a row open beta's breaker: refused at the control plane,
    // the relay no longer sees the requests.
    for _ in 0..3 {
        let _ = beta.get(&path).await.expect("reach");
    }
    let streams = w.relay.handle.metrics().streams_total.get();
    let r = beta.get(&path).await.expect("reach");
    assert_eq!(r.status, 503);
    let msg = r.body["message"].as_str().unwrap_or_default();
    assert!(msg.contains("failed on KubeChat's path") && msg.contains("paused"), "{msg}");
    assert_eq!(w.relay.handle.metrics().streams_total.get(), streams, "the paused request reached the relay");
    let metrics = w.cp_metrics().await;
    let refusals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kubechat_cp_breaker_refusals_total ")?.parse().ok())
        .expect("breaker refusals metric");
    assert!(refusals >= 1, "{metrics}");
    assert!(metrics.contains("kubechat_cp_kube_requests_total{code=\"503\"}"), "{metrics}");
    // Acme is served meanwhile.
    let ok = w.api.get(&format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster)).await.expect("reach");
    assert_eq!(ok.status, 200, "{}", ok.body);
    // Still paused right after; after the cooldown one trial goes upstream again.
    let streams = w.relay.handle.metrics().streams_total.get();
    assert_eq!(beta.get(&path).await.expect("reach").status, 503);
    assert_eq!(w.relay.handle.metrics().streams_total.get(), streams);
    let paused_at = std::time::Instant::now();
    let (b3, p3, h) = (beta.clone(), path.clone(), w.relay.handle.clone());
    kubechat_tests::wait::eventually("a trial after the cooldown", Duration::from_secs(10), || {
        let (b, p, h) = (b3.clone(), p3.clone(), h.clone());
        async move {
            let _ = b.get(&p).await;
            h.metrics().streams_total.get() > streams
        }
    })
    .await;
    assert!(paused_at.elapsed() >= Duration::from_millis(500), "the trial came before the cooldown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_reaches_the_api_server_and_every_component_times_the_request() {
    let w = world(json!({})).await;
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    let path = format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster);
    let r = raw.send("GET", &path, &token, &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("kubechat-request-id").expect("request id");
    let seen = w.sim.sim.seen_request(id).expect("arrived");
    let sent = seen.headers.iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v.clone()).expect("traceparent");
    let t = kubechat_protocol::trace::TraceParent::parse(&sent).expect("a valid traceparent");
    assert_eq!(t.trace_id_hex(), trace, "the caller's trace reaches the API server");
    assert_ne!(sent, parent, "each hop names its own span");
    // Without one, a trace is started and still reaches the API server.
    let r = raw.send("GET", &path, &token, &[]).await;
    let seen = w.sim.sim.seen_request(r.header("kubechat-request-id").expect("id")).expect("arrived");
    assert!(
        seen.headers
            .iter()
            .any(|(k, v)| k == "traceparent" && kubechat_protocol::trace::TraceParent::parse(v).is_some())
    );
    // Every component timed it, by verb and code.
    let cp = w.cp_metrics().await;
    assert!(
        cp.contains(
            r#"kubechat_cp_request_duration_seconds_count{route="/k8s/clusters/{cluster}",verb="list",code="200"}"#
        ),
        "{cp}"
    );
    assert!(
        cp.contains(
            r#"kubechat_cp_request_duration_seconds_count{route="/v1/tenants/{id}/users",verb="POST",code="201"}"#
        ),
        "{cp}"
    );
    let (_, relay) = kubechat_tests::stack::http_get(w.relay.admin, "/metrics").await;
    assert!(relay.contains(r#"kubechat_relay_request_duration_seconds_count{route="/v1/clusters/{cluster}/k8s",verb="list",code="200"}"#), "{relay}");
    let (_, agent) = kubechat_tests::stack::http_get(w.agent.admin, "/metrics").await;
    assert!(
        agent.contains(r#"kubechat_agent_request_duration_seconds_count{route="api-server",verb="list",code="200"}"#),
        "{agent}"
    );
}

/// A warm kube request reads nothing from the database: the caller's token,
/// tenant, cluster and the tunnel's route come from memory. With the pool
/// closed it is still served (within the cache's offline window, a minute
/// here); a request that needs a read (a cluster not yet seen) is told the
/// storage is unavailable, never that its credentials are wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_kube_request_is_served_without_the_database() {
    let w = kubechat_tests::platform::world_full(
        json!({}),
        |_| {},
        |c| {
            c.cache_offline_trust = Duration::from_secs(60);
        },
    )
    .await;
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let path = format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster);
    let r = raw.send("GET", &path, &token, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let failures = || w.app.cache.sync_failures.load(std::sync::atomic::Ordering::Relaxed);
    let before = failures();
    w.app.db.pool().close().await;
    // The cache has tried (and failed) to read its change log meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while failures() < before + 2 {
        assert!(tokio::time::Instant::now() < deadline, "the cache never polled its change log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..5 {
        let r = raw.send("GET", &path, &token, &[]).await;
        assert_eq!(r.status, 200, "warm request {i} with the database gone: {}", r.text());
    }
    let cold = raw.send("GET", "/k8s/clusters/c_not_seen_yet/api/v1/namespaces/web/pods", &token, &[]).await;
    assert_eq!(cold.status, 503, "{}", cold.text());
    let status: serde_json::Value = serde_json::from_slice(&cold.body).expect("a Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "ServiceUnavailable", "{status}");
    let unknown = raw.send("GET", &path, "kc_a_token_nobody_has_seen", &[]).await;
    assert_eq!(unknown.status, 503, "an unseen token cannot be checked, which is not a 401: {}", unknown.text());
}

/// The control plane tells each relay its gate key in the presence answer
/// and MACs every grant for the relay it sends it to, so the relay passes
/// warm requests by the MAC, not by a second signature check; the agent
/// still checks the signature (`grants::the_relay_passes_a_grant_by_its_gate_mac…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_passes_the_control_planes_grants_by_their_gate_mac() {
    let w = kubechat_tests::platform::world(json!({})).await;
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let path = format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster);
    for _ in 0..3 {
        let r = raw.send("GET", &path, &token, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let checked = |by: &str| w.relay.handle.metrics().grants_checked.get(by);
    assert_eq!((checked("gate"), checked("signature")), (3, 0));
    // The agent, holding its cluster grant key, passes them by their
    // cluster MAC: no signature is checked on the way.
    let checked = |by: &str| w.agent.handle.metrics().grants_checked.get(by);
    assert_eq!((checked("cluster_key"), checked("signature")), (3, 0));
}

/// Sends `GET path` until the control plane seals a grant without its
/// signature (once the relay reported the gate key its answer gave it).
async fn until_grants_go_unsigned(
    w: &kubechat_tests::platform::World,
    raw: &kubechat_tests::raw::RawClient,
    path: &str,
    token: &str,
) {
    kubechat_tests::wait::eventually("a grant without its signature", Duration::from_secs(10), || async {
        let r = raw.send("GET", path, token, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        w.app.metrics.grants_issued.get("macs_only") >= 1
    })
    .await;
}

/// A second agent of the world's cluster, enrolled before cluster grant
/// keys (it checks grants by their signature), once its tunnel is up.
async fn agent_without_cluster_key(w: &kubechat_tests::platform::World) -> kubechat_tests::stack::TestAgent {
    let cert = w.pki.agent_cert_valid(&w.tenant, &w.cluster, Validity::for_duration(Duration::from_secs(3600)));
    let kube = w.agent_kube_config().await;
    let grants = w.grants.clone();
    let agent = start_agent(&w.pki, &[w.relay.quic], &cert, &w.sim.url(), |a| {
        a.kube = kube;
        a.grants = grants;
    })
    .await;
    agent.wait_tunnels(1).await;
    agent
}

/// Where the relay holds the control plane's gate key and every agent of
/// the cluster there its cluster grant key, grants go without their
/// Ed25519 signature (the largest single cost of the control plane's path)
/// and each hop passes them by its MAC. An agent without the key (enrolled
/// before cluster grant keys) joining the cluster makes the next grants
/// signed again, and no request is refused meanwhile: the relay sends an
/// unsigned grant only to an agent that can check it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_go_without_their_signature_only_where_every_hop_passes_them_by_a_mac() {
    let w = world(json!({})).await;
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let path = format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster);
    let issued = |seal: &str| w.app.metrics.grants_issued.get(seal);
    let get = || async {
        let r = raw.send("GET", &path, &token, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    };
    // Once the relay reported the gate key the control plane's answer gave it.
    until_grants_go_unsigned(&w, &raw, &path, &token).await;
    let relay_checked = |by: &str| w.relay.handle.metrics().grants_checked.get(by);
    let agent_checked = |by: &str| w.agent.handle.metrics().grants_checked.get(by);
    let before = (issued("signed"), issued("macs_only"), relay_checked("gate"), agent_checked("cluster_key"));
    for _ in 0..3 {
        get().await;
    }
    let after = (issued("signed"), issued("macs_only"), relay_checked("gate"), agent_checked("cluster_key"));
    assert_eq!(after, (before.0, before.1 + 3, before.2 + 3, before.3 + 3));
    assert_eq!((relay_checked("signature"), agent_checked("signature")), (0, 0));

    // A second agent of the cluster, without the cluster grant key.
    let old = agent_without_cluster_key(&w).await;
    let signed_from = issued("signed");
    kubechat_tests::wait::eventually("grants signed again", Duration::from_secs(10), || async {
        get().await;
        issued("signed") > signed_from
    })
    .await;
    // From then on every grant is signed, every request served, and the
    // relay spreads them over both agents.
    let unsigned = issued("macs_only");
    for _ in 0..20 {
        get().await;
    }
    assert_eq!(issued("macs_only"), unsigned);
    let old_checked = |by: &str| old.handle.metrics().grants_checked.get(by);
    assert!(old_checked("signature") >= 1, "the older agent served none of 20 requests");
    assert_eq!(old_checked("cluster_key"), 0);
    assert_eq!(w.relay.handle.metrics().requests_refused.get("no_key_holder"), 0);
}

/// A relay that cannot route a grant sent without its signature (the only
/// agent of the cluster left there holds no cluster grant key, and the
/// control plane has not read the report saying so: presence reports
/// cannot be stored while the database is held) answers 503 with the
/// resend header, and the control plane sends the same request again
/// signed; the caller sees only the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_the_relay_cannot_route_unsigned_is_sent_again_signed() {
    let w = world(json!({})).await;
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let path = format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster);
    let issued = |seal: &str| w.app.metrics.grants_issued.get(seal);
    until_grants_go_unsigned(&w, &raw, &path, &token).await;
    // Held from here on: the directory keeps saying the agent there holds
    // the key.
    let held = w.app.db.begin(&kubechat_control_plane::store::Scope::Platform).await.expect("the write lock");
    let old = agent_without_cluster_key(&w).await;
    w.agent.shutdown.cancel();
    let relay = w.relay.handle.clone();
    kubechat_tests::wait::eventually("only the older agent at the relay", Duration::from_secs(20), || {
        let relay = relay.clone();
        async move { relay.tunnel_count() == 1 }
    })
    .await;
    let before = (issued("macs_only"), issued("resent_signed"));
    let r = raw.send("GET", &path, &token, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header(kubechat_protocol::grant::RESEND_SIGNED_HEADER).is_none());
    assert_eq!((issued("macs_only"), issued("resent_signed")), (before.0 + 1, before.1 + 1));
    assert_eq!(w.relay.handle.metrics().requests_refused.get("no_key_holder"), 1);
    assert_eq!(old.handle.metrics().grants_checked.get("signature"), 1);
    held.commit().await.expect("released");
}

/// Once the change log has been unreadable for longer than the offline
/// window (here none), the cache is dropped: a replica cut off from the
/// database stops trusting what it may since have missed (a revocation on
/// another replica), and says storage is unavailable, never 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_offline_window_a_cut_off_replica_stops_trusting_its_cache() {
    let w = kubechat_tests::platform::world_full(json!({}), |_| {}, |c| c.cache_offline_trust = Duration::ZERO).await;
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let path = format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster);
    assert_eq!(raw.send("GET", &path, &token, &[]).await.status, 200);
    w.app.db.pool().close().await;
    let (r2, t2, p2) = (raw.clone(), token.clone(), path.clone());
    kubechat_tests::wait::eventually("the cache is dropped", Duration::from_secs(10), || {
        let (raw, t, p) = (r2.clone(), t2.clone(), p2.clone());
        async move { raw.send("GET", &p, &t, &[]).await.status != 200 }
    })
    .await;
    let r = raw.send("GET", &path, &token, &[]).await;
    assert_eq!(r.status, 503, "storage unavailable, not a credentials problem: {}", r.text());
}

/// The whole stack, its control plane draining within `grace` when stopped.
async fn world_draining_within(grace: Duration) -> kubechat_tests::platform::World {
    kubechat_tests::platform::world_full(json!({}), |_| {}, |c| c.grace_period = grace).await
}

/// A control plane told to stop lets an open `kubectl exec -i` session run
/// for its grace period too, then ends it: kubectl sees its session end,
/// and the drain runs to the end. Before, an upgraded stream (no longer
/// one of hyper's connections) was only waited on, and it outlived the
/// drain (until the process exited under it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_control_plane_ends_open_exec_sessions_after_its_grace_period() {
    const GRACE: Duration = Duration::from_millis(500);
    const LONG: Duration = Duration::from_secs(60);
    let mut w = world_draining_within(GRACE).await;
    let pod = w.pod("web", "api-");
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let (mut child, stdin) = w.kubectl(&token, &w.cluster).cat_session(&pod, "web").await;

    // Told to stop, the stdin still open: the session would run on.
    let stopped = std::time::Instant::now();
    w.shutdown.cancel();
    let status =
        kubechat_tests::wait::within("kubectl exec ends with the drain", LONG, child.wait()).await.expect("wait");
    assert!(stopped.elapsed() >= GRACE, "the session was cut before its grace period ended");
    let run = w.cp_run.take().expect("the control plane runs");
    kubechat_tests::wait::within("the control plane's drain ends", LONG, run).await.expect("run");
    println!("kubectl exec ended {:?} after the stop ({status})", stopped.elapsed());
    drop(stdin);
}

/// A control plane told to stop lets open requests run for its grace
/// period, then closes the connections still open (a watch) instead of
/// waiting for them until the pod is killed, and its drain runs to the end
/// (`run` returns, after the writer's last commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_control_plane_closes_open_watches_after_its_grace_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const GRACE: Duration = Duration::from_millis(300);
    let mut w = world_draining_within(GRACE).await;
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let path = format!("/k8s/clusters/{}/api/v1/namespaces/web/pods?watch=1", w.cluster);
    let mut watch = raw.open().await;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n", raw.addr());
    watch.write_all(head.as_bytes()).await.expect("write");
    watch.flush().await.expect("flush");
    // The head and the first events (the pods there are) arrive ...
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !String::from_utf8_lossy(&seen).contains("\"ADDED\"") {
        let n = watch.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the first event: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));

    // ... then the control plane is told to stop. The watch would run on
    // (kube-sim keeps it open): it stays open for the grace period, then is
    // closed. (The timeout only turns a hang into a failure.)
    let stopped = std::time::Instant::now();
    w.shutdown.cancel();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(120), watch.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the control plane kept the watch open past its grace period");
    assert!(stopped.elapsed() >= GRACE, "the watch was cut before its grace period ended");
    let run = w.cp_run.take().expect("the control plane runs");
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the control plane's drain never ended")
        .expect("run");

    // The watch's decision is in the audit trail.
    let mut tx = w.app.db.begin(&kubechat_control_plane::store::Scope::Platform).await.expect("tx");
    let watches: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE kind = 'decision' AND verb = 'watch' AND decision = 'allow'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("count");
    tx.commit().await.expect("commit");
    assert_eq!(watches, 1, "the watch's decision record");
}
