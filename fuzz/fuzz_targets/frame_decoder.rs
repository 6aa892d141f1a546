//! Any bytes fed to the frame decoder, in any split, give frames or a typed
//! error, never a panic, and never a frame above the limit.
#![no_main]

use bytes::BytesMut;
use kubechat_protocol::frame::{Frame, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let dec = FrameDecoder::new(4096);
    let cut = usize::from(split).min(rest.len());
    let mut buf = BytesMut::from(&rest[..cut]);
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(Frame::Data(d) | Frame::Message(d))) => assert!(d.len() <= 4096),
            Ok(None) | Err(_) => break,
        }
    }
    buf.extend_from_slice(&rest[cut..]);
    while let Ok(Some(Frame::Data(d) | Frame::Message(d))) = dec.decode_eof(&mut buf) {
        assert!(d.len() <= 4096);
    }
});
