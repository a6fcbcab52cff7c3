//! The memory reader ([`nmilog::recover`]) on dumps of every shape: it must never panic, stay
//! within its step bound, and every image it writes must parse. The first input byte picks a mode:
//!
//! * `0`: the rest is a raw dump: 8 bytes of base address (little-endian, word-aligned down), then
//!   the dump's words (native endian);
//! * anything else: **a real kernel's memory, then damage**. A `Log` (three CPUs, 64-word rings, a
//!   512-word main log, so that both wrap), its descriptor and the crash sequence's check-in flags
//!   live in zero-filled memory, as a kernel's `.bss`. A schedule taken from the input runs on it:
//!   writes on every CPU and a bad CPU number, flushes into the main log, NMI nesting (past the
//!   depth: overflow), writers frozen at any step of their write, check-ins, crash entry. The
//!   memory is then read as words (with input-chosen junk words before and after it, so the dump's
//!   base is not the log's address) and, undamaged, the image rebuilt from it must be **byte for
//!   byte** the image the live crash drain writes from the same memory. Then the rest of the input
//!   damages the dump: flipped bits, small numbers, addresses inside the dump, words copied from
//!   elsewhere, descriptor header fields set to such values and the descriptor re-sealed (its
//!   checksums recomputed, so lies get past them), truncation at either end, every word byte-swapped.
//!
//! In every mode: [`recover::scan`], [`recover::find`], [`Descriptor::for_each_region`],
//! [`RecoveredLog::open`], then [`RecoveredLog::drain`] and [`RecoveredLog::write_image`] into a
//! region of input-chosen size: `steps <= bound`, the image parses whole (no corruption), with the
//! records and the count left out the writer reported, and the drain and the image agree.
#![no_main]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU64, AtomicUsize as StdAtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use nmilog::recover::{
    self, AtomicUsize, Descriptor, DrainSource, LogDescriptor, RawDump, RecoveredLog, StopFlags,
};
use nmilog::ring::WriteStep;
use nmilog::{handover, Level, Log, Platform, RecordBuf};

const CPUS: usize = 3;
type L = Log<Plat, CPUS, 64, 512>;
const W: usize = size_of::<usize>();
const MAGIC_WORDS: usize = 8 / W;
/// Descriptor header words after the magic (the README's "Memory descriptor" table).
const HEAD: usize = nmilog::recover::HEADER_WORDS;

/// The platform: the schedule sets the CPU; the clock ticks 1000 ns per read. All-zero is valid.
struct Plat {
    cpu: StdAtomicUsize,
    count: StdAtomicUsize,
    clock: AtomicU64,
}

impl Platform for Plat {
    fn cpu_id(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }
    fn now_ns(&self) -> u64 {
        self.clock.fetch_add(1000, Ordering::Relaxed)
    }
    fn cpu_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// The kernel's memory.
#[repr(C)]
struct Kernel {
    log: L,
    desc: LogDescriptor<{ L::DESCRIPTOR_WORDS }>,
    checked_in: [AtomicUsize; CPUS],
}

/// A zero-filled `Kernel`, freed on drop.
struct Boot(*mut u8);

impl Boot {
    fn new() -> Boot {
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { alloc_zeroed(Layout::new::<Kernel>()) };
        assert!(!p.is_null());
        Boot(p)
    }
    fn kernel(&self) -> &Kernel {
        // SAFETY: aligned and sized for `Kernel`, zero-filled; all-zero bytes are a valid `Kernel`
        // (atomics: the log and its all-zero platform, `LogDescriptor::new()`, flags 0; the
        // flush's record buffer is plain integers and bytes, valid all-zero too).
        unsafe { &*(self.0 as *const Kernel) }
    }
    /// The kernel's memory, read as words.
    fn words(&self) -> Vec<usize> {
        let n = size_of::<Kernel>() / W;
        let p = self.0 as *const AtomicUsize;
        (0..n)
            // SAFETY: word `i < n` of the zero-initialised allocation (padding included: it was
            // zeroed), read atomically.
            .map(|i| unsafe { &*p.add(i) }.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; nothing borrows it any more (`kernel()`'s
        // borrows end with `self`'s).
        unsafe { dealloc(self.0, Layout::new::<Kernel>()) }
    }
}

/// The input, a byte at a time (zeros when it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> usize {
        usize::from(self.byte()) | usize::from(self.byte()) << 8
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Recomputes the checksums of the descriptor at word `d` of `words`, as far as its length word
/// allows.
fn reseal(words: &mut [usize], d: usize) {
    if let Some(desc) = words.get_mut(d..) {
        nmilog::recover::seal(desc);
    }
}

/// Runs the reader over `words` taken at `base`; `region` bytes for the image. Returns the image
/// if one was written.
fn read_dump(base: usize, words: &[usize], region: usize) -> Option<Vec<u8>> {
    let words: Vec<AtomicUsize> = words.iter().map(|&w| AtomicUsize::new(w)).collect();
    let mem = RawDump::new(base, &words);
    let scan = recover::scan(&mem);
    assert!(scan.valid == 0 || scan.descriptor.is_some());
    assert_eq!(scan.rejected == 0, scan.first_rejection.is_none());
    let desc = match recover::find(&mem) {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    assert_eq!(Some(desc), scan.descriptor);
    assert_eq!(Descriptor::read(&mem, desc.address()), Ok(desc));
    // Every region the descriptor names: a bounded number. If its tables are not in the dump (the
    // scan checks only the header), the log does not open either.
    let mut regions = 0usize;
    if let Err(e) = desc.for_each_region(&mem, &mut |_, _| regions += 1) {
        assert!(
            matches!(e, recover::RecoverError::OutsideDump { .. }),
            "{e:?}"
        );
        assert!(RecoveredLog::open(&mem, desc).is_err());
        return None;
    }
    // Per source: its ring (two entry words) and the five words the rest of its entry names.
    assert!(regions <= 4 + desc.cpus() * (1 + desc.depth() * (recover::ENTRY_WORDS - 1)));
    let log = match RecoveredLog::open(&mem, desc) {
        Ok(log) => log,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    let _ = (log.crashing_cpu(), format!("{log:?}"));
    for c in 0..desc.cpus().min(64) + 1 {
        let _ = log.stopped(c);
    }
    let scratch: Vec<DrainSource> = (0..log.sources()).map(|_| DrainSource::new()).collect();
    assert!(log
        .write_image(&scratch[..log.sources() - 1], &mut [0u8; 64])
        .is_err());
    let mut drained = 0u64;
    let drain = match log.drain(&scratch, &mut |_, _: &RecordBuf| {
        drained += 1;
        true
    }) {
        Ok(rep) => rep,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    assert!(drain.steps <= drain.bound, "{drain:?}");
    assert_eq!(drain.records, drained);
    let mut out = vec![0u8; region];
    let rep = match log.write_image(&scratch, &mut out) {
        Ok(rep) => rep,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    assert!(rep.drain.steps <= rep.drain.bound, "{rep:?}");
    assert_eq!(
        rep.drain.records, drain.records,
        "the same snapshot, the same drain"
    );
    assert_eq!(rep.records + rep.left_out, drain.records, "{rep:?}");
    let image = handover::parse(&out[..rep.len]).expect("an image the reader writes parses");
    assert_eq!(image.corruption(), None);
    assert_eq!(image.record_count() as u64, rep.records);
    assert_eq!(image.left_out(), rep.left_out);
    assert_eq!(image.records().count() as u64, rep.records);
    assert_eq!(image.cpu_count(), desc.cpus());
    out.truncate(rep.len);
    Some(out)
}

/// Runs the schedule on a fresh kernel; returns the kernel, whether it described its check-in
/// flags, and the crashing CPU.
fn run_schedule(input: &mut Input<'_>) -> (Boot, bool, Option<usize>) {
    let boot = Boot::new();
    let k = boot.kernel();
    let p = k.log.platform();
    let config = input.byte();
    p.count
        .store(1 + usize::from(config) % CPUS, Ordering::Relaxed);
    let with_flags = config & 0x10 != 0;
    let stop = StopFlags::new(k.checked_in.as_ptr() as usize, W);
    k.desc
        .describe(&k.log, with_flags.then_some(stop))
        .expect("room for the descriptor");
    let mut crashed = None;
    for _ in 0..input.byte() % 64 {
        let op = input.byte();
        let cpu = usize::from(op) % (CPUS + 1); // CPU 3: a bad CPU number
        p.cpu.store(cpu, Ordering::Relaxed);
        let len = usize::from(op >> 5) * 9;
        let text = vec![b'a' + op % 26; len];
        match (op >> 2) % 8 {
            0 => {
                let _ = k.log.append(Level::Info, 0, 0, &text);
            }
            1 => {
                let _ = k.log.append_raw(Level::Warning, 0, 0, &text);
            }
            2 => {
                let _ = k.log.flush();
            }
            3 => k.log.nmi_enter(),
            4 => k.log.nmi_exit(),
            5 => {
                let at = WriteStep::ALL[usize::from(input.byte()) % WriteStep::ALL.len()];
                let mut freeze = |s: WriteStep| s != at;
                let _ = k
                    .log
                    .append_raw_with_hook(Level::Err, 0, 0, &text, &mut freeze);
            }
            6 => {
                if let Some(f) = k.checked_in.get(cpu) {
                    f.store(1, Ordering::Release);
                }
            }
            _ => {
                if crashed.is_none() {
                    if let Ok(c) = k.log.crash_enter() {
                        crashed = Some(c);
                    }
                }
            }
        }
    }
    if let Some(c) = crashed {
        p.cpu.store(c, Ordering::Relaxed);
    }
    (boot, with_flags, crashed)
}

fn kernel_then_damage(mut input: Input<'_>) {
    let (boot, with_flags, crashed) = run_schedule(&mut input);
    let k = boot.kernel();
    let kernel = boot.words();
    let before = usize::from(input.byte() % 32);
    let after = usize::from(input.byte() % 32);
    let junk = input.byte();
    let junk = |i: usize| match junk % 4 {
        0 => 0,
        1 => i.wrapping_mul(0x9e37_79b9) ^ usize::from(junk),
        2 => usize::MAX,
        _ => boot.0 as usize + i * W, // addresses
    };
    let mut words: Vec<usize> = (0..before).map(junk).collect();
    words.extend_from_slice(&kernel);
    words.extend((0..after).map(|i| junk(i + before + kernel.len())));
    let Some(mut base) = (boot.0 as usize).checked_sub(before * W) else {
        return;
    };
    let region = 64 + usize::from(input.byte()) * 64 + usize::from(input.byte() & 0x80) * 1024;
    let region = region.min(L::MAX_IMAGE_BYTES);

    // Undamaged: the image rebuilt from the dump is the live crash drain's, byte for byte.
    let rebuilt = read_dump(base, &words, L::MAX_IMAGE_BYTES);
    if let Some(c) = crashed {
        let rebuilt = rebuilt.expect("an undamaged dump rebuilds");
        let mut live = vec![0u8; L::MAX_IMAGE_BYTES];
        let stopped =
            |cpu: usize| !with_flags || cpu == c || k.checked_in[cpu].load(Ordering::Relaxed) != 0;
        let n = handover::write_image(&k.log, &mut live, &stopped).expect("the live image");
        assert!(live[..n] == rebuilt[..], "rebuilt from memory != live");
    }

    // Damage. `d`: the descriptor's word index, while the dump still has it where it was.
    let mut d = Some(before + (k.desc.address() - boot.0 as usize) / W);
    while !input.is_empty() && !words.is_empty() {
        let op = input.byte();
        let n = words.len();
        let r = input.u16();
        // Half the damage lands in the descriptor.
        let at = match d {
            Some(d) if op & 0x80 != 0 => (d + r % L::DESCRIPTOR_WORDS) % n,
            _ => r % n,
        };
        let v = input.byte();
        let value = match v % 4 {
            0 => usize::from(v >> 2),
            1 => base.wrapping_add(input.u16() % (n * W + 64)), // inside the dump, or just past
            2 => words[input.u16() % n],
            _ => usize::MAX >> (v >> 2),
        };
        match (op >> 4) % 8 {
            0 => words[at] ^= 1 << (usize::from(v) % (W * 8)),
            1 | 2 => words[at] = value,
            3 | 4 => {
                // A lying descriptor: a header field (3) or any word (4), re-sealed.
                if let Some(d) = d.filter(|d| d + MAGIC_WORDS + HEAD <= n) {
                    let at = if op & 0x10 == 0 {
                        d + MAGIC_WORDS + usize::from(v >> 2) % HEAD
                    } else {
                        at
                    };
                    words[at] = value;
                    reseal(&mut words, d);
                }
            }
            5 => {
                let cut = usize::from(v) * 8 % n;
                words.truncate(n - cut);
            }
            6 => {
                let cut = (usize::from(v) % 16).min(n);
                words.drain(..cut);
                base = base.wrapping_add(cut * W);
                d = d.and_then(|d| d.checked_sub(cut));
            }
            _ => words.iter_mut().for_each(|w| *w = w.swap_bytes()),
        }
    }
    let _ = read_dump(base, &words, region);
}

fn raw(mut input: Input<'_>) {
    let mut b = [0u8; 8];
    for x in &mut b {
        *x = input.byte();
    }
    let base = (u64::from_le_bytes(b) as usize) & !(W - 1);
    let words: Vec<usize> = input
        .0
        .chunks_exact(W)
        .map(|c| usize::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    let region = 4096.min(L::MAX_IMAGE_BYTES);
    let _ = read_dump(base, &words, region);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    match input.byte() {
        0 => raw(input),
        _ => kernel_then_damage(input),
    }
});
