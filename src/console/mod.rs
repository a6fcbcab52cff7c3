//! Consoles: output devices fed from the main log, with an ownership protocol modelled on Linux's
//! nbcon consoles, so that console output follows the same never-spin rules as the log.
//!
//! # Model
//!
//! * A [`Console`] writes one formatted record at a time ([`Console::write_atomic`]).
//! * Each console has an ownership word, [`ConsoleState`], shared by all CPUs: one `AtomicUsize`
//!   holding `{prio, requested prio, unsafe, unsafe takeover, cpu}` (Linux's `struct
//!   nbcon_state`). Priorities are [`Priority::Normal`] < [`Priority::Emergency`] <
//!   [`Priority::Panic`].
//! * A context acquires the console ([`ConsoleState::try_acquire`]) directly if it is free, or if
//!   its owner has a lower priority and is not inside an *unsafe section* (a span in which the
//!   hardware or the emitter's cursor is half-updated; the emitter keeps each record's write and
//!   cursor update in one). Otherwise a higher-priority context *requests a handover* and waits a
//!   bounded time ([`Wait`]: a spin count and, optionally, a deadline on the platform clock); the
//!   owner sees the request when it leaves its unsafe section — between two records — and hands
//!   the console over. On timeout the request is withdrawn and the caller leaves the records in
//!   the log.
//! * Only the panic path may take a console without its owner's consent
//!   ([`ConsoleState::panic_takeover`], `unsafe`: the caller asserts that every other CPU is
//!   stopped), and that marks the console as *taken over unsafely* for good: from then on only
//!   [`Priority::Panic`] may use it (its driver may have been stopped mid-register-sequence).
//! * Nothing here ever spins without bound, and nothing runs in NMI context: an emitter called from
//!   NMI or crash context (other than the panic flush on the crashing CPU) returns at once and the
//!   records stay in the log for the next emitter.
//!
//! # The emitter
//!
//! [`Consoles`] holds a fixed set of consoles, each with its own [`MainReader`](crate::MainReader) cursor into the main
//! log, and prints what they have not printed yet:
//!
//! * [`Consoles::emit_pending`] in normal context (after [`Log::flush`](crate::Log::flush), e.g.
//!   from the code that logs, a kernel thread or the idle loop): acquires each console at
//!   [`Priority::Normal`] without waiting, and prints up to one main log's worth of records;
//! * [`Consoles::emit_emergency`]: the same at [`Priority::Emergency`], waiting (bounded) for a
//!   normal-priority owner to hand over — for warnings and oopses that must get out now;
//! * [`Consoles::panic_flush`]: on the crashing CPU after [`Log::drain_on_crash`](crate::Log::drain_on_crash),
//!   at [`Priority::Panic`], taking consoles over unsafely if their owner does not hand over.
//!
//! Each record is printed as `[seconds.micros] text\n` (the dmesg console format); records whose
//! level is not below [`Log::console_loglevel`](crate::Log::console_loglevel) and raw records
//! ([`flags::RAW`](crate::record::flags::RAW), e.g. defmt frames) are skipped (and counted). A record is only marked printed
//! once `write_atomic` returned `true`, so a record cut by a handover is printed again, whole, by
//! the next owner. An emitter call uses about 1.4 KiB of stack (one record buffer and one line) and
//! touches no lock.
//!
//! # Layout
//!
//! * `state`: the ownership word ([`ConsoleState`]), its priorities and how a context acquires it
//!   ([`Wait`], [`AcquireError`]), and the panic takeover;
//! * `context`: the owner's side ([`WriteContext`]): unsafe sections, handing over to a waiter,
//!   release;
//! * `emit`: the [`Console`] trait and the emitter ([`Consoles`], [`EmitReport`]);
//! * `builtin`: the consoles the crate ships ([`MemConsole`], and [`StderrConsole`] with `std`).
//!
//! Every ownership change is one compare-exchange on the word (`AcqRel`, failure `Acquire`), and an
//! owner checks the word with `Acquire` loads. **LMM(console:A)**: the compare-exchange that makes a
//! context the owner reads the word written by the previous owner's last compare-exchange
//! (**LMM(console:B)**: its release, its handover, or — for a direct takeover between records — its
//! `exit_unsafe`), so whatever the previous owner wrote to the device and to the emitter's cursor
//! inside its unsafe sections happens before the new owner's first access. The plain `Acquire`
//! loads of the word (**LMM(console:C)**) only feed decisions that a LMM(console:A)
//! compare-exchange confirms. The panic takeover is a plain `Release` store (**LMM(console:D)**):
//! there the previous owner is stopped, and the stop handshake (the crash check-in,
//! LMM(checkin:A/B)) orders its writes before the panic CPU's. The loom models in `tests/loom.rs`
//! check the normal/emergency handover and the panic takeover against this code.
//!
//! Where to call it: wherever the kernel can afford console output in normal context — after a
//! burst of log calls, from a console kthread, or as a hook right after the core's normal-context
//! flush. Calling it from inside a console driver (a driver that logs) is harmless: the console is
//! owned by this CPU already, so the nested call finds it busy and returns.
//!
//! ```
//! use nmilog::console::{Consoles, MemConsole};
//! use nmilog::{host::HostPlatform, Log};
//!
//! static LOG: Log<HostPlatform, 1, 1024, 4096> = Log::new(HostPlatform::new(1));
//! static MEM: MemConsole<4096> = MemConsole::new();
//! static CONSOLES: Consoles<1> = Consoles::new([&MEM]);
//!
//! HostPlatform::register_cpu(0);
//! LOG.log_fmt(nmilog::Level::Info, 0, format_args!("hello {}", "console")).unwrap();
//! CONSOLES.emit_pending(&LOG);
//! assert!(MEM.contents().ends_with("] hello console\n"));
//! ```

mod builtin;
mod context;
mod emit;
mod state;

pub use builtin::MemConsole;
#[cfg(feature = "std")]
pub use builtin::StderrConsole;
pub use context::WriteContext;
pub use emit::{Console, Consoles, EmitReport};
pub use state::{AcquireError, ConsoleState, Priority, StateView, Wait};
