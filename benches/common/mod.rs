//! The mechanisms compared by `benches/nmi_path.rs` and `examples/latency.rs` (one copy, included
//! by both with `mod common;` / `#[path]`): nmilog's NMI-path append and the baselines, each one
//! `#[inline(never)]` function storing the same timestamp (nmilog's clock) and 32-byte record.
#![allow(dead_code)] // each includer uses a different subset

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, LazyLock, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use nmilog::host::HostPlatform;
use nmilog::{ContextKind, Level, Log, Platform};

/// Words per nmilog ring (8 KiB: 127 records of 32 bytes).
pub const RING_WORDS: usize = 1024;
/// Words in nmilog's main log (unused here: the NMI path never flushes).
pub const MAIN_WORDS: usize = 4096;
/// Records in every baseline buffer.
pub const SLOTS: usize = 128;

/// The logger under test: the bench thread is CPU 0, the contending writer CPU 1; the oversubscribed
/// runs register their [`OVER_THREADS`] writers as CPUs 0 to 3.
pub static LOG: Log<HostPlatform, 4, RING_WORDS, MAIN_WORDS> = Log::new(HostPlatform::new(4));

/// The pre-formatted record every mechanism stores.
pub type Rec32 = [u8; 32];

/// What the baselines store: the timestamp and the record (written, never read back: a log buffer).
#[derive(Clone, Copy)]
#[allow(dead_code)]
pub struct Record {
    ts: u64,
    data: Rec32,
}

pub const EMPTY: Record = Record {
    ts: 0,
    data: [0; 32],
};

/// The clock every mechanism reads (the one nmilog's records are stamped with).
#[inline(always)]
pub fn now() -> u64 {
    LOG.platform().now_ns()
}

// ------------------------------------------------------------------------------------- nmilog

#[inline(never)]
pub fn push_nmilog(rec: &Rec32) {
    let _ = black_box(LOG.append_raw(Level::Info, 0, 0, rec));
}

// ------------------------------------------------------------------------------------- raw copy

pub struct LocalRing {
    recs: [Record; SLOTS],
    head: usize,
}

std::thread_local! {
    static LOCAL: UnsafeCell<LocalRing> = const {
        UnsafeCell::new(LocalRing { recs: [EMPTY; SLOTS], head: 0 })
    };
}

#[inline(never)]
pub fn push_raw_copy(rec: &Rec32) {
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
pub struct SpinRing {
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

pub static SPIN: SpinRing = SpinRing {
    locked: AtomicBool::new(false),
    inner: UnsafeCell::new(LocalRing {
        recs: [EMPTY; SLOTS],
        head: 0,
    }),
};

#[inline(never)]
pub fn push_spinlock(rec: &Rec32) {
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

pub static MUTEX: Mutex<VecDeque<Record>> = Mutex::new(VecDeque::new());

#[inline(never)]
pub fn push_mutex(rec: &Rec32) {
    let mut q = MUTEX.lock().unwrap_or_else(|e| e.into_inner());
    let ts = now();
    if q.len() == SLOTS {
        q.pop_front();
    }
    q.push_back(Record { ts, data: *rec });
}

// ------------------------------------------------------------------------------------- crossbeam

pub static ARRAY_QUEUE: LazyLock<ArrayQueue<Record>> = LazyLock::new(|| ArrayQueue::new(SLOTS));

#[inline(never)]
pub fn push_crossbeam(rec: &Rec32) {
    let ts = now();
    black_box(ARRAY_QUEUE.force_push(Record { ts, data: *rec }));
}

// ------------------------------------------------------------------------------------- heapless

#[allow(deprecated)] // heapless deprecates `new` because the queue is not lock-free; that is the point
pub static HEAPLESS: heapless::mpmc::Queue<Record, SLOTS> = heapless::mpmc::Queue::new();

#[inline(never)]
pub fn push_heapless(rec: &Rec32) {
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

/// One log call of a mechanism.
pub type Push = fn(&Rec32);

/// The mechanisms, in table order: (name, push).
pub const MECHANISMS: [(&str, Push); 6] = [
    ("nmilog", push_nmilog),
    ("raw_copy", push_raw_copy),
    ("spinlock_global", push_spinlock),
    ("mutex_vecdeque", push_mutex),
    ("crossbeam_array_queue", push_crossbeam),
    ("heapless_mpmc", push_heapless),
];

/// Pins the calling thread to `cpu` (best effort; Linux only), or to every CPU for `None`.
pub fn pin(cpu: Option<usize>) {
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
pub fn as_cpu_in_nmi<R>(cpu: usize, f: impl FnOnce() -> R) -> R {
    HostPlatform::register_cpu(cpu);
    let _nmi = LOG.enter(ContextKind::Nmi);
    f()
}

/// A writer pinned to the other core (CPU 1), calling `push` back to back until stopped or dropped.
pub struct Contender {
    stop: Arc<AtomicBool>,
    started: Instant,
    handle: Option<thread::JoinHandle<u64>>,
}

impl Contender {
    /// Starts the writer and returns once it is writing.
    pub fn start(push: Push) -> Self {
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
            stop,
            started: Instant::now(),
            handle: Some(handle),
        }
    }

    /// Stops the writer: how many calls it made, and in how long (on a shared machine it may have
    /// been descheduled, so the rate says how hard it really competed).
    pub fn stop(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let calls = self.handle.take().map_or(0, |h| h.join().unwrap_or(0));
        (calls, self.started.elapsed())
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ------------------------------------------------------------------------------------- oversubscribed

/// Writer threads of the oversubscribed runs: twice the cores of the 2-vCPU bench machine, so a
/// writer can be descheduled in the middle of a call while the others go on (as a vCPU of a busy
/// host, or a task preempted with a lock held, would be).
pub const OVER_THREADS: usize = 4;

/// A crew of [`OVER_THREADS`] writer threads, not pinned (the scheduler shares the cores out),
/// each registered as its own CPU (nmilog: CPUs 0 to 3, in NMI context, so no flush runs). Every
/// [`batch`](Crew::batch) releases all of them at once; each makes `per_thread` calls and the batch
/// ends when the last one is done.
pub struct Crew {
    start: Arc<Barrier>,
    done: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    /// Per writer: the ticks of each call of the last batch (empty unless timed).
    samples: Vec<Arc<Mutex<Vec<u64>>>>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Crew {
    /// Starts the writers. With `timer`, each call is timed with it (`timer()` before and after,
    /// the difference kept: see [`Crew::samples`]).
    pub fn start(push: Push, per_thread: usize, timer: Option<fn() -> u64>) -> Self {
        let start = Arc::new(Barrier::new(OVER_THREADS + 1));
        let done = Arc::new(Barrier::new(OVER_THREADS + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut samples = Vec::new();
        let mut handles = Vec::new();
        for cpu in 0..OVER_THREADS {
            let (start, done, stop) = (start.clone(), done.clone(), stop.clone());
            let mine = Arc::new(Mutex::new(Vec::with_capacity(if timer.is_some() {
                per_thread
            } else {
                0
            })));
            samples.push(mine.clone());
            handles.push(thread::spawn(move || {
                pin(None);
                as_cpu_in_nmi(cpu, || {
                    let mut rec: Rec32 = *b"cpu N: oversubscribed writer rec";
                    rec[4] = b'0' + cpu as u8;
                    loop {
                        start.wait();
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        match timer {
                            None => {
                                for _ in 0..per_thread {
                                    push(black_box(&rec));
                                }
                            }
                            Some(t) => {
                                let mut s = mine.lock().unwrap_or_else(|e| e.into_inner());
                                s.clear();
                                for _ in 0..per_thread {
                                    let t0 = t();
                                    push(black_box(&rec));
                                    s.push(t().wrapping_sub(t0));
                                }
                            }
                        }
                        done.wait();
                    }
                })
            }));
        }
        Crew {
            start,
            done,
            stop,
            samples,
            handles,
        }
    }

    /// One batch: every writer makes its calls. Returns the wall time from the release of the
    /// writers to the end of the last one's calls.
    pub fn batch(&self) -> Duration {
        let t0 = Instant::now();
        self.start.wait();
        self.done.wait();
        t0.elapsed()
    }

    /// Every writer's per-call samples of the last batch, concatenated.
    pub fn samples(&self) -> Vec<u64> {
        self.samples
            .iter()
            .flat_map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.start.wait();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The mechanisms of the oversubscribed runs, in table order: nmilog, the shared-buffer peers and
/// the per-thread copy.
pub const OVER_MECHANISMS: [(&str, Push); 5] = [
    ("nmilog", push_nmilog),
    ("spinlock_global", push_spinlock),
    ("crossbeam_array_queue", push_crossbeam),
    ("heapless_mpmc", push_heapless),
    ("raw_copy", push_raw_copy),
];
