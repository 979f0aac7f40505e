//! Turns captured chunks into one record per LLM exchange: per connection,
//! the request and response byte streams are reassembled by offset, parsed
//! into HTTP messages, paired in order, and interpreted (`llm`). Memory is
//! bounded: a cap on tracked connections, on buffered bytes per message and
//! on requests awaiting their response.

use std::collections::{HashMap, VecDeque};

use metrics_common::{
    capture::{ChunkHeader, DIR_READ, DIR_WRITE, KIND_CLOSE, KIND_DATA},
    conn::SIDE_CLIENT,
};
use serde::Serialize;

use super::{
    cut_body, decode,
    h2::{self, H2Conn, H2Stats},
    identity::{self, IdentityConfig, Ids},
    llm::{self, LlmRequest, Usage},
    message::{Kind, Message, MessageParser, StartLine},
    pairing::Pairing,
    provider::{self, Provider, WireFormat},
    stream::StreamBody,
    trace_context::TraceContext,
};

/// Connections tracked at most; the least recently seen is dropped beyond.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Bytes of a request line's start the kernel holds across calls, and
/// sends again with the request they begin (`metrics-ebpf` `capture::prepare`).
const RESENT_AT_MOST: u64 = 7;
/// Requests awaiting a response per connection at most.
const MAX_PENDING: usize = 32;
/// Default bound on the heap all connections' parsers hold together.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;
/// Heap charged per request awaiting its response (request, ids, endpoint).
const PENDING_COST: usize = 512;

/// One LLM exchange as the proxy saw it on one connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// Wall-clock time of the first request byte, Unix milliseconds.
    pub timestamp_unix_ms: u64,
    /// Kernel monotonic time of the first request byte (ns).
    pub start_ns: u64,
    /// The proxy process.
    pub pid: u32,
    /// `client` (the proxy served it) or `upstream` (the proxy sent it).
    pub side: &'static str,
    /// Configured provider slot of an upstream connection.
    #[serde(skip)]
    pub provider_slot: Option<u8>,
    /// The configured provider (`--provider NAME=...`) the request went to:
    /// an upstream record's own, a client record's correlated upstream's.
    pub upstream_provider: Option<String>,
    /// Client side: time the proxy added beyond its upstream call, in ms.
    pub proxy_overhead_ms: Option<f64>,
    /// Client side: answered without an upstream call (or a cache header said
    /// so); null when that cannot be known (sampled capture).
    pub cache_hit: Option<bool>,
    /// Provider recognised from the request (`gen_ai.provider.name`).
    pub provider: &'static str,
    pub operation: &'static str,
    pub endpoint: String,
    /// Azure OpenAI's deployment name (from the path); null elsewhere.
    pub deployment: Option<String>,
    pub model_requested: Option<String>,
    pub model_returned: Option<String>,
    pub status: u16,
    pub error_type: Option<String>,
    /// Why generation stopped, one reason per choice as the provider named
    /// it (`stop`, `end_turn`, `STOP`, ...; at most 4, each at most 32
    /// characters); empty when the response named none.
    pub finish_reasons: Vec<String>,
    pub streaming: bool,
    /// Token counts; `None` (JSON null) when the provider did not say.
    pub tokens: Usage,
    /// First request byte to first response byte, and to the last, in ms.
    pub ttfb_ms: f64,
    pub duration_ms: f64,
    /// Streamed responses: time to first token, time per output token and
    /// the number of stream events (`StreamTiming`).
    #[serde(flatten)]
    pub stream_timing: StreamTiming,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    /// Salted hash of the API key, only when `identity.api_key_salt` is set.
    pub api_key_hash: Option<String>,
    /// The request's or the response's body exceeded the capture cap (or
    /// was cut off): usage may be missing.
    pub truncated: bool,
    /// The response was cut off (its connection closed, or its HTTP/2
    /// stream reset, before its end): not a record of the wire.
    #[serde(skip)]
    pub cut_short: bool,
    /// Cost in USD as an exact decimal string; null when the model is not
    /// in the price table (unpriced) or usage is unknown.
    pub cost_usd: Option<rust_decimal::Decimal>,
    /// The application: a configured request header's value, else the
    /// target's `--application-id`.
    pub application_id: Option<String>,
    /// Rate-limit headroom the provider reported, by header name
    /// (`x-ratelimit-remaining-requests`, `anthropic-ratelimit-tokens-remaining`,
    /// `retry-after`, ...).
    pub rate_limits: std::collections::BTreeMap<String, String>,
    /// What ties a client record to its upstream record (`correlate`).
    pub pairing: Pairing,
    /// The exchange was captured as 1 in this many (the adaptive sampling
    /// interval when its request started): aggregates scale it by this.
    pub sample_every: u32,
    /// The request's W3C `traceparent` (trace id, parent span id, flags),
    /// so its span joins the caller's trace; nothing else of the header.
    #[serde(skip)]
    pub trace_context: Option<TraceContext>,
    /// The request's `Host` header (`server.address` of its span), bounded.
    #[serde(skip)]
    pub server_address: Option<String>,
}

/// How a streamed response's content arrived. All null for a response
/// that was not streamed, or whose stream was not parsed as it arrived
/// (compressed): times are taken from the capture of each event's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StreamTiming {
    /// First request byte to the first content-bearing event (role-only,
    /// empty and lifecycle events do not count), in ms.
    pub time_to_first_token_ms: Option<f64>,
    /// (last content event - first content event) / (output tokens - 1),
    /// in ms; null when usage is unknown or under 2 output tokens.
    pub time_per_output_token_ms: Option<f64>,
    /// Mean time between content-bearing events after the first: (last -
    /// first content event) / (content events - 1), in ms; null under 2.
    pub time_per_output_chunk_ms: Option<f64>,
    /// Stream events received (SSE events with data, `[DONE]` excluded;
    /// JSON-array elements; NDJSON lines; event-stream messages).
    pub stream_events: Option<u32>,
    /// Of those, the events that carried content (text, reasoning, tool input).
    pub content_events: Option<u32>,
}

impl StreamTiming {
    /// From a parsed response: `start_ns` is the first request byte.
    pub fn of(response: &llm::LlmResponse, start_ns: u64) -> Self {
        if !response.streaming {
            return Self::default();
        }
        let ms = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e6;
        let span_ms = match (response.first_content_ns, response.last_content_ns) {
            (Some(first), Some(last)) => Some(last.saturating_sub(first) as f64 / 1e6),
            _ => None,
        };
        let per = |n: Option<u64>| span_ms.zip(n.filter(|n| *n >= 2)).map(|(span, n)| span / (n - 1) as f64);
        Self {
            time_to_first_token_ms: response.first_content_ns.map(ms),
            time_per_output_token_ms: per(response.usage.output),
            time_per_output_chunk_ms: per(Some(u64::from(response.content_events))),
            stream_events: Some(response.events),
            content_events: Some(response.content_events),
        }
    }
}

struct Pending {
    request: LlmRequest,
    endpoint: String,
    ids: Ids,
    start_ns: u64,
    /// Digest of the complete request body, for pairing.
    digest: Option<u64>,
    sample_every: u32,
    trace_context: Option<TraceContext>,
    host: Option<String>,
    /// The request's body was not captured whole.
    truncated: bool,
}

struct ConnAudit {
    pid: u32,
    side: u8,
    provider: u8,
    requests: MessageParser,
    responses: MessageParser,
    /// Next expected stream offset: [request direction, response direction].
    next_offset: [Option<u64>; 2],
    pending: VecDeque<Pending>,
    /// Times of the current response's first and last chunks.
    response_first_ns: Option<u64>,
    response_last_ns: u64,
    request_start_ns: Option<u64>,
    last_seen: u64,
    /// The pipeline clock at the first sweep that found the kernel no
    /// longer tracking this connection.
    missing_since: Option<u64>,
    /// The streamed response in progress, parsed as it arrives.
    stream: Option<StreamBody>,
    /// A response that completed while its request was still arriving
    /// (`Pipeline::pair`): paired when that request completes.
    early: Option<Box<Answer>>,
    /// The sampling of the last request chunk (1 in N).
    sample_every: u32,
    /// An HTTP/2 stream's response was cut off (`h2::Output::Cut`): the
    /// response completing next is incomplete, with this error type.
    response_cut: Option<Option<&'static str>>,
    /// Heap charged to this connection at its last event.
    memory: usize,
}

impl ConnAudit {
    fn new(pid: u32, side: u8, provider: u8, cap: usize) -> Self {
        Self {
            pid,
            side,
            provider,
            requests: MessageParser::new(Kind::Request, cap),
            responses: MessageParser::new(Kind::Response, cap),
            next_offset: [None, None],
            pending: VecDeque::new(),
            response_first_ns: None,
            response_last_ns: 0,
            request_start_ns: None,
            last_seen: 0,
            missing_since: None,
            stream: None,
            early: None,
            sample_every: 1,
            response_cut: None,
            memory: 0,
        }
    }
}

/// A complete response with the times of its first and last chunks, and
/// its stream parsed so far.
struct Answer {
    message: Message,
    first_ns: u64,
    last_ns: u64,
    stream: Option<StreamBody>,
    /// An HTTP/2 reset cut the response off, with this error type.
    cut: Option<Option<&'static str>>,
}

/// Counters of the pipeline's own health.
#[derive(Debug, Default, Clone, Copy)]
pub struct PipelineStats {
    pub chunks: u64,
    /// Stream positions that did not follow the previous chunk (drops or
    /// unsampled exchanges): the connection's parsers restart there.
    pub resyncs: u64,
    pub evicted_connections: u64,
    /// Connections dropped because all parsers together exceeded the memory budget.
    pub evicted_for_memory: u64,
    /// Connections released because the kernel no longer tracks them (their
    /// close event was not captured: capture off, ring full, process gone).
    pub released_closed: u64,
    /// Stream events longer than the message cap, skipped.
    pub oversized_stream_events: u64,
    /// Bedrock event-stream messages with a wrong CRC or header (skipped),
    /// and preludes that lost the framing (the rest of that body ignored).
    pub stream_framing_errors: u64,
    pub records: u64,
    /// Responses that completed before their request did (`Pipeline::pair`).
    pub early_responses: u64,
    /// Responses that completed with no request to answer (their request
    /// was not captured, or came after them whole): no record.
    pub orphan_responses: u64,
    /// HTTP/2 connections (`h2`).
    pub h2: H2Stats,
}

pub struct Pipeline {
    conns: HashMap<u64, ConnAudit>,
    /// HTTP/2 connections; each stream is a virtual connection in `conns`.
    h2: HashMap<u64, H2Conn>,
    body_cap: usize,
    memory_budget: usize,
    /// Heap held by all connections' parsers (sum of `ConnAudit::memory`).
    memory: usize,
    identity: IdentityConfig,
    /// Provider of each configured upstream slot whose name says which.
    slot_providers: HashMap<u8, Provider>,
    clock: u64,
    pub stats: PipelineStats,
}

impl Pipeline {
    pub fn new(body_cap: usize) -> Self {
        Self {
            conns: HashMap::new(),
            h2: HashMap::new(),
            body_cap,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            memory: 0,
            identity: IdentityConfig::default(),
            slot_providers: HashMap::new(),
            clock: 0,
            stats: PipelineStats::default(),
        }
    }

    /// Upstream connections to a configured provider (slot, name) whose
    /// name is a known provider are labelled with it first.
    pub fn with_configured_providers(mut self, slots: &[(u32, String)]) -> Self {
        self.slot_providers = slots
            .iter()
            .filter_map(|(slot, name)| Some((u8::try_from(*slot).ok()?, Provider::from_configured_name(name)?)))
            .collect();
        self
    }

    /// Bounds the heap all connections' parsers hold together: beyond it,
    /// the least recently active connections are dropped (and counted).
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Heap the parsers hold now, as charged against the budget.
    pub fn memory(&self) -> usize {
        self.memory
    }

    /// Takes session, user and application ids from these sources.
    pub fn with_identity(mut self, identity: IdentityConfig) -> Self {
        self.identity = identity;
        self
    }

    pub fn tracked_connections(&self) -> usize {
        self.conns.len() + self.h2.len()
    }

    /// Releases the state of connections the kernel no longer tracks (`open`
    /// holds the ids it does): their close event never came, because capture
    /// was off when they closed, the ring was full, or the process exited.
    /// A connection goes when two sweeps in a row miss it with no event in
    /// between, so one that is still being reported is never cut.
    pub fn release_closed(&mut self, open: &std::collections::HashSet<u64>) {
        let clock = self.clock;
        let mut gone = Vec::new();
        // The streams of an HTTP/2 connection the kernel tracks are open.
        let open_streams: std::collections::HashSet<u64> =
            self.h2.iter().filter(|(id, _)| open.contains(id)).flat_map(|(_, c)| c.stream_conns()).collect();
        for (id, c) in &mut self.h2 {
            if open.contains(id) {
                c.missing_since = None;
            } else {
                match c.missing_since {
                    Some(since) if c.last_seen <= since => gone.push(*id),
                    _ => c.missing_since = Some(clock),
                }
            }
        }
        for id in gone.drain(..) {
            if let Some(c) = self.h2.remove(&id) {
                self.memory -= c.memory;
                self.stats.released_closed += 1;
            }
        }
        for (id, c) in &mut self.conns {
            if open.contains(id) || open_streams.contains(id) {
                c.missing_since = None;
            } else {
                match c.missing_since {
                    Some(since) if c.last_seen <= since => gone.push(*id),
                    _ => c.missing_since = Some(clock),
                }
            }
        }
        for id in gone {
            if let Some(c) = self.conns.remove(&id) {
                self.memory -= c.memory;
                self.stats.released_closed += 1;
            }
        }
    }

    /// Consumes one ring buffer event; returns the exchanges it completed.
    pub fn on_event(&mut self, header: &ChunkHeader, data: &[u8]) -> Vec<RequestRecord> {
        self.clock += 1;
        self.stats.chunks += 1;
        if let Some(records) = self.h2_event(header, data) {
            return records;
        }
        if header.kind == KIND_CLOSE {
            let mut out = Vec::new();
            if let Some(mut c) = self.conns.remove(&header.conn_id) {
                self.memory -= c.memory;
                if let Some(m) = c.responses.close() {
                    out.extend(Self::pair(&mut c, m, &mut self.stats));
                } else if !c.pending.is_empty()
                    && c.responses.current_head().is_some()
                    && let Some(m) = c.responses.cut()
                {
                    // A response cut by the close (its client went away, or
                    // the proxy gave up on it): the exchange happened, cut,
                    // as an HTTP/2 stream's reset is; without its record its
                    // client record would look answered without an upstream.
                    c.response_cut.get_or_insert(None);
                    out.extend(Self::pair(&mut c, m, &mut self.stats));
                }
                // An answer held for a request still arriving: the rest of
                // the request was not captured (a body past the capture cap
                // in the connection's last writes) or never sent; the answer
                // is that request's, cut.
                if c.early.is_some()
                    && let Some(m) = c.requests.cut()
                {
                    let start_ns = c.request_start_ns.take().unwrap_or(header.ts_ns);
                    let (slots, identity) = (&self.slot_providers, &self.identity);
                    out.extend(Self::request_done(&mut c, m, start_ns, slots, identity, &mut self.stats));
                }
            }
            self.stats.records += out.len() as u64;
            return out;
        }
        if header.kind != KIND_DATA {
            return Vec::new();
        }
        // An event without payload (where bytes past the cap end) only
        // completes a body the pipeline holds: for a connection it does not
        // hold (evicted, or its data events dropped) it creates no state.
        if header.len == 0 && !self.conns.contains_key(&header.conn_id) {
            return Vec::new();
        }
        if !self.conns.contains_key(&header.conn_id) && self.conns.len() >= MAX_CONNECTIONS {
            self.evict_oldest();
        }
        let cap = self.body_cap;
        let clock = self.clock;
        let conn = self
            .conns
            .entry(header.conn_id)
            .or_insert_with(|| ConnAudit::new(header.tgid, header.side, header.provider, cap));
        conn.last_seen = clock;
        let request_dir = (header.side == SIDE_CLIENT) == (header.direction == DIR_READ);
        let slot = if request_dir { 0 } else { 1 };
        let mut data = &data[..(header.len as usize).min(data.len())];
        // Bytes at offsets already seen come again when the kernel resends
        // the start of a request line it held across calls (Go's one-byte
        // background read): the bytes are the same, only the new ones count.
        // Only that resend (a request's, at most `RESENT_AT_MOST` bytes back)
        // is trimmed; any other chunk behind is a resync, as before.
        let mut offset = header.offset;
        let resent = |n: u64| request_dir && offset < n && n - offset <= RESENT_AT_MOST;
        if let Some(seen) = conn.next_offset[slot].filter(|&n| resent(n)) {
            let repeated = (seen - offset).min(data.len() as u64);
            (data, offset) = (&data[repeated as usize..], offset + repeated);
            if data.is_empty() {
                return Vec::new();
            }
        }
        // Bytes that passed uncaptured inside a body (sent with sendfile, or
        // beyond the capture cap) are skipped there; any other gap restarts.
        let mut skipped = Vec::new();
        let gap = conn.next_offset[slot].filter(|&n| offset > n).map(|n| offset - n);
        let parser = if request_dir { &mut conn.requests } else { &mut conn.responses };
        let skipped_in_body = gap.and_then(|n| parser.skip(n)).map(|m| skipped = m).is_some();
        if data.is_empty() && !skipped_in_body {
            // Where uncaptured bytes end, not inside a body: the next
            // captured bytes restart this direction, as any gap does.
            return Vec::new();
        }
        if conn.next_offset[slot] != Some(offset) && !skipped_in_body {
            if conn.next_offset[slot].is_some() {
                self.stats.resyncs += 1;
            }
            // Start parsing this direction afresh from here.
            if request_dir {
                conn.requests = MessageParser::new(Kind::Request, cap);
                // Requests before the gap can no longer be paired reliably.
                conn.pending.clear();
                conn.early = None;
                conn.request_start_ns = None;
            } else {
                conn.responses = MessageParser::new(Kind::Response, cap);
                for p in &conn.pending {
                    conn.responses.expect_response_to(if p.request.operation == llm::Operation::Other {
                        "GET"
                    } else {
                        "POST"
                    });
                }
            }
        }
        conn.next_offset[slot] = Some(offset + data.len() as u64);
        let mut out = Vec::new();
        if request_dir {
            if conn.request_start_ns.is_none() {
                conn.request_start_ns = Some(header.ts_ns);
            }
            conn.sample_every = header.sample_every.max(1);
            let completed = skipped.into_iter().chain(conn.requests.feed(data));
            for m in completed {
                let start_ns = conn.request_start_ns.take().unwrap_or(header.ts_ns);
                let (slots, identity) = (&self.slot_providers, &self.identity);
                out.extend(Self::request_done(conn, m, start_ns, slots, identity, &mut self.stats));
            }
            if conn.requests.buffered() > 0 && conn.request_start_ns.is_none() {
                conn.request_start_ns = Some(header.ts_ns);
            }
        } else {
            if conn.response_first_ns.is_none() {
                conn.response_first_ns = Some(header.ts_ns);
            }
            conn.response_last_ns = header.ts_ns;
            let completed: Vec<Message> = skipped.into_iter().chain(conn.responses.feed(data)).collect();
            for m in completed {
                out.extend(Self::pair(conn, m, &mut self.stats));
            }
            Self::stream_progress(conn, cap, header.ts_ns);
        }
        self.stats.records += out.len() as u64;
        self.charge(header.conn_id);
        out
    }

    /// An event of an HTTP/2 connection (one whose first request bytes are
    /// the client preface): its streams' HTTP/1.1 bytes are fed back as
    /// events of their virtual connections. `None` for other connections.
    fn h2_event(&mut self, header: &ChunkHeader, data: &[u8]) -> Option<Vec<RequestRecord>> {
        let request_dir = (header.side == SIDE_CLIENT) == (header.direction == DIR_READ);
        let outputs = if header.kind == KIND_CLOSE {
            let conn = self.h2.remove(&header.conn_id)?;
            self.memory -= conn.memory;
            conn.close()
        } else {
            if header.kind != KIND_DATA {
                return None;
            }
            let data = &data[..(header.len as usize).min(data.len())];
            if !self.h2.contains_key(&header.conn_id) {
                let fresh = header.offset == 0 && !self.conns.contains_key(&header.conn_id);
                // A server may send its SETTINGS before it reads the preface.
                let starts = if request_dir { h2::starts_with_preface(data) } else { h2::is_server_preface(data) };
                if !fresh || !starts {
                    return None;
                }
                if self.h2.len() >= MAX_CONNECTIONS {
                    self.evict_oldest();
                }
                self.stats.h2.connections += 1;
                self.h2.insert(header.conn_id, H2Conn::new(header.conn_id));
            }
            let conn = self.h2.get_mut(&header.conn_id)?;
            conn.last_seen = self.clock;
            conn.missing_since = None;
            let outputs = conn.feed(request_dir, header.offset, header.ts_ns, data, &mut self.stats.h2);
            let before = conn.memory;
            self.memory = self.memory - before + conn.recount();
            outputs
        };
        let mut records = Vec::new();
        for output in outputs {
            let mut h = *header;
            match output {
                h2::Output::Bytes { stream_conn, request, offset, bytes, ts_ns } => {
                    (h.conn_id, h.offset, h.len, h.kind) = (stream_conn, offset, bytes.len() as u32, KIND_DATA);
                    h.ts_ns = ts_ns;
                    // A reset stream's bodies end in both directions at once.
                    h.direction = if request == (header.side == SIDE_CLIENT) { DIR_READ } else { DIR_WRITE };
                    records.extend(self.on_event(&h, &bytes));
                }
                h2::Output::Cut { stream_conn, error } => {
                    if let Some(c) = self.conns.get_mut(&stream_conn) {
                        c.response_cut = Some(error);
                    }
                }
                h2::Output::Close { stream_conn } => {
                    (h.conn_id, h.len, h.kind) = (stream_conn, 0, KIND_CLOSE);
                    records.extend(self.on_event(&h, &[]));
                }
            }
        }
        self.charge(header.conn_id);
        Some(records)
    }

    /// Re-counts one connection's heap, then drops the least recently active
    /// connections while the total is over budget.
    fn charge(&mut self, conn_id: u64) {
        if let Some(c) = self.conns.get_mut(&conn_id) {
            let now = c.requests.memory()
                + c.responses.memory()
                + c.pending.len() * PENDING_COST
                + c.stream.as_ref().map_or(0, StreamBody::memory)
                + c.early.as_ref().map_or(0, |a| PENDING_COST + a.message.body.capacity() + a.message.head.memory());
            self.memory = self.memory - c.memory + now;
            c.memory = now;
        }
        while self.memory > self.memory_budget && !(self.conns.is_empty() && self.h2.is_empty()) {
            self.evict_oldest();
            self.stats.evicted_for_memory += 1;
        }
    }

    /// A streamed response in progress (SSE, or a JSON array answering a
    /// streaming request; not compressed) is parsed as its bytes arrive,
    /// so its length is not bounded by the message cap.
    fn stream_progress(conn: &mut ConnAudit, cap: usize, now_ns: u64) {
        let Some(head) = conn.responses.current_head() else { return };
        if conn.stream.is_none() {
            let Some(mut request) = conn.pending.front().map(|p| p.request.clone()) else { return };
            if request.format == WireFormat::Unknown {
                request.format = Provider::from_response_headers(head.headers().map(|(k, _)| k)).entry().format;
            }
            let request = &request;
            let identity = head.header("content-encoding").is_none_or(|e| e.trim().eq_ignore_ascii_case("identity"));
            let content_type = head.header("content-type").unwrap_or("");
            conn.stream = if !identity {
                None
            } else if content_type.contains("text/event-stream") {
                Some(StreamBody::sse(request, cap))
            } else if content_type.contains("application/vnd.amazon.eventstream") {
                Some(StreamBody::eventstream(request, cap))
            } else if content_type.contains("ndjson") {
                Some(StreamBody::ndjson(request, cap))
            } else if request.stream && content_type.contains("json") {
                Some(StreamBody::json(request, cap))
            } else {
                None
            };
        }
        if let Some(stream) = conn.stream.as_mut() {
            stream.at(now_ns);
            conn.responses.drain_body(|bytes| stream.feed(bytes));
        }
    }

    /// A request completed (or was cut at its connection's close): it
    /// awaits its answer, or takes the one that came first.
    fn request_done(
        conn: &mut ConnAudit,
        m: Message,
        start_ns: u64,
        slot_providers: &HashMap<u8, Provider>,
        identity_config: &IdentityConfig,
        stats: &mut PipelineStats,
    ) -> Option<RequestRecord> {
        let StartLine::Request { method, target } = &m.head.start else { return None };
        if conn.early.is_none() {
            // (An early response was parsed already.)
            conn.responses.expect_response_to(method);
        }
        let json = match llm::request_fields(&m.body) {
            // A body cut by the capture cap: the fields before the cut.
            serde_json::Value::Null if m.truncated => cut_body::fields_before_cut(&m.body, &llm::REQUEST_CONTENT_KEYS),
            json => json,
        };
        let mut request = llm::classify_request(target, m.head.header("host"), &json);
        if conn.side != SIDE_CLIENT
            && let Some(p) = slot_providers.get(&conn.provider)
        {
            request.provider = *p;
        }
        let ids = identity::resolve(identity_config, |name| m.head.header(name), &json);
        if conn.pending.len() >= MAX_PENDING {
            conn.pending.pop_front();
        }
        conn.pending.push_back(Pending {
            request,
            endpoint: bounded(target.split('?').next().unwrap_or("").to_string()),
            ids,
            start_ns,
            digest: body_digest(&m),
            sample_every: conn.sample_every,
            trace_context: m.head.header("traceparent").and_then(TraceContext::parse),
            host: m.head.header("host").map(|h| bounded(h.to_string())),
            truncated: m.truncated,
        });
        let answer = conn.early.take()?;
        Self::answer(conn, *answer, stats)
    }

    /// A response completed: the record of the exchange it answers. In
    /// HTTP/1.1 a response answers the oldest request not yet answered; when
    /// every complete request is answered but one is still arriving, it
    /// answers that one, and waits for it to complete. A server may answer
    /// before it has read the whole request (an early error); a request
    /// whose rest is not captured (past the capture cap) is cut at its
    /// connection's close.
    fn pair(conn: &mut ConnAudit, mut m: Message, stats: &mut PipelineStats) -> Option<RequestRecord> {
        let stream = conn.stream.take();
        let first_ns = conn.response_first_ns.take().unwrap_or(conn.response_last_ns);
        let cut = conn.response_cut.take();
        m.truncated |= cut.is_some();
        let answer = Answer { message: m, first_ns, last_ns: conn.response_last_ns, stream, cut };
        if conn.pending.is_empty() && conn.requests.in_message() {
            stats.early_responses += 1;
            if conn.early.replace(Box::new(answer)).is_some() {
                // Two answers to one request in progress: the first answers nothing.
                stats.orphan_responses += 1;
            }
            return None;
        }
        Self::answer(conn, answer, stats)
    }

    /// The record of the oldest request awaiting its response and `answer`.
    fn answer(conn: &mut ConnAudit, answer: Answer, stats: &mut PipelineStats) -> Option<RequestRecord> {
        let Answer { message: m, first_ns: first, last_ns: last, stream, cut } = answer;
        let Some(mut pending) = conn.pending.pop_front() else {
            stats.orphan_responses += 1;
            return None;
        };
        let StartLine::Response { status } = m.head.start else { return None };
        if pending.request.provider == Provider::Unknown {
            let p = Provider::from_response_headers(m.head.headers().map(|(k, _)| k));
            pending.request.provider = p;
            if pending.request.format == WireFormat::Unknown {
                pending.request.format = p.entry().format;
            }
        }
        let parse_whole = |body: &[u8]| {
            // Decoded bodies are bounded like captured ones (4x: JSON compresses well).
            let body =
                decode::decode(m.head.header("content-encoding"), body, body.len().saturating_mul(4).max(1 << 20))
                    .unwrap_or_default();
            let content_type = m.head.header("content-type");
            let response = llm::parse_response(&pending.request, content_type, &body, true);
            // A JSON body cut by the capture cap (or a reset): the fields
            // whole before the cut (id, model), as a request's are.
            let unread = m.truncated && !response.streaming && response.model.is_none() && response.id.is_none();
            match unread.then(|| cut_body::object_before_cut(&body)).flatten() {
                Some(kept) => llm::parse_response(&pending.request, content_type, &kept, true),
                None => response,
            }
        };
        let mut response = match stream {
            Some(mut stream) => {
                stream.at(last);
                stream.feed(&m.body);
                stats.oversized_stream_events += stream.oversized;
                stats.stream_framing_errors += stream.framing_errors;
                stream.finish(!m.truncated).unwrap_or_else(|whole| parse_whole(&whole))
            }
            None => parse_whole(&m.body),
        };
        llm::apply_headers(&mut response, |name| m.head.header(name));
        let cut_short = cut.is_some();
        if let Some(error) = cut {
            // A stream cut off: its output count so far is not the
            // exchange's, so cost and time per output token stay null.
            response.usage.output = None;
            if response.error_type.is_none() {
                response.error_type = error.map(str::to_string);
            }
        }
        let ms = |t: u64| t.saturating_sub(pending.start_ns) as f64 / 1e6;
        let stream_timing = StreamTiming::of(&response, pending.start_ns);
        Some(RequestRecord {
            timestamp_unix_ms: monotonic_to_unix_ms(pending.start_ns),
            start_ns: pending.start_ns,
            pid: conn.pid,
            upstream_provider: None,
            proxy_overhead_ms: None,
            cache_hit: cache_header_hit(&m.head).then_some(true),
            side: if conn.side == SIDE_CLIENT { "client" } else { "upstream" },
            provider_slot: (conn.side != SIDE_CLIENT).then_some(conn.provider),
            provider: pending.request.provider.name(),
            operation: pending.request.operation.name(),
            endpoint: pending.endpoint,
            deployment: pending.request.deployment.map(bounded),
            model_requested: pending.request.model.map(bounded),
            model_returned: response.model.map(bounded),
            status,
            error_type: response.error_type.map(bounded),
            finish_reasons: response.finish_reasons.into_vec(),
            streaming: response.streaming,
            tokens: response.usage,
            ttfb_ms: ms(first),
            duration_ms: ms(last),
            stream_timing,
            session_id: pending.ids.session,
            user_id: pending.ids.user,
            api_key_hash: pending.ids.api_key_hash,
            truncated: m.truncated || pending.truncated,
            cut_short,
            cost_usd: None,
            application_id: pending.ids.application,
            rate_limits: rate_limit_headers(&m.head),
            pairing: Pairing {
                request_id: response
                    .id
                    .or_else(|| {
                        m.head.header("x-request-id").or_else(|| m.head.header("request-id")).map(str::to_string)
                    })
                    .map(bounded),
                request_digest: pending.digest,
                ..Pairing::default()
            },
            sample_every: pending.sample_every,
            trace_context: pending.trace_context,
            server_address: pending.host,
        })
    }

    fn evict_oldest(&mut self) {
        let oldest = self.conns.iter().map(|(&id, c)| (c.last_seen, id)).min();
        let oldest_h2 = self.h2.iter().map(|(&id, c)| (c.last_seen, id)).min();
        if oldest_h2.is_some_and(|h| oldest.is_none_or(|c| h < c))
            && let Some((_, id)) = oldest_h2
            && let Some(c) = self.h2.remove(&id)
        {
            // Its streams' virtual connections go as they age out.
            self.memory -= c.memory;
            self.stats.evicted_connections += 1;
        } else if let Some((_, id)) = oldest
            && let Some(c) = self.conns.remove(&id)
        {
            self.memory -= c.memory;
            self.stats.evicted_connections += 1;
        }
    }
}

/// A digest of a complete, non-empty request body: a proxy that forwards
/// the body unchanged sends the same bytes upstream.
fn body_digest(m: &Message) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    if m.body.is_empty() || m.truncated {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.body.hash(&mut h);
    Some(h.finish())
}

/// Longest text field a record keeps (models, endpoints, error types come
/// from the network: a record's size stays bounded whatever they say).
const MAX_FIELD_CHARS: usize = 256;

fn bounded(s: String) -> String {
    let mut s = without_control_chars(s);
    if s.len() > MAX_FIELD_CHARS {
        let mut end = MAX_FIELD_CHARS;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `s` without control characters (NUL, newlines, escapes...): text from the
/// network ends up in logs, JSON and database columns, and PostgreSQL
/// rejects NUL in text outright.
pub fn without_control_chars(s: String) -> String {
    if s.chars().any(char::is_control) { s.chars().filter(|c| !c.is_control()).collect() } else { s }
}

/// The rate-limit headers of a response (the provider table's: OpenAI
/// `x-ratelimit-*`, Anthropic `anthropic-ratelimit-*`, `retry-after`, ...),
/// at most 16.
fn rate_limit_headers(head: &super::message::Head) -> std::collections::BTreeMap<String, String> {
    head.headers()
        .filter(|(k, _)| provider::is_rate_limit_header(k))
        .take(16)
        .map(|(k, v)| (k.to_string(), v.chars().take(64).collect()))
        .collect()
}

/// A response header of a caching layer saying this was a hit.
fn cache_header_hit(head: &super::message::Head) -> bool {
    let says_hit = |name: &str| head.header(name).is_some_and(|v| v.to_ascii_lowercase().contains("hit"));
    says_hit("x-cache")
        || says_hit("x-cache-status")
        || says_hit("cf-cache-status")
        || head.header("x-litellm-cache-hit").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Converts a kernel monotonic timestamp to Unix milliseconds.
fn monotonic_to_unix_ms(ns: u64) -> u64 {
    let now = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let offset = now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC);
    ((ns as i128 + offset) / 1_000_000).max(0) as u64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunk(conn_id: u64, direction: u8, offset: u64, ts: u64, len: usize) -> ChunkHeader {
        ChunkHeader {
            conn_id,
            offset,
            ts_ns: ts,
            direction,
            side: SIDE_CLIENT,
            kind: KIND_DATA,
            len: len as u32,
            ..ChunkHeader::default()
        }
    }

    #[test]
    fn a_client_exchange_becomes_one_record() {
        let mut p = Pipeline::new(1 << 20);
        let body = r#"{"model":"gpt-4o","user":"u7","x":"yy"}"#;
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-secret\r\nx-session-id: s1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let req = req.as_bytes();
        assert!(p.on_event(&chunk(1, DIR_READ, 0, 1_000_000, req.len()), req).is_empty());
        let body = r#"{"model":"gpt-4o-1","usage":{"prompt_tokens":12,"completion_tokens":34},"pad":""}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let resp = resp.as_bytes();
        let (a, b) = resp.split_at(50);
        assert!(p.on_event(&chunk(1, DIR_WRITE, 0, 3_000_000, a.len()), a).is_empty());
        let r = p.on_event(&chunk(1, DIR_WRITE, 50, 5_000_000, b.len()), b);
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(
            (r.status, r.model_requested.as_deref(), r.model_returned.as_deref()),
            (200, Some("gpt-4o"), Some("gpt-4o-1"))
        );
        assert_eq!((r.tokens.input, r.tokens.output), (Some(12), Some(34)));
        assert_eq!((r.ttfb_ms, r.duration_ms), (2.0, 4.0));
        assert_eq!((r.session_id.as_deref(), r.user_id.as_deref()), (Some("s1"), Some("u7")));
        let json = serde_json::to_string(r).unwrap();
        assert!(!json.contains("sk-secret"), "no header value leaks: {json}");
    }

    /// A response that completes while its request's body is still coming
    /// (a server answering early) is the answer to that request: one record
    /// once it completes.
    #[test]
    fn a_response_before_the_end_of_its_request_is_paired_with_it() {
        use metrics_common::conn::SIDE_UPSTREAM;
        let mut p = Pipeline::new(1 << 20);
        let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
        let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
        let answer = r#"{"error":{"message":"Rate limit reached","type":"rate_limit_exceeded"}}"#;
        let resp = format!("HTTP/1.1 429 Too Many Requests\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
        let upstream = |mut h: ChunkHeader| {
            (h.side, h.provider) = (SIDE_UPSTREAM, 1);
            h
        };
        assert!(p.on_event(&upstream(chunk(1, DIR_WRITE, 0, 1_000_000, head.len())), head.as_bytes()).is_empty());
        assert!(p.on_event(&upstream(chunk(1, DIR_READ, 0, 3_000_000, resp.len())), resp.as_bytes()).is_empty());
        let r = p.on_event(&upstream(chunk(1, DIR_WRITE, head.len() as u64, 3_500_000, body.len())), body.as_bytes());
        assert_eq!(r.len(), 1, "the 429 answers the request in progress");
        let r = &r[0];
        assert_eq!((r.side, r.status, r.model_requested.as_deref()), ("upstream", 429, Some("gpt-4o-mini")));
        assert_eq!(r.error_type.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!((r.ttfb_ms, r.duration_ms), (2.0, 2.0));
        // The connection goes on: the next exchange pairs as usual.
        let next = format!("{head}{body}");
        let at = (head.len() + body.len()) as u64;
        assert!(p.on_event(&upstream(chunk(1, DIR_WRITE, at, 4_000_000, next.len())), next.as_bytes()).is_empty());
        let r = p.on_event(&upstream(chunk(1, DIR_READ, resp.len() as u64, 5_000_000, resp.len())), resp.as_bytes());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].start_ns, 4_000_000);
        assert_eq!((p.stats.early_responses, p.stats.orphan_responses), (1, 0));
        // A response no request awaits makes no record, and is counted.
        let at = 2 * resp.len() as u64;
        assert!(p.on_event(&upstream(chunk(1, DIR_READ, at, 6_000_000, resp.len())), resp.as_bytes()).is_empty());
        assert_eq!((p.stats.early_responses, p.stats.orphan_responses), (1, 1));
    }

    /// Go's net/http reads the next request's first byte alone (a background
    /// read); the kernel holds it until the method is whole and sends it
    /// again as a chunk of its own just before the request line's call.
    /// Client side, as behind Caddy: a body past the capture cap, its answer
    /// (held while the body is unfinished), the uncaptured rest of the body,
    /// the held `P` and the rest of the next request; then a body under the
    /// cap, whose capture took the `P` already, sent again. One record per
    /// exchange and no resync (the repeated byte is skipped).
    #[test]
    fn a_request_line_start_held_across_calls_is_taken_once_after_capped_and_whole_bodies() {
        let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
        let head =
            |len: usize| format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
        let answer = r#"{"id":"c1","usage":{"prompt_tokens":12,"completion_tokens":34}}"#;
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
        let mut p = Pipeline::new(1 << 10);
        // 1: 4 KiB of body announced, 1 KiB captured (the cap), answered.
        let first = format!("{}{body}", head(4096));
        let mut read = first.len() as u64;
        assert!(p.on_event(&chunk(1, DIR_READ, 0, 1_000_000, first.len()), first.as_bytes()).is_empty());
        let mut written = 0;
        let mut respond = |p: &mut Pipeline, ts: u64| {
            let r = p.on_event(&chunk(1, DIR_WRITE, written, ts, resp.len()), resp.as_bytes());
            written += resp.len() as u64;
            r
        };
        assert!(respond(&mut p, 2_000_000).is_empty(), "the answer waits for the rest of its request");
        read += (4096 - body.len()) as u64; // the body's rest: not captured
        // 2: `P` resent at its offset, then the call that completed the method.
        let r = p.on_event(&chunk(1, DIR_READ, read, 3_000_000, 1), b"P");
        assert_eq!(r.len(), 1, "the first exchange completes at the held byte");
        let second = format!("{}{body}", head(body.len()));
        let rest = &second.as_bytes()[1..];
        assert!(p.on_event(&chunk(1, DIR_READ, read + 1, 3_000_000, rest.len()), rest).is_empty());
        read += second.len() as u64;
        assert_eq!(respond(&mut p, 4_000_000).len(), 1);
        // 3: the `P` captured with the (whole) second exchange, resent.
        assert!(p.on_event(&chunk(1, DIR_READ, read, 5_000_000, 1), b"P").is_empty());
        let third = format!("{}{body}", head(body.len()));
        assert!(p.on_event(&chunk(1, DIR_READ, read, 5_000_000, 1), b"P").is_empty());
        let rest = &third.as_bytes()[1..];
        assert!(p.on_event(&chunk(1, DIR_READ, read + 1, 5_000_000, rest.len()), rest).is_empty());
        let r = respond(&mut p, 6_000_000);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].model_requested.as_deref(), r[0].tokens.output), (Some("gpt-4o-mini"), Some(34)));
        assert_eq!((p.stats.resyncs, p.stats.orphan_responses), (0, 0));
    }

    /// A request whose body's end is never captured (past the capture cap
    /// in the connection's last write), answered early: the answer waits for
    /// it, and the connection's close pairs them, the request cut.
    #[test]
    fn an_early_answer_to_a_request_cut_by_the_capture_cap_is_paired_at_close() {
        use metrics_common::conn::SIDE_UPSTREAM;
        let mut p = Pipeline::new(1 << 20);
        let part = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"aaaa"#;
        let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 8 << 20);
        let sent = format!("{head}{part}");
        let answer = r#"{"error":{"message":"too large","type":"invalid_request_error"}}"#;
        let resp = format!("HTTP/1.1 413 Payload Too Large\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
        let upstream = |mut h: ChunkHeader| {
            (h.side, h.provider) = (SIDE_UPSTREAM, 1);
            h
        };
        assert!(p.on_event(&upstream(chunk(1, DIR_WRITE, 0, 1_000_000, sent.len())), sent.as_bytes()).is_empty());
        assert!(p.on_event(&upstream(chunk(1, DIR_READ, 0, 3_000_000, resp.len())), resp.as_bytes()).is_empty());
        assert_eq!((p.stats.early_responses, p.stats.orphan_responses), (1, 0));
        let close = ChunkHeader { kind: KIND_CLOSE, ..upstream(chunk(1, DIR_WRITE, 0, 9_000_000, 0)) };
        let r = p.on_event(&close, &[]);
        assert_eq!(r.len(), 1, "the 413 answers the cut request");
        let r = &r[0];
        // The cut body named its model before the cut; the record says it was cut.
        assert_eq!((r.side, r.status, r.model_requested.as_deref()), ("upstream", 413, Some("gpt-4o-mini")));
        assert!(r.truncated, "the request was cut");
        assert_eq!(
            (r.endpoint.as_str(), r.error_type.as_deref()),
            ("/v1/chat/completions", Some("invalid_request_error"))
        );
        assert_eq!((r.ttfb_ms, r.duration_ms), (2.0, 2.0));
        // A close with no answer held makes nothing of a request in progress.
        assert!(p.on_event(&upstream(chunk(2, DIR_WRITE, 0, 1_000_000, sent.len())), sent.as_bytes()).is_empty());
        let close = ChunkHeader { kind: KIND_CLOSE, ..upstream(chunk(2, DIR_WRITE, 0, 9_000_000, 0)) };
        assert!(p.on_event(&close, &[]).is_empty());
        assert_eq!(p.stats.orphan_responses, 0);
    }

    /// A chunked stream whose connection closes before its end (a client
    /// that went away, or a proxy that gave up on its upstream call) is an
    /// exchange that happened: one record, truncated, its partial output
    /// count null, rather than none (its client record would then look
    /// answered without an upstream call).
    #[test]
    fn a_chunked_stream_cut_by_the_close_gives_a_truncated_record() {
        let mut p = Pipeline::new(1 << 20);
        let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
        let req =
            format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        assert!(p.on_event(&chunk(1, DIR_READ, 0, 1_000_000, req.len()), req.as_bytes()).is_empty());
        let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        assert!(p.on_event(&chunk(1, DIR_WRITE, 0, 3_000_000, resp.len()), resp.as_bytes()).is_empty());
        let close = ChunkHeader { kind: KIND_CLOSE, ..chunk(1, DIR_WRITE, 0, 9_000_000, 0) };
        let r = p.on_event(&close, &[]);
        assert_eq!(r.len(), 1, "the cut stream's record");
        let r = &r[0];
        assert_eq!((r.status, r.streaming, r.truncated, r.tokens.output), (200, true, true, None));
        assert_eq!((r.model_requested.as_deref(), r.duration_ms), (Some("gpt-4o-mini"), 2.0));
        // A close with no response begun makes no record.
        assert!(p.on_event(&chunk(2, DIR_READ, 0, 1_000_000, req.len()), req.as_bytes()).is_empty());
        let close = ChunkHeader { kind: KIND_CLOSE, ..chunk(2, DIR_WRITE, 0, 9_000_000, 0) };
        assert!(p.on_event(&close, &[]).is_empty());
    }

    /// Bodies longer than the capture cap, the last exchange on a kept-alive
    /// connection: the kernel's empty event at the end of the uncaptured
    /// bytes completes each body when its last byte passes, so the record
    /// comes with the response's end, not with the next exchange or the
    /// close. An empty event that is not inside a body changes nothing.
    #[test]
    fn the_end_of_bytes_past_the_cap_completes_the_body_at_once() {
        let cap = 64;
        let mut p = Pipeline::new(cap);
        let body =
            format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(200));
        let req =
            format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let head_len = req.len() - body.len();
        let captured = head_len + cap;
        assert!(p.on_event(&chunk(1, DIR_READ, 0, 1_000_000, captured), &req.as_bytes()[..captured]).is_empty());
        let end = chunk(1, DIR_READ, req.len() as u64, 1_500_000, 0);
        assert!(p.on_event(&end, &[]).is_empty(), "the request is whole, its answer still to come");
        let answer = format!(
            r#"{{"id":"c1","model":"gpt-4o-mini","usage":{{"prompt_tokens":12,"completion_tokens":34}},"pad":"{}"}}"#,
            "y".repeat(300)
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let captured = resp.len() - answer.len() + cap;
        assert!(p.on_event(&chunk(1, DIR_WRITE, 0, 3_000_000, captured), &resp.as_bytes()[..captured]).is_empty());
        // Part of the rest passed, then the rest: done at its end.
        let mid = chunk(1, DIR_WRITE, captured as u64 + 10, 4_000_000, 0);
        assert!(p.on_event(&mid, &[]).is_empty());
        let r = p.on_event(&chunk(1, DIR_WRITE, resp.len() as u64, 5_000_000, 0), &[]);
        assert_eq!(r.len(), 1, "the response completes with its last byte");
        let r = &r[0];
        assert_eq!((r.status, r.model_requested.as_deref(), r.truncated), (200, Some("gpt-4o-mini"), true));
        assert_eq!((r.ttfb_ms, r.duration_ms), (2.0, 4.0));
        // An empty event where no body is in progress: nothing, no resync;
        // the next exchange follows on.
        assert!(p.on_event(&chunk(1, DIR_WRITE, resp.len() as u64 + 5, 5_500_000, 0), &[]).is_empty());
        let small = r#"{"model":"gpt-4o","messages":[]}"#;
        let next =
            format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{small}", small.len());
        assert!(p.on_event(&chunk(1, DIR_READ, req.len() as u64, 6_000_000, next.len()), next.as_bytes()).is_empty());
        let ok = r#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let ok = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{ok}", ok.len());
        let r = p.on_event(&chunk(1, DIR_WRITE, resp.len() as u64, 7_000_000, ok.len()), ok.as_bytes());
        assert_eq!((r.len(), r[0].truncated, r[0].tokens.output), (1, false, Some(2)));
        assert_eq!((p.stats.resyncs, p.stats.early_responses, p.stats.orphan_responses), (0, 0, 0));
        // One for a connection the pipeline does not hold (evicted, or its
        // data dropped): no state is made for it.
        let held = p.tracked_connections();
        assert!(p.on_event(&chunk(7, DIR_WRITE, 90_000, 8_000_000, 0), &[]).is_empty());
        assert_eq!(p.tracked_connections(), held);
    }

    fn exchange(
        p: &mut Pipeline,
        conn: u64,
        side: u8,
        provider: u8,
        target: &str,
        response_head: &str,
        body: &str,
    ) -> RequestRecord {
        let req = format!("POST {target} HTTP/1.1\r\nHost: gw.internal\r\nContent-Length: 2\r\n\r\n{{}}");
        let resp = format!("HTTP/1.1 200 OK\r\n{response_head}Content-Length: {}\r\n\r\n{body}", body.len());
        let (req_dir, resp_dir) = if side == SIDE_CLIENT { (DIR_READ, DIR_WRITE) } else { (DIR_WRITE, DIR_READ) };
        let mut h = chunk(conn, req_dir, 0, 1, req.len());
        (h.side, h.provider) = (side, provider);
        assert!(p.on_event(&h, req.as_bytes()).is_empty());
        let mut h = chunk(conn, resp_dir, 0, 2, resp.len());
        (h.side, h.provider) = (side, provider);
        let mut r = p.on_event(&h, resp.as_bytes());
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    /// The request's `traceparent` is kept as ids only, and its `Host`;
    /// a malformed `traceparent` is no trace context.
    #[test]
    fn trace_context_and_host_come_from_the_request_head() {
        let mut p = Pipeline::new(1 << 20);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (conn, header, expected) in [(1, tp, true), (2, "00-zz-00f067aa0ba902b7-01", false)] {
            let req = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com:443\r\ntraceparent: {header}\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
            assert!(p.on_event(&chunk(conn, DIR_READ, 0, 1, req.len()), req.as_bytes()).is_empty());
            let r = p.on_event(&chunk(conn, DIR_WRITE, 0, 2, resp.len()), resp.as_bytes()).remove(0);
            assert_eq!(r.server_address.as_deref(), Some("api.openai.com:443"));
            assert_eq!(r.trace_context, if expected { TraceContext::parse(tp) } else { None });
            let json = serde_json::to_string(&r).unwrap();
            assert!(!json.contains("4bf92f35") && !json.contains("traceparent"), "{json}");
        }
    }

    #[test]
    fn providers_come_from_configuration_then_host_path_and_response_headers() {
        use metrics_common::conn::SIDE_UPSTREAM;
        let openai_shape = r#"{"usage":{"prompt_tokens":5,"completion_tokens":6}}"#;
        let mut p = Pipeline::new(1 << 20).with_configured_providers(&[(0, "anthropic-compat".into())]);
        // An OpenAI-compatible endpoint of a configured Anthropic upstream.
        let r = exchange(&mut p, 1, SIDE_UPSTREAM, 0, "/v1/chat/completions", "", openai_shape);
        assert_eq!((r.provider, r.tokens.input, r.tokens.output), ("anthropic", Some(5), Some(6)));
        // Unknown path and host: the provider's response headers tell.
        let r = exchange(&mut p, 2, SIDE_CLIENT, 0, "/llm", "anthropic-ratelimit-requests-remaining: 9\r\n", "{}");
        assert_eq!(r.provider, "anthropic");
        let r = exchange(&mut p, 3, SIDE_CLIENT, 0, "/llm", "openai-processing-ms: 12\r\n", openai_shape);
        assert_eq!((r.provider, r.tokens.output), ("openai", Some(6)));
        let r = exchange(&mut p, 4, SIDE_CLIENT, 0, "/llm", "server: x\r\n", "{}");
        assert_eq!(r.provider, "unknown");
    }

    #[test]
    fn a_stream_longer_than_the_cap_keeps_its_usage_within_bounded_memory() {
        let cap = 16 * 1024;
        let mut p = Pipeline::new(cap);
        let body = r#"{"model":"gpt-4o","stream":true}"#;
        let req = format!("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        p.on_event(&chunk(1, DIR_READ, 0, 1, req.len()), req.as_bytes());
        let mut resp =
            String::from("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut push = |data: &str| resp.push_str(&format!("{:x}\r\n{data}\r\n", data.len()));
        for i in 0..20_000 {
            push(&format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"token {i}\"}}}}]}}\n\n"));
        }
        push("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":21,\"completion_tokens\":20000}}\n\ndata: [DONE]\n\n");
        resp.push_str("0\r\n\r\n");
        assert!(resp.len() > 50 * cap);
        let mut records = Vec::new();
        for (i, piece) in resp.as_bytes().chunks(4096).enumerate() {
            records.extend(p.on_event(&chunk(1, DIR_WRITE, (i * 4096) as u64, 2 + i as u64, piece.len()), piece));
            assert!(p.memory() < 2 * cap + 8192, "{}", p.memory());
        }
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.tokens.input, r.tokens.output, r.streaming, r.truncated), (Some(21), Some(20_000), true, false));
    }

    /// A streamed chat completion whose events arrive at known times (ms):
    /// a role-only delta at 4, content at 6, 10 and 14, then `usage` when
    /// given and `[DONE]` at 15; the request started at 1.
    fn streamed_exchange(usage: Option<&str>) -> RequestRecord {
        let mut p = Pipeline::new(1 << 20);
        let body = r#"{"model":"gpt-4o","stream":true}"#;
        let req = format!("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        assert!(p.on_event(&chunk(1, DIR_READ, 0, 1_000_000, req.len()), req.as_bytes()).is_empty());
        let sse = |data: &str| {
            let event = format!("data: {data}\n\n");
            format!("{:x}\r\n{event}\r\n", event.len())
        };
        let delta = |d: &str| sse(&format!(r#"{{"choices":[{{"index":0,"delta":{d}}}]}}"#));
        let mut last = delta(r#"{"content":"!"}"#);
        if let Some(usage) = usage {
            last.push_str(&sse(&format!(r#"{{"choices":[],"usage":{usage}}}"#)));
        }
        let pieces = [
            (3, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()),
            (4, delta(r#"{"role":"assistant","content":""}"#)),
            (6, delta(r#"{"content":"Hel"}"#)),
            (10, delta(r#"{"content":"lo"}"#)),
            (14, last),
            (15, format!("{}0\r\n\r\n", sse("[DONE]"))),
        ];
        let (mut offset, mut records) = (0, Vec::new());
        for (ms, piece) in pieces {
            records.extend(p.on_event(&chunk(1, DIR_WRITE, offset, ms * 1_000_000, piece.len()), piece.as_bytes()));
            offset += piece.len() as u64;
        }
        assert_eq!(records.len(), 1);
        records.remove(0)
    }

    /// Time per output token needs the output token count: a stream that
    /// reports no usage keeps it null (not a guess from the content events),
    /// while time to first token and per chunk are still measured.
    #[test]
    fn time_per_output_token_stays_null_when_usage_is_unknown() {
        let r = streamed_exchange(None);
        assert!(r.streaming);
        assert_eq!(r.tokens.output, None, "no usage was reported");
        let t = r.stream_timing;
        assert_eq!(t.time_to_first_token_ms, Some(5.0), "the first content at 6 ms, not the role-only delta");
        assert_eq!(t.time_per_output_token_ms, None);
        assert_eq!((t.time_per_output_chunk_ms, t.content_events), (Some(4.0), Some(3)));
        // The same stream with its usage: (14 - 6) ms over 5 - 1 tokens.
        let r = streamed_exchange(Some(r#"{"prompt_tokens":7,"completion_tokens":5}"#));
        assert_eq!(r.tokens.output, Some(5));
        assert_eq!(r.stream_timing.time_to_first_token_ms, Some(5.0));
        assert_eq!(r.stream_timing.time_per_output_token_ms, Some(2.0));
    }

    #[test]
    fn connections_closed_without_a_close_event_are_released_after_two_sweeps() {
        let mut p = Pipeline::new(1 << 20);
        let head = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 10\r\n\r\n{";
        for conn in 1..=3 {
            p.on_event(&chunk(conn, DIR_READ, 0, 1, head.len()), head.as_bytes());
        }
        let open = |ids: &[u64]| ids.iter().copied().collect::<std::collections::HashSet<u64>>();
        p.release_closed(&open(&[1]));
        assert_eq!(p.tracked_connections(), 3, "one sweep is not enough");
        // Connection 2 is still being reported (the kernel map read missed it).
        p.on_event(&chunk(2, DIR_READ, head.len() as u64, 2, 1), b"x");
        p.release_closed(&open(&[1]));
        assert_eq!(p.tracked_connections(), 2);
        assert_eq!(p.stats.released_closed, 1);
        p.release_closed(&open(&[1]));
        assert_eq!((p.tracked_connections(), p.stats.released_closed), (1, 2));
        let recount: usize = p.conns.values().map(|c| c.memory).sum();
        assert_eq!(recount, p.memory());
    }

    #[test]
    fn thousands_of_half_sent_bodies_stay_within_the_memory_budget() {
        let mut p = Pipeline::new(256 * 1024).with_memory_budget(1 << 20);
        let head = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n";
        let body = vec![b'x'; 8000];
        for conn in 0..2000 {
            p.on_event(&chunk(conn, DIR_READ, 0, conn, head.len()), head.as_bytes());
            p.on_event(&chunk(conn, DIR_READ, head.len() as u64, conn, body.len()), &body);
            assert!(p.memory() <= 1 << 20, "{}", p.memory());
        }
        assert!(p.stats.evicted_for_memory > 1000, "{:?}", p.stats);
        assert!(p.tracked_connections() < 200);
    }

    #[test]
    fn text_fields_from_the_network_are_bounded() {
        let mut p = Pipeline::new(1 << 20);
        let model = "m".repeat(5000);
        let path = format!("/{}/v1/chat/completions", "é".repeat(3000));
        let body = format!(r#"{{"model":"{model}"}}"#);
        let req = format!("POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        p.on_event(&chunk(1, DIR_READ, 0, 1, req.len()), req.as_bytes());
        let resp_body = format!(r#"{{"model":"{model}","error":{{"type":"{model}"}}}}"#);
        let resp = format!("HTTP/1.1 500 X\r\nContent-Length: {}\r\n\r\n{resp_body}", resp_body.len());
        let r = p.on_event(&chunk(1, DIR_WRITE, 0, 2, resp.len()), resp.as_bytes()).remove(0);
        for field in [&r.endpoint, r.model_requested.as_ref().unwrap(), r.model_returned.as_ref().unwrap()] {
            assert!(field.len() <= MAX_FIELD_CHARS, "{}", field.len());
        }
        assert!(r.error_type.unwrap().len() <= MAX_FIELD_CHARS);
    }

    #[test]
    fn text_fields_from_the_network_carry_no_control_characters() {
        let mut p = Pipeline::new(1 << 20);
        let body = r#"{"model":"x\u0000y\n"}"#;
        let req = format!("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        p.on_event(&chunk(1, DIR_READ, 0, 1, req.len()), req.as_bytes());
        let resp_body = r#"{"model":"\u0000m","error":{"type":"e\u001b[31m"}}"#;
        let resp = format!("HTTP/1.1 500 X\r\nContent-Length: {}\r\n\r\n{resp_body}", resp_body.len());
        let r = p.on_event(&chunk(1, DIR_WRITE, 0, 2, resp.len()), resp.as_bytes()).remove(0);
        assert_eq!(r.model_requested.as_deref(), Some("xy"));
        assert_eq!(r.model_returned.as_deref(), Some("m"));
        assert_eq!(r.error_type.as_deref(), Some("e[31m"));
    }

    proptest! {
        #[test]
        fn arbitrary_events_never_panic_and_stay_bounded(events in prop::collection::vec((0u64..4, any::<bool>(), 0u64..5000, prop::collection::vec(any::<u8>(), 0..600)), 0..60)) {
            let mut p = Pipeline::new(4096).with_memory_budget(6000);
            for (id, dir, off, data) in events {
                let h = chunk(id, if dir { DIR_READ } else { DIR_WRITE }, off, off, data.len());
                let _ = p.on_event(&h, &data);
                prop_assert!(p.memory() <= 6000, "over budget: {}", p.memory());
                let recount: usize = p.conns.values().map(|c| c.memory).sum();
                prop_assert_eq!(recount, p.memory());
            }
            prop_assert!(p.tracked_connections() <= 4);
        }
    }
}
