//! `examples/dmesg` on the checked-in image `tests/data/small.img`, which this test also generates
//! (deterministically: the crash drain into the image) and compares byte for byte. `NMILOG_BLESS=1`
//! rewrites the image and the expected outputs (`small.dmesg`, `small.kmsg`, `small.json`). The
//! version-1 image of the same log, `small-v1.img`, and its outputs are never rewritten: the reader
//! must go on reading what the previous writer wrote. The example is built with the caller's cargo
//! (`cargo build --example dmesg`, same target directory) and run directly.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use nmilog::handover;
use nmilog::record::{facility, flags};
use nmilog::ring::WriteStep;
use nmilog::{ContextKind, Level, Log, Origin, Platform, RecordBuf};

use common::examples::{dmesg_binary, messages, text};
use common::files::data;
use common::{assert_version_1_of, owned, unstamped, Manual};

/// [`Manual`] that also names a task (Linux's `caller=T<tid>`): the test sets it, 0 for none.
struct Tasked {
    manual: Manual,
    task: AtomicU32,
}

impl Tasked {
    fn new(manual: Manual) -> Self {
        Tasked {
            manual,
            task: AtomicU32::new(0),
        }
    }
    /// Makes `c` the current CPU.
    fn set_cpu(&self, c: usize) {
        self.manual.set_cpu(c);
    }
    /// Makes `t` the running task (0: none, records then name the CPU).
    fn set_task(&self, t: u32) {
        self.task.store(t, Ordering::Relaxed);
    }
}

impl Platform for Tasked {
    fn cpu_id(&self) -> usize {
        self.manual.cpu_id()
    }
    fn now_ns(&self) -> u64 {
        self.manual.now_ns()
    }
    fn cpu_count(&self) -> usize {
        self.manual.cpu_count()
    }
    fn task_id(&self) -> Option<u32> {
        Some(self.task.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }
}

/// Builds the small image: four CPUs, every context kind, continuations (including one in crash
/// context and one without a line to join), text that needs escaping, a raw frame, a non-UTF-8
/// payload, a writer frozen mid-record (torn), a refused call (dropped) and a bad CPU id. Some
/// task-context records name their task (task 1 on CPU 0, task 42 on CPU 1), the others their CPU.
fn small_image() -> Vec<u8> {
    // The test picks the CPU and the task; the clock starts at 5.123456789 s and advances by
    // 1.000250 ms per read, so every timestamp is deterministic.
    let log: Box<Log<Tasked, 4, 256, 4096, 4>> = Box::new(Log::new(Tasked::new(
        Manual::with_clock(4, 5_123_456_789, 1_000_250),
    )));
    let cpu = |c: usize| log.platform().set_cpu(c);
    let task = |t: u32| log.platform().set_task(t);

    cpu(0);
    log.log_fmt(
        Level::Notice,
        0,
        format_args!("Linux version 6.9.0-nmilog (test)"),
    )
    .unwrap();
    task(1);
    log.log_fmt(Level::Info, 0, format_args!("smp: booting {} CPUs", 4))
        .unwrap();
    task(0);
    cpu(1);
    log.log_fmt(Level::Info, 0, format_args!("smp: CPU 1 online"))
        .unwrap();
    cpu(0);
    task(1);
    log.log_fmt(Level::Info, 0, format_args!("Memory: 8192K available"))
        .unwrap();
    log.log_fmt(Level::Info, flags::CONT, format_args!(" (1024K reserved)"))
        .unwrap();
    task(0);
    cpu(2);
    {
        let _irq = log.enter(ContextKind::Irq);
        log.log_fmt(
            Level::Warning,
            0,
            format_args!("eth0: link \"up\" \\ 1000Mb/s"),
        )
        .unwrap();
    }
    cpu(1);
    task(42);
    log.log_fmt(Level::Debug, 0, format_args!("debug:\ttab and\nnewline"))
        .unwrap();
    task(0);
    cpu(2);
    log.append_raw(
        Level::Info,
        facility::DEFMT,
        flags::RAW,
        &[0x01, 0xab, 0xcd, 0x00],
    )
    .unwrap();
    log.append_raw(Level::Err, 0, 0, b"bad \xff utf8").unwrap();
    cpu(0);
    task(1);
    log.log_fmt(
        Level::Info,
        0,
        format_args!("unicode: 5 \u{b5}s \u{2192} ok"),
    )
    .unwrap();
    task(0);
    cpu(3);
    log.log_fmt(
        Level::Info,
        flags::CONT,
        format_args!("orphan continuation"),
    )
    .unwrap();
    {
        let _nmi = log.enter(ContextKind::Nmi);
        log.append_raw(Level::Emerg, 0, 0, b"NMI watchdog: hard LOCKUP on cpu 3")
            .unwrap();
    }
    // CPU 1 is stopped by the crash NMI in the middle of a record, and its ring stays busy.
    cpu(1);
    let frozen = log.append_raw_with_hook(Level::Info, 0, 0, b"never seen", &mut |s: WriteStep| {
        s != WriteStep::HeaderWritten
    });
    assert!(frozen.is_err());
    assert!(log.append_raw(Level::Info, 0, 0, b"refused").is_err());
    cpu(9);
    assert!(log.append_raw(Level::Info, 0, 0, b"bad cpu").is_err());
    cpu(0);
    log.crash_enter().unwrap();
    log.append_raw(Level::Emerg, 0, 0, b"Kernel panic - not syncing: sysrq")
        .unwrap();
    log.append_raw(Level::Info, 0, flags::CONT, b" (test crash)")
        .unwrap();
    // The crash drain (read-only: `write_image` below drains again and gets the same records): every
    // record once, in timestamp order, the frozen one counted torn in one accounting record at the
    // end.
    let mut drained: Vec<(Origin, String)> = Vec::new();
    let rep = log
        .drain_on_crash(&|_| true, &mut |o: Origin, r: &RecordBuf| {
            let text = r
                .text()
                .map_or_else(|| format!("{:02x?}", r.payload()), String::from);
            drained.push((o, text));
            true
        })
        .unwrap();
    assert!(rep.complete, "{rep:?}");
    assert_eq!(
        (
            rep.records,
            rep.from_main,
            rep.from_rings,
            rep.accounting_records
        ),
        (15, 11, 3, 1),
        "{rep:?}"
    );
    assert_eq!((rep.torn, rep.in_flight, rep.overwritten), (1, 0, 0));
    assert_eq!(
        drained.last().unwrap(),
        &(
            Origin::Accounting,
            "nmilog: cpu 1 task (depth 0): 1 torn, 0 overwritten, 1 dropped".to_string()
        )
    );
    assert!(drained
        .iter()
        .all(|(_, t)| t != "never seen" && t != "refused"));
    // The records logged after the last flush (CPU 3's NMI line, the crashing CPU's lines) come from
    // their rings, the rest from the main log.
    let from_rings: Vec<&str> = drained
        .iter()
        .filter(|(o, _)| matches!(o, Origin::Ring { .. }))
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(
        from_rings,
        [
            "NMI watchdog: hard LOCKUP on cpu 3",
            "Kernel panic - not syncing: sysrq",
            " (test crash)"
        ]
    );
    let mut out = vec![0u8; 16 << 10];
    let wrote = handover::write_image_report(&*log, &mut out, &|_| true).unwrap();
    assert_eq!((wrote.records, wrote.left_out), (rep.records, 0));
    out.truncate(wrote.len);
    out
}

fn bless() -> bool {
    std::env::var_os("NMILOG_BLESS").is_some_and(|v| v == "1")
}

/// Runs `examples/dmesg` with `args`, feeding `stdin`.
fn dmesg(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(dmesg_binary());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run examples/dmesg");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The image on disk, regenerated (and the expected outputs re-blessed) under `NMILOG_BLESS=1`.
fn checked_in_image() -> Vec<u8> {
    static ONCE: OnceLock<Vec<u8>> = OnceLock::new();
    ONCE.get_or_init(generate_and_bless).clone()
}

fn generate_and_bless() -> Vec<u8> {
    let fresh = small_image();
    let path = data("small.img");
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
        for (flag, file) in [
            (None, "small.dmesg"),
            (Some("--kmsg"), "small.kmsg"),
            (Some("--json"), "small.json"),
        ] {
            let mut args = vec![path.to_str().unwrap()];
            args.extend(flag);
            let out = dmesg(&args, None);
            assert!(out.status.success(), "{}", text(&out.stderr));
            std::fs::write(data(file), &out.stdout).unwrap();
        }
    }
    fresh
}

#[test]
fn small_image_is_reproducible_and_checked_in() {
    let fresh = checked_in_image();
    let on_disk = std::fs::read(data("small.img")).expect("tests/data/small.img (NMILOG_BLESS=1)");
    assert_eq!(
        fresh, on_disk,
        "regenerate with NMILOG_BLESS=1 and review the diff"
    );
    let image = handover::parse(&on_disk).unwrap();
    assert_eq!(image.corruption(), None);
    assert_eq!(image.version(), handover::VERSION);
    assert_eq!((image.cpu_count(), image.depth()), (4, 4));
    assert_eq!(
        (
            image.record_count(),
            image.left_out(),
            image.bad_cpu_dropped()
        ),
        (15, 0, 1)
    );
    // Numbered from the main log's start (it never wrapped), one more per record.
    let seqs: Vec<u64> = image.records().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..15).collect::<Vec<u64>>());
    let t = image.totals();
    assert_eq!(
        (t.torn, t.overwritten, t.dropped, t.in_flight),
        (1, 0, 1, 0)
    );
    assert_eq!(image.counters(1, 0).unwrap().torn, 1);
    for cpu in 0..4 {
        assert_eq!(image.cpu_stopped(cpu), Some(true), "cpu {cpu}");
    }
}

fn expect_output(args: &[&str], file: &str) -> (String, String) {
    expect_output_of("small.img", args, file)
}

/// Runs `examples/dmesg` on the checked-in image `image` with `args`; its stdout must be the
/// checked-in `file`. Returns its stdout and stderr.
fn expect_output_of(image: &str, args: &[&str], file: &str) -> (String, String) {
    let _ = checked_in_image();
    let img = data(image);
    let mut all = vec![img.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = dmesg(&all, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = std::fs::read_to_string(data(file)).unwrap();
    assert_eq!(text(&out.stdout), want, "dmesg {image} {args:?} vs {file}");
    (want, text(&out.stderr).to_owned())
}

#[test]
fn dmesg_format_matches_expected_output() {
    let (out, stderr) = expect_output(&[], "small.dmesg");
    let bytes = std::fs::read(data("small.img")).unwrap();
    let image = handover::parse(&bytes).unwrap();
    assert_eq!(
        stderr.trim_end(),
        format!(
            "recovered={} torn=1 overwritten=0 dropped=1 left_out=0 bad_cpu=1",
            image.record_count()
        )
    );
    // Spot checks of the format itself, independent of the blessed file.
    assert!(
        out.starts_with("[    5.123456] C0 Linux version 6.9.0-nmilog (test)\n"),
        "{out}"
    );
    // A task's continuation joins its line; records that name a task show it, the others their CPU.
    assert!(out.contains("] T1 Memory: 8192K available (1024K reserved)\n"));
    assert!(out.contains("] T1 smp: booting 4 CPUs\n"));
    assert!(out.contains("] C1 smp: CPU 1 online\n"));
    assert!(out.contains("] C2/irq eth0: link \"up\" \\ 1000Mb/s\n"));
    assert!(out.contains("] C3/nmi NMI watchdog: hard LOCKUP on cpu 3\n"));
    assert!(out.contains("] C0/crash Kernel panic - not syncing: sysrq (test crash)\n"));
    assert!(out.contains("] C3 orphan continuation\n"));
    assert!(out.contains("] T42 debug:\\x09tab and\\x0anewline\n"));
    assert!(out.contains("] C2 raw[4]: 01abcd00\n"));
    assert!(out.contains("] C2 raw[10]: 62616420ff2075746638\n"));
    assert!(out.contains("nmilog: cpu 1 task (depth 0): 1 torn, 0 overwritten, 1 dropped"));
    assert!(!out.contains("never seen"));
}

/// `tests/data/small-v1.img`: the same log as `small.img`, written by the previous writer (format
/// version 1: 32-byte counter entries, no in-flight counts, no stopped flags), checked in once and
/// never regenerated, with what `examples/dmesg` printed for it then (`small-v1.{dmesg,kmsg,json}`).
/// This reader still reads it: the same records as the version-2 image (only the accounting record's
/// timestamp differs: each drain stamps it when it runs), the same counters, every CPU read as
/// stopped; and the tool prints what it printed then.
#[test]
fn a_version_1_image_still_reads() {
    let v2_bytes = checked_in_image();
    let v1_bytes = std::fs::read(data("small-v1.img")).unwrap();
    let v1 = handover::parse(&v1_bytes).unwrap();
    let v2 = handover::parse(&v2_bytes).unwrap();
    assert_eq!((v1.version(), v2.version()), (1, 2));
    // Eight more bytes per counter entry (four CPUs, four depths) and a longer record header (24
    // bytes then, 32 now: the caller field), each entry padded to eight; the layout table's ninth
    // entry fits in the fixed core header.
    let v1_entry = |len: usize| (8 + 24 + len + 4).next_multiple_of(8);
    let record_growth: usize = v2
        .records()
        .map(|r| handover::record_size(r.payload.len()) - v1_entry(r.payload.len()))
        .sum();
    assert_eq!(v2_bytes.len() - v1_bytes.len(), 4 * 4 * 8 + record_growth);
    // Version 1 headers have no caller field: read as 0 (unknown).
    let no_caller = |recs: Vec<common::Owned>| -> Vec<common::Owned> {
        recs.into_iter()
            .map(|(seq, mut h, p)| {
                h.caller = 0;
                (seq, h, p)
            })
            .collect()
    };
    assert_eq!(
        unstamped(owned(v1.records())),
        no_caller(unstamped(owned(v2.records())))
    );
    assert_eq!(v2.totals().in_flight, 0); // so the counters are the same to the last field
    assert_version_1_of(&v1, &v2, (4, 4, 1, 0));
    for (args, file) in [
        (&[][..], "small-v1.dmesg"),
        (&["--kmsg"][..], "small-v1.kmsg"),
        (&["--json"][..], "small-v1.json"),
    ] {
        let (_, stderr) = expect_output_of("small-v1.img", args, file);
        assert_eq!(
            stderr.trim_end(),
            "recovered=15 torn=1 overwritten=0 dropped=1 left_out=0 bad_cpu=1"
        );
    }
}

#[test]
fn kmsg_format_matches_expected_output() {
    let (out, _) = expect_output(&["--kmsg"], "small.kmsg");
    assert!(
        out.starts_with("5,0,5123456,-,caller=C0;Linux version 6.9.0-nmilog (test)\n"),
        "{out}"
    );
    assert!(out.contains(",c,caller=T1; (1024K reserved)\n"));
    assert!(out.contains(",-,caller=T42;debug:"));
    assert!(out.contains(",-,caller=C3;NMI watchdog"));
    // nmilog's own accounting record names no caller: the field is left out, as Linux does without
    // CONFIG_PRINTK_CALLER.
    assert!(out.contains(",-;nmilog: cpu 1 task (depth 0)"));
    assert!(out.contains(";eth0: link \"up\" \\x5c 1000Mb/s\n"));
    assert!(out.contains(";unicode: 5 \\xc2\\xb5s \\xe2\\x86\\x92 ok\n"));
}

#[test]
fn json_format_matches_expected_output() {
    let (out, _) = expect_output(&["--json"], "small.json");
    for line in out.lines() {
        assert!(
            line.starts_with("{\"seq\":") && line.ends_with('}'),
            "{line}"
        );
    }
    assert!(out.contains(
        "\"cpu\":2,\"ctx\":\"irq\",\"level\":4,\"text\":\"eth0: link \\\"up\\\" \\\\ 1000Mb/s\"}"
    ));
    assert!(out.contains("\"text\":\"debug:\\ttab and\\nnewline\"}"));
    assert!(out.contains("\"ctx\":\"crash\",\"level\":6,\"text\":\" (test crash)\",\"cont\":true}"));
    assert!(out.contains("\"text\":\"raw[4]: 01abcd00\",\"raw\":true}"));
    assert!(out.contains("\"ts_ns\":5135459789,\"caller\":\"T42\",\"cpu\":1,"));
    assert!(out.contains("\"caller\":\"C0\",\"cpu\":0,\"ctx\":\"crash\""));
    let accounting = out.lines().last().unwrap();
    assert!(
        accounting.contains("nmilog: cpu 1") && !accounting.contains("caller"),
        "{accounting}"
    );
}

#[test]
fn level_filter_and_stdin() {
    let _ = checked_in_image();
    let img = std::fs::read(data("small.img")).unwrap();
    let out = dmesg(&["--kmsg", "--level", "4"], Some(&img));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let full = std::fs::read_to_string(data("small.kmsg")).unwrap();
    let want: String = full
        .lines()
        .filter(|l| l.split(',').next().unwrap().parse::<u8>().unwrap() <= 4)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(want.lines().count() >= 4 && want.lines().count() < full.lines().count());
    assert_eq!(text(&out.stdout), want);

    let out = dmesg(&["--level", "0", "-"], Some(&img));
    assert!(out.status.success());
    let lines: Vec<&str> = text(&out.stdout).lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].ends_with("C3/nmi NMI watchdog: hard LOCKUP on cpu 3"));
    assert!(lines[1].ends_with("C0/crash Kernel panic - not syncing: sysrq (test crash)"));
}

#[test]
fn a_corrupt_image_is_one_error_line_and_exit_code_1() {
    let _ = checked_in_image();
    let img = std::fs::read(data("small.img")).unwrap();

    // Damaged core header: nothing printed, one line naming the problem and the offset.
    let mut bad = img.clone();
    bad[20] ^= 0x40;
    let out = dmesg(&[], Some(&bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("at byte 0") && err.contains("checksum mismatch"),
        "{err}"
    );

    // Damaged last record: the records before it are printed, then the summary and the error.
    let image = handover::parse(&img).unwrap();
    let last_len = image.records().last().unwrap().payload.len();
    let last_at = img.len() - handover::record_size(last_len);
    let mut bad = img.clone();
    bad[last_at + 40] ^= 1;
    let out = dmesg(&["--kmsg"], Some(&bad));
    assert_eq!(out.status.code(), Some(1));
    let full = std::fs::read_to_string(data("small.kmsg")).unwrap();
    let mut want: Vec<&str> = full.lines().collect();
    want.pop();
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), want);
    let err: Vec<&str> = text(&out.stderr).lines().collect();
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(err[0].starts_with(&format!("recovered={} ", want.len())));
    assert!(
        err[1].contains(&format!("at byte {last_at}")) && err[1].contains("checksum"),
        "{}",
        err[1]
    );

    // Truncated inside the fixed part.
    let out = dmesg(&[], Some(&img[..100]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1);
    assert!(
        err.contains("at byte 100") && err.contains("truncated"),
        "{err}"
    );
}

/// Continuations join per caller, as Linux's caller id keys them: a task's `pr_cont!` joins its
/// own line even after it migrated to another CPU and another task logged on its old one; outside a
/// task, per CPU and context; and a record that ended with a newline (`flags::NEWLINE`) closes its
/// line, so the next continuation starts a new one.
#[test]
fn continuations_join_per_task_and_a_newline_ends_the_line() {
    let log: Box<Log<Tasked, 3, 256, 4096, 4>> = Box::new(Log::new(Tasked::new(
        Manual::with_clock(3, 1_000_000_000, 1_000),
    )));
    let p = log.platform();
    let info = |fl: u8, text: &str| {
        log.log_fmt(Level::Info, fl, format_args!("{text}"))
            .unwrap()
    };
    p.set_cpu(0);
    p.set_task(7);
    info(0, "A: start");
    p.set_task(8);
    info(0, "B: line");
    p.set_cpu(1);
    p.set_task(7); // task 7 migrated to CPU 1
    info(flags::CONT, " a-cont");
    p.set_cpu(0);
    p.set_task(8);
    info(flags::CONT, " b-cont");
    {
        let _irq = log.enter(ContextKind::Irq);
        info(flags::CONT, "irq, no line to join");
    }
    info(0, "B2 done\n");
    info(flags::CONT, "after the newline");
    p.set_task(0);
    p.set_cpu(2);
    info(0, "C: cpu line");
    info(flags::CONT, " c-cont");
    log.crash_enter().unwrap();
    let mut image = vec![0u8; 16 << 10];
    let wrote = handover::write_image_report(&*log, &mut image, &|_| true).unwrap();
    image.truncate(wrote.len);

    let out = dmesg(&[], Some(&image));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = messages(&out.stdout);
    assert_eq!(
        lines,
        [
            "T7 A: start a-cont",
            "T8 B: line b-cont",
            "C0/irq irq, no line to join",
            "T8 B2 done",
            "T8 after the newline",
            "C2 C: cpu line c-cont",
        ]
    );

    let out = dmesg(&["--kmsg"], Some(&image));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kmsg: Vec<&str> = text(&out.stdout)
        .lines()
        .map(|l| l.split_once(',').unwrap().1.split_once(',').unwrap().1)
        .map(|l| l.split_once(',').unwrap().1)
        .collect();
    assert_eq!(
        kmsg,
        [
            "-,caller=T7;A: start",
            "-,caller=T8;B: line",
            "c,caller=T7; a-cont",
            "c,caller=T8; b-cont",
            "c,caller=C0;irq, no line to join",
            "-,caller=T8;B2 done",
            "c,caller=T8;after the newline",
            "-,caller=C2;C: cpu line",
            "c,caller=C2; c-cont",
        ]
    );

    let out = dmesg(&["--json"], Some(&image));
    let json = text(&out.stdout);
    assert!(json.contains("\"caller\":\"T7\",\"cpu\":1,\"ctx\":\"task\",\"level\":6,\"text\":\" a-cont\",\"cont\":true}"), "{json}");
    assert!(
        json.contains("\"text\":\"B2 done\",\"newline\":true}"),
        "{json}"
    );
}
