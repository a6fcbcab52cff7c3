//! XIVE, the interrupt controller of POWER9 and POWER10 LPARs, in PAPR exploitation mode
//! (`-machine pseries,ic-mode=xive`): what this kernel needs of it, next to XICS (`hcall`'s
//! `H_CPPR`/`H_XIRR`/`H_EOI`/`H_IPOLL` and RTAS `ibm,set-xive`/`ibm,int-off`, none of which exist
//! under XIVE).
//!
//! * **Negotiation** ([`negotiate`]): the hypervisor answers the `H_INT_*` calls only once the client
//!   has asked for XIVE exploitation through `ibm,client-architecture-support` (option vector 5,
//!   byte 23, bit 0x40), on the boot CPU before any secondary starts, as Linux's `prom_init` does.
//! * **Boot** ([`init_queue`], [`route`]): the boot CPU's event queue for [`PRIO`] (a 4 KiB page of
//!   32-bit entries, `H_INT_SET_QUEUE_CONFIG` with "always notify"), and each device source routed
//!   to it (`H_INT_SET_SOURCE_CONFIG`, its event number = the LISN) and enabled at its event state
//!   buffer (ESB: PQ = 00). Each CPU opens its presenter ([`set_cppr`]`(0xff)`: CPPR 0 at reset
//!   presents nothing).
//! * **Interrupts** ([`accept`], [`next_event`], [`end_of_interrupt`]): the OS ring of the thread
//!   interrupt management area (TIMA) acknowledges, the queue says which source, a load from the
//!   source's ESB page ends it.
//! * **Crash** ([`mask`]): a source is masked with `H_INT_SET_SOURCE_CONFIG(priority 0xff)` — a
//!   hypervisor call, which takes no firmware lock and may overlap another CPU's RTAS call; so the
//!   crash path masks every source however the RTAS lock was left
//!   (`Machine::masks_through_hypervisor`). The presenter closes with an 8-bit store of CPPR 0 into
//!   the TIMA, the teardown each stopped CPU does before the capture stage holds it (Linux's
//!   `xive_teardown_cpu`).
//!
//! The TIMA and the ESB pages are MMIO, big-endian, accessed here in real mode (under QEMU's
//! virtual hypervisor a real-mode access reaches any guest physical address; on hardware they
//! would be cache-inhibited mappings). Each CPU sees its own presenter at the same TIMA address.
//! Every function here takes no lock; those used on the crash path ([`mask`], [`set_cppr`],
//! [`cppr`]) make only hypervisor calls and MMIO accesses.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::hcall::{self, H_SUCCESS};

/// `H_INT_GET_SOURCE_INFO(flags, lisn)` -> (flags, EOI page, trigger page, page shift).
const H_INT_GET_SOURCE_INFO: u64 = 0x3a8;
/// `H_INT_SET_SOURCE_CONFIG(flags, lisn, target, priority, eisn)`.
const H_INT_SET_SOURCE_CONFIG: u64 = 0x3ac;
/// `H_INT_GET_SOURCE_CONFIG(flags, lisn)` -> (target, priority, eisn).
const H_INT_GET_SOURCE_CONFIG: u64 = 0x3b0;
/// `H_INT_SET_QUEUE_CONFIG(flags, target, priority, qpage, qsize)`.
const H_INT_SET_QUEUE_CONFIG: u64 = 0x3b8;
/// `H_INT_ESB(flags, lisn, offset, data)`: an ESB access through the hypervisor (LSIs).
const H_INT_ESB: u64 = 0x3c8;
/// `H_INT_GET_QUEUE_CONFIG(flags, target, priority)` -> (flags, qpage, qsize, offset).
pub const H_INT_GET_QUEUE_CONFIG: u64 = 0x3bc;
/// `H_INT_RESET(flags)`: the whole controller back to its reset state.
const H_INT_RESET: u64 = 0x3d0;

/// `H_INT_SET_SOURCE_CONFIG` flag: set the event number too.
const SRC_SET_EISN: u64 = 0x2;
/// `H_INT_SET_QUEUE_CONFIG` flag: notify on every event (else only the first one would be).
const QUEUE_ALWAYS_NOTIFY: u64 = 0x1;
/// `H_INT_GET_SOURCE_INFO` flag: ESB accesses go through `H_INT_ESB`.
const INFO_H_INT_ESB: u64 = 0x8;

/// The priority of every routed source and of the boot CPU's queue (7 and up are reserved:
/// `ibm,plat-res-int-priorities`).
pub const PRIO: u64 = 6;
/// The priority that masks a source.
pub const MASKED: u64 = 0xff;

/// ESB loads: end of interrupt; set PQ to 00 (enabled) or 01 (off).
const ESB_LOAD_EOI: u64 = 0x000;
const ESB_SET_PQ_00: u64 = 0xc00;
const ESB_SET_PQ_01: u64 = 0xd00;

/// The OS ring in the TIMA's OS page: its state word (NSR, CPPR, IPB, LSMFB, ...) at 0x10, the
/// CPPR byte at 0x11, and the acknowledge register (16 bits: NSR << 8 | CPPR) at 0x810.
const TM_QW1_OS: u64 = 0x10;
const TM_CPPR: u64 = TM_QW1_OS + 1;
const TM_SPC_ACK_OS_REG: u64 = 0x810;

/// Queue size: 2^12 bytes, 1024 entries.
const QUEUE_SHIFT: u64 = 12;
const QUEUE_ENTRIES: usize = 1 << (QUEUE_SHIFT - 2);

/// Sources this kernel routes (vty, EPOW).
pub const MAX_SOURCES: usize = 4;

/// XIVE is the interrupt controller (negotiated at boot). `ACTIVE` and `TIMA_OS` are written once
/// by the boot CPU before it starts the secondaries (RTAS `start-cpu` orders those stores before
/// their first instruction), so every reader loads them Relaxed.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The TIMA's OS page (the second `reg` entry of the controller's node).
static TIMA_OS: AtomicU64 = AtomicU64::new(0);

/// The boot CPU's event queue (page-aligned, as `H_INT_SET_QUEUE_CONFIG` requires).
#[repr(C, align(4096))]
struct Queue([AtomicU32; QUEUE_ENTRIES]);
static QUEUE: Queue = Queue([const { AtomicU32::new(0) }; QUEUE_ENTRIES]);
/// The next entry to read and the generation bit that marks an entry not yet written.
static QUEUE_IDX: AtomicUsize = AtomicUsize::new(0);
static QUEUE_TOGGLE: AtomicU32 = AtomicU32::new(0);

/// Routed sources: LISN and ESB EOI page (`u64::MAX`: accesses through `H_INT_ESB`).
static SRC_LISN: [AtomicU64; MAX_SOURCES] = [const { AtomicU64::new(u64::MAX) }; MAX_SOURCES];
static SRC_EOI: [AtomicU64; MAX_SOURCES] = [const { AtomicU64::new(0) }; MAX_SOURCES];
/// Routed sources' ESB trigger pages (0: none).
static SRC_TRIGGER: [AtomicU64; MAX_SOURCES] = [const { AtomicU64::new(0) }; MAX_SOURCES];

/// Whether XIVE is the interrupt controller.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The CAS vector: a PVR list (POWER9 in raw mode, then the terminator) and option vectors 1 to 5
/// (the count byte is one less than their number; each starts with its length less one). OV1 byte
/// 3 bit 0x80: ISA 3.00; OV5 byte 23 bit 0x40: XIVE exploitation. Nothing else is asked for (hash
/// MMU, no radix: this kernel runs in real mode).
#[repr(C, align(8))]
struct CasVector([u8; 16 + 1 + 4 + 2 + 2 + 2 + 25]);
static CAS_VECTOR: CasVector = CasVector({
    let mut v = [0u8; 16 + 1 + 4 + 2 + 2 + 2 + 25];
    // {mask, pvr}: any POWER9 (0x004e....), raw mode.
    let pvr = [0xff, 0xff, 0x00, 0x00, 0x00, 0x4e, 0x00, 0x00];
    let mut i = 0;
    while i < 8 {
        v[i] = pvr[i];
        i += 1;
    }
    // Terminator {0, 0xffffffff}: (~mask & pvr) != 0.
    v[12] = 0xff;
    v[13] = 0xff;
    v[14] = 0xff;
    v[15] = 0xff;
    v[16] = 4; // five option vectors
    v[17] = 2; // OV1: 3 bytes
    v[20] = 0x80; // OV1 byte 3: ISA 3.00
    v[21] = 0; // OV2: 1 byte (0)
    v[23] = 0; // OV3: 1 byte (0)
    v[25] = 0; // OV4: 1 byte (0)
    v[27] = 23; // OV5: 24 bytes
    v[27 + 23] = 0x40; // OV5 byte 23: XIVE exploitation
    v
});

/// Why XIVE could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum Error {
    /// The client interface failed (or is closed).
    ClientInterface,
    /// CAS returned this status.
    Cas(u32),
    /// CAS passed but `/chosen/ibm,architecture-vec-5` does not show XIVE.
    NotNegotiated,
    /// The controller node has no usable `reg` (TIMA pages).
    NoTima,
    /// A hypervisor call failed with this status.
    Hcall(i64),
}

/// Whether the device tree's interrupt controller is XIVE (`ibm,power-ivpe`): `ic-mode=xive`.
pub fn in_device_tree() -> bool {
    let Some(node) = crate::of::finddevice(c"/interrupt-controller") else {
        return false;
    };
    let mut buf = [0u8; 32];
    crate::of::getprop_str(node, c"compatible", &mut buf).is_some_and(|c| c == b"ibm,power-ivpe")
}

/// Negotiates XIVE exploitation (CAS) and finds the TIMA. On the boot CPU, with the client
/// interface open and no secondary started (the hypervisor refuses CAS otherwise).
pub fn negotiate() -> Result<u64, Error> {
    let st = crate::of::client_architecture_support(&CAS_VECTOR.0)
        .map_err(|_| Error::ClientInterface)?;
    if st != 0 {
        return Err(Error::Cas(st));
    }
    // The tree is rebuilt by CAS: look the nodes up again.
    let chosen = crate::of::finddevice(c"/chosen").ok_or(Error::NotNegotiated)?;
    let mut ov5 = [0u8; 32];
    let n = crate::of::getprop(chosen, c"ibm,architecture-vec-5", &mut ov5).unwrap_or(0);
    if n <= 23 || ov5[23] & 0x40 == 0 {
        return Err(Error::NotNegotiated);
    }
    let node = crate::of::finddevice(c"/interrupt-controller").ok_or(Error::NoTima)?;
    let mut reg = [0u8; 32];
    if crate::of::getprop(node, c"reg", &mut reg) != Some(32) {
        return Err(Error::NoTima);
    }
    // reg: (user page, size), (OS page, size), 64-bit cells each.
    let mut os = [0u8; 8];
    os.copy_from_slice(&reg[16..24]);
    let os = u64::from_be_bytes(os);
    TIMA_OS.store(os, Ordering::Relaxed);
    ACTIVE.store(true, Ordering::Relaxed);
    Ok(os)
}

/// [`hcall::hcall4`] for the `H_INT_*` calls.
fn hcall4(opcode: u64, args: [u64; 5]) -> (i64, [u64; 4]) {
    // SAFETY: the H_INT_* calls made here read or write no memory but the queue page given to
    // H_INT_SET_QUEUE_CONFIG (static, page-aligned, owned by this module).
    unsafe { hcall::hcall4(opcode, args) }
}

/// `H_BUSY` and the `H_LONG_BUSY_*` range: the hypervisor asks to be called again.
fn busy(st: i64) -> bool {
    st == 1 || (9900..=9905).contains(&st)
}

/// [`hcall4`], called again (a bounded number of times, without sleeping: the crash path cannot)
/// while the hypervisor answers busy, as Linux's XIVE code does.
fn hcall4_retry(opcode: u64, args: [u64; 5]) -> (i64, [u64; 4]) {
    const TRIES: usize = 4;
    let mut r = hcall4(opcode, args);
    for _ in 1..TRIES {
        if !busy(r.0) {
            break;
        }
        r = hcall4(opcode, args);
    }
    r
}

/// A 64-bit big-endian MMIO load.
fn mmio_load64(addr: u64) -> u64 {
    // SAFETY: `addr` is an ESB page offset the hypervisor gave (`H_INT_GET_SOURCE_INFO`) or in the
    // TIMA; such loads have only the controller's documented effect and reach no RAM.
    u64::from_be(unsafe { core::ptr::read_volatile(addr as *const u64) })
}

/// An ESB operation (a load at `offset` in the source's EOI page) on routed source `slot`.
fn esb(slot: usize, offset: u64) -> u64 {
    let lisn = SRC_LISN[slot].load(Ordering::Relaxed);
    let page = SRC_EOI[slot].load(Ordering::Relaxed);
    if page == u64::MAX {
        hcall4(H_INT_ESB, [0, lisn, offset, 0, 0]).1[0]
    } else {
        mmio_load64(page + offset)
    }
}

/// Sets this CPU's queue for [`PRIO`] (the boot CPU's: the only one sources are routed to).
pub fn init_queue(hw: u64) -> i64 {
    for e in &QUEUE.0 {
        e.store(0, Ordering::Relaxed);
    }
    QUEUE_IDX.store(0, Ordering::Relaxed);
    QUEUE_TOGGLE.store(0, Ordering::Relaxed);
    let page = QUEUE.0.as_ptr() as u64;
    hcall4(
        H_INT_SET_QUEUE_CONFIG,
        [QUEUE_ALWAYS_NOTIFY, hw, PRIO, page, QUEUE_SHIFT],
    )
    .0
}

/// Routes source `lisn` to CPU `hw` at [`PRIO`] with event number `lisn`, and enables it (PQ 00).
/// Returns the status and the (target, priority) read back.
pub fn route(lisn: u32, hw: u64) -> (i64, u64, u64) {
    let Some(slot) = SRC_LISN
        .iter()
        .position(|l| l.load(Ordering::Relaxed) == u64::MAX)
    else {
        return (hcall::H_PARAMETER, 0, 0);
    };
    let lisn = lisn as u64;
    let (st, info) = hcall4(H_INT_GET_SOURCE_INFO, [0, lisn, 0, 0, 0]);
    if st != H_SUCCESS {
        return (st, 0, 0);
    }
    SRC_EOI[slot].store(
        if info[0] & INFO_H_INT_ESB != 0 {
            u64::MAX
        } else {
            info[1]
        },
        Ordering::Relaxed,
    );
    SRC_TRIGGER[slot].store(info[2], Ordering::Relaxed);
    SRC_LISN[slot].store(lisn, Ordering::Relaxed);
    let st = hcall4(
        H_INT_SET_SOURCE_CONFIG,
        [SRC_SET_EISN, lisn, hw, PRIO, lisn],
    )
    .0;
    esb(slot, ESB_SET_PQ_00);
    let (_, cfg) = hcall4(H_INT_GET_SOURCE_CONFIG, [0, lisn, 0, 0, 0]);
    (st, cfg[0], cfg[1])
}

/// Masks source `lisn` (crash path: no lock, hypervisor calls and one ESB load): PQ 01 at its ESB,
/// then `H_INT_SET_SOURCE_CONFIG(priority 0xff)` (asked again at most three times while the
/// hypervisor answers busy). Returns the status and the priority read back.
pub fn mask(lisn: u32) -> (i64, u64) {
    let lisn = lisn as u64;
    if let Some(slot) = SRC_LISN
        .iter()
        .position(|l| l.load(Ordering::Relaxed) == lisn)
    {
        esb(slot, ESB_SET_PQ_01);
    }
    let st = hcall4_retry(H_INT_SET_SOURCE_CONFIG, [0, lisn, 0, MASKED, 0]).0;
    let (gst, cfg) = hcall4_retry(H_INT_GET_SOURCE_CONFIG, [0, lisn, 0, 0, 0]);
    (st, if gst == H_SUCCESS { cfg[1] } else { u64::MAX })
}

/// Sets this CPU's CPPR (an 8-bit store into its OS ring: one that re-evaluates what is pending).
pub fn set_cppr(cppr: u8) {
    let a = TIMA_OS.load(Ordering::Relaxed) + TM_CPPR;
    // SAFETY: the TIMA's OS page (from the device tree at `negotiate`); a byte store to the CPPR
    // only changes which priorities this CPU is presented.
    unsafe { core::ptr::write_volatile(a as *mut u8, cppr) };
}

/// This CPU's CPPR, read from its OS ring (a 32-bit load: NSR, CPPR, IPB, LSMFB).
pub fn cppr() -> u8 {
    let a = TIMA_OS.load(Ordering::Relaxed) + TM_QW1_OS;
    // SAFETY: as in `set_cppr`; a 32-bit load of the OS ring's first word has no side effect.
    let w = u32::from_be(unsafe { core::ptr::read_volatile(a as *const u32) });
    (w >> 16) as u8
}

/// Acknowledges the interrupt being presented (external interrupt entry): the CPPR becomes its
/// priority. Returns the acknowledge register (NSR << 8 | CPPR).
pub fn accept() -> u16 {
    let a = TIMA_OS.load(Ordering::Relaxed) + TM_SPC_ACK_OS_REG;
    // SAFETY: the TIMA's acknowledge register: the load acknowledges this CPU's pending interrupt.
    u16::from_be(unsafe { core::ptr::read_volatile(a as *const u16) })
}

/// The next event in the boot CPU's queue (its LISN), if any. Only the CPU the queue belongs to
/// calls this, from its external-interrupt handler (MSR[EE] = 0: never reentered).
pub fn next_event() -> Option<u32> {
    let idx = QUEUE_IDX.load(Ordering::Relaxed);
    let toggle = QUEUE_TOGGLE.load(Ordering::Relaxed);
    // Acquire: the hypervisor wrote the entry before it raised the interrupt we acknowledged.
    let e = u32::from_be(QUEUE.0[idx].load(Ordering::Acquire));
    if e >> 31 == toggle {
        return None;
    }
    let next = (idx + 1) % QUEUE_ENTRIES;
    QUEUE_IDX.store(next, Ordering::Relaxed);
    if next == 0 {
        QUEUE_TOGGLE.store(toggle ^ 1, Ordering::Relaxed);
    }
    Some(e & 0x7fff_ffff)
}

/// Ends the interrupt from source `lisn` (a load from its ESB EOI offset).
pub fn end_of_interrupt(lisn: u32) {
    if let Some(slot) = SRC_LISN
        .iter()
        .position(|l| l.load(Ordering::Relaxed) == lisn as u64)
    {
        esb(slot, ESB_LOAD_EOI);
    }
}

/// Triggers routed source `lisn` as its device would (a store into its ESB trigger page): the
/// boot-time check that routing, queue, acknowledge and end-of-interrupt work end to end. Returns
/// whether the source has a trigger page.
pub fn trigger(lisn: u32) -> bool {
    let Some(slot) = SRC_LISN
        .iter()
        .position(|l| l.load(Ordering::Relaxed) == lisn as u64)
    else {
        return false;
    };
    let page = SRC_TRIGGER[slot].load(Ordering::Relaxed);
    if page == 0 || page == u64::MAX {
        return false;
    }
    // SAFETY: the source's trigger page, from H_INT_GET_SOURCE_INFO: a store there raises an event
    // for that source and touches no RAM.
    unsafe { core::ptr::write_volatile(page as *mut u64, 0) };
    true
}

/// The TIMA's OS page (0 when XIVE is not active).
pub fn tima_os() -> u64 {
    if active() {
        TIMA_OS.load(Ordering::Relaxed)
    } else {
        0
    }
}

/// The crashing CPU's teardown before the jump (Linux's `pseries_kexec_cpu_down(crash_shutdown = 1)`
/// on XIVE: `xive_teardown_cpu`, then `xive_shutdown`): its presenter closed (CPPR 0), its queue
/// reset (`H_INT_SET_QUEUE_CONFIG` with size 0), then the controller reset (`H_INT_RESET`), so the
/// next kernel finds nothing routed. No lock, bounded: hypervisor calls (retried while busy) and
/// one TIMA store. Returns the two statuses.
pub fn shutdown(hw: u64) -> [i64; 2] {
    set_cppr(0);
    let q = hcall4_retry(H_INT_SET_QUEUE_CONFIG, [0, hw, PRIO, 0, 0]).0;
    let r = hcall4_retry(H_INT_RESET, [0, 0, 0, 0, 0]).0;
    [q, r]
}
