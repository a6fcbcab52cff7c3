//! The capture stage's reading of the crash notes (`crash_notes`): each CPU's `NT_PRSTATUS` note,
//! printed (NIP, LR, r1 per CPU: what a vmcore's backtrace starts from) and checked against the log:
//! a CPU with a "CPU c stopped (... nip X lr Y)" record has a note with that NIP and LR, saved by
//! the system reset (trap 0x100); the crashing CPU has its own (trap 0); a CPU that never stopped
//! may have none. Prints `capture: crash notes: ...` and returns whether every check passed.

use core::fmt::Write;

use nmilog::handover::Image;
use nmilog_ppc64::notes::NoteError;

use crate::bootparams::{NOTES_BASE, NOTE_STRIDE};
use crate::crash_notes;
use crate::verify::MAX_CPUS;

/// NIP and LR in a "CPU c stopped (NMI in ... context; nip 0x.. lr 0x..)" record.
fn stopped_nip_lr(text: &str) -> Option<(u64, u64)> {
    let (_, rest) = text.split_once("; nip 0x")?;
    let (nip, rest) = rest.split_once(" lr 0x")?;
    let lr = rest.split(|c: char| !c.is_ascii_hexdigit()).next()?;
    Some((
        u64::from_str_radix(nip, 16).ok()?,
        u64::from_str_radix(lr, 16).ok()?,
    ))
}

/// Prints every CPU's note and checks it against the image's "stopped" records (see the module
/// docs). `crash_cpu` is the CPU that ran the crash path (`usize::MAX`: none known).
pub fn print_and_check(img: &Image<'_>, crash_cpu: usize, out: &mut impl Write) -> bool {
    let ncpu = img.cpu_count().min(MAX_CPUS);
    // One pass over the log: each CPU's first "stopped" record's NIP and LR.
    let mut stopped = [None::<(u64, u64)>; MAX_CPUS];
    for r in img.records() {
        let c = r.header.cpu as usize;
        if let (Some(slot @ None), Some(t)) = (stopped.get_mut(c), r.text()) {
            if t.starts_with("CPU ") && t.contains(" stopped (") {
                *slot = stopped_nip_lr(t);
            }
        }
    }
    let mut ok = true;
    let (mut found, mut agree) = (0usize, 0usize);
    for (c, &record) in stopped.iter().enumerate().take(ncpu) {
        let note = crash_notes::read(c);
        let (verdict, good) = match (&note, record) {
            (Ok((pid, _)), _) if *pid as usize != c => ("pid is not the CPU  <-- FAILED", false),
            (Ok((_, r)), _) if c == crash_cpu => {
                if r.trap == 0 {
                    ("the crashing CPU's own (saved by a call)", true)
                } else {
                    ("crashing CPU, but trap is not 0  <-- FAILED", false)
                }
            }
            (Ok((_, r)), Some((nip, lr))) => {
                if r.nip == nip && r.lr == lr && r.trap == 0x100 {
                    agree += 1;
                    ("agrees with its stopped record", true)
                } else {
                    ("DISAGREES WITH ITS STOPPED RECORD  <-- FAILED", false)
                }
            }
            // Saved, but its "stopped" record is not in the log: it was stopped (by the firmware,
            // or the image was written) between the two.
            (Ok(_), None) => (
                "saved by the system reset; no stopped record in the log",
                true,
            ),
            (Err(NoteError::Empty), None) if c != crash_cpu => ("none: the CPU did not stop", true),
            (Err(NoteError::Empty), _) => ("NONE  <-- FAILED", false),
            (Err(_), _) => ("UNREADABLE  <-- FAILED", false),
        };
        ok &= good;
        match note {
            Ok((_, r)) => {
                found += 1;
                let _ = writeln!(
                    out,
                    "capture: C{c}: crash note: nip {:#x} lr {:#x} r1 {:#x} msr {:#x} trap {:#x}: {verdict}",
                    r.nip, r.lr, r.gpr[1], r.msr, r.trap
                );
            }
            Err(e) => {
                let _ = writeln!(out, "capture: C{c}: crash note: {e}: {verdict}");
            }
        }
    }
    let _ = writeln!(
        out,
        "capture: crash notes at {NOTES_BASE:#x} ({NOTE_STRIDE} bytes per CPU): {found} NT_PRSTATUS note(s) for {ncpu} CPUs, {agree} agree with their CPU's stopped record{}",
        if ok { "" } else { "; FAILED" }
    );
    ok
}
