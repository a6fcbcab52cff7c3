//! The handover image: round trip through a crash drain, regions too small, every single-byte flip,
//! every truncation, fixed-part corruption, foreign layouts and random garbage.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nmilog::handover::{self, HandoverError, Image, ImageRecord};
use nmilog::record::{facility, flags};
use nmilog::ring::{Read, WriteStep};
use nmilog::{ContextKind, CpuCounters, Header, Level, Log, Platform, RecordBuf};

/// A single-threaded test platform: the test sets the current CPU; the clock advances 1 µs per read.
struct Manual {
    cpu: AtomicUsize,
    clock: AtomicU64,
    cpus: usize,
}

impl Manual {
    fn new(cpus: usize) -> Self {
        Manual {
            cpu: AtomicUsize::new(0),
            clock: AtomicU64::new(1_000_000),
            cpus,
        }
    }
    fn set_cpu(&self, c: usize) {
        self.cpu.store(c, Ordering::Relaxed);
    }
}

impl Platform for Manual {
    fn cpu_id(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }
    fn now_ns(&self) -> u64 {
        self.clock.fetch_add(1_000, Ordering::Relaxed)
    }
    fn cpu_count(&self) -> usize {
        self.cpus
    }
}

type TestLog = Log<Manual, 3, 128, 4096, 4>;

/// A crashed log: records from three CPUs in task, irq, NMI and crash context, a continuation, a raw
/// record, a wrapped ring (overwritten records), a writer frozen mid-write (torn), a refused
/// re-entrant call (dropped) and a bad CPU id; then crash entry and the drain.
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
    // CPU 1 is stopped by the crash NMI half-way through a write: torn.
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
    let rep = log.drain_on_crash();
    assert!(rep.flush.torn >= 1);
    log
}

fn main_records(log: &TestLog) -> Vec<(u64, Header, Vec<u8>)> {
    let mut r = log.main_reader();
    let mut buf = RecordBuf::new();
    let mut out = Vec::new();
    loop {
        match r.read(log, &mut buf) {
            Read::Record => out.push((buf.seq, buf.header, buf.payload().to_vec())),
            Read::Overwritten { .. } => continue,
            Read::Empty | Read::InFlight => break,
        }
    }
    out
}

fn owned<'a>(recs: impl Iterator<Item = ImageRecord<'a>>) -> Vec<(u64, Header, Vec<u8>)> {
    recs.map(|r| (r.seq, r.header, r.payload.to_vec()))
        .collect()
}

fn image_of(log: &TestLog) -> &'static [u8] {
    let mut buf = vec![0u8; 1 << 16];
    let n = handover::write_image(log, &mut buf, &|_| true).unwrap();
    buf.truncate(n);
    Box::leak(buf.into_boxed_slice())
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

#[test]
fn round_trip_keeps_every_record_and_counter() {
    let log = crashed_log();
    let expect = main_records(&log);
    assert!(expect.len() >= 10, "{}", expect.len());
    let img = image_of(&log);
    let image = handover::parse(img).unwrap();
    assert_eq!(image.version(), handover::VERSION);
    assert_eq!(image.corruption(), None);
    assert_eq!(image.cpu_count(), 3);
    assert_eq!(image.depth(), 4);
    assert_eq!(image.record_count(), expect.len());
    assert_eq!(image.left_out(), 0);
    assert_eq!(image.bad_cpu_dropped(), 1);
    assert_eq!(owned(image.records()), expect);
    for r in image.records() {
        assert_eq!(r.header.len as usize, r.payload.len());
    }
    let mut sum = CpuCounters::default();
    for c in 0..3 {
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
        }
    }
    assert_eq!(image.counters(3, 0), None);
    assert_eq!(image.counters(0, 4), None);
    assert_eq!(image.totals(), sum);
    assert_eq!(sum.torn, 1);
    assert!(sum.overwritten > 0);
    assert!(sum.dropped >= 1);
    assert_eq!(image.context_kind(1, 1), Some(ContextKind::Irq));
    assert_eq!(image.context_kind(2, 1), Some(ContextKind::Nmi));
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
    // Writing again gives the same bytes (the image is a pure function of the log).
    assert_eq!(image_of(&log), img);
}

#[test]
fn a_region_too_small_keeps_the_newest_records_and_counts_the_rest() {
    let log = crashed_log();
    let full_img = image_of(&log);
    let full = handover::parse(full_img).unwrap();
    let all = owned(full.records());
    let sizes: Vec<usize> = all
        .iter()
        .map(|r| handover::record_size(r.2.len()))
        .collect();
    let fixed = handover::fixed_size(3, 4);
    assert_eq!(u32_at(full_img, 56) as usize, fixed);
    for size in 0..full_img.len() + 16 {
        let mut out = vec![0xa5u8; size];
        match handover::write_image(&*log, &mut out, &|_| true) {
            Err(e) => {
                assert!(size < fixed, "size {size}: {e}");
                assert_eq!(e, HandoverError::OutputTooSmall { needed: fixed });
                assert!(out.iter().all(|&b| b == 0xa5), "nothing written");
            }
            Ok(n) => {
                assert!(size >= fixed, "size {size}");
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
                let got: Vec<_> = image
                    .records()
                    .map(|r| (r.seq, r.header, r.payload.to_vec()))
                    .collect();
                assert_eq!(got, all[all.len() - k..], "size {size}");
                assert_eq!(image.totals(), full.totals());
            }
        }
    }
}

#[test]
fn every_single_byte_flip_is_an_error_or_a_clean_prefix() {
    let log = crashed_log();
    let img = image_of(&log);
    let orig = handover::parse(img).unwrap();
    let all = owned(orig.records());
    let bounds = entry_bounds(img, &orig);
    let records_at = u32_at(img, 56) as usize;
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
                    10..64 => {
                        assert!(
                            matches!(e, HandoverError::ChecksumMismatch { .. }),
                            "{pos}: {e}"
                        );
                        assert_eq!(at, 0);
                    }
                    _ => {
                        assert!(
                            matches!(e, HandoverError::ChecksumMismatch { .. }),
                            "{pos}: {e}"
                        );
                        assert_eq!(at, 64);
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
            let got: Vec<_> = image
                .records()
                .map(|r| (r.seq, r.header, r.payload.to_vec()))
                .collect();
            assert_eq!(got, all[..k], "flip at {pos}");
            assert_eq!(image.totals(), orig.totals());
        }
    }
}

#[test]
fn every_truncation_is_an_error_or_a_clean_prefix() {
    let log = crashed_log();
    let img = image_of(&log);
    let orig = handover::parse(img).unwrap();
    let all = owned(orig.records());
    let bounds = entry_bounds(img, &orig);
    let records_at = u32_at(img, 56) as usize;
    for t in 0..=img.len() {
        let r = handover::parse_located(&img[..t]);
        if t < 64 {
            assert_eq!(
                r.unwrap_err(),
                (
                    HandoverError::Truncated {
                        needed: 64,
                        have: t
                    },
                    t
                )
            );
            continue;
        }
        if t < records_at {
            assert_eq!(
                r.unwrap_err(),
                (
                    HandoverError::Truncated {
                        needed: records_at,
                        have: t
                    },
                    t
                )
            );
            continue;
        }
        let image = r.unwrap();
        let k = bounds.iter().filter(|&&(_, e)| e <= t).count();
        assert_eq!(image.record_count(), k, "cut at {t}");
        if t == img.len() {
            assert_eq!(image.corruption(), None);
        } else {
            let (e, at) = image.corruption().unwrap();
            assert!(
                matches!(e, HandoverError::Truncated { have, .. } if have == t),
                "{e}"
            );
            assert_eq!(at, bounds[k].0);
        }
        let got: Vec<_> = image
            .records()
            .map(|r| (r.seq, r.header, r.payload.to_vec()))
            .collect();
        assert_eq!(got, all[..k]);
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
    bad[64 + 32 + 8] ^= 1; // a torn counter
    assert!(matches!(
        handover::parse_located(&bad).unwrap_err(),
        (HandoverError::ChecksumMismatch { .. }, 64)
    ));

    let mut bad = img.to_vec();
    bad[..8].copy_from_slice(b"NMILOGHX");
    assert_eq!(handover::parse(&bad).unwrap_err(), HandoverError::BadMagic);

    let mut bad = img.to_vec();
    bad[8..10].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(
        handover::parse(&bad).unwrap_err(),
        HandoverError::UnknownVersion(2)
    );

    // A correctly signed image whose layout lacks the `len` field (id 2 renamed to an unknown id).
    let mut bad = img.to_vec();
    assert_eq!(bad[64 + 2 * 4], 2);
    bad[64 + 2 * 4] = 200;
    resign(&mut bad);
    assert_eq!(
        handover::parse(&bad).unwrap_err(),
        HandoverError::UnreadableLayout
    );

    // …or places `cpu` (offset 18, size 2) past the 24-byte header.
    let mut bad = img.to_vec();
    bad[64 + 3 * 4 + 1] = 23;
    resign(&mut bad);
    assert_eq!(
        handover::parse_located(&bad).unwrap_err(),
        (HandoverError::UnreadableLayout, 64 + 3 * 4)
    );

    // …or makes `level` wider than a byte.
    let mut bad = img.to_vec();
    bad[64 + 4 * 4 + 2] = 2;
    resign(&mut bad);
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
    assert!(matches!(
        image.corruption(),
        Some((HandoverError::RecordAreaMismatch { records, .. }, at)) if records == n && at == img.len()
    ));
}

/// An image written by a "different version" of the writer: a 32-byte record header with the fields
/// in another order, an extra field this reader does not know, no `src_seq` or `facility`. The
/// reader must find every field through the layout table.
#[test]
fn a_foreign_header_layout_is_decoded_through_the_table() {
    let log = crashed_log();
    let img = image_of(&log);
    let orig = handover::parse(img).unwrap();
    let records = owned(orig.records());
    let records_at = u32_at(img, 56) as usize;

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
    for (seq, h, p) in &records {
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
    let want: Vec<_> = records
        .iter()
        .map(|(s, h, p)| {
            let h = Header {
                src_seq: 0,
                facility: 0,
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

/// Touches everything an image offers (must never panic).
fn exercise(image: &Image<'_>) {
    let n = image.records().count();
    assert_eq!(n, image.record_count());
    for r in image.records() {
        let _ = r.text();
        assert_eq!(r.header.len as usize, r.payload.len());
    }
    let _ = image.totals();
    for c in 0..image.cpu_count().min(64) + 1 {
        for d in 0..image.depth().min(16) + 1 {
            let _ = image.counters(c, d);
            let _ = image.context_kind(c, d);
        }
    }
    let _ = format!("{image:?}");
    if let Some((e, _)) = image.corruption() {
        let _ = e.to_string();
    }
}

#[test]
fn random_garbage_and_random_damage_never_panic() {
    let log = crashed_log();
    let img = image_of(&log);
    let orig = handover::parse(img).unwrap();
    let all = owned(orig.records());
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
                exercise(&image);
                if round % 4 == 3
                    && bytes.get(..u32_at(img, 56) as usize) == img.get(..u32_at(img, 56) as usize)
                {
                    // Fixed part intact: whatever was recovered is a prefix of the original.
                    let got = owned(image.records());
                    assert!(got.len() <= all.len());
                    assert_eq!(got, all[..got.len()]);
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
    let mut buf = [0u8; 512];
    let n = handover::write_image(&*log, &mut buf, &|_| true).unwrap();
    assert_eq!(n, handover::fixed_size(2, 4));
    let image = handover::parse(&buf[..n]).unwrap();
    assert_eq!(image.record_count(), 0);
    assert_eq!(image.cpu_count(), 2);
    assert_eq!(image.corruption(), None);
    assert_eq!(image.totals(), CpuCounters::default());
    // Trailing bytes of the region are ignored.
    assert_eq!(handover::parse(&buf).unwrap().record_count(), 0);
}

/// Drain matrix, end to end through the image: three CPUs; one CPU's writer is frozen at each step
/// of the write protocol in turn, while another CPU holds flush ownership frozen at each step of a
/// journaled move (or flushed completely). After the crash drain on the third CPU, the image holds
/// every committed record exactly once, in timestamp order, and the frozen record is either
/// delivered (frozen after its commit) or counted torn exactly once.
#[test]
fn drain_matrix_through_the_image() {
    use nmilog::FlushStep;
    let flush_stops: Vec<Option<FlushStep>> = [None, Some(FlushStep::Journaled)]
        .into_iter()
        .chain(WriteStep::ALL.into_iter().map(|s| Some(FlushStep::Main(s))))
        .chain([Some(FlushStep::CursorStored), Some(FlushStep::Done)])
        .collect();
    let mut region = vec![0u8; 1 << 16];
    for frozen_cpu in 0..3 {
        for step in WriteStep::ALL {
            for &stop in &flush_stops {
                let ctx =
                    format!("cpu {frozen_cpu} frozen at {step:?}, flush owner stopped at {stop:?}");
                let log: Box<TestLog> = Box::new(Log::new(Manual::new(3)));
                let p = log.platform();
                let (owner, crasher) = ((frozen_cpu + 2) % 3, (frozen_cpu + 1) % 3);
                let mut committed = Vec::new();
                for i in 0..9 {
                    p.set_cpu(i % 3);
                    let t = format!("rec {i}");
                    log.append_raw(Level::Info, 0, 0, t.as_bytes()).unwrap();
                    committed.push(t);
                }
                p.set_cpu(owner);
                match stop {
                    None => {
                        log.flush().unwrap();
                    }
                    Some(stop) => {
                        let _ = log.flush_with_hook(&mut |s: FlushStep| s != stop);
                    }
                }
                for i in 9..12 {
                    p.set_cpu(i % 3);
                    let t = format!("rec {i}");
                    log.append_raw(Level::Info, 0, 0, t.as_bytes()).unwrap();
                    committed.push(t);
                }
                p.set_cpu(frozen_cpu);
                let r = log.append_raw_with_hook(
                    Level::Info,
                    0,
                    0,
                    b"the frozen one",
                    &mut |s: WriteStep| s != step,
                );
                assert!(r.is_err(), "{ctx}");
                let delivered_frozen = matches!(step, WriteStep::Committed | WriteStep::Published);
                p.set_cpu(crasher);
                log.crash_enter().unwrap();
                log.append_raw(Level::Emerg, 0, 0, b"panic").unwrap();
                committed.push("panic".into());
                let rep = log.drain_on_crash();
                assert!(rep.flush.steps <= rep.bound, "{ctx}");
                if stop.is_some() {
                    assert_eq!(rep.took_over_from, Some(owner), "{ctx}");
                }
                let torn = u64::from(!delivered_frozen);

                let n = handover::write_image(&*log, &mut region, &|_| true).unwrap();
                let first = owned(handover::parse(&region[..n]).unwrap().records());
                let image = handover::parse(&region[..n]).unwrap();
                assert_eq!(image.corruption(), None, "{ctx}");
                let texts: Vec<&str> = image
                    .records()
                    .filter(|r| r.header.facility == facility::KERNEL)
                    .map(|r| r.text().unwrap())
                    .collect();
                let mut want: Vec<&str> = committed.iter().map(|s| s.as_str()).collect();
                if delivered_frozen {
                    want.push("the frozen one");
                }
                let mut sorted_got = texts.clone();
                sorted_got.sort_unstable();
                want.sort_unstable();
                assert_eq!(
                    sorted_got, want,
                    "{ctx}: every committed record exactly once"
                );
                let ts: Vec<u64> = image.records().map(|r| r.header.ts_ns).collect();
                assert!(
                    ts.windows(2).all(|w| w[0] <= w[1]),
                    "{ctx}: timestamp order {ts:?}"
                );
                let seqs: Vec<u64> = image.records().map(|r| r.seq).collect();
                assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{ctx}: {seqs:?}");
                assert_eq!(image.totals().overwritten, 0, "{ctx}");
                let accounting = |image: &Image<'_>| {
                    image
                        .records()
                        .filter(|r| r.header.facility == facility::NMILOG)
                        .count() as u64
                };
                {
                    assert_eq!(rep.flush.torn, torn, "{ctx}");
                    assert_eq!(image.totals().torn, torn, "{ctx}");
                    assert_eq!(image.counters(frozen_cpu, 0).unwrap().torn, torn, "{ctx}");
                    assert_eq!(accounting(&image), torn, "{ctx}");
                }

                // A second drain (a fault in the crash path) adds no record twice, and over both
                // drains the frozen record is counted torn exactly once.
                let rep2 = log.drain_on_crash();
                assert_eq!(rep2.flush.moved, 0, "{ctx}");
                let n = handover::write_image(&*log, &mut region, &|_| true).unwrap();
                let image = handover::parse(&region[..n]).unwrap();
                let second = owned(image.records());
                assert_eq!(second[..first.len()], first[..], "{ctx}");
                {
                    // Over both drains the frozen record is counted torn exactly once.
                    assert_eq!(rep.flush.torn + rep2.flush.torn, torn, "{ctx}");
                    assert_eq!(image.totals().torn, torn, "{ctx}");
                    assert_eq!(image.counters(frozen_cpu, 0).unwrap().torn, torn, "{ctx}");
                    assert_eq!(accounting(&image), torn, "{ctx}");
                }
                {
                    assert_eq!((rep2.flush.torn, rep2.accounting_records), (0, 0), "{ctx}");
                    assert_eq!(second.len(), first.len(), "{ctx}");
                }
            }
        }
    }
}

/// Core bug 1: a writer frozen before its record became visible (at `Entered` or `TailAdvanced`:
/// recursion guard set, no odd sequence word yet) is counted torn by the drain only when its ring
/// had nothing left to move when the drain started (`count_frozen_before_visible` runs for the
/// initial peek only, not when the merge later empties the ring). With a record pending, the first
/// drain counts nothing and writes no accounting; the second drain counts it.
///
/// Core bug 2: a writer frozen at `Published` (record committed and `next_seq` published, but the
/// recursion guard not yet cleared) has its record delivered by the first drain, and the second
/// drain then counts a phantom torn record (guard set and `next_seq == cursor`), with an accounting
/// line. (Both fixed: the drain checks for a frozen unpublished writer whenever a ring runs empty, and
/// the writer marks its guard "published" after `next_seq`.)
#[test]

fn writer_frozen_before_its_record_is_visible_is_counted_by_the_first_drain() {
    for step in [WriteStep::Entered, WriteStep::TailAdvanced] {
        let log: Box<TestLog> = Box::new(Log::new(Manual::new(2)));
        let p = log.platform();
        p.set_cpu(1);
        log.append_raw(Level::Info, 0, 0, b"pending").unwrap();
        let _ =
            log.append_raw_with_hook(Level::Info, 0, 0, b"frozen", &mut |s: WriteStep| s != step);
        p.set_cpu(0);
        log.crash_enter().unwrap();
        let r1 = log.drain_on_crash();
        let r2 = log.drain_on_crash();
        assert_eq!(
            (r1.flush.moved, r1.flush.torn, r1.accounting_records),
            (1, 1, 1),
            "{step:?}"
        );
        assert_eq!(
            (r2.flush.moved, r2.flush.torn, r2.accounting_records),
            (0, 0, 0),
            "{step:?}"
        );
    }
}

/// Rings that wrapped before the crash drain: per ring, records delivered plus records counted
/// overwritten is exactly the number written, and the delivered ones are the newest.
#[test]
fn drain_over_wrapped_rings_counts_overwrites_exactly() {
    let mut region = vec![0u8; 1 << 16];
    for (count, len) in [(10usize, 4usize), (37, 13), (60, 1), (25, 60), (90, 30)] {
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
        }
        p.set_cpu(2);
        log.crash_enter().unwrap();
        log.drain_on_crash();
        let n = handover::write_image(&*log, &mut region, &|_| true).unwrap();
        let image = handover::parse(&region[..n]).unwrap();
        assert_eq!(image.left_out(), 0);
        for (cpu, depth, tag, written) in [
            (0, 0, 'a', count),
            (1, 1, 'b', count),
            (2, 0, 'c', count.div_ceil(3)),
        ] {
            let got: Vec<usize> = image
                .records()
                .filter_map(|r| r.text())
                .filter(|t| t.starts_with(tag))
                .map(|t| t[1..5].parse().unwrap())
                .collect();
            let c = image.counters(cpu, depth).unwrap();
            assert_eq!(
                got.len() as u64 + c.overwritten,
                written as u64,
                "count {count} len {len} cpu {cpu}"
            );
            // The survivors are the newest, consecutive, in order.
            let step = if tag == 'c' { 3 } else { 1 };
            let last = (written - 1) * step;
            let want: Vec<usize> = (0..got.len())
                .map(|k| last - (got.len() - 1 - k) * step)
                .collect();
            assert_eq!(got, want, "count {count} len {len} cpu {cpu}");
            if written >= 60 {
                assert!(
                    c.overwritten > 0,
                    "count {count} len {len} cpu {cpu}: ring must wrap"
                );
            }
        }
    }
}

/// [`handover::max_image_size`] is enough for any main log content: a wrapped main log full of the
/// smallest or largest records never leaves one out.
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
        log.drain_on_crash();
        let bound = handover::max_image_size(2, 4, 256);
        let mut region = vec![0u8; bound];
        let n = handover::write_image(&*log, &mut region, &|_| true).unwrap();
        let image = handover::parse(&region[..n]).unwrap();
        assert_eq!(image.left_out(), 0, "len {len}");
        assert!(image.record_count() > 2, "len {len}");
        let first = image.records().next().unwrap().seq;
        assert!(first > 0, "len {len}: the main log must have wrapped");
        assert!(image
            .records()
            .all(|r| r.header.facility != facility::KERNEL || r.payload == &payload[..]));
    }
}
