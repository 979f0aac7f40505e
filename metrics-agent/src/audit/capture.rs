//! The capture controller: turns the kernel's payload capture on, adapts
//! its sampling interval once a tick to the kernel's drops and the audit
//! thread's CPU time (`breaker::Sampler`), writes the interval to the
//! kernel's control map and the agent statistics, and turns capture off at
//! the end. A test hook (`TEST_CYCLE_ENV`) can also switch capture off and on
//! on a timer, to check that no audit state is stranded across such cycles.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use aya::maps::{Array, MapData};
use metrics_common::capture::{MAX_SAMPLE_EVERY, control};
use tokio::time::Instant;

use super::breaker::{Action, Pressure, Sampler};
use crate::{agent_stats::AgentStats, collector::CounterMaps, cpu_time::thread_cpu_time};

/// Test hook: a period in milliseconds after which payload capture is
/// switched off, then on again after another period, and so on. For the
/// end-to-end test that connections closing while capture is off leave no
/// state behind; never for production (capture is off half the time).
/// Read once at start, from the environment only, and logged when set.
pub const TEST_CYCLE_ENV: &str = "METRICS_AGENT_TEST_CAPTURE_CYCLE_MS";

/// The capture cycle period `TEST_CYCLE_ENV` asks for (None: not set).
pub fn test_cycle_from_env() -> anyhow::Result<Option<Duration>> {
    std::env::var(TEST_CYCLE_ENV).ok().map(|value| parse_test_cycle(&value)).transpose()
}

fn parse_test_cycle(value: &str) -> anyhow::Result<Duration> {
    match value.trim().parse::<u64>() {
        Ok(ms) if (10..=600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => anyhow::bail!("{TEST_CYCLE_ENV}={value:?}: use a period of 10 to 600000 milliseconds, or unset it"),
    }
}

pub struct CaptureController {
    control: Array<MapData, u32>,
    counters: Arc<CounterMaps>,
    stats: Arc<AgentStats>,
    sampler: Sampler,
    /// Audit-thread CPU (percent of one core) above which sampling is raised; 0: no limit.
    cpu_budget_percent: f64,
    /// The kernel's capture drops, the audit thread's CPU time and the time at the last tick.
    drops_seen: u64,
    last_cpu: Duration,
    last_tick: Instant,
}

impl CaptureController {
    /// Starts at 1 in `sample_every` exchanges, never beyond `max_sample_every`.
    pub fn start(
        control: Array<MapData, u32>,
        counters: Arc<CounterMaps>,
        stats: Arc<AgentStats>,
        sample_every: u32,
        max_sample_every: u32,
        cpu_budget_percent: f64,
    ) -> Self {
        let sampler = Sampler::new(sample_every, max_sample_every.min(MAX_SAMPLE_EVERY), cpu_budget_percent);
        stats.capture_enabled.store(1, Ordering::Relaxed);
        stats.capture_sample_every.store(sampler.every().into(), Ordering::Relaxed);
        let drops_seen = counters.capture_drops();
        Self {
            control,
            counters,
            stats,
            sampler,
            cpu_budget_percent,
            drops_seen,
            last_cpu: thread_cpu_time(),
            last_tick: Instant::now(),
        }
    }

    /// One sampling decision; true when the kernel dropped events since the
    /// last tick (the capture is then incomplete).
    pub fn tick(&mut self) -> bool {
        let stats = &self.stats;
        let drops = self.counters.capture_drops();
        let new_drops = drops.saturating_sub(self.drops_seen);
        let (now, cpu) = (Instant::now(), thread_cpu_time());
        stats.audit_cpu_ns.store(cpu.as_nanos() as u64, Ordering::Relaxed);
        let used = cpu.saturating_sub(self.last_cpu);
        let window = now - self.last_tick;
        let every = match self.sampler.tick(window, new_drops, used) {
            Action::Raise { to, why } => {
                let (counter, cause) = match why {
                    Pressure::Drops => (&stats.capture_breaker_trips, format!("the kernel dropped {new_drops} events")),
                    Pressure::Cpu => (
                        &stats.capture_breaker_cpu_trips,
                        format!(
                            "the audit thread used {} ms of CPU in {} ms, over its {}% budget",
                            used.as_millis(),
                            window.as_millis(),
                            self.cpu_budget_percent
                        ),
                    ),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                log::info!("payload capture now samples 1 exchange in {to}: {cause}");
                Some(to)
            }
            Action::Lower { to } => {
                log::info!("payload capture now samples 1 exchange in {to}: there is room again");
                Some(to)
            }
            Action::Nothing => None,
        };
        if let Some(every) = every {
            let _ = self.control.set(control::SAMPLE_EVERY, every, 0);
            stats.capture_sample_every.store(every.into(), Ordering::Relaxed);
        }
        (self.last_tick, self.last_cpu, self.drops_seen) = (now, cpu, drops);
        new_drops > 0
    }

    /// Switches the kernel's payload capture off when it is on and on when
    /// it is off (the `TEST_CYCLE_ENV` hook); returns whether it is on now.
    pub fn toggle(&mut self) -> bool {
        let on = self.stats.capture_enabled.load(Ordering::Relaxed) == 0;
        let _ = self.control.set(control::ENABLED, u32::from(on), 0);
        self.stats.capture_enabled.store(u64::from(on), Ordering::Relaxed);
        on
    }

    /// Turns the kernel's payload capture off.
    pub fn stop(mut self) {
        let _ = self.control.set(control::ENABLED, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_cycle_is_a_period_in_milliseconds_or_a_one_line_error() {
        assert_eq!(parse_test_cycle(" 800 ").unwrap(), Duration::from_millis(800));
        for bad in ["0", "9", "600001", "1s", ""] {
            let e = parse_test_cycle(bad).unwrap_err().to_string();
            assert!(e.starts_with(TEST_CYCLE_ENV) && e.contains("use a period") && !e.contains('\n'), "{e}");
        }
    }
}
