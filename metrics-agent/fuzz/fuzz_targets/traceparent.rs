//! The W3C `traceparent` header value: arbitrary bytes never panic, and a
//! value that parses holds exactly the ids it was written with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::trace_context::TraceContext;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(t) = TraceContext::parse(&text) {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let ids = format!("-{}-{}-{:02x}", hex(&t.trace_id), hex(&t.parent_span_id), t.flags);
        assert!(text.contains(&ids), "{text:?} gave {ids}");
        assert!(t.trace_id != [0; 16] && t.parent_span_id != [0; 8]);
    }
});
