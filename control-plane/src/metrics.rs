//! The control plane's Prometheus metrics, served on its admin listener
//! (`--admin-listen`) with `/healthz` and `/readyz`.

use std::sync::Arc;

use kubechat_transport::admin::AdminHandler;
use kubechat_transport::metrics::{Counter, Encoder, LabeledCounter, RequestDurations};

/// Counters of one control-plane process.
#[derive(Debug, Default)]
pub struct CpMetrics {
    /// Kube-path requests answered, by HTTP status code.
    pub kube_requests: LabeledCounter,
    /// REST API requests answered, by HTTP status code.
    pub api_requests: LabeledCounter,
    /// Kube-path commands refused for an exhausted monthly quota.
    pub quota_refusals: Counter,
    /// Kube-path requests refused by an open circuit breaker.
    pub breaker_refusals: Counter,
    /// Events stored (or already stored) from relays.
    pub events_accepted: Counter,
    /// Events rejected as malformed.
    pub events_rejected: Counter,
    /// Presence reports, by result (`applied`, `resend_full`, `refused`).
    pub presence_reports: LabeledCounter,
    /// Connections the public listener closed at once, by reason
    /// (`connection_cap`, `address_cap`).
    pub connections_refused: LabeledCounter,
    /// Kube-path grants issued, by how they are sealed: `signed` (Ed25519
    /// and the cluster MAC), `macs_only` (the relay and agents on every
    /// route pass it by a MAC; see `Route::mac_key_id`), or `resent_signed`
    /// (a `macs_only` grant the relay asked to have again signed).
    pub grants_issued: LabeledCounter,
    /// Requests until their response head, by route, verb and code.
    pub request_durations: RequestDurations,
}

impl CpMetrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        self.encoder().finish()
    }

    /// These metrics in an exposition, for more to be added.
    pub fn encoder(&self) -> Encoder {
        let mut e = Encoder::new();
        e.histogram(
            "kubechat_cp_request_duration_seconds",
            "Requests until their response head, by route, verb and code.",
            &self.request_durations,
        )
        .labeled(
            "kubechat_cp_kube_requests_total",
            "Kube-path requests answered, by status code.",
            "code",
            &self.kube_requests,
        )
        .labeled(
            "kubechat_cp_api_requests_total",
            "REST API requests answered, by status code.",
            "code",
            &self.api_requests,
        )
        .counter(
            "kubechat_cp_quota_refusals_total",
            "kubectl commands refused for an exhausted monthly quota.",
            self.quota_refusals.get(),
        )
        .counter(
            "kubechat_cp_breaker_refusals_total",
            "Kube requests refused by a tenant's open circuit breaker.",
            self.breaker_refusals.get(),
        )
        .counter(
            "kubechat_cp_events_accepted_total",
            "Relay events stored (or already stored).",
            self.events_accepted.get(),
        )
        .counter("kubechat_cp_events_rejected_total", "Relay events rejected as malformed.", self.events_rejected.get())
        .labeled(
            "kubechat_cp_presence_reports_total",
            "Presence reports from relays, by result.",
            "result",
            &self.presence_reports,
        )
        .labeled(
            "kubechat_cp_grants_issued_total",
            "Kube-path grants issued, by seal: signed, macs_only where every hop passes them by a MAC, resent_signed when a relay asked for the signature.",
            "seal",
            &self.grants_issued,
        )
        .labeled(
            "kubechat_cp_connections_refused_total",
            "Connections the public listener closed at once, by reason.",
            "reason",
            &self.connections_refused,
        );
        e
    }
}

/// The admin listener's handler.
pub(crate) struct CpAdmin {
    pub(crate) app: Arc<crate::App>,
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

impl AdminHandler for CpAdmin {
    fn ready(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() { Err("shutting down".into()) } else { Ok(()) }
    }

    fn metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let w = self.app.writer.stats();
        let c = &self.app.cache;
        self.app
            .metrics
            .encoder()
            .counter("kubechat_cp_writer_batches_total", "Batches the writer committed.", w.batches.load(Relaxed))
            .counter("kubechat_cp_writer_writes_total", "Writes the writer committed.", w.writes.load(Relaxed))
            .counter(
                "kubechat_cp_writer_failures_total",
                "Commits the database refused (each batch is retried until it commits).",
                w.failures.load(Relaxed),
            )
            .counter(
                "kubechat_cp_writer_set_aside_total",
                "Writes the database refused for what they hold, set aside in the dead letters.",
                w.set_aside.load(Relaxed),
            )
            .counter(
                "kubechat_cp_writer_stragglers_total",
                "Commit tries unanswered past their deadline, left to finish while another went beside them.",
                w.stragglers.load(Relaxed),
            )
            .counter("kubechat_cp_cache_hits_total", "Reads answered from memory.", c.hits.load(Relaxed))
            .counter("kubechat_cp_cache_misses_total", "Reads that went to the database.", c.misses.load(Relaxed))
            .counter(
                "kubechat_cp_cache_drops_total",
                "Times the cache was dropped whole: its change log unreadable for longer than the offline window.",
                c.drops.load(Relaxed),
            )
            .counter(
                "kubechat_cp_cache_stragglers_total",
                "Change-log reads past their deadline, left to finish while another read went beside them.",
                c.stragglers.load(Relaxed),
            )
            .finish()
    }
}
