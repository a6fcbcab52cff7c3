//! Console ownership (nbcon model): handover, timeout, panic takeover, and the emitter built on it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nmilog::console::AcquireError::{self, Busy, Timeout, Unsafe};
use nmilog::console::{Console, ConsoleState, Consoles, MemConsole, Priority, Wait, WriteContext};
use nmilog::host::HostPlatform;
use nmilog::record::flags;
use nmilog::{ContextKind, Level, Log};

fn wall_ns() -> u64 {
    HostPlatform::clock_ns()
}

/// `st` refuses `cpu` at `prio` within `wait`, for `why`.
#[track_caller]
fn assert_refused(
    st: &ConsoleState,
    cpu: usize,
    prio: Priority,
    wait: &Wait<'_>,
    why: AcquireError,
) {
    assert_eq!(st.try_acquire(cpu, prio, wait).err(), Some(why));
}

/// `st` acquired by `cpu` at `prio`, its owner in the middle of a record (an unsafe section).
fn owner_mid_record(st: &ConsoleState, cpu: usize, prio: Priority) -> WriteContext<'_> {
    let mut owner = st.try_acquire(cpu, prio, &Wait::none()).unwrap();
    assert!(owner.enter_unsafe());
    owner
}

#[test]
fn equal_or_lower_priority_never_waits() {
    let st = ConsoleState::new();
    let mut owner = owner_mid_record(&st, 0, Priority::Emergency);
    let t = Instant::now();
    assert_refused(&st, 1, Priority::Emergency, &Wait::spins(u32::MAX), Busy);
    assert_refused(&st, 1, Priority::Normal, &Wait::spins(u32::MAX), Busy);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a Busy answer does not wait"
    );
    assert!(owner.exit_unsafe());
}

#[test]
fn never_waits_for_the_interrupted_owner_on_the_same_cpu() {
    let st = ConsoleState::new();
    let mut task = owner_mid_record(&st, 2, Priority::Normal);
    // An interrupt on CPU 2 with an emergency: its owner is the code it interrupted.
    let t = Instant::now();
    assert_refused(&st, 2, Priority::Emergency, &Wait::spins(u32::MAX), Busy);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(st.view().req_prio, Priority::None);
    assert!(task.exit_unsafe());
}

#[test]
fn direct_takeover_only_outside_unsafe_sections() {
    let st = ConsoleState::new();
    let mut low = owner_mid_record(&st, 0, Priority::Normal);
    // In an unsafe section: no direct takeover, and without waiting the request is withdrawn.
    assert_refused(&st, 1, Priority::Emergency, &Wait::none(), Timeout);
    assert_eq!(st.view().req_prio, Priority::None);
    assert!(low.exit_unsafe());
    // Between records: taken directly; the old owner notices and stops.
    let high = st
        .try_acquire(1, Priority::Emergency, &Wait::none())
        .unwrap();
    assert!(low.lost());
    assert!(!low.enter_unsafe());
    assert_eq!((st.view().prio, st.view().cpu), (Priority::Emergency, 1));
    drop(low); // releasing a lost context does not free the console
    assert_eq!(st.view().prio, Priority::Emergency);
    drop(high);
    assert_eq!(st.view().prio, Priority::None);
}

#[test]
fn handover_when_the_owner_leaves_its_unsafe_section() {
    static ST: ConsoleState = ConsoleState::new();
    let ready = AtomicBool::new(false);
    let handed = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut owner = owner_mid_record(&ST, 0, Priority::Normal);
            ready.store(true, Ordering::Release);
            // Mid-record: wait (bounded) for the emergency request to show up.
            let t = Instant::now();
            while !owner.handover_requested() {
                assert!(t.elapsed() < Duration::from_secs(10), "request never seen");
                std::hint::spin_loop();
            }
            assert_eq!(ST.view().req_prio, Priority::Emergency);
            // Leaving the unsafe section hands over.
            assert!(!owner.exit_unsafe());
            assert!(owner.lost());
            handed.store(true, Ordering::Release);
        });
        while !ready.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let now = || wall_ns();
        let deadline = wall_ns() + 10_000_000_000;
        let ctx = ST
            .try_acquire(
                1,
                Priority::Emergency,
                &Wait::spins(u32::MAX).with_deadline(&now, deadline),
            )
            .expect("handed over");
        assert_eq!((ctx.cpu(), ctx.priority()), (1, Priority::Emergency));
        let v = ST.view();
        assert_eq!(
            (v.prio, v.req_prio, v.cpu),
            (Priority::Emergency, Priority::None, 1)
        );
    });
    assert!(handed.load(Ordering::Acquire));
}

#[test]
fn timeout_is_bounded_and_withdraws_the_request() {
    let st = ConsoleState::new();
    let mut owner = owner_mid_record(&st, 0, Priority::Normal); // a stuck owner

    // Spin bound.
    assert_refused(&st, 1, Priority::Emergency, &Wait::spins(1000), Timeout);
    assert_eq!(st.view().req_prio, Priority::None, "request withdrawn");

    // Clock bound: the fake clock advances 1 ms per read; the deadline is 20 ms away.
    let reads = AtomicU64::new(0);
    let clock = || reads.fetch_add(1, Ordering::Relaxed) * 1_000_000;
    let wait = Wait::spins(u32::MAX).with_deadline(&clock, 20_000_000);
    assert_refused(&st, 1, Priority::Emergency, &wait, Timeout);
    let n = reads.load(Ordering::Relaxed);
    assert!(
        (20..=22).contains(&n),
        "stopped at the deadline ({n} clock reads)"
    );
    assert_eq!(st.view().req_prio, Priority::None);

    // The owner was never disturbed.
    assert!(owner.exit_unsafe());
    assert!(!owner.lost());
}

#[test]
fn panic_takeover_marks_the_console_unsafe_forever() {
    let st = ConsoleState::new();
    let mut stuck = owner_mid_record(&st, 1, Priority::Normal);
    // Friendly attempts fail: the owner never leaves its unsafe section.
    assert_refused(&st, 0, Priority::Panic, &Wait::spins(100), Timeout);
    // SAFETY: the "stopped" owner (`stuck`) is only used below to check it lost the console; it
    // never touches the device.
    let mut p = unsafe { st.panic_takeover(0) };
    assert!(p.after_unsafe_takeover());
    assert!(p.enter_unsafe() && p.exit_unsafe());
    assert!(stuck.lost() && !stuck.enter_unsafe());
    let v = st.view();
    assert!(v.unsafe_takeover && v.unsafe_section);
    assert_eq!((v.prio, v.cpu), (Priority::Panic, 0));
    drop(p);
    // For good: only the panic priority may use it again.
    assert_refused(&st, 0, Priority::Normal, &Wait::none(), Unsafe);
    assert_refused(&st, 0, Priority::Emergency, &Wait::spins(10), Unsafe);
    let again = st.try_acquire(0, Priority::Panic, &Wait::none()).unwrap();
    assert!(again.after_unsafe_takeover());
}

// ------------------------------------------------------------------------------------ emitter

fn lines(s: &str) -> Vec<&str> {
    s.lines()
        .map(|l| l.split_once("] ").expect("timestamp prefix").1)
        .collect()
}

#[test]
fn emitter_prints_in_order_and_filters() {
    static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
    static MEM: MemConsole<4096> = MemConsole::new();
    static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    HostPlatform::register_cpu(0);
    LOG.log_fmt(Level::Info, 0, format_args!("one")).unwrap();
    LOG.log_fmt(
        Level::Debug,
        0,
        format_args!("debug is below the console level"),
    )
    .unwrap();
    LOG.append(Level::Err, 2, flags::RAW, &[0, 1, 2]).unwrap();
    LOG.log_fmt(Level::Emerg, 0, format_args!("two {}", 2))
        .unwrap();
    let r = CONSOLES.emit_pending(&LOG);
    assert_eq!((r.printed, r.filtered, r.busy), (2, 2, 0));
    assert_eq!(lines(&MEM.contents()), ["one", "two 2"]);
    assert!(MEM.contents().starts_with("[    0."));
    // Nothing twice.
    assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0);
    LOG.set_console_loglevel(8);
    LOG.log_fmt(Level::Debug, 0, format_args!("now shown"))
        .unwrap();
    CONSOLES.emit_pending(&LOG);
    assert_eq!(lines(&MEM.contents()), ["one", "two 2", "now shown"]);
}

#[test]
fn emitter_does_nothing_in_nmi_context() {
    static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
    static MEM: MemConsole<4096> = MemConsole::new();
    static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    HostPlatform::register_cpu(1);
    LOG.log_fmt(Level::Info, 0, format_args!("before")).unwrap();
    {
        let _nmi = LOG.enter(ContextKind::Nmi);
        LOG.log_fmt(Level::Emerg, 0, format_args!("from nmi"))
            .unwrap();
        let r = CONSOLES.emit_pending(&LOG);
        assert_eq!(
            r,
            Default::default(),
            "NMI context: records stay in the log"
        );
        assert_eq!(MEM.writes(), 0);
        let _irq = LOG.enter(ContextKind::Irq); // an irq nested in the NMI is NMI-safe-only too
        assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0);
    }
    LOG.flush();
    CONSOLES.emit_pending(&LOG);
    assert_eq!(lines(&MEM.contents()), ["before", "from nmi"]);
}

#[test]
fn a_failed_write_is_printed_again_whole() {
    static LOG: Log<HostPlatform, 1, 1024, 8192> = Log::new(HostPlatform::new(1));
    static MEM: MemConsole<4096> = MemConsole::new();
    static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    HostPlatform::register_cpu(0);
    for i in 0..3 {
        LOG.log_fmt(Level::Info, 0, format_args!("r{}", i)).unwrap();
    }
    MEM.fail_after(1);
    assert_eq!(CONSOLES.emit_pending(&LOG).printed, 1);
    MEM.fail_after(usize::MAX);
    assert_eq!(CONSOLES.emit_pending(&LOG).printed, 2);
    assert_eq!(lines(&MEM.contents()), ["r0", "r1", "r2"]);
}

/// A console whose first write blocks until released (a slow UART in the middle of a record).
struct Gate {
    mem: MemConsole<4096>,
    entered: AtomicBool,
    release: AtomicBool,
    calls: AtomicUsize,
}
impl Console for Gate {
    fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool {
        if self.calls.fetch_add(1, Ordering::Relaxed) == 0 {
            self.entered.store(true, Ordering::Release);
            let t = Instant::now();
            while !self.release.load(Ordering::Acquire) {
                assert!(t.elapsed() < Duration::from_secs(10));
                std::hint::spin_loop();
            }
        }
        self.mem.write_atomic(ctx, text)
    }
}

#[test]
fn emergency_emitter_gets_the_console_between_records() {
    static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
    static GATE: Gate = Gate {
        mem: MemConsole::new(),
        entered: AtomicBool::new(false),
        release: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
    };
    static CONSOLES: Consoles<1> = Consoles::new([&GATE]);
    HostPlatform::register_cpu(0);
    for i in 0..5 {
        LOG.log_fmt(Level::Info, 0, format_args!("r{}", i)).unwrap();
    }
    std::thread::scope(|s| {
        let normal = s.spawn(|| {
            HostPlatform::register_cpu(1);
            CONSOLES.emit_pending(&LOG)
        });
        while !GATE.entered.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        // CPU 1 is inside its first record. Release it once our request is visible.
        s.spawn(|| {
            let t = Instant::now();
            while CONSOLES.state(0).unwrap().view().req_prio != Priority::Emergency {
                assert!(t.elapsed() < Duration::from_secs(10));
                std::hint::spin_loop();
            }
            GATE.release.store(true, Ordering::Release);
        });
        let now = || wall_ns();
        let deadline = wall_ns() + 10_000_000_000;
        let r = CONSOLES.emit_emergency(&LOG, &Wait::spins(u32::MAX).with_deadline(&now, deadline));
        let n = normal.join().unwrap();
        assert_eq!(
            n.printed, 1,
            "the normal owner finished its record, then handed over"
        );
        assert_eq!(r.printed, 4, "the emergency context printed the rest");
    });
    assert_eq!(lines(&GATE.mem.contents()), ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(CONSOLES.state(0).unwrap().view().prio, Priority::None);
}

#[test]
fn panic_flush_takes_a_stuck_console_over_without_repeating_lines() {
    static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
    static MEM: MemConsole<4096> = MemConsole::new();
    static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    HostPlatform::register_cpu(0);
    LOG.log_fmt(Level::Info, 0, format_args!("printed before"))
        .unwrap();
    CONSOLES.emit_pending(&LOG);

    // CPU 1 takes the console and is stopped by the crash NMI in the middle of a record.
    let stuck = owner_mid_record(CONSOLES.state(0).unwrap(), 1, Priority::Normal);
    std::mem::forget(stuck);

    LOG.log_fmt(Level::Err, 0, format_args!("pending 1"))
        .unwrap();
    assert_eq!(
        CONSOLES.emit_pending(&LOG).busy,
        1,
        "normal emitters cannot get it"
    );
    LOG.crash_enter().unwrap();
    LOG.log_fmt(Level::Emerg, 0, format_args!("Kernel panic - not syncing"))
        .unwrap();

    // Not the crashing CPU: refused.
    let other = std::thread::spawn(|| {
        HostPlatform::register_cpu(1);
        // SAFETY: refused before touching anything (not the crashing CPU).
        unsafe { CONSOLES.panic_flush(&LOG, &|_| true, &Wait::spins(10)) }
    });
    assert_eq!(other.join().unwrap(), Default::default());

    // CPU 1 did not check in: its console is left alone.
    // SAFETY: no CPU is claimed to be stopped.
    let skipped = unsafe { CONSOLES.panic_flush(&LOG, &|_| false, &Wait::spins(10)) };
    assert_eq!(
        (skipped.busy, skipped.printed, skipped.taken_over),
        (1, 0, 0)
    );
    assert!(!CONSOLES.state(0).unwrap().view().unsafe_takeover);
    // SAFETY: CPU 1 "is stopped": it never touches the console again.
    let r = unsafe { CONSOLES.panic_flush(&LOG, &|_| true, &Wait::spins(1000)) };
    assert_eq!(r.taken_over, 1);
    let text = MEM.contents();
    let got = lines(&text);
    assert_eq!(got[0], "printed before");
    assert_eq!(got.iter().filter(|l| **l == "printed before").count(), 1);
    assert!(got.contains(&"pending 1"));
    assert!(got.contains(&"Kernel panic - not syncing"));
    assert!(CONSOLES.state(0).unwrap().view().unsafe_takeover);
    // A second panic flush prints nothing again.
    // SAFETY: as above.
    let again = unsafe { CONSOLES.panic_flush(&LOG, &|_| true, &Wait::none()) };
    assert_eq!(again.printed, 0);
    // Only what came after the first one.
    LOG.log_fmt(
        Level::Emerg,
        0,
        format_args!("kexec: Starting switchover sequence."),
    )
    .unwrap();
    // SAFETY: as above.
    let last = unsafe { CONSOLES.panic_flush(&LOG, &|_| true, &Wait::none()) };
    assert_eq!(last.printed, 1);
    let text = MEM.contents();
    assert_eq!(
        lines(&text).last(),
        Some(&"kexec: Starting switchover sequence.")
    );
    assert_eq!(
        lines(&text).iter().filter(|l| **l == "pending 1").count(),
        1,
        "{text}"
    );
}
