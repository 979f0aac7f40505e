//! A mock LLM provider (OpenAI-like JSON and SSE) that counts, as ground
//! truth, the requests and bytes it saw. Behaviour is chosen per request by
//! query parameters:
//! - `status` (default 200): 429 and 5xx answer with provider error bodies;
//! - `delay_ms`: wait before answering;
//! - `bytes`: approximate JSON body size (padding in the content);
//! - `events`, `interval_ms`: stream that many SSE events, one every interval
//!   (chunked for HTTP/1.1 requests, close-delimited for HTTP/1.0);
//! - `burst=1` with `events`: all chunks in one write (HTTP/1.1 only);
//! - `usage=1` with `events`: a final usage chunk (prompt 21, completion 55);
//! - `pad=N` with `events` (OpenAI chat): N more bytes of content per event;
//! - `batch=N` with `events`: N events per write, `interval_ms` between writes;
//! - `encoding=1|2|3|4`: a gzip, deflate, br or zstd JSON body;
//! - `role_first=1` with `events` (OpenAI chat): event 0 is a role-only delta
//!   (`{"role":"assistant","content":""}`), as OpenAI sends it;
//! - `api=deepseek` (chat completions): DeepSeek's usage shape (its cache
//!   hits); streamed, a role-only delta first and a usage chunk last;
//! - `api=mistral` (chat completions): Mistral's shapes; streamed, a
//!   role-only delta first and usage in the finishing chunk;
//! - `private=1`: the answer's text starts with `PRIVATE_COMPLETION`
//!   (non-streamed bodies of every API; OpenAI chat streams' content chunks);
//! - `dated_model=1` (OpenAI chat): the answer names `DATED_MODEL`, as
//!   OpenAI names the snapshot that served an alias (body and stream chunks).
//!
//! The API is chosen by the path (`Api::of`): OpenAI, Azure OpenAI
//! (`/openai/deployments/...`: OpenAI's bodies), Anthropic (also Vertex AI's
//! `:rawPredict`), Gemini (AI Studio and Vertex AI), Bedrock Runtime
//! (Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream:
//! streams in the binary `application/vnd.amazon.eventstream` framing with
//! correct CRCs), Cohere v2 chat, Ollama (`/api/chat`, `/api/generate`:
//! NDJSON streams).
//!
//! Every response carries a unique id, as providers' do: the request's
//! `x-request-id` header (letters, digits, `-`, `_`; at most 64) when it has
//! one, else `mock-N`; it is the response's `x-request-id` header and the
//! `id` of a non-streamed body. Tests check with it which upstream exchange
//! the agent paired with which client exchange.
//!
//! Non-streamed 200 answers report usage prompt 12, completion 34.
//!
//! 200 answers name a finish reason as each provider does
//! (`Api::finish_reason`; OpenAI chat streams on their last content chunk),
//! noted per answer in `Answer::finish_reasons`.
//!
//! `ProviderStats` also counts the usage tokens the provider put in its
//! responses (normalised as the `Api` docs say), so tests compare the
//! agent's totals with what was actually sent, not with constants; each
//! `Answer` also notes its cache counts and, streamed, how many of its
//! events carried generated text (`Api::stream_event_has_content`).

use std::{
    io::{self, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use crate::http1::{Head, Reader};

/// The text a `private=1` answer starts with: tests check that it is found
/// in no export.
pub const PRIVATE_COMPLETION: &str = "completion-canary-5e1b7d";
/// The model a `dated_model=1` OpenAI chat answer names (the dated
/// snapshot of the `gpt-4o-mini` alias the test clients ask for).
pub const DATED_MODEL: &str = "gpt-4o-mini-2024-07-18";

/// What the provider saw, counted independently of the agent.
#[derive(Debug, Default)]
pub struct ProviderStats {
    pub requests: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub errors: AtomicU64,
    /// Requests being answered right now.
    pub in_progress: AtomicU64,
    /// Input tokens reported in responses (cached and cache-write included).
    pub input_tokens: AtomicU64,
    /// Output tokens reported in responses (reasoning included).
    pub output_tokens: AtomicU64,
    /// Responses that reported usage.
    pub responses_with_usage: AtomicU64,
    /// Every answer: its id, status and the usage it reported.
    pub answers: std::sync::Mutex<Vec<Answer>>,
}

/// One answer the provider sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its id (`x-request-id` header, and `id` of a non-streamed body).
    pub id: String,
    pub status: u16,
    /// Normalised (input, output) usage it reported, if any.
    pub usage: Option<(u64, u64)>,
    /// The finish reasons it sent (`Api::finish_reason`), one per choice.
    pub finish_reasons: Vec<String>,
    /// Cache (read, creation) token counts it reported, each if named.
    pub cache: (Option<u64>, Option<u64>),
    /// Streamed: the events that carried generated text (lifecycle events,
    /// role-only and empty deltas and closing summaries excluded).
    pub content_events: Option<u64>,
}

/// Usage tokens the provider reported, summed over its responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SentUsage {
    pub input: u64,
    pub output: u64,
    /// Responses that carried usage.
    pub responses: u64,
}

pub struct MockProvider {
    pub port: u16,
    pub stats: Arc<ProviderStats>,
    stop: Arc<AtomicBool>,
}

impl MockProvider {
    /// Starts serving on 127.0.0.1:`port` (0 picks a free port).
    pub fn start(port: u16) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let stats = Arc::new(ProviderStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (stats.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        Ok(Self { port, stats, stop })
    }

    /// Waits until no request is being answered (streams of aborted clients
    /// end when the provider notices the proxy closed the connection).
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.stats.in_progress.load(Ordering::SeqCst) > 0 {
            assert!(std::time::Instant::now() < deadline, "the mock provider is still answering after {timeout:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Forgets everything counted so far, once no request is being
    /// answered: a test that runs once per agent mode shares one provider.
    pub fn reset(&self) {
        self.wait_idle(Duration::from_secs(20));
        let s = &self.stats;
        for counter in [
            &s.requests,
            &s.bytes_received,
            &s.bytes_sent,
            &s.errors,
            &s.input_tokens,
            &s.output_tokens,
            &s.responses_with_usage,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
        s.answers.lock().unwrap().clear();
    }

    /// Every answer sent so far, in order.
    pub fn answers(&self) -> Vec<Answer> {
        self.stats.answers.lock().unwrap().clone()
    }

    /// The usage tokens put in the responses sent so far.
    pub fn usage_sent(&self) -> SentUsage {
        SentUsage {
            input: self.stats.input_tokens.load(Ordering::SeqCst),
            output: self.stats.output_tokens.load(Ordering::SeqCst),
            responses: self.stats.responses_with_usage.load(Ordering::SeqCst),
        }
    }

    /// Requests answered with an error status.
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.stats.requests.load(Ordering::SeqCst),
            self.stats.bytes_received.load(Ordering::SeqCst),
            self.stats.bytes_sent.load(Ordering::SeqCst),
        )
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn query(path: &str, key: &str) -> Option<u64> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok()))
}

fn serve(conn: TcpStream, stats: &ProviderStats) -> io::Result<()> {
    let mut writer = conn.try_clone()?;
    let mut reader = Reader::new(conn);
    loop {
        let before = reader.bytes_read;
        let Some(head) = reader.read_head()? else {
            stats.bytes_received.fetch_add(reader.bytes_read - before, Ordering::SeqCst);
            return Ok(());
        };
        let body_len = head.content_length().unwrap_or(0) as usize;
        let _body = reader.read_exact_vec(body_len)?;
        stats.bytes_received.fetch_add(reader.bytes_read - before, Ordering::SeqCst);
        stats.requests.fetch_add(1, Ordering::SeqCst);
        stats.in_progress.fetch_add(1, Ordering::SeqCst);
        let keep_alive =
            !head.is_http10() && !head.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let result = respond(&head, &mut writer, stats, keep_alive);
        stats.in_progress.fetch_sub(1, Ordering::SeqCst);
        // Bytes read after the request (none expected) are counted at EOF.
        match result {
            Ok(true) if keep_alive => continue,
            _ => {
                // Count what the peer may still send (nothing, normally).
                let before = reader.bytes_read;
                let _ = writer.shutdown(std::net::Shutdown::Write);
                let _ = reader.read_to_close();
                stats.bytes_received.fetch_add(reader.bytes_read - before, Ordering::SeqCst);
                return Ok(());
            }
        }
    }
}

/// Usage (normalised input, output) in one response; the latest values
/// sent win, as a client reading the response would see them.
#[derive(Debug, Default)]
struct UsageInResponse {
    input: Option<u64>,
    output: Option<u64>,
    /// The finish reason sent, if any.
    finish_reason: Option<&'static str>,
    /// Cache (read, creation) counts, each the latest named.
    cache: (Option<u64>, Option<u64>),
    /// Streamed: content-bearing events sent.
    content_events: Option<u64>,
}

impl UsageInResponse {
    /// Notes the answer `id` with the usage seen.
    fn answered(&self, stats: &ProviderStats, id: &str) {
        let usage = (self.input.is_some() || self.output.is_some())
            .then(|| (self.input.unwrap_or(0), self.output.unwrap_or(0)));
        let finish_reasons = self.finish_reason.iter().map(|r| r.to_string()).collect();
        stats.answers.lock().unwrap().push(Answer {
            id: id.to_string(),
            status: 200,
            usage,
            finish_reasons,
            cache: self.cache,
            content_events: self.content_events,
        });
    }

    fn saw(&mut self, usage: Option<(u64, u64)>) {
        if let Some((i, o)) = usage {
            (self.input, self.output) = (Some(i), Some(o));
        }
    }

    fn saw_cache(&mut self, (read, creation): (Option<u64>, Option<u64>)) {
        self.cache = (read.or(self.cache.0), creation.or(self.cache.1));
    }

    fn count(self, stats: &ProviderStats) {
        if self.input.is_some() || self.output.is_some() {
            stats.input_tokens.fetch_add(self.input.unwrap_or(0), Ordering::SeqCst);
            stats.output_tokens.fetch_add(self.output.unwrap_or(0), Ordering::SeqCst);
            stats.responses_with_usage.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn send(w: &mut TcpStream, stats: &ProviderStats, data: &[u8]) -> io::Result<()> {
    w.write_all(data)?;
    stats.bytes_sent.fetch_add(data.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// The API shape a path asks for; each reports fixed, known usage.
/// Normalised (as counted in `ProviderStats`), input includes cached and
/// cache-write tokens and output includes reasoning tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Usage: prompt 12, completion 34 (stream with `usage=1`: 21, 55).
    OpenAiChat,
    /// Usage: input 30 (10 cached), output 8 (2 reasoning); model gpt-4.1.
    OpenAiResponses,
    /// Usage: input 10 + cache read 100 + cache write 5 (normalised 115),
    /// output 7 (stream: 1 at the start, 40 at the end); model claude-sonnet-4.
    AnthropicMessages,
    /// Usage: prompt 9 (2 cached), candidates 4; model gemini-2.0-flash.
    Gemini,
    /// Usage: prompt 8 (no output); model text-embedding-3-small.
    Embeddings,
    /// DeepSeek chat: prompt 100 (64 cache hits), completion 10, streamed
    /// or not (the stream's usage chunk); model deepseek-chat.
    DeepSeek,
    /// Mistral chat: prompt 15, completion 25, streamed or not (in the
    /// stream's finishing chunk); model mistral-small-latest.
    MistralChat,
    /// Bedrock Converse: input 11 + cache read 3 (normalised 14), output 7;
    /// stream (event stream): input 25, output 9.
    BedrockConverse,
    /// Bedrock InvokeModel, in the body shape of the model family named by
    /// the path's model id (`InvokeBody`). Anthropic: input 12, output 6
    /// (also in the `x-amzn-bedrock-*-token-count` headers); the stream's
    /// chunks say the same; model claude-3-haiku-20240307. Other families:
    /// `InvokeBody::usage`, in the closing chunk's
    /// `amazon-bedrock-invocationMetrics` and, not streamed, in the headers
    /// with `InvokeBody::header_cache` (the body's own counts, where it has
    /// some, are one more: Bedrock's headers are what is counted).
    BedrockInvoke(InvokeBody),
    /// Cohere v2 chat: tokens input 70, output 3 (billed 5, 3).
    Cohere,
    /// Ollama `/api/chat`: prompt_eval_count 26, eval_count 298; NDJSON
    /// stream: 10, 20; model llama3.2.
    OllamaChat,
    /// Ollama `/api/generate`: as `OllamaChat`.
    OllamaGenerate,
}

impl Api {
    pub fn of(path: &str) -> Self {
        let p = path.split('?').next().unwrap_or(path);
        if p.contains("/model/") && (p.ends_with("/converse") || p.ends_with("/converse-stream")) {
            Self::BedrockConverse
        } else if p.contains("/model/") && (p.ends_with("/invoke") || p.ends_with("/invoke-with-response-stream")) {
            Self::BedrockInvoke(InvokeBody::of(p))
        } else if p.ends_with("/v2/chat") {
            Self::Cohere
        } else if p.ends_with("/api/chat") {
            Self::OllamaChat
        } else if p.ends_with("/api/generate") {
            Self::OllamaGenerate
        } else if path.contains("api=deepseek") {
            Self::DeepSeek
        } else if path.contains("api=mistral") {
            Self::MistralChat
        } else if p.ends_with("/messages") || p.ends_with(":rawPredict") || p.ends_with(":streamRawPredict") {
            Self::AnthropicMessages
        } else if p.ends_with("/responses") {
            Self::OpenAiResponses
        } else if p.contains(":generateContent") || p.contains(":streamGenerateContent") {
            Self::Gemini
        } else if p.ends_with("/embeddings") {
            Self::Embeddings
        } else {
            Self::OpenAiChat
        }
    }

    fn body(self, pad: &str) -> String {
        match self {
            Self::OpenAiChat => format!(
                r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{pad}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}}}"#
            ),
            Self::OpenAiResponses => format!(
                r#"{{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1","output":[{{"type":"message","content":[{{"type":"output_text","text":"{pad}"}}]}}],"usage":{{"input_tokens":30,"input_tokens_details":{{"cached_tokens":10}},"output_tokens":8,"output_tokens_details":{{"reasoning_tokens":2}},"total_tokens":38}}}}"#
            ),
            Self::AnthropicMessages => format!(
                r#"{{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4","content":[{{"type":"text","text":"{pad}"}}],"stop_reason":"end_turn","usage":{{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":7}}}}"#
            ),
            Self::Gemini => format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":"{pad}"}}],"role":"model"}},"finishReason":"STOP"}}],"usageMetadata":{{"promptTokenCount":9,"candidatesTokenCount":4,"cachedContentTokenCount":2,"totalTokenCount":13}},"modelVersion":"gemini-2.0-flash"}}"#
            ),
            Self::Embeddings => r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#.to_string(),
            Self::DeepSeek => format!(
                r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"deepseek-chat","choices":[{{"index":0,"message":{{"role":"assistant","content":"{pad}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":100,"completion_tokens":10,"total_tokens":110,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}}}}"#
            ),
            Self::MistralChat => format!(
                r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"mistral-small-latest","choices":[{{"index":0,"message":{{"role":"assistant","content":"{pad}","tool_calls":null}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":15,"total_tokens":40,"completion_tokens":25}}}}"#
            ),
            Self::BedrockConverse => format!(
                r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"{pad}"}}]}}}},"stopReason":"end_turn","usage":{{"inputTokens":11,"outputTokens":7,"totalTokens":21,"cacheReadInputTokens":3}},"metrics":{{"latencyMs":5}}}}"#
            ),
            Self::BedrockInvoke(InvokeBody::Anthropic) => format!(
                r#"{{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-haiku-20240307","content":[{{"type":"text","text":"{pad}"}}],"stop_reason":"end_turn","usage":{{"input_tokens":12,"output_tokens":6}}}}"#
            ),
            Self::BedrockInvoke(family) => family.body(pad),
            Self::Cohere => format!(
                r#"{{"id":"msg_1","finish_reason":"COMPLETE","message":{{"role":"assistant","content":[{{"type":"text","text":"{pad}"}}]}},"usage":{{"billed_units":{{"input_tokens":5,"output_tokens":3}},"tokens":{{"input_tokens":70,"output_tokens":3}}}}}}"#
            ),
            Self::OllamaChat => format!(
                r#"{{"model":"llama3.2","created_at":"2026-11-30T10:00:00Z","message":{{"role":"assistant","content":"{pad}"}},"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":298}}"#
            ),
            Self::OllamaGenerate => format!(
                r#"{{"model":"llama3.2","created_at":"2026-11-30T10:00:00Z","response":"{pad}","done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":298}}"#
            ),
        }
    }

    /// Normalised (input, output) usage of the non-streamed body.
    fn usage(self) -> (u64, u64) {
        match self {
            Self::OpenAiChat => (12, 34),
            Self::OpenAiResponses => (30, 8),
            Self::AnthropicMessages => (10 + 100 + 5, 7),
            Self::Gemini => (9, 4),
            Self::Embeddings => (8, 0),
            Self::DeepSeek => (100, 10),
            Self::MistralChat => (15, 25),
            Self::BedrockConverse => (11 + 3, 7),
            Self::BedrockInvoke(family) => family.usage(),
            Self::Cohere => (70, 3),
            Self::OllamaChat | Self::OllamaGenerate => (26, 298),
        }
    }

    /// The finish reason a 200 answer of this API sends, as the provider
    /// names it (none for embeddings).
    pub fn finish_reason(self) -> Option<&'static str> {
        match self {
            Self::OpenAiChat | Self::DeepSeek | Self::MistralChat | Self::OllamaChat | Self::OllamaGenerate => {
                Some("stop")
            }
            Self::OpenAiResponses => Some("completed"),
            Self::AnthropicMessages | Self::BedrockConverse => Some("end_turn"),
            Self::BedrockInvoke(family) => Some(family.finish_reason()),
            Self::Gemini => Some("STOP"),
            Self::Cohere => Some("COMPLETE"),
            Self::Embeddings => None,
        }
    }

    /// The finish reason carried by stream event `i` of `events`: OpenAI
    /// chat's last content chunk, every other API's last event.
    fn stream_finish_reason(self, i: u64, events: u64) -> Option<&'static str> {
        let carries = match self {
            // Their last content chunk (DeepSeek's usage chunk has no choices).
            Self::OpenAiChat | Self::DeepSeek => i + 1 == events,
            // Its stream is `[DONE]` only (see `stream_event`).
            Self::Embeddings => false,
            _ => i == events,
        };
        carries.then(|| self.finish_reason()).flatten()
    }

    /// Extra response header lines of a non-streamed 200 answer.
    fn headers(self) -> String {
        match self {
            Self::BedrockInvoke(family) => {
                let ((input, output), (read, write)) = (family.usage(), family.header_cache());
                // The input count excludes the cache buckets, named apart.
                let uncached = input - read.unwrap_or(0) - write.unwrap_or(0);
                let mut h = format!(
                    "x-amzn-bedrock-input-token-count: {uncached}\r\nx-amzn-bedrock-output-token-count: {output}\r\n"
                );
                for (name, count) in [("read", read), ("write", write)] {
                    if let Some(n) = count {
                        h.push_str(&format!("x-amzn-bedrock-cache-{name}-input-token-count: {n}\r\n"));
                    }
                }
                h
            }
            _ => String::new(),
        }
    }

    /// Cache (read, creation) counts of the non-streamed body (or headers).
    fn cache(self) -> (Option<u64>, Option<u64>) {
        match self {
            Self::OpenAiResponses => (Some(10), None),
            Self::AnthropicMessages => (Some(100), Some(5)),
            Self::Gemini => (Some(2), None),
            Self::DeepSeek => (Some(64), None),
            Self::BedrockConverse => (Some(3), None),
            Self::BedrockInvoke(family) => family.header_cache(),
            _ => (None, None),
        }
    }

    /// Cache (read, creation) counts named by stream event `i` of `events`.
    fn stream_cache(self, i: u64, events: u64) -> (Option<u64>, Option<u64>) {
        let last = i == events;
        match self {
            Self::AnthropicMessages if i == 0 => self.cache(),
            Self::OpenAiResponses | Self::Gemini | Self::DeepSeek if last => self.cache(),
            _ => (None, None),
        }
    }

    /// Whether stream event `i` of `events` carries generated text (see
    /// `stream_event`, `eventstream_event`; OpenAI chat's schedule also
    /// depends on the query: `role_first`, `usage`).
    pub fn stream_event_has_content(self, path: &str, i: u64, events: u64) -> bool {
        let (first, last) = (i == 0, i == events);
        match self {
            // "token {i}" until `[DONE]` (or the usage chunk), unless event 0 is role-only.
            Self::OpenAiChat => {
                let role_only = first && query(path, "role_first") == Some(1);
                !last && !role_only
            }
            // Every element has a text part, the closing one ("end") too.
            Self::Gemini => true,
            // Event 0 has empty text; the closing line has text and usage.
            Self::OllamaChat | Self::OllamaGenerate => !first,
            Self::Embeddings => false,
            // An opening event without text, then text, then closing events.
            _ => !first && !last,
        }
    }

    /// How a stream of this API is framed.
    fn stream_content_type(self) -> &'static str {
        match self {
            Self::BedrockConverse | Self::BedrockInvoke(_) => "application/vnd.amazon.eventstream",
            Self::OllamaChat | Self::OllamaGenerate => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }

    /// Normalised usage carried by stream event `i` of `events` (see
    /// `stream_event`; OpenAI chat's usage chunk is decided in `respond`).
    fn stream_usage(self, i: u64, events: u64) -> Option<(u64, u64)> {
        let last = i == events;
        match self {
            Self::AnthropicMessages if i == 0 => Some((115, 1)),
            Self::AnthropicMessages if last => Some((115, 40)),
            Self::OpenAiResponses | Self::Gemini if last => Some(self.usage()),
            Self::BedrockConverse if last => Some((25, 9)),
            Self::BedrockInvoke(_) | Self::Cohere | Self::DeepSeek | Self::MistralChat if last => Some(self.usage()),
            Self::OllamaChat | Self::OllamaGenerate if last => Some((10, 20)),
            _ => None,
        }
    }

    /// SSE event `i` of `events` (the last one carries the final usage).
    fn stream_event(self, i: u64, events: u64) -> String {
        let last = i == events;
        match self {
            Self::AnthropicMessages if i == 0 => "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\n\n".to_string(),
            Self::AnthropicMessages if last => "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":40}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string(),
            Self::AnthropicMessages => format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"delta\":{{\"text\":\"t{i}\"}}}}\n\n"),
            Self::OpenAiResponses if i == 0 => "event: response.created\ndata: {\"type\":\"response.created\"}\n\n".to_string(),
            Self::OpenAiResponses if last => "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":8,\"output_tokens_details\":{\"reasoning_tokens\":2}}}}\n\n".to_string(),
            Self::OpenAiResponses => format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"t{i}\"}}\n\n"),
            Self::Gemini if last => "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"end\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":4,\"cachedContentTokenCount\":2},\"modelVersion\":\"gemini-2.0-flash\"}\n\n".to_string(),
            Self::Gemini => format!("data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"t{i}\"}}]}}}}]}}\n\n"),
            Self::Cohere if i == 0 => "event: message-start\ndata: {\"id\":\"msg_1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n".to_string(),
            Self::Cohere if last => "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":3},\"tokens\":{\"input_tokens\":70,\"output_tokens\":3}}}}\n\n".to_string(),
            Self::Cohere => format!("event: content-delta\ndata: {{\"type\":\"content-delta\",\"index\":0,\"delta\":{{\"message\":{{\"content\":{{\"text\":\"t{i}\"}}}}}}}}\n\n"),
            Self::OllamaChat | Self::OllamaGenerate => {
                let text = if i == 0 { String::new() } else { format!("t{i}") };
                let content = if self == Self::OllamaChat {
                    format!(r#""message":{{"role":"assistant","content":"{text}"}}"#)
                } else {
                    format!(r#""response":"{text}""#)
                };
                let end = if last { r#","done_reason":"stop","prompt_eval_count":10,"eval_count":20"# } else { "" };
                format!("{{\"model\":\"llama3.2\",{content},\"done\":{last}{end}}}\n")
            }
            Self::DeepSeek if last => "data: {\"id\":\"chatcmpl-1\",\"model\":\"deepseek-chat\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":10,\"total_tokens\":110,\"prompt_tokens_details\":{\"cached_tokens\":64},\"prompt_cache_hit_tokens\":64,\"prompt_cache_miss_tokens\":36}}\n\ndata: [DONE]\n\n".to_string(),
            Self::MistralChat if last => "data: {\"id\":\"chatcmpl-1\",\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":15,\"total_tokens\":40,\"completion_tokens\":25}}\n\ndata: [DONE]\n\n".to_string(),
            Self::DeepSeek | Self::MistralChat => {
                let model = if self == Self::DeepSeek { "deepseek-chat" } else { "mistral-small-latest" };
                let delta = if i == 0 { r#"{"role":"assistant","content":""}"#.to_string() } else { format!(r#"{{"content":"t{i}"}}"#) };
                let finish = self.stream_finish_reason(i, events).map_or("null".to_string(), |r| format!("\"{r}\""));
                format!("data: {{\"id\":\"chatcmpl-1\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n")
            }
            _ => "data: [DONE]\n\n".to_string(),
        }
    }

    /// Event-stream message(s) `i` of `events` (Bedrock): the same story as
    /// the SSE events, in AWS's binary framing.
    fn eventstream_event(self, i: u64, events: u64) -> Vec<u8> {
        let last = i == events;
        // The framing is the agent's own encoder (its decoder's unit tests
        // and fuzz target check the two against each other); the CRCs are
        // checked independently in `eventstream_messages_are_well_framed`.
        let event = |kind: &str, payload: &str| {
            metrics_agent::audit::eventstream::encode(
                &[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
                payload.as_bytes(),
            )
        };
        if let Self::BedrockInvoke(family) = self
            && family != InvokeBody::Anthropic
        {
            return family.stream_chunks(i, events);
        }
        if self == Self::BedrockInvoke(InvokeBody::Anthropic) {
            use base64::Engine as _;
            let anthropic = if i == 0 {
                r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-3-haiku-20240307","usage":{"input_tokens":12,"output_tokens":1}}}"#.to_string()
            } else if last {
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":6},"amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":6,"invocationLatency":100,"firstByteLatency":10}}"#.to_string()
            } else {
                format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"t{i}"}}}}"#)
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(anthropic);
            return event("chunk", &format!(r#"{{"bytes":"{b64}","p":"abc"}}"#));
        }
        if i == 0 {
            event("messageStart", r#"{"role":"assistant","p":"abcd"}"#)
        } else if last {
            [
                event("contentBlockStop", r#"{"contentBlockIndex":0}"#),
                event("messageStop", r#"{"stopReason":"end_turn"}"#),
                event(
                    "metadata",
                    r#"{"usage":{"inputTokens":25,"outputTokens":9,"totalTokens":34},"metrics":{"latencyMs":120}}"#,
                ),
            ]
            .concat()
        } else {
            event("contentBlockDelta", &format!(r#"{{"contentBlockIndex":0,"delta":{{"text":"t{i}"}}}}"#))
        }
    }
}

/// The model family of a Bedrock InvokeModel path (its model id), whose own
/// body shape the answer uses (AWS Bedrock user guide, inference
/// parameters per family; the agent's `audit::bedrock` names the fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokeBody {
    Anthropic,
    /// `meta.llama*`: `generation`, `prompt_token_count`, `generation_token_count`, `stop_reason`.
    Llama,
    /// `mistral.*`: `outputs[].text`, `outputs[].stop_reason`.
    Mistral,
    /// `cohere.command-r*`: `text` events, `is_finished`, `finish_reason`.
    Cohere,
    /// `amazon.titan-text*`: `outputText`, `inputTextTokenCount`,
    /// `totalOutputTextTokenCount` / `results[].tokenCount`, `completionReason`.
    Titan,
    /// `amazon.nova*`: Converse-shaped events keyed by type; a Converse body.
    Nova,
}

impl InvokeBody {
    fn of(path: &str) -> Self {
        let model = path.split("/model/").nth(1).unwrap_or("");
        let family = [
            ("meta.", Self::Llama),
            ("mistral.", Self::Mistral),
            ("cohere.", Self::Cohere),
            ("amazon.titan", Self::Titan),
            ("amazon.nova", Self::Nova),
        ];
        // Cross-region profiles prefix the id (`us.meta.llama...`).
        family.into_iter().find(|(prefix, _)| model.contains(prefix)).map_or(Self::Anthropic, |(_, f)| f)
    }

    /// Cache (read, write) counts in the headers of a non-streamed answer
    /// (included in `usage`'s input; its stream's metrics name none).
    fn header_cache(self) -> (Option<u64>, Option<u64>) {
        match self {
            Self::Mistral => (Some(5), None),
            Self::Nova => (Some(3), Some(1)),
            _ => (None, None),
        }
    }

    /// Normalised (input, output) usage, streamed or not (Bedrock's count:
    /// its headers or invocation metrics).
    fn usage(self) -> (u64, u64) {
        match self {
            Self::Anthropic => (12, 6),
            Self::Llama => (17, 9),
            Self::Mistral => (21, 8),
            Self::Cohere => (9, 7),
            Self::Titan => (5, 6),
            Self::Nova => (6, 5),
        }
    }

    fn finish_reason(self) -> &'static str {
        match self {
            Self::Anthropic | Self::Nova => "end_turn",
            Self::Llama | Self::Mistral => "stop",
            Self::Cohere => "COMPLETE",
            Self::Titan => "FINISHED",
        }
    }

    /// The non-streamed body (Mistral's and Cohere's name no usage: the
    /// headers carry it). Where it names counts, they are one more than
    /// Bedrock's, so a test tells which ones were read.
    fn body(self, pad: &str) -> String {
        let ((input, output), reason) = (self.usage(), self.finish_reason());
        let (input, output) = (input + 1, output + 1);
        match self {
            Self::Anthropic => unreachable!("Api::body writes the Anthropic body"),
            Self::Llama => format!(
                r#"{{"generation":"{pad}","prompt_token_count":{input},"generation_token_count":{output},"stop_reason":"{reason}"}}"#
            ),
            Self::Mistral => format!(r#"{{"outputs":[{{"text":"{pad}","stop_reason":"{reason}"}}]}}"#),
            Self::Cohere => format!(
                r#"{{"response_id":"r1","text":"{pad}","generation_id":"g1","chat_history":[],"finish_reason":"{reason}"}}"#
            ),
            Self::Titan => format!(
                r#"{{"inputTextTokenCount":{input},"results":[{{"tokenCount":{output},"outputText":"{pad}","completionReason":"{reason}"}}]}}"#
            ),
            Self::Nova => format!(
                r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"{pad}"}}]}}}},"stopReason":"{reason}","usage":{{"inputTokens":{input},"outputTokens":{output},"totalTokens":{}}}}}"#,
                input + output
            ),
        }
    }

    /// Stream chunk(s) `i` of `events`: 0 opens (no text), 1..events carry
    /// text `t{i}`, the last closes with the finish reason and Bedrock's
    /// invocation metrics (Nova closes with three chunks, as ConverseStream).
    fn stream_chunks(self, i: u64, events: u64) -> Vec<u8> {
        let ((input, output), reason) = (self.usage(), self.finish_reason());
        let metrics = format!(
            r#""amazon-bedrock-invocationMetrics":{{"inputTokenCount":{input},"outputTokenCount":{output},"invocationLatency":100,"firstByteLatency":10}}"#
        );
        let chunk = |event: String| metrics_agent::audit::bedrock::encode_chunk(event.as_bytes());
        let last = i == events;
        match self {
            Self::Anthropic => unreachable!("Api::eventstream_event writes Anthropic chunks"),
            Self::Llama if i == 0 => chunk(format!(
                r#"{{"generation":"","prompt_token_count":{input},"generation_token_count":1,"stop_reason":null}}"#
            )),
            Self::Llama if last => chunk(format!(
                r#"{{"generation":"","prompt_token_count":null,"generation_token_count":{output},"stop_reason":"{reason}",{metrics}}}"#
            )),
            Self::Llama => chunk(format!(
                r#"{{"generation":"t{i}","prompt_token_count":null,"generation_token_count":{},"stop_reason":null}}"#,
                i + 1
            )),
            Self::Mistral if i == 0 => chunk(r#"{"outputs":[{"text":"","stop_reason":null}]}"#.to_string()),
            Self::Mistral if last => {
                chunk(format!(r#"{{"outputs":[{{"text":"","stop_reason":"{reason}"}}],{metrics}}}"#))
            }
            Self::Mistral => chunk(format!(r#"{{"outputs":[{{"text":"t{i}","stop_reason":null}}]}}"#)),
            Self::Cohere if i == 0 => {
                chunk(r#"{"is_finished":false,"event_type":"stream-start","generation_id":"g1"}"#.to_string())
            }
            Self::Cohere if last => chunk(format!(
                r#"{{"is_finished":true,"event_type":"stream-end","finish_reason":"{reason}","response":{{"text":"all"}},{metrics}}}"#
            )),
            Self::Cohere => chunk(format!(r#"{{"is_finished":false,"event_type":"text-generation","text":"t{i}"}}"#)),
            Self::Titan if i == 0 => chunk(format!(
                r#"{{"outputText":"","index":0,"totalOutputTextTokenCount":0,"completionReason":null,"inputTextTokenCount":{input}}}"#
            )),
            Self::Titan if last => chunk(format!(
                r#"{{"outputText":"","index":0,"totalOutputTextTokenCount":{output},"completionReason":"{reason}","inputTextTokenCount":null,{metrics}}}"#
            )),
            Self::Titan => chunk(format!(
                r#"{{"outputText":"t{i}","index":0,"totalOutputTextTokenCount":{i},"completionReason":null,"inputTextTokenCount":null}}"#
            )),
            Self::Nova if i == 0 => chunk(r#"{"messageStart":{"role":"assistant"}}"#.to_string()),
            Self::Nova if last => [
                chunk(r#"{"contentBlockStop":{"contentBlockIndex":0}}"#.to_string()),
                chunk(format!(r#"{{"messageStop":{{"stopReason":"{reason}"}}}}"#)),
                chunk(format!(
                    r#"{{"metadata":{{"usage":{{"inputTokens":{input},"outputTokens":{output}}},"metrics":{{}}}},{metrics}}}"#
                )),
            ]
            .concat(),
            Self::Nova => {
                chunk(format!(r#"{{"contentBlockDelta":{{"delta":{{"text":"t{i}"}},"contentBlockIndex":0}}}}"#))
            }
        }
    }
}

/// Compresses a body as the `encoding` query parameter asks (1 gzip,
/// 2 deflate, 3 br, 4 zstd); returns it with its content-encoding header line.
fn encode(body: Vec<u8>, path: &str) -> (Vec<u8>, &'static str) {
    use std::io::Write as _;
    match query(path, "encoding") {
        Some(1) => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&body).unwrap();
            (e.finish().unwrap(), "content-encoding: gzip\r\n")
        }
        Some(2) => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&body).unwrap();
            (e.finish().unwrap(), "content-encoding: deflate\r\n")
        }
        Some(3) => {
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &body[..], &mut out, &brotli::enc::BrotliEncoderParams::default()).unwrap();
            (out, "content-encoding: br\r\n")
        }
        Some(4) => (
            ruzstd::encoding::compress_to_vec(&body[..], ruzstd::encoding::CompressionLevel::Fastest),
            "content-encoding: zstd\r\n",
        ),
        _ => (body, ""),
    }
}

/// `PRIVATE_COMPLETION` when the request asks for it (`private=1`), else nothing.
fn private_text(path: &str) -> &'static str {
    if query(path, "private") == Some(1) { PRIVATE_COMPLETION } else { "" }
}

/// True when the peer has closed its end (a peek reads EOF).
fn peer_closed(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: recv into a 1-byte buffer.
    let n = unsafe { libc::recv(s.as_raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0 || (n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN))
}

/// Writes the response; `Ok(true)` when the connection may be reused.
fn respond(head: &Head, w: &mut TcpStream, stats: &ProviderStats, keep_alive: bool) -> io::Result<bool> {
    let path = head.first_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let status = query(&path, "status").unwrap_or(200) as u16;
    let delay = query(&path, "delay_ms").unwrap_or(0);
    let size = query(&path, "bytes").unwrap_or(300) as usize;
    let events = query(&path, "events").unwrap_or(0);
    let interval = query(&path, "interval_ms").unwrap_or(100);
    if delay > 0 {
        thread::sleep(Duration::from_millis(delay));
    }
    // The request's id, else one of ours (unique, as a provider's are).
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let rid = head
        .header("x-request-id")
        .filter(|id| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .map_or_else(|| format!("mock-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)), str::to_string);
    // The connection header, then the echoed id.
    let conn_header = format!("{}\r\nx-request-id: {rid}", if keep_alive { "keep-alive" } else { "close" });
    if status != 200 {
        stats.errors.fetch_add(1, Ordering::SeqCst);
        let api = Api::of(&path);
        let bedrock = matches!(api, Api::BedrockConverse | Api::BedrockInvoke(_));
        let vertex = path.contains("/publishers/google/");
        let body = match status {
            429 if bedrock => r#"{"message":"Too many requests, please wait before trying again."}"#.to_string(),
            429 if vertex => {
                r#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#.to_string()
            }
            429 => r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#
                .to_string(),
            529 => r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.to_string(),
            _ => format!(r#"{{"error":{{"message":"upstream failure {status}","type":"server_error"}}}}"#),
        };
        let extra = match status {
            429 if bedrock => {
                "x-amzn-errortype: ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/\r\n"
            }
            429 => "retry-after: 1\r\nx-ratelimit-remaining-requests: 0\r\n",
            _ => "",
        };
        let resp = format!(
            "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: {conn_header}\r\n\r\n{body}",
            body.len()
        );
        send(w, stats, resp.as_bytes())?;
        stats.answers.lock().unwrap().push(Answer {
            id: rid,
            status,
            usage: None,
            finish_reasons: Vec::new(),
            cache: (None, None),
            content_events: None,
        });
        return Ok(true);
    }
    let api = Api::of(&path);
    if events == 0 {
        let pad = format!("{}{}", private_text(&path), "x".repeat(size.saturating_sub(200)));
        let mut body = api.body(&pad);
        for fixed in ["\"chatcmpl-1\"", "\"resp_1\"", "\"msg_1\""] {
            body = body.replacen(fixed, &format!("\"{rid}\""), 1);
        }
        if api == Api::OpenAiChat && query(&path, "dated_model") == Some(1) {
            body = body.replacen("\"model\":\"gpt-4o-mini\"", &format!("\"model\":\"{DATED_MODEL}\""), 1);
        }
        let (body, coding) = encode(body.into_bytes(), &path);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{}{coding}content-length: {}\r\nconnection: {conn_header}\r\n\r\n",
            api.headers(),
            body.len()
        );
        send(w, stats, &[head.into_bytes(), body].concat())?;
        let mut usage = UsageInResponse::default();
        usage.saw(Some(api.usage()));
        usage.saw_cache(api.cache());
        usage.finish_reason = api.finish_reason();
        usage.answered(stats, &rid);
        usage.count(stats);
        return Ok(true);
    }
    // Server-sent events (nginx must not buffer them), or Gemini's JSON
    // array stream when `alt=sse` is absent.
    let chunked = !head.is_http10();
    let framing = if chunked { "transfer-encoding: chunked\r\n" } else { "" };
    let json_array = api == Api::Gemini && !path.contains("alt=sse");
    let content_type = if json_array { "application/json" } else { api.stream_content_type() };
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\n{framing}connection: {conn_header}\r\n\r\n"
    );
    send(w, stats, resp.as_bytes())?;
    if query(&path, "burst") == Some(1) && chunked {
        // Every event at once, in one write: the proxy reads many small
        // chunks per call.
        let mut all = String::new();
        for i in 0..events {
            let data = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n");
            all.push_str(&format!("{:x}\r\n{data}\r\n", data.len()));
        }
        all.push_str("0\r\n\r\n");
        send(w, stats, all.as_bytes())?;
        return Ok(true);
    }
    let mut usage = UsageInResponse::default();
    let result = stream(w, stats, &path, api, events, interval, chunked, json_array, &mut usage);
    usage.answered(stats, &rid);
    usage.count(stats);
    result
}

/// Writes the stream's events, noting the usage each one carried.
#[allow(clippy::too_many_arguments)]
fn stream(
    w: &mut TcpStream,
    stats: &ProviderStats,
    path: &str,
    api: Api,
    events: u64,
    interval: u64,
    chunked: bool,
    json_array: bool,
    usage: &mut UsageInResponse,
) -> io::Result<bool> {
    let batch = query(path, "batch").unwrap_or(1).max(1);
    let mut out = Vec::new();
    usage.content_events = Some(0);
    for i in 0..=events {
        if i > 0 && i % batch == 0 {
            send(w, stats, &std::mem::take(&mut out))?;
            thread::sleep(Duration::from_millis(interval));
            if peer_closed(w) {
                return Ok(false);
            }
        }
        let openai_usage = api == Api::OpenAiChat && i == events && query(path, "usage") == Some(1);
        usage.saw_cache(api.stream_cache(i, events));
        if api.stream_event_has_content(path, i, events) {
            *usage.content_events.get_or_insert(0) += 1;
        }
        let binary = matches!(api, Api::BedrockConverse | Api::BedrockInvoke(_));
        if binary {
            let message = api.eventstream_event(i, events);
            if chunked {
                out.extend_from_slice(format!("{:x}\r\n", message.len()).as_bytes());
                out.extend_from_slice(&message);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&message);
            }
            usage.saw(api.stream_usage(i, events));
            usage.finish_reason = api.stream_finish_reason(i, events).or(usage.finish_reason);
            continue;
        }
        let data = if json_array {
            let event = api.stream_event(i, events);
            let element = event.trim_start_matches("data: ").trim_end();
            let (open, close) = (if i == 0 { "[" } else { ",\r\n" }, if i == events { "]" } else { "" });
            format!("{open}{element}{close}")
        } else if api != Api::OpenAiChat {
            api.stream_event(i, events)
        } else if openai_usage {
            // OpenAI's include_usage: a usage chunk with no choices, then [DONE].
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":21,\"completion_tokens\":55}}\n\ndata: [DONE]\n\n"
                .to_string()
        } else if i == events {
            "data: [DONE]\n\n".to_string()
        } else if i == 0 && query(path, "role_first") == Some(1) {
            let finish =
                api.stream_finish_reason(i, events).map_or(String::new(), |r| format!(",\"finish_reason\":\"{r}\""));
            format!("data: {{\"choices\":[{{\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}}{finish}}}]}}\n\n")
        } else {
            let pad = "x".repeat(query(path, "pad").unwrap_or(0).min(1 << 20) as usize);
            let finish =
                api.stream_finish_reason(i, events).map_or(String::new(), |r| format!(",\"finish_reason\":\"{r}\""));
            let private = private_text(path);
            format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"token {i}{private}{pad}\"}}{finish}}}]}}\n\n")
        };
        let data = if api == Api::OpenAiChat && query(path, "dated_model") == Some(1) {
            data.replace("data: {\"choices\"", &format!("data: {{\"model\":\"{DATED_MODEL}\",\"choices\""))
        } else {
            data
        };
        let bytes = if chunked { format!("{:x}\r\n{data}\r\n", data.len()) } else { data };
        out.extend_from_slice(bytes.as_bytes());
        usage.saw(if openai_usage { Some((21, 55)) } else { api.stream_usage(i, events) });
        usage.finish_reason = api.stream_finish_reason(i, events).or(usage.finish_reason);
    }
    send(w, stats, &out)?;
    if chunked {
        send(w, stats, b"0\r\n\r\n")?;
    }
    Ok(chunked)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const ALL: [Api; 5] = [Api::OpenAiChat, Api::OpenAiResponses, Api::AnthropicMessages, Api::Gemini, Api::Embeddings];

    /// (input, output) read from a usage object of any shape, normalised.
    fn normalised(v: &Value) -> Option<(u64, u64)> {
        let n = |x: &Value| x.as_u64().unwrap_or(0);
        if let Some(u) = v.get("usageMetadata") {
            return Some((n(&u["promptTokenCount"]), n(&u["candidatesTokenCount"])));
        }
        let u = v.get("usage").or_else(|| v.get("response").and_then(|r| r.get("usage")))?;
        if u.get("prompt_tokens").is_some() {
            return Some((n(&u["prompt_tokens"]), n(&u["completion_tokens"])));
        }
        let anthropic_extra = n(&u["cache_read_input_tokens"]) + n(&u["cache_creation_input_tokens"]);
        Some((n(&u["input_tokens"]) + anthropic_extra, n(&u["output_tokens"])))
    }

    /// The newer APIs' bodies carry the usage counted for them, read by hand
    /// in each provider's own shape.
    #[test]
    fn counted_usage_matches_the_bodies_of_the_other_providers() {
        let n = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        let body = |api: Api| serde_json::from_str::<Value>(&api.body("pad")).unwrap();
        let b = body(Api::BedrockConverse);
        assert_eq!(
            (n(&b, "/usage/inputTokens") + n(&b, "/usage/cacheReadInputTokens"), n(&b, "/usage/outputTokens")),
            Api::BedrockConverse.usage()
        );
        let b = body(Api::Cohere);
        assert_eq!((n(&b, "/usage/tokens/input_tokens"), n(&b, "/usage/tokens/output_tokens")), Api::Cohere.usage());
        for api in [Api::OllamaChat, Api::OllamaGenerate] {
            let b = body(api);
            assert_eq!((n(&b, "/prompt_eval_count"), n(&b, "/eval_count")), api.usage());
        }
        for api in [Api::DeepSeek, Api::MistralChat] {
            let b = body(api);
            assert_eq!((n(&b, "/usage/prompt_tokens"), n(&b, "/usage/completion_tokens")), api.usage(), "{api:?}");
        }
        assert_eq!(body(Api::DeepSeek)["usage"]["prompt_cache_hit_tokens"].as_u64(), Api::DeepSeek.cache().0);
    }

    /// Every InvokeModel family's stream says, in its closing invocation
    /// metrics, the usage counted for it, and its body names the finish
    /// reason counted.
    #[test]
    fn bedrock_invoke_families_send_what_is_counted() {
        use base64::Engine as _;
        for family in [InvokeBody::Llama, InvokeBody::Mistral, InvokeBody::Cohere, InvokeBody::Titan, InvokeBody::Nova]
        {
            let api = Api::BedrockInvoke(family);
            let mut events = Vec::new();
            for i in 0..=4 {
                let mut rest = &api.eventstream_event(i, 4)[..];
                while !rest.is_empty() {
                    let total = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    let headers = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
                    let payload: Value = serde_json::from_slice(&rest[12 + headers..total - 4]).unwrap();
                    let b64 = payload["bytes"].as_str().unwrap();
                    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
                    events.push(serde_json::from_slice::<Value>(&bytes).unwrap());
                    rest = &rest[total..];
                }
            }
            let m = &events.last().unwrap()["amazon-bedrock-invocationMetrics"];
            let n = |k: &str| m[k].as_u64().unwrap();
            assert_eq!((n("inputTokenCount"), n("outputTokenCount")), api.usage(), "{family:?}");
            assert_eq!(api.stream_usage(4, 4), Some(api.usage()), "{family:?}");
            let reason = api.finish_reason().unwrap();
            assert!(api.body("pad").contains(&format!("\"{reason}\"")), "{family:?}");
            assert_eq!(InvokeBody::of(&format!("/model/{family:?}")), InvokeBody::Anthropic, "no false match");
        }
        assert_eq!(Api::of("/model/us.meta.llama3-8b-instruct-v1:0/invoke"), Api::BedrockInvoke(InvokeBody::Llama));
    }

    /// Non-streamed InvokeModel answers: the headers say the usage and
    /// cache counts counted (input without the cache buckets, as AWS names
    /// them); a body's own counts, where it has some, are not those.
    #[test]
    fn bedrock_invoke_headers_say_what_is_counted_and_bodies_differ() {
        let n = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_u64);
        for family in [InvokeBody::Llama, InvokeBody::Mistral, InvokeBody::Cohere, InvokeBody::Titan, InvokeBody::Nova]
        {
            let api = Api::BedrockInvoke(family);
            let headers = api.headers();
            let header = |name: &str| {
                headers
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("x-amzn-bedrock-{name}-token-count: ")))
                    .map(|v| v.trim().parse::<u64>().unwrap())
            };
            let (read, write) = (header("cache-read-input"), header("cache-write-input"));
            let input = header("input").unwrap() + read.unwrap_or(0) + write.unwrap_or(0);
            assert_eq!((input, header("output").unwrap()), api.usage(), "{family:?}: {headers}");
            assert_eq!((read, write), api.cache(), "{family:?}");
            let b: Value = serde_json::from_str(&api.body("pad")).unwrap();
            let own_input =
                n(&b, "/prompt_token_count").or(n(&b, "/inputTextTokenCount")).or(n(&b, "/usage/inputTokens"));
            let own_output =
                n(&b, "/generation_token_count").or(n(&b, "/results/0/tokenCount")).or(n(&b, "/usage/outputTokens"));
            if let (Some(i), Some(o)) = (own_input, own_output) {
                assert_ne!(i, api.usage().0, "{family:?}");
                assert_ne!(o, api.usage().1, "{family:?}");
            }
        }
        assert_ne!(InvokeBody::Nova.header_cache(), (None, None), "one family with cache headers");
    }

    /// The content events counted per stream are the events whose text is
    /// non-empty, read back from what each event says; Mistral and DeepSeek
    /// streams say the usage and cache counts counted.
    #[test]
    fn counted_content_events_are_the_events_with_text() {
        let text_in = |v: &Value| -> bool {
            let strings = [
                "/choices/0/delta/content",
                "/delta/text",
                "/delta",
                "/candidates/0/content/parts/0/text",
                "/delta/message/content/text",
                "/message/content",
                "/response",
            ];
            strings.iter().any(|p| v.pointer(p).and_then(Value::as_str).is_some_and(|s| !s.is_empty()))
        };
        let apis = [
            (Api::OpenAiChat, "/v1/chat/completions?role_first=1"),
            (Api::OpenAiChat, "/v1/chat/completions"),
            (Api::OpenAiResponses, "/v1/responses"),
            (Api::AnthropicMessages, "/v1/messages"),
            (Api::Gemini, "/m:streamGenerateContent"),
            (Api::DeepSeek, "/chat/completions?api=deepseek"),
            (Api::MistralChat, "/v1/chat/completions?api=mistral"),
            (Api::Cohere, "/v2/chat"),
            (Api::OllamaChat, "/api/chat"),
            (Api::OllamaGenerate, "/api/generate"),
        ];
        for (api, path) in apis {
            assert_eq!(Api::of(path), api, "{path}");
            let events = 4;
            let mut with_text = 0;
            let mut usage = UsageInResponse::default();
            for i in 0..=events {
                let text = if api == Api::OpenAiChat && i == events {
                    String::new() // `[DONE]` (or the usage chunk), decided in `respond`
                } else if api == Api::OpenAiChat && i == 0 && path.contains("role_first") {
                    r#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#.to_string()
                } else if api == Api::OpenAiChat {
                    format!(r#"data: {{"choices":[{{"delta":{{"content":"token {i}"}}}}]}}"#)
                } else {
                    api.stream_event(i, events)
                };
                let lines = text.lines().filter_map(|l| l.strip_prefix("data: ").or(l.starts_with('{').then_some(l)));
                let values: Vec<Value> = lines.filter_map(|d| serde_json::from_str(d).ok()).collect();
                with_text += u64::from(values.iter().any(text_in));
                assert_eq!(
                    values.iter().any(text_in),
                    api.stream_event_has_content(path, i, events),
                    "{api:?} event {i}: {text}"
                );
                usage.saw(api.stream_usage(i, events));
                usage.saw_cache(api.stream_cache(i, events));
                for v in &values {
                    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                        if api == Api::DeepSeek {
                            assert_eq!(u["prompt_cache_hit_tokens"].as_u64(), api.cache().0);
                        }
                        if let Some(p) = u["prompt_tokens"].as_u64() {
                            assert_eq!((p, u["completion_tokens"].as_u64().unwrap()), api.usage(), "{api:?}");
                        }
                    }
                }
            }
            assert!(with_text > 0 && with_text <= events + 1, "{api:?}");
            if matches!(api, Api::DeepSeek | Api::MistralChat) {
                assert_eq!((usage.input, usage.output), (Some(api.usage().0), Some(api.usage().1)), "{api:?}");
                assert_eq!(usage.cache, api.cache(), "{api:?}");
            }
        }
    }

    /// Event-stream messages carry correct CRCs and lengths.
    #[test]
    fn eventstream_messages_are_well_framed() {
        let m = Api::BedrockConverse.eventstream_event(3, 3);
        let mut rest = &m[..];
        let mut count = 0;
        while !rest.is_empty() {
            let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let total = be(&rest[0..4]) as usize;
            assert_eq!(crc32fast::hash(&rest[0..8]), be(&rest[8..12]), "prelude CRC");
            assert_eq!(crc32fast::hash(&rest[..total - 4]), be(&rest[total - 4..total]), "message CRC");
            rest = &rest[total..];
            count += 1;
        }
        assert_eq!(count, 3, "contentBlockStop, messageStop, metadata");
    }

    /// The usage numbers counted match the bodies and events actually sent.
    #[test]
    fn counted_usage_matches_the_bodies() {
        for api in ALL {
            let body: Value = serde_json::from_str(&api.body("pad")).unwrap();
            assert_eq!(normalised(&body), Some(api.usage()), "{api:?}");
            for events in [1, 4] {
                for i in 0..=events {
                    let text = api.stream_event(i, events);
                    let mut in_event = None;
                    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                        if let Ok(v) = serde_json::from_str::<Value>(data) {
                            let v = v.get("message").cloned().unwrap_or(v);
                            in_event = normalised(&v).or(in_event);
                        }
                    }
                    // Anthropic's message_delta carries only the output; the input stays.
                    let in_event = match (api, in_event) {
                        (Api::AnthropicMessages, Some((0, o))) => Some((115, o)),
                        (_, u) => u,
                    };
                    assert_eq!(in_event, api.stream_usage(i, events), "{api:?} event {i} of {events}: {text}");
                }
            }
        }
    }
}
