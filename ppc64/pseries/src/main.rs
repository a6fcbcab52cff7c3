//! Bare-metal ppc64le image on QEMU's sPAPR `pseries` machine running the nmilog crash-shutdown
//! sequence (issue 5).
//!
//! Boot CPU: read the RTAS tokens, /cpus, the interrupt sources and /chosen `bootargs` (the scenario)
//! through the Open Firmware client interface; load the capture stage into the reserved crash region
//! (`kexec -p`); patch the system-reset (0x100) and decrementer (0x900) vectors; route the interrupt
//! sources to itself through RTAS; start the secondary CPUs through RTAS `start-cpu`. Every CPU then
//! logs through nmilog in task context and from its decrementer interrupt. The scenario freezes CPUs
//! mid-log-write or holding the RTAS lock; the boot CPU then crashes the machine (`crash.rs`) and jumps
//! into the capture stage (`capture/main.rs`), which prints the recovered dmesg and powers off.
//!
//! Everything is static: no allocator.

#![no_std]
#![no_main]
// Platform modules expose API (all-CPU NMI, stopped-state query, ...) that this image does not use.
#![allow(dead_code)]

mod asm;
mod baseline;
mod boot;
mod bootparams;
mod console;
mod crash;
mod crash_notes;
mod crash_state;
mod death;
mod death_point;
mod exceptions;
mod fadump;
mod hcall;
mod hold;
mod irq;
mod kexec;
mod klog;
mod machine;
mod mem;
mod of;
mod percpu;
mod presenter;
mod rtas;
mod scenario;
mod smp;
mod term;
mod timebase;
mod workload;
mod xive;

use core::sync::atomic::{AtomicUsize, Ordering};

use percpu::MAX_CPUS;

/// Secondary CPUs that reached their logging loop.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Task records the boot CPU writes before it asks the scenario CPUs to freeze.
const BOOT_RECORDS: u64 = 40;

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
    /// /chosen bootargs (`-append`).
    bootargs: [u8; 128],
    bootargs_len: usize,
    /// The end of RAM (`/memory@0` reg: the RMA, all of RAM here); 0 if not found.
    ram_top: u64,
    /// CPU slots (`/cpus` `ibm,drc-indexes`: one per possible core, `-smp ...,maxcpus=M`), 0 if
    /// the property is missing.
    cpu_slots: usize,
}

fn read_device_tree() -> Machine {
    let mut m = Machine {
        cpus: [0; MAX_CPUS],
        ncpus: 0,
        ignored_cpus: 0,
        tb_freq: 0,
        vty_reg: None,
        vty_irq: None,
        epow_irq: None,
        rtas_tokens: 0,
        bootargs: [0; 128],
        bootargs_len: 0,
        ram_top: 0,
        cpu_slots: 0,
    };

    // /rtas: walk the properties and list every one-cell property whose value lies in QEMU's token
    // range, then look up each function this image uses by name.
    match of::finddevice(c"/rtas") {
        Some(rtas_node) => {
            println!("/rtas tokens used by this image:");
            let mut col = 0;
            for f in rtas::Func::ALL {
                let mut name = [0u8; 40];
                name[..f.name().len()].copy_from_slice(f.name().as_bytes());
                let cname = core::ffi::CStr::from_bytes_until_nul(&name).unwrap_or(c"");
                match of::getprop_u32(rtas_node, cname) {
                    Some(t) => {
                        rtas::register_token(f.name().as_bytes(), t);
                        m.rtas_tokens += 1;
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

    // /cpus: hardware ids and the timebase frequency; the CPU slots (dynamic reconfiguration
    // connectors: the first cell of `ibm,drc-indexes` is their count).
    if let Some(cpus) = of::finddevice(c"/cpus") {
        m.cpu_slots = of::getprop_u32(cpus, c"ibm,drc-indexes").unwrap_or(0) as usize;
        for node in of::children(cpus) {
            let mut t = [0u8; 16];
            if of::getprop_str(node, c"device_type", &mut t) != Some(b"cpu".as_slice()) {
                continue;
            }
            let Some(reg) = of::getprop_u32(node, c"reg") else {
                continue;
            };
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
    // /memory@0 reg (two address cells, two size cells): RAM from 0.
    if let Some(mem) = of::finddevice(c"/memory@0") {
        let mut reg = [0u8; 16];
        if of::getprop(mem, c"reg", &mut reg) == Some(16) {
            let (base, size) = reg.split_at(8);
            let be = |b: &[u8]| b.iter().fold(0u64, |v, &x| v << 8 | x as u64);
            if be(base) == 0 {
                m.ram_top = be(size);
            }
        }
    }
    // /chosen bootargs: QEMU's `-append` (the scenario).
    if let Some(chosen) = of::finddevice(c"/chosen") {
        let mut b = [0u8; 128];
        if let Some(s) = of::getprop_str(chosen, c"bootargs", &mut b) {
            m.bootargs_len = s.len();
            m.bootargs = b;
        }
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
    println!(
        "nmilog-pseries: boot CPU up (MSR {:#x}, client interface at {:#x})",
        smp::msr(),
        of::entry()
    );
    let st = hcall::set_interrupts_little_endian();
    println!("H_SET_MODE(little-endian interrupts) = {st}");
    // XIVE (`ic-mode=xive`): ask for exploitation mode now, while only this CPU runs and the client
    // interface is open (the tree it rebuilds is the one read below).
    if xive::in_device_tree() {
        match xive::negotiate() {
            Ok(tima) => println!(
                "interrupt controller: XIVE, exploitation mode negotiated (ibm,client-architecture-support, OV5 byte 23 = 0x40); OS TIMA at {tima:#x}"
            ),
            Err(e) => println!("interrupt controller: XIVE, not negotiated ({e:?}): no interrupts"),
        }
    } else {
        println!("interrupt controller: XICS");
    }

    let mut m = read_device_tree();
    timebase::set_freq(m.tb_freq as u64);
    print!("/cpus: {} CPU(s), hw ids [", m.ncpus);
    for (i, c) in m.cpus[..m.ncpus].iter().enumerate() {
        print!("{}{}", if i > 0 { ", " } else { "" }, c);
    }
    println!(
        "], timebase-frequency {} Hz{}",
        m.tb_freq,
        if m.ignored_cpus > 0 {
            " (extra CPUs ignored)"
        } else {
            ""
        }
    );
    println!(
        "vty: reg {}, interrupt {}; epow-events interrupt {}",
        Hex(m.vty_reg),
        Hex(m.vty_irq),
        Hex(m.epow_irq)
    );
    if let Some(reg) = m.vty_reg {
        console::set_term(reg as u64);
    }
    match find_boot_cpu(&mut m) {
        Some(_) => println!(
            "boot CPU: hw id {} (the one query-cpu-stopped-state reports running)",
            m.cpus[0]
        ),
        None => println!(
            "boot CPU: not found through query-cpu-stopped-state; assuming hw id {}",
            m.cpus[0]
        ),
    }
    smp::init_boot_cpu(m.cpus[0]);
    let n = m.ncpus;
    // Possible CPUs: the present ones and the empty `maxcpus` slots (offline: never started).
    let possible = m.cpu_slots.clamp(n, MAX_CPUS);
    crash_state::set_online(n);
    if possible > n {
        println!(
            "/cpus: {} CPU slot(s) (ibm,drc-indexes): CPUs {n}..{} offline (no CPU plugged in)",
            m.cpu_slots,
            possible - 1
        );
    }
    // The crash flight recorder, in the preserved region: empty until a crash.
    bootparams::flight_recorder().reset();
    println!(
        "flight recorder: {} breadcrumb slots at {:#x} (preserved for the capture stage)",
        nmilog_ppc64::flight::FLIGHT_SLOTS,
        bootparams::FLIGHT_BASE
    );
    // Each CPU's crash note, in the preserved region: none until a crash.
    crash_notes::reset();
    println!(
        "crash notes: {} x {} bytes at {:#x} (an NT_PRSTATUS note per CPU, written at the crash)",
        bootparams::OUTCOME_CPUS,
        bootparams::NOTE_STRIDE,
        bootparams::NOTES_BASE
    );

    // The scenario, from /chosen bootargs.
    let cmdline = &m.bootargs[..m.bootargs_len];
    let kind = match scenario::parse(cmdline) {
        Ok(k) => k,
        Err(bad) => {
            println!(
                "bootargs: unknown scenario {:?}; known:",
                core::str::from_utf8(bad).unwrap_or("?")
            );
            for k in scenario::Kind::ALL {
                println!("  scenario={}", k.name());
            }
            println!("pseries: FAILED (bad scenario)");
            rtas::power_off();
            exceptions::park()
        }
    };
    scenario::set(kind, n);
    // The die-in-drain scenario's death point.
    let die = scenario::die_arg(cmdline).unwrap_or(b"");
    let point = match (kind, die) {
        (scenario::Kind::DieInDrain, b"") => {
            Some(death_point::DeathPoint::Record(death_point::Nth::At(0)))
        }
        (scenario::Kind::DieInDrain, d) => death_point::DeathPoint::parse(d),
        (_, b"") => None,
        (_, _) => {
            println!("bootargs: die= needs scenario=die-in-drain");
            println!("pseries: FAILED (bad die=)");
            rtas::power_off();
            exceptions::park()
        }
    };
    if kind == scenario::Kind::DieInDrain && point.is_none() {
        println!(
            "bootargs: unknown death point die={:?}; known: entered, ipi-sent, checkins-done, masked, drain:N, drain:last, drained, image-start, image-sized:N|last, image-copy:N|last, image-tables, image-header, image-written",
            core::str::from_utf8(die).unwrap_or("?")
        );
        println!("pseries: FAILED (bad die=)");
        rtas::power_off();
        exceptions::park()
    }
    death::set(point);
    let die = if kind == scenario::Kind::DieInDrain && die.is_empty() {
        b"drain:0".as_slice()
    } else {
        die
    };
    println!(
        "bootargs {:?}: scenario {} (frozen mid-log-write: {}, RTAS lock holder: {}{}, deaf: {}{}{})",
        core::str::from_utf8(cmdline).unwrap_or("?"),
        kind.name(),
        Cpu(scenario::freeze_cpu()),
        Cpu(scenario::rtas_cpu()),
        if scenario::rtas_in_call() {
            ", inside the call"
        } else {
            ""
        },
        Cpu(scenario::deaf_cpu()),
        if point.is_some() {
            "; the crashing CPU dies at "
        } else {
            ""
        },
        core::str::from_utf8(if point.is_some() { die } else { b"" }).unwrap_or("?"),
    );

    // kexec -p: load the capture stage into the reserved region now, long before any crash.
    match kexec::load_capture() {
        Ok(l) => println!(
            "kexec -p: capture stage loaded into the crash region [{:#x}, {:#x}) ({} segments, entry {:#x}); handover image at {:#x}",
            l.lo, l.hi, l.segments, l.entry, bootparams::HANDOVER_BASE
        ),
        Err(e) => println!("kexec -p: no capture stage loaded ({e:?}); a crash will power off without a dump"),
    }

    // The nmilog core. The settle window keeps the eager flush's merge in timestamp order: a writer
    // stores its odd sequence word before it reads the timebase, but `mftb` is not ordered with that
    // store's visibility, so records stamped within the last 50 us stay in their rings for the next
    // flush (or the crash drain).
    klog::LOG.platform().set_cpu_count(possible);
    let ring_words = match klog::attach() {
        Ok(w) => w,
        Err(e) => {
            println!("nmilog: cannot size the log: {e}");
            0
        }
    };
    klog::LOG.set_flush_settle_ns(klog::FLUSH_SETTLE_NS);
    klog::register_global();
    println!(
        "nmilog: {} CPUs x {} rings x {} KiB, main log {} KiB (sized at boot; {} KiB static, arena {} KiB)",
        possible,
        klog::DEPTH,
        ring_words * 8 / 1024,
        klog::MAIN_WORDS * 8 / 1024,
        klog::KernelLog::FOOTPRINT_BYTES / 1024,
        klog::ARENA_WORDS * 8 / 1024
    );
    // The descriptor, now that the CPU count is final: constant from here on.
    match klog::describe() {
        Ok(words) => println!(
            "recover: log descriptor at {:#x} ({words} words: {possible} CPUs x {} rings and the main log of the log at {:#x}; the crash's check-in flags in {:#x})",
            klog::DESCRIPTOR.address(),
            klog::DEPTH,
            &klog::LOG as *const klog::KernelLog as usize,
            &crash_state::STATE as *const _ as usize,
        ),
        Err(e) => println!("recover: no log descriptor: {e}"),
    }

    // The last client-interface call is behind us: take over 0x100 and 0x900.
    exceptions::set_system_reset_handler(crash::system_reset);
    // SAFETY: the client interface is no longer used (install closes it) and no CPU executes at 0x100:
    // the secondaries are not started yet and this CPU runs the image.
    let insn = unsafe { exceptions::install_system_reset_vector() };
    // SAFETY: the client interface is closed and no CPU has MSR[EE] set yet.
    let dinsn = unsafe {
        irq::install(
            workload::irq_handler,
            timebase::us_to_ticks(workload::irq_period_us(n)),
        )
    };
    // SAFETY: as above.
    let einsn = unsafe { irq::install_external(workload::ext_irq_handler) };
    // SAFETY: as above.
    let minsn = unsafe { irq::install_machine_check() };
    println!(
        "vectors: 0x100 = {insn:#010x} (system reset), 0x200 = {minsn:#010x} (machine check), 0x500 = {einsn:#010x} (external), 0x900 = {dinsn:#010x} (decrementer, every {} us)",
        workload::irq_period_us(n)
    );

    // Interrupt sources: route them to this CPU (as request_irq would) so the crash path has real work.
    crash_state::set_platform(m.cpus[0], m.vty_reg.unwrap_or(0));
    // Firmware-assisted dump: registered now that the console and the RTAS tokens are known.
    let at = fadump::register(m.ram_top, die);
    println!(
        "fadump: registered: should a system reset interrupt the crash path, the capture stage boots with r3 = 0 (no image), r4 = {at:#x}, RAM [0, {:#x})",
        m.ram_top
    );
    if xive::active() {
        let st = xive::init_queue(m.cpus[0] as u64);
        println!(
            "xive: event queue of CPU 0 (hw id {}): H_INT_SET_QUEUE_CONFIG(always notify, prio {}, 4 KiB) = {st}",
            m.cpus[0],
            xive::PRIO
        );
    }
    for irq in [m.vty_irq, m.epow_irq].into_iter().flatten() {
        if xive::active() {
            let (st, target, prio) = xive::route(irq, m.cpus[0] as u64);
            println!("irq {irq:#x}: H_INT_SET_SOURCE_CONFIG(target {}, prio {}) = {st}; H_INT_GET_SOURCE_CONFIG: target {target}, priority {prio:#x}; ESB PQ 00", m.cpus[0], xive::PRIO);
        } else {
            let st = rtas::set_xive(irq, m.cpus[0], 5);
            let (gst, srv, prio) = rtas::get_xive(irq);
            println!("irq {irq:#x}: ibm,set-xive(server {}, prio 5) = {st}; ibm,get-xive = {gst}: server {srv}, priority {prio:#x}", m.cpus[0]);
        }
        crash_state::add_source(irq);
    }
    // Open this CPU's presenter (CPPR 0 at reset blocks everything): the crash path has to close it
    // when it cannot mask through RTAS.
    let st = presenter::set_cppr(0xff);
    let (pst, cppr) = presenter::cppr(m.cpus[0] as u64);
    println!(
        "presenter: CPPR 0xff through the {} = {st}; read back = {pst}: CPPR {cppr:#x}",
        presenter::how()
    );
    // XIVE: one event from the vty source, as its device would raise it, taken once this CPU
    // enables interrupts (its log then holds "external interrupt 0x..."): routing, queue,
    // acknowledge and end of interrupt checked end to end before the crash masks the source.
    if let Some(irq) = m.vty_irq.filter(|_| xive::active()) {
        println!(
            "xive: irq {irq:#x} triggered at its ESB: {}",
            if xive::trigger(irq) {
                "taken when CPU 0 enables interrupts"
            } else {
                "no trigger page"
            }
        );
    }

    // Secondaries.
    for i in 1..n {
        let st = smp::start_cpu(i, m.cpus[i], secondary_main);
        if st != rtas::SUCCESS {
            println!("start-cpu(hw id {}) = {}", m.cpus[i], st);
        }
    }
    // Acquire pairs with the Release fetch_add in `secondary_main`.
    let up = wait_until(2_000_000, || ONLINE.load(Ordering::Acquire) >= n - 1);
    println!(
        "{} of {} secondary CPU(s) logging after {} us",
        ONLINE.load(Ordering::Acquire),
        n - 1,
        up
    );

    // The boot CPU logs too, then the scenario CPUs freeze, then the crash.
    workload::log_loop(0, Some(BOOT_RECORDS));
    // Every secondary that is logging has taken a tick (an interrupt-context record for the
    // capture stage to check) before the crash: under TCG a vCPU the host ran late may not have
    // taken its first one yet when the boot CPU is done logging (seen once with 8 vCPUs on 2 host
    // cores). A CPU that never came online logs nothing and is not waited for. Bounded, as every
    // wait here; Relaxed: progress counts, read for this wait and the boot report.
    let ticked = |c: usize| {
        workload::TASK_N[c].load(Ordering::Relaxed) == 0
            || workload::IRQ_N[c].load(Ordering::Relaxed) > 0
    };
    let waited = wait_until(2_000_000, || (1..n).all(ticked));
    println!(
        "secondary CPUs logging without a tick logged yet: {} (waited {} us)",
        (1..n).filter(|&c| !ticked(c)).count(),
        waited
    );
    let (frozen, want) = workload::freeze_and_wait();
    print!(
        "scenario {}: frozen {:#x} of {:#x}",
        kind.name(),
        frozen,
        want
    );
    if let Some(c) = scenario::freeze_cpu() {
        print!(
            "; CPU {c} parked mid-write of \"cpu={c} n={}\"",
            workload::FROZEN_AT[c].load(Ordering::Relaxed)
        );
    }
    if let Some(c) = scenario::rtas_cpu() {
        print!(
            "; CPU {c} parked holding the RTAS lock ({} the call)",
            if scenario::rtas_in_call() {
                "inside"
            } else {
                "outside"
            }
        );
    }
    if let Some(c) = scenario::deaf_cpu() {
        print!("; CPU {c} deaf to the NMI");
    }
    println!();
    print!("records committed so far:");
    for c in 0..n {
        print!(
            " C{c} task {} irq {};",
            workload::TASK_N[c].load(Ordering::Relaxed),
            workload::IRQ_N[c].load(Ordering::Relaxed)
        );
    }
    println!();
    println!("crash: CPU 0 crashes now ({} us since kmain); the console stays silent until the capture stage", timebase::ticks_to_us(timebase::now() - t_entry));
    crash::crash_shutdown("simulated crash on the boot CPU")
}

/// Formats an optional CPU number.
struct Cpu(Option<usize>);

impl core::fmt::Display for Cpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(c) => write!(f, "CPU {c}"),
            None => f.write_str("none"),
        }
    }
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

/// A secondary CPU: log forever (task context + decrementer interrupts) until the NMI stops it.
fn secondary_main(cpu: usize) -> ! {
    // Open this CPU's interrupt presenter (CPPR 0 after reset: nothing presented), as Linux's
    // `xics_setup_cpu` does for every CPU: the crash's teardown then has something to close.
    let _ = presenter::set_cppr(0xff);
    // Release pairs with the boot CPU's Acquire load of ONLINE.
    ONLINE.fetch_add(1, Ordering::Release);
    workload::log_loop(cpu, None);
    exceptions::park()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // A panic is a bug in this image: report it on the raw console (no lock) and power off.
    console::nmi_print(format_args!(
        "CPU {}: PANIC: {}\npseries: FAILED\n",
        percpu::this_cpu_index(),
        info
    ));
    machine::power_off_crash()
}
