//! Workspace storage: the files of a session, as its sandbox sees them at `/workspace`, reached
//! from sandboxd for the file API.
//!
//! Sandboxed code writes the same directory the API reads, and sandboxd has more rights than
//! that code. So every operation here is resolved by the kernel beneath the workspace's
//! directory fd and never follows a link (`sandbox_sys::fs`), client paths are validated first
//! ([`RelPath`]), and uploads are written to an unnamed file (`O_TMPFILE`) and named only when
//! complete: a reader (or a crash) never sees half a file.
//!
//! With S3-compatible storage, [`Mirror`] keeps each workspace directory in step with a bucket.
//!
//! Operations are blocking; sandboxd calls them from blocking threads.

mod archive;
pub mod environment;
#[cfg(feature = "s3")]
pub mod mirror;
mod path;
pub mod protocol;
pub mod sniff;
pub mod volume;
mod workspace;

pub use archive::{write_tar_gz, Tree};
#[cfg(feature = "s3")]
pub use mirror::{Mirror, S3Options, SyncReport};
pub use path::{RelPath, MAX_NAME_BYTES, MAX_PATH_BYTES};
pub use sandbox_sys::fs::Kind;
pub use volume::Volumes;
pub use workspace::{check_writable, hex, Entry, Staged, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("invalid path {path:?}: {why}")]
    InvalidPath { path: String, why: String },
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} is a directory")]
    IsDir(String),
    #[error("{0} is not a directory")]
    NotDir(String),
    #[error("{0} is a symbolic link or special file; the file API never follows or opens those")]
    NotRegular(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} is not empty; pass recursive=true to remove it with its contents")]
    NotEmpty(String),
    #[error("cannot move {from} to {to}: that is itself or inside it")]
    IntoItself { from: String, to: String },
    #[error("the file is larger than the limit of {limit} bytes per file")]
    TooLarge { limit: u64 },
    #[error("the workspace quota of {quota} bytes would be exceeded ({used} used, {adding} more needed)")]
    QuotaExceeded { quota: u64, used: u64, adding: u64 },
    #[error("the workspace's volume is full (its size is the workspace quota)")]
    Full,
    #[error("workspace storage: {0}")]
    Remote(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Maps an I/O error on `path` to what it means for the client.
pub(crate) fn io_error(op: &'static str, path: &RelPath, e: std::io::Error) -> WorkspaceError {
    use std::io::ErrorKind as K;
    if sandbox_sys::fs::is_refused_link(&e) {
        return WorkspaceError::NotRegular(path.to_string());
    }
    match e.kind() {
        K::NotFound => WorkspaceError::NotFound(path.to_string()),
        K::IsADirectory => WorkspaceError::IsDir(path.to_string()),
        K::NotADirectory => WorkspaceError::NotDir(path.to_string()),
        K::AlreadyExists => WorkspaceError::Exists(path.to_string()),
        K::DirectoryNotEmpty => WorkspaceError::NotEmpty(path.to_string()),
        _ => WorkspaceError::Io { op, path: path.to_string(), source: e },
    }
}
