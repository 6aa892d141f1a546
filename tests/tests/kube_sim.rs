//! kube-sim on its own, driven by the real kubectl: the behaviours the
//! tunnel tests do not reach (CRDs, paging, impersonation refusals, tables).

use std::collections::HashMap;
use std::time::Duration;

use kube_sim::kubeconfig::{Credentials, KubeconfigSpec};
use kube_sim::{SimConfig, TestSim, UserInfo};
use kubechat_tests::kubectl::Kubectl;

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
