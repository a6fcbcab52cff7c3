//! `pr_*_ratelimited!` and `pr_*_once!`: the printk helpers callers expect, lock-free.
//!
//! Every call site gets its own `static` state (a [`RateLimit`] or a [`Once`]) built by the macro.
//!
//! ```
//! for i in 0..100 {
//!     // At most 10 lines per 5 s from this line; when a new window opens, a line
//!     // "<file>:<line>: N callbacks suppressed" reports what was skipped.
//!     nmilog::pr_warn_ratelimited!("link flapping ({})", i);
//!     nmilog::pr_info_once!("printed once, however often this runs");
//! }
//! ```
//!
//! # Rate limiting
//!
//! Like Linux's `___ratelimit()` with `DEFAULT_RATELIMIT_INTERVAL` (5 s) and
//! `DEFAULT_RATELIMIT_BURST` (10): the first call opens a window; up to `burst` calls in the window
//! print, the rest are counted; the first call after the window has passed opens a new one and
//! reports the count. [`ratelimited!`](crate::ratelimited) takes your own interval and burst.
//!
//! The clock is the one registered with [`set_clock`] (in milliseconds, derived from a nanosecond
//! clock — normally your [`Platform::now_ns`](crate::Platform::now_ns)); with the `std` feature and
//! no registered clock, the host's monotonic clock. A `no_std` build that never registers a clock
//! does **not** rate-limit (every call prints, as with a zero interval in Linux) rather than
//! suppress forever.
//!
//! # Lock-free, never waiting
//!
//! A check is a handful of atomic operations and no loop: one compare-exchange attempt to open a
//! window (a loser simply counts itself into the window the winner opened), one `fetch_add` for the
//! burst and one for the suppressed count. Under contention the accounting is approximate: a call
//! racing with a window reset may count in either window, so a window can print up to `burst` plus
//! the number of CPUs racing at its start. Nothing blocks and nothing spins.
//!
//! # NMI context and CAS-less targets
//!
//! Rate-limited and once macros are meant for normal context, but they are safe in NMI context:
//! * with native pointer-sized CAS (`target_has_atomic = "ptr"`) the read-modify-write operations
//!   are single hardware atomics (or LL/SC sequences) — they cannot deadlock against the code the NMI
//!   interrupted, they only race with it as another CPU would;
//! * without it (thumbv6m) this module never uses read-modify-write at all — not even
//!   portable-atomic's interrupt-masking emulation, which an NMI would break — but plain loads and
//!   stores: an update racing with an NMI (or another CPU) can be lost, so a window may print a few
//!   more lines than `burst`, a suppressed count may be low, and a `_once!` line may print twice.
//!   Memory safety and termination are unaffected.
//!
//! The printing itself goes through [`printk!`](crate::printk), i.e. the core's NMI-safe path in NMI
//! context.

#[cfg(not(nmilog_loom))]
use crate::sync::AtomicPtr;
use crate::sync::{const_or_loom_fn, AtomicBool, AtomicUsize, Ordering};

/// Linux's `DEFAULT_RATELIMIT_INTERVAL`: 5 s, in milliseconds.
///
/// ```
/// use nmilog::ratelimit::{Decision, RateLimit, DEFAULT_INTERVAL_MS};
/// let rs = RateLimit::new(DEFAULT_INTERVAL_MS, 1);
/// assert_eq!(rs.check_at(0), Decision::Print { suppressed: 0 });
/// assert_eq!(rs.check_at(4_999), Decision::Suppress);
/// assert_eq!(rs.check_at(5_000), Decision::Print { suppressed: 1 }); // 5 s later
/// ```
pub const DEFAULT_INTERVAL_MS: u32 = 5_000;
/// Linux's `DEFAULT_RATELIMIT_BURST`.
///
/// ```
/// use nmilog::ratelimit::{Decision, RateLimit, DEFAULT_BURST};
/// let rs = RateLimit::linux_default();
/// let printed = (0..100).filter(|&t| rs.check_at(t) != Decision::Suppress).count();
/// assert_eq!(printed, DEFAULT_BURST as usize);
/// ```
pub const DEFAULT_BURST: u32 = 10;

// A `static`, which loom's atomics cannot initialise: the registered clock and what reads it
// (`set_clock`, `now_ms`, `RateLimit::check`, and `print_limited`, which logs through the global
// logger) exist only outside `cfg(nmilog_loom)`. The decision itself (`check_at`) is available to
// models.
#[cfg(not(nmilog_loom))]
static CLOCK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers the clock used by the rate-limited macros: a function returning nanoseconds, monotonic
/// on each CPU (the platform clock). Callable from any context; a plain atomic store.
///
/// ```
/// fn my_clock() -> u64 { 42_000_000 }
/// nmilog::ratelimit::set_clock(my_clock);
/// assert_eq!(nmilog::ratelimit::now_ms(), Some(42));
/// ```
#[cfg(not(nmilog_loom))]
pub fn set_clock(now_ns: fn() -> u64) {
    // LMM(clock:A): pairs with LMM(clock:B) in `now_ms`: a CPU that calls the clock sees what was
    // set up before registering it (the state the clock function reads).
    CLOCK.store(now_ns as *mut (), Ordering::Release);
}

/// The current time in milliseconds from the registered clock (see [`set_clock`]); with `std` and
/// no registered clock, the host monotonic clock; otherwise `None`.
///
/// ```
/// # #[cfg(feature = "std")]
/// assert!(nmilog::ratelimit::now_ms().is_some());
/// ```
#[cfg(not(nmilog_loom))]
pub fn now_ms() -> Option<u64> {
    // LMM(clock:B): pairs with LMM(clock:A) in `set_clock`.
    let p = CLOCK.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: the only non-null value ever stored is a `fn() -> u64` cast to a pointer
        // (`set_clock`); function and data pointers have the same size on every supported target.
        let f: fn() -> u64 = unsafe { core::mem::transmute::<*mut (), fn() -> u64>(p) };
        return Some(f() / 1_000_000);
    }
    #[cfg(feature = "std")]
    {
        Some(crate::host::HostPlatform::clock_ns() / 1_000_000)
    }
    #[cfg(not(feature = "std"))]
    {
        None
    }
}

// Read-modify-write helpers: native where the target has CAS, plain load + store elsewhere (never
// portable-atomic's interrupt-masking emulation, which is not NMI-safe).
#[inline]
fn add(a: &AtomicUsize, n: usize) -> usize {
    #[cfg(target_has_atomic = "ptr")]
    {
        a.fetch_add(n, Ordering::Relaxed)
    }
    #[cfg(not(target_has_atomic = "ptr"))]
    {
        let v = a.load(Ordering::Relaxed);
        a.store(v.wrapping_add(n), Ordering::Relaxed);
        v
    }
}

#[inline]
fn take(a: &AtomicUsize) -> usize {
    #[cfg(target_has_atomic = "ptr")]
    {
        a.swap(0, Ordering::Relaxed)
    }
    #[cfg(not(target_has_atomic = "ptr"))]
    {
        let v = a.load(Ordering::Relaxed);
        a.store(0, Ordering::Relaxed);
        v
    }
}

/// Opens a window: LMM(window:A), the Release (half) of the `begin` update, pairs with
/// LMM(window:B), the Acquire load of `begin` in `RateLimit::check_at` (and the Acquire half here,
/// which reads the previous opener's update): a CPU that sees a window's start sees what its
/// opener did before opening it. Nothing relies on more than the value: the opener resets the
/// counts *after* the update and the accounting is approximate by design (module docs), so this
/// pair is stronger than needed (kept; not weakened).
#[inline]
fn try_replace(a: &AtomicUsize, old: usize, new: usize) -> bool {
    #[cfg(target_has_atomic = "ptr")]
    {
        // LMM(window:A) (release half) and LMM(window:B) (acquire half).
        a.compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
    #[cfg(not(target_has_atomic = "ptr"))]
    {
        if a.load(Ordering::Relaxed) != old {
            return false;
        }
        // LMM(window:A).
        a.store(new, Ordering::Release);
        true
    }
}

/// What [`RateLimit::check`] decided.
///
/// ```
/// use nmilog::ratelimit::{Decision, RateLimit};
/// let rs = RateLimit::new(100, 1);
/// assert_eq!(rs.check_at(0), Decision::Print { suppressed: 0 });
/// assert_eq!(rs.check_at(1), Decision::Suppress);
/// match rs.check_at(100) {
///     Decision::Print { suppressed } => assert_eq!(suppressed, 1), // "1 callbacks suppressed"
///     Decision::Suppress => unreachable!("a new window prints"),
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Print. `suppressed` calls were skipped in the window that just closed (report them if
    /// non-zero).
    Print {
        /// Calls suppressed in the previous window.
        suppressed: usize,
    },
    /// Skip this call (it was counted).
    Suppress,
}

/// Per-call-site rate-limit state (Linux's `struct ratelimit_state`, without its lock).
///
/// ```
/// use nmilog::ratelimit::{Decision, RateLimit};
/// static RS: RateLimit = RateLimit::new(1000, 2);
/// assert_eq!(RS.check_at(0), Decision::Print { suppressed: 0 });
/// assert_eq!(RS.check_at(10), Decision::Print { suppressed: 0 });
/// assert_eq!(RS.check_at(20), Decision::Suppress);
/// assert_eq!(RS.check_at(30), Decision::Suppress);
/// // The window [0, 1000) is over: the next call prints and reports the two it skipped.
/// assert_eq!(RS.check_at(1000), Decision::Print { suppressed: 2 });
/// ```
#[derive(Debug)]
pub struct RateLimit {
    interval_ms: u32,
    burst: u32,
    /// Start of the current window in milliseconds, `| 1` so that 0 means "no window yet" (the low
    /// bit costs 1 ms of precision). Wrapping arithmetic: works across clock wrap of the `usize`.
    begin: AtomicUsize,
    printed: AtomicUsize,
    missed: AtomicUsize,
}

impl RateLimit {
    const_or_loom_fn! {
        /// At most `burst` prints per `interval_ms` milliseconds. An interval or burst of 0 disables
        /// limiting (every call prints), as in Linux.
        ///
        /// ```
        /// use nmilog::ratelimit::{Decision, RateLimit};
        /// let rs = RateLimit::new(1000, 3);
        /// assert_eq!((0..5).filter(|&t| rs.check_at(t) != Decision::Suppress).count(), 3);
        /// let off = RateLimit::new(0, 3); // interval 0: never limit
        /// assert!((0..5).all(|t| off.check_at(t) == Decision::Print { suppressed: 0 }));
        /// ```
        pub fn new(interval_ms: u32, burst: u32) -> Self {
            RateLimit {
                interval_ms,
                burst,
                begin: AtomicUsize::new(0),
                printed: AtomicUsize::new(0),
                missed: AtomicUsize::new(0),
            }
        }
    }

    const_or_loom_fn! {
        /// Linux's defaults: 10 per 5 s.
        ///
        /// ```
        /// static RS: nmilog::ratelimit::RateLimit = nmilog::ratelimit::RateLimit::linux_default();
        /// assert!(matches!(RS.check(), nmilog::ratelimit::Decision::Print { .. }));
        /// ```
        pub fn linux_default() -> Self {
            Self::new(DEFAULT_INTERVAL_MS, DEFAULT_BURST)
        }
    }

    /// Decides with the registered clock ([`now_ms`]); without a clock, always prints.
    ///
    /// ```
    /// use core::sync::atomic::{AtomicU64, Ordering};
    /// use nmilog::ratelimit::{set_clock, Decision, RateLimit};
    /// static NOW_NS: AtomicU64 = AtomicU64::new(0);
    /// static RS: RateLimit = RateLimit::new(1000, 1);
    /// set_clock(|| NOW_NS.load(Ordering::Relaxed));
    /// assert_eq!(RS.check(), Decision::Print { suppressed: 0 });
    /// assert_eq!(RS.check(), Decision::Suppress);
    /// NOW_NS.store(2_000_000_000, Ordering::Relaxed); // 2 s later
    /// assert_eq!(RS.check(), Decision::Print { suppressed: 1 });
    /// ```
    #[cfg(not(nmilog_loom))]
    pub fn check(&self) -> Decision {
        match now_ms() {
            Some(t) => self.check_at(t),
            None => Decision::Print { suppressed: 0 },
        }
    }

    /// Decides at time `now_ms` (milliseconds). No loop, no lock (see the module docs).
    ///
    /// ```
    /// use nmilog::ratelimit::{Decision, RateLimit};
    /// let rs = RateLimit::new(1000, 1);
    /// assert_eq!(rs.check_at(5_000), Decision::Print { suppressed: 0 }); // opens [5000, 6000)
    /// assert_eq!(rs.check_at(5_999), Decision::Suppress);
    /// assert_eq!(rs.check_at(6_000), Decision::Print { suppressed: 1 });
    /// ```
    pub fn check_at(&self, now_ms: u64) -> Decision {
        if self.interval_ms == 0 || self.burst == 0 {
            return Decision::Print { suppressed: 0 };
        }
        let now = (now_ms as usize) | 1;
        // LMM(window:B): pairs with LMM(window:A) in `try_replace` (see there: stronger than
        // needed).
        let begin = self.begin.load(Ordering::Acquire);
        let mut suppressed = 0;
        if begin == 0 || now.wrapping_sub(begin) >= self.interval_ms as usize {
            // Open a new window: one attempt. The winner resets the counts; a loser counts itself into
            // the window the winner opened.
            if try_replace(&self.begin, begin, now) {
                suppressed = take(&self.missed);
                self.printed.store(0, Ordering::Relaxed);
            }
        }
        if add(&self.printed, 1) < self.burst as usize {
            Decision::Print { suppressed }
        } else {
            add(&self.missed, 1 + suppressed);
            Decision::Suppress
        }
    }

    /// Calls suppressed so far in the current window.
    ///
    /// ```
    /// let rs = nmilog::ratelimit::RateLimit::new(1000, 1);
    /// rs.check_at(0);
    /// rs.check_at(1);
    /// assert_eq!(rs.suppressed(), 1);
    /// ```
    pub fn suppressed(&self) -> usize {
        self.missed.load(Ordering::Relaxed)
    }
}

/// Per-call-site "already printed" flag for `pr_*_once!`.
///
/// ```
/// static ONCE: nmilog::ratelimit::Once = nmilog::ratelimit::Once::new();
/// assert!(ONCE.first());
/// assert!(!ONCE.first());
/// ```
#[derive(Debug)]
pub struct Once {
    done: AtomicBool,
}

impl Once {
    const_or_loom_fn! {
        /// Not yet done.
        ///
        /// ```
        /// use nmilog::ratelimit::Once;
        /// static WARNED: Once = Once::new();
        /// assert_eq!((0..3).filter(|_| WARNED.first()).count(), 1);
        /// ```
        pub fn new() -> Self {
            Once {
                done: AtomicBool::new(false),
            }
        }
    }

    /// `true` for the first caller only (on CAS-less targets, possibly for two racing callers).
    ///
    /// ```
    /// use nmilog::ratelimit::Once;
    /// static FW_OLD: Once = Once::new();
    /// let cpus: Vec<_> = (0..4).map(|_| std::thread::spawn(|| FW_OLD.first())).collect();
    /// let winners = cpus.into_iter().map(|h| h.join().unwrap()).filter(|&w| w);
    /// assert_eq!(winners.count(), 1); // exactly one CPU prints the warning
    /// ```
    pub fn first(&self) -> bool {
        if self.done.load(Ordering::Relaxed) {
            return false;
        }
        #[cfg(target_has_atomic = "ptr")]
        {
            !self.done.swap(true, Ordering::Relaxed)
        }
        #[cfg(not(target_has_atomic = "ptr"))]
        {
            self.done.store(true, Ordering::Relaxed);
            true
        }
    }
}

impl Default for Once {
    fn default() -> Self {
        Self::new()
    }
}

/// Reports suppressed calls, then prints (what the rate-limited macros expand to).
#[doc(hidden)]
#[cfg(not(nmilog_loom))]
pub fn print_limited(
    decision: Decision,
    file: &'static str,
    line: u32,
    level: crate::Level,
    args: core::fmt::Arguments<'_>,
) {
    if let Decision::Print { suppressed } = decision {
        if suppressed != 0 {
            crate::global::log_fmt(
                crate::Level::Warning,
                0,
                format_args!("{}:{}: {} callbacks suppressed", file, line, suppressed),
            );
        }
        crate::global::log_fmt(level, 0, args);
    }
}

/// `ratelimited!(interval_ms, burst, level, "fmt", args…)`: a rate-limited `printk!` with its own
/// interval and burst.
///
/// ```
/// use core::sync::atomic::{AtomicU64, Ordering};
/// use nmilog::{Level, Log, Platform, RecordBuf};
/// struct One;
/// impl Platform for One {
///     fn cpu_id(&self) -> usize { 0 }
///     fn now_ns(&self) -> u64 { NOW.load(Ordering::Relaxed) }
///     fn cpu_count(&self) -> usize { 1 }
/// }
/// static NOW: AtomicU64 = AtomicU64::new(0);
/// static LOG: Log<One, 1, 1024, 4096> = Log::new(One);
/// nmilog::set_global!(LOG);
/// nmilog::ratelimit::set_clock(|| NOW.load(Ordering::Relaxed));
///
/// fn event(i: u32) {
///     nmilog::ratelimited!(1000, 2, Level::Notice, "event {}", i);
/// }
/// for i in 0..5 {
///     event(i);                     // t = 0: two print, three are counted
/// }
/// NOW.store(1_500_000_000, Ordering::Relaxed);
/// event(5);                         // a new window: the count is reported first
///
/// let mut r = LOG.main_reader();
/// let mut rec = RecordBuf::new();
/// let mut text = vec![];
/// while r.read(&LOG, &mut rec) == nmilog::ring::Read::Record {
///     text.push(rec.text().unwrap().to_string());
/// }
/// assert_eq!(text[..2], ["event 0", "event 1"]);
/// assert!(text[2].ends_with(": 3 callbacks suppressed"));
/// assert_eq!(text[3], "event 5");
/// ```
#[macro_export]
macro_rules! ratelimited {
    ($interval_ms:expr, $burst:expr, $level:expr, $($arg:tt)+) => {{
        static RS: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new($interval_ms, $burst);
        $crate::ratelimit::print_limited(
            RS.check(), ::core::file!(), ::core::line!(), $level, ::core::format_args!($($arg)+),
        )
    }};
}

/// `printk_ratelimited!(level, "fmt", args…)`: 10 per 5 s from this call site.
///
/// ```
/// nmilog::printk_ratelimited!(nmilog::Level::Err, "dma error {}", 5);
/// ```
#[macro_export]
macro_rules! printk_ratelimited {
    ($level:expr, $($arg:tt)+) => {
        $crate::ratelimited!(
            $crate::ratelimit::DEFAULT_INTERVAL_MS, $crate::ratelimit::DEFAULT_BURST, $level, $($arg)+
        )
    };
}

/// `printk_once!(level, "fmt", args…)`: prints the first time this call site runs.
///
/// ```
/// nmilog::printk_once!(nmilog::Level::Notice, "firmware {} is old", "1.0");
/// ```
#[macro_export]
macro_rules! printk_once {
    ($level:expr, $($arg:tt)+) => {{
        static ONCE: $crate::ratelimit::Once = $crate::ratelimit::Once::new();
        if ONCE.first() {
            $crate::printk!($level, $($arg)+);
        }
    }};
}

macro_rules! level_macros {
    ($d:tt $( $rl:ident $once:ident $level:ident $n:literal ; )*) => { $(
        #[doc = concat!("Rate-limited `pr_*!` at level ", $n, " (", stringify!($level), "): 10 per 5 s per call site.")]
        ///
        /// ```
        #[doc = concat!("nmilog::", stringify!($rl), "!(\"x={}\", 1);")]
        /// ```
        #[macro_export]
        macro_rules! $rl {
            ($d($d arg:tt)+) => { $crate::printk_ratelimited!($crate::Level::$level, $d($d arg)+) };
        }
        #[doc = concat!("Once-per-call-site `pr_*!` at level ", $n, " (", stringify!($level), ").")]
        ///
        /// ```
        #[doc = concat!("nmilog::", stringify!($once), "!(\"x={}\", 1);")]
        /// ```
        #[macro_export]
        macro_rules! $once {
            ($d($d arg:tt)+) => { $crate::printk_once!($crate::Level::$level, $d($d arg)+) };
        }
    )* };
}

level_macros! { $
    pr_emerg_ratelimited pr_emerg_once Emerg 0;
    pr_alert_ratelimited pr_alert_once Alert 1;
    pr_crit_ratelimited pr_crit_once Crit 2;
    pr_err_ratelimited pr_err_once Err 3;
    pr_warn_ratelimited pr_warn_once Warning 4;
    pr_notice_ratelimited pr_notice_once Notice 5;
    pr_info_ratelimited pr_info_once Info 6;
    pr_debug_ratelimited pr_debug_once Debug 7;
}
