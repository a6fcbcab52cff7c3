//! The secondary hold: after the crash path's go, each CPU it stopped tears down its interrupt
//! presenter and jumps into the capture stage's hold loop (`HOLD_ENTRY`), where it says it arrived
//! and waits, halted, until the capture stage releases it; released, it says it is back and waits
//! again — now a CPU of the capture stage. Linux's secondaries do the same on a crash: they wait for
//! `time_to_dump`, run `kexec_cpu_down` (XICS/XIVE teardown) and wait in the next kernel's
//! `__secondary_hold` until its boot CPU releases them. Shared by both binaries (`#[path]`).
//!
//! The words at `HOLD_BASE`, all 64-bit: `release` (0 = hold; the capture stage stores 1), then
//! `arrived[c]` (CPU c's hardware id + 1, stored by CPU c in the hold loop), then `back[c]` (1,
//! stored by CPU c once released), then `cppr[c]` (its presenter's CPPR + 1 after the teardown, as
//! CPU c read it back, stored before it enters the hold loop; 0: not read). The hold loop itself is assembly in the capture stage (it runs
//! with no stack); its offsets are [`ARRIVED_OFF`] and [`BACK_OFF`].

use core::sync::atomic::{AtomicU64, Ordering};

use crate::bootparams::{HOLD_BASE, OUTCOME_CPUS};

/// Byte offset of `arrived[0]` from `HOLD_BASE`.
pub const ARRIVED_OFF: usize = 8;
/// Byte offset of `back[0]` from `HOLD_BASE`.
pub const BACK_OFF: usize = ARRIVED_OFF + OUTCOME_CPUS * 8;
/// Byte offset of `cppr[0]` from `HOLD_BASE`.
pub const CPPR_OFF: usize = BACK_OFF + OUTCOME_CPUS * 8;
/// Words of the hold area.
pub const WORDS: usize = 1 + 3 * OUTCOME_CPUS;

fn words() -> &'static [AtomicU64; WORDS] {
    // SAFETY: HOLD_BASE..+HOLD_SIZE is RAM reserved for the hold (see `bootparams`: inside the
    // reserved region, outside the capture stage's image and rebuild area; size checked there),
    // 8-byte aligned; AtomicU64 has no invalid bit pattern and may be shared between CPUs.
    unsafe { &*(HOLD_BASE as *const [AtomicU64; WORDS]) }
}

/// Empties the hold: nobody arrived, nothing released. By the kernel, when it loads the capture
/// stage (before any crash).
pub fn reset() {
    for w in words() {
        w.store(0, Ordering::Relaxed);
    }
}

/// CPU `c`'s hardware id if it arrived in the hold loop. LMM(hold:B): Acquire, pairs with the
/// hold loop's `sync` before its store of `arrived[c]`, LMM(hold:A).
pub fn arrived(c: usize) -> Option<u64> {
    if c >= OUTCOME_CPUS {
        return None;
    }
    let v = words()[1 + c].load(Ordering::Acquire);
    v.checked_sub(1)
}

/// Whether CPU `c` came back after the release (same pairing as [`arrived`]).
pub fn back(c: usize) -> bool {
    c < OUTCOME_CPUS && words()[1 + OUTCOME_CPUS + c].load(Ordering::Acquire) != 0
}

/// CPU `c`'s report of its presenter's CPPR after the teardown (`None`: it could not read it back).
/// Relaxed: published by the hold loop's `sync` before its store of `arrived[c]`, LMM(hold:A), and
/// read after an Acquire load of it ([`arrived`], LMM(hold:B)).
pub fn report_cppr(c: usize, cppr: Option<u8>) {
    if c < OUTCOME_CPUS {
        words()[CPPR_OFF / 8 + c].store(cppr.map_or(0, |v| v as u64 + 1), Ordering::Relaxed);
    }
}

/// What CPU `c` reported with [`report_cppr`] (read after [`arrived`] returned `Some`).
pub fn reported_cppr(c: usize) -> Option<u8> {
    if c >= OUTCOME_CPUS {
        return None;
    }
    words()[CPPR_OFF / 8 + c]
        .load(Ordering::Relaxed)
        .checked_sub(1)
        .map(|v| v as u8)
}

/// Releases every held CPU (each still needs an `H_PROD` to wake from its `H_JOIN`). LMM(hold:C):
/// Release, paired with the hold loop's `lwsync` after it loads `release`, LMM(hold:D): everything
/// the capture stage stored before is visible to a CPU that sees it.
pub fn release() {
    words()[0].store(1, Ordering::Release);
}
