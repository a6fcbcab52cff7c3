//! The one place the crate gets its atomics from.
//!
//! Normal builds use [`portable_atomic`] (so targets without native atomics of some width still
//! build; the NMI path only ever uses plain `load`/`store` of pointer-sized words, which are native
//! on every supported target). Under the crate-private `cfg(nmilog_loom)` (set with
//! `RUSTFLAGS="--cfg nmilog_loom"`, as crossbeam uses `crossbeam_loom`, so that a downstream crate
//! building with loom for its own models does not switch this crate over) the same names resolve to
//! loom's model-checked atomics and fences, so the model checker exercises the real ring, flush,
//! drain and console code rather than a copy (portable-atomic has no loom support, so the swap is
//! ours).
//!
//! Loom's atomics cannot be built in a `const` context. [`const_or_loom_fn!`] writes a constructor
//! once and expands it to a `const fn` normally and to a plain `fn` under loom; inside it,
//! [`array_of!`] builds an array of non-`Copy` values in either build. A `static` cannot hold loom
//! atomics at all: the few process-wide registration statics (the global logger, the rate-limit
//! clock, the `log` backend) are compiled only outside loom.

// Every atomic type the crate uses, from one place (some only on some targets or features).
#[allow(unused_imports)]
#[cfg(not(nmilog_loom))]
pub(crate) use portable_atomic::{fence, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
// 64-bit atomics only where the target has them natively: portable-atomic has no `AtomicU64` on
// 32-bit targets without its `fallback` feature (riscv32imac, thumbv6m).
#[allow(unused_imports)]
#[cfg(all(not(nmilog_loom), target_has_atomic = "64"))]
pub(crate) use portable_atomic::AtomicU64;

#[allow(unused_imports)]
#[cfg(nmilog_loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

/// A busy-wait hint for a bounded polling loop (the console handover wait). Under loom it is loom's
/// `spin_loop`, which yields to the other model threads: the model checker then explores the
/// waiter's bound without treating each poll as a fresh interleaving.
#[allow(unused_imports)]
#[cfg(not(nmilog_loom))]
pub(crate) use core::hint::spin_loop;
#[allow(unused_imports)]
#[cfg(nmilog_loom)]
pub(crate) use loom::hint::spin_loop;

/// A cell whose accesses loom checks for data races (tokio's `loom::cell` shape): normally a thin
/// wrapper around [`core::cell::UnsafeCell`], under `cfg(nmilog_loom)` loom's own cell. Access goes
/// through `with` (shared) and `with_mut` (exclusive) closures that receive the raw pointer.
#[cfg(not(nmilog_loom))]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(nmilog_loom))]
impl<T> UnsafeCell<T> {
    /// A cell holding `value`.
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(core::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a pointer for reading (the caller guarantees no concurrent writer).
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a pointer for writing (the caller guarantees exclusive access).
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(nmilog_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// A compiler-only barrier: orders this CPU's accesses against an interrupt or NMI handler that runs
/// on the same CPU (a "signal fence"). Loom models threads, not interrupts, and already keeps program
/// order within a thread, so the plain core barrier is correct in both builds.
///
/// Every call site names its pair (see `src/PROTOCOL.md`): LMM(nest:A), LMM(nest:B) (context
/// depth), LMM(guard:A) (a ring's recursion guard), LMM(cursor:C) (the flush cursor's two words),
/// LMM(defmt:A), LMM(defmt:B) (a defmt slot's `nest` word).
#[inline(always)]
pub(crate) fn signal_fence() {
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// Adds `n` to a counter that several CPUs may bump (drop counts): a native read-modify-write where
/// the target has one — never portable-atomic's emulation, which the NMI path must not depend on.
/// Without one the count is best effort (a racing increment can be lost), never UB.
#[inline(always)]
pub(crate) fn add_relaxed(counter: &AtomicUsize, n: usize) {
    #[cfg(target_has_atomic = "ptr")]
    counter.fetch_add(n, Ordering::Relaxed);
    #[cfg(not(target_has_atomic = "ptr"))]
    {
        let v = counter.load(Ordering::Relaxed);
        counter.store(v.wrapping_add(n), Ordering::Relaxed);
    }
}

/// Takes a counter's value and leaves 0 (exact with native read-modify-write, as [`add_relaxed`]).
#[inline(always)]
pub(crate) fn take_relaxed(counter: &AtomicUsize) -> usize {
    #[cfg(target_has_atomic = "ptr")]
    {
        counter.swap(0, Ordering::Relaxed)
    }
    #[cfg(not(target_has_atomic = "ptr"))]
    {
        let v = counter.load(Ordering::Relaxed);
        counter.store(0, Ordering::Relaxed);
        v
    }
}

/// Writes a constructor once: a `const fn` in normal builds (so loggers can be `static` and land in
/// `.bss`), a plain `fn` under `cfg(nmilog_loom)` (loom's atomics are not `const`-constructible).
///
/// ```ignore
/// const_or_loom_fn! {
///     /// An empty ring.
///     pub fn new() -> Self { RecordRing { head: AtomicUsize::new(0), data: array_of!(AtomicUsize::new(0); WORDS) } }
/// }
/// ```
macro_rules! const_or_loom_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        #[cfg(not(nmilog_loom))]
        $vis const fn $name($($arg: $ty),*) -> $ret $body

        $(#[$m])*
        #[cfg(nmilog_loom)]
        $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_or_loom_fn;

/// `[value; N]` for a value that is not `Copy` (an atomic, a struct of atomics): a `const` block
/// repeated normally, `core::array::from_fn` under loom. Usable inside [`const_or_loom_fn!`].
#[cfg(not(nmilog_loom))]
macro_rules! array_of {
    ($value:expr; $n:expr) => {
        [const { $value }; $n]
    };
}
#[cfg(nmilog_loom)]
macro_rules! array_of {
    ($value:expr; $n:expr) => {
        core::array::from_fn::<_, { $n }, _>(|_| $value)
    };
}
pub(crate) use array_of;
