//! The normal-context flush: who may merge the rings into the main log, when, and how a record moves.
//!
//! Contract: one CPU at a time owns the flush. A CPU in normal context (task or irq, no crash) takes
//! ownership with one compare-exchange or leaves; it never waits for the owner. A CPU that finds the
//! flush owned sets `pending`, and the owner looks again before it leaves (the `pending` hand-off,
//! LMM(pending:A/B)), so no record appended before a flush attempt waits for the next log call.
//!
//! The owner runs the merge engine (`merge.rs`) over the per-CPU rings with [`FlushMerge`]: each
//! source's cursor is its [`Consumer`](super::accounting::Consumer); a record moves by being appended
//! to the main log (the ring write protocol, the owner being the main log's only writer) and *then*
//! the source cursor is stored (LMM(cursor:A)). An owner stopped between the two leaves the record in
//! both places; nothing else ever takes the flush over (the crash drain only reads, and tells the two
//! copies apart by the record's source and `src_seq`), so no journal is needed. The [`FlushHook`]
//! types let test harnesses stop a flush between the steps of a move, as a CPU frozen there would be.
//!
//! Only records older than every record the flush cannot see yet are moved (see the `log` module
//! docs): a ring whose next record is in flight bounds the flush at the last timestamp moved from it,
//! and records younger than `now - settle` stay in their rings.
//!
//! **Batching** ([`Log::flush_if_due`]). A flush costs an ownership hand-off (a compare-exchange and
//! two `SeqCst` accesses) and a look at every source, whatever it moves; a log call that flushes only
//! when enough is pending pays that once per batch. A call is *due* to flush when, in its own ring,
//! 16 (`FLUSH_BATCH_RECORDS`) records are pending, or pending records fill a quarter of the ring (so a
//! batch of long records is moved long before the ring could overwrite it), or the last record moved
//! from that ring is older than 1 ms (`FLUSH_AGE_NS`) — so the first record after a quiet spell is moved
//! at once. Console latency: a record reaches the main log (and the console hook) at once when its
//! ring was quiet for `FLUSH_AGE_NS`; in a burst, at the latest with the first normal-context log
//! call on its CPU and depth made `FLUSH_AGE_NS` after the last flush, or `FLUSH_BATCH_RECORDS - 1`
//! calls later, or with any [`Log::flush`] (a reader, a console thread, a timer) — whichever comes
//! first. Only the *last* records of a burst that no later call follows wait for someone to flush:
//! a platform that needs a hard bound calls [`Log::flush_if_due`] or [`Log::flush`] from a periodic
//! tick. The crash drain does not depend on any of this (it reads the rings themselves). Under
//! [`FlushPolicy::Batched`](crate::FlushPolicy::Batched) every normal-context log call does this
//! instead of a full flush:
//!
//! ```
//! use core::sync::atomic::{AtomicU64, Ordering};
//! use nmilog::{FlushPolicy, Level, Log, Platform};
//! static NOW: AtomicU64 = AtomicU64::new(5_000_000);
//! struct Clock;
//! impl Platform for Clock {
//!     fn cpu_id(&self) -> usize { 0 }
//!     fn now_ns(&self) -> u64 { NOW.load(Ordering::Relaxed) }
//!     fn cpu_count(&self) -> usize { 1 }
//! }
//! static LOG: Log<Clock, 1, 1024, 4096> = Log::new(Clock);
//! LOG.set_flush_policy(FlushPolicy::Batched);
//! LOG.append(Level::Info, 0, 0, b"after a quiet spell").unwrap();
//! assert_eq!(LOG.main().next_seq(), 1); // at once
//! for i in 1..16 {
//!     LOG.append(Level::Info, 0, 0, b"burst").unwrap();
//!     assert_eq!(LOG.main().next_seq(), 1, "call {i} waits for the batch");
//! }
//! LOG.append(Level::Info, 0, 0, b"burst").unwrap(); // the 16th pending record
//! assert_eq!(LOG.main().next_seq(), 17);
//! ```

use super::accounting::Consumer;
use super::merge::{self, Key, Look, Merge, Outcome};
use super::Log;
use crate::record::{flags, Header, RecordBuf};
use crate::ring::{span_words, Cursor, NoHook, Read, Ring, StepHook, WriteError, WriteStep};
use crate::sync::Ordering;
use crate::Platform;

/// Records pending in a log call's own ring that make it flush under batching
/// ([`Log::flush_if_due`]): 16.
pub(crate) const FLUSH_BATCH_RECORDS: usize = 16;

/// Age, in nanoseconds of the platform clock, of the last record moved from a log call's own ring
/// past which the call flushes under batching ([`Log::flush_if_due`]): 1 ms.
pub(crate) const FLUSH_AGE_NS: u64 = 1_000_000;

/// What one flush did.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{FlushPolicy, FlushReport, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"one").unwrap();
/// LOG.append(Level::Info, 0, 0, b"two").unwrap();
/// let rep: FlushReport = LOG.flush().unwrap();
/// assert_eq!((rep.moved, rep.overwritten), (2, 0));
/// assert!(rep.steps >= 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Records moved from the rings into the main log.
    pub moved: u64,
    /// Records found overwritten in a ring before the flush could read them.
    pub overwritten: u64,
    /// Bounded steps taken (each a read or a peek of one record).
    pub steps: u64,
}

/// Steps of one move from a CPU ring into the main log, for [`FlushHook`]s.
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
/// assert_eq!(steps.first(), Some(&FlushStep::Main(WriteStep::Entered)));
/// assert!(steps.contains(&FlushStep::Main(WriteStep::Committed)));
/// assert_eq!(steps.last(), Some(&FlushStep::Done));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushStep {
    /// A step of the append into the main log.
    Main(WriteStep),
    /// The source cursor has been advanced past the record.
    CursorStored,
    /// The move is complete.
    Done,
    /// Not a step of a move (not in [`ALL`](Self::ALL)): the flush found its ring lapped (or a
    /// record too large for the main log) and has counted the records it passes as overwritten, but
    /// not moved its cursor past them yet.
    OverwrittenCounted,
}

impl FlushStep {
    /// Every step of one move, in order.
    ///
    /// ```
    /// use nmilog::FlushStep;
    /// assert_eq!(FlushStep::ALL.len(), 10);
    /// assert_eq!(FlushStep::ALL.last(), Some(&FlushStep::Done));
    /// ```
    pub const ALL: [FlushStep; 10] = [
        FlushStep::Main(WriteStep::Entered),
        FlushStep::Main(WriteStep::TailAdvanced),
        FlushStep::Main(WriteStep::Reserved),
        FlushStep::Main(WriteStep::HeaderWritten),
        FlushStep::Main(WriteStep::PayloadHalf),
        FlushStep::Main(WriteStep::PayloadWritten),
        FlushStep::Main(WriteStep::Committed),
        FlushStep::Main(WriteStep::Published),
        FlushStep::CursorStored,
        FlushStep::Done,
    ];
}

/// Called between the steps of a move (test harnesses); `false` stops the flush there, as a CPU
/// frozen at that point would.
///
/// A flush owner stopped right after it published the record in the main log, before storing its
/// cursor, leaves the record in the main log *and* (by its cursor) still unmoved in its ring; the
/// crash drain delivers it once:
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{FlushPolicy, FlushStep, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// use nmilog::ring::WriteStep;
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// LOG.append(Level::Info, 0, 0, b"moved once").unwrap();
/// let mut freeze = |s: FlushStep| s != FlushStep::Main(WriteStep::Published);
/// LOG.flush_with_hook(&mut freeze);
/// LOG.crash_enter().unwrap();
/// let mut texts = Vec::new();
/// let rep = LOG
///     .drain_on_crash(&|_| true, &mut |_, r: &nmilog::RecordBuf| {
///         texts.push(r.text().unwrap().to_string());
///         true
///     })
///     .unwrap();
/// assert_eq!(texts, ["moved once"]);
/// assert_eq!((rep.from_main, rep.from_rings), (1, 0));
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
    /// assert_eq!((hook.0, rep.moved), (2, 2)); // one move per record
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

/// Forwards the main-log write's steps to a [`FlushHook`].
struct MainHookAdapter<'a, H: FlushHook>(&'a mut H);
impl<H: FlushHook> StepHook for MainHookAdapter<'_, H> {
    #[inline(always)]
    fn step(&mut self, step: WriteStep) -> bool {
        self.0.step(FlushStep::Main(step))
    }
}

/// `pr_cont!` in the main log: a record that leaves its line open (no [`flags::NEWLINE`], not raw)
/// takes the continuations ([`flags::CONT`]) of the same caller (task or CPU, and context) that follow
/// it in its ring, already committed, while they fit in one record — one main-log record, as Linux's
/// printk extends its last record. The record keeps its first piece's timestamp and takes the last
/// piece's `src_seq` (the crash drain's threshold then passes every piece joined: each is delivered
/// once, in the joined record). A piece not yet committed when its line moves (under
/// [`FlushPolicy::Eager`](crate::FlushPolicy::Eager) each call moves its record at once) stays a record
/// of its own, flagged `CONT`, which dmesg-style readers join (a console joins it when it is the
/// next record of the main log). A joined line is at most `line_max`
/// bytes (what the main log takes in one record). Bounded: at most `MAX_PIECES` looks, each counted
/// in `steps`, and none that would leave the merge engine less than its usual margin below `budget`
/// (a look, then up to three peeks).
///
/// Most records are whole lines, or are not followed by a piece: before each look at the next
/// record the join asks the ring whether it may be one (`Ring::may_continue`, two loads; its "no"
/// is wrong only for a record lapped meanwhile), so such a line costs no look at all.
#[inline(always)]
fn join_continuations(
    ring: &Ring,
    cur: &mut Cursor,
    buf: &mut RecordBuf,
    steps: &mut u64,
    limits: (usize, u64),
) {
    if buf.header.leaves_line_open() && ring.may_continue(cur) {
        join_pieces(ring, cur, buf, steps, limits);
    }
}

/// The body of [`join_continuations`], entered when the record at `cur` may be a piece of the open
/// line in `buf`.
#[inline(never)]
fn join_pieces(
    ring: &Ring,
    cur: &mut Cursor,
    buf: &mut RecordBuf,
    steps: &mut u64,
    (line_max, budget): (usize, u64),
) {
    const MAX_PIECES: usize = 16;
    const WORD: usize = core::mem::size_of::<usize>();
    let line = buf.header;
    let mut len = line.len as usize;
    for _ in 0..MAX_PIECES {
        let at = len.next_multiple_of(WORD);
        if at >= buf.payload.len() || *steps + 4 >= budget {
            break;
        }
        let mut next = *cur;
        *steps += 1;
        let piece_of_this_line =
            |h: &Header| h.continues(&line) && len + h.len as usize <= line_max;
        let (r, h, taken) =
            ring.read_into_if(&mut next, &mut buf.payload[at..], piece_of_this_line);
        if r != Read::Record || !taken {
            break;
        }
        let n = h.len as usize;
        buf.payload.copy_within(at..at + n, len);
        len += n;
        buf.header.len = len as u16;
        buf.header.src_seq = h.src_seq;
        buf.header.flags |= h.flags & (flags::NEWLINE | flags::TRUNCATED);
        *cur = next;
        if h.flags & flags::NEWLINE != 0 {
            break;
        }
        if !ring.may_continue(cur) {
            break;
        }
    }
}

/// The normal flush as a [`Merge`]: per-CPU rings (from their consumers' cursors) into the main log.
struct FlushMerge<
    'a,
    P: Platform,
    H: FlushHook,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
> {
    log: &'a Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    hook: &'a mut H,
    ncpu: usize,
    bound: u64,
    /// The round's step budget and the longest record the main log takes (for joined lines).
    join_limits: (usize, u64),
    /// A hook froze the flush outside a move (at [`FlushStep::OverwrittenCounted`]).
    frozen: bool,
    rep: FlushReport,
}

/// The sources [`FlushMerge::heads`] found not idle so far.
#[derive(Clone, Copy)]
enum Busy {
    None,
    /// One, `(CPU, depth)`, not looked at yet.
    One(usize, usize),
    /// More than one (looked at, unless a hook froze the flush first).
    Many,
}

impl<
        P: Platform,
        H: FlushHook,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > FlushMerge<'_, P, H, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    #[inline(always)]
    fn split(src: usize) -> (usize, usize) {
        (src / DEPTH, src % DEPTH)
    }

    /// Fast path for the common case: nothing committed past the consumer's cursor and no log call in
    /// progress on that ring (three loads: the ring's `next_seq`, the cursor's, the guard). A stale
    /// `next_seq` only delays a record to the next flush: its writer's own flush attempt, or the
    /// `pending` hand-off, comes after the store.
    #[inline(always)]
    fn idle(&self, c: usize, d: usize) -> bool {
        let ring = self.log.ring_or_empty(c, d);
        let next_seq = ring.next_seq_word();
        next_seq == self.log.main.consumers[c][d].seq() && !ring.writer_inside_unpublished(next_seq)
    }

    /// Counts `missed` records overwritten and moves the cursor to `to`, past them: the count
    /// first, then the cursor (the order [`FlushState`](super::accounting::FlushState) relies on).
    /// `false`: a hook froze the flush between the two.
    fn pass_overwritten(&mut self, cons: &Consumer, to: Cursor, missed: u64) -> bool {
        Consumer::add(&cons.overwritten, missed);
        self.rep.overwritten = self.rep.overwritten.wrapping_add(missed);
        if !self.hook.step(FlushStep::OverwrittenCounted) {
            self.frozen = true;
            return false;
        }
        cons.set_cursor(to);
        true
    }

    /// [`Merge::head`] of source `(c, d)`.
    #[inline(always)]
    fn head_at(&mut self, c: usize, d: usize, steps: &mut u64) -> Option<Key> {
        if self.frozen {
            return None;
        }
        if self.idle(c, d) {
            *steps += 1;
            return None;
        }
        self.head_busy(c, d, steps)
    }

    /// [`heads`](Merge::heads) at a source that is not idle: the first one is only noted, and looked
    /// at with the second (out of line: the loop over the sources stays small enough to unroll).
    #[inline(never)]
    fn head_of_busy(
        &mut self,
        c: usize,
        d: usize,
        busy: &mut Busy,
        steps: &mut u64,
        push: &mut impl FnMut(Key),
    ) {
        match *busy {
            Busy::None => {
                *busy = Busy::One(c, d);
                return;
            }
            Busy::One(fc, fd) => {
                *busy = Busy::Many;
                if let Some(k) = self.head_busy(fc, fd, steps) {
                    push(k);
                }
                if self.frozen {
                    return;
                }
            }
            Busy::Many => {}
        }
        if let Some(k) = self.head_busy(c, d, steps) {
            push(k);
        }
    }

    /// [`Merge::head`] past the idle check.
    fn head_busy(&mut self, c: usize, d: usize, steps: &mut u64) -> Option<Key> {
        let ring = self.log.ring_or_empty(c, d);
        let cons = &self.log.main.consumers[c][d];
        let mut cur = cons.cursor();
        // At most two resynchronisations: each moves the cursor to the ring's tail.
        for _ in 0..3 {
            *steps += 1;
            match ring.peek(&mut cur) {
                (Read::Record, h) => {
                    let src = (c * DEPTH + d) as u32;
                    return Some(Key {
                        ts: h.ts_ns,
                        tie: src,
                        src,
                    });
                }
                // A running writer publishes it; a later flush moves it.
                (Read::Empty, _) => return None,
                (Read::InFlight, _) => {
                    // Strict: a record with the in-flight record's timestamp could tie with it, and
                    // ties are broken by CPU, which the in-flight record has not had yet.
                    self.bound = self.bound.min(cons.last_ts.get().saturating_sub(1));
                    return None;
                }
                (Read::Overwritten { missed }, _) => {
                    if !self.pass_overwritten(cons, cur, missed) {
                        return None;
                    }
                }
            }
        }
        // Gave up on a ring the writer keeps lapping: whatever it still holds is no older than the
        // last record moved from it, so nothing newer may be merged before it.
        self.bound = self.bound.min(cons.last_ts.get());
        None
    }
}

impl<
        P: Platform,
        H: FlushHook,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Merge for FlushMerge<'_, P, H, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    fn sources(&self) -> usize {
        self.ncpu * DEPTH
    }

    fn bound(&self) -> u64 {
        self.bound
    }

    fn stop(&self) -> bool {
        self.frozen || self.log.crash_cpu.load(Ordering::Relaxed) != 0
    }

    #[inline(always)]
    fn head(&mut self, src: usize, steps: &mut u64) -> Option<Key> {
        let (c, d) = Self::split(src);
        self.head_at(c, d, steps)
    }

    /// Every source's head, but the first source that is not idle is looked at only once a second
    /// one turns up: when it stays alone (a flush after one log call), the engine runs it without
    /// its head's look and without the heap ([`Merge::heads`]).
    #[inline(always)]
    fn heads(&mut self, steps: &mut u64, mut push: impl FnMut(Key)) -> Option<usize> {
        let mut busy = Busy::None;
        for c in 0..self.ncpu {
            for d in 0..DEPTH {
                if self.frozen {
                    continue;
                }
                if self.idle(c, d) {
                    *steps += 1;
                    continue;
                }
                self.head_of_busy(c, d, &mut busy, steps, &mut push);
            }
        }
        match busy {
            Busy::One(c, d) => Some(c * DEPTH + d),
            _ => None,
        }
    }

    #[inline(always)]
    fn look(
        &mut self,
        src: usize,
        buf: &mut RecordBuf,
        take: impl FnOnce(Key) -> bool,
        steps: &mut u64,
    ) -> Look {
        let (c, d) = Self::split(src);
        let ring = self.log.ring_or_empty(c, d);
        let cons = &self.log.main.consumers[c][d];
        let mut cur = cons.cursor();
        let tie = src as u32;
        let key = |ts| Key { ts, tie, src: tie };
        match ring.read_if(&mut cur, buf, |h| take(key(h.ts_ns))) {
            (Read::Record, _, true) => {
                join_continuations(ring, &mut cur, buf, steps, self.join_limits);
                Look::Taken(cur)
            }
            (Read::Record, h, false) => Look::NotTaken(key(h.ts_ns)),
            (Read::Overwritten { missed }, _, _) => {
                // Frozen: `stop` ends the merge before its next look.
                self.pass_overwritten(cons, cur, missed);
                Look::Dry
            }
            // Lapping, the in-flight bound: `head`'s job.
            (Read::Empty | Read::InFlight, _, _) => Look::Dry,
        }
    }

    #[inline(always)]
    fn deliver(&mut self, src: usize, buf: &RecordBuf, next: Cursor) -> bool {
        let (c, d) = Self::split(src);
        let m = &*self.log.main;
        let cons = &m.consumers[c][d];
        // The record carries the source's overwritten count into the main log: a crash drain that
        // takes its threshold from this record takes the count from it too, one consistent pair
        // even when this owner did not stop and moved the record after the drain read the
        // consumer (see `crash::state::snapshot`). The owner alone stores the count: Relaxed.
        let header = Header {
            reserved: cons.overwritten.load(Ordering::Relaxed) as u32,
            ..buf.header
        };
        // The ring records this move passes (a joined line's pieces).
        let pieces = next.seq.wrapping_sub(cons.seq());
        // The main log in effect (attached: the flush checked `main_attached` before it began).
        match self
            .log
            .main_ring()
            .write(|_| header, buf.payload(), &mut MainHookAdapter(self.hook))
        {
            Ok(_) => self.rep.moved += 1,
            Err(WriteError::Frozen) => return false,
            Err(WriteError::TooLarge) => {
                // The main log is smaller than a source ring's largest record: counted, not lost
                // silently.
                if !self.pass_overwritten(cons, next, pieces as u64) {
                    return false;
                }
                cons.last_ts.set(header.ts_ns);
                return self.hook.step(FlushStep::CursorStored) && self.hook.step(FlushStep::Done);
            }
        }
        // After the main-log commit: LMM(cursor:A) in `set_cursor`.
        cons.set_cursor(next);
        cons.last_ts.set(header.ts_ns);
        if !self.hook.step(FlushStep::CursorStored) {
            return false;
        }
        // After the cursor (the order `FlushState` relies on).
        cons.add_moved(pieces);
        self.hook.step(FlushStep::Done)
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
        if self.nmi_safe_only_on(pc) {
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
        self.flush_on(cpu, hook)
    }

    /// The body of [`flush_hooked`](Self::flush_hooked), on `cpu`, which `normal_context` allowed.
    #[cfg(nmilog_cas)]
    fn flush_on<H: FlushHook>(&self, cpu: usize, hook: &mut H) -> Option<FlushReport> {
        if !self.main_attached() {
            return None; // a log sized at boot, before its arena: nothing to flush, nowhere to
        }
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
            let (rep, completed) = self.flush_owned(hook);
            total.moved += rep.moved;
            total.overwritten = total.overwritten.wrapping_add(rep.overwritten);
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

    /// Flushes if the calling CPU's ring (at its current depth) is due (see [`FlushPolicy::Batched`](crate::FlushPolicy::Batched)):
    /// 16 (`FLUSH_BATCH_RECORDS`) records pending, a quarter of the ring pending, or nothing moved from
    /// it for 1 ms (`FLUSH_AGE_NS`). Returns what [`flush`](Self::flush) returned, or `None` when no flush
    /// was due (or the context may not flush). A few loads, and a clock read when the counts are
    /// below their thresholds; the decision reads the flush owner's cursors without ordering (a
    /// stale cursor only moves a flush one call earlier or later).
    ///
    /// ```
    /// use core::sync::atomic::{AtomicU64, Ordering};
    /// use nmilog::{FlushPolicy, Level, Log, Platform};
    /// static NOW: AtomicU64 = AtomicU64::new(5_000_000);
    /// struct Clock;
    /// impl Platform for Clock {
    ///     fn cpu_id(&self) -> usize { 0 }
    ///     fn now_ns(&self) -> u64 { NOW.load(Ordering::Relaxed) }
    ///     fn cpu_count(&self) -> usize { 1 }
    /// }
    /// static LOG: Log<Clock, 1, 1024, 4096> = Log::new(Clock);
    /// LOG.set_flush_policy(FlushPolicy::Deferred); // this example calls `flush_if_due` itself
    /// // Nothing moved from this ring for 5 ms: the first record goes at once.
    /// LOG.append(Level::Info, 0, 0, b"after a quiet spell").unwrap();
    /// assert_eq!(LOG.flush_if_due().map(|r| r.moved), Some(1));
    /// // A burst (the clock stands still): a flush every 16 records.
    /// for _ in 0..15 {
    ///     LOG.append(Level::Info, 0, 0, b"burst").unwrap();
    ///     assert_eq!(LOG.flush_if_due(), None);
    /// }
    /// LOG.append(Level::Info, 0, 0, b"burst").unwrap();
    /// assert_eq!(LOG.flush_if_due().map(|r| r.moved), Some(16));
    /// // 1 ms after the last record moved, the next call flushes whatever is pending.
    /// LOG.append(Level::Info, 0, 0, b"later").unwrap();
    /// NOW.fetch_add(1_000_000, Ordering::Relaxed);
    /// assert_eq!(LOG.flush_if_due().map(|r| r.moved), Some(1));
    /// assert_eq!(LOG.main().next_seq(), 18);
    /// ```
    #[cfg(nmilog_cas)]
    pub fn flush_if_due(&self) -> Option<FlushReport> {
        // The context first: a call that may not flush (NMI, crash) reads nothing else.
        let cpu = self.normal_context()?;
        let pc = &self.cpus[cpu];
        let (_, depth) = self.context_of(pc);
        let ring = pc.ring(depth)?;
        let cons = self.main.consumers.get(cpu)?.get(depth)?;
        let (head, next_seq) = ring.writer_state();
        let cur = cons.cursor();
        let pending = next_seq.wrapping_sub(cur.seq);
        if pending == 0 || pending > usize::MAX / 2 {
            return None;
        }
        let due = pending >= FLUSH_BATCH_RECORDS
            || head.wrapping_sub(cur.pos) >= ring.capacity_words() / 4
            || self.platform.now_ns().wrapping_sub(cons.last_ts.get()) >= FLUSH_AGE_NS;
        if due {
            self.flush_on(cpu, &mut NoHook)
        } else {
            None
        }
    }

    /// [`flush`](Self::flush) with a hook between the steps of each move (test harnesses).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{FlushPolicy, FlushStep, Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// use nmilog::ring::WriteStep;
    /// LOG.set_flush_policy(FlushPolicy::Deferred);
    /// LOG.append(Level::Info, 0, 0, b"x").unwrap();
    /// // Freeze the owner as it enters its first main-log write.
    /// let freeze = |s: FlushStep| s != FlushStep::Main(WriteStep::Entered);
    /// let rep = LOG.flush_with_hook(&mut { freeze }).unwrap();
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

    /// The most steps one flush round can take with the current CPU count.
    #[cfg_attr(not(nmilog_cas), allow(dead_code))]
    pub(super) fn flush_step_bound(&self) -> u64 {
        let n = self.platform.cpu_count().min(CPUS) as u64;
        let per_ring = (self.ring_words() / span_words(0)) as u64 + 1;
        // Per source: up to three peeks for the first look, two looks per record (the one that ends
        // a run and the one that moves it), up to three peeks when it runs dry: 6 + 2 × records,
        // within 3 + 4 × per_ring since per_ring > records. Against a writer that keeps going, the
        // merge stops before a step could pass the bound.
        n * DEPTH as u64 * (3 + per_ring * 4)
    }

    /// The merge (flush owner only). Returns the report and whether it ran to completion (false only
    /// when a hook froze it).
    #[cfg(nmilog_cas)]
    fn flush_owned<H: FlushHook>(&self, hook: &mut H) -> (FlushReport, bool) {
        let bound = self
            .platform
            .now_ns()
            .saturating_sub(self.settle_ns.load(Ordering::Relaxed) as u64);
        let budget = self.flush_step_bound();
        let mut m = FlushMerge {
            log: self,
            hook,
            ncpu: self.platform.cpu_count().min(CPUS),
            bound,
            join_limits: (self.main_ring().max_payload(), budget),
            frozen: false,
            rep: FlushReport::default(),
        };
        let mut steps = 0;
        let heap = self.main.flush_heap.view();
        let out = self.main.flush_buf.with_mut(|p| {
            // SAFETY: this CPU owns the flush (the caller took it with `try_own_flush`), and only the
            // flush owner ever touches `flush_buf` (see `Sync for MainLog`): no other reference to it
            // exists while this one lives.
            let buf = unsafe { &mut *p };
            merge::run(&mut m, heap, buf, budget, &mut steps)
        });
        let mut rep = m.rep;
        rep.steps = steps;
        // Refused, or frozen outside a move: a hook froze the flush. Interrupted (a crash began)
        // or done: release ownership.
        (rep, out != Outcome::Refused && !m.frozen)
    }
}

#[cfg(all(test, not(nmilog_loom)))]
mod tests {
    use crate::doc_support::OneCpu;
    use crate::Log;

    #[test]
    fn the_flush_round_s_bound_is_exact() {
        // One CPU, five depths of 256-word rings. A record takes at least `span_words(0)` words:
        // 5, so a ring holds at most 256 / 5 + 1 = 52 records (9 with 4-byte words: 256 / 9 + 1 =
        // 29); per source 3 looks for the first head and 4 per record.
        let log: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
        let records = if cfg!(target_pointer_width = "64") {
            52
        } else {
            29
        };
        assert_eq!(log.flush_step_bound(), 5 * (3 + 4 * records));
    }
}
