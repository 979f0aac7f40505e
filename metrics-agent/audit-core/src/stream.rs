//! Streamed response bodies parsed as their bytes arrive: server-sent
//! events, the elements of a JSON-array stream (Gemini without `alt=sse`),
//! NDJSON lines (Ollama) or AWS event-stream messages (Bedrock), each handed
//! to the LLM interpretation (`llm::StreamInterpreter`) and then forgotten.
//! Memory per connection is bounded by the largest single event, itself
//! capped: a longer event is skipped and counted.

use serde_json::Value;

use super::{
    eventstream::Decoder,
    llm::{LlmRequest, LlmResponse, StreamInterpreter},
};

/// How the body is split.
#[derive(Debug)]
enum Shape {
    /// `text/event-stream`.
    Sse,
    /// A JSON array whose elements are written one by one; `Undecided`
    /// until the first non-blank byte says whether the body is an array.
    Undecided,
    Array,
    /// Newline-delimited JSON (`application/x-ndjson`): one object a line.
    Ndjson,
    /// `application/vnd.amazon.eventstream` (binary, CRC-checked messages).
    EventStream(Box<Decoder>),
    /// Not a stream after all: the body is kept (up to the cap) for the
    /// ordinary parser.
    Whole,
}

/// One streamed body's parser state.
#[derive(Debug)]
pub struct StreamBody {
    shape: Shape,
    interpreter: StreamInterpreter,
    /// The current line (SSE) or element (array), at most `max_event` bytes.
    pending: Vec<u8>,
    /// SSE: the current event's fields.
    event: Option<String>,
    data: Option<String>,
    /// SSE: the previous byte was CR (a CRLF's LF is not a second line end).
    after_cr: bool,
    /// The current event or element is over the cap: skipped to its end.
    skipping: bool,
    /// Array: nesting depth inside the current element, string/escape state.
    depth: u32,
    in_string: bool,
    escaped: bool,
    max_event: usize,
    /// Events or elements skipped because they exceeded `max_event`.
    pub oversized: u64,
    /// Event-stream messages skipped for a wrong CRC or header, and preludes
    /// that lost the framing (Bedrock).
    pub framing_errors: u64,
}

impl StreamBody {
    /// A server-sent event stream answering `request`.
    pub fn sse(request: &LlmRequest, max_event: usize) -> Self {
        Self::new(Shape::Sse, request, max_event)
    }

    /// A JSON body answering a streaming `request`: an array is parsed
    /// element by element, anything else is kept whole (up to `max_event`).
    pub fn json(request: &LlmRequest, max_event: usize) -> Self {
        Self::new(Shape::Undecided, request, max_event)
    }

    /// An NDJSON stream (Ollama) answering `request`.
    pub fn ndjson(request: &LlmRequest, max_event: usize) -> Self {
        Self::new(Shape::Ndjson, request, max_event)
    }

    /// An AWS event stream (Bedrock) answering `request`.
    pub fn eventstream(request: &LlmRequest, max_event: usize) -> Self {
        Self::new(Shape::EventStream(Box::new(Decoder::new(max_event))), request, max_event)
    }

    /// The bytes fed next arrived at `ns` (kernel monotonic time): content
    /// events found in them are stamped with it.
    pub fn at(&mut self, ns: u64) {
        self.interpreter.at(ns);
    }

    fn new(shape: Shape, request: &LlmRequest, max_event: usize) -> Self {
        Self {
            shape,
            interpreter: StreamInterpreter::new(request),
            pending: Vec::new(),
            event: None,
            data: None,
            after_cr: false,
            skipping: false,
            depth: 0,
            in_string: false,
            escaped: false,
            max_event,
            oversized: 0,
            framing_errors: 0,
        }
    }

    /// Heap held now.
    pub fn memory(&self) -> usize {
        self.pending.capacity()
            + match &self.shape {
                Shape::EventStream(d) => d.memory(),
                _ => 0,
            }
            + self.event.as_ref().map_or(0, String::capacity)
            + self.data.as_ref().map_or(0, String::capacity)
    }

    /// Feeds decoded body bytes (chunk framing removed).
    pub fn feed(&mut self, bytes: &[u8]) {
        match &mut self.shape {
            Shape::Sse | Shape::Ndjson => self.sse_bytes(bytes),
            Shape::EventStream(decoder) => {
                let interpreter = &mut self.interpreter;
                decoder.feed(bytes, |m| interpreter.eventstream_message(&m));
                self.oversized = decoder.oversized;
                self.framing_errors = decoder.bad_messages - decoder.oversized + decoder.bad_preludes;
            }
            Shape::Undecided | Shape::Array => bytes.iter().for_each(|&b| self.array_byte(b)),
            Shape::Whole => self.keep(bytes),
        }
    }

    /// The body ended (`complete`: by its framing, not cut off): what the
    /// stream said; `Err(body)` when it was not a stream after all: the
    /// caller parses that body (kept up to the cap) instead.
    pub fn finish(mut self, complete: bool) -> Result<LlmResponse, Vec<u8>> {
        match self.shape {
            Shape::Whole => return Err(self.pending),
            Shape::Sse | Shape::Ndjson if complete => {
                self.end_line();
                self.dispatch();
            }
            _ => {}
        }
        Ok(self.interpreter.finish())
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = self.max_event.saturating_sub(self.pending.len());
        self.pending.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Splits SSE bytes into lines (LF, CR or CRLF), a run at a time.
    fn sse_bytes(&mut self, mut bytes: &[u8]) {
        while let Some((&first, rest)) = bytes.split_first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                bytes = rest;
                continue;
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.line_bytes(&bytes[..i]);
                    self.after_cr = bytes[i] == b'\r';
                    self.end_line();
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.line_bytes(bytes);
                    return;
                }
            }
        }
    }

    /// Part of the current line; beyond the cap the event is skipped.
    fn line_bytes(&mut self, part: &[u8]) {
        if self.skipping || part.is_empty() {
            return;
        }
        if self.pending.len() + part.len() + self.data.as_ref().map_or(0, String::len) > self.max_event {
            self.skip_event();
        } else {
            self.pending.extend_from_slice(part);
        }
    }

    /// The current event is over the cap: forget it up to its blank line.
    fn skip_event(&mut self) {
        self.oversized += 1;
        self.skipping = true;
        (self.event, self.data) = (None, None);
        self.pending = Vec::new();
    }

    /// A line ended: a field, or (empty) the end of an event.
    fn end_line(&mut self) {
        if matches!(self.shape, Shape::Ndjson) {
            if !std::mem::take(&mut self.skipping)
                && let Ok(v) = serde_json::from_slice::<Value>(&self.pending)
            {
                self.interpreter.ndjson_line(&v);
            }
            self.pending.clear();
            return;
        }
        if self.pending.is_empty() {
            if !std::mem::take(&mut self.skipping) {
                self.dispatch();
            }
            return;
        }
        if !self.skipping && !self.pending.starts_with(b":") {
            // Read where it lies: the line is copied only into the field it sets.
            let line = super::message::lossy(&self.pending);
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                _ => {}
            }
        }
        self.pending.clear();
    }

    fn dispatch(&mut self) {
        if let Some(data) = self.data.take() {
            self.interpreter.sse_event(self.event.as_deref(), &data);
        }
        self.event = None;
    }

    fn array_byte(&mut self, b: u8) {
        if matches!(self.shape, Shape::Whole) {
            self.keep(&[b]);
            return;
        }
        if matches!(self.shape, Shape::Undecided) {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => return,
                b'[' => {
                    self.shape = Shape::Array;
                    return;
                }
                _ => {
                    self.shape = Shape::Whole;
                    self.keep(&[b]);
                    return;
                }
            }
        }
        if self.depth == 0 {
            // Between elements: separators, blanks, the closing bracket.
            if matches!(b, b',' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                return;
            }
        }
        if !self.skipping {
            if self.pending.len() >= self.max_event {
                self.oversized += 1;
                self.skipping = true;
                self.pending = Vec::new();
            } else {
                self.pending.push(b);
            }
        }
        if self.in_string {
            match (self.escaped, b) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.in_string = false,
                _ => {}
            }
            return;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        if self.depth == 0 {
            // One element complete (objects and arrays; scalars end here too).
            if !std::mem::take(&mut self.skipping)
                && let Ok(v) = serde_json::from_slice::<Value>(&self.pending)
            {
                self.interpreter.array_element(&v);
            }
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::llm::{self, parse_request};

    fn chat() -> LlmRequest {
        parse_request("/v1/chat/completions", None, br#"{"model":"gpt-4o","stream":true}"#)
    }

    fn fed_in_pieces(mut s: StreamBody, body: &[u8], piece: usize) -> LlmResponse {
        for p in body.chunks(piece.max(1)) {
            s.feed(p);
        }
        s.finish(true).expect("a stream")
    }

    #[test]
    fn sse_in_any_pieces_gives_what_the_whole_body_gives() {
        let body = b"data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n: ping\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        let whole = llm::parse_response(&chat(), Some("text/event-stream"), body, true);
        for piece in [1, 2, 7, 4096] {
            assert_eq!(fed_in_pieces(StreamBody::sse(&chat(), 1024), body, piece), whole, "pieces of {piece}");
        }
        assert_eq!((whole.usage.input, whole.usage.output, whole.id.as_deref()), (Some(7), Some(3), Some("c1")));
    }

    #[test]
    fn an_event_over_the_cap_is_skipped_and_counted_and_the_rest_still_counts() {
        let big = format!("data: {{\"pad\":\"{}\"}}\n\n", "x".repeat(5000));
        let body =
            format!("{big}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2}}}}\n\n");
        let mut s = StreamBody::sse(&chat(), 1000);
        s.feed(body.as_bytes());
        assert!(s.memory() <= 2048, "{}", s.memory());
        assert_eq!(s.oversized, 1);
        let r = s.finish(true).unwrap();
        assert_eq!((r.usage.input, r.usage.output), (Some(1), Some(2)));
    }

    #[test]
    fn json_array_streams_element_by_element_and_plain_json_is_kept_whole() {
        let request = parse_request("/v1beta/models/gemini-2.0-flash:streamGenerateContent", None, b"{}");
        let body = br#"[{"candidates":[{"content":{"parts":[{"text":"a]\"}"}]}}]}
,{"candidates":[{"content":{"parts":[{"text":"b"}]}}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4},"modelVersion":"gemini-2.0-flash"}]"#;
        let whole = llm::parse_response(&request, Some("application/json"), body, true);
        for piece in [1, 3, 4096] {
            assert_eq!(fed_in_pieces(StreamBody::json(&request, 1024), body, piece), whole);
        }
        assert_eq!((whole.usage.input, whole.content_events), (Some(9), 2));
        let mut s = StreamBody::json(&request, 1024);
        s.feed(br#" {"error":{"status":"X"}}"#);
        assert_eq!(s.finish(true).unwrap_err(), br#"{"error":{"status":"X"}}"#);
    }

    #[test]
    fn ndjson_and_event_streams_in_any_pieces_give_what_the_whole_body_gives() {
        let ollama = parse_request("/api/chat", None, br#"{"model":"llama3.2"}"#);
        let body = b"{\"model\":\"llama3.2\",\"message\":{\"content\":\"Hi\"},\"done\":false}\n{\"model\":\"llama3.2\",\"done\":true,\"prompt_eval_count\":10,\"eval_count\":2}\n";
        let whole = llm::parse_response(&ollama, Some("application/x-ndjson"), body, true);
        for piece in [1, 5, 4096] {
            assert_eq!(fed_in_pieces(StreamBody::ndjson(&ollama, 1024), body, piece), whole);
        }
        assert_eq!((whole.usage.input, whole.usage.output, whole.content_events), (Some(10), Some(2), 1));

        let bedrock = parse_request("/model/amazon.nova-lite-v1:0/converse-stream", None, b"{}");
        let m = |kind: &str, payload: &str| {
            crate::eventstream::encode(&[(":event-type", kind), (":message-type", "event")], payload.as_bytes())
        };
        let mut corrupt = m("contentBlockDelta", r#"{"delta":{"text":"lost"}}"#);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x80;
        let body = [
            m("messageStart", r#"{"role":"assistant"}"#),
            m("contentBlockDelta", r#"{"delta":{"text":"Hi"}}"#),
            corrupt,
            m("metadata", r#"{"usage":{"inputTokens":5,"outputTokens":2}}"#),
        ]
        .concat();
        for piece in [1, 7, 4096] {
            let mut s = StreamBody::eventstream(&bedrock, 1024);
            for p in body.chunks(piece) {
                s.feed(p);
            }
            assert_eq!(s.framing_errors, 1, "the message with a bad CRC is counted");
            let r = s.finish(true).unwrap();
            assert_eq!((r.usage.input, r.usage.output, r.content_events, r.events), (Some(5), Some(2), 1, 3));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(body in prop::collection::vec(any::<u8>(), 0..3000), sse in any::<bool>()) {
            let mut s = if sse { StreamBody::sse(&chat(), 256) } else { StreamBody::json(&chat(), 256) };
            for p in body.chunks(37) {
                s.feed(p);
                prop_assert!(s.memory() <= 4 * 256 + 64, "{}", s.memory());
            }
            let _ = s.finish(true);
        }
    }
}
