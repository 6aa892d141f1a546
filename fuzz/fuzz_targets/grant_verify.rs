//! Whatever bytes arrive as a grant, verification returns a typed error
//! (never a panic), and nothing unsigned is ever accepted.
#![no_main]

use kubechat_protocol::grant::{Expected, GrantVerifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v = GrantVerifier::new([("k".to_string(), vec![7u8; 32])]);
    let r = v.verify(data, 1_800_000_000_000, Expected { cluster: "prod", method: "GET", path: "/api" });
    assert!(r.is_err(), "a grant verified against a key nobody holds");
});
