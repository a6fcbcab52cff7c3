//! What the crash sequence needs from the machine.
//!
//! A port implements [`Machine`] once. Every method is called from the crash path or from an NMI
//! handler, after other CPUs may have been frozen at an arbitrary instruction, so **no method may take
//! a lock, allocate, or wait for another CPU** (a bounded spin on the hardware, such as waiting for an
//! hcall to return, is fine). The pseries port maps them to:
//!
//! | method                          | pseries (bare metal)                                          | host simulation                      |
//! |---------------------------------|---------------------------------------------------------------|--------------------------------------|
//! | [`nmi_ipi_all_but_self`]        | `H_SIGNAL_SYS_RESET(H_SIGNAL_SYS_RESET_ALL_OTHERS)`           | `tgkill(SIGUSR1)` per CPU thread      |
//! | [`now_ns`]                      | timebase (`mftb`) scaled to ns                                | TSC / monotonic clock                 |
//! | [`irq_source_count`]            | sources found in the device tree (XICS ICS)                   | one per simulated CPU, plus devices   |
//! | [`firmware_mask_source`]        | RTAS `ibm,int-off(irq)` through `KVMPPC_H_RTAS`, no lock      | firmware model (detects PAPR overlap) |
//! | [`mask_at_presenter`]           | `H_CPPR(0)` / store 0 to the ICP's CPPR: nothing is presented | CPPR model + block the timer signal   |
//! | [`system_reset_cpu`]            | `H_SIGNAL_SYS_RESET(hw id)` (escalation)                      | (default: none)                       |
//! | [`cpu_online`]                  | started CPUs; not the `maxcpus` slots never plugged           | (default: all)                        |
//! | [`flight_recorder`]             | a ring at a fixed address in the preserved region             | (default: none)                       |
//! | [`park`]                        | `or 1,1,1` / `nap` loop with `MSR[EE]=0`, forever              | `pause()` with every signal blocked   |
//! | [`kexec`]                       | copy the image to the capture kernel's region, jump           | `execv` itself with the image fd      |
//!
//! [`nmi_ipi_all_but_self`]: Machine::nmi_ipi_all_but_self
//! [`now_ns`]: Machine::now_ns
//! [`irq_source_count`]: Machine::irq_source_count
//! [`firmware_mask_source`]: Machine::firmware_mask_source
//! [`mask_at_presenter`]: Machine::mask_at_presenter
//! [`system_reset_cpu`]: Machine::system_reset_cpu
//! [`cpu_online`]: Machine::cpu_online
//! [`flight_recorder`]: Machine::flight_recorder
//! [`park`]: Machine::park
//! [`kexec`]: Machine::kexec

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::flight::FlightRecorder;
use crate::report::ShutdownReport;

/// Register state a stopped CPU saves for the dump (what `crash_save_cpu()` keeps: enough to find
/// where it was).
///
/// ```
/// use nmilog_ppc64::SavedRegs;
/// // What a CPU that never stopped reports: all zero.
/// assert_eq!(SavedRegs::default(), SavedRegs { pc: 0, sp: 0, msr: 0 });
/// let r = SavedRegs { pc: 0x1234, sp: 0x8000, ..SavedRegs::default() };
/// assert_eq!((r.pc, r.sp, r.msr), (0x1234, 0x8000, 0));
/// assert_ne!(r, SavedRegs::default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedRegs {
    /// The interrupted program counter (SRR0 on powerpc, the signal context's PC on the host).
    pub pc: usize,
    /// The interrupted stack pointer (r1).
    pub sp: usize,
    /// The interrupted machine state (SRR1 on powerpc; 0 where there is none).
    pub msr: usize,
}

/// An RTAS argument buffer: `{token, nargs, nret, args[..], rets[..]}` of 32-bit cells, as PAPR
/// defines it. Made of atomics so that one buffer can be shared by reference (the crash path owns a
/// buffer of its own in [`crate::CrashState`], so it never touches the buffer a frozen CPU may have
/// half-written). On pseries the cells are stored big-endian and the buffer must be
/// RTAS-addressable (below the RMO limit): a `static` is.
///
/// ```
/// use core::sync::atomic::Ordering::Relaxed;
/// use nmilog_ppc64::RtasArgs;
/// static ARGS: RtasArgs = RtasArgs::new();
/// // CPU 2 prepares `ibm,int-off(irq 17)`: one input, one return cell (the status).
/// ARGS.fill(2, 0x2a, &[17], 1);
/// assert_eq!(ARGS.token.load(Relaxed), 0x2a);
/// assert_eq!((ARGS.nargs.load(Relaxed), ARGS.nret.load(Relaxed)), (1, 1));
/// assert_eq!(ARGS.cells[0].load(Relaxed), 17);
/// assert_eq!(ARGS.filled_by.load(Relaxed), 2);
/// // Firmware writes the status right after the inputs.
/// ARGS.cells[1].store(0, Relaxed);
/// assert_eq!(ARGS.ret(0), 0);
/// ```
#[derive(Debug)]
pub struct RtasArgs {
    /// RTAS function token.
    pub token: AtomicU32,
    /// Number of input arguments.
    pub nargs: AtomicU32,
    /// Number of return values.
    pub nret: AtomicU32,
    /// Inputs followed by outputs (`nargs + nret <= 16`).
    pub cells: [AtomicU32; 16],
    /// The CPU that last filled the buffer (diagnostics only; `usize::MAX` if none).
    pub filled_by: AtomicUsize,
}

impl RtasArgs {
    /// An empty buffer.
    ///
    /// ```
    /// use core::sync::atomic::Ordering::Relaxed;
    /// use nmilog_ppc64::RtasArgs;
    /// static ARGS: RtasArgs = RtasArgs::new(); // `const`: fine in a `static`
    /// assert_eq!(ARGS.token.load(Relaxed), 0);
    /// assert_eq!(ARGS.nargs.load(Relaxed), 0);
    /// assert_eq!(ARGS.filled_by.load(Relaxed), usize::MAX); // nobody filled it yet
    /// ```
    pub const fn new() -> Self {
        RtasArgs {
            token: AtomicU32::new(0),
            nargs: AtomicU32::new(0),
            nret: AtomicU32::new(0),
            cells: [const { AtomicU32::new(0) }; 16],
            filled_by: AtomicUsize::new(usize::MAX),
        }
    }

    /// Fills the buffer for a call of `token` with `args` and `nret` return cells (extra arguments
    /// beyond the buffer are cut).
    ///
    /// ```
    /// use core::sync::atomic::Ordering::Relaxed;
    /// use nmilog_ppc64::RtasArgs;
    /// let args = RtasArgs::new();
    /// args.fill(1, 7, &[10, 20, 30], 2);
    /// assert_eq!(args.nargs.load(Relaxed), 3);
    /// assert_eq!(args.cells[2].load(Relaxed), 30);
    /// assert_eq!(args.filled_by.load(Relaxed), 1);
    /// // 20 arguments do not fit in 16 cells: the rest are cut.
    /// args.fill(3, 7, &[1; 20], 0);
    /// assert_eq!(args.nargs.load(Relaxed), 16);
    /// assert_eq!(args.filled_by.load(Relaxed), 3);
    /// ```
    pub fn fill(&self, cpu: usize, token: u32, args: &[u32], nret: u32) {
        let n = args.len().min(self.cells.len());
        self.token.store(token, Ordering::Relaxed);
        self.nargs.store(n as u32, Ordering::Relaxed);
        self.nret.store(nret, Ordering::Relaxed);
        for (cell, &a) in self.cells.iter().zip(&args[..n]) {
            cell.store(a, Ordering::Relaxed);
        }
        self.filled_by.store(cpu, Ordering::Relaxed);
    }

    /// Return value `i` (after the call).
    ///
    /// ```
    /// use core::sync::atomic::Ordering::Relaxed;
    /// use nmilog_ppc64::RtasArgs;
    /// let args = RtasArgs::new();
    /// args.fill(0, 9, &[5, 6], 2);
    /// // "Firmware" writes two return cells after the two inputs: status -3 and a value.
    /// args.cells[2].store(-3i32 as u32, Relaxed);
    /// args.cells[3].store(42, Relaxed);
    /// assert_eq!(args.ret(0) as i32, -3);
    /// assert_eq!(args.ret(1), 42);
    /// // A return cell past the end of the buffer reads as u32::MAX.
    /// args.fill(0, 9, &[0; 16], 1);
    /// assert_eq!(args.ret(0), u32::MAX);
    /// ```
    pub fn ret(&self, i: usize) -> u32 {
        let at = self.nargs.load(Ordering::Relaxed) as usize + i;
        self.cells
            .get(at)
            .map_or(u32::MAX, |c| c.load(Ordering::Relaxed))
    }
}

impl Default for RtasArgs {
    fn default() -> Self {
        Self::new()
    }
}

/// The stages of the crash sequence, in order (see [`crate::crash_shutdown`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashStage {
    /// Crash entry: this CPU won the crash election; the NMI IPI is about to be sent.
    Entered,
    /// The NMI IPI was sent.
    IpiSent,
    /// The check-in wait ended (every CPU answered, or the timeout passed).
    CheckInsDone,
    /// Interrupts are masked.
    Masked,
    /// The first crash drain returned.
    Drained,
    /// The handover image is about to be written (its drain's snapshot comes next).
    ImageStart,
    /// The handover image is written; the switchover comes next.
    ImageWritten,
}

impl CrashStage {
    /// Every stage, in order.
    ///
    /// ```
    /// use nmilog_ppc64::CrashStage;
    /// assert_eq!(CrashStage::ALL.first(), Some(&CrashStage::Entered));
    /// assert_eq!(CrashStage::ALL.last(), Some(&CrashStage::ImageWritten));
    /// ```
    pub const ALL: [CrashStage; 7] = [
        CrashStage::Entered,
        CrashStage::IpiSent,
        CrashStage::CheckInsDone,
        CrashStage::Masked,
        CrashStage::Drained,
        CrashStage::ImageStart,
        CrashStage::ImageWritten,
    ];
}

/// A step inside the crash sequence's drains (see [`Machine::drain_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainStep {
    /// The first crash drain (after masking) delivered its record `n` (counted from 0).
    Record(u64),
    /// The handover image writer (the final drain) reached this step.
    Image(nmilog::handover::ImageStep),
}

/// The machine, as the crash sequence sees it. See the [module docs](self) for how each port
/// implements it.
///
/// Contract for every method: callable from the crash path with other CPUs frozen anywhere; takes no
/// lock, does not allocate, never waits for another CPU.
///
/// A test machine: the "NMI IPI" runs CPU 1's NMI handler ([`crate::on_nmi_stop`]) right away on
/// the calling thread, and `park` and `kexec` — which must not return — unwind instead, `kexec`
/// carrying the handover image and the report out of [`crate::crash_shutdown`]:
///
/// ```
/// use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
/// use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
/// use nmilog::{host::HostPlatform, Log};
/// use nmilog_ppc64::*;
///
/// static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
/// static STATE: CrashState<2> = CrashState::new();
///
/// struct TestMachine {
///     firmware_calls: AtomicUsize,
/// }
///
/// impl Machine for TestMachine {
///     fn nmi_ipi_all_but_self(&self, me: usize) {
///         HostPlatform::register_cpu(1); // this thread plays CPU 1 taking the NMI
///         let regs = SavedRegs { pc: 0x1000, sp: 0x2000, msr: 0 };
///         let parked = catch_unwind(AssertUnwindSafe(|| {
///             on_nmi_stop(&LOG, self, &STATE, regs, format_args!("test"))
///         }));
///         assert!(parked.is_err()); // CPU 1 checked in and parked
///         HostPlatform::register_cpu(me);
///     }
///     fn now_ns(&self) -> u64 {
///         HostPlatform::clock_ns()
///     }
///     fn irq_source_count(&self) -> usize {
///         3
///     }
///     fn firmware_mask_source(&self, _src: usize, _args: &RtasArgs) -> Result<(), i32> {
///         self.firmware_calls.fetch_add(1, Relaxed);
///         Ok(())
///     }
///     fn mask_at_presenter(&self) {}
///     fn park(&self) -> ! {
///         panic_any("parked")
///     }
///     fn kexec<const CPUS: usize>(&self, image: &[u8], report: &ShutdownReport<CPUS>) -> ! {
///         panic_any((image.to_vec(), *report))
///     }
/// }
///
/// # std::panic::set_hook(Box::new(|_| {})); // quiet unwinding
/// HostPlatform::register_cpu(0);
/// let m = TestMachine { firmware_calls: AtomicUsize::new(0) };
/// let rtas = RtasLock::new();
/// let mut image = vec![0u8; nmilog::handover::max_image_size(2, 4, 1024, 8192)];
/// let cfg = ShutdownConfig::new();
/// let switched = catch_unwind(AssertUnwindSafe(|| {
///     crash_shutdown(&LOG, &m, &STATE, &rtas, &mut image, &cfg, format_args!("test"))
/// }));
/// let payload = switched.unwrap_err();
/// let (bytes, report) = *payload.downcast::<(Vec<u8>, ShutdownReport<2>)>().unwrap();
/// assert_eq!(m.firmware_calls.load(Relaxed), 3); // every source masked through "RTAS"
/// assert_eq!(report.mask.path, MaskPath::Rtas);
/// assert!(STATE.checked_in(1));
/// assert_eq!(bytes.len(), report.image_len);
/// ```
pub trait Machine: Sync {
    /// Sends the crash NMI IPI (system reset) to every CPU except `me`. Must return without waiting
    /// for the targets to take it: the crash sequence waits for check-ins itself, with a timeout.
    fn nmi_ipi_all_but_self(&self, me: usize);

    /// A clock in nanoseconds, monotonic on each CPU and comparable across CPUs (the same clock as the
    /// log's [`nmilog::Platform::now_ns`]).
    fn now_ns(&self) -> u64;

    /// Number of interrupt sources to mask before the switchover (`0..irq_source_count()`).
    fn irq_source_count(&self) -> usize;

    /// Masks interrupt source `src` through firmware (RTAS `ibm,int-off`), using `args` as the
    /// argument buffer. Called only by the crash sequence while it owns the firmware lock
    /// ([`crate::RtasLock`]) and has marked itself inside the firmware call; the implementation makes
    /// the raw call and must **not** take the lock itself. Returns the RTAS status (`Err(status)` for a
    /// nonzero one).
    fn firmware_mask_source(&self, src: usize, args: &RtasArgs) -> Result<(), i32>;

    /// Whether interrupt sources are masked through hypervisor calls that take no firmware lock
    /// (XIVE on PAPR: `H_INT_SET_SOURCE_CONFIG`), so the crash sequence masks them with
    /// [`Machine::hypervisor_mask_source`] whoever holds the RTAS lock — it still makes its RTAS
    /// lock decision (taking the lock over from a holder stopped outside the call, leaving it to one
    /// frozen inside) for what else may call firmware, and reports it. Default: `false` (XICS: only
    /// RTAS `ibm,int-off` masks a source).
    fn masks_through_hypervisor(&self) -> bool {
        false
    }

    /// Masks interrupt source `src` through the hypervisor (called only when
    /// [`Machine::masks_through_hypervisor`]; no lock held, none to take: hypervisor calls are
    /// reentrant and may overlap another CPU's RTAS call). Returns the hypervisor's status
    /// (`Err(status)` for a nonzero one). Default: `Err(-2)` (`H_FUNCTION`).
    fn hypervisor_mask_source(&self, src: usize) -> Result<(), i64> {
        let _ = src;
        Err(-2)
    }

    /// Masks every interrupt at the calling CPU's interrupt presenter (XICS: set the CPPR to 0, the
    /// most favoured priority, so no external interrupt is presented). Used when firmware cannot be
    /// called; the capture kernel resets the interrupt controller when it boots.
    fn mask_at_presenter(&self);

    /// A pause in a bounded busy wait (`cpu_relax()`; the host yields the CPU).
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// The crash sequence on the crashing CPU reached `stage` (called once per stage, in order).
    /// Must not take a lock or wait. Default: nothing. A kernel can leave a breadcrumb in preserved
    /// memory here, so that a crash path that hangs or dies can be diagnosed; the host simulation
    /// samples its ground truth.
    fn stage(&self, stage: CrashStage) {
        let _ = stage;
    }

    /// The crash sequence's drains reached `step` (called for every record of the first drain and
    /// at every step of the image writer, in order, between [`CrashStage::Masked`] and
    /// [`CrashStage::ImageWritten`]). Must not take a lock or wait. Default: nothing. The host
    /// simulation and the pseries demo make the crashing CPU die here (`--die-in-drain`), to show
    /// the log rebuilt from memory whatever point the crash path reached.
    fn drain_step(&self, step: DrainStep) {
        let _ = step;
    }

    /// Escalation: sends a system reset (the non-maskable one: `H_SIGNAL_SYS_RESET` to that CPU
    /// alone) to `cpu`, which did not answer the crash IPI within the bounded wait. Returns whether a
    /// reset was sent; must not wait for the target to take it. Default: no such reset (`false`):
    /// the sequence then reports the CPU as never answered without a second wait.
    fn system_reset_cpu(&self, cpu: usize) -> bool {
        let _ = cpu;
        false
    }

    /// Whether `cpu` was online when the crash began (Linux: `cpu_online()`). An offline CPU is sent
    /// nothing and not waited for; it is reported offline. Default: every CPU is online.
    fn cpu_online(&self, cpu: usize) -> bool {
        let _ = cpu;
        true
    }

    /// The crash flight recorder the sequence leaves its breadcrumbs in (see [`crate::flight`]), in
    /// memory the capture stage preserves. Default: none.
    fn flight_recorder(&self) -> Option<&FlightRecorder> {
        None
    }

    /// In a stopped CPU's NMI handler: the context the NMI interrupted, `(kind, depth)`, when the
    /// kernel tracks its context itself (`Platform::context`, which then already counts the NMI).
    /// Default `None`: the log's own view before the handler's `nmi_enter` is the interrupted one.
    fn interrupted_context(&self) -> Option<(nmilog::ContextKind, usize)> {
        None
    }

    /// Parks the calling CPU forever (a stopped CPU in its NMI handler, with interrupts off).
    fn park(&self) -> !;

    /// The kexec switchover: hands `image` (the serialised log) and the sequence's `report` to the
    /// capture stage and jumps there. Never returns.
    fn kexec<const CPUS: usize>(&self, image: &[u8], report: &ShutdownReport<CPUS>) -> !;
}
