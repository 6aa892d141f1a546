//! What the API server does to an object before storing it: the defaults
//! of `k8s.io/api`'s `SetDefaults_*` functions (and the admission plugins
//! every cluster runs), then validation with the registry's field errors.
//! Dry-run requests go through both, so they answer the defaulted object or
//! the same 422.

use serde_json::{Value, json};

use crate::error::{ApiError, FieldError};
use crate::resources::Resource;

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(key).is_none_or(|v| v.is_null() || v.as_str() == Some(""))
    {
        m.insert(key.to_string(), v);
    }
}

fn object_at<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    if !obj.get(key).is_some_and(Value::is_object) {
        obj[key] = json!({});
    }
    &mut obj[key]
}

/// `SetDefaults_Container`: the image pull policy from the tag, the
/// termination message settings, port protocols.
fn container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or("");
    let latest = !image.contains('@') && last.split_once(':').is_none_or(|(_, tag)| tag == "latest");
    set_default(c, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// `SetDefaults_PodSpec` and its containers.
fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        *spec = json!({});
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
}

/// A pod template's defaults (`creationTimestamp: null` as the API prints it).
fn template(t: &mut Value) {
    if let Some(m) = object_at(t, "metadata").as_object_mut() {
        m.entry("creationTimestamp").or_insert(Value::Null);
    }
    pod_spec(object_at(t, "spec"));
}

/// Fills the defaults of `obj` for resource `r`.
pub fn default(r: &Resource, obj: &mut Value) {
    match (r.group.as_str(), r.plural.as_str()) {
        ("", "pods") => {
            let s = object_at(obj, "spec");
            pod_spec(s);
            // (No `serviceAccountName: default` from the ServiceAccount
            // admission plugin: kube-sim's pods have never had one, and the
            // suites compare `kubectl describe` layouts made without it.)
            set_default(s, "enableServiceLinks", json!(true));
            set_default(s, "priority", json!(0));
            set_default(s, "preemptionPolicy", json!("PreemptLowerPriority"));
            // The DefaultTolerationSeconds admission plugin.
            if !s.get("tolerations").is_some_and(Value::is_array) {
                s["tolerations"] = json!([]);
            }
            if let Some(ts) = s["tolerations"].as_array_mut() {
                for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
                    if !ts.iter().any(|t| t.get("key").and_then(Value::as_str) == Some(key)) {
                        ts.push(
                            json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
                        );
                    }
                }
            }
        }
        ("apps", "deployments") => {
            let s = object_at(obj, "spec");
            set_default(s, "replicas", json!(1));
            set_default(s, "revisionHistoryLimit", json!(10));
            set_default(s, "progressDeadlineSeconds", json!(600));
            let st = object_at(s, "strategy");
            set_default(st, "type", json!("RollingUpdate"));
            if st["type"] == "RollingUpdate" {
                let ru = object_at(st, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
            template(object_at(s, "template"));
        }
        ("apps", "replicasets") => {
            let s = object_at(obj, "spec");
            set_default(s, "replicas", json!(1));
            template(object_at(s, "template"));
        }
        ("apps", "statefulsets") => {
            let s = object_at(obj, "spec");
            set_default(s, "replicas", json!(1));
            set_default(s, "podManagementPolicy", json!("OrderedReady"));
            set_default(s, "revisionHistoryLimit", json!(10));
            let st = object_at(s, "updateStrategy");
            set_default(st, "type", json!("RollingUpdate"));
            if st["type"] == "RollingUpdate" {
                set_default(object_at(st, "rollingUpdate"), "partition", json!(0));
            }
            set_default(
                s,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            template(object_at(s, "template"));
        }
        ("apps", "daemonsets") => {
            let s = object_at(obj, "spec");
            set_default(s, "revisionHistoryLimit", json!(10));
            let st = object_at(s, "updateStrategy");
            set_default(st, "type", json!("RollingUpdate"));
            if st["type"] == "RollingUpdate" {
                let ru = object_at(st, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
            template(object_at(s, "template"));
        }
        ("", "namespaces") => {
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
            if !name.is_empty() {
                let labels = object_at(object_at(obj, "metadata"), "labels");
                set_default(labels, "kubernetes.io/metadata.name", json!(name));
            }
            set_default(object_at(obj, "spec"), "finalizers", json!(["kubernetes"]));
        }
        _ => {}
    }
}

/// The message of `IsDNS1123Subdomain`.
const SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_subdomain(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Go's `%#v` of a `map[string]string` (keys sorted).
fn go_map(m: Option<&Value>) -> String {
    let mut pairs: Vec<(String, String)> = m
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    pairs.sort();
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

fn containers(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let cs = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    match cs {
        None => errs.push(FieldError::required(&format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => errs.push(FieldError::required(&format!("{path}.containers"))),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                if c.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    errs.push(FieldError::required(&format!("{path}.containers[{i}].name")));
                }
                if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                    errs.push(FieldError::required(&format!("{path}.containers[{i}].image")));
                }
            }
        }
    }
}

/// Whether a `matchLabels` selector selects `labels`.
fn selects(selector: &Value, labels: Option<&Value>) -> bool {
    let want = selector.get("matchLabels").and_then(Value::as_object);
    want.is_none_or(|w| w.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)))
}

/// Validates `obj` as the registry strategies of the built-in kinds do
/// (a subset: names, containers, selectors, replica counts).
pub fn validate(r: &Resource, obj: &Value) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let checks_name = matches!(
        (r.group.as_str(), r.plural.as_str()),
        ("", "pods" | "configmaps" | "secrets" | "serviceaccounts")
            | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
            | ("policy", "poddisruptionbudgets")
    );
    if checks_name && !name.is_empty() && !is_subdomain(name) {
        errs.push(FieldError::invalid("metadata.name", &format!("{name:?}"), SUBDOMAIN));
    }
    match (r.group.as_str(), r.plural.as_str()) {
        ("", "pods") => containers(obj.get("spec"), "spec", &mut errs),
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            if let Some(n) = obj.pointer("/spec/replicas").and_then(Value::as_i64).filter(|n| *n < 0) {
                errs.push(FieldError::invalid("spec.replicas", &n.to_string(), "must be greater than or equal to 0"));
            }
            let labels = obj.pointer("/spec/template/metadata/labels");
            match obj.pointer("/spec/selector") {
                None | Some(Value::Null) => errs.push(FieldError::required("spec.selector")),
                Some(sel) if !selects(sel, labels) => errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &go_map(labels),
                    "`selector` does not match template `labels`",
                )),
                Some(_) => {}
            }
            containers(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut errs);
        }
        _ => {}
    }
    if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid_fields(&r.group, &r.kind, name, &errs)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;

    fn res(plural: &str) -> Resource {
        builtins().into_iter().find(|r| r.plural == plural).expect("built in")
    }

    #[test]
    fn deployments_get_the_api_defaults() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}});
        default(&res("deployments"), &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!((c["imagePullPolicy"].as_str(), c["ports"][0]["protocol"].as_str()), (Some("Always"), Some("TCP")));
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(validate(&res("deployments"), &d).is_ok());
    }

    #[test]
    fn a_selector_that_misses_the_template_is_invalid() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "main"}]}}}});
        let e = validate(&res("deployments"), &d).expect_err("invalid");
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Deployment.apps \"web\" is invalid: [spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`, spec.template.spec.containers[0].image: Required value]"
        );
    }
}
