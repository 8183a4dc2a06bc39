//! sandboxd's side of the executor protocol, over any pair of byte streams.
//!
//! Several executions may be in flight: results are matched to callers by id. When the stream
//! ends, every waiting caller gets an error at once, so a dead sandbox never hangs a request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox_protocol::files::{FileOp, FileResult};
use sandbox_protocol::{Event, ExecRequest, ExecResult, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Mutex as AsyncMutex};

use crate::RuntimeError;

/// Callers waiting for an answer of type `T`, by request id.
type Waiting<T> = Arc<Mutex<HashMap<String, oneshot::Sender<T>>>>;
type Pending = Waiting<ExecResult>;
type Acks = Waiting<Option<String>>;
type FileCalls = Waiting<FileResult>;
type Streams = Arc<Mutex<HashMap<String, OutputSink>>>;

/// Where a streaming execution's outputs go as they happen.
pub type OutputSink = tokio::sync::mpsc::UnboundedSender<sandbox_protocol::Output>;

pub struct ExecutorClient {
    writer: AsyncMutex<Box<dyn AsyncWrite + Send + Unpin>>,
    pending: Pending,
    acks: Acks,
    files: FileCalls,
    streams: Streams,
    alive: Arc<AtomicBool>,
    ready: AsyncMutex<Option<oneshot::Receiver<u32>>>,
    /// Numbers the ids of file operations and kernel restarts.
    next_file: std::sync::atomic::AtomicU64,
}

/// Where the reader delivers what it reads.
struct Maps {
    pending: Pending,
    acks: Acks,
    files: FileCalls,
    streams: Streams,
}

impl ExecutorClient {
    /// Starts reading events from `reader` on a task of its own.
    pub fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Self {
        let pending: Pending = Arc::default();
        let acks: Acks = Arc::default();
        let files: FileCalls = Arc::default();
        let streams: Streams = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (ready_tx, ready_rx) = oneshot::channel();
        let maps = Maps {
            pending: Arc::clone(&pending),
            acks: Arc::clone(&acks),
            files: Arc::clone(&files),
            streams: Arc::clone(&streams),
        };
        tokio::spawn(read_events(reader, maps, Arc::clone(&alive), ready_tx));
        ExecutorClient {
            writer: AsyncMutex::new(Box::new(writer)),
            pending,
            acks,
            files,
            streams,
            alive,
            ready: AsyncMutex::new(Some(ready_rx)),
            next_file: Default::default(),
        }
    }

    /// Connects to an executor that listens on `addr` (see `sandbox_executor::network`) and
    /// proves this client with the sandbox's `token`. The connection, and the executor's
    /// `Ready`, must come within `timeout`.
    pub async fn connect(addr: std::net::SocketAddr, token: &str, timeout: Duration) -> Result<Self, RuntimeError> {
        let unreachable =
            |e: std::io::Error| RuntimeError::SandboxDied(format!("cannot reach the executor at {addr}: {e}"));
        // A pod is ready once its container runs, which can be a moment before its executor
        // listens: a refused connection is tried again, within `timeout`.
        let connecting = async {
            loop {
                match tokio::net::TcpStream::connect(addr).await {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => return other,
                }
            }
        };
        let stream = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| RuntimeError::Unresponsive(timeout.as_secs()))?
            .map_err(unreachable)?;
        let _ = stream.set_nodelay(true);
        let (reader, mut writer) = stream.into_split();
        let hello =
            sandbox_protocol::encode(&sandbox_protocol::Hello { token: token.to_string() }).map_err(unreachable)?;
        writer.write_all(&hello).await.map_err(unreachable)?;
        let client = ExecutorClient::new(reader, writer);
        client.wait_ready(timeout).await?;
        Ok(client)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Waits for the executor's `Ready`; returns its protocol version.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<u32, RuntimeError> {
        let Some(rx) = self.ready.lock().await.take() else {
            return Ok(sandbox_protocol::PROTOCOL_VERSION);
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(version)) => Ok(version),
            Ok(Err(_)) => Err(RuntimeError::SandboxDied("the executor exited before it was ready".into())),
            Err(_) => Err(RuntimeError::Unresponsive(timeout.as_secs())),
        }
    }

    /// Sends `req` (whose id is `id`) and waits for the answer that `waiting` receives.
    async fn call<T>(&self, waiting: &Waiting<T>, id: String, req: &Request) -> Result<T, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        lock(waiting).insert(id.clone(), tx);
        // The reader clears the maps after it marks the client dead: checking after the
        // insert means a sender can never be left behind with nobody to drop it.
        if !self.is_alive() {
            lock(waiting).remove(&id);
            return Err(RuntimeError::SandboxDied("the executor is gone".into()));
        }
        if let Err(e) = self.send(req).await {
            lock(waiting).remove(&id);
            return Err(e);
        }
        rx.await.map_err(|_| RuntimeError::SandboxDied("the executor exited before answering".into()))
    }

    /// Runs `req`; with a `sink`, its outputs also go there as they happen.
    pub async fn exec(&self, mut req: ExecRequest, sink: Option<OutputSink>) -> Result<ExecResult, RuntimeError> {
        let id = req.id.clone();
        if let Some(sink) = sink {
            req.stream = true;
            lock(&self.streams).insert(id.clone(), sink);
        }
        self.call(&self.pending, id, &Request::Exec(req)).await
    }

    /// Sends a request that is answered by an `Ack` with `id`, and waits for it.
    pub async fn call_acked(&self, id: String, req: Request) -> Result<(), RuntimeError> {
        match self.call(&self.acks, id, &req).await? {
            None => Ok(()),
            Some(error) => Err(RuntimeError::Kernel(error)),
        }
    }

    /// Runs a file operation on the workspace, inside the sandbox.
    pub async fn file(&self, op: FileOp) -> Result<FileResult, RuntimeError> {
        let id = format!("file-{}", self.next_file.fetch_add(1, Ordering::Relaxed));
        self.call(&self.files, id.clone(), &Request::File { id, op }).await
    }

    /// Starts the session kernel in the background with `env`.
    pub async fn start_kernel(&self, env: std::collections::BTreeMap<String, String>) -> Result<(), RuntimeError> {
        self.notify(&Request::StartKernel { env }).await
    }

    /// Interrupts the running kernel cell.
    pub async fn interrupt(&self) -> Result<(), RuntimeError> {
        self.notify(&Request::Interrupt).await
    }

    /// Kills the kernel and waits (two minutes at most) until a fresh one is ready.
    pub async fn restart_kernel(&self) -> Result<(), RuntimeError> {
        let id = format!("restart-{}", self.next_file.fetch_add(1, Ordering::Relaxed));
        let call = self.call_acked(id.clone(), Request::RestartKernel { id });
        tokio::time::timeout(Duration::from_secs(120), call).await.map_err(|_| RuntimeError::Unresponsive(120))?
    }

    /// Sends a request that has no answer.
    pub async fn notify(&self, req: &Request) -> Result<(), RuntimeError> {
        self.send(req).await
    }

    async fn send(&self, req: &Request) -> Result<(), RuntimeError> {
        let frame = sandbox_protocol::encode(req)?;
        let mut w = self.writer.lock().await;
        w.write_all(&frame).await?;
        w.flush().await?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_events(
    mut reader: impl AsyncRead + Unpin,
    Maps { pending, acks, files, streams }: Maps,
    alive: Arc<AtomicBool>,
    ready_tx: oneshot::Sender<u32>,
) {
    let mut ready_tx = Some(ready_tx);
    loop {
        match read_event(&mut reader).await {
            Ok(Some(Event::Ready { version })) => {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(version);
                }
            }
            Ok(Some(Event::Output { id, output })) => {
                if let Some(sink) = lock(&streams).get(&id) {
                    let _ = sink.send(output);
                }
            }
            Ok(Some(Event::ExecDone(result))) => {
                // Dropping the sink ends the caller's stream.
                lock(&streams).remove(&result.id);
                if let Some(tx) = lock(&pending).remove(&result.id) {
                    let _ = tx.send(result);
                }
            }
            Ok(Some(Event::Ack { id, error })) => {
                if let Some(tx) = lock(&acks).remove(&id) {
                    let _ = tx.send(error);
                }
            }
            Ok(Some(Event::FileDone { id, result })) => {
                if let Some(tx) = lock(&files).remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "executor stream broken");
                break;
            }
        }
    }
    alive.store(false, Ordering::SeqCst);
    lock(&pending).clear();
    lock(&acks).clear();
    lock(&files).clear();
    lock(&streams).clear();
}

async fn read_event(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Event>> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; sandbox_protocol::body_len(header)?];
    r.read_exact(&mut body).await?;
    sandbox_protocol::decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_protocol::Language;

    fn req(id: &str) -> ExecRequest {
        ExecRequest {
            id: id.into(),
            language: Language::Bash,
            code: String::new(),
            stdin: None,
            env: Default::default(),
            timeout_ms: 1000,
            output_limit: 10,
            outputs_limit: 10,
            kernel: false,
            context: None,
            forget_context: false,
            stream: false,
        }
    }

    #[tokio::test]
    async fn results_are_matched_by_id_and_a_closed_stream_fails_waiters() {
        let (client_side, mut exec_side) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client_side);
        let client = Arc::new(ExecutorClient::new(r, w));

        let ready = sandbox_protocol::encode(&Event::Ready { version: 7 }).expect("encode");
        exec_side.write_all(&ready).await.expect("write");
        assert_eq!(client.wait_ready(Duration::from_secs(1)).await.expect("ready"), 7);

        let c = Arc::clone(&client);
        let first = tokio::spawn(async move { c.exec(req("a"), None).await });
        let c = Arc::clone(&client);
        let second = tokio::spawn(async move { c.exec(req("b"), None).await });

        // Read both requests, answer only "b".
        for _ in 0..2 {
            let mut h = [0u8; 4];
            exec_side.read_exact(&mut h).await.expect("header");
            let mut body = vec![0; sandbox_protocol::body_len(h).expect("len")];
            exec_side.read_exact(&mut body).await.expect("body");
        }
        let done = Event::ExecDone(ExecResult { id: "b".into(), exit_code: Some(3), ..Default::default() });
        exec_side.write_all(&sandbox_protocol::encode(&done).expect("encode")).await.expect("write");
        let b = second.await.expect("join").expect("exec b");
        assert_eq!(b.exit_code, Some(3));

        drop(exec_side);
        assert!(matches!(first.await.expect("join"), Err(RuntimeError::SandboxDied(_))));
        assert!(!client.is_alive());
        assert!(client.exec(req("c"), None).await.is_err());
    }
}
