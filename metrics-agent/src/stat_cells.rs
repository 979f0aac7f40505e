//! Lock-free cells for the counters and gauges the agent keeps about itself
//! (its HTTP server, storage): written where things happen, read by the
//! metric sources of `export` into series of the catalogue. No dependency on
//! the rest of the agent, so any module may hold them.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (never below zero).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge with a fractional value (seconds).
#[derive(Debug, Default)]
pub struct FloatGauge(AtomicU64);

impl FloatGauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Counts by the value of one label (a reason, a table, a result). The
/// values are static strings, so the set is bounded by the code; a value
/// appears once it is first counted.
#[derive(Debug, Default)]
pub struct CounterByLabel(Mutex<Vec<(&'static str, u64)>>);

impl CounterByLabel {
    pub fn inc(&self, value: &'static str) {
        self.inc_by(value, 1);
    }

    pub fn inc_by(&self, value: &'static str, n: u64) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match counts.iter_mut().find(|(v, _)| *v == value) {
            Some((_, count)) => *count += n,
            None => counts.push((value, n)),
        }
    }

    /// The count of `value` (0 when never counted).
    pub fn get(&self, value: &str) -> u64 {
        self.counts().iter().find(|(v, _)| *v == value).map_or(0, |(_, n)| *n)
    }

    /// Every value counted so far with its count, in order of first count.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_label_value() {
        let c = CounterByLabel::default();
        c.inc("ok");
        c.inc_by("error", 3);
        c.inc("ok");
        assert_eq!(c.counts(), vec![("ok", 2), ("error", 3)]);
        assert_eq!(c.get("rejected"), 0);
    }

    #[test]
    fn a_gauge_does_not_wrap_below_zero() {
        let g = Gauge::default();
        g.inc();
        g.dec();
        g.dec();
        assert_eq!(g.get(), 0);
    }
}
