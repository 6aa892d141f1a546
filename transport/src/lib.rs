//! The I/O half of the KubeChat tunnel, shared by relay and agent.
//!
//! Code above this crate sees a tunnel as an [`Connection`] that opens and
//! accepts bidirectional streams; it never knows whether QUIC or (later) the
//! WebSocket fallback carries them.
//!
//! # Layout
//! - [`connection`]: the transport trait, [`Connection`], and its errors.
//! - [`quic`]: the QUIC transport (quinn + rustls).
//! - [`framed`]: reading and writing protocol frames on a stream.
//! - [`tls`]: certificate loading, rustls configurations, peer identity.
//! - [`pki`]: certificate authorities and certificates for development and tests.
//! - [`admin`]: the `/healthz`, `/readyz`, `/metrics` HTTP listener.
//! - [`limits`]: connection caps and handshake/header timeouts for listeners.
//! - [`metrics`]: minimal Prometheus counters, gauges and text encoding.
//! - [`process`]: what every binary's `main` does: logging, signals, exit codes.

pub mod admin;
pub mod connection;
pub mod framed;
pub mod limits;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod quic;
pub mod tls;
pub mod ws;

pub use connection::{BiStream, Connection, RecvHalf, SendHalf, TransportError, TransportKind};
pub use framed::{FramedRecv, FramedSend, StreamError};
