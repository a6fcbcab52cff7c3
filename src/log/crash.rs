//! The crash-time drain: on the crashing CPU, with every other CPU stopped, everything still in the
//! rings goes into the main log, and what was lost is written there too.
//!
//! Contract (see [`Log::drain_on_crash`]): flush ownership is taken over without the owner's consent
//! (a plain store, no CAS, never waits), so the previous owner must never run again; the move it may
//! have left half-done is completed or redone through the journal (`journal.rs`); the merge
//! (`merge.rs`, [`MergeMode::CrashDrain`]) counts records frozen mid-write as torn; then one
//! accounting record per ring with unreported losses is written (`accounting.rs`). The work is
//! bounded ([`DrainReport::bound`]); a drain interrupted by a nested crash is superseded by the
//! nested one, and no record is delivered twice.

use super::flush::{FlushHook, FlushReport};
use super::merge::MergeMode;
use super::{Log, OWNER_TAKEN_OVER};
use crate::ring::NoHook;
use crate::sync::{signal_fence, Ordering};
use crate::Platform;

/// What [`Log::drain_on_crash`] did.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{DrainReport, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.append_raw(Level::Emerg, 0, 0, b"Oops: 0000 [#1] SMP").unwrap();
/// LOG.crash_enter().unwrap();
/// let rep: DrainReport = LOG.drain_on_crash();
/// assert_eq!(rep.flush.moved, 1);
/// assert_eq!(rep.took_over_from, None); // nobody owned the flush
/// assert!(!rep.repaired_move);
/// assert_eq!(rep.accounting_records, 0); // nothing was lost
/// assert!(rep.flush.steps <= rep.bound);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// The merge itself.
    pub flush: FlushReport,
    /// The CPU that held flush ownership when the drain took it over, if another one did.
    pub took_over_from: Option<usize>,
    /// Whether a move into the main log left half-done by a stopped owner was completed (the record
    /// was committed: its ring cursor was advanced) — otherwise such a move is simply redone.
    pub repaired_move: bool,
    /// Accounting records written.
    pub accounting_records: u64,
    /// The most steps this drain could have taken, whatever state the rings were in.
    pub bound: u64,
}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// The crash-time drain. Call it on the crashing CPU (after [`crash_enter`](Self::crash_enter))
    /// once every other CPU is stopped or declared dead.
    ///
    /// **Contract** (as for nbcon's panic takeover): flush ownership is taken without the owner's
    /// consent, so the owner must never run again. A CPU that did not stop and keeps logging only ever
    /// touches its own rings (the crash flag puts it on the NMI path), but a CPU that did not stop *in
    /// the middle of a flush* may still write into the main log; that is outside the contract and
    /// costs at most that flush's records (never memory safety).
    ///
    /// Never spins: a bounded number of steps ([`DrainReport::bound`]), no lock, no waiting. Idempotent
    /// and safe to call again from a nested crash (a fault inside the crash path): a drain interrupted
    /// half-way is repaired through the move journal, and no record is delivered twice. The nested
    /// crash must not *return* into the interrupted drain (crash paths never return): the interrupted
    /// drain's local state is stale by then, and resuming it would rewind the main log.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Level, Log, RecordBuf, ring::Read};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// std::thread::spawn(|| {
    ///     HostPlatform::register_cpu(1);
    ///     LOG.nmi_enter(); // the crash IPI; CPU 1 never leaves it
    ///     LOG.append_raw(Level::Emerg, 0, 0, b"CPU 1 stopping").unwrap();
    /// }).join().unwrap();
    /// HostPlatform::register_cpu(0);
    /// LOG.crash_enter().unwrap();
    /// assert_eq!(LOG.drain_on_crash().flush.moved, 1);
    /// let (mut reader, mut rec) = (LOG.main_reader(), RecordBuf::new());
    /// assert_eq!(reader.read(&LOG, &mut rec), Read::Record);
    /// assert_eq!((rec.header.cpu, rec.text()), (1, Some("CPU 1 stopping")));
    /// ```
    pub fn drain_on_crash(&self) -> DrainReport {
        self.drain_on_crash_hooked(&mut NoHook)
    }

    /// The body of `drain_on_crash_with_hook` (public with the `steps` feature).
    pub(crate) fn drain_on_crash_hooked<H: FlushHook>(&self, hook: &mut H) -> DrainReport {
        let me = self.platform.cpu_id();
        let m = &*self.main;
        let mut report = DrainReport {
            bound: self.drain_step_bound(),
            ..DrainReport::default()
        };
        // Hostile takeover: a plain store (no CAS: works on every target, and never waits).
        let prev = m.owner.load(Ordering::Acquire);
        m.owner
            .store(me.wrapping_add(1) | OWNER_TAKEN_OVER, Ordering::Release);
        let prev_cpu = (prev & !OWNER_TAKEN_OVER).wrapping_sub(1);
        if prev != 0 && prev_cpu != me {
            report.took_over_from = Some(prev_cpu);
        }
        let gen = m.drain_gen.load(Ordering::Relaxed).wrapping_add(1);
        m.drain_gen.store(gen, Ordering::Relaxed);
        signal_fence();
        report.repaired_move = m.journal.replay(&m.ring, &m.consumers);
        let (flush, completed) = self.flush_owned(MergeMode::CrashDrain, hook);
        report.flush = flush;
        if !completed {
            return report;
        }
        report.accounting_records = self.write_accounting();
        report
    }

    /// [`drain_on_crash`](Self::drain_on_crash) with a hook between the steps of each move.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushStep, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.append_raw(Level::Emerg, 0, 0, b"last words").unwrap();
    /// LOG.crash_enter().unwrap();
    /// // A fault inside the drain stops it right after it journaled its first move...
    /// let first = LOG.drain_on_crash_with_hook(&mut |s: FlushStep| s != FlushStep::Journaled);
    /// assert_eq!(first.flush.moved, 0);
    /// // ...and the nested crash's drain finishes the job, exactly once.
    /// assert_eq!(LOG.drain_on_crash().flush.moved, 1);
    /// assert_eq!(LOG.main().next_seq(), 1);
    /// ```
    #[cfg(feature = "steps")]
    pub fn drain_on_crash_with_hook<H: FlushHook>(&self, hook: &mut H) -> DrainReport {
        self.drain_on_crash_hooked(hook)
    }
}
