//! `dmesg` for nmilog handover images: prints the log a crashed kernel left behind.
//!
//! ```text
//! cargo run --example dmesg -- [--kmsg | --json] [--level N] [IMAGE]     (IMAGE absent or "-": stdin)
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
//! * `--kmsg`: the `/dev/kmsg` record format `level,seq,usec,flags;text`, one line per record (no
//!   joining), flags `-` normal and `c` continuation; text escaped as the kernel does (bytes below
//!   0x20, from 0x7f, and `\` become `\xNN`).
//! * `--json`: one object per record, `{"seq":…,"ts_ns":…,"cpu":…,"ctx":"task|irq|nmi|crash",
//!   "level":…,"text":"…"}`, plus `"cont":true` on continuations and `"raw":true` on raw payloads;
//!   strings escaped by [`nmilog::escape::json_string`] (every control character, U+2028/U+2029).
//!
//! `--level N` keeps records (default format: lines) whose level is `<= N`. A payload flagged
//! [`RAW`](nmilog::record::flags::RAW) or not valid UTF-8 prints as `raw[<len>]: <hex>`. In the default
//! format, control characters in text print as `\xNN` so that one line stays one line.
//!
//! stderr gets a summary, `recovered=N torn=T overwritten=O dropped=D left_out=L bad_cpu=B`. A corrupt
//! image gets one line naming the problem and its byte offset and exit code 1; when only the record
//! area is damaged, the records before the damage are printed first (with the summary).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use nmilog::escape::json_string;
use nmilog::handover::{self, ImageRecord};
use nmilog::record::flags;
use nmilog::ContextKind;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Dmesg,
    Kmsg,
    Json,
}

struct Args {
    format: Format,
    level: Option<u8>,
    path: Option<String>,
}

const USAGE: &str = "usage: dmesg [--kmsg | --json] [--level N] [IMAGE|-]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        format: Format::Dmesg,
        level: None,
        path: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kmsg" => a.format = Format::Kmsg,
            "--json" => a.format = Format::Json,
            "--level" => {
                let v = it.next().ok_or("--level needs a number")?;
                a.level = Some(v.parse().map_err(|_| format!("bad level {v:?}"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            "-" => a.path = None,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => a.path = Some(s.to_owned()),
        }
    }
    Ok(a)
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

/// Default format text: control characters as `\xNN`.
fn dmesg_text(r: &ImageRecord<'_>) -> String {
    match r.text() {
        None => hex(r.payload),
        Some(t) => {
            let mut s = String::with_capacity(t.len());
            for c in t.chars() {
                if c.is_control() && (c as u32) < 0x100 {
                    let _ = write!(s, "\\x{:02x}", c as u32);
                } else {
                    s.push(c);
                }
            }
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
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("dmesg: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut bytes = Vec::new();
    let read = match &args.path {
        Some(p) => std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut bytes)),
        None => io::stdin().lock().read_to_end(&mut bytes),
    };
    if let Err(e) = read {
        let name = args.path.as_deref().unwrap_or("stdin");
        eprintln!("dmesg: cannot read {name}: {e}");
        return ExitCode::from(2);
    }
    let image = match handover::parse_located(&bytes) {
        Ok(image) => image,
        Err((e, at)) => {
            eprintln!("dmesg: corrupt handover image at byte {at}: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = render(&image, &args, &mut out).and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("dmesg: cannot write: {e}");
            return ExitCode::from(2);
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
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
