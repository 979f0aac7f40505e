//! Recording requests into the hot-path counters and histograms: their
//! starts, first response bytes and ends, and what framing a response found
//! (`framing_outcome`: its end, or framing lost). A request start also
//! marks its capture decision due (`sampling`).

use metrics_common::{
    conn::{
        CONN_IN_FLIGHT, CONN_RESPONSE_STARTED, ConnState, EV_END, EV_MALFORMED, PHASE_IDLE, PHASE_LOST, SIDE_CLIENT,
        SIDE_UPSTREAM,
    },
    counters as c,
    histogram::{HIST_BUCKETS, bucket_of},
    providers::MAX_PROVIDERS,
};

use crate::{
    maps::{
        COUNTERS, PROVIDER_FAILED, PROVIDER_HISTOGRAM, PROVIDER_LATENCY_SUM_US, PROVIDER_REQUESTS, REQUEST_HISTOGRAM,
        TTFB_HISTOGRAM, add,
    },
    sampling::sample_request,
};

/// Connection flags cleared when a new request starts.
const CONN_RESPONSE_FLAGS: u32 = CONN_RESPONSE_STARTED;

/// Framing outcome when the step budget ran out with bytes left.
pub const EV_BUDGET: u32 = 100;

/// A request seen starting on `conn` at `now`.
#[inline(always)]
pub fn request_started(conn: &mut ConnState, now: u64, head: bool) {
    conn.flags = (conn.flags & !(CONN_IN_FLIGHT | CONN_RESPONSE_FLAGS)) | CONN_IN_FLIGHT;
    conn.request_ns = now;
    conn.last_response_ns = now;
    conn.response.expect_response(head);
    sample_request(conn);
    if conn.side == SIDE_CLIENT {
        add(&COUNTERS, c::REQUESTS_TOTAL, 1);
    } else if conn.side == SIDE_UPSTREAM {
        add(&PROVIDER_REQUESTS, provider_slot(conn), 1);
    }
}

/// The first response byte of the in-flight request passed at `now`.
#[inline(always)]
pub fn response_started(conn: &ConnState, now: u64) {
    if conn.side == SIDE_CLIENT {
        let us = now.saturating_sub(conn.request_ns) / 1000;
        add(&TTFB_HISTOGRAM, bucket_of(us), 1);
        add(&COUNTERS, c::TTFB_SUM_US, us);
    }
}

/// The in-flight request finished: its response ended at `end_ns`, or the
/// connection closed first (`complete == false`).
#[inline(always)]
pub fn request_finished(conn: &mut ConnState, end_ns: u64, complete: bool) {
    if conn.flags & CONN_IN_FLIGHT == 0 {
        return;
    }
    conn.flags &= !CONN_IN_FLIGHT;
    conn.response.phase = PHASE_IDLE;
    let status = conn.response.status;
    let failed = !complete || status >= 400 || status < 200;
    let us = end_ns.saturating_sub(conn.request_ns) / 1000;
    let bucket = bucket_of(us);
    if conn.side == SIDE_CLIENT {
        let class = status_class(status);
        add(&COUNTERS, class, 1);
        if failed {
            add(&COUNTERS, c::REQUESTS_FAILED, 1);
        }
        add(&REQUEST_HISTOGRAM, bucket, 1);
        add(&COUNTERS, c::REQUEST_DURATION_SUM_US, us);
    } else if conn.side == SIDE_UPSTREAM {
        let p = provider_slot(conn);
        add(&PROVIDER_LATENCY_SUM_US, p, us);
        add(&PROVIDER_HISTOGRAM, p * HIST_BUCKETS + bucket, 1);
        if failed {
            add(&PROVIDER_FAILED, p, 1);
        }
    }
}

/// Acts on what parsing a call's bytes found.
#[inline(always)]
pub fn framing_outcome(conn: &mut ConnState, ev: u32, now: u64) {
    if ev == EV_END {
        request_finished(conn, now, true);
    } else if ev == EV_MALFORMED || ev == EV_BUDGET {
        conn.response.phase = PHASE_LOST;
        add(&COUNTERS, c::FRAMING_LOST, 1);
    }
}

/// The `responses_*` counter of a final status (`RESPONSES_NONE` when no
/// final status was seen), shared by the HTTP/1.x and HTTP/2 framing.
#[inline(always)]
pub fn status_class(status: u32) -> u32 {
    if status < 200 {
        c::RESPONSES_NONE
    } else if status < 300 {
        c::RESPONSES_2XX
    } else if status < 400 {
        c::RESPONSES_3XX
    } else if status < 500 {
        c::RESPONSES_4XX
    } else {
        c::RESPONSES_5XX
    }
}

/// The provider slot of an upstream connection (the last slot for any
/// out-of-range value).
#[inline(always)]
pub fn provider_slot(conn: &ConnState) -> u32 {
    let p = conn.provider as u32;
    if p < MAX_PROVIDERS { p } else { MAX_PROVIDERS - 1 }
}
