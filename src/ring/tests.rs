//! The ring's edges, each pinned exactly: size limits at their boundary, the run-time capacity,
//! a lapped reader's count in every state the resynchronisation can find the tail in, and the
//! reader's refusal of a record that does not fit its buffer. (The protocol's step-by-step tests
//! are in `src/tests.rs`; these exist because mutation testing showed what they left open.)

use super::*;
use crate::record::{Header, RecordBuf, MAX_PAYLOAD};

fn hdr(ts: u64) -> impl FnOnce(u64) -> Header {
    move |seq| Header {
        ts_ns: ts,
        src_seq: seq,
        ..Header::default()
    }
}

/// Reads everything after `cur`: the payload lengths of the records, and the records missed.
fn drain<W: ?Sized + RingWords>(ring: &Ring<W>, cur: &mut Cursor) -> (std::vec::Vec<usize>, u64) {
    let (mut lens, mut missed) = (std::vec::Vec::new(), 0);
    let mut buf = RecordBuf::new();
    for _ in 0..10_000 {
        match ring.read(cur, &mut buf) {
            Read::Record => lens.push(buf.payload().len()),
            Read::Overwritten { missed: m } => missed += m,
            Read::Empty => break,
            Read::InFlight => panic!("no writer in flight"),
        }
    }
    (lens, missed)
}

#[test]
fn the_size_limits_are_exact_at_their_boundary() {
    // A record, its terminator and the words a wrap marker can waste fit in the ring: a record
    // spans at most half the ring minus one word.
    assert_eq!(max_span(64), 31);
    assert_eq!(max_payload_for(64), (64 / 2 - 2 - HEADER_WORDS) * WORD);
    // Large rings are limited by MAX_PAYLOAD, inclusive.
    let big: RecordRing<4096> = RecordRing::new();
    assert_eq!(big.max_payload(), MAX_PAYLOAD);
    let bytes = [7u8; MAX_PAYLOAD + 1];
    assert_eq!(big.write(hdr(1), &bytes[..MAX_PAYLOAD], &mut NoHook), Ok(0));
    assert_eq!(
        big.write(hdr(2), &bytes, &mut NoHook),
        Err(WriteError::TooLarge)
    );
    // Small rings by their size, inclusive: the largest record, at every alignment of the ring,
    // reads back whole.
    let ring: RecordRing<64> = RecordRing::new();
    let max = ring.max_payload();
    assert_eq!(
        ring.write(hdr(0), &bytes[..max + 1], &mut NoHook),
        Err(WriteError::TooLarge)
    );
    let mut cur = Cursor::START;
    for i in 0..64 {
        ring.write(hdr(i), &bytes[..1], &mut NoHook).unwrap();
        ring.write(hdr(i), &bytes[..max], &mut NoHook).unwrap();
        let (lens, _) = drain(&ring, &mut cur);
        assert_eq!(lens.last(), Some(&max), "alignment {i}");
    }
}

#[test]
fn errors_and_cursors_say_what_they_are() {
    assert_eq!(
        WriteError::TooLarge.to_string(),
        "payload larger than the ring accepts"
    );
    assert_eq!(
        WriteError::Frozen.to_string(),
        "writer stopped by a step hook"
    );
    let ring: RecordRing<64> = RecordRing::new();
    for i in 0..3 {
        ring.write(hdr(i), b"x", &mut NoHook).unwrap();
    }
    let mut cur = Cursor::START;
    assert_eq!(drain(&ring, &mut cur).0.len(), 3);
    assert_eq!(cur.seq(), 3);
    let shown = std::format!("{ring:?}");
    let head = 3 * span_words(1);
    assert_eq!(
        shown,
        std::format!(
            "RecordRing {{ capacity_words: 64, head: {head}, tail: 0, next_seq: 3, dropped: 0, active: 0 }}"
        )
    );
}

#[test]
fn a_capacity_set_at_run_time_is_the_ring_s_size() {
    let ring: RecordRing<1024> = RecordRing::new();
    assert_eq!(ring.capacity_words(), 1024);
    assert_eq!(ring.set_capacity_words(100), Ok(64));
    assert_eq!(ring.capacity_words(), 64);
    assert_eq!(ring.max_payload(), max_payload_for(64));
    assert_eq!(ring.set_capacity_words(1 << 20), Ok(1024)); // at most the array
    assert_eq!(ring.set_capacity_words(3), Ok(32)); // at least 32
    assert_eq!(ring.set_capacity_words(256), Ok(256));
    assert_eq!(ring.capacity_words(), 256);
    // The ring wraps at its capacity, not at its array: 256 words hold few 100-byte records.
    let rec = [1u8; 100];
    for i in 0..20 {
        ring.write(hdr(i), &rec, &mut NoHook).unwrap();
    }
    let per = 256 / span_words(100);
    let oldest = ring.oldest().seq();
    assert!(
        oldest >= 20 - per as u64 && oldest < 20,
        "oldest {oldest} of 20 in a 256-word ring"
    );
    // Too late once written.
    assert_eq!(ring.set_capacity_words(512), Err(256));
    assert_eq!(ring.capacity_words(), 256);
}

#[test]
fn a_lapped_reader_counts_what_it_missed_when_the_tail_is_not_started_yet() {
    // 64 words: A and B take 31 words each; C does not fit before the end, so it wraps and moves
    // the tail past A and B onto B's terminator: a free word, where C's wrap marker will go.
    let ring: RecordRing<64> = RecordRing::new();
    let max = ring.max_payload();
    let bytes = [3u8; MAX_PAYLOAD];
    assert_eq!(span_words(max), 31);
    ring.write(hdr(1), &bytes[..max], &mut NoHook).unwrap();
    ring.write(hdr(2), &bytes[..max], &mut NoHook).unwrap();
    let r = ring.write(hdr(3), &bytes[..max], &mut |s: WriteStep| {
        s != WriteStep::TailAdvanced
    });
    assert_eq!(r, Err(WriteError::Frozen));
    assert_eq!(ring.tail.load(Ordering::Relaxed), 62);
    assert_eq!(ring.word(62, 63).load(Ordering::Relaxed), ST_FREE);
    let mut cur = Cursor::START;
    let mut buf = RecordBuf::new();
    assert_eq!(
        ring.read(&mut cur, &mut buf),
        Read::Overwritten { missed: 2 }
    );
    assert_eq!((cur.pos, cur.seq()), (62, 2));
    // Nothing more until the writer goes on.
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
    assert_eq!(ring.oldest(), cur);
}

#[test]
fn a_cursor_ahead_of_the_ring_is_never_given_a_count() {
    let ring: RecordRing<64> = RecordRing::new();
    for i in 0..20 {
        ring.write(hdr(i), b"0123456789", &mut NoHook).unwrap();
    }
    let oldest = ring.oldest();
    assert!(oldest.seq() > 0);
    // A cursor behind the tail whose sequence number is ahead of the record there (not this ring's
    // cursor, or a race with the writer): no bogus count, and the cursor stays.
    let mut odd = Cursor {
        pos: 0,
        seq: oldest.seq + 5,
    };
    let mut buf = RecordBuf::new();
    assert_eq!(
        ring.read(&mut odd, &mut buf),
        Read::Overwritten { missed: 0 }
    );
    assert_eq!(odd.pos, 0);
    // A real lapped cursor gets the exact count, once, then reads on.
    let mut cur = Cursor::START;
    assert_eq!(
        ring.read(&mut cur, &mut buf),
        Read::Overwritten {
            missed: oldest.seq()
        }
    );
    assert_eq!(cur, oldest);
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    assert_eq!(buf.seq, oldest.seq());
}

#[test]
fn a_record_that_does_not_fit_the_reader_s_buffer_is_not_taken() {
    let ring: RecordRing<64> = RecordRing::new();
    ring.write(hdr(1), &[5u8; 21], &mut NoHook).unwrap();
    let mut cur = Cursor::START;
    // 21 bytes is whole words and a part (of 4 or 8 bytes): the reader copies whole words only.
    let mut small = [0u8; 21];
    let (r, h, taken) = ring.read_into_if(&mut cur, &mut small, |_| true);
    assert_eq!((r, h.len, taken), (Read::Record, 21, false));
    assert_eq!(cur, Cursor::START);
    let mut fits = [0u8; 24];
    let (r, _, taken) = ring.read_into_if(&mut cur, &mut fits, |_| true);
    assert_eq!((r, taken), (Read::Record, true));
    assert_eq!(&fits[..21], &[5u8; 21]);
    assert_eq!(cur.seq(), 1);
}

/// The payload of record `seq` in [`a_reader_never_delivers_a_record_the_writer_began_to_reuse`].
fn body(seq: u64) -> ([u8; 64], usize) {
    let len = 1 + (seq as usize * 13) % 60;
    let mut p = [0u8; 64];
    for (k, b) in p.iter_mut().enumerate().take(len) {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(k as u8) | 1;
    }
    (p, len)
}

#[test]
fn a_reader_never_delivers_a_record_the_writer_began_to_reuse() {
    // Records of varied lengths, so that a new record often starts inside an old one, a lap
    // earlier: the writer's first store there (the odd sequence word, at `Reserved`) lands in the
    // old record's payload while the old record's own sequence word is untouched. At every step of
    // every write, every record that was intact before the write is read again: it is delivered
    // whole, or not at all.
    let ring: RecordRing<64> = RecordRing::new();
    let mut buf = RecordBuf::new();
    let mut torn_seen = 0;
    // Fewer under Miri (every read is interpreted), enough to lap the ring many times.
    let writes = if cfg!(miri) { 80 } else { 200 };
    for seq in 0..writes {
        // Where each record before this write starts.
        let mut cursors = std::vec::Vec::new();
        let mut c = ring.oldest();
        loop {
            let before = c;
            match ring.read(&mut c, &mut buf) {
                Read::Record => cursors.push(before),
                _ => break,
            }
        }
        let (p, len) = body(seq);
        let mut check = |s: WriteStep| {
            for &start in &cursors {
                let mut cur = start;
                let mut out = RecordBuf::new();
                match ring.read(&mut cur, &mut out) {
                    Read::Record => {
                        let (want, n) = body(out.seq);
                        assert_eq!(out.seq, start.seq(), "{s:?}");
                        assert_eq!(out.payload(), &want[..n], "record {} at {s:?}", out.seq);
                    }
                    _ => torn_seen += 1,
                }
            }
            true
        };
        assert_eq!(ring.write(hdr(seq), &p[..len], &mut check), Ok(seq));
    }
    // The scenario happened: records were overwritten under the readers.
    assert!(torn_seen > writes / 2, "{torn_seen}");
}

#[test]
fn a_reader_left_at_an_overwritten_wrap_marker_moves_on() {
    // A and B fill 62 of 64 words; C wraps (its marker at 62, its record at the lap start); D
    // then ends where the marker was, its terminator replacing it. A reader that had read A and B
    // sits at 62 expecting C: the word there is free now, the tail is at C, and the reader has
    // missed nothing: it must move to C, not stall on "empty".
    let ring: RecordRing<64> = RecordRing::new();
    let max = ring.max_payload();
    let bytes = [9u8; MAX_PAYLOAD];
    let mut cur = Cursor::START;
    ring.write(hdr(1), &bytes[..max], &mut NoHook).unwrap();
    ring.write(hdr(2), &bytes[..max], &mut NoHook).unwrap();
    assert_eq!(drain(&ring, &mut cur).0.len(), 2);
    assert_eq!(cur.pos, 62);
    ring.write(hdr(3), &bytes[..max], &mut NoHook).unwrap();
    ring.write(hdr(4), &bytes[..max - 1], &mut NoHook).unwrap();
    assert_eq!(ring.word(62, 63).load(Ordering::Relaxed), ST_FREE);
    let mut buf = RecordBuf::new();
    assert_eq!(
        ring.read(&mut cur, &mut buf),
        Read::Overwritten { missed: 0 }
    );
    assert_eq!((cur.pos, cur.seq()), (64, 2));
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    assert_eq!((buf.seq, buf.header.ts_ns), (2, 3));
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    assert_eq!((buf.seq, buf.payload().len()), (3, max - 1));
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
}

#[test]
fn a_record_with_a_damaged_length_is_never_delivered() {
    // A ring read from a damaged dump: a committed record's length is beyond anything the ring
    // accepts. The reader never copies it and its cursor stays: at the oldest record that reads
    // as the end of the ring (`Empty`), further on as a resynchronisation that found nothing to
    // count (`Overwritten { missed: 0 }`, "call again").
    let damage = |ring: &RecordRing<64>, pos: usize| {
        let w = ring.word(pos + 1 + LEN_WORD, 63);
        w.store(w.load(Ordering::Relaxed) | 0xffff, Ordering::Relaxed);
    };
    let (mut buf, second) = (RecordBuf::new(), span_words(4));
    let ring: RecordRing<64> = RecordRing::new();
    ring.write(hdr(1), b"fine", &mut NoHook).unwrap();
    ring.write(hdr(2), b"damaged", &mut NoHook).unwrap();
    damage(&ring, second);
    let mut cur = Cursor::START;
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    assert_eq!(buf.payload(), b"fine");
    for _ in 0..3 {
        assert_eq!(
            ring.read(&mut cur, &mut buf),
            Read::Overwritten { missed: 0 }
        );
        assert_eq!((cur.pos, cur.seq()), (second, 1));
    }
    let ring: RecordRing<64> = RecordRing::new();
    ring.write(hdr(1), b"damaged", &mut NoHook).unwrap();
    damage(&ring, 0);
    let mut cur = Cursor::START;
    for _ in 0..3 {
        assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
        assert_eq!(cur, Cursor::START);
    }
}

#[test]
fn a_writer_with_a_damaged_tail_still_writes_in_bounded_steps() {
    // The tail word far behind the head (a ring in memory that something else scribbled on): the
    // writer walks at most one ring's worth of records, then puts the tail where the record needs
    // it, and the record is readable.
    let ring: RecordRing<64> = RecordRing::new();
    for i in 0..5 {
        ring.write(hdr(i), b"0123456789", &mut NoHook).unwrap();
    }
    let head = ring.head.load(Ordering::Relaxed);
    // 2^56 words behind (2^24 with 4-byte words): far more than a ring, less than half the range.
    ring.tail
        .store(head.wrapping_sub(1 << (usize::BITS - 8)), Ordering::Relaxed);
    assert_eq!(ring.write(hdr(9), b"after", &mut NoHook), Ok(5));
    let tail = ring.tail.load(Ordering::Relaxed);
    assert!(!before(
        tail,
        head.wrapping_add(span_words(5) + 1).wrapping_sub(64)
    ));
    let mut cur = Cursor { pos: head, seq: 5 };
    let mut buf = RecordBuf::new();
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    assert_eq!((buf.seq, buf.payload()), (5, &b"after"[..]));
}

#[test]
fn may_continue_is_false_only_where_a_validated_look_would_not_join() {
    use crate::record::flags::{CONT, NEWLINE, RAW, TRUNCATED};
    // Every header byte but the flags and the length's high byte has its low bit set (the CONT
    // bit): a hint that read another byte or word of the header would answer differently.
    let with = |f: u8| {
        move |_seq: u64| Header {
            ts_ns: u64::MAX,
            src_seq: 0x0101_0101_0101_0101,
            len: 0,
            cpu: 0x0101,
            level: 1,
            facility: 1,
            ctx: 0x11,
            flags: f,
            caller: 0x0101_0101,
            reserved: 0x0101_0101,
        }
    };
    let ring: RecordRing<128> = RecordRing::new();
    let mut cur = Cursor::START;
    let mut buf = RecordBuf::new();
    assert!(!ring.may_continue(&cur), "nothing written");
    for (f, piece) in [
        (0, false),
        (CONT, true),
        (CONT | NEWLINE | TRUNCATED, true),
        (CONT | RAW, false),
        (RAW, false),
        (NEWLINE | TRUNCATED, false),
    ] {
        ring.write(with(f), b"abc", &mut NoHook).unwrap();
        assert_eq!(ring.may_continue(&cur), piece, "flags {f:#b}");
        assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    }
    // Not committed yet (frozen at every step before the commit), a piece though it will be: no.
    for step in [
        WriteStep::Reserved,
        WriteStep::HeaderWritten,
        WriteStep::PayloadWritten,
    ] {
        let r = ring.write(with(CONT), b"abc", &mut |s: WriteStep| s != step);
        assert_eq!(r, Err(WriteError::Frozen));
        assert!(!ring.may_continue(&cur), "frozen at {step:?}");
    }
    // A cursor another record's number is at (lapped): no.
    let stale = Cursor { pos: 0, seq: 1 };
    assert!(!ring.may_continue(&stale));

    // A wrap marker for the cursor's record: left to the validated read (yes), whatever its flags.
    let ring: RecordRing<64> = RecordRing::new();
    let max = ring.max_payload();
    ring.write(with(0), &[7u8; MAX_PAYLOAD][..max], &mut NoHook)
        .unwrap();
    ring.write(with(0), b"b", &mut NoHook).unwrap();
    let mut cur = Cursor::START;
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    ring.write(with(0), &[7u8; MAX_PAYLOAD][..max], &mut NoHook)
        .unwrap();
    assert_eq!(
        ring.word(cur.pos, 63).load(Ordering::Relaxed),
        enc(cur.seq, ST_WRAP)
    );
    assert!(ring.may_continue(&cur));
    // The record it points to (at the lap start) is committed and no piece.
    let lap = Cursor {
        pos: 64,
        seq: cur.seq,
    };
    assert!(!ring.may_continue(&lap));
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
}

#[test]
fn packed_pieces_are_their_bytes_in_order_whatever_their_alignment() {
    // Three pieces (the first two every length up to two words and a byte, one word and a byte
    // under Miri, so the second and third start at every offset in a word): the words hold the
    // bytes in order, little-endian as the ring stores payloads, the last one zero-padded, and
    // nothing is stored past them (with a word to spare); with too few words, the words there are
    // filled the same and the bytes past them dropped.
    const SENTINEL: usize = 0x5a5a_5a5a;
    let text: [u8; 64] = core::array::from_fn(|i| i as u8 + 1);
    let top = if cfg!(miri) { WORD + 1 } else { 2 * WORD + 1 };
    for a in 0..=top {
        for b in 0..=top {
            for c in [0, 1, WORD - 1, WORD + 3] {
                let len = a + b + c;
                let need = len.div_ceil(WORD);
                for room in [need + 1, need, need.saturating_sub(1)] {
                    let words: [AtomicUsize; 8] =
                        core::array::from_fn(|_| AtomicUsize::new(SENTINEL));
                    let mut p = WordPacker::new(&words[..room]);
                    p.push(&text[..a]);
                    p.push(&text[a..a + b]);
                    p.push(&text[a + b..len]);
                    p.finish();
                    for (i, w) in words.iter().enumerate() {
                        let want = match text[..len].chunks(WORD).nth(i) {
                            Some(ch) if i < room => {
                                ch.iter().rev().fold(0, |w, &x| (w << 8) | x as usize)
                            }
                            _ => SENTINEL,
                        };
                        let got = w.load(Ordering::Relaxed);
                        assert_eq!(got, want, "pieces {a}+{b}+{c}, {room} words: word {i}");
                    }
                }
            }
        }
    }
}
