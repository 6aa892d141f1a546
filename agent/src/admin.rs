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
    /// Ready while a tunnel is up, or while the last one went down less than
    /// `ready_grace` ago (a reconnect is not an outage); never before the
    /// first tunnel. A disconnected agent must not look healthy for long.
    fn ready(&self) -> Result<(), String> {
        if self.state.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        if self.state.metrics.tunnels_connected.get() > 0 {
            return Ok(());
        }
        let down = *self.state.last_tunnel_down.lock().unwrap_or_else(|p| p.into_inner());
        match down {
            Some(at) if at.elapsed() < self.state.config.ready_grace => Ok(()),
            Some(at) => Err(format!(
                "no tunnel to any relay has been up for {}s (grace {}s)",
                at.elapsed().as_secs(),
                self.state.config.ready_grace.as_secs()
            )),
            None => Err("no tunnel to any relay is up yet".into()),
        }
    }

    fn metrics(&self) -> String {
        self.state.metrics.render()
    }
}
