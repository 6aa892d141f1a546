//! kube-sim on its own, driven by the real kubectl: the behaviours the
//! tunnel tests do not reach (CRDs, paging, impersonation refusals, tables,
//! dry runs and preconditions, protobuf bodies, whoami, explain, rollouts,
//! drain and disruption budgets, top).

use std::collections::HashMap;
use std::time::Duration;

use kube_sim::kubeconfig::{Credentials, KubeconfigSpec};
use kube_sim::{SimConfig, TestSim, UserInfo};
use kubechat_tests::kubectl::Kubectl;
use kubechat_tests::raw::{RawClient, RawResponse};
use kubechat_tests::wait;
use serde_json::Value;

async fn sim() -> TestSim {
    let mut tokens = HashMap::new();
    tokens.insert("admin".to_string(), UserInfo { name: "admin".into(), groups: vec!["system:masters".into()] });
    tokens.insert("nobody".to_string(), UserInfo { name: "nobody".into(), groups: vec![] });
    let mut c = SimConfig::with_tokens(tokens);
    c.log_interval = Duration::from_millis(100);
    TestSim::start(c, true).await
}

fn kubectl(s: &TestSim, token: &str, as_user: Option<&str>) -> Kubectl {
    Kubectl::new(
        &KubeconfigSpec {
            name: "sim".into(),
            server: s.url(),
            ca_pem: Some(s.ca_pem.clone()),
            credentials: Credentials::Token(token.into()),
            impersonate_user: as_user.map(str::to_string),
            impersonate_groups: Vec::new(),
            namespace: None,
        }
        .to_yaml(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_add_resources_kubectl_can_use() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    let crd = k.dir().join("crd.yaml");
    std::fs::write(
        &crd,
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#,
    )
    .expect("write");
    k.ok(&["apply", "-f", crd.to_str().expect("path")]).await;
    let w = k.dir().join("w.yaml");
    std::fs::write(
        &w,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: default\nspec:\n  size: 3\n",
    )
    .expect("write");
    assert!(k.ok(&["apply", "-f", w.to_str().expect("path")]).await.contains("widget.example.com/w1 created"));
    assert!(k.ok(&["get", "wd", "-n", "default"]).await.contains("w1"));
    assert_eq!(k.ok(&["get", "widget", "w1", "-n", "default", "-o", "jsonpath={.spec.size}"]).await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_limit_and_continue_returns_everything() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    let all = k.ok(&["get", "pods", "-A", "-o", "name"]).await;
    let paged = k.ok(&["get", "pods", "-A", "-o", "name", "--chunk-size=2"]).await;
    assert!(all.lines().count() >= 6, "{all}");
    assert_eq!(all, paged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_needs_the_impersonate_verb() {
    let s = sim().await;
    let k = kubectl(&s, "nobody", Some("admin"));
    let err = k.fails(&["get", "--raw", "/api/v1/namespaces/default/pods"]).await;
    assert!(
        err.contains(r#"users "admin" is forbidden: User "nobody" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );
    let err = kubectl(&s, "wrong-token", None).fails(&["get", "pods"]).await;
    assert!(err.contains("Unauthorized") || err.contains("must be logged in"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_have_kubectls_columns_and_scaling_reconciles_pods() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    let out = k.ok(&["get", "deploy", "-n", "web"]).await;
    let header: Vec<&str> = out.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(out.contains("frontend") && out.contains("2/2"), "{out}");
    k.ok(&["scale", "deploy/frontend", "-n", "web", "--replicas=3"]).await;
    let pods = k.ok(&["get", "pods", "-n", "web", "-l", "app=frontend", "-o", "name"]).await;
    assert_eq!(pods.lines().count(), 3, "{pods}");
    let svc = k.ok(&["get", "svc", "-n", "web"]).await;
    assert!(svc.lines().next().is_some_and(|h| h.contains("CLUSTER-IP") && h.contains("PORT(S)")), "{svc}");
    let nodes = k.ok(&["get", "nodes"]).await;
    assert!(nodes.contains("sim-node-1") && nodes.contains("Ready"), "{nodes}");
}

/// `kubectl create token` (a protobuf TokenRequest) issues a token that
/// authenticates as the service account and gets only what RBAC grants it;
/// an absent service account gets no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_issue_service_account_tokens() {
    let s = sim().await;
    let admin = kubectl(&s, "admin", None);
    let token = admin.ok(&["-n", "kubechat", "create", "token", "kubechat-agent", "--duration", "1h"]).await;
    let token = token.trim();
    assert!(!token.is_empty());
    let sa = kubectl(&s, token, None);
    let err = sa.fails(&["get", "pods", "-A"]).await;
    assert!(
        err.contains(r#"User "system:serviceaccount:kubechat:kubechat-agent" cannot list resource "pods""#),
        "{err}"
    );
    let err = admin.fails(&["-n", "kubechat", "create", "token", "no-such-account"]).await;
    assert!(err.contains(r#"serviceaccounts "no-such-account" not found"#), "{err}");
}

/// A server-side dry-run update (`kubectl replace --dry-run=server`) is
/// checked but not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_update_changes_nothing() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    k.ok(&["-n", "default", "create", "configmap", "settings", "--from-literal=mode=old"]).await;
    let obj = k.ok(&["-n", "default", "get", "configmap", "settings", "-o", "json"]).await;
    let changed = obj.replace("\"old\"", "\"new\"");
    let file = k.dir().join("cm.json");
    std::fs::write(&file, changed).expect("write");
    let out = k.ok(&["replace", "--dry-run=server", "-f", file.to_str().expect("path")]).await;
    assert!(out.contains("server dry run"), "{out}");
    let after = k.ok(&["-n", "default", "get", "configmap", "settings", "-o", "jsonpath={.data.mode}"]).await;
    assert_eq!(after, "old");
    k.ok(&["replace", "-f", file.to_str().expect("path")]).await;
    let after = k.ok(&["-n", "default", "get", "configmap", "settings", "-o", "jsonpath={.data.mode}"]).await;
    assert_eq!(after, "new");
}

/// A raw HTTPS request to kube-sim as the admin, with an optional body.
async fn raw(s: &TestSim, method: &str, target: &str, content_type: &str, body: &str) -> RawResponse {
    let client = RawClient::new(&s.url(), &s.ca_pem);
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer admin\r\nAccept: application/json\r\n",
        s.addr
    );
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    client.send_bytes(req.as_bytes()).await
}

fn objects(s: &TestSim, plural: &str, ns: Option<&str>) -> Vec<Value> {
    let r = s.sim.cluster.resource_by_plural(plural).expect("built in");
    s.sim.cluster.store.list(&r, ns).0
}

fn names(objs: &[Value]) -> Vec<String> {
    objs.iter().map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect()
}

/// Server-side dry runs of every kind of write answer what the write would
/// (defaults, a uid, no resourceVersion) and change nothing: no object, no
/// new resource version (so no watch event), no event, no pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_answer_like_the_write_and_change_nothing() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    let rv = s.sim.cluster.store.resource_version();
    let events = objects(&s, "events", None).len();
    let pods = names(&objects(&s, "pods", None));

    let out = k
        .ok(&["create", "deployment", "web", "--image=nginx:1.27", "-n", "web", "--dry-run=server", "-o", "json"])
        .await;
    let d: Value = serde_json::from_str(&out).expect("json");
    assert!(d["metadata"]["uid"].is_string() && d["metadata"].get("resourceVersion").is_none(), "{d}");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate", "the defaults are applied: {d}");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent", "{d}");
    assert!(k.fails(&["get", "deployment", "web", "-n", "web"]).await.contains("NotFound"));

    let out = k.ok(&["scale", "deployment", "api", "-n", "web", "--replicas=4", "--dry-run=server"]).await;
    assert!(out.contains("deployment.apps/api scaled (server dry run)"), "{out}");
    let out = k.ok(&["delete", "deployment", "frontend", "-n", "web", "--dry-run=server"]).await;
    assert!(out.contains("(server dry run)"), "{out}");
    let out = k.ok(&["delete", "pods", "-n", "web", "-l", "app=api", "--dry-run=server"]).await;
    assert!(out.contains("deleted from web namespace (server dry run)"), "{out}");
    for (kind, patch) in [
        ("strategic", r#"{"spec":{"replicas":7}}"#),
        ("merge", r#"{"spec":{"replicas":7}}"#),
        ("json", r#"[{"op":"replace","path":"/spec/replicas","value":7}]"#),
    ] {
        let out = k
            .ok(&[
                "patch",
                "deployment",
                "api",
                "-n",
                "web",
                "--type",
                kind,
                "-p",
                patch,
                "--dry-run=server",
                "-o",
                "jsonpath={.spec.replicas}",
            ])
            .await;
        assert_eq!(out, "7", "the {kind} patch is answered as applied");
    }
    let manifest = k.dir().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: planned\n  namespace: web\ndata:\n  a: b\n",
    )
    .expect("write");
    let path = manifest.to_str().expect("path");
    let out = k.ok(&["apply", "--server-side", "--dry-run=server", "-f", path]).await;
    assert!(out.contains("serverside-applied (server dry run)"), "{out}");
    let out = k.ok(&["apply", "--dry-run=server", "-f", path]).await;
    assert!(out.contains("created (server dry run)"), "{out}");
    let out = k.ok(&["drain", "sim-node-1", "--ignore-daemonsets", "--delete-emptydir-data", "--dry-run=server"]).await;
    assert!(out.contains("evicting pod") && out.contains("node/sim-node-1 drained (server dry run)"), "{out}");

    assert_eq!(s.sim.cluster.store.resource_version(), rv, "a dry run took a resource version");
    assert_eq!(objects(&s, "events", None).len(), events, "a dry run recorded an event");
    assert_eq!(names(&objects(&s, "pods", None)), pods, "a dry run created or deleted pods");
    assert!(!k.ok(&["get", "nodes"]).await.contains("SchedulingDisabled"), "a dry-run drain cordoned the node");
    assert!(k.fails(&["get", "configmap", "planned", "-n", "web"]).await.contains("NotFound"));
}

/// `dryRun` may only be `All`, in the query or in DeleteOptions; anything
/// else is the API server's 422 naming the options kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_values_other_than_all_are_refused() {
    let s = sim().await;
    let r = raw(
        &s,
        "POST",
        "/api/v1/namespaces/web/configmaps?dryRun=bogus",
        "application/json",
        r#"{"metadata":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        r#"CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"bogus"}: supported values: "All""#
    );
    assert_eq!(r.json()["reason"], "Invalid");
    let r = raw(
        &s,
        "PATCH",
        "/apis/apps/v1/namespaces/web/deployments/api?dryRun=true",
        "application/merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!((r.status, r.json()["details"]["kind"].as_str()), (422, Some("PatchOptions")), "{}", r.text());
    let r = raw(
        &s,
        "DELETE",
        "/apis/apps/v1/namespaces/web/deployments/api",
        "application/json",
        r#"{"dryRun":["Server"]}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.json()["message"].as_str().is_some_and(|m| m.starts_with("DeleteOptions.meta.k8s.io")), "{}", r.text());
    assert!(raw(&s, "GET", "/apis/apps/v1/namespaces/web/deployments/api", "", "").await.status == 200);
    // With a body, the delete handler reads only the body: the query's dryRun is not a dry run.
    let r =
        raw(&s, "DELETE", "/api/v1/namespaces/web/configmaps/kube-root-ca.crt?dryRun=All", "application/json", "{}")
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(raw(&s, "GET", "/api/v1/namespaces/web/configmaps/kube-root-ca.crt", "", "").await.status, 404);
}

/// A stale `metadata.resourceVersion` in an update or a patch is a 409
/// (dry run or not); DeleteOptions preconditions on uid and resourceVersion
/// are checked, and the object stays when they do not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_versions_and_failed_preconditions_conflict() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    k.ok(&["-n", "web", "create", "configmap", "settings", "--from-literal=mode=one"]).await;
    let old = k.ok(&["-n", "web", "get", "configmap", "settings", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&old).expect("json");
    let (uid, stale) = (
        v["metadata"]["uid"].as_str().expect("uid").to_string(),
        v["metadata"]["resourceVersion"].as_str().expect("rv").to_string(),
    );
    k.ok(&["-n", "web", "patch", "configmap", "settings", "-p", r#"{"data":{"mode":"two"}}"#]).await;
    let file = k.dir().join("stale.json");
    std::fs::write(&file, old.replace("\"one\"", "\"three\"")).expect("write");
    for extra in [&[][..], &["--dry-run=server"][..]] {
        let mut args = vec!["replace", "-f", file.to_str().expect("path")];
        args.extend(extra);
        let err = k.fails(&args).await;
        assert!(err.contains("Error from server (Conflict)") && err.contains("the object has been modified"), "{err}");
    }
    let stale_patch = format!(r#"{{"metadata":{{"resourceVersion":"{stale}"}},"data":{{"mode":"four"}}}}"#);
    for target in
        ["/api/v1/namespaces/web/configmaps/settings", "/api/v1/namespaces/web/configmaps/settings?dryRun=All"]
    {
        let r = raw(&s, "PATCH", target, "application/merge-patch+json", &stale_patch).await;
        assert_eq!((r.status, r.json()["reason"].as_str()), (409, Some("Conflict")), "{}", r.text());
    }
    let json_patch = format!(r#"[{{"op":"replace","path":"/metadata/resourceVersion","value":"{stale}"}}]"#);
    let r = raw(&s, "PATCH", "/api/v1/namespaces/web/configmaps/settings", "application/json-patch+json", &json_patch)
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let wrong_uid = r#"{"metadata":{"name":"settings","uid":"0000"},"data":{"mode":"five"}}"#;
    let r = raw(&s, "PUT", "/api/v1/namespaces/web/configmaps/settings", "application/json", wrong_uid).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("Precondition failed: UID in precondition: 0000"), "{}", r.text());
    assert_eq!(k.ok(&["-n", "web", "get", "configmap", "settings", "-o", "jsonpath={.data.mode}"]).await, "two");

    let target = "/api/v1/namespaces/web/configmaps/settings";
    let r = raw(&s, "DELETE", target, "application/json", r#"{"preconditions":{"uid":"not-the-uid"}}"#).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.starts_with(r#"Operation cannot be fulfilled on ConfigMap "settings": the UID in the precondition (not-the-uid) does not match the UID in record"#), "{msg}");
    let body = format!(r#"{{"preconditions":{{"uid":"{uid}","resourceVersion":"{stale}"}}}}"#);
    let r = raw(&s, "DELETE", target, "application/json", &body).await;
    assert!(r.status == 409 && r.text().contains("the ResourceVersion in the precondition"), "{}", r.text());
    let current =
        k.ok(&["-n", "web", "get", "configmap", "settings", "-o", "jsonpath={.metadata.resourceVersion}"]).await;
    let body = format!(r#"{{"preconditions":{{"uid":"{uid}","resourceVersion":"{current}"}},"dryRun":["All"]}}"#);
    assert_eq!(raw(&s, "DELETE", target, "application/json", &body).await.status, 200);
    assert_eq!(raw(&s, "GET", target, "", "").await.status, 200, "a dry-run delete deleted");
    let body = format!(r#"{{"preconditions":{{"uid":"{uid}","resourceVersion":"{current}"}}}}"#);
    let r = raw(&s, "DELETE", target, "application/json", &body).await;
    assert_eq!((r.status, r.json()["kind"].as_str()), (200, Some("Status")), "{}", r.text());
    assert_eq!(raw(&s, "GET", target, "", "").await.status, 404);
}

/// `kubectl create deployment` sends a protobuf Deployment; kube-sim reads
/// it, defaults it like the API server and runs its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_deployment_sends_protobuf_and_gets_running_pods() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    let out =
        k.ok(&["create", "deployment", "shop", "--image=nginx:1.27", "--replicas=2", "--port=80", "-n", "web"]).await;
    assert!(out.contains("deployment.apps/shop created"), "{out}");
    let sent =
        s.sim.seen().into_iter().find(|r| r.method == "POST" && r.target.contains("/deployments")).expect("the create");
    let ct = sent.headers.iter().find(|(h, _)| h == "content-type").map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(ct, "application/vnd.kubernetes.protobuf", "kubectl sent another encoding");
    let d: Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "shop", "-n", "web", "-o", "json"]).await).expect("json");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!((c["image"].as_str(), c["ports"][0]["containerPort"].as_i64()), (Some("nginx:1.27"), Some(80)), "{d}");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst", "{d}");
    let pods = k.ok(&["get", "pods", "-n", "web", "-l", "app=shop", "--no-headers"]).await;
    assert_eq!(pods.lines().filter(|l| l.contains("Running")).count(), 2, "{pods}");
}

/// `kubectl auth whoami` (a SelfSubjectReview) prints who kube-sim sees:
/// the impersonated user, groups and extra.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_whoami_prints_the_impersonated_user() {
    let s = sim().await;
    let out = kubectl(&s, "admin", None).ok(&["auth", "whoami"]).await;
    assert!(out.lines().any(|l| l.starts_with("Username") && l.ends_with(" admin")), "{out}");
    let spec = KubeconfigSpec {
        name: "sim".into(),
        server: s.url(),
        ca_pem: Some(s.ca_pem.clone()),
        credentials: Credentials::Token("admin".into()),
        impersonate_user: Some("alice@example.com".into()),
        impersonate_groups: vec!["devs".into()],
        namespace: None,
    };
    let yaml = spec.to_yaml().replace("contexts:", "    as-user-extra:\n      team:\n      - blue\ncontexts:");
    let out = Kubectl::new(&yaml).ok(&["auth", "whoami"]).await;
    assert!(out.lines().any(|l| l.starts_with("Username") && l.ends_with(" alice@example.com")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("Groups") && l.ends_with(" [devs system:authenticated]")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("Extra: team") && l.ends_with(" [blue]")), "{out}");
    let out = kubectl(&s, "admin", Some("bob")).ok(&["auth", "whoami", "--as-uid=1234"]).await;
    assert!(out.lines().any(|l| l.starts_with("UID") && l.ends_with(" 1234")), "{out}");
    let err = kubectl(&s, "nobody", Some("admin")).fails(&["auth", "whoami"]).await;
    // kubectl words a 403 on the review itself.
    assert!(
        err.contains("the selfsubjectreviews API is not enabled in the cluster or you do not have permission"),
        "{err}"
    );
}

/// `kubectl explain` reads the OpenAPI v3 documents and prints the real
/// descriptions; client-side apply still works with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_prints_the_api_descriptions() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    let out = k.ok(&["explain", "pods"]).await;
    assert!(out.contains("KIND:       Pod") && out.contains("Pod is a collection of containers"), "{out}");
    assert!(out.contains("spec\t<PodSpec>"), "{out}");
    let out = k.ok(&["explain", "deployment.spec.replicas"]).await;
    assert!(out.contains("GROUP:      apps") && out.contains("FIELD: replicas <integer>"), "{out}");
    assert!(out.contains("Number of desired pods."), "{out}");
    let out = k.ok(&["explain", "pods.spec.containers"]).await;
    assert!(
        out.contains("FIELD: containers <[]Container>") && out.contains("List of containers belonging to the pod"),
        "{out}"
    );
    let out = k.ok(&["explain", "nodes.spec.unschedulable"]).await;
    assert!(out.contains("Unschedulable controls node schedulability of new pods"), "{out}");
    assert!(k.fails(&["explain", "deployment.spec.nonsense"]).await.contains("field \"nonsense\" does not exist"));
    // Client-side apply computes its patch from these schemas now.
    let file = k.dir().join("d.yaml");
    let manifest = |image: &str, env: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: applied\n  namespace: web\nspec:\n  selector:\n    matchLabels: {{app: applied}}\n  template:\n    metadata:\n      labels: {{app: applied}}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n        env: [{env}]\n"
        )
    };
    std::fs::write(&file, manifest("x:1", "{name: A, value: '1'}, {name: B, value: '2'}")).expect("write");
    assert!(k.ok(&["apply", "-f", file.to_str().expect("path")]).await.contains("created"));
    std::fs::write(&file, manifest("x:2", "{name: A, value: '1'}")).expect("write");
    assert!(k.ok(&["apply", "-f", file.to_str().expect("path")]).await.contains("configured"));
    let env = k
        .ok(&[
            "get",
            "deploy",
            "applied",
            "-n",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[*].name}",
        ])
        .await;
    assert_eq!(env, "x:2 A", "the second apply merged the containers by name and dropped B");
}

const NAME_CHARS: &str = "bcdfghjklmnpqrstvwxz2456789";

fn looks_generated(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.chars().all(|c| NAME_CHARS.contains(c))
}

/// Deployments own one ReplicaSet per template, named `<deployment>-<hash>`
/// with revisions; the real `kubectl rollout` restart, status, history and
/// undo work, and scaling changes the pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_keep_revisions_and_undo_restores_the_template() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    let ns = ["-n", "web"];
    let image = || async {
        k.ok(&["-n", "web", "get", "deploy", "api", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]).await
    };
    let pod = k.ok(&["get", "pods", "-n", "web", "-l", "app=api", "-o", "name"]).await;
    let parts: Vec<&str> = pod.trim().trim_start_matches("pod/").split('-').collect();
    assert!(
        parts.len() == 3 && parts[0] == "api" && looks_generated(parts[1], 6, 10) && looks_generated(parts[2], 5, 5),
        "{pod}"
    );
    let rs: Value =
        serde_json::from_str(&k.ok(&["get", "rs", "-n", "web", "-l", "app=api", "-o", "json"]).await).expect("json");
    let rs = &rs["items"][0];
    assert_eq!(rs["metadata"]["name"], format!("api-{}", parts[1]));
    assert_eq!(rs["metadata"]["labels"]["pod-template-hash"], parts[1]);
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["controller"], true);

    let out = k.ok(&[ns[0], ns[1], "rollout", "restart", "deployment/api"]).await;
    assert!(out.contains("deployment.apps/api restarted"), "{out}");
    let out = k.ok(&[ns[0], ns[1], "rollout", "status", "deployment/api", "--timeout=60s"]).await;
    assert!(out.contains("deployment \"api\" successfully rolled out"), "{out}");
    k.ok(&[ns[0], ns[1], "set", "image", "deployment/api", "main=registry.example/api:2.0"]).await;
    k.ok(&[ns[0], ns[1], "rollout", "status", "deployment/api", "--timeout=60s"]).await;
    let history = k.ok(&[ns[0], ns[1], "rollout", "history", "deployment/api"]).await;
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["1", "2", "3"], "{history}");
    let two = k.ok(&[ns[0], ns[1], "rollout", "history", "deployment/api", "--revision=2"]).await;
    assert!(
        two.contains("with revision #2")
            && two.contains("kubectl.kubernetes.io/restartedAt")
            && two.contains("registry.example/api:1.0"),
        "{two}"
    );
    assert_eq!(image().await, "registry.example/api:2.0");

    let out = k.ok(&[ns[0], ns[1], "rollout", "undo", "deployment/api"]).await;
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(image().await, "registry.example/api:1.0", "undo restored revision 2's template");
    let restarted =
        k.ok(&[ns[0], ns[1], "get", "deploy", "api", "-o", "jsonpath={.spec.template.metadata.annotations}"]).await;
    assert!(restarted.contains("restartedAt"), "{restarted}");
    let history = k.ok(&[ns[0], ns[1], "rollout", "history", "deployment/api"]).await;
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["1", "3", "4"], "revision 2 became 4: {history}");
    k.ok(&[ns[0], ns[1], "rollout", "undo", "deployment/api", "--to-revision=1"]).await;
    let restarted =
        k.ok(&[ns[0], ns[1], "get", "deploy", "api", "-o", "jsonpath={.spec.template.metadata.annotations}"]).await;
    assert!(!restarted.contains("restartedAt"), "revision 1 had no restart annotation: {restarted}");
    let err = k.fails(&[ns[0], ns[1], "rollout", "undo", "deployment/api", "--to-revision=42"]).await;
    assert!(err.contains("unable to find specified revision 42"), "{err}");

    let d: Value =
        serde_json::from_str(&k.ok(&[ns[0], ns[1], "get", "deploy", "api", "-o", "json"]).await).expect("json");
    assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"], "{d}");
    assert!(d["metadata"]["generation"].as_i64().is_some_and(|g| g >= 5), "spec changes bump the generation: {d}");
    let reasons: Vec<&str> =
        d["status"]["conditions"].as_array().expect("conditions").iter().filter_map(|c| c["reason"].as_str()).collect();
    assert_eq!(reasons, ["MinimumReplicasAvailable", "NewReplicaSetAvailable"], "{d}");
    let sets: Value =
        serde_json::from_str(&k.ok(&[ns[0], ns[1], "get", "rs", "-l", "app=api", "-o", "json"]).await).expect("json");
    let replicas: Vec<i64> =
        sets["items"].as_array().expect("items").iter().map(|r| r["spec"]["replicas"].as_i64().unwrap_or(-1)).collect();
    assert_eq!((replicas.len(), replicas.iter().sum::<i64>()), (3, 1), "old ReplicaSets are kept at 0: {replicas:?}");

    k.ok(&["scale", "deployment", "api", "-n", "web", "--replicas=3"]).await;
    let pods = k.ok(&["get", "pods", "-n", "web", "-l", "app=api", "-o", "name"]).await;
    assert_eq!(pods.lines().count(), 3, "{pods}");
    let ready = k
        .ok(&[ns[0], ns[1], "get", "deploy", "api", "-o", "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}"])
        .await;
    assert_eq!(ready, "3/3");
    // Deleting the deployment takes its ReplicaSets and pods with it.
    k.ok(&[ns[0], ns[1], "delete", "deployment", "api"]).await;
    assert!(k.ok(&[ns[0], ns[1], "get", "rs,pods", "-l", "app=api", "-o", "name"]).await.trim().is_empty());
}

fn pods_on(s: &TestSim, node: &str) -> Vec<String> {
    let pods = objects(s, "pods", None);
    pods.iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The real `kubectl drain`: DaemonSet pods and emptyDir data need their
/// flags, a PodDisruptionBudget refuses an eviction with 429, and a drain
/// cordons the node and evicts its pods, which come back on the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cordons_evicts_and_honours_disruption_budgets() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    assert!(
        pods_on(&s, "sim-node-1").len() > 1 && pods_on(&s, "sim-node-2").len() > 1,
        "pods are spread over the nodes"
    );
    let on_one = k.ok(&["get", "pods", "-A", "--field-selector", "spec.nodeName=sim-node-1", "-o", "name"]).await;
    assert_eq!(on_one.lines().count(), pods_on(&s, "sim-node-1").len(), "{on_one}");
    let err = k.fails(&["get", "pods", "-A", "--field-selector", "spec.color=blue"]).await;
    assert!(err.contains("field label not supported: spec.color"), "{err}");

    let err = k.fails(&["drain", "sim-node-1", "--delete-emptydir-data", "--timeout=30s"]).await;
    assert!(
        err.contains(
            "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/kube-proxy-"
        ),
        "{err}"
    );
    k.ok(&["uncordon", "sim-node-1"]).await;
    let frontend_here = pods_on(&s, "sim-node-1").iter().any(|p| p.starts_with("frontend-"));
    if frontend_here {
        let err = k.fails(&["drain", "sim-node-1", "--ignore-daemonsets", "--timeout=30s"]).await;
        assert!(
            err.contains("cannot delete Pods with local storage (use --delete-emptydir-data to override)"),
            "{err}"
        );
        k.ok(&["uncordon", "sim-node-1"]).await;
    }

    // A budget that allows no disruption: the eviction is refused.
    let pdb = k.dir().join("pdb.yaml");
    std::fs::write(&pdb, "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: api\n  namespace: web\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels: {app: api}\n").expect("write");
    k.ok(&["apply", "-f", pdb.to_str().expect("path")]).await;
    let allowed = k
        .ok(&["get", "pdb", "api", "-n", "web", "-o", "jsonpath={.status.disruptionsAllowed}/{.status.currentHealthy}"])
        .await;
    assert_eq!(allowed, "0/1");
    let api_pod =
        k.ok(&["get", "pods", "-n", "web", "-l", "app=api", "-o", "jsonpath={.items[0].metadata.name}"]).await;
    let eviction = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{api_pod}","namespace":"web"}}}}"#
    );
    let target = format!("/api/v1/namespaces/web/pods/{api_pod}/eviction");
    let r = raw(&s, "POST", &target, "application/json", &eviction).await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (429, Some("TooManyRequests")), "{}", r.text());
    assert_eq!(r.json()["message"], "Cannot evict pod as it would violate the pod's disruption budget.");
    assert_eq!(
        r.json()["details"]["causes"][0]["message"],
        "The disruption budget api needs 1 healthy pods and has 1 currently"
    );
    // With a second replica one disruption is allowed.
    k.ok(&["scale", "deployment", "api", "-n", "web", "--replicas=2"]).await;
    assert_eq!(k.ok(&["get", "pdb", "api", "-n", "web", "-o", "jsonpath={.status.disruptionsAllowed}"]).await, "1");

    let before: Vec<String> = pods_on(&s, "sim-node-1");
    let out = k.ok(&["drain", "sim-node-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"]).await;
    assert!(out.contains("node/sim-node-1 drained"), "{out}");
    let left = pods_on(&s, "sim-node-1");
    assert!(left.len() == 1 && left[0].starts_with("kube-proxy-"), "only the daemon pod stays: {left:?}");
    for p in before.iter().filter(|p| !p.starts_with("kube-proxy-")) {
        assert!(out.contains(&format!("pod/{p} evicted")), "{p} was not evicted: {out}");
    }
    let nodes = k.ok(&["get", "nodes"]).await;
    assert!(nodes.lines().any(|l| l.starts_with("sim-node-1") && l.contains("Ready,SchedulingDisabled")), "{nodes}");
    let deploys = k
        .ok(&[
            "get",
            "deploy",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.availableReplicas}/{.spec.replicas} {end}",
        ])
        .await;
    for d in deploys.split_whitespace() {
        let (have, want) = d.split_once('=').map(|(_, r)| r.split_once('/').expect("a/b")).expect("name=a/b");
        assert_eq!(have, want, "the controller recreated the evicted pods: {deploys}");
    }
    // New pods never go to the cordoned node; with every node cordoned they wait.
    k.ok(&["cordon", "sim-node-2"]).await;
    k.ok(&["scale", "deployment", "frontend", "-n", "web", "--replicas=3"]).await;
    let pending = k.ok(&["get", "pods", "-n", "web", "--field-selector", "status.phase=Pending", "-o", "name"]).await;
    assert_eq!(pending.lines().count(), 1, "{pending}");
    k.ok(&["uncordon", "sim-node-1"]).await;
    wait::eventually("the pending pod is scheduled on the uncordoned node", Duration::from_secs(20), || async {
        k.ok(&["get", "pods", "-n", "web", "--field-selector", "status.phase=Pending", "-o", "name"])
            .await
            .trim()
            .is_empty()
    })
    .await;
    assert!(pods_on(&s, "sim-node-1").iter().any(|p| p.starts_with("frontend-")));
}

/// `kubectl top` reads metrics.k8s.io (stable figures per pod and node);
/// without the metrics API it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_reads_the_metrics_api_and_fails_without_it() {
    let s = sim().await;
    let k = kubectl(&s, "admin", None);
    let out = k.ok(&["top", "pods", "-n", "web"]).await;
    let header: Vec<&str> = out.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{out}");
    let api = out.lines().find(|l| l.starts_with("api-")).expect("the api pod");
    let cols: Vec<&str> = api.split_whitespace().collect();
    assert!(cols[1].ends_with('m') && cols[2].ends_with("Mi"), "{api}");
    assert_eq!(k.ok(&["top", "pods", "-n", "web"]).await, out, "the figures are stable");
    let all = k.ok(&["top", "pods", "-A"]).await;
    assert!(all.lines().any(|l| l.starts_with("kube-system") && l.contains("coredns-")), "{all}");
    let nodes = k.ok(&["top", "nodes"]).await;
    assert!(nodes.lines().next().is_some_and(|h| h.contains("CPU(%)") && h.contains("MEMORY(%)")), "{nodes}");
    assert!(nodes.lines().any(|l| l.starts_with("sim-node-1") && l.contains('%')), "{nodes}");

    s.sim.set_metrics(false);
    let fresh = kubectl(&s, "admin", None);
    let err = fresh.fails(&["top", "pods", "-n", "web"]).await;
    assert!(err.contains("Metrics API not available"), "{err}");
    assert!(!fresh.ok(&["api-versions"]).await.contains("metrics.k8s.io"));
    s.sim.set_metrics(true);
    assert!(kubectl(&s, "admin", None).ok(&["top", "nodes"]).await.contains("sim-node-2"));
}
