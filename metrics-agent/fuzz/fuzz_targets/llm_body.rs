//! LLM request and response bodies (JSON, SSE, JSON-array and NDJSON
//! streams) of every provider shape, finish reasons included: arbitrary
//! bytes never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_agent::audit::llm;

const TARGETS: [&str; 10] = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
    "/v1/embeddings",
    "/model/amazon.nova-lite-v1:0/converse",
    "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
    "/v2/chat",
    "/api/chat",
    "/other",
];

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    let target = TARGETS[control as usize % TARGETS.len()];
    let request = llm::parse_request(target, None, body);
    for content_type in [None, Some("application/json"), Some("text/event-stream"), Some("application/x-ndjson")] {
        for complete in [true, false] {
            let _ = llm::parse_response(&request, content_type, body, complete);
        }
    }
});
