//! Per-CPU state: the context nesting depth, the kind of context at each depth, and one ring per
//! depth.
//!
//! # Why one ring per depth
//!
//! Code at nesting depth `d` on a CPU can only be interrupted by code at depth `d + 1` or more, and
//! that code finishes before depth `d` resumes (interrupts nest last-in first-out). So if each depth
//! has its own ring, every ring has exactly one writer at any instant and the writer needs no
//! read-modify-write atomic: plain loads and stores are enough, which is what makes the path safe in
//! NMI context and on CAS-less targets. The depth — not the kind — picks the ring: an NMI that lands
//! in task context uses ring 1, one that lands in an interrupt handler uses ring 2. A crash is entered
//! like an exception, one level above whatever was running, so a crash that happens inside a log call
//! does not collide with the interrupted write.
//!
//! The depth counter itself is changed with a plain load and store for the same reason: an interrupt
//! that lands between the two restores the value before it returns.
//!
//! Calls at a depth of `DEPTH` or more are refused and counted ([`PerCpu::overflow_dropped`]), except
//! a crash, which takes the top ring.
//!
//! ```
//! # use nmilog::doc_support::OneCpu;
//! use nmilog::{ContextKind, FlushPolicy, Level, Log};
//! static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
//! LOG.set_flush_policy(FlushPolicy::Deferred); // keep the records in the CPU's rings
//! LOG.append(Level::Info, 0, 0, b"task").unwrap();
//! {
//!     let _irq = LOG.enter(ContextKind::Irq); // depth 1
//!     let _nmi = LOG.enter(ContextKind::Nmi); // an NMI in the interrupt handler: depth 2
//!     LOG.append_raw(Level::Emerg, 0, 0, b"nmi").unwrap();
//! }
//! let cpu0 = LOG.cpu(0).unwrap();
//! let per_depth: Vec<u64> = cpu0.rings.iter().map(|r| r.next_seq()).collect();
//! assert_eq!(per_depth[..3], [1, 0, 1]); // ring 0 (task) and ring 2 (the NMI's depth)
//! ```

use crate::log::ArenaSlot;
use crate::record::ContextKind;
use crate::ring::{RecordRing, Ring};
use crate::sync::{array_of, const_or_loom_fn, signal_fence, AtomicUsize, Ordering};

/// One CPU's logging state: nesting depth, context kinds and `DEPTH` rings of `RING_WORDS` words.
///
/// ```
/// use nmilog::percpu::PerCpu;
/// use nmilog::ContextKind;
/// let cpu: PerCpu<64, 4> = PerCpu::new();
/// assert_eq!(cpu.context(), (ContextKind::Task, 0));
/// cpu.enter(ContextKind::Nmi);
/// assert_eq!(cpu.context(), (ContextKind::Nmi, 1));
/// cpu.exit();
/// assert_eq!(cpu.context(), (ContextKind::Task, 0));
/// ```
pub struct PerCpu<const RING_WORDS: usize, const DEPTH: usize> {
    depth: AtomicUsize,
    kinds: [AtomicUsize; DEPTH],
    /// The kind of context of the last log call at each depth (for the accounting records): written
    /// by every log call, however its context was found (the log's brackets, or the platform's
    /// `context`).
    seen: [AtomicUsize; DEPTH],
    overflow: AtomicUsize,
    /// The rings, indexed by nesting depth (empty placeholders in a log sized at boot: use
    /// [`ring`](Self::ring)).
    pub rings: [RecordRing<RING_WORDS>; DEPTH],
    /// Where a log sized at boot put each ring (`RING_WORDS` 0).
    arena: [ArenaSlot; DEPTH],
}

impl<const RING_WORDS: usize, const DEPTH: usize> PerCpu<RING_WORDS, DEPTH> {
    const_or_loom_fn! {
        /// A CPU in task context with empty rings.
        ///
        /// ```
        /// use nmilog::{percpu::PerCpu, ContextKind};
        /// static CPU0: PerCpu<256, 4> = PerCpu::new(); // `const`: fine in a `static`
        /// assert_eq!(CPU0.context(), (ContextKind::Task, 0));
        /// assert!(CPU0.rings.iter().all(|r| r.next_seq() == 0));
        /// ```
        pub fn new() -> Self {
            const { assert!(DEPTH >= 1 && DEPTH <= 15, "DEPTH must be 1..=15") };
            PerCpu {
                depth: AtomicUsize::new(0),
                kinds: array_of!(AtomicUsize::new(0); DEPTH),
                seen: array_of!(AtomicUsize::new(0); DEPTH),
                overflow: AtomicUsize::new(0),
                rings: array_of!(RecordRing::new(); DEPTH),
                arena: array_of!(ArenaSlot::new(); DEPTH),
            }
        }
    }

    /// The ring at `depth`: [`rings`](Self::rings)`[depth]`, or for a log sized at boot
    /// (`RING_WORDS` 0) the one its arena gave it (`None` before the arena is attached).
    ///
    /// ```
    /// use nmilog::percpu::PerCpu;
    /// let cpu: PerCpu<64, 2> = PerCpu::new();
    /// assert_eq!(cpu.ring(1).unwrap().capacity_words(), 64);
    /// assert!(cpu.ring(2).is_none());
    /// let boot_sized: PerCpu<0, 2> = PerCpu::new();
    /// assert!(boot_sized.ring(0).is_none()); // no arena attached
    /// ```
    #[inline(always)]
    pub fn ring(&self, depth: usize) -> Option<&Ring> {
        if RING_WORDS != 0 {
            self.rings.get(depth).map(|r| r as &Ring)
        } else {
            self.arena.get(depth)?.ring()
        }
    }

    /// The arena slots (a log sized at boot fills them once).
    pub(crate) fn arena_slots(&self) -> &[ArenaSlot] {
        &self.arena
    }

    /// Enters a nested context of `kind` (interrupt, NMI, crash) on this CPU. Must be called on the
    /// CPU that owns this state, and paired with [`exit`](Self::exit).
    ///
    /// ```
    /// use nmilog::{percpu::PerCpu, ContextKind};
    /// let cpu: PerCpu<64, 4> = PerCpu::new();
    /// cpu.enter(ContextKind::Irq); // irq_enter()
    /// cpu.enter(ContextKind::Nmi); // an NMI lands in the interrupt handler
    /// assert_eq!(cpu.context(), (ContextKind::Nmi, 2)); // so it logs to ring 2
    /// cpu.exit();
    /// cpu.exit();
    /// ```
    #[inline]
    pub fn enter(&self, kind: ContextKind) {
        self.nest(kind, true);
    }

    /// [`enter`](Self::enter) without noting `kind` as the kind of its depth's ring: for a level
    /// entered on top of a context the platform reports (`Platform::context`), whose real depth
    /// is the platform's plus this one; the log calls made there note their kind themselves.
    pub(crate) fn enter_on_top(&self, kind: ContextKind) {
        self.nest(kind, false);
    }

    #[inline]
    fn nest(&self, kind: ContextKind, note: bool) {
        let d = self.depth.load(Ordering::Relaxed) + 1;
        // Depth first: an NMI that lands between the two stores nests above `d` and leaves
        // `kinds[d]` alone. LMM(nest:A): signal fences, pair with LMM(nest:C) in the handler that
        // lands here: it sees the new depth before `kinds[d]` changes, and both before the code of
        // the entered context runs.
        self.depth.store(d, Ordering::Relaxed);
        signal_fence();
        if d < DEPTH {
            self.kinds[d].store(kind as usize, Ordering::Relaxed);
            if note {
                self.seen[d].store(kind as usize, Ordering::Relaxed);
            }
        }
        signal_fence();
    }

    /// Leaves the innermost nested context.
    ///
    /// ```
    /// use nmilog::{percpu::PerCpu, ContextKind};
    /// let cpu: PerCpu<64, 4> = PerCpu::new();
    /// cpu.enter(ContextKind::Irq);
    /// cpu.exit();
    /// assert_eq!(cpu.context(), (ContextKind::Task, 0));
    /// cpu.exit(); // an unbalanced exit saturates at task context
    /// assert_eq!(cpu.context(), (ContextKind::Task, 0));
    /// ```
    #[inline]
    pub fn exit(&self) {
        // LMM(nest:B): signal fences, pair with LMM(nest:C) in the handler that lands here: every
        // access of the context being left (its ring writes) is done before the depth drops, so a
        // handler that sees the lower depth and takes that ring is its only writer.
        signal_fence();
        let d = self.depth.load(Ordering::Relaxed);
        self.depth.store(d.saturating_sub(1), Ordering::Relaxed);
        signal_fence();
    }

    /// The current context kind and depth.
    ///
    /// ```
    /// use nmilog::{percpu::PerCpu, ContextKind};
    /// let cpu: PerCpu<64, 2> = PerCpu::new(); // tracks depths 0 and 1 only
    /// cpu.enter(ContextKind::Irq);
    /// assert_eq!(cpu.context(), (ContextKind::Irq, 1));
    /// cpu.enter(ContextKind::Irq);
    /// assert_eq!(cpu.context(), (ContextKind::Nmi, 2)); // untracked depth: assume the worst
    /// ```
    #[inline]
    pub fn context(&self) -> (ContextKind, usize) {
        // LMM(nest:C): pairs with LMM(nest:A)/LMM(nest:B): an interrupt or NMI handler on this CPU
        // reads the depth and kind in the order `enter`/`exit` stored them. Relaxed: same CPU,
        // program order (the signal fences keep the compiler from reordering the stores).
        let d = self.depth.load(Ordering::Relaxed);
        if d == 0 {
            return (ContextKind::Task, 0);
        }
        let k = if d < DEPTH {
            self.kinds[d].load(Ordering::Relaxed)
        } else {
            ContextKind::Nmi as usize
        };
        (ContextKind::from_u8(k as u8).unwrap_or(ContextKind::Nmi), d)
    }

    /// The kind of context last entered, or of the last log call, at `depth` (task if none yet).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// use nmilog::{ContextKind, Level, Log};
    /// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.irq_enter();
    /// LOG.nmi_enter();
    /// LOG.append_raw(Level::Emerg, 0, 0, b"NMI in an interrupt handler").unwrap();
    /// let cpu = LOG.cpu(0).unwrap();
    /// assert_eq!(cpu.kind_at(2), ContextKind::Nmi);
    /// assert_eq!(cpu.kind_at(1), ContextKind::Irq);
    /// assert_eq!(cpu.kind_at(3), ContextKind::Task); // never entered
    /// ```
    pub fn kind_at(&self, depth: usize) -> ContextKind {
        match self.seen.get(depth) {
            Some(k) => {
                ContextKind::from_u8(k.load(Ordering::Relaxed) as u8).unwrap_or(ContextKind::Nmi)
            }
            None => ContextKind::Task,
        }
    }

    /// Notes the kind of a log call at `depth` (this CPU only, at that depth: one writer).
    #[inline(always)]
    pub(crate) fn note_kind(&self, depth: usize, kind: ContextKind) {
        if let Some(k) = self.seen.get(depth) {
            k.store(kind as usize, Ordering::Relaxed);
        }
    }

    /// Whether any depth below the current one is inside an NMI or crash context (so this call, even
    /// from an interrupt handler, must stay on the NMI-safe path).
    ///
    /// ```
    /// use nmilog::{percpu::PerCpu, ContextKind};
    /// let cpu: PerCpu<64, 4> = PerCpu::new();
    /// cpu.enter(ContextKind::Irq);
    /// assert!(!cpu.nmi_safe_only()); // an interrupt handler may flush
    /// cpu.exit();
    /// cpu.enter(ContextKind::Nmi);
    /// cpu.enter(ContextKind::Irq); // an interrupt taken inside an NMI handler
    /// assert!(cpu.nmi_safe_only()); // must not touch the main log
    /// ```
    #[inline]
    pub fn nmi_safe_only(&self) -> bool {
        let d = self.depth.load(Ordering::Relaxed);
        if d >= DEPTH {
            // Deeper than we track: assume the worst (an NMI nested beyond DEPTH).
            return true;
        }
        (1..=d).any(|i| {
            ContextKind::from_u8(self.kinds[i].load(Ordering::Relaxed) as u8)
                .is_none_or(|k| k.is_nmi_safe_only())
        })
    }

    /// Log calls refused because the nesting was deeper than `DEPTH - 1`.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{AppendError, ContextKind, Level, Log};
    /// static LOG: Log<OneCpu, 1, 256, 1024, 2> = Log::new(OneCpu); // DEPTH = 2: task and irq
    /// let _irq = LOG.enter(ContextKind::Irq);
    /// let _nmi = LOG.enter(ContextKind::Nmi);
    /// assert_eq!(LOG.append_raw(Level::Emerg, 0, 0, b"x"), Err(AppendError::TooDeep));
    /// assert_eq!(LOG.cpu(0).unwrap().overflow_dropped(), 1);
    /// ```
    pub fn overflow_dropped(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed) as u64
    }

    /// The word [`kind_at`](Self::kind_at) reads for `depth`.
    pub(crate) fn kind_word(&self, depth: usize) -> Option<&AtomicUsize> {
        self.seen.get(depth)
    }

    /// The word [`overflow_dropped`](Self::overflow_dropped) reads.
    pub(crate) fn overflow_word(&self) -> &AtomicUsize {
        &self.overflow
    }

    #[inline]
    pub(crate) fn count_overflow(&self) {
        let v = self.overflow.load(Ordering::Relaxed);
        self.overflow.store(v.wrapping_add(1), Ordering::Relaxed);
    }
}

impl<const RING_WORDS: usize, const DEPTH: usize> Default for PerCpu<RING_WORDS, DEPTH> {
    fn default() -> Self {
        Self::new()
    }
}

/// Shows the context state and each ring's state words (not the rings' data).
///
/// ```
/// use nmilog::{percpu::PerCpu, ContextKind};
/// let cpu: PerCpu<64, 2> = PerCpu::new();
/// cpu.enter(ContextKind::Irq);
/// let s = format!("{cpu:?}");
/// assert!(s.starts_with("PerCpu { depth: 1, kinds: [Task, Irq], overflow_dropped: 0, rings: [RecordRing {"));
/// ```
impl<const RING_WORDS: usize, const DEPTH: usize> core::fmt::Debug for PerCpu<RING_WORDS, DEPTH> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        struct Rings<'a, const RING_WORDS: usize, const DEPTH: usize>(
            &'a PerCpu<RING_WORDS, DEPTH>,
        );
        impl<const RING_WORDS: usize, const DEPTH: usize> core::fmt::Debug
            for Rings<'_, RING_WORDS, DEPTH>
        {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_list()
                    .entries((0..DEPTH).filter_map(|d| self.0.ring(d)))
                    .finish()
            }
        }
        struct Kinds<'a, const RING_WORDS: usize, const DEPTH: usize>(
            &'a PerCpu<RING_WORDS, DEPTH>,
        );
        impl<const RING_WORDS: usize, const DEPTH: usize> core::fmt::Debug
            for Kinds<'_, RING_WORDS, DEPTH>
        {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_list()
                    .entries((0..DEPTH).map(|d| self.0.kind_at(d)))
                    .finish()
            }
        }
        f.debug_struct("PerCpu")
            .field("depth", &self.depth.load(Ordering::Relaxed))
            .field("kinds", &Kinds(self))
            .field("overflow_dropped", &self.overflow_dropped())
            .field("rings", &Rings(self))
            .finish()
    }
}
