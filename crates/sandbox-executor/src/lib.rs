//! The agent that runs as PID 1 inside every sandbox.
//!
//! It reads [`sandbox_protocol::Request`]s from stdin and writes [`sandbox_protocol::Event`]s to
//! stdout. Before anything else it raises the second isolation layer that every process it
//! starts inherits: not dumpable (so user code, which shares its uid, cannot read its memory or
//! fds), `no_new_privs`, and a seccomp filter ([`seccomp`]). As PID 1 it also reaps every
//! orphan ([`reaper`]), like tini.

pub mod exec;
pub mod proctree;
pub mod reaper;
pub mod seccomp;

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use sandbox_protocol::{Event, Request, PROTOCOL_VERSION};

/// Runs the executor until its input closes or it is told to shut down; returns the exit code.
pub fn run() -> i32 {
    if let Err(e) = harden() {
        eprintln!("sandbox-executor: cannot harden the sandbox: {e}");
        return 70;
    }
    let _ = std::fs::create_dir_all(exec::SCRATCH_DIR);

    let out: Arc<Mutex<io::Stdout>> = Arc::new(Mutex::new(io::stdout()));
    let children = Arc::new(reaper::Children::default());
    {
        let children = Arc::clone(&children);
        std::thread::spawn(move || children.reap_forever());
    }
    if send(&out, &Event::Ready { version: PROTOCOL_VERSION }).is_err() {
        return 0;
    }

    let mut input = io::stdin().lock();
    loop {
        match sandbox_protocol::read_frame::<_, Request>(&mut input) {
            Ok(Some(Request::Exec(req))) => {
                let out = Arc::clone(&out);
                let children = Arc::clone(&children);
                std::thread::spawn(move || {
                    let result = exec::run(&req, &children);
                    if let Err(e) = send(&out, &Event::ExecDone(result)) {
                        eprintln!("sandbox-executor: cannot report execution {}: {e}", req.id);
                    }
                });
            }
            Ok(Some(Request::Shutdown)) | Ok(None) => break,
            Err(e) => {
                eprintln!("sandbox-executor: bad request stream: {e}");
                break;
            }
        }
    }
    proctree::kill_all_but_self();
    0
}

fn harden() -> io::Result<()> {
    sandbox_sys::set_not_dumpable()?;
    sandbox_sys::set_no_new_privs()?;
    sandbox_sys::install_seccomp_filter(&seccomp::program())?;
    // Whatever the launcher leaked past stdio must not reach user code.
    sandbox_sys::close_fds_from(3)
}

fn send(out: &Mutex<io::Stdout>, event: &Event) -> io::Result<()> {
    let frame = sandbox_protocol::encode(event)?;
    let mut guard = out.lock().map_err(|_| io::Error::other("stdout lock poisoned"))?;
    guard.write_all(&frame)?;
    guard.flush()
}
