//! File operations on `/workspace`, done by the executor inside the sandbox: how sandboxd
//! reaches a workspace when the sandbox does not share its disk. Paths are relative to the
//! workspace, checked by sandboxd first and again by the executor, which resolves them beneath
//! the workspace and never through a link, as sandboxd does on its own disk.
//!
//! An upload is a stage (an unnamed file), filled by appends of at most [`CHUNK_BYTES`] each
//! and committed under its name at the end; a download is a series of reads.

use serde::{Deserialize, Serialize};

/// The most bytes one read or append carries (base64 in a frame, well under its limit).
pub const CHUNK_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileOp {
    Stat {
        path: String,
    },
    List {
        dir: String,
        recursive: bool,
        limit: usize,
    },
    /// At most `len` bytes (and at most [`CHUNK_BYTES`]) of regular file `path` from `offset`.
    Read {
        path: String,
        offset: u64,
        len: u64,
    },
    /// Opens a new upload named `stage` (the caller's name for it until it is committed).
    Stage {
        stage: String,
    },
    /// Appends to upload `stage`; fails once it would pass `max` bytes.
    Append {
        stage: String,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
        max: u64,
    },
    /// Moves upload `stage` into place at `path`, replacing a file there.
    Commit {
        stage: String,
        path: String,
    },
    Discard {
        stage: String,
    },
    /// Bytes the workspace's files take, less upload `besides` if named.
    Usage {
        besides: Option<String>,
    },
    Remove {
        path: String,
        recursive: bool,
    },
    Rename {
        from: String,
        to: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry, as the workspace reports it (links as links).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Last change, as seconds and nanoseconds since the epoch.
    pub modified: (i64, u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum FileResult {
    Entry {
        entry: FileEntry,
    },
    Entries {
        entries: Vec<FileEntry>,
    },
    /// Bytes read, and the file they came from (its whole size included).
    Data {
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
        entry: FileEntry,
    },
    Usage {
        bytes: u64,
    },
    Done,
    Failed {
        fault: FileFault,
    },
}

/// Why an operation failed, in terms sandboxd maps to the same answers as on its own disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FileFault {
    InvalidPath {
        path: String,
        why: String,
    },
    NotFound {
        path: String,
    },
    IsDir {
        path: String,
    },
    NotDir {
        path: String,
    },
    NotRegular {
        path: String,
    },
    Exists {
        path: String,
    },
    NotEmpty {
        path: String,
    },
    IntoItself {
        from: String,
        to: String,
    },
    TooLarge {
        limit: u64,
    },
    Full,
    /// Anything else (an I/O error, an unknown stage), said in words.
    Other {
        message: String,
    },
}

/// Bytes as base64 text: JSON has no bytes, and an array of numbers is four times the size.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_travel_as_base64_and_round_trip() {
        let op = FileOp::Append { stage: "u1".into(), data: vec![0, 255, 10], max: 9 };
        let json = serde_json::to_value(&op).expect("json");
        assert_eq!(json, serde_json::json!({"op": "append", "stage": "u1", "data": "AP8K", "max": 9}));
        assert_eq!(serde_json::from_value::<FileOp>(json).expect("parse"), op);
        let done = FileResult::Failed { fault: FileFault::NotFound { path: "a".into() } };
        let back: FileResult = serde_json::from_str(&serde_json::to_string(&done).expect("json")).expect("parse");
        assert_eq!(back, done);
    }
}
