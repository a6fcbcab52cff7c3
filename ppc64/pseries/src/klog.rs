//! The nmilog core on pseries: the [`Platform`] implementation, the kernel's one `Log` static, and
//! its descriptor for a reader of raw memory (`recover::LogDescriptor`, written once at boot).

use core::sync::atomic::{AtomicUsize, Ordering};

use nmilog::recover::{DescribeError, LogDescriptor};
use nmilog::{Log, Platform};

use crate::{percpu, timebase};

/// Words per per-CPU ring at most (32 KiB; one ring per nesting depth): fewer on a machine whose
/// largest handover image would not fit the handover region otherwise ([`ring_words_for`]).
pub const MAX_RING_WORDS: usize = 4096;
/// Words in the main log (256 KiB).
pub const MAIN_WORDS: usize = 32768;
/// Context nesting depths per CPU: task, irq, NMI, crash/nested NMI.
pub const DEPTH: usize = 4;
/// The flush's settle window ([`Log::set_flush_settle_ns`]): far longer than a store takes to become
/// visible to the other CPUs, far shorter than the time between two records of one CPU here.
pub const FLUSH_SETTLE_NS: u64 = 50_000;

/// The pseries machine as nmilog sees it.
#[derive(Debug)]
pub struct PseriesPlatform {
    ncpus: AtomicUsize,
}

impl PseriesPlatform {
    /// No CPUs yet: every log call is a counted bad-CPU drop until `set_cpu_count`.
    pub const fn new() -> Self {
        PseriesPlatform {
            ncpus: AtomicUsize::new(0),
        }
    }

    /// Sets the number of CPUs that log (read from /cpus, at most `MAX_CPUS`).
    pub fn set_cpu_count(&self, n: usize) {
        self.ncpus.store(n.min(percpu::MAX_CPUS), Ordering::Relaxed);
    }
}

impl Platform for PseriesPlatform {
    /// The logical index in this CPU's `PerCpu` slot, found through SPRG0 (PIR reads 0 on every CPU
    /// under QEMU's TCG pseries). A CPU without a slot (SPRG0 = 0) reports `usize::MAX`: a counted drop.
    #[inline]
    fn cpu_id(&self) -> usize {
        percpu::this_cpu().map_or(usize::MAX, |c| c.index.load(Ordering::Relaxed))
    }

    /// The timebase (shared by all CPUs, 512 MHz under QEMU, frequency read from /cpus) in ns.
    #[inline]
    fn now_ns(&self) -> u64 {
        timebase::now_ns()
    }

    #[inline]
    fn cpu_count(&self) -> usize {
        self.ncpus.load(Ordering::Relaxed)
    }

    /// The kernel's own context word (`percpu::context`, Linux's `preempt_count`): the interrupt
    /// handlers do not bracket themselves for the log.
    #[inline]
    fn context(&self) -> Option<(nmilog::ContextKind, usize)> {
        percpu::context()
    }
}

/// The kernel log type: its rings and main log sized at boot ([`attach`]) for the CPU count the
/// device tree gives, as Linux sizes its log buffer from the CPUs it found and `log_buf_len=`.
pub type KernelLog = Log<PseriesPlatform, { percpu::MAX_CPUS }, 0, 0, DEPTH>;

/// Words of [`ARENA`]: the most any CPU count up to `MAX_CPUS` takes with its rings sized by
/// [`ring_words_for`], and the main log. As rings shrink when CPUs grow, this stays near the image
/// room instead of `MAX_CPUS` rings at their largest.
pub const ARENA_WORDS: usize = {
    let mut most = 0;
    let mut n = 1;
    while n <= percpu::MAX_CPUS {
        let w = KernelLog::arena_words(n, DEPTH, ring_words_for(n), MAIN_WORDS);
        if w > most {
            most = w;
        }
        n += 1;
    }
    most
};

/// Where [`attach`] carves the log from (in `.bss`; zeroed again by the attach).
static ARENA: [nmilog::recover::AtomicUsize; ARENA_WORDS] =
    [const { nmilog::recover::AtomicUsize::new(0) }; ARENA_WORDS];

/// The largest handover image the crash path may write, and the capture stage rebuild: both
/// regions must hold it, so that no record is ever left out for lack of room.
const IMAGE_ROOM: usize = if crate::bootparams::HANDOVER_SIZE < crate::bootparams::REBUILD_SIZE {
    crate::bootparams::HANDOVER_SIZE
} else {
    crate::bootparams::REBUILD_SIZE
};

/// Words per ring for `ncpus` CPUs: the largest power of two up to [`MAX_RING_WORDS`] whose
/// largest image fits [`IMAGE_ROOM`].
pub const fn ring_words_for(ncpus: usize) -> usize {
    let mut w = MAX_RING_WORDS;
    while w > 256 && nmilog::handover::max_image_size(ncpus, DEPTH, w, MAIN_WORDS) > IMAGE_ROOM {
        w /= 2;
    }
    w
}

// Even the largest machine gets rings of at least 2 KiB, and its image fits.
const _: () = assert!(
    nmilog::handover::max_image_size(
        percpu::MAX_CPUS,
        DEPTH,
        ring_words_for(percpu::MAX_CPUS),
        MAIN_WORDS
    ) <= IMAGE_ROOM
);

/// Carves [`LOG`]'s rings (sized by [`ring_words_for`] the CPU count) and main log out of
/// [`ARENA`]. Once, at boot, after `set_cpu_count`, before anything logs. Returns the ring size in
/// words.
pub fn attach() -> Result<usize, nmilog::ArenaError> {
    let w = ring_words_for(LOG.platform().cpu_count());
    LOG.attach_arena(&ARENA, w, MAIN_WORDS).map(|_| w)
}

/// The kernel log.
pub static LOG: KernelLog = Log::new(PseriesPlatform::new());

/// [`LOG`]'s descriptor (vmcoreinfo's role): where a capture stage or a tool reading a memory dump
/// finds the main log, every (CPU, depth) ring and the words the crash drain reads, and the crash
/// sequence's check-in flags. In `.bss`; written once, by [`describe`], never again.
pub static DESCRIPTOR: LogDescriptor<{ KernelLog::DESCRIPTOR_WORDS }> = LogDescriptor::new();

/// Describes [`LOG`] in [`DESCRIPTOR`], with the crash sequence's check-in flags
/// (`CrashState::stop_flags`). Once, at boot, after the CPU count is final (`set_cpu_count`).
/// Returns the words written.
pub fn describe() -> Result<usize, DescribeError> {
    DESCRIPTOR.describe(&LOG, Some(crate::crash_state::STATE.stop_flags()))
}

/// Registers [`LOG`] as nmilog's global logger, so that the core's `printk!`/`pr_*!` macros log into
/// it (the crash path's own messages use them). Once, at boot, before the other CPUs start.
pub fn register_global() {
    nmilog::set_global!(LOG);
}
