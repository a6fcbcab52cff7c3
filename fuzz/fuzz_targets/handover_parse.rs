//! Arbitrary bytes into the handover parser: it must never panic, and every accessor of a parsed
//! image must stay in bounds. The first input byte picks a mode:
//!
//! * `0`: the rest of the input is parsed as it is;
//! * `1`: the same, after the checksums the format documents (core header, tables, and each record
//!   entry under the default layout) are recomputed, so mutations get past the CRCs and reach the
//!   table and record decoding;
//! * `2`: round trip: records taken from the input are logged on two CPUs (some flushed into the main
//!   log, some left in their rings), optionally with a writer frozen mid-record on CPU 1, which is
//!   known to be stopped or not; the crash drain's output is checked (every record once, in order,
//!   the frozen one counted torn or in flight, the main log's records from the main log) and an
//!   image is written into a region of input-chosen size: it must parse and give back exactly the
//!   drain's newest records, numbered from the main log's window start, and its counters, without
//!   the main log changing, and a second image must be the same bytes; then one input-chosen byte
//!   is flipped and the records recovered must be a prefix of those (a single flipped byte is always
//!   caught by the CRC32C).
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use nmilog::handover;
use nmilog::ring::WriteStep;
use nmilog::{Level, Log, Origin, RecordBuf};

use common::{exercise, main_records, owned, unstamped, Manual, Owned};

fn crc32c(b: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(b)
}

fn le(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(n)?)?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(s);
    Some(u64::from_le_bytes(v))
}

/// Recomputes the checksums of a (possibly mutated) image, as far as its own fields allow.
fn fix_crcs(b: &mut [u8]) {
    if b.len() < 64 {
        return;
    }
    let c = crc32c(&b[..60]);
    b[60..64].copy_from_slice(&c.to_le_bytes());
    let Some(ro) = le(b, 56, 4).map(|v| v as usize) else {
        return;
    };
    if ro < 68 || ro > b.len() {
        return;
    }
    let c = crc32c(&b[64..ro - 4]);
    b[ro - 4..ro].copy_from_slice(&c.to_le_bytes());
    let rh = le(b, 12, 2).unwrap_or(24) as usize;
    let n = le(b, 40, 8).unwrap_or(0).min(4096);
    let mut at = ro;
    for _ in 0..n {
        let Some(len) = le(b, at + 8 + 16, 2) else {
            return;
        };
        let size = (8 + rh + len as usize + 4).div_ceil(8) * 8;
        let Some(end) = at.checked_add(size) else {
            return;
        };
        if end > b.len() {
            return;
        }
        let c = crc32c(&b[at..end - 4]);
        b[end - 4..end].copy_from_slice(&c.to_le_bytes());
        at = end;
    }
}

/// Two CPUs, the current one chosen by the input; a clock that advances by `tick` per read: 1, or 0
/// (every record ties on its timestamp: the drain must still deliver each once, each source in
/// order, and every drain stamps its accounting records the same).
type FuzzLog = Log<Manual, 2, 64, 512, 2>;

fn round_trip(data: &[u8]) {
    // Byte 3: a writer on CPU 1 frozen at a step of the write protocol (low nibble < 8), whether
    // CPU 1 is known to be stopped (bit 4), whether the clock stands still (bit 5).
    let ctl = data.get(3).copied().unwrap_or(0xff);
    let tick = u64::from(ctl & 0x20 == 0);
    let log: Box<FuzzLog> = Box::new(Log::new(Manual::with_clock(2, 7, tick)));
    let set_cpu = |c: usize| log.platform().set_cpu(c);
    // Each 9-byte chunk: a control byte (bit 3: CPU 1; bit 7: the normal path, which flushes into
    // the main log, else the NMI path, ring only; facility and the RAW flag from the rest), then up
    // to 8 payload bytes.
    for ch in data.get(4..).unwrap_or(&[]).chunks(9).take(64) {
        let c = ch[0];
        set_cpu(usize::from(c & 8 != 0));
        let (fac, fl) = (c % 3, c >> 4 & 4);
        let _ = if c & 0x80 != 0 {
            log.append(Level::Info, fac, fl, &ch[1..])
        } else {
            log.append_raw(Level::Info, fac, fl, &ch[1..])
        };
    }
    let frozen = WriteStep::ALL.get(usize::from(ctl & 0xf)).copied();
    let cpu1_stopped = ctl & 0x10 != 0;
    if let Some(step) = frozen {
        set_cpu(1);
        let r =
            log.append_raw_with_hook(Level::Info, 0, 0, b"frozen", &mut |s: WriteStep| s != step);
        assert!(r.is_err());
    }
    set_cpu(0);
    log.crash_enter().unwrap();
    let stopped = |c: usize| c == 0 || cpu1_stopped;

    // The drain's output: every record once, losses counted, in timestamp order, each source in its
    // order (with a stopped clock too: ties keep the main log's order first, then the rings').
    let main_before = main_records(&log);
    let mut want: Vec<(Origin, Owned)> = Vec::new();
    let rep = log
        .drain_on_crash(&stopped, &mut |o: Origin, r: &RecordBuf| {
            want.push((o, (r.seq, r.header, r.payload().to_vec())));
            true
        })
        .expect("the crashing CPU drains");
    assert!(rep.complete && rep.steps <= rep.bound, "{rep:?}");
    assert_eq!(rep.records, want.len() as u64);
    let accounting = want
        .iter()
        .filter(|(o, _)| *o == Origin::Accounting)
        .count();
    assert_eq!(rep.accounting_records, accounting as u64);
    let records = &want[..want.len() - accounting];
    let mut seen = std::collections::BTreeSet::new();
    let mut next_of_source = std::collections::BTreeMap::new();
    let mut last: Option<u64> = None;
    for (o, (_, h, _)) in records {
        assert_ne!(*o, Origin::Accounting, "accounting records come last");
        let source = (h.cpu, h.context().1);
        assert!(seen.insert((source, h.src_seq)), "{h:?} twice");
        let strictly = tick != 0;
        assert!(
            last.is_none_or(|l| h.ts_ns > l || (!strictly && h.ts_ns == l)),
            "{h:?} after {last:?}"
        );
        if let Some(next) = next_of_source.insert(source, h.src_seq + 1) {
            assert!(h.src_seq >= next, "{h:?}: out of its source's order");
        }
        last = last.max(Some(h.ts_ns));
    }
    for (_, (_, h, _)) in &want[records.len()..] {
        assert!(last.is_none_or(|l| h.ts_ns >= l), "{h:?}");
    }
    // Frozen before its commit: lost (a committed record is delivered).
    let lost = u64::from(
        frozen.is_some_and(|s| !matches!(s, WriteStep::Committed | WriteStep::Published)),
    );
    if cpu1_stopped {
        assert_eq!((rep.torn, rep.in_flight), (lost, 0), "{rep:?}");
    } else {
        assert_eq!((rep.torn, rep.in_flight), (0, lost), "{rep:?}");
    }
    // What normal flushes moved comes from the main log, at its main-log numbers.
    let main_part: Vec<Owned> = want
        .iter()
        .filter_map(|(o, r)| match o {
            Origin::Main { seq } => Some((*seq, r.1, r.2.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(main_part, main_before, "the main log's records");
    // The image numbers records from the main log's window start.
    let start = main_before.first().map_or(log.main().next_seq(), |r| r.0);

    // The image, in a region of input-chosen size: the newest records of the drain, the rest
    // counted left out.
    let max = handover::max_image_size(2, 2, 64, 512);
    let size = if data.len() > 2 {
        handover::fixed_size(2, 2) + (u16::from_le_bytes([data[1], data[2]]) as usize % max)
    } else {
        max
    };
    let mut region = vec![0u8; size.min(max)];
    let wrote = match handover::write_image_report(&*log, &mut region, &stopped) {
        Ok(w) => w,
        Err(e) => panic!("write_image into {} bytes: {e:?}", region.len()),
    };
    let n = wrote.len;
    let img = handover::parse(&region[..n]).expect("a fresh image parses");
    assert!(img.corruption().is_none());
    let got = owned(img.records());
    assert_eq!(got.len() as u64 + img.left_out(), want.len() as u64);
    assert_eq!(
        (wrote.records, wrote.left_out),
        (got.len() as u64, img.left_out())
    );
    let skipped = want.len() - got.len();
    for (i, (r, (o, w))) in got.iter().zip(&want[skipped..]).enumerate() {
        assert_eq!(r.0, start + (skipped + i) as u64, "record {i}: its number");
        let mut h = r.1;
        if *o == Origin::Accounting {
            // The image's drains stamp their accounting records when they run.
            assert!(
                h.ts_ns >= w.1.ts_ns,
                "record {i}: stamped before the drain's"
            );
            h.ts_ns = w.1.ts_ns;
        }
        assert_eq!((h, &r.2), (w.1, &w.2), "record {i} differs");
    }
    for c in 0..2 {
        for d in 0..2 {
            assert_eq!(img.counters(c, d), log.counters(c, d), "cpu {c} depth {d}");
        }
    }
    assert_eq!(
        (img.cpu_stopped(0), img.cpu_stopped(1)),
        (Some(true), Some(cpu1_stopped))
    );
    // Read-only and a function of the log: the main log unchanged, the same image again (when the
    // clock moves, but for the accounting records' timestamps: each drain stamps them).
    assert_eq!(
        main_records(&log),
        main_before,
        "the drain wrote the main log"
    );
    let mut again = vec![0u8; region.len()];
    let m = handover::write_image(&*log, &mut again, &stopped).expect("a second image");
    if tick == 0 {
        assert_eq!(again[..m], region[..n], "a second image differs");
    } else {
        let records = |bytes: &[u8]| {
            let img = handover::parse(bytes).expect("a second image parses");
            unstamped(owned(img.records()))
        };
        assert_eq!(
            records(&again[..m]),
            records(&region[..n]),
            "a second image differs"
        );
    }
    exercise(&img);
    // One flipped byte.
    if n > 0 && data.len() > 3 {
        let at = (u16::from_le_bytes([data[2], data[3]]) as usize) % n;
        region[at] ^= 1 << (data[0] as usize % 8).max(1);
        if let Ok(img) = handover::parse(&region[..n]) {
            exercise(&img);
            let bad = owned(img.records());
            assert!(
                got.starts_with(&bad),
                "a flipped byte at {at} changed a recovered record"
            );
            assert!(bad.len() < got.len() || img.corruption().is_none());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = match data.split_first() {
        Some((m, r)) => (m % 3, r),
        None => (0, data),
    };
    match mode {
        0 => {
            if let Ok(img) = handover::parse(rest) {
                exercise(&img);
            }
        }
        1 => {
            let mut v = rest.to_vec();
            fix_crcs(&mut v);
            if let Ok(img) = handover::parse(&v) {
                exercise(&img);
            }
            let _ = handover::parse_located(&v);
        }
        _ => round_trip(data),
    }
});
