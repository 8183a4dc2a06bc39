//! The session kernel: one long-lived Python process per sandbox that runs cells in one
//! namespace (`kernel.py`, embedded in this binary and written into the sandbox at start).
//!
//! The executor talks to it over two pipes of its own (requests on the kernel's fd 3, events as
//! JSON lines from its fd 4), so user code keeps stdout and stderr: what it or its children
//! write to fds 1 and 2 is read here too and becomes stream output. A reader thread turns all
//! three into one channel of [`Msg`]. A cell past its timeout gets SIGINT (KeyboardInterrupt,
//! state kept), and the kernel is killed if it does not stop within [`INTERRUPT_GRACE`]. A
//! kernel that dies is replaced in the background; the cell it was running says so.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sandbox_protocol::{ExecRequest, ExecResult, Output, StreamName, WORKSPACE_DIR};

use crate::exec::{BASE_ENV, SCRATCH_DIR};
use crate::outputs::{OutputLog, Sink};
use crate::proctree;
use crate::reaper::Children;
use sandbox_sys::ExitStatus;

pub const KERNEL_SOURCE: &str = include_str!("kernel.py");

/// Starting IPython (and matplotlib's first font scan) can take seconds on a cold cache.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest line of kernel events kept: the kernel sends nothing over the outputs limit,
/// but user code shares its process and can write anything to fd 4.
const MAX_EVENT_LINE: usize = sandbox_protocol::MAX_OUTPUTS_LIMIT + (1 << 20);
/// How long an interrupted cell has to stop before the kernel is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// What the reader thread reports.
enum Msg {
    Event(serde_json::Value),
    /// A line of events over [`MAX_EVENT_LINE`] was dropped (user code can write to fd 4).
    Oversized,
    Bytes(StreamName, Vec<u8>),
    Closed,
}

struct Proc {
    pid: i32,
    requests: std::fs::File,
    rx: Receiver<Msg>,
    /// The kernel's exit status, from the reaper, once it has exited.
    exit: Receiver<ExitStatus>,
    _child: Child,
}

/// Why a kernel ended, in words for the session's record.
fn death_reason(status: Option<ExitStatus>) -> String {
    match status {
        Some(ExitStatus::Signaled(sig)) if sig == libc::SIGKILL => {
            "killed by signal 9 (SIGKILL: the memory limit, or a kill from inside)".into()
        }
        Some(ExitStatus::Signaled(sig)) => format!("killed by signal {sig}"),
        Some(ExitStatus::Exited(code)) => format!("exited with code {code}"),
        None => "ended for an unknown reason".into(),
    }
}

pub struct Kernel {
    slot: Mutex<Option<Proc>>,
    /// The running kernel's pid (0 if none), readable without waiting for a cell to finish.
    pid: AtomicI32,
    env: Mutex<BTreeMap<String, String>>,
    children: Arc<Children>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Kernel {
    pub fn new(children: Arc<Children>) -> Kernel {
        Kernel { slot: Mutex::new(None), pid: AtomicI32::new(0), env: Mutex::default(), children }
    }

    /// Starts the kernel with `env` unless one is running.
    /// The environment kernels start with from now on (the session's).
    pub fn set_env(&self, env: BTreeMap<String, String>) {
        *lock(&self.env) = env;
    }

    pub fn ensure_started(&self) -> Result<(), String> {
        let mut slot = lock(&self.slot);
        if slot.is_none() {
            *slot = Some(self.start()?);
        }
        Ok(())
    }

    /// The kernel's pid, which is also its session id (0 when there is none).
    pub fn session(&self) -> i32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// SIGINT to the kernel: the running cell raises KeyboardInterrupt.
    pub fn interrupt(&self) {
        let pid = self.pid.load(Ordering::SeqCst);
        if pid > 0 {
            let _ = sandbox_sys::kill(pid, libc::SIGINT);
        }
    }

    /// Kills the kernel (a running cell ends as kernel_died) and starts a fresh one.
    pub fn restart(&self) -> Result<(), String> {
        self.kill();
        let mut slot = lock(&self.slot);
        *slot = None;
        *slot = Some(self.start()?);
        Ok(())
    }

    /// Kills the kernel and everything it started, and waits until they are gone: a new kernel
    /// started sooner could find the sandbox still at its pid limit (after a fork bomb).
    fn kill(&self) {
        let pid = self.pid.swap(0, Ordering::SeqCst);
        if pid <= 0 {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            // The kernel leads its own session: its children are in it too.
            let _ = sandbox_sys::kill(-pid, libc::SIGKILL);
            let left = proctree::list_pids().into_iter().filter(|p| proctree::session_of(*p) == Some(pid)).count();
            if left == 0 || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn start(&self) -> Result<Proc, String> {
        std::fs::create_dir_all(SCRATCH_DIR).map_err(|e| format!("create {SCRATCH_DIR}: {e}"))?;
        let path = format!("{SCRATCH_DIR}/kernel.py");
        std::fs::write(&path, KERNEL_SOURCE).map_err(|e| format!("write {path}: {e}"))?;
        let (req_r, req_w) = sandbox_sys::pipe_cloexec().map_err(|e| format!("pipe: {e}"))?;
        let (ev_r, ev_w) = sandbox_sys::pipe_cloexec().map_err(|e| format!("pipe: {e}"))?;
        let mut cmd = Command::new("python3");
        cmd.arg(&path)
            .current_dir(WORKSPACE_DIR)
            .env_clear()
            .envs(BASE_ENV.iter().copied())
            .env("MPLBACKEND", "module://matplotlib_inline.backend_inline")
            // Their config and caches stay out of the user's /tmp.
            .env("MPLCONFIGDIR", format!("{SCRATCH_DIR}/matplotlib"))
            .env("IPYTHONDIR", format!("{SCRATCH_DIR}/ipython"))
            .env("XDG_CACHE_HOME", format!("{SCRATCH_DIR}/cache"))
            .envs(lock(&self.env).iter())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        sandbox_sys::pre_exec_user_process(&mut cmd, vec![(req_r, 3), (ev_w, 4)]);
        let spawned = self.children.spawn(&mut cmd);
        // Closes our copies of the kernel's ends, so its exit shows as end of stream.
        drop(cmd);
        let (mut child, exit) = spawned.map_err(|e| format!("cannot start the kernel: {e}"))?;
        let pid = child.id() as i32;
        // Known at once (not only when ready), so a one-shot execution ending meanwhile spares it.
        self.pid.store(pid, Ordering::SeqCst);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err("kernel has no output pipes".into());
        };
        let (tx, rx) = mpsc::channel();
        let events = std::fs::File::from(ev_r);
        if let Err(e) = std::thread::Builder::new().spawn(move || read_kernel(events, stdout, stderr, tx)) {
            self.pid.store(0, Ordering::SeqCst);
            let _ = sandbox_sys::kill(-pid, libc::SIGKILL);
            return Err(format!("cannot start the kernel's reader: {e}"));
        }
        let proc = Proc { pid, requests: std::fs::File::from(req_w), rx, exit, _child: child };
        // What it writes before it is ready (warnings, or why it fails) is kept for the error.
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut said = Vec::new();
        let why = loop {
            match proc.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Msg::Event(v)) if v["type"] == "ready" => return Ok(proc),
                Ok(Msg::Bytes(_, bytes)) => said.extend_from_slice(&bytes),
                Ok(Msg::Event(_) | Msg::Oversized) => {}
                Ok(Msg::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => break "it exited",
                Err(mpsc::RecvTimeoutError::Timeout) => break "it was not ready in time",
            }
        };
        self.pid.store(0, Ordering::SeqCst);
        let _ = sandbox_sys::kill(-pid, libc::SIGKILL);
        Err(format!("the kernel did not start: {why}{}", last_words(&said)))
    }

    /// Kills `proc`'s kernel and everything it started, and says why it ended (its exit
    /// status, from the reaper).
    fn retire(&self, proc: Option<Proc>) -> String {
        let exit = proc.map(|p| p.exit);
        self.kill();
        death_reason(exit.and_then(|rx| rx.recv_timeout(Duration::from_millis(500)).ok()))
    }

    /// Runs one cell. Never panics on user input; a dead kernel is reported, not fatal.
    pub fn exec(self: &Arc<Self>, req: &ExecRequest, sink: Option<Sink>) -> ExecResult {
        let started = Instant::now();
        let mut result = ExecResult { id: req.id.clone(), ..Default::default() };
        let mut log = OutputLog::new(req.output_limit, req.outputs_limit);
        if let Some(sink) = sink {
            log = log.streaming(sink);
        }
        let mut slot = lock(&self.slot);
        let line =
            serde_json::json!({"type": "execute", "id": req.id, "code": req.code, "outputs_limit": req.outputs_limit,
                "context": req.context, "forget_context": req.forget_context})
            .to_string()
                + "\n";
        let deadline = started + Duration::from_millis(req.timeout_ms);
        let mut interrupted_at: Option<Instant> = None;
        let mut status = None;
        let mut died = false;
        // Twice at most: a kernel found dead before it took the cell (it says "started" when
        // it does) is replaced and the cell sent again; the cell never ran, so this is no rerun.
        // That is also how a kernel that died between cells (killed from inside, OOM-killed
        // while a thread of it ran) is found: this cell is not its victim.
        for attempt in 0..2 {
            if slot.is_none() {
                *lock(&self.env) = req.env.clone();
                match self.start() {
                    Ok(p) => *slot = Some(p),
                    Err(e) => {
                        result.spawn_error = Some(e);
                        return result;
                    }
                }
            }
            let Some(proc) = slot.as_mut() else { return result };
            died = proc.requests.write_all(line.as_bytes()).is_err();
            let mut taken = false;
            while !died && status.is_none() {
                let until = interrupted_at.map_or(deadline, |at| at + INTERRUPT_GRACE);
                match proc.rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(Msg::Event(v)) if v["id"] == req.id.as_str() => match v["type"].as_str() {
                        Some("started") => taken = true,
                        Some("stream") => {
                            let name = if v["name"] == "stderr" { StreamName::Stderr } else { StreamName::Stdout };
                            log.text(name, v["text"].as_str().unwrap_or(""));
                        }
                        Some("done") => status = Some(v["status"] == "ok"),
                        Some("truncated") => log.mark_truncated(),
                        _ => {
                            if let Ok(output) = serde_json::from_value::<Output>(v) {
                                log.push(output);
                            }
                        }
                    },
                    // Events of an earlier, interrupted cell.
                    Ok(Msg::Event(_)) => {}
                    Ok(Msg::Oversized) => log.mark_truncated(),
                    Ok(Msg::Bytes(name, bytes)) => log.bytes(name, &bytes),
                    Ok(Msg::Closed) | Err(RecvTimeoutError::Disconnected) => died = true,
                    Err(RecvTimeoutError::Timeout) if interrupted_at.is_none() => {
                        result.timed_out = true;
                        let _ = sandbox_sys::kill(proc.pid, libc::SIGINT);
                        interrupted_at = Some(Instant::now());
                    }
                    Err(RecvTimeoutError::Timeout) => died = true,
                }
            }
            if !(died && !taken && attempt == 0 && interrupted_at.is_none()) {
                break;
            }
            result.kernel_replaced = Some(self.retire(slot.take()));
        }
        let Some(proc) = slot.as_mut() else { return result };
        // Output that children wrote straight to fd 1/2 just before the cell ended.
        while let Ok(Msg::Bytes(name, bytes)) = proc.rx.try_recv() {
            log.bytes(name, &bytes);
        }
        if died {
            let proc = slot.take();
            drop(slot);
            result.kernel_died = true;
            result.kernel_death = Some(self.retire(proc));
            // Replace it now, so the next cell does not wait for IPython to start. If no thread
            // can be made (pid limit), the next cell starts it instead.
            let kernel = Arc::clone(self);
            let _ = std::thread::Builder::new().spawn(move || {
                let _ = kernel.ensure_started();
            });
        } else {
            result.exit_code = Some(if status == Some(true) { 0 } else { 1 });
        }
        result.duration_ms = started.elapsed().as_millis() as u64;
        log.finish_into(&mut result);
        result
    }
}

/// Forwards the kernel's event lines and its raw stdout/stderr until the event pipe closes.
/// The end of what a failed kernel wrote, as `: <text>` (nothing if it wrote nothing).
fn last_words(said: &[u8]) -> String {
    const KEEP: usize = 600;
    let cut = said.len().saturating_sub(KEEP);
    let text = String::from_utf8_lossy(&said[cut..]);
    // Cut at a line's start, not inside a word.
    let text = match text.find('\n') {
        Some(end) if cut > 0 => &text[end + 1..],
        _ => &text[..],
    };
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

fn read_kernel(
    mut events: std::fs::File,
    mut stdout: std::process::ChildStdout,
    mut stderr: std::process::ChildStderr,
    tx: Sender<Msg>,
) {
    let mut line = Vec::new();
    let mut skipping = false;
    let (mut events_open, mut out_open, mut err_open) = (true, true, true);
    // Once the events end (the kernel exited), what is left in its pipes is read for a moment
    // more: it is often why it exited. Its children may hold them open, so not for long.
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = Vec::new();
        if events_open {
            fds.push(events.as_fd());
        }
        if out_open {
            fds.push(stdout.as_fd());
        }
        if err_open {
            fds.push(stderr.as_fd());
        }
        let wait = match drain_until {
            None => Duration::from_secs(3600),
            Some(until) => until.saturating_duration_since(Instant::now()),
        };
        if fds.is_empty() || wait.is_zero() {
            break;
        }
        let Ok(ready) = sandbox_sys::poll_readable(&fds, wait) else { break };
        // The events' fd, when polled, is the first: the streams' indices follow it.
        let events_polled = events_open;
        if events_polled && ready.first() == Some(&true) {
            match events.read(&mut buf) {
                Ok(0) | Err(_) => {
                    events_open = false;
                    drain_until = Some(Instant::now() + Duration::from_millis(200));
                }
                Ok(n) => {
                    let mut chunk = &buf[..n];
                    if skipping {
                        // The rest of an oversized line: drop up to its end.
                        match chunk.iter().position(|&b| b == b'\n') {
                            Some(end) => {
                                chunk = &chunk[end + 1..];
                                skipping = false;
                            }
                            None => chunk = &[],
                        }
                    }
                    // Look for line ends in the new bytes only: a long line arrives in many
                    // reads, and scanning it whole after each one was quadratic.
                    while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
                        line.extend_from_slice(&chunk[..end]);
                        chunk = &chunk[end + 1..];
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                            if tx.send(Msg::Event(v)).is_err() {
                                return;
                            }
                        }
                        line.clear();
                    }
                    line.extend_from_slice(chunk);
                    if line.len() > MAX_EVENT_LINE {
                        line = Vec::new();
                        skipping = true;
                        if tx.send(Msg::Oversized).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let mut i = usize::from(events_polled);
        for (open, name) in [(&mut out_open, StreamName::Stdout), (&mut err_open, StreamName::Stderr)] {
            if !*open {
                continue;
            }
            if ready.get(i) == Some(&true) {
                let n = match name {
                    StreamName::Stdout => stdout.read(&mut buf),
                    StreamName::Stderr => stderr.read(&mut buf),
                };
                match n {
                    Ok(0) | Err(_) => *open = false,
                    Ok(n) => {
                        let _ = tx.send(Msg::Bytes(name, buf[..n].to_vec()));
                    }
                }
            }
            i += 1;
        }
    }
    let _ = tx.send(Msg::Closed);
}
