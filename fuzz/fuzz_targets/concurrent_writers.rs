//! The input is a *schedule*, executed deterministically against the real write, flush and drain
//! code through its public step hooks ([`Log::append_raw_with_hook`], [`Log::flush_with_hook`]) and
//! the crash drain's sink: between any two steps of a write (or of a move into the main log) the
//! schedule may run another CPU's write or flush, a nested NMI write on the same CPU, a crash drain,
//! or freeze the interrupted CPU forever. Rings are tiny (32 words) so records are overwritten all
//! the time.
//!
//! At a crash, every CPU with an operation in progress stops (it is frozen there and checks in: the
//! drain is told it is stopped) — unless it is *deaf* to the crash NMI: a deaf CPU keeps running
//! through and after the crash drain (it resumes the write or flush it was paused in, keeps
//! logging, may try to start a flush), and every drain is told it is not stopped. A drain either
//! runs to its end at once, or runs as a task of its own (a thread that runs only while the schedule
//! waits for it, so everything stays deterministic) that the schedule steps a record at a time: the
//! other CPUs resume their paused operations and log between two records it delivers. A drain task
//! may also be refused a record (its sink is full) or superseded by a nested drain on the crashing
//! CPU (a fault inside the drain).
//!
//! Checked for every drain:
//!
//! * it stays within `DrainReport::bound`, and its report agrees with what its sink received;
//! * every record it delivers is intact (byte for byte), was committed when the drain took its
//!   snapshot, comes at most once, in `(timestamp, CPU, depth)` order (so in ring order), and
//!   accounting records come last;
//! * a complete drain accounts for every record committed at its snapshot, per ring:
//!   `delivered + overwritten == committed`; each ring counts a log call frozen before its commit
//!   as torn if its CPU was told stopped, as in flight if not (`NMILOG_FUZZ_LAX_TORN=1` only
//!   requires at most one of each); nothing is lost in the main log (it never wraps here);
//! * a drain superseded by a nested one reports itself incomplete, and a drain whose sink refused
//!   a record offers nothing more — also during the drain's accounting records (the seeds
//!   `core_bug_*` found both; fixed).
//!
//! At the end the crashing CPU (or a live one) drains twice more, no CPU running any more: both
//! drains must hand over the same records, with the checks above against everything ever
//! committed. The main log is checked on its own: its sequence is gap-free, its timestamps never go
//! backwards, each record in it is intact and there once, and it holds no accounting record (the
//! drain never writes it). `NMILOG_FUZZ_STATS=1` prints what each schedule exercised.
//!
//! # Input encoding
//!
//! One byte picks a CPU (`% 3`), the next an operation on it (`% 8`: write, NMI write, flush, irq
//! write, normal-path append, crash drain; the high bits `>> 3` are the drain's variant); writes
//! take a length byte; each hook step takes one byte (`% 16`: nested NMI, another CPU's operation,
//! freeze, crash drain with variant `>> 4`). The first crash takes a byte picking the crashing CPU;
//! if its top bit is set, one more byte is the mask of deaf CPUs. A drain variant `v` of 0 runs the
//! drain to its end at once (as every drain did before deaf CPUs existed, so older seeds keep their
//! meaning); another starts a drain task and lets it deliver `v % 4` records. With a task in
//! progress, a drain variant finishes it (`v % 4 == 0`), steps it by one record (1) or by
//! `v / 4 + 1` (2), makes its sink refuse the record it offers (3, `v < 8`) or runs a nested drain
//! that supersedes it (3, `v >= 8`).
#![no_main]

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};

use libfuzzer_sys::fuzz_target;
use nmilog::ring::{Read, WriteStep};
use nmilog::{
    AppendError, ContextKind, DrainReport, FlushStep, Level, Log, MainReader, Origin, Platform,
    RecordBuf,
};

/// CPUs the schedule drives; CPU `SCHED_CPUS` is a spare that only ever crashes and drains.
const SCHED_CPUS: usize = 3;
const CPUS: usize = SCHED_CPUS + 1;
const DEPTH: usize = 3;
type L = Log<Plat, CPUS, 32, 8192, DEPTH>;

/// Drains started, at most (the final two come on top).
const MAX_DRAINS: usize = 4;

thread_local! {
    /// The CPU the calling thread plays (the schedule's thread, or a drain task's).
    static CPU: Cell<usize> = const { Cell::new(0) };
}

struct Plat {
    clock: AtomicU64,
}

impl Platform for Plat {
    fn cpu_id(&self) -> usize {
        CPU.with(|c| c.get())
    }
    fn now_ns(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }
    fn cpu_count(&self) -> usize {
        CPUS
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// The call is still running (suspended in a hook).
    Running,
    /// `Ok` or frozen after the commit: must be delivered or counted overwritten.
    Committed,
    /// Frozen before the commit: must never be delivered.
    Torn,
    /// Refused (too deep): nothing written.
    Refused,
}

struct Rec {
    cpu: usize,
    depth: usize,
    seq: Option<u64>,
    len: usize,
    status: Status,
    /// The last step of its write the hook saw.
    step: Option<WriteStep>,
}

impl Rec {
    /// Committed now: done, frozen after the commit, or paused after it.
    fn committed(&self) -> bool {
        self.status == Status::Committed
            || (self.status == Status::Running
                && matches!(self.step, Some(WriteStep::Committed | WriteStep::Published)))
    }
    /// A log call in progress (paused or frozen) whose record is not committed.
    fn uncommitted_call(&self) -> bool {
        self.status == Status::Torn || (self.status == Status::Running && !self.committed())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Suspended {
    Write(usize),
    Flush(usize),
}

/// One record a drain handed its sink.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Out {
    origin: Origin,
    seq: u64,
    ts: u64,
    cpu: usize,
    depth: usize,
    src_seq: u64,
    accounting: bool,
    payload: Vec<u8>,
}

impl Out {
    fn of(origin: Origin, r: &RecordBuf) -> Out {
        Out {
            origin,
            seq: r.seq,
            ts: r.header.ts_ns,
            cpu: r.header.cpu as usize,
            depth: r.header.context().1,
            src_seq: r.header.src_seq,
            accounting: r.header.facility == nmilog::record::facility::NMILOG,
            payload: r.payload().to_vec(),
        }
    }
    /// What two drains over the same state must agree on (an accounting record's timestamp is its
    /// drain's).
    fn comparable(&self) -> Out {
        let mut o = self.clone();
        if o.accounting {
            o.ts = 0;
        }
        o
    }
}

/// What a drain must find, fixed when it takes its snapshot.
struct Expect {
    /// Per record id: committed at the snapshot.
    committed: Vec<bool>,
    /// Per CPU: told stopped.
    stopped: [bool; CPUS],
    /// Per ring: log calls in progress whose record was not committed.
    uncommitted: HashMap<(usize, usize), u64>,
    /// The drain generation this drain is (a later drain supersedes it).
    nth: usize,
}

/// What the schedule tells a drain task blocked in its sink.
enum Go {
    Take,
    Refuse,
}

enum Ev {
    Record(Out),
    Done(DrainReport),
}

/// A drain running in a thread of its own, blocked in its sink (the schedule steps it).
struct DrainTask<'s> {
    go: mpsc::Sender<Go>,
    ev: mpsc::Receiver<Ev>,
    handle: ScopedJoinHandle<'s, ()>,
    out: Vec<Out>,
    expect: Expect,
    /// The report, once it ended.
    done: Option<DrainReport>,
}

/// Checks of known core bugs, off by default (see the module docs).
#[derive(Clone, Copy)]
struct CoreBugs {
    /// A drain superseded by a nested one while it hands over its accounting records goes on and
    /// reports itself complete.
    superseded: bool,
    /// A drain whose sink refused an accounting record offers the next one.
    refused: bool,
}

impl CoreBugs {
    fn from_env() -> Self {
        // Both were fixed; `NMILOG_FUZZ_CORE_BUGS=none` turns the checks off (to reproduce an old
        // run).
        let off = std::env::var("NMILOG_FUZZ_CORE_BUGS").is_ok_and(|v| v == "none");
        CoreBugs {
            superseded: !off,
            refused: !off,
        }
    }
}

/// What one schedule exercised (printed with `NMILOG_FUZZ_STATS=1`, to see what a corpus covers).
#[derive(Debug, Default)]
struct Stats {
    deaf_cpus: usize,
    drain_tasks: usize,
    ops_during_task: usize,
    nested_drains: usize,
    refused: usize,
    /// Writes paused across a drain that then completed.
    writes_across_drain: usize,
    /// Flushes paused across a drain that then completed, and the records they moved.
    flushes_across_drain: usize,
    moved_across_drain: u64,
    flushes_after_crash: usize,
    torn_verdicts: u64,
    in_flight_verdicts: u64,
}

struct Sim<'a, 's> {
    data: &'a [u8],
    at: usize,
    log: &'a L,
    scope: &'s Scope<'s, 'a>,
    recs: Vec<Rec>,
    /// Never runs again.
    frozen: [bool; CPUS],
    /// Told stopped (checked in after the crash NMI): frozen.
    checked_in: [bool; CPUS],
    /// Deaf to the crash NMI: keeps running, never told stopped.
    deaf: [bool; CPUS],
    /// Operations suspended in a hook, innermost last.
    stack: Vec<Suspended>,
    crash_cpu: Option<usize>,
    task: Option<DrainTask<'s>>,
    ops: usize,
    /// Drains started (their generations: 1, 2, ...).
    drains: usize,
    strict: bool,
    /// Check what known core bugs break: `NMILOG_FUZZ_CORE_BUGS` names them (`superseded`,
    /// `refused`; `all`).
    core_bugs: CoreBugs,
    stats: Stats,
}

fn payload(id: usize, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[..4].copy_from_slice(&(id as u32).to_le_bytes());
    for (k, b) in p[4..].iter_mut().enumerate() {
        *b = (id as u8)
            .wrapping_mul(29)
            .wrapping_add(k as u8)
            .wrapping_mul(7)
            ^ 0xa5;
    }
    // Never a trailing newline: the normal-context path ends a record at one and does not store it
    // (`flags::NEWLINE`, tested in tests/printk.rs), so such a payload would not come back as written.
    if let Some(last) = p.last_mut().filter(|b| **b == b'\n') {
        *last = b'.';
    }
    p
}

impl<'a, 's> Sim<'a, 's> {
    /// The record a delivered payload belongs to (its id is the first four bytes) and its ground
    /// truth; the payload must be exactly the one written for it.
    fn record_of(&self, p: &[u8]) -> (usize, &Rec) {
        assert!(p.len() >= 4, "short payload {p:?}");
        let id = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
        assert!(id < self.recs.len(), "unknown record id {id}");
        let rec = &self.recs[id];
        assert_eq!(
            p,
            &payload(id, rec.len)[..],
            "payload of record {id} differs"
        );
        (id, rec)
    }
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn exhausted(&self) -> bool {
        self.at >= self.data.len()
    }
    fn cur(&self) -> usize {
        CPU.with(|c| c.get())
    }
    fn on_cpu<R>(&mut self, c: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.cur();
        CPU.with(|x| x.set(c));
        let r = f(self);
        CPU.with(|x| x.set(saved));
        r
    }
    fn suspended_on(&self, c: usize) -> bool {
        self.stack.iter().any(|s| match *s {
            Suspended::Write(id) => self.recs[id].cpu == c,
            Suspended::Flush(fc) => fc == c,
        })
    }

    /// One operation on CPU `c` (which must not be frozen). If `c` is suspended in a hook, the
    /// operation runs as an NMI that interrupted it.
    fn op_on(&mut self, c: usize, nest: usize) {
        if self.frozen[c] || self.ops > 400 {
            return;
        }
        self.ops += 1;
        self.stats.ops_during_task += usize::from(self.task.is_some());
        let b = self.byte();
        let (kind, variant) = (b % 8, b >> 3);
        if Some(c) == self.crash_cpu {
            // After its crash the crashing CPU only drains.
            if kind == 7 {
                self.crash_drain(variant);
            }
            return;
        }
        self.on_cpu(c, |s| {
            let nmi = s.suspended_on(c) || kind == 3;
            let _g = nmi.then(|| s.log.enter(ContextKind::Nmi));
            match kind {
                0..=3 => s.write(c, nest),
                4 => s.flush(c, nest),
                5 => {
                    let _irq = s.log.enter(ContextKind::Irq);
                    s.write(c, nest)
                }
                6 => {
                    // The normal path: append, then an opportunistic flush (no hooks).
                    let id = s.new_rec(c);
                    let p = payload(id, s.recs[id].len);
                    let r = s.log.append(Level::Info, 0, 0, &p);
                    s.finish_rec(id, r);
                }
                _ => s.crash_drain(variant),
            }
        });
    }

    fn new_rec(&mut self, c: usize) -> usize {
        let depth = self.log.context().map_or(0, |(_, d)| d);
        let len = 4 + (self.byte() % 45) as usize;
        self.recs.push(Rec {
            cpu: c,
            depth,
            seq: None,
            len,
            status: Status::Running,
            step: None,
        });
        self.recs.len() - 1
    }

    fn finish_rec(&mut self, id: usize, r: Result<u64, AppendError>) {
        let rec = &mut self.recs[id];
        match r {
            Ok(seq) => {
                rec.seq = Some(seq);
                rec.status = Status::Committed;
            }
            Err(AppendError::Frozen) => {} // status set by the hook
            Err(AppendError::TooDeep) => rec.status = Status::Refused,
            Err(e) => panic!("append on cpu {} refused: {e:?}", rec.cpu),
        }
    }

    fn write(&mut self, c: usize, nest: usize) {
        let id = self.new_rec(c);
        let p = payload(id, self.recs[id].len);
        let log = self.log;
        self.stack.push(Suspended::Write(id));
        let drains = self.drains;
        let r = {
            let mut hook = |step: WriteStep| self.write_step(c, id, step, nest);
            log.append_raw_with_hook(Level::Info, 0, 0, &p, &mut hook)
        };
        self.stack.pop();
        self.stats.writes_across_drain += usize::from(r.is_ok() && self.drains > drains);
        self.finish_rec(id, r);
    }

    /// The hook between two steps of record `id`'s write on CPU `c`. Returns false to freeze it.
    fn write_step(&mut self, c: usize, id: usize, step: WriteStep, nest: usize) -> bool {
        self.recs[id].step = Some(step);
        if step == WriteStep::Reserved {
            // From here on the record has a sequence number in its ring.
            let ring = &self.log.cpu(c).unwrap().rings[self.recs[id].depth];
            self.recs[id].seq = Some(ring.next_seq());
        }
        if self.frozen[c] {
            return self.freeze_write(c, id, step);
        }
        let b = self.byte();
        match b % 16 {
            // A nested NMI on this CPU.
            9 | 10 if nest < 4 => self.op_on(c, nest + 1),
            // Another CPU runs something in the middle of this write.
            11 | 12 if nest < 4 => {
                let other = (self.byte() as usize) % SCHED_CPUS;
                self.op_on(other, nest + 1);
            }
            // The CPU stops here forever.
            13 => return self.freeze_write(c, id, step),
            // A crash (on another CPU) and its drain, or a step of a drain in progress.
            14 if nest < 4 => self.crash_drain(b >> 4),
            _ => {}
        }
        if self.frozen[c] {
            return self.freeze_write(c, id, step);
        }
        true
    }

    fn freeze_write(&mut self, c: usize, id: usize, step: WriteStep) -> bool {
        self.frozen[c] = true;
        let committed = matches!(step, WriteStep::Committed | WriteStep::Published);
        self.recs[id].status = if committed {
            Status::Committed
        } else {
            Status::Torn
        };
        false
    }

    fn flush(&mut self, c: usize, nest: usize) {
        let log = self.log;
        self.stack.push(Suspended::Flush(c));
        let crashed_before = self.crash_cpu.is_some();
        let drains = self.drains;
        let r = {
            let mut hook = |step: FlushStep| self.flush_step(c, step, nest);
            log.flush_with_hook(&mut hook)
        };
        if crashed_before {
            // A CPU that did not stop tries to start a flush after the crash: refused.
            assert!(r.is_none(), "a flush ran after the crash: {r:?}");
            self.stats.flushes_after_crash += 1;
        } else if let (Some(r), true) = (r, self.drains > drains) {
            self.stats.flushes_across_drain += 1;
            self.stats.moved_across_drain += r.moved;
        }
        self.stack.pop();
    }

    fn flush_step(&mut self, c: usize, _step: FlushStep, nest: usize) -> bool {
        if !self.frozen[c] {
            let b = self.byte();
            match b % 16 {
                10 | 11 if nest < 4 => {
                    let other = (self.byte() as usize) % SCHED_CPUS;
                    self.op_on(other, nest + 1);
                }
                12 if nest < 4 => self.op_on(c, nest + 1), // an NMI on the flushing CPU
                13 => self.frozen[c] = true, // the owner stops forever, holding ownership
                14 if nest < 4 => self.crash_drain(b >> 4),
                _ => {}
            }
        }
        !self.frozen[c]
    }

    /// A crash drain, or, with a drain task in progress, a step of it (see the module docs for the
    /// variants).
    fn crash_drain(&mut self, variant: u8) {
        if self.task.is_some() {
            match (variant % 4, variant >> 2) {
                (0, _) => self.task_finish(),
                (1, _) => self.task_step(1),
                (2, n) => self.task_step(usize::from(n) + 1),
                (3, 0 | 1) => self.task_refuse(),
                (3, _) if self.drains < MAX_DRAINS => self.nested_drain(),
                (3, _) => self.task_finish(),
                _ => unreachable!(),
            }
            return;
        }
        if self.drains >= MAX_DRAINS {
            return;
        }
        let c = self.enter_crash();
        if variant == 0 {
            let expect = self.stop_for_drain(c, false);
            let (rep, out) = self.on_cpu(c, |s| s.drain_now(&expect.stopped));
            self.check_drain(&rep, &out, &expect, true);
        } else {
            self.task_start(c);
            self.task_step(usize::from(variant % 4));
        }
    }

    /// The crashing CPU (the first time: crash entry on one that is neither frozen nor suspended
    /// in a hook, the spare CPU if need be, and the choice of the deaf CPUs).
    fn enter_crash(&mut self) -> usize {
        if let Some(c) = self.crash_cpu {
            return c;
        }
        let pick = self.byte();
        let c = (0..CPUS)
            .map(|k| (pick as usize + k) % CPUS)
            .find(|&k| !self.frozen[k] && !self.suspended_on(k))
            .unwrap_or(SCHED_CPUS);
        assert!(!self.frozen[c] && !self.suspended_on(c));
        if pick & 0x80 != 0 {
            let mask = self.byte();
            for k in 0..CPUS {
                self.deaf[k] = k != c && mask & (1 << k) != 0;
            }
            self.stats.deaf_cpus = self.deaf.iter().filter(|&&d| d).count();
        }
        self.on_cpu(c, |s| assert_eq!(s.log.crash_enter(), Ok(c)));
        self.crash_cpu = Some(c);
        c
    }

    /// The crash NMI reaches every CPU: one that is not deaf and is in the middle of something
    /// (or frozen) stops there and checks in; an idle one goes on (it is not told stopped). Returns
    /// what the drain about to run must find. `last`: no CPU runs again after this drain.
    fn stop_for_drain(&mut self, crash: usize, last: bool) -> Expect {
        let mut stopped = [false; CPUS];
        for (c, stopped) in stopped.iter_mut().enumerate() {
            if c != crash && !self.deaf[c] && (self.frozen[c] || self.suspended_on(c)) {
                self.frozen[c] = true;
                self.checked_in[c] = true;
            }
            *stopped = c == crash || self.checked_in[c] || (last && !self.frozen[c]);
        }
        self.drains += 1;
        let mut uncommitted: HashMap<(usize, usize), u64> = HashMap::new();
        for r in &self.recs {
            if r.uncommitted_call() {
                *uncommitted.entry((r.cpu, r.depth)).or_default() += 1;
            }
        }
        Expect {
            committed: self.recs.iter().map(Rec::committed).collect(),
            stopped,
            uncommitted,
            nth: self.drains,
        }
    }

    /// A drain to its end, on the calling (crashing) CPU.
    fn drain_now(&self, stopped: &[bool; CPUS]) -> (DrainReport, Vec<Out>) {
        let mut out = Vec::new();
        let rep = self
            .log
            .drain_on_crash(&|c| stopped[c], &mut |o: Origin, r: &RecordBuf| {
                out.push(Out::of(o, r));
                true
            })
            .expect("the crashing CPU drains");
        (rep, out)
    }

    /// Starts a drain task on the crashing CPU `c`: it takes its snapshot and blocks in its sink at
    /// the first record (or ends).
    fn task_start(&mut self, c: usize) {
        self.stats.drain_tasks += 1;
        let expect = self.stop_for_drain(c, false);
        let stopped = expect.stopped;
        let (go_tx, go_rx) = mpsc::channel::<Go>();
        let (ev_tx, ev_rx) = mpsc::channel::<Ev>();
        let log = self.log;
        let handle = self.scope.spawn(move || {
            CPU.with(|x| x.set(c));
            let rep = log
                .drain_on_crash(&|k| stopped[k], &mut |o: Origin, r: &RecordBuf| {
                    if ev_tx.send(Ev::Record(Out::of(o, r))).is_err() {
                        return false;
                    }
                    matches!(go_rx.recv(), Ok(Go::Take))
                })
                .expect("the crashing CPU drains");
            let _ = ev_tx.send(Ev::Done(rep));
        });
        self.task = Some(DrainTask {
            go: go_tx,
            ev: ev_rx,
            handle,
            out: Vec::new(),
            expect,
            done: None,
        });
        self.task_wait();
    }

    /// Waits for the task's next event (it runs meanwhile; the schedule does not).
    fn task_wait(&mut self) {
        let t = self.task.as_mut().unwrap();
        match t.ev.recv() {
            Ok(Ev::Record(o)) => t.out.push(o),
            Ok(Ev::Done(rep)) => t.done = Some(rep),
            Err(_) => {
                let t = self.task.take().unwrap();
                if let Err(e) = t.handle.join() {
                    std::panic::resume_unwind(e);
                }
                unreachable!("the drain task ended without a report");
            }
        }
        if self.task.as_ref().unwrap().done.is_some() {
            self.task_end();
        }
    }

    fn task_send(&mut self, go: Go) {
        self.task.as_ref().unwrap().go.send(go).unwrap();
        self.task_wait();
    }

    /// Lets the task deliver up to `n` more records.
    fn task_step(&mut self, n: usize) {
        for _ in 0..n {
            if self.task.is_none() {
                return;
            }
            self.task_send(Go::Take);
        }
    }

    fn task_finish(&mut self) {
        while self.task.is_some() {
            self.task_send(Go::Take);
        }
    }

    /// The task's sink is full: it refuses the record it is offered, and the drain must end there
    /// (offer nothing more).
    fn task_refuse(&mut self) {
        if self.task.is_none() {
            return;
        }
        self.stats.refused += 1;
        self.task_send(Go::Refuse);
        if let (Some(t), true) = (&self.task, self.core_bugs.refused) {
            panic!(
                "the drain offered a record after its sink refused one: {:?}",
                t.out.last()
            );
        }
    }

    /// A nested crash on the crashing CPU while its drain task is blocked in its sink: a drain from
    /// scratch, to its end; the task then stops at its next step.
    fn nested_drain(&mut self) {
        self.stats.nested_drains += 1;
        let c = self.crash_cpu.unwrap();
        let expect = self.stop_for_drain(c, false);
        let (rep, out) = self.on_cpu(c, |s| s.drain_now(&expect.stopped));
        self.check_drain(&rep, &out, &expect, true);
    }

    fn task_end(&mut self) {
        let t = self.task.take().unwrap();
        t.handle.join().unwrap();
        let rep = t.done.unwrap();
        let superseded = self.drains != t.expect.nth;
        if superseded && self.core_bugs.superseded {
            // Known core bug: a drain superseded while it hands over its accounting records goes
            // on (with the nested drain's counts) and reports itself complete.
            assert!(
                !rep.complete,
                "a superseded drain reports complete: {rep:?}; it delivered {:?}",
                t.out.iter().map(|o| o.origin).collect::<Vec<_>>()
            );
        }
        self.check_drain(&rep, &t.out, &t.expect, !superseded);
    }

    /// The checks every drain passes (see the module docs). `current`: no later drain started
    /// (the counters are this drain's).
    fn check_drain(&mut self, rep: &DrainReport, out: &[Out], expect: &Expect, current: bool) {
        assert!(rep.steps <= rep.bound, "{rep:?}");
        assert_eq!(rep.records, out.len() as u64, "{rep:?}");
        let count = |f: fn(&Origin) -> bool| out.iter().filter(|o| f(&o.origin)).count() as u64;
        assert_eq!(rep.from_main, count(|o| matches!(o, Origin::Main { .. })));
        assert_eq!(rep.from_rings, count(|o| matches!(o, Origin::Ring { .. })));
        assert_eq!(rep.accounting_records, count(|o| *o == Origin::Accounting));
        if current {
            let not_stopped = (0..CPUS)
                .filter(|&c| Some(c) != self.crash_cpu && !expect.stopped[c])
                .count() as u64;
            assert_eq!(rep.not_stopped, not_stopped, "{rep:?}");
        }
        let mut seen = vec![false; self.recs.len()];
        let mut delivered: HashMap<(usize, usize), u64> = HashMap::new();
        let mut last = None;
        let mut last_main = None;
        let mut accounting = false;
        for o in out {
            assert_eq!(o.accounting, o.origin == Origin::Accounting, "{o:?}");
            if o.accounting {
                accounting = true;
                continue;
            }
            assert!(!accounting, "a record after the accounting records");
            match o.origin {
                Origin::Main { seq } => {
                    assert!(last_main < Some(seq), "main-log records out of order");
                    last_main = Some(seq);
                }
                Origin::Ring { cpu, depth } => assert_eq!((cpu, depth), (o.cpu, o.depth)),
                Origin::Accounting => unreachable!(),
            }
            // Timestamp order; at equal timestamps the main log's records first (in main-log
            // order), then the rings' by (cpu, depth), each ring in its own order.
            let key = match o.origin {
                Origin::Main { seq } => (o.ts, 0, 0, 0, seq),
                _ => (o.ts, 1, o.cpu, o.depth, o.src_seq),
            };
            assert!(last < Some(key), "out of order: {key:?} after {last:?}");
            last = Some(key);
            let (id, rec) = self.record_of(&o.payload);
            assert!(!seen[id], "record {id} delivered twice");
            seen[id] = true;
            assert!(
                expect.committed.get(id).copied().unwrap_or(false),
                "record {id} delivered but it was not committed at the snapshot ({:?})",
                rec.status
            );
            assert_eq!((o.cpu, o.depth), (rec.cpu, rec.depth), "record {id}");
            assert_eq!(Some(o.src_seq), rec.seq, "record {id}");
            *delivered.entry((rec.cpu, rec.depth)).or_default() += 1;
        }
        if !(rep.complete && current) {
            return;
        }
        assert_eq!(rep.main_lost, 0, "the main log never wraps here: {rep:?}");
        for c in 0..CPUS {
            for d in 0..DEPTH {
                let committed = self
                    .recs
                    .iter()
                    .zip(&expect.committed)
                    .filter(|(r, &k)| k && (r.cpu, r.depth) == (c, d))
                    .count() as u64;
                let cnt = self.log.counters(c, d).unwrap();
                let got = delivered.get(&(c, d)).copied().unwrap_or(0);
                assert_eq!(
                    got + cnt.overwritten,
                    committed,
                    "ring ({c},{d}): delivered {got} + overwritten {} != committed {committed}",
                    cnt.overwritten
                );
                let calls = expect.uncommitted.get(&(c, d)).copied().unwrap_or(0);
                assert!(calls <= 1, "two writers in progress on one ring");
                let (torn, in_flight) = if expect.stopped[c] {
                    (calls, 0)
                } else {
                    (0, calls)
                };
                assert!(
                    cnt.torn <= 1 && cnt.in_flight <= 1,
                    "ring ({c},{d}): {cnt:?}"
                );
                self.stats.torn_verdicts += cnt.torn;
                self.stats.in_flight_verdicts += cnt.in_flight;
                if self.strict {
                    assert_eq!(
                        (cnt.torn, cnt.in_flight),
                        (torn, in_flight),
                        "ring ({c},{d}): torn, in flight"
                    );
                }
            }
        }
    }

    fn run(&mut self) {
        while !self.exhausted() && self.ops <= 400 {
            let c = (self.byte() as usize) % SCHED_CPUS;
            self.op_on(c, 0);
        }
        // A drain task still in progress delivers the rest.
        self.task_finish();
        // The end of the world: crash (on the CPU that crashed, or a live one) and drain, twice;
        // no CPU runs again.
        let c = match self.crash_cpu {
            Some(c) => c,
            None => {
                self.on_cpu(SCHED_CPUS, |s| {
                    assert_eq!(s.log.crash_enter(), Ok(SCHED_CPUS))
                });
                self.crash_cpu = Some(SCHED_CPUS);
                SCHED_CPUS
            }
        };
        let expect = self.stop_for_drain(c, true);
        let (rep, out) = self.on_cpu(c, |s| s.drain_now(&expect.stopped));
        assert!(rep.complete, "{rep:?}");
        self.check_drain(&rep, &out, &expect, true);
        let (rep2, out2) = self.on_cpu(c, |s| s.drain_now(&expect.stopped));
        assert!(rep2.complete, "{rep2:?}");
        assert_eq!(
            out.iter().map(Out::comparable).collect::<Vec<_>>(),
            out2.iter().map(Out::comparable).collect::<Vec<_>>(),
            "a second drain differs"
        );
        self.check_drain(&rep2, &out2, &expect, true);
        self.check_main();
        if std::env::var_os("NMILOG_FUZZ_STATS").is_some() {
            eprintln!("nmilog-fuzz-stats {:?}", self.stats);
        }
    }

    /// The main log, written by the flushes only.
    fn check_main(&self) {
        let log = self.log;
        let mut rd = MainReader::new();
        let mut buf = RecordBuf::new();
        let mut seen = vec![false; self.recs.len()];
        let mut last_seq: HashMap<(usize, usize), u64> = HashMap::new();
        let mut last_ts = 0;
        for next_main in 0..100_000 {
            match rd.read(log, &mut buf) {
                Read::Record => {}
                // A main-log write frozen before its commit (a stopped flush owner) with nothing
                // written after it: the end.
                Read::InFlight | Read::Empty => break,
                Read::Overwritten { missed } => panic!("main log overwritten ({missed})"),
            }
            assert_eq!(buf.seq, next_main, "main log sequence has a gap");
            assert!(
                buf.header.ts_ns >= last_ts,
                "timestamps go backwards: {} after {last_ts}",
                buf.header.ts_ns
            );
            last_ts = buf.header.ts_ns;
            assert_ne!(
                buf.header.facility,
                nmilog::record::facility::NMILOG,
                "accounting in the main log: the drain wrote it"
            );
            let (id, rec) = self.record_of(buf.payload());
            assert!(!seen[id], "record {id} twice in the main log");
            seen[id] = true;
            assert_eq!(
                rec.status,
                Status::Committed,
                "record {id} moved but {:?}",
                rec.status
            );
            let (_, d) = buf.header.context();
            assert_eq!((buf.header.cpu as usize, d), (rec.cpu, rec.depth));
            assert_eq!(Some(buf.header.src_seq), rec.seq, "record {id}");
            let key = (rec.cpu, rec.depth);
            if let Some(&l) = last_seq.get(&key) {
                assert!(buf.header.src_seq > l, "ring {key:?} out of order");
            }
            last_seq.insert(key, buf.header.src_seq);
        }
        assert_eq!(rd.missed(), 0);
    }
}

fuzz_target!(|data: &[u8]| {
    let log: Box<L> = Box::new(Log::new(Plat {
        clock: AtomicU64::new(1),
    }));
    std::thread::scope(|scope| {
        CPU.with(|x| x.set(0));
        let mut sim = Sim {
            data,
            at: 0,
            log: &log,
            scope,
            recs: Vec::new(),
            frozen: [false; CPUS],
            checked_in: [false; CPUS],
            deaf: [false; CPUS],
            stack: Vec::new(),
            crash_cpu: None,
            task: None,
            ops: 0,
            drains: 0,
            strict: std::env::var_os("NMILOG_FUZZ_LAX_TORN").is_none(),
            core_bugs: CoreBugs::from_env(),
            stats: Stats::default(),
        };
        sim.run();
    });
});
