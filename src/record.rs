//! What a record is: its header fields, their byte layout, levels, contexts and flags.
//!
//! A record is a fixed [`HEADER_BYTES`]-byte header followed by `len` payload bytes. In a ring the
//! header and payload are stored in pointer-sized atomic words behind the record's sequence word (see
//! [`crate::ring`]); in the handover image they are stored byte for byte in little-endian order at
//! the offsets below, which the image also publishes so that a reader built from another version of
//! this crate can still find every field (as the kernel's vmcoreinfo does for its ringbuffer).
//!
//! | field      | offset | size | meaning                                                   |
//! |------------|-------:|-----:|-----------------------------------------------------------|
//! | `ts_ns`    |      0 |    8 | platform timestamp, nanoseconds, comparable across CPUs    |
//! | `src_seq`  |      8 |    8 | record number within the ring that first held the record   |
//! | `len`      |     16 |    2 | payload length in bytes                                    |
//! | `cpu`      |     18 |    2 | CPU that wrote the record                                  |
//! | `level`    |     20 |    1 | printk level 0 (emerg) … 7 (debug)                         |
//! | `facility` |     21 |    1 | 0 = kernel/user text, 1 = nmilog's own accounting, …       |
//! | `ctx`      |     22 |    1 | context kind (low nibble) and nesting depth (high nibble)  |
//! | `flags`    |     23 |    1 | [`flags`] bits                                             |
//! | `caller`   |     24 |    4 | task id, or `0x8000_0000 \| cpu` outside task context (as Linux's `caller_id`); 0: unknown |
//! | —          |     28 |    4 | reserved, zero (inside the main log: see [`Header::reserved`]) |
//!
//! ```
//! use nmilog::{record::layout, ContextKind, Header, Level};
//! let h = Header {
//!     ts_ns: 1_500_000_000,
//!     cpu: 3,
//!     level: Level::Err as u8,
//!     ctx: Header::pack_ctx(ContextKind::Irq, 1),
//!     ..Header::default()
//! };
//! let b = h.to_bytes();
//! assert_eq!(b[..8], 1_500_000_000u64.to_le_bytes()); // `ts_ns` at offset 0
//! assert_eq!(b[18..20], 3u16.to_le_bytes()); // `cpu` at offset 18
//! assert_eq!(b[layout::LEVEL.0 as usize], 3);
//! assert_eq!(b[22], 0x11); // kind 1 (irq) in the low nibble, depth 1 in the high one
//! ```

/// Size of the record header in bytes (on every target).
///
/// ```
/// use nmilog::{Header, HEADER_BYTES};
/// assert_eq!(HEADER_BYTES, 32);
/// assert_eq!(Header::default().to_bytes().len(), HEADER_BYTES);
/// ```
pub const HEADER_BYTES: usize = 32;

/// The largest payload a single record may carry, in bytes. Longer raw appends are refused with
/// [`crate::AppendError::TooLarge`] and counted as dropped; formatted records are truncated earlier, at
/// [`crate::LINE_MAX`], and marked [`flags::TRUNCATED`].
///
/// ```
/// use nmilog::ring::{NoHook, RecordRing, WriteError};
/// use nmilog::{Header, MAX_PAYLOAD};
/// let ring: RecordRing<4096> = RecordRing::new();
/// assert_eq!(ring.max_payload(), MAX_PAYLOAD);
/// let big = [b'x'; MAX_PAYLOAD + 1];
/// let r = ring.write(|_| Header::default(), &big, &mut NoHook);
/// assert_eq!(r, Err(WriteError::TooLarge));
/// ```
pub const MAX_PAYLOAD: usize = 1024;

/// Field offsets and sizes of the header, as published in the handover image.
///
/// The fields are contiguous, in header order; the last 4 bytes of [`crate::HEADER_BYTES`] are
/// reserved (zero in the handover image; inside the main log, see [`Header::reserved`](crate::Header::reserved)):
///
/// ```
/// use nmilog::record::layout;
/// let mut end = 0;
/// for (off, size) in layout::ALL {
///     assert_eq!(off, end);
///     end += size;
/// }
/// assert_eq!(end as usize + 4, nmilog::HEADER_BYTES);
/// ```
pub mod layout {
    /// `(offset, size)` of `ts_ns`.
    ///
    /// ```
    /// use nmilog::{record::layout, Header};
    /// let b = Header { ts_ns: 0x0102, ..Header::default() }.to_bytes();
    /// let (off, size) = layout::TS_NS;
    /// assert_eq!(&b[off as usize..][..size as usize], &0x0102u64.to_le_bytes());
    /// ```
    pub const TS_NS: (u8, u8) = (0, 8);
    /// `(offset, size)` of `src_seq`.
    ///
    /// ```
    /// assert_eq!(nmilog::record::layout::SRC_SEQ, (8, 8));
    /// ```
    pub const SRC_SEQ: (u8, u8) = (8, 8);
    /// `(offset, size)` of `len`.
    ///
    /// ```
    /// use nmilog::{record::layout, Header};
    /// let b = Header { len: 300, ..Header::default() }.to_bytes();
    /// let off = layout::LEN.0 as usize;
    /// assert_eq!(u16::from_le_bytes([b[off], b[off + 1]]), 300);
    /// ```
    pub const LEN: (u8, u8) = (16, 2);
    /// `(offset, size)` of `cpu`.
    ///
    /// ```
    /// assert_eq!(nmilog::record::layout::CPU, (18, 2));
    /// ```
    pub const CPU: (u8, u8) = (18, 2);
    /// `(offset, size)` of `level`.
    ///
    /// ```
    /// use nmilog::{record::layout, Header};
    /// let b = Header { level: 3, ..Header::default() }.to_bytes();
    /// assert_eq!(b[layout::LEVEL.0 as usize], 3);
    /// ```
    pub const LEVEL: (u8, u8) = (20, 1);
    /// `(offset, size)` of `facility`.
    ///
    /// ```
    /// assert_eq!(nmilog::record::layout::FACILITY, (21, 1));
    /// ```
    pub const FACILITY: (u8, u8) = (21, 1);
    /// `(offset, size)` of `ctx`.
    ///
    /// ```
    /// assert_eq!(nmilog::record::layout::CTX, (22, 1));
    /// ```
    pub const CTX: (u8, u8) = (22, 1);
    /// `(offset, size)` of `flags`.
    ///
    /// ```
    /// use nmilog::{record::{flags, layout}, Header};
    /// let b = Header { flags: flags::RAW, ..Header::default() }.to_bytes();
    /// assert_eq!(b[layout::FLAGS.0 as usize], flags::RAW);
    /// ```
    pub const FLAGS: (u8, u8) = (23, 1);
    /// `(offset, size)` of `caller`.
    ///
    /// ```
    /// use nmilog::{record::layout, Header};
    /// let b = Header { caller: 0x8000_0002, ..Header::default() }.to_bytes();
    /// assert_eq!(b[layout::CALLER.0 as usize..][..4], 0x8000_0002u32.to_le_bytes());
    /// ```
    pub const CALLER: (u8, u8) = (24, 4);
    /// All fields in header order, for writing the layout table.
    ///
    /// ```
    /// use nmilog::record::layout;
    /// assert_eq!(layout::ALL.len(), 9);
    /// assert_eq!(layout::ALL[0], layout::TS_NS);
    /// assert_eq!(layout::ALL[8], layout::CALLER);
    /// ```
    pub const ALL: [(u8, u8); 9] = [
        TS_NS, SRC_SEQ, LEN, CPU, LEVEL, FACILITY, CTX, FLAGS, CALLER,
    ];
}

/// Record flag bits.
///
/// Each flag is a distinct single bit, so they combine with `|`:
///
/// ```
/// use nmilog::record::flags::{CONT, NEWLINE, RAW, TRUNCATED};
/// for f in [CONT, TRUNCATED, RAW, NEWLINE] {
///     assert_eq!(f.count_ones(), 1);
/// }
/// assert_eq!(CONT | TRUNCATED | RAW | NEWLINE, 0b1111);
/// ```
pub mod flags {
    /// The record continues the previous record of the same caller (`pr_cont!`).
    ///
    /// ```
    /// assert_eq!(nmilog::record::flags::CONT, 0b001);
    /// ```
    pub const CONT: u8 = 1 << 0;
    /// The text was cut at the formatting buffer's end; it ends with [`crate::TRUNCATION_MARKER`].
    ///
    /// ```
    /// assert_eq!(nmilog::record::flags::TRUNCATED, 0b010);
    /// ```
    pub const TRUNCATED: u8 = 1 << 1;
    /// The payload is raw bytes (a defmt frame, a pre-formatted binary record), not UTF-8 text.
    ///
    /// ```
    /// use nmilog::{handover::ImageRecord, record::flags, Header};
    /// let h = Header { flags: flags::RAW, ..Header::default() };
    /// assert_eq!(ImageRecord { seq: 0, header: h, payload: b"text" }.text(), None);
    /// ```
    pub const RAW: u8 = 1 << 2;
    /// The text ended with a newline, which ends the record (it is not stored: consoles end every
    /// record with their own). A `pr_cont!` after it starts a new line.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, RecordBuf};
    /// use nmilog::record::flags;
    /// static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.log_fmt(Level::Info, 0, format_args!("ported from C\n")).unwrap();
    /// let mut rec = RecordBuf::new();
    /// LOG.main_reader().read(&LOG, &mut rec);
    /// assert_eq!(rec.text(), Some("ported from C")); // printed once, not double-spaced
    /// assert_ne!(rec.header.flags & flags::NEWLINE, 0);
    /// ```
    pub const NEWLINE: u8 = 1 << 3;

    /// Whether `flags` mark a `pr_cont!` piece: [`CONT`] and not [`RAW`] (what the flags say of
    /// [`Header::continues`](crate::Header::continues); the ring's continuation hint reads only
    /// the flags byte).
    #[inline(always)]
    pub(crate) const fn piece(flags: u8) -> bool {
        flags & CONT != 0 && flags & RAW == 0
    }
}

/// Facility numbers.
///
/// ```
/// use nmilog::record::facility::{DEFMT, KERNEL, NMILOG};
/// assert_eq!([KERNEL, NMILOG, DEFMT], [0, 1, 2]);
/// ```
pub mod facility {
    /// Ordinary log text.
    ///
    /// ```
    /// assert_eq!(nmilog::record::facility::KERNEL, 0);
    /// ```
    pub const KERNEL: u8 = 0;
    /// nmilog's own accounting records (torn / overwritten / dropped counts).
    ///
    /// ```
    /// assert_eq!(nmilog::record::facility::NMILOG, 1);
    /// ```
    pub const NMILOG: u8 = 1;
    /// defmt frames.
    ///
    /// ```
    /// assert_eq!(nmilog::record::facility::DEFMT, 2);
    /// ```
    pub const DEFMT: u8 = 2;
}

/// Declares a `#[repr(u8)]` enum from one table — each variant's number and short name — with
/// `from_u8` (the number back to the variant) and `name`, so the three cannot drift apart.
macro_rules! named_u8_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// The variant for its number, or `None` (see the type's example).
            pub const fn from_u8(v: u8) -> Option<$name> {
                Some(match v {
                    $( $value => $name::$variant, )+
                    _ => return None,
                })
            }

            /// Its short name (see the type's example).
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }
    };
}

named_u8_enum! {
    /// printk log levels, with the kernel's short names (`"info"`, `"err"`, …).
    ///
    /// ```
    /// use nmilog::Level;
    /// assert!(Level::Emerg < Level::Debug);
    /// assert_eq!(Level::from_u8(6), Some(Level::Info));
    /// assert_eq!(Level::from_u8(0), Some(Level::Emerg));
    /// assert_eq!(Level::from_u8(Level::Debug as u8), Some(Level::Debug));
    /// assert_eq!(Level::from_u8(8), None);
    /// assert_eq!(Level::Info.name(), "info");
    /// assert_eq!(Level::Warning.name(), "warn");
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Level {
        /// System is unusable.
        Emerg = 0 => "emerg",
        /// Action must be taken immediately.
        Alert = 1 => "alert",
        /// Critical conditions.
        Crit = 2 => "crit",
        /// Error conditions.
        Err = 3 => "err",
        /// Warning conditions.
        Warning = 4 => "warn",
        /// Normal but significant.
        Notice = 5 => "notice",
        /// Informational.
        Info = 6 => "info",
        /// Debug-level messages.
        Debug = 7 => "debug",
    }
}

named_u8_enum! {
    /// The kind of execution context a record was written from: `"task"`, `"softirq"`, `"irq"`,
    /// `"nmi"` or `"crash"`.
    ///
    /// Kinds nest on one CPU: task < softirq < irq < NMI < nested NMI (machine check); a crash
    /// (panic/oops path) is entered like an exception and nests on top of whatever was running. The
    /// *depth* of the nesting, not the kind, selects the ring a record goes to (see
    /// [`crate::percpu`]).
    ///
    /// ```
    /// use nmilog::ContextKind;
    /// assert_eq!(ContextKind::from_u8(2), Some(ContextKind::Nmi));
    /// assert_eq!(ContextKind::Crash.name(), "crash");
    /// assert_eq!(ContextKind::from_u8(ContextKind::Irq as u8), Some(ContextKind::Irq));
    /// assert_eq!(ContextKind::from_u8(4), Some(ContextKind::Softirq));
    /// assert_eq!(ContextKind::from_u8(5), None);
    /// assert_eq!(ContextKind::Task.name(), "task");
    /// assert_eq!(ContextKind::Nmi.name(), "nmi");
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum ContextKind {
        /// Task (process / thread) context.
        Task = 0 => "task",
        /// Maskable interrupt context.
        Irq = 1 => "irq",
        /// Non-maskable interrupt (or machine check) context.
        Nmi = 2 => "nmi",
        /// The crash path (panic, oops, crash-kexec) on the crashing CPU.
        Crash = 3 => "crash",
        /// Softirq (bottom half) context: deferred interrupt work, between task and hardirq.
        Softirq = 4 => "softirq",
    }
}

impl ContextKind {
    /// Whether a log call in this context must take the NMI-safe path (append to its own ring only).
    ///
    /// ```
    /// use nmilog::ContextKind;
    /// assert!(ContextKind::Nmi.is_nmi_safe_only());
    /// assert!(ContextKind::Crash.is_nmi_safe_only());
    /// assert!(!ContextKind::Irq.is_nmi_safe_only());
    /// ```
    pub const fn is_nmi_safe_only(self) -> bool {
        matches!(self, ContextKind::Nmi | ContextKind::Crash)
    }
}

/// A record header, decoded.
///
/// ```
/// use nmilog::{ContextKind, Header};
/// let h = Header { ts_ns: 5, src_seq: 9, len: 3, cpu: 2, level: 6, facility: 0,
///                  ctx: Header::pack_ctx(ContextKind::Irq, 1), flags: 0, caller: 0,
///                  reserved: 0 };
/// let b = h.to_bytes();
/// assert_eq!(Header::from_bytes(&b), h);
/// assert_eq!(h.context(), (Some(ContextKind::Irq), 1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Timestamp in nanoseconds (platform clock, comparable across CPUs).
    pub ts_ns: u64,
    /// Record number within the ring that first held it.
    pub src_seq: u64,
    /// Payload length in bytes.
    pub len: u16,
    /// Writing CPU.
    pub cpu: u16,
    /// printk level (0..=7).
    pub level: u8,
    /// Facility (see [`facility`]).
    pub facility: u8,
    /// Context kind (low nibble) and depth (high nibble); see [`Header::pack_ctx`].
    pub ctx: u8,
    /// [`flags`] bits.
    pub flags: u8,
    /// Who logged: see [`Header::caller`] (raw: a task id, or `0x8000_0000 | cpu`; 0: unknown).
    pub caller: u32,
    /// Reserved (bytes 28..32 of the stored header): 0 in a per-CPU ring and in every record a
    /// reader or the crash drain hands out. Inside the main log it holds the low 32 bits of the
    /// record's source's overwritten count when the flush moved the record there (the crash drain
    /// pairs that count with the record: see `crash::state::snapshot`). A named field, not
    /// padding: a header in memory a dump reader reads word by word (the flush's buffer in the
    /// `Log`) has no uninitialised bytes.
    pub reserved: u32,
}

/// Who logged a record: a task (in task context, where the platform names one), or a CPU (Linux's
/// `caller=T123` / `caller=C2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A task id.
    Task(u32),
    /// A CPU (outside task context, or where the platform names no task).
    Cpu(u32),
}

impl Caller {
    /// The raw header value (`0x8000_0000 | cpu` for a CPU).
    ///
    /// ```
    /// use nmilog::record::Caller;
    /// assert_eq!(Caller::Cpu(2).raw(), 0x8000_0002);
    /// assert_eq!(Caller::Task(123).raw(), 123);
    /// ```
    pub const fn raw(self) -> u32 {
        match self {
            Caller::Task(t) => t & 0x7fff_ffff,
            Caller::Cpu(c) => 0x8000_0000 | (c & 0x7fff_ffff),
        }
    }
}

impl core::fmt::Display for Caller {
    /// `T123` or `C2`, as in Linux's `/dev/kmsg`.
    ///
    /// ```
    /// use nmilog::record::Caller;
    /// assert_eq!(Caller::Task(123).to_string(), "T123");
    /// assert_eq!(Caller::Cpu(2).to_string(), "C2");
    /// ```
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Caller::Task(t) => write!(f, "T{t}"),
            Caller::Cpu(c) => write!(f, "C{c}"),
        }
    }
}

impl Header {
    /// Whether this record leaves its line open for `pr_cont!` pieces: it did not end with a newline
    /// ([`flags::NEWLINE`]) and is not raw bytes.
    ///
    /// ```
    /// use nmilog::{record::flags, Header};
    /// assert!(Header::default().leaves_line_open());
    /// assert!(!Header { flags: flags::NEWLINE, ..Header::default() }.leaves_line_open());
    /// ```
    pub const fn leaves_line_open(&self) -> bool {
        self.flags & (flags::NEWLINE | flags::RAW) == 0
    }

    /// Whether this record is a `pr_cont!` piece of the line `line` opened: flagged
    /// [`flags::CONT`], not raw, from the same caller, CPU, context and facility. The one rule the
    /// flush (joining pieces into one main-log record) and the consoles (onto one line) share.
    ///
    /// ```
    /// use nmilog::{record::flags, Header};
    /// let line = Header { caller: 7, ..Header::default() };
    /// assert!(Header { caller: 7, flags: flags::CONT, ..Header::default() }.continues(&line));
    /// assert!(!Header { caller: 8, flags: flags::CONT, ..Header::default() }.continues(&line));
    /// assert!(!Header { caller: 7, ..Header::default() }.continues(&line)); // not a piece
    /// ```
    pub const fn continues(&self, line: &Header) -> bool {
        flags::piece(self.flags)
            && self.caller == line.caller
            && self.cpu == line.cpu
            && self.ctx == line.ctx
            && self.facility == line.facility
    }

    /// Who logged this record. A record without a caller (written by an older version, or by the
    /// log itself) names its CPU.
    ///
    /// ```
    /// use nmilog::{record::Caller, Header};
    /// assert_eq!(Header { caller: 77, ..Header::default() }.caller(), Caller::Task(77));
    /// assert_eq!(Header { caller: 0x8000_0001, ..Header::default() }.caller(), Caller::Cpu(1));
    /// assert_eq!(Header { cpu: 3, ..Header::default() }.caller(), Caller::Cpu(3));
    /// ```
    pub const fn caller(&self) -> Caller {
        match self.caller {
            0 => Caller::Cpu(self.cpu as u32),
            c if c & 0x8000_0000 != 0 => Caller::Cpu(c & 0x7fff_ffff),
            t => Caller::Task(t),
        }
    }

    /// Packs a context kind and nesting depth into the `ctx` byte.
    ///
    /// ```
    /// use nmilog::{ContextKind, Header};
    /// assert_eq!(Header::pack_ctx(ContextKind::Nmi, 3), 0x32);
    /// assert_eq!(Header::pack_ctx(ContextKind::Task, 0), 0);
    /// ```
    pub const fn pack_ctx(kind: ContextKind, depth: usize) -> u8 {
        (kind as u8) | (((depth & 0xf) as u8) << 4)
    }

    /// The context kind (if valid) and depth of the `ctx` byte.
    ///
    /// ```
    /// use nmilog::{ContextKind, Header};
    /// let h = Header { ctx: Header::pack_ctx(ContextKind::Crash, 2), ..Header::default() };
    /// assert_eq!(h.context(), (Some(ContextKind::Crash), 2));
    /// let bad = Header { ctx: 0x1f, ..Header::default() };
    /// assert_eq!(bad.context(), (None, 1));
    /// ```
    pub const fn context(&self) -> (Option<ContextKind>, usize) {
        (
            ContextKind::from_u8(self.ctx & 0xf),
            (self.ctx >> 4) as usize,
        )
    }

    /// The header in its little-endian byte layout (the table in the module docs).
    ///
    /// ```
    /// use nmilog::Header;
    /// let b = Header { ts_ns: 0x0201, cpu: 7, level: 4, ..Header::default() }.to_bytes();
    /// assert_eq!(&b[0..3], &[0x01, 0x02, 0x00]);
    /// assert_eq!(&b[18..21], &[7, 0, 4]);
    /// ```
    #[inline]
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&self.ts_ns.to_le_bytes());
        b[8..16].copy_from_slice(&self.src_seq.to_le_bytes());
        b[16..18].copy_from_slice(&self.len.to_le_bytes());
        b[18..20].copy_from_slice(&self.cpu.to_le_bytes());
        b[20] = self.level;
        b[21] = self.facility;
        b[22] = self.ctx;
        b[23] = self.flags;
        b[24..28].copy_from_slice(&self.caller.to_le_bytes());
        b[28..32].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    /// Decodes the little-endian layout.
    ///
    /// ```
    /// use nmilog::{Header, HEADER_BYTES};
    /// let mut b = [0u8; HEADER_BYTES];
    /// b[16] = 5; // len, low byte
    /// b[20] = 6; // level
    /// let h = Header::from_bytes(&b);
    /// assert_eq!((h.len, h.level, h.ts_ns), (5, 6, 0));
    /// ```
    #[inline]
    pub fn from_bytes(b: &[u8; HEADER_BYTES]) -> Header {
        Header {
            ts_ns: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            src_seq: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            len: u16::from_le_bytes([b[16], b[17]]),
            cpu: u16::from_le_bytes([b[18], b[19]]),
            level: b[20],
            facility: b[21],
            ctx: b[22],
            flags: b[23],
            caller: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
            reserved: u32::from_le_bytes([b[28], b[29], b[30], b[31]]),
        }
    }
}

/// A record copied out of a ring or the main log: its header, the sequence number it has in the
/// structure it was read from, and its payload in a fixed buffer.
///
/// ```
/// let r = nmilog::RecordBuf::new();
/// assert!(r.payload().is_empty());
/// ```
#[derive(Clone)]
pub struct RecordBuf {
    /// Sequence number of the record in the ring or log it was read from.
    pub seq: u64,
    /// The decoded header.
    pub header: Header,
    pub(crate) payload: [u8; MAX_PAYLOAD],
}

impl RecordBuf {
    /// An empty record buffer.
    ///
    /// ```
    /// use nmilog::{Header, RecordBuf};
    /// let r = RecordBuf::new();
    /// assert_eq!((r.seq, r.header), (0, Header::default()));
    /// assert_eq!(r.text(), Some(""));
    /// ```
    pub const fn new() -> Self {
        RecordBuf {
            seq: 0,
            header: Header {
                ts_ns: 0,
                src_seq: 0,
                len: 0,
                cpu: 0,
                level: 0,
                facility: 0,
                ctx: 0,
                flags: 0,
                caller: 0,
                reserved: 0,
            },
            payload: [0; MAX_PAYLOAD],
        }
    }

    /// The payload bytes (`header.len` of them).
    ///
    /// ```
    /// # use nmilog::ring::{Cursor, NoHook, RecordRing};
    /// # use nmilog::{Header, RecordBuf};
    /// let ring: RecordRing<64> = RecordRing::new();
    /// ring.write(|_seq| Header::default(), &[0xff, 0x00, 0x7f], &mut NoHook).unwrap();
    /// let mut buf = RecordBuf::new();
    /// ring.read(&mut Cursor::START, &mut buf);
    /// assert_eq!(buf.header.len, 3);
    /// assert_eq!(buf.payload(), &[0xff, 0x00, 0x7f]);
    /// ```
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.payload[..(self.header.len as usize).min(MAX_PAYLOAD)]
    }

    /// The payload as text, if it is UTF-8.
    ///
    /// ```
    /// # use nmilog::ring::{Cursor, NoHook, RecordRing};
    /// # use nmilog::{Header, RecordBuf};
    /// let ring: RecordRing<64> = RecordRing::new();
    /// ring.write(|_seq| Header::default(), "héllo".as_bytes(), &mut NoHook).unwrap();
    /// ring.write(|_seq| Header::default(), &[0xff, 0xfe], &mut NoHook).unwrap();
    /// let (mut cur, mut buf) = (Cursor::START, RecordBuf::new());
    /// ring.read(&mut cur, &mut buf);
    /// assert_eq!(buf.text(), Some("héllo"));
    /// ring.read(&mut cur, &mut buf);
    /// assert_eq!(buf.text(), None);
    /// ```
    pub fn text(&self) -> Option<&str> {
        core::str::from_utf8(self.payload()).ok()
    }
}

impl Default for RecordBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for RecordBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecordBuf")
            .field("seq", &self.seq)
            .field("header", &self.header)
            .field("payload", &self.payload())
            .finish()
    }
}
