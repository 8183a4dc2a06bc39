//! A workspace copied between this disk and a sandbox that keeps its own
//! ([`sandbox_runtime::Runtime::copies_workspace`]: a Kubernetes pod's `emptyDir`).
//!
//! The directory on this disk stays the session's workspace as far as the rest of sandboxd is
//! concerned: S3 storage pulls it before a sandbox starts and pushes it when it writes back,
//! as with any runtime. What this module adds is the step between that directory and the
//! sandbox, through the executor's file operations (the file API's own,
//! [`WorkspaceFiles`]):
//!
//! - [`copy_in`] fills a new sandbox's empty workspace from the directory;
//! - [`copy_out`] brings the directory up to date with the sandbox: files new or changed
//!   since the last copy are read, files gone are removed here too.
//!
//! A [`Manifest`] remembers each sandbox file's size and time as of the last copy, so an
//! unchanged file is not read again. Files only: directories follow from them, and links and
//! special files are left out (as in archives and in S3).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sandbox_runtime::Sandbox;
use sandbox_workspace::{Entry, Kind, RelPath, Tree, Workspace, WorkspaceError};

use crate::error::ServiceError;
use crate::files::workspace::HostDirs;
use crate::files::workspace_files::WorkspaceFiles;

type Result<T> = std::result::Result<T, WorkspaceError>;

/// The sandbox's files as of the last copy, each by size and time.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Manifest(HashMap<RelPath, (u64, DateTime<Utc>)>);

impl Manifest {
    fn holds(&self, e: &Entry) -> bool {
        self.0.get(&e.path) == Some(&(e.size, e.modified_at))
    }

    fn note(&mut self, e: &Entry) {
        self.0.insert(e.path.clone(), (e.size, e.modified_at));
    }
}

/// What one copy moved.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
    pub removed: u64,
}

/// Which way a copy goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    /// [`copy_in`]: a new sandbox filled from the directory here.
    In,
    /// [`copy_out`]: the directory here brought up to date with the sandbox, reading only
    /// what changed since the manifest was noted (everything, without one).
    Out,
}

/// Copies workspace `id` between its directory here and `sandbox`, and notes in `manifest`
/// what the sandbox then holds (copies of one workspace take turns on it).
pub async fn copy(
    direction: Direction,
    sandbox: Arc<dyn Sandbox>,
    dirs: &HostDirs,
    id: &str,
    manifest: &tokio::sync::Mutex<Option<Manifest>>,
) -> std::result::Result<Copied, ServiceError> {
    let mut known = manifest.lock().await;
    let host = WorkspaceFiles::Host(Workspace::open(&dirs.workspaces.ensure_soon(id).await?, dirs.workspaces.owner())?);
    let theirs = WorkspaceFiles::through(sandbox);
    let before = known.clone().unwrap_or_default();
    let copied = tokio::task::spawn_blocking(move || match direction {
        Direction::In => copy_in(&host, &theirs),
        Direction::Out => copy_out(&theirs, &host, &before),
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("copy task failed: {e}")))??;
    *known = Some(copied.0);
    Ok(copied.1)
}

/// With a runtime whose sandboxes keep their own workspace, brings the copy here up to date
/// with session `id`'s sandbox: the one live here, or with `find_again` (before a stop or a
/// delete removes it) one the runtime still runs for it with no handle here. A failure is
/// logged: the copy keeps what the last one brought.
pub async fn save_sandbox_files(state: &crate::Service, id: &str, find_again: bool) {
    if !state.runtime.copies_workspace() {
        return;
    }
    let live = state.sessions.existing(id);
    let sandbox = match live.as_ref().and_then(|l| l.current()).filter(|sb| sb.is_alive()) {
        Some(sb) => sb,
        None if find_again && state.runtime.keeps_sandboxes() => match state.runtime.reattach(id).await {
            Ok(Some(sb)) => Arc::from(sb),
            Ok(None) => return,
            Err(e) => return tracing::warn!(session = %id, error = %e, "cannot reach the sandbox to save its files"),
        },
        None => return,
    };
    let unknown = tokio::sync::Mutex::new(None);
    let manifest = live.as_ref().map_or(&unknown, |l| &l.copied);
    match copy(Direction::Out, sandbox, &state.dirs, id, manifest).await {
        Ok(copied) if copied.files + copied.removed > 0 => tracing::info!(
            session = %id,
            files = copied.files,
            bytes = copied.bytes,
            removed = copied.removed,
            "workspace copied out of the sandbox"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(session = %id, error = %e, "cannot copy the workspace out of its sandbox"),
    }
}

/// Bytes read at a time.
const BUFFER: usize = 1 << 20;

/// Copies every file of `host` into the (empty) workspace of `sandbox`. Blocks: call it on a
/// blocking thread.
pub fn copy_in(host: &WorkspaceFiles, sandbox: &WorkspaceFiles) -> Result<(Manifest, Copied)> {
    let mut manifest = Manifest::default();
    let mut copied = Copied::default();
    for entry in host.list(&RelPath::root(), true, usize::MAX)? {
        if entry.kind != Kind::File {
            continue;
        }
        let put = copy_file(host, sandbox, &entry.path)?;
        copied.files += 1;
        copied.bytes += put.size;
        manifest.note(&put);
    }
    Ok((manifest, copied))
}

/// Makes `host` hold what `sandbox` holds: the files `known` does not list as they are now are
/// read; whatever `sandbox` no longer has goes from `host`. Returns the sandbox's files as now
/// copied. Blocks: call it on a blocking thread.
pub fn copy_out(sandbox: &WorkspaceFiles, host: &WorkspaceFiles, known: &Manifest) -> Result<(Manifest, Copied)> {
    let theirs = sandbox.list(&RelPath::root(), true, usize::MAX)?;
    let ours = host.list(&RelPath::root(), true, usize::MAX)?;
    let kinds: HashMap<&RelPath, Kind> = theirs.iter().map(|e| (&e.path, e.kind)).collect();
    let mut copied = Copied::default();
    // What went, or changed kind, goes here too; a directory's contents go with it.
    let mut removed: Vec<&RelPath> = Vec::new();
    for entry in &ours {
        if kinds.get(&entry.path) == Some(&entry.kind) || removed.iter().any(|r| entry.path.starts_with(r)) {
            continue;
        }
        match host.remove(&entry.path, true) {
            Ok(()) | Err(WorkspaceError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        removed.push(&entry.path);
        copied.removed += 1;
    }
    let kept: HashSet<&RelPath> =
        ours.iter().filter(|e| e.kind == Kind::File && !removed.contains(&&e.path)).map(|e| &e.path).collect();
    let mut manifest = Manifest::default();
    for entry in theirs.iter().filter(|e| e.kind == Kind::File) {
        if known.holds(entry) && kept.contains(&entry.path) {
            manifest.note(entry);
            continue;
        }
        // It may change while it is read: what is noted is what was listed, so a change
        // after the listing is read again next time.
        match copy_file(sandbox, host, &entry.path) {
            Ok(put) => {
                copied.files += 1;
                copied.bytes += put.size;
                manifest.note(entry);
            }
            // Gone since the listing: the next copy removes it here.
            Err(WorkspaceError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((manifest, copied))
}

/// Copies regular file `path` of `from` to `to`, in place at once when whole; returns what
/// `to` now holds.
fn copy_file(from: &WorkspaceFiles, to: &WorkspaceFiles, path: &RelPath) -> Result<Entry> {
    let (mut reader, _) = Tree::open_file(from, path)?;
    let mut upload = to.stage()?;
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = reader.read(&mut buffer).map_err(|source| WorkspaceError::Io {
            op: "copy",
            path: path.to_string(),
            source,
        })?;
        if n == 0 {
            break;
        }
        upload.write(&buffer[..n], u64::MAX)?;
    }
    to.commit(upload, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(dir: &std::path::Path) -> WorkspaceFiles {
        WorkspaceFiles::Host(Workspace::open(dir, None).expect("workspace"))
    }

    fn write(dir: &std::path::Path, path: &str, text: &str) {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, text).expect("write");
    }

    fn files(dir: &std::path::Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let ws = workspace(dir);
        for e in ws.list(&RelPath::root(), true, usize::MAX).expect("list") {
            if e.kind == Kind::File {
                let text = std::fs::read_to_string(dir.join(e.path.as_str())).expect("read");
                found.push((e.path.as_str().to_string(), text));
            }
        }
        found.sort();
        found
    }

    #[test]
    fn a_copy_in_and_out_keeps_the_files_and_reads_only_what_changed() {
        let (host, pod) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
        write(host.path(), "a.txt", "alpha");
        write(host.path(), "deep/er/b.txt", "beta");
        std::os::unix::fs::symlink("/etc/passwd", host.path().join("link")).expect("link");
        let (h, p) = (workspace(host.path()), workspace(pod.path()));

        let (manifest, copied) = copy_in(&h, &p).expect("copy in");
        assert_eq!((copied.files, copied.bytes), (2, 9), "files only, links left out");
        assert_eq!(files(pod.path()), vec![("a.txt".into(), "alpha".into()), ("deep/er/b.txt".into(), "beta".into())]);
        assert!(!pod.path().join("link").exists());

        // Nothing changed in the sandbox: nothing is read; what it lacks (the link) goes here.
        let (manifest, copied) = copy_out(&p, &h, &manifest).expect("copy out");
        assert_eq!((copied.files, copied.removed), (0, 1), "{copied:?}");
        assert!(host.path().join("link").symlink_metadata().is_err());

        // Code changes one file, adds one, removes a directory.
        write(pod.path(), "a.txt", "alpha, longer");
        write(pod.path(), "c.txt", "gamma");
        std::fs::remove_dir_all(pod.path().join("deep")).expect("rm");
        let (manifest, copied) = copy_out(&p, &h, &manifest).expect("copy out");
        assert_eq!((copied.files, copied.removed), (2, 1), "{copied:?}");
        assert_eq!(
            files(host.path()),
            vec![("a.txt".into(), "alpha, longer".into()), ("c.txt".into(), "gamma".into())]
        );
        assert!(!host.path().join("deep").exists(), "the directory went too");

        // A path that became a directory, and with no manifest (another replica's sandbox)
        // everything is read again.
        std::fs::remove_file(pod.path().join("c.txt")).expect("rm");
        write(pod.path(), "c.txt/inner", "delta");
        let (_, copied) = copy_out(&p, &h, &Manifest::default()).expect("copy out");
        assert_eq!(copied.files, 2, "{copied:?}");
        assert_eq!(
            files(host.path()),
            vec![("a.txt".into(), "alpha, longer".into()), ("c.txt/inner".into(), "delta".into())]
        );
        let _ = manifest;
    }
}
