//! Ground-truth tracking of the simulated CPUs' log calls: per CPU and context, how many records
//! were committed, which call is in progress and how far it got. It lives in the simulated kernel's
//! memory (see [`super::memory`]), so that after a death of the crash path the capture stage reads the
//! truth as it was when the machine stopped.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use nmilog::ring::WriteStep;

/// One context's log calls on one CPU. Written only by that CPU (its task code or its irq handler);
/// read by the same CPU's NMI handler, so `Relaxed` plus compiler fences order them (a signal handler
/// runs on the interrupted thread, after every instruction before the interruption point): the
/// fences are LMM(track:A), the handler's loads in `Track::resolve` LMM(track:B).
pub(crate) struct Track {
    /// Records committed so far (record `n` is the `n`-th call).
    pub(crate) committed: AtomicU64,
    /// `i + 1` while inside the log call for record `i`, else 0.
    pub(crate) in_call: AtomicU64,
    /// Last write-protocol step reached inside the current call (`WriteStep` index + 1; 0 = none).
    pub(crate) step: AtomicU8,
}

impl Track {
    pub(crate) const fn new() -> Self {
        Track {
            committed: AtomicU64::new(0),
            in_call: AtomicU64::new(0),
            step: AtomicU8::new(0),
        }
    }

    /// For a CPU that did not stop: the most records it may have committed, its log call in progress
    /// included (that call's record can be in its ring, and so in an image, before `committed`
    /// counts it). LMM(inflight:B): Acquire, pairs with LMM(inflight:A), the Release store of
    /// `in_call = 0` after `committed` moved: a load that finds the call over finds its count. A load
    /// that finds the call in progress bounds it by `in_call` (stored before the ring write, which
    /// the drain that saw the record acquired; the reader runs after that drain).
    pub(crate) fn upper_bound(&self) -> u64 {
        let in_call = self.in_call.load(Ordering::Acquire);
        self.committed.load(Ordering::Relaxed).max(in_call)
    }

    /// `(records committed, frozen inside the call with its record not committed)`, or `None` when
    /// the interruption point is one where neither is observable: between entering the call and the
    /// first protocol step (the core's recursion guard may or may not be set) or between the last
    /// payload store and the commit hook (the commit store may or may not have happened).
    pub(crate) fn resolve(&self) -> Option<(u64, bool)> {
        // LMM(track:B): pairs with LMM(track:A), the compiler fences between the interrupted code's
        // tracking stores: the handler sees them in program order. Relaxed: same thread.
        let ic = self.in_call.load(Ordering::Relaxed);
        if ic == 0 {
            return Some((self.committed.load(Ordering::Relaxed), false));
        }
        match self.step.load(Ordering::Relaxed) {
            // Entered .. PayloadHalf: guard set, record not committed.
            1..=5 => Some((ic - 1, true)),
            // Committed, Published: the record is in.
            7 | 8 => Some((ic, false)),
            _ => None,
        }
    }
}

pub(crate) fn step_code(s: WriteStep) -> u8 {
    WriteStep::ALL
        .iter()
        .position(|&x| x == s)
        .map_or(0, |i| i as u8 + 1)
}

pub(crate) struct SimCpu {
    pub(crate) task: Track,
    pub(crate) irq: Track,
    /// The NMI was deferred to the next observable point (see `Track::resolve`).
    pub(crate) defer: AtomicBool,
    pub(crate) deferred: AtomicU64,
    pub(crate) truth_task: AtomicU64,
    pub(crate) truth_irq: AtomicU64,
    /// Bit 0: frozen inside a task log call; bit 1: inside an irq log call.
    pub(crate) mid: AtomicU8,
    pub(crate) truth_set: AtomicBool,
    /// Interrupt presenter priority (0xff: everything presented; 0: nothing).
    pub(crate) cppr: AtomicU8,
    /// For a CPU that had not checked in when the handover image's drain began: the task and irq
    /// records it had committed by then (each must be in the image, or counted).
    pub(crate) lower_task: AtomicU64,
    pub(crate) lower_irq: AtomicU64,
}

impl SimCpu {
    pub(crate) const fn new() -> Self {
        SimCpu {
            task: Track::new(),
            irq: Track::new(),
            defer: AtomicBool::new(false),
            deferred: AtomicU64::new(0),
            truth_task: AtomicU64::new(0),
            truth_irq: AtomicU64::new(0),
            mid: AtomicU8::new(0),
            truth_set: AtomicBool::new(false),
            cppr: AtomicU8::new(0xff),
            lower_task: AtomicU64::new(0),
            lower_irq: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_truth(&self, task: u64, irq: u64, mid: u8) {
        self.truth_task.store(task, Ordering::Relaxed);
        self.truth_irq.store(irq, Ordering::Relaxed);
        self.mid.store(mid, Ordering::Relaxed);
        // Published to the crashing CPU through the check-in (LMM(checkin:A/B)) or, for the crashing
        // and deaf CPUs, by this Release (read with Acquire in `kexec`).
        // LMM(truth:A): pairs with LMM(truth:B) in `fill_truth`.
        self.truth_set.store(true, Ordering::Release);
    }
}
