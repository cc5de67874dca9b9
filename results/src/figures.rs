//! Figures: the numbers a check measured (what a tag costs on a path), as the reports plot them
//! and the comparison of two runs weighs them.
//!
//! A figure is an [`Evidence::Values`] whose observed value is a number:
//! - a *timing* when the number carries a time unit (`ns`, `µs` or `us`, `ms`, `s`), e.g.
//!   `12.3 µs`; it is kept in milliseconds;
//! - a *ratio* when the number is bare and `what` names a ratio (`ratio`, or `a / b`), e.g.
//!   `first touch, tagged / untagged` = `1.42`.
//!
//! Any other value (a count, an address, "not measured: ...") is no figure. For both kinds a
//! larger number is worse: more time, or tags costing more against the untagged baseline.
//! A fault-injection proof has no figures: its numbers were measured with a fault injected.

use serde::{Deserialize, Serialize};

use crate::model::{Evidence, Verdict, FAULT_INJECTION_PROOFS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FigureKind {
    /// A duration, in milliseconds.
    Timing,
    /// A bare ratio.
    Ratio,
}

/// One measured number of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure<'a> {
    pub what: &'a str,
    pub kind: FigureKind,
    /// Milliseconds for a timing; the ratio itself for a ratio.
    pub value: f64,
}

impl Figure<'_> {
    /// The value for a person, in the unit that reads best.
    pub fn display(&self) -> String {
        format_figure(self.kind, self.value)
    }
}

/// A figure's value for a person: timings in ns, µs, ms or s by size; ratios with two decimals.
pub fn format_figure(kind: FigureKind, value: f64) -> String {
    match kind {
        FigureKind::Ratio => format!("{value:.2}"),
        FigureKind::Timing => {
            let magnitude = value.abs();
            if magnitude >= 1000.0 {
                format!("{:.2} s", value / 1000.0)
            } else if magnitude >= 1.0 {
                format!("{value:.2} ms")
            } else if magnitude >= 0.001 {
                format!("{:.1} µs", value * 1000.0)
            } else {
                format!("{:.0} ns", value * 1e6)
            }
        }
    }
}

/// The figures of a verdict, in the order of its evidence.
pub fn figures(verdict: &Verdict) -> Vec<Figure<'_>> {
    if verdict.test.starts_with(FAULT_INJECTION_PROOFS) {
        return Vec::new();
    }
    verdict
        .detail
        .iter()
        .filter_map(|evidence| match evidence {
            Evidence::Values { what, observed, .. } => figure(what, observed),
            _ => None,
        })
        .collect()
}

/// The figure in one value, if it is one.
pub fn figure<'a>(what: &'a str, observed: &str) -> Option<Figure<'a>> {
    let observed = observed.trim();
    let (number, unit) = match observed.find(|c: char| c.is_whitespace()) {
        Some(at) => (&observed[..at], observed[at..].trim()),
        None => split_glued_unit(observed),
    };
    let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite())?;
    let (kind, value) = match unit {
        "" if names_a_ratio(what) => (FigureKind::Ratio, value),
        "" => return None,
        unit => (FigureKind::Timing, in_milliseconds(value, unit)?),
    };
    Some(Figure { what, kind, value })
}

/// `12.5ms` as (`12.5`, `ms`): a unit may follow its number without a space.
fn split_glued_unit(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(text.len());
    (&text[..at], &text[at..])
}

/// Divided rather than multiplied by a fraction, so that `30.5 µs` is exactly `0.0305` ms.
fn in_milliseconds(value: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => value / 1e6,
        "µs" | "μs" | "us" => value / 1e3,
        "ms" => value,
        "s" => value * 1e3,
        _ => return None,
    })
}

fn names_a_ratio(what: &str) -> bool {
    what.to_ascii_lowercase().contains("ratio") || what.contains(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    #[test]
    fn timings_carry_a_unit_and_are_kept_in_milliseconds() {
        let f = figure("first touch per page, MTE VM", "12.5 µs").unwrap();
        assert_eq!(f.kind, FigureKind::Timing);
        assert!((f.value - 0.0125).abs() < 1e-12);
        let ms = |observed: &str| figure("x", observed).unwrap().value;
        for (observed, expected) in [
            ("3 s", 3000.0),
            ("250ms", 250.0),
            ("40 us", 0.04),
            ("5 ns", 5e-6),
        ] {
            assert!((ms(observed) - expected).abs() < 1e-12, "{observed}");
        }
    }

    #[test]
    fn ratios_are_bare_numbers_whose_what_names_a_ratio() {
        let f = figure("first touch, tagged / untagged", "1.42").unwrap();
        assert_eq!((f.kind, f.value), (FigureKind::Ratio, 1.42));
        assert_eq!(figure("hit ratio", "0.5").unwrap().kind, FigureKind::Ratio);
    }

    #[test]
    fn other_values_are_no_figures() {
        assert_eq!(figure("exceptions taken", "1"), None);
        assert_eq!(figure("FAR_EL1", "0xa00000041020000"), None);
        assert_eq!(figure("a / b", "n/a (untagged cost measured as 0)"), None);
        assert_eq!(
            figure("first touch", "not measured: no huge pages here"),
            None
        );
        assert_eq!(figure("x", "12 furlongs"), None);
        assert_eq!(figure("x", "NaN ms"), None);
    }

    #[test]
    fn a_verdict_s_figures_come_from_its_values() {
        let mut v = crate::fixtures::verdict("cost::cow", Outcome::Pass, "ok");
        v.detail = vec![
            Evidence::Note { text: "n".into() },
            Evidence::Values {
                what: "cow per page, MTE VM".into(),
                expected: "measured: best of 5".into(),
                observed: "30.0 µs".into(),
            },
            Evidence::Values {
                what: "words changed".into(),
                expected: "0".into(),
                observed: "0".into(),
            },
        ];
        let found = figures(&v);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].what, "cow per page, MTE VM");
        assert_eq!(found[0].display(), "30.0 µs");
        v.test = format!("{FAULT_INJECTION_PROOFS}corrupt_tag::cost::cow");
        assert!(figures(&v).is_empty());
    }

    #[test]
    fn figures_read_in_the_unit_that_suits_them() {
        assert_eq!(format_figure(FigureKind::Timing, 2500.0), "2.50 s");
        assert_eq!(format_figure(FigureKind::Timing, 12.0), "12.00 ms");
        assert_eq!(format_figure(FigureKind::Timing, 0.0305), "30.5 µs");
        assert_eq!(format_figure(FigureKind::Timing, 0.0000004), "0 ns");
        assert_eq!(format_figure(FigureKind::Ratio, 1.456), "1.46");
    }
}
