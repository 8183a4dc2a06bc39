//! What `/metrics` reports, gathered in one snapshot: sessions and executions by status (from
//! the store), bytes in workspaces, free space, warm sandboxes, what the idle sweep did and,
//! with S3 storage, what workspace syncs moved.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use sandbox_api::{ExecutionStatus, Pools, SessionStatus};

use crate::error::ServiceError;
use crate::Service;

pub const SESSION_STATUSES: [SessionStatus; 3] =
    [SessionStatus::Running, SessionStatus::Stopped, SessionStatus::Deleted];
pub const EXECUTION_STATUSES: [ExecutionStatus; 9] = [
    ExecutionStatus::Queued,
    ExecutionStatus::Running,
    ExecutionStatus::Succeeded,
    ExecutionStatus::Failed,
    ExecutionStatus::TimedOut,
    ExecutionStatus::Killed,
    ExecutionStatus::KernelDied,
    ExecutionStatus::Cancelled,
    ExecutionStatus::Interrupted,
];

pub struct Snapshot {
    pub sessions: Vec<(SessionStatus, u64)>,
    pub executions: Vec<(ExecutionStatus, u64)>,
    /// Bytes every workspace on disk takes ([`sandbox_workspace::Workspace::usage`]).
    pub workspace_bytes: u64,
    pub data_dir_free_bytes: u64,
    pub pools: Pools,
    pub sweeps: [(&'static str, u64); 5],
    pub storage: Option<SyncCounts>,
    /// Template environments this replica built, and fetched from storage.
    pub template_environments: [(&'static str, u64); 2],
}

/// What workspace syncs with the S3 bucket did since start.
pub struct SyncCounts {
    pub pushes: u64,
    pub pulls: u64,
    pub failures: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

fn workspace_bytes(service: &Service) -> u64 {
    let root = service.dirs.workspaces.path("");
    let Ok(entries) = std::fs::read_dir(&root) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| sandbox_workspace::Workspace::open(&e.path(), None).ok())
        .filter_map(|ws| ws.usage().ok())
        .sum()
}

impl Service {
    pub async fn metrics(self: &Arc<Self>) -> Result<Snapshot, ServiceError> {
        let (sessions, executions) = self.store.counts().await?;
        let count =
            |rows: &[(String, u64)], status: &str| rows.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        let walk = Arc::clone(self);
        let workspace_bytes = tokio::task::spawn_blocking(move || workspace_bytes(&walk))
            .await
            .map_err(|e| ServiceError::Internal(format!("workspace walk: {e}")))?;
        let storage = self.dirs.storage.is_remote().then(|| {
            let c = &self.dirs.storage.counts;
            SyncCounts {
                pushes: c.pushes.load(Relaxed),
                pulls: c.pulls.load(Relaxed),
                failures: c.failures.load(Relaxed),
                bytes_up: c.bytes_up.load(Relaxed),
                bytes_down: c.bytes_down.load(Relaxed),
            }
        });
        Ok(Snapshot {
            sessions: SESSION_STATUSES.iter().map(|s| (*s, count(&sessions, s.as_str()))).collect(),
            executions: EXECUTION_STATUSES.iter().map(|s| (*s, count(&executions, s.as_str()))).collect(),
            workspace_bytes,
            data_dir_free_bytes: sandbox_sys::fs::free_bytes(&self.config.data_dir).unwrap_or(0),
            pools: self.pool_counts(),
            sweeps: crate::sessions::lifecycle::counts(self),
            storage,
            template_environments: self.dirs.environments.counts(),
        })
    }
}
