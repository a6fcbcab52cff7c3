//! The crash-time drain: on the crashing CPU, every record still in the main log or in a per-CPU ring
//! goes, in timestamp order and exactly once, into a sink the crashing CPU alone owns (the handover
//! image, a console, a pstore area) — without writing anything another CPU could also write.
//!
//! # Why read-only
//!
//! The crash sequence drains after the check-in wait whether or not every CPU checked in: a CPU deaf
//! to the NMI, a vCPU descheduled past the timeout, a CPU spinning with interrupts hard-off that later
//! recovers. Such a CPU may be in the middle of a flush — writing the main log and the consumer
//! cursors — or of a log call, and may resume at any instruction, during the drain or after it. So
//! the drain takes nothing over: it *reads* the main log and the rings (each record validated by its
//! sequence words, as any reader does) and writes only its own state ([`DrainState`], in the static
//! `Log`, written by the crashing CPU alone) and the caller's sink. This is how Linux's panic path
//! treats its ringbuffer: read, skip what is not finalized, take nothing over.
//!
//! # Exactly once
//!
//! A record can be in two places at once: in the main log (a flush moved it) and still in its ring
//! (records are not erased when moved; the owner may also have been stopped between the main-log
//! commit and the cursor store). Records carry their source: CPU, depth (in `ctx`) and `src_seq`, the
//! record's number in its ring. The drain takes a snapshot, in this order:
//!
//! 1. each consumer's `seq` (how far the flush got), loaded with Acquire — LMM(cursor:B), pairs with
//!    LMM(cursor:A): the main-log records it covers are visible to step 2;
//! 2. a scan of the main log from its oldest record up to its `next_seq` (the **main window**): for
//!    each source, one past the highest `src_seq` found in the window. With step 1 this gives each
//!    source's **threshold**: its records below it were moved (they are in the window, or were
//!    overwritten in the main log by its normal wrapping, like any old dmesg line) or counted
//!    overwritten by the flush. The count goes with the threshold: read with the cursor in step 1
//!    (`FlushState::overwritten_at_seq`) when the cursor sets it, taken from the window's highest
//!    record of the source when that record sets it — the flush stamps each record it moves with
//!    its source's count (`Header::reserved`, inside the main log only), so a flush owner that did
//!    not stop and passed overwritten records and moved more between steps 1 and 2 leaves no
//!    record neither delivered nor counted;
//! 3. each ring's `next_seq` (the **end**: records from the threshold up to it are delivered from the
//!    ring), whether a log call is in progress there, and whether the CPU is known to be stopped (it
//!    checked in, per the caller's `stopped`, or it is the crashing CPU itself).
//!
//! Then the merge engine (`merge.rs`) runs over the window (one source) and every ring from its
//! threshold to its end, and each delivered record goes to the sink. A record the flush commits to
//! the main log after step 2 is past the window and comes from its ring; one committed before is in
//! the window, and its ring copy is below the threshold. Never twice, whatever the flush owner does.
//!
//! # What is counted
//!
//! * **torn**: a log call in progress at the snapshot on a CPU known to be stopped — frozen mid-write,
//!   its record can never complete (a record committed but not yet published is delivered instead);
//! * **in flight**: a log call in progress on a CPU *not* known to be stopped, or records it published
//!   that are not visible yet: it may still complete; the next drain (for instance the one that writes
//!   the handover image) delivers it then;
//! * **overwritten**: records a ring lost before anyone merged them (found by the flush, plus the ones
//!   between a source's threshold and its oldest record, plus any lapped under the drain by a writer
//!   that did not stop);
//! * **main lost**: records overwritten in the main window *during* the drain by a flush owner that
//!   did not stop (they were in the window, so their ring copies were not taken).
//!
//! The drain ends with one accounting record per ring with losses (`nmilog: cpu 2 task (depth 0): 1
//! torn, ...`), one for main-log losses and one for log calls made before the log was registered
//! ([`Log::unregistered_dropped`]), in the sink like any other record.
//!
//! # Bounds
//!
//! Every step is one bounded look at one record; the snapshot walks are bounded by the ring sizes and
//! the merge stops before its step count could pass [`DrainReport::bound`], whatever a CPU that did
//! not stop does meanwhile. Nothing waits for anyone. A nested crash on the same CPU (a fault inside
//! the drain) may run the drain again from scratch; the interrupted drain notices (its generation
//! changed) and stops if it is ever resumed.

//!
//! # Files
//!
//! * this file: the drain's public face ([`Origin`], [`CrashSink`], [`DrainError`], [`DrainReport`],
//!   [`Log::drain_on_crash`]);
//! * `input.rs`: what a drain reads ([`DrainInput`]): the live `Log`, or a log in a memory dump
//!   ([`crate::recover`]);
//! * `state.rs`: the drain's own memory ([`DrainSource`] per source, in the static `Log` or a
//!   recovery tool's scratch) and the snapshot;
//! * `run.rs`: one drain — snapshot, merge, accounting records — over any input and memory;
//! * `sources.rs`: the drain's sources as the merge engine sees them (the main window and the rings
//!   from their thresholds), and delivery to the sink.

use core::fmt;

use super::Log;
use crate::record::RecordBuf;
use crate::Platform;

mod input;
mod run;
mod sources;
mod state;

pub(crate) use self::input::DrainInput;
pub(crate) use self::run::{counters_of, cpu_stopped, drain};
pub use self::state::DrainSource;
pub(crate) use self::state::{DrainFixed, DrainMem, DrainState};

/// Where a record of the crash drain's output comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The main log, at this main-log sequence number (a console that printed up to some main-log
    /// record skips what it already printed).
    Main {
        /// The record's sequence number in the main log.
        seq: u64,
    },
    /// A per-CPU ring: the record never reached the main log (or its main-log copy was past the
    /// drain's window).
    Ring {
        /// The CPU.
        cpu: usize,
        /// The nesting depth (which of the CPU's rings).
        depth: usize,
    },
    /// An accounting record the drain made (losses of one ring, or of the main log).
    Accounting,
}

/// Where the crash drain puts its output: called once per record, in order. Return `false` to stop
/// the drain (the output is full).
///
/// Closures `FnMut(Origin, &RecordBuf) -> bool` are sinks.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{Level, Log, Origin, RecordBuf};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.append(Level::Info, 0, 0, b"in the main log").unwrap(); // flushed at once
/// LOG.crash_enter().unwrap();
/// LOG.append(Level::Emerg, 0, 0, b"still in its ring").unwrap(); // crash: ring only
/// let mut out = Vec::new();
/// LOG.drain_on_crash(&|_| true, &mut |o: Origin, r: &RecordBuf| {
///     out.push((o, r.text().unwrap().to_string()));
///     true
/// })
/// .unwrap();
/// assert_eq!(out[0], (Origin::Main { seq: 0 }, "in the main log".to_string()));
/// assert_eq!(out[1], (Origin::Ring { cpu: 0, depth: 1 }, "still in its ring".to_string()));
/// ```
///
/// **Runs of ring words.** A sink that keeps records as the rings hold them (a flat dump, an image
/// of ring words) can take runs instead ([`runs`](CrashSink::runs) gives its [`RunSink`] side):
/// consecutive records of one ring, copied straight from the ring into room the sink lends and
/// validated once for the whole run rather than once a record, then announced; read them back with
/// [`RunRecords`](crate::ring::RunRecords). The main log's records, accounting records, and any
/// ring record a run does not take as it lies (at a wrap of its ring, or one too large for the
/// room) — with the rest of that ring's turn in the merge after it — still come through
/// [`record`](CrashSink::record), all in the one timestamp order. The drain takes runs until a
/// writer that did not stop overwrites a run under it; from then on, one record at a time.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{CrashSink, Level, Log, Origin, RecordBuf, RunSink};
/// use nmilog::ring::RunRecords;
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// /// Ring words as they lie, in a flat buffer.
/// struct Dump { words: [usize; 512], used: usize, runs: usize }
/// impl CrashSink for Dump {
///     fn record(&mut self, _: Origin, _: &RecordBuf) -> bool {
///         true // (a real dump keeps these too)
///     }
///     fn runs(&mut self) -> Option<&mut dyn RunSink> {
///         Some(self)
///     }
/// }
/// impl RunSink for Dump {
///     fn run_room(&mut self) -> &mut [usize] {
///         &mut self.words[self.used..]
///     }
///     fn run_taken(&mut self, _: Origin, words: usize, _records: usize) -> bool {
///         self.used += words;
///         self.runs += 1;
///         true
///     }
/// }
/// LOG.crash_enter().unwrap();
/// for line in ["one", "two", "three"] {
///     LOG.append(Level::Emerg, 0, 0, line.as_bytes()).unwrap();
/// }
/// let mut dump = Dump { words: [0; 512], used: 0, runs: 0 };
/// let rep = LOG.drain_on_crash(&|_| true, &mut dump).unwrap();
/// assert_eq!((rep.records, dump.runs), (3, 1)); // one run, one validation
/// let texts: Vec<String> = RunRecords::new(&dump.words[..dump.used])
///     .map(|r| r.payload_bytes().map(char::from).collect())
///     .collect();
/// assert_eq!(texts, ["one", "two", "three"]);
/// ```
pub trait CrashSink {
    /// One record of the crash log, in timestamp order.
    fn record(&mut self, origin: Origin, rec: &RecordBuf) -> bool;

    /// This sink's side for runs of ring words (see "Runs of ring words" above), if it takes
    /// them. `None`, the default: every record through [`record`](CrashSink::record).
    fn runs(&mut self) -> Option<&mut dyn RunSink> {
        None
    }
}

/// The side of a [`CrashSink`] that takes runs of ring words ([`CrashSink::runs`]).
pub trait RunSink {
    /// Room for the next run: the drain copies a run into its start (as many whole records as
    /// fit), then announces it with [`run_taken`](RunSink::run_taken). Words it copied there are
    /// the sink's only once announced: a run abandoned — overwritten under the drain, or
    /// superseded by a nested drain — is not, and the next room may be the same. A sink that a
    /// drain nested in another (a crash inside the crash path) may reach too must not lend the
    /// nested drain room that overlaps the room it lent the interrupted one: that drain may still
    /// be copying into it when it resumes (lend from past the highest room lent, say).
    fn run_room(&mut self) -> &mut [usize];

    /// The drain copied `records` records (at least one) of `origin` (a ring), `words` words in
    /// all, into the start of the room [`run_room`](RunSink::run_room) last gave, and validated
    /// them: they are the next records of the crash log, in order. `false` stops the drain, as from
    /// [`CrashSink::record`].
    fn run_taken(&mut self, origin: Origin, words: usize, records: usize) -> bool;
}

impl<F: FnMut(Origin, &RecordBuf) -> bool> CrashSink for F {
    fn record(&mut self, origin: Origin, rec: &RecordBuf) -> bool {
        self(origin, rec)
    }
}

/// Why [`Log::drain_on_crash`] did not run.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{DrainError, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// let r = LOG.drain_on_crash(&|_| true, &mut |_, _: &nmilog::RecordBuf| true);
/// assert_eq!(r, Err(DrainError::NotCrashing));
/// assert_eq!(DrainError::NotCrashing.to_string(), "the calling CPU is not the crashing CPU");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainError {
    /// The calling CPU did not enter the crash path ([`Log::crash_enter`]): only the crashing CPU may
    /// drain (it alone owns the drain's state).
    NotCrashing,
}

impl fmt::Display for DrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainError::NotCrashing => f.write_str("the calling CPU is not the crashing CPU"),
        }
    }
}

impl core::error::Error for DrainError {}

/// What one crash drain did.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{DrainReport, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.append_raw(Level::Emerg, 0, 0, b"Oops: 0000 [#1] SMP").unwrap();
/// LOG.crash_enter().unwrap();
/// let rep: DrainReport = LOG.drain_on_crash(&|_| true, &mut |_, _: &nmilog::RecordBuf| true).unwrap();
/// assert_eq!((rep.records, rep.from_rings, rep.from_main), (1, 1, 0));
/// assert_eq!((rep.torn, rep.in_flight, rep.accounting_records), (0, 0, 0)); // nothing lost
/// assert!(rep.steps <= rep.bound);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Records handed to the sink, accounting records included.
    pub records: u64,
    /// Of those, records from the main log.
    pub from_main: u64,
    /// Of those, records from the per-CPU rings.
    pub from_rings: u64,
    /// Of those, accounting records the drain made.
    pub accounting_records: u64,
    /// Log calls frozen mid-write on CPUs known to be stopped: lost.
    pub torn: u64,
    /// Log calls (or published records not yet visible) on CPUs not known to be stopped: not
    /// delivered by this drain, may still complete.
    pub in_flight: u64,
    /// Records overwritten in the rings before anyone merged them (the flush's finds and this
    /// drain's).
    pub overwritten: u64,
    /// Main-log records overwritten during the drain by a flush on a CPU that did not stop.
    pub main_lost: u64,
    /// CPUs other than the crashing one that were not known to be stopped.
    pub not_stopped: u64,
    /// Whether the drain delivered everything it found (false: the sink refused a record, the step
    /// budget ran out, or a nested drain superseded this one).
    pub complete: bool,
    /// Bounded steps taken (each a read or a peek of one record).
    pub steps: u64,
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
    /// The crash-time drain: on the crashing CPU (after [`crash_enter`](Self::crash_enter)), hands
    /// every record still in the main log or a per-CPU ring to `sink`, in timestamp order (ties: the
    /// main log's records first, in its order, then CPU, then depth; each ring's records in their
    /// order), each exactly once, then one accounting record per ring with losses. `stopped(cpu)`
    /// says whether `cpu` is known to be stopped for good (it checked in after the crash NMI); the
    /// crashing CPU always is. The README's "Crash drain and handover image" section gives the design;
    /// [`crate::protocol`] lists its barrier pairs.
    ///
    /// **Contract.** Writes nothing another CPU could write: the main log, the rings, the consumer
    /// cursors and flush ownership are only read, whatever the other CPUs do meanwhile — stopped,
    /// frozen mid-write or mid-flush, or still running because they never saw the NMI. A log call in
    /// progress on a stopped CPU is counted torn; on a CPU not known to be stopped it is counted in
    /// flight, and a later drain delivers it once it completes. Never spins: a bounded number of steps
    /// ([`DrainReport::bound`]), no lock, no waiting. May be called again (each call is a fresh,
    /// complete drain: a CPU that checked in late gets its records in), also from a nested crash on
    /// the same CPU; an interrupted drain that is resumed after a nested one stops.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Level, Log, Origin, RecordBuf};
    /// static LOG: Log<HostPlatform, 2, 256, 1024> = Log::new(HostPlatform::new(2));
    /// std::thread::spawn(|| {
    ///     HostPlatform::register_cpu(1);
    ///     LOG.nmi_enter(); // the crash IPI; CPU 1 never leaves it
    ///     LOG.append_raw(Level::Emerg, 0, 0, b"CPU 1 stopping").unwrap();
    /// }).join().unwrap();
    /// HostPlatform::register_cpu(0);
    /// LOG.crash_enter().unwrap();
    /// let mut lines = Vec::new();
    /// let rep = LOG.drain_on_crash(&|cpu| cpu == 1, &mut |o: Origin, r: &RecordBuf| {
    ///     lines.push((o, r.text().unwrap().to_string()));
    ///     true
    /// }).unwrap();
    /// assert_eq!(rep.from_rings, 1);
    /// assert_eq!(lines, [(Origin::Ring { cpu: 1, depth: 1 }, "CPU 1 stopping".to_string())]);
    /// ```
    pub fn drain_on_crash<S: CrashSink + ?Sized>(
        &self,
        stopped: &dyn Fn(usize) -> bool,
        sink: &mut S,
    ) -> Result<DrainReport, DrainError> {
        self.drain(Some(stopped), sink)
    }

    /// The most steps one crash drain can take with the current CPU count.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, RecordBuf};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// for _ in 0..100 {
    ///     LOG.append_raw(Level::Info, 0, 0, b"flood").unwrap(); // wraps the ring
    /// }
    /// let bound = LOG.drain_step_bound();
    /// LOG.crash_enter().unwrap();
    /// let rep = LOG.drain_on_crash(&|_| true, &mut |_, _: &RecordBuf| true).unwrap();
    /// assert_eq!(rep.bound, bound);
    /// assert!(rep.steps <= bound);
    /// ```
    pub fn drain_step_bound(&self) -> u64 {
        run::step_bound(self)
    }

    /// The drain; `stopped: None` reuses the last snapshot.
    fn drain<S: CrashSink + ?Sized>(
        &self,
        stopped: Option<&dyn Fn(usize) -> bool>,
        sink: &mut S,
    ) -> Result<DrainReport, DrainError> {
        let mem = self.crash_drain_mem().ok_or(DrainError::NotCrashing)?;
        Ok(run::drain(self, mem, stopped, sink))
    }

    /// The drain's memory in this `Log`, for the crashing CPU only (`None` on any other CPU, or
    /// before a crash): the one way to it, so no caller can drain without that check.
    pub(crate) fn crash_drain_mem(&self) -> Option<DrainMem<'_>> {
        (self.crashing_cpu() == Some(self.platform.cpu_id())).then(|| self.crash.mem())
    }
}
