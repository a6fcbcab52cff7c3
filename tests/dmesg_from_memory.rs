//! `examples/dmesg --from-memory`: the log rebuilt from a raw memory dump file, as a capture stage
//! reads what a kernel whose crash path died left behind.
//!
//! A kernel — a `Log`, its descriptor and the crash sequence's check-in flags — lives in zero-filled
//! memory at a known address (as a kernel's `.bss`); CPUs log from threads (some records flushed
//! into the main log, one CPU in NMI context, one CPU that never checks in), CPU 0 enters the crash
//! path and "dies" there. Its memory is written to a file, surrounded by megabytes of other bytes
//! (the dump's base is not the log's address, and the scan has work), and
//!
//! * the tool's output from the dump equals its output from the image the live crash drain writes
//!   from the same memory (every format; `--json` has one more line first, saying where the log came
//!   from), and the records are the ones logged, in order, with the same accounting: plain, at
//!   `--descriptor ADDR`, in the other byte order (every word swapped, and as a kernel of the other
//!   byte order leaves it: the magic is a byte string), behind a decoy magic;
//! * bad dumps and bad command lines give one line on stderr and their exit code: empty, no
//!   descriptor, truncated mid-log, a damaged descriptor, one from another version, a lying one
//!   (regions too large to load), a nonexistent file, bad `--base`/`--descriptor`;
//! * bounded: an 8 GiB (sparse) dump is scanned whole under a 128 MiB address-space limit
//!   (`setrlimit(RLIMIT_AS)` in the child), within a time bound; time and peak memory are printed
//!   (`--nocapture`). `NMILOG_DUMP_MIB=512` makes the dense dump of
//!   `a_large_dense_dump_is_rebuilt_in_bounded_memory` that large (default 16 MiB).
//!
//! The example is built with the caller's cargo (`cargo build --example dmesg`, same target
//! directory and profile) and run directly. Linux only (`RLIMIT_AS`, `wait4`), as tests/cli.rs.

#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nmilog::host::HostPlatform;
use nmilog::recover::{self, AtomicUsize, LogDescriptor};
use nmilog::{handover, Level, Log};

use common::bounded::{self, Run};
use common::examples::dmesg_binary;
use common::files::TempDir;
use common::kernel::{self, on_cpu};

const CPUS: usize = 4;
type TestLog = Log<HostPlatform, CPUS, 256, 1024>;
const W: usize = size_of::<usize>();
const MAGIC_WORDS: usize = 8 / W;
/// Descriptor header words after the magic (the README's "Memory descriptor" table).
const HEAD: usize = recover::HEADER_WORDS;

/// The kernel's memory. The descriptor comes first, so that a dump cut short in the log still has
/// it.
#[repr(C)]
struct Kernel {
    desc: LogDescriptor<{ TestLog::DESCRIPTOR_WORDS }>,
    checked_in: [AtomicUsize; CPUS],
    log: TestLog,
}

/// A kernel in zero-filled memory (leaked), described.
fn boot() -> &'static Kernel {
    // SAFETY: all-zero bytes are a valid `Kernel` (atomics: `LogDescriptor::new()`, flags all 0,
    // `Log::new(HostPlatform::new(0))`; the flush's record buffer is plain integers and bytes, valid
    // all-zero too).
    let k: &'static Kernel = unsafe { kernel::leak_zeroed() };
    kernel::boot(&k.log, &k.desc, &k.checked_in);
    k
}

/// A crashed kernel, its memory, and the image the live crash drain writes from that memory. CPU 1
/// logs and flushes into the main log, then logs more; CPU 2 logs in NMI context; both check in.
/// CPU 3 logs and never checks in. CPU 0 enters the crash path, logs, and dies. Runs on the
/// calling thread, which becomes CPU 0.
struct Crashed {
    kernel: &'static Kernel,
    /// The kernel's memory as words, taken after the crash.
    words: Vec<usize>,
    /// The live crash drain's image of that memory.
    live: Vec<u8>,
}

fn crash() -> Crashed {
    let k = boot();
    on_cpu(1, move || {
        for i in 0..30 {
            let text = format!("cpu1 boot line {i}");
            k.log.append(Level::Info, 0, 0, text.as_bytes()).unwrap();
        }
        k.log.flush(); // into the main log
        for i in 0..3 {
            let text = format!("cpu1 unflushed {i}");
            k.log.append(Level::Warning, 0, 0, text.as_bytes()).unwrap();
        }
        k.checked_in[1].store(1, Ordering::Release);
    });
    on_cpu(2, move || {
        k.log.append(Level::Info, 0, 0, b"cpu2 task").unwrap();
        k.log.nmi_enter();
        k.log
            .append_raw(Level::Emerg, 0, 0, b"NMI watchdog: hard LOCKUP on cpu 2")
            .unwrap();
        k.checked_in[2].store(1, Ordering::Release);
    });
    on_cpu(3, move || {
        // Never checks in: the image says it was not stopped.
        k.log
            .append(Level::Err, 0, 0, b"cpu3 still running")
            .unwrap();
    });
    HostPlatform::register_cpu(0);
    k.log.crash_enter().unwrap();
    k.log
        .append(Level::Emerg, 0, 0, b"Kernel panic - not syncing: test")
        .unwrap();
    // ...and the crash path dies here: no image. The memory is what a dump would hold.
    let n = size_of::<Kernel>() / W;
    let base = k as *const Kernel as *const AtomicUsize;
    let words = (0..n)
        // SAFETY: the allocation `boot` made (never freed), read as atomic words; `i < n` words of it.
        .map(|i| unsafe { &*base.add(i) }.load(Ordering::Relaxed))
        .collect();
    let mut live = vec![0u8; TestLog::MAX_IMAGE_BYTES];
    let stopped = |c: usize| k.checked_in[c].load(Ordering::Acquire) != 0;
    let len = handover::write_image(&k.log, &mut live, &stopped).expect("live image");
    live.truncate(len);
    Crashed {
        kernel: k,
        words,
        live,
    }
}

impl Crashed {
    fn addr(&self) -> usize {
        self.kernel as *const Kernel as usize
    }
    fn desc_addr(&self) -> usize {
        self.kernel.desc.address()
    }
    /// Index in `words` of the word at `addr`.
    fn index(&self, addr: usize) -> usize {
        (addr - self.addr()) / W
    }
    /// A copy of the memory with descriptor header word `i` (after the magic) := `v`, resealed.
    fn lie_header(&self, i: usize, v: usize) -> Vec<usize> {
        let mut w = self.words.clone();
        let d = self.index(self.desc_addr());
        w[d + MAGIC_WORDS + i] = v;
        recover::seal(&mut w[d..d + TestLog::DESCRIPTOR_WORDS]);
        w
    }
}

// ------------------------------------------------------------------------------------------------
// Dump files.

/// How a kernel's words go into a file.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// As this machine leaves them.
    Native,
    /// Every word byte-swapped.
    AllSwapped,
    /// As a kernel of the other byte order leaves them: every word byte-swapped but the magic,
    /// which is a byte string (written as bytes, it reads the same in either order).
    OtherKernel,
}

/// `n` bytes that are not zero and contain no magic (xorshift).
fn filler(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Writes `before` bytes of filler, `words` (the kernel's memory) in `order`, `after` bytes of
/// filler to `path`; returns the dump's base (the address of its first byte).
fn write_dump(
    path: &Path,
    c: &Crashed,
    words: &[usize],
    order: Order,
    before: usize,
    after: usize,
) -> usize {
    assert_eq!(before % W, 0);
    let mut f = BufWriter::new(File::create(path).unwrap());
    let block = filler(1 << 20, 0x9e37_79b9_7f4a_7c15);
    let fill = |f: &mut BufWriter<File>, mut left: usize| {
        while left > 0 {
            let k = left.min(block.len());
            f.write_all(&block[..k]).unwrap();
            left -= k;
        }
    };
    fill(&mut f, before);
    let magic = c.index(c.desc_addr());
    for (i, &w) in words.iter().enumerate() {
        let keep = order == Order::OtherKernel && (magic..magic + MAGIC_WORDS).contains(&i);
        let w = if order == Order::Native || keep {
            w
        } else {
            w.swap_bytes()
        };
        f.write_all(&w.to_ne_bytes()).unwrap();
    }
    fill(&mut f, after);
    f.flush().unwrap();
    c.addr() - before
}

// ------------------------------------------------------------------------------------------------
// Running the example.

/// Runs the example with `args` under an address-space limit (`RLIMIT_AS`, set in the child before
/// `exec`), killed (and the test failed) after `timeout`.
fn run_limited(args: &[String], as_limit: u64, timeout: Duration) -> Run {
    let mut cmd = Command::new(dmesg_binary());
    cmd.args(args).stdin(Stdio::null());
    bounded::run_limited(cmd, as_limit, timeout, None)
}

/// Runs the example with `args` (no memory limit to speak of).
fn run(args: &[String]) -> Run {
    run_limited(args, 8 << 30, Duration::from_secs(120))
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn from_memory(path: &Path, base: usize, extra: &[&str]) -> Vec<String> {
    let mut a = args(extra);
    a.extend([
        "--from-memory".into(),
        path.to_str().unwrap().into(),
        "--base".into(),
        format!("{base:#x}"),
    ]);
    a
}

/// The example's output for the live image, in the format `extra` picks.
fn live_output(dir: &TempDir, c: &Crashed, extra: &[&str]) -> Run {
    let img = dir.path("live.img");
    std::fs::write(&img, &c.live).unwrap();
    let mut a = args(extra);
    a.push(img.to_str().unwrap().into());
    let r = run(&a);
    assert_eq!(r.code, Some(0), "live image: {}", r.stderr);
    r
}

/// The `--json` origin line the tool prints for a rebuilt log.
fn origin_line(c: &Crashed, base: usize, swapped: bool, valid: usize, rejected: usize) -> String {
    format!(
        "{{\"rebuilt_from_memory\":{{\"descriptor\":\"{:#x}\",\"file_offset\":{},\
         \"byte_swapped\":{swapped},\"crashing_cpu\":0,\"not_stopped\":[3],\
         \"descriptors_valid\":{valid},\"magics_rejected\":{rejected}}}}}",
        c.desc_addr(),
        c.desc_addr() - base
    )
}

/// The dump's output equals the live image's in every format (with `--json`, after the origin
/// line), and the summary lines are the same.
fn assert_same_as_live(
    what: &str,
    dir: &TempDir,
    c: &Crashed,
    dump: &Path,
    base: usize,
    extra: &[&str],
    origin: &str,
) {
    for format in [
        &["--json"][..],
        &[],
        &["--kmsg"],
        &["--json", "--level", "3"],
    ] {
        let mut e = extra.to_vec();
        e.extend_from_slice(format);
        let live = live_output(dir, c, format);
        let r = run(&from_memory(dump, base, &e));
        assert_eq!(r.code, Some(0), "{what} {format:?}: {}", r.stderr);
        let want = if format.contains(&"--json") {
            format!("{origin}\n{}", live.stdout)
        } else {
            live.stdout.clone()
        };
        assert_eq!(r.stdout, want, "{what} {format:?}");
        let summary = |s: &str| s.lines().last().unwrap_or("").to_string();
        assert_eq!(
            summary(&r.stderr),
            summary(&live.stderr),
            "{what} {format:?}"
        );
        assert!(
            r.stderr.contains(&format!(
                "dmesg: rebuilt from memory: descriptor at {:#x} (file offset {}",
                c.desc_addr(),
                c.desc_addr() - base
            )) && r.stderr.contains("crashing CPU 0, CPUs not stopped: 3\n"),
            "{what}: {}",
            r.stderr
        );
    }
}

/// The records the crash left, as the live image has them: checked against what was logged.
fn check_live_records(c: &Crashed) {
    let image = handover::parse(&c.live).unwrap();
    let texts: Vec<&str> = image.records().filter_map(|r| r.text()).collect();
    let boot: Vec<String> = (0..30).map(|i| format!("cpu1 boot line {i}")).collect();
    assert_eq!(&texts[..30], &boot[..], "the main log's records first");
    for t in [
        "cpu1 unflushed 2",
        "cpu2 task",
        "NMI watchdog: hard LOCKUP on cpu 2",
        "cpu3 still running",
        "Kernel panic - not syncing: test",
    ] {
        assert!(texts.contains(&t), "{t}: {texts:?}");
    }
    assert_eq!(image.cpu_stopped(3), Some(false));
    assert_eq!(image.cpu_stopped(1), Some(true));
}

// ------------------------------------------------------------------------------------------------
// Good dumps.

#[test]
fn a_dump_gives_what_the_live_crash_drain_gives() {
    let c = crash();
    check_live_records(&c);
    let dir = TempDir::new("plain");
    let dump = dir.path("mem.bin");
    let base = write_dump(&dump, &c, &c.words, Order::Native, 3 << 20, 2 << 20);
    let origin = origin_line(&c, base, false, 1, 0);
    assert_same_as_live("plain", &dir, &c, &dump, base, &[], &origin);
    // At the descriptor's address: the same, without a scan.
    let at = format!("{:#x}", c.desc_addr());
    assert_same_as_live(
        "--descriptor",
        &dir,
        &c,
        &dump,
        base,
        &["--descriptor", &at],
        &origin,
    );
    // The base in decimal.
    let r = run(&args(&[
        "--json",
        "--from-memory",
        dump.to_str().unwrap(),
        "--base",
        &base.to_string(),
    ]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with(&origin));
}

#[test]
fn a_dump_in_the_other_byte_order_is_converted() {
    let c = crash();
    let dir = TempDir::new("swapped");
    for (order, name) in [
        (Order::AllSwapped, "every word swapped"),
        (Order::OtherKernel, "as a kernel of the other byte order"),
    ] {
        let dump = dir.path("mem.bin");
        let base = write_dump(&dump, &c, &c.words, order, 1 << 20, 1 << 20);
        let origin = origin_line(&c, base, true, 1, 0);
        assert_same_as_live(name, &dir, &c, &dump, base, &[], &origin);
        let at = format!("{:#x}", c.desc_addr());
        assert_same_as_live(name, &dir, &c, &dump, base, &["--descriptor", &at], &origin);
    }
}

#[test]
fn a_decoy_magic_before_the_descriptor_is_rejected_and_counted() {
    let c = crash();
    let dir = TempDir::new("decoy");
    // A stale copy of the descriptor's header, damaged, 1 MiB before the kernel (and one right at a
    // scan chunk's end, so its header crosses into the next chunk).
    let before = 3 << 20;
    let dump = dir.path("mem.bin");
    let base = write_dump(&dump, &c, &c.words, Order::Native, before, 0);
    let d = c.index(c.desc_addr());
    let mut decoy: Vec<u8> = c.words[d..d + MAGIC_WORDS + HEAD]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    decoy[(MAGIC_WORDS + 6) * W] ^= 1; // the CPU count: the header checksum fails
    let f = std::fs::OpenOptions::new().write(true).open(&dump).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&decoy, (before - (1 << 20)) as u64).unwrap();
    f.write_all_at(&decoy, ((1 << 20) - 2 * W) as u64).unwrap();
    drop(f);
    let origin = origin_line(&c, base, false, 1, 2);
    assert_same_as_live("decoy", &dir, &c, &dump, base, &[], &origin);
    let r = run(&from_memory(&dump, base, &[]));
    assert!(
        r.stderr.starts_with(&format!(
            "dmesg: the scan found 1 valid descriptor(s) (the first is used) and rejected 2 \
             magic(s) (the first at {:#x}: descriptor header checksum mismatch)\n",
            base + (1 << 20) - 2 * W
        )),
        "{}",
        r.stderr
    );
}

// ------------------------------------------------------------------------------------------------
// Bad dumps, bad command lines.

/// One line on stderr, this exit code, nothing on stdout.
fn assert_fails(what: &str, r: &Run, code: i32, message: &str) {
    assert_eq!(r.code, Some(code), "{what}: {}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{what}: {}", r.stderr);
    assert!(
        r.stderr.starts_with("dmesg: ") && r.stderr.contains(message),
        "{what}: {:?} lacks {message:?}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{what}: {}", r.stdout);
}

#[test]
fn bad_dumps_give_one_line_and_their_exit_code() {
    let c = crash();
    let dir = TempDir::new("bad");
    let p = |name: &str| dir.path(name);
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Empty, and no descriptor in 5 MiB.
    File::create(p("empty")).unwrap();
    let r = run(&from_memory(&p("empty"), 0, &[]));
    assert_fails(
        "empty",
        &r,
        3,
        &format!(
            "{}: no nmilog descriptor in the dump (0 bytes scanned)",
            s(&p("empty"))
        ),
    );
    std::fs::write(p("noise"), filler(5 << 20, 7)).unwrap();
    let r = run(&from_memory(&p("noise"), 0x1000_0000, &["--json"]));
    assert_fails(
        "no descriptor",
        &r,
        3,
        "no nmilog descriptor in the dump (5242880 bytes scanned)",
    );

    // Nothing at the address given.
    let base = write_dump(&p("mem"), &c, &c.words, Order::Native, 1 << 20, 0);
    let at = format!("{:#x}", c.desc_addr() + 64);
    let r = run(&from_memory(&p("mem"), base, &["--descriptor", &at]));
    assert_fails(
        "--descriptor",
        &r,
        3,
        &format!("no descriptor magic at {at}"),
    );
    let r = run(&from_memory(&p("mem"), base, &["--descriptor", "0x8"]));
    assert_fails(
        "--descriptor outside",
        &r,
        3,
        "no descriptor magic at 0x8: outside the dump",
    );

    // Truncated in the middle of the log (the descriptor is before it).
    let log_at = c.index(&c.kernel.log as *const TestLog as usize);
    let half = log_at + (c.words.len() - log_at) / 2;
    let base = write_dump(&p("cut"), &c, &c.words[..half], Order::Native, 1 << 20, 0);
    let r = run(&from_memory(&p("cut"), base, &[]));
    assert_fails("truncated", &r, 5, "is not (wholly, aligned) in the dump");

    // A damaged descriptor: its header (refused by the scan), its tables (refused on opening).
    let d = c.index(c.desc_addr());
    let mut w = c.words.clone();
    w[d + MAGIC_WORDS + 6] ^= 0x10;
    let base = write_dump(&p("dhead"), &c, &w, Order::Native, 1 << 20, 0);
    let r = run(&from_memory(&p("dhead"), base, &[]));
    assert_fails(
        "damaged header",
        &r,
        5,
        &format!(
            "descriptor header checksum mismatch (the descriptor at {:#x}; 1 magic(s) found, \
             none valid)",
            c.desc_addr()
        ),
    );
    let mut w = c.words.clone();
    w[d + MAGIC_WORDS + HEAD + 12] ^= 0x10;
    let base = write_dump(&p("dtable"), &c, &w, Order::Native, 1 << 20, 0);
    let r = run(&from_memory(&p("dtable"), base, &[]));
    assert_fails(
        "damaged tables",
        &r,
        5,
        "descriptor tables checksum mismatch",
    );

    // Another descriptor version, another word size: exit 4.
    let base = write_dump(&p("v2"), &c, &c.lie_header(0, 2), Order::Native, 1 << 20, 0);
    let r = run(&from_memory(&p("v2"), base, &[]));
    assert_fails("version", &r, 4, "unknown descriptor version 2");
    let other = 12 - W; // 4 on 64-bit targets, 8 on 32-bit ones
    let base = write_dump(&p("ws"), &c, &c.lie_header(2, other), Order::Native, 0, 0);
    let r = run(&from_memory(&p("ws"), base, &[]));
    assert_fails(
        "word size",
        &r,
        4,
        &format!("the dump has {other}-byte words"),
    );

    // Regions that overlap.
    let fields = nmilog::record::layout::ALL.len();
    let mut w = c.words.clone();
    let e = d + MAGIC_WORDS + HEAD + fields;
    w[e + recover::ENTRY_WORDS] = w[e]; // source 1's ring is source 0's
    recover::seal(&mut w[d..d + TestLog::DESCRIPTOR_WORDS]);
    let base = write_dump(&p("overlap"), &c, &w, Order::Native, 0, 0);
    let r = run(&from_memory(&p("overlap"), base, &[]));
    assert_fails("overlap", &r, 5, "regions overlap");

    // A nonexistent file; bad --base values; --base that runs the dump past the address space.
    let r = run(&args(&["--from-memory", "/nonexistent/dump"]));
    assert_fails("nonexistent", &r, 2, "cannot read /nonexistent/dump: ");
    for (base, msg) in [
        (
            "0x1001",
            "--base: 0x1001 is not a multiple of the word size",
        ),
        (
            "xyz",
            "--base: expected an address (0x... hexadecimal or decimal",
        ),
        ("0x", "--base: expected an address"),
        ("-8", "--base: expected an address"),
        ("0x1_000", "--base: expected an address"),
        ("0x10000000000000000", "--base: expected an address"),
    ] {
        let r = run(&args(&["--from-memory", &s(&p("mem")), "--base", base]));
        assert_fails(base, &r, 2, msg);
    }
    let top = format!("{:#x}", (usize::MAX - 4095) & !(W - 1));
    let r = run(&args(&["--from-memory", &s(&p("mem")), "--base", &top]));
    assert_fails("top", &r, 2, "would end past the top of the address space");
    for (a, msg) in [
        (
            &["--from-memory", "-"][..],
            "--from-memory: a dump is read at offsets: standard input (-) is not supported",
        ),
        (
            &["--base", "0"],
            "--base and --descriptor go with --from-memory",
        ),
        (
            &["--descriptor", "0", "x.img"],
            "--base and --descriptor go with --from-memory",
        ),
        (
            &["--from-memory", "a", "b.img"],
            "--from-memory reads a dump, not an image",
        ),
        (
            &["--from-memory", "a", "--from-memory", "b"],
            "one dump at a time",
        ),
        (
            &["--from-memory"],
            "missing argument for option '--from-memory'",
        ),
        (
            &["--from-memory", "a", "--descriptor", "0x3"],
            "--descriptor: 0x3 is not a multiple",
        ),
    ] {
        let r = run(&args(a));
        assert_fails(&format!("{a:?}"), &r, 2, msg);
    }
}

// ------------------------------------------------------------------------------------------------
// Bounds.

/// The address-space limit the bounded runs get: the tool's scan buffer, the log's regions and its
/// image take a few MiB here; the rest is the process itself.
const DUMP_AS: u64 = 128 << 20;
/// How long one bounded run may take (the measured times are printed; this absorbs an unoptimised
/// build on a loaded machine).
const DUMP_TIMEOUT: Duration = Duration::from_secs(300);

fn report(what: &str, r: &Run, as_limit: u64) {
    eprintln!(
        "{what}: exit {:?} in {:.2} s, peak RSS {} KiB (address space limit {} MiB)",
        r.code,
        r.elapsed.as_secs_f64(),
        r.max_rss_kib,
        as_limit >> 20
    );
}

#[test]
fn an_8_gib_sparse_dump_is_scanned_whole_in_bounded_memory() {
    let c = crash();
    let dir = TempDir::new("sparse");
    // The kernel at 16 MiB, then zeros up to 8 GiB (a sparse file: the scan reads every byte).
    let dump = dir.path("mem.bin");
    let base = write_dump(&dump, &c, &c.words, Order::Native, 16 << 20, 0);
    File::options()
        .write(true)
        .open(&dump)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let r = run_limited(
        &from_memory(&dump, base, &["--json"]),
        DUMP_AS,
        DUMP_TIMEOUT,
    );
    report("8 GiB sparse dump", &r, DUMP_AS);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let live = handover::parse(&c.live).unwrap();
    assert_eq!(r.stdout.lines().count(), 1 + live.record_count());
    assert!(r.stdout.starts_with(&origin_line(&c, base, false, 1, 0)));
    assert!(r.max_rss_kib < 64 << 10, "{} KiB", r.max_rss_kib);

    // Regions larger than the tool loads: a main log that claims 1.5 GiB of the file.
    let lie = c.lie_header(12, (3 << 29) / W);
    let base = write_dump(&dump, &c, &lie, Order::Native, 1 << 20, 0);
    File::options()
        .write(true)
        .open(&dump)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let r = run_limited(&from_memory(&dump, base, &[]), DUMP_AS, DUMP_TIMEOUT);
    report("2 GiB sparse dump, 1.5 GiB region", &r, DUMP_AS);
    assert_fails(
        "too large",
        &r,
        6,
        "more than the 1073741824 this reader loads",
    );
}

#[test]
fn a_large_dense_dump_is_rebuilt_in_bounded_memory() {
    let mib: usize = std::env::var("NMILOG_DUMP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let c = crash();
    let dir = TempDir::new("dense");
    let dump = dir.path("mem.bin");
    let t0 = Instant::now();
    let base = write_dump(&dump, &c, &c.words, Order::Native, mib << 19, mib << 19);
    eprintln!(
        "{mib} MiB dense dump written in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let r = run_limited(
        &from_memory(&dump, base, &["--json"]),
        DUMP_AS,
        DUMP_TIMEOUT,
    );
    report(&format!("{mib} MiB dense dump"), &r, DUMP_AS);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with(&origin_line(&c, base, false, 1, 0)));
    assert!(r.max_rss_kib < 64 << 10, "{} KiB", r.max_rss_kib);
}
