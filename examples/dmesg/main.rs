//! `dmesg` for nmilog handover images: prints the log a crashed kernel left behind — from the image
//! its crash path wrote, or, when that path died before writing one, rebuilt from a raw memory dump.
//!
//! ```text
//! cargo run --example dmesg -- [--kmsg | --json] [--level 0-7] [--elf FIRMWARE] [--] [IMAGE | -]   (no IMAGE, "-": stdin)
//! cargo run --example dmesg -- [--kmsg | --json] [--level 0-7] [--elf FIRMWARE] --from-memory DUMP [--base ADDR] [--descriptor ADDR]
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
//!    scanning the whole file for the descriptor's magic in [`SCAN_CHUNK`](memory::SCAN_CHUNK)-byte reads (each followed
//!    by [`HEADER_WINDOW_WORDS`](memory::HEADER_WINDOW_WORDS) more words, so a header that starts near a chunk's end is whole in
//!    the buffer), checking each candidate's header with [`nmilog::recover::Descriptor::read`]; a
//!    candidate in the other byte order is retried with every word byte-swapped (the magic is a byte
//!    string, so it is taken in either order), and so is everything loaded afterwards. The first
//!    valid descriptor in address order wins; stderr says how many were valid and rejected if there
//!    was more than one candidate;
//! 2. loads the descriptor, lists the regions it names ([`Descriptor::for_each_region`]), merges
//!    regions less than [`MERGE_GAP`](memory::MERGE_GAP) bytes apart, clamps them to the file, and loads only those
//!    (at most [`MAX_LOAD_BYTES`](memory::MAX_LOAD_BYTES)) into a [`PiecewiseDump`];
//! 3. opens the log ([`RecoveredLog::open`]: every address and size checked), runs the crash drain
//!    over it into a handover image ([`RecoveredLog::write_image`], byte for byte what the live crash
//!    drain would have written from that memory) in a buffer of [`handover::max_image_size`] for the
//!    regions found, at most [`MAX_IMAGE_BYTES`] (the newest records are kept, the rest counted as
//!    left out), and prints that image exactly as an image file is printed.
//!
//! Memory: the scan buffer (about 1 MiB), the regions loaded (bounded by the file's size and by
//! [`MAX_LOAD_BYTES`](memory::MAX_LOAD_BYTES)) and the image buffer; time: linear in the file's size. stderr first gets a line
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
//! | 6 | `--from-memory`: the log's regions are larger than [`MAX_LOAD_BYTES`](memory::MAX_LOAD_BYTES) |
//!
//! The tool's modules, one job each: [`args`] (the command line), [`input`] (reading an image from a
//! file or standard input), [`memory`] (rebuilding the image from a raw memory dump), [`output`]
//! (the three output formats), [`defmt`] (decoding defmt frames with `--elf`); this file runs them and prints the summary.

mod args;
mod defmt;
mod input;
mod memory;
mod output;

use std::io::{self, Write};
use std::process::ExitCode;

use nmilog::handover;

use args::{parse_args, Args, Command, Format, Input, USAGE};
use defmt::DefmtDecoder;
use input::print_image_file;
use memory::{origin_json, origin_lines, MemoryOrigin};
use output::render;

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
/// Exit code (`--from-memory`): the log's regions are larger than [`memory::MAX_LOAD_BYTES`].
const EXIT_TOO_LARGE: u8 = 6;

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
    let defmt = match args.elf.as_ref().map(DefmtDecoder::load).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("dmesg: {e}");
            return ExitCode::from(EXIT_TROUBLE);
        }
    };
    let defmt = defmt.as_ref();
    match &args.input {
        Input::Image(path) => print_image_file(path.as_ref(), &args, defmt),
        Input::Memory(m) => match memory::rebuild(m) {
            Ok(rebuilt) => print_image(&rebuilt.image, &args, defmt, Some(&rebuilt.origin)),
            Err(f) => {
                eprintln!("dmesg: {}", f.message);
                ExitCode::from(f.code)
            }
        },
    }
}

/// Prints the image `bytes` (read from a file, or rebuilt from memory: `origin`) in the chosen
/// format (defmt frames decoded with `defmt`, if given), then the summary on stderr; the exit code.
fn print_image(
    bytes: &[u8],
    args: &Args,
    defmt: Option<&DefmtDecoder>,
    origin: Option<&MemoryOrigin>,
) -> ExitCode {
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
        .and_then(|()| render(&image, args, defmt, &mut out))
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
    if let Some(n) = defmt.map(DefmtDecoder::undecodable).filter(|&n| n > 0) {
        eprintln!(
            "dmesg: {n} defmt frame(s) could not be decoded with the --elf table: printed as hex"
        );
    }
    if let Some((e, at)) = image.corruption() {
        eprintln!(
            "dmesg: corrupt handover image at byte {at}: {e} (the {} records before it were recovered)",
            image.record_count()
        );
        return ExitCode::from(EXIT_CORRUPT);
    }
    ExitCode::SUCCESS
}
