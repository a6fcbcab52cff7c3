//! The capture side's validation: [`parse`] and [`parse_located`] check the core header, the
//! tables and each record entry, and decode the published record header layout.
//!
//! Contract: never panics and never reads out of bounds, whatever the bytes; work is linear in the
//! image length; a damaged header or tables is an error, a damaged record area keeps every record
//! before the first bad entry (see [`Image::corruption`]).

use super::format::{
    checked_record_size, crc_of, id, off, HandoverError, CORE_BYTES, COUNTER_ENTRY_MIN, CRC_BYTES,
    LAYOUT_ENTRY_MIN, MAGIC, SEQ_BYTES, VERSION, VERSION_MIN,
};
use super::image::{Image, ImageRecord};
use crate::record::{layout, Header};

/// Little-endian unsigned integer of `n <= 8` bytes at `at`.
pub(super) fn le(bytes: &[u8], at: usize, n: usize) -> Option<u64> {
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
pub(super) struct Field {
    at: usize,
    size: usize,
}

/// The record header layout, as published by the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) header_bytes: usize,
    ts_ns: Field,
    src_seq: Option<Field>,
    len: Field,
    cpu: Field,
    level: Field,
    facility: Option<Field>,
    ctx: Field,
    flags: Field,
    caller: Option<Field>,
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
        // Widest each field may be: its size in the header this crate writes (its Rust type).
        let mut found: [Option<Field>; layout::ALL.len()] = [None; layout::ALL.len()];
        for i in 0..count {
            let e = at.checked_add(i.checked_mul(entry).ok_or(at)?).ok_or(at)?;
            let (Some(fid), Some(fat), Some(fsize)) = (
                table.get(e).copied(),
                table.get(e + 1).copied(),
                table.get(e + 2).copied(),
            ) else {
                return Err(e);
            };
            let Some(max) = layout::ALL
                .get(fid as usize)
                .map(|&(_, size)| size as usize)
            else {
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
        let opt = |i: u8| found.get(i as usize).copied().flatten();
        let need = |i: u8| opt(i).ok_or(at);
        Ok(Layout {
            header_bytes: rh,
            ts_ns: need(id::TS_NS)?,
            src_seq: opt(id::SRC_SEQ),
            len: need(id::LEN)?,
            cpu: need(id::CPU)?,
            level: need(id::LEVEL)?,
            facility: opt(id::FACILITY),
            ctx: need(id::CTX)?,
            flags: need(id::FLAGS)?,
            caller: opt(id::CALLER),
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
            caller: opt(self.caller)? as u32,
            reserved: 0,
        })
    }
}

/// Decodes the entry at `at` (no CRC check); returns it and its size.
pub(super) fn decode_record<'a>(
    bytes: &'a [u8],
    at: usize,
    l: &Layout,
) -> Option<(ImageRecord<'a>, usize)> {
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
    if !(VERSION_MIN..=VERSION).contains(&version) {
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
