//! HTTP/2 connections on the audit path (h2c with prior knowledge, and TLS
//! plaintext after ALPN `h2`), recognised by the client preface. Frames
//! (`frame`) and header blocks (HPACK, one dynamic table per direction)
//! become, per stream, the HTTP/1.1 request and response a connection of its
//! own would have carried (`transcode`), so the HTTP/1.1 pipeline makes the
//! same records of them: provider, model, status, usage, streams, TTFB.
//!
//! Memory is bounded per connection: streams in flight (`MAX_STREAMS`, the
//! oldest is evicted and counted), the HPACK tables (`MAX_TABLE_SIZE`), a
//! header block being assembled (`MAX_HEADER_BLOCK`) and one buffered
//! control frame; DATA is passed on as it arrives, never buffered here.
//!
//! A reset stream (RST_STREAM, a server's GOAWAY, the connection's close)
//! whose response head came ends both bodies where their bytes stopped; a
//! response neither ended by END_STREAM nor whole by its content-length is
//! marked cut (`Output::Cut`), so its record says `truncated`.

pub mod frame;
mod transcode;

use std::collections::BTreeMap;

use frame::{FrameEvent, FrameHeader, FrameReader, PREFACE};
use loona_hpack::Decoder;

/// Streams in flight kept per connection; beyond, the oldest is dropped.
pub const MAX_STREAMS: usize = 128;
/// Largest HPACK dynamic table accepted (a peer may advertise more; an
/// encoder that then uses more stops the connection's parse).
pub const MAX_TABLE_SIZE: usize = 64 * 1024;
/// Largest header block (HEADERS plus CONTINUATION) assembled.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// The HPACK table size every endpoint starts with (RFC 9113 §6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;
/// Heap charged per stream in flight.
const STREAM_COST: usize = 128;
/// SETTINGS_HEADER_TABLE_SIZE.
const SETTING_HEADER_TABLE_SIZE: u16 = 1;

/// True when a connection's first request bytes are (the start of) the
/// HTTP/2 client preface; at least `PRI ` is needed.
pub fn starts_with_preface(data: &[u8]) -> bool {
    let n = data.len().min(PREFACE.len());
    n >= 4 && data[..n] == PREFACE[..n]
}

/// True when a connection's first response bytes are a server's
/// connection preface: a SETTINGS frame on stream 0, whole settings.
pub fn is_server_preface(data: &[u8]) -> bool {
    match data {
        [l0, l1, l2, frame::SETTINGS, 0, 0, 0, 0, 0, ..] => {
            let len = u32::from_be_bytes([0, *l0, *l1, *l2]);
            len.is_multiple_of(6) && len <= 16 * 1024
        }
        _ => false,
    }
}

/// Health counters of the HTTP/2 parsers.
#[derive(Debug, Default, Clone, Copy)]
pub struct H2Stats {
    /// Connections recognised by their preface.
    pub connections: u64,
    /// Streams that carried a request.
    pub streams: u64,
    /// Streams dropped in flight because `MAX_STREAMS` were open.
    pub evicted_streams: u64,
    /// Streams a peer reset (RST_STREAM) or a server's GOAWAY cut off.
    pub reset_streams: u64,
    /// Connections whose parse stopped: malformed frames, an HPACK error,
    /// an oversized header block, or a gap in the captured bytes.
    pub broken_connections: u64,
}

/// What a connection's bytes turned into, for the HTTP/1.1 pipeline.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// HTTP/1.1 bytes of one stream's request (`request == true`) or
    /// response, at `offset` of that direction of the stream's virtual
    /// connection, captured at `ts_ns`: the capture time of the frame they
    /// come from, or, for the end of a body a reset stream never sent, the
    /// time of that direction's last bytes.
    Bytes { stream_conn: u64, request: bool, offset: u64, bytes: Vec<u8>, ts_ns: u64 },
    /// The stream's response was cut off (reset before its END_STREAM and
    /// short of its content-length): the body whose end follows is
    /// incomplete. `error` names the reset's error code (`h2_internal_error`,
    /// ...) unless it was NO_ERROR or CANCEL, or the connection just closed.
    Cut { stream_conn: u64, error: Option<&'static str> },
    /// The stream is over: its virtual connection closes.
    Close { stream_conn: u64 },
}

/// The `error_type` of a reset's HTTP/2 error code (RFC 9113 §7); `None`
/// for NO_ERROR and CANCEL, which say nothing went wrong on the server.
pub fn reset_error_type(code: u32) -> Option<&'static str> {
    Some(match code {
        0x0 | 0x8 => return None,
        0x1 => "h2_protocol_error",
        0x2 => "h2_internal_error",
        0x3 => "h2_flow_control_error",
        0x4 => "h2_settings_timeout",
        0x5 => "h2_stream_closed",
        0x6 => "h2_frame_size_error",
        0x7 => "h2_refused_stream",
        0x9 => "h2_compression_error",
        0xa => "h2_connect_error",
        0xb => "h2_enhance_your_calm",
        0xc => "h2_inadequate_security",
        0xd => "h2_http_1_1_required",
        _ => "h2_error",
    })
}

#[derive(Debug, Default)]
struct Stream {
    /// Next offset of each direction's HTTP/1.1 bytes.
    offsets: [u64; 2],
    /// The head of each direction was written.
    head_sent: [bool; 2],
    /// Each direction's END_STREAM was seen.
    ended: [bool; 2],
    /// Capture time of each direction's last bytes.
    last_ns: [u64; 2],
    /// The response's content-length, when its head declared one.
    response_length: Option<u64>,
    /// DATA bytes of the response received so far.
    response_data: u64,
}

/// A header block being assembled from HEADERS (or PUSH_PROMISE) and
/// CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    /// A PUSH_PROMISE block: decoded to keep HPACK in step, then dropped.
    discard: bool,
    bytes: Vec<u8>,
}

/// Everything of a connection but its frame readers.
struct ConnStreams {
    conn_id: u64,
    /// Per direction (0: requests, 1: responses).
    decoders: [Decoder<'static>; 2],
    /// Each decoder's allowed table size, as the receiving peer advertised.
    table_limits: [usize; 2],
    blocks: [Option<Block>; 2],
    streams: BTreeMap<u32, Stream>,
    broken: bool,
    /// Capture time of the bytes being fed.
    now_ns: u64,
    out: Vec<Output>,
}

/// The audit state of one HTTP/2 connection.
pub struct H2Conn {
    readers: [FrameReader; 2],
    state: ConnStreams,
    /// Next expected capture offset per direction.
    next_offset: [u64; 2],
    /// Pipeline clock at the last event (for eviction).
    pub last_seen: u64,
    /// Pipeline clock at the first sweep that found the kernel no longer
    /// tracking this connection.
    pub missing_since: Option<u64>,
    /// Heap charged at the last event.
    pub memory: usize,
}

impl H2Conn {
    pub fn new(conn_id: u64) -> Self {
        let decoder = || {
            let mut d = Decoder::new();
            d.set_max_allowed_table_size(DEFAULT_TABLE_SIZE);
            d
        };
        Self {
            readers: [FrameReader::new(true), FrameReader::new(false)],
            state: ConnStreams {
                conn_id,
                decoders: [decoder(), decoder()],
                table_limits: [DEFAULT_TABLE_SIZE; 2],
                blocks: [None, None],
                streams: BTreeMap::new(),
                broken: false,
                now_ns: 0,
                out: Vec::new(),
            },
            next_offset: [0, 0],
            last_seen: 0,
            missing_since: None,
            memory: 0,
        }
    }

    /// Feeds captured bytes of the request (`request == true`) or response
    /// direction, found at `offset` of that direction, captured at `ts_ns`.
    pub fn feed(&mut self, request: bool, offset: u64, ts_ns: u64, data: &[u8], stats: &mut H2Stats) -> Vec<Output> {
        let dir = usize::from(!request);
        if self.state.broken {
            return Vec::new();
        }
        self.state.now_ns = ts_ns;
        if offset != self.next_offset[dir] {
            // Bytes are missing: frames and HPACK state cannot be recovered.
            self.state.stop(stats);
            return std::mem::take(&mut self.state.out);
        }
        self.next_offset[dir] = offset + data.len() as u64;
        let state = &mut self.state;
        let result = self.readers[dir].feed(data, |event| state.on_frame(dir, event, stats));
        if result.is_err() || self.state.broken {
            self.state.stop(stats);
        }
        std::mem::take(&mut self.state.out)
    }

    /// The connection closed: every stream in flight ends as a reset one
    /// does (`ConnStreams::reset`), and its virtual connection closes.
    pub fn close(mut self) -> Vec<Output> {
        let ids: Vec<u32> = self.state.streams.keys().copied().collect();
        for id in ids {
            self.state.reset(id, None);
        }
        self.state.out
    }

    /// Virtual connection ids of the streams in flight.
    pub fn stream_conns(&self) -> impl Iterator<Item = u64> + '_ {
        self.state.streams.keys().map(|&id| stream_conn_id(self.state.conn_id, id))
    }

    /// Heap held, as an upper bound: buffered frames and header blocks,
    /// streams, and the HPACK tables at their allowed size.
    pub fn recount(&mut self) -> usize {
        let s = &self.state;
        self.memory = self.readers.iter().map(FrameReader::memory).sum::<usize>()
            + s.blocks.iter().flatten().map(|b| b.bytes.capacity()).sum::<usize>()
            + s.streams.len() * STREAM_COST
            + s.table_limits.iter().sum::<usize>();
        self.memory
    }
}

/// The id of a stream's virtual connection: even, so never a kernel
/// connection id (those are odd), and distinct per (connection, stream).
pub fn stream_conn_id(conn_id: u64, stream: u32) -> u64 {
    (conn_id.rotate_left(20) ^ (u64::from(stream).wrapping_mul(0x9e37_79b9_7f4a_7c15))) & !1
}

impl ConnStreams {
    fn on_frame(&mut self, dir: usize, event: FrameEvent<'_>, stats: &mut H2Stats) {
        if self.broken {
            return;
        }
        match event {
            FrameEvent::Data { stream, bytes } => {
                if !bytes.is_empty()
                    && let Some(s) = self.streams.get_mut(&stream).filter(|s| s.head_sent[dir] && !s.ended[dir])
                {
                    if dir == 1 {
                        s.response_data += bytes.len() as u64;
                    }
                    let mut chunk = format!("{:x}\r\n", bytes.len()).into_bytes();
                    chunk.extend_from_slice(bytes);
                    chunk.extend_from_slice(b"\r\n");
                    self.emit(stream, dir, chunk);
                }
            }
            FrameEvent::DataEnd { stream, end_stream } => {
                if end_stream {
                    self.end_direction(stream, dir);
                }
            }
            FrameEvent::Frame { header, payload } => self.on_control(dir, header, payload, stats),
        }
    }

    fn on_control(&mut self, dir: usize, header: FrameHeader, payload: &[u8], stats: &mut H2Stats) {
        use frame::*;
        match header.kind {
            HEADERS | PUSH_PROMISE => {
                let Some(fragment) = header_fragment(header, payload) else {
                    self.broken = true;
                    return;
                };
                let block = Block {
                    stream: header.stream,
                    end_stream: header.kind == HEADERS && header.flags & FLAG_END_STREAM != 0,
                    discard: header.kind == PUSH_PROMISE,
                    bytes: fragment.to_vec(),
                };
                self.blocks[dir] = Some(block);
                if header.flags & FLAG_END_HEADERS != 0 {
                    self.decode_block(dir, stats);
                }
            }
            CONTINUATION => {
                let Some(block) = self.blocks[dir].as_mut().filter(|b| b.stream == header.stream) else {
                    self.broken = true; // a CONTINUATION must follow its HEADERS
                    return;
                };
                if block.bytes.len() + payload.len() > MAX_HEADER_BLOCK {
                    self.broken = true;
                    return;
                }
                block.bytes.extend_from_slice(payload);
                if header.flags & FLAG_END_HEADERS != 0 {
                    self.decode_block(dir, stats);
                }
            }
            RST_STREAM if self.streams.contains_key(&header.stream) => {
                stats.reset_streams += 1;
                self.reset(header.stream, Some(error_code(payload, 0)));
            }
            // A server's GOAWAY: the client's streams it never processed are
            // over. (A client's GOAWAY names the last server-pushed stream it
            // took, and ends none of its own requests.)
            GOAWAY if dir == 1 && payload.len() >= 4 => {
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                let cut: Vec<u32> = self.streams.range(last.saturating_add(1)..).map(|(&id, _)| id).collect();
                stats.reset_streams += cut.len() as u64;
                let code = error_code(payload, 4);
                for id in cut {
                    self.reset(id, Some(code));
                }
            }
            SETTINGS if header.flags & FLAG_ACK == 0 => {
                for setting in payload.chunks_exact(6) {
                    if u16::from_be_bytes([setting[0], setting[1]]) == SETTING_HEADER_TABLE_SIZE {
                        // The sender's decoder limit binds the other direction's encoder.
                        let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]) as usize;
                        let other = 1 - dir;
                        self.table_limits[other] = value.min(MAX_TABLE_SIZE);
                        self.decoders[other].set_max_allowed_table_size(self.table_limits[other]);
                    }
                }
            }
            _ => {}
        }
    }

    fn decode_block(&mut self, dir: usize, stats: &mut H2Stats) {
        let Some(block) = self.blocks[dir].take() else { return };
        let mut fields: Vec<(String, String)> = Vec::new();
        let decoded = self.decoders[dir].decode_with_cb(&block.bytes, |name, value| {
            if fields.len() < transcode::MAX_FIELDS {
                fields
                    .push((String::from_utf8_lossy(&name).into_owned(), String::from_utf8_lossy(&value).into_owned()));
            }
        });
        if decoded.is_err() {
            self.broken = true;
            return;
        }
        if block.discard || block.stream == 0 {
            return;
        }
        if dir == 0 {
            self.request_headers(block.stream, block.end_stream, &fields, stats);
        } else {
            self.response_headers(block.stream, block.end_stream, &fields);
        }
    }

    fn request_headers(&mut self, id: u32, end_stream: bool, fields: &[(String, String)], stats: &mut H2Stats) {
        if self.streams.contains_key(&id) {
            // Trailers.
            if end_stream {
                self.end_direction(id, 0);
            }
            return;
        }
        if id.is_multiple_of(2) {
            return; // streams are opened by the client with odd ids
        }
        let Some(head) = transcode::request_head(fields) else { return };
        if self.streams.len() >= MAX_STREAMS
            && let Some(&oldest) = self.streams.keys().next()
        {
            stats.evicted_streams += 1;
            self.close(oldest);
        }
        stats.streams += 1;
        self.streams.insert(id, Stream { head_sent: [true, false], ..Stream::default() });
        self.emit(id, 0, head);
        if end_stream {
            self.end_direction(id, 0);
        }
    }

    fn response_headers(&mut self, id: u32, end_stream: bool, fields: &[(String, String)]) {
        let Some(stream) = self.streams.get(&id) else { return };
        if stream.head_sent[1] {
            if end_stream {
                self.end_direction(id, 1);
            }
            return;
        }
        let Some((status, head)) = transcode::response_head(fields) else { return };
        if (100..200).contains(&status) {
            return; // interim response
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.head_sent[1] = true;
            s.response_length =
                fields.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.trim().parse().ok());
        }
        self.emit(id, 1, head);
        if end_stream {
            self.end_direction(id, 1);
        }
    }

    /// END_STREAM in `dir`: the chunked body ends; once both directions
    /// have ended, the stream is over.
    fn end_direction(&mut self, id: u32, dir: usize) {
        self.end_direction_at(id, dir, self.now_ns);
    }

    /// `end_direction`, the body's end taken as captured at `ts_ns`.
    fn end_direction_at(&mut self, id: u32, dir: usize, ts_ns: u64) {
        let Some(stream) = self.streams.get(&id) else { return };
        if stream.ended[dir] {
            return;
        }
        if stream.head_sent[dir] {
            self.emit_at(id, dir, b"0\r\n\r\n".to_vec(), ts_ns);
        }
        let Some(stream) = self.streams.get_mut(&id) else { return };
        stream.ended[dir] = true;
        if stream.ended == [true, true] {
            self.close(id);
        }
    }

    /// A stream ended without an END_STREAM in each direction: reset
    /// (RST_STREAM, by either peer), cut by a server's GOAWAY, or its
    /// connection closed. Once its response head arrived, its exchange
    /// happened: both bodies end where their bytes stopped, so it gives its
    /// record (the status, and the body as far as it came; with the time of
    /// the response's last bytes, not of the reset). A response whole by
    /// its length, whose peer reset the stream before the empty DATA frame
    /// that would have carried END_STREAM, is common: Go's transport
    /// cancels (RST_STREAM CANCEL) a stream whose body its caller stopped
    /// reading at the declared length, when nginx sends END_STREAM in a
    /// frame of its own. A server that answers before the request's end
    /// may reset it (NO_ERROR) after a complete response (RFC 9113 §8.1).
    /// A response neither ended nor whole by its length was cut off: an
    /// `Output::Cut` (with the reset's error `code`, `None` for a closed
    /// connection) comes before its body's end.
    /// A stream reset before any response head gives no record.
    fn reset(&mut self, id: u32, code: Option<u32>) {
        let Some(stream) = self.streams.get(&id) else { return };
        if stream.head_sent[1] {
            let last_ns = stream.last_ns;
            let whole = stream.ended[1] || stream.response_length == Some(stream.response_data);
            if !whole {
                let error = code.and_then(reset_error_type);
                self.out.push(Output::Cut { stream_conn: stream_conn_id(self.conn_id, id), error });
            }
            for dir in [0, 1] {
                self.end_direction_at(id, dir, last_ns[dir]);
            }
        }
        self.close(id);
    }

    fn emit(&mut self, id: u32, dir: usize, bytes: Vec<u8>) {
        self.emit_at(id, dir, bytes, self.now_ns);
    }

    fn emit_at(&mut self, id: u32, dir: usize, bytes: Vec<u8>, ts_ns: u64) {
        let Some(stream) = self.streams.get_mut(&id) else { return };
        let offset = stream.offsets[dir];
        stream.offsets[dir] += bytes.len() as u64;
        stream.last_ns[dir] = ts_ns;
        self.out.push(Output::Bytes {
            stream_conn: stream_conn_id(self.conn_id, id),
            request: dir == 0,
            offset,
            bytes,
            ts_ns,
        });
    }

    fn close(&mut self, id: u32) {
        if self.streams.remove(&id).is_some() {
            self.out.push(Output::Close { stream_conn: stream_conn_id(self.conn_id, id) });
        }
    }

    /// The parse cannot go on: every stream in flight is dropped.
    fn stop(&mut self, stats: &mut H2Stats) {
        stats.broken_connections += 1;
        self.broken = true;
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        self.blocks = [None, None];
    }
}

/// The 32-bit error code at `at` of a RST_STREAM (0) or GOAWAY (4)
/// payload; INTERNAL_ERROR when the payload is too short to hold one.
fn error_code(payload: &[u8], at: usize) -> u32 {
    payload.get(at..at + 4).map_or(2, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The header block fragment of a HEADERS or PUSH_PROMISE frame, without
/// padding, priority and promised stream id.
fn header_fragment(header: FrameHeader, payload: &[u8]) -> Option<&[u8]> {
    use frame::*;
    let mut p = payload;
    let mut pad = 0;
    if header.flags & FLAG_PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    let skip = match header.kind {
        HEADERS if header.flags & FLAG_PRIORITY != 0 => 5,
        PUSH_PROMISE => 4,
        _ => 0,
    };
    let end = p.len().checked_sub(pad)?;
    p.get(skip..end)
}

#[cfg(test)]
mod tests;
