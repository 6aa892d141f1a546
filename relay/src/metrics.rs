//! The relay's Prometheus metrics.

use kubechat_transport::metrics::{Counter, Encoder, Gauge, LabeledCounter, RequestDurations};

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
    /// Grants passed, by how their origin was checked (`gate`: the
    /// control plane's MAC for this relay; `signature`: Ed25519).
    pub grants_checked: LabeledCounter,
    /// Presence reports to the control plane, by result.
    pub presence_reports: LabeledCounter,
    /// Events the control plane acknowledged as stored.
    pub events_published: Counter,
    /// Events the control plane rejected as malformed.
    pub events_rejected: Counter,
    /// Events dropped, by reason (only when the spool's reserve is used up).
    pub events_dropped: LabeledCounter,
    /// Failed publish attempts.
    pub publish_failures: Counter,
    /// Events the control plane refused, written to the dead-letter file.
    pub events_dead_lettered: Counter,
    /// Events the dead-letter file holds.
    pub dead_letter_events: Gauge,
    /// Bytes in the event spool.
    pub spool_bytes: Gauge,
    /// Batches of events the spool's disk refused since start (mirrored
    /// from the spool by the publisher).
    pub spool_write_failures: Gauge,
    /// Events awaiting an acknowledgement.
    pub events_pending: Gauge,
    /// Audited requests refused because the spool was full.
    pub audit_refusals: Counter,
    /// Requests from the control plane until their response head, by
    /// route, verb and code.
    pub request_durations: RequestDurations,
}

impl RelayMetrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        Encoder::new()
            .histogram(
                "kubechat_relay_request_duration_seconds",
                "Requests from the control plane until their response head, by route, verb and code.",
                &self.request_durations,
            )
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
            .counter(
                "kubechat_relay_events_published_total",
                "Events the control plane stored.",
                self.events_published.get(),
            )
            .counter(
                "kubechat_relay_events_rejected_total",
                "Events the control plane rejected as malformed.",
                self.events_rejected.get(),
            )
            .labeled(
                "kubechat_relay_events_dropped_total",
                "Events dropped because even the spool's reserve was full, by reason.",
                "reason",
                &self.events_dropped,
            )
            .counter(
                "kubechat_relay_event_publish_failures_total",
                "Failed attempts to publish events.",
                self.publish_failures.get(),
            )
            .counter(
                "kubechat_relay_events_dead_lettered_total",
                "Events the control plane refused, kept in the dead-letter file.",
                self.events_dead_lettered.get(),
            )
            .gauge(
                "kubechat_relay_dead_letter_events",
                "Events the dead-letter file holds (never resent; see GET /v1/dead-letters).",
                self.dead_letter_events.get(),
            )
            .gauge("kubechat_relay_spool_bytes", "Bytes of events in the spool.", self.spool_bytes.get())
            .counter(
                "kubechat_relay_spool_write_failures_total",
                "Batches of events the spool's disk refused (kept in memory; audited requests refused meanwhile).",
                u64::try_from(self.spool_write_failures.get()).unwrap_or(0),
            )
            .gauge(
                "kubechat_relay_events_pending",
                "Events awaiting the control plane's acknowledgement.",
                self.events_pending.get(),
            )
            .counter(
                "kubechat_relay_audit_refusals_total",
                "Writes, exec, attach and port-forward refused because the audit spool was full.",
                self.audit_refusals.get(),
            )
            .labeled(
                "kubechat_relay_requests_refused_total",
                "Requests answered with an error before reaching an agent, by reason.",
                "reason",
                &self.requests_refused,
            )
            .labeled(
                "kubechat_relay_grants_checked_total",
                "Grants passed, by how their origin was checked (gate MAC or Ed25519 signature).",
                "by",
                &self.grants_checked,
            )
            .finish()
    }
}
