//! The fast path of response framing: a whole response head found in one
//! buffer, scanned eight bytes at a time for its line ends instead of byte by
//! byte through the DFA. Only what framing needs is read: the status line at
//! its fixed offsets, the start of each header line (`Content-Length:`,
//! `Transfer-Encoding:`, or the blank line ending the head) and the
//! Content-Length value. The result is exactly the DFA's (`step_byte` over
//! the same bytes); anything unusual (a head not complete in the buffer, an
//! unterminated or oversized value, a malformed status line) returns `None`
//! before changing anything, and the caller runs the DFA instead.
//!
//! Written for the BPF verifier as much as for speed: the buffer is an array
//! of aligned words, every index is masked into it, and every loop has a
//! constant bound.

use super::{MAX_LENGTH, RESP_CHUNKED, RESP_HAS_LENGTH, ResponseParser, S_STATUS};

/// Words of the head buffer: heads up to 1 KiB (an LLM provider's response
/// head with its rate-limit headers is 0.5 to 1 KiB) take the fast path.
pub const HEAD_WORDS: usize = 128;
/// Bytes of the head buffer.
pub const HEAD_BYTES: usize = HEAD_WORDS * 8;
/// Content-Length value bytes (spaces included) the fast path reads at most.
const MAX_VALUE_BYTES: u64 = 24;

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
/// Byte `j` is `j`: multiplied by `1 << 8b` its top byte is `7 - b`.
const BYTE_INDEX: u64 = 0x0706_0504_0302_0100;

/// `lit` as a little-endian word and the mask of its first `n` bytes, with
/// ASCII letters case-folded (bit 0x20 forced on both sides).
const fn literal(lit: &[u8], from: usize, n: usize) -> (u64, u64, u64) {
    let (mut word, mut mask, mut fold) = (0u64, 0u64, 0u64);
    let mut i = 0;
    while i < n {
        let c = lit[from + i];
        word |= (c.to_ascii_lowercase() as u64) << (i * 8);
        mask |= 0xff << (i * 8);
        if c.is_ascii_alphabetic() {
            fold |= 0x20 << (i * 8);
        }
        i += 1;
    }
    (word, mask, fold)
}

const CL: &[u8; 15] = b"content-length:";
const TE: &[u8; 18] = b"transfer-encoding:";
const CL0: (u64, u64, u64) = literal(CL, 0, 8);
const CL1: (u64, u64, u64) = literal(CL, 8, 7);
const TE0: (u64, u64, u64) = literal(TE, 0, 8);
const TE1: (u64, u64, u64) = literal(TE, 8, 8);
const TE2: (u64, u64, u64) = literal(TE, 16, 2);
/// "HTTP/1." then a digit and a space: the digit is checked apart.
const STATUS_PREFIX: (u64, u64, u64) = (u64::from_le_bytes(*b"HTTP/1.\0"), 0x00ff_ffff_ffff_ffff, 0);

#[inline(always)]
fn matches(word: u64, lit: (u64, u64, u64)) -> bool {
    (word | lit.2) & lit.1 == lit.0
}

/// Bit 7 of each byte of `word` that is `\n`, exactly (no borrow between bytes).
#[inline(always)]
fn newline_bits(word: u64) -> u64 {
    let v = word ^ (ONES * b'\n' as u64);
    !(((v & LOW7) + LOW7) | v | LOW7)
}

/// The eight bytes from byte `at` of the buffer (wrapping at its end; the
/// caller never trusts bytes past the data).
#[inline(always)]
fn word_at(buf: &[u64; HEAD_WORDS], at: u64) -> u64 {
    let i = (at >> 3) as usize & (HEAD_WORDS - 1);
    let shift = (at & 7) * 8;
    let lo = buf[i];
    if shift == 0 {
        return lo;
    }
    let hi = buf[(i + 1) & (HEAD_WORDS - 1)];
    (lo >> shift) | (hi << (64 - shift))
}

#[inline(always)]
fn byte_at(buf: &[u64; HEAD_WORDS], at: u64) -> u64 {
    (buf[(at >> 3) as usize & (HEAD_WORDS - 1)] >> ((at & 7) * 8)) & 0xff
}

/// True when the parser waits for a status line: where `scan_head` applies.
#[inline(always)]
pub fn wants_head(p: &ResponseParser) -> bool {
    p.phase == S_STATUS as u32
}

/// What one header line start told.
const LINE_NEXT: u64 = 0;
const LINE_BAIL: u64 = u64::MAX;

/// Scans the response head at the start of `buf[..len]` (`len <= HEAD_BYTES`)
/// for a parser expecting a status line. On success the parser is where the
/// DFA would be after the head's last byte, and the result is the head's
/// length and the event the DFA would return there (`EV_NONE` or `EV_END`).
/// An interim (1xx) head leaves the parser expecting the next status line.
#[inline(always)]
pub fn scan_head(buf: &[u64; HEAD_WORDS], len: u64, p: &mut ResponseParser) -> Option<(u64, u32)> {
    let mut lines = HeadLines::default();
    if !scan_head_lines(buf, len, p, &mut lines) {
        return None;
    }
    finish_head(buf, len, lines, p)
}

/// What the line scan of a head found (`scan_word` by `scan_word`), before
/// the Content-Length value is read (`finish_head`). In the kernel it lives
/// in per-CPU map memory (volatile accesses), so the words are scanned a few
/// at a time in a `bpf_loop` callback that the verifier checks once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadLines {
    /// Bytes of the buffer that hold data.
    pub len: u64,
    /// The head's length, once its end was found.
    pub end: u64,
    /// Where the Content-Length value starts; 0 without one.
    pub length_at: u64,
    pub flags: u32,
    pub status: u32,
}

/// `scan_word`: no end of the head in this word, go on with the next.
pub const WORD_NEXT: u32 = 0;
/// `scan_word`: the head ends in this word (`HeadLines::end`).
pub const WORD_END: u32 = 1;
/// `scan_word`: the fast path gives up; the DFA takes the head.
pub const WORD_BAIL: u32 = 2;

/// The first half of `scan_head`: the status line and the line starts,
/// into `*out` (true when the head's end was found).
#[inline(always)]
pub fn scan_head_lines(buf: &[u64; HEAD_WORDS], len: u64, p: &ResponseParser, out: &mut HeadLines) -> bool {
    if !head_start(buf, len, p, out) {
        return false;
    }
    for w in 1..head_words(len) {
        let r = scan_word(buf, w, out);
        if r == WORD_END {
            return true;
        }
        if r == WORD_BAIL {
            return false;
        }
    }
    false
}

/// Words of `buf[..len]` (the first holds the status line's prefix only).
#[inline(always)]
pub fn head_words(len: u64) -> u64 {
    let words = len.div_ceil(8);
    if words > HEAD_WORDS as u64 { HEAD_WORDS as u64 } else { words }
}

/// Starts a head scan: checks the status line at its fixed offsets and
/// fills `*out` (false when the fast path does not apply).
#[inline(always)]
pub fn head_start(buf: &[u64; HEAD_WORDS], len: u64, p: &ResponseParser, out: &mut HeadLines) -> bool {
    // Volatile accesses through it: map memory in the kernel (see `HeadLines`).
    let out: *mut HeadLines = out;
    if p.phase != S_STATUS as u32 || len < 16 || len > HEAD_BYTES as u64 {
        return false;
    }
    // "HTTP/1.x NNN": fixed offsets.
    let first = buf[0];
    let second = buf[1];
    let digit = |w: u64, at: u64| ((w >> (at * 8)) & 0xff).wrapping_sub(b'0' as u64);
    let (version, space) = (digit(first, 7), (second & 0xff) as u8);
    let (d1, d2, d3) = (digit(second, 1), digit(second, 2), digit(second, 3));
    if !matches(first, STATUS_PREFIX) || version > 9 || space != b' ' || d1 > 9 || d2 > 9 || d3 > 9 {
        return false;
    }
    let status = (d1 * 100 + d2 * 10 + d3) as u32;
    // SAFETY: `out` is valid for writes (the caller's).
    unsafe { core::ptr::write_volatile(out, HeadLines { len, end: 0, length_at: 0, flags: p.flags, status }) };
    true
}

/// Scans word `w` (from 1) of the head for line ends: every '\n' from byte
/// 12 on ends a line (the status line's prefix and digits hold none); the
/// byte after it starts the next line (`line_start`).
#[inline(always)]
pub fn scan_word(buf: &[u64; HEAD_WORDS], w: u64, out: &mut HeadLines) -> u32 {
    // Volatile accesses through it: map memory in the kernel (see `HeadLines`).
    let out: *mut HeadLines = out;
    // SAFETY: `out` is the caller's, valid.
    let len = unsafe { core::ptr::read_volatile(&(*out).len) };
    if w == 0 || w >= HEAD_WORDS as u64 || w * 8 >= len {
        return WORD_BAIL; // the head goes on past the buffer
    }
    let mut bits = newline_bits(buf[w as usize & (HEAD_WORDS - 1)]);
    let valid = len - w * 8;
    if valid < 8 {
        bits &= (1u64 << (valid * 8)) - 1;
    }
    for _ in 0..8 {
        if bits == 0 {
            break;
        }
        let lowest = bits & bits.wrapping_neg();
        bits &= bits - 1;
        let b = 7 - ((lowest >> 7).wrapping_mul(BYTE_INDEX) >> 56);
        let r = line_start(buf, len, w * 8 + b + 1, out);
        if r == LINE_BAIL {
            return WORD_BAIL;
        }
        if r != LINE_NEXT {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&mut (*out).end, r) };
            return WORD_END;
        }
    }
    WORD_NEXT
}

/// The second half of `scan_head`: the Content-Length value, then the
/// parser set as the DFA leaves it at the end of the head.
#[inline(always)]
pub fn finish_head(buf: &[u64; HEAD_WORDS], len: u64, lines: HeadLines, p: &mut ResponseParser) -> Option<(u64, u32)> {
    let mut flags = lines.flags;
    let mut value = p.value;
    if lines.length_at != 0 && content_length(buf, len, lines.length_at, &mut flags, &mut value) == LINE_BAIL {
        return None;
    }
    p.status = lines.status;
    p.flags = flags;
    p.value = value;
    let ev = p.head_end();
    Some((lines.end, ev))
}

/// The header line starting at `start`: the end of the head (returns its
/// length), a framing header (in `flags`, or its value's position in `length_at`; a second Content-Length bails), another line
/// (`LINE_NEXT`), or something the fast path leaves to the DFA (`LINE_BAIL`).
#[inline(always)]
fn line_start(buf: &[u64; HEAD_WORDS], len: u64, start: u64, out: *mut HeadLines) -> u64 {
    if start >= len {
        return LINE_BAIL; // the head goes on past the buffer
    }
    let head = word_at(buf, start);
    let c = head & 0xff;
    if c == b'\n' as u64 {
        return start + 1;
    }
    if c == b'\r' as u64 {
        if start + 1 >= len {
            return LINE_BAIL;
        }
        return if (head >> 8) & 0xff == b'\n' as u64 { start + 2 } else { LINE_NEXT };
    }
    // A literal holds no '\n': a line shorter than it does not match, and a
    // match running past `len` belongs to a line not ended in the buffer,
    // whose head the scan cannot end (so it bails).
    if c | 0x20 == b'c' as u64 {
        if matches(head, CL0) && matches(word_at(buf, start + 8), CL1) {
            // SAFETY: `out` is the caller's, valid.
            if unsafe { core::ptr::read_volatile(&(*out).length_at) } != 0 {
                return LINE_BAIL;
            }
            unsafe { core::ptr::write_volatile(&mut (*out).length_at, start + CL.len() as u64) };
        }
    } else if c | 0x20 == b't' as u64
        && matches(head, TE0)
        && matches(word_at(buf, start + 8), TE1)
        && matches(word_at(buf, start + 16), TE2)
    {
        // As the DFA: any Transfer-Encoding on a response means chunked.
        // SAFETY: as above.
        unsafe {
            let flags = core::ptr::read_volatile(&(*out).flags);
            core::ptr::write_volatile(&mut (*out).flags, flags | RESP_CHUNKED);
        }
    }
    LINE_NEXT
}

/// The value of a Content-Length header, from `at` to the line's end: its
/// digits, other bytes ignored (as the DFA does).
#[inline(always)]
fn content_length(buf: &[u64; HEAD_WORDS], len: u64, at: u64, flags: &mut u32, value: &mut u64) -> u64 {
    let mut v = 0u64;
    for i in 0..MAX_VALUE_BYTES {
        let pos = at + i;
        if pos >= len {
            return LINE_BAIL;
        }
        let c = byte_at(buf, pos);
        if c == b'\n' as u64 {
            *value = v;
            return LINE_NEXT;
        }
        let d = c.wrapping_sub(b'0' as u64);
        if d < 10 {
            v = v * 10 + d;
            *flags |= RESP_HAS_LENGTH;
            if v > MAX_LENGTH {
                return LINE_BAIL; // the DFA calls it malformed
            }
        }
    }
    LINE_BAIL
}

#[cfg(test)]
mod tests;
