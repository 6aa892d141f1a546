//! The resource types kube-sim serves: built-ins and CRD-defined ones.

use serde_json::{Value, json};

/// One resource type, as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// API group ("" for the core group).
    pub group: String,
    /// Version, e.g. "v1".
    pub version: String,
    /// Kind, e.g. "Pod".
    pub kind: String,
    /// Plural resource name, e.g. "pods".
    pub plural: String,
    /// Singular name, e.g. "pod".
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names, e.g. ["po"].
    pub short_names: Vec<String>,
    /// Categories, e.g. ["all"].
    pub categories: Vec<String>,
    /// Verbs.
    pub verbs: Vec<String>,
    /// Subresources, e.g. ["log", "exec", "portforward", "status"].
    pub subresources: Vec<String>,
}

const CRUD: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn r(
    group: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    categories: &[&str],
    subresources: &[&str],
) -> Resource {
    Resource {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_ascii_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| (*s).to_string()).collect(),
        categories: categories.iter().map(|s| (*s).to_string()).collect(),
        verbs: CRUD.iter().map(|s| (*s).to_string()).collect(),
        subresources: subresources.iter().map(|s| (*s).to_string()).collect(),
    }
}

/// The built-in resource types.
pub fn builtins() -> Vec<Resource> {
    let rbac = "rbac.authorization.k8s.io";
    let mut out = vec![
        r("", "Namespace", "namespaces", false, &["ns"], &[], &["status"]),
        r("", "Pod", "pods", true, &["po"], &["all"], &["log", "exec", "portforward", "attach", "status", "eviction"]),
        r("", "Service", "services", true, &["svc"], &["all"], &["status"]),
        r("", "ConfigMap", "configmaps", true, &["cm"], &[], &[]),
        r("", "Secret", "secrets", true, &[], &[], &[]),
        r("", "ServiceAccount", "serviceaccounts", true, &["sa"], &[], &[]),
        r("", "Event", "events", true, &["ev"], &[], &[]),
        r("", "Node", "nodes", false, &["no"], &[], &["status"]),
        r("apps", "Deployment", "deployments", true, &["deploy"], &["all"], &["status", "scale"]),
        r("apps", "ReplicaSet", "replicasets", true, &["rs"], &["all"], &["status", "scale"]),
        r("apps", "StatefulSet", "statefulsets", true, &["sts"], &["all"], &["status", "scale"]),
        r("apps", "DaemonSet", "daemonsets", true, &["ds"], &["all"], &["status"]),
        r("policy", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"], &[], &["status"]),
        r("networking.k8s.io", "NetworkPolicy", "networkpolicies", true, &["netpol"], &[], &[]),
        r("networking.k8s.io", "Ingress", "ingresses", true, &["ing"], &[], &["status"]),
        r(rbac, "Role", "roles", true, &[], &[], &[]),
        r(rbac, "RoleBinding", "rolebindings", true, &[], &[], &[]),
        r(rbac, "ClusterRole", "clusterroles", false, &[], &[], &[]),
        r(rbac, "ClusterRoleBinding", "clusterrolebindings", false, &[], &[], &[]),
        r(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            &[],
            &["status"],
        ),
    ];
    for review in [
        r("authorization.k8s.io", "SelfSubjectAccessReview", "selfsubjectaccessreviews", false, &[], &[], &[]),
        r("authorization.k8s.io", "SubjectAccessReview", "subjectaccessreviews", false, &[], &[], &[]),
        r("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews", false, &[], &[], &[]),
    ] {
        out.push(Resource { verbs: vec!["create".into()], ..review });
    }
    // metrics.k8s.io, as metrics-server's APIService serves it.
    for (kind, plural, namespaced) in [("PodMetrics", "pods", true), ("NodeMetrics", "nodes", false)] {
        out.push(Resource {
            version: "v1beta1".into(),
            verbs: vec!["get".into(), "list".into()],
            ..r(crate::metrics::GROUP, kind, plural, namespaced, &[], &[], &[])
        });
    }
    out
}

/// Whether `group` is one kube-sim serves itself (not a CRD's).
pub fn is_builtin_group(group: &str) -> bool {
    builtins().iter().any(|r| r.group == group)
}

/// Whether the API server accepts `field` in a field selector on `r`
/// (`metadata.name` and `metadata.namespace` everywhere, plus the fields
/// each built-in kind indexes).
pub fn selectable_field(r: &Resource, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    if !is_builtin_group(&r.group) {
        return false;
    }
    let extra: &[&str] = match (r.group.as_str(), r.plural.as_str()) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        ("apps", "replicasets") => &["status.replicas"],
        _ => &[],
    };
    extra.contains(&field)
}

/// The resource type a CRD object defines (its storage version), if valid.
pub fn from_crd(crd: &Value) -> Option<Resource> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let version = spec
        .get("versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
        .or_else(|| spec.get("versions")?.as_array()?.first())?
        .get("name")?
        .as_str()?
        .to_string();
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let plural = names.get("plural")?.as_str()?.to_string();
    Some(Resource {
        group: spec.get("group")?.as_str()?.to_string(),
        version,
        kind: names.get("kind")?.as_str()?.to_string(),
        singular: names.get("singular").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| plural.clone()),
        plural,
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        short_names: strs(names.get("shortNames")),
        categories: strs(names.get("categories")),
        verbs: CRUD.iter().map(|s| (*s).to_string()).collect(),
        subresources: Vec::new(),
    })
}

impl Resource {
    /// `group/version`, or `version` for the core group.
    pub fn group_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Whether the registry keeps `metadata.generation` (kinds with a spec
    /// that controllers observe, and every custom resource).
    pub fn has_generation(&self) -> bool {
        !is_builtin_group(&self.group)
            || matches!(
                (self.group.as_str(), self.plural.as_str()),
                ("", "pods") | ("apps", _) | ("policy", _) | ("networking.k8s.io", _) | ("apiextensions.k8s.io", _)
            )
    }

    /// The `APIResource` entries (the resource and its subresources).
    pub fn api_resources(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs,
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        for sub in &self.subresources {
            let (group, version, kind, verbs) = self.subresource(sub);
            let mut entry = json!({
                "name": format!("{}/{}", self.plural, sub),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if !version.is_empty() {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            out.push(entry);
        }
        out
    }

    /// A subresource's response kind `(group, version, kind)` (group and
    /// version empty when they are the resource's own) and verbs.
    fn subresource(&self, sub: &str) -> (&'static str, &'static str, String, Vec<&'static str>) {
        match sub {
            "log" => ("", "", "Pod".into(), vec!["get"]),
            "exec" | "attach" | "portforward" => (
                "",
                "",
                format!("Pod{}Options", capitalize(sub)).replace("PodPortforwardOptions", "PodPortForwardOptions"),
                vec!["create", "get"],
            ),
            "scale" => ("autoscaling", "v1", "Scale".into(), vec!["get", "patch", "update"]),
            "eviction" => ("policy", "v1", "Eviction".into(), vec!["create"]),
            _ => ("", "", self.kind.clone(), vec!["get", "patch", "update"]),
        }
    }

    /// The aggregated-discovery entry of this resource.
    pub fn aggregated(&self) -> Value {
        let subs: Vec<Value> = self
            .subresources
            .iter()
            .map(|s| {
                let (group, version, kind, verbs) = self.subresource(s);
                json!({
                    "subresource": s,
                    "responseKind": {"group": group, "version": version, "kind": kind},
                    "verbs": verbs,
                })
            })
            .collect();
        json!({
            "resource": self.plural,
            "responseKind": {"group": self.group, "version": self.version, "kind": self.kind},
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": self.verbs,
            "shortNames": self.short_names,
            "categories": self.categories,
            "subresources": subs,
        })
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}
