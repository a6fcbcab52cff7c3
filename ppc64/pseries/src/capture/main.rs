//! The capture stage: the "crash kernel" that the crashing kernel loaded ahead of time into the
//! reserved crash region (`kexec -p`), entered with r3 = handover image, r4 = parameter block.
//!
//! It trusts nothing from the crashed kernel except those two registers: it runs from its own copy in
//! the reserved region, on its own stack, with its own .bss and TOC. Two ways in:
//! * from the crash path's switchover (`kexec`): r3 = the handover image, r4 = the parameter block
//!   with the crash sequence's report;
//! * from the firmware-assisted-dump stand-in when the crash path died (`fadump`, the `die-in-drain`
//!   scenario): r3 = 0, r4 = the block the kernel registered at boot, with no report. Then the log is
//!   rebuilt from memory (`from_memory`): the descriptor found by scanning RAM, the crash drain run
//!   over the rings as found, into a handover image of this stage's own.
//!
//! Either image is parsed with `nmilog::handover::parse` (which bounds-checks and CRC-checks
//! everything), printed and checked by the one verifier (`verify`), which prints
//! `capture: recovered=N torn=T dropped=D cpus=C mask=PATH [from=memory die=POINT ]ok`; then the
//! stage powers off through RTAS.

#![no_std]
#![no_main]

#[path = "../asm.rs"]
mod asm;
#[path = "../bootparams.rs"]
#[allow(dead_code)]
mod bootparams;
#[path = "../crash_notes.rs"]
#[allow(dead_code)]
mod crash_notes;
#[path = "../death_point.rs"]
#[allow(dead_code)]
mod death_point;
mod flight;
mod from_memory;
#[path = "../hcall.rs"]
#[allow(dead_code)]
mod hcall;
#[path = "../hold.rs"]
#[allow(dead_code)]
mod hold;
#[path = "../mem.rs"]
mod mem;
mod notes;
mod secondaries;
#[path = "../term.rs"]
mod term;
mod verify;
mod xive;

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use bootparams::{str16, str_nul, BootParams, CpuMask, PARAMS_MAGIC};
use death_point::DeathPoint;
use nmilog::handover;
use nmilog_ppc64::{CpuOutcome, CrashStage};
use term::LineWriter;
use verify::{Expect, Reached, Report};

// Entry. The crashing CPU arrives little-endian, 64-bit, real mode, external interrupts off, with
// r3 = image address and r4 = parameter block; nothing else is assumed. Load the TOC, zero .bss
// (keeping r3/r4), switch to our own stack (zero back chain), enable FP/VMX/VSX (compiled `core`
// may use VSX) and call `capture_main(r3, r4)`.
//
// At `_start` + 0x60 (`HOLD_ENTRY`), the secondary hold (see `hold`): entered by each CPU the crash
// stopped, after the go, with r3 = its index and r4 = its hardware id, no stack. It stores
// `arrived[r3]` = r4 + 1 and waits halted (H_JOIN: MSR[EE] is 0) until `release` is non-zero (the
// capture stage H_PRODs it), then stores `back[r3]` = 1 and waits halted for good. Before each
// H_JOIN it sets the decrementer to its maximum (r20 = 0x7fffffff): with MSR[EE] = 0 a negative,
// level-triggered decrementer would end every H_JOIN at once and turn the wait into a spin (after
// ~4 s at QEMU's 512 MHz timebase). r14-r20 survive the hypercalls (PAPR preserves r14-r31). Ordering: the `sync` before each store of `arrived` and
// `back` is LMM(hold:A), paired with the Acquire loads in `hold::arrived`/`hold::back`,
// LMM(hold:B); the `lwsync` after the load of `release` is LMM(hold:D), paired with the Release
// store in `hold::release`, LMM(hold:C).
core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .globl _start
    .type _start, @function
_start:
    b 8f
    .org 0x60
    .globl __secondary_hold
__secondary_hold:
    mr 14, 3
    mr 15, 4
    cmpldi 14, {ncpus}
    bge 7f
    lis 16, {hold_hi}
    sldi 17, 14, 3
    add 17, 17, 16
    addi 18, 15, 1
    sync
    std 18, {arrived}(17)
    lis 20, 0x7fff
    ori 20, 20, 0xffff
5:  ld 19, 0(16)
    cmpdi 19, 0
    bne 6f
    mtspr 22, 20
    li 3, {h_join}
    sc 1
    b 5b
6:  lwsync
    li 18, 1
    sync
    std 18, {back}(17)
7:  mtspr 22, 20
    li 3, {h_join}
    sc 1
    b 7b
8:
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
    ncpus = const bootparams::OUTCOME_CPUS,
    hold_hi = const bootparams::HOLD_BASE >> 16,
    arrived = const hold::ARRIVED_OFF,
    back = const hold::BACK_OFF,
    h_join = const hcall::H_JOIN,
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

extern "C" fn capture_main(image: usize, params: usize) -> ! {
    // SAFETY: r4 points at a parameter block the crashed kernel wrote (at PARAMS_BASE before the
    // jump, or at DUMP_PARAMS_BASE at boot); read it with a volatile copy, then check its magic.
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
    let here = capture_main as *const () as usize;
    let (bytes, expect) = if image != 0 {
        let _ = writeln!(
            out,
            "capture: crash kernel running at {here:#x} (stack, .bss, TOC of its own); handover image at {image:#x}, {} bytes; crashed CPU {}, scenario {scen}",
            p.image_len, p.crash_cpu
        );
        let len = (p.image_len as usize).min(bootparams::HANDOVER_SIZE);
        // SAFETY: r3 points at the handover region the crashed kernel filled; `len` is clamped to
        // the region, which nothing writes any more. `parse` trusts none of its bytes.
        let bytes = unsafe { core::slice::from_raw_parts(image as *const u8, len) };
        // The stopped CPUs first reach the hold: each is done writing breadcrumbs then.
        secondaries::wait_for_arrivals(
            p.ncpus as usize,
            |c| c != p.crash_cpu as usize && p.answered.contains(c),
            p.tb_freq,
        );
        let expect = Expect {
            crash_cpu: p.crash_cpu as usize,
            answered: p.answered,
            not_answered: p.not_answered,
            report: Some(Report {
                mask: str16(&p.mask_path),
            }),
            reached: Reached::ALL,
            died_at: None,
            offline: p
                .outcome
                .iter()
                .enumerate()
                .filter(|&(_, &o)| o == CpuOutcome::Offline as u8)
                .map(|(c, _)| c)
                .collect(),
            machine_checked: flight::machine_checked(bootparams::flight_recorder()),
            prior_ok: flight::print_and_check(
                bootparams::flight_recorder(),
                bootparams::FLIGHT_BASE,
                Some(&p.outcome),
                &mut out,
            ),
        };
        (bytes, expect)
    } else {
        let die = str_nul(&p.die);
        let _ = writeln!(
            out,
            "capture: crash kernel running at {here:#x} (stack, .bss, TOC of its own); no handover image and no report: the crash path died (scenario {scen}, death point {die}); rebuilding the log from memory"
        );
        let Some(r) = from_memory::rebuild(&p, &mut out) else {
            let _ = writeln!(out, "capture: FAILED");
            power_off(p.power_off_token)
        };
        // What the crash path logged before it died: the death point comes from the command line
        // both kernels share; which CPUs stopped, from their check-in flags in memory.
        let reached = match DeathPoint::parse(die.as_bytes()) {
            Some(d) => Reached {
                entry: d.passed(CrashStage::Entered),
                ipi_complete: d.passed(CrashStage::CheckInsDone),
                switchover: d.passed(CrashStage::Drained),
            },
            None => {
                let _ = writeln!(out, "capture: unknown death point {die:?}\ncapture: FAILED");
                power_off(p.power_off_token)
            }
        };
        let others = (0..r.cpus.min(verify::MAX_CPUS)).filter(|&c| c != r.crash_cpu);
        let expect = Expect {
            crash_cpu: r.crash_cpu,
            answered: r.stopped,
            not_answered: others.filter(|&c| !r.stopped.contains(c)).count() as u32,
            report: None,
            reached,
            died_at: Some(die),
            offline: CpuMask::EMPTY,
            machine_checked: flight::machine_checked(bootparams::flight_recorder()),
            prior_ok: flight::print_and_check(
                bootparams::flight_recorder(),
                bootparams::FLIGHT_BASE,
                None,
                &mut out,
            ),
        };
        (r.image, expect)
    };
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
    let notes_ok = notes::print_and_check(&img, expect.crash_cpu, &mut out);
    // The CPUs the crash stopped wait in the hold once the crash path gave its go (right before the
    // switchover): those that answered, with a handover image; none if the path died before.
    let held_ok = secondaries::release_and_report(
        img.cpu_count(),
        |c| expect.report.is_some() && c != expect.crash_cpu && expect.answered.contains(c),
        p.tb_freq,
        &mut out,
    );
    let xive_ok = xive::print_and_check(&p, &mut out);
    let expect = Expect {
        prior_ok: expect.prior_ok && notes_ok && held_ok && xive_ok,
        ..expect
    };
    verify::print_and_check(&img, &expect, &mut out);
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
