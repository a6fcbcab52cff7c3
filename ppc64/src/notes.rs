//! Each CPU's registers at the crash as an ELF `NT_PRSTATUS` note, laid out as Linux's powerpc64
//! `crash_save_cpu` writes one into the CPU's `crash_notes` buffer: a capture kernel builds its
//! vmcore's `PT_NOTE` segment from these buffers (kexec-tools points one program header at each),
//! and `crash`/`gdb` then show a backtrace per CPU.
//!
//! One CPU's note area ([`NOTE_BYTES`]): the note header (`namesz` 5, `descsz`
//! [`PRSTATUS_BYTES`], `type` [`NT_PRSTATUS`]), the name `"CORE\0"` padded to 8 bytes, the
//! `struct elf_prstatus` of powerpc64 (504 bytes; the registers in `pr_reg`, in `struct pt_regs`
//! order, see [`reg`]), and an empty note that ends the list (Linux's `final_note`). Little-endian,
//! as the ppc64le kernel that writes it.
//!
//! [`encode`] and [`decode`] are pure: the platform copies the bytes into its preserved region
//! (the stopped CPU, into its own slot, before its check-in publishes them) and out of it (the
//! capture stage, which trusts none of them: [`decode`] returns a typed error for anything that is
//! not a whole note).
//!
//! ```
//! use nmilog_ppc64::notes::{decode, encode, CpuRegs};
//!
//! let mut regs = CpuRegs::ZERO;
//! regs.nip = 0x40_1234;
//! regs.lr = 0x40_1000;
//! regs.gpr[1] = 0x7f_ff00;
//! let note = encode(3, &regs);
//! assert_eq!(decode(&note), Ok((3, regs)));
//! ```

/// The note type of a `struct elf_prstatus` (`<elf.h>`).
pub const NT_PRSTATUS: u32 = 1;
/// The note's name, NUL included (Linux's `KEXEC_CORE_NOTE_NAME`).
pub const NOTE_NAME: &[u8; 5] = b"CORE\0";
/// `sizeof(struct elf_prstatus)` on powerpc64.
pub const PRSTATUS_BYTES: usize = 504;
/// Registers in `pr_reg` (`ELF_NGREG` on powerpc).
pub const ELF_NGREG: usize = 48;

/// Bytes of a note header (`namesz`, `descsz`, `type`).
const HEADER_BYTES: usize = 12;
/// The name, padded to 4-byte alignment.
const NAME_BYTES: usize = 8;
/// Where the descriptor (`struct elf_prstatus`) starts.
const DESC: usize = HEADER_BYTES + NAME_BYTES;
/// `pr_pid` in `struct elf_prstatus` (after `pr_info`, `pr_cursig`, `pr_sigpend`, `pr_sighold`).
const PR_PID: usize = 32;
/// `pr_reg` (after the four pids and four timevals).
const PR_REG: usize = 112;
/// `pr_fpvalid` (after `pr_reg`).
const PR_FPVALID: usize = PR_REG + ELF_NGREG * 8;
const _: () = assert!(PR_FPVALID + 8 == PRSTATUS_BYTES);

/// Bytes of one CPU's note area: the note and the empty note that ends the list.
pub const NOTE_BYTES: usize = DESC + PRSTATUS_BYTES + HEADER_BYTES;

/// Indices into `pr_reg` (powerpc `struct pt_regs`) besides the GPRs at 0..32.
pub mod reg {
    /// The interrupted instruction address (SRR0).
    pub const NIP: usize = 32;
    /// The machine state (SRR1).
    pub const MSR: usize = 33;
    /// Count register.
    pub const CTR: usize = 35;
    /// Link register.
    pub const LINK: usize = 36;
    /// Fixed-point exception register.
    pub const XER: usize = 37;
    /// Condition register.
    pub const CCR: usize = 38;
    /// The interrupt vector that saved them (0x100: system reset).
    pub const TRAP: usize = 40;
}

/// A CPU's registers as a note holds them. `#[repr(C)]`, fields in this order: an interrupt entry
/// can save into it by field offset (the pseries image's system-reset save area is one).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuRegs {
    /// r0..r31.
    pub gpr: [u64; 32],
    /// The instruction address.
    pub nip: u64,
    /// The machine state.
    pub msr: u64,
    /// Link register.
    pub lr: u64,
    /// Count register.
    pub ctr: u64,
    /// Condition register.
    pub cr: u64,
    /// Fixed-point exception register.
    pub xer: u64,
    /// The interrupt vector that saved them (0x100 for the crash NMI; 0 for the crashing CPU's
    /// own registers, saved by a call).
    pub trap: u64,
}

impl CpuRegs {
    /// All zero.
    pub const ZERO: CpuRegs = CpuRegs {
        gpr: [0; 32],
        nip: 0,
        msr: 0,
        lr: 0,
        ctr: 0,
        cr: 0,
        xer: 0,
        trap: 0,
    };
}

/// Why a note area does not hold a note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteError {
    /// No note header (`namesz` 0: never written, or still being written).
    Empty,
    /// A header, but not that of a `CORE` `NT_PRSTATUS` note of [`PRSTATUS_BYTES`].
    NotPrStatus {
        /// `namesz` found.
        namesz: u32,
        /// `descsz` found.
        descsz: u32,
        /// `type` found.
        kind: u32,
    },
    /// The name is not `"CORE"`.
    BadName,
    /// The empty note that ends the list is missing.
    NoFinalNote,
}

impl core::fmt::Display for NoteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            NoteError::Empty => f.write_str("no note"),
            NoteError::NotPrStatus {
                namesz,
                descsz,
                kind,
            } => write!(
                f,
                "not an NT_PRSTATUS note (namesz {namesz}, descsz {descsz}, type {kind})"
            ),
            NoteError::BadName => f.write_str("note name is not CORE"),
            NoteError::NoFinalNote => f.write_str("no final (empty) note"),
        }
    }
}

fn put32(b: &mut [u8; NOTE_BYTES], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8; NOTE_BYTES], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8; NOTE_BYTES], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn get64(b: &[u8; NOTE_BYTES], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The note area of a CPU whose registers are `regs`; `pid` goes in `pr_pid` (Linux: the pid of
/// the task the CPU ran; a kernel without tasks can put the CPU number there, as this crate's
/// pseries image does).
pub fn encode(pid: u32, regs: &CpuRegs) -> [u8; NOTE_BYTES] {
    let mut b = [0u8; NOTE_BYTES];
    put32(&mut b, 0, NOTE_NAME.len() as u32);
    put32(&mut b, 4, PRSTATUS_BYTES as u32);
    put32(&mut b, 8, NT_PRSTATUS);
    b[HEADER_BYTES..HEADER_BYTES + NOTE_NAME.len()].copy_from_slice(NOTE_NAME);
    put32(&mut b, DESC + PR_PID, pid);
    let r = DESC + PR_REG;
    for (i, g) in regs.gpr.iter().enumerate() {
        put64(&mut b, r + i * 8, *g);
    }
    for (i, v) in [
        (reg::NIP, regs.nip),
        (reg::MSR, regs.msr),
        (reg::CTR, regs.ctr),
        (reg::LINK, regs.lr),
        (reg::XER, regs.xer),
        (reg::CCR, regs.cr),
        (reg::TRAP, regs.trap),
    ] {
        put64(&mut b, r + i * 8, v);
    }
    // The final note: a zero header (already zero).
    b
}

/// The pid and registers in a note area written by [`encode`]; a typed error for anything else.
pub fn decode(b: &[u8; NOTE_BYTES]) -> Result<(u32, CpuRegs), NoteError> {
    let (namesz, descsz, kind) = (get32(b, 0), get32(b, 4), get32(b, 8));
    if namesz == 0 {
        return Err(NoteError::Empty);
    }
    if namesz as usize != NOTE_NAME.len()
        || descsz as usize != PRSTATUS_BYTES
        || kind != NT_PRSTATUS
    {
        return Err(NoteError::NotPrStatus {
            namesz,
            descsz,
            kind,
        });
    }
    if &b[HEADER_BYTES..HEADER_BYTES + NOTE_NAME.len()] != NOTE_NAME {
        return Err(NoteError::BadName);
    }
    let fin = DESC + PRSTATUS_BYTES;
    if b[fin..fin + HEADER_BYTES].iter().any(|&x| x != 0) {
        return Err(NoteError::NoFinalNote);
    }
    let r = DESC + PR_REG;
    let at = |i: usize| get64(b, r + i * 8);
    let mut regs = CpuRegs::ZERO;
    for (i, g) in regs.gpr.iter_mut().enumerate() {
        *g = at(i);
    }
    regs.nip = at(reg::NIP);
    regs.msr = at(reg::MSR);
    regs.ctr = at(reg::CTR);
    regs.lr = at(reg::LINK);
    regs.xer = at(reg::XER);
    regs.cr = at(reg::CCR);
    regs.trap = at(reg::TRAP);
    Ok((get32(b, DESC + PR_PID), regs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CpuRegs {
        let mut r = CpuRegs::ZERO;
        for (i, g) in r.gpr.iter_mut().enumerate() {
            *g = 0x1000 + i as u64;
        }
        r.nip = 0x40_1234;
        r.msr = 0x8000_0000_0000_1033;
        r.lr = 0x40_1000;
        r.ctr = 7;
        r.cr = 0x2400_0000;
        r.xer = 0x2000_0000;
        r.trap = 0x100;
        r
    }

    #[test]
    fn the_layout_is_linuxs_powerpc64_prstatus_note() {
        let n = encode(5, &sample());
        assert_eq!(NOTE_BYTES, 536);
        // Header: namesz 5, descsz 504, type NT_PRSTATUS; name "CORE\0" padded to 8.
        assert_eq!(&n[0..12], &[5, 0, 0, 0, 0xf8, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&n[12..20], b"CORE\0\0\0\0");
        // pr_pid at 32 of the descriptor; pr_reg at 112: r1 at +8, nip at 32 * 8, link at 36 * 8.
        assert_eq!(&n[20 + 32..20 + 36], &5u32.to_le_bytes());
        assert_eq!(&n[20 + 112 + 8..20 + 120 + 8], &0x1001u64.to_le_bytes());
        assert_eq!(
            &n[20 + 112 + 256..20 + 112 + 264],
            &0x40_1234u64.to_le_bytes()
        );
        assert_eq!(
            &n[20 + 112 + 288..20 + 112 + 296],
            &0x40_1000u64.to_le_bytes()
        );
        assert_eq!(&n[20 + 112 + 320..20 + 112 + 328], &0x100u64.to_le_bytes());
        // The final, empty note.
        assert!(n[NOTE_BYTES - 12..].iter().all(|&b| b == 0));
    }

    #[test]
    fn decode_inverts_encode() {
        assert_eq!(decode(&encode(9, &sample())), Ok((9, sample())));
    }

    #[test]
    fn decode_refuses_what_is_not_a_whole_note() {
        assert_eq!(decode(&[0; NOTE_BYTES]), Err(NoteError::Empty));
        let mut n = encode(1, &sample());
        n[8] = 2;
        assert!(matches!(
            decode(&n),
            Err(NoteError::NotPrStatus { kind: 2, .. })
        ));
        let mut n = encode(1, &sample());
        n[0] = 4;
        assert!(matches!(
            decode(&n),
            Err(NoteError::NotPrStatus { namesz: 4, .. })
        ));
        let mut n = encode(1, &sample());
        n[4] = 0;
        assert!(matches!(decode(&n), Err(NoteError::NotPrStatus { .. })));
        let mut n = encode(1, &sample());
        n[12] = b'X';
        assert_eq!(decode(&n), Err(NoteError::BadName));
        let mut n = encode(1, &sample());
        n[NOTE_BYTES - 1] = 1;
        assert_eq!(decode(&n), Err(NoteError::NoFinalNote));
    }

    #[test]
    fn every_error_has_a_message() {
        let e = NoteError::NotPrStatus {
            namesz: 4,
            descsz: 3,
            kind: 2,
        };
        assert_eq!(
            e.to_string(),
            "not an NT_PRSTATUS note (namesz 4, descsz 3, type 2)"
        );
        assert_eq!(NoteError::Empty.to_string(), "no note");
    }
}
