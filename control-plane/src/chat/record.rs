//! Chat steps in the tenant's hash-chained audit log: kind `chat`, the
//! plan id as request id (and session), the step as verb.

use crate::app::App;
use crate::audit::AuditEntry;
use crate::writer::Write;

use super::Scope;

/// The audit kind of chat steps.
pub const KIND: &str = "chat";

/// How long a step waits for its commit when it must be durable first.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Records one step: `utterance`, `question`, `plan`, `refused`,
/// `approval`, `confirmation`, `outcome`, `stream`. `durable` waits until
/// it is committed (before a write runs); otherwise it joins the next
/// group commit. Never dropped: the writer retries until it commits.
/// `false`: a durable step did not commit (in time, or at all: see
/// [`crate::writer::WriteError::fate`]).
#[allow(clippy::too_many_arguments)]
pub async fn step(
    app: &App,
    s: &Scope,
    plan_id: &str,
    user: &str,
    client_address: &str,
    step: &str,
    command_line: &str,
    detail: &str,
    decision: &str,
    durable: bool,
) -> bool {
    let entry = AuditEntry {
        id: uuid::Uuid::now_v7().to_string(),
        time_ms: crate::directory::now_ms(),
        cluster_id: s.cluster.id.clone(),
        request_id: plan_id.to_string(),
        kind: KIND.into(),
        user: format!("kubechat:user:{user}"),
        groups: vec![format!("kubechat:tenant:{}", s.tenant.slug), format!("kubechat:role:{}", s.role.as_str())],
        verb: step.to_string(),
        decision: decision.to_string(),
        reason: detail.to_string(),
        client_address: client_address.to_string(),
        kubectl_command: command_line.to_string(),
        kubectl_session: plan_id.to_string(),
        ..Default::default()
    };
    let write = vec![Write::Audit { tenant: s.tenant.id.clone(), entry: Box::new(entry) }];
    let done = if durable { app.writer.commit(write, COMMIT_TIMEOUT).await } else { app.writer.queue(write).await };
    match done {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, step, plan = plan_id, "a chat step's audit record is not committed; {}", e.fate());
            false
        }
    }
}
