//! Unit tests of the ring protocol, nesting, flush and drain (run under Miri too).

use crate::record::flags;
use crate::ring::{Cursor, NoHook, Read, RecordRing, WriteError, WriteStep};
use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crate::{
    ContextKind, DrainReport, FlushStep, Header, Level, Log, MainReader, Origin, Platform,
    RecordBuf,
};

/// A platform for single-threaded tests: the "current CPU" is set by the test, the clock ticks by
/// one on every read.
struct Manual {
    cpu: AtomicUsize,
    /// 64 bits on every target: timestamps past 2^32 on 32-bit ones too.
    clock: AtomicU64,
    cpus: usize,
}
impl Manual {
    const fn new(cpus: usize) -> Self {
        Manual {
            cpu: AtomicUsize::new(0),
            clock: AtomicU64::new(1),
            cpus,
        }
    }
    fn set_cpu(&self, c: usize) {
        self.cpu.store(c, Ordering::Relaxed);
    }
    /// The next clock read returns `t`.
    fn set_clock(&self, t: u64) {
        self.clock.store(t, Ordering::Relaxed);
    }
}
impl Platform for Manual {
    fn cpu_id(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }
    fn now_ns(&self) -> u64 {
        let v = self.clock.load(Ordering::Relaxed);
        self.clock.store(v + 1, Ordering::Relaxed);
        v
    }
    fn cpu_count(&self) -> usize {
        self.cpus
    }
}

fn hdr(ts: u64) -> impl FnOnce(u64) -> Header {
    move |seq| Header {
        ts_ns: ts,
        src_seq: seq,
        ..Header::default()
    }
}

fn payload(i: usize, len: usize) -> [u8; 64] {
    let mut p = [0u8; 64];
    for (k, b) in p.iter_mut().enumerate().take(len) {
        *b = (i as u8).wrapping_add(k as u8);
    }
    p
}

#[test]
fn ring_round_trip_and_empty() {
    let ring: RecordRing<64> = RecordRing::new();
    let mut cur = Cursor::START;
    let mut buf = RecordBuf::new();
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
    for i in 0..3u64 {
        assert_eq!(
            ring.write(hdr(i), &payload(i as usize, 5)[..5], &mut NoHook),
            Ok(i)
        );
    }
    for i in 0..3u64 {
        assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
        assert_eq!(buf.seq, i);
        assert_eq!(buf.header.ts_ns, i);
        assert_eq!(buf.payload(), &payload(i as usize, 5)[..5]);
    }
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
}

#[test]
fn ring_wrap_counts_overwrites_exactly() {
    let ring: RecordRing<64> = RecordRing::new();
    let mut cur = Cursor::START;
    let mut buf = RecordBuf::new();
    let mut read = 0u64;
    let mut missed = 0u64;
    let total = 500usize;
    let mut expect_seq = 0u64;
    for i in 0..total {
        let len = 1 + (i * 7) % 40;
        ring.write(hdr(i as u64), &payload(i, len)[..len], &mut NoHook)
            .unwrap();
        if i % 5 == 4 {
            // Read a little, fall behind often.
            for _ in 0..2 {
                match ring.read(&mut cur, &mut buf) {
                    Read::Record => {
                        assert!(buf.seq >= expect_seq);
                        expect_seq = buf.seq + 1;
                        let l = buf.header.len as usize;
                        assert_eq!(buf.payload(), &payload(buf.seq as usize, l)[..l]);
                        read += 1;
                    }
                    Read::Overwritten { missed: m } => missed += m,
                    Read::Empty => break,
                    Read::InFlight => panic!("no writer in flight"),
                }
            }
        }
    }
    loop {
        match ring.read(&mut cur, &mut buf) {
            Read::Record => read += 1,
            Read::Overwritten { missed: m } => missed += m,
            Read::Empty => break,
            Read::InFlight => panic!(),
        }
    }
    assert!(missed > 0, "the ring must have wrapped");
    assert_eq!(read + missed, total as u64);
}

#[test]
fn oversized_record_is_refused() {
    let ring: RecordRing<64> = RecordRing::new();
    let big = [0u8; 400];
    assert_eq!(
        ring.write(hdr(0), &big, &mut NoHook),
        Err(WriteError::TooLarge)
    );
    assert!(ring
        .write(hdr(0), &big[..ring.max_payload()], &mut NoHook)
        .is_ok());
}

#[test]
fn writer_frozen_at_each_step_is_never_delivered() {
    for (k, step) in WriteStep::ALL.iter().enumerate() {
        let ring: RecordRing<64> = RecordRing::new();
        ring.write(hdr(1), b"before", &mut NoHook).unwrap();
        let r = ring.write(hdr(2), b"frozen!!", &mut |s: WriteStep| s != *step);
        assert_eq!(r, Err(WriteError::Frozen));
        let mut cur = Cursor::START;
        let mut buf = RecordBuf::new();
        assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
        assert_eq!(buf.payload(), b"before");
        let next = ring.read(&mut cur, &mut buf);
        if k >= 6 {
            // Frozen after the commit: the record is complete and delivered.
            assert_eq!(next, Read::Record, "{step:?}");
            assert_eq!(buf.payload(), b"frozen!!");
        } else if k >= 2 {
            assert_eq!(next, Read::InFlight, "{step:?}");
        } else {
            assert_eq!(next, Read::Empty, "{step:?}");
        }
    }
}

static NEST: Log<Manual, 2, 128, 1024> = Log::new(Manual::new(2));

#[test]
fn nested_write_between_every_pair_of_steps_leaves_both_intact() {
    // Each iteration uses a fresh logger so the expectations stay simple.
    for step in WriteStep::ALL {
        let log: Log<Manual, 1, 128, 1024> = Log::new(Manual::new(1));
        let r = log.append_raw_hooked(Level::Info, 0, 0, b"outer record", &mut |s: WriteStep| {
            if s == step {
                // An NMI lands here and logs.
                let _g = log.enter(ContextKind::Nmi);
                log.append_raw(Level::Emerg, 0, 0, b"nmi record").unwrap();
            }
            true
        });
        assert!(r.is_ok());
        let mut rep = log.flush().unwrap();
        rep.steps = 0;
        assert_eq!(rep.moved, 2);
        let mut rd = MainReader::new();
        let mut buf = RecordBuf::new();
        let mut texts = std::vec::Vec::new();
        while rd.read(&log, &mut buf) == Read::Record {
            texts.push((buf.text().unwrap().to_owned(), buf.header.context()));
        }
        assert_eq!(texts.len(), 2);
        assert!(texts.contains(&("outer record".into(), (Some(ContextKind::Task), 0))));
        assert!(texts.contains(&("nmi record".into(), (Some(ContextKind::Nmi), 1))));
    }
    let _ = &NEST;
}

#[test]
fn recursion_is_counted_as_dropped() {
    let log: Log<Manual, 1, 128, 1024> = Log::new(Manual::new(1));
    struct Loud<'a>(&'a Log<Manual, 1, 128, 1024>);
    impl core::fmt::Display for Loud<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let r = self.0.log_fmt(Level::Info, 0, format_args!("inner"));
            assert_eq!(r, Err(crate::AppendError::Reentered));
            f.write_str("outer")
        }
    }
    log.log_fmt(Level::Info, 0, format_args!("{}", Loud(&log)))
        .unwrap();
    assert_eq!(log.counters(0, 0).unwrap().dropped, 1);
    assert_eq!(log.main().next_seq(), 1);
}

#[test]
fn truncation_and_continuation_flags() {
    // A ring that takes a whole `LINE_MAX` line (a 512-word one takes 984 bytes with 4-byte words).
    let log: Log<Manual, 1, 1024, 1024> = Log::new(Manual::new(1));
    let long = "x".repeat(1200);
    log.log_fmt(Level::Info, 0, format_args!("{long}")).unwrap();
    log.log_fmt(Level::Info, flags::CONT, format_args!(" more"))
        .unwrap();
    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    assert_eq!(rd.read(&log, &mut buf), Read::Record);
    assert_eq!(buf.header.len as usize, crate::LINE_MAX);
    assert!(buf.text().unwrap().ends_with(crate::TRUNCATION_MARKER));
    assert_ne!(buf.header.flags & flags::TRUNCATED, 0);
    assert_eq!(rd.read(&log, &mut buf), Read::Record);
    assert_eq!(buf.text(), Some(" more"));
    assert_ne!(buf.header.flags & flags::CONT, 0);
}

#[test]
fn main_buffer_readers_see_each_record_once_and_count_misses() {
    let log: Log<Manual, 1, 256, 64> = Log::new(Manual::new(1));
    let mut early = MainReader::new();
    let mut buf = RecordBuf::new();
    for i in 0..40 {
        log.log_fmt(Level::Info, 0, format_args!("line {i}"))
            .unwrap();
    }
    let mut got = 0;
    let mut last = None;
    loop {
        match early.read(&log, &mut buf) {
            Read::Record => {
                if let Some(l) = last {
                    assert_eq!(buf.seq, l + 1);
                }
                last = Some(buf.seq);
                got += 1;
            }
            Read::Overwritten { .. } => {}
            _ => break,
        }
    }
    assert_eq!(got + early.missed(), 40);
    assert!(early.missed() > 0);
}

/// One crash drain on the calling CPU into a vector of (origin, timestamp, text).
/// What a drain handed its sink: origin, timestamp and text of each record.
type Drained = std::vec::Vec<(Origin, u64, std::string::String)>;

fn drain_texts<P: Platform, const C: usize, const R: usize, const M: usize, const D: usize>(
    log: &Log<P, C, R, M, D>,
    stopped: &dyn Fn(usize) -> bool,
) -> (DrainReport, Drained) {
    let mut out = std::vec::Vec::new();
    let rep = log
        .drain_on_crash(stopped, &mut |o: Origin, r: &RecordBuf| {
            out.push((o, r.header.ts_ns, r.text().unwrap().to_owned()));
            true
        })
        .expect("called on the crashing CPU");
    (rep, out)
}

fn texts(out: &[(Origin, u64, std::string::String)]) -> std::vec::Vec<&str> {
    out.iter().map(|e| e.2.as_str()).collect()
}

#[test]
fn drain_counts_a_frozen_writer_as_torn_and_delivers_everything_else() {
    let log: Log<Manual, 2, 128, 2048> = Log::new(Manual::new(2));
    log.platform().set_cpu(1);
    log.append_raw(Level::Info, 0, 0, b"cpu1 a").unwrap();
    let _ = log.append_raw_hooked(Level::Info, 0, 0, b"cpu1 torn", &mut |s: WriteStep| {
        s != WriteStep::HeaderWritten
    });
    log.platform().set_cpu(0);
    log.append_raw(Level::Info, 0, 0, b"cpu0 a").unwrap();
    log.crash_enter().unwrap();
    log.append_raw(Level::Emerg, 0, 0, b"crash").unwrap();
    // CPU 1 checked in: its half-written record is torn.
    let (rep, out) = drain_texts(&log, &|_| true);
    assert_eq!(
        (rep.from_rings, rep.torn, rep.in_flight),
        (3, 1, 0),
        "{rep:?}"
    );
    assert!(rep.complete && rep.steps <= rep.bound, "{rep:?}");
    assert!(out.windows(2).all(|w| w[0].1 <= w[1].1), "{out:?}");
    let t = texts(&out);
    assert_eq!(t[..3], ["cpu1 a", "cpu0 a", "crash"]);
    assert_eq!(t.len(), 4);
    assert_eq!(
        t[3],
        "nmilog: cpu 1 task (depth 0): 1 torn, 0 overwritten, 0 dropped"
    );
    assert_eq!(out[3].0, Origin::Accounting);
    assert_eq!(log.counters(1, 0).unwrap().torn, 1);
    // Every drain is a whole one: the same records again, the loss counted once in each.
    let (rep2, out2) = drain_texts(&log, &|_| true);
    assert_eq!((rep2.records, rep2.torn), (rep.records, 1));
    assert_eq!(texts(&out2), t);
    // CPU 1 did not check in: the same call is in flight, not torn (it may still complete).
    let (rep3, out3) = drain_texts(&log, &|c| c == 0);
    assert_eq!(
        (rep3.torn, rep3.in_flight, rep3.not_stopped),
        (0, 1, 1),
        "{rep3:?}"
    );
    assert_eq!(
        texts(&out3)[3],
        "nmilog: cpu 1 task (depth 0): 0 torn, 0 overwritten, 0 dropped, 1 in flight (CPU not stopped)"
    );
}

#[test]
fn drain_delivers_once_what_an_owner_frozen_at_each_step_of_a_move_left() {
    for stop in FlushStep::ALL {
        let log: Log<Manual, 2, 128, 2048> = Log::new(Manual::new(2));
        for i in 0..3 {
            log.platform().set_cpu(i % 2);
            log.append_raw(Level::Info, 0, 0, format!("rec {i}").as_bytes())
                .unwrap();
        }
        // CPU 1 flushes and freezes at `stop` during its first move.
        log.platform().set_cpu(1);
        let _ = log.flush_hooked(&mut |s: FlushStep| s != stop);
        log.platform().set_cpu(0);
        // The frozen owner keeps the flush: nobody else can flush.
        assert_eq!(log.flush(), None, "{stop:?}");
        log.crash_enter().unwrap();
        let both: [&dyn Fn(usize) -> bool; 2] = [&|_| true, &|c| c == 0];
        for stopped in both {
            let (rep, out) = drain_texts(&log, stopped);
            assert_eq!(texts(&out), ["rec 0", "rec 1", "rec 2"], "{stop:?}");
            assert_eq!(
                (rep.torn, rep.in_flight, rep.main_lost),
                (0, 0, 0),
                "{stop:?}"
            );
            assert!(rep.steps <= rep.bound);
        }
    }
}

#[test]
fn reader_racing_a_writer_never_sees_a_torn_record() {
    use std::sync::atomic::AtomicBool;
    static RING: RecordRing<128> = RecordRing::new();
    static DONE: AtomicBool = AtomicBool::new(false);
    let n: usize = if cfg!(miri) { 200 } else { 200_000 };
    let writer = std::thread::spawn(move || {
        for i in 0..n {
            let len = 1 + i % 60;
            let mut p = [0u8; 64];
            p[..len].fill(i as u8);
            RING.write(hdr(i as u64), &p[..len], &mut NoHook).unwrap();
        }
        // LMM(writer_done:A): pairs with LMM(writer_done:B): a reader that sees DONE sees every
        // record written, so an empty read after it is the end.
        DONE.store(true, std::sync::atomic::Ordering::Release);
    });
    let mut cur = Cursor::START;
    let mut buf = RecordBuf::new();
    let (mut read, mut missed, mut last) = (0u64, 0u64, None::<u64>);
    loop {
        // LMM(writer_done:B): pairs with LMM(writer_done:A).
        let done = DONE.load(std::sync::atomic::Ordering::Acquire);
        match RING.read(&mut cur, &mut buf) {
            Read::Record => {
                let i = buf.seq as usize;
                assert!(last.is_none_or(|l| buf.seq == l + 1 || buf.seq > l));
                last = Some(buf.seq);
                assert_eq!(buf.header.ts_ns, buf.seq);
                assert_eq!(buf.header.len as usize, 1 + i % 60);
                assert!(
                    buf.payload().iter().all(|&b| b == i as u8),
                    "torn record {i}"
                );
                read += 1;
            }
            Read::Overwritten { missed: m } => missed += m,
            Read::InFlight | Read::Empty => {
                if done {
                    break;
                }
                std::hint::spin_loop();
            }
        }
    }
    writer.join().unwrap();
    // Drain what is left.
    loop {
        match RING.read(&mut cur, &mut buf) {
            Read::Record => read += 1,
            Read::Overwritten { missed: m } => missed += m,
            _ => break,
        }
    }
    assert_eq!(read + missed, n as u64, "read {read} missed {missed}");
    assert!(read > 0);
}

#[test]
fn deferred_policy_leaves_records_in_the_rings_until_a_flush() {
    let log = deferred_log::<1, 256, 1024>();
    for i in 0..5 {
        log.log_fmt(Level::Info, 0, format_args!("n={i}")).unwrap();
    }
    assert_eq!(log.main().next_seq(), 0);
    assert_eq!(log.flush().unwrap().moved, 5);
    assert_eq!(log.main().next_seq(), 5);
    log.set_flush_policy(crate::FlushPolicy::Eager);
    log.log_fmt(Level::Info, 0, format_args!("eager")).unwrap();
    assert_eq!(log.main().next_seq(), 6);
}

/// 2^32 ns (4.3 s after boot): a timestamp past it needs two words on a 32-bit target.
const G: u64 = 1 << 32;

/// A deferred-policy log (records stay in their rings until a flush) with `C` CPUs.
fn deferred_log<const C: usize, const R: usize, const M: usize>() -> Log<Manual, C, R, M> {
    let log = Log::new(Manual::new(C));
    log.set_flush_policy(crate::FlushPolicy::Deferred);
    log
}

/// Appends `text` on `cpu` (the calling CPU from then on), stamped `ts`.
fn append_at<const C: usize, const R: usize, const M: usize, const D: usize>(
    log: &Log<Manual, C, R, M, D>,
    cpu: usize,
    ts: u64,
    text: &str,
) {
    log.platform().set_cpu(cpu);
    log.platform().set_clock(ts);
    log.append_raw(Level::Info, 0, 0, text.as_bytes()).unwrap();
}

#[test]
fn timestamps_past_32_bits_keep_their_order_in_the_flush_and_the_drain() {
    // Timestamps on both sides of 2^32 ns, from two CPUs: the flush's and the drain's merge heaps
    // keep a timestamp in two words on 32-bit targets (`TsCell`), and a record header in eight; a
    // lost high word would put 2^32 + 5 before 2^32 - 5.
    let log = deferred_log::<2, 256, 2048>();
    append_at(&log, 0, G + 5, "c0 first");
    append_at(&log, 1, G - 5, "c1 first");
    append_at(&log, 1, G + 7, "c1 second");
    append_at(&log, 0, 3 * G + 1, "c0 second");
    log.platform().set_clock(5 * G);
    assert_eq!(log.flush().map(|r| r.moved), Some(4));
    append_at(&log, 1, 4 * G, "c1 third");
    // Older than the main log's newest: the drain puts it before.
    append_at(&log, 0, 2 * G, "c0 third");
    log.platform().set_cpu(0);
    log.crash_enter().unwrap();
    let (rep, out) = drain_texts(&log, &|_| true);
    assert_eq!((rep.records, rep.from_main), (6, 4), "{rep:?}");
    let got: std::vec::Vec<(u64, &str)> = out.iter().map(|e| (e.1, e.2.as_str())).collect();
    assert_eq!(
        got,
        [
            (G - 5, "c1 first"),
            (G + 5, "c0 first"),
            (G + 7, "c1 second"),
            (2 * G, "c0 third"),
            (3 * G + 1, "c0 second"),
            (4 * G, "c1 third"),
        ]
    );
}

#[test]
fn a_flush_falls_due_by_age_only_a_millisecond_after_a_move_past_32_bits_too() {
    // The last move's timestamp is kept in two words on 32-bit targets (`TsCell`): with its high
    // word lost, a record 100 us after a move at 2^32 + 1 ns would look a second old, and due.
    let log = deferred_log::<1, 1024, 8192>();
    let p = log.platform();
    append_at(&log, 0, G + 1, "moved");
    p.set_clock(G + 10);
    assert_eq!(log.flush().map(|r| r.moved), Some(1));
    append_at(&log, 0, G + 20, "pending");
    p.set_clock(G + 100_000);
    assert_eq!(log.flush_if_due(), None);
    p.set_clock(G + 2_000_000);
    assert_eq!(log.flush_if_due().map(|r| r.moved), Some(1));
}

#[test]
fn a_settle_window_of_2_to_the_32_ns_is_not_cut_short() {
    // 2^32 ns is kept whole with 8-byte words and as 2^32 - 1 ns with 4-byte ones (never cut to
    // its low word, 0: no settle at all).
    let log = deferred_log::<1, 256, 1024>();
    log.set_flush_settle_ns(G);
    append_at(&log, 0, 10, "young");
    let p = log.platform();
    p.set_clock(G / 2);
    assert_eq!(log.flush().map(|r| r.moved), Some(0));
    p.set_clock(G + 100);
    assert_eq!(log.flush().map(|r| r.moved), Some(1));
}

#[test]
fn drain_merges_many_sources_in_timestamp_cpu_depth_order() {
    // Four CPUs, task and irq rings each, timestamps with many ties across sources (each source's
    // own timestamps never go backwards, as with a real clock); some records flushed into the main
    // log first: the drain's output must hold every record once, in timestamp order (ties: the main
    // log's records first, then by CPU and depth), each source's records in their own order.
    for flushed in [0usize, 40, 120] {
        let log = deferred_log::<4, 256, 2048>();
        let mut expect = std::vec::Vec::new();
        let mut x: u32 = 0x2545_f491;
        let mut last = [[0usize; 2]; 4];
        for n in 0..120usize {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let (cpu, depth) = ((x % 4) as usize, ((x >> 8) % 2) as usize);
            // Ties: timestamps advance by 0 or 1 per record of a source, from a shared slow base.
            let ts = (n / 5).max(last[cpu][depth]) + ((x >> 12) % 2) as usize;
            last[cpu][depth] = ts;
            log.platform().set_cpu(cpu);
            let _irq = (depth == 1).then(|| log.enter(ContextKind::Irq));
            log.platform().set_clock(ts as u64);
            let text = std::format!("c{cpu} d{depth} n{n}");
            log.append_raw(Level::Info, 0, 0, text.as_bytes()).unwrap();
            expect.push((ts as u64, cpu, depth, n, text));
            if n + 1 == flushed {
                log.platform().set_cpu(0);
                log.platform().set_clock(1_000);
                log.flush().unwrap();
            }
        }
        // Timestamp order; at equal timestamps the main log's records (moved by the flush, in its
        // (ts, CPU, depth) order) come first, then the rings' by (CPU, depth).
        expect.sort_by_key(|e| (e.0, e.3 >= flushed, e.1, e.2, e.3));
        log.platform().set_cpu(0);
        log.crash_enter().unwrap();
        let (rep, out) = drain_texts(&log, &|_| true);
        assert_eq!(rep.records, 120, "{rep:?}");
        assert_eq!(rep.from_main, flushed as u64, "{rep:?}");
        assert!(rep.steps <= rep.bound, "{rep:?}");
        let got: std::vec::Vec<_> = out.iter().map(|e| (e.1, e.2.clone())).collect();
        let want: std::vec::Vec<_> = expect.into_iter().map(|e| (e.0, e.4)).collect();
        assert_eq!(got, want, "flushed {flushed}");
    }
}

#[test]
fn nested_crash_drain_at_every_record_of_a_drain_delivers_each_record_once() {
    // A fault inside the crash path: the drain is interrupted after its k-th record by a nested crash
    // on the same CPU, whose own drain runs to the end. The nested drain's output must hold every
    // record exactly once, in order; the interrupted drain, if it were resumed, stops.
    let records = 6;
    for resume in [false, true] {
        for k in 0..=records {
            let log: Log<Manual, 2, 64, 512> = Log::new(Manual::new(2));
            for i in 0..records {
                log.platform().set_cpu(i % 2);
                let _irq = (i % 3 == 2).then(|| log.enter(ContextKind::Irq));
                log.append_raw(Level::Info, 0, 0, std::format!("rec {i}").as_bytes())
                    .unwrap();
            }
            log.platform().set_cpu(0);
            log.crash_enter().unwrap();
            let mut seen = 0;
            let mut nested = None;
            let outer = log
                .drain_on_crash(&|_| true, &mut |_, _: &RecordBuf| {
                    seen += 1;
                    if seen == k {
                        nested = Some(drain_texts(&log, &|_| true));
                        return resume;
                    }
                    true
                })
                .unwrap();
            let want: std::vec::Vec<_> = (0..records).map(|i| std::format!("rec {i}")).collect();
            match nested {
                Some((rep, out)) => {
                    assert_eq!(texts(&out), want, "interrupted after record {k}");
                    assert!(rep.complete && rep.steps <= rep.bound, "{k}: {rep:?}");
                    assert!(!outer.complete, "{k}: the interrupted drain must stop");
                    assert_eq!(outer.records, k as u64, "{k}: {outer:?}");
                }
                None => {
                    assert_eq!(k, 0);
                    assert!(outer.complete);
                    assert_eq!(outer.records, records as u64);
                }
            }
        }
    }
}

#[test]
fn a_ring_laid_out_in_words_is_a_ring() {
    use crate::ring::{Ring, RING_STATE_WORDS};
    let words: std::vec::Vec<AtomicUsize> = (0..RING_STATE_WORDS + 64)
        .map(|_| AtomicUsize::new(0))
        .collect();
    let ring: &Ring = Ring::from_words(&words).unwrap();
    assert_eq!(ring.capacity_words(), 64);
    ring.write(hdr(5), b"in an arena", &mut NoHook).unwrap();
    let mut buf = RecordBuf::new();
    let mut cur = Cursor::START;
    assert_eq!(ring.read(&mut cur, &mut buf), Read::Record);
    assert_eq!((buf.header.ts_ns, buf.payload()), (5, &b"in an arena"[..]));
    // The same words seen again: the same ring.
    let again = Ring::from_words(&words).unwrap();
    assert_eq!(again.next_seq(), 1);
    // Lengths that are not state + a power of two of at least 32 words are refused.
    assert!(Ring::from_words(&words[..RING_STATE_WORDS + 48]).is_none());
    assert!(Ring::from_words(&words[..RING_STATE_WORDS + 16]).is_none());
    assert!(Ring::from_words(&words[..3]).is_none());
    // A damaged mask word never takes an index out of bounds: reads and writes stay in the data.
    let bad: std::vec::Vec<AtomicUsize> = (0..RING_STATE_WORDS + 32)
        .map(|i| AtomicUsize::new(if i == 5 { 0b10_1010 } else { 0 }))
        .collect();
    let ring = Ring::from_words(&bad).unwrap();
    for _ in 0..100 {
        let _ = ring.write(hdr(1), b"x", &mut NoHook);
        let _ = ring.read(&mut { Cursor::START }, &mut buf);
        let _ = ring.oldest();
    }
}

#[test]
fn a_log_sized_at_boot_runs_on_its_arena() {
    // `'static`, as a kernel's.
    const WORDS: usize = Log::<Manual, 2, 0, 0, 2>::arena_words(2, 2, 32, 64);
    static ARENA: [AtomicUsize; WORDS] = [const { AtomicUsize::new(7) }; WORDS]; // the attach zeroes it
    let arena: &'static [AtomicUsize] = &ARENA;
    let log: Log<Manual, 2, 0, 0, 2> = Log::new(Manual::new(2));
    assert_eq!(
        log.append_raw(Level::Info, 0, 0, b"early"),
        Err(crate::AppendError::NotReady)
    );
    assert_eq!(log.attach_arena(arena, 32, 64), Ok(arena.len()));
    for cpu in 0..2 {
        log.platform().set_cpu(cpu);
        log.append(Level::Info, 0, 0, b"hello").unwrap();
        let _nmi = log.enter(ContextKind::Nmi);
        log.append_raw(Level::Warning, 0, 0, b"nmi").unwrap();
    }
    log.platform().set_cpu(0);
    let _ = log.flush();
    let mut r = log.main_reader();
    let mut rec = RecordBuf::new();
    let mut texts = std::vec::Vec::new();
    while r.read(&log, &mut rec) == Read::Record {
        texts.push(std::string::String::from(rec.text().unwrap()));
    }
    assert_eq!(texts, ["hello", "nmi", "hello", "nmi"]);
    assert_eq!(log.unregistered_dropped(), 1);
    log.crash_enter().unwrap();
    let rep = log
        .drain_on_crash(&|_| true, &mut |_, _: &RecordBuf| true)
        .unwrap();
    // The four records, and the accounting record for the call made before the arena.
    assert_eq!((rep.records, rep.accounting_records), (5, 1));
}

#[test]
fn a_flush_holds_back_records_newer_than_a_record_still_being_written() {
    // CPU 0's record `c` has its timestamp (15) but is still being written when CPU 1 logs `b`
    // (20) and flushes: `b` must wait, or the main log would hold `b` before the older `c`. The
    // ring looks idle by its counters (its `next_seq` is the flush's cursor); only the recursion
    // guard says a call is inside.
    let log: Log<Manual, 2, 128, 1024> = Log::new(Manual::new(2));
    log.platform().set_clock(10);
    log.append_raw(Level::Info, 0, 0, b"a").unwrap();
    assert_eq!(log.flush().unwrap().moved, 1);
    log.platform().set_clock(15);
    let mut inner = None;
    let r = log.append_raw_hooked(Level::Info, 0, 0, b"c", &mut |s: WriteStep| {
        if s == WriteStep::HeaderWritten {
            log.platform().set_cpu(1);
            log.platform().set_clock(20);
            log.append_raw(Level::Info, 0, 0, b"b").unwrap();
            inner = log.flush().map(|r| r.moved);
            log.platform().set_cpu(0);
        }
        true
    });
    assert!(r.is_ok());
    assert_eq!(
        inner,
        Some(0),
        "b moved while the older c was being written"
    );
    assert_eq!(log.flush().unwrap().moved, 2);
    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    let mut got = std::vec::Vec::new();
    while rd.read(&log, &mut buf) == Read::Record {
        got.push((buf.header.ts_ns, buf.text().unwrap().to_owned()));
    }
    let want: std::vec::Vec<(u64, std::string::String)> =
        std::vec![(10, "a".into()), (15, "c".into()), (20, "b".into())];
    assert_eq!(got, want);
}

/// Logs `args` on CPU 0 (task context), flushes, and reads the record back through `rd` into `buf`.
fn log_and_read<const R: usize, const M: usize>(
    log: &Log<Manual, 1, R, M>,
    rd: &mut MainReader,
    buf: &mut RecordBuf,
    flags: u8,
    args: core::fmt::Arguments<'_>,
) {
    log.log_fmt(Level::Info, flags, args).unwrap();
    let _ = log.flush();
    assert_eq!(rd.read(log, buf), Read::Record);
}

#[test]
fn formatted_text_of_every_length_reads_back_exactly() {
    // Text formatted with arguments (not a plain string): short lines go through the stack line
    // (formatted once), longer ones straight into the ring's words (formatted twice). Every length
    // on both sides of the switch, whole words and a part word alike, with and without the
    // trailing newline that ends a record, reads back byte for byte.
    let log: Log<Manual, 1, 512, 4096> = Log::new(Manual::new(1));
    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    let short = crate::fmt::SHORT_LINE;
    // A long line under the 512-word ring's limit (2000 bytes; 984 with 4-byte words).
    let longest = if cfg!(target_pointer_width = "64") {
        1000
    } else {
        900
    };
    for n in (0..=40usize)
        .chain(short - 9..=short + 9)
        .chain([300, longest])
    {
        for nl in ["", "\n"] {
            log_and_read(
                &log,
                &mut rd,
                &mut buf,
                0,
                format_args!("{:>n$}{nl}", n % 10, n = n),
            );
            let want = std::format!("{:>n$}", n % 10, n = n);
            assert_eq!(
                buf.text(),
                Some(want.as_str()),
                "length {n}, newline {nl:?}"
            );
            assert_eq!(buf.header.flags & flags::NEWLINE != 0, !nl.is_empty());
            assert_eq!(buf.header.flags & flags::TRUNCATED, 0);
        }
    }
    // Two pieces, the second across the stack line's end (one byte too many for it), with and
    // without the newline; then two pieces ending at the line's end, and the newline after them.
    let text: std::string::String = (0..2 * short)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for head in [1, short / 2, short - 1, short] {
        let (a, b) = (&text[..head], &text[..short + 1 - head]);
        for nl in ["", "\n"] {
            log_and_read(&log, &mut rd, &mut buf, 0, format_args!("{a}{b}{nl}"));
            let want = std::format!("{a}{b}");
            assert_eq!(
                buf.text(),
                Some(want.as_str()),
                "head {head}, newline {nl:?}"
            );
        }
        let (a, b) = (&text[..head - 1], &text[..short + 1 - head]);
        log_and_read(&log, &mut rd, &mut buf, 0, format_args!("{a}{b}\n"));
        let want = std::format!("{a}{b}");
        assert_eq!(
            buf.text(),
            Some(want.as_str()),
            "head {head}, ending at the line's end"
        );
        assert_ne!(buf.header.flags & flags::NEWLINE, 0);
    }
}

#[test]
fn text_written_a_character_at_a_time_measures_as_the_same_text_in_one_piece() {
    // `core::fmt` writes a sign, padding and a `char` argument through `write_char`, which the
    // keeping writer takes as one byte when it is ASCII, and it counts a line that fits its stack
    // line once, at the end: the count, last byte, cut boundary and kept bytes of
    // a text written a character at a time, in two pieces and in one must be the same, at every
    // cut, for short texts and texts around the stack line's end, for one- to four-byte
    // characters, with and without a newline at the end.
    struct Chars<'a>(&'a str);
    impl core::fmt::Display for Chars<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            self.0.chars().try_for_each(|c| f.write_char(c))
        }
    }
    use core::fmt::Write as _;
    let short = crate::fmt::SHORT_LINE;
    // The last two put a three- and a four-byte character across the stack line's end.
    let alphabets = [
        "abcdefghij",
        "a\u{e9}b\u{20ac}c",
        "\u{e9}\u{e9}x",
        "\u{20ac}\u{1f600}xy",
        "a\u{1f600}",
    ];
    // Under Miri (thousands of times slower; this is safe code without atomics, so it finds
    // nothing the native run does not) the short texts of the mixed alphabet only.
    let (alphabets, short_texts, long_texts) = if cfg!(miri) {
        (&alphabets[1..2], 10, false)
    } else {
        (&alphabets[..], 40, true)
    };
    for alphabet in alphabets {
        let cycle: std::string::String = alphabet.chars().cycle().take(short + 20).collect();
        for end in ["", "\n"] {
            for n in 0..=cycle.chars().count() {
                let text: std::string::String = cycle.chars().take(n).chain(end.chars()).collect();
                if text.len() > short_texts && !(long_texts && text.len().abs_diff(short) <= 12) {
                    continue;
                }
                let mid = text
                    .char_indices()
                    .nth(n / 2)
                    .map_or(text.len(), |(i, _)| i);
                let (a, b) = text.split_at(mid);
                for max in 0..=text.len() + 8 {
                    let one = crate::fmt::measure(format_args!("{}", text.as_str()), max);
                    let each = crate::fmt::measure(format_args!("{}", Chars(&text)), max);
                    assert_eq!(each, one, "{text:?} at most {max}");
                    let mut lines = [[0u8; crate::fmt::SHORT_LINE]; 4];
                    let [l1, l2, l3, l4] = &mut lines;
                    let (m1, k1) =
                        crate::fmt::measure_keeping(format_args!("{}", text.as_str()), max, l1);
                    let (m2, k2) =
                        crate::fmt::measure_keeping(format_args!("{}", Chars(&text)), max, l2);
                    let (m3, k3) = crate::fmt::measure_keeping(format_args!("{a}{b}"), max, l3);
                    assert_eq!((m2, k2), (m1, k1), "{text:?} kept, at most {max}");
                    // A piece, then characters one at a time (the fast path after a piece).
                    let (m4, k4) =
                        crate::fmt::measure_keeping(format_args!("{a}{}", Chars(b)), max, l4);
                    assert_eq!((m3, k3), (m1, k1), "{a:?} {b:?} kept, at most {max}");
                    assert_eq!((m4, k4), (m1, k1), "{a:?} then {b:?} kept, at most {max}");
                    assert_eq!(m1, one);
                    // And what the measure must be, from `str`'s own character boundaries.
                    let body = text.len() - end.len();
                    let nl = if end.is_empty() { 0 } else { flags::NEWLINE };
                    let want = if body > max {
                        let cut = max.saturating_sub(crate::TRUNCATION_MARKER.len());
                        let keep = (0..=cut)
                            .rev()
                            .find(|&i| text.is_char_boundary(i))
                            .unwrap_or(0);
                        crate::fmt::Measure {
                            len: keep + crate::TRUNCATION_MARKER.len(),
                            keep,
                            flags: nl | flags::TRUNCATED,
                        }
                    } else {
                        crate::fmt::Measure {
                            len: body,
                            keep: body,
                            flags: nl,
                        }
                    };
                    assert_eq!(one, want, "{text:?} at most {max}");
                    if let Some(k) = k1 {
                        assert_eq!(k, &text.as_bytes()[..m1.keep], "{text:?} at most {max}");
                    }
                }
            }
        }
    }
    // The sign `core::fmt` writes with `write_char`, into a record read back.
    let log: Log<Manual, 1, 512, 4096> = Log::new(Manual::new(1));
    let (mut rd, mut buf) = (MainReader::new(), RecordBuf::new());
    log_and_read(&log, &mut rd, &mut buf, 0, format_args!("{}{}", -5, '\n'));
    assert_eq!(buf.text(), Some("-5"));
    assert_ne!(buf.header.flags & flags::NEWLINE, 0);
}

#[test]
fn a_line_cut_at_a_small_ring_s_limit_carries_the_marker_either_way() {
    // A 32-word ring takes 80 bytes of payload (24 with 4-byte words): a longer line is cut there
    // and marked, whether it is a plain string or formatted (a cut line of either kind is formatted
    // into the ring).
    let log: Log<Manual, 1, 32, 1024> = Log::new(Manual::new(1));
    let max = crate::ring::max_payload_for(32);
    assert_eq!(
        max,
        if cfg!(target_pointer_width = "64") {
            80
        } else {
            24
        }
    );
    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    let long = "y".repeat(100);
    let lines: [core::fmt::Arguments<'_>; 2] = [
        format_args!(
            "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
        ),
        format_args!("{long}"),
    ];
    for (i, args) in lines.into_iter().enumerate() {
        assert_eq!(args.as_str().is_some(), i == 0);
        log_and_read(&log, &mut rd, &mut buf, 0, args);
        let text = buf.text().unwrap();
        assert_eq!(text.len(), max, "line {i}");
        assert!(text.starts_with("yyy") && text.ends_with(crate::TRUNCATION_MARKER));
        assert_ne!(buf.header.flags & flags::TRUNCATED, 0);
    }
}

#[test]
fn flags_the_caller_gives_are_kept_beside_the_measured_ones() {
    // A caller's NEWLINE on a line that ends with a newline stays set (the flags are or-ed).
    let log: Log<Manual, 1, 512, 4096> = Log::new(Manual::new(1));
    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    for args in [format_args!("x=1\n"), format_args!("x={}\n", 1)] {
        log_and_read(&log, &mut rd, &mut buf, flags::NEWLINE, args);
        assert_eq!(buf.text(), Some("x=1"));
        assert_ne!(buf.header.flags & flags::NEWLINE, 0);
    }
}

#[test]
fn a_short_line_is_formatted_once_a_long_one_twice() {
    // A `Display` impl runs once for a line that fits the stack line, twice (measure, then store)
    // for one that does not (the record holds what the last run wrote, cut or padded to the length
    // the first measured); a log call it makes is refused and counted once either way.
    use core::cell::Cell;
    let log: Log<Manual, 1, 512, 4096> = Log::new(Manual::new(1));
    struct Counted<'a>(&'a Log<Manual, 1, 512, 4096>, &'a Cell<usize>, usize);
    impl core::fmt::Display for Counted<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let r = self.0.log_fmt(Level::Info, 0, format_args!("inner"));
            assert_eq!(r, Err(crate::AppendError::Reentered));
            self.1.set(self.1.get() + 1);
            write!(f, "{:>w$}", self.1.get(), w = self.2)
        }
    }
    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    let short = crate::fmt::SHORT_LINE;
    for (width, runs) in [(1, 1), (short, 1), (short + 1, 2), (600, 2)] {
        let calls = Cell::new(0);
        let dropped = log.counters(0, 0).unwrap().dropped;
        let args = format_args!("{}", Counted(&log, &calls, width));
        log_and_read(&log, &mut rd, &mut buf, 0, args);
        assert_eq!(calls.get(), runs, "width {width}");
        assert_eq!(
            log.counters(0, 0).unwrap().dropped,
            dropped + 1,
            "width {width}"
        );
        assert_eq!(buf.text(), Some(std::format!("{runs:>width$}").as_str()));
    }
}

#[test]
fn the_crash_drain_s_bound_and_steps_are_exact() {
    assert_eq!(
        crate::DrainError::NotCrashing.to_string(),
        "the calling CPU is not the crashing CPU"
    );
    assert_eq!(
        std::format!("{:?}", crate::recover::DrainSource::new()),
        "DrainSource { end: 0, torn: 0, in_flight: 0, overwritten: 0, .. }"
    );
    // The bound for two CPUs × five depths of 128-word rings and a 1024-word main log. A record
    // takes at least `span_words(0)` = 1 + HEADER_BYTES / 8 = 5 words, so a ring holds at most
    // 128 / 5 + 1 = 26 records and the main log 1024 / 5 + 1 = 205. The snapshot: the main log
    // (205 + 3 looks) and per ring its records plus 6 (260 + 60); the merge: 3 looks per source
    // for the first heads (11 × 3) and 4 per record (4 × (260 + 205)). With 4-byte words a record
    // takes at least 9 words: 15 records a ring, 114 in the main log.
    let log: Log<Manual, 2, 128, 1024> = Log::new(Manual::new(2));
    let bound = if cfg!(target_pointer_width = "64") {
        208 + 320 + 33 + 1860
    } else {
        117 + 210 + 33 + 1056
    };
    assert_eq!(log.drain_step_bound(), bound);
    // A drain of three records the flush moved to the main log and two still in a ring takes a
    // fixed number of steps (the snapshot's looks at the main log and at each of the 10 rings,
    // the walk past the moved records, the merge's heads and looks): pinned below.
    for i in 0..3 {
        log.append_raw(Level::Info, 0, 0, &payload(i, 4)[..4])
            .unwrap();
    }
    assert_eq!(log.flush().unwrap().moved, 3);
    log.platform().set_cpu(1);
    for i in 0..2 {
        log.append_raw(Level::Info, 0, 0, &payload(i, 4)[..4])
            .unwrap();
    }
    log.platform().set_cpu(0);
    log.crash_enter().unwrap();
    let (rep, out) = drain_texts(&log, &|_| true);
    assert_eq!((rep.from_main, rep.from_rings, rep.records), (3, 2, 5));
    assert_eq!(out.len(), 5);
    assert!(rep.steps <= rep.bound);
    assert_eq!(rep.steps, STEPS_FOR_3_MAIN_2_RING);
}

/// Pinned: the crash drain's step count for the scenario above (a change in how the drain walks
/// its sources shows up here first; update it only with a reason).
const STEPS_FOR_3_MAIN_2_RING: u64 = 25;

#[test]
fn accounting_records_carry_their_ring_s_context_and_counts() {
    // A call nested deeper than the log tracks is counted against the CPU's task ring (depth 0),
    // and a record torn in CPU 1's NMI ring (CPU 1 stopped mid-write) is counted there, each in its own accounting record, with
    // the ring's context in its header.
    let log: Log<Manual, 2, 128, 1024, 3> = Log::new(Manual::new(2));
    {
        let _irq = log.enter(ContextKind::Irq);
        let _nmi = log.enter(ContextKind::Nmi);
        let _mce = log.enter(ContextKind::Nmi);
        assert!(log.append_raw(Level::Emerg, 0, 0, b"too deep").is_err());
    }
    log.platform().set_cpu(1);
    let _nmi = log.enter(ContextKind::Nmi);
    let r = log.append_raw_hooked(Level::Emerg, 0, 0, b"torn", &mut |s: WriteStep| {
        s != WriteStep::PayloadHalf
    });
    assert!(r.is_err());
    core::mem::forget(_nmi); // CPU 1 stays frozen in its NMI
    log.platform().set_cpu(0);
    log.crash_enter().unwrap();
    let mut acc = std::vec::Vec::new();
    log.drain_on_crash(&|_| true, &mut |o: Origin, r: &RecordBuf| {
        if o == Origin::Accounting {
            let h = r.header;
            acc.push((h.cpu, h.context(), h.facility, r.text().unwrap().to_owned()));
        }
        true
    })
    .unwrap();
    type Acc = (u16, (Option<ContextKind>, usize), u8, std::string::String);
    let want: std::vec::Vec<Acc> = std::vec![
        (
            0,
            (Some(ContextKind::Task), 0),
            crate::record::facility::NMILOG,
            "nmilog: cpu 0 task (depth 0): 0 torn, 0 overwritten, 1 dropped".into()
        ),
        (
            1,
            (Some(ContextKind::Nmi), 1),
            crate::record::facility::NMILOG,
            "nmilog: cpu 1 nmi (depth 1): 1 torn, 0 overwritten, 0 dropped".into()
        ),
    ];
    assert_eq!(acc, want);
}

#[test]
fn counters_before_a_crash_come_from_the_flush() {
    // Before any crash drain, a ring's counters are the flush's: 20 records into a 64-word ring
    // that holds a few, then one flush: the records it could not move were overwritten.
    let log: Log<Manual, 1, 64, 4096> = Log::new(Manual::new(1));
    for i in 0..20 {
        log.append_raw(Level::Info, 0, 0, &payload(i, 14)[..14])
            .unwrap();
    }
    let moved = log.flush().unwrap().moved;
    let c = log.counters(0, 0).unwrap();
    assert!(c.overwritten > 0);
    assert_eq!(moved + c.overwritten, 20);
    assert_eq!((c.torn, c.dropped, c.in_flight), (0, 0, 0));
}

#[test]
fn a_record_too_large_for_the_main_log_is_counted_and_the_flush_goes_on() {
    // A 1024-word ring takes 500-byte records, a 64-word main log does not: the flush counts the
    // big record as overwritten (it is lost to the main log, not silently), reports every step of
    // it, and moves the next record.
    let log: Log<Manual, 1, 1024, 64> = Log::new(Manual::new(1));
    log.append_raw(Level::Info, 0, 0, &[b'x'; 500]).unwrap();
    log.append_raw(Level::Info, 0, 0, b"small").unwrap();
    let mut seen = std::vec::Vec::new();
    let rep = log
        .flush_hooked(&mut |s: FlushStep| {
            seen.push(s);
            true
        })
        .unwrap();
    assert_eq!((rep.moved, rep.overwritten), (1, 1));
    assert_eq!(log.counters(0, 0).unwrap().overwritten, 1);
    let mut want = std::vec![
        FlushStep::OverwrittenCounted,
        FlushStep::CursorStored,
        FlushStep::Done
    ];
    want.extend(FlushStep::ALL);
    assert_eq!(seen, want);
    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    assert_eq!(rd.read(&log, &mut buf), Read::Record);
    assert_eq!(buf.payload(), b"small");
    // Pinned: the flush's steps for this (a change in how the flush walks its sources shows here).
    assert_eq!(rep.steps, FLUSH_STEPS_TOO_LARGE);
}

// 4 idle sources, the two looks that move the two records, the look that finds the ring empty and
// the head after it (the lone source's first head is not looked at: `FlushMerge::heads`).
const FLUSH_STEPS_TOO_LARGE: u64 = 8;

#[test]
fn a_flush_whose_only_busy_ring_has_a_call_in_flight_stops_at_it() {
    // The only ring with anything in it holds one record and a log call frozen after its
    // reservation (a writer interrupted mid-record): the flush runs that ring alone
    // (`merge::run`), moves the record and stops at the call in flight, which it never moves.
    let log: Log<Manual, 1, 1024, 4096> = Log::new(Manual::new(1));
    log.append_raw(Level::Info, 0, 0, b"before").unwrap();
    let mut freeze = |s: WriteStep| s != WriteStep::Reserved;
    assert_eq!(
        log.append_raw_hooked(Level::Info, 0, 0, b"in flight", &mut freeze),
        Err(crate::AppendError::Frozen)
    );
    let mut go_on = |_: FlushStep| true;
    // 4 idle rings; the look that moves "before"; the look that finds the call in flight and the
    // head after it (which bounds the flush there).
    let rep = log.flush_hooked(&mut go_on).unwrap();
    assert_eq!((rep.moved, rep.overwritten, rep.steps), (1, 0, 7));
    // Again: the ring is still busy (its call in flight), and alone; nothing moves.
    let rep = log.flush_hooked(&mut go_on).unwrap();
    assert_eq!((rep.moved, rep.steps), (0, 6));
    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    assert_eq!(rd.read(&log, &mut buf), Read::Record);
    assert_eq!(buf.payload(), b"before");
    assert_eq!(rd.read(&log, &mut buf), Read::Empty);
}

#[test]
fn a_flush_stops_when_a_crash_begins_under_it() {
    // CPU 0 flushes; after its first record moved, CPU 1 enters the crash path. The flush stops
    // there (the crashing CPU's drain owns the log now): the other records stay in the ring, for
    // the drain.
    let log: Log<Manual, 2, 128, 1024> = Log::new(Manual::new(2));
    for i in 0..4 {
        log.append_raw(Level::Info, 0, 0, &payload(i, 8)[..8])
            .unwrap();
    }
    let mut moves = 0;
    let rep = log
        .flush_hooked(&mut |s: FlushStep| {
            if s == FlushStep::Done {
                moves += 1;
                if moves == 1 {
                    log.platform().set_cpu(1);
                    log.crash_enter().unwrap();
                    log.platform().set_cpu(0);
                }
            }
            true
        })
        .unwrap();
    assert_eq!(rep.moved, 1);
    assert_eq!(log.main().next_seq(), 1);
    log.platform().set_cpu(1);
    let (drained, _) = drain_texts(&log, &|_| true);
    assert_eq!((drained.from_main, drained.from_rings), (1, 3));
}

#[test]
fn the_batched_policy_flushes_exactly_when_due() {
    // Deferred: the test calls `flush_if_due` itself.
    let log = deferred_log::<1, 1024, 8192>();
    let p = log.platform();
    // Nothing pending: never a flush, however long the quiet spell.
    p.set_clock(50_000_000);
    assert_eq!(log.flush_if_due(), None);
    // After a quiet spell (nothing moved from this ring for more than 1 ms) the first record goes
    // at once.
    log.append_raw(Level::Info, 0, 0, b"first").unwrap();
    assert_eq!(log.flush_if_due().map(|r| r.moved), Some(1));
    // A burst (the clock barely moves): a flush with the 16th pending record, not before.
    for i in 0..15 {
        log.append_raw(Level::Info, 0, 0, b"burst").unwrap();
        assert_eq!(log.flush_if_due(), None, "record {i}");
    }
    log.append_raw(Level::Info, 0, 0, b"burst").unwrap();
    assert_eq!(log.flush_if_due().map(|r| r.moved), Some(16));
    // 1 ms after the last record moved, whatever is pending goes; just before, it waits.
    log.append_raw(Level::Info, 0, 0, b"later").unwrap();
    let last = 50_000_000 + 100; // about when the burst's records were stamped
    p.set_clock(last + 500_000);
    assert_eq!(log.flush_if_due(), None);
    p.set_clock(last + 1_000_000);
    assert_eq!(log.flush_if_due().map(|r| r.moved), Some(1));
    // Large records: due once the pending ones fill a quarter of the ring (256 of 1024 words),
    // before 16 are pending. 200-byte records take 30 words: the 9th reaches 270 (59 words with
    // 4-byte words: the 5th reaches 295). (A record moved just before, so that age does not make
    // them due.)
    let large = if cfg!(target_pointer_width = "64") {
        9
    } else {
        5
    };
    assert_eq!(large, 256usize.div_ceil(crate::ring::span_words(200)));
    log.append_raw(Level::Info, 0, 0, b"now").unwrap();
    assert_eq!(log.flush().map(|r| r.moved), Some(1));
    for i in 0..large - 1 {
        log.append_raw(Level::Info, 0, 0, &[b'w'; 200]).unwrap();
        assert_eq!(log.flush_if_due(), None, "large record {i}");
    }
    log.append_raw(Level::Info, 0, 0, &[b'w'; 200]).unwrap();
    assert_eq!(log.flush_if_due().map(|r| r.moved), Some(large as u64));
    assert_eq!(log.main().next_seq(), 1 + 16 + 1 + 1 + large as u64);
}

/// A crash sink that takes runs of ring words (`CrashSink::runs`) and reads each back at once
/// with `RunRecords`: the same list as [`drain_texts`] makes, and the runs it was handed.
struct WordsSink<'a> {
    words: std::vec::Vec<usize>,
    out: Drained,
    runs: usize,
    /// `run_room` calls, and what to do at the `k`-th: run a nested drain, or refuse the run.
    rooms: usize,
    nested_at: Option<usize>,
    refuse_at: Option<usize>,
    nested: Option<(DrainReport, Drained)>,
    log: Option<&'a Log<Manual, 2, 64, 512>>,
}

impl WordsSink<'_> {
    fn new() -> Self {
        WordsSink {
            words: std::vec![0; 4096],
            out: std::vec::Vec::new(),
            runs: 0,
            rooms: 0,
            nested_at: None,
            refuse_at: None,
            nested: None,
            log: None,
        }
    }
}

impl crate::CrashSink for WordsSink<'_> {
    fn record(&mut self, o: Origin, r: &RecordBuf) -> bool {
        self.out
            .push((o, r.header.ts_ns, r.text().unwrap().to_owned()));
        true
    }
    fn runs(&mut self) -> Option<&mut dyn crate::RunSink> {
        Some(self)
    }
}

impl crate::RunSink for WordsSink<'_> {
    fn run_room(&mut self) -> &mut [usize] {
        self.rooms += 1;
        if self.nested_at == Some(self.rooms) {
            self.nested = Some(drain_texts(self.log.unwrap(), &|_| true));
        }
        &mut self.words
    }
    fn run_taken(&mut self, o: Origin, words: usize, records: usize) -> bool {
        assert!(matches!(o, Origin::Ring { .. }), "{o:?}");
        assert!(records > 0 && words > 0, "an empty run is never announced");
        let before = self.out.len();
        for r in crate::ring::RunRecords::new(&self.words[..words]) {
            let mut b = RecordBuf::new();
            r.copy_to(&mut b);
            self.out
                .push((o, b.header.ts_ns, b.text().unwrap().to_owned()));
        }
        assert_eq!(self.out.len() - before, records);
        self.runs += 1;
        self.refuse_at != Some(self.runs)
    }
}

fn drain_runs<P: Platform, const C: usize, const R: usize, const M: usize, const D: usize>(
    log: &Log<P, C, R, M, D>,
    stopped: &dyn Fn(usize) -> bool,
) -> (DrainReport, WordsSink<'static>) {
    let mut sink = WordsSink::new();
    let rep = log
        .drain_on_crash(stopped, &mut sink)
        .expect("called on the crashing CPU");
    (rep, sink)
}

/// The two drains' reports agree on everything but the steps (a run looks at a record once).
fn same_report(a: &DrainReport, b: &DrainReport) -> bool {
    DrainReport { steps: 0, ..*a } == DrainReport { steps: 0, ..*b }
}

#[test]
fn a_drain_into_runs_delivers_what_a_drain_a_record_at_a_time_does() {
    // Many sources with timestamp ties, some records in the main log; rings lapped before the
    // crash; a writer frozen mid-record, stopped or not: the same records, in the same order,
    // with the same origins and counts, whether the sink takes runs of ring words or records.
    // (Under Miri, one case: records in the main log and lapped rings.)
    let cases: &[(usize, bool)] = if cfg!(miri) {
        &[(40, true)]
    } else {
        &[
            (0, false),
            (0, true),
            (40, false),
            (40, true),
            (120, false),
            (120, true),
        ]
    };
    for &(flushed, ring_lapped) in cases {
        let log = deferred_log::<4, 64, 2048>();
        let mut x: u32 = 0x2545_f491;
        let mut ts = [[0u64; 2]; 4];
        let n_records = match (ring_lapped, cfg!(miri)) {
            (false, _) => 120,
            (true, false) => 300,
            (true, true) => 160,
        };
        for n in 0..n_records {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let (cpu, depth) = ((x % 4) as usize, ((x >> 8) % 2) as usize);
            let t = (n as u64 / 5).max(ts[cpu][depth]) + u64::from((x >> 12) % 2);
            ts[cpu][depth] = t;
            log.platform().set_cpu(cpu);
            let _irq = (depth == 1).then(|| log.enter(ContextKind::Irq));
            log.platform().set_clock(t);
            let len = (x >> 16) as usize % 30;
            let text = std::format!("c{cpu} d{depth} n{n} {:>len$}", "");
            log.append_raw(Level::Info, 0, 0, text.as_bytes()).unwrap();
            if n + 1 == flushed {
                log.platform().set_cpu(0);
                log.platform().set_clock(1_000);
                log.flush().unwrap();
            }
        }
        // CPU 3 frozen in the middle of a record.
        log.platform().set_cpu(3);
        let _ = log.append_raw_hooked(Level::Info, 0, 0, b"torn", &mut |s: WriteStep| {
            s != WriteStep::PayloadHalf
        });
        log.platform().set_cpu(0);
        log.crash_enter().unwrap();
        log.append_raw(Level::Emerg, 0, 0, b"crash").unwrap();
        let all: &dyn Fn(usize) -> bool = &|_| true;
        let not_3: &dyn Fn(usize) -> bool = &|c| c != 3;
        for stopped in [all, not_3] {
            let what = std::format!("flushed {flushed}, lapped {ring_lapped}");
            let (rep, out) = drain_texts(&log, stopped);
            let (rep_runs, sink) = drain_runs(&log, stopped);
            assert!(same_report(&rep, &rep_runs), "{what}: {rep:?} {rep_runs:?}");
            assert_eq!(sink.out, out, "{what}");
            assert!(
                rep.complete && rep_runs.steps <= rep_runs.bound,
                "{what}: {rep_runs:?}"
            );
            assert!(rep_runs.steps <= rep.steps, "{what}: {rep_runs:?} {rep:?}");
            // Ring records came in runs; with many in the rings, runs longer than one.
            assert!(
                sink.runs > 0 && sink.runs <= rep.from_rings as usize,
                "{what}: {}",
                sink.runs
            );
            assert!(
                flushed > 0 || sink.runs < rep.from_rings as usize,
                "{what}: {}",
                sink.runs
            );
            assert!(rep.overwritten > 0 || !ring_lapped, "{what}: {rep:?}");
            assert!(rep.torn + rep.in_flight == 1, "{what}: {rep:?}");
        }
    }
}

/// Six records in the rings of `log` (three on each CPU), then a crash on CPU 0.
fn six_records_crashed(log: &Log<Manual, 2, 64, 512>) {
    for i in 0..6 {
        log.platform().set_cpu(i / 3);
        log.append_raw(Level::Info, 0, 0, std::format!("rec {i}").as_bytes())
            .unwrap();
    }
    log.platform().set_cpu(0);
    log.crash_enter().unwrap();
}

#[test]
fn a_run_superseded_by_a_nested_drain_is_not_handed_on() {
    // A nested crash drains everything while the outer drain is about to copy its k-th run: the
    // nested drain delivers every record once; the outer stops without handing that run on.
    let want: std::vec::Vec<_> = (0..6).map(|i| std::format!("rec {i}")).collect();
    for k in 1..=2 {
        let log: Log<Manual, 2, 64, 512> = Log::new(Manual::new(2));
        six_records_crashed(&log);
        let mut sink = WordsSink::new();
        sink.log = Some(&log);
        sink.nested_at = Some(k);
        let outer = log.drain_on_crash(&|_| true, &mut sink).unwrap();
        let (rep, out) = sink.nested.take().expect("the nested drain ran");
        assert_eq!(texts(&out), want, "run {k}");
        assert!(rep.complete, "{rep:?}");
        assert!(
            !outer.complete,
            "run {k}: the superseded drain stops: {outer:?}"
        );
        assert_eq!(sink.runs, k - 1, "run {k}");
        assert_eq!(texts(&sink.out), want[..3 * (k - 1)], "run {k}");
    }
}

#[test]
fn a_sink_that_refuses_a_run_stops_the_drain() {
    let log: Log<Manual, 2, 64, 512> = Log::new(Manual::new(2));
    six_records_crashed(&log);
    let mut sink = WordsSink::new();
    sink.refuse_at = Some(1);
    let rep = log.drain_on_crash(&|_| true, &mut sink).unwrap();
    assert!(!rep.complete, "{rep:?}");
    assert_eq!((sink.runs, rep.records), (1, 3), "{rep:?}");
    // Without refusing: two runs, one a CPU.
    let (rep, sink) = drain_runs(&log, &|_| true);
    assert!(rep.complete, "{rep:?}");
    assert_eq!((sink.runs, rep.records, sink.out.len()), (2, 6, 6));
}
