//! What the crash drain reads: a [`DrainInput`] — the live `Log` on the crashing CPU, or a log found
//! in a memory dump ([`crate::recover`]). One drain (`run.rs`), one merge, whichever it is: a dump
//! rebuilt offline gives the records, order and accounting the live drain would have given.
//!
//! Contract: every method only reads. The rings and the main log are [`Ring`]s (for a dump, laid
//! out in the dump's words by [`Ring::from_words`](crate::ring::Ring)), read with the same validated
//! reads as live, so a damaged ring reads as damaged records, never as a panic.

use super::super::accounting::FlushState;
use super::super::Log;
use crate::record::ContextKind;
use crate::ring::Ring;
use crate::Platform;

/// The log a crash drain reads. Sources are `(cpu, depth)` for `cpu < cpus()`, `depth < depth()`.
pub(crate) trait DrainInput {
    /// CPUs with rings to drain.
    fn cpus(&self) -> usize;
    /// Rings per CPU.
    fn depth(&self) -> usize;
    /// The crashing CPU (always stopped: it is the one draining), or `usize::MAX` if none.
    fn me(&self) -> usize;
    /// How far the flush got in source `(cpu, depth)`: its consumer's words, loaded as
    /// `Consumer::state_for_drain` does (the sequence number with
    /// Acquire, LMM(cursor:B)), before anything of the main log.
    fn flushed(&self, cpu: usize, depth: usize) -> FlushState;
    /// The main log.
    fn main(&self) -> &Ring;
    /// Source `(cpu, depth)`'s ring.
    fn ring(&self, cpu: usize, depth: usize) -> &Ring;
    /// Log calls refused on source `(cpu, depth)` (for depth 0, with the CPU's nesting overflow).
    fn dropped(&self, cpu: usize, depth: usize) -> u64;
    /// The kind of context last entered at `depth` on `cpu`.
    fn kind_at(&self, cpu: usize, depth: usize) -> ContextKind;
    /// Log calls refused for a bad CPU id.
    fn bad_cpu_dropped(&self) -> u64;
    /// Log calls made before the log was registered as the global logger.
    fn unregistered_dropped(&self) -> u64;
}

impl<
        P: Platform,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > DrainInput for Log<P, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    fn cpus(&self) -> usize {
        self.platform.cpu_count().min(CPUS)
    }
    fn depth(&self) -> usize {
        DEPTH
    }
    fn me(&self) -> usize {
        self.platform.cpu_id()
    }
    fn flushed(&self, cpu: usize, depth: usize) -> FlushState {
        self.main.consumers[cpu][depth].state_for_drain()
    }
    fn main(&self) -> &Ring {
        self.main_ring()
    }
    fn ring(&self, cpu: usize, depth: usize) -> &Ring {
        self.ring_or_empty(cpu, depth)
    }
    fn dropped(&self, cpu: usize, depth: usize) -> u64 {
        let pc = &self.cpus[cpu];
        let overflow = if depth == 0 { pc.overflow_dropped() } else { 0 };
        pc.ring(depth)
            .map_or(0, |r| r.dropped())
            .wrapping_add(overflow)
    }
    fn kind_at(&self, cpu: usize, depth: usize) -> ContextKind {
        self.cpus[cpu].kind_at(depth)
    }
    fn bad_cpu_dropped(&self) -> u64 {
        Log::bad_cpu_dropped(self)
    }
    fn unregistered_dropped(&self) -> u64 {
        Log::unregistered_dropped(self)
    }
}
