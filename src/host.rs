//! The `std` host platform: threads register as CPUs; the clock is the TSC on x86-64 where it is
//! invariant (`constant_tsc nonstop_tsc`) and the kernel's own clocksource (so the kernel found it
//! synchronised across CPUs), converted to nanoseconds with a factor calibrated once against the
//! monotonic clock; the monotonic clock otherwise.
//!
//! Signal handlers can log through it: the CPU number is a const-initialised thread-local `Cell`
//! (no lazy initialisation, no destructor) and the clock read is a single instruction plus a multiply.
//!
//! ```
//! use nmilog::{host::HostPlatform, AppendError, Level, Log, RecordBuf};
//! static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
//! // A thread that never registered is not a CPU: its log calls are refused and counted.
//! assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"who am I?"), Err(AppendError::BadCpu));
//! assert_eq!(LOG.bad_cpu_dropped(), 1);
//! std::thread::spawn(|| {
//!     HostPlatform::register_cpu(1);
//!     LOG.log_fmt(Level::Info, 0, format_args!("from cpu 1")).unwrap();
//! })
//! .join()
//! .unwrap();
//! HostPlatform::register_cpu(0);
//! LOG.log_fmt(Level::Info, 0, format_args!("from cpu 0")).unwrap();
//! let (mut reader, mut rec) = (LOG.main_reader(), RecordBuf::new());
//! reader.read(&LOG, &mut rec);
//! let (cpu, ts) = (rec.header.cpu, rec.header.ts_ns);
//! assert_eq!((cpu, rec.text()), (1, Some("from cpu 1")));
//! reader.read(&LOG, &mut rec);
//! assert_eq!((rec.header.cpu, rec.text()), (0, Some("from cpu 0")));
//! assert!(rec.header.ts_ns >= ts); // one clock for every thread
//! ```

use core::cell::Cell;
// A `std` atomic, not `crate::sync`'s: this is a platform (a user of the core, like the models'
// own platform), its `static`s need a `const` constructor, and loom has nothing to check here.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::Platform;

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The host platform.
///
/// ```
/// use nmilog::host::HostPlatform;
/// use nmilog::Platform;
/// static P: HostPlatform = HostPlatform::new(4);
/// HostPlatform::register_cpu(2);
/// assert_eq!(P.cpu_id(), 2);
/// let a = P.now_ns();
/// assert!(P.now_ns() >= a);
/// ```
#[derive(Debug)]
pub struct HostPlatform {
    cpus: AtomicUsize,
}

impl HostPlatform {
    /// A host platform with `cpus` CPUs (change later with [`set_cpu_count`](Self::set_cpu_count)).
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Platform};
    /// static P: HostPlatform = HostPlatform::new(8); // `const`: fine in a `static`
    /// assert_eq!(P.cpu_count(), 8);
    /// ```
    pub const fn new(cpus: usize) -> Self {
        HostPlatform {
            cpus: AtomicUsize::new(cpus),
        }
    }

    /// Sets the number of CPUs (before logging starts).
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, AppendError, Level, Log};
    /// static LOG: Log<HostPlatform, 4, 256, 1024> = Log::new(HostPlatform::new(4));
    /// LOG.platform().set_cpu_count(2); // only two CPUs came up
    /// HostPlatform::register_cpu(3);
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"hi"), Err(AppendError::BadCpu));
    /// ```
    pub fn set_cpu_count(&self, cpus: usize) {
        self.cpus.store(cpus, Ordering::Relaxed);
    }

    /// Makes the calling thread CPU `cpu`. Also calibrates the clock (once per process).
    ///
    /// ```
    /// use nmilog::host::HostPlatform;
    /// let cpu = std::thread::spawn(|| {
    ///     HostPlatform::register_cpu(1); // this thread is CPU 1 from now on
    ///     HostPlatform::current_cpu()
    /// });
    /// HostPlatform::register_cpu(0);
    /// assert_eq!(cpu.join().unwrap(), 1);
    /// assert_eq!(HostPlatform::current_cpu(), 0);
    /// ```
    pub fn register_cpu(cpu: usize) {
        calibration();
        CPU.with(|c| c.set(cpu));
    }

    /// The calling thread's CPU number, or `usize::MAX` if it never registered.
    ///
    /// ```
    /// use nmilog::host::HostPlatform;
    /// assert_eq!(HostPlatform::current_cpu(), usize::MAX); // not registered yet
    /// HostPlatform::register_cpu(3);
    /// assert_eq!(HostPlatform::current_cpu(), 3);
    /// ```
    #[inline]
    pub fn current_cpu() -> usize {
        // `try_with` rather than `LocalKey::get`: the cell (const-initialised, no destructor) is
        // always accessible, but `get` carries a panic path that costs the NMI path five
        // instructions per call (callgrind, examples/latency --single).
        CPU.try_with(|c| c.get()).unwrap_or(usize::MAX)
    }

    /// Nanoseconds since the process's clock epoch.
    ///
    /// ```
    /// use nmilog::host::HostPlatform;
    /// let t0 = HostPlatform::clock_ns();
    /// std::thread::sleep(std::time::Duration::from_millis(2));
    /// assert!(HostPlatform::clock_ns() - t0 >= 1_000_000);
    /// ```
    pub fn clock_ns() -> u64 {
        let cal = calibration();
        cal.now()
    }
}

impl Platform for HostPlatform {
    #[inline]
    fn cpu_id(&self) -> usize {
        Self::current_cpu()
    }
    #[inline]
    fn now_ns(&self) -> u64 {
        // `calibration()` is initialised by `register_cpu`, before any CPU logs, so this is a load.
        match CAL.get() {
            Some(c) => c.now(),
            None => 0,
        }
    }
    #[inline]
    fn cpu_count(&self) -> usize {
        self.cpus.load(Ordering::Relaxed)
    }
}

struct Calibration {
    epoch: Instant,
    #[cfg(target_arch = "x86_64")]
    tsc0: u64,
    /// Nanoseconds per TSC tick, as a 32.32 fixed-point factor (0: use the monotonic clock).
    #[cfg(target_arch = "x86_64")]
    mult: u64,
}

static CAL: OnceLock<Calibration> = OnceLock::new();

fn calibration() -> &'static Calibration {
    CAL.get_or_init(|| {
        let epoch = Instant::now();
        #[cfg(target_arch = "x86_64")]
        {
            // The TSC only where it is invariant *and* the kernel itself trusts it as the system
            // clocksource: the kernel checks that the CPUs' TSCs are synchronised before it picks
            // `tsc` (a VM whose vCPUs' TSCs disagree runs on kvm-clock or hpet instead), and log
            // records from different CPUs are merged by these timestamps.
            let invariant = std::fs::read_to_string("/proc/cpuinfo")
                .map(|s| s.contains("constant_tsc") && s.contains("nonstop_tsc"))
                .unwrap_or(false);
            let trusted = std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .map(|s| s.trim() == "tsc")
            .unwrap_or(false);
            let tsc_ok = invariant && trusted;
            let tsc0 = rdtsc();
            let mut mult = 0;
            if tsc_ok {
                let t0 = Instant::now();
                let c0 = rdtsc();
                std::thread::sleep(std::time::Duration::from_millis(20));
                let c1 = rdtsc();
                let ns = t0.elapsed().as_nanos() as u64;
                let ticks = c1.wrapping_sub(c0).max(1);
                mult = (((ns as u128) << 32) / ticks as u128) as u64;
            }
            Calibration { epoch, tsc0, mult }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Calibration { epoch }
        }
    })
}

impl Calibration {
    #[inline]
    fn now(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.mult != 0 {
            let d = rdtsc().wrapping_sub(self.tsc0);
            return ((d as u128 * self.mult as u128) >> 32) as u64;
        }
        self.epoch.elapsed().as_nanos() as u64
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects and is available on every x86-64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}
