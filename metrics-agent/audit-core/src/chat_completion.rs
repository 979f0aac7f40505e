//! A typed read of the commonest whole response, an OpenAI Chat Completions
//! body (`{"id","object","created","model","choices":[{"index","message",
//! "logprobs","finish_reason"}],"usage":{...},"system_fingerprint"}`), that
//! builds no `serde_json::Value` but the small usage object: strings are
//! borrowed and each choice's message is skipped unbuilt.
//!
//! It accepts only that shape: an unknown member, a duplicate one or a
//! value of another type fails the read, and the caller falls back to the
//! general `Value` path. Usage is read by that path's own code, and the
//! members no record needs are checked as it checks them (`Valid`;
//! a choice's message and logprobs are skipped unchecked there too). So
//! whatever this read accepts, it reads as the general path would
//! (property-tested in `llm`).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::chat_chunk::{MapOnly, Valid};

/// The members of a body that a record needs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletion<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub choices: Option<Vec<MapOnly<Choice<'a>>>>,
    /// Small: read by the general usage code.
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
}

/// One choice: its index and finish reason (the message skipped, as the
/// general path's `finish::ChoiceSummaries` skips it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice<'a> {
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
    #[serde(rename = "message", default)]
    _message: IgnoredAny,
    #[serde(rename = "logprobs", default)]
    _logprobs: IgnoredAny,
}

/// `body` read as a chat completion, or None when it is anything else.
pub fn parse(body: &[u8]) -> Option<ChatCompletion<'_>> {
    serde_json::from_slice::<MapOnly<ChatCompletion>>(body).ok().map(|c| c.0)
}
