//! Adaptive sampling of payload capture (the ADR's mitigation strategy, in
//! place of switching capture off): once a second the audit thread reports
//! whether the kernel dropped payload events and how much CPU the audit
//! thread itself used. Under pressure the sampling interval N (capture one
//! exchange in N) doubles, up to a ceiling; after a few calm ticks (CPU under
//! half the budget, no drops) it halves, down to the configured floor.
//! Hot-path counters are unaffected either way: they are counted in the
//! kernel for every exchange.
//!
//! The CPU measured is the audit thread's own (`cpu_time::thread_cpu_time`), so load on
//! the HTTP API, storage or the exporters (other threads) never lowers capture.

use std::time::Duration;

/// Shortest tick over which CPU use is judged.
const MIN_WINDOW: Duration = Duration::from_millis(500);
/// Calm ticks in a row before N is lowered one step.
const CALM_TICKS: u32 = 3;
/// A tick is calm when CPU stays under this share of the budget: after
/// halving N the CPU use roughly doubles and must still fit.
const CALM_SHARE: f64 = 0.5;

/// Why sampling was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// The ring buffer was full: the kernel dropped events.
    Drops,
    /// The audit thread used more CPU than its budget.
    Cpu,
}

/// What the audit task must do after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Capture one exchange in `to` from now on, because of the pressure.
    Raise {
        to: u32,
        why: Pressure,
    },
    /// Capture one exchange in `to` from now on: there is room again.
    Lower {
        to: u32,
    },
}

#[derive(Debug)]
pub struct Sampler {
    /// The configured interval: N never goes below it.
    floor: u32,
    ceiling: u32,
    current: u32,
    /// CPU budget in percent of one core (0: no CPU limit).
    cpu_budget_percent: f64,
    calm_ticks: u32,
}

impl Sampler {
    /// Starts at `floor` (the configured `sample_every`), rises to `ceiling` at most.
    pub fn new(floor: u32, ceiling: u32, cpu_budget_percent: f64) -> Self {
        let floor = floor.max(1);
        Self { floor, ceiling: ceiling.max(floor), current: floor, cpu_budget_percent, calm_ticks: 0 }
    }

    /// The interval in force.
    pub fn every(&self) -> u32 {
        self.current
    }

    /// One tick of `elapsed` wall time during which the kernel dropped
    /// `new_drops` events and the audit thread used `cpu` CPU time.
    pub fn tick(&mut self, elapsed: Duration, new_drops: u64, cpu: Duration) -> Action {
        // Too short a window says nothing about a sustained rate.
        let judged = elapsed >= MIN_WINDOW;
        let cpu_percent = if judged { 100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64() } else { 0.0 };
        let limited = self.cpu_budget_percent > 0.0;
        let pressure = if new_drops > 0 {
            Some(Pressure::Drops)
        } else if limited && cpu_percent > self.cpu_budget_percent {
            Some(Pressure::Cpu)
        } else {
            None
        };
        if let Some(why) = pressure {
            self.calm_ticks = 0;
            if self.current >= self.ceiling {
                return Action::Nothing;
            }
            self.current = self.current.saturating_mul(2).min(self.ceiling);
            return Action::Raise { to: self.current, why };
        }
        let calm = judged && (!limited || cpu_percent < self.cpu_budget_percent * CALM_SHARE);
        if !calm {
            self.calm_ticks = 0;
            return Action::Nothing;
        }
        self.calm_ticks += 1;
        if self.calm_ticks < CALM_TICKS || self.current <= self.floor {
            return Action::Nothing;
        }
        self.calm_ticks = 0;
        self.current = (self.current / 2).max(self.floor);
        Action::Lower { to: self.current }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn pressure_doubles_the_interval_up_to_the_ceiling() {
        let mut s = Sampler::new(1, 8, 50.0);
        assert_eq!(s.tick(S, 0, MS(400)), Action::Nothing, "40% is within 50%");
        assert_eq!(s.tick(S, 2, Duration::ZERO), Action::Raise { to: 2, why: Pressure::Drops });
        assert_eq!(s.tick(S, 0, MS(600)), Action::Raise { to: 4, why: Pressure::Cpu });
        assert_eq!(s.tick(S, 0, MS(600)), Action::Raise { to: 8, why: Pressure::Cpu });
        assert_eq!(s.tick(S, 0, MS(900)), Action::Nothing, "at the ceiling");
        assert_eq!(s.every(), 8);
    }

    #[test]
    fn calm_ticks_halve_the_interval_down_to_the_floor() {
        let mut s = Sampler::new(3, 100, 50.0);
        for _ in 0..3 {
            s.tick(S, 1, Duration::ZERO);
        }
        assert_eq!(s.every(), 24);
        // Between half the budget and the budget: hold.
        for _ in 0..10 {
            assert_eq!(s.tick(S, 0, MS(300)), Action::Nothing);
        }
        assert_eq!(s.tick(S, 0, MS(100)), Action::Nothing);
        assert_eq!(s.tick(S, 0, MS(100)), Action::Nothing);
        assert_eq!(s.tick(S, 0, MS(100)), Action::Lower { to: 12 });
        // Pressure in between restarts the count.
        s.tick(S, 0, MS(100));
        s.tick(S, 0, MS(100));
        assert_eq!(s.tick(S, 0, MS(600)), Action::Raise { to: 24, why: Pressure::Cpu });
        let mut lowered = Vec::new();
        for _ in 0..20 {
            if let Action::Lower { to } = s.tick(S, 0, Duration::ZERO) {
                lowered.push(to);
            }
        }
        assert_eq!(lowered, [12, 6, 3], "never below the configured interval");
    }

    #[test]
    fn a_short_window_is_not_judged() {
        let mut s = Sampler::new(1, 8, 10.0);
        assert_eq!(s.tick(MS(1), 0, MS(50)), Action::Nothing);
        assert_eq!(s.every(), 1);
    }

    #[test]
    fn a_zero_budget_means_no_cpu_limit_but_drops_still_count() {
        let mut s = Sampler::new(1, 8, 0.0);
        assert_eq!(s.tick(S, 0, Duration::from_secs(2)), Action::Nothing);
        assert_eq!(s.tick(S, 1, Duration::ZERO), Action::Raise { to: 2, why: Pressure::Drops });
    }
}
