//! Bar charts of a check's figures ([`crate::figures`]): one chart for its timings, one for its
//! ratios, a bar a figure with its name above it and its value beside it. Benchmarks draw the
//! same bars with their confidence intervals as whiskers ([`interval_chart`]).
//!
//! As with the tag-map pictures, only the geometry is computed here; the template draws it as
//! inline SVG. (A plotting crate would write its own SVG, past the template's escaping.)

use serde::Serialize;

use crate::figures::{format_figure, Figure, FigureKind};

const WIDTH: u32 = 640;
/// The longest bar; the value is written after it.
const BAR_SPAN: u32 = 500;
const BAR_HEIGHT: u32 = 10;
/// A figure's name line and its bar.
const ROW: u32 = 30;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BarChart {
    /// `timings` or `ratios`.
    pub title: &'static str,
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    /// For ratios: where 1.0 (tagged costs as much as untagged) falls, as a line.
    pub reference_x: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bar {
    pub label: String,
    pub value: String,
    pub label_y: u32,
    pub bar_y: u32,
    /// At least one pixel, so that a zero still shows where its bar would be.
    pub bar_width: u32,
    pub value_x: u32,
    pub value_y: u32,
    /// The value's interval, as a line across the bar's end.
    pub whisker: Option<Whisker>,
}

/// An interval drawn over a bar: from `x1` to `x2` at height `y`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Whisker {
    pub x1: u32,
    pub x2: u32,
    pub y: u32,
}

/// A value with its interval, to draw as a bar with a whisker.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub label: String,
    /// Milliseconds for timings, the ratio itself for ratios; so are the bounds.
    pub value: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// The charts of `figures`: timings first, then ratios; none for a kind without figures.
pub fn charts(figures: &[Figure<'_>]) -> Vec<BarChart> {
    [
        (FigureKind::Timing, "timings"),
        (FigureKind::Ratio, "ratios"),
    ]
    .into_iter()
    .filter_map(|(kind, title)| {
        let of_kind: Vec<&Figure> = figures.iter().filter(|f| f.kind == kind).collect();
        (!of_kind.is_empty()).then(|| chart(title, kind, &of_kind))
    })
    .collect()
}

fn chart(title: &'static str, kind: FigureKind, figures: &[&Figure<'_>]) -> BarChart {
    let intervals: Vec<Interval> = figures
        .iter()
        .map(|f| Interval {
            label: f.what.to_string(),
            value: f.value,
            lower: None,
            upper: None,
        })
        .collect();
    interval_chart(title, kind, &intervals)
}

/// A chart of `intervals`, scaled to the largest value or bound; for ratios with the line at
/// 1.0 (as much with as without).
pub fn interval_chart(title: &'static str, kind: FigureKind, intervals: &[Interval]) -> BarChart {
    let largest = intervals
        .iter()
        .map(|i| i.value.max(i.upper.unwrap_or(0.0)).max(0.0))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // Ratios are drawn against 1.0 even when all are below it, so the reference line shows.
    let scale_to = match kind {
        FigureKind::Ratio => largest.max(1.0),
        FigureKind::Timing => largest,
    };
    let length = |value: f64| -> u32 {
        if scale_to > 0.0 {
            ((value.max(0.0) / scale_to) * f64::from(BAR_SPAN)).round() as u32
        } else {
            0
        }
    };
    let bars = intervals
        .iter()
        .enumerate()
        .map(|(i, interval)| {
            let top = i as u32 * ROW;
            let bar_width = length(interval.value).max(1);
            let whisker = match (interval.lower, interval.upper) {
                (Some(lower), Some(upper)) if lower.is_finite() && upper.is_finite() => {
                    Some(Whisker {
                        x1: length(lower),
                        x2: length(upper).max(length(lower) + 1),
                        y: top + 15 + BAR_HEIGHT / 2,
                    })
                }
                _ => None,
            };
            let value_x = whisker.as_ref().map_or(bar_width, |w| w.x2.max(bar_width)) + 6;
            Bar {
                label: interval.label.clone(),
                value: format_figure(kind, interval.value),
                label_y: top + 11,
                bar_y: top + 15,
                bar_width,
                value_x,
                value_y: top + 15 + BAR_HEIGHT - 1,
                whisker,
            }
        })
        .collect();
    BarChart {
        title,
        width: WIDTH,
        height: intervals.len() as u32 * ROW,
        bars,
        reference_x: (kind == FigureKind::Ratio).then(|| length(1.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(what: &'static str, kind: FigureKind, value: f64) -> Figure<'static> {
        Figure { what, kind, value }
    }

    #[test]
    fn timings_and_ratios_get_a_chart_each_scaled_to_their_largest() {
        let figures = [
            figure("MTE VM", FigureKind::Timing, 0.04),
            figure("tagged / untagged", FigureKind::Ratio, 0.5),
            figure("VM without MTE", FigureKind::Timing, 0.02),
        ];
        let charts = charts(&figures);
        assert_eq!(charts.len(), 2);
        let timings = &charts[0];
        assert_eq!(timings.title, "timings");
        let widths: Vec<u32> = timings.bars.iter().map(|b| b.bar_width).collect();
        assert_eq!(widths, [BAR_SPAN, BAR_SPAN / 2]);
        assert_eq!(timings.bars[0].value, "40.0 µs");
        assert_eq!(timings.reference_x, None);
        assert_eq!(timings.height, 2 * ROW);
        // A ratio below 1 is drawn against 1, where the reference line is.
        let ratios = &charts[1];
        assert_eq!(ratios.bars[0].bar_width, BAR_SPAN / 2);
        assert_eq!(ratios.reference_x, Some(BAR_SPAN));
    }

    #[test]
    fn intervals_draw_whiskers_within_the_scale() {
        let chart = interval_chart(
            "ratios",
            FigureKind::Ratio,
            &[Interval {
                label: "tagged / untagged".into(),
                value: 2.0,
                lower: Some(1.5),
                upper: Some(2.5),
            }],
        );
        let bar = &chart.bars[0];
        // Scaled to the upper bound, the largest thing drawn.
        assert_eq!(bar.bar_width, BAR_SPAN * 4 / 5);
        let whisker = bar.whisker.as_ref().unwrap();
        assert_eq!((whisker.x1, whisker.x2), (BAR_SPAN * 3 / 5, BAR_SPAN));
        assert_eq!(bar.value_x, BAR_SPAN + 6);
        assert_eq!(chart.reference_x, Some(BAR_SPAN * 2 / 5));
        assert_eq!(bar.value, "2.00");
    }

    #[test]
    fn zeros_still_show_and_no_figures_draw_nothing() {
        let charts = charts(&[figure("none", FigureKind::Timing, 0.0)]);
        assert_eq!(charts[0].bars[0].bar_width, 1);
        assert!(super::charts(&[]).is_empty());
    }
}
