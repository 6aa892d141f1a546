//! Prometheus metrics: the components count with these cheap atomics
//! (counters, gauges, counters by one label) and a request-duration
//! histogram; a scrape registers their values with the `prometheus-client`
//! registry, which encodes the OpenMetrics text.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::metrics::counter::{ConstCounter, Counter as PcCounter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge as PcGauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter per value of one label (low cardinality only: reasons, codes).
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<BTreeMap<String, u64>>);

impl LabeledCounter {
    /// Adds one for `label`.
    pub fn inc(&self, label: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // No allocation once the label is there (most calls, on hot paths).
        match m.get_mut(label) {
            Some(n) => *n += 1,
            None => {
                m.insert(label.to_string(), 1);
            }
        }
    }
    /// The count for `label`.
    pub fn get(&self, label: &str) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(label).copied().unwrap_or(0)
    }
    fn snapshot(&self) -> Vec<(String, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Durations of requests, by route, verb and status code: a Prometheus
/// histogram (100 µs to ~26 s).
#[derive(Debug, Clone)]
pub struct RequestDurations(Family<Vec<(String, String)>, Histogram>);

impl Default for RequestDurations {
    fn default() -> Self {
        Self(Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))))
    }
}

impl RequestDurations {
    /// Records one request that took `seconds`.
    pub fn observe(&self, route: &str, verb: &str, code: u16, seconds: f64) {
        let labels = vec![
            ("route".to_string(), route.to_string()),
            ("verb".to_string(), verb.to_string()),
            ("code".to_string(), code.to_string()),
        ];
        self.0.get_or_create(&labels).observe(seconds);
    }
}

/// Builds an exposition with the `prometheus-client` registry and its
/// OpenMetrics text encoding. Counters are named with their `_total`
/// suffix here, as they are scraped.
#[derive(Debug, Default)]
pub struct Encoder {
    registry: Registry,
}

/// The content type of [`Encoder::finish`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Encoder {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes a counter (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.registry.register(base, help, ConstCounter::new(value));
        self
    }

    /// Writes a gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> &mut Self {
        self.registry.register(name, help, ConstGauge::new(value));
        self
    }

    /// Writes a labelled counter.
    pub fn labeled(&mut self, name: &str, help: &str, label: &str, c: &LabeledCounter) -> &mut Self {
        let family = Family::<Vec<(String, String)>, PcCounter>::default();
        for (v, n) in c.snapshot() {
            family.get_or_create(&vec![(label.to_string(), v)]).inc_by(n);
        }
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.registry.register(base, help, family);
        self
    }

    /// Writes a gauge with one sample per label set.
    pub fn gauge_samples(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, String)>, i64)]) -> &mut Self {
        let family = Family::<Vec<(String, String)>, PcGauge>::default();
        for (labels, v) in samples {
            let labels: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect();
            family.get_or_create(&labels).set(*v);
        }
        self.registry.register(name, help, family);
        self
    }

    /// Writes a request-duration histogram (`name` ends in `_seconds`).
    pub fn histogram(&mut self, name: &str, help: &str, h: &RequestDurations) -> &mut Self {
        self.registry.register(name, help, h.0.clone());
        self
    }

    /// The finished text ([`CONTENT_TYPE`]).
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_text_format() {
        let c = LabeledCounter::default();
        c.inc("unknown_ca");
        c.inc("unknown_ca");
        let text = Encoder::new()
            .counter("kubechat_x_total", "x", 3)
            .labeled("kubechat_fail_total", "f", "reason", &c)
            .finish();
        assert!(text.contains("# TYPE kubechat_x counter\n"), "{text}");
        assert!(text.contains("\nkubechat_x_total 3\n"), "{text}");
        assert!(text.contains("kubechat_fail_total{reason=\"unknown_ca\"} 2\n"), "{text}");
        let h = RequestDurations::default();
        h.observe("/v1/tenants", "GET", 200, 0.0004);
        let text = Encoder::new().histogram("kubechat_x_request_duration_seconds", "d", &h).finish();
        assert!(
            text.contains(
                "kubechat_x_request_duration_seconds_count{route=\"/v1/tenants\",verb=\"GET\",code=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
