//! The simulated kernel's memory and the handover region it lives in.
//!
//! The region is one shared mapping of a `memfd` that survives the `execv` into the capture stage:
//!
//! | offset                  | what                                                               |
//! |-------------------------|--------------------------------------------------------------------|
//! | 0                       | the ground-truth block ([`super::truth`], [`truth::bytes`] for the CPU count; word `W_REGION_BASE`: the mapping's address in the crashed process, written with the rest of the block: at the switchover, or by the watchdog after a death) |
//! | `truth::bytes(cpus)`    | the handover image, written by the crash path                      |
//! | [`Layout::kernel_at`]   | the [`Kernel`]: the `Log`, its boot-time `LogDescriptor`, the crash sequence's [`CrashState`] (its check-in flags) and the simulation's log-call tracking |
//! | [`Layout::arena_at`]    | the log's rings and main log, sized at boot for the CPU count and `--ring-bytes` ([`Log::attach_arena`]) |
//!
//! Every part is sized for the scenario's CPU count and ring size, so the region (and a dump
//! reader's scan of it) grows linearly with the CPUs, not with [`MAX_CPUS`].
//!
//! Whatever becomes of the crash path, the log is in this memory: when the crashing CPU dies
//! (`--die-in-drain`), the capture stage scans the region for the descriptor
//! ([`nmilog::recover::scan`]) — no address is passed to it — and rebuilds the image from the rings
//! and the main log as the dead process left them.

use core::mem::size_of;
use std::sync::atomic::{AtomicPtr, Ordering};

use nmilog::recover::AtomicUsize;

use nmilog::handover;
use nmilog::host::HostPlatform;
use nmilog::recover::LogDescriptor;
use nmilog::Log;

use super::config::{DEPTH, MAIN_WORDS, MAX_CPUS};
use super::track::SimCpu;
use super::truth;
use crate::crash_state::CrashState;

/// The simulation's log: up to [`MAX_CPUS`] CPUs, its rings and main log carved at boot from the
/// region's arena (as a kernel sizes its log from `log_buf_len=` and the CPU count it found).
pub(crate) type SimLog = Log<HostPlatform, MAX_CPUS, 0, 0, DEPTH>;

/// Everything of the simulated kernel a dump reader may need, in the handover region.
#[repr(C)]
pub(crate) struct Kernel {
    /// The log (all-zero bytes are `Log::new(HostPlatform::new(0))`; the CPU count is set at boot).
    pub(crate) log: SimLog,
    /// The log's descriptor, written once at boot.
    pub(crate) desc: LogDescriptor<{ SimLog::DESCRIPTOR_WORDS }>,
    /// The crash sequence's state (the check-in flags the descriptor names).
    pub(crate) crash: CrashState<MAX_CPUS>,
    /// Ground-truth tracking of every CPU's log calls.
    pub(crate) sim: [SimCpu; MAX_CPUS],
}

/// Where things are in a region for `cpus` CPUs with rings of `ring_words` words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Bytes of the ground-truth block (the image follows it).
    pub(crate) truth_len: usize,
    /// Bytes for the handover image.
    pub(crate) image_len: usize,
    /// Offset of the [`Kernel`] (page-aligned).
    pub(crate) kernel_at: usize,
    /// Offset of the log's arena (page-aligned).
    pub(crate) arena_at: usize,
    /// Words of the arena.
    pub(crate) arena_words: usize,
    /// Words of each ring.
    pub(crate) ring_words: usize,
    /// Bytes in the region.
    pub(crate) len: usize,
}

impl Layout {
    pub(crate) fn new(cpus: usize, ring_words: usize) -> Layout {
        let truth_len = truth::bytes(cpus);
        let image_len = handover::max_image_size(cpus, DEPTH, ring_words, MAIN_WORDS);
        let kernel_at = (truth_len + image_len).next_multiple_of(4096);
        let arena_at = (kernel_at + size_of::<Kernel>()).next_multiple_of(4096);
        let arena_words = SimLog::arena_words(cpus, DEPTH, ring_words, MAIN_WORDS);
        Layout {
            truth_len,
            image_len,
            kernel_at,
            arena_at,
            arena_words,
            ring_words,
            len: arena_at + arena_words * size_of::<usize>(),
        }
    }
}

const _: () = assert!(core::mem::align_of::<Kernel>() <= 4096);

static KERNEL: AtomicPtr<Kernel> = AtomicPtr::new(core::ptr::null_mut());

/// Boot: takes the [`Kernel`] at `base + layout.kernel_at` (zero-filled memory of the fresh
/// mapping), initialises what zero is not the initial value of, sets the CPU count and writes the
/// descriptor (after the CPU count is final, as `Log::describe` requires). Call once, before any
/// CPU runs. `Err`: the descriptor did not fit (a bug in the sizes).
///
/// # Safety
/// `base` is a live, writable, page-aligned mapping of `layout.len` bytes, zero-filled, that lives
/// (and is not otherwise referenced) for the rest of the process.
pub(crate) unsafe fn boot(
    base: *mut u8,
    layout: &Layout,
    cpus: usize,
) -> Result<&'static Kernel, String> {
    // SAFETY: inside the mapping (the caller's contract), page-aligned (align of Kernel <= 4096).
    let p = unsafe { base.add(layout.kernel_at) } as *mut Kernel;
    // SAFETY: the crash state and the tracking are written in place with their `new()` values
    // (small, unlike the log); the pointers are in bounds and aligned (see above), and nothing
    // references them yet.
    unsafe {
        core::ptr::addr_of_mut!((*p).crash).write(CrashState::new());
        core::ptr::addr_of_mut!((*p).sim).write([const { SimCpu::new() }; MAX_CPUS]);
    }
    // SAFETY: all-zero bytes are a valid `Log<HostPlatform, ..>` and `LogDescriptor` (every field
    // an atomic whose `new()` value is 0); the rest was initialised above. The mapping lives for the
    // rest of the process (caller's contract).
    let k: &'static Kernel = unsafe { &*p };
    k.log.platform().set_cpu_count(cpus);
    // SAFETY: inside the mapping (the caller's contract: `layout.len` bytes), page-aligned, zero
    // bytes (valid `AtomicUsize`s), referenced by nothing else, for the rest of the process.
    let arena: &'static [AtomicUsize] = unsafe {
        std::slice::from_raw_parts(
            base.add(layout.arena_at) as *const AtomicUsize,
            layout.arena_words,
        )
    };
    k.log
        .attach_arena(arena, layout.ring_words, MAIN_WORDS)
        .map_err(|e| format!("attaching the log's arena: {e}"))?;
    k.desc
        .describe(&k.log, Some(k.crash.stop_flags()))
        .map_err(|e| format!("describing the log: {e:?}"))?;
    // LMM(hostmem:A): Release, pairs with LMM(hostmem:B) in `kernel`: a CPU thread or handler that
    // finds the kernel sees its memory initialised and the log described.
    KERNEL.store(p, Ordering::Release);
    Ok(k)
}

/// The kernel booted by [`boot`].
///
/// # Panics
/// Before [`boot`] (a bug: every CPU and handler runs after it).
pub(crate) fn kernel() -> &'static Kernel {
    // LMM(hostmem:B): Acquire, pairs with LMM(hostmem:A) in `boot`.
    let p = KERNEL.load(Ordering::Acquire);
    assert!(
        !p.is_null(),
        "the kernel's memory is set up before anything runs"
    );
    // SAFETY: set once by `boot` to a `Kernel` that lives for the rest of the process.
    unsafe { &*p }
}
