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
//!   frozen *inside* the call (PAPR forbids a second non-reentrant RTAS call; see [`rtas`]); a
//!   machine whose sources are masked by hypervisor calls (XIVE: [`Machine::masks_through_hypervisor`])
//!   masks them that way whoever holds the lock;
//! * the log is drained without a lock and without writing anything another CPU could write
//!   ([`nmilog::Log::drain_on_crash`]: a CPU that never answered the NMI may still be running) into
//!   a handover image ([`nmilog::handover::write_image`]) that the capture stage parses.
//!
//! The sequence itself is [`crash_shutdown`]; each stopped CPU runs [`on_nmi_stop`] from its NMI
//! handler. The `std` feature adds `host` (Linux), an SMP simulation on POSIX threads and signals that runs
//! the sequence for real (`cargo run --release --example crash`), together with the 2020 locked design
//! for comparison.
//!
//! The sequence against a test [`Machine`] (its `kexec` unwinds instead of jumping, carrying the
//! image out; see [`Machine`] for the full fake) in which CPU 1 never answers the NMI:
//!
//! ```
//! # use nmilog::{host::HostPlatform, Log};
//! # use nmilog_ppc64::*;
//! # use nmilog_ppc64::doc_support::{crash, start, FakeMachine};
//! # static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
//! # static STATE: CrashState<2> = CrashState::new();
//! # start(); // quiet unwinding; this thread is CPU 0
//! use nmilog::handover;
//! let cfg = ShutdownConfig { ack_timeout_ns: 1_000_000, ..ShutdownConfig::new() }; // 1 ms
//! let (image, report) = crash(&FakeMachine::deaf(&LOG, &STATE), &RtasLock::new(), &cfg);
//! assert_eq!(report.not_answered, 1);
//! // The capture stage recovers the whole crash log from the handover image.
//! let img = handover::parse(&image).unwrap();
//! let texts: Vec<&str> = img.records().filter_map(|r| r.text()).collect();
//! assert!(texts.contains(&"crash: CPU 1 did not answer the NMI IPI within 1 ms"));
//! assert!(texts.contains(&"IPI complete"));
//! assert!(texts.contains(&"kexec: Starting switchover sequence."));
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

pub mod crash_state;
pub mod flight;
pub mod machine;
pub mod notes;
pub mod report;
pub mod rtas;
pub mod shutdown;

// Set-up shared by the doc examples: a fake machine and a crash helper (not part of the API).
#[cfg(feature = "std")]
#[doc(hidden)]
pub mod doc_support;

// The host simulation needs `const` loggers, which loom's atomics cannot give.
#[cfg(all(feature = "std", target_os = "linux", not(nmilog_loom)))]
pub mod host;

pub use crate::crash_state::CrashState;
pub use crate::flight::{Breadcrumb, Event, FlightRecorder};
pub use crate::machine::{CrashStage, DrainStep, Machine, RtasArgs, SavedRegs};
pub use crate::report::{CpuOutcome, MaskOutcome, MaskPath, ShutdownReport};
pub use crate::rtas::{CrashAcquire, RtasLock};
pub use crate::shutdown::{crash_shutdown, on_nmi_stop, ShutdownConfig};
