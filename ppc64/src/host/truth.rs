//! The ground-truth block the simulation hands to the capture stage, before the handover image in
//! the same region: what the simulation knows about each CPU's log calls and about the crash, as
//! little-endian `u64` words at these indices. Written by `sim` at kexec, read by `capture`.

/// Bytes reserved for it at the start of the handover region for `ncpu` CPUs (whole pages; the
/// image follows it).
pub const fn bytes(ncpu: usize) -> usize {
    ((CPU_BASE + ncpu * PER_CPU) * 8).next_multiple_of(4096)
}
/// Bytes of its scenario words (the CPU count among them): a reader reads these first.
pub const HEAD_BYTES: usize = CPU_BASE * 8;
pub const MAGIC: u64 = u64::from_le_bytes(*b"NMSIMTR1");
pub const W_MAGIC: usize = 0;
pub const W_NCPU: usize = 1;
pub const W_CRASH_CPU: usize = 2;
pub const W_IMAGE_LEN: usize = 3;
pub const W_IMAGE_ERR: usize = 4;
pub const W_MASK_PATH: usize = 5;
pub const W_RTAS_HOLDER: usize = 6;
pub const W_PAPR: usize = 7;
pub const W_T_CRASH_MONO: usize = 8;
pub const W_T_START_MONO: usize = 9;
pub const W_MASKED: usize = 10;
pub const W_NOT_ANSWERED: usize = 11;
pub const W_RECORDS: usize = 12;
pub const W_CRASH_IN_IRQ: usize = 13;
pub const W_T_ENTER: usize = 14;
pub const W_T_IPI_DONE: usize = 15;
pub const W_T_MASKED: usize = 16;
pub const W_T_SWITCH: usize = 17;
pub const W_D0_RECORDS: usize = 18;
pub const W_D0_TORN: usize = 19;
pub const W_D1_RECORDS: usize = 20;
pub const W_D1_TORN: usize = 21;
pub const W_NOT_STOPPED: usize = 22;
pub const W_RTAS_IN_CALL: usize = 23;
pub const W_SEED: usize = 24;
pub const W_FW_CALLS: usize = 25;
pub const W_RING_BYTES: usize = 26;
pub const W_WAIT_SPINS: usize = 27;
pub const W_ACK_TIMEOUT_MS: usize = 28;
pub const W_T_START_LOG: usize = 29;
/// The handover region's address in the crashed process (a dump's base address).
pub const W_REGION_BASE: usize = 30;
/// 1 if the crashing CPU died (`--die-in-drain`): no image, the capture stage reads the memory.
pub const W_DIED: usize = 31;
/// The two crash drains' steps and step bounds (the cost of the merge).
pub const W_D0_STEPS: usize = 32;
pub const W_D1_STEPS: usize = 33;
pub const W_D0_BOUND: usize = 34;
pub const W_D1_BOUND: usize = 35;
/// Per-CPU blocks start here, `PER_CPU` words each.
pub const CPU_BASE: usize = 36;
pub const PER_CPU: usize = 15;
pub const C_ROLE: usize = 0;
pub const C_ANSWERED: usize = 1;
pub const C_TASK: usize = 2;
pub const C_IRQ: usize = 3;
pub const C_MID: usize = 4;
pub const C_DEFERRED: usize = 5;
pub const C_STOP_TS: usize = 6;
pub const C_PC: usize = 7;
pub const C_STOP_CTX: usize = 8;
pub const C_FREEZE_AT: usize = 9;
pub const C_TRUTH_SET: usize = 10;
pub const C_CPPR: usize = 11;
pub const C_DEAF: usize = 12;
/// Records committed before the image's drain, for a CPU that had not checked in by then.
pub const C_LOWER_TASK: usize = 13;
pub const C_LOWER_IRQ: usize = 14;
