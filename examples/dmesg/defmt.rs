//! `--elf FIRMWARE`: decodes the defmt frames in an image (records of facility
//! [`DEFMT`](nmilog::record::facility::DEFMT)) with the `.defmt` table of the firmware's ELF, using
//! `defmt-decoder` (defmt 1, wire format version 4, rzCOBS framing as nmilog's defmt logger writes
//! it: each record holds one whole frame between `0x00` separators). Each record is decoded on its
//! own, so a damaged record never desynchronises the next one. A frame the table cannot decode
//! (another firmware, a damaged record) prints as hex, as without `--elf`, and is counted: the
//! count goes to stderr after the output. Nothing here panics on bad input: an unreadable ELF is
//! one error line, and a decoder panic on a hostile frame is caught and counted as undecodable.

use std::cell::Cell;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};

use defmt_decoder::{DecodeError, Table};
use nmilog::handover::ImageRecord;
use nmilog::record::facility;

/// The firmware's defmt table, and how many frames it could not decode.
pub(crate) struct DefmtDecoder {
    table: Table,
    undecodable: Cell<usize>,
}

impl DefmtDecoder {
    /// Reads the table from the ELF at `path`; `Err` is the one line for stderr.
    pub(crate) fn load(path: &OsString) -> Result<Self, String> {
        let name = path.to_string_lossy();
        let elf = std::fs::read(path).map_err(|e| format!("--elf {name}: cannot read: {e}"))?;
        match Table::parse(&elf) {
            Ok(Some(table)) => Ok(DefmtDecoder {
                table,
                undecodable: Cell::new(0),
            }),
            Ok(None) => Err(format!("--elf {name}: no defmt data (no .defmt section)")),
            Err(e) => Err(format!("--elf {name}: not a defmt firmware ELF: {e:#}")),
        }
    }

    /// The decoded text of `r` if it is a defmt record the table decodes: each frame's level in
    /// capitals (none for `println!`) and its message; frames in one record are joined by `"; "`.
    /// `None` for other records; `None` and counted for a defmt record it cannot decode.
    pub(crate) fn text(&self, r: &ImageRecord<'_>) -> Option<String> {
        if r.header.facility != facility::DEFMT {
            return None;
        }
        // defmt-decoder is not written for hostile input: a panic is an undecodable frame. The
        // default hook would print it, so it is silenced for the call.
        let hook = panic::take_hook();
        panic::set_hook(Box::new(|_| {}));
        let decoded = panic::catch_unwind(AssertUnwindSafe(|| self.decode(r.payload)));
        panic::set_hook(hook);
        match decoded {
            Ok(Some(text)) => Some(text),
            _ => {
                self.undecodable.set(self.undecodable.get() + 1);
                None
            }
        }
    }

    fn decode(&self, payload: &[u8]) -> Option<String> {
        let mut stream = self.table.new_stream_decoder();
        stream.received(payload);
        let mut text = String::new();
        let mut frames = 0;
        loop {
            match stream.decode() {
                Ok(frame) => {
                    if frames > 0 {
                        text.push_str("; ");
                    }
                    if let Some(level) = frame.level() {
                        let _ = write!(text, "{} ", level.as_str().to_uppercase());
                    }
                    let _ = write!(text, "{}", frame.display_message());
                    frames += 1;
                }
                Err(DecodeError::UnexpectedEof) => break,
                Err(DecodeError::Malformed) => return None,
            }
        }
        (frames > 0).then_some(text)
    }

    /// defmt records the table could not decode (printed as hex).
    pub(crate) fn undecodable(&self) -> usize {
        self.undecodable.get()
    }
}
