//! `dmesg` for nmilog handover images: prints the log a crashed kernel left behind — from the image
//! its crash path wrote, or, when that path died before writing one, rebuilt from a raw memory dump.
//!
//! ```text
//! cargo run --example dmesg -- [--kmsg | --json] [--level 0-7] [--] [IMAGE | -]   (no IMAGE, "-": stdin)
//! cargo run --example dmesg -- [--kmsg | --json] [--level 0-7] --from-memory DUMP [--base ADDR] [--descriptor ADDR]
//! ```
//!
//! Output formats (one record or line per line of stdout):
//!
//! * default, like `dmesg`: `[    5.123456] T123 text` — seconds and microseconds of the record's
//!   `ts_ns`, then the **caller id**, as Linux's `CONFIG_PRINTK_CALLER` shows it: `T<tid>` for a
//!   record that names its task ([`Caller::Task`]: task context, on a platform that names tasks),
//!   else `C<cpu>`; outside task context followed by `/<ctx>` (`C2/irq`, `C2/softirq`, `C2/nmi`,
//!   `C0/crash`; `C2/ctx7` for a context number this reader does not know). A record with no caller
//!   (0: an image from a writer before the caller field, or nmilog's own accounting record) shows
//!   its CPU. Records flagged [`CONT`](nmilog::record::flags::CONT) are joined onto the open line
//!   of the **same caller column** — the same task, on whatever CPU it now runs, or the same CPU
//!   *and* context (an NMI's line never swallows the continuation of the task it interrupted); the
//!   joined line keeps the level of its first record. A record flagged
//!   [`NEWLINE`](nmilog::record::flags::NEWLINE) closes its caller's line, and a continuation with
//!   no open line from its caller starts a line of its own.
//!   Text is escaped by [`nmilog::escape::text`]: control characters print as `\xNN`, format
//!   characters (bidirectional overrides, zero-width characters…) and the line and paragraph
//!   separators as `\u{XXXX}`, so that one record stays one line and cannot disguise its neighbours.
//! * `--kmsg`: the `/dev/kmsg` record format `level,seq,usec,flags,caller=T123;text` (Linux's
//!   `info_print_ext_header`; `caller=C2` outside a task), one line per record (no joining), flags
//!   `-` normal and `c` continuation; a record with no caller gets no `caller=` field (as Linux
//!   without `CONFIG_PRINTK_CALLER`); text escaped as the kernel does (bytes below 0x20, from 0x7f,
//!   and `\` become `\xNN`: so every non-ASCII character is escaped).
//! * `--json`: one object per record, `{"seq":…,"ts_ns":…,"caller":"T123","cpu":…,
//!   "ctx":"task|irq|softirq|nmi|crash","level":…,"text":"…"}` (no `"caller"` when the record has
//!   none), plus `"cont":true` on continuations, `"raw":true` on raw payloads and `"newline":true`
//!   on records that ended with a newline; strings escaped by [`nmilog::escape::json_string`]
//!   (every control character, U+2028/U+2029).
//!   With `--from-memory` the first line is one object saying where the log came from (no `"seq"`):
//!   `{"rebuilt_from_memory":{"descriptor":"0x…","file_offset":…,"byte_swapped":false,
//!   "crashing_cpu":0,"not_stopped":[2],"descriptors_valid":1,"magics_rejected":0}}`
//!   (`"crashing_cpu":null` if no CPU entered the crash path).
//!
//! `--level N` (0 emerg … 7 debug) keeps records (default format: lines) whose level is `<= N`. A
//! payload flagged [`RAW`](nmilog::record::flags::RAW) or not valid UTF-8 prints as
//! `raw[<len>]: <hex>`.
//!
//! **Reading an image.** The input (a file, or standard input for `-` or no path) is read as a
//! stream, and only as far as the image goes: first the 64-byte core header; if it is an intact
//! header (magic, version and checksum), then up to the end of the record area it declares
//! (`RO + A`), at most [`MAX_IMAGE_BYTES`]. Whatever follows the image is never read (the format
//! ignores it), so a valid image followed by gigabytes is recovered whole, and `/dev/zero` or a huge
//! file of zeros is answered after 64 bytes. Memory: the bytes read, and never more than
//! [`MAX_IMAGE_BYTES`].
//!
//! **Rebuilding from memory** (`--from-memory DUMP`, see [`nmilog::recover`]). `DUMP` is a regular
//! file holding the dead kernel's memory from address `--base` on (default 0; `0x…` hex or
//! decimal, a multiple of the word size): a QEMU `pmemsave` of guest-physical memory, a capture
//! kernel's copy of the old kernel's RAM. It is read at offsets, so standard input is not supported.
//! The tool
//!
//! 1. finds the descriptor: at `--descriptor ADDR` if given (only its header is read), else by
//!    scanning the whole file for the descriptor's magic in [`SCAN_CHUNK`]-byte reads (each followed
//!    by [`HEADER_WINDOW_WORDS`] more words, so a header that starts near a chunk's end is whole in
//!    the buffer), checking each candidate's header with [`nmilog::recover::Descriptor::read`]; a
//!    candidate in the other byte order is retried with every word byte-swapped (the magic is a byte
//!    string, so it is taken in either order), and so is everything loaded afterwards. The first
//!    valid descriptor in address order wins; stderr says how many were valid and rejected if there
//!    was more than one candidate;
//! 2. loads the descriptor, lists the regions it names ([`Descriptor::for_each_region`]), merges
//!    regions less than [`MERGE_GAP`] bytes apart, clamps them to the file, and loads only those
//!    (at most [`MAX_LOAD_BYTES`]) into a [`PiecewiseDump`];
//! 3. opens the log ([`RecoveredLog::open`]: every address and size checked), runs the crash drain
//!    over it into a handover image ([`RecoveredLog::write_image`], byte for byte what the live crash
//!    drain would have written from that memory) in a buffer of [`handover::max_image_size`] for the
//!    regions found, at most [`MAX_IMAGE_BYTES`] (the newest records are kept, the rest counted as
//!    left out), and prints that image exactly as an image file is printed.
//!
//! Memory: the scan buffer (about 1 MiB), the regions loaded (bounded by the file's size and by
//! [`MAX_LOAD_BYTES`]) and the image buffer; time: linear in the file's size. stderr first gets a line
//! `dmesg: rebuilt from memory: descriptor at ADDR (file offset N), crashing CPU C, CPUs not
//! stopped: …`. A dump the log cannot be rebuilt from gets one line naming the problem (the
//! [`RecoverError`]) and an exit code below; never a panic.
//!
//! stderr gets a summary, `recovered=N torn=T overwritten=O dropped=D left_out=L bad_cpu=B`. A corrupt
//! image gets one line naming the problem and its byte offset and exit code 1; when only the record
//! area is damaged, the records before the damage are printed first (with the summary). An image
//! declaring more than [`MAX_IMAGE_BYTES`] is read up to that size only (a line on stderr says so),
//! and whatever the parser finds there is reported as for any other image: the records up to that
//! point, then the damage where the bytes stop matching the header (exit code 1).
//!
//! Exit codes:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | corrupt or oversized image (the records before the damage are printed) |
//! | 2 | bad command line, or an input/output error (a dump that cannot be opened or read) |
//! | 3 | `--from-memory`: no descriptor in the dump (none found by the scan, or no magic at `--descriptor`) |
//! | 4 | `--from-memory`: the dump is from a kernel this reader cannot read (another word size, descriptor version or record layout) |
//! | 5 | `--from-memory`: the descriptor or the log it describes is damaged or lies (a checksum, a field out of range, a region outside the dump — a truncated dump —, not a ring, overlapping regions) |
//! | 6 | `--from-memory`: the log's regions are larger than [`MAX_LOAD_BYTES`] |

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::process::ExitCode;

use nmilog::escape::{self, json_string};
use nmilog::handover::{self, HandoverError, ImageRecord, CORE_BYTES};
use nmilog::record::{flags, Caller};
use nmilog::recover::{
    self, AtomicUsize, Descriptor, DrainSource, PiecewiseDump, RawDump, RecoverError, RecoveredLog,
};
use nmilog::ContextKind;

/// The largest image this reader reads (256 MiB; the README's dmesg paragraph documents it): more
/// than ten times the largest image the host simulation can write (64 CPUs, an 8 MiB main log:
/// `handover::max_image_size(64, 4, 1 << 20)`, under 20 MiB), and small enough to hold in memory
/// anywhere this tool runs. Also the most a log rebuilt from memory is written into.
const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Exit code: the image is corrupt (or larger than [`MAX_IMAGE_BYTES`]).
const EXIT_CORRUPT: u8 = 1;
/// Exit code: a bad command line, or the input could not be read / the output written.
const EXIT_TROUBLE: u8 = 2;
/// Exit code (`--from-memory`): no descriptor in the dump.
const EXIT_NO_DESCRIPTOR: u8 = 3;
/// Exit code (`--from-memory`): a kernel this reader cannot read (word size, version, layout).
const EXIT_INCOMPATIBLE: u8 = 4;
/// Exit code (`--from-memory`): the descriptor or the log it describes is damaged or lies.
const EXIT_DAMAGED: u8 = 5;
/// Exit code (`--from-memory`): the log's regions are larger than [`MAX_LOAD_BYTES`].
const EXIT_TOO_LARGE: u8 = 6;

/// Bytes of a dump scanned per read (a multiple of the word size).
const SCAN_CHUNK: usize = 1 << 20;
/// Words read past each scanned chunk, so that the header of a descriptor whose magic is near the
/// chunk's end is whole in the buffer (the header is 19 words on 64-bit targets, 20 on 32-bit ones:
/// the README's "Memory descriptor" table), and the most words of a candidate's header checked.
const HEADER_WINDOW_WORDS: usize = 64;
/// Regions of a dump less than this many bytes apart are loaded as one piece.
const MERGE_GAP: usize = 4 << 10;
/// The most bytes of a dump loaded for the log (1 GiB: the host simulation's largest log — 64 CPUs,
/// four 64 KiB rings each, an 8 MiB main log — takes 24 MiB).
const MAX_LOAD_BYTES: usize = 1 << 30;
/// The word size of the dumps this reader reads (its own).
const W: usize = size_of::<usize>();

const USAGE: &str = "\
usage: dmesg [--kmsg | --json] [--level N] [--] [IMAGE | -]
       dmesg [--kmsg | --json] [--level N] --from-memory DUMP [--base ADDR] [--descriptor ADDR]
Prints an nmilog handover image like dmesg (IMAGE absent or -: standard input), or the log rebuilt
from a raw memory dump when the crash path died before writing an image.
  --kmsg               /dev/kmsg format: level,seq,usec,flags;text
  --json               one JSON object per record
  --level N            only records of level N (0 emerg .. 7 debug) or more urgent
  --from-memory DUMP   rebuild the log from DUMP, a file of the dead kernel's memory (e.g. QEMU
                       pmemsave); read at offsets, so not standard input
  --base ADDR          the address of DUMP's first byte (default 0; 0x... hex or decimal)
  --descriptor ADDR    the nmilog descriptor's address (default: scan the dump for it)
  -h, --help           this text
Reads only the image (at most 256 MiB), never what follows it. From memory: scans the dump in 1 MiB
reads and loads only the log's regions (at most 1 GiB).
Exit status: 0 ok, 1 corrupt or oversized image (records before the damage are printed),
2 bad command line or input/output error; from memory: 3 no descriptor in the dump, 4 a kernel this
reader cannot read (word size, version, record layout), 5 a damaged or lying dump (checksum, field
out of range, region outside the dump, overlap), 6 the log's regions are larger than 1 GiB.";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Dmesg,
    Kmsg,
    Json,
}

struct Args {
    format: Format,
    level: Option<u8>,
    input: Input,
}

/// What to print.
enum Input {
    /// A handover image; `None`: standard input.
    Image(Option<OsString>),
    /// A log rebuilt from a memory dump.
    Memory(MemoryArgs),
}

/// `--from-memory DUMP [--base ADDR] [--descriptor ADDR]`.
struct MemoryArgs {
    path: OsString,
    base: usize,
    descriptor: Option<usize>,
}

/// What the command line asks for.
enum Command {
    Run(Args),
    Help,
}

/// Parses the command line (without the program name). `Err` is a one-line message.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut format: Option<(Format, &str)> = None;
    let mut level = None;
    let mut path: Option<OsString> = None;
    let mut dump: Option<OsString> = None;
    let mut base: Option<usize> = None;
    let mut descriptor: Option<usize> = None;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let (f, name) = match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("kmsg") => (Format::Kmsg, "--kmsg"),
            Long("json") => (Format::Json, "--json"),
            Long("level") => {
                let v = p.value().map_err(|e| e.to_string())?;
                level = Some(level_value(&v)?);
                continue;
            }
            Long("from-memory") => {
                let v = p.value().map_err(|e| e.to_string())?;
                if let Some(first) = &dump {
                    return Err(format!(
                        "one dump at a time: got {:?} and {:?}",
                        first.to_string_lossy(),
                        v.to_string_lossy()
                    ));
                }
                if v == "-" {
                    return Err(
                        "--from-memory: a dump is read at offsets: standard input (-) \
                                is not supported"
                            .into(),
                    );
                }
                dump = Some(v);
                continue;
            }
            Long("base") => {
                base = Some(address_value(
                    "--base",
                    &p.value().map_err(|e| e.to_string())?,
                )?);
                continue;
            }
            Long("descriptor") => {
                let v = p.value().map_err(|e| e.to_string())?;
                descriptor = Some(address_value("--descriptor", &v)?);
                continue;
            }
            Value(v) => {
                if let Some(first) = &path {
                    return Err(format!(
                        "one image at a time: got {:?} and {:?}",
                        first.to_string_lossy(),
                        v.to_string_lossy()
                    ));
                }
                path = Some(v);
                continue;
            }
            _ => return Err(format!("{} (try --help)", arg.unexpected())),
        };
        match format {
            Some((g, other)) if g != f => {
                return Err(format!("{other} and {name} exclude each other"))
            }
            _ => format = Some((f, name)),
        }
    }
    let input = match dump {
        Some(dump) => {
            if let Some(image) = &path {
                return Err(format!(
                    "--from-memory reads a dump, not an image: got the dump {:?} and the image {:?}",
                    dump.to_string_lossy(),
                    image.to_string_lossy()
                ));
            }
            Input::Memory(MemoryArgs {
                path: dump,
                base: base.unwrap_or(0),
                descriptor,
            })
        }
        None if base.is_some() || descriptor.is_some() => {
            return Err("--base and --descriptor go with --from-memory".into())
        }
        None => Input::Image(path.filter(|p| p != "-")),
    };
    Ok(Command::Run(Args {
        format: format.map_or(Format::Dmesg, |(f, _)| f),
        level,
        input,
    }))
}

/// An address option's value: `0x…` hexadecimal or decimal, a multiple of the word size.
fn address_value(name: &str, v: &OsString) -> Result<usize, String> {
    let parsed = v.to_str().and_then(|s| {
        let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => (hex, 16),
            None => (s, 10),
        };
        let ok = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
        ok.then(|| usize::from_str_radix(digits, radix).ok())
            .flatten()
    });
    match parsed {
        Some(a) if a % W == 0 => Ok(a),
        Some(a) => Err(format!(
            "{name}: {a:#x} is not a multiple of the word size ({W} bytes)"
        )),
        None => Err(format!(
            "{name}: expected an address (0x... hexadecimal or decimal, at most {:#x}), got {:?}",
            usize::MAX,
            v.to_string_lossy()
        )),
    }
}

/// `--level`'s value: 0 (emerg) to 7 (debug).
fn level_value(v: &OsString) -> Result<u8, String> {
    v.to_str()
        .and_then(|s| s.parse::<u8>().ok())
        .filter(|&l| l <= 7)
        .ok_or_else(|| {
            format!(
                "--level: expected a level from 0 (emerg) to 7 (debug), got {:?}",
                v.to_string_lossy()
            )
        })
}

/// The image's bytes from `input`: the core header, then — if it is intact — up to the end of the
/// record area it declares, at most [`MAX_IMAGE_BYTES`]; nothing after that is read. Returns the
/// bytes and the size the header declares (`None` if the header is not intact: the parser then
/// reports why from these bytes alone, as it would from the whole input).
fn read_image(input: &mut impl Read) -> io::Result<(Vec<u8>, Option<u64>)> {
    let mut buf = Vec::with_capacity(CORE_BYTES);
    input
        .by_ref()
        .take(CORE_BYTES as u64)
        .read_to_end(&mut buf)?;
    // With the core header only, an intact header (magic, version, checksum, a readable layout)
    // parses as far as "the tables and the record area are missing"; anything else is the error the
    // whole image would give.
    let declared = match handover::parse_located(&buf) {
        Err((HandoverError::Truncated { .. }, _)) if buf.len() == CORE_BYTES => {
            // Core header fields (README, "Handover image"): record area bytes `A` at 48 (u64),
            // record area offset `RO` at 56 (u32).
            let area = u64::from_le_bytes(buf[48..56].try_into().unwrap_or([0xff; 8]));
            let offset = u32::from_le_bytes(buf[56..60].try_into().unwrap_or([0xff; 4]));
            u64::from(offset).saturating_add(area)
        }
        _ => return Ok((buf, None)),
    };
    let want = declared.min(MAX_IMAGE_BYTES);
    // Grow by at most doubling (from 1 MiB) and never past `want`, so a header that lies about its
    // size costs memory for the bytes that really follow it (at most twice them), not for its claim.
    let mut filled = buf.len();
    while (filled as u64) < want {
        if filled == buf.len() {
            let room = (want - filled as u64).min(filled.max(1 << 20) as u64) as usize;
            buf.resize(filled + room, 0);
        }
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok((buf, Some(declared)))
}

/// The caller column of the default format: Linux's caller id — `T<tid>` for a record that names
/// its task, else `C<cpu>` ([`Header::caller`], which reads an unknown caller, 0, as the record's
/// CPU) — followed, outside task context, by `/<ctx>` (`C2/irq`, `C3/nmi`, `C0/crash`, `C2/ctx7`
/// for a context number this reader does not know; `T5/irq` if a writer named a task outside task
/// context). Continuations are joined per caller column: per task, or per CPU and context.
///
/// [`Header::caller`]: nmilog::Header::caller
fn caller(r: &ImageRecord<'_>) -> String {
    let who = r.header.caller();
    match r.header.context().0 {
        Some(ContextKind::Task) => who.to_string(),
        Some(k) => format!("{who}/{}", k.name()),
        None => format!("{who}/ctx{}", r.header.ctx & 0xf),
    }
}

/// The caller id for `/dev/kmsg` and JSON (`T123`, `C2`), or `None` if the record carries none (an
/// image from a writer before the caller field, or a record nmilog wrote itself): those formats
/// then say nothing rather than guess.
fn caller_id(r: &ImageRecord<'_>) -> Option<Caller> {
    (r.header.caller != 0).then(|| r.header.caller())
}

fn ctx_name(r: &ImageRecord<'_>) -> String {
    match r.header.context().0 {
        Some(k) => k.name().to_owned(),
        None => format!("ctx{}", r.header.ctx & 0xf),
    }
}

/// `raw[<len>]: <hex>` for a raw or non-UTF-8 payload.
fn hex(payload: &[u8]) -> String {
    let mut s = format!("raw[{}]: ", payload.len());
    for b in payload {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Default format text: [`escape::text`] (controls as `\xNN`, format characters and separators as
/// `\u{XXXX}`).
fn dmesg_text(r: &ImageRecord<'_>) -> String {
    match r.text() {
        None => hex(r.payload),
        Some(t) => {
            let mut s = String::with_capacity(t.len());
            let _ = escape::text(&mut s, t);
            s
        }
    }
}

/// `/dev/kmsg` text: bytes below 0x20, from 0x7f, and `\` as `\xNN` (as the kernel escapes them).
fn kmsg_text(r: &ImageRecord<'_>) -> String {
    if r.text().is_none() {
        return hex(r.payload);
    }
    let mut s = String::with_capacity(r.payload.len());
    for &b in r.payload {
        if !(0x20..0x7f).contains(&b) || b == b'\\' {
            let _ = write!(s, "\\x{b:02x}");
        } else {
            s.push(b as char);
        }
    }
    s
}

fn timestamp(ts_ns: u64) -> String {
    format!(
        "[{:5}.{:06}]",
        ts_ns / 1_000_000_000,
        ts_ns % 1_000_000_000 / 1_000
    )
}

fn keep(level: u8, max: Option<u8>) -> bool {
    max.is_none_or(|m| level <= m)
}

fn render(image: &handover::Image<'_>, args: &Args, out: &mut impl Write) -> io::Result<()> {
    match args.format {
        Format::Dmesg => {
            struct Line {
                level: u8,
                text: String,
            }
            let mut lines: Vec<Line> = Vec::new();
            // The open line of each caller: its last record did not end with a newline.
            let mut open: HashMap<String, usize> = HashMap::new();
            for r in image.records() {
                let who = caller(&r);
                let text = dmesg_text(&r);
                let joined = match open.get(&who) {
                    Some(&i) if r.header.flags & flags::CONT != 0 => {
                        lines[i].text.push_str(&text);
                        i
                    }
                    _ => {
                        lines.push(Line {
                            level: r.header.level,
                            text: format!("{} {} {}", timestamp(r.header.ts_ns), who, text),
                        });
                        lines.len() - 1
                    }
                };
                if r.header.flags & flags::NEWLINE != 0 {
                    open.remove(&who);
                } else {
                    open.insert(who, joined);
                }
            }
            for l in lines.iter().filter(|l| keep(l.level, args.level)) {
                writeln!(out, "{}", l.text)?;
            }
        }
        Format::Kmsg => {
            for r in image.records().filter(|r| keep(r.header.level, args.level)) {
                let fl = if r.header.flags & flags::CONT != 0 {
                    'c'
                } else {
                    '-'
                };
                let who = caller_id(&r).map_or(String::new(), |c| format!(",caller={c}"));
                writeln!(
                    out,
                    "{},{},{},{}{};{}",
                    r.header.level,
                    r.seq,
                    r.header.ts_ns / 1_000,
                    fl,
                    who,
                    kmsg_text(&r)
                )?;
            }
        }
        Format::Json => {
            for r in image.records().filter(|r| keep(r.header.level, args.level)) {
                let mut s = format!("{{\"seq\":{},\"ts_ns\":{},", r.seq, r.header.ts_ns);
                if let Some(c) = caller_id(&r) {
                    let _ = write!(s, "\"caller\":\"{c}\",");
                }
                let _ = write!(s, "\"cpu\":{},\"ctx\":", r.header.cpu);
                let _ = json_string(&mut s, &ctx_name(&r));
                let _ = write!(s, ",\"level\":{},\"text\":", r.header.level);
                let _ = match r.text() {
                    Some(t) => json_string(&mut s, t),
                    None => json_string(&mut s, &hex(r.payload)),
                };
                if r.header.flags & flags::CONT != 0 {
                    s.push_str(",\"cont\":true");
                }
                if r.text().is_none() {
                    s.push_str(",\"raw\":true");
                }
                if r.header.flags & flags::NEWLINE != 0 {
                    s.push_str(",\"newline\":true");
                }
                s.push('}');
                writeln!(out, "{s}")?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(a)) => a,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("dmesg: {e}");
            return ExitCode::from(EXIT_TROUBLE);
        }
    };
    match &args.input {
        Input::Image(path) => print_image_file(path.as_ref(), &args),
        Input::Memory(m) => match memory::rebuild(m) {
            Ok(rebuilt) => print_image(&rebuilt.image, &args, Some(&rebuilt.origin)),
            Err(f) => {
                eprintln!("dmesg: {}", f.message);
                ExitCode::from(f.code)
            }
        },
    }
}

/// Reads the image at `path` (standard input if `None`) and prints it.
fn print_image_file(path: Option<&OsString>, args: &Args) -> ExitCode {
    let read = match path {
        Some(p) => File::open(p).and_then(|mut f| read_image(&mut f)),
        None => read_image(&mut io::stdin().lock()),
    };
    let (bytes, declared) = match read {
        Ok(r) => r,
        Err(e) => {
            let name = path.map_or("standard input".into(), |p| p.to_string_lossy());
            eprintln!("dmesg: cannot read {name}: {e}");
            return ExitCode::from(EXIT_TROUBLE);
        }
    };
    if let Some(n) = declared.filter(|&n| n > MAX_IMAGE_BYTES) {
        eprintln!(
            "dmesg: the image declares {n} bytes, more than the {MAX_IMAGE_BYTES} this reader reads: \
             only those were read"
        );
    }
    print_image(&bytes, args, None)
}

/// Where a log rebuilt from memory came from (what the first line on stderr, and with `--json` the
/// first object on stdout, say).
struct MemoryOrigin {
    /// The descriptor's address.
    descriptor: usize,
    /// Its offset in the dump file.
    file_offset: u64,
    /// The dump was in the other byte order (every word was byte-swapped as it was loaded).
    byte_swapped: bool,
    /// The CPU that entered the crash path, if one did.
    crashing_cpu: Option<usize>,
    /// Valid descriptors the scan found (1 with `--descriptor`).
    valid: usize,
    /// Magics the scan found whose header did not check out, and why the first did.
    rejected: usize,
    first_rejection: Option<(usize, RecoverError)>,
}

/// Prints the image `bytes` (read from a file, or rebuilt from memory: `origin`) in the chosen
/// format, then the summary on stderr; the exit code.
fn print_image(bytes: &[u8], args: &Args, origin: Option<&MemoryOrigin>) -> ExitCode {
    let image = match handover::parse_located(bytes) {
        Ok(image) => image,
        Err((e, at)) => {
            eprintln!("dmesg: corrupt handover image at byte {at}: {e}");
            return ExitCode::from(EXIT_CORRUPT);
        }
    };
    let not_stopped: Vec<usize> = (0..image.cpu_count())
        .filter(|&c| image.cpu_stopped(c) == Some(false))
        .collect();
    if let Some(o) = origin {
        for line in origin_lines(o, &not_stopped) {
            eprintln!("{line}");
        }
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = origin
        .filter(|_| args.format == Format::Json)
        .map_or(Ok(()), |o| {
            writeln!(out, "{}", origin_json(o, &not_stopped))
        })
        .and_then(|()| render(&image, args, &mut out))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("dmesg: cannot write: {e}");
            return ExitCode::from(EXIT_TROUBLE);
        }
    }
    let t = image.totals();
    eprintln!(
        "recovered={} torn={} overwritten={} dropped={} left_out={} bad_cpu={}",
        image.record_count(),
        t.torn,
        t.overwritten,
        t.dropped,
        image.left_out(),
        image.bad_cpu_dropped()
    );
    if let Some((e, at)) = image.corruption() {
        eprintln!(
            "dmesg: corrupt handover image at byte {at}: {e} (the {} records before it were recovered)",
            image.record_count()
        );
        return ExitCode::from(EXIT_CORRUPT);
    }
    ExitCode::SUCCESS
}

/// The lines on stderr saying where a log rebuilt from memory came from.
fn origin_lines(o: &MemoryOrigin, not_stopped: &[usize]) -> Vec<String> {
    let mut lines = Vec::new();
    if o.valid > 1 || o.rejected > 0 {
        let mut s = format!(
            "dmesg: the scan found {} valid descriptor(s) (the first is used) and rejected {} \
             magic(s)",
            o.valid, o.rejected
        );
        if let Some((addr, e)) = o.first_rejection {
            let _ = write!(s, " (the first at {addr:#x}: {e})");
        }
        lines.push(s);
    }
    let crashing = o
        .crashing_cpu
        .map_or("no CPU entered the crash path".into(), |c| {
            format!("crashing CPU {c}")
        });
    let list: Vec<String> = not_stopped.iter().map(|c| c.to_string()).collect();
    lines.push(format!(
        "dmesg: rebuilt from memory: descriptor at {:#x} (file offset {}{}), {crashing}, \
         CPUs not stopped: {}",
        o.descriptor,
        o.file_offset,
        if o.byte_swapped {
            ", the other byte order: words byte-swapped"
        } else {
            ""
        },
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(",")
        }
    ));
    lines
}

/// The `--json` object saying where a log rebuilt from memory came from.
fn origin_json(o: &MemoryOrigin, not_stopped: &[usize]) -> String {
    let crashing = o.crashing_cpu.map_or("null".into(), |c| c.to_string());
    let list: Vec<String> = not_stopped.iter().map(|c| c.to_string()).collect();
    format!(
        "{{\"rebuilt_from_memory\":{{\"descriptor\":\"{:#x}\",\"file_offset\":{},\
         \"byte_swapped\":{},\"crashing_cpu\":{crashing},\"not_stopped\":[{}],\
         \"descriptors_valid\":{},\"magics_rejected\":{}}}}}",
        o.descriptor,
        o.file_offset,
        o.byte_swapped,
        list.join(","),
        o.valid,
        o.rejected
    )
}

/// `--from-memory`: the log rebuilt from a raw memory dump, as a handover image.
mod memory {
    use super::*;

    /// Why the log could not be rebuilt: the one line for stderr (without `dmesg: `), the exit code.
    pub(super) struct Failure {
        pub(super) code: u8,
        pub(super) message: String,
    }

    /// A rebuilt log.
    pub(super) struct Rebuilt {
        pub(super) image: Vec<u8>,
        pub(super) origin: MemoryOrigin,
    }

    /// The exit code for a dump the log cannot be rebuilt from.
    fn exit_code(e: &RecoverError) -> u8 {
        match e {
            RecoverError::NoDescriptor | RecoverError::NoMagic { .. } => EXIT_NO_DESCRIPTOR,
            RecoverError::WordSize { .. }
            | RecoverError::Version { .. }
            | RecoverError::LayoutMismatch
            | RecoverError::ForeignEndian => EXIT_INCOMPATIBLE,
            _ => EXIT_DAMAGED,
        }
    }

    /// The dump file, taken at address `base`.
    struct Dump {
        file: File,
        name: String,
        base: usize,
        /// The address after its last whole word.
        end: usize,
    }

    impl Dump {
        fn fail(&self, code: u8, what: impl std::fmt::Display) -> Failure {
            Failure {
                code,
                message: format!("{}: {what}", self.name),
            }
        }

        fn recover_failed(&self, e: RecoverError) -> Failure {
            self.fail(exit_code(&e), e)
        }

        fn io_failed(&self, e: io::Error) -> Failure {
            self.fail(EXIT_TROUBLE, format_args!("cannot read: {e}"))
        }

        /// Fills `into` from address `addr` (inside the dump, word-aligned: the caller checks).
        fn read(&mut self, addr: usize, into: &mut [usize]) -> io::Result<()> {
            self.file.seek(SeekFrom::Start((addr - self.base) as u64))?;
            self.file.read_exact(bytes_mut(into))
        }

        /// The `n` words at `addr`, or fewer if the dump ends first (the caller checks `addr`).
        fn words(&mut self, addr: usize, n: usize) -> io::Result<Vec<usize>> {
            let n = n.min((self.end - addr) / W);
            let mut v = vec![0usize; n];
            self.read(addr, &mut v)?;
            Ok(v)
        }

        fn contains(&self, addr: usize) -> bool {
            (self.base..self.end).contains(&addr)
        }
    }

    /// `words` as bytes, to read into.
    fn bytes_mut(words: &mut [usize]) -> &mut [u8] {
        let len = size_of_val(words);
        // SAFETY: the same initialised memory, exclusively borrowed for the result's lifetime; `u8`
        // has alignment 1 and no invalid values, and any bytes written make valid `usize`s.
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
    }

    /// The descriptor's magic as native words.
    fn magic_words() -> [usize; 8 / W] {
        let mut m = [0usize; 8 / W];
        for (w, chunk) in m.iter_mut().zip(recover::MAGIC.chunks_exact(W)) {
            *w = usize::from_ne_bytes(chunk.try_into().unwrap_or([0; W]));
        }
        m
    }

    /// Whether `words` start with the magic, in either byte order.
    fn has_magic(words: &[usize]) -> bool {
        let m = magic_words();
        words.len() >= m.len()
            && (words[..m.len()] == m || words.iter().zip(m).all(|(&w, m)| w == m.swap_bytes()))
    }

    /// Byte-swaps every word of `words` if `swap`, then writes the magic at their start in native
    /// order if it is there in either: the magic is a byte string (a kernel of the other byte order
    /// leaves the same bytes), so converting the words turns it around, and its order says nothing.
    fn convert(words: &mut [usize], swap: bool, magic_at: Option<usize>) {
        if swap {
            for w in words.iter_mut() {
                *w = w.swap_bytes();
            }
        }
        if let Some(i) = magic_at {
            if let Some(head) = words.get_mut(i..) {
                if has_magic(head) {
                    head[..8 / W].copy_from_slice(&magic_words());
                }
            }
        }
    }

    fn atomics(words: Vec<usize>) -> Vec<AtomicUsize> {
        words.into_iter().map(AtomicUsize::new).collect()
    }

    /// Checks the descriptor header whose words (from its address `addr` on, at most
    /// [`HEADER_WINDOW_WORDS`]) are `window`: as they are, then — if it is in the other byte order —
    /// byte-swapped. The descriptor and whether the dump's words need swapping.
    fn check_header(window: &[usize], addr: usize) -> Result<(Descriptor, bool), RecoverError> {
        let read = |swap: bool| {
            let mut w = window[..window.len().min(HEADER_WINDOW_WORDS)].to_vec();
            convert(&mut w, swap, Some(0));
            let w = atomics(w);
            Descriptor::read(&RawDump::new(addr, &w), addr)
        };
        match read(false) {
            Err(RecoverError::ForeignEndian) => read(true).map(|d| (d, true)),
            r => r.map(|d| (d, false)),
        }
    }

    /// What the scan found.
    #[derive(Default)]
    struct Found {
        first: Option<(Descriptor, bool)>,
        valid: usize,
        rejected: usize,
        first_rejection: Option<(usize, RecoverError)>,
    }

    /// Scans the whole dump for the magic, in [`SCAN_CHUNK`]-byte reads (plus a header window), and
    /// checks every candidate. Memory: one buffer; time: linear in the dump's size.
    fn scan(d: &mut Dump) -> Result<Found, Failure> {
        let m = magic_words()[0];
        let swapped = m.swap_bytes();
        let mut buf = vec![0usize; SCAN_CHUNK / W + HEADER_WINDOW_WORDS];
        let mut found = Found::default();
        let mut at = d.base;
        while at < d.end {
            let n = buf.len().min((d.end - at) / W);
            d.read(at, &mut buf[..n]).map_err(|e| d.io_failed(e))?;
            let scan = n.min(SCAN_CHUNK / W);
            let mut i = 0;
            while i < scan {
                let v = buf[i];
                i += 1;
                if v != m && v != swapped {
                    continue;
                }
                let addr = at + (i - 1) * W;
                match check_header(&buf[i - 1..n], addr) {
                    Ok(hit) => {
                        found.valid += 1;
                        found.first.get_or_insert(hit);
                    }
                    Err(RecoverError::NoMagic { .. }) => {}
                    Err(e) => {
                        found.rejected += 1;
                        found.first_rejection.get_or_insert((addr, e));
                    }
                }
            }
            at = match at.checked_add(SCAN_CHUNK) {
                Some(next) => next,
                None => break,
            };
        }
        Ok(found)
    }

    /// The descriptor: at `addr` if given, else the scan's first valid one.
    fn locate(d: &mut Dump, addr: Option<usize>) -> Result<Found, Failure> {
        let Some(addr) = addr else {
            let found = scan(d)?;
            if found.first.is_none() {
                let scanned = (d.end - d.base) as u64;
                let e = found
                    .first_rejection
                    .map_or(RecoverError::NoDescriptor, |(_, e)| e);
                let mut msg = e.to_string();
                match found.first_rejection {
                    None => {
                        let _ = write!(msg, " ({scanned} bytes scanned)");
                    }
                    Some((at, _)) => {
                        let _ = write!(
                            msg,
                            " (the descriptor at {at:#x}; {} magic(s) found, none valid)",
                            found.rejected
                        );
                    }
                }
                return Err(d.fail(exit_code(&e), msg));
            }
            return Ok(found);
        };
        if !d.contains(addr) {
            let e = RecoverError::NoMagic { addr };
            return Err(d.fail(
                exit_code(&e),
                format_args!(
                    "{e}: outside the dump, which holds {:#x}..{:#x}",
                    d.base, d.end
                ),
            ));
        }
        let window = d
            .words(addr, HEADER_WINDOW_WORDS)
            .map_err(|e| d.io_failed(e))?;
        let hit = check_header(&window, addr).map_err(|e| d.recover_failed(e))?;
        Ok(Found {
            first: Some(hit),
            valid: 1,
            ..Found::default()
        })
    }

    /// `[start, end)` of every region `desc` names, and an image size bound for them.
    fn regions(
        d: &mut Dump,
        desc: &Descriptor,
        swap: bool,
    ) -> Result<(Vec<(usize, usize)>, usize), Failure> {
        let addr = desc.address();
        let total = desc.total_words();
        if total > (d.end - addr) / W {
            return Err(d.recover_failed(RecoverError::OutsideDump {
                what: "descriptor tables",
                addr,
            }));
        }
        let mut words = d.words(addr, total).map_err(|e| d.io_failed(e))?;
        convert(&mut words, swap, Some(0));
        let words = atomics(words);
        let mem = RawDump::new(addr, &words);
        let mut spans = Vec::new();
        // The image bound: what `max_image_size` gives for the log's geometry with empty rings,
        // plus, for every region, what its words can add (the rings and the main log are among the
        // regions; the others add a few bytes each). Sizes are clamped to the dump (a larger region
        // fails to open).
        let area = |words: usize| {
            let words = words.min((d.end - d.base) / W);
            handover::max_image_size(0, 0, 0, words) - handover::max_image_size(0, 0, 0, 0)
        };
        let mut bound = handover::max_image_size(desc.cpus(), desc.depth(), 0, 0);
        desc.for_each_region(&mem, &mut |a, n| {
            spans.push((a, a.saturating_add(n.saturating_mul(W))));
            bound = bound.saturating_add(area(n));
        })
        .map_err(|e| d.recover_failed(e))?;
        Ok((spans, bound))
    }

    /// The regions clamped to the dump, word-aligned, sorted, and merged where less than
    /// [`MERGE_GAP`] apart (touching and overlapping ones included).
    fn merge(d: &Dump, mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
        let align_down = |a: usize| d.base + (a - d.base) / W * W;
        for s in spans.iter_mut() {
            let start = align_down(s.0.clamp(d.base, d.end));
            let end = s.1.clamp(d.base, d.end);
            let end = (align_down(end) + if end > align_down(end) { W } else { 0 }).min(d.end);
            *s = (start, end);
        }
        spans.retain(|s| s.0 < s.1);
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(MERGE_GAP) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    /// Rebuilds the log from the dump `m` names.
    pub(super) fn rebuild(m: &MemoryArgs) -> Result<Rebuilt, Failure> {
        let name = m.path.to_string_lossy().into_owned();
        let trouble = |what: String| Failure {
            code: EXIT_TROUBLE,
            message: what,
        };
        let file = File::open(&m.path).map_err(|e| trouble(format!("cannot read {name}: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| trouble(format!("cannot read {name}: {e}")))?
            .len();
        let end = usize::try_from(len)
            .ok()
            .map(|l| l / W * W)
            .and_then(|l| m.base.checked_add(l))
            .ok_or_else(|| {
                trouble(format!(
                    "--base {:#x}: the {len} bytes of {name} would end past the top of the \
                     address space",
                    m.base
                ))
            })?;
        let mut d = Dump {
            file,
            name,
            base: m.base,
            end,
        };
        let found = locate(&mut d, m.descriptor)?;
        let Some((desc, swap)) = found.first else {
            return Err(d.recover_failed(RecoverError::NoDescriptor));
        };
        let (spans, bound) = regions(&mut d, &desc, swap)?;
        let merged = merge(&d, spans);
        let load: usize = merged.iter().map(|(a, b)| b - a).sum();
        if load > MAX_LOAD_BYTES {
            return Err(d.fail(
                EXIT_TOO_LARGE,
                format_args!(
                    "the log's regions take {load} bytes of the dump, more than the \
                     {MAX_LOAD_BYTES} this reader loads"
                ),
            ));
        }
        let mut pieces: Vec<(usize, Vec<AtomicUsize>)> = Vec::with_capacity(merged.len());
        for (a, b) in merged {
            let mut words = d.words(a, (b - a) / W).map_err(|e| d.io_failed(e))?;
            let magic_at = (a..b)
                .contains(&desc.address())
                .then(|| (desc.address() - a) / W);
            convert(&mut words, swap, magic_at);
            pieces.push((a, atomics(words)));
        }
        let raw: Vec<RawDump<'_>> = pieces.iter().map(|(a, w)| RawDump::new(*a, w)).collect();
        let mem = PiecewiseDump::new(&raw);
        let log = RecoveredLog::open(&mem, desc).map_err(|e| d.recover_failed(e))?;
        let scratch: Vec<DrainSource> = (0..log.sources()).map(|_| DrainSource::new()).collect();
        let mut image = vec![0u8; bound.min(MAX_IMAGE_BYTES as usize)];
        let rep = log
            .write_image(&scratch, &mut image)
            .map_err(|e| d.recover_failed(e))?;
        image.truncate(rep.len);
        if rep.left_out > 0 {
            eprintln!(
                "dmesg: the log rebuilt from memory is larger than the {MAX_IMAGE_BYTES} bytes \
                 this reader writes: the {} oldest records were left out",
                rep.left_out
            );
        }
        Ok(Rebuilt {
            image,
            origin: MemoryOrigin {
                descriptor: desc.address(),
                file_offset: (desc.address() - d.base) as u64,
                byte_swapped: swap,
                crashing_cpu: log.crashing_cpu(),
                valid: found.valid,
                rejected: found.rejected,
                first_rejection: found.first_rejection,
            },
        })
    }
}
