//! Running an example bounded in memory (`RLIMIT_AS`) and time, with what it used (Linux).

use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished run left.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Peak resident set size of the child, KiB (`wait4`'s `ru_maxrss`).
    pub max_rss_kib: i64,
}

/// Runs `cmd` with its address space limited to `as_limit` bytes (`RLIMIT_AS`, set in the child
/// before `exec`) and waits at most `timeout` for it (killed, and the test failed, past that).
/// `feed`, if given, runs on a thread with the child's standard input (otherwise standard input
/// is what `cmd` says).
pub fn run_limited(
    mut cmd: Command,
    as_limit: u64,
    timeout: Duration,
    feed: Option<Box<dyn FnOnce(ChildStdin) + Send>>,
) -> Run {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only setrlimit, which
    // is async-signal-safe; it touches no memory of the parent's other threads.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: as_limit as libc::rlim_t,
                rlim_max: as_limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if feed.is_some() {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    // Reaped by the `wait4` loop below (which also gives its resource usage), not by
    // `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let mut child: Child = cmd.spawn().expect("spawn the example");
    let feeder = feed.map(|f| {
        let stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || f(stdin))
    });
    // The output is read on threads, so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let (status, ru) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `ru` are valid for writes; `pid` is our own unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break (status, ru);
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = t0.elapsed();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Run {
        code,
        stdout: String::from_utf8_lossy(&out_t.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
        elapsed,
        max_rss_kib: ru.ru_maxrss,
    }
}
