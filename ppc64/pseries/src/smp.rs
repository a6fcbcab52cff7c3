//! Per-CPU state and secondary-CPU bring-up through RTAS `start-cpu`.
//!
//! Every CPU owns a `PerCpu` slot (a static; no allocation) holding its logical index, its hardware id
//! (the device tree's `reg`, which RTAS and H_SIGNAL_SYS_RESET use), the tops of its task and NMI
//! stacks, its entry function and the register save area of its system-reset handler. SPRG0 holds the
//! slot's address on each CPU: the 0x100 handler finds its NMI stack there without touching memory
//! through any other register.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::exceptions::SavedRegs;
use crate::rtas;

/// Most CPUs the image supports.
pub const MAX_CPUS: usize = 8;
/// Task stack per CPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// NMI (system reset) stack per CPU.
pub const NMI_STACK_SIZE: usize = 32 * 1024;
/// Room left above the initial stack pointer (ELFv2 minimum frame is 32 bytes; keep 64).
const STACK_RESERVE: usize = 64;

/// One CPU's slot. Field offsets are used by the assembly in `boot.rs` and `exceptions.rs`.
#[repr(C)]
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

#[repr(C, align(16))]
struct Stacks<const N: usize>(UnsafeCell<[[u8; N]; MAX_CPUS]>);
// SAFETY: the memory is only ever used as stacks, each by its own CPU; Rust never reads it as data.
unsafe impl<const N: usize> Sync for Stacks<N> {}

static TASK_STACKS: Stacks<STACK_SIZE> = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_CPUS]));
static NMI_STACKS: Stacks<NMI_STACK_SIZE> =
    Stacks(UnsafeCell::new([[0; NMI_STACK_SIZE]; MAX_CPUS]));

fn stack_top<const N: usize>(s: &Stacks<N>, i: usize) -> usize {
    s.0.get() as usize + (i + 1) * N - STACK_RESERVE
}

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

/// The processor identification register. Under QEMU 7.2's TCG pseries it reads 0 on every CPU:
/// identify CPUs through their `PerCpu` slot (SPRG0), not PIR.
pub fn pir() -> u64 {
    let v: u64;
    // SAFETY: reading PIR (SPR 1023) has no side effects.
    unsafe {
        core::arch::asm!("mfspr {0}, 1023", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// The machine state register.
pub fn msr() -> u64 {
    let v: u64;
    // SAFETY: mfmsr has no side effects.
    unsafe { core::arch::asm!("mfmsr {0}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// MSR[EE]: external interrupts enabled.
pub const MSR_EE: u64 = 1 << 15;

fn setup_slot(index: usize, hw_id: u32) -> &'static PerCpu {
    let c = &PERCPU[index];
    c.index.store(index, Ordering::Relaxed);
    c.hw_id.store(hw_id as usize, Ordering::Relaxed);
    c.stack_top
        .store(stack_top(&TASK_STACKS, index), Ordering::Relaxed);
    c.nmi_stack_top
        .store(stack_top(&NMI_STACKS, index), Ordering::Relaxed);
    c
}

/// Makes the calling CPU logical CPU 0 with hardware id `hw_id` and points SPRG0 at its slot.
pub fn init_boot_cpu(hw_id: u32) {
    let c = setup_slot(0, hw_id);
    // SAFETY: SPRG0 is reserved for the per-CPU pointer; c is 'static.
    unsafe {
        core::arch::asm!("mtspr 272, {0}", in(reg) c as *const PerCpu as usize, options(nomem, nostack, preserves_flags))
    };
}

extern "C" {
    /// Defined in `boot.rs`: the big-endian entry RTAS start-cpu jumps to (r3 = &PerCpu).
    fn __secondary_entry();
}

/// Starts logical CPU `index` (hardware id `hw_id`) running `entry(index)` on its own stack.
/// Returns the RTAS status of `start-cpu`.
pub fn start_cpu(index: usize, hw_id: u32, entry: fn(usize) -> !) -> i32 {
    assert!(index > 0 && index < MAX_CPUS);
    let c = setup_slot(index, hw_id);
    c.entry.store(entry as usize, Ordering::Release);
    // The rtas call's lock (an acquire/release pair) and the hypervisor's own synchronisation order
    // the slot's stores before the new CPU's first instruction.
    rtas::start_cpu(
        hw_id,
        __secondary_entry as *const () as usize,
        c as *const PerCpu as usize,
    )
}

/// Called from `__secondary_entry` with the CPU in little-endian 64-bit mode, on its own stack, SPRG0
/// and r2 set.
pub extern "C" fn secondary_rust(c: &'static PerCpu) -> ! {
    let entry = c.entry.load(Ordering::Acquire);
    // SAFETY: `entry` was stored by start_cpu from a `fn(usize) -> !`, and start_cpu stores it before
    // starting this CPU.
    let f: fn(usize) -> ! = unsafe { core::mem::transmute::<usize, fn(usize) -> !>(entry) };
    f(c.index.load(Ordering::Relaxed))
}
