//! Thin wrappers over the few POSIX calls the simulation makes. All of them are async-signal-safe
//! system calls (no glibc lock is taken): they may run in signal handlers and on the crash path.

use std::ffi::CStr;

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The process id.
pub(crate) fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// Sends `sig` to thread `tid` of process `pid` (the raw syscall: no glibc lock, unlike
/// `pthread_kill`). Returns false if the thread is gone.
pub(crate) fn tgkill(pid: i32, tid: i32, sig: i32) -> bool {
    if tid <= 0 {
        return false;
    }
    // SAFETY: tgkill only sends a signal; an invalid tid makes it fail with ESRCH.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) == 0 }
}

fn set_of(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t we own.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in sigs {
        // SAFETY: as above; `s` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Blocks `sigs` on the calling thread.
pub(crate) fn block(sigs: &[i32]) {
    let set = set_of(sigs);
    // SAFETY: pthread_sigmask with a valid set and a null old-set pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut()) };
}

/// Blocks `sig` on the calling thread and says whether it was blocked already
/// (`local_irq_save()`).
pub(crate) fn block_save(sig: i32) -> bool {
    let set = set_of(&[sig]);
    // SAFETY: sigset_t is plain data; pthread_sigmask fills it.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: valid set and old-set pointers.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    // SAFETY: `old` was initialised by pthread_sigmask.
    unsafe { libc::sigismember(&old, sig) == 1 }
}

/// Unblocks `sigs` on the calling thread.
pub(crate) fn unblock(sigs: &[i32]) {
    let set = set_of(sigs);
    // SAFETY: as in `block`.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut()) };
}

/// Blocks every signal on the calling thread (interrupts hard-off).
pub(crate) fn block_all() {
    // SAFETY: sigset_t is plain data; sigfillset initialises it.
    let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t we own.
    unsafe { libc::sigfillset(&mut set) };
    // SAFETY: pthread_sigmask with a valid set and a null old-set pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut()) };
}

/// The handler type installed with SA_SIGINFO.
pub(crate) type Handler = extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void);

/// Installs `handler` for `sig`; `mask_all` blocks every other signal while it runs (the NMI),
/// otherwise only `sig` itself is blocked (a maskable interrupt: the NMI can still land in it).
pub(crate) fn install(sig: i32, handler: Handler, mask_all: bool) {
    // SAFETY: sigaction is plain data; every field we rely on is set below.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    if mask_all {
        // SAFETY: sa.sa_mask is a valid sigset_t inside our struct.
        unsafe { libc::sigfillset(&mut sa.sa_mask) };
    } else {
        // SAFETY: as above.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    }
    // SAFETY: `sa` is fully initialised and the handler is a valid extern "C" fn for SA_SIGINFO.
    unsafe { libc::sigaction(sig, &sa, core::ptr::null_mut()) };
}

/// Sleeps `us` microseconds (interruptible by signals).
pub(crate) fn usleep(us: u64) {
    // SAFETY: usleep has no memory-safety preconditions.
    unsafe { libc::usleep(us.min(999_999) as libc::c_uint) };
}

/// Gives the (simulated) CPU away for a moment.
pub(crate) fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}

/// Waits for a signal forever; with every signal blocked, forever means forever.
pub(crate) fn park_forever() -> ! {
    block_all();
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// CLOCK_MONOTONIC in nanoseconds (comparable across exec).
pub(crate) fn mono_ns() -> u64 {
    // SAFETY: timespec is plain data.
    let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
    // SAFETY: clock_gettime writes into the valid `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes `bytes` to file descriptor `fd` with the raw syscall (no stdio lock).
pub(crate) fn write_fd(fd: i32, bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: the pointer and length describe the live slice `bytes[off..]`.
        let n = unsafe {
            libc::write(
                fd,
                bytes[off..].as_ptr() as *const libc::c_void,
                bytes.len() - off,
            )
        };
        if n <= 0 {
            return;
        }
        off += n as usize;
    }
}

/// Terminates the process at once with `code` (no atexit handlers, no stdio flush: other threads
/// may be frozen holding the stdio lock).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// The interrupted PC and SP from a signal handler's `ucontext_t` (x86-64 and aarch64 Linux; zero
/// elsewhere).
pub(crate) fn regs_from_ucontext(uc: *mut libc::c_void) -> (usize, usize) {
    if uc.is_null() {
        return (0, 0);
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler; we only read it.
        let uc = unsafe { &*(uc as *const libc::ucontext_t) };
        (
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize,
            uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize,
        )
    }
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    {
        // SAFETY: as above.
        let uc = unsafe { &*(uc as *const libc::ucontext_t) };
        (uc.uc_mcontext.pc as usize, uc.uc_mcontext.sp as usize)
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        (0, 0)
    }
}

/// Creates a memfd (without close-on-exec, so it survives `execv`) of `len` bytes and maps it
/// shared. Falls back to an unlinked temporary file. Returns `(fd, base)`.
pub(crate) fn shared_region(len: usize) -> Result<(i32, *mut u8), String> {
    let name: &CStr = c"nmilog-handover";
    // SAFETY: memfd_create with a valid NUL-terminated name and no flags.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        let path = std::env::temp_dir().join(format!("nmilog-handover-{}", getpid()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("handover region: {e}"))?;
        let _ = std::fs::remove_file(&path);
        fd = std::os::fd::IntoRawFd::into_raw_fd(f);
        // std opens files close-on-exec; this one must survive the exec.
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    // SAFETY: fd is an open file descriptor we own.
    if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
        return Err("handover region: ftruncate failed".into());
    }
    // SAFETY: mapping `len` bytes of our own fd, shared, at an address the kernel chooses.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err("handover region: mmap failed".into());
    }
    Ok((fd, p as *mut u8))
}

/// Maps the whole file `fd` read-only (shared). Returns `(base, len)`; the mapping is never unmapped.
pub(crate) fn map_fd_readonly(fd: i32) -> Result<(*const u8, usize), String> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer; fstat fails cleanly on a bad descriptor.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(format!("fstat of descriptor {fd} failed"));
    }
    let len = st.st_size as usize;
    if len == 0 {
        return Err(format!("descriptor {fd} is empty"));
    }
    // SAFETY: mapping `len` bytes of an open descriptor, read-only, at an address the kernel
    // chooses.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap of descriptor {fd} failed"));
    }
    Ok((p as *const u8, len))
}
