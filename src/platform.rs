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
    ///
    /// ```
    /// use nmilog::{AppendError, Level, Log, Platform};
    /// struct Hotplugged; // reports a CPU number the logger was not sized for
    /// impl Platform for Hotplugged {
    ///     fn cpu_id(&self) -> usize { 5 }
    ///     fn now_ns(&self) -> u64 { 0 }
    ///     fn cpu_count(&self) -> usize { 2 }
    /// }
    /// static LOG: Log<Hotplugged, 2, 256, 1024> = Log::new(Hotplugged);
    /// assert_eq!(LOG.platform().cpu_id(), 5);
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"hi"), Err(AppendError::BadCpu));
    /// assert_eq!(LOG.bad_cpu_dropped(), 1);
    /// ```
    fn cpu_id(&self) -> usize;
    /// A timestamp in nanoseconds that is monotonic on each CPU and comparable across CPUs (the
    /// timebase, an invariant TSC, a monotonic clock).
    ///
    /// Every record's header carries the value read when it was written:
    ///
    /// ```
    /// use core::sync::atomic::{AtomicU64, Ordering};
    /// use nmilog::{Level, Log, Platform, RecordBuf};
    /// static NOW: AtomicU64 = AtomicU64::new(1_000);
    /// struct Clocked;
    /// impl Platform for Clocked {
    ///     fn cpu_id(&self) -> usize { 0 }
    ///     fn now_ns(&self) -> u64 { NOW.load(Ordering::Relaxed) }
    ///     fn cpu_count(&self) -> usize { 1 }
    /// }
    /// static LOG: Log<Clocked, 1, 256, 1024> = Log::new(Clocked);
    /// LOG.append(Level::Info, 0, 0, b"first").unwrap();
    /// NOW.store(2_500, Ordering::Relaxed);
    /// LOG.append(Level::Info, 0, 0, b"second").unwrap();
    /// let (mut reader, mut rec) = (LOG.main_reader(), RecordBuf::new());
    /// reader.read(&LOG, &mut rec);
    /// assert_eq!(rec.header.ts_ns, 1_000);
    /// reader.read(&LOG, &mut rec);
    /// assert_eq!((rec.header.ts_ns, rec.text()), (2_500, Some("second")));
    /// ```
    fn now_ns(&self) -> u64;
    /// How many CPUs may log (at most the `CPUS` parameter of [`crate::Log`]).
    ///
    /// ```
    /// use core::sync::atomic::{AtomicUsize, Ordering};
    /// use nmilog::{AppendError, Level, Log, Platform};
    /// static CPU: AtomicUsize = AtomicUsize::new(0);
    /// struct TwoOfFour; // four CPU slots, two populated
    /// impl Platform for TwoOfFour {
    ///     fn cpu_id(&self) -> usize { CPU.load(Ordering::Relaxed) }
    ///     fn now_ns(&self) -> u64 { 0 }
    ///     fn cpu_count(&self) -> usize { 2 }
    /// }
    /// static LOG: Log<TwoOfFour, 4, 256, 1024> = Log::new(TwoOfFour);
    /// CPU.store(1, Ordering::Relaxed);
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"cpu 1"), Ok(0));
    /// CPU.store(2, Ordering::Relaxed); // below `CPUS`, but not below `cpu_count()`
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"cpu 2"), Err(AppendError::BadCpu));
    /// ```
    fn cpu_count(&self) -> usize;

    /// The calling context as the kernel itself tracks it (Linux's `preempt_count`), if it does:
    /// `Some((kind, depth))` — the innermost kind, and the nesting depth (task 0; each interrupt
    /// that lands adds at least one until it returns; softirq, hardirq, NMI, nested NMI or machine
    /// check: 1, 2, 3, 4). A kernel that has this needs no second bracket around its handlers: the
    /// log's own (`irq_enter`, `nmi_enter`, …) are for kernels that do not — with this hook they do
    /// nothing, so a portable handler that brackets itself anyway counts no level twice — and only the
    /// crash entry adds a level on top of what this reports. Report always or never (not `None` at
    /// some moments and `Some` at others). Report `Nmi` as the kind whenever any enclosing
    /// context is an NMI (the call must stay on the NMI-safe path). Default: `None` (the log's own
    /// tracking).
    ///
    /// ```
    /// use core::sync::atomic::{AtomicUsize, Ordering};
    /// use nmilog::{ContextKind, Level, Log, Platform};
    /// static PREEMPT_COUNT: AtomicUsize = AtomicUsize::new(0); // the kernel's own bookkeeping
    /// const HARDIRQ: usize = 1 << 16;
    /// const NMI: usize = 1 << 20;
    /// struct Kernel;
    /// impl Platform for Kernel {
    ///     fn cpu_id(&self) -> usize { 0 }
    ///     fn now_ns(&self) -> u64 { 0 }
    ///     fn cpu_count(&self) -> usize { 1 }
    ///     fn context(&self) -> Option<(ContextKind, usize)> {
    ///         let pc = PREEMPT_COUNT.load(Ordering::Relaxed);
    ///         Some(if pc & NMI != 0 {
    ///             (ContextKind::Nmi, 3)
    ///         } else if pc & HARDIRQ != 0 {
    ///             (ContextKind::Irq, 2)
    ///         } else {
    ///             (ContextKind::Task, 0)
    ///         })
    ///     }
    /// }
    /// static LOG: Log<Kernel, 1, 256, 1024> = Log::new(Kernel);
    /// PREEMPT_COUNT.store(HARDIRQ, Ordering::Relaxed); // the kernel entered an interrupt handler
    /// LOG.append(Level::Info, 0, 0, b"no bracket needed").unwrap();
    /// assert_eq!(LOG.context(), Some((ContextKind::Irq, 2)));
    /// assert_eq!(LOG.cpu(0).unwrap().rings[2].next_seq(), 1);
    /// ```
    fn context(&self) -> Option<(crate::ContextKind, usize)> {
        None
    }

    /// The task (thread) running the caller, if the kernel has one to name (Linux's `caller=T123`
    /// in `/dev/kmsg`): asked only in task context. Default: `None` (records then name the CPU).
    ///
    /// ```
    /// use nmilog::{Level, Log, Platform, RecordBuf};
    /// struct Kernel;
    /// impl Platform for Kernel {
    ///     fn cpu_id(&self) -> usize { 0 }
    ///     fn now_ns(&self) -> u64 { 0 }
    ///     fn cpu_count(&self) -> usize { 1 }
    ///     fn task_id(&self) -> Option<u32> { Some(123) } // `current->pid`
    /// }
    /// static LOG: Log<Kernel, 1, 256, 1024> = Log::new(Kernel);
    /// LOG.append(Level::Info, 0, 0, b"from a task").unwrap();
    /// let mut rec = RecordBuf::new();
    /// LOG.main_reader().read(&LOG, &mut rec);
    /// assert_eq!(rec.header.caller(), nmilog::record::Caller::Task(123));
    /// ```
    fn task_id(&self) -> Option<u32> {
        None
    }
}

impl<P: Platform + ?Sized> Platform for &P {
    fn context(&self) -> Option<(crate::ContextKind, usize)> {
        (**self).context()
    }
    fn task_id(&self) -> Option<u32> {
        (**self).task_id()
    }
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
