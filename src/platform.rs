//! What the crate needs from the machine: the current CPU, a clock comparable across CPUs, and the
//! number of CPUs.
//!
//! A kernel implements [`Platform`] once. The pseries port reads the CPU number from its per-CPU area
//! and the timebase (`mftb`, 512 MHz under QEMU) for the clock; the host port in [`crate::host`]
//! registers each thread as a CPU and reads the TSC.
//!
//! Every method is called from NMI context: none may take a lock, allocate or wait.
//!
//! ```
//! use core::sync::atomic::{AtomicU64, Ordering};
//! use nmilog::{Level, Log, Platform, RecordBuf};
//! static TICKS: AtomicU64 = AtomicU64::new(0); // a free-running 1 MHz timer
//! struct Board;
//! impl Platform for Board {
//!     fn cpu_id(&self) -> usize { 0 } // single core
//!     fn now_ns(&self) -> u64 { TICKS.load(Ordering::Relaxed) * 1000 }
//!     fn cpu_count(&self) -> usize { 1 }
//! }
//! static LOG: Log<Board, 1, 256, 1024> = Log::new(Board);
//! TICKS.store(5, Ordering::Relaxed);
//! LOG.log_fmt(Level::Info, 0, format_args!("clocks up")).unwrap();
//! let mut rec = RecordBuf::new();
//! LOG.main_reader().read(&LOG, &mut rec);
//! assert_eq!((rec.header.cpu, rec.header.ts_ns), (0, 5_000));
//! ```

/// The machine, as the logger sees it.
///
/// ```
/// use nmilog::Platform;
/// struct OneCpu;
/// impl Platform for OneCpu {
///     fn cpu_id(&self) -> usize { 0 }
///     fn now_ns(&self) -> u64 { 42 }
///     fn cpu_count(&self) -> usize { 1 }
/// }
/// assert_eq!(OneCpu.now_ns(), 42);
/// ```
pub trait Platform: Sync {
    /// The number of the CPU running the caller, `0..cpu_count()`. A value out of range makes the
    /// log call a counted drop ([`crate::Log::bad_cpu_dropped`]).
    fn cpu_id(&self) -> usize;
    /// A timestamp in nanoseconds that is monotonic on each CPU and comparable across CPUs (the
    /// timebase, an invariant TSC, a monotonic clock).
    fn now_ns(&self) -> u64;
    /// How many CPUs may log (at most the `CPUS` parameter of [`crate::Log`]).
    fn cpu_count(&self) -> usize;
}

impl<P: Platform + ?Sized> Platform for &P {
    fn cpu_id(&self) -> usize {
        (**self).cpu_id()
    }
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
    fn cpu_count(&self) -> usize {
        (**self).cpu_count()
    }
}
