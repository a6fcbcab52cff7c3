//! The glue that runs the portable crash-shutdown sequence (`nmilog_ppc64::crash_shutdown`) on this
//! image, with the pseries machine (`machine`): the crash entry, and the system-reset handler of the
//! CPUs it stops.
//!
//! The stopped CPUs run `system_reset` from the 0x100 handler (own NMI stack): it hands the interrupted
//! registers to `nmilog_ppc64::on_nmi_stop`, which enters NMI context, logs "CPU n stopped", saves
//! them into the crash state, checks in (Release; the crashing CPU Acquire-loads it, with a timebase
//! bound) and parks. No console output from NMI or crash context: everything goes to nmilog (the
//! only exceptions are the failure exits' last words before power-off, through the lockless
//! `console::write_bytes`; see `console`).

use nmilog_ppc64::{Machine, ShutdownConfig};

use crate::bootparams::{HANDOVER_BASE, HANDOVER_SIZE};
use crate::crash_state::{CHECKIN_TIMEOUT_NS, STATE};
use crate::klog::LOG;
use crate::machine::MACHINE;
use crate::percpu::SavedRegs;
use crate::{baseline, irq, rtas, scenario};

/// The system-reset handler of every CPU but the crashing one. Runs on the CPU's own NMI stack.
pub fn system_reset(_cpu: usize, saved: &SavedRegs) -> ! {
    let regs = nmilog_ppc64::SavedRegs {
        pc: saved.nip as usize,
        sp: saved.gpr[1] as usize,
        msr: saved.msr as usize,
    };
    // Returns only if no crash is in progress (a stray system reset): then just park.
    nmilog_ppc64::on_nmi_stop(
        &LOG,
        &MACHINE,
        &STATE,
        regs,
        format_args!("nip {:#x} lr {:#x}", saved.nip, saved.lr),
    );
    MACHINE.park()
}

// The handover region holds any image of the kernel log: nothing is ever left out for lack of room.
const _: () = assert!(crate::klog::KernelLog::MAX_IMAGE_BYTES <= HANDOVER_SIZE);

/// Crash shutdown on the calling CPU. Never returns.
pub fn crash_shutdown(reason: &str) -> ! {
    irq::disable();
    if scenario::baseline() {
        baseline::crash(reason)
    }
    // SAFETY: HANDOVER_BASE..+HANDOVER_SIZE is RAM reserved for the image (see `bootparams`); nothing
    // else uses it, and only the crashing CPU writes it (after every other CPU is parked).
    let region =
        unsafe { core::slice::from_raw_parts_mut(HANDOVER_BASE as *mut u8, HANDOVER_SIZE) };
    let cfg = ShutdownConfig {
        ack_timeout_ns: CHECKIN_TIMEOUT_NS,
        ..ShutdownConfig::new()
    };
    nmilog_ppc64::crash_shutdown(
        &LOG,
        &MACHINE,
        &STATE,
        &rtas::RTAS_LOCK,
        region,
        &cfg,
        format_args!("{reason}"),
    )
}
