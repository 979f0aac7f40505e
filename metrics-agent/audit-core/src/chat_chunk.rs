//! A typed read of the commonest stream event, an OpenAI Chat Completions
//! chunk (`{"id","model","choices":[{"index","delta","finish_reason"}],"usage"}`),
//! that builds no `serde_json::Value`: strings are borrowed or only tested
//! for emptiness, and the rest is skipped unbuilt.
//!
//! It accepts only the chunk's known shape: an unknown member, a duplicate
//! one or a value of another type fails the read, and the caller falls back
//! to the general `Value` path. What it skips it still checks as that path
//! checks a `Value` (`Valid`), so whatever this read accepts, it reads as
//! the general path would (property-tested in `llm`).

use std::{borrow::Cow, marker::PhantomData};

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::Value;

/// The members of a chunk that a record needs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatChunk<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub choices: Option<Choices<'a>>,
    /// Small and once per stream: read by the general usage code.
    #[serde(default)]
    pub usage: Option<Value>,
    #[serde(rename = "object", default)]
    _object: Valid,
    #[serde(rename = "created", default)]
    _created: Valid,
    #[serde(rename = "system_fingerprint", default)]
    _system_fingerprint: Valid,
    #[serde(rename = "service_tier", default)]
    _service_tier: Valid,
    #[serde(rename = "obfuscation", default)]
    _obfuscation: Valid,
}

/// One choice of a chunk.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice<'a> {
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
    pub delta: Option<MapOnly<Delta>>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
    #[serde(rename = "logprobs", default)]
    _logprobs: Valid,
}

/// What a chunk's choices say, read as they are parsed (no list built):
/// each finish reason by its choice's index (else its position), and
/// whether the first choice's delta carries content.
#[derive(Default)]
pub struct Choices<'a> {
    pub finish_reasons: Vec<(u64, Cow<'a, str>)>,
    pub first_has_content: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Choices<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Choices<'a>, A::Error> {
                let mut out = Choices::default();
                let mut position = 0u64;
                while let Some(MapOnly(choice)) = seq.next_element::<MapOnly<Choice<'a>>>()? {
                    if position == 0 {
                        out.first_has_content = choice.delta.as_ref().is_some_and(|d| d.0.has_content());
                    }
                    if let Some(reason) = choice.finish_reason {
                        out.finish_reasons.push((choice.index.unwrap_or(position), reason));
                    }
                    position += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// What a delta says of content: whether it carries any.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    #[serde(rename = "role", default)]
    _role: Valid,
    #[serde(default)]
    content: Option<Text>,
    #[serde(default)]
    reasoning_content: Option<Text>,
    #[serde(default)]
    reasoning: Option<Text>,
    #[serde(default)]
    refusal: Option<Text>,
    #[serde(default)]
    tool_calls: Option<Count>,
}

impl Delta {
    /// Generated text, reasoning, a refusal or a tool call.
    pub fn has_content(&self) -> bool {
        [&self.content, &self.reasoning_content, &self.reasoning, &self.refusal]
            .iter()
            .any(|t| t.as_ref().is_some_and(|t| t.0))
            || self.tool_calls.as_ref().is_some_and(|c| c.0 > 0)
    }
}

/// A string, read as whether it is non-empty (never copied).
pub struct Text(bool);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, s: &str) -> Result<Text, E> {
                Ok(Text(!s.is_empty()))
            }
        }
        d.deserialize_str(V)
    }
}

/// An array, read as its length (its elements skipped unbuilt, checked).
pub struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<Valid>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Any JSON value, skipped unbuilt but checked as parsing it into a
/// `serde_json::Value` checks it: strings well-formed (UTF-8, no lone
/// surrogate escape), numbers in range (no `1e400`), nesting within
/// serde_json's depth limit. `IgnoredAny` checks none of these, so a body
/// the general path rejects would be read.
#[derive(Default)]
pub struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Valid)
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = Valid;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
}

/// A struct read only from a JSON object: serde's derived structs also
/// accept an array of their members in order, which the general path
/// (members by name) would read as having none of them.
pub struct MapOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = MapOnly<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MapOnly<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(MapOnly)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// `data` read as a chat chunk, or None when it is anything else.
pub fn parse(data: &str) -> Option<ChatChunk<'_>> {
    serde_json::from_str::<MapOnly<ChatChunk>>(data).ok().map(|c| c.0)
}
