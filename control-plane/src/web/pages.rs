//! The HTML of every page (maud: escaped by construction). Pages are plain
//! HTML that works without JavaScript; htmx (vendored, `/ui/assets/`) adds
//! answers to the chat transcript in place. Every control has a label,
//! headings are in order, and the layout reads at phone width.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::session::Session;
use crate::audit::{AuditEntry, Verification};
use crate::directory::TunnelView;
use crate::model::{Cluster, Role, Tenant};

fn role_label(r: Role) -> &'static str {
    match r {
        Role::PlatformAdmin => "platform admin",
        Role::TenantAdmin => "tenant admin",
        Role::TenantUser => "tenant user",
        Role::TenantViewer => "tenant viewer",
    }
}

/// The frame of every page; `s` when signed in.
fn layout(title: &str, s: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · KubeChat" }
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/htmx.min.js" defer {}
                script src="/ui/assets/htmx-ext-sse.min.js" defer {}
                script src="/ui/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "KubeChat" }
                    @if let Some(s) = s {
                        nav aria-label="Main" {
                            a href="/ui/" { @if s.tenant.is_some() { "Clusters" } @else { "Platform" } }
                            @if s.tenant.is_some() { a href="/ui/people" { "People and tokens" } }
                            @if s.is_admin() && s.tenant.is_some() { a href="/ui/billing" { "Usage and billing" } }
                            @if s.is_admin() && s.tenant.is_some() { a href="/ui/audit" { "Audit" } }
                        }
                        div.who {
                            span data-testid="who" { (s.principal.user.email) " · " (role_label(s.principal.user.role)) }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// An error page.
pub(super) fn error(status: http::StatusCode, message: &str) -> Markup {
    layout(
        "Error",
        None,
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
            p.error role="alert" { (message) }
            p { a href="/ui/" { "Back to your clusters" } }
        },
    )
}

/// The sign-in page, with why the last try failed.
pub(super) fn login(failed: Option<&str>, signup: bool) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(why) = failed { p.error role="alert" { (why) } }
            form.card method="post" action="/ui/login" {
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required placeholder="kc_…";
                p.hint { "Create one with " code { "kubechat tokens create" } " or ask your tenant admin." }
                button type="submit" { "Sign in" }
            }
            @if signup { p { "New to KubeChat? " a href="/ui/signup" { "Create your organisation" } } }
        },
    )
}

/// What the sign-up form was sent with, to show it again.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub(super) struct SignupFields {
    pub(super) name: String,
    pub(super) slug: String,
    pub(super) email: String,
    pub(super) person: String,
}

/// Self-service sign-up: an organisation (a tenant on the free plan, on
/// trial) and its first admin.
pub(super) fn signup(f: &SignupFields, problem: Option<&str>) -> Markup {
    layout(
        "Create your organisation",
        None,
        html! {
            h1 { "Create your organisation" }
            @if let Some(why) = problem { p.error role="alert" data-testid="problem" { (why) } }
            form.card method="post" action="/ui/signup" {
                label for="org-name" { "Organisation" }
                input id="org-name" name="name" type="text" required maxlength="200" value=(f.name) placeholder="Acme Inc.";
                label for="org-slug" { "Short name" }
                input id="org-slug" name="slug" type="text" required maxlength="40" value=(f.slug) placeholder="acme" aria-describedby="slug-hint";
                p.hint id="slug-hint" { "Lowercase letters, digits and '-'; it names your organisation in kubeconfigs." }
                label for="admin-email" { "Your email" }
                input id="admin-email" name="email" type="email" required value=(f.email);
                label for="admin-name" { "Your name" }
                input id="admin-name" name="person" type="text" maxlength="200" value=(f.person);
                p.hint { "You become its admin, on the free plan (1 cluster, 1,000 commands a month); upgrade any time." }
                button type="submit" { "Create organisation" }
            }
            p { "Already have an API token? " a href="/ui/login" { "Sign in" } }
        },
    )
}

/// After sign-up: the admin's API token, shown once, and the next step.
pub(super) fn welcome(s: &Session, t: &Tenant, secret: &str) -> Markup {
    layout(
        "Welcome",
        Some(s),
        html! {
            h1 { "Welcome to KubeChat, " (t.name) }
            section.card.created role="status" aria-label="Your API token" {
                p.ok { "Your API token (for kubectl, the CLI and the API, and to sign in again). Copy it now: it is shown only once." }
                pre data-testid="new-token" { (secret) }
            }
            p { a href="/ui/" data-testid="next" { "Add your first cluster" } }
        },
    )
}

/// A platform administrator's start page.
pub(super) fn platform_home(s: &Session, tenants: &[Tenant], mrr: &Value, tunnels: &[TunnelView]) -> Markup {
    let now = crate::directory::now_ms();
    let ago = |ms: i64| format!("{} s ago", ((now - ms).max(0)) / 1000);
    let slug = |id: &str| tenants.iter().find(|t| t.id == id).map(|t| t.slug.clone()).unwrap_or_else(|| id.to_string());
    let micros = |v: &Value| dollars(v.as_i64().unwrap_or_default());
    layout(
        "Platform",
        Some(s),
        html! {
            h1 { "Platform" }
            section aria-labelledby="mrr-h" {
                h2 id="mrr-h" { "Monthly recurring revenue" }
                p data-testid="mrr" { strong { (micros(&mrr["mrrMicros"])) } " a month from active tenants." }
                div.table-wrap tabindex="0" {
                    table.data {
                        thead { tr { th scope="col" { "Plan" } th scope="col" { "Active tenants" } th scope="col" { "Trials" } th scope="col" { "MRR" } } }
                        tbody {
                            @for plan in ["free", "team", "enterprise"] {
                                @let p = &mrr["byPlan"][plan];
                                tr { td { (plan) } td { (p["tenants"]) } td { (p["trials"]) } td { (micros(&p["mrrMicros"])) } }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="tenants-h" {
                h2 id="tenants-h" { "Tenants (" (tenants.len()) ")" }
                div.table-wrap tabindex="0" {
                    table.data data-testid="tenants" {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Slug" } th scope="col" { "Plan" } th scope="col" { "Status" } th scope="col" { "Region" } th scope="col" { "Live tunnels" } } }
                        tbody {
                            @for t in tenants {
                                tr data-tenant=(t.id) {
                                    td { (t.name) } td { (t.slug) } td { (t.subscription.plan.as_str()) }
                                    td { @if t.status == crate::model::TenantStatus::Suspended { strong { "suspended" } } @else { (t.status.as_str()) } }
                                    td { (t.home_region) }
                                    td { (tunnels.iter().filter(|x| x.tenant_id == t.id).count()) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="tunnels-h" {
                h2 id="tunnels-h" { "Every tunnel (" (tunnels.len()) ")" }
                div.table-wrap tabindex="0" {
                    table.data data-testid="tunnels" {
                        thead { tr { th scope="col" { "Tenant" } th scope="col" { "Cluster" } th scope="col" { "Relay" } th scope="col" { "Transport" } th scope="col" { "RTT" } th scope="col" { "Connected" } th scope="col" { "Last heartbeat" } th scope="col" { "Agent" } } }
                        tbody {
                            @for x in tunnels {
                                tr {
                                    td { (slug(&x.tenant_id)) } td { (x.cluster_id) } td { (x.relay_id) " (" (x.region) ")" } td { (x.transport) }
                                    td { (format!("{:.1} ms", x.rtt_us as f64 / 1000.0)) } td { (ago(x.connected_at_ms)) } td { (ago(x.last_heartbeat_ms)) } td { (x.agent_version) }
                                }
                            }
                            @if tunnels.is_empty() { tr { td colspan="8" { "No agent is connected." } } }
                        }
                    }
                }
            }
        },
    )
}

/// One cluster on the start page.
pub(super) struct ClusterRow {
    /// The cluster.
    pub(super) cluster: Cluster,
    /// Its live tunnels.
    pub(super) tunnels: Vec<TunnelView>,
}

/// The tenant's clusters and their tunnels.
pub(super) fn home(s: &Session, t: &Tenant, rows: &[ClusterRow]) -> Markup {
    layout(
        "Clusters",
        Some(s),
        html! {
            h1 { "Clusters of " (t.name) }
            @if s.is_admin() {
                form.card.add method="post" action="/ui/clusters" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="cluster-name" { "Add a cluster (its name: lowercase letters, digits, -)" }
                    input id="cluster-name" name="name" type="text" required pattern="[a-z0-9]([a-z0-9-]*[a-z0-9])?" maxlength="40" autocomplete="off";
                    button type="submit" { "Add cluster" }
                }
            }
            @if rows.is_empty() {
                p { "No clusters yet." }
            } @else {
                table.data tabindex="0" {
                    caption { "Your clusters and their tunnels" }
                    thead { tr { th scope="col" { "Cluster" } th scope="col" { "Status" } th scope="col" { "Tunnels" } th scope="col" { "Policy" } } }
                    tbody {
                        @for r in rows {
                            tr data-cluster=(r.cluster.id) {
                                td { a href={ "/ui/clusters/" (r.cluster.id) } { (r.cluster.name) } }
                                td {
                                    @if r.tunnels.is_empty() { span.badge.down data-testid="status" { "not connected" } }
                                    @else { span.badge.up data-testid="status" { "connected" } }
                                }
                                td {
                                    @for x in &r.tunnels {
                                        div { (x.relay_id) " (" (x.region) ") · " (x.transport) " · RTT " (format!("{:.1}", x.rtt_us as f64 / 1000.0)) " ms" }
                                    }
                                }
                                td { @if r.cluster.policy.read_only { "read-only" } @else { "read-write" } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A cluster's connection badge. Until it is connected it asks again every
/// 2 s (htmx), so the page turns "connected" by itself once the agent is up.
pub(super) fn status(id: &str, connected: bool) -> Markup {
    html! {
        @if connected {
            span.badge.up data-testid="status" role="status" { "connected" }
        } @else {
            span.badge.down data-testid="status" role="status"
                hx-get={ "/ui/clusters/" (id) "/status" } hx-trigger="every 2s" hx-swap="outerHTML" { "waiting for the agent…" }
        }
    }
}

/// Onboarding: the helm command for a new cluster's agent, and its status
/// turning live to "connected".
pub(super) fn connect(s: &Session, id: &str, name: &str, helm: Option<&str>) -> Markup {
    layout(
        &format!("Connect {name}"),
        Some(s),
        html! {
            h1 { "Connect " (name) }
            @if let Some(cmd) = helm {
                p { "Run this where your kubectl reaches the cluster. The token in it works once, within an hour." }
                pre data-testid="helm" { (cmd) }
            } @else {
                p.note { "Agent enrollment is not configured on this control plane; ask your operator for the agent's certificate." }
            }
            p { "Status: " (status(id, false)) }
            p { a href={ "/ui/clusters/" (id) } { "Open the chat with " (name) } " (send a first command once it is connected)" }
        },
    )
}

/// One of the person's recent lines and what became of it.
pub(super) struct HistoryLine {
    /// Chat's record of the line as typed.
    pub(super) entry: AuditEntry,
    /// "ran", "refused", "awaiting confirmation", …; empty if nothing
    /// after the line is recorded yet.
    pub(super) became: &'static str,
}

/// The badge tone of what became of a line.
fn tone(became: &str) -> &'static str {
    match became {
        "ran" | "confirmed" | "approved" => " up",
        "failed" | "refused" => " down",
        _ => "",
    }
}

/// What a cluster's chat page shows besides a turn.
pub(super) struct ChatPage<'a> {
    /// The cluster's live tunnels.
    pub(super) tunnels: &'a [TunnelView],
    /// The person's latest lines on this cluster, newest first.
    pub(super) history: &'a [HistoryLine],
    /// The relay's record of the cluster's last tunnel going down.
    pub(super) last_drop: Option<&'a AuditEntry>,
    /// A line to put in the box (a deep link's `q`).
    pub(super) prefill: &'a str,
}

pub(super) fn chat(s: &Session, c: &Cluster, page: &ChatPage<'_>, turn: Option<Markup>) -> Markup {
    let (tunnels, prefill) = (page.tunnels, page.prefill);
    let now = crate::directory::now_ms();
    let ago = |ms: i64| format!("{} s ago", ((now - ms).max(0)) / 1000);
    layout(
        &c.name,
        Some(s),
        html! {
            h1 { "Chat with " (c.name) }
            p {
                (status(&c.id, !tunnels.is_empty()))
                " · your role: " (role_label(s.principal.user.role))
                @if c.policy.read_only { " · read-only cluster" }
                @if s.is_admin() { " · " a href={ "/ui/clusters/" (c.id) "/settings" } data-testid="settings" { "Settings" } }
            }
            @if !tunnels.is_empty() {
                details.tunnels {
                    summary { "Tunnel health (" (tunnels.len()) ")" }
                    table.data tabindex="0" {
                        thead { tr { th scope="col" { "Relay" } th scope="col" { "Transport" } th scope="col" { "RTT" } th scope="col" { "Last heartbeat" } th scope="col" { "Connected" } th scope="col" { "Reconnects" } th scope="col" { "Agent" } } }
                        tbody { @for x in tunnels {
                            tr {
                                td { (x.relay_id) " (" (x.region) ")" }
                                td { (x.transport) }
                                td { (format!("{:.1} ms", x.rtt_us as f64 / 1000.0)) }
                                td { (ago(x.last_heartbeat_ms)) }
                                td { (ago(x.connected_at_ms)) }
                                td { (x.reconnects) }
                                td { (x.agent_version) }
                            }
                        } }
                    }
                }
            }
            @if let Some(d) = page.last_drop {
                p.hint data-testid="last-drop" {
                    "Last tunnel drop: " (ago(d.time_ms))
                    @if !d.relay_id.is_empty() { " on " (d.relay_id) }
                    ": " (if d.reason.is_empty() { "no reason recorded" } else { d.reason.as_str() }) "."
                }
            }
            section id="transcript" aria-live="polite" aria-label="Transcript" {
                @if let Some(t) = turn { (t) }
            }
            form.ask method="post" action={ "/ui/clusters/" (c.id) "/commands" }
                hx-post={ "/ui/clusters/" (c.id) "/commands" } hx-target="#transcript" hx-swap="beforeend" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="line" { "Ask in English, or type a kubectl command" }
                div.row {
                    input id="line" name="line" type="text" required autocomplete="off" value=(prefill)
                        placeholder="show pods in web · kubectl get deployments -n web";
                    button type="submit" { "Send" }
                }
            }
            @if !page.history.is_empty() {
                section.history aria-labelledby="history-h" data-testid="history" {
                    h2 id="history-h" { "Your recent lines on " (c.name) }
                    p.hint { "Choosing one puts it in the box; nothing runs until you send it." }
                    ol {
                        @for h in page.history {
                            li {
                                a href={ "/ui/clusters/" (c.id) "?q=" (form_value(&h.entry.kubectl_command)) } {
                                    code { (h.entry.kubectl_command) }
                                }
                                @if !h.became.is_empty() {
                                    " " span class={ "badge" (tone(h.became)) } { (h.became) }
                                }
                                " " span.muted { (ago(h.entry.time_ms)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The chat line that shows a table row's object (`kubectl get pods api-1
/// -n web -o yaml`): what its deep link puts in the box.
fn object_line(resource: &str, object: &Value) -> Option<String> {
    let name = object["name"].as_str()?;
    Some(match object["namespace"].as_str() {
        Some(ns) => format!("kubectl get {resource} {name} -n {ns} -o yaml"),
        None => format!("kubectl get {resource} {name} -o yaml"),
    })
}

/// A command's output blocks; table rows whose object is known link to
/// it (a deep link that fills the chat box of cluster `cluster`).
fn blocks(cluster: &str, blocks: &Value) -> Markup {
    html! {
        @for b in blocks.as_array().into_iter().flatten() {
            @match b["type"].as_str().unwrap_or_default() {
                "table" => {
                    @let resource = text(&b["title"]);
                    @let name_col = b["columns"].as_array().and_then(|c| c.iter().position(|c| c["name"] == "NAME"));
                    @let objects = b["objects"].as_array();
                    table.data tabindex="0" {
                        caption { (resource) }
                        thead { tr { @for col in b["columns"].as_array().into_iter().flatten() { th scope="col" { (text(&col["name"])) } } } }
                        tbody { @for (r, row) in b["rows"].as_array().into_iter().flatten().enumerate() {
                            @let line = objects.and_then(|o| o.get(r)).and_then(|o| object_line(&resource, o));
                            tr { @for (i, cell) in row.as_array().into_iter().flatten().enumerate() {
                                @if let (Some(line), true) = (&line, Some(i) == name_col) {
                                    td { a href={ "/ui/clusters/" (cluster) "?q=" (form_value(line)) } title={ "Show: " (line) } { (text(cell)) } }
                                } @else {
                                    td { (text(cell)) }
                                }
                            } }
                        } }
                    }
                    @if b["continue"].is_string() { p.hint { "More rows: ask again with --chunk-size or a narrower selector." } }
                }
                "text" => {
                    h3 { (text(&b["title"])) }
                    pre { (text(&b["text"])) }
                    @if b["truncated"] == Value::Bool(true) { p.hint { "(cut: too long to show)" } }
                }
                "yaml" => { pre { (text(&b["text"])) } }
                "json" => { pre { (serde_json::to_string_pretty(&b["value"]).unwrap_or_default()) } }
                "findings" => {
                    h3 { (text(&b["title"])) }
                    ul.findings { @for f in b["items"].as_array().into_iter().flatten() {
                        li class=(text(&f["severity"])) {
                            strong { (text(&f["severity"])) } " " code { (text(&f["object"])) } ": " (text(&f["message"]))
                            @for e in f["evidence"].as_array().into_iter().flatten() { pre { (text(e)) } }
                        }
                    } }
                }
                _ => { pre { (b.to_string()) } }
            }
        }
    }
}

fn requests(reqs: &Value) -> Markup {
    html! {
        @if reqs.as_array().is_some_and(|r| !r.is_empty()) {
            details.requests {
                summary { "API requests and their verdicts" }
                table.data tabindex="0" {
                    thead { tr { th scope="col" { "Request" } th scope="col" { "Verb" } th scope="col" { "Verdict" } } }
                    tbody { @for r in reqs.as_array().into_iter().flatten() {
                        tr {
                            td { code { (text(&r["method"])) " " (text(&r["path"])) } }
                            td { (text(&r["verb"])) " " (text(&r["resource"])) }
                            td { @if r["allowed"] == Value::Bool(true) { "allowed" } @else { "refused: " (text(&r["reason"])) } }
                        }
                    } }
                }
            }
        }
    }
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,@".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', ""))
    }
}

/// One answer in the transcript: what was asked, the plan, and its result
/// or its confirmation form.
pub(super) fn turn(s: &Session, c: &Cluster, line: &str, plan: &crate::chat::Plan) -> Markup {
    let p = serde_json::to_value(plan).unwrap_or_default();
    let risk = text(&p["risk"]);
    html! {
        article.turn data-plan=(plan.id) {
            p.asked { span.visually-hidden { "You asked: " } (line) }
            @if !plan.kubectl.is_empty() {
                p.kubectl {
                    code data-testid="kubectl" { (plan.kubectl) }
                    " "
                    @if !risk.is_empty() { span class={ "badge risk-" (risk) } { (risk) } }
                    " "
                    a.deep href={ "/ui/clusters/" (c.id) "?q=" (urlencode(&plan.kubectl)) } { "link" }
                }
            }
            @for n in &plan.notes { p.note { (n) } }
            @if let Some(q) = &plan.question {
                p.question { (q.text) }
                ul.choices { @for ch in &q.choices {
                    li { form method="post" action={ "/ui/clusters/" (c.id) "/commands" }
                        hx-post={ "/ui/clusters/" (c.id) "/commands" } hx-target="#transcript" hx-swap="beforeend" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        input type="hidden" name="line" value={ "kubectl " (ch.argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")) };
                        button type="submit" { (ch.label) }
                    } }
                } }
            }
            (requests(&p["requests"]))
            @if let Some(dry) = &plan.dry_run {
                section.dryrun aria-label="Dry run" {
                    h3 { "Dry run (server-side, nothing changed yet)" }
                    @for d in dry {
                        p { (d.summary) }
                        @if !d.changes.is_empty() { ul.diff { @for ch in &d.changes { li { (ch) } } } }
                    }
                }
            }
            @if let (true, Some(token)) = (plan.needs_confirmation, &plan.confirmation) {
                form.confirm method="post" action={ "/ui/clusters/" (c.id) "/commands/" (plan.id) "/confirm" }
                    hx-post={ "/ui/clusters/" (c.id) "/commands/" (plan.id) "/confirm" } hx-target="this" hx-swap="outerHTML" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="confirmation" value=(token);
                    @if let Some(name) = &plan.type_to_confirm {
                        label for={ "typed-" (plan.id) } { "Type " strong { (name) } " to confirm" }
                        input id={ "typed-" (plan.id) } name="typed_name" type="text" required autocomplete="off";
                    }
                    @if plan.needs_approval { p.note { "A second tenant admin must approve this first." } }
                    button.danger type="submit" { "Confirm: " (plan.kubectl) }
                    p.hint { "The confirmation is for exactly these requests, once, within 2 minutes; if the object changes meanwhile, ask again." }
                }
            }
            @if plan.stream.is_some() {
                section.stream aria-label="Stream"
                    data-stream={ "/ui/clusters/" (c.id) "/commands/" (plan.id) "/stream" } {
                    pre.lines aria-live="polite" {}
                    p.stream-status role="status" { "Streaming…" }
                    form method="post" action={ "/ui/clusters/" (c.id) "/commands/" (plan.id) "/stop" }
                        hx-post={ "/ui/clusters/" (c.id) "/commands/" (plan.id) "/stop" } hx-target="this" hx-swap="outerHTML" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button type="submit" { "Stop" }
                    }
                }
            }
            @if plan.result.is_some() { section.result aria-label="Result" { (blocks(&c.id, &p["result"])) } }
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An answer that is a refusal or an error, with the plan so far.
pub(super) fn turn_error(line: &str, message: &str, plan: Option<&crate::chat::Plan>) -> Markup {
    let p = plan.map(|p| serde_json::to_value(p).unwrap_or_default()).unwrap_or_default();
    html! {
        article.turn.refused {
            p.asked { span.visually-hidden { "You asked: " } (line) }
            @if let Some(k) = p["kubectl"].as_str() { p.kubectl { code data-testid="kubectl" { (k) } } }
            p.error role="alert" { (message) }
            (requests(&p["requests"]))
        }
    }
}

/// What a confirmed plan did.
pub(super) fn outcome(cluster: &str, o: &crate::chat::Outcome) -> Markup {
    let v = serde_json::to_value(o).unwrap_or_default();
    html! {
        section.outcome aria-label="Outcome" role="status" {
            @if o.succeeded { p.ok { "Done: " code { (o.kubectl) } } } @else { p.error role="alert" { "Failed: " (o.error.clone().unwrap_or_default()) } }
            ul { @for d in &o.done { li { (d) } } }
            @if o.result.is_some() { (blocks(cluster, &v["result"])) }
        }
    }
}

/// A stream stopped at the person's request.
pub(super) fn stopped() -> Markup {
    html! { p.hint { "You stopped this stream." } }
}

/// A confirmation refused.
pub(super) fn refusal(message: &str) -> Markup {
    html! { section.outcome role="alert" { p.error { "Not done: " (message) } } }
}

/// People and API tokens; `created` is (name, secret) of a token just made.
pub(super) fn people(
    s: &Session,
    t: &Tenant,
    users: &[crate::model::User],
    tokens: &[crate::model::ApiToken],
    access: &[crate::model::CrossTenantAccess],
    created: Option<(String, String)>,
) -> Markup {
    let day = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .map(|d| format!("{}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
            .unwrap_or_default()
    };
    let email = |id: &str| users.iter().find(|u| u.id == id).map_or_else(|| id.to_string(), |u| u.email.clone());
    layout(
        "People and tokens",
        Some(s),
        html! {
            h1 { "People and tokens of " (t.name) }
            @if let Some((name, secret)) = &created {
                section.card.created role="status" aria-label="New token" {
                    p.ok { "Token " strong { (name) } " created. Copy it now: it is shown only once." }
                    pre data-testid="new-token" { (secret) }
                }
            }
            @if !users.is_empty() {
                table.data tabindex="0" {
                    caption { "People and their roles" }
                    thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Role" } } }
                    tbody { @for u in users { tr { td { (u.email) } td { (u.name) } td { (role_label(u.role)) } } } }
                }
            }
            table.data tabindex="0" {
                caption { @if users.is_empty() { "Your API tokens" } @else { "API tokens" } }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Starts with" } @if !users.is_empty() { th scope="col" { "Person" } } th scope="col" { "Expires" } th scope="col" { "State" } } }
                tbody { @for k in tokens {
                    tr data-token=(k.id) {
                        td { (k.name) }
                        td { code { (k.prefix) "…" } }
                        @if !users.is_empty() { td { (email(&k.user_id)) } }
                        td { (k.expires_at.map(day).unwrap_or_else(|| "never".into())) }
                        td {
                            @if k.revoked_at.is_some() { "revoked" } @else {
                                (revoke_button(s, &format!("/ui/tokens/{}/revoke", k.id), &format!("Revoke token {}", k.name)))
                            }
                        }
                    }
                } }
            }
            form.card method="post" action="/ui/tokens" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="token-name" { "New API token for you (for kubectl, the CLI or the API)" }
                input id="token-name" name="name" type="text" required maxlength="100" autocomplete="off";
                button type="submit" { "Create token" }
            }
            @if s.is_admin() {
                section aria-labelledby="access-h" {
                    h2 id="access-h" { "People of other tenants" }
                    p.hint { "A role here for someone who signs in with another tenant's account (a consultant, a vendor's SRE), until revoked or it expires." }
                    @if !access.is_empty() {
                        div.table-wrap tabindex="0" {
                            table.data data-testid="access" {
                                thead { tr { th scope="col" { "Email" } th scope="col" { "Their tenant" } th scope="col" { "Role" } th scope="col" { "Expires" } th scope="col" {} } }
                                tbody { @for a in access {
                                    tr data-access=(a.id) {
                                        td { (a.grantee_email) } td { (a.grantee_tenant) } td { (role_label(a.role)) }
                                        td { (a.expires_at.map(day).unwrap_or_else(|| "never".into())) }
                                        td {
                                            (revoke_button(s, &format!("/ui/access/{}/revoke", a.id), &format!("Revoke access of {}", a.grantee_email)))
                                        }
                                    }
                                } }
                            }
                        }
                    }
                    form.card method="post" action="/ui/access" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        label for="grantee-email" { "Their email" }
                        input id="grantee-email" name="grantee_email" type="email" required autocomplete="off";
                        label for="grantee-tenant" { "Their tenant (its short name)" }
                        input id="grantee-tenant" name="grantee_tenant" type="text" required autocomplete="off" placeholder="partner";
                        label for="grantee-role" { "Role here" }
                        select id="grantee-role" name="role" {
                            option value="tenant_viewer" { "viewer (reads)" }
                            option value="tenant_user" { "user (reads and writes in namespaces)" }
                            option value="tenant_admin" { "admin" }
                        }
                        label for="grantee-days" { "Days until it ends (empty: until revoked)" }
                        input id="grantee-days" name="expires_in_days" type="number" min="1" max="365";
                        button type="submit" { "Grant access" }
                    }
                }
            }
        },
    )
}

/// The audit page: the chain's verification, plainly, and the latest events.
/// What the audit page shows besides the chain's state.
pub(super) struct AuditPage<'a> {
    /// The filters and cursor it was asked for.
    pub(super) query: &'a super::AuditQuery,
    /// The events, newest first.
    pub(super) items: &'a [AuditEntry],
    /// The cursor of the next (older) page, if there is one.
    pub(super) older: Option<i64>,
    /// The tenant's clusters, to filter by.
    pub(super) clusters: &'a [crate::model::Cluster],
}

pub(super) fn audit(s: &Session, t: &Tenant, v: &Verification, page: &AuditPage<'_>) -> Markup {
    let time = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp(ms / 1000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    };
    let q = page.query;
    let filters = q.without_cursor();
    let filtered = !(q.cluster.is_empty()
        && q.user.is_empty()
        && q.verb.is_empty()
        && q.resource.is_empty()
        && q.kind.is_empty()
        && q.decision.is_empty()
        && q.since.is_empty()
        && q.until.is_empty());
    let cluster_name = |id: &str| page.clusters.iter().find(|c| c.id == id).map(|c| c.name.clone());
    let choice = |name: &'static str, label: &'static str, current: &str, options: &[(&str, &str)]| {
        html! {
            label { (label)
                select name=(name) {
                    @for (value, text) in options {
                        option value=(value) selected[*value == current] { (text) }
                    }
                }
            }
        }
    };
    layout(
        "Audit",
        Some(s),
        html! {
            h1 { "Audit trail of " (t.name) }
            @if v.intact {
                p.badge.up data-testid="chain" role="status" { "Chain verified: " (v.events) " events, intact up to #" (v.head_seq) "." }
            } @else {
                p.badge.down data-testid="chain" role="alert" {
                    "Chain broken"
                    @if let Some(b) = &v.first_break { " at #" (b.position) ": " (b.problem) }
                    ". Contact support: someone changed or removed events."
                }
            }
            form.filters method="get" action="/ui/audit" role="search" aria-label="Filter the audit trail" {
                @let clusters: Vec<(String, String)> = std::iter::once((String::new(), "any cluster".to_string()))
                    .chain(page.clusters.iter().map(|c| (c.id.clone(), c.name.clone())))
                    .collect();
                @let cluster_options: Vec<(&str, &str)> = clusters.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                (choice("cluster", "Cluster", &q.cluster, &cluster_options))
                label { "Who" input type="text" name="user" value=(q.user) placeholder="kubechat:user:ana@acme.example"; }
                label { "Verb" input type="text" name="verb" value=(q.verb) placeholder="get, delete, …"; }
                label { "Resource" input type="text" name="resource" value=(q.resource) placeholder="pods, secrets, …"; }
                (choice("decision", "Decision", &q.decision, &[("", "any"), ("allow", "allowed"), ("deny", "refused")]))
                (choice("kind", "Kind", &q.kind, &[("", "any"), ("decision", "decisions"), ("request", "requests"), ("chat", "chat"), ("tunnel_connect", "tunnel up"), ("tunnel_disconnect", "tunnel down")]))
                label { "From" input type="date" name="since" value=(q.since); }
                label { "To" input type="date" name="until" value=(q.until); }
                div.actions {
                    button type="submit" { "Filter" }
                    @if filtered { a href="/ui/audit" { "Clear filters" } }
                    a href={ "/ui/audit/export?" (filters) } download data-testid="export" {
                        @if filtered { "Export these events (JSON Lines)" } @else { "Export everything (JSON Lines)" }
                    }
                }
            }
            div.table-wrap tabindex="0" {
                table.data data-testid="audit-events" {
                    caption { @if filtered { "Matching events, newest first" } @else { "Events, newest first" } }
                    thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Kind" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Decision" } } }
                    tbody {
                        @for e in page.items {
                            tr {
                                td { (e.seq) }
                                td { (time(e.time_ms)) }
                                td { (e.kind) }
                                td.wrap { (e.user) }
                                td.wrap {
                                    (e.verb) " " (e.resource) @if !e.name.is_empty() { "/" (e.name) } @if !e.namespace.is_empty() { " in " (e.namespace) }
                                    @if let Some(c) = cluster_name(&e.cluster_id) { " on " (c) }
                                }
                                td { @if e.decision == "deny" { strong { "refused" } } @else { (e.decision) } }
                            }
                        }
                        @if page.items.is_empty() { tr { td colspan="6" { "No event matches." } } }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if q.before.is_some() { a href={ "/ui/audit?" (filters) } { "Newest" } }
                @if let Some(older) = page.older {
                    a href={ "/ui/audit?" (filters) @if !filters.is_empty() { "&" } "before=" (older) } rel="next" data-testid="older" { "Older events" }
                }
            }
        },
    )
}

/// What the billing page shows.
pub(super) struct BillingPage<'a> {
    /// Counts against the plan's limits.
    pub(super) usage: &'a crate::model::Usage,
    /// This month's metered usage, per type.
    pub(super) metered: &'a [(String, f64)],
    /// The months with an invoice to show, newest first.
    pub(super) months: &'a [String],
    /// The invoice of the month asked for.
    pub(super) invoice: &'a crate::billing::Invoice,
}

/// A count with thousands separators (`10,000,000`).
fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if n < 0 { format!("-{grouped}") } else { grouped }
}

/// Micro-dollars as dollars and cents (`$1,234.56`); below a cent, to the
/// micro-dollar (`$0.00039`).
fn dollars(micros: i64) -> String {
    let cents = (micros + 5_000) / 10_000;
    if micros != 0 && cents == 0 {
        let exact = format!("{:.6}", micros as f64 / 1e6);
        return format!("${}", exact.trim_end_matches('0'));
    }
    format!("${}.{:02}", count(cents / 100), cents % 100)
}

pub(super) fn billing(s: &Session, t: &Tenant, page: &BillingPage<'_>) -> Markup {
    let u = page.usage;
    let l = &u.limits;
    let commands = page.metered.iter().find(|(k, _)| k == "command_executed").map(|(_, q)| *q as i64).unwrap_or(0);
    let plan = t.subscription.plan;
    let price = crate::billing::price(plan);
    let upgrades: Vec<crate::model::Plan> = [crate::model::Plan::Team, crate::model::Plan::Enterprise]
        .into_iter()
        .filter(|p| crate::http::billing::rank(*p) > crate::http::billing::rank(plan))
        .collect();
    let meter = |label: &str, used: i64, max: i64, testid: &str| {
        let pct = if max > 0 { (used as f64 / max as f64 * 100.0).min(100.0) } else { 0.0 };
        html! {
            tr data-testid=(testid) {
                th scope="row" { (label) }
                td { (count(used)) " of " (count(max)) }
                td { meter min="0" max=(max.max(1)) value=(used.min(max.max(1))) aria-label={ (label) ": " (used) " of " (max) } {} " " (format!("{pct:.0} %")) }
            }
        }
    };
    layout(
        "Usage and billing",
        Some(s),
        html! {
            h1 { "Usage and billing" }
            p data-testid="plan" { "Plan: " strong { (plan.as_str()) } " — " (dollars(price.base_micros)) " a month, " (dollars(price.command_micros)) " a command." }
            div.table-wrap tabindex="0" {
                table.data {
                    caption { "Against the plan, this month (" (crate::audit::this_month()) ")" }
                    thead { tr { th scope="col" { "What" } th scope="col" { "Used" } th scope="col" { "Share" } } }
                    tbody {
                        (meter("kubectl commands", commands, l.max_commands_per_month, "commands"))
                        (meter("People", u.users, l.max_users, "users"))
                        (meter("Clusters", u.clusters, l.max_clusters, "clusters"))
                        tr { th scope="row" { "Active API tokens" } td { (count(u.active_tokens)) } td {} }
                        tr { th scope="row" { "Audit kept" } td { (l.max_audit_retention_days) " days" } td {} }
                    }
                }
            }
            @if !upgrades.is_empty() {
                section aria-labelledby="upgrade-h" {
                    h2 id="upgrade-h" { "Upgrade" }
                    @for p in &upgrades {
                        @let lim = p.limits();
                        form.inline method="post" action="/ui/billing/upgrade" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            input type="hidden" name="plan" value=(p.as_str());
                            button type="submit" data-testid={ "upgrade-" (p.as_str()) } {
                                "Upgrade to " (p.as_str()) " — " (dollars(crate::billing::price(*p).base_micros)) " a month"
                            }
                            " " span.muted { (count(lim.max_commands_per_month)) " commands a month, " (count(lim.max_clusters)) " clusters, " (count(lim.max_users)) " people; effective at once." }
                        }
                    }
                }
            }
            section aria-labelledby="invoice-h" {
                h2 id="invoice-h" { "Invoice for " (page.invoice.month) }
                form.inline method="get" action="/ui/billing" {
                    label { "Month "
                        select name="month" {
                            @for m in page.months { option value=(m) selected[*m == page.invoice.month] { (m) } }
                        }
                    }
                    " " button type="submit" { "Show" }
                }
                div.table-wrap tabindex="0" {
                    table.data data-testid="invoice" {
                        caption { "Lines of the " (page.invoice.month) " invoice, in " (page.invoice.currency) }
                        thead { tr { th scope="col" { "Line" } th scope="col" { "Quantity" } th scope="col" { "Unit price" } th scope="col" { "Amount" } } }
                        tbody {
                            @for line in &page.invoice.lines {
                                tr { td { (line.description) } td { (line.quantity) } td { (dollars(line.unit_price_micros)) } td { (dollars(line.amount_micros)) } }
                            }
                        }
                        tfoot { tr { th scope="row" colspan="3" { "Total" } td data-testid="invoice-total" { strong { (dollars(page.invoice.total_micros)) } } } }
                    }
                }
            }
        },
    )
}

/// A cluster's policy form and its delete form (tenant admins); `problem`
/// is why the last submission was refused.
pub(super) fn cluster_settings(s: &Session, c: &Cluster, saved: bool, problem: Option<&str>) -> Markup {
    let p = &c.policy;
    layout(
        &format!("{} settings", c.name),
        Some(s),
        html! {
            h1 { "Settings of " (c.name) }
            p { a href={ "/ui/clusters/" (c.id) } { "Back to the chat" } }
            @if saved { p.badge.up role="status" data-testid="saved" { "Policy saved; it holds from the next request." } }
            @if let Some(m) = problem { p.badge.down role="alert" data-testid="problem" { (m) } }
            section aria-labelledby="policy-h" {
                h2 id="policy-h" { "Policy" }
                p.hint { "KubeChat enforces this before a request reaches the cluster. Read-only and denied resources bind everyone, tenant admins too; allowed namespaces bind everyone but tenant admins." }
                form.card method="post" action={ "/ui/clusters/" (c.id) "/policy" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label { input type="checkbox" name="read_only" value="on" checked[p.read_only]; " Read-only: refuse every write" }
                    label for="allowed_namespaces" { "Namespaces people may touch (empty: all)" }
                    input type="text" id="allowed_namespaces" name="allowed_namespaces" value=(p.allowed_namespaces.join(", ")) placeholder="web, api" aria-describedby="ns-hint";
                    p.hint id="ns-hint" { "Comma-separated namespace names." }
                    label for="denied_resources" { "Resources nobody may touch" }
                    input type="text" id="denied_resources" name="denied_resources" value=(p.denied_resources.join(", ")) placeholder="secrets, pods/exec" aria-describedby="res-hint";
                    p.hint id="res-hint" { "Comma-separated, e.g. secrets or pods/exec." }
                    button type="submit" data-testid="save-policy" { "Save policy" }
                }
            }
            section aria-labelledby="delete-h" {
                h2 id="delete-h" { "Delete this cluster" }
                p { "Its agent's credentials are revoked at once and its tunnels close; the audit trail keeps its events." }
                form.card method="post" action={ "/ui/clusters/" (c.id) "/delete" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="confirm_name" { "Type " strong { (c.name) } " to confirm" }
                    input type="text" id="confirm_name" name="confirm_name" autocomplete="off" required;
                    button.danger type="submit" data-testid="delete-cluster" { "Delete " (c.name) }
                }
            }
        },
    )
}

/// A "Revoke" button posting the session's CSRF token to `action`, named
/// `label` for screen readers.
fn revoke_button(s: &Session, action: &str, label: &str) -> Markup {
    html! {
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(s.csrf);
            button.danger type="submit" aria-label=(label) { "Revoke" }
        }
    }
}

/// `v` encoded as a URL query value.
fn form_value(v: &str) -> String {
    let pair = serde_urlencoded::to_string([("q", v)]).unwrap_or_default();
    pair.strip_prefix("q=").unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::dollars;

    #[test]
    fn dollars_are_grouped_and_rounded() {
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(99_000_000), "$99.00");
        assert_eq!(dollars(1_234_567_890), "$1,234.57");
        assert_eq!(dollars(1_000), "$0.001");
        assert_eq!(dollars(390), "$0.00039");
        assert_eq!(dollars(999_000_000_000), "$999,000.00");
        assert_eq!(super::count(10_000_000), "10,000,000");
        assert_eq!(super::count(999), "999");
    }
}
