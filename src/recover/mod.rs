//! Rebuilding the log from raw memory, when the crash path itself dies.
//!
//! # Why
//!
//! The handover image is written by the crashing CPU at the very end of the crash path. If that CPU
//! takes a second fault, a machine check or a watchdog reset during the quiesce or the drain, there
//! is no image, and most of the log — still unmerged in the per-CPU rings — would be lost with it.
//! But the rings are still in memory: a firmware-assisted dump, a capture kernel that inherits the
//! old kernel's RAM, or a hypervisor's `dump-guest-memory` all preserve them. Linux publishes its
//! printk ringbuffer's layout in `vmcoreinfo` so that `makedumpfile --dump-dmesg` and `crash`'s
//! `log` can rebuild dmesg from a vmcore; this module does the same for per-CPU rings that were
//! never merged.
//!
//! # How
//!
//! 1. At boot the kernel writes a **descriptor** ([`Log::describe`] into a [`LogDescriptor`]): magic,
//!    version, pointer width, byte order, the record header's field table, and the address and size
//!    of the main log, of every (CPU, depth) ring and of the words the crash drain reads beside them
//!    (the flush's cursors and loss counters, context kinds, the crashing CPU, optionally the crash
//!    sequence's check-in flags). It is never written again, so the dying kernel need not touch it.
//! 2. A reader gets the dump as a [`Memory`] (the dead kernel's addresses mapped to words: a
//!    [`RawDump`] taken at a base address, or a [`PiecewiseDump`]) and either the descriptor's
//!    address or nothing: [`scan`] then looks for the magic in every word of the dump.
//! 3. [`RecoveredLog::open`] checks the descriptor against the dump; [`RecoveredLog::write_image`]
//!    then runs **the crash drain itself** — the same snapshot, merge and accounting as
//!    [`Log::drain_on_crash`], over the rings as found — into a handover image, which everything that
//!    reads images (`dmesg`, the capture stages) reads unchanged. A record frozen mid-write reads as
//!    torn, an overwritten one as overwritten, exactly as live: the rings' sequence words say so.
//!
//! # Trust
//!
//! None. The dump may be damaged or hostile: every field of the descriptor is range-checked, every
//! address must be inside the dump and aligned, regions must not overlap (two sources sharing memory
//! would deliver records twice), two checksums catch damage, the record header layout must be this
//! crate's. Failures are a typed [`RecoverError`], never a panic; rings that pass the checks but
//! hold garbage read as damaged records (counted), as any ring read does. Time and memory are
//! bounded: the scan is one pass over the dump, opening is O(n log n) in the number of rings, the
//! drain is bounded by [`DrainReport::bound`]; the caller provides all memory (a [`DrainSource`] per
//! ring, the image's region). The format has no pointers to pointers, so nothing can cycle.
//!
//! ```
//! use nmilog::{handover, host::HostPlatform, Level, Log};
//! use nmilog::recover::{self, DrainSource, LogDescriptor, RawDump, RecoveredLog};
//! use std::alloc::{alloc_zeroed, Layout};
//! use nmilog::recover::AtomicUsize;
//!
//! type L = Log<HostPlatform, 2, 256, 1024>;
//! // The kernel's memory: a log and its descriptor, zero-filled like `.bss`.
//! #[repr(C)]
//! struct Kernel {
//!     log: L,
//!     desc: LogDescriptor<{ L::DESCRIPTOR_WORDS }>,
//! }
//! let layout = Layout::new::<Kernel>();
//! // SAFETY: a non-zero-sized layout.
//! let base = unsafe { alloc_zeroed(layout) };
//! // SAFETY: aligned and sized for `Kernel`; all-zero bytes are a valid `Kernel` (atomics, zero in
//! // `Log::new(HostPlatform::new(0))` and `LogDescriptor::new()`; the flush's record buffer is
//! // plain integers and bytes, valid all-zero too).
//! let k: &Kernel = unsafe { &*(base as *const Kernel) };
//! k.log.platform().set_cpu_count(2);
//! HostPlatform::register_cpu(0);
//! k.desc.describe(&k.log, None).unwrap(); // at boot
//! k.log.crash_enter().unwrap();
//! k.log.append_raw(Level::Emerg, 0, 0, b"Oops").unwrap(); // ...and then the crash path dies
//!
//! // The capture side has only the memory, and the address it was at.
//! // SAFETY: the same zero-initialised allocation, read as words (any bits are a valid word).
//! let words: &[AtomicUsize] = unsafe {
//!     std::slice::from_raw_parts(base as *const AtomicUsize, layout.size() / size_of::<usize>())
//! };
//! let dump = RawDump::new(base as usize, words);
//! let log = RecoveredLog::open(&dump, recover::find(&dump).unwrap()).unwrap();
//! let scratch: Vec<DrainSource> = (0..log.sources()).map(|_| DrainSource::new()).collect();
//! let mut region = vec![0u8; 1 << 16];
//! let rep = log.write_image(&scratch, &mut region).unwrap();
//! let image = handover::parse(&region[..rep.len]).unwrap();
//! assert_eq!(image.records().next().unwrap().text(), Some("Oops"));
//! ```

use core::fmt;

use crate::handover::{HandoverError, ImageReport};
use crate::log::{CrashSink, DrainReport};

#[allow(unused_imports)] // doc links
use crate::Log;

mod descriptor;
mod memory;
mod reader;

pub use self::descriptor::{
    descriptor_words, seal, DescribeError, Descriptor, LogDescriptor, StopFlags, ENDIAN_PROBE,
    ENTRY_WORDS, HEADER_WORDS, MAGIC, MAX_CPUS, VERSION,
};
pub use self::memory::{Memory, PiecewiseDump, RawDump};
pub use self::reader::RecoveredLog;
pub use crate::log::DrainSource;
/// The word type of a dump and of a descriptor: `portable_atomic::AtomicUsize` (the crate's atomics on
/// every target; the same size, alignment and bit validity as `usize`).
pub use portable_atomic::AtomicUsize;

/// Why a log could not be recovered from a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoverError {
    /// The scan found no valid descriptor in the dump.
    NoDescriptor,
    /// No descriptor magic at the given address.
    NoMagic {
        /// The address.
        addr: usize,
    },
    /// Something the descriptor names is not (wholly, or aligned) in the dump.
    OutsideDump {
        /// What.
        what: &'static str,
        /// Its address.
        addr: usize,
    },
    /// The descriptor was written in the other byte order: convert the dump's words as you load it
    /// (each word, byte-swapped) and try again.
    ForeignEndian,
    /// The descriptor was written with another word size (this reader reads its own).
    WordSize {
        /// The dump's word size in bytes.
        bytes: usize,
    },
    /// A descriptor version this reader does not know.
    Version {
        /// The version found.
        found: usize,
    },
    /// A checksum does not match: the descriptor is damaged.
    Checksum {
        /// Which part.
        what: &'static str,
    },
    /// The dumped kernel's record or ring layout is not this crate's.
    LayoutMismatch,
    /// A field of the descriptor is out of range.
    Corrupt {
        /// Which field.
        what: &'static str,
    },
    /// A region the descriptor names is not a ring (its size is not a power of two of at least 32
    /// words plus the ring's state words).
    BadRing {
        /// The CPU, or `usize::MAX` for the main log.
        cpu: usize,
        /// The depth.
        depth: usize,
    },
    /// Two regions overlap (sources sharing memory would deliver records twice).
    Overlap {
        /// The start of the later one.
        addr: usize,
    },
    /// The scratch memory has fewer [`DrainSource`]s than the log has rings.
    ScratchTooSmall {
        /// Rings in the log.
        needed: usize,
    },
    /// The image could not be written.
    Image(HandoverError),
}

impl fmt::Display for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoverError::NoDescriptor => f.write_str("no nmilog descriptor in the dump"),
            RecoverError::NoMagic { addr } => write!(f, "no descriptor magic at {addr:#x}"),
            RecoverError::OutsideDump { what, addr } => {
                write!(
                    f,
                    "{what} at {addr:#x} is not (wholly, aligned) in the dump"
                )
            }
            RecoverError::ForeignEndian => {
                f.write_str("the dump is in the other byte order (convert its words first)")
            }
            RecoverError::WordSize { bytes } => write!(
                f,
                "the dump has {bytes}-byte words; this reader reads {}-byte words",
                core::mem::size_of::<usize>()
            ),
            RecoverError::Version { found } => write!(f, "unknown descriptor version {found}"),
            RecoverError::Checksum { what } => write!(f, "descriptor {what} checksum mismatch"),
            RecoverError::LayoutMismatch => {
                f.write_str("the dumped kernel's record or ring layout is not this reader's")
            }
            RecoverError::Corrupt { what } => write!(f, "descriptor field out of range: {what}"),
            RecoverError::BadRing { cpu, depth } if *cpu == usize::MAX && *depth == 0 => {
                f.write_str("the main log's region is not a ring")
            }
            RecoverError::BadRing { cpu, depth } => {
                write!(f, "the region of cpu {cpu} depth {depth} is not a ring")
            }
            RecoverError::Overlap { addr } => {
                write!(f, "regions overlap (one starts at {addr:#x})")
            }
            RecoverError::ScratchTooSmall { needed } => {
                write!(f, "scratch memory for {needed} rings needed")
            }
            RecoverError::Image(e) => write!(f, "handover image: {e}"),
        }
    }
}

impl core::error::Error for RecoverError {}

impl From<HandoverError> for RecoverError {
    fn from(e: HandoverError) -> Self {
        RecoverError::Image(e)
    }
}

/// What [`scan`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// The first valid descriptor (in address order).
    pub descriptor: Option<Descriptor>,
    /// Valid descriptors found (more than one: stale ones from an earlier boot may be in memory;
    /// the first is used).
    pub valid: usize,
    /// Places where the magic was found but the header did not check out (the magic also appears in
    /// the kernel's own code or data).
    pub rejected: usize,
    /// Why the first rejected one was rejected.
    pub first_rejection: Option<RecoverError>,
}

/// Scans every word of `mem` for the descriptor's magic and checks each candidate's header (constant
/// time each): one pass over the dump, no allocation.
///
/// ```
/// use nmilog::recover::{scan, AtomicUsize, RawDump};
/// let words: Vec<AtomicUsize> = (0..1024).map(|_| AtomicUsize::new(0)).collect();
/// let found = scan(&RawDump::new(0x10000, &words[..]));
/// assert_eq!((found.descriptor, found.valid, found.rejected), (None, 0, 0));
/// ```
pub fn scan<M: Memory + ?Sized>(mem: &M) -> ScanReport {
    let magic0 = {
        let mut b = [0u8; core::mem::size_of::<usize>()];
        b.copy_from_slice(&MAGIC[..core::mem::size_of::<usize>()]);
        usize::from_ne_bytes(b)
    };
    let mut rep = ScanReport::default();
    let w = core::mem::size_of::<usize>();
    mem.for_each_piece(&mut |base, words| {
        for (i, word) in words.iter().enumerate() {
            let v = word.load(crate::sync::Ordering::Relaxed);
            if v != magic0 && v != magic0.swap_bytes() {
                continue;
            }
            let Some(addr) = i.checked_mul(w).and_then(|o| base.checked_add(o)) else {
                break;
            };
            match Descriptor::read(mem, addr) {
                Ok(d) => {
                    rep.valid += 1;
                    rep.descriptor.get_or_insert(d);
                }
                Err(RecoverError::NoMagic { .. }) => {}
                Err(e) => {
                    rep.rejected += 1;
                    rep.first_rejection.get_or_insert(e);
                }
            }
        }
        true
    });
    rep
}

/// [`scan`], then the first valid descriptor, or [`RecoverError::NoDescriptor`] (with the first
/// rejection's reason if there was one).
pub fn find<M: Memory + ?Sized>(mem: &M) -> Result<Descriptor, RecoverError> {
    let rep = scan(mem);
    rep.descriptor
        .ok_or(rep.first_rejection.unwrap_or(RecoverError::NoDescriptor))
}

impl<'m, M: Memory + ?Sized> RecoveredLog<'m, M> {
    /// Runs the crash drain over the recovered log into `sink` (see [`Log::drain_on_crash`]), in
    /// `scratch` (at least [`sources`](Self::sources) entries). CPUs count as stopped per the
    /// dumped kernel's check-in flags if its descriptor names them, else all of them.
    pub fn drain<S: CrashSink + ?Sized>(
        &self,
        scratch: &[DrainSource],
        sink: &mut S,
    ) -> Result<DrainReport, RecoverError> {
        self.with_drain_mem(scratch, |mem, stopped| {
            Ok(crate::log::drain(self, mem, Some(stopped), sink))
        })
    }

    /// Runs `f` with drain memory over `scratch` (checked first) and the dumped kernel's view of
    /// which CPUs stopped.
    fn with_drain_mem<R>(
        &self,
        scratch: &[DrainSource],
        f: impl FnOnce(crate::log::DrainMem<'_>, &dyn Fn(usize) -> bool) -> Result<R, RecoverError>,
    ) -> Result<R, RecoverError> {
        self.check_scratch(scratch)?;
        let fixed = crate::log::DrainFixed::new();
        let mem = crate::log::DrainMem {
            fixed: &fixed,
            sources: scratch,
        };
        f(mem, &|c: usize| self.stopped(c))
    }

    /// Writes the recovered log as a handover image into `out` (see
    /// [`handover::write_image`](crate::handover::write_image): the records in order, each once,
    /// the accounting records, the loss counters, which CPUs were not stopped), in `scratch` (at
    /// least [`sources`](Self::sources) entries).
    pub fn write_image(
        &self,
        scratch: &[DrainSource],
        out: &mut [u8],
    ) -> Result<ImageReport, RecoverError> {
        self.with_drain_mem(scratch, |mem, stopped| {
            Ok(crate::handover::write_from(
                self,
                mem,
                out,
                stopped,
                &mut |_| {},
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::vec::Vec;

    use super::*;
    use crate::doc_support::OneCpu;
    use crate::{handover, Level, Log};

    type L = Log<OneCpu, 1, 64, 256>;
    #[repr(C)]
    struct Kernel {
        log: L,
        desc: LogDescriptor<{ L::DESCRIPTOR_WORDS }>,
    }

    /// A kernel in zero-filled memory, run through `f`, then its memory read back as a dump.
    fn with_kernel(f: impl FnOnce(&Kernel, RawDump<'_>)) {
        let layout = Layout::new::<Kernel>();
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { alloc_zeroed(layout) };
        assert!(!p.is_null());
        {
            // SAFETY: aligned, sized, zero-filled: all-zero bytes are a valid `Kernel` (atomics, and
            // the flush's record buffer: plain integers and bytes; `OneCpu` has no fields).
            let k: &Kernel = unsafe { &*(p as *const Kernel) };
            // SAFETY: the same live allocation read as words (every bit pattern is a valid word;
            // the bytes were initialised by `alloc_zeroed`).
            let words = unsafe {
                core::slice::from_raw_parts(
                    p as *const AtomicUsize,
                    layout.size() / core::mem::size_of::<usize>(),
                )
            };
            f(k, RawDump::new(p as usize, words));
        }
        // SAFETY: allocated above with this layout; no reference to it outlives the block.
        unsafe { dealloc(p, layout) };
    }

    #[test]
    fn a_log_rebuilt_from_its_memory_is_the_log_the_crash_drain_writes() {
        with_kernel(|k, dump| {
            k.desc.describe(&k.log, None).unwrap();
            for i in 0..40u8 {
                let _ = k.log.append(Level::Info, 0, 0, &[b'a' + i % 26; 9]);
            }
            k.log.crash_enter().unwrap();
            k.log.append(Level::Emerg, 0, 0, b"last").unwrap();
            let rec = RecoveredLog::open(&dump, find(&dump).unwrap()).unwrap();
            let scratch: Vec<DrainSource> =
                (0..rec.sources()).map(|_| DrainSource::new()).collect();
            let mut a = std::vec![0u8; L::MAX_IMAGE_BYTES];
            let ra = rec.write_image(&scratch, &mut a).unwrap();
            let mut b = std::vec![0u8; L::MAX_IMAGE_BYTES];
            let lb = handover::write_image(&k.log, &mut b, &|_| true).unwrap();
            assert_eq!(&a[..ra.len], &b[..lb]);
            assert!(ra.records > 1);
            // Too little scratch, and a descriptor address that is not one.
            assert_eq!(
                rec.write_image(&scratch[..0], &mut a).unwrap_err(),
                RecoverError::ScratchTooSmall { needed: 5 } // one CPU, five depths
            );
            assert!(matches!(
                Descriptor::read(&dump, dump.base() + 8),
                Err(RecoverError::NoMagic { .. })
            ));
        });
    }
}
