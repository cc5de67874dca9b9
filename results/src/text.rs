//! Text from results made safe for a terminal or a line-based format: what a guest, a kernel or
//! an edited results file put in a test name, a reason or an error cannot move the cursor,
//! recolour the screen, reorder characters or start a line of its own.

/// `text` with every control character (an escape sequence's ESC, a NUL, a carriage return,
/// C1 controls) and every bidirectional override shown as U+FFFD; a tab becomes a space and
/// line breaks stay.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '\n',
            '\t' => ' ',
            c if c.is_control() || is_bidi_control(c) => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `text` as one printable line: line breaks become spaces, then as [`printable`].
pub fn one_line(text: &str) -> String {
    printable(&text.replace(['\n', '\r'], " "))
}

/// The first line of `text`, printable: how a table shows a reason.
pub fn first_line(text: &str) -> String {
    printable(text.lines().next().unwrap_or_default())
}

/// The Unicode controls that reorder what follows them on a line (U+202A to U+202E, U+2066 to
/// U+2069, and the marks U+200E, U+200F, U+061C).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_overrides_cannot_reach_a_terminal() {
        let hostile = "a\u{1b}[2J\u{1b}]0;title\u{7}b\rc\td\u{0}\u{9b}31m\u{202e}evil";
        let shown = printable(hostile);
        assert!(shown.chars().all(|c| !c.is_control()), "{shown:?}");
        assert_eq!(
            shown,
            "a\u{fffd}[2J\u{fffd}]0;title\u{fffd}b\u{fffd}c d\u{fffd}\u{fffd}31m\u{fffd}evil"
        );
        assert_eq!(printable("x\ny"), "x\ny");
        assert_eq!(one_line("x\ny\r\nz"), "x y  z");
        assert_eq!(first_line("why\u{1b}[31m\nmore"), "why\u{fffd}[31m");
        assert_eq!(first_line(""), "");
    }
}
