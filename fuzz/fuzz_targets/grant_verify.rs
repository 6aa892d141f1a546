//! Whatever bytes arrive as a grant, verification returns a typed error
//! (never a panic), and nothing unsigned is ever accepted — with or
//! without a relay gate MAC beside it.
#![no_main]

use kubechat_protocol::grant::{Expected, GrantVerifier, gate_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v = GrantVerifier::new([("k".to_string(), vec![7u8; 32])]);
    let expected = Expected { cluster: "prod", method: "GET", path: "/api" };
    let r = v.verify(data, 1_800_000_000_000, expected);
    assert!(r.is_err(), "a grant verified against a key nobody holds");
    // The first bytes as the gate MAC header, the rest as the grant: a MAC
    // under a key the input cannot know never lets it through.
    let gate = gate_key(&[9u8; 32]).expect("32 bytes");
    let split = data.first().map_or(0, |&n| usize::from(n).min(data.len() - 1) + 1);
    let (mac, signed) = data.split_at(split);
    let mac = String::from_utf8_lossy(mac);
    let r = v.verify_gated(signed, Some((&gate, &mac)), 1_800_000_000_000, expected);
    assert!(r.is_err(), "a grant passed the gate with a MAC nobody made");
});
