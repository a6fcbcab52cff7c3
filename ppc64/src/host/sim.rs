//! The nmilog simulation: CPU threads that log through nmilog (with ground-truth tracking of every
//! log call), its timer and NMI handlers, and the host [`Machine`].

use std::ffi::CString;
use std::fmt::Write as _;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use nmilog::host::HostPlatform;
use nmilog::record::facility;
use nmilog::ring::WriteStep;
use nmilog::{FlushStep, Level, Platform};

use super::config::{Role, SimConfig, EXIT_DEADLOCK, EXIT_FAIL, MAX_CPUS};
use super::death::DeathPoint;
use super::firmware::{Firmware, DEVICE_SOURCES, TOKEN_GET_XIVE, TOKEN_INT_OFF};
use super::harness::{self, cfg, Line, Milestone};
use super::memory::{self, Layout, SimLog};
use super::track::{step_code, SimCpu, Track};
use super::{sys, truth};
use crate::crash_state::CrashState;
use crate::machine::{CrashStage, DrainStep, Machine, RtasArgs, SavedRegs};
use crate::report::{MaskPath, ShutdownReport};
use crate::rtas::{CrashAcquire, RtasLock};
use crate::shutdown::{crash_shutdown, on_nmi_stop, ShutdownConfig};

static RTAS: RtasLock = RtasLock::new();
/// The RTAS argument buffer of normal (locked) calls.
static RTAS_ARGS: RtasArgs = RtasArgs::new();
static FW: Firmware = Firmware::new();
static REGION: OnceLock<Region> = OnceLock::new();
static EXEC: OnceLock<ExecArgs> = OnceLock::new();
static CRASH_ARMED: AtomicBool = AtomicBool::new(false);
static T_START_LOG: AtomicU64 = AtomicU64::new(0);
/// The crashing CPU died at its `--die-in-drain` point: the watchdog starts the capture stage.
static DIED: AtomicBool = AtomicBool::new(false);

/// The log, in the kernel's memory (the handover region).
fn log() -> &'static SimLog {
    &memory::kernel().log
}

/// The crash sequence's state, in the kernel's memory.
fn crash_state() -> &'static CrashState<MAX_CPUS> {
    &memory::kernel().crash
}

/// The log-call tracking of every CPU, in the kernel's memory.
fn sim_cpus() -> &'static [SimCpu; MAX_CPUS] {
    &memory::kernel().sim
}

/// Deferrals of one NMI before the handler gives up waiting for an observable point.
const MAX_DEFER: u64 = 100_000;

/// The handover region: a shared mapping of a memfd that stays open (it is passed, by number, to the
/// capture stage, and survives `execv`).
struct Region {
    base: usize,
    layout: Layout,
}

struct ExecArgs {
    _strings: Vec<CString>,
    /// `char *argv[]`, NULL-terminated, as addresses.
    ptrs: Vec<usize>,
    /// The same with `--from-memory` (the capture stage after a death of the crash path).
    ptrs_from_memory: Vec<usize>,
}

/// If this CPU's NMI was deferred, take it now (we are at an observable point).
#[inline]
fn check_defer(me: &SimCpu) {
    // LMM(track:A): pairs with LMM(track:B): the tracking stores before this point are done before
    // the deferred NMI is raised.
    compiler_fence(Ordering::SeqCst);
    if me.defer.load(Ordering::Relaxed) {
        me.defer.store(false, Ordering::Relaxed);
        harness::signal(HostPlatform::current_cpu(), libc::SIGUSR1);
    }
}

/// One tracked log call in the current context: the normal path (`append` + opportunistic flush),
/// with a step hook that records progress for the ground truth, takes a deferred NMI, and — for
/// `freeze` — parks the writer after its header until the NMI stops it.
fn log_tracked(me: &SimCpu, tr: &Track, i: u64, text: &[u8], freeze: bool) {
    // LMM(track:A) on every compiler fence below: pairs with LMM(track:B) in `Track::resolve` (the
    // NMI handler on this thread sees the tracking stores, and the log call's, in program order).
    tr.step.store(0, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    tr.in_call.store(i + 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let mut hook = |s: WriteStep| -> bool {
        tr.step.store(step_code(s), Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        if freeze && s == WriteStep::HeaderWritten {
            // Inside the write protocol, odd sequence word and header stored: wait for the NMI,
            // whose handler never returns.
            harness::reached(HostPlatform::current_cpu(), Milestone::ParkedInLog);
            loop {
                sys::usleep(100);
            }
        }
        check_defer(me);
        true
    };
    let r = log().append_raw_with_hook(Level::Info, facility::KERNEL, 0, text, &mut hook);
    // LMM(track:A), as above.
    compiler_fence(Ordering::SeqCst);
    if r.is_ok() {
        // LMM(committed:A): Release, pairs with LMM(committed:B) in `HostMachine::stage`: a count
        // sampled there covers records whose ring words the drain that follows can see.
        tr.committed.store(i + 1, Ordering::Release);
    }
    // LMM(track:A), as above. LMM(inflight:A): Release, pairs with LMM(inflight:B) in
    // `Track::upper_bound`: a reader that finds the call over finds its count.
    compiler_fence(Ordering::SeqCst);
    tr.in_call.store(0, Ordering::Release);
    compiler_fence(Ordering::SeqCst);
    tr.step.store(0, Ordering::Relaxed);
    check_defer(me);
    // The rest of the normal path (what `Log::append` does after the append).
    let _ = log().flush();
}

// ------------------------------------------------------------------------------------------------
// The machine.

/// The host [`Machine`]: signals for IPIs, the firmware model, `execv` for kexec.
pub(crate) struct HostMachine;

impl Machine for HostMachine {
    fn nmi_ipi_all_but_self(&self, me: usize) {
        harness::nmi_ipi_all_but(me);
    }

    fn now_ns(&self) -> u64 {
        log().platform().now_ns()
    }

    fn irq_source_count(&self) -> usize {
        FW.nsrc.load(Ordering::Relaxed)
    }

    fn firmware_mask_source(&self, src: usize, args: &RtasArgs) -> Result<(), i32> {
        args.fill(HostPlatform::current_cpu(), TOKEN_INT_OFF, &[src as u32], 1);
        match FW.call(args) {
            0 => Ok(()),
            e => Err(e),
        }
    }

    fn mask_at_presenter(&self) {
        if let Some(s) = sim_cpus().get(HostPlatform::current_cpu()) {
            // Release pairs with nothing (stronger than needed): its readers (the ticker,
            // `fill_truth`) use only the value, Relaxed; a stopped CPU's is ordered by
            // LMM(checkin:A/B).
            s.cppr.store(0, Ordering::Release);
        }
        sys::block(&[libc::SIGUSR2]);
    }

    fn relax(&self) {
        // Two host cores run many simulated CPUs: give the others the core.
        sys::yield_now();
    }

    fn stage(&self, stage: CrashStage) {
        die_if(DeathPoint::Stage(stage));
        if stage != CrashStage::ImageStart {
            return;
        }
        // The ground truth's lower bound for the CPUs that did not stop: what they had committed
        // before the image's drain took its snapshot.
        let me = HostPlatform::current_cpu();
        for (c, s) in sim_cpus().iter().enumerate().take(cfg().cpus) {
            if c != me && !crash_state().checked_in(c) {
                // LMM(committed:B): Acquire, pairs with LMM(committed:A).
                s.lower_task
                    .store(s.task.committed.load(Ordering::Acquire), Ordering::Relaxed);
                s.lower_irq
                    .store(s.irq.committed.load(Ordering::Acquire), Ordering::Relaxed);
            }
        }
    }

    fn drain_step(&self, step: DrainStep) {
        die_if(DeathPoint::Drain(step));
    }

    fn park(&self) -> ! {
        sys::park_forever()
    }

    fn kexec<const CPUS: usize>(&self, image: &[u8], report: &ShutdownReport<CPUS>) -> ! {
        let Some(region) = REGION.get() else {
            sys::write_fd(2, b"kexec: no handover region\n");
            sys::exit_now(EXIT_FAIL);
        };
        let img_at = region.base + region.layout.truth_len;
        let img_len = image.len().min(region.layout.image_len);
        if image.as_ptr() as usize != img_at {
            // SAFETY: the destination is inside the mapped region (len checked above) and does not
            // overlap `image` unless they are the same bytes (handled by `copy`).
            unsafe { core::ptr::copy(image.as_ptr(), img_at as *mut u8, img_len) };
        }
        // SAFETY: the crashing CPU at its switchover: the block's one writer in this process (the
        // watchdog writes it only after a death, and a CPU that died never gets here).
        let w = unsafe { truth_block(region) };
        fill_truth(w, report, img_len);
        w[truth::W_REGION_BASE] = region.base as u64;
        seal_truth(w);
        exec_capture(false)
    }
}

/// Replaces the process with the capture stage: after the kexec switchover (`from_memory` false), or,
/// after the crashing CPU died, as the watchdog's reset into a capture kernel that has nothing but
/// the memory (`from_memory`: `--from-memory`, no image, no report).
fn exec_capture(from_memory: bool) -> ! {
    let Some(exec) = EXEC.get() else {
        sys::exit_now(EXIT_FAIL);
    };
    let ptrs = if from_memory {
        &exec.ptrs_from_memory
    } else {
        &exec.ptrs
    };
    // SAFETY: `ptrs` is a NULL-terminated array of pointers to the NUL-terminated strings kept
    // alive in `exec._strings`; execv only reads them (and replaces the process on success).
    unsafe {
        libc::execv(
            ptrs[0] as *const libc::c_char,
            ptrs.as_ptr() as *const *const libc::c_char,
        )
    };
    sys::write_fd(2, b"kexec: execv failed\n");
    sys::exit_now(EXIT_FAIL)
}

/// `--die-in-drain`: if the crashing CPU reached its death point, it dies here — it tells the
/// watchdog (as a machine check would reach the firmware) and stops for good, every signal blocked.
fn die_if(at: DeathPoint) {
    if cfg().die_in_drain != Some(at) {
        return;
    }
    // LMM(died:A): pairs with LMM(died:B), the watchdog's load: every store of the crash path
    // before the death is visible to the watchdog before it starts the capture stage.
    DIED.store(true, Ordering::Release);
    sys::park_forever()
}

/// The watchdog's part of a death: the ground-truth block's scenario words (the per-CPU truth is
/// read from the kernel's memory by the capture stage), then the capture stage from memory.
fn after_death(conf: &SimConfig) -> ! {
    let Some(region) = REGION.get() else {
        sys::exit_now(EXIT_FAIL);
    };
    // SAFETY: the watchdog after a death: the block's one writer in this process (the crashing CPU
    // died before its switchover, the only other place that writes it).
    let w = unsafe { truth_block(region) };
    {
        use truth::*;
        w[W_MAGIC] = MAGIC;
        w[W_NCPU] = conf.cpus as u64;
        w[W_CRASH_CPU] = conf.crash_cpu as u64;
        w[W_PAPR] = FW.violations.load(Ordering::Relaxed);
        let (t_start, t_crash) = harness::times();
        w[W_T_CRASH_MONO] = t_crash;
        w[W_T_START_MONO] = t_start;
        w[W_RECORDS] = conf.records;
        w[W_CRASH_IN_IRQ] = conf.crash_in_irq as u64;
        w[W_RTAS_IN_CALL] = conf.rtas_in_call as u64;
        w[W_SEED] = conf.seed;
        w[W_FW_CALLS] = FW.calls.load(Ordering::Relaxed);
        w[W_RING_BYTES] = conf.ring_bytes as u64;
        w[W_ACK_TIMEOUT_MS] = conf.ack_timeout_ms;
        w[W_T_START_LOG] = T_START_LOG.load(Ordering::Relaxed);
        w[W_REGION_BASE] = region.base as u64;
        w[W_DIED] = 1;
        for cpu in 0..conf.cpus {
            let b = CPU_BASE + cpu * PER_CPU;
            w[b + C_ROLE] = conf.role(cpu).code();
            w[b + C_FREEZE_AT] = conf.freeze_record(cpu);
            w[b + C_DEAF] = conf.is_deaf(cpu) as u64;
        }
    }
    seal_truth(w);
    exec_capture(true)
}

/// The ground-truth block at the start of the region, as words (zero until written; sized for the
/// scenario's CPU count, so nothing of it is on a stack).
///
/// # Safety
/// At most one caller per process: the block's one writer (see the callers).
unsafe fn truth_block(region: &Region) -> &'static mut [u64] {
    // SAFETY: the block is the first `truth_len` bytes of the live, page-aligned mapping (aligned
    // for `u64`, any bits valid); nothing else in this process references it (the caller's
    // contract), and the capture stage reads it only after the `execv`.
    unsafe { std::slice::from_raw_parts_mut(region.base as *mut u64, region.layout.truth_len / 8) }
}

/// Puts the block's words in the byte order the capture stage reads (little-endian).
fn seal_truth(w: &mut [u64]) {
    for v in w {
        *v = v.to_le();
    }
}

fn fill_truth<const CPUS: usize>(w: &mut [u64], r: &ShutdownReport<CPUS>, img_len: usize) {
    use truth::*;
    let c = cfg();
    w[W_MAGIC] = MAGIC;
    w[W_NCPU] = c.cpus as u64;
    w[W_CRASH_CPU] = r.crash_cpu as u64;
    w[W_IMAGE_LEN] = img_len as u64;
    w[W_IMAGE_ERR] = r.image_error.is_some() as u64;
    w[W_MASK_PATH] = match r.mask.path {
        MaskPath::Rtas => 0,
        MaskPath::RtasTakeover => 1,
        MaskPath::Presenter => 2,
        MaskPath::Hypervisor => 3,
    };
    w[W_RTAS_HOLDER] = match r.mask.decision {
        CrashAcquire::TakenOver { from } => from as u64 + 1,
        CrashAcquire::Unsafe { holder, .. } => holder.wrapping_add(1) as u64,
        _ => 0,
    };
    w[W_PAPR] = FW.violations.load(Ordering::Relaxed);
    let (t_start, t_crash) = harness::times();
    w[W_T_CRASH_MONO] = t_crash;
    w[W_T_START_MONO] = t_start;
    w[W_MASKED] = r.mask.masked as u64;
    w[W_NOT_ANSWERED] = r.not_answered as u64;
    w[W_RECORDS] = c.records;
    w[W_CRASH_IN_IRQ] = c.crash_in_irq as u64;
    w[W_T_ENTER] = r.t_enter_ns;
    w[W_T_IPI_DONE] = r.t_ipi_done_ns;
    w[W_T_MASKED] = r.t_masked_ns;
    w[W_T_SWITCH] = r.t_switch_ns;
    w[W_D0_RECORDS] = r.drains[0].records;
    w[W_D0_TORN] = r.drains[0].torn;
    w[W_D1_RECORDS] = r.drains[1].records;
    w[W_D1_TORN] = r.drains[1].torn;
    w[W_D0_STEPS] = r.drains[0].steps;
    w[W_D1_STEPS] = r.drains[1].steps;
    w[W_D0_BOUND] = r.drains[0].bound;
    w[W_D1_BOUND] = r.drains[1].bound;
    w[W_NOT_STOPPED] = r.drains[1].not_stopped;
    w[W_RTAS_IN_CALL] = c.rtas_in_call as u64;
    w[W_SEED] = c.seed;
    w[W_FW_CALLS] = FW.calls.load(Ordering::Relaxed);
    w[W_RING_BYTES] = (log().ring_words() * core::mem::size_of::<usize>()) as u64;
    w[W_WAIT_SPINS] = r.wait_spins;
    w[W_ACK_TIMEOUT_MS] = c.ack_timeout_ms;
    w[W_T_START_LOG] = T_START_LOG.load(Ordering::Relaxed);
    for (cpu, s) in sim_cpus().iter().enumerate().take(c.cpus.min(CPUS)) {
        let b = CPU_BASE + cpu * PER_CPU;
        // LMM(truth:B): pairs with LMM(truth:A) (stopped CPUs are also ordered by
        // LMM(checkin:A/B)).
        let set = s.truth_set.load(Ordering::Acquire);
        w[b + C_ROLE] = c.role(cpu).code();
        w[b + C_ANSWERED] = crash_state().answered(cpu) as u64;
        w[b + C_TRUTH_SET] = set as u64;
        let (task, irq) = if set {
            (
                s.truth_task.load(Ordering::Relaxed),
                s.truth_irq.load(Ordering::Relaxed),
            )
        } else {
            // A CPU that did not stop: at most what it committed, its call in progress included.
            (s.task.upper_bound(), s.irq.upper_bound())
        };
        w[b + C_TASK] = task;
        w[b + C_IRQ] = irq;
        w[b + C_MID] = s.mid.load(Ordering::Relaxed) as u64;
        w[b + C_DEFERRED] = s.deferred.load(Ordering::Relaxed);
        if let Some((ts, k, d)) = crash_state().stop_info(cpu) {
            w[b + C_STOP_TS] = ts;
            w[b + C_STOP_CTX] =
                nmilog::Header::pack_ctx(k.unwrap_or(nmilog::ContextKind::Task), d) as u64;
        }
        w[b + C_PC] = crash_state().saved_regs(cpu).map_or(0, |r| r.pc as u64);
        w[b + C_FREEZE_AT] = c.freeze_record(cpu);
        w[b + C_CPPR] = s.cppr.load(Ordering::Relaxed) as u64;
        w[b + C_DEAF] = c.is_deaf(cpu) as u64;
        w[b + C_LOWER_TASK] = s.lower_task.load(Ordering::Relaxed);
        w[b + C_LOWER_IRQ] = s.lower_irq.load(Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------------------------------------
// Signal handlers.

/// The NMI (system reset) handler: `SIGUSR1`, every other signal blocked while it runs.
extern "C" fn on_nmi(_sig: i32, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let c = HostPlatform::current_cpu();
    let Some(me) = sim_cpus().get(c) else { return };
    if log().crashing_cpu().is_none_or(|x| x == c) {
        return;
    }
    let t = me.task.resolve();
    let q = me.irq.resolve();
    let (t, q) = match (t, q) {
        (Some(t), Some(q)) => (t, q),
        _ if me.deferred.load(Ordering::Relaxed) < MAX_DEFER => {
            // Not an observable point: take the NMI at the next protocol step (a few instructions).
            me.deferred.fetch_add(1, Ordering::Relaxed);
            me.defer.store(true, Ordering::Relaxed);
            return;
        }
        (t, q) => (t.unwrap_or((0, false)), q.unwrap_or((0, false))),
    };
    let mid = t.1 as u8 | (q.1 as u8) << 1;
    me.set_truth(t.0, q.0, mid);
    let (pc, sp) = sys::regs_from_ucontext(uc);
    let what = match mid {
        0 => "",
        1 => ", inside a task log call",
        2 => ", inside an irq log call",
        _ => ", inside task and irq log calls",
    };
    on_nmi_stop(
        log(),
        &HostMachine,
        crash_state(),
        SavedRegs { pc, sp, msr: 0 },
        format_args!("pc={:#x}{}", pc, what),
    );
}

/// The timer interrupt: `SIGUSR2` (only itself blocked while it runs, so the NMI can land in it).
extern "C" fn on_timer(_sig: i32, _info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    let c = HostPlatform::current_cpu();
    let Some(me) = sim_cpus().get(c) else { return };
    log().irq_enter();
    let i = me.irq.committed.load(Ordering::Relaxed);
    let mut line = Line::new();
    let _ = write!(line, "cpu={} irq n={}", c, i);
    log_tracked(me, &me.irq, i, line.bytes(), false);
    // LMM(arm:B): pairs with LMM(arm:A).
    if CRASH_ARMED.load(Ordering::Acquire) && c == cfg().crash_cpu {
        crash_now(c, "an oops in the timer interrupt");
    }
    log().irq_exit();
    check_defer(me);
}

// ------------------------------------------------------------------------------------------------
// CPU threads.

fn cpu_main(c: usize) {
    let role = harness::cpu_prologue(c);
    let conf = cfg();
    let me = &sim_cpus()[c];
    let freeze_at = conf.freeze_record(c);
    for i in 0..conf.records {
        let mut line = Line::new();
        let _ = write!(line, "cpu={} n={}", c, i);
        log_tracked(me, &me.task, i, line.bytes(), i == freeze_at);
        // The task's other work between log calls (a busy loop, no system call), so that timer
        // interrupts interleave with the records and the NMI can land anywhere in the loop.
        harness::busy_work(conf.work_ns);
    }
    match role {
        Role::Crash => crash_cpu_main(c),
        Role::RtasHolder => rtas_hold(c, conf.rtas_in_call, conf.is_deaf(c)),
        Role::DeafLogging => keep_logging(c, conf.records),
        Role::DeafFlusher => {
            let next = own_the_flush_at_the_crash(c, conf.records);
            keep_logging(c, next)
        }
        Role::Deaf => {
            // Hung with interrupts hard-off: never answers, never logs again.
            sys::block_all();
            me.set_truth(
                me.task.committed.load(Ordering::Relaxed),
                me.irq.committed.load(Ordering::Relaxed),
                0,
            );
            harness::reached(c, Milestone::Hung);
            loop {
                sys::usleep(100_000);
            }
        }
        _ => loop {
            sys::usleep(conf.idle_poll_us());
            check_defer(me);
        },
    }
}

/// A CPU that never saw the NMI: logs task records from `from` on, through the crash and after it,
/// until the switchover replaces the process.
fn keep_logging(c: usize, from: u64) -> ! {
    let me = &sim_cpus()[c];
    let mut i = from;
    loop {
        let mut line = Line::new();
        let _ = write!(line, "cpu={} n={}", c, i);
        log_tracked(me, &me.task, i, line.bytes(), false);
        i += 1;
        harness::busy_work(cfg().work_ns.max(20_000));
    }
}

/// `--deaf-flusher`: logs until its own flush has a record to move, and parks inside that move at
/// the seed's step, holding flush ownership, until the crash has begun; then waits the seed's delay
/// and resumes, finishing the move (and the flush round). Returns the next task record number.
fn own_the_flush_at_the_crash(c: usize, from: u64) -> u64 {
    let me = &sim_cpus()[c];
    let (step, delay_us) = cfg().flusher_pause();
    let want = FlushStep::ALL[step];
    let mut parked = false;
    let mut i = from;
    while !parked {
        let mut line = Line::new();
        let _ = write!(line, "cpu={} n={}", c, i);
        // The append alone (no flush of its own): the flush below is the one that parks.
        let tr = &me.task;
        tr.in_call.store(i + 1, Ordering::Relaxed);
        // LMM(track:A), as in `log_tracked`.
        compiler_fence(Ordering::SeqCst);
        if log()
            .append_raw(Level::Info, facility::KERNEL, 0, line.bytes())
            .is_ok()
        {
            // LMM(committed:A), as in `log_tracked`.
            tr.committed.store(i + 1, Ordering::Release);
        }
        // LMM(track:A) and LMM(inflight:A), as in `log_tracked`.
        compiler_fence(Ordering::SeqCst);
        tr.in_call.store(0, Ordering::Release);
        i += 1;
        let _ = log().flush_with_hook(&mut |s: FlushStep| {
            if s == want && !parked {
                parked = true;
                harness::reached(c, Milestone::ParkedInFlush);
                while !harness::crash_has_started() {
                    sys::usleep(20);
                }
                sys::usleep(delay_us);
            }
            true
        });
    }
    i
}

/// Takes the RTAS lock (interrupts off, as `lock_rtas()`), fills the shared argument buffer and
/// stays there — before the call proper, or inside it — until the NMI stops this CPU.
fn rtas_hold(c: usize, inside: bool, deaf: bool) -> ! {
    let me = &sim_cpus()[c];
    sys::block(&[libc::SIGUSR2]);
    if deaf {
        // Hung holding the lock: it will never check in (and never give the lock back).
        me.set_truth(
            me.task.committed.load(Ordering::Relaxed),
            me.irq.committed.load(Ordering::Relaxed),
            0,
        );
    }
    RTAS.lock(c);
    RTAS_ARGS.fill(c, TOKEN_GET_XIVE, &[c as u32], 2);
    if inside {
        RTAS.enter_call(c);
        FW.enter(); // firmware is running this call, and never will return from it
    }
    harness::reached(c, Milestone::RtasParked);
    loop {
        sys::usleep(100);
    }
}

fn crash_cpu_main(c: usize) -> ! {
    let me = &sim_cpus()[c];
    harness::wait_for_setup(true);
    if cfg().crash_in_irq {
        // LMM(arm:A): pairs with LMM(arm:B) in the timer handler.
        CRASH_ARMED.store(true, Ordering::Release);
        loop {
            sys::usleep(100);
            check_defer(me);
        }
    }
    sys::block(&[libc::SIGUSR2]); // local_irq_disable()
    crash_now(c, "a simulated oops in task context (sysrq-c)")
}

fn crash_now(c: usize, reason: &str) -> ! {
    let me = &sim_cpus()[c];
    me.set_truth(
        me.task.committed.load(Ordering::Relaxed),
        me.irq.committed.load(Ordering::Relaxed),
        0,
    );
    harness::mark_crash_started();
    let region = REGION.get().expect("mapped at start-up");
    // SAFETY: the region is a live shared mapping of `layout.len` bytes; its image part
    // (`image_len` bytes after the truth block, before the kernel's memory) is referenced nowhere
    // else: only the crashing CPU gets here (one designated CPU, once: crash_now never returns).
    let image = unsafe {
        std::slice::from_raw_parts_mut(
            (region.base + region.layout.truth_len) as *mut u8,
            region.layout.image_len,
        )
    };
    let sc = ShutdownConfig {
        ack_timeout_ns: cfg().ack_timeout_ns(),
        max_wait_spins: u64::MAX,
    };
    crash_shutdown(
        log(),
        &HostMachine,
        crash_state(),
        &RTAS,
        image,
        &sc,
        format_args!("{}", reason),
    )
}

// ------------------------------------------------------------------------------------------------
// Start-up, ticker and watchdog.

pub(crate) fn run(conf: SimConfig) -> i32 {
    let conf = harness::configure(conf);
    let ncpu = conf.cpus;
    if let Err(e) = map_region_and_exec_args(conf) {
        eprintln!("{e}");
        return EXIT_FAIL;
    }
    log().set_flush_settle_ns(1_000_000);
    FW.nsrc.store(ncpu + DEVICE_SOURCES, Ordering::Relaxed);

    harness::install_signals(on_nmi, on_timer);
    harness::banner("nmilog crash demo (lock-free crash path)");
    T_START_LOG.store(log().platform().now_ns(), Ordering::Relaxed);
    if let Err(code) = harness::start_cpus(cpu_main) {
        return code;
    }
    harness::tick_until(
        |c| FW.source_enabled(c) && sim_cpus()[c].cppr.load(Ordering::Relaxed) != 0,
        |waited| {
            // LMM(died:B): pairs with LMM(died:A).
            if DIED.load(Ordering::Acquire) {
                after_death(conf);
            }
            let limit = conf.ack_timeout_ns().saturating_add(10_000_000_000);
            (waited > limit).then(|| {
                watchdog_report(conf, waited);
                EXIT_DEADLOCK
            })
        },
        || {
            let mut s = String::from("setup timeout: the scenario never reached its crash point\n");
            for (c, sc) in sim_cpus().iter().enumerate().take(ncpu) {
                let _ = writeln!(
                    s,
                    "  CPU {c}: {} task records committed, role {}",
                    sc.task.committed.load(Ordering::Relaxed),
                    conf.role(c).name()
                );
            }
            sys::write_fd(2, s.as_bytes());
        },
    )
}

/// Maps the handover region (the ground-truth block, then the image) and prepares the `execv`
/// arguments of the capture stage (`--capture-fd N` and the output options), so that the crash path
/// neither allocates nor formats.
fn map_region_and_exec_args(conf: &SimConfig) -> Result<(), String> {
    let layout = Layout::new(conf.cpus, conf.ring_bytes / core::mem::size_of::<usize>());
    let (fd, base) = sys::shared_region(layout.len)?;
    // SAFETY: a fresh (zero-filled) shared mapping of `layout.len` bytes, page-aligned, kept for the
    // rest of the process and referenced only through the region and the kernel from here on.
    unsafe { memory::boot(base, &layout, conf.cpus) }?;
    let _ = REGION.set(Region {
        base: base as usize,
        layout,
    });
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut strings = vec![
        CString::new(exe.as_os_str().as_encoded_bytes()).unwrap_or_default(),
        CString::new("--capture-fd").unwrap_or_default(),
        CString::new(fd.to_string()).unwrap_or_default(),
    ];
    for a in conf.to_args() {
        strings.push(CString::new(a).unwrap_or_default());
    }
    let mut ptrs: Vec<usize> = strings.iter().map(|s| s.as_ptr() as usize).collect();
    ptrs.push(0);
    let from_memory = CString::new("--from-memory").unwrap_or_default();
    let mut ptrs_from_memory = ptrs.clone();
    ptrs_from_memory.insert(3, from_memory.as_ptr() as usize);
    strings.push(from_memory);
    let _ = EXEC.set(ExecArgs {
        _strings: strings,
        ptrs,
        ptrs_from_memory,
    });
    Ok(())
}

/// The crash path did not reach the switchover in time (never expected with nmilog).
fn watchdog_report(conf: &SimConfig, waited_ns: u64) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "watchdog: crash path stuck for {} ms (no switchover)",
        waited_ns / 1_000_000
    );
    if let Some((h, inside)) = RTAS.holder() {
        let _ = writeln!(s, "  RTAS lock held by CPU {h} (inside call: {inside})");
    }
    if conf.json {
        let _ = writeln!(
            s,
            "{{\"summary\":{{\"deadlock\":true,\"mask_path\":null,\"elapsed_ms\":{}}}}}",
            waited_ns / 1_000_000
        );
        sys::write_fd(1, s.as_bytes());
    } else {
        sys::write_fd(2, s.as_bytes());
    }
    sys::exit_now(EXIT_DEADLOCK)
}
