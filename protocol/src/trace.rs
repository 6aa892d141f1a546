//! W3C Trace Context (`traceparent`): one trace id follows a request from
//! the control plane through the relay and the agent to the API server, so
//! the log lines of every component (and the cluster's own traces) can be
//! joined. Each hop keeps the trace id and names itself with a span id of
//! its own. Sans-IO: callers pass the random bytes.

/// The header.
pub const HEADER: &str = "traceparent";

/// A `traceparent` value: version 00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace (16 bytes, not all zero).
    pub trace_id: [u8; 16],
    /// The caller's span (8 bytes, not all zero).
    pub span_id: [u8; 8],
    /// Trace flags (01: sampled).
    pub flags: u8,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceParent {
    /// A new trace from 24 random bytes (trace id, then span id).
    pub fn new(random: [u8; 24]) -> Self {
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        trace_id.copy_from_slice(&random[..16]);
        span_id.copy_from_slice(&random[16..]);
        trace_id[0] |= 1; // never all zero
        span_id[0] |= 1;
        Self { trace_id, span_id, flags: 1 }
    }

    /// Parses a header value; `None` unless it is a valid version-00 value
    /// (lowercase hex, ids not all zero).
    pub fn parse(v: &str) -> Option<Self> {
        let mut parts = v.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id = unhex::<16>(trace).filter(|t| t.iter().any(|b| *b != 0))?;
        let span_id = unhex::<8>(span).filter(|s| s.iter().any(|b| *b != 0))?;
        let flags = unhex::<1>(flags)?[0];
        Some(Self { trace_id, span_id, flags })
    }

    /// The same trace, as the next hop's span (8 random bytes).
    pub fn child(self, random: [u8; 8]) -> Self {
        let mut span_id = random;
        span_id[0] |= 1;
        Self { span_id, ..self }
    }

    /// The trace id, as logs show it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_malformed_values() {
        let t = TraceParent::new([7u8; 24]);
        let back = TraceParent::parse(&t.to_header()).expect("parses");
        assert_eq!(back, t);
        let c = t.child([9u8; 8]);
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(w3c).expect("example").to_header(), w3c);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }
}
