//! What a kernel switching its printk to nmilog relies on: the context from the kernel's own
//! bookkeeping (no second bracket), the softirq kind and five levels of nesting, the caller id,
//! printk's line semantics (1024-byte lines, a trailing newline ends the record, `pr_cont!` pieces on
//! one console line), and the count of calls made before registration reaching the image.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use nmilog::console::{Consoles, MemConsole};
use nmilog::record::{facility, flags, Caller};
use nmilog::{handover, ContextKind, FlushPolicy, Level, Log, Origin, Platform, RecordBuf};

thread_local! {
    /// The kernel's own view of the running context (`preempt_count`), per test thread.
    static KERNEL_CONTEXT: Cell<Option<(ContextKind, usize)>> = const { Cell::new(None) };
    /// `current->pid` in task context.
    static CURRENT_TASK: Cell<Option<u32>> = const { Cell::new(None) };
}

static CLOCK: AtomicU64 = AtomicU64::new(1_000);

/// One CPU whose kernel tracks its own context and names its tasks (thread-local state, so tests
/// running in parallel do not see each other's).
struct Kernel;

impl Platform for Kernel {
    fn cpu_id(&self) -> usize {
        0
    }
    fn now_ns(&self) -> u64 {
        CLOCK.fetch_add(1_000, Ordering::Relaxed)
    }
    fn cpu_count(&self) -> usize {
        1
    }
    fn context(&self) -> Option<(ContextKind, usize)> {
        KERNEL_CONTEXT.with(Cell::get)
    }
    fn task_id(&self) -> Option<u32> {
        CURRENT_TASK.with(Cell::get)
    }
}

/// The records in `log`'s main log, oldest first.
fn main_records<P: Platform>(log: &Log<P, 1, 1024, 4096>) -> Vec<RecordBuf> {
    let mut r = log.main_reader();
    let mut out = Vec::new();
    let mut rec = RecordBuf::new();
    while r.read(log, &mut rec) == nmilog::ring::Read::Record {
        out.push(rec.clone());
    }
    out
}

#[test]
fn five_levels_of_nesting_keep_the_machine_check_message() {
    // Linux's worst case: task → softirq → hardirq → NMI → machine check, each logging.
    let log: Log<nmilog::doc_support::OneCpu, 1, 1024, 4096> =
        Log::new(nmilog::doc_support::OneCpu);
    log.set_flush_policy(FlushPolicy::Deferred);
    log.append(Level::Info, 0, 0, b"task").unwrap();
    log.softirq_enter();
    log.append(Level::Info, 0, 0, b"softirq").unwrap();
    log.irq_enter();
    log.append(Level::Info, 0, 0, b"hardirq").unwrap();
    log.nmi_enter();
    log.append(Level::Warning, 0, 0, b"nmi").unwrap();
    log.nmi_enter(); // a machine check lands in the NMI handler
    assert_eq!(log.context(), Some((ContextKind::Nmi, 4)));
    log.append(Level::Emerg, 0, 0, b"machine check: uncorrectable error")
        .unwrap();
    log.nmi_exit();
    log.nmi_exit();
    log.irq_exit();
    log.softirq_exit();
    let cpu = log.cpu(0).unwrap();
    let kinds: Vec<ContextKind> = (0..5).map(|d| cpu.kind_at(d)).collect();
    assert_eq!(
        kinds,
        [
            ContextKind::Task,
            ContextKind::Softirq,
            ContextKind::Irq,
            ContextKind::Nmi,
            ContextKind::Nmi
        ]
    );
    assert_eq!(cpu.rings[4].next_seq(), 1, "the fifth level has its ring");
    log.flush();
    let texts: Vec<String> = main_records(&log)
        .iter()
        .map(|r| r.text().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "task",
            "softirq",
            "hardirq",
            "nmi",
            "machine check: uncorrectable error"
        ]
    );
    let depths: Vec<(Option<ContextKind>, usize)> = main_records(&log)
        .iter()
        .map(|r| r.header.context())
        .collect();
    assert_eq!(depths[1], (Some(ContextKind::Softirq), 1));
    assert_eq!(depths[4], (Some(ContextKind::Nmi), 4));
}

#[test]
fn the_kernels_own_context_needs_no_bracket_and_names_the_caller() {
    static LOG: Log<Kernel, 1, 1024, 4096> = Log::new(Kernel);
    CURRENT_TASK.with(|t| t.set(Some(42)));
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Task, 0))));
    LOG.log_fmt(Level::Info, 0, format_args!("from task 42"))
        .unwrap();
    // The kernel's interrupt entry bumped its own counter: no `irq_enter` here.
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Irq, 2))));
    assert_eq!(LOG.context(), Some((ContextKind::Irq, 2)));
    LOG.log_fmt(Level::Info, 0, format_args!("from a hardirq"))
        .unwrap();
    // In an NMI (as the kernel reports it) a call stays on the NMI-safe path: its ring only, the
    // main log untouched even under the eager policy.
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Nmi, 3))));
    // A portable handler that brackets itself anyway does not count the level twice.
    LOG.nmi_enter();
    assert_eq!(LOG.context(), Some((ContextKind::Nmi, 3)));
    LOG.nmi_exit();
    assert_eq!(LOG.context(), Some((ContextKind::Nmi, 3)));
    let main_before = LOG.main().next_seq();
    LOG.log_fmt(Level::Emerg, 0, format_args!("from an NMI"))
        .unwrap();
    assert_eq!(LOG.main().next_seq(), main_before);
    assert_eq!(LOG.cpu(0).unwrap().rings[3].next_seq(), 1);
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Task, 0))));
    LOG.flush();
    let recs = main_records(&LOG);
    let callers: Vec<(String, Caller)> = recs
        .iter()
        .map(|r| (r.text().unwrap().to_owned(), r.header.caller()))
        .collect();
    assert_eq!(
        callers,
        [
            ("from task 42".to_owned(), Caller::Task(42)),
            ("from a hardirq".to_owned(), Caller::Cpu(0)),
            ("from an NMI".to_owned(), Caller::Cpu(0)),
        ]
    );
    assert_eq!(recs[1].header.context(), (Some(ContextKind::Irq), 2));
    assert_eq!(recs[2].header.context(), (Some(ContextKind::Nmi), 3));
}

#[test]
fn lines_are_up_to_1024_bytes_and_a_trailing_newline_ends_the_record() {
    let log: Log<nmilog::doc_support::OneCpu, 1, 1024, 4096> =
        Log::new(nmilog::doc_support::OneCpu);
    let full = "x".repeat(nmilog::LINE_MAX);
    log.log_fmt(Level::Info, 0, format_args!("{full}")).unwrap();
    log.log_fmt(Level::Info, 0, format_args!("{full}y"))
        .unwrap();
    log.log_fmt(Level::Info, 0, format_args!("done\n")).unwrap();
    log.append(Level::Info, 0, 0, b"raw bytes\n").unwrap();
    log.append_raw(Level::Info, 0, 0, b"nmi bytes\n").unwrap();
    log.flush();
    let recs = main_records(&log);
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0].payload().len(), nmilog::LINE_MAX);
    assert_eq!(recs[0].header.flags & flags::TRUNCATED, 0);
    assert_eq!(recs[1].payload().len(), nmilog::LINE_MAX);
    assert_eq!(recs[1].header.flags & flags::TRUNCATED, flags::TRUNCATED);
    assert!(recs[1].text().unwrap().ends_with(nmilog::TRUNCATION_MARKER));
    assert_eq!(recs[2].text(), Some("done"));
    assert_eq!(recs[2].header.flags & flags::NEWLINE, flags::NEWLINE);
    assert_eq!(recs[3].text(), Some("raw bytes"));
    assert_eq!(recs[3].header.flags & flags::NEWLINE, flags::NEWLINE);
    // The NMI path stores its bytes as given.
    assert_eq!(recs[4].text(), Some("nmi bytes\n"));
    assert_eq!(recs[4].header.flags & flags::NEWLINE, 0);
}

#[test]
fn consoles_print_one_newline_and_join_continuations() {
    static LOG: Log<Kernel, 1, 1024, 4096> = Log::new(Kernel);
    static MEM: MemConsole<4096> = MemConsole::new();
    static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
    let log = |f: u8, args: std::fmt::Arguments<'_>| LOG.log_fmt(Level::Info, f, args).unwrap();
    CURRENT_TASK.with(|t| t.set(Some(7)));
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Task, 0))));
    log(0, format_args!("eth0: link up\n"));
    log(0, format_args!("checking disks"));
    log(flags::CONT, format_args!(" sda"));
    log(flags::CONT, format_args!(" sdb\n"));
    // The line was ended by its newline: a continuation after it starts a line of its own.
    log(flags::CONT, format_args!("orphan"));
    // An interrupt's line and its continuation join each other, not task 7's line.
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Irq, 2))));
    log(0, format_args!("irq line"));
    log(flags::CONT, format_args!(" +irq piece"));
    // Task 7 continues after the interrupt's line: printed where it is, on a line of its own (the
    // console prints in log order; it never moves a line).
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Task, 0))));
    log(flags::CONT, format_args!(" late"));
    let rep = CONSOLES.emit_pending(&LOG);
    let shown = MEM.contents();
    let lines: Vec<&str> = shown
        .lines()
        .map(|l| l.split_once("] ").unwrap().1)
        .collect();
    assert_eq!(
        lines,
        [
            "eth0: link up",
            "checking disks sda sdb",
            "orphan",
            "irq line +irq piece",
            " late"
        ],
        "{shown}"
    );
    assert!(
        shown.ends_with('\n') && !shown.contains("\n\n"),
        "one newline per line: {shown:?}"
    );
    assert_eq!(rep.printed, 5);
    // Every piece is still its own record in the log (readers see them and their flags).
    assert_eq!(main_records(&LOG).len(), 8);
}

#[test]
fn calls_before_registration_are_counted_and_reach_the_image() {
    static LOG: Log<Kernel, 1, 1024, 4096> = Log::new(Kernel);
    // Only this test in this binary registers a global logger.
    nmilog::pr_info!("early boot, no logger yet");
    nmilog::pr_err!("still none: {}", 2);
    nmilog::printk!(Level::Notice, "and a third");
    assert_eq!(nmilog::global::unregistered_dropped(), 3);
    nmilog::set_global!(LOG);
    assert_eq!(nmilog::global::unregistered_dropped(), 0);
    assert_eq!(LOG.unregistered_dropped(), 3);
    nmilog::pr_info!("registered");
    assert_eq!(LOG.unregistered_dropped(), 3);
    LOG.crash_enter().unwrap();
    let mut region = vec![0u8; Log::<Kernel, 1, 1024, 4096>::MAX_IMAGE_BYTES];
    let n = handover::write_image(&LOG, &mut region, &|_| true).unwrap();
    let image = handover::parse(&region[..n]).unwrap();
    let texts: Vec<(u8, String)> = image
        .records()
        .map(|r| (r.header.facility, r.text().unwrap().to_owned()))
        .collect();
    assert_eq!(
        texts,
        [
            (facility::KERNEL, "registered".to_owned()),
            (
                facility::NMILOG,
                "nmilog: 3 log calls made before the log was registered (lost: no log yet)"
                    .to_owned()
            ),
        ]
    );
    // The same through the live drain.
    let mut out = Vec::new();
    let rep = LOG.drain_on_crash(&|_| true, &mut |o: Origin, r: &RecordBuf| {
        out.push((o, r.text().unwrap().to_owned()));
        true
    });
    assert!(rep.unwrap().complete);
    assert_eq!(
        out.last().unwrap(),
        &(
            Origin::Accounting,
            "nmilog: 3 log calls made before the log was registered (lost: no log yet)".to_owned()
        )
    );
}

/// A log whose records carry task 7 as their caller, deferred (pieces pending together).
fn deferred_log() -> &'static Log<Kernel, 1, 1024, 4096> {
    let log: &'static Log<Kernel, 1, 1024, 4096> = Box::leak(Box::new(Log::new(Kernel)));
    log.set_flush_policy(FlushPolicy::Deferred);
    CURRENT_TASK.with(|t| t.set(Some(7)));
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Task, 0))));
    log
}

/// "checking disks", " sda", " sdb\n" from task 7, with an interrupt's line between two pieces (its
/// own ring), then a line of its own.
fn log_a_continued_line(log: &Log<Kernel, 1, 1024, 4096>) {
    let f = |flags: u8, args: std::fmt::Arguments<'_>| {
        log.log_fmt(Level::Info, flags, args).unwrap();
    };
    f(0, format_args!("checking disks"));
    f(flags::CONT, format_args!(" sda"));
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Irq, 2))));
    f(0, format_args!("irq line"));
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Task, 0))));
    f(flags::CONT, format_args!(" sdb\n"));
    f(0, format_args!("next line"));
}

#[test]
fn pr_cont_pieces_moved_together_are_one_record_in_the_main_log() {
    let log = deferred_log();
    log_a_continued_line(log);
    log.flush().unwrap();
    let recs = main_records(log);
    let texts: Vec<&str> = recs.iter().map(|r| r.text().unwrap()).collect();
    assert_eq!(texts, ["checking disks sda sdb", "irq line", "next line"]);
    let joined = &recs[0].header;
    assert_eq!(joined.flags & flags::NEWLINE, flags::NEWLINE);
    assert_eq!(joined.flags & flags::CONT, 0);
    assert_eq!(joined.caller(), Caller::Task(7));
    assert_eq!(joined.src_seq, 2, "the last piece's number in its ring");
    // The crash drain after it: each piece once (in the joined record), nothing from the ring again.
    log.crash_enter().unwrap();
    let mut out = Vec::new();
    log.drain_on_crash(&|_| true, &mut |_, r: &RecordBuf| {
        out.push(r.text().unwrap().to_owned());
        true
    })
    .unwrap();
    assert_eq!(out, ["checking disks sda sdb", "irq line", "next line"]);
}

#[cfg(feature = "steps")]
#[test]
fn a_flush_frozen_at_any_step_of_a_joined_move_loses_and_repeats_nothing() {
    use nmilog::FlushStep;
    for (i, step) in FlushStep::ALL.iter().enumerate() {
        let log = deferred_log();
        log_a_continued_line(log);
        // The owner stops for good at `step` of its first move (the joined record).
        let mut moves = 0;
        let _ = log.flush_with_hook(&mut |s: FlushStep| {
            if s == FlushStep::Main(nmilog::ring::WriteStep::Entered) {
                moves += 1;
            }
            !(moves == 1 && s == *step)
        });
        log.crash_enter().unwrap();
        let mut out = Vec::new();
        let rep = log
            .drain_on_crash(&|_| true, &mut |o: Origin, r: &RecordBuf| {
                if o != Origin::Accounting {
                    out.push(r.text().unwrap().to_owned());
                }
                true
            })
            .unwrap();
        // Whether the joined record reached the main log or not, every piece is delivered once:
        // joined (from the main log) or as the ring's own records.
        let all = out.concat();
        for piece in ["checking disks", " sda", " sdb", "irq line", "next line"] {
            assert_eq!(
                all.matches(piece).count(),
                1,
                "step {i} ({step:?}): {out:?}"
            );
        }
        assert_eq!(rep.torn + rep.in_flight, 0, "step {i}: {rep:?}");
    }
}

#[test]
fn continued_lines_join_byte_for_byte_up_to_the_main_log_s_limit() {
    // A 64-word main log takes records of at most 208 bytes (on 64-bit): a line and its pieces are
    // joined while they fit in that, byte for byte (pieces of one byte too), and a piece that
    // would pass it stays a record of its own, flagged as a continuation. (The main log holds a
    // few records: each group is flushed and read before the next.)
    let log: &'static Log<Kernel, 1, 1024, 64> = Box::leak(Box::new(Log::new(Kernel)));
    log.set_flush_policy(FlushPolicy::Deferred);
    CURRENT_TASK.with(|t| t.set(Some(7)));
    KERNEL_CONTEXT.with(|c| c.set(Some((ContextKind::Task, 0))));
    let max = log.main().max_payload();
    let text = |c: u8, n: usize| String::from_utf8(vec![c; n]).unwrap();
    let mut reader = log.main_reader();
    let mut moved = |log: &Log<Kernel, 1, 1024, 64>| {
        log.flush().unwrap();
        let (mut rec, mut out) = (RecordBuf::new(), Vec::new());
        while reader.read(log, &mut rec) == nmilog::ring::Read::Record {
            out.push((
                rec.text().unwrap().to_owned(),
                rec.header.flags & flags::CONT,
            ));
        }
        out
    };
    let f = |flags: u8, s: &str| log.append(Level::Info, 0, flags, s.as_bytes()).unwrap();
    f(0, "abc");
    f(flags::CONT, "d");
    f(flags::CONT, "e");
    f(flags::CONT, "fghijklm\n");
    assert_eq!(moved(log), [("abcdefghijklm".to_owned(), 0)]);
    // Exactly the limit: joined.
    f(0, &text(b'a', 100));
    f(flags::CONT, &text(b'b', max - 100));
    assert_eq!(moved(log), [(text(b'a', 100) + &text(b'b', max - 100), 0)]);
    // One byte more: not joined.
    f(0, "\n");
    f(0, &text(b'c', 100));
    f(flags::CONT, &text(b'd', max - 99));
    assert_eq!(
        moved(log),
        [
            (String::new(), 0),
            (text(b'c', 100), 0),
            (text(b'd', max - 99), flags::CONT)
        ]
    );
}
