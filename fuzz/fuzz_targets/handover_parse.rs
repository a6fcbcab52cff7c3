//! Arbitrary bytes into the handover parser: it must never panic, and every accessor of a parsed
//! image must stay in bounds. The first input byte picks a mode:
//!
//! * `0`: the rest of the input is parsed as it is;
//! * `1`: the same, after the checksums the format documents (core header, tables, and each record
//!   entry under the default layout) are recomputed, so mutations get past the CRCs and reach the
//!   table and record decoding;
//! * `2`: round trip: records taken from the input are logged, drained and written as an image into a
//!   region of input-chosen size; the image must parse and give back exactly the main log's newest
//!   records; then one input-chosen byte is flipped and the records recovered must be a prefix of
//!   those (a single flipped byte is always caught by the CRC32C).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nmilog::handover::{self, Image};
use nmilog::ring::Read;
use nmilog::{Level, Log, Platform, RecordBuf};

fn exercise(img: &Image<'_>) -> usize {
    let mut n = 0;
    for r in img.records() {
        assert_eq!(r.header.len as usize, r.payload.len());
        let _ = r.text();
        n += 1;
    }
    assert!(n <= img.record_count());
    let _ = (
        img.version(),
        img.totals(),
        img.bad_cpu_dropped(),
        img.left_out(),
    );
    let _ = img.corruption();
    let _ = format!("{img:?}");
    for c in 0..img.cpu_count().min(64) + 1 {
        for d in 0..img.depth().min(16) + 1 {
            let _ = img.counters(c, d);
            let _ = img.context_kind(c, d);
        }
    }
    n
}

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

struct One;
impl Platform for One {
    fn cpu_id(&self) -> usize {
        0
    }
    fn now_ns(&self) -> u64 {
        7
    }
    fn cpu_count(&self) -> usize {
        2
    }
}

fn round_trip(data: &[u8]) {
    let log: Box<Log<One, 2, 64, 512, 2>> = Box::new(Log::new(One));
    let mut chunks = data.get(4..).unwrap_or(&[]).chunks(9);
    for ch in chunks.by_ref().take(64) {
        let _ = log.append_raw(Level::Info, ch[0] % 3, ch[0] >> 4 & 4, &ch[1..]);
    }
    log.crash_enter().unwrap();
    log.drain_on_crash();
    let mut want = Vec::new();
    let mut rd = log.main_reader();
    let mut buf = RecordBuf::new();
    loop {
        match rd.read(&log, &mut buf) {
            Read::Record => want.push((buf.seq, buf.header, buf.payload().to_vec())),
            Read::Overwritten { .. } => continue,
            _ => break,
        }
    }
    let max = handover::max_image_size(2, 2, 512);
    let size = if data.len() > 2 {
        handover::fixed_size(2, 2) + (u16::from_le_bytes([data[1], data[2]]) as usize % max)
    } else {
        max
    };
    let mut region = vec![0u8; size.min(max)];
    let n = match handover::write_image(&*log, &mut region, &|_| true) {
        Ok(n) => n,
        Err(e) => panic!("write_image into {} bytes: {e:?}", region.len()),
    };
    let img = handover::parse(&region[..n]).expect("a fresh image parses");
    assert!(img.corruption().is_none());
    let got: Vec<_> = img
        .records()
        .map(|r| (r.seq, r.header, r.payload.to_vec()))
        .collect();
    assert_eq!(got.len() as u64 + img.left_out(), want.len() as u64);
    assert_eq!(&got[..], &want[want.len() - got.len()..], "records differ");
    exercise(&img);
    // One flipped byte.
    if n > 0 && data.len() > 3 {
        let at = (u16::from_le_bytes([data[2], data[3]]) as usize) % n;
        region[at] ^= 1 << (data[0] as usize % 8).max(1);
        if let Ok(img) = handover::parse(&region[..n]) {
            exercise(&img);
            let bad: Vec<_> = img
                .records()
                .map(|r| (r.seq, r.header, r.payload.to_vec()))
                .collect();
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
