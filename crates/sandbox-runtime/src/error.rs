//! Errors of the runtime layer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime cannot create sandboxes on this host (the cause is user-facing).
    #[error("runtime not ready: {0}")]
    NotReady(String),
    #[error("cannot start the sandbox: {0}")]
    Start(String),
    /// An image a template names cannot be used (not on the engine, or a runtime without images).
    #[error("{0}")]
    Image(String),
    /// Too many sandbox starts are waiting; try again shortly.
    #[error("busy: {0}")]
    Busy(String),
    #[error("the sandbox exited unexpectedly: {0}")]
    SandboxDied(String),
    #[error("kernel: {0}")]
    Kernel(String),
    #[error("the sandbox did not answer within {0} s and was destroyed")]
    Unresponsive(u64),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("executor protocol: {0}")]
    Protocol(#[from] std::io::Error),
}
