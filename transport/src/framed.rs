//! Reading and writing protocol frames on one stream.

use std::io;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use kubechat_protocol::frame::{self, DATA_CHUNK_SIZE, Frame, FrameDecoder, FrameError, MessageError};
use kubechat_protocol::messages::{control_message, stream_message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::connection::{RecvHalf, SendHalf};

/// Why reading or writing a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer sent bytes that are not a valid frame.
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent a frame that is not a valid message.
    #[error("invalid message: {0}")]
    Message(#[from] MessageError),
    /// The stream failed underneath (reset, connection lost).
    #[error("stream i/o: {0}")]
    Io(#[from] io::Error),
    /// The stream ended where a message was required.
    #[error("stream ended before {0}")]
    UnexpectedEnd(&'static str),
    /// A message arrived that is not allowed at this point.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
}

/// The receiving side of a stream, decoding frames.
pub struct FramedRecv {
    io: RecvHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
    eof: bool,
    /// How much to reserve before a read.
    chunk: usize,
}

impl FramedRecv {
    /// Reads frames from `io`, refusing any above `max_frame_size` bytes.
    pub fn new(io: RecvHalf, max_frame_size: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            decoder: FrameDecoder::new(max_frame_size),
            eof: false,
            chunk: DATA_CHUNK_SIZE,
        }
    }

    /// Like [`FramedRecv::new`] for a stream of small messages (a tunnel's
    /// control stream): no buffer until something arrives, and small reads,
    /// so an idle tunnel costs little memory.
    pub fn for_small_messages(io: RecvHalf, max_frame_size: usize) -> Self {
        Self { io, buf: BytesMut::new(), decoder: FrameDecoder::new(max_frame_size), eof: false, chunk: 512 }
    }

    /// Polls for the next frame; `Ready(Ok(None))` at a clean end of stream.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, StreamError>> {
        loop {
            if self.eof {
                return Poll::Ready(self.decoder.decode_eof(&mut self.buf).map_err(Into::into));
            }
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Poll::Ready(Ok(Some(frame)));
            }
            if self.buf.capacity() - self.buf.len() < self.chunk.min(4096) {
                self.buf.reserve(self.chunk);
            }
            let n =
                std::task::ready!(tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), cx, &mut self.buf))?;
            if n == 0 {
                self.eof = true;
            }
        }
    }

    /// If the next frame is already buffered in full and is a MESSAGE frame,
    /// consumes and returns its payload; otherwise consumes nothing. Never
    /// reads from the stream. Lets a body see that the response ends right
    /// after the current chunk.
    pub fn take_buffered_message(&mut self) -> Option<Bytes> {
        if self.buf.first() != Some(&frame::KIND_MESSAGE) {
            return None;
        }
        match self.decoder.decode(&mut self.buf) {
            Ok(Some(Frame::Message(m))) => Some(m),
            _ => None,
        }
    }

    /// The next frame, or `None` at a clean end of stream. Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, StreamError> {
        std::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// The next frame, which must be a stream message. Cancel-safe.
    pub async fn next_stream_message(&mut self, what: &'static str) -> Result<stream_message::Kind, StreamError> {
        match self.next_frame().await? {
            Some(Frame::Message(p)) => Ok(frame::decode_stream_message(p)?),
            Some(Frame::Data(_)) => Err(MessageError::UnexpectedData.into()),
            None => Err(StreamError::UnexpectedEnd(what)),
        }
    }

    /// The next control message, or `None` at end of stream. Cancel-safe.
    pub async fn next_control_message(&mut self) -> Result<Option<control_message::Kind>, StreamError> {
        match self.next_frame().await? {
            Some(Frame::Message(p)) => Ok(Some(frame::decode_control_message(p)?)),
            Some(Frame::Data(_)) => Err(MessageError::UnexpectedData.into()),
            None => Ok(None),
        }
    }

    /// Consumes the reader, returning whatever it had buffered beyond the
    /// last decoded frame and the raw stream.
    pub fn into_parts(self) -> (BytesMut, RecvHalf) {
        (self.buf, self.io)
    }
}

/// Chunks up to this size are copied into the queue so that a frame header
/// and its payload (and neighbouring small frames) leave in one write.
pub const COALESCE_LIMIT: usize = 16 * 1024;

/// The sending side of a stream, encoding frames. Not cancel-safe: a
/// dropped write may leave half a frame, so drop the stream with it.
///
/// `queue_*` methods only append to an internal buffer; `send_*` methods
/// append and then write everything queued. Coalescing a response head, a
/// small body and its end into one write lets them leave in one packet.
pub struct FramedSend {
    io: SendHalf,
    queue: BytesMut,
}

impl FramedSend {
    /// Writes frames to `io`.
    pub fn new(io: SendHalf) -> Self {
        Self { io, queue: BytesMut::new() }
    }

    /// Queues one stream message without writing it.
    pub fn queue_stream_message(&mut self, kind: stream_message::Kind) {
        self.queue.extend_from_slice(&frame::encode_stream_message(kind));
    }

    /// Queues small `data` as DATA frames without writing; large data is
    /// better sent with [`FramedSend::send_data`], which avoids the copy.
    pub fn queue_data(&mut self, data: &[u8]) {
        for chunk in data.chunks(DATA_CHUNK_SIZE) {
            frame::encode_data(chunk, &mut self.queue);
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.queue.is_empty() {
            self.io.write_all(&self.queue).await?;
            self.queue.clear();
        }
        Ok(())
    }

    /// Sends one stream message (and anything queued before it).
    pub async fn send_stream_message(&mut self, kind: stream_message::Kind) -> io::Result<()> {
        self.queue_stream_message(kind);
        self.flush().await
    }

    /// Sends one control message (and anything queued before it).
    pub async fn send_control_message(&mut self, kind: control_message::Kind) -> io::Result<()> {
        self.queue.extend_from_slice(&frame::encode_control_message(kind));
        self.flush().await
    }

    /// Sends `data` as DATA frames of at most [`DATA_CHUNK_SIZE`] bytes
    /// (after anything queued).
    pub async fn send_data(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(DATA_CHUNK_SIZE) {
            if chunk.len() <= COALESCE_LIMIT {
                frame::encode_data(chunk, &mut self.queue);
                self.flush().await?;
            } else {
                self.queue.extend_from_slice(&frame::header(frame::KIND_DATA, chunk.len()));
                self.flush().await?;
                self.io.write_all(chunk).await?;
            }
        }
        Ok(())
    }

    /// Sends raw, already-encoded bytes (for tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush().await?;
        self.io.write_all(bytes).await
    }

    /// Writes anything queued and ends the stream in this direction (QUIC FIN).
    pub async fn finish(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}

/// Copies `reader` into DATA frames until it ends; returns the bytes copied.
/// Does not finish `out`.
pub async fn copy_into_frames<R: AsyncRead + Unpin + ?Sized>(reader: &mut R, out: &mut FramedSend) -> io::Result<u64> {
    let mut buf = vec![0u8; DATA_CHUNK_SIZE];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        out.send_data(&buf[..n]).await?;
        total += n as u64;
    }
}

/// What ended [`copy_from_frames`].
#[derive(Debug)]
pub enum FramesEnd {
    /// The stream ended cleanly after `u64` bytes of data.
    Eof(u64),
    /// A message frame arrived (e.g. StreamEnd or Reset) after `u64` bytes.
    Message(Bytes, u64),
}

/// Writes DATA frames from `input` to `writer` until the stream ends or a
/// message frame arrives.
pub async fn copy_from_frames<W: AsyncWrite + Unpin + ?Sized>(
    input: &mut FramedRecv,
    writer: &mut W,
) -> Result<FramesEnd, StreamError> {
    let mut total = 0u64;
    loop {
        match input.next_frame().await? {
            Some(Frame::Data(d)) => {
                writer.write_all(&d).await?;
                total += d.len() as u64;
            }
            Some(Frame::Message(m)) => return Ok(FramesEnd::Message(m, total)),
            None => return Ok(FramesEnd::Eof(total)),
        }
    }
}
