//! Token-bucket rate limits per key (API token, tenant). Sans clock: callers
//! pass `now`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A set of token buckets with one rate and burst.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate_per_sec` sustained, `burst` at once.
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        Self { rate_per_sec, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; `Err(wait)` when the bucket is empty.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 100_000 {
            b.retain(|_, (tokens, at)| *tokens < self.burst || now.duration_since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = b.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate_per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate_per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_burst_then_refills_at_rate() {
        let rl = RateLimiter::new(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check("a", t0).is_ok());
        }
        let wait = rl.check("a", t0).expect_err("bucket empty");
        assert!(wait <= Duration::from_millis(500));
        assert!(rl.check("b", t0).is_ok(), "keys are independent");
        assert!(rl.check("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.check("a", t0 + Duration::from_millis(500)).is_err());
    }
}
