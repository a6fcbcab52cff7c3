//! The command line: what to read (an image, or a memory dump to rebuild one from), in which format
//! to print it, and which levels; every mistake is a one-line message (exit code 2).

use std::ffi::OsString;

use crate::memory::W;

pub(crate) const USAGE: &str = "\
usage: dmesg [--kmsg | --json] [--level N] [--elf FIRMWARE] [--] [IMAGE | -]
       dmesg [--kmsg | --json] [--level N] [--elf FIRMWARE] --from-memory DUMP [--base ADDR] [--descriptor ADDR]
Prints an nmilog handover image like dmesg (IMAGE absent or -: standard input), or the log rebuilt
from a raw memory dump when the crash path died before writing an image.
  --kmsg               /dev/kmsg format: level,seq,usec,flags,caller=T123;text
  --json               one JSON object per record
  --level N            only records of level N (0 emerg .. 7 debug) or more urgent
  --elf FIRMWARE       decode defmt frames with FIRMWARE's .defmt table (else: hex)
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

/// The output format.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Dmesg,
    Kmsg,
    Json,
}

/// What to print, and how.
pub(crate) struct Args {
    pub(crate) format: Format,
    pub(crate) level: Option<u8>,
    pub(crate) input: Input,
    /// `--elf FIRMWARE`: decode defmt frames with its table.
    pub(crate) elf: Option<OsString>,
}

/// What to print.
pub(crate) enum Input {
    /// A handover image; `None`: standard input.
    Image(Option<OsString>),
    /// A log rebuilt from a memory dump.
    Memory(MemoryArgs),
}

/// `--from-memory DUMP [--base ADDR] [--descriptor ADDR]`.
pub(crate) struct MemoryArgs {
    pub(crate) path: OsString,
    pub(crate) base: usize,
    pub(crate) descriptor: Option<usize>,
}

/// What the command line asks for.
pub(crate) enum Command {
    Run(Args),
    Help,
}

/// Parses the command line (without the program name). `Err` is a one-line message.
pub(crate) fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut format: Option<(Format, &str)> = None;
    let mut level = None;
    let mut path: Option<OsString> = None;
    let mut dump: Option<OsString> = None;
    let mut base: Option<usize> = None;
    let mut descriptor: Option<usize> = None;
    let mut elf: Option<OsString> = None;
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
            Long("elf") => {
                elf = Some(p.value().map_err(|e| e.to_string())?);
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
        elf,
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
