//! State shared by the agent's tasks.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::AgentMetrics;

/// Shared by every task of one agent.
pub(crate) struct AgentState {
    pub(crate) config: Config,
    /// The kube client for the API server (retries off, no read timeout).
    pub(crate) client: kube::Client,
    pub(crate) metrics: AgentMetrics,
    /// This agent's tenant and cluster, from its own certificate.
    pub(crate) identity: Option<kubechat_protocol::ClusterIdentity>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}
