//! `/openapi/v3`: the index of group-version documents (each with a
//! `serverRelativeURL` carrying a content hash) and the documents, whose
//! `components.schemas` hold the real Kubernetes schemas of the built-in
//! kinds kube-sim serves and every type they reach, with the
//! `x-kubernetes-group-version-kind` extension `kubectl explain` looks
//! for. The schemas are in `openapi/schemas.json`, written by
//! `openapi/generate.py` from the k8s-openapi crate's copy of the API
//! server's OpenAPI document.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// Every schema kube-sim serves, by name (`io.k8s.api.core.v1.Pod`).
fn schemas() -> &'static Map<String, Value> {
    static ALL: OnceLock<Map<String, Value>> = OnceLock::new();
    ALL.get_or_init(|| {
        serde_json::from_str::<Value>(include_str!("openapi/schemas.json"))
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    })
}

/// The group-version documents: `api/v1`, `apis/apps/v1`, each built once.
fn documents() -> &'static BTreeMap<String, (String, Value)> {
    static DOCS: OnceLock<BTreeMap<String, (String, Value)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut by_gv: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, s) in schemas() {
            for gvk in s.get("x-kubernetes-group-version-kind").and_then(Value::as_array).into_iter().flatten() {
                let (g, v) = (gvk["group"].as_str().unwrap_or(""), gvk["version"].as_str().unwrap_or(""));
                let path = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
                by_gv.entry(path).or_default().push(name.clone());
            }
        }
        by_gv
            .into_iter()
            .map(|(path, kinds)| {
                // The kinds and every schema they reach.
                let mut keep: BTreeMap<String, Value> = BTreeMap::new();
                let mut todo = kinds;
                while let Some(n) = todo.pop() {
                    if keep.contains_key(&n) {
                        continue;
                    }
                    let Some(s) = schemas().get(&n) else { continue };
                    let text = s.to_string();
                    for part in text.split("#/components/schemas/").skip(1) {
                        todo.push(part.split('"').next().unwrap_or("").to_string());
                    }
                    keep.insert(n, s.clone());
                }
                let doc = json!({
                    "openapi": "3.0.0",
                    "info": {"title": "Kubernetes", "version": "v1.37.1"},
                    "paths": operations(&path, &keep),
                    "components": {"schemas": keep},
                });
                let hash = content_hash(&doc.to_string());
                (path, (hash, doc))
            })
            .collect()
    })
}

/// Plural and scope of each kind served (`explain` finds a kind through
/// the list operation of its resource path).
const RESOURCES: &[(&str, &str, bool)] = &[
    ("Pod", "pods", true),
    ("Service", "services", true),
    ("ConfigMap", "configmaps", true),
    ("Secret", "secrets", true),
    ("ServiceAccount", "serviceaccounts", true),
    ("Namespace", "namespaces", false),
    ("Node", "nodes", false),
    ("Deployment", "deployments", true),
    ("ReplicaSet", "replicasets", true),
    ("StatefulSet", "statefulsets", true),
    ("DaemonSet", "daemonsets", true),
];

/// The list and read operations of each kind in `schemas` under `gv_path`.
fn operations(gv_path: &str, schemas: &BTreeMap<String, Value>) -> Value {
    let mut paths = Map::new();
    for s in schemas.values() {
        for gvk in s.get("x-kubernetes-group-version-kind").and_then(Value::as_array).into_iter().flatten() {
            let kind = gvk["kind"].as_str().unwrap_or("");
            let Some((_, plural, namespaced)) = RESOURCES.iter().find(|(k, _, _)| *k == kind) else { continue };
            let base = if *namespaced {
                format!("/{gv_path}/namespaces/{{namespace}}/{plural}")
            } else {
                format!("/{gv_path}/{plural}")
            };
            let op = |action: &str, id: &str| {
                json!({"get": {"description": format!("{action} {kind}"), "operationId": format!("{id}{kind}"),
                               "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
                               "responses": {"200": {"description": "OK"}}}})
            };
            paths.insert(base.clone(), op("list", "list"));
            paths.insert(format!("{base}/{{name}}"), op("get", "read"));
        }
    }
    Value::Object(paths)
}

fn fnv(seed: u64, s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64 ^ seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// An uppercase hex digest of `s` (the API server uses SHA-512; clients
/// only compare it).
fn content_hash(s: &str) -> String {
    (0..8u64).map(|i| format!("{:016X}", fnv(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), s))).collect()
}

/// The `/openapi/v3` index.
pub fn index() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(path, (hash, _))| {
            (path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}))
        })
        .collect();
    json!({"paths": paths})
}

/// The document of `path` (`api/v1`, `apis/apps/v1`), if served.
pub fn document(path: &str) -> Option<&'static Value> {
    documents().get(path.trim_matches('/')).map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_hold_the_kinds_with_their_descriptions() {
        let idx = index();
        let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("apps/v1 listed");
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        let apps = document("apis/apps/v1").expect("apps/v1");
        let d = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let replicas = &apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"];
        assert!(
            replicas["description"].as_str().is_some_and(|s| s.starts_with("Number of desired pods")),
            "{replicas}"
        );
        let core = document("api/v1").expect("v1");
        assert!(core["components"]["schemas"]["io.k8s.api.core.v1.Container"]["properties"]["image"].is_object());
        assert!(core["components"]["schemas"].get("io.k8s.api.apps.v1.Deployment").is_none());
        assert!(document("apis/batch/v1").is_none());
    }
}
