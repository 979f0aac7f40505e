//! Connection lifecycle, whichever hook saw the call: `accept`/`accept4`
//! (client side), `connect` (upstream side, matched to a provider) and
//! `close` (finishes what is in flight and forgets the connection).

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user};
use metrics_common::{
    conn::{
        CONN_IN_FLIGHT, CONN_RESPONSE_STARTED, ConnState, PHASE_LOST, PHASE_UNTIL_CLOSE, SIDE_CLIENT, SIDE_UPSTREAM,
    },
    counters as c,
    maps::conn_key,
    probes,
    providers::{PROVIDER_OTHER, ProviderAddr},
};

use crate::{
    ctx::{CallArgs, CallReturn},
    maps::{CALL_ACCEPT, CALLS, CONNS, COUNTERS, Call, PROBE_HITS, PROVIDER_ADDRS, add, is_target},
    record::request_finished,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// DNS: resolvers `connect` UDP sockets to port 53; they are not proxied traffic.
const DNS_PORT: u16 = 53;

/// Entry of `accept`/`accept4`: the address buffer, read at return.
#[inline(always)]
pub fn accept_entered<A: CallArgs>(ctx: &A) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !is_target((id >> 32) as u32) {
        return 0;
    }
    add(&PROBE_HITS, probes::HIT_ACCEPT_ENTRY, 1);
    let call = Call { fd: 0, kind: CALL_ACCEPT, ptr: ctx.arg_u64(1), count: 0 };
    let _ = CALLS.insert(&id, &call, 0);
    0
}

/// Return of `accept`/`accept4`: a client-side connection.
#[inline(always)]
pub fn accept_returned<C: CallReturn>(ctx: &C) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { CALLS.get(&id) }).copied() else { return 0 };
    let _ = CALLS.remove(&id);
    add(&PROBE_HITS, probes::HIT_ACCEPT_RETURN, 1);
    let fd = ctx.return_value();
    if fd < 0 || call.kind != CALL_ACCEPT {
        return 0;
    }
    if call.ptr != 0 {
        // SAFETY: reading user memory through the helper.
        let family = unsafe { bpf_probe_read_user(call.ptr as *const u16) }.unwrap_or(0);
        if family != AF_INET && family != AF_INET6 {
            return 0;
        }
    }
    let key = conn_key((id >> 32) as u32, fd as u32);
    let conn = ConnState { side: SIDE_CLIENT, conn_id: crate::capture::new_conn_id(key), ..ConnState::default() };
    let _ = CONNS.insert(&key, &conn, 0);
    add(&COUNTERS, c::CONNECTIONS_ACCEPTED, 1);
    0
}

/// Entry of `connect`: an upstream connection. Recorded at entry: the result
/// of a non-blocking connect is only known later, and a failed connection
/// carries no bytes.
#[inline(always)]
pub fn connect_entered<A: CallArgs>(ctx: &A) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    add(&PROBE_HITS, probes::HIT_CONNECT_ENTRY, 1);
    let fd = ctx.arg_int(0);
    let addr = ctx.arg_u64(1);
    if fd < 0 || addr == 0 {
        return 0;
    }
    let Some(key) = read_peer(addr) else { return 0 };
    if key.port == DNS_PORT {
        return 0;
    }
    // SAFETY: the value is copied.
    let provider = unsafe { PROVIDER_ADDRS.get(&key) }.copied().unwrap_or(PROVIDER_OTHER);
    let key = conn_key(tgid, fd as u32);
    let conn = ConnState {
        side: SIDE_UPSTREAM,
        provider: provider as u8,
        conn_id: crate::capture::new_conn_id(key),
        ..ConnState::default()
    };
    let _ = CONNS.insert(&key, &conn, 0);
    add(&COUNTERS, c::CONNECTIONS_CONNECTED, 1);
    0
}

/// Reads an IPv4 or IPv6 `sockaddr` as a provider key; `None` for other families.
#[inline(always)]
fn read_peer(addr: u64) -> Option<ProviderAddr> {
    // SAFETY: reading user memory through the helper.
    let head: [u8; 8] = unsafe { bpf_probe_read_user(addr as *const [u8; 8]) }.ok()?;
    let family = u16::from_ne_bytes([head[0], head[1]]);
    let port = u16::from_be_bytes([head[2], head[3]]);
    if family == AF_INET {
        return Some(ProviderAddr::v4([head[4], head[5], head[6], head[7]], port));
    }
    if family == AF_INET6 {
        // SAFETY: as above; sockaddr_in6.sin6_addr is at offset 8.
        let a: [u8; 16] = unsafe { bpf_probe_read_user((addr + 8) as *const [u8; 16]) }.ok()?;
        return Some(ProviderAddr::new(a, port));
    }
    None
}

/// Entry of `close`: finishes what is in flight and forgets the connection.
#[inline(always)]
pub fn close_entered<A: CallArgs>(ctx: &A) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    add(&PROBE_HITS, probes::HIT_CLOSE_ENTRY, 1);
    let fd = ctx.arg_int(0);
    if fd < 0 {
        return 0;
    }
    let key = conn_key(tgid, fd as u32);
    let Some(conn) = CONNS.get_ptr_mut(&key) else { return 0 };
    // SAFETY: a valid map value pointer for the duration of the program.
    let conn = unsafe { &mut *conn };
    if conn.flags & CONN_IN_FLIGHT != 0 {
        let started = conn.flags & CONN_RESPONSE_STARTED != 0;
        // A close-delimited body the proxy writes ends when it closes; one it
        // reads ends at the peer's EOF (`peer_closed`), so an upstream still
        // in flight here was cut short by the proxy. A response whose framing
        // was lost is finished as complete, as when the next request starts.
        let phase = conn.response.phase;
        let closes_body = phase == PHASE_UNTIL_CLOSE && conn.side == SIDE_CLIENT;
        let complete = started && (closes_body || phase == PHASE_LOST);
        let end = if started { conn.last_response_ns } else { unsafe { bpf_ktime_get_ns() } };
        request_finished(conn, end, complete);
    }
    crate::capture::closed(conn, tgid, fd as u32, unsafe { bpf_ktime_get_ns() });
    let _ = CONNS.remove(&key);
    add(&COUNTERS, c::CONNECTIONS_CLOSED, 1);
    0
}
