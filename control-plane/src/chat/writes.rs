//! Commands that change the cluster, planned: the exact API requests they
//! will send (each guarded by the object's resourceVersion as it was read
//! now), run later only on a confirmation bound to them.

use http::Method;
use kubechat_chat::argv::{Command, Drain, KeyChange, ObjectRef, Rollout, Target};
use kubechat_chat::discovery::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Ctx;
use super::client::KubeError;
use super::reads::{self, query};

/// Most objects one command may change.
pub const MAX_OBJECTS: usize = 100;

/// One write a plan will send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteStep {
    /// HTTP method.
    pub method: String,
    /// Path and query (no `dryRun`).
    pub path: String,
    /// Content type of `body`.
    pub content_type: String,
    /// The body.
    pub body: Value,
    /// The object as it was read when planned; it must be unchanged when
    /// the plan runs.
    pub guard: Option<Guard>,
    /// What it does, for people.
    pub summary: String,
}

/// An object's state a write depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Guard {
    /// Where it is read.
    pub path: String,
    /// Its resourceVersion then ("": it did not exist).
    pub resource_version: String,
}

/// A planned change: its writes, and the objects they change as they are
/// now (for the dry run's diff).
#[derive(Debug, Default)]
pub struct Planned {
    /// The writes, in order.
    pub steps: Vec<WriteStep>,
    /// The object each step changes, as read now (`Null`: none yet).
    pub before: Vec<Value>,
    /// Notes (skipped pods, nothing to do).
    pub notes: Vec<String>,
    /// What a destructive command must have typed back.
    pub type_to_confirm: Option<String>,
}

impl Planned {
    fn push(&mut self, step: WriteStep, before: Value) {
        self.steps.push(step);
        self.before.push(before);
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn rv(v: &Value) -> String {
    s(v, "/metadata/resourceVersion").to_string()
}

fn guard(path: &str, obj: &Value) -> Option<Guard> {
    Some(Guard { path: path.to_string(), resource_version: rv(obj) })
}

const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// Plans a write command.
pub async fn plan(ctx: &Ctx, cmd: &Command, now_rfc3339: &str) -> Result<Planned, KubeError> {
    match cmd {
        Command::Scale { objects, replicas, current_replicas } => {
            scale(ctx, objects, *replicas, *current_replicas).await
        }
        Command::Rollout { rollout: Rollout::Restart, object } => restart(ctx, object, now_rfc3339).await,
        Command::Rollout { rollout: Rollout::Undo { to_revision }, object } => undo(ctx, object, *to_revision).await,
        Command::Delete { targets, selector, grace_period, cascade, .. } => {
            delete(ctx, targets, selector.as_deref(), *grace_period, cascade).await
        }
        Command::Cordon { node } => cordon(ctx, node, true).await,
        Command::Uncordon { node } => cordon(ctx, node, false).await,
        Command::Drain(d) => drain(ctx, d).await,
        Command::Label { targets, changes, overwrite, selector } => {
            keys(ctx, targets, changes, *overwrite, selector.as_deref(), "labels").await
        }
        Command::Annotate { targets, changes, overwrite, selector } => {
            keys(ctx, targets, changes, *overwrite, selector.as_deref(), "annotations").await
        }
        Command::Apply { manifest, server_side, force_conflicts } => {
            apply(ctx, manifest, *server_side, *force_conflicts).await
        }
        other => Err(KubeError::local(format!("{:?} is not a write", other.risk()))),
    }
}

fn invalid(message: impl Into<String>) -> KubeError {
    KubeError { code: 422, reason: "Invalid".into(), message: message.into() }
}

async fn scale(ctx: &Ctx, objects: &[ObjectRef], replicas: u32, current: Option<u32>) -> Result<Planned, KubeError> {
    let mut p = Planned::default();
    for o in objects {
        let ns = ctx.ns_for(&o.resource);
        let path = o.resource.object_path(ns.as_deref(), &o.name);
        let scale = ctx.client.get(&format!("{path}/scale")).await?;
        let now = scale["spec"]["replicas"].as_i64().unwrap_or(0);
        if let Some(c) = current
            && i64::from(c) != now
        {
            return Err(KubeError {
                code: 409,
                reason: "Conflict".into(),
                message: format!("Expected replicas to be {c}, was {now}"),
            });
        }
        let what = format!("{}/{}", o.resource.singular, o.name);
        let mut summary = format!("{what}: replicas {now} → {replicas}");
        if replicas == 0 && now > 0 {
            summary.push_str(&format!(" (stops all {now} of its pods)"));
        }
        let body = json!({"metadata": {"resourceVersion": rv(&scale)}, "spec": {"replicas": replicas}});
        p.push(
            WriteStep {
                method: "PATCH".into(),
                path: format!("{path}/scale"),
                content_type: MERGE.into(),
                body,
                guard: guard(&format!("{path}/scale"), &scale),
                summary,
            },
            scale,
        );
        if replicas == 0 {
            p.type_to_confirm = Some(o.name.clone());
        }
    }
    Ok(p)
}

async fn restart(ctx: &Ctx, o: &ObjectRef, now: &str) -> Result<Planned, KubeError> {
    let ns = ctx.ns_for(&o.resource);
    let path = o.resource.object_path(ns.as_deref(), &o.name);
    let d = ctx.client.get(&path).await?;
    if d["spec"]["paused"].as_bool() == Some(true) {
        return Err(invalid(format!("can't restart paused {} (run rollout resume first)", o.resource.singular)));
    }
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let body = json!({
        "metadata": {"resourceVersion": rv(&d)},
        "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}
    });
    let mut p = Planned::default();
    p.push(
        WriteStep {
            method: "PATCH".into(),
            path: path.clone(),
            content_type: STRATEGIC.into(),
            body,
            guard: guard(&path, &d),
            summary: format!(
                "{}/{}: restarts (replaces its {replicas} pods, one rollout)",
                o.resource.singular, o.name
            ),
        },
        d,
    );
    Ok(p)
}

async fn undo(ctx: &Ctx, o: &ObjectRef, to_revision: u64) -> Result<Planned, KubeError> {
    if o.resource.plural != "deployments" {
        return Err(invalid("rollout undo in chat rolls back deployments"));
    }
    let ns = ctx.ns_for(&o.resource);
    let path = o.resource.object_path(ns.as_deref(), &o.name);
    let d = ctx.client.get(&path).await?;
    let revs = reads::revisions(ctx, &d).await?;
    let current: u64 = s(&d, "/metadata/annotations/deployment.kubernetes.io~1revision").parse().unwrap_or(0);
    let target = if to_revision == 0 {
        revs.iter().rev().find(|(r, _)| *r < current.max(1)).or_else(|| revs.iter().rev().nth(1))
    } else {
        revs.iter().find(|(r, _)| *r == to_revision)
    };
    let Some((rev, rs)) = target else {
        return Err(KubeError {
            code: 404,
            reason: "NotFound".into(),
            message: if to_revision == 0 {
                "no rollout history found for deployment; there is no previous revision to go back to".into()
            } else {
                format!("unable to find specified revision {to_revision} in history")
            },
        });
    };
    let mut template = rs["spec"]["template"].clone();
    if let Some(l) = template["metadata"]["labels"].as_object_mut() {
        l.remove("pod-template-hash");
    }
    if template == d["spec"]["template"] {
        let mut p = Planned::default();
        p.notes.push(format!("skipped rollback (current template already matches revision {rev})"));
        return Ok(p);
    }
    let body = json!([
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv(&d)},
        {"op": "replace", "path": "/spec/template", "value": template}
    ]);
    let mut p = Planned::default();
    p.push(
        WriteStep {
            method: "PATCH".into(),
            path: path.clone(),
            content_type: JSON_PATCH.into(),
            body,
            guard: guard(&path, &d),
            summary: format!("{}/{}: rolls back to revision {rev}", o.resource.singular, o.name),
        },
        d,
    );
    p.type_to_confirm = Some(o.name.clone());
    Ok(p)
}

fn delete_options(obj: &Value, cascade: &str, grace: Option<i64>) -> Value {
    let policy = match cascade {
        "foreground" => "Foreground",
        "orphan" => "Orphan",
        _ => "Background",
    };
    let mut o = json!({
        "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy,
        "preconditions": {"uid": s(obj, "/metadata/uid"), "resourceVersion": rv(obj)}
    });
    if let Some(g) = grace {
        o["gracePeriodSeconds"] = json!(g);
    }
    o
}

async fn delete(
    ctx: &Ctx,
    targets: &[Target],
    selector: Option<&str>,
    grace: Option<i64>,
    cascade: &str,
) -> Result<Planned, KubeError> {
    let objects = reads::objects(ctx, targets, selector).await?;
    if objects.len() > MAX_OBJECTS {
        return Err(invalid(format!(
            "that deletes {} objects; chat deletes at most {MAX_OBJECTS} at once: narrow the selector",
            objects.len()
        )));
    }
    let mut p = Planned::default();
    if objects.is_empty() {
        p.notes.push("No resources found: nothing to delete".into());
        return Ok(p);
    }
    let mut by_kind: Vec<(String, usize)> = Vec::new();
    for (r, obj) in &objects {
        let name = s(obj, "/metadata/name");
        let ns = if r.namespaced { Some(s(obj, "/metadata/namespace").to_string()) } else { None };
        let path = r.object_path(ns.as_deref(), name);
        p.push(
            WriteStep {
                method: "DELETE".into(),
                path: path.clone(),
                content_type: "application/json".into(),
                body: delete_options(obj, cascade, grace),
                guard: guard(&path, obj),
                summary: format!("deletes {}/{name}", r.singular),
            },
            obj.clone(),
        );
        match by_kind.iter_mut().find(|(k, _)| *k == r.plural) {
            Some((_, n)) => *n += 1,
            None => by_kind.push((r.plural.clone(), 1)),
        }
    }
    p.type_to_confirm = Some(match objects.as_slice() {
        [(_, one)] => s(one, "/metadata/name").to_string(),
        _ => by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "),
    });
    Ok(p)
}

async fn cordon(ctx: &Ctx, node: &str, on: bool) -> Result<Planned, KubeError> {
    let path = format!("/api/v1/nodes/{node}");
    let n = ctx.client.get(&path).await?;
    let now = n["spec"]["unschedulable"].as_bool().unwrap_or(false);
    let mut p = Planned::default();
    if now == on {
        p.notes.push(format!("node/{node} already {}", if on { "cordoned" } else { "uncordoned" }));
        return Ok(p);
    }
    let body = json!({"metadata": {"resourceVersion": rv(&n)}, "spec": {"unschedulable": if on { json!(true) } else { Value::Null }}});
    p.push(
        WriteStep {
            method: "PATCH".into(),
            path: path.clone(),
            content_type: STRATEGIC.into(),
            body,
            guard: guard(&path, &n),
            summary: format!("node/{node}: {}", if on { "cordoned (no new pods)" } else { "uncordoned (schedulable)" }),
        },
        n,
    );
    Ok(p)
}

async fn drain(ctx: &Ctx, d: &Drain) -> Result<Planned, KubeError> {
    let mut p = cordon(ctx, &d.node, true).await?;
    let mut q = vec![("fieldSelector", Some(format!("spec.nodeName={}", d.node)))];
    if let Some(sel) = &d.selector {
        q.push(("labelSelector", Some(sel.clone())));
    }
    let pods = ctx.client.get(&format!("/api/v1/pods{}", query(&q))).await?;
    let mut problems = Vec::new();
    let mut skipped = Vec::new();
    let mut evict = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = format!("{}/{}", s(pod, "/metadata/namespace"), s(pod, "/metadata/name"));
        if !s(pod, "/metadata/annotations/kubernetes.io~1config.mirror").is_empty() {
            skipped.push(format!("{name} (mirror pod)"));
            continue;
        }
        let controller = pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["controller"].as_bool() == Some(true))
            .cloned();
        let finished = matches!(s(pod, "/status/phase"), "Succeeded" | "Failed");
        if controller.as_ref().is_some_and(|c| c["kind"] == "DaemonSet") {
            if d.ignore_daemonsets {
                skipped.push(format!("{name} (DaemonSet)"));
                continue;
            }
            problems.push(format!("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {name}"));
            continue;
        }
        if controller.is_none() && !finished && !d.force {
            problems.push(format!("cannot delete Pods that declare no controller (use --force to override): {name}"));
            continue;
        }
        let empty_dir = pod["spec"]["volumes"].as_array().into_iter().flatten().any(|v| v.get("emptyDir").is_some());
        if empty_dir && !d.delete_emptydir_data && !finished {
            problems.push(format!(
                "cannot delete Pods with local storage (use --delete-emptydir-data to override): {name}"
            ));
            continue;
        }
        evict.push(pod.clone());
    }
    if !problems.is_empty() {
        return Err(invalid(format!("cannot drain node {:?}: {}", d.node, problems.join("; "))));
    }
    if !skipped.is_empty() {
        p.notes.push(format!("ignoring: {}", skipped.join(", ")));
    }
    for pod in evict {
        let (ns, name) = (s(&pod, "/metadata/namespace"), s(&pod, "/metadata/name"));
        let mut delete_options = json!({"preconditions": {"uid": s(&pod, "/metadata/uid")}});
        if let Some(g) = d.grace_period {
            delete_options["gracePeriodSeconds"] = json!(g);
        }
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        p.push(
            WriteStep {
                method: "POST".into(),
                path: format!("{path}/eviction"),
                content_type: "application/json".into(),
                body: json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}, "deleteOptions": delete_options}),
                guard: guard(&path, &pod),
                summary: format!("evicts pod {ns}/{name}"),
            },
            pod.clone(),
        );
    }
    p.type_to_confirm = Some(d.node.clone());
    Ok(p)
}

async fn keys(
    ctx: &Ctx,
    targets: &[Target],
    changes: &[KeyChange],
    overwrite: bool,
    selector: Option<&str>,
    field: &str,
) -> Result<Planned, KubeError> {
    let objects = reads::objects(ctx, targets, selector).await?;
    if objects.len() > MAX_OBJECTS {
        return Err(invalid(format!("that changes {} objects; at most {MAX_OBJECTS} at once", objects.len())));
    }
    let what = if field == "labels" { "label" } else { "annotation" };
    let mut p = Planned::default();
    for (r, obj) in objects {
        let name = s(&obj, "/metadata/name").to_string();
        let current = obj["metadata"][field].as_object().cloned().unwrap_or_default();
        let mut patch = serde_json::Map::new();
        let mut said = Vec::new();
        for c in changes {
            let old = current.get(&c.key).and_then(Value::as_str);
            match (&c.value, old) {
                (Some(v), Some(o)) if o == v => {}
                (Some(v), Some(o)) if !overwrite => {
                    return Err(invalid(format!("'{}' already has a value ({o}), and --overwrite is false", c.key)));
                }
                (Some(v), old) => {
                    patch.insert(c.key.clone(), json!(v));
                    said.push(format!("{what} {}: {} → {v}", c.key, old.unwrap_or("(none)")));
                }
                (None, Some(o)) => {
                    patch.insert(c.key.clone(), Value::Null);
                    said.push(format!("{what} {}: {o} → (removed)", c.key));
                }
                (None, None) => p.notes.push(format!("{what} {:?} not found on {}/{name}", c.key, r.singular)),
            }
        }
        if patch.is_empty() {
            p.notes.push(format!(
                "{}/{name} not {}",
                r.singular,
                if field == "labels" { "labeled" } else { "annotated" }
            ));
            continue;
        }
        let ns = if r.namespaced { Some(s(&obj, "/metadata/namespace").to_string()) } else { None };
        let path = r.object_path(ns.as_deref(), &name);
        let mut meta = serde_json::Map::new();
        meta.insert(field.to_string(), Value::Object(patch));
        meta.insert("resourceVersion".into(), json!(rv(&obj)));
        p.push(
            WriteStep {
                method: "PATCH".into(),
                path: path.clone(),
                content_type: MERGE.into(),
                body: json!({"metadata": meta}),
                guard: guard(&path, &obj),
                summary: format!("{}/{name}: {}", r.singular, said.join("; ")),
            },
            obj,
        );
    }
    Ok(p)
}

/// The resource of an object by its `apiVersion` and `kind`.
fn resource_of<'d>(ctx: &'d Ctx, obj: &Value) -> Result<&'d ApiResource, KubeError> {
    let (api_version, kind) = (s(obj, "/apiVersion"), s(obj, "/kind"));
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ctx.discovery
        .resources
        .iter()
        .find(|r| r.group == group && r.kind == kind && (r.version == version || version.is_empty()))
        .or_else(|| ctx.discovery.resources.iter().find(|r| r.group == group && r.kind == kind))
        .ok_or_else(|| {
            invalid(format!(
                "resource mapping not found for name: {:?} namespace: {:?}: no matches for kind {kind:?} in version {api_version:?}",
                s(obj, "/metadata/name"),
                s(obj, "/metadata/namespace")
            ))
        })
}

/// The objects of a pasted manifest (YAML or JSON, `---` separated,
/// `List`s flattened).
pub fn manifest_objects(manifest: &str) -> Result<Vec<Value>, KubeError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(manifest).map_err(|e| invalid(format!("error parsing the manifest: {e}")))?;
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            Value::Object(_) if d["kind"].as_str().is_some_and(|k| k.ends_with("List")) && d["items"].is_array() => {
                out.extend(d["items"].as_array().cloned().unwrap_or_default());
            }
            Value::Object(_) => out.push(d),
            _ => return Err(invalid("error parsing the manifest: each document must be an object")),
        }
    }
    if out.is_empty() {
        return Err(invalid("no objects passed to apply"));
    }
    if out.len() > MAX_OBJECTS {
        return Err(invalid(format!("the manifest has {} objects; at most {MAX_OBJECTS} at once", out.len())));
    }
    Ok(out)
}

async fn apply(ctx: &Ctx, manifest: &str, _server_side: bool, force: bool) -> Result<Planned, KubeError> {
    let mut p = Planned::default();
    for mut obj in manifest_objects(manifest)? {
        let r = resource_of(ctx, &obj)?.clone();
        let name = s(&obj, "/metadata/name").to_string();
        if name.is_empty() {
            return Err(invalid(format!(
                "error when applying a {}: metadata.name is required (generateName is not applied from chat)",
                r.kind
            )));
        }
        let ns = if r.namespaced {
            let ns = match s(&obj, "/metadata/namespace") {
                "" => ctx.namespace.clone(),
                n => n.to_string(),
            };
            if ctx.explicit_namespace.as_deref().is_some_and(|given| given != ns) {
                return Err(invalid(format!(
                    "the namespace from the provided object {ns:?} does not match the namespace {:?}. You must pass '--namespace={ns}' to perform this operation.",
                    ctx.explicit_namespace.as_deref().unwrap_or_default()
                )));
            }
            obj["metadata"]["namespace"] = json!(ns);
            Some(ns)
        } else {
            None
        };
        let path = r.object_path(ns.as_deref(), &name);
        let current = match ctx.client.get(&path).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => Value::Null,
            Err(e) => return Err(e),
        };
        let what = format!("{}/{name}", r.singular);
        let summary = if current.is_null() { format!("creates {what}") } else { format!("configures {what}") };
        let mut q = vec![("fieldManager", Some("kubectl".to_string()))];
        if force {
            q.push(("force", Some("true".into())));
        }
        p.push(
            WriteStep {
                method: "PATCH".into(),
                path: format!("{path}{}", query(&q)),
                content_type: APPLY.into(),
                body: obj,
                guard: Some(Guard { path: path.clone(), resource_version: rv(&current) }),
                summary,
            },
            current,
        );
    }
    Ok(p)
}

/// `path` with `dryRun=All` added.
pub fn dry_run_path(path: &str) -> String {
    if path.contains('?') { format!("{path}&dryRun=All") } else { format!("{path}?dryRun=All") }
}

/// Sends `step` (as a dry run, or for real).
pub async fn send(ctx: &Ctx, step: &WriteStep, dry_run: bool) -> Result<Value, KubeError> {
    let method = Method::from_bytes(step.method.as_bytes()).map_err(|e| KubeError::local(e.to_string()))?;
    let path = if dry_run { dry_run_path(&step.path) } else { step.path.clone() };
    // The API server reads a DELETE's options from its body when it has
    // one and then ignores the query: the dry run goes in the body too.
    let mut body = step.body.clone();
    if dry_run && step.method == "DELETE" && body.is_object() {
        body["dryRun"] = json!(["All"]);
    }
    ctx.client.write(method, &path, &step.content_type, &body).await
}

/// Human differences between `before` and `after` (the dry run's result):
/// changed leaves of `spec`, `metadata.labels` and `metadata.annotations`,
/// list items matched by their `name`; at most `limit` lines.
pub fn diff(before: &Value, after: &Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["spec", "data"] {
        leaves(key, &before[key], &after[key], &mut out);
    }
    for key in ["labels", "annotations"] {
        let path = format!("metadata.{key}");
        leaves(&path, &before["metadata"][key], &after["metadata"][key], &mut out);
    }
    out.retain(|l| !l.starts_with("metadata.annotations.kubectl.kubernetes.io/last-applied-configuration"));
    if out.len() > limit {
        let more = out.len() - limit;
        out.truncate(limit);
        out.push(format!("… and {more} more changes"));
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::String(s) => s.clone(),
        other => {
            let t = other.to_string();
            if t.len() > 80 { format!("{}…", &t[..t.char_indices().nth(77).map_or(t.len(), |(i, _)| i)]) } else { t }
        }
    }
}

fn leaves(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                leaves(&format!("{path}.{k}"), x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(x), Value::Array(y))
            if x.iter().chain(y.iter()).all(|i| i.get("name").and_then(Value::as_str).is_some()) =>
        {
            let mut names: Vec<&str> = x.iter().chain(y.iter()).filter_map(|i| i["name"].as_str()).collect();
            names.dedup();
            let mut seen = std::collections::BTreeSet::new();
            for n in names {
                if !seen.insert(n) {
                    continue;
                }
                let find = |l: &Vec<Value>| l.iter().find(|i| i["name"] == n).cloned().unwrap_or(Value::Null);
                leaves(&format!("{path}[{n}]"), &find(x), &find(y), out);
            }
        }
        (Value::Object(x), Value::Null) if !x.is_empty() => out.push(format!("{path}: removed")),
        (Value::Null, Value::Object(y)) if !y.is_empty() => {
            for (k, v) in y {
                leaves(&format!("{path}.{k}"), &Value::Null, v, out);
            }
        }
        _ => out.push(format!("{path}: {} → {}", show(a), show(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_what_changes() {
        let before = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "api", "image": "api:1"}, {"name": "side", "image": "s:1"}]}}}, "metadata": {"labels": {"app": "api"}}});
        let after = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "api", "image": "api:2"}, {"name": "side", "image": "s:1"}]}}}, "metadata": {"labels": {"app": "api", "tier": "web"}}});
        assert_eq!(
            diff(&before, &after, 10),
            vec![
                "spec.replicas: 2 → 3",
                "spec.template.spec.containers[api].image: api:1 → api:2",
                "metadata.labels.tier: (none) → web"
            ]
        );
        assert!(diff(&before, &before, 10).is_empty());
        assert_eq!(diff(&before, &after, 1).last().map(String::as_str), Some("… and 2 more changes"));
    }

    #[test]
    fn manifests_are_read_as_documents_and_lists() {
        let m = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"b\"}}]}\n---\n";
        let objs = manifest_objects(m).expect("parsed");
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["metadata"]["name"], "b");
        assert!(manifest_objects("").is_err());
        assert!(manifest_objects("- a\n- b\n").is_err());
        assert!(manifest_objects("a: [unclosed").is_err());
    }

    #[test]
    fn dry_run_is_added_to_the_query() {
        assert_eq!(dry_run_path("/api/v1/nodes/n"), "/api/v1/nodes/n?dryRun=All");
        assert_eq!(dry_run_path("/a?fieldManager=kubectl"), "/a?fieldManager=kubectl&dryRun=All");
    }
}
