//! LLM semantics of HTTP messages: which provider and operation a request
//! is, its model and streaming options, and from the response the returned
//! model, token usage and provider error type.
//!
//! Token usage is normalised here and only here (OpenTelemetry's GenAI
//! convention): `input` includes cached tokens; `output` includes reasoning
//! tokens; cache reads and cache writes are kept apart; usage that is absent
//! stays `None`, never 0.

use serde_json::Value;

use super::sse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    Unknown,
}

impl Provider {
    /// The provider a configured upstream name stands for (`--provider
    /// openai=...`), if it names one this agent knows.
    pub fn from_configured_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        if n.contains("openai") || n.contains("azure") {
            Some(Self::OpenAi)
        } else if n.contains("anthropic") || n.contains("claude") {
            Some(Self::Anthropic)
        } else if n.contains("gemini") || n.contains("google") || n.contains("vertex") {
            Some(Self::Gemini)
        } else {
            None
        }
    }

    /// The provider whose servers send these response headers.
    pub fn from_response_headers<'a>(mut names: impl Iterator<Item = &'a str>) -> Self {
        names
            .find_map(|h| {
                if h.starts_with("openai-") {
                    Some(Self::OpenAi)
                } else if h.starts_with("anthropic-") {
                    Some(Self::Anthropic)
                } else if h.starts_with("x-goog-") {
                    Some(Self::Gemini)
                } else {
                    None
                }
            })
            .unwrap_or(Self::Unknown)
    }

    /// `gen_ai.provider.name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gcp.gemini",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// OpenAI Chat Completions.
    ChatCompletions,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Messages,
    Embeddings,
    /// Gemini generateContent / streamGenerateContent.
    GenerateContent,
    Other,
}

impl Operation {
    /// `gen_ai.operation.name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages => "chat",
            Self::Responses => "responses",
            Self::Embeddings => "embeddings",
            Self::GenerateContent => "generate_content",
            Self::Other => "other",
        }
    }
}

/// What a request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    /// Who serves it (`gen_ai.provider.name`): the configured upstream, else
    /// the Host header, else the path's shape, else response headers.
    pub provider: Provider,
    /// Whose wire format the bodies use (from the path): an OpenAI-compatible
    /// endpoint of another provider is parsed as OpenAI.
    pub format: Provider,
    pub operation: Operation,
    pub model: Option<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
}

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

/// What a response says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LlmResponse {
    pub model: Option<String>,
    pub usage: Usage,
    /// Provider error type (`rate_limit_exceeded`, `overloaded_error`, `RESOURCE_EXHAUSTED`, ...).
    pub error_type: Option<String>,
    pub streaming: bool,
    /// Content-bearing stream events (lifecycle events excluded).
    pub content_events: u32,
    /// The provider's id of this response (`chatcmpl-...`, `msg_...`,
    /// `resp_...`, Gemini's `responseId`): a proxy that passes the body
    /// through shows the same id on both sides.
    pub id: Option<String>,
}

/// The id a response object carries (`id`, Gemini's `responseId`).
fn id_of(v: &Value) -> Option<String> {
    v.get("id").or_else(|| v.get("responseId")).and_then(Value::as_str).map(|s| s.chars().take(128).collect())
}

/// Interprets a streamed response one event at a time (SSE events, or the
/// elements of a JSON-array stream), keeping only what a record needs: the
/// memory it holds does not grow with the stream's length.
#[derive(Debug)]
pub struct StreamInterpreter {
    format: Provider,
    out: LlmResponse,
}

impl StreamInterpreter {
    pub fn new(request: &LlmRequest) -> Self {
        Self { format: request.format, out: LlmResponse { streaming: true, ..LlmResponse::default() } }
    }

    /// One element of a JSON-array stream (Gemini without `alt=sse`); the
    /// last element carries the usage.
    pub fn array_element(&mut self, v: &Value) {
        let out = &mut self.out;
        out.model = out.model.take().or_else(|| v.get("modelVersion").and_then(Value::as_str).map(str::to_string));
        out.id = out.id.take().or_else(|| id_of(v));
        if let Some(u) = usage_of(self.format, v) {
            out.usage = u;
        }
        if v.pointer("/candidates/0/content").is_some() {
            out.content_events += 1;
        }
        out.error_type = error_of(v).or(out.error_type.take());
    }

    /// One server-sent event (`event:` field and joined `data:` lines).
    pub fn sse_event(&mut self, event: Option<&str>, data: &str) {
        if data == "[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return };
        let (provider, out) = (self.format, &mut self.out);
        let kind = event.or_else(|| v.get("type").and_then(Value::as_str)).unwrap_or("");
        match (provider, kind) {
            (Provider::Anthropic, "message_start") => {
                let m = v.get("message").unwrap_or(&Value::Null);
                out.model = m.get("model").and_then(Value::as_str).map(str::to_string).or(out.model.take());
                out.id = out.id.take().or_else(|| id_of(m));
                if let Some(u) = usage_of(provider, m) {
                    out.usage = Usage { output: None, ..u };
                }
            }
            (Provider::Anthropic, "message_delta") => {
                if let Some(o) = num(&v, "/usage/output_tokens") {
                    out.usage.output = Some(o); // cumulative
                }
            }
            (Provider::Anthropic, "content_block_delta") => out.content_events += 1,
            (_, "error") => out.error_type = error_of(&v).or(out.error_type.take()),
            (Provider::OpenAi, "response.created" | "response.in_progress") => {
                out.id = out.id.take().or_else(|| v.get("response").and_then(id_of));
            }
            (Provider::OpenAi, "response.completed") => {
                let r = v.get("response").unwrap_or(&Value::Null);
                out.model = r.get("model").and_then(Value::as_str).map(str::to_string).or(out.model.take());
                out.id = out.id.take().or_else(|| id_of(r));
                out.usage = usage_of(provider, r).unwrap_or(out.usage);
            }
            (Provider::OpenAi, "response.output_text.delta") => out.content_events += 1,
            _ => {
                if out.model.is_none() {
                    out.model =
                        v.get("model").or_else(|| v.get("modelVersion")).and_then(Value::as_str).map(str::to_string);
                }
                out.id = out.id.take().or_else(|| id_of(&v));
                if let Some(u) = usage_of(provider, &v) {
                    out.usage = u;
                }
                let has_content = v.pointer("/choices/0/delta/content").is_some_and(|c| !c.is_null())
                    || v.pointer("/candidates/0/content").is_some();
                if has_content {
                    out.content_events += 1;
                }
                out.error_type = error_of(&v).or(out.error_type.take());
            }
        }
    }

    pub fn finish(self) -> LlmResponse {
        self.out
    }
}

/// Classifies a request from its target, Host header and JSON body.
pub fn parse_request(target: &str, host: Option<&str>, body: &[u8]) -> LlmRequest {
    classify_request(target, host, &request_fields(body))
}

/// Top-level request fields holding content (prompts, tool schemas): never
/// read for classification or identity, so skipped without being built.
const REQUEST_CONTENT_KEYS: [&str; 9] =
    ["messages", "input", "contents", "prompt", "tools", "system", "instructions", "functions", "documents"];
/// Top-level response fields holding content (completions, embeddings):
/// usage, model and error live beside them.
const RESPONSE_CONTENT_KEYS: [&str; 5] = ["choices", "output", "content", "data", "candidates"];

/// A request body's JSON object without its content fields (`Null` when it
/// is not a JSON object): what classification and `[identity]` body
/// pointers read. Skipping a prompt validates it without allocating it.
pub fn request_fields(body: &[u8]) -> Value {
    object_without(body, &REQUEST_CONTENT_KEYS)
}

fn object_without(body: &[u8], skipped: &'static [&'static str]) -> Value {
    use serde::Deserializer as _;

    struct Fields(&'static [&'static str]);
    impl<'de> serde::de::Visitor<'de> for Fields {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if self.0.contains(&key.as_ref()) {
                    map.next_value::<serde::de::IgnoredAny>()?;
                } else {
                    let value = map.next_value::<Value>()?;
                    out.insert(key.into_owned(), value);
                }
            }
            Ok(Value::Object(out))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match de.deserialize_map(Fields(skipped)) {
        Ok(v) if de.end().is_ok() => v,
        _ => Value::Null,
    }
}

/// `parse_request` over an already parsed body.
pub fn classify_request(target: &str, host: Option<&str>, json: &Value) -> LlmRequest {
    let path = target.split('?').next().unwrap_or(target);
    let host = host.unwrap_or("").to_ascii_lowercase();
    let (provider, operation) = if path.ends_with("/chat/completions") {
        (Provider::OpenAi, Operation::ChatCompletions)
    } else if path.ends_with("/responses") {
        (Provider::OpenAi, Operation::Responses)
    } else if path.ends_with("/messages") {
        (Provider::Anthropic, Operation::Messages)
    } else if path.ends_with(":generateContent") || path.ends_with(":streamGenerateContent") {
        (Provider::Gemini, Operation::GenerateContent)
    } else if path.ends_with("/embeddings") || path.ends_with(":embedContent") {
        (if path.contains(':') { Provider::Gemini } else { Provider::OpenAi }, Operation::Embeddings)
    } else {
        (Provider::Unknown, Operation::Other)
    };
    let format = provider;
    let provider = if host.contains("openai") {
        Provider::OpenAi
    } else if host.contains("anthropic") {
        Provider::Anthropic
    } else if host.contains("googleapis") {
        Provider::Gemini
    } else {
        provider
    };
    // A path this agent does not know is read in its host's format.
    let format = if format == Provider::Unknown { provider } else { format };
    let gemini_model =
        path.rsplit('/').next().and_then(|last| last.split(':').next()).filter(|_| format == Provider::Gemini);
    let model = json.get("model").and_then(Value::as_str).map(str::to_string).or(gemini_model.map(str::to_string));
    let stream =
        json.get("stream").and_then(Value::as_bool).unwrap_or(false) || path.ends_with(":streamGenerateContent");
    let include_usage = json.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    LlmRequest { provider, format, operation, model, stream, include_usage }
}

/// Largest token count believed: no request uses 10^12 tokens, and sums of
/// believable counts cannot overflow. A larger number is unknown, not huge.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;

fn num(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64).filter(|n| *n <= MAX_TOKENS)
}

/// Usage from one JSON object in the provider's shape (None if it has none).
fn usage_of(provider: Provider, v: &Value) -> Option<Usage> {
    match provider {
        Provider::Anthropic => {
            let u = v.get("usage")?;
            let cache_read = num(u, "/cache_read_input_tokens");
            let cache_creation = num(u, "/cache_creation_input_tokens");
            // Anthropic's input_tokens excludes both cache buckets.
            let input = num(u, "/input_tokens").map(|i| i + cache_read.unwrap_or(0) + cache_creation.unwrap_or(0));
            // (each term is at most MAX_TOKENS: the sum cannot overflow)
            Some(Usage { input, output: num(u, "/output_tokens"), cache_read, cache_creation, reasoning: None })
        }
        Provider::Gemini => {
            let u = v.get("usageMetadata")?;
            // Gemini counts thoughts apart from candidates; output includes
            // reasoning, as OpenAI's completion_tokens does (and both bill it as output).
            let reasoning = num(u, "/thoughtsTokenCount");
            Some(Usage {
                input: num(u, "/promptTokenCount"),
                output: num(u, "/candidatesTokenCount").map(|c| c + reasoning.unwrap_or(0)),
                cache_read: num(u, "/cachedContentTokenCount"),
                cache_creation: None,
                reasoning,
            })
        }
        _ => {
            let u = v.get("usage").filter(|u| u.is_object())?;
            if u.get("prompt_tokens").is_some() {
                // Chat Completions and embeddings.
                Some(Usage {
                    input: num(u, "/prompt_tokens"),
                    output: num(u, "/completion_tokens"),
                    cache_read: num(u, "/prompt_tokens_details/cached_tokens"),
                    cache_creation: None,
                    reasoning: num(u, "/completion_tokens_details/reasoning_tokens"),
                })
            } else {
                // Responses API.
                Some(Usage {
                    input: num(u, "/input_tokens"),
                    output: num(u, "/output_tokens"),
                    cache_read: num(u, "/input_tokens_details/cached_tokens"),
                    cache_creation: None,
                    reasoning: num(u, "/output_tokens_details/reasoning_tokens"),
                })
            }
        }
    }
}

fn error_of(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    ["/code", "/type", "/status"]
        .iter()
        .find_map(|p| e.pointer(p).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .map(str::to_string)
}

/// Interprets a response body (JSON, or SSE when `content_type` says so).
pub fn parse_response(request: &LlmRequest, content_type: Option<&str>, body: &[u8], complete: bool) -> LlmResponse {
    let streaming = content_type.is_some_and(|c| c.contains("text/event-stream"));
    if !streaming && request.stream && body.trim_ascii_start().starts_with(b"[") {
        // Gemini's streamGenerateContent without `alt=sse`: one JSON array
        // written element by element; the last element carries the usage.
        let mut stream = StreamInterpreter::new(request);
        for v in json_array_elements(body) {
            stream.array_element(&v);
        }
        return stream.finish();
    }
    if !streaming {
        let v = object_without(body, &RESPONSE_CONTENT_KEYS);
        return LlmResponse {
            model: v.get("model").or_else(|| v.get("modelVersion")).and_then(Value::as_str).map(str::to_string),
            usage: usage_of(request.format, &v).unwrap_or_default(),
            error_type: error_of(&v),
            id: id_of(&v),
            ..LlmResponse::default()
        };
    }
    let mut stream = StreamInterpreter::new(request);
    for event in sse::events(body, complete) {
        stream.sse_event(event.event.as_deref(), &event.data);
    }
    stream.finish()
}

/// The complete elements of a JSON array, even when the array was cut off.
fn json_array_elements(body: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = body.trim_ascii_start().strip_prefix(b"[").unwrap_or(&[]);
    loop {
        rest = rest.trim_ascii_start();
        rest = rest.strip_prefix(b",").unwrap_or(rest);
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => {
                out.push(v);
                rest = &rest[values.byte_offset()..];
            }
            _ => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn req(target: &str, body: &str) -> LlmRequest {
        parse_request(target, None, body.as_bytes())
    }

    #[test]
    fn request_fields_skip_content_and_keep_what_is_read() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"a long prompt"}],"stream":true,
            "stream_options":{"include_usage":true},"user":"u1","metadata":{"session_id":"s1"},"tools":[{"x":1}]}"#;
        let full: Value = serde_json::from_slice(body).unwrap();
        let fields = request_fields(body);
        for pointer in ["/model", "/stream", "/stream_options/include_usage", "/user", "/metadata/session_id"] {
            assert_eq!(fields.pointer(pointer), full.pointer(pointer), "{pointer}");
        }
        assert_eq!((fields.get("messages"), fields.get("tools")), (None, None), "content is not built");
        for not_an_object in [&b"[1,2]"[..], b"\"x\"", b"{\"model\":", b"{} trailing", b""] {
            assert_eq!(request_fields(not_an_object), Value::Null);
        }
    }

    #[test]
    fn classifies_requests() {
        let r = req(
            "/openai/v1/chat/completions",
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"user":"u1"}"#,
        );
        assert_eq!(
            (r.provider, r.operation, r.model.as_deref(), r.stream, r.include_usage),
            (Provider::OpenAi, Operation::ChatCompletions, Some("gpt-4o"), true, true)
        );
        let r = req("/v1/messages", r#"{"model":"claude-sonnet-4","metadata":{"user_id":"u2"}}"#);
        assert_eq!((r.provider, r.model.as_deref()), (Provider::Anthropic, Some("claude-sonnet-4")));
        let r = req("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", "{}");
        assert_eq!((r.provider, r.model.as_deref(), r.stream), (Provider::Gemini, Some("gemini-2.0-flash"), true));
        assert_eq!(parse_request("/x", Some("api.anthropic.com"), b"").provider, Provider::Anthropic);
    }

    #[test]
    fn openai_chat_usage_includes_cached_tokens() {
        let r = req("/v1/chat/completions", r#"{"model":"gpt-4o"}"#);
        let body = r#"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":100,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":60},"completion_tokens_details":{"reasoning_tokens":5}}}"#;
        let resp = parse_response(&r, Some("application/json"), body.as_bytes(), true);
        assert_eq!(resp.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(
            resp.usage,
            Usage {
                input: Some(100),
                output: Some(20),
                cache_read: Some(60),
                cache_creation: None,
                reasoning: Some(5)
            }
        );
    }

    #[test]
    fn openai_stream_without_include_usage_is_unknown_not_zero() {
        let r = req("/v1/chat/completions", r#"{"stream":true}"#);
        let body = "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\ndata: [DONE]\n\n";
        let resp = parse_response(&r, Some("text/event-stream"), body.as_bytes(), true);
        assert_eq!(resp.usage, Usage::default());
        assert_eq!(resp.content_events, 1);
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        let resp = parse_response(&r, Some("text/event-stream"), body.as_bytes(), true);
        assert_eq!((resp.usage.input, resp.usage.output), (Some(7), Some(3)));
    }

    #[test]
    fn anthropic_input_adds_the_cache_buckets_and_streams_take_the_last_output() {
        let r = req("/v1/messages", "{}");
        let body = r#"{"model":"claude-sonnet-4","usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":7}}"#;
        let u = parse_response(&r, None, body.as_bytes(), true).usage;
        assert_eq!(
            u,
            Usage {
                input: Some(115),
                output: Some(7),
                cache_read: Some(100),
                cache_creation: Some(5),
                reasoning: None
            }
        );
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":40}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let resp = parse_response(&r, Some("text/event-stream"), stream.as_bytes(), true);
        assert_eq!((resp.usage.input, resp.usage.output, resp.content_events), (Some(12), Some(40), 1));
    }

    #[test]
    fn provider_error_types() {
        let r = req("/v1/chat/completions", "{}");
        let e = |b: &str| parse_response(&r, None, b.as_bytes(), true).error_type;
        assert_eq!(
            e(r#"{"error":{"message":"x","type":"requests","code":"rate_limit_exceeded"}}"#).as_deref(),
            Some("rate_limit_exceeded")
        );
        let a = req("/v1/messages", "{}");
        let ea = parse_response(&a, None, br#"{"type":"error","error":{"type":"overloaded_error"}}"#, true).error_type;
        assert_eq!(ea.as_deref(), Some("overloaded_error"));
        let g = req("/v1beta/models/m:generateContent", "{}");
        let eg = parse_response(&g, None, br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#, true).error_type;
        assert_eq!(eg.as_deref(), Some("RESOURCE_EXHAUSTED"));
    }

    #[test]
    fn gemini_and_responses_usage() {
        let g = req("/v1beta/models/gemini-2.0-flash:generateContent", "{}");
        let u = parse_response(&g, None, br#"{"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"cachedContentTokenCount":2,"thoughtsTokenCount":1}}"#, true).usage;
        assert_eq!(
            u,
            Usage { input: Some(9), output: Some(5), cache_read: Some(2), cache_creation: None, reasoning: Some(1) }
        );
        let o = req("/v1/responses", "{}");
        let stream = "event: response.created\ndata: {\"type\":\"response.created\"}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":8,\"output_tokens_details\":{\"reasoning_tokens\":2}}}}\n\n";
        let resp = parse_response(&o, Some("text/event-stream"), stream.as_bytes(), true);
        assert_eq!(
            resp.usage,
            Usage { input: Some(30), output: Some(8), cache_read: Some(10), cache_creation: None, reasoning: Some(2) }
        );
        assert_eq!((resp.model.as_deref(), resp.content_events), (Some("gpt-4.1"), 1));
    }

    #[test]
    fn gemini_json_array_streams_take_the_last_usage_even_when_cut_off() {
        let g = req("/v1beta/models/gemini-2.5-pro:streamGenerateContent", "{}");
        let body = br#"[{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}
,
{"candidates":[{"content":{"parts":[{"text":"b"}]}}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"thoughtsTokenCount":3},"modelVersion":"gemini-2.5-pro"}
]"#;
        let r = parse_response(&g, Some("application/json"), body, true);
        assert!(r.streaming);
        assert_eq!((r.content_events, r.model.as_deref()), (2, Some("gemini-2.5-pro")));
        assert_eq!(
            (r.usage.input, r.usage.output, r.usage.reasoning),
            (Some(9), Some(7), Some(3)),
            "output includes thoughts"
        );
        let cut = parse_response(&g, Some("application/json"), &body[..70], false);
        assert_eq!((cut.content_events, cut.usage.input), (1, None), "a cut-off array keeps what was complete");
    }

    #[test]
    fn absurd_token_counts_are_unknown_and_never_overflow() {
        let a = req("/v1/messages", "{}");
        let body = br#"{"usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":1,"output_tokens":7}}"#;
        let u = parse_response(&a, None, body, true).usage;
        assert_eq!((u.input, u.cache_read, u.output), (None, Some(1), Some(7)));
        let body = br#"{"usage":{"input_tokens":1000000000000,"cache_read_input_tokens":1000000000000,"cache_creation_input_tokens":1000000000000}}"#;
        assert_eq!(parse_response(&a, None, body, true).usage.input, Some(3 * MAX_TOKENS));
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(target in "[ -~]{0,60}", body in prop::collection::vec(any::<u8>(), 0..1500), sse in any::<bool>()) {
            let r = parse_request(&target, None, &body);
            let _ = parse_response(&r, if sse { Some("text/event-stream") } else { None }, &body, sse);
        }
    }
}
