//! Memory footprint: the exact size of a `Log` and of a record in a ring, checked against `size_of`.
//!
//! # The formula
//!
//! `W = size_of::<usize>()`; `T = 8 / W` words per 64-bit timestamp (1 on 64-bit, 2 on 32-bit);
//! `L` = the alignment of `crossbeam_utils::CachePadded` (128 bytes on x86-64, aarch64 and
//! powerpc64; 64 or 32 elsewhere); `pad(x)` = `x` rounded up to a multiple of `L`. With `C = CPUS`,
//! `R = RING_WORDS`, `M = MAIN_WORDS`, `D = DEPTH` and the platform `P`:
//!
//! ```text
//! ring(N)     = (6 + N)·W           head, next_seq, tail, active, dropped, mask + N data words
//! per_cpu     = (2 + 4·D)·W + D·ring(R)
//!             = (2 + D·(10 + R))·W  depth, overflow, kinds[D], seen[D], arena slots[D] (2 words)
//!                                   + D rings
//! consumer    = (4 + T)·W           pos, seq, overwritten, moved, last_ts
//! heap(K)     = (1 + (K + 1)·(2 + T))·W
//!                                   len + a slot (ts, tie, source) per source and one more
//! main        = 4·W + ring(M) + C·D·consumer + heap(C·D) + B
//!             = (13 + T + M + C·D·(6 + 2·T))·W + B
//!                                   owner, pending, arena slot + main ring + consumers + the flush's
//!                                   heap + the flush's record buffer (B = size_of::<RecordBuf>(),
//!                                   1064 bytes)
//! drain       = 7·W + C·D·12·W + heap(C·D)
//!             = (10 + T + C·D·(14 + T))·W
//!                                   generation, the main window's 6 words, 12 words per source,
//!                                   the drain's heap (a slot in each source's state, one more)
//!
//! FOOTPRINT_BYTES = C·pad(per_cpu) + pad(main) + pad(drain) + pad(size_of::<P>() + 7·W)
//!                                   (the platform and crash_cpu, console_loglevel, settle_ns, bad_cpu,
//!                                   unregistered, flush_policy, console_hook)
//! ```
//!
//! On a 64-bit target with 128-byte padding that is
//! `C·pad128((2 + D·(10 + R))·8) + pad128((14 + M + 8·C·D)·8 + 1064) + pad128((11 + 15·C·D)·8) +
//! pad128(size_of::<P>() + 56)`; e.g. `Log<HostPlatform, 4, 1024, 8192>` (5 depths, the default) is
//! 4·41 472 + 68 096 + 2 560 + 128 = 236 672 bytes.
//!
//! # Per record
//!
//! A record with an `n`-byte payload takes `span_words(n) = 1 + HEADER_BYTES/W + ceil(n/W)` ring
//! words: one sequence word, the 32-byte header ([`nmilog::HEADER_BYTES`]) and the payload rounded up
//! to whole words — 40 bytes of overhead per record on 64-bit targets, 36 on 32-bit ones. A ring of
//! `N` words holds `floor((N - 1) / span)` records of one span before it overwrites the oldest (the
//! word after the newest record is kept as its terminator; a record never straddles the end of the
//! array, so when `span` does not divide `N` the words left at the end of a lap are skipped).

use core::mem::{align_of, size_of};

use crossbeam_utils::CachePadded;
use nmilog::host::HostPlatform;
use nmilog::percpu::PerCpu;
use nmilog::ring::{span_words, Cursor, NoHook, Read, RecordRing};
use nmilog::{Header, Log, Platform, RecordBuf, HEADER_BYTES};

const W: usize = size_of::<usize>();
/// Words per 64-bit timestamp.
const T: usize = 8 / W;
/// `Log`'s own word-sized fields: crash_cpu, console_loglevel, settle_ns, bad_cpu, unregistered,
/// flush_policy, console_hook.
const LOG_WORDS: usize = 7;

fn pad(x: usize) -> usize {
    let l = align_of::<CachePadded<u8>>();
    x.div_ceil(l) * l
}

const fn ring_bytes(words: usize) -> usize {
    (6 + words) * W
}

const fn per_cpu_bytes(r: usize, d: usize) -> usize {
    (2 + 4 * d) * W + d * ring_bytes(r)
}

const fn consumer_bytes() -> usize {
    (4 + T) * W
}

/// A merge heap over `k` sources: its length and `k + 1` slots of (timestamp, tie, source).
const fn heap_bytes(k: usize) -> usize {
    (1 + (k + 1) * (2 + T)) * W
}

const fn main_bytes(c: usize, m: usize, d: usize) -> usize {
    4 * W + ring_bytes(m) + c * d * consumer_bytes() + heap_bytes(c * d) + size_of::<RecordBuf>()
}

/// The crash drain's state: generation, the main window's six words, twelve words per source and
/// its heap.
const fn drain_bytes(c: usize, d: usize) -> usize {
    7 * W + c * d * 12 * W + heap_bytes(c * d)
}

/// The README formula.
fn footprint(platform_bytes: usize, c: usize, r: usize, m: usize, d: usize) -> usize {
    c * pad(per_cpu_bytes(r, d))
        + pad(main_bytes(c, m, d))
        + pad(drain_bytes(c, d))
        + pad(platform_bytes + LOG_WORDS * W)
}

/// Checks `FOOTPRINT_BYTES` and `size_of` against the formula for one parameter set.
macro_rules! check {
    ($p:ty, $c:literal, $r:literal, $m:literal, $d:literal) => {{
        type L = Log<$p, $c, $r, $m, $d>;
        let want = footprint(size_of::<$p>(), $c, $r, $m, $d);
        assert_eq!(L::FOOTPRINT_BYTES, size_of::<L>());
        assert_eq!(
            L::FOOTPRINT_BYTES,
            want,
            "Log<{}, {}, {}, {}, {}>",
            stringify!($p),
            $c,
            $r,
            $m,
            $d
        );
        assert_eq!(align_of::<L>(), align_of::<CachePadded<u8>>());
        want
    }};
}

/// A platform with no state.
struct Zst;
impl Platform for Zst {
    fn cpu_id(&self) -> usize {
        0
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn cpu_count(&self) -> usize {
        1
    }
}

/// A platform with `N` words of state (its `cpu_id` reads the first, so the state is used).
struct Words<const N: usize>([u64; N]);
impl<const N: usize> Platform for Words<N> {
    fn cpu_id(&self) -> usize {
        self.0[0] as usize
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn cpu_count(&self) -> usize {
        1
    }
}

/// 160 bytes of platform state (the platform term of the formula is not just one line).
type Big = Words<20>;
/// 72 and 80 bytes of platform state: with 128-byte padding these catch one word more or less in
/// `Log`'s own fields (72 + 7·8 = 128 fits one line, 80 + 7·8 does not).
type P72 = Words<9>;
type P80 = Words<10>;

#[test]
fn building_blocks() {
    assert_eq!(size_of::<RecordRing<32>>(), ring_bytes(32));
    assert_eq!(size_of::<RecordRing<1024>>(), ring_bytes(1024));
    assert_eq!(size_of::<PerCpu<1024, 4>>(), per_cpu_bytes(1024, 4));
    assert_eq!(size_of::<PerCpu<64, 1>>(), per_cpu_bytes(64, 1));
    assert_eq!(size_of::<PerCpu<256, 15>>(), per_cpu_bytes(256, 15));
    #[cfg(target_pointer_width = "64")]
    {
        assert_eq!(per_cpu_bytes(1024, 4), (2 + 4 * (10 + 1024)) * 8);
        assert_eq!(main_bytes(4, 8192, 4), (14 + 8192 + 8 * 4 * 4) * 8 + 1064);
        assert_eq!(drain_bytes(4, 4), (11 + 15 * 4 * 4) * 8);
    }
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64"
    ))]
    assert_eq!(align_of::<CachePadded<u8>>(), 128);
}

#[test]
fn log_footprint_is_exact() {
    let readme = check!(HostPlatform, 4, 1024, 8192, 5);
    check!(HostPlatform, 4, 1024, 8192, 4);
    check!(HostPlatform, 2, 1024, 4096, 4);
    check!(HostPlatform, 8, 1024, 16384, 4);
    check!(HostPlatform, 1, 32, 32, 1);
    check!(HostPlatform, 3, 64, 1024, 2);
    check!(Zst, 1, 32, 64, 1);
    check!(Zst, 16, 256, 8192, 15);
    check!(Big, 5, 128, 2048, 3);
    check!(Big, 64, 4096, 65536, 4);
    check!(P72, 2, 64, 256, 2);
    check!(P80, 2, 64, 256, 2);
    #[cfg(all(target_pointer_width = "64", target_arch = "x86_64"))]
    assert_eq!(readme, 236_672);
    let _ = readme;
}

#[test]
fn header_and_record_span() {
    assert_eq!(HEADER_BYTES, 32);
    assert_eq!(Header::default().to_bytes().len(), HEADER_BYTES);
    for len in 0..=300usize {
        let words = 1 + HEADER_BYTES / W + len.div_ceil(W);
        assert_eq!(span_words(len), words, "len {len}");
        // Bytes in a ring: the sequence word, the header and the payload rounded up to words.
        assert_eq!(
            span_words(len) * W,
            W + HEADER_BYTES + len.next_multiple_of(W)
        );
    }
    #[cfg(target_pointer_width = "64")]
    {
        assert_eq!(span_words(0), 5);
        assert_eq!(span_words(32), 9); // the benches' 32-byte record: 72 bytes in a ring
        assert_eq!(span_words(33), 10);
    }
}

/// The span is what a ring really consumes: a ring of `N` words holds exactly
/// `floor((N - 1) / span)` records before the next one overwrites the oldest.
#[test]
fn ring_capacity_matches_span() {
    fn fill<const N: usize>(len: usize) {
        let ring: RecordRing<N> = RecordRing::new();
        let payload = vec![0xa5u8; len];
        let fits = (N - 1) / span_words(len);
        let write = |i: usize| {
            ring.write(
                |_| Header {
                    ts_ns: i as u64,
                    ..Header::default()
                },
                &payload,
                &mut NoHook,
            )
            .expect("write")
        };
        for i in 0..fits {
            write(i);
        }
        let (mut cur, mut buf) = (Cursor::START, RecordBuf::new());
        for i in 0..fits {
            assert_eq!(
                ring.read(&mut cur, &mut buf),
                Read::Record,
                "N {N} len {len} #{i}"
            );
            assert_eq!(buf.payload(), &payload[..]);
        }
        assert_eq!(ring.read(&mut cur, &mut buf), Read::Empty);
        // One more overwrites the oldest: exactly one record, unless it had to move to the next lap
        // (then the words left at the end of the array are wasted and it may take a second one).
        write(fits);
        let mut cur = Cursor::START;
        let missed = match ring.read(&mut cur, &mut buf) {
            Read::Overwritten { missed } => missed,
            r => panic!("N {N} len {len}: {r:?}"),
        };
        if (fits + 1) * span_words(len) <= N {
            assert_eq!(missed, 1, "N {N} len {len}");
        } else {
            assert!((1..=2).contains(&missed), "N {N} len {len}: {missed}");
        }
    }
    for len in [0, 1, 8, 20, 32, 100] {
        fill::<1024>(len);
        fill::<256>(len);
    }
    fill::<64>(0);
    fill::<64>(32);
}
