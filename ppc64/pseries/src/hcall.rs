//! PAPR hypercalls: `sc 1` with the opcode in r3 and arguments in r4..r12; status comes back in r3 and
//! return values in r4..r11. The hypervisor may clobber r0, r3-r12, CTR, XER and CR: `clobber_abi("C")`
//! covers all of those (and more).

/// H_SUCCESS.
pub const H_SUCCESS: i64 = 0;
/// The hypervisor does not offer the call (for example the XICS calls under XIVE).
pub const H_FUNCTION: i64 = -2;
/// A parameter was refused.
pub const H_PARAMETER: i64 = -4;
/// Write up to 16 bytes to a virtual terminal.
pub const H_PUT_TERM_CHAR: u64 = 0x58;
/// Set partition-wide modes (resource 4: interrupt endianness).
pub const H_SET_MODE: u64 = 0x31c;
/// Deliver a system-reset interrupt (NMI) to a CPU, to all (-1) or to all but the caller (-2).
pub const H_SIGNAL_SYS_RESET: u64 = 0x380;
/// XICS presenter: set this CPU's current processor priority (CPPR). 0 blocks every interrupt.
/// (QEMU include/hw/ppc/spapr.h: H_EOI 0x64, H_CPPR 0x68, H_IPI 0x6c, H_IPOLL 0x70, H_XIRR 0x74.)
pub const H_CPPR: u64 = 0x68;
/// XICS presenter: end of interrupt (r4 = the XIRR returned by H_XIRR).
pub const H_EOI: u64 = 0x64;
/// XICS presenter: accept the highest-priority pending interrupt; r4 returns the XIRR (CPPR << 24 | XISR).
pub const H_XIRR: u64 = 0x74;
/// XICS presenter: poll a server's XIRR (r4: CPPR << 24 | XISR) and MFRR (r5) without accepting.
pub const H_IPOLL: u64 = 0x70;
/// Cede the processor until an interrupt (sets MSR[EE]: the interrupt is taken on return).
pub const H_CEDE: u64 = 0xe0;
/// Join: suspend this CPU (MSR[EE] must be 0) until H_PROD or a system reset; `H_CONTINUE` for the
/// last CPU that has not joined.
pub const H_JOIN: u64 = 0x298;
/// Prod: wake a CPU halted in H_JOIN or H_CEDE (r4 = its hardware id); a prod before the join
/// makes the next join return at once.
pub const H_PROD: u64 = 0xe8;
/// QEMU/KVM private: run an RTAS call; r4 = real address of the big-endian argument buffer.
pub const KVMPPC_H_RTAS: u64 = 0xf000;

/// H_SET_MODE resource: interrupt endianness (mflags 1 = little-endian).
pub const H_SET_MODE_RESOURCE_LE: u64 = 4;
/// H_SIGNAL_SYS_RESET target: every CPU.
pub const SYS_RESET_ALL: i64 = -1;
/// H_SIGNAL_SYS_RESET target: every CPU except the caller.
pub const SYS_RESET_ALL_OTHERS: i64 = -2;

/// Makes a hypercall with up to 6 arguments; returns (status, r4).
///
/// # Safety
/// The caller must pass arguments that are valid for `opcode` (for example, addresses given to the
/// hypervisor must point at memory the call may read or write).
#[inline(always)]
pub unsafe fn hcall(opcode: u64, args: [u64; 6]) -> (i64, u64) {
    let status: u64;
    let r4: u64;
    // SAFETY: `sc 1` enters the hypervisor, which only touches the registers declared here (all of
    // the C ABI's volatile set is clobbered) and the memory the caller vouched for.
    unsafe {
        core::arch::asm!(
            "sc 1",
            inlateout("r3") opcode => status,
            inlateout("r4") args[0] => r4,
            in("r5") args[1],
            in("r6") args[2],
            in("r7") args[3],
            in("r8") args[4],
            in("r9") args[5],
            clobber_abi("C"),
            options(nostack),
        );
    }
    (status as i64, r4)
}

/// A hypercall returning up to four values (r4..r7), with up to five arguments (r4..r8).
///
/// # Safety
/// As for [`hcall`].
#[inline(always)]
pub unsafe fn hcall4(opcode: u64, args: [u64; 5]) -> (i64, [u64; 4]) {
    let status: u64;
    let (r4, r5, r6, r7): (u64, u64, u64, u64);
    // SAFETY: `sc 1` enters the hypervisor, which only touches the registers declared here (all of
    // the C ABI's volatile set is clobbered) and the memory the caller vouched for.
    unsafe {
        core::arch::asm!(
            "sc 1",
            inlateout("r3") opcode => status,
            inlateout("r4") args[0] => r4,
            inlateout("r5") args[1] => r5,
            inlateout("r6") args[2] => r6,
            inlateout("r7") args[3] => r7,
            in("r8") args[4],
            clobber_abi("C"),
            options(nostack),
        );
    }
    (status as i64, [r4, r5, r6, r7])
}

/// H_PUT_TERM_CHAR: writes up to 16 bytes (packed big-endian into two doublewords) to terminal `term`.
pub fn put_term_chars(term: u64, bytes: &[u8]) -> i64 {
    let n = bytes.len().min(16);
    let mut buf = [0u8; 16];
    buf[..n].copy_from_slice(&bytes[..n]);
    let hi = u64::from_be_bytes(buf[..8].try_into().unwrap_or([0; 8]));
    let lo = u64::from_be_bytes(buf[8..].try_into().unwrap_or([0; 8]));
    // SAFETY: H_PUT_TERM_CHAR takes its data in registers; no memory is passed.
    unsafe { hcall(H_PUT_TERM_CHAR, [term, n as u64, hi, lo, 0, 0]).0 }
}

/// H_SET_MODE(1, 4): take interrupts in little-endian mode (sets LPCR[ILE] on every CPU).
pub fn set_interrupts_little_endian() -> i64 {
    // SAFETY: register-only hypercall.
    unsafe { hcall(H_SET_MODE, [1, H_SET_MODE_RESOURCE_LE, 0, 0, 0, 0]).0 }
}

/// H_CPPR: sets the calling CPU's interrupt-presenter priority (0 = block everything).
pub fn set_cppr(cppr: u8) -> i64 {
    // SAFETY: register-only hypercall.
    unsafe { hcall(H_CPPR, [cppr as u64, 0, 0, 0, 0, 0]).0 }
}

/// H_XIRR: accepts the pending interrupt; returns the XIRR (0 in the XISR: nothing pending).
pub fn accept_interrupt() -> u32 {
    // SAFETY: register-only hypercall.
    unsafe { hcall(H_XIRR, [0; 6]).1 as u32 }
}

/// H_EOI(xirr): ends the interrupt accepted with H_XIRR and restores the CPPR it carried.
pub fn end_of_interrupt(xirr: u32) -> i64 {
    // SAFETY: register-only hypercall.
    unsafe { hcall(H_EOI, [xirr as u64, 0, 0, 0, 0, 0]).0 }
}

/// H_IPOLL(server): (status, CPPR of that server's presenter).
pub fn poll_cppr(server: u64) -> (i64, u8) {
    // SAFETY: register-only hypercall.
    let (st, xirr) = unsafe { hcall(H_IPOLL, [server, 0, 0, 0, 0, 0]) };
    (st, (xirr >> 24) as u8)
}

/// H_SIGNAL_SYS_RESET: sends the system-reset NMI to `target` (a CPU's hardware id, or one of the
/// `SYS_RESET_*` constants).
pub fn signal_sys_reset(target: i64) -> i64 {
    // SAFETY: register-only hypercall.
    unsafe { hcall(H_SIGNAL_SYS_RESET, [target as u64, 0, 0, 0, 0, 0]).0 }
}

/// H_CEDE: gives this CPU back to the hypervisor until its next interrupt (the decrementer, an
/// external interrupt, a system reset), as Linux's pseries idle loop does. External interrupts are
/// enabled on return (the pending one is taken then).
pub fn cede() -> i64 {
    // SAFETY: register-only hypercall; enabling MSR[EE] is its documented effect, which the caller
    // expects (it runs with interrupts enabled already).
    unsafe { hcall(H_CEDE, [0; 6]).0 }
}

/// H_JOIN: gives this CPU back to the hypervisor (MSR[EE] = 0, as the caller guarantees) until a
/// system reset or an H_PROD; returns at once (`H_CONTINUE`, or `H_BAD_MODE` with MSR[EE] = 1) for
/// the last CPU still running. The caller loops.
pub fn join() -> i64 {
    // SAFETY: register-only hypercall.
    unsafe { hcall(H_JOIN, [0; 6]).0 }
}

/// H_PROD: wakes the CPU with hardware id `hw` from H_JOIN (or makes its next H_JOIN return).
pub fn prod(hw: u64) -> i64 {
    // SAFETY: register-only hypercall.
    unsafe { hcall(H_PROD, [hw, 0, 0, 0, 0, 0]).0 }
}
