//! The move journal: the one move from a source ring into the main log that may be in progress, and
//! its replay after a takeover.
//!
//! Contract: only the flush owner writes the journal. Before each move it [records](Journal::record)
//! the main-log sequence number the record will get and the source cursor and timestamp to store once
//! the record is committed; after the cursor is stored it [clears](Journal::clear) the entry. An
//! owner stopped anywhere in between (frozen by a crash NMI) leaves an entry that the crash drain,
//! having taken ownership over, [replays](Journal::replay): if the record made it into the main log
//! its source cursor is advanced, otherwise the record stays in its ring and is moved again — so a
//! takeover neither loses nor duplicates a record. Every field is a word stored with a plain atomic
//! store (no read-modify-write), so the journal works on every target.

use super::accounting::{Consumer, TsCell};
use crate::ring::{before, Cursor, RecordRing};
use crate::sync::{const_or_loom_fn, AtomicUsize, Ordering};

/// The journal of the move in progress.
pub(super) struct Journal {
    /// Main-log sequence number of the record being moved, plus one; 0: no move in progress.
    valid: AtomicUsize,
    /// The source ring: `cpu * DEPTH + depth`.
    src: AtomicUsize,
    /// The source cursor to store once the main record is committed: position...
    pos: AtomicUsize,
    /// ...and sequence number.
    seq: AtomicUsize,
    /// The timestamp of the record being moved (the source's last moved timestamp once committed).
    ts: TsCell,
}

impl Journal {
    const_or_loom_fn! {
        /// An empty journal (no move in progress).
        pub(super) fn new() -> Self {
            Journal {
                valid: AtomicUsize::new(0),
                src: AtomicUsize::new(0),
                pos: AtomicUsize::new(0),
                seq: AtomicUsize::new(0),
                ts: TsCell::new(),
            }
        }
    }

    /// Records a move: the record with timestamp `ts` from source `src` becomes main-log record
    /// `main_seq`, after which that source's cursor is `next`.
    pub(super) fn record(&self, main_seq: usize, src: usize, next: Cursor, ts: u64) {
        self.src.store(src, Ordering::Relaxed);
        self.pos.store(next.pos, Ordering::Relaxed);
        self.seq.store(next.seq, Ordering::Relaxed);
        self.ts.set(ts);
        // LMM(journal:A): the entry's fields before its valid word. Pairs with LMM(journal:B) in the
        // takeover (which is also ordered after this by the NMI check-in handshake).
        self.valid
            .store(main_seq.wrapping_add(1), Ordering::Release);
    }

    /// Clears the entry once the move is complete (the source cursor is stored).
    pub(super) fn clear(&self) {
        self.valid.store(0, Ordering::Release);
    }

    /// Replays the journal after a takeover: if the stopped owner's record made it into the main log,
    /// advance its source cursor; otherwise the record stays in its ring and is moved again. First
    /// completes the main-log write the stopped owner may have abandoned half-way. Returns whether a
    /// move was completed.
    pub(super) fn replay<const MAIN_WORDS: usize, const CPUS: usize, const DEPTH: usize>(
        &self,
        main: &RecordRing<MAIN_WORDS>,
        consumers: &[[Consumer; DEPTH]; CPUS],
    ) -> bool {
        main.complete_abandoned_write();
        // LMM(journal:B): pairs with LMM(journal:A).
        let v = self.valid.load(Ordering::Acquire);
        if v == 0 {
            return false;
        }
        let mseq = v.wrapping_sub(1);
        let committed = before(mseq, main.next_seq() as usize);
        let src = self.src.load(Ordering::Relaxed);
        let (c, d) = (src / DEPTH, src % DEPTH);
        if committed && c < CPUS {
            let cons = &consumers[c][d];
            cons.set_cursor(Cursor {
                pos: self.pos.load(Ordering::Relaxed),
                seq: self.seq.load(Ordering::Relaxed),
            });
            cons.last_ts.set(self.ts.get());
        }
        self.valid.store(0, Ordering::Release);
        committed
    }
}
