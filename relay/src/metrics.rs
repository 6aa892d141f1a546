//! The relay's Prometheus metrics.

use kubechat_transport::metrics::{Counter, Encoder, Gauge, LabeledCounter};

/// Counters and gauges of one relay process.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Tunnels connected now.
    pub tunnels_connected: Gauge,
    /// Tunnels accepted since start.
    pub tunnels_total: Counter,
    /// Request streams open now.
    pub streams_open: Gauge,
    /// Request streams opened since start.
    pub streams_total: Counter,
    /// Request bytes carried to agents.
    pub bytes_to_agents: Counter,
    /// Response bytes carried from agents.
    pub bytes_from_agents: Counter,
    /// Tunnel handshakes that failed, by reason.
    pub handshake_failures: LabeledCounter,
    /// Tunnels closed for malformed frames or messages.
    pub protocol_errors: Counter,
    /// Requests answered with an error before reaching an agent, by reason.
    pub requests_refused: LabeledCounter,
    /// Presence reports to the control plane, by result.
    pub presence_reports: LabeledCounter,
}

impl RelayMetrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        Encoder::new()
            .gauge("kubechat_relay_tunnels_connected", "Agent tunnels connected now.", self.tunnels_connected.get())
            .counter("kubechat_relay_tunnels_total", "Agent tunnels accepted since start.", self.tunnels_total.get())
            .gauge("kubechat_relay_streams_open", "Request streams open now.", self.streams_open.get())
            .counter("kubechat_relay_streams_total", "Request streams opened since start.", self.streams_total.get())
            .counter(
                "kubechat_relay_to_agent_bytes_total",
                "Request bytes carried to agents.",
                self.bytes_to_agents.get(),
            )
            .counter(
                "kubechat_relay_from_agent_bytes_total",
                "Response bytes carried from agents.",
                self.bytes_from_agents.get(),
            )
            .labeled(
                "kubechat_relay_handshake_failures_total",
                "Tunnel handshakes refused or failed, by reason.",
                "reason",
                &self.handshake_failures,
            )
            .counter(
                "kubechat_relay_protocol_errors_total",
                "Tunnels closed for malformed frames or messages.",
                self.protocol_errors.get(),
            )
            .labeled(
                "kubechat_relay_presence_reports_total",
                "Presence reports sent to the control plane, by result (ok, refused, timeout).",
                "result",
                &self.presence_reports,
            )
            .labeled(
                "kubechat_relay_requests_refused_total",
                "Requests answered with an error before reaching an agent, by reason.",
                "reason",
                &self.requests_refused,
            )
            .finish()
    }
}
