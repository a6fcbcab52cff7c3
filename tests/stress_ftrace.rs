//! A host stress test modelled on ftrace's ring_buffer self-test: writer threads (one per "CPU")
//! append records in task context while another thread interrupts them with real signals
//! (`pthread_kill` of SIGUSR1 and SIGUSR2; the two handlers may nest), and each handler logs from
//! "NMI" context (`nmi_enter`, `append_raw`, `nmi_exit`) into its CPU's ring for that depth. A reader
//! (its own CPU) flushes the rings into the main log and reads it concurrently. At the end everything
//! is flushed and, for every (cpu, depth), `lost + read == total` exactly, where `total` is what the
//! writers and handlers appended successfully and `lost` the flush's overwrite counter; every payload
//! (which encodes cpu, depth and sequence number plus a fill pattern) is compared byte for byte.
//!
//! Under ThreadSanitizer signals are deferred to the next interceptor call: the test then only
//! requires that some signals were handled, not how many. Duration: `NMILOG_STRESS_SECS` (default 3).
#![cfg(unix)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nmilog::host::HostPlatform;
use nmilog::ring::Read;
use nmilog::{Level, Log, MainReader, RecordBuf};

use common::stress_secs;

const WRITERS: usize = 3;
const READER_CPU: usize = WRITERS;
const CPUS: usize = WRITERS + 1;
const DEPTH: usize = 4;

static LOG: Log<HostPlatform, CPUS, 1024, 65536, DEPTH> = Log::new(HostPlatform::new(CPUS));
static STOP_SIGNALS: AtomicBool = AtomicBool::new(false);
static STOP_WRITERS: AtomicBool = AtomicBool::new(false);
/// Successful appends per (cpu, depth). Each counter has one writer: the code running at that depth
/// on that CPU (a thread or a handler interrupting it), exactly like the ring it counts.
static TOTAL: [[AtomicU64; DEPTH]; CPUS] = [const { [const { AtomicU64::new(0) }; DEPTH] }; CPUS];
static HANDLED: AtomicU64 = AtomicU64::new(0);
static NESTED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static THREADS: [AtomicUsize; WRITERS] = [const { AtomicUsize::new(0) }; WRITERS];

/// The payload of record `seq` of ring (cpu, depth): an 8-byte tag, then a fill pattern; the length
/// is a function of the sequence number too.
fn payload(cpu: usize, depth: usize, seq: u64, out: &mut [u8; 128]) -> usize {
    let len = 8 + (seq.wrapping_mul(0x9e37_79b9) >> 7) as usize % 112;
    out[0] = cpu as u8;
    out[1] = depth as u8;
    out[2..8].copy_from_slice(&seq.to_le_bytes()[..6]);
    for (k, b) in out[8..len].iter_mut().enumerate() {
        *b = (seq as u8)
            .wrapping_mul(31)
            .wrapping_add(k as u8)
            .wrapping_add((cpu * 16 + depth) as u8 * 7);
    }
    len
}

/// Appends the next record of the current CPU at the current depth. Async-signal-safe: atomics, a
/// const-initialised thread-local and a stack buffer.
fn log_one() {
    let Some((_, depth)) = LOG.context() else {
        FAILED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let cpu = HostPlatform::current_cpu();
    let ctr = &TOTAL[cpu][depth];
    let seq = ctr.load(Ordering::Relaxed);
    let mut buf = [0u8; 128];
    let len = payload(cpu, depth, seq, &mut buf);
    match LOG.append_raw(Level::Info, 0, 0, &buf[..len]) {
        Ok(s) if s == seq => ctr.store(seq + 1, Ordering::Relaxed),
        _ => {
            FAILED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

extern "C" fn on_signal(_sig: libc::c_int) {
    LOG.nmi_enter();
    if let Some((_, d)) = LOG.context() {
        if d >= 2 {
            NESTED.fetch_add(1, Ordering::Relaxed);
        }
    }
    log_one();
    log_one();
    LOG.nmi_exit();
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

fn install(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction is a valid initial value; the handler is an `extern "C" fn(c_int)`;
    // an empty mask lets the other signal interrupt this handler (nesting), and SA_RESTART keeps the
    // writers' interrupted system calls (if any) going.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

fn writer(cpu: usize) {
    HostPlatform::register_cpu(cpu);
    // SAFETY: pthread_self has no preconditions.
    THREADS[cpu].store(unsafe { libc::pthread_self() } as usize, Ordering::Release);
    while !STOP_WRITERS.load(Ordering::Relaxed) {
        log_one();
    }
}

fn check(
    buf: &RecordBuf,
    last: &mut [[Option<u64>; DEPTH]; CPUS],
    read: &mut [[u64; DEPTH]; CPUS],
) {
    let c = buf.header.cpu as usize;
    let (_, d) = buf.header.context();
    assert!(c < WRITERS && d < DEPTH, "record from ({c}, {d})");
    let seq = buf.header.src_seq;
    if let Some(l) = last[c][d] {
        assert!(
            seq > l,
            "({c},{d}): {seq} after {l}: duplicated or out of order"
        );
    }
    last[c][d] = Some(seq);
    let mut want = [0u8; 128];
    let len = payload(c, d, seq, &mut want);
    assert_eq!(
        buf.payload(),
        &want[..len],
        "({c},{d}) seq {seq}: payload differs"
    );
    read[c][d] += 1;
}

#[test]
#[cfg_attr(miri, ignore)]
fn ftrace_style_stress_with_signals_as_nmis() {
    install(libc::SIGUSR1);
    install(libc::SIGUSR2);
    HostPlatform::register_cpu(READER_CPU);
    let dur = Duration::from_secs_f64(stress_secs());

    let writers: Vec<_> = (0..WRITERS)
        .map(|c| std::thread::spawn(move || writer(c)))
        .collect();
    while THREADS.iter().any(|t| t.load(Ordering::Acquire) == 0) {
        std::thread::yield_now();
    }
    let signaler = std::thread::spawn(|| {
        let mut sent = 0u64;
        let mut i = 0usize;
        while !STOP_SIGNALS.load(Ordering::Relaxed) {
            let t = THREADS[i % WRITERS].load(Ordering::Acquire) as libc::pthread_t;
            let sig = if (i / WRITERS) % 3 == 2 {
                libc::SIGUSR2
            } else {
                libc::SIGUSR1
            };
            // SAFETY: `t` is a live writer thread (writers outlive the signaler).
            if unsafe { libc::pthread_kill(t, sig) } == 0 {
                sent += 1;
            }
            if i % 8 == 7 {
                std::thread::sleep(Duration::from_micros(20));
            }
            i += 1;
        }
        sent
    });

    let mut rd = MainReader::new();
    let mut buf = RecordBuf::new();
    let mut last = [[None; DEPTH]; CPUS];
    let mut read = [[0u64; DEPTH]; CPUS];
    let start = Instant::now();
    let mut flushes = 0;
    while start.elapsed() < dur {
        LOG.flush().expect("the reader is the only flusher");
        flushes += 1;
        while rd.read(&LOG, &mut buf) == Read::Record {
            check(&buf, &mut last, &mut read);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    STOP_SIGNALS.store(true, Ordering::Relaxed);
    let sent = signaler.join().unwrap();
    // Let deferred / pending signals land while the writers still run.
    std::thread::sleep(Duration::from_millis(50));
    STOP_WRITERS.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    for _ in 0..64 {
        let rep = LOG.flush().expect("the reader is the only flusher");
        while rd.read(&LOG, &mut buf) == Read::Record {
            check(&buf, &mut last, &mut read);
        }
        if rep.moved == 0 && rep.overwritten == 0 {
            break;
        }
    }
    assert_eq!(rd.read(&LOG, &mut buf), Read::Empty);
    assert_eq!(
        rd.missed(),
        0,
        "the main log is large enough never to wrap under the reader"
    );
    assert_eq!(FAILED.load(Ordering::Relaxed), 0, "an append failed");

    let (mut total_all, mut read_all, mut lost_all) = (0, 0, 0);
    for c in 0..WRITERS {
        for d in 0..DEPTH {
            let total = TOTAL[c][d].load(Ordering::Relaxed);
            let cnt = LOG.counters(c, d).unwrap();
            assert_eq!((cnt.torn, cnt.dropped), (0, 0), "({c},{d}): {cnt:?}");
            assert_eq!(
                cnt.overwritten + read[c][d],
                total,
                "({c},{d}): lost {} + read {} != total {total}",
                cnt.overwritten,
                read[c][d]
            );
            total_all += total;
            read_all += read[c][d];
            lost_all += cnt.overwritten;
        }
    }
    let handled = HANDLED.load(Ordering::Relaxed);
    let nmi_records: u64 = (0..WRITERS)
        .map(|c| {
            (1..DEPTH)
                .map(|d| TOTAL[c][d].load(Ordering::Relaxed))
                .sum::<u64>()
        })
        .sum();
    eprintln!(
        "stress_ftrace: {:.1}s: {sent} signals sent, {handled} handled ({} nested), {total_all} \
         records appended ({nmi_records} from handlers), {read_all} read and compared byte for byte, \
         {lost_all} lost (overwritten, counted), {flushes} flushes",
        start.elapsed().as_secs_f64(),
        NESTED.load(Ordering::Relaxed),
    );
    assert!(handled > 0, "no signal landed");
    assert!(nmi_records > 0);
    assert!(read_all > 1000, "too few records checked: {read_all}");
}
