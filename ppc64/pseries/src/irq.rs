//! The decrementer interrupt (0x900): the per-CPU timer that gives each CPU an interrupt context;
//! the external interrupt (0x500) from the XICS or XIVE presenter; and the machine check (0x200).
//!
//! The three entries are the same code (`NMILOG_IRQ_ENTRY`), reached through a `ba` patched at the
//! vector (like the system-reset vector), each calling its own Rust function with the frame in r3. The
//! interrupt arrives in real mode, little-endian, with MSR[EE], FP, VMX and VSX cleared, on whatever stack
//! the interrupted code was using. The entry:
//!
//! 1. opens a frame below the interrupted code's 288-byte ELFv2 protected zone (`stdu r1,-1536(r1)`:
//!    r1 is always a valid stack pointer in this image while EE is on);
//! 2. saves r0, r2-r13, LR, CTR, CR, XER, SRR0, SRR1 (the non-volatile r14-r31 are kept by the Rust
//!    callee), turns FP/VMX/VSX back on and saves all 64 VSX registers, FPSCR and VSCR (the ELFv2
//!    callee may clobber the volatile FP/vector registers and the right halves of vs14-vs31; saving all
//!    64 is simpler than telling them apart);
//! 3. loads the TOC and calls `decrementer_rust()`, which re-arms the decrementer (so the level-triggered
//!    interrupt drops) and runs the registered handler with EE still off (or `external_rust()`, which
//!    accepts the interrupt — XICS: H_XIRR, then H_EOI; XIVE: the TIMA, the event queue, the
//!    source's ESB — and runs its handler; or
//!    `machine_check_rust(frame)`, which reads SRR0/SRR1 from the frame and runs `crash::machine_check`);
//! 4. restores everything and returns with `rfid` (SRR1 puts EE and FP/VMX/VSX back as they were).
//!    MSR[RI] (recoverable interrupt) is 0 from the interrupt until step 2 has saved SRR0/SRR1 and
//!    again from before they are reloaded until `rfid`: a machine check in those windows finds
//!    SRR1[RI] = 0 and does not return.
//!
//! A system reset that lands anywhere in here is fine: its handler never returns. A machine check
//! that lands in here is taken on the same stack, below this frame (the entry needs no scratch
//! register but r1, a valid stack pointer wherever this image runs with MSR[EE] or MSR[ME] on,
//! except a secondary's first instructions before its stack is set); it comes back only if
//! recoverable.
//!
//! Frame (offsets from the new r1): 0 back chain, 8..31 reserved for the callee (ELFv2 header),
//! 32 + 8n: rn (n = 0, 2..13), 144 LR, 152 CTR, 160 CR, 168 XER, 176 SRR0, 184 SRR1, 192 FPSCR,
//! 208 VSCR (16-byte aligned), 224: vs0..vs63 (16 bytes each, up to 1248).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::asm;

core::arch::global_asm!(
    r#"
    .macro NMILOG_IRQ_ENTRY name, rust
    .section .text.irq, "ax"
    .globl \name
    .type \name, @function
    .balign 256
\name:
    stdu 1, -1536(1)
    std 0, 32(1)
    .irp n, 2,3,4,5,6,7,8,9,10,11,12,13
    std \n, (32 + \n * 8)(1)
    .endr
    mflr 0
    std 0, 144(1)
    mfctr 0
    std 0, 152(1)
    mfcr 0
    std 0, 160(1)
    mfxer 0
    std 0, 168(1)
    mfsrr0 0
    std 0, 176(1)
    mfsrr1 0
    std 0, 184(1)
    /* EE stays off */
"#,
    asm::enable_fp_vsx!(),
    r#"
    addi 11, 1, 224
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
    stxvd2x \n, 0, 11
    addi 11, 11, 16
    .endr
    mffs 0                      /* f0 is saved above */
    stfd 0, 192(1)
    mfvscr 0                    /* v0 (vs32) is saved above */
    addi 11, 1, 208
    stvx 0, 0, 11
"#,
    asm::load_toc!(),
    r#"
    mr 3, 1                     /* the frame, for a handler that reads SRR0/SRR1 */
    bl \rust
    nop
    addi 11, 1, 208
    lvx 0, 0, 11
    mtvscr 0
    lfd 0, 192(1)
    mtfsf 0xff, 0
    addi 11, 1, 224
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
    lxvd2x \n, 0, 11
    addi 11, 11, 16
    .endr
    li 0, 0                     /* MSR[RI] = 0 (and EE = 0): SRR0/SRR1 are about to hold the return */
    mtmsrd 0, 1                 /* state, which a machine check from here to rfid would overwrite */
    ld 0, 184(1)
    mtsrr1 0
    ld 0, 176(1)
    mtsrr0 0
    ld 0, 168(1)
    mtxer 0
    ld 0, 160(1)
    mtcr 0
    ld 0, 152(1)
    mtctr 0
    ld 0, 144(1)
    mtlr 0
    ld 0, 32(1)
    .irp n, 2,3,4,5,6,7,8,9,10,11,12,13
    ld \n, (32 + \n * 8)(1)
    .endr
    addi 1, 1, 1536
    rfid
    .size \name, . - \name
    .text
    .endm

    NMILOG_IRQ_ENTRY __decrementer_entry, {dec}
    NMILOG_IRQ_ENTRY __external_entry, {ext}
    NMILOG_IRQ_ENTRY __machine_check_entry, {mce}
    "#,
    dec = sym decrementer_rust,
    ext = sym external_rust,
    mce = sym machine_check_rust,
);

extern "C" {
    fn __decrementer_entry();
    fn __external_entry();
    fn __machine_check_entry();
}

/// Offsets of the saved SRR0 and SRR1 in the entry's frame (see the frame layout above).
const FRAME_SRR0: usize = 176;
const FRAME_SRR1: usize = 184;

/// Installs the machine-check vector (0x200): the same entry, calling `crash::machine_check` with
/// the interrupted NIP and SRR1. The handler returns (`rfid`) when the interrupt is recoverable.
///
/// # Safety
/// As for `install`.
pub unsafe fn install_machine_check() -> u32 {
    // SAFETY: forwarded to the caller; __machine_check_entry is the interrupt entry above.
    unsafe {
        crate::exceptions::install_vector(
            crate::exceptions::MACHINE_CHECK_VECTOR,
            __machine_check_entry as *const () as usize,
        )
    }
}

extern "C" fn machine_check_rust(frame: *const u64) {
    // SAFETY: `frame` is the entry's frame (r1 at the call), which holds SRR0 and SRR1 at these
    // offsets, stored before the call.
    let (srr0, srr1) = unsafe {
        (
            frame.byte_add(FRAME_SRR0).read(),
            frame.byte_add(FRAME_SRR1).read(),
        )
    };
    crate::percpu::machine_check_enter();
    crate::crash::machine_check(crate::percpu::this_cpu_index(), srr0, srr1);
    crate::percpu::machine_check_exit();
}

/// The decrementer period in timebase ticks (0 = do not re-arm).
static PERIOD: AtomicU64 = AtomicU64::new(0);
/// The handler: `fn(cpu)` (0 = none).
static HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The external-interrupt handler: `fn(cpu, xisr)` (0 = none).
static EXT_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs the decrementer vector and the Rust handler `f(cpu)`, run every `period_ticks` on each CPU
/// that enables it with [`start_this_cpu`].
///
/// # Safety
/// The Open Firmware client interface is closed and no CPU has MSR[EE] set yet.
pub unsafe fn install(f: fn(usize), period_ticks: u64) -> u32 {
    PERIOD.store(period_ticks, Ordering::Relaxed);
    // Release pairs with the Acquire load in `decrementer_rust` (on any CPU).
    HANDLER.store(f as usize, Ordering::Release);
    // SAFETY: forwarded to the caller; __decrementer_entry is the interrupt entry above.
    unsafe {
        crate::exceptions::install_vector(
            crate::exceptions::DECREMENTER_VECTOR,
            __decrementer_entry as *const () as usize,
        )
    }
}

/// Installs the external-interrupt vector (0x500) and its Rust handler `f(cpu, source)`: the entry
/// accepts the interrupt (XICS: H_XIRR; XIVE: the TIMA and the event queue), calls `f` for each
/// device source and ends it (XICS: H_EOI; XIVE: the source's ESB).
///
/// # Safety
/// As for `install`.
pub unsafe fn install_external(f: fn(usize, u32)) -> u32 {
    // Release pairs with the Acquire load in `external_rust`.
    EXT_HANDLER.store(f as usize, Ordering::Release);
    // SAFETY: forwarded to the caller; __external_entry is the interrupt entry above.
    unsafe {
        crate::exceptions::install_vector(
            crate::exceptions::EXTERNAL_VECTOR,
            __external_entry as *const () as usize,
        )
    }
}

extern "C" fn external_rust() {
    if crate::xive::active() {
        return external_xive();
    }
    let xirr = crate::hcall::accept_interrupt();
    let xisr = xirr & 0x00ff_ffff;
    // XISR 0: nothing pending (spurious); 2: the IPI source (unused here).
    if xisr > 2 {
        let h = EXT_HANDLER.load(Ordering::Acquire);
        if h != 0 {
            // SAFETY: EXT_HANDLER only ever holds 0 or a `fn(usize, u32)` stored by `install_external`.
            let f = unsafe { core::mem::transmute::<usize, fn(usize, u32)>(h) };
            crate::percpu::irq_enter();
            f(crate::percpu::this_cpu_index(), xisr);
            crate::percpu::irq_exit();
        }
    }
    if xisr != 0 {
        crate::hcall::end_of_interrupt(xirr);
    }
}

/// The external interrupt under XIVE: acknowledge at the TIMA, run the handler for each event in
/// the queue, end each at its source's ESB, and reopen the presenter (the acknowledge raised the
/// CPPR to the interrupt's priority).
fn external_xive() {
    let _ack = crate::xive::accept();
    let h = EXT_HANDLER.load(Ordering::Acquire);
    while let Some(lisn) = crate::xive::next_event() {
        if h != 0 {
            // SAFETY: EXT_HANDLER only ever holds 0 or a `fn(usize, u32)` stored by `install_external`.
            let f = unsafe { core::mem::transmute::<usize, fn(usize, u32)>(h) };
            crate::percpu::irq_enter();
            f(crate::percpu::this_cpu_index(), lisn);
            crate::percpu::irq_exit();
        }
        crate::xive::end_of_interrupt(lisn);
    }
    crate::xive::set_cppr(0xff);
}

/// Sets the decrementer (SPR 22).
fn set_dec(ticks: u64) {
    let v = ticks.min(i32::MAX as u64);
    // SAFETY: writing DEC only schedules this CPU's next decrementer interrupt.
    unsafe {
        core::arch::asm!("mtspr 22, {0}", in(reg) v, options(nomem, nostack, preserves_flags))
    };
}

/// Arms the decrementer and enables external interrupts (MSR[EE]) on this CPU.
pub fn start_this_cpu() {
    set_dec(PERIOD.load(Ordering::Relaxed).max(1));
    enable();
}

/// MSR[EE] = 1 (`mtmsrd r,1` changes only EE and RI).
pub fn enable() {
    let v: u64 = crate::smp::MSR_EE | MSR_RI;
    // SAFETY: the L=1 form of mtmsrd sets only MSR[EE] and MSR[RI] from the operand.
    unsafe { core::arch::asm!("mtmsrd {0}, 1", in(reg) v, options(nostack, preserves_flags)) };
}

/// MSR[EE] = 0: this CPU takes no more decrementer (or external) interrupts.
pub fn disable() {
    let v: u64 = MSR_RI;
    // SAFETY: as in `enable`; acts as a compiler barrier (no `nomem`), so no memory access moves
    // across it.
    unsafe { core::arch::asm!("mtmsrd {0}, 1", in(reg) v, options(nostack, preserves_flags)) };
}

/// Keeps this CPU's decrementer from going negative for another `i32::MAX` ticks (seconds), if it
/// is less than half that away: a CPU that stays with MSR[EE] = 0 (parked, or spinning in the crash
/// path) must not leave the level-triggered decrementer asserted — Linux's masked-decrementer
/// handling sets DEC to its maximum the same way. (Under QEMU's TCG a pending interrupt that cannot
/// be taken makes the vCPU take the global lock at every translated block, slowing every vCPU.)
pub fn quiet_decrementer() {
    let v: u64;
    // SAFETY: reading DEC (SPR 22) has no side effects.
    unsafe {
        core::arch::asm!("mfspr {0}, 22", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    if (v as u32 as i32) < i32::MAX / 2 {
        set_dec(i32::MAX as u64);
    }
}

/// MSR[RI]: the interrupt is recoverable.
const MSR_RI: u64 = 1 << 1;

extern "C" fn decrementer_rust() {
    let period = PERIOD.load(Ordering::Relaxed);
    // Re-arm first: the decrementer interrupt is level-triggered on POWER7 and later (it stays asserted
    // while DEC is negative), so it must be positive again before rfid turns EE back on.
    set_dec(if period == 0 { i32::MAX as u64 } else { period });
    let h = HANDLER.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: HANDLER only ever holds 0 or a `fn(usize)` stored by `install`.
        let f = unsafe { core::mem::transmute::<usize, fn(usize)>(h) };
        crate::percpu::irq_enter();
        f(crate::percpu::this_cpu_index());
        crate::percpu::irq_exit();
    }
}
