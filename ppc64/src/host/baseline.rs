//! `--baseline locked`: the 2020 design, for comparison. One global spinlock (`logbuf_lock`) around
//! one shared log buffer; the crash NMI handler uses a per-CPU NMI buffer (printk's NMI context of
//! the time), but the crashing CPU's own messages ("IPI complete", "kexec: Starting switchover
//! sequence.") take `logbuf_lock`, and masking interrupts takes the RTAS lock. A CPU frozen by the
//! NMI holding either lock deadlocks the crash path; a watchdog thread notices, reports who holds
//! what and who waits where, and exits with code 2.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use nmilog::escape::json_string;

use super::config::{Role, SimConfig, EXIT_DEADLOCK, EXIT_OK, MAX_CPUS};
use super::harness::{self, cfg, Line, Milestone};
use super::sys;
use crate::rtas::RtasLock;

const BUF_BYTES: usize = 1 << 22;

/// The shared log buffer of the 2020 design (written only under `LOGBUF_LOCK`).
static BUF: [AtomicU8; BUF_BYTES] = [const { AtomicU8::new(0) }; BUF_BYTES];
static BUF_AT: AtomicUsize = AtomicUsize::new(0);
/// `logbuf_lock`: 0 free, else holder + 1.
static LOGBUF_LOCK: AtomicUsize = AtomicUsize::new(0);
static RTAS: RtasLock = RtasLock::new();
static CRASH_DONE: AtomicBool = AtomicBool::new(false);
static CPUS: [BCpu; MAX_CPUS] = [const { BCpu::new() }; MAX_CPUS];
static CRASHING: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Where a CPU spins.
const WAIT_NONE: u8 = 0;
const WAIT_LOGBUF: u8 = 1;
const WAIT_RTAS: u8 = 2;

struct BCpu {
    task_n: AtomicU64,
    irq_n: AtomicU64,
    stopped: AtomicBool,
    /// Whether the NMI landed while this CPU held `logbuf_lock` / the RTAS lock.
    stopped_in_printk: AtomicBool,
    waiting: AtomicU8,
    /// Index into `SITES` of what the waiter was doing.
    site: AtomicU8,
    nmi_msgs: AtomicU64,
}

impl BCpu {
    const fn new() -> Self {
        BCpu {
            task_n: AtomicU64::new(0),
            irq_n: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            stopped_in_printk: AtomicBool::new(false),
            waiting: AtomicU8::new(WAIT_NONE),
            site: AtomicU8::new(0),
            nmi_msgs: AtomicU64::new(0),
        }
    }
}

const SITES: [&str; 5] = [
    "printk (task)",
    "printk (irq)",
    "printk(\"IPI complete\")",
    "ibm,int-off (lock_rtas)",
    "printk(\"kexec: Starting switchover sequence.\")",
];

fn cur() -> usize {
    nmilog::host::HostPlatform::current_cpu()
}

/// Whether the scenario CPUs are in place. A deaf CPU is not awaited: it may well be spinning on
/// logbuf_lock forever, and plays no part in the deadlock.
fn setup_ready() -> bool {
    harness::setup_ready(false)
}

/// printk of the time: `spin_lock_irqsave(&logbuf_lock)`, copy, unlock. Returns false if the
/// crashing CPU gave up spinning (the hard-lockup detector fired: it crashes instead).
fn printk(c: usize, site: u8, text: &str, freeze: bool) -> bool {
    let me = &CPUS[c];
    let irqs_were_off = sys::block_save(libc::SIGUSR2); // spin_lock_irqsave
    me.site.store(site, Ordering::Relaxed);
    // LMM(wait:A): pairs with LMM(wait:B) in the watchdog's report.
    me.waiting.store(WAIT_LOGBUF, Ordering::Release);
    let t0 = sys::mono_ns();
    // LMM(logbuf:A): Acquire pairs with LMM(logbuf:B), the previous holder's unlock.
    while LOGBUF_LOCK
        .compare_exchange_weak(0, c + 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        if c == cfg().crash_cpu
            && !harness::crash_has_started()
            && setup_ready()
            && sys::mono_ns() - t0 > 2_000_000
        {
            // Stuck on a lock a frozen CPU will never release: the hard-lockup detector panics.
            me.waiting.store(WAIT_NONE, Ordering::Relaxed);
            if !irqs_were_off {
                sys::unblock(&[libc::SIGUSR2]);
            }
            return false;
        }
        sys::yield_now();
    }
    me.waiting.store(WAIT_NONE, Ordering::Relaxed);
    let at = BUF_AT.load(Ordering::Relaxed);
    for (i, b) in text.bytes().chain(std::iter::once(b'\n')).enumerate() {
        BUF[(at + i) % BUF_BYTES].store(b, Ordering::Relaxed);
    }
    BUF_AT.store(at + text.len() + 1, Ordering::Relaxed);
    if freeze {
        harness::reached(c, Milestone::ParkedInLog);
        loop {
            sys::usleep(100); // the NMI lands here, with logbuf_lock held
        }
    }
    // LMM(logbuf:B): pairs with LMM(logbuf:A).
    LOGBUF_LOCK.store(0, Ordering::Release);
    if !irqs_were_off {
        sys::unblock(&[libc::SIGUSR2]); // spin_unlock_irqrestore
    }
    true
}

extern "C" fn on_nmi(_sig: i32, _info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    let c = cur();
    let Some(me) = CPUS.get(c) else { return };
    // LMM(crashing:B): pairs with LMM(crashing:A).
    let crashing = CRASHING.load(Ordering::Acquire);
    if crashing == usize::MAX || crashing == c {
        return;
    }
    // printk_nmi_enter(): the message goes to this CPU's NMI buffer, no lock.
    me.nmi_msgs.fetch_add(1, Ordering::Relaxed);
    me.stopped_in_printk.store(
        LOGBUF_LOCK.load(Ordering::Relaxed) == c + 1,
        Ordering::Relaxed,
    );
    // LMM(stop:A): pairs with LMM(stop:B), the crashing CPU's check-in wait.
    me.stopped.store(true, Ordering::Release);
    sys::park_forever()
}

extern "C" fn on_timer(_sig: i32, _info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    let c = cur();
    let Some(me) = CPUS.get(c) else { return };
    let i = me.irq_n.load(Ordering::Relaxed);
    // No allocation in a signal handler: the interrupted code may be inside malloc.
    let mut text = Line::new();
    let _ = write!(text, "cpu={c} irq n={i}");
    let text = text.as_str();
    if printk(c, 1, text, false) {
        me.irq_n.store(i + 1, Ordering::Relaxed);
    } else {
        crash(c); // the hard-lockup panic, taken in whatever context was spinning
    }
}

fn cpu_main(c: usize) {
    let conf = cfg();
    let role = if conf.role(c) == Role::RtasHolder {
        // Interrupts off from the start: see `cpu_prologue_timer_masked`.
        harness::cpu_prologue_timer_masked(c)
    } else {
        harness::cpu_prologue(c)
    };
    let me = &CPUS[c];
    let freeze_at = conf.freeze_record(c);
    if role == Role::RtasHolder {
        // In this design the holder takes the RTAS lock (interrupts off) before it logs: logging
        // stalls behind the frozen logbuf_lock holder, so taking it afterwards would never happen.
        // It never took a timer interrupt (its prologue left the timer masked), so nothing of it
        // can be stuck on logbuf_lock yet.
        RTAS.lock(c);
        if conf.rtas_in_call {
            RTAS.enter_call(c);
        }
        harness::reached(c, Milestone::RtasParked);
    }
    for i in 0..conf.records {
        // No allocation either: a CPU frozen inside malloc would hold an arena lock.
        let mut text = Line::new();
        let _ = write!(text, "cpu={c} n={i}");
        let text = text.as_str();
        if !printk(c, 0, text, i == freeze_at) {
            crash(c); // the crashing CPU's hard-lockup panic
        }
        me.task_n.store(i + 1, Ordering::Relaxed);
        harness::busy_work(conf.work_ns);
    }
    match role {
        Role::Crash => {
            harness::wait_for_setup(false);
            crash(c)
        }
        Role::RtasHolder => loop {
            sys::usleep(100); // still holding the RTAS lock
        },
        Role::Deaf => {
            sys::block_all();
            harness::reached(c, Milestone::Hung); // not awaited: see `setup_ready`
            loop {
                sys::usleep(100_000);
            }
        }
        _ => loop {
            sys::usleep(cfg().idle_poll_us());
        },
    }
}

/// The 2020 crash path: NMI IPI, bounded wait, then printk and lock_rtas, which spin.
fn crash(c: usize) -> ! {
    sys::block(&[libc::SIGUSR2]);
    // LMM(crashing:A): pairs with LMM(crashing:B) in the NMI handler.
    CRASHING.store(c, Ordering::Release);
    harness::mark_crash_started();
    let conf = cfg();
    harness::nmi_ipi_all_but(c);
    let t0 = sys::mono_ns();
    // LMM(stop:B): pairs with LMM(stop:A).
    while (0..conf.cpus).any(|o| o != c && !CPUS[o].stopped.load(Ordering::Acquire))
        && sys::mono_ns() - t0 < conf.ack_timeout_ns()
    {
        sys::yield_now();
    }
    printk(c, 2, "IPI complete", false);
    let me = &CPUS[c];
    for _src in 0..conf.cpus + 4 {
        me.site.store(3, Ordering::Relaxed);
        // LMM(wait:A) as above.
        me.waiting.store(WAIT_RTAS, Ordering::Release);
        RTAS.lock(c);
        me.waiting.store(WAIT_NONE, Ordering::Relaxed);
        RTAS.unlock(c);
    }
    printk(c, 4, "kexec: Starting switchover sequence.", false);
    // LMM(done:A): pairs with LMM(done:B) in `run`.
    CRASH_DONE.store(true, Ordering::Release);
    loop {
        sys::usleep(100_000);
    }
}

pub(crate) fn run(conf: SimConfig) -> i32 {
    let conf = harness::configure(conf);
    harness::install_signals(on_nmi, on_timer);
    harness::banner("baseline (2020 design: logbuf_lock + RTAS lock on the crash path)");
    if let Err(code) = harness::start_cpus(cpu_main) {
        return code;
    }
    let stall_ns = conf.ack_timeout_ns().saturating_add(2_000_000_000);
    harness::tick_until(
        |c| !CPUS[c].stopped.load(Ordering::Relaxed),
        |waited| {
            // LMM(done:B): pairs with LMM(done:A).
            if CRASH_DONE.load(Ordering::Acquire) {
                let ms = waited as f64 / 1e6;
                let msg = if conf.json {
                    format!("{{\"summary\":{{\"deadlock\":false,\"baseline\":\"locked\",\"mask_path\":\"rtas\",\"elapsed_ms\":{ms:.3}}}}}\n")
                } else {
                    format!("baseline: the crash path completed in {ms:.1} ms (no lock was held by a frozen CPU)\n")
                };
                sys::write_fd(1, msg.as_bytes());
                sys::exit_now(EXIT_OK);
            }
            // A deadlock: the crashing CPU spins on a lock, and has made no progress for the
            // check-in wait plus two seconds. (Waiting for the spin itself, not only for the time,
            // keeps a loaded host, on which the crashing thread may not run for a while, from
            // reporting it before it reached its lock; past `STALL_CAP_NS` it is reported anyway.)
            if waited > stall_ns && (crashing_cpu_spins() || waited > STALL_CAP_NS) {
                report_deadlock(conf, waited);
                sys::exit_now(EXIT_DEADLOCK);
            }
            None
        },
        || report_setup_timeout(conf),
    )
}

/// How long after the crash the watchdog reports a deadlock even if the crashing CPU was never seen
/// spinning on a lock.
const STALL_CAP_NS: u64 = 60_000_000_000;

/// Whether the crashing CPU is spinning on a lock (a hint: `Relaxed`).
fn crashing_cpu_spins() -> bool {
    let c = CRASHING.load(Ordering::Relaxed);
    CPUS.get(c)
        .is_some_and(|b| b.waiting.load(Ordering::Relaxed) != WAIT_NONE)
}

fn report_deadlock(conf: &SimConfig, waited_ns: u64) {
    let crash_cpu = CRASHING.load(Ordering::Relaxed);
    let (t_start, t_crash) = harness::times();
    let run_ms = t_crash.saturating_sub(t_start) as f64 / 1e6;
    let mut held = Vec::new();
    let lock_of = |v: usize| if v == 0 { None } else { Some(v - 1) };
    if let Some(h) = lock_of(LOGBUF_LOCK.load(Ordering::Relaxed)) {
        held.push(("logbuf_lock", h));
    }
    if let Some((h, _)) = RTAS.holder() {
        held.push(("rtas.lock", h));
    }
    let state = |c: usize| -> String {
        let s = &CPUS[c];
        if s.stopped.load(Ordering::Relaxed) {
            "stopped by the crash NMI, parked forever".to_string()
        } else if harness::is_hung(c) {
            "hung with interrupts off (deaf to the NMI)".to_string()
        } else if c == crash_cpu {
            "the crashing CPU".to_string()
        } else {
            "running".to_string()
        }
    };
    let mut waits = Vec::new();
    for c in 0..conf.cpus {
        // LMM(wait:B): pairs with LMM(wait:A).
        let w = CPUS[c].waiting.load(Ordering::Acquire);
        if w != WAIT_NONE {
            let lock = if w == WAIT_LOGBUF {
                "logbuf_lock"
            } else {
                "rtas.lock"
            };
            let site = SITES[CPUS[c].site.load(Ordering::Relaxed) as usize % SITES.len()];
            waits.push((c, lock, site));
        }
    }
    let mut s = String::new();
    if conf.json {
        let _ = write!(
            s,
            "{{\"summary\":{{\"deadlock\":true,\"baseline\":\"locked\",\"crash_cpu\":{},\"held\":[",
            crash_cpu
        );
        for (i, (l, h)) in held.iter().enumerate() {
            let _ = write!(
                s,
                "{}{{\"lock\":\"{}\",\"holder\":{},\"holder_state\":\"{}\"}}",
                if i > 0 { "," } else { "" },
                l,
                h,
                state(*h)
            );
        }
        s.push_str("],\"waiting\":[");
        for (i, (c, l, site)) in waits.iter().enumerate() {
            let _ = write!(
                s,
                "{}{{\"cpu\":{},\"lock\":\"{}\",\"at\":",
                if i > 0 { "," } else { "" },
                c,
                l
            );
            let _ = json_string(&mut s, site);
            s.push('}');
        }
        let _ = writeln!(
            s,
            "],\"mask_path\":null,\"elapsed_ms\":{:.3},\"run_ms\":{:.3}}}}}",
            waited_ns as f64 / 1e6,
            run_ms
        );
        sys::write_fd(1, s.as_bytes());
    } else {
        let _ = writeln!(
            s,
            "watchdog: DEADLOCK — the crash path on CPU {} (crashed {:.1} ms after start) made no progress for {:.1} s; the capture kernel is never reached",
            crash_cpu,
            run_ms,
            waited_ns as f64 / 1e9
        );
        for (c, b) in CPUS.iter().enumerate().take(conf.cpus) {
            let _ = writeln!(
                s,
                "  CPU {c}: {} task / {} irq records logged before it stopped",
                b.task_n.load(Ordering::Relaxed),
                b.irq_n.load(Ordering::Relaxed)
            );
        }
        for (c, l, site) in &waits {
            let _ = writeln!(s, "  CPU {c} ({}) spins on {l} at {site}", state(*c));
        }
        for (l, h) in &held {
            let _ = writeln!(s, "  {l} is held by CPU {h} ({})", state(*h));
        }
        let _ = writeln!(
            s,
            "  (nmilog: `cargo run --release --example crash` — same scenario, no lock on the crash path)"
        );
        sys::write_fd(1, s.as_bytes());
    }
}

/// The setup timeout's report (stderr): who holds `logbuf_lock` and the RTAS lock, and where each
/// CPU is, so that a scenario that never reached its crash point says why.
fn report_setup_timeout(conf: &SimConfig) {
    let mut s = String::from("baseline: setup timeout\n");
    match LOGBUF_LOCK.load(Ordering::Relaxed) {
        0 => s.push_str("  logbuf_lock is free\n"),
        h => {
            let _ = writeln!(s, "  logbuf_lock is held by CPU {}", h - 1);
        }
    }
    if let Some((h, _)) = RTAS.holder() {
        let _ = writeln!(s, "  rtas.lock is held by CPU {h}");
    }
    for (c, b) in CPUS.iter().enumerate().take(conf.cpus) {
        let _ = write!(
            s,
            "  CPU {c} ({}): {} task / {} irq records logged",
            conf.role(c).name(),
            b.task_n.load(Ordering::Relaxed),
            b.irq_n.load(Ordering::Relaxed)
        );
        let w = b.waiting.load(Ordering::Relaxed);
        if w != WAIT_NONE {
            let lock = if w == WAIT_LOGBUF {
                "logbuf_lock"
            } else {
                "rtas.lock"
            };
            let site = SITES[b.site.load(Ordering::Relaxed) as usize % SITES.len()];
            let _ = write!(s, "; spins on {lock} at {site}");
        }
        s.push('\n');
    }
    sys::write_fd(2, s.as_bytes());
}
