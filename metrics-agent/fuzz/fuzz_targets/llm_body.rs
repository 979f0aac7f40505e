//! LLM request and response bodies (JSON, SSE, JSON-array and NDJSON
//! streams) of every provider shape, finish reasons included: arbitrary
//! bytes never panic. For Bedrock's InvokeModelWithResponseStream the bytes
//! are also sent as the model events of well-framed `chunk` messages (split
//! at 0xff), so the per-family chunk readers see arbitrary JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::{bedrock, llm};

const INVOKE_STREAM: &str = "/model/meta.llama3-8b-instruct-v1:0/invoke-with-response-stream";

const TARGETS: [&str; 11] = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
    "/v1/embeddings",
    "/model/amazon.nova-lite-v1:0/converse",
    "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
    "/v2/chat",
    "/api/chat",
    INVOKE_STREAM,
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
    let invoke = llm::parse_request(INVOKE_STREAM, None, b"{}");
    let chunks: Vec<u8> = body.split(|&b| b == 0xff).flat_map(bedrock::encode_chunk).collect();
    let _ = llm::parse_response(&invoke, Some("application/vnd.amazon.eventstream"), &chunks, true);
});
