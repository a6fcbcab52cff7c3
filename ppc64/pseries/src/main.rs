//! Bare-metal ppc64le bring-up on QEMU's sPAPR `pseries` machine (issue 5, boot infrastructure).
//!
//! The demo: boot on the boot CPU, read the RTAS tokens, /cpus and the vty's interrupt from the device
//! tree through the Open Firmware client interface, patch the system-reset vector, start the secondary
//! CPUs through RTAS `start-cpu` (each prints a line and spins with external interrupts off), send them
//! the system-reset NMI with H_SIGNAL_SYS_RESET(-2), wait (bounded, by the timebase) for each one's
//! 0x100 handler to check in, mask the vty's interrupt through RTAS, and power off.
//!
//! Everything is static: no allocator, so the nmilog core can be linked in unchanged later.

#![no_std]
#![no_main]
// The platform modules expose API (RTAS lock owner, stopped-state query, all-CPU NMI, ...) that the
// nmilog integration will use and this demo does not.
#![allow(dead_code)]

mod boot;
mod console;
mod exceptions;
mod hcall;
mod mem;
mod of;
mod rtas;
mod smp;
mod timebase;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use exceptions::SavedRegs;
use smp::MAX_CPUS;

/// Secondary CPUs that reached their spin loop.
static SPINNING: AtomicUsize = AtomicUsize::new(0);
/// Bit i: CPU i's system-reset handler ran.
static RESET_SEEN: AtomicUsize = AtomicUsize::new(0);
/// Timebase when the NMI was sent.
static NMI_SENT_TB: AtomicU64 = AtomicU64::new(0);
/// Per-CPU spin-loop iterations, to show the CPUs really were spinning.
static SPINS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// What the device tree told us.
struct Machine {
    /// Hardware ids of the CPUs, boot CPU first.
    cpus: [u32; MAX_CPUS],
    ncpus: usize,
    /// CPUs in the tree beyond MAX_CPUS.
    ignored_cpus: usize,
    tb_freq: u32,
    vty_reg: Option<u32>,
    vty_irq: Option<u32>,
    epow_irq: Option<u32>,
    rtas_tokens: usize,
}

fn read_device_tree() -> Machine {
    let mut m = Machine { cpus: [0; MAX_CPUS], ncpus: 0, ignored_cpus: 0, tb_freq: 0, vty_reg: None, vty_irq: None, epow_irq: None, rtas_tokens: 0 };

    // /rtas: walk the properties and list every one-cell property whose value lies in QEMU's token
    // range, then look up each function this image uses by name.
    match of::finddevice(c"/rtas") {
        Some(rtas_node) => {
            println!("/rtas tokens (walked with nextprop):");
            let mut col = 0;
            let (_, complete) = of::for_each_u32_prop(rtas_node, |name, v| {
                if (0x2000..0x3000).contains(&v) {
                    m.rtas_tokens += 1;
                    print!("  {:<34}{:#06x}", core::str::from_utf8(name).unwrap_or("?"), v);
                    col += 1;
                    if col % 2 == 0 {
                        println!();
                    }
                }
            });
            if col % 2 != 0 {
                println!();
            }
            if !complete {
                println!("  (walk stopped early: a property name did not fit the buffer)");
            }
            println!("/rtas tokens used by this image (getprop by name):");
            let mut col = 0;
            for f in rtas::Func::ALL {
                let mut name = [0u8; 40];
                name[..f.name().len()].copy_from_slice(f.name().as_bytes());
                let cname = core::ffi::CStr::from_bytes_until_nul(&name).unwrap_or(c"");
                match of::getprop_u32(rtas_node, cname) {
                    Some(t) => {
                        rtas::register_token(f.name().as_bytes(), t);
                        print!("  {:<34}{:#06x}", f.name(), t);
                    }
                    None => print!("  {:<34}{:>6}", f.name(), "-"),
                }
                col += 1;
                if col % 2 == 0 {
                    println!();
                }
            }
            if col % 2 != 0 {
                println!();
            }
        }
        None => println!("/rtas: not found"),
    }

    // /cpus: hardware ids and the timebase frequency.
    if let Some(cpus) = of::finddevice(c"/cpus") {
        for node in of::children(cpus) {
            let mut t = [0u8; 16];
            if of::getprop_str(node, c"device_type", &mut t) != Some(b"cpu".as_slice()) {
                continue;
            }
            let Some(reg) = of::getprop_u32(node, c"reg") else { continue };
            if m.tb_freq == 0 {
                m.tb_freq = of::getprop_u32(node, c"timebase-frequency").unwrap_or(0);
            }
            if m.ncpus < MAX_CPUS {
                m.cpus[m.ncpus] = reg;
                m.ncpus += 1;
            } else {
                m.ignored_cpus += 1;
            }
        }
    }

    // The vty (console) and the EPOW event source: interrupt sources to mask through RTAS.
    if let Some(vdev) = of::finddevice(c"/vdevice") {
        for node in of::children(vdev) {
            let mut n = [0u8; 32];
            if of::getprop_str(node, c"name", &mut n).is_some_and(|s| s == b"vty") {
                m.vty_reg = of::getprop_u32(node, c"reg");
                m.vty_irq = of::getprop_u32(node, c"interrupts");
                break;
            }
        }
    }
    if let Some(epow) = of::finddevice(c"/event-sources/epow-events") {
        m.epow_irq = of::getprop_u32(epow, c"interrupts");
    }
    m
}

/// Puts the boot CPU first in `cpus`: it is the only one RTAS reports as running (PIR cannot tell:
/// it reads 0 on every CPU under QEMU's TCG pseries). Returns the RTAS status of the query that found it.
fn find_boot_cpu(m: &mut Machine) -> Option<(usize, i32)> {
    for i in 0..m.ncpus {
        let (st, state) = rtas::query_cpu_stopped_state(m.cpus[i]);
        if st == rtas::SUCCESS && state == 2 {
            m.cpus[..m.ncpus].swap(0, i);
            return Some((i, st));
        }
    }
    None
}

/// The boot CPU's main, called by `boot::boot_rust`.
pub fn kmain() -> ! {
    let t_entry = timebase::now();
    println!();
    println!("nmilog-pseries: boot CPU up (MSR {:#x}, client interface at {:#x})", smp::msr(), of::entry());

    let st = hcall::set_interrupts_little_endian();
    println!("H_SET_MODE(little-endian interrupts) = {st}");

    let mut m = read_device_tree();
    timebase::set_freq(m.tb_freq as u64);
    print!("/cpus: {} CPU(s), hw ids [", m.ncpus);
    for (i, c) in m.cpus[..m.ncpus].iter().enumerate() {
        print!("{}{}", if i > 0 { ", " } else { "" }, c);
    }
    println!("], timebase-frequency {} Hz{}", m.tb_freq, if m.ignored_cpus > 0 { " (extra CPUs ignored)" } else { "" });
    println!("vty: reg {}, interrupt {}; epow-events interrupt {}", Hex(m.vty_reg), Hex(m.vty_irq), Hex(m.epow_irq));
    if let Some(reg) = m.vty_reg {
        console::set_term(reg as u64);
    }
    match find_boot_cpu(&mut m) {
        Some(_) => println!("boot CPU: hw id {} (the one query-cpu-stopped-state reports running)", m.cpus[0]),
        None => println!("boot CPU: not found through query-cpu-stopped-state; assuming hw id {}", m.cpus[0]),
    }
    smp::init_boot_cpu(m.cpus[0]);
    let t_dt = timebase::now();
    println!(
        "timebase: {} at kmain entry ({} us since machine reset), device tree read in {} us",
        t_entry,
        timebase::ticks_to_us(t_entry),
        timebase::ticks_to_us(t_dt - t_entry)
    );

    // Last client-interface call is behind us: take over 0x100.
    exceptions::set_system_reset_handler(system_reset);
    // SAFETY: the client interface is no longer used (install closes it) and no CPU executes at 0x100:
    // the secondaries are not started yet and this CPU runs the image.
    let insn = unsafe { exceptions::install_system_reset_vector() };
    println!("system-reset vector: {:#010x} (ba {:#x}) written at 0x100, caches flushed", insn, insn & 0x03ff_fffc);

    // Secondaries.
    let n = m.ncpus;
    for i in 1..n {
        let st = smp::start_cpu(i, m.cpus[i], secondary_main);
        if st != rtas::SUCCESS {
            println!("start-cpu(hw id {}) = {}", m.cpus[i], st);
        }
    }
    let up = wait_until(2_000_000, || SPINNING.load(Ordering::Acquire) >= n - 1);
    println!("{} of {} secondary CPU(s) spinning with interrupts off after {} us", SPINNING.load(Ordering::Acquire), n - 1, up);

    // The NMI.
    NMI_SENT_TB.store(timebase::now(), Ordering::Release);
    let st = hcall::signal_sys_reset(hcall::SYS_RESET_ALL_OTHERS);
    let hcall_us = timebase::ticks_to_us(timebase::now() - NMI_SENT_TB.load(Ordering::Relaxed));
    let want: usize = ((1 << n) - 1) & !1;
    let waited = wait_until(2_000_000, || RESET_SEEN.load(Ordering::Acquire) & want == want);
    let seen = RESET_SEEN.load(Ordering::Acquire);
    println!(
        "H_SIGNAL_SYS_RESET(-2) = {} in {} us; check-ins {:#x} of {:#x} {} us later (bounded wait 2 s)",
        st, hcall_us, seen, want, waited
    );

    // Interrupt masking through RTAS.
    let mut rtas_ok = true;
    if let Some(irq) = m.vty_irq.or(m.epow_irq) {
        let server = m.cpus[0];
        let (st0, srv0, prio0) = rtas::get_xive(irq);
        println!("RTAS ibm,get-xive({irq:#x}) = {st0}: server {srv0}, priority {prio0:#x}");
        let st1 = rtas::set_xive(irq, server, 5);
        let (st2, _, prio_on) = rtas::get_xive(irq);
        println!("RTAS ibm,set-xive({irq:#x}, {server}, 5) = {st1}; get-xive = {st2}: priority {prio_on:#x}");
        let st3 = rtas::int_off(irq);
        let (st4, _, prio_off) = rtas::get_xive(irq);
        println!("RTAS ibm,int-off({irq:#x}) = {st3}; get-xive = {st4}: priority {prio_off:#x} (masked)");
        let st5 = rtas::int_on(irq);
        let (st6, _, prio_back) = rtas::get_xive(irq);
        println!("RTAS ibm,int-on({irq:#x}) = {st5}; get-xive = {st6}: priority {prio_back:#x}");
        let st7 = rtas::set_xive(irq, server, 0xff);
        let (st8, _, prio_final) = rtas::get_xive(irq);
        println!("RTAS ibm,set-xive({irq:#x}, {server}, 0xff) = {st7}; get-xive = {st8}: priority {prio_final:#x} (masked)");
        let st9 = rtas::set_xive(0x7, server, 0xff);
        println!("RTAS ibm,set-xive(0x7, {server}, 0xff) = {st9} (not an interrupt source: -3 expected)");
        rtas_ok = [st0, st1, st2, st3, st4, st5, st6, st7, st8].iter().all(|&s| s == rtas::SUCCESS)
            && prio_on == 5
            && prio_off == 0xff
            && prio_back == 5
            && prio_final == 0xff
            && st9 == rtas::PARAM_ERROR;
    } else {
        println!("no interrupt source found in the device tree");
    }

    if n < 2 {
        println!("the system-reset test needs at least 2 CPUs");
    }
    let ok = seen & want == want && rtas_ok && n >= 2;
    println!(
        "pseries: demo {} (cpus={}, nmi={}/{}, rtas={}), {} us since kmain",
        if ok { "ok" } else { "FAILED" },
        n,
        (seen & want).count_ones(),
        n - 1,
        if rtas_ok { "ok" } else { "failed" },
        timebase::ticks_to_us(timebase::now() - t_entry)
    );
    let st = rtas::power_off();
    println!("power-off returned {st}");
    exceptions::park()
}

/// Formats an optional cell as hex or "none".
struct Hex(Option<u32>);

impl core::fmt::Display for Hex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:#x}"),
            None => f.write_str("none"),
        }
    }
}

/// Waits until `cond` holds or `us` microseconds pass; returns the microseconds waited.
fn wait_until(us: u64, cond: impl Fn() -> bool) -> u64 {
    let start = timebase::now();
    let d = timebase::Deadline::after_us(us);
    while !cond() && !d.expired() {
        core::hint::spin_loop();
    }
    timebase::ticks_to_us(timebase::now() - start)
}

/// A secondary CPU: report, then spin with external interrupts off until the NMI arrives.
fn secondary_main(cpu: usize) -> ! {
    let msr = smp::msr();
    println!(
        "CPU {cpu}: online (hw id {}, MSR {:#x}, EE={}), spinning",
        smp::PERCPU[cpu].hw_id.load(Ordering::Relaxed),
        msr,
        (msr & smp::MSR_EE != 0) as u8
    );
    SPINNING.fetch_add(1, Ordering::Release);
    loop {
        SPINS[cpu].fetch_add(1, Ordering::Relaxed);
        core::hint::spin_loop();
    }
}

/// The system-reset handler (Rust side). Bring-up only: it prints from NMI context with a bounded
/// lock wait; the real integration logs through nmilog instead.
fn system_reset(cpu: usize, saved: &SavedRegs) -> ! {
    let latency = timebase::ticks_to_us(timebase::now().wrapping_sub(NMI_SENT_TB.load(Ordering::Acquire)));
    console::nmi_print(format_args!(
        "CPU {cpu}: system reset (srr0 {:#x}, srr1 {:#x}, interrupted EE={}, {} spins, {} us after the hcall)\n",
        saved.nip,
        saved.msr,
        (saved.msr & smp::MSR_EE != 0) as u8,
        SPINS[cpu].load(Ordering::Relaxed),
        latency
    ));
    RESET_SEEN.fetch_or(1 << cpu, Ordering::Release);
    exceptions::park()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::nmi_print(format_args!("CPU {}: PANIC: {}\npseries: demo FAILED\n", smp::this_cpu_index(), info));
    // SAFETY: bring-up panic path; if another CPU holds the RTAS lock we power off regardless.
    unsafe { rtas::power_off_unlocked() };
    exceptions::park()
}
