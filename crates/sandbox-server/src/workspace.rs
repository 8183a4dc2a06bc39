//! Workspaces: one host directory per session, mounted at /workspace in its sandbox. They
//! live under the data dir and outlive sandboxes (a restarted sandbox finds its files again).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::ApiError;

pub struct Workspaces {
    root: PathBuf,
    /// Host uid/gid that must own them (the sandbox user), if not sandboxd's own.
    owner: Option<(u32, u32)>,
}

impl Workspaces {
    /// `root` is traversable but not listable by others: the sandbox user reaches its own
    /// directory by name and nothing else.
    pub fn new(root: PathBuf, owner: Option<(u32, u32)>) -> std::io::Result<Workspaces> {
        std::fs::create_dir_all(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))?;
        Ok(Workspaces { root, owner })
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Creates (or finds again) the workspace of `id`, owned by the sandbox user, mode 0700.
    pub fn ensure(&self, id: &str) -> Result<PathBuf, ApiError> {
        let dir = self.path(id);
        let fail = |op: &str, e: std::io::Error| ApiError::Internal(format!("{op} workspace {}: {e}", dir.display()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(dir),
            Err(e) => return Err(fail("create", e)),
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| fail("chmod", e))?;
        if let Some((uid, gid)) = self.owner {
            sandbox_sys::chown(&dir, uid, gid).map_err(|e| fail("chown", e))?;
        }
        Ok(dir)
    }

    /// Gives workspace `from` the name `to`. A sandbox that has it mounted keeps it: the bind
    /// mount follows the directory, not its name.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), ApiError> {
        std::fs::rename(self.path(from), self.path(to))
            .map_err(|e| ApiError::Internal(format!("rename workspace {from} to {to}: {e}")))
    }

    pub fn remove(&self, id: &str) {
        remove_dir(&self.path(id));
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove workspace");
        }
    }
}
