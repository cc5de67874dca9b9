//! The one command that reruns just one verdict's check, as the terminal and the report give it
//! with each failure, and the fault injection a run was made under.

use crate::model::{Environment, Evidence, Lane, Verdict};
use crate::text::one_line;

/// The fact the runner records when a whole run is injected (`-- --inject MODE`).
pub const INJECTION_FEATURE: &str = "fault injection";
/// The host fact with the kernel as `--kernel` asked for it.
const REQUESTED_KERNEL: &str = "kernel.requested";

/// `cargo xtask run --lane LANE [--kernel K] [--prove] [--seed S] -- --exact NAME [--inject
/// MODE]`: the lane and boot's kernel of `v`, `--prove` for a proof (proofs run only with it),
/// the seed a race check's evidence gives, and the run's injection. `env` is the environment of
/// the verdict's boot.
pub fn command(v: &Verdict, env: Option<&Environment>) -> String {
    let mut words = vec!["cargo xtask run".to_string(), format!("--lane {}", v.lane)];
    if let Some(kernel) = env.and_then(requested_kernel) {
        words.push(format!("--kernel {}", shell_word(&kernel)));
    }
    if v.is_fault_injection_proof() {
        words.push("--prove".into());
    }
    if let Some(seed) = seed(v) {
        words.push(format!("--seed {seed}"));
    }
    words.push(format!("-- --exact {}", shell_word(&v.test)));
    if let Some(mode) = env.and_then(injection) {
        words.push(format!("--inject {}", shell_word(mode)));
    }
    words.join(" ")
}

/// The injection a boot ran under, if its whole run was injected.
pub fn injection(env: &Environment) -> Option<&str> {
    (env.features.iter().chain(&env.host))
        .find(|f| f.name == INJECTION_FEATURE)
        .map(|f| f.value.as_str())
        .filter(|v| !v.is_empty())
}

/// What a run's banner says when any of its boots ran injected: which injection, where, and
/// that its failures are what the injection was to cause.
pub fn injection_banner(environments: &[Environment]) -> Option<String> {
    let injected: Vec<String> = (environments.iter())
        .filter_map(|env| {
            injection(env).map(|mode| format!("{mode} in the {} lane, boot {}", env.lane, env.boot))
        })
        .collect();
    (!injected.is_empty()).then(|| {
        format!(
            "FAULT INJECTION: this run injected {}; its failures show checks catching the \
             injected fault, not faults of the code under test",
            one_line(&injected.join(", "))
        )
    })
}

/// `--kernel` for the boot: as it was asked for, for lanes that boot a kernel of the suite's.
fn requested_kernel(env: &Environment) -> Option<String> {
    if env.lane == Lane::Host {
        return None;
    }
    (env.host.iter())
        .find(|f| f.name == REQUESTED_KERNEL)
        .map(|f| f.value.clone())
        .filter(|v| !v.is_empty())
}

/// The seed a race check's evidence names (`seed 0x2a; replay: ...`).
fn seed(v: &Verdict) -> Option<String> {
    v.detail.iter().find_map(|evidence| match evidence {
        Evidence::Note { text } => {
            let rest = text.strip_prefix("seed ")?;
            let seed = rest.split([';', ' ', '\n']).next()?;
            let hex = seed.strip_prefix("0x")?;
            (!hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| seed.to_string())
        }
        _ => None,
    })
}

/// A word for a POSIX shell: as it is when it is plain, else in single quotes.
pub fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.:/+,=@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", one_line(word).replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{environment, verdict};
    use crate::model::{Feature, Outcome};

    fn env_with(host: &[(&str, &str)], features: &[(&str, &str)]) -> Environment {
        let mut env = environment();
        env.host = host.iter().map(|(n, v)| Feature::new(*n, *v)).collect();
        env.features = features.iter().map(|(n, v)| Feature::new(*n, *v)).collect();
        env
    }

    #[test]
    fn a_failure_reruns_alone_in_its_lane_and_kernel() {
        let env = env_with(&[("kernel.requested", "6.12")], &[]);
        let v = verdict("tags::a", Outcome::Fail, "differ");
        assert_eq!(
            command(&v, Some(&env)),
            "cargo xtask run --lane emulated --kernel 6.12 -- --exact tags::a"
        );
        let proof = verdict("fault_injection::corrupt_tag::tags::a", Outcome::Fail, "x");
        assert_eq!(
            command(&proof, Some(&env)),
            "cargo xtask run --lane emulated --kernel 6.12 --prove -- --exact \
             fault_injection::corrupt_tag::tags::a"
        );
    }

    #[test]
    fn injection_and_seed_come_along() {
        let env = env_with(
            &[("kernel.requested", "/tmp/my kernel")],
            &[("fault injection", "corrupt-tag")],
        );
        let mut v = verdict("races::a", Outcome::Fail, "lost");
        v.detail = vec![Evidence::Note {
            text: "seed 0x2a; replay: cargo xtask run --seed 0x2a -- races::a --exact".into(),
        }];
        assert_eq!(
            command(&v, Some(&env)),
            "cargo xtask run --lane emulated --kernel '/tmp/my kernel' --seed 0x2a -- --exact \
             races::a --inject corrupt-tag"
        );
        let banner = injection_banner(&[env]).unwrap();
        assert!(banner.starts_with(
            "FAULT INJECTION: this run injected corrupt-tag in the \
                                    emulated lane, boot 1"
        ));
        assert_eq!(injection_banner(&[environment()]), None);
    }

    #[test]
    fn the_host_lane_takes_no_kernel() {
        let mut env = env_with(&[("kernel.requested", "6.12")], &[]);
        env.lane = Lane::Host;
        let mut v = verdict("tags::a", Outcome::Fail, "x");
        v.lane = Lane::Host;
        assert_eq!(
            command(&v, Some(&env)),
            "cargo xtask run --lane host -- --exact tags::a"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
