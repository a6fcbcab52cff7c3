//! The readers' side of the ring: [`RecordRing::read`] and its variants (the read protocol in the
//! [module docs](super)), resynchronising a lapped cursor, and the oldest intact record.
//!
//! Contract: any number of readers, concurrently with the writer; a reader never blocks the writer,
//! never loops (one call is a bounded number of loads), and never delivers a record whose bytes
//! changed while it copied them.

use super::{
    before, enc, max_payload_for, span_words, Cursor, Read, Ring, RingWords, SEQ_MASK,
    ST_COMMITTED, ST_FREE, ST_MASK, ST_WRAP, ST_WRITING, WORD,
};
use crate::record::{flags, layout, Header, RecordBuf, HEADER_BYTES};
use crate::sync::{fence, Ordering};

impl<W: ?Sized + RingWords> Ring<W> {
    /// Reads the record at the cursor into `out` (see the read protocol in the module docs). Never
    /// blocks the writer and never loops: one call is a bounded number of loads.
    ///
    /// ```
    /// use nmilog::ring::{Cursor, NoHook, Read, RecordRing};
    /// use nmilog::{Header, RecordBuf};
    /// let ring: RecordRing<64> = RecordRing::new();
    /// ring.write(|_| Header { cpu: 3, ..Header::default() }, b"a", &mut NoHook).unwrap();
    /// ring.write(|_| Header { cpu: 3, ..Header::default() }, b"b", &mut NoHook).unwrap();
    /// let (mut cur, mut buf) = (Cursor::START, RecordBuf::new());
    /// assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    /// assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    /// assert_eq!((buf.seq, buf.header.cpu, buf.payload()), (1, 3, &b"b"[..]));
    /// assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
    /// ```
    pub fn read(&self, cur: &mut Cursor, out: &mut RecordBuf) -> Read {
        self.read_if(cur, out, |_| true).0
    }

    /// [`read`](Self::read) if `take(header)` says so, else [`peek`](Self::peek): one validated
    /// look at the record either way, and its payload is copied only when it is taken. Returns the
    /// outcome, the header (for `Read::Record`) and whether the record was taken (copied into `out`,
    /// cursor moved past it).
    #[inline(always)]
    pub(crate) fn read_if(
        &self,
        cur: &mut Cursor,
        out: &mut RecordBuf,
        take: impl FnOnce(&Header) -> bool,
    ) -> (Read, Header, bool) {
        let (r, h, taken) = self.read_inner(cur, Some(&mut out.payload[..]), take);
        if taken {
            out.header = h;
            out.seq = cur.seq.wrapping_sub(1) as u64;
        }
        (r, h, taken)
    }

    /// [`read_if`](Self::read_if) into the bytes `out` (whole words of it; a record that does not
    /// fit is not taken): the payload only.
    #[inline(always)]
    pub(crate) fn read_into_if(
        &self,
        cur: &mut Cursor,
        out: &mut [u8],
        take: impl FnOnce(&Header) -> bool,
    ) -> (Read, Header, bool) {
        self.read_inner(cur, Some(out), take)
    }

    /// Like [`read`](Self::read) but copies only the header and leaves the cursor on the record
    /// (it still moves, with `Overwritten`, when the cursor was lapped).
    ///
    /// ```
    /// use nmilog::ring::{Cursor, NoHook, Read, RecordRing};
    /// use nmilog::{Header, RecordBuf};
    /// let ring: RecordRing<64> = RecordRing::new();
    /// ring.write(|_| Header { level: 2, ..Header::default() }, b"crit", &mut NoHook).unwrap();
    /// let mut cur = Cursor::START;
    /// let (r, h) = ring.peek(&mut cur);
    /// assert_eq!((r, h.level, h.len), (Read::Record, 2, 4));
    /// assert_eq!(cur, Cursor::START); // not consumed: `read` still gets it
    /// assert_eq!(ring.read(&mut cur, &mut RecordBuf::new()), Read::Record);
    /// ```
    pub fn peek(&self, cur: &mut Cursor) -> (Read, Header) {
        let (r, h, _) = self.read_inner(cur, None, |_| false);
        (r, h)
    }

    /// Steps over the record at the cursor: like [`read`](Self::read), validated the same way, but
    /// copies only the header (for readers that need to know a record is there and what it is, not
    /// its payload: the crash drain's scan of the main log and its walk past records already merged).
    pub(crate) fn step_over(&self, cur: &mut Cursor) -> (Read, Header) {
        let (r, h, _) = self.read_inner(cur, None, |_| true);
        (r, h)
    }

    /// Whether the record at the cursor may be a `pr_cont!` piece (flagged
    /// [`CONT`](crate::record::flags::CONT), not [`RAW`](crate::record::flags::RAW)): a **hint**
    /// from two loads (its sequence word, as the read path's first step, and the header word that
    /// holds its flags), without the read's validation. `false` when a committed record with the
    /// cursor's number is at the cursor and its flags say it is not a piece, or when no committed
    /// record with that number is there (where a validated read would return `Empty`, `InFlight`
    /// or `Overwritten`); `true` otherwise, the record at a lap start included (a wrap marker: left
    /// to the validated read).
    ///
    /// The sequence word is loaded `Acquire` (LMM(read:A), pairs with LMM(write:D)): a committed
    /// word seen means that record's flags are seen, so a `false` for a committed record is wrong
    /// only when the writer lapped it between the two loads — a record a validated read would not
    /// have taken either. The flush's continuation join skips its validated look when this says
    /// `false`; every `true` is decided by the validated read (LMM(read:A) to LMM(read:C)).
    /// (Pinned by `ring::tests::may_continue_is_false_only_where_a_validated_look_would_not_join`.)
    #[inline]
    pub(crate) fn may_continue(&self, cur: &Cursor) -> bool {
        const FLAGS_AT: usize = layout::FLAGS.0 as usize;
        let mask = self.mask();
        // LMM(read:A): pairs with LMM(write:D) (and LMM(write:B) for a wrap marker): a committed
        // word seen here means the flags loaded below are that record's, or a later lap's.
        let w = self.word(cur.pos, mask).load(Ordering::Acquire);
        if w == enc(cur.seq, ST_WRAP) {
            return true;
        }
        if w != enc(cur.seq, ST_COMMITTED) {
            return false;
        }
        let at = cur.pos.wrapping_add(1 + FLAGS_AT / WORD);
        let f = self.word(at, mask).load(Ordering::Relaxed).to_le_bytes()[FLAGS_AT % WORD];
        flags::piece(f)
    }

    #[inline(always)]
    fn read_inner(
        &self,
        cur: &mut Cursor,
        out: Option<&mut [u8]>,
        take: impl FnOnce(&Header) -> bool,
    ) -> (Read, Header, bool) {
        let mask = self.mask();
        let cap = mask + 1;
        let mut pos = cur.pos;
        // LMM(read:A): pairs with LMM(write:B) and LMM(write:D).
        let mut w = self.word(pos, mask).load(Ordering::Acquire);
        if w == enc(cur.seq, ST_WRAP) {
            pos = pos.wrapping_add(cap - (pos & mask));
            // LMM(read:A) again, for the record at the lap start.
            w = self.word(pos, mask).load(Ordering::Acquire);
        }
        if w == enc(cur.seq, ST_COMMITTED) {
            let mut hb = [0u8; HEADER_BYTES];
            let mut at = pos.wrapping_add(1);
            for chunk in hb.chunks_exact_mut(WORD) {
                let v = self.word(at, mask).load(Ordering::Relaxed);
                chunk.copy_from_slice(&v.to_le_bytes());
                at = at.wrapping_add(1);
            }
            let h = Header::from_bytes(&hb);
            // The length is not trusted until the sequence word is re-checked: clamp so the copy stays
            // inside the buffer and the ring's largest record.
            let len = (h.len as usize).min(max_payload_for(cap));
            // Taken (payload copied, cursor advanced) or only peeked. `take` sees a header that is
            // validated below: a decision made on a torn header is undone with the `Read` outcome.
            // A record longer than `out`'s whole words is never taken.
            let room = out.as_ref().map_or(usize::MAX, |o| o.len() / WORD * WORD);
            let advance = len <= room && take(&h);
            if let Some(out) = out.filter(|_| advance) {
                // Whole words (bytes past `len` in the last one are scratch).
                let (chunks, _) = out.as_chunks_mut::<WORD>();
                for chunk in chunks.iter_mut().take(len.div_ceil(WORD)) {
                    *chunk = self.word(at, mask).load(Ordering::Relaxed).to_le_bytes();
                    at = at.wrapping_add(1);
                }
            }
            // LMM(read:C): pairs with LMM(write:C). If any word copied above came from a newer
            // record, the tail move (or changed sequence word) that preceded it is visible below.
            fence(Ordering::Acquire);
            let tail = self.tail.load(Ordering::Relaxed);
            let w2 = self.word(pos, mask).load(Ordering::Relaxed);
            if w2 == w && !before(pos, tail) && len == h.len as usize {
                if advance {
                    cur.pos = pos.wrapping_add(span_words(len));
                    cur.seq = cur.seq.wrapping_add(1);
                }
                return (Read::Record, h, advance);
            }
            return (self.resync(cur, mask), Header::default(), false);
        }
        // LMM(read:B): pairs with LMM(write:A).
        let tail = self.tail.load(Ordering::Acquire);
        if before(cur.pos, tail) {
            return (self.resync(cur, mask), Header::default(), false);
        }
        if w == enc(cur.seq, ST_WRITING) {
            (Read::InFlight, Header::default(), false)
        } else {
            (Read::Empty, Header::default(), false)
        }
    }

    /// Moves a lapped cursor to the oldest intact record and reports how many records it missed.
    fn resync(&self, cur: &mut Cursor, mask: usize) -> Read {
        // LMM(read:B): pairs with LMM(write:A); the record at the tail was committed (or is the one
        // being written) before the tail moved onto it.
        let tail = self.tail.load(Ordering::Acquire);
        // LMM(read:D): pairs with LMM(write:C). `next_seq` before the word: a `next_seq` stored
        // after this call's odd word (the release fence LMM(write:C) precedes the step-7 store)
        // means the word below is no longer free, so a free word read afterwards proves `ns` is the
        // number of the record that will start at `tail`.
        let ns = self.next_seq.load(Ordering::Acquire);
        // LMM(read:A) once more (pairs with LMM(write:B), LMM(write:D), LMM(write:E)); only the
        // word's value is used here and the fence below (LMM(read:C)) orders the tail re-check, so
        // this Acquire is stronger than needed (kept: same load as the read path's).
        let w = self.word(tail, mask).load(Ordering::Acquire);
        let target = if w & ST_MASK == ST_FREE {
            // Everything older was overwritten and the record at `tail` has not been started yet.
            ns & SEQ_MASK
        } else {
            w >> 2
        };
        // Re-check that the tail did not move while we looked (LMM(read:C) pairing as above).
        fence(Ordering::Acquire);
        if self.tail.load(Ordering::Relaxed) != tail {
            return Read::Overwritten { missed: 0 };
        }
        let missed = target.wrapping_sub(cur.seq) & SEQ_MASK;
        if missed > SEQ_MASK / 2 {
            // The word at the tail is older than our cursor: a race with the writer (or a cursor
            // that does not belong to this ring). Never report a bogus count; try again later.
            return Read::Overwritten { missed: 0 };
        }
        if missed == 0 && cur.pos == tail {
            return Read::Empty;
        }
        cur.pos = tail;
        cur.seq = cur.seq.wrapping_add(missed);
        Read::Overwritten {
            missed: missed as u64,
        }
    }

    /// A cursor at the oldest intact record (for a reader that starts late).
    ///
    /// ```
    /// use nmilog::ring::{NoHook, Read, RecordRing};
    /// use nmilog::{Header, RecordBuf};
    /// let ring: RecordRing<64> = RecordRing::new();
    /// for i in 0..20u8 {
    ///     ring.write(|_| Header::default(), &[b'a' + i; 10], &mut NoHook).unwrap();
    /// }
    /// let (mut cur, mut buf) = (ring.oldest(), RecordBuf::new());
    /// assert!(cur.seq() > 0); // the first records were overwritten
    /// assert_eq!(ring.read(&mut cur, &mut buf), Read::Record); // no `Overwritten` first
    /// assert_eq!(buf.seq, cur.seq() - 1);
    /// ```
    pub fn oldest(&self) -> Cursor {
        // `resync` moves a cursor at the start to the oldest intact record, and leaves it where it is
        // when nothing was overwritten (or when it raced the writer: the reader resyncs later).
        let mut c = Cursor::START;
        let _ = self.resync(&mut c, self.mask());
        c
    }
}
