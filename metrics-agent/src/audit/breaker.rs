//! The capture circuit breaker (the ADR's mitigation strategy): once a
//! second the audit task reports whether the kernel dropped payload events
//! and how much CPU the agent used; when either says the agent cannot keep
//! up, payload capture is switched off in the kernel for a cool-down, then
//! back on. Hot-path counters are unaffected either way.

use std::time::Duration;

/// Shortest tick over which CPU use is judged.
const MIN_WINDOW: Duration = Duration::from_millis(500);

/// Why capture was switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// The ring buffer was full: the kernel dropped events.
    Drops,
    /// The agent used more CPU than its budget.
    Cpu,
}

/// What the audit task must do after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    SwitchOff(Trip),
    SwitchOn,
}

#[derive(Debug)]
pub struct Breaker {
    cool_down: Duration,
    /// CPU budget in percent of one core (0: no CPU limit).
    cpu_budget_percent: f64,
    /// Time left while off.
    off_for: Option<Duration>,
}

impl Breaker {
    pub fn new(cool_down: Duration, cpu_budget_percent: f64) -> Self {
        Self { cool_down, cpu_budget_percent, off_for: None }
    }

    pub fn is_off(&self) -> bool {
        self.off_for.is_some()
    }

    /// One tick of `elapsed` wall time during which the kernel dropped
    /// `new_drops` events and the agent used `cpu` CPU time.
    pub fn tick(&mut self, elapsed: Duration, new_drops: u64, cpu: Duration) -> Action {
        if let Some(left) = self.off_for {
            let left = left.saturating_sub(elapsed);
            if left.is_zero() {
                self.off_for = None;
                return Action::SwitchOn;
            }
            self.off_for = Some(left);
            return Action::Nothing;
        }
        // Too short a window says nothing about a sustained rate.
        let cpu_percent = if elapsed < MIN_WINDOW { 0.0 } else { 100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64() };
        let trip = if new_drops > 0 {
            Some(Trip::Drops)
        } else if self.cpu_budget_percent > 0.0 && cpu_percent > self.cpu_budget_percent {
            Some(Trip::Cpu)
        } else {
            None
        };
        match trip {
            Some(t) => {
                self.off_for = Some(self.cool_down);
                Action::SwitchOff(t)
            }
            None => Action::Nothing,
        }
    }
}

/// CPU time this process has used so far (all threads).
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn drops_or_cpu_over_budget_switch_capture_off_for_the_cool_down() {
        let mut b = Breaker::new(Duration::from_secs(3), 50.0);
        assert_eq!(b.tick(S, 0, Duration::from_millis(400)), Action::Nothing, "40% is within 50%");
        assert_eq!(b.tick(S, 2, Duration::ZERO), Action::SwitchOff(Trip::Drops));
        assert!(b.is_off());
        assert_eq!(b.tick(S, 5, Duration::from_secs(1)), Action::Nothing, "already off");
        assert_eq!(b.tick(S, 0, Duration::ZERO), Action::Nothing);
        assert_eq!(b.tick(S, 0, Duration::ZERO), Action::SwitchOn, "after 3 s");
        assert_eq!(b.tick(S, 0, Duration::from_millis(600)), Action::SwitchOff(Trip::Cpu));
    }

    #[test]
    fn a_short_window_is_not_judged() {
        let mut b = Breaker::new(S, 10.0);
        assert_eq!(b.tick(Duration::from_millis(1), 0, Duration::from_millis(50)), Action::Nothing);
    }

    #[test]
    fn a_zero_budget_means_no_cpu_limit() {
        let mut b = Breaker::new(S, 0.0);
        assert_eq!(b.tick(S, 0, Duration::from_secs(2)), Action::Nothing);
    }

    #[test]
    fn process_cpu_time_moves_forward() {
        let a = process_cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time() > a);
    }
}
