//! Ollama's native API (`/api/chat`, `/api/generate`): usage from
//! `prompt_eval_count` and `eval_count` (present on the final object, the
//! one with `"done": true`), and which streamed lines carry text.

use serde_json::Value;

use super::usage::{Usage, num, pointer};

/// Usage of a final object; None before the end (`done` false or absent).
pub fn usage(v: &Value) -> Option<Usage> {
    if v.get("done").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    Some(Usage { input: num(v, "/prompt_eval_count"), output: num(v, "/eval_count"), ..Usage::default() })
}

/// Whether a streamed line carries generated text (`/api/chat`'s
/// `message.content`, `/api/generate`'s `response`, or thinking text).
pub fn has_content(v: &Value) -> bool {
    ["/message/content", "/message/thinking", "/response", "/thinking"]
        .iter()
        .any(|p| pointer(v, p).and_then(Value::as_str).is_some_and(|t| !t.is_empty()))
}

/// Ollama's errors are a bare message: `{"error":"model \"x\" not found"}`.
/// Its text is not a type; the record says only that the body was an error.
pub fn error(v: &Value) -> Option<String> {
    v.get("error").and_then(Value::as_str).map(|_| "error".to_string())
}
