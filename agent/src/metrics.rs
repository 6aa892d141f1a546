//! The agent's Prometheus metrics.

use kubechat_transport::metrics::{Counter, Encoder, Gauge, LabeledCounter, RequestDurations};

/// Counters and gauges of one agent process.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Tunnels up now.
    pub tunnels_connected: Gauge,
    /// Connection attempts to relays.
    pub connect_attempts: Counter,
    /// Failed connection attempts, by reason.
    pub connect_failures: LabeledCounter,
    /// GOAWAYs received from relays.
    pub goaways: Counter,
    /// Request streams open now.
    pub streams_open: Gauge,
    /// Request streams handled since start.
    pub streams_total: Counter,
    /// Streams that failed before or while reaching the API server, by reason.
    pub stream_errors: LabeledCounter,
    /// Grants passed, by how their origin was checked (`cluster_key`:
    /// their MAC under the cluster grant key; `signature`).
    pub grants_checked: LabeledCounter,
    /// Request bytes sent to the API server.
    pub request_bytes: Counter,
    /// Response bytes read from the API server.
    pub response_bytes: Counter,
    /// Last heartbeat round trip, microseconds.
    pub heartbeat_rtt_us: Gauge,
    /// When the certificate in use expires, Unix seconds.
    pub certificate_expiry: Gauge,
    /// Certificate renewals, by result (`success`, `failure`).
    pub renewals: LabeledCounter,
    /// Tunnels replaced by one with a renewed certificate.
    pub tunnel_rotations: Counter,
    /// Requests until the API server's response head, by route, verb and code.
    pub request_durations: RequestDurations,
}

impl AgentMetrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        Encoder::new()
            .histogram(
                "kubechat_agent_request_duration_seconds",
                "Requests until the API server's response head, by route, verb and code.",
                &self.request_durations,
            )
            .gauge("kubechat_agent_tunnels_connected", "Tunnels to relays up now.", self.tunnels_connected.get())
            .counter(
                "kubechat_agent_connect_attempts_total",
                "Connection attempts to relays.",
                self.connect_attempts.get(),
            )
            .labeled(
                "kubechat_agent_connect_failures_total",
                "Failed connection attempts, by reason.",
                "reason",
                &self.connect_failures,
            )
            .counter("kubechat_agent_goaways_total", "GOAWAYs received from draining relays.", self.goaways.get())
            .gauge("kubechat_agent_streams_open", "Request streams open now.", self.streams_open.get())
            .counter("kubechat_agent_streams_total", "Request streams handled since start.", self.streams_total.get())
            .labeled(
                "kubechat_agent_stream_errors_total",
                "Streams that failed, by reason.",
                "reason",
                &self.stream_errors,
            )
            .labeled(
                "kubechat_agent_grants_checked_total",
                "Grants passed, by how their origin was checked (cluster_key: the MAC under the cluster grant key; signature).",
                "by",
                &self.grants_checked,
            )
            .counter(
                "kubechat_agent_request_bytes_total",
                "Request bytes sent to the API server.",
                self.request_bytes.get(),
            )
            .counter(
                "kubechat_agent_response_bytes_total",
                "Response bytes read from the API server.",
                self.response_bytes.get(),
            )
            .gauge(
                "kubechat_agent_heartbeat_rtt_microseconds",
                "Last heartbeat round trip.",
                self.heartbeat_rtt_us.get(),
            )
            .gauge(
                "kubechat_agent_certificate_expiry_seconds",
                "When the agent certificate in use expires, Unix seconds.",
                self.certificate_expiry.get(),
            )
            .labeled("kubechat_agent_renewals_total", "Certificate renewals, by result.", "result", &self.renewals)
            .counter(
                "kubechat_agent_tunnel_rotations_total",
                "Tunnels replaced by one with a renewed certificate.",
                self.tunnel_rotations.get(),
            )
            .finish()
    }
}
