//! The capture stage's reading of the crash flight recorder (`nmilog_ppc64::flight`, at
//! `bootparams::FLIGHT_BASE` in the preserved region): the crash path's timeline, printed whether the
//! path finished (a handover image) or died (memory only), and the per-CPU outcomes of the stop phase.
//!
//! Checks: the recorder's magic; no torn breadcrumb except possibly the newest (a writer that died
//! mid-slot); after a finished crash path, its stages in order from `entered` to `switchover` (a
//! `machine-check` breadcrumb, left by another CPU on its own time, may follow), and each CPU's
//! `outcome` breadcrumb equal to the sequence's report in the parameter block.

use core::fmt::Write;

use nmilog_ppc64::flight::{Breadcrumb, Event};
use nmilog_ppc64::{CpuOutcome, FlightRecorder};

/// The stages a finished crash path leaves, in this order (other breadcrumbs interleave).
const FINISHED: [Event; 8] = [
    Event::Entered,
    Event::IpiSent,
    Event::IpiWaitDone,
    Event::MaskPath,
    Event::Masked,
    Event::DrainEnd,
    Event::ImageWritten,
    Event::Switchover,
];

/// Writes one breadcrumb's argument in words.
fn describe(b: &Breadcrumb, out: &mut impl Write) {
    let a = b.arg;
    let _ = match b.event {
        Some(Event::Entered) => write!(out, " ({a} CPUs)"),
        Some(Event::IpiSent) => write!(out, " (to CPU mask {a:#x})"),
        Some(Event::CheckIn) => out.write_str(if a == 0 {
            " (answered the crash IPI)"
        } else {
            " (after the escalation)"
        }),
        Some(Event::IpiWaitDone) => write!(out, " ({a} CPU(s) missing)"),
        Some(Event::Escalated) => write!(out, " (system reset to CPU mask {a:#x})"),
        Some(Event::ResetWaitDone) => write!(out, " ({a} CPU(s) still missing)"),
        Some(Event::Outcome) => write!(
            out,
            ": {}",
            CpuOutcome::from_code(a as u8).map_or("?", |o| o.name())
        ),
        Some(Event::MaskPath) => write!(
            out,
            " ({})",
            match a {
                0 => "rtas",
                1 => "rtas-takeover",
                2 => "presenter",
                3 => "hcall",
                _ => "?",
            }
        ),
        Some(Event::Masked) => write!(out, " ({a} source(s) masked)"),
        Some(Event::DrainEnd) => write!(out, " ({a} records)"),
        Some(Event::ImageWritten) | Some(Event::Switchover) => write!(out, " ({a} bytes)"),
        Some(Event::MachineCheck) => write!(out, " (at nip {a:#x})"),
        _ => Ok(()),
    };
}

/// Prints the timeline and checks it. `outcome`: the sequence's report (each CPU's code), `None`
/// when the crash path died (no report). Returns whether the checks passed.
pub fn print_and_check(
    fr: &FlightRecorder,
    at: usize,
    outcome: Option<&[u8]>,
    out: &mut impl Write,
) -> bool {
    if !fr.is_valid() {
        let _ = writeln!(out, "capture: flight recorder at {at:#x}: no magic: FAILED");
        return false;
    }
    let n = fr.recorded();
    let torn_ok = |b: &Breadcrumb| b.whole || b.index + 1 == n;
    let t0 = fr.iter().next().map_or(0, |b| b.ts_ns);
    let torn = fr.iter().filter(|b| !b.whole).count();
    let _ = writeln!(
        out,
        "capture: flight recorder at {at:#x}: {n} breadcrumb(s), {} overwritten, {torn} torn; the crash path's timeline (ms since the first):",
        fr.lost()
    );
    let mut ok = true;
    let mut next = 0;
    let mut last = None;
    for b in fr.iter() {
        let dt = b.ts_ns.saturating_sub(t0);
        let _ = write!(
            out,
            "capture: flight {:>4}.{:03} ms C{} {}",
            dt / 1_000_000,
            (dt / 1_000) % 1_000,
            b.cpu,
            b.event.map_or("UNKNOWN", |e| e.name())
        );
        describe(&b, out);
        if !b.whole {
            ok &= torn_ok(&b);
            let _ = out.write_str(" [torn: its writer died mid-slot]");
        }
        let _ = writeln!(out);
        if next < FINISHED.len() && b.event == Some(FINISHED[next]) {
            next += 1;
        }
        if let (Some(Event::Outcome), Some(rep)) = (b.event, outcome) {
            let c = b.cpu as usize;
            ok &= rep.get(c).is_some_and(|&r| r as u64 == b.arg);
        }
        // A machine check on another CPU may come at any point, after the switchover too (that
        // CPU's handler runs on its own time): it does not end the crash path's timeline.
        if b.event != Some(Event::MachineCheck) {
            last = b.event;
        }
    }
    if let Some(rep) = outcome {
        // A finished path: every stage in order, the switchover last.
        let complete = next == FINISHED.len() && last == Some(Event::Switchover);
        ok &= complete;
        let _ = writeln!(
            out,
            "capture: flight: {}; per-CPU outcomes {}",
            if complete {
                "entered .. switchover, in order"
            } else {
                "STAGES MISSING OR OUT OF ORDER"
            },
            if ok {
                "agree with the sequence's report"
            } else {
                "DISAGREE"
            }
        );
        for (c, &code) in rep.iter().enumerate() {
            match CpuOutcome::from_code(code) {
                None | Some(CpuOutcome::Absent) => {}
                Some(o) => {
                    let _ = writeln!(out, "capture: C{c}: crash stop: {}", o.name());
                }
            }
        }
    } else {
        let _ = writeln!(
            out,
            "capture: flight: the crash path's last breadcrumb: {}",
            last.map_or("none", |e| e.name())
        );
    }
    ok
}

/// The CPUs with a machine-check breadcrumb (a machine check during the crash path: its handler's
/// log record may have been written while the drain read that CPU's rings).
pub fn machine_checked(fr: &FlightRecorder) -> crate::bootparams::CpuMask {
    fr.iter()
        .filter(|b| b.event == Some(Event::MachineCheck))
        .map(|b| b.cpu as usize)
        .collect()
}
