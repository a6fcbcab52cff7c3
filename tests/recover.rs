//! Rebuilding the log from raw memory: a `Log`, its descriptor and the crash sequence's check-in flags
//! live in one zero-filled allocation (as a kernel's `.bss`); the "dump" is that memory read as words.
//!
//! * the image rebuilt from memory is **byte for byte** the image the live crash drain writes, in
//!   every state the crash path can leave: records in the main log and in the rings, a writer frozen
//!   at every step of its write (stopped: torn; not stopped: in flight), a flush owner frozen at every
//!   step of every move, wrapped rings and a wrapped main log;
//! * damaged and lying dumps: every header word damaged, lying fields with valid checksums (outside
//!   the dump, bad ring sizes, overlapping rings, bad counts), foreign byte order, truncation, random
//!   garbage — each a typed error or a counted loss, never a panic, within the step bound.

mod common;

use std::sync::mpsc;
use std::thread;

use nmilog::host::HostPlatform;
use nmilog::recover::{
    self, AtomicUsize, DrainSource, LogDescriptor, Memory, RawDump, RecoverError, RecoveredLog,
};
use nmilog::ring::WriteStep;
use nmilog::{handover, FlushStep, Level, Log};
use std::sync::atomic::Ordering;

use common::kernel::{self, on_cpu};

const CPUS: usize = 3;
type TestLog = Log<HostPlatform, CPUS, 256, 1024>;
const W: usize = size_of::<usize>();

/// The kernel's memory.
#[repr(C)]
struct Kernel {
    log: TestLog,
    desc: LogDescriptor<{ TestLog::DESCRIPTOR_WORDS }>,
    checked_in: [AtomicUsize; CPUS],
}

/// A kernel in zero-filled memory (leaked: threads frozen mid-write keep using it), described.
fn boot() -> &'static Kernel {
    // SAFETY: all-zero bytes are a valid `Kernel` (atomics: `Log::new(HostPlatform::new(0))`,
    // `LogDescriptor::new()`, flags all 0; the flush's record buffer is plain integers and bytes,
    // valid all-zero too).
    let k: &'static Kernel = unsafe { kernel::leak_zeroed() };
    kernel::boot(&k.log, &k.desc, &k.checked_in);
    k
}

/// The kernel's memory as a dump reads it.
fn memory(k: &'static Kernel) -> RawDump<'static> {
    let n = size_of::<Kernel>() / W;
    // SAFETY: the allocation `boot` made (never freed), zero-initialised; written through atomics,
    // and the flush's record buffer by the flush owner, whose flushes finished before this read
    // (joined threads, or this thread); read as atomic words (any bits are a valid word, and the
    // record header has no padding).
    let words = unsafe { std::slice::from_raw_parts(k as *const Kernel as *const AtomicUsize, n) };
    RawDump::new(k as *const Kernel as usize, words)
}

fn scratch(n: usize) -> Vec<DrainSource> {
    (0..n).map(|_| DrainSource::new()).collect()
}

/// The image rebuilt from `mem` (found by scanning).
fn recovered_image<M: Memory + ?Sized>(mem: &M) -> Vec<u8> {
    let desc = recover::find(mem).expect("descriptor");
    let log = RecoveredLog::open(mem, desc).expect("open");
    // What a tool prints when it says which log it found.
    let shown = format!("{log:?}");
    assert!(
        shown.starts_with(&format!(
            "RecoveredLog {{ descriptor: {:?}",
            log.descriptor()
        )),
        "{shown}"
    );
    let mut out = vec![0u8; TestLog::MAX_IMAGE_BYTES];
    let rep = log
        .write_image(&scratch(log.sources()), &mut out)
        .expect("image");
    assert!(rep.drain.steps <= rep.drain.bound);
    out.truncate(rep.len);
    out
}

/// The image the live crash drain writes (this thread is the crashing CPU).
fn live_image(k: &Kernel) -> Vec<u8> {
    let mut out = vec![0u8; TestLog::MAX_IMAGE_BYTES];
    let stopped = |c: usize| k.checked_in[c].load(Ordering::Acquire) != 0;
    let n = handover::write_image(&k.log, &mut out, &stopped).expect("live image");
    out.truncate(n);
    out
}

/// Recovered before and after the live drain (its state is not an input), equal to the live image.
fn assert_same(k: &'static Kernel, what: &str) -> Vec<u8> {
    let before = recovered_image(&memory(k));
    let live = live_image(k);
    let after = recovered_image(&memory(k));
    assert_eq!(
        before, after,
        "{what}: the live drain's state changed the recovery"
    );
    if before != live {
        let a = handover::parse(&before).unwrap();
        let b = handover::parse(&live).unwrap();
        let ta: Vec<_> = a
            .records()
            .map(|r| (r.header, r.text().map(str::to_owned)))
            .collect();
        let tb: Vec<_> = b
            .records()
            .map(|r| (r.header, r.text().map(str::to_owned)))
            .collect();
        panic!("{what}: recovered != live\nrecovered: {ta:#?}\nlive: {tb:#?}");
    }
    live
}

#[test]
fn main_log_and_rings() {
    let k = boot();
    on_cpu(1, move || {
        for i in 0..5 {
            k.log
                .append(Level::Info, 0, 0, format!("cpu1 {i}").as_bytes())
                .unwrap();
        }
        k.log.flush(); // into the main log
        k.log.append(Level::Info, 0, 0, b"cpu1 unflushed").unwrap();
        k.checked_in[1].store(1, Ordering::Release);
    });
    on_cpu(2, move || {
        k.log.nmi_enter();
        k.log
            .append_raw(Level::Emerg, 0, 0, b"cpu2 in NMI")
            .unwrap();
        k.checked_in[2].store(1, Ordering::Release);
    });
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    k.log.append(Level::Emerg, 0, 0, b"Oops").unwrap();
    let img = assert_same(k, "main log and rings");
    let image = handover::parse(&img).unwrap();
    let texts: Vec<_> = image.records().filter_map(|r| r.text()).collect();
    assert_eq!(texts.len(), 8, "{texts:?}");
    assert!(texts.contains(&"cpu2 in NMI") && texts.contains(&"Oops"));
}

#[test]
fn wrapped_rings_and_main_log() {
    let k = boot();
    on_cpu(1, move || {
        for i in 0..400 {
            k.log
                .append(Level::Info, 0, 0, format!("cpu1 record {i}").as_bytes())
                .unwrap();
            if i % 50 == 0 {
                k.log.flush();
            }
        }
        k.checked_in[1].store(1, Ordering::Release);
    });
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    let img = assert_same(k, "wrapped");
    let image = handover::parse(&img).unwrap();
    assert!(image.totals().overwritten > 0);
}

/// CPU 1 is frozen at `step` of a log call (forever: the thread stays blocked); it checked in or not.
fn writer_frozen(step: WriteStep, checked_in: bool) {
    let what = format!("writer frozen at {step:?}, checked in: {checked_in}");
    let k = boot();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        HostPlatform::register_cpu(1);
        k.log.append(Level::Info, 0, 0, b"before").unwrap();
        let mut hook = |s: WriteStep| {
            if s == step {
                if checked_in {
                    k.checked_in[1].store(1, Ordering::Release);
                }
                tx.send(()).unwrap();
                loop {
                    thread::park(); // frozen for good
                }
            }
            true
        };
        let _ = k
            .log
            .append_raw_with_hook(Level::Info, 0, 0, b"frozen", &mut hook);
    });
    rx.recv().unwrap();
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    let img = assert_same(k, &what);
    let image = handover::parse(&img).unwrap();
    let t = image.totals();
    let frozen_delivered = image.records().any(|r| r.text() == Some("frozen"));
    // Committed records are delivered; otherwise counted torn (stopped) or in flight (not).
    assert!(
        frozen_delivered || t.torn + t.in_flight == 1,
        "{what}: {t:?}"
    );
    assert_eq!(
        t.in_flight > 0,
        !checked_in && !frozen_delivered,
        "{what}: {t:?}"
    );
}

#[test]
fn writer_frozen_at_every_step() {
    for step in WriteStep::ALL {
        for checked_in in [true, false] {
            writer_frozen(step, checked_in);
        }
    }
}

/// CPU 1 owns the flush and is frozen at `step` of its `nth` move.
fn flush_owner_frozen(step: FlushStep, nth: usize) {
    let what = format!("flush owner frozen at {step:?} of move {nth}");
    let k = boot();
    on_cpu(2, move || {
        for i in 0..4 {
            k.log
                .append(Level::Info, 0, 0, format!("cpu2 {i}").as_bytes())
                .unwrap();
        }
        k.checked_in[2].store(1, Ordering::Release);
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        HostPlatform::register_cpu(1);
        for i in 0..4 {
            k.log
                .append(Level::Info, 0, 0, format!("cpu1 {i}").as_bytes())
                .unwrap();
        }
        let mut moves = 0;
        let mut hook = |s: FlushStep| {
            if s == step && moves == nth {
                tx.send(()).unwrap();
                loop {
                    thread::park();
                }
            }
            if s == FlushStep::Done {
                moves += 1;
            }
            true
        };
        k.log.flush_with_hook(&mut hook);
        tx.send(()).unwrap(); // the step was never reached
    });
    rx.recv().unwrap();
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    k.log.append(Level::Emerg, 0, 0, b"crash").unwrap();
    let img = assert_same(k, &what);
    let image = handover::parse(&img).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for r in image.records() {
        if r.header.facility != nmilog::record::facility::NMILOG {
            assert!(
                seen.insert((r.header.cpu, r.header.src_seq)),
                "{what}: twice"
            );
        }
    }
    assert_eq!(seen.len(), 9, "{what}: every record once");
}

#[test]
fn flush_owner_frozen_at_every_step() {
    for step in FlushStep::ALL {
        for nth in [0, 3] {
            flush_owner_frozen(step, nth);
        }
    }
}

/// CPU 1 lapped its ring before the flush (120 records in a ring that holds about 40), and owns
/// the flush frozen at `step` (`nth` time): the rebuilt image is the live one, and counts every
/// record of CPU 1 once, delivered or overwritten — the owner's count taken before its cursor moved
/// read through the descriptor's words as the live drain reads it.
fn lapped_flush_owner_frozen(step: FlushStep) {
    let what = format!("lapped, flush owner frozen at {step:?}");
    let k = boot();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        HostPlatform::register_cpu(1);
        for i in 0..120 {
            k.log
                .append_raw(Level::Info, 0, 0, format!("cpu1 {i}").as_bytes())
                .unwrap();
        }
        let mut hook = |s: FlushStep| {
            if s == step {
                tx.send(true).unwrap();
                loop {
                    thread::park();
                }
            }
            true
        };
        k.log.flush_with_hook(&mut hook);
        tx.send(false).unwrap(); // the step was never reached
    });
    assert!(rx.recv().unwrap(), "{what}: the step was reached");
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    let img = assert_same(k, &what);
    let image = handover::parse(&img).unwrap();
    let delivered = image
        .records()
        .filter(|r| r.header.cpu == 1 && r.header.facility != nmilog::record::facility::NMILOG)
        .count() as u64;
    let overwritten = image.counters(1, 0).map_or(0, |c| c.overwritten);
    assert!(overwritten > 0, "{what}: the ring was lapped");
    assert_eq!(delivered + overwritten, 120, "{what}: every record once");
}

#[test]
fn lapped_flush_owner_frozen_mid_update() {
    for step in [
        FlushStep::OverwrittenCounted,
        FlushStep::CursorStored,
        FlushStep::Done,
    ] {
        lapped_flush_owner_frozen(step);
    }
}

/// The picture a crash drain has when a flush owner that did not stop works between the drain's
/// read of the consumers and its scan of the main log: CPU 1 lapped its ring (120 records, about
/// 40 kept), its flush counted the lapped ones overwritten and moved the rest into the main log,
/// and the consumer's words are read as they were before that flush (cursor 0, nothing counted,
/// nothing moved). The threshold comes from the main log's newest record of CPU 1, and so must the
/// overwritten count (the stamp the flush left in that record's header): the image equals the live
/// one, every record of CPU 1 once, delivered or counted.
#[test]
fn consumer_read_before_a_flush_the_main_log_holds() {
    let k = boot();
    on_cpu(1, move || {
        for i in 0..120 {
            k.log
                .append_raw(Level::Info, 0, 0, format!("cpu1 {i}").as_bytes())
                .unwrap();
        }
        let rep = k.log.flush().expect("nobody else flushes");
        assert!(rep.moved > 0 && rep.moved < 120, "{rep:?}");
        k.checked_in[1].store(1, Ordering::Release);
    });
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    let live = live_image(k);
    let image = handover::parse(&live).unwrap();
    let overwritten = image.counters(1, 0).map_or(0, |c| c.overwritten);
    assert!(overwritten > 0, "the ring was lapped");
    let c = Copy::of(k);
    let depth = image.depth();
    for j in [
        2, // the consumer's cursor `seq`
        3, // its overwritten count
        6, // its moved count
    ] {
        let word = c.get(entry_word_addr(k, depth, j));
        assert_ne!(
            c.get(word),
            0,
            "entry word {j}: CPU 1's flush moved and counted"
        );
        c.set(word, 0);
    }
    let rebuilt = recovered_image(&c.dump());
    let got = handover::parse(&rebuilt).unwrap();
    let delivered = got
        .records()
        .filter(|r| r.header.cpu == 1 && r.header.facility != nmilog::record::facility::NMILOG)
        .count() as u64;
    assert_eq!(got.counters(1, 0).map_or(0, |c| c.overwritten), overwritten);
    assert_eq!(delivered + overwritten, 120, "every record once");
    assert_eq!(rebuilt, live, "the rebuilt image is the live one");
}

// ---- damaged and lying dumps ----

/// A copy of the kernel's memory to damage, at the same address.
struct Copy {
    base: usize,
    words: Vec<AtomicUsize>,
}

impl Copy {
    fn of(k: &'static Kernel) -> Copy {
        let m = memory(k);
        let words = (0..m.len_words())
            .map(|i| AtomicUsize::new(m.word(m.base() + i * W).unwrap()))
            .collect();
        Copy {
            base: m.base(),
            words,
        }
    }
    fn dump(&self) -> RawDump<'_> {
        RawDump::new(self.base, &self.words)
    }
    fn index(&self, addr: usize) -> usize {
        (addr - self.base) / W
    }
    fn set(&self, addr: usize, v: usize) {
        self.words[self.index(addr)].store(v, Ordering::Relaxed);
    }
    fn get(&self, addr: usize) -> usize {
        self.words[self.index(addr)].load(Ordering::Relaxed)
    }
}

const MAGIC_WORDS: usize = 8 / W;
const HEAD: usize = nmilog::recover::HEADER_WORDS; // header words after the magic

/// The header word `i` of the descriptor in `c`.
fn header_word(c: &Copy, k: &'static Kernel, i: usize) -> usize {
    c.get(k.desc.address() + (MAGIC_WORDS + i) * W)
}

/// The address of word `j` of source `s`'s descriptor entry.
fn entry_word_addr(k: &'static Kernel, s: usize, j: usize) -> usize {
    let fields = nmilog::record::layout::ALL.len();
    k.desc.address() + (MAGIC_WORDS + HEAD + fields + s * nmilog::recover::ENTRY_WORDS + j) * W
}

/// Re-seals the descriptor at `d` after an edit (a lying descriptor passes its checksums).
fn reseal(c: &Copy, d: usize, total: usize) {
    let mut words: Vec<usize> = (0..total).map(|i| c.get(d + i * W)).collect();
    nmilog::recover::seal(&mut words);
    for (i, w) in words.into_iter().enumerate() {
        c.set(d + i * W, w);
    }
}

fn crashed_kernel() -> &'static Kernel {
    let k = boot();
    on_cpu(1, move || {
        for i in 0..20 {
            k.log
                .append(Level::Info, 0, 0, format!("cpu1 {i}").as_bytes())
                .unwrap();
        }
        k.checked_in[1].store(1, Ordering::Release);
    });
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    k
}

fn open_err(c: &Copy) -> RecoverError {
    let m = c.dump();
    match recover::find(&m).and_then(|d| RecoveredLog::open(&m, d).map(|_| ())) {
        Err(e) => e,
        Ok(()) => {
            let d = recover::find(&m).unwrap();
            let log = RecoveredLog::open(&m, d).unwrap();
            let mut out = vec![0u8; TestLog::MAX_IMAGE_BYTES];
            log.write_image(&scratch(log.sources()), &mut out)
                .expect_err("the damage went unnoticed")
        }
    }
}

#[test]
fn every_damaged_header_word_is_refused() {
    let k = crashed_kernel();
    let d = k.desc.address();
    for i in 0..MAGIC_WORDS + HEAD {
        for flip in [1usize, 1 << 7, usize::MAX] {
            let c = Copy::of(k);
            let a = d + i * W;
            c.set(a, c.get(a) ^ flip);
            let e = open_err(&c);
            assert!(
                matches!(
                    e,
                    RecoverError::Checksum { .. }
                        | RecoverError::NoDescriptor
                        | RecoverError::ForeignEndian
                        | RecoverError::WordSize { .. }
                        | RecoverError::Version { .. }
                        | RecoverError::Corrupt { .. }
                ),
                "word {i} ^ {flip:#x}: {e:?}"
            );
        }
    }
}

#[test]
fn every_damaged_table_word_is_refused() {
    let k = crashed_kernel();
    let d = k.desc.address();
    let total = TestLog::DESCRIPTOR_WORDS;
    for i in MAGIC_WORDS + HEAD..total {
        let c = Copy::of(k);
        let a = d + i * W;
        c.set(a, c.get(a) ^ 0x40);
        assert_eq!(
            open_err(&c),
            RecoverError::Checksum { what: "tables" },
            "word {i}"
        );
    }
}

/// Edits the sealed descriptor: header word `i` (after the magic) := `v`.
fn lie_header(k: &'static Kernel, i: usize, v: usize) -> RecoverError {
    let c = Copy::of(k);
    let d = k.desc.address();
    c.set(d + (MAGIC_WORDS + i) * W, v);
    reseal(&c, d, TestLog::DESCRIPTOR_WORDS);
    let m = c.dump();
    match recover::Descriptor::read(&m, d).and_then(|desc| RecoveredLog::open(&m, desc).map(|_| ()))
    {
        Err(e) => e,
        Ok(()) => open_err(&c),
    }
}

/// Edits the sealed descriptor: source entry `s` word `j` := `v`.
fn lie_entry(
    k: &'static Kernel,
    s: usize,
    j: usize,
    v: impl FnOnce(&Copy, usize) -> usize,
) -> RecoverError {
    let c = Copy::of(k);
    let a = entry_word_addr(k, s, j);
    let nv = v(&c, a);
    c.set(a, nv);
    reseal(&c, k.desc.address(), TestLog::DESCRIPTOR_WORDS);
    open_err(&c)
}

#[test]
fn lying_descriptors_are_refused() {
    let k = crashed_kernel();
    let end = k as *const Kernel as usize + size_of::<Kernel>();
    // Header fields.
    assert_eq!(lie_header(k, 0, 1), RecoverError::Version { found: 1 });
    assert_eq!(lie_header(k, 0, 2), RecoverError::Version { found: 2 });
    assert_eq!(lie_header(k, 0, 4), RecoverError::Version { found: 4 });
    assert_eq!(
        lie_header(k, 2, 4 + 8 - W),
        RecoverError::WordSize { bytes: 4 + 8 - W }
    );
    assert!(matches!(lie_header(k, 6, 0), RecoverError::Corrupt { .. }));
    assert!(matches!(
        lie_header(k, 6, usize::MAX),
        RecoverError::Corrupt { .. }
    ));
    assert!(matches!(lie_header(k, 7, 16), RecoverError::Corrupt { .. }));
    assert!(matches!(
        lie_header(k, 3, 1 << 40),
        RecoverError::Corrupt { .. }
    ));
    assert_eq!(lie_header(k, 8, 7), RecoverError::LayoutMismatch);
    assert!(matches!(
        lie_header(k, 11, end),
        RecoverError::OutsideDump { .. }
    ));
    assert!(matches!(
        lie_header(k, 11, usize::MAX - 7),
        RecoverError::OutsideDump { .. }
    ));
    assert!(matches!(
        lie_header(k, 12, 100),
        RecoverError::BadRing { .. }
    ));
    assert!(matches!(
        lie_header(k, 13, 3),
        RecoverError::OutsideDump { .. }
    ));
    assert!(matches!(lie_header(k, 16, 0), RecoverError::Corrupt { .. }));
    assert!(matches!(
        lie_header(k, 16, usize::MAX / 2),
        RecoverError::OutsideDump { .. } | RecoverError::Corrupt { .. }
    ));
    // Entries: ring outside, misaligned, a bad size, two sources on one ring, a ring on the main log.
    assert!(matches!(
        lie_entry(k, 1, 0, |_, _| end),
        RecoverError::OutsideDump { .. }
    ));
    assert!(matches!(
        lie_entry(k, 1, 0, |c, a| c.get(a) + 1),
        RecoverError::OutsideDump { .. }
    ));
    assert!(matches!(
        lie_entry(k, 1, 1, |c, a| c.get(a) - 1),
        RecoverError::BadRing { cpu: 0, depth: 1 }
    ));
    let ring0 = |c: &Copy, _: usize| c.get(entry_word_addr(k, 0, 0));
    assert!(matches!(
        lie_entry(k, 5, 0, ring0),
        RecoverError::Overlap { .. }
    ));
    // A ring the size of the main log, on the main log.
    let c = Copy::of(k);
    c.set(entry_word_addr(k, 2, 0), header_word(&c, k, 11));
    c.set(entry_word_addr(k, 2, 1), header_word(&c, k, 12));
    reseal(&c, k.desc.address(), TestLog::DESCRIPTOR_WORDS);
    assert!(matches!(open_err(&c), RecoverError::Overlap { .. }));
    // Words outside the dump.
    for j in 2..6 {
        assert!(
            matches!(
                lie_entry(k, 0, j, |_, _| end + 64),
                RecoverError::OutsideDump { .. }
            ),
            "entry word {j}"
        );
    }
}

#[test]
fn a_foreign_endian_dump_is_named_and_converting_it_recovers() {
    let k = crashed_kernel();
    let want = recovered_image(&memory(k));
    let c = Copy::of(k);
    for w in &c.words {
        w.store(w.load(Ordering::Relaxed).swap_bytes(), Ordering::Relaxed);
    }
    let found = recover::scan(&c.dump());
    assert_eq!(found.descriptor, None);
    assert_eq!(found.first_rejection, Some(RecoverError::ForeignEndian));
    // What a tool does: convert each word as it loads the dump.
    for w in &c.words {
        w.store(w.load(Ordering::Relaxed).swap_bytes(), Ordering::Relaxed);
    }
    assert_eq!(recovered_image(&c.dump()), want);
}

#[test]
fn truncated_dumps_never_panic() {
    let k = crashed_kernel();
    let c = Copy::of(k);
    let n = c.words.len();
    let mut ok = 0;
    for keep in (0..=n).step_by(97).chain([n - 1, n]) {
        let m = RawDump::new(c.base, &c.words[..keep]);
        if let Ok(d) = recover::find(&m) {
            if let Ok(log) = RecoveredLog::open(&m, d) {
                let mut out = vec![0u8; TestLog::MAX_IMAGE_BYTES];
                if log.write_image(&scratch(log.sources()), &mut out).is_ok() {
                    ok += 1;
                }
            }
        }
    }
    assert!(ok >= 1, "the whole dump recovers");
}

#[test]
fn garbage_rings_read_as_counted_losses_within_the_bound() {
    let k = crashed_kernel();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let log_start = k as *const Kernel as usize;
    let log_words = size_of::<TestLog>() / W;
    for round in 0..300 {
        let c = Copy::of(k);
        // Damage the log itself (never the descriptor): up to 64 words, some small values.
        for _ in 0..(rnd() % 64) {
            let i = (rnd() as usize) % log_words;
            let v = if rnd() % 2 == 0 {
                rnd() as usize
            } else {
                (rnd() % 64) as usize
            };
            c.set(log_start + i * W, v);
        }
        let m = c.dump();
        let log = RecoveredLog::open(&m, recover::find(&m).unwrap()).unwrap();
        let mut out = vec![0u8; TestLog::MAX_IMAGE_BYTES];
        let rep = log
            .write_image(&scratch(log.sources()), &mut out)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(rep.drain.steps <= rep.drain.bound, "round {round}");
        let img = handover::parse(&out[..rep.len]).unwrap();
        assert_eq!(img.record_count() as u64, rep.records);
    }
}

#[test]
fn scan_skips_decoys_and_too_little_scratch_is_an_error() {
    let k = crashed_kernel();
    let c = Copy::of(k);
    // A decoy: the magic alone, early in the log's memory (the kernel's own copy of the constant).
    let decoy = k as *const Kernel as usize + 64 * W;
    for (i, chunk) in recover::MAGIC.chunks_exact(W).enumerate() {
        c.set(
            decoy + i * W,
            usize::from_ne_bytes(chunk.try_into().unwrap()),
        );
    }
    let found = recover::scan(&c.dump());
    assert_eq!(found.valid, 1);
    assert_eq!(found.rejected, 1);
    assert_eq!(found.descriptor.unwrap().address(), k.desc.address());
    let m = c.dump();
    let log = RecoveredLog::open(&m, found.descriptor.unwrap()).unwrap();
    let mut out = vec![0u8; TestLog::MAX_IMAGE_BYTES];
    assert_eq!(
        log.write_image(&scratch(log.sources() - 1), &mut out)
            .unwrap_err(),
        RecoverError::ScratchTooSmall {
            needed: log.sources()
        }
    );
    assert_eq!(log.crashing_cpu(), Some(0));
    assert!(log.stopped(1) && log.stopped(0) && !log.stopped(2));
}

#[test]
fn the_regions_the_descriptor_names_are_enough() {
    let k = crashed_kernel();
    let whole = memory(k);
    let want = recovered_image(&whole);
    let desc = recover::find(&whole).unwrap();
    let mut regions = Vec::new();
    desc.for_each_region(&whole, &mut |a, n| regions.push((a, a + n * W)))
        .unwrap();
    // Merge touching or overlapping regions, then copy just those words (what a tool loading a big
    // dump file does).
    regions.sort();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in regions {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let copies: Vec<Vec<AtomicUsize>> = merged
        .iter()
        .map(|&(a, b)| {
            (a..b)
                .step_by(W)
                .map(|x| AtomicUsize::new(whole.word(x).unwrap()))
                .collect()
        })
        .collect();
    let pieces: Vec<RawDump<'_>> = merged
        .iter()
        .zip(&copies)
        .map(|(&(a, _), w)| RawDump::new(a, w))
        .collect();
    let loaded: usize = copies.iter().map(Vec::len).sum();
    // Not the drain's own state, the flush's heap, padding: less than the whole.
    assert!(
        loaded < whole.len_words(),
        "{loaded} of {} words",
        whole.len_words()
    );
    assert_eq!(recovered_image(&recover::PiecewiseDump::new(&pieces)), want);
}

/// The crashing CPU dies at every step of both crash drains (every record of a first drain, every
/// step of the image writer): the memory at that instant — a copy — rebuilds the very image the
/// path would have written, and the half-written region never parses as an image.
#[test]
fn death_at_every_step_of_the_drains_loses_nothing() {
    let k = boot();
    on_cpu(1, move || {
        for i in 0..12 {
            k.log
                .append(Level::Info, 0, 0, format!("cpu1 {i}").as_bytes())
                .unwrap();
            if i == 5 {
                k.log.flush();
            }
        }
        k.checked_in[1].store(1, Ordering::Release);
    });
    on_cpu(2, move || {
        k.log.nmi_enter();
        for i in 0..3 {
            k.log
                .append_raw(Level::Emerg, 0, 0, format!("cpu2 nmi {i}").as_bytes())
                .unwrap();
        }
        k.checked_in[2].store(1, Ordering::Release);
    });
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    k.log.append(Level::Emerg, 0, 0, b"IPI complete").unwrap();
    let stopped = |c: usize| k.checked_in[c].load(Ordering::Acquire) != 0;

    let mut copies = Vec::new();
    let mut n = 0;
    k.log
        .drain_on_crash(&stopped, &mut |_, _: &nmilog::RecordBuf| {
            copies.push((format!("first drain, record {n}"), Copy::of(k)));
            n += 1;
            true
        })
        .unwrap();
    let mut region = vec![0u8; TestLog::MAX_IMAGE_BYTES];
    let rep = handover::write_image_with_hook(&k.log, &mut region, &stopped, &mut |s| {
        copies.push((format!("image writer at {s:?}"), Copy::of(k)));
    })
    .unwrap();
    let live = region[..rep.len].to_vec();
    assert!(copies.len() > 2 * 17, "{} death points", copies.len());
    for (what, mem) in &copies {
        assert_eq!(recovered_image(&mem.dump()), live, "died in the {what}");
    }
    // Every death point is before the core header is written: the writer's last step is `Header`,
    // after which it writes only the core header, so a region cut at any step is no valid image.
    assert_eq!(
        copies.last().map(|(what, _)| what.as_str()),
        Some("image writer at Header")
    );
}

// ---- what the reader takes from the dump, exactly ----

/// The image recovered from `c` (its descriptor re-sealed first), or the error.
fn recover_copy(c: &Copy, k: &'static Kernel) -> Result<Vec<u8>, RecoverError> {
    reseal(c, k.desc.address(), TestLog::DESCRIPTOR_WORDS);
    let m = c.dump();
    let log = RecoveredLog::open(&m, recover::find(&m)?)?;
    let mut out = vec![0u8; TestLog::MAX_IMAGE_BYTES];
    let rep = log.write_image(&scratch(log.sources()), &mut out)?;
    out.truncate(rep.len);
    Ok(out)
}

#[test]
fn a_crash_on_another_cpu_is_recovered_as_the_live_drain_saw_it() {
    // The crashing CPU is CPU 2 (not 0), CPU 0 logged and checked in, a caller with a bad CPU
    // number was refused: the recovered image names the same crashing CPU, stopped CPUs and
    // counters as the live one.
    let k = boot();
    on_cpu(0, move || {
        k.log.append(Level::Info, 0, 0, b"cpu0 line").unwrap();
        k.checked_in[0].store(1, Ordering::Release);
    });
    on_cpu(7, move || {
        assert!(k.log.append(Level::Info, 0, 0, b"no cpu 7").is_err())
    });
    let img = on_cpu(2, move || {
        k.log.crash_enter().unwrap();
        k.log.append(Level::Emerg, 0, 0, b"Oops on 2").unwrap();
        assert_same(k, "crash on CPU 2")
    });
    let m = memory(k);
    let log = RecoveredLog::open(&m, recover::find(&m).unwrap()).unwrap();
    assert_eq!(log.crashing_cpu(), Some(2));
    assert!(log.stopped(2) && log.stopped(0) && !log.stopped(1));
    let image = handover::parse(&img).unwrap();
    assert_eq!(image.bad_cpu_dropped(), 1);
    assert_eq!(
        (0..3).map(|c| image.cpu_stopped(c)).collect::<Vec<_>>(),
        [Some(true), Some(false), Some(true)]
    );

    // The whole-log counters are read from the words the descriptor names.
    let c = Copy::of(k);
    c.set(header_word(&c, k, 18), 5); // calls before registration
    c.set(header_word(&c, k, 14), 4); // calls from a bad CPU number
    let image_bytes = recover_copy(&c, k).unwrap();
    let image = handover::parse(&image_bytes).unwrap();
    assert_eq!(image.bad_cpu_dropped(), 4);
    // …in an accounting record of the drain, which comes from the crashing CPU.
    let early: Vec<_> = image
        .records()
        .filter(|r| {
            r.text()
                .is_some_and(|t| t.starts_with("nmilog: 5 log calls made before"))
        })
        .map(|r| (r.header.cpu, r.header.facility))
        .collect();
    assert_eq!(early, [(2, nmilog::record::facility::NMILOG)]);
}

#[test]
fn ring_placement_is_checked_exactly() {
    let k = crashed_kernel();
    let ring_words = |c: &Copy, s: usize| c.get(entry_word_addr(k, s, 1));
    let ring_addr = |c: &Copy, s: usize| c.get(entry_word_addr(k, s, 0));
    // Two rings swapped in the tables (sources 0 and 5): unusual but sound, accepted.
    let c = Copy::of(k);
    let (a0, a5) = (ring_addr(&c, 0), ring_addr(&c, 5));
    c.set(entry_word_addr(k, 0, 0), a5);
    c.set(entry_word_addr(k, 5, 0), a0);
    assert!(recover_copy(&c, k).is_ok());
    // A ring that claims twice its size runs into the next ring (source 7: CPU 1, depth 2).
    let c = Copy::of(k);
    let n = ring_words(&c, 7);
    c.set(entry_word_addr(k, 7, 1), (n - 6) * 2 + 6);
    assert!(matches!(
        recover_copy(&c, k),
        Err(RecoverError::Overlap { .. })
    ));
    // A ring outside the dump, named by a source past the first CPU's.
    let c = Copy::of(k);
    c.set(entry_word_addr(k, 7, 0), usize::MAX - 4095);
    assert!(matches!(
        recover_copy(&c, k),
        Err(RecoverError::OutsideDump { what: "ring", .. })
    ));
    // The last CPU's last ring moved to end exactly where the main log starts: adjacent, not
    // overlapping, accepted; one word further, refused.
    let c = Copy::of(k);
    let (main, last) = (
        header_word(&c, k, 11),
        header_word(&c, k, 6) * header_word(&c, k, 7) - 1,
    );
    for (shift, ok) in [(0, true), (W, false)] {
        let c = Copy::of(k);
        let n = ring_words(&c, last);
        c.set(entry_word_addr(k, last, 0), main - n * W + shift);
        let r = recover_copy(&c, k);
        assert_eq!(r.is_ok(), ok, "shift {shift}: {:?}", r.err());
    }
}

#[test]
fn main_log_records_naming_no_source_are_read_without_harm() {
    // A dump whose main log holds a record claiming CPU 3 of 3 and one claiming CPU 2's depth 5
    // of 5 (a damaged dump): the drain takes them as main-log records (they are intact records) and
    // attributes them to no ring.
    let k = boot();
    on_cpu(1, move || {
        for i in 0..3 {
            k.log
                .append(Level::Info, 0, 0, format!("cpu1 {i}").as_bytes())
                .unwrap();
        }
        k.log.flush(); // into the main log
        k.checked_in[1].store(1, Ordering::Release);
    });
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    let c = Copy::of(k);
    let main = header_word(&c, k, 11);
    let data = main + nmilog::ring::RING_STATE_WORDS * W;
    // The first two records (the main log never wrapped here): sequence word, then the header,
    // whose third word holds `len` (bits 0..16), `cpu` (16..32) and `ctx` (48..56).
    let first = data + 2 * W + W;
    let w = c.get(first);
    let len = w & 0xffff;
    c.set(first, (w & !(0xffff << 16)) | (3 << 16));
    let second = data + nmilog::ring::span_words(len) * W + 3 * W;
    let w = c.get(second);
    c.set(
        second,
        (w & !(0xff << 48) & !(0xffff << 16)) | (0x50 << 48) | (2 << 16),
    );
    let img = recover_copy(&c, k).expect("a damaged record is a record, not an error");
    let image = handover::parse(&img).unwrap();
    let cpus: Vec<_> = image.records().take(2).map(|r| r.header.cpu).collect();
    assert_eq!(cpus, [3, 2]);
    assert_eq!(image.records().nth(1).unwrap().header.context().1, 5);
}
