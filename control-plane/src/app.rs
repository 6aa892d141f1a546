//! The control plane's shared state: storage, limiters, the relay clients,
//! the grant signer and everything a handler reads.

use crate::ratelimit::RateLimiter;
use crate::store::Db;

/// Shared state of every listener and handler.
pub struct App {
    /// Storage.
    pub db: Db,
    /// What warm requests read, from memory.
    pub cache: std::sync::Arc<crate::cache::Cache>,
    /// The one task that writes what requests produce.
    pub writer: crate::writer::Writer,
    /// The command quota, in memory.
    pub quota: crate::billing::Quota,
    /// Per-token limit.
    pub per_token: RateLimiter,
    /// Per-tenant limit.
    pub per_tenant: RateLimiter,
    /// Region of new tenants when none is given.
    pub default_region: String,
    /// Pooled connections to relays, if a relay client certificate is configured.
    pub relays: Option<crate::relays::RelayClients>,
    /// Signs per-request grants.
    pub signer: kubechat_protocol::grant::GrantSigner,
    /// The URL kubectl reaches this control plane at, for kubeconfigs.
    pub public_url: String,
    /// Anyone may create a (free, trial) tenant from `/ui/signup`.
    pub self_service_signup: bool,
    /// The CA (PEM) kubectl should trust for `public_url`, if not public.
    pub public_ca_pem: Option<String>,
    /// The agent chart reference `helm install` commands name.
    pub agent_chart: String,
    /// Agent enrollment, if an agent CA is configured.
    pub enrollment: Option<crate::enroll::Enrollment>,
    /// Per-tenant circuit breakers of the kube path.
    pub breakers: crate::breaker::Breakers,
    /// Prometheus metrics.
    pub metrics: crate::metrics::CpMetrics,
    /// Longest a REST request may take to be answered.
    pub request_timeout: std::time::Duration,
    /// The chat command service's shared state.
    pub chat: crate::chat::ChatState,
    /// Work a request starts that outlives it (upgraded connections,
    /// exports), awaited when the control plane drains.
    pub tasks: tokio_util::task::TaskTracker,
    /// Cancelled when a drain's grace period is over: upgraded streams
    /// (exec, attach, port-forward) still open then are closed, as open
    /// connections are, not left until the process exits.
    pub closing: tokio_util::sync::CancellationToken,
}
