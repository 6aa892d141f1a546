//! The chat command service: kubectl or plain English in, a plan out.
//!
//! A command is parsed with kubectl's own grammar ([`kubechat_chat::argv`])
//! or read by the English grammar ([`kubechat_chat::english`], names
//! matched against the cluster's live objects), and planned:
//! - every API request it makes is classified by the kube path's own
//!   classifier and authorized by the same `authorize()` (one policy for
//!   chat and kubectl), and sent through the kube path itself
//!   ([`client`]): the same audit records, grants and relays;
//! - reads run at once ([`reads`]);
//! - writes ([`writes`]) are dry-run on the server (`dryRun=All`) and
//!   answered with a human diff and a single-use confirmation bound to the
//!   person, the cluster, a hash of the exact requests and the objects'
//!   resourceVersions, valid for [`CONFIRMATION_TTL`]; destructive ones
//!   also need the object's name typed back, and, if the tenant says so, a
//!   second tenant admin's approval ([`confirm`]);
//! - `exec` runs only commands on the tenant's allow-list ([`exec`]);
//! - `logs -f` and `get -w` stream as Server-Sent Events ([`stream`]).
//!
//! Every step — the utterance, the plan, the dry run, the confirmation and
//! who gave it, the outcome — goes into the tenant's hash-chained audit
//! log ([`record`]); each executed command is metered once as
//! `command_executed`.

pub mod client;
pub mod confirm;
pub mod discovery;
pub mod exec;
pub mod llm;
pub mod output;
pub mod reads;
pub mod record;
pub mod settings;
pub mod stream;
pub mod writes;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use kubechat_chat::argv::{self, Command, Invocation, Risk};
use kubechat_chat::discovery::{ApiResource, Discovery};
use kubechat_chat::english::{self, Interpretation, Question};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::auth::Principal;
use crate::model::{Cluster, Role, Tenant};
use client::{ClusterClient, KubeError, RequestView};
use output::Block;
use settings::ChatSettings;
use writes::WriteStep;

/// How long a confirmation (or a stream's start) is valid.
pub const CONFIRMATION_TTL: Duration = Duration::from_secs(120);

/// State of the command service shared by requests.
#[derive(Default)]
pub struct ChatState {
    /// Each cluster's discovery.
    pub discovery: discovery::DiscoveryCache,
    /// Streams running on this replica, to stop them.
    pub streams: stream::Streams,
    /// Whether a tenant's LLM endpoint may be on loopback over plain http
    /// (`--chat-llm-allow-loopback`; tests and the dev stack).
    pub llm_allow_loopback: bool,
}

/// A command as it is sent.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRequest {
    /// A kubectl command line, one argument per element (never a shell).
    pub argv: Option<Vec<String>>,
    /// Plain English.
    pub text: Option<String>,
    /// The manifest of `apply -f -`.
    pub manifest: Option<String>,
    /// The namespace when the command names none (default `default`).
    pub namespace: Option<String>,
    /// The next page of a `get`.
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// A confirmation.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The plan's confirmation, as the plan answered it.
    pub confirmation: String,
    /// The name a destructive plan asks to be typed back.
    pub typed_name: Option<String>,
}

/// Where a command line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// argv.
    Kubectl,
    /// The English grammar.
    English,
    /// The tenant's LLM endpoint (a proposal that went through every check).
    Llm,
}

/// One write's dry run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// What the write does.
    pub summary: String,
    /// What changes, field by field ("spec.replicas: 2 → 3").
    pub changes: Vec<String>,
}

/// The answer to a command: a plan (and for reads, their result).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Its id.
    pub id: String,
    /// The cluster.
    pub cluster: String,
    /// The command line it stands for, always shown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kubectl: String,
    /// Where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Its risk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
    /// Each API request it makes (reads made, writes it will send), with
    /// the kube path's classification and `authorize()` verdict.
    pub requests: Vec<RequestView>,
    /// Whether it waits for a confirmation.
    pub needs_confirmation: bool,
    /// The server-side dry run of each write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Vec<DryRun>>,
    /// The single-use confirmation (writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<String>,
    /// What must be typed back as `typedName` (destructive commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_to_confirm: Option<String>,
    /// A second tenant admin must approve first.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_approval: bool,
    /// When the confirmation expires (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// SHA-256 of exactly what will be sent (what the confirmation binds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_hash: Option<String>,
    /// A read's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Vec<Block>>,
    /// Where a stream (`logs -f`, `get -w`) is read as Server-Sent Events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Notes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// A question back (ambiguous or unclear English).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
}

/// Why a command was not run, with the plan so far.
#[derive(Debug)]
pub struct ChatError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// The plan, as far as it got (its requests and their verdicts).
    pub plan: Option<Box<Plan>>,
}

impl ChatError {
    /// An error without a plan.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), plan: None }
    }

    fn with(mut self, plan: &Plan) -> Self {
        self.plan = Some(Box::new(plan.clone()));
        self
    }

    /// The cluster's (or KubeChat's) `Status` as a chat error.
    fn kube(e: &KubeError) -> Self {
        let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_GATEWAY);
        let status = if status.is_success() { StatusCode::BAD_GATEWAY } else { status };
        let code = match status {
            // KubeChat's own refusal, or the cluster's RBAC.
            StatusCode::FORBIDDEN if e.message.contains("KubeChat:") => "forbidden",
            StatusCode::FORBIDDEN => "cluster_forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            StatusCode::TOO_MANY_REQUESTS => "quota",
            StatusCode::BAD_REQUEST => "bad_request",
            s if s.is_server_error() => "cluster_unavailable",
            _ => "cluster_error",
        };
        Self::new(status, code, e.message.clone())
    }
}

impl From<crate::store::StoreError> for ChatError {
    fn from(e: crate::store::StoreError) -> Self {
        let api = crate::error::ApiError::from(e);
        Self::new(api.status, api.code, api.message)
    }
}

/// What one command runs against, as its person reaches it.
pub struct Ctx {
    /// Requests as the person, through the kube path.
    pub client: ClusterClient,
    /// The cluster's resource types.
    pub discovery: Arc<Discovery>,
    /// The namespace of namespaced resources.
    pub namespace: String,
    /// `-n` as given, if it was.
    pub explicit_namespace: Option<String>,
    /// `-A`.
    pub all_namespaces: bool,
    /// The caller's role on the cluster.
    pub role: Role,
    /// The next page of a `get`.
    pub continue_token: Option<String>,
}

impl Ctx {
    /// The namespace a request for `r` goes to (`None`: cluster-scoped, or
    /// all namespaces).
    pub fn ns_for(&self, r: &ApiResource) -> Option<String> {
        (r.namespaced && !self.all_namespaces).then(|| self.namespace.clone())
    }
}

/// A command line as shown: `kubectl` and the arguments, quoted where a
/// shell would need it.
pub fn command_line(argv: &[String]) -> String {
    let mut out = String::from("kubectl");
    for a in argv.iter().skip(usize::from(argv.first().is_some_and(|a| a == "kubectl"))) {
        out.push(' ');
        let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
        if plain {
            out.push_str(a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

/// SHA-256, hex.
pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    crate::directory::now_ms()
}

/// Who is asking, and for which cluster.
pub struct Asker<'a> {
    /// The person.
    pub principal: &'a Principal,
    /// Their address.
    pub client_address: &'a str,
}

/// The cluster, its tenant, and the asker's role on it.
pub struct Scope {
    /// The cluster's tenant.
    pub tenant: Tenant,
    /// The cluster.
    pub cluster: Cluster,
    /// The asker's role there.
    pub role: Role,
}

/// Resolves the cluster as the kube path does.
pub async fn scope(app: &App, who: &Asker<'_>, cluster_id: &str) -> Result<Scope, ChatError> {
    let (tenant, cluster, role) =
        crate::kube::resolve_cluster(app, who.principal, cluster_id).await.map_err(|(status, message)| {
            let code = match status {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::SERVICE_UNAVAILABLE => "storage_unavailable",
                _ => "refused",
            };
            ChatError::new(status, code, message)
        })?;
    Ok(Scope { tenant, cluster, role })
}

fn client_for(app: &Arc<App>, who: &Asker<'_>, s: &Scope, command_line: &str, plan_id: &str) -> ClusterClient {
    ClusterClient::new(
        app.clone(),
        who.principal.clone(),
        who.client_address.to_string(),
        s.cluster.id.clone(),
        command_line.to_string(),
        plan_id.to_string(),
        s.role,
        s.cluster.policy.clone(),
    )
}

/// Reads English into a command line, resolving names against the
/// cluster's objects (listed as the person). `Err` carries a plan with a
/// question, or why it was not understood.
async fn english_argv(
    app: &App,
    ctx: &Ctx,
    text: &str,
    settings: &ChatSettings,
    plan: &mut Plan,
) -> Result<(Vec<String>, Source), ChatError> {
    let mut reading = english::interpret(text, &ctx.discovery, &ctx.namespace);
    if let Interpretation::Command(draft) = &reading
        && let Some(lookup) = &draft.lookup
    {
        let path = lookup.resource.collection_path(lookup.namespace.as_deref()) + "?limit=500";
        let names: Vec<String> = match ctx.client.get(&path).await {
            Ok(list) => list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .collect(),
            Err(e) => return Err(ChatError::kube(&e).with(plan)),
        };
        reading = english::resolve(draft.clone(), &names);
    }
    match reading {
        Interpretation::Command(draft) => Ok((draft.argv, Source::English)),
        Interpretation::Question(q) => {
            plan.question = Some(q);
            Err(ChatError::new(StatusCode::OK, "question", "a question back").with(plan))
        }
        Interpretation::NotUnderstood { message, examples } => {
            if let Some(llm) = &settings.llm {
                match llm::propose(llm, text, &ctx.namespace, app.chat.llm_allow_loopback).await {
                    Ok(argv) => return Ok((argv, Source::Llm)),
                    Err(e) => tracing::info!(error = %e, "the tenant's LLM endpoint proposed nothing usable"),
                }
            }
            let mut m = message;
            if !examples.is_empty() {
                m.push_str(&format!("; for example: {}", examples.join(" · ")));
            }
            Err(ChatError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_understood", m).with(plan))
        }
    }
}

/// Handles `POST /v1/clusters/{id}/commands`.
pub async fn command(
    app: &Arc<App>,
    who: &Asker<'_>,
    cluster_id: &str,
    req: CommandRequest,
) -> Result<Plan, ChatError> {
    let s = scope(app, who, cluster_id).await?;
    let settings = ChatSettings::of(&s.tenant);
    let plan_id = format!("p{}", uuid::Uuid::now_v7().simple());
    let mut plan = Plan { id: plan_id.clone(), cluster: s.cluster.id.clone(), ..Default::default() };
    let utterance = match (&req.argv, &req.text) {
        (Some(a), None) => command_line(a),
        (None, Some(t)) => t.chars().take(2000).collect(),
        _ => {
            return Err(ChatError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "send exactly one of argv (a kubectl command line) or text (plain English)",
            ));
        }
    };
    let user = who.principal.user.email.clone();
    let _ =
        record::step(app, &s, &plan_id, &user, who.client_address, "utterance", &utterance, &utterance, "allow", false)
            .await;
    let result = plan_command(app, who, &s, &settings, req, &mut plan).await;
    match &result {
        Ok(p) => {
            let must = p.needs_confirmation;
            let what = if must { "plan" } else { "outcome" };
            let detail = json!({"risk": p.risk, "requests": p.requests.len(), "dryRun": p.dry_run, "requestsHash": p.requests_hash});
            let _ = record::step(
                app,
                &s,
                &plan_id,
                &user,
                who.client_address,
                what,
                &p.kubectl,
                &detail.to_string(),
                "allow",
                must,
            )
            .await;
        }
        Err(e) if e.code == "question" => {
            let detail = e.plan.as_ref().and_then(|p| p.question.as_ref()).map(|q| q.text.clone()).unwrap_or_default();
            let _ = record::step(app, &s, &plan_id, &user, who.client_address, "question", "", &detail, "allow", false)
                .await;
        }
        Err(e) => {
            let line = e.plan.as_ref().map(|p| p.kubectl.clone()).unwrap_or_default();
            let _ = record::step(
                app,
                &s,
                &plan_id,
                &user,
                who.client_address,
                "refused",
                &line,
                &format!("{}: {}", e.code, e.message),
                "deny",
                false,
            )
            .await;
        }
    }
    result
}

async fn plan_command(
    app: &Arc<App>,
    who: &Asker<'_>,
    s: &Scope,
    settings: &ChatSettings,
    req: CommandRequest,
    plan: &mut Plan,
) -> Result<Plan, ChatError> {
    let namespace = req.namespace.clone().unwrap_or_else(|| "default".into());
    let probe = client_for(app, who, s, "", &plan.id);
    let discovery = app.chat.discovery.get(&probe, false).await.map_err(|e| ChatError::kube(&e).with(plan))?;
    let mut ctx = Ctx {
        client: probe,
        discovery,
        namespace: namespace.clone(),
        explicit_namespace: None,
        all_namespaces: false,
        role: s.role,
        continue_token: req.continue_token.clone(),
    };
    let (argv, source) = match (req.argv, req.text) {
        (Some(a), _) => (a, Source::Kubectl),
        (None, Some(t)) => english_argv(app, &ctx, &t, settings, plan).await?,
        (None, None) => unreachable_input()?,
    };
    plan.source = Some(source);
    plan.kubectl = command_line(&argv);
    let inv = match argv::parse(&argv, req.manifest.as_deref(), &ctx.discovery) {
        Err(argv::Refusal::Invalid(m)) if m.contains("doesn't have a resource type") => {
            // A CRD may be new: read discovery again once.
            ctx.discovery =
                app.chat.discovery.get(&ctx.client, true).await.map_err(|e| ChatError::kube(&e).with(plan))?;
            argv::parse(&argv, req.manifest.as_deref(), &ctx.discovery)
        }
        other => other,
    };
    let inv = inv.map_err(|r| match r {
        argv::Refusal::Refused(m) => ChatError::new(StatusCode::FORBIDDEN, "refused", m).with(plan),
        argv::Refusal::Invalid(m) => ChatError::new(StatusCode::BAD_REQUEST, "invalid_command", m).with(plan),
    })?;
    if source != Source::Kubectl && inv.command.risk() == Risk::Interactive {
        return Err(ChatError::new(
            StatusCode::FORBIDDEN,
            "refused",
            "exec is only run from an explicit kubectl command line",
        )
        .with(plan));
    }
    ctx.client = ctx.client.for_command(&plan.kubectl);
    ctx.explicit_namespace = inv.namespace.clone();
    ctx.namespace = inv.namespace.clone().unwrap_or(namespace);
    ctx.all_namespaces = inv.all_namespaces;
    plan.risk = Some(inv.command.risk());
    let out = match inv.command.risk() {
        Risk::Read if inv.command.streams() => stream::plan(app, s, &ctx, &inv, plan).await,
        Risk::Read => run_read(app, s, &ctx, &inv, plan).await,
        Risk::Interactive => plan_exec(app, s, settings, &ctx, &inv, plan).await,
        Risk::Write | Risk::Destructive => plan_write(app, s, settings, &ctx, &inv, plan).await,
    };
    let sent = ctx.client.sent();
    match out {
        Ok(mut p) => {
            // Sent requests first, then the writes still to come.
            let pending: Vec<RequestView> = p.requests.drain(..).filter(|r| r.status == 0).collect();
            p.requests = sent;
            p.requests.extend(pending);
            Ok(p)
        }
        Err(mut e) => {
            let mut p = e.plan.take().map(|b| *b).unwrap_or_else(|| plan.clone());
            let pending: Vec<RequestView> = p.requests.drain(..).filter(|r| r.status == 0).collect();
            p.requests = sent;
            p.requests.extend(pending);
            e.plan = Some(Box::new(p));
            Err(e)
        }
    }
}

fn unreachable_input() -> Result<(Vec<String>, Source), ChatError> {
    Err(ChatError::new(StatusCode::BAD_REQUEST, "bad_request", "send argv or text"))
}

/// Counts the command against the owner's quota, or refuses it.
async fn meter(app: &App, s: &Scope, plan: &Plan) -> Result<(), ChatError> {
    crate::kube::count_command(app, &s.tenant, &s.cluster.id, "").await.map_err(|e| match e {
        crate::kube::ApiOrQuota::Api(a) => ChatError::new(a.status, a.code, a.message).with(plan),
        crate::kube::ApiOrQuota::Quota(m) => ChatError::new(StatusCode::TOO_MANY_REQUESTS, "quota", m).with(plan),
    })
}

async fn run_read(app: &Arc<App>, s: &Scope, ctx: &Ctx, inv: &Invocation, plan: &mut Plan) -> Result<Plan, ChatError> {
    meter(app, s, plan).await?;
    match reads::run(ctx, &inv.command).await {
        Ok(blocks) => {
            plan.result = Some(blocks);
            Ok(plan.clone())
        }
        Err(e) => {
            plan.requests = ctx.client.sent();
            Err(ChatError::kube(&e).with(plan))
        }
    }
}

/// What a stored write plan will send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Stored {
    /// Writes, in order.
    Writes {
        /// The writes.
        steps: Vec<WriteStep>,
        /// The dry run shown.
        dry_run: Vec<DryRun>,
    },
    /// One exec.
    Exec {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// Container.
        container: Option<String>,
        /// The command.
        command: Vec<String>,
        /// The pod's resourceVersion when planned ("" if not read).
        guard: writes::Guard,
    },
    /// A stream to start.
    Stream {
        /// The one request it keeps open.
        path: String,
        /// `logs` (lines) or `watch` (watch events).
        what: String,
    },
}

/// What a confirmation of a stored plan must also carry.
#[derive(Debug, Clone, Default)]
struct Gate {
    /// The name to type back (destructive commands).
    type_to_confirm: Option<String>,
    /// Whether a second tenant_admin must approve first.
    needs_approval: bool,
}

/// Stores `body` as plan `plan.id`, with a fresh confirmation.
async fn store(
    app: &App,
    s: &Scope,
    who: &Principal,
    plan: &mut Plan,
    kind: &str,
    body: &Stored,
    gate: Gate,
) -> Result<(), ChatError> {
    let Gate { type_to_confirm, needs_approval } = gate;
    let body_json = serde_json::to_string(body)
        .map_err(|e| ChatError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let body_hash = sha256_hex(body_json.as_bytes());
    let token = format!("kcc_{}", uuid::Uuid::new_v4().simple());
    let now = now_ms();
    let expires_at = now + CONFIRMATION_TTL.as_millis() as i64;
    let stored = crate::store::chat::StoredPlan {
        id: plan.id.clone(),
        tenant_id: s.tenant.id.clone(),
        cluster_id: s.cluster.id.clone(),
        user_id: who.user.id.clone(),
        kind: kind.to_string(),
        command_line: plan.kubectl.clone(),
        risk: serde_json::to_value(plan.risk).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        body_json,
        body_hash: body_hash.clone(),
        confirmation_hash: sha256_hex(token.as_bytes()),
        type_to_confirm: type_to_confirm.clone(),
        needs_approval,
        approved_by: None,
        created_at: now,
        expires_at,
        used_at: None,
    };
    app.db.insert_chat_plan(&stored).await?;
    plan.confirmation = Some(token);
    plan.expires_at = Some(expires_at);
    plan.requests_hash = Some(body_hash);
    plan.type_to_confirm = type_to_confirm;
    plan.needs_approval = needs_approval;
    Ok(())
}

async fn plan_write(
    app: &Arc<App>,
    s: &Scope,
    settings: &ChatSettings,
    ctx: &Ctx,
    inv: &Invocation,
    plan: &mut Plan,
) -> Result<Plan, ChatError> {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let planned = writes::plan(ctx, &inv.command, &now).await.map_err(|e| ChatError::kube(&e).with(plan))?;
    plan.notes = planned.notes.clone();
    // The writes to come, each classified and authorized as the kube path will.
    let pending: Vec<RequestView> = planned.steps.iter().map(|st| ctx.client.classify(&st.method, &st.path)).collect();
    if let Some(denied) = pending.iter().find(|v| !v.allowed) {
        let mut p = plan.clone();
        p.requests = pending.clone();
        return Err(ChatError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} {} is forbidden: KubeChat: {}", denied.verb, denied.path, denied.reason),
        )
        .with(&p));
    }
    if planned.steps.is_empty() {
        plan.result = Some(vec![Block::text("nothing to do", planned.notes.join("\n"))]);
        return Ok(plan.clone());
    }
    let mut dry = Vec::new();
    for (step, before) in planned.steps.iter().zip(&planned.before) {
        match writes::send(ctx, step, true).await {
            Ok(after) => {
                let changes = if step.method == "DELETE" || step.path.ends_with("/eviction") {
                    Vec::new()
                } else if before.is_null() {
                    vec![format!("new {}", after["kind"].as_str().unwrap_or("object"))]
                } else {
                    writes::diff(before, &after, 40)
                };
                dry.push(DryRun { summary: step.summary.clone(), changes });
            }
            Err(e) => {
                let mut p = plan.clone();
                p.requests = pending.clone();
                return Err(ChatError {
                    message: format!("the server-side dry run of {:?} failed: {}", step.summary, e.message),
                    ..ChatError::kube(&e)
                }
                .with(&p));
            }
        }
    }
    let destructive = inv.command.risk() == Risk::Destructive;
    let type_to_confirm = if destructive { planned.type_to_confirm.clone() } else { None };
    plan.dry_run = Some(dry.clone());
    plan.needs_confirmation = true;
    let body = Stored::Writes { steps: planned.steps.clone(), dry_run: dry };
    store(
        app,
        s,
        ctx.client_principal(),
        plan,
        "write",
        &body,
        Gate { type_to_confirm, needs_approval: destructive && settings.require_approval },
    )
    .await?;
    plan.requests = pending;
    Ok(plan.clone())
}

async fn plan_exec(
    app: &Arc<App>,
    s: &Scope,
    settings: &ChatSettings,
    ctx: &Ctx,
    inv: &Invocation,
    plan: &mut Plan,
) -> Result<Plan, ChatError> {
    let Command::Exec { object, container, command } = &inv.command else {
        return Err(ChatError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "not an exec"));
    };
    if !exec::allowed(&settings.exec_allow_list, command) {
        let list = if settings.exec_allow_list.is_empty() {
            "exec is off for this tenant (its allow-list is empty)".to_string()
        } else {
            format!("allowed: {}", settings.exec_allow_list.iter().map(|e| e.join(" ")).collect::<Vec<_>>().join(", "))
        };
        return Err(ChatError::new(
            StatusCode::FORBIDDEN,
            "exec_not_allowed",
            format!(
                "{:?} is not on the tenant's exec allow-list; {list}; a tenant admin sets settings.chat.execAllowList",
                command.join(" ")
            ),
        )
        .with(plan));
    }
    let (pod, note) = reads::pod_of(ctx, object).await.map_err(|e| ChatError::kube(&e).with(plan))?;
    if let Some(n) = note {
        plan.notes.push(n);
    }
    let ns = ctx.namespace.clone();
    let pod_obj = ctx
        .client
        .get(&format!("/api/v1/namespaces/{ns}/pods/{pod}"))
        .await
        .map_err(|e| ChatError::kube(&e).with(plan))?;
    let path = exec::path(&ns, &pod, container.as_deref(), command);
    let view = ctx.client.classify("GET", &path);
    if !view.allowed {
        let mut p = plan.clone();
        p.requests = vec![view.clone()];
        return Err(ChatError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("pods/exec is forbidden: KubeChat: {}", view.reason),
        )
        .with(&p));
    }
    let dry = vec![DryRun {
        summary: format!(
            "runs {:?} in pod {ns}/{pod}{} (exec has no dry run)",
            command.join(" "),
            container.as_ref().map(|c| format!(" container {c}")).unwrap_or_default()
        ),
        changes: Vec::new(),
    }];
    plan.dry_run = Some(dry);
    plan.needs_confirmation = true;
    let guard = writes::Guard {
        path: format!("/api/v1/namespaces/{ns}/pods/{pod}"),
        resource_version: pod_obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string(),
    };
    let body = Stored::Exec { namespace: ns, pod, container: container.clone(), command: command.clone(), guard };
    store(app, s, ctx.client_principal(), plan, "exec", &body, Gate::default()).await?;
    plan.requests = vec![view];
    Ok(plan.clone())
}

impl Ctx {
    fn client_principal(&self) -> &Principal {
        self.client.principal()
    }
}

/// The outcome of a confirmed plan.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The plan.
    pub id: String,
    /// Its command line.
    pub kubectl: String,
    /// Each write sent, with its answer.
    pub requests: Vec<RequestView>,
    /// What was done, step by step.
    pub done: Vec<String>,
    /// Whether every step succeeded.
    pub succeeded: bool,
    /// What failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Output (exec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Vec<Block>>,
}

/// A JSON value of `body_json` (the stored plan).
fn stored_of(json: &str) -> Result<Stored, ChatError> {
    serde_json::from_str(json).map_err(|e| {
        ChatError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("a stored plan is unreadable: {e}"))
    })
}

/// A value for logs: the plan's id and command line.
pub fn describe(p: &Plan) -> Value {
    json!({"id": p.id, "kubectl": p.kubectl})
}
