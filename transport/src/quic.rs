//! The QUIC transport: quinn endpoints and connections behind [`Connection`].

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use kubechat_protocol::{ErrorCode, ErrorCodeExt};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, IdleTimeout, TransportConfig, VarInt};

use crate::connection::{BiStream, BoxFuture, Connection, TransportError, TransportKind};
use crate::tls::TlsError;

/// Receive buffer asked for on server sockets: bursts of handshakes overflow
/// the kernel default (~212 KB) and drop packets.
const SERVER_SOCKET_BUFFER: usize = 8 << 20;

/// Transport parameters shared by both ends.
#[derive(Debug, Clone)]
pub struct QuicSettings {
    /// Close the connection after this long without any packet.
    pub idle_timeout: Duration,
    /// Send a keep-alive packet after this long without traffic.
    pub keep_alive: Duration,
    /// Streams the peer may open at once (request streams on the agent side).
    pub max_incoming_streams: u32,
    /// Flow-control window per stream, in bytes.
    pub stream_window: u32,
    /// Flow-control window per connection, in bytes.
    pub connection_window: u32,
}

impl Default for QuicSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(15),
            keep_alive: Duration::from_secs(5),
            max_incoming_streams: 1024,
            stream_window: 2 << 20,
            connection_window: 16 << 20,
        }
    }
}

impl QuicSettings {
    fn transport_config(&self) -> Result<TransportConfig, TlsError> {
        let mut t = TransportConfig::default();
        t.max_idle_timeout(Some(
            IdleTimeout::try_from(self.idle_timeout)
                .map_err(|_| TlsError::Config("quic idle timeout out of range".into()))?,
        ));
        t.keep_alive_interval(Some(self.keep_alive));
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_incoming_streams));
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        t.stream_receive_window(VarInt::from_u32(self.stream_window));
        t.receive_window(VarInt::from_u32(self.connection_window));
        t.send_window(u64::from(self.connection_window));
        Ok(t)
    }
}

/// Binds a QUIC server endpoint on `addr` with a large receive buffer.
pub fn server_endpoint(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    settings: &QuicSettings,
) -> Result<quinn::Endpoint, TlsError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(format!("quic server tls: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(settings.transport_config()?));
    let socket = bind_udp(addr, SERVER_SOCKET_BUFFER)?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| TlsError::Io(format!("cannot start quic endpoint on {addr}: {e}")))
}

/// A QUIC client configuration for dialling relays.
pub fn client_config(tls: rustls::ClientConfig, settings: &QuicSettings) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(format!("quic client tls: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(settings.transport_config()?));
    Ok(client)
}

/// Binds a client endpoint on an ephemeral port of the unspecified address
/// of the same family as `peer`.
pub fn client_endpoint(peer: SocketAddr) -> Result<quinn::Endpoint, TlsError> {
    let bind: SocketAddr = if peer.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = bind_udp(bind, 1 << 20)?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| TlsError::Io(format!("cannot start quic client endpoint: {e}")))
}

fn bind_udp(addr: SocketAddr, buffer: usize) -> Result<UdpSocket, TlsError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let io = |e: std::io::Error| TlsError::Io(format!("cannot bind udp {addr}: {e}"));
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into()).map_err(io)?;
    Ok(socket.into())
}

/// Maps quinn's connection error to ours.
pub fn map_connection_error(e: &ConnectionError) -> TransportError {
    match e {
        ConnectionError::ApplicationClosed(c) => TransportError::ClosedByPeer {
            code: ErrorCode::from_close_code(c.error_code.into_inner()),
            reason: String::from_utf8_lossy(&c.reason).into_owned(),
        },
        ConnectionError::LocallyClosed => TransportError::ClosedLocally,
        ConnectionError::TimedOut => TransportError::TimedOut,
        other => TransportError::Other(other.to_string()),
    }
}

/// A QUIC connection as a [`Connection`].
#[derive(Debug, Clone)]
pub struct QuicConnection {
    inner: quinn::Connection,
}

impl QuicConnection {
    /// Wraps an established quinn connection.
    pub fn new(inner: quinn::Connection) -> Self {
        Self { inner }
    }

    /// The underlying quinn connection.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }
}

impl Connection for QuicConnection {
    fn open_stream(&self) -> BoxFuture<'_, Result<BiStream, TransportError>> {
        Box::pin(async move {
            let (send, recv) = self.inner.open_bi().await.map_err(|e| map_connection_error(&e))?;
            Ok(BiStream { send: Box::new(send), recv: Box::new(recv) })
        })
    }

    fn accept_stream(&self) -> BoxFuture<'_, Result<BiStream, TransportError>> {
        Box::pin(async move {
            let (send, recv) = self.inner.accept_bi().await.map_err(|e| map_connection_error(&e))?;
            Ok(BiStream { send: Box::new(send), recv: Box::new(recv) })
        })
    }

    fn close(&self, code: ErrorCode, reason: &str) {
        self.inner.close(VarInt::from_u32(code.close_code()), reason.as_bytes());
    }

    fn closed(&self) -> BoxFuture<'_, TransportError> {
        Box::pin(async move { map_connection_error(&self.inner.closed().await) })
    }

    fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    fn rtt(&self) -> Duration {
        self.inner.rtt()
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }
}
