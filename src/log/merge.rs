//! The merge: moving records from the per-CPU rings into the main log in timestamp order (ties: CPU,
//! then depth), run by the flush owner in one of two [`MergeMode`]s — the normal-context flush or the
//! crash drain.
//!
//! Contract: only the flush owner calls [`Log::flush_owned`]. Each record moves under a journal
//! entry (`journal.rs`), so an owner stopped at any step can be taken over without losing or
//! duplicating a record. The merge never waits: every step is a bounded read or peek of one record,
//! and it stops before the step count could pass [`Log::drain_step_bound`]. A normal flush only moves
//! records older than every record it cannot see yet (see the module docs of `log`); the crash drain,
//! with every other CPU stopped, has no such limit and counts records frozen mid-write as torn.

use super::accounting::Consumer;
use super::flush::{FlushHook, FlushReport, FlushStep};
use super::Log;
use crate::record::{Header, RecordBuf};
use crate::ring::{span_words, Cursor, Read, StepHook, WriteError, WriteStep};
use crate::sync::Ordering;
use crate::Platform;

/// Which merge runs. The two differ in what they may assume about the other CPUs, and each place
/// where their behaviour differs matches on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MergeMode {
    /// The normal-context flush: the other CPUs keep logging. Records younger than the settle window,
    /// or than a record still in flight, stay in their rings (the flush bound); idle sources are
    /// skipped with two loads; the flush stops when a crash begins.
    Flush,
    /// The crash drain: every other CPU is stopped. No timestamp bound; a record frozen mid-write is
    /// counted as torn; the drain stops if a nested drain (a fault inside this one) superseded it.
    CrashDrain,
}

/// Passes the main-log write's steps to a [`FlushHook`] as [`FlushStep::Main`].
struct MainHookAdapter<'a, H: FlushHook>(&'a mut H);
impl<H: FlushHook> StepHook for MainHookAdapter<'_, H> {
    #[inline(always)]
    fn step(&mut self, step: WriteStep) -> bool {
        self.0.step(FlushStep::Main(step))
    }
}

/// The merge's ready sources as a binary min-heap of `(timestamp, source)`, `source = cpu * DEPTH +
/// depth`: the lexicographic order is the merge order (ties go to the lower CPU, then the lower
/// depth). Popping the oldest head and pushing a source back after its run are O(log K) for K
/// sources, so a drain costs O(N log K) for N records, not O(N K) (a 256-CPU machine with four
/// depths has 1024 sources). Fixed capacity, on the stack, no allocation.
struct SourceHeap<const CPUS: usize, const DEPTH: usize> {
    keys: [[(u64, u32); DEPTH]; CPUS],
    len: usize,
}

impl<const CPUS: usize, const DEPTH: usize> SourceHeap<CPUS, DEPTH> {
    fn new() -> Self {
        SourceHeap {
            keys: [[(0, 0); DEPTH]; CPUS],
            len: 0,
        }
    }

    /// The oldest head, without removing it.
    #[inline]
    fn peek(&self) -> Option<(u64, u32)> {
        self.keys.as_flattened()[..self.len].first().copied()
    }

    /// Adds a source's head. Each source is in the heap at most once (the merge pushes a source only
    /// after popping it, or once in its first scan), so the capacity `CPUS * DEPTH` is never exceeded;
    /// a push beyond it is ignored rather than allowed to panic.
    #[inline]
    fn push(&mut self, key: (u64, u32)) {
        let len = self.len;
        let h = self.keys.as_flattened_mut();
        if len >= h.len() {
            return;
        }
        let mut i = len;
        h[i] = key;
        while i > 0 {
            let parent = (i - 1) / 2;
            if h[parent] <= h[i] {
                break;
            }
            h.swap(parent, i);
            i = parent;
        }
        self.len = len + 1;
    }

    /// Removes and returns the oldest head.
    #[inline]
    fn pop(&mut self) -> Option<(u64, u32)> {
        let len = self.len.checked_sub(1)?;
        let h = &mut self.keys.as_flattened_mut()[..=len];
        let top = h[0];
        h.swap(0, len);
        self.len = len;
        let h = &mut h[..len];
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < h.len() && h[l] < h[m] {
                m = l;
            }
            if r < h.len() && h[r] < h[m] {
                m = r;
            }
            if m == i {
                break;
            }
            h.swap(i, m);
            i = m;
        }
        Some(top)
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
    /// Fast path for the common case of a normal flush: nothing committed past the consumer's cursor
    /// and no log call in progress on that ring (two loads, inlined into the merge's first scan).
    /// A stale `next_seq` only delays a record to the next flush: its writer's own flush attempt, or
    /// the `pending` hand-off, comes after the store.
    #[inline(always)]
    fn source_idle(&self, c: usize, d: usize) -> bool {
        let ring = &self.cpus[c].rings[d];
        ring.next_seq() as usize == self.main.consumers[c][d].seq()
            && !ring.writer_inside_unpublished()
    }

    /// Peeks the next record of source `(c, d)`: its timestamp, or `None` (idle, empty, in flight,
    /// torn). The idle check is inlined into the merge; the rest is not.
    #[inline(always)]
    fn peek_source(
        &self,
        c: usize,
        d: usize,
        mode: MergeMode,
        bound: &mut u64,
        rep: &mut FlushReport,
    ) -> Option<u64> {
        match mode {
            MergeMode::Flush if self.source_idle(c, d) => {
                rep.steps += 1;
                return None;
            }
            // A busy source; the crash drain always takes the full look.
            MergeMode::Flush | MergeMode::CrashDrain => {}
        }
        self.peek_busy_source(c, d, mode, bound, rep)
    }

    /// [`peek_source`](Self::peek_source) past the idle check.
    fn peek_busy_source(
        &self,
        c: usize,
        d: usize,
        mode: MergeMode,
        bound: &mut u64,
        rep: &mut FlushReport,
    ) -> Option<u64> {
        let ring = &self.cpus[c].rings[d];
        let cons = &self.main.consumers[c][d];
        let mut cur = cons.cursor();
        // At most two resynchronisations: each moves the cursor to the ring's tail.
        for _ in 0..3 {
            rep.steps += 1;
            match ring.peek(&mut cur) {
                (Read::Record, h) => return Some(h.ts_ns),
                (Read::Empty, _) => {
                    match mode {
                        // A writer stopped inside a log call before its record became visible (guard
                        // set, nothing at the head yet) lost that record too: torn.
                        MergeMode::CrashDrain => {
                            if ring.writer_inside_unpublished() && ring.writer_state().1 == cur.seq
                            {
                                self.count_torn_once(c, d, cur, rep);
                            }
                        }
                        // A running writer publishes it; a later flush moves it.
                        MergeMode::Flush => {}
                    }
                    return None;
                }
                (Read::InFlight, _) => {
                    match mode {
                        // Odd sequence word: the writer is stopped for good inside its write of
                        // record `cur.seq`. Torn, counted once however many drains see it.
                        MergeMode::CrashDrain => self.count_torn_once(c, d, cur, rep),
                        // Strict: a record with the in-flight record's timestamp could tie with it,
                        // and ties are broken by CPU, which the in-flight record has not had yet.
                        MergeMode::Flush => {
                            *bound = (*bound).min(cons.last_ts.get().saturating_sub(1));
                        }
                    }
                    return None;
                }
                (Read::Overwritten { missed }, _) => {
                    cons.set_cursor(cur);
                    Consumer::add(&cons.overwritten, missed);
                    rep.overwritten = rep.overwritten.wrapping_add(missed);
                }
            }
        }
        match mode {
            // Gave up on a ring the writer keeps lapping: whatever it still holds is no older than the
            // last record moved from it, so nothing newer may be merged before it.
            MergeMode::Flush => *bound = (*bound).min(cons.last_ts.get()),
            // The drain has no timestamp bound.
            MergeMode::CrashDrain => {}
        }
        None
    }

    /// The most steps one flush or drain can take with the current CPU count.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// for _ in 0..100 {
    ///     LOG.append_raw(Level::Info, 0, 0, b"flood").unwrap(); // wraps the ring
    /// }
    /// let bound = LOG.drain_step_bound();
    /// LOG.crash_enter().unwrap();
    /// let rep = LOG.drain_on_crash();
    /// assert_eq!(rep.bound, bound);
    /// assert!(rep.flush.steps <= bound);
    /// ```
    pub fn drain_step_bound(&self) -> u64 {
        let n = self.platform.cpu_count().min(CPUS) as u64;
        let per_ring = (RING_WORDS / span_words(0)) as u64 + 1;
        // Per source with its writer stopped: up to three peeks for the first look, two looks per
        // record (the one that ends a run and the one that moves it), up to three peeks when it runs
        // dry: 6 + 2 × records, within 3 + 4 × per_ring since per_ring > records. Against a writer
        // that keeps going, the merge stops before a step could pass the bound.
        n * DEPTH as u64 * (3 + per_ring * 4)
    }

    /// The merge (flush owner only). Returns the report and whether it ran to completion (false only
    /// when a hook froze it, or a nested drain superseded it).
    pub(super) fn flush_owned<H: FlushHook>(
        &self,
        mode: MergeMode,
        hook: &mut H,
    ) -> (FlushReport, bool) {
        let ncpu = self.platform.cpu_count().min(CPUS);
        let mut rep = FlushReport::default();
        let mut bound = match mode {
            MergeMode::CrashDrain => u64::MAX,
            MergeMode::Flush => self
                .platform
                .now_ns()
                .saturating_sub(self.settle_ns.load(Ordering::Relaxed) as u64),
        };
        let gen = self.main.drain_gen.load(Ordering::Relaxed);
        let mut heap: SourceHeap<CPUS, DEPTH> = SourceHeap::new();
        for c in 0..ncpu {
            for d in 0..DEPTH {
                if let Some(ts) = self.peek_source(c, d, mode, &mut bound, &mut rep) {
                    heap.push((ts, (c * DEPTH + d) as u32));
                }
            }
        }
        let budget = self.drain_step_bound();
        // Built on first use: an empty flush does not zero a 1 KiB buffer.
        let mut buf: Option<RecordBuf> = None;
        // The oldest head, and the runner-up it has to stay ahead of (ties: CPU, then depth).
        'merge: while let Some((ts, src)) = heap.pop() {
            if ts > bound {
                break;
            }
            let second = heap.peek();
            let (c, d) = (src as usize / DEPTH, src as usize % DEPTH);
            let ring = &self.cpus[c].rings[d];
            let cons = &self.main.consumers[c][d];
            // A run: move records from (c, d) while its head stays older than the runner-up, without
            // rescanning every source per record. One validated look per record: `read_if` copies
            // the payload only of a record the run takes; the record that ends the run is only
            // peeked (header) and stays in its ring, looked at again when its turn comes.
            loop {
                // One read, then up to three peeks in `peek_source`: stop before the bound can be
                // passed.
                if rep.steps + 4 > budget {
                    break 'merge;
                }
                match mode {
                    MergeMode::CrashDrain => {
                        if self.main.drain_gen.load(Ordering::Relaxed) != gen {
                            return (rep, false);
                        }
                    }
                    MergeMode::Flush => {
                        if self.crash_cpu.load(Ordering::Relaxed) != 0 {
                            break 'merge;
                        }
                    }
                }
                let mut cur = cons.cursor();
                rep.steps += 1;
                let buf = buf.get_or_insert_with(RecordBuf::new);
                let in_run =
                    |h: &Header| h.ts_ns <= bound && second.is_none_or(|s| (h.ts_ns, src) < s);
                match ring.read_if(&mut cur, buf, in_run) {
                    (Read::Record, h, false) => {
                        heap.push((h.ts_ns, src));
                        continue 'merge;
                    }
                    (Read::Record, _, true) => {
                        if !self.move_record(c, d, buf, cur, hook) {
                            return (rep, false);
                        }
                        rep.moved += 1;
                    }
                    (Read::Overwritten { missed }, _, _) => {
                        Consumer::add(&cons.overwritten, missed);
                        rep.overwritten = rep.overwritten.wrapping_add(missed);
                        cons.set_cursor(cur);
                        if let Some(t) = self.peek_source(c, d, mode, &mut bound, &mut rep) {
                            heap.push((t, src));
                        }
                        continue 'merge;
                    }
                    (Read::Empty | Read::InFlight, _, _) => {
                        // Torn accounting, the flush bound and lapping are `peek_source`'s job.
                        if let Some(t) = self.peek_source(c, d, mode, &mut bound, &mut rep) {
                            heap.push((t, src));
                        }
                        continue 'merge;
                    }
                }
            }
        }
        (rep, true)
    }

    /// One journaled move of `buf` (read from source `(c, d)`, whose cursor is then `next`) into the
    /// main log. Returns false if a hook froze it.
    fn move_record<H: FlushHook>(
        &self,
        c: usize,
        d: usize,
        buf: &RecordBuf,
        next: Cursor,
        hook: &mut H,
    ) -> bool {
        let m = &*self.main;
        let cons = &m.consumers[c][d];
        let mseq = m.ring.next_seq() as usize;
        // LMM(journal:A), in `Journal::record`.
        m.journal
            .record(mseq, c * DEPTH + d, next, buf.header.ts_ns);
        if !hook.step(FlushStep::Journaled) {
            return false;
        }
        let header = buf.header;
        match m
            .ring
            .write(|_| header, buf.payload(), &mut MainHookAdapter(hook))
        {
            Ok(_) => {}
            Err(WriteError::Frozen) => return false,
            Err(WriteError::TooLarge) => {
                // The main log is smaller than a source ring's largest record: counted, not lost
                // silently.
                Consumer::add(&cons.overwritten, 1);
            }
        }
        cons.set_cursor(next);
        cons.last_ts.set(buf.header.ts_ns);
        if !hook.step(FlushStep::CursorStored) {
            return false;
        }
        m.journal.clear();
        hook.step(FlushStep::Done)
    }
}
