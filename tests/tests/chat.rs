//! Chat commands end to end: kubectl or English in, a plan with each API
//! request classified and authorized as the kube path does (and sent
//! through it: kube-sim sees each request as the API server would), reads
//! run at once, writes only on a confirmation bound to the exact request.

use std::time::Duration;

use kubechat_control_plane::Secret;
use kubechat_control_plane::client::{Client, Reply};
use kubechat_tests::kubectl::Kubectl;
use kubechat_tests::platform::{World, world};
use kubechat_tests::wait::eventually;
use serde_json::{Value, json};

fn chat(w: &World, token: &str) -> Client {
    Client::new_tls(&w.cp_url, Some(Secret(token.to_string())), &w.cp_ca)
}

fn commands(w: &World) -> String {
    format!("/v1/clusters/{}/commands", w.cluster)
}

async fn argv(c: &Client, w: &World, args: &[&str]) -> Reply {
    c.post(&commands(w), &json!({"argv": args})).await.expect("reach")
}

async fn text(c: &Client, w: &World, t: &str) -> Reply {
    c.post(&commands(w), &json!({"text": t, "namespace": "web"})).await.expect("reach")
}

async fn plan(c: &Client, w: &World, args: &[&str]) -> Value {
    let r = argv(c, w, args).await;
    assert_eq!(r.status, 200, "{args:?}: {}", r.body);
    r.body
}

async fn confirm_on(c: &Client, cluster: &str, plan: &Value, confirmation: &Value, typed: Option<&str>) -> Reply {
    let id = plan["id"].as_str().expect("plan id");
    let mut body = json!({"confirmation": confirmation});
    if let Some(t) = typed {
        body["typedName"] = json!(t);
    }
    c.post(&format!("/v1/clusters/{cluster}/commands/{id}/confirm"), &body).await.expect("reach")
}

async fn confirm(c: &Client, w: &World, plan: &Value, typed: Option<&str>) -> Reply {
    confirm_on(c, &w.cluster, plan, &plan["confirmation"], typed).await
}

/// kubectl as a tenant admin who checks what chat did.
async fn admin_kubectl(w: &World) -> Kubectl {
    w.kubectl(&w.user("checker@acme.example", "tenant_admin").await, &w.cluster)
}

/// What kubectl printed, trimmed.
async fn ok(k: &Kubectl, args: &[&str]) -> String {
    k.ok(args).await.trim().to_string()
}

fn blocks(plan: &Value) -> &Vec<Value> {
    plan["result"].as_array().unwrap_or_else(|| panic!("a result: {plan}"))
}

fn sent_ids(plan: &Value) -> Vec<String> {
    plan["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["requestId"].as_str().map(str::to_string))
        .collect()
}

/// Every request the plan says it sent reached kube-sim, read there (by
/// kube-sim's own parser) exactly as the plan classified it.
fn sent_as_classified(w: &World, plan: &Value) {
    for r in plan["requests"].as_array().into_iter().flatten() {
        let Some(id) = r["requestId"].as_str() else { continue };
        if r["status"].as_u64().is_some_and(|s| s >= 400) && !r["allowed"].as_bool().unwrap_or(false) {
            assert!(w.sim.sim.seen_request(id).is_none(), "a refused request reached the API server: {r}");
            continue;
        }
        let seen =
            w.sim.sim.seen_request(id).unwrap_or_else(|| panic!("request {id} never reached the API server: {r}"));
        let i = &seen.info;
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.subresource.as_str(), i.namespace.as_str(), i.name.as_str()),
            (
                r["verb"].as_str().unwrap_or(""),
                r["resource"].as_str().unwrap_or(""),
                r["subresource"].as_str().unwrap_or(""),
                r["namespace"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            ),
            "the plan classified {r} as the API server did not ({})",
            seen.target
        );
        assert_eq!(seen.user, "kubechat:user:".to_string() + seen.user.trim_start_matches("kubechat:user:"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_at_once_through_the_kube_path() {
    let w = world(json!({})).await;
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);

    let p = plan(&user, &w, &["get", "pods", "-n", "web"]).await;
    assert_eq!((p["risk"].as_str(), p["needsConfirmation"].as_bool()), (Some("read"), Some(false)));
    assert_eq!(p["kubectl"], "kubectl get pods -n web");
    let table = &blocks(&p)[0];
    assert_eq!(table["type"], "table");
    let cols: Vec<&str> =
        table["columns"].as_array().expect("columns").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(cols, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let names: Vec<&str> = table["rows"].as_array().expect("rows").iter().filter_map(|r| r[0].as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("api-")) && names.iter().any(|n| n.starts_with("frontend-")),
        "{names:?}"
    );
    assert!(p["requests"].as_array().expect("requests").iter().all(|r| r["allowed"] == true));
    assert!(
        !p["requests"].as_array().expect("requests").iter().any(|r| r["path"] == "/apis"),
        "discovery is not the command's"
    );
    sent_as_classified(&w, &p);

    // Wide adds the wide columns; -A adds the namespace.
    let p = plan(&user, &w, &["get", "pods", "-A", "-o", "wide"]).await;
    let cols: Vec<String> = blocks(&p)[0]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(cols[0], "NAMESPACE");
    assert!(cols.iter().any(|c| c == "NODE") && cols.iter().any(|c| c == "IP"), "{cols:?}");
    assert_eq!(p["requests"][0]["path"], "/api/v1/pods?limit=500");

    // YAML of one object.
    let p = plan(&user, &w, &["get", "deploy/api", "-n", "web", "-o", "yaml"]).await;
    let yaml = blocks(&p)[0]["text"].as_str().expect("yaml");
    assert!(yaml.contains("kind: Deployment") && yaml.contains("name: api"), "{yaml}");

    // describe, logs, events, top, rollout status and history, diagnose, changes.
    let p = plan(&user, &w, &["describe", "deployment", "api", "-n", "web"]).await;
    let d = blocks(&p)[0]["text"].as_str().expect("text");
    assert!(
        d.contains("Name:         api") && d.contains("Replicas:") && d.contains("Image:  registry.example/api:1.0"),
        "{d}"
    );
    let p = plan(&user, &w, &["logs", "deployment/api", "-n", "web", "--tail=2"]).await;
    let logs = blocks(&p).iter().find(|b| b["title"].as_str().is_some_and(|t| t.starts_with("logs"))).expect("logs");
    assert_eq!(logs["text"].as_str().expect("text").lines().count(), 2, "{logs}");
    assert!(p["requests"].as_array().expect("r").iter().any(|r| r["subresource"] == "log"));
    sent_as_classified(&w, &p);
    let p = plan(&user, &w, &["events", "-n", "web"]).await;
    assert_eq!(blocks(&p)[0]["columns"][2]["name"], "REASON");
    let p = plan(&user, &w, &["top", "pods", "-n", "web"]).await;
    let rows = blocks(&p)[0]["rows"].as_array().expect("rows");
    assert!(rows.iter().all(|r| r[1].as_str().is_some_and(|c| c.ends_with('m'))), "{rows:?}");
    let p = plan(&user, &w, &["rollout", "status", "deployment/api", "-n", "web"]).await;
    assert_eq!(blocks(&p)[0]["text"], "deployment \"api\" successfully rolled out");
    let p = plan(&user, &w, &["rollout", "history", "deployment/api", "-n", "web"]).await;
    assert_eq!(blocks(&p)[0]["rows"][0][0], 1);
    let p = plan(&user, &w, &["diagnose", "deployment", "api", "-n", "web"]).await;
    assert_eq!(blocks(&p)[0]["type"], "findings");
    assert_eq!(blocks(&p)[0]["items"][0]["severity"], "info", "a healthy deployment: {p}");
    let p = plan(&user, &w, &["changes", "-n", "web", "--since=1h"]).await;
    assert_eq!(blocks(&p)[0]["type"], "findings");

    // Large output is paged.
    let cm = w.sim.sim.cluster.resource_by_plural("configmaps").expect("configmaps");
    for i in 0..510 {
        w.sim
            .sim
            .cluster
            .create(&cm, "web", json!({"metadata": {"name": format!("page-{i:03}")}, "data": {"i": i.to_string()}}))
            .expect("create");
    }
    let p = plan(&user, &w, &["get", "configmaps", "-n", "web"]).await;
    let first = &blocks(&p)[0];
    assert_eq!(first["rows"].as_array().expect("rows").len(), 500);
    let next = first["continue"].as_str().expect("a continue token").to_string();
    let r = user
        .post(&commands(&w), &json!({"argv": ["get", "configmaps", "-n", "web"], "continue": next}))
        .await
        .expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    let rest = blocks(&r.body)[0]["rows"].as_array().expect("rows").len();
    assert!(rest >= 10 && blocks(&r.body)[0].get("continue").is_none(), "{rest} rows on the last page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_dry_run_with_a_diff_and_change_nothing_until_confirmed() {
    let w = world(json!({})).await;
    let admin = admin_kubectl(&w).await;
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let replicas = async || ok(&admin, &["get", "deploy", "api", "-n", "web", "-o", "jsonpath={.spec.replicas}"]).await;
    assert_eq!(replicas().await, "1");

    // scale: the diff says what changes; nothing changes until confirmed.
    let p = plan(&user, &w, &["scale", "deployment", "api", "-n", "web", "--replicas=3"]).await;
    assert_eq!((p["risk"].as_str(), p["needsConfirmation"].as_bool()), (Some("write"), Some(true)));
    assert_eq!(p["dryRun"][0]["changes"], json!(["spec.replicas: 1 → 3"]), "{p}");
    assert!(p["confirmation"].as_str().is_some_and(|c| c.starts_with("kcc_")));
    assert!(p["requestsHash"].as_str().is_some_and(|h| h.len() == 64));
    let dry = p["requests"].as_array().expect("r").iter().find(|r| r["dryRun"] == true).expect("a dry run").clone();
    let seen =
        w.sim.sim.seen_request(dry["requestId"].as_str().expect("id")).expect("the dry run reached the API server");
    assert!(seen.target.contains("dryRun=All"), "{}", seen.target);
    let last = p["requests"].as_array().expect("r").last().expect("the write").clone();
    assert_eq!(
        (last["verb"].as_str(), last["status"].as_u64()),
        (Some("patch"), None),
        "the write is planned, not sent"
    );
    assert_eq!(replicas().await, "1", "nothing changed before the confirmation");
    sent_as_classified(&w, &p);
    let c = confirm(&user, &w, &p, None).await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["succeeded"], true);
    assert_eq!(replicas().await, "3");

    // label (a patch): the diff names the label.
    let pod = w.pod("web", "frontend-");
    let p = plan(&user, &w, &["label", "pod", &pod, "-n", "web", "tier=web"]).await;
    assert_eq!(p["dryRun"][0]["changes"], json!(["metadata.labels.tier: (none) → web"]), "{p}");
    assert_eq!(ok(&admin, &["get", "pod", &pod, "-n", "web", "-o", "jsonpath={.metadata.labels.tier}"]).await, "");
    assert_eq!(confirm(&user, &w, &p, None).await.status, 200);
    assert_eq!(ok(&admin, &["get", "pod", &pod, "-n", "web", "-o", "jsonpath={.metadata.labels.tier}"]).await, "web");
    // Changing it needs --overwrite, as kubectl says.
    let r = argv(&user, &w, &["label", "pod", &pod, "-n", "web", "tier=db"]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().expect("m").contains("already has a value (web), and --overwrite is false")
    );
    let p = plan(&user, &w, &["annotate", "deploy", "api", "-n", "web", "owner=ops"]).await;
    assert_eq!(p["dryRun"][0]["changes"], json!(["metadata.annotations.owner: (none) → ops"]), "{p}");

    // rollout restart: the template's restartedAt annotation.
    let p = plan(&user, &w, &["rollout", "restart", "deployment/api", "-n", "web"]).await;
    let changes = p["dryRun"][0]["changes"].as_array().expect("changes");
    assert!(
        changes.iter().any(|c| c.as_str().is_some_and(
            |c| c.starts_with("spec.template.metadata.annotations.kubectl.kubernetes.io/restartedAt: (none) → 20")
        )),
        "{p}"
    );
    let before = ok(&admin, &["get", "rs", "-n", "web", "-l", "app=api", "-o", "name"]).await;
    assert_eq!(confirm(&user, &w, &p, None).await.status, 200);
    let after = ok(&admin, &["get", "rs", "-n", "web", "-l", "app=api", "-o", "name"]).await;
    assert!(after.lines().count() > before.lines().count(), "a new ReplicaSet: {before} → {after}");

    // delete: destructive, the name typed back.
    let victim = w.pod("web", "frontend-");
    let p = plan(&user, &w, &["delete", "pod", &victim, "-n", "web"]).await;
    assert_eq!(p["risk"], "destructive");
    assert_eq!(p["dryRun"][0]["summary"], format!("deletes pod/{victim}"));
    assert_eq!(p["typeToConfirm"], victim.as_str());
    assert!(
        ok(&admin, &["get", "pods", "-n", "web", "-o", "name"]).await.contains(&victim),
        "still there after the dry run"
    );
    let r = confirm(&user, &w, &p, None).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("type_to_confirm")), "{}", r.body);
    let r = confirm(&user, &w, &p, Some("frontend")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = confirm(&user, &w, &p, Some(&victim)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!ok(&admin, &["get", "pods", "-n", "web", "-o", "name"]).await.contains(&victim));

    // Deleting by selector lists exactly the objects it deletes.
    let p = plan(&user, &w, &["delete", "pods", "-n", "web", "-l", "app=frontend"]).await;
    let n = ok(&admin, &["get", "pods", "-n", "web", "-l", "app=frontend", "-o", "name"]).await.lines().count();
    assert_eq!(p["dryRun"].as_array().expect("dry").len(), n);
    assert_eq!(p["typeToConfirm"], format!("{n} pods"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_runs_its_own_plan_once_for_its_person_on_its_cluster_while_nothing_changed() {
    let w = world(json!({})).await;
    let admin = admin_kubectl(&w).await;
    let ursula = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let other = chat(&w, &w.user("oscar@acme.example", "tenant_user").await);
    let scale = ["scale", "deployment", "api", "-n", "web", "--replicas=2"];
    let replicas = async || ok(&admin, &["get", "deploy", "api", "-n", "web", "-o", "jsonpath={.spec.replicas}"]).await;

    // No confirmation, an empty one, a made-up one.
    let p = plan(&ursula, &w, &scale).await;
    let id = p["id"].as_str().expect("id");
    let r = ursula.post(&format!("{}/{id}/confirm", commands(&w)), &json!({})).await.expect("reach");
    assert_eq!(r.status, 400, "{}", r.body);
    for bad in [json!(""), json!("kcc_0000"), json!("made-up")] {
        let r = confirm_on(&ursula, &w.cluster, &p, &bad, None).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("wrong_confirmation")), "{}", r.body);
    }
    // Another plan's confirmation.
    let p2 = plan(&ursula, &w, &["scale", "deployment", "frontend", "-n", "web", "--replicas=1"]).await;
    let r = confirm_on(&ursula, &w.cluster, &p, &p2["confirmation"], None).await;
    assert_eq!(r.body["error"]["code"], "wrong_confirmation", "{}", r.body);
    // Another person's plan.
    let r = confirm(&other, &w, &p, None).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("not_your_plan")), "{}", r.body);
    // Another cluster.
    let c2 =
        w.api.post(&format!("/v1/tenants/{}/clusters", w.tenant), &json!({"name": "staging"})).await.expect("reach");
    let c2 = c2.body["id"].as_str().expect("cluster").to_string();
    let r = confirm_on(&ursula, &c2, &p, &p["confirmation"], None).await;
    assert!(matches!(r.body["error"]["code"].as_str(), Some("wrong_cluster" | "not_found")), "{}", r.body);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(replicas().await, "1", "none of those ran it");
    // The right one, once.
    assert_eq!(confirm(&ursula, &w, &p, None).await.status, 200);
    assert_eq!(replicas().await, "2");
    let r = confirm(&ursula, &w, &p, None).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (409, Some("already_used")), "{}", r.body);

    // Expired (the expiry is moved into the past, as two minutes would).
    let p = plan(&ursula, &w, &["scale", "deployment", "api", "-n", "web", "--replicas=4"]).await;
    let db = w.app.db.clone();
    let mut tx = db.begin(&kubechat_control_plane::store::Scope::Platform).await.expect("tx");
    sqlx::query("UPDATE chat_plans SET expires_at = 1 WHERE id = $1")
        .bind(p["id"].as_str().expect("id").to_string())
        .execute(&mut *tx)
        .await
        .expect("update");
    tx.commit().await.expect("commit");
    let r = confirm(&ursula, &w, &p, None).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (410, Some("expired")), "{}", r.body);

    // The object changed since the plan: a new plan, never a blind write.
    let p = plan(&ursula, &w, &["scale", "deployment", "api", "-n", "web", "--replicas=5"]).await;
    ok(&admin, &["annotate", "deploy", "api", "-n", "web", "touched=yes"]).await;
    let r = confirm(&ursula, &w, &p, None).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (409, Some("changed")), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().expect("m").contains("plan the command again"));
    assert_eq!(replicas().await, "2", "not written");

    // A role lost between plan and confirmation.
    let p = plan(&ursula, &w, &["scale", "deployment", "api", "-n", "web", "--replicas=3"]).await;
    let users = w.api.get(&format!("/v1/tenants/{}/users", w.tenant)).await.expect("reach");
    let uid = users.body["items"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == "ursula@acme.example")
        .expect("ursula")["id"]
        .as_str()
        .expect("id")
        .to_string();
    w.api
        .put(&format!("/v1/tenants/{}/users/{uid}", w.tenant), &json!({"role": "tenant_viewer"}))
        .await
        .expect("reach");
    let r = confirm(&ursula, &w, &p, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().expect("m").contains("tenant_viewer can only read"), "{}", r.body);
    assert_eq!(replicas().await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_plans_can_require_a_second_tenant_admins_approval() {
    let w = world(json!({})).await;
    let r = w
        .api
        .put(&format!("/v1/tenants/{}/settings", w.tenant), &json!({"chat": {"requireApproval": true}}))
        .await
        .expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    let ada_token = w.user("ada@acme.example", "tenant_admin").await;
    let ada = chat(&w, &ada_token);
    let bob = chat(&w, &w.user("bob@acme.example", "tenant_admin").await);
    let ursula = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let pod = w.pod("web", "frontend-");
    let p = plan(&ada, &w, &["delete", "pod", &pod, "-n", "web"]).await;
    assert_eq!(p["needsApproval"], true);
    let r = confirm(&ada, &w, &p, Some(&pod)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("needs_approval")), "{}", r.body);
    let approve = format!("{}/{}/approve", commands(&w), p["id"].as_str().expect("id"));
    let r = ada.post(&approve, &json!({})).await.expect("reach");
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("self_approval")), "{}", r.body);
    let r = ursula.post(&approve, &json!({})).await.expect("reach");
    assert_eq!(r.status, 403, "a tenant user cannot approve: {}", r.body);
    let r = bob.post(&approve, &json!({})).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = confirm(&ada, &w, &p, Some(&pod)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Writes that are not destructive need no approval.
    let p = plan(&ada, &w, &["scale", "deployment", "api", "-n", "web", "--replicas=2"]).await;
    assert!(p.get("needsApproval").is_none(), "{p}");
    // And the approval is in the audit chain.
    let audit = w.api.get(&format!("/v1/tenants/{}/audit?kind=chat&verb=approval", w.tenant)).await.expect("reach");
    assert!(
        audit.body["items"].as_array().expect("items").iter().any(|e| e["user"] == "kubechat:user:bob@acme.example"),
        "{}",
        audit.body
    );
}

/// What KubeChat decided, through chat and through kubectl: `true` if
/// KubeChat refused it (the API server's own refusals do not count).
async fn kubechat_refused_in_chat(c: &Client, w: &World, args: &[&str]) -> bool {
    let r = argv(c, w, args).await;
    let msg = r.body["error"]["message"].as_str().unwrap_or("");
    match r.status {
        200 => false,
        403 if r.body["error"]["code"] == "forbidden" => {
            assert!(msg.contains("KubeChat:"), "{args:?}: {}", r.body);
            true
        }
        // The API server's (or the object's) answer: KubeChat let it through.
        _ => {
            assert!(!msg.contains("KubeChat:"), "{args:?}: {}", r.body);
            false
        }
    }
}

async fn kubechat_refused_in_kubectl(k: &kubechat_tests::kubectl::Kubectl, args: &[&str]) -> bool {
    let mut a: Vec<&str> = args.to_vec();
    let write = !matches!(args[0], "get" | "describe" | "logs" | "events" | "top")
        && (args[0] != "rollout" || !matches!(args[1], "status" | "history"));
    if write && args[0] != "rollout" && args[0] != "drain" && args[0] != "cordon" && args[0] != "uncordon" {
        a.push("--dry-run=server");
    }
    let run = k.run(&a).await;
    let out = format!("{}{}", run.stdout, run.stderr);
    out.contains("KubeChat:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_has_the_same_policy_as_kubectl_for_every_role_and_cluster_policy() {
    let w = world(json!({})).await;
    let tokens = [
        ("tenant_viewer", w.user("victor@acme.example", "tenant_viewer").await),
        ("tenant_user", w.user("ursula@acme.example", "tenant_user").await),
        ("tenant_admin", w.user("ada@acme.example", "tenant_admin").await),
    ];
    let policies = [
        json!({}),
        json!({"readOnly": true}),
        json!({"allowedNamespaces": ["web"]}),
        json!({"deniedResources": ["secrets", "pods/log"]}),
    ];
    // Reads and dry-runnable writes: kubectl runs writes with --dry-run=server.
    let commands: Vec<Vec<&str>> = vec![
        vec!["get", "pods", "-n", "web"],
        vec!["get", "pods", "-A"],
        vec!["get", "secrets", "-n", "web"],
        vec!["get", "nodes"],
        vec!["get", "pods", "-n", "default"],
        vec!["logs", "deployment/api", "-n", "web", "--tail=1"],
        vec!["describe", "deployment", "api", "-n", "web"],
        vec!["scale", "deployment", "api", "-n", "web", "--replicas=2"],
        vec!["scale", "deployment", "hello", "-n", "default", "--replicas=2"],
        vec!["label", "deployment", "api", "-n", "web", "x=y"],
        vec!["annotate", "deployment", "api", "-n", "web", "a=b"],
        vec!["label", "node", "sim-node-1", "x=y"],
        vec!["delete", "secret", "db-password", "-n", "web"],
    ];
    let mut table = Vec::new();
    for policy in &policies {
        let r = w
            .api
            .put(&format!("/v1/tenants/{}/clusters/{}", w.tenant, w.cluster), &json!({"policy": policy}))
            .await
            .expect("reach");
        assert_eq!(r.status, 200, "{}", r.body);
        for (role, token) in &tokens {
            let c = chat(&w, token);
            let k = w.kubectl(token, &w.cluster);
            for cmd in &commands {
                let in_chat = kubechat_refused_in_chat(&c, &w, cmd).await;
                let in_kubectl = kubechat_refused_in_kubectl(&k, cmd).await;
                table.push(format!("| {policy} | {role} | {} | {} | {} |", cmd.join(" "), in_chat, in_kubectl));
                assert_eq!(
                    in_chat,
                    in_kubectl,
                    "{role} under {policy}: `{}` — refused in chat {in_chat}, in kubectl {in_kubectl}",
                    cmd.join(" ")
                );
            }
        }
    }
    println!(
        "| policy | role | command | chat refused | kubectl refused |\n|---|---|---|---|---|\n{}",
        table.join("\n")
    );
    let refused = table.iter().filter(|l| l.ends_with("| true | true |")).count();
    assert!(
        refused >= 20 && refused < table.len() - 20,
        "the table exercises both verdicts: {refused} of {}",
        table.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_for_those_who_may_not_read_them() {
    let w = world(json!({})).await;
    let admin = admin_kubectl(&w).await;
    let viewer = chat(&w, &w.user("victor@acme.example", "tenant_viewer").await);
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    ok(&admin, &["set", "env", "deployment/api", "-n", "web", "DB_PASSWORD=hunter2", "LOG_LEVEL=debug"]).await;
    eventually("the new pod has the env", Duration::from_secs(30), || async {
        ok(&admin, &["get", "pods", "-n", "web", "-l", "app=api", "-o", "yaml"]).await.contains("hunter2")
    })
    .await;
    // The viewer sees pods, not the secret-looking value.
    let p = plan(&viewer, &w, &["get", "pods", "-n", "web", "-l", "app=api", "-o", "yaml"]).await;
    let yaml = blocks(&p)[0]["text"].as_str().expect("yaml").to_string();
    assert!(!yaml.contains("hunter2") && yaml.contains("<redacted>") && yaml.contains("debug"), "{yaml}");
    // The viewer cannot read secrets at all: the same policy as kubectl.
    let r = argv(&viewer, &w, &["get", "secret", "db-password", "-n", "web", "-o", "yaml"]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().expect("m").contains("tenant_viewer cannot read secrets"));
    // A user asking for the YAML of a secret sees it; a description hides values.
    let p = plan(&user, &w, &["get", "secret", "db-password", "-n", "web", "-o", "yaml"]).await;
    assert!(blocks(&p)[0]["text"].as_str().expect("yaml").contains("c2VjcmV0"));
    let p = plan(&user, &w, &["describe", "secret", "db-password", "-n", "web"]).await;
    let d = blocks(&p)[0]["text"].as_str().expect("text");
    assert!(!d.contains("c2VjcmV0") && d.contains("<redacted> (8 bytes)"), "{d}");
    assert!(
        !plan(&user, &w, &["get", "secrets", "-n", "web"]).await.to_string().contains("c2VjcmV0"),
        "a table shows no values"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_only_the_tenants_allowed_commands_on_confirmation() {
    let w = world(json!({})).await;
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let viewer = chat(&w, &w.user("victor@acme.example", "tenant_viewer").await);
    let pod = w.pod("web", "api-");
    // Off by default.
    let r = argv(&user, &w, &["exec", &pod, "-n", "web", "--", "hostname"]).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("exec_not_allowed")), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().expect("m").contains("exec is off for this tenant"));
    let r = w
        .api
        .put(
            &format!("/v1/tenants/{}/settings", w.tenant),
            &json!({"chat": {"execAllowList": [["hostname"], ["cat", "/etc/hostname"]]}}),
        )
        .await
        .expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w
        .api
        .put(&format!("/v1/tenants/{}/settings", w.tenant), &json!({"chat": {"execAllowlist": []}}))
        .await
        .expect("reach");
    assert_eq!(r.status, 400, "a misspelt setting is refused: {}", r.body);
    for not_allowed in [&["cat", "/etc/passwd"][..], &["sh", "-c", "hostname"], &["hostnamectl"]] {
        let mut a = vec!["exec", pod.as_str(), "-n", "web", "--"];
        a.extend_from_slice(not_allowed);
        let r = argv(&user, &w, &a).await;
        assert_eq!(r.body["error"]["code"], "exec_not_allowed", "{not_allowed:?}: {}", r.body);
    }
    let r = argv(&viewer, &w, &["exec", &pod, "-n", "web", "--", "hostname"]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().expect("m").contains("KubeChat"), "{}", r.body);
    let r = argv(&user, &w, &["exec", "-it", &pod, "-n", "web", "--", "hostname"]).await;
    assert_eq!(r.body["error"]["code"], "refused", "{}", r.body);
    // Allowed: planned (no dry run for exec), run only on confirmation.
    let p = plan(&user, &w, &["exec", &pod, "-n", "web", "--", "hostname"]).await;
    assert_eq!((p["risk"].as_str(), p["needsConfirmation"].as_bool()), (Some("interactive"), Some(true)));
    assert!(p["dryRun"][0]["summary"].as_str().expect("s").contains("exec has no dry run"));
    let c = confirm(&user, &w, &p, None).await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["result"][0]["text"].as_str().expect("stdout").trim(), pod, "{}", c.body);
    // English never runs exec.
    let r = text(&user, &w, &format!("exec hostname in {pod}")).await;
    assert_ne!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_as_server_sent_events_until_stopped() {
    let w = world(json!({})).await;
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let user = chat(&w, &token);
    let other = chat(&w, &w.user("oscar@acme.example", "tenant_user").await);
    let p = plan(&user, &w, &["logs", "deployment/api", "-n", "web", "-f", "--tail=1"]).await;
    let url = p["stream"].as_str().expect("a stream URL").to_string();
    assert!(p.get("confirmation").is_none(), "{p}");
    // Only its planner may read it.
    let r = other.get(&url).await.expect("reach");
    assert_eq!(r.status, 403, "{}", r.body);
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let mut events = kubechat_tests::raw::EventStream::open(&raw, &url, &token).await;
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let (event, data) = events.next().await.expect("an event");
        if event == "line" {
            lines.push(data);
        }
    }
    assert!(lines.iter().all(|l| l.contains("handled request")), "{lines:?}");
    let r = user.delete(&url).await.expect("reach");
    assert_eq!((r.status, r.body["stopped"].as_bool()), (200, Some(true)), "{}", r.body);
    loop {
        let (event, data) = events.next().await.expect("the end");
        if event == "end" {
            assert!(data.contains("stopped"), "{data}");
            break;
        }
    }
    // Read once only.
    let r = user.get(&url).await.expect("reach");
    assert_eq!(r.status, 410, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_is_planned_like_kubectl_and_an_unclear_write_is_a_question() {
    let w = world(json!({})).await;
    let admin = admin_kubectl(&w).await;
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let r = text(&user, &w, "show pods in web").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["kubectl"].as_str(), r.body["source"].as_str()),
        (Some("kubectl get pods -n web"), Some("english"))
    );
    assert!(!blocks(&r.body).is_empty());
    // A name resolved against the live objects.
    let pod = w.pod("web", "api-");
    let r = text(&user, &w, "logs of api last 5 lines").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["kubectl"], format!("kubectl logs {pod} -n web --tail=5"), "{}", r.body);
    // A write from English is planned, never run.
    let r = text(&user, &w, "scale frontend to 3").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["kubectl"].as_str(), r.body["needsConfirmation"].as_bool()),
        (Some("kubectl scale deployments frontend -n web --replicas=3"), Some(true)),
        "{}",
        r.body
    );
    assert_eq!(ok(&admin, &["get", "deploy", "frontend", "-n", "web", "-o", "jsonpath={.spec.replicas}"]).await, "2");
    // An unclear write is a question back.
    let r = text(&user, &w, "scale frontend").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["question"]["text"].as_str().is_some(), "{}", r.body);
    assert!(r.body.get("confirmation").is_none());
    // Two frontend pods: which one?
    let r = text(&user, &w, "delete pod frontend").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let choices = r.body["question"]["choices"].as_array().unwrap_or_else(|| panic!("a question: {}", r.body));
    assert_eq!(choices.len(), 2, "{}", r.body);
    // Nonsense is not understood, with examples.
    let r = text(&user, &w, "make me a sandwich").await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("not_understood")), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_nothing_runs_and_the_audit_keeps_it() {
    let w = world(json!({})).await;
    let admin = admin_kubectl(&w).await;
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let user = chat(&w, &token);
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let path = commands(&w);
    // Malformed JSON, unknown fields, both or neither of argv and text.
    for body in [
        &b"{not json"[..],
        br#"{"argv": "get pods"}"#,
        br#"{"argv": ["get"], "shell": true}"#,
        br#"{"argv": ["get", "pods"], "text": "pods"}"#,
        b"{}",
    ] {
        let r = raw.send_json("POST", &path, &token, body).await;
        assert_eq!(r.status, 400, "{}: {}", String::from_utf8_lossy(body), r.text());
        assert!(r.text().contains("\"message\""), "{}", r.text());
    }
    for (args, status, code, says) in [
        (&["frobnicate"][..], 400, "invalid_command", "unknown command"),
        (&["get", "pods", "--kubeconfig=/etc/k"], 403, "refused", "--kubeconfig"),
        (&["get", "--raw", "/api/v1/secrets"], 403, "refused", "--raw"),
        (&["proxy"], 403, "refused", "proxy"),
        (&["get", "widgets"], 400, "invalid_command", "doesn't have a resource type"),
        (&["get", "pods", "-n", "../kube-system"], 400, "invalid_command", "not a valid name"),
    ] {
        let r = argv(&user, &w, args).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{args:?}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().expect("m").contains(says), "{args:?}: {}", r.body);
    }
    // A huge pasted manifest, and a broken one.
    let huge = "x".repeat(3 << 20);
    let r = user.post(&path, &json!({"argv": ["apply", "-f", "-"], "manifest": huge})).await.expect("reach");
    assert_eq!(r.status, 413, "{}", r.body);
    let r =
        user.post(&path, &json!({"argv": ["apply", "-f", "-"], "manifest": "kind: [unclosed"})).await.expect("reach");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().expect("m").contains("error parsing the manifest"), "{}", r.body);
    // A manifest applies through the same plan and confirmation.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: chat-made\n  namespace: web\ndata:\n  a: b\n";
    let r = user.post(&path, &json!({"argv": ["apply", "-f", "-"], "manifest": cm})).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["dryRun"][0]["summary"], "creates configmap/chat-made");
    assert!(
        w.kubectl(&token, &w.cluster).run(&["get", "cm", "chat-made", "-n", "web"]).await.stderr.contains("NotFound")
    );
    assert_eq!(confirm(&user, &w, &r.body, None).await.status, 200);
    assert_eq!(ok(&admin, &["get", "cm", "chat-made", "-n", "web", "-o", "jsonpath={.data.a}"]).await, "b");
    // A cluster of another tenant is the same 404 as none.
    let r = user.post("/v1/clusters/c0000000000/commands", &json!({"argv": ["get", "pods"]})).await.expect("reach");
    assert_eq!(r.status, 404, "{}", r.body);
    // Every refusal is in the audit chain, with the utterance.
    let api = w.api.clone();
    let tenant = w.tenant.clone();
    eventually("refusals audited", Duration::from_secs(20), || {
        let (api, tenant) = (api.clone(), tenant.clone());
        async move {
            let a =
                api.get(&format!("/v1/tenants/{tenant}/audit?kind=chat&verb=refused&limit=100")).await.expect("reach");
            let items = a.body["items"].as_array().cloned().unwrap_or_default();
            items.iter().any(|e| e["reason"].as_str().is_some_and(|r| r.contains("--kubeconfig")))
                && items.iter().any(|e| e["kubectlCommand"] == "kubectl proxy")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_is_in_the_audit_chain_and_each_executed_command_is_metered_once() {
    let w = world(json!({})).await;
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let usage = async || {
        let u = w.api.get(&format!("/v1/tenants/{}/usage", w.tenant)).await.expect("reach");
        u.body["metered"]["command_executed"].as_f64().unwrap_or(0.0)
    };
    let base = usage().await;
    // A read: metered once, however many requests it makes.
    plan(&user, &w, &["describe", "deployment", "api", "-n", "web"]).await;
    eventually("the read is metered", Duration::from_secs(20), async || usage().await == base + 1.0).await;
    // A plan that is never confirmed is not a command.
    plan(&user, &w, &["scale", "deployment", "api", "-n", "web", "--replicas=2"]).await;
    let p = plan(&user, &w, &["scale", "deployment", "api", "-n", "web", "--replicas=3"]).await;
    assert_eq!(confirm(&user, &w, &p, None).await.status, 200);
    eventually("the write is metered", Duration::from_secs(20), async || usage().await == base + 2.0).await;
    assert_eq!(usage().await, base + 2.0, "exactly once each");
    // Each step of the write, in order, joined by the plan id.
    let id = p["id"].as_str().expect("id");
    let a = w.api.get(&format!("/v1/tenants/{}/audit?kind=chat&requestId={id}", w.tenant)).await.expect("reach");
    let steps: Vec<&str> =
        a.body["items"].as_array().expect("items").iter().filter_map(|e| e["verb"].as_str()).collect();
    assert_eq!(steps, ["utterance", "plan", "confirmation", "outcome"], "{}", a.body);
    let items = a.body["items"].as_array().expect("items");
    assert!(
        items[1]["reason"].as_str().expect("plan").contains("spec.replicas: 1 → 3"),
        "the dry run is on record: {}",
        items[1]
    );
    assert!(items[2]["reason"].as_str().expect("c").contains("ursula@acme.example"), "who confirmed: {}", items[2]);
    assert!(items[3]["reason"].as_str().expect("o").contains("\"succeeded\":true"), "{}", items[3]);
    // The kube path's own records of the write join them by session.
    for rid in sent_ids(
        &confirm(&user, &w, &plan(&user, &w, &["scale", "deployment", "api", "-n", "web", "--replicas=1"]).await, None)
            .await
            .body,
    ) {
        let j = w.api.get(&format!("/v1/tenants/{}/audit/requests/{rid}", w.tenant)).await.expect("reach");
        assert_eq!(j.status, 200, "{}", j.body);
    }
    let v = w.api.get(&format!("/v1/tenants/{}/audit/verify", w.tenant)).await.expect("reach");
    assert_eq!(v.body["intact"], true, "{}", v.body);
}

/// For generated command lines, the plan's classification of each request
/// is what the API server (kube-sim's own parser) read when it arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_generated_commands_the_plan_classifies_each_request_as_the_api_server_reads_it() {
    use rand::{Rng, SeedableRng};
    let w = world(json!({})).await;
    let user = chat(&w, &w.user("ada@acme.example", "tenant_admin").await);
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let resources = [
        "pods",
        "po",
        "deployments",
        "deploy.apps",
        "services",
        "svc",
        "configmaps",
        "cm",
        "replicasets",
        "nodes",
        "namespaces",
        "events",
        "secrets",
        "serviceaccounts",
    ];
    let namespaces = ["web", "default", "kube-system", "no-such-ns"];
    let outputs = ["", "wide", "yaml", "json", "name"];
    let mut checked = 0;
    for _ in 0..48 {
        let r = resources[rng.random_range(0..resources.len())];
        let ns = namespaces[rng.random_range(0..namespaces.len())];
        let mut a: Vec<String> = vec![if rng.random_bool(0.8) { "get" } else { "describe" }.into(), r.into()];
        if rng.random_bool(0.3) {
            a.push("-A".into());
        } else {
            a.extend(["-n".into(), ns.into()]);
        }
        if a[0] == "get" {
            let o = outputs[rng.random_range(0..outputs.len())];
            if !o.is_empty() {
                a.extend(["-o".into(), o.into()]);
            }
        }
        if rng.random_bool(0.3) {
            a.push("--selector=app in (api,frontend)".into());
        }
        let args: Vec<&str> = a.iter().map(String::as_str).collect();
        let r = argv(&user, &w, &args).await;
        let plan = if r.status == 200 { r.body } else { r.body["plan"].clone() };
        assert!(plan["requests"].is_array(), "{args:?}: {r:?}", r = plan);
        sent_as_classified(&w, &plan);
        checked += plan["requests"].as_array().map_or(0, Vec::len);
    }
    assert!(checked >= 48, "{checked} requests checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubechat_chat_shows_each_plan_and_runs_a_write_only_when_confirmed() {
    let w = world(json!({})).await;
    let admin = admin_kubectl(&w).await;
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let pod = w.pod("web", "frontend-");
    let script = format!(
        "show pods in web\n\
         kubectl scale deployment api -n web --replicas=2\n\
         n\n\
         kubectl scale deployment api -n web --replicas=2\n\
         y\n\
         kubectl delete pod {pod} -n web\n\
         frontend\n\
         delete pod frontend\n\
         \n\
         kubectl get pods --kubeconfig=/etc/kubernetes/admin.conf\n\
         exit\n"
    );
    let mut out = Vec::new();
    kubechat_control_plane::chat_cli::session(&user, &w.cluster, "web", script.as_bytes(), &mut out)
        .await
        .expect("session");
    let out = String::from_utf8(out).expect("utf-8");
    println!("{out}");
    for want in [
        "$ kubectl get pods -n web   (read)",
        "NAME ",
        "READY",
        "$ kubectl scale deployment api -n web --replicas=2   (write)",
        "dry run: deployment/api: replicas 1 → 2",
        "    spec.replicas: 1 → 2",
        "cancelled; nothing was run",
        "done: deployment/api: replicas 1 → 2",
        &format!("This is destructive. Type {pod} to run it"),
        "? ",
        "  1) ",
        "error: --kubeconfig is not available in chat",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert_eq!(out.matches("cancelled; nothing was run").count(), 2, "{out}");
    assert_eq!(ok(&admin, &["get", "deploy", "api", "-n", "web", "-o", "jsonpath={.spec.replicas}"]).await, "2");
    assert!(
        ok(&admin, &["get", "pods", "-n", "web", "-o", "name"]).await.contains(&pod),
        "the mistyped name ran nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_cordoned_and_drained_and_rollouts_undone_only_on_confirmation() {
    let w = world(json!({})).await;
    let admin = admin_kubectl(&w).await;
    let ada = chat(&w, &w.user("ada@acme.example", "tenant_admin").await);
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let unschedulable =
        async || ok(&admin, &["get", "node", "sim-node-1", "-o", "jsonpath={.spec.unschedulable}"]).await;

    // A tenant user cannot change nodes (cluster-scoped), as with kubectl.
    let r = argv(&user, &w, &["cordon", "sim-node-1"]).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("forbidden")), "{}", r.body);

    let p = plan(&ada, &w, &["cordon", "sim-node-1"]).await;
    assert_eq!(p["dryRun"][0]["changes"], json!(["spec.unschedulable: (none) → true"]), "{p}");
    assert_eq!(unschedulable().await, "");
    assert_eq!(confirm(&ada, &w, &p, None).await.status, 200);
    assert_eq!(unschedulable().await, "true");
    let p = plan(&ada, &w, &["cordon", "sim-node-1"]).await;
    assert_eq!(p["needsConfirmation"], false, "already cordoned: nothing to do: {p}");
    let p = plan(&ada, &w, &["uncordon", "sim-node-1"]).await;
    assert_eq!(confirm(&ada, &w, &p, None).await.status, 200);
    assert_eq!(unschedulable().await, "");

    // Drain: kubectl's refusals first, then evictions planned, dry-run, confirmed.
    let r = argv(&ada, &w, &["drain", "sim-node-1"]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"),
        "{}",
        r.body
    );
    let on_node = async || {
        ok(
            &admin,
            &[
                "get",
                "pods",
                "-A",
                "--field-selector",
                "spec.nodeName=sim-node-1",
                "-o",
                "jsonpath={range .items[*]}{.metadata.ownerReferences[0].kind} {.metadata.name}{\"\\n\"}{end}",
            ],
        )
        .await
    };
    let before: Vec<String> =
        on_node().await.lines().filter(|l| !l.starts_with("DaemonSet")).map(str::to_string).collect();
    assert!(!before.is_empty(), "pods to evict on sim-node-1");
    let p = plan(&ada, &w, &["drain", "sim-node-1", "--ignore-daemonsets", "--delete-emptydir-data"]).await;
    assert_eq!(p["risk"], "destructive");
    assert_eq!(p["typeToConfirm"], "sim-node-1");
    let evictions = p["dryRun"]
        .as_array()
        .expect("dry")
        .iter()
        .filter(|d| d["summary"].as_str().is_some_and(|s| s.starts_with("evicts pod")))
        .count();
    assert_eq!(evictions, before.len(), "{p}");
    assert!(p["notes"][0].as_str().is_some_and(|n| n.contains("(DaemonSet)")), "{p}");
    assert_eq!(
        on_node().await.lines().filter(|l| !l.starts_with("DaemonSet")).count(),
        before.len(),
        "nothing evicted by the dry run"
    );
    let c = confirm(&ada, &w, &p, Some("sim-node-1")).await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["succeeded"], true, "{}", c.body);
    assert_eq!(unschedulable().await, "true");
    eventually("sim-node-1 holds only DaemonSet pods", Duration::from_secs(30), async || {
        on_node().await.lines().all(|l| l.starts_with("DaemonSet"))
    })
    .await;

    // rollout undo: back to the previous template.
    ok(&admin, &["set", "image", "deployment/api", "-n", "web", "main=registry.example/api:2.0"]).await;
    eventually("revision 2", Duration::from_secs(30), async || {
        ok(&admin, &["rollout", "history", "deployment/api", "-n", "web"]).await.contains("\n2 ")
    })
    .await;
    let p = plan(&ada, &w, &["rollout", "undo", "deployment/api", "-n", "web"]).await;
    assert_eq!(p["risk"], "destructive");
    assert_eq!(
        p["dryRun"][0]["changes"],
        json!(["spec.template.spec.containers[main].image: registry.example/api:2.0 → registry.example/api:1.0"]),
        "{p}"
    );
    let image = async || {
        ok(&admin, &["get", "deploy", "api", "-n", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"])
            .await
    };
    assert_eq!(image().await, "registry.example/api:2.0");
    assert_eq!(confirm(&ada, &w, &p, Some("api")).await.status, 200);
    assert_eq!(image().await, "registry.example/api:1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whats_wrong_is_answered_from_status_events_and_logs() {
    let w = world(json!({})).await;
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    // The api pod crash-loops.
    let pod = w.pod("web", "api-");
    let pods = w.sim.sim.cluster.resource_by_plural("pods").expect("pods");
    let mut p = w.sim.sim.cluster.store.get(&pods, "web", &pod).expect("pod");
    p["status"]["containerStatuses"][0]["ready"] = json!(false);
    p["status"]["containerStatuses"][0]["restartCount"] = json!(7);
    p["status"]["containerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}});
    p["status"]["containerStatuses"][0]["lastState"] = json!({"terminated": {"reason": "Error", "exitCode": 1}});
    w.sim.sim.cluster.store.update(&pods, "web", &pod, p).expect("update");
    let r = text(&user, &w, "what's wrong with api").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["kubectl"].as_str().expect("k").starts_with("kubectl diagnose "), "{}", r.body);
    let f = &blocks(&r.body)[0];
    assert_eq!(f["type"], "findings", "{f}");
    let items = f["items"].as_array().expect("items");
    let crash = items
        .iter()
        .find(|i| i["message"].as_str().is_some_and(|m| m.contains("CrashLoopBackOff")))
        .unwrap_or_else(|| panic!("{f}"));
    assert_eq!(crash["severity"], "error");
    assert_eq!(crash["object"], format!("pod/{pod}"));
    assert!(
        crash["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().any(|l| l.as_str().is_some_and(|l| l.contains("handled request")))),
        "recent logs as evidence: {crash}"
    );
    assert!(
        items.iter().any(|i| i["message"].as_str().is_some_and(|m| m.contains("restarted 7 times (last: Error)"))),
        "{f}"
    );
}

/// A stand-in OpenAI-compatible endpoint: answers each request with the
/// next proposal, and keeps what it was sent.
async fn fake_llm(proposals: Vec<Value>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let queue = std::sync::Arc::new(std::sync::Mutex::new(proposals));
    let (s2, q2) = (seen.clone(), queue.clone());
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(body): axum::Json<Value>| {
            let (seen, queue) = (s2.clone(), q2.clone());
            async move {
                seen.lock().expect("lock").push(body);
                let next = queue.lock().expect("lock").remove(0);
                axum::Json(json!({"choices": [{"message": {"role": "assistant", "content": next.to_string()}}]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_only_proposes_and_its_proposal_passes_every_check() {
    let w = kubechat_tests::platform::world_full(json!({}), |_| {}, |c| c.chat_llm_allow_loopback = true).await;
    let admin = admin_kubectl(&w).await;
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let (url, seen) = fake_llm(vec![
        json!({"argv": ["get", "deployments", "-n", "web"]}),
        json!({"argv": ["delete", "pods", "-n", "web", "-l", "app=frontend"]}),
        json!({"argv": ["get", "--raw", "/api/v1/namespaces/web/secrets"]}),
        json!({"argv": ["exec", "api", "-n", "web", "--", "sh"]}),
    ])
    .await;
    // Off by default: not understood, nothing sent.
    let r = text(&user, &w, "xyzzy plugh one").await;
    assert_eq!(r.body["error"]["code"], "not_understood", "{}", r.body);
    assert!(seen.lock().expect("lock").is_empty());
    let r = w
        .api
        .put(
            &format!("/v1/tenants/{}/settings", w.tenant),
            &json!({"chat": {"llm": {"url": url, "model": "fake", "apiKey": "sk-test-key"}}}),
        )
        .await
        .expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["chat"]["llm"]["apiKey"], "***", "the key is never shown back");
    // A read proposal runs like any read.
    let r = text(&user, &w, "xyzzy plugh two, my password is hunter2").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["source"].as_str(), r.body["kubectl"].as_str()),
        (Some("llm"), Some("kubectl get deployments -n web"))
    );
    let sent = seen.lock().expect("lock")[0].to_string();
    assert!(!sent.contains("hunter2") && sent.contains("[redacted]"), "redacted before sending: {sent}");
    // A write proposal is only a plan; nothing runs.
    let r = text(&user, &w, "xyzzy plugh three").await;
    assert_eq!((r.status, r.body["needsConfirmation"].as_bool()), (200, Some(true)), "{}", r.body);
    assert_eq!(ok(&admin, &["get", "pods", "-n", "web", "-l", "app=frontend", "-o", "name"]).await.lines().count(), 2);
    // Refused forms stay refused; exec never comes from a model.
    let r = text(&user, &w, "xyzzy plugh four").await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("refused")), "{}", r.body);
    let r = text(&user, &w, "xyzzy plugh five").await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_streams_changes_as_they_happen() {
    let w = world(json!({})).await;
    let admin = admin_kubectl(&w).await;
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let user = chat(&w, &token);
    let p = plan(&user, &w, &["get", "configmaps", "-n", "web", "-w"]).await;
    let url = p["stream"].as_str().expect("stream").to_string();
    let raw = kubechat_tests::raw::RawClient::new(&w.cp_url, &w.cp_ca);
    let mut events = kubechat_tests::raw::EventStream::open(&raw, &url, &token).await;
    ok(&admin, &["create", "configmap", "watched", "-n", "web", "--from-literal=a=b"]).await;
    loop {
        let (event, data) = events.next().await.expect("an event");
        if event == "added" && data.contains("\"name\":\"watched\"") {
            break;
        }
    }
    ok(&admin, &["delete", "configmap", "watched", "-n", "web"]).await;
    loop {
        let (event, data) = events.next().await.expect("an event");
        if event == "deleted" {
            assert!(data.contains("\"name\":\"watched\""), "{data}");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_says_so_when_the_cluster_has_no_metrics_api() {
    let w = world(json!({})).await;
    w.sim.sim.set_metrics(false);
    let user = chat(&w, &w.user("ursula@acme.example", "tenant_user").await);
    let r = argv(&user, &w, &["top", "pods", "-n", "web"]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().expect("m").contains("Metrics API not available"), "{}", r.body);
    // Everything else still works without it.
    assert_eq!(argv(&user, &w, &["get", "pods", "-n", "web"]).await.status, 200);
}
