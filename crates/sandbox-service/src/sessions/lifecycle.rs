//! Session lifecycle: idle and lifetime stops, resume, workspace retention and hand-over.
//!
//! A session whose sandbox nobody used for `idle_timeout_s`, or that has run for
//! `max_lifetime_s`, is stopped by the idle sweep: its sandbox (and the memory it holds) goes, the
//! session becomes `stopped` and keeps its workspace. It resumes on `POST .../resume`, or on
//! its next execution when `auto_resume` is on. A stop waits for the session's turn, like an
//! execution, so it never cuts one off. Workspaces of stopped and deleted sessions are removed
//! once `--retention-s` has passed, unless another session took them over (`workspace_from`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sandbox_api::{Session, SessionStatus};

use crate::access::auth::Caller;
use crate::error::ServiceError;
use crate::Service;

/// What the idle sweep did since the server started.
#[derive(Default)]
pub struct SweepCounts {
    pub stopped_idle: AtomicU64,
    pub stopped_lifetime: AtomicU64,
    pub workspaces_removed: AtomicU64,
    pub executions_pruned: AtomicU64,
    pub volumes_unmounted: AtomicU64,
    /// The removal time of the last removed workspace this replica let its copy of go (RFC
    /// 3339; empty: none yet, so the first sweep looks at every removal).
    removals_seen_until: std::sync::Mutex<String>,
}

/// Runs `task` every `seconds` until the server is gone (it holds the state only weakly).
pub(crate) fn spawn_every<F, Fut>(state: &Arc<Service>, seconds: f64, task: F)
where
    F: Fn(Arc<Service>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(state);
    let every = Duration::from_secs_f64(seconds);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(state) = weak.upgrade() else { return };
            task(state).await;
        }
    });
}

/// Runs the idle sweep every `--sweep-interval-s` until the server is gone.
pub fn spawn_idle_sweep(state: &Arc<Service>) {
    spawn_every(state, state.config.sweep_interval_s, |state| async move {
        if let Err(e) = sweep(&state).await {
            tracing::warn!(error = %e, "idle sweep failed");
        }
    });
}

/// Why `session` should stop now, if it should.
fn due(state: &Service, session: &Session) -> Option<&'static str> {
    let live = state.sessions.live(&session.id);
    if live.sandbox_age().is_some_and(|age| age >= Duration::from_secs(session.max_lifetime_s)) {
        return Some("lifetime");
    }
    let quiet = live.waiting.load(Ordering::SeqCst) == 0;
    (quiet && live.idle_for() >= Duration::from_secs(session.idle_timeout_s)).then_some("idle")
}

async fn sweep(state: &Arc<Service>) -> Result<(), ServiceError> {
    // Only the sessions whose sandboxes run here: their idleness is known here, and another
    // replica's are that replica's to stop.
    for session in state.store.sessions_running_on(&state.replica.id).await? {
        if due(state, &session).is_none() {
            continue;
        }
        let live = state.sessions.live(&session.id);
        if live.stopping.swap(true, Ordering::SeqCst) {
            continue; // a stop is already waiting for its turn
        }
        let (state, weak_live) = (Arc::clone(state), Arc::downgrade(&live));
        tokio::spawn(async move {
            stop_when_due(&state, session).await;
            if let Some(live) = weak_live.upgrade() {
                live.stopping.store(false, Ordering::SeqCst);
            }
        });
    }
    // What the replicas share is done by one of them: workspaces whose retention is over leave
    // storage and are marked removed, and old records are pruned.
    if state.does_shared_work().await? {
        if state.config.retention_s > 0 {
            let before = Utc::now() - chrono::Duration::seconds(state.config.retention_s as i64);
            for id in state.store.workspaces_to_remove(before).await? {
                if let Err(e) = state.dirs.storage.forget(&id).await {
                    tracing::warn!(session = %id, error = %e, "cannot remove the workspace from storage; retrying later");
                    continue;
                }
                state.store.mark_workspace_removed(&id, Utc::now()).await?;
                state.sweeps.workspaces_removed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(session = %id, "workspace removed: retention over");
            }
        }
        prune_executions(state).await?;
    }
    remove_local_copies(state).await?;
    crate::templates::sync(state).await;
    for id in state.dirs.workspaces.mounted() {
        unmount_if_idle(state, &id).await;
    }
    Ok(())
}

/// Removes this replica's copies (directories, volumes, caches of storage) of workspaces
/// marked removed since the last look: whichever replica marked them, every replica that held
/// one lets it go.
async fn remove_local_copies(state: &Service) -> Result<(), ServiceError> {
    let since = state.sweeps.removals_seen_until.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let removed = state.store.workspaces_removed_since(&since).await?;
    for (id, _) in &removed {
        if !state.sessions.has_sandbox(id) {
            state.dirs.remove(id);
        }
    }
    if let Some((_, at)) = removed.last() {
        *state.sweeps.removals_seen_until.lock().unwrap_or_else(|p| p.into_inner()) = at.clone();
    }
    Ok(())
}

/// Unmounts session `id`'s workspace volume if the session has no sandbox here and nothing
/// else uses it (see `Volumes::unmount_if_idle`); it mounts again when next used. Volumes of
/// running sessions, warm pools and `/v1/run` are left alone.
pub async fn unmount_if_idle(state: &Service, id: &str) {
    let idle_session = matches!(
        state.store.get_session(id).await,
        Ok(Some(s)) if s.status != SessionStatus::Running
    );
    if idle_session && state.dirs.workspaces.unmount_if_idle(id, || state.sessions.has_sandbox(id)) {
        state.sweeps.volumes_unmounted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %id, "workspace volume unmounted");
    }
}

/// Keeps the store's size bounded: finished executions go after `--execution-retention-s`,
/// and beyond the newest `--max-executions-per-session` of each session.
async fn prune_executions(state: &Service) -> Result<(), ServiceError> {
    let c = &state.config;
    let before = (c.execution_retention_s > 0)
        .then(|| Utc::now() - chrono::Duration::seconds(i64::try_from(c.execution_retention_s).unwrap_or(i64::MAX)));
    let keep = (c.max_executions_per_session > 0).then_some(c.max_executions_per_session);
    let pruned = state.store.prune_executions(before, keep).await?;
    if pruned > 0 {
        state.sweeps.executions_pruned.fetch_add(pruned as u64, Ordering::Relaxed);
        tracing::info!(pruned, "stored executions pruned");
    }
    Ok(())
}

/// Waits for the session's turn (an execution in flight finishes first), checks again that it
/// is due (one may have run meanwhile), then stops its sandbox.
async fn stop_when_due(state: &Service, session: Session) {
    let live = state.sessions.live(&session.id);
    let _turn = crate::sessions::live::Sessions::exclusive(&live, live.ticket()).await;
    let Some(reason) = due(state, &session) else { return };
    // The sandbox goes first: holding the turn, nothing can start a new one meanwhile, and
    // whoever sees "stopped" finds it gone. Its files are saved before.
    crate::files::copy::save_sandbox_files(state, &session.id, true).await;
    live.suspend().await;
    state.remove_kept_sandbox(&session.id).await;
    match state.store.mark_session_stopped(&session.id, reason, Utc::now()).await {
        Ok(true) => {}
        Ok(false) => return, // deleted or stopped meanwhile
        Err(e) => {
            tracing::warn!(session = %session.id, error = %e, "cannot record the stop");
            return;
        }
    }
    write_back(state, &session.id).await;
    unmount_if_idle(state, &session.id).await;
    let counter = if reason == "idle" { &state.sweeps.stopped_idle } else { &state.sweeps.stopped_lifetime };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::info!(session = %session.id, reason, "session stopped");
}

/// Writes a stopped session's workspace back to storage; a failure is logged, and the files
/// stay in the local cache for the next attempt (at resume, or the next start of sandboxd).
/// A running session's sandbox that keeps its own workspace is copied out first.
pub async fn write_back(state: &Service, id: &str) {
    crate::files::copy::save_sandbox_files(state, id, false).await;
    if let Err(e) = state.dirs.write_back(id).await {
        tracing::warn!(session = %id, error = %e, "cannot write the workspace back to storage");
    }
    if let Err(e) = crate::access::admission::record_workspace_bytes(state, id).await {
        tracing::warn!(session = %id, error = %e, "cannot record the workspace's size");
    }
}

/// With S3 storage, or sandboxes that keep their own workspace, writes back every running
/// session's changed files each `--sync-interval-s`.
pub fn spawn_syncer(state: &Arc<Service>) {
    if !state.dirs.storage.is_remote() && !state.runtime.copies_workspace() {
        return;
    }
    spawn_every(state, state.config.sync_interval_s, |state| async move {
        for id in state.sessions.with_sandbox() {
            write_back(&state, &id).await;
        }
    });
}

/// Writes back, in the background, the workspaces of stopped sessions that a previous run may
/// have left unsynced in the local cache (it was killed before it could write them back).
pub fn recover_unsynced(state: &Arc<Service>) {
    if !state.dirs.storage.is_remote() {
        return;
    }
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let stopped = match state.store.sessions_with_status(SessionStatus::Stopped).await {
            Ok(found) => found,
            Err(e) => return tracing::warn!(error = %e, "cannot list stopped sessions to sync"),
        };
        for s in stopped.iter().filter(|s| s.workspace_removed_at.is_none()) {
            write_back(&state, &s.id).await;
        }
    });
}

/// The session named by `workspace_from`, if its workspace may be taken over by `caller`:
/// another tenant's is refused in the words used for one that does not exist.
pub async fn workspace_source(state: &Service, caller: &Caller, from: &str) -> Result<Session, ServiceError> {
    let found = state.store.get_session(from).await?.filter(|s| caller.sees(Some(&s.tenant)));
    let Some(source) = found else {
        return Err(ServiceError::Invalid(format!("workspace_from: session {from} does not exist")));
    };
    if source.status == SessionStatus::Running {
        return Err(ServiceError::Conflict(format!(
            "workspace_from: session {from} is running; stop it first (POST /v1/sessions/{from}/stop)"
        )));
    }
    crate::sessions::live::Sessions::check_resumable(&source)?;
    // With S3 storage, the bucket has it; the directory here may not.
    if !state.dirs.storage.is_remote() && !state.dirs.workspaces.path(from).is_dir() {
        return Err(ServiceError::Conflict(format!("workspace_from: session {from} has no workspace")));
    }
    Ok(source)
}

/// Moves `source`'s workspace to session `to` (before `to`'s sandbox starts on it).
pub async fn take_workspace(state: &Service, source: &Session, to: &str) -> Result<(), ServiceError> {
    state.dirs.prepare(&source.id).await?;
    state.dirs.workspaces.rename(&source.id, to)
}

/// Gives the workspace back when the new session could not start.
pub fn return_workspace(state: &Service, source: &Session, from: &str) {
    if let Err(e) = state.dirs.workspaces.rename(from, &source.id) {
        tracing::error!(session = %source.id, error = %e, "cannot give the workspace back");
    }
}

/// Records the hand-over once session `to` runs: the source is deleted, its workspace gone
/// (from storage too, once `to`'s copy is there).
pub async fn workspace_taken(state: &Service, source: &Session, to: &str) -> Result<(), ServiceError> {
    if state.dirs.storage.is_remote() {
        // The new session runs already: a storage hiccup here must not fail its creation. If
        // its copy is not up yet, the source's objects stay (nothing is lost; they are left
        // in the bucket, logged).
        let moved = match state.dirs.write_back(to).await {
            Ok(()) => state.dirs.storage.forget(&source.id).await,
            Err(e) => Err(e),
        };
        if let Err(e) = moved {
            tracing::warn!(session = %source.id, to, error = %e, "the old workspace's objects stay in storage");
        }
    }
    let now = Utc::now();
    state.store.mark_session_deleted(&source.id, now).await?;
    state.store.mark_workspace_removed(&source.id, now).await?;
    state.dirs.packages.remove(&source.id);
    // The files are the new session's now, for the tenant's limit too.
    crate::access::admission::record_workspace_bytes(state, to).await
}

/// The idle sweep counts, as a snapshot.
pub fn counts(state: &Service) -> [(&'static str, u64); 5] {
    let r = &state.sweeps;
    [
        ("stopped_idle", r.stopped_idle.load(Ordering::Relaxed)),
        ("stopped_lifetime", r.stopped_lifetime.load(Ordering::Relaxed)),
        ("workspace_removed", r.workspaces_removed.load(Ordering::Relaxed)),
        ("execution_pruned", r.executions_pruned.load(Ordering::Relaxed)),
        ("volume_unmounted", r.volumes_unmounted.load(Ordering::Relaxed)),
    ]
}

/// Reconciles the sandboxes a runtime kept running across a restart (a cluster's pods) with
/// the store. Called once at start, before any pool fills:
/// - a running session's sandbox stays, to be found again on the session's next use;
/// - a stopped or deleted session's goes, whichever replica started it;
/// - this replica's pool sandboxes and one-shot runs go: a crash left them with nobody to
///   claim them (the pools fill again with new ones).
///
/// Another replica's pool sandboxes are that replica's to keep. Returns how many went.
pub async fn reconcile_kept_sandboxes(state: &Service) -> usize {
    if !state.runtime.keeps_sandboxes() {
        return 0;
    }
    let kept = match state.runtime.kept_sandboxes().await {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the sandboxes the runtime kept; they are left as they are");
            return 0;
        }
    };
    let mut removed = 0;
    for sandbox in kept {
        let goes = match state.store.get_session(&sandbox.name).await {
            Ok(Some(session)) => session.status != SessionStatus::Running,
            // A pool's sandbox (started under a session id to be) or a one-shot run.
            Ok(None) => sandbox.started_here,
            Err(e) => {
                tracing::warn!(sandbox = %sandbox.name, error = %e, "cannot look the sandbox's session up; it is left");
                false
            }
        };
        if goes {
            state.runtime.remove(&sandbox.name).await;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed the sandboxes a restart left with no running session");
    }
    removed
}

/// Removes the directories a crash left behind with no session to own them: the workspaces
/// (and package directories) of warm sandboxes and one-shot runs. Called once at start, before
/// any pool fills; a workspace named by a session record, of any status, is never touched.
pub async fn remove_orphans(state: &Service) -> usize {
    let Ok(entries) = std::fs::read_dir(state.dirs.workspaces.path("")) else { return 0 };
    let mut removed = 0;
    for name in entries.flatten().filter_map(|e| e.file_name().into_string().ok()) {
        let orphan = match name.split_once(['_', '-']) {
            // One-shot runs and the run pool: never kept past their sandbox.
            Some(("run", _)) => true,
            // A session pool's sandbox is started under its session's future id.
            Some(("ses", _)) => matches!(state.store.get_session(&name).await, Ok(None)),
            _ => false,
        };
        if orphan {
            state.dirs.remove(&name);
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed the workspaces of sandboxes a crash left without a session");
    }
    removed
}
