//! The capture stage's side of the secondary hold (`hold`): waits (bounded) until every CPU the
//! crash stopped has arrived in the hold loop, releases them, waits (bounded) until each is back, and
//! reports it: `capture: secondary CPUs: A of E held at 0x...; B came back into the capture stage in
//! T ms`. `E` is the CPUs expected (those that answered the crash, but the crashing CPU: the
//! sequence's report; none when the crash path died before its go). Returns whether every expected
//! CPU arrived and every CPU that arrived came back.

use core::fmt::Write;

use crate::bootparams::{CpuMask, HOLD_ENTRY};
use crate::from_memory::{ms, timebase};
use crate::hold;
use crate::verify::MAX_CPUS;

/// How long the capture stage waits for the held CPUs to arrive, and again to come back. Generous:
/// each wait ends as soon as every CPU is there (in 0–15 ms even with four busy loops beside two
/// host cores), but a vCPU of a loaded host can wait for a host core for longer than a second
/// (one run in 27 under `cargo xtask soak --load` missed a 1 s bound).
const WAIT_MS: u64 = 5000;

/// Spins until `done()` or `WAIT_MS` have passed; returns the ticks waited.
fn wait(tb_freq: u64, done: impl Fn() -> bool) -> u64 {
    let t0 = timebase();
    let limit = tb_freq.max(1) / 1000 * WAIT_MS;
    while !done() && timebase().wrapping_sub(t0) < limit {
        core::hint::spin_loop();
    }
    timebase().wrapping_sub(t0)
}

/// Ticks spent in [`wait_for_arrivals`] (the first wait for the held CPUs).
static WAITED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Waits (bounded) until every expected CPU has arrived in the hold, without releasing any: a CPU
/// arrives after everything it did on the crash path, so what it left in the flight recorder (a
/// machine check it took after its check-in) is there to read once this returns.
pub fn wait_for_arrivals(ncpus: usize, expected: impl Fn(usize) -> bool, tb_freq: u64) {
    let ncpus = ncpus.min(MAX_CPUS);
    let t = wait(tb_freq, || {
        (0..ncpus)
            .filter(|&c| expected(c))
            .all(|c| hold::arrived(c).is_some())
    });
    // Relaxed: this CPU alone reads it back.
    WAITED.fetch_add(t, core::sync::atomic::Ordering::Relaxed);
}

/// See the module docs. `expected(c)`: whether CPU `c` should be in the hold.
pub fn release_and_report(
    ncpus: usize,
    expected: impl Fn(usize) -> bool,
    tb_freq: u64,
    out: &mut impl Write,
) -> bool {
    let ncpus = ncpus.min(MAX_CPUS);
    let want = (0..ncpus).filter(|&c| expected(c)).count();
    let arrived_all = || {
        (0..ncpus)
            .filter(|&c| expected(c))
            .all(|c| hold::arrived(c).is_some())
    };
    let t_arrive = WAITED.load(core::sync::atomic::Ordering::Relaxed) + wait(tb_freq, arrived_all);
    let held = (0..ncpus).filter(|&c| hold::arrived(c).is_some()).count();
    // Each held CPU closed its presenter before it came (CPPR 0: nothing presented to it), as read
    // back through the hypervisor (XICS: H_IPOLL on its server) or, where only the CPU can read its
    // presenter (XIVE: H_IPOLL is not offered, the TIMA shows each CPU its own), as it reported.
    let mut through_cpu = false;
    let closed = (0..ncpus)
        .filter(|&c| {
            let Some(hw) = hold::arrived(c) else {
                return false;
            };
            match crate::hcall::poll_cppr(hw) {
                (crate::hcall::H_FUNCTION, _) => {
                    through_cpu = true;
                    hold::reported_cppr(c) == Some(0)
                }
                (st, cppr) => st == 0 && cppr == 0,
            }
        })
        .count();
    // Release, and wake each held CPU from its H_JOIN.
    hold::release();
    for c in 0..ncpus {
        if let Some(hw) = hold::arrived(c) {
            let _ = crate::hcall::prod(hw);
        }
    }
    let t_back = wait(tb_freq, || {
        (0..ncpus).all(|c| hold::arrived(c).is_none() || hold::back(c))
    });
    let back = (0..ncpus).filter(|&c| hold::back(c)).count();
    let missing: CpuMask = (0..ncpus)
        .filter(|&c| expected(c) && hold::arrived(c).is_none())
        .collect();
    let ok = missing == CpuMask::EMPTY && back == held && closed == held;
    let _ = writeln!(
        out,
        "capture: secondary CPUs: {held} of {want} held at {HOLD_ENTRY:#x} (arrived within {} ms; presenter torn down, CPPR 0, on {closed}{}); {back} came back into the capture stage in {} ms{}",
        ms(t_arrive, tb_freq),
        if through_cpu { " as each read its XIVE TIMA" } else { "" },
        ms(t_back, tb_freq),
        if ok { "" } else { "  <-- FAILED" }
    );
    for c in (0..ncpus).filter(|&c| missing.contains(c)) {
        let _ = writeln!(
            out,
            "capture: C{c}: answered the crash but never reached the hold  <-- FAILED"
        );
    }
    ok
}
