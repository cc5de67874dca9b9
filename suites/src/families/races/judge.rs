//! Judging one round of a race, granule by granule: what each side wrote, what each side read
//! while the race ran, and what the host and the guest read at the end.
//!
//! A granule must end with a tag one of the writers wrote (zero if nobody wrote it), the same
//! for the host and the guest; a read during the race may see zero (the page before its tags
//! were in) or a writer's tag, nothing else; a tag-checked access through tag 0 may fault only
//! where someone wrote a nonzero tag. The one way to go wrong that the tag-initialisation race
//! explains is a granule that ends with tag zero, for host and guest alike, where every writer
//! wrote a nonzero tag: tags lost to a late initialisation. Anything else is wrong whatever the
//! kernel.

use mte_protocol::GRANULE;
use mte_results::{tags_to_hex, Evidence};

/// A read made while the race ran: who made it, from which granule of the round on, the tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub who: String,
    pub first: usize,
    pub values: Vec<u8>,
}

/// What one round wrote and read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// For each granule of the round, the tags written to it (none: nobody wrote it).
    pub writers: Vec<Vec<u8>>,
    /// Tags read during the race.
    pub during: Vec<Reading>,
    /// Tag-checked accesses through tag 0 during the race: 1 where one faulted.
    pub faults: Vec<Reading>,
    /// The host's read of the round's tags after the race.
    pub end_host: Vec<u8>,
    /// The guest's LDG of them after the race.
    pub end_guest: Vec<u8>,
    /// Other views that must equal what they expect: what, expected, observed (a forked
    /// child's copy, say).
    pub also: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// Whether a read during the race must see the written tag itself: where a page's tags
    /// must be in before anything can touch it (post-copy), a zero read is a page touched too
    /// early.
    pub strict: bool,
}

/// What a round showed.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Everything as it may be.
    Clean,
    /// Only tags lost to zero (host and guest agreeing), in these granules.
    Lost(Vec<usize>),
    /// Only reads of zero during the race where a page's tags had to be in before it could be
    /// touched ([`Observed::strict`]), in these granules; the end as it must be.
    Early(Vec<usize>),
    /// Something no race explains: what, in a sentence.
    Wrong(String),
}

/// A round's verdict and the evidence that shows it: the expected tags against each side's
/// at the end (every granule), and what went wrong during the race.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub evidence: Vec<Evidence>,
}

/// Judge a round over `[ipa, ...)`.
pub fn judge(ipa: u64, observed: &Observed) -> Judgement {
    let granules = observed.writers.len();
    let mut lost = Vec::new();
    let mut wrong: Vec<String> = Vec::new();
    if observed.end_host.len() != granules || observed.end_guest.len() != granules {
        wrong.push(format!(
            "{granules} granules raced, the host read {} and the guest {} at the end",
            observed.end_host.len(),
            observed.end_guest.len()
        ));
    }
    // What each granule should end with: the host's tag where a writer wrote it, else the
    // first writer's (or zero), so that the maps differ exactly where something went wrong.
    let expected: Vec<u8> = (0..granules)
        .map(|g| {
            let writers = &observed.writers[g];
            let host = observed.end_host.get(g).copied().unwrap_or(0xff);
            match writers.first() {
                None => 0,
                Some(_) if writers.contains(&host) => host,
                Some(&first) => first,
            }
        })
        .collect();
    for g in 0..granules
        .min(observed.end_host.len())
        .min(observed.end_guest.len())
    {
        let (host, guest) = (observed.end_host[g], observed.end_guest[g]);
        let writers = &observed.writers[g];
        let ended_right =
            host == guest && (writers.contains(&host) || (writers.is_empty() && host == 0));
        if ended_right {
            continue;
        }
        if host == 0 && guest == 0 && !writers.is_empty() && !writers.contains(&0) {
            lost.push(g);
        } else if wrong.len() < 4 {
            wrong.push(format!(
                "granule {g} ({:#x}) ended with tag {host:#x} for the host and {guest:#x} for \
                 the guest; written: {}",
                ipa + g as u64 * GRANULE,
                written(writers)
            ));
        }
    }
    let mut early = Vec::new();
    for reading in &observed.during {
        if observed.strict {
            early.extend(
                reading
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (reading.first + i, v))
                    .filter(|&(g, v)| {
                        v == 0 && observed.writers.get(g).is_some_and(|w| !w.contains(&0))
                    })
                    .map(|(g, _)| g),
            );
        }
        if let Some((g, value)) = reading
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| (reading.first + i, v))
            .find(|&(g, v)| v != 0 && !observed.writers.get(g).is_some_and(|w| w.contains(&v)))
        {
            wrong.push(format!(
                "{} read tag {value:#x} at granule {g} during the race; written: {}",
                reading.who,
                observed
                    .writers
                    .get(g)
                    .map_or("nothing".into(), |w| written(w))
            ));
        }
    }
    for reading in &observed.faults {
        if let Some(g) = reading
            .values
            .iter()
            .enumerate()
            .map(|(i, &f)| (reading.first + i, f))
            .find(|&(g, f)| {
                f != 0
                    && !observed
                        .writers
                        .get(g)
                        .is_some_and(|w| w.iter().any(|&t| t != 0))
            })
            .map(|(g, _)| g)
        {
            wrong.push(format!(
                "{} took a tag check fault at granule {g}, which nobody tagged",
                reading.who
            ));
        }
    }
    let mut evidence = vec![
        maps(
            ipa,
            ("tags written in the race", &expected),
            "host at the end",
            &observed.end_host,
        ),
        maps(
            ipa,
            ("tags written in the race", &expected),
            "guest LDG at the end",
            &observed.end_guest,
        ),
    ];
    for (what, want, seen) in &observed.also {
        let compared = maps(ipa, ("tags before the race", want), what, seen);
        if matches!(&compared, Evidence::TagMaps { mismatches, .. } if !mismatches.is_empty()) {
            wrong.push(format!("{what} differs from the tags before the race"));
        }
        evidence.push(compared);
    }
    let wrong = distinct(wrong);
    evidence.extend(
        wrong
            .iter()
            .map(|what| Evidence::Note { text: what.clone() }),
    );
    let verdict = if !wrong.is_empty() {
        Verdict::Wrong(in_brief(&wrong))
    } else if !lost.is_empty() {
        Verdict::Lost(lost)
    } else if !early.is_empty() {
        early.sort_unstable();
        early.dedup();
        Verdict::Early(early)
    } else {
        Verdict::Clean
    };
    Judgement { verdict, evidence }
}

fn written(writers: &[u8]) -> String {
    if writers.is_empty() {
        return "nothing".into();
    }
    let tags: Vec<String> = writers.iter().map(|t| format!("{t:#x}")).collect();
    tags.join(" or ")
}

fn maps(
    ipa: u64,
    (expected_from, expected): (&str, &[u8]),
    observed_from: &str,
    observed: &[u8],
) -> Evidence {
    let mismatches: Vec<usize> = (0..expected.len().max(observed.len()))
        .filter(|&g| expected.get(g) != observed.get(g))
        .collect();
    Evidence::TagMaps {
        expected_from: expected_from.into(),
        observed_from: observed_from.into(),
        ipa,
        expected: tags_to_hex(expected),
        observed: tags_to_hex(observed),
        mismatches,
    }
}

/// Each finding once, in the order first seen, with how often it was made where more than
/// once (a host that read a page many times during a round finds the same thing each time).
fn distinct(findings: Vec<String>) -> Vec<String> {
    let mut counted: Vec<(String, usize)> = Vec::new();
    for finding in findings {
        match counted.iter_mut().find(|(seen, _)| *seen == finding) {
            Some((_, count)) => *count += 1,
            None => counted.push((finding, 1)),
        }
    }
    (counted.into_iter())
        .map(|(finding, count)| match count {
            1 => finding,
            n => format!("{finding} (×{n})"),
        })
        .collect()
}

/// How many findings a verdict's reason names; the evidence keeps them all.
const REASON_FINDINGS: usize = 4;

/// The findings as a verdict's reason: the first few, and how many more the evidence holds.
fn in_brief(findings: &[String]) -> String {
    let mut reason = findings[..findings.len().min(REASON_FINDINGS)].join("; ");
    if findings.len() > REASON_FINDINGS {
        reason.push_str(&format!(
            "; and {} more in the evidence",
            findings.len() - REASON_FINDINGS
        ));
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_made_many_times_is_named_once_and_a_reason_stays_short() {
        let findings: Vec<String> = ["a", "b", "a", "c", "d", "e", "a"].map(String::from).into();
        let findings = distinct(findings);
        assert_eq!(findings, ["a (×3)", "b", "c", "d", "e"]);
        assert_eq!(
            in_brief(&findings),
            "a (×3); b; c; d; and 1 more in the evidence"
        );
        assert_eq!(in_brief(&findings[..2]), "a (×3); b");
    }

    fn round(writers: &[&[u8]], host: &[u8], guest: &[u8]) -> Observed {
        Observed {
            writers: writers.iter().map(|w| w.to_vec()).collect(),
            end_host: host.to_vec(),
            end_guest: guest.to_vec(),
            ..Observed::default()
        }
    }

    #[test]
    fn tags_a_writer_wrote_on_both_sides_are_clean() {
        let observed = round(&[&[3], &[4, 5], &[]], &[3, 5, 0], &[3, 5, 0]);
        let judgement = judge(0, &observed);
        assert_eq!(judgement.verdict, Verdict::Clean);
        assert!(
            matches!(&judgement.evidence[0], Evidence::TagMaps { mismatches, .. } if mismatches.is_empty())
        );
    }

    #[test]
    fn zeros_on_both_sides_where_tags_were_written_are_lost_tags() {
        let observed = round(&[&[3], &[4], &[5]], &[0, 4, 0], &[0, 4, 0]);
        let judgement = judge(0, &observed);
        assert_eq!(judgement.verdict, Verdict::Lost(vec![0, 2]));
        assert!(
            matches!(&judgement.evidence[1], Evidence::TagMaps { mismatches, .. } if mismatches == &vec![0, 2])
        );
    }

    #[test]
    fn a_foreign_tag_or_two_views_that_disagree_are_wrong_whatever_the_kernel() {
        let foreign = round(&[&[3], &[4]], &[3, 7], &[3, 7]);
        assert!(matches!(judge(0, &foreign).verdict, Verdict::Wrong(w) if w.contains("granule 1")));
        // Zero for the host only: not the race's signature.
        let disagree = round(&[&[3]], &[0], &[3]);
        assert!(matches!(judge(0, &disagree).verdict, Verdict::Wrong(_)));
        // A lost tag next to a foreign one: wrong.
        let both = round(&[&[3], &[4]], &[0, 9], &[0, 9]);
        assert!(matches!(judge(0, &both).verdict, Verdict::Wrong(_)));
    }

    #[test]
    fn a_strict_race_takes_zero_reads_for_a_page_touched_too_early() {
        let mut observed = round(&[&[3], &[4]], &[3, 4], &[3, 4]);
        observed.during.push(Reading {
            who: "vCPU 1's LDG".into(),
            first: 0,
            values: vec![0, 4],
        });
        assert_eq!(judge(0, &observed).verdict, Verdict::Clean);
        observed.strict = true;
        assert_eq!(judge(0, &observed).verdict, Verdict::Early(vec![0]));
    }

    #[test]
    fn reads_during_the_race_see_zero_or_a_writer_and_faults_need_a_tag() {
        let mut observed = round(&[&[3], &[]], &[3, 0], &[3, 0]);
        observed.during.push(Reading {
            who: "vCPU 1's LDG".into(),
            first: 0,
            values: vec![0, 0],
        });
        observed.faults.push(Reading {
            who: "vCPU 0's load".into(),
            first: 0,
            values: vec![1, 0],
        });
        assert_eq!(judge(0, &observed).verdict, Verdict::Clean);
        observed.during[0].values = vec![3, 6];
        assert!(matches!(judge(0, &observed).verdict, Verdict::Wrong(w) if w.contains("tag 0x6")));
        observed.during.clear();
        observed.faults[0].values = vec![0, 1];
        assert!(
            matches!(judge(0, &observed).verdict, Verdict::Wrong(w) if w.contains("nobody tagged"))
        );
    }
}
