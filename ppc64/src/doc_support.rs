//! Set-up shared by the doc examples (`std` only; hidden, not part of the API): a fake [`Machine`]
//! whose "NMI IPI" stops CPU 1 on the calling thread, and [`crash`], which runs
//! [`crash_shutdown`] on it and hands back what `kexec` was given. `park` and `kexec` must not
//! return: here they unwind, and the callers catch the unwinding.
//!
//! An example declares its own `static LOG` and `static STATE` and passes them in:
//!
//! ```
//! use nmilog::{host::HostPlatform, Log};
//! use nmilog_ppc64::doc_support::{crash, start, FakeMachine};
//! use nmilog_ppc64::{CrashState, RtasLock, ShutdownConfig};
//! static LOG: Log<HostPlatform, 2, 1024, 8192> = Log::new(HostPlatform::new(2));
//! static STATE: CrashState<2> = CrashState::new();
//! start(); // quiet unwinding; this thread is CPU 0
//! let (image, report) = crash(&FakeMachine::new(&LOG, &STATE), &RtasLock::new(), &ShutdownConfig::new());
//! assert_eq!(report.not_answered, 0);
//! assert!(STATE.checked_in(1));
//! assert_eq!(image.len(), report.image_len);
//! ```

use std::boxed::Box;
use std::fmt;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::vec::Vec;

use nmilog::host::HostPlatform;
use nmilog::Log;

use crate::crash_state::CrashState;
use crate::machine::{Machine, RtasArgs, SavedRegs};
use crate::report::ShutdownReport;
use crate::rtas::RtasLock;
use crate::shutdown::{crash_shutdown, on_nmi_stop, ShutdownConfig};

/// A test [`Machine`] over `log` and `state`: its NMI IPI runs CPU 1's NMI handler
/// ([`on_nmi_stop`]) right away on the calling thread, unless the machine is
/// [`deaf`](Self::deaf); 3 interrupt sources, each masked through "firmware" without fail; `park`
/// unwinds with `"parked"`, `kexec` with `(image, report)`: a `(Vec<u8>, ShutdownReport<CPUS>)`.
pub struct FakeMachine<
    'a,
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
> {
    log: &'a Log<HostPlatform, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    state: &'a CrashState<CPUS>,
    deaf: bool,
}

impl<
        'a,
        const CPUS: usize,
        const RING_WORDS: usize,
        const MAIN_WORDS: usize,
        const DEPTH: usize,
    > FakeMachine<'a, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    /// CPU 1 takes the NMI, checks in and parks.
    pub fn new(
        log: &'a Log<HostPlatform, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        state: &'a CrashState<CPUS>,
    ) -> Self {
        FakeMachine {
            log,
            state,
            deaf: false,
        }
    }

    /// CPU 1 never answers the NMI.
    pub fn deaf(
        log: &'a Log<HostPlatform, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
        state: &'a CrashState<CPUS>,
    ) -> Self {
        FakeMachine {
            deaf: true,
            ..Self::new(log, state)
        }
    }
}

impl<const CPUS: usize, const RING_WORDS: usize, const MAIN_WORDS: usize, const DEPTH: usize>
    fmt::Debug for FakeMachine<'_, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeMachine")
            .field("deaf", &self.deaf)
            .finish_non_exhaustive()
    }
}

impl<const CPUS: usize, const RING_WORDS: usize, const MAIN_WORDS: usize, const DEPTH: usize>
    Machine for FakeMachine<'_, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>
{
    fn nmi_ipi_all_but_self(&self, me: usize) {
        if self.deaf {
            return;
        }
        HostPlatform::register_cpu(1);
        let regs = SavedRegs {
            pc: 0x1000,
            sp: 0x2000,
            msr: 0,
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            on_nmi_stop(self.log, self, self.state, regs, format_args!("test"))
        }));
        assert!(r.is_err(), "CPU 1 parks");
        HostPlatform::register_cpu(me);
    }
    fn now_ns(&self) -> u64 {
        HostPlatform::clock_ns()
    }
    fn irq_source_count(&self) -> usize {
        3
    }
    fn firmware_mask_source(&self, _: usize, _: &RtasArgs) -> Result<(), i32> {
        Ok(())
    }
    fn mask_at_presenter(&self) {}
    fn park(&self) -> ! {
        panic_any("parked")
    }
    fn kexec<const N: usize>(&self, image: &[u8], report: &ShutdownReport<N>) -> ! {
        panic_any((image.to_vec(), *report))
    }
}

/// Runs the sequence ([`crash_shutdown`]) on the calling CPU against `machine`, with an image buffer
/// of [`nmilog::handover::max_image_size`], and returns what `kexec` was handed.
pub fn crash<
    const CPUS: usize,
    const RING_WORDS: usize,
    const MAIN_WORDS: usize,
    const DEPTH: usize,
>(
    machine: &FakeMachine<'_, CPUS, RING_WORDS, MAIN_WORDS, DEPTH>,
    rtas: &RtasLock,
    cfg: &ShutdownConfig,
) -> (Vec<u8>, ShutdownReport<CPUS>) {
    let mut image =
        std::vec![0u8; nmilog::handover::max_image_size(CPUS, DEPTH, RING_WORDS, MAIN_WORDS)];
    let r = catch_unwind(AssertUnwindSafe(|| {
        crash_shutdown(
            machine.log,
            machine,
            machine.state,
            rtas,
            &mut image,
            cfg,
            format_args!("test"),
        )
    }));
    let Err(payload) = r else {
        unreachable!("crash_shutdown never returns")
    };
    *payload
        .downcast::<(Vec<u8>, ShutdownReport<CPUS>)>()
        .expect("kexec reached")
}

/// The examples' prologue: quiets the panic messages of the unwinding `park` and `kexec`, and makes
/// the calling thread CPU 0.
pub fn start() {
    std::panic::set_hook(Box::new(|_| {}));
    HostPlatform::register_cpu(0);
}
