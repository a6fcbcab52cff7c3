//! The locked baseline: the 2020 design that deadlocked.
//!
//! * `printk`: one global spinlock (`logbuf_lock`) around every write to the log buffer, taken with
//!   external interrupts off (spin_lock_irqsave); the NMI handler still logs through the per-CPU NMI
//!   path (as 2020's printk_nmi did), so only the crashing CPU's own messages take the lock.
//! * interrupt masking through RTAS under the RTAS lock, waited for like any spinlock.
//!
//! A CPU frozen by the NMI while holding either lock never releases it, so the crashing CPU spins
//! forever. The watchdog here is the timebase-bounded lockup detector on the crashing CPU (the
//! `CONFIG_DEBUG_SPINLOCK` "spinlock lockup suspected" check): every spin iteration on a lock in the
//! crash path checks a timebase deadline armed at crash entry; when it passes, the detector reports
//! which lock is held by whom, prints `capture: deadlock` and powers the machine off (as a hypervisor
//! watchdog would reset it) — through its own RTAS buffer, since the RTAS lock may be the one held.

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nmilog::Level;
use nmilog_ppc64::Machine;

use crate::crash_state::{checked_in, sources, CHECKIN_TIMEOUT_NS};
use crate::klog::LOG;
use crate::machine::{power_off_crash, MACHINE};
use crate::{console, irq, percpu, rtas, smp, timebase};

/// `logbuf_lock`: 0 = free, otherwise the owner's CPU index + 1. Acquire on taking, Release on
/// dropping (the pair orders the previous holder's log-buffer writes before the next holder's).
static LOGBUF_LOCK: AtomicUsize = AtomicUsize::new(0);

/// Watchdog deadline (timebase), 0 = disarmed.
static WATCHDOG_DEADLINE: AtomicU64 = AtomicU64::new(0);
/// The CPU the watchdog watches, + 1.
static WATCHDOG_CPU: AtomicUsize = AtomicUsize::new(0);
/// Timebase when the watchdog was armed.
static WATCHDOG_ARMED_AT: AtomicU64 = AtomicU64::new(0);
/// The crash-path step the watched CPU is in (index into `STAGES`).
static STAGE: AtomicUsize = AtomicUsize::new(0);

/// Crash-path steps, for the report.
pub const STAGES: [&str; 4] = [
    "crash entry",
    "printk(\"IPI complete\")",
    "masking interrupts through RTAS",
    "switchover",
];

/// Arms the watchdog on the calling (crashing) CPU: `ms` milliseconds from now.
pub fn arm_watchdog(ms: u64) {
    let now = timebase::now();
    WATCHDOG_ARMED_AT.store(now, Ordering::Relaxed);
    WATCHDOG_DEADLINE.store(
        now.wrapping_add(timebase::us_to_ticks(ms * 1000)),
        Ordering::Relaxed,
    );
    WATCHDOG_CPU.store(percpu::this_cpu_index() + 1, Ordering::Relaxed);
}

/// Records the crash-path step (an index into `STAGES`).
pub fn stage(i: usize) {
    STAGE.store(i, Ordering::Relaxed);
}

/// Called on every spin iteration: on the watched CPU, once the deadline has passed, reports the
/// deadlock on `lock` held by `holder` and powers off.
fn watchdog_check(lock: &str, holder: Option<usize>) {
    let me = percpu::this_cpu_index() + 1;
    if WATCHDOG_CPU.load(Ordering::Relaxed) != me {
        return;
    }
    let dl = WATCHDOG_DEADLINE.load(Ordering::Relaxed);
    if dl == 0 || (timebase::now().wrapping_sub(dl) as i64) < 0 {
        return;
    }
    report_deadlock(lock, holder)
}

/// Spins for a lock word (0 = free, owner + 1 otherwise) under the watchdog.
fn spin_lock(lock: &AtomicUsize, name: &str) {
    let me = percpu::this_cpu_index() + 1;
    loop {
        // Test, then test-and-set: waiters spin on a plain load, not on the reservation.
        let held = lock.load(Ordering::Relaxed);
        // Acquire pairs with the Release store in `spin_unlock`.
        if held == 0
            && lock
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        watchdog_check(name, held.checked_sub(1));
        core::hint::spin_loop();
    }
}

fn spin_unlock(lock: &AtomicUsize) {
    // Release pairs with the Acquire in `spin_lock`.
    lock.store(0, Ordering::Release);
}

/// The 2020 printk: the record goes into the log buffer under `logbuf_lock`, interrupts off.
pub fn printk(args: fmt::Arguments<'_>) {
    let ee = smp::msr() & smp::MSR_EE != 0;
    irq::disable();
    spin_lock(&LOGBUF_LOCK, "logbuf_lock");
    let _ = LOG.log_fmt(Level::Info, 0, args);
    spin_unlock(&LOGBUF_LOCK);
    if ee {
        irq::enable();
    }
}

/// Scenario: takes `logbuf_lock` for good (the caller then parks mid-write, holding it).
pub fn hold_logbuf_lock() {
    spin_lock(&LOGBUF_LOCK, "logbuf_lock");
}

/// The 2020 mask path: wait for the RTAS lock like any spinlock (under the watchdog), then mask.
pub fn mask_through_rtas_locked(sources: &[u32]) -> usize {
    rtas::lock_watched(&mut |holder| watchdog_check("rtas_lock", holder));
    let me = percpu::this_cpu_index();
    let mut n = 0;
    for &irq in sources {
        rtas::RTAS_LOCK.enter_call(me);
        // SAFETY: we hold the RTAS lock (taken just above), so the shared buffer is ours.
        let st = unsafe { rtas::int_off_with(rtas::shared_buffer(), irq) };
        rtas::RTAS_LOCK.leave_call(me);
        if st == rtas::SUCCESS {
            n += 1;
        }
    }
    rtas::unlock();
    n
}

/// Raw console output for the watchdog's last words: the hypervisor terminal call only, no lock.
struct Raw;
impl fmt::Write for Raw {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console::write_bytes(s.as_bytes());
        Ok(())
    }
}

fn report_deadlock(lock: &str, holder: Option<usize>) -> ! {
    let waited = timebase::ticks_to_us(
        timebase::now().wrapping_sub(WATCHDOG_ARMED_AT.load(Ordering::Relaxed)),
    ) / 1000;
    let me = percpu::this_cpu_index();
    let stage = STAGES
        .get(STAGE.load(Ordering::Relaxed))
        .copied()
        .unwrap_or("?");
    let _ = writeln!(
        Raw,
        "watchdog: CPU {me} stuck for {waited} ms in the crash path at {stage}"
    );
    match holder {
        Some(h) => {
            let checked_in = checked_in(h);
            let _ = writeln!(
                Raw,
                "watchdog: deadlock: {lock} is held by CPU {h}, which {} (NMI check-in {}); it will never release it",
                if checked_in { "the NMI IPI stopped" } else { "is not running normally" },
                if checked_in { "received" } else { "missing" },
            );
            let _ = writeln!(Raw, "capture: deadlock lock={lock} holder={h}");
        }
        None => {
            let _ = writeln!(Raw, "capture: deadlock lock={lock} holder=unknown");
        }
    }
    // Every other CPU is parked by the NMI; the RTAS lock may be held by one of them, so power off
    // through the crash buffer without it (the watchdog's reset: the last thing that runs).
    power_off_crash()
}

/// The locked 2020 design's crash path: the NMI IPI and a bounded wait as before, but its messages go
/// through `logbuf_lock` and its masking waits for the RTAS lock. The watchdog ends it when it
/// deadlocks.
pub fn crash(reason: &str) -> ! {
    arm_watchdog(1000);
    stage(0);
    let me = percpu::this_cpu_index();
    // Crash state on, so the stopped CPUs' NMI handlers check in (their "stopped" records go to the
    // per-CPU NMI path, as 2020's printk_nmi did).
    let _ = LOG.crash_enter();
    let ncpus = nmilog::Platform::cpu_count(LOG.platform());
    MACHINE.nmi_ipi_all_but_self(me);
    let d = timebase::Deadline::after_us(CHECKIN_TIMEOUT_NS / 1000);
    while (0..ncpus).any(|c| c != me && !checked_in(c)) && !d.expired() {
        core::hint::spin_loop();
    }
    stage(1);
    printk(format_args!("IPI complete"));
    stage(2);
    let (srcs, n) = sources();
    let masked = mask_through_rtas_locked(&srcs[..n]);
    printk(format_args!(
        "crash: CPU {me}: {reason} (locked baseline); {masked} interrupt sources masked via rtas"
    ));
    stage(3);
    // No deadlock (nothing was held): the 2020 design would now switch over; here the run ends.
    nmilog::pr_emerg!("kexec: Starting switchover sequence.");
    console::write_bytes(
        b"crash: the locked baseline did not deadlock (no lock was held)\ncapture: no-deadlock\n",
    );
    power_off_crash()
}
