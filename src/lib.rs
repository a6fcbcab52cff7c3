//! # nmilog — a logging core whose NMI and crash paths take no lock
//!
//! A kernel crashes. The crashing CPU stops every other CPU with an NMI, masks interrupts and jumps
//! into a capture kernel. A CPU stopped in the middle of `printk` may hold the log buffer lock; one
//! stopped in a firmware call may hold the firmware lock; the crash path deadlocks on its own
//! "IPI complete" message and the dump is lost (the 2020 powerpc thread). Busting the locks corrupts
//! state. nmilog's answer is log paths that take no lock at all:
//!
//! * **per-CPU seqlocked rings** ([`ring`], [`percpu`]): every CPU has one ring per context nesting
//!   depth, so each ring has exactly one writer and the write is plain atomic stores ordered by
//!   fences — no CAS, no `fetch_add`, safe in NMI context and on CAS-less targets. Each record is
//!   guarded by a sequence word that is odd while it is written, so readers detect torn and
//!   overwritten records instead of waiting;
//! * **context tracking**: task < irq < NMI < nested NMI, and a crash state; in NMI or crash context a
//!   log call only appends to its own ring;
//! * **a main log buffer** ([`Log`]): records merged from the rings in timestamp order by whoever owns
//!   the flush (taken with one compare-exchange, never waited for), read through `/dev/kmsg`-like
//!   cursors ([`MainReader`]);
//! * **a crash-time drain** ([`Log::drain_on_crash`]) that reads the main log and every ring — never
//!   writing anything a CPU that did not stop could also write — and hands every record, in timestamp
//!   order and exactly once, to a sink the crashing CPU owns, in bounded steps; records frozen
//!   mid-write on stopped CPUs are counted torn, those in flight on CPUs that did not stop are
//!   counted in flight;
//! * **a handover image** ([`handover`]) that the capture stage parses without trusting it.
//!
//! ```
//! use nmilog::{Log, Level, MainReader, RecordBuf, host::HostPlatform, ring::Read};
//!
//! static LOG: Log<HostPlatform, 4, 1024, 8192> = Log::new(HostPlatform::new(4));
//! nmilog::set_global!(LOG);
//! HostPlatform::register_cpu(0);
//!
//! nmilog::pr_info!("booting {} cpus", 4);
//! {
//!     let _nmi = LOG.enter(nmilog::ContextKind::Nmi);   // an NMI handler:
//!     nmilog::pr_emerg!("CPU 0 stopped");             // only appends to this CPU's ring
//! }
//! LOG.flush();
//!
//! let mut reader = MainReader::new();
//! let mut rec = RecordBuf::new();
//! while reader.read(&LOG, &mut rec) == Read::Record {
//!     println!("[{:>12}] C{} {}", rec.header.ts_ns, rec.header.cpu, rec.text().unwrap());
//! }
//! ```
//!
//! # Guarantees
//!
//! * **Wait-free**: every log call (task, irq, NMI, crash), reading a ring, and the crash drain. The
//!   normal-context flush is lock-free: it takes ownership with one compare-exchange or leaves.
//! * **What can be lost, and how it is counted**: records overwritten in a full ring before the flush
//!   read them (per ring, exact), records frozen mid-write by a crash (torn, per ring), calls refused
//!   for recursion, size or nesting depth (dropped, per ring / CPU), calls from a bad CPU id
//!   ([`Log::bad_cpu_dropped`]), and records a main-log reader missed because the main log wrapped
//!   ([`MainReader::missed`]), and log calls in flight on a CPU that did not stop when the crash
//!   drain ran. The crash drain ends its output with the per-ring counts.
//! * **Never delivered**: a record whose bytes changed while it was read, or whose writer never
//!   committed it.
//!
//! # CAS-less targets
//!
//! The NMI path needs only pointer-sized atomic loads and stores. The normal-context flush (one
//! compare-exchange for ownership) and crash election need read-modify-write: on targets without it
//! (thumbv6m) enable `critical-section` or `unsafe-assume-single-core` (forwarded to portable-atomic,
//! as heapless does); without either, [`Log::flush`] does not exist, the main log stays empty, and
//! records come out through the crash drain ([`Log::drain_on_crash`], [`handover::write_image`]),
//! which needs no read-modify-write.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

pub mod console;
#[cfg(feature = "defmt")]
pub mod defmt_logger;
#[doc(hidden)]
pub mod doc_support;
pub mod escape;
#[cfg(feature = "log")]
pub mod facade;
pub mod fmt;
pub mod global;
pub mod handover;
#[cfg(feature = "std")]
pub mod host;
mod log;
pub mod percpu;
pub mod platform;
/// The memory-ordering protocol: every barrier pair (its `LMM` labels) in the crate, in one table.
///
#[doc = include_str!("PROTOCOL.md")]
pub mod protocol {}
pub mod ratelimit;
pub mod record;
#[cfg(not(nmilog_loom))]
pub mod recover;
pub mod ring;
mod sync;
#[cfg(all(test, not(nmilog_loom)))]
mod tests;

pub use crate::fmt::{LINE_MAX, TRUNCATION_MARKER};
pub use crate::log::{
    AppendError, ArenaError, ContextGuard, CpuCounters, CrashEnterError, CrashSink, DrainError,
    DrainReport, FlushHook, FlushPolicy, FlushReport, FlushStep, Log, MainReader, Origin, RunSink,
};
pub use crate::platform::Platform;
pub use crate::record::{ContextKind, Header, Level, RecordBuf, HEADER_BYTES, MAX_PAYLOAD};

/// The README's code (its usage example), compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
