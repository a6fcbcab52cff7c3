//! The global logger behind the `printk!`/`pr_*!` macros.
//!
//! The logger is a `static` of the user's chosen [`Log`](crate::Log) type, registered once with
//! [`set_global!`](crate::set_global). Until then the macros do nothing (and count nothing: there is
//! nowhere to count). Registration stores one pointer with a plain atomic store, so it works on
//! targets without CAS; do it once at boot, before other CPUs log.
//!
//! ```
//! # use nmilog::doc_support::OneCpu;
//! use nmilog::{Level, Log, RecordBuf};
//! static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
//! nmilog::pr_warn!("too early: nowhere to go"); // not registered yet: dropped
//! nmilog::set_global!(LOG);
//! nmilog::pr_warn!("eth{}: tx timeout", 0);
//! assert_eq!(LOG.main().next_seq(), 1);
//! let mut rec = RecordBuf::new();
//! LOG.main_reader().read(&LOG, &mut rec);
//! assert_eq!(rec.header.level, Level::Warning as u8);
//! assert_eq!(rec.text(), Some("eth0: tx timeout"));
//! ```

use core::fmt;

#[cfg(not(nmilog_loom))]
use crate::sync::{AtomicPtr, Ordering};

use crate::{AppendError, Level};

/// The object-safe face of a [`Log`](crate::Log), used by the macros.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{FlushPolicy, Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// use nmilog::global::LogSink;
/// LOG.set_flush_policy(FlushPolicy::Deferred);
/// let sink: &dyn LogSink = &LOG; // any `Log`, whatever its parameters
/// sink.log_fmt(Level::Info, 0, format_args!("eth{}: link up", 0)).unwrap();
/// sink.append_raw(Level::Crit, 0, 0, b"raw bytes").unwrap();
/// assert_eq!(LOG.main().next_seq(), 0); // deferred: still in the CPU's ring
/// sink.flush();
/// assert_eq!(LOG.main().next_seq(), 2);
/// ```
pub trait LogSink: Sync {
    /// Formats and logs (see [`Log::log_fmt`](crate::Log::log_fmt)).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// use nmilog::{global::LogSink, record::flags, RecordBuf, LINE_MAX};
    /// let sink: &dyn LogSink = &LOG;
    /// sink.log_fmt(Level::Err, 0, format_args!("{:x>300}", "")).unwrap(); // too long
    /// let mut rec = RecordBuf::new();
    /// LOG.main_reader().read(&LOG, &mut rec); // normal context: flushed at once
    /// assert_eq!(rec.payload().len(), LINE_MAX);
    /// assert_eq!(rec.header.flags & flags::TRUNCATED, flags::TRUNCATED);
    /// ```
    fn log_fmt(
        &self,
        level: Level,
        flags: u8,
        args: fmt::Arguments<'_>,
    ) -> Result<u64, AppendError>;
    /// The NMI path (see [`Log::append_raw`](crate::Log::append_raw)).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// use nmilog::{global::LogSink, AppendError, MAX_PAYLOAD};
    /// let sink: &dyn LogSink = &LOG;
    /// assert_eq!(sink.append_raw(Level::Emerg, 0, 0, b"NMI watchdog: cpu 0"), Ok(0));
    /// assert_eq!(LOG.main().next_seq(), 0); // the NMI path never flushes
    /// let big = [0u8; MAX_PAYLOAD + 1];
    /// assert_eq!(sink.append_raw(Level::Emerg, 0, 0, &big), Err(AppendError::TooLarge));
    /// ```
    fn append_raw(
        &self,
        level: Level,
        facility: u8,
        flags: u8,
        payload: &[u8],
    ) -> Result<u64, AppendError>;
    /// A normal-context flush attempt.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// use nmilog::{global::LogSink, ContextKind};
    /// let sink: &dyn LogSink = &LOG;
    /// sink.append_raw(Level::Info, 0, 0, b"pending").unwrap();
    /// {
    ///     let _nmi = LOG.enter(ContextKind::Nmi);
    ///     sink.flush(); // not a normal context: does nothing
    /// }
    /// assert_eq!(LOG.main().next_seq(), 0);
    /// sink.flush();
    /// assert_eq!(LOG.main().next_seq(), 1);
    /// ```
    fn flush(&self);
}

impl<
        P: crate::Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > LogSink for crate::Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    fn log_fmt(
        &self,
        level: Level,
        flags: u8,
        args: fmt::Arguments<'_>,
    ) -> Result<u64, AppendError> {
        crate::Log::log_fmt(self, level, flags, args)
    }
    fn append_raw(
        &self,
        level: Level,
        facility: u8,
        flags: u8,
        payload: &[u8],
    ) -> Result<u64, AppendError> {
        crate::Log::append_raw(self, level, facility, flags, payload)
    }
    fn flush(&self) {
        #[cfg(nmilog_cas)]
        let _ = crate::Log::flush(self);
    }
}

// The registry is a `static`, which loom's atomics cannot initialise: it, and the functions that
// use it (registration, lookup, and the macros' entry point), exist only outside `cfg(nmilog_loom)`.
// The models drive a `Log` directly, never through the global logger.
#[cfg(not(nmilog_loom))]
static GLOBAL: AtomicPtr<&'static dyn LogSink> = AtomicPtr::new(core::ptr::null_mut());

/// Registers the global logger (use [`set_global!`](crate::set_global), which builds the
/// `&'static &'static dyn LogSink` for you).
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::Log;
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// use nmilog::global::{set_global_sink, LogSink};
/// static SINK: &dyn LogSink = &LOG; // what `set_global!(LOG)` builds
/// set_global_sink(&SINK);
/// nmilog::pr_err!("disk {} failed", 2);
/// assert_eq!(LOG.main().next_seq(), 1);
/// ```
#[cfg(not(nmilog_loom))]
pub fn set_global_sink(sink: &'static &'static dyn LogSink) {
    // LMM(global:A): Release, pairs with LMM(global:B), the Acquire in `global()`: a CPU that sees
    // the pointer sees the logger (and whatever was set up before registering it).
    GLOBAL.store(sink as *const _ as *mut _, Ordering::Release);
}

/// The registered logger, if any.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// assert!(nmilog::global::global().is_none()); // early boot: the macros do nothing
/// nmilog::set_global!(LOG);
/// let g = nmilog::global::global().unwrap();
/// assert_eq!(g.append_raw(Level::Info, 0, 0, b"via the global"), Ok(0));
/// ```
#[inline]
#[cfg(not(nmilog_loom))]
pub fn global() -> Option<&'static dyn LogSink> {
    // LMM(global:B): pairs with LMM(global:A) in `set_global_sink`.
    let p = GLOBAL.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: the only non-null value ever stored is a `&'static &'static dyn LogSink` (set_global_sink),
    // which is valid for the rest of the program and immutable.
    Some(unsafe { *p })
}

/// Formats and logs through the global logger (what the macros call).
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{Level, Log};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// use nmilog::global::log_fmt;
/// log_fmt(Level::Info, 0, format_args!("dropped")); // no logger yet: a no-op
/// nmilog::set_global!(LOG);
/// log_fmt(Level::Info, 0, format_args!("kept"));
/// assert_eq!(LOG.main().next_seq(), 1);
/// ```
#[doc(hidden)]
#[inline]
#[cfg(not(nmilog_loom))]
pub fn log_fmt(level: Level, flags: u8, args: fmt::Arguments<'_>) {
    if let Some(g) = global() {
        let _ = g.log_fmt(level, flags, args);
    }
}

/// Registers a `static` [`Log`](crate::Log) as the global logger used by `printk!` and `pr_*!`.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// use nmilog::Log;
/// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// nmilog::set_global!(LOG);
/// nmilog::pr_info!("booted with {} cpu", 1);
/// assert_eq!(LOG.main().next_seq(), 1);
/// ```
#[macro_export]
macro_rules! set_global {
    ($log:path) => {{
        static SINK: &'static dyn $crate::global::LogSink = &$log;
        $crate::global::set_global_sink(&SINK);
    }};
}

/// `printk!(level, "fmt", args…)`: logs at a [`Level`](crate::Level) through the global logger.
///
/// ```
/// nmilog::printk!(nmilog::Level::Notice, "no logger registered: {}", "nothing happens");
/// ```
#[macro_export]
macro_rules! printk {
    ($level:expr, $($arg:tt)+) => {
        $crate::global::log_fmt($level, 0, ::core::format_args!($($arg)+))
    };
}

/// Defines `pr_<level>!` for each level: `printk!` at that [`Level`](crate::Level). (The
/// rate-limited and once-per-call-site variants come from the same kind of table in
/// [`ratelimit`](crate::ratelimit).)
macro_rules! pr_macros {
    ($d:tt $( $pr:ident $level:ident $n:literal $name:literal ; )*) => { $(
        #[doc = concat!("Logs at level ", $n, " (", $name, ").")]
        ///
        /// ```
        #[doc = concat!("nmilog::", stringify!($pr), "!(\"x={}\", 1);")]
        /// ```
        #[macro_export]
        macro_rules! $pr {
            ($d($d arg:tt)+) => { $crate::printk!($crate::Level::$level, $d($d arg)+) };
        }
    )* };
}

pr_macros! { $
    pr_emerg Emerg 0 "emerg";
    pr_alert Alert 1 "alert";
    pr_crit Crit 2 "crit";
    pr_err Err 3 "err";
    pr_warn Warning 4 "warning";
    pr_notice Notice 5 "notice";
    pr_info Info 6 "info";
    pr_debug Debug 7 "debug";
}

/// Continues the previous line of the same caller (the record carries
/// [`flags::CONT`](crate::record::flags::CONT); readers join it to the line before).
///
/// ```
/// nmilog::pr_info!("checking");
/// nmilog::pr_cont!(" ... ok");
/// ```
#[macro_export]
macro_rules! pr_cont {
    ($($arg:tt)+) => {
        $crate::global::log_fmt($crate::Level::Info, $crate::record::flags::CONT, ::core::format_args!($($arg)+))
    };
}
