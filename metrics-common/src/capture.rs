//! The audit path's kernel -> user payload capture: events in the
//! `PAYLOADS` ring buffer are a `ChunkHeader` followed by `len` bytes of one
//! connection's stream (at most `CHUNK_BYTES`), so no event reserves the worst
//! case. Capture is off unless the agent turns it on (`CAPTURE` slots).

/// Payload bytes per event at most.
pub const CHUNK_BYTES: usize = 4096;
/// Events per intercepted call at most (`CHUNK_BYTES` each): 256 KiB.
pub const CHUNKS_PER_CALL: u32 = 64;
/// Size of the `PAYLOADS` ring buffer.
pub const PAYLOADS_BYTES: u32 = 16 << 20;

/// `ChunkHeader::kind`. With no payload (`len` 0): the direction's bytes
/// up to `offset` passed uncaptured (past the message cap).
pub const KIND_DATA: u8 = 1;
/// The proxy closed the connection (no payload).
pub const KIND_CLOSE: u8 = 2;

/// `ChunkHeader::direction`: the proxy read the bytes / wrote them.
pub const DIR_READ: u8 = 0;
pub const DIR_WRITE: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Identifies the connection for its lifetime (fd numbers are reused).
    pub conn_id: u64,
    /// Position of the first byte in this direction's stream since tracking began.
    pub offset: u64,
    /// ktime (ns) of the call that moved the bytes.
    pub ts_ns: u64,
    pub tgid: u32,
    pub fd: u32,
    /// Payload bytes following this header.
    pub len: u32,
    pub direction: u8,
    /// `conn::SIDE_*`.
    pub side: u8,
    pub kind: u8,
    /// Provider slot of an upstream connection.
    pub provider: u8,
    /// The exchange these bytes belong to was sampled 1 in this many (the
    /// interval in force when its client request started); 0 on a close.
    pub sample_every: u32,
    /// Explicit padding (zero).
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<ChunkHeader>() == 48);

#[cfg(feature = "user")]
unsafe impl aya::Pod for ChunkHeader {}

/// Largest sampling interval: it travels in the top 16 bits of
/// `ConnState::flags` (`conn::CONN_SAMPLE_SHIFT`).
pub const MAX_SAMPLE_EVERY: u32 = 0xffff;

/// Slots of the `CAPTURE` control array.
pub mod control {
    /// Non-zero: capture payloads (the agent's circuit breaker clears it).
    pub const ENABLED: u32 = 0;
    /// Capture one exchange in N (request and response, client and upstream
    /// side); 0 or 1: every exchange. The agent raises and lowers it under
    /// load (adaptive sampling); at most `MAX_SAMPLE_EVERY`.
    pub const SAMPLE_EVERY: u32 = 1;
    /// Bytes captured per message (request or response) at most, in KiB.
    pub const MESSAGE_CAP_KIB: u32 = 2;
    pub const SLOTS: u32 = 4;
}
