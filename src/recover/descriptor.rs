//! The descriptor: where a log's words are, published in memory at boot so that a reader of a raw
//! memory dump can find and read the log without the kernel's help (Linux's `vmcoreinfo` plays this
//! part for its printk ringbuffer).
//!
//! Contract: written once at boot ([`Log::describe`]), before any crash, and never again, so a dying
//! kernel need not touch it. Its format (the README's "Memory descriptor" table) is native words of
//! the kernel's pointer width and byte order; the first eight bytes are the magic
//! `nmilogDS`, written last. The reader ([`Descriptor::read`]) trusts nothing in it: every field is
//! range-checked, every address must lie in the dump, two checksums (one over the fixed header,
//! checked while scanning; one over the tables) catch damage. Reading it costs time bounded by its
//! size, which is bounded by the dump's.

use super::memory::Memory;
use super::RecoverError;
use crate::record::{layout, HEADER_BYTES};
use crate::ring::RING_STATE_WORDS;
use crate::sync::{array_of, const_or_loom_fn, AtomicUsize, Ordering};
use crate::{Log, Platform};

const W: usize = core::mem::size_of::<usize>();

/// The descriptor's first eight bytes.
pub const MAGIC: [u8; 8] = *b"nmilogDS";
/// The format version this crate writes and reads. Version 3: the log's main-log records carry the
/// flush's overwritten count (`Header::reserved`), which the crash drain pairs with the threshold a
/// record sets; a version-2 kernel's records carry 0 there, which would read as a count of 0, so
/// versions before 3 are refused ([`RecoverError::Version`](super::RecoverError::Version)), as
/// version 1 (no `moved` count) was by version 2.
pub const VERSION: usize = 3;
/// Read back as this value, the descriptor was written in the reader's byte order.
pub const ENDIAN_PROBE: usize = 0x0102_0304;
/// Words the magic takes.
pub(crate) const MAGIC_WORDS: usize = 8 / W;

/// Header word indices, after the magic.
pub(crate) mod h {
    pub const VERSION: usize = 0;
    pub const ENDIAN: usize = 1;
    pub const WORD_BYTES: usize = 2;
    pub const TOTAL_WORDS: usize = 3;
    pub const HEAD_SUM: usize = 4;
    pub const TABLE_SUM: usize = 5;
    pub const CPUS: usize = 6;
    pub const DEPTH: usize = 7;
    pub const RING_STATE_WORDS: usize = 8;
    pub const HEADER_BYTES: usize = 9;
    pub const FIELDS: usize = 10;
    pub const MAIN_ADDR: usize = 11;
    pub const MAIN_WORDS: usize = 12;
    pub const CRASH_CPU_ADDR: usize = 13;
    pub const BAD_CPU_ADDR: usize = 14;
    pub const STOP_ADDR: usize = 15;
    pub const STOP_STRIDE: usize = 16;
    pub const ENTRY_WORDS: usize = 17;
    pub const UNREGISTERED_ADDR: usize = 18;
    /// Header words after the magic.
    pub const COUNT: usize = 19;
}

/// Source entry word indices.
pub(crate) mod e {
    pub const RING_ADDR: usize = 0;
    pub const RING_WORDS: usize = 1;
    pub const FLUSHED_SEQ_ADDR: usize = 2;
    pub const FLUSH_OVERWRITTEN_ADDR: usize = 3;
    pub const KIND_ADDR: usize = 4;
    pub const OVERFLOW_ADDR: usize = 5;
    pub const FLUSH_MOVED_ADDR: usize = 6;
    /// Words per entry.
    pub const COUNT: usize = 7;
}

/// Words of the descriptor of a log with `cpus` CPUs and `depth` rings per CPU.
///
/// ```
/// use nmilog::recover::descriptor_words;
/// let w = descriptor_words(4, 4);
/// assert!(w > 4 * 4 * 7); // seven words per ring
/// ```
pub const fn descriptor_words(cpus: usize, depth: usize) -> usize {
    MAGIC_WORDS + h::COUNT + layout::ALL.len() + cpus * depth * e::COUNT
}

/// The checksum of `words` (FNV-1a over words).
pub(crate) fn checksum(words: impl Iterator<Item = usize>) -> usize {
    #[cfg(target_pointer_width = "64")]
    const P: (usize, usize) = (0xcbf2_9ce4_8422_2325, 0x0000_0100_0000_01b3);
    #[cfg(not(target_pointer_width = "64"))]
    const P: (usize, usize) = (0x811c_9dc5, 0x0100_0193);
    words.fold(P.0, |h, w| (h ^ w).wrapping_mul(P.1))
}

/// Words of a descriptor's fixed header, after the magic (the README's table: `m+0` to `m+18`).
pub const HEADER_WORDS: usize = h::COUNT;

/// Words of each source entry (the README's table: ring address and words, the addresses of the
/// flush's cursor `seq`, overwritten count, context kind, nesting overflow, moved count).
///
/// ```
/// assert_eq!(nmilog::recover::ENTRY_WORDS, 7);
/// ```
pub const ENTRY_WORDS: usize = e::COUNT;

/// Recomputes both checksums of a descriptor held as plain words (`words[0]` is the first magic
/// word; its length word bounds the tables, cut at `words.len()`): for a kernel that builds its
/// descriptor by other means than [`Log::describe`] (one not written in Rust), and for tests that
/// build descriptors that lie and still pass their checksums. Does nothing to a slice too short
/// for the header.
///
/// ```
/// use nmilog::recover::{seal, HEADER_WORDS};
/// let m = 8 / core::mem::size_of::<usize>();
/// let mut words = vec![0usize; m + HEADER_WORDS + 4];
/// words[m + 3] = words.len(); // the length word
/// seal(&mut words);
/// let sums = (words[m + 4], words[m + 5]);
/// words[m + 6] ^= 1; // an edit...
/// seal(&mut words);
/// assert_ne!((words[m + 4], words[m + 5]), sums); // ...resealed
/// ```
pub fn seal(words: &mut [usize]) {
    let hd = MAGIC_WORDS;
    if words.len() < hd + h::COUNT {
        return;
    }
    let end = words[hd + h::TOTAL_WORDS].clamp(hd + h::COUNT, words.len());
    words[hd + h::TABLE_SUM] = checksum(words[hd + h::COUNT..end].iter().copied());
    let head = (0..h::COUNT).map(|i| if i == h::HEAD_SUM { 0 } else { words[hd + i] });
    words[hd + h::HEAD_SUM] = checksum(head);
}

/// Where a reader finds whether each CPU stopped: one word per CPU, `stride` bytes apart, non-zero
/// once the CPU checked in after the crash NMI (the crash sequence's check-in flags). With it, a
/// log recovered from memory says which CPUs were not stopped, as the live drain would have; without
/// it, every CPU counts as stopped (a dump is final).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopFlags {
    first: usize,
    stride: usize,
}

impl StopFlags {
    /// CPU 0's flag is the word at address `first`; CPU `n`'s is `n * stride` bytes after it
    /// (`stride` a non-zero multiple of the word size).
    ///
    /// ```
    /// use nmilog::recover::StopFlags;
    /// use std::sync::atomic::AtomicUsize;
    /// static CHECKED_IN: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
    /// let flags = StopFlags::new(CHECKED_IN.as_ptr() as usize, size_of::<AtomicUsize>());
    /// # let _ = flags;
    /// ```
    pub const fn new(first: usize, stride: usize) -> Self {
        StopFlags { first, stride }
    }
}

/// Why [`Log::describe`] wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescribeError {
    /// The descriptor needs this many words.
    TooSmall {
        /// Words needed.
        needed: usize,
    },
    /// A log sized at boot whose arena is not attached yet (describe it after
    /// [`Log::attach_arena`]).
    NotReady,
}

impl core::fmt::Display for DescribeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DescribeError::TooSmall { needed } => {
                write!(f, "the descriptor needs {needed} words")
            }
            DescribeError::NotReady => f.write_str("the log's arena is not attached yet"),
        }
    }
}

impl core::error::Error for DescribeError {}

/// Static room for the descriptor of a log ([`Log::DESCRIPTOR_WORDS`] words): `const`, so it can be
/// a `static` (in `.bss`, written once at boot by [`describe`](Self::describe)).
///
/// ```
/// use nmilog::{host::HostPlatform, recover::LogDescriptor, Log};
/// type L = Log<HostPlatform, 2, 256, 1024>;
/// static LOG: L = Log::new(HostPlatform::new(2));
/// static DESC: LogDescriptor<{ L::DESCRIPTOR_WORDS }> = LogDescriptor::new();
/// DESC.describe(&LOG, None).unwrap(); // at boot, once the CPU count is final
/// assert_eq!(&DESC.words()[0].load(std::sync::atomic::Ordering::Relaxed).to_ne_bytes()[..4], b"nmil");
/// ```
pub struct LogDescriptor<const WORDS: usize> {
    words: [AtomicUsize; WORDS],
}

impl<const WORDS: usize> core::fmt::Debug for LogDescriptor<WORDS> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LogDescriptor")
            .field("address", &self.address())
            .field("words", &WORDS)
            .finish()
    }
}

impl<const WORDS: usize> Default for LogDescriptor<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> LogDescriptor<WORDS> {
    const_or_loom_fn! {
        /// Zeroed room (no magic: a reader ignores it until [`describe`](Self::describe)).
        pub fn new() -> Self {
            LogDescriptor { words: array_of!(AtomicUsize::new(0); WORDS) }
        }
    }

    /// Describes `log` here (see [`Log::describe`]).
    pub fn describe<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    >(
        &self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        stop: Option<StopFlags>,
    ) -> Result<usize, DescribeError> {
        log.describe(&self.words, stop)
    }

    /// The descriptor's words.
    pub fn words(&self) -> &[AtomicUsize] {
        &self.words
    }

    /// Its address (what a capture stage is told, like the address of Linux's `vmcoreinfo` note).
    pub fn address(&self) -> usize {
        self.words.as_ptr() as usize
    }
}

fn addr_of(w: &AtomicUsize) -> usize {
    w as *const AtomicUsize as usize
}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Words of this log's descriptor.
    pub const DESCRIPTOR_WORDS: usize = descriptor_words(CPUS, DEPTH);

    /// Writes this log's descriptor into `into` (at least [`DESCRIPTOR_WORDS`](Self::DESCRIPTOR_WORDS)
    /// words, word-aligned memory that survives into the dump — a `static`
    /// [`LogDescriptor`]): the address and size of the main log and of every (CPU, depth) ring, and
    /// of the words the crash drain reads beside them, so that [`recover`](crate::recover) can
    /// rebuild the log from a raw memory dump if the crash path dies before the handover image is
    /// written. Call it once at boot, after the CPU count is final, and never again; `stop` tells a
    /// reader where the crash sequence's check-in flags are. The magic is written last. Returns the
    /// words written.
    ///
    /// ```
    /// use nmilog::{host::HostPlatform, Level, Log};
    /// use nmilog::recover::{self, Memory, RawDump};
    /// use nmilog::recover::AtomicUsize;
    /// type L = Log<HostPlatform, 1, 256, 1024>;
    /// let log: L = Log::new(HostPlatform::new(1));
    /// let desc: Vec<AtomicUsize> = (0..L::DESCRIPTOR_WORDS).map(|_| AtomicUsize::new(0)).collect();
    /// assert_eq!(log.describe(&desc, None), Ok(L::DESCRIPTOR_WORDS));
    /// assert!(log.describe(&desc[..3], None).is_err());
    /// ```
    pub fn describe(
        &self,
        into: &[AtomicUsize],
        stop: Option<StopFlags>,
    ) -> Result<usize, DescribeError> {
        if !self.main_attached() {
            return Err(DescribeError::NotReady);
        }
        let cpus = self.platform().cpu_count().min(CPUS);
        let total = descriptor_words(cpus, DEPTH);
        let Some(out) = into.get(..total) else {
            return Err(DescribeError::TooSmall {
                needed: descriptor_words(CPUS, DEPTH),
            });
        };
        let set = |i: usize, v: usize| out[i].store(v, Ordering::Relaxed);
        // No magic until the rest is written.
        for w in &out[..MAGIC_WORDS] {
            w.store(0, Ordering::Relaxed);
        }
        let hd = MAGIC_WORDS;
        let main = self.main_ring();
        let (stop_addr, stop_stride) = stop.map_or((0, 0), |s| (s.first, s.stride));
        let head = [
            (h::VERSION, VERSION),
            (h::ENDIAN, ENDIAN_PROBE),
            (h::WORD_BYTES, W),
            (h::TOTAL_WORDS, total),
            (h::HEAD_SUM, 0),
            (h::TABLE_SUM, 0),
            (h::CPUS, cpus),
            (h::DEPTH, DEPTH),
            (h::RING_STATE_WORDS, RING_STATE_WORDS),
            (h::HEADER_BYTES, HEADER_BYTES),
            (h::FIELDS, layout::ALL.len()),
            (h::MAIN_ADDR, main as *const _ as *const u8 as usize),
            (h::MAIN_WORDS, RING_STATE_WORDS + main.len()),
            (h::CRASH_CPU_ADDR, addr_of(self.crash_cpu_word())),
            (h::BAD_CPU_ADDR, addr_of(self.bad_cpu_word())),
            (h::STOP_ADDR, stop_addr),
            (h::STOP_STRIDE, stop_stride),
            (h::ENTRY_WORDS, e::COUNT),
            (h::UNREGISTERED_ADDR, addr_of(self.unregistered_word())),
        ];
        for (i, v) in head {
            set(hd + i, v);
        }
        let mut t = hd + h::COUNT;
        for (i, (o, s)) in layout::ALL.iter().enumerate() {
            set(t, i | (*o as usize) << 8 | (*s as usize) << 16);
            t += 1;
        }
        for c in 0..cpus {
            for d in 0..DEPTH {
                if let Some(sw) = self.source_words(c, d) {
                    set(t + e::RING_ADDR, sw.ring as *const _ as *const u8 as usize);
                    set(t + e::RING_WORDS, RING_STATE_WORDS + sw.ring.len());
                    set(t + e::FLUSHED_SEQ_ADDR, addr_of(sw.flushed_seq));
                    set(t + e::FLUSH_OVERWRITTEN_ADDR, addr_of(sw.flush_overwritten));
                    set(t + e::KIND_ADDR, sw.kind.map_or(0, addr_of));
                    set(t + e::OVERFLOW_ADDR, sw.overflow.map_or(0, addr_of));
                    set(t + e::FLUSH_MOVED_ADDR, addr_of(sw.flush_moved));
                }
                t += e::COUNT;
            }
        }
        let words = |r: core::ops::Range<usize>| out[r].iter().map(|w| w.load(Ordering::Relaxed));
        set(hd + h::TABLE_SUM, checksum(words(hd + h::COUNT..total)));
        set(hd + h::HEAD_SUM, checksum(words(hd..hd + h::COUNT)));
        // The magic last: a reader finds a whole descriptor or none. LMM(desc:A): Release, pairs
        // with LMM(desc:B) in `Descriptor::read`: a reader in the same memory (a capture stage of
        // the running kernel) that sees the magic sees every word written above.
        for (w, chunk) in out[..MAGIC_WORDS].iter().zip(MAGIC.chunks_exact(W)) {
            let mut b = [0u8; W];
            b.copy_from_slice(chunk);
            w.store(usize::from_ne_bytes(b), Ordering::Release);
        }
        Ok(total)
    }
}

/// A descriptor found in a dump, its header checked (magic, version, byte order, word size,
/// geometry, header checksum). [`RecoveredLog::open`](super::RecoveredLog::open) checks the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub(crate) addr: usize,
    pub(crate) cpus: usize,
    pub(crate) depth: usize,
    pub(crate) total: usize,
    pub(crate) main: (usize, usize),
    pub(crate) crash_cpu_addr: usize,
    pub(crate) bad_cpu_addr: usize,
    pub(crate) unregistered_addr: usize,
    pub(crate) stop: (usize, usize),
}

/// The most CPUs a descriptor may name (record headers carry 16-bit CPU numbers).
pub const MAX_CPUS: usize = 1 << 16;

impl Descriptor {
    /// Reads and checks the header of the descriptor at `addr` (not its tables: see
    /// [`RecoveredLog::open`](super::RecoveredLog::open)). Constant time.
    pub fn read<M: Memory + ?Sized>(mem: &M, addr: usize) -> Result<Descriptor, RecoverError> {
        let head = mem
            .words(addr, MAGIC_WORDS + h::COUNT)
            .ok_or(RecoverError::OutsideDump {
                what: "descriptor header",
                addr,
            })?;
        // LMM(desc:B): Acquire, pairs with LMM(desc:A) in `describe`: the header and tables read
        // after a magic that is seen were written before it.
        let magic_words: [usize; MAGIC_WORDS] =
            core::array::from_fn(|i| head[i].load(Ordering::Acquire));
        let magic_as = |swap: bool| {
            let mut magic = [0u8; 8];
            for (v, chunk) in magic_words.iter().zip(magic.chunks_exact_mut(W)) {
                let v = *v;
                let v = if swap { v.swap_bytes() } else { v };
                chunk.copy_from_slice(&v.to_ne_bytes());
            }
            magic == MAGIC
        };
        if !magic_as(false) {
            return Err(if magic_as(true) {
                RecoverError::ForeignEndian
            } else {
                RecoverError::NoMagic { addr }
            });
        }
        let hw = |i: usize| head[MAGIC_WORDS + i].load(Ordering::Relaxed);
        let endian = hw(h::ENDIAN);
        if endian != ENDIAN_PROBE {
            if endian == ENDIAN_PROBE.swap_bytes() || hw(h::WORD_BYTES).swap_bytes() == W {
                return Err(RecoverError::ForeignEndian);
            }
            return Err(RecoverError::Corrupt {
                what: "byte-order probe",
            });
        }
        if hw(h::WORD_BYTES) != W {
            return Err(RecoverError::WordSize {
                bytes: hw(h::WORD_BYTES),
            });
        }
        if hw(h::VERSION) != VERSION {
            return Err(RecoverError::Version {
                found: hw(h::VERSION),
            });
        }
        let head_sum = checksum((0..h::COUNT).map(|i| if i == h::HEAD_SUM { 0 } else { hw(i) }));
        if head_sum != hw(h::HEAD_SUM) {
            return Err(RecoverError::Checksum { what: "header" });
        }
        if hw(h::RING_STATE_WORDS) != RING_STATE_WORDS
            || hw(h::HEADER_BYTES) != HEADER_BYTES
            || hw(h::FIELDS) != layout::ALL.len()
            || hw(h::ENTRY_WORDS) != e::COUNT
        {
            return Err(RecoverError::LayoutMismatch);
        }
        let (cpus, depth) = (hw(h::CPUS), hw(h::DEPTH));
        if cpus == 0 || cpus > MAX_CPUS || depth == 0 || depth > 15 {
            return Err(RecoverError::Corrupt {
                what: "CPU count or depth",
            });
        }
        let total = hw(h::TOTAL_WORDS);
        if total != descriptor_words(cpus, depth) {
            return Err(RecoverError::Corrupt {
                what: "descriptor length",
            });
        }
        Ok(Descriptor {
            addr,
            cpus,
            depth,
            total,
            main: (hw(h::MAIN_ADDR), hw(h::MAIN_WORDS)),
            crash_cpu_addr: hw(h::CRASH_CPU_ADDR),
            bad_cpu_addr: hw(h::BAD_CPU_ADDR),
            unregistered_addr: hw(h::UNREGISTERED_ADDR),
            stop: (hw(h::STOP_ADDR), hw(h::STOP_STRIDE)),
        })
    }

    /// The descriptor's address.
    pub fn address(&self) -> usize {
        self.addr
    }

    /// CPUs the described log drains.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Rings per CPU.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The descriptor's length in words.
    pub fn total_words(&self) -> usize {
        self.total
    }

    /// Calls `f(addr, words)` for every region the descriptor names: itself, the main log, every
    /// ring, and every word the drain reads (one call each, unsorted; they may be adjacent). A tool
    /// that loads only these regions of a large dump file (into a [`PiecewiseDump`]) reads
    /// everything [`RecoveredLog`] needs. Reads only the descriptor's own words from `mem`; an
    /// error if they are not there.
    ///
    /// [`PiecewiseDump`]: super::PiecewiseDump
    /// [`RecoveredLog`]: super::RecoveredLog
    pub fn for_each_region<M: Memory + ?Sized>(
        &self,
        mem: &M,
        f: &mut dyn FnMut(usize, usize),
    ) -> Result<(), RecoverError> {
        let outside = RecoverError::OutsideDump {
            what: "descriptor tables",
            addr: self.addr,
        };
        mem.words(self.addr, self.total).ok_or(outside)?;
        f(self.addr, self.total);
        f(self.main.0, self.main.1);
        f(self.crash_cpu_addr, 1);
        f(self.bad_cpu_addr, 1);
        f(self.unregistered_addr, 1);
        let (stop, stride) = self.stop;
        if stop != 0 {
            for c in 0..self.cpus {
                f(stop.wrapping_add(c.wrapping_mul(stride)), 1);
            }
        }
        for i in 0..self.cpus * self.depth {
            let ent = self.entry(mem, i).ok_or(outside)?;
            let v = |j: usize| ent[j].load(Ordering::Relaxed);
            f(v(e::RING_ADDR), v(e::RING_WORDS));
            for j in [
                e::FLUSHED_SEQ_ADDR,
                e::FLUSH_OVERWRITTEN_ADDR,
                e::KIND_ADDR,
                e::OVERFLOW_ADDR,
                e::FLUSH_MOVED_ADDR,
            ] {
                if v(j) != 0 {
                    f(v(j), 1);
                }
            }
        }
        Ok(())
    }

    /// Source entry `i`'s words (`cpu * depth + d`), if in the dump.
    pub(crate) fn entry<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        i: usize,
    ) -> Option<&'m [AtomicUsize]> {
        let first = MAGIC_WORDS + h::COUNT + layout::ALL.len();
        let at = i.checked_mul(e::COUNT)?.checked_add(first)?;
        mem.words(self.addr.checked_add(at.checked_mul(W)?)?, e::COUNT)
    }

    /// Checks the tables: their checksum, the record header layout, and that every region and word
    /// they name is in the dump, aligned, of a valid size. Time bounded by the descriptor's size.
    pub(crate) fn check_tables<M: Memory + ?Sized>(&self, mem: &M) -> Result<(), RecoverError> {
        let all = mem
            .words(self.addr, self.total)
            .ok_or(RecoverError::OutsideDump {
                what: "descriptor tables",
                addr: self.addr,
            })?;
        let hd = MAGIC_WORDS;
        let want = all[hd + h::TABLE_SUM].load(Ordering::Relaxed);
        let sum = checksum(
            all[hd + h::COUNT..]
                .iter()
                .map(|w| w.load(Ordering::Relaxed)),
        );
        if sum != want {
            return Err(RecoverError::Checksum { what: "tables" });
        }
        for (i, (o, s)) in layout::ALL.iter().enumerate() {
            let v = all[hd + h::COUNT + i].load(Ordering::Relaxed);
            if v != i | (*o as usize) << 8 | (*s as usize) << 16 {
                return Err(RecoverError::LayoutMismatch);
            }
        }
        Ok(())
    }
}
