//! `/mcp`: the MCP tools (`sandbox-mcp`) over Streamable HTTP, on the service layer. The key
//! check in front of `/v1` guards it too; the caller it finds rides in the HTTP request's
//! extensions, which rmcp hands to each tool call.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::request::Parts;
use bytes::Bytes;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::store::{SessionState, SessionStore, SessionStoreError};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sandbox_api::{
    CreateExecution, CreateSession, Execution, FileInfo, Output, PackageInstallResult, Session, UploadedFile,
};
use sandbox_mcp::backend::{Backend, BackendError, Result};
use sandbox_mcp::{RestBackend, SandboxTools};
use sandbox_service::access::auth::Caller;
use sandbox_service::executions::queue::Submission;
use sandbox_service::{Service, ServiceError};
use sandbox_workspace::RelPath;
use tokio::sync::mpsc::UnboundedSender;

use sandbox_http::ApiError;

/// The service, as the MCP tools see it.
pub struct ServiceBackend(pub Arc<Service>);

impl ServiceBackend {
    /// The REST API of the replica that runs `session`, speaking for `caller`, when another
    /// one does: a tool call on a session goes where its sandbox is, as a REST request does
    /// (`forward.rs`).
    async fn owner(&self, caller: &Caller, session: &str) -> Result<Option<RestBackend>> {
        let Some(address) = self.0.owner_elsewhere(caller, session).await.map_err(backend_error)? else {
            return Ok(None);
        };
        let headers = [
            (crate::forward::SECRET_HEADER, self.0.replica_secret().to_string()),
            (crate::forward::CALLER_HEADER, caller.to_forwarded()),
        ];
        Ok(Some(RestBackend(sandbox_client::Client::with_headers(&address, &headers))))
    }
}

/// A service error in the API's words: its code (`not_found`, ...) and public message.
fn backend_error(e: ServiceError) -> BackendError {
    let api = ApiError::from(e);
    BackendError::new(api.status_and_code().1, api.body().error.message)
}

fn path(p: &str) -> Result<RelPath> {
    RelPath::parse_or_root(p).map_err(|e| backend_error(e.into()))
}

#[async_trait]
impl Backend for ServiceBackend {
    type Caller = Caller;

    fn caller(&self, extensions: &rmcp::model::Extensions) -> Result<Caller> {
        let found = extensions.get::<Parts>().and_then(|parts| parts.extensions.get::<Caller>());
        found.cloned().ok_or_else(|| BackendError::new("unauthorized", "the request carries no caller"))
    }

    async fn create_session(&self, caller: &Caller, req: CreateSession) -> Result<Session> {
        self.0.create_session(caller, req).await.map_err(backend_error)
    }

    async fn run_code(
        &self,
        caller: &Caller,
        session: &str,
        req: CreateExecution,
        outputs: UnboundedSender<Output>,
    ) -> Result<Execution> {
        if let Some(remote) = self.owner(caller, session).await? {
            return remote.run_code(&(), session, req, outputs).await;
        }
        match self.0.submit_execution(caller, session, req, true).await.map_err(backend_error)? {
            Submission::Streaming(mut stream) => {
                while let Some(output) = stream.next_output().await {
                    let _ = outputs.send(output);
                }
                stream.finished().await.map_err(backend_error)
            }
            Submission::Finished(execution) | Submission::Accepted(execution) => Ok(execution),
        }
    }

    async fn interrupt(&self, caller: &Caller, session: &str) -> Result<()> {
        if let Some(remote) = self.owner(caller, session).await? {
            return remote.interrupt(&(), session).await;
        }
        self.0.interrupt(caller, session).await.map(drop).map_err(backend_error)
    }

    async fn list_files(&self, caller: &Caller, session: &str, dir: &str) -> Result<Vec<FileInfo>> {
        if let Some(remote) = self.owner(caller, session).await? {
            return remote.list_files(&(), session, dir).await;
        }
        let files = self.0.files(caller, session).await.map_err(backend_error)?;
        files.list(path(dir)?, false).await.map(|(list, _)| list).map_err(backend_error)
    }

    async fn read_file(&self, caller: &Caller, session: &str, file: &str, max: u64) -> Result<Vec<u8>> {
        if let Some(remote) = self.owner(caller, session).await? {
            return remote.read_file(&(), session, file, max).await;
        }
        let files = self.0.files(caller, session).await.map_err(backend_error)?;
        files.read_all(path(file)?, max).await.map(|(bytes, _)| bytes).map_err(backend_error)
    }

    async fn write_file(&self, caller: &Caller, session: &str, file: &str, data: Vec<u8>) -> Result<UploadedFile> {
        if let Some(remote) = self.owner(caller, session).await? {
            return remote.write_file(&(), session, file, data).await;
        }
        let files = self.0.files(caller, session).await.map_err(backend_error)?;
        let len = data.len() as u64;
        let mut body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(data))]);
        files.upload(path(file)?, Some(len), &mut body).await.map_err(backend_error)
    }

    async fn install_packages(
        &self,
        caller: &Caller,
        session: &str,
        packages: Vec<String>,
    ) -> Result<PackageInstallResult> {
        if let Some(remote) = self.owner(caller, session).await? {
            return remote.install_packages(&(), session, packages).await;
        }
        self.0.install_packages(caller, session, &packages).await.map_err(backend_error)
    }

    async fn restart_kernel(&self, caller: &Caller, session: &str) -> Result<Session> {
        if let Some(remote) = self.owner(caller, session).await? {
            return remote.restart_kernel(&(), session).await;
        }
        self.0.restart_kernel(caller, session).await.map_err(backend_error)
    }

    async fn delete_session(&self, caller: &Caller, session: &str) -> Result<()> {
        if let Some(remote) = self.owner(caller, session).await? {
            return remote.delete_session(&(), session).await;
        }
        self.0.delete_session(caller, session).await.map_err(backend_error)
    }
}

/// MCP sessions kept in the database: a client's requests may reach any replica (a balancer
/// without sticky sessions), and the replica that has not seen its session yet takes it up
/// from what the first kept (its `initialize`).
struct SharedSessions(Arc<Service>);

/// What the store says went wrong, for rmcp.
fn store_error(e: ServiceError) -> SessionStoreError {
    Box::new(std::io::Error::other(e.public_message()))
}

#[async_trait]
impl SessionStore for SharedSessions {
    async fn load(&self, id: &str) -> std::result::Result<Option<SessionState>, SessionStoreError> {
        match self.0.door_session("mcp", id).await.map_err(store_error)? {
            Some(kept) => Ok(Some(serde_json::from_str(&kept)?)),
            None => Ok(None),
        }
    }

    async fn store(&self, id: &str, state: &SessionState) -> std::result::Result<(), SessionStoreError> {
        let kept = serde_json::to_string(state)?;
        self.0.keep_door_session("mcp", id, &kept).await.map_err(store_error)
    }

    async fn delete(&self, id: &str) -> std::result::Result<(), SessionStoreError> {
        self.0.forget_door_session("mcp", id).await.map_err(store_error)
    }
}

/// The Streamable HTTP service for `/mcp`. Hosts other than loopback ones must be named in
/// `--mcp-allowed-hosts` (rmcp refuses the rest: a page on another site cannot reach a local
/// sandboxd through DNS rebinding).
pub fn service(state: Arc<Service>) -> StreamableHttpService<SandboxTools<ServiceBackend>, LocalSessionManager> {
    let backend = Arc::new(ServiceBackend(Arc::clone(&state)));
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    hosts.extend(state.config().mcp_allowed_hosts.iter().cloned());
    // Sessions (rmcp's default): a client's cancellation reaches the call it names. Without
    // them (stateless), a cancelled run_code went on to its end (tests/mcp/check.py).
    let mut config = StreamableHttpServerConfig::default().with_allowed_hosts(hosts);
    config.session_store = Some(Arc::new(SharedSessions(Arc::clone(&state))));
    StreamableHttpService::new(move || Ok(SandboxTools::new(Arc::clone(&backend))), Default::default(), config)
}
