//! The agent chart, end to end: the `helm install` command a cluster
//! registration answers with is run in `sh` (a stand-in `helm` records
//! what it was given) and that is installed by the real Helm library
//! (helm-sdkpy, Helm v4) against kube-sim; the objects it created are read
//! back with the real kubectl and checked (least-privilege RBAC, security
//! context, proxy settings, probes, secret references); then every pod of
//! the installed Deployment is run from its spec as a kubelet would (its
//! args and env exactly, its Secret and ConfigMap volumes and a
//! service-account token mounted at their paths, read-only root, its user,
//! no capabilities) and must enroll with the control plane and serve
//! kubectl. A value renamed in the chart but not in the binary fails here.

use std::path::Path;
use std::time::Duration;

use kubechat_tests::helm::{self, InstallCommand, TestCluster};
use kubechat_tests::platform::{Platform, platform};
use kubechat_tests::pod::RunningPod;
use kubechat_tests::wait::eventually;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

/// A platform whose registration names the chart in this checkout.
async fn saas() -> Platform {
    let chart = helm::repo().join("charts/kubechat-agent");
    platform(json!({}), |_| {}, |c| c.agent_chart = chart.to_str().expect("path").to_string()).await
}

/// The registration's `helm install` snippet, run in `sh`; its values must
/// be the ones the registration lists too.
fn install_command(p: &Platform) -> InstallCommand {
    let snippet = p.registration["helmInstall"].as_str().expect("helmInstall");
    let cmd = helm::run_install_snippet(snippet);
    assert_eq!(cmd.values, p.registration["helmValues"], "the command sets exactly helmValues");
    assert_eq!(cmd.chart, p.registration["helmChart"]["chart"]);
    assert_eq!((cmd.release.as_str(), cmd.namespace.as_str()), ("kubechat-agent", "kubechat"));
    assert!(cmd.create_namespace);
    assert_eq!(cmd.values["controlPlaneUrl"], p.cp_url.as_str());
    assert_eq!(cmd.values["controlPlaneCa"], p.cp_ca.as_str(), "a private CA travels with the command");
    cmd
}

/// Runs the command (with `values` in place of its `--set`s) against `c`.
fn helm_install(c: &TestCluster, cmd: &InstallCommand, values: &Value) -> Value {
    c.install(&cmd.namespace, &cmd.release, Path::new(&cmd.chart), values)
        .unwrap_or_else(|e| panic!("helm install failed: {e}"))
}

/// Everything the release created, read back with kubectl: (namespaced,
/// cluster-scoped) objects carrying the release's instance label
/// (PodMonitors too where their CRD is installed).
async fn release_objects(c: &TestCluster, ns: &str, release: &str, podmonitors: bool) -> (Vec<Value>, Vec<Value>) {
    let sel = format!("app.kubernetes.io/instance={release}");
    let mut kinds =
        "serviceaccounts,secrets,configmaps,deployments,poddisruptionbudgets,roles,rolebindings,networkpolicies"
            .to_string();
    if podmonitors {
        kinds += ",podmonitors";
    }
    let list = |out: String| -> Vec<Value> {
        serde_json::from_str::<Value>(&out).expect("kubectl json")["items"].as_array().cloned().unwrap_or_default()
    };
    let namespaced = list(c.admin.ok(&["-n", ns, "get", &kinds, "-l", &sel, "-o", "json"]).await);
    let cluster = list(c.admin.ok(&["get", "clusterroles,clusterrolebindings", "-l", &sel, "-o", "json"]).await);
    (namespaced, cluster)
}

fn named<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", kinds(objs)))
}

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or("")))
        .collect();
    k.sort();
    k
}

/// The agent's RBAC, exactly: impersonation of users, groups and the
/// request-id extra cluster-wide; get/update of its own state Secret by
/// name; nothing else, no wildcards. `extra` are the optional role bindings.
fn check_rbac(ns_objs: &[Value], cluster_objs: &[Value], sa: &str, ns: &str, state: &str) {
    for o in ns_objs.iter().chain(cluster_objs) {
        for rule in o["rules"].as_array().into_iter().flatten() {
            for field in ["verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"] {
                for v in rule[field].as_array().into_iter().flatten() {
                    assert!(
                        !v.as_str().unwrap_or("").contains('*'),
                        "a wildcard in {field} of {}: {rule}",
                        o["metadata"]["name"]
                    );
                }
            }
        }
    }
    let imp = named(cluster_objs, "ClusterRole", &format!("{sa}-impersonate"));
    assert_eq!(
        imp["rules"],
        json!([
            {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/kubechat.io/request-id"], "verbs": ["impersonate"]},
        ])
    );
    let role = named(ns_objs, "Role", &format!("{sa}-state"));
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [state], "verbs": ["get", "update"]}])
    );
    let subject = json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]);
    let crb = named(cluster_objs, "ClusterRoleBinding", &format!("{sa}-impersonate"));
    assert_eq!(crb["subjects"], subject);
    assert_eq!(crb["roleRef"]["name"], format!("{sa}-impersonate"));
    let rb = named(ns_objs, "RoleBinding", &format!("{sa}-state"));
    assert_eq!(rb["subjects"], subject);
    assert_eq!(
        (rb["roleRef"]["kind"].as_str(), rb["roleRef"]["name"].as_str()),
        (Some("Role"), Some(format!("{sa}-state").as_str()))
    );
    let roles: Vec<&Value> = ns_objs
        .iter()
        .chain(cluster_objs)
        .filter(|o| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")))
        .collect();
    assert_eq!(
        roles.len(),
        2,
        "the chart grants nothing beyond its two roles: {:?}",
        kinds(&roles.into_iter().cloned().collect::<Vec<_>>())
    );
}

/// The hardened pod every install gets.
fn check_pod_security(d: &Value) {
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "admin"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "admin"}));
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
}

fn env_of(d: &Value) -> Vec<(String, Value)> {
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .map(|a| a.iter().map(|e| (e["name"].as_str().unwrap_or("").to_string(), e.clone())).collect())
        .unwrap_or_default()
}

fn secret_value(secret: &Value, key: &str) -> String {
    use base64::Engine;
    let b64 = secret["data"][key].as_str().unwrap_or_else(|| panic!("no {key} in {}", secret["metadata"]["name"]));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("utf-8")
}

/// Runs every pod of the Deployment from its spec and waits until each is
/// ready by its own readiness probe (so: enrolled, tunnel up).
async fn run_pods(c: &TestCluster, d: &Value) -> Vec<RunningPod> {
    let pods = c.pods_of(d).await;
    assert_eq!(pods.len(), d["spec"]["replicas"].as_u64().expect("replicas") as usize, "the Deployment's pods");
    let bin = Path::new(env!("CARGO_BIN_EXE_test-agent"));
    let mut running = Vec::new();
    for p in &pods {
        running.push(RunningPod::start(&c.sim, &c.admin, p, bin).await);
    }
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    for pod in &mut running {
        pod.wait_ready(container, LONG).await;
    }
    running
}

async fn wait_connected(p: &Platform) {
    let (api, path) = (p.api.clone(), format!("/v1/tenants/{}/clusters/{}", p.tenant, p.cluster));
    eventually("the directory lists the cluster as connected", LONG, || {
        let (api, path) = (api.clone(), path.clone());
        async move { api.get(&path).await.expect("reach").body["connected"] == json!(true) }
    })
    .await;
}

/// Nothing secret in the containers' logs (not the bootstrap token, not the
/// service-account token, not a private key), nor in this process's (the
/// control plane, the relay).
fn check_logs_clean(p: &Platform, pods: &[RunningPod], token: &str) {
    let literals: Vec<&str> = p.secrets.iter().map(String::as_str).chain([token]).collect();
    kubechat_tests::logscan::assert_no_secrets(&literals);
    for p in pods {
        let log = p.log();
        assert!(!log.contains(token), "{}: the bootstrap token was logged", p.name);
        assert!(!log.contains("kubesim-sa."), "{}: the service-account token was logged", p.name);
        assert!(!log.contains("PRIVATE KEY"), "{}: a private key was logged", p.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registration_command_installs_a_least_privilege_agent_that_enrolls() {
    kubechat_tests::logscan::install();
    let p = saas().await;
    let c = TestCluster::empty().await;
    let cmd = install_command(&p);
    let token = cmd.values["bootstrapToken"].as_str().expect("token").to_string();
    let release = helm_install(&c, &cmd, &cmd.values);
    assert_eq!(release["info"]["status"], "deployed");
    let notes = release["info"]["notes"].as_str().expect("NOTES.txt");
    assert!(notes.contains("rollout status deploy/kubechat-agent") && notes.contains("tunnel up"), "{notes}");

    let (ns, sa, state) = ("kubechat", "kubechat-agent", "kubechat-agent-state");
    let (objs, cluster_objs) = release_objects(&c, ns, &cmd.release, false).await;
    assert_eq!(
        kinds(&objs),
        [
            "ConfigMap/kubechat-agent-ca",
            "Deployment/kubechat-agent",
            "PodDisruptionBudget/kubechat-agent",
            "Role/kubechat-agent-state",
            "RoleBinding/kubechat-agent-state",
            "Secret/kubechat-agent-bootstrap",
            "Secret/kubechat-agent-state",
            "ServiceAccount/kubechat-agent",
        ],
        "no NetworkPolicy, PodMonitor or role bindings unless asked for"
    );
    assert_eq!(
        kinds(&cluster_objs),
        ["ClusterRole/kubechat-agent-impersonate", "ClusterRoleBinding/kubechat-agent-impersonate"]
    );
    check_rbac(&objs, &cluster_objs, sa, ns, state);

    let d = named(&objs, "Deployment", "kubechat-agent");
    check_pod_security(d);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(pod["serviceAccountName"], sa);
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(anti["labelSelector"]["matchLabels"], d["spec"]["selector"]["matchLabels"]);
    let pdb = named(&objs, "PodDisruptionBudget", "kubechat-agent");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"]);
    let env = env_of(d);
    assert!(env.iter().all(|(k, _)| k != "HTTPS_PROXY" && k != "NO_PROXY"), "no proxy unless configured: {env:?}");
    // Secret references: the token and the CA reach the pod by reference.
    let volumes = &pod["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "kubechat-agent-bootstrap");
    assert_eq!(secret_value(named(&objs, "Secret", "kubechat-agent-bootstrap"), "token"), token);
    assert_eq!(volumes[1]["configMap"]["name"], "kubechat-agent-ca");
    assert_eq!(named(&objs, "ConfigMap", "kubechat-agent-ca")["data"]["control-plane-ca.crt"], p.cp_ca.as_str());
    assert!(named(&objs, "Secret", "kubechat-agent-state").get("data").is_none(), "the state Secret starts empty");

    // Both replicas come up from the pod spec; one enrollment serves both.
    let pods = run_pods(&c, d).await;
    wait_connected(&p).await;
    let state_secret: Value =
        serde_json::from_str(&c.admin.ok(&["-n", ns, "get", "secret", state, "-o", "json"]).await).expect("json");
    assert!(secret_value(&state_secret, "tls.crt").contains("BEGIN CERTIFICATE"));
    for pod in &pods {
        assert!(pod.log().contains("tunnel up"), "NOTES.txt tells users to grep for \"tunnel up\":\n{}", pod.log());
        assert!(pod.args.iter().any(|a| a.starts_with("--admin-listen=127.0.0.1:")));
    }

    // kubectl through the control plane reaches the cluster as the user,
    // who has no rights there until the customer binds the role groups:
    // the agent has none of its own to lend.
    let user = p.user("dev@acme.example", "tenant_user").await;
    let err = p.kubectl(&user, &p.cluster).fails(&["get", "pods", "-n", ns]).await;
    assert!(err.contains("forbidden") && err.contains(r#"cannot list resource "pods""#), "{err}");
    assert!(!err.contains("system:serviceaccount"), "the request ran as the user, not the agent: {err}");
    check_logs_clean(&p, &pods, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customised_values_reach_the_objects_and_the_agent() {
    kubechat_tests::logscan::install();
    let p = saas().await;
    let c = TestCluster::empty().await;
    let cmd = install_command(&p);
    let token = cmd.values["bootstrapToken"].as_str().expect("token").to_string();
    // The token from a Secret of the customer's own instead of a value.
    c.admin.ok(&["create", "namespace", &cmd.namespace]).await;
    c.admin
        .ok(&[
            "-n",
            &cmd.namespace,
            "create",
            "secret",
            "generic",
            "my-bootstrap",
            &format!("--from-literal=kcb={token}"),
        ])
        .await;
    // The Prometheus Operator's CRD, for the PodMonitor.
    let crd = c.dir.path().join("podmonitor-crd.json");
    std::fs::write(
        &crd,
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "podmonitors.monitoring.coreos.com"},
            "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": {"plural": "podmonitors", "singular": "podmonitor", "kind": "PodMonitor"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        })
        .to_string(),
    )
    .expect("crd");
    c.admin.ok(&["apply", "-f", crd.to_str().expect("path")]).await;

    // The cluster's only way out is an egress proxy (a real one); the
    // control plane is reached through it. QUIC (UDP) is never proxied.
    // It wants credentials, so its URL (with them) comes from a Secret.
    let proxy = kubechat_tests::tinyproxy::Tinyproxy::start_with("BasicAuth agent pr0xy-s3cret").await;
    let proxy_url = format!("http://agent:pr0xy-s3cret@127.0.0.1:{}", proxy.port);
    c.admin
        .ok(&[
            "-n",
            &cmd.namespace,
            "create",
            "secret",
            "generic",
            "egress-proxy",
            &format!("--from-literal=url={proxy_url}"),
        ])
        .await;
    let mut values = cmd.values.clone();
    values.as_object_mut().expect("object").remove("bootstrapToken");
    let custom = json!({
        "replicaCount": 1,
        "existingBootstrapSecret": {"name": "my-bootstrap", "key": "kcb"},
        "proxy": {
            "existingSecret": {"name": "egress-proxy", "key": "url"},
            "noProxy": "kubernetes.default.svc,.cluster.local",
            "caBundle": p.cp_ca,
        },
        "roleBindings": {"enabled": true, "viewer": "view", "user": "edit", "admin": "cluster-admin"},
        "podDisruptionBudget": {"enabled": false},
        "networkPolicy": {
            "enabled": true,
            "proxyCidrs": ["10.0.0.3/32"],
            "relayCidrs": ["127.0.0.1/32"],
            "apiServerCidrs": ["10.96.0.1/32"],
        },
        "podMonitor": {"enabled": true},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kubechat", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "serviceAccount": {"annotations": {"example.com/owner": "platform-team"}},
        "readyGraceSeconds": 5,
    });
    for (k, v) in custom.as_object().expect("object") {
        values[k] = v.clone();
    }
    helm_install(&c, &cmd, &values);

    let (ns, sa, state) = ("kubechat", "kubechat-agent", "kubechat-agent-state");
    let (objs, cluster_objs) = release_objects(&c, ns, &cmd.release, true).await;
    assert!(objs.iter().all(|o| o["kind"] != "PodDisruptionBudget"), "the PDB was turned off");
    assert!(
        objs.iter().all(|o| o["metadata"]["name"] != "kubechat-agent-bootstrap"),
        "no token Secret of the chart's own"
    );
    // The role bindings map KubeChat's role groups to the chosen ClusterRoles.
    for (role, cluster_role) in [("tenant-viewer", "view"), ("tenant-user", "edit"), ("tenant-admin", "cluster-admin")]
    {
        let b = named(&cluster_objs, "ClusterRoleBinding", &format!("kubechat-agent-{role}"));
        assert_eq!(b["roleRef"]["name"], cluster_role);
        assert_eq!(
            b["subjects"],
            json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": format!("kubechat:role:{}", role.replace('-', "_"))}])
        );
    }
    // The agent's own grants are unchanged by them.
    let own: Vec<Value> =
        cluster_objs.iter().filter(|o| o["metadata"]["name"] == "kubechat-agent-impersonate").cloned().collect();
    check_rbac(&objs, &own, sa, ns, state);
    assert_eq!(named(&objs, "ServiceAccount", sa)["metadata"]["annotations"]["example.com/owner"], "platform-team");

    let d = named(&objs, "Deployment", "kubechat-agent");
    check_pod_security(d);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["containers"][0]["resources"]["limits"]["memory"], "128Mi");
    let env = env_of(d);
    let value = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, e)| e["value"].clone()).unwrap_or_default();
    let https_proxy = env.iter().find(|(n, _)| n == "HTTPS_PROXY").map(|(_, e)| e.clone()).expect("HTTPS_PROXY");
    assert_eq!(
        https_proxy["valueFrom"]["secretKeyRef"],
        json!({"name": "egress-proxy", "key": "url"}),
        "never a plain value"
    );
    assert_eq!(value("NO_PROXY"), "kubernetes.default.svc,.cluster.local");
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "my-bootstrap");
    let args = pod["containers"][0]["args"].as_array().expect("args");
    assert!(args.contains(&json!("--bootstrap-token-file=/var/run/kubechat/bootstrap/kcb")), "{args:?}");
    assert!(args.contains(&json!("--proxy-ca=/etc/kubechat/ca/proxy-ca.crt")), "{args:?}");
    assert!(args.contains(&json!("--ready-grace-secs=5")), "{args:?}");
    assert_eq!(named(&objs, "ConfigMap", "kubechat-agent-ca")["data"]["proxy-ca.crt"], p.cp_ca.as_str());
    let np = named(&objs, "NetworkPolicy", "kubechat-agent");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let egress = np["spec"]["egress"].to_string();
    for allowed in ["10.0.0.3/32", "127.0.0.1/32", "10.96.0.1/32", "53"] {
        assert!(egress.contains(allowed), "{allowed} missing from {egress}");
    }
    let pm = named(&objs, "PodMonitor", "kubechat-agent");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "admin");

    // The agent runs from this spec (the proxy CA file is read at start)
    // and enrolls through the proxy, with the proxy's credentials.
    let pods = run_pods(&c, d).await;
    wait_connected(&p).await;
    assert!(pods[0].env.contains(&("HTTPS_PROXY".into(), proxy_url.clone())));
    let cp_target = p.cp_url.trim_start_matches("https://");
    let log = proxy.log();
    assert!(log.contains(&format!("CONNECT {cp_target}")), "enrollment did not go through the proxy:\n{log}");
    assert!(!pods[0].log().contains("pr0xy-s3cret"), "the proxy password was logged");
    // With the role groups bound, the tenant's users can work.
    let user = p.user("dev@acme.example", "tenant_user").await;
    let k = p.kubectl(&user, &p.cluster);
    let out = k.ok(&["get", "pods", "-n", ns, "-o", "name"]).await;
    assert!(out.contains(&format!("pod/{}", pods[0].name)), "{out}");
    k.ok(&["-n", ns, "create", "configmap", "from-chat", "--from-literal=a=1"]).await;
    let viewer = p.user("viewer@acme.example", "tenant_viewer").await;
    p.kubectl(&viewer, &p.cluster).ok(&["-n", ns, "get", "configmap", "from-chat"]).await;
    check_logs_clean(&p, &pods, &token);
}

/// Unknown values and wrong types are refused by the chart's schema before
/// anything reaches the cluster, with a message naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_with_a_message_naming_the_key() {
    let c = TestCluster::empty().await;
    let chart = helm::repo().join("charts/kubechat-agent");
    let file = c.dir.path().join("bad.yaml");
    let good = json!({"controlPlaneUrl": "https://kubechat.example", "bootstrapToken": "kcb_x"});
    let cases = [
        (json!({"bootstrapTokn": "kcb_typo"}), "additional properties 'bootstrapTokn' not allowed"),
        (json!({"replicaCount": "two"}), "at '/replicaCount': got string, want integer"),
        (
            json!({"proxy": {"httpsProxy": "http://p:3128", "noProxi": "x"}}),
            "at '/proxy': additional properties 'noProxi'",
        ),
        (json!({"roleBindings": {"enabled": "yes"}}), "at '/roleBindings/enabled': got string, want boolean"),
        (json!({"controlPlaneUrl": "http://plain.example"}), "at '/controlPlaneUrl'"),
    ];
    for (bad, key) in cases {
        let mut values = good.clone();
        for (k, v) in bad.as_object().expect("object") {
            values[k] = v.clone();
        }
        std::fs::write(&file, values.to_string()).expect("values");
        let err = helm::install(&c.kubeconfig, "kubechat", "kubechat-agent", &chart, &file)
            .expect_err(&format!("{bad} was accepted"));
        assert!(err.contains("schema") && err.contains(key), "{bad}: the error does not name {key}: {err}");
    }
    let out = c.admin.ok(&["get", "deployments,secrets", "-A", "-o", "name"]).await;
    assert!(!out.contains("kubechat-agent"), "a refused install created objects: {out}");
}
