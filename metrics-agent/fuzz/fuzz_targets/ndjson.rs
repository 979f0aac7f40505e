//! NDJSON streams (Ollama): arbitrary bytes fed in arbitrary pieces never
//! panic, memory stays bounded, and the pieces give what the whole body
//! gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::{llm, stream::StreamBody};

const MAX_EVENT: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else { return };
    let request = llm::parse_request("/api/chat", None, br#"{"model":"llama3.2"}"#);
    let whole = {
        let mut s = StreamBody::ndjson(&request, MAX_EVENT);
        s.feed(body);
        s.finish(true)
    };
    let mut s = StreamBody::ndjson(&request, MAX_EVENT);
    for p in body.chunks(usize::from(piece).max(1)) {
        s.feed(p);
        assert!(s.memory() <= 4 * MAX_EVENT + 64, "{}", s.memory());
    }
    assert_eq!(s.finish(true), whole);
});
