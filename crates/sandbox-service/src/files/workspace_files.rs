//! A workspace's files as the service reaches them, the same whatever the runtime: on this
//! disk ([`sandbox_runtime::WorkspaceAccess::Host`]: the directory the sandbox mounts), or
//! through the executor inside the session's sandbox
//! ([`sandbox_runtime::WorkspaceAccess::Executor`]: the sandbox does not share
//! this disk, as with a runtime on another machine). The file API (`files.rs`) is written once
//! against this.
//!
//! Calls block: the file API makes them on blocking threads, where a call to the executor
//! waits on the async runtime through a handle. Reads for a download are the exception: they
//! stream ([`Opened::into_stream`]), and archives read that stream.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sandbox_protocol::files::{FileOp, FileResult, CHUNK_BYTES};
use sandbox_runtime::Sandbox;
use sandbox_workspace::protocol::{error, from_wire};
use sandbox_workspace::{Entry, RelPath, Staged, Tree, Workspace, WorkspaceError};

type Result<T> = std::result::Result<T, WorkspaceError>;

/// How long one file operation in the sandbox may take (a chunk of at most 4 MiB, a listing).
const OP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes an upload through the executor gathers before it sends them: fewer, larger appends.
const APPEND_BYTES: usize = CHUNK_BYTES;

/// The session's sandbox, and the async runtime its calls wait on.
#[derive(Clone)]
pub struct Remote {
    sandbox: Arc<dyn Sandbox>,
    handle: tokio::runtime::Handle,
}

impl Remote {
    async fn call_async(&self, op: FileOp) -> Result<FileResult> {
        let answer = match tokio::time::timeout(OP_TIMEOUT, self.sandbox.file(op)).await {
            Ok(answer) => answer.map_err(|e| WorkspaceError::Remote(format!("the sandbox: {e}")))?,
            Err(_) => {
                let why = format!("the sandbox did not answer a file operation within {} s", OP_TIMEOUT.as_secs());
                return Err(WorkspaceError::Remote(why));
            }
        };
        match answer {
            FileResult::Failed { fault } => Err(error(fault)),
            answer => Ok(answer),
        }
    }

    /// Blocks: call it from a blocking thread.
    fn call(&self, op: FileOp) -> Result<FileResult> {
        self.handle.block_on(self.call_async(op))
    }

    fn entry(&self, op: FileOp) -> Result<Entry> {
        match self.call(op)? {
            FileResult::Entry { entry } => from_wire(entry),
            other => Err(unexpected(&other)),
        }
    }
}

/// A path as the protocol carries it: relative, the root empty.
fn wire(path: &RelPath) -> String {
    path.as_str().to_string()
}

fn unexpected(answer: &FileResult) -> WorkspaceError {
    WorkspaceError::Remote(format!("the executor answered a file operation with {answer:?}"))
}

pub enum WorkspaceFiles {
    Host(Workspace),
    Executor(Remote),
}

/// A file open for reading.
pub enum Opened {
    Host(std::fs::File),
    Executor { remote: Remote, path: RelPath },
}

/// An upload being written, not yet visible.
pub enum Upload {
    Host(Staged),
    Executor(RemoteUpload),
}

/// An upload to a stage inside the sandbox; bytes are gathered here and sent in large appends.
pub struct RemoteUpload {
    remote: Remote,
    name: String,
    pending: Vec<u8>,
    size: u64,
    /// Not yet committed: dropped, it is discarded in the sandbox too.
    open: bool,
}

impl WorkspaceFiles {
    /// Through the executor of `sandbox`; calls wait on the current async runtime.
    pub fn through(sandbox: Arc<dyn Sandbox>) -> WorkspaceFiles {
        WorkspaceFiles::Executor(Remote { sandbox, handle: tokio::runtime::Handle::current() })
    }

    pub fn list(&self, dir: &RelPath, recursive: bool, limit: usize) -> Result<Vec<Entry>> {
        match self {
            WorkspaceFiles::Host(ws) => Ok(ws.list(dir, recursive, limit)?),
            WorkspaceFiles::Executor(remote) => {
                match remote.call(FileOp::List { dir: wire(dir), recursive, limit })? {
                    FileResult::Entries { entries } => entries.into_iter().map(from_wire).collect(),
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    pub fn stat(&self, path: &RelPath) -> Result<Entry> {
        match self {
            WorkspaceFiles::Host(ws) => Ok(ws.stat(path)?),
            WorkspaceFiles::Executor(remote) => remote.entry(FileOp::Stat { path: wire(path) }),
        }
    }

    /// Regular file `path`, open for reading, with what it is.
    pub fn open(&self, path: &RelPath) -> Result<(Opened, Entry)> {
        match self {
            WorkspaceFiles::Host(ws) => {
                let (file, entry) = ws.open_file(path)?;
                Ok((Opened::Host(file), entry))
            }
            WorkspaceFiles::Executor(remote) => {
                // A read of nothing checks that it is a regular file and says what it is.
                let op = FileOp::Read { path: wire(path), offset: 0, len: 0 };
                match remote.call(op)? {
                    FileResult::Data { entry, .. } => {
                        Ok((Opened::Executor { remote: remote.clone(), path: path.clone() }, from_wire(entry)?))
                    }
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    pub fn remove(&self, path: &RelPath, recursive: bool) -> Result<()> {
        match self {
            WorkspaceFiles::Host(ws) => Ok(ws.remove(path, recursive)?),
            WorkspaceFiles::Executor(remote) => remote.call(FileOp::Remove { path: wire(path), recursive }).map(drop),
        }
    }

    pub fn rename(&self, from: &RelPath, to: &RelPath) -> Result<Entry> {
        match self {
            WorkspaceFiles::Host(ws) => Ok(ws.rename(from, to)?),
            WorkspaceFiles::Executor(remote) => remote.entry(FileOp::Rename { from: wire(from), to: wire(to) }),
        }
    }

    /// A new upload, invisible until [`Self::commit`].
    pub fn stage(&self) -> Result<Upload> {
        match self {
            WorkspaceFiles::Host(ws) => Ok(Upload::Host(ws.stage()?)),
            WorkspaceFiles::Executor(remote) => {
                let name = crate::executions::new_id("upload");
                remote.call(FileOp::Stage { stage: name.clone() })?;
                let upload = RemoteUpload { remote: remote.clone(), name, pending: Vec::new(), size: 0, open: true };
                Ok(Upload::Executor(upload))
            }
        }
    }

    /// Bytes the workspace's files take (what the quota counts), less `besides`.
    pub fn usage(&self, besides: Option<&mut Upload>) -> Result<u64> {
        match (self, besides) {
            (WorkspaceFiles::Host(ws), Some(Upload::Host(staged))) => Ok(ws.usage_besides(staged)?),
            (WorkspaceFiles::Host(ws), _) => Ok(ws.usage()?),
            (WorkspaceFiles::Executor(remote), upload) => {
                let besides = match upload {
                    Some(Upload::Executor(upload)) => {
                        upload.flush()?;
                        Some(upload.name.clone())
                    }
                    _ => None,
                };
                match remote.call(FileOp::Usage { besides })? {
                    FileResult::Usage { bytes } => Ok(bytes),
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    /// Moves a finished upload into place at `path` (atomically: readers see the old file or
    /// the new one).
    pub fn commit(&self, upload: Upload, path: &RelPath) -> Result<Entry> {
        match (self, upload) {
            (WorkspaceFiles::Host(ws), Upload::Host(staged)) => Ok(ws.commit(staged, path)?),
            (WorkspaceFiles::Executor(remote), Upload::Executor(mut upload)) => {
                upload.flush()?;
                let entry = remote.entry(FileOp::Commit { stage: upload.name.clone(), path: wire(path) })?;
                upload.open = false;
                Ok(entry)
            }
            _ => Err(WorkspaceError::Remote("an upload committed to another workspace than its own".into())),
        }
    }
}

impl Upload {
    /// Appends `bytes`; fails once the upload would pass `max` bytes.
    pub fn write(&mut self, bytes: &[u8], max: u64) -> Result<()> {
        match self {
            Upload::Host(staged) => staged.write(bytes, max),
            Upload::Executor(upload) => {
                if upload.size + bytes.len() as u64 > max {
                    return Err(WorkspaceError::TooLarge { limit: max });
                }
                upload.size += bytes.len() as u64;
                upload.pending.extend_from_slice(bytes);
                if upload.pending.len() >= APPEND_BYTES {
                    upload.flush()?;
                }
                Ok(())
            }
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Upload::Host(staged) => staged.size(),
            Upload::Executor(upload) => upload.size,
        }
    }
}

impl RemoteUpload {
    /// Sends what was gathered (the executor holds it to the size counted here).
    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let data = std::mem::take(&mut self.pending);
            self.remote.call(FileOp::Append { stage: self.name.clone(), data, max: self.size })?;
        }
        Ok(())
    }
}

impl Drop for RemoteUpload {
    /// An upload never committed is discarded in the sandbox too (on this disk, closing the
    /// unnamed file is enough).
    fn drop(&mut self) {
        if self.open {
            let (remote, stage) = (self.remote.clone(), self.name.clone());
            self.remote.handle.spawn(async move {
                let _ = remote.call_async(FileOp::Discard { stage }).await;
            });
        }
    }
}

impl Opened {
    /// `len` bytes from `first`, as a stream of chunks of at most `chunk` bytes.
    pub fn into_stream(self, first: u64, len: u64, chunk: usize) -> BoxStream<'static, std::io::Result<Bytes>> {
        match self {
            Opened::Host(mut file) => {
                if first > 0 {
                    if let Err(e) = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(first)) {
                        return futures_util::stream::once(async move { Err(e) }).boxed();
                    }
                }
                let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
                tokio_util::io::ReaderStream::with_capacity(reader, chunk).boxed()
            }
            Opened::Executor { remote, path } => {
                let chunk = chunk.min(CHUNK_BYTES) as u64;
                futures_util::stream::try_unfold((first, len), move |(at, left)| {
                    let (remote, path) = (remote.clone(), wire(&path));
                    async move {
                        if left == 0 {
                            return Ok(None);
                        }
                        let op = FileOp::Read { path, offset: at, len: left.min(chunk) };
                        let data = match remote.call_async(op).await.map_err(std::io::Error::other)? {
                            FileResult::Data { data, .. } if !data.is_empty() => data,
                            // It shrank since it was opened: a short body must not look whole.
                            FileResult::Data { .. } => {
                                return Err(std::io::Error::other("the file shrank while it was read"))
                            }
                            other => return Err(std::io::Error::other(unexpected(&other).to_string())),
                        };
                        let n = data.len() as u64;
                        Ok(Some((Bytes::from(data), (at + n, left.saturating_sub(n)))))
                    }
                })
                .boxed()
            }
        }
    }
}

impl Tree for WorkspaceFiles {
    fn list(&self, dir: &RelPath, recursive: bool, limit: usize) -> Result<Vec<Entry>> {
        WorkspaceFiles::list(self, dir, recursive, limit)
    }

    fn open_file(&self, path: &RelPath) -> Result<(Box<dyn Read + Send>, Entry)> {
        match self {
            WorkspaceFiles::Host(ws) => Tree::open_file(ws, path),
            WorkspaceFiles::Executor(remote) => {
                // The same chunked reads as a download, read as they come (archives are written
                // on a blocking thread).
                let (opened, entry) = self.open(path)?;
                let chunks = opened.into_stream(0, entry.size, CHUNK_BYTES);
                let reader = tokio_util::io::SyncIoBridge::new_with_handle(
                    tokio_util::io::StreamReader::new(chunks),
                    remote.handle.clone(),
                );
                Ok((Box::new(reader), entry))
            }
        }
    }
}
