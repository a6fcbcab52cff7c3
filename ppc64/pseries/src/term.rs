//! Output to the hypervisor's virtual terminal (`H_PUT_TERM_CHAR`), shared by the kernel's console
//! and the capture stage: no lock and no allocation, so any context may write (serialising lines is
//! the caller's business; see `console`).

use core::fmt;

use crate::hcall;

/// Writes `bytes` to terminal `term`, 16 at a time, retrying each piece (at most 1000 times) while
/// the hypervisor says busy.
pub fn write_bytes(term: u64, bytes: &[u8]) {
    for chunk in bytes.chunks(16) {
        let mut tries = 0;
        while hcall::put_term_chars(term, chunk) != hcall::H_SUCCESS && tries < 1000 {
            tries += 1;
            core::hint::spin_loop();
        }
    }
}

/// A line-buffered [`fmt::Write`] to terminal `term`: its `N`-byte buffer goes out when it is full,
/// at every newline, and on [`flush`](Self::flush).
#[derive(Debug)]
pub struct LineWriter<const N: usize> {
    term: u64,
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> LineWriter<N> {
    /// An empty buffer for terminal `term`.
    pub const fn new(term: u64) -> Self {
        LineWriter {
            term,
            buf: [0; N],
            len: 0,
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        write_bytes(self.term, &self.buf[..self.len]);
        self.len = 0;
    }
}

impl<const N: usize> fmt::Write for LineWriter<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == N {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}
