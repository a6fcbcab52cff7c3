//! What the crashed kernel hands the capture stage besides the handover image (r3): a small block in
//! r4, the way kexec hands the next kernel its device tree. Shared by both binaries (`#[path]`), so the
//! layout is defined once.
//!
//! Memory map (real addresses; RAM is 512 MiB in `run.sh`):
//! * `0x0040_0000..` the crashing kernel (`-kernel`, linked at 0x400000; a few MiB);
//! * `CRASH_BASE..+CRASH_SIZE` the reserved crash-kernel region ("crashkernel="): the capture stage is
//!   loaded here ahead of time and runs here, with its own stack; the kernel never touches it after
//!   loading;
//! * `HANDOVER_BASE..+HANDOVER_SIZE` the handover image, written by the crash path;
//! * `PARAMS_BASE` this block;
//! * `STAGING_BASE..+STAGING_MAX` where QEMU's generic loader puts the raw capture ELF file
//!   (`-device loader,file=...,addr=STAGING_BASE,force-raw=on`), like the file kexec reads.
//!
//! QEMU places the device tree and RTAS blob near the top of the RMA (below 512 MiB), VOF at 0.

/// Start of the reserved crash-kernel region.
pub const CRASH_BASE: usize = 0x0800_0000;
/// Size of the reserved crash-kernel region.
pub const CRASH_SIZE: usize = 0x0100_0000;
/// Start of the handover-image region.
pub const HANDOVER_BASE: usize = 0x0900_0000;
/// Size of the handover-image region.
pub const HANDOVER_SIZE: usize = 0x0040_0000;
/// The boot-parameter block.
pub const PARAMS_BASE: usize = 0x0944_0000;
/// Where the raw capture ELF is staged by QEMU.
pub const STAGING_BASE: usize = 0x0980_0000;
/// Largest staged file.
pub const STAGING_MAX: usize = 0x0080_0000;

/// `BootParams::magic`.
pub const PARAMS_MAGIC: u64 = u64::from_le_bytes(*b"NMICAPT1");

/// The block at `PARAMS_BASE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootParams {
    /// `PARAMS_MAGIC`.
    pub magic: u64,
    /// Bytes of the handover image at r3.
    pub image_len: u64,
    /// Timebase frequency (Hz).
    pub tb_freq: u64,
    /// RTAS `power-off` token (0 = none).
    pub power_off_token: u32,
    /// The vty's `reg` (H_PUT_TERM_CHAR terminal number).
    pub term: u32,
    /// CPUs that were logging.
    pub ncpus: u32,
    /// The crashing CPU.
    pub crash_cpu: u32,
    /// Scenario name (NUL-padded).
    pub scenario: [u8; 16],
    /// The mask path the crash sequence reports (`ShutdownReport::mask`), NUL-padded: the capture
    /// stage checks it against the `[mask_path=...]` record in the log.
    pub mask_path: [u8; 16],
    /// NMI check-ins missing when the sequence gave up waiting.
    pub not_answered: u32,
    /// Bit c: CPU c answered the NMI (or is the crashing CPU).
    pub answered: u64,
}

/// Copies `s` into a NUL-padded 16-byte field (cut if longer).
pub fn name16(s: &str) -> [u8; 16] {
    let mut f = [0u8; 16];
    let n = s.len().min(16);
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    f
}

/// The string in a NUL-padded field.
pub fn str16(f: &[u8; 16]) -> &str {
    let n = f.iter().position(|&b| b == 0).unwrap_or(16);
    core::str::from_utf8(&f[..n]).unwrap_or("?")
}
