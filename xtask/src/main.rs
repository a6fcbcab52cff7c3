//! `cargo xtask`: the project's runner.
//!
//! * `cargo xtask test` — the whole test suite, as CI runs it: installs what it needs (rustup targets
//!   and components, QEMU, cargo-fuzz), then formatting, clippy, unit/integration/doc tests (including
//!   the crash demo matrix), no_std builds for every supported target, rustdoc, loom, Miri (on the
//!   host, then on a 32-bit and a big-endian target), ThreadSanitizer, fuzz smoke runs, and the
//!   bare-metal pseries scenarios under QEMU.
//!   `--quick` skips the slow verifiers (loom, Miri, TSan, fuzz); `--only NAME[,NAME]` runs some steps.
//! * `cargo xtask soak` — the stress tests for minutes instead of seconds (`NMILOG_STRESS_SECS`, default
//!   300) and longer fuzz runs.
//! * `cargo xtask soak --repeat N [--load] [--only pseries|host]` — every pseries scenario and every
//!   host crash-demo scenario test N times in a row (with `--load`: while two busy-looping processes
//!   keep both cores busy), then the pass rate per scenario. Exits non-zero unless every one passed
//!   every time.
//! * `cargo xtask qemu -- --cpus 4 [--scenario S]` — builds the pseries image and boots it.
//! * `cargo xtask mutants [--file F]... [--in-diff REV] [--jobs N] [--report DIR]` — mutation
//!   testing of the protocol code (see `mutants.rs`); the `mutants` step of `test` runs it on the
//!   lines the last commit changed.
//! * `cargo xtask list` — the steps.

use std::env;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod mutants;

struct Step {
    name: &'static str,
    slow: bool,
    run: fn(&Ctx) -> Result<(), String>,
}

struct Ctx {
    root: PathBuf,
    soak: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let cmd = args.first().map(String::as_str).unwrap_or("help");
    match cmd {
        "soak" if args.iter().any(|a| a == "--repeat") => {
            let n = args
                .iter()
                .position(|a| a == "--repeat")
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|n| (1..=10_000).contains(n));
            let Some(n) = n else {
                eprintln!("xtask: --repeat takes a count in 1..=10000");
                return ExitCode::from(1);
            };
            let load = args.iter().any(|a| a == "--load");
            let only: Option<String> = args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .cloned();
            repeat_scenarios(&root, n, load, only.as_deref())
        }
        "test" | "soak" => {
            let quick = args.iter().any(|a| a == "--quick");
            let only: Option<Vec<String>> = args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .map(|s| s.split(',').map(str::to_owned).collect());
            let ctx = Ctx {
                root,
                soak: cmd == "soak",
            };
            run_steps(&ctx, quick, only)
        }
        "qemu" => {
            let rest: Vec<String> = args
                .iter()
                .skip(1)
                .filter(|a| *a != "--")
                .cloned()
                .collect();
            let st = Command::new("bash")
                .arg(root.join("ppc64/pseries/run.sh"))
                .args(&rest)
                .current_dir(&root)
                .status();
            match st {
                Ok(s) if s.success() => ExitCode::SUCCESS,
                Ok(s) => ExitCode::from(s.code().unwrap_or(1) as u8),
                Err(e) => {
                    eprintln!("xtask: cannot run run.sh: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "mutants" => match mutants::parse(&args[1..]).and_then(|o| mutants::run(&root, &o)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask mutants: {e}");
                ExitCode::FAILURE
            }
        },
        "list" => {
            for s in steps() {
                println!("{}{}", s.name, if s.slow { " (slow)" } else { "" });
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: cargo xtask test [--quick] [--only STEP[,STEP]] | soak [--repeat N [--load] [--only pseries|host]] | qemu -- [--cpus N] [--scenario S] | mutants [--file F]... [--in-diff REV] [--jobs N] [--report DIR] | list");
            ExitCode::from(2)
        }
    }
}

fn run_steps(ctx: &Ctx, quick: bool, only: Option<Vec<String>>) -> ExitCode {
    let all = Instant::now();
    let mut passed = 0;
    let mut failed = Vec::new();
    for s in steps() {
        if let Some(only) = &only {
            if !only.iter().any(|o| o == s.name) {
                continue;
            }
        } else if quick && s.slow {
            continue;
        }
        println!("\n==== xtask: {} ====", s.name);
        begin_step_log(ctx, s.name);
        let t = Instant::now();
        match (s.run)(ctx) {
            Ok(()) => {
                passed += 1;
                println!(
                    "==== xtask: {} ok ({:.1} s)",
                    s.name,
                    t.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                println!(
                    "==== xtask: {} FAILED ({:.1} s): {e}",
                    s.name,
                    t.elapsed().as_secs_f64()
                );
                failed.push(s.name);
            }
        }
    }
    for f in &failed {
        failure_digest(ctx, f);
    }
    println!("\nxtask: {:.0} s in all", all.elapsed().as_secs_f64());
    if !failed.is_empty() {
        println!("xtask: failed steps: {}", failed.join(", "));
    }
    println!("xtask: {} passed, {} failed", passed, failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How a step's command output is shown: `Live` streams it (and keeps a copy in the step's log);
/// `Quiet` keeps it only in the log and shows its last lines (for the fuzzers, whose progress
/// lines would bury everything else in a CI log).
#[derive(Clone, Copy, PartialEq)]
enum Show {
    Live,
    Quiet,
}

fn sh(ctx: &Ctx, dir: &str, envs: &[(&str, &str)], argv: &[&str]) -> Result<(), String> {
    sh_show(ctx, dir, envs, argv, Show::Live)
}

/// A command line split at whitespace (for command lines whose arguments contain none).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Runs the cargo command `line` with `envs` in a target directory of its own, `target/NAME`: the
/// steps whose `RUSTFLAGS` differ (loom, Miri, TSan) never invalidate the normal build.
fn cargo_apart(c: &Ctx, name: &str, envs: &[(&str, &str)], line: &str) -> Result<(), String> {
    let tgt = target_apart(c, name);
    let mut envs = envs.to_vec();
    envs.push(("CARGO_TARGET_DIR", &tgt));
    sh(c, ".", &envs, &words(line))
}

/// The target directory of a step whose flags differ from the normal build's: `target/NAME`.
fn target_apart(c: &Ctx, name: &str) -> String {
    c.root
        .join("target")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// A command as it is shown and logged: `$ K=V ... COMMAND`.
fn shown(envs: &[(&str, &str)], command: &str) -> String {
    let env: String = envs.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    format!("$ {env}{command}")
}

/// Runs the cargo commands `lines` with `envs` in the target directory `target/NAME` (as
/// [`cargo_apart`]) at the same time, one process each, and waits for all of them. Their outputs go
/// to the step's log and the terminal one after another once every one has ended (whole, not
/// interleaved); fails if any failed.
fn cargo_apart_at_once(
    c: &Ctx,
    name: &str,
    envs: &[(&str, &str)],
    lines: &[String],
) -> Result<(), String> {
    let tgt = target_apart(c, name);
    let mut envs = envs.to_vec();
    envs.push(("CARGO_TARGET_DIR", &tgt));
    for line in lines {
        println!("{} &", shown(&envs, line));
    }
    let envs = &envs;
    let runs: Vec<_> = std::thread::scope(|s| {
        let running: Vec<_> = lines
            .iter()
            .map(|line| {
                s.spawn(move || {
                    let argv = words(line);
                    let t = Instant::now();
                    let out = Command::new(argv[0])
                        .args(&argv[1..])
                        .envs(envs.iter().copied())
                        .current_dir(&c.root)
                        .output();
                    (out, t.elapsed())
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| h.join().expect("a runner thread panicked"))
            .collect()
    });
    let log = step_log(c);
    let mut failed = Vec::new();
    for (line, (run, took)) in lines.iter().zip(runs) {
        let head = format!("{}  ({:.1} s)", shown(envs, line), took.as_secs_f64());
        println!("{head}");
        let mut f = log.lock().unwrap();
        let _ = writeln!(f, "{head}");
        match run {
            Ok(o) => {
                let _ = std::io::stdout().write_all(&o.stdout);
                let _ = std::io::stderr().write_all(&o.stderr);
                let _ = f.write_all(&o.stdout);
                let _ = f.write_all(&o.stderr);
                if !o.status.success() {
                    failed.push(format!("`{line}` exited with {}", o.status));
                }
            }
            Err(e) => failed.push(format!("cannot run `{line}`: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Runs `argv` in `dir`, appending its stdout and stderr to the current step's log
/// (`target/xtask/STEP.log`, read back by the failure digest at the end of the run).
fn sh_show(
    ctx: &Ctx,
    dir: &str,
    envs: &[(&str, &str)],
    argv: &[&str],
    show: Show,
) -> Result<(), String> {
    let line = shown(envs, &argv.join(" "));
    println!("{line}");
    let log = step_log(ctx);
    {
        let mut f = log.lock().unwrap();
        let _ = writeln!(f, "{line}");
    }
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .envs(envs.iter().copied())
        .current_dir(ctx.root.join(dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let t_out = tee(out, log.clone(), show, false);
    let t_err = tee(err, log.clone(), show, true);
    let st = child.wait().map_err(|e| e.to_string())?;
    let _ = t_out.join();
    let _ = t_err.join();
    if show == Show::Quiet {
        let text = std::fs::read_to_string(log_path(ctx, &current_step())).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        // This command's part of the step log: after its `$ ...` line.
        let from = lines.iter().rposition(|l| *l == line).unwrap_or(0);
        let keys = [
            "Done ",
            "stat::",
            "ERROR",
            "SUMMARY",
            "panicked",
            "Test unit written",
            "#0 ",
        ];
        println!("  (whole output in target/xtask/{}.log)", current_step());
        for l in lines[from..]
            .iter()
            .filter(|l| keys.iter().any(|k| l.contains(k)))
        {
            println!("  | {}", truncate(l, 400));
        }
    }
    if st.success() {
        Ok(())
    } else {
        Err(format!("`{}` exited with {st}", argv.join(" ")))
    }
}

/// Copies a child's pipe to the step log, and to our own stdout/stderr when `Live`.
fn tee(
    mut r: impl Read + Send + 'static,
    log: Arc<Mutex<File>>,
    show: Show,
    is_err: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if show == Show::Live {
                if is_err {
                    let _ = std::io::stderr().write_all(&buf[..n]);
                } else {
                    let _ = std::io::stdout().write_all(&buf[..n]);
                }
            }
            let _ = log.lock().unwrap().write_all(&buf[..n]);
        }
    })
}

thread_local! {
    static STEP: std::cell::RefCell<(String, Option<Arc<Mutex<File>>>)> =
        const { std::cell::RefCell::new((String::new(), None)) };
}

fn log_path(ctx: &Ctx, step: &str) -> PathBuf {
    ctx.root.join("target/xtask").join(format!("{step}.log"))
}

fn current_step() -> String {
    STEP.with(|s| s.borrow().0.clone())
}

/// Starts the log of step `name` (truncating an old one).
fn begin_step_log(ctx: &Ctx, name: &str) {
    let p = log_path(ctx, name);
    let _ = std::fs::create_dir_all(p.parent().unwrap());
    let f = File::create(&p).ok().map(|f| Arc::new(Mutex::new(f)));
    STEP.with(|s| *s.borrow_mut() = (name.to_owned(), f));
}

fn step_log(ctx: &Ctx) -> Arc<Mutex<File>> {
    STEP.with(|s| {
        let mut s = s.borrow_mut();
        if s.1.is_none() {
            let p = log_path(ctx, "misc");
            let _ = std::fs::create_dir_all(p.parent().unwrap());
            s.1 = Some(Arc::new(Mutex::new(
                File::create(p).expect("target/xtask/misc.log"),
            )));
        }
        s.1.clone().unwrap()
    })
}

/// The lines of a failed step's log that say what failed, then its last lines: printed at the
/// very end of the run, so that a CI log cut to its tail still shows the cause.
fn failure_digest(ctx: &Ctx, step: &str) {
    let text = std::fs::read_to_string(log_path(ctx, step)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    println!("\n---- xtask: why `{step}` failed (from target/xtask/{step}.log) ----");
    let keys = [
        "panicked at",
        "FAILED",
        "FAIL:",
        "failures:",
        "error[",
        "error:",
        "assertion",
        "left:",
        "right:",
        "test result: FAILED",
        "---- ",
        "exit ",
        "Killed",
        "timed out",
    ];
    let mut shown = 0;
    for (i, l) in lines.iter().enumerate() {
        if keys.iter().any(|k| l.contains(k)) && shown < 80 {
            println!("  {:>6}: {}", i + 1, truncate(l, 400));
            shown += 1;
        }
    }
    println!("  ... last lines:");
    for l in &lines[lines.len().saturating_sub(25)..] {
        println!("  | {}", truncate(l, 400));
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Whether `cmd args…` runs and exits with success (its output discarded).
fn succeeds(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `no_std` builds, `(package, target, features)`: each is
/// `cargo build -p PACKAGE --lib --no-default-features [--features FEATURES] --target TARGET`.
/// The core on every supported target; the CAS-less thumbv6m with each of its two ways to get
/// read-modify-write atomics; the optional integrations on a microcontroller; the crash sequence on
/// the pseries target.
const NO_STD_BUILDS: &[(&str, &str, &str)] = &[
    ("nmilog", "x86_64-unknown-linux-gnu", ""),
    ("nmilog", "aarch64-unknown-none", ""),
    ("nmilog", "riscv32imac-unknown-none-elf", ""),
    ("nmilog", "thumbv7em-none-eabi", ""),
    ("nmilog", "thumbv6m-none-eabi", ""),
    ("nmilog", "powerpc64le-unknown-linux-gnu", ""),
    ("nmilog", "thumbv6m-none-eabi", "critical-section"),
    ("nmilog", "thumbv6m-none-eabi", "unsafe-assume-single-core"),
    ("nmilog", "thumbv7em-none-eabi", "defmt,log"),
    ("nmilog-ppc64", "powerpc64le-unknown-linux-gnu", ""),
];

/// The rustup targets the `no_std` builds need, each once, in the order of [`NO_STD_BUILDS`].
fn no_std_targets() -> Vec<&'static str> {
    let mut v: Vec<&str> = Vec::new();
    for &(_, t, _) in NO_STD_BUILDS {
        if !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

/// The core's unit tests under Miri (the `miri` and `miri-cross` steps), and Miri's flags.
const MIRI_TEST: &str = "cargo +nightly miri test -p nmilog --lib";
const MIRI_ENV: [(&str, &str); 1] = [("MIRIFLAGS", "-Zmiri-strict-provenance")];

/// Test-harness arguments that leave out the tests `filters` name: `--skip F` each.
fn skipping(filters: &[&str]) -> String {
    let skip: Vec<String> = filters.iter().map(|f| format!("--skip {f}")).collect();
    skip.join(" ")
}

/// Name filters that pick the first half of the unit tests Miri runs (the second half is the rest),
/// balanced by wall time on a 2-core machine, one Miri process each (Miri's own clock,
/// `--report-time`, does not track wall time across tests): 404 s and 431 s in a clean-clone CI
/// run (447 s and 473 s, and 474 s and 507 s, in later ones: the machine's variance), 847 s in one
/// process before; formatting every length is the slowest test by far.
const MIRI_FIRST_HALF: &[&str] = &[
    "tests::formatted_text_of_every_length",
    "escape::",
    "log::merge::",
    "ring::",
];

/// The targets the `miri-cross` step interprets the unit tests for: 4-byte words (where a timestamp
/// takes two words and a record header eight), and big-endian bytes (the ring and the handover
/// image store little-endian words whatever the CPU).
const MIRI_CROSS_TARGETS: &[&str] = &["i686-unknown-linux-gnu", "s390x-unknown-linux-gnu"];

/// Name filters of the unit tests the `miri-cross` step leaves out (`--skip`): the whole set takes
/// about 14 minutes a target, these about 9 of them, and none depends on the word size or byte
/// order beyond what the rest covers: text escaping, the merge heap's order (small timestamps),
/// and the long sweeps over every line length, many sources, full-ring wraps, nested drains and
/// a reader racing a writer thread, each of which the host run keeps.
const MIRI_CROSS_SKIP: &[&str] = &[
    "escape::",
    "log::merge::",
    "tests::formatted_text_of_every_length",
    "tests::text_written_a_character_at_a_time",
    "tests::drain_merges_many_sources",
    "tests::ring_wrap_counts_overwrites_exactly",
    "tests::nested_crash_drain_at_every_record",
    "tests::reader_racing_a_writer",
];

/// What clippy checks, each as `cargo clippy SCOPE --all-targets -- -D warnings`: the workspace
/// with default features, then the core with its integrations and step hooks.
const CLIPPY_SCOPES: &[&[&str]] = &[
    &["--workspace"],
    &["-p", "nmilog", "--features", "log,kv,defmt,steps"],
];

fn steps() -> Vec<Step> {
    vec![
        Step {
            name: "setup",
            slow: false,
            run: setup,
        },
        Step {
            name: "fmt",
            slow: false,
            run: |c| {
                sh(c, ".", &[], &words("cargo fmt --all -- --check"))?;
                // The standalone crates (outside the workspace).
                for m in ["ppc64/pseries/Cargo.toml", "fuzz/Cargo.toml"] {
                    let argv = ["cargo", "fmt", "--manifest-path", m, "--", "--check"];
                    sh(c, ".", &[], &argv)?;
                }
                Ok(())
            },
        },
        Step {
            name: "clippy",
            slow: false,
            run: |c| {
                for scope in CLIPPY_SCOPES {
                    let mut argv = vec!["cargo", "clippy"];
                    argv.extend_from_slice(scope);
                    argv.extend_from_slice(&["--all-targets", "--", "-D", "warnings"]);
                    sh(c, ".", &[], &argv)?;
                }
                Ok(())
            },
        },
        Step {
            name: "test",
            slow: false,
            run: |c| {
                let secs = if c.soak { "300" } else { "3" };
                let argv = words(
                    "cargo test --workspace \
                     --features nmilog/log,nmilog/kv,nmilog/defmt,nmilog/steps",
                );
                sh(c, ".", &[("NMILOG_STRESS_SECS", secs)], &argv)
                // (tests/crash_demo.rs runs `cargo run --release --example crash` itself.)
            },
        },
        Step {
            name: "stack",
            slow: false,
            run: |c| {
                // Stack figures are for optimised code (the `test` step builds debug, where the
                // test is ignored).
                let argv = words("cargo test --release --test stack -- --nocapture");
                sh(c, ".", &[], &argv)
            },
        },
        Step {
            name: "no_std",
            slow: false,
            run: |c| {
                for &(package, target, features) in NO_STD_BUILDS {
                    let mut argv = vec![
                        "cargo",
                        "build",
                        "-p",
                        package,
                        "--lib",
                        "--no-default-features",
                    ];
                    if !features.is_empty() {
                        argv.extend_from_slice(&["--features", features]);
                    }
                    argv.extend_from_slice(&["--target", target]);
                    sh(c, ".", &[], &argv)?;
                }
                Ok(())
            },
        },
        Step {
            name: "doc",
            slow: false,
            run: |c| {
                let argv = words(
                    "cargo doc --workspace --no-deps --features nmilog/log,nmilog/kv,nmilog/defmt",
                );
                sh(c, ".", &[("RUSTDOCFLAGS", "-D warnings")], &argv)
            },
        },
        Step {
            name: "pseries",
            slow: false,
            run: |c| sh(c, ".", &[], &["bash", "ppc64/pseries/test.sh"]),
        },
        Step {
            name: "loom",
            slow: true,
            run: |c| {
                let env = [
                    ("RUSTFLAGS", "--cfg nmilog_loom"),
                    ("LOOM_MAX_PREEMPTIONS", "2"),
                ];
                let line = "cargo test -p nmilog --release --test loom --features steps \
                            -- --test-threads=2 --nocapture";
                cargo_apart(c, "loom", &env, line)
            },
        },
        Step {
            name: "miri",
            slow: true,
            run: |c| {
                // Miri runs one test at a time: the unit tests in two halves, one per core, after
                // one build. The second half is the first's complement (`--skip` of the same
                // name filters), so every test runs exactly once.
                let test = MIRI_TEST;
                cargo_apart(c, "miri", &MIRI_ENV, &format!("{test} --no-run"))?;
                let halves = [
                    format!("{test} -- {}", MIRI_FIRST_HALF.join(" ")),
                    format!("{test} -- {}", skipping(MIRI_FIRST_HALF)),
                ];
                cargo_apart_at_once(c, "miri", &MIRI_ENV, &halves)
            },
        },
        Step {
            name: "miri-cross",
            slow: true,
            run: |c| {
                // The unit tests again (but the slow ones the word size cannot change), on a 32-bit
                // little-endian and a 64-bit big-endian target, one Miri process each: the ring's
                // word layout and the 32-bit code paths run nowhere else (the `no_std` step only
                // builds `thumbv6m` and the others).
                let skip = skipping(MIRI_CROSS_SKIP);
                let lines: Vec<String> = MIRI_CROSS_TARGETS
                    .iter()
                    .map(|t| format!("{MIRI_TEST} --target {t} -- {skip}"))
                    .collect();
                cargo_apart_at_once(c, "miri-cross", &MIRI_ENV, &lines)
            },
        },
        Step {
            name: "tsan",
            slow: true,
            run: |c| {
                let env = [
                    ("RUSTFLAGS", "-Zsanitizer=thread"),
                    ("RUSTDOCFLAGS", "-Zsanitizer=thread"),
                    ("NMILOG_STRESS_SECS", "3"),
                ];
                let line = "cargo +nightly test -Zbuild-std --target x86_64-unknown-linux-gnu \
                            -p nmilog --test stress_kunit --test stress_ftrace -- --nocapture";
                cargo_apart(c, "tsan", &env, line)
            },
        },
        Step {
            name: "mutants",
            slow: true,
            run: |c| {
                // Every mutant of the lines the last commit changed in the mutation-tested files
                // must be caught, hung, or listed (with its reason) in tests/mutants-equivalent.md.
                sh(c, ".", &[], &words("cargo xtask mutants --in-diff HEAD~1"))
            },
        },
        Step {
            name: "fuzz",
            slow: true,
            run: |c| {
                let secs = if c.soak {
                    "-max_total_time=600"
                } else {
                    "-max_total_time=60"
                };
                for t in ["concurrent_writers", "handover_parse", "recover_memory"] {
                    // Run on a scratch copy of the committed seeds, so the run never grows them.
                    let scratch = c.root.join("target/fuzz-corpus").join(t);
                    let _ = std::fs::remove_dir_all(&scratch);
                    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
                    let seeds = c.root.join("fuzz/corpus").join(t);
                    for e in std::fs::read_dir(&seeds).map_err(|e| e.to_string())? {
                        let e = e.map_err(|e| e.to_string())?;
                        std::fs::copy(e.path(), scratch.join(e.file_name()))
                            .map_err(|e| e.to_string())?;
                    }
                    let mut argv = words("cargo +nightly fuzz run");
                    argv.extend([t, scratch.to_str().unwrap(), "-O", "--", secs]);
                    argv.extend(words("-max_len=4096 -print_final_stats=1"));
                    sh_show(c, "fuzz", &[], &argv, Show::Quiet)?;
                }
                Ok(())
            },
        },
    ]
}

fn setup(c: &Ctx) -> Result<(), String> {
    let mut argv = vec!["rustup", "target", "add"];
    argv.extend(no_std_targets()); // x86_64-unknown-linux-gnu among them: TSan needs it
    sh(c, ".", &[], &argv)?;
    sh(c, ".", &[], &words("rustup component add clippy rustfmt"))?;
    // Miri, ThreadSanitizer's -Zbuild-std and cargo-fuzz need a nightly toolchain: install one if
    // the machine has none (an installed nightly is kept as it is, not updated).
    if !succeeds("rustup", &["run", "nightly", "rustc", "--version"]) {
        let argv = words("rustup toolchain install nightly --profile minimal");
        sh(c, ".", &[], &argv)?;
    }
    let argv = words("rustup component add --toolchain nightly miri rust-src");
    sh(c, ".", &[], &argv)?;
    if !succeeds("qemu-system-ppc64", &["--version"]) {
        sh(c, ".", &[], &words("apt-get update"))?;
        let argv = words("apt-get install -y --no-install-recommends qemu-system-ppc");
        sh(c, ".", &[], &argv)?;
    }
    if !succeeds("cargo-fuzz", &["--version"]) && !succeeds("cargo", &["fuzz", "--version"]) {
        sh(c, ".", &[], &words("cargo install cargo-fuzz --locked"))?;
    }
    Ok(())
}

/// Whether scenario `name`'s section of a `test.sh` output (from its `== NAME` line to the next
/// `== `) has a `FAIL:` line.
fn scenario_failed(text: &str, name: &str) -> bool {
    let mut inside = false;
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("== ") {
            inside = rest.split_whitespace().next() == Some(name);
        } else if inside && l.trim_start().starts_with("FAIL:") {
            return true;
        }
    }
    false
}

/// `cargo xtask soak --repeat N`: runs every pseries scenario (`test.sh`) and every host crash-demo
/// scenario test N times and prints the pass rate of each. A flaky scenario shows up as less than N/N.
fn repeat_scenarios(root: &Path, n: u32, load: bool, only: Option<&str>) -> ExitCode {
    use std::collections::BTreeMap;
    let want = |what: &str| only.is_none_or(|o| o == what);
    // Runs a command in the root, its output shown: whether it succeeded.
    let run_ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(root)
            .status()
            .is_ok_and(|s| s.success())
    };
    // Build once, outside the timed loop.
    if want("pseries") && !run_ok("bash", &["ppc64/pseries/test.sh", "--build-only"]) {
        eprintln!("xtask: building the pseries image failed");
        return ExitCode::FAILURE;
    }
    if want("host") {
        let ok = run_ok("cargo", &words("build --release --quiet --example crash"))
            && run_ok("cargo", &words("test --quiet --test crash_demo --no-run"));
        if !ok {
            eprintln!("xtask: building the crash demo failed");
            return ExitCode::FAILURE;
        }
    }
    // Busy loops on every core: the scenarios then compete for the CPUs, as on a loaded CI host.
    let hogs: Vec<std::process::Child> = if load {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (0..cores)
            .filter_map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .ok()
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut passes: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut tally = |name: String, ok: bool| {
        let e = passes.entry(name).or_insert((0, 0));
        e.1 += 1;
        if ok {
            e.0 += 1;
        }
    };
    let t0 = Instant::now();
    for i in 1..=n {
        if want("pseries") {
            let out = Command::new("bash")
                .arg(root.join("ppc64/pseries/test.sh"))
                .arg("--no-build")
                .current_dir(root)
                .output();
            let text = out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            // `== NAME (...)` starts a scenario; a `  FAIL:` line before the next one fails it.
            let mut cur: Option<(String, bool)> = None;
            for l in text.lines() {
                if let Some(rest) = l.strip_prefix("== ") {
                    if let Some((name, ok)) = cur.take() {
                        tally(format!("pseries {name}"), ok);
                    }
                    let name = rest.split_whitespace().next().unwrap_or("?").to_owned();
                    cur = Some((name, true));
                } else if l.trim_start().starts_with("FAIL:") {
                    if let Some(c) = cur.as_mut() {
                        c.1 = false;
                        println!("  run {i}: pseries {}: {}", c.0, l.trim());
                    }
                }
            }
            if let Some((name, ok)) = cur.take() {
                tally(format!("pseries {name}"), ok);
            }
            // test.sh overwrites each scenario's console log on the next run: keep a failed one.
            let mut failed: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("== "))
                .filter_map(|r| r.split_whitespace().next())
                .filter(|name| scenario_failed(&text, name))
                .collect();
            failed.dedup();
            for name in failed {
                let from = root.join(format!("ppc64/pseries/target/test-{name}.log"));
                let to = root.join(format!("target/xtask/soak-fail-run{i}-{name}.log"));
                let _ = std::fs::create_dir_all(root.join("target/xtask"));
                if std::fs::copy(&from, &to).is_ok() {
                    println!(
                        "  run {i}: pseries {name}: console kept in {}",
                        to.display()
                    );
                }
            }
        }
        if want("host") {
            // Not `cargo test --quiet`: cargo passes `--quiet` on to the test harness, whose terse
            // output (one dot per test) has no test names to tally. `--format pretty` keeps the
            // `test NAME ... ok` lines whatever the harness's default.
            let out = Command::new("cargo")
                .args(words(
                    "test --test crash_demo -- --test-threads=1 --format pretty",
                ))
                .current_dir(root)
                .output();
            let (text, err) = out
                .map(|o| {
                    (
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .unwrap_or_default();
            let mut failed = false;
            let mut seen = 0;
            for l in text.lines() {
                // `test NAME ... ok` / `test NAME ... FAILED`
                if let Some(rest) = l.strip_prefix("test ") {
                    if let Some((name, verdict)) = rest.split_once(" ... ") {
                        let ok = verdict.trim() == "ok";
                        if !ok {
                            println!("  run {i}: host {name}: {verdict}");
                            failed = true;
                        }
                        seen += 1;
                        tally(format!("host {name}"), ok);
                    }
                }
            }
            if seen == 0 {
                println!("  run {i}: host: no test result in the output");
                failed = true;
            }
            if failed {
                // The harness's failure report carries each failing run's stdout and stderr.
                let log = root.join(format!("target/xtask/soak-host-run-{i}.log"));
                let _ = std::fs::create_dir_all(root.join("target/xtask"));
                if std::fs::write(&log, format!("{text}\n---- stderr ----\n{err}")).is_ok() {
                    println!("  run {i}: host: whole output in {}", log.display());
                }
            }
        }
        println!(
            "xtask: repeat {i}/{n} done ({:.0} s so far)",
            t0.elapsed().as_secs_f64()
        );
    }
    for mut h in hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    println!(
        "\nxtask: pass rate per scenario over {n} runs{}:",
        if load { " (both cores busy)" } else { "" }
    );
    let mut all = true;
    for (name, (ok, runs)) in &passes {
        println!("  {ok:>4}/{runs:<4} {name}");
        all &= ok == runs && *runs == n;
    }
    if passes.is_empty() {
        println!("  (no scenario ran)");
        all = false;
    }
    if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
