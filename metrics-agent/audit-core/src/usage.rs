//! Token usage as every provider's parser reports it (`Usage`), the bound
//! on a believable token count, and an allocation-free JSON Pointer lookup.
//! A leaf: `llm` and the per-format parsers (`bedrock`, `cohere`, `ollama`)
//! use it without importing each other both ways.

use serde_json::Value;

/// Normalised token usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_creation: Option<u64>,
    pub reasoning: Option<u64>,
}

impl Usage {
    /// These counts, each one this usage lacks taken from `earlier`: a
    /// later report of a stream wins, but one that names fewer buckets
    /// (Bedrock's invocation metrics have no cache counts) erases none.
    pub fn or(self, earlier: &Usage) -> Usage {
        Usage {
            input: self.input.or(earlier.input),
            output: self.output.or(earlier.output),
            cache_read: self.cache_read.or(earlier.cache_read),
            cache_creation: self.cache_creation.or(earlier.cache_creation),
            reasoning: self.reasoning.or(earlier.reasoning),
        }
    }
}

/// Whether the JSON Pointer `path` in `v` names a non-empty string.
pub fn non_empty(v: &Value, path: &str) -> bool {
    pointer(v, path).and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// Largest token count believed: no request uses 10^12 tokens, and sums of
/// believable counts cannot overflow. A larger number is unknown, not huge.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;

/// A believable token count at the JSON Pointer `path`.
pub fn num(v: &Value, path: &str) -> Option<u64> {
    pointer(v, path).and_then(Value::as_u64).filter(|n| *n <= MAX_TOKENS)
}

/// `v.pointer(pointer)` (a JSON Pointer, RFC 6901) without its cost:
/// serde_json's allocates two strings per token to unescape it; here a
/// token is only copied when it holds an escape (`~0`, `~1`).
pub fn pointer<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(v);
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').try_fold(v, |target, token| {
        let token: std::borrow::Cow<str> =
            if token.contains('~') { token.replace("~1", "/").replace("~0", "~").into() } else { token.into() };
        match target {
            Value::Object(_) => field(target, &token),
            Value::Array(list) => array_index(&token).and_then(|i| list.get(i)),
            _ => None,
        }
    })
}

/// Objects up to this many members are searched in order rather than by
/// hashing the key: cheaper for the small objects of LLM responses.
const LINEAR_LOOKUP_MAX: usize = 8;

/// `v.get(key)`: member `key` of an object (None for anything else),
/// found without hashing the key in a small object. Member names are
/// unique in a parsed object, so the first equal one is the one.
pub fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(map) if map.len() <= LINEAR_LOOKUP_MAX => map.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
        Value::Object(map) => map.get(key),
        _ => None,
    }
}

/// An array index token as JSON Pointer reads it: digits, no leading zero or sign.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    proptest! {
        /// Searched in order (small objects) or by hash (large ones), a
        /// member is the one `Value::get` finds, duplicates in the text included.
        #[test]
        fn field_finds_what_value_get_finds(
            members in prop::collection::vec(("[a-c]{0,2}", 0u32..5), 0..20),
            key in "[a-c]{0,2}",
        ) {
            let text = format!(
                "{{{}}}",
                members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")
            );
            let v: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(field(&v, &key), v.get(&key));
            let number = Value::from(3);
            prop_assert_eq!(field(&number, &key), None);
        }
    }
}
