//! What a data call on a traced socket does, whichever hook saw it: the
//! libc uprobes and the syscall tracepoints stash a call's arguments at its
//! entry (`stash*`) and finish it at its return (`data_returned`); the socket
//! tracepoints see both at once and call `data_done` directly. `data_done`
//! counts the bytes, classifies a new connection, ties TLS, and hands
//! HTTP/1.x bytes to the framing engine (`framing`).

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user};
use metrics_common::{
    conn::{
        CONN_ADOPTED, CONN_GO_UNSEEN, CONN_PLAINTEXT, CONN_PREEXISTING, CONN_SOCK_MAPPED, CONN_TLS, ConnState,
        METHOD_NONE, PROTO_HTTP1, PROTO_TLS, PROTO_UNCLASSIFIED, PROTO_UNDETERMINED, SIDE_CLIENT, SIDE_UPSTREAM,
        request_method,
    },
    counters as c,
    events::CONN_ADOPTED as CONN_ADOPTED_EVENT,
    maps::conn_key,
};

use crate::{
    ctx::{CallArgs, CallReturn},
    events::emit,
    framing::{http_and_capture, peek, peer_closed},
    maps::{
        CALL_READ_BUF, CALL_READ_IOV, CALL_READ_NOBUF, CALL_READ_UNKNOWN, CALL_WRITE_IOV, CALLS, CONNS, COUNTERS, Call,
        PROBE_HITS, TARGET_SSL_SEEN, add, is_target, target_flags,
    },
    ssl_sockets::{note_ciphertext_write, note_nested_socket_call},
};

/// recv(2) flag: look at queued bytes without consuming them.
pub const MSG_PEEK: u64 = 2;
/// `kind + MSGHDR`: the pointer argument is a `struct msghdr` (recvmsg/sendmsg).
pub const MSGHDR: u32 = 100;
/// First bytes of a TLS connection: a handshake record, protocol major 3.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
const TLS_MAJOR_VERSION: u8 = 0x03;

/// Entry of a data call (uprobe and syscall modes): stashes its arguments
/// when the fd is traced.
#[inline(always)]
pub fn stash<A: CallArgs>(ctx: &A, kind: u32, hit: u32) {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let Some(target) = target_flags(tgid) else { return };
    add(&PROBE_HITS, hit, 1);
    let fd = ctx.arg_int(0);
    if fd < 0 {
        return;
    }
    if let Some(call) = traced_call(id, tgid, target, fd as u32, kind, ctx.arg_u64(1), ctx.arg_u64(2)) {
        let _ = CALLS.insert(&id, &call, 0);
    }
}

/// The call to follow for `fd`, or `None` when the fd is not a traced
/// connection. Files, pipes and eventfds are skipped here, except plain
/// reads, which may be the first request on a connection accepted by an
/// accept() that was already blocking when the agent attached. `target` is
/// the process's `TARGETS` value.
#[inline(always)]
pub fn traced_call(id: u64, tgid: u32, target: u32, fd: u32, kind: u32, ptr: u64, count: u64) -> Option<Call> {
    traced_call_conn(id, tgid, target, fd, kind, ptr, count).map(|(call, _)| call)
}

/// `traced_call`, with the connection's state (null for a plain read of an
/// fd not traced yet), for hooks that see a call's arguments and its result
/// in one program run (socket tracepoints): the one `CONNS` lookup of the call.
#[inline(always)]
pub fn traced_call_conn(
    id: u64,
    tgid: u32,
    target: u32,
    fd: u32,
    kind: u32,
    ptr: u64,
    count: u64,
) -> Option<(Call, *mut ConnState)> {
    if target & TARGET_SSL_SEEN != 0 {
        note_nested_socket_call(id, tgid, fd);
    }
    let mut kind = kind;
    let conn = CONNS.get_ptr_mut(&conn_key(tgid, fd)).unwrap_or(core::ptr::null_mut());
    if conn.is_null() {
        if kind != CALL_READ_BUF {
            return None;
        }
        kind = CALL_READ_UNKNOWN;
    }
    let (mut ptr, mut count) = (ptr, count);
    if kind == CALL_READ_IOV + MSGHDR || kind == CALL_WRITE_IOV + MSGHDR {
        // struct msghdr { name; namelen; iov @16; iovlen @24; ... }
        // SAFETY: reading user memory through the helper.
        let iov: u64 = unsafe { bpf_probe_read_user((ptr + 16) as *const u64) }.unwrap_or(0);
        count = unsafe { bpf_probe_read_user((ptr + 24) as *const u64) }.unwrap_or(0);
        ptr = iov;
        kind -= MSGHDR;
    }
    Some((Call { fd, kind, ptr, count }, conn))
}

/// recv/recvfrom: a `MSG_PEEK` read leaves the bytes queued, so it is not
/// counted (the real read that follows is).
#[inline(always)]
pub fn stash_recv<A: CallArgs>(ctx: &A, hit: u32) {
    if ctx.arg_u64(3) & MSG_PEEK == 0 {
        stash(ctx, CALL_READ_BUF, hit);
    } else if is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        add(&PROBE_HITS, hit, 1);
    }
}

/// recvmsg: like recv, a `MSG_PEEK` read is not counted.
#[inline(always)]
pub fn stash_recvmsg<A: CallArgs>(ctx: &A, hit: u32) {
    if ctx.arg_u64(2) & MSG_PEEK == 0 {
        stash(ctx, CALL_READ_IOV + MSGHDR, hit);
    } else if is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        add(&PROBE_HITS, hit, 1);
    }
}

/// Return of a stashed data call (uprobe and syscall modes).
#[inline(always)]
pub fn data_returned<C: CallReturn>(ctx: &C, hit: u32) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { CALLS.get(&id) }).copied() else { return 0 };
    let _ = CALLS.remove(&id);
    add(&PROBE_HITS, hit, 1);
    data_done(ctx, id, call, ctx.return_value())
}

/// A data call on a traced connection moved `ret` bytes (or failed, or hit
/// the end of the stream): count the bytes, advance the connection's state,
/// then tail-call payload capture (when this exchange is sampled) and
/// response parsing (when this call carried response bytes).
#[inline(always)]
pub fn data_done<C: CallReturn>(ctx: &C, id: u64, call: Call, ret: i64) -> u32 {
    let conn = if call.kind == CALL_READ_UNKNOWN {
        core::ptr::null_mut()
    } else {
        let Some(conn) = CONNS.get_ptr_mut(&conn_key((id >> 32) as u32, call.fd)) else { return 0 };
        conn
    };
    data_done_on(ctx, id, call, ret, conn)
}

/// `data_done` on the connection state `conn` already looked up (null for
/// a `CALL_READ_UNKNOWN` call, whose connection may be adopted here).
#[inline(always)]
pub fn data_done_on<C: CallReturn>(ctx: &C, id: u64, call: Call, ret: i64, conn: *mut ConnState) -> u32 {
    let tgid = (id >> 32) as u32;
    let mut call = call;
    let mut conn = conn;
    if call.kind == CALL_READ_UNKNOWN {
        call.kind = CALL_READ_BUF;
        if ret <= 0 || !adopt_client_connection(tgid, &call, ret as u64) {
            return 0;
        }
        let Some(adopted) = CONNS.get_ptr_mut(&conn_key(tgid, call.fd)) else { return 0 };
        conn = adopted;
    }
    if conn.is_null() {
        return 0;
    }
    // SAFETY: a valid map value pointer (checked above) for the duration of the program.
    let conn = unsafe { &mut *conn };
    let is_read = is_read(call.kind);
    if ret == 0 && is_read {
        peer_closed(conn);
        return 0;
    }
    if ret <= 0 {
        return 0;
    }
    let n = ret as u64;
    // A Go `Write` tied to this connection before it carried any byte
    // (`probes/gotls.rs`): these first bytes confirm or undo the tie.
    let unseen_go = conn.flags & CONN_GO_UNSEEN != 0;
    if unseen_go
        || (conn.proto == PROTO_UNDETERMINED
            && conn.flags & (CONN_PREEXISTING | CONN_PLAINTEXT) == 0
            && call.kind != CALL_READ_NOBUF
            && call.kind != crate::maps::CALL_SENDFILE)
    {
        // One peek for both (the verifier walks each inlined copy).
        let (first, len) = peek(&call, n);
        let handshake = len >= 2 && first[0] == TLS_HANDSHAKE_RECORD && first[1] == TLS_MAJOR_VERSION;
        if handshake {
            if !unseen_go {
                conn.proto = PROTO_TLS;
            }
            add(&COUNTERS, c::TLS_CONNECTIONS, 1);
        }
        if unseen_go {
            conn.flags &= !CONN_GO_UNSEEN;
            if !handshake {
                untie_go(conn);
            }
        }
    }
    let tls = conn.proto == PROTO_TLS || conn.flags & CONN_TLS != 0;
    count_bytes(conn, is_read, n, tls);
    if tls && !is_read {
        note_ciphertext_write(id, &call, n, conn);
    }
    if conn.flags & CONN_TLS != 0 {
        return 0; // ciphertext: the SSL probes see the plaintext
    }
    if conn.proto == PROTO_UNCLASSIFIED {
        add(&COUNTERS, c::UNCLASSIFIED_BYTES, n);
        return 0;
    }
    if conn.proto == PROTO_TLS {
        add(&COUNTERS, c::TLS_OPAQUE_BYTES, n);
        return 0;
    }
    http_and_capture(ctx, conn, &call, tgid, n, is_read)
}

/// A connection a Go `Write` was tied to before it carried any byte
/// (`probes/gotls.rs`) whose first bytes are not a TLS handshake record:
/// the fd read through the `*tls.Conn` was not this connection's, so it is
/// tracked afresh from these bytes (the one `Write` counted on it stays
/// counted).
#[inline(always)]
fn untie_go(conn: &mut ConnState) {
    *conn = ConnState {
        side: conn.side,
        provider: conn.provider,
        flags: conn.flags & CONN_SOCK_MAPPED,
        conn_id: conn.conn_id,
        ..ConnState::default()
    };
}

/// True for the call kinds that move bytes toward the proxy.
#[inline(always)]
pub fn is_read(kind: u32) -> bool {
    kind == CALL_READ_BUF || kind == CALL_READ_IOV || kind == CALL_READ_NOBUF
}

/// Plaintext an SSL call moved on `fd`: counted as the connection's HTTP
/// bytes (its socket bytes went to the TLS counters), then the HTTP/1.1
/// logic, capture and parsing as for a clear-text socket.
#[inline(always)]
pub fn process_plaintext<C: CallReturn>(ctx: &C, tgid: u32, fd: u32, kind: u32, buf: u64, n: u64) -> u32 {
    let Some(conn) = CONNS.get_ptr_mut(&conn_key(tgid, fd)) else {
        // Tied to a socket the agent does not trace: lost, and counted.
        add(&COUNTERS, c::TLS_UNTIED_BYTES, n);
        return 0;
    };
    // SAFETY: a valid map value pointer for the duration of the program.
    let conn = unsafe { &mut *conn };
    conn.flags |= CONN_TLS;
    if conn.flags & CONN_PLAINTEXT == 0 {
        conn.flags |= CONN_PLAINTEXT;
        add(&COUNTERS, c::TLS_PLAINTEXT_CONNECTIONS, 1);
        if conn.proto == PROTO_TLS {
            // The plaintext is classified afresh, like a new connection's bytes.
            conn.proto = PROTO_UNDETERMINED;
        }
    }
    let is_read = kind == CALL_READ_BUF;
    count_bytes(conn, is_read, n, false);
    let call = Call { fd, kind, ptr: buf, count: 0 };
    http_and_capture(ctx, conn, &call, tgid, n, is_read)
}

/// The peer of a TLS connection closed its session.
#[inline(always)]
pub fn plaintext_peer_closed(tgid: u32, fd: u32) {
    if let Some(conn) = CONNS.get_ptr_mut(&conn_key(tgid, fd)) {
        // SAFETY: a valid map value pointer.
        peer_closed(unsafe { &mut *conn });
    }
}

/// An untracked fd whose read returned a request line: a client connection
/// accepted before the agent attached (by a call already in progress). It is
/// tracked from here on; the agent checks it really is a TCP socket.
#[inline(always)]
fn adopt_client_connection(tgid: u32, call: &Call, n: u64) -> bool {
    let (first, len) = peek(call, n);
    if request_method(&first, len) == METHOD_NONE {
        return false;
    }
    let key = conn_key(tgid, call.fd);
    let conn = ConnState {
        side: SIDE_CLIENT,
        proto: PROTO_HTTP1,
        flags: CONN_ADOPTED,
        conn_id: crate::capture::new_conn_id(key),
        ..ConnState::default()
    };
    if CONNS.insert(&key, &conn, 0).is_err() {
        return false;
    }
    emit(CONN_ADOPTED_EVENT, tgid, call.fd);
    true
}

/// HTTP bytes (`llm_proxy_bytes_*`: clear text, or TLS plaintext) or TLS
/// wire bytes (`llm_proxy_tls_bytes_*`: records and handshakes).
#[inline(always)]
fn count_bytes(conn: &ConnState, is_read: bool, n: u64, tls: bool) {
    let slot = match (conn.side, is_read, tls) {
        (SIDE_CLIENT, true, false) => c::BYTES_RECEIVED_CLIENT,
        (SIDE_CLIENT, false, false) => c::BYTES_SENT_CLIENT,
        (SIDE_UPSTREAM, true, false) => c::BYTES_RECEIVED_UPSTREAM,
        (SIDE_UPSTREAM, false, false) => c::BYTES_SENT_UPSTREAM,
        (_, true, false) => c::BYTES_RECEIVED_UNKNOWN,
        (_, false, false) => c::BYTES_SENT_UNKNOWN,
        (SIDE_CLIENT, true, true) => c::TLS_BYTES_RECEIVED_CLIENT,
        (SIDE_CLIENT, false, true) => c::TLS_BYTES_SENT_CLIENT,
        (SIDE_UPSTREAM, true, true) => c::TLS_BYTES_RECEIVED_UPSTREAM,
        (SIDE_UPSTREAM, false, true) => c::TLS_BYTES_SENT_UPSTREAM,
        (_, true, true) => c::TLS_BYTES_RECEIVED_UNKNOWN,
        (_, false, true) => c::TLS_BYTES_SENT_UNKNOWN,
    };
    add(&COUNTERS, slot, n);
}
