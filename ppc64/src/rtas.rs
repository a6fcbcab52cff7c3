//! The firmware (RTAS) lock, owner-aware, and the crash path's decision on how to mask interrupts.
//!
//! # Why the lock must say who holds it and where that holder is
//!
//! PAPR requires RTAS calls to be serialised: apart from a short list of functions, a CPU may not
//! enter RTAS while another CPU is inside any other RTAS function. Linux enforces it with one global
//! spinlock around one argument buffer (`rtas_call()` → `lock_rtas()`). The crash path masks every
//! interrupt source through `ibm,int-off`, which takes that lock; a CPU frozen by the crash NMI while
//! holding it deadlocks the crash (2020). Busting the lock is not an answer: if the frozen holder was
//! *inside* firmware, a second call overlaps a non-reentrant RTAS function — exactly what PAPR
//! forbids (and why upstream's "reentrant" int-off path, b664db8e3f97, was reverted in f88aabad33ea).
//!
//! [`RtasLock`] keeps the owner and whether the owner is inside the firmware call proper in **one
//! word**, so the crashing CPU reads a consistent pair:
//!
//! ```text
//! word = 0                          free
//! word = (owner + 1) << 1 | inside  held by `owner`; `inside` = between enter_call and leave_call
//! ```
//!
//! A holder marks itself inside *before* it enters firmware and outside only *after* firmware has
//! returned, so "outside" means "firmware is not running a call for this CPU".
//!
//! # The crash decision ([`RtasLock::crash_acquire`]), once every other CPU is stopped or declared dead
//!
//! * **free** → take it (one compare-exchange) and mask through RTAS: path `rtas`.
//! * **held by a CPU that checked in** (it is parked in its NMI handler forever) **and frozen outside
//!   the call** → firmware has no call in progress and the holder will never run again, so a call by
//!   the crashing CPU is the only RTAS call in the system: PAPR's serialisation holds. Take the lock
//!   over (the holder's half-filled argument buffer is never touched: the crash path uses its own,
//!   [`crate::CrashState::rtas_args`]) and mask through RTAS: path `rtas-takeover`.
//! * **held by a CPU frozen inside the call** → a non-reentrant RTAS function is in progress on a CPU
//!   that will never return from it; any RTAS call now would overlap it. Do not call RTAS: mask at the
//!   interrupt presenter instead (`H_CPPR(0)` on this CPU): path `presenter`. The stopped CPUs have
//!   interrupts off in their NMI handlers and the capture kernel resets the interrupt controller.
//! * **held by a CPU that did not check in** (deaf, maybe still running) → it could enter firmware at
//!   any moment: same as inside, path `presenter`.
//! * **held by the crashing CPU itself** (it crashed in an RTAS call's lock section) → outside: it
//!   already owns the lock, mask through RTAS (`rtas`); inside: firmware is not reentrant, `presenter`.
//!
//! # The normal-call protocol a port follows (`rtas_call()`)
//!
//! ```text
//! local_irq_save();          // the lock is never taken with interrupts on
//! lock.lock(cpu);            // spins: normal context only, never on the crash path
//! args.fill(cpu, token, …);  // the one shared argument buffer
//! lock.enter_call(cpu);      // "inside" BEFORE entering firmware …
//! hcall(KVMPPC_H_RTAS, &args);
//! lock.leave_call(cpu);      // … and "outside" only AFTER it returned
//! read the return cells;
//! lock.unlock(cpu);
//! local_irq_restore();
//! ```
//!
//! The same protocol in code, with a CPU "frozen" at each point of it, and what the crashing CPU
//! (0) then decides:
//!
//! ```
//! use nmilog_ppc64::{CrashAcquire, RtasArgs, RtasLock};
//! static LOCK: RtasLock = RtasLock::new();
//! static ARGS: RtasArgs = RtasArgs::new();
//! let stopped = |_cpu: usize| true; // CPU 1 checked in
//! let mut seen = Vec::new();
//! LOCK.lock(1);
//! ARGS.fill(1, 0x2a, &[17], 1);
//! seen.push(LOCK.holder()); // frozen here: outside, can be taken over
//! LOCK.enter_call(1);
//! seen.push(LOCK.holder()); // frozen in firmware: must not call RTAS
//! assert!(!LOCK.crash_acquire(0, stopped).may_call_firmware());
//! LOCK.leave_call(1);
//! seen.push(LOCK.holder()); // frozen after firmware returned: outside again
//! LOCK.unlock(1);
//! seen.push(LOCK.holder());
//! assert_eq!(seen, [Some((1, false)), Some((1, true)), Some((1, false)), None]);
//! assert_eq!(LOCK.crash_acquire(0, stopped), CrashAcquire::Acquired);
//! ```
//!
//! Memory ordering: the holder's stores to the word are ordered before its NMI handler's check-in
//! (program order on one CPU; the NMI is a precise, context-synchronising interrupt), the check-in is a
//! Release store and the crashing CPU loads it with Acquire before it reads this word (see
//! [`crate::CrashState`], LMM(checkin:A/B)); so the crashing CPU reads the holder's last state.

use core::sync::atomic::{AtomicUsize, Ordering};

const INSIDE: usize = 1;

const fn held(cpu: usize) -> usize {
    (cpu + 1) << 1
}

/// The global firmware lock, recording its owner and whether the owner is inside the firmware call
/// (see the [module docs](self)).
///
/// ```
/// use nmilog_ppc64::{CrashAcquire, RtasLock};
/// let lock = RtasLock::new();
/// lock.lock(3);
/// assert_eq!(lock.holder(), Some((3, false)));
/// // CPU 3 is frozen outside the call; CPU 0 crashes and every other CPU checked in:
/// assert_eq!(lock.crash_acquire(0, |_| true), CrashAcquire::TakenOver { from: 3 });
///
/// let lock = RtasLock::new();
/// lock.lock(3);
/// lock.enter_call(3);
/// assert_eq!(
///     lock.crash_acquire(0, |_| true),
///     CrashAcquire::Unsafe { holder: 3, inside: true, stopped: true }
/// );
/// ```
#[derive(Debug)]
pub struct RtasLock {
    word: AtomicUsize,
}

/// What [`RtasLock::crash_acquire`] decided.
///
/// ```
/// use nmilog_ppc64::{CrashAcquire, RtasLock};
/// let all_stopped = |_cpu: usize| true;
/// // Free: CPU 0 takes it.
/// assert_eq!(RtasLock::new().crash_acquire(0, all_stopped), CrashAcquire::Acquired);
/// // CPU 0 crashed in its own lock section, outside the call: it keeps the lock.
/// let lock = RtasLock::new();
/// lock.lock(0);
/// assert_eq!(lock.crash_acquire(0, all_stopped), CrashAcquire::AlreadyOwn);
/// // Held by stopped CPU 2, outside the call: taken over.
/// let lock = RtasLock::new();
/// lock.lock(2);
/// assert_eq!(lock.crash_acquire(0, all_stopped), CrashAcquire::TakenOver { from: 2 });
/// // Held by CPU 2, which did not stop: firmware must not be called.
/// let lock = RtasLock::new();
/// lock.lock(2);
/// let d = lock.crash_acquire(0, |_| false);
/// assert_eq!(d, CrashAcquire::Unsafe { holder: 2, inside: false, stopped: false });
/// assert!(!d.may_call_firmware());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAcquire {
    /// The lock was free; the crashing CPU now holds it.
    Acquired,
    /// The crashing CPU already held it, outside a firmware call.
    AlreadyOwn,
    /// Taken over from `from`, which is stopped and was frozen outside the firmware call.
    TakenOver {
        /// The frozen previous holder.
        from: usize,
    },
    /// Firmware must not be called: the lock is held by `holder`, which is `inside` the call proper
    /// and/or not known to be `stopped`. The lock is left as it is.
    Unsafe {
        /// The holder.
        holder: usize,
        /// Whether the holder is inside the firmware call.
        inside: bool,
        /// Whether the holder is known to be stopped for good (checked in, or the crashing CPU).
        stopped: bool,
    },
}

impl CrashAcquire {
    /// Whether the crashing CPU may now call firmware.
    ///
    /// ```
    /// use nmilog_ppc64::CrashAcquire;
    /// assert!(CrashAcquire::Acquired.may_call_firmware());
    /// assert!(CrashAcquire::AlreadyOwn.may_call_firmware());
    /// assert!(CrashAcquire::TakenOver { from: 1 }.may_call_firmware());
    /// // A stopped holder frozen inside the call still forbids it (PAPR: no overlap).
    /// let inside = CrashAcquire::Unsafe { holder: 1, inside: true, stopped: true };
    /// assert!(!inside.may_call_firmware());
    /// ```
    pub fn may_call_firmware(self) -> bool {
        !matches!(self, CrashAcquire::Unsafe { .. })
    }
}

impl RtasLock {
    /// A free lock.
    ///
    /// ```
    /// use nmilog_ppc64::RtasLock;
    /// static RTAS: RtasLock = RtasLock::new(); // `const`: one global lock per kernel
    /// assert_eq!(RTAS.holder(), None);
    /// assert!(RTAS.try_lock(0));
    /// ```
    pub const fn new() -> Self {
        RtasLock {
            word: AtomicUsize::new(0),
        }
    }

    /// Takes the lock for `cpu` (normal context only, with interrupts off, as `lock_rtas()`): spins
    /// until it is free. Never called on the crash path.
    ///
    /// ```
    /// use nmilog_ppc64::RtasLock;
    /// let lock = RtasLock::new();
    /// lock.lock(2);
    /// assert_eq!(lock.holder(), Some((2, false))); // held, not yet inside firmware
    /// assert!(!lock.try_lock(1)); // another CPU would spin in `lock`
    /// lock.unlock(2);
    /// lock.lock(1); // free again: returns at once
    /// assert_eq!(lock.holder(), Some((1, false)));
    /// ```
    pub fn lock(&self, cpu: usize) {
        // LMM(rtas:A): Acquire pairs with LMM(rtas:B), the previous holder's unlock.
        while self
            .word
            .compare_exchange_weak(0, held(cpu), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
    }

    /// Takes the lock for `cpu` if it is free.
    ///
    /// ```
    /// use nmilog_ppc64::RtasLock;
    /// let lock = RtasLock::new();
    /// assert!(lock.try_lock(2));
    /// assert!(!lock.try_lock(3)); // held by CPU 2
    /// assert!(!lock.try_lock(2)); // not recursive either
    /// assert_eq!(lock.holder(), Some((2, false)));
    /// ```
    pub fn try_lock(&self, cpu: usize) -> bool {
        // LMM(rtas:A) as in `lock`.
        self.word
            .compare_exchange(0, held(cpu), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// The holder marks itself inside the firmware call proper (just before entering firmware).
    ///
    /// ```
    /// use nmilog_ppc64::{CrashAcquire, RtasLock};
    /// let lock = RtasLock::new();
    /// lock.lock(1);
    /// lock.enter_call(1);
    /// assert_eq!(lock.holder(), Some((1, true)));
    /// // CPU 1 is frozen in firmware: the crashing CPU must leave RTAS alone.
    /// assert_eq!(
    ///     lock.crash_acquire(0, |_| true),
    ///     CrashAcquire::Unsafe { holder: 1, inside: true, stopped: true }
    /// );
    /// assert_eq!(lock.holder(), Some((1, true))); // and the lock untouched
    /// ```
    pub fn enter_call(&self, cpu: usize) {
        // LMM(rtas:C): Release, pairs with LMM(rtas:D): the argument buffer the holder filled is
        // ordered before "inside" (a crashing CPU that sees "inside" — through the check-in chain,
        // or directly — knows firmware may be reading it).
        self.word.store(held(cpu) | INSIDE, Ordering::Release);
    }

    /// The holder marks itself outside again (just after firmware returned).
    ///
    /// ```
    /// use nmilog_ppc64::{CrashAcquire, RtasLock};
    /// let lock = RtasLock::new();
    /// lock.lock(1);
    /// lock.enter_call(1);
    /// lock.leave_call(1);
    /// assert_eq!(lock.holder(), Some((1, false)));
    /// // Frozen after firmware returned: no call is in progress, so the lock can be taken over.
    /// assert_eq!(lock.crash_acquire(0, |_| true), CrashAcquire::TakenOver { from: 1 });
    /// ```
    pub fn leave_call(&self, cpu: usize) {
        // LMM(rtas:C) as in `enter_call`: what the call returned (the argument buffer's results) is
        // ordered before "outside again", so a CPU that takes the lock over from here sees it.
        self.word.store(held(cpu), Ordering::Release);
    }

    /// Releases the lock.
    ///
    /// ```
    /// use nmilog_ppc64::RtasLock;
    /// let lock = RtasLock::new();
    /// lock.lock(3);
    /// lock.unlock(3);
    /// assert_eq!(lock.holder(), None);
    /// assert!(lock.try_lock(0));
    /// ```
    pub fn unlock(&self, _cpu: usize) {
        // LMM(rtas:B): pairs with LMM(rtas:A).
        self.word.store(0, Ordering::Release);
    }

    /// The holder and whether it is inside the call, or `None` if the lock is free.
    ///
    /// ```
    /// use nmilog_ppc64::RtasLock;
    /// let lock = RtasLock::new();
    /// assert_eq!(lock.holder(), None);
    /// lock.lock(0); // CPU 0 is encoded as a nonzero word: not confused with "free"
    /// assert_eq!(lock.holder(), Some((0, false)));
    /// lock.enter_call(0);
    /// assert_eq!(lock.holder(), Some((0, true)));
    /// ```
    pub fn holder(&self) -> Option<(usize, bool)> {
        // LMM(rtas:D): Acquire, pairs with LMM(rtas:B)/LMM(rtas:C): an observer of the holder's
        // state sees what the holder did before it (its buffer, the call's results).
        decode(self.word.load(Ordering::Acquire))
    }

    /// The crash path's decision (see the [module docs](self)): called by the crashing CPU `me` once
    /// every other CPU is stopped (`is_stopped(cpu)` says which ones checked in). Never waits: at most
    /// two loads and one compare-exchange.
    ///
    /// ```
    /// use nmilog_ppc64::{CrashAcquire, RtasLock};
    /// // CPUs 1 and 2 checked in; CPU 3 is deaf.
    /// let stopped = |cpu: usize| cpu == 1 || cpu == 2;
    ///
    /// let lock = RtasLock::new();
    /// lock.lock(1); // frozen outside the call: taken over, the lock is now CPU 0's
    /// assert_eq!(lock.crash_acquire(0, stopped), CrashAcquire::TakenOver { from: 1 });
    /// assert_eq!(lock.holder(), Some((0, false)));
    ///
    /// let lock = RtasLock::new();
    /// lock.lock(3); // deaf: it may enter firmware at any moment
    /// let d = lock.crash_acquire(0, stopped);
    /// assert_eq!(d, CrashAcquire::Unsafe { holder: 3, inside: false, stopped: false });
    /// assert_eq!(lock.holder(), Some((3, false))); // left as it is
    ///
    /// let lock = RtasLock::new();
    /// lock.lock(0);
    /// lock.enter_call(0); // the crashing CPU itself faulted inside firmware
    /// assert!(!lock.crash_acquire(0, stopped).may_call_firmware());
    /// ```
    pub fn crash_acquire(&self, me: usize, is_stopped: impl Fn(usize) -> bool) -> CrashAcquire {
        // LMM(rtas:D) as in `holder` (so are the compare-exchanges' failure loads below).
        let mut w = self.word.load(Ordering::Acquire);
        if w == 0 {
            // LMM(rtas:A) as in `lock`.
            match self
                .word
                .compare_exchange(0, held(me), Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return CrashAcquire::Acquired,
                // Someone still running (a CPU that did not check in) took it just now.
                Err(now) => w = now,
            }
        }
        let Some((holder, inside)) = decode(w) else {
            // Freed and retaken in between: only a running CPU can do that; do not call firmware.
            return CrashAcquire::Unsafe {
                holder: usize::MAX,
                inside: false,
                stopped: false,
            };
        };
        if holder == me {
            return if inside {
                CrashAcquire::Unsafe {
                    holder,
                    inside,
                    stopped: true,
                }
            } else {
                CrashAcquire::AlreadyOwn
            };
        }
        let stopped = is_stopped(holder);
        if inside || !stopped {
            return CrashAcquire::Unsafe {
                holder,
                inside,
                stopped,
            };
        }
        // Frozen outside the call, parked forever: take it over. A compare-exchange (not a store) so
        // that a word changed since we read it — impossible for a stopped holder — is not clobbered.
        // LMM(rtas:A) as in `lock`; the word it replaces was stored by LMM(rtas:C) or by the
        // holder's `lock` (no Release half): the check-in chain orders a stopped holder's writes.
        match self
            .word
            .compare_exchange(w, held(me), Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => CrashAcquire::TakenOver { from: holder },
            Err(_) => CrashAcquire::Unsafe {
                holder,
                inside,
                stopped: false,
            },
        }
    }
}

impl Default for RtasLock {
    fn default() -> Self {
        Self::new()
    }
}

fn decode(w: usize) -> Option<(usize, bool)> {
    if w == 0 {
        None
    } else {
        Some(((w >> 1) - 1, w & INSIDE != 0))
    }
}
