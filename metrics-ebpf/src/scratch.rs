//! Per-CPU working memory: the layouts of the `SCRATCH` and `CHUNK_BUFFER`
//! map values, which the framing engine (`framing`, `framing_h2`) and
//! payload capture (`capture`) share, and which `maps` declares. A leaf: it
//! imports nothing of this crate, so every module above may name them.

use aya_ebpf::helpers::bpf_probe_read_user;
use metrics_common::{
    capture::{CHUNK_BYTES, ChunkHeader},
    conn::head::{HEAD_WORDS, HeadLines},
};

/// Bytes copied from user memory at a time for header scanning.
pub const WINDOW: usize = 64;
/// iovecs looked at per call.
const MAX_IOV: u64 = 64;

/// Where the parser is in the bytes of one call. Kept in per-CPU map memory
/// between steps (volatile accesses) so the verifier sees unknown values at
/// each step and prunes, instead of tracking every possible offset.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Cursor {
    pub iov: u64,
    pub iov_count: u64,
    pub iov_next: u64,
    pub seg_ptr: u64,
    pub seg_len: u64,
    pub seg_off: u64,
    /// Bytes of the call not yet consumed.
    pub left: u64,
}

/// Per-CPU scratch: a window of user bytes, the cursor, and what a
/// continuation needs to carry on.
#[repr(C)]
pub struct Scratch {
    pub window: [u8; WINDOW],
    /// The first bytes of a call that starts a response head (`fast_head`).
    pub head: [u64; HEAD_WORDS],
    /// What the word scan of `head` found so far.
    pub lines: HeadLines,
    /// `scan_head_words`' verdict: `WORD_END`, or anything else to fall back.
    pub head_outcome: u32,
    /// Non-zero once `fast_head` ran for the call being parsed.
    pub head_tried: u32,
    pub cursor: Cursor,
    pub conn_key: u64,
    pub now: u64,
    pub continuations: u32,
    /// Non-zero when the call's response bytes still need parsing.
    pub parse_pending: u32,
    /// The start of a request line held from earlier calls
    /// (`ConnState::pending`): its bytes, little-endian, and their count.
    /// Set at each call; `capture::prepare` keeps the count only when the
    /// call starts a captured request, and capture sends them first.
    pub held: u64,
    pub held_len: u64,
    pub capture: CaptureJob,
}

impl Cursor {
    #[inline(always)]
    pub fn next_segment(&mut self) -> bool {
        if self.iov == 0 || self.iov_next >= self.iov_count || self.iov_next >= MAX_IOV {
            return false;
        }
        let at = self.iov + self.iov_next * 16;
        self.iov_next += 1;
        // SAFETY: reading user memory through the helper.
        let Ok([base, len]) = (unsafe { bpf_probe_read_user(at as *const [u64; 2]) }) else {
            return false;
        };
        self.seg_ptr = base;
        self.seg_len = if len < self.left { len } else { self.left };
        self.seg_off = 0;
        true
    }

    #[inline(always)]
    pub fn consume(&mut self, n: u64) {
        self.seg_off += n;
        self.left -= if n < self.left { n } else { self.left };
    }
}

/// One ring buffer event as assembled in `CHUNK_BUFFER`.
#[repr(C)]
pub struct ChunkEvent {
    pub header: ChunkHeader,
    pub data: [u8; CHUNK_BYTES],
}

/// What `capture_payload` copies: stored in the per-CPU scratch.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CaptureJob {
    pub header: ChunkHeader,
    /// Buffer, or iovec array.
    pub ptr: u64,
    /// iovec count; 0 for a plain buffer.
    pub iov_count: u64,
    /// Bytes to copy (the call's length, cut to the message cap).
    pub left: u64,
    pub iov_next: u64,
    pub seg_ptr: u64,
    pub seg_left: u64,
    /// Bytes the message cap left out of this call.
    pub capped: u64,
    /// Non-zero: the exchange's sampling decision is still to be taken (by
    /// the capture program, before anything is copied).
    pub decide: u64,
}
