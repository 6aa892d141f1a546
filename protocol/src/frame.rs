//! Length-prefixed framing.
//!
//! Every frame is a 5-byte header followed by its payload:
//!
//! ```text
//! +--------+----------------------+----------------------+
//! | kind:1 | payload length:4 (BE) | payload ...          |
//! +--------+----------------------+----------------------+
//! ```
//!
//! `kind` is [`KIND_DATA`] (raw body bytes) or [`KIND_MESSAGE`] (one protobuf
//! message). A payload longer than the decoder's maximum is an error before
//! any of it is buffered, so a peer cannot make us allocate more than that.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::messages::{ControlMessage, StreamMessage, control_message, stream_message};

/// Frame kind of raw data (request or response body, upgraded bytes).
pub const KIND_DATA: u8 = 0;
/// Frame kind of one protobuf message.
pub const KIND_MESSAGE: u8 = 1;
/// Length of a frame header in bytes.
pub const HEADER_LEN: usize = 5;
/// Default maximum payload of one frame: 1 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;
/// Size of the DATA frames writers produce: 64 KiB.
pub const DATA_CHUNK_SIZE: usize = 64 * 1024;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Raw bytes.
    Data(Bytes),
    /// An encoded protobuf message; decode it with [`decode_stream_message`]
    /// or [`decode_control_message`].
    Message(Bytes),
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announced a payload above the maximum frame size.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced payload size.
        size: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// The header carried an unknown frame kind.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The input ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes of a frame buffered)")]
    Truncated {
        /// How many bytes of the unfinished frame were buffered.
        buffered: usize,
    },
}

/// Why a frame payload is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The payload is not valid protobuf for the expected message.
    #[error("malformed message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The message decoded but carries none of the known kinds.
    #[error("message carries no known kind")]
    Empty,
    /// A DATA frame arrived where a message was expected.
    #[error("expected a message frame, got data")]
    UnexpectedData,
}

/// Incremental frame decoder over a byte buffer.
///
/// Feed bytes into a `BytesMut` and call [`FrameDecoder::decode`] until it
/// returns `Ok(None)` (need more bytes). At end of input call
/// [`FrameDecoder::decode_eof`] to detect a truncated frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_size: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder that refuses payloads above `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Self {
        Self { max_frame_size }
    }

    /// The largest payload this decoder accepts.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Decodes one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete frame yet (it then
    /// reserves room for the rest of the frame). Never panics on any input.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = buf[0];
        if kind != KIND_DATA && kind != KIND_MESSAGE {
            return Err(FrameError::UnknownKind(kind));
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > self.max_frame_size {
            return Err(FrameError::TooLarge { size: len, max: self.max_frame_size });
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        Ok(Some(if kind == KIND_DATA { Frame::Data(payload) } else { Frame::Message(payload) }))
    }

    /// Like [`FrameDecoder::decode`], for when the input has ended: leftover
    /// bytes that do not form a frame are [`FrameError::Truncated`].
    pub fn decode_eof(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(FrameError::Truncated { buffered: buf.len() }),
        }
    }
}

/// The 5-byte header of a frame of `kind` with a payload of `len` bytes.
///
/// # Panics
/// Never for `len` up to `u32::MAX`; writers only produce frames up to
/// [`DEFAULT_MAX_FRAME_SIZE`].
pub fn header(kind: u8, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).expect("writers never produce frames above 4 GiB");
    let b = len.to_be_bytes();
    [kind, b[0], b[1], b[2], b[3]]
}

/// Appends a DATA frame holding `data` to `out`.
pub fn encode_data(data: &[u8], out: &mut BytesMut) {
    out.reserve(HEADER_LEN + data.len());
    out.put_slice(&header(KIND_DATA, data.len()));
    out.put_slice(data);
}

/// Encodes a protobuf message as one MESSAGE frame.
pub fn encode_message<M: Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut out = BytesMut::with_capacity(HEADER_LEN + len);
    out.put_slice(&header(KIND_MESSAGE, len));
    msg.encode(&mut out).expect("BytesMut grows, so encoding cannot run out of space");
    out.freeze()
}

/// Encodes a [`stream_message::Kind`] as one MESSAGE frame.
pub fn encode_stream_message(kind: stream_message::Kind) -> Bytes {
    encode_message(&StreamMessage { kind: Some(kind) })
}

/// Encodes a [`control_message::Kind`] as one MESSAGE frame.
pub fn encode_control_message(kind: control_message::Kind) -> Bytes {
    encode_message(&ControlMessage { kind: Some(kind) })
}

/// Decodes the payload of a MESSAGE frame on a request stream.
pub fn decode_stream_message(payload: Bytes) -> Result<stream_message::Kind, MessageError> {
    StreamMessage::decode(payload)?.kind.ok_or(MessageError::Empty)
}

/// Decodes the payload of a MESSAGE frame on the control stream.
pub fn decode_control_message(payload: Bytes) -> Result<control_message::Kind, MessageError> {
    ControlMessage::decode(payload)?.kind.ok_or(MessageError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;
    use proptest::prelude::*;

    fn decode_all(dec: &FrameDecoder, bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = dec.decode_eof(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn refuses_oversized_frame_before_buffering_it() {
        let dec = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&header(KIND_DATA, 17)[..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::TooLarge { size: 17, max: 16 }));
    }

    #[test]
    fn refuses_unknown_kind() {
        let dec = FrameDecoder::default();
        let mut buf = BytesMut::from(&[7u8, 0, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::UnknownKind(7)));
    }

    #[test]
    fn truncated_frame_is_an_error_at_eof() {
        let dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        encode_data(b"hello", &mut buf);
        buf.truncate(buf.len() - 1);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.decode_eof(&mut buf), Err(FrameError::Truncated { buffered: 9 }));
    }

    #[test]
    fn empty_message_is_an_error() {
        let frame = encode_message(&StreamMessage { kind: None });
        let dec = FrameDecoder::default();
        let frames = decode_all(&dec, &frame).expect("valid frame");
        let Frame::Message(payload) = &frames[0] else {
            panic!("expected a message frame");
        };
        assert_eq!(decode_stream_message(payload.clone()), Err(MessageError::Empty));
    }

    #[test]
    fn garbage_message_is_a_decode_error() {
        let err = decode_control_message(Bytes::from_static(&[0xff, 0xff, 0xff])).expect_err("garbage must not decode");
        assert!(matches!(err, MessageError::Decode(_)), "{err:?}");
    }

    fn arb_header() -> impl Strategy<Value = Header> {
        ("[a-zA-Z-]{1,20}", proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(name, value)| Header { name, value: value.into() })
    }

    fn arb_stream_kind() -> impl Strategy<Value = stream_message::Kind> {
        prop_oneof![
            (
                ".{0,40}",
                "[A-Z]{1,7}",
                ".{0,80}",
                proptest::collection::vec(arb_header(), 0..8),
                ".{0,30}",
                proptest::collection::vec(".{0,20}", 0..4),
                proptest::collection::vec(any::<u8>(), 0..64),
                any::<bool>()
            )
                .prop_map(|(request_id, method, uri, headers, user, groups, grant, upgrade)| {
                    stream_message::Kind::Open(StreamOpen {
                        request_id,
                        method,
                        uri,
                        headers,
                        identity: Some(Identity { user, groups }),
                        grant: grant.into(),
                        upgrade,
                    })
                }),
            (any::<u32>(), proptest::collection::vec(arb_header(), 0..8))
                .prop_map(|(status, headers)| stream_message::Kind::ResponseHead(ResponseHead { status, headers })),
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>(), 0..16i32).prop_map(
                |(status, bytes_in, bytes_out, duration_us, error)| {
                    stream_message::Kind::End(StreamEnd { status, bytes_in, bytes_out, duration_us, error })
                }
            ),
            (0..16i32, ".{0,80}").prop_map(|(code, message)| stream_message::Kind::Reset(Reset { code, message })),
        ]
    }

    fn arb_control_kind() -> impl Strategy<Value = control_message::Kind> {
        prop_oneof![
            (
                proptest::collection::vec(any::<u32>(), 0..4),
                proptest::collection::vec("[a-z-]{0,12}", 0..4),
                ".{0,20}",
                ".{0,20}",
                ".{0,8}"
            )
                .prop_map(|(versions, capabilities, agent_version, agent_id, cluster_grant_key_id)| {
                    control_message::Kind::Hello(Hello {
                        versions,
                        capabilities,
                        agent_version,
                        agent_id,
                        cluster_grant_key_id,
                    })
                }),
            (any::<u32>(), proptest::collection::vec("[a-z-]{0,12}", 0..4), ".{0,20}", any::<u32>()).prop_map(
                |(version, capabilities, relay_id, heartbeat_interval_ms)| {
                    control_message::Kind::HelloAck(HelloAck { version, capabilities, relay_id, heartbeat_interval_ms })
                }
            ),
            any::<u64>().prop_map(|nonce| control_message::Kind::Ping(Ping { nonce })),
            any::<u64>().prop_map(|nonce| control_message::Kind::Pong(Pong { nonce })),
            (".{0,40}", any::<u32>()).prop_map(|(reason, grace_period_ms)| {
                control_message::Kind::GoAway(GoAway { reason, grace_period_ms })
            }),
        ]
    }

    proptest! {
        #[test]
        fn stream_messages_round_trip(kind in arb_stream_kind()) {
            let encoded = encode_stream_message(kind.clone());
            let frames = decode_all(&FrameDecoder::default(), &encoded).expect("valid frame");
            prop_assert_eq!(frames.len(), 1);
            let Frame::Message(payload) = frames[0].clone() else { panic!("not a message") };
            prop_assert_eq!(decode_stream_message(payload).expect("decodes"), kind);
        }

        #[test]
        fn control_messages_round_trip(kind in arb_control_kind()) {
            let encoded = encode_control_message(kind.clone());
            let frames = decode_all(&FrameDecoder::default(), &encoded).expect("valid frame");
            let Frame::Message(payload) = frames[0].clone() else { panic!("not a message") };
            prop_assert_eq!(decode_control_message(payload).expect("decodes"), kind);
        }

        #[test]
        fn data_frames_round_trip_when_split_anywhere(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10),
            split in any::<prop::sample::Index>(),
        ) {
            let mut wire = BytesMut::new();
            for c in &chunks { encode_data(c, &mut wire); }
            let wire = wire.freeze();
            let cut = split.index(wire.len() + 1);
            let dec = FrameDecoder::default();
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(Frame::Data(d)) = dec.decode(&mut buf).expect("valid prefix") { got.push(d.to_vec()); }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = dec.decode_eof(&mut buf).expect("valid frames") {
                let Frame::Data(d) = f else { panic!("not data") };
                got.push(d.to_vec());
            }
            prop_assert_eq!(got, chunks);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let dec = FrameDecoder::new(256);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = dec.decode_eof(&mut buf) {
                if let Frame::Message(p) = frame {
                    let _ = decode_stream_message(p.clone());
                    let _ = decode_control_message(p);
                }
            }
        }
    }
}
