//! A log sized at boot (its rings and main log carved from one arena, `Log<P, CPUS, 0, 0>`) keeps
//! every guarantee of a log sized at compile time: the same workload — records from several CPUs
//! and depths, an NMI's records, a lapped ring, a refused record, a crash — gives the same main log,
//! the same crash drain and a **byte-identical** handover image on both; the arena log's descriptor
//! lets a reader rebuild that very image from raw memory; and before its arena is attached a boot-
//! sized log refuses and counts every call, flushes nothing, and cannot be described.

use std::alloc::{alloc_zeroed, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use nmilog::recover::{self, AtomicUsize, DrainSource, LogDescriptor, RawDump, RecoveredLog};
use nmilog::{
    handover, AppendError, ArenaError, FlushPolicy, Level, Log, Origin, Platform, RecordBuf,
};

const CPUS: usize = 4;
const RING: usize = 256;
const MAIN: usize = 1024;
const DEPTH: usize = 5;
const W: usize = size_of::<usize>();

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// A deterministic platform: the test picks the CPU, the clock ticks 1 µs per read. All-zero bytes
/// are a valid `Det` (the CPU count is set after).
struct Det {
    cpus: AtomicUsize,
    clock: AtomicU64,
}

impl Det {
    const fn new(cpus: usize) -> Self {
        Det {
            cpus: AtomicUsize::new(cpus),
            clock: AtomicU64::new(0),
        }
    }
}

impl Platform for Det {
    fn cpu_id(&self) -> usize {
        CPU.with(Cell::get)
    }
    fn now_ns(&self) -> u64 {
        self.clock.fetch_add(1_000, Ordering::Relaxed) + 1_000
    }
    fn cpu_count(&self) -> usize {
        self.cpus.load(Ordering::Relaxed)
    }
}

type Fixed = Log<Det, CPUS, RING, MAIN>;
type BootSized = Log<Det, CPUS, 0, 0>;
const ARENA_WORDS: usize = BootSized::arena_words(CPUS, DEPTH, RING, MAIN);

/// A kernel with a boot-sized log, in one zero-filled allocation (as `.bss`): the log, its
/// descriptor and its arena.
#[repr(C)]
struct Kernel {
    log: BootSized,
    desc: LogDescriptor<{ BootSized::DESCRIPTOR_WORDS }>,
    arena: [AtomicUsize; ARENA_WORDS],
}

/// Boots a kernel: zeroed memory, the CPU count, the arena attached with the sizes "from the command
/// line", the descriptor written.
fn boot() -> &'static Kernel {
    let layout = Layout::new::<Kernel>();
    // SAFETY: a non-zero-sized layout.
    let p = unsafe { alloc_zeroed(layout) };
    assert!(!p.is_null());
    // SAFETY: aligned and sized for `Kernel`, zero-filled (never freed); all-zero bytes are a valid
    // `Kernel`: atomics (`Log::new(Det::new(0))`, `LogDescriptor::new()`, the arena's words) and
    // the flush's record buffer (plain integers and bytes).
    let k: &'static Kernel = unsafe { &*(p as *const Kernel) };
    k.log.platform().cpus.store(CPUS, Ordering::Relaxed);
    assert_eq!(k.log.attach_arena(&k.arena, RING, MAIN), Ok(ARENA_WORDS));
    k.desc.describe(&k.log, None).unwrap();
    k
}

/// The same log calls on any log: three rounds on every CPU, an NMI's records on CPU 1, a burst that
/// laps CPU 2's ring, a record too large for a ring, then a crash on CPU 0.
fn workload<const R: usize, const M: usize>(log: &Log<Det, CPUS, R, M>) {
    for round in 0..3 {
        for cpu in 0..CPUS {
            CPU.with(|c| c.set(cpu));
            log.log_fmt(Level::Info, 0, format_args!("cpu {cpu} round {round}"))
                .unwrap();
            if cpu == 1 {
                log.nmi_enter();
                log.append_raw(Level::Warning, 0, 0, b"NMI: watchdog")
                    .unwrap();
                log.nmi_exit();
            }
        }
    }
    log.set_flush_policy(FlushPolicy::Deferred);
    CPU.with(|c| c.set(2));
    for i in 0..100 {
        log.log_fmt(Level::Debug, 0, format_args!("burst {i:04}"))
            .unwrap();
    }
    assert_eq!(
        log.append_raw(Level::Err, 0, 0, &[b'x'; 4000]),
        Err(AppendError::TooLarge)
    );
    CPU.with(|c| c.set(0));
    log.crash_enter().unwrap();
    log.log_fmt(Level::Emerg, 0, format_args!("Kernel panic - not syncing"))
        .unwrap();
}

/// What a workload left: the main log's records (timestamp, text), the crash drain's records
/// (origin, text), the handover image.
type Outcome = (Vec<(u64, String)>, Vec<(Origin, String)>, Vec<u8>);

/// Every main-log record, then every record of the crash drain, then the handover image.
fn outcome<const R: usize, const M: usize>(log: &Log<Det, CPUS, R, M>) -> Outcome {
    let mut main = Vec::new();
    let mut r = log.main_reader();
    let mut rec = RecordBuf::new();
    while r.read(log, &mut rec) == nmilog::ring::Read::Record {
        main.push((rec.header.ts_ns, rec.text().unwrap_or("?").to_owned()));
    }
    let mut drained = Vec::new();
    let rep = log
        .drain_on_crash(&|_| true, &mut |o: Origin, r: &RecordBuf| {
            drained.push((o, r.text().unwrap_or("?").to_owned()));
            true
        })
        .unwrap();
    assert!(rep.complete);
    let mut image = vec![0u8; log.max_image_bytes()];
    let n = handover::write_image(log, &mut image, &|_| true).unwrap();
    image.truncate(n);
    (main, drained, image)
}

#[test]
fn a_log_sized_at_boot_behaves_as_one_sized_at_compile_time() {
    static FIXED: Fixed = Log::new(Det::new(CPUS));
    let k = boot();
    workload(&FIXED);
    workload(&k.log);
    let (fixed_main, fixed_drain, fixed_image) = outcome(&FIXED);
    let (arena_main, arena_drain, arena_image) = outcome(&k.log);
    assert!(fixed_main.len() > 10, "{fixed_main:?}");
    assert_eq!(arena_main, fixed_main);
    assert_eq!(arena_drain, fixed_drain);
    // The lapped ring and the refused record are accounted for on both.
    let accounting: Vec<&String> = fixed_drain
        .iter()
        .filter(|(o, _)| *o == Origin::Accounting)
        .map(|(_, t)| t)
        .collect();
    assert!(
        accounting
            .iter()
            .any(|t| t.starts_with("nmilog: cpu 2 task (depth 0)") && t.ends_with("1 dropped")),
        "{accounting:?}"
    );
    assert!(
        accounting
            .iter()
            .any(|t| t.contains(" overwritten") && !t.contains(" 0 overwritten")),
        "{accounting:?}"
    );
    assert_eq!(arena_image, fixed_image, "the handover images differ");
    let image = handover::parse(&arena_image).unwrap();
    assert_eq!((image.cpu_count(), image.depth()), (CPUS, DEPTH));
    assert_eq!(k.log.ring_words(), RING);
    assert_eq!(k.log.main().capacity_words(), MAIN);
    assert_eq!(k.log.max_image_bytes(), FIXED.max_image_bytes());
}

#[test]
fn a_log_sized_at_boot_is_rebuilt_from_raw_memory() {
    let k = boot();
    workload(&k.log);
    let mut live = vec![0u8; k.log.max_image_bytes()];
    let n = handover::write_image(&k.log, &mut live, &|_| true).unwrap();
    live.truncate(n);
    // The whole kernel as a dump: the log, its descriptor and the arena its rings live in.
    let words_n = size_of::<Kernel>() / W;
    // SAFETY: the allocation `boot` made (never freed), written through atomics and, by this
    // thread's finished flushes, the flush's record buffer; read as atomic words (any bits are a
    // valid word, and the record header has no padding).
    let words =
        unsafe { std::slice::from_raw_parts(k as *const Kernel as *const AtomicUsize, words_n) };
    let mem = RawDump::new(k as *const Kernel as usize, words);
    let desc = recover::find(&mem).unwrap();
    assert_eq!(desc.address(), k.desc.address());
    let log = RecoveredLog::open(&mem, desc).unwrap();
    let scratch: Vec<DrainSource> = (0..log.sources()).map(|_| DrainSource::new()).collect();
    let mut out = vec![0u8; live.len() + 4096];
    let rep = log.write_image(&scratch, &mut out).unwrap();
    assert_eq!(
        &out[..rep.len],
        &live[..],
        "rebuilt image differs from the live one"
    );
}

#[test]
fn before_its_arena_a_boot_sized_log_refuses_counts_and_cannot_be_described() {
    static LOG: BootSized = Log::new(Det::new(CPUS));
    static DESC: LogDescriptor<{ BootSized::DESCRIPTOR_WORDS }> = LogDescriptor::new();
    static ARENA: [AtomicUsize; ARENA_WORDS] = [const { AtomicUsize::new(0) }; ARENA_WORDS];
    CPU.with(|c| c.set(1));
    assert_eq!(
        LOG.append_raw(Level::Info, 0, 0, b"early"),
        Err(AppendError::NotReady)
    );
    assert_eq!(
        LOG.log_fmt(Level::Info, 0, format_args!("early {}", 2)),
        Err(AppendError::NotReady)
    );
    assert_eq!(LOG.unregistered_dropped(), 2);
    assert_eq!(LOG.flush(), None);
    assert_eq!(LOG.main().next_seq(), 0);
    assert_eq!(LOG.ring_words(), 0);
    assert_eq!(
        DESC.describe(&LOG, None),
        Err(recover::DescribeError::NotReady)
    );
    // Bad attach requests leave it unattached.
    assert_eq!(
        LOG.attach_arena(&ARENA, 100, MAIN),
        Err(ArenaError::BadSize { words: 100 })
    );
    assert_eq!(
        LOG.attach_arena(&ARENA, RING, 16),
        Err(ArenaError::BadSize { words: 16 })
    );
    assert_eq!(
        LOG.attach_arena(&ARENA[..ARENA_WORDS - 1], RING, MAIN),
        Err(ArenaError::TooSmall {
            needed: ARENA_WORDS,
            have: ARENA_WORDS - 1
        })
    );
    assert_eq!(
        LOG.append_raw(Level::Info, 0, 0, b"still early"),
        Err(AppendError::NotReady)
    );
    // Smaller sizes than the arena allows are fine; a second attach is not.
    let used = LOG.attach_arena(&ARENA, 64, 512).unwrap();
    assert_eq!(used, BootSized::arena_words(CPUS, DEPTH, 64, 512));
    assert_eq!(
        LOG.attach_arena(&ARENA, RING, MAIN),
        Err(ArenaError::AlreadyAttached)
    );
    assert_eq!(LOG.append_raw(Level::Info, 0, 0, b"ready"), Ok(0));
    assert_eq!(LOG.ring_words(), 64);
    assert!(DESC.describe(&LOG, None).is_ok());
    // A log sized at compile time has no arena to attach.
    static FIXED: Fixed = Log::new(Det::new(CPUS));
    assert_eq!(
        FIXED.attach_arena(&ARENA, RING, MAIN),
        Err(ArenaError::SizedAtCompileTime)
    );
}
