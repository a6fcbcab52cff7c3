//! The firmware-assisted-dump stand-in: what happens when a system reset interrupts the crash path
//! itself (the `die-in-drain` scenario; `death` makes the crashing CPU die that way). Modelled on
//! PAPR firmware-assisted dump (Linux's fadump): the kernel registers the dump with the firmware at
//! boot (`ibm,configure-kernel-dump`); when the kernel dies — also a crash path that hangs and is
//! reset by the hypervisor's watchdog or the HMC — the system reset handler calls `ibm,os-term`, and
//! the firmware stops every processor, keeps memory as it is and boots the capture kernel, which
//! finds everything it needs in that memory.
//!
//! * [`register`], at boot: writes the capture stage's parameter block at `DUMP_PARAMS_BASE`, with
//!   only what the platform knows then (console, power-off token, timebase, the end of RAM, the
//!   command line's scenario and death point) — no report of a crash path, which has not run yet.
//! * [`crash_path_interrupted`], from the system reset handler of the CPU whose crash path it
//!   interrupted (`crash::system_reset`): stops every other CPU in place — a system reset each, with
//!   [`firmware_stopping`] raised first so that their handler stops at once ([`stopped_in_place`]:
//!   RTAS `stop-self`, so the vCPU no longer runs) and runs no kernel code: no log record, no check-in; a CPU the crash NMI already parked stays
//!   parked, one the NMI never reached stops wherever it was, mid-write included — waits (bounded)
//!   until each has stopped, and enters the capture stage with r3 = 0 (no handover image) and r4 = the
//!   boot-time block. The capture stage then has nothing but memory: it finds the log's descriptor
//!   by scanning RAM and rebuilds the log (`capture/from_memory.rs`).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::bootparams::{name16, name_n, BootParams, DUMP_PARAMS_BASE, PARAMS_MAGIC};
use crate::percpu::SavedRegs;
use crate::{console, crash_state, death, exceptions, hcall, kexec, rtas, scenario, timebase};

/// The end of RAM, from the device tree (for the parameter blocks).
static RAM_TOP: AtomicU64 = AtomicU64::new(0);
/// The command line's `die=` value (NUL-padded).
static DIE: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
/// Raised (Release) by the firmware before it stops the other CPUs; their system reset handler
/// loads it (Acquire) first.
static FIRMWARE_STOP: AtomicBool = AtomicBool::new(false);
/// CPUs stopped in place by the firmware. Release `fetch_add` by each stopped CPU (after every store
/// it made; once: it never returns), Acquire load by the firmware before it boots the capture stage.
static STOPPED: AtomicUsize = AtomicUsize::new(0);
/// How long the firmware waits for the other CPUs to stop.
const STOP_TIMEOUT_US: u64 = 1_000_000;

/// What the platform knows, in a parameter block with no crash report (image length 0, no crashing
/// CPU, no mask path): the boot-time part of every block handed to the capture stage.
pub fn platform_params() -> BootParams {
    let mut die = [0u8; 24];
    for (chunk, w) in die.chunks_exact_mut(8).zip(&DIE) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    BootParams {
        magic: PARAMS_MAGIC,
        image_len: 0,
        tb_freq: timebase::freq(),
        power_off_token: rtas::token(rtas::Func::PowerOff).unwrap_or(0),
        term: crash_state::term(),
        ncpus: 0,
        crash_cpu: u32::MAX,
        scenario: name16(scenario::kind().name()),
        mask_path: [0; 16],
        not_answered: 0,
        answered: crate::bootparams::CpuMask::EMPTY,
        ram_top: RAM_TOP.load(Ordering::Relaxed),
        die,
        outcome: [0; crate::bootparams::OUTCOME_CPUS],
        escalated: 0,
        offline: 0,
        notes_base: crate::bootparams::NOTES_BASE as u64,
        note_stride: crate::bootparams::NOTE_STRIDE as u32,
        tima_os: crate::xive::tima_os(),
        crash_hw: u64::MAX,
        xive_teardown: [0; 2],
    }
}

/// Registers the dump at boot (after the console, RTAS tokens and scenario are known): remembers the
/// end of RAM and the death point, and writes the capture stage's memory-only parameter block.
/// Returns its address.
pub fn register(ram_top: u64, die: &[u8]) -> usize {
    RAM_TOP.store(ram_top, Ordering::Relaxed);
    let bytes: [u8; 24] = name_n(die);
    for (w, chunk) in DIE.iter().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
    // SAFETY: DUMP_PARAMS_BASE is RAM reserved for this block (see `bootparams`), aligned; written once
    // here at boot, by the boot CPU, before any other CPU runs; read only by the capture stage.
    unsafe { (DUMP_PARAMS_BASE as *mut BootParams).write_volatile(platform_params()) };
    DUMP_PARAMS_BASE
}

/// Whether the firmware is stopping the CPUs (checked first by the system reset handler).
pub fn firmware_stopping() -> bool {
    // Acquire pairs with the Release store in `crash_path_interrupted`.
    FIRMWARE_STOP.load(Ordering::Acquire)
}

/// A CPU the firmware stops: says so and stops (RTAS `stop-self`: the vCPU no longer runs), touching
/// nothing else.
pub fn stopped_in_place() -> ! {
    // Release pairs with the firmware's Acquire load in `crash_path_interrupted`: everything this
    // CPU stored before the reset is visible to the capture stage.
    STOPPED.fetch_add(1, Ordering::Release);
    rtas::stop_self_unlocked();
    exceptions::park()
}

/// The system reset interrupted the crash path on `cpu`: stop the other CPUs in place and enter the
/// capture stage with memory only (see the module docs). Never returns.
pub fn crash_path_interrupted(cpu: usize, saved: &SavedRegs) -> ! {
    let t0 = timebase::now();
    // Release pairs with the Acquire load in `firmware_stopping`.
    FIRMWARE_STOP.store(true, Ordering::Release);
    let ncpus = nmilog::Platform::cpu_count(crate::klog::LOG.platform());
    let others = (0..ncpus)
        .filter(|&c| c != cpu && crash_state::online(c))
        .count();
    let st = hcall::signal_sys_reset(hcall::SYS_RESET_ALL_OTHERS);
    let d = timebase::Deadline::after_us(STOP_TIMEOUT_US);
    // Acquire pairs with the Release fetch_add in `stopped_in_place`.
    while STOPPED.load(Ordering::Acquire) < others && !d.expired() {
        core::hint::spin_loop();
    }
    let stopped = STOPPED.load(Ordering::Acquire).min(others);
    let mut crumbs = Crumbs::new();
    let _ = death::breadcrumbs(&mut crumbs);
    console::write_fmt_unlocked(format_args!(
        "fadump: {} on CPU {cpu} (nip {:#x}) interrupted its crash path (breadcrumbs: {}); the firmware stopped {} of {} other CPU(s) in place (H_SIGNAL_SYS_RESET(-2) = {st}, {} us) and boots the capture stage with memory only\n",
        if saved.trap == 0x200 {
            "unrecoverable machine check"
        } else {
            "system reset"
        },
        saved.nip,
        crumbs.as_str(),
        stopped,
        others,
        timebase::ticks_to_us(timebase::now().wrapping_sub(t0)),
    ));
    kexec::switchover(0, DUMP_PARAMS_BASE);
    console::write_bytes(b"fadump: no capture stage loaded; powering off\ncapture: none\n");
    crate::machine::power_off_crash()
}

/// A small formatting buffer for the breadcrumbs.
struct Crumbs {
    buf: [u8; 64],
    len: usize,
}

impl Crumbs {
    fn new() -> Self {
        Crumbs {
            buf: [0; 64],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Crumbs {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
