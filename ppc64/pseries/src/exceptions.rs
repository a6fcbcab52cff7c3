//! The system-reset (0x100) interrupt: the NMI that H_SIGNAL_SYS_RESET delivers; and the machine
//! check a scenario injects ([`inject_machine_check`]).
//!
//! The image cannot own real address 0 (the firmware lives there: under VOF the client-interface entry
//! is 0x10c), so `install_system_reset_vector` patches a single absolute branch (`ba`) into 0x100 at
//! run time, after the last client-interface call, and flushes it from the data cache to the
//! instruction cache.
//!
//! The interrupt arrives in real mode, 64-bit, little-endian (after H_SET_MODE), with external
//! interrupts, FP, VMX and VSX off, and all GPRs live. `__system_reset_entry` saves every GPR and the
//! interrupted SRR0/SRR1/LR/CTR/CR/XER into this CPU's `percpu::PerCpu::saved` (found through SPRG0, with SPRG1
//! and SPRG2 as scratch), switches to the CPU's own NMI stack, loads the TOC, re-enables FP/VMX/VSX
//! (compiled `core` may use VSX) and calls `system_reset_rust(cpu, &saved)`, which never returns.
//! A second system reset on a CPU that is already in its handler overwrites the save area: the handler
//! parks forever, so nothing resumes from it.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::asm;
use crate::percpu::{self, SavedRegs};

const OFF_NIP: usize = core::mem::offset_of!(SavedRegs, nip);
const OFF_MSR: usize = core::mem::offset_of!(SavedRegs, msr);
const OFF_LR: usize = core::mem::offset_of!(SavedRegs, lr);
const OFF_CTR: usize = core::mem::offset_of!(SavedRegs, ctr);
const OFF_CR: usize = core::mem::offset_of!(SavedRegs, cr);
const OFF_XER: usize = core::mem::offset_of!(SavedRegs, xer);

// The 0x100 handler. Register use:
//   SPRG0 (272) = &PerCpu of this CPU (set at CPU bring-up), SPRG1 (273) = interrupted r13,
//   SPRG2 (274) = interrupted r12. r13 then points at the PerCpu slot, r12 holds CR.
// If SPRG0 is 0 (a CPU that never went through bring-up) the handler parks without touching memory.
core::arch::global_asm!(
    r#"
    .section .text.nmi, "ax"
    .globl __system_reset_entry
    .type __system_reset_entry, @function
    .balign 256
__system_reset_entry:
    mtspr 273, 13
    mtspr 274, 12
    mfcr 12
    mfspr 13, 272
    cmpdi 13, 0
    beq 99f
    std 12, ({saved} + {cr})(13)
    mfspr 12, 274
    std 12, ({saved} + 12*8)(13)
    mfspr 12, 273
    std 12, ({saved} + 13*8)(13)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    std \n, ({saved} + \n*8)(13)
    .endr
    mfsrr0 12
    std 12, ({saved} + {nip})(13)
    mfsrr1 12
    std 12, ({saved} + {msr})(13)
    mflr 12
    std 12, ({saved} + {lr})(13)
    mfctr 12
    std 12, ({saved} + {ctr})(13)
    mfxer 12
    std 12, ({saved} + {xer})(13)

    /* own NMI stack, with a zero back chain */
    ld 1, {nmi_stack}(13)
    li 0, 0
    std 0, 0(1)
"#,
    asm::load_toc!(),
    asm::enable_fp_vsx!(),
    r#"
    ld 3, {index}(13)
    addi 4, 13, {saved}
    bl {rust}
    nop
99:
    b 99b
    .size __system_reset_entry, . - __system_reset_entry
    .text
    "#,
    saved = const percpu::OFF_SAVED,
    nip = const OFF_NIP,
    msr = const OFF_MSR,
    lr = const OFF_LR,
    ctr = const OFF_CTR,
    cr = const OFF_CR,
    xer = const OFF_XER,
    nmi_stack = const percpu::OFF_NMI_STACK_TOP,
    index = const percpu::OFF_INDEX,
    rust = sym system_reset_rust,
);

extern "C" {
    fn __system_reset_entry();
}

/// The application's handler: `fn(cpu, saved) -> !` (0 = none: park).
static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Sets the Rust function the 0x100 handler calls.
pub fn set_system_reset_handler(f: fn(usize, &SavedRegs) -> !) {
    // Release pairs with the Acquire load in `system_reset_rust` (on the CPU taking the NMI).
    HANDLER.store(f as usize, Ordering::Release);
}

extern "C" fn system_reset_rust(cpu: usize, saved: &SavedRegs) -> ! {
    // The kernel's own context word: NMI from here on (the handler never returns).
    crate::percpu::nmi_enter();
    // Acquire pairs with the Release store in `set_system_reset_handler`.
    let h = HANDLER.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: HANDLER only ever holds 0 or a `fn(usize, &SavedRegs) -> !` stored above.
        let f = unsafe { core::mem::transmute::<usize, fn(usize, &SavedRegs) -> !>(h) };
        f(cpu, saved)
    }
    park()
}

/// Spins forever at low SMT priority with interrupts as they are.
pub fn park() -> ! {
    loop {
        crate::irq::quiet_decrementer();
        if crate::smp::msr() & crate::smp::MSR_EE == 0 {
            let _ = crate::hcall::join();
        }
        // SAFETY: `or 1,1,1` is the SMT low-priority hint; it changes no architected state.
        unsafe { core::arch::asm!("or 1, 1, 1", options(nomem, nostack, preserves_flags)) };
        core::hint::spin_loop();
    }
}

/// Real address of the system-reset vector.
pub const SYSTEM_RESET_VECTOR: usize = 0x100;
/// Real address of the machine-check vector.
pub const MACHINE_CHECK_VECTOR: usize = 0x200;
/// Real address of the external-interrupt vector.
pub const EXTERNAL_VECTOR: usize = 0x500;
/// Real address of the decrementer vector.
pub const DECREMENTER_VECTOR: usize = 0x900;

/// Writes `ba __system_reset_entry` at 0x100 and makes it visible to instruction fetch on every CPU.
/// Returns the instruction written.
///
/// # Safety
/// Overwrites firmware memory at 0x100: the Open Firmware client interface must not be used
/// afterwards (this calls `of::close()`), and no CPU may be executing there.
pub unsafe fn install_system_reset_vector() -> u32 {
    crate::of::close();
    // SAFETY: forwarded to the caller.
    unsafe {
        install_vector(
            SYSTEM_RESET_VECTOR,
            __system_reset_entry as *const () as usize,
        )
    }
}

/// Writes `ba target` at real address `vector` and flushes it to the instruction caches.
///
/// # Safety
/// `vector` is an interrupt vector in firmware memory that is no longer used (the client interface is
/// closed) and no CPU executes there or can take that interrupt yet; `target` is an interrupt entry.
pub unsafe fn install_vector(vector: usize, target: usize) -> u32 {
    assert!(
        target < (1 << 25) && target & 3 == 0,
        "handler must be reachable by an absolute branch"
    );
    // `ba target`: opcode 18, LI = target, AA = 1, LK = 0.
    let insn: u32 = 0x4800_0002 | target as u32;
    let p = vector as *mut u32;
    // SAFETY: the vector is RAM owned by the (now closed) firmware; we run untranslated.
    unsafe { p.write_volatile(insn) };
    flush_icache_range(vector, vector + 4);
    insn
}

/// Makes instructions stored in `[start, end)` visible to instruction fetch on every CPU: dcbst each
/// line, sync, icbi each line, sync, isync (the sequence of Power ISA Book II, 1.9 "instruction storage").
pub fn flush_icache_range(start: usize, end: usize) {
    const LINE: usize = 128;
    let mut a = start & !(LINE - 1);
    while a < end {
        // SAFETY: dcbst only writes a cache line back to memory; it has no architected effect on data.
        unsafe {
            core::arch::asm!("dcbst 0, {0}", in(reg_nonzero) a, options(nostack, preserves_flags))
        };
        a += LINE;
    }
    // SAFETY: a barrier: orders the write-backs before the invalidations.
    unsafe { core::arch::asm!("sync", options(nostack, preserves_flags)) };
    let mut a = start & !(LINE - 1);
    while a < end {
        // SAFETY: icbi discards a stale instruction-cache line (broadcast to all CPUs); no data effect.
        unsafe {
            core::arch::asm!("icbi 0, {0}", in(reg_nonzero) a, options(nostack, preserves_flags))
        };
        a += LINE;
    }
    // SAFETY: barriers: the invalidations complete, then this CPU discards prefetched instructions.
    unsafe { core::arch::asm!("sync", "isync", options(nostack, preserves_flags)) };
}

/// SRR1 bits of a synthesized machine check: bits 42 and 43 of the 64-bit SRR1 (ISA numbering:
/// bit 0 is the most significant), a load/store error as POWER9 reports one. (Bits 33-36 and 42-47
/// are cause bits: `rfid` ignores them.)
pub const INJECTED_MCE_SRR1: u64 = (1 << (63 - 42)) | (1 << (63 - 43));

/// A machine check on this CPU, as the hardware delivers one: SRR0 = the instruction after this
/// call's branch, SRR1 = the MSR now (its RI says whether the state is recoverable) with the cause
/// bits [`INJECTED_MCE_SRR1`], MSR[EE] = MSR[RI] =
/// 0, then the 0x200 vector. QEMU's TCG pseries model cannot raise one (a load from unassigned
/// memory returns 0 there), so the `machine-check` scenario injects it this way; what runs from
/// 0x200 on is the real handler. Returns when the handler does (a recoverable machine check).
///
/// Safe to call anywhere: MSR[EE] and MSR[RI] are cleared before SRR0/SRR1 are set, and SRR1 (the
/// MSR before the call) puts them back on return.
pub fn inject_machine_check() {
    // SAFETY: SRR0/SRR1 are free once EE = 0 (no interrupt uses them then but a system reset, which
    // never returns, or a machine check, which finds RI = 0 and does not return); the 0x200 entry
    // saves and restores every register it uses and returns with rfid to SRR0 = label 2 with the
    // MSR from SRR1 (cause bits ignored), so only LR (bl) and the temporaries change.
    unsafe {
        core::arch::asm!(
            "mfmsr {m}",
            // EE = RI = 0 first (as the interrupt leaves them): no other interrupt may take SRR0/SRR1
            // from here to the vector.
            "li {t}, 0",
            "mtmsrd {t}, 1",
            "or {t}, {m}, {cause}",
            "mtsrr1 {t}",
            "bl 1f",
            "1: mflr {t}",
            "addi {t}, {t}, 2f - 1b",
            "mtsrr0 {t}",
            "ba {vector}",
            "2:",
            m = out(reg) _,
            t = out(reg_nonzero) _,
            cause = in(reg) INJECTED_MCE_SRR1,
            vector = const MACHINE_CHECK_VECTOR,
            out("lr") _,
        );
    }
}
