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
    if token.is_empty() {
        eprintln!(
            "sandbox-executor: {} is set but {} is not: refusing to listen with no token",
            sandbox_protocol::LISTEN_ENV,
            sandbox_protocol::TOKEN_ENV
        );
        return 72;
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sandbox-executor: cannot listen on {addr}: {e}");
            return 73;
        }
    };
    eprintln!("sandbox-executor: listening on {addr}");
    let current: Arc<Mutex<Option<TcpStream>>> = Arc::default();
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
fn serve_client(executor: &Executor, stream: TcpStream, current: &Mutex<Option<TcpStream>>, token: &str) -> Ended {
    let _ = stream.set_nodelay(true);
    let mut reader = stream;
    if reader.set_read_timeout(Some(HELLO_TIMEOUT)).is_err() {
        return Ended::Closed;
    }
    let proven = match sandbox_protocol::read_frame::<_, Hello>(&mut reader) {
        Ok(Some(hello)) => same(hello.token.as_bytes(), token.as_bytes()),
        _ => false,
    };
    if !proven || reader.set_read_timeout(None).is_err() {
        let _ = reader.shutdown(Shutdown::Both);
        return Ended::Closed;
    }
    let (Ok(writer), Ok(handle)) = (reader.try_clone(), reader.try_clone()) else { return Ended::Closed };
    // This client takes over: events go to it from now on, and the one before is cut off.
    {
        let mut held = current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = held.replace(handle) {
            let _ = before.shutdown(Shutdown::Both);
        }
        let mut out = executor.out.lock().unwrap_or_else(|p| p.into_inner());
        *out = Box::new(writer) as Box<dyn Write + Send>;
    }
    if send(&executor.out, &Event::Ready { version: PROTOCOL_VERSION }).is_err() {
        return Ended::Closed;
    }
    executor.serve(&mut reader)
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
