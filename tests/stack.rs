//! Stack use per call, measured by stack painting, at 256, 1024 and 4096 CPUs: a kernel stack is
//! 16 KiB (IRQ stacks smaller), and a log call from anywhere must fit in a small part of it whatever
//! the CPU count. Every operation here must stay within [`BUDGET`] bytes (the image writer within
//! [`IMAGE_BUDGET`]); the measured figures are
//! printed (`cargo test --release --test stack -- --nocapture`).
//!
//! How: on a thread with a large stack, paint the 64 KiB below the stack pointer with a pattern (in
//! assembly: that memory is no Rust object), run the operation, then find the deepest word that no
//! longer holds the pattern; less the same figure for an empty closure. The figures are for
//! optimised code, as a kernel builds it: in a debug build the test is ignored (`cargo xtask test`
//! runs it in release, its `stack` step).
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::alloc::{alloc_zeroed, Layout};
use std::arch::asm;

use nmilog::host::HostPlatform;
use nmilog::record::flags;
use nmilog::{
    handover, CrashSink, FlushPolicy, Level, Log, MainReader, Origin, RecordBuf, RunSink,
};

/// Bytes of stack any one log call, flush, reader or crash drain may use.
const BUDGET: usize = 2048;
/// Bytes of stack the handover image writer may use: it runs once, on the crashing CPU, and holds a
/// crash drain (two, one after the other) below its own frame.
const IMAGE_BUDGET: usize = 3072;
const PAINT: usize = 64 * 1024;
const PATTERN: u64 = 0xa5c3_5a3c_a5c3_5a3c;

/// A crash sink that takes runs of ring words (`CrashSink::runs`) into a buffer of its own.
struct WordSink(&'static mut [usize]);

impl CrashSink for WordSink {
    fn record(&mut self, _: Origin, _: &RecordBuf) -> bool {
        true
    }
    fn runs(&mut self) -> Option<&mut dyn RunSink> {
        Some(self)
    }
}

impl RunSink for WordSink {
    fn run_room(&mut self) -> &mut [usize] {
        self.0
    }
    fn run_taken(&mut self, _: Origin, _: usize, _: usize) -> bool {
        true
    }
}

/// The deepest stack use of `f`, in bytes below the caller's stack pointer.
#[inline(never)]
fn stack_used(f: &mut dyn FnMut()) -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer.
    unsafe { asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    let lo = (sp - PAINT) & !7;
    let words = (sp - 16 - lo) / 8;
    // SAFETY: fills the unused part of this thread's stack below the stack pointer with the
    // pattern: no Rust object lives there (this function is not a leaf, so it keeps nothing in a
    // red zone). The thread's stack is far larger than `PAINT` (see `measure`).
    unsafe {
        asm!(
            "rep stosq",
            inout("rdi") lo => _,
            inout("rcx") words => _,
            in("rax") PATTERN,
            options(nostack, preserves_flags)
        )
    };
    std::hint::black_box(&mut *f)();
    let mut deepest = sp - 16;
    for i in 0..words {
        let at = lo + i * 8;
        let v: u64;
        // SAFETY: reads a word of this thread's stack below the stack pointer (painted above,
        // possibly written by `f` since): mapped memory, no Rust object.
        unsafe {
            asm!("mov {}, [{}]", out(reg) v, in(reg) at, options(nostack, readonly, preserves_flags))
        };
        if v != PATTERN {
            deepest = at;
            break;
        }
    }
    sp - deepest
}

/// Runs `f` on a fresh thread with a 1 MiB stack and returns its stack use, less what calling an
/// empty closure the same way takes (the call itself, the closure's frame).
fn measure(f: impl FnMut() + Send + 'static) -> usize {
    let mut f = f;
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let base = stack_used(&mut || std::hint::black_box(()));
            stack_used(&mut f) - base
        })
        .unwrap()
        .join()
        .unwrap()
}

/// A log in zero-filled heap memory (too big for a stack; all-zero bytes are a valid
/// `Log<HostPlatform, ..>`: atomics `new` sets to 0, and the flush's record buffer).
///
/// # Safety
/// All-zero bytes must be a valid `T`.
unsafe fn zeroed<T>() -> &'static T {
    let layout = Layout::new::<T>();
    // SAFETY: a non-zero-sized layout.
    let p = unsafe { alloc_zeroed(layout) };
    assert!(!p.is_null());
    // SAFETY: aligned, sized and zero-filled for `T`, which the caller says is valid all-zero;
    // leaked, so `'static`.
    unsafe { &*(p as *const T) }
}

macro_rules! figures {
    ($cpus:literal) => {{
        type L = Log<HostPlatform, $cpus, 256, 4096>;
        // SAFETY: all-zero bytes are a valid `Log<HostPlatform, ..>` (see `zeroed`).
        let log: &'static L = unsafe { zeroed::<L>() };
        log.platform().set_cpu_count($cpus);
        log.set_flush_policy(FlushPolicy::Deferred);
        // A record in every CPU's task ring, so the flush merges all of them; each an open line
        // followed by a `pr_cont!` piece, so the flush's join runs too (its deepest path).
        measure(move || {
            for c in 0..$cpus {
                HostPlatform::register_cpu(c);
                log.append(Level::Info, 0, 0, b"a record on every CPU")
                    .unwrap();
                log.append(Level::Info, 0, flags::CONT, b", continued\n")
                    .unwrap();
            }
        });
        let mut out = Vec::new();
        out.push((
            "append_raw (NMI path)",
            measure(move || {
                HostPlatform::register_cpu(1);
                log.nmi_enter();
                log.append_raw(Level::Emerg, 0, 0, b"in an NMI").unwrap();
                log.nmi_exit();
            }),
        ));
        out.push((
            "log_fmt, no flush",
            measure(move || {
                HostPlatform::register_cpu(2);
                let _ = log.log_fmt(Level::Info, 0, format_args!("x = {}, y = {:?}", 42, "why"));
            }),
        ));
        out.push((
            "flush (merges every CPU's ring)",
            measure(move || {
                HostPlatform::register_cpu(3);
                log.flush();
            }),
        ));
        // The flush took the join's path: lines and their pieces are one record each (the main
        // log keeps the newest of them).
        let (mut r, mut buf, mut joined) = (log.main_reader(), RecordBuf::new(), 0);
        while r.read(log, &mut buf) == nmilog::ring::Read::Record {
            joined += usize::from(buf.payload() == b"a record on every CPU, continued");
        }
        assert!(joined > 0, "no line was joined with its piece");
        measure(move || {
            for c in 0..$cpus {
                HostPlatform::register_cpu(c);
                log.append(Level::Info, 0, 0, b"again").unwrap();
                log.append(Level::Info, 0, flags::CONT, b", continued\n")
                    .unwrap();
            }
        });
        out.push((
            "append + flush (default policy)",
            measure(move || {
                HostPlatform::register_cpu(4);
                log.set_flush_policy(FlushPolicy::Eager);
                log.append(Level::Info, 0, 0, b"and the flush").unwrap();
            }),
        ));
        out.push((
            "main-log reader",
            measure(move || {
                let mut r = MainReader::new();
                let mut buf = RecordBuf::new();
                while r.read(log, &mut buf) == nmilog::ring::Read::Record {}
            }),
        ));
        measure(move || {
            for c in 0..$cpus {
                HostPlatform::register_cpu(c);
                log.append(Level::Info, 0, 0, b"unflushed at the crash")
                    .unwrap();
            }
            HostPlatform::register_cpu(0);
            // A refused record: the drain also writes an accounting record (its text path).
            let _ = log.append_raw(Level::Info, 0, 0, &[0; 4096]);
            log.crash_enter().unwrap();
        });
        out.push((
            "crash drain",
            measure(move || {
                HostPlatform::register_cpu(0);
                let _ = log.drain_on_crash(&|_| true, &mut |_, _: &RecordBuf| true);
            }),
        ));
        out.push((
            "crash drain into runs of ring words",
            measure(move || {
                HostPlatform::register_cpu(0);
                let mut sink = WordSink(Box::leak(vec![0usize; 1 << 16].into_boxed_slice()));
                let _ = log.drain_on_crash(&|_| true, &mut sink);
            }),
        ));
        let region: &'static mut [u8] = Box::leak(vec![0u8; L::MAX_IMAGE_BYTES].into_boxed_slice());
        out.push((
            "handover image (two drains)",
            measure(move || {
                HostPlatform::register_cpu(0);
                let _ = handover::write_image(log, region, &|_| true);
            }),
        ));
        out
    }};
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "stack figures are for optimised code: cargo test --release --test stack"
)]
fn stack_per_call_does_not_grow_with_the_cpu_count() {
    let runs = [
        (256, figures!(256)),
        (1024, figures!(1024)),
        (4096, figures!(4096)),
    ];
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "stack bytes per call", "256 CPUs", "1024", "4096"
    );
    for (i, (name, _)) in runs[0].1.iter().enumerate() {
        println!(
            "{name:<34} {:>10} {:>10} {:>10}",
            runs[0].1[i].1, runs[1].1[i].1, runs[2].1[i].1
        );
    }
    for (cpus, figs) in &runs {
        for (name, used) in figs {
            let budget = if name.starts_with("handover image") {
                IMAGE_BUDGET
            } else {
                BUDGET
            };
            assert!(
                *used <= budget,
                "{name} at {cpus} CPUs: {used} bytes of stack"
            );
            assert!(*used > 0, "{name}: nothing measured");
        }
    }
}

/// The crash sequence's stack on the crashing CPU, at `CPUS` CPUs (CPU 1 answers the NMI, every
/// other CPU is deaf; a 2 ms check-in wait): `nmilog_ppc64::crash_shutdown` through the
/// `doc_support` test machine, whose `kexec` unwinds back here (the unwinding's own frames are in the
/// figure, the same at every count).
fn crash_sequence_stack<const CPUS: usize>() -> usize {
    use nmilog_ppc64::doc_support::{crash, FakeMachine};
    use nmilog_ppc64::{CrashState, RtasLock, ShutdownConfig};
    type L<const N: usize> = Log<HostPlatform, N, 256, 4096>;
    // SAFETY: all-zero bytes are a valid `Log<HostPlatform, ..>` (see `zeroed`) and a valid
    // `CrashState` (atomics and an RTAS buffer of atomics, all 0 as `new` makes them).
    let (log, state): (&'static L<CPUS>, &'static CrashState<CPUS>) =
        unsafe { (zeroed::<L<CPUS>>(), zeroed::<CrashState<CPUS>>()) };
    log.platform().set_cpu_count(CPUS);
    measure(move || {
        HostPlatform::register_cpu(0);
        let cfg = ShutdownConfig {
            ack_timeout_ns: 2_000_000,
            max_wait_spins: 1_000_000,
        };
        let (_, report) = crash(&FakeMachine::new(log, state), &RtasLock::new(), &cfg);
        assert_eq!(report.not_answered, CPUS - 2);
    })
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "stack figures are for optimised code: cargo test --release --test stack"
)]
fn crash_sequence_stack_does_not_grow_with_the_cpu_count() {
    // Quiet: the test machine's `park` and `kexec` unwind.
    std::panic::set_hook(Box::new(|_| {}));
    // A first run sets up what a first unwinding sets up (its figure is not the sequence's).
    let _ = crash_sequence_stack::<64>();
    let (small, large) = (crash_sequence_stack::<64>(), crash_sequence_stack::<2048>());
    let _ = std::panic::take_hook();
    println!("crash sequence (crash_shutdown): {small} bytes of stack at 64 CPUs, {large} at 2048");
    // Per-CPU arrays on the crashing CPU's stack would add at least a byte per CPU (1984 here).
    assert!(
        large <= small + 256,
        "the crash sequence's stack grows with the CPU count: {small} bytes at 64 CPUs, {large} at 2048"
    );
    assert!(small > 0, "nothing measured");
}
