//! How busy this host's CPUs are while a lane runs, so that figures taken on a busy machine
//! (they moved 2-3x) say so: the kernel's pressure stall information (`/proc/pressure/cpu`,
//! the share of time some task waited for a CPU) and the load average.

use std::time::Instant;

const PRESSURE: &str = "/proc/pressure/cpu";
const LOADAVG: &str = "/proc/loadavg";

/// The host's load now, in words: PSI's averages and the load average, whichever the kernel
/// has.
pub fn describe_now() -> String {
    let pressure = std::fs::read_to_string(PRESSURE).ok().and_then(|text| {
        let some = some_line(&text)?;
        let average = |name: &str| field(some, name).map(|v| format!("{name} {v} %"));
        let averages: Vec<String> = ["avg10", "avg60", "avg300"]
            .into_iter()
            .filter_map(average)
            .collect();
        Some(format!(
            "CPU pressure (some task waiting): {}",
            averages.join(", ")
        ))
    });
    let load = std::fs::read_to_string(LOADAVG).ok().map(|text| {
        let averages: Vec<&str> = text.split_whitespace().take(3).collect();
        format!("load average {}", averages.join(" "))
    });
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let parts: Vec<String> = pressure.into_iter().chain(load).collect();
    match parts.is_empty() {
        true => "not known (no /proc/pressure/cpu, no /proc/loadavg)".into(),
        false => format!("{}; {cpus} CPUs", parts.join("; ")),
    }
}

/// The `some` line of /proc/pressure/cpu.
fn some_line(text: &str) -> Option<&str> {
    text.lines().find(|line| line.starts_with("some "))
}

/// `name=value` of a PSI line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// Microseconds some task has waited for a CPU since boot (PSI `some total`).
fn stalled_us() -> Option<u64> {
    let text = std::fs::read_to_string(PRESSURE).ok()?;
    field(some_line(&text)?, "total")?.parse().ok()
}

/// The share of wall time some task waited for a CPU, interval after interval.
pub struct PressureClock {
    last: Option<(u64, Instant)>,
}

impl PressureClock {
    /// A clock whose first interval starts now; one that measures nothing where the host has
    /// no PSI.
    pub fn start() -> Self {
        PressureClock {
            last: stalled_us().map(|us| (us, Instant::now())),
        }
    }

    /// The share of the time since the last call (or the start) in which some task waited for
    /// a CPU, from 0 to 1; a new interval starts now.
    pub fn share_since_last(&mut self) -> Option<f64> {
        let (before, since) = self.last?;
        let now = (stalled_us()?, Instant::now());
        self.last = Some(now);
        share(now.0.saturating_sub(before), now.1 - since)
    }
}

/// `stalled_us` over `wall`, at most 1; none for an interval too short to say.
fn share(stalled_us: u64, wall: std::time::Duration) -> Option<f64> {
    let wall_us = wall.as_secs_f64() * 1e6;
    (wall_us >= 1000.0).then(|| (stalled_us as f64 / wall_us).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn psi_lines_give_their_fields() {
        let text = "some avg10=66.27 avg60=78.57 avg300=74.43 total=3921815770\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        let some = some_line(text).unwrap();
        assert_eq!(field(some, "avg10"), Some("66.27"));
        assert_eq!(field(some, "total"), Some("3921815770"));
        assert_eq!(field(some, "avg"), None);
    }

    #[test]
    fn pressure_is_the_stalled_share_of_the_interval() {
        assert_eq!(share(250_000, Duration::from_secs(1)), Some(0.25));
        // Two tasks stalled at once count once in `some`, yet never above the whole interval.
        assert_eq!(share(3_000_000, Duration::from_secs(2)), Some(1.0));
        assert_eq!(share(10, Duration::from_micros(100)), None);
        // Wherever the host is, a description comes back.
        assert!(!describe_now().is_empty());
    }
}
