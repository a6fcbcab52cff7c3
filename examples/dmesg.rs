//! `dmesg` for nmilog handover images: prints the log a crashed kernel left behind.
//!
//! ```text
//! cargo run --example dmesg -- [--kmsg | --json] [--level 0-7] [--] [IMAGE | -]   (no IMAGE, "-": stdin)
//! ```
//!
//! Output formats (one record or line per line of stdout):
//!
//! * default, like `dmesg`: `[    5.123456] C2 text` — seconds and microseconds of the record's
//!   `ts_ns`, then the **caller id**: `C<cpu>` for task context, `C<cpu>/<ctx>` otherwise (`C2/irq`,
//!   `C2/nmi`, `C0/crash`; `C2/ctx7` for a context number this reader does not know). Records flagged
//!   [`CONT`](nmilog::record::flags::CONT) are joined onto the previous line of the **same caller**
//!   (CPU *and* context, as printk's caller id is per task or per CPU context: an NMI's line never
//!   swallows the continuation of the task it interrupted); the joined line keeps the level of its
//!   first record. A continuation with no earlier line from its caller starts a line of its own.
//!   Text is escaped by [`nmilog::escape::text`]: control characters print as `\xNN`, format
//!   characters (bidirectional overrides, zero-width characters…) and the line and paragraph
//!   separators as `\u{XXXX}`, so that one record stays one line and cannot disguise its neighbours.
//! * `--kmsg`: the `/dev/kmsg` record format `level,seq,usec,flags;text`, one line per record (no
//!   joining), flags `-` normal and `c` continuation; text escaped as the kernel does (bytes below
//!   0x20, from 0x7f, and `\` become `\xNN`: so every non-ASCII character is escaped).
//! * `--json`: one object per record, `{"seq":…,"ts_ns":…,"cpu":…,"ctx":"task|irq|nmi|crash",
//!   "level":…,"text":"…"}`, plus `"cont":true` on continuations and `"raw":true` on raw payloads;
//!   strings escaped by [`nmilog::escape::json_string`] (every control character, U+2028/U+2029).
//!
//! `--level N` (0 emerg … 7 debug) keeps records (default format: lines) whose level is `<= N`. A
//! payload flagged [`RAW`](nmilog::record::flags::RAW) or not valid UTF-8 prints as
//! `raw[<len>]: <hex>`.
//!
//! **Reading.** The input (a file, or standard input for `-` or no path) is read as a stream, and
//! only as far as the image goes: first the 64-byte core header; if it is an intact header (magic,
//! version and checksum), then up to the end of the record area it declares (`RO + A`), at most
//! [`MAX_IMAGE_BYTES`]. Whatever follows the image is never read (the format ignores it), so a
//! valid image followed by gigabytes is recovered whole, and `/dev/zero` or a huge file of zeros is
//! answered after 64 bytes. Memory: the bytes read, and never more than [`MAX_IMAGE_BYTES`].
//!
//! stderr gets a summary, `recovered=N torn=T overwritten=O dropped=D left_out=L bad_cpu=B`. A corrupt
//! image gets one line naming the problem and its byte offset and exit code 1; when only the record
//! area is damaged, the records before the damage are printed first (with the summary). An image
//! declaring more than [`MAX_IMAGE_BYTES`] is read up to that size only (a line on stderr says so),
//! and whatever the parser finds there is reported as for any other image: the records up to that
//! point, then the damage where the bytes stop matching the header (exit code 1). Exit codes: 0 success, 1 corrupt or oversized image, 2 a bad command line or
//! an input/output error.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use nmilog::escape::{self, json_string};
use nmilog::handover::{self, HandoverError, ImageRecord, CORE_BYTES};
use nmilog::record::flags;
use nmilog::ContextKind;

/// The largest image this reader reads (256 MiB; the README's dmesg paragraph documents it): more
/// than ten times the largest image the host simulation can write (64 CPUs, an 8 MiB main log:
/// `handover::max_image_size(64, 4, 1 << 20)`, under 20 MiB), and small enough to hold in memory
/// anywhere this tool runs.
const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Exit code: the image is corrupt (or larger than [`MAX_IMAGE_BYTES`]).
const EXIT_CORRUPT: u8 = 1;
/// Exit code: a bad command line, or the input could not be read / the output written.
const EXIT_TROUBLE: u8 = 2;

const USAGE: &str = "\
usage: dmesg [--kmsg | --json] [--level N] [--] [IMAGE | -]
Prints an nmilog handover image like dmesg (IMAGE absent or -: standard input).
  --kmsg       /dev/kmsg format: level,seq,usec,flags;text
  --json       one JSON object per record
  --level N    only records of level N (0 emerg .. 7 debug) or more urgent
  -h, --help   this text
Reads only the image (at most 256 MiB), never what follows it.
Exit status: 0 ok, 1 corrupt or oversized image (records before the damage are printed),
2 bad command line or input/output error.";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Dmesg,
    Kmsg,
    Json,
}

struct Args {
    format: Format,
    level: Option<u8>,
    /// `None`: standard input.
    path: Option<OsString>,
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
    Ok(Command::Run(Args {
        format: format.map_or(Format::Dmesg, |(f, _)| f),
        level,
        path: path.filter(|p| p != "-"),
    }))
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

/// The caller id: `C<cpu>` in task context, `C<cpu>/<ctx>` otherwise.
fn caller(r: &ImageRecord<'_>) -> String {
    match r.header.context().0 {
        Some(ContextKind::Task) => format!("C{}", r.header.cpu),
        Some(k) => format!("C{}/{}", r.header.cpu, k.name()),
        None => format!("C{}/ctx{}", r.header.cpu, r.header.ctx & 0xf),
    }
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
            let mut last: HashMap<String, usize> = HashMap::new();
            for r in image.records() {
                let who = caller(&r);
                let text = dmesg_text(&r);
                if r.header.flags & flags::CONT != 0 {
                    if let Some(&i) = last.get(&who) {
                        lines[i].text.push_str(&text);
                        continue;
                    }
                }
                last.insert(who.clone(), lines.len());
                lines.push(Line {
                    level: r.header.level,
                    text: format!("{} {} {}", timestamp(r.header.ts_ns), who, text),
                });
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
                writeln!(
                    out,
                    "{},{},{},{};{}",
                    r.header.level,
                    r.seq,
                    r.header.ts_ns / 1_000,
                    fl,
                    kmsg_text(&r)
                )?;
            }
        }
        Format::Json => {
            for r in image.records().filter(|r| keep(r.header.level, args.level)) {
                let mut s = format!(
                    "{{\"seq\":{},\"ts_ns\":{},\"cpu\":{},\"ctx\":",
                    r.seq, r.header.ts_ns, r.header.cpu
                );
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
    let read = match &args.path {
        Some(p) => std::fs::File::open(p).and_then(|mut f| read_image(&mut f)),
        None => read_image(&mut io::stdin().lock()),
    };
    let (bytes, declared) = match read {
        Ok(r) => r,
        Err(e) => {
            let name = args
                .path
                .as_ref()
                .map_or("standard input".into(), |p| p.to_string_lossy());
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
    let image = match handover::parse_located(&bytes) {
        Ok(image) => image,
        Err((e, at)) => {
            eprintln!("dmesg: corrupt handover image at byte {at}: {e}");
            return ExitCode::from(EXIT_CORRUPT);
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = render(&image, &args, &mut out).and_then(|()| out.flush());
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
