//! The transport trait: one tunnel connection carrying many streams.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use kubechat_protocol::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite};

/// The sending half of a stream.
pub type SendHalf = Box<dyn AsyncWrite + Send + Unpin>;
/// The receiving half of a stream.
pub type RecvHalf = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed future, so [`Connection`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One bidirectional stream. Shutting down `send` ends the stream in that
/// direction (end of request or response); dropping `recv` tells the peer to
/// stop sending.
pub struct BiStream {
    /// Bytes to the peer.
    pub send: SendHalf,
    /// Bytes from the peer.
    pub recv: RecvHalf,
}

/// Which transport carries a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// QUIC over UDP.
    Quic,
    /// WebSocket over TLS over TCP (the fallback).
    WebSocket,
}

impl TransportKind {
    /// Lowercase name for logs, metrics and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::WebSocket => "websocket",
        }
    }
}

/// Why a transport operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer closed the connection with a protocol error code.
    #[error("connection closed by peer: {code:?} ({reason})")]
    ClosedByPeer {
        /// The peer's close code.
        code: Option<ErrorCode>,
        /// The peer's reason text.
        reason: String,
    },
    /// We closed the connection.
    #[error("connection closed locally")]
    ClosedLocally,
    /// The peer stopped answering (idle timeout).
    #[error("connection timed out")]
    TimedOut,
    /// Any other transport failure (reset, TLS alert, I/O error).
    #[error("transport error: {0}")]
    Other(String),
}

impl TransportError {
    /// Whether this is an ordinary end of a connection, which logs at debug.
    pub fn is_normal_close(&self) -> bool {
        matches!(
            self,
            Self::ClosedLocally | Self::ClosedByPeer { code: Some(ErrorCode::Ok | ErrorCode::GoingAway), .. }
        )
    }
}

/// One tunnel connection between an agent and a relay.
///
/// Implementations are cheap handles (clones share the connection).
pub trait Connection: Send + Sync + 'static {
    /// Opens a new bidirectional stream. Waits while the peer's stream limit
    /// is reached. Cancel-safe: dropping the future opens nothing.
    fn open_stream(&self) -> BoxFuture<'_, Result<BiStream, TransportError>>;

    /// Accepts the next stream the peer opens. Cancel-safe: no stream is lost
    /// when the future is dropped.
    fn accept_stream(&self) -> BoxFuture<'_, Result<BiStream, TransportError>>;

    /// Closes the connection at once with `code`; open streams fail.
    fn close(&self, code: ErrorCode, reason: &str);

    /// Resolves when the connection is closed, with why. Cancel-safe.
    fn closed(&self) -> BoxFuture<'_, TransportError>;

    /// The peer's address.
    fn remote_addr(&self) -> SocketAddr;

    /// The transport's current round-trip time estimate.
    fn rtt(&self) -> Duration;

    /// Which transport this is.
    fn kind(&self) -> TransportKind;
}
