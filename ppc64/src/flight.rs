//! The crash flight recorder: a fixed ring of breadcrumbs (event, CPU, time, argument) that the crash
//! sequence writes as it goes, so that a crash path that hangs or dies can be diagnosed afterwards —
//! by the capture stage, or by anyone reading raw memory.
//!
//! **Contract.** [`FlightRecorder::record`] takes no lock, allocates nothing and is lock-free: any
//! CPU (the crashing one, a stopped one in its NMI handler) claims a slot with one `fetch_add` on the
//! head (a native read-modify-write: on an LL/SC machine an interrupt between the two halves makes it
//! retry, never wait for another CPU; a port must not use an interrupt-masking emulation, which is
//! not NMI-safe) and fills it. The recorder is `#[repr(C)]` and made of plain 64-bit words, so a port places it
//! at a fixed address in memory the capture stage preserves (a crash kernel's reserved region), and a
//! reader of a memory dump finds it by its magic. It keeps the newest [`FLIGHT_SLOTS`] breadcrumbs;
//! older ones are overwritten, and a reader knows how many ([`FlightRecorder::lost`]).
//!
//! **Slot protocol** (a per-slot sequence word, as a seqlock): the writer of breadcrumb number `i`
//! stores `2i + 1` (odd: being written) into its slot's sequence word, then the fields, then `2i + 2`
//! with Release — LMM(flight:A). A reader loads the sequence word with Acquire — LMM(flight:B) —
//! reads the fields, issues an Acquire fence — LMM(flight:C), pairing with the writer's Release of
//! the *next* owner's odd store, LMM(flight:D) — and reloads it: the breadcrumb is whole if both
//! loads read `2i + 2`. A writer that dies mid-slot leaves an odd word: that breadcrumb reads as torn.
//!
//! ```
//! use nmilog_ppc64::flight::{Event, FlightRecorder};
//! static FR: FlightRecorder = FlightRecorder::new();
//! FR.record(Event::Entered, 0, 1_000, 4);
//! FR.record(Event::CheckIn, 2, 1_500, 0);
//! FR.record(Event::IpiWaitDone, 0, 2_000, 1);
//! let got: Vec<_> = FR.iter().map(|b| (b.event, b.cpu, b.ts_ns, b.arg)).collect();
//! assert_eq!(got[0], (Some(Event::Entered), 0, 1_000, 4));
//! assert_eq!(got[1], (Some(Event::CheckIn), 2, 1_500, 0));
//! assert_eq!(got.len(), 3);
//! assert_eq!((FR.recorded(), FR.lost()), (3, 0));
//! assert!(FR.is_valid());
//! ```

use core::sync::atomic::{fence, AtomicU64, Ordering};

/// Breadcrumbs the recorder keeps (the newest ones).
pub const FLIGHT_SLOTS: usize = 64;

/// Check-in breadcrumbs the crash sequence leaves at most (the first CPUs to check in), and
/// per-CPU outcome breadcrumbs (every CPU's while there are at most this many CPUs; past that, only
/// the CPUs that did not answer the crash IPI). With the sequence's own stages (at most 12) they
/// fit in [`FLIGHT_SLOTS`], so on a machine of any size the timeline keeps its first breadcrumb
/// (with room for a few [`Event::MachineCheck`]s; a storm of them overwrites the oldest, counted in
/// [`FlightRecorder::lost`]).
pub const CHECKIN_CRUMBS: usize = 32;
/// See [`CHECKIN_CRUMBS`].
pub const OUTCOME_CRUMBS: usize = 16;
const _: () = assert!(CHECKIN_CRUMBS + OUTCOME_CRUMBS + 12 <= FLIGHT_SLOTS);

/// `FlightRecorder::magic` once [`FlightRecorder::reset`] ran: `"NMIFLT01"`.
pub const FLIGHT_MAGIC: u64 = u64::from_le_bytes(*b"NMIFLT01");

/// What happened. The numeric values are the recorder's in-memory encoding (stable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Event {
    /// Crash entry on the crashing CPU; argument: CPUs in the system.
    Entered = 1,
    /// The crash IPI is being sent (left just before the machine's call: its targets may check in
    /// before the call returns); argument: bit mask of the CPUs it goes to (64 first CPUs).
    IpiSent = 2,
    /// A CPU checked in (written by that CPU); argument: 0 before the escalation, 1 after it.
    CheckIn = 3,
    /// The first bounded wait ended; argument: how many online CPUs had not checked in.
    IpiWaitDone = 4,
    /// Escalation: a system reset is being sent to each CPU that did not answer the IPI (left just
    /// before the resets); argument: their mask.
    Escalated = 5,
    /// The escalation's bounded wait ended; argument: how many still had not checked in.
    ResetWaitDone = 6,
    /// One CPU's outcome (written by the crashing CPU for each CPU); argument: [`CpuOutcome`] code.
    ///
    /// [`CpuOutcome`]: crate::report::CpuOutcome
    Outcome = 7,
    /// The mask path was chosen; argument: 0 rtas, 1 rtas-takeover, 2 presenter, 3 hcall.
    MaskPath = 8,
    /// Interrupts are masked; argument: sources masked (through firmware, or the hypervisor).
    Masked = 9,
    /// The first crash drain starts.
    DrainStart = 10,
    /// The first crash drain returned; argument: records it delivered.
    DrainEnd = 11,
    /// The handover image is about to be written.
    ImageStart = 12,
    /// The handover image is written; argument: its length in bytes (0: it could not be).
    ImageWritten = 13,
    /// The switchover into the capture stage (the last thing before the jump).
    Switchover = 14,
    /// A machine check on a CPU during the crash path (written by that CPU's machine-check handler,
    /// which may run while the crashing CPU drains); argument: the interrupted NIP.
    MachineCheck = 15,
}

impl Event {
    const ALL: [Event; 15] = [
        Event::Entered,
        Event::IpiSent,
        Event::CheckIn,
        Event::IpiWaitDone,
        Event::Escalated,
        Event::ResetWaitDone,
        Event::Outcome,
        Event::MaskPath,
        Event::Masked,
        Event::DrainStart,
        Event::DrainEnd,
        Event::ImageStart,
        Event::ImageWritten,
        Event::Switchover,
        Event::MachineCheck,
    ];

    /// The event with encoding `code`, if any.
    ///
    /// ```
    /// use nmilog_ppc64::flight::Event;
    /// assert_eq!(Event::from_code(Event::Masked as u32), Some(Event::Masked));
    /// assert_eq!(Event::from_code(0), None);
    /// assert_eq!(Event::from_code(999), None);
    /// ```
    pub fn from_code(code: u32) -> Option<Event> {
        Event::ALL.into_iter().find(|e| *e as u32 == code)
    }

    /// A short name (`"entered"`, `"ipi-sent"`, `"check-in"`, ...).
    ///
    /// ```
    /// use nmilog_ppc64::flight::Event;
    /// assert_eq!(Event::Escalated.name(), "escalated");
    /// assert_eq!(Event::Switchover.name(), "switchover");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Event::Entered => "entered",
            Event::IpiSent => "ipi-sent",
            Event::CheckIn => "check-in",
            Event::IpiWaitDone => "ipi-wait-done",
            Event::Escalated => "escalated",
            Event::ResetWaitDone => "reset-wait-done",
            Event::Outcome => "outcome",
            Event::MaskPath => "mask-path",
            Event::Masked => "masked",
            Event::DrainStart => "drain-start",
            Event::DrainEnd => "drain-end",
            Event::ImageStart => "image-start",
            Event::ImageWritten => "image-written",
            Event::Switchover => "switchover",
            Event::MachineCheck => "machine-check",
        }
    }
}

/// One slot: the sequence word and the breadcrumb's three words.
#[repr(C)]
#[derive(Debug)]
struct Slot {
    /// `2i + 1` while breadcrumb `i` is written, `2i + 2` once it is whole, 0 if never written.
    seq: AtomicU64,
    /// Event code (low 32 bits) and CPU (high 32 bits).
    what: AtomicU64,
    ts_ns: AtomicU64,
    arg: AtomicU64,
}

/// A breadcrumb as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breadcrumb {
    /// Its number (0 = the first recorded since [`FlightRecorder::reset`]).
    pub index: u64,
    /// The event (`None`: an unknown code, i.e. damaged memory).
    pub event: Option<Event>,
    /// The CPU that wrote it.
    pub cpu: u32,
    /// When (the crash sequence's clock, [`crate::Machine::now_ns`]).
    pub ts_ns: u64,
    /// The event's argument.
    pub arg: u64,
    /// Whether the slot was whole (`false`: its writer died or was overwritten mid-write; the fields
    /// are then whatever the memory held).
    pub whole: bool,
}

/// The breadcrumb ring (see the [module docs](self)). `#[repr(C)]`: magic, head, then the slots.
#[repr(C)]
#[derive(Debug)]
pub struct FlightRecorder {
    magic: AtomicU64,
    /// Breadcrumbs claimed so far (the next one's number).
    head: AtomicU64,
    slots: [Slot; FLIGHT_SLOTS],
}

impl FlightRecorder {
    /// An empty recorder with its magic set (for a `static`). A recorder placed at a fixed address
    /// instead is initialised with [`reset`](Self::reset).
    pub const fn new() -> Self {
        FlightRecorder {
            magic: AtomicU64::new(FLIGHT_MAGIC),
            head: AtomicU64::new(0),
            slots: [const {
                Slot {
                    seq: AtomicU64::new(0),
                    what: AtomicU64::new(0),
                    ts_ns: AtomicU64::new(0),
                    arg: AtomicU64::new(0),
                }
            }; FLIGHT_SLOTS],
        }
    }

    /// Empties the recorder and sets its magic (at boot, before any crash; not from crash context
    /// concurrently with [`record`](Self::record)).
    ///
    /// ```
    /// use nmilog_ppc64::flight::{Event, FlightRecorder};
    /// let fr = FlightRecorder::new();
    /// fr.record(Event::Entered, 0, 1, 2);
    /// fr.reset();
    /// assert_eq!((fr.iter().count(), fr.recorded()), (0, 0));
    /// ```
    pub fn reset(&self) {
        for s in &self.slots {
            s.seq.store(0, Ordering::Relaxed);
            s.what.store(0, Ordering::Relaxed);
            s.ts_ns.store(0, Ordering::Relaxed);
            s.arg.store(0, Ordering::Relaxed);
        }
        self.head.store(0, Ordering::Relaxed);
        // LMM(flight:E): Release pairs with LMM(flight:F) in `is_valid`: a reader that sees the
        // magic sees the emptied slots and head.
        self.magic.store(FLIGHT_MAGIC, Ordering::Release);
    }

    /// Whether the magic is there (memory that holds a recorder).
    pub fn is_valid(&self) -> bool {
        // LMM(flight:F): Acquire pairs with LMM(flight:E) in `reset`.
        self.magic.load(Ordering::Acquire) == FLIGHT_MAGIC
    }

    /// Leaves a breadcrumb. No lock, no allocation, no wait: callable from crash and NMI context on
    /// any CPU at once.
    pub fn record(&self, event: Event, cpu: usize, ts_ns: u64, arg: u64) {
        let i = self.head.fetch_add(1, Ordering::Relaxed);
        let s = &self.slots[(i % FLIGHT_SLOTS as u64) as usize];
        s.seq.store(2 * i + 1, Ordering::Relaxed);
        // LMM(flight:D): the odd store is ordered before the field stores, so a reader whose second
        // sequence load (after LMM(flight:C)) still reads the old even value read old fields.
        fence(Ordering::Release);
        s.what
            .store(event as u32 as u64 | (cpu as u64) << 32, Ordering::Relaxed);
        s.ts_ns.store(ts_ns, Ordering::Relaxed);
        s.arg.store(arg, Ordering::Relaxed);
        // LMM(flight:A): Release pairs with LMM(flight:B) in `read`: whole fields before the even word.
        s.seq.store(2 * i + 2, Ordering::Release);
    }

    /// Breadcrumbs recorded since [`reset`](Self::reset) (claimed: a writer may still be filling the
    /// newest).
    pub fn recorded(&self) -> u64 {
        // Relaxed: each slot is validated by its own sequence word (LMM(flight:B)).
        self.head.load(Ordering::Relaxed)
    }

    /// Breadcrumbs overwritten by newer ones (the ring keeps the newest [`FLIGHT_SLOTS`]).
    ///
    /// ```
    /// use nmilog_ppc64::flight::{Event, FlightRecorder, FLIGHT_SLOTS};
    /// let fr = FlightRecorder::new();
    /// for i in 0..FLIGHT_SLOTS as u64 + 5 {
    ///     fr.record(Event::CheckIn, 1, i, 0);
    /// }
    /// assert_eq!(fr.lost(), 5);
    /// let first = fr.iter().next().unwrap();
    /// assert_eq!((first.index, first.ts_ns), (5, 5)); // the oldest kept
    /// assert_eq!(fr.iter().count(), FLIGHT_SLOTS);
    /// ```
    pub fn lost(&self) -> u64 {
        self.recorded().saturating_sub(FLIGHT_SLOTS as u64)
    }

    /// Reads breadcrumb `i` (which must be among the newest [`FLIGHT_SLOTS`]).
    fn read(&self, i: u64) -> Breadcrumb {
        let s = &self.slots[(i % FLIGHT_SLOTS as u64) as usize];
        // LMM(flight:B): Acquire pairs with LMM(flight:A) in `record`.
        let seq0 = s.seq.load(Ordering::Acquire);
        let what = s.what.load(Ordering::Relaxed);
        let ts_ns = s.ts_ns.load(Ordering::Relaxed);
        let arg = s.arg.load(Ordering::Relaxed);
        // LMM(flight:C): orders the field loads before the second sequence load; pairs with
        // LMM(flight:D) in `record`.
        fence(Ordering::Acquire);
        let seq1 = s.seq.load(Ordering::Relaxed);
        Breadcrumb {
            index: i,
            event: Event::from_code(what as u32),
            cpu: (what >> 32) as u32,
            ts_ns,
            arg,
            whole: seq0 == 2 * i + 2 && seq1 == seq0,
        }
    }

    /// The breadcrumbs kept, oldest first (torn ones included, marked `whole: false`).
    pub fn iter(&self) -> impl Iterator<Item = Breadcrumb> + '_ {
        let head = self.recorded();
        let first = head.saturating_sub(FLIGHT_SLOTS as u64);
        (first..head).map(move |i| self.read(i))
    }
}

impl Default for FlightRecorder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn concurrent_writers_lose_nothing_within_capacity() {
        let fr = FlightRecorder::new();
        std::thread::scope(|s| {
            for cpu in 0..4 {
                let fr = &fr;
                s.spawn(move || {
                    for k in 0..8 {
                        fr.record(Event::CheckIn, cpu, k, cpu as u64);
                    }
                });
            }
        });
        let all: std::vec::Vec<_> = fr.iter().collect();
        assert_eq!(all.len(), 32);
        assert!(all
            .iter()
            .all(|b| b.whole && b.event == Some(Event::CheckIn)));
        for cpu in 0..4u32 {
            let ts: std::vec::Vec<u64> = all
                .iter()
                .filter(|b| b.cpu == cpu)
                .map(|b| b.ts_ns)
                .collect();
            assert_eq!(ts, (0..8).collect::<std::vec::Vec<_>>(), "cpu {cpu}");
        }
    }

    #[test]
    fn a_writer_that_died_mid_slot_reads_torn() {
        let fr = FlightRecorder::new();
        fr.record(Event::Entered, 0, 1, 0);
        // Breadcrumb 1's writer claimed its slot and stored the odd word, then died.
        fr.head.fetch_add(1, Ordering::Relaxed);
        fr.slots[1].seq.store(3, Ordering::Relaxed);
        let v: std::vec::Vec<_> = fr.iter().collect();
        assert!(v[0].whole);
        assert!(!v[1].whole);
    }
}
