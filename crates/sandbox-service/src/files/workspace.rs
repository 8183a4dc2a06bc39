//! Workspaces: one host directory per session, mounted at /workspace in its sandbox. They
//! live under the data dir and outlive sandboxes (a restarted sandbox finds its files again).
//!
//! With S3 storage these directories are a cache of the bucket ([`crate::files::storage`]): a
//! workspace is brought up to date before a sandbox starts on it ([`HostDirs::prepare`]).
//!
//! Beside them, [`HostDirs`] keeps the other per-session and per-template directories a sandbox
//! mounts: the session's installed packages and its template's environment (both read-only
//! inside), and the pip cache that installations share. They live in the system dir
//! ([`SystemDir`]), so that no host path shows inside a sandbox.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sandbox_runtime::{Dir, HostLayout, ReadOnlyMount, ResourceLimits, SandboxSpec};
use sandbox_workspace::Volumes;

use crate::error::ServiceError;
use crate::files::storage::Storage;
use crate::files::system_dir::SystemDir;
use crate::templates::packages::{SESSION_MOUNT, TEMPLATE_MOUNT};

/// The directories sandboxes get from the data dir.
pub struct HostDirs {
    pub workspaces: NamedDirs,
    /// Per session (by the same name as its workspace): packages installed for it alone.
    pub packages: NamedDirs,
    /// Per template: the environment its packages were installed into.
    pub templates: NamedDirs,
    /// Where workspaces are kept for good (local: these directories themselves).
    pub storage: Arc<Storage>,
    /// Holds the package and template directories.
    pub system: SystemDir,
    /// Template environments built and fetched here.
    pub environments: Environments,
}

/// Where these directories are, for a runtime whose sandboxes share this disk.
pub fn host_layout(data_dir: &Path, system: &SystemDir) -> HostLayout {
    let packages = system.path().join("packages");
    HostLayout {
        workspaces: data_dir.join("workspaces"),
        session_packages: packages.join("sessions"),
        templates: system.path().join("templates"),
        pip_cache: packages.join(PIP_CACHE),
    }
}

const PIP_CACHE: &str = "pip-cache";

impl HostDirs {
    /// With `volumes`, new workspaces are volumes of their own (the quota holds for code).
    pub fn new(
        data_dir: &Path,
        system: SystemDir,
        owner: Option<(u32, u32)>,
        storage: Arc<Storage>,
        volumes: Option<Volumes>,
    ) -> std::io::Result<HostDirs> {
        let layout = host_layout(data_dir, &system);
        let packages = NamedDirs::new(system.path().join("packages"), owner)?;
        packages.ensure(PIP_CACHE).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut workspaces = NamedDirs::new(layout.workspaces, owner)?;
        workspaces.volumes = volumes.map(Arc::new);
        workspaces.refill_spares_soon();
        Ok(HostDirs {
            workspaces,
            packages: NamedDirs::new(layout.session_packages, owner)?,
            templates: NamedDirs::new(layout.templates, owner)?,
            storage,
            system,
            environments: Default::default(),
        })
    }

    /// Session `id`'s workspace directory, created if missing and, with S3 storage, brought
    /// up to date from the bucket first.
    pub async fn prepare(&self, id: &str) -> Result<PathBuf, ServiceError> {
        let dir = self.workspaces.ensure_soon(id).await?;
        self.storage.pull(id, dir.clone(), self.workspaces.owner).await?;
        Ok(dir)
    }

    /// Writes back what changed in session `id`'s workspace (S3 storage; nothing for local).
    pub async fn write_back(&self, id: &str) -> Result<(), ServiceError> {
        self.storage.push(id, self.workspaces.path(id)).await
    }

    /// [`Self::write_back`] in the background.
    pub fn write_back_soon(&self, id: &str) {
        self.storage.push_soon(id, self.workspaces.path(id));
    }

    /// What a session sandbox named `name` (a session id, or a pool name) of `template` mounts
    /// (`tenant`: whose session, when it is one's; pool sandboxes are nobody's yet):
    /// its workspace (made ready by the caller: [`Self::prepare`], or [`NamedDirs::ensure_soon`]),
    /// its package directory and, if the template has packages, their environment.
    pub fn session_spec(
        &self,
        name: &str,
        template: &str,
        image: Option<&str>,
        tenant: Option<&str>,
        limits: ResourceLimits,
    ) -> Result<SandboxSpec, ServiceError> {
        self.packages.ensure(name)?;
        let mut mounts = vec![ReadOnlyMount { dir: Dir::SessionPackages(name.into()), target: SESSION_MOUNT.into() }];
        if self.templates.path(template).is_dir() {
            mounts.push(ReadOnlyMount { dir: Dir::Template(template.into()), target: TEMPLATE_MOUNT.into() });
        }
        Ok(SandboxSpec {
            name: name.to_string(),
            workspace: name.to_string(),
            limits,
            mounts,
            image: image.map(String::from),
            template: Some(template.to_string()),
            tenant: tenant.map(String::from),
        })
    }

    /// What a bare sandbox named `name` mounts (`/v1/run` and its pool): a workspace of its
    /// own, nothing else.
    pub async fn bare_spec(&self, name: &str, limits: ResourceLimits) -> Result<SandboxSpec, ServiceError> {
        self.workspaces.ensure_soon(name).await?;
        Ok(SandboxSpec {
            name: name.to_string(),
            workspace: name.to_string(),
            limits,
            mounts: Vec::new(),
            image: None,
            template: None,
            tenant: None,
        })
    }

    /// Removes a session's (or warm sandbox's) directories.
    pub fn remove(&self, name: &str) {
        self.workspaces.remove(name);
        self.packages.remove(name);
    }
}

/// Environments this replica built and fetched, and one lock per template so that sandboxes
/// starting at once fetch its environment once.
#[derive(Default)]
pub struct Environments {
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub built: AtomicU64,
    pub fetched: AtomicU64,
}

impl Environments {
    pub(crate) fn lock_of(&self, template: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(template.to_string()).or_default())
    }

    /// For `/metrics`.
    pub fn counts(&self) -> [(&'static str, u64); 2] {
        [("built", self.built.load(Ordering::Relaxed)), ("fetched", self.fetched.load(Ordering::Relaxed))]
    }
}

/// Directories by name under one root, owned by the sandbox user: the workspaces, and the
/// package and template directories, each a set of these.
#[derive(Clone)]
pub struct NamedDirs {
    root: PathBuf,
    /// Host uid/gid that must own them (the sandbox user), if not sandboxd's own.
    owner: Option<(u32, u32)>,
    /// When set, each new directory is a volume of its own (workspaces only). Directories made
    /// before volumes were on stay plain directories.
    volumes: Option<Arc<Volumes>>,
}

impl NamedDirs {
    /// `root` is traversable but not listable by others: the sandbox user reaches its own
    /// directory by name and nothing else.
    pub fn new(root: PathBuf, owner: Option<(u32, u32)>) -> std::io::Result<NamedDirs> {
        std::fs::create_dir_all(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))?;
        Ok(NamedDirs { root, owner, volumes: None })
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Host uid/gid that owns them, if not sandboxd's own.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// Creates (or finds again, mounting its volume) the workspace of `id`, owned by the
    /// sandbox user, mode 0700.
    pub fn ensure(&self, id: &str) -> Result<PathBuf, ServiceError> {
        let dir = self.path(id);
        let fail = |op: &str, e: std::io::Error| ServiceError::Internal(format!("{op} {}: {e}", dir.display()));
        if let Some(volumes) = &self.volumes {
            if volumes.has(id) {
                volumes.mount(id).map_err(|e| fail("mount", e))?;
                return Ok(dir);
            }
            if !dir.exists() {
                volumes.create(id).map_err(|e| fail("create a volume for", e))?;
                self.refill_spares_soon();
                return Ok(dir);
            }
        }
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

    /// [`Self::ensure`] on a blocking thread: making or mounting a volume runs processes.
    pub async fn ensure_soon(&self, id: &str) -> Result<PathBuf, ServiceError> {
        if self.volumes.is_none() {
            return self.ensure(id);
        }
        let (this, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || this.ensure(&id))
            .await
            .map_err(|e| ServiceError::Internal(format!("workspace task failed: {e}")))?
    }

    /// Bytes of files in workspace `id` (0 if it has none here): a mounted volume or a plain
    /// directory is measured as the quota measures it; an unmounted volume by its image.
    pub fn usage(&self, id: &str) -> Result<u64, ServiceError> {
        let dir = self.path(id);
        let fail = |e: std::io::Error| ServiceError::Internal(format!("measure {}: {e}", dir.display()));
        match &self.volumes {
            Some(volumes) if volumes.has(id) && !sandbox_workspace::volume::is_mount_point(&dir) => {
                volumes.unmounted_usage(id).map_err(fail)
            }
            _ if !dir.is_dir() => Ok(0),
            _ => Ok(sandbox_workspace::Workspace::open(&dir, None)?.usage()?),
        }
    }

    /// Gives workspace `from` (of a stopped session: nothing has it mounted) the name `to`.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), ServiceError> {
        let renamed = match &self.volumes {
            Some(volumes) if volumes.has(from) => volumes.rename(from, to),
            _ => std::fs::rename(self.path(from), self.path(to)),
        };
        renamed.map_err(|e| ServiceError::Internal(format!("rename {} to {to}: {e}", self.path(from).display())))
    }

    pub fn remove(&self, id: &str) {
        match &self.volumes {
            Some(volumes) if volumes.has(id) => volumes.remove(id),
            _ => remove_dir(&self.path(id)),
        }
    }

    /// Keeps workspace `id`'s volume mounted while the pin lives (nothing without volumes):
    /// taken before it is mounted, held until a sandbox has it or a file of it is open.
    pub fn pin(&self, id: &str) -> Option<sandbox_workspace::volume::Pin> {
        self.volumes.as_ref().map(|v| v.pin(id))
    }

    /// Unmounts workspace `id`'s volume unless it is pinned, open, or `in_use()`; true if it was.
    pub fn unmount_if_idle(&self, id: &str, in_use: impl FnOnce() -> bool) -> bool {
        self.volumes.as_ref().is_some_and(|v| v.unmount_if_idle(id, in_use))
    }

    /// The directories whose volumes are mounted now.
    pub fn mounted(&self) -> Vec<String> {
        self.volumes.as_ref().map(|v| v.mounted()).unwrap_or_default()
    }

    /// Makes spare volumes in the background, so the next new workspace need not wait.
    fn refill_spares_soon(&self) {
        if let Some(volumes) = &self.volumes {
            let volumes = Arc::clone(volumes);
            std::thread::spawn(move || volumes.refill_spares());
        }
    }

    /// Removes the spare volumes and unmounts every other (server shutdown).
    pub fn unmount_all(&self) {
        if let Some(volumes) = &self.volumes {
            volumes.close();
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove directory");
        }
    }
}
