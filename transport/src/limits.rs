//! Limits every listener applies before a connection may cost anything:
//! how many connections at once, how many from one address, how long the
//! TLS handshake and the request headers may take. A connection over a
//! limit is closed at once, before TLS and before authentication, so no
//! client (authenticated or not) can hold a listener.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, from everyone.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_per_address: usize,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest the headers of a request may take to arrive (HTTP/1.1).
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_per_address: 256,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener holds `max_connections`.
    Full,
    /// The address holds `max_per_address`.
    Address,
}

impl Refused {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "connection_cap",
            Self::Address => "address_cap",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Admits connections within [`Limits`]. Cheap to share.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    address: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    /// Admission within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, counts: Arc::new(Mutex::new(Counts::default())) }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A place for a connection from `address`, if the limits allow one.
    pub fn admit(&self, address: IpAddr) -> Result<Permit, Refused> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.limits.max_connections {
            return Err(Refused::Full);
        }
        let n = c.by_address.entry(address).or_insert(0);
        if *n >= self.limits.max_per_address {
            return Err(Refused::Address);
        }
        *n += 1;
        c.total += 1;
        Ok(Permit { address, counts: self.counts.clone() })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_within_both_limits_and_frees_on_drop() {
        let a = Admission::new(Limits { max_connections: 3, max_per_address: 2, ..Limits::default() });
        let (x, y): (IpAddr, IpAddr) = ([127, 0, 0, 2].into(), [127, 0, 0, 3].into());
        let p1 = a.admit(x).expect("first");
        let _p2 = a.admit(x).expect("second");
        assert_eq!(a.admit(x).expect_err("third from x"), Refused::Address);
        let _p3 = a.admit(y).expect("another address");
        assert_eq!(a.admit(y).expect_err("full"), Refused::Full);
        drop(p1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(y).is_ok(), "a freed place is reused");
    }
}
