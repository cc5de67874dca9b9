//! Bar charts of a check's figures ([`crate::figures`]): one chart for its timings, one for its
//! ratios, a bar a figure with its name above it and its value beside it.
//!
//! As with the tag-map pictures, only the geometry is computed here; the template draws it as
//! inline SVG.

use serde::Serialize;

use crate::figures::{Figure, FigureKind};

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
    let largest = figures.iter().map(|f| f.value.max(0.0)).fold(0.0, f64::max);
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
    let bars = figures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let top = i as u32 * ROW;
            let bar_width = length(f.value).max(1);
            Bar {
                label: f.what.to_string(),
                value: f.display(),
                label_y: top + 11,
                bar_y: top + 15,
                bar_width,
                value_x: bar_width + 6,
                value_y: top + 15 + BAR_HEIGHT - 1,
            }
        })
        .collect();
    BarChart {
        title,
        width: WIDTH,
        height: figures.len() as u32 * ROW,
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
    fn zeros_still_show_and_no_figures_draw_nothing() {
        let charts = charts(&[figure("none", FigureKind::Timing, 0.0)]);
        assert_eq!(charts[0].bars[0].bar_width, 1);
        assert!(super::charts(&[]).is_empty());
    }
}
