//! Where workspaces are kept. `local`: the directories under the data dir are the workspaces.
//! `s3://bucket/prefix`: the bucket holds them and those directories are a cache, brought up
//! to date before a sandbox starts on one (or the file API serves a session whose sandbox does
//! not run here), and written back after each execution, after each change through the file
//! API, when a session stops, and every `--sync-interval-s` (changed files only).
//!
//! Syncs of one workspace never overlap: each takes that workspace's lock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sandbox_workspace::{Mirror, SyncReport, WorkspaceError};

use crate::error::ServiceError;

/// What syncs did since start (for /metrics).
#[derive(Default)]
pub struct SyncCounts {
    pub pushes: AtomicU64,
    pub pulls: AtomicU64,
    pub failures: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

#[derive(Default)]
pub struct Storage {
    mirror: Option<Arc<Mirror>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub counts: SyncCounts,
}

impl Storage {
    /// Workspaces on local disk only.
    pub fn local() -> Storage {
        Storage::default()
    }

    /// Workspaces in a bucket; `state_dir` holds the sync manifests.
    pub fn s3(opts: &sandbox_workspace::S3Options, state_dir: &std::path::Path) -> Result<Storage, WorkspaceError> {
        Ok(Storage { mirror: Some(Arc::new(Mirror::new(opts, state_dir)?)), ..Storage::default() })
    }

    pub fn is_remote(&self) -> bool {
        self.mirror.is_some()
    }

    /// `local`, or the bucket's URL.
    pub fn describe(&self) -> &str {
        self.mirror.as_ref().map_or("local", |m| m.url())
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(id.to_string()).or_default())
    }

    /// Runs `f` on a blocking thread while holding workspace `id`'s lock.
    async fn locked<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&Mirror, &tokio::runtime::Handle) -> Result<T, WorkspaceError> + Send + 'static,
    ) -> Result<Option<T>, ServiceError> {
        let Some(mirror) = self.mirror.clone() else { return Ok(None) };
        let lock = self.lock_of(id);
        let _held = lock.lock().await;
        let handle = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || f(&mirror, &handle))
            .await
            .map_err(|e| ServiceError::Internal(format!("sync task failed: {e}")))?;
        if done.is_err() {
            self.counts.failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(done?))
    }

    /// Brings workspace directory `dir` of session `id` up to date with the bucket.
    pub async fn pull(&self, id: &str, dir: PathBuf, owner: Option<(u32, u32)>) -> Result<(), ServiceError> {
        let name = id.to_string();
        let report = self.locked(id, move |m, h| m.pull(h, &name, &dir, owner)).await?;
        if let Some(r) = report {
            self.counted(id, "pull", &r, &self.counts.pulls, &self.counts.bytes_down);
        }
        Ok(())
    }

    /// Writes back what changed in session `id`'s workspace directory `dir`.
    pub async fn push(&self, id: &str, dir: PathBuf) -> Result<(), ServiceError> {
        // Local storage has nothing to write back: no disk access on the file API's path.
        if !self.is_remote() || !dir.is_dir() {
            return Ok(()); // nothing here to write back (not cached on this machine)
        }
        let name = id.to_string();
        let report = self.locked(id, move |m, h| m.push(h, &name, &dir)).await?;
        if let Some(r) = report {
            self.counted(id, "push", &r, &self.counts.pushes, &self.counts.bytes_up);
        }
        Ok(())
    }

    fn counted(&self, id: &str, what: &str, r: &SyncReport, times: &AtomicU64, bytes: &AtomicU64) {
        times.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(r.bytes, Ordering::Relaxed);
        if *r != SyncReport::default() {
            tracing::info!(
                session = id,
                what,
                uploaded = r.uploaded,
                downloaded = r.downloaded,
                deleted = r.deleted,
                bytes = r.bytes,
                "workspace synced"
            );
        }
    }

    /// [`Self::push`] in the background; a failure is logged (the next push retries it).
    pub fn push_soon(self: &Arc<Self>, id: &str, dir: PathBuf) {
        if !self.is_remote() {
            return;
        }
        let (storage, id) = (Arc::clone(self), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = storage.push(&id, dir).await {
                tracing::warn!(session = %id, error = %e, "cannot write the workspace back to storage");
            }
        });
    }

    /// Deletes session `id`'s workspace from the bucket.
    pub async fn forget(&self, id: &str) -> Result<(), ServiceError> {
        let name = id.to_string();
        self.locked(id, move |m, h| m.forget(h, &name)).await?;
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        Ok(())
    }

    /// Keeps `archive` in the bucket as template environment build `build`, for the other
    /// replicas; false with local storage (nowhere others could fetch it).
    pub async fn put_environment(&self, build: &str, archive: PathBuf) -> Result<bool, ServiceError> {
        let build_name = build.to_string();
        let key = format!("environment {build}");
        Ok(self.locked(&key, move |m, h| m.put_environment(h, &build_name, &archive)).await?.is_some())
    }

    /// Writes the archive of template environment build `build` to `to`; false with local
    /// storage.
    pub async fn get_environment(&self, build: &str, to: PathBuf) -> Result<bool, ServiceError> {
        let build_name = build.to_string();
        let key = format!("environment {build}");
        Ok(self.locked(&key, move |m, h| m.get_environment(h, &build_name, &to)).await?.is_some())
    }

    /// Deletes template environment build `build` from the bucket.
    pub async fn forget_environment(&self, build: &str) -> Result<(), ServiceError> {
        let build_name = build.to_string();
        let key = format!("environment {build}");
        self.locked(&key, move |m, h| m.forget_environment(h, &build_name)).await?;
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        Ok(())
    }

    /// Whether the bucket answers (`Ok` for local storage).
    pub async fn check(&self) -> Result<(), String> {
        let Some(mirror) = self.mirror.clone() else { return Ok(()) };
        let handle = tokio::runtime::Handle::current();
        let url = mirror.url().to_string();
        let probe = tokio::task::spawn_blocking(move || mirror.check(&handle));
        match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(format!("storage check failed: {e}")),
            Err(_) => Err(format!("{} did not answer within 5 s", url)),
        }
    }
}
