//! HTTP handlers of API v1. Each parses the request, calls the service and maps its answer.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sandbox_api::{
    CreateExecution, CreateSession, Execution, ExecutionList, Interrupted, Output, Readiness, RunRequest, Session,
    SessionList, StreamName,
};
use sandbox_service::access::auth::Caller;
use sandbox_service::executions::queue::{ExecutionStream, Submission};
use sandbox_service::Service;

use crate::extract::ApiJson;
use sandbox_http::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process serves")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Readiness, description = "Sandboxes can be created"),
    (status = 503, body = Readiness, description = "Not ready; the checks say why"),
))]
pub async fn readyz(State(state): State<Arc<Service>>) -> Response {
    let body = state.readiness().await;
    let status = if body.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

#[utoipa::path(post, path = "/v1/sessions", request_body = CreateSession, responses(
    (status = 201, body = Session), (status = 400, body = sandbox_api::ErrorBody),
    (status = 422, body = sandbox_api::ErrorBody), (status = 503, body = sandbox_api::ErrorBody),
))]
pub async fn create_session(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<Session>)> {
    Ok((StatusCode::CREATED, Json(state.create_session(&caller, req).await?)))
}

#[utoipa::path(get, path = "/v1/sessions", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)"),
    ("cursor" = Option<String>, Query, description = "The `next_cursor` of the page before")),
    responses((status = 200, body = SessionList)))]
/// Sessions, deleted ones included, oldest first, a page at a time.
pub async fn list_sessions(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<SessionList>> {
    let page = crate::query::page(&crate::query::params(query))?;
    let (sessions, next_cursor) = state.sessions(&caller, page).await?;
    Ok(Json(SessionList { sessions, next_cursor }))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", responses((status = 200, body = Session), (status = 404, body = sandbox_api::ErrorBody)))]
pub async fn get_session(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Session>> {
    Ok(Json(state.session(&caller, &id).await?))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", responses((status = 204), (status = 404, body = sandbox_api::ErrorBody)))]
pub async fn delete_session(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.delete_session(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sessions/{id}/executions", request_body = CreateExecution, responses(
    (status = 202, body = Execution, description = "Queued (`wait: false`): poll `GET /v1/executions/{id}`"),
    (status = 200, body = Execution, description = "The finished execution; with `Accept: text/event-stream`, \
        Server-Sent Events as it runs: `stdout`/`stderr` (text), `display`, `result`, `error` (the output as JSON), \
        then `done` (the execution as JSON)"),
    (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
    (status = 413, body = sandbox_api::ErrorBody), (status = 422, body = sandbox_api::ErrorBody),
))]
pub async fn create_execution(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateExecution>,
) -> Result<Response> {
    let wants_events =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    Ok(match state.submit_execution(&caller, &id, req, wants_events).await? {
        Submission::Finished(exec) => Json(exec).into_response(),
        Submission::Accepted(exec) => (StatusCode::ACCEPTED, Json(exec)).into_response(),
        Submission::Streaming(stream) => events(stream).into_response(),
    })
}

/// Outputs as Server-Sent Events as they come, then `done` (or `error` if the run was refused).
fn events(mut stream: ExecutionStream) -> impl IntoResponse {
    let (events, rx) = tokio::sync::mpsc::unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        while let Some(output) = stream.next_output().await {
            let _ = events.send(output_event(&output));
        }
        let last = match stream.finished().await {
            Ok(exec) => SseEvent::default().event("done").json_data(&exec),
            Err(e) => SseEvent::default().event("error").json_data(ApiError::from(e).body()),
        };
        if let Ok(last) = last {
            let _ = events.send(last);
        }
    });
    Sse::new(ChannelStream(rx)).keep_alive(KeepAlive::default())
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
    params(("id" = String, Path), ("outputs" = Option<bool>, Query, description = "Include stdout, stderr and outputs (summaries leave them empty)"),
    ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)"),
    ("cursor" = Option<String>, Query, description = "The `next_cursor` of the page before")),
    responses((status = 200, body = ExecutionList), (status = 400, body = sandbox_api::ErrorBody), (status = 404, body = sandbox_api::ErrorBody)))]
/// A session's executions, oldest first, as summaries: `stdout`, `stderr` and `outputs` are
/// empty unless `?outputs=true` (each execution has them whole at `GET /v1/executions/{id}`).
pub async fn list_executions(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ExecutionList>> {
    let params = crate::query::params(query);
    let with_outputs = crate::query::flag(&params, "outputs")?;
    let (executions, next_cursor) = state.executions(&caller, &id, with_outputs, crate::query::page(&params)?).await?;
    Ok(Json(ExecutionList { executions, next_cursor }))
}

#[utoipa::path(get, path = "/v1/executions/{id}", responses((status = 200, body = Execution), (status = 404, body = sandbox_api::ErrorBody)))]
pub async fn get_execution(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Execution>> {
    Ok(Json(state.execution(&caller, &id).await?))
}

#[utoipa::path(post, path = "/v1/run", request_body = RunRequest, responses(
    (status = 200, body = Execution), (status = 400, body = sandbox_api::ErrorBody),
    (status = 422, body = sandbox_api::ErrorBody), (status = 503, body = sandbox_api::ErrorBody),
))]
pub async fn run(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<RunRequest>,
) -> Result<Json<Execution>> {
    Ok(Json(state.run_once(&caller, req).await?))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/interrupt", responses(
    (status = 200, body = Interrupted), (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
))]
/// Interrupts the running kernel cell (it ends with KeyboardInterrupt; variables are kept).
/// Does not wait for the session's turn: that is the cell being interrupted.
pub async fn interrupt(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Interrupted>> {
    Ok(Json(Interrupted { interrupted: state.interrupt(&caller, &id).await? }))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/restart", responses(
    (status = 200, body = Session), (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
))]
/// Replaces the session's kernel with a fresh one (a running cell ends as kernel_died) and
/// answers when the new kernel is ready. Files in the workspace are untouched.
pub async fn restart(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Session>> {
    Ok(Json(state.restart_kernel(&caller, &id).await?))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/resume", responses(
    (status = 200, body = Session), (status = 404, body = sandbox_api::ErrorBody),
    (status = 409, body = sandbox_api::ErrorBody, description = "Deleted, or its workspace was removed"),
    (status = 503, body = sandbox_api::ErrorBody),
))]
/// Starts a new sandbox on a stopped session's workspace (a fresh kernel; the files are there).
/// A running session is left as it is.
pub async fn resume(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Session>> {
    Ok(Json(state.resume_session(&caller, &id).await?))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/stop", responses(
    (status = 200, body = Session), (status = 404, body = sandbox_api::ErrorBody),
    (status = 409, body = sandbox_api::ErrorBody),
))]
/// Stops the session's sandbox now (a running execution ends as killed); the workspace stays
/// and the session resumes on demand.
pub async fn stop(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Session>> {
    Ok(Json(state.stop_session(&caller, &id).await?))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/invoke", request_body = sandbox_api::InvokeRequest, responses(
    (status = 200, body = sandbox_api::InvokeResult), (status = 404, body = sandbox_api::ErrorBody),
    (status = 409, body = sandbox_api::ErrorBody), (status = 422, body = sandbox_api::ErrorBody),
))]
/// Calls a handler in the session's kernel and answers with its return value.
pub async fn invoke(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<sandbox_api::InvokeRequest>,
) -> Result<Json<sandbox_api::InvokeResult>> {
    Ok(Json(state.invoke(&caller, &id, req).await?))
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
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<sandbox_api::InstallPackages>,
) -> Result<Json<sandbox_api::PackageInstallResult>> {
    Ok(Json(state.install_packages(&caller, &id, &req.packages).await?))
}

#[utoipa::path(get, path = "/v1/templates", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)"),
    ("cursor" = Option<String>, Query, description = "The `next_cursor` of the page before")),
    responses((status = 200, body = sandbox_api::TemplateList)))]
pub async fn list_templates(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<sandbox_api::TemplateList>> {
    let (templates, next_cursor) = state.templates(&caller, crate::query::page(&crate::query::params(query))?).await?;
    Ok(Json(sandbox_api::TemplateList { templates, next_cursor }))
}

#[utoipa::path(get, path = "/v1/replicas", responses((status = 200, body = sandbox_api::ReplicaList)))]
/// The sandboxd replicas sharing this one's database: each one's address, version, heartbeat
/// age and the sessions it runs (admin keys only).
pub async fn list_replicas(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<sandbox_api::ReplicaList>> {
    Ok(Json(sandbox_api::ReplicaList { replicas: state.replicas(&caller).await? }))
}

#[utoipa::path(get, path = "/v1/templates/{name}", responses(
    (status = 200, body = sandbox_api::Template), (status = 404, body = sandbox_api::ErrorBody),
))]
pub async fn get_template(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<sandbox_api::Template>> {
    Ok(Json(state.template(&caller, &name).await?))
}

#[utoipa::path(post, path = "/v1/templates", request_body = sandbox_api::CreateTemplate, responses(
    (status = 201, body = sandbox_api::Template, description = "Created; with packages it is `building` until \
        they are installed (poll `GET /v1/templates/{name}`)"),
    (status = 409, body = sandbox_api::ErrorBody), (status = 422, body = sandbox_api::ErrorBody),
))]
pub async fn create_template(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<sandbox_api::CreateTemplate>,
) -> Result<(StatusCode, Json<sandbox_api::Template>)> {
    Ok((StatusCode::CREATED, Json(state.create_template(&caller, req).await?)))
}

#[utoipa::path(delete, path = "/v1/templates/{name}", responses(
    (status = 204), (status = 403, body = sandbox_api::ErrorBody, description = "A shared template: only an admin key may delete it"),
    (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
))]
pub async fn delete_template(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    state.delete_template(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI document ([`crate::openapi::document`]).
pub async fn openapi_json(State(state): State<Arc<Service>>) -> Json<serde_json::Value> {
    Json(crate::openapi::document(state.config()))
}

/// The same document as YAML.
pub async fn openapi_yaml(State(state): State<Arc<Service>>) -> Result<Response> {
    let yaml = serde_yaml::to_string(&crate::openapi::document(state.config()))
        .map_err(|e| ApiError::Internal(format!("the OpenAPI document as YAML: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/yaml; charset=utf-8")], yaml).into_response())
}

/// A page that renders the document: no script or style from anywhere else, so it works
/// offline and behind any firewall.
pub async fn docs() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, DOCS_CSP)],
        include_str!("docs.html"),
    )
        .into_response()
}

const DOCS_CSP: &str =
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";

pub async fn not_found_fallback() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this route".into())
}
