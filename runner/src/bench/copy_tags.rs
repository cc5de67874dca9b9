//! KVM_ARM_MTE_COPY_TAGS in both directions, by size, next to a plain copy (memcpy) of the same
//! range's data out of the VMM's mapping: the tags of a range against its data is what a
//! migrating VMM pays on top of the copy it makes anyway.

use std::time::{Duration, Instant};

use mte_protocol::{granules, TEST_RAM_IPA};
use mte_suites::vmm::VmmError;
use mte_vmm_kvm::timing::TagCopyVm;
use mte_vmm_kvm::KvmVmm;

use super::measure::Bench;
use super::Declared;

const GROUP: &str = "copy_tags";
const SIZES: [(u64, &str); 4] = [
    (4 << 10, "4 KiB"),
    (64 << 10, "64 KiB"),
    (1 << 20, "1 MiB"),
    (16 << 20, "16 MiB"),
];
const LARGEST: u64 = SIZES[SIZES.len() - 1].0;

fn plain_copy(size: &str) -> Declared {
    Declared::new(
        GROUP,
        "plain_copy",
        size,
        format!(
            "memcpy of {size} of tagged guest RAM's data out of the VMM's mapping: what the tag \
             copies are set against"
        ),
    )
}

/// The benchmarks of one size: the copy from the guest, the copy to it, the plain copy.
fn of_size(bytes: u64, size: &str) -> [Declared; 3] {
    let plain = plain_copy(size).covering(bytes);
    let from = Declared::new(
        GROUP,
        "from_guest",
        size,
        format!(
            "KVM_ARM_MTE_COPY_TAGS(KVM_ARM_TAGS_FROM_GUEST) of {size} of tagged guest RAM ({} \
             tag bytes) into a VMM buffer",
            granules(bytes)
        ),
    )
    .covering(bytes)
    .against(&plain, "copy tags from guest / plain copy of the data");
    let to = Declared::new(
        GROUP,
        "to_guest",
        size,
        format!(
            "KVM_ARM_MTE_COPY_TAGS(KVM_ARM_TAGS_TO_GUEST) of {} tag bytes over {size} of guest \
             RAM",
            granules(bytes)
        ),
    )
    .covering(bytes)
    .against(&plain, "copy tags to guest / plain copy of the data");
    [from, to, plain]
}

pub fn declared() -> Vec<Declared> {
    SIZES
        .iter()
        .flat_map(|&(bytes, size)| of_size(bytes, size))
        .collect()
}

/// Tags 1 to 15 in turn, so that every granule carries a tag.
fn varied_tags(count: usize) -> Vec<u8> {
    (0..count).map(|i| 1 + (i % 15) as u8).collect()
}

pub fn run(bench: &mut Bench, vmm: &KvmVmm) {
    let all = declared();
    if !bench.wants_any(&all) {
        return;
    }
    let vm = match prepare(vmm) {
        Ok(vm) => vm,
        Err(error) => return bench.unable(&all, &error),
    };
    for (bytes, size) in SIZES {
        let [from, to, plain] = of_size(bytes, size);
        let mut tags = vec![0u8; granules(bytes)];
        bench.measure(&from, |iterations, _| {
            timed(iterations, || vm.read_tags(TEST_RAM_IPA, &mut tags))
        });
        let written = varied_tags(granules(bytes));
        bench.measure(&to, |iterations, _| {
            timed(iterations, || vm.write_tags(TEST_RAM_IPA, &written))
        });
        let mut data = vec![0u8; bytes as usize];
        bench.measure(&plain, |iterations, _| {
            timed(iterations, || {
                vm.copy_data(TEST_RAM_IPA, &mut data);
                std::hint::black_box(&data);
                Ok(())
            })
        });
    }
}

/// An MTE VM whose largest range is in memory, with data and tags: copies then read real pages
/// and real tags, not the zero page or tags never set.
fn prepare(vmm: &KvmVmm) -> Result<TagCopyVm, VmmError> {
    let vm = vmm.tag_copy_vm()?;
    vm.write_tags(TEST_RAM_IPA, &varied_tags(granules(LARGEST)))?;
    Ok(vm)
}

/// Run `step` `iterations` times; the time of them all.
fn timed(
    iterations: u64,
    mut step: impl FnMut() -> Result<(), VmmError>,
) -> Result<Duration, VmmError> {
    let started = Instant::now();
    for _ in 0..iterations {
        step()?;
    }
    Ok(started.elapsed())
}
