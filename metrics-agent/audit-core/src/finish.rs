//! Why the model stopped generating (`gen_ai.response.finish_reasons`):
//! each provider's finish reason (`stop`, `length`, `end_turn`, `STOP`,
//! `COMPLETE`, ...) as it sent it, one per generated choice, bounded: at
//! most `MAX_REASONS` choices, each reason at most `MAX_REASON_CHARS` of
//! `[A-Za-z0-9_.:-]`. A value of any other shape is dropped, so nothing a
//! model wrote can pass for a reason.
//!
//! Also the reduced form in which a non-streamed body's choice lists
//! (`choices`, `candidates`) are read: each element's `index` and finish
//! reason only, the content skipped unread (`choice_summaries`).

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::usage::pointer;

/// Choices whose finish reason is kept.
pub const MAX_REASONS: usize = 4;
/// Longest reason kept (longer ones are cut).
pub const MAX_REASON_CHARS: usize = 32;

/// The finish reasons of a response, by choice index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishReasons(Vec<(u64, String)>);

impl FinishReasons {
    /// Choice `index` finished for `reason` (a later report for the same
    /// choice replaces an earlier one); a reason of the wrong shape, or a
    /// choice beyond the first `MAX_REASONS`, is ignored.
    pub fn set(&mut self, index: u64, reason: &Value) {
        if let Some(reason) = reason.as_str() {
            self.set_str(index, reason);
        }
    }

    /// `set` with a reason already known to be a string.
    pub fn set_str(&mut self, index: u64, reason: &str) {
        let Some(reason) = well_formed(reason) else { return };
        if let Some(slot) = self.0.iter_mut().find(|(i, _)| *i == index) {
            slot.1 = reason;
        } else if self.0.len() < MAX_REASONS {
            self.0.push((index, reason));
            self.0.sort_by_key(|(i, _)| *i);
        }
    }

    /// Each element of the list at `list` (`/choices`, `/candidates`):
    /// its reason at `field`, by its `index` (else its position).
    pub fn set_each(&mut self, v: &Value, list: &str, field: &str) {
        let Some(items) = pointer(v, list).and_then(Value::as_array) else { return };
        for (position, item) in items.iter().enumerate() {
            if let Some(reason) = super::usage::field(item, field) {
                let index = super::usage::field(item, "index").and_then(Value::as_u64).unwrap_or(position as u64);
                self.set(index, reason);
            }
        }
    }

    /// The single choice's reason at the JSON Pointer `path`, if there.
    pub fn set_at(&mut self, v: &Value, path: &str) {
        if let Some(reason) = pointer(v, path) {
            self.set(0, reason);
        }
    }

    /// The reasons in choice order.
    pub fn into_vec(self) -> Vec<String> {
        self.0.into_iter().map(|(_, r)| r).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `reason` cut to `MAX_REASON_CHARS`, if it is a non-empty token.
fn well_formed(reason: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    let cut: String = reason.chars().take(MAX_REASON_CHARS).collect();
    (!cut.is_empty() && cut.chars().all(ok)).then_some(cut)
}

/// Deserializes a choice list as an array of `{"index", "finish_reason" /
/// "finishReason"}` objects (other fields skipped without being built; at
/// most `MAX_REASONS` elements kept); anything that is not a list is `Null`.
pub struct ChoiceSummaries;

impl<'de> DeserializeSeed<'de> for ChoiceSummaries {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Accepts any JSON value as `Null`, draining what it holds.
macro_rules! scalars_as_null {
    () => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

impl<'de> Visitor<'de> for ChoiceSummaries {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of choices")
    }
    scalars_as_null!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(summary) = seq.next_element_seed(ChoiceSummary)? {
            if out.len() < MAX_REASONS {
                out.push(summary);
            }
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }
}

/// One choice reduced to its `index` and finish reason (`Null` when it is
/// not an object).
struct ChoiceSummary;

impl<'de> DeserializeSeed<'de> for ChoiceSummary {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoiceSummary {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a choice")
    }
    scalars_as_null!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                // (Titan's `tokenCount`: the output tokens of its one result.)
                "index" | "tokenCount" => {
                    if let Some(i) = map.next_value::<Value>()?.as_u64() {
                        out.insert(key.into_owned(), i.into());
                    }
                }
                // OpenAI, Gemini, Cohere; Bedrock's Mistral and Titan bodies.
                "finish_reason" | "finishReason" | "stop_reason" | "completionReason" => {
                    // A reason is a short string; anything else is dropped unbuilt.
                    if let Some(reason) = map.next_value::<ShortText>()?.0 {
                        out.insert(key.into_owned(), Value::String(reason));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A string's first `MAX_REASON_CHARS` characters, else `None` (any
/// other value is skipped without being built).
struct ShortText(Option<String>);

impl<'de> de::Deserialize<'de> for ShortText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ShortText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a finish reason")
            }
            fn visit_str<E>(self, s: &str) -> Result<ShortText, E> {
                Ok(ShortText(Some(s.chars().take(MAX_REASON_CHARS).collect())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_unit<E>(self) -> Result<ShortText, E> {
                Ok(ShortText(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ShortText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ShortText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ShortText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ShortText(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeSeed as _;

    use super::*;

    fn summaries(json: &str) -> Value {
        ChoiceSummaries.deserialize(&mut serde_json::Deserializer::from_str(json)).unwrap()
    }

    #[test]
    fn choices_are_reduced_to_index_and_reason() {
        let v = summaries(
            r#"[{"index":1,"message":{"content":"secret"},"finish_reason":"length"},{"index":0,"finish_reason":null},[1],{"finishReason":{"x":"y"}}]"#,
        );
        assert_eq!(
            v,
            serde_json::json!([{"index":1,"finish_reason":"length"},{"index":0},null,{}]),
            "content, non-string and non-object values are not kept"
        );
        let many = format!("[{}]", vec![r#"{"finish_reason":"stop"}"#; 50].join(","));
        assert_eq!(summaries(&many).as_array().unwrap().len(), MAX_REASONS);
        assert_eq!(summaries(r#"{"a":[1,2]}"#), Value::Null);
        assert_eq!(summaries(r#""text""#), Value::Null);
        assert_eq!(summaries("7"), Value::Null);
    }

    #[test]
    fn reasons_are_bounded_tokens_in_choice_order() {
        let mut f = FinishReasons::default();
        f.set(2, &"length".into());
        f.set(0, &"stop".into());
        f.set(0, &"tool_calls".into());
        f.set(1, &"two words".into());
        f.set(1, &Value::Null);
        f.set(3, &"x".repeat(100).into());
        f.set(4, &"content_filter".into());
        f.set(5, &"stop".into());
        assert_eq!(
            f.clone().into_vec(),
            ["tool_calls", "length", "x".repeat(MAX_REASON_CHARS).as_str(), "content_filter"]
        );
        assert!(FinishReasons::default().is_empty());
    }
}
