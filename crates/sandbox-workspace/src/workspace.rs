//! One workspace directory, and the unnamed files uploads are written to first.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use sandbox_sys::fs::{self as sfs, Kind, Open, Stat};

use crate::{io_error, RelPath, WorkspaceError};

type Result<T> = std::result::Result<T, WorkspaceError>;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
    /// Bytes, for files (0 for the rest).
    pub size: u64,
    pub modified_at: DateTime<Utc>,
}

fn time_of(stat: &Stat) -> DateTime<Utc> {
    DateTime::from_timestamp(stat.mtime.0, stat.mtime.1).unwrap_or_default()
}

impl Entry {
    fn new(path: RelPath, stat: &Stat) -> Entry {
        let size = if stat.kind == Kind::File { stat.size } else { 0 };
        Entry { path, kind: stat.kind, size, modified_at: time_of(stat) }
    }
}

/// A workspace directory, opened once; every path is resolved beneath it.
pub struct Workspace {
    root: OwnedFd,
    /// Host uid/gid that owns what the API creates (the sandbox user), if not our own.
    owner: Option<(u32, u32)>,
    /// The root is a filesystem of its own (a volume): the filesystem's counts are its usage.
    volume: bool,
}

impl Workspace {
    pub fn open(dir: &Path, owner: Option<(u32, u32)>) -> Result<Workspace> {
        let root = sfs::open_dir(dir).map_err(|e| io_error("open", &RelPath::root(), e))?;
        let volume = sfs::is_filesystem_root(root.as_fd()).unwrap_or(false);
        Ok(Workspace { root, owner, volume })
    }

    fn chown_new(&self, dir: &OwnedFd, name: &OsStr, path: &RelPath) -> Result<()> {
        if let Some((uid, gid)) = self.owner {
            sfs::chown_at(dir.as_fd(), name, uid, gid).map_err(|e| io_error("chown", path, e))?;
        }
        Ok(())
    }

    /// Opens directory `dir` beneath the root; with `create`, makes it and its parents first
    /// (owned by the workspace's owner).
    fn open_dir(&self, dir: &RelPath, create: bool) -> Result<OwnedFd> {
        match sfs::open_beneath(self.root.as_fd(), dir.as_path(), Open::Dir) {
            Ok(fd) => return Ok(fd),
            Err(e) if !(create && e.kind() == std::io::ErrorKind::NotFound) => return Err(io_error("open", dir, e)),
            Err(_) => {}
        }
        let mut at =
            sfs::open_beneath(self.root.as_fd(), Path::new(""), Open::Dir).map_err(|e| io_error("open", dir, e))?;
        let mut walked = RelPath::root();
        for name in dir.as_str().split('/') {
            walked = walked.join(name);
            let os = OsStr::new(name);
            match sfs::mkdir_at(at.as_fd(), os, 0o755) {
                Ok(()) => self.chown_new(&at, os, &walked)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("create directory", &walked, e)),
            }
            at = sfs::open_beneath(at.as_fd(), Path::new(name), Open::Dir).map_err(|e| io_error("open", &walked, e))?;
        }
        Ok(at)
    }

    /// The directory `path` is in (opened) and its name there.
    fn parent_of<'p>(&self, path: &'p RelPath, create: bool) -> Result<(OwnedFd, &'p OsStr)> {
        let (dir, name) = path
            .split_last()
            .ok_or_else(|| WorkspaceError::InvalidPath { path: "/".into(), why: "the root".into() })?;
        Ok((self.open_dir(&dir, create)?, name))
    }

    /// What `path` is (a link is reported as a link).
    pub fn stat(&self, path: &RelPath) -> Result<Entry> {
        if path.is_root() {
            let stat = sfs::fstat(&self.root).map_err(|e| io_error("stat", path, e))?;
            return Ok(Entry::new(path.clone(), &stat));
        }
        let (dir, name) = self.parent_of(path, false)?;
        let stat = sfs::stat_at(dir.as_fd(), name).map_err(|e| io_error("stat", path, e))?;
        Ok(Entry::new(path.clone(), &stat))
    }

    /// Opens regular file `path` for reading, with what it is.
    pub fn open_file(&self, path: &RelPath) -> Result<(std::fs::File, Entry)> {
        let fd =
            sfs::open_beneath(self.root.as_fd(), path.as_path(), Open::Read).map_err(|e| io_error("open", path, e))?;
        let stat = sfs::fstat(&fd).map_err(|e| io_error("stat", path, e))?;
        match stat.kind {
            Kind::File => Ok((std::fs::File::from(fd), Entry::new(path.clone(), &stat))),
            Kind::Dir => Err(WorkspaceError::IsDir(path.to_string())),
            Kind::Symlink | Kind::Other => Err(WorkspaceError::NotRegular(path.to_string())),
        }
    }

    /// The entries of directory `dir` (its whole tree with `recursive`), at most `limit`.
    /// Links are listed as links and never descended into.
    pub fn list(&self, dir: &RelPath, recursive: bool, limit: usize) -> Result<Vec<Entry>> {
        let fd = self.open_dir(dir, false)?;
        let mut out = Vec::new();
        self.walk(&fd, dir, recursive, limit, &mut |e| out.push(e))?;
        out.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
        Ok(out)
    }

    fn walk(
        &self,
        fd: &OwnedFd,
        at: &RelPath,
        recursive: bool,
        limit: usize,
        each: &mut dyn FnMut(Entry),
    ) -> Result<usize> {
        let mut seen = 0;
        let names = sfs::list_dir(fd.as_fd()).map_err(|e| io_error("list", at, e))?;
        for name in names {
            if seen >= limit {
                break;
            }
            // A name the API could not address (not UTF-8) is shown, marked by U+FFFD.
            let shown = name.to_string_lossy().into_owned();
            let path = at.join(&shown);
            let Ok(stat) = sfs::stat_at(fd.as_fd(), &name) else { continue };
            seen += 1;
            each(Entry::new(path.clone(), &stat));
            if recursive && stat.kind == Kind::Dir {
                if let Ok(sub) = sfs::open_beneath(fd.as_fd(), Path::new(&name), Open::Dir) {
                    seen += self.walk(&sub, &path, true, limit - seen, each)?;
                }
            }
        }
        Ok(seen)
    }

    /// Bytes the workspace's files take: what the quota counts.
    ///
    /// A workspace that is a volume answers at once from its filesystem's counts, however many
    /// files it holds (a walk of 20,000 files made every upload 100 times slower, twice): whole
    /// blocks, directories included, and uploads being written to it (see
    /// [`Self::usage_besides`]). A plain directory is walked: the sizes of its committed files.
    pub fn usage(&self) -> Result<u64> {
        if self.volume {
            let failed = |e| io_error("measure", &RelPath::root(), e);
            let used = sfs::used_bytes(&self.root).map_err(failed)?;
            // An empty volume still has its root directory: not the user's bytes.
            let root = sfs::fstat(&self.root).map_err(failed)?.allocated;
            return Ok(used.saturating_sub(root));
        }
        let mut total = 0;
        self.walk(&self.root, &RelPath::root(), true, usize::MAX, &mut |e| {
            if !is_upload_in_flight(e.path.as_str()) {
                total += e.size
            }
        })?;
        Ok(total)
    }

    /// [`Self::usage`], less `staged` (an upload to this workspace, not yet committed).
    pub fn usage_besides(&self, staged: &Staged) -> Result<u64> {
        let usage = self.usage()?;
        if !self.volume {
            return Ok(usage);
        }
        let own = sfs::fstat(&staged.file).map_err(|e| io_error("measure", &RelPath::root(), e))?.allocated;
        Ok(usage.saturating_sub(own))
    }

    /// Removes a file or link; a directory only if empty, or with `recursive`.
    pub fn remove(&self, path: &RelPath, recursive: bool) -> Result<()> {
        let (dir, name) = self.parent_of(path, false)?;
        let stat = sfs::stat_at(dir.as_fd(), name).map_err(|e| io_error("stat", path, e))?;
        if stat.kind != Kind::Dir {
            return sfs::unlink_at(dir.as_fd(), name, false).map_err(|e| io_error("remove", path, e));
        }
        if recursive {
            let sub =
                sfs::open_beneath(dir.as_fd(), Path::new(name), Open::Dir).map_err(|e| io_error("open", path, e))?;
            remove_contents(&sub, path)?;
        }
        sfs::unlink_at(dir.as_fd(), name, true).map_err(|e| io_error("remove", path, e))
    }

    /// Renames `from` to `to` (creating `to`'s directory); refuses to replace anything.
    pub fn rename(&self, from: &RelPath, to: &RelPath) -> Result<Entry> {
        let (from_dir, from_name) = self.parent_of(from, false)?;
        sfs::stat_at(from_dir.as_fd(), from_name).map_err(|e| io_error("stat", from, e))?;
        if to.starts_with(from) {
            return Err(WorkspaceError::IntoItself { from: from.to_string(), to: to.to_string() });
        }
        let (to_dir, to_name) = self.parent_of(to, true)?;
        sfs::rename_at(from_dir.as_fd(), from_name, to_dir.as_fd(), to_name, true)
            .map_err(|e| io_error("move", to, e))?;
        self.stat(to)
    }

    /// A new upload: an unnamed file on the workspace's own filesystem (so that committing it
    /// is a rename, also when the workspace is a volume of its own), which nobody sees until
    /// [`Self::commit`] and which a crash frees. The caller hashes what it writes, if it needs
    /// to (the file API does, on a thread of its own).
    pub fn stage(&self) -> Result<Staged> {
        let failed = |e| io_error("create an upload file", &RelPath::root(), e);
        match sfs::create_unnamed(self.root.as_fd(), 0o644) {
            Ok(file) => Ok(Staged { file, size: 0, named: None }),
            // A filesystem without O_TMPFILE (older overlayfs, NFS): a hidden name of its own
            // in the workspace, removed unless committed (only a crash can leave it behind).
            // (EOPNOTSUPP, EINVAL or EISDIR, depending on the kernel and filesystem.)
            Err(e) if matches!(e.raw_os_error(), Some(95 | 22 | 21)) => self.stage_named(),
            Err(e) => Err(failed(e)),
        }
    }

    fn stage_named(&self) -> Result<Staged> {
        let failed = |e| io_error("create an upload file", &RelPath::root(), e);
        let name = upload_name();
        let file = sfs::create_new(self.root.as_fd(), &name, 0o644).map_err(failed)?;
        let dir = self.root.try_clone().map_err(failed)?;
        Ok(Staged { file, size: 0, named: Some((dir, name)) })
    }

    /// Moves a finished upload into place at `path`, replacing a file (or link) there, never a
    /// directory. The rename is atomic: readers see the old file or the new one.
    pub fn commit(&self, staged: Staged, path: &RelPath) -> Result<Entry> {
        let (dir, name) = self.parent_of(path, true)?;
        if let Ok(existing) = sfs::stat_at(dir.as_fd(), name) {
            if existing.kind == Kind::Dir {
                return Err(WorkspaceError::IsDir(path.to_string()));
            }
        }
        if let Some((uid, gid)) = self.owner {
            sfs::chown_fd(&staged.file, uid, gid).map_err(|e| io_error("chown", path, e))?;
        }
        let mut staged = staged;
        // The upload's name: the one it was written under, or (unnamed) a name of its own in
        // the target's directory first, since a link cannot replace the target; a rename can.
        let named = staged.named.take();
        let (from, temp) = match &named {
            Some((root, temp)) => (root.as_fd(), temp.clone()),
            None => {
                let temp = upload_name();
                sfs::link_unnamed(&staged.file, dir.as_fd(), &temp)
                    .map_err(|e| io_error("name the upload", path, e))?;
                (dir.as_fd(), temp)
            }
        };
        if let Err(e) = sfs::rename_at(from, &temp, dir.as_fd(), name, false) {
            let _ = sfs::unlink_at(from, &temp, false);
            return Err(io_error("move into place", path, e));
        }
        self.stat(path)
    }
}

/// Lowercase hex of `bytes` (digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Numbers the temporary names of uploads being committed.
static UPLOADS: AtomicU64 = AtomicU64::new(0);
const UPLOAD_PREFIX: &str = ".sandbox-upload-";

/// A temporary name for an upload, unique in this process.
fn upload_name() -> OsString {
    let n = UPLOADS.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!("{UPLOAD_PREFIX}{}-{n}", std::process::id()))
}

/// Whether `path` names an upload being written or committed (between its link and rename).
pub(crate) fn is_upload_in_flight(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.starts_with(UPLOAD_PREFIX))
}

/// Proves a file can be created in directory `dir` (for readiness).
pub fn check_writable(dir: &Path) -> Result<()> {
    let fd = sfs::open_dir(dir).map_err(|e| io_error("open", &RelPath::root(), e))?;
    sfs::create_unnamed(fd.as_fd(), 0o600).map(drop).map_err(|e| io_error("create a file", &RelPath::root(), e))
}

/// Empties directory `fd` (at `path`), never following links.
fn remove_contents(fd: &OwnedFd, path: &RelPath) -> Result<()> {
    for name in sfs::list_dir(fd.as_fd()).map_err(|e| io_error("list", path, e))? {
        let child = path.join(&name.to_string_lossy());
        let stat = sfs::stat_at(fd.as_fd(), &name).map_err(|e| io_error("stat", &child, e))?;
        if stat.kind == Kind::Dir {
            let sub =
                sfs::open_beneath(fd.as_fd(), Path::new(&name), Open::Dir).map_err(|e| io_error("open", &child, e))?;
            remove_contents(&sub, &child)?;
        }
        sfs::unlink_at(fd.as_fd(), &name, stat.kind == Kind::Dir).map_err(|e| io_error("remove", &child, e))?;
    }
    Ok(())
}

/// An upload being written. Dropped without [`Workspace::commit`], it is gone.
pub struct Staged {
    file: std::fs::File,
    size: u64,
    /// Where the file has a name while written, on filesystems without `O_TMPFILE`.
    named: Option<(OwnedFd, OsString)>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some((dir, name)) = &self.named {
            let _ = sfs::unlink_at(dir.as_fd(), name, false);
        }
    }
}

impl Staged {
    /// Appends `chunk`, refusing to grow past `max` bytes.
    pub fn write(&mut self, chunk: &[u8], max: u64) -> Result<()> {
        if self.size + chunk.len() as u64 > max {
            return Err(WorkspaceError::TooLarge { limit: max });
        }
        self.file.write_all(chunk).map_err(|e| match e.raw_os_error() {
            // ENOSPC, EDQUOT: the workspace's volume is full.
            Some(28 | 122) => WorkspaceError::Full,
            _ => io_error("write", &RelPath::root(), e),
        })?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Workspace) {
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(data.path().join("ws")).expect("mkdir");
        let ws = Workspace::open(&data.path().join("ws"), None).expect("open");
        (data, ws)
    }

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid path")
    }

    fn upload(ws: &Workspace, path: &str, body: &[u8]) -> Result<Entry> {
        let mut staged = ws.stage()?;
        staged.write(body, 1 << 20)?;
        ws.commit(staged, &p(path))
    }

    #[test]
    fn upload_list_move_remove() {
        let (data, ws) = setup();
        let e = upload(&ws, "reports/q1/销售数据.csv", b"a,b\n1,2\n").expect("upload");
        assert_eq!((e.kind, e.size), (Kind::File, 8));
        assert_eq!(std::fs::read(data.path().join("ws/reports/q1/销售数据.csv")).expect("on disk"), b"a,b\n1,2\n");
        let all: Vec<String> =
            ws.list(&RelPath::root(), true, 100).expect("list").iter().map(|e| e.path.to_string()).collect();
        assert_eq!(all, ["reports", "reports/q1", "reports/q1/销售数据.csv"]);
        assert_eq!(ws.list(&RelPath::root(), false, 100).expect("list").len(), 1);
        assert_eq!(ws.usage().expect("usage"), 8);
        ws.rename(&p("reports/q1/销售数据.csv"), &p("archive/sales.csv")).expect("move");
        assert!(matches!(ws.stat(&p("reports/q1/销售数据.csv")), Err(WorkspaceError::NotFound(_))));
        upload(&ws, "x.txt", b"x").expect("upload");
        assert!(matches!(ws.rename(&p("x.txt"), &p("archive/sales.csv")), Err(WorkspaceError::Exists(_))));
        assert!(matches!(ws.rename(&p("archive"), &p("archive/inner")), Err(WorkspaceError::IntoItself { .. })));
        assert!(matches!(ws.remove(&p("archive"), false), Err(WorkspaceError::NotEmpty(_))));
        ws.remove(&p("archive"), true).expect("remove tree");
        assert!(matches!(ws.open_file(&p("archive/sales.csv")), Err(WorkspaceError::NotFound(_))));
        assert!(matches!(upload(&ws, "reports", b"x"), Err(WorkspaceError::IsDir(_))));
        let mut names: Vec<_> =
            std::fs::read_dir(data.path().join("ws")).expect("ws").flatten().map(|e| e.file_name()).collect();
        names.sort();
        assert_eq!(names, ["reports", "x.txt"], "nothing else left");
    }

    #[test]
    fn links_planted_in_the_workspace_are_never_followed() {
        let (data, ws) = setup();
        let host = data.path().join("host-secret");
        std::fs::write(&host, "secret").expect("write");
        let root = data.path().join("ws");
        std::os::unix::fs::symlink(&host, root.join("link")).expect("symlink");
        std::os::unix::fs::symlink(data.path(), root.join("up")).expect("symlink");
        assert!(matches!(ws.open_file(&p("link")), Err(WorkspaceError::NotRegular(_))));
        assert!(matches!(ws.open_file(&p("up/host-secret")), Err(WorkspaceError::NotRegular(_))));
        assert!(ws.list(&p("up"), false, 10).is_err());
        // Writing through a link replaces the link, never the file it points to.
        upload(&ws, "link", b"mine").expect("upload over a link");
        assert_eq!(std::fs::read_to_string(&host).expect("host file"), "secret");
        assert!(upload(&ws, "up/host-secret", b"x").is_err());
        assert_eq!(std::fs::read_to_string(&host).expect("host file"), "secret");
        // Removing a link to a directory removes the link only.
        ws.remove(&p("up"), true).expect("remove link");
        assert!(host.exists());
        let fifo = std::process::Command::new("mkfifo").arg(root.join("fifo")).status().expect("mkfifo");
        assert!(fifo.success());
        assert!(matches!(ws.open_file(&p("fifo")), Err(WorkspaceError::NotRegular(_))), "a FIFO never blocks a read");
    }

    #[test]
    fn without_o_tmpfile_uploads_have_a_hidden_name_until_committed() {
        let (data, ws) = setup();
        let names = || {
            let mut n: Vec<String> = std::fs::read_dir(data.path().join("ws"))
                .expect("ws")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        let mut staged = ws.stage_named().expect("create");
        staged.write(b"abc", 10).expect("write");
        assert!(names()[0].starts_with(UPLOAD_PREFIX), "{:?}", names());
        ws.commit(staged, &p("dir/f.txt")).expect("commit");
        assert_eq!(names(), ["dir"]);
        assert_eq!(std::fs::read(data.path().join("ws/dir/f.txt")).expect("read"), b"abc");
        let staged = ws.stage_named().expect("create");
        drop(staged);
        assert_eq!(names(), ["dir"], "an abandoned upload leaves nothing");
    }

    #[test]
    fn uploads_are_all_or_nothing() {
        let (data, ws) = setup();
        upload(&ws, "f.txt", b"old").expect("upload");
        let mut staged = ws.stage().expect("create");
        staged.write(b"new and longer", 1 << 20).expect("write");
        assert!(matches!(staged.write(&[0; 10], 16), Err(WorkspaceError::TooLarge { limit: 16 })));
        drop(staged);
        assert_eq!(std::fs::read(data.path().join("ws/f.txt")).expect("read"), b"old");
        let mut staged = ws.stage().expect("create");
        staged.write(b"ab", 10).expect("write");
        staged.write(b"c", 10).expect("write");
        // The digest the file API returns is written by `hex`.
        use sha2::Digest;
        assert_eq!(
            hex(&sha2::Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Never committed (as in a crash): the workspace holds the old file and nothing else.
        std::mem::forget(staged);
        let names: Vec<_> =
            std::fs::read_dir(data.path().join("ws")).expect("ws").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["f.txt"]);
        assert_eq!(std::fs::read(data.path().join("ws/f.txt")).expect("read"), b"old");
    }
}
