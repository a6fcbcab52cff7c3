//! # nmilog-ppc64 — the crash-shutdown sequence that cannot deadlock
//!
//! Linux powerpc's crash path (`default_machine_crash_shutdown()`) stops every other CPU with an NMI
//! IPI (a system reset), waits a bounded time for them to check in, prints "IPI complete", masks every
//! interrupt source through RTAS (`ibm,int-off`, under the global RTAS lock), prints
//! "kexec: Starting switchover sequence." and jumps into the capture kernel. In 2020 it deadlocked
//! twice: on printk's `logbuf_lock` and on the RTAS lock, each held by a CPU the NMI had frozen.
//!
//! This crate is that sequence written so that it cannot deadlock, portable and `no_std`, against a
//! small [`Machine`] trait:
//!
//! * every log call goes to nmilog's per-CPU rings (no lock: [`nmilog::Log::crash_enter`] puts every
//!   CPU on the NMI-safe path);
//! * the check-in wait is bounded by a timeout *and* an iteration count ([`ShutdownConfig`]);
//! * the firmware lock is owner-aware ([`RtasLock`]): the crashing CPU takes it over from a CPU frozen
//!   *outside* the firmware call, and masks at the interrupt presenter instead when the holder was
//!   frozen *inside* the call (PAPR forbids a second non-reentrant RTAS call; see [`rtas`]);
//! * the log is drained without a lock ([`nmilog::Log::drain_on_crash`]) and serialised into a
//!   handover image ([`nmilog::handover::write_image`]) that the capture stage parses.
//!
//! The sequence itself is [`crash_shutdown`]; each stopped CPU runs [`on_nmi_stop`] from its NMI
//! handler. The `std` feature adds `host` (Linux), an SMP simulation on POSIX threads and signals that runs
//! the sequence for real (`cargo run --release --example crash`), together with the 2020 locked design
//! for comparison.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod machine;
pub mod rtas;
pub mod shutdown;

// The host simulation needs `const` loggers, which loom's atomics cannot give.
#[cfg(all(feature = "std", target_os = "linux", not(loom)))]
pub mod host;

pub use crate::machine::{Machine, RtasArgs, SavedRegs};
pub use crate::rtas::{CrashAcquire, RtasLock};
pub use crate::shutdown::{
    crash_shutdown, on_nmi_stop, CrashState, MaskOutcome, MaskPath, ShutdownConfig, ShutdownReport,
};
