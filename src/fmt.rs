//! Formatting into a fixed stack buffer, cutting at the end with an explicit marker.
//!
//! ```
//! use core::fmt::Write;
//! use nmilog::{fmt::LineBuf, LINE_MAX, TRUNCATION_MARKER};
//! let mut line: LineBuf<LINE_MAX> = LineBuf::new();
//! // Never an error, even when the text does not fit: it is cut and marked instead.
//! write!(line, "cpu{}: {:x>400}", 3, "").unwrap();
//! assert!(line.truncated());
//! let text = core::str::from_utf8(line.finish()).unwrap();
//! assert_eq!(text.len(), LINE_MAX);
//! assert!(text.starts_with("cpu3: xxx") && text.ends_with(TRUNCATION_MARKER));
//! ```

use core::fmt;

/// Size of the per-call formatting buffer, in bytes (the longest formatted record). Longer text is
/// cut at a character boundary, ends with [`TRUNCATION_MARKER`] and carries
/// [`crate::record::flags::TRUNCATED`].
///
/// ```
/// // Long enough for a full console line, and a formatted line always fits in one record.
/// assert!(nmilog::LINE_MAX >= 80);
/// assert!(nmilog::LINE_MAX <= nmilog::MAX_PAYLOAD);
/// ```
pub const LINE_MAX: usize = 256;

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
