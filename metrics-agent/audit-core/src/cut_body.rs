//! The top-level fields of a JSON body cut short (past the capture cap):
//! the fields whose values are whole before the cut, so a request whose
//! body was not captured to its end still names its model when the model
//! comes first (as clients put it), and a response its `id` and `model`
//! (providers put them before the content). A value is kept only once the
//! separator after it was read: a number at the cut may have more digits.

use serde_json::{Map, Value};

/// Fields of `body`'s top-level object that end before the body is cut,
/// without the `skipped` ones (content: prompts, tools); `Value::Null` when
/// the body does not begin as a JSON object.
pub fn fields_before_cut(body: &[u8], skipped: &'static [&'static str]) -> Value {
    use serde::Deserializer as _;

    struct Fields<'a> {
        out: &'a mut Map<String, Value>,
        skipped: &'static [&'static str],
    }
    impl<'de> serde::de::Visitor<'de> for Fields<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            // The last field read, kept once what follows it is read.
            let mut last: Option<(String, Value)> = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                self.out.extend(last.take());
                if self.skipped.contains(&key.as_ref()) {
                    map.next_value::<serde::de::IgnoredAny>()?;
                } else {
                    last = Some((key.into_owned(), map.next_value::<Value>()?));
                }
            }
            self.out.extend(last);
            Ok(())
        }
    }
    let mut out = Map::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let began = de.deserialize_map(Fields { out: &mut out, skipped }).is_ok() || !out.is_empty();
    if began { Value::Object(out) } else { Value::Null }
}

/// The fields of a response `body` whole before its cut, without its
/// content (completions, embeddings: skipped unbuilt, as the parser of
/// whole bodies never reads them), as a whole JSON object for that parser;
/// `None` when there are none (the body does not begin as a JSON object,
/// or its first value is cut).
pub fn object_before_cut(body: &[u8]) -> Option<Vec<u8>> {
    match fields_before_cut(body, &crate::llm::RESPONSE_CONTENT_KEYS) {
        Value::Object(fields) if !fields.is_empty() => serde_json::to_vec(&fields).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKIPPED: &[&str] = &["messages"];

    #[test]
    fn fields_whole_before_the_cut_are_kept_and_content_is_not() {
        let body = br#"{"model":"gpt-4o-mini","stream":true,"max_tokens":12,"messages":[{"role":"user","content":"aaa"#;
        let v = fields_before_cut(body, SKIPPED);
        assert_eq!(v, serde_json::json!({"model":"gpt-4o-mini","stream":true,"max_tokens":12}));
    }

    #[test]
    fn a_value_at_the_cut_is_not_kept() {
        // The number may go on, the string is unfinished.
        assert_eq!(
            fields_before_cut(br#"{"model":"gpt-4o","max_tokens":12"#, SKIPPED),
            serde_json::json!({"model":"gpt-4o"})
        );
        assert_eq!(fields_before_cut(br#"{"user":"u1","model":"gpt-4"#, SKIPPED), serde_json::json!({"user":"u1"}));
        assert_eq!(fields_before_cut(br#"{"model":"gpt-4o""#, SKIPPED), Value::Null);
        assert_eq!(fields_before_cut(br#"[1,2"#, SKIPPED), Value::Null);
        assert_eq!(fields_before_cut(b"", SKIPPED), Value::Null);
        // A whole body reads as a whole body.
        assert_eq!(fields_before_cut(br#"{"model":"m","n":1}"#, SKIPPED), serde_json::json!({"model":"m","n":1}));
    }

    #[test]
    fn a_response_cut_in_its_content_keeps_its_id_and_model() {
        let body = br#"{"id":"chatcmpl-7","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"content":"xx"#;
        let kept = object_before_cut(body).unwrap();
        assert_eq!(kept, br#"{"id":"chatcmpl-7","object":"chat.completion","model":"gpt-4o-mini"}"#);
        assert_eq!(object_before_cut(br#"{"id":"chatcmpl-"#), None);
        assert_eq!(object_before_cut(b"data: {}"), None);
        // Content before the cut (an embeddings answer names its model
        // after its data) is passed over, not kept.
        let embeddings = br#"{"object":"list","data":[{"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tok"#;
        let kept = object_before_cut(embeddings).unwrap();
        assert_eq!(kept, br#"{"object":"list","model":"text-embedding-3-small"}"#);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = fields_before_cut(&body, SKIPPED);
            let _ = object_before_cut(&body);
        }
    }
}
