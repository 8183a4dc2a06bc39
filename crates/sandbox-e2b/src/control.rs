//! E2B's control API: sandboxes made, listed, looked up, kept alive, paused, resumed and
//! killed, each a call of the service on a session.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use sandbox_api::{CreateSession, Session, SessionStatus};
use sandbox_service::access::auth::Caller;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::E2bError;
use crate::extract::JsonBody;
use crate::{State, ENVD_VERSION};

type Result<T> = std::result::Result<T, E2bError>;

/// The names E2B's SDKs use for their default templates: ours is `default`.
const DEFAULT_TEMPLATES: [&str; 4] = ["base", "code-interpreter-v1", "code-interpreter", "code-interpreter-beta"];

/// E2B's default sandbox timeout, seconds.
const DEFAULT_TIMEOUT_S: u64 = 300;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(detail).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    // `autoPause` is not read: at their timeout ours always stop and keep their files, which
    // is E2B's pause.
}

#[derive(Debug, Default, Deserialize)]
struct Timeout {
    timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Refresh {
    duration: Option<u64>,
}

/// Our template for the E2B template name `given`.
fn template_of(given: Option<&str>) -> Option<String> {
    match given {
        None | Some("") => None,
        Some(name) if DEFAULT_TEMPLATES.contains(&name) => None,
        Some(name) => Some(name.to_string()),
    }
}

fn state_of(s: &Session) -> &'static str {
    match s.status {
        SessionStatus::Running => "running",
        SessionStatus::Stopped | SessionStatus::Deleted => "paused",
    }
}

/// The create and connect answer: the SDK needs the id, the envd version and the token.
fn sandbox_json(state: &State, s: &Session) -> Result<Value> {
    let token = state.service.session_token(&s.id)?;
    Ok(json!({
        "templateID": s.template,
        "alias": s.template,
        "sandboxID": s.id,
        "clientID": "sandboxd",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": token,
        // The SDK sends this one, not the envd token, with some code interpreter calls.
        "trafficAccessToken": token,
        "domain": state.service.config().e2b_domain,
    }))
}

fn listed_json(state: &State, s: &Session) -> Value {
    json!({
        "templateID": s.template,
        "alias": s.template,
        "sandboxID": s.id,
        "clientID": "sandboxd",
        "startedAt": s.created_at,
        "endAt": state.service.sandbox_ends_at(s),
        "cpuCount": s.limits.cpu.ceil().max(1.0) as u64,
        "memoryMB": s.limits.memory_mb,
        "diskSizeMB": state.service.config().workspace_quota_bytes >> 20,
        "state": state_of(s),
        "envdVersion": ENVD_VERSION,
        "metadata": s.metadata,
    })
}

fn detail_json(state: &State, s: &Session) -> Result<Value> {
    let mut v = listed_json(state, s);
    v["envdAccessToken"] = json!(state.service.session_token(&s.id)?);
    v["domain"] = json!(state.service.config().e2b_domain);
    Ok(v)
}

/// A session E2B may still address: deleted ones are gone (404), as killed sandboxes are.
async fn live_session(state: &State, caller: &Caller, id: &str) -> Result<Session> {
    let s = state.service.session(caller, id).await?;
    match s.status {
        SessionStatus::Deleted => Err(E2bError::not_found(format!("sandbox {id} not found"))),
        _ => Ok(s),
    }
}

async fn create(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<NewSandbox>,
) -> Result<Response> {
    let metadata = req.metadata.map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    let lifetime = req.timeout.unwrap_or(DEFAULT_TIMEOUT_S).max(1);
    let create = CreateSession {
        template: template_of(req.template_id.as_deref()),
        env: req.env_vars,
        metadata,
        max_lifetime_s: Some(lifetime),
        ..Default::default()
    };
    let session = state.service.create_session(&caller, create).await?;
    Ok((StatusCode::CREATED, Json(sandbox_json(&state, &session)?)).into_response())
}

/// `?state=running,paused&metadata=k%3Dv%26k2%3Dv2`.
fn filters(query: Option<String>) -> (Vec<String>, BTreeMap<String, String>) {
    let mut states = Vec::new();
    let mut metadata = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "state" => states.extend(value.split(',').map(str::to_string)),
            "metadata" => metadata.extend(form_urlencoded::parse(value.as_bytes()).map(|(k, v)| (k.into(), v.into()))),
            _ => {}
        }
    }
    (states, metadata)
}

async fn list(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<Value>>> {
    let (states, metadata) = filters(query);
    let mut listed = Vec::new();
    let mut page = sandbox_service::Page { limit: Some(sandbox_service::Page::MAX), cursor: None };
    loop {
        let (sessions, next) = state.service.sessions(&caller, page.clone()).await?;
        for s in sessions.iter().filter(|s| s.status != SessionStatus::Deleted) {
            let wanted = states.is_empty() || states.iter().any(|st| st == state_of(s));
            let matches = metadata.iter().all(|(k, v)| s.metadata.get(k).and_then(Value::as_str) == Some(v.as_str()));
            if wanted && matches {
                listed.push(listed_json(&state, s));
            }
        }
        match next {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(Json(listed)),
        }
    }
}

async fn detail(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(detail_json(&state, &live_session(&state, &caller, &id).await?)?))
}

async fn kill(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    live_session(&state, &caller, &id).await?;
    state.service.delete_session(&caller, &id).await?;
    state.contexts().retain(|_, c| c.session != id);
    Ok(StatusCode::NO_CONTENT)
}

async fn set_timeout(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Timeout>,
) -> Result<StatusCode> {
    live_session(&state, &caller, &id).await?;
    let seconds = req.timeout.ok_or_else(|| E2bError::invalid("timeout (seconds) is required"))?;
    state.service.set_session_timeout(&caller, &id, seconds).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Refresh>,
) -> Result<StatusCode> {
    live_session(&state, &caller, &id).await?;
    state.service.set_session_timeout(&caller, &id, req.duration.unwrap_or(DEFAULT_TIMEOUT_S)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let s = live_session(&state, &caller, &id).await?;
    if s.status == SessionStatus::Stopped {
        return Err(E2bError { status: StatusCode::CONFLICT, code: "conflict", message: format!("{id} is paused") });
    }
    state.service.stop_session(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resumes a paused (stopped) sandbox; with a timeout, sets its lifetime from now.
async fn resumed(state: &State, caller: &Caller, id: &str, timeout: Option<u64>) -> Result<(Session, bool)> {
    let s = live_session(state, caller, id).await?;
    let was_paused = s.status == SessionStatus::Stopped;
    if was_paused {
        state.service.resume_session(caller, id).await?;
    }
    if let Some(seconds) = timeout {
        state.service.set_session_timeout(caller, id, seconds).await?;
    }
    Ok((state.service.session(caller, id).await?, was_paused))
}

async fn resume(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Timeout>,
) -> Result<Response> {
    let (s, _) = resumed(&state, &caller, &id, req.timeout).await?;
    Ok((StatusCode::CREATED, Json(sandbox_json(&state, &s)?)).into_response())
}

async fn connect(
    AxumState(state): AxumState<State>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Timeout>,
) -> Result<Response> {
    let (s, was_paused) = resumed(&state, &caller, &id, req.timeout).await?;
    let status = if was_paused { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(sandbox_json(&state, &s)?)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2b_default_templates_are_ours() {
        assert_eq!(template_of(Some("code-interpreter-v1")), None);
        assert_eq!(template_of(Some("base")), None);
        assert_eq!(template_of(None), None);
        assert_eq!(template_of(Some("data")).as_deref(), Some("data"));
    }

    #[test]
    fn list_filters_come_as_the_sdk_encodes_them() {
        let (states, metadata) = filters(Some("state=running,paused&metadata=user%3Dann%26env%3Ddev".into()));
        assert_eq!(states, ["running", "paused"]);
        assert_eq!(metadata.get("user").map(String::as_str), Some("ann"));
        assert_eq!(metadata.get("env").map(String::as_str), Some("dev"));
    }
}
