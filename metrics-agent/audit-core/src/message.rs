//! Incremental HTTP/1.1 message parsing over one direction of a connection:
//! bytes go in as they arrive, complete messages come out (keep-alive and
//! pipelining included). Content-Length, chunked and close-delimited bodies;
//! bodies are kept up to a cap and marked truncated beyond it.

/// Largest head accepted; a longer one is malformed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers kept per message.
const MAX_HEADERS: usize = 96;

/// `String::from_utf8_lossy(bytes)`, valid UTF-8 checked first with
/// `str::from_utf8`, whose ASCII fast path std's lossy scan lacks (the
/// same text either way: borrowed when valid, replaced where not).
pub fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A parsed request or response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request: method and target; response: status and reason.
    pub start: StartLine,
    /// Every header's lower-cased name followed by its value, in one buffer
    /// (one allocation per head instead of two per header).
    text: String,
    /// Per header, in order: where its name ends and its value ends in `text`
    /// (the name starts where the previous value ended).
    ends: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, target: String },
    Response { status: u16 },
}

impl Head {
    /// Appends a header; its name is lower-cased.
    fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        self.text[start..].make_ascii_lowercase();
        let name_end = self.text.len() as u32;
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len() as u32));
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Every header as (lower-cased name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0usize;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let header = (&self.text[start..name_end], &self.text[name_end..value_end]);
            start = value_end;
            header
        })
    }

    /// Heap bytes the head holds.
    pub fn memory(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * size_of::<(u32, u32)>()
    }
}

/// One complete (or cut-off) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    /// Decoded body (chunk framing removed), at most the cap.
    pub body: Vec<u8>,
    /// The body was longer than the cap.
    pub truncated: bool,
    /// Bytes of the message on the wire (head and framing included).
    pub wire_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

#[derive(Debug)]
enum State {
    Head,
    Length {
        left: u64,
    },
    ChunkSize,
    ChunkData {
        left: u64,
    },
    ChunkDataEnd,
    Trailers,
    UntilClose,
    /// Unparseable: everything after is ignored.
    Broken,
}

/// Parses one direction of one connection.
#[derive(Debug)]
pub struct MessageParser {
    kind: Kind,
    body_cap: usize,
    state: State,
    buf: Vec<u8>,
    head: Option<Head>,
    body: Vec<u8>,
    truncated: bool,
    wire: u64,
    /// For responses: whether each pending request was HEAD (no body).
    head_requests: std::collections::VecDeque<bool>,
}

impl MessageParser {
    pub fn new(kind: Kind, body_cap: usize) -> Self {
        Self {
            kind,
            body_cap,
            state: State::Head,
            buf: Vec::new(),
            head: None,
            body: Vec::new(),
            truncated: false,
            wire: 0,
            head_requests: Default::default(),
        }
    }

    /// For a response parser: the next response answers a HEAD request.
    pub fn expect_response_to(&mut self, method: &str) {
        self.head_requests.push_back(method.eq_ignore_ascii_case("HEAD"));
    }

    /// Bytes buffered but not yet part of a complete message (bounded).
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.body.len()
    }

    /// A message has begun and is not complete yet (and can still be:
    /// not after unparseable bytes).
    pub fn in_message(&self) -> bool {
        !matches!(self.state, State::Broken) && (self.head.is_some() || !self.buf.is_empty())
    }

    /// Heap bytes this parser holds (allocated, not just used).
    pub fn memory(&self) -> usize {
        let head = self.head.as_ref().map_or(0, Head::memory);
        self.buf.capacity() + self.body.capacity() + head + self.head_requests.capacity()
    }

    /// Feeds bytes; returns the messages they completed.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let used = self.step(data, &mut out);
            if used == 0 {
                break;
            }
            data = &data[used..];
        }
        out
    }

    /// The head of the message being received, once complete.
    pub fn current_head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// Hands the body bytes received so far of the message in progress to
    /// `f` and forgets them (a stream parsed as it comes).
    pub fn drain_body(&mut self, f: impl FnOnce(&[u8])) {
        f(&self.body);
        self.body.clear();
    }

    /// `n` bytes of the stream passed without being captured (a body sent
    /// with `sendfile`, or beyond the capture cap). When they all fall in
    /// the current body, it is marked truncated and the messages this
    /// completes are returned; otherwise (None) the parser cannot know
    /// where it is and the caller restarts it.
    pub fn skip(&mut self, n: u64) -> Option<Vec<Message>> {
        match self.state {
            State::Length { left } if n <= left => {
                (self.wire, self.truncated) = (self.wire + n, true);
                self.state = State::Length { left: left - n };
                Some(if left == n { self.finish().into_iter().collect() } else { Vec::new() })
            }
            State::ChunkData { left } if n <= left => {
                (self.wire, self.truncated) = (self.wire + n, true);
                self.state = if left == n { State::ChunkDataEnd } else { State::ChunkData { left: left - n } };
                Some(Vec::new())
            }
            State::UntilClose => {
                (self.wire, self.truncated) = (self.wire + n, true);
                Some(Vec::new())
            }
            _ => None,
        }
    }

    /// The connection closed: a close-delimited body ends here.
    pub fn close(&mut self) -> Option<Message> {
        if matches!(self.state, State::UntilClose) { self.finish() } else { None }
    }

    /// The message in progress whose head is whole, cut where its bytes
    /// stopped (`truncated`): a request whose answer came while the rest of
    /// it was not captured (or never sent) and its connection closed.
    pub fn cut(&mut self) -> Option<Message> {
        if matches!(self.state, State::Head | State::Broken) {
            return None;
        }
        self.truncated = true;
        self.finish()
    }

    fn step(&mut self, data: &[u8], out: &mut Vec<Message>) -> usize {
        match self.state {
            State::Broken => data.len(),
            State::Head => self.step_head(data, out),
            State::Length { left } => {
                let n = (left as usize).min(data.len());
                self.keep(&data[..n]);
                let left = left - n as u64;
                self.state = State::Length { left };
                if left == 0 {
                    out.extend(self.finish());
                }
                n
            }
            State::UntilClose => {
                self.keep(data);
                data.len()
            }
            State::ChunkData { left } => {
                let n = (left as usize).min(data.len());
                self.keep(&data[..n]);
                let left = left - n as u64;
                self.state = if left == 0 { State::ChunkDataEnd } else { State::ChunkData { left } };
                n
            }
            State::ChunkSize | State::ChunkDataEnd | State::Trailers => self.step_line(data, out),
        }
    }

    /// Appends decoded body bytes up to the cap.
    fn keep(&mut self, bytes: &[u8]) {
        self.wire += bytes.len() as u64;
        let room = self.body_cap.saturating_sub(self.body.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn step_head(&mut self, data: &[u8], out: &mut Vec<Message>) -> usize {
        let before = self.buf.len();
        let take = data.len().min(MAX_HEAD_BYTES + 4 - before.min(MAX_HEAD_BYTES));
        // A head that arrives whole (the usual case) is parsed where it
        // lies; only a head split across chunks is gathered in `buf`.
        let (head, used) = if before == 0
            && let Some(end) = head_end(&data[..take], 0)
        {
            (parse_head(&data[..end], self.kind), end)
        } else {
            self.buf.extend_from_slice(&data[..take]);
            // Only the new bytes (and the 3 before them) can complete the blank line.
            let Some(end) = head_end(&self.buf, before.saturating_sub(3)) else {
                if self.buf.len() > MAX_HEAD_BYTES {
                    self.state = State::Broken;
                }
                return take;
            };
            let head = parse_head(&self.buf[..end], self.kind);
            self.release_buf();
            (head, end - before)
        };
        self.wire += (before + used) as u64;
        let Some(head) = head else {
            self.state = State::Broken;
            return used;
        };
        self.state = match self.body_framing(&head) {
            Framing::None => State::Length { left: 0 },
            Framing::Length(n) => State::Length { left: n },
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::UntilClose,
        };
        let interim =
            matches!(head.start, StartLine::Response { status } if (100..200).contains(&status) && status != 101);
        self.head = Some(head);
        if interim {
            // 100 Continue, 103 Early Hints: the final response follows.
            self.head = None;
            self.state = State::Head;
        } else if matches!(self.state, State::Length { left: 0 }) {
            out.extend(self.finish());
        }
        used
    }

    /// Empties the gathering buffer; a large one (a long head) is freed.
    fn release_buf(&mut self) {
        if self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    fn body_framing(&mut self, head: &Head) -> Framing {
        let chunked = head.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = head.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        match &head.start {
            StartLine::Request { .. } => {
                if chunked {
                    Framing::Chunked
                } else {
                    length.map_or(Framing::None, Framing::Length)
                }
            }
            StartLine::Response { status } => {
                if (100..200).contains(status) {
                    return Framing::None;
                }
                let head_request = self.head_requests.pop_front().unwrap_or(false);
                if head_request || *status == 204 || *status == 304 {
                    Framing::None
                } else if chunked {
                    Framing::Chunked
                } else {
                    length.map_or(Framing::Close, Framing::Length)
                }
            }
        }
    }

    /// Chunk-size lines, the CRLF after chunk data, trailers.
    fn step_line(&mut self, data: &[u8], out: &mut Vec<Message>) -> usize {
        let before = self.buf.len();
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            if before + data.len() > 4096 {
                self.state = State::Broken;
            } else {
                self.buf.extend_from_slice(data);
            }
            return data.len();
        };
        // A line that arrives whole is read where it lies (no copy).
        let (line_len, empty, size) = {
            let line: &[u8] = if before == 0 {
                &data[..=nl]
            } else {
                self.buf.extend_from_slice(&data[..=nl]);
                &self.buf
            };
            let text = lossy(line);
            let text = text.trim_end_matches(['\r', '\n']);
            let size = text.split(';').next().unwrap_or("").trim();
            (line.len(), text.is_empty(), u64::from_str_radix(size, 16))
        };
        self.release_buf();
        self.wire += line_len as u64;
        match self.state {
            State::ChunkDataEnd => self.state = State::ChunkSize,
            State::ChunkSize => match size {
                Ok(0) => self.state = State::Trailers,
                Ok(n) => self.state = State::ChunkData { left: n },
                Err(_) => self.state = State::Broken,
            },
            State::Trailers if empty => {
                out.extend(self.finish());
            }
            _ => {}
        }
        nl + 1
    }

    fn finish(&mut self) -> Option<Message> {
        let head = self.head.take()?;
        let message = Message {
            head,
            body: std::mem::take(&mut self.body),
            truncated: std::mem::take(&mut self.truncated),
            wire_bytes: std::mem::take(&mut self.wire),
        };
        self.state = State::Head;
        Some(message)
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// Where the head in `bytes` ends (just past its blank line, CRLF CRLF),
/// looking for the blank line from `from` on.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = bytes.get(at..)?.iter().position(|&b| b == b'\n') {
        let nl = at + i;
        if nl >= 3 && &bytes[nl - 3..=nl] == b"\r\n\r\n" {
            return Some(nl + 1);
        }
        at = nl + 1;
    }
    None
}

fn parse_head(bytes: &[u8], kind: Kind) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (start, parsed): (StartLine, &[httparse::Header]) = match kind {
        Kind::Request => {
            let mut req = httparse::Request::new(&mut headers);
            if !req.parse(bytes).ok()?.is_complete() {
                return None;
            }
            let start = StartLine::Request { method: req.method?.to_string(), target: req.path?.to_string() };
            (start, req.headers)
        }
        Kind::Response => {
            let mut resp = httparse::Response::new(&mut headers);
            if !resp.parse(bytes).ok()?.is_complete() {
                return None;
            }
            (StartLine::Response { status: resp.code? }, resp.headers)
        }
    };
    let mut head = Head {
        start,
        text: String::with_capacity(parsed.iter().map(|h| h.name.len() + h.value.len()).sum()),
        ends: Vec::with_capacity(parsed.len()),
    };
    for h in parsed {
        head.push(h.name, &lossy(h.value));
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn all_at_once_and_byte_by_byte(kind: Kind, data: &[u8]) -> Vec<Message> {
        let mut whole = MessageParser::new(kind, 1 << 20);
        let a = whole.feed(data);
        let mut bytes = MessageParser::new(kind, 1 << 20);
        let b: Vec<Message> = data.iter().flat_map(|x| bytes.feed(std::slice::from_ref(x))).collect();
        assert_eq!(a, b);
        a
    }

    #[test]
    fn keep_alive_requests_and_chunked_responses() {
        let reqs = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 2\r\n\r\n{}GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        let m = all_at_once_and_byte_by_byte(Kind::Request, reqs);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].body, b"{}");
        assert_eq!(m[0].head.header("host"), Some("api.openai.com"));
        assert_eq!(m[0].wire_bytes + m[1].wire_bytes, reqs.len() as u64);
        let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let m = all_at_once_and_byte_by_byte(Kind::Response, resp);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].body, b"hello world");
        assert_eq!(m[1].head.start, StartLine::Response { status: 204 });
    }

    #[test]
    fn bodies_beyond_the_cap_are_truncated_and_close_delimited_bodies_end_at_close() {
        let mut p = MessageParser::new(Kind::Response, 4);
        assert!(p.feed(b"HTTP/1.0 200 OK\r\n\r\nabcdefgh").is_empty());
        let m = p.close().unwrap();
        assert_eq!((m.body.as_slice(), m.truncated), (&b"abcd"[..], true));
    }

    #[test]
    fn head_responses_have_no_body() {
        let mut p = MessageParser::new(Kind::Response, 100);
        p.expect_response_to("HEAD");
        let m = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(m.len(), 2);
        assert!(m[0].body.is_empty());
    }

    #[test]
    fn bytes_skipped_inside_a_body_complete_it_and_other_gaps_do_not() {
        let mut p = MessageParser::new(Kind::Response, 100);
        assert!(p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab").is_empty());
        let m = p.skip(8).expect("inside the body");
        assert_eq!((m.len(), m[0].truncated, m[0].wire_bytes), (1, true, 49));
        assert_eq!(p.feed(b"HTTP/1.1 204 No Content\r\n\r\n").len(), 1);
        assert!(p.skip(1).is_none(), "a gap between messages cannot be placed");
        assert!(p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").is_empty());
        assert!(p.skip(4).is_none(), "a gap longer than the body left");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_memory_stays_bounded(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..40), kind in any::<bool>()) {
            let mut p = MessageParser::new(if kind { Kind::Request } else { Kind::Response }, 1024);
            for c in &chunks {
                let _ = p.feed(c);
                prop_assert!(p.buffered() <= MAX_HEAD_BYTES + 4 + 4096 + 1024);
            }
            let _ = p.close();
        }
    }
}
