//! SVE at EL1 and the SVE loads and stores the host asks for on tagged memory: contiguous
//! LD1B/ST1B and LD1D/ST1D, first-faulting LDFF1D and non-faulting LDNF1D (which report what
//! they did not load in the FFR), and the LD1D gather and ST1D scatter, whose every element has
//! its own pointer and so its own pointer tag.
//!
//! Each access runs in one asm block with every element active (PTRUE) and the FFR set first
//! (SETFFR); the block moves the data and pointer vectors between the bulk buffer and Z0/Z1
//! and stores the FFR after the access. A data abort of the access itself is recorded and
//! skipped by `vectors::catching_aborts`, so the rest of the block still runs; the vectors'
//! entry saves and restores the low 128 bits of the vector registers only, so after a caught
//! abort the data vector the block reports is not the access's (its register is UNKNOWN after
//! a precise fault anyway), while the predicates and the FFR are untouched.

use core::arch::asm;
use mte_protocol::{RAM_IPA, RAM_SIZE, refusal::NO_SVE, sve_bulk_layout, sve_op};

use crate::args::{Refusal, untagged};
use crate::{bulk, mailbox, sysreg, vectors};

/// CPACR_EL1.ZEN: SVE instructions at EL1 and EL0 are not trapped.
const CPACR_ZEN: u64 = 0b11 << 16;

/// ID_AA64PFR0_EL1.SVE, bits 35:32.
fn cpu_has_sve() -> bool {
    (sysreg::read!("id_aa64pfr0_el1") >> 32) & 0xf != 0
}

fn enabled() -> bool {
    cpu_has_sve() && sysreg::read!("cpacr_el1") & CPACR_ZEN == CPACR_ZEN
}

/// The current vector length in bytes.
fn vector_bytes() -> u64 {
    let vl: u64;
    // SAFETY: RDVL only reads the vector length; SVE is enabled (checked by the callers).
    unsafe { asm!(".arch_extension sve", "rdvl {}, #1", out(reg) vl, options(nomem, nostack)) };
    vl
}

/// `SveEnable`: `result = [VL bytes, ID_AA64PFR0_EL1, ID_AA64ZFR0_EL1, ZCR_EL1]`.
pub fn enable(len: u64) -> Result<(), Refusal> {
    if !cpu_has_sve() {
        return Err(NO_SVE);
    }
    if len > 0xf {
        return Err(0);
    }
    let cpacr = sysreg::read!("cpacr_el1") | CPACR_ZEN;
    // SAFETY: only stops trapping SVE instructions and sets the vector length (ZCR_EL1, by its
    // encoding so that no assembler feature is needed); nothing else depends on either. The
    // macro's ISB makes both apply to what follows.
    unsafe {
        sysreg::write!("cpacr_el1", cpacr);
        sysreg::write!("s3_0_c1_c2_0", len);
    }
    mailbox::set_result(0, vector_bytes());
    mailbox::set_result(1, sysreg::read!("id_aa64pfr0_el1"));
    mailbox::set_result(2, sysreg::read!("s3_0_c0_c4_4"));
    mailbox::set_result(3, sysreg::read!("s3_0_c1_c2_0"));
    Ok(())
}

/// Whether `vl` bytes from `ptr` lie in RAM.
fn in_ram(ptr: u64, vl: u64) -> bool {
    let addr = untagged(ptr);
    addr >= RAM_IPA && addr - RAM_IPA <= RAM_SIZE - vl
}

/// `SveAccess`: `result = [faulted]`; vectors and FFR in the bulk buffer.
pub fn access(op: u64, ptr: u64) -> Result<(), Refusal> {
    if !enabled() {
        return Err(NO_SVE);
    }
    if op > sve_op::LAST {
        return Err(0);
    }
    let vl = vector_bytes();
    let (data, pointers, ffr) = sve_bulk_layout(vl);
    let base = mte_protocol::bulk(crate::cpu::index()).0;
    let (data, pointers, ffr) = (base + data, base + pointers, base + ffr);
    if ffr + vl / 8 > base + bulk::size() {
        return Err(0);
    }
    let gather = op == sve_op::GATHER_LD1D || op == sve_op::SCATTER_ST1D;
    if gather {
        for i in 0..vl / 8 {
            // SAFETY: inside the bulk buffer (checked above), 8-byte aligned.
            let target = unsafe { ((pointers + i * 8) as *const u64).read_volatile() };
            if !in_ram(target, 8) {
                return Err(1);
            }
        }
    } else if !in_ram(ptr, vl) {
        return Err(1);
    }
    let ((), faulted) = vectors::catching_aborts(|| {
        // SAFETY: every address the access touches is RAM (checked above), which the host gave
        // over; the block's other accesses are the bulk buffer. Z0, Z1, P0, P1 and the FFR are
        // declared clobbered (Z0 and Z1 through V0 and V1, the compiler's view of them). A data
        // abort of the access is caught and skipped to the next instruction.
        unsafe { run(op, ptr, data, pointers, ffr) }
    });
    mailbox::set_result(0, faulted as u64);
    Ok(())
}

/// `$access` between the set-up and the report every op shares: all elements active, the FFR
/// set, Z1 the pointer vector, Z0 the data vector (zero for a load); after it the data vector
/// and the FFR go to the bulk buffer.
macro_rules! sve_block {
    ($access:literal, $data:expr, $pointers:expr, $ffr:expr $(, $name:ident = $ptr:expr)?) => {
        asm!(
            ".arch_extension sve",
            "ptrue p0.b",
            "ld1d {{z1.d}}, p0/z, [{pointers}]",
            "ld1b {{z0.b}}, p0/z, [{data}]",
            "setffr",
            $access,
            "rdffr p1.b",
            "st1b {{z0.b}}, p0, [{data}]",
            "str p1, [{ffr}]",
            data = in(reg) $data,
            pointers = in(reg) $pointers,
            ffr = in(reg) $ffr,
            $($name = in(reg) $ptr,)?
            out("v0") _,
            out("v1") _,
            out("p0") _,
            out("p1") _,
            out("ffr") _,
            options(nostack),
        )
    };
}

/// The access of `op`, between the shared set-up and report.
///
/// # Safety
/// As for [`access`]: `ptr`'s vector (or the pointers' doublewords) in RAM the host gave over,
/// `data`, `pointers` and `ffr` in the bulk buffer.
unsafe fn run(op: u64, ptr: u64, data: u64, pointers: u64, ffr: u64) {
    // SAFETY: the caller's. A load starts from the data vector's bytes as the host left them
    // (the host poisons them), so a load that did not run is seen.
    unsafe {
        match op {
            sve_op::LD1B => sve_block!("ld1b {{z0.b}}, p0/z, [{p}]", data, pointers, ffr, p = ptr),
            sve_op::ST1B => sve_block!("st1b {{z0.b}}, p0, [{p}]", data, pointers, ffr, p = ptr),
            sve_op::LD1D => sve_block!("ld1d {{z0.d}}, p0/z, [{p}]", data, pointers, ffr, p = ptr),
            sve_op::ST1D => sve_block!("st1d {{z0.d}}, p0, [{p}]", data, pointers, ffr, p = ptr),
            sve_op::LDFF1D => sve_block!(
                "ldff1d {{z0.d}}, p0/z, [{p}, xzr, lsl #3]",
                data,
                pointers,
                ffr,
                p = ptr
            ),
            sve_op::LDNF1D => {
                sve_block!("ldnf1d {{z0.d}}, p0/z, [{p}]", data, pointers, ffr, p = ptr)
            }
            sve_op::GATHER_LD1D => sve_block!("ld1d {{z0.d}}, p0/z, [z1.d]", data, pointers, ffr),
            _ => sve_block!("st1d {{z0.d}}, p0, [z1.d]", data, pointers, ffr),
        }
    }
}
