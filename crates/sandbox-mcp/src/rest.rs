//! The tools over sandboxd's REST API: a [`Backend`] on [`sandbox_client::Client`]. `sbx mcp`
//! serves the tools with it over stdio; a replica reaches, through it, a session that another
//! replica runs.

use async_trait::async_trait;
use sandbox_api::{
    CreateExecution, CreateSession, Execution, FileInfo, Output, PackageInstallResult, Session, StreamName,
    UploadedFile,
};
use sandbox_client::{Client, ClientError};
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{Backend, BackendError, Result};

/// sandboxd's REST API, as the MCP tools see it.
pub struct RestBackend(pub Client);

fn backend_error(e: ClientError) -> BackendError {
    match e {
        ClientError::Api { code, message, .. } => BackendError::new(code, message),
        other => BackendError::new("unavailable", other.to_string()),
    }
}

/// An output as the REST API streams it (Server-Sent Events: the event's name and data).
fn output_of(event: &str, data: &str) -> Option<Output> {
    match event {
        "stdout" => Some(Output::Stream { name: StreamName::Stdout, text: data.to_string() }),
        "stderr" => Some(Output::Stream { name: StreamName::Stderr, text: data.to_string() }),
        _ => serde_json::from_str(data).ok(),
    }
}

#[async_trait]
impl Backend for RestBackend {
    /// The client's own headers say who calls: one key (`sbx`), or the caller a replica speaks
    /// for.
    type Caller = ();

    fn caller(&self, _extensions: &rmcp::model::Extensions) -> Result<()> {
        Ok(())
    }

    async fn create_session(&self, _: &(), req: CreateSession) -> Result<Session> {
        self.0.create_session(&req).await.map_err(backend_error)
    }

    async fn run_code(
        &self,
        _: &(),
        session: &str,
        req: CreateExecution,
        outputs: UnboundedSender<Output>,
    ) -> Result<Execution> {
        let forward = |event: &str, data: &str| {
            if let Some(output) = output_of(event, data) {
                let _ = outputs.send(output);
            }
        };
        self.0.execute_stream(session, &req, forward).await.map_err(backend_error)
    }

    async fn interrupt(&self, _: &(), session: &str) -> Result<()> {
        self.0.interrupt(session).await.map(drop).map_err(backend_error)
    }

    async fn list_files(&self, _: &(), session: &str, dir: &str) -> Result<Vec<FileInfo>> {
        self.0.list_files(session, dir, false).await.map(|l| l.files).map_err(backend_error)
    }

    async fn read_file(&self, _: &(), session: &str, path: &str, max: u64) -> Result<Vec<u8>> {
        let mut resp = self.0.download(session, path).await.map_err(backend_error)?;
        let too_large = || BackendError::new("payload_too_large", format!("{path} is larger than {max} bytes"));
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| backend_error(e.into()))? {
            if bytes.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    async fn write_file(&self, _: &(), session: &str, path: &str, data: Vec<u8>) -> Result<UploadedFile> {
        let len = data.len() as u64;
        self.0.upload(session, path, data, Some(len)).await.map_err(backend_error)
    }

    async fn install_packages(&self, _: &(), session: &str, packages: Vec<String>) -> Result<PackageInstallResult> {
        let specs: Vec<&str> = packages.iter().map(String::as_str).collect();
        self.0.install_packages(session, &specs).await.map_err(backend_error)
    }

    async fn restart_kernel(&self, _: &(), session: &str) -> Result<Session> {
        self.0.restart(session).await.map_err(backend_error)
    }

    async fn delete_session(&self, _: &(), session: &str) -> Result<()> {
        self.0.delete_session(session).await.map_err(backend_error)
    }
}
