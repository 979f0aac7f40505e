//! Records become GenAI spans (OpenTelemetry semantic conventions v1.41.0,
//! status Development): one span per record, named `{operation} {model}`,
//! `SERVER` for what the proxy served (client side) and `CLIENT` for what it
//! asked of a provider (upstream side).
//!
//! Trace ids: a client record whose request carried a valid W3C
//! `traceparent` joins that trace as a child of the caller's span; any other
//! gets a fresh random trace id. The upstream span of a paired exchange
//! (`pairing.upstream_seq`) is a child of its client span in the same trace.
//! An upstream record is published before its client record (the correlator
//! waits for it), so the `Assembler` holds upstream records up to `HOLD` for
//! their client; one left unpaired goes out as a span of its own (joining the
//! trace of the `traceparent` the proxy sent upstream, if any).
//!
//! Sampling follows the parent (OpenTelemetry's default
//! `parentbased_always_on`): a caller that says it did not record its span
//! (flag `00`) gets no span, nor does its upstream exchange.
//!
//! Spans carry no prompt or completion text (records hold none) and no
//! header value: only the ids of `traceparent` and the `Host` name.

use std::{
    collections::VecDeque,
    hash::{BuildHasher, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value},
    trace::v1::{Span, Status, span::SpanKind, status::StatusCode},
};

use crate::{audit::trace_context::TraceContext, records::RequestRecord};

/// How long an upstream record waits for its client record.
pub const HOLD: Duration = Duration::from_secs(3);
/// Upstream records held at most; beyond, the oldest goes out unpaired.
pub const MAX_HELD: usize = 4096;

/// `Span.flags`: the parent's remoteness is known, and it is remote.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Random trace and span ids: SipHash (keyed from the OS's random source
/// once, at start) of a counter, so no system call per id.
pub struct SpanIds {
    keys: std::hash::RandomState,
    counter: u64,
}

impl Default for SpanIds {
    fn default() -> Self {
        Self { keys: std::hash::RandomState::new(), counter: 0 }
    }
}

impl SpanIds {
    fn next(&mut self) -> u64 {
        loop {
            self.counter += 1;
            let mut h = self.keys.build_hasher();
            h.write_u64(self.counter);
            let v = h.finish();
            if v != 0 {
                return v;
            }
        }
    }

    /// A new trace id (16 bytes, never all zero).
    pub fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next().to_be_bytes());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }

    /// A new span id (8 bytes, never all zero).
    pub fn span_id(&mut self) -> [u8; 8] {
        self.next().to_be_bytes()
    }
}

/// Where a span sits: its trace, its own id and its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    /// The parent is the caller's span (from `traceparent`), not ours.
    pub remote_parent: bool,
    /// W3C trace flags (sampled: 1).
    pub trace_flags: u8,
}

/// Turns the record bus's records into spans, pairing upstream spans with
/// their client spans. Memory: at most `MAX_HELD` held records.
pub struct Assembler {
    ids: SpanIds,
    /// Upstream records waiting for their client, oldest first, with the
    /// time they go out alone.
    held: VecDeque<(Instant, Arc<RequestRecord>)>,
    /// Kernel monotonic time to Unix time, in ns.
    clock_offset_ns: i128,
    /// Follow the caller's sampled flag (`parentbased_always_on`).
    parent_based: bool,
}

impl Assembler {
    /// `clock_offset_ns` turns a record's kernel monotonic `start_ns` into
    /// Unix nanoseconds (`clock_offset()`).
    pub fn new(clock_offset_ns: i128, parent_based: bool) -> Self {
        Self { ids: SpanIds::default(), held: VecDeque::new(), clock_offset_ns, parent_based }
    }

    /// Upstream records held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes one record; returns the spans now complete.
    pub fn push(&mut self, record: Arc<RequestRecord>, now: Instant) -> Vec<Span> {
        let mut out = Vec::new();
        if record.side == "upstream" {
            if self.held.len() >= MAX_HELD
                && let Some((_, oldest)) = self.held.pop_front()
            {
                out.extend(self.alone(&oldest));
            }
            self.held.push_back((now + HOLD, record));
            return out;
        }
        let upstream = record
            .pairing
            .upstream_seq
            .and_then(|seq| self.held.iter().position(|(_, u)| u.pairing.seq == seq))
            .and_then(|i| self.held.remove(i))
            .map(|(_, u)| u);
        let Some(place) = self.place(record.trace_context) else {
            return out; // not sampled: neither side is recorded
        };
        out.push(span(&record, &place, self.clock_offset_ns));
        if let Some(u) = upstream {
            let child =
                Placement { span_id: self.ids.span_id(), parent: Some(place.span_id), remote_parent: false, ..place };
            out.push(span(&u, &child, self.clock_offset_ns));
        }
        out
    }

    /// Upstream records whose hold has passed, as spans of their own.
    pub fn expire(&mut self, now: Instant) -> Vec<Span> {
        let mut out = Vec::new();
        while self.held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, u) = self.held.pop_front().expect("checked");
            out.extend(self.alone(&u));
        }
        out
    }

    /// Everything still held (at shutdown).
    pub fn drain(&mut self) -> Vec<Span> {
        let held: Vec<_> = self.held.drain(..).collect();
        held.iter().filter_map(|(_, u)| self.alone(u)).collect()
    }

    fn alone(&mut self, record: &RequestRecord) -> Option<Span> {
        let place = self.place(record.trace_context)?;
        Some(span(record, &place, self.clock_offset_ns))
    }

    /// A new span in the caller's trace, or in a new trace; `None` when the
    /// caller did not sample it.
    fn place(&mut self, caller: Option<TraceContext>) -> Option<Placement> {
        let span_id = self.ids.span_id();
        match caller {
            Some(c) if self.parent_based && !c.sampled() => None,
            Some(c) => Some(Placement {
                trace_id: c.trace_id,
                span_id,
                parent: Some(c.parent_span_id),
                remote_parent: true,
                trace_flags: c.flags,
            }),
            None => Some(Placement {
                trace_id: self.ids.trace_id(),
                span_id,
                parent: None,
                remote_parent: false,
                trace_flags: 1,
            }),
        }
    }
}

/// Kernel monotonic time (the records' `start_ns`) to Unix time, in ns.
pub fn clock_offset() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// `host[:port]` (IPv6 in brackets) into `server.address` and `server.port`.
fn split_host(host: &str) -> (&str, Option<i64>) {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && (!name.contains(':') || name.ends_with(']')) => {
            (name, port.parse().ok())
        }
        _ => (host, None),
    };
    (name.trim_start_matches('[').trim_end_matches(']'), port)
}

/// The span of one record at `place`.
pub fn span(r: &RequestRecord, place: &Placement, clock_offset_ns: i128) -> Span {
    let start = (r.start_ns as i128 + clock_offset_ns).max(0) as u64;
    let ms = |v: f64| (v.max(0.0) * 1e6) as u64;
    let model = r.model_requested.as_deref().or(r.model_returned.as_deref());
    let name = match model {
        Some(m) => format!("{} {m}", r.operation),
        None => r.operation.to_string(),
    };
    let text = |s: &str| Value::StringValue(s.to_string());
    let int = |v: u64| Value::IntValue(v.min(i64::MAX as u64) as i64);
    let mut a = vec![kv("gen_ai.operation.name", text(r.operation)), kv("gen_ai.provider.name", text(r.provider))];
    let mut opt = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            a.push(kv(key, v));
        }
    };
    opt("gen_ai.request.model", r.model_requested.as_deref().map(text));
    opt("gen_ai.response.model", r.model_returned.as_deref().map(text));
    opt("gen_ai.response.id", r.pairing.request_id.as_deref().map(text));
    opt(
        "gen_ai.response.finish_reasons",
        (!r.finish_reasons.is_empty()).then(|| {
            let values = r.finish_reasons.iter().map(|f| AnyValue { value: Some(text(f)) }).collect();
            Value::ArrayValue(ArrayValue { values })
        }),
    );
    opt("gen_ai.usage.input_tokens", r.tokens.input.map(int));
    opt("gen_ai.usage.output_tokens", r.tokens.output.map(int));
    opt("gen_ai.usage.cache_read.input_tokens", r.tokens.cache_read.map(int));
    opt("gen_ai.usage.cache_creation.input_tokens", r.tokens.cache_creation.map(int));
    opt(
        "gen_ai.response.time_to_first_chunk",
        r.stream_timing.time_to_first_token_ms.map(|v| Value::DoubleValue(v / 1e3)),
    );
    let failed = r.status >= 400 || r.error_type.is_some();
    let error_type = r.error_type.clone().or_else(|| failed.then(|| r.status.to_string()));
    opt("error.type", error_type.as_deref().map(text));
    opt("http.response.status_code", (r.status > 0).then(|| int(u64::from(r.status))));
    if let Some(host) = r.server_address.as_deref() {
        let (address, port) = split_host(host);
        opt("server.address", (!address.is_empty()).then(|| text(address)));
        opt("server.port", port.map(Value::IntValue));
    }
    opt("url.path", (!r.endpoint.is_empty()).then(|| text(&r.endpoint)));
    opt("llm_proxy.side", Some(text(r.side)));
    opt("llm_proxy.streaming", Some(Value::BoolValue(r.streaming)));
    opt("llm_proxy.time_to_first_byte", Some(Value::DoubleValue(r.ttfb_ms.max(0.0) / 1e3)));
    opt("llm_proxy.cost_usd", r.cost_usd.map(|c| Value::StringValue(c.to_string())));
    Span {
        trace_id: place.trace_id.to_vec(),
        span_id: place.span_id.to_vec(),
        parent_span_id: place.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(place.trace_flags) | FLAG_HAS_IS_REMOTE | if place.remote_parent { FLAG_IS_REMOTE } else { 0 },
        name,
        kind: if r.side == "upstream" { SpanKind::Client } else { SpanKind::Server } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + ms(r.duration_ms),
        attributes: a,
        status: Some(Status {
            code: if failed { StatusCode::Error } else { StatusCode::Unset } as i32,
            message: error_type.unwrap_or_default(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit::llm::Usage, records::RecordBuilder};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
        s.attributes.iter().find(|k| k.key == key).and_then(|k| k.value.as_ref()?.value.as_ref())
    }

    fn upstream(seq: u64) -> RequestRecord {
        let mut r = RecordBuilder::new()
            .side("upstream")
            .start_ns(2_000_000)
            .duration_ms(8.0)
            .model("gpt-4o-mini")
            .server_address("api.openai.com:443")
            .build();
        r.pairing.seq = seq;
        r
    }

    fn client(upstream_seq: Option<u64>, traceparent: Option<&str>) -> RequestRecord {
        let mut r = RecordBuilder::new()
            .start_ns(1_000_000)
            .duration_ms(10.0)
            .trace_context(traceparent.and_then(TraceContext::parse))
            .model("gpt-4o-mini")
            .model_returned("gpt-4o-mini-2024-07-18")
            .usage(Usage { input: Some(12), output: Some(34), cache_read: Some(2), ..Usage::default() })
            .build();
        r.pairing.upstream_seq = upstream_seq;
        r
    }

    #[test]
    fn span_ids_are_random_and_never_zero() {
        let mut ids = SpanIds::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let t = ids.trace_id();
            assert_ne!(t, [0; 16]);
            assert!(seen.insert(t.to_vec()));
            assert!(seen.insert(ids.span_id().to_vec()));
        }
        assert_ne!(SpanIds::default().trace_id(), SpanIds::default().trace_id(), "keyed per generator");
    }

    #[test]
    fn a_record_becomes_a_genai_span() {
        let mut r = client(None, None);
        r.status = 429;
        r.error_type = Some("rate_limit_exceeded".into());
        r.server_address = Some("[::1]:8080".into());
        r.stream_timing.time_to_first_token_ms = Some(250.0);
        r.ttfb_ms = 100.0;
        let place =
            Placement { trace_id: [1; 16], span_id: [2; 8], parent: None, remote_parent: false, trace_flags: 1 };
        let s = span(&r, &place, 1_000);
        assert_eq!(s.name, "chat gpt-4o-mini");
        assert_eq!(s.kind, SpanKind::Server as i32);
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (1_001_000, 11_001_000));
        let text = |k: &str| match attr(&s, k) {
            Some(Value::StringValue(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(text("gen_ai.operation.name"), "chat");
        assert_eq!(text("gen_ai.provider.name"), "openai");
        assert_eq!(text("gen_ai.response.model"), "gpt-4o-mini-2024-07-18");
        assert_eq!(text("error.type"), "rate_limit_exceeded");
        assert_eq!(text("server.address"), "::1");
        assert_eq!(attr(&s, "server.port"), Some(&Value::IntValue(8080)));
        assert_eq!(attr(&s, "gen_ai.usage.input_tokens"), Some(&Value::IntValue(12)));
        assert_eq!(attr(&s, "gen_ai.usage.output_tokens"), Some(&Value::IntValue(34)));
        assert_eq!(attr(&s, "gen_ai.usage.cache_read.input_tokens"), Some(&Value::IntValue(2)));
        assert_eq!(attr(&s, "gen_ai.usage.cache_creation.input_tokens"), None, "unknown stays absent, never 0");
        assert_eq!(attr(&s, "http.response.status_code"), Some(&Value::IntValue(429)));
        assert_eq!(attr(&s, "gen_ai.response.time_to_first_chunk"), Some(&Value::DoubleValue(0.25)));
        assert_eq!(attr(&s, "llm_proxy.time_to_first_byte"), Some(&Value::DoubleValue(0.1)));
        assert_eq!(s.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
        assert!(s.parent_span_id.is_empty());
        // A 5xx without a provider error type is typed by its status.
        r.status = 503;
        r.error_type = None;
        assert_eq!(attr(&span(&r, &place, 0), "error.type"), Some(&Value::StringValue("503".into())));
        assert_eq!(split_host("gw.internal"), ("gw.internal", None));
        assert_eq!(split_host("10.0.0.1:80"), ("10.0.0.1", Some(80)));
        assert_eq!(split_host("::1"), ("::1", None), "a bare IPv6 address has no port");
    }

    #[test]
    fn finish_reasons_are_a_string_array_absent_when_unknown() {
        let place =
            Placement { trace_id: [1; 16], span_id: [2; 8], parent: None, remote_parent: false, trace_flags: 1 };
        let r = RecordBuilder::new().finish_reasons(&["stop", "length"]).build();
        let s = span(&r, &place, 0);
        let Some(Value::ArrayValue(a)) = attr(&s, "gen_ai.response.finish_reasons") else { panic!("{s:?}") };
        let values: Vec<_> = a.values.iter().map(|v| v.value.clone()).collect();
        assert_eq!(values, [Some(Value::StringValue("stop".into())), Some(Value::StringValue("length".into()))]);
        let none = span(&RecordBuilder::new().build(), &place, 0);
        assert_eq!(attr(&none, "gen_ai.response.finish_reasons"), None, "no empty array");
    }

    #[test]
    fn the_upstream_span_is_a_child_of_its_client_span_in_the_callers_trace() {
        let mut a = Assembler::new(0, true);
        let now = Instant::now();
        assert!(a.push(Arc::new(upstream(1)), now).is_empty(), "held for its client");
        let spans = a.push(Arc::new(client(Some(1), Some(TP))), now);
        assert_eq!(spans.len(), 2);
        let (c, u) = (&spans[0], &spans[1]);
        let caller = TraceContext::parse(TP).unwrap();
        assert_eq!(c.trace_id, caller.trace_id.to_vec(), "the client span joins the caller's trace");
        assert_eq!(c.parent_span_id, caller.parent_span_id.to_vec());
        assert_eq!(c.flags, 0x301, "sampled, parent known to be remote");
        assert_eq!(u.trace_id, c.trace_id);
        assert_eq!(u.parent_span_id, c.span_id, "upstream under client");
        assert_eq!(u.flags, 0x101);
        assert_eq!(u.kind, SpanKind::Client as i32);
        assert_ne!(u.span_id, c.span_id);
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn without_traceparent_a_fresh_trace_and_unpaired_upstreams_go_out_alone() {
        let mut a = Assembler::new(0, true);
        let now = Instant::now();
        a.push(Arc::new(upstream(1)), now);
        a.push(Arc::new(upstream(2)), now);
        let spans = a.push(Arc::new(client(Some(2), None)), now);
        assert_eq!(spans.len(), 2);
        assert!(spans[0].parent_span_id.is_empty() && spans[0].trace_id.len() == 16);
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert!(a.expire(now + HOLD / 2).is_empty(), "upstream 1 still waits");
        let alone = a.expire(now + HOLD);
        assert_eq!(alone.len(), 1);
        assert!(alone[0].parent_span_id.is_empty());
        assert_ne!(alone[0].trace_id, spans[0].trace_id);
        // A client record whose upstream already left still gets its span.
        assert_eq!(a.push(Arc::new(client(Some(1), None)), now).len(), 1);
    }

    #[test]
    fn an_unsampled_caller_gets_no_spans_unless_sampling_ignores_it() {
        let unsampled = TP.replace("-01", "-00");
        let mut a = Assembler::new(0, true);
        let now = Instant::now();
        a.push(Arc::new(upstream(1)), now);
        assert!(a.push(Arc::new(client(Some(1), Some(&unsampled))), now).is_empty());
        assert_eq!(a.held(), 0, "its upstream record is let go too");
        let mut always = Assembler::new(0, false);
        always.push(Arc::new(upstream(1)), now);
        let spans = always.push(Arc::new(client(Some(1), Some(&unsampled))), now);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].flags & 0xff, 0, "the caller's flags are kept");
    }

    #[test]
    fn held_upstream_records_are_bounded() {
        let mut a = Assembler::new(0, true);
        let now = Instant::now();
        let mut out = 0;
        for seq in 1..=(MAX_HELD as u64 + 10) {
            out += a.push(Arc::new(upstream(seq)), now).len();
        }
        assert_eq!((a.held(), out), (MAX_HELD, 10), "the oldest go out alone");
        assert_eq!(a.drain().len(), MAX_HELD);
    }
}
