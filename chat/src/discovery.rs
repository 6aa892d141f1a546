//! The resource types a cluster serves, as its discovery documents list
//! them, and how a word a person types names one of them.

use serde::{Deserialize, Serialize};

/// One resource type of the cluster's discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResource {
    /// API group ("" for the core group).
    pub group: String,
    /// The preferred version of the group.
    pub version: String,
    /// Plural resource name, as in the URL (`deployments`).
    pub plural: String,
    /// Singular name (`deployment`).
    pub singular: String,
    /// Kind (`Deployment`).
    pub kind: String,
    /// Short names (`deploy`).
    pub short_names: Vec<String>,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Verbs the API server supports on it.
    pub verbs: Vec<String>,
}

impl ApiResource {
    /// `plural` or `plural.group`, as kubectl prints and accepts it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The URL prefix of its group and version: `/api/v1` or `/apis/<g>/<v>`.
    pub fn api_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The collection path, in `namespace` when the resource is namespaced.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/namespaces/{ns}/{}", self.api_prefix(), self.plural),
            _ => format!("{}/{}", self.api_prefix(), self.plural),
        }
    }

    /// The path of object `name`.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    /// Whether `word` names this resource, the way kubectl matches a
    /// resource argument: plural, singular, short name or kind, any case,
    /// optionally followed by `.group` (or `.version.group`).
    pub fn is_named_by(&self, word: &str) -> bool {
        let word = word.to_ascii_lowercase();
        let (name, group) = match word.split_once('.') {
            Some((n, g)) => (n.to_string(), Some(g.to_string())),
            None => (word.clone(), None),
        };
        if let Some(g) = &group {
            let version_group = format!("{}.{}", self.version, self.group);
            if *g != self.group && *g != version_group {
                return false;
            }
        }
        name == self.plural
            || name == self.singular
            || name == self.kind.to_ascii_lowercase()
            || self.short_names.contains(&name)
    }
}

/// The resource types a cluster serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Every resource type (subresources excluded).
    pub resources: Vec<ApiResource>,
}

impl Discovery {
    /// The resource `word` names, kubectl's way. Core and well-known groups
    /// win over CRDs with the same short name, as kubectl's priority
    /// ordering does; `None` if nothing matches.
    pub fn find(&self, word: &str) -> Option<&ApiResource> {
        let mut matches: Vec<&ApiResource> = self.resources.iter().filter(|r| r.is_named_by(word)).collect();
        matches.sort_by_key(|r| group_priority(&r.group));
        matches.first().copied()
    }

    /// Every resource `word` names (more than one: the word is ambiguous
    /// across groups).
    pub fn all_named(&self, word: &str) -> Vec<&ApiResource> {
        self.resources.iter().filter(|r| r.is_named_by(word)).collect()
    }

    /// The resource of `group` and `plural`.
    pub fn by_plural(&self, group: &str, plural: &str) -> Option<&ApiResource> {
        self.resources.iter().find(|r| r.group == group && r.plural == plural)
    }

    /// Reads discovery documents: the core `/api/v1` resource list and any
    /// number of `/apis/<g>/<v>` resource lists (`APIResourceList` JSON).
    /// Subresources (`pods/log`) are skipped.
    pub fn from_resource_lists(lists: &[serde_json::Value]) -> Self {
        let mut resources = Vec::new();
        for list in lists {
            let gv = list.get("groupVersion").and_then(|v| v.as_str()).unwrap_or("v1");
            let (group, version) = gv.split_once('/').unwrap_or(("", gv));
            for r in list.get("resources").and_then(|v| v.as_array()).into_iter().flatten() {
                let name = r.get("name").and_then(|v| v.as_str()).unwrap_or("");
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                let strings = |key: &str| -> Vec<String> {
                    r.get(key)
                        .and_then(|v| v.as_array())
                        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                        .unwrap_or_default()
                };
                let kind = r.get("kind").and_then(|v| v.as_str()).unwrap_or("").to_string();
                let singular = match r.get("singularName").and_then(|v| v.as_str()).unwrap_or("") {
                    "" => kind.to_ascii_lowercase(),
                    s => s.to_string(),
                };
                resources.push(ApiResource {
                    group: group.to_string(),
                    version: version.to_string(),
                    plural: name.to_string(),
                    singular,
                    kind,
                    short_names: strings("shortNames"),
                    namespaced: r.get("namespaced").and_then(|v| v.as_bool()).unwrap_or(false),
                    verbs: strings("verbs"),
                });
            }
        }
        Self { resources }
    }

    /// The resource types every cluster serves (core, apps, batch,
    /// networking, policy, RBAC, storage, metrics not included): for tests
    /// and for parsing before a cluster's own discovery is known.
    pub fn builtin() -> Self {
        let all = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];
        let r = |group: &str, version: &str, plural: &str, kind: &str, short: &[&str], namespaced: bool| ApiResource {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            kind: kind.into(),
            short_names: short.iter().map(|s| s.to_string()).collect(),
            namespaced,
            verbs: all.iter().map(|s| s.to_string()).collect(),
        };
        Self {
            resources: vec![
                r("", "v1", "pods", "Pod", &["po"], true),
                r("", "v1", "services", "Service", &["svc"], true),
                r("", "v1", "configmaps", "ConfigMap", &["cm"], true),
                r("", "v1", "secrets", "Secret", &[], true),
                r("", "v1", "serviceaccounts", "ServiceAccount", &["sa"], true),
                r("", "v1", "namespaces", "Namespace", &["ns"], false),
                r("", "v1", "nodes", "Node", &["no"], false),
                r("", "v1", "events", "Event", &["ev"], true),
                r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", &["pvc"], true),
                r("", "v1", "persistentvolumes", "PersistentVolume", &["pv"], false),
                r("", "v1", "endpoints", "Endpoints", &["ep"], true),
                r("", "v1", "replicationcontrollers", "ReplicationController", &["rc"], true),
                r("", "v1", "resourcequotas", "ResourceQuota", &["quota"], true),
                r("", "v1", "limitranges", "LimitRange", &["limits"], true),
                r("apps", "v1", "deployments", "Deployment", &["deploy"], true),
                r("apps", "v1", "replicasets", "ReplicaSet", &["rs"], true),
                r("apps", "v1", "statefulsets", "StatefulSet", &["sts"], true),
                r("apps", "v1", "daemonsets", "DaemonSet", &["ds"], true),
                r("batch", "v1", "jobs", "Job", &[], true),
                r("batch", "v1", "cronjobs", "CronJob", &["cj"], true),
                r("networking.k8s.io", "v1", "ingresses", "Ingress", &["ing"], true),
                r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", &["netpol"], true),
                r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", &["pdb"], true),
                r("rbac.authorization.k8s.io", "v1", "roles", "Role", &[], true),
                r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", &[], true),
                r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", &[], false),
                r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", &[], false),
                r("storage.k8s.io", "v1", "storageclasses", "StorageClass", &["sc"], false),
                r("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", &["hpa"], true),
                r(
                    "apiextensions.k8s.io",
                    "v1",
                    "customresourcedefinitions",
                    "CustomResourceDefinition",
                    &["crd", "crds"],
                    false,
                ),
            ],
        }
    }
}

/// kubectl prefers the core group, then the built-in groups, then the rest
/// (CRDs), when one word names resources of several groups.
fn group_priority(group: &str) -> u8 {
    match group {
        "" => 0,
        "apps"
        | "batch"
        | "autoscaling"
        | "policy"
        | "networking.k8s.io"
        | "rbac.authorization.k8s.io"
        | "storage.k8s.io"
        | "apiextensions.k8s.io" => 1,
        g if g.ends_with(".k8s.io") => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_name_resources_as_kubectl_reads_them() {
        let d = Discovery::builtin();
        for (word, plural) in [
            ("pods", "pods"),
            ("pod", "pods"),
            ("po", "pods"),
            ("Pod", "pods"),
            ("deploy", "deployments"),
            ("deployments.apps", "deployments"),
            ("deployment.v1.apps", "deployments"),
            ("svc", "services"),
            ("hpa", "horizontalpodautoscalers"),
        ] {
            assert_eq!(d.find(word).map(|r| r.plural.as_str()), Some(plural), "{word}");
        }
        assert!(d.find("deployments.batch").is_none());
        assert!(d.find("widgets").is_none());
    }

    #[test]
    fn discovery_documents_are_read_without_subresources() {
        let core = serde_json::json!({"groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"]},
            {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}
        ]});
        let crd = serde_json::json!({"groupVersion": "example.com/v1", "resources": [
            {"name": "widgets", "singularName": "widget", "namespaced": true, "kind": "Widget", "verbs": ["get", "list"], "shortNames": ["po"]}
        ]});
        let d = Discovery::from_resource_lists(&[core, crd]);
        assert_eq!(d.resources.len(), 2);
        assert_eq!(d.find("po").map(|r| r.group.as_str()), Some(""), "the core group wins a shared short name");
        assert_eq!(d.find("widget").map(|r| r.api_version()), Some("example.com/v1".into()));
        assert_eq!(
            d.find("widgets").map(|r| r.object_path(Some("web"), "w1")),
            Some("/apis/example.com/v1/namespaces/web/widgets/w1".into())
        );
    }
}
