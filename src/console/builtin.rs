//! The consoles the crate ships: [`MemConsole`], a fixed in-memory buffer (tests, a RAM console),
//! and, with `std`, [`StderrConsole`].
//!
//! Contract: both only write while their [`WriteContext`] still owns the console (they check
//! [`WriteContext::lost`] first) and write a record in one step, so a record is never cut by a
//! handover inside them.

use core::fmt;

use super::context::WriteContext;
use super::emit::Console;
use crate::sync::{array_of, const_or_loom_fn, AtomicU8, AtomicUsize, Ordering};

/// A console writing into a fixed in-memory buffer (tests, or a RAM console a debugger or the
/// next boot reads). Fills up, then counts the bytes it had to drop.
///
/// ```
/// use nmilog::console::{Console, ConsoleState, MemConsole, Priority, Wait};
/// static MEM: MemConsole<8> = MemConsole::new();
/// let st = ConsoleState::new();
/// let mut ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
/// assert!(MEM.write_atomic(&mut ctx, b"0123456789"));
/// assert_eq!(MEM.contents(), "01234567");
/// assert_eq!(MEM.overflowed(), 2);
/// ```
pub struct MemConsole<const N: usize> {
    buf: [AtomicU8; N],
    len: AtomicUsize,
    overflow: AtomicUsize,
    writes: AtomicUsize,
    fail_after: AtomicUsize,
}

/// Shows the fill level and the counters (not the contents).
///
/// ```
/// use nmilog::console::MemConsole;
/// let m: MemConsole<16> = MemConsole::new();
/// assert_eq!(format!("{m:?}"), "MemConsole { capacity: 16, len: 0, overflowed: 0, writes: 0 }");
/// ```
impl<const N: usize> fmt::Debug for MemConsole<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemConsole")
            .field("capacity", &N)
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("overflowed", &self.overflowed())
            .field("writes", &self.writes())
            .finish()
    }
}

impl<const N: usize> Default for MemConsole<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> MemConsole<N> {
    const_or_loom_fn! {
        /// An empty console.
        ///
        /// ```
        /// use nmilog::console::MemConsole;
        /// static RAMCON: MemConsole<4096> = MemConsole::new();
        /// assert_eq!((RAMCON.writes(), RAMCON.overflowed()), (0, 0));
        /// ```
        pub fn new() -> Self {
            MemConsole {
                buf: array_of!(AtomicU8::new(0); N),
                len: AtomicUsize::new(0),
                overflow: AtomicUsize::new(0),
                writes: AtomicUsize::new(0),
                fail_after: AtomicUsize::new(usize::MAX),
            }
        }
    }

    /// Copies the contents into `out`; returns the number of bytes copied.
    ///
    /// ```
    /// # use nmilog::console::MemConsole;
    /// let m: MemConsole<4> = MemConsole::new();
    /// let mut out = [0u8; 4];
    /// assert_eq!(m.copy_to(&mut out), 0);
    /// ```
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        // LMM(memcon:B): pairs with LMM(memcon:A) in `write_atomic`: the bytes below `len` are the
        // ones the writer stored before publishing it.
        let n = self.len.load(Ordering::Acquire).min(N).min(out.len());
        for (o, b) in out.iter_mut().zip(&self.buf[..n]) {
            *o = b.load(Ordering::Relaxed);
        }
        n
    }

    /// The contents as text (lossy UTF-8).
    ///
    /// ```
    /// use nmilog::console::{Console, ConsoleState, MemConsole, Priority, Wait};
    /// let mem: MemConsole<64> = MemConsole::new();
    /// let st = ConsoleState::new();
    /// let mut ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(mem.write_atomic(&mut ctx, b"[    0.000001] hi\n"));
    /// assert_eq!(mem.contents(), "[    0.000001] hi\n");
    /// ```
    #[cfg(feature = "std")]
    pub fn contents(&self) -> std::string::String {
        let mut v = std::vec![0u8; N];
        let n = self.copy_to(&mut v);
        std::string::String::from_utf8_lossy(&v[..n]).into_owned()
    }

    /// Bytes dropped because the buffer was full.
    ///
    /// ```
    /// use nmilog::console::{Console, ConsoleState, MemConsole, Priority, Wait};
    /// let mem: MemConsole<4> = MemConsole::new();
    /// let st = ConsoleState::new();
    /// let mut ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(mem.write_atomic(&mut ctx, b"abcdef"));
    /// assert_eq!(mem.overflowed(), 2);
    /// ```
    pub fn overflowed(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed) as u64
    }

    /// Successful `write_atomic` calls so far.
    ///
    /// ```
    /// use nmilog::console::{Console, ConsoleState, MemConsole, Priority, Wait};
    /// let mem: MemConsole<64> = MemConsole::new();
    /// let st = ConsoleState::new();
    /// let mut ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// mem.write_atomic(&mut ctx, b"one\n");
    /// mem.write_atomic(&mut ctx, b"two\n");
    /// assert_eq!(mem.writes(), 2);
    /// ```
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed) as u64
    }

    /// Empties the buffer and the counters (no owner may be writing).
    ///
    /// ```
    /// use nmilog::console::{Console, ConsoleState, MemConsole, Priority, Wait};
    /// let mem: MemConsole<4> = MemConsole::new();
    /// let st = ConsoleState::new();
    /// let mut ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// mem.write_atomic(&mut ctx, b"overflow");
    /// drop(ctx);
    /// mem.clear();
    /// assert_eq!((mem.copy_to(&mut [0; 4]), mem.writes(), mem.overflowed()), (0, 0, 0));
    /// ```
    pub fn clear(&self) {
        // Release pairs with nothing (stronger than needed): a reader that sees 0 copies nothing,
        // and the next write is ordered by the console ownership (no owner may be writing now).
        self.len.store(0, Ordering::Release);
        self.overflow.store(0, Ordering::Relaxed);
        self.writes.store(0, Ordering::Relaxed);
    }

    /// Test knob: after `n` more successful writes, `write_atomic` fails (returns `false`) until
    /// reset with `usize::MAX`.
    ///
    /// ```
    /// use nmilog::console::{Console, ConsoleState, MemConsole, Priority, Wait};
    /// let mem: MemConsole<64> = MemConsole::new();
    /// let st = ConsoleState::new();
    /// let mut ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// mem.fail_after(1);
    /// assert!(mem.write_atomic(&mut ctx, b"a"));
    /// assert!(!mem.write_atomic(&mut ctx, b"b")); // a device error: the emitter retries later
    /// mem.fail_after(usize::MAX);
    /// assert!(mem.write_atomic(&mut ctx, b"c"));
    /// assert_eq!(mem.contents(), "ac");
    /// ```
    pub fn fail_after(&self, n: usize) {
        self.fail_after.store(n, Ordering::Relaxed);
    }
}

impl<const N: usize> Console for MemConsole<N> {
    fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool {
        let f = self.fail_after.load(Ordering::Relaxed);
        if f == 0 {
            return false;
        }
        if f != usize::MAX {
            self.fail_after.store(f - 1, Ordering::Relaxed);
        }
        if ctx.lost() {
            return false;
        }
        // Only the owner writes: plain load + store of `len`.
        let len = self.len.load(Ordering::Relaxed);
        let room = N.saturating_sub(len);
        let n = text.len().min(room);
        for (i, b) in text[..n].iter().enumerate() {
            self.buf[len + i].store(*b, Ordering::Relaxed);
        }
        // LMM(memcon:A): pairs with LMM(memcon:B) in `copy_to`: a reader that sees the new length
        // sees the bytes stored above.
        self.len.store(len + n, Ordering::Release);
        if n < text.len() {
            let o = self.overflow.load(Ordering::Relaxed);
            self.overflow.store(o + (text.len() - n), Ordering::Relaxed);
        }
        let w = self.writes.load(Ordering::Relaxed);
        self.writes.store(w + 1, Ordering::Relaxed);
        true
    }
}

/// The host console: standard error (feature `std`). Uses `std`'s stderr lock, so it belongs to
/// normal context only — which is the only place the emitter calls it.
///
/// ```
/// use nmilog::console::{Consoles, StderrConsole};
/// static STDERR: StderrConsole = StderrConsole;
/// static CONSOLES: Consoles<1> = Consoles::new([&STDERR]);
/// ```
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, Default)]
pub struct StderrConsole;

#[cfg(feature = "std")]
impl Console for StderrConsole {
    fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool {
        use std::io::Write;
        if ctx.lost() {
            return false;
        }
        let mut e = std::io::stderr().lock();
        e.write_all(text).is_ok()
    }
}
