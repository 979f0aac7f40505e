//! Per-connection state kept by the kernel (`CONNS`) and the HTTP/1.1
//! response framing state machine that finds where each response ends.
//!
//! The state machine is plain `no_std` code over single bytes and byte counts,
//! so the same code runs in the kernel and in host unit tests. It is fed the
//! bytes of the *response direction* of a connection (what the proxy writes to
//! a client, or reads from an upstream) in arbitrary pieces:
//! header bytes one at a time (`step_byte`), body bytes in bulk (`skip`).
//! Requests are only recognised by their method token (`request_method`);
//! their bodies need no parsing because a client sends the next request only
//! after the previous response (pipelining is a documented limit).

/// Which side of the proxy a connection is on.
pub const SIDE_UNKNOWN: u8 = 0;
/// Accepted by the proxy: a client sends requests on it.
pub const SIDE_CLIENT: u8 = 1;
/// Opened by the proxy: the proxy sends requests to an upstream on it.
pub const SIDE_UPSTREAM: u8 = 2;

/// What the bytes of a connection turned out to be.
pub const PROTO_UNDETERMINED: u8 = 0;
pub const PROTO_HTTP1: u8 = 1;
/// Not HTTP/1.x (TLS ciphertext, HTTP/2, anything else): bytes are counted
/// as unclassified and not parsed.
pub const PROTO_UNCLASSIFIED: u8 = 2;
/// Began with a TLS handshake record: ciphertext. Parsed once its plaintext
/// is tied to it (`CONN_TLS`); counted as opaque TLS bytes until then.
pub const PROTO_TLS: u8 = 3;
/// HTTP/2 (h2c, or TLS plaintext after ALPN `h2`): frames are walked by
/// `framing_h2`, not the HTTP/1.x engine.
pub const PROTO_HTTP2: u8 = 4;

/// `ConnState::flags`: a request is in flight (its response is not complete).
pub const CONN_IN_FLIGHT: u32 = 1;
/// The first response byte of the in-flight request was seen.
pub const CONN_RESPONSE_STARTED: u32 = 4;
/// The connection existed before the agent attached.
pub const CONN_PREEXISTING: u32 = 8;
/// Adopted from an untracked fd that carried a request line.
pub const CONN_ADOPTED: u32 = 16;
/// The in-flight request was sampled for payload capture.
pub const CONN_CAPTURE: u32 = 32;
/// OpenSSL runs on this socket: its bytes are ciphertext (counted, not
/// parsed); the plaintext comes from the SSL_read/SSL_write probes.
pub const CONN_TLS: u32 = 64;
/// Plaintext of this connection was seen (an SSL call was tied to it).
pub const CONN_PLAINTEXT: u32 = 128;
/// Socket mode: the connection's kernel socket is in `SOCK_CONNS`.
pub const CONN_SOCK_MAPPED: u32 = 512;
/// Tied to Go's crypto/tls before it carried any byte (a `Write` that
/// handshakes lazily): its first socket bytes must be a TLS record, or the
/// tie was wrong and the connection is tracked afresh (`probes/gotls.rs`).
pub const CONN_GO_UNSEEN: u32 = 1024;
/// A request started and its sampling decision is still to be taken (by the
/// capture step of the same call, outside the parse loops).
pub const CONN_SAMPLE_PENDING: u32 = 256;
/// The top 16 bits of `ConnState::flags` hold the sampling interval the
/// in-flight exchange was captured at (with `CONN_CAPTURE`).
pub const CONN_SAMPLE_SHIFT: u32 = 16;
pub const CONN_SAMPLE_MASK: u32 = 0xffff << CONN_SAMPLE_SHIFT;

/// State of one traced connection, keyed by `conn_key(tgid, fd)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub side: u8,
    pub proto: u8,
    /// Provider slot of an upstream connection.
    pub provider: u8,
    /// Bytes in `pending` (a request line's start split across calls).
    pub pending_len: u8,
    pub flags: u32,
    /// When the in-flight request's first byte passed (ktime, ns).
    pub request_ns: u64,
    /// When the last response byte passed (ktime, ns).
    pub last_response_ns: u64,
    /// Framing state of the response direction.
    pub response: ResponseParser,
    /// The first bytes of a possible request line when a call ended before
    /// its method token did.
    pub pending: [u8; 8],
    /// Identity for payload capture (fd numbers are reused).
    pub conn_id: u64,
    /// Bytes read from / written to the connection since tracking began.
    pub read_offset: u64,
    pub write_offset: u64,
    /// Bytes of the current request / response captured so far.
    pub captured_request: u32,
    pub captured_response: u32,
}
const _: () = assert!(core::mem::size_of::<ConnState>() == 88);

#[cfg(feature = "user")]
unsafe impl aya::Pod for ConnState {}

/// Response framing. Header, chunk-size and trailer bytes go through a
/// byte-level DFA (`FRAMING_DFA`, states below `DFA_STATES`); body bytes are
/// skipped in bulk in the phases below. A table-driven DFA keeps the kernel's
/// per-byte work to one table load and a few compares, which the BPF
/// verifier can check within its limits.
pub const DFA_STATES: u32 = 64;
pub const DFA_SIZE: usize = (DFA_STATES as usize) * 256;

/// In a body of known length (`value` bytes left).
pub const PHASE_BODY_LENGTH: u32 = 64;
/// In chunk data plus its trailing CRLF (`value` bytes left).
pub const PHASE_CHUNK_DATA: u32 = 65;
/// In a body that ends when the connection closes.
pub const PHASE_UNTIL_CLOSE: u32 = 66;
/// No response expected.
pub const PHASE_IDLE: u32 = 67;
/// Framing was lost (parse budget exhausted or malformed bytes).
pub const PHASE_LOST: u32 = 68;

// DFA states. Status line "HTTP/1.x NNN reason".
const S_STATUS: u8 = 0; // 0..=8: expecting "HTTP/1.x " byte by byte
const S_CODE1: u8 = 9;
const S_CODE2: u8 = 10;
const S_CODE3: u8 = 11;
const S_REASON: u8 = 12;
// Header lines.
const S_LINE_START: u8 = 13;
const S_EMPTY_CR: u8 = 14;
const S_CL: u8 = 15; // 15..=28: matched 1..=14 bytes of "content-length"
const S_CL_COLON: u8 = 29;
const S_CL_VALUE: u8 = 30;
const S_TE: u8 = 31; // 31..=47: matched 1..=17 bytes of "transfer-encoding"
const S_TE_VALUE: u8 = 48;
const S_OTHER: u8 = 49;
const S_HEAD_END: u8 = 50;
const S_ERROR: u8 = 51;
// Chunk-size lines.
const S_CHUNK_START: u8 = 52;
const S_CHUNK_DIGITS: u8 = 53;
const S_CHUNK_EXT: u8 = 54;
const S_CHUNK_END: u8 = 55;
// Trailer lines after the last chunk.
const S_TRAILER_START: u8 = 56;
const S_TRAILER_CR: u8 = 57;
const S_TRAILER_LINE: u8 = 58;
const S_TRAILER_END: u8 = 59;
/// After the third status digit.
const S_CODE_DONE: u8 = 60;

const STATUS_PREFIX: &[u8; 9] = b"HTTP/1.x ";
const CONTENT_LENGTH: &[u8; 14] = b"content-length";
const TRANSFER_ENCODING: &[u8; 17] = b"transfer-encoding";

const fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

/// The transition of `state` on byte `c`.
const fn next_state(state: u8, c: u8) -> u8 {
    let lower = c.to_ascii_lowercase();
    match state {
        0..=8 => {
            let want = STATUS_PREFIX[state as usize];
            let ok = if want == b'x' { c.is_ascii_digit() } else { c == want };
            if !ok {
                S_ERROR
            } else if state == 8 {
                S_CODE1
            } else {
                state + 1
            }
        }
        S_CODE1 | S_CODE2 => {
            if c.is_ascii_digit() {
                state + 1
            } else {
                S_ERROR
            }
        }
        S_CODE3 => {
            if c.is_ascii_digit() {
                S_CODE_DONE
            } else {
                S_ERROR
            }
        }
        S_CODE_DONE => {
            if c == b'\n' {
                S_LINE_START
            } else {
                S_REASON
            }
        }
        S_REASON => {
            if c == b'\n' {
                S_LINE_START
            } else {
                S_REASON
            }
        }
        S_LINE_START => match c {
            b'\r' => S_EMPTY_CR,
            b'\n' => S_HEAD_END,
            _ if lower == CONTENT_LENGTH[0] => S_CL,
            _ if lower == TRANSFER_ENCODING[0] => S_TE,
            _ => S_OTHER,
        },
        S_EMPTY_CR => {
            if c == b'\n' {
                S_HEAD_END
            } else {
                S_OTHER
            }
        }
        S_CL..=28 => {
            let matched = (state - S_CL + 1) as usize;
            if matched == CONTENT_LENGTH.len() {
                if c == b':' {
                    S_CL_COLON
                } else if c == b'\n' {
                    S_LINE_START
                } else {
                    S_OTHER
                }
            } else if lower == CONTENT_LENGTH[matched] {
                state + 1
            } else if c == b'\n' {
                S_LINE_START
            } else {
                S_OTHER
            }
        }
        S_CL_COLON | S_CL_VALUE => {
            if c == b'\n' {
                S_LINE_START
            } else {
                S_CL_VALUE
            }
        }
        S_TE..=47 => {
            let matched = (state - S_TE + 1) as usize;
            if matched == TRANSFER_ENCODING.len() {
                if c == b':' {
                    S_TE_VALUE
                } else if c == b'\n' {
                    S_LINE_START
                } else {
                    S_OTHER
                }
            } else if lower == TRANSFER_ENCODING[matched] {
                state + 1
            } else if c == b'\n' {
                S_LINE_START
            } else {
                S_OTHER
            }
        }
        S_TE_VALUE | S_OTHER => {
            if c == b'\n' {
                S_LINE_START
            } else {
                state
            }
        }
        S_CHUNK_START => {
            if is_hex(c) {
                S_CHUNK_DIGITS
            } else if c == b'\r' || c == b'\n' {
                // The CRLF ending chunk data, when it was not skipped.
                S_CHUNK_START
            } else {
                S_ERROR
            }
        }
        S_CHUNK_DIGITS => {
            if is_hex(c) {
                S_CHUNK_DIGITS
            } else if c == b'\n' {
                S_CHUNK_END
            } else {
                S_CHUNK_EXT
            }
        }
        S_CHUNK_EXT => {
            if c == b'\n' {
                S_CHUNK_END
            } else {
                S_CHUNK_EXT
            }
        }
        S_TRAILER_START => match c {
            b'\n' => S_TRAILER_END,
            b'\r' => S_TRAILER_CR,
            _ => S_TRAILER_LINE,
        },
        S_TRAILER_CR => {
            if c == b'\n' {
                S_TRAILER_END
            } else {
                S_TRAILER_LINE
            }
        }
        S_TRAILER_LINE => {
            if c == b'\n' {
                S_TRAILER_START
            } else {
                S_TRAILER_LINE
            }
        }
        _ => S_ERROR,
    }
}

const fn build_dfa() -> [u8; DFA_SIZE] {
    let mut table = [S_ERROR; DFA_SIZE];
    let mut state = 0;
    while state < DFA_STATES as usize {
        let mut c = 0;
        while c < 256 {
            table[state * 256 + c] = next_state(state as u8, c as u8);
            c += 1;
        }
        state += 1;
    }
    table
}

/// The framing DFA: `FRAMING_DFA[state * 256 + byte]` is the next state.
pub const FRAMING_DFA: [u8; DFA_SIZE] = build_dfa();

/// `ResponseParser::flags`.
pub const RESP_HAS_LENGTH: u32 = 1;
pub const RESP_CHUNKED: u32 = 2;
/// The request was `HEAD`: the response has no body whatever its headers say.
pub const RESP_NO_BODY: u32 = 4;

/// What a byte or a skip completed.
pub const EV_NONE: u32 = 0;
/// The whole response ended with this byte.
pub const EV_END: u32 = 1;
/// The bytes are not an HTTP/1.x response.
pub const EV_MALFORMED: u32 = 2;

/// Largest Content-Length or chunk size accepted (2^48 bytes).
const MAX_LENGTH: u64 = 1 << 48;

/// Framing state of one response. Field widths are explicit; no bools.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseParser {
    /// A DFA state (< `DFA_STATES`) or a `PHASE_*`.
    pub phase: u32,
    pub flags: u32,
    pub status: u32,
    pub _pad: u32,
    /// Content-Length or chunk size being accumulated, then bytes left to skip.
    pub value: u64,
}
const _: () = assert!(core::mem::size_of::<ResponseParser>() == 24);

impl Default for ResponseParser {
    fn default() -> Self {
        Self { phase: PHASE_IDLE, flags: 0, status: 0, _pad: 0, value: 0 }
    }
}

impl ResponseParser {
    /// A parser waiting for the status line of a response. `no_body` is set
    /// when the request was `HEAD`.
    #[inline(always)]
    pub fn expect_response(&mut self, no_body: bool) {
        self.phase = S_STATUS as u32;
        self.flags = if no_body { RESP_NO_BODY } else { 0 };
        self.status = 0;
        self.value = 0;
    }

    /// True when the parser consumes bytes one at a time (`step_byte`).
    #[inline(always)]
    pub fn wants_bytes(&self) -> bool {
        self.phase < DFA_STATES
    }

    /// True when the parser consumes bytes in bulk (`skip`).
    #[inline(always)]
    pub fn wants_skip(&self) -> bool {
        self.phase == PHASE_BODY_LENGTH || self.phase == PHASE_CHUNK_DATA || self.phase == PHASE_UNTIL_CLOSE
    }

    /// Consumes up to `available` body bytes; returns how many were consumed
    /// and whether the response ended.
    #[inline(always)]
    pub fn skip(&mut self, available: u64) -> (u64, u32) {
        if self.phase == PHASE_UNTIL_CLOSE {
            return (available, EV_NONE);
        }
        let n = if self.value < available { self.value } else { available };
        self.value -= n;
        if self.value != 0 {
            return (n, EV_NONE);
        }
        if self.phase == PHASE_BODY_LENGTH {
            self.phase = PHASE_IDLE;
            return (n, EV_END);
        }
        // End of a chunk's data and CRLF: the next chunk-size line follows.
        self.phase = S_CHUNK_START as u32;
        (n, EV_NONE)
    }

    /// Consumes one byte of a status line, header line, chunk-size line or
    /// trailer line, using `dfa` (= `FRAMING_DFA`).
    #[inline(always)]
    pub fn step_byte(&mut self, dfa: &[u8; DFA_SIZE], c: u8) -> u32 {
        let index = ((self.phase as usize) << 8 | c as usize) & (DFA_SIZE - 1);
        let next = dfa[index];
        self.phase = next as u32;
        let digit = c.wrapping_sub(b'0') as u64;
        if next == S_CL_VALUE {
            if digit < 10 {
                self.value = self.value * 10 + digit;
                self.flags |= RESP_HAS_LENGTH;
            }
        } else if next == S_CHUNK_DIGITS {
            let hex = if digit < 10 { digit } else { ((c | 0x20) - b'a' + 10) as u64 };
            self.value = self.value * 16 + hex;
        } else if next == S_CODE2 || next == S_CODE3 || next == S_CODE_DONE {
            // Entering one of these consumed a status digit.
            self.status = self.status * 10 + digit as u32;
        } else if next == S_TE_VALUE {
            // Any Transfer-Encoding on a response means chunked framing in
            // practice (RFC 9112 6.3: otherwise the body runs to close).
            self.flags |= RESP_CHUNKED;
        } else if next == S_CL_COLON {
            self.value = 0;
        } else if next == S_HEAD_END {
            return self.head_end();
        } else if next == S_CHUNK_END {
            if self.value == 0 {
                self.phase = S_TRAILER_START as u32;
            } else {
                self.phase = PHASE_CHUNK_DATA;
                self.value += 2;
            }
        } else if next == S_TRAILER_END {
            self.phase = PHASE_IDLE;
            return EV_END;
        } else if next == S_ERROR {
            self.phase = PHASE_LOST;
            return EV_MALFORMED;
        }
        if self.value > MAX_LENGTH {
            self.phase = PHASE_LOST;
            return EV_MALFORMED;
        }
        EV_NONE
    }

    /// The empty line after the headers: choose how the body is framed.
    #[inline(always)]
    fn head_end(&mut self) -> u32 {
        let status = self.status;
        let flags = self.flags;
        if status < 200 {
            // Interim response (100 Continue, 103 Early Hints): another
            // status line follows. Keep NO_BODY.
            self.expect_response(flags & RESP_NO_BODY != 0);
            return EV_NONE;
        }
        if flags & RESP_NO_BODY != 0 || status == 204 || status == 304 {
            self.phase = PHASE_IDLE;
            return EV_END;
        }
        if flags & RESP_CHUNKED != 0 {
            self.phase = S_CHUNK_START as u32;
            self.value = 0;
            return EV_NONE;
        }
        if flags & RESP_HAS_LENGTH != 0 {
            if self.value == 0 {
                self.phase = PHASE_IDLE;
                return EV_END;
            }
            self.phase = PHASE_BODY_LENGTH;
            return EV_NONE;
        }
        self.phase = PHASE_UNTIL_CLOSE;
        EV_NONE
    }
}

/// Request method recognised at the start of a request, if any.
pub const METHOD_NONE: u32 = 0;
pub const METHOD_OTHER: u32 = 1;
pub const METHOD_HEAD: u32 = 2;
/// Too few bytes yet, but they start a method token: wait for more.
pub const METHOD_PENDING: u32 = 3;

/// The method tokens recognised, with their trailing space.
const METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"PATCH ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"CONNECT ", b"TRACE "];

/// True when `b[..len]` (shorter than its token) starts some method token.
#[inline(always)]
pub fn could_be_method_prefix(b: &[u8; 8], len: u64) -> bool {
    if len == 0 || len >= 8 {
        return false;
    }
    let word = u64::from_le_bytes(*b);
    let mask = (1u64 << (len * 8)) - 1;
    let mut i = 0;
    while i < METHODS.len() {
        let m = METHODS[i];
        let mut want = [0u8; 8];
        let mut j = 0;
        while j < m.len() && j < 8 {
            want[j] = m[j];
            j += 1;
        }
        if (m.len() as u64) > len && word & mask == u64::from_le_bytes(want) & mask {
            return true;
        }
        i += 1;
    }
    false
}

/// Recognises a request start from the bytes pending on `conn` followed by
/// `first[..len]`, keeping an incomplete method token pending.
#[inline(always)]
pub fn method_at_start(conn: &mut ConnState, first: &[u8; 8], len: u64) -> u32 {
    // Shifts on a u64 rather than indexing a stack array by a variable:
    // the BPF verifier rejects the pointer arithmetic compilers emit for that.
    let mut n = (conn.pending_len & 7) as u64;
    let mut word = if n == 0 { 0 } else { u64::from_le_bytes(conn.pending) & ((1u64 << (n * 8)) - 1) };
    let incoming = u64::from_le_bytes(*first);
    let mut i = 0u64;
    while i < 8 {
        if n >= 8 || i >= len {
            break;
        }
        word |= ((incoming >> (i * 8)) & 0xff) << (n * 8);
        n += 1;
        i += 1;
    }
    let b = word.to_le_bytes();
    let method = request_method(&b, n);
    if method == METHOD_NONE && could_be_method_prefix(&b, n) {
        conn.pending = b;
        conn.pending_len = n as u8;
        return METHOD_PENDING;
    }
    conn.pending_len = 0;
    method
}

/// Recognises the method token of a request line from its first 8 bytes
/// (`len` of them valid). Returns `METHOD_NONE` when the bytes are not the
/// start of an HTTP/1.x request.
#[inline(always)]
pub fn request_method(b: &[u8; 8], len: u64) -> u32 {
    let word = u64::from_le_bytes(*b);
    // Compare the first n bytes of `word` with a literal.
    let starts = |lit: &[u8], n: u64| -> bool {
        if len < n {
            return false;
        }
        let mut want = [0u8; 8];
        let mut i = 0;
        while i < lit.len() && i < 8 {
            want[i] = lit[i];
            i += 1;
        }
        let mask = if n >= 8 { u64::MAX } else { (1u64 << (n * 8)) - 1 };
        word & mask == u64::from_le_bytes(want) & mask
    };
    if starts(b"GET ", 4) || starts(b"POST ", 5) || starts(b"PUT ", 4) || starts(b"PATCH ", 6) {
        return METHOD_OTHER;
    }
    if starts(b"HEAD ", 5) {
        return METHOD_HEAD;
    }
    if starts(b"DELETE ", 7) || starts(b"OPTIONS ", 8) || starts(b"CONNECT ", 8) || starts(b"TRACE ", 6) {
        return METHOD_OTHER;
    }
    METHOD_NONE
}

/// True when the first bytes look like the start of an HTTP/1.x response.
#[inline(always)]
pub fn is_status_line_start(b: &[u8; 8], len: u64) -> bool {
    len >= 7
        && b[0] == b'H'
        && b[1] == b'T'
        && b[2] == b'T'
        && b[3] == b'P'
        && b[4] == b'/'
        && b[5] == b'1'
        && b[6] == b'.'
}

pub mod head;

#[cfg(test)]
mod tests;
