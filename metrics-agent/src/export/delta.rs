//! Cumulative-to-delta conversion for protocols that send increments
//! (DogStatsD counts, Datadog `count` series). The base is the last snapshot
//! that was delivered, so a dropped or failed batch is folded into the next
//! delta instead of being lost. When only part of a batch got through, the
//! series it carried advance on their own, so they are not sent twice. A
//! cumulative value that went down (a restart of its source) counts from zero.

use std::collections::HashMap;

use super::model::{HistogramValue, Series, Snapshot, Value};

type SeriesId = (&'static str, Vec<(&'static str, String)>);

fn id(s: &Series) -> SeriesId {
    (s.desc.otel, s.labels.iter().map(|(k, v)| (*k, v.to_string())).collect())
}

/// A change since the last delivered snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Number(f64),
    Histogram(HistogramValue),
}

#[derive(Debug, Default)]
pub struct DeltaTracker {
    delivered: HashMap<SeriesId, Value>,
    delivered_at: Option<u64>,
}

fn sub(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

impl DeltaTracker {
    /// Seconds covered by the deltas of `snapshot` (since the last delivery,
    /// or since the agent started).
    pub fn interval_seconds(&self, snapshot: &Snapshot) -> f64 {
        let from = self.delivered_at.unwrap_or(snapshot.start_unix_nanos);
        (snapshot.time_unix_nanos.saturating_sub(from) as f64 / 1e9).max(1.0)
    }

    /// The increment of a counter or histogram series since the last delivery.
    pub fn delta(&self, s: &Series) -> Delta {
        let before = self.delivered.get(&id(s));
        match (&s.value, before) {
            (Value::Histogram(now), Some(Value::Histogram(b))) if now.count >= b.count && now.bounds == b.bounds => {
                Delta::Histogram(HistogramValue {
                    bounds: now.bounds,
                    counts: now.counts.iter().zip(&b.counts).map(|(n, o)| n.saturating_sub(*o)).collect(),
                    sum: sub(now.sum, b.sum),
                    count: now.count - b.count,
                })
            }
            (Value::Histogram(now), _) => Delta::Histogram(now.clone()),
            (v, Some(b)) => Delta::Number(sub(v.as_f64(), b.as_f64())),
            (v, None) => Delta::Number(v.as_f64()),
        }
    }

    /// Marks the series `indices` of `snapshot` as delivered (part of a
    /// batch got through): their later deltas are relative to it.
    pub fn delivered_part(&mut self, snapshot: &Snapshot, indices: &[usize]) {
        for s in indices.iter().filter_map(|i| snapshot.series.get(*i)) {
            self.delivered.insert(id(s), s.value.clone());
        }
        if !indices.is_empty() {
            self.delivered_at = Some(snapshot.time_unix_nanos);
        }
    }

    /// Marks `snapshot` as delivered: later deltas are relative to it.
    pub fn delivered(&mut self, snapshot: &Snapshot) {
        self.delivered.clear();
        for s in &snapshot.series {
            self.delivered.insert(id(s), s.value.clone());
        }
        self.delivered_at = Some(snapshot.time_unix_nanos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::catalog as m;

    fn snap(t: u64, v: u64) -> Snapshot {
        Snapshot {
            start_unix_nanos: 0,
            time_unix_nanos: t,
            series: vec![Series { desc: &m::REQUESTS, labels: vec![], value: Value::Int(v) }],
            samples: vec![],
        }
    }

    #[test]
    fn undelivered_snapshots_fold_into_the_next_delta() {
        let mut t = DeltaTracker::default();
        let s1 = snap(10_000_000_000, 5);
        assert_eq!(t.delta(&s1.series[0]), Delta::Number(5.0));
        t.delivered(&s1);
        // s2 (value 8) is never delivered; s3 carries its increment too.
        let s3 = snap(30_000_000_000, 12);
        assert_eq!(t.delta(&s3.series[0]), Delta::Number(7.0));
        assert_eq!(t.interval_seconds(&s3), 20.0);
        t.delivered(&s3);
        assert_eq!(t.delta(&snap(40_000_000_000, 3).series[0]), Delta::Number(3.0), "a reset counts from zero");
    }

    #[test]
    fn a_partly_delivered_snapshot_advances_only_what_was_sent() {
        let mut t = DeltaTracker::default();
        let two = |t: u64, a: u64, b: u64| Snapshot {
            series: vec![
                Series { desc: &m::REQUESTS, labels: vec![], value: Value::Int(a) },
                Series { desc: &m::TOKENS, labels: vec![], value: Value::Int(b) },
            ],
            ..snap(t, 0)
        };
        let s1 = two(10_000_000_000, 5, 50);
        t.delivered_part(&s1, &[0]);
        let s2 = two(20_000_000_000, 6, 60);
        assert_eq!(t.delta(&s2.series[0]), Delta::Number(1.0), "the delivered series is not sent again");
        assert_eq!(t.delta(&s2.series[1]), Delta::Number(60.0), "the other one still carries everything");
    }
}
