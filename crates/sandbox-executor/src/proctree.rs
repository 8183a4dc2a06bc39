//! Finding and killing the processes of one execution.
//!
//! Every execution starts in a session of its own, so its tree is "everything with that session
//! id". Code that calls `setsid` itself leaves the session, so a kill also takes every process
//! that did not exist when the execution started: executions in one sandbox are serialized by
//! sandboxd, so such processes can only be this execution's, with one exception. The session
//! kernel may start meanwhile. It leads a session of its own, which no other process can join,
//! so its session is spared.

use std::collections::HashSet;

/// Pids of all processes visible in this sandbox, except PID 1 (us).
pub fn list_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != 1 && pid != std::process::id() as i32)
        .collect()
}

/// The session id of `pid`, from `/proc/<pid>/stat`.
pub fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_session(&stat)
}

fn parse_session(stat: &str) -> Option<i32> {
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // state ppid pgrp session
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// SIGKILLs the execution whose session leader is `sid`, and every process not in `before`
/// except those of session `spared` (the kernel's; 0 for none).
pub fn kill_execution(sid: i32, before: &HashSet<i32>, spared: i32) {
    let _ = sandbox_sys::kill(-sid, libc::SIGKILL);
    // A few passes: a process may fork between our listing and our kill.
    for _ in 0..3 {
        let mut killed = 0;
        for pid in list_pids() {
            let session = session_of(pid);
            let ours = session == Some(sid) || (!before.contains(&pid) && (spared <= 0 || session != Some(spared)));
            if ours && sandbox_sys::kill(pid, libc::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        if killed == 0 {
            break;
        }
    }
}

/// SIGKILLs every process in the sandbox but the executor (on shutdown). Only where the
/// executor is its PID namespace's first process (bubblewrap's `--as-pid-1`), or the child of
/// it (a container's init, tini): there `kill(-1)` reaches the sandbox's processes alone.
/// Started anywhere else (by hand, or by a test outside a namespace) it would reach every
/// process its user may signal, the host's included.
pub fn kill_all_but_self() {
    if std::process::id() == 1 || std::os::unix::process::parent_id() == 1 {
        let _ = sandbox_sys::kill(-1, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_is_the_sixth_field_even_with_odd_names() {
        let stat = "42 (evil) name (x)) S 1 42 40 0 -1 4194560 0 0";
        assert_eq!(parse_session(stat), Some(40));
        assert_eq!(parse_session("garbage"), None);
    }

    #[test]
    fn own_session_is_readable() {
        let me = std::process::id() as i32;
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).expect("stat");
        assert!(parse_session(&stat).is_some());
    }
}
