//! A [`log`](https://docs.rs/log) backend (feature `log`): switch a `log`-based program to nmilog
//! with one init call.
//!
//! ```
//! use nmilog::{host::HostPlatform, Log};
//!
//! static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
//!
//! HostPlatform::register_cpu(0);
//! nmilog::facade::init(&LOG, log::LevelFilter::Debug).unwrap();
//! log::info!(target: "net", "link up at {} Mb/s", 1000);
//!
//! let mut r = LOG.main_reader();
//! let mut rec = nmilog::RecordBuf::new();
//! r.read(&LOG, &mut rec);
//! assert_eq!(rec.text(), Some("net: link up at 1000 Mb/s"));
//! assert_eq!(rec.header.level, nmilog::Level::Info as u8);
//! ```
//!
//! # What a `log::Record` becomes
//!
//! * **Level**: `Error` → [`Level::Err`] (3), `Warn` → [`Level::Warning`] (4), `Info` →
//!   [`Level::Info`] (6), `Debug` → [`Level::Debug`] (7), and `Trace` → [`Level::Debug`] (7) too:
//!   printk has no level below debug. Use [`TRACE_PREFIX`] to tell trace lines apart: a trace
//!   record's text starts with it (`"trace: "`) — see [`map_level`].
//! * **Target**: the text is `"{target}: {message}"` (the kernel's `pr_fmt` convention; `log`'s
//!   default target is the module path). [`Facade::without_target`] leaves it out.
//! * **Key-values** (feature `kv`): appended after the message as ` key=value` pairs, in the order
//!   the record yields them, values formatted with `Display`. `log::info!(a = 1; "x")` gives
//!   `"target: x a=1"`.
//! * **No allocation**: the text is formatted once, straight into the core's fixed per-call
//!   buffer ([`crate::LINE_MAX`] bytes; a longer line is cut and marked
//!   [`flags::TRUNCATED`](crate::record::flags::TRUNCATED)).
//!
//! # NMI context
//!
//! The backend calls [`LogSink::log_fmt`], which in NMI or crash context only appends to the
//! current CPU's ring (no lock, no read-modify-write). `log`'s own dispatch is a plain atomic load
//! of the logger pointer and of the max level, so `log::error!` in an NMI handler is safe — provided
//! the handler called [`Log::nmi_enter`](crate::Log::nmi_enter) (or entered with
//! [`Log::enter`](crate::Log::enter)).
//!
//! # Targets without pointer-sized compare-and-swap
//!
//! [`init`] uses `log::set_logger` and exists only where `target_has_atomic = "ptr"`. Elsewhere
//! (thumbv6m) `log` only offers the `unsafe` `set_logger_racy`, and so does this module:
//! [`init_racy`] is an `unsafe fn` whose contract is yours — call it once, at boot, before any
//! other CPU or interrupt handler can log.

#[cfg(not(nmilog_loom))]
use core::cell::UnsafeCell;
use core::fmt;

#[cfg(not(nmilog_loom))]
use crate::sync::{AtomicUsize, Ordering};

use crate::global::LogSink;
use crate::Level;

/// What a `log::Level::Trace` record's text starts with (trace maps to [`Level::Debug`]).
///
/// ```
/// use log::{Level::Trace, Log as _, Record};
/// use nmilog::{facade::{Facade, TRACE_PREFIX}, Level, Log, RecordBuf};
/// # use nmilog::doc_support::OneCpu;
/// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// static FACADE: Facade = Facade::new(&LOG).without_target();
/// FACADE.log(&Record::builder().level(Trace).args(format_args!("irq {} masked", 5)).build());
/// let mut rec = RecordBuf::new();
/// LOG.main_reader().read(&LOG, &mut rec);
/// assert_eq!(rec.header.level, Level::Debug as u8);
/// assert_eq!(rec.text().unwrap().strip_prefix(TRACE_PREFIX), Some("irq 5 masked"));
/// ```
pub const TRACE_PREFIX: &str = "trace: ";

/// Maps a `log` level to a printk level. Trace has no printk counterpart and becomes
/// [`Level::Debug`]; its text is prefixed with [`TRACE_PREFIX`] by the backend.
///
/// ```
/// use nmilog::{facade::map_level, Level};
/// assert_eq!(map_level(log::Level::Error), Level::Err);
/// assert_eq!(map_level(log::Level::Warn), Level::Warning);
/// assert_eq!(map_level(log::Level::Info), Level::Info);
/// assert_eq!(map_level(log::Level::Debug), Level::Debug);
/// assert_eq!(map_level(log::Level::Trace), Level::Debug);
/// ```
pub const fn map_level(level: log::Level) -> Level {
    match level {
        log::Level::Error => Level::Err,
        log::Level::Warn => Level::Warning,
        log::Level::Info => Level::Info,
        log::Level::Debug | log::Level::Trace => Level::Debug,
    }
}

/// A `log::Log` implementation over a `&'static dyn` [`LogSink`] (any [`Log`](crate::Log)).
///
/// Use it directly when you want your own `static` (for instance to wrap it), or call [`init`],
/// which keeps one for you.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// use nmilog::{facade::Facade, Log};
/// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// static FACADE: Facade = Facade::new(&LOG).without_target();
///
/// use log::Log as _;
/// FACADE.log(&log::Record::builder().args(format_args!("hi {}", 2)).level(log::Level::Warn).build());
/// let mut rec = nmilog::RecordBuf::new();
/// LOG.main_reader().read(&LOG, &mut rec);
/// assert_eq!(rec.text(), Some("hi 2"));
/// ```
pub struct Facade {
    sink: &'static dyn LogSink,
    show_target: bool,
}

/// Shows whether the `target: ` prefix is on (the sink is a trait object without `Debug`).
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{facade::Facade, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// static FACADE: Facade = Facade::new(&LOG).without_target();
/// assert_eq!(format!("{FACADE:?}"), "Facade { show_target: false, .. }");
/// ```
impl fmt::Debug for Facade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Facade")
            .field("show_target", &self.show_target)
            .finish_non_exhaustive()
    }
}

impl Facade {
    /// A backend writing to `sink`, with the `target: ` prefix.
    ///
    /// ```
    /// use log::{Log as _, Record};
    /// use nmilog::{facade::Facade, Log, RecordBuf};
    /// # use nmilog::doc_support::OneCpu;
    /// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// static FACADE: Facade = Facade::new(&LOG);
    /// FACADE.log(&Record::builder().target("pci").args(format_args!("bus {} up", 0)).build());
    /// let mut rec = RecordBuf::new();
    /// LOG.main_reader().read(&LOG, &mut rec);
    /// assert_eq!(rec.text(), Some("pci: bus 0 up"));
    /// ```
    pub const fn new(sink: &'static dyn LogSink) -> Self {
        Facade {
            sink,
            show_target: true,
        }
    }

    /// The same backend without the `target: ` prefix.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{facade::Facade, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// static FACADE: Facade = Facade::new(&LOG).without_target();
    /// ```
    pub const fn without_target(self) -> Self {
        Facade {
            sink: self.sink,
            show_target: false,
        }
    }

    /// The sink records go to.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{facade::Facade, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// static FACADE: Facade = Facade::new(&LOG);
    /// FACADE.sink().flush();
    /// ```
    pub fn sink(&self) -> &'static dyn LogSink {
        self.sink
    }
}

impl log::Log for Facade {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        emit(self.sink, self.show_target, record);
    }

    fn flush(&self) {
        self.sink.flush();
    }
}

/// Formats one record into the sink (shared by [`Facade`] and the [`init`] backend).
/// (`log`'s macros filter by the max level before calling the backend; a record handed to
/// `log()` directly is always logged.)
fn emit(sink: &dyn LogSink, show_target: bool, record: &log::Record<'_>) {
    let line = Line {
        record,
        show_target,
    };
    let _ = sink.log_fmt(map_level(record.level()), 0, format_args!("{}", line));
}

/// The text of a record: `[trace: ][target: ]message[ key=value…]`.
struct Line<'a, 'r> {
    record: &'a log::Record<'r>,
    show_target: bool,
}

impl fmt::Display for Line<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.record.level() == log::Level::Trace {
            f.write_str(TRACE_PREFIX)?;
        }
        if self.show_target && !self.record.target().is_empty() {
            f.write_str(self.record.target())?;
            f.write_str(": ")?;
        }
        fmt::write(f, *self.record.args())?;
        #[cfg(feature = "kv")]
        {
            let mut v = KvWriter { f };
            let _ = self.record.key_values().visit(&mut v);
        }
        Ok(())
    }
}

#[cfg(feature = "kv")]
struct KvWriter<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
}

#[cfg(feature = "kv")]
impl<'kvs> log::kv::VisitSource<'kvs> for KvWriter<'_, '_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        write!(self.f, " {}={}", key, value).map_err(|_| log::kv::Error::msg("fmt"))
    }
}

// ------------------------------------------------------------------ init
//
// The installed backend is a `static`, which loom's atomics cannot initialise: `GlobalFacade`, its
// `static` and the functions that install it exist only outside `cfg(nmilog_loom)`.

/// The backend [`init`] installs: the sink is written once, published by a state word.
#[cfg(not(nmilog_loom))]
struct GlobalFacade {
    /// 0: empty; 1: being written; 2: set.
    state: AtomicUsize,
    sink: UnsafeCell<Option<&'static dyn LogSink>>,
}

// SAFETY: `sink` is written once, by the caller that moved `state` from 0 to 1 (a compare-exchange,
// or — on targets without CAS — the single boot-time caller `init`'s contract requires), before
// `state` is set to 2 with Release; it is only read after an Acquire load of 2, and never written
// again.
#[cfg(not(nmilog_loom))]
unsafe impl Sync for GlobalFacade {}

#[cfg(not(nmilog_loom))]
static GLOBAL: GlobalFacade = GlobalFacade {
    state: AtomicUsize::new(0),
    sink: UnsafeCell::new(None),
};

#[cfg(not(nmilog_loom))]
impl GlobalFacade {
    fn get(&self) -> Option<&'static dyn LogSink> {
        // LMM(facade:B): pairs with LMM(facade:A) in `init`/`init_racy`: a reader that sees state 2
        // sees the `sink` written before it.
        if self.state.load(Ordering::Acquire) != 2 {
            return None;
        }
        // SAFETY: state 2 was stored (Release) after the only write of `sink`; see the Sync impl.
        unsafe { *self.sink.get() }
    }
}

#[cfg(not(nmilog_loom))]
impl log::Log for GlobalFacade {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && self.get().is_some()
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Some(s) = self.get() {
            emit(s, true, record);
        }
    }
    fn flush(&self) {
        if let Some(s) = self.get() {
            s.flush();
        }
    }
}

/// Why [`init`] failed.
///
/// ```
/// use nmilog::facade::{init, InitError};
/// use nmilog::{host::HostPlatform, Log};
/// static LOG: Log<HostPlatform, 1, 256, 1024> = Log::new(HostPlatform::new(1));
/// # struct Serial;
/// # impl log::Log for Serial {
/// #     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
/// #     fn log(&self, _: &log::Record<'_>) {}
/// #     fn flush(&self) {}
/// # }
/// # static SERIAL: Serial = Serial;
/// log::set_logger(&SERIAL).unwrap(); // an early-boot serial backend got there first
/// assert_eq!(init(&LOG, log::LevelFilter::Info), Err(InitError::OtherLogger));
/// assert_eq!(init(&LOG, log::LevelFilter::Info), Err(InitError::AlreadyInitialized));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// [`init`] was already called.
    AlreadyInitialized,
    /// Another `log` backend is already installed.
    OtherLogger,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitError::AlreadyInitialized => "nmilog::facade::init called twice",
            InitError::OtherLogger => "another log backend is already installed",
        })
    }
}

impl core::error::Error for InitError {}

/// Installs nmilog as the `log` backend: records go to `sink` (any `static`
/// [`Log`](crate::Log)), and `log`'s max level is set to `max_level`.
///
/// ```
/// use nmilog::{host::HostPlatform, Log};
/// static LOG: Log<HostPlatform, 1, 256, 1024> = Log::new(HostPlatform::new(1));
/// HostPlatform::register_cpu(0);
/// nmilog::facade::init(&LOG, log::LevelFilter::Info).unwrap();
/// assert!(nmilog::facade::init(&LOG, log::LevelFilter::Info).is_err());
/// log::debug!("filtered out by the max level");
/// log::warn!("kept");
/// let mut rec = nmilog::RecordBuf::new();
/// LOG.main_reader().read(&LOG, &mut rec);
/// assert!(rec.text().unwrap().ends_with(": kept"));
/// ```
///
/// Only on targets with pointer-sized CAS (where `log::set_logger` exists); elsewhere use
/// [`init_racy`], whose boot-time contract the caller must keep.
#[cfg(target_has_atomic = "ptr")]
#[cfg(not(nmilog_loom))]
pub fn init(sink: &'static dyn LogSink, max_level: log::LevelFilter) -> Result<(), InitError> {
    // Acquire pairs with nothing (stronger than needed): the winner reads the initial 0, never a
    // published state; the compare-exchange's atomicity alone makes it the only writer of `sink`.
    if GLOBAL
        .state
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return Err(InitError::AlreadyInitialized);
    }
    // SAFETY: this caller moved `state` from 0 to 1 with the CAS above, so it is the only writer,
    // and no reader looks at `sink` before state 2 (published with the Release store below).
    unsafe { *GLOBAL.sink.get() = Some(sink) };
    // LMM(facade:A): pairs with LMM(facade:B) in `GlobalFacade::get`: publishes `sink`.
    GLOBAL.state.store(2, Ordering::Release);
    log::set_logger(&GLOBAL).map_err(|_| InitError::OtherLogger)?;
    log::set_max_level(max_level);
    Ok(())
}

/// [`init`] for targets without pointer-sized CAS (thumbv6m and the like), where `log` offers only
/// `set_logger_racy` / `set_max_level_racy`. Available on every target.
///
/// # Safety
///
/// Call it once, at boot, on the boot CPU, before interrupts are enabled and before other CPUs
/// start: nothing may call `init`, `init_racy`, `log`'s setters or any `log` macro concurrently
/// with it (the same rule as [`set_global!`](crate::set_global) and as `log::set_logger_racy`).
///
/// ```
/// use nmilog::facade::init_racy;
/// use nmilog::host::HostPlatform;
/// use nmilog::Log;
///
/// static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
/// HostPlatform::register_cpu(0);
/// // SAFETY: the only thread, before anything logs: nothing races with the registration.
/// unsafe { init_racy(&LOG, log::LevelFilter::Info) }.unwrap();
/// log::info!("booted");
/// LOG.flush();
/// let mut rec = nmilog::RecordBuf::new();
/// LOG.main_reader().read(&LOG, &mut rec);
/// assert!(rec.text().unwrap().ends_with("booted"));
/// ```
#[cfg(not(nmilog_loom))]
pub unsafe fn init_racy(
    sink: &'static dyn LogSink,
    max_level: log::LevelFilter,
) -> Result<(), InitError> {
    // Acquire pairs with nothing (stronger than needed): only the value is used, and the caller's
    // contract rules out a concurrent `init`.
    if GLOBAL.state.load(Ordering::Acquire) != 0 {
        return Err(InitError::AlreadyInitialized);
    }
    GLOBAL.state.store(1, Ordering::Relaxed);
    // SAFETY: the caller's contract: no concurrent `init`/`init_racy`, so this is the only writer,
    // and no reader looks at `sink` before state 2 (published with the Release store below).
    unsafe { *GLOBAL.sink.get() = Some(sink) };
    // LMM(facade:A), as in `init`.
    GLOBAL.state.store(2, Ordering::Release);
    // SAFETY: the caller's contract is `set_logger_racy`'s and `set_max_level_racy`'s: nothing else
    // calls `log`'s setters or logs concurrently.
    unsafe {
        log::set_logger_racy(&GLOBAL).map_err(|_| InitError::OtherLogger)?;
        log::set_max_level_racy(max_level);
    }
    Ok(())
}
