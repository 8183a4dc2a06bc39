//! A session's execution queue: submissions are checked, given an id (or joined to the one
//! with the same id), queued behind the session's earlier ones, and run in a task of their
//! own that stores the result whoever is still waiting for it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sandbox_api::{
    Callback, CreateExecution, Execution, ExecutionStatus, Language, OnError, Output, Session, SessionStatus,
};
use sandbox_runtime::{LimitKind, OutputSink};
use tokio::sync::{mpsc, watch};

use crate::access::auth::Caller;
use crate::error::ServiceError;
use crate::executions::{self, Code, Plan};
use crate::sessions::live::{Claim, Finished, LiveSession, Ticket};
use crate::Service;

type Result<T> = std::result::Result<T, ServiceError>;

/// How a submission is answered.
pub enum Submission {
    /// It ran (or had run: a repeat of a finished one's id).
    Finished(Execution),
    /// It is queued or running and the caller does not wait (`wait: false`).
    Accepted(Execution),
    /// Its outputs as they come, then how it ended.
    Streaming(ExecutionStream),
}

/// The outputs of an execution as it runs.
pub struct ExecutionStream {
    outputs: mpsc::UnboundedReceiver<Output>,
    finished: watch::Receiver<Finished>,
}

impl ExecutionStream {
    /// The next output, or `None` once it has ended.
    pub async fn next_output(&mut self) -> Option<Output> {
        self.outputs.recv().await
    }

    /// How it ended: the finished execution, or why it could not run.
    pub async fn finished(mut self) -> Result<Execution> {
        match self.finished.wait_for(Option::is_some).await.map(|v| v.clone()) {
            Ok(Some(result)) => result,
            _ => Err(ServiceError::Internal("an execution's task ended without a result".into())),
        }
    }
}

impl Service {
    /// Submits code to session `session_id`'s queue. Everything that can be refused is checked
    /// first. With `stream`, the outputs come as they are made (unless `wait` is false).
    pub async fn submit_execution(
        self: &Arc<Self>,
        caller: &Caller,
        session_id: &str,
        req: CreateExecution,
        stream: bool,
    ) -> Result<Submission> {
        let session = self.active_session(caller, session_id).await?;
        let given_id = req.execution_id.is_some();
        let exec_id = match req.execution_id {
            Some(given) => executions::check_execution_id(given)?,
            None => executions::new_id("exe"),
        };
        let kernel = session.kernel.is_some() && req.language == Language::Python && !req.fresh.unwrap_or(false);
        let code = Code {
            language: req.language,
            code: req.code,
            stdin: req.stdin,
            env: req.env.unwrap_or_default(),
            timeout_s: req.timeout_s,
        };
        let forget = req.forget_context.unwrap_or(false);
        let context = executions::check_context(req.context, forget, kernel)?;
        let mut plan = Plan::in_session(&self.config, &session, exec_id.clone(), code, kernel)?;
        (plan.context, plan.forget_context) = (context, forget);
        let callback_url =
            req.callback_url.map(|u| crate::executions::callback::check_url(&self.outbound, u)).transpose()?;
        let wait = req.wait.unwrap_or(true);

        // Idempotency: a repeat of an id joins the first submission, or finds its record.
        // An id of another session's (perhaps another tenant's) is refused in words that say
        // nothing of that session.
        let taken =
            || ServiceError::Conflict(format!("execution id {exec_id} is taken by another session; choose another"));
        let done = match self.sessions.claim(&exec_id, session_id) {
            Claim::InFlight(rx) => return self.joined(&exec_id, rx, wait).await,
            Claim::Elsewhere => return Err(taken()),
            Claim::New(tx) => tx,
        };
        let claim = ClaimGuard { service: self, id: &exec_id };
        // Only a caller's own id can have been used before (ours are new UUIDs).
        let existing = match given_id {
            true => self.store.get_execution(&exec_id, None).await?,
            false => None,
        };
        if let Some(existing) = existing {
            if existing.session_id.as_deref() != Some(session_id) {
                return Err(taken());
            }
            return Ok(Submission::Finished(existing));
        }

        let mut record = plan.queued_record();
        record.callback = callback_url.map(|url| Callback { url, delivered: false, attempts: Vec::new() });
        let cancel_pending = req.on_error == Some(OnError::CancelPending);
        let (sink, outputs) = match stream && wait {
            true => {
                let (tx, rx) = mpsc::unbounded_channel::<Output>();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let mut finished = done.subscribe();
        self.enqueue(session, plan, &record, cancel_pending, sink, done).await?;
        claim.hand_over();

        if !wait {
            return Ok(Submission::Accepted(record));
        }
        match outputs {
            Some(outputs) => Ok(Submission::Streaming(ExecutionStream { outputs, finished })),
            None => self.finished(&exec_id, &mut finished).await.map(Submission::Finished),
        }
    }

    /// Calls `handler` in session `session_id`'s kernel with `event`, through its queue, and
    /// answers with the finished execution.
    pub async fn invoke(
        self: &Arc<Self>,
        caller: &Caller,
        session_id: &str,
        req: sandbox_api::InvokeRequest,
    ) -> Result<sandbox_api::InvokeResult> {
        let session = self.active_session(caller, session_id).await?;
        if session.kernel.is_none() {
            return Err(ServiceError::Conflict(format!("session {session_id} has no kernel to invoke handlers in")));
        }
        crate::executions::invoke::check_handler(&req.handler)?;
        let exec_id = executions::new_id("exe");
        let event = req.event.unwrap_or(serde_json::Value::Null);
        let code = Code {
            language: Language::Python,
            code: crate::executions::invoke::cell(&req.handler, &event, session_id, &exec_id),
            stdin: None,
            env: BTreeMap::new(),
            timeout_s: req.timeout_s,
        };
        let plan = Plan::in_session(&self.config, &session, exec_id.clone(), code, true)?;
        let (done, mut finished) = watch::channel(None);
        let record = plan.queued_record();
        self.enqueue(session, plan, &record, false, None, done).await?;
        Ok(crate::executions::invoke::result(self.finished(&exec_id, &mut finished).await?))
    }

    /// Puts a validated plan in its session's queue: refuses when the queue is full, stores the
    /// queued record, takes the next ticket and starts the job that waits for it. The job runs
    /// in a task of its own: it finishes and is stored even if the caller goes away, and `done`
    /// tells whoever waits (a repeat of the id included) how it ended.
    async fn enqueue(
        self: &Arc<Self>,
        session: Session,
        plan: Plan,
        record: &Execution,
        cancel_pending: bool,
        sink: Option<OutputSink>,
        done: watch::Sender<Finished>,
    ) -> Result<()> {
        if session.status == SessionStatus::Stopped {
            // It will resume for this execution: one more running session of its tenant.
            crate::access::admission::check_tenant_sessions(self, &session.tenant).await?;
        }
        crate::access::admission::check_tenant_executions(self, &session.tenant).await?;
        let live = self.sessions.live(&session.id);
        let max = self.config.max_queue;
        if live.waiting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_err() {
            return Err(ServiceError::Busy(format!("session {} already has {max} executions waiting", session.id)));
        }
        if let Err(e) = self.store.insert_execution(record, &plan.code, &session.tenant, &self.replica.id).await {
            live.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(e.into());
        }
        let seen_failures = live.failures.load(Ordering::SeqCst);
        let job = Job {
            service: Arc::clone(self),
            session,
            plan,
            record: record.clone(),
            ticket: live.ticket(),
            live,
            seen_failures,
            cancel_pending,
        };
        tokio::spawn(job.run(sink, done));
        Ok(())
    }

    /// Waits for a submission's end: the finished execution, or why it could not run.
    async fn finished(&self, exec_id: &str, finished: &mut watch::Receiver<Finished>) -> Result<Execution> {
        match finished.wait_for(Option::is_some).await.map(|v| v.clone()) {
            Ok(Some(result)) => result,
            // The task ended without a word (it cannot, short of a panic): the store knows.
            _ => self
                .store
                .get_execution(exec_id, None)
                .await?
                .ok_or_else(|| ServiceError::not_found("execution", exec_id)),
        }
    }

    /// A repeat of an id whose execution is still queued or running.
    async fn joined(&self, exec_id: &str, mut finished: watch::Receiver<Finished>, wait: bool) -> Result<Submission> {
        if !wait {
            let current = self
                .store
                .get_execution(exec_id, None)
                .await?
                .ok_or_else(|| ServiceError::not_found("execution", exec_id))?;
            return Ok(Submission::Accepted(current));
        }
        self.finished(exec_id, &mut finished).await.map(Submission::Finished)
    }
}

/// Releases an execution id if the submission stops before its task takes the id over.
struct ClaimGuard<'a> {
    service: &'a Service,
    id: &'a str,
}

impl ClaimGuard<'_> {
    fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.service.sessions.release(self.id);
    }
}

/// One queued execution of a session, from its turn to its stored result.
struct Job {
    service: Arc<Service>,
    session: Session,
    plan: Plan,
    record: Execution,
    live: Arc<LiveSession>,
    ticket: Ticket,
    seen_failures: u64,
    cancel_pending: bool,
}

impl Job {
    async fn run(self, sink: Option<OutputSink>, done: watch::Sender<Finished>) {
        let (service, id) = (Arc::clone(&self.service), self.plan.id.clone());
        let session_id = self.session.id.clone();
        let result = self.run_turn(sink).await;
        if let Ok(exec) = &result {
            if let Some(cb) = &exec.callback {
                tokio::spawn(crate::executions::callback::deliver(Arc::clone(&service), cb.url.clone(), exec.clone()));
            }
        }
        // Files the code wrote go to storage (S3), and count for the tenant's limit, without
        // holding up the answer.
        service.dirs.write_back_soon(&session_id);
        crate::access::admission::record_workspace_bytes_soon(&service, &session_id);
        let _ = done.send(Some(result));
        service.sessions.release(&id);
    }

    async fn run_turn(self, sink: Option<OutputSink>) -> Result<Execution> {
        let Job { service, session, plan, record, live, ticket, seen_failures, cancel_pending } = self;
        let state = &service;
        let turn =
            state.sessions.turn(&live, ticket, &session, state.runtime.as_ref(), &state.dirs, &state.store).await;
        live.waiting.fetch_sub(1, Ordering::SeqCst);
        let turn = match turn {
            Ok(turn) => turn,
            Err(e) => {
                state.store.finish_execution(&executions::never_ran(record, &e)).await?;
                return Err(e);
            }
        };
        if cancel_pending && live.failures.load(Ordering::SeqCst) > seen_failures {
            let cancelled = executions::cancelled(record);
            state.store.finish_execution(&cancelled).await?;
            return Ok(cancelled);
        }
        state.store.mark_running(&plan.id).await?;
        let outcome = turn.sandbox.exec(plan.request(&state.config), sink).await;
        let mut kernel_died = matches!(&outcome, Ok(o) if o.result.kernel_died);
        let mut death = match &outcome {
            Ok(o) if o.result.kernel_died => o.result.kernel_death.as_ref().map(|w| format!("{w}, during {}", plan.id)),
            _ => None,
        };
        if let Ok(Some(why)) = outcome.as_ref().map(|o| o.result.kernel_replaced.as_ref()) {
            // It died between executions: counted on the session, not blamed on this cell.
            state.store.bump_kernel_restarts(&session.id, Some(&format!("{why}, between executions"))).await?;
        }
        if plan.kernel && !kernel_died && matches!(&outcome, Ok(o) if o.limit == Some(LimitKind::Pids)) {
            // Processes the cell forked are copies of the kernel and may still be forking: only
            // a new kernel (its whole session killed) gets the sandbox back under its pid limit.
            // If it cannot start now, the next cell starts one.
            if let Err(e) = turn.sandbox.restart_kernel().await {
                tracing::warn!(session = %session.id, error = %e, "kernel restart after a pid-limit hit failed");
            }
            kernel_died = true;
            death = Some(format!("the pid limit was hit, during {}", plan.id));
        }
        let done = executions::finish(
            Execution { status: ExecutionStatus::Running, ..record },
            outcome,
            turn.live.is_deleted(),
        );
        state.store.finish_execution(&done).await?;
        if kernel_died {
            state.store.bump_kernel_restarts(&session.id, death.as_deref()).await?;
        }
        if done.status.is_failure() {
            live.failures.fetch_add(1, Ordering::SeqCst);
        }
        Ok(done)
    }
}
