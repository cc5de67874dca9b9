//! The Arm ARM pseudocode the tag-instruction checks compute their expectations with, as pure
//! functions: the host's answer is derived here, independently of the instruction the guest ran.

use mte_protocol::{tag_of, with_tag, GRANULE};

/// `ChooseNonExcludedTag(tag, offset, exclude)` (Arm ARM, shared/functions/memory): the tag
/// `offset` non-excluded steps after `tag`; with offset 0, `tag` itself or the next tag that is
/// not excluded; 0 when every tag is excluded.
pub fn choose_non_excluded_tag(tag: u8, offset: u8, exclude: u16) -> u8 {
    let excluded = |t: u8| exclude & (1 << t) != 0;
    if exclude == 0xffff {
        return 0;
    }
    let mut tag = tag & 0xf;
    let mut offset = offset & 0xf;
    if offset == 0 {
        while excluded(tag) {
            tag = (tag + 1) & 0xf;
        }
    }
    while offset != 0 {
        offset -= 1;
        tag = (tag + 1) & 0xf;
        while excluded(tag) {
            tag = (tag + 1) & 0xf;
        }
    }
    tag
}

/// `IRG` with GCR_EL1.RRND = 0 (Arm ARM, IRG and `AArch64.RandomTag`): the next tag from
/// RGSR_EL1 and the exclude mask (GCR_EL1.Exclude OR Xm), and RGSR_EL1 after it. The 16-bit
/// LFSR in RGSR_EL1.SEED gives four bits of offset (`NextRandomTagBit`); the tag is
/// `ChooseNonExcludedTag(RGSR_EL1.TAG, offset, exclude)` and becomes RGSR_EL1.TAG.
pub fn irg_next(rgsr: u64, exclude: u16) -> (u8, u64) {
    let mut seed = ((rgsr >> 8) & 0xffff) as u16;
    let start = (rgsr & 0xf) as u8;
    let mut offset = 0u8;
    for bit in 0..4 {
        let top = (seed >> 5 ^ seed >> 3 ^ seed >> 2 ^ seed) & 1;
        seed = top << 15 | seed >> 1;
        offset |= (top as u8) << bit;
    }
    let tag = choose_non_excluded_tag(start, offset, exclude);
    let rgsr = (rgsr & !0xff_ff0f) | (seed as u64) << 8 | tag as u64;
    (tag, rgsr)
}

/// The `count` tags IRG chooses from RGSR_EL1 = `rgsr` (GCR_EL1.RRND = 0), and RGSR_EL1 after.
pub fn irg_sequence(mut rgsr: u64, exclude: u16, count: usize) -> (Vec<u8>, u64) {
    let tags = (0..count)
        .map(|_| {
            let (tag, next) = irg_next(rgsr, exclude);
            rgsr = next;
            tag
        })
        .collect();
    (tags, rgsr)
}

/// ADDG: `ptr + offset` with the tag `tag_offset` non-excluded steps after `ptr`'s.
pub fn addg(ptr: u64, offset: u64, tag_offset: u8, exclude: u16) -> u64 {
    let tag = choose_non_excluded_tag(tag_of(ptr), tag_offset, exclude);
    with_tag(ptr.wrapping_add(offset), tag)
}

/// SUBG: `ptr - offset` with the tag `tag_offset` non-excluded steps after `ptr`'s.
pub fn subg(ptr: u64, offset: u64, tag_offset: u8, exclude: u16) -> u64 {
    let tag = choose_non_excluded_tag(tag_of(ptr), tag_offset, exclude);
    with_tag(ptr.wrapping_sub(offset), tag)
}

/// GMI: `mask` with the bit of `ptr`'s tag (bits 59:56) set.
pub fn gmi(ptr: u64, mask: u64) -> u64 {
    mask | 1 << tag_of(ptr)
}

/// The nibble of an LDGM/STGM register that holds the tag of the granule at `addr`:
/// `addr<7:4>`.
pub fn block_nibble(addr: u64) -> u32 {
    ((addr / GRANULE) & 0xf) as u32
}

/// The STGM register that gives the granules of the block at `base` the tags `tags` (one per
/// granule); nibbles of no granule of the block hold `filler`.
pub fn stgm_register(base: u64, tags: &[u8], filler: u8) -> u64 {
    let mut value = 0u64;
    for nibble in 0..16 {
        value |= ((filler & 0xf) as u64) << (4 * nibble);
    }
    for (i, &tag) in tags.iter().enumerate() {
        let shift = 4 * block_nibble(base + i as u64 * GRANULE);
        value = value & !(0xf << shift) | ((tag & 0xf) as u64) << shift;
    }
    value
}

/// The tags an LDGM result holds for the `granules` granules of the block at `base`.
pub fn ldgm_tags(value: u64, base: u64, granules: usize) -> Vec<u8> {
    (0..granules)
        .map(|i| ((value >> (4 * block_nibble(base + i as u64 * GRANULE))) & 0xf) as u8)
        .collect()
}

/// The bits of an LDGM result that hold no tag of the block at `base` (zero, by the
/// pseudocode): every nibble but those of its granules.
pub fn ldgm_unused_bits(base: u64, granules: usize) -> u64 {
    !stgm_register(base, &vec![0xf; granules], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_non_excluded_tag_follows_the_pseudocode() {
        // Nothing excluded: plain addition modulo 16.
        for tag in 0..16 {
            for offset in 0..16 {
                assert_eq!(choose_non_excluded_tag(tag, offset, 0), (tag + offset) % 16);
            }
        }
        // The default exclude (tag 0): 15 + 1 wraps to 1, not 0.
        assert_eq!(choose_non_excluded_tag(15, 1, 0x0001), 1);
        assert_eq!(choose_non_excluded_tag(14, 2, 0x0001), 1);
        // Offset 0 still skips an excluded start tag.
        assert_eq!(choose_non_excluded_tag(0, 0, 0x0001), 1);
        assert_eq!(choose_non_excluded_tag(3, 0, 0x0001), 3);
        assert_eq!(choose_non_excluded_tag(3, 0, 0x0038), 6);
        // Every step skips excluded tags: only 2, 5 and 9 allowed.
        let only = !(1u16 << 2 | 1 << 5 | 1 << 9);
        assert_eq!(choose_non_excluded_tag(0, 1, only), 2);
        assert_eq!(choose_non_excluded_tag(0, 2, only), 5);
        assert_eq!(choose_non_excluded_tag(0, 3, only), 9);
        assert_eq!(choose_non_excluded_tag(0, 4, only), 2);
        assert_eq!(choose_non_excluded_tag(9, 14, only), 5);
        assert_eq!(choose_non_excluded_tag(9, 15, only), 9);
        // Everything excluded: tag 0, whatever the start and offset.
        assert_eq!(choose_non_excluded_tag(7, 3, 0xffff), 0);
        assert_eq!(choose_non_excluded_tag(7, 0, 0xffff), 0);
        // A single allowed tag is the answer for every start and offset.
        for tag in 0..16 {
            for offset in 0..16 {
                assert_eq!(choose_non_excluded_tag(tag, offset, !(1 << 11)), 11);
            }
        }
    }

    #[test]
    fn addg_and_subg_move_the_address_and_the_tag() {
        let ptr = with_tag(0x4100_0400, 0xe);
        assert_eq!(addg(ptr, 0x20, 3, 0x0001), with_tag(0x4100_0420, 2));
        assert_eq!(subg(ptr, 0x20, 3, 0x0001), with_tag(0x4100_03e0, 2));
        assert_eq!(addg(ptr, 0, 0, 0), ptr);
        assert_eq!(subg(ptr, 1008, 15, 0xffff), with_tag(0x4100_0400 - 1008, 0));
    }

    #[test]
    fn gmi_sets_the_bit_of_the_pointer_tag() {
        assert_eq!(gmi(with_tag(0x4100_0000, 0), 0), 1);
        assert_eq!(gmi(with_tag(0x4100_0000, 0xf), 0x1), 0x8001);
        assert_eq!(gmi(with_tag(0x4100_0000, 3), 0x8), 0x8);
        // Only bits 59:56 are the tag; the rest of the top byte does not count.
        assert_eq!(gmi(0xf500_0000_4100_0000, 1 << 63), 1 << 63 | 1 << 5);
    }

    #[test]
    fn stgm_and_ldgm_registers_put_each_tag_in_its_address_nibble() {
        // A 256-byte block: granule i in nibble i.
        let tags: Vec<u8> = (0..16).map(|i| 15 - i).collect();
        let value = stgm_register(0x4100_0100, &tags, 0);
        assert_eq!(value, 0x0123_4567_89ab_cdef);
        assert_eq!(ldgm_tags(value, 0x4100_0100, 16), tags);
        assert_eq!(ldgm_unused_bits(0x4100_0100, 16), 0);
        // A 64-byte block at 0x...c0: granules in nibbles 12..=15; the filler elsewhere.
        let value = stgm_register(0x4100_00c0, &[1, 2, 3, 4], 0x9);
        assert_eq!(value, 0x4321_9999_9999_9999);
        assert_eq!(ldgm_tags(value, 0x4100_00c0, 4), vec![1, 2, 3, 4]);
        assert_eq!(ldgm_unused_bits(0x4100_00c0, 4), 0x0000_ffff_ffff_ffff);
    }
    #[test]
    fn irg_sequence_follows_the_lfsr_and_never_picks_an_excluded_tag() {
        // SEED = 1: the first feedback bit is bit 0 = 1, then the shifted-in ones.
        let (tag, rgsr) = irg_next(1 << 8, 0);
        assert_eq!(rgsr >> 8 & 0xffff, 0x1000);
        assert_eq!(tag, 0b0001);
        assert_eq!(rgsr & 0xf, 1);
        let (tags, after) = irg_sequence(0x1234 << 8, 0x0001, 256);
        assert!(tags.iter().all(|&t| (1..16).contains(&t)));
        assert!(tags.iter().collect::<std::collections::HashSet<_>>().len() >= 8);
        // The sequence continues where it stopped: state is all in RGSR_EL1.
        let (first, middle) = irg_sequence(0x1234 << 8, 0x0001, 100);
        let (rest, end) = irg_sequence(middle, 0x0001, 156);
        assert_eq!([first, rest].concat(), tags);
        assert_eq!(end, after);
    }
}
