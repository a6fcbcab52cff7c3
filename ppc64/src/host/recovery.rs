//! The capture stage after a death of the crash path (`--from-memory`): no image, no report — only
//! the dead process's memory (the handover region). Finds the log's descriptor by scanning every
//! word of it ([`recover::scan`]: no address is passed), rebuilds the handover image with
//! [`RecoveredLog::write_image`], and reads the ground truth of each CPU's log calls from the
//! simulation's tracking in the same memory, as it was when the machine stopped.

use std::sync::atomic::Ordering;

use nmilog::handover;
use nmilog::recover::{self, AtomicUsize, DrainSource, RawDump, RecoveredLog};

use super::config::{MAIN_WORDS, MAX_CPUS};
use super::memory::{Kernel, Layout};
use super::truth;

/// What the rebuild found.
pub(crate) struct Rebuilt {
    /// The handover image written from the memory.
    pub(crate) image: Vec<u8>,
    /// The descriptor's offset in the region (found by the scan).
    pub(crate) desc_offset: usize,
    /// Words the scan went through.
    pub(crate) scanned_words: usize,
    /// Valid descriptors the scan found.
    pub(crate) valid: usize,
}

/// Rebuilds the log from `region` (the whole handover region, mapped here at `region.as_ptr()`,
/// at `base` in the crashed process) and completes the ground-truth words `w` from the kernel's
/// memory in it.
pub(crate) fn rebuild(region: &[u8], base: usize, w: &mut [u64]) -> Result<Rebuilt, String> {
    let n = region.len() / size_of::<usize>();
    if !(region.as_ptr() as usize).is_multiple_of(align_of::<usize>()) {
        return Err("the region is not word-aligned".into());
    }
    // SAFETY: `region` is a live mapping of at least `n` words, word-aligned (checked above); any
    // bits are a valid `AtomicUsize`, and nothing writes the mapping while it is read (the process
    // that wrote it is gone).
    let words: &[AtomicUsize] =
        unsafe { std::slice::from_raw_parts(region.as_ptr() as *const AtomicUsize, n) };
    let dump = RawDump::new(base, words);
    let scan = recover::scan(&dump);
    let Some(desc) = scan.descriptor else {
        return Err(format!(
            "no log descriptor in {} words of memory ({} rejected{})",
            n,
            scan.rejected,
            scan.first_rejection
                .map_or(String::new(), |e| format!(": {e}"))
        ));
    };
    let log = RecoveredLog::open(&dump, desc).map_err(|e| format!("recovering the log: {e}"))?;
    let scratch: Vec<DrainSource> = (0..log.sources()).map(|_| DrainSource::new()).collect();
    let mut image =
        vec![0u8; handover::max_image_size(desc.cpus(), desc.depth(), ring_words(w), MAIN_WORDS)];
    let rep = log
        .write_image(&scratch, &mut image)
        .map_err(|e| format!("writing the image from memory: {e}"))?;
    image.truncate(rep.len);
    fill_truth_from_memory(region, w, &log)?;
    Ok(Rebuilt {
        image,
        desc_offset: desc.address().wrapping_sub(base),
        scanned_words: n,
        valid: scan.valid,
    })
}

/// Words per ring, from the scenario's `--ring-bytes` in the ground truth (clamped to what
/// `--ring-bytes` accepts: a corrupt word cannot size an allocation).
fn ring_words(w: &[u64]) -> usize {
    super::config::ring_words(w.get(truth::W_RING_BYTES).copied().unwrap_or(0))
}

/// The per-CPU ground truth, from the simulation's tracking in the kernel's memory. A CPU that had
/// checked in (and the crashing CPU) has its exact truth, recorded when it stopped; any other was
/// stopped by the machine's reset at an arbitrary instruction: its truth is a range, from the
/// records it had committed (`C_LOWER_*`) to those plus the call it was in (`C_TASK`/`C_IRQ`).
fn fill_truth_from_memory<M: recover::Memory + ?Sized>(
    region: &[u8],
    w: &mut [u64],
    log: &RecoveredLog<'_, M>,
) -> Result<(), String> {
    let ncpu = (w[truth::W_NCPU] as usize).min(MAX_CPUS);
    let layout = Layout::new(ncpu, ring_words(w));
    if region.len() < layout.len || !(region.as_ptr() as usize).is_multiple_of(4096) {
        return Err("the region is smaller than the kernel's memory".into());
    }
    // SAFETY: the region holds a `Kernel` at `kernel_at` (page-aligned: the region is, checked
    // above), written by this same program; every field is an atomic (any bits valid), and nothing
    // writes it any more. Only the crash state and the tracking are read through it (the log is read
    // through the dump above, as any reader would).
    let k: &Kernel = unsafe { &*(region.as_ptr().add(layout.kernel_at) as *const Kernel) };
    let crash_cpu = log.crashing_cpu().unwrap_or(w[truth::W_CRASH_CPU] as usize);
    w[truth::W_CRASH_CPU] = crash_cpu as u64;
    for c in 0..ncpu {
        let s = &k.sim[c];
        let b = truth::CPU_BASE + c * truth::PER_CPU;
        let stopped = c == crash_cpu || k.crash.checked_in(c);
        w[b + truth::C_ANSWERED] = stopped as u64;
        // Ordered by the process's exit: the tracking is final.
        let set = s.truth_set.load(Ordering::Relaxed);
        w[b + truth::C_TRUTH_SET] = (set || !stopped) as u64;
        if stopped {
            w[b + truth::C_TASK] = s.truth_task.load(Ordering::Relaxed);
            w[b + truth::C_IRQ] = s.truth_irq.load(Ordering::Relaxed);
            w[b + truth::C_MID] = s.mid.load(Ordering::Relaxed) as u64;
        } else {
            for (t, upper, lower) in [
                (&s.task, truth::C_TASK, truth::C_LOWER_TASK),
                (&s.irq, truth::C_IRQ, truth::C_LOWER_IRQ),
            ] {
                w[b + lower] = t.committed.load(Ordering::Relaxed);
                w[b + upper] = t.upper_bound();
            }
            w[b + truth::C_MID] = 0;
        }
        w[b + truth::C_DEFERRED] = s.deferred.load(Ordering::Relaxed);
        w[b + truth::C_CPPR] = s.cppr.load(Ordering::Relaxed) as u64;
        if let Some((ts, kind, d)) = k.crash.stop_info(c) {
            w[b + truth::C_STOP_TS] = ts;
            w[b + truth::C_STOP_CTX] =
                nmilog::Header::pack_ctx(kind.unwrap_or(nmilog::ContextKind::Task), d) as u64;
        }
        w[b + truth::C_PC] = k.crash.saved_regs(c).map_or(0, |r| r.pc as u64);
    }
    Ok(())
}
