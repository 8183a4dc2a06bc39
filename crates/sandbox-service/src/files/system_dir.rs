//! The system dir (`<data dir>/system`): what sandboxes mount from the host besides their
//! workspace. It holds the local runtime's files (the sandboxes' `/etc` and the executor),
//! template environments, per-session packages and pip's cache.
//!
//! Whenever volumes work here it is a volume of its own: a sparse ext4 image, like a
//! workspace. That keeps host paths out of sandboxes. `/proc/self/mountinfo` shows where each
//! bind mount comes from, relative to the root of its filesystem. A directory of the data dir
//! shows as `/var/lib/sandboxd/packages/sessions/<id>`; the same directory on the volume shows as
//! `/packages/sessions/<id>`. Without volumes (sandboxd not root, or `--workspace-volumes off`)
//! it is a plain directory, and `/readyz` says that host paths show.
//!
//! The volume is also a bound: package installs fill it, not the host's disk.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sandbox_workspace::Volumes;

use crate::config::{Config, VolumeMode};
use crate::SetupError;

const NAME: &str = "system";

/// Trees that older data dirs kept at their top and that now live in the system dir.
const MOVED: &[&str] = &["packages", "templates"];
/// What older data dirs kept at their top and the runtime makes anew at each start.
const REMADE: &str = "runtime";

pub struct SystemDir {
    dir: PathBuf,
    volume: Option<Volumes>,
    /// Why it is not a volume, if it is not.
    pub note: Option<String>,
}

impl SystemDir {
    /// Mounts the system volume (making it the first time) and moves into it what an older
    /// data dir kept at its top. With volumes off or out of reach, a plain directory.
    pub fn open(config: &Config) -> Result<SystemDir, SetupError> {
        let data_dir = &config.data_dir;
        let dir = data_dir.join(NAME);
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SetupError::DataDir { path, source }
        };
        let (volume, note) = Self::mount(config)?;
        std::fs::create_dir_all(&dir).map_err(fail(&dir))?;
        // Traversable by the sandbox user (bwrap resolves mount sources as that user), listable
        // by nobody else; the volume's root is root's.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(fail(&dir))?;
        for name in MOVED {
            move_in(&data_dir.join(name), &dir.join(name)).map_err(fail(&data_dir.join(name)))?;
        }
        let remade = data_dir.join(REMADE);
        if remade.exists() {
            std::fs::remove_dir_all(&remade).map_err(fail(&remade))?;
        }
        Ok(SystemDir { dir, volume, note })
    }

    fn mount(config: &Config) -> Result<(Option<Volumes>, Option<String>), SetupError> {
        if config.local.workspace_volumes == VolumeMode::Off {
            return Ok((None, Some("--workspace-volumes off".into())));
        }
        if sandbox_sys::real_uid() != 0 {
            return match config.local.workspace_volumes {
                VolumeMode::On => Err(SetupError::Config("--workspace-volumes on, but mounting needs root".into())),
                _ => Ok((None, Some("mounting volumes needs root".into()))),
            };
        }
        let images = config.data_dir.join("volumes").join(NAME);
        let volumes = Volumes::new(images.clone(), config.data_dir.clone(), config.local.system_volume_bytes, None)
            .map_err(|source| SetupError::DataDir { path: images, source })?;
        // Made once; an image that exists must mount, or what is in it would be hidden
        // under a plain directory that takes its place.
        let existed = volumes.has(NAME);
        match volumes.create(NAME) {
            Ok(()) => Ok((Some(volumes), None)),
            Err(e) if existed || config.local.workspace_volumes == VolumeMode::On => {
                Err(SetupError::Config(format!("cannot mount the system volume: {e}")))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the system dir is a plain directory: host paths show inside sandboxes");
                Ok((None, Some(e.to_string())))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the local runtime keeps the files its sandboxes mount.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join(REMADE)
    }

    /// Unmounts the volume (server shutdown); lazily if a sandbox or install still uses it.
    pub fn unmount(&self) {
        if let Some(volumes) = &self.volume {
            volumes.close();
        }
    }
}

/// Moves directory `old` (if any) to `new`: a rename on one filesystem, else a copy, then a
/// rename of the copy, then removal of `old`. Each step can be cut short by a crash and
/// done again: a complete `new` beside an `old` means only the removal was left.
fn move_in(old: &Path, new: &Path) -> std::io::Result<()> {
    if !old.exists() {
        return Ok(());
    }
    if new.exists() {
        return std::fs::remove_dir_all(old);
    }
    match std::fs::rename(old, new) {
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
        other => return other,
    }
    let partial = new.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    tracing::info!(from = %old.display(), to = %new.display(), "moving into the system volume");
    let out = std::process::Command::new("cp").arg("-a").arg("--").arg(old).arg(&partial).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!("cp: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    std::fs::rename(&partial, new)?;
    std::fs::remove_dir_all(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Across filesystems (/tmp to /dev/shm, a tmpfs) it copies; a crash after any step leaves
    /// what the next try finishes.
    #[test]
    fn a_move_across_filesystems_copies_and_finishes_after_a_crash() {
        let from = tempfile::tempdir_in("/tmp").expect("tempdir");
        let to = tempfile::tempdir_in("/dev/shm").expect("tempdir");
        let (old, new) = (from.path().join("packages"), to.path().join("packages"));
        write(&old.join("sessions/ses_a/mod.py"), "x = 1");
        // A crash in the middle of the copy left a partial one.
        write(&to.path().join("packages.partial/half"), "");
        move_in(&old, &new).expect("move");
        assert_eq!(std::fs::read_to_string(new.join("sessions/ses_a/mod.py")).expect("read"), "x = 1");
        assert!(!old.exists() && !to.path().join("packages.partial").exists());
        // A crash after the copy's rename: only the old tree's removal was left.
        write(&old.join("stale"), "");
        move_in(&old, &new).expect("move again");
        assert!(!old.exists() && !new.join("stale").exists());
        // Nothing to move.
        move_in(&old, &new).expect("nothing");
    }

    /// Needs root and loop devices (CI runs as root). An older data dir's packages and
    /// templates end up on the volume, its runtime files are gone (they are made anew), and
    /// the volume keeps them across an unmount.
    #[test]
    fn an_older_data_dir_moves_into_the_system_volume() {
        let data = tempfile::tempdir_in("/tmp").expect("tempdir");
        write(&data.path().join("packages/sessions/ses_a/mod.py"), "x = 1");
        write(&data.path().join("templates/t1/lib.py"), "y = 2");
        write(&data.path().join("runtime/etc/passwd"), "");
        let mut config = Config { data_dir: data.path().to_path_buf(), ..Config::default() };
        config.local.system_volume_bytes = 64 << 20;
        let system = Unmounted(SystemDir::open(&config).expect("open"));
        let system = &system.0;
        assert_eq!(system.note, None, "a volume");
        assert!(sandbox_workspace::volume::is_mount_point(system.path()));
        let moved = system.path().join("packages/sessions/ses_a/mod.py");
        assert_eq!(std::fs::read_to_string(&moved).expect("read"), "x = 1");
        assert!(system.path().join("templates/t1/lib.py").is_file());
        for gone in ["packages", "templates", "runtime"] {
            assert!(!data.path().join(gone).exists(), "{gone} is left at the top");
        }
        system.unmount();
        assert!(!moved.exists(), "the files are in the volume");
        let _again = Unmounted(SystemDir::open(&config).expect("open again"));
        assert_eq!(std::fs::read_to_string(&moved).expect("read"), "x = 1");
    }

    /// Unmounts when a test ends, passed or failed: a failed assertion must not leave a loop
    /// mount behind.
    struct Unmounted(SystemDir);

    impl Drop for Unmounted {
        fn drop(&mut self) {
            self.0.unmount();
        }
    }
}
