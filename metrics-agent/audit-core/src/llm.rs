//! LLM semantics of HTTP messages: which provider and operation a request
//! is, its model and streaming options, and from the response the returned
//! model, token usage and provider error type.
//!
//! Token usage is normalised here and only here (OpenTelemetry's GenAI
//! convention): `input` includes cached tokens; `output` includes reasoning
//! tokens; cache reads and cache writes are kept apart; usage that is absent
//! stays `None`, never 0.

use std::borrow::Cow;

use serde_json::Value;

pub use super::finish::FinishReasons;
pub use super::provider::{Operation, Provider, WireFormat};
use super::usage::non_empty;
pub use super::usage::{MAX_TOKENS, Usage, field, num, pointer};
use super::{bedrock, chat_chunk, chat_completion, cohere, eventstream, finish, ollama, provider, sse};

/// What a request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    /// Who serves it (`gen_ai.provider.name`): the configured upstream, else
    /// the Host header, else the path's shape, else response headers.
    pub provider: Provider,
    /// Whose wire format the bodies use (from the path): an OpenAI-compatible
    /// endpoint of another provider is parsed as OpenAI.
    pub format: WireFormat,
    pub operation: Operation,
    pub model: Option<String>,
    /// Azure OpenAI's deployment (`/openai/deployments/{deployment}/...`).
    pub deployment: Option<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
}

/// What a response says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LlmResponse {
    pub model: Option<String>,
    pub usage: Usage,
    /// Provider error type (`rate_limit_exceeded`, `overloaded_error`, `RESOURCE_EXHAUSTED`, ...).
    pub error_type: Option<String>,
    pub streaming: bool,
    /// Content-bearing stream events (lifecycle events, role-only and empty
    /// deltas excluded).
    pub content_events: u32,
    /// Stream events of any kind (SSE events with data, `[DONE]` excluded;
    /// JSON-array elements; NDJSON lines; event-stream messages).
    pub events: u32,
    /// Times (kernel ns, as given by `StreamInterpreter::at`) of the first
    /// and the last content-bearing events.
    pub first_content_ns: Option<u64>,
    pub last_content_ns: Option<u64>,
    /// The provider's id of this response (`chatcmpl-...`, `msg_...`,
    /// `resp_...`, Gemini's `responseId`): a proxy that passes the body
    /// through shows the same id on both sides.
    pub id: Option<String>,
    /// Why generation stopped, per choice (`gen_ai.response.finish_reasons`).
    pub finish_reasons: FinishReasons,
    /// `usage` is a Bedrock model family's own counts (Llama's, Titan's,
    /// Nova's fields), not Bedrock's: Bedrock's token-count headers win
    /// over it (`apply_headers`).
    pub usage_is_models_own: bool,
}

/// The id a response object carries (`id`, Gemini's `responseId`).
fn id_of(v: &Value) -> Option<String> {
    field(v, "id").or_else(|| field(v, "responseId")).and_then(Value::as_str).map(|s| s.chars().take(128).collect())
}

fn model_of(v: &Value) -> Option<String> {
    field(v, "model").or_else(|| field(v, "modelVersion")).and_then(Value::as_str).map(str::to_string)
}

/// Whether a Gemini response chunk carries generated text or a function call.
fn gemini_has_content(v: &Value) -> bool {
    pointer(v, "/candidates/0/content/parts")
        .and_then(Value::as_array)
        .is_some_and(|parts| parts.iter().any(|p| non_empty(p, "/text") || p.get("functionCall").is_some()))
}

/// Whether an OpenAI chat chunk carries generated text, reasoning or a tool
/// call (the first chunk's `{"role":"assistant","content":""}` does not).
fn openai_chunk_has_content(v: &Value) -> bool {
    let Some(d) = pointer(v, "/choices/0/delta") else { return false };
    ["/content", "/reasoning_content", "/reasoning", "/refusal"].iter().any(|p| non_empty(d, p))
        || field(d, "tool_calls").and_then(Value::as_array).is_some_and(|t| !t.is_empty())
}

/// Interprets a streamed response one event at a time (SSE events, the
/// elements of a JSON-array stream, NDJSON lines, event-stream messages),
/// keeping only what a record needs: the memory it holds does not grow with
/// the stream's length.
#[derive(Debug)]
pub struct StreamInterpreter {
    format: WireFormat,
    out: LlmResponse,
    /// The time of the bytes being interpreted (0 when not given).
    now_ns: u64,
}

impl StreamInterpreter {
    pub fn new(request: &LlmRequest) -> Self {
        Self { format: request.format, out: LlmResponse { streaming: true, ..LlmResponse::default() }, now_ns: 0 }
    }

    /// The bytes interpreted next arrived at `ns` (kernel monotonic time).
    pub fn at(&mut self, ns: u64) {
        self.now_ns = ns;
    }

    /// A content-bearing event, now.
    fn content(&mut self) {
        let out = &mut self.out;
        out.content_events += 1;
        if self.now_ns != 0 {
            out.first_content_ns.get_or_insert(self.now_ns);
            out.last_content_ns = Some(self.now_ns);
        }
    }

    /// One element of a JSON-array stream (Gemini without `alt=sse`); the
    /// last element carries the usage.
    pub fn array_element(&mut self, v: &Value) {
        self.out.events += 1;
        self.json_event("", v);
    }

    /// One line of an NDJSON stream (Ollama); the last carries the usage.
    pub fn ndjson_line(&mut self, v: &Value) {
        self.out.events += 1;
        self.json_event("", v);
    }

    /// One server-sent event (`event:` field and joined `data:` lines).
    pub fn sse_event(&mut self, event: Option<&str>, data: &str) {
        if data == "[DONE]" {
            return;
        }
        self.out.events += 1;
        if event.is_none()
            && matches!(self.format, WireFormat::OpenAi | WireFormat::Unknown)
            && let Some(chunk) = chat_chunk::parse(data)
        {
            self.chat_chunk(chunk);
            return;
        }
        self.sse_event_as_value(event, data);
    }

    /// `sse_event` read through a `serde_json::Value` (any format, any shape).
    fn sse_event_as_value(&mut self, event: Option<&str>, data: &str) {
        let Ok(v) = serde_json::from_str::<Value>(data) else { return };
        let kind = event.or_else(|| field(&v, "type").and_then(Value::as_str)).unwrap_or("");
        self.json_event(kind, &v);
    }

    /// An OpenAI chat chunk read without building a `Value`: what
    /// `json_event`'s last arm does with the same chunk.
    fn chat_chunk(&mut self, chunk: chat_chunk::ChatChunk) {
        let out = &mut self.out;
        if out.model.is_none() {
            out.model = chunk.model.map(Cow::into_owned);
        }
        out.id = out.id.take().or_else(|| chunk.id.map(|s| s.chars().take(128).collect()));
        if let Some(u) = chunk.usage.as_ref().and_then(openai_usage) {
            out.usage = u;
        }
        let choices = chunk.choices.unwrap_or_default();
        for (index, reason) in &choices.finish_reasons {
            out.finish_reasons.set_str(*index, reason);
        }
        if choices.first_has_content {
            self.content();
        }
    }

    /// One message of an AWS event stream (Bedrock).
    pub fn eventstream_message(&mut self, m: &eventstream::Message) {
        self.out.events += 1;
        if m.message_type.as_deref().is_some_and(|t| t != "event") {
            self.out.error_type = m.exception_type.clone().or_else(|| m.message_type.clone());
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else { return };
        match (self.format, m.event_type.as_deref().unwrap_or("")) {
            (WireFormat::BedrockInvoke, "chunk") => {
                let Some(inner) = bedrock::chunk_event(&m.payload) else { return };
                match inner.get("type").and_then(Value::as_str) {
                    Some(kind) => {
                        let kind = kind.to_string();
                        self.anthropic_event(&kind, &inner);
                        if let Some(u) = bedrock::invocation_metrics_usage(&inner) {
                            let usage = &mut self.out.usage;
                            usage.input = usage.input.or(u.input);
                            usage.output = usage.output.or(u.output);
                        }
                    }
                    None => self.native_invoke_event(&inner),
                }
            }
            (_, "contentBlockDelta") if bedrock::converse_delta_has_content(&v) => self.content(),
            (_, "messageStop") => self.out.finish_reasons.set_at(&v, "/stopReason"),
            (_, "metadata") => {
                if let Some(u) = bedrock::converse_usage(&v) {
                    self.out.usage = u;
                }
            }
            _ => {}
        }
    }

    /// A non-Anthropic model event inside a Bedrock InvokeModelWithResponseStream
    /// chunk (Llama, Mistral, Cohere, Titan, Nova: `bedrock::native_*`). The
    /// model's own counts are taken as they come (the latest wins); the
    /// closing chunk's `amazon-bedrock-invocationMetrics`, Bedrock's count of
    /// the whole invocation, wins over them.
    fn native_invoke_event(&mut self, v: &Value) {
        if bedrock::native_chunk_has_content(v) {
            self.content();
        }
        let out = &mut self.out;
        bedrock::native_finish_reasons(v, &mut out.finish_reasons);
        if let Some(u) = bedrock::native_usage(v) {
            out.usage = u.or(&out.usage);
            out.usage_is_models_own = true;
        }
        if let Some(u) = bedrock::invocation_metrics_usage(v) {
            out.usage = u.or(&out.usage);
            out.usage_is_models_own = false;
        }
        out.error_type = error_of(v).or(out.error_type.take());
    }

    /// Anthropic's stream events (also inside Bedrock's chunks).
    fn anthropic_event(&mut self, kind: &str, v: &Value) {
        match kind {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                let out = &mut self.out;
                out.model = model_of(m).or(out.model.take());
                out.id = out.id.take().or_else(|| id_of(m));
                if let Some(u) = anthropic_usage(m) {
                    out.usage = Usage { output: None, ..u };
                }
            }
            "message_delta" => {
                if let Some(o) = num(v, "/usage/output_tokens") {
                    self.out.usage.output = Some(o); // cumulative
                }
                self.out.finish_reasons.set_at(v, "/delta/stop_reason");
            }
            "content_block_delta" => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                if ["/text", "/partial_json", "/thinking"].iter().any(|p| non_empty(d, p)) {
                    self.content();
                }
            }
            "error" => self.out.error_type = error_of(v).or(self.out.error_type.take()),
            _ => {}
        }
    }

    /// One JSON event of the stream's format; `kind` is its SSE event name
    /// or `type` field ("" for array elements and NDJSON lines).
    fn json_event(&mut self, kind: &str, v: &Value) {
        match (self.format, kind) {
            (WireFormat::Anthropic | WireFormat::BedrockInvoke, _) => self.anthropic_event(kind, v),
            (_, "error") => self.out.error_type = error_of(v).or(self.out.error_type.take()),
            (WireFormat::OpenAi, "response.created" | "response.in_progress") => {
                self.out.id = self.out.id.take().or_else(|| v.get("response").and_then(id_of));
            }
            (WireFormat::OpenAi, "response.completed" | "response.incomplete" | "response.failed") => {
                let r = v.get("response").unwrap_or(&Value::Null);
                let out = &mut self.out;
                out.model = model_of(r).or(out.model.take());
                out.id = out.id.take().or_else(|| id_of(r));
                out.usage = usage_of(WireFormat::OpenAi, r).unwrap_or(out.usage);
                responses_finish_reason(r, &mut out.finish_reasons);
            }
            (WireFormat::OpenAi, "response.output_text.delta" | "response.function_call_arguments.delta") => {
                if non_empty(v, "/delta") {
                    self.content();
                }
            }
            (format, _) => {
                let out = &mut self.out;
                if out.model.is_none() {
                    out.model = model_of(v);
                }
                out.id = out.id.take().or_else(|| id_of(v));
                if let Some(u) = usage_of(format, v) {
                    out.usage = u;
                }
                out.error_type = error_in(format, v).or(out.error_type.take());
                finish_reasons_in(format, v, &mut out.finish_reasons);
                let has_content = match format {
                    WireFormat::Gemini => gemini_has_content(v),
                    WireFormat::Cohere => cohere::has_content(v),
                    WireFormat::Ollama => ollama::has_content(v),
                    _ => openai_chunk_has_content(v) || gemini_has_content(v),
                };
                if has_content {
                    self.content();
                }
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
pub(crate) const REQUEST_CONTENT_KEYS: [&str; 12] = [
    "messages",
    "input",
    "contents",
    "prompt",
    "tools",
    "system",
    "instructions",
    "functions",
    "documents",
    "inputText",
    "message",
    "chat_history",
];
/// Top-level response fields holding content (completions, embeddings):
/// usage, model and error live beside them.
pub(crate) const RESPONSE_CONTENT_KEYS: [&str; 19] = [
    "choices",
    "output",
    "content",
    "data",
    "candidates",
    "message",
    "response",
    "generations",
    "outputs",
    "results",
    "text",
    "chat_history",
    "generation",
    "prompt",
    "documents",
    "citations",
    "search_results",
    "search_queries",
    "tool_calls",
];

/// A request body's JSON object without its content fields (`Null` when it
/// is not a JSON object): what classification and `[identity]` body
/// pointers read. Skipping a prompt validates it without allocating it.
pub fn request_fields(body: &[u8]) -> Value {
    object_without(body, &REQUEST_CONTENT_KEYS)
}

/// Content fields read as their choices' summaries (`finish::ChoiceSummaries`):
/// each choice's index and finish reason, nothing it generated.
/// (`generations`, `outputs`, `results`: Bedrock's Cohere, Mistral and
/// Titan bodies.)
const SUMMARISED_KEYS: [&str; 5] = ["choices", "candidates", "generations", "outputs", "results"];

/// The body's top-level object without its `skipped` fields; of those,
/// `SUMMARISED_KEYS` are kept as their choices' summaries.
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
                if SUMMARISED_KEYS.contains(&key.as_ref()) && self.0.contains(&key.as_ref()) {
                    let summaries = map.next_value_seed(finish::ChoiceSummaries)?;
                    out.insert(key.into_owned(), summaries);
                } else if self.0.contains(&key.as_ref()) {
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
    use provider::ModelIn;
    let path = target.split('?').next().unwrap_or(target);
    let (shape, host_provider) = table_lookups(path, host.unwrap_or(""));
    let (path_provider, operation, format) =
        shape.map_or((Provider::Unknown, Operation::Other, WireFormat::Unknown), |(p, s)| (p, s.operation, s.format));
    let provider = host_provider.unwrap_or(path_provider);
    // A path this agent does not know is read in its host's format.
    let format = if format == WireFormat::Unknown { provider.entry().format } else { format };
    let body_model = json.get("model").and_then(Value::as_str).map(str::to_string);
    let last_segment = || path.rsplit('/').next().and_then(|last| last.split(':').next()).map(str::to_string);
    let model = match shape.map(|(_, s)| s.model) {
        Some(ModelIn::LastSegment) => last_segment().or(body_model),
        Some(ModelIn::AfterModel) => bedrock::model_in_path(path).or(body_model),
        Some(ModelIn::Body) | None => body_model,
    };
    let deployment = path
        .split_once("/openai/deployments/")
        .and_then(|(_, rest)| rest.split('/').next())
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let body_stream = json.get("stream").and_then(Value::as_bool);
    let stream = body_stream.unwrap_or(false)
        || shape.is_some_and(|(_, s)| s.streams || (s.streams_by_default && body_stream != Some(false)));
    let include_usage = pointer(json, "/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    LlmRequest { provider, format, operation, model, deployment, stream, include_usage }
}

/// What the provider table says of a request's path and Host header
/// (`provider::shape_of`, `Provider::from_host`), the last answer
/// remembered: a proxy sends the same few paths and hosts over and over,
/// and the table's substring searches cost 6% of the audit thread.
fn table_lookups(path: &str, host: &str) -> (Option<(Provider, &'static provider::PathShape)>, Option<Provider>) {
    type Last = (String, Option<(Provider, &'static provider::PathShape)>);
    thread_local! {
        static LAST_PATH: std::cell::RefCell<Option<Last>> = const { std::cell::RefCell::new(None) };
        static LAST_HOST: std::cell::RefCell<Option<(String, Option<Provider>)>> = const { std::cell::RefCell::new(None) };
    }
    let shape = LAST_PATH.with_borrow_mut(|last| match last {
        Some((p, shape)) if p == path => *shape,
        _ => {
            let shape = provider::shape_of(path);
            *last = Some((path.to_string(), shape));
            shape
        }
    });
    let host_provider = LAST_HOST.with_borrow_mut(|last| match last {
        Some((h, provider)) if h.eq_ignore_ascii_case(host) => *provider,
        _ => {
            let lower = host.to_ascii_lowercase();
            let provider = Provider::from_host(&lower);
            *last = Some((lower, provider));
            provider
        }
    });
    (shape, host_provider)
}

/// Anthropic usage (`usage` of a message).
fn anthropic_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let cache_read = num(u, "/cache_read_input_tokens");
    let cache_creation = num(u, "/cache_creation_input_tokens");
    // Anthropic's input_tokens excludes both cache buckets.
    let input = num(u, "/input_tokens").map(|i| i + cache_read.unwrap_or(0) + cache_creation.unwrap_or(0));
    // (each term is at most MAX_TOKENS: the sum cannot overflow)
    Some(Usage { input, output: num(u, "/output_tokens"), cache_read, cache_creation, reasoning: None })
}

/// Who counted a response's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UsageSource {
    /// The provider (its API's usage object, Bedrock's invocation metrics).
    Provider,
    /// A Bedrock model family's own counts in its native body (Llama,
    /// Titan, Nova...): Bedrock's token-count headers win over them.
    ModelFamily,
}

/// Usage from one JSON object in the format's shape (None if it has none).
fn usage_of(format: WireFormat, v: &Value) -> Option<Usage> {
    usage_and_source(format, v).map(|(u, _)| u)
}

/// `usage_of`, with who counted it.
fn usage_and_source(format: WireFormat, v: &Value) -> Option<(Usage, UsageSource)> {
    if format == WireFormat::BedrockInvoke {
        let provider = anthropic_usage(v)
            .filter(|u| *u != Usage::default())
            .or_else(|| bedrock::invocation_metrics_usage(v))
            .map(|u| (u, UsageSource::Provider));
        return provider.or_else(|| bedrock::native_usage(v).map(|u| (u, UsageSource::ModelFamily)));
    }
    let usage = match format {
        WireFormat::Anthropic | WireFormat::BedrockInvoke => anthropic_usage(v),
        WireFormat::BedrockConverse => bedrock::converse_usage(v),
        WireFormat::Cohere => cohere::usage(v),
        WireFormat::Ollama => ollama::usage(v),
        WireFormat::Gemini => {
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
        WireFormat::OpenAi | WireFormat::Unknown => field(v, "usage").and_then(openai_usage),
    };
    usage.map(|u| (u, UsageSource::Provider))
}

/// OpenAI's usage object (Chat Completions' or the Responses API's); None
/// when `u` is not an object.
fn openai_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    if field(u, "prompt_tokens").is_some() {
        // Chat Completions and embeddings; DeepSeek names its cache
        // hits `prompt_cache_hit_tokens` (prompt_tokens includes them).
        Some(Usage {
            input: num(u, "/prompt_tokens"),
            output: num(u, "/completion_tokens"),
            cache_read: num(u, "/prompt_tokens_details/cached_tokens").or_else(|| num(u, "/prompt_cache_hit_tokens")),
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

fn error_of(v: &Value) -> Option<String> {
    let e = field(v, "error")?;
    ["/code", "/type", "/status"]
        .iter()
        .find_map(|p| pointer(e, p).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .map(str::to_string)
}

/// The finish reasons one JSON object of the format's shape reports (a
/// whole body, or one stream event), into `out`.
fn finish_reasons_in(format: WireFormat, v: &Value, out: &mut FinishReasons) {
    match format {
        WireFormat::OpenAi | WireFormat::Unknown => out.set_each(v, "/choices", "finish_reason"),
        WireFormat::Gemini => out.set_each(v, "/candidates", "finishReason"),
        WireFormat::Anthropic => out.set_at(v, "/stop_reason"),
        // Anthropic's `stop_reason` is among the native ones (Llama's too).
        WireFormat::BedrockInvoke => bedrock::native_finish_reasons(v, out),
        WireFormat::BedrockConverse => out.set_at(v, "/stopReason"),
        WireFormat::Cohere => cohere::finish_reason(v, out),
        WireFormat::Ollama => out.set_at(v, "/done_reason"),
    }
}

/// A Responses API response's reason: `incomplete_details.reason`
/// (`max_output_tokens`, `content_filter`), else its final `status`
/// (`completed`, `failed`, `cancelled`).
fn responses_finish_reason(r: &Value, out: &mut FinishReasons) {
    match (pointer(r, "/incomplete_details/reason"), r.get("status").and_then(Value::as_str)) {
        (Some(reason), _) if reason.is_string() => out.set(0, reason),
        (_, Some("in_progress" | "queued")) | (_, None) => {}
        (_, Some(status)) => out.set(0, &Value::from(status)),
    }
}

/// The error a body of this format names.
fn error_in(format: WireFormat, v: &Value) -> Option<String> {
    match format {
        WireFormat::Ollama => ollama::error(v),
        _ => error_of(v),
    }
}

/// Interprets a response body (JSON, or a stream when `content_type` says so).
pub fn parse_response(request: &LlmRequest, content_type: Option<&str>, body: &[u8], complete: bool) -> LlmResponse {
    let content_type = content_type.unwrap_or("");
    let mut stream = StreamInterpreter::new(request);
    if content_type.contains("text/event-stream") {
        sse::for_each_event(body, complete, |event, data| stream.sse_event(event, data));
        return stream.finish();
    }
    if content_type.contains("application/vnd.amazon.eventstream") {
        // A whole body is bounded by the capture cap.
        let mut decoder = eventstream::Decoder::new(body.len().max(16));
        decoder.feed(body, |m| stream.eventstream_message(&m));
        return stream.finish();
    }
    if content_type.contains("ndjson") {
        for line in body.split(|&b| b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<Value>(line) {
                stream.ndjson_line(&v);
            }
        }
        return stream.finish();
    }
    if request.stream && body.trim_ascii_start().starts_with(b"[") {
        // Gemini's streamGenerateContent without `alt=sse`: one JSON array
        // written element by element; the last element carries the usage.
        for v in json_array_elements(body) {
            stream.array_element(&v);
        }
        return stream.finish();
    }
    if matches!(request.format, WireFormat::OpenAi | WireFormat::Unknown)
        && let Some(completion) = chat_completion::parse(body)
    {
        return chat_completion_response(completion);
    }
    whole_response_as_value(request, body)
}

/// A whole JSON response read through a `serde_json::Value` of its
/// non-content members (any format, any shape).
fn whole_response_as_value(request: &LlmRequest, body: &[u8]) -> LlmResponse {
    let v = object_without(body, &RESPONSE_CONTENT_KEYS);
    let mut finish_reasons = FinishReasons::default();
    finish_reasons_in(request.format, &v, &mut finish_reasons);
    if request.operation == Operation::Responses {
        responses_finish_reason(&v, &mut finish_reasons);
    }
    let (usage, source) = usage_and_source(request.format, &v).unwrap_or((Usage::default(), UsageSource::Provider));
    let usage_is_models_own = source == UsageSource::ModelFamily && usage != Usage::default();
    LlmResponse {
        finish_reasons,
        model: model_of(&v),
        usage,
        usage_is_models_own,
        error_type: error_in(request.format, &v),
        id: id_of(&v),
        ..LlmResponse::default()
    }
}

/// An OpenAI chat completion read without building a `Value` (but its
/// usage): what `whole_response_as_value` makes of the same body.
fn chat_completion_response(c: chat_completion::ChatCompletion) -> LlmResponse {
    let usage = c.usage.as_ref().and_then(openai_usage).unwrap_or_default();
    let mut finish_reasons = FinishReasons::default();
    // (The general path keeps the first `MAX_REASONS` choices' summaries.)
    for (position, choice) in c.choices.iter().flatten().take(finish::MAX_REASONS).enumerate() {
        if let Some(reason) = &choice.0.finish_reason {
            finish_reasons.set_str(choice.0.index.unwrap_or(position as u64), reason);
        }
    }
    LlmResponse {
        finish_reasons,
        model: c.model.map(Cow::into_owned),
        usage,
        id: c.id.map(|s| s.chars().take(128).collect()),
        ..LlmResponse::default()
    }
}

/// What a response's headers add: an error type (Bedrock's
/// `x-amzn-errortype`) when the body named none; token counts (Bedrock's
/// `x-amzn-bedrock-*-token-count`, its own count of the invocation), which
/// win over a model family's own counts (`usage_is_models_own`) and
/// otherwise fill only the counts the body did not name (an Anthropic
/// body's usage wins); the input and its cache buckets stay consistent
/// (`with_cache_consistent`). Header names come from the provider table.
pub fn apply_headers<'a>(response: &mut LlmResponse, header: impl Fn(&str) -> Option<&'a str>) {
    for entry in provider::PROVIDERS {
        if response.error_type.is_none()
            && let Some(value) = entry.error_header.and_then(&header)
        {
            // `ThrottlingException:http://internal.amazon.com/coral/...`
            let kind = value.split(':').next().unwrap_or("").trim();
            response.error_type = (!kind.is_empty()).then(|| kind.chars().take(128).collect());
        }
        if let Some(h) = entry.usage_headers {
            let count =
                |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n <= MAX_TOKENS);
            let (cache_read, cache_creation) = (count(h.cache_read), count(h.cache_write));
            let in_headers = Usage {
                // The input count excludes both cache buckets, as Converse's `inputTokens` does.
                input: count(h.input).map(|i| i + cache_read.unwrap_or(0) + cache_creation.unwrap_or(0)),
                output: count(h.output),
                cache_read,
                cache_creation,
                reasoning: None,
            };
            if in_headers == Usage::default() {
                continue;
            }
            response.usage = if response.usage_is_models_own {
                with_cache_consistent(in_headers, &response.usage)
            } else {
                with_cache_consistent(response.usage, &in_headers)
            };
            response.usage_is_models_own = false;
        }
    }
}

/// `first`'s counts, those it lacks from `second`, with the input count and
/// its cache buckets kept together: each source's input is its uncached
/// count plus the buckets it names, so a bucket only the other source
/// names is added to the input (else the uncached part, input - read -
/// write, and the cost come out too low), and a bucket the input's source
/// names is its own.
fn with_cache_consistent(first: Usage, second: &Usage) -> Usage {
    let (own, other) = if first.input.is_some() { (&first, second) } else { (second, &first) };
    let mut out = first.or(second);
    out.cache_read = own.cache_read.or(other.cache_read);
    out.cache_creation = own.cache_creation.or(other.cache_creation);
    let added = [(own.cache_read, other.cache_read), (own.cache_creation, other.cache_creation)]
        .into_iter()
        .filter_map(|(named, filled)| if named.is_none() { filled } else { None })
        .fold(0u64, u64::saturating_add);
    out.input = own.input.map(|i| i.saturating_add(added));
    out
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
    fn pointer_reads_what_serde_json_pointer_reads() {
        let v: Value = serde_json::from_str(
            r#"{"a":{"b":[10,{"c":"x"}]},"a/b":1,"m~n":2,"":{"":3},"usage":{"prompt_tokens":42},"l":[0,1]}"#,
        )
        .unwrap();
        for p in [
            "",
            "/",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2",
            "/a/b/01",
            "/a/b/+1",
            "/a/b/-1",
            "/a~1b",
            "/m~0n",
            "/m~n",
            "//",
            "/usage/prompt_tokens",
            "/usage/prompt_tokens/x",
            "a",
            "/l/1",
            "/l/00",
            "/l/0",
            "/l/",
            "/a/b/1/c/",
            "/~01",
            "/~10",
        ] {
            assert_eq!(pointer(&v, p), v.pointer(p), "{p:?}");
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
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":40}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
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
        let stream = "event: response.created\ndata: {\"type\":\"response.created\"}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":8,\"output_tokens_details\":{\"reasoning_tokens\":2}}}}\n\n";
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

    fn usage(input: u64, output: u64, cache_read: Option<u64>, cache_creation: Option<u64>) -> Usage {
        Usage { input: Some(input), output: Some(output), cache_read, cache_creation, reasoning: None }
    }

    #[test]
    fn bedrock_converse_plain_and_streamed() {
        let r = req("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse", r#"{"inferenceConfig":{}}"#);
        assert_eq!(
            (r.provider, r.operation.name(), r.format, r.model.as_deref(), r.stream),
            (
                Provider::Bedrock,
                "chat",
                WireFormat::BedrockConverse,
                Some("anthropic.claude-3-5-haiku-20241022-v1:0"),
                false
            )
        );
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":11,"outputTokens":7,"totalTokens":18,"cacheReadInputTokens":3}}"#;
        assert_eq!(parse_response(&r, Some("application/json"), body, true).usage, usage(14, 7, Some(3), None));
        let s = req("/model/amazon.nova-lite-v1:0/converse-stream", "{}");
        assert!(s.stream);
        let m = |kind: &str, payload: &str| {
            eventstream::encode(&[(":event-type", kind), (":message-type", "event")], payload.as_bytes())
        };
        let body = [
            m("messageStart", r#"{"role":"assistant"}"#),
            m("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":""}}"#),
            m("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#),
            m("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"lo"}}"#),
            m("contentBlockStop", r#"{"contentBlockIndex":0}"#),
            m("messageStop", r#"{"stopReason":"end_turn"}"#),
            m(
                "metadata",
                r#"{"usage":{"inputTokens":25,"outputTokens":9,"totalTokens":34},"metrics":{"latencyMs":300}}"#,
            ),
        ]
        .concat();
        let resp = parse_response(&s, Some("application/vnd.amazon.eventstream"), &body, true);
        assert_eq!((resp.usage, resp.content_events, resp.events), (usage(25, 9, None, None), 2, 7));
        let throttled = eventstream::encode(
            &[(":exception-type", "throttlingException"), (":message-type", "exception")],
            br#"{"message":"slow down"}"#,
        );
        let resp = parse_response(&s, Some("application/vnd.amazon.eventstream"), &throttled, true);
        assert_eq!(resp.error_type.as_deref(), Some("throttlingException"));
    }

    #[test]
    fn bedrock_invoke_reads_anthropic_bodies_chunks_and_token_headers() {
        use base64::Engine as _;
        let r = req(
            "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
            r#"{"anthropic_version":"bedrock-2023-05-31"}"#,
        );
        assert_eq!((r.format, r.operation), (WireFormat::BedrockInvoke, Operation::InvokeModel));
        let body = br#"{"id":"msg_bdrk_1","type":"message","model":"claude-3-haiku-20240307","content":[],"usage":{"input_tokens":12,"output_tokens":6}}"#;
        let resp = parse_response(&r, Some("application/json"), body, true);
        assert_eq!((resp.usage, resp.model.as_deref()), (usage(12, 6, None, None), Some("claude-3-haiku-20240307")));
        // A body of another model family: the headers' counts.
        let mut resp = parse_response(&r, Some("application/json"), br#"{"generation":"x"}"#, true);
        let headers = [("x-amzn-bedrock-input-token-count", "40"), ("x-amzn-bedrock-output-token-count", "2")];
        apply_headers(&mut resp, |n| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v));
        assert_eq!(resp.usage, usage(40, 2, None, None));
        let mut err = parse_response(&r, Some("application/json"), br#"{"message":"Too many requests"}"#, true);
        apply_headers(&mut err, |n| {
            (n == "x-amzn-errortype")
                .then_some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/")
        });
        assert_eq!(err.error_type.as_deref(), Some("ThrottlingException"));
        let s = req("/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream", "{}");
        let chunk = |event: &str| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(event);
            eventstream::encode(
                &[(":event-type", "chunk"), (":message-type", "event")],
                format!(r#"{{"bytes":"{b64}"}}"#).as_bytes(),
            )
        };
        let body = [
            chunk(r#"{"type":"message_start","message":{"model":"claude-3-haiku-20240307","usage":{"input_tokens":12,"output_tokens":1}}}"#),
            chunk(r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#),
            chunk(r#"{"type":"message_delta","usage":{"output_tokens":6}}"#),
            chunk(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":6}}"#),
        ]
        .concat();
        let resp = parse_response(&s, Some("application/vnd.amazon.eventstream"), &body, true);
        assert_eq!((resp.usage, resp.content_events, resp.events), (usage(12, 6, None, None), 1, 4));
    }

    /// One InvokeModelWithResponseStream body per model family: each
    /// content chunk is stamped (1 ms apart), usage and the finish reason
    /// come from the model's fields or Bedrock's closing invocation metrics.
    #[test]
    fn bedrock_invoke_streams_of_other_model_families_are_timed_and_counted() {
        let metrics = |i: u64, o: u64| {
            format!(
                r#""amazon-bedrock-invocationMetrics":{{"inputTokenCount":{i},"outputTokenCount":{o},"invocationLatency":90,"firstByteLatency":20}}"#
            )
        };
        /// Model id, its chunks' events, (input, output) usage, finish
        /// reason, the first and last chunk that carries text.
        type Family = (&'static str, Vec<String>, (u64, u64), &'static str, (u64, u64));
        let families: [Family; 7] = [
            (
                "meta.llama3-8b-instruct-v1:0",
                vec![
                    r#"{"generation":"","prompt_token_count":17,"generation_token_count":1,"stop_reason":null}"#.into(),
                    r#"{"generation":"Hel","prompt_token_count":null,"generation_token_count":2,"stop_reason":null}"#.into(),
                    r#"{"generation":"lo","prompt_token_count":null,"generation_token_count":3,"stop_reason":null}"#.into(),
                    format!(r#"{{"generation":"","prompt_token_count":null,"generation_token_count":4,"stop_reason":"stop",{}}}"#, metrics(17, 4)),
                ],
                (17, 4),
                "stop",
                (1, 2),
            ),
            (
                "mistral.mistral-large-2402-v1:0",
                vec![
                    r#"{"outputs":[{"text":"Hel","stop_reason":null}]}"#.into(),
                    r#"{"outputs":[{"text":"lo","stop_reason":null}]}"#.into(),
                    format!(r#"{{"outputs":[{{"text":"","stop_reason":"length"}}],{}}}"#, metrics(21, 2)),
                ],
                (21, 2),
                "length",
                (0, 1),
            ),
            (
                "cohere.command-r-v1:0",
                vec![
                    r#"{"is_finished":false,"event_type":"stream-start","generation_id":"g1"}"#.into(),
                    r#"{"is_finished":false,"event_type":"text-generation","text":"Hel"}"#.into(),
                    r#"{"is_finished":false,"event_type":"text-generation","text":"lo"}"#.into(),
                    format!(r#"{{"is_finished":true,"event_type":"stream-end","finish_reason":"COMPLETE","text":"Hello",{}}}"#, metrics(9, 2)),
                ],
                (9, 2),
                "COMPLETE",
                (1, 2),
            ),
            (
                "cohere.command-text-v14",
                vec![
                    r#"{"text":"Hel","is_finished":false}"#.into(),
                    r#"{"text":"lo","is_finished":false}"#.into(),
                    format!(r#"{{"is_finished":true,"finish_reason":"MAX_TOKENS",{}}}"#, metrics(8, 2)),
                ],
                (8, 2),
                "MAX_TOKENS",
                (0, 1),
            ),
            (
                "amazon.titan-text-express-v1",
                vec![
                    r#"{"outputText":"Hel","index":0,"totalOutputTextTokenCount":1,"completionReason":null,"inputTextTokenCount":5}"#.into(),
                    format!(r#"{{"outputText":"lo","index":0,"totalOutputTextTokenCount":2,"completionReason":"FINISHED","inputTextTokenCount":null,{}}}"#, metrics(5, 2)),
                ],
                (5, 2),
                "FINISHED",
                (0, 1),
            ),
            (
                "amazon.nova-lite-v1:0",
                vec![
                    r#"{"messageStart":{"role":"assistant"}}"#.into(),
                    r#"{"contentBlockDelta":{"delta":{"text":"Hel"},"contentBlockIndex":0}}"#.into(),
                    r#"{"contentBlockDelta":{"delta":{"text":"lo"},"contentBlockIndex":0}}"#.into(),
                    r#"{"contentBlockStop":{"contentBlockIndex":0}}"#.into(),
                    r#"{"messageStop":{"stopReason":"end_turn"}}"#.into(),
                    format!(r#"{{"metadata":{{"usage":{{"inputTokens":6,"outputTokens":2}}}},{}}}"#, metrics(6, 2)),
                ],
                (6, 2),
                "end_turn",
                (1, 2),
            ),
            (
                "mistral.mistral-large-2407-v1:0",
                vec![
                    r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hel"},"stop_reason":null}]}"#.into(),
                    r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"lo"},"stop_reason":null}]}"#.into(),
                    format!(
                        r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":""}},"stop_reason":"stop"}}],{}}}"#,
                        metrics(13, 2)
                    ),
                ],
                (13, 2),
                "stop",
                (0, 1),
            ),
        ];
        for (model, chunks, (input, output), reason, (first, last)) in families {
            let r = req(&format!("/model/{model}/invoke-with-response-stream"), "{}");
            let mut s = StreamInterpreter::new(&r);
            let mut decoder = eventstream::Decoder::new(4096);
            for (i, chunk) in chunks.iter().enumerate() {
                s.at(1_000_000 * (i as u64 + 1));
                decoder.feed(&bedrock::encode_chunk(chunk.as_bytes()), |m| s.eventstream_message(&m));
            }
            let out = s.finish();
            let what = format!("{model}: {out:?}");
            assert_eq!(out.usage, usage(input, output, None, None), "{what}");
            assert_eq!(out.finish_reasons.into_vec(), [reason], "{what}");
            assert_eq!((out.events, out.content_events), (chunks.len() as u32, 2), "{what}");
            let stamp = |chunk: u64| Some(1_000_000 * (chunk + 1));
            assert_eq!((out.first_content_ns, out.last_content_ns), (stamp(first), stamp(last)), "{what}");
        }
    }

    /// Bedrock's closing invocation metrics win over Nova's own counts, but
    /// a cache count they do not name stays as Nova reported it.
    #[test]
    fn invocation_metrics_without_cache_counts_keep_the_models_cache_counts() {
        let r = req("/model/amazon.nova-pro-v1:0/invoke-with-response-stream", "{}");
        let mut s = StreamInterpreter::new(&r);
        let mut decoder = eventstream::Decoder::new(4096);
        for chunk in [
            r#"{"contentBlockDelta":{"delta":{"text":"Hi"},"contentBlockIndex":0}}"#,
            r#"{"metadata":{"usage":{"inputTokens":6,"outputTokens":2,"cacheReadInputTokens":30}},"amazon-bedrock-invocationMetrics":{"inputTokenCount":36,"outputTokenCount":2}}"#,
        ] {
            decoder.feed(&bedrock::encode_chunk(chunk.as_bytes()), |m| s.eventstream_message(&m));
        }
        let out = s.finish();
        assert_eq!(out.usage, usage(36, 2, Some(30), None), "{out:?}");
    }

    #[test]
    fn bedrock_invoke_bodies_of_other_model_families() {
        let cases = [
            (
                "meta.llama3-8b-instruct-v1:0",
                r#"{"generation":"Hi","prompt_token_count":17,"generation_token_count":4,"stop_reason":"stop"}"#,
                (17, 4),
                "stop",
            ),
            (
                "mistral.mistral-large-2402-v1:0",
                r#"{"outputs":[{"text":"Hi","stop_reason":"length"}]}"#,
                (0, 0),
                "length",
            ),
            (
                "cohere.command-text-v14",
                r#"{"id":"c1","generations":[{"id":"g1","text":"Hi","finish_reason":"COMPLETE"}],"prompt":"p"}"#,
                (0, 0),
                "COMPLETE",
            ),
            (
                "amazon.titan-text-express-v1",
                r#"{"inputTextTokenCount":5,"results":[{"tokenCount":2,"outputText":"Hi","completionReason":"FINISHED"}]}"#,
                (5, 2),
                "FINISHED",
            ),
            (
                "amazon.nova-lite-v1:0",
                r#"{"output":{"message":{"content":[{"text":"Hi"}]}},"stopReason":"max_tokens","usage":{"inputTokens":6,"outputTokens":2}}"#,
                (6, 2),
                "max_tokens",
            ),
        ];
        for (model, body, (input, output), reason) in cases {
            let r = req(&format!("/model/{model}/invoke"), "{}");
            let resp = parse_response(&r, Some("application/json"), body.as_bytes(), true);
            let expected = if input == 0 { Usage::default() } else { usage(input, output, None, None) };
            assert_eq!((resp.usage, resp.finish_reasons.into_vec()), (expected, vec![reason.to_string()]), "{model}");
        }
    }

    /// Non-streamed InvokeModel: Bedrock's `x-amzn-bedrock-*-token-count`
    /// headers win over a model family's own counts (set one apart here, so
    /// the result tells which was read), their cache counts are kept, and an
    /// Anthropic body's usage wins over them.
    #[test]
    fn bedrock_token_headers_win_over_a_model_familys_own_counts_and_carry_the_cache_counts() {
        let with_headers = |model: &str, body: &str, headers: &[(&str, &str)]| {
            let r = req(&format!("/model/{model}/invoke"), "{}");
            let mut resp = parse_response(&r, Some("application/json"), body.as_bytes(), true);
            apply_headers(&mut resp, |n| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v));
            resp.usage
        };
        let counts = |input: &'static str, output: &'static str| {
            vec![("x-amzn-bedrock-input-token-count", input), ("x-amzn-bedrock-output-token-count", output)]
        };
        let llama = r#"{"generation":"Hi","prompt_token_count":18,"generation_token_count":10,"stop_reason":"stop"}"#;
        assert_eq!(with_headers("meta.llama3-8b-instruct-v1:0", llama, &counts("17", "9")), usage(17, 9, None, None));
        assert_eq!(with_headers("meta.llama3-8b-instruct-v1:0", llama, &[]), usage(18, 10, None, None), "no headers");
        let titan =
            r#"{"inputTextTokenCount":6,"results":[{"tokenCount":7,"outputText":"Hi","completionReason":"FINISHED"}]}"#;
        assert_eq!(with_headers("amazon.titan-text-express-v1", titan, &counts("5", "6")), usage(5, 6, None, None));
        // Only an output count in the headers: the body's input stays.
        let only_output = [("x-amzn-bedrock-output-token-count", "6")];
        assert_eq!(with_headers("amazon.titan-text-express-v1", titan, &only_output), usage(6, 6, None, None));
        let mut cached = counts("2", "5");
        cached.extend([
            ("x-amzn-bedrock-cache-read-input-token-count", "3"),
            ("x-amzn-bedrock-cache-write-input-token-count", "1"),
        ]);
        let nova = r#"{"output":{"message":{"content":[{"text":"Hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":7,"outputTokens":6}}"#;
        assert_eq!(with_headers("us.amazon.nova-lite-v1:0", nova, &cached), usage(6, 5, Some(3), Some(1)));
        // A body naming no usage (Mistral's): the headers' counts, cache included.
        let mistral = r#"{"outputs":[{"text":"Hi","stop_reason":"stop"}]}"#;
        let mut read_only = counts("16", "8");
        read_only.push(("x-amzn-bedrock-cache-read-input-token-count", "5"));
        assert_eq!(with_headers("mistral.mistral-large-2402-v1:0", mistral, &read_only), usage(21, 8, Some(5), None));
        // Unbelievable or unreadable counts are unknown, never 0.
        let bad = [("x-amzn-bedrock-input-token-count", "-1"), ("x-amzn-bedrock-output-token-count", "1e9")];
        assert_eq!(with_headers("mistral.mistral-large-2402-v1:0", mistral, &bad), Usage::default());
        // An Anthropic body's usage (its cache buckets named) wins over the headers.
        let anthropic = r#"{"id":"msg_1","type":"message","usage":{"input_tokens":12,"cache_read_input_tokens":4,"output_tokens":6}}"#;
        assert_eq!(
            with_headers("anthropic.claude-3-haiku-20240307-v1:0", anthropic, &counts("40", "2")),
            usage(16, 6, Some(4), None)
        );
        // The headers' cache-write bucket the body did not name joins its
        // input (12 uncached + 4 read + 2 written), so uncached stays 12.
        let mut write = counts("40", "2");
        write.push(("x-amzn-bedrock-cache-write-input-token-count", "2"));
        let u = with_headers("anthropic.claude-3-haiku-20240307-v1:0", anthropic, &write);
        assert_eq!(u, usage(18, 6, Some(4), Some(2)));
        let prices = crate::cost::PriceTable::load(None).unwrap();
        let model = "anthropic.claude-3-haiku-20240307-v1:0";
        let parts = |uncached: u64, read: u64, written: u64| {
            let one =
                |u: Usage| prices.cost(model, &u).unwrap() - prices.cost(model, &usage(0, 0, None, None)).unwrap();
            one(usage(uncached, 0, None, None))
                + one(usage(read, 0, Some(read), None))
                + one(usage(written, 0, None, Some(written)))
                + one(usage(0, 6, None, None))
        };
        assert_eq!(prices.cost(model, &u).unwrap(), parts(12, 4, 2), "12 uncached tokens are billed");
        // A Converse body without cache fields: the headers' read bucket joins its input.
        let c = req("/model/anthropic.claude-3-haiku-20240307-v1:0/converse", "{}");
        let mut resp = parse_response(
            &c,
            Some("application/json"),
            br#"{"usage":{"inputTokens":10,"outputTokens":3},"stopReason":"end_turn"}"#,
            true,
        );
        let headers = [("x-amzn-bedrock-cache-read-input-token-count", "5")];
        apply_headers(&mut resp, |n| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v));
        assert_eq!(resp.usage, usage(15, 3, Some(5), None));
    }

    #[test]
    fn vertex_azure_and_openai_compatible_servers() {
        let v = req(
            "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
            "{}",
        );
        assert_eq!(
            (v.provider.name(), v.format, v.model.as_deref(), v.stream),
            ("gcp.vertex_ai", WireFormat::Gemini, Some("gemini-2.5-flash"), true)
        );
        let a = req(
            "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict",
            r#"{"anthropic_version":"vertex-2023-10-16"}"#,
        );
        assert_eq!((a.provider.name(), a.format, a.operation.name()), ("gcp.vertex_ai", WireFormat::Anthropic, "chat"));
        assert_eq!(a.model.as_deref(), Some("claude-sonnet-4@20250514"));
        let z = req("/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21", "{}");
        assert_eq!(
            (z.provider.name(), z.deployment.as_deref(), z.model.as_deref()),
            ("azure.ai.openai", Some("prod-4o"), None)
        );
        let resp = parse_response(
            &z,
            None,
            br#"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            true,
        );
        assert_eq!(resp.model.as_deref(), Some("gpt-4o-2024-08-06"), "Azure's model comes from the response");
        let d = parse_request("/chat/completions", Some("api.deepseek.com"), br#"{"model":"deepseek-chat"}"#);
        assert_eq!((d.provider.name(), d.format), ("deepseek", WireFormat::OpenAi));
        let body = br#"{"usage":{"prompt_tokens":100,"completion_tokens":10,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36,"completion_tokens_details":{"reasoning_tokens":4}}}"#;
        assert_eq!(
            parse_response(&d, None, body, true).usage,
            Usage {
                input: Some(100),
                output: Some(10),
                cache_read: Some(64),
                cache_creation: None,
                reasoning: Some(4)
            }
        );
        let m = parse_request("/v1/chat/completions", Some("api.mistral.ai"), b"{}");
        assert_eq!(m.provider.name(), "mistral_ai");
        let g = parse_request("/openai/v1/chat/completions", Some("api.groq.com"), b"{}");
        assert_eq!((g.provider.name(), g.format), ("groq", WireFormat::OpenAi));
    }

    /// Mistral streams its usage in the chunk that finishes (no
    /// `stream_options` needed); DeepSeek's usage chunk (no choices) names its
    /// cache hits `prompt_cache_hit_tokens`, included in `prompt_tokens`.
    #[test]
    fn mistral_and_deepseek_streams_give_their_usage_and_cache_hits() {
        let m = parse_request("/v1/chat/completions", Some("api.mistral.ai"), br#"{"stream":true}"#);
        let stream = "data: {\"id\":\"c1\",\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c1\",\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c1\",\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"total_tokens\":14,\"completion_tokens\":5}}\n\n\
            data: [DONE]\n\n";
        let resp = parse_response(&m, Some("text/event-stream"), stream.as_bytes(), true);
        assert_eq!(
            (resp.usage, resp.content_events, resp.events, resp.model.as_deref(), resp.finish_reasons.into_vec()),
            (usage(9, 5, None, None), 1, 3, Some("mistral-small-latest"), vec!["stop".to_string()])
        );
        let d = parse_request("/chat/completions", Some("api.deepseek.com"), br#"{"stream":true}"#);
        let stream = "data: {\"id\":\"d1\",\"model\":\"deepseek-chat\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"d1\",\"model\":\"deepseek-chat\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
            data: {\"id\":\"d1\",\"model\":\"deepseek-chat\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":10,\"total_tokens\":110,\"prompt_tokens_details\":{\"cached_tokens\":64},\"prompt_cache_hit_tokens\":64,\"prompt_cache_miss_tokens\":36}}\n\n\
            data: [DONE]\n\n";
        let resp = parse_response(&d, Some("text/event-stream"), stream.as_bytes(), true);
        assert_eq!((resp.usage, resp.content_events, resp.events), (usage(100, 10, Some(64), None), 1, 3));
        // Without `prompt_tokens_details`, as DeepSeek's older answers.
        let stream = stream.replace(r#""prompt_tokens_details":{"cached_tokens":64},"#, "");
        let resp = parse_response(&d, Some("text/event-stream"), stream.as_bytes(), true);
        assert_eq!(resp.usage, usage(100, 10, Some(64), None));
    }

    #[test]
    fn cohere_v2_chat_plain_and_streamed() {
        let r = req("/v2/chat", r#"{"model":"command-r-plus-08-2024","stream":true}"#);
        assert_eq!((r.provider.name(), r.operation.name(), r.stream), ("cohere", "chat", true));
        let body = br#"{"id":"c1","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"hi"}]},"usage":{"billed_units":{"input_tokens":5,"output_tokens":2},"tokens":{"input_tokens":71,"output_tokens":2}}}"#;
        assert_eq!(parse_response(&r, None, body, true).usage, usage(71, 2, None, None));
        let stream = "event: message-start\ndata: {\"id\":\"c2\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\nevent: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\nevent: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hi\"}}}}\n\nevent: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":3},\"tokens\":{\"input_tokens\":70,\"output_tokens\":3}}}}\n\n";
        let resp = parse_response(&r, Some("text/event-stream"), stream.as_bytes(), true);
        assert_eq!(
            (resp.usage, resp.content_events, resp.events, resp.id.as_deref()),
            (usage(70, 3, None, None), 1, 4, Some("c2"))
        );
    }

    #[test]
    fn ollama_native_plain_and_ndjson() {
        let r = req("/api/chat", r#"{"model":"llama3.2"}"#);
        assert_eq!(
            (r.provider.name(), r.operation.name(), r.stream),
            ("ollama", "chat", true),
            "Ollama streams by default"
        );
        let g = req("/api/generate", r#"{"model":"llama3.2","stream":false}"#);
        assert_eq!((g.operation.name(), g.stream), ("text_completion", false));
        let body = br#"{"model":"llama3.2","created_at":"2026-11-30T10:00:00Z","response":"hi","done":true,"prompt_eval_count":26,"eval_count":298}"#;
        let resp = parse_response(&g, Some("application/json"), body, true);
        assert_eq!((resp.usage, resp.model.as_deref()), (usage(26, 298, None, None), Some("llama3.2")));
        let ndjson = b"{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":false}\n{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":10,\"eval_count\":2}\n";
        let resp = parse_response(&r, Some("application/x-ndjson"), ndjson, true);
        assert_eq!((resp.usage, resp.content_events, resp.events), (usage(10, 2, None, None), 1, 3));
        let err = parse_response(&r, Some("application/json"), br#"{"error":"model \"x\" not found"}"#, true);
        assert_eq!(err.error_type.as_deref(), Some("error"));
    }

    /// The finish reasons of a whole body (`content_type` None) or a stream.
    fn reasons(r: &LlmRequest, content_type: Option<&str>, body: &[u8]) -> Vec<String> {
        parse_response(r, content_type, body, true).finish_reasons.into_vec()
    }

    #[test]
    fn finish_reasons_of_openai_chat_and_responses() {
        let chat = req("/v1/chat/completions", "{}");
        let body = br#"{"id":"c","choices":[{"index":1,"message":{"content":"b"},"finish_reason":"length"},{"index":0,"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let resp = parse_response(&chat, None, body, true);
        assert_eq!(resp.finish_reasons.into_vec(), ["stop", "length"], "in choice order");
        assert_eq!(resp.usage.output, Some(2), "the summarised choices leave usage alone");
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        assert_eq!(reasons(&chat, Some("text/event-stream"), stream.as_bytes()), ["tool_calls"]);
        assert!(reasons(&chat, None, br#"{"choices":[{"message":{"content":"x"}}]}"#).is_empty(), "none named");

        let responses = req("/v1/responses", "{}");
        let done = br#"{"id":"resp_1","object":"response","status":"completed","incomplete_details":null,"output":[]}"#;
        assert_eq!(reasons(&responses, None, done), ["completed"]);
        let cut = br#"{"id":"resp_2","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}"#;
        assert_eq!(reasons(&responses, None, cut), ["max_output_tokens"]);
        let stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\"}}\n\nevent: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"content_filter\"},\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
        let resp = parse_response(&responses, Some("text/event-stream"), stream.as_bytes(), true);
        assert_eq!((resp.finish_reasons.into_vec(), resp.usage.input), (vec!["content_filter".to_string()], Some(3)));
    }

    #[test]
    fn finish_reasons_of_anthropic_and_bedrock() {
        let a = req("/v1/messages", "{}");
        let body = br#"{"id":"msg_1","content":[{"type":"text","text":"stop"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":2}}"#;
        assert_eq!(reasons(&a, None, body), ["max_tokens"]);
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"stop_reason\":null,\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(reasons(&a, Some("text/event-stream"), stream.as_bytes()), ["end_turn"]);

        let converse = req("/model/amazon.nova-lite-v1:0/converse", "{}");
        let body = br#"{"output":{"message":{"content":[{"text":"x"}]}},"stopReason":"guardrail_intervened","usage":{"inputTokens":1,"outputTokens":1}}"#;
        assert_eq!(reasons(&converse, None, body), ["guardrail_intervened"]);
        let m = |kind: &str, payload: &str| {
            eventstream::encode(&[(":event-type", kind), (":message-type", "event")], payload.as_bytes())
        };
        let stream = [
            m("contentBlockDelta", r#"{"delta":{"text":"Hi"}}"#),
            m("messageStop", r#"{"stopReason":"tool_use"}"#),
            m("metadata", r#"{"usage":{"inputTokens":5,"outputTokens":2}}"#),
        ]
        .concat();
        let s = req("/model/amazon.nova-lite-v1:0/converse-stream", "{}");
        assert_eq!(reasons(&s, Some("application/vnd.amazon.eventstream"), &stream), ["tool_use"]);

        use base64::Engine as _;
        let chunk = |event: &str| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(event);
            m("chunk", &format!(r#"{{"bytes":"{b64}"}}"#))
        };
        let stream = [
            chunk(r#"{"type":"content_block_delta","delta":{"text":"Hi"}}"#),
            chunk(r#"{"type":"message_delta","delta":{"stop_reason":"stop_sequence"},"usage":{"output_tokens":2}}"#),
        ]
        .concat();
        let invoke = req("/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream", "{}");
        assert_eq!(reasons(&invoke, Some("application/vnd.amazon.eventstream"), &stream), ["stop_sequence"]);
    }

    #[test]
    fn finish_reasons_of_gemini_cohere_and_ollama() {
        let g = req("/v1beta/models/gemini-2.5-flash:generateContent", "{}");
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"MAX_TOKENS","index":0}],"usageMetadata":{"promptTokenCount":1}}"#;
        assert_eq!(reasons(&g, None, body), ["MAX_TOKENS"]);
        let sg = req("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "{}");
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\n\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}]}\n\n";
        assert_eq!(reasons(&sg, Some("text/event-stream"), stream.as_bytes()), ["STOP"]);
        let array = br#"[{"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"SAFETY"}]}]"#;
        assert_eq!(reasons(&sg, Some("application/json"), array), ["SAFETY"]);

        let c = req("/v2/chat", "{}");
        assert_eq!(reasons(&c, None, br#"{"id":"c","finish_reason":"MAX_TOKENS","message":{}}"#), ["MAX_TOKENS"]);
        let stream =
            "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\"}}\n\n";
        assert_eq!(reasons(&c, Some("text/event-stream"), stream.as_bytes()), ["COMPLETE"]);

        let o = req("/api/chat", "{}");
        let ndjson = b"{\"message\":{\"content\":\"Hi\"},\"done\":false}\n{\"done\":true,\"done_reason\":\"length\",\"eval_count\":2}\n";
        assert_eq!(reasons(&o, Some("application/x-ndjson"), ndjson), ["length"]);
        assert_eq!(reasons(&o, None, br#"{"response":"x","done":true,"done_reason":"stop"}"#), ["stop"]);
    }

    #[test]
    fn a_finish_reason_never_carries_text() {
        let chat = req("/v1/chat/completions", "{}");
        let body = br#"{"choices":[{"finish_reason":"Sure, here is the secret"},{"finish_reason":{"text":"nested"}},{"finish_reason":"stop"}]}"#;
        assert_eq!(reasons(&chat, None, body), ["stop"]);
        let a = req("/v1/messages", "{}");
        let long = format!(r#"{{"stop_reason":"{}"}}"#, "a".repeat(500));
        assert_eq!(reasons(&a, None, long.as_bytes()), ["a".repeat(finish::MAX_REASON_CHARS)]);
    }

    #[test]
    fn role_only_and_empty_deltas_are_not_content_and_content_is_timed() {
        let r = req("/v1/chat/completions", r#"{"stream":true}"#);
        let mut s = StreamInterpreter::new(&r);
        s.at(100);
        s.sse_event(None, r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#);
        s.at(200);
        s.sse_event(None, r#"{"choices":[{"delta":{"content":"a"}}]}"#);
        s.at(300);
        s.sse_event(None, r#"{"choices":[{"delta":{"content":null}}]}"#);
        s.at(500);
        s.sse_event(None, r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#);
        s.sse_event(None, "[DONE]");
        let out = s.finish();
        assert_eq!(
            (out.content_events, out.events, out.first_content_ns, out.last_content_ns),
            (2, 4, Some(200), Some(500))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(target in "[ -~]{0,60}", body in prop::collection::vec(any::<u8>(), 0..1500), sse in any::<bool>()) {
            let r = parse_request(&target, None, &body);
            let _ = parse_response(&r, if sse { Some("text/event-stream") } else { None }, &body, sse);
        }
    }

    /// A JSON object text of `members`, in order (duplicates kept).
    fn obj(members: Vec<(&'static str, String)>) -> String {
        format!("{{{}}}", members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(","))
    }

    /// A JSON value at the edges the typed reads must treat as the general
    /// path does (null, other types, escapes, long strings, numbers at the
    /// edges, and values the general path rejects: `1e400`, a lone
    /// surrogate, nesting past serde_json's depth limit), or one of `extra`.
    fn scalar_like(extra: &[String]) -> impl Strategy<Value = String> + Clone + use<> {
        let fixed =
            ["null", "true", "-1", "2.0", "-0", "1000000000001", "\"stop\"", "\"le\\u006egth\"", "\"\"", "[]", "{}"];
        let malformed = ["1e400", "\"\\ud800\""];
        let mut options: Vec<BoxedStrategy<String>> = fixed
            .iter()
            .chain(&malformed)
            .map(|s| s.to_string())
            .chain(extra.iter().cloned())
            .map(|s| Just(s).boxed())
            .collect();
        options.push((0u64..4).prop_map(|n| n.to_string()).boxed());
        options.push("[a-z_\\\\\"é]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()).boxed());
        options.push("[a-z]{120,140}".prop_map(|s| format!("\"{s}\"")).boxed());
        options.push((126usize..131).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))).boxed());
        proptest::strategy::Union::new(options)
    }

    /// A JSON usage object as Chat Completions sends it, varied: each
    /// count mostly a small or edge integer (up to `MAX_TOKENS + 1`), else
    /// `leaf`; `prompt_tokens` mostly there (its absence means the Responses
    /// API's reading); the cached, DeepSeek cache-hit and reasoning counts
    /// each there or not; sometimes other members, nested details of
    /// another shape, or not an object at all.
    fn usage_like(leaf: impl Strategy<Value = String> + Clone + 'static) -> impl Strategy<Value = String> {
        let count = prop_oneof![
            6 => (0u64..2000).prop_map(|n| n.to_string()),
            2 => (0..=MAX_TOKENS + 1).prop_map(|n| n.to_string()),
            1 => prop::sample::select(vec![MAX_TOKENS, MAX_TOKENS + 1, u64::MAX]).prop_map(|n| n.to_string()),
            1 => leaf.clone(),
        ];
        let counted = |p: f64| prop::option::weighted(p, count.clone());
        let details = |name: &'static str| {
            let other = prop::option::weighted(0.2, (prop::sample::select(vec!["audio_tokens", "x"]), count.clone()));
            (counted(0.7), other).prop_map(move |(n, other)| {
                let mut m: Vec<(&'static str, String)> = n.map(|n| (name, n)).into_iter().collect();
                m.extend(other);
                obj(m)
            })
        };
        let details = |name| prop_oneof![6 => details(name), 1 => leaf.clone()];
        let others = prop::collection::vec(
            (
                prop::sample::select(vec!["total_tokens", "prompt_cache_miss_tokens", "input_tokens", "output_tokens"]),
                count.clone(),
            ),
            0..3,
        );
        let usage = (
            (counted(0.8), counted(0.7), counted(0.3)),
            (
                prop::option::weighted(0.4, details("cached_tokens")),
                prop::option::weighted(0.4, details("reasoning_tokens")),
            ),
            prop::option::weighted(0.3, others),
        )
            .prop_map(|((prompt, completion, hit), (prompt_details, completion_details), others)| {
                let mut m: Vec<(&'static str, String)> = Vec::new();
                m.extend(prompt.map(|v| ("prompt_tokens", v)));
                m.extend(completion.map(|v| ("completion_tokens", v)));
                m.extend(hit.map(|v| ("prompt_cache_hit_tokens", v)));
                m.extend(prompt_details.map(|v| ("prompt_tokens_details", v)));
                m.extend(completion_details.map(|v| ("completion_tokens_details", v)));
                m.extend(others.unwrap_or_default());
                obj(m)
            });
        prop_oneof![8 => usage, 1 => leaf]
    }

    /// A JSON text shaped like a chat chunk, with the shape varied: members
    /// missing, null, of other types, duplicated, unknown; arrays where
    /// objects go; escapes, long ids and numbers at the edges.
    fn chunk_like() -> impl Strategy<Value = String> {
        let scalar = scalar_like(&["[{}]".to_string()]);
        let leaf = scalar.clone();
        let delta_keys = prop::sample::select(vec![
            "role",
            "content",
            "reasoning",
            "reasoning_content",
            "refusal",
            "tool_calls",
            "text",
        ]);
        let delta = prop::collection::vec((delta_keys, leaf.clone()), 0..4).prop_map(obj);
        let delta = prop_oneof![delta.clone(), leaf.clone(), delta.prop_map(|d| format!("[{d}]"))];
        let choice_keys = prop::sample::select(vec!["index", "finish_reason", "logprobs", "text", "delta"]);
        let choice = (prop::collection::vec((choice_keys, leaf.clone()), 0..3), prop::option::of(delta)).prop_map(
            move |(mut m, d)| {
                if let Some(d) = d {
                    m.push(("delta", d));
                }
                obj(m)
            },
        );
        let choice = prop_oneof![choice.clone(), leaf.clone(), choice.prop_map(|c| format!("[{c}]"))];
        let choices = prop::collection::vec(choice, 0..3).prop_map(|c| format!("[{}]", c.join(",")));
        let top_keys = prop::sample::select(vec![
            "id",
            "model",
            "object",
            "created",
            "type",
            "error",
            "responseId",
            "modelVersion",
            "candidates",
            "usage",
            "choices",
        ]);
        // Often a member the typed read skips, with a value of any shape.
        let skipped =
            prop::sample::select(vec!["object", "created", "system_fingerprint", "service_tier", "obfuscation"]);
        let member = prop_oneof![
            1 => (top_keys, leaf.clone()),
            3 => (skipped, leaf.clone()),
            2 => choices.prop_map(|c| ("choices", c)),
            2 => usage_like(leaf).prop_map(|u| ("usage", u)),
        ];
        (prop::collection::vec(member, 0..6), prop::bool::weighted(0.1)).prop_map(move |(m, as_array)| {
            let o = obj(m);
            if as_array { format!("[{}]", o) } else { o }
        })
    }

    proptest! {
        /// What the typed chat-chunk read accepts, it reads as the general
        /// `Value` path does.
        #[test]
        fn chat_chunk_reads_as_the_value_path(events in prop::collection::vec(chunk_like(), 1..4)) {
            for target in ["/v1/chat/completions", "/unknown/path"] {
                let r = req(target, r#"{"stream":true}"#);
                let (mut fast, mut general) = (StreamInterpreter::new(&r), StreamInterpreter::new(&r));
                for (i, data) in events.iter().enumerate() {
                    fast.at(i as u64 + 1);
                    general.at(i as u64 + 1);
                    fast.sse_event(None, data);
                    general.out.events += 1;
                    general.sse_event_as_value(None, data);
                }
                prop_assert_eq!(fast.finish(), general.finish());
            }
        }
    }

    /// A JSON text shaped like a whole chat completion, varied as
    /// `chunk_like` varies a chunk (more choices than are summarised, usage
    /// details nested or not).
    fn completion_like() -> impl Strategy<Value = String> {
        let scalar = scalar_like(&[
            "18446744073709551616".to_string(),
            r#"{"content":"x","role":"assistant"}"#.to_string(),
            format!("\"{INVALID_UTF8}\""),
        ]);
        let leaf = scalar.clone();
        let index = prop_oneof![3 => (0u64..3).prop_map(|n| n.to_string()), 1 => leaf.clone()];
        let reason =
            prop_oneof![3 => Just("\"stop\"".to_string()), 1 => Just("\"length\"".to_string()), 1 => leaf.clone()];
        let choice = (
            prop::option::of(index),
            prop::option::of(reason),
            prop::option::of(leaf.clone()),
            prop::option::weighted(
                0.2,
                (prop::sample::select(vec!["index", "logprobs", "text", "finishReason"]), leaf.clone()),
            ),
        )
            .prop_map(|(index, reason, message, other)| {
                let mut m: Vec<(&'static str, String)> = Vec::new();
                m.extend(index.map(|v| ("index", v)));
                m.extend(reason.map(|v| ("finish_reason", v)));
                m.extend(message.map(|v| ("message", v)));
                m.extend(other);
                obj(m)
            });
        let choice = prop_oneof![8 => choice, 1 => leaf.clone()];
        let choices = prop::collection::vec(choice, 0..9).prop_map(|c| format!("[{}]", c.join(",")));
        let usage = usage_like(leaf.clone());
        let top_keys = prop::sample::select(vec![
            "id",
            "model",
            "object",
            "created",
            "system_fingerprint",
            "error",
            "responseId",
            "modelVersion",
            "status",
        ]);
        // Mostly the known members once each, sometimes others or repeats.
        let text = prop_oneof![3 => "[a-z-]{1,8}".prop_map(|s| format!("\"{s}\"")), 1 => leaf.clone()];
        let known = (
            prop::option::of(text.clone()),
            prop::option::of(text),
            prop::option::of(choices),
            prop::option::of(usage),
        );
        // Often members the typed read skips, with values of any shape.
        let skipped = prop::sample::select(vec!["object", "created", "system_fingerprint", "service_tier"]);
        let skipped = prop::collection::vec((skipped, leaf.clone()), 0..3);
        let others = prop::collection::vec((top_keys, leaf), 0..3);
        (known, skipped, prop::option::weighted(0.3, others), prop::bool::weighted(0.1)).prop_map(
            |((id, model, choices, usage), skipped, others, as_array)| {
                let mut m: Vec<(&'static str, String)> = Vec::new();
                m.extend(id.map(|v| ("id", v)));
                m.extend(model.map(|v| ("model", v)));
                m.extend(choices.map(|v| ("choices", v)));
                m.extend(usage.map(|v| ("usage", v)));
                m.extend(skipped);
                m.extend(others.unwrap_or_default());
                let o = obj(m);
                if as_array { format!("[{o}]") } else { o }
            },
        )
    }

    /// Stands in `completion_like`'s text for a byte that is not UTF-8.
    const INVALID_UTF8: &str = "<not-utf8>";

    proptest! {
        /// What the typed chat-completion read accepts, it reads as the
        /// general `Value` path does.
        #[test]
        fn chat_completion_reads_as_the_value_path(body in completion_like()) {
            let body = body.replace(INVALID_UTF8, "\u{1}").into_bytes();
            let body: Vec<u8> = body.into_iter().map(|b| if b == 1 { 0xff } else { b }).collect();
            for target in ["/v1/chat/completions", "/unknown/path", "/v1/responses"] {
                let r = req(target, "{}");
                prop_assert_eq!(
                    parse_response(&r, Some("application/json"), &body, true),
                    whole_response_as_value(&r, &body)
                );
            }
        }
    }

    #[test]
    fn chat_completion_accepts_the_common_bodies() {
        for body in [
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}"#,
            r#"{"id":"x","model":"deepseek-chat","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_cache_hit_tokens":3,"prompt_cache_miss_tokens":2}}"#,
            r#"{"model":"m","choices":[{"message":{"content":"a"}}]}"#,
            // More choices than the general path summarises: the fifth is not read.
            r#"{"choices":[{"finish_reason":"stop"},{"finish_reason":"stop"},{"finish_reason":"stop"},{"finish_reason":"stop"},{"index":0,"finish_reason":"length"}]}"#,
            // Usage of any shape is read by the general path's code.
            r#"{"usage":{"input_tokens":1}}"#,
            r#"{"usage":{"prompt_tokens":null,"prompt_tokens_details":{"cached_tokens":2}}}"#,
            // A choice's message is skipped unchecked by both paths.
            "{\"choices\":[{\"message\":{\"content\":\"\\ud800\",\"n\":1e400}}]}",
        ] {
            let fast = chat_completion::parse(body.as_bytes()).map(chat_completion_response);
            assert!(fast.is_some(), "{body}");
            let r = req("/v1/chat/completions", "{}");
            assert_eq!(fast, Some(whole_response_as_value(&r, body.as_bytes())), "{body}");
        }
        let deep = format!(r#"{{"object":{}{}}}"#, "[".repeat(128), "]".repeat(128));
        for body in ["[]", r#"{"error":{"type":"x"}}"#, r#"{"id":"a","id":"b"}"#, r#"{"choices":[{"index":-1}]}"#] {
            assert!(chat_completion::parse(body.as_bytes()).is_none(), "{body}");
        }
        // Members no record needs, malformed as the general path rejects them.
        for body in [r#"{"model":"m","created":1e400}"#, r#"{"model":"m","system_fingerprint":"\ud800"}"#, &deep] {
            assert!(chat_completion::parse(body.as_bytes()).is_none(), "{body}");
            assert_eq!(serde_json::from_str::<Value>(body).ok(), None, "{body}");
        }
        assert!(chat_completion::parse(b"{\"object\":\"\xff\"}").is_none());
    }

    #[test]
    fn chat_chunk_accepts_the_common_chunks() {
        for data in [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[{"delta":{}},{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
        ] {
            assert!(chat_chunk::parse(data).is_some(), "{data}");
            let r = req("/v1/chat/completions", r#"{"stream":true}"#);
            let (mut fast, mut general) = (StreamInterpreter::new(&r), StreamInterpreter::new(&r));
            fast.sse_event(None, data);
            general.out.events += 1;
            general.sse_event_as_value(None, data);
            assert_eq!(fast.finish(), general.finish(), "{data}");
        }
        for data in [
            r#"[]"#,
            r#"{"type":"x"}"#,
            r#"{"id":"a","id":"b"}"#,
            r#"{"choices":[[0]]}"#,
            // Members no record needs, malformed as the general path rejects them.
            r#"{"created":1e400}"#,
            r#"{"choices":[{"logprobs":{"content":"\udc00"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"arguments":-1e999}]}}]}"#,
        ] {
            assert!(chat_chunk::parse(data).is_none(), "{data}");
        }
    }
}
