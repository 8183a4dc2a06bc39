//! The file service: a session's workspace opened for file operations (list, read, upload,
//! delete, move, archive), with the rules a door must not be able to skip: the session must
//! be active and its workspace kept, uploads are held to the file limit, the quota and the
//! template's accepted types, and every change is written back to storage before it is
//! acknowledged.
//!
//! Paths are validated and resolved by `sandbox-workspace`, never through a link, on this disk
//! or by the executor in the sandbox, as the runtime says ([`WorkspaceFiles`]). Uploads stream
//! through a bounded channel to a blocking thread, so a 1 GiB upload is never held in memory,
//! and a file becomes visible (atomically, by a rename) only once it is complete.

pub mod copy;
pub mod storage;
pub mod system_dir;
pub mod workspace;
pub mod workspace_files;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sandbox_api::{FileInfo, FileType, Session, SessionStatus, UploadedFile};
use sandbox_runtime::WorkspaceAccess;
use sandbox_workspace::{Entry, Kind, RelPath, Workspace, WorkspaceError};

use crate::access::auth::Caller;
use crate::blocking;
use crate::error::ServiceError;
use crate::files::workspace_files::{Opened, Upload, WorkspaceFiles};
use crate::Service;

type Result<T> = std::result::Result<T, ServiceError>;

/// Most entries one listing returns.
pub const MAX_LISTING: usize = 10_000;
/// Bytes a read takes from a file at a time.
pub const READ_CHUNK: usize = 1 << 20;
/// Chunks in flight between an upload's body and the thread that writes the file.
const CHANNEL_CHUNKS: usize = 8;

pub fn info(e: &Entry) -> FileInfo {
    let kind = match e.kind {
        Kind::File => FileType::File,
        Kind::Dir => FileType::Dir,
        Kind::Symlink => FileType::Symlink,
        Kind::Other => FileType::Other,
    };
    FileInfo { path: e.path.as_str().to_string(), kind, size: e.size, modified_at: e.modified_at }
}

/// A session's workspace, open.
pub struct SessionFiles {
    service: Arc<Service>,
    session: Session,
    ws: Arc<WorkspaceFiles>,
}

impl Service {
    /// Opens session `id`'s workspace; the session must exist, not be deleted, and still have
    /// its workspace. With S3 storage, a session whose sandbox runs here has the current files
    /// in its directory (code writes there); any other is brought up to date first. Reached
    /// through the executor, the workspace is where the session's sandbox is: a stopped
    /// session is resumed for it, as for an execution.
    pub async fn files(self: &Arc<Self>, caller: &Caller, id: &str) -> Result<SessionFiles> {
        let session = self.active_session(caller, id).await?;
        if let Some(at) = session.workspace_removed_at {
            return Err(ServiceError::Conflict(format!(
                "the workspace of session {id} was removed at {} (retention over, or moved to another session)",
                at.to_rfc3339()
            )));
        }
        let ws = match self.runtime.workspace_access() {
            WorkspaceAccess::Host => {
                // Mounted from here until the workspace's root is open, which keeps it mounted.
                let _pin = self.dirs.workspaces.pin(id);
                let dir = match self.sessions.live(id).current() {
                    Some(_) => self.dirs.workspaces.ensure(id)?,
                    None => self.dirs.prepare(id).await?,
                };
                WorkspaceFiles::Host(Workspace::open(&dir, self.runtime.workspace_owner())?)
            }
            WorkspaceAccess::Executor => WorkspaceFiles::through(self.sandbox_for_files(caller, &session).await?),
        };
        Ok(SessionFiles { service: Arc::clone(self), session, ws: Arc::new(ws) })
    }

    /// The live sandbox of `session`, resumed if it is stopped and may resume on demand.
    async fn sandbox_for_files(&self, caller: &Caller, session: &Session) -> Result<Arc<dyn sandbox_runtime::Sandbox>> {
        let live = || self.sessions.live(&session.id).current().filter(|sb| sb.is_alive());
        if let Some(sandbox) = live() {
            return Ok(sandbox);
        }
        if session.status == SessionStatus::Stopped && !session.auto_resume {
            return Err(ServiceError::Conflict(format!(
                "session {} is stopped and its files are in its sandbox; resume it with POST /v1/sessions/{}/resume",
                session.id, session.id
            )));
        }
        self.resume_session(caller, &session.id).await?;
        live().ok_or_else(|| ServiceError::SandboxFailed(format!("session {} has no sandbox to reach", session.id)))
    }
}

/// What an upload's body delivers to the writing thread.
enum Chunk {
    Data(Bytes),
    /// The body ended normally: the file may be committed.
    End,
}

impl SessionFiles {
    /// The entries of `dir` (its whole tree with `recursive`), and whether there were more
    /// than [`MAX_LISTING`].
    pub async fn list(&self, dir: RelPath, recursive: bool) -> Result<(Vec<FileInfo>, bool)> {
        let ws = Arc::clone(&self.ws);
        let entries = blocking(move || Ok(ws.list(&dir, recursive, MAX_LISTING + 1)?)).await?;
        let truncated = entries.len() > MAX_LISTING;
        Ok((entries.iter().take(MAX_LISTING).map(info).collect(), truncated))
    }

    /// What `path` is (a link is reported as a link).
    pub async fn stat(&self, path: RelPath) -> Result<Entry> {
        let ws = Arc::clone(&self.ws);
        blocking(move || Ok(ws.stat(&path)?)).await
    }

    /// Regular file `path`, open for reading, with what it is.
    pub async fn open(&self, path: RelPath) -> Result<(Opened, Entry)> {
        let ws = Arc::clone(&self.ws);
        blocking(move || Ok(ws.open(&path)?)).await
    }

    /// Regular file `path` whole, if it has at most `max` bytes (for doors that answer with
    /// the content itself rather than a stream).
    pub async fn read_all(&self, path: RelPath, max: u64) -> Result<(Vec<u8>, Entry)> {
        let (opened, entry) = self.open(path).await?;
        if entry.size > max {
            return Err(WorkspaceError::TooLarge { limit: max }.into());
        }
        let mut data = Vec::with_capacity(entry.size as usize);
        let mut chunks = opened.into_stream(0, entry.size, READ_CHUNK);
        while let Some(chunk) = chunks.next().await {
            // Through the executor, a read cut off is the sandbox's failure (503, try again),
            // not the server's.
            let chunk = chunk.map_err(|e| match *self.ws {
                WorkspaceFiles::Executor(_) => {
                    ServiceError::SandboxFailed(format!("reading {} in the sandbox failed: {e}; try again", entry.path))
                }
                WorkspaceFiles::Host(_) => ServiceError::Internal(format!("read {}: {e}", entry.path)),
            })?;
            data.extend_from_slice(&chunk);
        }
        Ok((data, entry))
    }

    /// Removes `path` (a directory only if empty, unless `recursive`).
    pub async fn remove(&self, path: RelPath, recursive: bool) -> Result<()> {
        let ws = Arc::clone(&self.ws);
        blocking(move || Ok(ws.remove(&path, recursive)?)).await?;
        self.written_through().await
    }

    /// Moves `from` to `to`, which must not exist.
    pub async fn rename(&self, from: RelPath, to: RelPath) -> Result<FileInfo> {
        let ws = Arc::clone(&self.ws);
        let entry = blocking(move || Ok(ws.rename(&from, &to)?)).await?;
        self.written_through().await?;
        Ok(info(&entry))
    }

    /// Writes directory `dir` as a `.tar.gz` to `out` (blocking: call it on a thread of its
    /// own). Fails at once if `dir` is not a directory.
    pub fn archive(&self, dir: &RelPath, out: &mut impl std::io::Write) -> Result<()> {
        let entry = self.ws.stat(dir)?;
        if entry.kind != Kind::Dir {
            return Err(WorkspaceError::NotDir(dir.to_string()).into());
        }
        Ok(sandbox_workspace::write_tar_gz(self.ws.as_ref(), dir, out)?)
    }

    /// The upload allowlist of the session's template (empty: anything goes).
    async fn allowed_uploads(&self) -> Result<Vec<String>> {
        let template = crate::templates::find_any(&self.service, &self.session.template).await?;
        Ok(template.map(|t| t.allowed_uploads).unwrap_or_default())
    }

    /// Streams `body` into a staged file and, once it is complete and within the limits,
    /// renames it into place at `path` and writes it back to storage. `declared` is the size
    /// the client announced, if any: refused at once when over a limit. On an error the rest of
    /// `body` is left unread (a door that wants the client to see the answer drains it).
    pub async fn upload<E: std::fmt::Display>(
        &self,
        path: RelPath,
        declared: Option<u64>,
        body: &mut (impl Stream<Item = std::result::Result<Bytes, E>> + Unpin),
    ) -> Result<UploadedFile> {
        let config = &self.service.config;
        let (max, quota) = (config.max_file_bytes, config.workspace_quota_bytes);
        // The tenant's other workspaces, measured once: this upload's own is measured as it goes.
        let (tenant, tenant_max_mb) = (self.session.tenant.clone(), config.tenant.max_workspace_mb);
        let others = match tenant_max_mb {
            0 => 0,
            _ => {
                crate::access::admission::tenant_workspace_bytes(&self.service, &tenant, Some(&self.session.id)).await?
            }
        };
        if declared.is_some_and(|n| n > max) {
            return Err(WorkspaceError::TooLarge { limit: max }.into());
        }
        let allowed = self.allowed_uploads().await?;
        let sniff_as = match allowed.is_empty() {
            true => None,
            false => match sandbox_workspace::sniff::extension(path.as_str()) {
                Some(ext) if allowed.contains(&ext) => Some(ext),
                _ => return Err(refused_type(&path, &allowed, "its extension is not accepted")),
            },
        };
        let shown_path = path.clone();
        let ws = Arc::clone(&self.ws);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
        let writer = tokio::task::spawn_blocking(move || -> Result<UploadedFile> {
            // `staged` holds `adding` already, on a volume.
            let within_quota = |adding: u64, staged: Option<&mut Upload>| -> Result<()> {
                let used = ws.usage(staged)?;
                let replaced = ws.stat(&path).ok().filter(|e| e.kind == Kind::File).map_or(0, |e| e.size);
                if used.saturating_sub(replaced) + adding > quota {
                    return Err(WorkspaceError::QuotaExceeded { quota, used, adding }.into());
                }
                let tenant_used = others + used.saturating_sub(replaced);
                if tenant_max_mb > 0 && tenant_used + adding > tenant_max_mb << 20 {
                    return Err(crate::access::admission::tenant_workspaces_full(
                        &tenant,
                        tenant_max_mb,
                        tenant_used,
                        adding,
                    ));
                }
                Ok(())
            };
            if let Some(n) = declared {
                within_quota(n, None)?;
            }
            // SHA-256 runs at ~1.5 GB/s at best: on a thread of its own, it overlaps the writes.
            let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Bytes>(CHANNEL_CHUNKS);
            let hasher = std::thread::spawn(move || {
                use sha2::Digest;
                let mut hash = sha2::Sha256::new();
                for bytes in hash_rx {
                    hash.update(&bytes);
                }
                sandbox_workspace::hex(&hash.finalize())
            });
            let mut staged = ws.stage()?;
            loop {
                match rx.blocking_recv() {
                    Some(Chunk::Data(bytes)) => {
                        let _ = hash_tx.send(bytes.clone());
                        staged.write(&bytes, max)?;
                    }
                    Some(Chunk::End) => break,
                    None => {
                        return Err(ServiceError::Malformed("the upload ended before its body was complete".into()))
                    }
                }
            }
            drop(hash_tx);
            let sha256 =
                hasher.join().map_err(|_| ServiceError::Internal("the upload's hashing thread failed".into()))?;
            within_quota(staged.size(), Some(&mut staged))?;
            let entry = ws.commit(staged, &path)?;
            Ok(UploadedFile {
                path: entry.path.as_str().to_string(),
                size: entry.size,
                modified_at: entry.modified_at,
                sha256,
            })
        });
        let mut failed = None;
        // With an allowlist, the first bytes are held back until they show the content matches.
        let mut head: Option<Vec<Bytes>> = sniff_as.as_ref().map(|_| Vec::new());
        loop {
            let next = body.next().await;
            if let (Some(held), Some(ext)) = (&mut head, &sniff_as) {
                let held_len: usize = held.iter().map(Bytes::len).sum();
                match &next {
                    Some(Ok(bytes)) if held_len + bytes.len() < sandbox_workspace::sniff::SNIFF_BYTES => {
                        held.push(bytes.clone());
                        continue;
                    }
                    Some(Err(_)) => {}
                    _ => {
                        let mut sample: Vec<u8> = held.concat();
                        if let Some(Ok(bytes)) = &next {
                            sample.extend_from_slice(bytes);
                        }
                        sample.truncate(sandbox_workspace::sniff::SNIFF_BYTES);
                        if !sandbox_workspace::sniff::content_matches(ext, &sample) {
                            let why = format!("its content is not a .{ext} file");
                            failed = Some(refused_type(&shown_path, &allowed, &why));
                            break;
                        }
                        let mut stopped = false;
                        for bytes in head.take().unwrap_or_default() {
                            stopped |= tx.send(Chunk::Data(bytes)).await.is_err();
                        }
                        if stopped {
                            break;
                        }
                    }
                }
            }
            let Some(next) = next else { break };
            match next {
                // A send fails when the writer stopped (a limit): its error says why.
                Ok(bytes) => {
                    if tx.send(Chunk::Data(bytes)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(ServiceError::Malformed(format!("cannot read the upload: {e}")));
                    break;
                }
            }
        }
        if failed.is_none() {
            let _ = tx.send(Chunk::End).await;
        }
        drop(tx);
        let written = writer.await.map_err(|e| ServiceError::Internal(format!("upload task failed: {e}")))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let file = written?;
        // Written through: once answered, the file is in storage for every replica.
        self.written_through().await?;
        Ok(file)
    }

    /// After a change: the workspace is written back to storage, and its new size counts for
    /// the tenant's limit on every replica.
    async fn written_through(&self) -> Result<()> {
        // A sandbox with a disk of its own holds the change: its copy here gets it first.
        copy::save_sandbox_files(&self.service, &self.session.id, false).await;
        self.service.dirs.write_back(&self.session.id).await?;
        crate::access::admission::record_workspace_bytes(&self.service, &self.session.id).await
    }
}

fn refused_type(path: &RelPath, allowed: &[String], why: &str) -> ServiceError {
    let list: Vec<String> = allowed.iter().map(|e| format!(".{e}")).collect();
    ServiceError::UnsupportedType(format!("{path}: {why}; this session's template accepts {}", list.join(" ")))
}
