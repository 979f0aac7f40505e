//! Content-Encoding decoding: corrupt or hostile bodies never panic and
//! never decode beyond the limit (no compression bombs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::decode;

const CODINGS: [&str; 6] = ["gzip", "deflate", "br", "zstd", "gzip, br", "identity"];

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    let coding = CODINGS[control as usize % CODINGS.len()];
    if let Some(out) = decode::decode(Some(coding), body, 1 << 16) {
        assert!(coding == "identity" || out.len() <= 1 << 16);
    }
});
