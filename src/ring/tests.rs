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
fn the_short_span_is_the_span_of_every_16_bit_length() {
    // The writer's size check and its walk over overwritten records take spans from
    // `span_of_short` (an add and a shift); it must be `span_words` for every length a header holds.
    // (Under Miri, a sample: each length costs it about a thousand times more.)
    let step = if cfg!(miri) { 97 } else { 1 };
    for len in (0..=u16::MAX).step_by(step).chain([u16::MAX]) {
        assert_eq!(span_of_short(len), span_words(len as usize), "{len}");
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

/// A header with every field set from `ts` (the ring sets `len`).
fn full_header(ts: u64) -> Header {
    Header {
        ts_ns: ts,
        src_seq: ts ^ 0x5555,
        len: 0,
        cpu: (ts % 7) as u16 + 1,
        level: 3,
        facility: 4,
        ctx: 0x12,
        flags: 0x20,
        caller: 0x8000_0000 | ts as u32,
        reserved: 0xdead_0000 | (ts as u32 & 0xffff),
    }
}

/// Reads the ring from `cur` with runs (`read_run`, at most `max` records into `room` words a
/// time) where they take the records, and one record at a time where a run ends before one (a
/// wrap marker, a full room): every record as `(seq, ts, payload)`, and the runs that took any.
fn read_with_runs(
    ring: &RecordRing<128>,
    mut cur: Cursor,
    max: usize,
    room: usize,
) -> (std::vec::Vec<(u64, u64, std::vec::Vec<u8>)>, usize) {
    let (mut out, mut runs) = (std::vec::Vec::new(), 0);
    let mut words = std::vec![0usize; room];
    let mut buf = RecordBuf::new();
    for _ in 0..1000 {
        let r = ring.read_run(cur, max, &mut words, |_| true);
        assert!(r.records <= max && r.words <= room, "{r:?}");
        // Looked at: the records taken, and the one that did not fit the room.
        assert!(r.looked >= r.records && r.looked <= r.records + 1, "{r:?}");
        if r.records > 0 {
            runs += 1;
            for rec in RunRecords::new(&words[..r.words]) {
                let h = rec.header();
                let full = Header {
                    len: h.len,
                    ..full_header(h.ts_ns)
                };
                assert_eq!(*h, full, "every header field, as written");
                out.push((rec.seq(), h.ts_ns, rec.payload_bytes().collect()));
            }
            cur = r.next;
            continue;
        }
        match ring.read(&mut cur, &mut buf) {
            Read::Record => out.push((buf.seq, buf.header.ts_ns, buf.payload().to_vec())),
            Read::Empty => return (out, runs),
            other => panic!("{other:?}"),
        }
    }
    panic!("no end")
}

/// A timestamp past 2^32.
const T0: u64 = (7 << 32) + 100;

#[test]
fn a_run_is_the_records_as_they_lie_and_reads_back_as_one_at_a_time() {
    // Records of every payload length up to 3 words, past several wraps of the ring; read back
    // with runs of every size limit and room, they are the records a reader gets one at a time.
    let ring: RecordRing<128> = RecordRing::new();
    let mut want = std::vec::Vec::new();
    for i in 0..40u64 {
        let len = (i as usize * 7) % (3 * WORD + 1);
        let p: std::vec::Vec<u8> = (0..len).map(|k| (i as u8) ^ (k as u8)).collect();
        // Timestamps past 2^32: two words each where words are four bytes; every header field
        // set (the caller and reserved fields are the last header word).
        let h = full_header(T0 + i);
        ring.write(|_| h, &p, &mut NoHook).unwrap();
        want.push((i, T0 + i, p));
    }
    let oldest = ring.oldest();
    let want = &want[oldest.seq() as usize..];
    // Limits past any count of records too: `usize::MAX`, and 2^(bits - 2), which the run's count
    // in sequence-word units (four a record) would wrap to nothing if it were not held to
    // `SEQ_MASK`.
    for max in [1, 2, 5, 100, 1 << (usize::BITS - 2), usize::MAX] {
        for room in [0, span_words(0), 2 * span_words(3 * WORD), 128] {
            let (got, runs) = read_with_runs(&ring, oldest, max, room);
            assert_eq!(got, want, "max {max}, room {room}");
            let smallest = want.iter().map(|w| span_words(w.2.len())).min().unwrap();
            assert_eq!(runs > 0, room >= smallest, "max {max}, room {room}");
        }
    }
    // `take` ends a run at the first record it refuses, and returns that record's header.
    let mut words = [0usize; 128];
    let r = ring.read_run(oldest, 100, &mut words, |ts| ts < T0 + oldest.seq() + 2);
    assert_eq!((r.records, r.looked), (2, 3));
    assert_eq!(r.end, RunEnd::NotTaken(T0 + oldest.seq() + 2));
    assert_eq!(r.next.seq(), oldest.seq() + 2);
    assert_eq!(r.last_ts, T0 + oldest.seq() + 1);
    // At the writer's head: nothing more.
    let mut end = oldest;
    let mut buf = RecordBuf::new();
    while ring.read(&mut end, &mut buf) == Read::Record {}
    let r = ring.read_run(end, 100, &mut words, |_| true);
    assert_eq!(
        (r.records, r.looked, r.end, r.next),
        (0, 0, RunEnd::Other, end)
    );
}

#[test]
fn a_run_the_writer_overwrites_while_it_is_copied_is_not_taken() {
    // The writer laps the run's first record while the run is being copied (from inside `take`,
    // between two records' loads): the run is invalid, nothing is taken, the cursor stays.
    let ring: RecordRing<128> = RecordRing::new();
    for i in 0..5u64 {
        ring.write(hdr(i), &[i as u8; 16], &mut NoHook).unwrap();
    }
    let mut words = [0usize; 128];
    let (mut calls, start) = (0, Cursor::START);
    let r = ring.read_run(start, 100, &mut words, |_| {
        calls += 1;
        if calls == 3 {
            for i in 0..20u64 {
                ring.write(hdr(10 + i), &[0xee; 16], &mut NoHook).unwrap();
            }
        }
        true
    });
    assert_eq!(
        (r.records, r.words, r.end, r.next),
        (0, 0, RunEnd::Invalid, start)
    );
    assert!(r.looked >= 3, "{r:?}");
    // A cursor the writer lapped before the run began: no record read, nothing taken, and not an
    // overwritten run (the one-record read resynchronises it).
    let r = ring.read_run(start, 100, &mut words, |_| true);
    assert_eq!(
        (r.records, r.looked, r.end, r.next),
        (0, 0, RunEnd::Other, start)
    );
    let mut resynced = start;
    let lapped = ring.read(&mut resynced, &mut RecordBuf::new());
    assert!(matches!(lapped, Read::Overwritten { .. }), "{lapped:?}");
    // Written under the run but not over its first record: the run stands.
    let ring: RecordRing<128> = RecordRing::new();
    for i in 0..3u64 {
        ring.write(hdr(i), &[i as u8; 16], &mut NoHook).unwrap();
    }
    let mut calls = 0;
    let r = ring.read_run(Cursor::START, 3, &mut words, |_| {
        calls += 1;
        if calls == 2 {
            ring.write(hdr(9), &[9; 16], &mut NoHook).unwrap();
        }
        true
    });
    assert_eq!((r.records, r.end), (3, RunEnd::Full));
    let seqs: std::vec::Vec<u64> = RunRecords::new(&words[..r.words])
        .map(|x| x.seq())
        .collect();
    assert_eq!(seqs, [0, 1, 2]);
}

#[test]
fn a_run_ends_before_a_record_with_a_damaged_length() {
    // Record `k`'s length word says `len`: more than the ring could hold (past the end of its
    // array), within the array but beyond the ring's largest record, or a record that would run
    // past the end of a ring shrunk at run time (64 of its 128 words) while the array goes on.
    let span8 = span_words(8);
    let cases = [
        (128, 1, 0xffff),
        (128, 1, max_payload_for(128) + 1),
        (64, 34usize.div_ceil(span8), max_payload_for(64)),
    ];
    for (capacity, k, len) in cases {
        let ring: RecordRing<128> = RecordRing::new();
        ring.set_capacity_words(capacity).unwrap();
        for i in 0..=k as u64 {
            ring.write(hdr(i), &[i as u8; 8], &mut NoHook).unwrap();
        }
        let at = k * span8;
        let w = ring.word(at + 1 + LEN_WORD, ring.mask());
        w.store(
            (w.load(Ordering::Relaxed) & !0xffff) | len,
            Ordering::Relaxed,
        );
        let mut words = [0usize; 256];
        let r = ring.read_run(Cursor::START, 100, &mut words, |_| true);
        let what = std::format!("capacity {capacity}, record {k}, len {len}: {r:?}");
        assert_eq!(
            (r.records, r.looked, r.end),
            (k, k + 1, RunEnd::Other),
            "{what}"
        );
        assert_eq!(r.next.seq(), k as u64, "{what}");
        // Within the array but for the first case: only the length and span checks refuse it.
        assert_eq!(at + span_words(len) <= 128, len != 0xffff, "{what}");
    }
}

#[test]
fn a_ring_whose_capacity_is_damaged_to_a_word_or_two_never_panics() {
    // A ring read from damaged memory: its mask word says two words, or one. Reads, runs and
    // writes refuse or report, and never underflow a size (the size limits saturate).
    for mask in [1usize, 0] {
        let ring: RecordRing<64> = RecordRing::new();
        ring.write(hdr(1), b"before", &mut NoHook).unwrap();
        ring.mask_xor.store(63 ^ mask, Ordering::Relaxed);
        assert_eq!(ring.capacity_words(), mask + 1);
        assert_eq!((max_span(mask + 1), ring.max_payload()), (0, 0));
        let mut cur = Cursor::START;
        let _ = ring.read(&mut cur, &mut RecordBuf::new());
        let _ = ring.read_run(Cursor::START, 10, &mut [0usize; 64], |_| true);
        assert_eq!(
            ring.write(hdr(2), b"x", &mut NoHook),
            Err(WriteError::TooLarge)
        );
    }
}

#[test]
fn run_records_read_any_words_without_panicking() {
    // Encoded records read back; a cut, a wrong state or a length past the end ends the iteration.
    let mut words = [0usize; 64];
    let h = Header {
        ts_ns: 5,
        cpu: 2,
        ..Header::default()
    };
    let a = RunRecords::encode(7, &h, b"first", &mut words).unwrap();
    let b = RunRecords::encode(8, &h, &[b'x'; 20], &mut words[a..]).unwrap();
    assert_eq!((a, b), (span_words(5), span_words(20)));
    assert_eq!(RunRecords::encode(0, &h, &[0; 20], &mut [0usize; 4]), None);
    let mut big = std::vec![0usize; span_words(MAX_PAYLOAD)];
    let most = RunRecords::encode(0, &h, &[0; MAX_PAYLOAD], &mut big);
    assert_eq!(most, Some(span_words(MAX_PAYLOAD)));
    let largest: std::vec::Vec<_> = RunRecords::new(&big[..span_words(MAX_PAYLOAD)]).collect();
    assert_eq!(largest.len(), 1);
    assert_eq!(largest[0].header().len as usize, MAX_PAYLOAD);
    assert_eq!(
        RunRecords::encode(0, &h, &[0; MAX_PAYLOAD + 1], &mut [0usize; 4096]),
        None
    );
    let all: std::vec::Vec<_> = RunRecords::new(&words[..a + b]).collect();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[1].seq(), all[1].header().cpu, all[1].header().len),
        (8, 2, 20)
    );
    let mut buf = RecordBuf::new();
    all[0].copy_to(&mut buf);
    assert_eq!((buf.seq, buf.text()), (7, Some("first")));
    for cut in 0..a + b {
        let n = RunRecords::new(&words[..cut]).count();
        assert_eq!(n, usize::from(cut >= a), "cut at {cut}");
    }
    let mut bad = words;
    bad[a] = enc(8, ST_WRITING);
    assert_eq!(RunRecords::new(&bad[..a + b]).count(), 1);
    // A length no ring record has ends it too, whatever words follow.
    let mut long = std::vec![0usize; span_words(MAX_PAYLOAD) + 8];
    let n = RunRecords::encode(9, &h, &[1; MAX_PAYLOAD], &mut long).unwrap();
    let lw = &mut long[1 + LEN_WORD];
    *lw = (*lw & !0xffff) | (MAX_PAYLOAD + 1);
    assert_eq!(RunRecords::new(&long[..n]).count(), 0);
    assert_eq!(RunRecords::new(&long).count(), 0);
    // Arbitrary words: never a panic, never more records than words.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..if cfg!(miri) { 50 } else { 2000 } {
        for w in bad.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *w = if x.is_multiple_of(3) {
                enc((x >> 40) as usize, ST_COMMITTED)
            } else {
                x as usize % 64
            };
        }
        assert!(RunRecords::new(&bad).count() <= bad.len());
    }
}
