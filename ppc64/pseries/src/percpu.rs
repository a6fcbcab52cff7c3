//! The per-CPU area: every CPU owns a `PerCpu` slot (a static; no allocation) holding its logical
//! index, its hardware id (the device tree's `reg`, which RTAS and H_SIGNAL_SYS_RESET use), the tops
//! of its task and NMI stacks, its entry function and the register save area of its system-reset
//! handler (`SavedRegs`). SPRG0 holds the slot's address on each CPU: the 0x100 handler finds its NMI
//! stack there without touching memory through any other register, and `this_cpu` finds it from Rust.
//!
//! It also holds the kernel's own context word (`preempt`, Linux's `preempt_count`), which the log
//! reads through `Platform::context` instead of brackets in each handler.
//!
//! A leaf: it uses no other module of the image (bring-up, which fills the slots, is `smp`).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Most CPUs the image supports; it runs as many as the device tree has, up to this (the boot
/// parameters describe as many).
pub const MAX_CPUS: usize = 256;
const _: () = assert!(MAX_CPUS <= crate::bootparams::OUTCOME_CPUS);

/// Registers of the interrupted context: the crash note's register set (`#[repr(C)]`), which the
/// 0x100 entry fills by field offset; it leaves `trap` alone (the note says which vector saved it).
pub use nmilog_ppc64::notes::CpuRegs as SavedRegs;

/// One CPU's slot. Field offsets are used by the assembly in `boot.rs` and `exceptions.rs`.
#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    /// Logical CPU index (0 = boot CPU).
    pub index: AtomicUsize,
    /// Hardware id (`reg` of the /cpus node).
    pub hw_id: AtomicUsize,
    /// Initial task stack pointer.
    pub stack_top: AtomicUsize,
    /// Initial NMI stack pointer.
    pub nmi_stack_top: AtomicUsize,
    /// `fn(usize) -> !` run by a secondary CPU once it is in little-endian 64-bit mode.
    pub entry: AtomicUsize,
    /// Registers saved by the system-reset handler (written only by this CPU's 0x100 handler).
    pub saved: UnsafeCell<SavedRegs>,
    /// The kernel's own view of the running context, as Linux's `preempt_count`: hardirq nesting in
    /// units of [`HARDIRQ_OFFSET`], NMI nesting in units of [`NMI_OFFSET`]. Written only by this CPU
    /// (its interrupt entry and exit); the log reads it through `Platform::context`, so no handler
    /// brackets itself for the log.
    pub preempt: AtomicUsize,
    /// `preempt` as the NMI found it (set by [`nmi_enter`]): the interrupted context.
    pub preempt_at_nmi: AtomicUsize,
}

/// One hardirq level in [`PerCpu::preempt`] (Linux's `HARDIRQ_OFFSET`).
pub const HARDIRQ_OFFSET: usize = 1 << 16;
/// One NMI level in [`PerCpu::preempt`] (Linux's `NMI_OFFSET`).
pub const NMI_OFFSET: usize = 1 << 20;
const HARDIRQ_MASK: usize = 0xf << 16;
const NMI_MASK: usize = 0xf << 20;

/// Interrupt entry (the decrementer and external-interrupt handlers), Linux's `irq_enter`.
pub fn irq_enter() {
    add_preempt(HARDIRQ_OFFSET as isize);
}

/// Interrupt exit, Linux's `irq_exit`.
pub fn irq_exit() {
    add_preempt(-(HARDIRQ_OFFSET as isize));
}

/// NMI entry (the 0x100 system-reset handler), Linux's `nmi_enter`: remembers the context the
/// outermost NMI interrupted ([`interrupted_context`]). The handler never returns.
pub fn nmi_enter() {
    if let Some(c) = this_cpu() {
        let v = c.preempt.load(Ordering::Relaxed);
        if v & NMI_MASK == 0 {
            c.preempt_at_nmi.store(v, Ordering::Relaxed);
        }
    }
    add_preempt(NMI_OFFSET as isize);
}

/// Machine-check entry: one more NMI level (a machine check nests above an NMI: the log call
/// stays on the NMI-safe path and writes the next ring up). Unlike the system reset, the handler
/// may return: [`machine_check_exit`].
pub fn machine_check_enter() {
    nmi_enter();
}

/// Machine-check exit (a recoverable machine check returns to the interrupted code).
pub fn machine_check_exit() {
    add_preempt(-(NMI_OFFSET as isize));
}

/// In an NMI: the context the outermost NMI on this CPU interrupted (see [`context`]); `None`
/// outside NMI context (the caller's own context is then the current one).
pub fn interrupted_context() -> Option<(nmilog::ContextKind, usize)> {
    let c = this_cpu()?;
    if c.preempt.load(Ordering::Relaxed) & NMI_MASK == 0 {
        return None;
    }
    Some(context_of(c.preempt_at_nmi.load(Ordering::Relaxed)))
}

fn add_preempt(delta: isize) {
    if let Some(c) = this_cpu() {
        // Only this CPU writes its word. The interrupt handlers that call this run with MSR[EE] = 0,
        // so the only interrupts that can land between the load and the store are the system
        // reset, which never returns, and the machine check, which returns only after undoing its
        // own change (enter/exit): a plain load and store lose no update. Relaxed: same CPU.
        let v = c.preempt.load(Ordering::Relaxed);
        c.preempt
            .store(v.wrapping_add_signed(delta), Ordering::Relaxed);
    }
}

/// This CPU's context from its `preempt` word: `(kind, depth)` as `Platform::context` reports it
/// (`None` before `init_boot_cpu`). Any NMI level makes the kind NMI (the call must stay on the
/// NMI-safe path); the depth counts every level.
pub fn context() -> Option<(nmilog::ContextKind, usize)> {
    Some(context_of(this_cpu()?.preempt.load(Ordering::Relaxed)))
}

/// `(kind, depth)` of a `preempt` word.
fn context_of(v: usize) -> (nmilog::ContextKind, usize) {
    let (hardirq, nmi) = ((v & HARDIRQ_MASK) >> 16, (v & NMI_MASK) >> 20);
    let kind = if nmi > 0 {
        nmilog::ContextKind::Nmi
    } else if hardirq > 0 {
        nmilog::ContextKind::Irq
    } else {
        nmilog::ContextKind::Task
    };
    (kind, hardirq + nmi)
}

// SAFETY: all fields but `saved` are atomics; `saved` is written only by the owning CPU's NMI handler
// (in assembly, before Rust runs there) and read only by that handler's Rust code.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            index: AtomicUsize::new(0),
            hw_id: AtomicUsize::new(0),
            stack_top: AtomicUsize::new(0),
            nmi_stack_top: AtomicUsize::new(0),
            entry: AtomicUsize::new(0),
            saved: UnsafeCell::new(SavedRegs::ZERO),
            preempt: AtomicUsize::new(0),
            preempt_at_nmi: AtomicUsize::new(0),
        }
    }
}

/// Offsets for the assembly.
pub const OFF_INDEX: usize = core::mem::offset_of!(PerCpu, index);
/// Offset of `stack_top`.
pub const OFF_STACK_TOP: usize = core::mem::offset_of!(PerCpu, stack_top);
/// Offset of `nmi_stack_top`.
pub const OFF_NMI_STACK_TOP: usize = core::mem::offset_of!(PerCpu, nmi_stack_top);
/// Offset of `saved`.
pub const OFF_SAVED: usize = core::mem::offset_of!(PerCpu, saved);

/// All per-CPU slots.
pub static PERCPU: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// This CPU's slot, from SPRG0 (`None` before `init_boot_cpu`).
pub fn this_cpu() -> Option<&'static PerCpu> {
    let p: usize;
    // SAFETY: reading SPRG0 (SPR 272) has no side effects.
    unsafe {
        core::arch::asm!("mfspr {0}, 272", out(reg) p, options(nomem, nostack, preserves_flags))
    };
    if p == 0 {
        return None;
    }
    // SAFETY: SPRG0 is only ever set (by init_boot_cpu and the secondary entry) to the address of a
    // slot in PERCPU, which is 'static.
    Some(unsafe { &*(p as *const PerCpu) })
}

/// This CPU's logical index (0 before `init_boot_cpu`).
pub fn this_cpu_index() -> usize {
    this_cpu().map_or(0, |c| c.index.load(Ordering::Relaxed))
}
