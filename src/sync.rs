//! The one place the crate gets its atomics from.
//!
//! Normal builds use [`portable_atomic`] (so targets without native atomics of some width still
//! build; the NMI path only ever uses plain `load`/`store` of pointer-sized words, which are native
//! on every supported target). Under `cfg(loom)` the same names resolve to loom's model-checked
//! atomics and fences, so the model checker exercises the real ring, flush and drain code rather than
//! a copy (portable-atomic has no loom support, so the swap is ours).
//!
//! Loom's atomics cannot be built in a `const` context; the constructors that need one are written
//! twice (`const fn` and a loom variant) with identical bodies (the word arrays come from
//! [`zeroed_words`], which has a variant of its own).

#[cfg(not(loom))]
pub(crate) use portable_atomic::{fence, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicUsize, Ordering};

/// A compiler-only barrier: orders this CPU's accesses against an interrupt or NMI handler that runs
/// on the same CPU (a "signal fence"). Loom models threads, not interrupts, and already keeps program
/// order within a thread, so the plain core barrier is correct in both builds.
#[inline(always)]
pub(crate) fn signal_fence() {
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// `[AtomicUsize; N]` filled with zeros, in a `const` context.
#[cfg(not(loom))]
pub(crate) const fn zeroed_words<const N: usize>() -> [AtomicUsize; N] {
    [const { AtomicUsize::new(0) }; N]
}

/// `[AtomicUsize; N]` filled with zeros (loom atomics are not `const`-constructible).
#[cfg(loom)]
pub(crate) fn zeroed_words<const N: usize>() -> [AtomicUsize; N] {
    core::array::from_fn(|_| AtomicUsize::new(0))
}
