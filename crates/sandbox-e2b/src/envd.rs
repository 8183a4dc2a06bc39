//! envd, E2B's agent in the sandbox, as the SDK's `files` and `commands` reach it: plain HTTP
//! for file contents (`/files`), Connect-RPC with the JSON codec for the filesystem
//! (`/filesystem.Filesystem/*`) and for processes (`/process.Process/Start`, a server
//! stream). Each call is the service's: the session's files, or an execution in its sandbox.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use sandbox_api::{CreateExecution, FileInfo, FileType, Language, Output, StreamName};
use sandbox_service::executions::queue::Submission;
use sandbox_service::files::{info, READ_CHUNK};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ConnectError, E2bError};
use crate::extract::FilesCall;
use crate::paths;
use crate::{SandboxCaller, State};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/health", get(health))
        // The service holds uploads to the file size limit and the quota as they stream.
        .route("/files", get(download).post(upload).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/filesystem.Filesystem/Stat", post(stat))
        .route("/filesystem.Filesystem/ListDir", post(list_dir))
        .route("/filesystem.Filesystem/MakeDir", post(make_dir))
        .route("/filesystem.Filesystem/Move", post(move_entry))
        .route("/filesystem.Filesystem/Remove", post(remove))
        .route("/process.Process/Start", post(start))
}

/// Whether the sandbox runs: a stopped (paused, timed out) or deleted session is not, which
/// envd's proxy says with 502.
async fn health(AxumState(state): AxumState<State>, who: SandboxCaller) -> Result<Response, E2bError> {
    let session = state.service.session(&who.caller, &who.session).await?;
    if session.status == sandbox_api::SessionStatus::Running {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let message = format!("sandbox {} is not running ({})", session.id, session.status.as_str());
    Ok((StatusCode::BAD_GATEWAY, Json(json!({ "code": 502, "message": message }))).into_response())
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
}

/// An entry as envd describes it (`filesystem.EntryInfo`, in protobuf's JSON).
fn entry_json(f: &FileInfo) -> Value {
    let (kind, mode, permissions) = match f.kind {
        FileType::Dir => ("FILE_TYPE_DIRECTORY", 0o40755, "drwxr-xr-x"),
        FileType::Symlink => ("FILE_TYPE_SYMLINK", 0o120777, "lrwxrwxrwx"),
        FileType::File | FileType::Other => ("FILE_TYPE_FILE", 0o100644, "-rw-r--r--"),
    };
    let name = f.path.rsplit('/').next().unwrap_or_default();
    json!({
        "name": if f.path.is_empty() { "user" } else { name },
        "type": kind,
        "path": paths::shown(&f.path),
        "size": f.size.to_string(),
        "mode": mode,
        "permissions": permissions,
        "owner": "user",
        "group": "user",
        "modifiedTime": f.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "isSymlink": f.kind == FileType::Symlink,
    })
}

async fn download(
    AxumState(state): AxumState<State>,
    who: SandboxCaller,
    Query(q): Query<PathQuery>,
) -> Result<Response, E2bError> {
    let rel = paths::rel(q.path.as_deref().unwrap_or_default())?;
    let files = state.service.files(&who.caller, &who.session).await?;
    let (opened, entry) = files.open(rel).await?;
    let stream = opened.into_stream(0, entry.size, READ_CHUNK);
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_LENGTH, entry.size.to_string()),
    ];
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// `POST /files?path=P`: the body is the file (envd ≥ 0.5.7), or a `multipart/form-data` form
/// whose parts are files, named by `path` or by their file names.
async fn upload(
    AxumState(state): AxumState<State>,
    who: SandboxCaller,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
    req: Request,
) -> Result<Json<Vec<Value>>, E2bError> {
    let files = state.service.files(&who.caller, &who.session).await?;
    let written = |path: &str| json!({ "name": path.rsplit('/').next().unwrap_or_default(), "type": "file", "path": paths::shown(path) });
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("multipart/form-data") {
        let rel = paths::rel(q.path.as_deref().ok_or_else(|| E2bError::invalid("path is required"))?)?;
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let mut body = req.into_body().into_data_stream();
        let done = files.upload(rel, declared, &mut body).await?;
        return Ok(Json(vec![written(&done.path)]));
    }
    let mut form = Multipart::from_request(req, &()).await.map_err(|e| E2bError::invalid(e.to_string()))?;
    let mut done = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| E2bError::invalid(e.to_string()))? {
        let name = match (&q.path, field.file_name()) {
            (Some(path), _) => path.clone(),
            (None, Some(file_name)) => file_name.to_string(),
            (None, None) => return Err(E2bError::invalid("a form part without a file name, and no path")),
        };
        let rel = paths::rel(&name)?;
        let mut body = field.map(|chunk| chunk.map_err(|e| e.to_string()));
        let uploaded = files.upload(rel, None, &mut body).await?;
        done.push(written(&uploaded.path));
    }
    Ok(Json(done))
}

#[derive(Deserialize)]
struct PathMessage {
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct ListDirMessage {
    #[serde(default)]
    path: String,
    #[serde(default)]
    depth: Option<u32>,
}

#[derive(Deserialize)]
struct MoveMessage {
    source: String,
    destination: String,
}

async fn stat(call: FilesCall<PathMessage>) -> Result<Json<Value>, ConnectError> {
    let entry = call.files.stat(paths::rel(&call.message.path)?).await?;
    Ok(Json(json!({ "entry": entry_json(&info(&entry)) })))
}

async fn list_dir(call: FilesCall<ListDirMessage>) -> Result<Json<Value>, ConnectError> {
    let dir = paths::rel(&call.message.path)?;
    let depth = call.message.depth.unwrap_or(1).max(1) as usize;
    let (list, _) = call.files.list(dir.clone(), depth > 1).await?;
    let base = dir.as_str().split('/').filter(|s| !s.is_empty()).count();
    let entries: Vec<Value> =
        list.iter().filter(|f| f.path.split('/').count() - base <= depth).map(entry_json).collect();
    Ok(Json(json!({ "entries": entries })))
}

async fn remove(call: FilesCall<PathMessage>) -> Result<Json<Value>, ConnectError> {
    call.files.remove(paths::rel(&call.message.path)?, true).await?;
    Ok(Json(json!({})))
}

async fn move_entry(call: FilesCall<MoveMessage>) -> Result<Json<Value>, ConnectError> {
    let m = &call.message;
    let moved = call.files.rename(paths::rel(&m.source)?, paths::rel(&m.destination)?).await?;
    Ok(Json(json!({ "entry": entry_json(&moved) })))
}

/// Single quotes for a shell word.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Makes a directory (and its parents) in the sandbox, as its user: the file API makes
/// directories only for the files it writes. An existing one is `already_exists`, as envd says.
async fn make_dir(
    AxumState(state): AxumState<State>,
    who: SandboxCaller,
    call: FilesCall<PathMessage>,
) -> Result<Json<Value>, ConnectError> {
    let (m, files) = (&call.message, &call.files);
    let rel = paths::rel(&m.path)?;
    if files.stat(rel.clone()).await.is_ok() {
        return Err(ConnectError(E2bError {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: format!("{} already exists", m.path),
        }));
    }
    let mut req = CreateExecution::new(Language::Bash, format!("mkdir -p -- {}", quoted(&paths::in_sandbox(&rel))));
    req.fresh = Some(true);
    let made = match state.service.submit_execution(&who.caller, &who.session, req, false).await? {
        Submission::Finished(e) | Submission::Accepted(e) => e,
        Submission::Streaming(s) => s.finished().await?,
    };
    if made.exit_code != Some(0) {
        return Err(ConnectError(E2bError::invalid(format!("cannot make {}: {}", m.path, made.stderr.trim()))));
    }
    let entry = files.stat(rel).await?;
    Ok(Json(json!({ "entry": entry_json(&info(&entry)) })))
}

/// One Connect streaming frame: a flag byte, the length, the JSON.
fn frame(flags: u8, message: &Value) -> Bytes {
    let data = serde_json::to_vec(message).unwrap_or_default();
    let mut out = BytesMut::with_capacity(5 + data.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&data);
    out.freeze()
}

/// The first message of an enveloped Connect stream request.
fn first_message(body: &Bytes) -> Result<Value, E2bError> {
    let bad = || E2bError::invalid("not a Connect stream message");
    let len = body.get(1..5).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or_else(bad)?;
    let data = body.get(5..5 + len).ok_or_else(bad)?;
    serde_json::from_slice(data).map_err(|e| E2bError::invalid(format!("invalid message: {e}")))
}

#[derive(Deserialize, Default)]
struct ProcessConfig {
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: std::collections::BTreeMap<String, String>,
    cwd: Option<String>,
}

/// The shell script a process request runs: `bash -l -c SCRIPT` (what `commands.run` sends)
/// runs SCRIPT; anything else runs as its quoted words. In `cwd` if given.
fn script_of(p: &ProcessConfig) -> Result<String, E2bError> {
    let shell = matches!(p.cmd.as_str(), "/bin/bash" | "bash" | "/bin/sh" | "sh");
    let script = match p.args.iter().position(|a| a == "-c") {
        Some(i) if shell => p.args.get(i + 1).cloned().unwrap_or_default(),
        _ => std::iter::once(&p.cmd).chain(&p.args).map(|w| quoted(w)).collect::<Vec<_>>().join(" "),
    };
    match &p.cwd {
        Some(cwd) => Ok(format!("cd -- {} && {script}", quoted(&paths::in_sandbox(&paths::rel(cwd)?)))),
        None => Ok(script),
    }
}

/// `process.Process/Start`: runs a command in the sandbox and streams its start, output and
/// end as Connect events.
async fn start(AxumState(state): AxumState<State>, who: SandboxCaller, body: Bytes) -> Response {
    let stream_headers = || [(header::CONTENT_TYPE, "application/connect+json")];
    let failed = |e: E2bError| {
        let end = frame(2, &json!({ "error": e.connect_body() }));
        (stream_headers(), Body::from(end)).into_response()
    };
    let request = match first_message(&body) {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let process: ProcessConfig = serde_json::from_value(request["process"].clone()).unwrap_or_default();
    let script = match script_of(&process) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let mut req = CreateExecution::new(Language::Bash, script);
    req.env = (!process.envs.is_empty()).then_some(process.envs);
    let submitted = state.service.submit_execution(&who.caller, &who.session, req, true).await;
    let mut stream = match submitted {
        Ok(Submission::Streaming(stream)) => stream,
        Ok(_) => return failed(E2bError::invalid("the process did not stream")),
        Err(e) => return failed(e.into()),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let _ = tx.send(frame(0, &json!({ "event": { "start": { "pid": 1 } } })));
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t.as_bytes());
        while let Some(output) = stream.next_output().await {
            if let Output::Stream { name, text } = output {
                let key = if name == StreamName::Stdout { "stdout" } else { "stderr" };
                let _ = tx.send(frame(0, &json!({ "event": { "data": { key: b64(&text) } } })));
            }
        }
        let last = match stream.finished().await {
            Ok(e) => {
                let code = e.exit_code.unwrap_or(-1);
                let status = match (e.exit_code, e.signal) {
                    (Some(code), _) => format!("exit status {code}"),
                    (None, Some(signal)) => format!("signal: {signal}"),
                    (None, None) => e.reason.map_or("ended".to_string(), |r| r.as_str().to_string()),
                };
                let mut end = json!({ "exitCode": code, "exited": e.exit_code.is_some(), "status": status });
                if e.exit_code.is_none() {
                    end["error"] = json!(status);
                }
                vec![frame(0, &json!({ "event": { "end": end } })), frame(2, &json!({}))]
            }
            Err(e) => vec![frame(2, &json!({ "error": E2bError::from(e).connect_body() }))],
        };
        for f in last {
            let _ = tx.send(f);
        }
    });
    let body = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    (stream_headers(), Body::from_stream(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_their_script_and_other_processes_their_words() {
        let bash = ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-l".into(), "-c".into(), "echo hi".into()],
            ..Default::default()
        };
        assert_eq!(script_of(&bash).ok().as_deref(), Some("echo hi"));
        let other = ProcessConfig {
            cmd: "ls".into(),
            args: vec!["-la".into(), "it's".into()],
            cwd: Some("/home/user/d".into()),
            ..Default::default()
        };
        assert_eq!(script_of(&other).ok().as_deref(), Some(r"cd -- '/workspace/d' && 'ls' '-la' 'it'\''s'"));
    }

    #[test]
    fn frames_carry_their_length() {
        let f = frame(2, &json!({}));
        assert_eq!(&f[..], &[2, 0, 0, 0, 2, b'{', b'}']);
        assert_eq!(first_message(&frame(0, &json!({"a": 1}))).ok(), Some(json!({"a": 1})));
        assert!(first_message(&Bytes::from_static(b"\0\0\0\0\x09{}")).is_err(), "shorter than it says");
    }
}
