//! AWS Bedrock Runtime bodies: Converse usage (`inputTokens` excludes the
//! cache buckets, as Anthropic's does), ConverseStream events, and
//! InvokeModelWithResponseStream chunks (base64 model events plus
//! `amazon-bedrock-invocationMetrics`). The binary framing is `eventstream`.

use base64::Engine as _;
use serde_json::Value;

use super::usage::{Usage, num, pointer};

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
    ["/text", "/reasoningContent/text", "/toolUse/input"]
        .iter()
        .any(|p| pointer(d, p).and_then(Value::as_str).is_some_and(|s| !s.is_empty()))
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
}
