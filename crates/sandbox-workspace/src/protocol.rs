//! Entries and errors as the executor protocol carries them ([`sandbox_protocol::files`]),
//! both ways: the executor answers with them, sandboxd turns them back into the same
//! [`Entry`] and [`WorkspaceError`] its own disk would give.

use sandbox_protocol::files::{FileEntry, FileFault, FileKind};

use crate::{Entry, Kind, RelPath, WorkspaceError};

pub fn to_wire(e: &Entry) -> FileEntry {
    let kind = match e.kind {
        Kind::File => FileKind::File,
        Kind::Dir => FileKind::Dir,
        Kind::Symlink => FileKind::Symlink,
        Kind::Other => FileKind::Other,
    };
    let modified = (e.modified_at.timestamp(), e.modified_at.timestamp_subsec_nanos());
    FileEntry { path: e.path.as_str().to_string(), kind, size: e.size, modified }
}

/// An entry from the wire; its path is checked like a client's.
pub fn from_wire(e: FileEntry) -> Result<Entry, WorkspaceError> {
    let kind = match e.kind {
        FileKind::File => Kind::File,
        FileKind::Dir => Kind::Dir,
        FileKind::Symlink => Kind::Symlink,
        FileKind::Other => Kind::Other,
    };
    let path = if e.path.is_empty() { RelPath::root() } else { RelPath::parse(&e.path)? };
    let modified_at = chrono::DateTime::from_timestamp(e.modified.0, e.modified.1).unwrap_or_default();
    Ok(Entry { path, kind, size: e.size, modified_at })
}

pub fn fault(e: &WorkspaceError) -> FileFault {
    use WorkspaceError as W;
    match e {
        W::InvalidPath { path, why } => FileFault::InvalidPath { path: path.clone(), why: why.clone() },
        W::NotFound(path) => FileFault::NotFound { path: path.clone() },
        W::IsDir(path) => FileFault::IsDir { path: path.clone() },
        W::NotDir(path) => FileFault::NotDir { path: path.clone() },
        W::NotRegular(path) => FileFault::NotRegular { path: path.clone() },
        W::Exists(path) => FileFault::Exists { path: path.clone() },
        W::NotEmpty(path) => FileFault::NotEmpty { path: path.clone() },
        W::IntoItself { from, to } => FileFault::IntoItself { from: from.clone(), to: to.clone() },
        W::TooLarge { limit } => FileFault::TooLarge { limit: *limit },
        W::Full => FileFault::Full,
        W::QuotaExceeded { .. } | W::Remote(_) | W::Io { .. } => FileFault::Other { message: e.to_string() },
    }
}

pub fn error(f: FileFault) -> WorkspaceError {
    use WorkspaceError as W;
    match f {
        FileFault::InvalidPath { path, why } => W::InvalidPath { path, why },
        FileFault::NotFound { path } => W::NotFound(path),
        FileFault::IsDir { path } => W::IsDir(path),
        FileFault::NotDir { path } => W::NotDir(path),
        FileFault::NotRegular { path } => W::NotRegular(path),
        FileFault::Exists { path } => W::Exists(path),
        FileFault::NotEmpty { path } => W::NotEmpty(path),
        FileFault::IntoItself { from, to } => W::IntoItself { from, to },
        FileFault::TooLarge { limit } => W::TooLarge { limit },
        FileFault::Full => W::Full,
        FileFault::Other { message } => W::Remote(format!("in the sandbox: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_errors_survive_the_trip() -> Result<(), WorkspaceError> {
        let entry = Entry {
            path: RelPath::parse("a/b.txt")?,
            kind: Kind::File,
            size: 7,
            modified_at: chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap_or_default(),
        };
        assert_eq!(from_wire(to_wire(&entry))?, entry);
        let errors = [
            WorkspaceError::NotFound("x".into()),
            WorkspaceError::NotEmpty("d".into()),
            WorkspaceError::TooLarge { limit: 3 },
            WorkspaceError::IntoItself { from: "a".into(), to: "a/b".into() },
        ];
        for e in errors {
            assert_eq!(error(fault(&e)).to_string(), e.to_string());
        }
        let unsafe_path = FileEntry { path: "../x".into(), kind: FileKind::File, size: 0, modified: (0, 0) };
        assert!(from_wire(unsafe_path).is_err(), "a path from the sandbox is checked like a client's");
        Ok(())
    }
}
