//! The crashing kernel's side: [`write_image`] runs the crash drain into a caller-provided region:
//! every record of the main log and the per-CPU rings, in order and exactly once, the loss counters,
//! which CPUs were not known to be stopped, and the record header layout.
//!
//! Contract: only the crashing CPU writes an image (it alone owns the drain's state and the region);
//! no lock, no allocation, no waiting, no panic whatever the region's size; two bounded drains over
//! the same snapshot (the first sizes, the second copies); when the region is too small the newest
//! records are kept and the left-out ones counted. The core header is written last.

use super::format::{
    checked_fixed_size, checked_record_size, crc_of, off, record_size, HandoverError, CORE_BYTES,
    COUNTER_ENTRY_BYTES, CPU_NOT_STOPPED, CRC_BYTES, LAYOUT_ENTRY_BYTES, MAGIC, SEQ_BYTES, VERSION,
};
use crate::log::{counters_of, cpu_stopped, drain, DrainInput, DrainMem};
use crate::record::{layout, HEADER_BYTES};
use crate::sync::Ordering;
use crate::{DrainReport, Log, Platform, RecordBuf};

/// Copies `bytes` to `out[at..]`; false if it does not fit.
fn put(out: &mut [u8], at: usize, bytes: &[u8]) -> bool {
    match at
        .checked_add(bytes.len())
        .and_then(|end| out.get_mut(at..end))
    {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Zeroes `out[from..to]` (as far as it exists).
fn zero(out: &mut [u8], from: usize, to: usize) {
    if let Some(dst) = out.get_mut(from..to) {
        dst.fill(0);
    }
}

/// Writes one record entry at `at`; returns its size, or `None` (nothing meaningful written) if it
/// does not fit.
fn put_record(out: &mut [u8], at: usize, seq: u64, rec: &RecordBuf) -> Option<usize> {
    let payload = rec.payload();
    let size = checked_record_size(HEADER_BYTES, payload.len())?;
    let end = at.checked_add(size)?;
    if end > out.len() {
        return None;
    }
    let mut header = rec.header;
    header.len = payload.len() as u16;
    let hdr_at = at + SEQ_BYTES;
    let pay_at = hdr_at + HEADER_BYTES;
    let crc_at = end - CRC_BYTES;
    let ok = put(out, at, &seq.to_le_bytes())
        && put(out, hdr_at, &header.to_bytes())
        && put(out, pay_at, payload);
    zero(out, pay_at + payload.len(), crc_at);
    let crc = crc_of(out, at, crc_at)?;
    (ok && put(out, crc_at, &crc.to_le_bytes())).then_some(size)
}

/// Writes the handover image into `out` (the region the capture stage finds): the crash drain's
/// output (see [`Log::drain_on_crash`]: every record of the main log and the rings, in timestamp order,
/// each once, then the accounting records), the per-ring loss counters, which CPUs were not known to
/// be stopped (`stopped(cpu)` false; the crashing CPU always is), and the record header layout.
/// Returns the image size in bytes (the image is `out[..size]`; the rest of `out` is left untouched).
///
/// Call it on the crashing CPU, last thing before the switchover: it *is* the final drain, so a CPU
/// that checked in late, or one that did not stop and went on logging, gets in everything it
/// committed by then. Records are numbered from the main log's window start (how many records the
/// main log had overwritten by its own wrapping), one more per record. No lock, no allocation, no
/// waiting: two drains over one snapshot, each bounded by [`Log::drain_step_bound`].
///
/// If `out` cannot hold every record, the **newest** records are kept (they are the ones nearest the
/// crash) and the number of older ones left out is recorded
/// ([`Image::left_out`](super::Image::left_out)). Only when `out` cannot hold the fixed part
/// ([`fixed_size`](super::fixed_size)) is the result [`HandoverError::OutputTooSmall`];
/// [`HandoverError::NotCrashing`] if the caller is not the crashing CPU.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// use nmilog::{handover, Level, Log};
/// let log: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// for i in 0..3u8 {
///     log.append_raw(Level::Info, 0, 0, &[b'0' + i]).unwrap();
/// }
/// let mut small = [0u8; 4096];
/// assert_eq!(
///     handover::write_image(&log, &mut small, &|_| true),
///     Err(handover::HandoverError::NotCrashing)
/// );
/// log.crash_enter().unwrap();
///
/// // Room for the fixed part and two one-byte records: the two newest are kept.
/// let fixed = handover::fixed_size(1, 5);
/// let mut small = vec![0u8; fixed + 2 * handover::record_size(1)];
/// let n = handover::write_image(&log, &mut small, &|_| true).unwrap();
/// let image = handover::parse(&small[..n]).unwrap();
/// assert_eq!(image.left_out(), 1);
/// let texts: Vec<&str> = image.records().filter_map(|r| r.text()).collect();
/// assert_eq!(texts, ["1", "2"]);
///
/// let mut tiny = [0u8; 16];
/// assert_eq!(
///     handover::write_image(&log, &mut tiny, &|_| true),
///     Err(handover::HandoverError::OutputTooSmall { needed: fixed })
/// );
/// ```
pub fn write_image<
    P: Platform,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
>(
    log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    out: &mut [u8],
    stopped: &dyn Fn(usize) -> bool,
) -> Result<usize, HandoverError> {
    write_image_report(log, out, stopped).map(|r| r.len)
}

/// What [`write_image_report`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageReport {
    /// The image size in bytes.
    pub len: usize,
    /// Records in the image.
    pub records: u64,
    /// Records left out because the region was too small.
    pub left_out: u64,
    /// The drain that produced the image's records (its second pass).
    pub drain: DrainReport,
}

/// [`write_image`], with what it did.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// use nmilog::{handover, Level, Log};
/// let log: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// log.append_raw(Level::Info, 0, 0, b"last words").unwrap();
/// log.crash_enter().unwrap();
/// let mut region = [0u8; 4096];
/// let rep = handover::write_image_report(&log, &mut region, &|_| true).unwrap();
/// assert_eq!((rep.records, rep.left_out, rep.drain.from_rings), (1, 0, 1));
/// assert_eq!(handover::parse(&region[..rep.len]).unwrap().record_count(), 1);
/// ```
pub fn write_image_report<
    P: Platform,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
>(
    log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    out: &mut [u8],
    stopped: &dyn Fn(usize) -> bool,
) -> Result<ImageReport, HandoverError> {
    write_image_with_hook(log, out, stopped, &mut |_| {})
}

/// Where the image writer is (see [`write_image_with_hook`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageStep {
    /// Pass 1 (sizing) reached record `n` (counted from 0).
    Sized(u64),
    /// Pass 2 (copying) is about to write record `n` (counted from 0; skipped records included).
    Copy(u64),
    /// The records are written; the tables come next.
    Tables,
    /// The tables are written; the core header (which makes the image valid) comes next.
    Header,
}

/// [`write_image_report`], calling `hook` at each [`ImageStep`]: a seam for tests that stop the
/// crashing CPU at every point of the image writer (the host simulation's `--die-in-drain`), and for
/// a kernel that leaves breadcrumbs. The hook runs on the crashing CPU in crash context: it must not
/// take a lock or wait. Until the [`ImageStep::Header`] step has passed, the region holds no valid
/// image (its core header is written last), so a capture stage never mistakes a partial image for a
/// whole one.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// use nmilog::{handover::{self, ImageStep}, Level, Log};
/// let log: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// log.append_raw(Level::Info, 0, 0, b"one").unwrap();
/// log.crash_enter().unwrap();
/// let mut steps = Vec::new();
/// let mut region = [0u8; 4096];
/// handover::write_image_with_hook(&log, &mut region, &|_| true, &mut |s| steps.push(s)).unwrap();
/// assert_eq!(steps, [ImageStep::Sized(0), ImageStep::Copy(0), ImageStep::Tables, ImageStep::Header]);
/// ```
pub fn write_image_with_hook<
    P: Platform,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
>(
    log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    out: &mut [u8],
    stopped: &dyn Fn(usize) -> bool,
    hook: &mut dyn FnMut(ImageStep),
) -> Result<ImageReport, HandoverError> {
    let mem = log.crash_drain_mem().ok_or(HandoverError::NotCrashing)?;
    write_from(log, mem, out, stopped, hook)
}

/// The image of any drain input (the live `Log`, or a log found in a memory dump) drained in `mem`:
/// two drains over one snapshot, in `mem`.
pub(crate) fn write_from<I: DrainInput + ?Sized>(
    input: &I,
    mem: DrainMem<'_>,
    out: &mut [u8],
    stopped: &dyn Fn(usize) -> bool,
    hook: &mut dyn FnMut(ImageStep),
) -> Result<ImageReport, HandoverError> {
    let ncpu = input.cpus();
    let depth = input.depth();
    let fixed = checked_fixed_size(ncpu, depth)
        .ok_or(HandoverError::OutputTooSmall { needed: usize::MAX })?;
    if out.len() < fixed {
        return Err(HandoverError::OutputTooSmall { needed: fixed });
    }

    // Pass 1: the drain, sizing every record.
    let mut total: usize = 0;
    let mut n: u64 = 0;
    drain(input, mem, Some(stopped), &mut |_, r: &RecordBuf| {
        hook(ImageStep::Sized(n));
        n += 1;
        total = total.saturating_add(record_size(r.payload().len()));
        true
    });

    // Pass 2: the same snapshot again; skip the oldest records until the rest fits, then copy.
    let mut skip = total.saturating_sub(out.len() - fixed);
    let mut at = fixed;
    let mut written: u64 = 0;
    let mut left_out: u64 = 0;
    let mut seq = mem.fixed.main_start_seq.load(Ordering::Relaxed) as u64;
    let mut n: u64 = 0;
    let drain = drain(input, mem, None, &mut |_, r: &RecordBuf| {
        hook(ImageStep::Copy(n));
        n += 1;
        let size = record_size(r.payload().len());
        if skip > 0 {
            skip = skip.saturating_sub(size);
            left_out += 1;
        } else {
            match put_record(out, at, seq, r) {
                Some(size) => {
                    at += size;
                    written += 1;
                }
                // Only if more was overwritten between the passes than sized (a writer that did not
                // stop lapped a ring): counted.
                None => left_out += 1,
            }
        }
        seq = seq.wrapping_add(1);
        true
    });

    // Tables: layout, then counters, then padding, then their CRC.
    hook(ImageStep::Tables);
    let mut t = CORE_BYTES;
    for (i, (o, s)) in layout::ALL.iter().enumerate() {
        put(out, t, &[i as u8, *o, *s, 0]);
        t += LAYOUT_ENTRY_BYTES;
    }
    for c in 0..ncpu {
        let flags = if cpu_stopped(input, mem, c) {
            0
        } else {
            CPU_NOT_STOPPED
        };
        for d in 0..depth {
            let cnt = counters_of(input, mem, c, d);
            let kind = input.kind_at(c, d);
            put(out, t, &cnt.torn.to_le_bytes());
            put(out, t + 8, &cnt.overwritten.to_le_bytes());
            put(out, t + 16, &cnt.dropped.to_le_bytes());
            put(out, t + 24, &[kind as u8, flags, 0, 0, 0, 0, 0, 0]);
            put(out, t + 32, &cnt.in_flight.to_le_bytes());
            t += COUNTER_ENTRY_BYTES;
        }
    }
    zero(out, t, fixed - CRC_BYTES);
    let tables_crc = crc_of(out, CORE_BYTES, fixed - CRC_BYTES).unwrap_or(0);
    put(out, fixed - CRC_BYTES, &tables_crc.to_le_bytes());

    // Core header last.
    hook(ImageStep::Header);
    put(out, 0, &MAGIC);
    put(out, off::VERSION, &VERSION.to_le_bytes());
    put(out, off::CORE_SIZE, &(CORE_BYTES as u16).to_le_bytes());
    put(out, off::RH, &(HEADER_BYTES as u16).to_le_bytes());
    put(
        out,
        off::F,
        &[layout::ALL.len() as u8, LAYOUT_ENTRY_BYTES as u8],
    );
    put(
        out,
        off::CPUS,
        &(ncpu.min(u32::MAX as usize) as u32).to_le_bytes(),
    );
    put(
        out,
        off::DEPTH,
        &(depth.min(u16::MAX as usize) as u16).to_le_bytes(),
    );
    put(out, off::CE, &(COUNTER_ENTRY_BYTES as u16).to_le_bytes());
    put(out, off::BAD_CPU, &input.bad_cpu_dropped().to_le_bytes());
    put(out, off::LEFT_OUT, &left_out.to_le_bytes());
    put(out, off::COUNT, &written.to_le_bytes());
    put(out, off::AREA, &((at - fixed) as u64).to_le_bytes());
    put(
        out,
        off::RECORDS,
        &(fixed.min(u32::MAX as usize) as u32).to_le_bytes(),
    );
    let core_crc = crc_of(out, 0, off::CRC).unwrap_or(0);
    put(out, off::CRC, &core_crc.to_le_bytes());
    Ok(ImageReport {
        len: at,
        records: written,
        left_out,
        drain,
    })
}
