//! Grouping in the order things arrived: how the reports order their columns, suites and
//! groups of benchmarks.

/// `items` grouped by `key`: the groups in the order their first item came, each group's items
/// in theirs.
pub fn in_order_of_first<T, K: PartialEq>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<(K, Vec<T>)> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in items {
        let of_item = key(&item);
        match groups.iter_mut().find(|(k, _)| *k == of_item) {
            Some((_, group)) => group.push(item),
            None => groups.push((of_item, vec![item])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_the_order_of_arrival() {
        let words = ["swap/a", "tags/b", "swap/c", "cow/d", "tags/e"];
        let groups = in_order_of_first(words, |w| w.split('/').next().unwrap());
        assert_eq!(
            groups,
            [
                ("swap", vec!["swap/a", "swap/c"]),
                ("tags", vec!["tags/b", "tags/e"]),
                ("cow", vec!["cow/d"]),
            ]
        );
    }
}
