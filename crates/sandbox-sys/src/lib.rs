//! Every raw syscall of sandbox-platform lives here, so that the rest of the workspace can
//! `forbid(unsafe_code)`. Each function is a thin, safe wrapper; each `unsafe` block says why it
//! is sound. Failures come back as `io::Error` from one helper, [`cvt`].
//!
//! Callers: `sandbox-runtime` (pre-exec setup of the bwrap process: hand it its control
//! pipes, drop to the sandbox user), `sandbox-executor` (PID 1 duties inside the sandbox:
//! reaping, seccomp, process-tree kills) and `sandbox-workspace` ([`fs`]: file operations
//! beneath a workspace that never follow a link; mounts of workspace volumes).

pub mod fs;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Turns a libc `-1 and errno` return into an `io::Error`.
fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Creates a pipe whose ends are close-on-exec and numbered 10 or above, so that
/// [`pre_exec_fds_and_drop`] can place them on low numbers without clobbering each other.
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as _)?;
    // SAFETY: pipe2 succeeded, so both are open fds that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high_dup(&r)?, high_dup(&w)?))
}

fn high_dup(fd: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd that we then own.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) } as _)?;
    // SAFETY: `new` was just created by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new as i32) })
}

/// Puts each source fd on its target number, between fork and exec. The copies lose
/// close-on-exec, so the exec'd program keeps them.
fn place_fds(fds: &[(OwnedFd, i32)]) -> io::Result<()> {
    for (src, target) in fds {
        // SAFETY: dup2 is async-signal-safe; sources are open (owned by the caller's closure)
        // and >= 10 (pipe_cloexec) while targets are < 10, so no placement overwrites a later
        // source.
        unsafe { cvt(libc::dup2(src.as_raw_fd(), *target) as _)? };
    }
    Ok(())
}

/// Arranges for a spawned process to receive `fds` (each source placed on its target number,
/// without close-on-exec), to drop to `uid`/`gid`, and to be killed when sandboxd dies, before
/// it execs. The sources must come from [`pipe_cloexec`] (numbered 10 or above) and targets
/// must be below 10.
///
/// bwrap's `--die-with-parent` alone leaves a gap: it asks for the parent-death signal only
/// once it runs, and a sandbox spawned while sandboxd was exiting outlived it. Here the signal
/// is set before the exec, and a parent already gone fails the spawn.
pub fn pre_exec_fds_and_drop(cmd: &mut Command, fds: Vec<(OwnedFd, i32)>, ids: Option<(u32, u32)>) {
    let parent = std::process::id() as libc::pid_t;
    let closure = move || -> io::Result<()> {
        place_fds(&fds)?;
        if let Some((uid, gid)) = ids {
            // SAFETY: plain syscalls with integer arguments (and a null list for setgroups);
            // all async-signal-safe. Order matters: groups and gid before uid, while still root.
            unsafe {
                cvt(libc::setgroups(0, std::ptr::null()) as _)?;
                cvt(libc::setresgid(gid, gid, gid) as _)?;
                cvt(libc::setresuid(uid, uid, uid) as _)?;
            }
        }
        // After the credential change, which clears the parent-death signal.
        // SAFETY: prctl and getppid with integer arguments; async-signal-safe.
        unsafe {
            cvt(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) as _)?;
            if libc::getppid() != parent {
                return Err(io::Error::other("sandboxd exited while starting the sandbox"));
            }
        }
        Ok(())
    };
    // SAFETY: the closure only performs async-signal-safe syscalls and touches no locks or
    // allocations.
    unsafe {
        cmd.pre_exec(closure);
    }
}

/// Arranges for a spawned process of user code to receive `fds` (as in
/// [`pre_exec_fds_and_drop`]), start a new session (so its whole tree can be found by session
/// id), be the first choice of the OOM killer rather than the executor, and dump no core.
pub fn pre_exec_user_process(cmd: &mut Command, fds: Vec<(OwnedFd, i32)>) {
    let closure = move || -> io::Result<()> {
        const PATH: &[u8] = b"/proc/self/oom_score_adj\0";
        place_fds(&fds)?;
        // SAFETY: setsid, open, write, close and setrlimit are async-signal-safe; PATH is a
        // static NUL-terminated string. Raising oom_score_adj needs no privilege.
        unsafe {
            cvt(libc::setsid() as _)?;
            if let Ok(fd) = cvt(libc::open(PATH.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC) as _) {
                libc::write(fd as i32, b"1000".as_ptr().cast(), 4);
                libc::close(fd as i32);
            }
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        }
        Ok(())
    };
    // SAFETY: the closure only performs async-signal-safe syscalls on owned or static data.
    unsafe {
        cmd.pre_exec(closure);
    }
}

/// `prctl(PR_SET_NO_NEW_PRIVS)`: no exec can gain privileges (setuid bits, file caps).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as _).map(drop)
}

/// `prctl(PR_SET_DUMPABLE, 0)`: makes `/proc/<pid>/mem`, `fd/` and ptrace of this process
/// inaccessible to other processes of the same uid (user code runs with the executor's uid).
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } as _).map(drop)
}

/// Installs a classic-BPF seccomp filter on the calling thread and (with TSYNC) all threads of
/// the process. Needs `no_new_privs` first. Children inherit it across fork and exec.
pub fn install_seccomp_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies the
    // filter before returning.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        )
    })
    .map(drop)
}

/// Closes every file descriptor from `first` up, so nothing the sandbox's launcher leaked is
/// reachable by user code.
pub fn close_fds_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with integer arguments; the caller owns no fds above `first`.
    cvt(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) }).map(drop)
}

/// Sends `signal` to `pid` (a negative pid names a process group).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill with integer arguments only.
    cvt(unsafe { libc::kill(pid, signal) } as _).map(drop)
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

/// Blocks until some child is a zombie and returns its pid **without reaping it**
/// (`waitid(P_ALL, WEXITED | WNOWAIT)`). Returns `Ok(None)` when there are no children.
pub fn wait_any_exited_peek() -> io::Result<Option<i32>> {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value and waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t.
        let ret = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(None),
                _ => return Err(err),
            }
        }
        // SAFETY: waitid succeeded with WEXITED, so the union holds the child fields.
        return Ok(Some(unsafe { info.si_pid() }));
    }
}

/// Reaps `pid` if it is a zombie; `Ok(None)` if it is not (yet) or is no longer our child.
pub fn reap(pid: i32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: `status` is a valid, writable int.
    let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ECHILD) { Ok(None) } else { Err(err) };
    }
    if ret == 0 {
        return Ok(None);
    }
    Ok(Some(if libc::WIFSIGNALED(status) {
        ExitStatus::Signaled(libc::WTERMSIG(status))
    } else {
        ExitStatus::Exited(libc::WEXITSTATUS(status))
    }))
}

/// Waits up to `timeout` until any of `fds` is readable (or hung up). Returns, per fd, whether
/// it is ready.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs that poll may write.
    let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// This process's real uid (to know whether we must drop privileges for sandboxes).
pub fn real_uid() -> u32 {
    // SAFETY: getuid cannot fail and takes no arguments.
    unsafe { libc::getuid() }
}

/// This process's real gid.
pub fn real_gid() -> u32 {
    // SAFETY: getgid cannot fail and takes no arguments.
    unsafe { libc::getgid() }
}

/// Looks up a user's uid and primary gid by name in the host's user database.
pub fn lookup_user(name: &str) -> io::Result<Option<(u32, u32)>> {
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; zeroed is a valid value that getpwnam_r overwrites.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` outlives it and is large enough for
    // ordinary entries (ERANGE is reported as an error otherwise).
    let ret = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    if result.is_null() {
        return Ok(None);
    }
    Ok(Some((pwd.pw_uid, pwd.pw_gid)))
}

/// Changes the owner of `path` (used for workspace directories as root).
pub fn chown(path: &std::path::Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_high_and_close_on_exec() {
        let (r, w) = pipe_cloexec().expect("pipe");
        for fd in [&r, &w] {
            assert!(fd.as_raw_fd() >= 10);
            // SAFETY: F_GETFD on an open fd.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
    }

    #[test]
    fn reap_of_unknown_pid_is_none() {
        assert!(reap(i32::MAX - 1).expect("waitpid").is_none());
    }

    #[test]
    fn root_user_exists() {
        assert_eq!(lookup_user("root").expect("lookup"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-xyz").expect("lookup"), None);
    }

    #[test]
    fn kill_with_signal_zero_probes_existence() {
        assert!(kill(std::process::id() as i32, 0).is_ok());
    }
}
