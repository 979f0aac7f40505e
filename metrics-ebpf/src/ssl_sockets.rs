//! Which socket an OpenSSL `SSL*` reads and writes, learnt from the socket
//! calls: the socket hooks (`data`) see the ciphertext and tie, the SSL
//! uprobes (`probes/ssl`) see the plaintext and look the socket up here.
//!
//! Tying an `SSL*` to its socket:
//! - socket BIOs (nginx, most C programs): while a thread is inside an SSL
//!   call (or `SSL_do_handshake`), the socket calls OpenSSL makes are nested
//!   in it; such a nested call records `SSL* -> fd` and marks the connection
//!   TLS.
//! - memory BIOs (Node.js, Python's `ssl` under asyncio/uvloop): OpenSSL
//!   writes its records into a memory BIO, and the runtime sends them on the
//!   socket itself, after the SSL call, possibly after other connections'
//!   calls. A `BIO_write` inside an SSL call or handshake keeps a print of the
//!   record it writes (the 16 bytes after the record header) with the `SSL*`;
//!   the socket write outside any SSL call that begins with that record ties
//!   the `SSL*` to its socket. A connection's first bytes are such a write
//!   (the ClientHello, or a server's first flight), so it is tied before any
//!   plaintext, whatever order the runtime reads, decrypts and sends in.
//!   (Reads cannot tie: an event loop reads several sockets before it
//!   decrypts any, so "the next SSL call after a read" is not that read's.)

use aya_ebpf::{helpers::bpf_probe_read_user, macros::map, maps::LruHashMap};
use metrics_common::conn::{CONN_TLS, ConnState};

use crate::maps::{CALL_WRITE_BUF, CALL_WRITE_IOV, CONNS, Call, TARGET_SSL_SEEN, target_flags};

/// An SSL call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslCall {
    pub ssl: u64,
    pub buf: u64,
    /// `_ex` forms: where the byte count is written; 0 otherwise.
    pub count_ptr: u64,
    /// `CALL_READ_BUF` or `CALL_WRITE_BUF`.
    pub kind: u32,
    /// The socket seen in a nested call, or u32::MAX.
    pub fd: u32,
}

/// SSL calls in progress, by pid_tgid.
#[map]
pub static SSL_CALLS: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16_384, 0);
/// Handshakes in progress, by pid_tgid: the `SSL*`.
#[map]
pub static SSL_HANDSHAKES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16_384, 0);
/// An `SSL*` of one process (addresses repeat across processes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// `SSL*` -> socket fd.
#[map]
pub static SSL_FDS: LruHashMap<SslKey, u32> = LruHashMap::with_max_entries(65_536, 0);

/// 16 bytes of a TLS record, after its 5-byte header, in one process: the
/// start of a record's ciphertext (or of a ClientHello's random), unique to
/// one record of one connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RecordPrint {
    pub tgid: u32,
    pub _pad: u32,
    pub bytes: [u8; 16],
}

/// TLS record header: type, version, length.
const RECORD_HEADER_LEN: u64 = 5;
/// Record content types: change_cipher_spec, alert, handshake,
/// application_data, heartbeat.
const TLS_CONTENT_TYPES: core::ops::RangeInclusive<u8> = 20..=24;
const TLS_MAJOR_VERSION: u8 = 3;
/// A write shorter than this holds no full `RecordPrint`.
pub const PRINTED_LEN: u64 = RECORD_HEADER_LEN + 16;

/// Records an SSL call wrote into its BIO (memory BIOs: still to be sent by
/// the runtime), by `RecordPrint`: the `SSL*` that wrote them.
#[map]
pub static RECORDS_WRITTEN: LruHashMap<RecordPrint, u64> = LruHashMap::with_max_entries(16_384, 0);

pub fn ssl_key(tgid: u32, ssl: u64) -> SslKey {
    SslKey { tgid, _pad: 0, ssl }
}

/// The `SSL*` of the SSL call or handshake thread `id` is inside, if any.
#[inline(always)]
pub fn ssl_in_progress(id: u64) -> Option<u64> {
    // SAFETY: the values are copied.
    if let Some(call) = unsafe { SSL_CALLS.get(&id) } {
        return Some(call.ssl);
    }
    unsafe { SSL_HANDSHAKES.get(&id) }.copied()
}

/// The `RecordPrint` of the bytes at `ptr`, when they begin with a TLS
/// record header (content type 20..=24, protocol major 3). OpenSSL also
/// writes bare handshake messages into a memory BIO of its own (the
/// transcript kept until the hash is chosen): those are not records.
#[inline(always)]
pub fn record_print(tgid: u32, ptr: u64) -> Option<RecordPrint> {
    // SAFETY: reading user memory through the helper.
    let head = unsafe { bpf_probe_read_user(ptr as *const [u8; PRINTED_LEN as usize]) }.ok()?;
    if !(TLS_CONTENT_TYPES.contains(&head[0]) && head[1] == TLS_MAJOR_VERSION) {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&head[RECORD_HEADER_LEN as usize..]);
    Some(RecordPrint { tgid, _pad: 0, bytes })
}

/// A socket write of `n` bytes of TLS ciphertext (`call`) returned on thread
/// `id`. Outside any SSL call it is a runtime sending what a memory BIO
/// holds: when it begins with a record an SSL call wrote (`RECORDS_WRITTEN`),
/// that `SSL*` is tied to this socket. The match is by content, so it holds
/// whatever the runtime did between the SSL call and the send (other
/// connections' calls, queued writes), and it happens at the connection's
/// first bytes (the ClientHello, or a server's first flight), before any
/// plaintext. An `SSL*` address reused by a new connection is re-tied by
/// that connection's first write.
#[inline(always)]
pub fn note_ciphertext_write(id: u64, call: &Call, n: u64, conn: &mut ConnState) {
    let tgid = (id >> 32) as u32;
    if n < PRINTED_LEN || target_flags(tgid).unwrap_or(0) & TARGET_SSL_SEEN == 0 {
        return; // too short, or no SSL call seen in this process: no record to match
    }
    if ssl_in_progress(id).is_some() {
        return; // nested in an SSL call: tied by `note_nested_socket_call`
    }
    let start = if call.kind == CALL_WRITE_IOV {
        // The first iovec: { base, len }.
        // SAFETY: reading user memory through the helper.
        match unsafe { bpf_probe_read_user(call.ptr as *const [u64; 2]) } {
            Ok([base, len]) if len >= PRINTED_LEN => base,
            _ => return,
        }
    } else if call.kind == CALL_WRITE_BUF {
        call.ptr
    } else {
        return;
    };
    let Some(print) = record_print(tgid, start) else { return };
    // SAFETY: the value is copied.
    let Some(ssl) = unsafe { RECORDS_WRITTEN.get(&print) }.copied() else { return };
    let _ = RECORDS_WRITTEN.remove(&print);
    let _ = SSL_FDS.insert(&ssl_key(tgid, ssl), &call.fd, 0);
    conn.flags |= CONN_TLS;
}

/// Called at the entry of every socket call of a target whose SSL calls
/// have been seen (`TARGET_SSL_SEEN`): inside an SSL call
/// or handshake, ties the `SSL*` to `fd` and marks the connection TLS.
#[inline(always)]
pub fn note_nested_socket_call(id: u64, tgid: u32, fd: u32) {
    let ssl = if let Some(call) = SSL_CALLS.get_ptr_mut(&id) {
        // SAFETY: a valid map value pointer.
        let call = unsafe { &mut *call };
        call.fd = fd;
        call.ssl
    } else if let Some(ssl) = unsafe { SSL_HANDSHAKES.get(&id) }.copied() {
        ssl
    } else {
        return;
    };
    let _ = SSL_FDS.insert(&ssl_key(tgid, ssl), &fd, 0);
    if let Some(conn) = CONNS.get_ptr_mut(&metrics_common::maps::conn_key(tgid, fd)) {
        // SAFETY: a valid map value pointer.
        unsafe { (*conn).flags |= CONN_TLS };
    }
}
