//! The C memory primitives that `core` and LLVM-generated code call (`memcpy`, `memmove`, `memset`,
//! `memcmp`, `bcmp`), plus the `rust_eh_personality` symbol the prebuilt `core` (built with unwinding)
//! references.
//!
//! The target `powerpc64le-unknown-linux-gnu` expects these from libc, and there is no libc here. Every
//! access goes through `read_volatile`/`write_volatile`: LLVM's loop-idiom pass cannot recognise a loop
//! of volatile accesses as a `memcpy`/`memset`, so these bodies never compile back into a call to
//! themselves. Aligned buffers are moved a doubleword at a time.

use core::ptr::{read_volatile, write_volatile};

const W: usize = core::mem::size_of::<u64>();

/// # Safety
/// C `memcpy` contract: `dst` and `src` valid for `n` bytes and not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the C memcpy contract, which is what copy_forward needs.
    unsafe { copy_forward(dst, src, n) };
    dst
}

/// # Safety
/// C `memmove` contract: `dst` and `src` valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: forward copy is correct when dst is below src or the ranges are disjoint.
        unsafe { copy_forward(dst, src, n) };
    } else {
        // SAFETY: dst overlaps the tail of src: copying backwards reads each byte before it is overwritten.
        unsafe { copy_backward(dst, src, n) };
    }
    dst
}

/// # Safety
/// Both ranges valid for `n` bytes; forward copy must be overlap-safe (dst <= src or disjoint).
unsafe fn copy_forward(dst: *mut u8, src: *const u8, n: usize) {
    let mut i = 0;
    if (dst as usize | src as usize) & (W - 1) == 0 {
        while i + W <= n {
            // SAFETY: i + W <= n and both pointers are doubleword aligned.
            unsafe {
                write_volatile(
                    dst.add(i) as *mut u64,
                    read_volatile(src.add(i) as *const u64),
                )
            };
            i += W;
        }
    }
    while i < n {
        // SAFETY: i < n.
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
        i += 1;
    }
}

/// # Safety
/// Both ranges valid for `n` bytes.
unsafe fn copy_backward(dst: *mut u8, src: *const u8, n: usize) {
    let mut i = n;
    while i > 0 {
        i -= 1;
        // SAFETY: i < n.
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
    }
}

/// # Safety
/// C `memset` contract: `dst` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    let b = c as u8;
    let mut i = 0;
    if dst as usize & (W - 1) == 0 {
        let word = u64::from_ne_bytes([b; W]);
        while i + W <= n {
            // SAFETY: i + W <= n and dst is doubleword aligned.
            unsafe { write_volatile(dst.add(i) as *mut u64, word) };
            i += W;
        }
    }
    while i < n {
        // SAFETY: i < n.
        unsafe { write_volatile(dst.add(i), b) };
        i += 1;
    }
    dst
}

/// # Safety
/// C `memcmp` contract: both valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (read_volatile(a.add(i)), read_volatile(b.add(i))) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// C `bcmp` contract: both valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// The prebuilt `core` was compiled with `panic=unwind` and references this symbol from its unwind
/// tables; this image aborts on panic, so it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
