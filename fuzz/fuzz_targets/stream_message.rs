//! Request-stream messages from a peer decode or fail with a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kubechat_protocol::frame::decode_stream_message(bytes::Bytes::copy_from_slice(data));
});
