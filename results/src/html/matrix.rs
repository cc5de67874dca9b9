//! The report's matrix: every check by column (a boot of a lane, headed with its kernel).

use serde::Serialize;

use crate::boot::BootKey;
use crate::group::in_order_of_first;
use crate::model::Verdict;
use crate::summary::columns_of;

/// Every check by column: one row a check, one column a boot of a lane (the same kernel booted
/// twice is two columns), in the order they first reported; a cell links to its verdict.
#[derive(Serialize)]
pub(super) struct Matrix {
    columns: Vec<String>,
    rows: Vec<MatrixRow>,
}

#[derive(Serialize)]
pub(super) struct MatrixRow {
    test: String,
    /// One per column; `None` where the check did not run in that lane.
    cells: Vec<Option<MatrixCell>>,
}

#[derive(Serialize)]
pub(super) struct MatrixCell {
    outcome: &'static str,
    anchor: String,
}

impl Matrix {
    pub(super) fn new(verdicts: &[Verdict]) -> Self {
        let keys: Vec<(BootKey, String)> = (columns_of(verdicts).into_iter())
            .map(|c| (c.key(), c.name))
            .collect();
        let rows = in_order_of_first(verdicts.iter().enumerate(), |(_, v)| v.test.as_str())
            .into_iter()
            .map(|(test, of_test)| MatrixRow {
                test: test.to_string(),
                // A check reported twice in a column shows its last verdict.
                cells: (keys.iter())
                    .map(|(key, _)| {
                        let (index, v) = of_test.iter().rfind(|(_, v)| BootKey::of(v) == *key)?;
                        Some(MatrixCell {
                            outcome: v.outcome.as_str(),
                            anchor: format!("v{index}"),
                        })
                    })
                    .collect(),
            })
            .collect();
        let columns = keys.into_iter().map(|(_, name)| name).collect();
        Matrix { columns, rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::verdict;
    use crate::model::Outcome;

    #[test]
    fn lanes_stand_side_by_side_in_the_matrix() {
        let in_lane = |test: &str, lane: &str, kernel: &str, outcome| Verdict {
            lane: lane.parse().unwrap(),
            kernel: kernel.into(),
            ..verdict(test, outcome, "why")
        };
        let verdicts = vec![
            in_lane("tags::a", "emulated", "6.12", Outcome::Pass),
            in_lane("abi::b", "emulated", "6.12", Outcome::Pass),
            in_lane("tags::a", "qemu", "qemu-10.0.2", Outcome::Fail),
        ];
        let matrix = Matrix::new(&verdicts);
        assert_eq!(matrix.columns, ["emulated · 6.12", "qemu · qemu-10.0.2"]);
        let outcomes = |row: &MatrixRow| -> Vec<Option<&str>> {
            row.cells
                .iter()
                .map(|c| c.as_ref().map(|c| c.outcome))
                .collect()
        };
        assert_eq!(outcomes(&matrix.rows[0]), [Some("pass"), Some("fail")]);
        assert_eq!(outcomes(&matrix.rows[1]), [Some("pass"), None]);
        assert_eq!(matrix.rows[0].cells[1].as_ref().unwrap().anchor, "v2");
    }

    #[test]
    fn a_kernel_booted_twice_is_two_columns() {
        let on = |boot: u32, kernel: &str, outcome| Verdict {
            boot,
            kernel: kernel.into(),
            ..verdict("migration::a", outcome, "why")
        };
        let verdicts = vec![
            on(1, "6.1", Outcome::Pass),
            on(2, "6.12", Outcome::Pass),
            on(3, "6.1", Outcome::Fail),
        ];
        let matrix = Matrix::new(&verdicts);
        assert_eq!(
            matrix.columns,
            [
                "emulated boot 1 · 6.1",
                "emulated boot 2 · 6.12",
                "emulated boot 3 · 6.1"
            ]
        );
        let cells: Vec<&str> = matrix.rows[0]
            .cells
            .iter()
            .map(|c| c.as_ref().unwrap().outcome)
            .collect();
        assert_eq!(cells, ["pass", "pass", "fail"]);
    }
}
