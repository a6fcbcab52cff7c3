//! RTAS (Run-Time Abstraction Services) through QEMU's `KVMPPC_H_RTAS` hypercall.
//!
//! A call fills a big-endian buffer `{token, nargs, nret, args..., rets...}` of 32-bit cells and passes
//! its real address in r4. Tokens are read from the device tree's `/rtas` node (never hard-coded).
//! PAPR requires RTAS calls to be serialised: one static buffer under one lock, `RTAS_LOCK`
//! (`nmilog_ppc64::RtasLock`: it records the owner and whether the owner is inside the firmware call
//! proper, which the crash sequence needs to decide between taking it over and masking at the
//! presenter). The crash path uses its own buffer (`CRASH_BUF`), never the shared one.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

use nmilog_ppc64::RtasLock;

use crate::{hcall, percpu};

/// RTAS functions the bring-up knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Func {
    /// `power-off(power_on_mask_hi, power_on_mask_lo)`.
    PowerOff,
    /// `system-reboot()`.
    SystemReboot,
    /// `start-cpu(cpu_id, start_address, r3)`.
    StartCpu,
    /// `stop-self()`.
    StopSelf,
    /// `query-cpu-stopped-state(cpu_id)`.
    QueryCpuStoppedState,
    /// `ibm,set-xive(irq, server, priority)`.
    SetXive,
    /// `ibm,get-xive(irq)` -> (server, priority).
    GetXive,
    /// `ibm,int-off(irq)`.
    IntOff,
    /// `ibm,int-on(irq)`.
    IntOn,
    /// `ibm,nmi-register(sreset_addr, mce_addr)`.
    NmiRegister,
    /// `ibm,nmi-interlock()`.
    NmiInterlock,
}

impl Func {
    /// All known functions.
    pub const ALL: [Func; 11] = [
        Func::PowerOff,
        Func::SystemReboot,
        Func::StartCpu,
        Func::StopSelf,
        Func::QueryCpuStoppedState,
        Func::SetXive,
        Func::GetXive,
        Func::IntOff,
        Func::IntOn,
        Func::NmiRegister,
        Func::NmiInterlock,
    ];

    /// The property name in `/rtas`.
    pub fn name(self) -> &'static str {
        match self {
            Func::PowerOff => "power-off",
            Func::SystemReboot => "system-reboot",
            Func::StartCpu => "start-cpu",
            Func::StopSelf => "stop-self",
            Func::QueryCpuStoppedState => "query-cpu-stopped-state",
            Func::SetXive => "ibm,set-xive",
            Func::GetXive => "ibm,get-xive",
            Func::IntOff => "ibm,int-off",
            Func::IntOn => "ibm,int-on",
            Func::NmiRegister => "ibm,nmi-register",
            Func::NmiInterlock => "ibm,nmi-interlock",
        }
    }
}

/// 0 = unknown.
static TOKENS: [AtomicU32; Func::ALL.len()] = [const { AtomicU32::new(0) }; Func::ALL.len()];

/// Records a `/rtas` property if it names a known function; returns whether it did.
pub fn register_token(name: &[u8], token: u32) -> bool {
    for f in Func::ALL {
        if f.name().as_bytes() == name {
            TOKENS[f as usize].store(token, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// A function's token, if the device tree listed it.
pub fn token(f: Func) -> Option<u32> {
    match TOKENS[f as usize].load(Ordering::Relaxed) {
        0 => None,
        t => Some(t),
    }
}

/// RTAS status: success.
pub const SUCCESS: i32 = 0;
/// RTAS status: hardware error.
pub const HW_ERROR: i32 = -1;
/// RTAS status: parameter error.
pub const PARAM_ERROR: i32 = -3;
/// Our own status: the function has no token in the device tree.
pub const NO_TOKEN: i32 = -100;

const MAX_CELLS: usize = 16;

#[repr(C, align(16))]
struct Args {
    token: u32,
    nargs: u32,
    nret: u32,
    cells: [u32; MAX_CELLS],
}

/// An RTAS argument buffer (`{token, nargs, nret, cells}`, big-endian cells).
#[derive(Debug)]
pub struct Buffer(UnsafeCell<Args>);
// SAFETY: a buffer is only touched by the holder of RTAS_LOCK (BUF) or by the one crashing CPU after every
// other CPU is known stopped (CRASH_BUF); see `call_with`.
unsafe impl Sync for Buffer {}

impl Buffer {
    const fn new() -> Self {
        Buffer(UnsafeCell::new(Args {
            token: 0,
            nargs: 0,
            nret: 0,
            cells: [0; MAX_CELLS],
        }))
    }
}

/// The shared buffer, used under RTAS_LOCK.
static BUF: Buffer = Buffer::new();
/// The crashing CPU's own buffer: after a takeover the frozen holder may have left BUF half-filled.
pub static CRASH_BUF: Buffer = Buffer::new();

/// The RTAS lock: `nmilog_ppc64::RtasLock`, which records its owner and whether the owner is inside
/// the firmware call proper in one word (see that crate's `rtas` module for the crash-time policy).
/// Every RTAS call in this image goes through it (`call`), and the crash sequence reads it.
pub static RTAS_LOCK: RtasLock = RtasLock::new();

fn me() -> usize {
    percpu::this_cpu_index()
}

/// The CPU index holding the RTAS lock, if any.
pub fn lock_owner() -> Option<usize> {
    RTAS_LOCK.holder().map(|(cpu, _)| cpu)
}

/// Takes the lock, spinning, calling `on_spin(holder)` on every failed attempt (the baseline's
/// watchdog: the 2020 design waits for the RTAS lock like for any spinlock).
pub fn lock_watched(on_spin: &mut dyn FnMut(Option<usize>)) {
    let me = me();
    while !RTAS_LOCK.try_lock(me) {
        on_spin(lock_owner());
        core::hint::spin_loop();
    }
}

/// Releases the lock (holder only).
pub fn unlock() {
    RTAS_LOCK.unlock(me());
}

/// The shared argument buffer (use it only while holding the lock).
pub fn shared_buffer() -> &'static Buffer {
    &BUF
}

/// Test scenario: takes the lock, half-fills the shared buffer for `f` (as a caller preparing a call
/// does) and returns with the lock held and, if `in_call`, marked as inside the firmware call proper
/// (under QEMU the KVMPPC_H_RTAS hypercall is atomic, so a CPU can only be stopped inside RTAS on real
/// firmware, where RTAS runs on the calling CPU; the mark stands for that). The caller then freezes
/// without releasing.
pub fn scenario_hold(f: Func, in_call: bool) {
    let me = me();
    RTAS_LOCK.lock(me);
    if let Some(tok) = token(f) {
        // SAFETY: we hold the RTAS lock, so nobody else uses BUF.
        let a = unsafe { &mut *BUF.0.get() };
        a.token = tok.to_be();
        a.nargs = 3u32.to_be();
    }
    if in_call {
        RTAS_LOCK.enter_call(me);
    }
}

/// Calls RTAS function `f` under the RTAS lock. `rets[0]` receives the status, which is also returned
/// (`NO_TOKEN` if the device tree has no such function).
pub fn call(f: Func, args: &[u32], rets: &mut [u32]) -> i32 {
    let me = me();
    RTAS_LOCK.lock(me);
    RTAS_LOCK.enter_call(me);
    // SAFETY: we hold the RTAS lock, so nobody else uses BUF or calls RTAS.
    let st = unsafe { call_with(&BUF, f, args, rets) };
    RTAS_LOCK.leave_call(me);
    RTAS_LOCK.unlock(me);
    st
}

/// Calls RTAS without taking the lock, through the shared buffer.
///
/// # Safety
/// The caller holds the RTAS lock or knows that no other CPU can be using RTAS (for example, every
/// other CPU is parked in its NMI handler).
pub unsafe fn call_unlocked(f: Func, args: &[u32], rets: &mut [u32]) -> i32 {
    // SAFETY: forwarded to the caller.
    unsafe { call_with(&BUF, f, args, rets) }
}

/// Calls RTAS through `buf` without touching the lock (callers that hold it mark the call proper with
/// `RTAS_LOCK.enter_call`/`leave_call` around this).
///
/// # Safety
/// The caller has exclusive use of `buf` and may call RTAS: it holds the RTAS lock (possibly through
/// a crash-time takeover), or no other CPU can be using RTAS.
pub unsafe fn call_with(buf: &Buffer, f: Func, args: &[u32], rets: &mut [u32]) -> i32 {
    let Some(tok) = token(f) else { return NO_TOKEN };
    assert!(args.len() + rets.len() <= MAX_CELLS && !rets.is_empty());
    let p = buf.0.get();
    // SAFETY: the caller guarantees exclusive use of the buffer; p points at a live static.
    let a = unsafe { &mut *p };
    a.token = tok.to_be();
    a.nargs = (args.len() as u32).to_be();
    a.nret = (rets.len() as u32).to_be();
    for (c, v) in a.cells.iter_mut().zip(args) {
        *c = v.to_be();
    }
    for c in a.cells[args.len()..args.len() + rets.len()].iter_mut() {
        *c = u32::MAX.to_be();
    }
    // SAFETY: the buffer is a static at a real address the hypervisor may read and write (we run with
    // translation off, so the virtual address is the real address); the asm is a compiler memory
    // barrier, so the stores above are visible to it and its stores to the loads below.
    unsafe { hcall::hcall(hcall::KVMPPC_H_RTAS, [p as u64, 0, 0, 0, 0, 0]) };
    // SAFETY: as above.
    let a = unsafe { &*p };
    for (i, r) in rets.iter_mut().enumerate() {
        *r = u32::from_be(a.cells[args.len() + i]);
    }
    rets[0] as i32
}

/// `start-cpu(hw_id, entry, r3)`: the CPU starts at real address `entry`, big-endian, r3 = `r3`.
pub fn start_cpu(hw_id: u32, entry: usize, r3: usize) -> i32 {
    let mut r = [0u32; 1];
    call(Func::StartCpu, &[hw_id, entry as u32, r3 as u32], &mut r)
}

/// `query-cpu-stopped-state(hw_id)` -> (status, state: 0 stopped, 1 stopping, 2 running).
pub fn query_cpu_stopped_state(hw_id: u32) -> (i32, u32) {
    let mut r = [0u32; 2];
    let st = call(Func::QueryCpuStoppedState, &[hw_id], &mut r);
    (st, r[1])
}

/// `ibm,get-xive(irq)` -> (status, server, priority).
pub fn get_xive(irq: u32) -> (i32, u32, u32) {
    let mut r = [0u32; 3];
    let st = call(Func::GetXive, &[irq], &mut r);
    (st, r[1], r[2])
}

/// `ibm,set-xive(irq, server, priority)` (priority 0xff masks).
pub fn set_xive(irq: u32, server: u32, prio: u32) -> i32 {
    let mut r = [0u32; 1];
    call(Func::SetXive, &[irq, server, prio], &mut r)
}

/// `ibm,int-off(irq)`.
pub fn int_off(irq: u32) -> i32 {
    let mut r = [0u32; 1];
    call(Func::IntOff, &[irq], &mut r)
}

/// `ibm,int-on(irq)`.
pub fn int_on(irq: u32) -> i32 {
    let mut r = [0u32; 1];
    call(Func::IntOn, &[irq], &mut r)
}

/// `power-off(-1, -1)`: QEMU exits with status 0. Returns only if RTAS refused.
pub fn power_off() -> i32 {
    let mut r = [0u32; 1];
    call(Func::PowerOff, &[u32::MAX, u32::MAX], &mut r)
}

/// `power-off` without the lock, for a crash or panic path.
///
/// # Safety
/// As for `call_unlocked`.
pub unsafe fn power_off_unlocked() -> i32 {
    let mut r = [0u32; 1];
    // SAFETY: forwarded to the caller.
    unsafe { call_unlocked(Func::PowerOff, &[u32::MAX, u32::MAX], &mut r) }
}

/// `stop-self` through an argument buffer on the caller's stack, without the lock: the CPU stops
/// (QEMU halts its vCPU: it no longer runs, nor takes host CPU time). For the firmware stopping CPUs
/// in place (`fadump`), where a CPU may have been stopped holding the lock. Returns only if RTAS
/// refused (or there is no `stop-self`).
pub fn stop_self_unlocked() -> i32 {
    let Some(tok) = token(Func::StopSelf) else {
        return NO_TOKEN;
    };
    let mut a = Args {
        token: tok.to_be(),
        nargs: 0,
        nret: 1u32.to_be(),
        cells: [u32::MAX; MAX_CELLS],
    };
    // SAFETY: `a` is on this CPU's stack, at a real address the hypervisor may read and write
    // (translation is off); nobody else uses it. `stop-self` takes no argument and stops the CPU.
    unsafe {
        hcall::hcall(
            hcall::KVMPPC_H_RTAS,
            [&mut a as *mut Args as u64, 0, 0, 0, 0, 0],
        )
    };
    u32::from_be(a.cells[0]) as i32
}

/// `ibm,int-off(irq)` through `buf`, without the lock.
///
/// # Safety
/// As for `call_with`.
pub unsafe fn int_off_with(buf: &Buffer, irq: u32) -> i32 {
    let mut r = [0u32; 1];
    // SAFETY: forwarded to the caller.
    unsafe { call_with(buf, Func::IntOff, &[irq], &mut r) }
}

/// Makes the RTAS call described by `args` (the portable crash sequence's argument buffer, host-endian
/// atomics: `nmilog_ppc64::RtasArgs` has no fixed layout) through `buf`, in PAPR layout (big-endian
/// cells), and copies the return cells back into `args`. Returns the status (return cell 0).
///
/// # Safety
/// As for `call_with`.
pub unsafe fn call_from_args(buf: &Buffer, args: &nmilog_ppc64::RtasArgs) -> i32 {
    let nargs = (args.nargs.load(Ordering::Relaxed) as usize).min(MAX_CELLS);
    let nret = (args.nret.load(Ordering::Relaxed) as usize).clamp(1, MAX_CELLS - nargs);
    let p = buf.0.get();
    {
        // SAFETY: the caller guarantees exclusive use of the buffer; p points at a live static.
        let a = unsafe { &mut *p };
        a.token = args.token.load(Ordering::Relaxed).to_be();
        a.nargs = (nargs as u32).to_be();
        a.nret = (nret as u32).to_be();
        for i in 0..nargs {
            a.cells[i] = args.cells[i].load(Ordering::Relaxed).to_be();
        }
        for c in a.cells[nargs..nargs + nret].iter_mut() {
            *c = u32::MAX.to_be();
        }
    }
    // SAFETY: as in `call_with`: a static buffer at a real address; the asm is a compiler barrier.
    unsafe { hcall::hcall(hcall::KVMPPC_H_RTAS, [p as u64, 0, 0, 0, 0, 0]) };
    // SAFETY: as above.
    let a = unsafe { &*p };
    for i in 0..nret {
        if let Some(c) = args.cells.get(nargs + i) {
            c.store(u32::from_be(a.cells[nargs + i]), Ordering::Relaxed);
        }
    }
    u32::from_be(a.cells[nargs]) as i32
}
