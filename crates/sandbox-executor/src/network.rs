//! The executor reached over a network (the Kubernetes runtime: over the pod network, from
//! whichever sandboxd replica holds the session), not over stdin and stdout.
//!
//! It listens on `SANDBOX_EXECUTOR_LISTEN`. A client opens with a [`Hello`] frame holding the
//! sandbox's token; a wrong one, or none within [`HELLO_TIMEOUT`], closes the connection. The
//! executor then sends `Ready` and serves that client. A newer client that proves itself takes
//! over, and the older connection is shut: the replica that adopted a lapsed replica's
//! sessions fences it off. A client that goes away leaves the kernel, its variables and the
//! files for the next one; only `Shutdown` ends the sandbox.
//!
//! The token reaches the executor in its environment, which no process of the sandbox
//! inherits (each is started with a cleared one) or can read (`/proc/1/environ` of a process
//! that is not dumpable is root's).
//!
//! The same listener, proof and take-over serve the [`crate::relay`], which stands in front of
//! an executor under bubblewrap.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox_protocol::{Event, Hello, PROTOCOL_VERSION};

use crate::{proctree, send, spawn_or_inline, Ended, Executor};

/// How long a new connection has to prove itself.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves clients on `addr` until one says to shut down; returns the exit code.
pub(crate) fn serve(executor: &Executor, addr: &str, token: &str) -> i32 {
    let listener = match listen(addr, token) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let current = Arc::new(Current::default());
    let token: Arc<str> = Arc::from(token);
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let (executor, current, token) = (executor.clone(), Arc::clone(&current), Arc::clone(&token));
        spawn_or_inline(move || {
            if let Ended::Shutdown = serve_client(&executor, stream, &current, &token) {
                proctree::kill_all_but_self();
                std::process::exit(0);
            }
        });
    }
    0
}

/// Proves and serves one client.
fn serve_client(executor: &Executor, stream: TcpStream, current: &Current, token: &str) -> Ended {
    let Some(mut reader) = prove(stream, token) else { return Ended::Closed };
    let Ok(writer) = reader.try_clone() else { return Ended::Closed };
    // This client takes over: events go to it from now on, the first being `Ready`, and the
    // one before is cut off.
    let taken = current.take_over(&reader, || {
        *executor.out.lock().unwrap_or_else(|p| p.into_inner()) = Box::new(writer) as Box<dyn Write + Send>;
        send(&executor.out, &Event::Ready { version: PROTOCOL_VERSION })
    });
    if taken.is_err() {
        return Ended::Closed;
    }
    executor.serve(&mut reader)
}

/// Listens on `addr` for clients proven by `token`; `Err` is the exit code when it cannot.
pub(crate) fn listen(addr: &str, token: &str) -> Result<TcpListener, i32> {
    if token.is_empty() {
        eprintln!(
            "sandbox-executor: {} is set but {} is not: refusing to listen with no token",
            sandbox_protocol::LISTEN_ENV,
            sandbox_protocol::TOKEN_ENV
        );
        return Err(72);
    }
    match TcpListener::bind(addr) {
        Ok(l) => {
            eprintln!("sandbox-executor: listening on {addr}");
            Ok(l)
        }
        Err(e) => {
            eprintln!("sandbox-executor: cannot listen on {addr}: {e}");
            Err(73)
        }
    }
}

/// `stream` once it opened with a [`Hello`] holding `token` within [`HELLO_TIMEOUT`]; shut
/// and `None` otherwise.
pub(crate) fn prove(mut stream: TcpStream, token: &str) -> Option<TcpStream> {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(HELLO_TIMEOUT)).is_err() {
        return None;
    }
    let proven = match sandbox_protocol::read_frame::<_, Hello>(&mut stream) {
        Ok(Some(hello)) => same(hello.token.as_bytes(), token.as_bytes()),
        _ => false,
    };
    if !proven || stream.set_read_timeout(None).is_err() {
        let _ = stream.shutdown(Shutdown::Both);
        return None;
    }
    Some(stream)
}

/// The client being served: one at a time, the newest proven one.
#[derive(Default)]
pub(crate) struct Current(Mutex<Option<TcpStream>>);

impl Current {
    /// Makes `stream` the client, shutting the one before, and runs `greet` under the same
    /// lock: what it sends (`Ready`) is the first thing the new client gets, and no event
    /// goes to the old client once the new one is current.
    pub(crate) fn take_over(
        &self,
        stream: &TcpStream,
        greet: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let handle = stream.try_clone()?;
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = held.replace(handle) {
            let _ = before.shutdown(Shutdown::Both);
        }
        greet()
    }

    /// Writes `frame` whole to the current client, if there is one; a client that cannot take
    /// it is shut (the next one to prove itself takes over).
    pub(crate) fn send(&self, frame: &[u8]) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = held.as_mut() {
            if client.write_all(frame).and_then(|()| client.flush()).is_err() {
                let _ = client.shutdown(Shutdown::Both);
                *held = None;
            }
        }
    }
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
