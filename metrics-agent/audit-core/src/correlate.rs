//! Ties each client-side exchange to the upstream exchange the proxy made
//! for it, for proxy overhead, the upstream provider and cache hits.
//!
//! Content first, then time. A candidate is an upstream exchange of the
//! same process that started within the client exchange and ended before
//! its end (within a small slack: the two sides are timed at different
//! probes), not yet taken by another client exchange. Among candidates:
//! - the provider's response id (`chatcmpl-...`, `msg_...`) or the request
//!   body's digest, when exactly one candidate shares it, settles the pair
//!   (`certain`): a proxy that forwards bodies unchanged shows both;
//! - otherwise model, streaming flag, status and token usage (passed
//!   through by most proxies) score the candidates; a single best score
//!   gives `content`;
//! - otherwise, and between equal scores, the candidate that ended nearest
//!   the client exchange's end is taken (the proxy answers right after its
//!   upstream call; of several attempts, the last) (`time`).
//!
//! `cache_hit` is true only on evidence: a cache header, or no upstream
//! exchange while every exchange is captured and every upstream exchange
//! overlapping this one is paired with certainty elsewhere (and the client
//! exchange was not cut off).
//! Otherwise it is false when an upstream was found and null when unknown.
//! A client record with a certain pair is emitted at once; others are held
//! for `hold` so upstream records finishing at nearly the same moment can
//! arrive.

use std::{
    cmp::Reverse,
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use super::pairing::Confidence;
use super::pipeline::RequestRecord;

/// Recent upstream exchanges kept per process.
const MAX_UPSTREAM_PER_PROCESS: usize = 512;
/// Processes whose upstream records are kept at most (workers that exited
/// leave theirs behind: the least recently active process makes room).
const MAX_PROCESSES: usize = 128;
/// Client records waiting at most.
const MAX_WAITING: usize = 4096;
/// An upstream record may end this much after its client record (ns): the
/// timestamps of the two sides are taken at different probe returns.
const END_SLACK_NS: u64 = 5_000_000;
/// Weight of a model or usage agreement in the content score: more than
/// streaming flag and status together.
const STRONG: i32 = 4;

/// The parts of an upstream record pairing looks at.
struct Upstream {
    start_ns: u64,
    end_ns: u64,
    duration_ms: f64,
    provider: Option<String>,
    request_id: Option<String>,
    digest: Option<u64>,
    model: Option<String>,
    streaming: bool,
    status: u16,
    usage: (Option<u64>, Option<u64>),
    /// Already paired with a client record, with this confidence.
    taken: Option<Confidence>,
    /// The record's `pairing.seq`.
    seq: u64,
    /// The latest start of this record and of every record pushed to its
    /// list before it: rising along a list, so the records that cannot
    /// have started within a client exchange are skipped by a binary search.
    max_start_ns: u64,
}

impl Upstream {
    fn of(r: &RequestRecord) -> Self {
        Self {
            start_ns: r.start_ns,
            end_ns: end_ns(r),
            duration_ms: r.duration_ms,
            provider: r.upstream_provider.clone(),
            request_id: r.pairing.request_id.clone(),
            digest: r.pairing.request_digest,
            model: r.model_requested.clone(),
            streaming: r.streaming,
            status: r.status,
            usage: (r.tokens.input, r.tokens.output),
            taken: None,
            seq: r.pairing.seq,
            max_start_ns: r.start_ns,
        }
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start_ns <= end && self.end_ns >= start
    }

    /// Agreement of model and usage (`STRONG` each), streaming flag and
    /// status (1 each); disagreement counts as much against.
    fn content_score(&self, c: &RequestRecord) -> i32 {
        let agree = |a: Option<&str>, b: Option<&str>| match (a, b) {
            (Some(a), Some(b)) => i32::from(a == b) * 2 - 1,
            _ => 0,
        };
        let usage = match ((c.tokens.input, c.tokens.output), self.usage) {
            ((Some(a), Some(b)), (Some(x), Some(y))) => i32::from(a == x && b == y) * 2 - 1,
            _ => 0,
        };
        let model = agree(c.model_requested.as_deref(), self.model.as_deref());
        let streaming = i32::from(c.streaming == self.streaming) * 2 - 1;
        let status = i32::from(c.status == self.status) * 2 - 1;
        STRONG * (model + usage) + streaming + status
    }
}

pub struct Correlator {
    upstream: HashMap<u32, VecDeque<Upstream>>,
    waiting: VecDeque<(Instant, RequestRecord)>,
    hold: Duration,
    /// Every exchange is captured (sample 1 in 1, nothing dropped).
    complete: bool,
    /// The last upstream record's `pairing.seq`.
    last_seq: u64,
}

fn end_ns(r: &RequestRecord) -> u64 {
    r.start_ns + (r.duration_ms * 1e6) as u64
}

impl Correlator {
    pub fn new(hold: Duration, complete: bool) -> Self {
        Self { upstream: HashMap::new(), waiting: VecDeque::new(), hold, complete, last_seq: 0 }
    }

    /// Takes a record; returns those ready to be emitted.
    pub fn push(&mut self, mut record: RequestRecord, now: Instant) -> Vec<RequestRecord> {
        let mut out = Vec::new();
        if record.side == "upstream" {
            self.last_seq += 1;
            record.pairing.seq = self.last_seq;
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
            let mut upstream = Upstream::of(&record);
            upstream.max_start_ns = list.back().map_or(0, |u| u.max_start_ns).max(upstream.start_ns);
            list.push_back(upstream);
            out.push(record);
        } else {
            if self.waiting.len() >= MAX_WAITING
                && let Some((_, r)) = self.waiting.pop_front()
            {
                out.push(self.finalize(r));
            }
            // A certain pair needs no wait; anything else waits for `hold`.
            match self.pair(record, true) {
                Ok(paired) => out.push(paired),
                Err(record) => self.waiting.push_back((now + self.hold, *record)),
            }
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

    fn finalize(&mut self, client: RequestRecord) -> RequestRecord {
        self.pair(client, false).unwrap_or_else(|client| *client)
    }

    /// Pairs `client` with its upstream record; with `certain_only`, only a
    /// certain pair is made now (`Err` gives the record back to wait).
    fn pair(&mut self, mut client: RequestRecord, certain_only: bool) -> Result<RequestRecord, Box<RequestRecord>> {
        let (start, end) = (client.start_ns, end_ns(&client));
        // A response id a client record still waiting carries: a time-only
        // pairing must not take the upstream record that one will claim by id.
        let waiting = &self.waiting;
        let claimed = |id: &str| waiting.iter().any(|(_, r)| r.pairing.request_id.as_deref() == Some(id));
        let Some(list) = self.upstream.get_mut(&client.pid) else {
            return if certain_only { Err(Box::new(client)) } else { Ok(self.without_upstream(client, false)) };
        };
        // Records before `first` all started before the client exchange.
        let first = list.partition_point(|u| u.max_start_ns < start);
        let candidates: Vec<usize> = (first..list.len())
            .filter(|&i| {
                let u = &list[i];
                u.taken.is_none() && u.start_ns >= start && u.start_ns <= end && u.end_ns <= end + END_SLACK_NS
            })
            .collect();
        let unique = |same: &dyn Fn(&Upstream) -> bool| {
            let mut hits = candidates.iter().copied().filter(|&i| same(&list[i]));
            match (hits.next(), hits.next()) {
                (Some(i), None) => Some(i),
                _ => None,
            }
        };
        let by_id =
            client.pairing.request_id.as_deref().and_then(|id| unique(&|u| u.request_id.as_deref() == Some(id)));
        let by_digest = client.pairing.request_digest.and_then(|d| unique(&|u| u.digest == Some(d)));
        let chosen = match by_id.or(by_digest) {
            Some(i) => Some((i, Confidence::Certain)),
            None => {
                // Best content score, then the end nearest the client's end (the
                // proxy answers right after its upstream call; of retries, the
                // last); an upstream whose id a waiting client record carries is
                // left to that record.
                let mut scored: Vec<(i32, Reverse<u64>, usize)> = candidates
                    .iter()
                    .filter(|&&i| {
                        list[i]
                            .request_id
                            .as_ref()
                            .is_none_or(|id| client.pairing.request_id.as_ref() == Some(id) || !claimed(id))
                    })
                    .map(|&i| (list[i].content_score(&client), Reverse(end.saturating_sub(list[i].end_ns)), i))
                    .collect();
                scored.sort_unstable_by(|a, b| b.cmp(a));
                match scored.as_slice() {
                    [] => None,
                    [(score, _, i)] if *score >= STRONG => Some((*i, Confidence::Content)),
                    [(best, _, i), (next, _, _), ..] if best > next && *best > 0 => Some((*i, Confidence::Content)),
                    [(_, _, i), ..] => Some((*i, Confidence::Time)),
                }
            }
        };
        let Some((i, confidence)) = chosen else {
            if certain_only {
                return Err(Box::new(client));
            }
            // Pairing is certain only if no overlapping upstream exchange is
            // unpaired or was paired by content or time alone.
            let uncertain = list.iter().any(|u| u.taken != Some(Confidence::Certain) && u.overlaps(start, end));
            return Ok(self.without_upstream(client, uncertain));
        };
        if certain_only && confidence != Confidence::Certain {
            return Err(Box::new(client));
        }
        let up = &mut list[i];
        up.taken = Some(confidence);
        client.upstream_provider = up.provider.clone();
        client.proxy_overhead_ms = Some((client.duration_ms - up.duration_ms).max(0.0));
        client.pairing.confidence = Some(confidence);
        client.pairing.upstream_request_id = up.request_id.clone();
        client.pairing.upstream_seq = Some(up.seq);
        if client.cache_hit.is_none() {
            client.cache_hit = Some(false);
        }
        Ok(client)
    }

    /// No upstream record was found: a cache hit only when nothing could
    /// have been missed (every exchange captured, no unpaired upstream
    /// exchange overlapping this one).
    fn without_upstream(&self, mut client: RequestRecord, uncertain: bool) -> RequestRecord {
        // With sampling (1 in N > 1) a missing upstream exchange is no
        // evidence; nor for an exchange cut off (its upstream exchange may
        // have been cut before anything of it was captured). A body only
        // longer than the capture cap is no reason: it was seen whole.
        if client.cache_hit.is_none() && self.complete && !uncertain && client.sample_every <= 1 && !client.cut_short {
            client.cache_hit = Some(true);
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_builder::RecordBuilder;

    fn record(side: &'static str, start_ms: u64, duration_ms: f64, provider: Option<&str>) -> RequestRecord {
        RecordBuilder::new()
            .start_ns(start_ms * 1_000_000)
            .pid(7)
            .upstream_provider(provider)
            .side(side)
            .duration_ms(duration_ms)
            .build()
    }

    fn with_id(mut r: RequestRecord, id: &str) -> RequestRecord {
        r.pairing.request_id = Some(id.to_string());
        r
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
        assert_eq!(first.pairing.confidence, Some(Confidence::Time));
        assert_eq!(first.pairing.upstream_seq, Some(1), "the first upstream record's number");
        let out = c.push(record("client", 11, 9.0, None), now);
        assert_eq!((out[0].upstream_provider.as_deref(), out[0].pairing.upstream_seq), (Some("b"), Some(2)));
        // No upstream call at all: a cache hit when everything is captured.
        let out = c.push(record("client", 30, 1.0, None), now);
        assert_eq!(out[0].cache_hit, Some(true));
        let mut sampled = Correlator::new(Duration::ZERO, false);
        assert_eq!(sampled.push(record("client", 30, 1.0, None), now)[0].cache_hit, None);
        // A cut exchange (a client that went away) without an upstream record: unknown.
        let mut cut = record("client", 40, 1.0, None);
        cut.cut_short = true;
        assert_eq!(c.push(cut, now)[0].cache_hit, None);
        // A body past the capture cap, answered whole, is still evidence.
        let mut capped = record("client", 50, 1.0, None);
        capped.truncated = true;
        assert_eq!(c.push(capped, now)[0].cache_hit, Some(true));
    }

    #[test]
    fn an_upstream_record_pushed_after_a_later_starting_one_is_still_found() {
        let mut c = Correlator::new(Duration::ZERO, true);
        let now = Instant::now();
        // Upstream records arrive as they end, not as they start: a long
        // call (50..150 ms) ends after a short one started later (100..110)
        // and before one that started earlier (20..190).
        c.push(record("upstream", 100, 10.0, Some("short")), now);
        c.push(record("upstream", 50, 100.0, Some("long")), now);
        c.push(record("upstream", 20, 170.0, Some("longest")), now);
        let out = c.push(record("client", 45, 110.0, None), now);
        assert_eq!(out[0].upstream_provider.as_deref(), Some("long"));
        let out = c.push(record("client", 15, 180.0, None), now);
        assert_eq!(out[0].upstream_provider.as_deref(), Some("longest"));
        // The list's last record started before the client exchange; an
        // earlier one within it is still a candidate.
        let mut c = Correlator::new(Duration::ZERO, true);
        c.push(record("upstream", 40, 20.0, Some("within")), now);
        c.push(record("upstream", 10, 60.0, Some("before")), now);
        let out = c.push(record("client", 30, 50.0, None), now);
        assert_eq!(out[0].upstream_provider.as_deref(), Some("within"));
    }

    #[test]
    fn overlapping_exchanges_pair_by_response_id_not_by_time() {
        let mut c = Correlator::new(Duration::from_secs(1), true);
        let now = Instant::now();
        // Two concurrent clients; the one that started first got the later upstream call.
        c.push(with_id(record("upstream", 5, 20.0, Some("late")), "id-a"), now);
        c.push(with_id(record("upstream", 2, 10.0, Some("early")), "id-b"), now);
        let mut out = c.push(with_id(record("client", 0, 30.0, None), "id-a"), now);
        out.extend(c.push(with_id(record("client", 1, 30.0, None), "id-b"), now));
        // Certain pairs are emitted at once, without waiting for the hold.
        assert_eq!(out.len(), 2);
        for r in &out {
            assert_eq!(r.pairing.upstream_request_id, r.pairing.request_id, "{r:?}");
            assert_eq!(r.pairing.confidence, Some(Confidence::Certain));
        }
    }

    #[test]
    fn content_then_time_and_no_false_cache_hits() {
        let mut c = Correlator::new(Duration::from_secs(1), true);
        let now = Instant::now();
        let mut streamed = record("upstream", 3, 5.0, Some("s"));
        streamed.streaming = true;
        c.push(streamed, now);
        c.push(record("upstream", 4, 5.0, Some("j")), now);
        let mut client = record("client", 0, 20.0, None);
        client.streaming = true;
        c.push(client, now);
        let out = c.tick(now + Duration::from_secs(2));
        assert_eq!(
            (out[0].upstream_provider.as_deref(), out[0].pairing.confidence),
            (Some("s"), Some(Confidence::Content))
        );
        // An unpaired upstream exchange overlaps this one: not proof of a cache hit.
        let mut c = Correlator::new(Duration::ZERO, true);
        c.push(record("upstream", 1, 50.0, Some("x")), now);
        let out = c.push(record("client", 2, 10.0, None), now);
        assert_eq!((out[0].cache_hit, out[0].pairing.confidence), (None, None));
    }

    #[test]
    fn same_ids_on_several_candidates_do_not_count_as_certain() {
        let mut c = Correlator::new(Duration::ZERO, true);
        let now = Instant::now();
        c.push(with_id(record("upstream", 1, 5.0, Some("a")), "chatcmpl-1"), now);
        c.push(with_id(record("upstream", 2, 5.0, Some("b")), "chatcmpl-1"), now);
        let out = c.push(with_id(record("client", 0, 10.0, None), "chatcmpl-1"), now);
        assert_ne!(out[0].pairing.confidence, Some(Confidence::Certain));
        assert_eq!(out[0].upstream_provider.as_deref(), Some("b"));
    }
}
