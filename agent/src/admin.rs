//! The agent's admin endpoints.

use std::sync::Arc;

use kubechat_transport::admin::AdminHandler;

use crate::state::AgentState;

pub(crate) struct AgentAdmin {
    state: Arc<AgentState>,
}

impl AgentAdmin {
    pub(crate) fn new(state: Arc<AgentState>) -> Self {
        Self { state }
    }
}

impl AdminHandler for AgentAdmin {
    /// Ready only while at least one tunnel is up: a disconnected agent must
    /// not look healthy.
    fn ready(&self) -> Result<(), String> {
        if self.state.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        match self.state.metrics.tunnels_connected.get() {
            0 => Err("no tunnel to any relay is up".into()),
            _ => Ok(()),
        }
    }

    fn metrics(&self) -> String {
        self.state.metrics.render()
    }
}
