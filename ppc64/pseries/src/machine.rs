//! The pseries `nmilog_ppc64::Machine`: what the portable crash-shutdown sequence
//! (`nmilog_ppc64::crash_shutdown`, run by `crash`) needs from this machine; and `power_off_crash`,
//! the crash path's last exit when there is nothing to switch over to.
//!
//! | `Machine` method        | here                                                                        |
//! |-------------------------|-----------------------------------------------------------------------------|
//! | `nmi_ipi_all_but_self`  | `H_SIGNAL_SYS_RESET(-2)`; each target takes the 0x100 system reset         |
//! | `now_ns`                | the timebase scaled to ns (the log's clock)                                 |
//! | `irq_source_count`      | the sources found in the device tree (vty, EPOW), routed to the boot CPU   |
//! | `firmware_mask_source`  | RTAS `ibm,int-off` then `ibm,set-xive(prio 0xff)` through the crash buffer |
//! | `masks_through_hypervisor`, `hypervisor_mask_source` | XIVE: `H_INT_SET_SOURCE_CONFIG(prio 0xff)`, no RTAS |
//! | `mask_at_presenter`     | CPPR 0: `H_CPPR(0)` checked with `H_IPOLL`; XIVE: its TIMA                   |
//! | `park`                  | `or 1,1,1` spin with MSR[EE] off                                            |
//! | `kexec`                 | parameter block + jump to the capture stage, r3 = image                    |
//! | `system_reset_cpu`      | escalation: `H_SIGNAL_SYS_RESET(hw id)` to one CPU                          |
//! | `cpu_online`            | present in /cpus and started (not a `maxcpus` slot left empty)              |
//! | `flight_recorder`       | the ring at `FLIGHT_BASE`, in the preserved region (`bootparams`)           |
//! | `stage`, `drain_step`   | breadcrumbs; the `die-in-drain` scenario's death point (`death`)            |
//!
//! Its messages go to nmilog through the core's `pr_*!` macros (the kernel log is registered as the
//! global logger at boot, `klog::register_global`), never to the console.

use core::sync::atomic::Ordering;

use nmilog_ppc64::{CrashStage, DrainStep, FlightRecorder, Machine, RtasArgs, ShutdownReport};

use crate::bootparams::{name16, BootParams};
use crate::{
    console, crash_state, death, exceptions, fadump, hcall, irq, kexec, percpu, presenter, rtas,
    scenario, timebase, xive,
};

/// The pseries machine.
#[derive(Debug)]
pub struct Pseries;

/// The one instance.
pub static MACHINE: Pseries = Pseries;

/// The `machine-check` scenario's timing: waits (bounded: a crash path that never gets there must
/// not keep this CPU from its handshake) until the crashing CPU's drain-start breadcrumb is in the
/// flight recorder, then takes the injected machine check.
fn machine_check_during_drain() {
    const WAIT_US: u64 = 2_000_000;
    // Once: an unrecoverable machine check parks through `park` again.
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    // Relaxed: only this CPU ever takes it.
    if TAKEN.swap(true, Ordering::Relaxed) {
        return;
    }
    let fr = crate::bootparams::flight_recorder();
    let t0 = timebase::now();
    while !fr
        .iter()
        .any(|b| b.event == Some(nmilog_ppc64::flight::Event::DrainStart))
        && timebase::ticks_to_us(timebase::now().wrapping_sub(t0)) < WAIT_US
    {
        irq::quiet_decrementer();
        core::hint::spin_loop();
    }
    exceptions::inject_machine_check();
}

impl Machine for Pseries {
    fn nmi_ipi_all_but_self(&self, me: usize) {
        let t0 = timebase::now();
        let ncpus = nmilog::Platform::cpu_count(crate::klog::LOG.platform());
        let lost = scenario::deaf_logging_cpu(ncpus).or_else(|| scenario::hard_lockup_cpu(ncpus));
        if let Some(lost) = lost {
            // The scenario's lost (or masked) IPI: every other online CPU but `lost` gets its own
            // system reset. (H_SIGNAL_SYS_RESET(-2) reaches only the vCPUs that exist: never an
            // empty `maxcpus` slot.)
            for c in (0..ncpus).filter(|&c| c != me && c != lost && crash_state::online(c)) {
                let hw = percpu::PERCPU[c].hw_id.load(Ordering::Relaxed);
                let st = hcall::signal_sys_reset(hw as i64);
                if st != 0 {
                    nmilog::pr_warn!("crash: H_SIGNAL_SYS_RESET({hw}) = {st}");
                }
            }
            nmilog::pr_info!(
                "crash: CPU {me}: H_SIGNAL_SYS_RESET to each online CPU but {lost} (its IPI is lost) after {} us",
                timebase::ticks_to_us(timebase::now().wrapping_sub(t0))
            );
            return;
        }
        let st = hcall::signal_sys_reset(hcall::SYS_RESET_ALL_OTHERS);
        nmilog::pr_info!(
            "crash: CPU {me}: H_SIGNAL_SYS_RESET(-2) = {st} after {} us",
            timebase::ticks_to_us(timebase::now().wrapping_sub(t0))
        );
    }

    fn now_ns(&self) -> u64 {
        timebase::now_ns()
    }

    /// A pause in the check-in wait, which runs with MSR[EE] = 0: keeps the decrementer from
    /// staying asserted (see `irq::quiet_decrementer`).
    fn relax(&self) {
        irq::quiet_decrementer();
        core::hint::spin_loop();
    }

    /// `H_SIGNAL_SYS_RESET` with the CPU's hardware id. In `deaf-logging` the reset to its CPU is
    /// lost like its IPI (a vCPU the hypervisor never runs): nothing is sent.
    fn system_reset_cpu(&self, cpu: usize) -> bool {
        let ncpus = nmilog::Platform::cpu_count(crate::klog::LOG.platform());
        if scenario::deaf_logging_cpu(ncpus) == Some(cpu) {
            nmilog::pr_info!("crash: system reset to CPU {cpu}: lost (scenario deaf-logging)");
            return false;
        }
        let Some(slot) = percpu::PERCPU.get(cpu) else {
            return false;
        };
        let hw = slot.hw_id.load(Ordering::Relaxed);
        let st = hcall::signal_sys_reset(hw as i64);
        nmilog::pr_info!("crash: escalation: H_SIGNAL_SYS_RESET({hw}) to CPU {cpu} = {st}");
        st == hcall::H_SUCCESS
    }

    fn cpu_online(&self, cpu: usize) -> bool {
        crash_state::online(cpu)
    }

    fn flight_recorder(&self) -> Option<&FlightRecorder> {
        Some(crate::bootparams::flight_recorder())
    }

    fn irq_source_count(&self) -> usize {
        crash_state::source_count()
    }

    /// `ibm,int-off(irq)`, then `ibm,set-xive(irq, server, 0xff)` (what Linux's ics_rtas_mask_irq
    /// does), then `ibm,get-xive` to log the priority now in force. `args` is the crash state's own
    /// buffer; it is copied into `rtas::CRASH_BUF` in PAPR layout (big-endian cells) for each call.
    fn firmware_mask_source(&self, src: usize, args: &RtasArgs) -> Result<(), i32> {
        let me = percpu::this_cpu_index();
        let Some(irq) = crash_state::source(src) else {
            return Err(rtas::PARAM_ERROR);
        };
        let server = crash_state::server();
        // With ic-mode=xive /rtas has none of these: report it instead of calling token 0.
        let (Some(int_off), Some(set_xive), Some(get_xive)) = (
            rtas::token(rtas::Func::IntOff),
            rtas::token(rtas::Func::SetXive),
            rtas::token(rtas::Func::GetXive),
        ) else {
            nmilog::pr_warn!(
                "crash: irq {irq:#x}: /rtas has no ibm,int-off/set-xive/get-xive: not masked"
            );
            return Err(rtas::NO_TOKEN);
        };
        args.fill(me, int_off, &[irq], 1);
        // SAFETY: the crash sequence owns the RTAS lock (taken, or taken over from a CPU stopped
        // outside the firmware call) and has marked itself inside the call; CRASH_BUF is used only by
        // the crashing CPU.
        let off = unsafe { rtas::call_from_args(&rtas::CRASH_BUF, args) };
        args.fill(me, set_xive, &[irq, server, 0xff], 1);
        // SAFETY: as above.
        let set = unsafe { rtas::call_from_args(&rtas::CRASH_BUF, args) };
        args.fill(me, get_xive, &[irq], 3);
        // SAFETY: as above.
        let get = unsafe { rtas::call_from_args(&rtas::CRASH_BUF, args) };
        nmilog::pr_info!(
            "crash: irq {irq:#x}: ibm,int-off = {off}, ibm,set-xive(prio 0xff) = {set}; ibm,get-xive = {get}: priority {:#x}",
            args.ret(2)
        );
        if off == rtas::SUCCESS {
            Ok(())
        } else {
            Err(off)
        }
    }

    fn mask_at_presenter(&self) {
        let hw = percpu::this_cpu().map_or(0, |c| c.hw_id.load(Ordering::Relaxed)) as u64;
        let (_, before) = presenter::cppr(hw);
        let st = presenter::set_cppr(0);
        let (pst, after) = presenter::cppr(hw);
        nmilog::pr_info!(
            "crash: presenter: CPPR 0 through the {} = {st}; read back = {pst}: CPPR {before:#x} -> {after:#x} (nothing is presented)",
            presenter::how()
        );
    }

    /// XIVE: sources are masked with `H_INT_SET_SOURCE_CONFIG`, no RTAS call.
    fn masks_through_hypervisor(&self) -> bool {
        xive::active()
    }

    /// `H_INT_SET_SOURCE_CONFIG(lisn, priority 0xff)` after PQ 01 at the source's ESB, then
    /// `H_INT_GET_SOURCE_CONFIG` to log the priority now in force (what Linux's XIVE irq shutdown
    /// does).
    fn hypervisor_mask_source(&self, src: usize) -> Result<(), i64> {
        let Some(irq) = crash_state::source(src) else {
            return Err(hcall::H_PARAMETER);
        };
        let (st, prio) = xive::mask(irq);
        nmilog::pr_info!(
            "crash: irq {irq:#x}: H_INT_SET_SOURCE_CONFIG(prio 0xff) = {st}; H_INT_GET_SOURCE_CONFIG: priority {prio:#x}"
        );
        if st == hcall::H_SUCCESS && prio == xive::MASKED {
            Ok(())
        } else {
            Err(if st == hcall::H_SUCCESS {
                hcall::H_PARAMETER
            } else {
                st
            })
        }
    }

    /// The breadcrumb, and the `die-in-drain` scenario's death point (`death`).
    fn stage(&self, stage: CrashStage) {
        death::at_stage(stage)
    }

    /// The breadcrumb, and the `die-in-drain` scenario's death point (`death`).
    fn drain_step(&self, step: DrainStep) {
        death::at_step(step)
    }

    fn interrupted_context(&self) -> Option<(nmilog::ContextKind, usize)> {
        crate::percpu::interrupted_context()
    }

    /// A CPU the crash stopped (checked in) waits for the go and goes to the capture stage's hold
    /// (`kexec::wait_for_go_then_hold`); any other CPU parks here.
    fn park(&self) -> ! {
        irq::disable();
        let cpu = percpu::this_cpu_index();
        if crate::klog::LOG.crashing_cpu().is_some_and(|c| c != cpu) && crash_state::checked_in(cpu)
        {
            let ncpus = nmilog::Platform::cpu_count(crate::klog::LOG.platform());
            if scenario::machine_check_cpu(ncpus) == Some(cpu) {
                machine_check_during_drain();
            }
            kexec::wait_for_go_then_hold(cpu)
        }
        exceptions::park()
    }

    fn kexec<const CPUS: usize>(&self, image: &[u8], report: &ShutdownReport<CPUS>) -> ! {
        let hw = percpu::this_cpu().map_or(0, |c| c.hw_id.load(Ordering::Relaxed)) as u64;
        // XIVE: this CPU's part of Linux's `kexec_cpu_down` before the jump (the stopped CPUs do
        // theirs after the go); the statuses go to the capture stage, which checks the result.
        let xive_teardown = if xive::active() {
            xive::shutdown(hw)
        } else {
            [0; 2]
        };
        let params = kexec::write_params(BootParams {
            image_len: image.len() as u64,
            ncpus: report.cpus as u32,
            crash_cpu: report.crash_cpu as u32,
            mask_path: name16(report.mask.path.name()),
            not_answered: report.not_answered as u32,
            answered: (0..report.cpus)
                .filter(|&c| crash_state::STATE.answered(c))
                .collect(),
            outcome: {
                let mut o = [0u8; crate::bootparams::OUTCOME_CPUS];
                for (c, d) in o.iter_mut().enumerate().take(report.cpus) {
                    *d = crash_state::STATE.outcome(c) as u8;
                }
                o
            },
            escalated: report.escalated as u32,
            offline: report.offline as u32,
            crash_hw: hw,
            xive_teardown,
            ..fadump::platform_params()
        });
        // Linux's `time_to_dump`: the stopped CPUs go to the capture stage's hold.
        kexec::release_secondaries(report.crash_cpu, report.cpus);
        kexec::switchover(image.as_ptr() as usize, params);
        // No capture stage loaded: say so on the raw console and power off — only if the crash path
        // found the firmware free to call (PAPR: no second CPU in RTAS); else park.
        if !report.mask.decision.may_call_firmware() {
            console::write_bytes(
                b"crash: no capture stage loaded; firmware busy: parked\ncapture: none\n",
            );
            exceptions::park()
        }
        console::write_bytes(b"crash: no capture stage loaded; powering off\ncapture: none\n");
        power_off_crash()
    }
}

/// Powers off through the crash buffer without the RTAS lock (the lock may be held by a CPU that
/// stopped while holding it). The last step of a run that cannot go on (a baseline scenario's
/// watchdog, the firmware-assisted dump, a panic, a crash with no capture stage whose masking found
/// the firmware free): a CPU that did not stop could still be inside RTAS then — the one PAPR overlap
/// this test image accepts, at power-off only.
pub fn power_off_crash() -> ! {
    // SAFETY: the crash buffer is used by the calling CPU only (the crashing CPU or the watchdog:
    // one at a time); `call_with` needs no other guarantee for memory safety.
    unsafe {
        let mut r = [0u32; 1];
        rtas::call_with(
            &rtas::CRASH_BUF,
            rtas::Func::PowerOff,
            &[u32::MAX, u32::MAX],
            &mut r,
        );
    }
    exceptions::park()
}
