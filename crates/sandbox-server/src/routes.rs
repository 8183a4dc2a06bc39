//! HTTP handlers of API v1. Each is short: validate, call into sessions/executions, store.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use sandbox_api::{Callback, ExecutionStatus, OnError, Output, StreamName};
use sandbox_api::{
    Check, CreateExecution, CreateSession, Execution, ExecutionList, Interrupted, Language, Readiness, RunRequest,
    Session, SessionList, SessionStatus,
};
use sandbox_runtime::{LimitKind, OutputSink, SandboxSpec};
use std::sync::atomic::Ordering;

use crate::error::ApiError;
use crate::execution::{self, Plan};
use crate::extract::ApiJson;
use crate::session::{limits_from, Claim, Finished, LiveSession, Ticket};
use crate::template;
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process serves")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Readiness, description = "Sandboxes can be created"),
    (status = 503, body = Readiness, description = "Not ready; the checks say why"),
))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let runtime = state.runtime.readiness().await;
    let store = match state.store.check_writable() {
        Ok(()) => Check { ok: true, message: "ok".into() },
        Err(e) => Check { ok: false, message: e.to_string() },
    };
    let free = sandbox_sys::fs::free_bytes(&state.config.data_dir).unwrap_or(0);
    let disk = match free {
        f if f < MIN_FREE_BYTES => Check { ok: false, message: format!("only {} MiB free in the data dir", f >> 20) },
        f => Check { ok: true, message: format!("{} MiB free", f >> 20) },
    };
    let local = sandbox_workspace::check_writable(&state.dirs.workspaces.path("")).map_err(|e| e.to_string());
    let mut quota = match &state.volume_note {
        None => "workspaces are volumes: the quota holds for code too".to_string(),
        Some(why) => format!("code writes are not held to the quota ({why})"),
    };
    if let Some(why) = &state.dirs.system.note {
        quota.push_str(&format!("; host paths show in sandboxes' mount tables ({why})"));
    }
    let storage = match local.and(state.dirs.storage.check().await) {
        Ok(()) if state.dirs.storage.is_remote() => Check {
            ok: true,
            message: format!("{} reachable; local cache writable; {quota}", state.dirs.storage.describe()),
        },
        Ok(()) => Check { ok: true, message: format!("local data dir writable; {quota}") },
        Err(e) => Check { ok: false, message: format!("workspace storage: {e}") },
    };
    let ready = runtime.ready && store.ok && disk.ok && storage.ok;
    if runtime.ready {
        // Pools fill at start only if the host was ready then; top them up once it is.
        state.refill_pools();
    }
    let body = Readiness {
        ready,
        runtime: runtime.runtime.to_string(),
        sandbox: Check { ok: runtime.ready, message: runtime.message },
        cgroup: runtime.cgroup,
        store,
        disk,
        data_dir_free_bytes: free,
        storage,
        pools: state.pool_counts(),
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Below this much free space in the data dir, sandboxd is not ready.
const MIN_FREE_BYTES: u64 = 64 << 20;

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("{what} {id} not found"))
}

fn session_or_404(state: &AppState, id: &str) -> Result<Session> {
    state.store.get_session(id)?.ok_or_else(|| not_found("session", id))
}

/// A session that may still be worked in: 404 if unknown, 409 if deleted. Counts as a use of
/// it (an idle session is one nobody asked anything of for a while).
pub(crate) fn active_session(state: &AppState, id: &str) -> Result<Session> {
    let session = session_or_404(state, id)?;
    if session.status == SessionStatus::Deleted {
        return Err(ApiError::Conflict(format!("session {id} is deleted")));
    }
    state.sessions.live(id).touch();
    Ok(session)
}

#[utoipa::path(post, path = "/v1/sessions", request_body = CreateSession, responses(
    (status = 201, body = Session), (status = 400, body = sandbox_api::ErrorBody),
    (status = 422, body = sandbox_api::ErrorBody), (status = 503, body = sandbox_api::ErrorBody),
))]
pub async fn create_session(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<Session>)> {
    let config = &state.config;
    let template = template::for_session(&state, req.template.as_deref().unwrap_or(template::DEFAULT))?;
    let mut env = template.env.clone();
    env.extend(req.env.unwrap_or_default());
    execution::check_env(&env)?;
    let kernel = match req.kernel.as_deref() {
        None => template.kernel.clone(),
        given => template::check_kernel(given)?,
    };
    let idle_timeout_s = template::check_seconds("idle_timeout_s", req.idle_timeout_s, template.idle_timeout_s)?;
    let max_lifetime_s = template::check_seconds("max_lifetime_s", req.max_lifetime_s, template.max_lifetime_s)?;
    let source =
        req.workspace_from.as_deref().map(|from| crate::lifecycle::workspace_source(&state, from)).transpose()?;
    let session = Session {
        id: execution::new_id("ses"),
        status: SessionStatus::Running,
        template: template.name.clone(),
        env,
        limits: template::session_limits(&state, &template, req.limits.as_ref())?,
        timeout_s: execution::check_timeout(config, req.timeout_s, template.timeout_s)?,
        metadata: req.metadata.unwrap_or_default(),
        kernel,
        kernel_restarts: 0,
        last_kernel_death: None,
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
    crate::admission::check_memory(&state, session.limits.memory_mb << 20)?;
    if source.is_none() {
        crate::admission::check_disk(&state)?;
    }
    if let Some(source) = &source {
        // Its files become this session's before the sandbox starts on them.
        crate::lifecycle::take_workspace(&state, source, &session.id).await?;
    }
    // A session like its template's pool (same limits and env, a Python kernel) takes a warm sandbox.
    let pool = state
        .session_pool(&template.name)
        .filter(|_| template::poolable(&template, &session) && req.workspace_from.is_none());
    if let Some((pool, warm)) = pool.and_then(|p| p.take(&state.dirs).map(|w| (p, w))) {
        pool.refill(&state.runtime, &state.dirs);
        if state.dirs.rename(&warm.name, &session.id).is_ok() {
            let session = Session { from_pool: true, ..session };
            state.store.insert_session(&session)?;
            state.sessions.adopt(&session, warm.sandbox);
            tracing::info!(session = %session.id, template = %session.template, "session created from the warm pool");
            return Ok((StatusCode::CREATED, Json(session)));
        }
        warm.sandbox.destroy().await;
        state.dirs.remove(&warm.name);
    }
    let started = match state.store.insert_session(&session) {
        Ok(()) => state.sessions.start(&session, state.runtime.as_ref(), &state.dirs).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = started {
        state.sessions.stop(&session.id).await;
        if let Some(source) = &source {
            crate::lifecycle::return_workspace(&state, source, &session.id);
        }
        state.dirs.remove(&session.id);
        state.store.delete_session_record(&session.id)?;
        return Err(e);
    }
    if let Some(source) = &source {
        crate::lifecycle::workspace_taken(&state, source, &session.id).await?;
        tracing::info!(session = %session.id, from = %source.id, "session created on another's workspace");
    }
    tracing::info!(session = %session.id, "session created");
    Ok((StatusCode::CREATED, Json(session)))
}

#[utoipa::path(get, path = "/v1/sessions", responses((status = 200, body = SessionList)))]
pub async fn list_sessions(State(state): State<Arc<AppState>>) -> Result<Json<SessionList>> {
    Ok(Json(SessionList { sessions: state.store.list_sessions()? }))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", responses((status = 200, body = Session), (status = 404, body = sandbox_api::ErrorBody)))]
pub async fn get_session(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Session>> {
    Ok(Json(session_or_404(&state, &id)?))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", responses((status = 204), (status = 404, body = sandbox_api::ErrorBody)))]
pub async fn delete_session(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<StatusCode> {
    let session = session_or_404(&state, &id)?;
    if session.status == SessionStatus::Deleted {
        return Ok(StatusCode::NO_CONTENT);
    }
    state.store.mark_session_deleted(&id, Utc::now())?;
    state.sessions.stop(&id).await;
    // The workspace stays for the retention period (for `workspace_from`); its packages go.
    crate::lifecycle::write_back(&state, &id).await;
    state.dirs.packages.remove(&id);
    crate::lifecycle::unmount_if_idle(&state, &id);
    tracing::info!(session = %id, "session deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sessions/{id}/executions", request_body = CreateExecution, responses(
    (status = 200, body = Execution, description = "The finished execution; with `Accept: text/event-stream`, \
        Server-Sent Events as it runs: `stdout`/`stderr` (text), `display`, `result`, `error` (the output as JSON), \
        then `done` (the execution as JSON)"),
    (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
    (status = 413, body = sandbox_api::ErrorBody), (status = 422, body = sandbox_api::ErrorBody),
))]
pub async fn create_execution(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateExecution>,
) -> Result<Response> {
    // Everything that can be refused is checked before any answer starts.
    let session = active_session(&state, &id)?;
    let exec_id = match req.execution_id {
        Some(given) => execution::check_execution_id(given)?,
        None => execution::new_id("exe"),
    };
    let mut env = execution::sandbox_env(&session.limits, &session.env);
    env.extend(req.env.unwrap_or_default());
    let plan = Plan {
        id: exec_id.clone(),
        session_id: Some(id.clone()),
        language: req.language,
        code: req.code,
        stdin: req.stdin,
        env,
        timeout_s: execution::check_timeout(&state.config, req.timeout_s, session.timeout_s)?,
        kernel: session.kernel.is_some() && req.language == Language::Python && !req.fresh.unwrap_or(false),
    };
    plan.validate()?;
    let callback_url = req.callback_url.map(|u| crate::callback::check_url(&state.outbound, u)).transpose()?;
    let wait = req.wait.unwrap_or(true);
    let wants_events =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));

    // Idempotency: a repeat of an id joins the first submission, or finds its record.
    let done = match state.sessions.claim(&exec_id) {
        Claim::InFlight(rx) => return joined(&state, &exec_id, rx, wait).await,
        Claim::New(tx) => tx,
    };
    let claim = ClaimGuard { state: &state, id: &exec_id };
    if let Some(existing) = state.store.get_execution(&exec_id)? {
        if existing.session_id.as_deref() != Some(id.as_str()) {
            return Err(ApiError::Conflict(format!("execution id {exec_id} belongs to another session")));
        }
        return Ok(Json(existing).into_response());
    }

    let mut record = plan.queued_record();
    record.callback = callback_url.map(|url| Callback { url, delivered: false, attempts: Vec::new() });
    let cancel_pending = req.on_error == Some(OnError::CancelPending);
    let (sink, outputs) = match wants_events && wait {
        true => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Output>();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let mut finished = done.subscribe();
    enqueue(&state, session, plan, &record, cancel_pending, sink, done)?;
    claim.hand_over();

    if !wait {
        return Ok((StatusCode::ACCEPTED, Json(record)).into_response());
    }
    let Some(mut outputs) = outputs else {
        return finished_response(&state, &exec_id, &mut finished).await;
    };
    // Outputs are forwarded as they come, then `done` (or `error` if the run was refused).
    let (events, stream) = tokio::sync::mpsc::unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        while let Some(output) = outputs.recv().await {
            let _ = events.send(output_event(&output));
        }
        let last = match finished.wait_for(Option::is_some).await.map(|v| v.clone()) {
            Ok(Some(Ok(exec))) => SseEvent::default().event("done").json_data(&exec),
            Ok(Some(Err(e))) => SseEvent::default().event("error").json_data(e.body()),
            _ => return,
        };
        if let Ok(last) = last {
            let _ = events.send(last);
        }
    });
    Ok(Sse::new(ChannelStream(stream)).keep_alive(KeepAlive::default()).into_response())
}

/// Puts a validated plan in its session's queue: refuses when the queue is full, stores the
/// queued record, takes the next ticket and starts the job that waits for it. The job runs in a
/// task of its own: it finishes and is stored even if the client goes away, and `done` tells
/// whoever waits (a repeat of the id included) how it ended.
fn enqueue(
    state: &Arc<AppState>,
    session: Session,
    plan: Plan,
    record: &Execution,
    cancel_pending: bool,
    sink: Option<OutputSink>,
    done: tokio::sync::watch::Sender<Finished>,
) -> Result<()> {
    let live = state.sessions.live(&session.id);
    let max = state.config.max_queue;
    if live.waiting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_err() {
        return Err(ApiError::RateLimited(format!("session {} already has {max} executions waiting", session.id)));
    }
    if let Err(e) = state.store.insert_execution(record, &plan.code) {
        live.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(e.into());
    }
    let seen_failures = live.failures.load(Ordering::SeqCst);
    let job = Job {
        state: Arc::clone(state),
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

/// Releases an execution id if the submission stops before its task takes the id over.
struct ClaimGuard<'a> {
    state: &'a AppState,
    id: &'a str,
}

impl ClaimGuard<'_> {
    fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.state.sessions.release(self.id);
    }
}

/// The answer for a submission that waits: the finished execution, or why it could not run.
async fn finished_response(
    state: &AppState,
    exec_id: &str,
    finished: &mut tokio::sync::watch::Receiver<Finished>,
) -> Result<Response> {
    match finished.wait_for(Option::is_some).await.map(|v| v.clone()) {
        Ok(Some(Ok(exec))) => Ok(Json(exec).into_response()),
        Ok(Some(Err(e))) => Err(e),
        // The task ended without a word (it cannot, short of a panic): the store knows.
        _ => {
            Ok(Json(state.store.get_execution(exec_id)?.ok_or_else(|| not_found("execution", exec_id))?)
                .into_response())
        }
    }
}

/// A repeat of an id whose execution is still queued or running.
async fn joined(
    state: &AppState,
    exec_id: &str,
    mut finished: tokio::sync::watch::Receiver<Finished>,
    wait: bool,
) -> Result<Response> {
    if !wait {
        let current = state.store.get_execution(exec_id)?.ok_or_else(|| not_found("execution", exec_id))?;
        return Ok((StatusCode::ACCEPTED, Json(current)).into_response());
    }
    finished_response(state, exec_id, &mut finished).await
}

/// One queued execution of a session, from its turn to its stored result.
struct Job {
    state: Arc<AppState>,
    session: Session,
    plan: Plan,
    record: Execution,
    live: Arc<LiveSession>,
    ticket: Ticket,
    seen_failures: u64,
    cancel_pending: bool,
}

impl Job {
    async fn run(self, sink: Option<OutputSink>, done: tokio::sync::watch::Sender<Finished>) {
        let (state, id) = (Arc::clone(&self.state), self.plan.id.clone());
        let session_id = self.session.id.clone();
        let result = self.run_turn(sink).await;
        if let Ok(exec) = &result {
            if let Some(cb) = &exec.callback {
                tokio::spawn(crate::callback::deliver(Arc::clone(&state), cb.url.clone(), exec.clone()));
            }
        }
        // Files the code wrote go to storage (S3) without holding up the answer.
        state.dirs.write_back_soon(&session_id);
        let _ = done.send(Some(result));
        state.sessions.release(&id);
    }

    async fn run_turn(self, sink: Option<OutputSink>) -> Result<Execution> {
        let Job { state, session, plan, record, live, ticket, seen_failures, cancel_pending } = self;
        let turn =
            state.sessions.turn(&live, ticket, &session, state.runtime.as_ref(), &state.dirs, &state.store).await;
        live.waiting.fetch_sub(1, Ordering::SeqCst);
        let turn = match turn {
            Ok(turn) => turn,
            Err(e) => {
                // Never run (deleted meanwhile, or no sandbox could start): say so in its record.
                let (status, reason) = match &e {
                    ApiError::Conflict(_) => (ExecutionStatus::Killed, "session_deleted"),
                    _ => (ExecutionStatus::Failed, "not_started"),
                };
                let failed = Execution {
                    status,
                    reason: Some(reason.into()),
                    stderr: e.to_string(),
                    finished_at: Some(Utc::now()),
                    ..record
                };
                state.store.finish_execution(&failed)?;
                return Err(e);
            }
        };
        if cancel_pending && live.failures.load(Ordering::SeqCst) > seen_failures {
            let cancelled = Execution {
                status: ExecutionStatus::Cancelled,
                reason: Some("earlier_failure".into()),
                duration_ms: Some(0),
                finished_at: Some(Utc::now()),
                ..record
            };
            state.store.finish_execution(&cancelled)?;
            return Ok(cancelled);
        }
        state.store.mark_running(&plan.id)?;
        let outcome = turn.sandbox.exec(plan.request(&state.config), sink).await;
        let mut kernel_died = matches!(&outcome, Ok(o) if o.result.kernel_died);
        let mut death = match &outcome {
            Ok(o) if o.result.kernel_died => o.result.kernel_death.as_ref().map(|w| format!("{w}, during {}", plan.id)),
            _ => None,
        };
        if let Ok(Some(why)) = outcome.as_ref().map(|o| o.result.kernel_replaced.as_ref()) {
            // It died between executions: counted on the session, not blamed on this cell.
            state.store.bump_kernel_restarts(&session.id, Some(&format!("{why}, between executions")))?;
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
        let done = execution::finish(
            Execution { status: ExecutionStatus::Running, ..record },
            outcome,
            turn.live.is_deleted(),
        );
        state.store.finish_execution(&done)?;
        if kernel_died {
            state.store.bump_kernel_restarts(&session.id, death.as_deref())?;
        }
        if done.status.is_failure() {
            live.failures.fetch_add(1, Ordering::SeqCst);
        }
        Ok(done)
    }
}

/// One output as a Server-Sent Event.
fn output_event(output: &Output) -> SseEvent {
    let named = |name: &str| SseEvent::default().event(name);
    match output {
        Output::Stream { name: StreamName::Stdout, text } => named("stdout").data(text),
        Output::Stream { name: StreamName::Stderr, text } => named("stderr").data(text),
        Output::DisplayData { .. } => named("display").json_data(output).unwrap_or_default(),
        Output::ExecuteResult { .. } => named("result").json_data(output).unwrap_or_default(),
        Output::Error { .. } => named("error").json_data(output).unwrap_or_default(),
    }
}

/// A channel as the stream axum's SSE wants.
struct ChannelStream(tokio::sync::mpsc::UnboundedReceiver<SseEvent>);

impl futures_core::Stream for ChannelStream {
    type Item = std::result::Result<SseEvent, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| event.map(Ok))
    }
}

#[utoipa::path(get, path = "/v1/sessions/{id}/executions",
    params(("id" = String, Path), ("outputs" = Option<bool>, Query, description = "Include stdout, stderr and outputs (summaries leave them empty)")),
    responses((status = 200, body = ExecutionList), (status = 400, body = sandbox_api::ErrorBody), (status = 404, body = sandbox_api::ErrorBody)))]
/// A session's executions, oldest first, as summaries: `stdout`, `stderr` and `outputs` are
/// empty unless `?outputs=true` (each execution has them whole at `GET /v1/executions/{id}`).
pub async fn list_executions(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ExecutionList>> {
    let with_outputs = crate::query::flag(&crate::query::params(query), "outputs")?;
    session_or_404(&state, &id)?;
    Ok(Json(ExecutionList { executions: state.store.list_executions(&id, with_outputs)? }))
}

#[utoipa::path(get, path = "/v1/executions/{id}", responses((status = 200, body = Execution), (status = 404, body = sandbox_api::ErrorBody)))]
pub async fn get_execution(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Execution>> {
    Ok(Json(state.store.get_execution(&id)?.ok_or_else(|| not_found("execution", &id))?))
}

#[utoipa::path(post, path = "/v1/run", request_body = RunRequest, responses(
    (status = 200, body = Execution), (status = 400, body = sandbox_api::ErrorBody),
    (status = 422, body = sandbox_api::ErrorBody), (status = 503, body = sandbox_api::ErrorBody),
))]
pub async fn run(State(state): State<Arc<AppState>>, ApiJson(req): ApiJson<RunRequest>) -> Result<Json<Execution>> {
    let config = &state.config;
    let limits = execution::resolve_limits(config, req.limits.as_ref())?;
    let plan = Plan {
        id: execution::new_id("exe"),
        session_id: None,
        language: req.language,
        code: req.code,
        stdin: req.stdin,
        env: execution::sandbox_env(&limits, &req.env.unwrap_or_default()),
        timeout_s: execution::check_timeout(config, req.timeout_s, config.default_timeout_s)?,
        kernel: false,
    };
    plan.validate()?;
    let limits = limits_from(&limits);
    let warm = if limits == state.run_pool.limits() { state.run_pool.take(&state.dirs) } else { None };
    let (name, sandbox) = match warm {
        Some(w) => {
            state.run_pool.refill(&state.runtime, &state.dirs);
            (w.name, w.sandbox)
        }
        None => {
            crate::admission::check_memory(&state, limits.memory_bytes)?;
            let name = format!("run-{}", plan.id);
            let workspace = state.dirs.workspaces.ensure(&name)?;
            match state.runtime.create(SandboxSpec { name: name.clone(), workspace, limits, mounts: Vec::new() }).await
            {
                Ok(sb) => (name, sb),
                Err(e) => {
                    state.dirs.remove(&name);
                    return Err(e.into());
                }
            }
        }
    };
    let record = plan.running_record();
    let stored = state.store.insert_execution(&record, &plan.code);
    // Nothing runs unless its record exists; either way tear-down is not the caller's wait.
    let outcome = match &stored {
        Ok(()) => Some(sandbox.exec(plan.request(config), None).await),
        Err(_) => None,
    };
    let cleanup_state = Arc::clone(&state);
    tokio::spawn(async move {
        sandbox.destroy().await;
        cleanup_state.dirs.remove(&name);
    });
    stored?;
    let Some(outcome) = outcome else { return Err(ApiError::Internal("execution not stored".into())) };
    let done = execution::finish(record, outcome, false);
    state.store.finish_execution(&done)?;
    Ok(Json(done))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/interrupt", responses(
    (status = 200, body = Interrupted), (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
))]
/// Interrupts the running kernel cell (it ends with KeyboardInterrupt; variables are kept).
/// Does not wait for the session's turn: that is the cell being interrupted.
pub async fn interrupt(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Interrupted>> {
    active_session(&state, &id)?;
    let interrupted = match state.sessions.live(&id).current() {
        Some(sandbox) if sandbox.is_alive() => {
            sandbox.interrupt().await?;
            true
        }
        _ => false,
    };
    Ok(Json(Interrupted { interrupted }))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/restart", responses(
    (status = 200, body = Session), (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
))]
/// Replaces the session's kernel with a fresh one (a running cell ends as kernel_died) and
/// answers when the new kernel is ready. Files in the workspace are untouched.
pub async fn restart(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Session>> {
    let session = active_session(&state, &id)?;
    if session.kernel.is_none() {
        return Err(ApiError::Conflict(format!("session {id} has no kernel")));
    }
    if let Some(sandbox) = state.sessions.live(&id).current().filter(|sb| sb.is_alive()) {
        sandbox.restart_kernel().await?;
    }
    // With no live sandbox the next execution starts one, and with it a fresh kernel.
    Ok(Json(session_or_404(&state, &id)?))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/invoke", request_body = sandbox_api::InvokeRequest, responses(
    (status = 200, body = sandbox_api::InvokeResult), (status = 404, body = sandbox_api::ErrorBody),
    (status = 409, body = sandbox_api::ErrorBody), (status = 422, body = sandbox_api::ErrorBody),
))]
/// Calls a handler in the session's kernel and answers with its return value.
pub async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<sandbox_api::InvokeRequest>,
) -> Result<Json<sandbox_api::InvokeResult>> {
    let session = active_session(&state, &id)?;
    if session.kernel.is_none() {
        return Err(ApiError::Conflict(format!("session {id} has no kernel to invoke handlers in")));
    }
    crate::invoke::check_handler(&req.handler)?;
    let exec_id = execution::new_id("exe");
    let event = req.event.unwrap_or(serde_json::Value::Null);
    let plan = Plan {
        id: exec_id.clone(),
        session_id: Some(id.clone()),
        language: Language::Python,
        code: crate::invoke::cell(&req.handler, &event, &id, &exec_id),
        stdin: None,
        env: execution::sandbox_env(&session.limits, &session.env),
        timeout_s: execution::check_timeout(&state.config, req.timeout_s, session.timeout_s)?,
        kernel: true,
    };
    let (done, mut finished) = tokio::sync::watch::channel(None);
    let record = plan.queued_record();
    enqueue(&state, session, plan, &record, false, None, done)?;
    let exec = match finished.wait_for(Option::is_some).await.map(|v| v.clone()) {
        Ok(Some(Ok(exec))) => exec,
        Ok(Some(Err(e))) => return Err(e),
        _ => state.store.get_execution(&exec_id)?.ok_or_else(|| not_found("execution", &exec_id))?,
    };
    Ok(Json(crate::invoke::result(exec)))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/packages", request_body = sandbox_api::InstallPackages, responses(
    (status = 200, body = sandbox_api::PackageInstallResult, description = "The installation ran; `status` says \
        whether pip succeeded, `error` why not"),
    (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
    (status = 422, body = sandbox_api::ErrorBody), (status = 503, body = sandbox_api::ErrorBody),
))]
/// Installs Python packages for this session alone. pip runs with network access in a sandbox
/// of its own (the session stays offline) into the session's package directory, which its
/// kernel and processes have on `PYTHONPATH`: a new `import` finds them at once.
pub async fn install_packages(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<sandbox_api::InstallPackages>,
) -> Result<Json<sandbox_api::PackageInstallResult>> {
    active_session(&state, &id)?;
    crate::packages::check_specs(&req.packages)?;
    let live = state.sessions.live(&id);
    // One installation per session at a time: two pips in one directory would trip on each other.
    let _installing = live.installing.lock().await;
    let target = state.dirs.packages.ensure(&id)?;
    let timeout = std::time::Duration::from_secs(state.config.package_timeout_s);
    let (cache, index) = (state.dirs.pip_cache.clone(), state.config.pip_index_url.clone());
    let result =
        crate::packages::install(state.runtime.as_ref(), &id, &req.packages, target, cache, index, timeout).await?;
    tracing::info!(session = %id, status = ?result.status, installed = result.installed.len(), "packages installed");
    Ok(Json(result))
}

#[utoipa::path(get, path = "/v1/templates", responses((status = 200, body = sandbox_api::TemplateList)))]
pub async fn list_templates(State(state): State<Arc<AppState>>) -> Result<Json<sandbox_api::TemplateList>> {
    Ok(Json(sandbox_api::TemplateList { templates: template::list(&state)? }))
}

#[utoipa::path(get, path = "/v1/templates/{name}", responses(
    (status = 200, body = sandbox_api::Template), (status = 404, body = sandbox_api::ErrorBody),
))]
pub async fn get_template(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<sandbox_api::Template>> {
    Ok(Json(template::find(&state, &name)?.ok_or_else(|| not_found("template", &name))?))
}

#[utoipa::path(post, path = "/v1/templates", request_body = sandbox_api::CreateTemplate, responses(
    (status = 201, body = sandbox_api::Template, description = "Created; with packages it is `building` until \
        they are installed (poll `GET /v1/templates/{name}`)"),
    (status = 409, body = sandbox_api::ErrorBody), (status = 422, body = sandbox_api::ErrorBody),
))]
pub async fn create_template(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<sandbox_api::CreateTemplate>,
) -> Result<(StatusCode, Json<sandbox_api::Template>)> {
    let t = template::create(&state, req)?;
    tracing::info!(template = %t.name, status = ?t.status, "template created");
    Ok((StatusCode::CREATED, Json(t)))
}

#[utoipa::path(delete, path = "/v1/templates/{name}", responses(
    (status = 204), (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
))]
pub async fn delete_template(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<StatusCode> {
    template::delete(&state, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn not_found_fallback() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this route".into())
}
