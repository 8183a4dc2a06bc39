//! The workspace's file server: sandboxd's file API, done from inside the sandbox for runtimes
//! whose sandboxes do not share sandboxd's disk ([`sandbox_protocol::files`]).
//!
//! It is the same [`Workspace`] code sandboxd runs on its own disk: paths resolved beneath
//! `/workspace`, never through a link, uploads in unnamed files until committed. Running as
//! the sandbox's user, it can reach nothing the sandbox's code cannot.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use sandbox_protocol::files::{FileOp, FileResult, CHUNK_BYTES};
use sandbox_workspace::protocol::{fault, to_wire};
use sandbox_workspace::{RelPath, Staged, Workspace, WorkspaceError};

/// Uploads open at once; each holds a file descriptor.
const MAX_STAGES: usize = 64;

pub struct FileServer {
    root: std::path::PathBuf,
    /// Uploads being written, by the name sandboxd gave them.
    stages: Mutex<HashMap<String, Staged>>,
}

impl FileServer {
    pub fn new(root: &Path) -> FileServer {
        FileServer { root: root.to_path_buf(), stages: Mutex::new(HashMap::new()) }
    }

    pub fn handle(&self, op: FileOp) -> FileResult {
        match self.run(op) {
            Ok(result) => result,
            Err(e) => FileResult::Failed { fault: fault(&e) },
        }
    }

    fn stages(&self) -> std::sync::MutexGuard<'_, HashMap<String, Staged>> {
        self.stages.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_stage(&self, stage: &str) -> Result<Staged, WorkspaceError> {
        self.stages().remove(stage).ok_or_else(|| WorkspaceError::Remote(format!("no upload {stage:?} is open")))
    }

    fn run(&self, op: FileOp) -> Result<FileResult, WorkspaceError> {
        let ws = Workspace::open(&self.root, None)?;
        let path = |p: &str| if p.is_empty() { Ok(RelPath::root()) } else { RelPath::parse(p) };
        Ok(match op {
            FileOp::Stat { path: p } => FileResult::Entry { entry: to_wire(&ws.stat(&path(&p)?)?) },
            FileOp::List { dir, recursive, limit } => {
                let entries = ws.list(&path(&dir)?, recursive, limit)?;
                FileResult::Entries { entries: entries.iter().map(to_wire).collect() }
            }
            FileOp::Read { path: p, offset, len } => {
                let p = path(&p)?;
                let (mut file, entry) = ws.open_file(&p)?;
                let io = |e| WorkspaceError::Io { op: "read", path: p.to_string(), source: e };
                file.seek(SeekFrom::Start(offset)).map_err(io)?;
                let mut data = Vec::new();
                file.take(len.min(CHUNK_BYTES as u64)).read_to_end(&mut data).map_err(io)?;
                FileResult::Data { data, entry: to_wire(&entry) }
            }
            FileOp::Stage { stage } => {
                if self.stages().len() >= MAX_STAGES {
                    return Err(WorkspaceError::Remote(format!("{MAX_STAGES} uploads are open already")));
                }
                let staged = ws.stage()?;
                self.stages().insert(stage, staged);
                FileResult::Done
            }
            FileOp::Append { stage, data, max } => {
                let mut staged = self.take_stage(&stage)?;
                staged.write(&data, max)?;
                self.stages().insert(stage, staged);
                FileResult::Done
            }
            FileOp::Commit { stage, path: p } => {
                let staged = self.take_stage(&stage)?;
                FileResult::Entry { entry: to_wire(&ws.commit(staged, &path(&p)?)?) }
            }
            FileOp::Discard { stage } => {
                self.stages().remove(&stage);
                FileResult::Done
            }
            FileOp::Usage { besides } => {
                let bytes = match besides.and_then(|s| self.take_stage(&s).ok().map(|staged| (s, staged))) {
                    Some((name, staged)) => {
                        let used = ws.usage_besides(&staged);
                        self.stages().insert(name, staged);
                        used?
                    }
                    None => ws.usage()?,
                };
                FileResult::Usage { bytes }
            }
            FileOp::Remove { path: p, recursive } => {
                ws.remove(&path(&p)?, recursive)?;
                FileResult::Done
            }
            FileOp::Rename { from, to } => {
                FileResult::Entry { entry: to_wire(&ws.rename(&path(&from)?, &path(&to)?)?) }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_protocol::files::{FileFault, FileKind};

    fn ok(r: FileResult) -> FileResult {
        assert!(!matches!(r, FileResult::Failed { .. }), "{r:?}");
        r
    }

    #[test]
    fn an_upload_is_staged_appended_committed_then_read_back_in_chunks() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let server = FileServer::new(dir.path());
        ok(server.handle(FileOp::Stage { stage: "u".into() }));
        for part in [&b"hello "[..], b"world"] {
            ok(server.handle(FileOp::Append { stage: "u".into(), data: part.to_vec(), max: 100 }));
        }
        let usage = server.handle(FileOp::Usage { besides: Some("u".into()) });
        assert_eq!(usage, FileResult::Usage { bytes: 0 }, "the upload itself is not counted");
        assert!(!dir.path().join("out/a.txt").exists(), "nothing visible before the commit");
        let FileResult::Entry { entry } =
            ok(server.handle(FileOp::Commit { stage: "u".into(), path: "out/a.txt".into() }))
        else {
            panic!("a commit answers with the entry");
        };
        assert_eq!((entry.kind, entry.size), (FileKind::File, 11));
        assert_eq!(std::fs::read(dir.path().join("out/a.txt"))?, b"hello world");
        let read = server.handle(FileOp::Read { path: "out/a.txt".into(), offset: 6, len: 3 });
        assert!(matches!(read, FileResult::Data { ref data, .. } if data == b"wor"), "{read:?}");
        let FileResult::Entries { entries } =
            ok(server.handle(FileOp::List { dir: "".into(), recursive: true, limit: 10 }))
        else {
            panic!("a listing answers with entries");
        };
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["out", "out/a.txt"]);
        Ok(())
    }

    #[test]
    fn paths_never_leave_the_workspace_nor_follow_links() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::os::unix::fs::symlink("/etc", dir.path().join("etc"))?;
        let server = FileServer::new(dir.path());
        let escape = server.handle(FileOp::Read { path: "../x".into(), offset: 0, len: 10 });
        assert!(matches!(escape, FileResult::Failed { fault: FileFault::InvalidPath { .. } }), "{escape:?}");
        let through_link = server.handle(FileOp::Read { path: "etc/passwd".into(), offset: 0, len: 10 });
        assert!(matches!(through_link, FileResult::Failed { fault: FileFault::NotRegular { .. } }), "{through_link:?}");
        let too_big = server.handle(FileOp::Stage { stage: "u".into() });
        ok(too_big);
        let over = server.handle(FileOp::Append { stage: "u".into(), data: vec![0; 10], max: 5 });
        assert_eq!(over, FileResult::Failed { fault: FileFault::TooLarge { limit: 5 } });
        let unknown = server.handle(FileOp::Commit { stage: "nope".into(), path: "a".into() });
        assert!(matches!(unknown, FileResult::Failed { fault: FileFault::Other { .. } }), "{unknown:?}");
        Ok(())
    }
}
