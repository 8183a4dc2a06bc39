//! Errors in the E2B dialects: the control API's and envd's `{"code": <status>, "message"}`
//! (which the SDK turns into its exceptions by status), with this project's own
//! `{"error": {"code", "message"}}` beside it; and Connect-RPC's `{"code": "<name>",
//! "message"}` for the RPC routes, reshaped from the one mapping of a `ServiceError` to a
//! status (`sandbox_http::ApiError`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandbox_http::ApiError;
use sandbox_service::ServiceError;

/// A status, this project's error code for it, and what to say.
#[derive(Debug, Clone)]
pub struct E2bError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl E2bError {
    pub fn invalid(message: impl Into<String>) -> E2bError {
        E2bError { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> E2bError {
        E2bError { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
    }

    /// The Connect-RPC code of this error, by its HTTP status.
    pub fn connect_code(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 413 | 415 | 416 | 422 => "invalid_argument",
            401 => "unauthenticated",
            403 => "permission_denied",
            404 => "not_found",
            409 => "already_exists",
            429 => "resource_exhausted",
            507 => "resource_exhausted",
            503 => "unavailable",
            _ => "internal",
        }
    }

    /// The body of a Connect-RPC error.
    pub fn connect_body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.connect_code(), "message": self.message })
    }
}

/// The one mapping (`sandbox_http::ApiError`), in E2B's words: E2B refuses a request it
/// cannot take with 400 whatever the reason, and its SDKs know no 422.
impl From<ServiceError> for E2bError {
    fn from(e: ServiceError) -> E2bError {
        let api = ApiError::from(e);
        if let ApiError::Internal(detail) = &api {
            tracing::error!(%detail, "internal error");
        }
        let (status, code) = match api.status_and_code() {
            (StatusCode::UNPROCESSABLE_ENTITY, code) => (StatusCode::BAD_REQUEST, code),
            other => other,
        };
        E2bError { status, code, message: api.body().error.message }
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.status.as_u16(),
            "message": self.message,
            "error": { "code": self.code, "message": self.message },
        });
        (self.status, Json(body)).into_response()
    }
}

/// An error answered as Connect-RPC answers a unary call.
pub struct ConnectError(pub E2bError);

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        (self.0.status, Json(self.0.connect_body())).into_response()
    }
}

impl<E: Into<E2bError>> From<E> for ConnectError {
    fn from(e: E) -> ConnectError {
        ConnectError(e.into())
    }
}

impl From<sandbox_workspace::WorkspaceError> for E2bError {
    fn from(e: sandbox_workspace::WorkspaceError) -> E2bError {
        ServiceError::from(e).into()
    }
}
