//! The scenario: the command line of the crash demo ([`SimConfig`]), the role each simulated CPU
//! plays in it ([`Role`]), the exit codes, and the simulated machine's size (CPUs, log geometry).

use std::fmt::Write as _;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: something failed (bad arguments, a check of the capture stage, a setup timeout).
pub const EXIT_FAIL: i32 = 1;
/// Exit code: a deadlock was detected by the watchdog.
pub const EXIT_DEADLOCK: i32 = 2;

/// Most CPUs the simulation supports.
pub const MAX_CPUS: usize = 64;

/// Words per ring at most (64 KiB rings).
pub(crate) const RING_WORDS: usize = 8192;
/// Words in the main log (8 MiB).
pub(crate) const MAIN_WORDS: usize = 1 << 20;
/// Context depths (task, irq, NMI, nested).
pub(crate) const DEPTH: usize = 4;

/// The scenario, from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// `--cpus N` (2..=64, default 4).
    pub cpus: usize,
    /// `--records-per-cpu K` (default 1000).
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
    /// `--ring-bytes B`: per-CPU ring capacity (default 65536, at most 65536, at least 1024: the crash path's own messages must fit).
    pub ring_bytes: usize,
    /// `--seed S` (default 1): picks the record each `--freeze-in-log` CPU freezes in.
    pub seed: u64,
    /// `--baseline locked`.
    pub baseline_locked: bool,
    /// `--json`.
    pub json: bool,
    /// `--ack-timeout-ms T` (default 1000): how long the crashing CPU waits for check-ins.
    pub ack_timeout_ms: u64,
    /// `--tick-us T` (default 100): timer interrupt period per CPU.
    pub tick_us: u64,
    /// `--dmesg-all`: print every recovered record in human mode (default: the last 24).
    pub dmesg_all: bool,
    /// `--work-ns N` (default 2000): busy work the task context does between two records, so that
    /// timer interrupts interleave with them and the NMI lands anywhere in the loop (0: none).
    pub work_ns: u64,
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
    /// Parses the command line (without the program name). `Err` carries the message to print.
    pub fn parse(args: &[String]) -> Result<SimConfig, String> {
        let mut c = SimConfig::default();
        let mut freeze_given = false;
        let mut rtas_given = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = |name: &str| -> Result<String, String> {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--cpus" => c.cpus = num(&val(a)?)? as usize,
                "--records-per-cpu" => c.records = num(&val(a)?)?,
                "--freeze-in-log" => {
                    c.freeze_in_log = cpu_list(&val(a)?)?;
                    freeze_given = true;
                }
                "--rtas-held-by" => {
                    c.rtas_held_by = cpu_list(&val(a)?)?.first().copied();
                    rtas_given = true;
                }
                "--rtas-in-call" => c.rtas_in_call = true,
                "--deaf" => c.deaf = cpu_list(&val(a)?)?,
                "--deaf-logging" => c.deaf_logging = cpu_list(&val(a)?)?,
                "--deaf-flusher" => c.deaf_flusher = cpu_list(&val(a)?)?.first().copied(),
                "--crash-cpu" => c.crash_cpu = num(&val(a)?)? as usize,
                "--crash-in" => {
                    c.crash_in_irq = match val(a)?.as_str() {
                        "irq" => true,
                        "task" => false,
                        v => return Err(format!("--crash-in: expected task or irq, got {v}")),
                    }
                }
                "--ring-bytes" => c.ring_bytes = num(&val(a)?)? as usize,
                "--seed" => c.seed = num(&val(a)?)?,
                "--baseline" => match val(a)?.as_str() {
                    "locked" => c.baseline_locked = true,
                    "none" | "nmilog" => c.baseline_locked = false,
                    v => return Err(format!("--baseline: expected locked, got {v}")),
                },
                "--json" => c.json = true,
                "--ack-timeout-ms" => c.ack_timeout_ms = num(&val(a)?)?,
                "--tick-us" => c.tick_us = num(&val(a)?)?.max(20),
                "--dmesg-all" => c.dmesg_all = true,
                "--work-ns" => c.work_ns = num(&val(a)?)?,
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        if !(2..=MAX_CPUS).contains(&c.cpus) {
            return Err(format!("--cpus must be 2..={MAX_CPUS}"));
        }
        if c.crash_cpu >= c.cpus {
            return Err("--crash-cpu out of range".into());
        }
        // Defaults that do not fit the CPU count (or collide with the crashing CPU) fall away.
        if !freeze_given {
            c.freeze_in_log.retain(|&x| x < c.cpus && x != c.crash_cpu);
        }
        if !rtas_given {
            c.rtas_held_by = c.rtas_held_by.filter(|&x| x < c.cpus && x != c.crash_cpu);
        }
        if c.records == 0 {
            return Err("--records-per-cpu must be at least 1".into());
        }
        c.ring_bytes = c.ring_bytes.clamp(1024, RING_WORDS * 8);
        let mut seen = [false; MAX_CPUS];
        let mut claim = |x: usize, what: &str| -> Result<(), String> {
            if x >= c.cpus {
                return Err(format!("{what}: CPU {x} out of range"));
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
        s
    }
}

pub(crate) const USAGE: &str = "usage: crash [--cpus N] [--records-per-cpu K] [--freeze-in-log CPU[,CPU..]|none] \
[--rtas-held-by CPU|none] [--rtas-in-call] [--deaf CPU[,CPU..]] [--deaf-logging CPU[,CPU..]] [--deaf-flusher CPU] \
[--crash-cpu CPU] [--crash-in task|irq] \
[--ring-bytes B] [--seed S] [--baseline locked] [--json] [--ack-timeout-ms T] [--tick-us T] [--work-ns N] [--dmesg-all]";

fn num(s: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|_| format!("not a number: {s}"))
}

fn cpu_list(s: &str) -> Result<Vec<usize>, String> {
    if s == "none" || s.is_empty() {
        return Ok(vec![]);
    }
    s.split(',')
        .map(|x| num(x.trim()).map(|v| v as usize))
        .collect()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
