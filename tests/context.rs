//! Context-tracking edge cases (found in review): nesting deeper than `DEPTH`, and a `Display` impl
//! that panics inside a log call.

use nmilog::host::HostPlatform;
use nmilog::{AppendError, ContextKind, Level, Log};

static LOG: Log<HostPlatform, 2, 1024, 4096, 2> = Log::new(HostPlatform::new(2));

#[test]
fn nesting_beyond_depth_is_refused_and_never_flushes() {
    HostPlatform::register_cpu(0);
    let _irq = LOG.enter(ContextKind::Irq); // depth 1
    let _nmi = LOG.enter(ContextKind::Nmi); // depth 2 == DEPTH: not tracked
    assert_eq!(
        LOG.append(Level::Emerg, 0, 0, b"x"),
        Err(AppendError::TooDeep)
    );
    // Untracked nesting is treated as NMI context: no flush ownership, no main-log write.
    assert!(
        LOG.flush().is_none(),
        "flush ran from an untracked nested context"
    );
    assert_eq!(LOG.cpu(0).unwrap().overflow_dropped(), 1);
}

static LOG2: Log<HostPlatform, 2, 1024, 4096> = Log::new(HostPlatform::new(2));

struct Boom;
impl core::fmt::Display for Boom {
    fn fmt(&self, _: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        panic!("bug in a Display impl")
    }
}

#[test]
fn a_panicking_display_does_not_leave_the_recursion_guard_set() {
    std::thread::spawn(|| {
        HostPlatform::register_cpu(1);
        let r = std::panic::catch_unwind(|| LOG2.log_fmt(Level::Info, 0, format_args!("{}", Boom)));
        assert!(r.is_err());
        // The panic report itself must still be logged.
        assert!(LOG2.append_raw(Level::Emerg, 0, 0, b"panic: ...").is_ok());
    })
    .join()
    .unwrap();
}
