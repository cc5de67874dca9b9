//! Shards: a run of every check split into N parts for lab fleets and CI, each part run on its
//! own machine and the parts merged afterwards.
//!
//! A check belongs to shard `hash(name) mod N`, with a hash that never changes between builds,
//! machines or releases (FNV-1a), so the same check always lands in the same shard and a merge
//! of shards 1..=N holds every check exactly once. A fault-injection proof goes with the check it
//! proves: the proof reruns that check, so both run on the same machine and kernel.

use std::fmt;
use std::hash::Hasher as _;

use crate::model::FAULT_INJECTION_PROOFS;

/// Shard `index` of `count`, both counted from 1 as people write them: `2/4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Parse `K/N` with 1 <= K <= N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("`{text}` is no shard: write K/N with 1 <= K <= N, e.g. 2/4");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = index.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the check or proof named `name` runs in this shard.
    pub fn contains(&self, name: &str) -> bool {
        stable_hash(check_of(name)) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The check a name stands for: itself, or for a proof `fault_injection::MODE::CHECK`, CHECK.
pub fn check_of(name: &str) -> &str {
    name.strip_prefix(FAULT_INJECTION_PROOFS)
        .and_then(|rest| rest.split_once("::"))
        .map_or(name, |(_mode, check)| check)
}

/// 64-bit FNV-1a: the same everywhere (std's hashers are seeded or may change).
fn stable_hash(text: &str) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(text.as_bytes());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_as_k_of_n() {
        let shard = Shard::parse("2/4").unwrap();
        assert_eq!((shard.index(), shard.count()), (2, 4));
        assert_eq!(shard.to_string(), "2/4");
        for bad in ["0/4", "5/4", "1/0", "2", "a/b", "", "1/2/3"] {
            assert!(Shard::parse(bad).unwrap_err().contains("K/N"), "{bad}");
        }
    }

    #[test]
    fn every_check_is_in_exactly_one_shard() {
        let names: Vec<String> = (0..200)
            .map(|i| format!("family{}::check_{i}", i % 7))
            .collect();
        for count in 1..=5 {
            let shards: Vec<Shard> = (1..=count)
                .map(|k| Shard::parse(&format!("{k}/{count}")).unwrap())
                .collect();
            for name in &names {
                let holding = shards.iter().filter(|s| s.contains(name)).count();
                assert_eq!(holding, 1, "{name} in {holding} of {count} shards");
            }
            // No shard is empty with this many checks: the hash spreads them.
            for shard in &shards {
                assert!(names.iter().any(|n| shard.contains(n)), "{shard} is empty");
            }
        }
    }

    #[test]
    fn the_hash_never_changes() {
        // FNV-1a test vectors: a shard assignment must not move between builds.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn proofs_go_with_their_check() {
        assert_eq!(
            check_of("fault_injection::corrupt_tag::tags::guest_stg"),
            "tags::guest_stg"
        );
        assert_eq!(check_of("tags::guest_stg"), "tags::guest_stg");
        for k in 1..=3 {
            let shard = Shard::parse(&format!("{k}/3")).unwrap();
            assert_eq!(
                shard.contains("fault_injection::wrong_tcf::faults::sync"),
                shard.contains("faults::sync")
            );
        }
    }
}
