//! The handover image and the crash drain that writes it.
//!
//! The image: a round trip (the image is exactly the drain's output), regions too small, every
//! single-byte flip, every truncation, fixed-part corruption, foreign layouts, version-1 images and
//! random garbage. The drain, through its sink and through the image: writers frozen at every step
//! of the write protocol, flush owners frozen at every step of a move, CPUs known to be stopped or
//! not, repeated and nested drains, wrapped rings.
//!
//! The drain is read-only: after a crash the main log holds only what normal flushes moved. Every
//! test reads the crash output from the drain's sink or from the image, and the drain tests check
//! that the main log did not change.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use nmilog::handover::{self, HandoverError, Image};
use nmilog::record::{facility, flags};
use nmilog::ring::WriteStep;
use nmilog::{
    ContextKind, CpuCounters, DrainError, DrainReport, FlushStep, Header, Level, Log, Origin,
    RecordBuf,
};

use common::{assert_version_1_of, exercise, main_records, owned, unstamped, Manual, Owned};

type TestLog = Log<Manual, 3, 128, 4096, 4>;

/// A crashed log: records from three CPUs in task, irq, NMI and crash context, a continuation, a raw
/// record, a wrapped ring (overwritten records), a writer frozen mid-write on CPU 1, a refused
/// re-entrant call (dropped) and a bad CPU id; then crash entry on CPU 0 and a last record. Normal
/// flushes (the `log_fmt` calls) moved what was in the rings before them into the main log.
fn crashed_log() -> Box<TestLog> {
    let log: Box<TestLog> = Box::new(Log::new(Manual::new(3)));
    let p = log.platform();
    p.set_cpu(0);
    log.log_fmt(Level::Info, 0, format_args!("boot: {} cpus", 3))
        .unwrap();
    p.set_cpu(1);
    log.append_raw(Level::Notice, 0, 0, b"cpu1 hello").unwrap();
    {
        let _irq = log.enter(ContextKind::Irq);
        log.append_raw(Level::Warning, 0, 0, b"irq on cpu1")
            .unwrap();
    }
    p.set_cpu(2);
    {
        let _nmi = log.enter(ContextKind::Nmi);
        log.append_raw(Level::Emerg, 0, 0, b"nmi on cpu2").unwrap();
    }
    // Wrap CPU 2's task ring without flushing: the oldest of these are overwritten.
    for i in 0..40 {
        log.append_raw(Level::Debug, 0, 0, format!("spam {i:02}").as_bytes())
            .unwrap();
    }
    p.set_cpu(0);
    log.log_fmt(Level::Info, 0, format_args!("line start"))
        .unwrap();
    log.log_fmt(Level::Info, flags::CONT, format_args!(" continued"))
        .unwrap();
    log.append_raw(
        Level::Info,
        facility::DEFMT,
        flags::RAW,
        &[0xde, 0xad, 0xbe, 0xef, 0x00],
    )
    .unwrap();
    // CPU 1 is stopped by the crash NMI half-way through a write: torn (if it is known stopped).
    p.set_cpu(1);
    let r = log.append_raw_with_hook(
        Level::Info,
        0,
        0,
        b"frozen half-way",
        &mut |s: WriteStep| s != WriteStep::PayloadHalf,
    );
    assert!(r.is_err());
    // The frozen writer still holds its ring's recursion guard: a further call at that depth (as
    // from a handler that runs on the stopped CPU's behalf) is refused and counted as dropped.
    assert!(log.append_raw(Level::Info, 0, 0, b"refused").is_err());
    p.set_cpu(7);
    assert!(log.append_raw(Level::Info, 0, 0, b"bad cpu").is_err());
    p.set_cpu(0);
    log.crash_enter().unwrap();
    log.append_raw(Level::Emerg, 0, 0, b"Kernel panic - not syncing: test")
        .unwrap();
    log
}

/// Every CPU known to be stopped.
fn all_stopped(_: usize) -> bool {
    true
}

/// One record of the crash drain's output.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Out {
    origin: Origin,
    header: Header,
    payload: Vec<u8>,
}

impl Out {
    fn new(origin: Origin, r: &RecordBuf) -> Self {
        Out {
            origin,
            header: r.header,
            payload: r.payload().to_vec(),
        }
    }
    /// The payload as text (`<raw>` for a raw record).
    fn text(&self) -> &str {
        match self.header.flags & flags::RAW {
            0 => std::str::from_utf8(&self.payload).unwrap(),
            _ => "<raw>",
        }
    }
}

/// Runs the crash drain (on the crashing CPU) into a vector.
fn drain<const C: usize, const R: usize, const M: usize, const D: usize>(
    log: &Log<Manual, C, R, M, D>,
    stopped: &dyn Fn(usize) -> bool,
) -> (DrainReport, Vec<Out>) {
    let mut out = Vec::new();
    let rep = log
        .drain_on_crash(stopped, &mut |o: Origin, r: &RecordBuf| {
            out.push(Out::new(o, r));
            true
        })
        .expect("drained on the crashing CPU");
    (rep, out)
}

/// The drain's contract, checked on one drain's output: the report counts what the sink got; every
/// record once ((CPU, depth, `src_seq`) unique); in timestamp order, the main log's records first
/// among equal timestamps (in their main-log order), then ring records by (CPU, depth); each ring's
/// records in their own order; a ring record from its own ring; main-log records at consecutive
/// main-log numbers; the accounting records (facility NMILOG, warning level, no older than any
/// record) last; within the step bound.
fn check_drain(what: &str, rep: &DrainReport, out: &[Out]) {
    let count = |f: &dyn Fn(&Origin) -> bool| out.iter().filter(|o| f(&o.origin)).count() as u64;
    assert_eq!(rep.records, out.len() as u64, "{what}: {rep:?}");
    assert_eq!(
        rep.from_main,
        count(&|o| matches!(o, Origin::Main { .. })),
        "{what}: {rep:?}"
    );
    assert_eq!(
        rep.from_rings,
        count(&|o| matches!(o, Origin::Ring { .. })),
        "{what}: {rep:?}"
    );
    assert_eq!(
        rep.accounting_records,
        count(&|o| *o == Origin::Accounting),
        "{what}: {rep:?}"
    );
    assert!(rep.steps <= rep.bound, "{what}: {rep:?}");
    let (records, accounting) = out.split_at(out.len() - rep.accounting_records as usize);
    let mut seen = BTreeSet::new();
    let mut last = (0, 0, 0, 0);
    let mut per_source: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut main_seq: Option<u64> = None;
    for o in records {
        let (cpu, depth) = (usize::from(o.header.cpu), o.header.context().1);
        assert_ne!(o.header.facility, facility::NMILOG, "{what}: {o:?}");
        assert!(
            seen.insert((cpu, depth, o.header.src_seq)),
            "{what}: delivered twice: {o:?}"
        );
        if let Some(prev) = per_source.insert((cpu, depth), o.header.src_seq) {
            assert!(
                o.header.src_seq > prev,
                "{what}: ring order: {o:?} after {prev}"
            );
        }
        let key = match o.origin {
            Origin::Main { .. } => (o.header.ts_ns, 0, 0, 0),
            _ => (o.header.ts_ns, 1, cpu, depth),
        };
        assert!(key >= last, "{what}: {o:?} after {last:?}");
        last = key;
        match o.origin {
            Origin::Ring { cpu: c, depth: d } => {
                assert_eq!((c, d), (cpu, depth), "{what}: {o:?}");
            }
            Origin::Main { seq } => {
                if let Some(prev) = main_seq {
                    assert_eq!(seq, prev + 1, "{what}: main-log records skipped");
                }
                main_seq = Some(seq);
            }
            Origin::Accounting => panic!("{what}: accounting among the records: {o:?}"),
        }
    }
    for o in accounting {
        assert_eq!(o.origin, Origin::Accounting, "{what}: {o:?}");
        assert_eq!(
            (o.header.facility, o.header.level),
            (facility::NMILOG, Level::Warning as u8),
            "{what}: {o:?}"
        );
        assert!(o.header.ts_ns >= last.0, "{what}: {o:?}");
        assert!(o.text().starts_with("nmilog: "), "{what}: {o:?}");
    }
}

/// A drain's output with the accounting records' timestamps zeroed. Each drain stamps its accounting
/// records with the clock when it makes them (no earlier than its records), so two drains of the
/// same state differ there and nowhere else.
fn unstamped_out(out: &[Out]) -> Vec<Out> {
    out.iter()
        .cloned()
        .map(|mut o| {
            if o.origin == Origin::Accounting {
                o.header.ts_ns = 0;
            }
            o
        })
        .collect()
}

/// `later` is the same drain output as `earlier` (see [`unstamped_out`]), its accounting records stamped
/// no earlier.
fn assert_same_output(what: &str, earlier: &[Out], later: &[Out]) {
    assert_eq!(unstamped_out(later), unstamped_out(earlier), "{what}");
    for (a, b) in earlier.iter().zip(later) {
        assert!(
            b.header.ts_ns >= a.header.ts_ns,
            "{what}: {b:?} before {a:?}"
        );
    }
}

/// A drain again gives the same report and the same output.
fn assert_drains_the_same(
    what: &str,
    again: (DrainReport, Vec<Out>),
    first: &(DrainReport, Vec<Out>),
) {
    assert_eq!(again.0, first.0, "{what}: report");
    assert_same_output(what, &first.1, &again.1);
}

/// The drain's records that came from the main log, with their main-log numbers.
fn from_main(out: &[Out]) -> Vec<Owned> {
    out.iter()
        .filter_map(|o| match o.origin {
            Origin::Main { seq } => Some((seq, o.header, o.payload.clone())),
            _ => None,
        })
        .collect()
}

/// The image holds exactly a drain's output: the same records (headers, payloads) in the same
/// order, numbered consecutively from `first_seq` (the main log's window start), none left out,
/// nothing damaged.
fn check_image_is<'a>(what: &str, bytes: &'a [u8], out: &[Out], first_seq: u64) -> Image<'a> {
    let image = handover::parse(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(image.corruption(), None, "{what}");
    assert_eq!(image.left_out(), 0, "{what}");
    assert_eq!(image.record_count(), out.len(), "{what}");
    let recovered: Vec<Out> = image
        .records()
        .zip(out)
        .enumerate()
        .map(|(i, (r, o))| {
            assert_eq!(r.seq, first_seq + i as u64, "{what}: record {i}");
            Out {
                origin: o.origin,
                header: r.header,
                payload: r.payload.to_vec(),
            }
        })
        .collect();
    // The image is written by drains of its own: its accounting records are stamped then.
    assert_same_output(what, out, &recovered);
    image
}

fn image_of(log: &TestLog) -> &'static [u8] {
    let mut buf = vec![0u8; 1 << 16];
    let n = handover::write_image(log, &mut buf, &all_stopped).unwrap();
    buf.truncate(n);
    Box::leak(buf.into_boxed_slice())
}

/// What an image says of CPUs 0 to its CPU count (one past the last: `None`): known to be stopped
/// or not.
fn cpus_stopped(image: &Image<'_>) -> Vec<Option<bool>> {
    (0..=image.cpu_count())
        .map(|c| image.cpu_stopped(c))
        .collect()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Record entry boundaries of an intact image, from the published format (record area offset at
/// byte 56, entry size from the payload length).
fn entry_bounds(img: &[u8], parsed: &Image<'_>) -> Vec<(usize, usize)> {
    let mut at = u32_at(img, 56) as usize;
    parsed
        .records()
        .map(|r| {
            let s = handover::record_size(r.payload.len());
            let b = (at, at + s);
            at += s;
            b
        })
        .collect()
}

/// `crashed_log`'s image, intact, and what a reader finds in it.
struct Intact {
    bytes: &'static [u8],
    image: Image<'static>,
    records: Vec<Owned>,
    /// Each record entry's first and one-past-last byte.
    bounds: Vec<(usize, usize)>,
    /// Where the record area starts: the fixed part's size.
    records_at: usize,
}

fn intact_image() -> Intact {
    let bytes = image_of(&crashed_log());
    let image = handover::parse(bytes).unwrap();
    Intact {
        bytes,
        records: owned(image.records()),
        bounds: entry_bounds(bytes, &image),
        records_at: u32_at(bytes, 56) as usize,
        image,
    }
}

/// `crashed_log`'s drain output, exactly: the records in timestamp order (those the normal flushes
/// moved come from the main log, the rest from their rings), CPU 2's overwritten spam counted, the
/// frozen record counted torn (CPU 1 known stopped) or in flight (not), never delivered.
#[test]
fn the_crash_drain_delivers_every_record_once_in_order_and_counts_the_rest() {
    for cpu1_stopped in [true, false] {
        let what = format!("CPU 1 known stopped: {cpu1_stopped}");
        let log = crashed_log();
        let stopped = |c: usize| cpu1_stopped || c != 1;
        let main_before = main_records(&log);
        let (rep, out) = drain(&log, &stopped);
        check_drain(&what, &rep, &out);
        let lost = log.counters(2, 0).unwrap().overwritten as usize;
        assert!(lost > 0 && lost < 40, "{what}: the ring wrapped: {lost}");
        let mut want: Vec<String> = ["boot: 3 cpus", "cpu1 hello", "irq on cpu1", "nmi on cpu2"]
            .map(String::from)
            .into();
        want.extend((lost..40).map(|i| format!("spam {i:02}")));
        want.extend(
            [
                "line start",
                " continued",
                "<raw>",
                "Kernel panic - not syncing: test",
            ]
            .map(String::from),
        );
        want.push(if cpu1_stopped {
            "nmilog: cpu 1 task (depth 0): 1 torn, 0 overwritten, 1 dropped".into()
        } else {
            "nmilog: cpu 1 task (depth 0): 0 torn, 0 overwritten, 1 dropped, \
             1 in flight (CPU not stopped)"
                .into()
        });
        want.push(format!(
            "nmilog: cpu 2 task (depth 0): 0 torn, {lost} overwritten, 0 dropped"
        ));
        let texts: Vec<&str> = out.iter().map(Out::text).collect();
        assert_eq!(texts, want, "{what}");
        let (torn, in_flight) = if cpu1_stopped { (1, 0) } else { (0, 1) };
        assert_eq!(
            (rep.torn, rep.in_flight, rep.overwritten, rep.main_lost),
            (torn, in_flight, lost as u64, 0),
            "{what}"
        );
        assert_eq!(rep.not_stopped, u64::from(!cpu1_stopped), "{what}");
        assert!(rep.complete, "{what}");
        // What the normal flushes moved comes from the main log, at its main-log numbers; the rest
        // (the raw record and the panic, logged after the last flush) from the rings.
        assert_eq!(from_main(&out), main_before, "{what}");
        assert_eq!(rep.from_main, 6 + (40 - lost) as u64, "{what}");
        assert_eq!(rep.from_rings, 2, "{what}");
        let panic = out.iter().find(|o| o.text().starts_with("Kernel")).unwrap();
        assert_eq!(panic.origin, Origin::Ring { cpu: 0, depth: 1 }, "{what}");
        assert_eq!(panic.header.context(), (Some(ContextKind::Crash), 1));
        // Counters: the drain's view, exact.
        assert_eq!(
            log.counters(1, 0),
            Some(CpuCounters {
                torn,
                in_flight,
                dropped: 1,
                overwritten: 0
            }),
            "{what}"
        );
        for (c, d) in (0..3).flat_map(|c| (0..4).map(move |d| (c, d))) {
            if (c, d) != (1, 0) && (c, d) != (2, 0) {
                assert_eq!(log.counters(c, d), Some(CpuCounters::default()), "{what}");
            }
        }
        // Read-only: the main log is what the normal flushes left; a second drain gives the same.
        assert_eq!(main_records(&log), main_before, "{what}");
        assert_drains_the_same(&what, drain(&log, &stopped), &(rep, out));
    }
}

#[test]
fn round_trip_keeps_every_record_and_counter() {
    let log = crashed_log();
    let (rep, expect) = drain(&log, &all_stopped);
    assert!(expect.len() >= 10, "{}", expect.len());
    assert_eq!(rep.torn, 1);
    let img = image_of(&log);
    // The image is the drain's output, numbered from the main log's start (it never wrapped).
    let image = check_image_is("round trip", img, &expect, 0);
    assert_eq!(image.version(), handover::VERSION);
    assert_eq!(image.cpu_count(), 3);
    assert_eq!(image.depth(), 4);
    assert_eq!(image.bad_cpu_dropped(), 1);
    for r in image.records() {
        assert_eq!(r.header.len as usize, r.payload.len());
    }
    let mut sum = CpuCounters::default();
    for c in 0..3 {
        assert_eq!(image.cpu_stopped(c), Some(true), "cpu {c}");
        for d in 0..4 {
            let want = log.counters(c, d).unwrap();
            assert_eq!(image.counters(c, d), Some(want), "cpu {c} depth {d}");
            assert_eq!(
                image.context_kind(c, d),
                Some(log.cpu(c).unwrap().kind_at(d)),
                "cpu {c} depth {d}"
            );
            sum.torn += want.torn;
            sum.overwritten += want.overwritten;
            sum.dropped += want.dropped;
            sum.in_flight += want.in_flight;
        }
    }
    assert_eq!(image.cpu_stopped(3), None);
    assert_eq!(image.counters(3, 0), None);
    assert_eq!(image.counters(0, 4), None);
    assert_eq!(image.totals(), sum);
    assert_eq!(sum.torn, 1);
    assert_eq!(sum.in_flight, 0);
    assert_eq!(sum.overwritten, rep.overwritten);
    assert!(sum.overwritten > 0);
    assert_eq!(sum.dropped, 1);
    assert_eq!(image.context_kind(1, 1), Some(ContextKind::Irq));
    assert_eq!(image.context_kind(2, 1), Some(ContextKind::Nmi));
    assert_eq!(image.context_kind(0, 1), Some(ContextKind::Crash));
    // Specific records survived with their contexts and flags.
    let find = |t: &str| image.records().find(|r| r.payload == t.as_bytes()).unwrap();
    assert_eq!(
        find("nmi on cpu2").header.context(),
        (Some(ContextKind::Nmi), 1)
    );
    assert_eq!(find(" continued").header.flags & flags::CONT, flags::CONT);
    let raw = image
        .records()
        .find(|r| r.header.flags & flags::RAW != 0)
        .unwrap();
    assert_eq!(raw.text(), None);
    assert_eq!(raw.payload, &[0xde, 0xad, 0xbe, 0xef, 0x00]);
    assert!(image.records().all(|r| r.payload != b"frozen half-way"));
    assert!(image.records().any(|r| r
        .text()
        .is_some_and(|t| t.contains("cpu 1 task (depth 0): 1 torn"))));
    // Writing again gives the same image (the image is a function of the log; only the accounting
    // records are stamped with the time of the write), and neither write touched the main log.
    let main_before = main_records(&log);
    let again = image_of(&log);
    let records_at = u32_at(img, 56) as usize;
    assert_eq!(again[..records_at], img[..records_at], "the fixed part");
    check_image_is("written again", again, &expect, 0);
    assert_eq!(main_records(&log), main_before);
    // The report of a write says what it wrote.
    let mut region = vec![0u8; img.len()];
    let wrote = handover::write_image_report(&*log, &mut region, &all_stopped).unwrap();
    check_image_is("reported", &region, &expect, 0);
    assert_eq!((wrote.len, wrote.left_out), (img.len(), 0));
    assert_eq!(wrote.records, expect.len() as u64);
    assert!(wrote.drain.complete);
    assert_eq!(
        (
            wrote.drain.records,
            wrote.drain.torn,
            wrote.drain.overwritten
        ),
        (rep.records, rep.torn, rep.overwritten)
    );
}

/// A CPU that did not check in: its log call in progress is counted in flight, not torn, and the
/// image says the CPU was not known to be stopped.
#[test]
fn an_image_names_the_cpus_not_known_to_be_stopped() {
    let log = crashed_log();
    let stopped = |c: usize| c != 1;
    let (rep, out) = drain(&log, &stopped);
    let mut region = vec![0u8; 1 << 16];
    let n = handover::write_image(&*log, &mut region, &stopped).unwrap();
    let image = check_image_is("CPU 1 not stopped", &region[..n], &out, 0);
    assert_eq!(
        cpus_stopped(&image),
        [Some(true), Some(false), Some(true), None]
    );
    let c = image.counters(1, 0).unwrap();
    assert_eq!((c.torn, c.in_flight, c.dropped), (0, 1, 1));
    assert_eq!(image.totals().in_flight, rep.in_flight);
    assert_eq!((image.totals().torn, rep.torn), (0, 0));
    // The crashing CPU is known stopped even when `stopped` says otherwise.
    let n = handover::write_image(&*log, &mut region, &|_| false).unwrap();
    let image = handover::parse(&region[..n]).unwrap();
    assert_eq!(
        cpus_stopped(&image),
        [Some(true), Some(false), Some(false), None]
    );
}

#[test]
fn a_region_too_small_keeps_the_newest_records_and_counts_the_rest() {
    let log = crashed_log();
    let full_img = image_of(&log);
    let full = handover::parse(full_img).unwrap();
    let all = unstamped(owned(full.records()));
    let sizes: Vec<usize> = all
        .iter()
        .map(|r| handover::record_size(r.2.len()))
        .collect();
    let fixed = handover::fixed_size(3, 4);
    assert_eq!(u32_at(full_img, 56) as usize, fixed);
    for size in 0..full_img.len() + 16 {
        let mut out = vec![0xa5u8; size];
        match handover::write_image_report(&*log, &mut out, &all_stopped) {
            Err(e) => {
                assert!(size < fixed, "size {size}: {e}");
                assert_eq!(e, HandoverError::OutputTooSmall { needed: fixed });
                assert!(out.iter().all(|&b| b == 0xa5), "nothing written");
            }
            Ok(wrote) => {
                let n = wrote.len;
                assert!(size >= fixed, "size {size}");
                // Every record the drain delivered is written or counted left out.
                assert!(wrote.drain.complete, "size {size}");
                assert_eq!(wrote.drain.records, all.len() as u64, "size {size}");
                assert_eq!(wrote.records + wrote.left_out, all.len() as u64);
                // The longest suffix of records that fits.
                let mut k = 0;
                let mut used = fixed;
                while k < all.len() && used + sizes[all.len() - 1 - k] <= size {
                    used += sizes[all.len() - 1 - k];
                    k += 1;
                }
                assert_eq!(n, used, "size {size}");
                assert!(out[n..].iter().all(|&b| b == 0xa5), "wrote past the image");
                let image = handover::parse(&out[..n]).unwrap();
                assert_eq!(image.corruption(), None);
                assert_eq!(image.left_out(), (all.len() - k) as u64, "size {size}");
                assert_eq!(wrote.records, k as u64, "size {size}");
                // The same records as the full image (each write stamps its accounting records).
                let got = unstamped(owned(image.records()));
                assert_eq!(got, all[all.len() - k..], "size {size}");
                assert_eq!(image.totals(), full.totals());
            }
        }
    }
}

#[test]
fn every_single_byte_flip_is_an_error_or_a_clean_prefix() {
    let intact = intact_image();
    let (img, bounds, records_at) = (intact.bytes, &intact.bounds, intact.records_at);
    assert_eq!(bounds.last().unwrap().1, img.len());
    for pos in 0..img.len() {
        for mask in [0x01u8, 0x80, 0xff, 0x10] {
            let mut bad = img.to_vec();
            bad[pos] ^= mask;
            let r = handover::parse_located(&bad);
            if pos < records_at {
                let (e, at) = r.expect_err("a damaged fixed part is fatal");
                match pos {
                    0..8 => assert_eq!((e, at), (HandoverError::BadMagic, 0)),
                    8..10 => {
                        assert!(matches!(e, HandoverError::UnknownVersion(_)), "{e}");
                        assert_eq!(at, 8);
                    }
                    _ => {
                        // The core header's checksum, or the tables'.
                        assert!(
                            matches!(e, HandoverError::ChecksumMismatch { .. }),
                            "{pos}: {e}"
                        );
                        assert_eq!(at, if pos < 64 { 0 } else { 64 });
                    }
                }
                continue;
            }
            let image = r.unwrap_or_else(|e| panic!("flip at {pos}: {e:?}"));
            let k = bounds
                .iter()
                .position(|&(s, e)| s <= pos && pos < e)
                .unwrap();
            let (err, at) = image.corruption().expect("every record byte is checked");
            assert_eq!(at, bounds[k].0, "flip at {pos}: {err}");
            assert!(
                matches!(
                    err,
                    HandoverError::ChecksumMismatch { .. }
                        | HandoverError::RecordLengthOutOfBounds { .. }
                ),
                "flip at {pos}: {err}"
            );
            assert_eq!(image.record_count(), k);
            let got = owned(image.records());
            assert_eq!(got, intact.records[..k], "flip at {pos}");
            assert_eq!(image.totals(), intact.image.totals());
        }
    }
}

#[test]
fn every_truncation_is_an_error_or_a_clean_prefix() {
    let intact = intact_image();
    let (img, bounds, records_at) = (intact.bytes, &intact.bounds, intact.records_at);
    for t in 0..=img.len() {
        let r = handover::parse_located(&img[..t]);
        if t < records_at {
            // The core header first, then the rest of the fixed part.
            let needed = if t < 64 { 64 } else { records_at };
            let e = HandoverError::Truncated { needed, have: t };
            assert_eq!(r.unwrap_err(), (e, t));
            continue;
        }
        let image = r.unwrap();
        let k = bounds.iter().filter(|&&(_, e)| e <= t).count();
        assert_eq!(image.record_count(), k, "cut at {t}");
        if t == img.len() {
            assert_eq!(image.corruption(), None);
        } else {
            let (e, at) = image.corruption().unwrap();
            // What the reader needs next: the entry's sequence number and header, then (once it
            // has them, and so knows the payload's length) the whole entry.
            let (start, end) = bounds[k];
            let needed = if t < start + 8 + 32 {
                start + 8 + 32
            } else {
                end
            };
            assert_eq!(
                e,
                HandoverError::Truncated { needed, have: t },
                "cut at {t}"
            );
            assert_eq!(at, start);
        }
        let got = owned(image.records());
        assert_eq!(got, intact.records[..k]);
    }
}

static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Recomputes both fixed-part checksums (as a writer of a different layout would).
fn resign(img: &mut [u8]) {
    let records_at = u32_at(img, 56) as usize;
    if (68..=img.len()).contains(&records_at) {
        let c = CRC32C.checksum(&img[64..records_at - 4]);
        img[records_at - 4..records_at].copy_from_slice(&c.to_le_bytes());
    }
    let c = CRC32C.checksum(&img[..60]);
    img[60..64].copy_from_slice(&c.to_le_bytes());
}

/// `img` with byte `at` set to `v`, signed again.
fn resigned_with(img: &[u8], at: usize, v: u8) -> Vec<u8> {
    let mut out = img.to_vec();
    out[at] = v;
    resign(&mut out);
    out
}

#[test]
fn fixed_part_corruption_gives_the_right_error() {
    let log = crashed_log();
    let img = image_of(&log);
    let stored = u32_at(img, 60);

    let mut bad = img.to_vec();
    bad[16] = 9; // CPU count
    let e = handover::parse(&bad).unwrap_err();
    assert!(
        matches!(e, HandoverError::ChecksumMismatch { expected, found } if expected == stored && found != stored),
        "{e}"
    );

    let mut bad = img.to_vec();
    bad[64 + 32 + 40 + 8] ^= 1; // CPU 0 depth 1's overwritten counter
    assert!(matches!(
        handover::parse_located(&bad).unwrap_err(),
        (HandoverError::ChecksumMismatch { .. }, 64)
    ));

    let mut bad = img.to_vec();
    bad[..8].copy_from_slice(b"NMILOGHX");
    assert_eq!(handover::parse(&bad).unwrap_err(), HandoverError::BadMagic);

    // A version this reader does not know: newer, or 0.
    for v in [handover::VERSION + 1, 0, u16::MAX] {
        let mut bad = img.to_vec();
        bad[8..10].copy_from_slice(&v.to_le_bytes());
        assert_eq!(
            handover::parse_located(&bad).unwrap_err(),
            (HandoverError::UnknownVersion(v), 8)
        );
    }

    // A correctly signed image whose layout lacks the `len` field (id 2 renamed to an unknown id).
    assert_eq!(img[64 + 2 * 4], 2);
    let bad = resigned_with(img, 64 + 2 * 4, 200);
    assert_eq!(
        handover::parse(&bad).unwrap_err(),
        HandoverError::UnreadableLayout
    );

    // …or places `cpu` (offset 18, size 2) past the 32-byte header.
    let bad = resigned_with(img, 64 + 3 * 4 + 1, 31);
    assert_eq!(
        handover::parse_located(&bad).unwrap_err(),
        (HandoverError::UnreadableLayout, 64 + 3 * 4)
    );

    // …or makes `level` wider than a byte.
    let bad = resigned_with(img, 64 + 4 * 4 + 2, 2);
    assert_eq!(
        handover::parse(&bad).unwrap_err(),
        HandoverError::UnreadableLayout
    );

    // A record area that announces one record more than it holds.
    let mut bad = img.to_vec();
    let n = u64::from_le_bytes(bad[40..48].try_into().unwrap());
    bad[40..48].copy_from_slice(&(n + 1).to_le_bytes());
    resign(&mut bad);
    let image = handover::parse(&bad).unwrap();
    assert_eq!(image.record_count() as u64, n);
    let area = img.len() - u32_at(img, 56) as usize;
    assert_eq!(
        image.corruption(),
        Some((
            HandoverError::RecordAreaMismatch {
                records: n,
                bytes: area
            },
            img.len()
        ))
    );

    // …or one record less: the last entry is left over.
    let mut bad = img.to_vec();
    bad[40..48].copy_from_slice(&(n - 1).to_le_bytes());
    resign(&mut bad);
    let image = handover::parse(&bad).unwrap();
    assert_eq!(image.record_count() as u64, n - 1);
    let (last, _) = *entry_bounds(img, &handover::parse(img).unwrap())
        .last()
        .unwrap();
    let records_at = u32_at(img, 56) as usize;
    assert_eq!(
        image.corruption(),
        Some((
            HandoverError::RecordAreaMismatch {
                records: n - 1,
                bytes: last - records_at
            },
            last
        ))
    );
}

/// `img` with its tables laid out again: layout entries of `le` bytes and counter entries of `ce`
/// bytes, of which the first `keep` come from the original entry (the rest zero), as a writer of
/// another version could lay them out.
fn relaid(img: &[u8], le: usize, ce: usize, keep: usize) -> Vec<u8> {
    let records_at = u32_at(img, 56) as usize;
    let (nfields, le0) = (usize::from(img[14]), usize::from(img[15]));
    let entries = u32_at(img, 16) as usize * usize::from(u16::from_le_bytes([img[20], img[21]]));
    let ce0 = usize::from(u16::from_le_bytes([img[22], img[23]]));
    let counters_at = 64 + nfields * le0;
    let mut out = img[..64].to_vec();
    let mut entry = |from: &[u8], size: usize, keep: usize| {
        let n = keep.min(size).min(from.len());
        out.extend_from_slice(&from[..n]);
        out.extend(std::iter::repeat_n(0u8, size - n));
    };
    for i in 0..nfields {
        entry(&img[64 + le0 * i..64 + le0 * (i + 1)], le, le);
    }
    for i in 0..entries {
        entry(
            &img[counters_at + ce0 * i..counters_at + ce0 * (i + 1)],
            ce,
            keep,
        );
    }
    while !(out.len() + 4).is_multiple_of(8) {
        out.push(0);
    }
    out.extend_from_slice(&[0; 4]); // the tables' checksum
    let new_records_at = out.len();
    out.extend_from_slice(&img[records_at..]);
    out[15] = le as u8;
    out[22..24].copy_from_slice(&(ce as u16).to_le_bytes());
    out[56..60].copy_from_slice(&(new_records_at as u32).to_le_bytes());
    resign(&mut out);
    out
}

#[test]
fn table_entries_of_the_smallest_readable_size_are_read_and_smaller_ones_refused() {
    let intact = intact_image();
    // Layout entries of 3 bytes (id, offset, size) and counter entries of 25 (three counters and
    // the context kind): the smallest a reader accepts.
    let small = relaid(intact.bytes, 3, 25, 25);
    let image = handover::parse(&small).unwrap();
    assert_eq!(image.corruption(), None);
    assert_eq!(owned(image.records()), intact.records);
    let (a, b) = (image.totals(), intact.image.totals());
    assert_eq!(
        (a.torn, a.overwritten, a.dropped),
        (b.torn, b.overwritten, b.dropped)
    );
    // One byte less is not a table this reader can read.
    assert_eq!(
        handover::parse_located(&relaid(intact.bytes, 2, 25, 25)).unwrap_err(),
        (HandoverError::UnreadableLayout, 15)
    );
    assert_eq!(
        handover::parse_located(&relaid(intact.bytes, 3, 24, 24)).unwrap_err(),
        (HandoverError::UnreadableLayout, 22)
    );
}

/// An image written by a "different version" of the writer: a 32-byte record header with the fields
/// in another order, an extra field this reader does not know, no `src_seq`, `facility` or `caller`. The
/// reader must find every field through the layout table.
#[test]
fn a_foreign_header_layout_is_decoded_through_the_table() {
    let intact = intact_image();
    let (img, records_at) = (intact.bytes, intact.records_at);

    // (id, offset, size): flags, ctx, level at 0..3, cpu 3..5, len 6..7 (one byte), ts 8..16,
    // unknown id 42 at 16..32.
    let table: [(u8, u8, u8); 7] = [
        (7, 0, 1),
        (6, 1, 1),
        (4, 2, 1),
        (3, 3, 2),
        (2, 6, 1),
        (0, 8, 8),
        (42, 16, 16),
    ];
    let mut out = img[..records_at].to_vec();
    out[12..14].copy_from_slice(&32u16.to_le_bytes());
    out[14] = 8; // entries (one zero-filled slot at the end: id 0 is already present, so ignored)
    for (i, &(fid, o, s)) in table.iter().enumerate() {
        out[64 + 4 * i..64 + 4 * i + 4].copy_from_slice(&[fid, o, s, 0]);
    }
    out[64 + 28..64 + 32].copy_from_slice(&[0, 24, 8, 0]); // duplicate ts_ns entry: the first wins
    for (seq, h, p) in &intact.records {
        let start = out.len();
        out.extend_from_slice(&seq.to_le_bytes());
        let mut hb = [0u8; 32];
        hb[0] = h.flags;
        hb[1] = h.ctx;
        hb[2] = h.level;
        hb[3..5].copy_from_slice(&h.cpu.to_le_bytes());
        hb[6] = p.len() as u8;
        hb[8..16].copy_from_slice(&h.ts_ns.to_le_bytes());
        hb[16..32].copy_from_slice(b"unknown field!!!");
        out.extend_from_slice(&hb);
        out.extend_from_slice(p);
        while !(out.len() - start + 4).is_multiple_of(8) {
            out.push(0);
        }
        let c = CRC32C.checksum(&out[start..]);
        out.extend_from_slice(&c.to_le_bytes());
    }
    let area = (out.len() - records_at) as u64;
    out[48..56].copy_from_slice(&area.to_le_bytes());
    resign(&mut out);
    let image = handover::parse(&out).unwrap();
    assert_eq!(image.corruption(), None);
    let got = owned(image.records());
    let want: Vec<_> = intact
        .records
        .iter()
        .map(|(s, h, p)| {
            let h = Header {
                src_seq: 0,
                facility: 0,
                caller: 0,
                reserved: 0,
                ..*h
            };
            (*s, h, p.clone())
        })
        .collect();
    assert_eq!(got, want);
}

/// xorshift64*: deterministic pseudo-random bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_garbage_and_random_damage_never_panic() {
    let intact = intact_image();
    let img = intact.bytes;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let mut bytes: Vec<u8> = match round % 4 {
            // Pure noise.
            0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            // Noise behind a valid magic and version.
            1 => {
                let mut b = img[..10].to_vec();
                b.extend((0..rng.below(400)).map(|_| rng.next() as u8));
                b
            }
            // Noise behind a valid, signed core header (sizes from the noise).
            2 => {
                let mut b = img[..64].to_vec();
                for x in &mut b[12..60] {
                    if rng.below(4) == 0 {
                        *x = rng.next() as u8;
                    }
                }
                let c = CRC32C.checksum(&b[..60]);
                b[60..64].copy_from_slice(&c.to_le_bytes());
                b.extend((0..rng.below(2000)).map(|_| rng.next() as u8));
                b
            }
            // The real image with a few random byte changes and a random cut.
            _ => {
                let mut b = img.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let p = rng.below(b.len());
                    b[p] = rng.next() as u8;
                }
                b.truncate(rng.below(img.len() + 1));
                b
            }
        };
        if round % 7 == 0 && bytes.len() > 64 {
            resign(&mut bytes);
        }
        match handover::parse_located(&bytes) {
            Ok(image) => {
                assert_eq!(exercise(&image), image.record_count());
                if round % 4 == 3
                    && bytes.get(..u32_at(img, 56) as usize) == img.get(..u32_at(img, 56) as usize)
                {
                    // Fixed part intact: whatever was recovered is a prefix of the original.
                    let got = owned(image.records());
                    assert!(got.len() <= intact.records.len());
                    assert_eq!(got, intact.records[..got.len()]);
                }
            }
            Err((e, at)) => {
                assert!(at <= bytes.len(), "{e} at {at}");
                assert!(!e.to_string().contains('\n'));
            }
        }
    }
}

#[test]
fn an_empty_log_round_trips() {
    let log: Box<TestLog> = Box::new(Log::new(Manual::new(2)));
    let mut buf = [0xa5u8; 512];
    // Only the crashing CPU drains or writes an image.
    assert_eq!(
        handover::write_image(&*log, &mut buf, &all_stopped),
        Err(HandoverError::NotCrashing)
    );
    assert!(buf.iter().all(|&b| b == 0xa5), "nothing written");
    assert_eq!(
        log.drain_on_crash(&all_stopped, &mut |_, _: &RecordBuf| true),
        Err(DrainError::NotCrashing)
    );
    log.platform().set_cpu(1);
    log.crash_enter().unwrap();
    log.platform().set_cpu(0);
    assert_eq!(
        handover::write_image(&*log, &mut buf, &all_stopped),
        Err(HandoverError::NotCrashing)
    );
    assert!(buf.iter().all(|&b| b == 0xa5), "nothing written");
    log.platform().set_cpu(1);
    let n = handover::write_image(&*log, &mut buf, &all_stopped).unwrap();
    assert_eq!(n, handover::fixed_size(2, 4));
    let image = handover::parse(&buf[..n]).unwrap();
    assert_eq!(image.record_count(), 0);
    assert_eq!(image.cpu_count(), 2);
    assert_eq!(image.corruption(), None);
    assert_eq!(image.totals(), CpuCounters::default());
    assert_eq!(cpus_stopped(&image), [Some(true), Some(true), None]);
    // Trailing bytes of the region are ignored.
    assert_eq!(handover::parse(&buf).unwrap().record_count(), 0);
}

/// The version-1 layout of a version-2 image: 32-byte counter entries (no flags byte, no in-flight
/// count), the record area moved accordingly, both fixed-part checksums recomputed (the record
/// entries, each with its own checksum, are copied as they are).
fn to_version_1(img: &[u8]) -> Vec<u8> {
    // Version 1's counter entries: 32 bytes, of which the first 25 (torn, overwritten, dropped,
    // kind) are version 2's.
    assert_eq!(u16::from_le_bytes([img[22], img[23]]), 40);
    let mut out = relaid(img, usize::from(img[15]), 32, 25);
    out[8..10].copy_from_slice(&1u16.to_le_bytes());
    resign(&mut out);
    out
}

/// A version-1 image (as the previous writer made them) reads the same: records, loss counters and
/// context kinds; it has no in-flight counts and no stopped flags, so they read as 0 and "stopped".
#[test]
fn a_version_1_image_is_read() {
    let log = crashed_log();
    let mut region = vec![0u8; 1 << 16];
    let n = handover::write_image(&*log, &mut region, &|c| c != 1).unwrap();
    let v2 = handover::parse(&region[..n]).unwrap();
    assert_eq!(v2.version(), 2);
    assert_eq!(v2.cpu_stopped(1), Some(false));
    assert_eq!(v2.counters(1, 0).unwrap().in_flight, 1);
    let bytes = to_version_1(&region[..n]);
    let v1 = handover::parse(&bytes).unwrap();
    assert_eq!(owned(v1.records()), owned(v2.records()));
    assert_version_1_of(&v1, &v2, (3, 4, 1, 0));
    assert_eq!(v1.cpu_stopped(3), None);
    assert_eq!(v1.totals().in_flight, 0);
    // Each of its bytes is covered by a checksum, as in version 2.
    for pos in 0..u32_at(&bytes, 56) as usize {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x10;
        assert!(handover::parse(&bad).is_err(), "flip at {pos}");
    }
}

/// Where the flush owner stops in the drain matrix: nowhere (a complete flush), or at `step` of its
/// `nth` move (`nth` counted from 0).
#[derive(Clone, Copy, Debug)]
enum OwnerStop {
    Completed,
    At { nth: usize, step: FlushStep },
}

/// Drain matrix, through the sink and the image: three CPUs; one CPU's writer is frozen at each step
/// of the write protocol in turn, while another CPU holds flush ownership frozen at each step of its
/// first or sixth move (or flushed completely), and the CPUs other than the crashing one are known
/// to be stopped or not. Then the crashing CPU (the third) drains:
///
/// * every committed record exactly once, in timestamp order (the records' exact sequence), the
///   record of a frozen move included once whether it reached the main log or not;
/// * what the flush moved comes from the main log (exactly the main log's records, at their
///   main-log numbers), the rest from the rings;
/// * the frozen record delivered (frozen after its commit) or counted exactly once: torn if its CPU
///   is known to be stopped, in flight if not, with one accounting record saying so;
/// * the drain is read-only (the main log unchanged) and repeatable (a second drain gives the same
///   records and report); the image holds exactly the drain's output and its counters;
/// * a nested drain (a fault in the sink: crash entry again on the same CPU, a record, a drain) is
///   complete, its own record included, and the interrupted drain stops when resumed.
#[test]
fn drain_matrix_through_the_image() {
    let mut stops = vec![OwnerStop::Completed];
    for nth in [0, 5] {
        stops.extend(FlushStep::ALL.map(|step| OwnerStop::At { nth, step }));
    }
    let mut region = vec![0u8; 1 << 16];
    let mut case = 0usize;
    for frozen_cpu in 0..3 {
        for step in WriteStep::ALL {
            for &stop in &stops {
                for others_stopped in [true, false] {
                    case += 1;
                    drain_matrix_case(frozen_cpu, step, stop, others_stopped, case, &mut region);
                }
            }
        }
    }
    assert_eq!(case, 3 * 8 * 21 * 2);
}

/// Where the flush owner is stopped after it found its ring lapped: after counting the records it
/// passes as overwritten but before moving its cursor past them, or in the first move after that
/// (its main-log record published, its cursor stored but the move not yet counted `moved`, done).
const LAP_STOPS: [(FlushStep, usize); 4] = [
    (FlushStep::OverwrittenCounted, 0),
    (FlushStep::Main(WriteStep::Published), 0),
    (FlushStep::CursorStored, 0),
    (FlushStep::Done, 0),
];

/// A flush owner stopped anywhere in its handling of a lapped ring: the crash drain delivers
/// every record that survived exactly once and counts every other one overwritten exactly once —
/// the count the owner had already taken included, whether or not its cursor moved past them.
#[test]
fn a_lapped_flush_stopped_anywhere_counts_each_overwritten_record_once() {
    let mut region = vec![0u8; 1 << 16];
    for (at, nth) in LAP_STOPS {
        for moved_before in [0, 5] {
            let what = format!("owner stopped at {at:?} (move {nth}), {moved_before} moved before");
            let log: Box<TestLog> = Box::new(Log::new(Manual::new(3)));
            let p = log.platform();
            let (writer, owner, crasher) = (0, 1, 2);
            let mut committed = Vec::new();
            let mut write = |p: &Manual, ids: std::ops::Range<usize>| {
                p.set_cpu(writer);
                for i in ids {
                    let t = format!("rec {i:03}");
                    log.append_raw(Level::Info, 0, 0, t.as_bytes()).unwrap();
                    committed.push(t);
                }
            };
            write(p, 0..moved_before);
            p.set_cpu(owner);
            assert_eq!(log.flush().unwrap().moved as usize, moved_before, "{what}");
            // Three times what the 128-word ring holds: the ring is lapped.
            write(p, moved_before..moved_before + 60);
            p.set_cpu(owner);
            let mut seen = 0;
            let mut stopped_there = false;
            let rep = log
                .flush_with_hook(&mut |s: FlushStep| {
                    if s == at {
                        if seen == nth {
                            stopped_there = true;
                            return false;
                        }
                        seen += 1;
                    }
                    true
                })
                .unwrap();
            assert!(stopped_there, "{what}: {rep:?}");
            assert!(rep.overwritten > 0, "{what}: the ring was lapped: {rep:?}");
            p.set_cpu(writer);
            assert_eq!(
                log.flush(),
                None,
                "{what}: the stopped owner keeps the flush"
            );

            p.set_cpu(crasher);
            log.crash_enter().unwrap();
            let (rep, out) = drain(&*log, &all_stopped);
            check_drain(&what, &rep, &out);
            let (records, accounting) = out.split_at(out.len() - rep.accounting_records as usize);
            let texts: Vec<&str> = records.iter().map(Out::text).collect();
            // The records moved before the lap, then an unbroken run of the newest ones.
            let survivors = texts.len() - moved_before;
            let lost = committed.len() - texts.len();
            let want: Vec<&str> = committed[..moved_before]
                .iter()
                .chain(&committed[moved_before + lost..])
                .map(String::as_str)
                .collect();
            assert_eq!(
                texts, want,
                "{what}: the newest {survivors} survive, once each"
            );
            assert!(lost > 0 && survivors > 0, "{what}");
            assert_eq!(rep.overwritten as usize, lost, "{what}: {rep:?}");
            assert_eq!(
                log.counters(writer, 0).map(|c| c.overwritten as usize),
                Some(lost),
                "{what}"
            );
            let acc: Vec<&str> = accounting.iter().map(Out::text).collect();
            assert_eq!(
                acc,
                [format!(
                    "nmilog: cpu {writer} task (depth 0): 0 torn, {lost} overwritten, 0 dropped"
                )],
                "{what}"
            );
            // The image carries the same count.
            let wrote = handover::write_image_report(&*log, &mut region, &all_stopped).unwrap();
            let image = check_image_is(&what, &region[..wrote.len], &out, 0);
            assert_eq!(image.totals().overwritten as usize, lost, "{what}");
        }
    }
}

fn drain_matrix_case(
    frozen_cpu: usize,
    step: WriteStep,
    stop: OwnerStop,
    others_stopped: bool,
    case: usize,
    region: &mut [u8],
) {
    let what = format!(
        "cpu {frozen_cpu} frozen at {step:?}, flush owner {stop:?}, others stopped: {others_stopped}"
    );
    let log: Box<TestLog> = Box::new(Log::new(Manual::new(3)));
    let p = log.platform();
    let (owner, crasher) = ((frozen_cpu + 2) % 3, (frozen_cpu + 1) % 3);
    let mut committed = Vec::new();
    // Logs `rec {i}` for each `i` of `ids` on CPU `i % 3` (not flushed: the NMI path).
    let mut log_recs = |ids: std::ops::Range<usize>| {
        for i in ids {
            p.set_cpu(i % 3);
            let t = format!("rec {i}");
            log.append_raw(Level::Info, 0, 0, t.as_bytes()).unwrap();
            committed.push(t);
        }
    };
    log_recs(0..9);
    p.set_cpu(owner);
    let in_main = match stop {
        OwnerStop::Completed => {
            assert_eq!(log.flush().unwrap().moved, 9, "{what}");
            9
        }
        OwnerStop::At { nth, step: at } => {
            let mut moves = 0;
            let rep = log
                .flush_with_hook(&mut |s: FlushStep| {
                    if s == at && moves == nth {
                        return false;
                    }
                    moves += usize::from(s == FlushStep::Done);
                    true
                })
                .unwrap();
            // The frozen move's main-log record is published from its `Published` step on.
            let published = !matches!(
                at,
                FlushStep::Main(w) if w != WriteStep::Published
            );
            let visible = nth + usize::from(published);
            assert_eq!(log.main().next_seq() as usize, visible, "{what}");
            // A move counts once its main-log write returned.
            let returned = matches!(at, FlushStep::CursorStored | FlushStep::Done);
            assert_eq!(
                rep.moved as usize,
                nth + usize::from(returned),
                "{what}: {rep:?}"
            );
            // The frozen owner keeps flush ownership: nobody else moves anything.
            p.set_cpu(frozen_cpu);
            assert_eq!(log.flush(), None, "{what}");
            visible
        }
    };
    assert_eq!(log.main().next_seq() as usize, in_main, "{what}");
    log_recs(9..12);
    p.set_cpu(frozen_cpu);
    let r = log.append_raw_with_hook(Level::Info, 0, 0, b"the frozen one", &mut |s: WriteStep| {
        s != step
    });
    assert!(r.is_err(), "{what}");
    let delivered_frozen = matches!(step, WriteStep::Committed | WriteStep::Published);
    if delivered_frozen {
        committed.push("the frozen one".into());
    }
    p.set_cpu(crasher);
    log.crash_enter().unwrap();
    log.append_raw(Level::Emerg, 0, 0, b"panic").unwrap();
    committed.push("panic".into());
    let stopped = |c: usize| others_stopped || c == crasher;
    let lost = u64::from(!delivered_frozen);
    let (torn, in_flight) = if others_stopped { (lost, 0) } else { (0, lost) };

    // A reader of the main log also sees a record committed there but not yet published (the owner
    // frozen at `Main(Committed)`); the drain's main-log window ends at the published ones.
    let main_before = main_records(&log);
    let unpublished = matches!(
        stop,
        OwnerStop::At {
            step: FlushStep::Main(WriteStep::Committed),
            ..
        }
    );
    assert_eq!(
        main_before.len(),
        in_main + usize::from(unpublished),
        "{what}"
    );
    let (rep, out) = drain(&log, &stopped);
    check_drain(&what, &rep, &out);
    let (records, accounting) = out.split_at(out.len() - rep.accounting_records as usize);
    let texts: Vec<&str> = records.iter().map(Out::text).collect();
    assert_eq!(
        texts, committed,
        "{what}: every committed record once, in order"
    );
    assert_eq!(from_main(&out), main_before[..in_main], "{what}");
    assert_eq!(rep.from_main as usize, in_main, "{what}");
    if let Some((_, h, payload)) = main_before.get(in_main) {
        // The unpublished main-log record comes from its ring, once.
        let copy = Out {
            origin: Origin::Ring {
                cpu: usize::from(h.cpu),
                depth: 0,
            },
            header: *h,
            payload: payload.clone(),
        };
        assert_eq!(out.iter().filter(|&o| *o == copy).count(), 1, "{what}");
    }
    assert!(rep.complete, "{what}: {rep:?}");
    assert_eq!(
        (rep.torn, rep.in_flight, rep.overwritten, rep.main_lost),
        (torn, in_flight, 0, 0),
        "{what}: {rep:?}"
    );
    assert_eq!(
        rep.not_stopped,
        if others_stopped { 0 } else { 2 },
        "{what}"
    );
    let acc: Vec<&str> = accounting.iter().map(Out::text).collect();
    let acc_want: Vec<String> = match (torn, in_flight) {
        (0, 0) => vec![],
        (1, 0) => vec![format!(
            "nmilog: cpu {frozen_cpu} task (depth 0): 1 torn, 0 overwritten, 0 dropped"
        )],
        _ => vec![format!(
            "nmilog: cpu {frozen_cpu} task (depth 0): 0 torn, 0 overwritten, 0 dropped, \
             1 in flight (CPU not stopped)"
        )],
    };
    assert_eq!(acc, acc_want, "{what}");
    assert!(
        accounting
            .iter()
            .all(|o| usize::from(o.header.cpu) == frozen_cpu),
        "{what}"
    );
    for c in 0..3 {
        for d in 0..4 {
            let want = if (c, d) == (frozen_cpu, 0) {
                CpuCounters {
                    torn,
                    in_flight,
                    ..CpuCounters::default()
                }
            } else {
                CpuCounters::default()
            };
            assert_eq!(log.counters(c, d), Some(want), "{what}: cpu {c} depth {d}");
        }
    }

    // Read-only and repeatable.
    assert_eq!(main_records(&log), main_before, "{what}");
    let first = (rep, out.clone());
    assert_drains_the_same(&what, drain(&log, &stopped), &first);

    // The image: the drain's output, its counters, who was not known to be stopped.
    let wrote = handover::write_image_report(&*log, region, &stopped).unwrap();
    let image = check_image_is(&what, &region[..wrote.len], &out, 0);
    assert_eq!(wrote.records, out.len() as u64, "{what}");
    assert_eq!(image.totals().torn, torn, "{what}");
    assert_eq!(image.totals().in_flight, in_flight, "{what}");
    assert_eq!(image.totals().overwritten, 0, "{what}");
    assert_eq!(
        image.counters(frozen_cpu, 0),
        log.counters(frozen_cpu, 0),
        "{what}"
    );
    for c in 0..3 {
        assert_eq!(
            image.cpu_stopped(c),
            Some(others_stopped || c == crasher),
            "{what}"
        );
    }
    assert_eq!(main_records(&log), main_before, "{what}");

    // A nested crash in the sink, at a record that varies with the case.
    let k = case % records.len();
    let mut inner = None;
    let (outer_rep, outer) = drain_with_fault_at(&log, &stopped, k, || {
        assert_eq!(log.crash_enter(), Ok(crasher));
        log.append_raw(Level::Emerg, 0, 0, b"fault in the crash path")
            .unwrap();
        inner = Some(drain(&log, &stopped));
    });
    let (inner_rep, inner_out) = inner.expect("the nested drain ran");
    let mut want = out.clone();
    want.insert(
        records.len(),
        Out {
            origin: Origin::Ring {
                cpu: crasher,
                depth: 2,
            },
            header: inner_out[records.len()].header,
            payload: b"fault in the crash path".to_vec(),
        },
    );
    assert_same_output(&format!("{what}: the nested drain"), &want, &inner_out);
    assert!(inner_rep.complete, "{what}");
    assert_eq!(
        inner_out[records.len()].header.context(),
        (Some(ContextKind::Crash), 2),
        "{what}"
    );
    assert_eq!(outer, out[..=k], "{what}: the interrupted drain");
    assert!(!outer_rep.complete, "{what}: {outer_rep:?}");
    assert_eq!(
        (outer_rep.records, outer_rep.accounting_records),
        (k as u64 + 1, 0),
        "{what}"
    );
    // After both, the image is the nested drain's output.
    let n = handover::write_image(&*log, region, &stopped).unwrap();
    check_image_is(&what, &region[..n], &inner_out, 0);
    assert_eq!(main_records(&log), main_before, "{what}");
}

/// Drains `log` (on the crashing CPU), running `fault` from the sink when it gets the outer drain's
/// record `k` (a fault in the sink, which may start a nested drain); returns the outer drain's
/// report and output.
fn drain_with_fault_at(
    log: &TestLog,
    stopped: &dyn Fn(usize) -> bool,
    k: usize,
    fault: impl FnOnce(),
) -> (DrainReport, Vec<Out>) {
    let mut outer = Vec::new();
    let mut fault = Some(fault);
    let rep = log
        .drain_on_crash(stopped, &mut |o: Origin, r: &RecordBuf| {
            outer.push(Out::new(o, r));
            if outer.len() == k + 1 {
                fault.take().expect("record k once")();
            }
            true
        })
        .unwrap();
    assert!(fault.is_none(), "the sink never got record {k}");
    (rep, outer)
}

/// Drains `log` with a nested drain started from the sink when it gets the outer drain's record
/// `k`; returns the outer drain's report and output. The nested drain must give `first`'s output.
fn drain_nested_at(
    log: &TestLog,
    k: usize,
    first: &(DrainReport, Vec<Out>),
) -> (DrainReport, Vec<Out>) {
    drain_with_fault_at(log, &all_stopped, k, || {
        assert_drains_the_same(&format!("nested at {k}"), drain(log, &all_stopped), first);
    })
}

/// A nested drain started from the sink at any record of the outer drain's merge is complete; the
/// outer drain, resumed, stops at once: it delivered exactly what it had, no accounting records.
#[test]
fn a_nested_drain_supersedes_the_interrupted_one() {
    let log = crashed_log();
    let first = drain(&log, &all_stopped);
    let records = (first.0.records - first.0.accounting_records) as usize;
    assert_eq!(first.0.accounting_records, 2);
    for k in 0..records {
        let (rep, outer) = drain_nested_at(&log, k, &first);
        assert_eq!(outer, first.1[..=k], "nested at {k}");
        assert!(!rep.complete, "nested at {k}: {rep:?}");
        assert_eq!((rep.records, rep.accounting_records), (k as u64 + 1, 0));
    }
    // The log is as it was: a plain drain gives the same output.
    assert_drains_the_same("after", drain(&log, &all_stopped), &first);
}

/// The same while the outer drain hands out its accounting records: resumed, it goes on handing out
/// the rest and reports itself complete, although `DrainReport::complete` says "false: ... a nested
/// drain superseded this one" and the module docs say an interrupted drain "stops if it is ever
/// resumed" (the accounting loop in `Log::drain` does not check the generation). A console sink
/// prints those accounting lines twice.
#[test]
fn a_drain_superseded_during_its_accounting_stops() {
    let log = crashed_log();
    let first = drain(&log, &all_stopped);
    let records = (first.0.records - first.0.accounting_records) as usize;
    for k in records..first.1.len() {
        let (rep, outer) = drain_nested_at(&log, k, &first);
        assert_eq!(outer.len(), k + 1, "nested at {k}: the outer drain went on");
        assert!(!rep.complete, "nested at {k}: {rep:?}");
    }
}

/// A writer frozen at each step of the write protocol on a ring with nothing pending, one record
/// pending, or one record already moved to the main log: the first drain delivers every committed
/// record (the frozen one once committed) and counts the frozen call torn exactly once; every later
/// drain (the image's two included) gives the same output — no phantom torn record, no record
/// counted late.
#[test]
fn a_frozen_writer_is_counted_by_every_drain_exactly_once() {
    for pending in ["none", "in its ring", "in the main log"] {
        for step in WriteStep::ALL {
            let what = format!("pending {pending}, frozen at {step:?}");
            let log: Box<TestLog> = Box::new(Log::new(Manual::new(2)));
            let p = log.platform();
            p.set_cpu(1);
            if pending != "none" {
                log.append_raw(Level::Info, 0, 0, b"pending").unwrap();
            }
            if pending == "in the main log" {
                assert_eq!(log.flush().unwrap().moved, 1);
            }
            let _ = log
                .append_raw_with_hook(Level::Info, 0, 0, b"frozen", &mut |s: WriteStep| s != step);
            p.set_cpu(0);
            log.crash_enter().unwrap();
            let delivered = matches!(step, WriteStep::Committed | WriteStep::Published);
            let mut want: Vec<&str> = Vec::new();
            if pending != "none" {
                want.push("pending");
            }
            if delivered {
                want.push("frozen");
            } else {
                want.push("nmilog: cpu 1 task (depth 0): 1 torn, 0 overwritten, 0 dropped");
            }
            let first = drain(&log, &all_stopped);
            let (r1, out1) = first.clone();
            check_drain(&what, &r1, &out1);
            let texts: Vec<&str> = out1.iter().map(Out::text).collect();
            assert_eq!(texts, want, "{what}");
            let torn = u64::from(!delivered);
            assert_eq!(
                (r1.torn, r1.accounting_records, r1.from_main),
                (torn, torn, u64::from(pending == "in the main log")),
                "{what}"
            );
            for _ in 0..2 {
                assert_drains_the_same(&what, drain(&log, &all_stopped), &first);
            }
            let mut region = vec![0u8; 4096];
            let n = handover::write_image(&*log, &mut region, &all_stopped).unwrap();
            let image = check_image_is(&what, &region[..n], &out1, 0);
            assert_eq!(image.counters(1, 0).unwrap().torn, torn, "{what}");
            assert_eq!(log.counters(1, 0).unwrap().torn, torn, "{what}");
            assert_drains_the_same(&what, drain(&log, &all_stopped), &first);
        }
    }
}

/// Rings that wrapped before the crash drain, with or without a normal flush half-way: per ring,
/// records delivered (from the main log or the ring) plus records counted overwritten is exactly the
/// number written; without the flush the delivered ones are the newest, consecutive; with it, those
/// the flush moved come from the main log and the newest from the ring.
#[test]
fn drain_over_wrapped_rings_counts_overwrites_exactly() {
    let mut region = vec![0u8; 1 << 16];
    for (count, len) in [(10usize, 4usize), (37, 13), (60, 1), (25, 60), (90, 30)] {
        for flush_half_way in [false, true] {
            let what = format!("count {count} len {len} flush half-way {flush_half_way}");
            let log: Box<TestLog> = Box::new(Log::new(Manual::new(3)));
            let p = log.platform();
            // CPU 0 in task context, CPU 1 in an NMI (depth 1), CPU 2 interleaved with both.
            for i in 0..count {
                let body = format!("{i:04}{}", "x".repeat(len));
                p.set_cpu(0);
                log.append_raw(Level::Info, 0, 0, format!("a{body}").as_bytes())
                    .unwrap();
                p.set_cpu(1);
                {
                    let _nmi = log.enter(ContextKind::Nmi);
                    log.append_raw(Level::Info, 0, 0, format!("b{body}").as_bytes())
                        .unwrap();
                }
                if i % 3 == 0 {
                    p.set_cpu(2);
                    log.append_raw(Level::Info, 0, 0, format!("c{body}").as_bytes())
                        .unwrap();
                }
                if flush_half_way && i == count / 2 {
                    p.set_cpu(0);
                    assert!(log.flush().unwrap().moved > 0, "{what}");
                }
            }
            let main_before = main_records(&log);
            assert_eq!(main_before.is_empty(), !flush_half_way, "{what}");
            p.set_cpu(2);
            log.crash_enter().unwrap();
            let (rep, out) = drain(&log, &all_stopped);
            check_drain(&what, &rep, &out);
            assert!(rep.complete, "{what}");
            assert_eq!(from_main(&out), main_before, "{what}");
            let n = handover::write_image(&*log, &mut region, &all_stopped).unwrap();
            let image = check_image_is(&what, &region[..n], &out, 0);
            let mut overwritten = 0;
            for (cpu, depth, tag, written) in [
                (0, 0, 'a', count),
                (1, 1, 'b', count),
                (2, 0, 'c', count.div_ceil(3)),
            ] {
                let what = format!("{what} cpu {cpu}");
                let got: Vec<(usize, bool)> = out
                    .iter()
                    .filter(|o| o.origin != Origin::Accounting && o.text().starts_with(tag))
                    .map(|o| {
                        let is_main = matches!(o.origin, Origin::Main { .. });
                        (o.text()[1..5].parse().unwrap(), is_main)
                    })
                    .collect();
                let c = image.counters(cpu, depth).unwrap();
                assert_eq!(log.counters(cpu, depth), Some(c), "{what}");
                overwritten += c.overwritten;
                assert_eq!(
                    got.len() as u64 + c.overwritten,
                    written as u64,
                    "{what}: delivered + overwritten"
                );
                let step = if tag == 'c' { 3 } else { 1 };
                let ids: Vec<usize> = got.iter().map(|&(i, _)| i / step).collect();
                // In order, each once, the newest always delivered.
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "{what}: {ids:?}");
                assert_eq!(ids.last(), Some(&(written - 1)), "{what}");
                // The main log's copies first, then the ring's.
                let main_part = got.iter().take_while(|&&(_, m)| m).count();
                assert!(got[main_part..].iter().all(|&(_, m)| !m), "{what}");
                assert_eq!(main_part > 0, flush_half_way, "{what}");
                if !flush_half_way {
                    // The survivors are the newest, consecutive.
                    let want: Vec<usize> = (written - got.len()..written).collect();
                    assert_eq!(ids, want, "{what}");
                } else {
                    // The flush moved a consecutive run; the ring's survivors are consecutive up to
                    // the newest; what lies between (and before) was overwritten.
                    let (m, r) = ids.split_at(main_part);
                    assert!(m.windows(2).all(|w| w[1] == w[0] + 1), "{what}: {m:?}");
                    assert!(r.windows(2).all(|w| w[1] == w[0] + 1), "{what}: {r:?}");
                }
                if written >= 60 {
                    assert!(c.overwritten > 0, "{what}: the ring must wrap");
                }
            }
            assert_eq!(rep.overwritten, overwritten, "{what}");
        }
    }
}

/// [`handover::max_image_size`] is enough for any main log content: a wrapped main log full of the
/// smallest or largest records never leaves one out. Every record came from the main log (each was
/// flushed as it was logged), so the image numbers them with their main-log numbers.
#[test]
fn max_image_size_is_enough_for_a_full_main_log() {
    for len in [0usize, 1, 7, 8, 9, 33, 100, 200] {
        let log: Box<Log<Manual, 2, 128, 256, 4>> = Box::new(Log::new(Manual::new(2)));
        let payload = vec![b'z'; len];
        for i in 0..200 {
            log.platform().set_cpu(i % 2);
            log.append(Level::Info, 0, 0, &payload).unwrap();
        }
        log.platform().set_cpu(0);
        log.crash_enter().unwrap();
        let main = main_records(&log);
        let (rep, out) = drain(&log, &all_stopped);
        check_drain(&format!("len {len}"), &rep, &out);
        assert_eq!((rep.from_main, rep.from_rings), (main.len() as u64, 0));
        let bound = handover::max_image_size(2, 4, 128, 256);
        let mut region = vec![0u8; bound];
        let n = handover::write_image(&*log, &mut region, &all_stopped).unwrap();
        let image = handover::parse(&region[..n]).unwrap();
        assert_eq!(image.left_out(), 0, "len {len}");
        assert!(image.record_count() > 2, "len {len}");
        assert_eq!(owned(image.records()), main, "len {len}");
        let first = image.records().next().unwrap().seq;
        assert!(first > 0, "len {len}: the main log must have wrapped");
        assert!(image
            .records()
            .all(|r| r.header.facility != facility::KERNEL || r.payload == &payload[..]));
    }
}

/// [`handover::max_image_size`] promises "a region this large never leaves records out": the
/// read-only drain also puts every record still in a per-CPU ring in the image, and the bound counts
/// them (a full main log plus full rings fits).
#[test]
fn max_image_size_is_enough_for_a_full_main_log_and_full_rings() {
    let log: Box<Log<Manual, 2, 128, 256, 4>> = Box::new(Log::new(Manual::new(2)));
    for i in 0..200 {
        log.platform().set_cpu(i % 2);
        log.append(Level::Info, 0, 0, b"").unwrap(); // flushed: the main log wraps
    }
    log.platform().set_cpu(0);
    log.crash_enter().unwrap();
    for i in 0..200 {
        log.platform().set_cpu(i % 2);
        log.append(Level::Info, 0, 0, b"").unwrap(); // after the crash: ring only, rings wrap
    }
    log.platform().set_cpu(0);
    let mut region = vec![0u8; handover::max_image_size(2, 4, 128, 256)];
    assert_eq!(region.len(), Log::<Manual, 2, 128, 256, 4>::MAX_IMAGE_BYTES);
    let wrote = handover::write_image_report(&*log, &mut region, &all_stopped).unwrap();
    assert!(wrote.drain.from_rings > 0 && wrote.drain.from_main > 0);
    assert_eq!(wrote.left_out, 0, "{wrote:?}");
}

/// Records with equal timestamps: the drain's output stays in timestamp order and each CPU's records
/// in their own order, also when the normal flush moved some of them in separate flushes (an eager
/// flush moves what is stamped with the current tick). The main log keeps the order the flushes gave
/// it, and the drain lets the main log win ties (a ring record that ties with a main-log record of its
/// own ring is newer than it). Ties between records still in their rings go to the lower CPU.
#[test]
fn equal_timestamps_keep_each_cpus_order() {
    let log: Box<TestLog> = Box::new(Log::new(Manual::new(3)));
    let p = log.platform();
    p.set_tick(0); // one clock tick: every record gets the same timestamp
    p.set_cpu(1);
    log.append(Level::Info, 0, 0, b"cpu 1").unwrap(); // flushed at once
    p.set_cpu(0);
    log.append(Level::Info, 0, 0, b"cpu 0, first").unwrap(); // flushed at once, after CPU 1's
    log.append_raw(Level::Info, 0, 0, b"cpu 0, second").unwrap(); // left in its ring
    p.set_cpu(2);
    log.append_raw(Level::Info, 0, 0, b"cpu 2").unwrap(); // left in its ring
    log.crash_enter().unwrap();
    let (rep, out) = drain(&log, &all_stopped);
    assert_eq!((rep.from_main, rep.from_rings), (2, 2));
    assert!(out.iter().all(|o| o.header.ts_ns == out[0].header.ts_ns));
    let texts: Vec<&str> = out.iter().map(Out::text).collect();
    // The main log's order first (the flushes' order), then the rings by CPU.
    assert_eq!(texts, ["cpu 1", "cpu 0, first", "cpu 0, second", "cpu 2"]);
}
