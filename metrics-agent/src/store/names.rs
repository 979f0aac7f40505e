//! Bounds on the names storage keys rows by. Model names and application
//! ids come from proxy clients (a request body, a header), so each is
//! admitted only while the distinct names seen since the agent started, and
//! in the record's minute, are within their limits; any other name is stored
//! as `other` and the collapse is counted, as the exporters do with labels.

use std::collections::{BTreeMap, HashSet};

/// The name every collapsed model or application is stored as.
pub const OTHER: &str = "other";

/// Longest stored name, in bytes (longer ones are cut at a character boundary).
pub const MAX_NAME_BYTES: usize = 256;

/// Minutes whose names (or detail-row counts) are remembered: records arrive
/// in order up to the duration of an exchange, so a late record older than
/// this is rare; it is treated as described at `MinuteWindow::entry`.
pub const MINUTES_TRACKED: usize = 10;

/// The configured limits (`[storage] max_models`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameLimits {
    pub max_models: usize,
    pub max_models_per_minute: usize,
    pub max_applications: usize,
    pub max_applications_per_minute: usize,
}

/// State kept per minute for the last `MINUTES_TRACKED` minutes (bounded:
/// the oldest minute is forgotten when a new one arrives).
#[derive(Debug)]
pub struct MinuteWindow<T> {
    minutes: BTreeMap<i64, T>,
}

impl<T> Default for MinuteWindow<T> {
    fn default() -> Self {
        Self { minutes: BTreeMap::new() }
    }
}

impl<T: Default> MinuteWindow<T> {
    /// The state of `minute`; `None` for a minute older than every tracked
    /// one once the window is full (it was forgotten: the caller decides
    /// conservatively).
    pub fn entry(&mut self, minute: i64) -> Option<&mut T> {
        if !self.minutes.contains_key(&minute) && self.minutes.len() >= MINUTES_TRACKED {
            let oldest = *self.minutes.keys().next().expect("window is full");
            if minute < oldest {
                return None;
            }
            self.minutes.remove(&oldest);
        }
        Some(self.minutes.entry(minute).or_default())
    }
}

/// One kind of name: the set admitted since start and the sets per minute.
#[derive(Debug, Default)]
struct Bounded {
    overall: HashSet<String>,
    per_minute: MinuteWindow<HashSet<String>>,
}

impl Bounded {
    /// `name` if it fits both bounds, else `None` (the caller stores `other`).
    /// The empty name (unset) and `other` itself always fit.
    fn admit(&mut self, minute: i64, name: String, max_overall: usize, max_per_minute: usize) -> Option<String> {
        if name.is_empty() || name == OTHER {
            return Some(name);
        }
        let known = self.overall.contains(&name);
        if !known && self.overall.len() >= max_overall {
            return None;
        }
        match self.per_minute.entry(minute) {
            Some(seen) if !seen.contains(&name) => {
                if seen.len() >= max_per_minute {
                    return None;
                }
                seen.insert(name.clone());
            }
            Some(_) => {}
            // A forgotten minute: only names already known are admitted.
            None if !known => return None,
            None => {}
        }
        if !known {
            self.overall.insert(name.clone());
        }
        Some(name)
    }
}

/// What a record is stored under, after the bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub name: String,
    /// The record's own name was replaced by `other`.
    pub collapsed: bool,
}

/// Model and application bounds of one writer.
#[derive(Debug)]
pub struct NameBounds {
    limits: NameLimits,
    models: Bounded,
    applications: Bounded,
}

impl NameBounds {
    pub fn new(limits: NameLimits) -> Self {
        Self { limits, models: Bounded::default(), applications: Bounded::default() }
    }

    pub fn model(&mut self, minute: i64, name: String) -> Admitted {
        let (max, per_minute) = (self.limits.max_models, self.limits.max_models_per_minute);
        admitted(self.models.admit(minute, cut(name), max, per_minute))
    }

    pub fn application(&mut self, minute: i64, name: String) -> Admitted {
        let (max, per_minute) = (self.limits.max_applications, self.limits.max_applications_per_minute);
        admitted(self.applications.admit(minute, cut(name), max, per_minute))
    }
}

fn admitted(name: Option<String>) -> Admitted {
    match name {
        Some(name) => Admitted { name, collapsed: false },
        None => Admitted { name: OTHER.to_string(), collapsed: true },
    }
}

/// At most `MAX_NAME_BYTES`, cut at a character boundary.
fn cut(mut name: String) -> String {
    if name.len() > MAX_NAME_BYTES {
        let mut end = MAX_NAME_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(overall: usize, per_minute: usize) -> NameLimits {
        NameLimits {
            max_models: overall,
            max_models_per_minute: per_minute,
            max_applications: overall,
            max_applications_per_minute: per_minute,
        }
    }

    #[test]
    fn names_beyond_the_overall_bound_become_other() {
        let mut b = NameBounds::new(limits(3, 100));
        let stored: Vec<Admitted> = (0..10).map(|i| b.model(i * 60, format!("m{}", i % 5))).collect();
        let names: Vec<&str> = stored.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["m0", "m1", "m2", OTHER, OTHER, "m0", "m1", "m2", OTHER, OTHER]);
        assert_eq!(stored.iter().filter(|a| a.collapsed).count(), 4);
        assert_eq!(b.model(0, String::new()).name, "", "no model is not a name");
    }

    #[test]
    fn names_beyond_the_per_minute_bound_become_other_in_that_minute_only() {
        let mut b = NameBounds::new(limits(100, 2));
        assert_eq!(b.application(60, "a".into()).name, "a");
        assert_eq!(b.application(60, "b".into()).name, "b");
        assert_eq!(b.application(60, "c".into()), Admitted { name: OTHER.into(), collapsed: true });
        assert_eq!(b.application(60, "a".into()).name, "a");
        assert_eq!(b.application(120, "c".into()).name, "c", "a new minute has room again");
    }

    #[test]
    fn forgotten_minutes_admit_known_names_only_and_memory_stays_bounded() {
        let mut b = NameBounds::new(limits(1_000, 5));
        for minute in 0..100 {
            b.model(minute * 60, format!("x{minute}"));
        }
        assert!(b.models.per_minute.minutes.len() <= MINUTES_TRACKED);
        assert_eq!(b.model(0, "x0".into()).name, "x0", "known");
        assert_eq!(b.model(0, "new".into()).name, OTHER, "a forgotten minute takes no new name");
        let long = "é".repeat(300);
        assert!(b.model(99 * 60, long).name.len() <= MAX_NAME_BYTES);
    }
}
