//! Formatting into a fixed stack buffer, cutting at the end with an explicit marker.
//!
//! ```
//! use core::fmt::Write;
//! use nmilog::{fmt::LineBuf, LINE_MAX, TRUNCATION_MARKER};
//! let mut line: LineBuf<LINE_MAX> = LineBuf::new();
//! // Never an error, even when the text does not fit: it is cut and marked instead.
//! write!(line, "cpu{}: {:x>1100}", 3, "").unwrap();
//! assert!(line.truncated());
//! let text = core::str::from_utf8(line.finish()).unwrap();
//! assert_eq!(text.len(), LINE_MAX);
//! assert!(text.starts_with("cpu3: xxx") && text.ends_with(TRUNCATION_MARKER));
//! ```

use core::fmt;

/// The longest formatted record, in bytes: Linux's `LOG_LINE_MAX`. Longer text is cut at a
/// character boundary, ends with [`TRUNCATION_MARKER`] and carries
/// [`crate::record::flags::TRUNCATED`]. `Log::log_fmt` formats a line longer than 128 bytes (or
/// cut) straight into the record's place in the ring (once to measure, once to store, as Linux's
/// `vprintk_store` does), so this is not a stack buffer.
///
/// ```
/// // As long as Linux's, and a formatted line always fits in one record.
/// assert_eq!(nmilog::LINE_MAX, 1024);
/// assert!(nmilog::LINE_MAX <= nmilog::MAX_PAYLOAD);
/// ```
pub const LINE_MAX: usize = 1024;

/// What a truncated record ends with.
///
/// ```
/// use core::fmt::Write;
/// use nmilog::{fmt::LineBuf, TRUNCATION_MARKER};
/// let mut b: LineBuf<12> = LineBuf::new();
/// write!(b, "link down on eth{}", 0).unwrap();
/// assert!(b.finish().ends_with(TRUNCATION_MARKER.as_bytes()));
/// assert_eq!(TRUNCATION_MARKER, "[...]");
/// ```
pub const TRUNCATION_MARKER: &str = "[...]";

/// A `fmt::Write` sink over a `heapless::Vec` that keeps what fits and remembers that it cut.
///
/// ```
/// use core::fmt::Write;
/// use nmilog::fmt::LineBuf;
/// let mut b: LineBuf<16> = LineBuf::new();
/// write!(b, "{}", "0123456789abcdefghij").unwrap();
/// assert!(b.truncated());
/// assert_eq!(b.finish(), b"0123456789a[...]");
/// ```
#[derive(Debug)]
pub struct LineBuf<const N: usize> {
    buf: heapless::Vec<u8, N>,
    truncated: bool,
}

impl<const N: usize> LineBuf<N> {
    /// An empty buffer.
    ///
    /// ```
    /// use nmilog::fmt::LineBuf;
    /// const EMPTY: LineBuf<32> = LineBuf::new(); // `const`: no runtime initialisation
    /// let mut b = EMPTY;
    /// assert!(!b.truncated());
    /// assert_eq!(b.finish(), b"");
    /// ```
    pub const fn new() -> Self {
        LineBuf {
            buf: heapless::Vec::new(),
            truncated: false,
        }
    }

    /// Whether text was cut.
    ///
    /// ```
    /// use core::fmt::Write;
    /// use nmilog::fmt::LineBuf;
    /// let mut b: LineBuf<8> = LineBuf::new();
    /// b.write_str("12345678").unwrap(); // exactly full: nothing cut
    /// assert!(!b.truncated());
    /// b.write_str("9").unwrap(); // one byte too many: still `Ok`, but remembered
    /// assert!(b.truncated());
    /// ```
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The text, with the truncation marker in its last bytes if it was cut.
    ///
    /// ```
    /// use core::fmt::Write;
    /// use nmilog::fmt::LineBuf;
    /// let mut b: LineBuf<8> = LineBuf::new();
    /// b.write_str("ééééé").unwrap(); // 10 bytes of two-byte characters
    /// // Cut at a character boundary, so the result is still valid UTF-8.
    /// assert_eq!(b.finish(), "é[...]".as_bytes());
    /// ```
    pub fn finish(&mut self) -> &[u8] {
        if self.truncated && N >= TRUNCATION_MARKER.len() {
            let mut keep = N - TRUNCATION_MARKER.len();
            // Cut at a UTF-8 character boundary.
            while keep > 0 && (self.buf[keep] & 0xc0) == 0x80 {
                keep -= 1;
            }
            self.buf.truncate(keep);
            // Cannot fail: `keep + marker <= N`.
            let _ = self.buf.extend_from_slice(TRUNCATION_MARKER.as_bytes());
        }
        &self.buf
    }
}

impl<const N: usize> Default for LineBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for LineBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            return Ok(());
        }
        let room = N - self.buf.len();
        if s.len() <= room {
            // Cannot fail: it fits.
            let _ = self.buf.extend_from_slice(s.as_bytes());
        } else {
            let _ = self.buf.extend_from_slice(&s.as_bytes()[..room]);
            self.truncated = true;
        }
        // Never report an error: a cut line is still logged, marked as cut.
        Ok(())
    }
}

/// What a formatted record will hold: its payload length, how many bytes of the text it keeps, and
/// its flags (`TRUNCATED` when cut, `NEWLINE` when the text ended with a newline, which is not
/// stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Measure {
    pub(crate) len: usize,
    pub(crate) keep: usize,
    pub(crate) flags: u8,
}

/// A writer that only counts: the text's length, its last byte, and the last character boundary at
/// or before `cut` (where a text too long for a record is cut).
struct Counter {
    cut: usize,
    total: usize,
    last: u8,
    boundary: usize,
}

impl Counter {
    fn new(max: usize) -> Self {
        Counter {
            cut: max.saturating_sub(TRUNCATION_MARKER.len()),
            total: 0,
            last: 0,
            boundary: 0,
        }
    }

    /// Counts `b`, the next bytes of the text (valid UTF-8 that starts on a character boundary:
    /// one or more whole `&str` pieces).
    #[inline]
    fn count(&mut self, b: &[u8]) {
        if self.total <= self.cut {
            // The largest char boundary of `b` at or before the cut, as an offset of the text: step
            // back while the byte at the offset is a continuation byte (`0b10xx_xxxx`; the end is a
            // boundary), as `str::is_char_boundary` decides.
            let mut i = (self.cut - self.total).min(b.len());
            while b.get(i).is_some_and(|&x| x & 0xc0 == 0x80) {
                i -= 1;
            }
            self.boundary = self.total + i;
        }
        if let Some(&x) = b.last() {
            self.last = x;
        }
        self.total = self.total.saturating_add(b.len());
    }
}

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.count(s.as_bytes());
        Ok(())
    }
}

/// Measures the record `args` makes in a record of at most `max` bytes (the smaller of
/// [`LINE_MAX`] and what the ring takes; see [`Measure`]): formats once, storing nothing.
pub(crate) fn measure(args: fmt::Arguments<'_>, max: usize) -> Measure {
    let mut c = Counter::new(max);
    // `write_fmt` writes a plain string straight through (`Arguments::as_str`).
    let _ = fmt::Write::write_fmt(&mut c, args);
    finish(c, max)
}

/// Bytes of a formatted line a log call keeps on its stack while it measures the line. A line that
/// fits (most kernel lines do) is formatted once and stored from there; a longer one, or one cut at
/// the record's limit, is formatted a second time, straight into the ring ([`Formatted`]).
pub(crate) const SHORT_LINE: usize = 128;

/// [`Counter`] that also keeps the text's first [`SHORT_LINE`] bytes. While the text fits in the
/// line, a piece is only copied there (the line is counted once, at the end); the first piece that
/// does not fit fills the line and starts the count, which takes every piece after it. Not a
/// [`LineBuf`]: its `heapless::Vec` copy costs a short line ~40 instructions more (callgrind,
/// `pr_info_deferred`).
struct KeepingCounter<'a> {
    line: &'a mut [u8; SHORT_LINE],
    /// Bytes of the text in `line`, until a piece does not fit (the line is full from then on).
    used: usize,
    /// Untouched (`total == 0`) until a piece does not fit: see [`spilled`](Self::spilled).
    counter: Counter,
}

impl KeepingCounter<'_> {
    /// Whether a piece did not fit, so that `counter` counts the text: the count starts with the
    /// line and the piece that did not fit, more than the line's bytes (`total > 0`).
    #[inline(always)]
    fn spilled(&self) -> bool {
        self.counter.total != 0
    }

    /// `b` does not fit after the `used` bytes of the line: count the line, fill it with the
    /// start of `b`, count `b`.
    #[cold]
    fn spill(&mut self, b: &[u8]) {
        let (fits, _) = b.split_at(b.len().min(SHORT_LINE - self.used));
        self.counter.count(&self.line[..self.used]);
        self.line[self.used..].copy_from_slice(fits);
        self.counter.count(b);
    }
}

impl fmt::Write for KeepingCounter<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.spilled() {
            self.counter.count(s.as_bytes());
        } else if let Some(dst) = self.line.get_mut(self.used..self.used + s.len()) {
            dst.copy_from_slice(s.as_bytes());
            self.used += s.len();
        } else {
            self.spill(s.as_bytes());
        }
        Ok(())
    }

    /// An ASCII character into the line as one byte: no UTF-8 encoding and no `memcpy` call
    /// (`core::fmt` writes a number's sign and a width's padding a character at a time).
    #[inline]
    fn write_char(&mut self, c: char) -> fmt::Result {
        if c.is_ascii() && !self.spilled() {
            if let Some(b) = self.line.get_mut(self.used) {
                *b = c as u8;
                self.used += 1;
                return Ok(());
            }
        }
        self.write_str(c.encode_utf8(&mut [0; 4]))
    }
}

/// [`measure`], keeping the text's first [`SHORT_LINE`] bytes in `line`: formats once. Returns
/// the measure and, when the record is `line`'s first `keep` bytes (the text is not cut and its
/// kept bytes fit in `line`), those bytes.
pub(crate) fn measure_keeping<'l>(
    args: fmt::Arguments<'_>,
    max: usize,
    line: &'l mut [u8; SHORT_LINE],
) -> (Measure, Option<&'l [u8]>) {
    let mut k = KeepingCounter {
        line,
        used: 0,
        counter: Counter::new(max),
    };
    let _ = fmt::Write::write_fmt(&mut k, args);
    let spilled = k.spilled();
    let KeepingCounter {
        line,
        used,
        mut counter,
    } = k;
    if !spilled {
        // The whole text is in the line: one count (pieces start on character boundaries, so
        // counting their concatenation counts them).
        counter.count(&line[..used]);
    }
    let m = finish(counter, max);
    // `line` holds the text's first `min(total, SHORT_LINE)` bytes: all of the kept ones when
    // `keep <= SHORT_LINE` (`keep <= total` always).
    let line: &'l [u8] = line;
    let kept = line.get(..m.keep);
    (
        m,
        kept.filter(|_| m.flags & crate::record::flags::TRUNCATED == 0),
    )
}

fn finish(c: Counter, max: usize) -> Measure {
    let mut flags = 0;
    let mut total = c.total;
    if c.last == b'\n' {
        // A trailing newline ends the record; it is not stored (consoles add their own).
        flags |= crate::record::flags::NEWLINE;
        total -= 1;
    }
    if total > max {
        Measure {
            len: c.boundary + TRUNCATION_MARKER.len(),
            keep: c.boundary,
            flags: flags | crate::record::flags::TRUNCATED,
        }
    } else {
        Measure {
            len: total,
            keep: total,
            flags,
        }
    }
}

/// A formatted payload ([`crate::ring::PayloadSource`]): `args` formatted a second time straight into
/// the record's words, cut as [`measure`] said (a `Display` impl that formats differently the second
/// time is cut or padded with spaces to the measured length: the record's size is fixed by then).
pub(crate) struct Formatted<'a> {
    pub(crate) args: fmt::Arguments<'a>,
    pub(crate) m: Measure,
}

/// Passes at most `left` bytes on to the packer.
struct Limited<'p, 'w> {
    packer: &'p mut crate::ring::WordPacker<'w>,
    left: usize,
}

impl fmt::Write for Limited<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.left);
        self.packer.push(&s.as_bytes()[..n]);
        self.left -= n;
        Ok(())
    }
}

impl crate::ring::PayloadSource for Formatted<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.m.len
    }

    fn store(self, body: &[crate::sync::AtomicUsize], mut half: impl FnMut() -> bool) -> bool {
        if !half() {
            return false;
        }
        let mut packer = crate::ring::WordPacker::new(body);
        let mut w = Limited {
            packer: &mut packer,
            left: self.m.keep,
        };
        let _ = fmt::Write::write_fmt(&mut w, self.args);
        let short = w.left;
        for _ in 0..short {
            packer.push(b" ");
        }
        if self.m.flags & crate::record::flags::TRUNCATED != 0 {
            packer.push(TRUNCATION_MARKER.as_bytes());
        }
        packer.finish();
        true
    }
}
