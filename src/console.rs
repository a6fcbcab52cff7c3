//! Consoles: output devices fed from the main log, with an ownership protocol modelled on Linux's
//! nbcon consoles, so that console output follows the same never-spin rules as the log.
//!
//! # Model
//!
//! * A [`Console`] writes one formatted record at a time ([`Console::write_atomic`]).
//! * Each console has an ownership word, [`ConsoleState`], shared by all CPUs: one `AtomicUsize`
//!   holding `{prio, requested prio, unsafe, unsafe takeover, cpu}` (Linux's `struct
//!   nbcon_state`). Priorities are [`Priority::Normal`] < [`Priority::Emergency`] <
//!   [`Priority::Panic`].
//! * A context acquires the console ([`ConsoleState::try_acquire`]) directly if it is free, or if
//!   its owner has a lower priority and is not inside an *unsafe section* (a span in which the
//!   hardware or the emitter's cursor is half-updated; the emitter keeps each record's write and
//!   cursor update in one). Otherwise a higher-priority context *requests a handover* and waits a
//!   bounded time ([`Wait`]: a spin count and, optionally, a deadline on the platform clock); the
//!   owner sees the request when it leaves its unsafe section — between two records — and hands
//!   the console over. On timeout the request is withdrawn and the caller leaves the records in
//!   the log.
//! * Only the panic path may take a console without its owner's consent
//!   ([`ConsoleState::panic_takeover`], `unsafe`: the caller asserts that every other CPU is
//!   stopped), and that marks the console as *taken over unsafely* for good: from then on only
//!   [`Priority::Panic`] may use it (its driver may have been stopped mid-register-sequence).
//! * Nothing here ever spins without bound, and nothing runs in NMI context: an emitter called from
//!   NMI or crash context (other than the panic flush on the crashing CPU) returns at once and the
//!   records stay in the log for the next emitter.
//!
//! # The emitter
//!
//! [`Consoles`] holds a fixed set of consoles, each with its own [`MainReader`] cursor into the main
//! log, and prints what they have not printed yet:
//!
//! * [`Consoles::emit_pending`] in normal context (after [`Log::flush`](crate::Log::flush), e.g.
//!   from the code that logs, a kernel thread or the idle loop): acquires each console at
//!   [`Priority::Normal`] without waiting, and prints up to one main log's worth of records;
//! * [`Consoles::emit_emergency`]: the same at [`Priority::Emergency`], waiting (bounded) for a
//!   normal-priority owner to hand over — for warnings and oopses that must get out now;
//! * [`Consoles::panic_flush`]: on the crashing CPU after [`Log::drain_on_crash`](crate::Log::drain_on_crash),
//!   at [`Priority::Panic`], taking consoles over unsafely if their owner does not hand over.
//!
//! Each record is printed as `[seconds.micros] text\n` (the dmesg console format); records whose
//! level is not below [`Log::console_loglevel`](crate::Log::console_loglevel) and raw records
//! ([`flags::RAW`], e.g. defmt frames) are skipped (and counted). A record is only marked printed
//! once `write_atomic` returned `true`, so a record cut by a handover is printed again, whole, by
//! the next owner. An emitter call uses about 1.4 KiB of stack (one record buffer and one line) and
//! touches no lock.
//!
//! Where to call it: wherever the kernel can afford console output in normal context — after a
//! burst of log calls, from a console kthread, or as a hook right after the core's normal-context
//! flush. Calling it from inside a console driver (a driver that logs) is harmless: the console is
//! owned by this CPU already, so the nested call finds it busy and returns.
//!
//! ```
//! use nmilog::console::{Consoles, MemConsole};
//! use nmilog::{host::HostPlatform, Log};
//!
//! static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
//! static MEM: MemConsole<4096> = MemConsole::new();
//! static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
//!
//! HostPlatform::register_cpu(0);
//! LOG.log_fmt(nmilog::Level::Info, 0, format_args!("hello {}", "console")).unwrap();
//! CONSOLES.emit_pending(&LOG);
//! assert!(MEM.contents().ends_with("] hello console\n"));
//! ```

use core::cell::UnsafeCell;
use core::fmt::Write as _;

use portable_atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use crate::fmt::{LineBuf, LINE_MAX};
use crate::record::flags;
use crate::ring::{span_words, Read};
use crate::{Log, MainReader, Platform, RecordBuf};

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
    const fn from_bits(v: usize) -> Priority {
        match v & 3 {
            0 => Priority::None,
            1 => Priority::Normal,
            2 => Priority::Emergency,
            _ => Priority::Panic,
        }
    }
}

const PRIO_SHIFT: u32 = 0;
const REQ_SHIFT: u32 = 2;
const UNSAFE: usize = 1 << 4;
const UNSAFE_TAKEOVER: usize = 1 << 5;
const CPU_SHIFT: u32 = 8;

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
    fn decode(w: usize) -> Self {
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
    word: AtomicUsize,
}

impl Default for ConsoleState {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleState {
    /// A free console.
    ///
    /// ```
    /// use nmilog::console::{ConsoleState, Priority};
    /// static UART_STATE: ConsoleState = ConsoleState::new();
    /// assert_eq!(UART_STATE.view().prio, Priority::None);
    /// ```
    pub const fn new() -> Self {
        ConsoleState {
            word: AtomicUsize::new(0),
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
        StateView::decode(self.word.load(Ordering::Acquire))
    }

    #[inline]
    fn cas(&self, old: usize, new: usize) -> Result<(), usize> {
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
        self.cas(cur, new).map(|_| new).map_err(Some)
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
        let mut cur = self.word.load(Ordering::Acquire);
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
            // The owner is the context this one interrupted on the same CPU: it cannot run until
            // we return, so waiting for it would only burn the whole bound.
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
        let with_req = (cur & !(3 << REQ_SHIFT)) | req_bits;
        if self.cas(cur, with_req).is_err() {
            return Err(AcquireError::Busy);
        }
        let mut spins = 0u32;
        loop {
            let cur = self.word.load(Ordering::Acquire);
            let v = StateView::decode(cur);
            if v.req_prio != prio {
                // A higher priority replaced our request (or a panic takeover cleared it).
                return Err(AcquireError::Busy);
            }
            if v.prio == Priority::None {
                // Handed over to us: the previous owner released with our request still set.
                let new = owned_word(prio, cpu, cur & UNSAFE_TAKEOVER);
                if self.cas(cur, new).is_ok() {
                    return Ok(WriteContext::new(self, new));
                }
            } else if !v.unsafe_section && v.prio < prio {
                let new = owned_word(prio, cpu, cur & UNSAFE_TAKEOVER);
                if self.cas(cur, new).is_ok() {
                    return Ok(WriteContext::new(self, new));
                }
            }
            if wait.expired(spins) {
                break;
            }
            spins += 1;
            core::hint::spin_loop();
        }
        // Withdraw the request. Bounded: each failed attempt means the word changed, and the owner
        // may have just handed over to us.
        for _ in 0..4 {
            let cur = self.word.load(Ordering::Acquire);
            let v = StateView::decode(cur);
            if v.req_prio != prio {
                return Err(AcquireError::Timeout);
            }
            if v.prio == Priority::None {
                let new = owned_word(prio, cpu, cur & UNSAFE_TAKEOVER);
                if self.cas(cur, new).is_ok() {
                    return Ok(WriteContext::new(self, new));
                }
                continue;
            }
            if self.cas(cur, cur & !(3 << REQ_SHIFT)).is_ok() {
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
    /// Every other CPU that may touch this console (or the [`Consoles`] emitter state it guards)
    /// must be stopped for good: the previous owner may be stopped in the middle of an unsafe
    /// section, and must never resume it.
    pub unsafe fn panic_takeover(&self, cpu: usize) -> WriteContext<'_> {
        let w = owned_word(Priority::Panic, cpu, UNSAFE_TAKEOVER);
        self.word.store(w, Ordering::Release);
        WriteContext::new(self, w)
    }
}

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
        // from normal context there. Load and compare, then store.
        let v = a.load(Ordering::Acquire);
        if v != old {
            return Err(v);
        }
        a.store(new, Ordering::Release);
        Ok(())
    }
}

/// Ownership of a console, handed to [`Console::write_atomic`]; releases the console when dropped
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
    fn new(state: &'a ConsoleState, mine: usize) -> Self {
        WriteContext {
            state,
            mine: mine & !(3 << REQ_SHIFT),
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
        let cur = self.state.word.load(Ordering::Acquire);
        cur & !(3 << REQ_SHIFT) != self.mine
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
            let cur = self.state.word.load(Ordering::Acquire);
            if cur & !(3 << REQ_SHIFT) != self.mine {
                self.lost = true;
                return false;
            }
            let req = cur & (3 << REQ_SHIFT);
            let waiting = Priority::from_bits(req >> REQ_SHIFT) > self.priority();
            if waiting && (on || self.mine & UNSAFE_TAKEOVER == 0) {
                // Hand over between records. (After an unsafe takeover the unsafe bit is sticky and
                // only the panic owner is left; it never hands over.)
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
            let cur = self.state.word.load(Ordering::Acquire);
            if cur & !(3 << REQ_SHIFT) != self.mine {
                return;
            }
            // Free, keeping a pending request (the waiter takes it) and the takeover mark.
            let new = (cur & (3 << REQ_SHIFT)) | (self.mine & UNSAFE_TAKEOVER);
            if self.state.cas(cur, new).is_ok() {
                return;
            }
        }
    }
}

impl Drop for WriteContext<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// An output device fed by [`Consoles`].
///
/// ```
/// use nmilog::console::{Console, WriteContext};
/// struct Uart;
/// impl Console for Uart {
///     fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool {
///         for chunk in text.chunks(16) {
///             if !ctx.enter_unsafe() { return false; }  // lost or handed over: stop
///             let _ = chunk;                            // write the FIFO here
///             if !ctx.exit_unsafe() { return false; }
///         }
///         true
///     }
/// }
/// ```
pub trait Console: Sync {
    /// Writes one formatted record (`[time] text\n`), with the console owned by `ctx`. Returns
    /// `true` if the whole text was written; `false` if the write stopped (ownership lost or
    /// handed over, device error) — the record is then printed again, whole, by the next owner.
    ///
    /// Called in normal context, or on the crashing CPU at [`Priority::Panic`] with the other CPUs
    /// stopped; never from NMI context. The emitter calls it inside an unsafe section; a driver
    /// may call [`WriteContext::exit_unsafe`]/[`WriteContext::enter_unsafe`] between its own
    /// atomic steps to let a waiting higher priority in earlier.
    ///
    /// A write that returns `false` leaves the record unprinted:
    ///
    /// ```
    /// use core::sync::atomic::{AtomicUsize, Ordering};
    /// use nmilog::console::{Console, Consoles, WriteContext};
    /// use nmilog::{host::HostPlatform, Level, Log};
    /// struct Flaky(AtomicUsize); // its first write hits a FIFO error
    /// impl Console for Flaky {
    ///     fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool {
    ///         assert!(text.ends_with(b"] eth0: link up\n"));
    ///         self.0.fetch_add(1, Ordering::Relaxed) > 0 && !ctx.lost()
    ///     }
    /// }
    /// static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// static UART: Flaky = Flaky(AtomicUsize::new(0));
    /// static CONSOLES: Consoles<1> = Consoles::new([&UART]);
    /// HostPlatform::register_cpu(0);
    /// LOG.log_fmt(Level::Info, 0, format_args!("eth0: link up")).unwrap();
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0); // failed: not marked printed...
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 1); // ...so the next call prints it
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0); // and only once
    /// assert_eq!(UART.0.load(Ordering::Relaxed), 2);
    /// ```
    fn write_atomic(&self, ctx: &mut WriteContext<'_>, text: &[u8]) -> bool;
}

/// What one emitter call did, summed over its consoles.
///
/// ```
/// use nmilog::console::{Consoles, MemConsole};
/// use nmilog::{host::HostPlatform, Level, Log};
/// static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
/// static MEM: MemConsole<1024> = MemConsole::new();
/// static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
/// HostPlatform::register_cpu(0);
/// LOG.log_fmt(Level::Err, 0, format_args!("ata1: bus error")).unwrap();
/// LOG.log_fmt(Level::Debug, 0, format_args!("ata1: retry")).unwrap();
/// let r = CONSOLES.emit_pending(&LOG);
/// // Debug is not below the default console loglevel (7): filtered, not printed.
/// assert_eq!((r.printed, r.filtered, r.busy), (1, 1, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmitReport {
    /// Records written to a console.
    pub printed: u64,
    /// Records skipped (level filtered or raw).
    pub filtered: u64,
    /// Records a console's cursor missed because the main log wrapped.
    pub missed: u64,
    /// Consoles not written because another context owned them (or the wait timed out).
    pub busy: u64,
    /// Consoles taken over unsafely by this call (panic flush only).
    pub taken_over: u64,
}

struct Slot {
    state: ConsoleState,
    enabled: AtomicBool,
    /// The emitter's cursor into the main log; read and written only by the console's owner,
    /// inside an unsafe section.
    reader: UnsafeCell<MainReader>,
    /// Sequence number of the next main-log record to print (committed after each record, inside
    /// the same unsafe section). Used to rebuild the cursor after an unsafe takeover.
    next_seq: AtomicUsize,
    missed: AtomicUsize,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            state: ConsoleState::new(),
            enabled: AtomicBool::new(true),
            reader: UnsafeCell::new(MainReader::new()),
            next_seq: AtomicUsize::new(0),
            missed: AtomicUsize::new(0),
        }
    }
}

/// A fixed set of consoles fed from one main log, each with its own cursor and ownership word.
///
/// ```
/// use nmilog::console::{Consoles, MemConsole};
/// static A: MemConsole<256> = MemConsole::new();
/// static B: MemConsole<256> = MemConsole::new();
/// static CONSOLES: Consoles<2> = Consoles::new([&A, &B]);
/// CONSOLES.set_enabled(1, false);
/// assert!(!CONSOLES.is_enabled(1));
/// ```
pub struct Consoles<const N: usize> {
    consoles: [&'static dyn Console; N],
    slots: [Slot; N],
}

// SAFETY: the only non-`Sync` field is each slot's `reader` cell, which is accessed only by the
// context that owns that slot's console (`ConsoleState`), inside an unsafe section: a CAS-verified
// ownership word makes that access exclusive (a direct takeover never happens during an unsafe
// section; a panic takeover requires the other CPUs to be stopped and rebuilds the cursor from
// `next_seq` instead of trusting the cell).
unsafe impl<const N: usize> Sync for Consoles<N> {}

impl<const N: usize> Consoles<N> {
    /// The consoles, all enabled, each starting at the beginning of the main log.
    ///
    /// ```
    /// use nmilog::console::{Consoles, MemConsole};
    /// static UART: MemConsole<256> = MemConsole::new();
    /// static CONSOLES: Consoles<1> = Consoles::new([&UART]);
    /// assert!(CONSOLES.is_enabled(0));
    /// assert!(CONSOLES.state(1).is_none()); // there is only console 0
    /// ```
    pub const fn new(consoles: [&'static dyn Console; N]) -> Self {
        Consoles {
            consoles,
            slots: [const { Slot::new() }; N],
        }
    }

    /// Enables or disables console `i` (a disabled console keeps its cursor and is skipped).
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole};
    /// # use nmilog::{host::HostPlatform, Level, Log};
    /// # static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// static MEM: MemConsole<1024> = MemConsole::new();
    /// static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// CONSOLES.set_enabled(0, false); // e.g. while the UART is reprogrammed
    /// LOG.log_fmt(Level::Info, 0, format_args!("ttyS0: baud 115200")).unwrap();
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0);
    /// CONSOLES.set_enabled(0, true); // the cursor kept its place: nothing is lost
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 1);
    /// ```
    pub fn set_enabled(&self, i: usize, on: bool) {
        if let Some(s) = self.slots.get(i) {
            s.enabled.store(on, Ordering::Relaxed);
        }
    }

    /// Whether console `i` is enabled.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole};
    /// # static MEM: MemConsole<64> = MemConsole::new();
    /// static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// assert!(CONSOLES.is_enabled(0));
    /// assert!(!CONSOLES.is_enabled(5)); // out of range: no such console
    /// ```
    pub fn is_enabled(&self, i: usize) -> bool {
        self.slots
            .get(i)
            .is_some_and(|s| s.enabled.load(Ordering::Relaxed))
    }

    /// The ownership word of console `i`.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole, Priority};
    /// # static A: MemConsole<64> = MemConsole::new();
    /// # static C: Consoles<1> = Consoles::new([&A]);
    /// assert_eq!(C.state(0).unwrap().view().prio, Priority::None);
    /// ```
    pub fn state(&self, i: usize) -> Option<&ConsoleState> {
        self.slots.get(i).map(|s| &s.state)
    }

    /// Records console `i`'s cursor missed because the main log wrapped before it printed them.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole};
    /// # use nmilog::{host::HostPlatform, Level, Log};
    /// // A main log of only 64 words: a few dozen records wrap it before the console prints.
    /// static LOG: Log<HostPlatform, 1, 1024, 64> = Log::new(HostPlatform::new(1));
    /// static MEM: MemConsole<4096> = MemConsole::new();
    /// static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// for i in 0..40 {
    ///     LOG.log_fmt(Level::Info, 0, format_args!("line {}", i)).unwrap();
    /// }
    /// let r = CONSOLES.emit_pending(&LOG);
    /// assert!(r.missed > 0 && CONSOLES.missed(0) == r.missed);
    /// ```
    pub fn missed(&self, i: usize) -> u64 {
        self.slots
            .get(i)
            .map_or(0, |s| s.missed.load(Ordering::Relaxed) as u64)
    }

    /// Prints pending records at [`Priority::Normal`], without waiting for any console. Does
    /// nothing (records stay in the log) from NMI or crash context, during a crash, or on a bad
    /// CPU id.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, EmitReport, MemConsole};
    /// # use nmilog::{host::HostPlatform, ContextKind, Level, Log};
    /// # static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// # static MEM: MemConsole<1024> = MemConsole::new();
    /// # static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// LOG.log_fmt(Level::Info, 0, format_args!("eth0: link up")).unwrap();
    /// {
    ///     let _nmi = LOG.enter(ContextKind::Nmi); // never prints from NMI context
    ///     assert_eq!(CONSOLES.emit_pending(&LOG), EmitReport::default());
    /// }
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 1);
    /// assert_eq!(CONSOLES.emit_pending(&LOG).printed, 0); // each record once
    /// ```
    pub fn emit_pending<
        P: Platform,
        const C: usize,
        const R: usize,
        const M: usize,
        const D: usize,
    >(
        &self,
        log: &Log<P, C, R, M, D>,
    ) -> EmitReport {
        self.emit_normal(log, Priority::Normal, &Wait::none())
    }

    /// Prints pending records at [`Priority::Emergency`], waiting up to `wait` for a
    /// normal-priority owner to hand over. Same context rules as
    /// [`emit_pending`](Self::emit_pending).
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole, Wait};
    /// # use nmilog::{host::HostPlatform, Log, Platform};
    /// # static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// # static MEM: MemConsole<1024> = MemConsole::new();
    /// # static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// LOG.log_fmt(nmilog::Level::Warning, 0, format_args!("WARNING: at foo.rs:1")).unwrap();
    /// let now = || LOG.platform().now_ns();
    /// let deadline = LOG.platform().now_ns() + 1_000_000;
    /// let r = CONSOLES.emit_emergency(&LOG, &Wait::spins(100_000).with_deadline(&now, deadline));
    /// assert_eq!(r.printed, 1);
    /// ```
    pub fn emit_emergency<
        P: Platform,
        const C: usize,
        const R: usize,
        const M: usize,
        const D: usize,
    >(
        &self,
        log: &Log<P, C, R, M, D>,
        wait: &Wait<'_>,
    ) -> EmitReport {
        self.emit_normal(log, Priority::Emergency, wait)
    }

    fn emit_normal<P: Platform, const C: usize, const R: usize, const M: usize, const D: usize>(
        &self,
        log: &Log<P, C, R, M, D>,
        prio: Priority,
        wait: &Wait<'_>,
    ) -> EmitReport {
        let mut rep = EmitReport::default();
        if log.crashing_cpu().is_some() {
            return rep;
        }
        let cpu = log.platform().cpu_id();
        if cpu >= log.platform().cpu_count() {
            return rep;
        }
        let Some(pc) = log.cpu(cpu) else {
            return rep;
        };
        if pc.nmi_safe_only() {
            return rep;
        }
        for (slot, console) in self.slots.iter().zip(self.consoles) {
            if !slot.enabled.load(Ordering::Relaxed) {
                continue;
            }
            match slot.state.try_acquire(cpu, prio, wait) {
                Ok(mut ctx) => emit_slot(slot, console, log, &mut ctx, false, &mut rep),
                Err(_) => rep.busy += 1,
            }
        }
        rep
    }

    /// The panic flush: on the crashing CPU, after [`Log::drain_on_crash`](crate::Log::drain_on_crash),
    /// prints every pending record at [`Priority::Panic`]. A console whose owner does not hand over
    /// within `wait` is taken over unsafely (and stays marked so). Returns an empty report if the
    /// calling CPU is not the crashing CPU.
    ///
    /// ```
    /// # use nmilog::console::{Consoles, MemConsole, Wait};
    /// # use nmilog::{host::HostPlatform, Log};
    /// # static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
    /// # static MEM: MemConsole<1024> = MemConsole::new();
    /// # static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    /// HostPlatform::register_cpu(0);
    /// LOG.crash_enter().unwrap();
    /// LOG.log_fmt(nmilog::Level::Emerg, 0, format_args!("Kernel panic")).unwrap();
    /// LOG.drain_on_crash();
    /// // SAFETY (doc example): there is only one CPU.
    /// unsafe { CONSOLES.panic_flush(&LOG, &Wait::spins(1000)) };
    /// assert!(MEM.contents().contains("Kernel panic"));
    /// ```
    ///
    /// # Safety
    ///
    /// Every other CPU must be stopped for good (see [`ConsoleState::panic_takeover`]).
    pub unsafe fn panic_flush<
        P: Platform,
        const C: usize,
        const R: usize,
        const M: usize,
        const D: usize,
    >(
        &self,
        log: &Log<P, C, R, M, D>,
        wait: &Wait<'_>,
    ) -> EmitReport {
        let mut rep = EmitReport::default();
        let cpu = log.platform().cpu_id();
        if log.crashing_cpu() != Some(cpu) {
            return rep;
        }
        for (slot, console) in self.slots.iter().zip(self.consoles) {
            if !slot.enabled.load(Ordering::Relaxed) {
                continue;
            }
            let (mut ctx, hostile) = match slot.state.try_acquire(cpu, Priority::Panic, wait) {
                Ok(ctx) => (ctx, false),
                Err(_) => {
                    rep.taken_over += 1;
                    // SAFETY: the caller guarantees every other CPU is stopped for good.
                    (unsafe { slot.state.panic_takeover(cpu) }, true)
                }
            };
            let rebuild = hostile || ctx.after_unsafe_takeover();
            emit_slot(slot, console, log, &mut ctx, rebuild, &mut rep);
        }
        rep
    }
}

/// Prints records from `slot`'s cursor while `ctx` owns the console (bounded by the main log's
/// record capacity).
fn emit_slot<P: Platform, const C: usize, const R: usize, const M: usize, const D: usize>(
    slot: &Slot,
    console: &dyn Console,
    log: &Log<P, C, R, M, D>,
    ctx: &mut WriteContext<'_>,
    rebuild: bool,
    rep: &mut EmitReport,
) {
    let loglevel = log.console_loglevel();
    let bound = log.main().capacity_words() / span_words(0) + 2;
    let mut rec = RecordBuf::new();
    let committed = slot.next_seq.load(Ordering::Acquire);
    let mut reader = if rebuild {
        // The cell may have been left half-written by a stopped owner: start from the oldest
        // record and skip what was already printed.
        log.main_reader()
    } else {
        MainReader::new()
    };
    let mut have_reader = rebuild;
    for _ in 0..bound {
        if !ctx.enter_unsafe() {
            return;
        }
        if !have_reader {
            // SAFETY: inside an unsafe section of the owner (see `Sync for Consoles`).
            reader = unsafe { *slot.reader.get() };
            have_reader = true;
        }
        let mut next = reader;
        let r = next.read(log, &mut rec);
        let mut done = false;
        let mut ok = true;
        match r {
            Read::Record => {
                if (rec.seq as usize).wrapping_sub(committed) > usize::MAX / 2 {
                    // Already printed (a rebuilt cursor catching up).
                } else if rec.header.flags & flags::RAW != 0 || rec.header.level >= loglevel {
                    rep.filtered += 1;
                } else {
                    let mut line: LineBuf<{ LINE_MAX + 32 }> = LineBuf::new();
                    let ts = rec.header.ts_ns;
                    let _ = write!(
                        line,
                        "[{:>5}.{:06}] ",
                        ts / 1_000_000_000,
                        (ts % 1_000_000_000) / 1000
                    );
                    let _ = line.write_str(rec.text().unwrap_or("<non-UTF-8 record>"));
                    let _ = line.write_str("\n");
                    ok = console.write_atomic(ctx, line.finish());
                    if ok {
                        rep.printed += 1;
                    }
                }
            }
            Read::Overwritten { missed } => {
                rep.missed += missed;
                slot.missed.store(
                    slot.missed.load(Ordering::Relaxed) + missed as usize,
                    Ordering::Relaxed,
                );
            }
            Read::Empty | Read::InFlight => done = true,
        }
        if ok && !ctx.lost() {
            reader = next;
            // SAFETY: still the owner, inside the unsafe section (checked just above; a direct
            // takeover cannot happen during it).
            unsafe { *slot.reader.get() = reader };
            slot.next_seq
                .store(reader.next_seq() as usize, Ordering::Release);
        } else {
            done = true;
        }
        if !ctx.exit_unsafe() || done {
            return;
        }
    }
}

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

impl<const N: usize> Default for MemConsole<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> MemConsole<N> {
    /// An empty console.
    ///
    /// ```
    /// use nmilog::console::MemConsole;
    /// static RAMCON: MemConsole<4096> = MemConsole::new();
    /// assert_eq!((RAMCON.writes(), RAMCON.overflowed()), (0, 0));
    /// ```
    pub const fn new() -> Self {
        MemConsole {
            buf: [const { AtomicU8::new(0) }; N],
            len: AtomicUsize::new(0),
            overflow: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            fail_after: AtomicUsize::new(usize::MAX),
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
