//! Which trials the harness arguments select, known without a VMM: the harness runs what this
//! plans, and xtask answers `--list`, `--help`, argument errors and filters that match nothing
//! from it on the host, without booting.
//!
//! Several name filters are accepted (`tags:: faults::`), as libtest does: a trial runs when
//! any of them matches it. libtest-mimic takes one, so the words are split off here and the
//! trials filtered before libtest-mimic sees them.

use clap::CommandFactory;
use libtest_mimic::{Arguments, Trial};
use mte_results::FAULT_INJECTION_PROOFS;
use mte_suites::inject::Injection;
use mte_suites::Scenario;

use crate::harness::Options;

/// A trial the harness would make: a check, or the proof that an injection turns it red.
#[derive(Clone, Copy)]
pub struct Planned {
    pub scenario: &'static Scenario,
    pub proof: Option<Injection>,
}

impl Planned {
    /// The trial's name: the check's, or `fault_injection::MODE::CHECK` for a proof.
    pub fn name(&self) -> String {
        match self.proof {
            None => self.scenario.name.to_string(),
            Some(injection) => proof_name(self.scenario, injection),
        }
    }
}

/// The name of the proof that `injection` turns `scenario` red.
pub fn proof_name(scenario: &Scenario, injection: Injection) -> String {
    format!(
        "{FAULT_INJECTION_PROOFS}{}::{}",
        injection.name().replace('-', "_"),
        scenario.name
    )
}

/// Families whose checks take long or wait (deadlines, swap, whole-RAM migrations, cost
/// measurements): they start first, so that the many short checks fill the test threads
/// around them instead of a long one trailing alone at the end of the run.
const LONG_FAMILIES: &[&str] = &["harness::", "migration::", "swap::", "cost::"];

/// The check a trial runs: its own name, or the name of the check a proof injects into.
pub use mte_results::shard::check_of;

/// Whether the trial `name` (a check, or a proof of one) is of a long family.
pub fn is_long(name: &str) -> bool {
    of_families(name, LONG_FAMILIES)
}

/// Whether the trial `name` (a check, or a proof of one) is of one of `families`.
fn of_families(name: &str, families: &[&str]) -> bool {
    let check = check_of(name);
    families.iter().any(|family| check.starts_with(family))
}

/// Every trial, in the order the harness starts them: the scenarios, then (asked to prove,
/// and unless the whole run is injected) the injection proofs; the features check first, the
/// long families before the short ones, and the race checks spread through them all from the
/// start.
pub fn plan(inject: Option<Injection>, prove: bool) -> Vec<Planned> {
    let scenarios = mte_suites::all();
    let mut planned: Vec<Planned> = (scenarios.iter())
        .map(|&scenario| Planned {
            scenario,
            proof: None,
        })
        .collect();
    if prove && inject.is_none() {
        for injection in Injection::ALL {
            for &scenario in scenarios
                .iter()
                .filter(|s| s.proven_by.contains(&injection))
            {
                planned.push(Planned {
                    scenario,
                    proof: Some(injection),
                });
            }
        }
    }
    planned.sort_by_key(|p| !is_long(&p.name()));
    let mut planned = spread_turn_takers(planned);
    // Stable: the rest keeps its order behind them.
    planned.sort_by_key(|p| !is_first(&p.name()));
    planned
}

/// Families that start the run: what the guest sees of MTE, a few tens of ms, so that the
/// first verdict comes at once and says whether the machine has what every other check needs.
const FIRST_FAMILIES: &[&str] = &["features::"];

/// Whether the trial `name` (a check, or a proof of one) is of a family that starts the run.
pub fn is_first(name: &str) -> bool {
    of_families(name, FIRST_FAMILIES)
}

/// Families whose checks take turns on one lock (a race holds the machine's CPUs for its
/// rounds, one race at a time). Their turns are a chain through the run: it starts with the
/// run and goes on beside everything else, so that it does not trail the rest at the end, and
/// two of them are never side by side, where one test thread would wait for the other's turn.
const TAKE_TURNS: &[&str] = &["races::"];

/// Whether the trial `name` (a check, or a proof of one) takes turns with others.
pub fn takes_turns(name: &str) -> bool {
    of_families(name, TAKE_TURNS)
}

/// How many short checks a trial of a long family weighs, roughly, when the turn-takers are
/// spread through the run: a migration, a swap or a cost check takes a few hundred ms where a
/// short check takes a few tens.
const LONG_WEIGHT: usize = 8;

fn weight(trial: &Planned) -> usize {
    match is_long(&trial.name()) {
        true => LONG_WEIGHT,
        false => 1,
    }
}

/// The trials in `planned` order (the long ones first), with those that take turns spread
/// evenly by weight through all the others, the first of them first.
fn spread_turn_takers(planned: Vec<Planned>) -> Vec<Planned> {
    let (turns, rest): (Vec<Planned>, Vec<Planned>) =
        planned.into_iter().partition(|p| takes_turns(&p.name()));
    let total: usize = rest.iter().map(weight).sum();
    let every = (total / turns.len().max(1)).max(1);
    let mut turns = turns.into_iter();
    let mut spread = Vec::with_capacity(rest.len() + turns.len());
    let mut due = 0;
    let mut weighed = 0;
    for trial in rest {
        if weighed >= due {
            spread.extend(turns.next());
            due += every;
        }
        weighed += weight(&trial);
        spread.push(trial);
    }
    spread.extend(turns);
    spread
}

/// The harness arguments split: the name filters, and the rest for libtest-mimic.
pub fn split_filters(harness_args: &[String]) -> (Vec<String>, Vec<String>) {
    let command = Arguments::command();
    let takes_value = |arg: &str| {
        (command.get_arguments()).any(|a| {
            let named = match arg.strip_prefix("--") {
                Some(long) => a.get_long() == Some(long),
                None => arg.len() == 2 && a.get_short() == arg.chars().nth(1),
            };
            named && a.get_action().takes_values()
        })
    };
    let (mut filters, mut rest) = (Vec::new(), Vec::new());
    let mut words = harness_args.iter();
    let mut positional_only = false;
    while let Some(word) = words.next() {
        if positional_only || !word.starts_with('-') || word == "-" {
            filters.push(word.clone());
        } else if word == "--" {
            positional_only = true;
        } else {
            rest.push(word.clone());
            if !word.contains('=') && takes_value(word) {
                rest.extend(words.next().cloned());
            }
        }
    }
    (filters, rest)
}

/// libtest-mimic's arguments without the filters, and the filters; `Err` is clap's message
/// (for `--help` too, whose message is the help).
pub fn arguments(harness_args: &[String]) -> Result<(Arguments, Vec<String>), String> {
    let (filters, rest) = split_filters(harness_args);
    let argv = std::iter::once("mte-runner".to_string()).chain(rest);
    let args = <Arguments as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())?;
    Ok((args, filters))
}

/// Whether a trial named `name` passes the filters (any of them; all pass none), as libtest
/// matches one: a substring, or the whole name with `--exact`.
pub fn passes_filters(args: &Arguments, filters: &[String], name: &str) -> bool {
    filters.is_empty()
        || filters.iter().any(|filter| {
            let one = Arguments {
                filter: Some(filter.clone()),
                skip: Vec::new(),
                ..args.clone()
            };
            !one.is_filtered_out(&Trial::test(name, || Ok(())))
        })
}

/// The names of the trials the options select (shard, filters, `--skip`, `--ignored`), in the
/// order they would start; with `--list`, those it lists.
pub fn selected(options: &Options) -> Result<Vec<String>, String> {
    let (args, filters) = arguments(&options.harness_args)?;
    let names = plan(options.inject, options.prove)
        .iter()
        .map(Planned::name)
        .filter(|name| options.shard.is_none_or(|shard| shard.contains(name)))
        .filter(|name| passes_filters(&args, &filters, name))
        .filter(|name| !args.is_filtered_out(&Trial::test(name.as_str(), || Ok(()))))
        .collect();
    Ok(names)
}

/// The harness's help: libtest's, then the runner's own options.
pub fn help() -> String {
    let libtest = match arguments(&["--help".to_string()]) {
        Err(help) => help,
        Ok(_) => String::new(),
    };
    format!(
        "{}\nSeveral FILTERs may be given: a check runs when any matches.\n\nThe runner's own \
         options: {}\n",
        libtest.trim_end(),
        Options::USAGE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn trials_that_take_turns_start_the_run_and_are_never_side_by_side() {
        for prove in [false, true] {
            let names: Vec<String> = plan(None, prove).iter().map(Planned::name).collect();
            let turns: Vec<usize> = (names.iter().enumerate())
                .filter(|(_, name)| takes_turns(name))
                .map(|(index, _)| index)
                .collect();
            assert!(turns.len() >= 10, "{turns:?}");
            // The features check first, then the first race.
            assert!(is_first(&names[0]), "{}", names[0]);
            assert!(turns[0] <= 2, "{turns:?}");
            assert!(turns.windows(2).all(|w| w[1] > w[0] + 1), "{turns:?}");
            // The long ones still come before the short ones.
            let others: Vec<&String> = (names.iter())
                .filter(|n| !takes_turns(n) && !is_first(n))
                .collect();
            let first_short = others.iter().position(|n| !is_long(n)).unwrap();
            assert!(others[first_short..].iter().all(|n| !is_long(n)));
            // The last turn-taker is not left to the end of the run.
            assert!(*turns.last().unwrap() < names.len() - 1, "{turns:?}");
        }
    }

    #[test]
    fn filters_are_the_words_that_are_no_option_or_value() {
        let (filters, rest) = split_filters(&words(
            "tags:: --skip cow:: --exact faults:: --format json -q",
        ));
        assert_eq!(filters, ["tags::", "faults::"]);
        assert_eq!(rest, words("--skip cow:: --exact --format json -q"));
        let (filters, rest) = split_filters(&words("--test-threads=2 a -- --b"));
        assert_eq!(filters, ["a", "--b"]);
        assert_eq!(rest, ["--test-threads=2"]);
    }

    #[test]
    fn any_filter_selects_and_exact_matches_whole_names() {
        let (args, filters) = arguments(&words("tags:: faults::")).unwrap();
        assert!(passes_filters(&args, &filters, "tags::a"));
        assert!(passes_filters(&args, &filters, "faults::b"));
        assert!(!passes_filters(&args, &filters, "cow::c"));
        let (args, filters) = arguments(&words("--exact tags:: tags::a")).unwrap();
        assert!(passes_filters(&args, &filters, "tags::a"));
        assert!(!passes_filters(&args, &filters, "tags::ab"));
        assert!(arguments(&words("--bogus"))
            .unwrap_err()
            .contains("--bogus"));
        assert!(help().contains("--exact") && help().contains("--inject"));
    }

    #[test]
    fn selection_follows_the_plan_the_shard_and_the_filters() {
        let options = |args: &str, prove: bool| Options {
            prove,
            harness_args: words(args),
            ..Options::parse(Vec::new(), "/p".into()).unwrap()
        };
        let all = selected(&options("", false)).unwrap();
        assert_eq!(all.len(), mte_suites::all().len());
        let proven = selected(&options("", true)).unwrap();
        assert!(proven.len() > all.len());
        assert!(proven.iter().any(|n| n.starts_with(FAULT_INJECTION_PROOFS)));
        let family = all[0].split("::").next().unwrap().to_string() + "::";
        let some = selected(&options(&family, false)).unwrap();
        assert!(!some.is_empty() && some.iter().all(|n| n.starts_with(&family)));
        assert!(selected(&options("nosuch::check", false))
            .unwrap()
            .is_empty());
    }
}
