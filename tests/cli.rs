//! The command-line tools as a user meets them: `examples/dmesg`, `examples/crash` and
//! `examples/latency`.
//!
//! * a table of bad invocations, each with the exit code and a piece of the one-line message it must
//!   give (every numeric option out of range, lists where one value is expected, unknown options,
//!   two images, `--` and `-h/--help`);
//! * `dmesg`'s bounded reads: `/dev/zero`, a 2 GiB (sparse) file of zeros, a valid image followed by
//!   2 GiB of bytes, from a file, from standard input and through a pipe, each under an address-space
//!   limit (`setrlimit(RLIMIT_AS)` in the child) and a time bound, with the time and peak memory
//!   measured (printed with `--nocapture`);
//! * text escaping: a record with controls, bidirectional overrides and line separators stays one
//!   visible line.
//!
//! The examples are built once with the caller's cargo (`cargo build --example …`, same target
//! directory and profile as this test) and run directly. Linux only, as the crash demo is.

#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nmilog::doc_support::OneCpu;
use nmilog::{handover, Level, Log};

use common::bounded::{run_limited, Run};
use common::build_examples;
use common::files::{data, TempDir};

// ------------------------------------------------------------------------------------------------
// Building and running the examples.

/// The three examples, built once (dmesg, crash, latency).
fn binaries() -> &'static [PathBuf; 3] {
    static BIN: OnceLock<[PathBuf; 3]> = OnceLock::new();
    BIN.get_or_init(|| build_examples(["dmesg", "crash", "latency"]))
}

fn binary(name: &str) -> &'static Path {
    let [dmesg, crash, latency] = binaries();
    match name {
        "dmesg" => dmesg,
        "crash" => crash,
        "latency" => latency,
        _ => panic!("no example {name}"),
    }
}

/// Runs an example with `args`, standard input closed, no memory limit to speak of (8 GiB).
fn run(name: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(binary(name));
    cmd.args(args).stdin(Stdio::null());
    run_limited(cmd, 8 << 30, Duration::from_secs(60), None)
}

// ------------------------------------------------------------------------------------------------
// Bad invocations.

/// `(example, arguments, exit code, a piece of the one-line message on stderr)`. dmesg keeps its
/// convention (2: bad command line or I/O error, 1: corrupt image); crash and latency exit with 1.
#[rustfmt::skip]
const BAD: &[(&str, &[&str], i32, &str)] = &[
    // dmesg: options, values, paths.
    ("dmesg", &["--level", "8"], 2, "--level: expected a level from 0 (emerg) to 7 (debug), got \"8\""),
    ("dmesg", &["--level", "-1"], 2, "from 0 (emerg) to 7 (debug)"),
    ("dmesg", &["--level", "256"], 2, "from 0 (emerg) to 7 (debug)"),
    ("dmesg", &["--level", "x"], 2, "from 0 (emerg) to 7 (debug)"),
    ("dmesg", &["--level=99"], 2, "from 0 (emerg) to 7 (debug)"),
    ("dmesg", &["--level"], 2, "missing argument for option '--level'"),
    ("dmesg", &["--frobnicate"], 2, "invalid option '--frobnicate'"),
    ("dmesg", &["-x"], 2, "invalid option '-x'"),
    ("dmesg", &["--kmsg=1"], 2, "unexpected argument for option '--kmsg'"),
    ("dmesg", &["--kmsg", "--json"], 2, "--kmsg and --json exclude each other"),
    ("dmesg", &["a.img", "b.img"], 2, "one image at a time: got \"a.img\" and \"b.img\""),
    ("dmesg", &["-", "b.img"], 2, "one image at a time"),
    ("dmesg", &["--", "a.img", "b.img"], 2, "one image at a time"),
    ("dmesg", &["/nonexistent/image"], 2, "cannot read /nonexistent/image"),
    ("dmesg", &["--", "-h"], 2, "cannot read -h"),
    ("dmesg", &["--", "--json"], 2, "cannot read --json"),
    ("dmesg", &["/dev/zero"], 1, "at byte 0: bad magic"),
    // crash: every numeric option, out of range or not a number.
    ("crash", &["--cpus", "1"], 1, "--cpus: expected a number from 2 to 1024, got \"1\""),
    ("crash", &["--cpus", "1025"], 1, "--cpus: expected a number from 2 to 1024"),
    ("crash", &["--cpus", "x"], 1, "--cpus: expected a number from 2 to 1024"),
    ("crash", &["--cpus", "-3"], 1, "--cpus: expected a number from 2 to 1024"),
    ("crash", &["--records-per-cpu", "0"], 1, "--records-per-cpu: expected a number from 1 to 10000000"),
    ("crash", &["--records-per-cpu", "10000001"], 1, "--records-per-cpu: expected a number from 1 to 10000000"),
    ("crash", &["--ring-bytes", "1500"], 1, "--ring-bytes: expected a power of two from 1024 to 65536, got \"1500\""),
    ("crash", &["--ring-bytes", "512"], 1, "--ring-bytes: expected a power of two from 1024 to 65536"),
    ("crash", &["--ring-bytes", "131072"], 1, "--ring-bytes: expected a power of two from 1024 to 65536"),
    ("crash", &["--seed", "18446744073709551616"], 1, "--seed: expected a number from 0 to 18446744073709551615"),
    ("crash", &["--seed", "-1"], 1, "--seed: expected a number from 0 to 18446744073709551615"),
    ("crash", &["--ack-timeout-ms", "18446744073709551615", "--deaf", "1"], 1, "--ack-timeout-ms: expected a number from 0 to 3600000"),
    ("crash", &["--ack-timeout-ms", "3600001"], 1, "--ack-timeout-ms: expected a number from 0 to 3600000"),
    ("crash", &["--tick-us", "0"], 1, "--tick-us: expected a number from 20 to 50000, got \"0\""),
    ("crash", &["--tick-us", "19"], 1, "--tick-us: expected a number from 20 to 50000"),
    ("crash", &["--tick-us", "50001"], 1, "--tick-us: expected a number from 20 to 50000"),
    ("crash", &["--work-ns", "18446744073709551615"], 1, "--work-ns: expected a number from 0 to 10000000"),
    ("crash", &["--work-ns", "10000001"], 1, "--work-ns: expected a number from 0 to 10000000"),
    ("crash", &["--records-per-cpu", "100000", "--work-ns", "1000000"], 1, "is 100 s of busy work per CPU before the crash; at most 30 s"),
    ("crash", &["--crash-cpu", "4"], 1, "--crash-cpu: expected a CPU from 0 to 3 (--cpus 4), got 4"),
    ("crash", &["--crash-cpu", "18446744073709551616"], 1, "--crash-cpu: expected a CPU number"),
    ("crash", &["--crash-cpu", "7", "--cpus", "8", "--cpus", "6"], 1, "--crash-cpu: expected a CPU from 0 to 5 (--cpus 6), got 7"),
    // CPU lists and single CPUs.
    ("crash", &["--rtas-held-by", "1,2"], 1, "--rtas-held-by: takes one CPU (or none), got \"1,2\""),
    ("crash", &["--deaf-flusher", "1,2"], 1, "--deaf-flusher: takes one CPU (or none), got \"1,2\""),
    ("crash", &["--freeze-in-log", "1,,2"], 1, "--freeze-in-log: expected a CPU number, got \"\""),
    ("crash", &["--freeze-in-log", ""], 1, "--freeze-in-log: expected a CPU number"),
    ("crash", &["--deaf", "9"], 1, "--deaf: expected CPUs from 0 to 3 (--cpus 4), got 9"),
    ("crash", &["--deaf-logging", "1,x"], 1, "--deaf-logging: expected a CPU number, got \"x\""),
    ("crash", &["--deaf", "0"], 1, "--deaf: CPU 0 is the crashing CPU"),
    ("crash", &["--freeze-in-log", "1", "--deaf-logging", "1"], 1, "--deaf-logging: CPU 1 already has a role"),
    ("crash", &["--deaf", "1,1"], 1, "--deaf: CPU 1 already has a role"),
    // Words, options, arguments.
    ("crash", &["--crash-in", "nmi"], 1, "--crash-in: expected task or irq, got \"nmi\""),
    ("crash", &["--baseline", "spin"], 1, "--baseline: expected locked or none, got \"spin\""),
    ("crash", &["--frobnicate"], 1, "invalid option '--frobnicate'"),
    ("crash", &["-x"], 1, "invalid option '-x'"),
    ("crash", &["--json=yes"], 1, "unexpected argument for option '--json'"),
    ("crash", &["--cpus"], 1, "missing argument for option '--cpus'"),
    ("crash", &["stray"], 1, "unexpected argument \"stray\""),
    ("crash", &["--", "--cpus", "4"], 1, "unexpected argument \"--cpus\""),
    // latency.
    ("latency", &["--samples", "999"], 1, "--samples: expected a number from 1000 to 50000000, got \"999\""),
    ("latency", &["--samples", "50000001"], 1, "--samples: expected a number from 1000 to 50000000"),
    ("latency", &["--samples", "1e6"], 1, "--samples: expected a number from 1000 to 50000000"),
    ("latency", &["--plot"], 1, "missing argument for option '--plot'"),
    ("latency", &["--plot", ""], 1, "--plot: expected a file name"),
    ("latency", &["--single=1"], 1, "unexpected argument for option '--single'"),
    ("latency", &["--frobnicate"], 1, "invalid option '--frobnicate'"),
    ("latency", &["stray"], 1, "unexpected argument \"stray\""),
];

#[test]
fn bad_invocations_give_one_line_and_their_exit_code() {
    let mut failures = Vec::new();
    for &(name, args, code, msg) in BAD {
        let r = run(name, args);
        let lines: Vec<&str> = r.stderr.lines().collect();
        let prefix = format!("{name}: ");
        let ok = r.code == Some(code)
            && lines.len() == 1
            && lines[0].starts_with(&prefix)
            && lines[0].contains(msg)
            && r.stdout.is_empty();
        if !ok {
            failures.push(format!(
                "{name} {args:?}: exit {:?} (want {code}), stderr {:?} (want one line with {msg:?}), stdout {:?}",
                r.code, r.stderr, r.stdout
            ));
        }
        assert!(
            r.elapsed < Duration::from_secs(10),
            "{name} {args:?} took {:?}",
            r.elapsed
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    for name in ["dmesg", "crash", "latency"] {
        for flag in ["-h", "--help"] {
            let r = run(name, &[flag]);
            assert_eq!(r.code, Some(0), "{name} {flag}: {}", r.stderr);
            assert!(
                r.stdout.starts_with(&format!("usage: {name}")),
                "{}",
                r.stdout
            );
            assert!(r.stderr.is_empty(), "{name} {flag}: {}", r.stderr);
        }
    }
    // Every option's range is in the help; the exit codes too.
    let crash = run("crash", &["--help"]).stdout;
    for want in [
        "2..=1024",
        "1..=10000000",
        "a power of two, 1024..=65536",
        "0..=18446744073709551615",
        "0..=3600000",
        "20..=50000",
        "0..=10000000",
        "Exit status: 0 success, 1 failure",
    ] {
        assert!(crash.contains(want), "{want:?} in\n{crash}");
    }
    let dmesg = run("dmesg", &["--help"]).stdout;
    assert!(dmesg.contains("0 emerg .. 7 debug"), "{dmesg}");
    assert!(dmesg.contains("Exit status: 0 ok, 1 corrupt"), "{dmesg}");
    assert!(run("latency", &["-h"]).stdout.contains("1000..=50000000"));
}

#[test]
fn double_dash_ends_options_and_dash_is_stdin() {
    let img = data("small.img");
    let want = std::fs::read_to_string(data("small.dmesg")).unwrap();
    let r = run("dmesg", &["--", img.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, want);
    // `--level=N` and `--level N` are the same option.
    let a = run("dmesg", &["--level=4", "--kmsg", img.to_str().unwrap()]);
    let b = run("dmesg", &["--kmsg", "--level", "4", img.to_str().unwrap()]);
    assert_eq!(a.code, Some(0));
    assert_eq!(a.stdout, b.stdout);
    assert!(!a.stdout.is_empty() && a.stdout.lines().count() < want.lines().count());
    // `-` (also after `--`) is standard input.
    for args in [&["-"][..], &["--", "-"][..], &[][..]] {
        let mut cmd = Command::new(binary("dmesg"));
        cmd.args(args).stdin(File::open(&img).unwrap());
        let r = run_limited(cmd, 8 << 30, Duration::from_secs(60), None);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, want, "{args:?}");
    }
}

#[test]
fn the_largest_accepted_values_run() {
    // The largest check-in wait is accepted and, with every CPU answering, costs nothing: the wait
    // ends when the last CPU has checked in (no deadlock reported, no overflow in debug builds).
    // A ring size that is a power of two is used as given, and the banner says so.
    let r = run(
        "crash",
        &[
            "--cpus",
            "2",
            "--records-per-cpu",
            "50",
            "--ring-bytes",
            "4096",
            "--ack-timeout-ms",
            "3600000",
            "--seed",
            "18446744073709551615",
            "--tick-us",
            "50000",
        ],
    );
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("2 CPUs x 50 task records, 4096 B rings"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("timer tick every 50000 us"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("verify: OK"), "{}", r.stdout);
}

// ------------------------------------------------------------------------------------------------
// Bounded reads.

/// 2 GiB: far more than dmesg may read or hold.
const HUGE: u64 = 2 << 30;
/// What dmesg may use for an input it answers from its first 64 bytes.
const SMALL_AS: u64 = 256 << 20;
/// What dmesg may use for a valid image followed by gigabytes (the issue's 1 GB).
const IMAGE_AS: u64 = 1 << 30;
/// How long one bounded read may take (the measured times are milliseconds; this absorbs a loaded
/// machine).
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// `bytes` followed by `tail` bytes of zeros, as a sparse file.
fn sparse_file(path: &Path, bytes: &[u8], tail: u64) -> PathBuf {
    let mut f = File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.set_len(bytes.len() as u64 + tail).unwrap();
    path.to_path_buf()
}

/// Runs dmesg on `input` (a path, or standard input from that file) under `as_limit`, checks the
/// time bound and prints what it measured.
fn dmesg_bounded(what: &str, args: &[&str], stdin: Option<&Path>, as_limit: u64) -> Run {
    let mut cmd = Command::new(binary("dmesg"));
    cmd.args(args);
    match stdin {
        Some(p) => cmd.stdin(File::open(p).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    let r = run_limited(cmd, as_limit, READ_TIMEOUT, None);
    eprintln!(
        "{what}: exit {:?} in {:.1} ms, peak RSS {} KiB (address space limit {} MiB)",
        r.code,
        r.elapsed.as_secs_f64() * 1e3,
        r.max_rss_kib,
        as_limit >> 20
    );
    r
}

fn assert_bad_magic(what: &str, r: &Run) {
    assert_eq!(r.code, Some(1), "{what}: {}", r.stderr);
    assert_eq!(
        r.stderr.trim_end(),
        "dmesg: corrupt handover image at byte 0: bad magic (not an nmilog handover image)",
        "{what}"
    );
    assert!(r.stdout.is_empty());
    assert!(r.max_rss_kib < 32 << 10, "{what}: {} KiB", r.max_rss_kib);
}

#[test]
fn zeros_are_answered_from_the_first_bytes() {
    let r = dmesg_bounded("/dev/zero (path)", &["/dev/zero"], None, SMALL_AS);
    assert_bad_magic("/dev/zero", &r);
    let r = dmesg_bounded(
        "/dev/zero (stdin)",
        &[],
        Some(Path::new("/dev/zero")),
        SMALL_AS,
    );
    assert_bad_magic("/dev/zero on stdin", &r);

    let dir = TempDir::new("zeros");
    let zeros = sparse_file(&dir.path("zeros"), &[], HUGE);
    let z = zeros.to_str().unwrap();
    let r = dmesg_bounded("2 GiB of zeros (path)", &[z], None, SMALL_AS);
    assert_bad_magic("2 GiB of zeros", &r);
    let r = dmesg_bounded(
        "2 GiB of zeros (stdin, -)",
        &["--json", "-"],
        Some(&zeros),
        SMALL_AS,
    );
    assert_bad_magic("2 GiB of zeros on stdin", &r);
}

#[test]
fn a_valid_image_is_recovered_whatever_follows_it() {
    let img = std::fs::read(data("small.img")).unwrap();
    let want = std::fs::read_to_string(data("small.dmesg")).unwrap();
    let want_kmsg = std::fs::read_to_string(data("small.kmsg")).unwrap();
    let dir = TempDir::new("tail");
    // Zeros after the image, and non-zero bytes (another copy of the image, then zeros).
    let tail = sparse_file(&dir.path("image+zeros"), &img, HUGE);
    let twice = [&img[..], &img[..]].concat();
    let tail2 = sparse_file(&dir.path("image+image+zeros"), &twice, HUGE);
    for (what, file) in [
        ("image + 2 GiB of zeros", &tail),
        ("image + image + 2 GiB", &tail2),
    ] {
        let f = file.to_str().unwrap();
        let r = dmesg_bounded(&format!("{what} (path)"), &[f], None, IMAGE_AS);
        assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
        assert_eq!(r.stdout, want, "{what}");
        assert!(r.stderr.starts_with("recovered=15 "), "{}", r.stderr);
        assert!(r.max_rss_kib < 64 << 10, "{what}: {} KiB", r.max_rss_kib);
        let r = dmesg_bounded(
            &format!("{what} (stdin)"),
            &["--kmsg"],
            Some(file),
            IMAGE_AS,
        );
        assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
        assert_eq!(r.stdout, want_kmsg, "{what}");
        assert!(r.max_rss_kib < 64 << 10, "{what}: {} KiB", r.max_rss_kib);
    }
}

#[test]
fn standard_input_is_read_only_as_far_as_the_image_goes() {
    // A writer that would send the image and then 2 GiB: dmesg stops reading after the image and
    // exits; the writer's next write fails (broken pipe) long before its 2 GiB.
    let img = std::fs::read(data("small.img")).unwrap();
    let want = std::fs::read_to_string(data("small.dmesg")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let feed = Box::new(move |mut stdin: std::process::ChildStdin| {
        let mut sent = 0u64;
        let chunk = vec![0x5au8; 1 << 20];
        let mut result = stdin.write_all(&img);
        if result.is_ok() {
            sent += img.len() as u64;
            while sent < HUGE {
                result = stdin.write_all(&chunk);
                if result.is_err() {
                    break;
                }
                sent += chunk.len() as u64;
            }
        }
        tx.send((sent, result.err().map(|e| e.kind()))).unwrap();
    });
    let cmd = Command::new(binary("dmesg"));
    let r = run_limited(cmd, IMAGE_AS, READ_TIMEOUT, Some(feed));
    let (sent, err) = rx.recv().unwrap();
    eprintln!(
        "image + 2 GiB through a pipe: exit {:?} in {:.1} ms, peak RSS {} KiB; the writer got {:?} after {} bytes",
        r.code,
        r.elapsed.as_secs_f64() * 1e3,
        r.max_rss_kib,
        err,
        sent
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, want);
    assert_eq!(err, Some(std::io::ErrorKind::BrokenPipe));
    assert!(sent < 64 << 20, "{sent} bytes went into the pipe");
}

/// Sets the core header's record area size (`A`, bytes 48..56) and recomputes its CRC32C.
fn with_declared_area(img: &[u8], area: u64) -> Vec<u8> {
    let mut v = img.to_vec();
    v[48..56].copy_from_slice(&area.to_le_bytes());
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&v[..60]);
    v[60..64].copy_from_slice(&crc.to_le_bytes());
    v
}

#[test]
fn an_image_declaring_more_than_the_maximum_is_read_up_to_it() {
    // The header (checksum intact) claims a record area of 1 TiB: dmesg reads at most its
    // documented maximum (256 MiB), prints the records it found, says why it stopped and exits 1.
    let img = std::fs::read(data("small.img")).unwrap();
    let huge = with_declared_area(&img, 1 << 40);
    assert!(handover::parse(&huge).is_ok());
    let dir = TempDir::new("oversized");
    let file = sparse_file(&dir.path("oversized"), &huge, HUGE);
    let r = dmesg_bounded(
        "image declaring 1 TiB + 2 GiB of zeros",
        &[file.to_str().unwrap()],
        None,
        IMAGE_AS,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        std::fs::read_to_string(data("small.dmesg")).unwrap()
    );
    let err: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(err.len(), 3, "{err:?}");
    let declared = u64::from(u32::from_le_bytes(img[56..60].try_into().unwrap())) + (1 << 40);
    assert!(
        err[0].contains(&format!(
            "the image declares {declared} bytes, more than the 268435456 this reader reads"
        )),
        "{}",
        err[0]
    );
    assert!(err[1].starts_with("recovered=15 "), "{}", err[1]);
    assert!(
        err[2].contains("corrupt handover image at byte"),
        "{}",
        err[2]
    );
    assert!(
        r.max_rss_kib < (IMAGE_AS >> 10) as i64,
        "{} KiB",
        r.max_rss_kib
    );

    // The same header with only its own image behind it: the same records, and memory for the
    // bytes that are there, not for the size the header claims.
    let short = sparse_file(&dir.path("oversized-alone"), &huge, 0);
    let r = dmesg_bounded(
        "image declaring 1 TiB, alone (stdin)",
        &[],
        Some(&short),
        SMALL_AS,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        std::fs::read_to_string(data("small.dmesg")).unwrap()
    );
    assert!(r.stderr.contains("recovered=15 "), "{}", r.stderr);
    assert!(r.max_rss_kib < 32 << 10, "{} KiB", r.max_rss_kib);
}

// ------------------------------------------------------------------------------------------------
// Text escaping.

/// An image with one record per `texts` entry (CPU 0, task context, crash drain of a one-CPU log).
fn image_of(texts: &[&str]) -> Vec<u8> {
    let log: Box<Log<OneCpu, 1, 1024, 4096>> = Box::new(Log::new(OneCpu));
    for t in texts {
        log.append_raw(Level::Info, 0, 0, t.as_bytes()).unwrap();
    }
    log.crash_enter().unwrap();
    let mut out = vec![0u8; Log::<OneCpu, 1, 1024, 4096>::MAX_IMAGE_BYTES];
    let n = handover::write_image(&*log, &mut out, &|_| true).unwrap();
    out.truncate(n);
    out
}

#[test]
fn text_output_escapes_controls_and_format_characters() {
    let hostile = [
        "ok \u{202e}txt.exe\u{202c} and \u{2066}isolate\u{2069}",
        "one\u{2028}line\u{2029}only\u{85}really\r\n\u{1b}[2Jcleared",
        "zero\u{200b}width\u{feff}bom\u{ad}shy\u{e0041}tag",
        "plain: 5 \u{b5}s \u{2192} ok \\ \"q\"",
    ];
    let img = image_of(&hostile);
    let dir = TempDir::new("escape");
    let path = dir.path("hostile.img");
    std::fs::write(&path, &img).unwrap();
    let p = path.to_str().unwrap();

    let r = run("dmesg", &[p]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), hostile.len(), "{}", r.stdout);
    assert!(lines[0].ends_with(r"C0 ok \u{202e}txt.exe\u{202c} and \u{2066}isolate\u{2069}"));
    assert!(lines[1].ends_with(r"C0 one\u{2028}line\u{2029}only\x85really\x0d\x0a\x1b[2Jcleared"));
    assert!(lines[2].ends_with(r"C0 zero\u{200b}width\u{feff}bom\u{ad}shy\u{e0041}tag"));
    assert!(lines[3].ends_with("C0 plain: 5 \u{b5}s \u{2192} ok \\ \"q\""));
    assert!(!r
        .stdout
        .chars()
        .any(|c| c != '\n' && nmilog::escape::text_escapes(c)));

    // kmsg escapes every byte outside printable ASCII (and the backslash), as the kernel does.
    let r = run("dmesg", &["--kmsg", p]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.is_ascii());
    assert!(
        r.stdout.contains(";ok \\xe2\\x80\\xaetxt.exe"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("one\\xe2\\x80\\xa8line"), "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), hostile.len());

    // JSON keeps the text (decoded, it is the record), one object per line.
    let r = run("dmesg", &["--json", p]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), hostile.len());
    assert!(r
        .stdout
        .contains("one\\u2028line\\u2029only\\u0085really\\r\\n\\u001b[2Jcleared"));
}
