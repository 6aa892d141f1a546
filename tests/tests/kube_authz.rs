//! Kube-path authorization sees exactly what the API server sees.
//!
//! The control plane's classifier is compared, shape by shape, with kube-sim's
//! own reading (written from the API server's rules, sharing no code); the
//! same table goes through a whole stack, where what kube-sim received must be
//! exactly what the control plane authorized and signed; a property test does
//! the same for generated targets. Then, through raw HTTP and the real
//! kubectl: a viewer reaches no secret, exec, attach, port-forward, proxy or
//! write by any spelling; read-only clusters, allowed namespaces and denied
//! resources hold likewise; every refusal is a Status with KubeChat's reason
//! and in the audit log. Upgrades and proxy headers, the session quota and the
//! breaker's view of the API server's own errors close the file.

use std::time::Duration;

use kubechat_control_plane::Secret;
use kubechat_control_plane::client::Client;
use kubechat_tests::platform::{ADMIN, World, world_full};
use kubechat_tests::raw::{RawClient, RawResponse};
use kubechat_tests::shapes::{self, Expect, SHAPES};
use proptest::prelude::*;
use serde_json::{Value, json};

#[test]
fn the_control_plane_reads_every_shape_as_the_api_server_does() {
    assert!(SHAPES.len() >= 60, "the table has {} shapes", SHAPES.len());
    let mut table = String::from("| method | target | control plane | API server |\n|---|---|---|---|\n");
    for s in SHAPES {
        let server = shapes::api_server(s.method, s.target);
        let server_text = server.as_ref().map_or_else(Clone::clone, shapes::describe);
        match (s.expect, shapes::control_plane(s.method, s.target)) {
            (Expect::Same, Ok((mine, canonical))) => {
                assert_eq!(Ok(&mine), server.as_ref(), "{} {} is read differently", s.method, s.target);
                // What is sent on is the canonical form; the API server reads it the same.
                assert_eq!(
                    shapes::api_server(s.method, &canonical),
                    Ok(mine.clone()),
                    "{} {}: canonical form {canonical}",
                    s.method,
                    s.target
                );
                table.push_str(&format!("| {} | `{}` | {} | same |\n", s.method, s.target, shapes::describe(&mine)));
            }
            (Expect::Refused(why), Err(e)) => {
                assert!(e.contains(why), "{} {}: refused for {e:?}, expected {why:?}", s.method, s.target);
                table.push_str(&format!("| {} | `{}` | 400: {e} | {server_text} |\n", s.method, s.target));
            }
            (expect, got) => panic!("{} {}: expected {expect:?}, got {got:?}", s.method, s.target),
        }
    }
    println!("{table}");
    // The refused spellings are real bypasses: the API server serves them as
    // what they do not look like.
    let sneaky = shapes::api_server("GET", "/api/v1%2Fnamespaces%2Fweb%2Fsecrets").expect("served");
    assert_eq!(shapes::describe(&sneaky), r#"list /v1 secrets ns="web" name="""#);
    let dotted = shapes::api_server("GET", "//api/v1/namespaces/web/secrets").expect("served");
    assert_eq!(shapes::describe(&dotted), r#"list /v1 secrets ns="web" name="""#);
}

/// A world whose rate limits stay out of the way: these tests send many
/// requests in a row, and are about authorization, not rate limiting.
async fn world_unlimited(policy: Value) -> World {
    world_full(
        policy,
        |_| {},
        |c| {
            c.per_token_rps = 100_000.0;
            c.per_tenant_rps = 100_000.0;
        },
    )
    .await
}

/// The audit log's joined view of one request. A refusal is on record
/// when it is answered; an allowed read's decision joins the next group
/// commit, so this waits for it.
async fn joined(w: &World, id: &str) -> Value {
    let path = format!("/v1/tenants/{}/audit/requests/{id}", w.tenant);
    let (api, p2) = (w.api.clone(), path.clone());
    kubechat_tests::wait::eventually(
        &format!("request {id} in the audit log"),
        std::time::Duration::from_secs(30),
        || {
            let (api, p) = (api.clone(), p2.clone());
            async move { api.get(&p).await.is_ok_and(|r| r.status == 200) }
        },
    )
    .await;
    w.api.get(&path).await.expect("reach").body
}

/// The audit record of a refusal, there as soon as the refusal is answered.
async fn refusal_record(w: &World, id: &str) -> Value {
    let r = w.api.get(&format!("/v1/tenants/{}/audit/requests/{id}", w.tenant)).await.expect("reach");
    assert_eq!(r.status, 200, "the refusal {id} is not in the audit log when it is answered: {}", r.body);
    r.body
}

fn request_id(r: &RawResponse) -> String {
    r.header("kubechat-request-id").expect("every kube-path answer names its request id").to_string()
}

/// The decision record's reading, comparable with kube-sim's.
fn decision_reading(d: &Value) -> [String; 6] {
    ["verb", "apiGroup", "namespace", "resource", "subresource", "name"]
        .map(|k| d[k].as_str().unwrap_or("").to_string())
}

fn sim_reading(i: &kube_sim::request::RequestInfo) -> [String; 6] {
    [&i.verb, &i.api_group, &i.namespace, &i.resource, &i.subresource, &i.name].map(String::clone)
}

/// Sends `method target` as a tenant admin and checks what happened to it:
/// forwarded exactly as authorized, or refused (400) and audited.
async fn check_through_the_stack(w: &World, raw: &RawClient, token: &str, method: &str, target: &str) -> bool {
    let r = raw.send_head(method, &format!("/k8s/clusters/{}{target}", w.cluster), token, &[]).await;
    let id = request_id(&r);
    let j = joined(w, &id).await;
    let d = &j["decision"];
    match d["decision"].as_str() {
        Some("allow") => {
            let seen =
                w.sim.sim.seen_request(&id).unwrap_or_else(|| panic!("{method} {target}: allowed but never arrived"));
            assert_eq!(
                Some(seen.target.as_str()),
                d["path"].as_str(),
                "{method} {target}: the API server got another path"
            );
            assert_eq!(
                sim_reading(&seen.info),
                decision_reading(d),
                "{method} {target}: authorized one thing, served another"
            );
            assert_eq!(seen.method, method);
            true
        }
        Some("deny") => {
            assert_eq!(r.status, 400, "{method} {target}: {}", r.text());
            assert_eq!(d["status"], 400);
            assert!(w.sim.sim.seen_request(&id).is_none(), "{method} {target}: refused, yet it reached the API server");
            false
        }
        other => panic!("{method} {target}: no decision ({other:?}): {j}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_reaches_the_api_server_exactly_as_authorized_or_is_refused_and_audited() {
    let w = world_unlimited(json!({})).await;
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ada@acme.example", "tenant_admin").await;
    for s in SHAPES {
        let forwarded = check_through_the_stack(&w, &raw, &token, s.method, s.target).await;
        assert_eq!(forwarded, s.expect == Expect::Same, "{} {}", s.method, s.target);
        if let Expect::Refused(why) = s.expect {
            let r = raw.send(s.method, &format!("/k8s/clusters/{}{}", w.cluster, s.target), &token, &[]).await;
            let body = r.json();
            assert_eq!(body["kind"], "Status", "{}", r.text());
            let msg = body["message"].as_str().unwrap_or_default();
            assert!(msg.starts_with("KubeChat: ") && msg.contains(why), "{}: {msg}", s.target);
        }
    }
    let v = w.api.get(&format!("/v1/tenants/{}/audit/verify", w.tenant)).await.expect("reach");
    assert_eq!(v.body["intact"], true, "{}", v.body);
}

/// Request targets made of pieces that matter to the API server's reading.
fn target_strategy() -> impl Strategy<Value = (String, String)> {
    let segment = prop::sample::select(vec![
        "api",
        "apis",
        "v1",
        "apps",
        "namespaces",
        "scratch",
        "kube-system",
        "pods",
        "secrets",
        "watch",
        "proxy",
        "status",
        "finalize",
        "log",
        "exec",
        "no-such",
        "%73ecrets",
        "%2F",
        "%2f",
        "..",
        ".",
        "",
        "%2e",
        "%2E%2e",
        "%zz",
        "%00",
        "a%20b",
        "%C3%A9",
        "x:y",
        "@",
        "~",
        "%25",
        "%3F",
        "%23",
        "+",
    ]);
    let query = prop::sample::select(vec![
        "",
        "watch=1",
        "watch=false",
        "watch",
        "w%61tch=yes",
        "limit=5",
        "limit=x",
        "fieldSelector=metadata.name%3Dx",
        "fieldSelector=a%3D%3Db%2Cmetadata.name%3Dy",
        "a=b;c",
        "%zz=1",
        "labelSelector=app%3Dweb",
        "x=%",
        "a+b=c+d",
    ]);
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PATCH"]);
    (prop::collection::vec(segment, 0..7), prop::collection::vec(query, 0..3), method).prop_map(|(segs, qs, m)| {
        let mut t = format!("/{}", segs.join("/"));
        let q: Vec<&str> = qs.into_iter().filter(|q| !q.is_empty()).collect();
        if !q.is_empty() {
            t.push('?');
            t.push_str(&q.join("&"));
        }
        (m.to_string(), t)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_any_target_the_control_plane_authorizes_the_api_server_gets_that_canonical_target() {
    let w = world_unlimited(json!({})).await;
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ada@acme.example", "tenant_admin").await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 64, ..ProptestConfig::default() });
    let forwarded = std::sync::atomic::AtomicUsize::new(0);
    tokio::task::block_in_place(|| {
        runner
            .run(&target_strategy(), |(method, target)| {
                if handle.block_on(check_through_the_stack(&w, &raw, &token, &method, &target)) {
                    forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            })
            .expect("every generated target");
    });
    let forwarded = forwarded.into_inner();
    assert!(forwarded > 0, "no generated target was forwarded: the property was never exercised");
}

/// Asserts a refusal by KubeChat: a Status naming KubeChat, status 400 or
/// 403, the decision `deny` in the audit log, and nothing at the API server.
async fn refused(w: &World, raw: &RawClient, token: &str, method: &str, target: &str, headers: &[(&str, &str)]) {
    let r = raw.send_head(method, &format!("/k8s/clusters/{}{target}", w.cluster), token, headers).await;
    assert!(matches!(r.status, 400 | 403), "{method} {target}: {} {}", r.status, r.text());
    let body = r.json();
    assert_eq!(body["kind"], "Status", "{method} {target}: {}", r.text());
    assert!(body["message"].as_str().is_some_and(|m| m.contains("KubeChat")), "{method} {target}: {body}");
    let id = request_id(&r);
    assert!(w.sim.sim.seen_request(&id).is_none(), "{method} {target} reached the API server");
    let j = refusal_record(w, &id).await;
    assert_eq!(j["decision"]["decision"], "deny", "{method} {target}: {j}");
    assert_eq!(j["decision"]["status"], i64::from(r.status));
}

/// Extra request headers.
type Headers = [(&'static str, &'static str)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reaches_no_secret_session_proxy_or_write_however_it_is_spelled() {
    let w = world_unlimited(json!({})).await;
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("victor@acme.example", "tenant_viewer").await;
    let pod = w.pod("web", "api-");
    let ws = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ];
    let spdy = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v4.channel.k8s.io")];
    let mut cases: Vec<(&str, String, &Headers)> = Vec::new();
    for t in [
        "/api/v1/namespaces/web/secrets",
        "/api/v1/namespaces/web/%73ecrets",
        "/api/v1/namespaces/web/secrets/db-password",
        "/api/v1/namespaces/web/%73%65%63%72%65%74%73/db-password",
        "/api/v1/secrets",
        "/%61pi/v1/secrets?limit=1",
        "/api/v1/watch/namespaces/web/secrets",
        "/api/v1/%77atch/secrets",
        "/api/v1/namespaces/web/secrets?watch=yes",
        "/api/v1/namespaces/web/secrets?fieldSelector=metadata.name%3Ddb-password",
        "/api/v1%2Fnamespaces%2Fweb%2Fsecrets",
        "/api/v1/namespaces/web/pods/..%2F..%2Fsecrets",
        "/api/v1/namespaces/web/pods/../../secrets",
        "/api/v1/namespaces/web/pods/%2e%2e/%2e%2e/secrets",
        "//api/v1/namespaces/web/secrets",
        "/api/v1/namespaces/web/secrets/",
    ] {
        cases.push(("GET", t.to_string(), &[]));
    }
    for (m, t, h) in [
        ("GET", format!("/api/v1/namespaces/web/pods/{pod}/exec?command=hostname&stdout=true"), &ws[..]),
        ("POST", format!("/api/v1/namespaces/web/pods/{pod}/exec?command=hostname&stdout=true"), &spdy[..]),
        ("GET", format!("/api/v1/namespaces/web/pods/{pod}/%65xec?command=hostname"), &ws[..]),
        ("GET", format!("/api/v1/namespaces/web/pods/{pod}/exec?command=hostname"), &[][..]),
        ("GET", format!("/api/v1/namespaces/web/pods/{pod}/attach?stdin=true"), &ws[..]),
        ("POST", format!("/api/v1/namespaces/web/pods/{pod}/attach?stdin=true"), &spdy[..]),
        ("GET", format!("/api/v1/namespaces/web/pods/{pod}/portforward?ports=8080"), &ws[..]),
        ("POST", format!("/api/v1/namespaces/web/pods/{pod}/portforward"), &spdy[..]),
        ("GET", format!("/api/v1/namespaces/web/pods/{pod}/proxy"), &[][..]),
        ("GET", format!("/api/v1/namespaces/web/pods/{pod}:8080/proxy/healthz"), &[][..]),
        ("GET", "/api/v1/namespaces/web/services/api/proxy/".to_string(), &[][..]),
        ("GET", "/api/v1/namespaces/web/services/api/proxy/x".to_string(), &[][..]),
        ("GET", format!("/api/v1/proxy/namespaces/web/pods/{pod}"), &[][..]),
        ("GET", "/api/v1/nodes/node-1/proxy/metrics".to_string(), &[][..]),
        ("DELETE", format!("/api/v1/namespaces/web/pods/{pod}"), &[][..]),
        ("DELETE", format!("/api/v1/namespaces/web/%70ods/{pod}"), &[][..]),
        ("DELETE", "/api/v1/namespaces/web/pods".to_string(), &[][..]),
        ("POST", "/api/v1/namespaces/web/pods".to_string(), &[][..]),
        ("PATCH", "/apis/apps/v1/namespaces/web/deployments/api".to_string(), &[][..]),
        ("PUT", "/apis/apps/v1/namespaces/web/deployments/api/scale".to_string(), &[][..]),
        ("OPTIONS", "/api/v1/namespaces/web/pods".to_string(), &[][..]),
        ("POST", format!("/api/v1/namespaces/web/pods/{pod}/eviction"), &[][..]),
        ("GET", "/metrics".to_string(), &[][..]),
        ("POST", "/api".to_string(), &[][..]),
        ("GET", "/logs/".to_string(), &[][..]),
    ] {
        cases.push((m, t, h));
    }
    for (m, t, h) in &cases {
        refused(&w, &raw, &token, m, t, h).await;
    }
    // Through the real kubectl too.
    let viewer = w.kubectl(&token, &w.cluster);
    for args in [
        vec!["get", "secrets", "-n", "web"],
        vec!["get", "secret", "db-password", "-n", "web", "-o", "yaml"],
        vec!["get", "--raw", "/api/v1/namespaces/web/%73ecrets"],
        vec!["get", "--raw", "/api/v1/watch/namespaces/web/secrets"],
        vec!["exec", &pod, "-n", "web", "--", "hostname"],
        vec!["attach", &pod, "-n", "web"],
        vec!["port-forward", &pod, "-n", "web", "0:8080"],
        vec!["delete", "pod", &pod, "-n", "web", "--wait=false"],
        vec!["scale", "deployment", "api", "-n", "web", "--replicas=5"],
        vec!["label", "pod", &pod, "-n", "web", "x=y"],
    ] {
        let err = viewer.fails(&args).await;
        assert!(err.contains("KubeChat"), "kubectl {}: {err}", args.join(" "));
    }
    // Every refusal is in the audit log, and it still verifies.
    let v = w.api.get(&format!("/v1/tenants/{}/audit/verify", w.tenant)).await.expect("reach");
    assert_eq!(v.body["intact"], true, "{}", v.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_clusters_refuse_writes_however_they_are_spelled() {
    let w = world_unlimited(json!({"readOnly": true})).await;
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ada@acme.example", "tenant_admin").await;
    let pod = w.pod("web", "api-");
    for (m, t) in [
        ("DELETE", format!("/api/v1/namespaces/web/pods/{pod}")),
        ("DELETE", format!("/api/v1/namespaces/web/%70ods/{pod}")),
        ("DELETE", format!("/%61pi/v1/namespaces/web/pods/{pod}")),
        ("DELETE", "/api/v1/namespaces/web/pods".to_string()),
        ("DELETE", format!("/api/v1/namespaces/web/pods/x%2F..%2F{pod}")),
        ("DELETE", format!("/api/v1/namespaces/web/pods/x/../{pod}")),
        ("POST", "/api/v1/namespaces/web/configmaps".to_string()),
        ("PUT", "/api/v1/namespaces/web/configmaps/app-config".to_string()),
        ("PATCH", "/apis/apps/v1/namespaces/web/deployments/api".to_string()),
        ("PATCH", "/apis/apps/v1/namespaces/web/deployments/api/scale".to_string()),
        ("POST", "/api/v1/namespaces".to_string()),
        ("DELETE", "/api/v1/namespaces/web".to_string()),
        ("OPTIONS", "/api/v1/namespaces/web/pods".to_string()),
        ("PROPFIND", "/api/v1/namespaces/web/pods".to_string()),
        ("GET", format!("/api/v1/namespaces/web/pods/{pod}/exec?command=hostname")),
        ("GET", format!("/api/v1/proxy/namespaces/web/pods/{pod}")),
    ] {
        refused(&w, &raw, &token, m, &t, &[]).await;
    }
    let admin = w.kubectl(&token, &w.cluster);
    for args in [
        vec!["delete", "pod", &pod, "-n", "web", "--wait=false"],
        vec!["scale", "deployment", "api", "-n", "web", "--replicas=5"],
        vec!["create", "namespace", "x"],
        vec!["exec", &pod, "-n", "web", "--", "hostname"],
    ] {
        let err = admin.fails(&args).await;
        assert!(err.contains("read-only"), "kubectl {}: {err}", args.join(" "));
    }
    assert!(admin.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_namespaces_and_denied_resources_hold_however_they_are_spelled() {
    let w = world_unlimited(json!({"allowedNamespaces": ["web"], "deniedResources": ["configmaps"]})).await;
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    for (m, t) in [
        ("GET", "/api/v1/namespaces/default/pods"),
        ("GET", "/api/v1/namespaces/%64efault/pods"),
        ("GET", "/api/v1/watch/namespaces/default/pods"),
        ("GET", "/api/v1/pods"),
        ("GET", "/api/v1/watch/pods"),
        ("GET", "/api/v1/namespaces/web/../default/pods"),
        ("GET", "/api/v1/namespaces/web%2F..%2Fdefault/pods"),
        ("DELETE", "/api/v1/namespaces/kube-system/pods"),
        ("GET", "/api/v1/namespaces/web/configmaps"),
        ("GET", "/api/v1/namespaces/web/%63onfigmaps"),
        ("GET", "/api/v1/namespaces/web/configmaps/app-config"),
        ("GET", "/api/v1/watch/namespaces/web/configmaps"),
        ("GET", "/api/v1/configmaps"),
        ("DELETE", "/api/v1/namespaces/web/configmaps"),
        ("PATCH", "/api/v1/namespaces/web"),
    ] {
        refused(&w, &raw, &token, m, t, &[]).await;
    }
    let user = w.kubectl(&token, &w.cluster);
    assert!(user.fails(&["get", "pods", "-n", "default"]).await.contains("allows only namespaces web"));
    assert!(user.fails(&["get", "configmaps", "-n", "web"]).await.contains("denies access to configmaps"));
    assert!(user.fails(&["get", "--raw", "/api/v1/namespaces/%64efault/pods"]).await.contains("KubeChat"));
    assert!(user.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_kubernetes_upgrades_pass_and_proxy_headers_never_reach_the_api_server() {
    let w = world_unlimited(json!({})).await;
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let pod = w.pod("web", "api-");
    let exec = format!("/api/v1/namespaces/web/pods/{pod}/exec?command=hostname&stdout=true");
    for (target, headers, why) in [
        (
            exec.clone(),
            vec![("Connection", "Upgrade"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")],
            "h2c",
        ),
        ("/api/v1/namespaces/web/pods".to_string(), vec![("Connection", "Upgrade"), ("Upgrade", "h2c")], "h2c"),
        (
            exec.clone(),
            vec![("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Protocol", "chat")],
            "subprotocol",
        ),
        (exec.clone(), vec![("Connection", "Upgrade"), ("Upgrade", "websocket")], "subprotocol"),
        (
            exec.clone(),
            vec![
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Protocol", "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.a2NfeA"),
            ],
            "bearer",
        ),
        (
            "/api/v1/namespaces/web/pods".to_string(),
            vec![("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Protocol", "v5.channel.k8s.io")],
            "only for exec",
        ),
        (exec.clone(), vec![("Connection", "Upgrade"), ("Upgrade", "TLS/1.0")], "TLS/1.0"),
    ] {
        let r = raw.send_head("GET", &format!("/k8s/clusters/{}{target}", w.cluster), &token, &headers).await;
        assert_eq!(r.status, 400, "{target} {headers:?}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("KubeChat") && msg.contains(why), "{msg}");
        assert!(w.sim.sim.seen_request(&request_id(&r)).is_none());
        assert_eq!(refusal_record(&w, &request_id(&r)).await["decision"]["decision"], "deny");
    }
    // A real exec (kubectl's WebSocket) still works.
    let user = w.kubectl(&token, &w.cluster);
    assert_eq!(user.ok(&["exec", &pod, "-n", "web", "--", "hostname"]).await.trim(), pod);

    // What the caller says about itself never reaches the API server.
    let forged = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "http"),
        ("Forwarded", "for=6.6.6.6;proto=http"),
        ("X-Real-Ip", "6.6.6.6"),
        ("X-Remote-User", "system:admin"),
        ("X-Remote-Group", "system:masters"),
        ("Impersonate-User", "system:admin"),
        ("Impersonate-Group", "system:masters"),
        ("Kubechat-User", "kubechat:user:admin@acme.example"),
    ];
    let r =
        raw.send_head("GET", &format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster), &token, &forged).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = w.sim.sim.seen_request(&request_id(&r)).expect("arrived");
    for (name, value) in &seen.headers {
        assert!(
            !(name.starts_with("x-forwarded-")
                || name == "forwarded"
                || name == "x-real-ip"
                || name.starts_with("x-remote-")),
            "{name}: {value} reached the API server"
        );
        assert!(
            !value.contains("6.6.6.6") && !value.contains("system:masters") && !value.contains("system:admin"),
            "{name}: {value}"
        );
    }
    assert_eq!(seen.user, "kubechat:user:ursula@acme.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeating_one_kubectl_session_does_not_evade_the_command_quota() {
    let w = world_unlimited(json!({})).await;
    let platform = Client::new_tls(&w.cp_url, Some(Secret(ADMIN.into())), &w.cp_ca);
    let limits = json!({"maxUsers": 50, "maxClusters": 20, "maxCommandsPerMonth": 2, "maxAuditRetentionDays": 90});
    let r = platform.put(&format!("/v1/tenants/{}", w.tenant), &json!({"limits": limits})).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let target = format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster);
    let session = [("Kubectl-Session", "6f2a9c1e-0000-4000-8000-000000000001"), ("Kubectl-Command", "kubectl get")];
    let window = kubechat_control_plane::billing::SESSION_WINDOW_REQUESTS as usize;
    // Two windows of one session are two commands: the whole quota.
    for i in 0..2 * window {
        let r = raw.send_head("GET", &target, &token, &session).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let r = raw.send("GET", &target, &token, &session).await;
    assert_eq!(r.status, 429, "the same session kept counting as one command: {}", r.text());
    assert!(
        r.json()["message"].as_str().is_some_and(|m| m.contains("has used all 2 kubectl commands")),
        "{}",
        r.text()
    );
    let usage = w.api.get(&format!("/v1/tenants/{}/usage", w.tenant)).await.expect("reach").body;
    assert_eq!(usage["metered"]["command_executed"], 2.0, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_servers_own_unavailable_answers_do_not_pause_the_tenant() {
    let w = world_full(
        json!({}),
        |_| {},
        |c| {
            c.breaker_threshold = 3;
            c.breaker_cooldown = Duration::from_secs(30);
        },
    )
    .await;
    // An aggregated API whose backend is down: the API server answers 503.
    w.sim.sim.set_unavailable("metrics.k8s.io", true);
    let path = format!("/k8s/clusters/{}/apis/metrics.k8s.io/v1beta1/namespaces/web/pods", w.cluster);
    for _ in 0..10 {
        let r = w.api.get(&path).await.expect("reach");
        assert_eq!(r.status, 503);
        assert_eq!(r.body, json!("service unavailable\n"), "the API server's own answer, passed through");
    }
    let ok = w.api.get(&format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster)).await.expect("reach");
    assert_eq!(ok.status, 200, "the tenant was paused for its API server's answers: {}", ok.body);
    let metrics = w.cp_metrics().await;
    assert!(metrics.contains("kubechat_cp_breaker_refusals_total 0"), "{metrics}");
    // (KubeChat's own failures do open it, with the same settings:
    // control_plane_kube::a_tenant_failing_upstream_is_paused_by_its_breaker_and_others_are_served.)
}
