//! The output formats: `dmesg` lines (caller column, continuations joined per caller), `/dev/kmsg`
//! records and JSON lines, each record's text escaped for its format.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use nmilog::escape::{self, json_string};
use nmilog::handover::{self, ImageRecord};
use nmilog::record::{flags, Caller};
use nmilog::ContextKind;

use crate::args::{Args, Format};
use crate::defmt::DefmtDecoder;

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

/// A record's text: UTF-8 text, a defmt frame decoded with `--elf`, or raw bytes (printed as hex).
enum Text<'a> {
    Utf8(&'a str),
    Defmt(String),
    Raw,
}

impl<'a> Text<'a> {
    /// The text of `r`: decoded if it is a defmt frame `defmt` decodes.
    fn of(r: &ImageRecord<'a>, defmt: Option<&DefmtDecoder>) -> Self {
        if let Some(t) = defmt.and_then(|d| d.text(r)) {
            return Text::Defmt(t);
        }
        r.text().map_or(Text::Raw, Text::Utf8)
    }

    /// The text as a string (`raw[<len>]: <hex>` for raw bytes).
    fn string(&self, payload: &[u8]) -> std::borrow::Cow<'_, str> {
        match self {
            Text::Utf8(t) => (*t).into(),
            Text::Defmt(t) => t.as_str().into(),
            Text::Raw => hex(payload).into(),
        }
    }
}

/// Default format text: [`escape::text`] (controls as `\xNN`, format characters and separators as
/// `\u{XXXX}`).
fn dmesg_text(t: &Text<'_>, payload: &[u8]) -> String {
    match t {
        Text::Raw => hex(payload),
        Text::Utf8(t) => escaped(t),
        Text::Defmt(t) => escaped(t),
    }
}

fn escaped(t: &str) -> String {
    let mut s = String::with_capacity(t.len());
    let _ = escape::text(&mut s, t);
    s
}

/// `/dev/kmsg` text: bytes below 0x20, from 0x7f, and `\` as `\xNN` (as the kernel escapes them).
fn kmsg_text(t: &Text<'_>, payload: &[u8]) -> String {
    let bytes = match t {
        Text::Raw => return hex(payload),
        Text::Utf8(t) => t.as_bytes(),
        Text::Defmt(t) => t.as_bytes(),
    };
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
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

/// Prints the image's records in `args.format`, defmt frames decoded with `defmt` if given.
pub(crate) fn render(
    image: &handover::Image<'_>,
    args: &Args,
    defmt: Option<&DefmtDecoder>,
    out: &mut impl Write,
) -> io::Result<()> {
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
                let text = dmesg_text(&Text::of(&r, defmt), r.payload);
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
                    kmsg_text(&Text::of(&r, defmt), r.payload)
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
                let text = Text::of(&r, defmt);
                let _ = json_string(&mut s, &text.string(r.payload));
                if r.header.flags & flags::CONT != 0 {
                    s.push_str(",\"cont\":true");
                }
                match text {
                    Text::Raw => s.push_str(",\"raw\":true"),
                    Text::Defmt(_) => s.push_str(",\"defmt\":true"),
                    Text::Utf8(_) => {}
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
