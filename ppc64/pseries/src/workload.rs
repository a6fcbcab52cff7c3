//! What every CPU does until the crash: log in task context (`cpu=<c> n=<i>`) and, from the decrementer
//! interrupt, in interrupt context (`cpu=<c> irq n=<i>`); and the scenario's freezes.
//!
//! The freezes are deterministic: once the boot CPU has logged for a while it raises `FREEZE_NOW`; the
//! scenario's CPUs then freeze at their next task-loop iteration, with external interrupts off, exactly
//! where the scenario wants them when the NMI arrives:
//! * mid-log-write: inside `append_raw_with_hook`, the hook parks the CPU after half of the payload is
//!   stored (the record's sequence word is odd, its header written) — it never returns;
//! * holding the RTAS lock: lock taken, the shared argument buffer half-filled, (optionally) marked as
//!   inside the firmware call proper — then parked.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use nmilog::fmt::LineBuf;
use nmilog::record::facility;
use nmilog::ring::WriteStep;
use nmilog::{Level, LINE_MAX};

use crate::klog::LOG;
use crate::percpu::MAX_CPUS;
use crate::{baseline, exceptions, hcall, irq, rtas, scenario, timebase};

/// Pause between two task records (µs): keeps the dmesg readable (tens of records per CPU).
pub const PACE_US: u64 = 500;
/// Decrementer period (µs) up to [`TICK_CPUS`] CPUs.
pub const IRQ_PERIOD_US: u64 = 2_000;
/// CPUs up to which each takes its decrementer every [`IRQ_PERIOD_US`].
pub const TICK_CPUS: usize = 16;

/// Whether the secondary CPUs of a machine of `ncpus` CPUs idle between their records (cede to
/// the hypervisor until their next tick) rather than pace them by spinning: beyond [`TICK_CPUS`],
/// as most CPUs of a large machine do. (Under QEMU's TCG on a few host cores, hundreds of vCPUs
/// that never sleep make the host run each one only every few hundred milliseconds, and the crash
/// NMI is delivered to one vCPU after another as each gets to run.)
pub fn idles(ncpus: usize) -> bool {
    ncpus > TICK_CPUS
}

/// Pause between two task records (µs) of a CPU that paces them on a machine of `ncpus` CPUs: in
/// proportion to the tick ([`irq_period_us`]), so that the boot CPU's records before the crash span
/// as many ticks at every size.
pub fn pace_us(ncpus: usize) -> u64 {
    PACE_US * tick_scale(ncpus)
}

/// How much slower than at [`TICK_CPUS`] CPUs the tick and the pacing run on `ncpus` CPUs.
fn tick_scale(ncpus: usize) -> u64 {
    (ncpus / TICK_CPUS).max(1) as u64
}

/// Decrementer period (µs) on a machine of `ncpus` CPUs: beyond [`TICK_CPUS`] the tick slows in
/// proportion, so that the machine takes as many interrupts per second as [`TICK_CPUS`] CPUs would.
/// (Under QEMU's TCG every interrupt taken holds QEMU's global lock, which the crash NMI's delivery
/// to each vCPU needs too: a machine-wide interrupt rate growing with the CPU count would make
/// the NMI IPI's cost grow quadratically.)
pub fn irq_period_us(ncpus: usize) -> u64 {
    IRQ_PERIOD_US * tick_scale(ncpus)
}

/// Raised (Release) by the boot CPU when the scenario CPUs should freeze; they load it with Acquire.
pub static FREEZE_NOW: AtomicBool = AtomicBool::new(false);
/// Bit c: CPU c froze as the scenario asked. Set with a Release `fetch_or` by the frozen CPU; the boot
/// CPU Acquire-loads it before it crashes the machine.
static FROZEN: AtomicUsize = AtomicUsize::new(0);
/// Task records each CPU has committed (ground truth for the boot report).
pub static TASK_N: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Interrupt-context records each CPU has committed.
pub static IRQ_N: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// `n` of the record a CPU was frozen in the middle of writing (u64::MAX: none).
pub static FROZEN_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

/// The external-interrupt handler: one interrupt-context record per device interrupt (none is
/// expected: the vty has no input and no EPOW event happens; the handler is there because the boot
/// CPU's presenter accepts every priority).
pub fn ext_irq_handler(cpu: usize, src: u32) {
    let _ = LOG.log_fmt(
        Level::Info,
        0,
        format_args!("cpu={cpu} external interrupt {src:#x}"),
    );
}

/// One task-context record.
fn task_log(cpu: usize, i: u64) {
    if scenario::locked_printk() {
        baseline::printk(format_args!("cpu={cpu} n={i}"));
    } else {
        let _ = LOG.log_fmt(Level::Info, 0, format_args!("cpu={cpu} n={i}"));
    }
}

/// The decrementer handler: one interrupt-context record.
pub fn irq_handler(cpu: usize) {
    let k = IRQ_N[cpu].load(Ordering::Relaxed);
    if scenario::locked_printk() {
        baseline::printk(format_args!("cpu={cpu} irq n={k}"));
    } else {
        let _ = LOG.log_fmt(Level::Info, 0, format_args!("cpu={cpu} irq n={k}"));
    }
    IRQ_N[cpu].store(k + 1, Ordering::Relaxed);
}

/// The task-context logging loop: runs until `max` records (forever if `None`), freezing first if the
/// scenario says so.
pub fn log_loop(cpu: usize, max: Option<u64>) {
    irq::start_this_cpu();
    let ncpus = nmilog::Platform::cpu_count(LOG.platform());
    let mut i = 0u64;
    loop {
        // Acquire pairs with the Release store of FREEZE_NOW in `freeze_and_wait`.
        if FREEZE_NOW.load(Ordering::Acquire) {
            if scenario::freeze_cpu() == Some(cpu) {
                freeze_mid_write(cpu, i);
            }
            if scenario::rtas_cpu() == Some(cpu) {
                freeze_holding_rtas(cpu);
            }
            if scenario::deaf_cpu() == Some(cpu) {
                go_deaf(cpu);
            }
            if scenario::hard_lockup_cpu(ncpus) == Some(cpu) {
                hard_lockup(cpu);
            }
        }
        if max.is_some_and(|m| i >= m) {
            return;
        }
        task_log(cpu, i);
        i += 1;
        TASK_N[cpu].store(i, Ordering::Relaxed);
        if max.is_none() && idles(ncpus) {
            // Wakes at the next tick (whose handler logs), or at the crash NMI.
            let _ = hcall::cede();
        } else {
            timebase::delay_us(pace_us(ncpus));
        }
    }
}

fn signal_frozen(cpu: usize) {
    // Release pairs with the boot CPU's Acquire load in `freeze_and_wait`.
    FROZEN.fetch_or(1 << cpu, Ordering::Release);
}

/// Starts writing task record `i` and parks half-way through the payload: the record stays in flight
/// (odd sequence word) until the NMI stops this CPU.
fn freeze_mid_write(cpu: usize, i: u64) -> ! {
    irq::disable();
    FROZEN_AT[cpu].store(i, Ordering::Relaxed);
    if scenario::locked_printk() {
        // The 2020 design: the record is written under `logbuf_lock`, so this CPU parks holding it.
        baseline::hold_logbuf_lock();
    }
    let mut line: LineBuf<LINE_MAX> = LineBuf::new();
    let _ = write!(line, "cpu={cpu} n={i}");
    let _ = LOG.append_raw_with_hook(
        Level::Info,
        facility::KERNEL,
        0,
        line.finish(),
        &mut |step| {
            if step == WriteStep::PayloadHalf {
                signal_frozen(cpu);
                exceptions::park();
            }
            true
        },
    );
    // Not reached: the hook parks.
    exceptions::park()
}

/// Takes the RTAS lock (half-filling the argument buffer; marked inside the call in `rtas-in-call`)
/// and parks without releasing it.
pub fn freeze_holding_rtas(cpu: usize) -> ! {
    irq::disable();
    // The call a CPU could be frozen in: `ibm,set-xive` under XICS; XIVE has no RTAS interrupt
    // calls, so a CPU query there.
    let f = if crate::xive::active() {
        rtas::Func::QueryCpuStoppedState
    } else {
        rtas::Func::SetXive
    };
    rtas::scenario_hold(f, scenario::rtas_in_call());
    signal_frozen(cpu);
    exceptions::park()
}

/// Makes this CPU deaf to the crash NMI: SPRG0 = 0 makes the 0x100 entry park it at once, without
/// touching memory, logging or checking in (as a CPU stuck with the NMI blocked would behave).
fn go_deaf(cpu: usize) -> ! {
    irq::disable();
    signal_frozen(cpu);
    // SAFETY: clearing SPRG0 only detaches this CPU from its PerCpu slot; from here on it runs no Rust
    // code that needs the slot (it spins in `park`, and its 0x100 entry parks without it).
    unsafe {
        core::arch::asm!("li {0}, 0", "mtspr 272, {0}", out(reg) _, options(nomem, nostack, preserves_flags))
    };
    exceptions::park()
}

/// A hard lockup: spins with interrupts off, outside any log call, until a system reset stops it.
fn hard_lockup(cpu: usize) -> ! {
    irq::disable();
    signal_frozen(cpu);
    exceptions::park()
}

/// Boot CPU: turns its interrupts off, asks the scenario CPUs to freeze and waits (bounded) until they have. Returns the mask of
/// CPUs that froze and the mask expected.
pub fn freeze_and_wait() -> (usize, usize) {
    // The crashing CPU is done logging: interrupts off from here on (a panicking kernel runs its crash
    // path with local interrupts disabled). In the locked baseline this also keeps this CPU's
    // decrementer handler from spinning on the log-buffer lock that CPU 2 is about to keep forever.
    irq::disable();
    let want = [
        scenario::freeze_cpu(),
        scenario::rtas_cpu(),
        scenario::deaf_cpu(),
        scenario::hard_lockup_cpu(nmilog::Platform::cpu_count(LOG.platform())),
    ]
    .into_iter()
    .flatten()
    .fold(0, |m, c| m | (1 << c));
    // Release pairs with the Acquire load in `log_loop`.
    FREEZE_NOW.store(true, Ordering::Release);
    let d = timebase::Deadline::after_us(1_000_000);
    // Acquire pairs with the Release fetch_or in `signal_frozen`.
    while FROZEN.load(Ordering::Acquire) & want != want && !d.expired() {
        core::hint::spin_loop();
    }
    (FROZEN.load(Ordering::Acquire), want)
}
