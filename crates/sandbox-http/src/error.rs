//! API errors: the HTTP statuses of the doors, and the one place where a [`ServiceError`]
//! becomes one (an exhaustive match: a new kind of error must be given one).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandbox_api::{ErrorBody, ErrorDetail};
use sandbox_service::ServiceError;
use sandbox_workspace::WorkspaceError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No API key, or an unknown or revoked one (401, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// A key that may see a thing but not do this to it (403).
    #[error("{0}")]
    Forbidden(String),
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
    /// A tenant holds as many running sessions or executions as its limit allows (429).
    #[error("{0}")]
    TenantLimit(String),
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
    /// The session's kernel did not start (503, with the cause).
    #[error("{0}")]
    KernelUnavailable(String),
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
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::TenantLimit(_) => (StatusCode::TOO_MANY_REQUESTS, "tenant_limit"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::SandboxFailed(_) => (StatusCode::SERVICE_UNAVAILABLE, "sandbox_failed"),
            ApiError::KernelUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "kernel_unavailable"),
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
        if matches!(
            self,
            ApiError::Overloaded(_)
                | ApiError::RateLimited(_)
                | ApiError::TenantLimit(_)
                | ApiError::SandboxFailed(_)
                | ApiError::KernelUnavailable(_)
        ) {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            let challenge = axum::http::HeaderValue::from_static("Bearer");
            resp.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        }
        resp
    }
}

/// The one place where what went wrong in the service becomes an HTTP status.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Unauthorized(m) => ApiError::Unauthorized(m),
            ServiceError::Forbidden(m) => ApiError::Forbidden(m),
            ServiceError::NotFound(m) => ApiError::NotFound(m),
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::Invalid(m) => ApiError::Invalid(m),
            ServiceError::Malformed(m) => ApiError::BadRequest(m),
            ServiceError::TooLarge(m) => ApiError::PayloadTooLarge(m),
            ServiceError::QuotaExceeded(m) => ApiError::InsufficientStorage(m),
            ServiceError::UnsupportedType(m) => ApiError::UnsupportedMediaType(m),
            ServiceError::Busy(m) => ApiError::RateLimited(m),
            ServiceError::TenantLimit(m) => ApiError::TenantLimit(m),
            ServiceError::Overloaded(m) => ApiError::Overloaded(m),
            ServiceError::NotReady(m) => ApiError::NotReady(m),
            ServiceError::SandboxFailed(m) => ApiError::SandboxFailed(m),
            ServiceError::KernelUnavailable(m) => ApiError::KernelUnavailable(m),
            ServiceError::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// Errors of the parts below the service, when the HTTP layer meets them directly (paths).
impl From<WorkspaceError> for ApiError {
    fn from(e: WorkspaceError) -> Self {
        ServiceError::from(e).into()
    }
}
