//! The report in a real browser: headless Chromium opens a run's `report/index.html` from disk,
//! draws it into `report/screenshot.png` (kept with the run) and dumps the DOM it built, whose
//! "Checks by lane" matrix must hold exactly the run's verdicts: every check a row, every boot
//! of a lane a column, every verdict of `results.jsonl` a cell with its outcome.
//!
//! A page the browser cannot open, a matrix that lost or changed a cell, or no screenshot fails
//! the check. No Chromium to be had (no root to install it, no package) skips it, saying why.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mte_results::boot::BootKey;
use mte_results::rundir::{LoadedRun, REPORT_HTML, REPORT_SCREENSHOT};
use mte_results::summary::column_name;
use mte_results::Verdict;

use crate::apt::Apt;
use crate::tools;
use anyhow::{anyhow, bail, Context, Result};

/// The window the page is drawn in.
const WINDOW: (u32, u32) = (1400, 2000);
/// A browser that takes longer than this to draw a static page is stuck.
const BROWSER_DEADLINE: Duration = Duration::from_secs(180);

/// How the check ended, when it did not fail.
#[derive(Debug)]
pub enum BrowserCheck {
    Passed {
        screenshot: PathBuf,
        rows: usize,
        columns: usize,
    },
    /// Why there was no browser to check with.
    Skipped(String),
}

/// Open the report of `run` in headless Chromium (installed if missing and possible) and check
/// what it drew.
pub fn check(run: &LoadedRun, apt: &mut Apt) -> Result<BrowserCheck> {
    let chromium = match tools::ensure_chromium(apt) {
        Ok(path) => path,
        Err(why) => return Ok(BrowserCheck::Skipped(why)),
    };
    let report = run.dir.join(REPORT_HTML);
    let report = report
        .canonicalize()
        .with_context(|| format!("{}: the run has no report", report.display()))?;
    let url = file_url(&report);
    let profile = std::env::temp_dir().join(format!("mte-report-browser-{}", std::process::id()));
    let screenshot = run.dir.join(REPORT_SCREENSHOT);
    let _ = std::fs::remove_file(&screenshot);
    let result = (|| {
        let headless = |extra: &[String]| {
            let mut command = Command::new(&chromium);
            command
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(extra)
                .arg(&url);
            run_with_deadline(command, BROWSER_DEADLINE)
        };
        headless(&[
            format!("--screenshot={}", screenshot.display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ])
        .context("drawing the report into a screenshot")?;
        let dom = headless(&["--dump-dom".to_string()]).context("dumping the report's DOM")?;
        Ok::<_, anyhow::Error>(dom)
    })();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = result?;

    let png = std::fs::read(&screenshot).with_context(|| {
        format!(
            "the browser left no screenshot at {}: it could not draw the page",
            screenshot.display()
        )
    })?;
    match png_dimensions(&png) {
        Some(size) if size == WINDOW => {}
        Some((w, h)) => bail!(
            "the screenshot is {w}x{h}, not the {}x{} window",
            WINDOW.0,
            WINDOW.1
        ),
        None => bail!("{} is not a PNG image", screenshot.display()),
    }
    let seen =
        matrix_in_dom(&dom).map_err(|why| anyhow!("the report as the browser built it: {why}"))?;
    let expected = expected_matrix(&run.verdicts);
    if let Some(difference) = first_difference(&expected, &seen) {
        bail!("the matrix the browser shows differs from the run's verdicts: {difference}");
    }
    // Every verdict its own cell: a column that stood for two boots would hide one of them.
    let shown = cells_shown(&seen);
    if shown != run.verdicts.len() {
        bail!(
            "the matrix shows {shown} of the run's {} verdicts",
            run.verdicts.len()
        );
    }
    Ok(BrowserCheck::Passed {
        screenshot,
        rows: seen.rows.len(),
        columns: seen.columns.len(),
    })
}

/// A `file://` URL, with the bytes a URL path cannot hold percent-encoded.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~+".contains(byte) {
            url.push(*byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// Run `command` to its end, or kill it at `deadline`; its stdout, or why it failed with its
/// last words on stderr.
fn run_with_deadline(mut command: Command, deadline: Duration) -> Result<String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the browser")?;
    let read_all = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped")));
    let err = read_all(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the browser was still running after {} s",
                deadline.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let last = stderr.lines().rev().take(3).collect::<Vec<_>>();
        bail!("the browser exited with {status}: {}", last.join(" / "));
    }
    Ok(stdout)
}

/// The matrix of a report: column headings, and per row the check and each cell's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixSeen {
    pub columns: Vec<String>,
    pub rows: Vec<(String, Vec<String>)>,
}

/// What an absent cell shows.
const ABSENT: &str = "—";

/// The matrix the report must show for `verdicts`: a row a check in the order checks first
/// reported, a column a boot of a lane (a kernel booted twice is two columns), named as the
/// report names them.
pub fn expected_matrix(verdicts: &[Verdict]) -> MatrixSeen {
    let mut keys: Vec<BootKey> = Vec::new();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for v in verdicts {
        let key = BootKey::of(v);
        let at = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            keys.push(key);
            keys.len() - 1
        });
        let row = match rows.iter().position(|(test, _)| *test == v.test) {
            Some(row) => row,
            None => {
                rows.push((v.test.clone(), Vec::new()));
                rows.len() - 1
            }
        };
        let cells = &mut rows[row].1;
        if cells.len() <= at {
            cells.resize(at + 1, ABSENT.to_string());
        }
        cells[at] = v.outcome.as_str().to_string();
    }
    for (_, cells) in &mut rows {
        cells.resize(keys.len(), ABSENT.to_string());
    }
    let several = |lane| keys.iter().filter(|k| k.lane == lane).count() > 1;
    let columns = (keys.iter())
        .map(|k| column_name(*k, several(k.lane)))
        .collect();
    MatrixSeen { columns, rows }
}

/// How many verdicts a matrix shows: its cells that are not absent.
pub fn cells_shown(matrix: &MatrixSeen) -> usize {
    let shown = |cell: &&String| cell.as_str() != ABSENT;
    matrix
        .rows
        .iter()
        .map(|(_, cells)| cells.iter().filter(shown).count())
        .sum()
}

/// Read the matrix out of a dumped DOM.
pub fn matrix_in_dom(dom: &str) -> Result<MatrixSeen, String> {
    if !dom.contains("<h1>") {
        return Err("the page has no heading: it did not load".into());
    }
    let start = dom
        .find("<section id=\"matrix\">")
        .ok_or("no \"Checks by lane\" matrix (section#matrix) in the page")?;
    let end = dom[start..]
        .find("</section>")
        .map(|at| start + at)
        .ok_or("the matrix section is not closed")?;
    let section = &dom[start..end];
    let head = elements(section, "thead")
        .into_iter()
        .next()
        .ok_or("the matrix has no header")?;
    let mut columns: Vec<String> = elements(head, "th").into_iter().map(text_of).collect();
    if columns.first().map(String::as_str) != Some("check") {
        return Err(format!(
            "the matrix's first heading is {:?}, not \"check\"",
            columns.first()
        ));
    }
    columns.remove(0);
    let body = elements(section, "tbody")
        .into_iter()
        .next()
        .ok_or("the matrix has no body")?;
    let mut rows = Vec::new();
    for row in elements(body, "tr") {
        let mut cells: Vec<String> = elements(row, "td").into_iter().map(text_of).collect();
        if cells.is_empty() {
            return Err("a matrix row has no cells".into());
        }
        let test = cells.remove(0);
        rows.push((test, cells));
    }
    Ok(MatrixSeen { columns, rows })
}

/// The first way `seen` differs from `expected`, in words.
pub fn first_difference(expected: &MatrixSeen, seen: &MatrixSeen) -> Option<String> {
    if expected.columns != seen.columns {
        return Some(format!(
            "columns {:?}, expected {:?}",
            seen.columns, expected.columns
        ));
    }
    if expected.rows.len() != seen.rows.len() {
        return Some(format!(
            "{} rows, expected {}",
            seen.rows.len(),
            expected.rows.len()
        ));
    }
    expected
        .rows
        .iter()
        .zip(&seen.rows)
        .find(|(e, s)| e != s)
        .map(|(e, s)| {
            format!(
                "row {:?} shows {:?}, expected {:?} {:?}",
                s.0, s.1, e.0, e.1
            )
        })
}

// The page is the suite's own markup and the matrix a plain table in it: the few string scans
// below read it back from the browser's DOM; an HTML parser crate (scraper: html5ever and
// selectors) would be most of xtask's build for this one table.

/// The inner HTML of each `<tag ...>...</tag>` in `html` (not nested in itself).
fn elements<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        // `<th` must not match `<thead`.
        if !after.starts_with(['>', ' ', '\t', '\n']) {
            rest = after;
            continue;
        }
        let Some(body_start) = after.find('>') else {
            break;
        };
        let body = &after[body_start + 1..];
        let Some(end) = body.find(&close) else {
            break;
        };
        found.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    found
}

/// The text of an HTML fragment: tags dropped, entities decoded, white space collapsed.
fn text_of(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let decoded = decode_entities(&text);
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let entity = after.find(';').map(|end| (&after[..end], end));
        let decoded = entity.and_then(|(name, _)| match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            "mdash" => Some('—'),
            "middot" => Some('·'),
            _ => name
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| name.strip_prefix('#').map(str::parse))
                .and_then(|n| n.ok())
                .and_then(char::from_u32),
        });
        match (decoded, entity) {
            (Some(c), Some((_, end))) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Width and height from a PNG's IHDR chunk.
pub fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) || bytes.get(12..16) != Some(b"IHDR") {
        return None;
    }
    let word = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some((word(16)?, word(20)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte_results::{Lane, Outcome};

    fn verdict(test: &str, lane: Lane, outcome: Outcome) -> Verdict {
        Verdict {
            lane,
            ..crate::testing::verdict(test, outcome)
        }
    }

    /// The matrix as Chromium serialises it: attributes kept, `&mdash;` as the character.
    const DOM: &str = "<html><head></head><body><header><h1>MTE run x</h1></header>\n\
        <section id=\"matrix\">\n<h2>Checks by lane</h2>\n<table class=\"verdicts matrix\">\n  \
        <thead><tr><th>check</th><th>emulated · 6.12</th><th>qemu · 6.12</th></tr></thead>\n  \
        <tbody>\n  <tr><td class=\"mono\">tags::a &amp; b</td><td><a href=\"#v0\"><span class=\"badge pass\">pass</span></a></td>\
        <td><a href=\"#v2\"><span class=\"badge fail\">fail</span></a></td></tr>\n  \
        <tr><td class=\"mono\">abi::b</td><td><a href=\"#v1\"><span class=\"badge skip\">skip</span></a></td>\
        <td><span class=\"absent\">—</span></td></tr>\n  </tbody>\n</table>\n</section>\
        <section id=\"verdicts\"></section></body></html>";

    #[test]
    fn the_matrix_is_read_from_the_dom_as_the_run_expects_it() {
        let verdicts = [
            verdict("tags::a & b", Lane::Emulated, Outcome::Pass),
            verdict("abi::b", Lane::Emulated, Outcome::Skip),
            verdict("tags::a & b", Lane::Qemu, Outcome::Fail),
        ];
        let expected = expected_matrix(&verdicts);
        let seen = matrix_in_dom(DOM).unwrap();
        assert_eq!(seen.columns, ["emulated · 6.12", "qemu · 6.12"]);
        assert_eq!(
            seen.rows[1],
            ("abi::b".into(), vec!["skip".into(), "—".into()])
        );
        assert_eq!(first_difference(&expected, &seen), None);

        let mut changed = verdicts.to_vec();
        changed[1].outcome = Outcome::Pass;
        let difference = first_difference(&expected_matrix(&changed), &seen).unwrap();
        assert!(
            difference.starts_with("row \"abi::b\" shows [\"skip\""),
            "{difference}"
        );
        changed.push(verdict("new::c", Lane::Qemu, Outcome::Pass));
        assert_eq!(
            first_difference(&expected_matrix(&changed), &seen).unwrap(),
            "2 rows, expected 3"
        );
    }

    #[test]
    fn a_kernel_booted_twice_must_show_both_boots() {
        let at = |boot: u32, kernel: &str| Verdict {
            boot,
            kernel: kernel.into(),
            ..verdict("migration::a", Lane::Emulated, Outcome::Pass)
        };
        let verdicts = [at(1, "6.1"), at(2, "6.12"), at(3, "6.1")];
        let expected = expected_matrix(&verdicts);
        assert_eq!(
            expected.columns,
            [
                "emulated boot 1 · 6.1",
                "emulated boot 2 · 6.12",
                "emulated boot 3 · 6.1"
            ]
        );
        assert_eq!(cells_shown(&expected), 3);
        // A page that merged the two boots of 6.1 into one column shows 2 of the 3.
        let merged = MatrixSeen {
            columns: vec!["emulated · 6.1".into(), "emulated · 6.12".into()],
            rows: vec![("migration::a".into(), vec!["pass".into(), "pass".into()])],
        };
        assert!(first_difference(&expected, &merged).is_some());
        assert_eq!(cells_shown(&merged), 2);
    }

    #[test]
    fn a_page_without_its_matrix_is_told() {
        assert!(matrix_in_dom("<html><body></body></html>")
            .unwrap_err()
            .contains("did not load"));
        assert!(matrix_in_dom("<html><body><h1>x</h1></body></html>")
            .unwrap_err()
            .contains("section#matrix"));
    }

    #[test]
    fn entities_and_tags_give_way_to_text() {
        assert_eq!(
            text_of("<a href=\"#x\"> a &lt;b&gt; &#39;c&#x27; </a>&mdash;"),
            "a <b> 'c' —"
        );
        assert_eq!(decode_entities("AT&T &bogus; &"), "AT&T &bogus; &");
    }

    #[test]
    fn png_sizes_are_read_from_the_header() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend(1400u32.to_be_bytes());
        png.extend(2000u32.to_be_bytes());
        assert_eq!(png_dimensions(&png), Some((1400, 2000)));
        assert_eq!(png_dimensions(b"GIF89a"), None);
    }

    #[test]
    fn file_urls_encode_what_a_path_may_hold() {
        assert_eq!(
            file_url(Path::new("/work/a b/report/index.html")),
            "file:///work/a%20b/report/index.html"
        );
    }
}
