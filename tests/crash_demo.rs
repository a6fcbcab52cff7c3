//! Integration tests of the main demo, `examples/crash`: the crash-shutdown sequence on the simulated
//! SMP machine, over a matrix of scenarios, checked from its `--json` output alone.
//!
//! For every scenario: per CPU, the recovered task (and irq) records are exactly the newest ones it
//! committed, in order, none twice, contiguous when nothing was overwritten, and recovered +
//! overwritten = committed; the dropped total adds up; the torn count equals the log calls frozen
//! mid-write; every CPU that heard the NMI has its "stopped" record; the crashing CPU's
//! "IPI complete" and "kexec: Starting switchover sequence." are there; timestamps never go
//! backwards; the mask path is the one the scenario calls for; no deadlock. The locked baseline
//! must deadlock and exit with 2.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;

// ------------------------------------------------------------------------------------------------
// A minimal JSON reader (the root package has no JSON dependency).

#[derive(Clone, Debug, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(BTreeMap<String, J>),
}

impl J {
    fn get(&self, k: &str) -> &J {
        match self {
            J::Obj(m) => m
                .get(k)
                .unwrap_or_else(|| panic!("missing key {k} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }
    fn u(&self) -> u64 {
        match self {
            J::Num(n) => *n as u64,
            _ => panic!("not a number: {self:?}"),
        }
    }
    fn f(&self) -> f64 {
        match self {
            J::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
    fn s(&self) -> &str {
        match self {
            J::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    fn arr(&self) -> &[J] {
        match self {
            J::Arr(v) => v,
            _ => panic!("not an array: {self:?}"),
        }
    }
    fn us(&self) -> Vec<u64> {
        self.arr().iter().map(J::u).collect()
    }
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && (self.b[self.i] as char).is_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(self.b.get(self.i), Some(&c), "JSON: expected {}", c as char);
        self.i += 1;
    }
    /// The elements of an object or array up to `close`, its opening bracket at the cursor, each
    /// parsed by `item`.
    fn seq(&mut self, close: u8, mut item: impl FnMut(&mut Self)) {
        self.i += 1;
        self.ws();
        if self.b[self.i] == close {
            self.i += 1;
            return;
        }
        loop {
            item(self);
            self.ws();
            if self.b[self.i] == b',' {
                self.i += 1;
            } else {
                self.eat(close);
                return;
            }
        }
    }
    /// The literal `w` at the cursor, as `v`.
    fn word(&mut self, w: &str, v: J) -> J {
        assert!(
            self.b[self.i..].starts_with(w.as_bytes()),
            "JSON: expected {w}"
        );
        self.i += w.len();
        v
    }
    fn val(&mut self) -> J {
        self.ws();
        match self.b[self.i] {
            b'{' => {
                let mut m = BTreeMap::new();
                self.seq(b'}', |p| {
                    let k = match p.val() {
                        J::Str(s) => s,
                        other => panic!("JSON key {other:?}"),
                    };
                    p.eat(b':');
                    let v = p.val();
                    m.insert(k, v);
                });
                J::Obj(m)
            }
            b'[' => {
                let mut v = Vec::new();
                self.seq(b']', |p| v.push(p.val()));
                J::Arr(v)
            }
            b'"' => {
                self.i += 1;
                let mut s = String::new();
                loop {
                    let c = self.b[self.i];
                    self.i += 1;
                    match c {
                        b'"' => return J::Str(s),
                        b'\\' => {
                            let e = self.b[self.i];
                            self.i += 1;
                            match e {
                                b'n' => s.push('\n'),
                                b't' => s.push('\t'),
                                b'r' => s.push('\r'),
                                b'u' => {
                                    let h =
                                        std::str::from_utf8(&self.b[self.i..self.i + 4]).unwrap();
                                    s.push(
                                        char::from_u32(u32::from_str_radix(h, 16).unwrap())
                                            .unwrap(),
                                    );
                                    self.i += 4;
                                }
                                other => s.push(other as char),
                            }
                        }
                        _ => {
                            // Copy a whole UTF-8 sequence.
                            let start = self.i - 1;
                            let mut end = self.i;
                            while end < self.b.len() && (self.b[end] & 0xc0) == 0x80 {
                                end += 1;
                            }
                            s.push_str(std::str::from_utf8(&self.b[start..end]).unwrap());
                            self.i = end;
                        }
                    }
                }
            }
            b't' => self.word("true", J::Bool(true)),
            b'f' => self.word("false", J::Bool(false)),
            b'n' => self.word("null", J::Null),
            _ => {
                let start = self.i;
                while self.i < self.b.len() && b"+-0123456789.eE".contains(&self.b[self.i]) {
                    self.i += 1;
                }
                J::Num(
                    std::str::from_utf8(&self.b[start..self.i])
                        .unwrap()
                        .parse()
                        .unwrap(),
                )
            }
        }
    }
}

fn json(line: &str) -> J {
    let mut p = P {
        b: line.as_bytes(),
        i: 0,
    };
    p.val()
}

// ------------------------------------------------------------------------------------------------
// Running the example.

/// One scenario at a time: each run is a whole simulated machine on the host's cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(args: &[&str]) -> (i32, String, String) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO"))
        .args(["run", "--release", "--quiet", "--example", "crash", "--"])
        .args(args)
        .output()
        .expect("cargo run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Rec {
    seq: u64,
    ts: u64,
    cpu: usize,
    ctx: String,
    text: String,
}

/// What a scenario must show.
struct Expect<'a> {
    mask_path: &'a str,
    frozen: &'a [usize],
    deaf: &'a [usize],
    crash_cpu: usize,
    crash_ctx: &'a str,
    overwrites: bool,
}

const DEFAULT: Expect<'static> = Expect {
    mask_path: "rtas-takeover",
    frozen: &[2],
    deaf: &[],
    crash_cpu: 0,
    crash_ctx: "task",
    overwrites: false,
};

fn parse_sim(text: &str) -> Option<(usize, bool, u64)> {
    let rest = text.strip_prefix("cpu=")?;
    let (c, rest) = rest.split_once(' ')?;
    let (irq, rest) = match rest.strip_prefix("irq ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    Some((c.parse().ok()?, irq, rest.strip_prefix("n=")?.parse().ok()?))
}

/// What a `--json` run of a scenario printed: its records, its summary, and a context string for
/// assertion messages (the scenario and its stderr).
struct Run {
    recs: Vec<Rec>,
    summary: J,
    ctx: String,
}

/// Runs the scenario `args` (whitespace-separated) with `--json` and `extra`; it must exit with 0
/// and print one JSON object per record (each with a level from 0 to 7) and a summary line. Checks
/// the log order: sequence numbers increase, timestamps never go backwards.
fn run_json(args: &str, extra: &[&str]) -> Run {
    let mut full = vec!["--json"];
    full.extend(args.split_whitespace());
    full.extend_from_slice(extra);
    let (code, stdout, stderr) = run(&full);
    let ctx = format!("scenario {args:?}\nstderr:\n{stderr}");
    assert_eq!(code, 0, "exit code; {ctx}\nstdout tail:\n{}", tail(&stdout));
    let mut recs = Vec::new();
    let mut summary = None;
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v = json(line);
        if let J::Obj(m) = &v {
            if let Some(s) = m.get("summary") {
                summary = Some(s.clone());
                continue;
            }
        }
        recs.push(Rec {
            seq: v.get("seq").u(),
            ts: v.get("ts_ns").u(),
            cpu: v.get("cpu").u() as usize,
            ctx: v.get("ctx").s().to_string(),
            text: v.get("text").s().to_string(),
        });
        let level = v.get("level").u();
        assert!(level <= 7, "level {level}; {ctx}");
    }
    let summary = summary.unwrap_or_else(|| panic!("no summary line; {ctx}"));
    for w in recs.windows(2) {
        assert!(w[1].seq > w[0].seq, "seq order at {}; {ctx}", w[1].seq);
        assert!(
            w[1].ts >= w[0].ts,
            "timestamp goes backwards at seq {}; {ctx}",
            w[1].seq
        );
    }
    Run { recs, summary, ctx }
}

fn check(args: &str, e: &Expect<'_>) -> J {
    // Every CPU answers the NMI in these scenarios, so the bounded wait ends as soon as they have; a
    // long bound keeps a starved CI host (a stopped CPU's thread not scheduled for a second) from
    // turning into a "did not answer".
    let long_wait: &[&str] = if e.deaf.is_empty() && !args.contains("--ack-timeout-ms") {
        &["--ack-timeout-ms", "20000"]
    } else {
        &[]
    };
    let Run {
        recs,
        summary: s,
        ctx,
    } = run_json(args, long_wait);
    let ncpu = s.get("cpus").u() as usize;
    assert_eq!(s.get("deadlock"), &J::Bool(false), "{ctx}");
    assert_eq!(s.get("mask_path").s(), e.mask_path, "mask path; {ctx}");
    assert_eq!(
        s.get("recovered").u() as usize,
        recs.len(),
        "recovered; {ctx}"
    );
    assert_eq!(s.get("papr_violations").u(), 0, "PAPR violations; {ctx}");
    assert_eq!(s.get("crash_cpu").u() as usize, e.crash_cpu, "{ctx}");
    assert_eq!(s.get("crash_ctx").s(), e.crash_ctx, "{ctx}");

    // Per-CPU records against the ground truth.
    let committed = s.get("committed_per_cpu").us();
    let irq_committed = s.get("irq_committed_per_cpu").us();
    let ow: Vec<Vec<u64>> = s
        .get("overwritten_per_cpu")
        .arr()
        .iter()
        .map(J::us)
        .collect();
    let torn: Vec<Vec<u64>> = s.get("torn_per_cpu").arr().iter().map(J::us).collect();
    let refused: Vec<Vec<u64>> = s.get("refused_per_cpu").arr().iter().map(J::us).collect();
    assert_eq!(committed.len(), ncpu, "{ctx}");
    let mut task: Vec<Vec<u64>> = vec![vec![]; ncpu];
    let mut irq: Vec<Vec<u64>> = vec![vec![]; ncpu];
    for r in &recs {
        if let Some((c, is_irq, n)) = parse_sim(&r.text) {
            assert_eq!(
                c, r.cpu,
                "record of CPU {c} written by CPU {}; {ctx}",
                r.cpu
            );
            assert_eq!(r.ctx, if is_irq { "irq" } else { "task" }, "{ctx}");
            if is_irq {
                irq[c].push(n);
            } else {
                task[c].push(n);
            }
        }
    }
    let unanswered = s.get("ack_timeout_cpus").us();
    let mut any_ow = false;
    for c in 0..ncpu {
        if unanswered.contains(&(c as u64)) && !e.deaf.contains(&c) {
            continue; // no ground truth for a CPU that neither stopped nor hung on purpose
        }
        for (what, got, comm, o) in [
            ("task", &task[c], committed[c], ow[c][0]),
            ("irq", &irq[c], irq_committed[c], ow[c][1]),
        ] {
            any_ow |= o > 0;
            assert!(
                got.windows(2).all(|w| w[1] > w[0]),
                "CPU {c}: {what} records out of order or twice; {ctx}"
            );
            assert_eq!(
                got.len() as u64 + o,
                comm,
                "CPU {c}: {what}: recovered {} + overwritten {o} != committed {comm}; {ctx}",
                got.len()
            );
            if let Some(&last) = got.last() {
                assert_eq!(
                    last + 1,
                    comm,
                    "CPU {c}: newest {what} record missing; {ctx}"
                );
            }
            if o == 0 {
                let want: Vec<u64> = (0..comm).collect();
                assert_eq!(
                    got, &want,
                    "CPU {c}: {what} records not exactly 0..{comm}; {ctx}"
                );
            }
        }
    }
    assert_eq!(
        any_ow, e.overwrites,
        "overwrites expected: {}; {ctx}",
        e.overwrites
    );

    // Loss accounting adds up.
    let sum = |v: &Vec<Vec<u64>>| v.iter().flatten().sum::<u64>();
    assert_eq!(s.get("overwritten").u(), sum(&ow), "{ctx}");
    assert_eq!(s.get("refused").u(), sum(&refused), "{ctx}");
    assert_eq!(
        s.get("main_log_lost").u(),
        0,
        "the main log must not wrap here; {ctx}"
    );
    assert_eq!(s.get("dropped").u(), sum(&ow) + sum(&refused), "{ctx}");
    assert_eq!(s.get("torn").u(), sum(&torn), "{ctx}");

    // Torn = log calls frozen mid-write, on exactly the CPUs that froze mid-write.
    let mid = s.get("frozen_mid_write").us();
    assert_eq!(
        s.get("torn").u(),
        s.get("frozen_mid_write_calls").u(),
        "{ctx}"
    );
    for (c, per_depth) in torn.iter().enumerate() {
        let t: u64 = per_depth.iter().sum();
        assert_eq!(
            t > 0,
            mid.contains(&(c as u64)),
            "CPU {c} torn {t} vs frozen_mid_write {mid:?}; {ctx}"
        );
    }
    for &f in e.frozen {
        assert!(
            mid.contains(&(f as u64)),
            "CPU {f} should be frozen mid-write: {mid:?}; {ctx}"
        );
    }

    // The sequence's records.
    let deaf: Vec<u64> = e.deaf.iter().map(|&c| c as u64).collect();
    assert_eq!(unanswered, deaf, "unanswered CPUs; {ctx}");
    for c in 0..ncpu {
        if c == e.crash_cpu || e.deaf.contains(&c) {
            continue;
        }
        let prefix = format!("CPU {c} stopped");
        assert!(
            recs.iter()
                .any(|r| r.cpu == c && r.ctx == "nmi" && r.text.starts_with(&prefix)),
            "no \"{prefix}\" record; {ctx}"
        );
    }
    for c in e.deaf {
        assert!(
            recs.iter().any(|r| r.cpu == e.crash_cpu
                && r.text
                    .starts_with(&format!("crash: CPU {c} did not answer"))),
            "no timeout record for deaf CPU {c}; {ctx}"
        );
    }
    for text in ["IPI complete", "kexec: Starting switchover sequence."] {
        assert!(
            recs.iter()
                .any(|r| r.cpu == e.crash_cpu && r.ctx == "crash" && r.text == text),
            "no \"{text}\" from the crashing CPU; {ctx}"
        );
    }
    let path = format!("[mask_path={}]", e.mask_path);
    assert!(
        recs.iter()
            .any(|r| r.cpu == e.crash_cpu && r.text.ends_with(&path)),
        "no masking record {path}; {ctx}"
    );
    assert_eq!(
        s.get("verified"),
        &J::Bool(true),
        "capture stage's own check; {ctx}"
    );
    s
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

// ------------------------------------------------------------------------------------------------
// The matrix.

#[test]
fn default_scenario() {
    check("", &DEFAULT);
}

#[test]
fn frozen_in_log() {
    check(
        "--freeze-in-log 1,2 --rtas-held-by none --seed 7",
        &Expect {
            mask_path: "rtas",
            frozen: &[1, 2],
            ..DEFAULT
        },
    );
}

#[test]
fn holding_rtas_outside_the_call() {
    check(
        "--freeze-in-log none --rtas-held-by 1",
        &Expect {
            frozen: &[],
            ..DEFAULT
        },
    );
}

#[test]
fn holding_rtas_inside_the_call_masks_at_the_presenter() {
    check(
        "--rtas-in-call",
        &Expect {
            mask_path: "presenter",
            ..DEFAULT
        },
    );
}

#[test]
fn deaf_cpu() {
    check(
        "--deaf 1 --ack-timeout-ms 500",
        &Expect {
            deaf: &[1],
            ..DEFAULT
        },
    );
}

#[test]
fn deaf_cpu_holding_rtas_masks_at_the_presenter() {
    // The holder never checks in: it might still enter firmware, so RTAS is not called.
    check(
        "--deaf 3 --rtas-held-by 3 --ack-timeout-ms 500",
        &Expect {
            mask_path: "presenter",
            deaf: &[3],
            ..DEFAULT
        },
    );
}

#[test]
fn tiny_rings_overwrite() {
    check(
        "--ring-bytes 1024",
        &Expect {
            overwrites: true,
            ..DEFAULT
        },
    );
}

#[test]
fn crash_from_interrupt_context() {
    let s = check(
        "--crash-in irq --crash-cpu 1 --freeze-in-log 2",
        &Expect {
            crash_cpu: 1,
            crash_ctx: "irq",
            ..DEFAULT
        },
    );
    assert!(s.get("irq_committed_per_cpu").us()[1] > 0);
}

#[test]
fn two_cpus() {
    check(
        "--cpus 2",
        &Expect {
            mask_path: "rtas",
            frozen: &[],
            ..DEFAULT
        },
    );
}

#[test]
fn sixteen_cpus() {
    check(
        "--cpus 16 --freeze-in-log 2,9 --rtas-held-by 3 --deaf 12 --ack-timeout-ms 1000",
        &Expect {
            frozen: &[2, 9],
            deaf: &[12],
            ..DEFAULT
        },
    );
}

#[test]
fn sixteen_cpus_tiny_rings_crash_in_irq() {
    check(
        "--cpus 16 --ring-bytes 2048 --crash-in irq --crash-cpu 5 --rtas-in-call",
        &Expect {
            mask_path: "presenter",
            crash_cpu: 5,
            crash_ctx: "irq",
            overwrites: true,
            ..DEFAULT
        },
    );
}

// Scale: the CPU counts of real POWER machines (threads as CPUs on the host's cores; the log's
// memory sized at boot for the count).

/// One deadline for the check-in wait, whatever the CPU count: with two deaf CPUs the crash path
/// waits `ack` once (a wait per CPU would take twice as long), and the rest is linear work.
fn assert_one_deadline(s: &J, ack_ms: u64) {
    let elapsed = s.get("elapsed_ms").f();
    assert!(
        elapsed >= ack_ms as f64 && elapsed < (2 * ack_ms - 1000) as f64,
        "crash to capture {elapsed} ms with a {ack_ms} ms check-in timeout"
    );
}

/// `cpus` CPUs with three frozen writers, the RTAS holder (CPU 3) and two deaf CPUs, a check-in
/// wait of `ack_ms`: the capture stage's verifier and the scenario's expectations hold, and the
/// wait is one deadline.
fn frozen_rtas_and_deaf_at(
    cpus: usize,
    records: u64,
    ring_bytes: usize,
    frozen: &[usize],
    deaf: &[usize],
    ack_ms: u64,
) {
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let s = check(
        &format!(
            "--cpus {cpus} --records-per-cpu {records} --ring-bytes {ring_bytes} --freeze-in-log {} \
             --rtas-held-by 3 --deaf {} --ack-timeout-ms {ack_ms}",
            list(frozen),
            list(deaf)
        ),
        &Expect {
            frozen,
            deaf,
            ..DEFAULT
        },
    );
    assert_one_deadline(&s, ack_ms);
}

#[test]
fn cpus_256_frozen_writers_rtas_holder_deaf() {
    frozen_rtas_and_deaf_at(256, 50, 4096, &[2, 100, 255], &[17, 200], 2000);
}

#[test]
fn cpus_1024_frozen_writers_rtas_holder_deaf() {
    frozen_rtas_and_deaf_at(1024, 20, 2048, &[2, 513, 1023], &[12, 777], 3000);
}

#[test]
fn cpus_1024_late_check_ins_are_cpus_that_did_not_stop() {
    // No wait at all: CPUs still taking the NMI when the drains run are CPUs that did not stop.
    for seed in 1..=3 {
        let s = check_unstopped(&format!(
            "--cpus 1024 --records-per-cpu 20 --ring-bytes 2048 --ack-timeout-ms 0 --deaf 5 \
             --freeze-in-log 2,600 --seed {seed}"
        ));
        assert!(s.get("not_stopped_cpus").us().contains(&5), "CPU 5 is deaf");
    }
}

#[test]
fn locked_baseline_deadlocks() {
    let (code, stdout, stderr) = run(&["--baseline", "locked", "--json"]);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .expect("summary");
    let s = json(line).get("summary").clone();
    assert_eq!(s.get("deadlock"), &J::Bool(true));
    let held: Vec<(String, u64)> = s
        .get("held")
        .arr()
        .iter()
        .map(|h| (h.get("lock").s().to_string(), h.get("holder").u()))
        .collect();
    assert!(held.contains(&("logbuf_lock".to_string(), 2)), "{held:?}");
    assert!(held.contains(&("rtas.lock".to_string(), 3)), "{held:?}");
    let waiting = s.get("waiting").arr();
    assert!(
        waiting
            .iter()
            .any(|w| w.get("cpu").u() == 0 && w.get("at").s().contains("IPI complete")),
        "{waiting:?}"
    );
}

#[test]
fn locked_baseline_deadlocks_on_the_rtas_lock_alone() {
    let (code, stdout, _) = run(&["--baseline", "locked", "--json", "--freeze-in-log", "none"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.contains("\"lock\":\"rtas.lock\",\"holder\":3"),
        "{stdout}"
    );
}

#[test]
fn human_output_shows_the_timeline() {
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for want in [
        "timeline of the crash sequence",
        "CPU 2 stopped (NMI in task context",
        "IPI complete",
        "[mask_path=rtas-takeover]",
        "kexec: Starting switchover sequence.",
        "verify: OK",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn bad_arguments_exit_1() {
    let (code, _, stderr) = run(&["--cpus", "1025"]);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, _) = run(&["--deaf", "0"]);
    assert_eq!(code, 1);
}

// ------------------------------------------------------------------------------------------------
// CPUs that did not stop: the crash drain reads what they may still be writing.

/// Runs a scenario in which some CPUs had not checked in when the handover image was written, and
/// checks what holds whatever they did: the capture stage's own verification (every committed record
/// recovered once or counted, the ground truth being a range for such a CPU), and here, from the
/// records alone: timestamp order, each record at most once, every stopped CPU's "stopped" record,
/// no torn record on a CPU that did not stop.
fn check_unstopped(args: &str) -> J {
    let Run {
        recs,
        summary: s,
        ctx,
    } = run_json(args, &[]);
    assert_eq!(
        s.get("verified"),
        &J::Bool(true),
        "capture stage's own check: {:?}; {ctx}",
        s.get("failures")
    );
    let mut seen = std::collections::HashSet::new();
    for r in &recs {
        if let Some(key) = parse_sim(&r.text) {
            assert!(seen.insert(key), "{key:?} delivered twice; {ctx}");
        }
    }
    let ncpu = s.get("cpus").u() as usize;
    let not_stopped = s.get("not_stopped_cpus").us();
    let crash_cpu = s.get("crash_cpu").u() as usize;
    assert!(!not_stopped.contains(&(crash_cpu as u64)), "{ctx}");
    let torn: Vec<Vec<u64>> = s.get("torn_per_cpu").arr().iter().map(J::us).collect();
    let in_flight = s.get("in_flight_per_cpu").us();
    for c in 0..ncpu {
        if not_stopped.contains(&(c as u64)) {
            assert!(
                torn[c].iter().all(|&t| t == 0),
                "CPU {c} did not stop, yet torn; {ctx}"
            );
        } else {
            assert_eq!(in_flight[c], 0, "CPU {c} stopped, yet in flight; {ctx}");
            if c != crash_cpu {
                let prefix = format!("CPU {c} stopped");
                assert!(
                    recs.iter().any(|r| r.cpu == c && r.text.starts_with(&prefix)),
                    "CPU {c} checked in before the image but its \"stopped\" record is missing; {ctx}"
                );
            }
        }
    }
    for text in ["IPI complete", "kexec: Starting switchover sequence."] {
        assert!(
            recs.iter().any(|r| r.cpu == crash_cpu && r.text == text),
            "no \"{text}\"; {ctx}"
        );
    }
    s
}

#[test]
fn ack_timeout_0_one_deaf_cpu_over_many_seeds() {
    // The drain runs while the other CPUs are still taking the NMI (no wait at all): they stop
    // during the drain, or after it, or only after the image. The seed moves the crash point.
    let mut late = 0;
    for seed in 1..=16 {
        let s = check_unstopped(&format!(
            "--ack-timeout-ms 0 --freeze-in-log none --rtas-held-by none --deaf 1 --seed {seed}"
        ));
        assert!(s.get("not_stopped_cpus").us().contains(&1), "CPU 1 is deaf");
        late += s.get("not_stopped_cpus").us().len() - 1;
    }
    eprintln!("besides the deaf CPU, {late} CPU(s) had not checked in by the image over 16 seeds");
}

#[test]
fn ack_timeout_0_several_deaf_cpus_with_frozen_writers_over_many_seeds() {
    for seed in 1..=8 {
        let s = check_unstopped(&format!(
            "--cpus 6 --ack-timeout-ms 0 --deaf 1,4 --seed {seed}"
        ));
        let ns = s.get("not_stopped_cpus").us();
        assert!(ns.contains(&1) && ns.contains(&4), "{ns:?}");
    }
}

#[test]
fn deaf_flush_owner_paused_at_every_step_of_a_move() {
    // The seed picks the move step the deaf flush owner is parked at and when it resumes: cover every
    // step, with both a short and the default check-in wait.
    let mut covered = [false; 10];
    let mut seed = 0u64;
    while covered.iter().any(|c| !c) {
        seed += 1;
        let conf = nmilog_ppc64::host::SimConfig {
            seed,
            ..Default::default()
        };
        let (step, _) = conf.flusher_pause();
        if covered[step] {
            continue;
        }
        covered[step] = true;
        let wait = if step % 2 == 0 { "0" } else { "30" };
        let s = check_unstopped(&format!(
            "--freeze-in-log none --rtas-held-by none --deaf-flusher 1 --ack-timeout-ms {wait} \
             --seed {seed}"
        ));
        assert!(s.get("not_stopped_cpus").us().contains(&1), "step {step}");
    }
}

#[test]
fn deaf_cpu_keeps_logging_through_and_after_the_crash() {
    for seed in 1..=6 {
        let wait = if seed % 2 == 0 { "0" } else { "50" };
        let s = check_unstopped(&format!(
            "--deaf-logging 1 --ack-timeout-ms {wait} --seed {seed}"
        ));
        assert!(s.get("not_stopped_cpus").us().contains(&1));
    }
}

// ------------------------------------------------------------------------------------------------
// The crashing CPU dies mid-path (`--die-in-drain`): the capture stage rebuilds the log from memory.

/// Runs `args` with `--die-in-drain point` and checks the log rebuilt from memory: the capture
/// stage's own verification (every committed record recovered once or counted, none invented, in
/// order), the descriptor found by the scan, and here, from the records: each at most once, the
/// crashing CPU's messages exactly up to its death point, every CPU that checked in with its
/// "stopped" record, the frozen writer's call torn once it checked in.
fn check_death(args: &str, point: &str, ipi_complete: bool, switchover: bool) -> J {
    let Run {
        recs,
        summary: s,
        ctx,
    } = run_json(&format!("{args} --die-in-drain {point}"), &[]);
    let ctx = format!("death point {point}; {ctx}");
    assert_eq!(
        s.get("verified"),
        &J::Bool(true),
        "capture stage's own check: {:?}; {ctx}",
        s.get("failures")
    );
    assert_eq!(s.get("recovered_from").s(), "memory", "{ctx}");
    assert_eq!(s.get("died_at").s(), point, "{ctx}");
    assert_eq!(s.get("descriptor_found_by").s(), "scan", "{ctx}");
    assert_eq!(s.get("descriptors_valid").u(), 1, "{ctx}");
    assert_eq!(s.get("recovered").u() as usize, recs.len(), "{ctx}");
    let mut seen = std::collections::HashSet::new();
    for r in &recs {
        if let Some(key) = parse_sim(&r.text) {
            assert_eq!(key.0, r.cpu, "record of another CPU; {ctx}");
            assert!(seen.insert(key), "{key:?} delivered twice; {ctx}");
        }
    }
    let crash_cpu = s.get("crash_cpu").u() as usize;
    let has = |text: &str| recs.iter().any(|r| r.cpu == crash_cpu && r.text == text);
    assert_eq!(has("IPI complete"), ipi_complete, "{ctx}");
    assert_eq!(
        has("kexec: Starting switchover sequence."),
        switchover,
        "{ctx}"
    );
    // The entry message is logged right after the `entered` stage.
    assert_eq!(
        recs.iter().any(|r| r.cpu == crash_cpu
            && r.text
                .starts_with(&format!("crash: CPU {crash_cpu} crashing"))),
        point != "entered",
        "the crash entry record; {ctx}"
    );
    let not_stopped = s.get("not_stopped_cpus").us();
    for c in 0..s.get("cpus").u() as usize {
        if c != crash_cpu && !not_stopped.contains(&(c as u64)) {
            let prefix = format!("CPU {c} stopped");
            assert!(
                recs.iter()
                    .any(|r| r.cpu == c && r.text.starts_with(&prefix)),
                "CPU {c} checked in but its \"stopped\" record is missing; {ctx}"
            );
        }
    }
    s
}

#[test]
fn death_at_every_point_of_the_crash_path_rebuilds_the_log_from_memory() {
    // Every stage, the first drain's first and a middle record, each image-writer step (a middle
    // record of both passes): 4 CPUs x 1000 task records always drain more than 1000 records.
    // (point, "IPI complete" logged, switchover message logged)
    let points = [
        ("entered", false, false),
        ("ipi-sent", false, false),
        ("check-ins-done", false, false),
        ("masked", true, false),
        ("record:0", true, false),
        ("record:1000", true, false),
        ("drained", true, false),
        ("image-start", true, true),
        ("image-sized:0", true, true),
        ("image-sized:1000", true, true),
        ("image-copy:0", true, true),
        ("image-copy:1000", true, true),
        ("image-tables", true, true),
        ("image-header", true, true),
        ("image-written", true, true),
    ];
    let listed = run(&["--die-in-drain", "list"]).1;
    for (p, ipi, switch) in points {
        let step = p.split(':').next().unwrap();
        assert!(
            listed.contains(&format!("  {step}")),
            "{step} not listed:\n{listed}"
        );
        let s = check_death("--ack-timeout-ms 20000", p, ipi, switch);
        if ipi {
            // Past the check-in wait (every CPU answers here): all stopped, nothing in flight;
            // the frozen writer's call torn, and any other call the NMI stopped mid-write (a CPU
            // still logging when the crash came), as the ground truth counts them.
            assert_eq!(s.get("not_stopped_cpus").us(), Vec::<u64>::new(), "{p}");
            assert_eq!(s.get("in_flight_per_cpu").us(), vec![0; 4], "{p}");
            let mid = s.get("frozen_mid_write").us();
            assert!(mid.contains(&2), "CPU 2 frozen mid-write: {mid:?}; {p}");
            assert_eq!(
                s.get("torn").u(),
                s.get("frozen_mid_write_calls").u(),
                "{p}"
            );
            assert!(s.get("torn").u() >= 1, "{p}");
        }
    }
}

#[test]
fn death_with_deaf_cpus_tiny_rings_and_a_crash_in_irq() {
    for (args, p, ipi, switch) in [
        ("--deaf 1 --ack-timeout-ms 50", "record:500", true, false),
        (
            "--deaf-logging 1 --ack-timeout-ms 0",
            "image-copy:100",
            true,
            true,
        ),
        (
            "--ring-bytes 1024 --ack-timeout-ms 20000",
            "record:10",
            true,
            false,
        ),
        (
            "--cpus 8 --crash-in irq --ack-timeout-ms 20000",
            "ipi-sent",
            false,
            false,
        ),
    ] {
        let s = check_death(args, p, ipi, switch);
        if args.contains("--deaf") {
            assert!(s.get("not_stopped_cpus").us().contains(&1), "{args}");
        }
        if args.contains("1024") {
            assert!(s.get("overwritten").u() > 0, "{args}");
        }
    }
}

#[test]
fn a_death_point_never_reached_leaves_the_crash_path_whole() {
    let Run {
        summary: s, ctx, ..
    } = run_json("--die-in-drain record:100000000", &[]);
    assert_eq!(s.get("recovered_from").s(), "image", "{ctx}");
    assert_eq!(s.get("died_at"), &J::Null, "{ctx}");
    assert_eq!(s.get("verified"), &J::Bool(true), "{ctx}");
}
