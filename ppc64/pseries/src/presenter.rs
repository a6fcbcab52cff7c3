//! This CPU's interrupt presenter, whichever controller the platform has: XICS (hypervisor calls
//! `H_CPPR`, `H_IPOLL`) or XIVE (the OS ring of its TIMA, [`crate::xive`]). Both take no lock and
//! may be used on the crash path and in a stopped CPU's NMI handler.

use crate::{hcall, xive};

/// Sets this CPU's CPPR (0: nothing is presented; 0xff: everything). Returns the hypervisor's
/// status (XIVE: a store into the TIMA, always 0).
pub fn set_cppr(cppr: u8) -> i64 {
    if xive::active() {
        xive::set_cppr(cppr);
        hcall::H_SUCCESS
    } else {
        hcall::set_cppr(cppr)
    }
}

/// This CPU's CPPR as the controller reports it (XICS: `H_IPOLL` on its server `hw`; XIVE: its
/// OS ring), with the status of the call.
pub fn cppr(hw: u64) -> (i64, u8) {
    if xive::active() {
        (hcall::H_SUCCESS, xive::cppr())
    } else {
        hcall::poll_cppr(hw)
    }
}

/// How [`set_cppr`] reaches the presenter, for messages.
pub fn how() -> &'static str {
    if xive::active() {
        "XIVE TIMA"
    } else {
        "H_CPPR"
    }
}
