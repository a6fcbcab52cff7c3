//! The `die-in-drain` scenario's kill switch: the crashing CPU dies at the chosen point of its crash
//! path (`death_point`), from the pseries `Machine`'s `stage` and `drain_step` hooks, and the crash
//! path's breadcrumbs (the last stage and drain step it reached, as a kernel leaves in preserved
//! memory for a hung or dead crash path).
//!
//! **How it dies.** A system reset it never returns from: `H_SIGNAL_SYS_RESET` with its own hardware
//! id, from crash context (interrupts off; the system reset is not maskable). QEMU delivers it as the
//! hypercall returns, so the CPU is at the 0x100 vector before it executes one more instruction of the
//! crash path. What the handler then does is `fadump`'s business.
//!
//! **`last`.** The last record of a pass is known only once the pass's records are counted: at the
//! stage before the pass (`Masked` for the first drain, `ImageStart` for the image writer), the hook
//! counts them with a dry run of the same crash drain (read-only and repeatable: each call is a
//! fresh, complete drain; this one logs nothing in between, so the pass that follows delivers
//! exactly as many — provided every other CPU checked in, which the die-in-drain scenario ensures
//! (it has no deaf CPU). A CPU that did not stop and went on logging would change the count, and
//! `last` would then fire on an earlier record or not at all.)

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nmilog::RecordBuf;
use nmilog_ppc64::{CrashStage, DrainStep};

use crate::crash_state::STATE;
use crate::death_point::{DeathPoint, Nth, STAGE_NAMES};
use crate::klog::LOG;
use crate::{exceptions, hcall, percpu};

/// The death point, encoded: 0 none; 1 + index in `STAGE_NAMES`; then the drain steps.
static POINT: AtomicUsize = AtomicUsize::new(0);
/// The record index of a `Record`/`Sized`/`Copy` point (`u64::MAX`: `last`, not resolved yet).
static NTH: AtomicU64 = AtomicU64::new(0);
/// Whether the point's `Nth` is `last`.
static LAST: AtomicUsize = AtomicUsize::new(0);
/// Breadcrumb: 1 + index in `STAGE_NAMES` of the last stage the crash path reached (0: none).
static REACHED_STAGE: AtomicUsize = AtomicUsize::new(0);
/// Breadcrumb: the last drain step reached since that stage, encoded as `step_code` (0: none).
static REACHED_STEP: AtomicU64 = AtomicU64::new(0);

const RECORD: usize = 8;
const SIZED: usize = 9;
const COPY: usize = 10;
const TABLES: usize = 11;
const HEADER: usize = 12;

/// Sets the death point (at boot, before any CPU crashes).
pub fn set(point: Option<DeathPoint>) {
    let (code, nth) = match point {
        None => (0, Nth::At(0)),
        Some(DeathPoint::Stage(s)) => (
            1 + STAGE_NAMES.iter().position(|(x, _)| *x == s).unwrap_or(0),
            Nth::At(0),
        ),
        Some(DeathPoint::Record(n)) => (RECORD, n),
        Some(DeathPoint::Sized(n)) => (SIZED, n),
        Some(DeathPoint::Copy(n)) => (COPY, n),
        Some(DeathPoint::Tables) => (TABLES, Nth::At(0)),
        Some(DeathPoint::Header) => (HEADER, Nth::At(0)),
    };
    let (n, last) = match nth {
        Nth::At(n) => (n, 0),
        Nth::Last => (u64::MAX, 1),
    };
    NTH.store(n, Ordering::Relaxed);
    LAST.store(last, Ordering::Relaxed);
    POINT.store(code, Ordering::Relaxed);
}

/// The death point set at boot.
pub fn point() -> Option<DeathPoint> {
    let nth = || {
        if LAST.load(Ordering::Relaxed) != 0 {
            Nth::Last
        } else {
            Nth::At(NTH.load(Ordering::Relaxed))
        }
    };
    match POINT.load(Ordering::Relaxed) {
        0 => None,
        c @ 1..=7 => Some(DeathPoint::Stage(STAGE_NAMES[c - 1].0)),
        RECORD => Some(DeathPoint::Record(nth())),
        SIZED => Some(DeathPoint::Sized(nth())),
        COPY => Some(DeathPoint::Copy(nth())),
        TABLES => Some(DeathPoint::Tables),
        HEADER => Some(DeathPoint::Header),
        _ => None,
    }
}

/// `Machine::stage`: leaves the breadcrumb, resolves a `last` before its pass, dies if this is the
/// point.
pub fn at_stage(stage: CrashStage) {
    let i = STAGE_NAMES
        .iter()
        .position(|(s, _)| *s == stage)
        .unwrap_or(0);
    REACHED_STAGE.store(i + 1, Ordering::Relaxed);
    REACHED_STEP.store(0, Ordering::Relaxed);
    let Some(point) = point() else {
        return;
    };
    if point == DeathPoint::Stage(stage) {
        die()
    }
    let resolve = matches!(
        (point, stage),
        (DeathPoint::Record(Nth::Last), CrashStage::Masked)
            | (DeathPoint::Sized(Nth::Last), CrashStage::ImageStart)
            | (DeathPoint::Copy(Nth::Last), CrashStage::ImageStart)
    );
    if resolve {
        let mut n = 0u64;
        let counted = LOG.drain_on_crash(&|c| STATE.checked_in(c), &mut |_, _: &RecordBuf| {
            n += 1;
            true
        });
        if counted.is_ok() && n > 0 {
            NTH.store(n - 1, Ordering::Relaxed);
        }
    }
}

/// `Machine::drain_step`: leaves the breadcrumb, dies if this is the point.
pub fn at_step(step: DrainStep) {
    REACHED_STEP.store(step_code(step), Ordering::Relaxed);
    if point().is_some_and(|p| p.is_step(step, NTH.load(Ordering::Relaxed))) {
        die()
    }
}

/// A drain step as one word for the breadcrumb: kind in the top byte, index below (+1: 0 = none).
fn step_code(step: DrainStep) -> u64 {
    use nmilog::handover::ImageStep;
    let (kind, n) = match step {
        DrainStep::Record(n) => (1, n),
        DrainStep::Image(ImageStep::Sized(n)) => (2, n),
        DrainStep::Image(ImageStep::Copy(n)) => (3, n),
        DrainStep::Image(ImageStep::Tables) => (4, 0),
        DrainStep::Image(ImageStep::Header) => (5, 0),
    };
    kind << 56 | (n & ((1 << 56) - 1))
}

/// The breadcrumbs, for the firmware's report: the last stage reached and the last drain step after
/// it (`drain:N`, `image-sized:N`, ...), formatted into `out`.
pub fn breadcrumbs(out: &mut impl core::fmt::Write) -> core::fmt::Result {
    match REACHED_STAGE.load(Ordering::Relaxed) {
        0 => out.write_str("none")?,
        i => out.write_str(STAGE_NAMES[(i - 1).min(6)].1)?,
    }
    let s = REACHED_STEP.load(Ordering::Relaxed);
    let n = s & ((1 << 56) - 1);
    match s >> 56 {
        0 => Ok(()),
        1 => write!(out, ", then drain:{n}"),
        2 => write!(out, ", then image-sized:{n}"),
        3 => write!(out, ", then image-copy:{n}"),
        4 => out.write_str(", then image-tables"),
        _ => out.write_str(", then image-header"),
    }
}

/// Dies: a system reset on this CPU, which never returns here (see the module docs).
fn die() -> ! {
    let hw = percpu::this_cpu().map_or(0, |c| c.hw_id.load(Ordering::Relaxed));
    hcall::signal_sys_reset(hw as i64);
    // Not reached: the reset is taken as the hypercall returns. Were it ever delayed, nothing of the
    // crash path runs meanwhile.
    exceptions::park()
}
