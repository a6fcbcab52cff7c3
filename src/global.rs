//! The global logger behind the `printk!`/`pr_*!` macros.
//!
//! The logger is a `static` of the user's chosen [`Log`](crate::Log) type, registered once with
//! [`set_global!`](crate::set_global). Until then the macros store nothing, but count each call
//! ([`unregistered_dropped`]); registration hands the count to the log, whose crash drain reports it
//! (so it reaches the handover image). Registration stores one pointer with a plain atomic store, so it works on
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
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};

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
    /// # static LOG: Log<OneCpu, 1, 1024, 1024> = Log::new(OneCpu);
    /// use nmilog::{global::LogSink, record::flags, RecordBuf, LINE_MAX};
    /// let sink: &dyn LogSink = &LOG;
    /// sink.log_fmt(Level::Err, 0, format_args!("{:x>1100}", "")).unwrap(); // too long
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
    /// Takes over the count of calls made before registration (see
    /// [`Log::unregistered_dropped`](crate::Log::unregistered_dropped)).
    fn add_unregistered(&self, n: usize);
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
    fn add_unregistered(&self, n: usize) {
        crate::Log::add_unregistered(self, n)
    }
}

// The registry is a `static`, which loom's atomics cannot initialise: it, and the functions that
// use it (registration, lookup, and the macros' entry point), exist only outside `cfg(nmilog_loom)`.
// The models drive a `Log` directly, never through the global logger.
#[cfg(not(nmilog_loom))]
static GLOBAL: AtomicPtr<&'static dyn LogSink> = AtomicPtr::new(core::ptr::null_mut());

/// Calls made before registration, not yet handed to a log.
#[cfg(not(nmilog_loom))]
static UNREGISTERED: AtomicUsize = AtomicUsize::new(0);

/// Log calls made through the macros while no logger is registered (lost: there was nowhere to put
/// them). Registration moves the count into the log
/// ([`Log::unregistered_dropped`](crate::Log::unregistered_dropped)).
///
/// Exact where the target has atomic read-modify-write; without it (and only while several CPUs
/// log before registration, which boot code does not do) a racing increment can be lost.
#[cfg(not(nmilog_loom))]
pub fn unregistered_dropped() -> u64 {
    UNREGISTERED.load(Ordering::Relaxed) as u64
}

#[cfg(not(nmilog_loom))]
fn count_unregistered() {
    crate::sync::add_relaxed(&UNREGISTERED, 1);
}

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
    // Calls counted before now go to the log. A call racing with registration either counted above
    // (taken here) or after (found the log: stored); boot code registers before other CPUs log.
    let n = crate::sync::take_relaxed(&UNREGISTERED);
    if n != 0 {
        sink.add_unregistered(n);
    }
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
    match global() {
        Some(g) => {
            let _ = g.log_fmt(level, flags, args);
        }
        None => count_unregistered(),
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

/// `printk!` with a prefix: what `pr_fmt!` and `dev_info!`-style macros expand to. The prefix is
/// formatted with the message, into the same record (no second buffer).
///
/// ```
/// nmilog::printk_prefixed!("e1000: ", nmilog::Level::Info, "link up at {} Mb/s", 1000);
/// ```
#[macro_export]
macro_rules! printk_prefixed {
    ($prefix:expr, $level:expr, $($arg:tt)+) => {
        $crate::global::log_fmt(
            $level,
            0,
            ::core::format_args!("{}{}", $prefix, ::core::format_args!($($arg)+)),
        )
    };
}

/// Linux's `pr_fmt`: a per-module prefix for every `pr_<level>!` in the module (and its children)
/// after this line — `nmilog::pr_fmt!("e1000e: ");` at the top of a driver's module, as
/// `#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt` at the top of a C file. It defines module-local
/// `pr_emerg!` … `pr_debug!` (textual scope, so they shadow the crate's own within the module; do not
/// also `use nmilog::pr_info` there). `pr_cont!` takes no prefix, as in Linux.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{Log, RecordBuf};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// # nmilog::set_global!(LOG);
/// mod e1000e {
///     nmilog::pr_fmt!("e1000e: ");
///     pub fn probe() {
///         pr_info!("link up at {} Mb/s", 1000);
///         pr_err!("tx timeout");
///     }
/// }
/// e1000e::probe();
/// let mut r = LOG.main_reader();
/// let mut rec = RecordBuf::new();
/// r.read(&LOG, &mut rec);
/// assert_eq!(rec.text(), Some("e1000e: link up at 1000 Mb/s"));
/// r.read(&LOG, &mut rec);
/// assert_eq!(rec.text(), Some("e1000e: tx timeout"));
/// ```
#[macro_export]
macro_rules! pr_fmt {
    ($prefix:expr) => {
        $crate::__pr_fmt_levels! { ($) ($prefix);
            pr_emerg Emerg; pr_alert Alert; pr_crit Crit; pr_err Err;
            pr_warn Warning; pr_notice Notice; pr_info Info; pr_debug Debug;
        }
    };
}

/// The body of [`pr_fmt!`] (one macro per level).
#[doc(hidden)]
#[macro_export]
macro_rules! __pr_fmt_levels {
    (($d:tt) ($prefix:expr); $( $pr:ident $level:ident; )*) => { $(
        #[allow(unused_macros)]
        macro_rules! $pr {
            ($d($d arg:tt)+) => {
                $crate::printk_prefixed!($prefix, $crate::Level::$level, $d($d arg)+)
            };
        }
    )* };
}

/// A device, as `dev_<level>!` names it: Linux prints `"<driver> <device>: "` before the message
/// (`dev_driver_string(dev)` and `dev_name(dev)`).
///
/// ```
/// use nmilog::global::Device;
/// struct Nic;
/// impl Device for Nic {
///     fn driver(&self) -> &str { "e1000e" }
///     fn name(&self) -> &str { "0000:00:19.0" }
/// }
/// assert_eq!(format!("{}", nmilog::global::DevPrefix(&Nic)), "e1000e 0000:00:19.0: ");
/// ```
pub trait Device {
    /// The driver's name (`dev_driver_string`).
    fn driver(&self) -> &str;
    /// The device's name on its bus (`dev_name`).
    fn name(&self) -> &str;
}

/// Formats a [`Device`]'s prefix, `"<driver> <device>: "` (what `dev_<level>!` puts before the
/// message; see [`Device`]).
pub struct DevPrefix<'a, D: Device + ?Sized>(pub &'a D);

/// Shows the prefix.
impl<D: Device + ?Sized> fmt::Debug for DevPrefix<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DevPrefix")
            .field(&format_args!("{self}"))
            .finish()
    }
}

impl<D: Device + ?Sized> fmt::Display for DevPrefix<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.0.driver(), self.0.name())
    }
}

/// Defines `dev_<level>!(dev, "fmt", args…)` for each level: `printk!` with the device's prefix
/// (see [`Device`]).
macro_rules! dev_macros {
    ($d:tt $( $dev:ident $level:ident $n:literal ; )*) => { $(
        #[doc = concat!("Logs at level ", $n, " with a device's prefix (Linux's `", stringify!($dev), "`).")]
        ///
        /// ```
        /// # use nmilog::doc_support::OneCpu;
        /// # use nmilog::{Log, RecordBuf};
        /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
        /// # nmilog::set_global!(LOG);
        /// struct Nic;
        /// impl nmilog::global::Device for Nic {
        ///     fn driver(&self) -> &str { "e1000e" }
        ///     fn name(&self) -> &str { "0000:00:19.0" }
        /// }
        #[doc = concat!("nmilog::", stringify!($dev), "!(&Nic, \"NIC Link is Up {} Mbps\", 1000);")]
        /// let mut rec = RecordBuf::new();
        /// LOG.main_reader().read(&LOG, &mut rec);
        /// assert_eq!(rec.text(), Some("e1000e 0000:00:19.0: NIC Link is Up 1000 Mbps"));
        /// ```
        #[macro_export]
        macro_rules! $dev {
            ($dev_expr:expr, $d($d arg:tt)+) => {
                $crate::printk_prefixed!(
                    $crate::global::DevPrefix($dev_expr),
                    $crate::Level::$level,
                    $d($d arg)+
                )
            };
        }
    )* };
}

dev_macros! { $
    dev_emerg Emerg 0;
    dev_alert Alert 1;
    dev_crit Crit 2;
    dev_err Err 3;
    dev_warn Warning 4;
    dev_notice Notice 5;
    dev_info Info 6;
    dev_dbg Debug 7;
}
