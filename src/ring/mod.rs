//! A seqlocked ring of variable-length records with exactly one writer at a time.
//!
//! # Design
//!
//! Every CPU has one `RecordRing` per context nesting depth (see [`crate::percpu`]), so each ring has
//! a single writer: the code running at that depth on that CPU. An interrupt or NMI that lands in the
//! middle of a write runs at a greater depth and writes to a different ring. The main log is a
//! `RecordRing` too, written only by whoever holds flush ownership. A single writer needs no
//! read-modify-write atomics: every step below is a plain atomic load or store of one pointer-sized
//! word, which is native (and so NMI-safe) on every target, CAS-less ones included.
//!
//! The ring is an array of `WORDS` atomic words (a power of two; a smaller power of two can be set at
//! run time with [`RecordRing::set_capacity_words`]). Positions are *logical* word counts that only
//! grow (wrapping at `usize::MAX`); the array index is `pos & mask`. A record occupies
//!
//! ```text
//!  pos            pos+1 .. pos+1+HW          .. pos+span-1   pos+span
//! +--------------+--------------------------+-------------+----------------+
//! | sequence word | header (32 bytes)        | payload     | next seq word  |
//! +--------------+--------------------------+-------------+----------------+
//! ```
//!
//! where the *sequence word* is `(seq << 2) | state` with state `1` = being written (odd), `2` =
//! committed (even), `3` = "record `seq` starts at the beginning of the next lap" (a wrap marker), and
//! `0` = free. A record never straddles the end of the array: if it does not fit, the writer leaves a
//! wrap marker and starts the record at index 0. The word just after a record (its *terminator*) is
//! owned by the writer and holds `0` until the next record is written there; this is what lets a reader
//! that follows the chain of records tell "nothing here yet" from stale payload bytes that happen to
//! look like a sequence word.
//!
//! `tail` is the logical position of the oldest intact record; the writer moves it forward past the
//! records it is about to overwrite *before* it touches them, and a reader re-checks it after copying,
//! so a record whose bytes were overwritten under a reader is never delivered.
//!
//! # Write protocol (one writer; plain loads and stores only)
//!
//! 1. Reserve: read `head` and `next_seq` (own state). If the record does not fit before the end of
//!    the array, its start moves to the next lap. Advance the local tail past every record that
//!    overlaps `[head, start + span]` (bounded: at most one step per overwritten record).
//! 2. `tail.store(t, Release)` — **LMM(write:A)**, pairs with LMM(read:B) and LMM(read:C).
//! 3. `seq_word(start).store(WRITING(seq))` — `Release` when step 1 moved the tail, **LMM(write:E)**,
//!    pairs with LMM(read:A)/LMM(read:B): the odd word may land on a record the tail just passed and
//!    must not be seen before the tail is; if wrapping, `seq_word(head).store(WRAP(seq), Release)`
//!    — **LMM(write:B)**, pairs with LMM(read:A): a reader that sees the wrap marker sees the record's
//!    odd sequence word.
//! 4. `fence(Release)` — **LMM(write:C)**, pairs with LMM(read:C): a reader that observed any of the
//!    data stores below also observes steps 2–3 (so it sees the odd word or the moved tail); and
//!    with LMM(read:D): a resync that sees the step-7 `next_seq` sees the odd word.
//! 5. Read the clock (after step 3, so the normal-context flush can bound the timestamp of any record
//!    it cannot see yet; see [`crate::Log::flush`]), then store the header and payload words
//!    (`Relaxed`) and the terminator `0`.
//! 6. `seq_word(start).store(COMMITTED(seq), Release)` — **LMM(write:D)**, pairs with LMM(read:A):
//!    whoever sees the even word sees the header, payload and terminator.
//! 7. `next_seq.store`, then `head.store` (`Relaxed`; the writer, the crash drain's snapshot and a
//!    resync read them; a resync's `next_seq` load, LMM(read:D), pairs with LMM(write:C); the
//!    snapshot of a stopped writer is ordered by the stop handshake, and the order lets it
//!    recognise a writer stopped between the two stores: its record is committed and counted in
//!    `next_seq`).
//!
//! # Read protocol (any number of readers; never blocks the writer, never loops)
//!
//! A reader holds a [`Cursor`] `(pos, seq)`. One call to [`RecordRing::read`]:
//!
//! 1. `w = seq_word(pos).load(Acquire)` — **LMM(read:A)**; a wrap marker for `seq` moves `pos` to the
//!    next lap start and loads that word the same way (once).
//! 2. If `w == COMMITTED(seq)`: copy the header and payload words (`Relaxed`), `fence(Acquire)`
//!    — **LMM(read:C)**, pairs with LMM(write:C) — then reload `tail` and the sequence word. The copy is
//!    valid if the word is unchanged and `pos` is not behind `tail`; otherwise it was overwritten while
//!    copying and the cursor is resynchronised.
//! 3. Otherwise `tail.load(Acquire)` — **LMM(read:B)**, pairs with LMM(write:A). If `pos` is behind the
//!    tail the reader was lapped: it jumps to the tail and learns exactly how many records it missed from
//!    the sequence word there (`next_seq.load(Acquire)` first — **LMM(read:D)**, pairs with
//!    LMM(write:C) — for a tail whose record is not started yet). Else the record is in flight (odd
//!    word) or not written yet.
//!
//! Sequence words hold `seq` modulo `2^(usize::BITS - 2)`; a reader that sleeps through exactly that
//! many records could be fooled (the same ABA bound as the kernel's 32-bit descriptor ids).
//!
//! # Layout
//!
//! This file holds the word encoding, the public types and the ring's state; `write` holds the
//! write protocol, `read` the read protocol.

mod read;
mod run;
mod write;
pub(crate) use run::RunEnd;
pub use run::{RunRecord, RunRecords};
pub(crate) use write::{PayloadSource, WordPacker};

use crate::record::{HEADER_BYTES, MAX_PAYLOAD};
use crate::sync::{array_of, const_or_loom_fn, AtomicUsize, Ordering};

const WORD: usize = core::mem::size_of::<usize>();
/// Header size in ring words.
pub(crate) const HEADER_WORDS: usize = HEADER_BYTES / WORD;
/// Index, within the header words, of the word whose low 16 bits are the payload length.
const LEN_WORD: usize = 16 / WORD;

const ST_FREE: usize = 0;
const ST_WRITING: usize = 1;
const ST_COMMITTED: usize = 2;
const ST_WRAP: usize = 3;
const ST_MASK: usize = 3;
const SEQ_MASK: usize = usize::MAX >> 2;

#[inline(always)]
const fn enc(seq: usize, st: usize) -> usize {
    (seq << 2) | st
}

/// `a` comes strictly before `b` in logical position order (wrapping).
#[inline(always)]
pub(crate) const fn before(a: usize, b: usize) -> bool {
    (a.wrapping_sub(b) as isize) < 0
}

/// Number of ring words a record with a `len`-byte payload occupies (sequence word, header, payload;
/// the terminator is shared with the next record).
///
/// ```
/// use nmilog::ring::span_words;
/// let word = core::mem::size_of::<usize>();
/// let empty = span_words(0); // sequence word + header words
/// assert_eq!(empty, 1 + nmilog::HEADER_BYTES / word);
/// assert_eq!(span_words(1), empty + 1);
/// assert_eq!(span_words(word), empty + 1);
/// assert_eq!(span_words(word + 1), empty + 2);
/// ```
#[inline(always)]
pub const fn span_words(len: usize) -> usize {
    1 + HEADER_WORDS + len.div_ceil(WORD)
}

/// [`span_words`] of a length that fits a header's 16-bit length field (one read from a header,
/// or a payload already checked against [`MAX_PAYLOAD`](crate::MAX_PAYLOAD)): one add and one
/// shift, which cannot overflow for such a length (the writer's walk over the records it
/// overwrites takes its spans from here).
#[inline(always)]
pub(crate) const fn span_of_short(len: u16) -> usize {
    (len as usize + (2 + HEADER_WORDS) * WORD - 1) / WORD
}

// The writer's size check hands `span_of_short` a payload no longer than `MAX_PAYLOAD`, and its sum
// cannot overflow for any 16-bit length (it would on a 16-bit target).
const _: () = assert!(crate::MAX_PAYLOAD <= u16::MAX as usize);
const _: () = assert!(usize::MAX - u16::MAX as usize >= (2 + HEADER_WORDS) * WORD);

/// The largest span a ring of `cap` words accepts: a record plus its terminator, plus the words a wrap
/// marker may waste, must fit in the ring.
#[inline(always)]
const fn max_span(cap: usize) -> usize {
    // Saturating: a ring read from damaged memory may have a capacity of a word or two.
    (cap / 2).saturating_sub(1)
}

/// The largest payload, in bytes, that a ring of `cap_words` words accepts.
///
/// ```
/// use nmilog::ring::{max_payload_for, span_words};
/// // Small rings are limited by their size (a record may take under half the ring)…
/// let p = max_payload_for(64);
/// assert!(p < nmilog::MAX_PAYLOAD);
/// assert!(span_words(p) < 64 / 2);
/// // …large ones by MAX_PAYLOAD.
/// assert_eq!(max_payload_for(1 << 12), nmilog::MAX_PAYLOAD);
/// ```
pub const fn max_payload_for(cap_words: usize) -> usize {
    let by_ring = max_span(cap_words).saturating_sub(1 + HEADER_WORDS) * WORD;
    if by_ring < MAX_PAYLOAD {
        by_ring
    } else {
        MAX_PAYLOAD
    }
}

/// The steps of the write protocol, in order, as reported to a [`StepHook`].
///
/// ```
/// use nmilog::ring::{RecordRing, WriteStep};
/// use nmilog::Header;
/// let ring: RecordRing<64> = RecordRing::new();
/// let mut seen = Vec::new();
/// let mut hook = |s: WriteStep| { seen.push(s); true };
/// ring.write(|_| Header::default(), b"hi", &mut hook).unwrap();
/// assert_eq!(seen, WriteStep::ALL);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteStep {
    /// The writer is inside the call (after the recursion guard), nothing written yet.
    Entered,
    /// The tail has been moved past the records about to be overwritten.
    TailAdvanced,
    /// The odd sequence word (and the wrap marker) are stored.
    Reserved,
    /// The header words are stored.
    HeaderWritten,
    /// Half of the payload words are stored.
    PayloadHalf,
    /// All payload words and the terminator are stored.
    PayloadWritten,
    /// The even sequence word is stored.
    Committed,
    /// `head` and `next_seq` are published.
    Published,
}

impl WriteStep {
    /// Every step, in protocol order.
    ///
    /// ```
    /// use nmilog::ring::WriteStep;
    /// assert_eq!(WriteStep::ALL.first(), Some(&WriteStep::Entered));
    /// assert_eq!(WriteStep::ALL.last(), Some(&WriteStep::Published));
    /// ```
    pub const ALL: [WriteStep; 8] = [
        WriteStep::Entered,
        WriteStep::TailAdvanced,
        WriteStep::Reserved,
        WriteStep::HeaderWritten,
        WriteStep::PayloadHalf,
        WriteStep::PayloadWritten,
        WriteStep::Committed,
        WriteStep::Published,
    ];
}

/// Called by the writer between the steps of the write protocol.
///
/// Production code uses [`NoHook`], which compiles to nothing. Tests, the fuzzer and loom harnesses
/// use hooks to run other operations "inside" a write (as an interrupt or NMI would), or to freeze the
/// writer at a step forever (as the crash NMI does): returning `false` makes the writer return
/// [`WriteError::Frozen`] at once, leaving the ring exactly as a CPU stopped at that point would.
///
/// Closures `FnMut(WriteStep) -> bool` are hooks. A writer frozen after reserving its record leaves
/// it in flight for readers:
///
/// ```
/// use nmilog::ring::{Cursor, Read, RecordRing, WriteError, WriteStep};
/// use nmilog::{Header, RecordBuf};
/// let ring: RecordRing<64> = RecordRing::new();
/// let mut freeze = |s: WriteStep| s != WriteStep::Reserved;
/// let r = ring.write(|_| Header::default(), b"lost", &mut freeze);
/// assert_eq!(r, Err(WriteError::Frozen));
/// assert_eq!(ring.read(&mut Cursor::START, &mut RecordBuf::new()), Read::InFlight);
/// ```
pub trait StepHook {
    /// Called after `step` has been carried out. Return `false` to stop the writer there.
    ///
    /// ```
    /// use nmilog::ring::{StepHook, WriteStep};
    /// struct Count(usize);
    /// impl StepHook for Count {
    ///     fn step(&mut self, _: WriteStep) -> bool { self.0 += 1; self.0 < 3 }
    /// }
    /// let mut c = Count(0);
    /// assert!(c.step(WriteStep::Entered) && c.step(WriteStep::TailAdvanced));
    /// assert!(!c.step(WriteStep::Reserved));
    /// ```
    fn step(&mut self, step: WriteStep) -> bool;
}

/// The hook that does nothing.
///
/// ```
/// use nmilog::ring::{NoHook, StepHook, WriteStep};
/// assert!(WriteStep::ALL.iter().all(|&s| NoHook.step(s)));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHook;

impl StepHook for NoHook {
    #[inline(always)]
    fn step(&mut self, _: WriteStep) -> bool {
        true
    }
}

impl<F: FnMut(WriteStep) -> bool> StepHook for F {
    fn step(&mut self, step: WriteStep) -> bool {
        self(step)
    }
}

/// Why a write did not commit.
///
/// ```
/// use nmilog::ring::{max_payload_for, NoHook, RecordRing, WriteError, WriteStep};
/// use nmilog::Header;
/// let ring: RecordRing<64> = RecordRing::new();
/// let big = vec![0u8; max_payload_for(64) + 1];
/// let r = ring.write(|_| Header::default(), &big, &mut NoHook);
/// assert_eq!(r, Err(WriteError::TooLarge));
/// let r = ring.write(|_| Header::default(), b"x", &mut |_: WriteStep| false);
/// assert_eq!(r, Err(WriteError::Frozen));
/// assert_eq!(WriteError::TooLarge.to_string(), "payload larger than the ring accepts");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The payload is larger than this ring accepts ([`max_payload_for`]).
    TooLarge,
    /// A [`StepHook`] stopped the writer (test harnesses only).
    Frozen,
}

impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WriteError::TooLarge => "payload larger than the ring accepts",
            WriteError::Frozen => "writer stopped by a step hook",
        })
    }
}

impl core::error::Error for WriteError {}

/// A reader's position in a ring: the logical word position and sequence number of the next record.
///
/// ```
/// use nmilog::ring::{Cursor, NoHook, RecordRing};
/// use nmilog::{Header, RecordBuf};
/// let ring: RecordRing<64> = RecordRing::new();
/// ring.write(|_| Header::default(), b"a", &mut NoHook).unwrap();
/// let mut cur = Cursor::START;
/// ring.read(&mut cur, &mut RecordBuf::new());
/// assert_eq!(cur.seq(), 1);
/// assert_ne!(cur, Cursor::START);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) pos: usize,
    pub(crate) seq: usize,
}

impl Cursor {
    /// The cursor at the very beginning of a ring that was never written.
    ///
    /// ```
    /// use nmilog::ring::{Cursor, RecordRing};
    /// assert_eq!(Cursor::START, Cursor::default());
    /// let ring: RecordRing<64> = RecordRing::new();
    /// assert_eq!(ring.oldest(), Cursor::START);
    /// ```
    pub const START: Cursor = Cursor { pos: 0, seq: 0 };

    /// Sequence number of the next record this cursor will read.
    ///
    /// ```
    /// # use nmilog::ring::{Cursor, NoHook, RecordRing};
    /// # use nmilog::{Header, RecordBuf};
    /// let ring: RecordRing<64> = RecordRing::new();
    /// for _ in 0..3 {
    ///     ring.write(|_| Header::default(), b"x", &mut NoHook).unwrap();
    /// }
    /// let mut cur = Cursor::START;
    /// assert_eq!(cur.seq(), 0);
    /// while ring.read(&mut cur, &mut RecordBuf::new()) == nmilog::ring::Read::Record {}
    /// assert_eq!(cur.seq(), 3);
    /// ```
    pub fn seq(&self) -> u64 {
        self.seq as u64
    }
}

/// The outcome of one [`RecordRing::read`] call.
///
/// A reader that falls a lap behind learns how many records it lost:
///
/// ```
/// use nmilog::ring::{Cursor, NoHook, Read, RecordRing};
/// use nmilog::{Header, RecordBuf};
/// let ring: RecordRing<64> = RecordRing::new();
/// let (mut cur, mut buf) = (Cursor::START, RecordBuf::new());
/// assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
/// for _ in 0..20 {
///     ring.write(|_| Header::default(), b"0123456789", &mut NoHook).unwrap();
/// }
/// let missed = ring.oldest().seq();
/// assert!(missed > 0);
/// assert_eq!(ring.read(&mut cur, &mut buf), Read::Overwritten { missed });
/// assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// A valid record was copied into the buffer; the cursor moved past it.
    Record,
    /// No record after the cursor yet.
    Empty,
    /// The next record is being written (its sequence word is odd). If its writer is known to be
    /// stopped for good, the record is torn.
    InFlight,
    /// The cursor had been overtaken by the writer; it now points at the oldest intact record and
    /// `missed` records were overwritten before this reader saw them (`0` when the resynchronisation
    /// itself raced with the writer: call again).
    Overwritten {
        /// Records lost to this reader.
        missed: u64,
    },
}

/// A seqlocked ring of variable-length records (see the [module docs](self) for the protocol).
///
/// ```
/// use nmilog::ring::{Cursor, NoHook, Read, RecordRing};
/// use nmilog::{Header, RecordBuf};
///
/// let ring: RecordRing<64> = RecordRing::new();
/// ring.write(|_seq| Header { ts_ns: 1, ..Header::default() }, b"hello", &mut NoHook).unwrap();
/// let mut cur = Cursor::START;
/// let mut buf = RecordBuf::new();
/// assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
/// assert_eq!(buf.payload(), b"hello");
/// assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
/// ```
#[repr(C)]
pub struct Ring<W: ?Sized = [AtomicUsize]> {
    head: AtomicUsize,
    next_seq: AtomicUsize,
    tail: AtomicUsize,
    /// Recursion guard for per-CPU rings: `(seq << 1) | 1` while a log call whose record will be
    /// `seq` is inside, 0 otherwise.
    pub(crate) active: AtomicUsize,
    /// Records the writer refused (recursion, too large).
    dropped: AtomicUsize,
    /// `(capacity - 1) ^ (words - 1)`: zero at full capacity, so a `static` ring is all zeros and
    /// lands in `.bss`, not in the image.
    mask_xor: AtomicUsize,
    data: W,
}

/// A ring of `WORDS` words, sized at compile time: what a `static` logger holds.
///
/// Every operation is written once for any [`Ring`]; a `&RecordRing<WORDS>` also coerces to the
/// unsized `&Ring`, the same ring with its size known only at run time (a boot-time arena, a crash
/// dump).
pub type RecordRing<const WORDS: usize> = Ring<[AtomicUsize; WORDS]>;

/// The words of a ring: an array (size known at compile time) or a slice (known at run time).
/// Sealed: implemented for `[AtomicUsize; N]` and `[AtomicUsize]` only.
pub trait RingWords: sealed::Sealed {
    /// The words.
    fn words(&self) -> &[AtomicUsize];
}

mod sealed {
    pub trait Sealed {}
    impl<const N: usize> Sealed for [super::AtomicUsize; N] {}
    impl Sealed for [super::AtomicUsize] {}
}

impl<const N: usize> RingWords for [AtomicUsize; N] {
    #[inline(always)]
    fn words(&self) -> &[AtomicUsize] {
        self
    }
}

impl RingWords for [AtomicUsize] {
    #[inline(always)]
    fn words(&self) -> &[AtomicUsize] {
        self
    }
}

/// Words a ring's state takes before its data (head, next_seq, tail, guard, dropped, mask).
pub const RING_STATE_WORDS: usize = 6;

impl<const WORDS: usize> Ring<[AtomicUsize; WORDS]> {
    const_or_loom_fn! {
        /// An empty ring of `WORDS` words.
        ///
        /// ```
        /// use nmilog::ring::RecordRing;
        /// static RING: RecordRing<256> = RecordRing::new(); // `const`: fine in a `static`
        /// assert_eq!(RING.capacity_words(), 256);
        /// assert_eq!(RING.next_seq(), 0);
        /// ```
        pub fn new() -> Self {
            const {
                assert!(
                    WORDS == 0 || (WORDS.is_power_of_two() && WORDS >= 32),
                    "ring size must be a power of two of at least 32 words (or 0: sized at boot)"
                )
            };
            Ring {
                head: AtomicUsize::new(0),
                next_seq: AtomicUsize::new(0),
                tail: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
                mask_xor: AtomicUsize::new(0),
                data: array_of!(AtomicUsize::new(0); WORDS),
            }
        }
    }
}

#[cfg(not(nmilog_loom))]
impl Ring {
    /// The ring laid out in `words`: its [`RING_STATE_WORDS`] state words, then its data (a power of
    /// two of at least 32 words). `None` if `words` has another length. All-zero words are an empty
    /// ring; the words of a ring that was in use (a crash dump copied into memory) are that ring, to
    /// be read — a reader never trusts them: a damaged ring reads as damaged records, never as
    /// undefined behaviour or a panic. Only a ring's one writer may write to it.
    pub(crate) fn from_words(words: &[AtomicUsize]) -> Option<&Ring> {
        let data = words.len().checked_sub(RING_STATE_WORDS)?;
        if !data.is_power_of_two() || data < 32 {
            return None;
        }
        let p = core::ptr::slice_from_raw_parts(words.as_ptr(), data) as *const Ring;
        // SAFETY: `Ring` is `repr(C)`: six `AtomicUsize` fields, then a slice of `AtomicUsize`,
        // all of one size and alignment with no padding, so a `Ring` with `data` tail words is
        // exactly `RING_STATE_WORDS + data` words laid out as `words` is. The cast keeps the slice
        // metadata (`data`: the tail's length) and the address, which is aligned for
        // `AtomicUsize`; every bit pattern is a valid `AtomicUsize`; the result borrows `words` for
        // its lifetime, and atomics allow shared access.
        Some(unsafe { &*p })
    }
}

impl<W: ?Sized + RingWords> Ring<W> {
    /// Uses only the first `words` words (rounded down to a power of two, at least 32, at most
    /// `WORDS`). Only allowed while the ring was never written; returns the capacity in effect.
    ///
    /// ```
    /// use nmilog::ring::{NoHook, RecordRing};
    /// use nmilog::Header;
    /// let ring: RecordRing<1024> = RecordRing::new();
    /// assert_eq!(ring.set_capacity_words(100), Ok(64)); // rounded down to a power of two
    /// assert_eq!(ring.capacity_words(), 64);
    /// ring.write(|_| Header::default(), b"x", &mut NoHook).unwrap();
    /// assert_eq!(ring.set_capacity_words(1024), Err(64)); // too late: already written
    /// ```
    pub fn set_capacity_words(&self, words: usize) -> Result<usize, usize> {
        let cur = self.capacity_words();
        if self.next_seq.load(Ordering::Relaxed) != 0 {
            return Err(cur);
        }
        let w = words.clamp(32, self.len());
        let w = if w.is_power_of_two() {
            w
        } else {
            w.next_power_of_two() / 2
        };
        self.mask_xor
            .store((w - 1) ^ (self.len() - 1), Ordering::Relaxed);
        Ok(w)
    }

    /// Capacity in words.
    ///
    /// ```
    /// use nmilog::ring::RecordRing;
    /// let ring: RecordRing<128> = RecordRing::new();
    /// assert_eq!(ring.capacity_words(), 128);
    /// ring.set_capacity_words(32).unwrap();
    /// assert_eq!(ring.capacity_words(), 32);
    /// ```
    pub fn capacity_words(&self) -> usize {
        self.mask() + 1
    }

    /// The largest payload this ring accepts, in bytes.
    ///
    /// ```
    /// use nmilog::ring::{max_payload_for, NoHook, RecordRing};
    /// use nmilog::Header;
    /// let ring: RecordRing<64> = RecordRing::new();
    /// assert_eq!(ring.max_payload(), max_payload_for(64));
    /// let fits = vec![b'a'; ring.max_payload()];
    /// assert!(ring.write(|_| Header::default(), &fits, &mut NoHook).is_ok());
    /// ```
    pub fn max_payload(&self) -> usize {
        max_payload_for(self.capacity_words())
    }

    /// Sequence number the next record will get (the writer's view).
    ///
    /// ```
    /// use nmilog::ring::{NoHook, RecordRing};
    /// use nmilog::Header;
    /// let ring: RecordRing<64> = RecordRing::new();
    /// let seq = ring.write(|_| Header::default(), b"x", &mut NoHook).unwrap();
    /// assert_eq!((seq, ring.next_seq()), (0, 1));
    /// ```
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed) as u64
    }

    /// Records the writer refused (recursion, oversize), ever.
    ///
    /// A [`Log`](crate::Log) counts its refused appends here, in the ring of the CPU and depth
    /// that made the call:
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, AppendError, Level, Log, MAX_PAYLOAD};
    /// static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// HostPlatform::register_cpu(0);
    /// let big = [0u8; MAX_PAYLOAD + 1];
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, &big), Err(AppendError::TooLarge));
    /// assert_eq!(LOG.cpu(0).unwrap().rings[0].dropped(), 1);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) as u64
    }

    /// Counts one refused record (writer side: plain load and store, the writer is alone).
    #[inline]
    pub(crate) fn count_drop(&self) {
        let d = self.dropped.load(Ordering::Relaxed);
        self.dropped.store(d.wrapping_add(1), Ordering::Relaxed);
    }

    /// Takes back `n` counted refusals (writer side; a formatted record's second formatting pass
    /// repeats the refusals its first pass already counted).
    #[inline]
    pub(crate) fn uncount_drops(&self, n: u64) {
        let d = self.dropped.load(Ordering::Relaxed);
        self.dropped
            .store(d.wrapping_sub(n as usize), Ordering::Relaxed);
    }

    /// Whether a log call is in progress on this ring (the recursion guard is set). Relaxed: for
    /// the ring's own CPU (the recursion check), program order is enough — LMM(guard:B).
    #[inline(always)]
    pub(crate) fn guard_set(&self) -> bool {
        // LMM(guard:B): pairs with LMM(guard:A) (same CPU).
        self.active.load(Ordering::Relaxed) != 0
    }

    /// Sets the recursion guard for a log call (the ring's own CPU only): the word carries the
    /// sequence number the call's record will get (the writer's `next_seq`, its own state), so that
    /// the crash drain can tell "published" from "not yet" whatever it sees of `next_seq` and the
    /// guard ([`call_in_progress`](Self::call_in_progress)).
    #[inline(always)]
    pub(crate) fn set_guard(&self) {
        let seq = self.next_seq.load(Ordering::Relaxed);
        self.active.store((seq << 1) | 1, Ordering::Relaxed);
    }

    /// Clears the recursion guard at the end of a log call. LMM(guard:C): Release, pairs with
    /// LMM(guard:D) in [`call_in_progress`](Self::call_in_progress): a crash drain that sees the
    /// guard cleared sees the call's `next_seq` and `head` (on a CPU that did not stop, too).
    #[inline(always)]
    pub(crate) fn clear_guard(&self) {
        self.active.store(0, Ordering::Release);
    }

    /// The crash drain's look at a ring's guard: the sequence number (modulo `2^(usize::BITS - 1)`)
    /// of the log call in progress, or `None`. LMM(guard:D): Acquire, pairs with LMM(guard:C): a
    /// call seen finished has its `next_seq` visible to the loads that follow; for a CPU known to
    /// be stopped the stop handshake (LMM(checkin:A/B)) orders everything anyway.
    pub(crate) fn call_in_progress(&self) -> Option<usize> {
        let g = self.active.load(Ordering::Acquire);
        (g & 1 != 0).then_some(g >> 1)
    }

    /// The ring's `next_seq` as the writer stores it (a word: the flush compares it with its
    /// cursor's and hands it to [`writer_inside_unpublished`](Self::writer_inside_unpublished)).
    #[inline(always)]
    pub(crate) fn next_seq_word(&self) -> usize {
        self.next_seq.load(Ordering::Relaxed)
    }

    /// Whether the writer is inside a log call whose record is not published yet: the guard's
    /// sequence number is `next_seq`, the ring's `next_seq` as the caller loaded it
    /// ([`next_seq_word`](Self::next_seq_word), before this call) — the flush's "nothing new
    /// here" check.
    #[inline(always)]
    pub(crate) fn writer_inside_unpublished(&self, next_seq: usize) -> bool {
        self.call_in_progress() == Some(next_seq & (usize::MAX >> 1))
    }

    /// Words of data (a power of two).
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.data.words().len()
    }

    /// Whether the ring has its whole size (`set_capacity_words` did not shrink it): then its mask
    /// is `len() - 1`.
    #[inline(always)]
    fn at_whole_size(&self) -> bool {
        self.mask_xor.load(Ordering::Relaxed) == 0
    }

    /// Capacity in words minus one. The `& (len - 1)` keeps it inside the data whatever the mask
    /// word holds (a ring read from a damaged dump): an index is always in bounds.
    #[inline(always)]
    fn mask(&self) -> usize {
        let top = self.len() - 1;
        (self.mask_xor.load(Ordering::Relaxed) ^ top) & top
    }

    #[inline(always)]
    fn word(&self, pos: usize, mask: usize) -> &AtomicUsize {
        // `mask <= len - 1` and both are powers of two minus one, so the extra `& (len - 1)`
        // changes nothing for a well-formed ring, but keeps any index in bounds (and, for an array
        // ring, lets the compiler drop the bounds check: no unsafe needed).
        let w = self.data.words();
        &w[pos & mask & (w.len() - 1)]
    }
}

impl<const WORDS: usize> Default for RecordRing<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

/// Shows the ring's state words (`Relaxed` loads, a snapshot for diagnostics), not its data.
///
/// ```
/// use nmilog::ring::{span_words, NoHook, RecordRing};
/// use nmilog::Header;
/// let ring: RecordRing<64> = RecordRing::new();
/// ring.write(|_| Header::default(), b"x", &mut NoHook).unwrap();
/// let head = span_words(1);
/// assert_eq!(
///     format!("{ring:?}"),
///     format!("RecordRing {{ capacity_words: 64, head: {head}, tail: 0, next_seq: 1, dropped: 0, active: 0 }}")
/// );
/// ```
impl<W: ?Sized + RingWords> core::fmt::Debug for Ring<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecordRing")
            .field("capacity_words", &self.capacity_words())
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.tail.load(Ordering::Relaxed))
            .field("next_seq", &self.next_seq.load(Ordering::Relaxed))
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(all(test, not(nmilog_loom)))]
mod tests;
