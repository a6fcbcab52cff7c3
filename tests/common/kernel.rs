//! A kernel in host memory, as the recovery tests model it: a `Log`, its descriptor and the crash
//! sequence's check-in flags in one zero-filled allocation (as a kernel's `.bss`), leaked so that
//! threads frozen mid-write can keep using it; its CPUs are threads.

use std::alloc::{alloc_zeroed, Layout};
use std::thread;

use nmilog::host::HostPlatform;
use nmilog::recover::{AtomicUsize, LogDescriptor, StopFlags};
use nmilog::{FlushPolicy, Log};

/// Zero-filled memory for a `T`, leaked.
///
/// # Safety
///
/// All-zero bytes must be a valid `T`.
pub unsafe fn leak_zeroed<T>() -> &'static T {
    let layout = Layout::new::<T>();
    assert!(layout.size() > 0);
    // SAFETY: a non-zero-sized layout.
    let p = unsafe { alloc_zeroed(layout) };
    assert!(!p.is_null());
    // SAFETY: aligned and sized for `T`, zero-filled, never freed; the caller vouches that all-zero
    // bytes are a valid `T`.
    unsafe { &*(p as *const T) }
}

/// Boots a zero-filled kernel's `log` (all its CPUs, deferred flushes) and describes it in `desc`,
/// with `checked_in` as the crash sequence's check-in flags (one word per CPU).
pub fn boot<const CPUS: usize, const R: usize, const M: usize, const D: usize, const N: usize>(
    log: &Log<HostPlatform, CPUS, R, M, D>,
    desc: &LogDescriptor<N>,
    checked_in: &[AtomicUsize; CPUS],
) {
    log.platform().set_cpu_count(CPUS);
    log.set_flush_policy(FlushPolicy::Deferred);
    let stop = StopFlags::new(checked_in.as_ptr() as usize, size_of::<usize>());
    desc.describe(log, Some(stop)).unwrap();
}

/// Runs `f` on a thread registered as CPU `cpu` and returns what it returns.
pub fn on_cpu<T: Send + 'static>(cpu: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::spawn(move || {
        HostPlatform::register_cpu(cpu);
        f()
    })
    .join()
    .unwrap()
}
