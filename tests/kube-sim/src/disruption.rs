//! PodDisruptionBudgets and the `pods/eviction` subresource, after the
//! disruption controller and `pkg/registry/core/pod/storage/eviction.go`:
//! an eviction deletes the pod unless the one budget that selects it allows
//! no disruption (429 TooManyRequests), more than one budget selects it
//! (500), or the pod is not running (then it is deleted without a check).

use serde_json::{Value, json};

use crate::cluster::{Cluster, DeleteOptions, controller_of, int, s};
use crate::error::ApiError;
use crate::selector::Selector;
use crate::store::now_rfc3339;

/// `metav1.LabelSelector` as a selector; `None` when it selects nothing
/// (a budget with an empty selector matches no pod).
fn label_selector(sel: Option<&Value>) -> Option<Selector> {
    let sel = sel?;
    let mut terms: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        terms.extend(m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = s(e, "/key");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        terms.push(match s(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    if terms.is_empty() {
        return None;
    }
    Selector::parse(&terms.join(",")).ok()
}

fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True"))
}

fn scaled(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(p) => {
            let pct: i64 = p.trim_end_matches('%').parse().unwrap_or(0);
            if round_up { (pct * total + 99) / 100 } else { pct * total / 100 }
        }
        _ => 0,
    }
}

impl Cluster {
    /// The pods a budget selects (not being deleted).
    fn budget_pods(&self, pdb: &Value) -> Vec<Value> {
        let Some(sel) = label_selector(pdb.pointer("/spec/selector")) else { return Vec::new() };
        let ns = s(pdb, "/metadata/namespace");
        self.store
            .list(&self.builtin("", "pods"), Some(ns))
            .0
            .into_iter()
            .filter(|p| sel.matches_labels(p) && p.pointer("/metadata/deletionTimestamp").is_none())
            .collect()
    }

    /// The replicas the pods' controllers want (for `maxUnavailable` and
    /// percentages), as the disruption controller reads their scale.
    fn expected_pods(&self, ns: &str, pods: &[Value]) -> i64 {
        let mut seen: Vec<String> = Vec::new();
        let mut total = 0;
        for p in pods {
            let Some((kind, name, uid)) = controller_of(p) else {
                total += 1;
                continue;
            };
            if seen.contains(&uid) {
                continue;
            }
            seen.push(uid);
            let plural = match kind.as_str() {
                "ReplicaSet" => "replicasets",
                "StatefulSet" => "statefulsets",
                _ => {
                    total += 1;
                    continue;
                }
            };
            let r = self.builtin("apps", plural);
            total += self.store.get(&r, ns, &name).map(|o| int(&o, "/spec/replicas", 1)).unwrap_or(0);
        }
        total
    }

    /// The status the disruption controller gives `pdb` now.
    fn budget_status(&self, pdb: &Value) -> Value {
        let ns = s(pdb, "/metadata/namespace");
        let pods = self.budget_pods(pdb);
        let healthy = pods.iter().filter(|p| ready(p)).count() as i64;
        let (expected, desired) = match (pdb.pointer("/spec/minAvailable"), pdb.pointer("/spec/maxUnavailable")) {
            (Some(Value::Number(n)), _) => (pods.len() as i64, n.as_i64().unwrap_or(0)),
            (Some(pct), _) => {
                let e = self.expected_pods(ns, &pods);
                (e, scaled(pct, e, true))
            }
            (None, Some(max)) => {
                let e = self.expected_pods(ns, &pods);
                (e, (e - scaled(max, e, true)).max(0))
            }
            (None, None) => (pods.len() as i64, pods.len() as i64),
        };
        let allowed = (healthy - desired).max(0);
        let now = now_rfc3339();
        let (status, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
        let prev = pdb
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "DisruptionAllowed"))
            .filter(|c| s(c, "/status") == status)
            .map(|c| s(c, "/lastTransitionTime").to_string());
        let generation = int(pdb, "/metadata/generation", 1);
        json!({
            "observedGeneration": generation, "disruptionsAllowed": allowed, "currentHealthy": healthy,
            "desiredHealthy": desired, "expectedPods": expected,
            "conditions": [{"type": "DisruptionAllowed", "status": status, "reason": reason, "message": "",
                            "observedGeneration": generation, "lastTransitionTime": prev.unwrap_or(now)}],
        })
    }

    /// The disruption controller for the budgets of `ns`.
    pub(crate) fn reconcile_budgets(&self, ns: &str) {
        let r = self.builtin("policy", "poddisruptionbudgets");
        for pdb in self.store.list(&r, Some(ns)).0 {
            let status = self.budget_status(&pdb);
            if pdb.get("status") != Some(&status) {
                let mut updated = pdb.clone();
                updated["status"] = status;
                self.controller_update(&r, ns, updated);
            }
        }
    }

    /// Evicts pod `ns/name` (the `pods/eviction` subresource).
    pub fn evict(&self, ns: &str, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
        let pods = self.builtin("", "pods");
        let pod = self.store.get(&pods, ns, name)?;
        let phase = s(&pod, "/status/phase");
        let terminal =
            matches!(phase, "Succeeded" | "Failed" | "Pending") || pod.pointer("/metadata/deletionTimestamp").is_some();
        if !terminal {
            let r = self.builtin("policy", "poddisruptionbudgets");
            let budgets: Vec<Value> = self
                .store
                .list(&r, Some(ns))
                .0
                .into_iter()
                .filter(|b| label_selector(b.pointer("/spec/selector")).is_some_and(|sel| sel.matches_labels(&pod)))
                .collect();
            if budgets.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some(pdb) = budgets.first() {
                let status = self.budget_status(pdb);
                let pdb_name = s(pdb, "/metadata/name");
                if int(&status, "/disruptionsAllowed", 0) == 0
                    && (ready(&pod) || int(&status, "/desiredHealthy", 0) > int(&status, "/currentHealthy", 0))
                {
                    return Err(ApiError::too_many_requests(
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        0,
                        (
                            "DisruptionBudget",
                            format!(
                                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                                int(&status, "/desiredHealthy", 0),
                                int(&status, "/currentHealthy", 0)
                            ),
                        ),
                    ));
                }
                if !opts.dry_run {
                    let mut updated = pdb.clone();
                    let mut st = status;
                    st["disruptionsAllowed"] = json!((int(&st, "/disruptionsAllowed", 0) - 1).max(0));
                    st["disruptedPods"] = json!({name: now_rfc3339()});
                    updated["status"] = st;
                    self.controller_update(&r, ns, updated);
                }
            }
        }
        self.delete_with(&pods, ns, name, opts)?;
        Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
    }
}
