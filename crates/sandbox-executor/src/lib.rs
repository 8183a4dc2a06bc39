//! The agent that runs as PID 1 inside every sandbox.
//!
//! It reads [`sandbox_protocol::Request`]s from stdin and writes [`sandbox_protocol::Event`]s to
//! stdout, or serves them over TCP ([`network`]). Before anything else it raises the second isolation layer that every process it
//! starts inherits: not dumpable (so user code, which shares its uid, cannot read its memory or
//! fds), `no_new_privs`, and a seccomp filter ([`seccomp`]). As PID 1 it also reaps every
//! orphan ([`reaper`]), like tini.

pub mod exec;
pub mod files;
pub mod kernel;
pub mod network;
pub mod outputs;
pub mod proctree;
pub mod reaper;
pub mod relay;
pub mod seccomp;

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use sandbox_protocol::files::{FileFault, FileResult};
use sandbox_protocol::{Event, Language, Request, PROTOCOL_VERSION};

/// Where events go: stdout, or the current network connection (replaced when a new client
/// takes over).
type Out = Arc<Mutex<Box<dyn Write + Send>>>;

/// What the executor serves requests with, whichever client it serves.
#[derive(Clone)]
struct Executor {
    out: Out,
    children: Arc<reaper::Children>,
    kernel: Arc<kernel::Kernel>,
    files: Arc<files::FileServer>,
}

/// How serving one client ended.
enum Ended {
    /// Told to shut down: the sandbox is done.
    Shutdown,
    /// The client's stream closed or broke.
    Closed,
}

/// Runs the executor until its input closes or it is told to shut down; returns the exit code.
///
/// By default it serves one client over stdin and stdout (a pipe, or a container's attach
/// stream). With `SANDBOX_EXECUTOR_LISTEN` it serves clients over TCP instead, one at a time,
/// each proven by the sandbox's token ([`network`]): a client that goes away (its sandboxd
/// died) leaves the kernel and its variables for the next one.
///
/// `sandbox-executor relay -- COMMAND...` runs the [`relay`] instead, in front of an executor
/// that COMMAND starts under bubblewrap.
pub fn run() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("relay") {
        let command = args[1..].strip_prefix(&["--".to_string()]).unwrap_or(&args[1..]);
        return relay::run(command);
    }
    if let Err(e) = harden() {
        eprintln!("sandbox-executor: cannot harden the sandbox: {e}");
        return 70;
    }
    let _ = std::fs::create_dir_all(exec::SCRATCH_DIR);

    let children = Arc::new(reaper::Children::default());
    {
        let children = Arc::clone(&children);
        if let Err(e) = std::thread::Builder::new().name("reaper".into()).spawn(move || children.reap_forever()) {
            eprintln!("sandbox-executor: cannot start the reaper: {e}");
            return 71;
        }
    }
    let executor = Executor {
        out: Arc::new(Mutex::new(Box::new(io::stdout()))),
        kernel: Arc::new(kernel::Kernel::new(Arc::clone(&children))),
        children,
        files: Arc::new(files::FileServer::new(std::path::Path::new(sandbox_protocol::WORKSPACE_DIR))),
    };
    if let Ok(addr) = std::env::var(sandbox_protocol::LISTEN_ENV) {
        let token = std::env::var(sandbox_protocol::TOKEN_ENV).unwrap_or_default();
        // Returns only when it cannot serve at all (a shutdown ends the process from the
        // client's thread), before any process of the sandbox was started.
        return network::serve(&executor, &addr, &token);
    }
    if send(&executor.out, &Event::Ready { version: PROTOCOL_VERSION }).is_err() {
        return 0;
    }
    executor.serve(&mut io::stdin().lock());
    proctree::kill_all_but_self();
    0
}

impl Executor {
    /// Answers the requests read from `input` until it ends or says to shut down.
    fn serve(&self, input: &mut impl Read) -> Ended {
        loop {
            match sandbox_protocol::read_frame::<_, Request>(input) {
                Ok(Some(Request::Shutdown)) => return Ended::Shutdown,
                Ok(Some(request)) => self.handle(request),
                Ok(None) => return Ended::Closed,
                Err(e) => {
                    eprintln!("sandbox-executor: bad request stream: {e}");
                    return Ended::Closed;
                }
            }
        }
    }

    fn handle(&self, request: Request) {
        match request {
            Request::Exec(req) => {
                let (out, children, kernel) =
                    (Arc::clone(&self.out), Arc::clone(&self.children), Arc::clone(&self.kernel));
                spawn_or_inline(move || {
                    let sink: Option<outputs::Sink> = req.stream.then(|| {
                        let (out, id) = (Arc::clone(&out), req.id.clone());
                        Box::new(move |output: &sandbox_protocol::Output| {
                            let _ = send(&out, &Event::Output { id: id.clone(), output: output.clone() });
                        }) as outputs::Sink
                    });
                    let result = if req.kernel && req.language == Language::Python {
                        kernel.exec(&req, sink)
                    } else {
                        exec::run(&req, &children, sink, &|| kernel.session())
                    };
                    if let Err(e) = send(&out, &Event::ExecDone(result)) {
                        eprintln!("sandbox-executor: cannot report execution {}: {e}", req.id);
                    }
                });
            }
            Request::StartKernel { env } => {
                // Stored here, in request order: a restart that follows at once starts its
                // kernel with this environment, whichever thread runs first.
                self.kernel.set_env(env);
                let kernel = Arc::clone(&self.kernel);
                spawn_or_inline(move || {
                    if let Err(e) = kernel.ensure_started() {
                        eprintln!("sandbox-executor: {e}");
                    }
                });
            }
            Request::Interrupt => self.kernel.interrupt(),
            Request::RestartKernel { id } => {
                let (out, kernel) = (Arc::clone(&self.out), Arc::clone(&self.kernel));
                spawn_or_inline(move || {
                    let error = kernel.restart().err();
                    let _ = send(&out, &Event::Ack { id, error });
                });
            }
            Request::File { id, op } => {
                let (out, files) = (Arc::clone(&self.out), Arc::clone(&self.files));
                spawn_or_inline(move || {
                    let result = files.handle(op);
                    if let Err(e) = send(&out, &Event::FileDone { id: id.clone(), result }) {
                        // sandboxd waits for an answer: say why there is none (a listing too
                        // large for one frame, say).
                        let message = format!("cannot send the answer: {e}");
                        let failed = FileResult::Failed { fault: FileFault::Other { message } };
                        if let Err(e) = send(&out, &Event::FileDone { id, result: failed }) {
                            eprintln!("sandbox-executor: cannot answer a file operation: {e}");
                        }
                    }
                });
            }
            Request::Shutdown => {}
        }
    }
}

/// Runs `f` on a thread of its own, or on this one when no thread can be made: threads count
/// against the sandbox's pid limit, and the executor must answer rather than panic there.
pub fn spawn_or_inline(f: impl FnOnce() + Send + 'static) {
    let slot = Arc::new(Mutex::new(Some(f)));
    let theirs = Arc::clone(&slot);
    let spawned = std::thread::Builder::new().spawn(move || {
        if let Some(f) = theirs.lock().ok().and_then(|mut s| s.take()) {
            f();
        }
    });
    if spawned.is_err() {
        if let Some(f) = slot.lock().ok().and_then(|mut s| s.take()) {
            f();
        }
    }
}

fn harden() -> io::Result<()> {
    sandbox_sys::set_not_dumpable()?;
    sandbox_sys::set_no_new_privs()?;
    sandbox_sys::install_seccomp_filter(&seccomp::program())?;
    // Whatever the launcher leaked past stdio must not reach user code.
    sandbox_sys::close_fds_from(3)
}

fn send(out: &Mutex<Box<dyn Write + Send>>, event: &Event) -> io::Result<()> {
    let frame = match (sandbox_protocol::encode(event), event) {
        (Ok(frame), _) => frame,
        // A result must always be sent, or sandboxd waits out the timeout and loses the
        // sandbox: cut it to fit.
        (Err(_), Event::ExecDone(result)) => {
            let mut result = result.clone();
            outputs::shrink_to_fit(&mut result);
            sandbox_protocol::encode(&Event::ExecDone(result))?
        }
        (Err(e), _) => return Err(e),
    };
    let mut guard = out.lock().map_err(|_| io::Error::other("output lock poisoned"))?;
    guard.write_all(&frame)?;
    guard.flush()
}
