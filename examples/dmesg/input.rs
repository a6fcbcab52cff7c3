//! Reading a handover image from a file or standard input: as a stream, only as far as the image's
//! core header says it goes, at most [`MAX_IMAGE_BYTES`].

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::process::ExitCode;

use nmilog::handover::{self, HandoverError, CORE_BYTES};

use crate::args::Args;
use crate::defmt::DefmtDecoder;
use crate::{print_image, EXIT_TROUBLE, MAX_IMAGE_BYTES};

/// Reads the image at `path` (standard input if `None`) and prints it.
pub(crate) fn print_image_file(
    path: Option<&OsString>,
    args: &Args,
    defmt: Option<&DefmtDecoder>,
) -> ExitCode {
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
    print_image(&bytes, args, defmt, None)
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
