//! NMI-path cost: nmilog's NMI-context raw append of a pre-formatted 32-byte record against the
//! physical limit (clock + 32-byte copy) and the designs people would use instead.
//!
//! Groups (names are stable, so results can be compared across versions):
//!
//! * `nmi_path`: one writer.
//! * `nmi_path_contended`: the same, while a second thread pinned to the other core writes
//!   continuously through the same mechanism (nmilog: as CPU 1, into its own rings).
//!
//! Every mechanism stores the same 40 bytes per call: an 8-byte timestamp read from the *same* clock
//! nmilog uses (`HostPlatform`'s `now_ns`, the TSC on x86-64) and the 32-byte record. Every shared
//! buffer holds 128 records and overwrites (or pops) the oldest when full, as a log does; nmilog's
//! ring of 1024 words holds 127 such records. The lock-based baselines read the clock inside the
//! lock, as printk's `log_store` does, so their buffers stay in timestamp order.
//!
//! Each mechanism is one `#[inline(never)]` function, so every one pays the same call and each can be
//! found by name in `objdump -d` or callgrind output.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/tgt/bench cargo bench --bench nmi_path -- --warm-up-time 1 --measurement-time 3
//! ```

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_queue::ArrayQueue;
use nmilog::host::HostPlatform;
use nmilog::{ContextKind, Level, Log, Platform};

/// Words per nmilog ring (8 KiB: 127 records of 32 bytes).
const RING_WORDS: usize = 1024;
/// Words in nmilog's main log (unused here: the NMI path never flushes).
const MAIN_WORDS: usize = 4096;
/// Records in every baseline buffer.
const SLOTS: usize = 128;

/// The logger under test: two CPUs (the bench thread is CPU 0, the contending writer CPU 1).
static LOG: Log<HostPlatform, 2, RING_WORDS, MAIN_WORDS> = Log::new(HostPlatform::new(2));

/// The pre-formatted record every mechanism stores.
type Rec32 = [u8; 32];

/// What the baselines store: the timestamp and the record (written, never read back: a log buffer).
#[derive(Clone, Copy)]
#[allow(dead_code)]
struct Record {
    ts: u64,
    data: Rec32,
}

const EMPTY: Record = Record {
    ts: 0,
    data: [0; 32],
};

/// The clock every mechanism reads (the one nmilog's records are stamped with).
#[inline(always)]
fn now() -> u64 {
    LOG.platform().now_ns()
}

// ------------------------------------------------------------------------------------- nmilog

#[inline(never)]
fn push_nmilog(rec: &Rec32) {
    let _ = black_box(LOG.append_raw(Level::Info, 0, 0, rec));
}

// ------------------------------------------------------------------------------------- raw copy

struct LocalRing {
    recs: [Record; SLOTS],
    head: usize,
}

std::thread_local! {
    static LOCAL: UnsafeCell<LocalRing> = const {
        UnsafeCell::new(LocalRing { recs: [EMPTY; SLOTS], head: 0 })
    };
}

#[inline(never)]
fn push_raw_copy(rec: &Rec32) {
    let ts = now();
    LOCAL.with(|l| {
        // SAFETY: the ring is thread-local and this closure is not re-entered (it calls nothing that
        // could touch `LOCAL`), so this is the only reference to it.
        let l = unsafe { &mut *l.get() };
        let slot = &mut l.recs[l.head % SLOTS];
        *slot = Record { ts, data: *rec };
        l.head = l.head.wrapping_add(1);
        black_box(slot);
    });
}

// ------------------------------------------------------------------------------------- spinlock

/// The 2020 design: one test-and-test-and-set spinlock around one shared log buffer.
struct SpinRing {
    locked: AtomicBool,
    inner: UnsafeCell<LocalRing>,
}

// SAFETY: `inner` is only accessed with `locked` held (acquired with an Acquire swap, released with a
// Release store), so accesses from different threads never overlap and are ordered.
unsafe impl Sync for SpinRing {}

impl SpinRing {
    #[inline(always)]
    fn lock(&self) {
        loop {
            while self.locked.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }
}

static SPIN: SpinRing = SpinRing {
    locked: AtomicBool::new(false),
    inner: UnsafeCell::new(LocalRing {
        recs: [EMPTY; SLOTS],
        head: 0,
    }),
};

#[inline(never)]
fn push_spinlock(rec: &Rec32) {
    SPIN.lock();
    {
        // SAFETY: the lock is held, so this is the only reference to the buffer.
        let r = unsafe { &mut *SPIN.inner.get() };
        let ts = now();
        let slot = &mut r.recs[r.head % SLOTS];
        *slot = Record { ts, data: *rec };
        r.head = r.head.wrapping_add(1);
    }
    SPIN.locked.store(false, Ordering::Release);
}

// ------------------------------------------------------------------------------------- std Mutex

static MUTEX: Mutex<VecDeque<Record>> = Mutex::new(VecDeque::new());

#[inline(never)]
fn push_mutex(rec: &Rec32) {
    let mut q = MUTEX.lock().unwrap_or_else(|e| e.into_inner());
    let ts = now();
    if q.len() == SLOTS {
        q.pop_front();
    }
    q.push_back(Record { ts, data: *rec });
}

// ------------------------------------------------------------------------------------- crossbeam

static ARRAY_QUEUE: LazyLock<ArrayQueue<Record>> = LazyLock::new(|| ArrayQueue::new(SLOTS));

#[inline(never)]
fn push_crossbeam(rec: &Rec32) {
    let ts = now();
    black_box(ARRAY_QUEUE.force_push(Record { ts, data: *rec }));
}

// ------------------------------------------------------------------------------------- heapless

#[allow(deprecated)] // heapless deprecates `new` because the queue is not lock-free; that is the point
static HEAPLESS: heapless::mpmc::Queue<Record, SLOTS> = heapless::mpmc::Queue::new();

#[inline(never)]
fn push_heapless(rec: &Rec32) {
    let mut r = Record {
        ts: now(),
        data: *rec,
    };
    // Full: drop the oldest and retry (bounded, so a stalled peer cannot hang the bench).
    for _ in 0..8 {
        match HEAPLESS.enqueue(r) {
            Ok(()) => return,
            Err(back) => {
                r = back;
                black_box(HEAPLESS.dequeue());
            }
        }
    }
}

// ------------------------------------------------------------------------------------- harness

/// One log call of a mechanism.
type Push = fn(&Rec32);

/// The mechanisms, in table order: (function name, push).
const MECHS: [(&str, Push); 6] = [
    ("nmilog", push_nmilog),
    ("raw_copy", push_raw_copy),
    ("spinlock_global", push_spinlock),
    ("mutex_vecdeque", push_mutex),
    ("crossbeam_array_queue", push_crossbeam),
    ("heapless_mpmc", push_heapless),
];

/// Pins the calling thread to `cpu` (best effort; Linux only), or to every CPU for `None`.
fn pin(cpu: Option<usize>) {
    #[cfg(target_os = "linux")]
    {
        let n = thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: `cpu_set_t` is plain data (all-zero is the empty set); CPU_SET only writes inside
        // the set for an index below CPU_SETSIZE (checked), and sched_setaffinity reads `size` bytes of
        // the set we own. A failure leaves the affinity unchanged, which is harmless here.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for c in 0..n.min(libc::CPU_SETSIZE as usize) {
                if cpu.is_none_or(|want| want == c) {
                    libc::CPU_SET(c, &mut set);
                }
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}

/// Runs `f` as `cpu` (nmilog: registered as that CPU and in NMI context, so no flush happens).
fn as_cpu_in_nmi<R>(cpu: usize, f: impl FnOnce() -> R) -> R {
    HostPlatform::register_cpu(cpu);
    let _nmi = LOG.enter(ContextKind::Nmi);
    f()
}

/// A thread on the other core writing through `push` until stopped.
struct Contender {
    name: &'static str,
    started: std::time::Instant,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<u64>>,
}

impl Contender {
    fn start(name: &'static str, push: Push) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(false));
        let (s, r) = (stop.clone(), running.clone());
        let handle = thread::spawn(move || {
            pin(Some(1));
            as_cpu_in_nmi(1, || {
                let rec: Rec32 = *b"contender-record-0123456789abcde";
                let mut n = 0u64;
                r.store(true, Ordering::Release);
                while !s.load(Ordering::Relaxed) {
                    push(black_box(&rec));
                    n += 1;
                }
                n
            })
        });
        while !running.load(Ordering::Acquire) {
            thread::yield_now();
        }
        Contender {
            name,
            started: std::time::Instant::now(),
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            // How much the other core really wrote (on a shared machine it may have been descheduled).
            let calls = h.join().unwrap_or(0);
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!(
                "nmi_path_contended/{}: the other core made {calls} calls in {secs:.1} s ({:.1} M/s)",
                self.name,
                calls as f64 / secs / 1e6
            );
        }
    }
}

fn setup() {
    HostPlatform::register_cpu(0); // also calibrates the TSC clock, once
    LazyLock::force(&ARRAY_QUEUE);
    MUTEX
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reserve(SLOTS);
    assert!(now() > 0, "clock not running");
}

fn nmi_path(c: &mut Criterion) {
    setup();
    let rec: Rec32 = *b"cpu 0: NMI watchdog: hard LOCKUP";
    let mut g = c.benchmark_group("nmi_path");
    for (name, push) in MECHS {
        as_cpu_in_nmi(0, || {
            g.bench_function(name, |b| b.iter(|| push(black_box(&rec))));
        });
    }
    g.finish();
}

fn nmi_path_contended(c: &mut Criterion) {
    setup();
    let rec: Rec32 = *b"cpu 0: NMI watchdog: hard LOCKUP";
    pin(Some(0));
    let mut g = c.benchmark_group("nmi_path_contended");
    for (name, push) in MECHS {
        let contender = Contender::start(name, push);
        as_cpu_in_nmi(0, || {
            g.bench_function(name, |b| b.iter(|| push(black_box(&rec))));
        });
        drop(contender);
    }
    g.finish();
    pin(None);
}

criterion_group!(benches, nmi_path, nmi_path_contended);
criterion_main!(benches);
