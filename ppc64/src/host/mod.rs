//! The host SMP simulation (`std`): the crash sequence run for real on POSIX threads and signals.
//!
//! * **CPUs** are threads (each registered with [`nmilog::host::HostPlatform::register_cpu`]). Each
//!   one logs `cpu=<c> n=<i>` from task context, and `cpu=<c> irq n=<i>` from a timer interrupt: a
//!   `SIGUSR2` a ticker sends to every CPU thread (`tgkill`); the handler does
//!   `irq_enter`/log/`irq_exit`.
//! * **The NMI IPI** is `SIGUSR1`, sent with `tgkill` to each target thread, so the stop lands at an
//!   arbitrary instruction, mid-log-write included. Its handler runs
//!   [`on_nmi_stop`](crate::on_nmi_stop) and never returns (it parks in `pause()` with every signal
//!   blocked: the frozen CPU). `--deaf CPU` blocks `SIGUSR1` on that thread: a CPU hung with
//!   interrupts hard-off, which never checks in.
//! * **Firmware**: an RTAS model behind the owner-aware [`RtasLock`](crate::RtasLock); it counts a
//!   PAPR violation whenever two CPUs are inside a call at once. `ibm,int-off` really stops the timer
//!   signal of the masked source.
//! * **kexec**: the handover image is written (without allocating) into a `memfd` mapped at start-up;
//!   the memfd survives `execv`, and the program execs itself with `--capture-fd N` as the capture
//!   stage, which parses the image and prints the recovered log.
//! * **Ground truth**: every log call is tracked per CPU and context (record index, last write-protocol
//!   step) so the NMI handler knows exactly how many records its CPU had committed and whether it
//!   froze inside a log call; it is handed to the capture stage next to the image.
//! * **`--baseline locked`**: the 2020 design (one spinlock around the log buffer, the RTAS lock taken
//!   on the mask path), which deadlocks; a watchdog reports who holds what and exits with 2.
//!
//! Entry point: [`run`] (what `examples/crash.rs` calls); `--scale` measures the crash path's cost
//! against the CPU count (`scale`).

mod baseline;
mod capture;
mod config;
mod death;
mod firmware;
mod harness;
mod memory;
mod recovery;
mod scale;
mod sim;
mod sys;
mod track;
mod truth;

use self::config::USAGE;
pub use self::config::{Role, SimConfig, EXIT_DEADLOCK, EXIT_FAIL, EXIT_OK, MAX_CPUS};
pub use self::death::{DeathPoint, LIST as DEATH_POINTS};

/// Runs the demo with `args` (without the program name) and returns the exit code: 0 success,
/// 2 deadlock detected, 1 any other failure. The capture stage (`--capture-fd N`, what the kexec
/// switchover execs) is dispatched from here too. In the crash path this process replaces itself
/// with the capture stage, so on success this function returns in the exec'd process.
pub fn run(args: &[String]) -> i32 {
    if let Some(pos) = args.iter().position(|a| a == "--capture-fd") {
        return capture::main(args, pos);
    }
    if args.first().is_some_and(|a| a == "--scale") {
        return scale::run(args);
    }
    if let Some(i) = args.iter().position(|a| a == "--die-in-drain") {
        if args.get(i + 1).is_some_and(|v| v == "list") {
            println!("{DEATH_POINTS}");
            return EXIT_OK;
        }
    }
    // The parser decides what is help: `-h` as an option, not as the value of one or after `--`.
    let cfg = match config::or_exit(SimConfig::parse(args), USAGE) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.baseline_locked {
        baseline::run(cfg)
    } else {
        sim::run(cfg)
    }
}
