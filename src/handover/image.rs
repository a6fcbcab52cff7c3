//! A parsed handover image: [`Image`] (its counters, context kinds and totals), the iterator over
//! its valid records ([`Records`]) and one recovered record ([`ImageRecord`]).
//!
//! Contract: an `Image` only exists once [`parse`](super::parse)(super::parse) validated the header and tables
//! and counted the valid records; every accessor is bounds-checked and borrows the image bytes.

use core::fmt;

use super::parse::{decode_record, le, Layout};
use super::HandoverError;
use crate::record::{flags, ContextKind, Header};
use crate::CpuCounters;

/// One record recovered from an image.
///
/// ```
/// use nmilog::handover::ImageRecord;
/// use nmilog::{record::flags, Header};
/// let r = ImageRecord { seq: 0, header: Header::default(), payload: b"ok" };
/// assert_eq!(r.text(), Some("ok"));
/// let raw = ImageRecord { header: Header { flags: flags::RAW, ..Header::default() }, ..r };
/// assert_eq!(raw.text(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageRecord<'a> {
    /// The record's sequence number in the main log.
    pub seq: u64,
    /// The decoded header (`header.len == payload.len()`).
    pub header: Header,
    /// The payload bytes, borrowed from the image.
    pub payload: &'a [u8],
}

impl<'a> ImageRecord<'a> {
    /// The payload as text (borrowed from the image): `None` if it is marked [`flags::RAW`] or is
    /// not UTF-8.
    ///
    /// ```
    /// use nmilog::{handover::ImageRecord, Header};
    /// let ok = ImageRecord { seq: 3, header: Header::default(), payload: "né".as_bytes() };
    /// assert_eq!(ok.text(), Some("né"));
    /// let bad = ImageRecord { payload: &[0xc3], ..ok }; // a cut UTF-8 sequence
    /// assert_eq!(bad.text(), None);
    /// ```
    pub fn text(&self) -> Option<&'a str> {
        if self.header.flags & flags::RAW != 0 {
            return None;
        }
        core::str::from_utf8(self.payload).ok()
    }
}

/// A parsed handover image (see [`parse`](super::parse)). Borrows the image bytes.
///
/// ```
/// use nmilog::{handover, host::HostPlatform, Level, Log};
/// static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
/// HostPlatform::register_cpu(0);
/// LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
/// LOG.crash_enter().unwrap();
/// let mut region = vec![0u8; handover::max_image_size(2, 5, 1024, 4096)];
/// let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
/// let image = handover::parse(&region[..n]).unwrap();
/// assert_eq!((image.cpu_count(), image.depth(), image.record_count()), (2, 5, 1));
/// assert_eq!(image.records().next().unwrap().text(), Some("hello"));
/// ```
#[derive(Clone)]
pub struct Image<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) version: u16,
    pub(super) cpu_count: usize,
    pub(super) depth: usize,
    pub(super) layout: Layout,
    pub(super) counters_at: usize,
    pub(super) counter_entry: usize,
    pub(super) bad_cpu: u64,
    pub(super) left_out: u64,
    pub(super) records_at: usize,
    pub(super) valid: usize,
    pub(super) corruption: Option<(HandoverError, usize)>,
}

impl fmt::Debug for Image<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("version", &self.version)
            .field("cpu_count", &self.cpu_count)
            .field("depth", &self.depth)
            .field("records", &self.valid)
            .field("left_out", &self.left_out)
            .field("bad_cpu_dropped", &self.bad_cpu)
            .field("corruption", &self.corruption)
            .finish()
    }
}

impl<'a> Image<'a> {
    /// The format version of the image.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.version(), handover::VERSION);
    /// ```
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The number of CPUs the image has counters for.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.cpu_count(), 2); // the platform's CPU count
    /// assert!(image.counters(1, 0).is_some() && image.counters(2, 0).is_none());
    /// ```
    pub fn cpu_count(&self) -> usize {
        self.cpu_count
    }

    /// Context depths (rings per CPU) the image has counters for.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.depth(), 5); // `Log`'s default DEPTH
    /// assert!(image.counters(0, 4).is_some() && image.counters(0, 5).is_none());
    /// ```
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The valid records, oldest first (those before the corruption point, if any).
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// LOG.append_raw(Level::Err, 0, 0, b"world").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// let recs: Vec<_> = image.records().map(|r| (r.header.level, r.payload)).collect();
    /// assert_eq!(recs, [(6, &b"hello"[..]), (3, &b"world"[..])]);
    /// assert!(image.records().all(|r| r.header.cpu == 0));
    /// ```
    pub fn records(&self) -> Records<'a> {
        Records {
            bytes: self.bytes,
            layout: self.layout,
            at: self.records_at,
            remaining: self.valid,
        }
    }

    /// Number of valid records recovered.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// LOG.append_raw(Level::Info, 0, 0, b"world").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.record_count(), 2);
    /// assert_eq!(image.records().count(), image.record_count());
    /// ```
    pub fn record_count(&self) -> usize {
        self.valid
    }

    /// Loss counters of ring `(cpu, depth)`, or `None` outside the image's CPUs and depths.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// let big = [0u8; nmilog::MAX_PAYLOAD + 1];
    /// assert!(LOG.append_raw(Level::Info, 0, 0, &big).is_err());
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// let c = image.counters(0, 0).unwrap(); // CPU 0, task context
    /// assert_eq!((c.dropped, c.torn, c.overwritten), (1, 0, 0)); // the oversized record
    /// assert_eq!(image.counters(1, 0).unwrap().dropped, 0);
    /// assert_eq!(image.counters(9, 0), None);
    /// ```
    pub fn counters(&self, cpu: usize, depth: usize) -> Option<CpuCounters> {
        let at = self.counter_at(cpu, depth)?;
        Some(CpuCounters {
            torn: le(self.bytes, at, 8)?,
            overwritten: le(self.bytes, at.checked_add(8)?, 8)?,
            dropped: le(self.bytes, at.checked_add(16)?, 8)?,
            // Version 1 entries (32 bytes) have no in-flight count.
            in_flight: if self.counter_entry >= 40 {
                le(self.bytes, at.checked_add(32)?, 8)?
            } else {
                0
            },
        })
    }

    /// Whether `cpu` was known to be stopped (it checked in, or it is the crashing CPU) when the
    /// image was written: `Some(false)` names a CPU that did not stop — its records up to the image
    /// are in it, a log call it had in progress is counted in flight, and anything it did after the
    /// image is not. `None` outside the image's CPUs. Version 1 images say `Some(true)`.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// LOG.crash_enter().unwrap();
    /// let mut region = [0u8; 4096];
    /// // CPU 1 never checked in.
    /// let n = handover::write_image(&LOG, &mut region, &|cpu| cpu != 1).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.cpu_stopped(0), Some(true)); // the crashing CPU
    /// assert_eq!(image.cpu_stopped(1), Some(false));
    /// assert_eq!(image.cpu_stopped(2), None);
    /// ```
    pub fn cpu_stopped(&self, cpu: usize) -> Option<bool> {
        let at = self.counter_at(cpu, 0)?;
        if self.counter_entry < 26 {
            return Some(true);
        }
        Some(self.bytes.get(at.checked_add(25)?)? & super::format::CPU_NOT_STOPPED == 0)
    }

    /// The kind of context last entered at `depth` on `cpu` when the image was written (as the
    /// crash drain's accounting names it), or `None` outside the table or for an unknown kind.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// use nmilog::ContextKind;
    /// assert_eq!(image.context_kind(0, 0), Some(ContextKind::Task));
    /// assert_eq!(image.context_kind(0, 1), Some(ContextKind::Crash)); // `crash_enter` on CPU 0
    /// assert_eq!(image.context_kind(0, 5), None); // beyond the image's depth
    /// ```
    pub fn context_kind(&self, cpu: usize, depth: usize) -> Option<ContextKind> {
        let at = self.counter_at(cpu, depth)?.checked_add(24)?;
        ContextKind::from_u8(*self.bytes.get(at)?)
    }

    fn counter_at(&self, cpu: usize, depth: usize) -> Option<usize> {
        if cpu >= self.cpu_count || depth >= self.depth {
            return None;
        }
        let index = cpu.checked_mul(self.depth)?.checked_add(depth)?;
        self.counters_at
            .checked_add(index.checked_mul(self.counter_entry)?)
    }

    /// The counters summed over every CPU and depth (saturating).
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// let big = [0u8; nmilog::MAX_PAYLOAD + 1];
    /// assert!(LOG.append_raw(Level::Info, 0, 0, &big).is_err());
    /// assert!(LOG.append_raw(Level::Info, 0, 0, &big).is_err());
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// let t = image.totals();
    /// assert_eq!((t.dropped, t.torn, t.overwritten), (2, 0, 0));
    /// assert_eq!(t.dropped, image.counters(0, 0).unwrap().dropped);
    /// ```
    pub fn totals(&self) -> CpuCounters {
        let mut t = CpuCounters::default();
        for c in 0..self.cpu_count {
            for d in 0..self.depth {
                if let Some(x) = self.counters(c, d) {
                    t.torn = t.torn.saturating_add(x.torn);
                    t.overwritten = t.overwritten.saturating_add(x.overwritten);
                    t.dropped = t.dropped.saturating_add(x.dropped);
                    t.in_flight = t.in_flight.saturating_add(x.in_flight);
                }
            }
        }
        t
    }

    /// Log calls dropped because the platform reported a bad CPU id.
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// # LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
    /// HostPlatform::register_cpu(7); // not one of the 2 CPUs
    /// assert!(LOG.append_raw(Level::Info, 0, 0, b"lost").is_err());
    /// HostPlatform::register_cpu(0);
    /// # LOG.crash_enter().unwrap();
    /// # let mut region = [0u8; 4096];
    /// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.bad_cpu_dropped(), 1);
    /// assert_eq!(image.bad_cpu_dropped(), LOG.bad_cpu_dropped());
    /// ```
    pub fn bad_cpu_dropped(&self) -> u64 {
        self.bad_cpu
    }

    /// Records the writer left out because the region was too small (the oldest ones).
    ///
    /// ```
    /// # use nmilog::{handover, host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
    /// # HostPlatform::register_cpu(0);
    /// LOG.append_raw(Level::Info, 0, 0, b"old").unwrap();
    /// LOG.append_raw(Level::Info, 0, 0, b"new").unwrap();
    /// # LOG.crash_enter().unwrap();
    /// // Room for the fixed part and one record only.
    /// let mut region = vec![0u8; handover::fixed_size(2, 5) + handover::record_size(3)];
    /// let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.left_out(), 1);
    /// assert_eq!(image.records().next().unwrap().text(), Some("new"));
    /// ```
    pub fn left_out(&self) -> u64 {
        self.left_out
    }

    /// `Some((error, byte offset))` when the record area is damaged: the records before `offset` were
    /// recovered ([`records`](Self::records)), the entry at `offset` and everything after it were not.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// use nmilog::{handover::{self, HandoverError}, Level, Log};
    /// let log: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// log.append_raw(Level::Info, 0, 0, b"first").unwrap();
    /// log.append_raw(Level::Info, 0, 0, b"second").unwrap();
    /// log.crash_enter().unwrap();
    /// let mut region = [0u8; 1024];
    /// let n = handover::write_image(&log, &mut region, &|_| true).unwrap();
    ///
    /// // Damage the last byte of the payload "second": "first" is still recovered.
    /// let second_at = n - handover::record_size(6);
    /// region[second_at + 8 + nmilog::HEADER_BYTES + 5] ^= 0x20;
    /// let image = handover::parse(&region[..n]).unwrap();
    /// assert_eq!(image.record_count(), 1);
    /// assert_eq!(image.records().next().unwrap().payload, b"first");
    /// let (err, at) = image.corruption().unwrap();
    /// assert!(matches!(err, HandoverError::ChecksumMismatch { .. }));
    /// assert_eq!(at, second_at);
    /// ```
    pub fn corruption(&self) -> Option<(HandoverError, usize)> {
        self.corruption
    }
}

/// Iterator over an [`Image`]'s valid records, oldest first.
///
/// ```
/// # use nmilog::{handover, host::HostPlatform, Level, Log};
/// # static LOG: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));
/// # HostPlatform::register_cpu(0);
/// LOG.append_raw(Level::Info, 0, 0, b"hello").unwrap();
/// LOG.append_raw(Level::Info, 0, 0, b"world").unwrap();
/// # LOG.crash_enter().unwrap();
/// # let mut region = [0u8; 4096];
/// # let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
/// let image = handover::parse(&region[..n]).unwrap();
/// let mut records = image.records();
/// assert_eq!(records.size_hint(), (0, Some(2)));
/// let texts: Vec<_> = records.by_ref().filter_map(|r| r.text()).collect();
/// assert_eq!(texts, ["hello", "world"]);
/// assert!(records.next().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    layout: Layout,
    at: usize,
    remaining: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = ImageRecord<'a>;

    fn next(&mut self) -> Option<ImageRecord<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let Some((rec, size)) = decode_record(self.bytes, self.at, &self.layout) else {
            self.remaining = 0;
            return None;
        };
        self.remaining -= 1;
        self.at = self.at.saturating_add(size);
        Some(rec)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}
