//! The normal-context flush: who may merge the rings into the main log, and when.
//!
//! Contract: one CPU at a time owns the flush. A CPU in normal context (task or irq, no crash) takes
//! ownership with one compare-exchange or leaves; it never waits for the owner. A CPU that finds the
//! flush owned sets `pending`, and the owner looks again before it leaves (the `pending` hand-off,
//! LMM(pending:A/B)), so no record appended before a flush attempt waits for the next log call. The
//! merge itself is in `merge.rs`; the crash drain takes ownership without consent (`crash.rs`). The
//! [`FlushHook`] types let test harnesses stop a flush between the steps of a journaled move, as a
//! CPU frozen there would be.

use super::merge::MergeMode;
use super::Log;
use crate::ring::{NoHook, WriteStep};
use crate::sync::Ordering;
use crate::Platform;

/// What one flush or drain did.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{FlushPolicy, FlushReport, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"one").unwrap();
/// LOG.append(Level::Info, 0, 0, b"two").unwrap();
/// let rep: FlushReport = LOG.flush().unwrap();
/// assert_eq!((rep.moved, rep.overwritten, rep.torn), (2, 0, 0));
/// assert!(rep.steps >= 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Records moved from the rings into the main log.
    pub moved: u64,
    /// Records found overwritten in a ring before the flush could read them.
    pub overwritten: u64,
    /// Records found frozen mid-write (crash drain only).
    pub torn: u64,
    /// Bounded steps taken (each a read or a peek of one record).
    pub steps: u64,
}

/// Steps of one journaled move from a CPU ring into the main log, for [`FlushHook`]s.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{FlushPolicy, FlushStep, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// use nmilog::ring::WriteStep;
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"hi").unwrap();
/// let mut steps = Vec::new();
/// LOG.flush_with_hook(&mut |s: FlushStep| { steps.push(s); true }).unwrap();
/// assert_eq!(steps.first(), Some(&FlushStep::Journaled));
/// assert!(steps.contains(&FlushStep::Main(WriteStep::Committed)));
/// assert_eq!(steps.last(), Some(&FlushStep::Done));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushStep {
    /// The journal entry is written; the main-log append has not started.
    Journaled,
    /// A step of the append into the main log.
    Main(WriteStep),
    /// The source cursor has been advanced; the journal is still set.
    CursorStored,
    /// The journal entry is cleared.
    Done,
}

/// Called between the steps of a journaled move (test harnesses); `false` stops the flush there, as a
/// CPU frozen at that point would.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{FlushPolicy, FlushStep, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// use nmilog::ring::WriteStep;
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"moved once").unwrap();
/// // The flush owner is stopped right after the main-log commit, with the journal still set.
/// let mut freeze = |s: FlushStep| s != FlushStep::Main(WriteStep::Committed);
/// LOG.flush_with_hook(&mut freeze);
/// LOG.crash_enter().unwrap();
/// let rep = LOG.drain_on_crash();
/// assert!(rep.repaired_move); // the journal completed the move...
/// assert_eq!(rep.flush.moved, 0); // ...so the record is not moved twice
/// assert_eq!(LOG.main().next_seq(), 1);
/// ```
pub trait FlushHook {
    /// Called after `step`.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushPolicy, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// use nmilog::{FlushHook, FlushStep};
    /// struct CountMoves(usize);
    /// impl FlushHook for CountMoves {
    ///     fn step(&mut self, step: FlushStep) -> bool {
    ///         if step == FlushStep::Done {
    ///             self.0 += 1;
    ///         }
    ///         true // never freeze
    ///     }
    /// }
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"a").unwrap();
    /// LOG.append(Level::Info, 0, 0, b"b").unwrap();
    /// let mut hook = CountMoves(0);
    /// let rep = LOG.flush_with_hook(&mut hook).unwrap();
    /// assert_eq!((hook.0, rep.moved), (2, 2)); // one journaled move per record
    /// assert_eq!(LOG.main().next_seq(), 2);
    /// ```
    fn step(&mut self, step: FlushStep) -> bool;
}

impl FlushHook for NoHook {
    #[inline(always)]
    fn step(&mut self, _: FlushStep) -> bool {
        true
    }
}

impl<F: FnMut(FlushStep) -> bool> FlushHook for F {
    fn step(&mut self, step: FlushStep) -> bool {
        self(step)
    }
}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Whether the calling context may touch the main log and consoles.
    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    fn normal_context(&self) -> Option<usize> {
        if self.crash_cpu.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let (cpu, pc) = self.cpu_slot()?;
        if pc.nmi_safe_only() {
            return None;
        }
        Some(cpu)
    }

    /// Normal-context flush: takes flush ownership if it is free (never waits for it) and merges the
    /// rings into the main log. Returns `None` if called from NMI or crash context, during a crash, or
    /// if another CPU owns the flush (which is then told to look again before it leaves).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushPolicy, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"a").unwrap();
    /// LOG.append(Level::Info, 0, 0, b"b").unwrap();
    /// assert_eq!(LOG.flush().map(|r| r.moved), Some(2));
    /// assert_eq!(LOG.flush().map(|r| r.moved), Some(0)); // nothing left
    /// LOG.nmi_enter();
    /// assert_eq!(LOG.flush(), None); // never from NMI context
    /// LOG.nmi_exit();
    /// ```
    #[cfg(nmilog_cas)]
    pub fn flush(&self) -> Option<FlushReport> {
        self.flush_hooked(&mut NoHook)
    }

    /// The body of `flush_with_hook` (public with the `steps` feature).
    #[cfg(nmilog_cas)]
    pub(crate) fn flush_hooked<H: FlushHook>(&self, hook: &mut H) -> Option<FlushReport> {
        let cpu = self.normal_context()?;
        let mut total = FlushReport::default();
        let mut owned = false;
        // Bounded: at most four rounds, each one bounded by the ring sizes.
        for _ in 0..4 {
            if !self.try_own_flush(cpu) {
                // LMM(pending:A): SeqCst store, then one more try (SeqCst), pairs with the owner's
                // SeqCst release and `pending` swap (LMM(pending:B)): either the owner sees the flag
                // and looks again, or this CPU sees the owner gone and takes over.
                self.main.pending.store(1, Ordering::SeqCst);
                if !self.try_own_flush(cpu) {
                    break;
                }
                self.main.pending.store(0, Ordering::Relaxed);
            }
            owned = true;
            let (rep, completed) = self.flush_owned(MergeMode::Flush, hook);
            total.moved += rep.moved;
            total.overwritten = total.overwritten.wrapping_add(rep.overwritten);
            total.torn += rep.torn;
            total.steps += rep.steps;
            if !completed {
                // A hook froze the flush: ownership stays with the "frozen" CPU, as it would.
                return Some(total);
            }
            // LMM(owner:B): pairs with LMM(owner:A); SeqCst with the swap for LMM(pending:B).
            self.main.owner.store(0, Ordering::SeqCst);
            if self.main.pending.swap(0, Ordering::SeqCst) == 0 {
                break;
            }
        }
        if !owned {
            return None;
        }
        self.run_console_hook();
        Some(total)
    }

    /// [`flush`](Self::flush) with a hook between the steps of each move (test harnesses).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushPolicy, FlushStep, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"x").unwrap();
    /// // Freeze the owner right after it journaled its first move.
    /// let rep = LOG.flush_with_hook(&mut |s: FlushStep| s != FlushStep::Journaled).unwrap();
    /// assert_eq!(rep.moved, 0);
    /// assert_eq!(LOG.flush(), None); // the "frozen" CPU still owns the flush
    /// ```
    #[cfg(all(feature = "steps", nmilog_cas))]
    pub fn flush_with_hook<H: FlushHook>(&self, hook: &mut H) -> Option<FlushReport> {
        self.flush_hooked(hook)
    }

    /// One attempt to take flush ownership for `cpu`. LMM(owner:A): pairs with LMM(owner:B), the
    /// previous owner's release, so this owner sees the consumer cursors and main-log state it left
    /// (SeqCst also for LMM(pending:A)).
    #[cfg(nmilog_cas)]
    fn try_own_flush(&self, cpu: usize) -> bool {
        self.main
            .owner
            .compare_exchange(0, cpu + 1, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }
}
