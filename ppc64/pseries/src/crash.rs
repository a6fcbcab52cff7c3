//! The pseries `nmilog_ppc64::Machine` and the glue that runs the portable crash-shutdown sequence
//! (`nmilog_ppc64::crash_shutdown`) on this image.
//!
//! | `Machine` method        | here                                                                        |
//! |-------------------------|-----------------------------------------------------------------------------|
//! | `nmi_ipi_all_but_self`  | `H_SIGNAL_SYS_RESET(-2)`; each target takes the 0x100 system reset         |
//! | `now_ns`                | the timebase scaled to ns (the log's clock)                                 |
//! | `irq_source_count`      | the sources found in the device tree (vty, EPOW), routed to the boot CPU   |
//! | `firmware_mask_source`  | RTAS `ibm,int-off` then `ibm,set-xive(prio 0xff)` through the crash buffer |
//! | `mask_at_presenter`     | `H_CPPR(0)` (checked with `H_IPOLL`)                                        |
//! | `park`                  | `or 1,1,1` spin with MSR[EE] off                                            |
//! | `kexec`                 | parameter block + jump to the capture stage, r3 = image                    |
//!
//! The stopped CPUs run `system_reset` from the 0x100 handler (own NMI stack): it hands the interrupted
//! registers to `nmilog_ppc64::on_nmi_stop`, which enters NMI context, logs "CPU n stopped", saves
//! them into the crash state, checks in (Release; the crashing CPU Acquire-loads it, with a timebase
//! bound) and parks. No console output from NMI or crash context: everything goes to nmilog (the
//! only exceptions are the failure exits' last words before power-off, through the lockless
//! `console::write_bytes`; see `console`).

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use nmilog::Level;
use nmilog_ppc64::{CrashState, Machine, RtasArgs, ShutdownConfig, ShutdownReport};

use crate::bootparams::{name16, BootParams, HANDOVER_BASE, HANDOVER_SIZE};
use crate::exceptions::{self, SavedRegs};
use crate::klog::LOG;
use crate::smp::{self, MAX_CPUS};
use crate::{baseline, console, hcall, irq, kexec, rtas, scenario, timebase};

/// Logs into nmilog from any context (never the console).
macro_rules! klog {
    ($lvl:expr, $($arg:tt)*) => {{
        let _ = LOG.log_fmt($lvl, 0, format_args!($($arg)*));
    }};
}

/// Bounded wait for the NMI check-ins.
pub const CHECKIN_TIMEOUT_NS: u64 = 1_000_000_000;

/// The crash state: check-in flags, saved registers, the crash path's own RTAS argument buffer.
pub static STATE: CrashState<MAX_CPUS> = CrashState::new();

/// Interrupt sources to mask (from the device tree) and the server they are routed to.
static SOURCES: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static NSOURCES: AtomicUsize = AtomicUsize::new(0);
static SERVER: AtomicU32 = AtomicU32::new(0);
/// The console's terminal number, for the capture stage.
static TERM: AtomicU32 = AtomicU32::new(0);

/// Records an interrupt source (an `interrupts` cell from the device tree) that the crash path masks.
pub fn add_source(irq: u32) {
    let n = NSOURCES.load(Ordering::Relaxed);
    if n < SOURCES.len() {
        SOURCES[n].store(irq, Ordering::Relaxed);
        NSOURCES.store(n + 1, Ordering::Relaxed);
    }
}

/// The interrupt sources recorded with `add_source`.
pub fn sources() -> ([u32; 4], usize) {
    let n = NSOURCES.load(Ordering::Relaxed);
    let mut v = [0u32; 4];
    for (d, s) in v.iter_mut().zip(&SOURCES) {
        *d = s.load(Ordering::Relaxed);
    }
    (v, n)
}

/// Sets the server (hardware id) the sources are routed to, and the console's terminal number.
pub fn set_platform(server: u32, term: u32) {
    SERVER.store(server, Ordering::Relaxed);
    TERM.store(term, Ordering::Relaxed);
}

/// Whether `cpu` has checked in from its NMI handler (Acquire inside: LMM(checkin:B) of nmilog-ppc64).
pub fn checked_in(cpu: usize) -> bool {
    STATE.checked_in(cpu)
}

/// The pseries machine.
pub struct Pseries;

/// The one instance.
pub static MACHINE: Pseries = Pseries;

impl Machine for Pseries {
    fn nmi_ipi_all_but_self(&self, me: usize) {
        let t0 = timebase::now();
        let st = hcall::signal_sys_reset(hcall::SYS_RESET_ALL_OTHERS);
        klog!(
            Level::Info,
            "crash: CPU {me}: H_SIGNAL_SYS_RESET(-2) = {st} after {} us",
            timebase::ticks_to_us(timebase::now().wrapping_sub(t0))
        );
    }

    fn now_ns(&self) -> u64 {
        timebase::now_ns()
    }

    fn irq_source_count(&self) -> usize {
        NSOURCES.load(Ordering::Relaxed)
    }

    /// `ibm,int-off(irq)`, then `ibm,set-xive(irq, server, 0xff)` (what Linux's ics_rtas_mask_irq
    /// does), then `ibm,get-xive` to log the priority now in force. `args` is the crash state's own
    /// buffer; it is copied into `rtas::CRASH_BUF` in PAPR layout (big-endian cells) for each call.
    fn firmware_mask_source(&self, src: usize, args: &RtasArgs) -> Result<(), i32> {
        let me = smp::this_cpu_index();
        let Some(irq) = SOURCES.get(src).map(|s| s.load(Ordering::Relaxed)) else {
            return Err(rtas::PARAM_ERROR);
        };
        let server = SERVER.load(Ordering::Relaxed);
        // With ic-mode=xive /rtas has none of these: report it instead of calling token 0.
        let (Some(int_off), Some(set_xive), Some(get_xive)) = (
            rtas::token(rtas::Func::IntOff),
            rtas::token(rtas::Func::SetXive),
            rtas::token(rtas::Func::GetXive),
        ) else {
            klog!(
                Level::Warning,
                "crash: irq {irq:#x}: /rtas has no ibm,int-off/set-xive/get-xive: not masked"
            );
            return Err(rtas::NO_TOKEN);
        };
        args.fill(me, int_off, &[irq], 1);
        // SAFETY: the crash sequence owns the RTAS lock (taken, or taken over from a CPU stopped
        // outside the firmware call) and has marked itself inside the call; CRASH_BUF is used only by
        // the crashing CPU.
        let off = unsafe { rtas::call_from_args(&rtas::CRASH_BUF, args) };
        args.fill(me, set_xive, &[irq, server, 0xff], 1);
        // SAFETY: as above.
        let set = unsafe { rtas::call_from_args(&rtas::CRASH_BUF, args) };
        args.fill(me, get_xive, &[irq], 3);
        // SAFETY: as above.
        let get = unsafe { rtas::call_from_args(&rtas::CRASH_BUF, args) };
        klog!(
            Level::Info,
            "crash: irq {irq:#x}: ibm,int-off = {off}, ibm,set-xive(prio 0xff) = {set}; ibm,get-xive = {get}: priority {:#x}",
            args.ret(2)
        );
        if off == rtas::SUCCESS {
            Ok(())
        } else {
            Err(off)
        }
    }

    fn mask_at_presenter(&self) {
        let hw = smp::this_cpu().map_or(0, |c| c.hw_id.load(Ordering::Relaxed)) as u64;
        let (_, before) = hcall::poll_cppr(hw);
        let st = hcall::set_cppr(0);
        let (pst, after) = hcall::poll_cppr(hw);
        klog!(Level::Info, "crash: presenter: H_CPPR(0) = {st}; H_IPOLL = {pst}: CPPR {before:#x} -> {after:#x} (nothing is presented)");
    }

    fn park(&self) -> ! {
        irq::disable();
        exceptions::park()
    }

    fn kexec<const CPUS: usize>(&self, image: &[u8], report: &ShutdownReport<CPUS>) -> ! {
        let params = kexec::write_params(BootParams {
            magic: 0,
            image_len: image.len() as u64,
            tb_freq: timebase::freq(),
            power_off_token: rtas::token(rtas::Func::PowerOff).unwrap_or(0),
            term: TERM.load(Ordering::Relaxed),
            ncpus: report.cpus as u32,
            crash_cpu: report.crash_cpu as u32,
            scenario: name16(scenario::kind().name()),
            mask_path: name16(report.mask.path.name()),
            not_answered: report.not_answered as u32,
            answered: report
                .answered
                .iter()
                .enumerate()
                .filter(|&(c, &a)| a && c < 64)
                .fold(0, |m, (c, _)| m | (1 << c)),
        });
        kexec::switchover(image.as_ptr() as usize, params);
        // No capture stage loaded: say so on the raw console and power off.
        console::write_bytes(b"crash: no capture stage loaded; powering off\ncapture: none\n");
        power_off_crash()
    }
}

/// Powers off through the crash buffer without the RTAS lock (every other CPU is parked; the lock may
/// be held by one of them).
pub fn power_off_crash() -> ! {
    // SAFETY: every other CPU is parked; the crash buffer is used by this CPU only.
    unsafe {
        let mut r = [0u32; 1];
        rtas::call_with(
            &rtas::CRASH_BUF,
            rtas::Func::PowerOff,
            &[u32::MAX, u32::MAX],
            &mut r,
        );
    }
    exceptions::park()
}

/// The system-reset handler of every CPU but the crashing one. Runs on the CPU's own NMI stack.
pub fn system_reset(_cpu: usize, saved: &SavedRegs) -> ! {
    let regs = nmilog_ppc64::SavedRegs {
        pc: saved.nip as usize,
        sp: saved.gpr[1] as usize,
        msr: saved.msr as usize,
    };
    // Returns only if no crash is in progress (a stray system reset): then just park.
    nmilog_ppc64::on_nmi_stop(
        &LOG,
        &MACHINE,
        &STATE,
        regs,
        format_args!("nip {:#x} lr {:#x}", saved.nip, saved.lr),
    );
    MACHINE.park()
}

/// Crash shutdown on the calling CPU. Never returns.
pub fn crash_shutdown(reason: &str) -> ! {
    irq::disable();
    if scenario::baseline() {
        baseline_crash(reason)
    }
    // SAFETY: HANDOVER_BASE..+HANDOVER_SIZE is RAM reserved for the image (see `bootparams`); nothing
    // else uses it, and only the crashing CPU writes it (after every other CPU is parked).
    let region =
        unsafe { core::slice::from_raw_parts_mut(HANDOVER_BASE as *mut u8, HANDOVER_SIZE) };
    let cfg = ShutdownConfig {
        ack_timeout_ns: CHECKIN_TIMEOUT_NS,
        ..ShutdownConfig::new()
    };
    nmilog_ppc64::crash_shutdown(
        &LOG,
        &MACHINE,
        &STATE,
        &rtas::RTAS_LOCK,
        region,
        &cfg,
        format_args!("{reason}"),
    )
}

/// The locked 2020 design's crash path: the NMI IPI and a bounded wait as before, but its messages go
/// through `logbuf_lock` and its masking waits for the RTAS lock. The watchdog ends it when it
/// deadlocks.
fn baseline_crash(reason: &str) -> ! {
    baseline::arm_watchdog(1000);
    baseline::stage(0);
    let me = smp::this_cpu_index();
    // Crash state on, so the stopped CPUs' NMI handlers check in (their "stopped" records go to the
    // per-CPU NMI path, as 2020's printk_nmi did).
    let _ = LOG.crash_enter();
    let ncpus = nmilog::Platform::cpu_count(LOG.platform());
    MACHINE.nmi_ipi_all_but_self(me);
    let d = timebase::Deadline::after_us(CHECKIN_TIMEOUT_NS / 1000);
    while (0..ncpus).any(|c| c != me && !checked_in(c)) && !d.expired() {
        core::hint::spin_loop();
    }
    baseline::stage(1);
    baseline::printk(format_args!("IPI complete"));
    baseline::stage(2);
    let (srcs, n) = sources();
    let masked = baseline::mask_through_rtas_locked(&srcs[..n]);
    baseline::printk(format_args!(
        "crash: CPU {me}: {reason} (locked baseline); {masked} interrupt sources masked via rtas"
    ));
    baseline::stage(3);
    // No deadlock (nothing was held): the rest of the sequence is the same in both designs.
    LOG.drain_on_crash();
    klog!(Level::Emerg, "kexec: Starting switchover sequence.");
    LOG.drain_on_crash();
    console::write_bytes(
        b"crash: the locked baseline did not deadlock (no lock was held)\ncapture: no-deadlock\n",
    );
    power_off_crash()
}
