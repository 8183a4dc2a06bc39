//! `GET /metrics` in the Prometheus text format: sessions and executions by status (from the
//! store), bytes in workspaces, warm sandboxes per pool, free space, what the reaper did and,
//! with S3 storage, what workspace syncs moved.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use sandbox_api::{ExecutionStatus, SessionStatus};

use crate::error::ApiError;
use crate::AppState;

const SESSION_STATUSES: [SessionStatus; 3] = [SessionStatus::Running, SessionStatus::Stopped, SessionStatus::Deleted];
const EXECUTION_STATUSES: [ExecutionStatus; 9] = [
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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Bytes every workspace on disk takes ([`sandbox_workspace::Workspace::usage`]).
fn workspace_bytes(state: &AppState) -> u64 {
    let root = state.dirs.workspaces.path("");
    let Ok(entries) = std::fs::read_dir(&root) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| sandbox_workspace::Workspace::open(&e.path(), None).ok())
        .filter_map(|ws| ws.usage().ok())
        .sum()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let (sessions, executions) = state.store.counts()?;
    let count = |rows: &[(String, u64)], status: &str| rows.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
    let mut out = String::new();
    family(&mut out, "sandboxd_sessions", "gauge", "Sessions by status.");
    for s in SESSION_STATUSES {
        let _ = writeln!(out, "sandboxd_sessions{{status=\"{}\"}} {}", s.as_str(), count(&sessions, s.as_str()));
    }
    family(&mut out, "sandboxd_executions", "gauge", "Stored executions by status.");
    for s in EXECUTION_STATUSES {
        let _ = writeln!(out, "sandboxd_executions{{status=\"{}\"}} {}", s.as_str(), count(&executions, s.as_str()));
    }
    let walk = Arc::clone(&state);
    let bytes = tokio::task::spawn_blocking(move || workspace_bytes(&walk))
        .await
        .map_err(|e| ApiError::Internal(format!("workspace walk: {e}")))?;
    family(&mut out, "sandboxd_workspace_bytes", "gauge", "Bytes workspaces take (whole blocks on volumes).");
    let _ = writeln!(out, "sandboxd_workspace_bytes {bytes}");
    family(&mut out, "sandboxd_data_dir_free_bytes", "gauge", "Free space in the data dir.");
    let free = sandbox_sys::fs::free_bytes(&state.config.data_dir).unwrap_or(0);
    let _ = writeln!(out, "sandboxd_data_dir_free_bytes {free}");
    family(&mut out, "sandboxd_pooled_sandboxes", "gauge", "Started sandboxes waiting in a warm pool.");
    let pools = state.pool_counts();
    let _ = writeln!(out, "sandboxd_pooled_sandboxes{{pool=\"run\"}} {}", pools.run);
    for (template, n) in &pools.templates {
        let _ = writeln!(out, "sandboxd_pooled_sandboxes{{pool=\"session\",template=\"{template}\"}} {n}");
    }
    family(
        &mut out,
        "sandboxd_reaper_actions_total",
        "counter",
        "Sessions stopped, workspaces removed and stored executions pruned by the reaper.",
    );
    for (action, n) in crate::lifecycle::counts(&state) {
        let _ = writeln!(out, "sandboxd_reaper_actions_total{{action=\"{action}\"}} {n}");
    }
    if state.dirs.storage.is_remote() {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &state.dirs.storage.counts;
        family(&mut out, "sandboxd_storage_syncs_total", "counter", "Workspace syncs with the S3 bucket.");
        let _ = writeln!(out, "sandboxd_storage_syncs_total{{direction=\"push\"}} {}", c.pushes.load(Relaxed));
        let _ = writeln!(out, "sandboxd_storage_syncs_total{{direction=\"pull\"}} {}", c.pulls.load(Relaxed));
        family(&mut out, "sandboxd_storage_sync_failures_total", "counter", "Workspace syncs that failed.");
        let _ = writeln!(out, "sandboxd_storage_sync_failures_total {}", c.failures.load(Relaxed));
        family(&mut out, "sandboxd_storage_bytes_total", "counter", "Bytes moved by workspace syncs.");
        let _ = writeln!(out, "sandboxd_storage_bytes_total{{direction=\"up\"}} {}", c.bytes_up.load(Relaxed));
        let _ = writeln!(out, "sandboxd_storage_bytes_total{{direction=\"down\"}} {}", c.bytes_down.load(Relaxed));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}
