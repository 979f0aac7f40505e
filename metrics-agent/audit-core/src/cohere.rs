//! Cohere v2 chat bodies: usage (`usage.tokens`, else the billed units) and
//! the stream's event types (`content-delta` carries text, `message-end`
//! the usage).

use serde_json::Value;

use super::{
    finish::FinishReasons,
    usage::{Usage, num, pointer},
};

/// Usage of a response (`usage`) or of a stream's `message-end` (`delta.usage`).
pub fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").or_else(|| pointer(v, "/delta/usage")).filter(|u| u.is_object())?;
    let counts = u.get("tokens").filter(|t| t.is_object()).or_else(|| u.get("billed_units"))?;
    Some(Usage { input: num(counts, "/input_tokens"), output: num(counts, "/output_tokens"), ..Usage::default() })
}

/// The reason of a response (`finish_reason`) or of a stream's
/// `message-end` (`delta.finish_reason`).
pub fn finish_reason(v: &Value, out: &mut FinishReasons) {
    out.set_at(v, "/finish_reason");
    out.set_at(v, "/delta/finish_reason");
}

/// Whether a stream event carries generated text or tool input.
pub fn has_content(v: &Value) -> bool {
    match v.get("type").and_then(Value::as_str) {
        Some("content-delta") => {
            pointer(v, "/delta/message/content/text").and_then(Value::as_str).is_some_and(|t| !t.is_empty())
        }
        Some("tool-call-delta") => true,
        _ => false,
    }
}
