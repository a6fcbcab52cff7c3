//! The defmt global logger under reentrancy: a frame from an NMI that lands inside a task-context
//! frame gets its own encoder, buffer and ring, and both frames come out intact.
//!
//! The global logger is the real one (`defmt_global_logger!`), driven by defmt's own macros; only
//! the string indices are meaningless on the host (no defmt linker script), so the checks look at
//! the framing and the argument bytes.
//!
//! `crash_drain_and_handover_image_keep_defmt_frames` drives a second log's `DefmtSlots` by hand
//! (nested task/IRQ/NMI frames on two CPUs, then a crash-context frame), never flushes it, and
//! checks that `drain_on_crash` and the handover image give back every frame byte for byte, in
//! order, with its CPU and context and no loss counted.
#![cfg(feature = "defmt")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use nmilog::host::HostPlatform;
use nmilog::record::{facility, flags};
use nmilog::ring::Read;
use nmilog::{ContextKind, Log, MainReader, RecordBuf};

static LOG: Log<HostPlatform, 4, 4096, 65536> = Log::new(HostPlatform::new(4));
nmilog::defmt_global_logger!(LOG, 256, DEFMT_SLOTS);
defmt::timestamp!("{=u8}", 0x5a);

/// Tests share the logger; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// rzCOBS decoding of one frame (without separators), as defmt-decoder does it.
fn rzcobs_decode(data: &[u8]) -> Option<Vec<u8>> {
    let mut res = vec![];
    let mut it = data.iter().rev().cloned();
    while let Some(x) = it.next() {
        match x {
            0 => return None,
            0x01..=0x7f => {
                for i in 0..7 {
                    if x & (1 << (6 - i)) == 0 {
                        res.push(it.next()?);
                    } else {
                        res.push(0);
                    }
                }
            }
            0x80..=0xfe => {
                let n = (x & 0x7f) + 7;
                res.push(0);
                for _ in 0..n {
                    res.push(it.next()?);
                }
            }
            0xff => {
                for _ in 0..134 {
                    res.push(it.next()?);
                }
            }
        }
    }
    res.reverse();
    Some(res)
}

/// The frames in one record's payload (split on 0x00, empty frames skipped, each decoded).
fn frames_of(payload: &[u8]) -> Vec<Vec<u8>> {
    payload
        .split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| rzcobs_decode(f).expect("malformed rzCOBS frame"))
        .collect()
}

struct DefmtRecord {
    cpu: u16,
    depth: usize,
    frame: Vec<u8>,
}

/// Reads every defmt record from `reader` on; checks one frame per record.
fn read_defmt(reader: &mut MainReader) -> Vec<DefmtRecord> {
    LOG.flush();
    let mut out = vec![];
    let mut rec = RecordBuf::new();
    loop {
        match reader.read(&LOG, &mut rec) {
            Read::Record => {}
            Read::Overwritten { missed } => panic!("main log overwrote {missed} records"),
            _ => break,
        }
        if rec.header.facility != facility::DEFMT {
            continue;
        }
        assert_ne!(rec.header.flags & flags::RAW, 0);
        let p = rec.payload();
        assert_eq!(p.first(), Some(&0), "record starts with a separator");
        assert_eq!(p.last(), Some(&0), "record ends with a separator");
        let mut fr = frames_of(p);
        assert_eq!(fr.len(), 1, "exactly one frame per record: {p:02x?}");
        out.push(DefmtRecord {
            cpu: rec.header.cpu,
            depth: rec.header.context().1,
            frame: fr.pop().unwrap(),
        });
    }
    out
}

/// Starts a test on `cpu`: waits for the other tests (the guard), registers the calling thread as
/// `cpu`, and returns a main-log reader past everything logged so far.
fn start_on_cpu(cpu: usize) -> (MutexGuard<'static, ()>, MainReader) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    HostPlatform::register_cpu(cpu);
    let mut reader = LOG.main_reader();
    read_defmt(&mut reader);
    (guard, reader)
}

/// rzCOBS pads the last 7-byte group with zero bits, so a decoded frame may carry up to 6 trailing
/// zero bytes that the defmt decoder never reads. Checks the frame is `len` bytes plus such padding.
fn assert_len(frame: &[u8], len: usize) {
    assert!(
        frame.len() >= len && frame.len() - len < 7 && frame[len..].iter().all(|&b| b == 0),
        "frame of {len} bytes expected: {frame:02x?}"
    );
}

fn contains(hay: &[u8], needle: u32) -> bool {
    hay.windows(4).any(|w| w == needle.to_le_bytes())
}

/// An argument whose formatting is interrupted by an "NMI" that logs (what an NMI landing in the
/// middle of a task-context frame does).
struct NmiArrives(u32);
impl defmt::Format for NmiArrives {
    fn format(&self, f: defmt::Formatter) {
        {
            let _nmi = LOG.enter(ContextKind::Nmi);
            defmt::error!("nmi {=u32}", self.0);
        }
        defmt::write!(f, "after {=u32}", 0x4444_4444u32);
    }
}

/// A `Format` impl that logs in the same context: defmt-rtt panics here; nmilog discards the
/// inner frame and counts it.
struct LogsInFormat;
impl defmt::Format for LogsInFormat {
    fn format(&self, f: defmt::Formatter) {
        defmt::error!("inner {=u32}", 0x6666_6666u32);
        defmt::write!(f, "x");
    }
}

#[test]
fn nmi_frame_inside_task_frame_both_intact() {
    let (_g, mut reader) = start_on_cpu(0);

    defmt::error!(
        "task {=u32} {} {=u32}",
        0x1111_1111u32,
        NmiArrives(0x2222_2222),
        0x3333_3333u32
    );
    let recs = read_defmt(&mut reader);
    assert_eq!(recs.len(), 2, "two frames, two records");
    let nmi = recs.iter().find(|r| r.depth == 1).expect("NMI record");
    let task = recs.iter().find(|r| r.depth == 0).expect("task record");
    assert_eq!((nmi.cpu, task.cpu), (0, 0));
    // The NMI frame: index (2) + timestamp (1) + u32 (4), nothing from the task frame.
    assert_len(&nmi.frame, 2 + 1 + 4);
    assert_eq!(nmi.frame[2], 0x5a);
    assert!(contains(&nmi.frame, 0x2222_2222));
    assert!(!contains(&nmi.frame, 0x1111_1111));
    // The task frame: all its own arguments, in order, and none of the NMI's.
    let f = &task.frame;
    let pos = |v: u32| f.windows(4).position(|w| w == v.to_le_bytes()).unwrap();
    assert!(pos(0x1111_1111) < pos(0x4444_4444) && pos(0x4444_4444) < pos(0x3333_3333));
    assert!(!contains(f, 0x2222_2222));
    assert_len(f, pos(0x3333_3333) + 4);
}

#[test]
fn same_context_reentry_is_counted_not_a_panic() {
    let (_g, mut reader) = start_on_cpu(1);
    let before = DEFMT_SLOTS.dropped(1, 0);

    defmt::error!(
        "outer {=u32} {} {=u32}",
        0x5555_5555u32,
        LogsInFormat,
        0x7777_7777u32
    );

    let recs = read_defmt(&mut reader);
    assert_eq!(recs.len(), 1);
    let f = &recs[0].frame;
    assert!(contains(f, 0x5555_5555) && contains(f, 0x7777_7777));
    assert!(!contains(f, 0x6666_6666), "the inner frame is not mixed in");
    assert_eq!(DEFMT_SLOTS.dropped(1, 0), before + 1);

    // The slot is usable again.
    defmt::error!("again {=u32}", 0x8888_8888u32);
    let recs = read_defmt(&mut reader);
    assert_eq!(recs.len(), 1);
    assert!(contains(&recs[0].frame, 0x8888_8888));
}

#[test]
fn frame_at_nested_irq_nmi_depth_goes_to_its_own_ring() {
    let (_g, mut reader) = start_on_cpu(3);
    let _irq = LOG.enter(ContextKind::Irq);
    let _nmi = LOG.enter(ContextKind::Nmi);
    defmt::error!("deep {=u32}", 0x9999_9999u32);
    drop(_nmi);
    drop(_irq);
    let recs = read_defmt(&mut reader);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].cpu, recs[0].depth), (3, 2));
    assert!(contains(&recs[0].frame, 0x9999_9999));
}

#[cfg(unix)]
mod signals {
    use super::*;
    use std::sync::atomic::AtomicBool;

    static HANDLED: AtomicUsize = AtomicUsize::new(0);
    static INSIDE_TASK_FRAME: AtomicUsize = AtomicUsize::new(0);
    static STOP: AtomicBool = AtomicBool::new(false);

    /// An argument whose formatting sends the formatting thread a real SIGUSR1: the signal is
    /// delivered before `pthread_kill` returns (POSIX, for a signal to the calling thread), so its
    /// handler runs inside the open task frame every time — not by chance.
    struct SignalsItself;
    impl defmt::Format for SignalsItself {
        fn format(&self, f: defmt::Formatter) {
            // SAFETY: signals the calling thread, whose handler is installed.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
            defmt::write!(f, "");
        }
    }

    /// Every this many task frames, one signals itself from inside the frame.
    const SELF_SIGNAL_EVERY: u32 = 64;

    extern "C" fn on_sigusr1(_: libc::c_int) {
        // The "NMI": tracked entry and exit, a defmt frame in between.
        if DEFMT_SLOTS.frame_open(2, 0) {
            INSIDE_TASK_FRAME.fetch_add(1, Ordering::Relaxed);
        }
        LOG.nmi_enter();
        let n = HANDLED.load(Ordering::Relaxed) as u32;
        defmt::error!(
            "nmi {=u32} {=u32}",
            0xabab_0000 | (n & 0xffff),
            !(0xabab_0000 | (n & 0xffff))
        );
        HANDLED.store(n as usize + 1, Ordering::Relaxed);
        LOG.nmi_exit();
    }

    /// A task thread logs defmt frames in a loop; another thread interrupts it with signals whose
    /// handler logs defmt frames in NMI context. Every frame must decode with its own checksum
    /// intact and none may be lost.
    #[test]
    fn asynchronous_nmis_inside_task_frames() {
        let (_g, mut reader) = start_on_cpu(0);
        HANDLED.store(0, Ordering::Relaxed);
        STOP.store(false, Ordering::Relaxed);

        // SAFETY: installs a handler that only touches atomics, a const thread-local and the
        // logger's NMI path (async-signal-safe by design).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigusr1 as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        }
        const MIN_NMIS: usize = 300;
        static CHECKED: AtomicUsize = AtomicUsize::new(0);
        static PROGRESS: AtomicUsize = AtomicUsize::new(0);
        CHECKED.store(0, Ordering::Relaxed);
        PROGRESS.store(0, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            HostPlatform::register_cpu(2);
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() } as usize).unwrap();
            let t = std::time::Instant::now();
            let mut i = 0u32;
            while HANDLED.load(Ordering::Relaxed) < MIN_NMIS
                && t.elapsed() < std::time::Duration::from_secs(5)
            {
                // Stay at most 2000 frames ahead of the checker so the main log never wraps.
                if i as usize - CHECKED.load(Ordering::Relaxed) > 2000 {
                    std::thread::yield_now();
                    continue;
                }
                if i.is_multiple_of(SELF_SIGNAL_EVERY) {
                    let x = 0x1234_5678u32 ^ i;
                    defmt::error!("task {=u32} {=u32} {=u32} {}", i, x, !i, SignalsItself);
                } else {
                    defmt::error!("task {=u32} {=u32} {=u32}", i, 0x1234_5678u32 ^ i, !i);
                }
                i += 1;
                PROGRESS.store(i as usize, Ordering::Relaxed);
            }
            STOP.store(true, Ordering::Release);
            i
        });
        let tid = rx.recv().unwrap() as libc::pthread_t;
        let (mut task, mut nmi, mut sent) = (0u32, 0usize, 0u64);
        let mut check = |recs: Vec<DefmtRecord>| {
            for r in &recs {
                assert_eq!(r.cpu, 2);
                let f = &r.frame;
                let word =
                    |k: usize| u32::from_le_bytes(f[3 + 4 * k..7 + 4 * k].try_into().unwrap());
                match r.depth {
                    0 => {
                        let i = word(0);
                        if i.is_multiple_of(SELF_SIGNAL_EVERY) {
                            // Also its argument's format indices (and what defmt adds for them).
                            assert!(f.len() >= 2 + 1 + 12 + 4, "{f:02x?}");
                        } else {
                            assert_len(f, 2 + 1 + 12);
                        }
                        assert_eq!(i, task, "task frames in order, none lost");
                        assert_eq!((word(1), word(2)), (0x1234_5678 ^ i, !i));
                        task += 1;
                        CHECKED.store(task as usize, Ordering::Relaxed);
                    }
                    1 => {
                        assert_len(f, 2 + 1 + 8);
                        assert_eq!(word(1), !word(0));
                        nmi += 1;
                    }
                    d => panic!("unexpected depth {d}"),
                }
            }
        };
        let mut last = 0;
        while !STOP.load(Ordering::Acquire) {
            // Pace the "NMIs": one per few task frames, so the worker keeps making progress and
            // most signals land while a task frame is open.
            let p = PROGRESS.load(Ordering::Relaxed);
            if p >= CHECKED.load(Ordering::Relaxed) + 1000 {
                check(read_defmt(&mut reader));
                continue;
            }
            if p < last + 3 {
                std::hint::spin_loop();
                continue;
            }
            last = p;
            // SAFETY: the worker thread has not returned from its closure (STOP is set just
            // before it does, and we join it before it can be reaped).
            unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
            sent += 1;
        }
        let frames = worker.join().unwrap();
        check(read_defmt(&mut reader));
        assert_eq!(task, frames);
        assert_eq!(nmi, HANDLED.load(Ordering::Relaxed));
        assert!(nmi > 0 && task > 0);
        let c = LOG.counters(2, 1).unwrap();
        assert_eq!((c.overwritten, c.torn, c.dropped), (0, 0, 0));
        assert_eq!(DEFMT_SLOTS.dropped(2, 0) + DEFMT_SLOTS.dropped(2, 1), 0);
        let inside = INSIDE_TASK_FRAME.load(Ordering::Relaxed);
        // At least the self-signalled ones (the other thread's land inside a frame or not, by
        // chance: not asserted).
        let self_signalled = task.div_ceil(SELF_SIGNAL_EVERY) as usize;
        assert!(
            inside >= self_signalled,
            "{inside} signals inside an open task frame, fewer than the {self_signalled} self-signalled"
        );
        eprintln!(
            "{task} task frames, {nmi} NMI frames ({inside} inside an open task frame), {sent} signals sent"
        );
    }
}

/// Issue 7: defmt frames reach the handover image intact through the crash drain alone.
mod crash_image {
    use super::*;
    use nmilog::defmt_logger::DefmtSlots;
    use nmilog::{handover, FlushPolicy, Level, Platform};
    use std::sync::atomic::AtomicU64;

    /// `HostPlatform`'s thread-registered CPU numbers, with a clock that advances on every read: the
    /// drain merges rings by timestamp, so append order is the only possible image order.
    struct Stepped(AtomicU64);
    impl Platform for Stepped {
        fn cpu_id(&self) -> usize {
            HostPlatform::current_cpu()
        }
        fn now_ns(&self) -> u64 {
            self.0.fetch_add(1_000, Ordering::Relaxed)
        }
        fn cpu_count(&self) -> usize {
            2
        }
    }

    // Its own log (the crash state is permanent) and its own slots (the global logger is LOG's).
    static CRASH_LOG: Log<Stepped, 2, 2048, 16384> = Log::new(Stepped(AtomicU64::new(1_000_000)));
    static CRASH_SLOTS: DefmtSlots<2, 4, 256> = DefmtSlots::new();

    /// A frame as the generated `Logger` drives one: `acquire`, one `write` per chunk, `release`.
    struct HandFrame(Vec<Vec<u8>>);

    /// A released frame: where it was logged and what was written into it.
    #[derive(Debug)]
    struct Sent {
        cpu: u16,
        kind: ContextKind,
        depth: usize,
        chunks: Vec<Vec<u8>>,
    }

    impl HandFrame {
        /// Opens a frame and writes what defmt writes first: a string index and the timestamp.
        fn open(index: u16) -> Self {
            CRASH_SLOTS.acquire(&CRASH_LOG);
            let mut f = HandFrame(vec![]);
            f.write(&index.to_le_bytes());
            f.write(&[0x5a]);
            f
        }
        fn write(&mut self, bytes: &[u8]) {
            CRASH_SLOTS.write(&CRASH_LOG, bytes);
            self.0.push(bytes.to_vec());
        }
        fn release(self, sent: &mut Vec<Sent>) {
            let (kind, depth) = CRASH_LOG.context().unwrap();
            CRASH_SLOTS.release(&CRASH_LOG);
            sent.push(Sent {
                cpu: HostPlatform::current_cpu() as u16,
                kind,
                depth,
                chunks: self.0,
            });
        }
    }

    /// What a fresh defmt encoder makes of the same writes: the exact payload expected.
    fn encoded(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![];
        let mut enc = defmt::Encoder::new();
        enc.start_frame(|b| out.extend_from_slice(b));
        for c in chunks {
            enc.write(c, |b| out.extend_from_slice(b));
        }
        enc.end_frame(|b| out.extend_from_slice(b));
        out
    }

    /// Non-zero bytes with zeros in between, and a 150-byte zero-free run (rzCOBS's long groups).
    fn pattern(seed: u8, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                if i < 150 || i % 5 != 0 {
                    seed.wrapping_add(i as u8) | 1
                } else {
                    0
                }
            })
            .collect()
    }

    #[test]
    fn crash_drain_and_handover_image_keep_defmt_frames() {
        CRASH_LOG.set_flush_policy(FlushPolicy::Deferred);

        // CPU 1: an NMI frame inside an IRQ frame inside a task frame.
        let mut sent = std::thread::spawn(|| {
            HostPlatform::register_cpu(1);
            let mut sent = vec![];
            let mut task = HandFrame::open(0x0101);
            task.write(&0x1111_1111u32.to_le_bytes());
            {
                let _irq = CRASH_LOG.enter(ContextKind::Irq);
                let mut irq = HandFrame::open(0x0102);
                irq.write(&0x2222_2222u32.to_le_bytes());
                {
                    let _nmi = CRASH_LOG.enter(ContextKind::Nmi);
                    let mut nmi = HandFrame::open(0x0103);
                    nmi.write(&pattern(0x30, 180));
                    nmi.release(&mut sent);
                }
                assert!(CRASH_SLOTS.frame_open(1, 1));
                irq.write(&[0, 0, 0, 0, 0, 0, 0, 0x33]);
                irq.release(&mut sent);
            }
            assert!(CRASH_SLOTS.frame_open(1, 0));
            task.write(&0x4444_4444u32.to_le_bytes());
            task.release(&mut sent);
            sent
        })
        .join()
        .unwrap();

        // CPU 0: an NMI frame inside a task frame, then the crash and a crash-context frame.
        HostPlatform::register_cpu(0);
        let mut task = HandFrame::open(0x0201);
        task.write(&0x5555_5555u32.to_le_bytes());
        {
            let _nmi = CRASH_LOG.enter(ContextKind::Nmi);
            let mut nmi = HandFrame::open(0x0202);
            nmi.write(&0x6666_6666u32.to_le_bytes());
            nmi.write(&[0; 3]);
            nmi.release(&mut sent);
        }
        assert!(CRASH_SLOTS.frame_open(0, 0));
        task.write(&pattern(0x70, 40));
        task.release(&mut sent);
        assert_eq!(
            CRASH_LOG.main().next_seq(),
            0,
            "nothing was flushed before the crash"
        );

        assert_eq!(CRASH_LOG.crash_enter(), Ok(0));
        let mut crash = HandFrame::open(0x0301);
        crash.write(&0x7777_7777u32.to_le_bytes());
        crash.release(&mut sent);
        let report = CRASH_LOG
            .drain_on_crash(&|_| true, &mut |_, _: &nmilog::RecordBuf| true)
            .unwrap();
        assert_eq!(report.records, sent.len() as u64);
        assert_eq!((report.torn, report.overwritten), (0, 0));
        assert_eq!(report.accounting_records, 0);

        let mut region = vec![0u8; handover::max_image_size(2, 4, 1024, 16384)];
        let n = handover::write_image(&CRASH_LOG, &mut region, &|_| true).unwrap();
        let image = handover::parse(&region[..n]).unwrap();
        assert!(image.corruption().is_none());
        assert_eq!((image.left_out(), image.bad_cpu_dropped()), (0, 0));
        for cpu in 0..2 {
            for depth in 0..4 {
                let c = image.counters(cpu, depth).unwrap();
                assert_eq!(
                    (c.torn, c.overwritten, c.dropped),
                    (0, 0, 0),
                    "{cpu}/{depth}"
                );
                assert_eq!(CRASH_SLOTS.dropped(cpu, depth), 0, "{cpu}/{depth}");
            }
        }
        assert_eq!(image.context_kind(0, 1), Some(ContextKind::Crash));

        let order = |s: &Sent| (s.cpu, s.depth);
        assert_eq!(
            sent.iter().map(order).collect::<Vec<_>>(),
            [(1, 2), (1, 1), (1, 0), (0, 1), (0, 0), (0, 1)],
            "frames released innermost first"
        );
        let recs: Vec<_> = image.records().collect();
        assert_eq!(recs.len(), sent.len(), "one record per frame, nothing else");
        for (i, (r, s)) in recs.iter().zip(&sent).enumerate() {
            let h = &r.header;
            assert_eq!(h.facility, facility::DEFMT, "record {i}");
            assert_ne!(h.flags & flags::RAW, 0, "record {i}");
            assert_eq!(h.level, Level::Info as u8, "record {i}");
            assert_eq!(
                (h.cpu, h.context()),
                (s.cpu, (Some(s.kind), s.depth)),
                "record {i}"
            );
            // Byte for byte what the encoder made of this frame's writes: not cut, not merged.
            assert_eq!(r.payload, &encoded(&s.chunks)[..], "record {i}: {s:02x?}");
            assert_eq!(r.payload.first(), Some(&0), "record {i}");
            assert_eq!(r.payload.last(), Some(&0), "record {i}");
            // And it decodes back to exactly those writes, as defmt-print would see them.
            let mut fr = frames_of(r.payload);
            assert_eq!(fr.len(), 1, "record {i}: one frame");
            let raw = s.chunks.concat();
            let f = fr.pop().unwrap();
            assert_len(&f, raw.len());
            assert_eq!(f[..raw.len()], raw[..], "record {i}");
            if i > 0 {
                assert!(h.ts_ns > recs[i - 1].header.ts_ns && r.seq == recs[i - 1].seq + 1);
            }
        }
    }
}
