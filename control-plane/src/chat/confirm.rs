//! Running a plan on its confirmation, and approving one.
//!
//! A confirmation runs its plan only if: it is this plan's (by hash), the
//! person confirming is the one who planned it, on the same cluster, within
//! [`super::CONFIRMATION_TTL`], not used before (one atomic update, so two
//! replicas cannot both run it), the typed name matches for destructive
//! plans, a second tenant admin approved it if the tenant requires that,
//! the person's role still allows every request, and every object it
//! changes still has the resourceVersion it had when planned. Then the
//! confirmation is on record (committed) before the first write leaves.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::client::KubeError;
use super::output::Block;
use super::{Asker, ChatError, Outcome, Stored, client_for, meter, now_ms, record, scope, sha256_hex, stored_of};
use crate::app::App;
use crate::model::Role;
use crate::store::chat::StoredPlan;

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ChatError {
    ChatError::new(status, code, message)
}

async fn load(app: &App, tenant_id: &str, cluster_id: &str, plan_id: &str) -> Result<StoredPlan, ChatError> {
    let not_found = || err(StatusCode::NOT_FOUND, "not_found", format!("no plan {plan_id} on cluster {cluster_id}"));
    let p = app.db.chat_plan(tenant_id, plan_id).await?.ok_or_else(not_found)?;
    if p.cluster_id != cluster_id {
        return Err(err(
            StatusCode::FORBIDDEN,
            "wrong_cluster",
            format!("plan {plan_id} is for another cluster; confirm it on its own cluster, or plan again here"),
        ));
    }
    Ok(p)
}

/// Handles `POST /v1/clusters/{id}/commands/{planId}/confirm`.
pub async fn confirm(
    app: &Arc<App>,
    who: &Asker<'_>,
    cluster_id: &str,
    plan_id: &str,
    confirmation: &str,
    typed_name: Option<&str>,
) -> Result<Outcome, ChatError> {
    let s = scope(app, who, cluster_id).await?;
    let p = load(app, &s.tenant.id, cluster_id, plan_id).await?;
    let user = &who.principal.user;
    if p.user_id != user.id {
        return Err(err(
            StatusCode::FORBIDDEN,
            "not_your_plan",
            "this plan was made by someone else; only they can confirm it (make your own plan)",
        ));
    }
    if p.kind == "stream" {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a stream needs no confirmation: read it at its stream URL",
        ));
    }
    let now = now_ms();
    if p.used_at.is_some() {
        return Err(err(
            StatusCode::CONFLICT,
            "already_used",
            "this confirmation was already used; plan the command again",
        ));
    }
    if now >= p.expires_at {
        return Err(err(
            StatusCode::GONE,
            "expired",
            format!(
                "the confirmation expired {} s ago (it is valid 2 minutes); plan the command again",
                (now - p.expires_at) / 1000
            ),
        ));
    }
    let given = sha256_hex(confirmation.as_bytes());
    if !constant_time_eq(given.as_bytes(), p.confirmation_hash.as_bytes()) {
        return Err(err(StatusCode::FORBIDDEN, "wrong_confirmation", "that confirmation does not belong to this plan"));
    }
    if let Some(want) = &p.type_to_confirm
        && typed_name != Some(want.as_str())
    {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "type_to_confirm",
            format!("this is destructive: type {want:?} as typedName to confirm it"),
        ));
    }
    if p.needs_approval && p.approved_by.is_none() {
        return Err(err(
            StatusCode::FORBIDDEN,
            "needs_approval",
            "this tenant requires a second tenant admin to approve destructive commands first (POST …/approve)",
        ));
    }
    let stored = stored_of(&p.body_json)?;
    if sha256_hex(p.body_json.as_bytes()) != p.body_hash {
        return Err(err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the stored plan does not match its hash; it was not run",
        ));
    }
    let client = client_for(app, who, &s, &p.command_line, &p.id);
    // The role may have changed since the plan: every request is checked again.
    let planned: Vec<(String, String)> = match &stored {
        Stored::Writes { steps, .. } => steps.iter().map(|st| (st.method.clone(), st.path.clone())).collect(),
        Stored::Exec { namespace, pod, container, command, .. } => {
            vec![("GET".into(), super::exec::path(namespace, pod, container.as_deref(), command))]
        }
        Stored::Stream { .. } => Vec::new(),
    };
    for (method, path) in &planned {
        let v = client.classify(method, path);
        if !v.allowed {
            return Err(err(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{} {} is forbidden: KubeChat: {}", v.verb, v.path, v.reason),
            ));
        }
    }
    let outcome_base = Outcome { id: p.id.clone(), kubectl: p.command_line.clone(), ..Default::default() };
    meter(app, &s, &super::Plan::default()).await?;
    if !app.db.use_chat_plan(&s.tenant.id, &p.id, &user.id, &p.confirmation_hash, now).await? {
        return Err(err(
            StatusCode::CONFLICT,
            "already_used",
            "this confirmation was already used; plan the command again",
        ));
    }
    // Every object still as it was when planned: otherwise a new plan,
    // never a blind write.
    let guards: Vec<&super::writes::Guard> = match &stored {
        Stored::Writes { steps, .. } => steps.iter().filter_map(|st| st.guard.as_ref()).collect(),
        Stored::Exec { guard, .. } => vec![guard],
        Stored::Stream { .. } => Vec::new(),
    };
    for g in guards {
        let now_rv = match client.get(&g.path).await {
            Ok(o) => o["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string(),
            Err(e) if e.is_not_found() => String::new(),
            Err(e) => return Err(ChatError::kube(&e)),
        };
        if now_rv != g.resource_version {
            let detail =
                format!("{} changed since the plan (resourceVersion {:?} → {:?})", g.path, g.resource_version, now_rv);
            let _ = record::step(
                app,
                &s,
                &p.id,
                &user.email,
                who.client_address,
                "outcome",
                &p.command_line,
                &detail,
                "deny",
                true,
            )
            .await;
            return Err(err(
                StatusCode::CONFLICT,
                "changed",
                format!("{detail}; nothing was run; plan the command again"),
            ));
        }
    }
    let confirmed = json!({"confirmedBy": user.email, "requestsHash": p.body_hash, "typedName": typed_name});
    if !record::step(
        app,
        &s,
        &p.id,
        &user.email,
        who.client_address,
        "confirmation",
        &p.command_line,
        &confirmed.to_string(),
        "allow",
        true,
    )
    .await
    {
        return Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "KubeChat cannot write the audit record of this confirmation right now, so nothing was run; plan again",
        ));
    }
    let mut outcome = outcome_base;
    match stored {
        Stored::Writes { steps, .. } => {
            let ctx = super::Ctx {
                client: client.clone(),
                discovery: Arc::default(),
                namespace: String::new(),
                explicit_namespace: None,
                all_namespaces: false,
                role: s.role,
                continue_token: None,
            };
            outcome.succeeded = true;
            for (i, st) in steps.iter().enumerate() {
                match super::writes::send(&ctx, st, false).await {
                    Ok(_) => outcome.done.push(st.summary.clone()),
                    Err(e) => {
                        outcome.succeeded = false;
                        outcome.error = Some(format!(
                            "step {} of {} ({}) failed: {}; {} step{} before it ran",
                            i + 1,
                            steps.len(),
                            st.summary,
                            e.message,
                            i,
                            if i == 1 { "" } else { "s" }
                        ));
                        break;
                    }
                }
            }
        }
        Stored::Exec { namespace, pod, container, command, .. } => {
            match super::exec::run(&client, &namespace, &pod, container.as_deref(), &command).await {
                Ok(out) => {
                    outcome.succeeded = out.exit_code == 0 && out.message.is_empty();
                    if !outcome.succeeded {
                        outcome.error = Some(format!("exit code {}: {}", out.exit_code, out.message));
                    }
                    outcome.done.push(format!("ran {:?} in pod {namespace}/{pod}", command.join(" ")));
                    let mut blocks = vec![Block::text("stdout", out.stdout)];
                    if !out.stderr.is_empty() {
                        blocks.push(Block::text("stderr", out.stderr));
                    }
                    outcome.result = Some(blocks);
                }
                Err(e) => {
                    outcome.error = Some(e.message.clone());
                }
            }
        }
        Stored::Stream { .. } => {}
    }
    outcome.requests = client.sent();
    let detail = json!({"succeeded": outcome.succeeded, "done": outcome.done, "error": outcome.error});
    let decision = if outcome.succeeded { "allow" } else { "deny" };
    let _ = record::step(
        app,
        &s,
        &p.id,
        &user.email,
        who.client_address,
        "outcome",
        &p.command_line,
        &detail.to_string(),
        decision,
        true,
    )
    .await;
    Ok(outcome)
}

/// Handles `POST /v1/clusters/{id}/commands/{planId}/approve`: a tenant
/// admin other than the planner approves a plan that needs it.
pub async fn approve(
    app: &Arc<App>,
    who: &Asker<'_>,
    cluster_id: &str,
    plan_id: &str,
) -> Result<serde_json::Value, ChatError> {
    let s = scope(app, who, cluster_id).await?;
    if !matches!(s.role, Role::TenantAdmin | Role::PlatformAdmin) {
        return Err(err(StatusCode::FORBIDDEN, "forbidden", "only a tenant admin can approve a plan"));
    }
    let p = load(app, &s.tenant.id, cluster_id, plan_id).await?;
    let me = &who.principal.user;
    if p.user_id == me.id {
        return Err(err(
            StatusCode::FORBIDDEN,
            "self_approval",
            "a plan needs a second tenant admin: you cannot approve your own",
        ));
    }
    if !p.needs_approval {
        return Err(err(StatusCode::BAD_REQUEST, "bad_request", "this plan needs no approval"));
    }
    if p.used_at.is_some() || now_ms() >= p.expires_at {
        return Err(err(StatusCode::GONE, "expired", "this plan was used or has expired"));
    }
    if !app.db.approve_chat_plan(&s.tenant.id, plan_id, &me.id).await? {
        return Err(err(StatusCode::CONFLICT, "conflict", "this plan could not be approved (used meanwhile?)"));
    }
    let detail = json!({"approvedBy": me.email});
    let _ = record::step(
        app,
        &s,
        plan_id,
        &me.email,
        who.client_address,
        "approval",
        &p.command_line,
        &detail.to_string(),
        "allow",
        true,
    )
    .await;
    Ok(json!({"id": plan_id, "approvedBy": me.email}))
}

/// Equality in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[allow(dead_code)]
fn _unused(_: KubeError) {}
