//! Console output through the hypervisor virtual terminal (H_PUT_TERM_CHAR).
//!
//! A spin lock tagged with the owner CPU keeps task-context lines (boot messages) from interleaving.
//! The NMI handler and the crash path never print: they log through nmilog, which never takes this
//! lock. The exceptions are all last words before power-off or the capture stage: the panic handler
//! (a bug in this image) prints with `nmi_print`, which waits at most 10 ms for the lock and then
//! writes regardless, so a CPU frozen while holding it cannot hang it; the crash path's failure exits
//! (no capture stage loaded, the locked baseline's verdict, its watchdog) write with the lockless
//! `write_bytes`, after the log has been drained; and the firmware-assisted-dump stand-in (`fadump`)
//! says what it did with `write_fmt_unlocked`, once every other CPU is stopped.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::term::LineWriter;
use crate::{percpu, term, timebase};

/// Terminal number for H_PUT_TERM_CHAR (the vty's `reg`; 0 means "the default vty" to QEMU).
static TERM: AtomicU64 = AtomicU64::new(0);
/// 0 = free, otherwise owner CPU index + 1.
static LOCK: AtomicUsize = AtomicUsize::new(0);

/// Sets the terminal number (from the device tree's vty node).
pub fn set_term(reg: u64) {
    TERM.store(reg, Ordering::Relaxed);
}

/// Writes raw bytes to the console's terminal (no lock), 16 at a time, retrying while the
/// hypervisor says busy.
pub fn write_bytes(bytes: &[u8]) {
    term::write_bytes(TERM.load(Ordering::Relaxed), bytes);
}

/// Formats `args` straight to the terminal, without the lock: the firmware's last words before it
/// boots the capture stage (every other CPU is stopped; one may have been stopped holding the lock).
pub fn write_fmt_unlocked(args: fmt::Arguments) {
    let mut out = LineWriter::<64>::new(TERM.load(Ordering::Relaxed));
    let _ = out.write_fmt(args);
    out.flush();
}

fn lock(deadline: Option<timebase::Deadline>) -> bool {
    let me = percpu::this_cpu_index() + 1;
    loop {
        match LOCK.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(owner) if owner == me => return false, // re-entered (NMI on top of our own print): don't wait on ourselves
            Err(_) => {}
        }
        if let Some(d) = deadline {
            if d.expired() {
                return false;
            }
        }
        core::hint::spin_loop();
    }
}

fn print_locked(args: fmt::Arguments, deadline: Option<timebase::Deadline>) {
    let owned = lock(deadline);
    let mut out = LineWriter::<64>::new(TERM.load(Ordering::Relaxed));
    let _ = out.write_fmt(args);
    out.flush();
    if owned {
        LOCK.store(0, Ordering::Release);
    }
}

/// Prints under the console lock (task context).
pub fn print(args: fmt::Arguments) {
    print_locked(args, None);
}

/// Prints from NMI context in this bring-up: waits at most 10 ms for the lock, then prints anyway.
pub fn nmi_print(args: fmt::Arguments) {
    print_locked(args, Some(timebase::Deadline::after_us(10_000)));
}

/// `print!` to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
