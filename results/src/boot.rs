//! The boot a verdict or an environment came from: its lane and its position among the lane's
//! boots in the run (`--kernel 6.1,6.12,6.1` boots the emulated lane three times). With the
//! kernel, that is where a verdict ran: a column of the reports.

use crate::model::{Environment, Lane, Verdict};

/// Where a verdict ran: its lane, the boot of that lane (from 1), and the kernel that boot ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BootKey<'a> {
    pub lane: Lane,
    pub boot: u32,
    pub kernel: &'a str,
}

impl<'a> BootKey<'a> {
    pub fn of(verdict: &'a Verdict) -> Self {
        BootKey {
            lane: verdict.lane,
            boot: verdict.boot,
            kernel: &verdict.kernel,
        }
    }

    pub fn of_environment(environment: &'a Environment) -> Self {
        BootKey {
            lane: environment.lane,
            boot: environment.boot,
            kernel: &environment.kernel_release,
        }
    }
}

/// Give a boot to what was written before boots were recorded (boot 0). Such a run kept the
/// order its boots ran in, so per lane each kernel, in the order it first appears, is taken to
/// be a boot of its own: 1, 2, ... A kernel those runs booted twice shows as one boot, as
/// they recorded it (they could not tell its two boots apart).
pub fn number_unstamped<T>(
    items: &mut [T],
    key: impl Fn(&T) -> (Lane, &str),
    boot: impl Fn(&mut T) -> &mut u32,
) {
    let mut seen: Vec<(Lane, String)> = Vec::new();
    for item in items.iter_mut() {
        if *boot(item) != 0 {
            continue;
        }
        let (lane, kernel) = key(item);
        let position = match seen.iter().position(|(l, k)| *l == lane && k == kernel) {
            Some(at) => seen[..=at].iter().filter(|(l, _)| *l == lane).count(),
            None => {
                seen.push((lane, kernel.to_string()));
                seen.iter().filter(|(l, _)| *l == lane).count()
            }
        };
        *boot(item) = u32::try_from(position).unwrap_or(u32::MAX);
    }
}

/// [`number_unstamped`] for a run's verdicts.
pub fn number_unstamped_verdicts(verdicts: &mut [Verdict]) {
    number_unstamped(verdicts, |v| (v.lane, &v.kernel), |v| &mut v.boot);
}

/// [`number_unstamped`] for a run's environments.
pub fn number_unstamped_environments(environments: &mut [Environment]) {
    number_unstamped(
        environments,
        |e| (e.lane, &e.kernel_release),
        |e| &mut e.boot,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    #[test]
    fn older_files_number_their_boots_by_first_appearance_per_lane() {
        let on = |lane: Lane, kernel: &str| Verdict {
            schema: crate::SCHEMA_VERSION,
            test: "t".into(),
            lane,
            kernel: kernel.into(),
            boot: 0,
            outcome: Outcome::Pass,
            reason: String::new(),
            detail: vec![],
            duration_ms: 1.0,
        };
        let mut verdicts = vec![
            on(Lane::Emulated, "6.1"),
            on(Lane::Emulated, "6.12"),
            on(Lane::Qemu, "qemu-10.0.2"),
            on(Lane::Emulated, "6.1"),
            on(Lane::Emulated, "7.3"),
        ];
        number_unstamped_verdicts(&mut verdicts);
        let boots: Vec<u32> = verdicts.iter().map(|v| v.boot).collect();
        assert_eq!(boots, [1, 2, 1, 1, 3]);

        // Stamped boots are kept as they are.
        let mut stamped = vec![Verdict {
            boot: 3,
            ..on(Lane::Emulated, "6.1")
        }];
        number_unstamped_verdicts(&mut stamped);
        assert_eq!(stamped[0].boot, 3);
    }
}
