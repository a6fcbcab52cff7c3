//! The input is a *schedule*, executed deterministically against the real write, flush and drain
//! code through its public step hooks ([`Log::append_raw_with_hook`], [`Log::flush_with_hook`]):
//! between any two steps of a write (or of a journaled move into the main log) the schedule may run
//! another CPU's write or flush, a nested NMI write on the same CPU, a crash drain, or freeze the
//! interrupted CPU forever. Rings are tiny (32 words) so records are overwritten all the time.
//!
//! After each schedule the crashing CPU drains, the whole main log is read and checked against the
//! ground truth (which appends committed, which froze where):
//!
//! * every committed record is delivered exactly once or counted as overwritten
//!   (`delivered + overwritten == committed` per ring), in ring order, byte for byte intact;
//! * no record frozen before its commit is ever delivered, and each ring counts exactly as many torn
//!   records as writers froze on it before their commit (at most one; `NMILOG_FUZZ_LAX_TORN=1` only
//!   requires `torn <= 1`);
//! * timestamps in the main log never go backwards; the main log's own sequence is gap-free;
//! * every drain stays within `DrainReport::bound`, and a second drain moves nothing.
#![no_main]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use nmilog::ring::{Read, WriteStep};
use nmilog::{AppendError, ContextKind, FlushStep, Level, Log, MainReader, Platform, RecordBuf};

/// CPUs the schedule drives; CPU `SCHED_CPUS` is a spare that only ever crashes and drains.
const SCHED_CPUS: usize = 3;
const CPUS: usize = SCHED_CPUS + 1;
const DEPTH: usize = 3;
type L = Log<Plat, CPUS, 32, 8192, DEPTH>;

struct Plat {
    cpu: AtomicUsize,
    clock: AtomicU64,
}

impl Platform for Plat {
    fn cpu_id(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
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
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Suspended {
    Write(usize),
    Flush(usize),
}

struct Sim<'a> {
    data: &'a [u8],
    at: usize,
    log: &'a L,
    recs: Vec<Rec>,
    frozen: [bool; CPUS],
    /// Operations suspended in a hook, innermost last.
    stack: Vec<Suspended>,
    crash_cpu: Option<usize>,
    /// Set by a crash drain: every suspended operation of another CPU freezes (the crash NMI
    /// stopped it), and flushes everywhere.
    stop_all: bool,
    /// Writers frozen before their commit, per (cpu, depth).
    torn_expected: HashMap<(usize, usize), u64>,
    ops: usize,
    drains: usize,
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
    p
}

impl<'a> Sim<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn exhausted(&self) -> bool {
        self.at >= self.data.len()
    }
    fn cur(&self) -> usize {
        self.log.platform().cpu.load(Ordering::Relaxed)
    }
    fn on_cpu<R>(&mut self, c: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.cur();
        self.log.platform().cpu.store(c, Ordering::Relaxed);
        let r = f(self);
        self.log.platform().cpu.store(saved, Ordering::Relaxed);
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
        let kind = self.byte() % 8;
        if Some(c) == self.crash_cpu {
            // After its crash the crashing CPU only drains.
            if kind == 7 {
                self.crash_drain();
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
                _ => s.crash_drain(),
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
        let r = {
            let mut hook = |step: WriteStep| self.write_step(c, id, step, nest);
            log.append_raw_with_hook(Level::Info, 0, 0, &p, &mut hook)
        };
        self.stack.pop();
        self.finish_rec(id, r);
    }

    /// The hook between two steps of record `id`'s write on CPU `c`. Returns false to freeze it.
    fn write_step(&mut self, c: usize, id: usize, step: WriteStep, nest: usize) -> bool {
        if step == WriteStep::Reserved {
            // From here on the record has a sequence number in its ring.
            let ring = &self.log.cpu(c).unwrap().rings[self.recs[id].depth];
            self.recs[id].seq = Some(ring.next_seq());
        }
        if self.stop_all || self.frozen[c] {
            return self.freeze_write(c, id, step);
        }
        match self.byte() % 16 {
            // A nested NMI on this CPU.
            9 | 10 if nest < 4 => self.op_on(c, nest + 1),
            // Another CPU runs something in the middle of this write.
            11 | 12 if nest < 4 => {
                let other = (self.byte() as usize) % SCHED_CPUS;
                self.op_on(other, nest + 1);
            }
            // The CPU stops here forever.
            13 => return self.freeze_write(c, id, step),
            // A crash (on another CPU) and its drain; this CPU was stopped by the crash NMI.
            14 if nest < 4 => self.crash_drain(),
            _ => {}
        }
        if self.stop_all || self.frozen[c] {
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
            *self
                .torn_expected
                .entry((c, self.recs[id].depth))
                .or_default() += 1;
            Status::Torn
        };
        false
    }

    fn flush(&mut self, c: usize, nest: usize) {
        let log = self.log;
        self.stack.push(Suspended::Flush(c));
        {
            let mut hook = |step: FlushStep| self.flush_step(c, step, nest);
            let _ = log.flush_with_hook(&mut hook);
        }
        self.stack.pop();
    }

    fn flush_step(&mut self, c: usize, _step: FlushStep, nest: usize) -> bool {
        if !self.stop_all && !self.frozen[c] {
            match self.byte() % 16 {
                10 | 11 if nest < 4 => {
                    let other = (self.byte() as usize) % SCHED_CPUS;
                    self.op_on(other, nest + 1);
                }
                12 if nest < 4 => self.op_on(c, nest + 1), // an NMI on the flushing CPU
                13 => self.frozen[c] = true, // the owner stops forever, holding ownership
                14 if nest < 4 => self.crash_drain(),
                _ => {}
            }
        }
        if self.stop_all || self.frozen[c] {
            self.frozen[c] = true;
            return false;
        }
        true
    }

    /// Crash entry (the first time) and a drain, on the crashing CPU: one that is neither frozen nor
    /// suspended in a hook (the spare CPU if need be). After it, every suspended operation freezes
    /// (the crash NMI stopped those CPUs) and the crashing CPU only drains.
    fn crash_drain(&mut self) {
        if self.drains >= 4 {
            return;
        }
        let c = match self.crash_cpu {
            Some(c) => c,
            None => {
                let pick = (self.byte() as usize) % CPUS;
                (0..CPUS)
                    .map(|k| (pick + k) % CPUS)
                    .find(|&k| !self.frozen[k] && !self.suspended_on(k))
                    .unwrap_or(SCHED_CPUS)
            }
        };
        debug_assert!(!self.frozen[c] && !self.suspended_on(c));
        self.drains += 1;
        self.on_cpu(c, |s| {
            assert_eq!(s.log.crash_enter(), Ok(c));
            s.crash_cpu = Some(c);
            let rep = s.log.drain_on_crash();
            assert!(rep.flush.steps <= rep.bound, "{rep:?}");
        });
        if !self.stack.is_empty() {
            self.stop_all = true;
        }
    }

    fn run(&mut self) {
        while !self.exhausted() && self.ops <= 400 {
            let c = (self.byte() as usize) % SCHED_CPUS;
            self.op_on(c, 0);
            self.stop_all = false;
        }
        // The end of the world: crash (on the CPU that crashed, or a live one) and drain, twice.
        let c = self.crash_cpu.unwrap_or(SCHED_CPUS);
        self.on_cpu(c, |s| {
            assert_eq!(s.log.crash_enter(), Ok(c));
            let rep = s.log.drain_on_crash();
            assert!(rep.flush.steps <= rep.bound, "{rep:?}");
            let rep2 = s.log.drain_on_crash();
            assert!(rep2.flush.steps <= rep2.bound, "{rep2:?}");
            assert_eq!((rep2.flush.moved, rep2.flush.torn), (0, 0), "{rep2:?}");
        });
        self.check();
    }

    fn check(&self) {
        let log = self.log;
        let mut rd = MainReader::new();
        let mut buf = RecordBuf::new();
        let mut seen = vec![false; self.recs.len()];
        let mut delivered: HashMap<(usize, usize), u64> = HashMap::new();
        let mut last_seq: HashMap<(usize, usize), u64> = HashMap::new();
        let mut last_ts = 0;
        let mut next_main = 0;
        for _ in 0..100_000 {
            match rd.read(log, &mut buf) {
                Read::Record => {}
                // A main-log write frozen before its commit (a stopped flush owner) with nothing
                // written after it: the end.
                Read::InFlight | Read::Empty => break,
                Read::Overwritten { missed } => panic!("main log overwritten ({missed})"),
            }
            assert_eq!(buf.seq, next_main, "main log sequence has a gap");
            next_main += 1;
            assert!(
                buf.header.ts_ns >= last_ts,
                "timestamps go backwards: {} after {last_ts}",
                buf.header.ts_ns
            );
            last_ts = buf.header.ts_ns;
            if buf.header.facility == nmilog::record::facility::NMILOG {
                continue; // accounting
            }
            let p = buf.payload();
            assert!(p.len() >= 4, "short payload {p:?}");
            let id = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
            assert!(id < self.recs.len(), "unknown record id {id}");
            let rec = &self.recs[id];
            assert_eq!(
                p,
                &payload(id, rec.len)[..],
                "payload of record {id} differs"
            );
            assert!(!seen[id], "record {id} delivered twice");
            seen[id] = true;
            assert_eq!(
                rec.status,
                Status::Committed,
                "record {id} delivered but it was {:?}",
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
            *delivered.entry(key).or_default() += 1;
        }
        assert_eq!(rd.missed(), 0);
        let strict = std::env::var_os("NMILOG_FUZZ_LAX_TORN").is_none();
        for c in 0..CPUS {
            for d in 0..DEPTH {
                let committed = self
                    .recs
                    .iter()
                    .filter(|r| (r.cpu, r.depth) == (c, d) && r.status == Status::Committed)
                    .count() as u64;
                let cnt = log.counters(c, d).unwrap();
                let got = delivered.get(&(c, d)).copied().unwrap_or(0);
                assert_eq!(
                    got + cnt.overwritten,
                    committed,
                    "ring ({c},{d}): delivered {got} + overwritten {} != committed {committed}",
                    cnt.overwritten
                );
                let torn = self.torn_expected.get(&(c, d)).copied().unwrap_or(0);
                assert!(torn <= 1, "two writers frozen on one ring");
                assert!(cnt.torn <= 1, "ring ({c},{d}): torn {}", cnt.torn);
                if strict {
                    assert_eq!(cnt.torn, torn, "ring ({c},{d}): torn count");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let log: Box<L> = Box::new(Log::new(Plat {
        cpu: AtomicUsize::new(0),
        clock: AtomicU64::new(1),
    }));
    let mut sim = Sim {
        data,
        at: 0,
        log: &log,
        recs: Vec::new(),
        frozen: [false; CPUS],
        stack: Vec::new(),
        crash_cpu: None,
        stop_all: false,
        torn_expected: HashMap::new(),
        ops: 0,
        drains: 0,
    };
    sim.run();
});
