//! Minimal Prometheus metrics: counters, gauges, labelled counters and the
//! text exposition format. Enough for a handful of metrics per process,
//! without a registry crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
        *m.entry(label.to_string()).or_default() += 1;
    }
    /// The count for `label`.
    pub fn get(&self, label: &str) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(label).copied().unwrap_or(0)
    }
    fn snapshot(&self) -> Vec<(String, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Builds a text exposition.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Encoder {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// Writes a counter.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.head(name, help, "counter");
        let _ = writeln!(self.out, "{name} {value}");
        self
    }

    /// Writes a gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> &mut Self {
        self.head(name, help, "gauge");
        let _ = writeln!(self.out, "{name} {value}");
        self
    }

    /// Writes a labelled counter.
    pub fn labeled(&mut self, name: &str, help: &str, label: &str, c: &LabeledCounter) -> &mut Self {
        self.head(name, help, "counter");
        for (v, n) in c.snapshot() {
            let _ = writeln!(self.out, "{name}{{{label}=\"{}\"}} {n}", escape(&v));
        }
        self
    }

    /// Writes a gauge with one sample per label set.
    pub fn gauge_samples(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, String)>, i64)]) -> &mut Self {
        self.head(name, help, "gauge");
        for (labels, v) in samples {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = writeln!(self.out, "{name}{{{}}} {v}", l.join(","));
        }
        self
    }

    /// The finished text.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.out)
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
        assert!(text.contains("# TYPE kubechat_x_total counter\nkubechat_x_total 3\n"));
        assert!(text.contains("kubechat_fail_total{reason=\"unknown_ca\"} 2\n"));
    }
}
