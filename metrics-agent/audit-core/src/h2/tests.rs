//! HTTP/2 connections through the whole pipeline: records as for HTTP/1.1.

use loona_hpack::Encoder;
use metrics_common::{
    capture::{ChunkHeader, DIR_READ, DIR_WRITE, KIND_CLOSE, KIND_DATA},
    conn::SIDE_CLIENT,
};
use proptest::prelude::*;

use super::{MAX_STREAMS, frame::*};
use crate::pipeline::{Pipeline, RequestRecord};

/// An HTTP/2 connection as the proxy sees it (a client-side one unless
/// `side` says otherwise).
struct Wire {
    conn: u64,
    side: u8,
    provider: u8,
    offsets: [u64; 2],
    encoders: [Encoder<'static>; 2],
}

impl Wire {
    fn new(conn: u64) -> Self {
        Self { conn, side: SIDE_CLIENT, provider: 0, offsets: [0, 0], encoders: [Encoder::new(), Encoder::new()] }
    }

    /// Request bytes (`request`) or response bytes, at time `ms`: read on a
    /// client-side connection, written on an upstream one.
    fn send(&mut self, p: &mut Pipeline, request: bool, ms: u64, bytes: &[u8]) -> Vec<RequestRecord> {
        let dir = usize::from(!request);
        let read = request == (self.side == SIDE_CLIENT);
        let h = ChunkHeader {
            conn_id: self.conn,
            offset: self.offsets[dir],
            ts_ns: ms * 1_000_000,
            direction: if read { DIR_READ } else { DIR_WRITE },
            side: self.side,
            provider: self.provider,
            kind: KIND_DATA,
            len: bytes.len() as u32,
            sample_every: 1,
            ..ChunkHeader::default()
        };
        self.offsets[dir] += bytes.len() as u64;
        p.on_event(&h, bytes)
    }

    fn headers(&mut self, request: bool, fields: &[(&str, &str)]) -> Vec<u8> {
        self.encoders[usize::from(!request)].encode(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }
}

fn request_fields<'a>(path: &'a str, session: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "gw.internal"),
        (":path", path),
        ("content-type", "application/json"),
        ("x-session-id", session),
    ]
}

const OPENAI_BODY: &str = r#"{"model":"gpt-4o","usage":{"prompt_tokens":11,"completion_tokens":22}}"#;

#[test]
fn concurrent_streams_become_records_like_http1_exchanges() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(1);
    let mut bytes = PREFACE.to_vec();
    // The client lets the server's encoder use an 8 KiB table.
    bytes.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x20, 0]));
    assert!(w.send(&mut p, true, 0, &bytes).is_empty());
    assert!(w.send(&mut p, false, 0, &frame(SETTINGS, 0, 0, &[])).is_empty());

    // Stream 1: a plain request; its header block split over CONTINUATION,
    // its body padded.
    let block = w.headers(true, &request_fields("/v1/chat/completions", "s1"));
    let (a, b) = block.split_at(block.len() / 2);
    let mut bytes = frame(HEADERS, 0, 1, a);
    bytes.extend(frame(CONTINUATION, FLAG_END_HEADERS, 1, b));
    let mut padded = vec![4];
    padded.extend_from_slice(br#"{"model":"gpt-4o"}"#);
    padded.extend_from_slice(&[0; 4]);
    bytes.extend(frame(DATA, FLAG_PADDED | FLAG_END_STREAM, 1, &padded));
    assert!(w.send(&mut p, true, 10, &bytes).is_empty());

    // Stream 3: a streamed Anthropic request, sent while stream 1 waits.
    let block = w.headers(true, &request_fields("/v1/messages", "s1"));
    let mut bytes =
        frame(HEADERS, FLAG_END_HEADERS | FLAG_PRIORITY, 3, &[[0, 0, 0, 0, 15].as_slice(), &block].concat());
    bytes.extend(frame(DATA, FLAG_END_STREAM, 3, br#"{"model":"claude-sonnet-4-5","stream":true}"#));
    assert!(w.send(&mut p, true, 20, &bytes).is_empty());

    // Stream 3 answers first, as a stream of events over DATA frames.
    let block = w.headers(false, &[(":status", "200"), ("content-type", "text/event-stream")]);
    assert!(w.send(&mut p, false, 50, &frame(HEADERS, FLAG_END_HEADERS, 3, &block)).is_empty());
    let events = [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":30}}\n\n",
    ];
    assert!(w.send(&mut p, false, 60, &frame(DATA, 0, 3, events[0].as_bytes())).is_empty());
    // Stream 1's response (its header block reuses the dynamic table).
    let block = w.headers(false, &[(":status", "200"), ("content-type", "application/json")]);
    let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 1, &block);
    bytes.extend(frame(DATA, FLAG_END_STREAM, 1, OPENAI_BODY.as_bytes()));
    let first = w.send(&mut p, false, 70, &bytes);
    let last = w.send(&mut p, false, 90, &frame(DATA, FLAG_END_STREAM, 3, events[1].as_bytes()));

    assert_eq!(first.len(), 1);
    let r = &first[0];
    assert_eq!((r.provider, r.status, r.streaming), ("openai", 200, false));
    assert_eq!((r.tokens.input, r.tokens.output), (Some(11), Some(22)));
    assert_eq!((r.ttfb_ms, r.duration_ms), (60.0, 60.0));
    assert_eq!((r.endpoint.as_str(), r.session_id.as_deref()), ("/v1/chat/completions", Some("s1")));
    assert_eq!(last.len(), 1);
    let r = &last[0];
    assert_eq!((r.provider, r.status, r.streaming), ("anthropic", 200, true));
    assert_eq!((r.tokens.input, r.tokens.output), (Some(7), Some(30)));
    assert_eq!((r.ttfb_ms, r.duration_ms), (30.0, 70.0));
    assert_eq!(r.session_id.as_deref(), Some("s1"), "an indexed field from the dynamic table");
    assert_eq!((p.stats.h2.connections, p.stats.h2.streams, p.stats.h2.broken_connections), (1, 2, 0));
    assert_eq!(p.tracked_connections(), 1, "finished streams release their state");
}

#[test]
fn an_error_status_in_a_headers_only_response_and_huffman_coded_fields() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(3);
    // RFC 7541 C.4.1: GET http://www.example.com/, Huffman-coded.
    let block = [0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block));
    w.send(&mut p, true, 1, &bytes);
    // `:status: 429` as nginx writes it: literal with indexing, name index 8.
    let r = w.send(&mut p, false, 3, &frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, b"\x48\x03429"));
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].status, r[0].endpoint.as_str(), r[0].ttfb_ms), (429, "/", 2.0));
}

#[test]
fn an_upstream_connection_gives_upstream_records_of_its_configured_provider() {
    let mut p = Pipeline::new(1 << 20).with_configured_providers(&[(2, "anthropic".into())]);
    let mut w = Wire::new(17);
    (w.side, w.provider) = (metrics_common::conn::SIDE_UPSTREAM, 2);
    let block = w.headers(true, &request_fields("/v1/messages", "s"));
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &block));
    bytes.extend(frame(DATA, FLAG_END_STREAM, 1, br#"{"model":"claude-sonnet-4-5"}"#));
    w.send(&mut p, true, 1, &bytes);
    let block = w.headers(false, &[(":status", "200"), ("content-type", "application/json")]);
    let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 1, &block);
    let body = r#"{"model":"claude-sonnet-4-5","usage":{"input_tokens":3,"output_tokens":4}}"#;
    bytes.extend(frame(DATA, FLAG_END_STREAM, 1, body.as_bytes()));
    let r = w.send(&mut p, false, 5, &bytes);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!((r.side, r.provider, r.provider_slot), ("upstream", "anthropic", Some(2)));
    assert_eq!((r.tokens.input, r.tokens.output, r.ttfb_ms), (Some(3), Some(4), 4.0));
}

#[test]
fn a_connection_whose_server_speaks_first_is_recognised() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(15);
    // nginx over TLS writes its SETTINGS before it reads the preface.
    assert!(w.send(&mut p, false, 0, &frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 0x80])).is_empty());
    let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block));
    w.send(&mut p, true, 1, &bytes);
    let block = w.headers(false, &[(":status", "200")]);
    let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 1, &block);
    bytes.extend(frame(DATA, FLAG_END_STREAM, 1, OPENAI_BODY.as_bytes()));
    let r = w.send(&mut p, false, 2, &bytes);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].status, r[0].tokens.output), (200, Some(22)));
    assert_eq!(p.stats.h2.connections, 1);
}

#[test]
fn streams_reset_or_cut_by_goaway_before_their_response_head_give_no_records() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(5);
    let mut bytes = PREFACE.to_vec();
    for id in [1, 3, 5] {
        let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
        bytes.extend(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, id, &block));
    }
    w.send(&mut p, true, 1, &bytes);
    assert!(w.send(&mut p, true, 2, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 8])).is_empty());
    assert!(w.send(&mut p, false, 3, &frame(GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0])).is_empty());
    assert_eq!(p.stats.h2.reset_streams, 2);
    // Stream 3 is still answered.
    let block = w.headers(false, &[(":status", "200")]);
    let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 3, &block);
    bytes.extend(frame(DATA, FLAG_END_STREAM, 3, OPENAI_BODY.as_bytes()));
    assert_eq!(w.send(&mut p, false, 4, &bytes).len(), 1);
    assert_eq!(p.tracked_connections(), 1);
    let close = ChunkHeader { conn_id: 5, kind: KIND_CLOSE, side: SIDE_CLIENT, ..ChunkHeader::default() };
    assert!(p.on_event(&close, &[]).is_empty());
    assert_eq!((p.tracked_connections(), p.memory()), (0, 0));
}

/// The 429 of the Go HTTP/2 upstream test, as nginx sends it: its body
/// whole by its `content-length` in one DATA frame, END_STREAM in an empty
/// DATA frame of its own.
const RATE_LIMITED: &str =
    r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;

/// One frame of the Go upstream exchange below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum GoFrame {
    RequestHeaders,
    RequestBody,
    Reset,
    ResponseHeaders,
    ResponseBody,
    ResponseEnd,
}

/// Every order the capture can report the frames of a Go transport's
/// exchange in, when Go resets the stream: each direction in its own order
/// (request: HEADERS, DATA with END_STREAM, RST_STREAM; response: HEADERS,
/// DATA, empty DATA with END_STREAM), the request's HEADERS first (Go's
/// `Write` of the body follows it), and the reset after the response body
/// was read. The request's DATA may still come after the response: Go
/// writes frames from more than one goroutine, and a reordering the
/// pipeline must tolerate whatever reports them.
fn go_reset_orders() -> Vec<Vec<GoFrame>> {
    use GoFrame::*;
    let mut orders = Vec::new();
    // Positions (of the 5 after the HEADERS) of the request's DATA and reset.
    for data in 0..5 {
        for reset in data + 1..5 {
            let mut response = [ResponseHeaders, ResponseBody, ResponseEnd].into_iter();
            let order: Vec<GoFrame> = std::iter::once(RequestHeaders)
                .chain((0..5).map(|i| match i {
                    i if i == data => RequestBody,
                    i if i == reset => Reset,
                    _ => response.next().unwrap(),
                }))
                .collect();
            let at = |f: GoFrame| order.iter().position(|&g| g == f);
            if at(Reset) > at(ResponseBody) {
                orders.push(order);
            }
        }
    }
    orders
}

/// Go's transport (the upstream side of a Go gateway, h2 over crypto/tls to
/// nginx) cancels a stream (RST_STREAM CANCEL) whose caller stopped reading
/// the body at its declared length and whose own client went away, when
/// nginx's END_STREAM (an empty DATA frame of its own) had not come yet.
/// Seen with Go 1.19, 1.22 and 1.23 (`GODEBUG=http2debug=2`: about one 429
/// in six when the client closes right after it). The answer was whole:
/// in every order the capture can report the frames in, the exchange gives
/// one record, with the 429 and its error, timed by the response's bytes
/// (not by the reset); frames after the reset add nothing.
#[test]
fn a_reset_after_a_response_whole_by_its_length_still_gives_its_record() {
    use GoFrame::*;
    let orders = go_reset_orders();
    assert_eq!(orders.len(), 7);
    for order in orders {
        let mut p = Pipeline::new(1 << 20).with_configured_providers(&[(1, "openai".into())]);
        let mut w = Wire::new(19);
        (w.side, w.provider) = (metrics_common::conn::SIDE_UPSTREAM, 1);
        w.send(&mut p, true, 0, PREFACE);
        assert!(w.send(&mut p, false, 0, &frame(SETTINGS, 0, 0, &[])).is_empty());
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"q"}]}"#;
        let mut records = Vec::new();
        let mut times = std::collections::HashMap::new();
        for (i, &f) in order.iter().enumerate() {
            let ms = 10 * (i as u64 + 1);
            times.insert(f, ms);
            let (request, bytes) = match f {
                RequestHeaders => {
                    let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
                    (true, frame(HEADERS, FLAG_END_HEADERS, 1, &block))
                }
                RequestBody => (true, frame(DATA, FLAG_END_STREAM, 1, body)),
                Reset => (true, frame(RST_STREAM, 0, 1, &[0, 0, 0, 8])),
                ResponseHeaders => {
                    let length = RATE_LIMITED.len().to_string();
                    let fields =
                        [(":status", "429"), ("content-type", "application/json"), ("content-length", &length)];
                    (false, frame(HEADERS, FLAG_END_HEADERS, 1, &w.headers(false, &fields)))
                }
                ResponseBody => (false, frame(DATA, 0, 1, RATE_LIMITED.as_bytes())),
                ResponseEnd => (false, frame(DATA, FLAG_END_STREAM, 1, &[])),
            };
            records.extend(w.send(&mut p, request, ms, &bytes));
        }
        assert_eq!(records.len(), 1, "{order:?}");
        let r = &records[0];
        assert_eq!((r.side, r.provider, r.status), ("upstream", "openai", 429), "{order:?}");
        assert_eq!(r.model_requested.as_deref(), Some("gpt-4o-mini"), "{order:?}");
        assert!(!r.truncated, "{order:?}: whole by its length");
        assert_eq!(r.error_type.as_deref(), Some("rate_limit_exceeded"), "{order:?}");
        // The response ended with its END_STREAM when that came before the
        // reset, else with its body's bytes.
        let end = if times[&ResponseEnd] < times[&Reset] { ResponseEnd } else { ResponseBody };
        let ms = |f: GoFrame| (times[&f] - times[&RequestHeaders]) as f64;
        assert_eq!((r.ttfb_ms, r.duration_ms), (ms(ResponseHeaders), ms(end)), "{order:?}");
        assert_eq!((p.stats.h2.streams, p.stats.orphan_responses), (1, 0), "{order:?}");
        assert_eq!(p.tracked_connections(), 1, "{order:?}: the stream's state is released");
    }
}

/// A JSON answer longer than the capture cap, over DATA frames (as a
/// proxy relays a 320 KiB answer, past the default 256 KiB): the record
/// says truncated and keeps the id and model the body began with (the
/// correlator pairs by that id), with no usage (it came after the cut);
/// with a cap it fits in, the same stream gives the whole record.
#[test]
fn a_json_answer_past_the_capture_cap_keeps_its_id_and_model() {
    let answer = format!(
        r#"{{"id":"chatcmpl-9","object":"chat.completion","model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":34}}}}"#,
        "x".repeat(40_000)
    );
    for cap in [16 * 1024, 1 << 20] {
        let mut p = Pipeline::new(cap);
        let mut w = Wire::new(35);
        let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &block));
        bytes.extend(frame(DATA, FLAG_END_STREAM, 1, br#"{"model":"gpt-4o-mini","messages":[]}"#));
        assert!(w.send(&mut p, true, 1, &bytes).is_empty());
        let block = w.headers(false, &[(":status", "200"), ("content-type", "application/json")]);
        assert!(w.send(&mut p, false, 2, &frame(HEADERS, FLAG_END_HEADERS, 1, &block)).is_empty());
        // 16 KiB DATA frames, the last one with END_STREAM.
        let pieces: Vec<&[u8]> = answer.as_bytes().chunks(16 * 1024).collect();
        let mut records = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let flags = if i + 1 == pieces.len() { FLAG_END_STREAM } else { 0 };
            records.extend(w.send(&mut p, false, 3 + i as u64, &frame(DATA, flags, 1, piece)));
        }
        assert_eq!(records.len(), 1, "cap {cap}");
        let r = &records[0];
        let cut = cap < answer.len();
        assert_eq!((r.status, r.truncated, r.cut_short), (200, cut, false), "cap {cap}");
        assert_eq!(r.model_returned.as_deref(), Some("gpt-4o-mini"), "cap {cap}");
        assert_eq!(r.pairing.request_id.as_deref(), Some("chatcmpl-9"), "cap {cap}");
        let usage = if cut { (None, None) } else { (Some(12), Some(34)) };
        assert_eq!((r.tokens.input, r.tokens.output), usage, "cap {cap}");
        assert_eq!(r.duration_ms, (2 + pieces.len()) as f64 - 1.0, "cap {cap}: ends with END_STREAM");
        assert_eq!(p.stats.h2.broken_connections, 0);
    }
}

/// A server that answers before the request's end (here: a complete
/// response while the client's body has not ended) may then reset the
/// stream with NO_ERROR (RFC 9113 §8.1); the connection may also just
/// close. Either way the exchange gives its record, with the request's
/// body as far as it came.
#[test]
fn a_complete_answer_then_a_reset_or_close_before_the_request_ends_gives_its_record() {
    for close in [false, true] {
        let mut p = Pipeline::new(1 << 20);
        let mut w = Wire::new(21);
        let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &block));
        bytes.extend(frame(DATA, 0, 1, br#"{"model":"gpt-4o"}"#));
        assert!(w.send(&mut p, true, 1, &bytes).is_empty());
        let block = w.headers(false, &[(":status", "200"), ("content-type", "application/json")]);
        let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 1, &block);
        bytes.extend(frame(DATA, FLAG_END_STREAM, 1, OPENAI_BODY.as_bytes()));
        assert!(w.send(&mut p, false, 4, &bytes).is_empty(), "the request has not ended");
        let r = if close {
            let close = ChunkHeader { conn_id: 21, kind: KIND_CLOSE, side: SIDE_CLIENT, ..ChunkHeader::default() };
            p.on_event(&close, &[])
        } else {
            w.send(&mut p, false, 9, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 0]))
        };
        assert_eq!(r.len(), 1, "close: {close}");
        let r = &r[0];
        assert_eq!((r.status, r.model_requested.as_deref()), (200, Some("gpt-4o")), "close: {close}");
        assert_eq!((r.tokens.input, r.tokens.output, r.duration_ms), (Some(11), Some(22), 3.0), "close: {close}");
        assert!(!r.truncated && r.error_type.is_none(), "close: {close}: the response ended");
        assert_eq!(p.stats.early_responses, 1);
    }
}

/// A client that resets a stream in the middle of a streamed answer (it
/// went away): the status had come, so the exchange gives its record, with
/// what the stream carried up to the reset, marked `truncated`; its output
/// count so far (message_start's 1) is not the exchange's, so output, cost
/// and time per output token stay null. CANCEL is no error type. Frames
/// after the reset add nothing. A stream reset before its response head
/// gives none.
#[test]
fn a_stream_reset_after_its_response_head_gives_a_record_with_its_status() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(23);
    let mut bytes = PREFACE.to_vec();
    for id in [1, 3] {
        let block = w.headers(true, &request_fields("/v1/messages", "s"));
        bytes.extend(frame(HEADERS, FLAG_END_HEADERS, id, &block));
        bytes.extend(frame(DATA, FLAG_END_STREAM, id, br#"{"model":"claude-sonnet-4-5","stream":true}"#));
    }
    w.send(&mut p, true, 1, &bytes);
    let block = w.headers(false, &[(":status", "200"), ("content-type", "text/event-stream")]);
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n";
    let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 1, &block);
    bytes.extend(frame(DATA, 0, 1, start.as_bytes()));
    assert!(w.send(&mut p, false, 5, &bytes).is_empty());
    let r = w.send(&mut p, true, 8, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    assert!(w.send(&mut p, true, 8, &frame(RST_STREAM, 0, 3, &[0, 0, 0, 8])).is_empty(), "no response head yet");
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!((r.status, r.streaming, r.provider), (200, true, "anthropic"));
    assert_eq!((r.tokens.input, r.tokens.output, r.ttfb_ms, r.duration_ms), (Some(7), None, 4.0, 4.0));
    assert_eq!((r.truncated, r.error_type.as_deref()), (true, None));
    assert_eq!(r.stream_timing.time_per_output_token_ms, None);
    assert_eq!(priced(r), None, "no cost from a partial output count");
    let partial = RequestRecord { tokens: crate::usage::Usage { output: Some(1), ..r.tokens }, ..r.clone() };
    assert!(priced(&partial).is_some(), "the model is priced: output=1 would have given a cost");
    let late = frame(DATA, FLAG_END_STREAM, 1, b"event: message_stop\ndata: {}\n\n");
    assert!(w.send(&mut p, false, 9, &late).is_empty());
    assert_eq!((p.stats.h2.reset_streams, p.tracked_connections()), (2, 1));
}

/// The cost the built-in price table gives a record.
fn priced(r: &RequestRecord) -> Option<rust_decimal::Decimal> {
    let prices = crate::cost::PriceTable::load(None).unwrap();
    let model = r.model_returned.as_deref().or(r.model_requested.as_deref()).unwrap();
    prices.cost(model, &r.tokens)
}

/// An Anthropic stream's request on stream `id`, and its response head
/// with message_start (input 7, output 1 so far): `(request, response)`
/// bytes.
fn anthropic_stream_start(w: &mut Wire, id: u32, preface: bool) -> (Vec<u8>, Vec<u8>) {
    let mut request = if preface { PREFACE.to_vec() } else { Vec::new() };
    let block = w.headers(true, &request_fields("/v1/messages", "s"));
    request.extend(frame(HEADERS, FLAG_END_HEADERS, id, &block));
    request.extend(frame(DATA, FLAG_END_STREAM, id, br#"{"model":"claude-sonnet-4-5","stream":true}"#));
    let block = w.headers(false, &[(":status", "200"), ("content-type", "text/event-stream")]);
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n";
    let mut response = frame(HEADERS, FLAG_END_HEADERS, id, &block);
    response.extend(frame(DATA, 0, id, start.as_bytes()));
    (request, response)
}

/// A server that resets a stream mid-body with an error code: the record
/// is truncated, its error type names the code, output and cost are null.
#[test]
fn a_server_reset_mid_body_with_an_error_code_names_it_in_a_truncated_record() {
    for (code, error) in [(2u8, Some("h2_internal_error")), (7, Some("h2_refused_stream")), (0, None), (8, None)] {
        let mut p = Pipeline::new(1 << 20);
        let mut w = Wire::new(27);
        let (request, response) = anthropic_stream_start(&mut w, 1, true);
        w.send(&mut p, true, 1, &request);
        assert!(w.send(&mut p, false, 5, &response).is_empty());
        let r = w.send(&mut p, false, 9, &frame(RST_STREAM, 0, 1, &[0, 0, 0, code]));
        assert_eq!(r.len(), 1, "code {code}");
        let r = &r[0];
        assert_eq!((r.status, r.truncated, r.error_type.as_deref()), (200, true, error), "code {code}");
        assert_eq!((r.tokens.input, r.tokens.output, priced(r)), (Some(7), None, None), "code {code}");
        assert_eq!(r.duration_ms, 4.0, "timed by the response's last bytes, code {code}");
    }
}

/// A response whose body stopped short of its content-length when the
/// stream was reset is cut too; one whole by its length is not.
#[test]
fn a_reset_short_of_the_declared_length_is_truncated() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(29);
    let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block));
    w.send(&mut p, true, 1, &bytes);
    let length = OPENAI_BODY.len().to_string();
    let block =
        w.headers(false, &[(":status", "200"), ("content-type", "application/json"), ("content-length", &length)]);
    let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 1, &block);
    bytes.extend(frame(DATA, 0, 1, &OPENAI_BODY.as_bytes()[..10]));
    assert!(w.send(&mut p, false, 3, &bytes).is_empty());
    let r = w.send(&mut p, false, 4, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 2]));
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].truncated, r[0].error_type.as_deref()), (true, Some("h2_internal_error")));
    assert_eq!((r[0].tokens.input, r[0].tokens.output), (None, None));
}

/// A server's GOAWAY whose last stream id is below a stream that already
/// has its response head cuts that stream: one record, truncated, with the
/// GOAWAY's error code; the connection's close then adds none. A reset
/// stream followed by the close gives one record too.
#[test]
fn a_goaway_or_reset_then_close_gives_exactly_one_record() {
    for goaway in [true, false] {
        let mut p = Pipeline::new(1 << 20);
        let mut w = Wire::new(31);
        let (request, response) = anthropic_stream_start(&mut w, 1, true);
        w.send(&mut p, true, 1, &request);
        assert!(w.send(&mut p, false, 5, &response).is_empty());
        let r = if goaway {
            w.send(&mut p, false, 7, &frame(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 2]))
        } else {
            w.send(&mut p, true, 7, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]))
        };
        assert_eq!(r.len(), 1, "goaway: {goaway}");
        let error = goaway.then_some("h2_internal_error");
        assert_eq!((r[0].status, r[0].truncated, r[0].error_type.as_deref()), (200, true, error), "goaway: {goaway}");
        assert_eq!(r[0].tokens.output, None, "goaway: {goaway}");
        let close = ChunkHeader { conn_id: 31, kind: KIND_CLOSE, side: SIDE_CLIENT, ..ChunkHeader::default() };
        assert!(p.on_event(&close, &[]).is_empty(), "goaway: {goaway}");
        assert_eq!((p.tracked_connections(), p.memory()), (0, 0), "goaway: {goaway}");
    }
}

/// The connection closing in the middle of a streamed answer: one record,
/// truncated, with no error type (no code was sent).
#[test]
fn a_close_mid_body_gives_a_truncated_record() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(33);
    let (request, response) = anthropic_stream_start(&mut w, 1, true);
    w.send(&mut p, true, 1, &request);
    assert!(w.send(&mut p, false, 5, &response).is_empty());
    let close = ChunkHeader { conn_id: 33, kind: KIND_CLOSE, side: SIDE_CLIENT, ..ChunkHeader::default() };
    let r = p.on_event(&close, &[]);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].truncated, r[0].error_type.as_deref(), r[0].tokens.output), (true, None, None));
}

/// A client's GOAWAY names the last stream the server opened (pushed) that
/// it took, 0 when none: its own requests go on and are answered.
#[test]
fn a_client_goaway_ends_none_of_its_requests() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(25);
    let mut bytes = PREFACE.to_vec();
    for id in [1, 3] {
        let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
        bytes.extend(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, id, &block));
    }
    bytes.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]));
    w.send(&mut p, true, 1, &bytes);
    let mut records = 0;
    for id in [1, 3] {
        let block = w.headers(false, &[(":status", "200")]);
        let mut bytes = frame(HEADERS, FLAG_END_HEADERS, id, &block);
        bytes.extend(frame(DATA, FLAG_END_STREAM, id, OPENAI_BODY.as_bytes()));
        records += w.send(&mut p, false, 3, &bytes).len();
    }
    assert_eq!((records, p.stats.h2.reset_streams), (2, 0));
}

#[test]
fn streams_in_flight_are_bounded_and_evictions_counted() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(7);
    w.send(&mut p, true, 0, PREFACE);
    for i in 0..(MAX_STREAMS as u32 + 10) {
        let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
        w.send(&mut p, true, 1, &frame(HEADERS, FLAG_END_HEADERS, 2 * i + 1, &block));
    }
    assert_eq!(p.stats.h2.evicted_streams, 10);
    assert_eq!(p.tracked_connections(), 1 + MAX_STREAMS);
}

#[test]
fn a_gap_or_an_hpack_error_stops_the_connection_and_is_counted() {
    let mut p = Pipeline::new(1 << 20);
    let mut w = Wire::new(9);
    let block = w.headers(true, &request_fields("/v1/chat/completions", "s"));
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &block));
    w.send(&mut p, true, 0, &bytes);
    w.offsets[0] += 100; // bytes lost
    w.send(&mut p, true, 1, &frame(DATA, FLAG_END_STREAM, 1, b"{}"));
    assert_eq!(p.stats.h2.broken_connections, 1);
    assert_eq!(p.tracked_connections(), 1, "the stream went, the connection stays ignored");

    let mut w = Wire::new(11);
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff, 0x0f])); // index out of range
    w.send(&mut p, true, 0, &bytes);
    assert_eq!(p.stats.h2.broken_connections, 2);
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic_and_stay_bounded(
        frames in prop::collection::vec((any::<bool>(), 0u8..12, any::<u8>(), 0u32..8, prop::collection::vec(any::<u8>(), 0..300)), 0..40)
    ) {
        let mut p = Pipeline::new(4096).with_memory_budget(512 * 1024);
        let mut w = Wire::new(13);
        w.send(&mut p, true, 0, PREFACE);
        for (request, kind, flags, stream, payload) in frames {
            let _ = w.send(&mut p, request, 1, &frame(kind, flags, stream, &payload));
            prop_assert!(p.memory() <= 512 * 1024);
        }
    }
}
