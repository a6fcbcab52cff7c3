//! The capture stage's one verifier: prints the dmesg of a handover image and checks it, whether the
//! image came from the crash path (r3) or was rebuilt from memory after the crash path died
//! (`from_memory`). What differs between the two is only what is expected ([`Expect`]): the crash
//! sequence's report from the parameter block, or what memory says (the check-in flags) and what
//! the crash path had logged before its death point.
//!
//! Checks, per CPU and context: record numbers contiguous and never repeated, every missing one
//! counted as overwritten; a CPU that answered the NMI has its NMI "stopped" record, one that did
//! not has none (or one in NMI context, if it answered late); every torn record explained by an NMI
//! stop; a CPU that did not stop is never counted torn. Then the crash path's own messages (all of
//! them, or exactly those logged before the death point), timestamps in order, no corruption, and
//! the mask path in the log equal to the sequence's report when there is one. Prints
//! `capture: recovered=N torn=T dropped=D cpus=C mask=PATH [from=memory die=POINT ]ok` (`FAILED`
//! instead of `ok` if a check fails).

use core::fmt::{self, Write};

use nmilog::handover::Image;
use nmilog::ContextKind;

use crate::bootparams::CpuMask;

/// Most CPUs this stage checks: those the parameter block describes.
pub const MAX_CPUS: usize = crate::bootparams::OUTCOME_CPUS;

/// Which of the crash path's own messages the log must hold (each one, or none of them: the crash
/// path logs them in this order).
#[derive(Clone, Copy, Debug)]
pub struct Reached {
    /// "crash: CPU c crashing: ..." and the NMI IPI's messages (logged after crash entry).
    pub entry: bool,
    /// "IPI complete" and the mask path's records (after the check-in wait).
    pub ipi_complete: bool,
    /// "crash: log drained: ..." and "kexec: Starting switchover sequence." (after the first drain).
    pub switchover: bool,
}

impl Reached {
    /// The whole crash path ran (a handover image).
    pub const ALL: Reached = Reached {
        entry: true,
        ipi_complete: true,
        switchover: true,
    };
}

/// The crash sequence's report, from the parameter block.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    /// The mask path it reports.
    pub mask: &'a str,
}

/// What the capture stage expects of the image besides the image itself.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    /// The CPU that crashed.
    pub crash_cpu: usize,
    /// CPUs that answered the crash NMI (the sequence's report; rebuilt from memory: their
    /// check-in flags).
    pub answered: CpuMask,
    /// CPUs that did not answer.
    pub not_answered: u32,
    /// The sequence's report; `None` when the log was rebuilt from memory (the dead path reported
    /// nothing).
    pub report: Option<Report<'a>>,
    /// The crash path's messages the log must hold.
    pub reached: Reached,
    /// The death point when the log was rebuilt from memory (named on the verdict line).
    pub died_at: Option<&'a str>,
    /// CPUs offline at the crash (the sequence's report): they have no record at all.
    pub offline: CpuMask,
    /// CPUs that took a machine check during the crash path (the flight recorder's breadcrumbs):
    /// the handler's record, one NMI level above the stop, may be torn (written while the drain
    /// read it).
    pub machine_checked: CpuMask,
    /// Whether the checks made before this verifier (the flight recorder's) passed.
    pub prior_ok: bool,
}

/// Per-CPU bookkeeping of one context's `n=` sequence.
#[derive(Clone, Copy)]
struct Seq {
    first: u64,
    last: u64,
    count: u64,
    gaps: u64,
    /// Records missing between `first` and `last`.
    holes: u64,
    /// A record at or before the previous one (repeated or out of order).
    disorder: bool,
}

impl Seq {
    const NONE: Seq = Seq {
        first: 0,
        last: 0,
        count: 0,
        gaps: 0,
        holes: 0,
        disorder: false,
    };
    fn push(&mut self, n: u64) {
        if self.count == 0 {
            self.first = n;
        } else if n <= self.last {
            self.disorder = true;
        } else if n != self.last + 1 {
            self.gaps += 1;
            self.holes += n - self.last - 1;
        }
        self.last = n;
        self.count += 1;
    }
    /// Records missing from 0 up to the newest recovered one (all of them if none was).
    fn missing(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.first + self.holes
        }
    }
    /// In order, none twice, and every missing record counted as overwritten in its ring — except
    /// up to `main_lost` of its oldest ones, which the main log's own wrapping overwrote after the
    /// flush moved them there (gone like any old dmesg line, and not counted anywhere): returns how
    /// many of those it claims, or `None` if the records are not accounted for.
    fn accounted(&self, overwritten: u64, main_lost: u64) -> Option<u64> {
        let missing = self.missing();
        let front = missing.checked_sub(overwritten)?;
        (!self.disorder && front <= main_lost.min(self.first)).then_some(front)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("none");
        }
        write!(
            f,
            "n={}..{} ({}{})",
            self.first,
            self.last,
            self.count,
            if self.disorder {
                ", OUT OF ORDER"
            } else if self.gaps == 0 {
                ", contiguous"
            } else {
                ", gaps"
            }
        )
    }
}

/// Parses `cpu=<c> n=<i>` / `cpu=<c> irq n=<i>`: (cpu, irq?, i).
fn parse_workload(t: &str) -> Option<(usize, bool, u64)> {
    let rest = t.strip_prefix("cpu=")?;
    let (c, rest) = rest.split_once(' ')?;
    let (irq, n) = match rest.strip_prefix("irq n=") {
        Some(n) => (true, n),
        None => (false, rest.strip_prefix("n=")?),
    };
    Some((c.parse().ok()?, irq, n.parse().ok()?))
}

/// A crash-path message: "yes" if found and expected, else what is wrong (or that its absence is
/// expected).
fn presence(found: bool, expected: bool) -> &'static str {
    match (found, expected) {
        (true, true) => "yes",
        (false, false) => "absent (logged after the death point)",
        (false, true) => "MISSING",
        (true, false) => "UNEXPECTED (logged after the death point)",
    }
}

/// Prints the dmesg of `img` and its checks to `out`, and the verdict line. Returns whether every
/// check passed.
pub fn print_and_check(img: &Image<'_>, expect: &Expect<'_>, out: &mut impl Write) -> bool {
    let ncpu = img.cpu_count().min(MAX_CPUS);
    let _ = writeln!(
        out,
        "capture: image v{}: {} records, {} CPUs x {} contexts; dmesg follows",
        img.version(),
        img.record_count(),
        img.cpu_count(),
        img.depth()
    );

    let mut task = [Seq::NONE; MAX_CPUS];
    let mut irq = [Seq::NONE; MAX_CPUS];
    let mut stopped = [false; MAX_CPUS];
    let mut nmi_ctx = [false; MAX_CPUS];
    // Depth of the context the NMI interrupted ("CPU n stopped (NMI in <kind> context; ...)").
    let mut stop_depth = [None::<usize>; MAX_CPUS];
    let mut ctx_seen = [[false; 5]; MAX_CPUS];
    let mut entry = false;
    let mut ipi_complete = false;
    let mut drained = false;
    let mut switchover = false;
    let mut mask = None::<&str>;
    let mut ts_back = 0u64;
    let mut last_ts = 0u64;
    let mut recovered = 0u64;
    for r in img.records() {
        recovered += 1;
        let h = r.header;
        let c = h.cpu as usize;
        let (kind, _depth) = h.context();
        let text = r.text().unwrap_or("<binary>");
        if h.ts_ns < last_ts {
            ts_back += 1;
        }
        last_ts = h.ts_ns;
        let ctx = match kind {
            Some(ContextKind::Task) | None => "",
            Some(ContextKind::Irq) => "/irq",
            Some(ContextKind::Nmi) => "/nmi",
            Some(ContextKind::Crash) => "/crash",
            #[allow(unreachable_patterns)]
            Some(_) => "/?",
        };
        let _ = writeln!(
            out,
            "[{:>5}.{:06}] C{c}{ctx} {text}",
            h.ts_ns / 1_000_000_000,
            (h.ts_ns / 1000) % 1_000_000
        );
        if c < MAX_CPUS {
            if let Some(k) = kind {
                let i = k as usize;
                if i < 5 {
                    ctx_seen[c][i] = true;
                }
            }
            if let Some((wc, is_irq, n)) = parse_workload(text) {
                if wc == c {
                    if is_irq {
                        irq[c].push(n);
                    } else {
                        task[c].push(n);
                    }
                }
            }
            if text.starts_with("CPU ") && text.contains(" stopped") {
                stopped[c] = true;
                nmi_ctx[c] = kind == Some(ContextKind::Nmi);
                // Interrupts do not nest in this image: task is depth 0, irq depth 1.
                stop_depth[c] = match text.split_once("NMI in ").map(|(_, r)| r.split(' ').next()) {
                    Some(Some("task")) => Some(0),
                    Some(Some("irq")) => Some(1),
                    _ => None,
                };
            }
        }
        let crash_ctx = kind == Some(ContextKind::Crash) && c == expect.crash_cpu;
        if crash_ctx && text.starts_with("crash: CPU ") && text.contains(" crashing: ") {
            entry = true;
        }
        if text == "IPI complete" {
            ipi_complete = true;
        }
        if crash_ctx && text.starts_with("crash: log drained: ") {
            drained = true;
        }
        if text == "kexec: Starting switchover sequence." {
            switchover = true;
        }
        if let Some(m) = text
            .rsplit_once("[mask_path=")
            .and_then(|(_, m)| m.strip_suffix(']'))
        {
            mask = Some(match m {
                "rtas" => "rtas",
                "rtas-takeover" => "rtas-takeover",
                "presenter" => "presenter",
                "hcall" => "hcall",
                _ => "unknown",
            });
        }
    }
    let t = img.totals();
    let _ = writeln!(out, "capture: end of dmesg");

    // Checks.
    let want = expect.reached;
    let mask_ok = match (expect.report, mask) {
        // The sequence's report and the log agree.
        (Some(rep), Some(m)) => m != "unknown" && m == rep.mask,
        (Some(_), None) => false,
        // No report: the log has a mask path exactly when the crash path got that far.
        (None, Some(m)) => want.ipi_complete && m != "unknown",
        (None, None) => !want.ipi_complete,
    };
    // Main-log records overwritten by the main log's own wrapping before the drain (the image's
    // first record's main-log number: 0 if the main log never wrapped). Each CPU may miss that
    // many of its oldest records, all CPUs together no more.
    let main_lost = img.records().next().map_or(0, |r| r.seq);
    let mut claimed = 0u64;
    let mut ok = expect.prior_ok
        && img.corruption().is_none()
        && ts_back == 0
        && entry == want.entry
        && ipi_complete == want.ipi_complete
        && drained == want.switchover
        && switchover == want.switchover
        && mask_ok;
    for c in 0..ncpu {
        if expect.offline.contains(c) {
            // An empty `maxcpus` slot: nothing logged, never stopped, not waited for.
            let empty = task[c].count == 0 && irq[c].count == 0 && !stopped[c];
            ok &= empty;
            let _ = writeln!(
                out,
                "capture: C{c}: offline: {}",
                if empty {
                    "no records, no stopped record, not waited for"
                } else {
                    "HAS RECORDS  <-- FAILED"
                }
            );
            continue;
        }
        let crash = c == expect.crash_cpu;
        let answered = expect.answered.contains(c);
        // Whether the CPU had checked in when the image was written (the image says).
        let stopped_at_image = img.cpu_stopped(c) == Some(true);
        // A CPU that answered the NMI in time has its "stopped" record; one that never answered has
        // none; one that answered after the wait has it if it checked in before the image.
        let stop_ok = crash
            || if answered {
                stopped_at_image && stopped[c] && nmi_ctx[c]
            } else if stopped_at_image {
                stopped[c] && nmi_ctx[c]
            } else {
                !stopped[c] || nmi_ctx[c]
            };
        let ow = |d: usize| img.counters(c, d).map_or(0, |x| x.overwritten);
        let (t_front, i_front) = (
            task[c].accounted(ow(0), main_lost),
            irq[c].accounted(ow(1), main_lost),
        );
        claimed += t_front.unwrap_or(0) + i_front.unwrap_or(0);
        let cpu_ok = task[c].count > 0 && t_front.is_some() && i_front.is_some() && stop_ok;
        ok &= cpu_ok;
        let _ = writeln!(
            out,
            "capture: C{c}: task {} | irq {} | {} | contexts{}{}{}{}{}",
            task[c],
            irq[c],
            if crash {
                "crashing CPU"
            } else if !answered {
                match (stopped[c] && nmi_ctx[c], stopped_at_image) {
                    (false, _) if !stopped[c] => "did not answer the NMI (no stopped record)",
                    // Stopped (by the firmware, or the image was written) between its record and
                    // its check-in.
                    (true, false) => "stopped (NMI record) but never checked in",
                    (true, true) => "answered late (NMI record, checked in after the wait)",
                    _ => "DID NOT ANSWER BUT HAS A STOPPED RECORD",
                }
            } else if stopped[c] && nmi_ctx[c] {
                "stopped (NMI record)"
            } else {
                "NO STOPPED RECORD"
            },
            if ctx_seen[c][ContextKind::Task as usize] {
                " task"
            } else {
                ""
            },
            if ctx_seen[c][ContextKind::Irq as usize] {
                " irq"
            } else {
                ""
            },
            if ctx_seen[c][ContextKind::Nmi as usize] {
                " nmi"
            } else {
                ""
            },
            if ctx_seen[c][ContextKind::Crash as usize] {
                " crash"
            } else {
                ""
            },
            if cpu_ok { "" } else { "  <-- FAILED" },
        );
        if !crash && !stopped_at_image {
            let in_flight: u64 = (0..img.depth())
                .map(|d| img.counters(c, d).map_or(0, |x| x.in_flight))
                .sum();
            let torn: u64 = (0..img.depth())
                .map(|d| img.counters(c, d).map_or(0, |x| x.torn))
                .sum();
            // A CPU that did not stop is never counted torn: its call may still complete.
            ok &= torn == 0;
            let _ = writeln!(
                out,
                "capture: C{c}: did not stop (not checked in when the image was written): {in_flight} log call(s) in flight then, {torn} torn; {} task and {} irq records overwritten in its rings before the image, every one counted",
                ow(0),
                ow(1),
            );
        }
        // A torn record (frozen mid-write, not delivered) at depth d is explained if the NMI stopped
        // this CPU in a context at depth >= d: the writer at d was interrupted and never resumed.
        for d in 0..img.depth() {
            let Some(x) = img.counters(c, d).filter(|x| x.torn > 0) else {
                continue;
            };
            // Or, on a CPU that took a machine check after its stop, at the machine check's depth
            // (two levels above the stopped context: the NMI's, then its own): its handler was
            // writing while the drain read the ring.
            let by_nmi = stop_depth[c].is_some_and(|sd| d <= sd);
            let by_mce =
                expect.machine_checked.contains(c) && stop_depth[c].is_some_and(|sd| d == sd + 2);
            ok &= by_nmi || by_mce;
            let _ = writeln!(
                out,
                "capture: C{c}: {} torn record(s) at depth {d} ({}), {}",
                x.torn,
                img.context_kind(c, d).map_or("?", |k| k.name()),
                if by_nmi {
                    "explained: the NMI stopped this CPU mid-write"
                } else if by_mce {
                    "explained: its machine-check handler was writing it while the drain read it"
                } else {
                    "UNEXPLAINED"
                }
            );
        }
    }
    if main_lost > 0 || claimed > 0 {
        let fits = claimed <= main_lost;
        ok &= fits;
        let _ = writeln!(
            out,
            "capture: the main log wrapped before the drain: its {main_lost} oldest record(s) overwritten; the CPUs miss {claimed} oldest record(s) not counted elsewhere{}",
            if fits { "" } else { "  <-- FAILED: more than it lost" }
        );
    }
    let dropped = t.dropped + t.overwritten + img.left_out() + img.bad_cpu_dropped();
    let mask = mask.unwrap_or(if expect.report.is_some() {
        "unknown"
    } else {
        "none"
    });
    if let Some(point) = expect.died_at {
        let _ = writeln!(
            out,
            "capture: the crash path died at {point}: its messages up to there: crash entry {}, IPI complete {}, mask path record {}, drain report {}, switchover {}",
            presence(entry, want.entry),
            presence(ipi_complete, want.ipi_complete),
            presence(mask != "none", want.ipi_complete),
            presence(drained, want.switchover),
            presence(switchover, want.switchover),
        );
    }
    let _ = write!(
        out,
        "capture: losses: torn {} | overwritten {} | refused {} | left out {} | bad cpu {}; checks: timestamps {}, IPI complete {}, switchover {}, corruption {}, ",
        t.torn,
        t.overwritten,
        t.dropped,
        img.left_out(),
        img.bad_cpu_dropped(),
        if ts_back == 0 { "ordered" } else { "OUT OF ORDER" },
        presence(ipi_complete, want.ipi_complete),
        presence(switchover, want.switchover),
        if img.corruption().is_none() { "none" } else { "FOUND" },
    );
    let _ = match expect.report {
        Some(rep) => writeln!(
            out,
            "mask path {} (sequence report: {}, {} CPUs did not answer)",
            if mask_ok { "agrees" } else { "DISAGREES" },
            rep.mask,
            expect.not_answered,
        ),
        None => writeln!(
            out,
            "mask path {mask}{} (no sequence report: the log was rebuilt from memory; {} CPUs not checked in)",
            if mask_ok { "" } else { " UNEXPECTED" },
            expect.not_answered,
        ),
    };
    let _ = write!(
        out,
        "capture: recovered={recovered} torn={} dropped={dropped} cpus={} mask={mask} ",
        t.torn,
        img.cpu_count(),
    );
    if let Some(point) = expect.died_at {
        let _ = write!(out, "from=memory die={point} ");
    }
    let _ = writeln!(out, "{}", if ok { "ok" } else { "FAILED" });
    ok
}
