//! The crash drain's runs of ring words (`CrashSink::runs`) against a CPU that did not stop:
//! real threads (`HostPlatform`) play the CPUs, and the CPU that ignored the crash NMI keeps
//! writing — lapping its ring many times over — while the crashing CPU drains it again and again
//! into a sink that takes runs. Every record a drain hands on, in a run or one at a time, must be
//! intact (its payload is a pure function of its number), each CPU's records in their order, and
//! every drain within its step bound; a writer paused at each step of its protocol and resumed in
//! the middle of a run's copy gets the same verdicts as with a sink that takes one record at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nmilog::host::HostPlatform;
use nmilog::ring::{RunRecords, WriteStep};
use nmilog::{CrashSink, FlushPolicy, Level, Log, Origin, RecordBuf, RunSink};

type TestLog = Log<HostPlatform, 2, 256, 2048>;

fn new_log() -> &'static TestLog {
    let log: &'static TestLog = Box::leak(Box::new(TestLog::new(HostPlatform::new(2))));
    log.set_flush_policy(FlushPolicy::Deferred);
    log
}

/// Record `n`'s payload: its number, then bytes that depend on it (a record torn between two laps
/// would mix two numbers' bytes), of a length that varies with it.
fn payload(n: u64) -> Vec<u8> {
    let mut p = format!("n={n:08} ").into_bytes();
    let len = 11 + (n as usize * 7) % 40;
    p.extend((0..len).map(|k| (n as u8).wrapping_mul(31).wrapping_add(k as u8)));
    p
}

/// A sink that keeps what it is handed as `(origin, payload)`, runs read back with `RunRecords`.
struct Runs {
    room: Vec<usize>,
    out: Vec<(Origin, Vec<u8>)>,
    runs: usize,
    /// Called on the first `run_room` (the test resumes a paused CPU there).
    on_first_room: Option<Box<dyn FnOnce()>>,
}

impl Runs {
    fn new() -> Self {
        Runs {
            room: vec![0; 8192],
            out: Vec::new(),
            runs: 0,
            on_first_room: None,
        }
    }
}

impl CrashSink for Runs {
    fn record(&mut self, o: Origin, r: &RecordBuf) -> bool {
        self.out.push((o, r.payload().to_vec()));
        true
    }
    fn runs(&mut self) -> Option<&mut dyn RunSink> {
        Some(self)
    }
}

impl RunSink for Runs {
    fn run_room(&mut self) -> &mut [usize] {
        if let Some(f) = self.on_first_room.take() {
            f();
        }
        &mut self.room
    }
    fn run_taken(&mut self, o: Origin, words: usize, records: usize) -> bool {
        let recs: Vec<_> = RunRecords::new(&self.room[..words]).collect();
        assert_eq!(recs.len(), records, "a run's words hold its records");
        for r in recs {
            self.out.push((o, r.payload_bytes().collect()));
        }
        self.runs += 1;
        true
    }
}

/// The number in record payload `p`, if `p` is record `n`'s payload, whole.
fn intact(p: &[u8]) -> Option<u64> {
    let n: u64 = std::str::from_utf8(p.get(2..10)?).ok()?.parse().ok()?;
    (p == payload(n)).then_some(n)
}

/// CPU 1 keeps writing (`pause`: a short sleep after every tenth record, else flat out) while
/// CPU 0, crashed, drains 300 times into a run sink. Returns the runs and ring records handed on.
fn drains_under_a_running_writer(pause: bool) -> (usize, u64) {
    let log = new_log();
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let (ready_tx, ready_rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        HostPlatform::register_cpu(1);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) || n < 2_000 {
            log.append_raw(Level::Info, 0, 0, &payload(n)).unwrap();
            n += 1;
            if n == 50 {
                ready_tx.send(()).unwrap();
            }
            if pause && n.is_multiple_of(10) {
                thread::sleep(Duration::from_micros(50));
            }
        }
        n
    });
    ready_rx.recv().unwrap();
    HostPlatform::register_cpu(0);
    log.crash_enter().unwrap();
    let (mut runs, mut from_rings) = (0, 0);
    for round in 0..300 {
        let what = format!("pause {pause}, round {round}");
        let mut sink = Runs::new();
        let rep = log.drain_on_crash(&|c| c == 0, &mut sink).unwrap();
        assert!(rep.steps <= rep.bound, "{what}: {rep:?}");
        assert_eq!(
            rep.torn, 0,
            "{what}: CPU 1 is not known to be stopped: {rep:?}"
        );
        let mut last = None;
        for (o, p) in &sink.out {
            if *o == Origin::Accounting {
                continue;
            }
            assert_eq!(*o, Origin::Ring { cpu: 1, depth: 0 }, "{what}");
            let n = intact(p).unwrap_or_else(|| {
                panic!(
                    "{what}: a torn record was handed on: {:?}",
                    String::from_utf8_lossy(p)
                )
            });
            assert!(last.is_none_or(|l| l < n), "{what}: {n} after {last:?}");
            last = Some(n);
        }
        runs += sink.runs;
        from_rings += rep.from_rings;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() >= 2_000);
    (runs, from_rings)
}

#[test]
fn runs_taken_while_a_cpu_that_did_not_stop_laps_its_ring_are_intact() {
    // Flat out, the writer laps the oldest record — where every drain starts — all the time: most
    // runs are overwritten under the drain and it goes on a record at a time.
    let (_, from_rings) = drains_under_a_running_writer(false);
    assert!(from_rings > 0);
    // Pausing, it mostly leaves the drain's runs alone: runs are taken (and checked above).
    let (runs, from_rings) = drains_under_a_running_writer(true);
    assert!(
        runs > 0 && from_rings > 0,
        "{runs} runs, {from_rings} records"
    );
}

/// CPU 1 is paused at `step` of its fourth record and did not check in; CPU 0 crashes and drains
/// into a run sink, resuming CPU 1 (to the end of its calls: `more` records after the paused one)
/// when the drain asks for its first room, before it copies the run.
fn writer_paused_resumed_in_a_run(step: WriteStep, more: u64) {
    let what = format!("writer paused at {step:?}, {more} records after it");
    let log = new_log();
    let (paused_tx, paused_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let writer = thread::spawn(move || {
        HostPlatform::register_cpu(1);
        for n in 0..3 {
            log.append_raw(Level::Info, 0, 0, &payload(n)).unwrap();
        }
        let mut hook = |s: WriteStep| {
            if s == step {
                paused_tx.send(()).unwrap();
                resume_rx.recv().unwrap();
            }
            true
        };
        log.append_raw_with_hook(Level::Info, 0, 0, &payload(3), &mut hook)
            .unwrap();
        for n in 4..4 + more {
            log.append_raw(Level::Info, 0, 0, &payload(n)).unwrap();
        }
    });
    paused_rx.recv().unwrap();
    HostPlatform::register_cpu(0);
    log.crash_enter().unwrap();
    let mut sink = Runs::new();
    sink.on_first_room = Some(Box::new(move || {
        resume_tx.send(()).unwrap();
        writer.join().unwrap();
    }));
    let rep = log.drain_on_crash(&|c| c != 1, &mut sink).unwrap();
    assert!(rep.complete && rep.steps <= rep.bound, "{what}: {rep:?}");
    let got: Vec<u64> = sink
        .out
        .iter()
        .filter(|(o, _)| *o != Origin::Accounting)
        .map(|(_, p)| intact(p).expect("intact"))
        .collect();
    // The snapshot was taken while the call was paused: records 0-2, and record 3 if it had
    // committed by then (else it is in flight: never torn). Each is delivered intact, in order,
    // or counted (overwritten when the resumed writer lapped the ring under the drain).
    assert_eq!(rep.torn, 0, "{what}: {rep:?}");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]) && got.iter().all(|&n| n <= 3),
        "{what}: {got:?}"
    );
    assert_eq!(
        got.len() as u64 + rep.overwritten + rep.in_flight,
        4,
        "{what}: {got:?} {rep:?}"
    );
    if more < 8 {
        // No lap: nothing overwritten, and record 3 delivered exactly when not in flight.
        assert_eq!(got[..3], [0, 1, 2], "{what}");
        assert_eq!(rep.overwritten, 0, "{what}: {rep:?}");
        assert_eq!(
            rep.in_flight,
            u64::from(!got.contains(&3)),
            "{what}: {rep:?}"
        );
    } else {
        assert!(rep.overwritten > 0, "{what}: the ring was lapped: {rep:?}");
    }
}

#[test]
fn a_writer_paused_at_every_step_and_resumed_under_a_run_gets_the_usual_verdict() {
    for step in WriteStep::ALL {
        for more in [2, 40] {
            writer_paused_resumed_in_a_run(step, more);
        }
    }
}
