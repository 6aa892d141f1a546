//! Whatever headers a caller sends, none of the forbidden ones survive
//! sanitizing (the agent's defence against forged identity).
#![no_main]

use kubechat_protocol::headers::sanitize_request;
use kubechat_protocol::messages::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let headers: Vec<Header> = data
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let i = line.iter().position(|b| *b == b':')?;
            Some(Header {
                name: String::from_utf8_lossy(&line[..i]).into_owned(),
                value: bytes::Bytes::copy_from_slice(&line[i + 1..]),
            })
        })
        .collect();
    for upgrade in [false, true] {
        for h in sanitize_request(&headers, upgrade) {
            let n = h.name.to_ascii_lowercase();
            assert!(!n.starts_with("impersonate-") && n != "authorization" && !n.starts_with("x-remote-"), "{n}");
        }
    }
});
