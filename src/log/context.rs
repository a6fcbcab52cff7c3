//! Context tracking: which CPU is calling, in which context (task, irq, NMI, crash) and at which
//! nesting depth, and the crash state.
//!
//! Contract: context entry and exit are per-CPU and touch only the calling CPU's [`PerCpu`] (plain
//! loads and stores; safe in NMI context). A CPU number the platform reports out of range is refused
//! and counted ([`Log::bad_cpu_dropped`]), never used as an index. [`Log::crash_enter`] elects one
//! crashing CPU (one compare-exchange where the target has it); once it has, every log call on every
//! CPU takes the NMI-safe path and the crash state is never left.

use core::fmt;

use super::{AppendError, Log};
use crate::percpu::PerCpu;
use crate::record::ContextKind;
use crate::sync::{add_relaxed, Ordering};
use crate::Platform;

/// Why [`Log::crash_enter`] did not make the calling CPU the crashing one.
///
/// ```
/// use nmilog::CrashEnterError;
/// let e = CrashEnterError::OtherCpu { cpu: 3 };
/// assert_eq!(e.to_string(), "CPU 3 is already crashing");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashEnterError {
    /// Another CPU entered the crash path first; the caller should behave as a stopped CPU.
    OtherCpu {
        /// The crashing CPU.
        cpu: usize,
    },
    /// The platform reported a CPU number out of range (counted in [`Log::bad_cpu_dropped`]).
    BadCpu,
}

impl fmt::Display for CrashEnterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashEnterError::OtherCpu { cpu } => write!(f, "CPU {cpu} is already crashing"),
            CrashEnterError::BadCpu => f.write_str("the CPU number is out of range"),
        }
    }
}

impl core::error::Error for CrashEnterError {}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Log calls dropped because the platform reported a CPU number out of range.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, AppendError, Level, Log};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// // This thread never called `register_cpu`: its CPU id is out of range.
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"hi"), Err(AppendError::BadCpu));
    /// assert_eq!(LOG.bad_cpu_dropped(), 1);
    /// ```
    pub fn bad_cpu_dropped(&self) -> u64 {
        self.bad_cpu.load(Ordering::Relaxed) as u64
    }

    /// Log calls made through the global macros (`pr_*!`, `printk!`) before this log was registered
    /// with [`set_global!`](crate::set_global), and log calls made to a log sized at boot before its
    /// arena was attached ([`Log::attach_arena`]): there was nowhere to put them, so they are lost, but
    /// counted (in [`global::unregistered_dropped`](crate::global::unregistered_dropped) until then)
    /// and the count handed over at registration. The crash drain reports it in an accounting record,
    /// so it is in the handover image.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// use nmilog::Log;
    /// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// nmilog::pr_info!("too early");
    /// nmilog::pr_info!("still too early");
    /// assert_eq!(nmilog::global::unregistered_dropped(), 2);
    /// nmilog::set_global!(LOG);
    /// assert_eq!(LOG.unregistered_dropped(), 2);
    /// assert_eq!(nmilog::global::unregistered_dropped(), 0);
    /// ```
    pub fn unregistered_dropped(&self) -> u64 {
        self.unregistered.load(Ordering::Relaxed) as u64
    }

    /// Adds `n` to [`unregistered_dropped`](Self::unregistered_dropped) (registration, and calls
    /// before a boot-sized log's arena is attached); see `add_relaxed`.
    pub(crate) fn add_unregistered(&self, n: usize) {
        add_relaxed(&self.unregistered, n);
    }

    fn count_bad_cpu(&self) {
        // Many CPUs may get here, so this one counter is shared (see `add_relaxed`).
        add_relaxed(&self.bad_cpu, 1);
    }

    /// The calling CPU and its state; a CPU id out of range is counted ([`Self::bad_cpu_dropped`]).
    pub(super) fn this_cpu(&self) -> Result<(usize, &PerCpu<RING_WORDS, DEPTH>), AppendError> {
        self.cpu_slot().ok_or_else(|| {
            self.count_bad_cpu();
            AppendError::BadCpu
        })
    }

    /// The calling CPU and its state, without counting a bad id (for checks made after a log call
    /// that already counted it).
    #[inline]
    pub(super) fn cpu_slot(&self) -> Option<(usize, &PerCpu<RING_WORDS, DEPTH>)> {
        let cpu = self.platform.cpu_id();
        // Two comparisons, the constant first (the same test as `cpu >= cpu_count().min(CPUS)`,
        // two instructions shorter on the NMI path).
        if cpu >= CPUS || cpu >= self.platform.cpu_count() {
            return None;
        }
        Some((cpu, &self.cpus[cpu]))
    }

    /// The calling CPU's context: the platform's report ([`Platform::context`]) if it gives one,
    /// with any level the log entered itself on top (the crash context); else the log's own
    /// tracking (its brackets).
    #[inline(always)]
    pub(super) fn context_of(&self, pc: &PerCpu<RING_WORDS, DEPTH>) -> (ContextKind, usize) {
        let (kind, depth, _) = self.context_and_source(pc);
        (kind, depth)
    }

    /// [`context_of`](Self::context_of), and whether the platform reported it (then no bracket
    /// noted the kind of the ring at that depth: the log call does).
    #[inline(always)]
    pub(super) fn context_and_source(
        &self,
        pc: &PerCpu<RING_WORDS, DEPTH>,
    ) -> (ContextKind, usize, bool) {
        let (own_kind, own_depth) = pc.context();
        match self.platform.context() {
            None => (own_kind, own_depth, false),
            Some((kind, depth)) if own_depth == 0 => (kind, depth, true),
            Some((_, depth)) => (own_kind, depth.saturating_add(own_depth), true),
        }
    }

    /// Whether the calling context must stay on the NMI-safe path (an NMI or crash context, or one
    /// nested inside one).
    pub(super) fn nmi_safe_only_on(&self, pc: &PerCpu<RING_WORDS, DEPTH>) -> bool {
        let platform = self
            .platform
            .context()
            .is_some_and(|(k, _)| k.is_nmi_safe_only());
        platform || pc.nmi_safe_only()
    }

    /// The brackets' body: enter `kind` on the calling CPU (nothing for a bad CPU id, which is
    /// counted in [`Log::bad_cpu_dropped`]). Nothing either when the platform reports the context itself
    /// ([`Platform::context`]): the kernel's own bookkeeping is the truth, and a portable handler
    /// that brackets itself (for kernels without it) must not count a level twice.
    fn bracket_enter(&self, kind: ContextKind) {
        if let Some(pc) = self.bracketed_cpu() {
            pc.enter(kind);
        }
    }

    /// Leaves the innermost context on the calling CPU (see [`bracket_enter`](Self::bracket_enter)).
    fn bracket_exit(&self) {
        if let Some(pc) = self.bracketed_cpu() {
            pc.exit();
        }
    }

    /// The calling CPU's state, if its context is tracked by the log's brackets.
    fn bracketed_cpu(&self) -> Option<&PerCpu<RING_WORDS, DEPTH>> {
        if self.platform.context().is_some() {
            return None;
        }
        self.this_cpu().ok().map(|(_, pc)| pc)
    }

    /// Enters a nested context of `kind` on the current CPU; returns a guard that leaves it.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Log, ContextKind};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// {
    ///     let _nmi = LOG.enter(ContextKind::Nmi);
    ///     assert_eq!(LOG.context(), Some((ContextKind::Nmi, 1)));
    /// }
    /// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
    /// ```
    pub fn enter(&self, kind: ContextKind) -> ContextGuard<'_> {
        let pc = self.bracketed_cpu().map(|pc| {
            pc.enter(kind);
            pc as &dyn ExitContext
        });
        ContextGuard { cpu: pc }
    }

    /// `irq_enter()`: entering an interrupt handler. Pair with [`irq_exit`](Self::irq_exit).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{ContextKind, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.irq_enter();
    /// assert_eq!(LOG.context(), Some((ContextKind::Irq, 1)));
    /// LOG.append_raw(Level::Info, 0, 0, b"irq 5: spurious").unwrap(); // goes to ring 1
    /// LOG.irq_exit();
    /// assert_eq!(LOG.cpu(0).unwrap().rings[1].next_seq(), 1);
    /// ```
    pub fn irq_enter(&self) {
        self.bracket_enter(ContextKind::Irq)
    }
    /// Leaving an interrupt handler.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{ContextKind, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.irq_enter();
    /// LOG.irq_exit();
    /// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
    /// ```
    pub fn irq_exit(&self) {
        self.bracket_exit()
    }
    /// `local_bh_disable()` / `__do_softirq()` entry: entering softirq (bottom half) context. Pair
    /// with [`softirq_exit`](Self::softirq_exit).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{ContextKind, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.softirq_enter();
    /// LOG.irq_enter(); // a hardirq lands in the softirq
    /// assert_eq!(LOG.context(), Some((ContextKind::Irq, 2)));
    /// LOG.irq_exit();
    /// assert_eq!(LOG.context(), Some((ContextKind::Softirq, 1)));
    /// LOG.softirq_exit();
    /// ```
    pub fn softirq_enter(&self) {
        self.bracket_enter(ContextKind::Softirq)
    }
    /// Leaving softirq context.
    pub fn softirq_exit(&self) {
        self.bracket_exit()
    }
    /// `nmi_enter()`: entering an NMI (or machine check) handler. Pair with [`nmi_exit`](Self::nmi_exit).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.nmi_enter();
    /// LOG.log_fmt(Level::Emerg, 0, format_args!("watchdog: CPU {} stuck", 0)).unwrap();
    /// assert_eq!(LOG.main().next_seq(), 0); // NMI context: ring only, no flush
    /// LOG.nmi_exit();
    /// LOG.flush();
    /// assert_eq!(LOG.main().next_seq(), 1);
    /// ```
    pub fn nmi_enter(&self) {
        self.bracket_enter(ContextKind::Nmi)
    }
    /// Leaving an NMI handler.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{ContextKind, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.nmi_enter();
    /// LOG.nmi_exit();
    /// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
    /// ```
    pub fn nmi_exit(&self) {
        self.bracket_exit()
    }

    /// The current CPU's context kind and depth (`None` for a bad CPU id): from the platform if it
    /// reports it ([`Platform::context`]), else from the log's own brackets.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, ContextKind, Log};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// assert_eq!(LOG.context(), None); // this thread is not a CPU yet
    /// HostPlatform::register_cpu(1);
    /// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
    /// ```
    pub fn context(&self) -> Option<(ContextKind, usize)> {
        let cpu = self.platform.cpu_id();
        self.cpus.get(cpu).map(|pc| self.context_of(pc))
    }

    /// The calling CPU (in range) and its context, from one `cpu_id` (for per-context state kept
    /// outside the log, such as the defmt slots).
    #[cfg_attr(not(feature = "defmt"), allow(dead_code))]
    pub(crate) fn cpu_and_context(&self) -> Option<(usize, (ContextKind, usize))> {
        self.cpu_slot().map(|(cpu, pc)| (cpu, self.context_of(pc)))
    }

    /// Crash entry on the current CPU: from now on every log call on every CPU takes the NMI-safe
    /// path, and this CPU is in crash context (one nesting level above what it was running). Returns
    /// this CPU's number, [`CrashEnterError::OtherCpu`] if another CPU is already crashing (a crash on
    /// this CPU again is allowed: a fault inside the crash path), or [`CrashEnterError::BadCpu`] if the
    /// platform reports a CPU number out of range. The crash state is never left.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, ContextKind, CrashEnterError, Log};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// std::thread::spawn(|| {
    ///     HostPlatform::register_cpu(1);
    ///     assert_eq!(LOG.crash_enter(), Ok(1));
    ///     assert_eq!(LOG.context(), Some((ContextKind::Crash, 1)));
    /// }).join().unwrap();
    /// HostPlatform::register_cpu(0);
    /// assert_eq!(LOG.crash_enter(), Err(CrashEnterError::OtherCpu { cpu: 1 })); // already crashing
    /// assert_eq!(LOG.flush(), None); // every CPU is on the NMI-safe path now
    /// ```
    pub fn crash_enter(&self) -> Result<usize, CrashEnterError> {
        let (cpu, pc) = self.this_cpu().map_err(|_| CrashEnterError::BadCpu)?;
        // LMM(crash:A): the election's Release (the compare-exchange's release half; the store
        // without CAS), pairs with LMM(crash:B): a CPU that finds the crash begun sees what the
        // crashing CPU did before electing itself. The success's Acquire half pairs with nothing
        // (it reads the initial 0; the crash state is never left); the failure's Acquire is
        // LMM(crash:B).
        #[cfg(nmilog_cas)]
        let won =
            match self
                .crash_cpu
                .compare_exchange(0, cpu + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => true,
                Err(v) => v == cpu + 1,
            };
        #[cfg(not(nmilog_cas))]
        let won = {
            // Without CAS two CPUs crashing at the same instant are not arbitrated; the last store wins.
            // LMM(crash:B) on the load, LMM(crash:A) on the store.
            let v = self.crash_cpu.load(Ordering::Acquire);
            if v == 0 {
                self.crash_cpu.store(cpu + 1, Ordering::Release);
            }
            v == 0 || v == cpu + 1
        };
        if !won {
            return Err(CrashEnterError::OtherCpu {
                cpu: self.crash_cpu.load(Ordering::Relaxed).wrapping_sub(1),
            });
        }
        if self.platform.context().is_some() {
            // The crash's real depth is the platform's plus one: its calls note their ring's kind.
            pc.enter_on_top(ContextKind::Crash);
        } else {
            pc.enter(ContextKind::Crash);
        }
        Ok(cpu)
    }

    /// The crashing CPU, if a crash has begun.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::Log;
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// assert_eq!(LOG.crashing_cpu(), None);
    /// LOG.crash_enter().unwrap();
    /// assert_eq!(LOG.crashing_cpu(), Some(0));
    /// ```
    pub fn crashing_cpu(&self) -> Option<usize> {
        // LMM(crash:B): pairs with LMM(crash:A) in `crash_enter`: a caller that sees the crashing
        // CPU sees what that CPU did before electing itself. Inside the crate only the value is
        // used (the flush loads it Relaxed; the crash drain checks its own CPU's election).
        match self.crash_cpu.load(Ordering::Acquire) {
            0 => None,
            v => Some(v - 1),
        }
    }
}

/// What a [`ContextGuard`] needs of a CPU's state (which is generic over the ring sizes the guard
/// does not name).
trait ExitContext {
    fn exit_context(&self);
}
impl<const RING_WORDS: usize, const DEPTH: usize> ExitContext for PerCpu<RING_WORDS, DEPTH> {
    fn exit_context(&self) {
        self.exit();
    }
}

/// Leaves a context entered with [`Log::enter`] when dropped.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{ContextKind, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// fn nmi_handler(reason: u8) -> Option<u64> {
///     let _nmi = LOG.enter(ContextKind::Nmi);
///     if reason == 0 {
///         return None; // unknown NMI: the guard still leaves the context
///     }
///     LOG.append_raw(Level::Emerg, 0, 0, b"NMI").ok()
/// }
/// assert_eq!(nmi_handler(0), None);
/// assert_eq!(LOG.context(), Some((ContextKind::Task, 0)));
/// ```
pub struct ContextGuard<'a> {
    /// The CPU whose context to leave; `None` when the CPU number was out of range (nothing was
    /// entered).
    cpu: Option<&'a dyn ExitContext>,
}

/// Shows whether the guard leaves a context when dropped.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{ContextKind, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// let nmi = LOG.enter(ContextKind::Nmi);
/// assert_eq!(format!("{nmi:?}"), "ContextGuard { entered: true }");
/// ```
impl fmt::Debug for ContextGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextGuard")
            .field("entered", &self.cpu.is_some())
            .finish()
    }
}

impl Drop for ContextGuard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.cpu {
            c.exit_context();
        }
    }
}
