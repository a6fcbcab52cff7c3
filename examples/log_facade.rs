//! Switching a `log`-based program to nmilog: one init call.
//!
//! ```text
//! cargo run --example log_facade --features log
//! ```

use nmilog::console::{Consoles, StderrConsole};
use nmilog::host::HostPlatform;
use nmilog::{ContextKind, Log};

static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
static STDERR: StderrConsole = StderrConsole;
static CONSOLES: Consoles<1> = Consoles::new([&STDERR]);

fn main() {
    HostPlatform::register_cpu(0);
    // The one line: `log` records now go to nmilog.
    nmilog::facade::init(&LOG, log::LevelFilter::Debug).unwrap();
    // Show debug lines on the console too.
    LOG.set_console_loglevel(8);

    log::info!("booting on {} cpus", 2);
    log::debug!(target: "mm", "{} pages free", 4096);
    {
        // An NMI handler: the same `log` call only appends to this CPU's NMI ring.
        let _nmi = LOG.enter(ContextKind::Nmi);
        log::error!("CPU {} stopped", 0);
    }
    log::warn!("back in task context");

    LOG.flush();
    CONSOLES.emit_pending(&LOG);
}
