//! The workload controllers, after kube-controller-manager's: Deployments
//! own one ReplicaSet per pod template (`<deployment>-<pod-template-hash>`,
//! with the `deployment.kubernetes.io/revision` annotations `kubectl
//! rollout history` and `undo` read), ReplicaSets own their pods, a
//! DaemonSet runs one pod per node, a StatefulSet runs `<name>-<ordinal>`.
//! Rollouts complete at once: the new ReplicaSet is scaled up and the old
//! ones down to zero in one pass, and the statuses follow.

use serde_json::{Value, json};

use crate::cluster::{Cluster, Propagation, controller_of, int, owner_ref, s};
use crate::store::{ALPHANUMS, Preconditions, now_rfc3339};

/// The label that ties a ReplicaSet and its pods to one pod template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision of a Deployment (and of each of its ReplicaSets).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had, comma-separated.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Replicas plus max surge.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations the controller never copies from a Deployment to its ReplicaSets.
const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    t
}

/// The `pod-template-hash` of a template: an FNV-32a of the template, its
/// decimal digits spelled with `rand.SafeEncodeString`'s alphabet, as
/// `controller.ComputeHash` spells it (so names look like `api-7d9f8c6b5`).
pub fn pod_template_hash(template: &Value) -> String {
    let canonical = serde_json::to_vec(&without_hash(template)).unwrap_or_default();
    fnv32a(&canonical).to_string().bytes().map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()])).collect()
}

fn same_template(a: Option<&Value>, b: &Value) -> bool {
    a.is_some_and(|a| without_hash(a) == without_hash(b))
}

fn annotation<'a>(o: &'a Value, key: &str) -> &'a str {
    o.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str).unwrap_or("")
}

fn set_annotation(o: &mut Value, key: &str, v: &str) {
    if !o.pointer("/metadata/annotations").is_some_and(Value::is_object) {
        o["metadata"]["annotations"] = json!({});
    }
    o["metadata"]["annotations"][key] = json!(v);
}

/// The revision a ReplicaSet carries (0 when none).
pub fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION).parse().unwrap_or(0)
}

/// A count or percentage (`intstr`) of `total`, rounded up or down.
fn scaled(v: Option<&Value>, total: i64, default: &str, round_up: bool) -> i64 {
    match v.cloned().unwrap_or_else(|| json!(default)) {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(p) => {
            let pct: i64 = p.trim_end_matches('%').parse().unwrap_or(0);
            if round_up { (pct * total + 99) / 100 } else { pct * total / 100 }
        }
        _ => 0,
    }
}

fn pod_from_template(template: &Value, generate_name: &str, owner: &Value) -> Value {
    let mut meta = json!({"generateName": generate_name, "ownerReferences": [owner_ref(owner)]});
    for k in ["labels", "annotations"] {
        if let Some(v) =
            template.pointer(&format!("/metadata/{k}")).filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
        {
            meta[k] = v.clone();
        }
    }
    json!({"metadata": meta, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True"))
}

/// A condition, keeping the old timestamps when nothing about it changed.
fn condition(old: &Value, kind: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    let prev = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| s(c, "/type") == kind))
        .cloned();
    let transition = prev
        .as_ref()
        .filter(|p| s(p, "/status") == status)
        .map_or(now.to_string(), |p| s(p, "/lastTransitionTime").to_string());
    let update = prev
        .as_ref()
        .filter(|p| s(p, "/status") == status && s(p, "/reason") == reason && s(p, "/message") == message)
        .map_or(now.to_string(), |p| s(p, "/lastUpdateTime").to_string());
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": update, "lastTransitionTime": transition})
}

/// Drops zero counts, as the `omitempty` status fields of the API types do.
fn omit_zeros(status: &mut Value, keep: &[&str]) {
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| keep.contains(&k.as_str()) || v.as_i64() != Some(0));
    }
}

impl Cluster {
    /// The deployment controller.
    pub(crate) fn reconcile_deployment(&self, ns: &str, name: &str) {
        let (dr, rsr) = (self.builtin("apps", "deployments"), self.builtin("apps", "replicasets"));
        let Ok(d) = self.store.get(&dr, ns, name) else { return };
        let uid = s(&d, "/metadata/uid").to_string();
        let replicas = int(&d, "/spec/replicas", 1).max(0);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let surge = scaled(d.pointer("/spec/strategy/rollingUpdate/maxSurge"), replicas, "25%", true);
        let owned = self.controlled_by(&rsr, ns, &uid);
        let max_rev = owned.iter().map(revision).max().unwrap_or(0);
        let paused = d.pointer("/spec/paused") == Some(&json!(true));
        let existing = owned.iter().find(|rs| same_template(rs.pointer("/spec/template"), &template)).cloned();
        let new_rs = match existing {
            Some(rs) if paused => Some(rs),
            Some(rs) => {
                let mut want = rs.clone();
                let rev = revision(&rs);
                if rev < max_rev {
                    // An older template is current again (a rollback): it
                    // becomes the newest revision, remembering the old number.
                    let mut history: Vec<String> = annotation(&rs, REVISION_HISTORY)
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect();
                    history.push(rev.to_string());
                    set_annotation(&mut want, REVISION, &(max_rev + 1).to_string());
                    set_annotation(&mut want, REVISION_HISTORY, &history.join(","));
                }
                let cause = annotation(&d, "kubernetes.io/change-cause").to_string();
                if !cause.is_empty() {
                    set_annotation(&mut want, "kubernetes.io/change-cause", &cause);
                }
                self.scale_replicaset(&rsr, ns, &d, want, replicas, surge)
            }
            None if paused => None,
            None => self.new_replicaset(&d, &template, max_rev + 1, replicas, surge),
        };
        let new_name = new_rs.as_ref().map(|rs| s(rs, "/metadata/name").to_string()).unwrap_or_default();
        for old in owned.iter().filter(|rs| s(rs, "/metadata/name") != new_name) {
            if int(old, "/spec/replicas", 1) != 0 && !paused {
                self.scale_replicaset(&rsr, ns, &d, old.clone(), 0, surge);
            }
        }
        // Old ReplicaSets beyond revisionHistoryLimit go, oldest first.
        let limit = int(&d, "/spec/revisionHistoryLimit", 10).max(0) as usize;
        let mut old: Vec<Value> = self
            .controlled_by(&rsr, ns, &uid)
            .into_iter()
            .filter(|rs| s(rs, "/metadata/name") != new_name && int(rs, "/spec/replicas", 1) == 0)
            .collect();
        old.sort_by_key(revision);
        while old.len() > limit {
            let rs = old.remove(0);
            let _ = self.persist_delete(
                &rsr,
                ns,
                s(&rs, "/metadata/name"),
                &Preconditions::default(),
                Propagation::Background,
            );
        }
        self.deployment_status(&d, new_rs.as_ref(), replicas);
    }

    fn new_replicaset(&self, d: &Value, template: &Value, rev: i64, replicas: i64, surge: i64) -> Option<Value> {
        let rsr = self.builtin("apps", "replicasets");
        let (ns, dname) = (s(d, "/metadata/namespace").to_string(), s(d, "/metadata/name"));
        let hash = pod_template_hash(template);
        let mut t = template.clone();
        t["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
        let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
        selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
        let mut annotations = json!({});
        if let Some(a) = d.pointer("/metadata/annotations").and_then(Value::as_object) {
            for (k, v) in a.iter().filter(|(k, _)| !SKIPPED_ANNOTATIONS.contains(&k.as_str())) {
                annotations[k] = v.clone();
            }
        }
        annotations[REVISION] = json!(rev.to_string());
        annotations[DESIRED_REPLICAS] = json!(replicas.to_string());
        annotations[MAX_REPLICAS] = json!((replicas + surge).to_string());
        let mut spec = json!({"replicas": replicas, "selector": selector, "template": t});
        if let Some(m) = d.pointer("/spec/minReadySeconds") {
            spec["minReadySeconds"] = m.clone();
        }
        let rs = json!({
            "metadata": {"name": format!("{dname}-{hash}"), "labels": t["metadata"]["labels"].clone(),
                         "annotations": annotations, "ownerReferences": [owner_ref(d)]},
            "spec": spec,
        });
        match self.persist_create(&rsr, &ns, rs) {
            Ok(rs) => {
                self.event(
                    d,
                    "Normal",
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {} from 0 to {replicas}", s(&rs, "/metadata/name")),
                    "deployment-controller",
                );
                Some(rs)
            }
            Err(e) => {
                tracing::debug!(error = %e.message, "new replica set not created");
                None
            }
        }
    }

    fn scale_replicaset(
        &self,
        rsr: &crate::resources::Resource,
        ns: &str,
        d: &Value,
        mut rs: Value,
        replicas: i64,
        surge: i64,
    ) -> Option<Value> {
        let before = rs.clone();
        let from = int(&rs, "/spec/replicas", 1);
        rs["spec"]["replicas"] = json!(replicas);
        if replicas > 0 {
            set_annotation(&mut rs, DESIRED_REPLICAS, &replicas.to_string());
            set_annotation(&mut rs, MAX_REPLICAS, &(replicas + surge).to_string());
        }
        if rs == before {
            return Some(rs);
        }
        let updated = self.controller_update(rsr, ns, rs)?;
        if from != replicas {
            let verb = if replicas > from { "up" } else { "down" };
            self.event(
                d,
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled {verb} replica set {} from {from} to {replicas}", s(&updated, "/metadata/name")),
                "deployment-controller",
            );
        }
        Some(updated)
    }

    fn deployment_status(&self, d: &Value, new_rs: Option<&Value>, replicas: i64) {
        let dr = self.builtin("apps", "deployments");
        let rsr = self.builtin("apps", "replicasets");
        let ns = s(d, "/metadata/namespace");
        let all = self.controlled_by(&rsr, ns, s(d, "/metadata/uid"));
        let sum = |p: &str| all.iter().map(|rs| int(rs, p, 0)).sum::<i64>();
        let new_name = new_rs.map(|rs| s(rs, "/metadata/name").to_string()).unwrap_or_default();
        let current_new = all.iter().find(|rs| s(rs, "/metadata/name") == new_name);
        let updated = current_new.map_or(0, |rs| int(rs, "/status/replicas", 0));
        let new_available = current_new.map_or(0, |rs| int(rs, "/status/availableReplicas", 0));
        let (total, ready_n, available) =
            (sum("/status/replicas"), sum("/status/readyReplicas"), sum("/status/availableReplicas"));
        let max_unavailable = scaled(d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"), replicas, "25%", false);
        let now = now_rfc3339();
        let (avail_status, avail_reason, avail_msg) = if available >= replicas - max_unavailable {
            ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        } else {
            ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        };
        let complete = updated == replicas && new_available == replicas && total == replicas;
        let (prog_reason, prog_msg) = if complete {
            ("NewReplicaSetAvailable", format!("ReplicaSet \"{new_name}\" has successfully progressed."))
        } else {
            ("ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."))
        };
        let mut status = json!({
            "observedGeneration": int(d, "/metadata/generation", 1),
            "replicas": total, "updatedReplicas": updated, "readyReplicas": ready_n, "availableReplicas": available,
            "unavailableReplicas": (replicas - available).max(0),
        });
        omit_zeros(&mut status, &[]);
        status["conditions"] = json!([
            condition(d, "Available", avail_status, avail_reason, avail_msg, &now),
            condition(d, "Progressing", "True", prog_reason, &prog_msg, &now),
        ]);
        let mut want = d.clone();
        want["status"] = status;
        if let Some(rs) = new_rs {
            set_annotation(&mut want, REVISION, annotation(rs, REVISION));
        }
        if want != *d {
            self.controller_update(&dr, ns, want);
        }
    }

    /// The ReplicaSet controller.
    pub(crate) fn reconcile_replicaset(&self, ns: &str, name: &str) {
        let (rsr, pods) = (self.builtin("apps", "replicasets"), self.builtin("", "pods"));
        let Ok(rs) = self.store.get(&rsr, ns, name) else { return };
        let want = int(&rs, "/spec/replicas", 1).max(0) as usize;
        let mut have = self.controlled_by(&pods, ns, s(&rs, "/metadata/uid"));
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        while have.len() < want {
            match self.persist_create(&pods, ns, pod_from_template(&template, &format!("{name}-"), &rs)) {
                Ok(p) => {
                    self.event(
                        &rs,
                        "Normal",
                        "SuccessfulCreate",
                        format!("Created pod: {}", s(&p, "/metadata/name")),
                        "replicaset-controller",
                    );
                    have.push(p);
                }
                Err(e) => {
                    tracing::debug!(error = %e.message, "pod not created");
                    break;
                }
            }
        }
        if have.len() > want {
            // Unscheduled first, then not ready, then the newest.
            have.sort_by_key(|p| {
                (
                    !s(p, "/spec/nodeName").is_empty(),
                    ready(p),
                    std::cmp::Reverse(s(p, "/metadata/creationTimestamp").to_string()),
                )
            });
            for p in have.drain(..have.len() - want) {
                let pname = s(&p, "/metadata/name").to_string();
                if self.persist_delete(&pods, ns, &pname, &Preconditions::default(), Propagation::Background).is_ok() {
                    self.event(
                        &rs,
                        "Normal",
                        "SuccessfulDelete",
                        format!("Deleted pod: {pname}"),
                        "replicaset-controller",
                    );
                }
            }
        }
        let n = have.len() as i64;
        let ready_n = have.iter().filter(|p| ready(p)).count() as i64;
        let mut status = json!({"replicas": n, "fullyLabeledReplicas": n, "readyReplicas": ready_n,
            "availableReplicas": ready_n, "observedGeneration": int(&rs, "/metadata/generation", 1)});
        omit_zeros(&mut status, &["replicas"]);
        if rs.get("status") != Some(&status) {
            let mut updated = rs.clone();
            updated["status"] = status;
            self.controller_update(&rsr, ns, updated);
        }
    }

    /// The DaemonSet controller: one pod per node, replaced when the
    /// template changes; daemon pods tolerate cordoned nodes.
    pub(crate) fn reconcile_daemonset(&self, ns: &str, name: &str) {
        let (dsr, pods) = (self.builtin("apps", "daemonsets"), self.builtin("", "pods"));
        let Ok(ds) = self.store.get(&dsr, ns, name) else { return };
        let nodes = self.store.list(&self.builtin("", "nodes"), None).0;
        let node_names: Vec<String> = nodes.iter().map(|n| s(n, "/metadata/name").to_string()).collect();
        let mut template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = pod_template_hash(&template);
        let generation = int(&ds, "/metadata/generation", 1);
        template["metadata"]["labels"]["controller-revision-hash"] = json!(hash);
        template["metadata"]["labels"]["pod-template-generation"] = json!(generation.to_string());
        let tolerations = template.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut tolerations = tolerations;
        for (key, effect) in [
            ("node.kubernetes.io/not-ready", "NoExecute"),
            ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ] {
            if !tolerations.iter().any(|t| s(t, "/key") == key) {
                tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
            }
        }
        template["spec"]["tolerations"] = json!(tolerations);
        let have = self.controlled_by(&pods, ns, s(&ds, "/metadata/uid"));
        let mut kept = Vec::new();
        for p in have {
            let stale = s(&p, "/metadata/labels/controller-revision-hash") != hash;
            let elsewhere = !node_names.iter().any(|n| n == s(&p, "/spec/nodeName"));
            let duplicate = kept.iter().any(|k: &Value| s(k, "/spec/nodeName") == s(&p, "/spec/nodeName"));
            if stale || elsewhere || duplicate {
                let _ = self.persist_delete(
                    &pods,
                    ns,
                    s(&p, "/metadata/name"),
                    &Preconditions::default(),
                    Propagation::Background,
                );
            } else {
                kept.push(p);
            }
        }
        for node in &node_names {
            if kept.iter().any(|p| s(p, "/spec/nodeName") == node) {
                continue;
            }
            let mut pod = pod_from_template(&template, &format!("{name}-"), &ds);
            pod["spec"]["nodeName"] = json!(node);
            match self.persist_create(&pods, ns, pod) {
                Ok(p) => {
                    self.event(
                        &ds,
                        "Normal",
                        "SuccessfulCreate",
                        format!("Created pod: {}", s(&p, "/metadata/name")),
                        "daemonset-controller",
                    );
                    kept.push(p);
                }
                Err(e) => tracing::debug!(error = %e.message, "daemon pod not created"),
            }
        }
        let n = kept.len() as i64;
        let ready_n = kept.iter().filter(|p| ready(p)).count() as i64;
        let status = json!({"currentNumberScheduled": n, "desiredNumberScheduled": node_names.len(),
            "numberAvailable": ready_n, "numberMisscheduled": 0, "numberReady": ready_n,
            "observedGeneration": generation, "updatedNumberScheduled": n});
        if ds.get("status") != Some(&status) {
            let mut updated = ds.clone();
            updated["status"] = status;
            self.controller_update(&dsr, ns, updated);
        }
    }

    /// The StatefulSet controller: pods `<name>-0` … `<name>-<n-1>` from the
    /// template, each with its volume claims (`<claim>-<name>-<i>`) as
    /// `persistentVolumeClaim` volumes; pods beyond `replicas` go away.
    pub(crate) fn reconcile_statefulset(&self, ns: &str, name: &str) {
        let (r, pods) = (self.builtin("apps", "statefulsets"), self.builtin("", "pods"));
        let Ok(set) = self.store.get(&r, ns, name) else { return };
        let want = int(&set, "/spec/replicas", 1).max(0) as usize;
        let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = pod_template_hash(&template);
        let claims = set.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array).cloned().unwrap_or_default();
        let have = self.controlled_by(&pods, ns, s(&set, "/metadata/uid"));
        for p in &have {
            let ordinal = s(p, "/metadata/name").rsplit('-').next().and_then(|o| o.parse::<usize>().ok());
            if ordinal.is_none_or(|o| o >= want) {
                let _ = self.persist_delete(
                    &pods,
                    ns,
                    s(p, "/metadata/name"),
                    &Preconditions::default(),
                    Propagation::Background,
                );
            }
        }
        for i in 0..want {
            let pod_name = format!("{name}-{i}");
            if self.store.get(&pods, ns, &pod_name).is_ok() {
                continue;
            }
            let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
            if !spec.get("volumes").is_some_and(Value::is_array) && !claims.is_empty() {
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
                    "ownerReferences": [owner_ref(&set)],
                },
                "spec": spec,
            });
            pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
            pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!(i.to_string());
            pod["metadata"]["labels"]["controller-revision-hash"] = json!(format!("{name}-{hash}"));
            pod["spec"]["hostname"] = json!(pod_name);
            if let Some(svc) = set.pointer("/spec/serviceName").and_then(Value::as_str).filter(|x| !x.is_empty()) {
                pod["spec"]["subdomain"] = json!(svc);
            }
            if self.persist_create(&pods, ns, pod).is_err() {
                break;
            }
        }
        let have = self.controlled_by(&pods, ns, s(&set, "/metadata/uid"));
        let n = have.len() as i64;
        let ready_n = have.iter().filter(|p| ready(p)).count() as i64;
        let mut status = json!({"replicas": n, "readyReplicas": ready_n, "currentReplicas": n, "updatedReplicas": n,
            "availableReplicas": ready_n, "observedGeneration": int(&set, "/metadata/generation", 1),
            "currentRevision": format!("{name}-{hash}"), "updateRevision": format!("{name}-{hash}"), "collisionCount": 0});
        omit_zeros(&mut status, &["replicas", "availableReplicas", "collisionCount"]);
        if set.get("status") != Some(&status) {
            let mut updated = set.clone();
            updated["status"] = status;
            self.controller_update(&r, ns, updated);
        }
    }
}

/// Whether `pod` is controlled by a DaemonSet.
pub fn daemon_pod(pod: &Value) -> bool {
    controller_of(pod).is_some_and(|(kind, _, _)| kind == "DaemonSet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hashes_look_like_the_controllers() {
        let t =
            json!({"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "main", "image": "x:1"}]}});
        let h = pod_template_hash(&t);
        assert!((8..=10).contains(&h.len()), "{h}");
        assert!(h.chars().all(|c| "456789bcdf".contains(c)), "{h}");
        let mut labelled = t.clone();
        labelled["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(h.clone());
        assert_eq!(pod_template_hash(&labelled), h, "the hash label does not change the hash");
        let mut other = t;
        other["spec"]["containers"][0]["image"] = json!("x:2");
        assert_ne!(pod_template_hash(&other), h);
    }

    #[test]
    fn percentages_scale_like_intstr() {
        assert_eq!(scaled(Some(&json!("25%")), 3, "25%", true), 1);
        assert_eq!(scaled(Some(&json!("25%")), 3, "25%", false), 0);
        assert_eq!(scaled(Some(&json!(2)), 3, "25%", false), 2);
        assert_eq!(scaled(None, 8, "25%", false), 2);
    }
}
