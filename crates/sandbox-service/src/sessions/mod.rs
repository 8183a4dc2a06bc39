//! The session service: create (from a template, a warm pool, or another session's
//! workspace), look up, stop, resume and delete sessions.

pub mod lifecycle;
pub mod live;
pub mod pool;

use chrono::Utc;
use sandbox_api::{CreateSession, Session, SessionStatus};

use crate::access::admission;
use crate::access::auth::Caller;
use crate::error::ServiceError;
use crate::{executions, templates, Service};

type Result<T> = std::result::Result<T, ServiceError>;

impl Service {
    /// Session `id`, whatever its status and whoever's it is (for the service's own work).
    pub(crate) async fn session_record(&self, id: &str) -> Result<Session> {
        self.store.get_session(id).await?.ok_or_else(|| ServiceError::not_found("session", id))
    }

    /// Session `id`, whatever its status, if `caller` may see it; another tenant's is not
    /// found, in the same words as one that never was.
    pub async fn session(&self, caller: &Caller, id: &str) -> Result<Session> {
        let session = self.session_record(id).await?;
        match caller.sees(Some(&session.tenant)) {
            true => Ok(session),
            false => Err(ServiceError::not_found("session", id)),
        }
    }

    /// A page of the sessions `caller` sees, deleted ones included, oldest first, and the next
    /// page's cursor.
    pub async fn sessions(&self, caller: &Caller, page: crate::Page) -> Result<(Vec<Session>, Option<String>)> {
        let p = self.store.page_sessions(page.limit(), page.cursor.as_deref(), caller.scope()).await?;
        Ok((p.items, p.next))
    }

    /// A session that may still be worked in: not found if unknown (or not `caller`'s to see),
    /// a conflict if deleted. Counts as a use of it (an idle session is one nobody asked
    /// anything of for a while).
    pub async fn active_session(&self, caller: &Caller, id: &str) -> Result<Session> {
        let session = self.session(caller, id).await?;
        if session.status == SessionStatus::Deleted {
            return Err(ServiceError::Conflict(format!("session {id} is deleted")));
        }
        self.runs_here(&session).await?;
        self.sessions.live(id).touch();
        Ok(session)
    }

    /// Creates a session and starts its sandbox: a warm one from its template's pool when the
    /// session is like the pool's, else a new one. With `workspace_from`, it takes over a
    /// stopped or deleted session's files (one `caller` sees). It belongs to `caller`'s
    /// tenant. Nothing is left behind if the start fails.
    pub async fn create_session(&self, caller: &Caller, req: CreateSession) -> Result<Session> {
        let config = &self.config;
        let template =
            templates::for_session(self, caller, req.template.as_deref().unwrap_or(templates::DEFAULT)).await?;
        let mut env = template.env.clone();
        env.extend(req.env.unwrap_or_default());
        executions::check_env(&env)?;
        let kernel = match req.kernel.as_deref() {
            None => template.kernel.clone(),
            given => templates::check_kernel(given)?,
        };
        let idle_timeout_s = templates::check_seconds("idle_timeout_s", req.idle_timeout_s, template.idle_timeout_s)?;
        let max_lifetime_s = templates::check_seconds("max_lifetime_s", req.max_lifetime_s, template.max_lifetime_s)?;
        let source = match req.workspace_from.as_deref() {
            Some(from) => Some(lifecycle::workspace_source(self, caller, from).await?),
            None => None,
        };
        let session = Session {
            id: executions::new_id("ses"),
            tenant: caller.tenant().to_string(),
            status: SessionStatus::Running,
            template: template.name.clone(),
            env,
            limits: templates::session_limits(self, &template, req.limits.as_ref())?,
            timeout_s: executions::check_timeout(config, req.timeout_s, template.timeout_s)?,
            metadata: req.metadata.unwrap_or_default(),
            kernel,
            kernel_restarts: 0,
            last_kernel_death: None,
            isolation: None,
            replica: None,
            from_pool: false,
            idle_timeout_s,
            max_lifetime_s,
            auto_resume: req.auto_resume.unwrap_or(true),
            stop_reason: None,
            stopped_at: None,
            workspace_removed_at: None,
            created_at: Utc::now(),
            deleted_at: None,
        };
        admission::check_tenant_sessions(self, &session.tenant).await?;
        admission::check_tenant_workspaces(self, &session.tenant).await?;
        admission::check_memory(self, session.limits.memory_mb << 20).await?;
        if source.is_none() {
            admission::check_disk(self).await?;
        }
        if let Some(source) = &source {
            // Its files become this session's before the sandbox starts on them.
            lifecycle::take_workspace(self, source, &session.id).await?;
        }
        // A session like its template's pool (same limits and env, a Python kernel) takes a warm sandbox.
        let pool = self
            .session_pool(&template.name)
            .filter(|_| templates::poolable(&template, &session) && req.workspace_from.is_none());
        if let Some((pool, warm)) = pool.and_then(|p| p.take(&self.dirs).map(|w| (p, w))) {
            pool.refill(&self.runtime, &self.dirs);
            // The warm sandbox was started under this session's id (see `pool.rs`).
            let session = Session { id: warm.name.clone(), from_pool: true, ..session };
            if let Err(e) = self.store.insert_session(&session, &self.replica.id).await {
                warm.sandbox.destroy().await;
                self.dirs.remove(&warm.name);
                return Err(e.into());
            }
            self.sessions.adopt(&session, warm.sandbox, &self.store).await;
            tracing::info!(session = %session.id, template = %session.template, "session created from the warm pool");
            return self.session_record(&session.id).await;
        }
        let started = match self.store.insert_session(&session, &self.replica.id).await {
            Ok(()) => self.sessions.start(&session, self.runtime.as_ref(), &self.dirs, &self.store).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = started {
            self.sessions.destroy(&session.id).await;
            if let Some(source) = &source {
                lifecycle::return_workspace(self, source, &session.id);
            }
            self.dirs.remove(&session.id);
            self.store.delete_session_record(&session.id).await?;
            return Err(e);
        }
        if let Some(source) = &source {
            lifecycle::workspace_taken(self, source, &session.id).await?;
            tracing::info!(session = %session.id, from = %source.id, "session created on another's workspace");
        }
        tracing::info!(session = %session.id, "session created");
        self.session_record(&session.id).await
    }

    /// Deletes a session: its sandbox and packages go at once; its record stays (as `deleted`)
    /// and its workspace stays for the retention period (for `workspace_from`). Deleting a
    /// deleted session does nothing.
    pub async fn delete_session(&self, caller: &Caller, id: &str) -> Result<()> {
        let session = self.session(caller, id).await?;
        if session.status == SessionStatus::Deleted {
            return Ok(());
        }
        self.runs_here(&session).await?;
        self.store.mark_session_deleted(id, Utc::now()).await?;
        // Kept for the retention period (`workspace_from`), whatever the runtime.
        crate::files::copy::save_sandbox_files(self, id, true).await;
        self.sessions.destroy(id).await;
        self.remove_kept_sandbox(id).await;
        lifecycle::write_back(self, id).await;
        self.dirs.packages.remove(id);
        lifecycle::unmount_if_idle(self, id).await;
        tracing::info!(session = %id, "session deleted");
        Ok(())
    }

    /// Removes what a runtime whose sandboxes outlive sandboxd still runs of session `id`
    /// with no handle here (a pod of a lost replica's, not yet found again).
    pub(crate) async fn remove_kept_sandbox(&self, id: &str) {
        if self.runtime.keeps_sandboxes() {
            self.runtime.remove(id).await;
        }
    }

    /// Starts a new sandbox on a stopped session's workspace (a fresh kernel; the files are
    /// there). A running session is left as it is.
    pub async fn resume_session(&self, caller: &Caller, id: &str) -> Result<Session> {
        let session = self.active_session(caller, id).await?;
        if session.status == SessionStatus::Stopped {
            admission::check_tenant_sessions(self, &session.tenant).await?;
            admission::check_memory(self, session.limits.memory_mb << 20).await?;
        }
        self.sessions.resume(&session, self.runtime.as_ref(), &self.dirs, &self.store).await?;
        tracing::info!(session = %id, "session resumed");
        self.session_record(id).await
    }

    /// Lets the session's sandbox run `seconds` more from now, then stop (its lifetime is
    /// set to its age plus `seconds`): how a client keeps a sandbox it still uses, or ends one
    /// sooner.
    pub async fn set_session_timeout(&self, caller: &Caller, id: &str, seconds: u64) -> Result<Session> {
        let session = self.active_session(caller, id).await?;
        let seconds = templates::check_seconds("timeout", Some(seconds.max(1)), seconds)?;
        let age = self.sessions.live(id).sandbox_age().unwrap_or_default().as_secs();
        let lifetime = age.saturating_add(seconds).min(templates::MAX_SECONDS);
        self.store.set_max_lifetime(&session.id, lifetime).await?;
        self.session_record(id).await
    }

    /// When the session's sandbox ends: when it stopped, or, while it runs, when its lifetime
    /// runs out.
    pub fn sandbox_ends_at(&self, s: &Session) -> chrono::DateTime<Utc> {
        if let Some(stopped) = s.stopped_at.or(s.deleted_at) {
            return stopped;
        }
        let age = self.sessions.live(&s.id).sandbox_age().unwrap_or_default();
        let left = s.max_lifetime_s.saturating_sub(age.as_secs());
        Utc::now() + chrono::Duration::seconds(i64::try_from(left).unwrap_or(i64::MAX / 1000))
    }

    /// Stops the session's sandbox now (a running execution ends as killed); the workspace
    /// stays and the session resumes on demand.
    pub async fn stop_session(&self, caller: &Caller, id: &str) -> Result<Session> {
        self.active_session(caller, id).await?;
        if self.store.mark_session_stopped(id, "user", Utc::now()).await? {
            crate::files::copy::save_sandbox_files(self, id, true).await;
            self.sessions.live(id).suspend().await;
            self.remove_kept_sandbox(id).await;
            lifecycle::write_back(self, id).await;
            lifecycle::unmount_if_idle(self, id).await;
            tracing::info!(session = %id, "session stopped by request");
        }
        self.session_record(id).await
    }
}
