//! The console ownership word (Linux's `nbcon_state`): priorities, how a context acquires the
//! console — directly, or by requesting a handover and waiting a bounded time — and the panic
//! takeover.
//!
//! Contract: at most one context owns a console at a time, except after
//! [`ConsoleState::panic_takeover`], whose caller asserts that every other CPU is stopped for good.
//! Acquisition never waits for an owner of equal or higher priority, nor for one on the same CPU,
//! and every wait is bounded by a [`Wait`]. The owner's side of the protocol is in `context`.

use core::fmt;

use super::context::WriteContext;
use crate::sync::{const_or_loom_fn, spin_loop, AtomicUsize, Ordering};

/// A console priority (Linux's `enum nbcon_prio`).
///
/// ```
/// use nmilog::console::Priority;
/// assert!(Priority::Normal < Priority::Emergency && Priority::Emergency < Priority::Panic);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Priority {
    /// Not owned / no request.
    None = 0,
    /// Ordinary printing.
    Normal = 1,
    /// Warnings and oopses that must be printed now.
    Emergency = 2,
    /// The final flush of a panic or crash.
    Panic = 3,
}

impl Priority {
    pub(super) const fn from_bits(v: usize) -> Priority {
        match v & 3 {
            0 => Priority::None,
            1 => Priority::Normal,
            2 => Priority::Emergency,
            _ => Priority::Panic,
        }
    }
}

// The word: `prio` (bits 0-1), requested prio (bits 2-3), unsafe (bit 4), unsafe takeover (bit 5),
// owner CPU (bits 8..).
const PRIO_SHIFT: u32 = 0;
pub(super) const REQ_SHIFT: u32 = 2;
/// Both request bits.
pub(super) const REQ_MASK: usize = 3 << REQ_SHIFT;
pub(super) const UNSAFE: usize = 1 << 4;
pub(super) const UNSAFE_TAKEOVER: usize = 1 << 5;
pub(super) const CPU_SHIFT: u32 = 8;

/// A decoded ownership word.
///
/// ```
/// use nmilog::console::{ConsoleState, Priority, Wait};
/// let st = ConsoleState::new();
/// let _ctx = st.try_acquire(3, Priority::Normal, &Wait::none()).unwrap();
/// let v = st.view();
/// assert_eq!((v.prio, v.cpu, v.unsafe_section), (Priority::Normal, 3, false));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateView {
    /// The owner's priority ([`Priority::None`]: free).
    pub prio: Priority,
    /// The priority of a context waiting for a handover ([`Priority::None`]: none).
    pub req_prio: Priority,
    /// The owner is inside an unsafe section (cannot be taken over directly).
    pub unsafe_section: bool,
    /// The console was taken over without consent; only [`Priority::Panic`] may use it now.
    pub unsafe_takeover: bool,
    /// The owner's CPU (meaningless when free).
    pub cpu: usize,
}

impl StateView {
    pub(super) fn decode(w: usize) -> Self {
        StateView {
            prio: Priority::from_bits(w >> PRIO_SHIFT),
            req_prio: Priority::from_bits(w >> REQ_SHIFT),
            unsafe_section: w & UNSAFE != 0,
            unsafe_takeover: w & UNSAFE_TAKEOVER != 0,
            cpu: w >> CPU_SHIFT,
        }
    }
}

const fn owned_word(prio: Priority, cpu: usize, flags: usize) -> usize {
    ((prio as usize) << PRIO_SHIFT) | (cpu << CPU_SHIFT) | flags
}

/// Why [`ConsoleState::try_acquire`] failed.
///
/// ```
/// use nmilog::console::{AcquireError, ConsoleState, Priority, Wait};
/// let st = ConsoleState::new();
/// let owner = st.try_acquire(0, Priority::Emergency, &Wait::none()).unwrap();
/// // Equal priority never waits: the caller leaves its records in the log.
/// let err = st.try_acquire(1, Priority::Emergency, &Wait::spins(1000)).err();
/// assert_eq!(err, Some(AcquireError::Busy));
/// drop(owner);
/// // SAFETY: this doc example is single-threaded: no other CPU can be inside `st`.
/// drop(unsafe { st.panic_takeover(0) });
/// let err = st.try_acquire(0, Priority::Emergency, &Wait::none()).err();
/// assert_eq!(err, Some(AcquireError::Unsafe)); // only the panic path may use it now
/// assert_eq!(AcquireError::Timeout.to_string(), "console owner did not hand over in time");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireError {
    /// The owner (or a context already waiting) has the same or a higher priority.
    Busy,
    /// The owner did not hand over within the [`Wait`] bound; the request was withdrawn.
    Timeout,
    /// The console was taken over unsafely; only [`Priority::Panic`] may use it.
    Unsafe,
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcquireError::Busy => "console owned or requested at the same or a higher priority",
            AcquireError::Timeout => "console owner did not hand over in time",
            AcquireError::Unsafe => "console was taken over unsafely: panic priority only",
        })
    }
}

impl core::error::Error for AcquireError {}

/// How long [`ConsoleState::try_acquire`] may wait for a handover: at most `max_spins` polls, and,
/// with a clock, not past `deadline_ns`. Always bounded.
///
/// ```
/// use nmilog::console::Wait;
/// fn clock() -> u64 { 0 }
/// let w = Wait::spins(1000).with_deadline(&clock, 1_000_000);
/// assert_eq!(w.max_spins, 1000);
/// ```
#[derive(Clone, Copy)]
pub struct Wait<'a> {
    /// Polls of the ownership word before giving up.
    pub max_spins: u32,
    /// A clock (nanoseconds) and the instant to give up at.
    pub deadline: Option<(&'a dyn Fn() -> u64, u64)>,
}

/// Shows the spin bound and the deadline (the clock is a closure).
///
/// ```
/// use nmilog::console::Wait;
/// fn clock() -> u64 { 0 }
/// assert_eq!(format!("{:?}", Wait::spins(3)), "Wait { max_spins: 3, deadline_ns: None }");
/// let w = Wait::none().with_deadline(&clock, 9);
/// assert_eq!(format!("{w:?}"), "Wait { max_spins: 0, deadline_ns: Some(9) }");
/// ```
impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("max_spins", &self.max_spins)
            .field("deadline_ns", &self.deadline.map(|(_, d)| d))
            .finish()
    }
}

impl<'a> Wait<'a> {
    /// Do not wait: acquire directly or fail.
    ///
    /// ```
    /// assert_eq!(nmilog::console::Wait::none().max_spins, 0);
    /// ```
    pub const fn none() -> Self {
        Wait {
            max_spins: 0,
            deadline: None,
        }
    }

    /// Poll at most `n` times.
    ///
    /// ```
    /// assert_eq!(nmilog::console::Wait::spins(5).max_spins, 5);
    /// ```
    pub const fn spins(n: u32) -> Self {
        Wait {
            max_spins: n,
            deadline: None,
        }
    }

    /// Also give up once `now()` reaches `deadline_ns`.
    ///
    /// ```
    /// fn now() -> u64 { 10 }
    /// let w = nmilog::console::Wait::spins(u32::MAX).with_deadline(&now, 5);
    /// assert!(w.deadline.is_some());
    /// ```
    pub fn with_deadline(self, now: &'a dyn Fn() -> u64, deadline_ns: u64) -> Self {
        Wait {
            max_spins: self.max_spins,
            deadline: Some((now, deadline_ns)),
        }
    }

    fn expired(&self, spins: u32) -> bool {
        if spins >= self.max_spins {
            return true;
        }
        match self.deadline {
            Some((now, d)) => now() >= d,
            None => false,
        }
    }
}

/// A console's ownership word (Linux's `nbcon_state`), shared by all CPUs.
///
/// ```
/// use nmilog::console::{AcquireError, ConsoleState, Priority, Wait};
/// let st = ConsoleState::new();
/// let mut owner = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
/// assert!(owner.enter_unsafe());
/// // Another CPU at the same priority cannot take it; an emergency one waits, then times out.
/// assert_eq!(st.try_acquire(1, Priority::Normal, &Wait::none()).err(), Some(AcquireError::Busy));
/// assert_eq!(st.try_acquire(1, Priority::Emergency, &Wait::spins(10)).err(), Some(AcquireError::Timeout));
/// assert!(owner.exit_unsafe());
/// drop(owner);
/// assert_eq!(st.view().prio, Priority::None);
/// ```
pub struct ConsoleState {
    pub(super) word: AtomicUsize,
}

/// Shows the decoded word.
///
/// ```
/// use nmilog::console::ConsoleState;
/// let st = ConsoleState::new();
/// assert!(format!("{st:?}").starts_with("ConsoleState { prio: None, req_prio: None,"));
/// ```
impl fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.view();
        f.debug_struct("ConsoleState")
            .field("prio", &v.prio)
            .field("req_prio", &v.req_prio)
            .field("unsafe_section", &v.unsafe_section)
            .field("unsafe_takeover", &v.unsafe_takeover)
            .field("cpu", &v.cpu)
            .finish()
    }
}

impl Default for ConsoleState {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleState {
    const_or_loom_fn! {
        /// A free console.
        ///
        /// ```
        /// use nmilog::console::{ConsoleState, Priority};
        /// static UART_STATE: ConsoleState = ConsoleState::new();
        /// assert_eq!(UART_STATE.view().prio, Priority::None);
        /// ```
        pub fn new() -> Self {
            ConsoleState {
                word: AtomicUsize::new(0),
            }
        }
    }

    /// The current ownership word, decoded.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let mut ctx = st.try_acquire(2, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(ctx.enter_unsafe());
    /// let v = st.view();
    /// assert_eq!((v.prio, v.cpu, v.unsafe_section), (Priority::Normal, 2, true));
    /// drop(ctx);
    /// assert_eq!(st.view().prio, Priority::None);
    /// ```
    pub fn view(&self) -> StateView {
        // LMM(console:C): see `cas_word`.
        StateView::decode(self.word.load(Ordering::Acquire))
    }

    #[inline]
    pub(super) fn cas(&self, old: usize, new: usize) -> Result<(), usize> {
        cas_word(&self.word, old, new)
    }

    /// One attempt at taking the console directly: free (and nobody of equal or higher priority
    /// waiting), or owned by a lower priority outside an unsafe section.
    fn try_direct(&self, cur: usize, cpu: usize, prio: Priority) -> Result<usize, Option<usize>> {
        let v = StateView::decode(cur);
        if prio <= v.prio || prio <= v.req_prio || v.unsafe_section {
            return Err(None);
        }
        let keep = cur & UNSAFE_TAKEOVER;
        let new = owned_word(prio, cpu, keep);
        // LMM(console:A): the compare-exchange that makes this context the owner.
        self.cas(cur, new).map(|_| new).map_err(Some)
    }

    /// One compare-exchange of the word from `cur` to owned by `cpu` at `prio` (the unsafe-takeover
    /// mark kept): the new owner's context if it succeeded.
    fn take(&self, cur: usize, cpu: usize, prio: Priority) -> Option<WriteContext<'_>> {
        let new = owned_word(prio, cpu, cur & UNSAFE_TAKEOVER);
        self.cas(cur, new)
            .ok()
            .map(|()| WriteContext::new(self, new))
    }

    /// Acquires the console for `cpu` at `prio`.
    ///
    /// Direct acquisition when the console is free or its owner has a lower priority and is not in
    /// an unsafe section (that owner notices the loss at its next check, before touching the
    /// console again). Otherwise, if the owner has a lower priority, a handover is requested and
    /// the caller polls the word up to the [`Wait`] bound; the owner hands over when it leaves its
    /// unsafe section. On timeout the request is withdrawn. Never waits for an owner of equal or
    /// higher priority, nor for an owner on the same CPU (the context this one interrupted, which
    /// cannot run before it returns): [`AcquireError::Busy`].
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let low = st.try_acquire(0, Priority::Normal, &Wait::none()).unwrap();
    /// // `low` is between records (not in an unsafe section): an emergency takes it at once.
    /// let high = st.try_acquire(1, Priority::Emergency, &Wait::none()).unwrap();
    /// assert!(low.lost());
    /// assert_eq!(high.cpu(), 1);
    /// ```
    pub fn try_acquire(
        &self,
        cpu: usize,
        prio: Priority,
        wait: &Wait<'_>,
    ) -> Result<WriteContext<'_>, AcquireError> {
        if prio == Priority::None {
            return Err(AcquireError::Busy);
        }
        // LMM(console:C) here and in the polls below (see `cas_word`); every path to ownership goes
        // through a LMM(console:A) compare-exchange.
        let mut cur = self.word.load(Ordering::Acquire);
        // Failed request compare-exchanges (the word changed between our read and the request:
        // the owner entered or left an unsafe section, released, or a request came or went). Like
        // Linux's -EAGAIN from nbcon_context_try_acquire_handover, start again from the direct
        // attempt with the word we saw; each failure counts against the wait bound.
        let mut spins = 0u32;
        loop {
            // A direct attempt may lose a race with another CPU changing the word; retry a bounded
            // number of times (each failure means the word changed, not that anyone waits on us).
            for _ in 0..4 {
                let v = StateView::decode(cur);
                if v.unsafe_takeover && prio != Priority::Panic {
                    return Err(AcquireError::Unsafe);
                }
                match self.try_direct(cur, cpu, prio) {
                    Ok(w) => return Ok(WriteContext::new(self, w)),
                    Err(Some(now)) => cur = now,
                    Err(None) => break,
                }
            }
            let v = StateView::decode(cur);
            if v.prio != Priority::None && v.cpu == cpu {
                // The owner is the context this one interrupted on the same CPU: it cannot run
                // until we return, so waiting for it would only burn the whole bound.
                return Err(AcquireError::Busy);
            }
            if prio <= v.prio || prio <= v.req_prio || wait.max_spins == 0 {
                return Err(
                    if wait.max_spins == 0 && prio > v.prio && prio > v.req_prio {
                        AcquireError::Timeout
                    } else {
                        AcquireError::Busy
                    },
                );
            }
            // Request a handover: set req_prio (only if nobody of equal or higher priority waits).
            let req_bits = (prio as usize) << REQ_SHIFT;
            let with_req = (cur & !REQ_MASK) | req_bits;
            match self.cas(cur, with_req) {
                Ok(()) => break,
                Err(now) => {
                    if wait.expired(spins) {
                        return Err(AcquireError::Timeout); // no request of ours is left
                    }
                    spins += 1;
                    cur = now;
                }
            }
        }
        loop {
            // LMM(console:C), as above.
            let cur = self.word.load(Ordering::Acquire);
            let v = StateView::decode(cur);
            if v.req_prio != prio {
                // A higher priority replaced our request (or a panic takeover cleared it).
                return Err(AcquireError::Busy);
            }
            // Handed over to us (the previous owner released with our request still set,
            // LMM(console:B)), or a lower-priority owner between records: LMM(console:A) on the
            // compare-exchange that takes it.
            if v.prio == Priority::None || (!v.unsafe_section && v.prio < prio) {
                if let Some(ctx) = self.take(cur, cpu, prio) {
                    return Ok(ctx);
                }
            }
            if wait.expired(spins) {
                break;
            }
            spins += 1;
            spin_loop();
        }
        // Withdraw the request. Bounded: each failed attempt means the word changed, and the owner
        // may have just handed over to us.
        for _ in 0..4 {
            // LMM(console:C), as above.
            let cur = self.word.load(Ordering::Acquire);
            let v = StateView::decode(cur);
            if v.req_prio != prio {
                return Err(AcquireError::Timeout);
            }
            if v.prio == Priority::None {
                if let Some(ctx) = self.take(cur, cpu, prio) {
                    return Ok(ctx);
                }
                continue;
            }
            if self.cas(cur, cur & !REQ_MASK).is_ok() {
                return Err(AcquireError::Timeout);
            }
        }
        Err(AcquireError::Timeout)
    }

    /// The panic path's hostile takeover: makes `cpu` the owner at [`Priority::Panic`] whatever the
    /// state, and marks the console as taken over unsafely, for good. A plain store: no CAS, no
    /// waiting.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority, Wait};
    /// let st = ConsoleState::new();
    /// let mut stuck = st.try_acquire(1, Priority::Normal, &Wait::none()).unwrap();
    /// assert!(stuck.enter_unsafe()); // CPU 1 is "stopped" here, mid-write
    /// std::mem::forget(stuck);
    /// // SAFETY (doc example): CPU 1 never runs again.
    /// let p = unsafe { st.panic_takeover(0) };
    /// assert!(p.after_unsafe_takeover());
    /// assert!(st.view().unsafe_takeover);
    /// ```
    ///
    /// # Safety
    ///
    /// Every other CPU that may touch this console (or the [`Consoles`](super::Consoles) emitter state it guards)
    /// must be stopped for good: the previous owner may be stopped in the middle of an unsafe
    /// section, and must never resume it.
    pub unsafe fn panic_takeover(&self, cpu: usize) -> WriteContext<'_> {
        let w = owned_word(Priority::Panic, cpu, UNSAFE_TAKEOVER);
        // LMM(console:D): Release, pairs with LMM(console:A)/LMM(console:C): a later owner or
        // observer of the word sees what the panic CPU did before taking the console. The stopped
        // previous owner's writes are ordered by the stop handshake (LMM(checkin:A/B)), not by
        // this store.
        self.word.store(w, Ordering::Release);
        WriteContext::new(self, w)
    }
}

/// Every ownership change. LMM(console:A) is its Acquire half in the context that becomes the
/// owner; LMM(console:B) is its Release half in the owner's last change (release, handover,
/// `exit_unsafe`); they pair: what an owner wrote to the device and to the emitter's cursor inside
/// its unsafe sections happens before the next owner's first access. The failure's Acquire, like
/// the plain loads of the word — LMM(console:C) — pairs with LMM(console:B)/LMM(console:D) but only
/// feeds a decision that a LMM(console:A) compare-exchange confirms before any device or cursor
/// access, so it is stronger than needed (kept: `view` is public and cheap to keep ordered).
#[inline]
fn cas_word(a: &AtomicUsize, old: usize, new: usize) -> Result<(), usize> {
    #[cfg(nmilog_cas)]
    {
        a.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }
    #[cfg(not(nmilog_cas))]
    {
        // Without CAS there is no arbitration between CPUs; such targets are single-core in
        // practice (thumbv6m), where only interrupt nesting races, and consoles are only driven
        // from normal context there. Load and compare, then store: LMM(console:A) on the load,
        // LMM(console:B) on the store.
        let v = a.load(Ordering::Acquire);
        if v != old {
            return Err(v);
        }
        a.store(new, Ordering::Release);
        Ok(())
    }
}
