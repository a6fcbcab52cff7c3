//! A host stress test modelled on Linux's printk_ringbuffer KUnit test: a writer thread per "CPU"
//! but one, each appending records of random length 1..=127 bytes filled with `'A' + cpu`, and one
//! reader (the remaining CPU) that
//!
//! * reads every writer's ring directly with a [`Cursor`] while the writer runs (ring readers may run
//!   concurrently with the writer), and
//! * flushes the rings into the main log and reads it with a [`MainReader`],
//!
//! checking that sequence numbers never go backwards (each delivered record is exactly the next one,
//! after counting the records reported missed) and that every payload is one repeated byte of the
//! right value and length. At the end every successful append is accounted for exactly:
//! `moved into the main log + overwritten in a ring == appended`.
//!
//! Duration: `NMILOG_STRESS_SECS` (default 3). Run with `--nocapture` to see the figures.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nmilog::host::HostPlatform;
use nmilog::ring::{Cursor, Read};
use nmilog::{Level, Log, MainReader, RecordBuf};

use common::stress_secs;

const CPUS: usize = 4;
const READER_CPU: usize = 0;

static LOG: Log<HostPlatform, CPUS, 1024, 16384> = Log::new(HostPlatform::new(CPUS));
static STOP: AtomicBool = AtomicBool::new(false);
static APPENDED: [AtomicU64; CPUS] = [const { AtomicU64::new(0) }; CPUS];

fn writer(cpu: usize) {
    HostPlatform::register_cpu(cpu);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1);
    let mut buf = [0u8; 127];
    let fill = b'A' + cpu as u8;
    let mut n = 0u64;
    while !STOP.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 127) as usize;
        buf[..len].fill(fill);
        let seq = LOG
            .append_raw(Level::Info, 0, 0, &buf[..len])
            .expect("append on a registered CPU never fails");
        assert_eq!(seq, n, "ring sequence numbers are dense");
        n += 1;
        APPENDED[cpu].store(n, Ordering::Relaxed);
    }
}

/// Checks a record's payload: `len` bytes in 1..=127, all equal to `'A' + cpu`.
fn check_payload(buf: &RecordBuf, cpu: usize) {
    let p = buf.payload();
    assert!(
        (1..=127).contains(&p.len()),
        "bad length {} (cpu {cpu})",
        p.len()
    );
    let fill = b'A' + cpu as u8;
    assert!(
        p.iter().all(|&b| b == fill),
        "torn payload for cpu {cpu} seq {}: {p:?}",
        buf.header.src_seq
    );
}

#[derive(Default, Debug)]
struct RingReader {
    cur: Cursor,
    next: u64,
    read: u64,
    missed: u64,
}

#[derive(Default, Debug)]
struct MainState {
    rd: MainReader,
    next_main: u64,
    last_src: [Option<u64>; CPUS],
    per_cpu: [u64; CPUS],
    checked: u64,
}

fn read_ring(c: usize, st: &mut RingReader, buf: &mut RecordBuf) {
    let ring = &LOG.cpu(c).unwrap().rings[0];
    for _ in 0..4096 {
        match ring.read(&mut st.cur, buf) {
            Read::Record => {
                assert_eq!(
                    buf.seq, st.next,
                    "ring {c}: sequence went backwards / skipped"
                );
                assert_eq!(
                    buf.header.src_seq, buf.seq,
                    "ring {c}: header of another record"
                );
                assert_eq!(buf.header.cpu as usize, c);
                check_payload(buf, c);
                st.next += 1;
                st.read += 1;
            }
            Read::Overwritten { missed } => {
                st.next += missed;
                st.missed += missed;
            }
            Read::Empty | Read::InFlight => break,
        }
        assert_eq!(st.cur.seq(), st.next);
    }
}

fn read_main(st: &mut MainState, buf: &mut RecordBuf) {
    loop {
        let before = st.rd.missed();
        match st.rd.read(&LOG, buf) {
            Read::Record => {
                assert_eq!(buf.seq, st.next_main + (st.rd.missed() - before));
                st.next_main = buf.seq + 1;
                let c = buf.header.cpu as usize;
                assert!(c != READER_CPU && c < CPUS, "record from cpu {c}");
                check_payload(buf, c);
                if let Some(l) = st.last_src[c] {
                    assert!(
                        buf.header.src_seq > l,
                        "cpu {c}: main log went backwards ({} after {l})",
                        buf.header.src_seq
                    );
                }
                st.last_src[c] = Some(buf.header.src_seq);
                st.per_cpu[c] += 1;
                st.checked += 1;
            }
            Read::Overwritten { .. } => st.next_main = st.rd.next_seq(),
            Read::Empty | Read::InFlight => break,
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn printk_ringbuffer_style_stress() {
    HostPlatform::register_cpu(READER_CPU);
    let dur = Duration::from_secs_f64(stress_secs());
    let writers: Vec<_> = (0..CPUS)
        .filter(|&c| c != READER_CPU)
        .map(|c| std::thread::spawn(move || writer(c)))
        .collect();

    let mut rings: Vec<RingReader> = (0..CPUS).map(|_| RingReader::default()).collect();
    let mut main = MainState::default();
    let mut buf = RecordBuf::new();
    let mut flushes = 0u64;
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < dur {
        for c in (0..CPUS).filter(|&c| c != READER_CPU) {
            read_ring(c, &mut rings[c], &mut buf);
        }
        // Flush only every few rounds so the rings also overflow and the flush counts overwrites.
        round += 1;
        if round & 3 == 0 {
            LOG.flush().expect("the reader is the only flusher");
            flushes += 1;
            read_main(&mut main, &mut buf);
        }
    }
    STOP.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // Everything left: flush until nothing moves, then read.
    for _ in 0..64 {
        let rep = LOG.flush().expect("the reader is the only flusher");
        read_main(&mut main, &mut buf);
        if rep.moved == 0 && rep.overwritten == 0 {
            break;
        }
    }
    for c in (0..CPUS).filter(|&c| c != READER_CPU) {
        read_ring(c, &mut rings[c], &mut buf);
    }

    let mut total = 0;
    let mut direct = 0;
    let mut lost_rings = 0;
    for c in (0..CPUS).filter(|&c| c != READER_CPU) {
        let appended = APPENDED[c].load(Ordering::Relaxed);
        let cnt = LOG.counters(c, 0).unwrap();
        assert_eq!((cnt.torn, cnt.dropped), (0, 0), "cpu {c}: {cnt:?}");
        // Direct ring reader: read + missed == appended, exactly.
        assert_eq!(
            rings[c].read + rings[c].missed,
            appended,
            "cpu {c}: direct ring reader {:?}",
            rings[c]
        );
        total += appended;
        direct += rings[c].read;
        lost_rings += cnt.overwritten;
        if main.rd.missed() == 0 {
            assert_eq!(
                main.per_cpu[c] + cnt.overwritten,
                appended,
                "cpu {c}: moved + overwritten != appended"
            );
        }
    }
    assert_eq!(
        main.checked + main.rd.missed() + lost_rings,
        total,
        "main log: read + missed + overwritten-in-rings != appended"
    );
    eprintln!(
        "stress_kunit: {:.1}s, {} writers: {total} records appended; {} checked from the main log \
         ({} flushes, {lost_rings} overwritten in rings, {} missed in the main log); {direct} checked \
         by direct ring readers",
        start.elapsed().as_secs_f64(),
        CPUS - 1,
        main.checked,
        flushes,
        main.rd.missed(),
    );
    // The flush can only move records older than every writer's record in flight, so with writers
    // that never pause most records are overwritten in the rings (and counted) before it gets to
    // them; under ThreadSanitizer a flush is also far slower. Hence the modest floor.
    assert!(
        main.checked > 100,
        "too few records checked: {}",
        main.checked
    );
    assert!(direct > 1000, "too few records checked directly: {direct}");
}
