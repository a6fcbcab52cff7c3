//! The owner's side of the console ownership protocol: [`WriteContext`], handed to
//! [`Console::write_atomic`](super::Console::write_atomic).
//!
//! Contract: an owner touches the device only between [`WriteContext::enter_unsafe`] and
//! [`WriteContext::exit_unsafe`] (both return `false` when it must stop); at either boundary it
//! hands the console to a waiting higher priority. Once it has lost the console (handed over, taken
//! directly between records, or taken over by the panic path) every check returns `false` for good.
//! Dropping the context releases the console, leaving a pending request for its waiter.

use core::fmt;

use super::state::{
    ConsoleState, Priority, StateView, CPU_SHIFT, REQ_MASK, REQ_SHIFT, UNSAFE, UNSAFE_TAKEOVER,
};
use crate::sync::Ordering;

/// Ownership of a console, handed to [`Console::write_atomic`](super::Console::write_atomic); releases the console when dropped
/// (leaving a pending handover request in place, so the waiter takes it).
///
/// An owner that lost the console (a higher priority took it directly while this owner was
/// outside an unsafe section, or a panic takeover) must not touch the device again: every method
/// that could let it do so returns `false`.
///
/// ```
/// use nmilog::console::{ConsoleState, Priority, Wait};
/// let st = ConsoleState::new();
/// let mut ctx = st.try_acquire(0, Priority::Emergency, &Wait::none()).unwrap();
/// assert_eq!(ctx.priority(), Priority::Emergency);
/// assert!(ctx.can_proceed());
/// ```
pub struct WriteContext<'a> {
    state: &'a ConsoleState,
    /// The word this owner last stored (prio, cpu, flags; req bits clear).
    mine: usize,
    lost: bool,
}

impl<'a> WriteContext<'a> {
    pub(super) fn new(state: &'a ConsoleState, mine: usize) -> Self {
        WriteContext {
            state,
            mine: mine & !REQ_MASK,
            lost: false,
        }
    }

    /// This owner's priority.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let ctx = st.try_acquire(0, Priority::Panic, &Wait::none()).unwrap();
    /// assert_eq!(ctx.priority(), Priority::Panic);
    /// ```
    pub fn priority(&self) -> Priority {
        StateView::decode(self.mine).prio
    }

    /// This owner's CPU.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let ctx = st.try_acquire(3, Priority::Normal, &Wait::none()).unwrap();
    /// assert_eq!(ctx.cpu(), 3);
    /// ```
    pub fn cpu(&self) -> usize {
        self.mine >> CPU_SHIFT
    }

    /// Whether the console was taken over unsafely at some point (a driver may want to reset the
    /// device before writing).
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// // SAFETY: this doc example is single-threaded: no other CPU can be inside `st`.
    /// drop(unsafe { st.panic_takeover(0) });
    /// // The mark sticks: a later panic-priority owner is told to reset the device first.
    /// let ctx = st.try_acquire(0, Priority::Panic, &Wait::none()).unwrap();
    /// assert!(ctx.after_unsafe_takeover());
    /// ```
    pub fn after_unsafe_takeover(&self) -> bool {
        self.mine & UNSAFE_TAKEOVER != 0
    }

    /// Whether this context no longer owns the console.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let low = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(!low.lost());
    /// let _oops = st.try_acquire(1, Priority::Emergency, &Wait::none()).unwrap();
    /// assert!(low.lost()); // must not touch the device again
    /// ```
    pub fn lost(&self) -> bool {
        if self.lost {
            return true;
        }
        // LMM(console:C) (see `cas_word` in `state.rs`): pairs with LMM(console:B)/LMM(console:D).
        let cur = self.state.word.load(Ordering::Acquire);
        cur & !REQ_MASK != self.mine
    }

    /// Whether a higher priority waits for this console.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(!ctx.handover_requested());
    /// ```
    pub fn handover_requested(&self) -> bool {
        let v = self.state.view();
        v.req_prio > self.priority()
    }

    /// Hands the console to a waiter if one has a higher priority and this owner is outside an
    /// unsafe section; returns whether this context may go on writing.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let mut low = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(low.can_proceed());
    /// // Between two records an emergency on another CPU takes the console.
    /// let _oops = st.try_acquire(1, Priority::Emergency, &Wait::none()).unwrap();
    /// assert!(!low.can_proceed());
    /// ```
    pub fn can_proceed(&mut self) -> bool {
        if self.lost() {
            self.lost = true;
            return false;
        }
        if self.mine & UNSAFE == 0 && self.handover_requested() {
            self.release();
            return false;
        }
        true
    }

    /// Enters an unsafe section (no direct takeover until [`exit_unsafe`](Self::exit_unsafe));
    /// hands over instead, and returns `false`, if a higher priority waits. `false` also when the
    /// console was lost: stop touching the device.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let mut ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(ctx.enter_unsafe());
    /// // Mid-register-sequence: nobody takes the console directly, an emergency can only wait.
    /// assert!(st.try_acquire(1, Priority::Emergency, &Wait::none()).is_err());
    /// assert!(ctx.exit_unsafe());
    /// ```
    pub fn enter_unsafe(&mut self) -> bool {
        self.update_unsafe(true)
    }

    /// Leaves the unsafe section; then hands over if a higher priority waits (returns `false`).
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let mut ctx = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(ctx.enter_unsafe());
    /// assert!(ctx.exit_unsafe());
    /// assert!(!st.view().unsafe_section);
    /// ```
    pub fn exit_unsafe(&mut self) -> bool {
        self.update_unsafe(false)
    }

    fn update_unsafe(&mut self, on: bool) -> bool {
        if self.lost {
            return false;
        }
        // Bounded: a CAS fails only when the word changed (a request arrived, or we lost it).
        for _ in 0..4 {
            // LMM(console:C), as in `lost`.
            let cur = self.state.word.load(Ordering::Acquire);
            if cur & !REQ_MASK != self.mine {
                self.lost = true;
                return false;
            }
            let req = cur & REQ_MASK;
            let waiting = Priority::from_bits(req >> REQ_SHIFT) > self.priority();
            if waiting && (on || self.mine & UNSAFE_TAKEOVER == 0) {
                // Hand over between records. (After an unsafe takeover the unsafe bit is sticky and
                // only the panic owner is left; it never hands over.) LMM(console:B): this owner's
                // last change, read by the waiter's LMM(console:A).
                if self
                    .state
                    .cas(cur, req | (self.mine & UNSAFE_TAKEOVER))
                    .is_ok()
                {
                    self.lost = true;
                    return false;
                }
                continue;
            }
            // After an unsafe takeover the section never really closes (Linux keeps `unsafe` set).
            let sticky = self.mine & UNSAFE_TAKEOVER != 0;
            let mine = if on || sticky {
                self.mine | UNSAFE
            } else {
                self.mine & !UNSAFE
            };
            // LMM(console:B) when leaving the unsafe section (a direct takeover between records
            // reads it with LMM(console:A)); entering it, the Acquire half re-confirms ownership.
            if self.state.cas(cur, mine | req).is_ok() {
                self.mine = mine;
                return true;
            }
        }
        // The word kept changing: treat as lost (the caller stops; records stay in the log).
        self.lost = true;
        false
    }

    fn release(&mut self) {
        if self.lost {
            return;
        }
        self.lost = true;
        for _ in 0..4 {
            // LMM(console:C), as in `lost`.
            let cur = self.state.word.load(Ordering::Acquire);
            if cur & !REQ_MASK != self.mine {
                return;
            }
            // Free, keeping a pending request (the waiter takes it) and the takeover mark:
            // LMM(console:B), read by the next owner's LMM(console:A).
            let new = (cur & REQ_MASK) | (self.mine & UNSAFE_TAKEOVER);
            if self.state.cas(cur, new).is_ok() {
                return;
            }
        }
    }
}

/// Shows this owner's view: its priority and CPU, whether it is inside an unsafe section, and
/// whether it already knows it lost the console.
///
/// ```
/// use nmilog::console::{ConsoleState, Priority, Wait};
/// let st = ConsoleState::new();
/// let ctx = st.try_acquire(1, Priority::Normal, &Wait::none()).unwrap();
/// assert_eq!(
///     format!("{ctx:?}"),
///     "WriteContext { prio: Normal, cpu: 1, unsafe_section: false, lost: false }"
/// );
/// ```
impl fmt::Debug for WriteContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteContext")
            .field("prio", &self.priority())
            .field("cpu", &self.cpu())
            .field("unsafe_section", &(self.mine & UNSAFE != 0))
            .field("lost", &self.lost)
            .finish()
    }
}

impl Drop for WriteContext<'_> {
    fn drop(&mut self) {
        self.release();
    }
}
