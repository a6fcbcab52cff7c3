//! The `log` backend: level mapping, target prefix, key-values, no allocation on the path, NMI
//! context, and the one-line init.
#![cfg(feature = "log")]

use log::Log as _;
use nmilog::facade::{Facade, TRACE_PREFIX};
use nmilog::host::HostPlatform;
use nmilog::ring::Read;
use nmilog::{ContextKind, Level, Log, MainReader, RecordBuf};

type L = Log<HostPlatform, 2, 1024, 8192>;

fn read_all(log: &L, r: &mut MainReader) -> Vec<(u8, usize, String)> {
    log.flush();
    let mut out = vec![];
    let mut rec = RecordBuf::new();
    while r.read(log, &mut rec) == Read::Record {
        out.push((
            rec.header.level,
            rec.header.context().1,
            rec.text().unwrap().to_string(),
        ));
    }
    out
}

fn record<'a>(
    level: log::Level,
    target: &'a str,
    args: std::fmt::Arguments<'a>,
) -> log::Record<'a> {
    log::Record::builder()
        .level(level)
        .target(target)
        .args(args)
        .build()
}

#[test]
fn levels_and_target_prefix() {
    static LOG: L = Log::new(HostPlatform::new(2));
    static FACADE: Facade = Facade::new(&LOG);
    HostPlatform::register_cpu(0);
    let mut r = LOG.main_reader();
    for (lvl, want) in [
        (log::Level::Error, Level::Err),
        (log::Level::Warn, Level::Warning),
        (log::Level::Info, Level::Info),
        (log::Level::Debug, Level::Debug),
        (log::Level::Trace, Level::Debug),
    ] {
        FACADE.log(&record(lvl, "drv::net", format_args!("x={}", want as u8)));
        let got = read_all(&LOG, &mut r);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, want as u8);
        let prefix = if lvl == log::Level::Trace {
            TRACE_PREFIX
        } else {
            ""
        };
        assert_eq!(got[0].2, format!("{prefix}drv::net: x={}", want as u8));
    }
}

#[test]
fn without_target_and_long_lines() {
    static LOG: L = Log::new(HostPlatform::new(2));
    static FACADE: Facade = Facade::new(&LOG).without_target();
    HostPlatform::register_cpu(1);
    let mut r = LOG.main_reader();
    FACADE.log(&record(log::Level::Info, "t", format_args!("plain")));
    let long = "y".repeat(4 * nmilog::LINE_MAX);
    FACADE.log(&record(log::Level::Error, "t", format_args!("{long}")));
    let got = read_all(&LOG, &mut r);
    assert_eq!(got[0].2, "plain");
    assert_eq!(got[1].2.len(), nmilog::LINE_MAX);
    assert!(got[1].2.ends_with(nmilog::TRUNCATION_MARKER));
}

#[cfg(feature = "kv")]
#[test]
fn key_values_are_appended() {
    static LOG: L = Log::new(HostPlatform::new(2));
    static FACADE: Facade = Facade::new(&LOG);
    HostPlatform::register_cpu(0);
    let mut r = LOG.main_reader();
    let kvs: &[(&str, i32)] = &[("port", 8), ("err", -5)];
    FACADE.log(
        &log::Record::builder()
            .level(log::Level::Warn)
            .target("usb")
            .args(format_args!("reset"))
            .key_values(&kvs)
            .build(),
    );
    let got = read_all(&LOG, &mut r);
    assert_eq!(got[0].2, "usb: reset port=8 err=-5");
}

#[test]
fn nmi_context_only_appends_to_the_ring() {
    static LOG: L = Log::new(HostPlatform::new(2));
    static FACADE: Facade = Facade::new(&LOG);
    HostPlatform::register_cpu(1);
    let mut r = LOG.main_reader();
    {
        let _nmi = LOG.enter(ContextKind::Nmi);
        FACADE.log(&record(
            log::Level::Error,
            "nmi",
            format_args!("cpu {} stopped", 1),
        ));
        // No flush from NMI context: the main log is untouched until normal context flushes.
        assert_eq!(LOG.main().next_seq(), 0);
        FACADE.flush(); // a `log::logger().flush()` in NMI context is a no-op
        assert_eq!(LOG.main().next_seq(), 0);
    }
    let got = read_all(&LOG, &mut r);
    assert_eq!(
        got,
        [(Level::Err as u8, 1, "nmi: cpu 1 stopped".to_string())]
    );
}

/// The global path: `init` installs the backend, `log::*!` macros reach the log, the max level
/// filters, a second init is refused.
#[test]
fn init_is_one_line() {
    static LOG: L = Log::new(HostPlatform::new(2));
    HostPlatform::register_cpu(0);
    nmilog::facade::init(&LOG, log::LevelFilter::Info).unwrap();
    assert_eq!(
        nmilog::facade::init(&LOG, log::LevelFilter::Info),
        Err(nmilog::facade::InitError::AlreadyInitialized)
    );
    let mut r = LOG.main_reader();
    log::info!(target: "boot", "{} cpus", 2);
    log::debug!("dropped by the max level");
    let got: Vec<_> = read_all(&LOG, &mut r)
        .into_iter()
        .filter(|(_, _, t)| t.starts_with("boot:") || t.contains("dropped"))
        .collect();
    assert_eq!(got, [(Level::Info as u8, 0, "boot: 2 cpus".to_string())]);
}

// --------------------------------------------------------------- no allocation on the log path

struct CountingAlloc;
std::thread_local! {
    static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}
// SAFETY: forwards to the system allocator; the counter is a const thread-local without a
// destructor, so counting never allocates or re-enters.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn the_log_path_does_not_allocate() {
    static LOG: L = Log::new(HostPlatform::new(2));
    static FACADE: Facade = Facade::new(&LOG);
    HostPlatform::register_cpu(1);
    let _ = nmilog::host::HostPlatform::clock_ns(); // calibrate the clock first
    FACADE.log(&record(log::Level::Info, "warm", format_args!("up")));
    let before = ALLOCS.with(|c| c.get());
    for i in 0..100 {
        FACADE.log(&record(
            log::Level::Warn,
            "mm",
            format_args!("{} pages, {:?}", i, (i, "x")),
        ));
    }
    assert_eq!(
        ALLOCS.with(|c| c.get()),
        before,
        "formatting and flushing allocate nothing"
    );
}
