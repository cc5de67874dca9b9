//! Seeded choices, so that a seed replays a check exactly.

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), near enough for scheduling choices.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Tags for `n` granules, none of them 0 (so a zeroed tag is always caught), varied.
pub fn nonzero_tags(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| 1 + rng.below(15) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_tags_are_varied_and_never_zero() {
        let tags = nonzero_tags(7, 1024);
        assert!(tags.iter().all(|&t| (1..16).contains(&t)));
        for t in 1..16u8 {
            assert!(tags.contains(&t));
        }
        assert_eq!(tags, nonzero_tags(7, 1024));
        assert_ne!(tags, nonzero_tags(8, 1024));
    }

    #[test]
    fn a_shuffle_is_a_permutation_that_the_seed_replays() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        Rng::new(3).shuffle(&mut a);
        Rng::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, sorted);
    }
}
