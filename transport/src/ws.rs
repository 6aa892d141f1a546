//! The WebSocket fallback transport: a tunnel over TLS over TCP (through
//! HTTPS proxies), for networks where UDP (QUIC) cannot get out. The same
//! streams as QUIC, multiplexed by yamux over one WebSocket carrying binary
//! messages, with yamux's per-stream flow control (256 KiB windows), so one
//! slow stream never stalls the others.
//!
//! Close codes do not travel (yamux has none): a peer sees
//! [`TransportError::ClosedByPeer`] with no code; GOAWAY on the control
//! stream still tells an agent a relay is draining.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use kubechat_protocol::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::connection::{BiStream, BoxFuture, Connection, TransportError, TransportKind};

/// The path of the tunnel WebSocket on a relay.
pub const TUNNEL_PATH: &str = "/v1/tunnel";

/// WebSocket settings for tunnels: a small read buffer (tungstenite's
/// default allocates 128 KiB per connection up front, most of an idle
/// tunnel's memory); yamux frames are small and reads are streamed anyway.
pub fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// A WebSocket as a byte stream (binary messages; control frames ignored).
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
}

impl<S> WsIo<S> {
    /// Wraps an established WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self { ws, pending: Bytes::new() }
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_err)?;
        Pin::new(&mut self.ws).start_send(Message::Binary(Bytes::copy_from_slice(buf))).map_err(io_err)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_err)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_err)
    }
}

enum Cmd {
    Open(oneshot::Sender<Result<yamux::Stream, TransportError>>),
    Close,
}

/// A yamux session over a WebSocket, as a [`Connection`].
pub struct WsConnection {
    cmds: mpsc::UnboundedSender<Cmd>,
    inbound: tokio::sync::Mutex<mpsc::Receiver<yamux::Stream>>,
    closed: watch::Receiver<Option<TransportError>>,
    remote: SocketAddr,
}

fn yamux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(4096);
    c
}

fn stream(s: yamux::Stream) -> BiStream {
    let (recv, send) = tokio::io::split(s.compat());
    BiStream { send: Box::new(send), recv: Box::new(recv) }
}

impl WsConnection {
    /// Runs yamux over `io` (the client side when `client`), driven by a
    /// task of its own.
    pub fn new<S>(io: WsIo<S>, client: bool, remote: SocketAddr) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mode = if client { yamux::Mode::Client } else { yamux::Mode::Server };
        let mut conn = yamux::Connection::new(io.compat(), yamux_config(), mode);
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (in_tx, in_rx) = mpsc::channel::<yamux::Stream>(256);
        let (closed_tx, closed_rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut opens: VecDeque<oneshot::Sender<Result<yamux::Stream, TransportError>>> = VecDeque::new();
            let mut closing = false;
            let end: TransportError = std::future::poll_fn(|cx| {
                loop {
                    while let Poll::Ready(cmd) = cmd_rx.poll_recv(cx) {
                        match cmd {
                            Some(Cmd::Open(tx)) => opens.push_back(tx),
                            Some(Cmd::Close) | None => closing = true,
                        }
                        if closing {
                            break;
                        }
                    }
                    if closing {
                        return match conn.poll_close(cx) {
                            Poll::Ready(_) => Poll::Ready(TransportError::ClosedLocally),
                            Poll::Pending => Poll::Pending,
                        };
                    }
                    while !opens.is_empty() {
                        match conn.poll_new_outbound(cx) {
                            Poll::Ready(Ok(s)) => {
                                if let Some(tx) = opens.pop_front() {
                                    let _ = tx.send(Ok(s));
                                }
                            }
                            Poll::Ready(Err(e)) => {
                                let err = TransportError::Other(e.to_string());
                                for tx in opens.drain(..) {
                                    let _ = tx.send(Err(err.clone()));
                                }
                                return Poll::Ready(err);
                            }
                            Poll::Pending => break,
                        }
                    }
                    match conn.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(s))) => {
                            // A peer opening more than we take is refused
                            // stream by stream (the stream is dropped: reset).
                            let _ = in_tx.try_send(s);
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(TransportError::Other(e.to_string())),
                        Poll::Ready(None) => {
                            return Poll::Ready(TransportError::ClosedByPeer { code: None, reason: "closed".into() });
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
            let _ = closed_tx.send(Some(end));
        });
        Self { cmds: cmd_tx, inbound: tokio::sync::Mutex::new(in_rx), closed: closed_rx, remote }
    }

    fn gone(&self) -> TransportError {
        self.closed.borrow().clone().unwrap_or(TransportError::ClosedLocally)
    }
}

impl Connection for WsConnection {
    fn open_stream(&self) -> BoxFuture<'_, Result<BiStream, TransportError>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.cmds.send(Cmd::Open(tx)).map_err(|_| self.gone())?;
            let s = rx.await.map_err(|_| self.gone())??;
            Ok(stream(s))
        })
    }

    fn accept_stream(&self) -> BoxFuture<'_, Result<BiStream, TransportError>> {
        Box::pin(async move {
            let mut rx = self.inbound.lock().await;
            match rx.recv().await {
                Some(s) => Ok(stream(s)),
                None => Err(self.gone()),
            }
        })
    }

    fn close(&self, _code: ErrorCode, _reason: &str) {
        let _ = self.cmds.send(Cmd::Close);
    }

    fn closed(&self) -> BoxFuture<'_, TransportError> {
        let mut rx = self.closed.clone();
        Box::pin(async move {
            loop {
                if let Some(e) = rx.borrow_and_update().clone() {
                    return e;
                }
                if rx.changed().await.is_err() {
                    return TransportError::ClosedLocally;
                }
            }
        })
    }

    fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    fn rtt(&self) -> Duration {
        Duration::ZERO
    }

    fn kind(&self) -> TransportKind {
        TransportKind::WebSocket
    }
}
