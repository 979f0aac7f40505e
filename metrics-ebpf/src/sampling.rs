//! Which exchanges are captured: one in `SAMPLE_EVERY`, decided once per
//! exchange. A request start marks the decision due (`sample_request`); the
//! capture program takes it (`decide`) before it copies anything, and an
//! upstream exchange follows the decision of its thread's client exchange.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, maps::LruHashMap};
use metrics_common::{
    capture::{MAX_SAMPLE_EVERY, control},
    conn::{
        CONN_CAPTURE, CONN_SAMPLE_MASK, CONN_SAMPLE_PENDING, CONN_SAMPLE_SHIFT, ConnState, SIDE_CLIENT, SIDE_UPSTREAM,
    },
    counters as c,
};

use crate::maps::{COUNTERS, add, capture_control};

/// The last sampling decision of each proxy thread, taken when it started a
/// client request: bit 31 set, and the interval N in the low 16 bits when
/// the exchange is captured (0 when it is not). An upstream request the
/// same thread starts next follows it, so a sampled client exchange keeps
/// its upstream exchange. LRU-bounded: a thread not seen for a while loses
/// its entry and its upstream requests fall back to their own sampling.
#[aya_ebpf::macros::map]
static SAMPLE_DECISIONS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16_384, 0);
const DECIDED: u32 = 1 << 31;

/// At a request start: the exchange's capture decision is due. It is taken
/// by the capture program (`decide`), tail-called in the same call: taking
/// it in the data programs multiplies their verifier states past the limit.
#[inline(always)]
pub fn sample_request(conn: &mut ConnState) {
    conn.flags = (conn.flags & !(CONN_CAPTURE | CONN_SAMPLE_MASK)) | CONN_SAMPLE_PENDING;
    conn.captured_request = 0;
    conn.captured_response = 0;
}

/// Decides whether the exchange that just started is captured, one in
/// `SAMPLE_EVERY`. A client request takes the next number of the sampling
/// sequence and leaves its decision for its thread; an upstream request
/// follows its thread's last client decision, or takes a number itself when
/// the thread has none (a proxy whose upstream calls run on other threads
/// than its client reads: documented limit).
#[inline(always)]
pub fn decide(conn: &mut ConnState) {
    conn.flags &= !CONN_SAMPLE_PENDING;
    if capture_control(control::ENABLED) == 0 {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let mut sampled_at = 0;
    // SAFETY: the value is copied out at once.
    let followed =
        if conn.side == SIDE_UPSTREAM { unsafe { SAMPLE_DECISIONS.get(&tid) }.copied().unwrap_or(0) } else { 0 };
    if followed & DECIDED != 0 {
        sampled_at = followed & MAX_SAMPLE_EVERY;
    } else {
        let every = capture_control(control::SAMPLE_EVERY) & MAX_SAMPLE_EVERY;
        let every = if every == 0 { 1 } else { every };
        let seq = COUNTERS.get(c::CAPTURE_SEQUENCE).copied().unwrap_or(0);
        add(&COUNTERS, c::CAPTURE_SEQUENCE, 1);
        if seq % every as u64 == 0 {
            sampled_at = every;
        }
        if conn.side == SIDE_CLIENT {
            let _ = SAMPLE_DECISIONS.insert(&tid, &(DECIDED | sampled_at), 0);
        }
    }
    if sampled_at != 0 {
        conn.flags |= CONN_CAPTURE | (sampled_at << CONN_SAMPLE_SHIFT);
    }
}
