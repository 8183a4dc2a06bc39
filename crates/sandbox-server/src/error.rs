//! API errors, and the one place where every lower-level error becomes an HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandbox_api::{ErrorBody, ErrorDetail};
use sandbox_runtime::RuntimeError;
use sandbox_store::StoreError;
use sandbox_workspace::WorkspaceError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    NotReady(String),
    /// The host or the server is at a bound (connections, memory, disk): try again later (503
    /// with `Retry-After`). The message names the resource.
    #[error("{0}")]
    Overloaded(String),
    /// An upload of a type its template does not accept (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A `Range` outside the file (416).
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// A workspace quota would be exceeded (507).
    #[error("{0}")]
    InsufficientStorage(String),
    /// A sandbox died or stopped answering while it was being started or driven (killed, out of
    /// memory, a host under load): nothing was lost, and trying again starts another (503).
    #[error("{0}")]
    SandboxFailed(String),
    /// Details are logged, never sent: they may name host paths.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::SandboxFailed(_) => (StatusCode::SERVICE_UNAVAILABLE, "sandbox_failed"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
            ApiError::InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.status_and_code();
        let message = match self {
            ApiError::Internal(_) => "internal error; see the server log".to_string(),
            other => other.to_string(),
        };
        ErrorBody { error: ErrorDetail { code: code.to_string(), message } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let (status, _) = self.status_and_code();
        let mut resp = (status, Json(self.body())).into_response();
        if matches!(self, ApiError::Overloaded(_) | ApiError::RateLimited(_) | ApiError::SandboxFailed(_)) {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Open { .. }
            | StoreError::Migrate { .. }
            | StoreError::Query(_)
            | StoreError::Corrupt { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<WorkspaceError> for ApiError {
    fn from(e: WorkspaceError) -> Self {
        let message = e.to_string();
        match e {
            WorkspaceError::InvalidPath { .. } => ApiError::BadRequest(message),
            WorkspaceError::NotFound(_) => ApiError::NotFound(message),
            WorkspaceError::IsDir(_)
            | WorkspaceError::NotDir(_)
            | WorkspaceError::NotRegular(_)
            | WorkspaceError::Exists(_)
            | WorkspaceError::NotEmpty(_) => ApiError::Conflict(message),
            WorkspaceError::TooLarge { .. } => ApiError::PayloadTooLarge(message),
            WorkspaceError::QuotaExceeded { .. } | WorkspaceError::Full => ApiError::InsufficientStorage(message),
            WorkspaceError::Io { .. } => ApiError::Internal(message),
            WorkspaceError::Remote(_) => ApiError::NotReady(message),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NotReady(_) | RuntimeError::Start(_) => ApiError::NotReady(e.to_string()),
            RuntimeError::Busy(why) => {
                ApiError::RateLimited(format!("too many sandboxes are starting: {why}; retry shortly"))
            }
            // The sandbox's end went away (killed, out of memory), or it stopped answering.
            RuntimeError::Kernel(_)
            | RuntimeError::SandboxDied(_)
            | RuntimeError::Unresponsive(_)
            | RuntimeError::Protocol(_) => ApiError::SandboxFailed(format!("{e}; try again")),
            RuntimeError::Cgroup { .. } | RuntimeError::Io { .. } => ApiError::Internal(e.to_string()),
        }
    }
}
