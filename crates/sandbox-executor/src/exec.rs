//! One execution: code run as a fresh process, with a wall-clock timeout and capped output.
//!
//! An execution is hermetic: when its main process ends (or the timeout passes), every process
//! it started is killed. So nothing it left behind can keep running, hold the output pipes
//! open, or keep the sandbox at its pid limit (a fork bomb's main process exits at once).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_protocol::{ExecRequest, ExecResult, Language, StreamName, WORKSPACE_DIR};
use sandbox_sys::ExitStatus;

use crate::outputs::{OutputLog, Sink};
use crate::proctree;
use crate::reaper::Children;

/// Private scratch space for code too large to pass as an argument.
pub const SCRATCH_DIR: &str = "/tmp/.sandbox";

/// Code up to this size is passed as `-c`/`-e`, so Python and Node resolve imports from the
/// workspace (the working directory) as users expect; larger code goes through a file
/// (one argument may not exceed 128 KiB on Linux).
const MAX_INLINE_CODE: usize = 100 * 1024;

/// After the tree is killed the pipes close at once; this only bounds a pathological case.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

pub const BASE_ENV: &[(&str, &str)] = &[
    ("PATH", sandbox_protocol::SANDBOX_PATH),
    ("HOME", "/tmp"),
    ("LANG", "C.UTF-8"),
    ("USER", "sandbox"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    // Output arrives as it is printed (streaming clients see it live), as in a terminal.
    ("PYTHONUNBUFFERED", "1"),
];

/// Builds the argv for `req`, writing the code to a file first when it is large.
fn argv(req: &ExecRequest) -> io::Result<Vec<String>> {
    let code = &req.code;
    if code.len() <= MAX_INLINE_CODE {
        return Ok(match req.language {
            Language::Python => vec!["python3".into(), "-c".into(), code.clone()],
            Language::Node => vec!["node".into(), "-e".into(), code.clone()],
            Language::Bash => vec!["bash".into(), "-c".into(), code.clone()],
        });
    }
    let ext = match req.language {
        Language::Python => "py",
        Language::Node => "js",
        Language::Bash => "sh",
    };
    let path = format!("{SCRATCH_DIR}/{}.{ext}", sanitize(&req.id));
    std::fs::write(&path, code)?;
    Ok(match req.language {
        // Same semantics as `-c`: '' (the workspace) first on sys.path, `__name__ == "__main__"`.
        Language::Python => {
            vec!["python3".into(), "-c".into(), format!("exec(compile(open({path:?}).read(), '<string>', 'exec'))")]
        }
        Language::Node => vec!["node".into(), path],
        Language::Bash => vec!["bash".into(), path],
    })
}

fn sanitize(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Runs one execution to its end and reports how it went. Never panics on user input.
pub fn run(req: &ExecRequest, children: &Children, sink: Option<Sink>, kernel_session: &dyn Fn() -> i32) -> ExecResult {
    let started = Instant::now();
    let mut result = ExecResult { id: req.id.clone(), ..Default::default() };

    let args = match argv(req) {
        Ok(a) => a,
        Err(e) => {
            result.spawn_error = Some(format!("cannot stage the code: {e}"));
            return result;
        }
    };
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..])
        .current_dir(WORKSPACE_DIR)
        .env_clear()
        .envs(BASE_ENV.iter().copied())
        .envs(&req.env)
        .stdin(if req.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    sandbox_sys::pre_exec_user_process(&mut cmd, Vec::new());

    let before: HashSet<i32> = proctree::list_pids().into_iter().collect();
    let (mut child, exit_rx) = match children.spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            result.spawn_error = Some(format!("cannot start {}: {e}", args[0]));
            return result;
        }
    };
    let sid = child.id() as i32;

    if let (Some(mut stdin), Some(data)) = (child.stdin.take(), req.stdin.clone()) {
        // The process may exit without reading; a broken pipe is then expected. With no thread
        // to spare (pid limit), the process gets an empty stdin rather than a hung executor.
        let _ = std::thread::Builder::new().spawn(move || {
            let _ = stdin.write_all(data.as_bytes());
        });
    }
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        proctree::kill_execution(sid, &before, kernel_session());
        result.spawn_error = Some("child has no output pipes".into());
        return result;
    };

    let deadline = started + Duration::from_millis(req.timeout_ms);
    let mut log = OutputLog::new(req.output_limit, req.outputs_limit);
    if let Some(sink) = sink {
        log = log.streaming(sink);
    }
    let (mut out_open, mut err_open) = (true, true);
    let mut status: Option<ExitStatus> = None;
    let mut exited_at: Option<Instant> = None;

    let mut tree_killed = false;
    loop {
        if status.is_none() {
            if let Ok(s) = exit_rx.try_recv() {
                status = Some(s);
                exited_at = Some(Instant::now());
            }
        }
        let now = Instant::now();
        if status.is_some() && !tree_killed {
            proctree::kill_execution(sid, &before, kernel_session());
            tree_killed = true;
        }
        if status.is_none() && now >= deadline && !result.timed_out {
            result.timed_out = true;
            proctree::kill_execution(sid, &before, kernel_session());
        }
        if !out_open && !err_open {
            if status.is_some() {
                break;
            }
            // Pipes closed: only the exit status is missing; block for it.
            let wait = if result.timed_out { Duration::from_secs(5) } else { deadline.saturating_duration_since(now) };
            match exit_rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(s) => {
                    status = Some(s);
                    exited_at = Some(Instant::now());
                }
                Err(_) if result.timed_out => break,
                Err(_) => {}
            }
            continue;
        }
        if exited_at.is_some_and(|at| now >= at + DRAIN_LIMIT) {
            break;
        }

        let wait = match exited_at {
            Some(at) => (at + DRAIN_LIMIT).saturating_duration_since(now),
            None if result.timed_out => Duration::from_millis(20),
            // Wake up now and then to notice an exit while a child holds the pipes.
            None => deadline.saturating_duration_since(now).min(Duration::from_millis(20)),
        };
        let mut fds = Vec::new();
        if out_open {
            fds.push(stdout.as_fd());
        }
        if err_open {
            fds.push(stderr.as_fd());
        }
        let ready = sandbox_sys::poll_readable(&fds, wait).unwrap_or_default();
        let mut i = 0;
        if out_open {
            if ready.get(i) == Some(&true) {
                out_open = read_into(&mut stdout, StreamName::Stdout, &mut log);
            }
            i += 1;
        }
        if err_open && ready.get(i) == Some(&true) {
            err_open = read_into(&mut stderr, StreamName::Stderr, &mut log);
        }
    }

    match status {
        Some(ExitStatus::Exited(code)) => result.exit_code = Some(code),
        Some(ExitStatus::Signaled(sig)) => result.signal = Some(sig),
        None => result.signal = Some(libc::SIGKILL),
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    log.finish_into(&mut result);
    result
}

/// Reads what a readable pipe has into the log; false once it is closed.
pub fn read_into(r: &mut impl Read, name: StreamName, log: &mut OutputLog) -> bool {
    let mut buf = [0u8; 64 * 1024];
    match r.read(&mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            log.bytes(name, &buf[..n]);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_code_is_inline_and_ids_are_sanitized() {
        let req = ExecRequest {
            id: "a/b".into(),
            language: Language::Bash,
            code: "echo hi".into(),
            stdin: None,
            env: Default::default(),
            timeout_ms: 1,
            output_limit: 1,
            outputs_limit: 1,
            kernel: false,
            context: None,
            forget_context: false,
            stream: false,
        };
        assert_eq!(argv(&req).expect("argv"), vec!["bash", "-c", "echo hi"]);
        assert_eq!(sanitize("a/b.."), "a_b__");
    }
}
