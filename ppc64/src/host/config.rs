//! The scenario: the command line of the crash demo ([`SimConfig`]), the role each simulated CPU
//! plays in it ([`Role`]), the exit codes, and the simulated machine's size (CPUs, log geometry).

use std::fmt::Write as _;

use super::death::DeathPoint;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: something failed (bad arguments, a check of the capture stage, a setup timeout).
pub const EXIT_FAIL: i32 = 1;
/// Exit code: a deadlock was detected by the watchdog.
pub const EXIT_DEADLOCK: i32 = 2;

/// Most CPUs the simulation supports (threads as CPUs; a POWER10 LPAR runs over a thousand hardware
/// threads). The log's memory is sized at boot for the scenario's count, not for this.
pub const MAX_CPUS: usize = 1024;

/// Words per ring at most (64 KiB rings).
pub(crate) const MAX_RING_WORDS: usize = 8192;
/// Words in the main log (8 MiB).
pub(crate) const MAIN_WORDS: usize = 1 << 20;
/// Context depths (task, irq, NMI, nested).
pub(crate) const DEPTH: usize = 4;

/// The scenario, from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// `--cpus N` (2..=1024, default 4).
    pub cpus: usize,
    /// `--records-per-cpu K` (1..=10 000 000, default 1000).
    pub records: u64,
    /// `--freeze-in-log CPU[,CPU…]` (default 2 when there are more than 2 CPUs; `none` for none).
    pub freeze_in_log: Vec<usize>,
    /// `--rtas-held-by CPU` (default 3 when there are more than 3 CPUs; `none` for none).
    pub rtas_held_by: Option<usize>,
    /// `--rtas-in-call`: the RTAS holder is frozen inside the firmware call (default: outside it).
    pub rtas_in_call: bool,
    /// `--deaf CPU[,CPU…]`: blocks the NMI; hung with interrupts off after its records.
    pub deaf: Vec<usize>,
    /// `--deaf-logging CPU[,CPU…]`: blocks the NMI and keeps logging task records through the crash
    /// and after it (until the switchover replaces the process).
    pub deaf_logging: Vec<usize>,
    /// `--deaf-flusher CPU`: blocks the NMI, and owns the flush at the crash — parked inside a move
    /// (at a step the seed picks) until the crash has begun, then it resumes after a short delay
    /// (also from the seed), finishes its flush and keeps logging.
    pub deaf_flusher: Option<usize>,
    /// `--crash-cpu CPU` (default 0).
    pub crash_cpu: usize,
    /// `--crash-in task|irq` (default task): the context the crash is entered from.
    pub crash_in_irq: bool,
    /// `--ring-bytes B`: per-CPU ring capacity, a power of two from 1024 (the crash path's own
    /// messages must fit) to 65536 (default 65536).
    pub ring_bytes: usize,
    /// `--seed S` (any `u64`, default 1): picks the record each `--freeze-in-log` CPU freezes in.
    pub seed: u64,
    /// `--baseline locked`.
    pub baseline_locked: bool,
    /// `--json`.
    pub json: bool,
    /// `--ack-timeout-ms T` (0..=3 600 000, default 1000): how long the crashing CPU waits for
    /// check-ins.
    pub ack_timeout_ms: u64,
    /// `--tick-us T` (20..=50 000, default 100): timer interrupt period per CPU, for up to four CPUs
    /// (see [`tick_period_us`](Self::tick_period_us)).
    pub tick_us: u64,
    /// `--dmesg-all`: print every recovered record in human mode (default: the last 24).
    pub dmesg_all: bool,
    /// `--work-ns N` (0..=10 000 000, default 2000; `records x work_ns` at most 30 s): busy work the
    /// task context does between two records, so that timer interrupts interleave with them and the
    /// NMI lands anywhere in the loop (0: none). A `--deaf-logging` CPU, after its records, spaces
    /// its records at least 20 us apart.
    pub work_ns: u64,
    /// `--die-in-drain STEP`: the crashing CPU dies at this point of the crash path (no image, no
    /// switchover); the watchdog starts the capture stage, which rebuilds the log from memory.
    pub die_in_drain: Option<DeathPoint>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            cpus: 4,
            records: 1000,
            freeze_in_log: vec![2],
            rtas_held_by: Some(3),
            rtas_in_call: false,
            deaf: vec![],
            deaf_logging: vec![],
            deaf_flusher: None,
            crash_cpu: 0,
            crash_in_irq: false,
            ring_bytes: 65536,
            seed: 1,
            baseline_locked: false,
            json: false,
            ack_timeout_ms: 1000,
            tick_us: 100,
            dmesg_all: false,
            work_ns: 2000,
            die_in_drain: None,
        }
    }
}

/// What one simulated CPU does besides logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Logs, then idles with interrupts on.
    Plain,
    /// The crashing CPU.
    Crash,
    /// Frozen by the NMI in the middle of writing a task record.
    FreezeInLog,
    /// Frozen holding the RTAS lock.
    RtasHolder,
    /// Blocks the NMI; hung with interrupts off after its records.
    Deaf,
    /// Blocks the NMI; keeps logging through the crash and after it.
    DeafLogging,
    /// Blocks the NMI; owns the flush at the crash, parked inside a move, then resumes it.
    DeafFlusher,
}

impl Role {
    pub(crate) fn code(self) -> u64 {
        match self {
            Role::Plain => 0,
            Role::Crash => 1,
            Role::FreezeInLog => 2,
            Role::RtasHolder => 3,
            Role::Deaf => 4,
            Role::DeafLogging => 5,
            Role::DeafFlusher => 6,
        }
    }
    pub(crate) fn from_code(v: u64) -> Role {
        match v {
            1 => Role::Crash,
            2 => Role::FreezeInLog,
            3 => Role::RtasHolder,
            4 => Role::Deaf,
            5 => Role::DeafLogging,
            6 => Role::DeafFlusher,
            _ => Role::Plain,
        }
    }
    /// A short name for the timeline.
    pub fn name(self) -> &'static str {
        match self {
            Role::Plain => "logging",
            Role::Crash => "crashing CPU",
            Role::FreezeInLog => "frozen mid-log-write",
            Role::RtasHolder => "holding the RTAS lock",
            Role::Deaf => "deaf (NMI blocked, hung)",
            Role::DeafLogging => "deaf, keeps logging",
            Role::DeafFlusher => "deaf flush owner",
        }
    }
}

impl SimConfig {
    /// Parses the command line (without the program name). `Err` carries the message to print: one
    /// line naming the option and, for a value out of range, the allowed range (`--help` lists them).
    /// `-h`/`--help` is `Err` with the usage text here ([`run`](super::run) prints it and exits 0
    /// before parsing).
    pub fn parse(args: &[String]) -> Result<SimConfig, String> {
        Self::parse_inner(args).map_err(|e| if e == USAGE { e } else { format!("crash: {e}") })
    }

    fn parse_inner(args: &[String]) -> Result<SimConfig, String> {
        use lexopt::Arg::{Long, Short, Value};
        let mut c = SimConfig::default();
        let mut freeze_given = false;
        let mut rtas_given = false;
        let mut crash_cpu = None;
        let mut p = lexopt::Parser::from_args(args);
        while let Some(arg) = p.next().map_err(|e| e.to_string())? {
            // The option's name, owned: `arg` borrows the parser, which `value` needs.
            let name = match arg {
                Long(l) => format!("--{l}"),
                Short(s) => format!("-{s}"),
                Value(v) => {
                    return Err(format!(
                        "unexpected argument {:?} (the demo takes options only; try --help)",
                        v.to_string_lossy()
                    ))
                }
            };
            let mut value = || -> Result<String, String> {
                let v = p.value().map_err(|e| e.to_string())?;
                v.into_string()
                    .map_err(|v| format!("{name}: not valid UTF-8: {:?}", v.to_string_lossy()))
            };
            match name.as_str() {
                "--cpus" => c.cpus = number(&name, &value()?, 2, MAX_CPUS as u64)? as usize,
                "--records-per-cpu" => {
                    c.records = number(&name, &value()?, 1, MAX_RECORDS_PER_CPU)?
                }
                "--freeze-in-log" => {
                    c.freeze_in_log = cpu_list(&name, &value()?)?;
                    freeze_given = true;
                }
                "--rtas-held-by" => {
                    c.rtas_held_by = one_cpu(&name, &value()?)?;
                    rtas_given = true;
                }
                "--rtas-in-call" => c.rtas_in_call = true,
                "--deaf" => c.deaf = cpu_list(&name, &value()?)?,
                "--deaf-logging" => c.deaf_logging = cpu_list(&name, &value()?)?,
                "--deaf-flusher" => c.deaf_flusher = one_cpu(&name, &value()?)?,
                "--crash-cpu" => crash_cpu = Some(cpu(&name, &value()?)?),
                "--crash-in" => {
                    c.crash_in_irq = match value()?.as_str() {
                        "irq" => true,
                        "task" => false,
                        v => return Err(format!("{name}: expected task or irq, got {v:?}")),
                    }
                }
                "--ring-bytes" => {
                    let v = value()?;
                    c.ring_bytes = v
                        .parse::<u64>()
                        .ok()
                        .filter(|b| b.is_power_of_two())
                        .filter(|b| (MIN_RING_BYTES..=MAX_RING_BYTES).contains(b))
                        .ok_or_else(|| {
                            format!(
                                "{name}: expected a power of two from {MIN_RING_BYTES} to {MAX_RING_BYTES}, got {v:?}"
                            )
                        })? as usize;
                }
                "--seed" => c.seed = number(&name, &value()?, 0, u64::MAX)?,
                "--baseline" => match value()?.as_str() {
                    "locked" => c.baseline_locked = true,
                    "none" | "nmilog" => c.baseline_locked = false,
                    v => return Err(format!("{name}: expected locked or none, got {v:?}")),
                },
                "--json" => c.json = true,
                "--ack-timeout-ms" => {
                    c.ack_timeout_ms = number(&name, &value()?, 0, MAX_ACK_TIMEOUT_MS)?
                }
                "--tick-us" => c.tick_us = number(&name, &value()?, MIN_TICK_US, MAX_TICK_US)?,
                "--dmesg-all" => c.dmesg_all = true,
                "--die-in-drain" => {
                    let v = value()?;
                    c.die_in_drain = Some(DeathPoint::parse(&v)?);
                }
                "--work-ns" => c.work_ns = number(&name, &value()?, 0, MAX_WORK_NS)?,
                "-h" | "--help" => return Err(USAGE.to_string()),
                _ => return Err(format!("invalid option '{name}' (try --help)")),
            }
        }
        if c.baseline_locked && c.die_in_drain.is_some() {
            return Err(
                "--die-in-drain: not with --baseline locked (its crash path never gets there)"
                    .into(),
            );
        }
        let busy_ns = c.records.saturating_mul(c.work_ns);
        if busy_ns > MAX_BUSY_NS {
            return Err(format!(
                "--records-per-cpu {} x --work-ns {} is {} s of busy work per CPU before the crash; \
                 at most {} s fit the set-up time",
                c.records,
                c.work_ns,
                busy_ns / 1_000_000_000,
                MAX_BUSY_NS / 1_000_000_000
            ));
        }
        if let Some(x) = crash_cpu {
            if x >= c.cpus {
                return Err(format!(
                    "--crash-cpu: expected a CPU from 0 to {} (--cpus {}), got {x}",
                    c.cpus - 1,
                    c.cpus
                ));
            }
            c.crash_cpu = x;
        }
        // Defaults that do not fit the CPU count (or collide with the crashing CPU) fall away.
        if !freeze_given {
            c.freeze_in_log.retain(|&x| x < c.cpus && x != c.crash_cpu);
        }
        if !rtas_given {
            c.rtas_held_by = c.rtas_held_by.filter(|&x| x < c.cpus && x != c.crash_cpu);
        }
        let mut seen = [false; MAX_CPUS];
        let mut claim = |x: usize, what: &str| -> Result<(), String> {
            if x >= c.cpus {
                return Err(format!(
                    "{what}: expected CPUs from 0 to {} (--cpus {}), got {x}",
                    c.cpus - 1,
                    c.cpus
                ));
            }
            if x == c.crash_cpu {
                return Err(format!("{what}: CPU {x} is the crashing CPU"));
            }
            if seen[x] {
                return Err(format!("{what}: CPU {x} already has a role"));
            }
            seen[x] = true;
            Ok(())
        };
        for &x in &c.freeze_in_log {
            claim(x, "--freeze-in-log")?;
        }
        if let Some(x) = c.rtas_held_by {
            claim(x, "--rtas-held-by")?;
        }
        for &x in &c.deaf {
            // A deaf CPU may also be the RTAS holder: it hangs holding the lock, never checks in.
            if c.rtas_held_by == Some(x) {
                continue;
            }
            claim(x, "--deaf")?;
        }
        for &x in &c.deaf_logging {
            claim(x, "--deaf-logging")?;
        }
        if let Some(x) = c.deaf_flusher {
            claim(x, "--deaf-flusher")?;
        }
        Ok(c)
    }

    /// `--ack-timeout-ms` in nanoseconds (saturating; at most an hour by [`SimConfig::parse`]).
    pub fn ack_timeout_ns(&self) -> u64 {
        self.ack_timeout_ms.saturating_mul(1_000_000)
    }

    /// The period of the timer interrupt each CPU gets, in microseconds: `--tick-us` for up to four
    /// CPUs; with more, the one ticker thread takes `ceil(cpus / 4)` times as long per round.
    pub fn tick_period_us(&self) -> u64 {
        self.tick_us
            .saturating_mul((self.cpus as u64).div_ceil(4))
            .min(MAX_TICK_PERIOD_US)
    }

    /// How long an idle CPU sleeps between two looks at its work (300 us for up to four CPUs,
    /// scaled like the tick: with two host cores, a thousand threads polling every 300 us would
    /// leave no time to run anything else), at most 50 ms.
    pub fn idle_poll_us(&self) -> u64 {
        300u64
            .saturating_mul((self.cpus as u64).div_ceil(4))
            .min(50_000)
    }

    /// The role of `cpu`.
    pub fn role(&self, cpu: usize) -> Role {
        if cpu == self.crash_cpu {
            Role::Crash
        } else if self.freeze_in_log.contains(&cpu) {
            Role::FreezeInLog
        } else if self.rtas_held_by == Some(cpu) {
            Role::RtasHolder
        } else if self.deaf.contains(&cpu) {
            Role::Deaf
        } else if self.deaf_logging.contains(&cpu) {
            Role::DeafLogging
        } else if self.deaf_flusher == Some(cpu) {
            Role::DeafFlusher
        } else {
            Role::Plain
        }
    }

    /// Whether `cpu` blocks the NMI (`--deaf`, `--deaf-logging`, `--deaf-flusher`), whatever its
    /// role.
    pub fn is_deaf(&self, cpu: usize) -> bool {
        self.deaf.contains(&cpu)
            || self.deaf_logging.contains(&cpu)
            || self.deaf_flusher == Some(cpu)
    }

    /// The `--deaf-flusher`'s pause: the flush step it parks at (an index into `FlushStep::ALL`) and
    /// how long it waits, once the crash has begun, before it resumes (µs, 0..=2000).
    pub fn flusher_pause(&self) -> (usize, u64) {
        let r = splitmix(self.seed ^ 0xf1u64);
        ((r % 10) as usize, (r >> 8) % 2001)
    }

    /// The task record a `--freeze-in-log` CPU freezes in (from the seed): in the second half.
    pub fn freeze_at(&self, cpu: usize) -> u64 {
        let k = self.records;
        let lo = k / 2;
        lo + splitmix(self.seed ^ (cpu as u64).wrapping_mul(0x9e37_79b9)) % (k - lo)
    }

    /// The task record `cpu` freezes in: [`freeze_at`](Self::freeze_at) for a `--freeze-in-log` CPU,
    /// `u64::MAX` (never) for any other.
    pub(crate) fn freeze_record(&self, cpu: usize) -> u64 {
        if self.role(cpu) == Role::FreezeInLog {
            self.freeze_at(cpu)
        } else {
            u64::MAX
        }
    }

    /// The arguments that reproduce this configuration (passed on to the capture stage).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![];
        if self.json {
            v.push("--json".to_string());
        }
        if self.dmesg_all {
            v.push("--dmesg-all".to_string());
        }
        if let Some(d) = self.die_in_drain {
            v.push("--die-in-drain".to_string());
            v.push(d.name());
        }
        v
    }

    /// A one-line description of the scenario.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{} CPUs x {} task records, {} B rings; crash on CPU {} in {} context",
            self.cpus,
            self.records,
            self.ring_bytes,
            self.crash_cpu,
            if self.crash_in_irq { "irq" } else { "task" }
        );
        if self.tick_period_us() != 100 {
            let _ = write!(s, "; timer tick every {} us", self.tick_period_us());
        }
        for &c in &self.freeze_in_log {
            let _ = write!(
                s,
                "; CPU {c} freezes inside the write of n={}",
                self.freeze_at(c)
            );
        }
        if let Some(c) = self.rtas_held_by {
            let _ = write!(
                s,
                "; CPU {c} holds the RTAS lock ({} the firmware call)",
                if self.rtas_in_call {
                    "inside"
                } else {
                    "outside"
                }
            );
        }
        for &c in &self.deaf {
            let _ = write!(s, "; CPU {c} is deaf to the NMI");
        }
        for &c in &self.deaf_logging {
            let _ = write!(s, "; CPU {c} is deaf to the NMI and keeps logging");
        }
        if let Some(c) = self.deaf_flusher {
            let (step, us) = self.flusher_pause();
            let _ = write!(
                s,
                "; CPU {c} is deaf to the NMI and owns the flush, paused at move step {step}, resuming {us} us into the crash"
            );
        }
        if let Some(d) = self.die_in_drain {
            let _ = write!(s, "; the crashing CPU dies at {}", d.name());
        }
        s
    }
}

/// Most task records per CPU (`--records-per-cpu`).
const MAX_RECORDS_PER_CPU: u64 = 10_000_000;
/// Smallest ring (`--ring-bytes`): the crash path's own messages must fit.
const MIN_RING_BYTES: u64 = 1024;
/// Largest ring (`--ring-bytes`): the static `Log`'s ring size.
const MAX_RING_BYTES: u64 = (MAX_RING_WORDS * core::mem::size_of::<usize>()) as u64;
/// Words per ring for rings of `bytes` (`--ring-bytes`, or the word the simulation left in its
/// ground truth, which the memory of a crashed process may hold garbled): clamped to the sizes
/// `--ring-bytes` accepts, a power of two. The one place the word count is derived from bytes.
pub(crate) fn ring_words(bytes: u64) -> usize {
    (bytes.clamp(MIN_RING_BYTES, MAX_RING_BYTES) as usize / core::mem::size_of::<usize>())
        .next_power_of_two()
}

/// Longest check-in wait (`--ack-timeout-ms`): an hour.
const MAX_ACK_TIMEOUT_MS: u64 = 3_600_000;
/// Shortest timer period (`--tick-us`): faster ticks would starve the CPU threads.
const MIN_TICK_US: u64 = 20;
/// Longest timer period (`--tick-us`): 50 ms.
const MAX_TICK_US: u64 = 50_000;
/// Longest period the ticker sleeps (`usleep` takes less than a second).
const MAX_TICK_PERIOD_US: u64 = 999_999;
/// Most busy work between two task records (`--work-ns`): 10 ms.
const MAX_WORK_NS: u64 = 10_000_000;
/// Most busy work per CPU before the crash (`--records-per-cpu` x `--work-ns`): 30 s, half the
/// harness's set-up timeout.
const MAX_BUSY_NS: u64 = 30_000_000_000;

pub(crate) const USAGE: &str = "\
usage: crash [OPTIONS]       the crash-shutdown demo on a simulated SMP machine
  --cpus N                   simulated CPUs, 2..=1024 (default 4)
  --records-per-cpu K        task records each CPU logs before the crash, 1..=10000000 (default 1000)
  --freeze-in-log CPU[,CPU..]|none   CPUs frozen by the NMI inside a log call (default 2)
  --rtas-held-by CPU|none    the CPU frozen holding the RTAS lock (default 3)
  --rtas-in-call             ...frozen inside the firmware call (default: outside it)
  --deaf CPU[,CPU..]         CPUs that block the NMI and hang
  --deaf-logging CPU[,CPU..] CPUs that block the NMI and keep logging
  --deaf-flusher CPU|none    a CPU that blocks the NMI and owns the flush at the crash
  --crash-cpu CPU            the crashing CPU (default 0)
  --crash-in task|irq        the context the crash starts in (default task)
  --ring-bytes B             per-CPU ring size, a power of two, 1024..=65536 (default 65536)
  --seed S                   picks freeze points and pauses, 0..=18446744073709551615 (default 1)
  --ack-timeout-ms T         check-in wait of the crashing CPU, 0..=3600000 (default 1000)
  --tick-us T                timer interrupt period, 20..=50000 (default 100; x ceil(cpus/4))
  --work-ns N                busy work between two task records, 0..=10000000 (default 2000);
                             records x work at most 30 s
  --baseline locked|none     run the 2020 design instead (deadlocks, exit 2)
  --json                     JSON lines on stdout
  --dmesg-all                print every recovered record (default: the last 24)
  --die-in-drain STEP|list   the crashing CPU dies at STEP of the crash path; the capture stage
                             rebuilds the log from memory (list: the steps)
  -h, --help                 this text
  --scale [--help]           instead of one run: the crash path's cost against the CPU count
                             (a table, and an SVG plot with --plot FILE)
CPUs are numbered from 0 to --cpus - 1; lists are comma-separated, none the crashing CPU, no CPU in two
roles (except --deaf with --rtas-held-by). Exit status: 0 success, 1 failure (bad command line,
failed verification), 2 deadlock detected.";

/// What a command line's parse means for the process: the options, or the exit code once the
/// help (`usage`: exit 0, on stdout) or the error (exit 1, on stderr) is printed.
pub(crate) fn or_exit<T>(parsed: Result<T, String>, usage: &str) -> Result<T, i32> {
    match parsed {
        Ok(t) => Ok(t),
        Err(e) if e == usage => {
            println!("{usage}");
            Err(EXIT_OK)
        }
        Err(e) => {
            eprintln!("{e}");
            Err(EXIT_FAIL)
        }
    }
}

/// `s` as a number from `lo` to `hi`; `Err` names the option and the range.
fn number(name: &str, s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| format!("{name}: expected a number from {lo} to {hi}, got {s:?}"))
}

/// A CPU number (its range, below `--cpus`, is checked once the whole command line is read).
fn cpu(name: &str, s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .map_err(|_| format!("{name}: expected a CPU number, got {s:?}"))
}

/// `none` or a comma-separated list of CPUs.
fn cpu_list(name: &str, s: &str) -> Result<Vec<usize>, String> {
    if s == "none" {
        return Ok(vec![]);
    }
    s.split(',').map(|x| cpu(name, x)).collect()
}

/// `none` or one CPU: a list is refused.
fn one_cpu(name: &str, s: &str) -> Result<Option<usize>, String> {
    if s.contains(',') {
        return Err(format!("{name}: takes one CPU (or none), got {s:?}"));
    }
    Ok(cpu_list(name, s)?.first().copied())
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::{SimConfig, USAGE};

    fn parse(args: &[&str]) -> Result<SimConfig, String> {
        SimConfig::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn no_arguments_is_the_default_scenario() {
        assert_eq!(parse(&[]), Ok(SimConfig::default()));
        assert_eq!(parse(&["--help"]), Err(USAGE.to_string()));
    }

    #[test]
    fn values_are_used_as_given() {
        let c = parse(&[
            "--cpus=16",
            "--records-per-cpu",
            "10000000",
            "--ring-bytes",
            "1024",
            "--ack-timeout-ms",
            "3600000",
            "--tick-us",
            "50000",
            "--work-ns",
            "0",
            "--seed",
            "18446744073709551615",
            "--crash-cpu",
            "15",
            "--rtas-held-by",
            "none",
            "--deaf",
            "3,4",
            "--deaf-flusher",
            "5",
        ])
        .unwrap();
        assert_eq!(
            (c.cpus, c.records, c.ring_bytes, c.ack_timeout_ms, c.tick_us),
            (16, 10_000_000, 1024, 3_600_000, 50_000)
        );
        assert_eq!((c.work_ns, c.seed, c.crash_cpu), (0, u64::MAX, 15));
        assert_eq!((c.rtas_held_by, c.deaf_flusher), (None, Some(5)));
        assert_eq!((&c.deaf[..], &c.freeze_in_log[..]), (&[3, 4][..], &[2][..]));
        assert_eq!(c.ack_timeout_ns(), 3_600_000_000_000);
        // 16 CPUs: one ticker round takes four periods.
        assert_eq!(c.tick_period_us(), 200_000);
        assert!(c
            .describe()
            .contains("16 CPUs x 10000000 task records, 1024 B rings"));
        assert!(c.describe().contains("timer tick every 200000 us"));
    }

    #[test]
    fn every_error_is_one_line_naming_the_option() {
        for (args, want) in [
            (
                &["--ring-bytes", "3072"][..],
                "crash: --ring-bytes: expected a power of two",
            ),
            (
                &["--tick-us", "0"][..],
                "crash: --tick-us: expected a number from 20 to 50000",
            ),
            (
                &["--rtas-held-by", "1,2"][..],
                "crash: --rtas-held-by: takes one CPU",
            ),
            (
                &["--cpus", "2", "--crash-cpu", "2"][..],
                "crash: --crash-cpu: expected a CPU from 0 to 1",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.starts_with(want) && !e.contains('\n'), "{args:?}: {e}");
        }
    }
}
