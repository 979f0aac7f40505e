//! A typed read of the commonest whole response, an OpenAI Chat Completions
//! body (`{"id","object","created","model","choices":[{"index","message",
//! "logprobs","finish_reason"}],"usage":{...},"system_fingerprint"}`), that
//! builds no `serde_json::Value`: strings are borrowed, each choice's
//! message is skipped unbuilt and usage is read as numbers.
//!
//! It accepts only that shape: an unknown member, a duplicate one, a value
//! of another type, or usage without `prompt_tokens` fails the read, and the
//! caller falls back to the general `Value` path. So whatever this read
//! accepts, it reads as the general path would (property-tested in `llm`).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::chat_chunk::MapOnly;
use super::usage::{MAX_TOKENS, Usage};

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
    #[serde(default)]
    usage: Option<MapOnly<ChatUsage>>,
    #[serde(rename = "object", default)]
    _object: IgnoredAny,
    #[serde(rename = "created", default)]
    _created: IgnoredAny,
    #[serde(rename = "system_fingerprint", default)]
    _system_fingerprint: IgnoredAny,
    #[serde(rename = "service_tier", default)]
    _service_tier: IgnoredAny,
}

/// One choice: its index and finish reason (the message skipped).
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

/// Chat Completions usage, as counts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(rename = "total_tokens", default)]
    _total_tokens: IgnoredAny,
    /// DeepSeek's cache hits (`prompt_tokens` includes them).
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
    #[serde(rename = "prompt_cache_miss_tokens", default)]
    _prompt_cache_miss_tokens: IgnoredAny,
    #[serde(default)]
    prompt_tokens_details: Option<MapOnly<PromptDetails>>,
    #[serde(default)]
    completion_tokens_details: Option<MapOnly<CompletionDetails>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(rename = "audio_tokens", default)]
    _audio_tokens: IgnoredAny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
    #[serde(rename = "audio_tokens", default)]
    _audio_tokens: IgnoredAny,
    #[serde(rename = "accepted_prediction_tokens", default)]
    _accepted_prediction_tokens: IgnoredAny,
    #[serde(rename = "rejected_prediction_tokens", default)]
    _rejected_prediction_tokens: IgnoredAny,
}

/// A believable count (`usage::num`'s bound).
fn believable(n: Option<u64>) -> Option<u64> {
    n.filter(|n| *n <= MAX_TOKENS)
}

impl ChatCompletion<'_> {
    /// The body's usage (None when it has none), or Err when its shape is
    /// one this read does not decide (no `prompt_tokens`: the general path's
    /// Responses-API reading, or a `null` count whose presence counts there).
    pub(crate) fn usage(&self) -> Result<Option<Usage>, ()> {
        let Some(MapOnly(u)) = &self.usage else { return Ok(None) };
        if u.prompt_tokens.is_none() {
            return Err(());
        }
        let cached = u.prompt_tokens_details.as_ref().and_then(|d| d.0.cached_tokens);
        let reasoning = u.completion_tokens_details.as_ref().and_then(|d| d.0.reasoning_tokens);
        Ok(Some(Usage {
            input: believable(u.prompt_tokens),
            output: believable(u.completion_tokens),
            cache_read: believable(cached).or_else(|| believable(u.prompt_cache_hit_tokens)),
            cache_creation: None,
            reasoning: believable(reasoning),
        }))
    }
}

/// `body` read as a chat completion, or None when it is anything else.
pub fn parse(body: &[u8]) -> Option<ChatCompletion<'_>> {
    serde_json::from_slice::<MapOnly<ChatCompletion>>(body).ok().map(|c| c.0)
}
