//! The merge engine: a k-way merge of ordered record sources by timestamp (ties: CPU, then depth),
//! shared by the normal flush (`flush.rs`: per-CPU rings → main log) and the crash drain
//! (`crash.rs`: main log + per-CPU rings → a crash-only sink).
//!
//! What differs between the two is behind the [`Merge`] trait: where each source's cursor lives, when
//! a source ends, the timestamp bound, and where a taken record goes. The engine itself only ever
//! *reads* sources through [`Merge::heads`] / [`Merge::head`] / [`Merge::look`] and hands records
//! to [`Merge::deliver`] — or, where the merge can move a whole run in one piece (the crash drain
//! into a sink that takes ring words), asks [`Merge::take_run`] first, within the same budget and
//! to the same timestamp limit ([`run_ts_limit`]).
//!
//! **Complexity.** The ready sources sit in a binary min-heap ([`MergeHeap`]) keyed by
//! ([`Key`]) timestamp, tie, source: popping the oldest head and pushing a source back after its run
//! are O(log K) for K sources, so a merge costs O(N log K) for N records. A *run* takes records from
//! the oldest source while they stay older than the runner-up, so the heap is touched once per run,
//! not once per record, and each record gets one validated look that copies its payload only if the
//! run takes it. A merge whose [`Merge::heads`] finds one source alone (the flush after a log call,
//! mostly) runs that source first, without a look at its head and with the heap empty ([`run`]).
//!
//! **Bounds and memory.** Every step is one bounded read or peek of one record; the engine stops
//! before its step count could pass the caller's budget, whatever a writer that did not stop does
//! meanwhile. The heap lives in the static `Log` (one per mode), not on the stack: the engine's stack
//! use does not grow with the CPU count. Its words are atomics accessed `Relaxed` by the single CPU
//! that runs that mode (the flush owner; the crashing CPU), so a nested crash that re-enters the
//! crash drain on the same CPU is never undefined behaviour.

use super::accounting::TsCell;
use crate::record::RecordBuf;
use crate::ring::Cursor;
use crate::sync::{array_of, const_or_loom_fn, AtomicUsize, Ordering};

/// A heap key: a source's head record. Ordered by timestamp, then `tie` (ties go to the lower CPU,
/// then the lower depth), then the source index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) ts: u64,
    pub(super) tie: u32,
    pub(super) src: u32,
}

/// One heap slot (three words: `Relaxed` atomics, one writer at a time).
pub(crate) struct Slot {
    ts: TsCell,
    tie: AtomicUsize,
    src: AtomicUsize,
}

impl Slot {
    const_or_loom_fn! {
        pub(crate) fn new() -> Self {
            Slot { ts: TsCell::new(), tie: AtomicUsize::new(0), src: AtomicUsize::new(0) }
        }
    }
    #[inline(always)]
    fn get(&self) -> Key {
        Key {
            ts: self.ts.get(),
            tie: self.tie.load(Ordering::Relaxed) as u32,
            src: self.src.load(Ordering::Relaxed) as u32,
        }
    }
    #[inline(always)]
    fn set(&self, k: Key) {
        self.ts.set(k.ts);
        self.tie.store(k.tie as usize, Ordering::Relaxed);
        self.src.store(k.src as usize, Ordering::Relaxed);
    }
}

/// The memory of a merge heap for a `CPUS × DEPTH`-source log: one slot per (CPU, depth) source
/// plus one (the crash drain's main-log source), and the length. In the static `Log`.
pub(super) struct MergeHeap<const CPUS: usize, const DEPTH: usize> {
    slots: [[Slot; DEPTH]; CPUS],
    extra: Slot,
    len: AtomicUsize,
}

impl<const CPUS: usize, const DEPTH: usize> MergeHeap<CPUS, DEPTH> {
    const_or_loom_fn! {
        pub(super) fn new() -> Self {
            MergeHeap {
                slots: array_of!(array_of!(Slot::new(); DEPTH); CPUS),
                extra: Slot::new(),
                len: AtomicUsize::new(0),
            }
        }
    }

    /// The heap over this memory.
    pub(super) fn view(&self) -> HeapView<'_, [Slot]> {
        HeapView {
            slots: self.slots.as_flattened(),
            extra: &self.extra,
            len: &self.len,
        }
    }
}

/// Where a heap's slots live: a plain array (the flush's [`MergeHeap`]), or one slot inside each
/// source's crash-drain state (the drain's, in the static `Log` or a recovery tool's scratch).
pub(crate) trait SlotStore {
    /// Slot `i`, if there is one.
    fn slot_at(&self, i: usize) -> Option<&Slot>;
    /// How many slots.
    fn slot_count(&self) -> usize;
}

impl SlotStore for [Slot] {
    #[inline(always)]
    fn slot_at(&self, i: usize) -> Option<&Slot> {
        self.get(i)
    }
    #[inline(always)]
    fn slot_count(&self) -> usize {
        self.len()
    }
}

/// A fixed-capacity binary min-heap of [`Key`]s over slots that live elsewhere (see [`SlotStore`]):
/// `slot_count() + 1` keys at most. A push beyond the capacity is ignored rather than allowed to
/// panic (each source is in the heap at most once, so it never happens).
pub(crate) struct HeapView<'a, S: ?Sized + SlotStore = [Slot]> {
    pub(crate) slots: &'a S,
    pub(crate) extra: &'a Slot,
    pub(crate) len: &'a AtomicUsize,
}

impl<S: ?Sized + SlotStore> Clone for HeapView<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S: ?Sized + SlotStore> Copy for HeapView<'_, S> {}

impl<S: ?Sized + SlotStore> HeapView<'_, S> {
    #[inline(always)]
    fn slot(&self, i: usize) -> &Slot {
        self.slots.slot_at(i).unwrap_or(self.extra)
    }

    #[inline(always)]
    fn capacity(&self) -> usize {
        self.slots.slot_count() + 1
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(super) fn clear(&self) {
        self.len.store(0, Ordering::Relaxed);
    }

    /// The oldest head, without removing it.
    #[inline]
    pub(super) fn peek(&self) -> Option<Key> {
        (self.len() > 0).then(|| self.slot(0).get())
    }

    /// Adds a source's head.
    pub(super) fn push(&self, key: Key) {
        let len = self.len();
        if len >= self.capacity() {
            return;
        }
        let mut i = len;
        while i > 0 {
            let parent = (i - 1) / 2;
            let p = self.slot(parent).get();
            if p <= key {
                break;
            }
            self.slot(i).set(p);
            i = parent;
        }
        self.slot(i).set(key);
        self.len.store(len + 1, Ordering::Relaxed);
    }

    /// The oldest head but one (the smaller of the root's children), without removing it: the key
    /// the oldest source's run has to stay ahead of.
    #[inline(always)]
    pub(super) fn runner_up(&self) -> Option<Key> {
        match self.len() {
            0 | 1 => None,
            2 => Some(self.slot(1).get()),
            _ => Some(self.slot(1).get().min(self.slot(2).get())),
        }
    }

    /// Removes and returns the oldest head.
    #[inline(always)]
    pub(super) fn pop(&self) -> Option<Key> {
        let len = self.len().checked_sub(1)?;
        let top = self.slot(0).get();
        let last = self.slot(len).get();
        self.len.store(len, Ordering::Relaxed);
        if len > 0 {
            self.sift_down(last, len);
        }
        Some(top)
    }

    /// Replaces the oldest head with `key` (the same source's next head): one sift down, where a
    /// pop and a push take a sift down and a sift up. On an empty heap, a push. (Inlined: the
    /// engine calls it once a run; out of line, the merge's pop cost the interleaved crash drain 27
    /// instructions a record.)
    #[inline(always)]
    pub(super) fn replace_top(&self, key: Key) {
        match self.len() {
            0 => self.push(key),
            len => self.sift_down(key, len),
        }
    }

    /// Puts `key` at the root of the heap's first `len` slots (`len >= 1`) and sifts it down.
    #[inline(always)]
    fn sift_down(&self, key: Key, len: usize) {
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            if l >= len {
                break;
            }
            let mut m = l;
            let mut mk = self.slot(l).get();
            if r < len {
                let rk = self.slot(r).get();
                if rk < mk {
                    m = r;
                    mk = rk;
                }
            }
            if key <= mk {
                break;
            }
            self.slot(i).set(mk);
            i = m;
        }
        self.slot(i).set(key);
    }
}

/// What one look at a source's head found.
pub(super) enum Look {
    /// The record was copied into the buffer; the source's cursor after it is given (the caller
    /// makes it the source's cursor once the record is delivered).
    Taken(Cursor),
    /// A valid record that the run does not take (newer than the runner-up, or past the bound): the
    /// source goes back into the heap with this key.
    NotTaken(Key),
    /// Nothing usable at the cursor (empty, in flight, lapped: accounted by the source); ask
    /// [`Merge::head`] again.
    Dry,
}

/// How the engine ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Every ready source ran dry, or the rest is past the bound.
    Done,
    /// [`Merge::stop`] said so.
    Interrupted,
    /// [`Merge::deliver`] refused a record (a test hook froze the mover, or the sink is full).
    Refused,
    /// One more record could have passed the step budget.
    Budget,
}

/// The sources and the destination of one merge.
///
/// The flush's and the crash drain's implementations mark [`head`](Merge::head),
/// [`look`](Merge::look) and [`deliver`](Merge::deliver) `#[inline(always)]`: [`run`] calls them
/// once or twice per record, for the same source throughout a run; inlined, they build no call
/// frames and the compiler shares the source's index arithmetic and lookups between them (the
/// crash drain's instructions a record 382 → 323 on `drain/nmilog_8cpus`, the default policy's
/// `pr_info!` 2287 → 2169).
pub(super) trait Merge {
    /// Source indices are `0..sources()`.
    fn sources(&self) -> usize;
    /// Records newer than this are not merged (the normal flush's settle and in-flight bound;
    /// `u64::MAX` for the crash drain). May shrink as sources are looked at.
    fn bound(&self) -> u64;
    /// Whether to stop now (a crash began under a normal flush; a nested crash superseded a drain).
    fn stop(&self) -> bool;
    /// Looks at source `src`'s next record: its key, or `None` when the source has nothing ready.
    /// Accounts for lapping, torn and in-flight records. Adds the steps taken.
    fn head(&mut self, src: usize, steps: &mut u64) -> Option<Key>;
    /// [`head`](Merge::head) of every source in index order, each key found handed to `push`: the
    /// start of every merge. `None`, or `Some(src)`: source `src` is the only one that may have a
    /// record ready, and its head was not looked at (nothing was pushed) — the engine then runs it
    /// first, with the heap empty ([`run`]). The flush overrides it to walk its `(CPU, depth)` pairs
    /// without a division per source (a flush looks at every source: `pr_info!` 2169 → 2041
    /// instructions) and to report a lone source (a flush after one log call mostly finds one).
    #[inline(always)]
    fn heads(&mut self, steps: &mut u64, mut push: impl FnMut(Key)) -> Option<usize> {
        for src in 0..self.sources() {
            if let Some(k) = self.head(src, steps) {
                push(k);
            }
        }
        None
    }
    /// One validated look at source `src`'s next record: taken (copied into `buf`) if `take(key)`.
    fn look(
        &mut self,
        src: usize,
        buf: &mut RecordBuf,
        take: impl FnOnce(Key) -> bool,
        steps: &mut u64,
    ) -> Look;
    /// Hands a taken record on and makes `next` the source's cursor. `false` stops the merge.
    fn deliver(&mut self, src: usize, buf: &RecordBuf, next: Cursor) -> bool;
    /// Whether [`take_run`](Merge::take_run) may move runs at all (`false`, the default: the
    /// engine does not ask).
    #[inline(always)]
    fn takes_runs(&self) -> bool {
        false
    }
    /// Moves a run of source `src` in one piece where this merge can: the records while their key
    /// stays within `bound` and ahead of `second` (as the record-at-a-time look decides; see
    /// [`run_ts_limit`]), at most `limit` (each record looked at is a step, added to `steps`).
    /// `None` (the default): not here, the engine takes the run one record at a time. The crash
    /// drain overrides it for a sink that takes ring words ([`CrashSink::runs`]).
    ///
    /// [`CrashSink::runs`]: crate::CrashSink::runs
    #[inline(always)]
    fn take_run(
        &mut self,
        src: usize,
        bound: u64,
        second: Option<Key>,
        limit: u64,
        steps: &mut u64,
    ) -> Option<RunStep> {
        let _ = (src, bound, second, limit, steps);
        None
    }
}

/// How a run [`Merge::take_run`] moved ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunStep {
    /// At a record of the source that is not in the run: its key goes back into the heap.
    NotTaken(Key),
    /// Anywhere else (the limit, the sink's room, a record the run does not take as it lies):
    /// the engine goes on one record at a time from the source's cursor.
    Continue,
    /// The sink refused the run.
    Refused,
    /// [`Merge::stop`] said so before the run was handed on.
    Interrupted,
}

/// Runs one merge of `m`'s sources (see the module docs), in at most `budget` steps counted in
/// `steps`, copying records through `buf`.
#[inline(always)]
pub(super) fn run<M: Merge, S: ?Sized + SlotStore>(
    m: &mut M,
    heap: HeapView<'_, S>,
    buf: &mut RecordBuf,
    budget: u64,
    steps: &mut u64,
) -> Outcome {
    heap.clear();
    // A source `heads` found alone runs first, its head not looked at and the heap empty: no
    // runner-up, and its next head goes into the heap as any source's does (`replace_top` on an
    // empty heap pushes). Steps: one fewer than through the heap when the source's first record is
    // within the bound, as many when it is past it (a look finds that, where the head did), one
    // more when the first look finds nothing (a call in flight: the look, then the head).
    let mut lone = m.heads(steps, |k| heap.push(k));
    // The oldest head stays at the root while its source runs, and its next head replaces it there
    // (one sift down): the runner-up is the smaller of the root's children.
    'merge: loop {
        let (src, second) = match lone.take() {
            Some(src) => (src, None),
            None => {
                let Some(top) = heap.peek() else {
                    break;
                };
                if top.ts > m.bound() {
                    break;
                }
                (top.src as usize, heap.runner_up())
            }
        };
        // The run in one piece where the merge can (out of line: the record-at-a-time loop below
        // keeps its registers).
        if m.takes_runs() {
            match try_run(m, src, second, budget, steps) {
                None | Some(RunStep::Continue) => {}
                Some(RunStep::NotTaken(k)) => {
                    heap.replace_top(k);
                    continue 'merge;
                }
                Some(RunStep::Refused) => return Outcome::Refused,
                Some(RunStep::Interrupted) => return Outcome::Interrupted,
            }
        }
        loop {
            // One look, then up to three in `head`: stop before the budget can be passed.
            if *steps + 4 > budget {
                return Outcome::Budget;
            }
            if m.stop() {
                return Outcome::Interrupted;
            }
            *steps += 1;
            let bound = m.bound();
            let in_run = |k: Key| k.ts <= bound && second.is_none_or(|s| k < s);
            match m.look(src, buf, in_run, steps) {
                Look::Taken(next) => {
                    if !m.deliver(src, buf, next) {
                        return Outcome::Refused;
                    }
                }
                Look::NotTaken(k) => {
                    heap.replace_top(k);
                    continue 'merge;
                }
                Look::Dry => {
                    match m.head(src, steps) {
                        Some(k) => heap.replace_top(k),
                        None => {
                            heap.pop();
                        }
                    }
                    continue 'merge;
                }
            }
        }
    }
    Outcome::Done
}

/// [`Merge::take_run`] of source `src`, whose run has to stay ahead of `second`: within the budget
/// as the record-at-a-time loop (the run's looks, then up to three in `head`).
#[inline(never)]
fn try_run<M: Merge>(
    m: &mut M,
    src: usize,
    second: Option<Key>,
    budget: u64,
    steps: &mut u64,
) -> Option<RunStep> {
    // Each record looked at is a step; after the run, up to three in `head` (as after a look).
    let limit = budget.saturating_sub(*steps).saturating_sub(3);
    if limit == 0 || m.stop() {
        return None;
    }
    let bound = m.bound();
    m.take_run(src, bound, second, limit, steps)
}

/// The newest timestamp a record of a source whose keys carry `(tie, src)` may have and still be in
/// a run that has to stay within `bound` and ahead of `second` — the engine's test
/// `key.ts <= bound && key < second` as one comparison of the timestamp (keys order by timestamp,
/// then `tie`, then `src`). `None` when no record of the source can be.
#[inline(always)]
pub(super) fn run_ts_limit(tie: u32, src: u32, bound: u64, second: Option<Key>) -> Option<u64> {
    let ahead = match second {
        None => u64::MAX,
        // Ahead of a key that ties on the timestamp only if it wins the tie.
        Some(s) if (tie, src) < (s.tie, s.src) => s.ts,
        Some(s) => s.ts.checked_sub(1)?,
    };
    Some(bound.min(ahead))
}

#[cfg(all(test, not(nmilog_loom)))]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A tiny deterministic generator (xorshift), so the test needs no dependency.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn heap_pops_random_keys_in_order() {
        let mem: MergeHeap<8, 4> = MergeHeap::new();
        let heap = mem.view();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..200 {
            heap.clear();
            let n = (next(&mut x) % 34) as usize; // up to the capacity (33), and one more
            let mut keys: Vec<Key> = (0..n)
                .map(|i| Key {
                    ts: next(&mut x) % 16, // many ties
                    tie: (next(&mut x) % 4) as u32,
                    src: i as u32,
                })
                .collect();
            for &k in &keys {
                heap.push(k);
            }
            keys.truncate(33);
            keys.sort();
            // Every key comes out, oldest first (ties by `tie`, then by source); a push past the
            // capacity was refused.
            let mut out = Vec::new();
            while let Some(k) = heap.pop() {
                out.push(k);
            }
            assert_eq!(out, keys, "round {round}");
            assert_eq!(heap.pop(), None);
        }
    }

    /// The engine's heap operations (push, replace the root, pop) against a sorted list: the root
    /// and the runner-up are always the two oldest keys.
    #[test]
    fn heap_replace_top_and_runner_up_match_a_sorted_list() {
        let mem: MergeHeap<4, 2> = MergeHeap::new();
        let heap = mem.view();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        // Fewer rounds under Miri, which interprets each one about a thousand times slower.
        let rounds = if cfg!(miri) { 20 } else { 300 };
        for round in 0..rounds {
            heap.clear();
            let mut model: Vec<Key> = Vec::new();
            for op in 0..60 {
                let key = Key {
                    ts: next(&mut x) % 12, // many ties
                    tie: (next(&mut x) % 3) as u32,
                    src: (next(&mut x) % 9) as u32,
                };
                match next(&mut x) % 3 {
                    0 if model.len() < 9 => {
                        heap.push(key);
                        model.push(key);
                    }
                    1 => {
                        heap.replace_top(key);
                        if !model.is_empty() {
                            model.remove(0);
                        }
                        model.push(key);
                    }
                    _ => {
                        assert_eq!(heap.pop(), model.first().copied(), "round {round} op {op}");
                        if !model.is_empty() {
                            model.remove(0);
                        }
                    }
                }
                model.sort();
                assert_eq!(heap.len(), model.len(), "round {round} op {op}");
                assert_eq!(heap.peek(), model.first().copied(), "round {round} op {op}");
                assert_eq!(
                    heap.runner_up(),
                    model.get(1).copied(),
                    "round {round} op {op}"
                );
            }
        }
    }

    /// Sources of timestamps: a head costs one step, a look none beyond the engine's own. Records
    /// newer than `bound` are not merged. `lone`: `heads` reports a source that is the only one
    /// with records left without looking at it, as the flush does. `dry_at`: the look at that
    /// source's record of that index finds nothing, once (a record the look found lapped or in
    /// flight; the head after it finds the record), as `(source, index)`.
    struct Lists {
        ts: Vec<Vec<u64>>,
        next: Vec<usize>,
        out: Vec<u64>,
        bound: u64,
        lone: bool,
        dry_at: Option<(usize, usize)>,
    }

    impl Lists {
        fn new(ts: &[&[u64]]) -> Self {
            Lists {
                ts: ts.iter().map(|l| l.to_vec()).collect(),
                next: vec![0; ts.len()],
                out: Vec::new(),
                bound: u64::MAX,
                lone: false,
                dry_at: None,
            }
        }
        fn key(&self, src: usize) -> Option<Key> {
            let ts = *self.ts[src].get(self.next[src])?;
            let src = src as u32;
            Some(Key { ts, tie: src, src })
        }
    }

    impl Merge for Lists {
        fn sources(&self) -> usize {
            self.ts.len()
        }
        fn bound(&self) -> u64 {
            self.bound
        }
        fn stop(&self) -> bool {
            false
        }
        fn head(&mut self, src: usize, steps: &mut u64) -> Option<Key> {
            *steps += 1;
            self.key(src)
        }
        fn heads(&mut self, steps: &mut u64, mut push: impl FnMut(Key)) -> Option<usize> {
            let busy: Vec<usize> = (0..self.sources())
                .filter(|&s| self.key(s).is_some())
                .collect();
            if let [lone] = busy[..] {
                if self.lone {
                    *steps += self.sources() as u64 - 1;
                    return Some(lone);
                }
            }
            for src in 0..self.sources() {
                if let Some(k) = self.head(src, steps) {
                    push(k);
                }
            }
            None
        }
        fn look(
            &mut self,
            src: usize,
            buf: &mut RecordBuf,
            take: impl FnOnce(Key) -> bool,
            _: &mut u64,
        ) -> Look {
            if self.dry_at == Some((src, self.next[src])) {
                self.dry_at = None;
                return Look::Dry;
            }
            match self.key(src) {
                None => Look::Dry,
                Some(k) if take(k) => {
                    buf.header.ts_ns = k.ts;
                    let n = self.next[src] + 1;
                    Look::Taken(Cursor { pos: n, seq: n })
                }
                Some(k) => Look::NotTaken(k),
            }
        }
        fn deliver(&mut self, src: usize, buf: &RecordBuf, next: Cursor) -> bool {
            self.next[src] = next.seq;
            self.out.push(buf.header.ts_ns);
            true
        }
    }

    /// A source that [`Merge::heads`] reports alone runs first, with the heap empty ([`run`]), to the
    /// same records and outcome as through the heap, in the steps `run` states (one fewer,
    /// as many, or one more): random single sources, bounds, a look that finds nothing once,
    /// budgets.
    #[test]
    fn a_lone_source_runs_without_the_heap_as_it_would_with_it() {
        let mem: MergeHeap<4, 1> = MergeHeap::new();
        let mut buf = RecordBuf::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut alone_runs = 0;
        let rounds = if cfg!(miri) { 30 } else { 400 };
        for round in 0..rounds {
            let n = 1 + (next(&mut x) % 4) as usize;
            let lone = (next(&mut x) % n as u64) as usize;
            let mut ts: Vec<u64> = (0..next(&mut x) % 6).map(|_| next(&mut x) % 10).collect();
            ts.sort();
            let bound = match next(&mut x) % 3 {
                0 => u64::MAX,
                _ => next(&mut x) % 10,
            };
            let dry_at = next(&mut x)
                .is_multiple_of(2)
                .then(|| (lone, (next(&mut x) % 6) as usize));
            let lists: Vec<&[u64]> = (0..n)
                .map(|s| if s == lone { &ts[..] } else { &[][..] })
                .collect();
            let want: Vec<u64> = ts.iter().copied().take_while(|&t| t <= bound).collect();
            for budget in (0..16).chain([u64::MAX]) {
                let mut merge = |alone: bool| {
                    let mut m = Lists::new(&lists);
                    (m.bound, m.lone, m.dry_at) = (bound, alone, dry_at);
                    let mut steps = 0;
                    let o = run(&mut m, mem.view(), &mut buf, budget, &mut steps);
                    (o, steps, m.out)
                };
                let (heap_o, heap_steps, heap_out) = merge(false);
                let (o, steps, out) = merge(true);
                let at = format!("round {round} budget {budget}");
                // Within the budget but for the first heads.
                assert!(steps <= budget.max(n as u64), "{at}: {steps} steps");
                assert!(out.starts_with(&heap_out), "{at}: {out:?} {heap_out:?}");
                assert_eq!(&out[..], &want[..out.len()], "{at}");
                // Done through the heap with room for another look: done alone too (a lone
                // source's record past the bound takes a look to find, where the heap's head
                // found it).
                if heap_o == Outcome::Done && budget >= heap_steps + 4 {
                    assert_eq!((o, &out), (Outcome::Done, &want), "{at}");
                }
                if o == Outcome::Done {
                    assert_eq!(out, want, "{at}");
                }
                if budget == u64::MAX {
                    assert_eq!(o, Outcome::Done, "{at}");
                    // The lone source's head is the look the engine does not take; where its
                    // first record is past the bound, a look finds that instead of the head (and
                    // a look that finds nothing takes the head after it too).
                    let (saved, extra) = match ts.first() {
                        Some(&t) if t <= bound => (1, 0),
                        Some(_) => (0, u64::from(dry_at == Some((lone, 0)))),
                        None => (0, 0),
                    };
                    assert_eq!(steps + saved, heap_steps + extra, "{at}");
                    alone_runs += usize::from(!ts.is_empty());
                }
            }
        }
        assert!(alone_runs > rounds / 2, "{alone_runs}");
    }

    #[test]
    fn a_lone_source_stops_exactly_at_its_step_budget() {
        const SOURCES: &[&[u64]] = &[&[], &[1, 2, 3], &[]];
        let mem: MergeHeap<3, 1> = MergeHeap::new();
        let mut buf = RecordBuf::new();
        // 2 idle heads; 3 looks that take; the look that finds the source dry and the head after
        // it: 7 steps. The last look starts at 5 steps, so 9 is the smallest budget that completes.
        for budget in 0..20 {
            let mut m = Lists::new(SOURCES);
            m.lone = true;
            let mut steps = 0;
            let o = run(&mut m, mem.view(), &mut buf, budget, &mut steps);
            if budget >= 9 {
                assert_eq!((o, steps, &m.out[..]), (Outcome::Done, 7, &[1, 2, 3][..]));
            } else {
                assert_eq!(o, Outcome::Budget, "budget {budget}");
                assert!(steps <= budget.max(2), "budget {budget}: {steps} steps");
                assert_eq!(&m.out[..], &[1, 2, 3][..m.out.len()]);
            }
        }
    }

    #[test]
    fn the_merge_stops_exactly_at_its_step_budget() {
        const SOURCES: &[&[u64]] = &[&[1, 4, 7], &[2, 5], &[3, 6, 8, 9]];
        let mem: MergeHeap<3, 1> = MergeHeap::new();
        let mut buf = RecordBuf::new();
        let mut merge = |budget: u64| {
            let mut m = Lists::new(SOURCES);
            let mut steps = 0;
            let o = run(&mut m, mem.view(), &mut buf, budget, &mut steps);
            (o, steps, m.out)
        };
        // 3 first heads; 9 looks that take; 5 that end a run at a newer record (its key goes back
        // into the heap, no head needed); 3 that find a source dry, each followed by a head:
        // 3 + 9 + 5 + 3 + 3 = 23.
        let (o, steps, out) = merge(u64::MAX);
        assert_eq!(o, Outcome::Done);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(steps, 23);
        // The engine looks only while the look and up to three heads after it fit: the last look
        // starts at 21 steps, so 25 is the smallest budget that completes.
        for budget in 0..40 {
            let (o, steps, out) = merge(budget);
            // The first heads are taken whatever the budget (the caller's bound counts them).
            assert!(steps <= budget.max(3), "budget {budget}: {steps} steps");
            assert_eq!(&out[..], &[1, 2, 3, 4, 5, 6, 7, 8, 9][..out.len()]);
            if budget >= 25 {
                assert_eq!((o, out.len()), (Outcome::Done, 9), "budget {budget}");
            } else {
                assert_eq!(o, Outcome::Budget, "budget {budget}");
            }
        }
    }

    /// [`Lists`] that also moves runs in one piece ([`Merge::take_run`]), as the crash drain does
    /// into a sink that takes ring words: each record looked at is a step, the record that ends a
    /// run included. [`Merge::stop`] says so once `stop_after` records are out (a nested drain
    /// came); a record or run moved after that is counted in `after_stop`.
    struct RunLists {
        lists: Lists,
        runs: usize,
        stop_after: usize,
        after_stop: usize,
    }

    impl Merge for RunLists {
        fn sources(&self) -> usize {
            self.lists.sources()
        }
        fn bound(&self) -> u64 {
            self.lists.bound()
        }
        fn stop(&self) -> bool {
            self.lists.out.len() >= self.stop_after
        }
        fn head(&mut self, src: usize, steps: &mut u64) -> Option<Key> {
            self.lists.head(src, steps)
        }
        fn look(
            &mut self,
            src: usize,
            buf: &mut RecordBuf,
            take: impl FnOnce(Key) -> bool,
            steps: &mut u64,
        ) -> Look {
            self.lists.look(src, buf, take, steps)
        }
        fn deliver(&mut self, src: usize, buf: &RecordBuf, next: Cursor) -> bool {
            self.after_stop += usize::from(self.stop());
            self.lists.deliver(src, buf, next)
        }
        fn takes_runs(&self) -> bool {
            true
        }
        fn take_run(
            &mut self,
            src: usize,
            bound: u64,
            second: Option<Key>,
            limit: u64,
            steps: &mut u64,
        ) -> Option<RunStep> {
            let newest = run_ts_limit(src as u32, src as u32, bound, second);
            self.after_stop += usize::from(self.stop());
            let mut taken = 0;
            let end = loop {
                if taken == limit {
                    break RunStep::Continue;
                }
                let Some(k) = self.lists.key(src) else {
                    break RunStep::Continue;
                };
                *steps += 1;
                if newest.is_none_or(|n| k.ts > n) {
                    break RunStep::NotTaken(k);
                }
                self.lists.next[src] += 1;
                self.lists.out.push(k.ts);
                taken += 1;
            };
            self.runs += usize::from(taken > 0);
            Some(end)
        }
    }

    #[test]
    fn runs_move_the_same_records_within_the_same_budget() {
        const SOURCES: &[&[u64]] = &[&[1, 2, 3, 7, 8], &[4, 5, 9], &[6, 10, 11, 12]];
        let all: Vec<u64> = (1..=12).collect();
        let mem: MergeHeap<3, 1> = MergeHeap::new();
        let mut buf = RecordBuf::new();
        let mut merge = |budget: u64, stop_after: usize| {
            let mut m = RunLists {
                lists: Lists::new(SOURCES),
                runs: 0,
                stop_after,
                after_stop: 0,
            };
            let mut steps = 0;
            let o = run(&mut m, mem.view(), &mut buf, budget, &mut steps);
            (o, steps, m.lists.out, m.runs, m.after_stop)
        };
        // Whole: six runs (1-3, 4-5, 6, 7-8, 9, 10-12), 3 first heads + 12 records + 3 looks that
        // end a run at a newer record (7, 9, 10) + 3 that find a source dry, each with a head: 24.
        let (o, steps, out, runs, _) = merge(u64::MAX, usize::MAX);
        assert_eq!((o, &out, runs), (Outcome::Done, &all, 6));
        assert_eq!(steps, 3 + 12 + 3 + 3 + 3);
        // Within every budget: the very records, steps and outcome of the record-at-a-time merge
        // (a run takes no more looks, and no fewer records, than its loop would), never past the
        // budget, and done once the budget allows it.
        for budget in 0..40 {
            let (o, steps, out, _, _) = merge(budget, usize::MAX);
            let mut one = Lists::new(SOURCES);
            let mut one_steps = 0;
            let one_mem: MergeHeap<3, 1> = MergeHeap::new();
            let mut one_buf = RecordBuf::new();
            let one_o = run(
                &mut one,
                one_mem.view(),
                &mut one_buf,
                budget,
                &mut one_steps,
            );
            assert_eq!(
                (o, steps, &out),
                (one_o, one_steps, &one.out),
                "budget {budget}"
            );
            assert!(steps <= budget.max(3), "budget {budget}: {steps} steps");
            assert_eq!(&out[..], &all[..out.len()], "budget {budget}");
            if budget >= 26 {
                assert_eq!((o, out.len()), (Outcome::Done, 12), "budget {budget}");
            } else {
                assert_eq!(o, Outcome::Budget, "budget {budget}");
            }
        }
        // A merge told to stop moves nothing after that: not a run, not a record.
        for stop_after in 0..12 {
            let (o, _, out, _, after_stop) = merge(u64::MAX, stop_after);
            assert_eq!(o, Outcome::Interrupted, "stop after {stop_after}");
            assert_eq!(after_stop, 0, "stop after {stop_after}: {out:?}");
            assert!(out.len() >= stop_after, "stop after {stop_after}: {out:?}");
            assert_eq!(&out[..], &all[..out.len()]);
        }
    }

    #[test]
    fn a_run_s_timestamp_limit_is_the_engine_s_key_test() {
        // Every bound, runner-up and record key over small values (ties on every field).
        let keys = |n: u64| {
            (0..n).flat_map(move |ts| {
                (0..3u32).flat_map(move |tie| (0..3u32).map(move |src| Key { ts, tie, src }))
            })
        };
        for bound in 0..5 {
            for second in keys(5).map(Some).chain([None]) {
                for (tie, src) in [(0, 0), (1, 1), (1, 2), (2, 0)] {
                    let limit = run_ts_limit(tie, src, bound, second);
                    for ts in 0..6 {
                        let k = Key { ts, tie, src };
                        let engine = k.ts <= bound && second.is_none_or(|s| k < s);
                        assert_eq!(
                            limit.is_some_and(|l| ts <= l),
                            engine,
                            "{k:?} bound {bound} second {second:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn heap_interleaved_push_pop_stays_sorted() {
        let mem: MergeHeap<4, 2> = MergeHeap::new();
        let heap = mem.view();
        let mut x = 7u64;
        let mut last = Key {
            ts: 0,
            tie: 0,
            src: 0,
        };
        let mut live = 0;
        for i in 0..2000u32 {
            if live < 9 && !next(&mut x).is_multiple_of(3) {
                // A merge pushes a source back with a head no older than the head it popped.
                let k = Key {
                    ts: last.ts + next(&mut x) % 5,
                    tie: (next(&mut x) % 3) as u32,
                    src: i,
                };
                heap.push(k.max(last));
                live += 1;
            } else if let Some(k) = heap.pop() {
                assert!(k >= last, "{k:?} after {last:?}");
                last = k;
                live -= 1;
            }
        }
    }
}
