//! The simulated cluster: the store plus what a real cluster's components
//! do after each write — a scheduler and kubelet that place and run every
//! pod, the workload controllers (see [`crate::workloads`]), the disruption
//! controller (see [`crate::disruption`]), the garbage collector, events,
//! and CRDs that register new resource types.
//!
//! Writes made through the API (the `*_with` methods and their plain
//! forms) run the defaulting and validation of [`crate::admission`], store
//! the object and then let the controllers settle before they return, so a
//! client sees their effect at once. Controllers are level-triggered: a
//! write queues the keys it affects, and one reconciler at a time works the
//! queue until nothing changes. A dry-run write stops before the store: no
//! resourceVersion is taken, watches and controllers see nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use serde_json::{Value, json};

use crate::admission;
use crate::error::ApiError;
use crate::resources::{self, Resource};
use crate::store::{Preconditions, Store, now_rfc3339};

/// How an API write is carried out (`CreateOptions`, `UpdateOptions`,
/// `PatchOptions` as far as kube-sim reads them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// `dryRun=All`: validated and answered, never stored.
    pub dry_run: bool,
}

/// `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted after the owner (kubectl's default).
    #[default]
    Background,
    /// Dependents are deleted too (kube-sim deletes them at once, as with Background).
    Foreground,
    /// Dependents are kept, their owner reference removed.
    Orphan,
}

/// `DeleteOptions` as the API server reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `dryRun: [All]`.
    pub dry_run: bool,
    /// `preconditions`.
    pub preconditions: Preconditions,
    /// `propagationPolicy` (or `orphanDependents`).
    pub propagation: Propagation,
}

/// Something a controller has to look at again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Work {
    /// A Deployment `(namespace, name)`.
    Deployment(String, String),
    /// A ReplicaSet.
    ReplicaSet(String, String),
    /// A DaemonSet.
    DaemonSet(String, String),
    /// A StatefulSet.
    StatefulSet(String, String),
    /// The PodDisruptionBudgets of a namespace.
    Budgets(String),
    /// A node's taints (the node lifecycle controller).
    Node(String),
    /// Pods waiting for a node.
    Schedule,
    /// Dependents of a deleted owner `(namespace, uid)`: delete them.
    Collect(String, String),
    /// Dependents of a deleted owner: drop the owner reference.
    Orphan(String, String),
}

/// The simulated cluster.
pub struct Cluster {
    /// The objects.
    pub store: Store,
    resources: RwLock<Vec<Resource>>,
    queue: Mutex<VecDeque<Work>>,
    reconciling: Mutex<()>,
    metrics: AtomicBool,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn s<'a>(o: &'a Value, p: &str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn int(o: &Value, p: &str, default: i64) -> i64 {
    o.pointer(p).and_then(Value::as_i64).unwrap_or(default)
}

/// The controller owner reference of `obj`, if any: `(kind, name, uid)`.
pub(crate) fn controller_of(obj: &Value) -> Option<(String, String, String)> {
    obj.pointer("/metadata/ownerReferences")?.as_array()?.iter().find_map(|o| {
        (o.get("controller").and_then(Value::as_bool) == Some(true))
            .then(|| (s(o, "/kind").to_string(), s(o, "/name").to_string(), s(o, "/uid").to_string()))
    })
}

/// An owner reference to `owner` as controllers write it.
pub(crate) fn owner_ref(owner: &Value) -> Value {
    json!({"apiVersion": s(owner, "/apiVersion"), "kind": s(owner, "/kind"), "name": s(owner, "/metadata/name"),
           "uid": s(owner, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true})
}

impl Cluster {
    /// A cluster with the built-in resource types and no objects.
    pub fn new() -> Self {
        Self {
            store: Store::new(),
            resources: RwLock::new(resources::builtins()),
            queue: Mutex::new(VecDeque::new()),
            reconciling: Mutex::new(()),
            metrics: AtomicBool::new(true),
        }
    }

    /// Every resource type served now.
    pub fn resources(&self) -> Vec<Resource> {
        let metrics = self.metrics_enabled();
        self.resources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| metrics || r.group != crate::metrics::GROUP)
            .cloned()
            .collect()
    }

    /// Whether the metrics API (`metrics.k8s.io`, as metrics-server serves
    /// it) is installed.
    pub fn metrics_enabled(&self) -> bool {
        self.metrics.load(Ordering::SeqCst)
    }

    /// Installs or removes the metrics API: without it discovery does not
    /// list `metrics.k8s.io` and its paths are 404, as in a cluster without
    /// metrics-server.
    pub fn set_metrics(&self, on: bool) {
        self.metrics.store(on, Ordering::SeqCst);
    }

    /// The resource type `group/version/plural`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.resources().into_iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// A built-in or CRD resource by plural name (any group).
    pub fn resource_by_plural(&self, plural: &str) -> Option<Resource> {
        self.resources().into_iter().find(|r| r.plural == plural)
    }

    pub(crate) fn builtin(&self, group: &str, plural: &str) -> Resource {
        self.resources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
            .expect("built-in resources are never removed")
    }

    fn check_namespace(&self, r: &Resource, ns: &str) -> Result<(), ApiError> {
        if r.namespaced && r.plural != "events" && r.plural != "namespaces" {
            let ns_res = self.builtin("", "namespaces");
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
        Ok(())
    }

    /// Creates an object and lets the controllers settle.
    pub fn create(&self, r: &Resource, ns: &str, obj: Value) -> Result<Value, ApiError> {
        self.create_with(r, ns, obj, WriteOptions::default())
    }

    /// Creates an object as the API does: defaults, validation, then (unless
    /// a dry run) the store and the controllers.
    pub fn create_with(&self, r: &Resource, ns: &str, mut obj: Value, opts: WriteOptions) -> Result<Value, ApiError> {
        self.check_namespace(r, ns)?;
        admission::default(r, &mut obj);
        admission::validate(r, &obj)?;
        fold_string_data(r, &mut obj);
        if opts.dry_run {
            if r.group.is_empty() && r.plural == "pods" {
                obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj)});
            }
            if r.group.is_empty() && r.plural == "namespaces" {
                obj["status"] = json!({"phase": "Active"});
            }
            return self.store.create_opts(r, ns, obj, true);
        }
        let created = self.persist_create(r, ns, obj)?;
        self.reconcile();
        Ok(created)
    }

    /// Updates an object and lets the controllers settle.
    pub fn update(&self, r: &Resource, ns: &str, name: &str, obj: Value) -> Result<Value, ApiError> {
        self.update_with(r, ns, name, obj, WriteOptions::default())
    }

    /// Updates an object as the API does (a stale `resourceVersion` is a
    /// 409 Conflict, dry run or not).
    pub fn update_with(
        &self,
        r: &Resource,
        ns: &str,
        name: &str,
        mut obj: Value,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        admission::default(r, &mut obj);
        admission::validate(r, &obj)?;
        fold_string_data(r, &mut obj);
        if opts.dry_run {
            return self.store.update_opts(r, ns, name, obj, true);
        }
        let updated = self.persist_update(r, ns, name, obj)?;
        self.reconcile();
        Ok(updated)
    }

    /// Deletes an object (dependents follow, as the garbage collector
    /// deletes them); deleting a CRD unregisters its resource.
    pub fn delete(&self, r: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.delete_with(r, ns, name, &DeleteOptions::default())
    }

    /// Deletes an object as the API does: preconditions checked, nothing
    /// changed on a dry run.
    pub fn delete_with(&self, r: &Resource, ns: &str, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
        if opts.dry_run {
            return self.store.delete_opts(r, ns, name, &opts.preconditions, true);
        }
        let gone = self.persist_delete(r, ns, name, &opts.preconditions, opts.propagation)?;
        self.reconcile();
        Ok(gone)
    }

    /// Creates without admission checks or settling (controllers' writes).
    pub(crate) fn persist_create(&self, r: &Resource, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        admission::default(r, &mut obj);
        let pod = r.group.is_empty() && r.plural == "pods";
        if pod {
            self.start_pod(&mut obj);
        }
        if r.group.is_empty() && r.plural == "namespaces" && obj.pointer("/status/phase").is_none() {
            obj["status"] = json!({"phase": "Active"});
        }
        let created = self.store.create(r, ns, obj)?;
        if pod {
            self.pod_events(ns, &created);
        }
        self.after_write(r, ns, &created);
        Ok(created)
    }

    /// Updates without admission checks or settling.
    pub(crate) fn persist_update(&self, r: &Resource, ns: &str, name: &str, obj: Value) -> Result<Value, ApiError> {
        let updated = self.store.update(r, ns, name, obj)?;
        self.after_write(r, ns, &updated);
        Ok(updated)
    }

    /// A controller's update: applied only if nobody wrote the object since
    /// the controller read it (else that write has queued the work again).
    pub(crate) fn controller_update(&self, r: &Resource, ns: &str, obj: Value) -> Option<Value> {
        let name = s(&obj, "/metadata/name").to_string();
        match self.persist_update(r, ns, &name, obj) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(resource = %r.plural, %ns, %name, error = %e.message, "controller update skipped");
                None
            }
        }
    }

    pub(crate) fn persist_delete(
        &self,
        r: &Resource,
        ns: &str,
        name: &str,
        pre: &Preconditions,
        propagation: Propagation,
    ) -> Result<Value, ApiError> {
        let gone = self.store.delete_opts(r, ns, name, pre, false)?;
        let uid = s(&gone, "/metadata/uid").to_string();
        let obj_ns = s(&gone, "/metadata/namespace").to_string();
        match propagation {
            Propagation::Orphan => self.enqueue(Work::Orphan(obj_ns, uid)),
            _ => self.enqueue(Work::Collect(obj_ns, uid)),
        }
        match (r.group.as_str(), r.plural.as_str()) {
            ("", "pods") => {
                self.enqueue_owner(ns, &gone);
                self.enqueue(Work::Budgets(ns.to_string()));
            }
            ("", "nodes") => self.enqueue_daemonsets(),
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if let Some(def) = resources::from_crd(&gone) {
                    self.resources
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .retain(|x| !(x.group == def.group && x.plural == def.plural));
                }
            }
            _ => {}
        }
        Ok(gone)
    }

    pub(crate) fn enqueue(&self, w: Work) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if !q.contains(&w) {
            q.push_back(w);
        }
    }

    fn enqueue_owner(&self, ns: &str, obj: &Value) {
        if let Some((kind, name, _)) = controller_of(obj) {
            let (ns, name) = (ns.to_string(), name);
            match kind.as_str() {
                "ReplicaSet" => self.enqueue(Work::ReplicaSet(ns, name)),
                "Deployment" => self.enqueue(Work::Deployment(ns, name)),
                "DaemonSet" => self.enqueue(Work::DaemonSet(ns, name)),
                "StatefulSet" => self.enqueue(Work::StatefulSet(ns, name)),
                _ => {}
            }
        }
    }

    fn enqueue_daemonsets(&self) {
        for ds in self.store.list(&self.builtin("apps", "daemonsets"), None).0 {
            self.enqueue(Work::DaemonSet(s(&ds, "/metadata/namespace").into(), s(&ds, "/metadata/name").into()));
        }
    }

    /// Works the queue until the controllers have nothing left to do.
    pub(crate) fn reconcile(&self) {
        let _turn = self.reconciling.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..20_000 {
            let next = self.queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
            let Some(w) = next else { return };
            match w {
                Work::Deployment(ns, name) => self.reconcile_deployment(&ns, &name),
                Work::ReplicaSet(ns, name) => self.reconcile_replicaset(&ns, &name),
                Work::DaemonSet(ns, name) => self.reconcile_daemonset(&ns, &name),
                Work::StatefulSet(ns, name) => self.reconcile_statefulset(&ns, &name),
                Work::Budgets(ns) => self.reconcile_budgets(&ns),
                Work::Node(name) => self.reconcile_node(&name),
                Work::Schedule => self.schedule_pending(),
                Work::Collect(ns, uid) => self.collect(&ns, &uid, false),
                Work::Orphan(ns, uid) => self.collect(&ns, &uid, true),
            }
        }
        tracing::warn!("the simulated controllers did not settle");
    }

    fn after_write(&self, r: &Resource, ns: &str, obj: &Value) {
        let (ns, name) = (ns.to_string(), s(obj, "/metadata/name").to_string());
        match (r.group.as_str(), r.plural.as_str()) {
            ("apps", "deployments") => self.enqueue(Work::Deployment(ns, name)),
            ("apps", "replicasets") => {
                self.enqueue_owner(&ns, obj);
                self.enqueue(Work::ReplicaSet(ns, name));
            }
            ("apps", "daemonsets") => self.enqueue(Work::DaemonSet(ns, name)),
            ("apps", "statefulsets") => self.enqueue(Work::StatefulSet(ns, name)),
            ("", "pods") => {
                self.enqueue_owner(&ns, obj);
                self.enqueue(Work::Budgets(ns));
            }
            ("", "nodes") => {
                self.enqueue(Work::Node(name));
                self.enqueue(Work::Schedule);
                self.enqueue_daemonsets();
            }
            ("policy", "poddisruptionbudgets") => self.enqueue(Work::Budgets(ns)),
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if let Some(def) = resources::from_crd(obj) {
                    let mut all = self.resources.write().unwrap_or_else(PoisonError::into_inner);
                    all.retain(|x| !(x.group == def.group && x.plural == def.plural));
                    all.push(def);
                }
            }
            _ => {}
        }
    }

    /// Objects of `r` in `ns` whose controller is the object with `uid`.
    pub(crate) fn controlled_by(&self, r: &Resource, ns: &str, uid: &str) -> Vec<Value> {
        self.store
            .list(r, Some(ns))
            .0
            .into_iter()
            .filter(|o| controller_of(o).is_some_and(|(_, _, u)| u == uid))
            .collect()
    }

    /// The garbage collector: dependents of the deleted owner `uid` are
    /// deleted (or, `orphan`, freed of their owner reference).
    fn collect(&self, ns: &str, uid: &str, orphan: bool) {
        for (g, p) in [("apps", "replicasets"), ("", "pods")] {
            let r = self.builtin(g, p);
            for o in self.store.list(&r, Some(ns)).0 {
                let refs = o.pointer("/metadata/ownerReferences").and_then(Value::as_array);
                if !refs.is_some_and(|refs| refs.iter().any(|x| s(x, "/uid") == uid)) {
                    continue;
                }
                let name = s(&o, "/metadata/name").to_string();
                if orphan {
                    let mut o = o.clone();
                    if let Some(refs) = o.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                        refs.retain(|x| s(x, "/uid") != uid);
                    }
                    self.controller_update(&r, ns, o);
                } else {
                    let _ = self.persist_delete(&r, ns, &name, &Preconditions::default(), Propagation::Background);
                }
            }
        }
    }

    /// Records an event about `about` (from `component`).
    pub(crate) fn event(&self, about: &Value, kind: &str, reason: &str, message: String, component: &str) {
        let events = self.builtin("", "events");
        let ns = s(about, "/metadata/namespace");
        let ns = if ns.is_empty() { "default" } else { ns };
        let name = s(about, "/metadata/name");
        let now = now_rfc3339();
        let ev = json!({
            "metadata": {"generateName": format!("{name}.")},
            "involvedObject": {"kind": s(about, "/kind"), "namespace": s(about, "/metadata/namespace"), "name": name,
                               "uid": s(about, "/metadata/uid"), "apiVersion": s(about, "/apiVersion"),
                               "resourceVersion": s(about, "/metadata/resourceVersion")},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "reportingComponent": component,
            "source": {"component": component},
        });
        let _ = self.store.create(&events, ns, ev);
    }

    fn pod_events(&self, ns: &str, pod: &Value) {
        let Some(events) = self.resource_by_plural("events") else { return };
        let name = s(pod, "/metadata/name");
        let node = s(pod, "/spec/nodeName");
        if node.is_empty() {
            return;
        }
        let now = now_rfc3339();
        let mut all = vec![("Scheduled", format!("Successfully assigned {ns}/{name} to {node}"), "default-scheduler")];
        for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
            let (cname, image) = (s(c, "/name"), s(c, "/image"));
            all.push(("Pulled", format!("Container image \"{image}\" already present on machine"), "kubelet"));
            all.push(("Created", format!("Created container: {cname}"), "kubelet"));
            all.push(("Started", format!("Started container {cname}"), "kubelet"));
        }
        for (reason, message, component) in all {
            let mut source = json!({"component": component});
            if component == "kubelet" {
                source["host"] = json!(node);
            }
            let ev = json!({
                "metadata": {"generateName": format!("{name}.")},
                "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": s(pod, "/metadata/uid"), "apiVersion": "v1"},
                "reason": reason, "message": message, "type": "Normal", "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": source,
            });
            let _ = self.store.create(&events, ns, ev);
        }
    }
}

/// The scheduler and the kubelet.
impl Cluster {
    /// Nodes a pod may go to: Ready, and schedulable unless the pod
    /// tolerates `node.kubernetes.io/unschedulable`. `None` when the cluster
    /// has no Node objects at all (an empty kube-sim still runs pods).
    fn candidate_nodes(&self, pod: &Value) -> Option<Vec<Value>> {
        let nodes = self.store.list(&self.builtin("", "nodes"), None).0;
        if nodes.is_empty() {
            return None;
        }
        let tolerates = pod.pointer("/spec/tolerations").and_then(Value::as_array).is_some_and(|ts| {
            ts.iter().any(|t| {
                (s(t, "/key") == "node.kubernetes.io/unschedulable" || s(t, "/key").is_empty())
                    && s(t, "/operator") == "Exists"
            })
        });
        let ready = |n: &Value| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_none_or(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True"))
        };
        let unschedulable = |n: &Value| n.pointer("/spec/unschedulable") == Some(&json!(true));
        Some(nodes.into_iter().filter(|n| ready(n) && (tolerates || !unschedulable(n))).collect())
    }

    /// The node with the fewest pods among the candidates (ties: by name).
    fn pick_node(&self, candidates: &[Value]) -> Option<Value> {
        let pods = self.store.list(&self.builtin("", "pods"), None).0;
        candidates
            .iter()
            .min_by_key(|n| {
                let name = s(n, "/metadata/name");
                (pods.iter().filter(|p| s(p, "/spec/nodeName") == name).count(), name.to_string())
            })
            .cloned()
    }

    /// Schedules `pod` and, once on a node, runs it (every container
    /// started and ready at once). Without a fitting node it stays Pending.
    fn start_pod(&self, pod: &mut Value) {
        if !pod.get("spec").is_some_and(Value::is_object) {
            pod["spec"] = json!({});
        }
        let mut host_ip = "10.0.0.10".to_string();
        let assigned = s(pod, "/spec/nodeName").to_string();
        let nodes = self.store.list(&self.builtin("", "nodes"), None).0;
        let ip_of = |n: &Value| {
            n.pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| s(x, "/type") == "InternalIP"))
                .map(|x| s(x, "/address").to_string())
        };
        if assigned.is_empty() {
            match self.candidate_nodes(pod) {
                None => pod["spec"]["nodeName"] = json!("sim-node-1"),
                Some(candidates) => match self.pick_node(&candidates) {
                    Some(node) => {
                        pod["spec"]["nodeName"] = json!(s(&node, "/metadata/name"));
                        host_ip = ip_of(&node).unwrap_or(host_ip);
                    }
                    None => {
                        let n = nodes.len();
                        let cordoned =
                            nodes.iter().filter(|x| x.pointer("/spec/unschedulable") == Some(&json!(true))).count();
                        pod["status"] = json!({
                            "phase": "Pending", "qosClass": qos_class(pod),
                            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "lastProbeTime": null, "lastTransitionTime": now_rfc3339(),
                                "message": format!("0/{n} nodes are available: {cordoned} node(s) were unschedulable. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.")}],
                        });
                        return;
                    }
                },
            }
        } else if let Some(node) = nodes.iter().find(|n| s(n, "/metadata/name") == assigned) {
            host_ip = ip_of(node).unwrap_or(host_ip);
        }
        run_pod(pod, &host_ip);
    }

    /// Pending pods without a node get one if one fits now.
    fn schedule_pending(&self) {
        let pods = self.builtin("", "pods");
        for p in self.store.list(&pods, None).0 {
            if !s(&p, "/spec/nodeName").is_empty() || s(&p, "/status/phase") != "Pending" {
                continue;
            }
            let mut p2 = p.clone();
            self.start_pod(&mut p2);
            if !s(&p2, "/spec/nodeName").is_empty() {
                let ns = s(&p, "/metadata/namespace").to_string();
                if let Some(placed) = self.controller_update(&pods, &ns, p2) {
                    self.pod_events(&ns, &placed);
                }
            }
        }
    }

    /// The node lifecycle controller's taint for cordoned nodes.
    fn reconcile_node(&self, name: &str) {
        let nodes = self.builtin("", "nodes");
        let Ok(node) = self.store.get(&nodes, "", name) else { return };
        let cordoned = node.pointer("/spec/unschedulable") == Some(&json!(true));
        let key = "node.kubernetes.io/unschedulable";
        let mut taints = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
        let has = taints.iter().any(|t| s(t, "/key") == key);
        if cordoned == has {
            return;
        }
        if cordoned {
            taints.push(json!({"key": key, "effect": "NoSchedule", "timeAdded": now_rfc3339()}));
        } else {
            taints.retain(|t| s(t, "/key") != key);
        }
        let mut updated = node.clone();
        if taints.is_empty() {
            if let Some(spec) = updated.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("taints");
            }
        } else {
            updated["spec"]["taints"] = json!(taints);
        }
        self.controller_update(&nodes, "", updated);
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// `qos.GetPodQOS`, roughly: Guaranteed when every container's limits are
/// its requests, Burstable with any resources, else BestEffort.
fn qos_class(pod: &Value) -> &'static str {
    let cs = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let any = cs.iter().any(|c| {
        c.pointer("/resources/requests").is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty()))
            || c.pointer("/resources/limits").is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty()))
    });
    let guaranteed = !cs.is_empty()
        && cs.iter().all(|c| {
            let limits = c.pointer("/resources/limits").and_then(Value::as_object);
            limits.is_some_and(|l| {
                l.contains_key("cpu")
                    && l.contains_key("memory")
                    && c.pointer("/resources/requests")
                        .is_none_or(|r| r.as_object().is_none_or(|req| req.iter().all(|(k, v)| l.get(k) == Some(v))))
            })
        });
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// The simulated kubelet: the pod runs at once on its node.
fn run_pod(pod: &mut Value, host_ip: &str) {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let now = now_rfc3339();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let image_ref = if image.contains('/') { image.to_string() } else { format!("docker.io/library/{image}") };
            json!({"name": c.get("name").cloned().unwrap_or(json!("main")), "image": image, "imageID": format!("{image_ref}@sha256:{:016x}{:016x}", fnv(image), fnv(&image_ref)),
                   "containerID": format!("containerd://{:016x}{:016x}", fnv(&now), fnv(&pod.to_string())),
                   "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}, "lastState": {}})
        })
        .collect();
    let seed = fnv(&format!("{}{}", pod, uuid::Uuid::new_v4()));
    let ip = format!("10.244.{}.{}", seed % 200 + 1, (seed >> 8) % 250 + 2);
    let condition = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    pod["status"] = json!({
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "startTime": now,
        "qosClass": qos_class(pod),
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
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
