//! The crash drain against CPUs that did not stop: a flush owner, or a writer, paused at every step of
//! its protocol while the crashing CPU drains and writes the handover image, then resumed — during
//! the drain, or after it (before the image is written). At every step and in both orders, every
//! record comes out in the image exactly once or is counted (torn, in flight, overwritten), never
//! twice, in timestamp order, and the drain stays within its step bound.
//!
//! Real threads play the CPUs (`HostPlatform`), so the paused CPU really resumes and runs its code to
//! the end while (or after) the crashing CPU reads the same memory.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread;

use nmilog::handover;
use nmilog::host::HostPlatform;
use nmilog::ring::WriteStep;
use nmilog::{FlushPolicy, FlushStep, Level, Log, Origin, RecordBuf};

type TestLog = Log<HostPlatform, 3, 512, 4096>;

/// When the paused CPU resumes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Resume {
    /// While the crashing CPU's drain is delivering its first record.
    DuringDrain,
    /// After the drain returned, before the handover image is written.
    AfterDrain,
}

fn new_log() -> &'static TestLog {
    let log: &'static TestLog = Box::leak(Box::new(TestLog::new(HostPlatform::new(3))));
    log.set_flush_policy(FlushPolicy::Deferred);
    log
}

/// Every record of the image, checked: in timestamp order, each (cpu, depth, src_seq) once. Returns
/// the texts per CPU.
fn check_image<'a>(
    bytes: &'a [u8],
    what: &str,
) -> (BTreeMap<u16, Vec<String>>, handover::Image<'a>) {
    let img = handover::parse(bytes).unwrap_or_else(|e| panic!("{what}: image unreadable: {e}"));
    assert!(img.corruption().is_none(), "{what}");
    let mut seen = std::collections::BTreeSet::new();
    let mut by_cpu: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut last = 0;
    for r in img.records() {
        assert!(r.header.ts_ns >= last, "{what}: timestamp goes backwards");
        last = r.header.ts_ns;
        if r.header.facility == nmilog::record::facility::NMILOG {
            continue;
        }
        let key = (r.header.cpu, r.header.context().1, r.header.src_seq);
        assert!(seen.insert(key), "{what}: {key:?} twice");
        by_cpu
            .entry(r.header.cpu)
            .or_default()
            .push(r.text().unwrap().to_owned());
    }
    (by_cpu, img)
}

/// CPU 1 owns the flush and is paused at `step` of its `nth` move; CPU 2 logged and checked in;
/// CPU 0 crashes, drains (CPU 1 not known to be stopped), resumes CPU 1 as `resume` says and writes
/// the image.
fn flush_owner_paused(step: FlushStep, nth: usize, resume: Resume) {
    let what = format!("owner paused at {step:?} of move {nth}, resumed {resume:?}");
    let log = new_log();
    // CPU 2: five records, then it is stopped (checks in).
    thread::spawn(move || {
        HostPlatform::register_cpu(2);
        for i in 0..5 {
            log.append(Level::Info, 0, 0, format!("cpu2 n={i}").as_bytes())
                .unwrap();
        }
    })
    .join()
    .unwrap();
    let (paused_tx, paused_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let owner = thread::spawn(move || {
        HostPlatform::register_cpu(1);
        for i in 0..5 {
            log.append(Level::Info, 0, 0, format!("cpu1 n={i}").as_bytes())
                .unwrap();
        }
        let mut moves = 0;
        let mut hook = |s: FlushStep| {
            if s == step && moves == nth {
                paused_tx.send(()).unwrap();
                resume_rx.recv().unwrap();
            }
            if s == FlushStep::Done {
                moves += 1;
            }
            true
        };
        log.flush_with_hook(&mut hook)
    });
    paused_rx.recv().unwrap();
    HostPlatform::register_cpu(0);
    log.crash_enter().unwrap();
    log.append(Level::Emerg, 0, 0, b"crash: CPU 0").unwrap();
    let stopped = |c: usize| c != 1;
    let mut owner = Some(owner);
    let mut resume_tx = Some(resume_tx);
    let mut drained = Vec::new();
    let rep = log
        .drain_on_crash(&stopped, &mut |o: Origin, r: &RecordBuf| {
            if resume == Resume::DuringDrain {
                if let (Some(tx), Some(h)) = (resume_tx.take(), owner.take()) {
                    tx.send(()).unwrap();
                    h.join().unwrap();
                }
            }
            if o != Origin::Accounting {
                drained.push((r.header.cpu, r.header.src_seq));
            }
            true
        })
        .unwrap();
    assert!(rep.complete && rep.steps <= rep.bound, "{what}: {rep:?}");
    assert_eq!((rep.torn, rep.main_lost), (0, 0), "{what}: {rep:?}");
    let mut sorted = drained.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        drained.len(),
        "{what}: the drain delivered a record twice"
    );
    assert_eq!(drained.len(), 11, "{what}: {rep:?}");
    if let (Some(tx), Some(h)) = (resume_tx.take(), owner.take()) {
        tx.send(()).unwrap();
        h.join().unwrap();
    }
    let mut region = vec![0u8; handover::max_image_size(3, 4, 512, 4096)];
    let n = handover::write_image(log, &mut region, &stopped).unwrap();
    let (by_cpu, img) = check_image(&region[..n], &what);
    let want = |c: u16| -> Vec<String> { (0..5).map(|i| format!("cpu{c} n={i}")).collect() };
    assert_eq!(by_cpu[&1], want(1), "{what}");
    assert_eq!(by_cpu[&2], want(2), "{what}");
    assert_eq!(by_cpu[&0], ["crash: CPU 0"], "{what}");
    let t = img.totals();
    assert_eq!((t.torn, t.overwritten, t.in_flight), (0, 0, 0), "{what}");
}

#[test]
fn flush_owner_paused_at_every_step_resumed_during_or_after_the_drain() {
    let mut n = 0;
    for nth in [0, 2] {
        for step in FlushStep::ALL {
            for resume in [Resume::DuringDrain, Resume::AfterDrain] {
                flush_owner_paused(step, nth, resume);
                n += 1;
            }
        }
    }
    assert_eq!(n, 40);
}

/// CPU 1 is paused at `step` of a log call (its fourth record) and did not check in; CPU 0 crashes,
/// drains, resumes CPU 1 as `resume` says and writes the image.
fn writer_paused(step: WriteStep, resume: Resume) {
    let what = format!("writer paused at {step:?}, resumed {resume:?}");
    let log = new_log();
    let (paused_tx, paused_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let writer = thread::spawn(move || {
        HostPlatform::register_cpu(1);
        for i in 0..3 {
            log.append(Level::Info, 0, 0, format!("cpu1 n={i}").as_bytes())
                .unwrap();
        }
        let mut hook = |s: WriteStep| {
            if s == step {
                paused_tx.send(()).unwrap();
                resume_rx.recv().unwrap();
            }
            true
        };
        log.append_raw_with_hook(Level::Info, 0, 0, b"cpu1 n=3", &mut hook)
            .unwrap();
        // It keeps logging after the drain (on the NMI-safe path: a crash is in progress).
        log.append(Level::Info, 0, 0, b"cpu1 n=4").unwrap();
    });
    paused_rx.recv().unwrap();
    HostPlatform::register_cpu(0);
    log.crash_enter().unwrap();
    log.append(Level::Emerg, 0, 0, b"crash: CPU 0").unwrap();
    let stopped = |c: usize| c != 1;
    let mut writer = Some(writer);
    let mut resume_tx = Some(resume_tx);
    let mut drained = Vec::new();
    let rep = log
        .drain_on_crash(&stopped, &mut |o: Origin, r: &RecordBuf| {
            if resume == Resume::DuringDrain {
                if let (Some(tx), Some(h)) = (resume_tx.take(), writer.take()) {
                    tx.send(()).unwrap();
                    h.join().unwrap();
                }
            }
            if o != Origin::Accounting {
                drained.push(r.text().unwrap().to_owned());
            }
            true
        })
        .unwrap();
    assert!(rep.complete && rep.steps <= rep.bound, "{what}: {rep:?}");
    // The drain's own verdict on the paused call: delivered (it had committed) or in flight — never
    // torn (CPU 1 is not known to be stopped) and never both.
    let delivered = drained.iter().any(|t| t == "cpu1 n=3");
    assert_eq!(rep.torn, 0, "{what}: {rep:?}");
    assert_eq!(rep.in_flight, u64::from(!delivered), "{what}: {rep:?}");
    assert!(drained.starts_with(&["cpu1 n=0".into(), "cpu1 n=1".into(), "cpu1 n=2".into()]));
    if let (Some(tx), Some(h)) = (resume_tx.take(), writer.take()) {
        tx.send(()).unwrap();
        h.join().unwrap();
    }
    // The image is written after CPU 1 finished both calls: both are in it, once.
    let mut region = vec![0u8; handover::max_image_size(3, 4, 512, 4096)];
    let n = handover::write_image(log, &mut region, &stopped).unwrap();
    let (by_cpu, img) = check_image(&region[..n], &what);
    let want: Vec<String> = (0..5).map(|i| format!("cpu1 n={i}")).collect();
    assert_eq!(by_cpu[&1], want, "{what}");
    let t = img.totals();
    assert_eq!((t.torn, t.in_flight, t.overwritten), (0, 0, 0), "{what}");
}

#[test]
fn writer_paused_at_every_step_resumed_during_or_after_the_drain() {
    for step in WriteStep::ALL {
        for resume in [Resume::DuringDrain, Resume::AfterDrain] {
            writer_paused(step, resume);
        }
    }
}

/// The same writer, frozen for good at each step but known to be stopped (it checked in): torn when
/// its record was not committed, delivered when it was.
#[test]
fn writer_frozen_at_every_step_and_stopped_is_torn_or_delivered() {
    for step in WriteStep::ALL {
        let log = new_log();
        let (paused_tx, paused_rx) = mpsc::channel();
        thread::spawn(move || {
            HostPlatform::register_cpu(1);
            log.append(Level::Info, 0, 0, b"cpu1 n=0").unwrap();
            let _ = log.append_raw_with_hook(Level::Info, 0, 0, b"cpu1 n=1", &mut |s| {
                // Frozen: the hook stops the writer where it is, as the crash NMI would.
                s != step
            });
            paused_tx.send(()).unwrap();
        })
        .join()
        .unwrap();
        paused_rx.recv().unwrap();
        HostPlatform::register_cpu(0);
        log.crash_enter().unwrap();
        let committed = matches!(step, WriteStep::Committed | WriteStep::Published);
        let mut region = vec![0u8; handover::max_image_size(3, 4, 512, 4096)];
        let n = handover::write_image(log, &mut region, &|_| true).unwrap();
        let (by_cpu, img) = check_image(&region[..n], &format!("{step:?}"));
        let got = by_cpu.get(&1).cloned().unwrap_or_default();
        if committed {
            assert_eq!(got, ["cpu1 n=0", "cpu1 n=1"], "{step:?}");
            assert_eq!(img.totals().torn, 0, "{step:?}");
        } else {
            assert_eq!(got, ["cpu1 n=0"], "{step:?}");
            assert_eq!(img.totals().torn, 1, "{step:?}");
        }
        assert_eq!(img.totals().in_flight, 0, "{step:?}");
    }
}
