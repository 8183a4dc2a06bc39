//! Admission control: a new session (or a sandbox for one) is refused with 503 `overloaded`,
//! naming the resource, when the host could not keep its promises.
//!
//! - **Memory**: the memory limits of every sandbox that runs or may run at once (running
//!   sessions, warm pools, the new one) must stay within `--memory-overcommit` times the
//!   host's memory. Four sessions of 8 GiB were admitted on a 23 GiB host.
//! - **Disk**: the quotas of the sessions' workspaces that may still grow (running and stopped
//!   sessions, and the new one) must stay within `--disk-overcommit` times
//!   the disk they can use (what is free plus what they use already), and the data dir must
//!   keep `--min-free-disk-mb` free. 278 volumes promised 2.8 TB against 69 GiB free, and a few
//!   sessions writing their quota would have filled the disk the database writes to.
//!
//! Each tenant is bounded too, whatever the host could give (`--tenant-max-*`): its running
//! sessions and its queued or running executions (429 `tenant_limit`), and the bytes of its
//! workspaces (507), each message naming the limit. Those bytes are measured by the replica
//! that has a workspace, after each change, and summed from the database: the limit holds
//! across replicas.
//!
//! The checks are made on each request with what is known then; two requests at the same
//! moment may both pass. They bound the host, not each byte.

use std::path::Path;

use sandbox_api::SessionStatus;

use crate::error::ServiceError;
use crate::Service;

/// Refuses when a sandbox of `memory_bytes` more would over-commit the host's memory.
pub async fn check_memory(state: &Service, memory_bytes: u64) -> Result<(), ServiceError> {
    let Some(host) = host_memory_bytes() else { return Ok(()) };
    let running = state.store.running_memory_mb().await? << 20;
    let pooled = state.pooled_memory_bytes();
    let committed = running + pooled + memory_bytes;
    let allowed = (host as f64 * state.config.memory_overcommit) as u64;
    if committed > allowed {
        return Err(ServiceError::Overloaded(format!(
            "not enough memory: sandboxes here may use {} MiB already and this one {} MiB more, \
             past the {} MiB allowed ({} MiB of host memory × --memory-overcommit {})",
            (running + pooled) >> 20,
            memory_bytes >> 20,
            allowed >> 20,
            host >> 20,
            state.config.memory_overcommit
        )));
    }
    Ok(())
}

/// Refuses when one more workspace would over-commit the data dir's disk.
pub async fn check_disk(state: &Service) -> Result<(), ServiceError> {
    let c = &state.config;
    let free = sandbox_sys::fs::free_bytes(&c.data_dir).unwrap_or(u64::MAX);
    if free < c.min_free_disk_mb << 20 {
        return Err(ServiceError::Overloaded(format!(
            "not enough free disk: {} MiB free in the data dir, below --min-free-disk-mb {}",
            free >> 20,
            c.min_free_disk_mb
        )));
    }
    // Deleted sessions' workspaces (kept for `workspace_from`) cannot grow: they count by what
    // they use, in `usable`, not by their quota.
    let (sessions, _) = state.store.counts().await?;
    let may_grow = [SessionStatus::Running.as_str(), SessionStatus::Stopped.as_str()];
    let live: u64 = sessions.iter().filter(|(status, _)| may_grow.contains(&status.as_str())).map(|(_, n)| n).sum();
    let workspaces = live + 1;
    let promised = workspaces.saturating_mul(c.workspace_quota_bytes);
    let usable = free.saturating_add(allocated_bytes(&c.data_dir.join("volumes")));
    let allowed = (usable as f64 * c.disk_overcommit) as u64;
    if promised > allowed {
        return Err(ServiceError::Overloaded(format!(
            "not enough disk: {workspaces} workspaces of {} MiB would promise {} MiB, past the {} MiB \
             allowed ({} MiB usable × --disk-overcommit {})",
            c.workspace_quota_bytes >> 20,
            promised >> 20,
            allowed >> 20,
            usable >> 20,
            c.disk_overcommit
        )));
    }
    Ok(())
}

/// Refuses one more running session of `tenant` when it has `--tenant-max-sessions` already.
pub async fn check_tenant_sessions(state: &Service, tenant: &str) -> Result<(), ServiceError> {
    let max = state.config.tenant.max_sessions;
    let running = state.store.running_sessions_of(tenant).await?;
    if max > 0 && running >= max {
        return Err(ServiceError::TenantLimit(format!(
            "tenant {tenant} has {running} running sessions, its limit (--tenant-max-sessions {max}): \
             stop or delete one first"
        )));
    }
    Ok(())
}

/// Refuses one more execution of `tenant` when it has `--tenant-max-executions` queued or
/// running already.
pub async fn check_tenant_executions(state: &Service, tenant: &str) -> Result<(), ServiceError> {
    let max = state.config.tenant.max_executions;
    let active = state.store.active_executions_of(tenant).await?;
    if max > 0 && active >= max {
        return Err(ServiceError::TenantLimit(format!(
            "tenant {tenant} has {active} executions queued or running, its limit \
             (--tenant-max-executions {max}): try again when some have finished"
        )));
    }
    Ok(())
}

/// The bytes of files in `tenant`'s workspaces, but for session `besides`'s: as last recorded,
/// by whichever replica had each ([`record_workspace_bytes`]).
pub async fn tenant_workspace_bytes(state: &Service, tenant: &str, besides: Option<&str>) -> Result<u64, ServiceError> {
    Ok(state.store.tenant_workspace_bytes(tenant, besides).await?)
}

/// Measures session `id`'s workspace here, if it is here, and records its bytes for the
/// tenant's limit on every replica (only when they changed since this replica last did, where
/// it keeps a live entry for the session).
pub async fn record_workspace_bytes(state: &Service, id: &str) -> Result<(), ServiceError> {
    let dirs = std::sync::Arc::clone(&state.dirs);
    let name = id.to_string();
    // Measuring may walk directories: not on the async threads.
    let Some(bytes) = crate::blocking(move || match dirs.workspaces.path(&name).is_dir() {
        true => dirs.workspaces.usage(&name).map(Some),
        false => Ok(None),
    })
    .await?
    else {
        return Ok(());
    };
    // Never a new live entry: a deleted session's is gone for good, and this runs after its
    // delete too. Without one, the bytes are written whether or not they changed.
    let unchanged = state
        .sessions
        .existing(id)
        .is_some_and(|live| live.recorded_bytes.swap(bytes, std::sync::atomic::Ordering::SeqCst) == bytes);
    if !unchanged {
        state.store.set_workspace_bytes(id, bytes).await?;
    }
    Ok(())
}

/// [`record_workspace_bytes`] in the background; a failure is logged (the next change records
/// it again).
pub fn record_workspace_bytes_soon(state: &std::sync::Arc<Service>, id: &str) {
    let (state, id) = (std::sync::Arc::clone(state), id.to_string());
    tokio::spawn(async move {
        if let Err(e) = record_workspace_bytes(&state, &id).await {
            tracing::warn!(session = %id, error = %e, "cannot record the workspace's size");
        }
    });
}

/// The error for `tenant`'s workspaces holding `used` bytes and `adding` more, past `max` MiB.
pub fn tenant_workspaces_full(tenant: &str, max: u64, used: u64, adding: u64) -> ServiceError {
    ServiceError::QuotaExceeded(format!(
        "tenant {tenant}'s workspaces hold {} MiB{}, past its limit (--tenant-max-workspace-mb {max}): \
         delete files or sessions first",
        used >> 20,
        if adding > 0 { format!(" and this adds {} MiB", adding.div_ceil(1 << 20)) } else { String::new() }
    ))
}

/// Refuses a new session of `tenant` when its workspaces hold `--tenant-max-workspace-mb`.
pub async fn check_tenant_workspaces(state: &Service, tenant: &str) -> Result<(), ServiceError> {
    let max_mb = state.config.tenant.max_workspace_mb;
    if max_mb == 0 {
        return Ok(());
    }
    let used = tenant_workspace_bytes(state, tenant, None).await?;
    match used >= max_mb << 20 {
        true => Err(tenant_workspaces_full(tenant, max_mb, used, 0)),
        false => Ok(()),
    }
}

/// `MemTotal` from `/proc/meminfo`, read once.
fn host_memory_bytes() -> Option<u64> {
    static TOTAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(read_mem_total)
}

fn read_mem_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Disk blocks the files directly in `dir` take (the workspace volumes' sparse images).
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_is_read() {
        let m = host_memory_bytes().expect("/proc/meminfo");
        assert!(m > 64 << 20, "{m}");
    }

    #[test]
    fn the_blocks_of_files_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), vec![1u8; 64 << 10]).expect("write");
        assert!(allocated_bytes(dir.path()) >= 64 << 10);
        assert_eq!(allocated_bytes(&dir.path().join("missing")), 0);
    }
}
