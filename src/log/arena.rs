//! Sizes chosen at boot: a log whose rings and main log are carved from one static arena when the
//! kernel knows its sizes (Linux's `log_buf_len=`), instead of being fixed by const generics.
//!
//! A `Log<P, CPUS, 0, 0, DEPTH>` (`RING_WORDS` and `MAIN_WORDS` both 0) holds no ring memory of its
//! own: at boot, before the first log call, [`Log::attach_arena`] carves `cpu_count × DEPTH` rings of
//! `ring_words` words and a main log of `main_words` words out of a `'static` arena
//! ([`Log::arena_words`] sizes it) and publishes each with one pointer store. From then on every
//! operation — the NMI path, the flush, readers, consoles, the crash drain, the handover image, the
//! boot-time descriptor for raw-memory recovery — runs the same code over the same ring layout as a
//! const-sized log (a ring is its state words then its data, whatever holds it). Log calls made
//! before the arena is attached find no ring: they are refused and counted with the calls made before
//! registration ([`Log::unregistered_dropped`]).
//!
//! Contract: attach once, at boot, on one CPU, before other CPUs log (as registration); the arena is
//! zeroed by the attach and must not be touched by anything else afterwards.

use core::fmt;

use super::Log;
use crate::ring::{Ring, RING_STATE_WORDS};
use crate::sync::{const_or_loom_fn, AtomicPtr, AtomicUsize, Ordering};
use crate::Platform;

/// Where one ring of a boot-sized log lives: null until [`Log::attach_arena`] sets it, then the
/// ring's words (state, then data) in the arena, never changed again.
pub(crate) struct ArenaSlot {
    words: AtomicPtr<AtomicUsize>,
    len: AtomicUsize,
}

impl ArenaSlot {
    const_or_loom_fn! {
        /// No ring yet.
        pub(crate) fn new() -> Self {
            ArenaSlot {
                words: AtomicPtr::new(core::ptr::null_mut()),
                len: AtomicUsize::new(0),
            }
        }
    }

    /// The ring, once attached.
    #[inline(always)]
    pub(crate) fn ring(&self) -> Option<&Ring> {
        // LMM(arena:B): Acquire, pairs with LMM(arena:A) in `set`: a CPU that sees the pointer sees
        // the length and the zeroed words stored before it.
        let p = self.words.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        let len = self.len.load(Ordering::Relaxed);
        #[cfg(not(nmilog_loom))]
        {
            // SAFETY: `set` stored a pointer to the start of a `'static` slice of `len` words (part of
            // the arena `attach_arena` was given), after storing `len`; neither changes again.
            // `AtomicUsize` allows shared access from any CPU.
            let words: &'static [AtomicUsize] = unsafe { core::slice::from_raw_parts(p, len) };
            Ring::from_words(words)
        }
        #[cfg(nmilog_loom)]
        {
            // The models use const-sized logs only.
            let _ = len;
            None
        }
    }

    fn is_set(&self) -> bool {
        // LMM(arena:B) too: a CPU that sees the main log attached sees every ring stored before it.
        !self.words.load(Ordering::Acquire).is_null()
    }

    fn set(&self, words: &'static [AtomicUsize]) {
        self.len.store(words.len(), Ordering::Relaxed);
        // LMM(arena:A): Release, pairs with LMM(arena:B) in `ring`: the length and the zeroed words
        // are visible before the pointer.
        self.words
            .store(words.as_ptr() as *mut AtomicUsize, Ordering::Release);
    }
}

/// Why [`Log::attach_arena`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaError {
    /// The log's sizes are fixed at compile time (`RING_WORDS` or `MAIN_WORDS` is not 0).
    SizedAtCompileTime,
    /// A size is not a power of two of at least 32 words.
    BadSize {
        /// The size given.
        words: usize,
    },
    /// The arena is smaller than [`Log::arena_words`] asks.
    TooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        have: usize,
    },
    /// An arena is already attached (attach once, at boot).
    AlreadyAttached,
}

impl fmt::Display for ArenaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArenaError::SizedAtCompileTime => f.write_str(
                "the log's sizes are fixed at compile time (RING_WORDS/MAIN_WORDS not 0)",
            ),
            ArenaError::BadSize { words } => {
                write!(
                    f,
                    "{words} words: a ring size must be a power of two of at least 32"
                )
            }
            ArenaError::TooSmall { needed, have } => {
                write!(f, "arena of {have} words, {needed} needed")
            }
            ArenaError::AlreadyAttached => f.write_str("an arena is already attached"),
        }
    }
}

impl core::error::Error for ArenaError {}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Whether this log's rings are carved from an arena at boot (`RING_WORDS` and `MAIN_WORDS` 0).
    pub const BOOT_SIZED: bool = RING_WORDS == 0 && MAIN_WORDS == 0;

    /// Words an arena needs for `cpus` CPUs with `depth` rings of `ring_words` words each and a
    /// `main_words`-word main log (each ring also holds its state words). Saturates; `const`, so a
    /// kernel can size a static arena for its largest configuration.
    pub const fn arena_words(
        cpus: usize,
        depth: usize,
        ring_words: usize,
        main_words: usize,
    ) -> usize {
        cpus.saturating_mul(depth)
            .saturating_mul(RING_STATE_WORDS.saturating_add(ring_words))
            .saturating_add(RING_STATE_WORDS.saturating_add(main_words))
    }

    /// Carves this log's rings (`ring_words` words each, for the platform's CPU count) and its main
    /// log (`main_words` words) out of `arena`, which it zeroes. Once, at boot, before any other CPU
    /// logs. Returns the words used. Calls made before it are refused
    /// ([`AppendError::NotReady`](crate::AppendError::NotReady)) and counted with
    /// [`unregistered_dropped`](Self::unregistered_dropped); every operation afterwards runs the same
    /// code over the same ring layout as a log sized at compile time.
    ///
    /// ```
    /// use nmilog::{doc_support::OneCpu, Level, Log, RecordBuf};
    /// use portable_atomic::AtomicUsize;
    /// type BootSized = Log<OneCpu, 1, 0, 0>; // sizes chosen at boot
    /// static LOG: BootSized = Log::new(OneCpu);
    /// const WORDS: usize = BootSized::arena_words(1, 5, 256, 1024);
    /// static ARENA: [AtomicUsize; WORDS] = [const { AtomicUsize::new(0) }; WORDS];
    /// assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"too early"), Err(nmilog::AppendError::NotReady));
    /// LOG.attach_arena(&ARENA, 256, 1024).unwrap(); // e.g. from `log_buf_len=`
    /// LOG.append(Level::Info, 0, 0, b"sized at boot").unwrap();
    /// let mut rec = RecordBuf::new();
    /// LOG.main_reader().read(&LOG, &mut rec);
    /// assert_eq!(rec.text(), Some("sized at boot"));
    /// assert_eq!((LOG.ring_words(), LOG.main().capacity_words()), (256, 1024));
    /// assert_eq!(LOG.unregistered_dropped(), 1);
    /// ```
    pub fn attach_arena(
        &self,
        arena: &'static [AtomicUsize],
        ring_words: usize,
        main_words: usize,
    ) -> Result<usize, ArenaError> {
        if !Self::BOOT_SIZED {
            return Err(ArenaError::SizedAtCompileTime);
        }
        for words in [ring_words, main_words] {
            if !words.is_power_of_two() || words < 32 {
                return Err(ArenaError::BadSize { words });
            }
        }
        if self.main.arena.is_set() {
            return Err(ArenaError::AlreadyAttached);
        }
        let cpus = self.platform.cpu_count().min(CPUS);
        let needed = Self::arena_words(cpus, DEPTH, ring_words, main_words);
        if arena.len() < needed {
            return Err(ArenaError::TooSmall {
                needed,
                have: arena.len(),
            });
        }
        for w in &arena[..needed] {
            w.store(0, Ordering::Relaxed);
        }
        let (main, mut rest) = arena[..needed].split_at(RING_STATE_WORDS + main_words);
        for pc in &self.cpus[..cpus] {
            for slot in pc.arena_slots() {
                let (ring, tail) = rest.split_at(RING_STATE_WORDS + ring_words);
                slot.set(ring);
                rest = tail;
            }
        }
        // The main log last: `main_attached` (the flush's and the readers' test) means every ring is
        // there too.
        self.main.arena.set(main);
        Ok(needed)
    }

    /// Whether the main log has its memory (always, for a const-sized log).
    #[inline(always)]
    pub(crate) fn main_attached(&self) -> bool {
        !Self::BOOT_SIZED || self.main.arena.is_set()
    }

    /// A region this large holds the handover image of this log whatever its rings contain: as
    /// [`MAX_IMAGE_BYTES`](Self::MAX_IMAGE_BYTES), with the sizes in effect (for a log sized at
    /// boot, those its arena gave it).
    pub fn max_image_bytes(&self) -> usize {
        crate::handover::max_image_size(
            self.platform.cpu_count().min(CPUS),
            DEPTH,
            self.ring_words(),
            self.main_ring().capacity_words(),
        )
    }

    /// Words per ring in effect: `RING_WORDS`, or what the arena gave a boot-sized log (0 before
    /// it is attached).
    pub fn ring_words(&self) -> usize {
        self.cpus
            .first()
            .and_then(|pc| pc.ring(0))
            .map_or(RING_WORDS, |r| r.capacity_words())
    }
}
