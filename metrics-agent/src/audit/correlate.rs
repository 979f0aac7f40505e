//! Ties each client-side exchange to the upstream exchange the proxy made
//! for it, for proxy overhead and cache hits.
//!
//! Method: an upstream exchange belongs to a client exchange when it ran in
//! the same process, started between the client request's first byte and
//! the client response's last byte, and finished before that last byte
//! (within a small slack: the two sides are timed at different probes); of
//! several (retries), the latest-starting one is taken, and each is used once. Client records are held for `hold` so upstream
//! records finishing at nearly the same moment can arrive. Limits: a proxy
//! that multiplexes many clients over one worker and one provider may pair
//! overlapping exchanges crosswise (durations stay plausible); with
//! sampling (1 in N > 1) the upstream may not be captured, so a missing
//! upstream means "cache hit" only when every exchange is captured.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use super::pipeline::RequestRecord;

/// Recent upstream records kept per process.
const MAX_UPSTREAM_PER_PROCESS: usize = 512;
/// Processes whose upstream records are kept at most (workers that exited
/// leave theirs behind: the least recently active process makes room).
const MAX_PROCESSES: usize = 128;
/// Client records waiting at most.
const MAX_WAITING: usize = 4096;
/// An upstream record may end this much after its client record (ns): the
/// timestamps of the two sides are taken at different probe returns.
const END_SLACK_NS: u64 = 5_000_000;

/// What correlation needs of an upstream record (not a copy of all of it).
struct UpstreamSpan {
    start_ns: u64,
    end_ns: u64,
    duration_ms: f64,
    provider: Option<String>,
}

pub struct Correlator {
    upstream: HashMap<u32, VecDeque<UpstreamSpan>>,
    waiting: VecDeque<(Instant, RequestRecord)>,
    hold: Duration,
    /// Every exchange is captured (sample 1 in 1): no upstream means a hit.
    complete: bool,
}

fn end_ns(r: &RequestRecord) -> u64 {
    r.start_ns + (r.duration_ms * 1e6) as u64
}

impl Correlator {
    pub fn new(hold: Duration, complete: bool) -> Self {
        Self { upstream: HashMap::new(), waiting: VecDeque::new(), hold, complete }
    }

    /// Takes a record; returns those ready to be emitted.
    pub fn push(&mut self, record: RequestRecord, now: Instant) -> Vec<RequestRecord> {
        let mut out = Vec::new();
        if record.side == "upstream" {
            if !self.upstream.contains_key(&record.pid)
                && self.upstream.len() >= MAX_PROCESSES
                && let Some(idle) =
                    self.upstream.iter().min_by_key(|(_, l)| l.back().map_or(0, |u| u.start_ns)).map(|(p, _)| *p)
            {
                self.upstream.remove(&idle);
            }
            let list = self.upstream.entry(record.pid).or_default();
            if list.len() >= MAX_UPSTREAM_PER_PROCESS {
                list.pop_front();
            }
            list.push_back(UpstreamSpan {
                start_ns: record.start_ns,
                end_ns: end_ns(&record),
                duration_ms: record.duration_ms,
                provider: record.upstream_provider.clone(),
            });
            out.push(record);
        } else {
            if self.waiting.len() >= MAX_WAITING
                && let Some((_, r)) = self.waiting.pop_front()
            {
                out.push(self.finalize(r));
            }
            self.waiting.push_back((now + self.hold, record));
        }
        out.extend(self.tick(now));
        out
    }

    /// Client records whose hold has passed, correlated.
    pub fn tick(&mut self, now: Instant) -> Vec<RequestRecord> {
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|(due, _)| *due <= now) {
            let (_, r) = self.waiting.pop_front().expect("checked");
            out.push(self.finalize(r));
        }
        out
    }

    /// Capture lost events: a missing upstream record no longer proves a hit.
    pub fn capture_incomplete(&mut self) {
        self.complete = false;
    }

    /// Everything still held (at shutdown).
    pub fn drain(&mut self) -> Vec<RequestRecord> {
        let held: Vec<RequestRecord> = self.waiting.drain(..).map(|(_, r)| r).collect();
        held.into_iter().map(|r| self.finalize(r)).collect()
    }

    fn finalize(&mut self, mut client: RequestRecord) -> RequestRecord {
        let (start, end) = (client.start_ns, end_ns(&client));
        let found = self.upstream.get_mut(&client.pid).and_then(|list| {
            let i = list
                .iter()
                .enumerate()
                .filter(|(_, u)| u.start_ns >= start && u.start_ns <= end && u.end_ns <= end + END_SLACK_NS)
                .max_by_key(|(_, u)| u.start_ns)
                .map(|(i, _)| i)?;
            list.remove(i)
        });
        match found {
            Some(up) => {
                client.upstream_provider = up.provider;
                client.proxy_overhead_ms = Some((client.duration_ms - up.duration_ms).max(0.0));
                if client.cache_hit.is_none() {
                    client.cache_hit = Some(false);
                }
            }
            None => {
                if client.cache_hit.is_none() && self.complete && client.sample_every <= 1 {
                    client.cache_hit = Some(true);
                }
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::llm::Usage;

    fn record(side: &'static str, start_ms: u64, duration_ms: f64, provider: Option<&str>) -> RequestRecord {
        RequestRecord {
            timestamp_unix_ms: 0,
            start_ns: start_ms * 1_000_000,
            pid: 7,
            provider_slot: None,
            upstream_provider: provider.map(str::to_string),
            proxy_overhead_ms: None,
            cache_hit: None,
            side,
            provider: "openai",
            operation: "chat",
            endpoint: "/v1/chat/completions".into(),
            model_requested: None,
            model_returned: None,
            status: 200,
            error_type: None,
            streaming: false,
            tokens: Usage::default(),
            ttfb_ms: 0.0,
            duration_ms,
            session_id: None,
            user_id: None,
            api_key_hash: None,
            truncated: false,
            cost_usd: None,
            application_id: None,
            rate_limits: Default::default(),
            sample_every: 1,
        }
    }

    #[test]
    fn keep_alive_exchanges_pair_with_their_own_upstream_calls() {
        let mut c = Correlator::new(Duration::ZERO, true);
        let now = Instant::now();
        // Client 1: 0..10 ms, upstream 1: 1..9 ms; client 2: 11..20, upstream 2: 12..19.
        c.push(record("upstream", 1, 8.0, Some("a")), now);
        c.push(record("upstream", 12, 7.0, Some("b")), now);
        let out = c.push(record("client", 0, 10.0, None), now);
        let first = out.iter().find(|r| r.side == "client").unwrap();
        assert_eq!((first.upstream_provider.as_deref(), first.cache_hit), (Some("a"), Some(false)));
        assert_eq!(first.proxy_overhead_ms, Some(2.0));
        let out = c.push(record("client", 11, 9.0, None), now);
        assert_eq!(out[0].upstream_provider.as_deref(), Some("b"));
        // No upstream call at all: a cache hit when everything is captured.
        let out = c.push(record("client", 30, 1.0, None), now);
        assert_eq!(out[0].cache_hit, Some(true));
        let mut sampled = Correlator::new(Duration::ZERO, false);
        assert_eq!(sampled.push(record("client", 30, 1.0, None), now)[0].cache_hit, None);
    }
}
