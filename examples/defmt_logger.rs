//! Switching a defmt program to nmilog: one `defmt_global_logger!` line.
//!
//! On a microcontroller this is the whole change (plus `nmilog` in `Cargo.toml`); the frames land
//! in the per-CPU rings — from NMI handlers too — and reach the main log, the crash drain and the
//! handover image as raw records. On the host this example builds and runs (the defmt linker
//! script is absent, so the string indices in the frames are meaningless, but the framing is
//! real): it prints each frame's record header and its bytes.
//!
//! ```text
//! cargo run --example defmt_logger --features defmt
//! DEFMT_LOG=info cargo run --example defmt_logger --features defmt   # also info/warn frames
//! ```
//!
//! (defmt compiles out every level below `error` unless `DEFMT_LOG` enables it.)

use nmilog::host::HostPlatform;
use nmilog::record::facility;
use nmilog::{ContextKind, Log, RecordBuf};

static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));

// The one line: defmt's global logger is now nmilog, per (CPU, context depth).
nmilog::defmt_global_logger!(LOG);

// A defmt program may define a timestamp; here the platform clock, in microseconds.
defmt::timestamp!("{=u64:us}", LOG_CLOCK_US());

#[allow(non_snake_case)]
fn LOG_CLOCK_US() -> u64 {
    HostPlatform::clock_ns() / 1000
}

fn main() {
    HostPlatform::register_cpu(0);

    defmt::println!("booting, {=u8} cpus", 2);
    defmt::info!("info frames need DEFMT_LOG=info");
    {
        // An NMI handler: its frame goes to its own slot and ring.
        let _nmi = LOG.enter(ContextKind::Nmi);
        defmt::error!("CPU {=u8} stopped", 0);
    }
    defmt::println!("back in task context");
    LOG.flush();

    let mut reader = LOG.main_reader();
    let mut rec = RecordBuf::new();
    while reader.read(&LOG, &mut rec) == nmilog::ring::Read::Record {
        if rec.header.facility == facility::DEFMT {
            println!(
                "defmt frame: cpu {} ctx {:?} {} bytes {:02x?}",
                rec.header.cpu,
                rec.header.context(),
                rec.payload().len(),
                rec.payload()
            );
        }
    }
}
