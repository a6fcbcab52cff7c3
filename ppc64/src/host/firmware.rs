//! The simulation's firmware: an RTAS model with a table of interrupt sources (one timer per CPU,
//! then the devices) that `ibm,int-off` really disables, and a detector of overlapping calls (PAPR:
//! RTAS calls are serialised).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::config::MAX_CPUS;
use crate::machine::RtasArgs;

/// RTAS token of `ibm,int-off` in the model.
pub(crate) const TOKEN_INT_OFF: u32 = 0x2001;
/// RTAS token of `ibm,get-xive` in the model.
pub(crate) const TOKEN_GET_XIVE: u32 = 0x2002;
/// Interrupt sources besides the per-CPU timers (console, disk, network, PCI).
pub(crate) const DEVICE_SOURCES: usize = 4;
const MAX_SOURCES: usize = MAX_CPUS + DEVICE_SOURCES;

/// RTAS as the simulation sees it: a table of interrupt sources, and a detector of overlapping calls
/// (PAPR: RTAS calls are serialised).
pub(crate) struct Firmware {
    inside: AtomicUsize,
    /// Calls that overlapped another call (PAPR violations).
    pub(crate) violations: AtomicU64,
    /// Calls made.
    pub(crate) calls: AtomicU64,
    /// Interrupt sources: one timer per CPU, then the devices.
    pub(crate) nsrc: AtomicUsize,
    enabled: [AtomicBool; MAX_SOURCES],
}

impl Firmware {
    pub(crate) const fn new() -> Self {
        Firmware {
            inside: AtomicUsize::new(0),
            violations: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            nsrc: AtomicUsize::new(0),
            enabled: [const { AtomicBool::new(true) }; MAX_SOURCES],
        }
    }

    /// Enters firmware (the call proper begins).
    pub(crate) fn enter(&self) {
        // LMM(fw:B): the Acquire half pairs with LMM(fw:A), the previous call's `leave`: a call
        // that finds firmware idle sees the previous call's effects (the model's serialisation).
        // The Release half pairs with nothing (stronger than needed): the count detects overlap.
        if self.inside.fetch_add(1, Ordering::AcqRel) != 0 {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        // LMM(fw:A): the Release half pairs with LMM(fw:B) in the next call's `enter`. The Acquire
        // half pairs with nothing (stronger than needed).
        self.inside.fetch_sub(1, Ordering::AcqRel);
    }

    /// One call with `args` (the caller holds the RTAS lock and is marked inside it).
    pub(crate) fn call(&self, args: &RtasArgs) -> i32 {
        self.enter();
        let token = args.token.load(Ordering::Relaxed);
        let a0 = args.cells[0].load(Ordering::Relaxed) as usize;
        let status = match token {
            TOKEN_INT_OFF if a0 < self.nsrc.load(Ordering::Relaxed) => {
                // LMM(src:A): pairs with LMM(src:B), the ticker's check.
                self.enabled[a0].store(false, Ordering::Release);
                0
            }
            TOKEN_GET_XIVE => 0,
            _ => -3,
        };
        self.leave();
        status
    }

    pub(crate) fn source_enabled(&self, src: usize) -> bool {
        self.enabled
            .get(src)
            // LMM(src:B): pairs with LMM(src:A).
            .is_some_and(|e| e.load(Ordering::Acquire))
    }
}
