//! The whole sequence on one thread: a platform whose CPU number the test switches, and a
//! machine whose "NMI IPI" runs each responsive CPU's handler right away. `park` and `kexec`
//! unwind (they must not return), and the test catches the unwinding.
extern crate std;
use std::boxed::Box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::string::{String, ToString};
use std::vec::Vec;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::*;
use crate::machine::RtasArgs;

static CPU: AtomicUsize = AtomicUsize::new(0);
static CLOCK: AtomicU64 = AtomicU64::new(1_000);
/// The CPU count of the machine under test (set by `crash_full`).
static NCPU: AtomicUsize = AtomicUsize::new(4);

struct TestPlatform;
impl Platform for TestPlatform {
    fn cpu_id(&self) -> usize {
        CPU.load(Ordering::Relaxed)
    }
    fn now_ns(&self) -> u64 {
        CLOCK.fetch_add(10, Ordering::Relaxed)
    }
    fn cpu_count(&self) -> usize {
        NCPU.load(Ordering::Relaxed)
    }
}

type TestLog<const N: usize> = Log<TestPlatform, N, 1024, 8192>;

struct Parked;
struct Switched(Vec<u8>, Vec<CpuOutcome>, usize);

struct TestMachine<'a, const N: usize> {
    log: &'a TestLog<N>,
    state: &'a CrashState<N>,
    /// CPUs that take the NMI (the others are deaf).
    responsive: [bool; N],
    /// CPUs deaf to the NMI that answer the escalation's system reset.
    answers_reset: [bool; N],
    /// Online CPUs.
    online: [bool; N],
    firmware_calls: AtomicUsize,
    presenter: AtomicUsize,
    flight: crate::flight::FlightRecorder,
    /// XIVE: sources masked through the hypervisor; `Some(src)`: that source fails (`usize::MAX`:
    /// none does). `None`: XICS, RTAS only.
    hypervisor: Option<usize>,
    hypervisor_calls: AtomicUsize,
}

impl<const N: usize> TestMachine<'_, N> {
    /// CPU `c` takes the NMI (or the reset) now, on this thread, and parks; then back to `me`.
    fn stop(&self, c: usize, me: usize) {
        CPU.store(c, Ordering::Relaxed);
        let r = catch_unwind(AssertUnwindSafe(|| {
            on_nmi_stop(
                self.log,
                self,
                self.state,
                SavedRegs {
                    pc: 0x100 + c,
                    sp: 0,
                    msr: 0,
                },
                format_args!("test"),
            )
        }));
        assert!(r.is_err(), "a stopped CPU must park");
        CPU.store(me, Ordering::Relaxed);
    }
}

impl<const N: usize> Machine for TestMachine<'_, N> {
    fn nmi_ipi_all_but_self(&self, me: usize) {
        for c in 0..N {
            if c != me && self.responsive[c] && self.online[c] {
                self.stop(c, me);
            }
        }
    }
    fn system_reset_cpu(&self, cpu: usize) -> bool {
        assert!(self.online[cpu], "no reset to an offline CPU");
        if self.answers_reset[cpu] {
            self.stop(cpu, CPU.load(Ordering::Relaxed));
        }
        true
    }
    fn cpu_online(&self, cpu: usize) -> bool {
        self.online[cpu]
    }
    fn flight_recorder(&self) -> Option<&crate::flight::FlightRecorder> {
        Some(&self.flight)
    }
    fn now_ns(&self) -> u64 {
        CLOCK.fetch_add(10, Ordering::Relaxed)
    }
    fn irq_source_count(&self) -> usize {
        3
    }
    fn firmware_mask_source(&self, _src: usize, _args: &RtasArgs) -> Result<(), i32> {
        self.firmware_calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn mask_at_presenter(&self) {
        self.presenter.fetch_add(1, Ordering::Relaxed);
    }
    fn masks_through_hypervisor(&self) -> bool {
        self.hypervisor.is_some()
    }
    fn hypervisor_mask_source(&self, src: usize) -> Result<(), i64> {
        assert!(self.hypervisor.is_some(), "XICS: no hypervisor masking");
        self.hypervisor_calls.fetch_add(1, Ordering::Relaxed);
        if self.hypervisor == Some(src) {
            Err(-4)
        } else {
            Ok(())
        }
    }
    fn park(&self) -> ! {
        std::panic::panic_any(Parked)
    }
    fn kexec<const CPUS: usize>(&self, image: &[u8], report: &ShutdownReport<CPUS>) -> ! {
        assert!(report.image_error.is_none());
        let o = (0..N).map(|c| self.state.outcome(c)).collect();
        std::panic::panic_any(Switched(image.to_vec(), o, report.not_answered))
    }
}

/// Runs the sequence from CPU 0 and returns the recovered texts and the machine's counters.
fn crash_once(rtas: &RtasLock, responsive: [bool; 4]) -> (Vec<String>, usize, usize) {
    let r = crash_full(rtas, responsive, [false; 4], [true; 4]);
    (r.texts, r.firmware_calls, r.presenter)
}

/// What one run of the sequence left.
struct Run {
    texts: Vec<String>,
    firmware_calls: usize,
    presenter: usize,
    hypervisor_calls: usize,
    outcome: Vec<CpuOutcome>,
    not_answered: usize,
    /// (event, cpu, arg) of every breadcrumb, oldest first.
    crumbs: Vec<(crate::flight::Event, u32, u64)>,
}

fn crash_full<const N: usize>(
    rtas: &RtasLock,
    responsive: [bool; N],
    answers_reset: [bool; N],
    online: [bool; N],
) -> Run {
    crash_with(rtas, responsive, answers_reset, online, None)
}

/// [`crash_full`] on a machine that masks through the hypervisor (`hypervisor`: see
/// `TestMachine::hypervisor`) or, with `None`, through RTAS.
fn crash_with<const N: usize>(
    rtas: &RtasLock,
    responsive: [bool; N],
    answers_reset: [bool; N],
    online: [bool; N],
    hypervisor: Option<usize>,
) -> Run {
    // The tests share the CPU-number switch: one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    NCPU.store(N, Ordering::Relaxed);
    let log: &'static TestLog<N> = Box::leak(Box::new(TestLog::new(TestPlatform)));
    let state: &'static CrashState<N> = Box::leak(Box::new(CrashState::new()));
    for c in 0..N {
        CPU.store(c, Ordering::Relaxed);
        let _ = log.log_fmt(Level::Info, 0, format_args!("cpu={} n=0", c));
    }
    CPU.store(0, Ordering::Relaxed);
    let m = TestMachine {
        log,
        state,
        responsive,
        answers_reset,
        online,
        firmware_calls: AtomicUsize::new(0),
        presenter: AtomicUsize::new(0),
        flight: crate::flight::FlightRecorder::new(),
        hypervisor,
        hypervisor_calls: AtomicUsize::new(0),
    };
    let mut image = std::vec![0u8; 1 << 16];
    let cfg = ShutdownConfig {
        ack_timeout_ns: 1_000,
        max_wait_spins: 1_000,
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        crash_shutdown(log, &m, state, rtas, &mut image, &cfg, format_args!("test"))
    }));
    let Err(payload) = r else {
        panic!("crash_shutdown never returns")
    };
    let Ok(switched) = payload.downcast::<Switched>() else {
        panic!("kexec not reached")
    };
    let Switched(bytes, outcome, not_answered) = *switched;
    let img = handover::parse(&bytes).expect("a valid image");
    let texts = img
        .records()
        .filter_map(|r| r.text().map(|t| t.to_string()))
        .collect();
    let crumbs = m
        .flight
        .iter()
        .map(|b| {
            assert!(b.whole);
            (b.event.expect("a known event"), b.cpu, b.arg)
        })
        .collect();
    Run {
        texts,
        firmware_calls: m.firmware_calls.load(Ordering::Relaxed),
        presenter: m.presenter.load(Ordering::Relaxed),
        hypervisor_calls: m.hypervisor_calls.load(Ordering::Relaxed),
        outcome,
        not_answered,
        crumbs,
    }
}

#[test]
fn escalation_outcomes_and_flight_recorder() {
    use crate::flight::Event as E;
    use CpuOutcome::*;
    // CPU 1 answers the IPI; CPU 2 only the system reset; CPU 3 neither.
    let r = crash_full(
        &RtasLock::new(),
        [true, true, false, false],
        [false, false, true, false],
        [true; 4],
    );
    assert_eq!(
        r.outcome,
        [Crashing, AnsweredIpi, AnsweredReset, NeverAnswered]
    );
    assert_eq!(r.not_answered, 1);
    let t = &r.texts;
    assert!(has(t, "crash: CPU 2 did not answer the NMI IPI"), "{t:?}");
    assert!(has(t, "Activate system reset (dumprestart)"));
    assert!(has(t, "system reset sent to 2 CPU(s)"));
    assert!(has(t, "crash: CPU 3 did not answer the system reset"));
    assert!(!has(t, "crash: CPU 2 did not answer the system reset"));
    assert!(has(t, "CPU 2 stopped"));
    // The timeline, in order.
    let ev: Vec<_> = r.crumbs.iter().map(|c| c.0).collect();
    let at = |e: E| {
        ev.iter()
            .position(|x| *x == e)
            .unwrap_or_else(|| panic!("no {} breadcrumb", e.name()))
    };
    assert_eq!(r.crumbs[0], (E::Entered, 0, 4));
    assert_eq!(r.crumbs[at(E::IpiSent)], (E::IpiSent, 0, 0b1110));
    assert!(r.crumbs.contains(&(E::CheckIn, 1, 0)));
    assert!(
        r.crumbs.contains(&(E::CheckIn, 2, 1)),
        "after the escalation"
    );
    assert!(!r.crumbs.iter().any(|c| c.0 == E::CheckIn && c.1 == 3));
    assert_eq!(r.crumbs[at(E::IpiWaitDone)].2, 2);
    assert_eq!(r.crumbs[at(E::Escalated)].2, 0b1100);
    assert_eq!(r.crumbs[at(E::ResetWaitDone)].2, 1);
    assert!(r.crumbs.contains(&(E::Outcome, 2, AnsweredReset as u64)));
    assert_eq!(r.crumbs[at(E::MaskPath)].2, 0);
    let order = [
        E::Entered,
        E::IpiSent,
        E::IpiWaitDone,
        E::Escalated,
        E::ResetWaitDone,
        E::Outcome,
        E::MaskPath,
        E::Masked,
        E::DrainStart,
        E::DrainEnd,
        E::ImageStart,
        E::ImageWritten,
        E::Switchover,
    ];
    for w in order.windows(2) {
        assert!(at(w[0]) < at(w[1]), "{:?} before {:?}", w[0], w[1]);
    }
    assert_eq!(*ev.last().unwrap(), E::Switchover);
}

#[test]
fn offline_cpus_are_not_waited_for() {
    use CpuOutcome::*;
    let r = crash_full(
        &RtasLock::new(),
        [true; 4],
        [false; 4],
        [true, true, true, false],
    );
    assert_eq!(r.outcome, [Crashing, AnsweredIpi, AnsweredIpi, Offline]);
    assert_eq!(r.not_answered, 0);
    assert!(has(&r.texts, "crash: CPU 3 is offline: not waited for"));
    assert!(has(&r.texts, "sending NMI IPI to 2 other CPUs"));
    assert!(!has(&r.texts, "did not answer"));
    assert!(!r
        .crumbs
        .iter()
        .any(|c| c.0 == crate::flight::Event::Escalated));
}

fn has(texts: &[String], s: &str) -> bool {
    texts.iter().any(|t| t.contains(s))
}

#[test]
fn takeover_from_a_cpu_frozen_outside_the_call() {
    let rtas = RtasLock::new();
    rtas.lock(1);
    let (t, fw, pres) = crash_once(&rtas, [true, true, true, false]);
    for s in [
        "cpu=0 n=0",
        "cpu=3 n=0",
        "CPU 1 stopped (NMI in task context; test)",
        "CPU 2 stopped",
        "crash: CPU 3 did not answer the NMI IPI",
        "IPI complete",
        "[mask_path=rtas-takeover]",
        "kexec: Starting switchover sequence.",
    ] {
        assert!(has(&t, s), "missing {s:?} in {t:?}");
    }
    assert!(!has(&t, "CPU 3 stopped"));
    assert_eq!((fw, pres), (3, 0));
    // Log order: IPI complete before masking before the switchover message.
    let at = |s: &str| t.iter().position(|x| x.contains(s)).unwrap();
    assert!(at("IPI complete") < at("[mask_path=") && at("[mask_path=") < at("kexec: Starting"));
}

#[test]
fn presenter_when_the_holder_is_inside_the_call() {
    let rtas = RtasLock::new();
    rtas.lock(2);
    rtas.enter_call(2);
    let (t, fw, pres) = crash_once(&rtas, [true; 4]);
    assert!(has(&t, "[mask_path=presenter]"), "{t:?}");
    assert!(has(&t, "frozen inside the firmware call"));
    assert_eq!((fw, pres), (0, 1));
    assert_eq!(rtas.holder(), Some((2, true)), "the lock is left alone");
}

#[test]
fn presenter_when_the_holder_did_not_stop() {
    let rtas = RtasLock::new();
    rtas.lock(3);
    let (t, fw, pres) = crash_once(&rtas, [true, true, true, false]);
    assert!(has(&t, "did not stop"), "{t:?}");
    assert_eq!((fw, pres), (0, 1));
}

#[test]
fn plain_rtas_when_the_lock_is_free() {
    let rtas = RtasLock::new();
    let (t, fw, pres) = crash_once(&rtas, [true; 4]);
    assert!(has(&t, "[mask_path=rtas]"), "{t:?}");
    assert_eq!((fw, pres), (3, 0));
    assert_eq!(rtas.holder(), None);
}

#[test]
fn hypervisor_masking_whoever_holds_the_rtas_lock() {
    use crate::flight::Event as E;
    let mask_crumb = |r: &Run| r.crumbs.iter().find(|c| c.0 == E::MaskPath).map(|c| c.2);
    // Free lock: taken for the decision, released; no firmware call.
    let rtas = RtasLock::new();
    let r = crash_with(&rtas, [true; 4], [false; 4], [true; 4], Some(usize::MAX));
    assert!(has(&r.texts, "masked 3 of 3 interrupt sources via H_INT_SET_SOURCE_CONFIG, no firmware call (RTAS lock free) [mask_path=hcall]"), "{:?}", r.texts);
    assert_eq!(
        (r.firmware_calls, r.presenter, r.hypervisor_calls),
        (0, 0, 3)
    );
    assert_eq!(rtas.holder(), None);
    assert_eq!(mask_crumb(&r), Some(3));
    // Held inside the call by a stopped CPU: left to it, the sources masked all the same.
    let rtas = RtasLock::new();
    rtas.lock(2);
    rtas.enter_call(2);
    let r = crash_with(&rtas, [true; 4], [false; 4], [true; 4], Some(usize::MAX));
    assert!(has(&r.texts, "masked 3 of 3 interrupt sources via H_INT_SET_SOURCE_CONFIG, no firmware call (RTAS lock held by CPU 2, frozen inside the firmware call: left to it) [mask_path=hcall]"), "{:?}", r.texts);
    assert_eq!(
        (r.firmware_calls, r.presenter, r.hypervisor_calls),
        (0, 0, 3)
    );
    assert_eq!(rtas.holder(), Some((2, true)), "the lock is left alone");
    // Held outside the call by a stopped CPU: taken over, then released.
    let rtas = RtasLock::new();
    rtas.lock(1);
    let r = crash_with(&rtas, [true; 4], [false; 4], [true; 4], Some(usize::MAX));
    assert!(has(&r.texts, "(RTAS lock held by CPU 1, stopped outside the firmware call: taken over and released) [mask_path=hcall]"), "{:?}", r.texts);
    assert_eq!(rtas.holder(), None);
    // Held by a CPU that did not stop: left to it.
    let rtas = RtasLock::new();
    rtas.lock(3);
    let r = crash_with(
        &rtas,
        [true, true, true, false],
        [false; 4],
        [true; 4],
        Some(usize::MAX),
    );
    assert!(
        has(
            &r.texts,
            "(RTAS lock held by CPU 3, did not stop: left to it) [mask_path=hcall]"
        ),
        "{:?}",
        r.texts
    );
    assert_eq!(rtas.holder(), Some((3, false)));
    // A source the hypervisor refuses: counted, and the presenter closed as well.
    let rtas = RtasLock::new();
    let r = crash_with(&rtas, [true; 4], [false; 4], [true; 4], Some(1));
    assert!(
        has(
            &r.texts,
            "H_INT_SET_SOURCE_CONFIG failed for 1 sources: the presenter closed too (CPPR=0)"
        ),
        "{:?}",
        r.texts
    );
    assert!(
        has(
            &r.texts,
            "masked 2 of 3 interrupt sources via H_INT_SET_SOURCE_CONFIG"
        ),
        "{:?}",
        r.texts
    );
    assert_eq!(
        (r.firmware_calls, r.presenter, r.hypervisor_calls),
        (0, 1, 3)
    );
}

#[test]
fn lock_decisions() {
    let l = RtasLock::new();
    assert_eq!(l.crash_acquire(0, |_| true), CrashAcquire::Acquired);
    let l = RtasLock::new();
    l.lock(0);
    assert_eq!(l.crash_acquire(0, |_| true), CrashAcquire::AlreadyOwn);
    l.enter_call(0);
    assert!(!l.crash_acquire(0, |_| true).may_call_firmware());
    let l = RtasLock::new();
    l.lock(1);
    assert_eq!(
        l.crash_acquire(0, |_| false),
        CrashAcquire::Unsafe {
            holder: 1,
            inside: false,
            stopped: false
        }
    );
    assert_eq!(l.holder(), Some((1, false)));
    l.leave_call(1);
    l.unlock(1);
    assert!(l.try_lock(2));
    assert!(!l.try_lock(3));
}

/// A machine larger than the flight recorder: 48 CPUs, 10 of them deaf. The first
/// `CHECKIN_CRUMBS` check-ins leave a breadcrumb, outcome breadcrumbs name the deaf CPUs only, so
/// nothing is overwritten: the timeline keeps its first breadcrumb and every stage in order. The
/// crash path names `CPU_LINES` of the deaf CPUs and counts the others in one line.
#[test]
fn a_machine_larger_than_the_flight_recorder_keeps_the_whole_timeline() {
    use crate::flight::{Event as E, CHECKIN_CRUMBS, FLIGHT_SLOTS};
    const N: usize = 48;
    let deaf = 5..15;
    let d = deaf.clone();
    // A thread with room for the 48-CPU log, built on the stack before it is boxed.
    let r = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let responsive: [bool; N] = core::array::from_fn(|c| !d.contains(&c));
            crash_full(&RtasLock::new(), responsive, [false; N], [true; N])
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(r.not_answered, deaf.len());
    assert!(
        r.crumbs.len() <= FLIGHT_SLOTS,
        "{} breadcrumbs",
        r.crumbs.len()
    );
    assert_eq!(r.crumbs[0], (E::Entered, 0, N as u64));
    let count = |e: E| r.crumbs.iter().filter(|c| c.0 == e).count();
    assert_eq!(count(E::CheckIn), CHECKIN_CRUMBS, "37 CPUs checked in");
    let outcomes: Vec<usize> = r
        .crumbs
        .iter()
        .filter(|c| c.0 == E::Outcome)
        .map(|c| c.1 as usize)
        .collect();
    assert_eq!(outcomes, deaf.clone().collect::<Vec<_>>());
    let ev: Vec<_> = r.crumbs.iter().map(|c| c.0).collect();
    let at = |e: E| ev.iter().position(|x| *x == e).unwrap();
    for w in [
        E::IpiSent,
        E::IpiWaitDone,
        E::Masked,
        E::DrainEnd,
        E::Switchover,
    ]
    .windows(2)
    {
        assert!(at(w[0]) < at(w[1]), "{:?} before {:?}", w[0], w[1]);
    }
    let t = &r.texts;
    let named = t
        .iter()
        .filter(|x| x.contains("did not answer the NMI IPI within"))
        .count();
    assert_eq!(named, CPU_LINES, "{t:?}");
    assert!(has(t, "crash: CPU 5 did not answer the NMI IPI"));
    assert!(!has(t, "crash: CPU 9 did not answer the NMI IPI"));
    assert!(
        has(t, "crash: and 6 more CPU(s) did not answer the NMI IPI"),
        "{t:?}"
    );
}
