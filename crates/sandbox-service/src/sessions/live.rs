//! Sessions: a record in the store, a workspace, and (while in use) a live sandbox.
//!
//! A session's executions run one at a time, in arrival order (queue tickets). The sandbox is
//! started when the session is created, and again on demand if it died, or when a stopped
//! session resumes (idle, past its lifetime, a server restart): a session outlives its
//! sandboxes, and its workspace outlives them all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox_api::{Session, SessionStatus};
use sandbox_runtime::{Runtime, Sandbox};
use sandbox_store::Store;

use crate::error::ServiceError;
use crate::files::copy::{Direction, Manifest};
use crate::files::workspace::HostDirs;

/// The live part of a session.
pub struct LiveSession {
    /// Queue tickets: taken at submission, served in order, one at a time. (A mutex would not
    /// do: each submission runs in a task of its own, and tasks reach a lock in any order.)
    next_ticket: AtomicU64,
    serving: tokio::sync::watch::Sender<u64>,
    /// Executions waiting for their turn (bounded by `max_queue`).
    pub waiting: AtomicUsize,
    /// Executions of this session that failed so far, for `on_error: "cancel_pending"`.
    pub failures: AtomicU64,
    sandbox: Mutex<Option<Arc<dyn Sandbox>>>,
    deleted: AtomicBool,
    /// The last use through the API (a request about it, or the end of an execution).
    last_active: Mutex<Instant>,
    /// When its current sandbox started.
    started: Mutex<Option<Instant>>,
    /// A stop is waiting for its turn (so the idle sweep does not queue a second one).
    pub stopping: AtomicBool,
    /// Held while packages are installed for the session (one installation at a time).
    pub installing: tokio::sync::Mutex<()>,
    /// The workspace's bytes as this replica last recorded them (`u64::MAX`: not yet).
    pub recorded_bytes: AtomicU64,
    /// With a runtime whose sandboxes keep their own workspace: the sandbox's files as last
    /// copied here (held while a copy runs, so copies of one workspace take turns).
    pub copied: tokio::sync::Mutex<Option<Manifest>>,
}

impl Default for LiveSession {
    fn default() -> Self {
        LiveSession {
            next_ticket: AtomicU64::new(0),
            serving: tokio::sync::watch::Sender::new(0),
            waiting: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            sandbox: Mutex::new(None),
            deleted: AtomicBool::new(false),
            last_active: Mutex::new(Instant::now()),
            started: Mutex::new(None),
            stopping: AtomicBool::new(false),
            installing: tokio::sync::Mutex::new(()),
            recorded_bytes: AtomicU64::new(u64::MAX),
            copied: tokio::sync::Mutex::new(None),
        }
    }
}

/// A place in a session's queue. Its holder must wait for its turn with [`Sessions::turn`]:
/// the turn passes on only when the ticket's turn ends.
pub struct Ticket(u64);

/// Passes the session's turn to the next ticket when dropped, however the turn ended.
pub struct TurnGuard<'a> {
    live: &'a LiveSession,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.live.serving.send_modify(|serving| *serving += 1);
    }
}

impl LiveSession {
    /// Takes the next place in the queue (in submission order).
    pub fn ticket(&self) -> Ticket {
        Ticket(self.next_ticket.fetch_add(1, Ordering::SeqCst))
    }

    /// The live sandbox, if any, without waiting for the session's turn.
    pub fn current(&self) -> Option<Arc<dyn Sandbox>> {
        self.sandbox.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take(&self) -> Option<Arc<dyn Sandbox>> {
        self.sandbox.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// Records a use of the session now.
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long it has not been used.
    pub fn idle_for(&self) -> Duration {
        self.last_active.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// How long its sandbox has been running (`None` without one).
    pub fn sandbox_age(&self) -> Option<Duration> {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.elapsed())
    }

    /// Kills its sandbox, if any (an execution in flight ends as killed); the session stays.
    pub async fn suspend(&self) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(sb) = self.take() {
            sb.destroy().await;
        }
    }
}

/// The caller's turn to run in a session, with the sandbox to run in.
pub struct Turn<'a> {
    _guard: TurnGuard<'a>,
    pub sandbox: Arc<dyn Sandbox>,
    pub live: &'a LiveSession,
}

/// How an execution ended, as waiters on it see it.
pub type Finished = Option<Result<sandbox_api::Execution, ServiceError>>;

/// Whether a submission is new, joins one with the same id, or names an id another session's
/// submission holds.
pub enum Claim {
    New(tokio::sync::watch::Sender<Finished>),
    InFlight(tokio::sync::watch::Receiver<Finished>),
    Elsewhere,
}

#[derive(Default)]
pub struct Sessions {
    /// The replica these sessions' sandboxes run on: what a session's record names as its
    /// owner when one resumes here.
    replica: String,
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
    /// Executions submitted and not finished, by id: a repeat of an idempotent request waits
    /// on the first instead of running again.
    /// Each is kept with its session's id: a repeat from another session (maybe another
    /// tenant's) must not join it.
    inflight: Mutex<HashMap<String, (String, tokio::sync::watch::Receiver<Finished>)>>,
    /// The server is shutting down: no sandbox starts any more (a queued execution that got
    /// its turn after the sandboxes were destroyed started a new one, whose volume then stayed
    /// mounted after the server had unmounted the rest).
    closed: std::sync::atomic::AtomicBool,
}

impl Sessions {
    /// The live sessions of replica `replica`.
    pub fn new(replica: &str) -> Sessions {
        Sessions { replica: replica.to_string(), ..Default::default() }
    }

    /// Claims execution id `id` for session `session_id`, or returns the watch of that
    /// session's submission that holds it.
    pub fn claim(&self, id: &str, session_id: &str) -> Claim {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        match inflight.get(id) {
            Some((holder, rx)) if holder == session_id => return Claim::InFlight(rx.clone()),
            Some(_) => return Claim::Elsewhere,
            None => {}
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        inflight.insert(id.to_string(), (session_id.to_string(), rx));
        Claim::New(tx)
    }

    /// Gives up id `id` (its execution finished, or never started).
    pub fn release(&self, id: &str) {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    pub fn live(&self, id: &str) -> Arc<LiveSession> {
        let mut map = self.live.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(id.to_string()).or_default())
    }

    /// Session `id`'s entry, if it has one here (unlike [`Self::live`], never makes one).
    pub fn existing(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Starts a sandbox for `session` (on its workspace) if it has no live one.
    async fn ensure_sandbox(
        closed: &std::sync::atomic::AtomicBool,
        live: &LiveSession,
        session: &Session,
        runtime: &dyn Runtime,
        dirs: &HostDirs,
        store: &Store,
    ) -> Result<Arc<dyn Sandbox>, ServiceError> {
        if let Some(sb) = live.current() {
            if sb.is_alive() {
                return Ok(sb);
            }
            tracing::warn!(session = %session.id, "sandbox died; starting a new one");
            sb.destroy().await;
        }
        if closed.load(Ordering::SeqCst) {
            return Err(ServiceError::NotReady("sandboxd is shutting down".into()));
        }
        // Mounted from here until the sandbox is registered as live, which keeps it mounted.
        let pin = dirs.workspaces.pin(&session.id);
        dirs.prepare(&session.id).await?;
        // The template's own image, if it names one (the built-in one is not stored), and its
        // environment, which may have been built on another replica.
        let template = store.get_template(&session.template).await?;
        if template.as_ref().is_some_and(|t| !t.packages.is_empty()) {
            crate::templates::environment::ensure_here(store, dirs, &session.template).await?;
        }
        let image = template.and_then(|t| t.image);
        let spec = dirs.session_spec(
            &session.id,
            &session.template,
            image.as_deref(),
            Some(&session.tenant),
            crate::executions::limits_from(&session.limits),
        )?;
        // A sandbox that outlives the replica that started it (a cluster's pod) is found again
        // after a restart or an adoption, kernel and all; else a new one starts.
        let found = match runtime.keeps_sandboxes() {
            true => runtime.reattach(&session.id).await?,
            false => None,
        };
        let sb: Arc<dyn Sandbox> = match found {
            Some(sb) => {
                tracing::info!(session = %session.id, "sandbox found again");
                Arc::from(sb)
            }
            None => {
                let sb: Arc<dyn Sandbox> = Arc::from(runtime.create(spec).await?);
                // A sandbox with a disk of its own starts with the workspace's files.
                if runtime.copies_workspace() {
                    match crate::files::copy::copy(Direction::In, Arc::clone(&sb), dirs, &session.id, &live.copied)
                        .await
                    {
                        Ok(copied) if copied.files > 0 => {
                            tracing::info!(session = %session.id, files = copied.files, bytes = copied.bytes, "workspace copied into the sandbox");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            sb.destroy().await;
                            return Err(e);
                        }
                    }
                }
                sb
            }
        };
        record_isolation(store, &session.id, sb.as_ref()).await;
        if session.kernel.is_some() {
            // Warm the kernel while the caller gets on with its request.
            sb.start_kernel(crate::executions::sandbox_env(&session.limits, &session.env)).await?;
        }
        *live.sandbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&sb));
        *live.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if live.is_deleted() {
            // Deleted while we were starting it.
            live.take();
            sb.destroy().await;
            return Err(ServiceError::Conflict(format!("session {} is deleted", session.id)));
        }
        if closed.load(Ordering::SeqCst) {
            // The server began to shut down while we were starting it, and may have unmounted
            // the volumes already: this one goes too.
            live.take();
            sb.destroy().await;
            drop(pin);
            dirs.workspaces.unmount_if_idle(&session.id, || false);
            return Err(ServiceError::NotReady("sandboxd is shutting down".into()));
        }
        drop(pin);
        Ok(sb)
    }

    /// Makes `sandbox` (already running on the session's workspace) the session's sandbox.
    pub async fn adopt(&self, session: &Session, sandbox: Box<dyn Sandbox>, store: &Store) {
        record_isolation(store, &session.id, sandbox.as_ref()).await;
        let live = self.live(&session.id);
        *live.sandbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(sandbox));
        *live.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Starts the first sandbox of a new session.
    pub async fn start(
        &self,
        session: &Session,
        runtime: &dyn Runtime,
        dirs: &HostDirs,
        store: &Store,
    ) -> Result<(), ServiceError> {
        let live = self.live(&session.id);
        Self::ensure_sandbox(&self.closed, &live, session, runtime, dirs, store).await.map(drop)
    }

    /// Waits for `ticket`'s turn and returns it with a live sandbox.
    pub async fn turn<'a>(
        &self,
        live: &'a LiveSession,
        ticket: Ticket,
        session: &Session,
        runtime: &dyn Runtime,
        dirs: &HostDirs,
        store: &Store,
    ) -> Result<Turn<'a>, ServiceError> {
        // Nothing ahead in the queue: `session`, read for this request a moment ago, is as
        // fresh as a read now would be.
        let at_once = *live.serving.borrow() == ticket.0;
        let guard = Self::exclusive(live, ticket).await;
        let deleted = || ServiceError::Conflict(format!("session {} is deleted", session.id));
        if live.is_deleted() {
            return Err(deleted());
        }
        // It ran here then, and its sandbox still does (a stop or a delete since would have
        // taken it, or marked this entry): no need to ask the store again.
        let running_here = live.current().is_some_and(|sb| sb.is_alive());
        if at_once && running_here && session.status == SessionStatus::Running {
            return Ok(Turn { _guard: guard, sandbox: live.current().ok_or_else(deleted)?, live });
        }
        // The store is the truth: a delete that raced with this request (and dropped the live
        // entry this one may have re-created) is visible there, so nothing starts for it.
        match store.get_session(&session.id).await? {
            Some(s) if s.status == SessionStatus::Running => {}
            Some(s) if s.status == SessionStatus::Stopped => {
                if !s.auto_resume {
                    return Err(ServiceError::Conflict(format!(
                        "session {} is stopped ({}); resume it with POST /v1/sessions/{}/resume",
                        s.id,
                        s.stop_reason.as_deref().unwrap_or("stopped"),
                        s.id
                    )));
                }
                self.resume_here(&s, store).await?;
                tracing::info!(session = %s.id, "session resumed for an execution");
            }
            _ => return Err(deleted()),
        }
        let sandbox = Self::ensure_sandbox(&self.closed, live, session, runtime, dirs, store).await?;
        Ok(Turn { _guard: guard, sandbox, live })
    }

    /// Marks stopped session `s` running again, its sandbox on this replica (its owner from
    /// now on); refused if its workspace is gone.
    async fn resume_here(&self, s: &Session, store: &Store) -> Result<(), ServiceError> {
        Self::check_resumable(s)?;
        store.mark_session_resumed(&s.id, &self.replica).await?;
        Ok(())
    }

    /// Refuses to resume a session whose workspace is gone.
    pub fn check_resumable(s: &Session) -> Result<(), ServiceError> {
        match s.workspace_removed_at {
            Some(at) => Err(ServiceError::Conflict(format!(
                "session {} cannot resume: its workspace was removed at {} (retention over, or moved to another session)",
                s.id,
                at.to_rfc3339()
            ))),
            None => Ok(()),
        }
    }

    /// Waits for `ticket`'s turn in `live`'s queue; the turn passes on when the guard drops.
    pub async fn exclusive(live: &LiveSession, ticket: Ticket) -> TurnGuard<'_> {
        let mut serving = live.serving.subscribe();
        // The sender lives in `live`, which outlives this wait, so this cannot fail.
        let _ = serving.wait_for(|now| *now == ticket.0).await;
        TurnGuard { live }
    }

    /// Resumes a stopped session (a new sandbox on its workspace), in its turn.
    pub async fn resume(
        &self,
        session: &Session,
        runtime: &dyn Runtime,
        dirs: &HostDirs,
        store: &Store,
    ) -> Result<(), ServiceError> {
        let live = self.live(&session.id);
        let _turn = Self::exclusive(&live, live.ticket()).await;
        match store.get_session(&session.id).await? {
            Some(s) if s.status == SessionStatus::Stopped => self.resume_here(&s, store).await?,
            Some(s) if s.status == SessionStatus::Running => {}
            _ => return Err(ServiceError::Conflict(format!("session {} is deleted", session.id))),
        }
        live.touch();
        Self::ensure_sandbox(&self.closed, &live, session, runtime, dirs, store).await.map(drop)
    }

    /// Kills the session's sandbox (an execution in flight ends as killed) and forgets it.
    pub async fn destroy(&self, id: &str) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(live) = live {
            live.deleted.store(true, Ordering::SeqCst);
            if let Some(sb) = live.take() {
                sb.destroy().await;
            }
        }
    }

    /// Whether session `id` has a sandbox here now.
    pub fn has_sandbox(&self, id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(id).is_some_and(|l| l.current().is_some())
    }

    /// Sessions with a sandbox here now.
    pub fn with_sandbox(&self) -> Vec<String> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.iter().filter(|(_, l)| l.current().is_some()).map(|(id, _)| id.clone()).collect()
    }

    /// Destroys every live sandbox, and no sandbox starts after it (server shutdown). Where
    /// sandboxes outlive sandboxd (`keep`), they are let go instead, for the next run or the
    /// replica that adopts this one's sessions to find again.
    pub async fn destroy_all(&self, keep: bool) {
        self.closed.store(true, Ordering::SeqCst);
        match keep {
            true => self.let_go_running(),
            false => self.destroy_running().await,
        }
    }

    /// Drops this replica's hold on every live sandbox without ending it: another replica
    /// that adopted the sessions finds the sandboxes again (runtimes whose sandboxes outlive
    /// sandboxd).
    pub fn let_go_running(&self) {
        let all: Vec<Arc<LiveSession>> =
            self.live.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, v)| v).collect();
        all.iter().for_each(|l| drop(l.take()));
    }

    /// Destroys every live sandbox; a session starts a new one where it is next used (this
    /// replica lost its lease, and the database already calls them stopped).
    pub async fn destroy_running(&self) {
        let all: Vec<Arc<LiveSession>> =
            self.live.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, v)| v).collect();
        let mut destroys = tokio::task::JoinSet::new();
        for sb in all.iter().filter_map(|l| l.take()) {
            destroys.spawn(async move { sb.destroy().await });
        }
        while destroys.join_next().await.is_some() {}
    }
}

/// Keeps in the session's record which isolation layers its new sandbox has. A record that
/// cannot be written costs the session nothing else: the sandbox runs either way.
async fn record_isolation(store: &Store, id: &str, sandbox: &dyn Sandbox) {
    if let Err(e) = store.set_isolation(id, &sandbox.isolation()).await {
        tracing::warn!(session = %id, error = %e, "cannot record the sandbox's isolation layers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_execution_id_in_flight_is_joined_only_from_its_own_session() {
        let sessions = Sessions::default();
        let Claim::New(_first) = sessions.claim("exe_a", "ses_1") else { panic!("a new id is claimed") };
        assert!(matches!(sessions.claim("exe_a", "ses_1"), Claim::InFlight(_)), "a repeat joins");
        assert!(matches!(sessions.claim("exe_a", "ses_2"), Claim::Elsewhere), "another session does not");
        sessions.release("exe_a");
        assert!(matches!(sessions.claim("exe_a", "ses_2"), Claim::New(_)));
    }
}
