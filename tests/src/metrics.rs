//! Parsing a Prometheus text exposition into series -> value, and linting
//! one with Prometheus's own `promtool`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub text: String,
    pub series: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        Self { text: text.to_string(), series }
    }

    /// The value of a series (`name` or `name{labels}` exactly as exposed), 0 if absent.
    pub fn get(&self, series: &str) -> u64 {
        self.series.get(series).copied().unwrap_or(0.0) as u64
    }

    /// The sum over every series of metric `name`, whatever their labels.
    pub fn sum(&self, name: &str) -> u64 {
        self.series
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
            .map(|(_, v)| *v as u64)
            .sum()
    }

    pub fn get_f64(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }

    /// A histogram bucket's cumulative count; labels in exposition order.
    pub fn bucket(&self, name: &str, extra_labels: &str, le: &str) -> u64 {
        let labels =
            if extra_labels.is_empty() { format!("le=\"{le}\"") } else { format!("le=\"{le}\",{extra_labels}") };
        self.get(&format!("{name}_bucket{{{labels}}}"))
    }
}

/// Lints an exposition with `promtool check metrics` (Debian's prometheus
/// package); panics with promtool's complaint, naming `what` was checked.
pub fn promtool_check(exposition: &str, what: &str) {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed on the {what} exposition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
