//! The handover image: what the crashing kernel leaves in preserved memory for the capture kernel.
//!
//! After [`Log::drain_on_crash`](crate::Log::drain_on_crash) has merged every per-CPU ring into the main log, [`write_image`]
//! serialises the main log (from its oldest record), the per-ring loss counters and the layout of the
//! record header into a caller-provided byte region. The capture kernel (or a userspace tool such as
//! `examples/dmesg/`) reads it with [`parse`], which trusts nothing: every field is bounds-checked,
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
//! |     24 |    8 | calls dropped for a bad CPU id ([`Log::bad_cpu_dropped`](crate::Log::bad_cpu_dropped))                 |
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
//! # Layout
//!
//! * `format`: the format's constants, sizes and [`HandoverError`] — what writer and reader share;
//! * `write`: [`write_image`], the crashing kernel's side;
//! * `parse`: [`parse`]/[`parse_located`], which validate an image and decode its record header
//!   layout table;
//! * `image`: the parsed [`Image`], its [`Records`] and [`ImageRecord`]s.
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
//!
//! let mut region = [0u8; 4096];
//! let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
//!
//! // …kexec into the capture kernel…
//! let image = handover::parse(&region[..n]).unwrap();
//! assert!(image.corruption().is_none());
//! let texts: Vec<&str> = image.records().filter_map(|r| r.text()).collect();
//! assert_eq!(texts, ["hello", "Kernel panic"]);
//! ```

mod format;
mod image;
mod parse;
mod write;

pub use format::{
    fixed_size, max_image_size, record_size, HandoverError, CORE_BYTES, MAGIC, VERSION,
};
pub use image::{Image, ImageRecord, Records};
pub use parse::{parse, parse_located};
pub(crate) use write::write_from;
pub use write::{write_image, write_image_report, write_image_with_hook, ImageReport, ImageStep};
