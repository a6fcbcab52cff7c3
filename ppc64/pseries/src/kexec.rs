//! `kexec -p` for this image: load the capture stage into the reserved crash region ahead of time, and
//! the switchover that jumps into it.
//!
//! QEMU's generic loader stages the capture ELF file as raw bytes at `STAGING_BASE` (the generic loader
//! of a big-endian target refuses a little-endian ELF, and a raw file is what kexec reads anyway). At
//! boot, in task context, [`load_capture`] parses it like kexec-tools does: it checks the ELF header,
//! copies every `PT_LOAD` segment to its physical address, which must lie in the reserved region
//! `CRASH_BASE..+CRASH_SIZE`, zeroes the rest of each segment, makes the code visible to instruction
//! fetch, and remembers the entry point. After that, the kernel never writes the region again.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::bootparams::{
    BootParams, CRASH_BASE, CRASH_SIZE, HOLD_ENTRY, PARAMS_BASE, PARAMS_MAGIC, STAGING_BASE,
    STAGING_MAX,
};
use crate::{crash_state, hcall, hold, irq, percpu};

/// The capture stage's entry point (0 = not loaded).
static ENTRY: AtomicUsize = AtomicUsize::new(0);

/// Why the capture stage was not loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// No ELF file at `STAGING_BASE` (QEMU was started without the loader device).
    NoElf,
    /// Not a 64-bit little-endian PowerPC executable.
    WrongKind,
    /// A segment or the entry point lies outside the reserved region, or the file is too large.
    OutOfRegion,
}

/// A loaded segment, for the boot report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loaded {
    /// Entry point.
    pub entry: usize,
    /// Lowest and highest address loaded.
    pub lo: usize,
    /// End of the last segment.
    pub hi: usize,
    /// PT_LOAD segments.
    pub segments: usize,
}

fn rd<const N: usize>(off: usize) -> [u8; N] {
    let mut b = [0u8; N];
    for (i, x) in b.iter_mut().enumerate() {
        // SAFETY: STAGING_BASE..+STAGING_MAX is RAM reserved for the staged file; `off + i` is checked
        // by the callers to lie inside it; volatile: QEMU wrote it, the compiler never saw the stores.
        *x = unsafe { ((STAGING_BASE + off + i) as *const u8).read_volatile() };
    }
    b
}

fn u16_at(off: usize) -> usize {
    u16::from_le_bytes(rd::<2>(off)) as usize
}
fn u32_at(off: usize) -> u32 {
    u32::from_le_bytes(rd::<4>(off))
}
fn u64_at(off: usize) -> usize {
    u64::from_le_bytes(rd::<8>(off)) as usize
}

fn in_region(a: usize, len: usize) -> bool {
    a >= CRASH_BASE
        && a.checked_add(len)
            .is_some_and(|e| e <= CRASH_BASE + CRASH_SIZE)
}

/// Loads the staged capture ELF into the reserved region. Call once, at boot, before any CPU logs.
pub fn load_capture() -> Result<Loaded, LoadError> {
    extern "C" {
        static __image_end: u8;
    }
    // The kernel image must end below the reserved region.
    assert!(
        (&raw const __image_end) as usize <= CRASH_BASE,
        "kernel image overlaps the crash region"
    );
    if rd::<4>(0) != *b"\x7fELF" {
        return Err(LoadError::NoElf);
    }
    let ident = rd::<8>(0);
    // ELFCLASS64, ELFDATA2LSB, e_type ET_EXEC, e_machine EM_PPC64 (21).
    if ident[4] != 2 || ident[5] != 1 || u16_at(16) != 2 || u16_at(18) != 21 {
        return Err(LoadError::WrongKind);
    }
    let entry = u64_at(24);
    let phoff = u64_at(32);
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    if phentsize < 56 || phoff.saturating_add(phnum * phentsize) > STAGING_MAX {
        return Err(LoadError::OutOfRegion);
    }
    let mut out = Loaded {
        entry,
        lo: usize::MAX,
        hi: 0,
        segments: 0,
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) != 1 {
            continue; // not PT_LOAD
        }
        let (off, paddr, filesz, memsz) = (
            u64_at(ph + 8),
            u64_at(ph + 24),
            u64_at(ph + 32),
            u64_at(ph + 40),
        );
        if filesz > memsz || !in_region(paddr, memsz) || off.saturating_add(filesz) > STAGING_MAX {
            return Err(LoadError::OutOfRegion);
        }
        // SAFETY: source inside the staging area, destination inside the reserved region (both checked
        // above, disjoint by the memory map); nothing else uses either.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (STAGING_BASE + off) as *const u8,
                paddr as *mut u8,
                filesz,
            );
            core::ptr::write_bytes((paddr + filesz) as *mut u8, 0, memsz - filesz);
        }
        crate::exceptions::flush_icache_range(paddr, paddr + memsz);
        out.lo = out.lo.min(paddr);
        out.hi = out.hi.max(paddr + memsz);
        out.segments += 1;
    }
    if out.segments == 0 || !in_region(entry, 4) {
        return Err(LoadError::OutOfRegion);
    }
    hold::reset();
    // Release pairs with the Acquire load in `switchover` (the loaded bytes before the entry).
    ENTRY.store(entry, Ordering::Release);
    Ok(out)
}

/// Whether a capture stage is loaded.
pub fn loaded() -> bool {
    ENTRY.load(Ordering::Acquire) != 0
}

/// Writes the boot-parameter block for the capture stage; returns its address.
pub fn write_params(p: BootParams) -> usize {
    let p = BootParams {
        magic: PARAMS_MAGIC,
        ..p
    };
    // SAFETY: PARAMS_BASE is reserved RAM for this block (see `bootparams`), suitably aligned; only the
    // crashing CPU writes it, once, and the capture stage reads it after the jump (same CPU).
    unsafe { (PARAMS_BASE as *mut BootParams).write_volatile(p) };
    PARAMS_BASE
}

/// The switchover: jumps to the capture stage with r3 = the handover image, r4 = the parameter block.
/// Returns only if no capture stage is loaded.
pub fn switchover(image: usize, params: usize) {
    // Acquire pairs with the Release store in `load_capture`.
    let entry = ENTRY.load(Ordering::Acquire);
    if entry == 0 {
        return;
    }
    // SAFETY: `entry` is the entry point of the capture stage that `load_capture` copied into the
    // reserved region and flushed to the instruction cache; it sets up its own TOC, stack and .bss
    // and never returns.
    unsafe { jump(entry, image, params) }
}

/// Jumps to `entry` in the capture stage with r3 = `r3`, r4 = `r4`. `sync` orders this CPU's
/// stores (image, parameters, crash note) before the jump; SPRG0 is cleared so nothing in the new
/// stage mistakes the old per-CPU slot for its own; r12 holds the entry (the ELFv2 convention for a
/// global entry); r11 is scratch.
///
/// # Safety
/// `entry` must be code of the loaded capture stage (copied and flushed to the instruction cache
/// by `load_capture`) that runs with only r3/r4 and never returns.
unsafe fn jump(entry: usize, r3: usize, r4: usize) -> ! {
    // SAFETY: forwarded to the caller; the asm only writes SPRG0, r11 and CTR before the branch.
    unsafe {
        core::arch::asm!(
            "sync",
            "li 11, 0",
            "mtspr 272, 11",
            "mtctr 12",
            "bctr",
            in("r12") entry,
            in("r3") r3,
            in("r4") r4,
            options(noreturn),
        )
    }
}

/// The go (Linux's `time_to_dump`): raised by the crashing CPU right before its switchover; the CPUs
/// it stopped wait for it, then go to the capture stage's hold.
static GO: AtomicBool = AtomicBool::new(false);

/// On the crashing CPU, right before the switchover: raises the go and wakes every CPU that checked
/// in (each waits halted in H_JOIN; a prod that comes before its join makes the join return at once,
/// so none is missed). No wait: the CPUs go on by themselves.
pub fn release_secondaries(me: usize, ncpus: usize) {
    // LMM(go:A): Release pairs with the Acquire load in `wait_for_go_then_hold`, LMM(go:B): the
    // image and everything the crash path wrote are visible to a CPU that sees the go.
    GO.store(true, Ordering::Release);
    for c in (0..ncpus).filter(|&c| c != me && crash_state::checked_in(c)) {
        let _ = hcall::prod(percpu::PERCPU[c].hw_id.load(Ordering::Relaxed) as u64);
    }
}

/// A CPU the crash stopped, after its check-in (Linux's `crash_ipi_callback` after
/// `crash_save_cpu`): waits halted for the go, tears down its interrupt presenter (CPPR 0, nothing
/// presented: `H_CPPR` under XICS, its TIMA under XIVE; Linux's `kexec_cpu_down`), and enters the capture stage's hold loop — or parks
/// if no capture stage is loaded. A wait for the go that never comes (the crash path died) is a
/// parked CPU: the firmware's system reset still stops it (`fadump`).
pub fn wait_for_go_then_hold(cpu: usize) -> ! {
    // LMM(go:B): pairs with the Release store in `release_secondaries`, LMM(go:A).
    while !GO.load(Ordering::Acquire) {
        irq::quiet_decrementer();
        let _ = hcall::join();
    }
    let hw = percpu::PERCPU[cpu].hw_id.load(Ordering::Relaxed);
    let _ = crate::presenter::set_cppr(0);
    // The CPPR as this CPU's presenter now reports it, for the capture stage (under XIVE only the
    // CPU itself can read its presenter); the hold loop's store of `arrived` publishes it.
    let (st, cppr) = crate::presenter::cppr(hw as u64);
    crate::hold::report_cppr(cpu, (st == hcall::H_SUCCESS).then_some(cppr));
    if !loaded() {
        crate::exceptions::park()
    }
    // SAFETY: HOLD_ENTRY is the capture stage's hold loop, loaded into the reserved region and
    // flushed to the instruction cache by `load_capture` (`loaded()`); it needs no stack, only
    // r3/r4, and never returns.
    unsafe { jump(HOLD_ENTRY, cpu, hw) }
}
