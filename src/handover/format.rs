//! What the handover image's writer and reader share: the format's constants and field offsets
//! (documented in the [module docs](super)), the checked size arithmetic, the CRC and the error
//! type.
//!
//! Contract: every size function is overflow-checked (the `checked_*` forms return `None`, the
//! public ones saturate at `usize::MAX`), so a hostile header can never make the reader wrap.

use core::fmt;

use crc::{Crc, CRC_32_ISCSI};

use crate::record::{layout, HEADER_BYTES};
use crate::ring::span_words;

/// The image's first eight bytes.
///
/// ```
/// assert_eq!(&nmilog::handover::MAGIC, b"NMILOGHO");
/// ```
pub const MAGIC: [u8; 8] = *b"NMILOGHO";

/// The format version this crate writes. It reads this one and version 1 (whose counter entries
/// have no in-flight count and no stopped flag: they read as 0 and "stopped").
///
/// ```
/// assert_eq!(nmilog::handover::VERSION, 2);
/// ```
pub const VERSION: u16 = 2;

/// The oldest format version this crate reads.
pub(super) const VERSION_MIN: u16 = 1;

/// Size of the core header in bytes.
///
/// ```
/// use nmilog::handover::{fixed_size, parse, HandoverError, CORE_BYTES};
/// assert!(fixed_size(0, 0) > CORE_BYTES); // the tables follow the core header
/// let err = parse(b"NMILOGHO").unwrap_err(); // magic, then nothing
/// assert_eq!(err, HandoverError::Truncated { needed: CORE_BYTES, have: 8 });
/// ```
pub const CORE_BYTES: usize = 64;

pub(super) const LAYOUT_ENTRY_BYTES: usize = 4;
pub(super) const COUNTER_ENTRY_BYTES: usize = 40;
/// Bit of a counter entry's flags byte (offset 25): the CPU was not known to be stopped.
pub(super) const CPU_NOT_STOPPED: u8 = 1;
/// Smallest counters entry a reader accepts: three `u64`s and the context kind byte.
pub(super) const COUNTER_ENTRY_MIN: usize = 25;
/// Smallest layout entry a reader accepts: id, offset, size.
pub(super) const LAYOUT_ENTRY_MIN: usize = 3;
pub(super) const SEQ_BYTES: usize = 8;
pub(super) const CRC_BYTES: usize = 4;
pub(super) const ALIGN: usize = 8;

/// Core header field offsets.
pub(super) mod off {
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
pub(super) mod id {
    pub const TS_NS: u8 = 0;
    pub const SRC_SEQ: u8 = 1;
    pub const LEN: u8 = 2;
    pub const CPU: u8 = 3;
    pub const LEVEL: u8 = 4;
    pub const FACILITY: u8 = 5;
    pub const CTX: u8 = 6;
    pub const FLAGS: u8 = 7;
    pub const CALLER: u8 = 8;
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
    /// [`write_image`](super::write_image): the region cannot hold even the fixed part (core header and tables) of
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
    /// [`write_image`](super::write_image) was called on a CPU that is not the crashing one: the
    /// image is written by the crash drain, which only the crashing CPU runs.
    NotCrashing,
}

impl fmt::Display for HandoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HandoverError::BadMagic => write!(f, "bad magic (not an nmilog handover image)"),
            HandoverError::UnknownVersion(v) => {
                write!(
                    f,
                    "unknown format version {v} (this reader knows {VERSION_MIN} to {VERSION})"
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
            HandoverError::NotCrashing => {
                write!(
                    f,
                    "not the crashing CPU: only the crash drain writes an image"
                )
            }
        }
    }
}

impl core::error::Error for HandoverError {}

const fn round_up(n: usize) -> Option<usize> {
    match n.checked_add(ALIGN - 1) {
        Some(v) => Some(v & !(ALIGN - 1)),
        None => None,
    }
}

pub(super) fn checked_fixed_size(cpus: usize, depth: usize) -> Option<usize> {
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
/// assert_eq!(fixed_size(2, 4), 104 + 2 * 4 * 40);
/// ```
pub fn fixed_size(cpus: usize, depth: usize) -> usize {
    checked_fixed_size(cpus, depth).unwrap_or(usize::MAX)
}

pub(super) fn checked_record_size(header_bytes: usize, payload_len: usize) -> Option<usize> {
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
/// assert_eq!(nmilog::handover::record_size(0), 48);
/// assert_eq!(nmilog::handover::record_size(5), 56);
/// ```
pub fn record_size(payload_len: usize) -> usize {
    checked_record_size(HEADER_BYTES, payload_len).unwrap_or(usize::MAX)
}

/// An upper bound on the size of an image of a log with `cpus` CPUs, `depth` rings of `ring_words`
/// words per CPU and a `main_words`-word main log: a region this large never leaves records out (the
/// crash drain's output is the main log's records, every ring's records and one accounting record per
/// ring plus two: the main log's losses, the calls before registration). Saturates; `const`, so a kernel can size a static region with it (also
/// [`Log::MAX_IMAGE_BYTES`](crate::Log::MAX_IMAGE_BYTES)).
///
/// ```
/// use nmilog::handover::max_image_size;
/// let words = 4 * 4 * 1024 + 8192; // every ring and the main log
/// assert!(max_image_size(4, 4, 1024, 8192) > words * core::mem::size_of::<usize>());
/// ```
pub const fn max_image_size(
    cpus: usize,
    depth: usize,
    ring_words: usize,
    main_words: usize,
) -> usize {
    let sources = cpus.saturating_mul(depth);
    // The fixed part: core header, layout table, counters, CRC, padding.
    let fixed = CORE_BYTES
        .saturating_add(layout::ALL.len() * LAYOUT_ENTRY_BYTES)
        .saturating_add(sources.saturating_mul(COUNTER_ENTRY_BYTES))
        .saturating_add(CRC_BYTES)
        .saturating_add(ALIGN);
    // The drain's accounting records: at most one per ring, one for the main log and one for the
    // calls before registration, each at most a line long.
    let accounting = (sources.saturating_add(2))
        .saturating_mul(SEQ_BYTES + HEADER_BYTES + crate::fmt::LINE_MAX + CRC_BYTES + ALIGN);
    fixed
        .saturating_add(area_bytes(main_words))
        .saturating_add(sources.saturating_mul(area_bytes(ring_words)))
        .saturating_add(accounting)
}

/// The most image bytes the records of one `words`-word ring can take: each record takes at least
/// `span_words(0)` words, and an entry is its payload (at most the ring's bytes in all) plus at most
/// `record_size(0) + 7` bytes.
const fn area_bytes(words: usize) -> usize {
    let records = words / span_words(0) + 1;
    let per_record = SEQ_BYTES + HEADER_BYTES + CRC_BYTES + 2 * ALIGN - 1;
    records
        .saturating_mul(per_record)
        .saturating_add(words.saturating_mul(core::mem::size_of::<usize>()))
}

/// CRC32C of `bytes[from..to]`, or `None` if that range is not inside `bytes`.
pub(super) fn crc_of(bytes: &[u8], from: usize, to: usize) -> Option<u32> {
    bytes.get(from..to).map(|b| CRC32C.checksum(b))
}
