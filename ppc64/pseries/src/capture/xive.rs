//! The capture stage's check of the crashing CPU's XIVE teardown (`BootParams::xive_teardown`):
//! this stage runs on the CPU that crashed, so it reads that CPU's presenter in its own TIMA (CPPR
//! 0: nothing presented) and asks the hypervisor for its queue (size 0: reset), beside the two
//! statuses the crash path reported. Nothing under XICS (`tima_os` = 0).

use core::fmt::Write;

use crate::bootparams::BootParams;
use crate::hcall;

/// `H_INT_GET_QUEUE_CONFIG(flags, target, priority)` -> (flags, qpage, qsize, offset).
const H_INT_GET_QUEUE_CONFIG: u64 = 0x3bc;
/// The priority of the kernel's queue (`xive::PRIO`).
const PRIO: u64 = 6;
/// The OS ring's first word in the TIMA's OS page (NSR, CPPR, IPB, LSMFB).
const TM_QW1_OS: u64 = 0x10;

/// Prints and checks the teardown; `true` under XICS or when it held.
pub fn print_and_check(p: &BootParams, out: &mut impl Write) -> bool {
    if p.tima_os == 0 || p.crash_hw == u64::MAX {
        return true;
    }
    // SAFETY: the TIMA's OS page the crashed kernel found in the device tree; a 32-bit load of the
    // OS ring's first word has no side effect (big-endian MMIO).
    let w =
        u32::from_be(unsafe { core::ptr::read_volatile((p.tima_os + TM_QW1_OS) as *const u32) });
    let cppr = (w >> 16) as u8;
    // SAFETY: a register-only hypervisor call.
    let (st, cfg) = unsafe { hcall::hcall4(H_INT_GET_QUEUE_CONFIG, [0, p.crash_hw, PRIO, 0, 0]) };
    let [q, r] = p.xive_teardown;
    let ok = cppr == 0 && st == hcall::H_SUCCESS && cfg[2] == 0 && q == 0 && r == 0;
    let _ = writeln!(
        out,
        "capture: XIVE: the crashing CPU's teardown before the jump: queue reset (H_INT_SET_QUEUE_CONFIG = {q}; H_INT_GET_QUEUE_CONFIG = {st}: size {}), controller reset (H_INT_RESET = {r}), CPPR {cppr:#x} in its TIMA{}",
        cfg[2],
        if ok { "" } else { "  <-- FAILED" }
    );
    ok
}
