//! Readers of the main log, like open `/dev/kmsg` files.
//!
//! Contract: a [`MainReader`] is a cursor, nothing more — any number of them read the main log at
//! once, without any lock and without ever slowing the flush owner down (the main log is a
//! [`RecordRing`](crate::ring::RecordRing); reading it is the ring's seqlocked read). A reader sees
//! every record once, in order, never a torn one; when the main log overwrote records it had not read
//! yet, it is told how many ([`Read::Overwritten`]) and counts them ([`MainReader::missed`]).

use super::Log;
use crate::record::RecordBuf;
use crate::ring::{Cursor, Read};
use crate::Platform;

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// A reader of the main log starting at its oldest record.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, RecordBuf};
    /// static LOG: Log<OneCpu, 1, 256, 64> = Log::new(OneCpu);
    /// use nmilog::ring::Read;
    /// for i in 0..20 {
    ///     LOG.log_fmt(Level::Info, 0, format_args!("line {i:02}")).unwrap(); // the main log wraps
    /// }
    /// let (mut late, mut rec) = (LOG.main_reader(), RecordBuf::new());
    /// assert_eq!(late.read(&LOG, &mut rec), Read::Record); // the oldest record still there
    /// assert_eq!(late.missed(), 0);
    /// assert!(rec.seq > 0);
    /// ```
    pub fn main_reader(&self) -> MainReader {
        MainReader {
            cur: self.main_ring().oldest(),
            missed: 0,
        }
    }
}

/// A reader of the main log, like an open `/dev/kmsg`: sees every record once, in order, and is told
/// how many it missed when the log overwrote records it had not read.
///
/// ```
/// # use nmilog::doc_support::OneCpu;
/// # use nmilog::{Level, Log, MainReader, RecordBuf};
/// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
/// use nmilog::ring::Read;
/// LOG.append(Level::Info, 0, 0, b"boot").unwrap();
/// let (mut console, mut syslog) = (MainReader::new(), MainReader::new());
/// let mut rec = RecordBuf::new();
/// assert_eq!(console.read(&LOG, &mut rec), Read::Record);
/// assert_eq!(console.read(&LOG, &mut rec), Read::Empty);
/// assert_eq!(syslog.read(&LOG, &mut rec), Read::Record); // readers are independent
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MainReader {
    cur: Cursor,
    missed: u64,
}

impl MainReader {
    /// A reader at the start of a log that was never written.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Log, MainReader, RecordBuf};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// use nmilog::ring::Read;
    /// const AT_START: MainReader = MainReader::new();
    /// let mut reader = AT_START;
    /// assert_eq!(reader.next_seq(), 0);
    /// assert_eq!(reader.read(&LOG, &mut RecordBuf::new()), Read::Empty);
    /// ```
    pub const fn new() -> Self {
        MainReader {
            cur: Cursor::START,
            missed: 0,
        }
    }

    /// Reads the next record of `log`'s main buffer (see [`Read`]).
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, MainReader, RecordBuf};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// use nmilog::ring::Read;
    /// LOG.log_fmt(Level::Info, 0, format_args!("a")).unwrap();
    /// LOG.log_fmt(Level::Info, 0, format_args!("b")).unwrap();
    /// let (mut reader, mut rec) = (MainReader::new(), RecordBuf::new());
    /// let mut lines = Vec::new();
    /// while reader.read(&LOG, &mut rec) == Read::Record {
    ///     lines.push(rec.text().unwrap().to_string());
    /// }
    /// assert_eq!(lines, ["a", "b"]);
    /// ```
    pub fn read<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    >(
        &mut self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        out: &mut RecordBuf,
    ) -> Read {
        self.read_if(log, out, |_| true).0
    }

    /// [`read`](Self::read) if `take(header)` says so, else only a look at the header (no payload
    /// copy, the reader stays on the record): the outcome, the header, whether it was taken.
    pub(crate) fn read_if<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    >(
        &mut self,
        log: &Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        out: &mut RecordBuf,
        take: impl FnOnce(&crate::Header) -> bool,
    ) -> (Read, crate::Header, bool) {
        let (r, mut h, taken) = log.main_ring().read_if(&mut self.cur, out, take);
        if let Read::Overwritten { missed } = r {
            self.missed = self.missed.wrapping_add(missed);
        }
        // The flush's stamp stays in the main log (see `Header::reserved`).
        h.reserved = 0;
        out.header.reserved = 0;
        (r, h, taken)
    }

    /// Sequence number of the next record.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, RecordBuf};
    /// # static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
    /// LOG.append(Level::Info, 0, 0, b"one").unwrap();
    /// let mut reader = LOG.main_reader();
    /// reader.read(&LOG, &mut RecordBuf::new());
    /// assert_eq!(reader.next_seq(), 1);
    /// ```
    pub fn next_seq(&self) -> u64 {
        self.cur.seq()
    }

    /// Records this reader missed so far.
    ///
    /// ```
    /// # use nmilog::doc_support::OneCpu;
    /// # use nmilog::{Level, Log, MainReader, RecordBuf};
    /// static LOG: Log<OneCpu, 1, 256, 64> = Log::new(OneCpu);
    /// use nmilog::ring::Read;
    /// let mut slow = MainReader::new();
    /// for i in 0..20 {
    ///     LOG.log_fmt(Level::Info, 0, format_args!("line {i:02}")).unwrap(); // the main log wraps
    /// }
    /// let mut rec = RecordBuf::new();
    /// let Read::Overwritten { missed } = slow.read(&LOG, &mut rec) else { panic!() };
    /// assert!(missed > 0);
    /// assert_eq!(slow.missed(), missed);
    /// assert_eq!(slow.read(&LOG, &mut rec), Read::Record); // then it goes on from the oldest
    /// ```
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

impl Default for MainReader {
    fn default() -> Self {
        Self::new()
    }
}
