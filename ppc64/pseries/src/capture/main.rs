//! The capture stage: the "crash kernel" that the crashing kernel loaded ahead of time into the
//! reserved crash region (`kexec -p`) and jumps into with r3 = handover image, r4 = parameter block.
//!
//! It trusts nothing from the crashed kernel except those two registers: it runs from its own copy in
//! the reserved region, on its own stack, with its own .bss and TOC; it parses the image with
//! `nmilog::handover::parse` (which bounds-checks and CRC-checks everything), prints the dmesg through
//! H_PUT_TERM_CHAR, checks it (per CPU and context: contiguous record numbers, no duplicates, the
//! stopped CPUs' NMI records — and none for a CPU that did not answer —, every torn record explained by
//! an NMI stop, the crash path's messages, timestamps in order, the mask path in the log equal to the
//! sequence's report in the parameter block), prints
//! `capture: recovered=N torn=T dropped=D cpus=C mask=PATH ok` and powers off through RTAS.

#![no_std]
#![no_main]

#[path = "../asm.rs"]
mod asm;
#[path = "../bootparams.rs"]
#[allow(dead_code)]
mod bootparams;
#[path = "../hcall.rs"]
#[allow(dead_code)]
mod hcall;
#[path = "../mem.rs"]
mod mem;
#[path = "../term.rs"]
mod term;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use bootparams::{str16, BootParams, PARAMS_MAGIC};
use nmilog::handover;
use nmilog::ContextKind;
use term::LineWriter;

/// Most CPUs this stage checks.
const MAX_CPUS: usize = 64;

// Entry. The crashing CPU arrives little-endian, 64-bit, real mode, external interrupts off, with
// r3 = image address and r4 = parameter block; nothing else is assumed. Load the TOC, zero .bss
// (keeping r3/r4), switch to our own stack (zero back chain), enable FP/VMX/VSX (compiled `core`
// may use VSX) and call `capture_main(r3, r4)`.
core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .globl _start
    .type _start, @function
_start:
"#,
    asm::load_toc!(),
    asm::zero_bss!(),
    asm::initial_stack!("__capture_stack_top"),
    asm::enable_fp_vsx!(),
    r#"
    bl {main}
    nop
3:  b 3b
    .size _start, . - _start

    .section .bss.capture_stack, "aw", @nobits
    .balign 16
__capture_stack:
    .space 65536
__capture_stack_top:
    .text
    "#,
    main = sym capture_main,
);

/// The terminal (vty `reg`) from the parameter block (one CPU runs here: Relaxed is enough).
static TERM: AtomicU64 = AtomicU64::new(0);

/// The console: H_PUT_TERM_CHAR output, 16 bytes per call, line-buffered.
fn console() -> LineWriter<16> {
    LineWriter::new(TERM.load(Ordering::Relaxed))
}

/// Power off through RTAS with this stage's own argument buffer.
fn power_off(token: u32) -> ! {
    #[repr(C, align(16))]
    struct Args([u32; 8]);
    let mut a = Args([
        token.to_be(),
        2u32.to_be(),
        1u32.to_be(),
        u32::MAX.to_be(),
        u32::MAX.to_be(),
        u32::MAX.to_be(),
        0,
        0,
    ]);
    if token != 0 {
        // SAFETY: `a` lives on this stage's stack at a real address (translation is off); the RTAS
        // hypercall reads the cells and writes the return cell; `power-off` ends the machine.
        unsafe {
            hcall::hcall(
                hcall::KVMPPC_H_RTAS,
                [&mut a as *mut Args as u64, 0, 0, 0, 0, 0],
            )
        };
    }
    loop {
        core::hint::spin_loop();
    }
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
    /// In order, none twice, and every missing record counted as overwritten in its ring.
    fn accounted(&self, overwritten: u64) -> bool {
        !self.disorder && self.missing() == overwritten
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

extern "C" fn capture_main(image: usize, params: usize) -> ! {
    // SAFETY: r4 points at the parameter block the crashed kernel wrote at PARAMS_BASE; read it with a
    // volatile copy (it was written before the jump, by the same CPU), then check its magic.
    let p: BootParams = unsafe { (params as *const BootParams).read_volatile() };
    TERM.store(p.term as u64, Ordering::Relaxed);
    let mut out = console();
    let _ = writeln!(out);
    if p.magic != PARAMS_MAGIC {
        let _ = writeln!(
            out,
            "capture: bad parameter block at {params:#x}\ncapture: FAILED"
        );
        loop {
            core::hint::spin_loop();
        }
    }
    let scen = str16(&p.scenario);
    let _ = writeln!(
        out,
        "capture: crash kernel running at {:#x} (stack, .bss, TOC of its own); handover image at {image:#x}, {} bytes; crashed CPU {}, scenario {scen}",
        capture_main as *const () as usize, p.image_len, p.crash_cpu
    );
    let len = (p.image_len as usize).min(bootparams::HANDOVER_SIZE);
    // SAFETY: r3 points at the handover region the crashed kernel filled; `len` is clamped to the
    // region, which nothing writes any more. `parse` trusts none of its bytes.
    let bytes = unsafe { core::slice::from_raw_parts(image as *const u8, len) };
    let img = match handover::parse(bytes) {
        Ok(i) => i,
        Err(e) => {
            let _ = writeln!(
                out,
                "capture: handover image unreadable: {e}\ncapture: FAILED"
            );
            power_off(p.power_off_token)
        }
    };
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
    let mut ipi_complete = false;
    let mut switchover = false;
    let mut mask = "unknown";
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
        if text == "IPI complete" {
            ipi_complete = true;
        }
        if text == "kexec: Starting switchover sequence." {
            switchover = true;
        }
        if let Some(m) = text
            .rsplit_once("[mask_path=")
            .and_then(|(_, m)| m.strip_suffix(']'))
        {
            mask = match m {
                "rtas" => "rtas",
                "rtas-takeover" => "rtas-takeover",
                "presenter" => "presenter",
                _ => "unknown",
            };
        }
    }
    let t = img.totals();
    let _ = writeln!(out, "capture: end of dmesg");

    // Checks.
    let reported = str16(&p.mask_path);
    let mut ok = img.corruption().is_none()
        && ts_back == 0
        && ipi_complete
        && switchover
        && mask != "unknown"
        && mask == reported;
    for c in 0..ncpu {
        let crash = c == p.crash_cpu as usize;
        let answered = p.answered & (1 << c) != 0;
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
        let cpu_ok =
            task[c].count > 0 && task[c].accounted(ow(0)) && irq[c].accounted(ow(1)) && stop_ok;
        ok &= cpu_ok;
        let _ = writeln!(
            out,
            "capture: C{c}: task {} | irq {} | {} | contexts{}{}{}{}{}",
            task[c],
            irq[c],
            if crash {
                "crashing CPU"
            } else if !answered {
                if stopped[c] {
                    "DID NOT ANSWER BUT HAS A STOPPED RECORD"
                } else {
                    "did not answer the NMI (no stopped record)"
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
            let explained = stop_depth[c].is_some_and(|sd| d <= sd);
            ok &= explained;
            let _ = writeln!(
                out,
                "capture: C{c}: {} torn record(s) at depth {d} ({}), {}",
                x.torn,
                img.context_kind(c, d).map_or("?", |k| k.name()),
                if explained {
                    "explained: the NMI stopped this CPU mid-write"
                } else {
                    "UNEXPLAINED"
                }
            );
        }
    }
    let dropped = t.dropped + t.overwritten + img.left_out() + img.bad_cpu_dropped();
    let _ = writeln!(
        out,
        "capture: losses: torn {} | overwritten {} | refused {} | left out {} | bad cpu {}; checks: timestamps {}, IPI complete {}, switchover {}, corruption {}, mask path {} (sequence report: {reported}, {} CPUs did not answer)",
        t.torn,
        t.overwritten,
        t.dropped,
        img.left_out(),
        img.bad_cpu_dropped(),
        if ts_back == 0 { "ordered" } else { "OUT OF ORDER" },
        if ipi_complete { "yes" } else { "MISSING" },
        if switchover { "yes" } else { "MISSING" },
        if img.corruption().is_none() { "none" } else { "FOUND" },
        if mask == reported { "agrees" } else { "DISAGREES" },
        p.not_answered,
    );
    let _ = writeln!(
        out,
        "capture: recovered={recovered} torn={} dropped={dropped} cpus={} mask={mask} {}",
        t.torn,
        img.cpu_count(),
        if ok { "ok" } else { "FAILED" }
    );
    power_off(p.power_off_token)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut out = console();
    let _ = writeln!(out, "capture: PANIC: {info}\ncapture: FAILED");
    loop {
        core::hint::spin_loop();
    }
}
