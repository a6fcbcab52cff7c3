//! The writer's side of the ring: [`RecordRing::write`] (steps 1–7 of the write protocol in the
//! [module docs](super)), and the writer-side state the crash drain's snapshot reads.
//!
//! Contract: exactly one writer at a time (the caller's guarantee); plain loads and stores only, no
//! read-modify-write; never waits, and loops at most once per record it overwrites.

use super::{
    before, enc, max_span, span_of_short, Ring, RingWords, StepHook, WriteError, WriteStep,
    HEADER_WORDS, LEN_WORD, ST_COMMITTED, ST_FREE, ST_MASK, ST_WRAP, ST_WRITING, WORD,
};
use crate::record::{Header, MAX_PAYLOAD};
use crate::sync::{fence, AtomicUsize, Ordering};

/// Where a record's payload comes from: bytes ([`Ring::write`]), or text formatted straight into
/// the ring's words (`Log::log_fmt` for a line longer than its stack line: no `LINE_MAX` buffer
/// on the stack).
pub(crate) trait PayloadSource {
    /// The payload's length in bytes (known before the record is reserved).
    fn len(&self) -> usize;
    /// Stores the payload into `body` (its first `ceil(len / W)` words), calling `half()` once on
    /// the way (the step hook's `PayloadHalf`); `false` if `half()` said to freeze.
    fn store(self, body: &[AtomicUsize], half: impl FnMut() -> bool) -> bool;
}

impl PayloadSource for &[u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline(always)]
    fn store(self, body: &[AtomicUsize], mut half: impl FnMut() -> bool) -> bool {
        let (full, rest) = self.as_chunks::<WORD>();
        let mid = full.len() / 2;
        for (i, (slot, chunk)) in body.iter().zip(full).enumerate() {
            if i == mid && !half() {
                return false;
            }
            slot.store(usize::from_le_bytes(*chunk), Ordering::Relaxed);
        }
        if full.is_empty() && !half() {
            return false;
        }
        if let Some(last) = body.get(full.len()) {
            if !rest.is_empty() {
                // The last part word: a payload of a word or more has its last `WORD` bytes as one
                // load, shifted down past the bytes the full words already hold (zeros come in at
                // the top); a shorter one is gathered byte by byte, the last byte first.
                let w = match self.last_chunk::<WORD>() {
                    Some(tail) => usize::from_le_bytes(*tail) >> (8 * (WORD - rest.len())),
                    None => rest.iter().rev().fold(0, |w, &b| (w << 8) + b as usize),
                };
                last.store(w, Ordering::Relaxed);
            }
        }
        true
    }
}

/// Packs bytes into ring words (little-endian, as the ring stores payloads), at most `words.len()`
/// words: the sink a formatted payload is written through.
pub(crate) struct WordPacker<'a> {
    words: &'a [AtomicUsize],
    /// Words stored so far.
    at: usize,
    /// The word being filled, and its bytes.
    acc: usize,
    n: usize,
}

impl<'a> WordPacker<'a> {
    /// A packer over `words`.
    #[inline(always)]
    pub(crate) fn new(words: &'a [AtomicUsize]) -> Self {
        WordPacker {
            words,
            at: 0,
            acc: 0,
            n: 0,
        }
    }

    /// Appends `bytes` (what does not fit in the words is dropped; the caller sized them): the
    /// word being filled a byte at a time, then whole words at once, then the bytes left over.
    #[inline]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        while self.n != 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.acc |= (b as usize) << (8 * self.n);
            self.n += 1;
            bytes = rest;
            if self.n == WORD {
                self.flush_word();
            }
        }
        // No byte pending here (`acc == 0`).
        let (full, rest) = bytes.as_chunks::<WORD>();
        for chunk in full {
            self.acc = usize::from_le_bytes(*chunk);
            self.flush_word();
        }
        for &b in rest {
            self.acc |= (b as usize) << (8 * self.n);
            self.n += 1;
        }
    }

    fn flush_word(&mut self) {
        if let Some(w) = self.words.get(self.at) {
            w.store(self.acc, Ordering::Relaxed);
        }
        self.at += 1;
        self.acc = 0;
        self.n = 0;
    }

    /// Stores the last, partial word.
    #[inline]
    pub(crate) fn finish(mut self) {
        if self.n > 0 {
            self.flush_word();
        }
    }
}

impl<W: ?Sized + RingWords> Ring<W> {
    /// Appends one record. `stamp(seq)` is called after the odd sequence word is stored (this is
    /// where the timestamp is read) and returns the header; its `len` is replaced by `payload.len()`.
    ///
    /// The caller must be the ring's only writer for the duration of the call (per-CPU rings: the code
    /// at this depth on this CPU; the main log: the flush owner). Never waits, never loops more than
    /// once per record it overwrites. Returns the record's sequence number.
    ///
    /// ```
    /// use nmilog::ring::{Cursor, NoHook, RecordRing};
    /// use nmilog::{Header, RecordBuf};
    /// let ring: RecordRing<64> = RecordRing::new();
    /// let stamp = |seq| Header { ts_ns: 100 + seq, len: 999, ..Header::default() };
    /// assert_eq!(ring.write(stamp, b"hello", &mut NoHook), Ok(0));
    /// let mut buf = RecordBuf::new();
    /// ring.read(&mut Cursor::START, &mut buf);
    /// assert_eq!((buf.header.ts_ns, buf.header.len), (100, 5)); // `len` is the payload's
    /// ```
    #[inline]
    pub fn write<H: StepHook>(
        &self,
        stamp: impl FnOnce(u64) -> Header,
        payload: &[u8],
        hook: &mut H,
    ) -> Result<u64, WriteError> {
        self.write_from(stamp, payload, hook)
    }

    /// [`write`](Self::write) with the payload from any [`PayloadSource`].
    #[inline]
    pub(crate) fn write_from<H: StepHook>(
        &self,
        stamp: impl FnOnce(u64) -> Header,
        payload: impl PayloadSource,
        hook: &mut H,
    ) -> Result<u64, WriteError> {
        // A ring at its whole size (every ring `set_capacity_words` did not shrink) is written with
        // its mask known where its size is (`RecordRing<WORDS>`: a constant), so the size checks
        // and the index arithmetic fold; a shrunk ring takes the same protocol with the mask it
        // loaded. Either way the mask passed is the ring's.
        if self.at_whole_size() {
            self.write_with_mask(self.len() - 1, stamp, payload, hook)
        } else {
            self.write_with_mask(self.mask(), stamp, payload, hook)
        }
    }

    /// The write protocol for a ring whose capacity is `mask + 1` words.
    #[inline(always)]
    fn write_with_mask<H: StepHook>(
        &self,
        mask: usize,
        stamp: impl FnOnce(u64) -> Header,
        payload: impl PayloadSource,
        hook: &mut H,
    ) -> Result<u64, WriteError> {
        let cap = mask + 1;
        let len = payload.len();
        if len > MAX_PAYLOAD {
            return Err(WriteError::TooLarge);
        }
        // `MAX_PAYLOAD` fits the header's 16-bit length field.
        let span = span_of_short(len as u16);
        if span > max_span(cap) {
            return Err(WriteError::TooLarge);
        }
        if !hook.step(WriteStep::Entered) {
            return Err(WriteError::Frozen);
        }
        // Step 1: reserve. `head`/`next_seq` are our own state.
        let seq = self.next_seq.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Relaxed);
        let idx = head & mask;
        let wraps = idx + span > cap;
        let start = if wraps {
            head.wrapping_add(cap - idx)
        } else {
            head
        };
        // Every word of [head, start + span] must be free: the oldest intact word must be later than
        // start + span - cap.
        let need = start.wrapping_add(span + 1).wrapping_sub(cap);
        let mut tail = self.tail.load(Ordering::Relaxed);
        let tail_moved = before(tail, need);
        if tail_moved {
            let mut budget = cap;
            while before(tail, need) && budget > 0 {
                tail = self.skip(tail, mask);
                budget -= 1;
            }
            if before(tail, need) {
                tail = need; // unreachable for a well-formed ring; never loop
            }
            // Step 2. LMM(write:A): publish the moved tail before touching the overwritten words.
            // Pairs with LMM(read:B) (a lapped reader finds the new oldest record) and, through
            // LMM(write:C), with LMM(read:C).
            self.tail.store(tail, Ordering::Release);
        }
        if !hook.step(WriteStep::TailAdvanced) {
            return Err(WriteError::Frozen);
        }
        // Step 3: the odd sequence word, then the wrap marker. LMM(write:E): when this call moved the
        // tail, the odd word may land on the first word of a record the tail just passed, so it must
        // not become visible before the tail does (a release store orders only *earlier* accesses):
        // a lapped reader that sees it also sees the new tail in its resync (LMM(read:B)). Pairs
        // with LMM(read:A)/LMM(read:B). Relaxed otherwise (the common case on a ring that is not full).
        self.word(start, mask).store(
            enc(seq, ST_WRITING),
            if tail_moved {
                Ordering::Release
            } else {
                Ordering::Relaxed
            },
        );
        if wraps {
            // LMM(write:B): a reader that loads the marker (LMM(read:A)) sees the odd word at `start`
            // (not stale payload of an older lap).
            self.word(head, mask)
                .store(enc(seq, ST_WRAP), Ordering::Release);
        }
        // Step 4. LMM(write:C): the tail and odd word are ordered before every data store below
        // and before the step-7 `next_seq` store. Pairs with LMM(read:C) and LMM(read:D).
        fence(Ordering::Release);
        if !hook.step(WriteStep::Reserved) {
            return Err(WriteError::Frozen);
        }
        // Step 5: header, payload, terminator.
        let mut h = stamp(seq as u64);
        h.len = len as u16;
        // A record never straddles the end of the array (step 1 moved it to the next lap), so its
        // words are one slice: one bounds check instead of a mask and a check per word.
        let base = start & mask;
        // In bounds for any ring whose mask word is its own (`base + span <= capacity <= len`);
        // a ring whose mask word was damaged refuses the record rather than panic.
        let Some(rec) = self.data.words().get(base..base + span) else {
            return Err(WriteError::TooLarge);
        };
        let (hdr, body) = rec[1..].split_at(HEADER_WORDS);
        for (slot, w) in hdr.iter().zip(header_words(&h)) {
            slot.store(w, Ordering::Relaxed);
        }
        if !hook.step(WriteStep::HeaderWritten) {
            return Err(WriteError::Frozen);
        }
        if !payload.store(body, || hook.step(WriteStep::PayloadHalf)) {
            return Err(WriteError::Frozen);
        }
        let at = start.wrapping_add(span);
        self.word(at, mask).store(ST_FREE, Ordering::Relaxed);
        if !hook.step(WriteStep::PayloadWritten) {
            return Err(WriteError::Frozen);
        }
        // Step 6. LMM(write:D): commit. Pairs with LMM(read:A): whoever sees the even word sees the
        // header, payload and terminator.
        self.word(start, mask)
            .store(enc(seq, ST_COMMITTED), Ordering::Release);
        if !hook.step(WriteStep::Committed) {
            return Err(WriteError::Frozen);
        }
        // Step 7: own state.
        // `next_seq` first: a writer stopped between the two leaves (old head, new seq), which
        // the crash drain's snapshot recognises (the committed record `seq` at the old head).
        self.next_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        self.head.store(start.wrapping_add(span), Ordering::Relaxed);
        if !hook.step(WriteStep::Published) {
            return Err(WriteError::Frozen);
        }
        Ok(seq as u64)
    }

    /// Position of the record after the one at `pos` (writer-side walk over its own records).
    fn skip(&self, pos: usize, mask: usize) -> usize {
        let cap = mask + 1;
        let w = self.word(pos, mask).load(Ordering::Relaxed);
        match w & ST_MASK {
            ST_WRAP => pos.wrapping_add(cap - (pos & mask)),
            ST_COMMITTED | ST_WRITING => {
                let lw = self
                    .word(pos.wrapping_add(1 + LEN_WORD), mask)
                    .load(Ordering::Relaxed);
                let span = span_of_short(lw as u16).min(max_span(cap));
                pos.wrapping_add(span)
            }
            _ => pos.wrapping_add(1),
        }
    }

    /// The writer-side state, for the crash drain's snapshot: `(head, next_seq)`.
    pub(crate) fn writer_state(&self) -> (usize, usize) {
        (
            self.head.load(Ordering::Relaxed),
            self.next_seq.load(Ordering::Relaxed),
        )
    }
}

/// The header as ring words (its little-endian byte layout, read as words).
#[inline(always)]
fn header_words(h: &Header) -> [usize; HEADER_WORDS] {
    let b = h.to_bytes();
    let (chunks, _) = b.as_chunks::<WORD>();
    let mut w = [0usize; HEADER_WORDS];
    for (o, c) in w.iter_mut().zip(chunks) {
        *o = usize::from_le_bytes(*c);
    }
    w
}
