//! Commands that only read, run at once: get, describe, logs, events, top,
//! rollout status and history, and KubeChat's diagnose and changes.

use kubechat_chat::argv::{Command, Logs, ObjectRef, Output, Rollout, Target};
use kubechat_chat::discovery::ApiResource;
use serde_json::{Value, json};

use super::Ctx;
use super::client::KubeError;
use super::output::{self, Block, Finding};

/// Lines of logs shown when the command names no `--tail`.
pub const DEFAULT_TAIL: i64 = 1000;

/// Runs a read command; its output.
pub async fn run(ctx: &Ctx, cmd: &Command) -> Result<Vec<Block>, KubeError> {
    match cmd {
        Command::Get { targets, output, selector, field_selector, show_labels, .. } => {
            get(ctx, targets, *output, selector.as_deref(), field_selector.as_deref(), *show_labels).await
        }
        Command::Describe { targets, selector } => describe(ctx, targets, selector.as_deref()).await,
        Command::Logs(l) => logs(ctx, l).await,
        Command::Events { for_object, types, .. } => events(ctx, for_object.as_ref(), types).await,
        Command::Top { nodes, name, selector, containers } => {
            top(ctx, *nodes, name.as_deref(), selector.as_deref(), *containers).await
        }
        Command::Rollout { rollout: Rollout::Status, object } => rollout_status(ctx, object).await,
        Command::Rollout { rollout: Rollout::History { revision }, object } => history(ctx, object, *revision).await,
        Command::Diagnose { object } => diagnose(ctx, object).await,
        Command::Changes { since_seconds } => changes(ctx, *since_seconds).await,
        other => Err(KubeError::local(format!("{:?} is not a read", other.risk()))),
    }
}

/// `?k=v&…` of the pairs whose value is set, percent-encoded.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
    if set.is_empty() { String::new() } else { format!("?{}", set.join("&")) }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn get(
    ctx: &Ctx,
    targets: &[Target],
    output: Output,
    selector: Option<&str>,
    field_selector: Option<&str>,
    show_labels: bool,
) -> Result<Vec<Block>, KubeError> {
    let mut blocks = Vec::new();
    let mut names = Vec::new();
    let mut objects = Vec::new();
    for t in targets {
        let ns = ctx.ns_for(&t.resource);
        let path = match &t.name {
            Some(n) => t.resource.object_path(ns.as_deref(), n),
            None => {
                t.resource.collection_path(ns.as_deref())
                    + &query(&[
                        ("labelSelector", selector.map(str::to_string)),
                        ("fieldSelector", field_selector.map(str::to_string)),
                        ("limit", Some(output::PAGE_ROWS.to_string())),
                        ("continue", ctx.continue_token.clone()),
                    ])
            }
        };
        let across = ctx.all_namespaces && t.resource.namespaced && t.name.is_none();
        match output {
            Output::Table | Output::Wide => {
                let table = ctx.client.get_table(&path).await?;
                blocks.push(Block::from_table(
                    &t.resource.qualified(),
                    &table,
                    output == Output::Wide,
                    across,
                    show_labels,
                ));
            }
            Output::Name => {
                let v = ctx.client.get(&path).await?;
                let kind = t.resource.singular.clone();
                let group = if t.resource.group.is_empty() { String::new() } else { format!(".{}", t.resource.group) };
                let items = if t.name.is_some() { vec![v] } else { v["items"].as_array().cloned().unwrap_or_default() };
                for i in items {
                    names.push(format!("{kind}{group}/{}", i["metadata"]["name"].as_str().unwrap_or("")));
                }
            }
            Output::Yaml | Output::Json => {
                let mut v = ctx.client.get(&path).await?;
                output::redact(&mut v, ctx.role, true);
                if t.name.is_some() {
                    objects.push(v);
                } else {
                    for mut i in v["items"].as_array().cloned().unwrap_or_default() {
                        // Lists carry their items' kind only at the top.
                        if i.get("kind").is_none() {
                            i["kind"] = json!(t.resource.kind);
                            i["apiVersion"] = json!(t.resource.api_version());
                        }
                        objects.push(i);
                    }
                }
            }
        }
    }
    match output {
        Output::Name => blocks.push(Block::text("names", names.join("\n"))),
        Output::Yaml | Output::Json => {
            let v = if objects.len() == 1 && targets.iter().all(|t| t.name.is_some()) {
                objects.remove(0)
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}})
            };
            blocks.push(if output == Output::Yaml {
                Block::Yaml { text: output::yaml(&v) }
            } else {
                Block::Json { value: v }
            });
        }
        _ => {}
    }
    Ok(blocks)
}

/// The objects `targets` name, or list (with `selector`).
pub async fn objects(
    ctx: &Ctx,
    targets: &[Target],
    selector: Option<&str>,
) -> Result<Vec<(ApiResource, Value)>, KubeError> {
    let mut out = Vec::new();
    for t in targets {
        let ns = ctx.ns_for(&t.resource);
        match &t.name {
            Some(n) => out.push((t.resource.clone(), ctx.client.get(&t.resource.object_path(ns.as_deref(), n)).await?)),
            None => {
                let path = t.resource.collection_path(ns.as_deref())
                    + &query(&[("labelSelector", selector.map(str::to_string)), ("limit", Some("500".into()))]);
                let list = ctx.client.get(&path).await?;
                for i in list["items"].as_array().cloned().unwrap_or_default() {
                    out.push((t.resource.clone(), i));
                }
            }
        }
    }
    Ok(out)
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn kv_lines(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect::<Vec<_>>()
            .join("\n              "),
        _ => "<none>".into(),
    }
}

/// The events about `obj`, oldest first.
async fn events_of(ctx: &Ctx, obj: &Value) -> Result<Vec<Value>, KubeError> {
    let ns = s(obj, "/metadata/namespace");
    let name = s(obj, "/metadata/name");
    let kind = s(obj, "/kind");
    let mut fields = format!("involvedObject.name={name}");
    if !kind.is_empty() {
        fields.push_str(&format!(",involvedObject.kind={kind}"));
    }
    let path = if ns.is_empty() { "/api/v1/events".to_string() } else { format!("/api/v1/namespaces/{ns}/events") }
        + &query(&[("fieldSelector", Some(fields))]);
    let list = ctx.client.get(&path).await?;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|e| event_time(e).to_string());
    Ok(items)
}

fn event_time(e: &Value) -> &str {
    for p in ["/lastTimestamp", "/eventTime", "/firstTimestamp", "/metadata/creationTimestamp"] {
        let t = s(e, p);
        if !t.is_empty() {
            return t;
        }
    }
    ""
}

/// How long ago `rfc3339` was, the way kubectl prints ages.
pub fn age(rfc3339: &str) -> String {
    let Ok(t) = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) else {
        return "<unknown>".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..3600 => format!("{}m", secs / 60),
        3600..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

async fn describe(ctx: &Ctx, targets: &[Target], selector: Option<&str>) -> Result<Vec<Block>, KubeError> {
    let mut blocks = Vec::new();
    for (r, mut obj) in objects(ctx, targets, selector).await? {
        if obj.get("kind").is_none() {
            obj["kind"] = json!(r.kind);
        }
        output::redact(&mut obj, ctx.role, false);
        let events = events_of(ctx, &obj).await?;
        blocks.push(Block::text(
            format!("{}/{}", r.singular, s(&obj, "/metadata/name")),
            describe_text(&r, &obj, &events),
        ));
    }
    Ok(blocks)
}

/// A description of `obj` in kubectl's layout.
pub fn describe_text(r: &ApiResource, obj: &Value, events: &[Value]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: &str| out.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    line(&mut out, "Name", s(obj, "/metadata/name"));
    if r.namespaced {
        line(&mut out, "Namespace", s(obj, "/metadata/namespace"));
    }
    line(&mut out, "Labels", &kv_lines(&obj["metadata"]["labels"]));
    let mut annotations = obj["metadata"]["annotations"].clone();
    if let Some(a) = annotations.as_object_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    line(&mut out, "Annotations", &kv_lines(&annotations));
    match r.kind.as_str() {
        "Pod" => {
            line(&mut out, "Node", s(obj, "/spec/nodeName"));
            line(&mut out, "Status", s(obj, "/status/phase"));
            line(&mut out, "IP", s(obj, "/status/podIP"));
            out.push_str("Containers:\n");
            let statuses = obj["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            for c in obj["spec"]["containers"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or("");
                out.push_str(&format!("  {name}:\n    Image:          {}\n", c["image"].as_str().unwrap_or("")));
                if let Some(st) = statuses.iter().find(|st| st["name"] == name) {
                    let state = st["state"].as_object().and_then(|m| m.keys().next().cloned()).unwrap_or_default();
                    let reason = st["state"][&state]["reason"].as_str().unwrap_or("");
                    out.push_str(&format!(
                        "    State:          {}{}\n    Ready:          {}\n    Restart Count:  {}\n",
                        capitalize(&state),
                        if reason.is_empty() { String::new() } else { format!(" ({reason})") },
                        st["ready"].as_bool().unwrap_or(false),
                        st["restartCount"].as_i64().unwrap_or(0)
                    ));
                }
            }
            conditions(&mut out, obj);
        }
        "Deployment" | "StatefulSet" | "ReplicaSet" | "DaemonSet" => {
            let st = &obj["status"];
            line(
                &mut out,
                "Replicas",
                &format!(
                    "{} desired | {} updated | {} total | {} available | {} unavailable",
                    obj["spec"]["replicas"].as_i64().unwrap_or(0),
                    st["updatedReplicas"].as_i64().unwrap_or(0),
                    st["replicas"].as_i64().unwrap_or(0),
                    st["availableReplicas"].as_i64().unwrap_or(0),
                    st["unavailableReplicas"].as_i64().unwrap_or(0)
                ),
            );
            line(
                &mut out,
                "Selector",
                &kv_lines(&obj["spec"]["selector"]["matchLabels"]).replace("\n              ", ","),
            );
            out.push_str("Pod Template:\n  Containers:\n");
            for c in obj["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "   {}:\n    Image:  {}\n",
                    c["name"].as_str().unwrap_or(""),
                    c["image"].as_str().unwrap_or("")
                ));
            }
            conditions(&mut out, obj);
        }
        _ => {
            for key in ["spec", "data", "status"] {
                if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                    out.push_str(&format!("{}:\n", capitalize(key)));
                    for l in output::yaml(v).lines() {
                        out.push_str(&format!("  {l}\n"));
                    }
                }
            }
        }
    }
    out.push_str("Events:");
    if events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        out.push_str(&format!("\n  {:<8} {:<18} {:<6} {:<18} {}\n", "Type", "Reason", "Age", "From", "Message"));
        for e in events {
            out.push_str(&format!(
                "  {:<8} {:<18} {:<6} {:<18} {}\n",
                s(e, "/type"),
                s(e, "/reason"),
                age(event_time(e)),
                s(e, "/source/component"),
                s(e, "/message")
            ));
        }
    }
    out
}

fn conditions(out: &mut String, obj: &Value) {
    let conds = obj["status"]["conditions"].as_array().cloned().unwrap_or_default();
    if conds.is_empty() {
        return;
    }
    out.push_str("Conditions:\n  Type              Status  Reason\n");
    for c in conds {
        out.push_str(&format!("  {:<17} {:<7} {}\n", s(&c, "/type"), s(&c, "/status"), s(&c, "/reason")));
    }
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// The pod `object` names: itself, or the first running pod of a workload
/// (`deployment/api`), as kubectl picks one; and a note saying which.
pub async fn pod_of(ctx: &Ctx, object: &ObjectRef) -> Result<(String, Option<String>), KubeError> {
    if object.resource.plural == "pods" {
        return Ok((object.name.clone(), None));
    }
    let ns = ctx.ns_for(&object.resource);
    let workload = ctx.client.get(&object.resource.object_path(ns.as_deref(), &object.name)).await?;
    let selector = match workload["spec"]["selector"]["matchLabels"].as_object() {
        Some(m) if !m.is_empty() => {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
        }
        _ => return Err(KubeError::local(format!("{}/{} selects no pods", object.resource.singular, object.name))),
    };
    let pods = ctx
        .client
        .get(&format!(
            "/api/v1/namespaces/{}/pods{}",
            ns.as_deref().unwrap_or("default"),
            query(&[("labelSelector", Some(selector))])
        ))
        .await?;
    let mut items = pods["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|p| (s(p, "/status/phase") != "Running", s(p, "/metadata/name").to_string()));
    let Some(first) = items.first() else {
        return Err(KubeError {
            code: 404,
            reason: "NotFound".into(),
            message: format!("{}/{} has no pods", object.resource.singular, object.name),
        });
    };
    let name = s(first, "/metadata/name").to_string();
    let note = (items.len() > 1).then(|| format!("Found {} pods, using pod/{name}", items.len()));
    Ok((name, note))
}

/// The log path of `l` for `pod`, in its query kubectl's order.
pub fn log_path(ns: &str, pod: &str, l: &Logs, follow: bool) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{pod}/log")
        + &query(&[
            ("container", l.container.clone()),
            ("follow", follow.then(|| "true".into())),
            ("limitBytes", l.limit_bytes.map(|b| b.to_string())),
            ("previous", l.previous.then(|| "true".into())),
            ("sinceSeconds", l.since_seconds.map(|s| s.to_string())),
            ("sinceTime", l.since_time.clone()),
            ("tailLines", Some(l.tail.unwrap_or(DEFAULT_TAIL).to_string())),
            ("timestamps", l.timestamps.then(|| "true".into())),
        ])
}

async fn logs(ctx: &Ctx, l: &Logs) -> Result<Vec<Block>, KubeError> {
    let (pod, note) = pod_of(ctx, &l.object).await?;
    let ns = ctx.namespace.clone();
    let mut blocks = Vec::new();
    if let Some(n) = note {
        blocks.push(Block::text("note", n));
    }
    let containers: Vec<Option<String>> = if l.all_containers {
        let p = ctx.client.get(&format!("/api/v1/namespaces/{ns}/pods/{pod}")).await?;
        p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(|n| Some(n.to_string())))
            .collect()
    } else {
        vec![l.container.clone()]
    };
    for c in containers {
        let one = Logs { container: c.clone(), ..l.clone() };
        let text = ctx.client.get_text(&log_path(&ns, &pod, &one, false)).await?;
        let title = match &c {
            Some(c) => format!("logs pod/{pod} -c {c}"),
            None => format!("logs pod/{pod}"),
        };
        blocks.push(Block::text(title, text));
    }
    Ok(blocks)
}

/// The events path of a namespace (or all) with these filters.
pub fn events_path(ctx: &Ctx, for_object: Option<&ObjectRef>, types: &[String]) -> String {
    let mut fields = Vec::new();
    if let Some(o) = for_object {
        fields.push(format!("involvedObject.kind={}", o.resource.kind));
        fields.push(format!("involvedObject.name={}", o.name));
    }
    if let [one] = types {
        fields.push(format!("type={one}"));
    }
    let base = if ctx.all_namespaces {
        "/api/v1/events".to_string()
    } else {
        format!("/api/v1/namespaces/{}/events", ctx.namespace)
    };
    base + &query(&[
        ("fieldSelector", (!fields.is_empty()).then(|| fields.join(","))),
        ("limit", Some(output::PAGE_ROWS.to_string())),
    ])
}

/// One event as a table row: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE.
pub fn event_row(e: &Value, with_namespace: bool) -> Vec<Value> {
    let mut row = vec![
        json!(age(event_time(e))),
        json!(s(e, "/type")),
        json!(s(e, "/reason")),
        json!(format!("{}/{}", s(e, "/involvedObject/kind").to_ascii_lowercase(), s(e, "/involvedObject/name"))),
        json!(s(e, "/message")),
    ];
    if with_namespace {
        row.insert(0, json!(s(e, "/metadata/namespace")));
    }
    row
}

async fn events(ctx: &Ctx, for_object: Option<&ObjectRef>, types: &[String]) -> Result<Vec<Block>, KubeError> {
    let list = ctx.client.get(&events_path(ctx, for_object, types)).await?;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.retain(|e| types.is_empty() || types.iter().any(|t| t == s(e, "/type")));
    items.sort_by_key(|e| event_time(e).to_string());
    let rows = items.iter().map(|e| event_row(e, ctx.all_namespaces)).collect();
    let columns: &[&str] = if ctx.all_namespaces {
        &["NAMESPACE", "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    } else {
        &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    };
    Ok(vec![Block::simple_table("events", columns, rows)])
}

/// CPU in millicores of a quantity (`250m`, `1`, `1500000n`).
pub fn millicores(q: &str) -> f64 {
    let (n, unit) = split_quantity(q);
    n * match unit {
        "n" => 1e-6,
        "u" => 1e-3,
        "m" => 1.0,
        "" => 1000.0,
        _ => 0.0,
    }
}

/// Bytes of a quantity (`128Mi`, `1G`, `12345Ki`, `1000`).
pub fn bytes(q: &str) -> f64 {
    let (n, unit) = split_quantity(q);
    n * match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "m" => 1e-3,
        _ => 0.0,
    }
}

fn split_quantity(q: &str) -> (f64, &str) {
    let end = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    (q[..end].parse().unwrap_or(0.0), &q[end..])
}

async fn top(
    ctx: &Ctx,
    nodes: bool,
    name: Option<&str>,
    selector: Option<&str>,
    containers: bool,
) -> Result<Vec<Block>, KubeError> {
    if ctx.discovery.by_plural("metrics.k8s.io", if nodes { "nodes" } else { "pods" }).is_none() {
        return Err(KubeError {
            code: 404,
            reason: "NotFound".into(),
            message: "Metrics API not available: this cluster serves no metrics.k8s.io (install metrics-server)".into(),
        });
    }
    let q = query(&[("labelSelector", selector.map(str::to_string))]);
    if nodes {
        let path = match name {
            Some(n) => format!("/apis/metrics.k8s.io/v1beta1/nodes/{n}"),
            None => format!("/apis/metrics.k8s.io/v1beta1/nodes{q}"),
        };
        let v = ctx.client.get(&path).await?;
        let items = if name.is_some() { vec![v] } else { v["items"].as_array().cloned().unwrap_or_default() };
        let node_list = ctx.client.get("/api/v1/nodes").await?;
        let mut rows = Vec::new();
        for m in items {
            let n = s(&m, "/metadata/name");
            let node = node_list["items"].as_array().into_iter().flatten().find(|x| s(x, "/metadata/name") == n);
            let cpu = millicores(s(&m, "/usage/cpu"));
            let mem = bytes(s(&m, "/usage/memory"));
            let pct = |used: f64, key: &str, f: fn(&str) -> f64| {
                node.map(|x| f(s(x, &format!("/status/allocatable/{key}"))))
                    .filter(|a| *a > 0.0)
                    .map_or_else(|| "<unknown>".to_string(), |a| format!("{:.0}%", used / a * 100.0))
            };
            rows.push(vec![
                json!(n),
                json!(format!("{cpu:.0}m")),
                json!(pct(cpu, "cpu", millicores)),
                json!(format!("{:.0}Mi", mem / 1024f64.powi(2))),
                json!(pct(mem, "memory", bytes)),
            ]);
        }
        return Ok(vec![Block::simple_table(
            "nodes",
            &["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
            rows,
        )]);
    }
    let base = if ctx.all_namespaces {
        "/apis/metrics.k8s.io/v1beta1/pods".to_string()
    } else {
        format!("/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods", ctx.namespace)
    };
    let path = match name {
        Some(n) => format!("{base}/{n}"),
        None => format!("{base}{q}"),
    };
    let v = ctx.client.get(&path).await?;
    let items = if name.is_some() { vec![v] } else { v["items"].as_array().cloned().unwrap_or_default() };
    let mut rows = Vec::new();
    for m in items {
        let cs = m["containers"].as_array().cloned().unwrap_or_default();
        let mut row_for = |label: Vec<Value>, cpu: f64, mem: f64| {
            let mut r = label;
            r.push(json!(format!("{cpu:.0}m")));
            r.push(json!(format!("{:.0}Mi", mem / 1024f64.powi(2))));
            rows.push(r);
        };
        let ns_cell = |r: &mut Vec<Value>| {
            if ctx.all_namespaces {
                r.insert(0, json!(s(&m, "/metadata/namespace")));
            }
        };
        if containers {
            for c in &cs {
                let mut label = vec![json!(s(&m, "/metadata/name")), json!(s(c, "/name"))];
                ns_cell(&mut label);
                row_for(label, millicores(s(c, "/usage/cpu")), bytes(s(c, "/usage/memory")));
            }
        } else {
            let cpu = cs.iter().map(|c| millicores(s(c, "/usage/cpu"))).sum();
            let mem = cs.iter().map(|c| bytes(s(c, "/usage/memory"))).sum();
            let mut label = vec![json!(s(&m, "/metadata/name"))];
            ns_cell(&mut label);
            row_for(label, cpu, mem);
        }
    }
    let mut columns = vec!["NAME"];
    if containers {
        columns.push("CONTAINER");
    }
    if ctx.all_namespaces {
        columns.insert(0, "NAMESPACE");
    }
    columns.extend(["CPU(cores)", "MEMORY(bytes)"]);
    Ok(vec![Block::simple_table("pods", &columns, rows)])
}

/// The ReplicaSets a Deployment owns, with their revisions, oldest first.
pub async fn revisions(ctx: &Ctx, deployment: &Value) -> Result<Vec<(u64, Value)>, KubeError> {
    let ns = s(deployment, "/metadata/namespace");
    let uid = s(deployment, "/metadata/uid");
    let selector = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let list = ctx
        .client
        .get(&format!("/apis/apps/v1/namespaces/{ns}/replicasets{}", query(&[("labelSelector", Some(selector))])))
        .await?;
    let mut out: Vec<(u64, Value)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"].as_array().into_iter().flatten().any(|o| o["uid"].as_str() == Some(uid))
        })
        .filter_map(|rs| {
            let rev = s(rs, "/metadata/annotations/deployment.kubernetes.io~1revision").parse::<u64>().ok()?;
            Some((rev, rs.clone()))
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok(out)
}

async fn history(ctx: &Ctx, object: &ObjectRef, revision: u64) -> Result<Vec<Block>, KubeError> {
    if object.resource.plural != "deployments" {
        return Err(KubeError::local("rollout history in chat reads deployments"));
    }
    let ns = ctx.ns_for(&object.resource);
    let d = ctx.client.get(&object.resource.object_path(ns.as_deref(), &object.name)).await?;
    let revs = revisions(ctx, &d).await?;
    if revision > 0 {
        let Some((_, rs)) = revs.iter().find(|(r, _)| *r == revision) else {
            return Err(KubeError {
                code: 404,
                reason: "NotFound".into(),
                message: format!("unable to find the specified revision {revision}"),
            });
        };
        let mut template = rs["spec"]["template"].clone();
        output::redact(&mut template, ctx.role, false);
        return Ok(vec![Block::text(
            format!("deployment.apps/{} with revision #{revision}", object.name),
            output::yaml(&template),
        )]);
    }
    let rows = revs
        .iter()
        .map(|(r, rs)| {
            let cause = s(rs, "/metadata/annotations/kubernetes.io~1change-cause");
            json!([r, if cause.is_empty() { "<none>" } else { cause }])
        })
        .map(|v| v.as_array().cloned().unwrap_or_default())
        .collect();
    Ok(vec![Block::simple_table(format!("deployment.apps/{}", object.name), &["REVISION", "CHANGE-CAUSE"], rows)])
}

/// kubectl's rollout status message for a Deployment, and whether it is done.
pub fn rollout_message(d: &Value) -> (String, bool) {
    let name = s(d, "/metadata/name");
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = d["status"]["observedGeneration"].as_i64().unwrap_or(0);
    if generation > observed {
        return ("Waiting for deployment spec update to be observed...".into(), false);
    }
    let progress_deadline = d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if progress_deadline {
        return (format!("deployment {name:?} exceeded its progress deadline"), true);
    }
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let st = &d["status"];
    let (updated, replicas, available) = (
        st["updatedReplicas"].as_i64().unwrap_or(0),
        st["replicas"].as_i64().unwrap_or(0),
        st["availableReplicas"].as_i64().unwrap_or(0),
    );
    if updated < want {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
            ),
            false,
        );
    }
    if replicas > updated {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            ),
            false,
        );
    }
    if available < updated {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
            ),
            false,
        );
    }
    (format!("deployment {name:?} successfully rolled out"), true)
}

async fn rollout_status(ctx: &Ctx, object: &ObjectRef) -> Result<Vec<Block>, KubeError> {
    let ns = ctx.ns_for(&object.resource);
    let d = ctx.client.get(&object.resource.object_path(ns.as_deref(), &object.name)).await?;
    let message = if object.resource.plural == "deployments" {
        rollout_message(&d).0
    } else {
        let want = d["spec"]["replicas"].as_i64().or(d["status"]["desiredNumberScheduled"].as_i64()).unwrap_or(0);
        let ready = d["status"]["readyReplicas"].as_i64().or(d["status"]["numberReady"].as_i64()).unwrap_or(0);
        format!("{ready} of {want} pods ready")
    };
    Ok(vec![Block::text(format!("rollout status {}/{}", object.resource.singular, object.name), message)])
}

/// Container states that mean trouble, with their reasons.
fn container_findings(pod: &Value, out: &mut Vec<Finding>) -> Vec<String> {
    let pod_name = s(pod, "/metadata/name");
    let mut troubled = Vec::new();
    for st in pod["status"]["containerStatuses"].as_array().into_iter().flatten() {
        let c = s(st, "/name");
        let restarts = st["restartCount"].as_i64().unwrap_or(0);
        if let Some(w) = st["state"]["waiting"].as_object() {
            let reason = w.get("reason").and_then(Value::as_str).unwrap_or("Waiting");
            let msg = w.get("message").and_then(Value::as_str).unwrap_or("");
            out.push(Finding {
                severity: "error".into(),
                object: format!("pod/{pod_name}"),
                message: format!("container {c} is waiting: {reason}{}{}", if msg.is_empty() { "" } else { ": " }, msg),
                evidence: Vec::new(),
            });
            troubled.push(c.to_string());
        } else if let Some(t) = st["state"]["terminated"].as_object() {
            let reason = t.get("reason").and_then(Value::as_str).unwrap_or("Terminated");
            if reason != "Completed" {
                out.push(Finding {
                    severity: "error".into(),
                    object: format!("pod/{pod_name}"),
                    message: format!(
                        "container {c} terminated: {reason} (exit code {})",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                    evidence: Vec::new(),
                });
                troubled.push(c.to_string());
            }
        } else if st["ready"].as_bool() == Some(false) {
            out.push(Finding {
                severity: "warning".into(),
                object: format!("pod/{pod_name}"),
                message: format!("container {c} is running but not ready"),
                evidence: Vec::new(),
            });
            troubled.push(c.to_string());
        }
        if restarts > 0 {
            let last = st["lastState"]["terminated"]["reason"].as_str().unwrap_or("");
            out.push(Finding {
                severity: if restarts >= 3 { "error" } else { "warning" }.into(),
                object: format!("pod/{pod_name}"),
                message: format!(
                    "container {c} restarted {restarts} time{}{}",
                    if restarts == 1 { "" } else { "s" },
                    if last.is_empty() { String::new() } else { format!(" (last: {last})") }
                ),
                evidence: Vec::new(),
            });
            if !troubled.iter().any(|t| t == c) {
                troubled.push(c.to_string());
            }
        }
    }
    let phase = s(pod, "/status/phase");
    if matches!(phase, "Pending" | "Failed" | "Unknown") {
        out.push(Finding {
            severity: "error".into(),
            object: format!("pod/{pod_name}"),
            message: format!("pod is {phase}{}", {
                let r = s(pod, "/status/reason");
                if r.is_empty() { String::new() } else { format!(" ({r})") }
            }),
            evidence: Vec::new(),
        });
    }
    for c in pod["status"]["conditions"].as_array().into_iter().flatten() {
        if c["status"] == "False" && !s(c, "/reason").is_empty() {
            out.push(Finding {
                severity: "warning".into(),
                object: format!("pod/{pod_name}"),
                message: format!("condition {} is False: {} {}", s(c, "/type"), s(c, "/reason"), s(c, "/message"))
                    .trim()
                    .to_string(),
                evidence: Vec::new(),
            });
        }
    }
    troubled
}

/// `diagnose`: what is wrong with one object, from its status and
/// conditions, its pods', their events and the recent logs of troubled
/// containers — no model.
async fn diagnose(ctx: &Ctx, object: &ObjectRef) -> Result<Vec<Block>, KubeError> {
    let ns = ctx.ns_for(&object.resource);
    let mut obj = ctx.client.get(&object.resource.object_path(ns.as_deref(), &object.name)).await?;
    if obj.get("kind").is_none() {
        obj["kind"] = json!(object.resource.kind);
    }
    let mut findings = Vec::new();
    let title = format!("{}/{}", object.resource.singular, object.name);
    // The object's own conditions and replica counts.
    for c in obj["status"]["conditions"].as_array().into_iter().flatten() {
        let bad = match s(c, "/type") {
            "Available" | "Ready" | "Progressing" => c["status"] == "False",
            "ReplicaFailure" | "Failed" => c["status"] == "True",
            _ => false,
        };
        if bad {
            findings.push(Finding {
                severity: "error".into(),
                object: title.clone(),
                message: format!("{} is {}: {} {}", s(c, "/type"), s(c, "/status"), s(c, "/reason"), s(c, "/message"))
                    .trim()
                    .to_string(),
                evidence: Vec::new(),
            });
        }
    }
    if let (Some(want), Some(st)) = (obj["spec"]["replicas"].as_i64(), obj.get("status")) {
        let available = st["availableReplicas"].as_i64().or(st["readyReplicas"].as_i64()).unwrap_or(0);
        if available < want {
            findings.push(Finding {
                severity: "error".into(),
                object: title.clone(),
                message: format!("{available} of {want} replicas available"),
                evidence: Vec::new(),
            });
        }
    }
    // Its pods.
    let pods: Vec<Value> = if object.resource.plural == "pods" {
        vec![obj.clone()]
    } else if let Some(m) = obj["spec"]["selector"]["matchLabels"].as_object().filter(|m| !m.is_empty()) {
        let sel = m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",");
        let ns = ns.clone().unwrap_or_else(|| ctx.namespace.clone());
        ctx.client
            .get(&format!("/api/v1/namespaces/{ns}/pods{}", query(&[("labelSelector", Some(sel))])))
            .await?["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut evidence_budget = 3;
    for pod in &pods {
        let pod_ns = s(pod, "/metadata/namespace").to_string();
        let pod_name = s(pod, "/metadata/name").to_string();
        let before = findings.len();
        let troubled = container_findings(pod, &mut findings);
        // Recent logs of troubled containers (the previous run's, if it restarted).
        for c in troubled {
            if evidence_budget == 0 {
                break;
            }
            evidence_budget -= 1;
            let restarted = pod["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|st| st["name"] == c.as_str() && st["restartCount"].as_i64().unwrap_or(0) > 0);
            let l = Logs {
                object: object.clone(),
                container: Some(c.clone()),
                all_containers: false,
                tail: Some(20),
                since_seconds: None,
                since_time: None,
                previous: restarted,
                follow: false,
                timestamps: false,
                limit_bytes: Some(16 * 1024),
            };
            if let Ok(text) = ctx.client.get_text(&log_path(&pod_ns, &pod_name, &l, false)).await
                && let Some(f) = findings[before..].iter_mut().find(|f| f.message.contains(&format!("container {c} ")))
            {
                f.evidence =
                    text.lines().rev().take(10).map(str::to_string).collect::<Vec<_>>().into_iter().rev().collect();
            }
        }
    }
    // Warning events about the object and its pods.
    let mut involved = vec![obj.clone()];
    involved.extend(pods.iter().take(10).cloned());
    for o in &mut involved {
        if o.get("kind").is_none() {
            o["kind"] = json!("Pod");
        }
        for e in events_of(ctx, o).await? {
            if s(&e, "/type") == "Warning" {
                findings.push(Finding {
                    severity: "warning".into(),
                    object: format!(
                        "{}/{}",
                        s(&e, "/involvedObject/kind").to_ascii_lowercase(),
                        s(&e, "/involvedObject/name")
                    ),
                    message: format!("{}: {}", s(&e, "/reason"), s(&e, "/message")),
                    evidence: Vec::new(),
                });
            }
        }
    }
    let rank = |f: &Finding| match f.severity.as_str() {
        "error" => 0,
        "warning" => 1,
        _ => 2,
    };
    findings.sort_by_key(rank);
    if findings.is_empty() {
        findings.push(Finding {
            severity: "info".into(),
            object: title.clone(),
            message: format!(
                "nothing wrong found: {} pod{} running and ready, no warning events",
                pods.len(),
                if pods.len() == 1 { "" } else { "s" }
            ),
            evidence: Vec::new(),
        });
    }
    Ok(vec![Block::Findings { title, items: findings }])
}

/// `changes`: events and rollouts (new ReplicaSets) in the last
/// `since_seconds`, newest first.
async fn changes(ctx: &Ctx, since_seconds: u64) -> Result<Vec<Block>, KubeError> {
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::seconds(since_seconds as i64);
    let recent = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok_and(|t| t >= cutoff)
    };
    let mut items = Vec::new();
    let events = ctx.client.get(&events_path(ctx, None, &[])).await?;
    for e in events["items"].as_array().into_iter().flatten() {
        let t = event_time(e);
        if recent(t) {
            items.push((
                t.to_string(),
                Finding {
                    severity: if s(e, "/type") == "Warning" { "warning" } else { "info" }.into(),
                    object: format!(
                        "{}/{}",
                        s(e, "/involvedObject/kind").to_ascii_lowercase(),
                        s(e, "/involvedObject/name")
                    ),
                    message: format!("{} {}: {}", age(t), s(e, "/reason"), s(e, "/message")),
                    evidence: Vec::new(),
                },
            ));
        }
    }
    let rs_path = if ctx.all_namespaces {
        "/apis/apps/v1/replicasets".to_string()
    } else {
        format!("/apis/apps/v1/namespaces/{}/replicasets", ctx.namespace)
    };
    if let Ok(list) = ctx.client.get(&rs_path).await {
        for rs in list["items"].as_array().into_iter().flatten() {
            let t = s(rs, "/metadata/creationTimestamp");
            if recent(t) {
                let owner = rs["metadata"]["ownerReferences"][0]["name"].as_str().unwrap_or("");
                let rev = s(rs, "/metadata/annotations/deployment.kubernetes.io~1revision");
                let images: Vec<&str> = rs["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["image"].as_str())
                    .collect();
                items.push((
                    t.to_string(),
                    Finding {
                        severity: "info".into(),
                        object: format!("deployment/{owner}"),
                        message: format!("{} rolled out revision {rev} ({})", age(t), images.join(", ")),
                        evidence: Vec::new(),
                    },
                ));
            }
        }
    }
    items.sort_by(|a, b| b.0.cmp(&a.0));
    let where_ = if ctx.all_namespaces { "all namespaces".to_string() } else { format!("namespace {}", ctx.namespace) };
    let mut findings: Vec<Finding> = items.into_iter().map(|(_, f)| f).collect();
    if findings.is_empty() {
        findings.push(Finding {
            severity: "info".into(),
            object: where_.clone(),
            message: format!("no events or rollouts in the last {}", human_seconds(since_seconds)),
            evidence: Vec::new(),
        });
    }
    Ok(vec![Block::Findings {
        title: format!("changes in {where_} in the last {}", human_seconds(since_seconds)),
        items: findings,
    }])
}

fn human_seconds(s: u64) -> String {
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(millicores("250m"), 250.0);
        assert_eq!(millicores("2"), 2000.0);
        assert_eq!(millicores("1500000n"), 1.5);
        assert_eq!(bytes("128Mi"), 128.0 * 1024.0 * 1024.0);
        assert_eq!(bytes("1G"), 1e9);
    }

    #[test]
    fn rollout_messages_follow_kubectls_status_viewer() {
        let d = |generation: i64, obs: i64, want: i64, upd: i64, rep: i64, avail: i64| {
            json!({"metadata": {"name": "api", "generation": generation}, "spec": {"replicas": want},
                   "status": {"observedGeneration": obs, "updatedReplicas": upd, "replicas": rep, "availableReplicas": avail}})
        };
        assert!(!rollout_message(&d(2, 1, 3, 3, 3, 3)).1);
        assert!(rollout_message(&d(2, 2, 3, 1, 3, 1)).0.contains("1 out of 3 new replicas"));
        assert!(rollout_message(&d(2, 2, 3, 3, 4, 3)).0.contains("1 old replicas are pending termination"));
        assert!(rollout_message(&d(2, 2, 3, 3, 3, 2)).0.contains("2 of 3 updated replicas are available"));
        assert_eq!(rollout_message(&d(2, 2, 3, 3, 3, 3)), ("deployment \"api\" successfully rolled out".into(), true));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            query(&[("labelSelector", Some("app=api,tier in (web)".into())), ("x", None)]),
            "?labelSelector=app%3Dapi%2Ctier%20in%20%28web%29"
        );
        assert_eq!(query(&[("a", None)]), "");
    }
}
