//! AWS Bedrock Runtime bodies: Converse usage (`inputTokens` excludes the
//! cache buckets, as Anthropic's does), ConverseStream events, and
//! InvokeModel(WithResponseStream) bodies and chunks (base64 model events
//! plus `amazon-bedrock-invocationMetrics`) in each model family's own
//! shape. The binary framing is `eventstream`.
//!
//! Native (non-Anthropic) shapes read, from AWS's Bedrock user guide
//! (inference parameters per model family) and the Nova user guide:
//! - Meta Llama: `generation`, `prompt_token_count`,
//!   `generation_token_count`, `stop_reason`;
//! - Mistral: `outputs[].text`, `outputs[].stop_reason`;
//! - Cohere Command (R): `text`, `is_finished`, `finish_reason`,
//!   `generations[].text` / `.finish_reason`;
//! - Amazon Titan Text: `outputText`, `inputTextTokenCount`,
//!   `totalOutputTextTokenCount` (stream) or `results[].tokenCount`,
//!   `completionReason`;
//! - Amazon Nova: Converse-like objects keyed by event (`contentBlockDelta`,
//!   `messageStop`, `metadata.usage`), or a Converse body when not streamed.

use base64::Engine as _;
use serde_json::Value;

use super::{
    finish::FinishReasons,
    usage::{Usage, non_empty, num, pointer},
};

/// Converse usage (`usage` of a response, or of a stream's `metadata` event).
pub fn converse_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let cache_read = num(u, "/cacheReadInputTokens");
    let cache_creation = num(u, "/cacheWriteInputTokens");
    let input = num(u, "/inputTokens").map(|i| i + cache_read.unwrap_or(0) + cache_creation.unwrap_or(0));
    Some(Usage { input, output: num(u, "/outputTokens"), cache_read, cache_creation, reasoning: None })
}

/// The usage totals Bedrock appends to the last chunk of an
/// InvokeModelWithResponseStream body.
pub fn invocation_metrics_usage(v: &Value) -> Option<Usage> {
    let m = v.get("amazon-bedrock-invocationMetrics")?;
    let cache_read = num(m, "/cacheReadInputTokenCount");
    let cache_creation = num(m, "/cacheWriteInputTokenCount");
    let input = num(m, "/inputTokenCount").map(|i| i + cache_read.unwrap_or(0) + cache_creation.unwrap_or(0));
    Some(Usage { input, output: num(m, "/outputTokenCount"), cache_read, cache_creation, reasoning: None })
}

/// Whether a ConverseStream event carries generated content (a
/// `contentBlockDelta` with text, reasoning text or tool input).
pub fn converse_delta_has_content(v: &Value) -> bool {
    let Some(d) = v.get("delta") else { return false };
    ["/text", "/reasoningContent/text", "/toolUse/input"].iter().any(|p| non_empty(d, p))
}

/// Whether any element of the list at `list` has a non-empty string at `field`.
fn any_non_empty(v: &Value, list: &str, field: &str) -> bool {
    pointer(v, list).and_then(Value::as_array).is_some_and(|items| items.iter().any(|i| non_empty(i, field)))
}

/// Whether a non-Anthropic model event (one chunk of an
/// InvokeModelWithResponseStream body) carries generated text: Llama's
/// `generation`, Titan's `outputText`, Cohere's `text` (its closing
/// `is_finished` event repeats the whole response: not a token), Mistral's
/// `outputs[].text` (text completion) or `choices[].message.content` (chat
/// completion, Mistral Large), Nova's `contentBlockDelta`.
pub fn native_chunk_has_content(v: &Value) -> bool {
    if v.get("is_finished").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    ["/generation", "/outputText", "/text"].iter().any(|p| non_empty(v, p))
        || any_non_empty(v, "/outputs", "/text")
        || any_non_empty(v, "/generations", "/text")
        || any_non_empty(v, "/choices", "/message/content")
        || v.get("contentBlockDelta").is_some_and(converse_delta_has_content)
}

/// Usage in a non-Anthropic model's own fields (a whole InvokeModel body
/// or one stream chunk): Nova's Converse-like `usage` (in a stream, inside
/// `metadata`), Llama's and Titan's counts. None when it names none.
pub fn native_usage(v: &Value) -> Option<Usage> {
    let nova = converse_usage(v.get("metadata").unwrap_or(v));
    if let Some(u) = nova.filter(|u| u.input.is_some() || u.output.is_some()) {
        return Some(u);
    }
    let input = num(v, "/prompt_token_count").or_else(|| num(v, "/inputTextTokenCount"));
    let output = num(v, "/generation_token_count")
        .or_else(|| num(v, "/totalOutputTextTokenCount"))
        .or_else(|| num(v, "/results/0/tokenCount"));
    (input.is_some() || output.is_some()).then_some(Usage { input, output, ..Usage::default() })
}

/// The finish reasons a model's own fields name (a whole InvokeModel body
/// or one stream chunk; null reasons of unfinished chunks are ignored).
pub fn native_finish_reasons(v: &Value, out: &mut FinishReasons) {
    for path in ["/stop_reason", "/completionReason", "/finish_reason", "/stopReason", "/messageStop/stopReason"] {
        out.set_at(v, path);
    }
    out.set_each(v, "/outputs", "stop_reason");
    out.set_each(v, "/choices", "stop_reason");
    out.set_each(v, "/results", "completionReason");
    out.set_each(v, "/generations", "finish_reason");
}

/// An InvokeModelWithResponseStream `chunk` message carrying `event` (a
/// model event's JSON, base64-encoded as Bedrock sends it): for the unit
/// tests, the fuzz target and the e2e mock provider.
pub fn encode_chunk(event: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(event);
    super::eventstream::encode(
        &[(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
        format!(r#"{{"bytes":"{b64}"}}"#).as_bytes(),
    )
}

/// The model event inside an InvokeModelWithResponseStream `chunk` payload
/// (`{"bytes":"<base64 JSON>"}`).
pub fn chunk_event(payload: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v.get("bytes")?.as_str()?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The model id in a Bedrock path (`/model/{modelId}/converse`),
/// percent-decoded (ARNs and inference profiles arrive encoded).
pub fn model_in_path(path: &str) -> Option<String> {
    let rest = &path[path.find("/model/")? + "/model/".len()..];
    let id = rest.split('/').next().filter(|s| !s.is_empty())?;
    Some(percent_decoded(id))
}

fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_decoded_from_the_path() {
        assert_eq!(
            model_in_path("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse").as_deref(),
            Some("anthropic.claude-3-5-haiku-20241022-v1:0")
        );
        assert_eq!(model_in_path("/model/us.amazon.nova-pro-v1:0/invoke").as_deref(), Some("us.amazon.nova-pro-v1:0"));
        assert_eq!(model_in_path("/model//converse"), None);
        assert_eq!(percent_decoded("a%2"), "a%2");
    }

    #[test]
    fn converse_input_adds_the_cache_buckets() {
        let v: Value = serde_json::from_str(
            r#"{"usage":{"inputTokens":10,"outputTokens":3,"cacheReadInputTokens":20,"cacheWriteInputTokens":4,"totalTokens":37}}"#,
        )
        .unwrap();
        assert_eq!(
            converse_usage(&v),
            Some(Usage {
                input: Some(34),
                output: Some(3),
                cache_read: Some(20),
                cache_creation: Some(4),
                reasoning: None
            })
        );
    }

    /// Mistral Large on Bedrock answers in the chat-completion shape: its
    /// text is in `choices[].message.content`, its reason in
    /// `choices[].stop_reason` (null until the last chunk).
    #[test]
    fn mistral_chat_completion_chunks_carry_content_and_finish_reasons() {
        let chunk = |text: &str, reason: &str| -> Value {
            serde_json::from_str(&format!(
                r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":{text}}},"stop_reason":{reason}}}]}}"#
            ))
            .unwrap()
        };
        assert!(native_chunk_has_content(&chunk(r#""Hel""#, "null")));
        assert!(!native_chunk_has_content(&chunk(r#""""#, "null")));
        let mut reasons = FinishReasons::default();
        native_finish_reasons(&chunk(r#""lo""#, "null"), &mut reasons);
        assert!(reasons.is_empty(), "a null reason of an unfinished chunk is no reason");
        native_finish_reasons(&chunk(r#""""#, r#""length""#), &mut reasons);
        assert_eq!(reasons.into_vec(), ["length"]);
    }
}
