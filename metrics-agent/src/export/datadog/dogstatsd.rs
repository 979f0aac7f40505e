//! DogStatsD over UDP or a Unix datagram socket. Counters are sent as `c`
//! increments since the last delivered snapshot, gauges as `g`, audit
//! latencies and token counts as `d` distributions (one value per request,
//! from the bounded sample buffer), other histograms as `.count`/`.sum`
//! increments. Lines are `name:value|type|#tag:value,...`, packed into
//! datagrams up to the configured size.

use std::fmt::Write as _;

use super::{StatsdAddress, StatsdSettings};
use crate::export::{
    ExportError, Exporter,
    delta::{Delta, DeltaTracker},
    model::{Kind, Label, Snapshot},
};

pub const NAME: &str = "datadog_statsd";

/// Replaces the characters that end a tag or a line.
pub fn tag_value(v: &str) -> String {
    v.chars().map(|c| if matches!(c, ',' | '|' | '\n' | '\r' | '#') { '_' } else { c }).collect()
}

/// `#k:v,k2:v2` with the configured tags first; empty without tags.
pub fn tags(global: &[String], labels: &[Label]) -> String {
    let mut out = String::new();
    for t in global {
        out.push(if out.is_empty() { '#' } else { ',' });
        out.push_str(t);
    }
    for (k, v) in labels {
        out.push(if out.is_empty() { '#' } else { ',' });
        let _ = write!(out, "{k}:{}", tag_value(v));
    }
    out
}

fn line(out: &mut Vec<String>, name: &str, value: f64, kind: &str, tags: &str) {
    let mut l = format!("{name}:{value}|{kind}");
    if !tags.is_empty() {
        l.push('|');
        l.push_str(tags);
    }
    out.push(l);
}

/// The lines of one series of a snapshot (`series` is its index), or one
/// raw sample (`series` is `None`): the unit a datagram holds whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub series: Option<usize>,
    pub lines: Vec<String>,
}

/// The DogStatsD lines of one snapshot (deltas relative to `base`), grouped
/// by series.
pub fn groups(snapshot: &Snapshot, base: &DeltaTracker, global: &[String]) -> Vec<Group> {
    let mut out = Vec::new();
    for (i, s) in snapshot.series.iter().enumerate() {
        let t = tags(global, &s.labels);
        let mut lines = Vec::new();
        match (s.desc.kind, base.delta(s)) {
            (Kind::Gauge, _) => line(&mut lines, s.desc.otel, s.value.as_f64(), "g", &t),
            (Kind::Counter, Delta::Number(d)) if d > 0.0 => line(&mut lines, s.desc.otel, d, "c", &t),
            (Kind::Histogram, Delta::Histogram(h)) if h.count > 0 => {
                // Audit histograms go out as distributions of their raw samples.
                if crate::export::audit_metrics::is_sampled(s.desc) {
                    continue;
                }
                line(&mut lines, &format!("{}.count", s.desc.otel), h.count as f64, "c", &t);
                line(&mut lines, &format!("{}.sum", s.desc.otel), h.sum, "c", &t);
            }
            _ => {}
        }
        if !lines.is_empty() {
            out.push(Group { series: Some(i), lines });
        }
    }
    for s in &snapshot.samples {
        let t = tags(global, &s.labels);
        for v in &s.values {
            let mut lines = Vec::new();
            line(&mut lines, s.desc.otel, *v, "d", &t);
            out.push(Group { series: None, lines });
        }
    }
    out
}

/// One datagram, with the series whose lines it completes and the raw
/// samples it carries.
#[derive(Debug, Default, PartialEq)]
pub struct Datagram {
    pub bytes: Vec<u8>,
    pub series: Vec<usize>,
    pub samples: u64,
}

/// Packs groups into datagrams of at most `max` bytes. A group's lines stay
/// in one datagram, so a datagram that got through advances its series
/// alone; a group longer than `max` is split by line (a line longer than
/// `max` goes alone) and counts as sent with its last datagram.
pub fn pack(groups: &[Group], max: usize) -> Vec<Datagram> {
    let mut out: Vec<Datagram> = Vec::new();
    let mut cur = Datagram::default();
    for g in groups {
        let len = g.lines.iter().map(|l| l.len() + 1).sum::<usize>() - 1;
        let fits = |cur: &Datagram, len: usize| cur.bytes.is_empty() || cur.bytes.len() + 1 + len <= max;
        if !fits(&cur, len) {
            out.push(std::mem::take(&mut cur));
        }
        for l in &g.lines {
            if !fits(&cur, l.len()) {
                out.push(std::mem::take(&mut cur));
            }
            if !cur.bytes.is_empty() {
                cur.bytes.push(b'\n');
            }
            cur.bytes.extend_from_slice(l.as_bytes());
        }
        match g.series {
            Some(i) => cur.series.push(i),
            None => cur.samples += g.lines.len() as u64,
        }
    }
    if !cur.bytes.is_empty() {
        out.push(cur);
    }
    out
}

enum Socket {
    Udp(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram),
}

/// A snapshot's datagrams, kept across retries so that a retry sends only
/// the datagrams not sent yet.
struct InFlight {
    time: u64,
    datagrams: Vec<Datagram>,
    next: usize,
}

pub struct DogStatsd {
    settings: StatsdSettings,
    socket: Option<Socket>,
    base: DeltaTracker,
    in_flight: Option<InFlight>,
}

impl DogStatsd {
    pub fn new(settings: StatsdSettings) -> Self {
        Self { settings, socket: None, base: DeltaTracker::default(), in_flight: None }
    }

    async fn connect(&self) -> std::io::Result<Socket> {
        Ok(match &self.settings.address {
            StatsdAddress::Udp(addr) => {
                let target = tokio::net::lookup_host(addr.as_str())
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("{addr} has no address")))?;
                let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let s = tokio::net::UdpSocket::bind(local).await?;
                s.connect(target).await?;
                Socket::Udp(s)
            }
            StatsdAddress::Unix(path) => {
                let s = tokio::net::UnixDatagram::unbound()?;
                s.connect(path)?;
                Socket::Unix(s)
            }
        })
    }
}

impl Exporter for DogStatsd {
    async fn export(&mut self, snapshot: &Snapshot) -> Result<(), ExportError> {
        if self.in_flight.as_ref().is_none_or(|f| f.time != snapshot.time_unix_nanos) {
            let groups = groups(snapshot, &self.base, &self.settings.tags);
            self.in_flight = Some(InFlight {
                time: snapshot.time_unix_nanos,
                datagrams: pack(&groups, self.settings.max_datagram_bytes),
                next: 0,
            });
        }
        if self.socket.is_none() {
            let s = self.connect().await.map_err(|e| ExportError::Retryable(format!("dogstatsd: {e}")))?;
            self.socket = Some(s);
        }
        let (Some(socket), Some(flight)) = (&self.socket, &mut self.in_flight) else {
            return Err(ExportError::Retryable("dogstatsd: not connected".into()));
        };
        while let Some(d) = flight.datagrams.get(flight.next) {
            let sent = match socket {
                Socket::Udp(s) => s.send(&d.bytes).await,
                Socket::Unix(s) => s.send(&d.bytes).await,
            };
            if let Err(e) = sent {
                // Reconnect next time (the agent may have restarted).
                self.socket = None;
                return Err(ExportError::Retryable(format!("dogstatsd: {e}")));
            }
            // Should the rest never get through, these are not sent again.
            self.base.delivered_part(snapshot, &d.series);
            flight.next += 1;
        }
        self.in_flight = None;
        self.base.delivered(snapshot);
        Ok(())
    }

    fn takes_samples(&self) -> bool {
        true
    }

    fn abandon(&mut self, snapshot: &Snapshot) -> u64 {
        match self.in_flight.take() {
            Some(f) if f.time == snapshot.time_unix_nanos => f.datagrams[f.next..].iter().map(|d| d.samples).sum(),
            _ => snapshot.sample_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::export::{
        catalog as m,
        model::{HistogramValue, Samples, Series, Value},
    };

    /// The DogStatsD lines of one snapshot, in datagram order.
    fn lines(snapshot: &Snapshot, base: &DeltaTracker, global: &[String]) -> Vec<String> {
        groups(snapshot, base, global).into_iter().flat_map(|g| g.lines).collect()
    }

    fn snapshot(requests: u64) -> Snapshot {
        let mut h = HistogramValue::empty(&[1.0]);
        h.observe(0.25);
        Snapshot {
            start_unix_nanos: 0,
            time_unix_nanos: requests,
            series: vec![
                Series {
                    desc: &m::REQUESTS,
                    labels: vec![("gen_ai.provider.name", Cow::Borrowed("openai")), ("status_class", "2xx".into())],
                    value: Value::Int(requests),
                },
                Series { desc: &m::RING_USAGE, labels: vec![("ring", "payloads".into())], value: Value::Int(4096) },
                Series { desc: &m::HP_TTFB, labels: vec![], value: Value::Histogram(h.clone()) },
                Series { desc: &m::DURATION, labels: vec![], value: Value::Histogram(h) },
            ],
            samples: vec![Samples {
                desc: &m::DURATION,
                labels: vec![("gen_ai.request.model", "gpt,4|o".into())],
                values: vec![1.5, 0.25],
            }],
        }
    }

    #[test]
    fn exact_lines() {
        let mut base = DeltaTracker::default();
        let global = vec!["env:test".to_string()];
        assert_eq!(
            lines(&snapshot(3), &base, &global),
            vec![
                "llm.requests:3|c|#env:test,gen_ai.provider.name:openai,status_class:2xx",
                "metrics_agent.ring_buffer.usage:4096|g|#env:test,ring:payloads",
                "llm_proxy.time_to_first_byte.count:1|c|#env:test",
                "llm_proxy.time_to_first_byte.sum:0.25|c|#env:test",
                "gen_ai.client.operation.duration:1.5|d|#env:test,gen_ai.request.model:gpt_4_o",
                "gen_ai.client.operation.duration:0.25|d|#env:test,gen_ai.request.model:gpt_4_o",
            ]
        );
        base.delivered(&snapshot(3));
        let next = lines(&snapshot(5), &base, &[]);
        assert_eq!(next[0], "llm.requests:2|c|#gen_ai.provider.name:openai,status_class:2xx", "increments");
        assert_eq!(next[1], "metrics_agent.ring_buffer.usage:4096|g|#ring:payloads");
        assert!(!next.iter().any(|l| l.starts_with("llm_proxy.time_to_first_byte")), "no change, no line");
    }

    #[test]
    fn datagrams_respect_the_size_limit() {
        let lines: Vec<String> = (0..100).map(|i| format!("m{i}:1|c")).collect();
        let groups: Vec<Group> = lines.iter().map(|l| Group { series: None, lines: vec![l.clone()] }).collect();
        let d = pack(&groups, 64);
        assert!(d.iter().all(|x| x.bytes.len() <= 64));
        let joined: Vec<String> = d
            .iter()
            .flat_map(|x| String::from_utf8(x.bytes.clone()).unwrap().lines().map(String::from).collect::<Vec<_>>())
            .collect();
        assert_eq!(joined, lines);
        assert_eq!(d.iter().map(|x| x.samples).sum::<u64>(), 100);
    }

    #[test]
    fn a_series_lines_share_a_datagram() {
        let g = |i: usize, n: usize| Group { series: Some(i), lines: vec!["x".repeat(20); n] };
        let d = pack(&[g(0, 1), g(1, 2), g(2, 1)], 50);
        // 20 + 1 + 20 + 1 + 20 > 50: series 1 starts a new datagram.
        assert_eq!(d.iter().map(|x| x.series.clone()).collect::<Vec<_>>(), vec![vec![0], vec![1], vec![2]]);
        let long = pack(&[g(0, 3)], 50);
        assert_eq!(long.len(), 2, "a group longer than the limit is split by line");
        assert_eq!((long[0].series.clone(), long[1].series.clone()), (vec![], vec![0]), "sent with its last line");
    }

    /// A datagram that cannot be sent (longer than UDP allows) after one
    /// that was: the first series is not sent again with the next snapshot,
    /// and the samples after the failure are reported lost.
    #[tokio::test]
    async fn a_partly_sent_snapshot_is_not_sent_again() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let delivery = crate::export::common_settings::Delivery {
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            queue_batches: 1,
            max_retries: 0,
        };
        let mut d = DogStatsd::new(StatsdSettings {
            address: StatsdAddress::Udp(rx.local_addr().unwrap().to_string()),
            max_datagram_bytes: 512,
            tags: vec![],
            delivery,
        });
        let requests = |v: u64| Series { desc: &m::REQUESTS, labels: vec![], value: Value::Int(v) };
        let huge = Series { desc: &m::TOKENS, labels: vec![("x", "y".repeat(70_000).into())], value: Value::Int(1) };
        let first = Snapshot {
            start_unix_nanos: 0,
            time_unix_nanos: 1,
            series: vec![requests(3), huge],
            samples: vec![Samples { desc: &m::DURATION, labels: vec![], values: vec![1.0, 2.0] }],
        };
        assert!(d.export(&first).await.is_err(), "a 70 kB datagram does not fit in UDP");
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"llm.requests:3|c");
        assert_eq!(d.abandon(&first), 2, "the samples after the failed datagram were lost");
        let second = Snapshot { time_unix_nanos: 2, series: vec![requests(5)], samples: vec![], ..first };
        d.export(&second).await.unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"llm.requests:2|c", "only the increment since the part that got through");
    }

    /// Values from request and response bodies cannot end a tag, a line or
    /// a datagram's metric early.
    #[test]
    fn hostile_tag_values_stay_one_tag() {
        let labels: Vec<Label> =
            vec![("gen_ai.request.model", "evil|#x:1,y\nfake.metric:1|c\r".into()), ("error.type", "a\"b\\c".into())];
        let t = tags(&["env:test".to_string()], &labels);
        assert_eq!(t, "#env:test,gen_ai.request.model:evil__x:1_y_fake.metric:1_c_,error.type:a\"b\\c");
        let mut out = Vec::new();
        line(&mut out, "llm.requests", 1.0, "c", &t);
        assert_eq!(out[0].lines().count(), 1);
        assert_eq!(out[0].matches('|').count(), 2, "name:value|type|#tags");
    }
}
