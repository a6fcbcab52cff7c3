//! The main demo: the powerpc crash-shutdown sequence on nmilog, run on a simulated SMP machine
//! (threads as CPUs, signals as the timer interrupt and the NMI IPI), with a kexec switchover into a
//! capture stage that parses the handover image and prints the recovered log.
//!
//! ```text
//! cargo run --release --example crash                      # 4 CPUs; CPU 2 frozen mid-log-write,
//!                                                          # CPU 3 frozen holding the RTAS lock
//! cargo run --release --example crash -- --json            # machine-readable (one record per line)
//! cargo run --release --example crash -- --baseline locked # the 2020 design: deadlocks, exit 2
//! cargo run --release --example crash -- --help            # every option
//! ```
//!
//! Exit codes: 0 success, 2 deadlock detected, 1 any other failure. Everything lives in
//! `nmilog_ppc64::host`; this file only forwards the command line.

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(nmilog_ppc64::host::run(&args));
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the crash simulation needs Linux (memfd, tgkill, signals as interrupts)");
    std::process::exit(1);
}
