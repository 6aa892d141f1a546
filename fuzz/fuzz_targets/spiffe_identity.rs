//! Identity parsing never panics, and whatever parses formats back to itself.
#![no_main]

use kubechat_protocol::ClusterIdentity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = ClusterIdentity::from_spiffe_uri(s) {
        assert_eq!(id.spiffe_uri(), s);
    }
});
