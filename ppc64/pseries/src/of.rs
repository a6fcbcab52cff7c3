//! The Open Firmware client interface (IEEE 1275, 32-bit big-endian cells) as offered by QEMU's VOF
//! (or SLOF), and the few device-tree walks the bring-up needs.
//!
//! The firmware passes its client-interface entry in r5. A call hands it the address of an argument
//! array `{service name, nargs, nret, args..., rets...}` of big-endian 32-bit cells; the firmware runs in
//! 32-bit big-endian mode, so `boot::__enter_prom` switches the CPU to that mode around the call.
//!
//! The interface is usable only on the boot CPU, before `close()`: under VOF the firmware's own code
//! lives at 0x100 (the client entry is 0x10c), and the system-reset vector is patched over it.

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A device-tree node handle.
pub type Phandle = u32;

static ENTRY: AtomicUsize = AtomicUsize::new(0);
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Why a client-interface call did not happen or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiError {
    /// No entry point was passed, or `close()` was called.
    Unavailable,
    /// Too many argument or return cells for the fixed buffer.
    TooManyCells,
    /// The firmware returned non-zero from the call itself (unknown service).
    Failed(i32),
}

#[repr(C, align(8))]
struct CiArgs {
    service: u32,
    nargs: u32,
    nret: u32,
    cells: [u32; 12],
}

extern "C" {
    /// Defined in `boot.rs`: calls the 32-bit big-endian client interface at `entry` with `args`.
    fn __enter_prom(args: *mut CiArgs, entry: usize) -> i32;
}

/// Records the client-interface entry point that the firmware passed in r5.
pub fn init(entry: usize) {
    ENTRY.store(entry, Ordering::Relaxed);
}

/// The client-interface entry point (0 if none).
pub fn entry() -> usize {
    ENTRY.load(Ordering::Relaxed)
}

/// Ends the use of the client interface (before the firmware's memory is overwritten).
pub fn close() {
    CLOSED.store(true, Ordering::Release);
}

fn cell_ptr<T: ?Sized>(p: *const T) -> u32 {
    let a = p as *const u8 as usize;
    debug_assert!(
        a <= u32::MAX as usize,
        "client-interface pointers must be below 4 GiB"
    );
    a as u32
}

/// Calls `service` with `args`; returns its `R` return cells (host-endian).
pub fn call<const R: usize>(service: &CStr, args: &[u32]) -> Result<[u32; R], CiError> {
    let entry = ENTRY.load(Ordering::Relaxed);
    if entry == 0 || CLOSED.load(Ordering::Acquire) {
        return Err(CiError::Unavailable);
    }
    if args.len() + R > 12 {
        return Err(CiError::TooManyCells);
    }
    let mut a = CiArgs {
        service: cell_ptr(service.as_ptr()).to_be(),
        nargs: (args.len() as u32).to_be(),
        nret: (R as u32).to_be(),
        cells: [0; 12],
    };
    for (c, v) in a.cells.iter_mut().zip(args) {
        *c = v.to_be();
    }
    // SAFETY: `entry` is the client interface the firmware handed us, still intact (not closed); `a`
    // lives on this CPU's stack below 4 GiB and holds only cells and pointers to live buffers the
    // caller passed; __enter_prom saves and restores everything the 32-bit firmware may clobber.
    let rc = unsafe { __enter_prom(&mut a, entry) };
    if rc != 0 {
        return Err(CiError::Failed(rc));
    }
    let mut rets = [0u32; R];
    for (i, r) in rets.iter_mut().enumerate() {
        *r = u32::from_be(a.cells[args.len() + i]);
    }
    Ok(rets)
}

/// `finddevice(path)`.
pub fn finddevice(path: &CStr) -> Option<Phandle> {
    let [ph] = call::<1>(c"finddevice", &[cell_ptr(path.as_ptr())]).ok()?;
    (ph != 0 && ph != u32::MAX).then_some(ph)
}

/// `getprop(ph, name, buf)`: the property's full length (may exceed `buf.len()`; only `buf` is filled).
pub fn getprop(ph: Phandle, name: &CStr, buf: &mut [u8]) -> Option<usize> {
    let [len] = call::<1>(
        c"getprop",
        &[
            ph,
            cell_ptr(name.as_ptr()),
            cell_ptr(buf.as_mut_ptr()),
            buf.len() as u32,
        ],
    )
    .ok()?;
    (len as i32 >= 0).then_some(len as usize)
}

/// The first cell of a property, as a big-endian u32.
pub fn getprop_u32(ph: Phandle, name: &CStr) -> Option<u32> {
    let mut b = [0u8; 4];
    let n = getprop(ph, name, &mut b)?;
    (n >= 4).then(|| u32::from_be_bytes(b))
}

/// Property-name buffer size. IEEE 1275 limits names to 31 characters (a 32-byte buffer), but QEMU's
/// /rtas has `ibm,query-interrupt-source-number` (33) and VOF writes the whole name, overrunning a
/// 32-byte buffer: leave room.
pub const PROPNAME_BUF: usize = 64;

/// `nextprop(ph, prev, buf)`: writes the name of the property after `prev` ("" for the first) into
/// `buf`; `None` at the end or on error.
pub fn nextprop<'a>(ph: Phandle, prev: &CStr, buf: &'a mut [u8; PROPNAME_BUF]) -> Option<&'a CStr> {
    let [r] = call::<1>(
        c"nextprop",
        &[ph, cell_ptr(prev.as_ptr()), cell_ptr(buf.as_mut_ptr())],
    )
    .ok()?;
    if r as i32 != 1 {
        return None;
    }
    CStr::from_bytes_until_nul(&buf[..]).ok()
}

/// `child(ph)`.
pub fn child(ph: Phandle) -> Option<Phandle> {
    let [c] = call::<1>(c"child", &[ph]).ok()?;
    (c != 0 && c != u32::MAX).then_some(c)
}

/// `peer(ph)`.
pub fn peer(ph: Phandle) -> Option<Phandle> {
    let [c] = call::<1>(c"peer", &[ph]).ok()?;
    (c != 0 && c != u32::MAX).then_some(c)
}

/// Iterates over the children of a node.
pub fn children(ph: Phandle) -> impl Iterator<Item = Phandle> {
    let mut next = child(ph);
    core::iter::from_fn(move || {
        let cur = next?;
        next = peer(cur);
        Some(cur)
    })
}

/// A short string property (NUL-terminated in the tree) copied into `buf`.
pub fn getprop_str<'a>(ph: Phandle, name: &CStr, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    let n = getprop(ph, name, buf)?.min(buf.len());
    let s = &buf[..n];
    Some(match s.iter().position(|&b| b == 0) {
        Some(z) => &s[..z],
        None => s,
    })
}

/// Calls `f(name, value)` for every property of `ph` that is exactly one cell long, as far as `nextprop`
/// can walk. Returns the number of properties visited and whether the walk reached the end (false: it
/// stopped at a name longer than `PROPNAME_BUF - 1`).
pub fn for_each_u32_prop(ph: Phandle, mut f: impl FnMut(&[u8], u32)) -> (usize, bool) {
    let mut prev = [0u8; PROPNAME_BUF];
    let mut name = [0u8; PROPNAME_BUF];
    let mut visited = 0;
    loop {
        let Some(cur) = nextprop(
            ph,
            CStr::from_bytes_until_nul(&prev).unwrap_or(c""),
            &mut name,
        ) else {
            return (visited, name[PROPNAME_BUF - 1] == 0);
        };
        visited += 1;
        let cur_len = cur.to_bytes().len();
        let mut v = [0u8; 8];
        if getprop(ph, cur, &mut v) == Some(4) {
            f(cur.to_bytes(), u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        }
        prev = [0; PROPNAME_BUF];
        prev[..cur_len].copy_from_slice(&name[..cur_len]);
    }
}

/// `open(path)`: an instance handle (ihandle) of the node at `path`.
pub fn open(path: &CStr) -> Option<u32> {
    let [ih] = call::<1>(c"open", &[cell_ptr(path.as_ptr())]).ok()?;
    (ih != 0).then_some(ih)
}

/// `call-method("ibm,client-architecture-support", ihandle of "/", vector)` (CAS, PAPR B.6.2.3):
/// tells the platform what this client supports — `vector` is the PVR list and the option vectors
/// — and lets it reconfigure itself (under QEMU the device tree is rebuilt: look nodes up again).
/// Returns the method's result (0: accepted).
pub fn client_architecture_support(vector: &[u8]) -> Result<u32, CiError> {
    let root = open(c"/").ok_or(CiError::Failed(-1))?;
    // VOF returns the platform's result first (0 = H_SUCCESS, else a negative H_* code).
    let [result, _] = call::<2>(
        c"call-method",
        &[
            cell_ptr(c"ibm,client-architecture-support".as_ptr()),
            root,
            cell_ptr(vector.as_ptr()),
        ],
    )?;
    Ok(result)
}
