//! `--from-memory`: the log rebuilt from a raw memory dump, as a handover image — find the
//! descriptor (scan or `--descriptor`), load only the regions it names, run the crash drain over
//! them — and the lines saying where it came from.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use nmilog::handover;
use nmilog::recover::{
    self, AtomicUsize, Descriptor, DrainSource, PiecewiseDump, RawDump, RecoverError, RecoveredLog,
};

use crate::args::MemoryArgs;
use crate::{
    EXIT_DAMAGED, EXIT_INCOMPATIBLE, EXIT_NO_DESCRIPTOR, EXIT_TOO_LARGE, EXIT_TROUBLE,
    MAX_IMAGE_BYTES,
};

/// Bytes of a dump scanned per read (a multiple of the word size).
pub(crate) const SCAN_CHUNK: usize = 1 << 20;
/// Words read past each scanned chunk, so that the header of a descriptor whose magic is near the
/// chunk's end is whole in the buffer (the magic and the header: the README's "Memory descriptor"
/// table), and the most words of a candidate's header checked.
pub(crate) const HEADER_WINDOW_WORDS: usize = 64;
const _: () = assert!(HEADER_WINDOW_WORDS >= 8 / size_of::<usize>() + recover::HEADER_WORDS);
/// Regions of a dump less than this many bytes apart are loaded as one piece.
pub(crate) const MERGE_GAP: usize = 4 << 10;
/// The most bytes of a dump loaded for the log (1 GiB: the host simulation's largest log — 64 CPUs,
/// four 64 KiB rings each, an 8 MiB main log — takes 24 MiB).
pub(crate) const MAX_LOAD_BYTES: usize = 1 << 30;
/// The word size of the dumps this reader reads (its own).
pub(crate) const W: usize = size_of::<usize>();

/// Where a log rebuilt from memory came from (what the first line on stderr, and with `--json` the
/// first object on stdout, say).
pub(crate) struct MemoryOrigin {
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

/// The lines on stderr saying where a log rebuilt from memory came from.
pub(crate) fn origin_lines(o: &MemoryOrigin, not_stopped: &[usize]) -> Vec<String> {
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
pub(crate) fn origin_json(o: &MemoryOrigin, not_stopped: &[usize]) -> String {
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

/// Why the log could not be rebuilt: the one line for stderr (without `dmesg: `), the exit code.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

/// A rebuilt log.
pub(crate) struct Rebuilt {
    pub(crate) image: Vec<u8>,
    pub(crate) origin: MemoryOrigin,
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
pub(crate) fn rebuild(m: &MemoryArgs) -> Result<Rebuilt, Failure> {
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
