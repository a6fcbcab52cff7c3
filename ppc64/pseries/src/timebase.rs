//! The timebase: a 64-bit counter shared by all CPUs, read with `mftb`. Its frequency comes from the
//! device tree (`/cpus/*/timebase-frequency`; QEMU's pseries: 512 MHz).

use core::sync::atomic::{AtomicU64, Ordering};

/// Default when the device tree does not say (QEMU pseries, POWER8/9).
pub const DEFAULT_FREQ: u64 = 512_000_000;

static FREQ: AtomicU64 = AtomicU64::new(DEFAULT_FREQ);
/// Nanoseconds per tick as a 32.32 fixed-point factor: `(10^9 << 32) / freq` (exact for 512 MHz:
/// 10^9 / 512e6 = 125/64 = 1.953125).
static NS_MULT: AtomicU64 = AtomicU64::new(ns_mult(DEFAULT_FREQ));

const fn ns_mult(hz: u64) -> u64 {
    (((1_000_000_000u128) << 32) / hz as u128) as u64
}

/// Reads the timebase.
#[inline(always)]
pub fn now() -> u64 {
    let tb: u64;
    // SAFETY: `mftb` (mfspr 268) only reads the timebase; no memory or other state is touched.
    unsafe {
        core::arch::asm!("mfspr {0}, 268", out(reg) tb, options(nomem, nostack, preserves_flags))
    };
    tb
}

/// Records the timebase frequency read from the device tree.
pub fn set_freq(hz: u64) {
    if hz != 0 {
        FREQ.store(hz, Ordering::Relaxed);
        NS_MULT.store(ns_mult(hz), Ordering::Relaxed);
    }
}

/// Converts ticks to nanoseconds (`tb * 125 / 64` at 512 MHz) with a 64x64->128 multiply (`mulld` +
/// `mulhdu`, no division and no library call: callable from NMI context).
#[inline]
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ((ticks as u128 * NS_MULT.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// The timebase in nanoseconds.
#[inline]
pub fn now_ns() -> u64 {
    ticks_to_ns(now())
}

/// Timebase ticks per second.
pub fn freq() -> u64 {
    FREQ.load(Ordering::Relaxed)
}

/// Converts ticks to microseconds.
pub fn ticks_to_us(ticks: u64) -> u64 {
    ticks / (freq() / 1_000_000).max(1)
}

/// Microseconds to ticks.
pub fn us_to_ticks(us: u64) -> u64 {
    us.saturating_mul(freq() / 1_000_000)
}

/// A deadline on the timebase.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    /// A deadline `us` microseconds from now.
    pub fn after_us(us: u64) -> Self {
        Deadline(now().wrapping_add(us_to_ticks(us)))
    }
    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        (now().wrapping_sub(self.0) as i64) >= 0
    }
}

/// Spins for `us` microseconds.
pub fn delay_us(us: u64) {
    let d = Deadline::after_us(us);
    while !d.expired() {
        core::hint::spin_loop();
    }
}
