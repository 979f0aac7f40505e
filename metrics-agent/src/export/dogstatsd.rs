//! DogStatsD over UDP or a Unix datagram socket. Counters are sent as `c`
//! increments since the last delivered snapshot, gauges as `g`, audit
//! latencies and token counts as `d` distributions (one value per request,
//! from the bounded sample buffer), other histograms as `.count`/`.sum`
//! increments. Lines are `name:value|type|#tag:value,...`, packed into
//! datagrams up to the configured size.

use std::fmt::Write as _;

use super::{
    ExportError, Exporter,
    delta::{Delta, DeltaTracker},
    model::{Kind, Label, Snapshot},
    settings::{StatsdAddress, StatsdSettings},
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

/// The DogStatsD lines of one snapshot (deltas relative to `base`).
pub fn lines(snapshot: &Snapshot, base: &DeltaTracker, global: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in &snapshot.series {
        let t = tags(global, &s.labels);
        match (s.desc.kind, base.delta(s)) {
            (Kind::Gauge, _) => line(&mut out, s.desc.otel, s.value.as_f64(), "g", &t),
            (Kind::Counter, Delta::Number(d)) if d > 0.0 => line(&mut out, s.desc.otel, d, "c", &t),
            (Kind::Histogram, Delta::Histogram(h)) if h.count > 0 => {
                // Audit histograms go out as distributions of their raw samples.
                if super::audit_metrics::SAMPLED.iter().any(|d| std::ptr::eq(*d, s.desc)) {
                    continue;
                }
                line(&mut out, &format!("{}.count", s.desc.otel), h.count as f64, "c", &t);
                line(&mut out, &format!("{}.sum", s.desc.otel), h.sum, "c", &t);
            }
            _ => {}
        }
    }
    for s in &snapshot.samples {
        let t = tags(global, &s.labels);
        for v in &s.values {
            line(&mut out, s.desc.otel, *v, "d", &t);
        }
    }
    out
}

/// Packs lines into datagrams of at most `max` bytes (a longer line goes alone).
pub fn pack(lines: &[String], max: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for l in lines {
        if !cur.is_empty() && cur.len() + 1 + l.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(b'\n');
        }
        cur.extend_from_slice(l.as_bytes());
    }
    if !cur.is_empty() {
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
    datagrams: Vec<Vec<u8>>,
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
            let lines = lines(snapshot, &self.base, &self.settings.tags);
            self.in_flight = Some(InFlight {
                time: snapshot.time_unix_nanos,
                datagrams: pack(&lines, self.settings.max_datagram_bytes),
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
                Socket::Udp(s) => s.send(d).await,
                Socket::Unix(s) => s.send(d).await,
            };
            if let Err(e) = sent {
                // Reconnect next time (the agent may have restarted).
                self.socket = None;
                return Err(ExportError::Retryable(format!("dogstatsd: {e}")));
            }
            flight.next += 1;
        }
        self.in_flight = None;
        self.base.delivered(snapshot);
        Ok(())
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
        let d = pack(&lines, 64);
        assert!(d.iter().all(|x| x.len() <= 64));
        let joined: Vec<String> = d
            .iter()
            .flat_map(|x| String::from_utf8(x.clone()).unwrap().lines().map(String::from).collect::<Vec<_>>())
            .collect();
        assert_eq!(joined, lines);
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
