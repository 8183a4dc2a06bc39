//! What can go wrong in the service, in the domain's words. One place maps these to HTTP
//! statuses for every door (`sandbox-http/src/error.rs`).

use sandbox_runtime::RuntimeError;
use sandbox_store::StoreError;
use sandbox_workspace::WorkspaceError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// No API key, or one that is unknown or revoked, where keys are in force.
    #[error("{0}")]
    Unauthorized(String),
    /// A key that may see a thing but not do this to it (a tenant key deleting a shared
    /// template).
    #[error("{0}")]
    Forbidden(String),
    /// No such session, execution, template or file.
    #[error("{0}")]
    NotFound(String),
    /// The thing is in a state that forbids it: deleted, running, in use, already there.
    #[error("{0}")]
    Conflict(String),
    /// A request that is well formed but asks for something not allowed (a limit out of
    /// range, a bad name, a refused callback address).
    #[error("{0}")]
    Invalid(String),
    /// A request that is not well formed (a path that is not one).
    #[error("{0}")]
    Malformed(String),
    /// Larger than a limit allows (a file, a request part).
    #[error("{0}")]
    TooLarge(String),
    /// A workspace quota would be exceeded, or the workspace's disk is full.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A file of a type its template does not accept.
    #[error("{0}")]
    UnsupportedType(String),
    /// A tenant holds as many of a thing (running sessions, executions) as its limit allows;
    /// the message names the limit.
    #[error("{0}")]
    TenantLimit(String),
    /// A queue is full (a session's executions, sandbox starts): try again shortly.
    #[error("{0}")]
    Busy(String),
    /// The host is at a bound (memory, disk): try again later. The message names the resource.
    #[error("{0}")]
    Overloaded(String),
    /// Sandboxes cannot start here now, or storage is out of reach.
    #[error("{0}")]
    NotReady(String),
    /// The session's kernel did not start (the cause says why: an environment that breaks
    /// Python, a memory limit too small for it, ...). The session's files are untouched.
    #[error("{0}")]
    KernelUnavailable(String),
    /// A sandbox died or stopped answering while it was being started or driven (killed, out of
    /// memory, a host under load): nothing was lost, and trying again starts another.
    #[error("{0}")]
    SandboxFailed(String),
    /// A bug or a host failure. Details are logged, never shown: they may name host paths.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// `what` `id` is not there.
    pub fn not_found(what: &str, id: &str) -> ServiceError {
        ServiceError::NotFound(format!("{what} {id} not found"))
    }

    /// What may be shown to a caller: everything but an internal error's details.
    pub fn public_message(&self) -> String {
        match self {
            ServiceError::Internal(_) => "internal error; see the server log".to_string(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Open { .. }
            | StoreError::Migrate { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::Query(_)
            | StoreError::Corrupt { .. } => ServiceError::Internal(e.to_string()),
        }
    }
}

impl From<WorkspaceError> for ServiceError {
    fn from(e: WorkspaceError) -> Self {
        let message = e.to_string();
        match e {
            WorkspaceError::InvalidPath { .. } => ServiceError::Malformed(message),
            WorkspaceError::NotFound(_) => ServiceError::NotFound(message),
            WorkspaceError::IsDir(_)
            | WorkspaceError::NotDir(_)
            | WorkspaceError::NotRegular(_)
            | WorkspaceError::Exists(_)
            | WorkspaceError::NotEmpty(_)
            | WorkspaceError::IntoItself { .. } => ServiceError::Conflict(message),
            WorkspaceError::TooLarge { .. } => ServiceError::TooLarge(message),
            WorkspaceError::QuotaExceeded { .. } | WorkspaceError::Full => ServiceError::QuotaExceeded(message),
            WorkspaceError::Io { .. } => ServiceError::Internal(message),
            WorkspaceError::Remote(_) => ServiceError::NotReady(message),
        }
    }
}

impl From<RuntimeError> for ServiceError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NotReady(_) | RuntimeError::Start(_) => ServiceError::NotReady(e.to_string()),
            RuntimeError::Image(why) => ServiceError::Invalid(why),
            RuntimeError::Busy(why) => {
                ServiceError::Busy(format!("too many sandboxes are starting: {why}; retry shortly"))
            }
            // The sandbox's end went away (killed, out of memory), or it stopped answering.
            RuntimeError::Kernel(why) => ServiceError::KernelUnavailable(why),
            RuntimeError::SandboxDied(_) | RuntimeError::Unresponsive(_) | RuntimeError::Protocol(_) => {
                ServiceError::SandboxFailed(format!("{e}; try again"))
            }
            RuntimeError::Io { .. } => ServiceError::Internal(e.to_string()),
        }
    }
}
