//! What the fuzz targets share: how a target's input is cut into the pieces a reader sees, and
//! the reports every run read from another program's bytes must still render.

use mte_results::summary::RunSummary;

/// xtask's `.modinfo` parser, included as it is: xtask is a binary crate.
#[path = "../../xtask/src/modinfo.rs"]
pub mod modinfo;

/// `input` cut at each `separator`, into at most `parts` pieces (the last one keeps the rest).
pub fn split_parts<'a>(input: &'a [u8], separator: &[u8], parts: usize) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    while pieces.len() + 1 < parts {
        let Some(at) = rest.windows(separator.len()).position(|w| w == separator) else {
            break;
        };
        pieces.push(&rest[..at]);
        rest = &rest[at + separator.len()..];
    }
    pieces.push(rest);
    pieces
}

/// The plain-text reports of a run: whatever it holds, each renders.
pub fn render_text_reports(summary: &RunSummary) {
    let _ = summary.tally();
    let _ = summary.columns();
    let _ = mte_results::summary::table(summary);
    let _ = mte_results::junit::render(summary);
    let _ = mte_results::tap::render(summary);
    let _ = mte_results::lava::render(summary);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_split_into_at_most_the_parts_asked_for() {
        assert_eq!(split_parts(b"a|b|c", b"|", 2), [&b"a"[..], b"b|c"]);
        assert_eq!(split_parts(b"a|b|c", b"|", 5), [&b"a"[..], b"b", b"c"]);
        assert_eq!(split_parts(b"", b"|", 3), [&b""[..]]);
    }
}
