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
                            a href="/ui/" { "Clusters" }
                            @if s.tenant.is_some() { a href="/ui/people" { "People and tokens" } }
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
pub(super) fn login(failed: Option<&str>) -> Markup {
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
        },
    )
}

/// A platform administrator's start page.
pub(super) fn platform_home(s: &Session) -> Markup {
    layout(
        "Platform",
        Some(s),
        html! {
            h1 { "Platform" }
            p { "You operate the platform. Tenants, MRR and every tunnel are served by the REST API (" code { "/v1/tenants" } ", " code { "/v1/tunnels" } ")." }
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
                table.data {
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

/// A cluster's chat; `turn` is an answer to show (no JavaScript).
pub(super) fn chat(s: &Session, c: &Cluster, tunnels: &[TunnelView], prefill: &str, turn: Option<Markup>) -> Markup {
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
            }
            @if !tunnels.is_empty() {
                details.tunnels {
                    summary { "Tunnel health (" (tunnels.len()) ")" }
                    table.data {
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

fn blocks(blocks: &Value) -> Markup {
    html! {
        @for b in blocks.as_array().into_iter().flatten() {
            @match b["type"].as_str().unwrap_or_default() {
                "table" => {
                    table.data {
                        caption { (text(&b["title"])) }
                        thead { tr { @for col in b["columns"].as_array().into_iter().flatten() { th scope="col" { (text(&col["name"])) } } } }
                        tbody { @for row in b["rows"].as_array().into_iter().flatten() {
                            tr { @for cell in row.as_array().into_iter().flatten() { td { (text(cell)) } } }
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
                table.data {
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
            @if plan.result.is_some() { section.result aria-label="Result" { (blocks(&p["result"])) } }
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
pub(super) fn outcome(o: &crate::chat::Outcome) -> Markup {
    let v = serde_json::to_value(o).unwrap_or_default();
    html! {
        section.outcome aria-label="Outcome" role="status" {
            @if o.succeeded { p.ok { "Done: " code { (o.kubectl) } } } @else { p.error role="alert" { "Failed: " (o.error.clone().unwrap_or_default()) } }
            ul { @for d in &o.done { li { (d) } } }
            @if o.result.is_some() { (blocks(&v["result"])) }
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
                table.data {
                    caption { "People and their roles" }
                    thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Role" } } }
                    tbody { @for u in users { tr { td { (u.email) } td { (u.name) } td { (role_label(u.role)) } } } }
                }
            }
            table.data {
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
                                form method="post" action={ "/ui/tokens/" (k.id) "/revoke" } {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    button.danger type="submit" aria-label={ "Revoke token " (k.name) } { "Revoke" }
                                }
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
        },
    )
}

/// The audit page: the chain's verification, plainly, and the latest events.
pub(super) fn audit(s: &Session, t: &Tenant, v: &Verification, items: &[AuditEntry]) -> Markup {
    let time = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp(ms / 1000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
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
            p { a href={ "/v1/tenants/" (t.id) "/audit/export" } { "Export (JSON Lines, with your API token)" } }
            table.data {
                caption { "Latest events, newest first" }
                thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Kind" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Decision" } } }
                tbody { @for e in items {
                    tr {
                        td { (e.seq) }
                        td { (time(e.time_ms)) }
                        td { (e.kind) }
                        td { (e.user) }
                        td { (e.verb) " " (e.resource) @if !e.name.is_empty() { "/" (e.name) } @if !e.namespace.is_empty() { " in " (e.namespace) } }
                        td { (e.decision) }
                    }
                } }
            }
        },
    )
}
