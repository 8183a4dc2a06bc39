//! The code interpreter, as `e2b-code-interpreter` reaches it: `POST /execute` answers a
//! stream of JSON lines (stdout, stderr, results, an error, the execution count, the end), and
//! `/contexts` makes, lists, restarts and removes code contexts.
//!
//! A Python context is a namespace of its own in the session's kernel (`context` of an
//! execution): variables of one are not seen in another, while files and imports are shared,
//! as in E2B, where contexts share the sandbox. Other languages run each cell as a fresh
//! process (Node.js, bash).

use axum::body::Body;
use axum::extract::{Path, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt;
use sandbox_api::{CreateExecution, Execution, ExecutionStatus, Language, Output, StreamName};
use sandbox_service::executions::queue::Submission;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::E2bError;
use crate::extract::JsonBody;
use crate::paths;
use crate::{Context, SandboxCaller, State};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/execute", post(execute))
        .route("/contexts", get(list_contexts).post(create_context))
        .route("/contexts/{id}", delete(remove_context))
        .route("/contexts/{id}/restart", post(restart_context))
}

/// The namespace of a session's default context: the kernel's own.
const DEFAULT_NAMESPACE: &str = "";

#[derive(Deserialize)]
struct ExecuteRequest {
    code: String,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct NewContext {
    language: Option<String>,
    cwd: Option<String>,
}

/// Our language for an E2B language name.
fn language_of(name: &str) -> Result<Language, E2bError> {
    match name.to_ascii_lowercase().as_str() {
        "python" | "py" | "python3" => Ok(Language::Python),
        "js" | "javascript" | "node" | "nodejs" => Ok(Language::Node),
        "bash" | "sh" | "shell" => Ok(Language::Bash),
        other => Err(E2bError::invalid(format!(
            "language {other:?} is not available here: python, javascript (Node.js) or bash"
        ))),
    }
}

fn timestamp() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

/// A MIME bundle as E2B's `Result`: `text/plain` is `text`, `image/png` is `png`, ...
fn result_line(data: &Map<String, Value>, main: bool) -> Value {
    let mut line = json!({ "type": "result", "is_main_result": main });
    let mut extra = Map::new();
    for (mime, value) in data {
        let key = match mime.as_str() {
            "text/plain" => "text",
            "text/html" => "html",
            "text/markdown" => "markdown",
            "image/svg+xml" => "svg",
            "image/png" => "png",
            "image/jpeg" => "jpeg",
            "application/pdf" => "pdf",
            "text/latex" => "latex",
            "application/json" => "json",
            "application/javascript" => "javascript",
            _ => {
                extra.insert(mime.clone(), value.clone());
                continue;
            }
        };
        let value = match (key, value) {
            ("png" | "jpeg", Value::String(s)) => Value::String(s.trim().to_string()),
            _ => value.clone(),
        };
        line[key] = value;
    }
    if !extra.is_empty() {
        line["extra"] = Value::Object(extra);
    }
    line
}

/// One output as the lines E2B's interpreter sends.
fn output_line(output: &Output) -> Value {
    match output {
        Output::Stream { name, text } => {
            let kind = if *name == StreamName::Stdout { "stdout" } else { "stderr" };
            json!({ "type": kind, "text": text, "timestamp": timestamp() })
        }
        Output::DisplayData { data, .. } => result_line(data, false),
        Output::ExecuteResult { data, .. } => result_line(data, true),
        Output::Error { ename, evalue, traceback } => {
            json!({ "type": "error", "name": ename, "value": evalue, "traceback": traceback.join("\n") })
        }
    }
}

/// The error line for an execution that failed without one of its own (a timeout, a process
/// that exited non-zero, a sandbox that died).
fn ending_error(e: &Execution) -> Option<Value> {
    if e.outputs.iter().any(|o| matches!(o, Output::Error { .. })) {
        return None;
    }
    let (name, value) = match (e.status, e.exit_code) {
        (ExecutionStatus::Succeeded, _) => return None,
        (ExecutionStatus::TimedOut, _) => ("TimeoutError", "the execution timed out".to_string()),
        (_, Some(code)) if code != 0 => ("ExitError", format!("exited with code {code}: {}", e.stderr.trim())),
        (status, _) => ("ExecutionError", format!("the execution {}", status.as_str())),
    };
    Some(json!({ "type": "error", "name": name, "value": value, "traceback": value }))
}

fn ndjson(line: &Value) -> Bytes {
    let mut data = serde_json::to_vec(line).unwrap_or_default();
    data.push(b'\n');
    Bytes::from(data)
}

/// The context an execution names, checked to be this session's.
fn context_of(state: &State, session: &str, id: &str) -> Result<Context, E2bError> {
    match state.contexts().get(id) {
        Some(c) if c.session == session => Ok(c.clone()),
        _ => Err(E2bError::not_found(format!("context {id} not found"))),
    }
}

async fn execute(
    AxumState(state): AxumState<State>,
    who: SandboxCaller,
    JsonBody(req): JsonBody<ExecuteRequest>,
) -> Result<Response, E2bError> {
    let context = req.context_id.as_deref().map(|id| context_of(&state, &who.session, id)).transpose()?;
    let language = match (&req.language, &context) {
        (Some(name), _) => language_of(name)?,
        (None, Some(c)) => language_of(&c.language)?,
        (None, None) => Language::Python,
    };
    let mut exec = CreateExecution::new(language, req.code);
    exec.env = req.env_vars.filter(|e| !e.is_empty());
    if let (Some(c), Language::Python) = (&context, language) {
        exec.context = (c.namespace != DEFAULT_NAMESPACE).then(|| c.namespace.clone());
    }
    let mut stream = match state.service.submit_execution(&who.caller, &who.session, exec, true).await? {
        Submission::Streaming(stream) => stream,
        Submission::Finished(_) | Submission::Accepted(_) => {
            return Err(E2bError::invalid("the execution did not stream"));
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let context_id = req.context_id.clone().unwrap_or_else(|| default_context_id(&who.session));
    tokio::spawn(async move {
        while let Some(output) = stream.next_output().await {
            let _ = tx.send(ndjson(&output_line(&output)));
        }
        match stream.finished().await {
            Ok(done) => {
                if let Some(error) = ending_error(&done) {
                    let _ = tx.send(ndjson(&error));
                }
                let count = count_execution(&state, &context_id, &done);
                let _ = tx.send(ndjson(&json!({ "type": "number_of_executions", "execution_count": count })));
            }
            Err(e) => {
                let e = E2bError::from(e);
                let _ =
                    tx.send(ndjson(&json!({ "type": "error", "name": e.code, "value": e.message, "traceback": "" })));
            }
        }
        let _ = tx.send(ndjson(&json!({ "type": "end_of_execution" })));
    });
    let body = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response())
}

/// The id of a session's default context (the kernel's own namespace).
fn default_context_id(session: &str) -> String {
    format!("{session}-default")
}

/// Counts a finished cell in its context, and answers how many it has run: the kernel's own
/// count where the cell shows it (an `execute_result`), else this door's.
fn count_execution(state: &State, context_id: &str, done: &Execution) -> u64 {
    let mut contexts = state.contexts();
    let session = done.session_id.clone().unwrap_or_default();
    let context = contexts.entry(context_id.to_string()).or_insert_with(|| Context {
        session,
        language: "python".into(),
        cwd: paths::HOME.into(),
        namespace: DEFAULT_NAMESPACE.into(),
        executions: 0,
    });
    context.executions += 1;
    let shown = done.outputs.iter().find_map(|o| match o {
        Output::ExecuteResult { execution_count, .. } => *execution_count,
        _ => None,
    });
    if let Some(n) = shown {
        context.executions = n;
    }
    context.executions
}

fn context_json(id: &str, c: &Context) -> Value {
    json!({ "id": id, "language": c.language, "cwd": c.cwd })
}

async fn create_context(
    AxumState(state): AxumState<State>,
    who: SandboxCaller,
    JsonBody(req): JsonBody<NewContext>,
) -> Result<Json<Value>, E2bError> {
    let language = req.language.unwrap_or_else(|| "python".into());
    language_of(&language)?;
    let cwd = req.cwd.unwrap_or_else(|| paths::HOME.into());
    paths::rel(&cwd)?;
    // Made as a use of the session: an unknown or another tenant's answers as it would.
    state.service.active_session(&who.caller, &who.session).await?;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let context =
        Context { session: who.session.clone(), language, cwd, namespace: format!("ctx_{id}"), executions: 0 };
    let answer = context_json(&id, &context);
    state.contexts().insert(id, context);
    Ok(Json(answer))
}

async fn list_contexts(AxumState(state): AxumState<State>, who: SandboxCaller) -> Result<Json<Vec<Value>>, E2bError> {
    state.service.active_session(&who.caller, &who.session).await?;
    let contexts = state.contexts();
    let listed = contexts.iter().filter(|(_, c)| c.session == who.session).map(|(id, c)| context_json(id, c)).collect();
    Ok(Json(listed))
}

async fn remove_context(
    AxumState(state): AxumState<State>,
    who: SandboxCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, E2bError> {
    let context = context_of(&state, &who.session, &id)?;
    forget_namespace(&state, &who, &context).await?;
    state.contexts().remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Restarts a context: its variables are gone. The default context is the kernel itself,
/// which restarts; another context gets a fresh namespace.
async fn restart_context(
    AxumState(state): AxumState<State>,
    who: SandboxCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, E2bError> {
    if id == default_context_id(&who.session) {
        state.service.restart_kernel(&who.caller, &who.session).await?;
        state.contexts().retain(|_, c| c.session != who.session || c.namespace != DEFAULT_NAMESPACE);
        return Ok(StatusCode::NO_CONTENT);
    }
    let context = context_of(&state, &who.session, &id)?;
    forget_namespace(&state, &who, &context).await?;
    if let Some(c) = state.contexts().get_mut(&id) {
        c.namespace = format!("ctx_{}", uuid::Uuid::now_v7().simple());
        c.executions = 0;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Drops a context's namespace from the kernel (its objects are freed).
async fn forget_namespace(state: &State, who: &SandboxCaller, context: &Context) -> Result<(), E2bError> {
    if context.namespace == DEFAULT_NAMESPACE || language_of(&context.language)? != Language::Python {
        return Ok(());
    }
    let mut exec = CreateExecution::new(Language::Python, "");
    exec.context = Some(context.namespace.clone());
    exec.forget_context = Some(true);
    match state.service.submit_execution(&who.caller, &who.session, exec, false).await? {
        Submission::Streaming(s) => drop(s.finished().await?),
        Submission::Finished(_) | Submission::Accepted(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_bundles_become_e2b_results() {
        let mut data = Map::new();
        data.insert("text/plain".into(), json!("<Figure>"));
        data.insert("image/png".into(), json!("iVBO\n"));
        data.insert("application/vnd.custom".into(), json!({"a": 1}));
        let line = result_line(&data, true);
        assert_eq!(line["text"], "<Figure>");
        assert_eq!(line["png"], "iVBO");
        assert_eq!(line["is_main_result"], true);
        assert_eq!(line["extra"]["application/vnd.custom"]["a"], 1);
    }

    #[test]
    fn languages_are_named_as_e2b_names_them() {
        assert_eq!(language_of("js").ok(), Some(Language::Node));
        assert_eq!(language_of("Python").ok(), Some(Language::Python));
        assert!(language_of("r").is_err());
    }
}
