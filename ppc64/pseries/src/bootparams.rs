//! What the crashed kernel hands the capture stage besides the handover image (r3): a small block in
//! r4, the way kexec hands the next kernel its device tree. Shared by both binaries (`#[path]`), so the
//! layout is defined once.
//!
//! Memory map (real addresses; RAM is 512 MiB in `run.sh`):
//! * `0x0040_0000..` the crashing kernel (`-kernel`, linked at 0x400000; a few MiB);
//! * `CRASH_BASE..+CRASH_SIZE` the reserved crash-kernel region ("crashkernel="): the capture stage is
//!   loaded here ahead of time and runs here, with its own stack; the kernel never touches it after
//!   loading. Its upper half, `REBUILD_BASE..+REBUILD_SIZE`, is where the capture stage writes the
//!   image it rebuilds from memory when there is no handover image;
//! * `HANDOVER_BASE..+HANDOVER_SIZE` the handover image, written by the crash path;
//! * `PARAMS_BASE` this block, written by the crash path with its report;
//! * `DUMP_PARAMS_BASE` the same block for a capture stage booted with memory only (the
//!   firmware-assisted-dump stand-in, `fadump`): written once at boot, no report in it;
//! * `STAGING_BASE..+STAGING_MAX` where QEMU's generic loader puts the raw capture ELF file
//!   (`-device loader,file=...,addr=STAGING_BASE,force-raw=on`), like the file kexec reads.
//!
//! QEMU places the device tree and RTAS blob near the top of the RMA (below 512 MiB), VOF at 0.

/// Start of the reserved crash-kernel region.
pub const CRASH_BASE: usize = 0x0800_0000;
/// Size of the reserved crash-kernel region.
pub const CRASH_SIZE: usize = 0x0200_0000;
/// Start of the handover-image region.
pub const HANDOVER_BASE: usize = 0x0A00_0000;
/// Size of the handover-image region.
pub const HANDOVER_SIZE: usize = 0x0080_0000;
/// CPUs the boot parameters describe (outcomes, and the [`CpuMask`]s).
pub const OUTCOME_CPUS: usize = 256;
const _: () = assert!(OUTCOME_CPUS.is_multiple_of(64));
/// The boot-parameter block.
pub const PARAMS_BASE: usize = 0x0A84_0000;
/// The parameter block of a capture stage booted with memory only (written at boot).
pub const DUMP_PARAMS_BASE: usize = 0x0A84_1000;
/// Where the capture stage writes the image it rebuilds from memory (inside the reserved region: the
/// capture stage's own memory, not the crashed kernel's).
pub const REBUILD_BASE: usize = CRASH_BASE + 0x0100_0000;
/// Size of the rebuild region (any image of the kernel log fits: checked in `crash`).
pub const REBUILD_SIZE: usize = 0x0080_0000;
const _: () = assert!(REBUILD_BASE + REBUILD_SIZE <= CRASH_BASE + CRASH_SIZE);
const _: () = assert!(CRASH_BASE + CRASH_SIZE <= HANDOVER_BASE);
const _: () = assert!(HANDOVER_BASE + HANDOVER_SIZE <= PARAMS_BASE);
/// The crash flight recorder (`nmilog_ppc64::flight`): breadcrumbs of the crash path, in the
/// preserved region next to the parameter blocks; reset at boot, read by the capture stage whether
/// the crash path finished or died.
pub const FLIGHT_BASE: usize = 0x0A84_2000;
/// Room for it.
pub const FLIGHT_SIZE: usize = 0x1000;
const _: () = assert!(core::mem::size_of::<nmilog_ppc64::FlightRecorder>() <= FLIGHT_SIZE);
const _: () = assert!(FLIGHT_BASE.is_multiple_of(8));

/// Each CPU's crash notes (`crash_notes`): an ELF `NT_PRSTATUS` note of its registers at the crash
/// (`nmilog_ppc64::notes`), `NOTE_STRIDE` bytes apart, CPU 0 first; reset at boot, written by each
/// CPU the crash stops (and by the crashing CPU), read by the capture stage. The parameter block
/// says where (`notes_base`, `note_bytes`), as Linux exposes each CPU's `crash_notes` address for
/// kexec-tools to point a `PT_NOTE` program header at.
pub const NOTES_BASE: usize = 0x0A88_0000;
/// Bytes from one CPU's note area to the next (8-aligned).
pub const NOTE_STRIDE: usize = nmilog_ppc64::notes::NOTE_BYTES.next_multiple_of(8);
/// Room for the notes of `OUTCOME_CPUS` CPUs.
pub const NOTES_SIZE: usize = NOTE_STRIDE * OUTCOME_CPUS;
const _: () = assert!(FLIGHT_BASE + FLIGHT_SIZE <= NOTES_BASE);
const _: () = assert!(NOTES_BASE + NOTES_SIZE <= STAGING_BASE);
const _: () = assert!(NOTES_BASE.is_multiple_of(8));

/// The secondary hold (`hold`): where the CPUs the crash stopped wait for the capture stage after
/// the switchover, as Linux's secondaries wait in the next kernel's `__secondary_hold`. The hold
/// loop is the capture stage's code at `HOLD_ENTRY` (its image's `_start` + 0x60, where Linux has
/// `__secondary_hold`); its words (`hold`'s layout) are here, in the reserved region above the
/// rebuild area: written by the kernel only when it loads the capture stage, then by the held CPUs
/// and the capture stage.
pub const HOLD_BASE: usize = REBUILD_BASE + REBUILD_SIZE;
/// Room for the hold's words.
pub const HOLD_SIZE: usize = 0x2000;
/// The hold loop's address (r3 = the CPU's index, r4 = its hardware id on entry).
pub const HOLD_ENTRY: usize = CRASH_BASE + 0x60;
const _: () = assert!(HOLD_BASE + HOLD_SIZE <= CRASH_BASE + CRASH_SIZE);
const _: () = assert!((1 + 3 * OUTCOME_CPUS) * 8 <= HOLD_SIZE);
// The hold loop loads HOLD_BASE with one `lis` (a multiple of 0x10000 below 2 GiB).
const _: () = assert!(HOLD_BASE.is_multiple_of(0x10000) && HOLD_BASE < 0x8000_0000);

/// The flight recorder at `FLIGHT_BASE`.
pub fn flight_recorder() -> &'static nmilog_ppc64::FlightRecorder {
    // SAFETY: FLIGHT_BASE..+FLIGHT_SIZE is RAM reserved for the recorder (nothing else uses it; see
    // the memory map above), 8-byte aligned and large enough (checked above). The recorder is made of
    // atomics only, so any bit pattern is a valid value and shared references from several CPUs are
    // fine; the kernel resets it at boot before any crash.
    unsafe { &*(FLIGHT_BASE as *const nmilog_ppc64::FlightRecorder) }
}

/// Where the raw capture ELF is staged by QEMU.
pub const STAGING_BASE: usize = 0x0B00_0000;
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
    /// CPU c answered the NMI (or is the crashing CPU).
    pub answered: CpuMask,
    /// The end of RAM (from /memory@0): what a capture stage booted with memory only may scan.
    pub ram_top: u64,
    /// The kernel command line's death point (`die=`, the die-in-drain scenario), NUL-padded: the
    /// command line both kernels share, as a kdump or fadump capture kernel boots with it.
    pub die: [u8; 24],
    /// Each CPU's outcome in the crash's stop phase (`nmilog_ppc64::CpuOutcome` codes; 0 = none
    /// reported).
    pub outcome: [u8; OUTCOME_CPUS],
    /// CPUs the crash sequence escalated to a system reset.
    pub escalated: u32,
    /// CPUs offline at the crash.
    pub offline: u32,
    /// Where CPU 0's crash note is (`NOTES_BASE`); CPU c's is `note_stride` bytes further per CPU.
    pub notes_base: u64,
    /// Bytes from one CPU's crash note to the next.
    pub note_stride: u32,
    /// XIVE: the OS page of the TIMA (0: the interrupt controller is XICS).
    pub tima_os: u64,
    /// The crashing CPU's hardware id (`u64::MAX`: no crash path reported).
    pub crash_hw: u64,
    /// XIVE: the crashing CPU's teardown before the jump (Linux's `kexec_cpu_down(crash_shutdown
    /// = 1)`: `xive_teardown_cpu`, `xive_shutdown`): the statuses of `H_INT_SET_QUEUE_CONFIG`
    /// (its queue reset) and `H_INT_RESET`; 0 when not done.
    pub xive_teardown: [i64; 2],
}

/// A set of CPUs `0..OUTCOME_CPUS`, one bit each (Linux's `cpumask_t`): plain data, so that it
/// crosses the kexec handover in the parameter block. A CPU past `OUTCOME_CPUS` is never in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuMask([u64; OUTCOME_CPUS / 64]);

impl CpuMask {
    /// No CPU.
    pub const EMPTY: CpuMask = CpuMask([0; OUTCOME_CPUS / 64]);

    /// Adds CPU `c` (ignored past `OUTCOME_CPUS`).
    pub fn insert(&mut self, c: usize) {
        if let Some(w) = self.0.get_mut(c / 64) {
            *w |= 1 << (c % 64);
        }
    }

    /// Whether CPU `c` is in the set.
    pub fn contains(&self, c: usize) -> bool {
        self.0.get(c / 64).is_some_and(|w| w & 1 << (c % 64) != 0)
    }
}

impl FromIterator<usize> for CpuMask {
    fn from_iter<I: IntoIterator<Item = usize>>(cpus: I) -> Self {
        let mut m = CpuMask::EMPTY;
        for c in cpus {
            m.insert(c);
        }
        m
    }
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
    str_nul(f)
}

/// Copies `s` into a NUL-padded field of `N` bytes (cut if longer).
pub fn name_n<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut f = [0u8; N];
    let n = s.len().min(N);
    f[..n].copy_from_slice(&s[..n]);
    f
}

/// The string in a NUL-padded field of any size.
pub fn str_nul(f: &[u8]) -> &str {
    let n = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    core::str::from_utf8(&f[..n]).unwrap_or("?")
}
