//! Tag maps, the evidence most checks carry: one hex digit a granule. How two maps differ, how
//! a long map is cut into lines for a person (the text and the HTML views share the cut), and a
//! map in brief.

use std::collections::BTreeSet;
use std::fmt;

/// How a tag map shows a byte that is no 4-bit tag (a buffer the guest never wrote, say).
pub const NOT_A_TAG: char = '?';

/// Render a tag map as one hex digit per granule ([`NOT_A_TAG`] for a byte above 15).
pub fn tags_to_hex(tags: &[u8]) -> String {
    tags.iter()
        .map(|&t| char::from_digit(t as u32, 16).unwrap_or(NOT_A_TAG))
        .collect()
}

/// Granule indices where two tag maps differ, byte for byte (a length difference counts from
/// the shorter end).
pub fn tag_mismatches(expected: &[u8], observed: &[u8]) -> Vec<usize> {
    let n = expected.len().max(observed.len());
    (0..n)
        .filter(|&i| expected.get(i) != observed.get(i))
        .collect()
}

/// Granules of two hex tag maps that differ: those the runner listed, plus any whose digits
/// disagree (a map shorter than the other differs where it has no digit). Both are taken so a
/// report never hides a difference the runner failed to list.
pub fn differing_granules(expected: &str, observed: &str, listed: &[usize]) -> BTreeSet<usize> {
    let digit = |c: char| c.to_ascii_lowercase();
    let (mut e, mut o) = (expected.chars(), observed.chars());
    let mut differing: BTreeSet<usize> = listed.iter().copied().collect();
    for i in 0.. {
        match (e.next(), o.next()) {
            (None, None) => break,
            (a, b) if a.map(digit) != b.map(digit) => {
                differing.insert(i);
            }
            _ => {}
        }
    }
    differing
}

/// Two tag maps compared: how many granules they cover (the longer's), and which differ.
pub struct Comparison {
    pub granules: usize,
    pub differing: BTreeSet<usize>,
}

impl Comparison {
    /// Compare two hex tag maps, the granules the runner `listed` included (see
    /// [`differing_granules`]).
    pub fn of(expected: &str, observed: &str, listed: &[usize]) -> Self {
        Comparison {
            granules: expected.chars().count().max(observed.chars().count()),
            differing: differing_granules(expected, observed, listed),
        }
    }

    /// How many of the covered granules differ.
    pub fn differing_count(&self) -> usize {
        self.differing.range(..self.granules).count()
    }
}

/// How a tag map is shown as text: lines of 64 granules; past 4 lines only those that differ,
/// at most 16 of them (the full maps stay in `results.jsonl`).
const TEXT_TAG_MAP: TagMapLayout = TagMapLayout {
    granules_per_line: 64,
    whole_up_to_lines: 4,
    max_lines: 16,
    context_lines: 0,
};

/// How a long tag map is cut into lines for a person: all of it when short, otherwise the
/// lines with a difference (and `context_lines` around them), at most `max_lines`.
#[derive(Clone, Copy, Debug)]
pub struct TagMapLayout {
    pub granules_per_line: usize,
    pub whole_up_to_lines: usize,
    pub max_lines: usize,
    pub context_lines: usize,
}

/// One line of a laid-out tag map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagMapLine {
    /// These granules are shown.
    Shown(std::ops::Range<usize>),
    /// This many agreeing granules are left out.
    Elided(usize),
    /// The line limit was reached; this many granules follow unshown.
    Truncated(usize),
}

impl TagMapLayout {
    pub fn lines(&self, granules: usize, differing: &BTreeSet<usize>) -> Vec<TagMapLine> {
        let per_line = self.granules_per_line;
        let line_count = granules.div_ceil(per_line);
        let span = |line: usize| line * per_line..((line + 1) * per_line).min(granules);
        let differs = |line: usize| differing.range(span(line)).next().is_some();
        let near_a_difference = |line: usize| {
            (line.saturating_sub(self.context_lines)..=line + self.context_lines)
                .any(|l| l < line_count && differs(l))
        };
        let mut lines = Vec::new();
        let (mut shown, mut elided) = (0, 0);
        for line in 0..line_count {
            if line_count > self.whole_up_to_lines && !near_a_difference(line) {
                elided += span(line).len();
                continue;
            }
            if elided > 0 {
                lines.push(TagMapLine::Elided(elided));
                elided = 0;
            }
            if shown == self.max_lines {
                lines.push(TagMapLine::Truncated(granules - span(line).start));
                return lines;
            }
            shown += 1;
            lines.push(TagMapLine::Shown(span(line)));
        }
        if elided > 0 {
            lines.push(TagMapLine::Elided(elided));
        }
        lines
    }
}

/// The lines of two maps as text, each line of [`TEXT_TAG_MAP`] as the address of its first
/// granule, the expected (`E`) and observed (`O`) digits, and a caret under each difference.
pub(crate) fn write_text_lines(
    f: &mut fmt::Formatter<'_>,
    ipa: u64,
    expected: &str,
    observed: &str,
    differing: &BTreeSet<usize>,
) -> fmt::Result {
    let expected: Vec<char> = expected.chars().collect();
    let observed: Vec<char> = observed.chars().collect();
    let granules = expected.len().max(observed.len());
    for line in TEXT_TAG_MAP.lines(granules, differing) {
        let span = match line {
            TagMapLine::Shown(span) => span,
            TagMapLine::Elided(_) => continue,
            TagMapLine::Truncated(_) => {
                return write!(
                    f,
                    "\n  ... more lines differ; the full maps are in results.jsonl"
                )
            }
        };
        let digits = |map: &[char]| -> String {
            span.clone()
                .map(|i| map.get(i).copied().unwrap_or('.'))
                .collect()
        };
        let carets: String = span
            .clone()
            .map(|i| if differing.contains(&i) { '^' } else { ' ' })
            .collect();
        let address = ipa.wrapping_add(16 * span.start as u64);
        write!(f, "\n  {address:#018x} E {}", digits(&expected))?;
        write!(f, "\n  {:18} O {}", "", digits(&observed))?;
        if differing.range(span).next().is_some() {
            write!(f, "\n  {:18}   {}", "", carets.trim_end())?;
        }
    }
    Ok(())
}

/// A tag map (hex, one digit a granule) in brief: its length, how many granules carry each
/// tag, and the CRC-32 of its digits, e.g. `16384 granules; tag 1 ×1093, tag 2 ×1092, ...;
/// CRC-32 0x1c291ca3`.
pub fn tag_map_summary(hex: &str) -> String {
    let mut counts: Vec<(char, usize)> = Vec::new();
    for digit in hex.chars() {
        match counts.iter_mut().find(|(d, _)| *d == digit) {
            Some((_, n)) => *n += 1,
            None => counts.push((digit, 1)),
        }
    }
    counts.sort();
    let tags: Vec<String> = counts
        .iter()
        .map(|(digit, n)| format!("tag {digit} ×{n}"))
        .collect();
    format!(
        "{} granules; {}; CRC-32 {:#010x}",
        hex.chars().count(),
        tags.join(", "),
        crc32fast::hash(hex.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tag_maps_show_the_lines_that_differ() {
        let layout = TagMapLayout {
            granules_per_line: 4,
            whole_up_to_lines: 2,
            max_lines: 2,
            context_lines: 0,
        };
        // Short: every line, whatever differs.
        assert_eq!(
            layout.lines(6, &BTreeSet::new()),
            vec![TagMapLine::Shown(0..4), TagMapLine::Shown(4..6)]
        );
        // Long: the differing line, with the agreeing rest elided.
        assert_eq!(
            layout.lines(16, &BTreeSet::from([5])),
            vec![
                TagMapLine::Elided(4),
                TagMapLine::Shown(4..8),
                TagMapLine::Elided(8)
            ]
        );
        // Too many differing lines: the rest is cut.
        assert_eq!(
            layout.lines(16, &BTreeSet::from([0, 4, 8])),
            vec![
                TagMapLine::Shown(0..4),
                TagMapLine::Shown(4..8),
                TagMapLine::Truncated(8)
            ]
        );
    }

    #[test]
    fn tag_maps_compare_granule_by_granule() {
        assert_eq!(tags_to_hex(&[0, 3, 0xf, 0x1a]), "03f?");
        assert_eq!(tag_mismatches(&[1, 2, 3], &[1, 5, 3]), vec![1]);
        assert_eq!(tag_mismatches(&[1, 2], &[1, 2, 0]), vec![2]);
        // A byte that is no tag at all (a buffer nobody wrote) differs from every tag.
        assert_eq!(tag_mismatches(&[0x01], &[0x11]), vec![0]);
    }

    #[test]
    fn differing_granules_joins_the_listed_and_the_visible() {
        let got: Vec<usize> = differing_granules("01aB", "01Ab0", &[0])
            .into_iter()
            .collect();
        assert_eq!(got, vec![0, 4]);
    }
}
