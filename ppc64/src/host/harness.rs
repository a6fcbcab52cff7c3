//! The harness both designs run in (the nmilog simulation, `sim`, and the 2020 locked design,
//! `baseline`): the configuration, the CPU threads and their start, each thread's set-up
//! milestones, the NMI and timer signals, the banner, the crash-start flag, and the main thread's
//! ticker with its setup timeout. A design supplies its CPU main, its two signal handlers, which CPUs
//! the ticker interrupts, and what its watchdog does once the crash has started.
//!
//! Only one design runs per process, so the state here is plain `static`s.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use nmilog::host::HostPlatform;

use super::config::{Role, SimConfig, EXIT_FAIL, MAX_CPUS};
use super::sys;

/// How long the CPU threads may take to start (publish their thread ids).
const SPAWN_TIMEOUT_NS: u64 = 10_000_000_000;
/// How long the scenario may take to reach its crash point (every CPU in place) before the ticker
/// gives up.
const SETUP_TIMEOUT_NS: u64 = 60_000_000_000;
/// How long the crashing CPU waits for the other CPUs' set-up before it leaves the report to the
/// ticker's setup timeout.
const CRASH_SETUP_WAIT_NS: u64 = 30_000_000_000;

static CFG: OnceLock<SimConfig> = OnceLock::new();
static PID: AtomicI32 = AtomicI32::new(0);
/// The start flag, and the CPU threads' wait for it (blocked, not polling: a thousand threads
/// polling on two host cores leave the main thread no time to spawn the rest). Set-up only: the
/// crash path never touches it.
static START: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
static SLOTS: [Slot; MAX_CPUS] = [const { Slot::new() }; MAX_CPUS];
static T_START: AtomicU64 = AtomicU64::new(0);
static CRASH_STARTED: AtomicBool = AtomicBool::new(false);
static T_CRASH: AtomicU64 = AtomicU64::new(0);

/// One CPU thread as the harness sees it: its thread id, and how far its set-up got.
struct Slot {
    tid: AtomicI32,
    /// Parked inside a log call (`--freeze-in-log`), waiting for the NMI.
    parked_in_log: AtomicBool,
    /// Parked holding the RTAS lock (`--rtas-held-by`).
    rtas_parked: AtomicBool,
    /// Hung with interrupts hard-off (`--deaf`).
    hung: AtomicBool,
    /// Parked inside a move of its flush (`--deaf-flusher`).
    parked_in_flush: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            tid: AtomicI32::new(0),
            parked_in_log: AtomicBool::new(false),
            rtas_parked: AtomicBool::new(false),
            hung: AtomicBool::new(false),
            parked_in_flush: AtomicBool::new(false),
        }
    }
}

/// A set-up milestone a CPU thread reaches before the crash (see [`setup_ready`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Milestone {
    /// Parked inside a log call, waiting for the NMI.
    ParkedInLog,
    /// Parked holding the RTAS lock.
    RtasParked,
    /// Hung with interrupts hard-off: it will never answer the NMI.
    Hung,
    /// Parked inside a move of its flush, owning the flush, until the crash begins.
    ParkedInFlush,
}

/// Stores the configuration (once) and calibrates the clock before any CPU logs.
pub(crate) fn configure(conf: SimConfig) -> &'static SimConfig {
    let _ = CFG.set(conf);
    let _ = HostPlatform::clock_ns();
    cfg()
}

/// The configuration.
pub(crate) fn cfg() -> &'static SimConfig {
    CFG.get().expect("configured before any CPU runs")
}

/// Installs the NMI handler (`SIGUSR1`, every other signal blocked while it runs) and the timer
/// interrupt handler (`SIGUSR2`, only itself blocked: the NMI can land in it). The calling (main)
/// thread — the ticker and watchdog — never takes either; CPU threads unblock them in
/// [`cpu_prologue`].
pub(crate) fn install_signals(on_nmi: sys::Handler, on_timer: sys::Handler) {
    PID.store(sys::getpid(), Ordering::Relaxed);
    sys::install(libc::SIGUSR1, on_nmi, true);
    sys::install(libc::SIGUSR2, on_timer, false);
    sys::block(&[libc::SIGUSR1, libc::SIGUSR2]);
}

/// Prints `title: <scenario>` (to stderr under `--json`, whose stdout is JSON lines only).
pub(crate) fn banner(title: &str) {
    let conf = cfg();
    let mut out: Box<dyn std::io::Write> = if conf.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let _ = writeln!(out, "{title}: {}", conf.describe());
    let _ = out.flush();
}

/// Spawns one thread per CPU running `cpu_main(cpu)`, waits until each has published its thread id
/// (at most [`SPAWN_TIMEOUT_NS`]) and sets the start flag. `Err` carries the exit code, the reason
/// printed.
pub(crate) fn start_cpus(cpu_main: fn(usize)) -> Result<(), i32> {
    let ncpu = cfg().cpus;
    T_START.store(sys::mono_ns(), Ordering::Relaxed);
    for c in 0..ncpu {
        let r = std::thread::Builder::new()
            .name(format!("cpu{c}"))
            .stack_size(1 << 20)
            .spawn(move || cpu_main(c));
        if let Err(e) = r {
            eprintln!("spawn: {e}");
            return Err(EXIT_FAIL);
        }
    }
    let t0 = sys::mono_ns();
    // LMM(tid:B): pairs with LMM(tid:A) in `cpu_prologue`.
    while (0..ncpu).any(|c| SLOTS[c].tid.load(Ordering::Acquire) == 0) {
        if sys::mono_ns() - t0 > SPAWN_TIMEOUT_NS {
            eprintln!("CPU threads did not start");
            return Err(EXIT_FAIL);
        }
        sys::usleep(100);
    }
    // The mutex orders everything before the start with every CPU's first instruction after it.
    *START.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
    START.1.notify_all();
    Ok(())
}

/// The start of every CPU thread: becomes CPU `c`, publishes its thread id, takes timer interrupts
/// and — unless `--deaf` — the NMI, and waits for the start flag. Returns the CPU's role.
pub(crate) fn cpu_prologue(c: usize) -> Role {
    let role = cpu_prologue_timer_masked(c);
    sys::unblock(&[libc::SIGUSR2]);
    role
}

/// [`cpu_prologue`] for a CPU that starts with interrupts off: the timer interrupt stays masked (the
/// thread inherits the main thread's mask, which blocks it), so nothing can run on this CPU before
/// its first instruction after the start flag. The 2020 design's RTAS holder needs this: a timer
/// interrupt taken before it masked interrupts itself would spin in printk on the log lock of the
/// CPU frozen in its log call, and it would never take the RTAS lock.
pub(crate) fn cpu_prologue_timer_masked(c: usize) -> Role {
    let conf = cfg();
    HostPlatform::register_cpu(c);
    // LMM(tid:A): pairs with LMM(tid:B) in `start_cpus` (and the IPI / ticker loads after START).
    SLOTS[c].tid.store(sys::gettid(), Ordering::Release);
    if !conf.is_deaf(c) {
        sys::unblock(&[libc::SIGUSR1]);
    }
    // The start flag, under its mutex (see `START`).
    let mut started = START.0.lock().unwrap_or_else(|e| e.into_inner());
    while !*started {
        started = START.1.wait(started).unwrap_or_else(|e| e.into_inner());
    }
    drop(started);
    conf.role(c)
}

/// Records that CPU `c` reached `m`.
pub(crate) fn reached(c: usize, m: Milestone) {
    let s = &SLOTS[c];
    let flag = match m {
        Milestone::ParkedInLog => &s.parked_in_log,
        Milestone::RtasParked => &s.rtas_parked,
        Milestone::Hung => &s.hung,
        Milestone::ParkedInFlush => &s.parked_in_flush,
    };
    // LMM(setup:A): pairs with LMM(setup:B) in `setup_ready`.
    flag.store(true, Ordering::Release);
}

/// Whether CPU `c` is hung (reached [`Milestone::Hung`]).
pub(crate) fn is_hung(c: usize) -> bool {
    SLOTS[c].hung.load(Ordering::Relaxed)
}

/// Whether every CPU with a scenario role is in place: the `--freeze-in-log` CPUs parked in their log
/// call, the RTAS holder parked holding the lock and, if `await_deaf`, the deaf CPUs hung.
/// LMM(setup:B): the Acquire loads pair with the Release stores LMM(setup:A) in [`reached`].
pub(crate) fn setup_ready(await_deaf: bool) -> bool {
    let c = cfg();
    (0..c.cpus).all(|cpu| match c.role(cpu) {
        Role::FreezeInLog => SLOTS[cpu].parked_in_log.load(Ordering::Acquire),
        Role::RtasHolder => SLOTS[cpu].rtas_parked.load(Ordering::Acquire),
        Role::Deaf if await_deaf => SLOTS[cpu].hung.load(Ordering::Acquire),
        Role::DeafFlusher => SLOTS[cpu].parked_in_flush.load(Ordering::Acquire),
        _ => true,
    })
}

/// The crashing CPU's wait for [`setup_ready`]. If the set-up never completes, it stops here for
/// good and the ticker's setup timeout reports it.
pub(crate) fn wait_for_setup(await_deaf: bool) {
    let t0 = sys::mono_ns();
    while !setup_ready(await_deaf) {
        if sys::mono_ns() - t0 > CRASH_SETUP_WAIT_NS {
            loop {
                sys::usleep(100_000);
            }
        }
        sys::usleep(100);
    }
}

/// Sends `sig` to CPU `c`'s thread.
pub(crate) fn signal(c: usize, sig: i32) {
    sys::tgkill(
        PID.load(Ordering::Relaxed),
        SLOTS[c].tid.load(Ordering::Relaxed),
        sig,
    );
}

/// The NMI IPI: `SIGUSR1` to every CPU but `me`.
pub(crate) fn nmi_ipi_all_but(me: usize) {
    for c in (0..cfg().cpus).filter(|&c| c != me) {
        signal(c, libc::SIGUSR1);
    }
}

/// Records that the crash path started, now (the watchdog's clock starts).
pub(crate) fn mark_crash_started() {
    T_CRASH.store(sys::mono_ns(), Ordering::Relaxed);
    // LMM(started:A): pairs with LMM(started:B), the ticker's load (T_CRASH before it).
    CRASH_STARTED.store(true, Ordering::Release);
}

/// Whether the crash path has started (a hint: `Relaxed`).
pub(crate) fn crash_has_started() -> bool {
    CRASH_STARTED.load(Ordering::Relaxed)
}

/// `(start, crash)`: `CLOCK_MONOTONIC` when the CPU threads were started and when the crash path
/// started (0 if it has not).
pub(crate) fn times() -> (u64, u64) {
    (
        T_START.load(Ordering::Relaxed),
        T_CRASH.load(Ordering::Relaxed),
    )
}

/// The main thread once the CPUs run: every tick period sends the timer interrupt to each CPU that
/// `may_tick` allows; once the crash path has started, asks `watch(ns since the crash)` whether to
/// stop (and with which exit code); before that, if the scenario has not reached its crash point
/// within [`SETUP_TIMEOUT_NS`], calls `setup_timeout` (which reports it) and exits with
/// [`EXIT_FAIL`]. Never prints while CPUs run (a frozen CPU
/// could hold a stdio lock: none of them prints, but the rule keeps the crash path independent of
/// it); the callbacks write with the raw `write` system call.
pub(crate) fn tick_until(
    may_tick: impl Fn(usize) -> bool,
    mut watch: impl FnMut(u64) -> Option<i32>,
    setup_timeout: impl Fn(),
) -> i32 {
    let conf = cfg();
    let period = conf.tick_period_us();
    let t_start = T_START.load(Ordering::Relaxed);
    loop {
        sys::usleep(period);
        for c in (0..conf.cpus).filter(|&c| may_tick(c)) {
            signal(c, libc::SIGUSR2);
        }
        let now = sys::mono_ns();
        // LMM(started:B): pairs with LMM(started:A).
        if CRASH_STARTED.load(Ordering::Acquire) {
            let waited = now.saturating_sub(T_CRASH.load(Ordering::Relaxed));
            if let Some(code) = watch(waited) {
                return code;
            }
        } else if now - t_start > SETUP_TIMEOUT_NS {
            setup_timeout();
            sys::exit_now(EXIT_FAIL);
        }
    }
}

/// A fixed stack buffer for one line of text (no allocation: used in signal handlers).
pub(crate) struct Line {
    buf: [u8; 96],
    len: usize,
}

impl Line {
    pub(crate) fn new() -> Self {
        Line {
            buf: [0; 96],
            len: 0,
        }
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes()).unwrap_or("")
    }
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Spins for about `ns` nanoseconds (no system call, so it can be interrupted anywhere).
pub(crate) fn busy_work(ns: u64) {
    if ns == 0 {
        return;
    }
    let until = HostPlatform::clock_ns().saturating_add(ns);
    while HostPlatform::clock_ns() < until {
        std::hint::spin_loop();
    }
}
