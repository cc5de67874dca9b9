//! What xtask prints: step headers, indented notes, errors, and colour only where a person is
//! watching; the lines of a run as its records arrive ([`progress`]) and at its end
//! ([`closing`]).

pub mod closing;
pub mod progress;

use std::io::IsTerminal;
use std::sync::OnceLock;

fn colour_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED
        .get_or_init(|| std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal())
}

fn paint(code: &str, text: &str) -> String {
    if colour_enabled() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

pub fn bold(text: &str) -> String {
    paint("1", text)
}

pub fn dim(text: &str) -> String {
    paint("2", text)
}

pub fn green(text: &str) -> String {
    paint("32", text)
}

pub fn red(text: &str) -> String {
    paint("1;31", text)
}

pub fn yellow(text: &str) -> String {
    paint("33", text)
}

/// How a run prints its verdicts, as the harness arguments ask libtest to (`-q`,
/// `--format terse|json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// A line a verdict.
    #[default]
    Pretty,
    /// Failures only, and the closing table.
    Quiet,
    /// libtest's JSON events on stdout, one a verdict and one for the run; xtask's other lines
    /// on stderr.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Set how this xtask prints; once, before a run starts.
pub fn set_format(format: Format) {
    let _ = FORMAT.set(format);
}

pub fn format() -> Format {
    FORMAT.get().copied().unwrap_or_default()
}

/// A line of xtask's own: stdout, or stderr where stdout is JSON events.
pub(super) fn line(text: &str) {
    match format() {
        Format::Json => eprintln!("{text}"),
        _ => println!("{text}"),
    }
}

/// The start of a step: `==> kernel 6.12`.
pub fn step(title: &str) {
    line(&bold(&format!("==> {title}")));
}

/// A fact found or an action taken within a step.
pub fn note(text: &str) {
    line(&format!("    {text}"));
}

/// A step's error that does not stop xtask, on stdout with the run's other lines.
pub fn error(text: &str) {
    line(&format!("{} {text}", red("error:")));
}

/// A size for people: bytes, KiB or MiB.
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    match bytes {
        0..KIB => format!("{bytes} B"),
        KIB..1_048_576 => format!("{} KiB", bytes / KIB),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}
