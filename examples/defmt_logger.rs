//! Switching a defmt program to nmilog: one `defmt_global_logger!` line.
//!
//! On a microcontroller this is the whole change (plus `nmilog` in `Cargo.toml`); the frames land
//! in the per-CPU rings — from NMI handlers too — and reach the main log, the crash drain and the
//! handover image as raw records. On the host this example builds and runs (the defmt linker
//! script is absent, so the string indices in the frames are meaningless, but the framing is
//! real): it prints each frame's record header and its bytes. Given a path, it then enters the crash
//! path and writes the handover image there, for `dmesg --elf` to decode with this binary's
//! `.defmt` table. That needs the table at defmt's indices, which only a link with defmt's
//! `.defmt` section at address 1 and no position-independent code gives: `tests/dmesg_defmt.rs`
//! builds it so (`-C relocation-model=static`, `tests/data/defmt-host.x`).
//!
//! ```text
//! cargo run --example defmt_logger --features defmt [IMAGE]
//! DEFMT_LOG=info cargo run --example defmt_logger --features defmt   # also info/warn frames
//! ```
//!
//! (defmt compiles out every level below `error` unless `DEFMT_LOG` enables it.)

use nmilog::handover;
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
    if let Some(path) = std::env::args_os().nth(1) {
        // The crash path: this CPU is the crashing one; the other CPU never ran.
        LOG.crash_enter()
            .expect("the only CPU enters the crash path");
        let mut image = vec![0u8; 64 << 10];
        let n = handover::write_image(&LOG, &mut image, &|_| true).expect("write the image");
        std::fs::write(&path, &image[..n]).expect("write the image file");
    }
}
