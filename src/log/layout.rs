//! Where a reader of a memory dump finds this log's words: the main log, each (CPU, depth) ring,
//! and the few words the crash drain reads beside them (the flush's cursors and loss counters, the
//! context kinds, the crashing CPU). [`crate::recover`]'s descriptor publishes their addresses.
//!
//! Contract: read-only accessors; the words are the very ones the live drain reads.

use super::Log;
use crate::ring::Ring;
use crate::sync::AtomicUsize;
use crate::Platform;

/// The words of one (CPU, depth) source.
pub(crate) struct SourceWords<'a> {
    pub(crate) ring: &'a Ring,
    /// The flush's cursor `seq` (LMM(cursor:A) stores it).
    pub(crate) flushed_seq: &'a AtomicUsize,
    /// Records the flush found overwritten.
    pub(crate) flush_overwritten: &'a AtomicUsize,
    /// Records the flush moved into the main log.
    pub(crate) flush_moved: &'a AtomicUsize,
    /// The context kind noted at this depth (`PerCpu::kind_at`).
    pub(crate) kind: Option<&'a AtomicUsize>,
    /// The CPU's nesting-overflow count (depth 0 only: it counts with depth 0's drops).
    pub(crate) overflow: Option<&'a AtomicUsize>,
}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// Source `(cpu, depth)`'s words, if there is such a source.
    pub(crate) fn source_words(&self, cpu: usize, depth: usize) -> Option<SourceWords<'_>> {
        let pc = self.cpus.get(cpu)?;
        let cons = self.main.consumers.get(cpu)?.get(depth)?;
        Some(SourceWords {
            ring: pc.ring(depth)?,
            flushed_seq: cons.seq_word(),
            flush_overwritten: &cons.overwritten,
            flush_moved: cons.moved_word(),
            kind: pc.kind_word(depth),
            overflow: (depth == 0).then(|| pc.overflow_word()),
        })
    }

    /// Source `(cpu, depth)`'s ring, read-only users' view: for a log sized at boot whose arena has
    /// no ring there (not attached yet, or a CPU beyond the count it was attached for), an empty
    /// placeholder that nothing writes (only the ring's own CPU writes, through
    /// [`PerCpu::ring`](crate::percpu::PerCpu::ring), which has none to give).
    #[inline(always)]
    pub(crate) fn ring_or_empty(&self, cpu: usize, depth: usize) -> &Ring {
        let pc = &self.cpus[cpu];
        match pc.ring(depth) {
            Some(r) => r,
            None => unattached_main(&pc.rings[0]),
        }
    }

    /// The main log's ring (for a log sized at boot whose arena is not attached yet, an empty
    /// placeholder that nothing writes: the flush checks [`main_attached`](Self::main_attached)).
    #[inline(always)]
    pub(crate) fn main_ring(&self) -> &Ring {
        if MAIN_WORDS != 0 {
            return &self.main.ring;
        }
        match self.main.arena.ring() {
            Some(r) => r,
            None => unattached_main(&self.main.ring),
        }
    }

    /// The crashing-CPU word (`cpu + 1`, or 0).
    pub(crate) fn crash_cpu_word(&self) -> &AtomicUsize {
        &self.crash_cpu
    }

    /// The bad-CPU-id drop counter.
    pub(crate) fn bad_cpu_word(&self) -> &AtomicUsize {
        &self.bad_cpu
    }

    /// The count of log calls made before registration.
    pub(crate) fn unregistered_word(&self) -> &AtomicUsize {
        &self.unregistered
    }
}

/// The placeholder ring of a boot-sized log where its arena gave none: empty, read-only.
#[cfg(not(nmilog_loom))]
fn unattached_main(_own: &Ring) -> &Ring {
    static EMPTY: crate::ring::RecordRing<32> = crate::ring::RecordRing::new();
    &EMPTY
}

/// Under the model checker (const-sized logs only) the log's own ring.
#[cfg(nmilog_loom)]
fn unattached_main(own: &Ring) -> &Ring {
    own
}
