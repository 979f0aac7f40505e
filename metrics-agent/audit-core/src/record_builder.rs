//! `RecordBuilder`: request records for tests and benchmarks (re-exported
//! by `crate::records`).

use super::{llm::Usage, pipeline::RequestRecord, trace_context::TraceContext};

/// Builds a `RequestRecord` for tests and benchmarks. It starts as a plain
/// answered client `chat` request to OpenAI's chat completions endpoint
/// (pid 1, status 200, captured 1 in 1, every optional field empty); each
/// method sets one field, and `build` returns the record, whose fields are
/// public for anything rarer.
#[derive(Debug, Clone)]
pub struct RecordBuilder(RequestRecord);

impl Default for RecordBuilder {
    fn default() -> Self {
        Self(RequestRecord {
            timestamp_unix_ms: 0,
            start_ns: 0,
            pid: 1,
            side: "client",
            provider_slot: None,
            upstream_provider: None,
            proxy_overhead_ms: None,
            cache_hit: None,
            provider: "openai",
            operation: "chat",
            endpoint: "/v1/chat/completions".into(),
            deployment: None,
            stream_timing: Default::default(),
            model_requested: None,
            model_returned: None,
            status: 200,
            error_type: None,
            finish_reasons: Vec::new(),
            streaming: false,
            tokens: Usage::default(),
            ttfb_ms: 0.0,
            duration_ms: 0.0,
            session_id: None,
            user_id: None,
            api_key_hash: None,
            truncated: false,
            cut_short: false,
            cost_usd: None,
            application_id: None,
            rate_limits: Default::default(),
            pairing: Default::default(),
            sample_every: 1,
            trace_context: None,
            server_address: None,
        })
    }
}

impl RecordBuilder {
    /// The plain client request described above.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn timestamp_unix_ms(mut self, ms: u64) -> Self {
        self.0.timestamp_unix_ms = ms;
        self
    }

    pub fn start_ns(mut self, ns: u64) -> Self {
        self.0.start_ns = ns;
        self
    }

    pub fn pid(mut self, pid: u32) -> Self {
        self.0.pid = pid;
        self
    }

    /// `client` or `upstream`.
    pub fn side(mut self, side: &'static str) -> Self {
        self.0.side = side;
        self
    }

    pub fn provider(mut self, provider: &'static str) -> Self {
        self.0.provider = provider;
        self
    }

    pub fn upstream_provider(mut self, name: Option<&str>) -> Self {
        self.0.upstream_provider = name.map(str::to_string);
        self
    }

    pub fn proxy_overhead_ms(mut self, ms: Option<f64>) -> Self {
        self.0.proxy_overhead_ms = ms;
        self
    }

    pub fn cache_hit(mut self, hit: Option<bool>) -> Self {
        self.0.cache_hit = hit;
        self
    }

    /// The request's path (and query, as the proxy received it).
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.0.endpoint = endpoint.into();
        self
    }

    /// The model the request asked for.
    pub fn model(mut self, model: &str) -> Self {
        self.0.model_requested = Some(model.into());
        self
    }

    /// The model the response named.
    pub fn model_returned(mut self, model: &str) -> Self {
        self.0.model_returned = Some(model.into());
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.0.status = status;
        self
    }

    pub fn error_type(mut self, error_type: Option<String>) -> Self {
        self.0.error_type = error_type;
        self
    }

    pub fn finish_reasons(mut self, reasons: &[&str]) -> Self {
        self.0.finish_reasons = reasons.iter().map(|r| r.to_string()).collect();
        self
    }

    pub fn streaming(mut self, streaming: bool) -> Self {
        self.0.streaming = streaming;
        self
    }

    /// Input and output tokens (the other counts stay unknown).
    pub fn tokens(mut self, input: u64, output: u64) -> Self {
        self.0.tokens.input = Some(input);
        self.0.tokens.output = Some(output);
        self
    }

    /// Every token count, unknown ones included.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.0.tokens = usage;
        self
    }

    pub fn ttfb_ms(mut self, ms: f64) -> Self {
        self.0.ttfb_ms = ms;
        self
    }

    pub fn duration_ms(mut self, ms: f64) -> Self {
        self.0.duration_ms = ms;
        self
    }

    pub fn session_id(mut self, id: Option<String>) -> Self {
        self.0.session_id = id;
        self
    }

    pub fn user_id(mut self, id: Option<String>) -> Self {
        self.0.user_id = id;
        self
    }

    pub fn api_key_hash(mut self, hash: &str) -> Self {
        self.0.api_key_hash = Some(hash.into());
        self
    }

    pub fn cost_usd(mut self, cost: Option<rust_decimal::Decimal>) -> Self {
        self.0.cost_usd = cost;
        self
    }

    pub fn application_id(mut self, id: Option<String>) -> Self {
        self.0.application_id = id;
        self
    }

    pub fn stream_timing(mut self, timing: crate::pipeline::StreamTiming) -> Self {
        self.0.stream_timing = timing;
        self
    }

    /// Captured 1 in `every` exchanges (sampling), so counted `every` times.
    pub fn sample_every(mut self, every: u32) -> Self {
        self.0.sample_every = every;
        self
    }

    pub fn trace_context(mut self, context: Option<TraceContext>) -> Self {
        self.0.trace_context = context;
        self
    }

    /// The request's `Host` header.
    pub fn server_address(mut self, host: &str) -> Self {
        self.0.server_address = Some(host.into());
        self
    }

    pub fn build(self) -> RequestRecord {
        self.0
    }
}
