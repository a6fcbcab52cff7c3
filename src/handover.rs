//! The handover image: what the crashing kernel leaves in preserved memory for the capture kernel.
//!
//! After [`Log::drain_on_crash`] has merged every per-CPU ring into the main log, [`write_image`]
//! serialises the main log (from its oldest record), the per-ring loss counters and the layout of the
//! record header into a caller-provided byte region. The capture kernel (or a userspace tool such as
//! `examples/dmesg.rs`) reads it with [`parse`], which trusts nothing: every field is bounds-checked,
//! every region is covered by a CRC32C, and a reader built from another version of this crate finds
//! the record header fields through the published layout table, as `makedumpfile --dump-dmesg` does
//! with the kernel's vmcoreinfo.
//!
//! # Format (version 1, all integers little-endian)
//!
//! **Core header** (64 bytes, fixed):
//!
//! | offset | size | field                                                                     |
//! |-------:|-----:|---------------------------------------------------------------------------|
//! |      0 |    8 | magic [`MAGIC`] = `"NMILOGHO"`                                            |
//! |      8 |    2 | format version [`VERSION`] = 1                                            |
//! |     10 |    2 | core header size = 64                                                     |
//! |     12 |    2 | record header size `RH` (24 = [`crate::HEADER_BYTES`])                   |
//! |     14 |    1 | layout table entries `F` (8)                                              |
//! |     15 |    1 | layout table entry size `LE` (4)                                          |
//! |     16 |    4 | CPU count `C`                                                             |
//! |     20 |    2 | context depth `D` (rings per CPU)                                         |
//! |     22 |    2 | counters entry size `CE` (32)                                             |
//! |     24 |    8 | calls dropped for a bad CPU id ([`Log::bad_cpu_dropped`])                 |
//! |     32 |    8 | records left out because the region was too small                         |
//! |     40 |    8 | record count `N`                                                          |
//! |     48 |    8 | record area size in bytes `A`                                             |
//! |     56 |    4 | record area offset `RO`                                                   |
//! |     60 |    4 | CRC32C of bytes 0..60                                                     |
//!
//! **Tables** (from byte 64, covered by one CRC32C):
//!
//! | offset                | size        | content                                               |
//! |----------------------:|------------:|-------------------------------------------------------|
//! | 64                    | `F × LE`    | layout table: per field `id u8, offset u8, size u8, 0` |
//! | 64 + `F × LE`         | `C × D × CE`| counters, CPU-major: `torn u64, overwritten u64, dropped u64, context kind u8`, 7 zero bytes |
//! | …                     | 0–7         | zero padding so that the record area is 8-aligned     |
//! | `RO` − 4              | 4           | CRC32C of bytes 64..`RO` − 4                            |
//!
//! Layout field ids: 0 `ts_ns`, 1 `src_seq`, 2 `len`, 3 `cpu`, 4 `level`, 5 `facility`, 6 `ctx`,
//! 7 `flags` (their meaning: [`crate::record`]). A reader ignores ids it does not know and refuses
//! ([`HandoverError::UnreadableLayout`]) an image that lacks a field it needs (`ts_ns`, `len`, `cpu`,
//! `level`, `ctx`, `flags`; `src_seq` and `facility` read as 0 when absent) or places one outside
//! the `RH`-byte header or wider than its type.
//!
//! **Record area** (from `RO`, `A` bytes, `N` entries, each a multiple of 8 bytes):
//!
//! | offset in entry  | size                 | content                                             |
//! |-----------------:|---------------------:|-----------------------------------------------------|
//! | 0                | 8                    | sequence number in the main log                     |
//! | 8                | `RH`                 | record header, fields at the published offsets      |
//! | 8 + `RH`         | `len`                | payload                                             |
//! | …                | 0–7                  | zero padding                                        |
//! | entry size − 4   | 4                    | CRC32C of the entry's bytes before it               |
//!
//! The entry size is `8 + RH + len + 4` rounded up to a multiple of 8 ([`record_size`]).
//!
//! # Corruption and partial recovery
//!
//! Every byte up to the end of the record area is covered by exactly one CRC. A bad magic, an unknown
//! version, a short or corrupt core header or tables are fatal: [`parse`] returns `Err`. In the record
//! area each entry has its own CRC, so [`parse`] keeps every record before the first bad entry and
//! reports the problem and its byte offset through [`Image::corruption`]. Bytes after the record
//! area (the rest of the reserved region) are ignored.
//!
//! # Writing
//!
//! [`write_image`] takes no lock, never allocates and never waits: it makes two bounded passes over
//! the main log (one to size it, one to copy it). When the region is too small it keeps the
//! **newest** records (the ones nearest the crash) and counts the older ones it left out
//! ([`Image::left_out`]).
//!
//! ```
//! use nmilog::{handover, Level, Log, Platform};
//! use core::sync::atomic::{AtomicU64, Ordering};
//!
//! struct Board(AtomicU64);
//! impl Platform for Board {
//!     fn cpu_id(&self) -> usize { 0 }
//!     fn now_ns(&self) -> u64 { self.0.fetch_add(1_000, Ordering::Relaxed) }
//!     fn cpu_count(&self) -> usize { 1 }
//! }
//! static LOG: Log<Board, 1, 256, 1024> = Log::new(Board(AtomicU64::new(5_000_000)));
//!
//! LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
//! LOG.crash_enter().unwrap();
//! LOG.append_raw(Level::Emerg, 0, 0, b"Kernel panic").unwrap();
//! LOG.drain_on_crash();
//!
//! let mut region = [0u8; 4096];
//! let n = handover::write_image(&LOG, &mut region).unwrap();
//!
//! // …kexec into the capture kernel…
//! let image = handover::parse(&region[..n]).unwrap();
//! assert!(image.corruption().is_none());
//! let texts: Vec<&str> = image.records().filter_map(|r| r.text()).collect();
//! assert_eq!(texts, ["hello", "Kernel panic"]);
//! ```

use core::fmt;

use crc::{Crc, CRC_32_ISCSI};

use crate::record::{flags, layout, ContextKind, Header, HEADER_BYTES};
use crate::ring::{span_words, Read};
use crate::{CpuCounters, Log, Platform, RecordBuf};

/// The image's first eight bytes.
///
/// ```
/// assert_eq!(&nmilog::handover::MAGIC, b"NMILOGHO");
/// ```
pub const MAGIC: [u8; 8] = *b"NMILOGHO";

/// The format version this crate writes (and the only one it reads).
///
/// ```
/// assert_eq!(nmilog::handover::VERSION, 1);
/// ```
pub const VERSION: u16 = 1;

/// Size of the core header in bytes.
///
/// ```
/// use nmilog::handover::{fixed_size, parse, HandoverError, CORE_BYTES};
/// assert!(fixed_size(0, 0) > CORE_BYTES); // the tables follow the core header
/// let err = parse(b"NMILOGHO").unwrap_err(); // magic, then nothing
/// assert_eq!(err, HandoverError::Truncated { needed: CORE_BYTES, have: 8 });
/// ```
pub const CORE_BYTES: usize = 64;

const LAYOUT_ENTRY_BYTES: usize = 4;
const COUNTER_ENTRY_BYTES: usize = 32;
/// Smallest counters entry a reader accepts: three `u64`s and the context kind byte.
const COUNTER_ENTRY_MIN: usize = 25;
/// Smallest layout entry a reader accepts: id, offset, size.
const LAYOUT_ENTRY_MIN: usize = 3;
const SEQ_BYTES: usize = 8;
const CRC_BYTES: usize = 4;
const ALIGN: usize = 8;

/// Core header field offsets.
mod off {
    pub const VERSION: usize = 8;
    pub const CORE_SIZE: usize = 10;
    pub const RH: usize = 12;
    pub const F: usize = 14;
    pub const LE: usize = 15;
    pub const CPUS: usize = 16;
    pub const DEPTH: usize = 20;
    pub const CE: usize = 22;
    pub const BAD_CPU: usize = 24;
    pub const LEFT_OUT: usize = 32;
    pub const COUNT: usize = 40;
    pub const AREA: usize = 48;
    pub const RECORDS: usize = 56;
    pub const CRC: usize = 60;
}

/// Layout field ids (index into [`layout::ALL`]).
mod id {
    pub const TS_NS: u8 = 0;
    pub const SRC_SEQ: u8 = 1;
    pub const LEN: u8 = 2;
    pub const CPU: u8 = 3;
    pub const LEVEL: u8 = 4;
    pub const FACILITY: u8 = 5;
    pub const CTX: u8 = 6;
    pub const FLAGS: u8 = 7;
}

static CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// Why an image could not be written or read.
///
/// ```
/// use nmilog::handover::{parse, HandoverError};
/// assert_eq!(parse(b"not an image, clearly not one at all").unwrap_err(), HandoverError::BadMagic);
/// assert_eq!(
///     parse(b"NMILOG").unwrap_err(),
///     HandoverError::Truncated { needed: 64, have: 6 }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverError {
    /// The image does not start with [`MAGIC`].
    BadMagic,
    /// The image has a format version this reader does not know.
    UnknownVersion(u16),
    /// The image ends before the `needed` bytes a structure requires; only `have` bytes are there.
    Truncated {
        /// Bytes (from the image start) the structure needs.
        needed: usize,
        /// Bytes the image has.
        have: usize,
    },
    /// A CRC32C does not match: `expected` is the checksum stored in the image, `found` the one
    /// computed over the bytes it covers.
    ChecksumMismatch {
        /// Stored checksum.
        expected: u32,
        /// Computed checksum.
        found: u32,
    },
    /// The record entry at byte `offset` claims a `len`-byte payload that runs past the end of the
    /// record area.
    RecordLengthOutOfBounds {
        /// Byte offset of the entry in the image.
        offset: usize,
        /// The payload length its header claims.
        len: usize,
    },
    /// The image describes a layout this reader cannot decode: a record header field it needs is
    /// missing, outside the record header or wider than its type, or a table size is impossible.
    UnreadableLayout,
    /// [`write_image`]: the region cannot hold even the fixed part (core header and tables) of
    /// `needed` bytes.
    OutputTooSmall {
        /// Bytes the fixed part needs.
        needed: usize,
    },
    /// The record area does not hold the record count the header announces: only `records` whole
    /// entries were found in its first `bytes` bytes (or entries remain after the last one).
    RecordAreaMismatch {
        /// Entries found.
        records: u64,
        /// Bytes of the record area they took.
        bytes: usize,
    },
}

impl fmt::Display for HandoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HandoverError::BadMagic => write!(f, "bad magic (not an nmilog handover image)"),
            HandoverError::UnknownVersion(v) => {
                write!(
                    f,
                    "unknown format version {v} (this reader knows {VERSION})"
                )
            }
            HandoverError::Truncated { needed, have } => {
                write!(f, "truncated: {needed} bytes needed, {have} present")
            }
            HandoverError::ChecksumMismatch { expected, found } => write!(
                f,
                "checksum mismatch: stored {expected:#010x}, computed {found:#010x}"
            ),
            HandoverError::RecordLengthOutOfBounds { offset, len } => write!(
                f,
                "record at byte {offset} claims a {len}-byte payload past the record area"
            ),
            HandoverError::UnreadableLayout => write!(f, "unreadable record header layout"),
            HandoverError::OutputTooSmall { needed } => {
                write!(
                    f,
                    "output region too small: the fixed part needs {needed} bytes"
                )
            }
            HandoverError::RecordAreaMismatch { records, bytes } => write!(
                f,
                "record area mismatch: {records} records in {bytes} bytes, not what the header says"
            ),
        }
    }
}

impl core::error::Error for HandoverError {}

// ------------------------------------------------------------------------------------- sizes

const fn round_up(n: usize) -> Option<usize> {
    match n.checked_add(ALIGN - 1) {
        Some(v) => Some(v & !(ALIGN - 1)),
        None => None,
    }
}

fn checked_fixed_size(cpus: usize, depth: usize) -> Option<usize> {
    let counters = cpus.checked_mul(depth)?.checked_mul(COUNTER_ENTRY_BYTES)?;
    let tables = (layout::ALL.len() * LAYOUT_ENTRY_BYTES).checked_add(counters)?;
    round_up(CORE_BYTES.checked_add(tables)?.checked_add(CRC_BYTES)?)
}

/// Bytes of the fixed part (core header, layout table, counters table) of an image for `cpus` CPUs
/// with `depth` rings each: the offset where the record area starts. Saturates at `usize::MAX`.
///
/// ```
/// use nmilog::handover::fixed_size;
/// assert_eq!(fixed_size(0, 4), 104);
/// assert_eq!(fixed_size(2, 4), 104 + 2 * 4 * 32);
/// ```
pub fn fixed_size(cpus: usize, depth: usize) -> usize {
    checked_fixed_size(cpus, depth).unwrap_or(usize::MAX)
}

fn checked_record_size(header_bytes: usize, payload_len: usize) -> Option<usize> {
    round_up(
        SEQ_BYTES
            .checked_add(header_bytes)?
            .checked_add(payload_len)?
            .checked_add(CRC_BYTES)?,
    )
}

/// Bytes one record entry with a `payload_len`-byte payload takes in an image this crate writes.
///
/// ```
/// assert_eq!(nmilog::handover::record_size(0), 40);
/// assert_eq!(nmilog::handover::record_size(5), 48);
/// ```
pub fn record_size(payload_len: usize) -> usize {
    checked_record_size(HEADER_BYTES, payload_len).unwrap_or(usize::MAX)
}

/// An upper bound on the size of an image of a log with `cpus` CPUs, `depth` rings per CPU and a
/// `main_words`-word main log: a region this large never leaves records out. Saturates.
///
/// ```
/// use nmilog::handover::max_image_size;
/// assert!(max_image_size(4, 4, 8192) > 8192 * core::mem::size_of::<usize>());
/// ```
pub fn max_image_size(cpus: usize, depth: usize, main_words: usize) -> usize {
    // Each record takes at least `span_words(0)` words of the main log, and its payload bytes are
    // at most the log's bytes; an entry adds `record_size(0) + 7` bytes to its payload at most.
    let records = main_words / span_words(0);
    let per_record = record_size(0).saturating_add(ALIGN - 1);
    fixed_size(cpus, depth)
        .saturating_add(records.saturating_mul(per_record))
        .saturating_add(main_words.saturating_mul(core::mem::size_of::<usize>()))
}

// ------------------------------------------------------------------------------------- writing

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

fn crc_of(bytes: &[u8], from: usize, to: usize) -> Option<u32> {
    bytes.get(from..to).map(|b| CRC32C.checksum(b))
}

/// Writes one record entry at `at`; returns its size, or `None` (nothing meaningful written) if it
/// does not fit.
fn put_record(out: &mut [u8], at: usize, rec: &RecordBuf) -> Option<usize> {
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
    let ok = put(out, at, &rec.seq.to_le_bytes())
        && put(out, hdr_at, &header.to_bytes())
        && put(out, pay_at, payload);
    zero(out, pay_at + payload.len(), crc_at);
    let crc = crc_of(out, at, crc_at)?;
    (ok && put(out, crc_at, &crc.to_le_bytes())).then_some(size)
}

/// Serialises `log`'s main log, its loss counters and the record header layout into `out`; returns
/// the image size in bytes (the image is `out[..size]`; the rest of `out` is left untouched).
///
/// Call it after [`Log::drain_on_crash`] (it does not drain: it copies what the main log holds, from
/// its oldest record). No lock, no allocation, no waiting: two passes over the main log, each at most
/// one step per record it can hold.
///
/// If `out` cannot hold every record, the **newest** records are kept (they are the ones nearest the
/// crash) and the number of older ones left out is recorded ([`Image::left_out`]). Only when `out`
/// cannot hold the fixed part ([`fixed_size`]) is the result
/// [`HandoverError::OutputTooSmall`].
///
/// ```
/// use nmilog::{handover, Level, Log, Platform};
/// struct One;
/// impl Platform for One {
///     fn cpu_id(&self) -> usize { 0 }
///     fn now_ns(&self) -> u64 { 1 }
///     fn cpu_count(&self) -> usize { 1 }
/// }
/// let log: Log<One, 1, 256, 1024> = Log::new(One);
/// for i in 0..3u8 {
///     log.append_raw(Level::Info, 0, 0, &[b'0' + i]).unwrap();
/// }
/// log.crash_enter().unwrap();
/// log.drain_on_crash();
///
/// // Room for the fixed part and two one-byte records: the two newest are kept.
/// let fixed = handover::fixed_size(1, 4);
/// let mut small = vec![0u8; fixed + 2 * handover::record_size(1)];
/// let n = handover::write_image(&log, &mut small).unwrap();
/// let image = handover::parse(&small[..n]).unwrap();
/// assert_eq!(image.left_out(), 1);
/// let texts: Vec<&str> = image.records().filter_map(|r| r.text()).collect();
/// assert_eq!(texts, ["1", "2"]);
///
/// let mut tiny = [0u8; 16];
/// assert_eq!(
///     handover::write_image(&log, &mut tiny),
///     Err(handover::HandoverError::OutputTooSmall { needed: fixed })
/// );
/// ```
pub fn write_image<P: Platform, const C: usize, const R: usize, const M: usize, const D: usize>(
    log: &Log<P, C, R, M, D>,
    out: &mut [u8],
) -> Result<usize, HandoverError> {
    let ncpu = log.platform().cpu_count().min(C);
    let fixed =
        checked_fixed_size(ncpu, D).ok_or(HandoverError::OutputTooSmall { needed: usize::MAX })?;
    if out.len() < fixed {
        return Err(HandoverError::OutputTooSmall { needed: fixed });
    }
    let ring = log.main();
    // Each record takes at least `span_words(0)` words; resynchronisations (only possible if someone
    // writes the main log against the drain contract) get the same allowance again.
    let budget = (M / span_words(0) + 2).saturating_mul(2);
    let mut buf = RecordBuf::new();

    // Pass 1: how many bytes would every record take?
    let mut total: usize = 0;
    let mut cur = ring.oldest();
    for _ in 0..budget {
        match ring.read(&mut cur, &mut buf) {
            Read::Record => {
                total = total.saturating_add(record_size(buf.payload().len()));
            }
            Read::Overwritten { .. } => {}
            Read::Empty | Read::InFlight => break,
        }
    }

    // Pass 2: skip the oldest records until the rest fits, then copy.
    let mut skip = total.saturating_sub(out.len() - fixed);
    let mut at = fixed;
    let mut written: u64 = 0;
    let mut left_out: u64 = 0;
    let mut cur = ring.oldest();
    for _ in 0..budget {
        match ring.read(&mut cur, &mut buf) {
            Read::Record => {
                if skip > 0 {
                    skip = skip.saturating_sub(record_size(buf.payload().len()));
                    left_out += 1;
                    continue;
                }
                match put_record(out, at, &buf) {
                    Some(size) => {
                        at += size;
                        written += 1;
                    }
                    // Only if the log grew between the passes (against the drain contract).
                    None => left_out += 1,
                }
            }
            Read::Overwritten { .. } => {}
            Read::Empty | Read::InFlight => break,
        }
    }

    // Tables: layout, then counters, then padding, then their CRC.
    let mut t = CORE_BYTES;
    for (i, (o, s)) in layout::ALL.iter().enumerate() {
        put(out, t, &[i as u8, *o, *s, 0]);
        t += LAYOUT_ENTRY_BYTES;
    }
    for c in 0..ncpu {
        for d in 0..D {
            let cnt = log.counters(c, d).unwrap_or_default();
            let kind = log.cpu(c).map_or(ContextKind::Task, |pc| pc.kind_at(d));
            put(out, t, &cnt.torn.to_le_bytes());
            put(out, t + 8, &cnt.overwritten.to_le_bytes());
            put(out, t + 16, &cnt.dropped.to_le_bytes());
            put(out, t + 24, &[kind as u8, 0, 0, 0, 0, 0, 0, 0]);
            t += COUNTER_ENTRY_BYTES;
        }
    }
    zero(out, t, fixed - CRC_BYTES);
    let tables_crc = crc_of(out, CORE_BYTES, fixed - CRC_BYTES).unwrap_or(0);
    put(out, fixed - CRC_BYTES, &tables_crc.to_le_bytes());

    // Core header last.
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
        &(D.min(u16::MAX as usize) as u16).to_le_bytes(),
    );
    put(out, off::CE, &(COUNTER_ENTRY_BYTES as u16).to_le_bytes());
    put(out, off::BAD_CPU, &log.bad_cpu_dropped().to_le_bytes());
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
    Ok(at)
}

// ------------------------------------------------------------------------------------- reading

/// Little-endian unsigned integer of `n <= 8` bytes at `at`.
fn le(bytes: &[u8], at: usize, n: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(n)?)?;
    Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
}

fn le16(bytes: &[u8], at: usize) -> u16 {
    le(bytes, at, 2).unwrap_or(0) as u16
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    le(bytes, at, 4).unwrap_or(0) as u32
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    le(bytes, at, 8).unwrap_or(0)
}

/// Where one header field lives in a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    at: usize,
    size: usize,
}

/// The record header layout, as published by the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    header_bytes: usize,
    ts_ns: Field,
    src_seq: Option<Field>,
    len: Field,
    cpu: Field,
    level: Field,
    facility: Option<Field>,
    ctx: Field,
    flags: Field,
}

impl Layout {
    /// Decodes the layout table; `Err(offset)` of the offending entry (or the table) when it is not
    /// readable.
    fn parse(
        table: &[u8],
        at: usize,
        count: usize,
        entry: usize,
        rh: usize,
    ) -> Result<Self, usize> {
        // Widest each field may be (its Rust type).
        const MAX: [usize; 8] = [8, 8, 2, 2, 1, 1, 1, 1];
        let mut found: [Option<Field>; 8] = [None; 8];
        for i in 0..count {
            let e = at.checked_add(i.checked_mul(entry).ok_or(at)?).ok_or(at)?;
            let (Some(fid), Some(fat), Some(fsize)) = (
                table.get(e).copied(),
                table.get(e + 1).copied(),
                table.get(e + 2).copied(),
            ) else {
                return Err(e);
            };
            let Some(max) = MAX.get(fid as usize).copied() else {
                continue; // a field this reader does not know
            };
            let (fat, fsize) = (fat as usize, fsize as usize);
            if fsize == 0 || fsize > max || fat + fsize > rh {
                return Err(e);
            }
            if let Some(slot) = found.get_mut(fid as usize) {
                if slot.is_none() {
                    *slot = Some(Field {
                        at: fat,
                        size: fsize,
                    });
                }
            }
        }
        let need = |i: u8| found.get(i as usize).copied().flatten().ok_or(at);
        Ok(Layout {
            header_bytes: rh,
            ts_ns: need(id::TS_NS)?,
            src_seq: found.get(id::SRC_SEQ as usize).copied().flatten(),
            len: need(id::LEN)?,
            cpu: need(id::CPU)?,
            level: need(id::LEVEL)?,
            facility: found.get(id::FACILITY as usize).copied().flatten(),
            ctx: need(id::CTX)?,
            flags: need(id::FLAGS)?,
        })
    }

    fn get(&self, bytes: &[u8], base: usize, f: Field) -> Option<u64> {
        le(bytes, base.checked_add(f.at)?, f.size)
    }

    /// Decodes the record header starting at `base`.
    fn header(&self, bytes: &[u8], base: usize) -> Option<Header> {
        let opt = |f: Option<Field>| match f {
            Some(f) => self.get(bytes, base, f),
            None => Some(0),
        };
        // Every field is at most as wide as its type (checked in `parse`), so `as` never truncates.
        Some(Header {
            ts_ns: self.get(bytes, base, self.ts_ns)?,
            src_seq: opt(self.src_seq)?,
            len: self.get(bytes, base, self.len)? as u16,
            cpu: self.get(bytes, base, self.cpu)? as u16,
            level: self.get(bytes, base, self.level)? as u8,
            facility: opt(self.facility)? as u8,
            ctx: self.get(bytes, base, self.ctx)? as u8,
            flags: self.get(bytes, base, self.flags)? as u8,
        })
    }
}

/// One record recovered from an image.
///
/// ```
/// use nmilog::handover::ImageRecord;
/// use nmilog::{record::flags, Header};
/// let r = ImageRecord { seq: 0, header: Header::default(), payload: b"ok" };
/// assert_eq!(r.text(), Some("ok"));
/// let raw = ImageRecord { header: Header { flags: flags::RAW, ..Header::default() }, ..r };
/// assert_eq!(raw.text(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageRecord<'a> {
    /// The record's sequence number in the main log.
    pub seq: u64,
    /// The decoded header (`header.len == payload.len()`).
    pub header: Header,
    /// The payload bytes, borrowed from the image.
    pub payload: &'a [u8],
}

impl<'a> ImageRecord<'a> {
    /// The payload as text (borrowed from the image): `None` if it is marked [`flags::RAW`] or is
    /// not UTF-8.
    ///
    /// ```
    /// use nmilog::{handover::ImageRecord, Header};
    /// let ok = ImageRecord { seq: 3, header: Header::default(), payload: "né".as_bytes() };
    /// assert_eq!(ok.text(), Some("né"));
    /// let bad = ImageRecord { payload: &[0xc3], ..ok }; // a cut UTF-8 sequence
    /// assert_eq!(bad.text(), None);
    /// ```
    pub fn text(&self) -> Option<&'a str> {
        if self.header.flags & flags::RAW != 0 {
            return None;
        }
        core::str::from_utf8(self.payload).ok()
    }
}

/// Decodes the entry at `at` (no CRC check); returns it and its size.
fn decode_record<'a>(bytes: &'a [u8], at: usize, l: &Layout) -> Option<(ImageRecord<'a>, usize)> {
    let seq = le(bytes, at, SEQ_BYTES)?;
    let hdr_at = at.checked_add(SEQ_BYTES)?;
    let header = l.header(bytes, hdr_at)?;
    let pay_at = hdr_at.checked_add(l.header_bytes)?;
    let len = header.len as usize;
    let payload = bytes.get(pay_at..pay_at.checked_add(len)?)?;
    let size = checked_record_size(l.header_bytes, len)?;
    Some((
        ImageRecord {
            seq,
            header,
            payload,
        },
        size,
    ))
}

/// A parsed handover image (see [`parse`]). Borrows the image bytes.
///
/// ```
/// use nmilog::{handover, host::HostPlatform, Level, Log};
/// static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
/// HostPlatform::register_cpu(0);
/// LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
/// LOG.crash_enter().unwrap();
/// LOG.drain_on_crash();
/// let mut region = vec![0u8; handover::max_image_size(2, 4, 4096)];
/// let n = handover::write_image(&LOG, &mut region).unwrap();
/// let image = handover::parse(&region[..n]).unwrap();
/// assert_eq!((image.cpu_count(), image.depth(), image.record_count()), (2, 4, 1));
/// assert_eq!(image.records().next().unwrap().text(), Some("hello"));
/// ```
#[derive(Clone)]
pub struct Image<'a> {
    bytes: &'a [u8],
    version: u16,
    cpu_count: usize,
    depth: usize,
    layout: Layout,
    counters_at: usize,
    counter_entry: usize,
    bad_cpu: u64,
    left_out: u64,
    records_at: usize,
    valid: usize,
    corruption: Option<(HandoverError, usize)>,
}

impl fmt::Debug for Image<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("version", &self.version)
            .field("cpu_count", &self.cpu_count)
            .field("depth", &self.depth)
            .field("records", &self.valid)
            .field("left_out", &self.left_out)
            .field("bad_cpu_dropped", &self.bad_cpu)
            .field("corruption", &self.corruption)
            .finish()
    }
}

impl<'a> Image<'a> {
    /// The format version of the image.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.version(), handover::VERSION);
    /// ```
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The number of CPUs the image has counters for.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.cpu_count(), 2); // the platform's CPU count
    /// assert!(image.counters(1, 0).is_some() && image.counters(2, 0).is_none());
    /// ```
    pub fn cpu_count(&self) -> usize {
        self.cpu_count
    }

    /// Context depths (rings per CPU) the image has counters for.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.depth(), 4); // `Log`'s default DEPTH
    /// assert!(image.counters(0, 3).is_some() && image.counters(0, 4).is_none());
    /// ```
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The valid records, oldest first (those before the corruption point, if any).
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// LOG.append_raw(Level::Err, 0, 0, b"world").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// let recs: Vec<_> = image.records().map(|r| (r.header.level, r.payload)).collect();
    /// assert_eq!(recs, [(6, &b"hello"[..]), (3, &b"world"[..])]);
    /// assert!(image.records().all(|r| r.header.cpu == 0));
    /// ```
    pub fn records(&self) -> Records<'a> {
        Records {
            bytes: self.bytes,
            layout: self.layout,
            at: self.records_at,
            remaining: self.valid,
        }
    }

    /// Number of valid records recovered.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// LOG.append_raw(Level::Info, 0, 0, b"world").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.record_count(), 2);
    /// assert_eq!(image.records().count(), image.record_count());
    /// ```
    pub fn record_count(&self) -> usize {
        self.valid
    }

    /// Loss counters of ring `(cpu, depth)`, or `None` outside the image's CPUs and depths.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// let big = [0u8; nmilog::MAX_PAYLOAD + 1];
    /// assert!(LOG.append_raw(Level::Info, 0, 0, &big).is_err());
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// let c = image.counters(0, 0).unwrap(); // CPU 0, task context
    /// assert_eq!((c.dropped, c.torn, c.overwritten), (1, 0, 0)); // the oversized record
    /// assert_eq!(image.counters(1, 0).unwrap().dropped, 0);
    /// assert_eq!(image.counters(9, 0), None);
    /// ```
    pub fn counters(&self, cpu: usize, depth: usize) -> Option<CpuCounters> {
        let at = self.counter_at(cpu, depth)?;
        Some(CpuCounters {
            torn: le(self.bytes, at, 8)?,
            overwritten: le(self.bytes, at.checked_add(8)?, 8)?,
            dropped: le(self.bytes, at.checked_add(16)?, 8)?,
            in_flight: 0,
        })
    }

    /// The kind of context last entered at `depth` on `cpu` when the image was written (as the
    /// crash drain's accounting names it), or `None` outside the table or for an unknown kind.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// use nmilog::ContextKind;
    /// assert_eq!(image.context_kind(0, 0), Some(ContextKind::Task));
    /// assert_eq!(image.context_kind(0, 1), Some(ContextKind::Crash)); // `crash_enter` on CPU 0
    /// assert_eq!(image.context_kind(0, 4), None); // beyond the image's depth
    /// ```
    pub fn context_kind(&self, cpu: usize, depth: usize) -> Option<ContextKind> {
        let at = self.counter_at(cpu, depth)?.checked_add(24)?;
        ContextKind::from_u8(*self.bytes.get(at)?)
    }

    fn counter_at(&self, cpu: usize, depth: usize) -> Option<usize> {
        if cpu >= self.cpu_count || depth >= self.depth {
            return None;
        }
        let index = cpu.checked_mul(self.depth)?.checked_add(depth)?;
        self.counters_at
            .checked_add(index.checked_mul(self.counter_entry)?)
    }

    /// The counters summed over every CPU and depth (saturating).
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// let big = [0u8; nmilog::MAX_PAYLOAD + 1];
    /// assert!(LOG.append_raw(Level::Info, 0, 0, &big).is_err());
    /// assert!(LOG.append_raw(Level::Info, 0, 0, &big).is_err());
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// let t = image.totals();
    /// assert_eq!((t.dropped, t.torn, t.overwritten), (2, 0, 0));
    /// assert_eq!(t.dropped, image.counters(0, 0).unwrap().dropped);
    /// ```
    pub fn totals(&self) -> CpuCounters {
        let mut t = CpuCounters::default();
        for c in 0..self.cpu_count {
            for d in 0..self.depth {
                if let Some(x) = self.counters(c, d) {
                    t.torn = t.torn.saturating_add(x.torn);
                    t.overwritten = t.overwritten.saturating_add(x.overwritten);
                    t.dropped = t.dropped.saturating_add(x.dropped);
                }
            }
        }
        t
    }

    /// Log calls dropped because the platform reported a bad CPU id.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// HostPlatform::register_cpu(7); // not one of the 2 CPUs
    /// assert!(LOG.append_raw(Level::Info, 0, 0, b"lost").is_err());
    /// HostPlatform::register_cpu(0);
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.bad_cpu_dropped(), 1);
    /// assert_eq!(image.bad_cpu_dropped(), LOG.bad_cpu_dropped());
    /// ```
    pub fn bad_cpu_dropped(&self) -> u64 {
        self.bad_cpu
    }

    /// Records the writer left out because the region was too small (the oldest ones).
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// LOG.append_raw(Level::Info, 0, 0, b"old").unwrap();
    /// LOG.append_raw(Level::Info, 0, 0, b"new").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # LOG.drain_on_crash();
    /// // Room for the fixed part and one record only.
    /// let mut region = vec![0u8; handover::fixed_size(2, 4) + handover::record_size(3)];
    /// let n = handover::write_image(&LOG, &mut region).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.left_out(), 1);
    /// assert_eq!(image.records().next().unwrap().text(), Some("new"));
    /// ```
    pub fn left_out(&self) -> u64 {
        self.left_out
    }

    /// `Some((error, byte offset))` when the record area is damaged: the records before `offset` were
    /// recovered ([`records`](Self::records)), the entry at `offset` and everything after it were not.
    ///
    /// ```
    /// use nmilog::{handover::{self, HandoverError}, Level, Log, Platform};
    /// struct One;
    /// impl Platform for One {
    ///     fn cpu_id(&self) -> usize { 0 }
    ///     fn now_ns(&self) -> u64 { 1 }
    ///     fn cpu_count(&self) -> usize { 1 }
    /// }
    /// let log: Log<One, 1, 256, 1024> = Log::new(One);
    /// log.append_raw(Level::Info, 0, 0, b"first").unwrap();
    /// log.append_raw(Level::Info, 0, 0, b"second").unwrap();
    /// log.crash_enter().unwrap();
    /// log.drain_on_crash();
    /// let mut region = [0u8; 1024];
    /// let n = handover::write_image(&log, &mut region).unwrap();
    ///
    /// // Damage the last byte of the payload "second": "first" is still recovered.
    /// let second_at = n - handover::record_size(6);
    /// region[second_at + 8 + nmilog::HEADER_BYTES + 5] ^= 0x20;
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.record_count(), 1);
    /// assert_eq!(image.records().next().unwrap().payload, b"first");
    /// let (err, at) = image.corruption().unwrap();
    /// assert!(matches!(err, HandoverError::ChecksumMismatch { .. }));
    /// assert_eq!(at, second_at);
    /// ```
    pub fn corruption(&self) -> Option<(HandoverError, usize)> {
        self.corruption
    }
}

/// Iterator over an [`Image`]'s valid records, oldest first.
///
/// ```
/// # use nmilog::{handover, host::HostPlatform, Level, Log};
/// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
/// # HostPlatform::register_cpu(0);
/// LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
/// LOG.append_raw(Level::Info, 0, 0, b"world").unwrap();
/// # LOG.crash_enter().unwrap();
/// # LOG.drain_on_crash();
/// # let mut region = [0u8; 4096];
/// # let n = handover::write_image(&LOG, &mut region).unwrap();
/// let image = handover::parse(&region[..n]).unwrap();
/// let mut records = image.records();
/// assert_eq!(records.size_hint(), (0, Some(2)));
/// let texts: Vec<_> = records.by_ref().filter_map(|r| r.text()).collect();
/// assert_eq!(texts, ["hello", "world"]);
/// assert!(records.next().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    layout: Layout,
    at: usize,
    remaining: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = ImageRecord<'a>;

    fn next(&mut self) -> Option<ImageRecord<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let Some((rec, size)) = decode_record(self.bytes, self.at, &self.layout) else {
            self.remaining = 0;
            return None;
        };
        self.remaining -= 1;
        self.at = self.at.saturating_add(size);
        Some(rec)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Parses an image: validates the core header and tables (any problem there is `Err`), then keeps
/// every record up to the first damaged entry (reported by [`Image::corruption`]). Never panics,
/// whatever the bytes; work is linear in `image.len()`.
///
/// ```
/// use nmilog::handover::{parse, HandoverError};
/// let mut junk = [0u8; 128];
/// junk[..8].copy_from_slice(b"NMILOGHO");
/// junk[8] = 9;
/// assert_eq!(parse(&junk).unwrap_err(), HandoverError::UnknownVersion(9));
/// ```
pub fn parse(image: &[u8]) -> Result<Image<'_>, HandoverError> {
    parse_located(image).map_err(|(e, _)| e)
}

/// [`parse`], with the byte offset of a fatal problem: the start of the region whose checksum
/// failed, the field that holds an unknown version or unreadable layout, or the image length for a
/// truncation.
///
/// ```
/// use nmilog::handover::{parse_located, HandoverError};
/// assert_eq!(parse_located(b"NMILOG").unwrap_err(), (HandoverError::Truncated { needed: 64, have: 6 }, 6));
/// ```
pub fn parse_located(image: &[u8]) -> Result<Image<'_>, (HandoverError, usize)> {
    use HandoverError::*;
    let have = image.len();
    if have < CORE_BYTES {
        let n = have.min(MAGIC.len());
        if image.get(..n) == MAGIC.get(..n) {
            return Err((
                Truncated {
                    needed: CORE_BYTES,
                    have,
                },
                have,
            ));
        }
        return Err((BadMagic, 0));
    }
    if image.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err((BadMagic, 0));
    }
    let version = le16(image, off::VERSION);
    if version != VERSION {
        return Err((UnknownVersion(version), off::VERSION));
    }
    let stored = le32(image, off::CRC);
    let found = crc_of(image, 0, off::CRC).unwrap_or(0);
    if stored != found {
        return Err((
            ChecksumMismatch {
                expected: stored,
                found,
            },
            0,
        ));
    }
    // The core header is intact; now check that it describes something this reader can read.
    if le16(image, off::CORE_SIZE) as usize != CORE_BYTES {
        return Err((UnreadableLayout, off::CORE_SIZE));
    }
    let rh = le16(image, off::RH) as usize;
    let nfields = image.get(off::F).copied().unwrap_or(0) as usize;
    let le_size = image.get(off::LE).copied().unwrap_or(0) as usize;
    if le_size < LAYOUT_ENTRY_MIN {
        return Err((UnreadableLayout, off::LE));
    }
    let cpu_count = le32(image, off::CPUS) as usize;
    let depth = le16(image, off::DEPTH) as usize;
    let ce = le16(image, off::CE) as usize;
    if ce < COUNTER_ENTRY_MIN {
        return Err((UnreadableLayout, off::CE));
    }
    let records_at = le32(image, off::RECORDS) as usize;
    let layout_len = nfields * le_size;
    let counters_at = CORE_BYTES + layout_len;
    let tables_end = cpu_count
        .checked_mul(depth)
        .and_then(|n| n.checked_mul(ce))
        .and_then(|n| n.checked_add(counters_at));
    match tables_end.and_then(|e| e.checked_add(CRC_BYTES)) {
        Some(min) if records_at >= min => {}
        _ => return Err((UnreadableLayout, off::RECORDS)),
    }
    if records_at > have {
        return Err((
            Truncated {
                needed: records_at,
                have,
            },
            have,
        ));
    }
    let crc_at = records_at - CRC_BYTES;
    let stored = le32(image, crc_at);
    let found = crc_of(image, CORE_BYTES, crc_at).unwrap_or(0);
    if stored != found {
        return Err((
            ChecksumMismatch {
                expected: stored,
                found,
            },
            CORE_BYTES,
        ));
    }
    let layout = Layout::parse(image, CORE_BYTES, nfields, le_size, rh)
        .map_err(|at| (UnreadableLayout, at))?;
    let count = le64(image, off::COUNT);
    let area_end = usize::try_from(le64(image, off::AREA))
        .ok()
        .and_then(|a| records_at.checked_add(a))
        .ok_or((UnreadableLayout, off::AREA))?;

    // The records: stop at the first damaged entry.
    let mut at = records_at;
    let mut valid = 0usize;
    let mut corruption = None;
    while (valid as u64) < count {
        match check_record(image, at, area_end, &layout) {
            Ok(size) => {
                at += size;
                valid += 1;
            }
            Err(e) => {
                let e = match e {
                    Some(e) => e,
                    None => RecordAreaMismatch {
                        records: valid as u64,
                        bytes: at - records_at,
                    },
                };
                corruption = Some((e, at));
                break;
            }
        }
    }
    if corruption.is_none() && at != area_end {
        corruption = Some((
            RecordAreaMismatch {
                records: valid as u64,
                bytes: at - records_at,
            },
            at,
        ));
    }
    Ok(Image {
        bytes: image,
        version,
        cpu_count,
        depth,
        layout,
        counters_at,
        counter_entry: ce,
        bad_cpu: le64(image, off::BAD_CPU),
        left_out: le64(image, off::LEFT_OUT),
        records_at,
        valid,
        corruption,
    })
}

/// Checks the entry at `at` (`at <= area_end <= usize::MAX`); returns its size. `Err(None)`: no
/// room for another entry in the record area.
fn check_record(
    image: &[u8],
    at: usize,
    area_end: usize,
    l: &Layout,
) -> Result<usize, Option<HandoverError>> {
    let have = image.len();
    let min_end = checked_record_size(l.header_bytes, 0)
        .and_then(|s| at.checked_add(s))
        .ok_or(None)?;
    if min_end > area_end {
        return Err(None);
    }
    let hdr_end = at + SEQ_BYTES + l.header_bytes;
    if hdr_end > have {
        return Err(Some(HandoverError::Truncated {
            needed: hdr_end,
            have,
        }));
    }
    let len = le(image, at + SEQ_BYTES + l.len.at, l.len.size).ok_or(None)? as usize;
    let end = checked_record_size(l.header_bytes, len)
        .and_then(|s| at.checked_add(s))
        .ok_or(None)?;
    if end > area_end {
        return Err(Some(HandoverError::RecordLengthOutOfBounds {
            offset: at,
            len,
        }));
    }
    if end > have {
        return Err(Some(HandoverError::Truncated { needed: end, have }));
    }
    let crc_at = end - CRC_BYTES;
    let expected = le32(image, crc_at);
    let found = crc_of(image, at, crc_at).ok_or(None)?;
    if expected != found {
        return Err(Some(HandoverError::ChecksumMismatch { expected, found }));
    }
    Ok(end - at)
}
