//! A circuit breaker per tenant on the kube path: when a tenant's requests
//! keep failing upstream (relay unreachable, or 502/503/504 from relay,
//! agent or API server), its requests are refused at the control plane for a
//! cooldown instead of tying up relay streams and agent slots that other
//! tenants share. After the cooldown one request goes through as a trial;
//! its success closes the breaker, its failure opens it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    trial_running: bool,
}

/// The breakers of every tenant.
#[derive(Debug)]
pub struct Breakers {
    tenants: Mutex<HashMap<String, State>>,
    threshold: u32,
    cooldown: Duration,
}

/// The breaker is open: how long until a trial request is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// Failures in a row that opened it.
    pub failures: u32,
    /// Time left.
    pub retry_in: Duration,
}

impl Breakers {
    /// Opens after `threshold` failures in a row, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { tenants: Mutex::new(HashMap::new()), threshold: threshold.max(1), cooldown }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a request of `tenant` go upstream now?
    pub fn check(&self, tenant: &str, now: Instant) -> Result<(), Open> {
        let mut map = self.lock();
        let Some(s) = map.get_mut(tenant) else { return Ok(()) };
        match s.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(Open { failures: s.failures, retry_in: until - now }),
            Some(_) if s.trial_running => Err(Open { failures: s.failures, retry_in: Duration::from_millis(100) }),
            Some(_) => {
                s.trial_running = true;
                Ok(())
            }
        }
    }

    /// The outcome of a request of `tenant` that went upstream.
    pub fn record(&self, tenant: &str, failed: bool, now: Instant) {
        let mut map = self.lock();
        if !failed {
            map.remove(tenant);
            return;
        }
        let s = map.entry(tenant.to_string()).or_default();
        s.failures = s.failures.saturating_add(1);
        s.trial_running = false;
        if s.failures >= self.threshold {
            s.open_until = Some(now + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_lets_one_trial_through_and_closes_on_success() {
        let b = Breakers::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record("a", true, t0);
        }
        assert!(b.check("a", t0).is_ok());
        b.record("a", true, t0);
        let open = b.check("a", t0).expect_err("open");
        assert_eq!(open.failures, 3);
        assert!(b.check("b", t0).is_ok(), "other tenants are not affected");
        let later = t0 + Duration::from_secs(11);
        assert!(b.check("a", later).is_ok(), "one trial");
        assert!(b.check("a", later).is_err(), "only one");
        b.record("a", true, later);
        assert!(b.check("a", later).is_err(), "the failed trial opens it again");
        let much_later = later + Duration::from_secs(11);
        assert!(b.check("a", much_later).is_ok());
        b.record("a", false, much_later);
        assert!(b.check("a", much_later).is_ok());
        assert!(b.check("a", much_later).is_ok(), "closed");
    }
}
