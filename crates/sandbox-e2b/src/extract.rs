//! Request bodies as the E2B routes take them: JSON (an empty body is `{}`, as the SDKs send
//! some calls), refused in E2B's words; and a Connect-RPC call on a session's files.

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use sandbox_service::files::SessionFiles;
use serde::de::DeserializeOwned;

use crate::error::{ConnectError, E2bError};
use crate::{SandboxCaller, State};

/// The body's JSON; an empty body reads as `{}`.
fn parsed<T: DeserializeOwned>(body: &[u8]) -> Result<T, E2bError> {
    let text = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(text).map_err(|e| E2bError::invalid(format!("invalid request: {e}")))
}

/// A JSON body, refused with E2B's error when it is not one.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = E2bError;

    async fn from_request(req: Request, state: &S) -> Result<Self, E2bError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| E2bError::invalid(e.to_string()))?;
        parsed(&bytes).map(JsonBody)
    }
}

/// A Connect-RPC unary call on a sandbox's files: its message, and the session's files,
/// opened as the caller.
pub struct FilesCall<T> {
    pub message: T,
    pub files: SessionFiles,
}

impl<T: DeserializeOwned + Send> FromRequest<State> for FilesCall<T> {
    type Rejection = ConnectError;

    async fn from_request(req: Request, state: &State) -> Result<Self, ConnectError> {
        let (mut parts, body) = req.into_parts();
        let who = SandboxCaller::from_request_parts(&mut parts, state).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| E2bError::invalid(e.to_string()))?;
        let message = parsed(&bytes)?;
        let files = state.service.files(&who.caller, &who.session).await?;
        Ok(FilesCall { message, files })
    }
}
