//! `cargo xtask mutants`: mutation testing of the core's protocol code with `cargo-mutants`.
//!
//! Every mutant of the files in [`MUTATION_TESTED`] (or of the `--file`s given) is built and run
//! against the fast test set named in `.cargo/mutants.toml`. A mutant that no test notices is a
//! blind spot, unless `tests/mutants-equivalent.md` lists it with the reason it cannot change
//! behaviour. The run fails when any missed mutant is not listed there, and prints, per file, the
//! score `(caught + hung) / viable` (listed equivalents count as missed in it).
//!
//! `--in-diff REV` mutates only the lines changed since `REV` (CI passes `HEAD~1`): a change that
//! adds behaviour no test notices fails CI.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The files held to the mutation score: the per-CPU ring, the flush and the merge engine, the
/// crash drain, the handover image's parser and the raw-memory reader.
pub const MUTATION_TESTED: &[&str] = &[
    "src/ring/mod.rs",
    "src/ring/read.rs",
    "src/ring/run.rs",
    "src/ring/write.rs",
    "src/log/flush.rs",
    "src/log/merge.rs",
    "src/log/crash/input.rs",
    "src/log/crash/mod.rs",
    "src/log/crash/run.rs",
    "src/log/crash/sources.rs",
    "src/log/crash/state.rs",
    "src/handover/parse.rs",
    "src/recover/reader.rs",
];

/// The version of `cargo-mutants` the outcome files are read in the format of.
const CARGO_MUTANTS: &str = "27.1.0";

/// Where the listed equivalent mutants are.
const EQUIVALENT: &str = "tests/mutants-equivalent.md";

pub struct Options {
    pub files: Vec<String>,
    pub in_diff: Option<String>,
    pub jobs: Option<String>,
    /// Only report on the outcome of an earlier run (its `mutants.out` folder).
    pub report: Option<String>,
}

/// Parses `[--file F]... [--in-diff REV] [--jobs N] [--report DIR]`.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        files: Vec::new(),
        in_diff: None,
        jobs: None,
        report: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} takes a value"));
        match a.as_str() {
            "--file" => o.files.push(value()?),
            "--in-diff" => o.in_diff = Some(value()?),
            "--jobs" => o.jobs = Some(value()?),
            "--report" => o.report = Some(value()?),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

/// A mutant's name without its line and column (`src/ring/read.rs: replace > with >= in …`): the
/// key the equivalence list uses, stable when lines move.
fn key(name: &str) -> String {
    // `FILE:LINE:COL: DESCRIPTION`
    let mut parts = name.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(file), Some(_line), Some(_col), Some(rest)) => format!("{file}:{rest}"),
        _ => name.to_owned(),
    }
}

/// The mutants `tests/mutants-equivalent.md` lists: each line `` - `KEY` — reason ``, counted
/// (the same mutation can occur twice in one function).
fn equivalent(root: &Path) -> Result<BTreeMap<String, usize>, String> {
    let text = std::fs::read_to_string(root.join(EQUIVALENT))
        .map_err(|e| format!("cannot read {EQUIVALENT}: {e}"))?;
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("- `") else {
            continue;
        };
        let Some((k, why)) = rest.split_once('`') else {
            continue;
        };
        if why
            .trim_start_matches([' ', '—', '-', ':'])
            .trim()
            .is_empty()
        {
            return Err(format!("{EQUIVALENT}: `{k}` is listed without a reason"));
        }
        *m.entry(k.to_owned()).or_insert(0) += 1;
    }
    Ok(m)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn file_of(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// Installs `cargo-mutants` if the machine has none.
fn install(root: &Path) -> Result<(), String> {
    let have = Command::new("cargo")
        .args(["mutants", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    let st = Command::new("cargo")
        .args([
            "install",
            "cargo-mutants",
            "--locked",
            "--version",
            CARGO_MUTANTS,
        ])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err("cargo install cargo-mutants failed".into())
    }
}

pub fn run(root: &Path, o: &Options) -> Result<(), String> {
    if let Some(dir) = &o.report {
        return report(root, Path::new(dir));
    }
    let files: Vec<String> = if o.files.is_empty() {
        MUTATION_TESTED.iter().map(|s| s.to_string()).collect()
    } else {
        o.files.clone()
    };
    let out = root.join("target/mutants");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    // A run that finds nothing to mutate writes no outcome: never report an older run's.
    let _ = std::fs::remove_dir_all(out.join("mutants.out"));
    let mut argv: Vec<String> = ["mutants", "-p", "nmilog", "--no-shuffle", "-o"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(out.to_str().unwrap().to_owned());
    for f in &files {
        argv.extend(["-f".to_owned(), f.clone()]);
    }
    if let Some(j) = &o.jobs {
        argv.extend(["--jobs".to_owned(), j.clone()]);
    }
    if let Some(rev) = &o.in_diff {
        let has_rev = Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ])
            .current_dir(root)
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_rev {
            println!("xtask mutants: no commit {rev} in this clone: nothing to compare with");
            return Ok(());
        }
        let mut git = Command::new("git");
        git.args(["diff", rev, "--"]).args(&files).current_dir(root);
        let diff = git
            .output()
            .map_err(|e| format!("cannot run git diff: {e}"))?;
        if !diff.status.success() {
            return Err(format!("git diff {rev} failed"));
        }
        if diff.stdout.is_empty() {
            println!("xtask mutants: the mutation-tested files are unchanged since {rev}");
            return Ok(());
        }
        let patch = out.join("in-diff.patch");
        std::fs::write(&patch, &diff.stdout).map_err(|e| e.to_string())?;
        argv.extend(["--in-diff".to_owned(), patch.to_str().unwrap().to_owned()]);
    }
    // Only now, when there is something to mutate: a commit that touched none of the files
    // costs CI no install.
    install(root)?;
    println!("$ cargo {}", argv.join(" "));
    let st = Command::new("cargo")
        .args(&argv)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo mutants: {e}"))?;
    // Exit codes: 0 all caught, 2 some missed, 3 some timed out (hung: noticed), 4 the tests fail
    // without any mutation, 1 usage.
    match st.code() {
        Some(0 | 2 | 3) => {}
        _ => return Err(format!("cargo mutants failed ({st})")),
    }
    report(root, &out.join("mutants.out"))
}

/// The per-file table, and the missed mutants that are not listed as equivalent.
fn report(root: &Path, dir: &Path) -> Result<(), String> {
    let caught = lines(&dir.join("caught.txt"));
    let hung = lines(&dir.join("timeout.txt"));
    let unviable = lines(&dir.join("unviable.txt"));
    let missed = lines(&dir.join("missed.txt"));
    let mut listed = equivalent(root)?;
    #[derive(Default)]
    struct Row {
        caught: usize,
        unviable: usize,
        missed: usize,
        equivalent: usize,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for m in caught.iter().chain(&hung) {
        rows.entry(file_of(m).to_owned()).or_default().caught += 1;
    }
    for m in &unviable {
        rows.entry(file_of(m).to_owned()).or_default().unviable += 1;
    }
    let mut blind = Vec::new();
    for m in &missed {
        let r = rows.entry(file_of(m).to_owned()).or_default();
        r.missed += 1;
        match listed.get_mut(&key(m)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                r.equivalent += 1;
            }
            _ => blind.push(m.clone()),
        }
    }
    println!("\n| file | mutants | unviable | caught or hung | missed | of which listed | score | score without the listed |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let pct = |a: usize, b: usize| {
        if b == 0 {
            "—".to_owned()
        } else {
            format!("{:.1} %", 100.0 * a as f64 / b as f64)
        }
    };
    for (f, r) in &rows {
        let viable = r.caught + r.missed;
        println!(
            "| `{f}` | {} | {} | {} | {} | {} | {} | {} |",
            viable + r.unviable,
            r.unviable,
            r.caught,
            r.missed,
            r.equivalent,
            pct(r.caught, viable),
            pct(r.caught, viable - r.equivalent),
        );
    }
    if blind.is_empty() {
        println!("\nxtask mutants: every viable mutant is caught, hung or listed in {EQUIVALENT}");
        Ok(())
    } else {
        println!("\nxtask mutants: missed, and not listed in {EQUIVALENT}:");
        for m in &blind {
            println!("  {m}");
        }
        Err(format!("{} mutants no test notices", blind.len()))
    }
}
