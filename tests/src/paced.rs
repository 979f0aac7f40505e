//! A paced OpenAI chat stream from the mock provider and the streaming
//! times (time to first token, time per output token or chunk) any report
//! of it must show, with the tolerance the checks allow.
//!
//! The schedule (`mock.rs`): a role-only delta at once (not a token), then
//! content events 1..=5, one every 200 ms, then the usage chunk (completion
//! 55 tokens) and `[DONE]`. The agent times each event when the proxy reads
//! it (upstream side) or writes it (client side), from the first request
//! byte, which comes before the mock starts its schedule: a time can be late
//! by scheduling on a loaded machine, never early (2 ms for clock
//! granularity). A gap between two events can shrink when its first event
//! was the late one, so gaps are checked through the time of the last
//! content event (first token + gaps), which is never early either.

/// The query that paces a mock OpenAI chat stream as described above.
pub const QUERY: &str = "events=6&interval_ms=200&usage=1&role_first=1";
/// Time between two content events, and to the first one, in ms.
pub const INTERVAL_MS: f64 = 200.0;
/// Content-bearing events of the stream (the role-only delta is not one).
pub const CONTENT_EVENTS: u64 = 5;
/// Output tokens of the stream's usage chunk.
pub const OUTPUT_TOKENS: u64 = 55;
/// How much earlier than the schedule a time may be (clock granularity).
pub const EARLY_MS: f64 = 2.0;
/// How much later than the schedule a time may be (a loaded machine);
/// less than one interval, so a time taken at the wrong event fails.
pub const LATE_MS: f64 = 150.0;

/// The first content event's time from the request's start, in ms.
pub const FIRST_CONTENT_MS: f64 = INTERVAL_MS;
/// The last content event's time from the request's start, in ms.
pub const LAST_CONTENT_MS: f64 = INTERVAL_MS * CONTENT_EVENTS as f64;

/// Panics unless `measured` (ms) is within the tolerance of `expected`;
/// `resolution` (>= 1) widens it by the relative error of how the value
/// was reported (1.0 when exact).
pub fn check(what: &str, measured: f64, expected: f64, resolution: f64) {
    let (low, high) = ((expected - EARLY_MS) / resolution, (expected + LATE_MS) * resolution);
    assert!(
        (low..=high).contains(&measured),
        "{what}: {measured} ms, expected {expected} ms of the schedule (within {low:.1}..={high:.1} ms)"
    );
}

/// Checks a report of the paced stream: `first_token_ms` (time to first
/// token), `mean_gap_ms` (time per output chunk: mean gap between content
/// events) and `per_token_ms` (time per output token), each given one
/// checked against the schedule (a zero fails: the last content event
/// would come at the first's time).
pub fn check_times(
    what: &str,
    first_token_ms: f64,
    mean_gap_ms: Option<f64>,
    per_token_ms: Option<f64>,
    resolution: f64,
) {
    check(&format!("{what}: time to first token"), first_token_ms, FIRST_CONTENT_MS, resolution);
    if let Some(gap) = mean_gap_ms {
        let last = first_token_ms + gap * (CONTENT_EVENTS - 1) as f64;
        check(&format!("{what}: first token + time per output chunk x 4 gaps"), last, LAST_CONTENT_MS, resolution);
    }
    if let Some(per_token) = per_token_ms {
        let last = first_token_ms + per_token * (OUTPUT_TOKENS - 1) as f64;
        check(&format!("{what}: first token + time per output token x 54"), last, LAST_CONTENT_MS, resolution);
    }
}
