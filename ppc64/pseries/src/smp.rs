//! Secondary-CPU bring-up through RTAS `start-cpu`: each CPU's task and NMI stacks, its `PerCpu`
//! slot filled in (see `percpu`), SPRG0 pointed at it; and the CPU's own registers (MSR, PIR).

use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;

use crate::percpu::{PerCpu, MAX_CPUS, PERCPU};
use crate::rtas;

/// Task stack per CPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// NMI (system reset) stack per CPU.
pub const NMI_STACK_SIZE: usize = 32 * 1024;
/// Room left above the initial stack pointer (ELFv2 minimum frame is 32 bytes; keep 64).
const STACK_RESERVE: usize = 64;

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
