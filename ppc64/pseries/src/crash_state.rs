//! The crash's shared state on this image: the portable sequence's `CrashState` (check-in flags,
//! saved registers, the crash path's own RTAS argument buffer), the interrupt sources the crash path
//! masks and where they are routed, and the check-in timeout. Read by the pseries machine, the
//! crash glue and the locked baseline's crash path alike.
//!
//! A leaf: it uses no other module of the image but `percpu` (for `MAX_CPUS`).

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use nmilog_ppc64::CrashState;

use crate::percpu::MAX_CPUS;

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
/// CPUs `0..ONLINE` are online (present in /cpus and started). Written at boot, before any crash.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Marks the first `present` CPUs online (the boot CPU and the started secondaries); the others up
/// to the log's CPU count are the `maxcpus` slots nothing is plugged into.
pub fn set_online(present: usize) {
    ONLINE.store(present.min(MAX_CPUS), Ordering::Relaxed);
}

/// Whether `cpu` is online.
pub fn online(cpu: usize) -> bool {
    cpu < ONLINE.load(Ordering::Relaxed)
}

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

/// The server the sources are routed to.
pub fn server() -> u32 {
    SERVER.load(Ordering::Relaxed)
}

/// The console's terminal number.
pub fn term() -> u32 {
    TERM.load(Ordering::Relaxed)
}

/// The `i`-th interrupt source recorded with `add_source`, if any.
pub fn source(i: usize) -> Option<u32> {
    (i < NSOURCES.load(Ordering::Relaxed)).then(|| SOURCES[i].load(Ordering::Relaxed))
}

/// How many interrupt sources were recorded.
pub fn source_count() -> usize {
    NSOURCES.load(Ordering::Relaxed)
}
