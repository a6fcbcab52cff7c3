//! Each CPU's crash note (Linux's per-CPU `crash_notes`): its registers at the crash as an ELF
//! `NT_PRSTATUS` note (`nmilog_ppc64::notes`) in the preserved region at `NOTES_BASE`, one
//! `NOTE_STRIDE`-byte area per CPU. Shared by both binaries (`#[path]`): the kernel resets the
//! areas at boot and each CPU the crash stops writes its own (Linux's `crash_save_cpu`, before the
//! check-in); the crashing CPU writes its own on crash entry; the capture stage reads them all.
//!
//! Each area is a run of 64-bit atomics, so that a capture stage may read the area of a CPU that
//! never stopped while it still runs. A writer stores the note's first word (its header's `namesz`
//! and `descsz`) last, with Release; a reader loads it first, with Acquire: a note is seen whole or
//! not at all (LMM(note:A)/LMM(note:B) below). Each area is written at most once per boot: the first
//! save wins (a second system reset on the same CPU — an escalation that crossed a late check-in —
//! must not replace the registers of the context the crash interrupted).

use core::sync::atomic::{AtomicU64, Ordering};

use nmilog_ppc64::notes::{self, CpuRegs, NoteError, NOTE_BYTES};

use crate::bootparams::{NOTES_BASE, NOTE_STRIDE, OUTCOME_CPUS};

/// 64-bit words of one CPU's area: the note, word for word.
const WORDS: usize = NOTE_BYTES / 8;
const _: () = assert!(NOTE_BYTES == NOTE_STRIDE && NOTE_BYTES.is_multiple_of(8));

/// The notes area of CPU `cpu` (`None` past `OUTCOME_CPUS`).
fn area(cpu: usize) -> Option<&'static [AtomicU64; WORDS]> {
    if cpu >= OUTCOME_CPUS {
        return None;
    }
    let at = NOTES_BASE + cpu * NOTE_STRIDE;
    // SAFETY: NOTES_BASE..+NOTES_SIZE is RAM reserved for the notes (see `bootparams`'s memory map;
    // nothing else uses it), 8-byte aligned, and `cpu < OUTCOME_CPUS` keeps the area inside it.
    // AtomicU64 has no invalid bit pattern, so any content is a valid value, and shared references
    // from several CPUs (and from the capture stage) are fine.
    Some(unsafe { &*(at as *const [AtomicU64; WORDS]) })
}

/// Empties every CPU's area (no note). Once, at boot, before any CPU can crash.
pub fn reset() {
    for c in 0..OUTCOME_CPUS {
        if let Some(a) = area(c) {
            for w in a {
                w.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Writes CPU `cpu`'s note of `regs` (with `pid` = the CPU number) unless its area already holds
/// one. No lock, no wait: only `cpu` writes its area.
pub fn save(cpu: usize, regs: &CpuRegs) {
    let Some(a) = area(cpu) else { return };
    if a[0].load(Ordering::Relaxed) != 0 {
        return;
    }
    let bytes = notes::encode(cpu as u32, regs);
    let mut words = bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
    let first = words.next().unwrap_or(0);
    for (dst, w) in a[1..].iter().zip(words) {
        dst.store(w, Ordering::Relaxed);
    }
    // LMM(note:A): Release publishes the whole note with its first word; pairs with the Acquire
    // load in `read`, LMM(note:B).
    a[0].store(first, Ordering::Release);
}

/// CPU `cpu`'s note: its pid and registers, or why there is none.
pub fn read(cpu: usize) -> Result<(u32, CpuRegs), NoteError> {
    let Some(a) = area(cpu) else {
        return Err(NoteError::Empty);
    };
    // LMM(note:B): pairs with the Release store of the first word in `save`, LMM(note:A).
    let first = a[0].load(Ordering::Acquire);
    let mut bytes = [0u8; NOTE_BYTES];
    for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        let w = if i == 0 {
            first
        } else {
            a[i].load(Ordering::Relaxed)
        };
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    notes::decode(&bytes)
}
