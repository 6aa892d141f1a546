//! The simulated cluster: the store plus what a real cluster's components
//! would do on each write — a kubelet that runs every pod, a deployment
//! controller that keeps the right number of pods, events, and CRDs that
//! register new resource types.

use std::sync::RwLock;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::resources::{self, Resource};
use crate::store::{Store, now_rfc3339};

/// The simulated cluster.
pub struct Cluster {
    /// The objects.
    pub store: Store,
    resources: RwLock<Vec<Resource>>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

fn s<'a>(o: &'a Value, p: &str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).unwrap_or("")
}

impl Cluster {
    /// A cluster with the built-in resource types and no objects.
    pub fn new() -> Self {
        Self { store: Store::new(), resources: RwLock::new(resources::builtins()) }
    }

    /// Every resource type served now.
    pub fn resources(&self) -> Vec<Resource> {
        self.resources.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The resource type `group/version/plural`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.resources().into_iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// A built-in or CRD resource by plural name (any group).
    pub fn resource_by_plural(&self, plural: &str) -> Option<Resource> {
        self.resources().into_iter().find(|r| r.plural == plural)
    }

    /// Creates an object and runs the simulated controllers.
    pub fn create(&self, r: &Resource, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        if r.namespaced && r.plural != "events" && r.plural != "namespaces" {
            let ns_res = self.resource_by_plural("namespaces").expect("namespaces are built in");
            if !ns.is_empty()
                && self.store.get(&ns_res, "", ns).is_err()
                && !self.store.list(&ns_res, None).0.is_empty()
            {
                return Err(ApiError {
                    code: 404,
                    reason: "NotFound",
                    message: format!("namespaces \"{ns}\" not found"),
                    details: Some(json!({"name": ns, "kind": "namespaces"})),
                });
            }
        }
        if r.plural == "pods" && r.group.is_empty() {
            run_pod(&mut obj, ns);
        }
        if r.plural == "namespaces" && obj.pointer("/status/phase").is_none() {
            obj["status"] = json!({"phase": "Active"});
        }
        fold_string_data(r, &mut obj);
        let created = self.store.create(r, ns, obj)?;
        self.after_write(r, ns, &created);
        Ok(created)
    }

    /// Updates an object and runs the simulated controllers.
    pub fn update(&self, r: &Resource, ns: &str, name: &str, mut obj: Value) -> Result<Value, ApiError> {
        fold_string_data(r, &mut obj);
        let updated = self.store.update(r, ns, name, obj)?;
        self.after_write(r, ns, &updated);
        Ok(updated)
    }

    /// Deletes an object; deleting a deployment deletes its pods, deleting
    /// a CRD unregisters its resource.
    pub fn delete(&self, r: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        let gone = self.store.delete(r, ns, name)?;
        if let Some(pods) = self.resource_by_plural("pods").filter(|_| r.plural == "deployments") {
            for p in self.owned_pods(&pods, ns, name) {
                let _ = self.store.delete(&pods, ns, s(&p, "/metadata/name"));
            }
        }
        if let Some(pods) = self.resource_by_plural("pods").filter(|_| r.plural == "statefulsets") {
            for p in self.store.list(&pods, Some(ns)).0 {
                if p.pointer("/metadata/labels/kube-sim.io~1statefulset").and_then(Value::as_str) == Some(name) {
                    let _ = self.store.delete(&pods, ns, s(&p, "/metadata/name"));
                }
            }
        }
        if let Some(def) = resources::from_crd(&gone).filter(|_| r.plural == "customresourcedefinitions") {
            self.resources
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|x| !(x.group == def.group && x.plural == def.plural));
        }
        Ok(gone)
    }

    fn owned_pods(&self, pods: &Resource, ns: &str, deployment: &str) -> Vec<Value> {
        self.store
            .list(pods, Some(ns))
            .0
            .into_iter()
            .filter(|p| {
                p.pointer("/metadata/labels/kube-sim.io~1deployment").and_then(Value::as_str) == Some(deployment)
            })
            .collect()
    }

    fn after_write(&self, r: &Resource, ns: &str, obj: &Value) {
        match (r.group.as_str(), r.plural.as_str()) {
            ("apps", "deployments") => self.reconcile_deployment(r, ns, obj),
            ("apps", "statefulsets") => self.reconcile_statefulset(r, ns, obj),
            ("", "pods") => self.pod_events(ns, obj),
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if let Some(def) = resources::from_crd(obj) {
                    let mut all = self.resources.write().unwrap_or_else(|p| p.into_inner());
                    all.retain(|x| !(x.group == def.group && x.plural == def.plural));
                    all.push(def);
                }
            }
            _ => {}
        }
    }

    fn pod_events(&self, ns: &str, pod: &Value) {
        let Some(events) = self.resource_by_plural("events") else { return };
        let name = s(pod, "/metadata/name");
        if s(pod, "/metadata/resourceVersion").is_empty()
            || pod.pointer("/metadata/generation").and_then(Value::as_i64) != Some(1)
        {
            return;
        }
        let now = now_rfc3339();
        for (reason, message) in [
            ("Scheduled", format!("Successfully assigned {ns}/{name} to {}", s(pod, "/spec/nodeName"))),
            ("Pulled", "Container image already present on machine".to_string()),
            ("Started", "Started container".to_string()),
        ] {
            let ev = json!({
                "metadata": {"generateName": format!("{name}.")},
                "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": s(pod, "/metadata/uid"), "apiVersion": "v1"},
                "reason": reason, "message": message, "type": "Normal", "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": "kubelet", "host": s(pod, "/spec/nodeName")},
            });
            let _ = self.store.create(&events, ns, ev);
        }
    }

    fn reconcile_deployment(&self, r: &Resource, ns: &str, d: &Value) {
        let Some(pods) = self.resource_by_plural("pods") else { return };
        let name = s(d, "/metadata/name").to_string();
        let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0) as usize;
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = format!("{:x}", fnv(&template.to_string()) % 0xff_ffff_ffff);
        let mut have = self.owned_pods(&pods, ns, &name);
        // Pods of an older template go away.
        for p in have.iter().filter(|p| s(p, "/metadata/labels/pod-template-hash") != hash) {
            let _ = self.store.delete(&pods, ns, s(p, "/metadata/name"));
        }
        have.retain(|p| s(p, "/metadata/labels/pod-template-hash") == hash);
        while have.len() > want {
            if let Some(p) = have.pop() {
                let _ = self.store.delete(&pods, ns, s(&p, "/metadata/name"));
            }
        }
        while have.len() < want {
            let mut pod = json!({
                "metadata": {
                    "generateName": format!("{name}-{hash}-"),
                    "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-{hash}"), "controller": true}],
                },
                "spec": template.get("spec").cloned().unwrap_or(json!({})),
            });
            pod["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            pod["metadata"]["labels"]["kube-sim.io/deployment"] = json!(name);
            match self.create(&pods, ns, pod) {
                Ok(p) => have.push(p),
                Err(_) => break,
            }
        }
        let n = have.len();
        let status = json!({"replicas": n, "readyReplicas": n, "updatedReplicas": n, "availableReplicas": n, "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]});
        if d.get("status") != Some(&status) {
            let mut updated = d.clone();
            updated["status"] = status;
            if let Some(m) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let _ = self.store.update(r, ns, &name, updated);
        }
    }
}

impl Cluster {
    /// The StatefulSet controller: pods `<name>-0` … `<name>-<n-1>` from the
    /// template, each with its volume claims (`<claim>-<name>-<i>`) as
    /// `persistentVolumeClaim` volumes; pods beyond `replicas` go away.
    fn reconcile_statefulset(&self, r: &Resource, ns: &str, set: &Value) {
        let Some(pods) = self.resource_by_plural("pods") else { return };
        let name = s(set, "/metadata/name").to_string();
        let want = set.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0) as usize;
        let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let claims = set.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array).cloned().unwrap_or_default();
        let owned =
            |p: &Value| p.pointer("/metadata/labels/kube-sim.io~1statefulset").and_then(Value::as_str) == Some(&name);
        let have: Vec<Value> = self.store.list(&pods, Some(ns)).0.into_iter().filter(|p| owned(p)).collect();
        for p in &have {
            let ordinal = s(p, "/metadata/name").rsplit('-').next().and_then(|o| o.parse::<usize>().ok());
            if ordinal.is_none_or(|o| o >= want) {
                let _ = self.store.delete(&pods, ns, s(p, "/metadata/name"));
            }
        }
        for i in 0..want {
            let pod_name = format!("{name}-{i}");
            if self.store.get(&pods, ns, &pod_name).is_ok() {
                continue;
            }
            let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
            if !spec.get("volumes").is_some_and(Value::is_array) {
                spec["volumes"] = json!([]);
            }
            for c in &claims {
                let claim = s(c, "/metadata/name");
                if let Some(v) = spec["volumes"].as_array_mut() {
                    v.push(
                        json!({"name": claim, "persistentVolumeClaim": {"claimName": format!("{claim}-{pod_name}")}}),
                    );
                }
            }
            let mut pod = json!({
                "metadata": {
                    "name": pod_name,
                    "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "controller": true}],
                },
                "spec": spec,
            });
            pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
            pod["metadata"]["labels"]["kube-sim.io/statefulset"] = json!(name);
            if self.create(&pods, ns, pod).is_err() {
                break;
            }
        }
        let status = json!({"replicas": want, "readyReplicas": want, "currentReplicas": want, "updatedReplicas": want,
            "availableReplicas": want, "observedGeneration": set.pointer("/metadata/generation").cloned().unwrap_or(json!(1))});
        if set.get("status") != Some(&status) {
            let mut updated = set.clone();
            updated["status"] = status;
            if let Some(m) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let _ = self.store.update(r, ns, &name, updated);
        }
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The simulated kubelet: every pod is scheduled and running at once.
fn run_pod(pod: &mut Value, _ns: &str) {
    if !pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"] = json!({});
    }
    if s(pod, "/spec/nodeName").is_empty() {
        pod["spec"]["nodeName"] = json!("sim-node-1");
    }
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let now = now_rfc3339();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({"name": c.get("name").cloned().unwrap_or(json!("main")), "image": c.get("image").cloned().unwrap_or(json!("")),
                   "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let ip = format!("10.244.{}.{}", fnv(&pod.to_string()) % 200 + 1, fnv(&now) % 250 + 2);
    pod["status"] = json!({
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.10", "startTime": now,
        "qosClass": "BestEffort",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": statuses,
    });
}

/// Secrets store `stringData` as base64 `data` (it is write-only, as in the
/// API server) and default to type `Opaque`.
fn fold_string_data(r: &Resource, obj: &mut Value) {
    if r.plural != "secrets" || !r.group.is_empty() {
        return;
    }
    if let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in strings {
            obj["data"][k] = json!(crate::kubeconfig::base64(v.as_str().unwrap_or_default().as_bytes()));
        }
    }
    if obj.get("type").is_none_or(Value::is_null) {
        obj["type"] = json!("Opaque");
    }
}
