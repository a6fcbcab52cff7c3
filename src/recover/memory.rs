//! Memory to recover a log from: a [`Memory`] maps the addresses the dead kernel used to words of a
//! dump. [`RawDump`] is the simplest one: one contiguous piece of memory taken at a known address
//! (a `pmemsave` file read into memory, the capture kernel's view of the old kernel's RAM, a shared
//! mapping that outlived a process).
//!
//! Contract: a lookup either returns whole, aligned words inside the dump or `None`; it never
//! panics, whatever the address and length (overflowing ones included).

use crate::sync::AtomicUsize;

const W: usize = core::mem::size_of::<usize>();

/// Memory a log is recovered from: the words at the dead kernel's addresses, native-endian and
/// native-width (a tool converts a foreign-endian dump as it loads it; see
/// [`RecoverError::ForeignEndian`](super::RecoverError::ForeignEndian)).
///
/// Words are atomics because the memory may still be written while it is read: the capture stage may
/// run in the same memory as a CPU that never stopped. Every read of a record is validated by its
/// sequence words, as the live drain's are.
pub trait Memory {
    /// The `n` words at `addr`, if all of them are in the dump and `addr` is word-aligned.
    fn words(&self, addr: usize, n: usize) -> Option<&[AtomicUsize]>;

    /// Calls `f(addr, words)` for each contiguous piece of the dump (for the scan for the
    /// descriptor's magic), in address order, until `f` returns `false`.
    fn for_each_piece(&self, f: &mut dyn FnMut(usize, &[AtomicUsize]) -> bool);

    /// The word at `addr`.
    fn word(&self, addr: usize) -> Option<usize> {
        self.words(addr, 1)
            .map(|w| w[0].load(crate::sync::Ordering::Relaxed))
    }
}

/// One contiguous piece of memory whose first word was at address `base`.
///
/// ```
/// use nmilog::recover::{Memory, RawDump};
/// use nmilog::recover::AtomicUsize;
/// let words: Vec<AtomicUsize> = (0..4).map(AtomicUsize::new).collect();
/// let w = core::mem::size_of::<usize>();
/// let dump = RawDump::new(0x1000, &words);
/// assert_eq!(dump.word(0x1000 + 2 * w), Some(2));
/// assert_eq!(dump.word(0x1001), None); // not aligned
/// assert_eq!(dump.word(0x1000 + 4 * w), None); // past the end
/// assert!(dump.words(usize::MAX - 3, 2).is_none()); // no overflow, no panic
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RawDump<'a> {
    base: usize,
    words: &'a [AtomicUsize],
}

impl<'a> RawDump<'a> {
    /// The dump `words`, taken at address `base` (word-aligned).
    pub fn new(base: usize, words: &'a [AtomicUsize]) -> Self {
        RawDump { base, words }
    }

    /// The address of the dump's first word.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The dump's length in words.
    pub fn len_words(&self) -> usize {
        self.words.len()
    }
}

impl Memory for RawDump<'_> {
    fn words(&self, addr: usize, n: usize) -> Option<&[AtomicUsize]> {
        let off = addr.checked_sub(self.base)?;
        if off % W != 0 {
            return None;
        }
        let i = off / W;
        self.words.get(i..i.checked_add(n)?)
    }

    fn for_each_piece(&self, f: &mut dyn FnMut(usize, &[AtomicUsize]) -> bool) {
        f(self.base, self.words);
    }
}

/// Several pieces of memory, each taken at its own address (a tool that loads only the regions a
/// descriptor names, or a dump with holes). Pieces are given in address order and do not overlap
/// (otherwise a lookup may miss).
///
/// ```
/// use nmilog::recover::{Memory, PiecewiseDump, RawDump};
/// use nmilog::recover::AtomicUsize;
/// let a: Vec<AtomicUsize> = (0..2).map(AtomicUsize::new).collect();
/// let b: Vec<AtomicUsize> = (10..12).map(AtomicUsize::new).collect();
/// let pieces = [RawDump::new(0x1000, &a), RawDump::new(0x8000, &b)];
/// let dump = PiecewiseDump::new(&pieces);
/// assert_eq!(dump.word(0x8000), Some(10));
/// assert_eq!(dump.word(0x4000), None); // a hole
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PiecewiseDump<'a> {
    pieces: &'a [RawDump<'a>],
}

impl<'a> PiecewiseDump<'a> {
    /// The dump made of `pieces` (in address order).
    pub fn new(pieces: &'a [RawDump<'a>]) -> Self {
        PiecewiseDump { pieces }
    }
}

impl Memory for PiecewiseDump<'_> {
    fn words(&self, addr: usize, n: usize) -> Option<&[AtomicUsize]> {
        // The last piece that starts at or before `addr` (binary search: bounded by log2 pieces).
        let i = self.pieces.partition_point(|p| p.base <= addr);
        self.pieces.get(i.checked_sub(1)?)?.words(addr, n)
    }

    fn for_each_piece(&self, f: &mut dyn FnMut(usize, &[AtomicUsize]) -> bool) {
        for p in self.pieces {
            if !f(p.base, p.words) {
                return;
            }
        }
    }
}
