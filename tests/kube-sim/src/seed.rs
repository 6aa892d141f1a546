//! The data kube-sim starts with: system RBAC (always) and, unless started
//! empty, namespaces, nodes, deployments with running pods that log,
//! services, events, and bindings for the KubeChat role groups.

use serde_json::{Value, json};

use crate::cluster::Cluster;

/// The service account the agent runs as (it may impersonate).
pub const AGENT_USER: &str = "system:serviceaccount:kubechat:kubechat-agent";

fn create(c: &Cluster, plural: &str, ns: &str, obj: Value) {
    let r = c.resource_by_plural(plural).expect("seeded resources are built in");
    if let Err(e) = c.create(&r, ns, obj) {
        tracing::warn!(error = %e.message, "seeding failed");
    }
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"metadata": {"name": name}, "rules": rules})
}

fn binding(name: &str, role_kind: &str, role: &str, subjects: Value) -> Value {
    json!({"metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}, "subjects": subjects})
}

/// System roles every cluster has: cluster-admin, admin, edit, view,
/// discovery for everyone authenticated, and impersonation for the agent.
pub fn system(c: &Cluster) {
    let read = json!(["get", "list", "watch"]);
    let write = json!(["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]);
    let workloads = json!([
        "pods",
        "pods/log",
        "services",
        "configmaps",
        "events",
        "serviceaccounts",
        "replicasets",
        "deployments",
        "deployments/scale",
        "replicasets/scale",
        "daemonsets",
        "statefulsets",
        "namespaces",
        "nodes"
    ]);
    for (name, rules) in [
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        (
            "view",
            json!([
                {"apiGroups": ["", "apps"], "resources": workloads, "verbs": read},
                // metrics-server's system:aggregated-metrics-reader, aggregated to view, edit and admin.
                {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": read},
            ]),
        ),
        (
            "edit",
            json!([
                {"apiGroups": ["", "apps"], "resources": ["pods", "services", "configmaps", "secrets", "serviceaccounts", "replicasets", "deployments", "deployments/scale", "events"], "verbs": write},
                {"apiGroups": [""], "resources": ["pods/log", "namespaces", "nodes"], "verbs": read},
                {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["get", "create"]},
                {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": read},
            ]),
        ),
        (
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version", "/openapi", "/openapi/*", "/healthz", "/readyz", "/livez"], "verbs": ["get"]}]),
        ),
        (
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ]),
        ),
        (
            "kubechat:agent-impersonator",
            json!([
                {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/kubechat.io/request-id"], "verbs": ["impersonate"]},
            ]),
        ),
    ] {
        create(c, "clusterroles", "", cluster_role(name, rules));
    }
    let everyone = json!([{"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"}]);
    create(
        c,
        "clusterrolebindings",
        "",
        binding("system:discovery", "ClusterRole", "system:discovery", everyone.clone()),
    );
    create(c, "clusterrolebindings", "", binding("system:basic-user", "ClusterRole", "system:basic-user", everyone));
    create(
        c,
        "clusterrolebindings",
        "",
        binding(
            "kubechat:agent-impersonator",
            "ClusterRole",
            "kubechat:agent-impersonator",
            json!([{"kind": "ServiceAccount", "name": "kubechat-agent", "namespace": "kubechat"}]),
        ),
    );
}

/// The demo data set.
pub fn demo(c: &Cluster) {
    for ns in ["default", "kube-system", "kube-public", "web", "kubechat"] {
        create(c, "namespaces", "", json!({"metadata": {"name": ns}, "status": {"phase": "Active"}}));
        create(c, "serviceaccounts", ns, json!({"metadata": {"name": "default"}}));
        create(c, "configmaps", ns, json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "simulated"}}));
    }
    create(c, "serviceaccounts", "kubechat", json!({"metadata": {"name": "kubechat-agent"}}));
    for (i, node) in ["sim-node-1", "sim-node-2"].iter().enumerate() {
        let resources = json!({"cpu": "4", "memory": "16374604Ki", "pods": "110", "ephemeral-storage": "102350Mi"});
        create(
            c,
            "nodes",
            "",
            json!({
                "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
                "spec": {"podCIDR": format!("10.244.{i}.0/24"), "podCIDRs": [format!("10.244.{i}.0/24")]},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                           "addresses": [{"type": "InternalIP", "address": format!("10.0.0.{}", i + 10)}, {"type": "Hostname", "address": node}],
                           "capacity": resources, "allocatable": resources,
                           "nodeInfo": {"kubeletVersion": "v1.37.1", "osImage": "kube-sim", "containerRuntimeVersion": "containerd://2.1.0",
                                        "kernelVersion": "6.12.0", "operatingSystem": "linux", "architecture": "amd64"}}
            }),
        );
    }
    // A node agent on every node (kubectl drain needs --ignore-daemonsets).
    create(
        c,
        "daemonsets",
        "kube-system",
        json!({
            "metadata": {"name": "kube-proxy", "labels": {"k8s-app": "kube-proxy"}},
            "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                     "template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}},
                                  "spec": {"containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.37.1"}]}}},
        }),
    );
    for (ns, name, replicas) in
        [("web", "frontend", 2), ("web", "api", 1), ("kube-system", "coredns", 2), ("default", "hello", 1)]
    {
        let mut d = json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": format!("registry.example/{name}:1.0"), "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}},
        });
        if name == "frontend" {
            // A cache on an emptyDir (kubectl drain needs --delete-emptydir-data).
            d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "cache", "emptyDir": {}}]);
            d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
                json!([{"name": "cache", "mountPath": "/cache"}]);
        }
        create(c, "deployments", ns, d);
    }

    create(
        c,
        "secrets",
        "web",
        json!({"metadata": {"name": "db-password"}, "type": "Opaque", "data": {"password": "c2VjcmV0"}}),
    );
    for (ns, name, port) in
        [("web", "frontend", 80), ("web", "api", 8080), ("default", "kubernetes", 443), ("kube-system", "kube-dns", 53)]
    {
        create(
            c,
            "services",
            ns,
            json!({"metadata": {"name": name}, "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.0.{}", port % 250 + 1), "selector": {"app": name}, "ports": [{"port": port, "protocol": "TCP", "targetPort": 8080}]}}),
        );
    }
    for (name, role) in [
        ("kubechat-tenant-admins", "cluster-admin"),
        ("kubechat-tenant-users", "edit"),
        ("kubechat-tenant-viewers", "view"),
    ] {
        let group = match role {
            "cluster-admin" => "kubechat:role:tenant_admin",
            "edit" => "kubechat:role:tenant_user",
            _ => "kubechat:role:tenant_viewer",
        };
        create(
            c,
            "clusterrolebindings",
            "",
            binding(
                name,
                "ClusterRole",
                role,
                json!([{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}]),
            ),
        );
    }
}
