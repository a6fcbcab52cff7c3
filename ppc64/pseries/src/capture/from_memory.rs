//! The capture stage with nothing but memory: the crash path died before it wrote a handover image
//! (the `die-in-drain` scenario; the firmware-assisted-dump stand-in entered this stage with r3 = 0),
//! so the log is rebuilt from the crashed kernel's RAM, as `makedumpfile --dump-dmesg` rebuilds
//! dmesg from a vmcore.
//!
//! 1. The RAM this stage can see — all of it but its own reserved region, which is not the crashed
//!    kernel's memory (kdump's /proc/vmcore leaves it out too) — is scanned word by word for the
//!    log descriptor's magic (`recover::scan`; the kernel wrote the descriptor at boot), timed on
//!    the timebase.
//! 2. `RecoveredLog::open` checks the descriptor against that memory, and `write_image` runs the
//!    crash drain over the rings and main log as found into a handover image in the rebuild region
//!    (`REBUILD_BASE`, inside the reserved region), with this stage's own scratch memory.
//! 3. The caller then prints and checks that image through the verifier every image goes through.
//!
//! The handover region is looked at too, for the report only: the dead path's partial image must
//! not parse (its core header is written last), and a whole one (a death after the image was
//! written) must be byte-identical to the rebuilt one.

use core::fmt::Write;

use nmilog::handover;
use nmilog::recover::{self, AtomicUsize, DrainSource, PiecewiseDump, RawDump, RecoveredLog};

use crate::bootparams::{
    BootParams, CpuMask, CRASH_BASE, CRASH_SIZE, HANDOVER_BASE, HANDOVER_SIZE, REBUILD_BASE,
    REBUILD_SIZE,
};
use crate::verify::MAX_CPUS;

/// Where the scan starts: page 0 is the firmware's (and a Rust slice cannot start at address 0).
const SCAN_START: usize = 0x1000;
/// Rings the scratch memory has room for.
const MAX_SOURCES: usize = MAX_CPUS * 4;
/// The drain's scratch memory: one entry per ring.
static SCRATCH: [DrainSource; MAX_SOURCES] = [const { DrainSource::new() }; MAX_SOURCES];

/// What the rebuild found: the image, and what memory says about the crash.
pub struct Rebuilt {
    /// The rebuilt handover image.
    pub image: &'static [u8],
    /// The CPU that entered the crash path (`usize::MAX` if none did).
    pub crash_cpu: usize,
    /// CPU c checked in (or is the crashing CPU).
    pub stopped: CpuMask,
    /// CPUs the log covers.
    pub cpus: usize,
}

/// The timebase.
pub fn timebase() -> u64 {
    let tb: u64;
    // SAFETY: reading the timebase has no side effects.
    unsafe { core::arch::asm!("mftb {0}", out(reg) tb, options(nomem, nostack, preserves_flags)) };
    tb
}

/// Timebase ticks in ms at `tb_freq` Hz.
pub fn ms(ticks: u64, tb_freq: u64) -> u64 {
    ticks * 1000 / tb_freq.max(1)
}

/// Rebuilds the crashed kernel's log from RAM (see the module docs), reporting each step on `out`.
/// `None` (with the reason printed) if it cannot.
pub fn rebuild(p: &BootParams, out: &mut impl Write) -> Option<Rebuilt> {
    extern "C" {
        static __image_end: u8;
    }
    let end_of_stage = (&raw const __image_end) as usize;
    let ram_top = p.ram_top as usize;
    if end_of_stage > REBUILD_BASE || ram_top < CRASH_BASE + CRASH_SIZE {
        let _ = writeln!(
            out,
            "capture: cannot rebuild: this stage ends at {end_of_stage:#x} (rebuild region at {REBUILD_BASE:#x}), RAM ends at {ram_top:#x}"
        );
        return None;
    }
    let words = |lo: usize, hi: usize| {
        // SAFETY: [lo, hi) is RAM outside this stage's reserved region: the crashed kernel's memory.
        // Every word is read as an atomic, so a CPU the firmware could not stop (one that did not
        // check in, treated as running by the drain) writing it meanwhile is a race, not UB; this
        // stage runs from the reserved region. It is word-aligned and non-null, every bit pattern is a valid
        // `AtomicUsize`, and this stage holds no other reference into it but shared ones (the
        // parameter block was copied out; the handover region is only read).
        unsafe {
            core::slice::from_raw_parts(
                lo as *const AtomicUsize,
                (hi - lo) / core::mem::size_of::<usize>(),
            )
        }
    };
    let pieces = [
        RawDump::new(SCAN_START, words(SCAN_START, CRASH_BASE)),
        RawDump::new(
            CRASH_BASE + CRASH_SIZE,
            words(CRASH_BASE + CRASH_SIZE, ram_top),
        ),
    ];
    let ram = PiecewiseDump::new(&pieces);
    let t0 = timebase();
    let found = recover::scan(&ram);
    let t1 = timebase();
    let scanned = (CRASH_BASE - SCAN_START) + (ram_top - CRASH_BASE - CRASH_SIZE);
    let _ = write!(
        out,
        "capture: scanned {} MiB of RAM ([{SCAN_START:#x}, {CRASH_BASE:#x}) and [{:#x}, {ram_top:#x}): all but this stage's reserved region) for the log descriptor in {} ms: ",
        scanned >> 20,
        CRASH_BASE + CRASH_SIZE,
        ms(t1 - t0, p.tb_freq),
    );
    let Some(desc) = found.descriptor else {
        let _ = writeln!(
            out,
            "none found ({} rejected{})",
            found.rejected,
            if found.first_rejection.is_some() {
                ", see below"
            } else {
                ""
            }
        );
        if let Some(e) = found.first_rejection {
            let _ = writeln!(out, "capture: first rejected candidate: {e}");
        }
        return None;
    };
    let _ = writeln!(
        out,
        "found at {:#x} ({} valid, {} magic look-alike(s) rejected{})",
        desc.address(),
        found.valid,
        found.rejected,
        match found.first_rejection {
            Some(recover::RecoverError::NoMagic { .. }) | None => "",
            Some(_) => ": not descriptors",
        }
    );
    let log = match RecoveredLog::open(&ram, desc) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(out, "capture: the descriptor does not check out: {e}");
            return None;
        }
    };
    // SAFETY: REBUILD_BASE..+REBUILD_SIZE is RAM reserved for this (inside this stage's reserved
    // region, above its image: checked above); only this stage, on this one CPU, uses it.
    let region: &'static mut [u8] =
        unsafe { core::slice::from_raw_parts_mut(REBUILD_BASE as *mut u8, REBUILD_SIZE) };
    let rep = match log.write_image(&SCRATCH, region) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(out, "capture: cannot rebuild the image: {e}");
            return None;
        }
    };
    let t2 = timebase();
    let crash_cpu = log.crashing_cpu().unwrap_or(usize::MAX);
    let cpus = desc.cpus();
    let stopped: CpuMask = (0..cpus.min(MAX_CPUS))
        .filter(|&c| log.stopped(c))
        .collect();
    let _ = write!(
        out,
        "capture: rebuilt a {}-byte handover image at {REBUILD_BASE:#x} in {} ms: the crash drain over {} CPUs x {} rings + the main log as found; crashing CPU {}; checked in:",
        rep.len,
        ms(t2 - t1, p.tb_freq),
        cpus,
        desc.depth(),
        crash_cpu,
    );
    for c in (0..cpus.min(MAX_CPUS)).filter(|&c| c != crash_cpu) {
        let _ = write!(out, " C{c} {}", if log.stopped(c) { "yes" } else { "no" });
    }
    let _ = writeln!(out);
    let region: &'static [u8] = region;
    let image = &region[..rep.len.min(region.len())];
    report_handover_region(image, out);
    Some(Rebuilt {
        image,
        crash_cpu,
        stopped,
        cpus,
    })
}

/// Says what the dead crash path left in the handover region.
fn report_handover_region(rebuilt: &[u8], out: &mut impl Write) {
    // SAFETY: HANDOVER_BASE..+HANDOVER_SIZE is the handover region (RAM, outside this stage's
    // region); nothing writes it any more; `parse` trusts none of its bytes.
    let region = unsafe { core::slice::from_raw_parts(HANDOVER_BASE as *const u8, HANDOVER_SIZE) };
    let _ = match handover::parse(region) {
        Err(e) => writeln!(
            out,
            "capture: handover region at {HANDOVER_BASE:#x}: no valid image ({e}): the dead path never finished one"
        ),
        Ok(_) if region.get(..rebuilt.len()) == Some(rebuilt) => writeln!(
            out,
            "capture: handover region at {HANDOVER_BASE:#x}: the dead path's image, byte-identical to the rebuilt one ({} bytes)",
            rebuilt.len()
        ),
        Ok(_) => writeln!(
            out,
            "capture: handover region at {HANDOVER_BASE:#x}: the dead path's image DIFFERS from the rebuilt one"
        ),
    };
}
