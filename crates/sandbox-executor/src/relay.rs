//! The relay: the executor's front door when the executor runs under bubblewrap inside a pod
//! (the Kubernetes runtime's second layer).
//!
//! bubblewrap gives the executor a network namespace of its own with nothing in it, so the
//! executor cannot listen on the pod's network. The relay, outside bubblewrap, does. It starts
//! the command it is given (bubblewrap, and the executor in it, speaking over stdin and
//! stdout), and holds the executor's pipes for as long as the sandbox lives. It passes whole
//! frames between them and the current client, proven and taken over as the executor's own
//! listener does ([`crate::network`]):
//!
//! - A client that goes away leaves the pipes open, and the next proven client finds the
//!   kernel as it was. A frame cut off mid-way never reaches the executor.
//! - The token stays with the relay. The command starts without it in its environment, and
//!   bubblewrap clears the rest. User code runs in namespaces of its own and cannot see the
//!   relay, which is not dumpable either.
//!
//! The relay ends when the executor does (a `Shutdown`, passed on like any other request),
//! with its exit code.

use std::io::Write;
use std::net::TcpStream;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::network::{self, Current};
use crate::spawn_or_inline;

/// Runs `command` (its executor speaking over stdio) behind the relay; returns the exit code.
pub(crate) fn run(command: &[String]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("sandbox-executor relay: no command to run");
        return 64;
    };
    // Not the executor's seccomp filter: bubblewrap needs the namespaces it refuses.
    let hardened = sandbox_sys::set_not_dumpable()
        .and_then(|()| sandbox_sys::set_no_new_privs())
        .and_then(|()| sandbox_sys::close_fds_from(3));
    if let Err(e) = hardened {
        eprintln!("sandbox-executor relay: cannot harden the relay: {e}");
        return 70;
    }
    let Ok(addr) = std::env::var(sandbox_protocol::LISTEN_ENV) else {
        eprintln!("sandbox-executor relay: {} is not set", sandbox_protocol::LISTEN_ENV);
        return 72;
    };
    let token = std::env::var(sandbox_protocol::TOKEN_ENV).unwrap_or_default();
    // Listening from the start: a client that comes before the executor is ready waits for
    // its `Ready` in the backlog.
    let listener = match network::listen(&addr, &token) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let spawned = Command::new(program)
        .args(args)
        .env_remove(sandbox_protocol::LISTEN_ENV)
        .env_remove(sandbox_protocol::TOKEN_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandbox-executor relay: cannot start {program}: {e}");
            return 71;
        }
    };
    let (Some(stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else { return 71 };
    let exit_code = |child: &mut std::process::Child| {
        use std::os::unix::process::ExitStatusExt;
        match child.wait() {
            Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            Err(_) => 1,
        }
    };
    // Clients are served once the executor is ready to serve them: its `Ready` is what each
    // one gets first. A command that ends before that ends the relay (its words are on
    // stderr, which the pod's termination message shows).
    let ready: Arc<[u8]> = match sandbox_protocol::read_raw_frame(&mut stdout) {
        Ok(Some(frame)) => Arc::from(frame),
        _ => return exit_code(&mut child),
    };
    let current = Arc::new(Current::default());
    let stdin = Arc::new(Mutex::new(stdin));
    {
        let (current, stdin, token) = (Arc::clone(&current), Arc::clone(&stdin), Arc::<str>::from(token));
        let accepting = std::thread::Builder::new().name("accept".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let (current, stdin, token, ready) =
                    (Arc::clone(&current), Arc::clone(&stdin), Arc::clone(&token), Arc::clone(&ready));
                spawn_or_inline(move || pass_requests(stream, &current, &token, &ready, &stdin));
            }
        });
        if let Err(e) = accepting {
            eprintln!("sandbox-executor relay: cannot accept clients: {e}");
            let _ = child.kill();
            return 71;
        }
    }
    // The executor's events, each whole, to whichever client is current.
    while let Ok(Some(frame)) = sandbox_protocol::read_raw_frame(&mut stdout) {
        current.send(&frame);
    }
    exit_code(&mut child)
}

/// Proves one client, makes it current, and passes its requests to the executor, each frame
/// whole, until it goes away or a newer client cuts it off.
fn pass_requests(stream: TcpStream, current: &Current, token: &str, ready: &[u8], stdin: &Mutex<ChildStdin>) {
    let Some(mut reader) = network::prove(stream, token) else { return };
    let Ok(mut greeted) = reader.try_clone() else { return };
    if current.take_over(&reader, || greeted.write_all(ready).and_then(|()| greeted.flush())).is_err() {
        return;
    }
    while let Ok(Some(frame)) = sandbox_protocol::read_raw_frame(&mut reader) {
        let mut executor = stdin.lock().unwrap_or_else(|p| p.into_inner());
        if executor.write_all(&frame).and_then(|()| executor.flush()).is_err() {
            return; // the executor is gone: the relay ends with it
        }
    }
}
