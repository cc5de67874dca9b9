//! Tag maps as pictures: one square a granule, coloured by its tag (16 colours for the 16 tags),
//! 64 granules a row, the granules where the two maps differ outlined in both.
//!
//! This module computes the geometry only; the template draws it as inline SVG, with the
//! colours in the page's style sheet (classes `t0` .. `tf`, and `tx` for a byte that is no tag),
//! so that nothing but numbers and escaped text reaches the markup.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::tag_map::TagMapLine;

/// Side of a granule's square, and the gap between squares, in pixels.
const CELL: u32 = 7;
const PITCH: u32 = CELL + 1;
/// Extra gap before every 16th granule of a row, as in the text grid.
const GROUP_GAP: u32 = 4;
const GRANULES_PER_GROUP: usize = 16;
/// Room for the row's address on the left.
const LABEL_WIDTH: u32 = 124;
/// Height of a row that says what was left out.
const NOTE_HEIGHT: u32 = 16;
/// Rows between address labels: a label a row would overlap its neighbours, and four rows of
/// 64 granules are a 4 KiB page.
const ROWS_PER_LABEL: usize = 4;

/// One map drawn.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TagPicture {
    pub width: u32,
    pub height: u32,
    pub cells: Vec<Cell>,
    /// Row addresses and the notes for granules left out.
    pub labels: Vec<Label>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub x: u32,
    pub y: u32,
    /// `t0` .. `tf` for a tag, `tx` for anything else.
    pub class: &'static str,
    pub differs: bool,
    /// For a differing granule: its index and both tags, shown on hover.
    pub title: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Label {
    pub x: u32,
    pub y: u32,
    pub text: String,
}

/// The colour classes, in tag order, for the legend.
pub const TAG_CLASSES: [&str; 16] = [
    "t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "ta", "tb", "tc", "td", "te", "tf",
];

fn class_of(digit: char) -> &'static str {
    digit
        .to_digit(16)
        .map_or("tx", |tag| TAG_CLASSES[tag as usize])
}

/// Draw `map` (one hex digit a granule from `ipa`) over the rows `lines` chose; `other` is the
/// map it is compared with, named in the titles of the differing granules.
pub fn draw(
    ipa: u64,
    map: &[char],
    other: &[char],
    differing: &BTreeSet<usize>,
    lines: &[TagMapLine],
    granules_per_row: usize,
) -> TagPicture {
    let groups = granules_per_row.div_ceil(GRANULES_PER_GROUP) as u32;
    let mut picture = TagPicture {
        width: LABEL_WIDTH + granules_per_row as u32 * PITCH + groups.saturating_sub(1) * GROUP_GAP,
        height: 0,
        cells: Vec::new(),
        labels: Vec::new(),
    };
    let mut y = 0;
    // Shown rows since the last label; a row after a gap is always labelled.
    let mut unlabelled = ROWS_PER_LABEL;
    for line in lines {
        let note = match line {
            TagMapLine::Shown(span) => {
                if unlabelled >= ROWS_PER_LABEL
                    || span.start % (ROWS_PER_LABEL * granules_per_row) == 0
                {
                    picture.labels.push(Label {
                        x: 0,
                        y: y + CELL,
                        text: format!("{:#018x}", ipa.wrapping_add(16 * span.start as u64)),
                    });
                    unlabelled = 0;
                }
                unlabelled += 1;
                let row = span
                    .clone()
                    .map(|i| cell(i, i - span.start, y, map, other, differing));
                picture.cells.extend(row);
                y += PITCH;
                continue;
            }
            TagMapLine::Elided(granules) => format!("… {granules} granules that agree …"),
            TagMapLine::Truncated(granules) => format!("… {granules} more granules, not drawn"),
        };
        // A line saying what was left out, where the rows would have been.
        unlabelled = ROWS_PER_LABEL;
        picture.labels.push(Label {
            x: LABEL_WIDTH,
            y: y + NOTE_HEIGHT - 4,
            text: note,
        });
        y += NOTE_HEIGHT;
    }
    picture.height = y.max(1);
    picture
}

/// The square of granule `i` of `map`, in column `column` of the row at height `y`.
fn cell(
    i: usize,
    column: usize,
    y: u32,
    map: &[char],
    other: &[char],
    differing: &BTreeSet<usize>,
) -> Cell {
    let digit = map.get(i).copied().unwrap_or('.');
    let differs = differing.contains(&i);
    Cell {
        x: LABEL_WIDTH + column as u32 * PITCH + (column / GRANULES_PER_GROUP) as u32 * GROUP_GAP,
        y,
        class: class_of(digit),
        differs,
        title: differs.then(|| {
            let theirs = other.get(i).copied().unwrap_or('.');
            format!("granule {i}: {digit} here, {theirs} in the other map")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn each_granule_is_a_square_coloured_by_its_tag() {
        let map = chars("0f3?");
        let picture = draw(
            0x4000_0000,
            &map,
            &chars("0a3?"),
            &BTreeSet::from([1]),
            &[TagMapLine::Shown(0..4)],
            64,
        );
        let classes: Vec<&str> = picture.cells.iter().map(|c| c.class).collect();
        assert_eq!(classes, ["t0", "tf", "t3", "tx"]);
        let xs: Vec<u32> = picture.cells.iter().map(|c| c.x).collect();
        assert_eq!(
            xs,
            [
                LABEL_WIDTH,
                LABEL_WIDTH + 8,
                LABEL_WIDTH + 16,
                LABEL_WIDTH + 24
            ]
        );
        assert!(picture.cells[1].differs && !picture.cells[0].differs);
        assert_eq!(
            picture.cells[1].title.as_deref(),
            Some("granule 1: f here, a in the other map")
        );
        assert_eq!(picture.labels[0].text, "0x0000000040000000");
        assert_eq!(picture.height, PITCH);
    }

    #[test]
    fn rows_break_into_groups_and_leave_out_what_the_layout_left_out() {
        let map = vec!['1'; 64 * 3];
        let lines = [
            TagMapLine::Elided(64),
            TagMapLine::Shown(64..128),
            TagMapLine::Truncated(64),
        ];
        let picture = draw(0x1000, &map, &map, &BTreeSet::new(), &lines, 64);
        assert_eq!(picture.cells.len(), 64);
        // The 17th granule of a row starts a new group, after a wider gap.
        assert_eq!(picture.cells[16].x - picture.cells[15].x, PITCH + GROUP_GAP);
        assert_eq!(picture.cells[0].y, NOTE_HEIGHT);
        assert_eq!(picture.labels[0].text, "… 64 granules that agree …");
        assert_eq!(picture.labels[1].text, "0x0000000000001400");
        assert_eq!(picture.labels[2].text, "… 64 more granules, not drawn");
        assert_eq!(picture.height, NOTE_HEIGHT + PITCH + NOTE_HEIGHT);
        assert_eq!(picture.width, LABEL_WIDTH + 64 * PITCH + 3 * GROUP_GAP);
    }

    #[test]
    fn addresses_label_every_page_and_each_row_after_a_gap() {
        let map = vec!['2'; 64 * 12];
        let lines: Vec<TagMapLine> = [0..64, 64..128, 128..192, 192..256, 256..320, 320..384]
            .into_iter()
            .map(TagMapLine::Shown)
            .chain([TagMapLine::Elided(64 * 4), TagMapLine::Shown(640..704)])
            .collect();
        let picture = draw(0, &map, &map, &BTreeSet::new(), &lines, 64);
        let texts: Vec<&str> = picture.labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "0x0000000000000000",
                "0x0000000000001000",
                "… 256 granules that agree …",
                "0x0000000000002800"
            ]
        );
    }
}
