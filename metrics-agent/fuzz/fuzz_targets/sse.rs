//! Server-sent events: arbitrary bytes, complete or cut off, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::sse;

fuzz_target!(|data: &[u8]| {
    let complete = sse::events(data, true);
    let partial = sse::events(data, false);
    assert!(partial.len() <= complete.len());
});
