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
    /// The context kind at this depth (none at depth 0: always task).
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
            ring: pc.rings.get(depth)?,
            flushed_seq: cons.seq_word(),
            flush_overwritten: &cons.overwritten,
            kind: pc.kind_word(depth),
            overflow: (depth == 0).then(|| pc.overflow_word()),
        })
    }

    /// The main log's ring.
    pub(crate) fn main_ring(&self) -> &Ring {
        &self.main.ring
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
