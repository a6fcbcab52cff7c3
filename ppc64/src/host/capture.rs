//! The capture stage: what the kexec switchover execs. Reads the handover region (the ground-truth
//! block, then the handover image) from the inherited memfd, parses the image, prints the recovered
//! log and checks it against the simulation's ground truth.

use std::fmt::Write as _;
use std::io::Write as _;

use nmilog::escape::{self, json_string};
use nmilog::handover::{self, Image, ImageRecord};
use nmilog::record::facility;
use nmilog::{ContextKind, Header};

use super::config::{Role, DEPTH, EXIT_FAIL, EXIT_OK, MAX_CPUS};
use super::death::DeathPoint;
use super::memory::{Layout, SimLog};
use super::{recovery, sys, truth};

/// Per-CPU facts from the ground-truth block.
struct CpuTruth {
    role: Role,
    answered: bool,
    task: u64,
    irq: u64,
    mid: u8,
    deferred: u64,
    stop_ts: u64,
    pc: u64,
    stop_ctx: u8,
    freeze_at: u64,
    truth_set: bool,
    deaf: bool,
    /// Records committed before the image's drain (a CPU that had not checked in by then).
    lower_task: u64,
    lower_irq: u64,
}

struct Truth {
    w: Vec<u64>,
    cpus: Vec<CpuTruth>,
}

impl Truth {
    fn get(&self, i: usize) -> u64 {
        self.w.get(i).copied().unwrap_or(0)
    }
}

fn read_truth(bytes: &[u8]) -> Option<Truth> {
    let word = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    // The CPU count first (bounded: a corrupt count cannot make the read run past the region).
    let len = truth::bytes((word(truth::W_NCPU) as usize).min(MAX_CPUS));
    if bytes.len() < len {
        return None;
    }
    let w: Vec<u64> = bytes[..len]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    read_truth_words(w)
}

fn read_truth_words(w: Vec<u64>) -> Option<Truth> {
    if w.len() < truth::HEAD_BYTES / 8 || w[truth::W_MAGIC] != truth::MAGIC {
        return None;
    }
    let n = (w[truth::W_NCPU] as usize).min(MAX_CPUS);
    if w.len() < truth::bytes(n) / 8 {
        return None;
    }
    let cpus = (0..n)
        .map(|c| {
            let b = truth::CPU_BASE + c * truth::PER_CPU;
            CpuTruth {
                role: Role::from_code(w[b + truth::C_ROLE]),
                answered: w[b + truth::C_ANSWERED] != 0,
                task: w[b + truth::C_TASK],
                irq: w[b + truth::C_IRQ],
                mid: w[b + truth::C_MID] as u8,
                deferred: w[b + truth::C_DEFERRED],
                stop_ts: w[b + truth::C_STOP_TS],
                pc: w[b + truth::C_PC],
                stop_ctx: w[b + truth::C_STOP_CTX] as u8,
                freeze_at: w[b + truth::C_FREEZE_AT],
                truth_set: w[b + truth::C_TRUTH_SET] != 0,
                deaf: w[b + truth::C_DEAF] != 0,
                lower_task: w[b + truth::C_LOWER_TASK],
                lower_irq: w[b + truth::C_LOWER_IRQ],
            }
        })
        .collect();
    Some(Truth { w, cpus })
}

fn ctx_name(h: &Header) -> &'static str {
    h.context().0.map_or("?", ContextKind::name)
}

/// A record's text for the human output: [`escape::text`] (controls as `\xNN`, format characters
/// and separators as `\u{XXXX}`), `<binary>` for a payload that is not UTF-8.
fn human_text(r: &ImageRecord<'_>) -> String {
    let mut s = String::new();
    match r.text() {
        Some(t) => {
            let _ = escape::text(&mut s, t);
        }
        None => s.push_str("<binary>"),
    }
    s
}

fn list<T: std::fmt::Display>(v: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = v.into_iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// What the recovered log says about one CPU.
#[derive(Default)]
struct Seen {
    task: Vec<u64>,
    irq: Vec<u64>,
    stopped: bool,
}

/// Parses `cpu=<c> n=<i>` / `cpu=<c> irq n=<i>`.
fn parse_sim_text(t: &str) -> Option<(usize, bool, u64)> {
    let rest = t.strip_prefix("cpu=")?;
    let (c, rest) = rest.split_once(' ')?;
    let (irq, rest) = match rest.strip_prefix("irq ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let n = rest.strip_prefix("n=")?;
    Some((c.parse().ok()?, irq, n.parse().ok()?))
}

pub(crate) fn main(args: &[String], pos: usize) -> i32 {
    let json = args.iter().any(|a| a == "--json");
    let from_memory = args.iter().any(|a| a == "--from-memory");
    let dmesg_all = args.iter().any(|a| a == "--dmesg-all");
    let Some(fd) = args.get(pos + 1).and_then(|s| s.parse::<i32>().ok()) else {
        eprintln!("capture: --capture-fd needs a descriptor");
        return EXIT_FAIL;
    };
    let (base, len) = match sys::map_fd_readonly(fd) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("capture: {e}");
            return EXIT_FAIL;
        }
    };
    // SAFETY: a read-only mapping of `len` bytes that is never unmapped; nothing else writes the
    // file any more (the crashed process is gone).
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(base, len) };
    let t_capture = sys::mono_ns();
    let Some(mut tr) = read_truth(bytes) else {
        eprintln!("capture: no ground-truth block in the handover region");
        return EXIT_FAIL;
    };
    let died = if from_memory {
        args.iter()
            .position(|a| a == "--die-in-drain")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| DeathPoint::parse(v).ok())
    } else {
        None
    };
    let rebuilt;
    let mut rebuilt_info: Option<(usize, usize, usize)> = None;
    let img_bytes: &[u8] = if from_memory {
        // Only the memory: find the descriptor, rebuild the image, read the truth from it.
        rebuilt = match recovery::rebuild(bytes, tr.get(truth::W_REGION_BASE) as usize, &mut tr.w) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("capture: {e}");
                return EXIT_FAIL;
            }
        };
        let Some(t) = read_truth_words(tr.w.clone()) else {
            eprintln!("capture: ground truth lost");
            return EXIT_FAIL;
        };
        tr = t;
        rebuilt_info = Some((rebuilt.desc_offset, rebuilt.scanned_words, rebuilt.valid));
        &rebuilt.image
    } else {
        let at = truth::bytes(tr.cpus.len());
        let img_len = (tr.get(truth::W_IMAGE_LEN) as usize).min(bytes.len() - at);
        &bytes[at..at + img_len]
    };
    let img_len = img_bytes.len();
    let image = match handover::parse(img_bytes) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("capture: handover image unreadable: {e}");
            return EXIT_FAIL;
        }
    };
    let ncpu = tr.cpus.len();
    let crash_cpu = tr.get(truth::W_CRASH_CPU) as usize;
    let elapsed_ms = t_capture.saturating_sub(tr.get(truth::W_T_CRASH_MONO)) as f64 / 1e6;
    let mut mask_path = match tr.get(truth::W_MASK_PATH) {
        0 => "rtas",
        1 => "rtas-takeover",
        3 => "hcall",
        _ => "presenter",
    };
    if from_memory {
        // No report: the masking record says which path was taken, if the CPU got that far.
        mask_path = "none";
        for r in image.records() {
            let t = r.text().unwrap_or("");
            if r.header.cpu as usize == crash_cpu {
                if let Some(p) = ["rtas-takeover", "rtas", "presenter", "hcall"]
                    .into_iter()
                    .find(|p| t.ends_with(&format!("[mask_path={p}]")))
                {
                    mask_path = p;
                }
                if tr.get(truth::W_T_ENTER) == 0
                    && t.starts_with(&format!("crash: CPU {crash_cpu} crashing"))
                {
                    tr.w[truth::W_T_ENTER] = r.header.ts_ns;
                }
            }
        }
    }

    // Walk the log once: JSON lines, per-CPU sequences, checks.
    let mut seen: Vec<Seen> = (0..ncpu).map(|_| Seen::default()).collect();
    let mut failures: Vec<String> = Vec::new();
    let mut last_ts = 0u64;
    let mut ipi_complete = false;
    let mut switchover = false;
    let mut out = String::new();
    for r in image.records() {
        let h = r.header;
        let text = r.text().unwrap_or("<binary>");
        if h.ts_ns < last_ts {
            failures.push(format!("timestamp goes backwards at seq {}", r.seq));
        }
        last_ts = last_ts.max(h.ts_ns);
        let c = h.cpu as usize;
        if h.facility == facility::KERNEL {
            if let Some((tc, irq, n)) = parse_sim_text(text) {
                if tc == c && c < ncpu {
                    if irq {
                        seen[c].irq.push(n);
                    } else {
                        seen[c].task.push(n);
                    }
                }
            } else if c < ncpu && text.starts_with(&format!("CPU {c} stopped")) {
                seen[c].stopped = true;
            } else if c == crash_cpu && text == "IPI complete" {
                ipi_complete = true;
            } else if c == crash_cpu && text == "kexec: Starting switchover sequence." {
                switchover = true;
            }
        }
        if json {
            out.push_str("{\"seq\":");
            let _ = write!(
                out,
                "{},\"ts_ns\":{},\"cpu\":{},\"ctx\":\"{}\",\"level\":{},\"text\":",
                r.seq,
                h.ts_ns,
                h.cpu,
                ctx_name(&h),
                h.level
            );
            let _ = json_string(&mut out, text);
            out.push_str("}\n");
        }
    }

    // Checks against the ground truth.
    let counters = |c: usize, d: usize| image.counters(c, d).unwrap_or_default();
    // Records the main log itself overwrote (it wrapped before the crash): the oldest record in the
    // image has that main-log sequence number. They are not attributed to a CPU by the core, so the
    // per-CPU equations become inequalities whose deficits must add up to this.
    let main_lost = image.records().next().map_or(0, |r| r.seq);
    // A CPU the image says was not stopped (it had not checked in when the image's drain took its
    // snapshot) may have gone on logging: its ground truth is a range — at least what it had
    // committed before the snapshot (`lower_*`), at most what it had committed at the switchover.
    let stopped = |c: usize| image.cpu_stopped(c).unwrap_or(false);
    let not_stopped: Vec<usize> = (0..ncpu).filter(|&c| !stopped(c)).collect();
    let mut deficit = 0u64;
    let mut exact = true;
    for (c, t) in tr.cpus.iter().enumerate() {
        let live = !stopped(c);
        if !t.truth_set && !live {
            continue;
        }
        for (what, got, committed, lower, depth) in [
            ("task", &seen[c].task, t.task, t.lower_task, 0usize),
            ("irq", &seen[c].irq, t.irq, t.lower_irq, 1usize),
        ] {
            let cnt = counters(c, depth);
            let ow = cnt.overwritten;
            // In log order, each record once and in the order written. With no overwrites this and
            // the count below mean exactly 0..committed; with overwrites, every gap is accounted for
            // by the ring's overwritten count (the count equation below).
            if got.windows(2).any(|w| w[1] <= w[0]) {
                failures.push(format!("CPU {c}: {what} records out of order or repeated"));
            }
            if ow == 0 && main_lost == 0 && got.windows(2).any(|w| w[1] != w[0] + 1) {
                failures.push(format!(
                    "CPU {c}: {what} records not contiguous, none overwritten"
                ));
            }
            if live {
                // Everything committed before the snapshot is in, or counted; nothing beyond what
                // was ever committed.
                let newest = got.last().map_or(0, |&n| n + 1);
                if newest > committed {
                    failures.push(format!(
                        "CPU {c}: {what} record n={} recovered, but only {committed} were committed",
                        newest - 1
                    ));
                }
                let accounted = got.len() as u64 + ow + cnt.in_flight;
                if newest < lower && accounted < lower {
                    failures.push(format!(
                        "CPU {c} (did not stop): {what}: {} recovered + {ow} overwritten + {} in flight < {lower} committed before the image",
                        got.len(),
                        cnt.in_flight
                    ));
                }
                if cnt.torn != 0 {
                    failures.push(format!(
                        "CPU {c} (did not stop): {what}: {} torn (only a stopped CPU's call is torn)",
                        cnt.torn
                    ));
                }
                exact = false;
                continue;
            }
            if let Some(&last) = got.last() {
                if last + 1 != committed {
                    failures.push(format!(
                        "CPU {c}: newest {what} record n={last}, but {committed} were committed"
                    ));
                }
            }
            let accounted = got.len() as u64 + ow;
            if accounted > committed || (main_lost == 0 && accounted != committed) {
                failures.push(format!(
                    "CPU {c}: {what}: {} recovered + {ow} overwritten != {committed} committed",
                    got.len()
                ));
            }
            deficit += committed.saturating_sub(accounted);
        }
        if c != crash_cpu && !live && !seen[c].stopped {
            failures.push(format!("CPU {c}: no \"stopped\" record"));
        }
    }
    if deficit > main_lost || (exact && deficit != main_lost) {
        failures.push(format!(
            "{deficit} committed records unaccounted for, but the main log lost {main_lost}"
        ));
    }
    // After a death, the crashing CPU's messages up to its death point, and none after it.
    let want_ipi = died.is_none_or(|d| d.after_ipi_complete());
    let want_switch = died.is_none_or(|d| d.after_switchover_message());
    if ipi_complete != want_ipi {
        failures.push(format!(
            "\"IPI complete\" from the crashing CPU: found {ipi_complete}, expected {want_ipi}"
        ));
    }
    if switchover != want_switch {
        failures.push(format!(
            "\"kexec: Starting switchover sequence.\" from the crashing CPU: found {switchover}, expected {want_switch}"
        ));
    }
    let totals = image.totals();
    let mid_cpus: Vec<usize> = (0..ncpu).filter(|&c| tr.cpus[c].mid != 0).collect();
    // Torn: exactly the log calls the NMI froze mid-write on the CPUs stopped by the snapshot.
    let mid_count: u64 = (0..ncpu)
        .filter(|&c| stopped(c))
        .map(|c| u64::from(tr.cpus[c].mid.count_ones()))
        .sum();
    if totals.torn != mid_count {
        failures.push(format!(
            "torn {} != {} log calls frozen mid-write",
            totals.torn, mid_count
        ));
    }
    let in_flight: Vec<u64> = (0..ncpu)
        .map(|c| (0..DEPTH).map(|d| counters(c, d).in_flight).sum())
        .collect();
    if not_stopped.contains(&crash_cpu) {
        failures.push("the crashing CPU is reported as not stopped".into());
    }
    if (0..ncpu).any(|c| stopped(c) && in_flight[c] != 0) {
        failures.push("a stopped CPU has records counted in flight".into());
    }
    let papr = tr.get(truth::W_PAPR);
    if papr != 0 {
        failures.push(format!("{papr} PAPR violations (overlapping RTAS calls)"));
    }
    if let Some((e, at)) = image.corruption() {
        failures.push(format!("image corrupt at byte {at}: {e}"));
    }
    if image.left_out() != 0 {
        failures.push(format!(
            "{} records left out of the image",
            image.left_out()
        ));
    }
    if tr.get(truth::W_IMAGE_ERR) != 0 {
        failures.push("write_image failed".into());
    }

    let ack_timeout: Vec<usize> = (0..ncpu).filter(|&c| !tr.cpus[c].answered).collect();
    let per = |f: &dyn Fn(nmilog::CpuCounters) -> u64| {
        list((0..ncpu).map(|c| list((0..DEPTH).map(|d| f(counters(c, d))))))
    };
    if json {
        let _ = write!(
            out,
            "{{\"summary\":{{\"recovered\":{},\"torn\":{},\"dropped\":{},\"committed_per_cpu\":{},\"irq_committed_per_cpu\":{},\"ack_timeout_cpus\":{},\"mask_path\":\"{}\",\"deadlock\":false,\"elapsed_ms\":{:.3}",
            image.record_count(),
            totals.torn,
            totals.overwritten + totals.dropped + main_lost,
            list(tr.cpus.iter().map(|t| t.task)),
            list(tr.cpus.iter().map(|t| t.irq)),
            list(ack_timeout.iter()),
            mask_path,
            elapsed_ms
        );
        let _ = write!(
            out,
            ",\"frozen_mid_write\":{},\"frozen_mid_write_calls\":{},\"main_log_lost\":{},\"overwritten\":{},\"refused\":{},\"overwritten_per_cpu\":{},\"torn_per_cpu\":{},\"refused_per_cpu\":{},\"not_stopped_cpus\":{},\"in_flight_per_cpu\":{},\"cpus\":{},\"crash_cpu\":{},\"crash_ctx\":\"{}\",\"rtas_holder\":{},\"papr_violations\":{},\"nmi_deferred\":{},\"image_bytes\":{},\"left_out\":{},\"run_ms\":{:.3},\"verified\":{}",
            list(mid_cpus.iter()),
            mid_count,
            main_lost,
            totals.overwritten,
            totals.dropped,
            per(&|x| x.overwritten),
            per(&|x| x.torn),
            per(&|x| x.dropped),
            list(not_stopped.iter()),
            list(in_flight.iter()),
            ncpu,
            crash_cpu,
            if tr.get(truth::W_CRASH_IN_IRQ) != 0 { "irq" } else { "task" },
            tr.get(truth::W_RTAS_HOLDER) as i64 - 1,
            papr,
            tr.cpus.iter().map(|t| t.deferred).sum::<u64>(),
            img_len,
            image.left_out(),
            tr.get(truth::W_T_CRASH_MONO).saturating_sub(tr.get(truth::W_T_START_MONO)) as f64 / 1e6,
            failures.is_empty(),
        );
        let _ = write!(
            out,
            ",\"recovered_from\":\"{}\",\"died_at\":",
            if from_memory { "memory" } else { "image" }
        );
        match died {
            Some(d) => {
                let _ = json_string(&mut out, &d.name());
            }
            None => out.push_str("null"),
        }
        if let Some(r) = &rebuilt_info {
            let _ = write!(
                out,
                ",\"descriptor_found_by\":\"scan\",\"descriptor_offset\":{},\"scanned_words\":{},\"descriptors_valid\":{}",
                r.0, r.1, r.2
            );
        }
        cost_json(&mut out, &tr);
        out.push_str(",\"failures\":");
        out.push('[');
        for (i, f) in failures.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = json_string(&mut out, f);
        }
        out.push_str("]}}\n");
    } else {
        if let (Some(d), Some(r)) = (died, &rebuilt_info) {
            let _ = writeln!(
                out,
                "\n=== the crashing CPU died at {} — no image, no switchover; the watchdog started the capture stage with nothing but the memory ===\n\
descriptor found by scanning {} words of memory (at offset {:#x} of the region; {} valid); log rebuilt from the rings and the main log as the dead kernel left them",
                d.name(),
                r.1,
                r.0,
                r.2
            );
        }
        human(
            &mut out, &tr, &image, &seen, img_len, elapsed_ms, mask_path, dmesg_all,
        );
        let _ = writeln!(
            out,
            "\nsummary: {} records recovered, {} torn (CPUs frozen mid-write: {:?}), {} overwritten in rings, {} refused, \
{} lost to the main log wrapping; NMI unanswered: {:?}; mask path: {}; PAPR violations: {}; deadlock: no; crash to capture {:.1} ms",
            image.record_count(),
            totals.torn,
            mid_cpus,
            totals.overwritten,
            totals.dropped,
            main_lost,
            ack_timeout,
            mask_path,
            papr,
            elapsed_ms
        );
        for &c in &not_stopped {
            let t = &tr.cpus[c];
            let _ = writeln!(
                out,
                "did not stop: CPU {c} had not checked in when the image was written ({}); {} log call(s) in flight then; \
its records up to the image: task n<{} (at least {} committed before it), irq n<{}",
                t.role.name(),
                in_flight[c],
                seen[c].task.last().map_or(0, |n| n + 1),
                t.lower_task,
                seen[c].irq.last().map_or(0, |n| n + 1),
            );
        }
        if failures.is_empty() {
            let _ = writeln!(
                out,
                "verify: OK — every CPU's recovered records are in order, none twice, up to its newest committed one \
(for a CPU that did not stop: at least what it committed before the image); every missing one is counted as \
overwritten (contiguous where none was) or in flight; torn = frozen mid-write on a stopped CPU; timestamps never go backwards"
            );
        } else {
            for f in &failures {
                let _ = writeln!(out, "verify: FAILED: {f}");
            }
        }
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(out.as_bytes());
    let _ = lock.flush();
    if failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAIL
    }
}

#[allow(clippy::too_many_arguments)]
fn human(
    out: &mut String,
    tr: &Truth,
    image: &Image<'_>,
    seen: &[Seen],
    img_len: usize,
    elapsed_ms: f64,
    mask_path: &str,
    dmesg_all: bool,
) {
    let ncpu = tr.cpus.len();
    let crash_cpu = tr.get(truth::W_CRASH_CPU) as usize;
    let t_enter = tr.get(truth::W_T_ENTER);
    let t_start = tr.get(truth::W_T_START_LOG);
    // The signed difference, whatever the two timestamps (no overflow).
    let rel = |ts: u64| ts.wrapping_sub(t_enter) as i64 as f64 / 1e6;
    let _ = writeln!(
        out,
        "\n=== capture stage (exec'd by the {}; pid {}) ===",
        if tr.get(truth::W_DIED) != 0 {
            "watchdog after the death"
        } else {
            "kexec switchover"
        },
        sys::getpid()
    );
    let _ = writeln!(
        out,
        "handover image: {} bytes, {} records, {} CPUs x {} contexts, checksums ok; crash to capture {:.1} ms",
        img_len,
        image.record_count(),
        image.cpu_count(),
        image.depth(),
        elapsed_ms
    );
    let _ = writeln!(
        out,
        "\n--- timeline of the crash sequence (ms relative to crash entry on CPU {crash_cpu}) ---"
    );
    for r in image.records() {
        let h = r.header;
        let (k, _) = h.context();
        let seq_rec = matches!(k, Some(ContextKind::Nmi) | Some(ContextKind::Crash))
            || h.facility == facility::NMILOG;
        if !seq_rec {
            continue;
        }
        let _ = writeln!(
            out,
            "{:>+9.3}  CPU{:<2} {:<5} {}",
            rel(h.ts_ns),
            h.cpu,
            ctx_name(&h),
            human_text(&r)
        );
    }
    let _ = writeln!(out, "\n--- per CPU ---");
    let _ = writeln!(
        out,
        "CPU  role                        stopped         in context      task: committed recovered overwritten | irq: committed recovered overwritten | torn"
    );
    for (c, t) in tr.cpus.iter().enumerate() {
        let stopped = if c == crash_cpu {
            "crashing".to_string()
        } else if !t.answered {
            "never (timeout)".to_string()
        } else {
            format!("{:+.3} ms", rel(t.stop_ts))
        };
        let h = Header {
            ctx: t.stop_ctx,
            ..Header::default()
        };
        let ctx = if c == crash_cpu {
            if tr.get(truth::W_CRASH_IN_IRQ) != 0 {
                "irq".to_string()
            } else {
                "task".to_string()
            }
        } else if t.answered {
            let mut s = ctx_name(&h).to_string();
            if t.mid & 1 != 0 {
                s.push_str(", mid-write");
            }
            if t.mid & 2 != 0 {
                s.push_str(", irq mid-write");
            }
            s
        } else {
            "-".to_string()
        };
        let mut role = t.role.name().to_string();
        if t.deaf && t.role != Role::Deaf {
            role.push_str(", deaf");
        }
        if t.freeze_at != u64::MAX {
            role = format!("frozen in write n={}", t.freeze_at);
        }
        let c0 = image.counters(c, 0).unwrap_or_default();
        let c1 = image.counters(c, 1).unwrap_or_default();
        let torn: u64 = (0..DEPTH)
            .map(|d| image.counters(c, d).unwrap_or_default().torn)
            .sum();
        let _ = writeln!(
            out,
            "{:<4} {:<27} {:<15} {:<15} {:>15} {:>9} {:>11} | {:>14} {:>9} {:>11} | {:>4}{}",
            c,
            role,
            stopped,
            ctx,
            t.task,
            seen[c].task.len(),
            c0.overwritten,
            t.irq,
            seen[c].irq.len(),
            c1.overwritten,
            torn,
            if t.pc != 0 {
                format!("  pc={:#x}", t.pc)
            } else {
                String::new()
            }
        );
    }
    let held = tr.get(truth::W_RTAS_HOLDER);
    if tr.get(truth::W_DIED) != 0 {
        let _ = writeln!(
            out,
            "interrupts: mask path {mask_path} (from the log: the dead CPU left no report); firmware calls {}, PAPR violations {}",
            tr.get(truth::W_FW_CALLS),
            tr.get(truth::W_PAPR)
        );
    } else {
        let _ = writeln!(
        out,
        "interrupts: mask path {mask_path}{}; {} sources masked through firmware; firmware calls {}, PAPR violations {}",
        if held != 0 {
            format!(
                " (RTAS lock held by CPU {}, {} the call)",
                held - 1,
                if tr.get(truth::W_RTAS_IN_CALL) != 0 { "inside" } else { "outside" }
            )
        } else {
            String::new()
        },
        tr.get(truth::W_MASKED),
        tr.get(truth::W_FW_CALLS),
        tr.get(truth::W_PAPR)
    );
    }
    let n = image.record_count();
    let skip = if dmesg_all { 0 } else { n.saturating_sub(24) };
    let _ = writeln!(
        out,
        "\n--- dmesg{} ---",
        if skip > 0 {
            format!(" (last 24 of {n} records; --dmesg-all for all)")
        } else {
            String::new()
        }
    );
    for r in image.records().skip(skip) {
        let h = r.header;
        let ts = h.ts_ns.saturating_sub(t_start);
        let _ = writeln!(
            out,
            "[{:>5}.{:06}] C{} {:<5} {}",
            ts / 1_000_000_000,
            (ts / 1000) % 1_000_000,
            h.cpu,
            ctx_name(&h),
            human_text(&r)
        );
    }
    let _ = ncpu;
}

/// The crash path's cost for the scale table (`--scale`): its stages from crash entry to the
/// switchover (microseconds, the platform clock), the two drains' steps and bounds, and the memory
/// of the run's size (the region, the log's fixed part, its arena), as `,"cost":{..}`.
fn cost_json(out: &mut String, tr: &Truth) {
    let t = |w: usize| tr.get(w);
    let us = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3;
    let (enter, ipi, masked, switch) = (
        t(truth::W_T_ENTER),
        t(truth::W_T_IPI_DONE),
        t(truth::W_T_MASKED),
        t(truth::W_T_SWITCH),
    );
    let ncpu = tr.cpus.len();
    let ring_words = super::config::ring_words(t(truth::W_RING_BYTES));
    let layout = Layout::new(ncpu, ring_words);
    let _ = write!(
        out,
        ",\"cost\":{{\"check_in_us\":{:.1},\"mask_us\":{:.1},\"drain_image_us\":{:.1},\"crash_to_switch_us\":{:.1},\"drain_steps\":[{},{}],\"drain_bounds\":[{},{}],\"drain_records\":[{},{}],\"region_bytes\":{},\"log_bytes\":{},\"arena_bytes\":{}}}",
        us(enter, ipi),
        us(ipi, masked),
        us(masked, switch),
        us(enter, switch),
        t(truth::W_D0_STEPS),
        t(truth::W_D1_STEPS),
        t(truth::W_D0_BOUND),
        t(truth::W_D1_BOUND),
        t(truth::W_D0_RECORDS),
        t(truth::W_D1_RECORDS),
        layout.len,
        size_of::<SimLog>(),
        layout.arena_words * size_of::<usize>(),
    );
}

#[cfg(test)]
mod tests {
    use nmilog::doc_support::OneCpu;
    use nmilog::{handover, Level, Log};

    use super::human_text;

    #[test]
    fn human_output_escapes_controls_and_format_characters() {
        let log: Box<Log<OneCpu, 1, 256, 1024>> = Box::new(Log::new(OneCpu));
        for t in [
            &b"cpu=1 n=7 \x1b[2J\r\n"[..],
            "\u{202e}gpj.exe\u{2028}x".as_bytes(),
            b"\xff",
        ] {
            log.append_raw(Level::Info, 0, 0, t).unwrap();
        }
        log.crash_enter().unwrap();
        let mut region = vec![0u8; Log::<OneCpu, 1, 256, 1024>::MAX_IMAGE_BYTES];
        let n = handover::write_image(&*log, &mut region, &|_| true).unwrap();
        let image = handover::parse(&region[..n]).unwrap();
        let shown: Vec<String> = image.records().map(|r| human_text(&r)).collect();
        assert_eq!(
            shown,
            [
                r"cpu=1 n=7 \x1b[2J\x0d\x0a",
                r"\u{202e}gpj.exe\u{2028}x",
                "<binary>"
            ]
        );
    }
}
