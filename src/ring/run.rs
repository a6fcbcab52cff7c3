//! Runs: consecutive records of one ring copied as they lie (sequence word, header words, payload
//! words) under **one** validation, and [`RunRecords`], which reads such a copy back.
//!
//! Contract: [`Ring::read_run`] is a reader like [`Ring::read`](super::Ring::read) — it never
//! blocks the writer, never loops beyond the records it copies (at most `max`, at most what fits
//! in `out`), and a run it reports as taken holds no word that changed while it was copied. It
//! takes only committed records that each lie in one piece of the array; anything else (a wrap
//! marker, a record in flight, a lapped cursor, a damaged length) ends the run *before* that
//! record, for the record-at-a-time read to judge. (A record that ends exactly at the end of the
//! array is followed by one at its start, with no wrap marker between: a run goes on there.)
//!
//! Why one validation is enough: the read protocol's per-record check (module docs, step 2) is
//! "the cursor's position is not behind the tail, and its sequence word is unchanged". A writer
//! moves the tail past a record before it touches any of its words (LMM(write:A), ordered before
//! the data stores by LMM(write:C), before the odd word by LMM(write:E)), so after one
//! `fence(Acquire)` a tail that is not past the run's *first* record proves that no word at or after
//! it — the whole run, and the header of the record that ended it — came from a newer lap.
//!
//! One pass: each record's words are loaded once, its sequence word and header into registers
//! (checked, then stored into `out`), its payload word by word into `out`. (Walking the headers
//! first and copying the run in a second loop takes about a tenth fewer instructions but reads
//! every word twice, and measured slower: the walk is a chain of dependent loads — where a record
//! starts depends on the previous record's length — and a run longer than the L1 cache comes back
//! from L2 for the copy.)

use super::{
    before, enc, max_payload_for, span_of_short, span_words, Cursor, Ring, RingWords, HEADER_WORDS,
    LEN_WORD, SEQ_MASK, ST_COMMITTED, ST_MASK, WORD,
};
use crate::record::{Header, RecordBuf, HEADER_BYTES, MAX_PAYLOAD};
use crate::sync::{fence, AtomicUsize, Ordering};

/// How a run ended (see [`Ring::read_run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// `take` refused the record after the run (its timestamp, validated with the run).
    NotTaken(u64),
    /// `max` records taken, or the next one did not fit in `out`.
    Full,
    /// The next word is not a committed record of the cursor's sequence (a wrap marker, a record in
    /// flight, nothing yet, a lapped cursor) or the record is damaged: the record-at-a-time read
    /// decides what it is.
    Other,
    /// A writer overwrote, or had begun to overwrite, the run's first record while its records
    /// were read: nothing was taken.
    Invalid,
}

/// The timestamp (the header's first 8 bytes, little-endian) and the payload length (its bytes
/// 16-17) of a record whose header words are `hw` (the ring holds header bytes as little-endian
/// words: the same values on every target).
#[inline(always)]
fn ts_and_len(hw: &[usize; HEADER_WORDS]) -> (u64, u16) {
    let mut ts = 0u64;
    for (i, &v) in hw.iter().take(8 / WORD).enumerate() {
        ts |= (v as u64) << (i * 8 * WORD);
    }
    (ts, hw[LEN_WORD] as u16)
}

/// What [`Ring::read_run`] took: `records` records in the first `words` words of `out`, the cursor
/// after them, the newest timestamp among them, and why the run ended; `looked` counts the records
/// whose headers it read (for the caller's step count, also when the run was invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunRead {
    /// Records whose header was read: those taken, and the one `take` refused.
    pub(crate) looked: usize,
    pub(crate) records: usize,
    pub(crate) words: usize,
    pub(crate) next: Cursor,
    pub(crate) last_ts: u64,
    pub(crate) end: RunEnd,
}

impl<W: ?Sized + RingWords> Ring<W> {
    /// Copies the committed records from `cur` on into `out`, as they lie in the ring, while
    /// `take(timestamp)` says so: at most `max` records, at most `out.len()` words; a wrap marker
    /// ends a run. One validation for the whole run: either every record reported is intact, or
    /// [`RunEnd::Invalid`] and none is.
    #[inline(never)]
    pub(crate) fn read_run(
        &self,
        cur: Cursor,
        max: usize,
        out: &mut [usize],
        mut take: impl FnMut(u64) -> bool,
    ) -> RunRead {
        let mask = self.mask();
        let cap = mask + 1;
        let max_len = max_payload_for(cap);
        let data = self.data.words();
        // The array's first `cap` words (all of it but for a ring set smaller at run time: `mask`
        // is never more than the array's length less one).
        let ring = data.get(..cap).unwrap_or_default();
        let (mut pos, mut last_ts) = (cur.pos, 0);
        let room = out.len();
        // The part of `out` not filled yet.
        let mut rest = &mut *out;
        // `want`: the sequence word the next record must have (`enc(seq, ST_COMMITTED)`, one
        // sequence number on per record). It also counts the records taken: the run is full when
        // it reaches `done`, `max` records on, and `records` below is the distance from `first`.
        // `max` is held to `SEQ_MASK`, the most records sequence words tell apart, so that
        // `enc(max, 0)` does not wrap round to a shorter run (no run comes near it: each record
        // takes five words or more).
        let max = max.min(SEQ_MASK);
        let first = enc(cur.seq, ST_COMMITTED);
        let (mut want, done) = (first, first.wrapping_add(enc(max, 0)));
        // `header` is 1 when the loop ends after reading the header of the record that ended the
        // run.
        let (end, header) = loop {
            if want == done {
                break (RunEnd::Full, 0);
            }
            let base = pos & mask;
            // A record lies in one piece of the array (the writer moves one that would not fit to
            // the next lap): a sequence word and header past the end of the ring is a torn or
            // damaged record's.
            let Some([w, hdr @ ..]) = ring
                .get(base..)
                .and_then(<[AtomicUsize]>::first_chunk::<{ 1 + HEADER_WORDS }>)
            else {
                break (RunEnd::Other, 0);
            };
            // LMM(read:A): pairs with LMM(write:D): a committed word seen here means the record's
            // words loaded below are that record's, or a newer lap's (which the one LMM(read:C)
            // check after the loop catches).
            let w = w.load(Ordering::Acquire);
            if w != want {
                break (RunEnd::Other, 0);
            }
            let mut hw = [0usize; HEADER_WORDS];
            for (o, a) in hw.iter_mut().zip(hdr) {
                *o = a.load(Ordering::Relaxed);
            }
            let (ts, len) = ts_and_len(&hw);
            // A 16-bit length's span: one add and one shift.
            let span = span_of_short(len);
            // A length no record of this ring has, or a record across the end of the ring.
            let body = match ring.get(base + 1 + HEADER_WORDS..base + span) {
                Some(body) if len as usize <= max_len => body,
                _ => break (RunEnd::Other, 1),
            };
            if !take(ts) {
                break (RunEnd::NotTaken(ts), 1);
            }
            if span > rest.len() {
                break (RunEnd::Full, 1);
            }
            let (dst, more) = core::mem::take(&mut rest).split_at_mut(span);
            let (head, tail) = dst.split_at_mut(1 + HEADER_WORDS);
            head[0] = w;
            head[1..].copy_from_slice(&hw);
            for (o, a) in tail.iter_mut().zip(body) {
                *o = a.load(Ordering::Relaxed);
            }
            rest = more;
            last_ts = last_ts.max(ts);
            pos = pos.wrapping_add(span);
            want = want.wrapping_add(enc(1, 0));
        };
        let records = want.wrapping_sub(first) / enc(1, 0);
        let words = room - rest.len();
        let looked = records + header;
        // LMM(read:C): pairs with LMM(write:C) (and through it LMM(write:A)): one fence for the
        // whole run. If any word loaded above came from a newer lap, the tail move that preceded it
        // is visible here, and it is past the run's first record.
        fence(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Relaxed);
        if before(cur.pos, tail) {
            return RunRead {
                looked,
                records: 0,
                words: 0,
                next: cur,
                last_ts: 0,
                // Invalid if the run read any record; a cursor the writer had lapped before the run
                // began (its first word not the record it expects) is the one-record read's to
                // resynchronise, and costs the run nothing.
                end: if looked > 0 {
                    RunEnd::Invalid
                } else {
                    RunEnd::Other
                },
            };
        }
        RunRead {
            looked,
            records,
            words,
            next: Cursor {
                pos,
                seq: cur.seq.wrapping_add(records),
            },
            last_ts,
            end,
        }
    }
}

/// The records of a run of ring words, as a crash drain hands them to a
/// [`RunSink::run_taken`](crate::RunSink::run_taken): each record is its sequence word, its
/// header words and its payload words (little-endian bytes in native words, as the ring stores
/// them). Reads any slice safely: a word that is not a committed record's sequence word, or a
/// length that runs past the slice, ends the iteration.
///
/// ```
/// use nmilog::ring::RunRecords;
/// use nmilog::{Header, RecordBuf};
/// let h = Header { ts_ns: 7, ..Header::default() };
/// let mut words = [0usize; 16];
/// let n = RunRecords::encode(3, &h, b"hello", &mut words).unwrap();
/// let mut recs = RunRecords::new(&words[..n]);
/// let r = recs.next().unwrap();
/// assert_eq!((r.seq(), r.header().ts_ns, r.header().len), (3, 7, 5));
/// let mut buf = RecordBuf::new();
/// r.copy_to(&mut buf);
/// assert_eq!(buf.text(), Some("hello"));
/// assert!(recs.next().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct RunRecords<'a> {
    words: &'a [usize],
}

/// One record of a [`RunRecords`] run.
#[derive(Clone, Copy, Debug)]
pub struct RunRecord<'a> {
    seq: u64,
    header: Header,
    payload: &'a [usize],
}

impl<'a> RunRecords<'a> {
    /// The records in `words` (a run as the drain copied it).
    pub fn new(words: &'a [usize]) -> Self {
        RunRecords { words }
    }

    /// Writes the words of one record as a ring holds them into `out` (for tests and tools that
    /// build runs): sequence word, header words (`header.len` set to the payload's length),
    /// payload words. Returns how many words it wrote, or `None` (nothing written) when `out` is
    /// too small or the payload longer than [`MAX_PAYLOAD`](crate::MAX_PAYLOAD).
    pub fn encode(seq: u64, header: &Header, payload: &[u8], out: &mut [usize]) -> Option<usize> {
        if payload.len() > MAX_PAYLOAD {
            return None;
        }
        let span = span_words(payload.len());
        let out = out.get_mut(..span)?;
        let mut h = *header;
        h.len = payload.len() as u16;
        out[0] = enc(seq as usize & SEQ_MASK, ST_COMMITTED);
        let hb = h.to_bytes();
        for (o, c) in out[1..].iter_mut().zip(hb.chunks_exact(WORD)) {
            let mut b = [0u8; WORD];
            b.copy_from_slice(c);
            *o = usize::from_le_bytes(b);
        }
        for (o, c) in out[1 + HEADER_WORDS..].iter_mut().zip(payload.chunks(WORD)) {
            let mut b = [0u8; WORD];
            b[..c.len()].copy_from_slice(c);
            *o = usize::from_le_bytes(b);
        }
        Some(span)
    }
}

impl<'a> Iterator for RunRecords<'a> {
    type Item = RunRecord<'a>;

    fn next(&mut self) -> Option<RunRecord<'a>> {
        let (&w, rest) = self.words.split_first()?;
        if w & ST_MASK != ST_COMMITTED {
            self.words = &[];
            return None;
        }
        let hw = rest.get(..HEADER_WORDS)?;
        let mut hb = [0u8; HEADER_BYTES];
        for (chunk, v) in hb.chunks_exact_mut(WORD).zip(hw) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        let header = Header::from_bytes(&hb);
        if header.len as usize > MAX_PAYLOAD {
            // No ring holds such a record.
            self.words = &[];
            return None;
        }
        let n = (header.len as usize).div_ceil(WORD);
        let Some(payload) = rest.get(HEADER_WORDS..HEADER_WORDS + n) else {
            self.words = &[];
            return None;
        };
        self.words = &rest[HEADER_WORDS + n..];
        Some(RunRecord {
            seq: (w >> 2) as u64,
            header,
            payload,
        })
    }
}

impl RunRecord<'_> {
    /// The record's sequence number in its ring (modulo `2^(usize::BITS - 2)`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The record's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload's bytes, one at a time.
    pub fn payload_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        let len = (self.header.len as usize).min(self.payload.len() * WORD);
        self.payload.iter().flat_map(|w| w.to_le_bytes()).take(len)
    }

    /// The record as a [`RecordBuf`] (what [`CrashSink::record`](crate::CrashSink::record) gets).
    pub fn copy_to(&self, buf: &mut RecordBuf) {
        let len = (self.header.len as usize).min(MAX_PAYLOAD);
        for (dst, b) in buf.payload[..len].iter_mut().zip(self.payload_bytes()) {
            *dst = b;
        }
        buf.header = self.header;
        buf.header.len = len as u16;
        buf.seq = self.seq;
    }
}
