//! A log found in a dump, checked, and read as the crash drain's input.
//!
//! Contract: [`RecoveredLog::open`] checks everything the descriptor names against the dump once
//! (bounded by the descriptor's size); afterwards every read still goes through the dump's bounds
//! checks (memory that changes under the reader — a CPU that never stopped — reads as an empty ring
//! or a zero word, never as a panic).

use super::descriptor::{e, Descriptor};
use super::memory::Memory;
use super::RecoverError;
use crate::log::{DrainInput, DrainSource, FlushState};
use crate::record::ContextKind;
use crate::ring::{RecordRing, Ring};
use crate::sync::Ordering;

const W: usize = core::mem::size_of::<usize>();

/// What a ring that cannot be read (any more) reads as.
static EMPTY: RecordRing<32> = RecordRing::new();

/// A log found in a memory dump, ready to drain ([`drain`](Self::drain),
/// [`write_image`](Self::write_image)).
pub struct RecoveredLog<'m, M: Memory + ?Sized> {
    mem: &'m M,
    desc: Descriptor,
    main: &'m Ring,
}

impl<M: Memory + ?Sized> core::fmt::Debug for RecoveredLog<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecoveredLog")
            .field("descriptor", &self.desc)
            .finish_non_exhaustive()
    }
}

/// `n` words at `addr` as a ring, if they are one.
fn ring_at<M: Memory + ?Sized>(mem: &M, addr: usize, n: usize) -> Option<&Ring> {
    Ring::from_words(mem.words(addr, n)?)
}

impl<'m, M: Memory + ?Sized> RecoveredLog<'m, M> {
    /// Checks the descriptor `desc` (from [`scan`](super::scan), [`find`](super::find) or
    /// [`Descriptor::read`]) against `mem`: its tables' checksum and layout, and that the main log,
    /// every ring and every word it names are in the dump, aligned, and rings of valid sizes.
    /// Overlaps between rings are checked by [`drain`](Self::drain) and
    /// [`write_image`](Self::write_image), in their scratch memory.
    pub fn open(mem: &'m M, desc: Descriptor) -> Result<Self, RecoverError> {
        desc.check_tables(mem)?;
        let word = |what: &'static str, addr: usize| {
            mem.words(addr, 1)
                .map(|_| ())
                .ok_or(RecoverError::OutsideDump { what, addr })
        };
        let main = ring_at(mem, desc.main.0, desc.main.1).ok_or(
            if mem.words(desc.main.0, desc.main.1).is_none() {
                RecoverError::OutsideDump {
                    what: "main log",
                    addr: desc.main.0,
                }
            } else {
                RecoverError::BadRing {
                    cpu: usize::MAX,
                    depth: 0,
                }
            },
        )?;
        word("crashing-CPU word", desc.crash_cpu_addr)?;
        word("bad-CPU counter", desc.bad_cpu_addr)?;
        word("pre-registration counter", desc.unregistered_addr)?;
        let (stop, stride) = desc.stop;
        if stop != 0 {
            if stride % W != 0 || stride == 0 {
                return Err(RecoverError::Corrupt {
                    what: "check-in flag stride",
                });
            }
            for c in 0..desc.cpus {
                let addr = c
                    .checked_mul(stride)
                    .and_then(|o| stop.checked_add(o))
                    .ok_or(RecoverError::Corrupt {
                        what: "check-in flags",
                    })?;
                word("check-in flag", addr)?;
            }
        }
        for c in 0..desc.cpus {
            for d in 0..desc.depth {
                let ent = desc
                    .entry(mem, c * desc.depth + d)
                    .ok_or(RecoverError::OutsideDump {
                        what: "descriptor tables",
                        addr: desc.addr,
                    })?;
                let v = |i: usize| ent[i].load(Ordering::Relaxed);
                let (addr, n) = (v(e::RING_ADDR), v(e::RING_WORDS));
                if mem.words(addr, n).is_none() {
                    return Err(RecoverError::OutsideDump { what: "ring", addr });
                }
                if ring_at(mem, addr, n).is_none() {
                    return Err(RecoverError::BadRing { cpu: c, depth: d });
                }
                word("flush cursor", v(e::FLUSHED_SEQ_ADDR))?;
                word("flush counter", v(e::FLUSH_OVERWRITTEN_ADDR))?;
                word("flush moved count", v(e::FLUSH_MOVED_ADDR))?;
                for (what, i) in [
                    ("context kind", e::KIND_ADDR),
                    ("overflow counter", e::OVERFLOW_ADDR),
                ] {
                    if v(i) != 0 {
                        word(what, v(i))?;
                    }
                }
            }
        }
        Ok(RecoveredLog { mem, desc, main })
    }

    /// The descriptor.
    pub fn descriptor(&self) -> &Descriptor {
        &self.desc
    }

    /// Rings in the log: the scratch memory [`drain`](Self::drain) and
    /// [`write_image`](Self::write_image) need, in [`DrainSource`]s.
    pub fn sources(&self) -> usize {
        self.desc.cpus * self.desc.depth
    }

    /// The CPU that entered the crash path, if one did.
    pub fn crashing_cpu(&self) -> Option<usize> {
        match self.word(self.desc.crash_cpu_addr, Ordering::Relaxed) {
            0 => None,
            v => Some(v - 1),
        }
    }

    /// Whether `cpu` counts as stopped: the crashing CPU, and per the check-in flags if the
    /// descriptor names them (else every CPU: a dump is final).
    pub fn stopped(&self, cpu: usize) -> bool {
        let (stop, stride) = self.desc.stop;
        if stop == 0 || Some(cpu) == self.crashing_cpu() {
            return true;
        }
        // LMM(checkin:B) for a reader in the same memory as the crash sequence: pairs with the
        // stopped CPU's Release store of its flag, LMM(checkin:A).
        let addr = cpu.wrapping_mul(stride).wrapping_add(stop);
        self.word(addr, Ordering::Acquire) != 0
    }

    /// The word at `addr` (0 if it is not in the dump any more).
    fn word(&self, addr: usize, order: Ordering) -> usize {
        self.mem.words(addr, 1).map_or(0, |w| w[0].load(order))
    }

    /// Source `(cpu, depth)`'s entry word `i` (0 if unreadable).
    fn entry(&self, cpu: usize, depth: usize, i: usize) -> usize {
        self.desc
            .entry(self.mem, cpu * self.desc.depth + depth)
            .map_or(0, |ent| ent[i].load(Ordering::Relaxed))
    }

    /// Checks `scratch`: enough entries, and (using them as room) that no two rings and the main
    /// log overlap. O(n log n) for n rings.
    pub(super) fn check_scratch(&self, scratch: &[DrainSource]) -> Result<(), RecoverError> {
        let n = self.sources();
        let Some(room) = scratch.get(..n) else {
            return Err(RecoverError::ScratchTooSmall { needed: n });
        };
        // Each ring's [start, end) in its scratch entry's `start_pos`/`start_seq` (overwritten by
        // the drain's snapshot afterwards), sorted by start with a heapsort (in place, bounded).
        let span = |addr: usize, words: usize| (addr, addr.saturating_add(words.saturating_mul(W)));
        for (i, s) in room.iter().enumerate() {
            let (a, b) = span(
                self.entry(i / self.desc.depth, i % self.desc.depth, e::RING_ADDR),
                self.entry(i / self.desc.depth, i % self.desc.depth, e::RING_WORDS),
            );
            s.start_pos.store(a, Ordering::Relaxed);
            s.start_seq.store(b, Ordering::Relaxed);
        }
        heapsort(room);
        let (ma, mb) = span(self.desc.main.0, self.desc.main.1);
        let mut prev_end = 0;
        for (i, s) in room.iter().enumerate() {
            let (a, b) = (
                s.start_pos.load(Ordering::Relaxed),
                s.start_seq.load(Ordering::Relaxed),
            );
            if (i > 0 && a < prev_end) || (a < mb && ma < b) {
                return Err(RecoverError::Overlap { addr: a.max(ma) });
            }
            prev_end = prev_end.max(b);
        }
        Ok(())
    }
}

/// Sorts `v` by `start_pos` (ties by `start_seq`), swapping the two words: heapsort, in place.
fn heapsort(v: &[DrainSource]) {
    let key = |i: usize| {
        (
            v[i].start_pos.load(Ordering::Relaxed),
            v[i].start_seq.load(Ordering::Relaxed),
        )
    };
    let swap = |i: usize, j: usize| {
        let (a, b) = (key(i), key(j));
        v[i].start_pos.store(b.0, Ordering::Relaxed);
        v[i].start_seq.store(b.1, Ordering::Relaxed);
        v[j].start_pos.store(a.0, Ordering::Relaxed);
        v[j].start_seq.store(a.1, Ordering::Relaxed);
    };
    let sift = |mut root: usize, end: usize| loop {
        let l = 2 * root + 1;
        if l >= end {
            return;
        }
        let c = if l + 1 < end && key(l + 1) > key(l) {
            l + 1
        } else {
            l
        };
        if key(root) >= key(c) {
            return;
        }
        swap(root, c);
        root = c;
    };
    let n = v.len();
    for i in (0..n / 2).rev() {
        sift(i, n);
    }
    for end in (1..n).rev() {
        swap(0, end);
        sift(0, end);
    }
}

impl<M: Memory + ?Sized> DrainInput for RecoveredLog<'_, M> {
    fn cpus(&self) -> usize {
        self.desc.cpus
    }
    fn depth(&self) -> usize {
        self.desc.depth
    }
    fn me(&self) -> usize {
        self.crashing_cpu().unwrap_or(usize::MAX)
    }
    fn flushed(&self, cpu: usize, depth: usize) -> FlushState {
        // The order and orderings of `Consumer::state_for_drain`, for a reader in the same memory
        // as a flush owner that never stopped. LMM(moved:B): pairs with LMM(moved:A).
        let moved = self.word(
            self.entry(cpu, depth, e::FLUSH_MOVED_ADDR),
            Ordering::Acquire,
        );
        // LMM(cursor:B): pairs with LMM(cursor:A), as the live drain's load does.
        let seq = self.word(
            self.entry(cpu, depth, e::FLUSHED_SEQ_ADDR),
            Ordering::Acquire,
        );
        let overwritten = self.word(
            self.entry(cpu, depth, e::FLUSH_OVERWRITTEN_ADDR),
            Ordering::Relaxed,
        );
        FlushState {
            seq,
            overwritten,
            moved,
        }
    }
    fn main(&self) -> &Ring {
        self.main
    }
    fn ring(&self, cpu: usize, depth: usize) -> &Ring {
        ring_at(
            self.mem,
            self.entry(cpu, depth, e::RING_ADDR),
            self.entry(cpu, depth, e::RING_WORDS),
        )
        .unwrap_or(&EMPTY)
    }
    fn dropped(&self, cpu: usize, depth: usize) -> u64 {
        let overflow = match self.entry(cpu, depth, e::OVERFLOW_ADDR) {
            0 => 0,
            a => self.word(a, Ordering::Relaxed),
        };
        self.ring(cpu, depth)
            .dropped()
            .wrapping_add(overflow as u64)
    }
    fn kind_at(&self, cpu: usize, depth: usize) -> ContextKind {
        match self.entry(cpu, depth, e::KIND_ADDR) {
            0 => ContextKind::Task,
            a => ContextKind::from_u8(self.word(a, Ordering::Relaxed) as u8)
                .unwrap_or(ContextKind::Nmi),
        }
    }
    fn bad_cpu_dropped(&self) -> u64 {
        self.word(self.desc.bad_cpu_addr, Ordering::Relaxed) as u64
    }
    fn unregistered_dropped(&self) -> u64 {
        self.word(self.desc.unregistered_addr, Ordering::Relaxed) as u64
    }
}
