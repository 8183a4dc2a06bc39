//! What the MCP tools need of sandboxd, whichever way it is reached: in process, through the
//! service (`/mcp` on sandboxd), or over its REST API (`sbx mcp`, over stdio). The tools are
//! written once, against this trait.

use async_trait::async_trait;
use sandbox_api::{
    CreateExecution, CreateSession, Execution, FileInfo, Output, PackageInstallResult, Session, UploadedFile,
};
use tokio::sync::mpsc::UnboundedSender;

/// Why a backend call failed: the API's error code (`not_found`, `conflict`, ...) and its
/// message, which the tools pass on to the model.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BackendError {
    pub code: String,
    pub message: String,
}

impl BackendError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> BackendError {
        BackendError { code: code.into(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// sandboxd, as the tools see it. `Caller` is who asks: taken from each request (its API key)
/// where the transport carries one, so every call is made as that caller.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    type Caller: Send + Sync + 'static;

    /// Who makes the request whose extensions these are (the HTTP request's parts, over
    /// Streamable HTTP).
    fn caller(&self, extensions: &rmcp::model::Extensions) -> Result<Self::Caller>;

    async fn create_session(&self, caller: &Self::Caller, req: CreateSession) -> Result<Session>;

    /// Runs code in a session; each output goes to `outputs` as it is made.
    async fn run_code(
        &self,
        caller: &Self::Caller,
        session: &str,
        req: CreateExecution,
        outputs: UnboundedSender<Output>,
    ) -> Result<Execution>;

    /// Interrupts the session's running cell (variables are kept).
    async fn interrupt(&self, caller: &Self::Caller, session: &str) -> Result<()>;

    async fn list_files(&self, caller: &Self::Caller, session: &str, dir: &str) -> Result<Vec<FileInfo>>;

    /// The whole of `path`, if it is at most `max` bytes.
    async fn read_file(&self, caller: &Self::Caller, session: &str, path: &str, max: u64) -> Result<Vec<u8>>;

    async fn write_file(&self, caller: &Self::Caller, session: &str, path: &str, data: Vec<u8>)
        -> Result<UploadedFile>;

    async fn install_packages(
        &self,
        caller: &Self::Caller,
        session: &str,
        packages: Vec<String>,
    ) -> Result<PackageInstallResult>;

    async fn restart_kernel(&self, caller: &Self::Caller, session: &str) -> Result<Session>;

    async fn delete_session(&self, caller: &Self::Caller, session: &str) -> Result<()>;
}
