//! Workspaces as volumes of their own, so that the quota holds for what code writes too: each
//! workspace is a sparse ext4 image (`<images>/<name>.img`) loop-mounted at its directory.
//! Code that writes past it gets `ENOSPC` inside its sandbox; the host's disk and other
//! sessions never notice, and the session goes on.
//!
//! The image is a little larger than the quota (ext4 keeps its journal and inode tables in
//! it), sparse, so it takes only what is written. It needs root (to mount), loop devices and
//! `mkfs.ext4`; [`Volumes::probe`] tries them once, at start.
//!
//! A mounted directory cannot be renamed, and `mount --move` refuses under shared mounts, so a
//! rename (a spare becoming a new workspace, or a stopped session's moving to another session)
//! bind-mounts the volume at the new name and unmounts the old one: the same filesystem, never
//! a second loop device on one image.

use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `mkfs.ext4` and `mount` (which sets up the loop device) are, whatever sandboxd's own
/// PATH.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Volumes {
    images: PathBuf,
    mounts: PathBuf,
    quota: u64,
    owner: Option<(u32, u32)>,
    /// One mount-table change at a time: two requests finding the same volume unmounted must
    /// not both mount it.
    lock: std::sync::Mutex<()>,
    /// Empty volumes made ahead, mounted, named `.spare-<n>`: a new workspace takes one (a
    /// rename, ~1 ms) instead of waiting for a copy and a mount.
    spares: std::sync::Mutex<Vec<String>>,
    /// A refill of spares is running.
    refilling: std::sync::atomic::AtomicBool,
    /// Serializes making the template image.
    template_lock: std::sync::Mutex<()>,
    /// Shut down: no more spares are made.
    closed: std::sync::atomic::AtomicBool,
    /// Users of a volume that hold no file of it open yet: a sandbox start between the mount
    /// and bwrap's bind, a file request between the mount and its `open`. Unmounted then, they
    /// would write into the empty directory under the mount point, and the next mount would
    /// hide it. Changed under `lock`, like the mount table.
    pins: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// Keeps a volume mounted while it lives (see [`Volumes::pin`]).
pub struct Pin {
    volumes: std::sync::Arc<Volumes>,
    name: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _one = self.volumes.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut pins = self.volumes.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.name);
            }
        }
    }
}

/// Spare volumes kept ready.
const SPARES: usize = 2;
const SPARE_PREFIX: &str = ".spare-";
static SPARE_NAMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program).args(args).env("PATH", PATH).output()?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr);
    Err(io::Error::other(format!("{program} {}: {}", args.join(" "), why.trim())))
}

fn path_str(p: &Path) -> io::Result<&str> {
    p.to_str().ok_or_else(|| io::Error::other(format!("{} is not UTF-8", p.display())))
}

/// Whether `dir` is a mount point (another device than its parent's).
pub fn is_mount_point(dir: &Path) -> bool {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match (std::fs::symlink_metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.is_dir() && d.dev() != p.dev(),
        _ => false,
    }
}

impl Volumes {
    /// Volumes of `quota` bytes each, images under `images`, mounted under `mounts`, owned by
    /// `owner` (the sandbox user).
    pub fn new(images: PathBuf, mounts: PathBuf, quota: u64, owner: Option<(u32, u32)>) -> io::Result<Volumes> {
        std::fs::create_dir_all(&images)?;
        std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o700))?;
        std::fs::create_dir_all(&mounts)?;
        let volumes = Volumes::with(images, mounts, quota, owner);
        volumes.remove_spares();
        Ok(volumes)
    }

    fn with(images: PathBuf, mounts: PathBuf, quota: u64, owner: Option<(u32, u32)>) -> Volumes {
        Volumes {
            images,
            mounts,
            quota,
            owner,
            lock: Default::default(),
            spares: Default::default(),
            refilling: Default::default(),
            template_lock: Default::default(),
            closed: Default::default(),
            pins: Default::default(),
        }
    }

    /// Keeps volume `name` from being unmounted by [`Self::unmount_if_idle`] until the pin is
    /// dropped. Take it before mounting and hold it until something else keeps the volume in
    /// use: an open file or directory of it (the unmount is never lazy, so it fails while
    /// anything is open), or a live sandbox (which the caller of `unmount_if_idle` knows of).
    pub fn pin(self: &std::sync::Arc<Self>, name: &str) -> Pin {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        *self.pins.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_string()).or_default() += 1;
        Pin { volumes: std::sync::Arc::clone(self), name: name.to_string() }
    }

    /// Unmounts volume `name` unless it is pinned, `in_use()` says a sandbox has it, or
    /// anything holds it open; true if it was unmounted. It mounts again when next used.
    /// Each mounted volume made every sandbox start slower (bwrap copies and reads the whole
    /// mount table): 348 mounts took a cold run from ~40 ms to 58-180 ms.
    pub fn unmount_if_idle(&self, name: &str, in_use: impl FnOnce() -> bool) -> bool {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.mounts.join(name);
        if !self.has(name) || !is_mount_point(&dir) {
            return false;
        }
        if self.pins.lock().unwrap_or_else(|p| p.into_inner()).contains_key(name) || in_use() {
            return false;
        }
        sandbox_sys::fs::unmount(&dir, false).is_ok()
    }

    /// The workspaces whose volumes are mounted now (spares and probes left out).
    pub fn mounted(&self) -> Vec<String> {
        std::fs::read_dir(&self.mounts)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|name| !name.starts_with('.') && self.has(name) && is_mount_point(&self.mounts.join(name)))
            .collect()
    }

    /// Removes the spare volumes (at shutdown, and those a crash left behind at start).
    pub fn remove_spares(&self) {
        self.spares.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let Ok(entries) = std::fs::read_dir(&self.images) else { return };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".img").filter(|n| n.starts_with(SPARE_PREFIX)) {
                self.remove(name);
            }
        }
    }

    /// Makes spare volumes until there are [`SPARES`] (blocking; one refill at a time).
    pub fn refill_spares(&self) {
        use std::sync::atomic::Ordering;
        if self.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        while !self.closed.load(Ordering::SeqCst)
            && self.spares.lock().unwrap_or_else(|p| p.into_inner()).len() < SPARES
        {
            let name = format!("{SPARE_PREFIX}{}-{}", std::process::id(), SPARE_NAMES.fetch_add(1, Ordering::Relaxed));
            // Made under no lock: nobody else knows this name until it is listed.
            if let Err(e) = self.make(&name) {
                tracing::warn!(error = %e, "cannot make a spare workspace volume");
                break;
            }
            self.spares.lock().unwrap_or_else(|p| p.into_inner()).push(name);
        }
        self.refilling.store(false, Ordering::SeqCst);
    }

    /// Proves volumes work on this host: makes, mounts, fills and removes a small one.
    pub fn probe(&self) -> Result<(), String> {
        let small = Volumes::with(self.images.clone(), self.mounts.clone(), 1 << 20, self.owner);
        let name = format!(".probe-{}", std::process::id());
        let dir = small.mounts.join(&name);
        let result = small.create(&name).and_then(|()| {
            if !is_mount_point(&dir) {
                return Err(io::Error::other("the volume did not mount"));
            }
            let full = std::fs::write(dir.join("fill"), vec![0u8; small.image_bytes() as usize + (1 << 20)]);
            match full {
                Err(e) if e.raw_os_error() == Some(28) => Ok(()),
                Err(e) => Err(e),
                Ok(()) => Err(io::Error::other("writing past the size did not fail with ENOSPC")),
            }
        });
        small.remove(&name);
        result.map_err(|e| e.to_string())
    }

    fn image(&self, name: &str) -> PathBuf {
        self.images.join(format!("{name}.img"))
    }

    /// Whether workspace `name` is a volume.
    pub fn has(&self, name: &str) -> bool {
        self.image(name).is_file()
    }

    /// About the bytes of files in workspace `name` while it is not mounted, without mounting
    /// it: what its image takes on disk beyond what an empty one takes (the filesystem's own
    /// blocks it has written since count too, a little more than the files).
    pub fn unmounted_usage(&self, name: &str) -> io::Result<u64> {
        let allocated = |path: &Path| std::fs::metadata(path).map(|m| m.blocks().saturating_mul(512));
        Ok(allocated(&self.image(name))?.saturating_sub(allocated(&self.template()?)?))
    }

    /// The image's size for the quota: ext4's journal and inode tables (about 1/64 of it) come
    /// on top, so that files can fill about the quota itself.
    fn image_bytes(&self) -> u64 {
        let bytes = self.quota + self.quota / 64 + (8 << 20);
        bytes.div_ceil(1 << 20) << 20
    }

    /// An empty filesystem of the volumes' size, made once with `mkfs.ext4`: new volumes are
    /// sparse copies of it (a few MiB of data), which is quicker than `mkfs` on every one.
    fn template(&self) -> io::Result<PathBuf> {
        let template = self.images.join(format!(".empty-{}.img", self.image_bytes()));
        let _one = self.template_lock.lock().unwrap_or_else(|p| p.into_inner());
        if template.is_file() {
            return Ok(template);
        }
        let partial = self.images.join(format!(".empty-{}.img.partial", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial)?;
        file.set_len(self.image_bytes())?;
        drop(file);
        let mut extended = "lazy_itable_init=1,lazy_journal_init=1,nodiscard".to_string();
        if let Some((uid, gid)) = self.owner {
            extended.push_str(&format!(",root_owner={uid}:{gid}"));
        }
        // No lost+found: nothing in a workspace is sandboxd's but the workspace's own files.
        let made = run("mkfs.ext4", &["-q", "-F", "-m", "0", "-L", "workspace", "-E", &extended, path_str(&partial)?])
            .and_then(|()| run("debugfs", &["-w", "-R", "rmdir lost+found", path_str(&partial)?]))
            .and_then(|()| std::fs::rename(&partial, &template));
        if made.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        made.map(|()| template)
    }

    /// Makes workspace `name` a new, empty volume mounted at its directory: a spare if there is
    /// one (see [`Self::refill_spares`]). If another request made it meanwhile, mounts that one.
    pub fn create(&self, name: &str) -> io::Result<()> {
        let spare = self.spares.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.has(name) {
            if let Some(spare) = spare {
                self.spares.lock().unwrap_or_else(|p| p.into_inner()).push(spare);
            }
            return self.mount_unlocked(name);
        }
        if let Some(spare) = spare {
            match self.rename_unlocked(&spare, name) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "a spare workspace volume failed; making one");
                    self.remove_unlocked(&spare);
                }
            }
        }
        self.make(name)
    }

    /// Copies the template to `name`'s image (which must not exist) and mounts it; on failure,
    /// removes what it made.
    fn make(&self, name: &str) -> io::Result<()> {
        let image = self.image(name);
        // Nothing of `name` is ours until the image is: an image that exists already (another
        // request's) is left alone; a half-copied one of ours goes.
        if let Err(e) = self.template().and_then(|t| sandbox_sys::fs::copy_sparse(&t, &image)) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                let _ = std::fs::remove_file(&image);
            }
            return Err(e);
        }
        let made = (|| {
            let dir = self.mounts.join(name);
            std::fs::create_dir(&dir)?;
            self.mount_unlocked(name)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        })();
        if made.is_err() {
            self.remove_unlocked(name);
        }
        made
    }

    /// Mounts workspace `name`'s volume at its directory, unless it is mounted.
    pub fn mount(&self, name: &str) -> io::Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.mount_unlocked(name)
    }

    fn mount_unlocked(&self, name: &str) -> io::Result<()> {
        let dir = self.mounts.join(name);
        if is_mount_point(&dir) {
            return Ok(());
        }
        if !dir.exists() {
            std::fs::create_dir(&dir)?;
        }
        let image = self.image(name);
        // util-linux's mount sets up the loop device (autoclear: it goes with the last unmount)
        // and reuses one that already has the image: two devices on one image would corrupt it.
        run("mount", &["-t", "ext4", "-o", "loop,nosuid,nodev,noatime,discard", path_str(&image)?, path_str(&dir)?])
    }

    /// Gives volume `from` the name `to` (see the module doc).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.rename_unlocked(from, to)
    }

    fn rename_unlocked(&self, from: &str, to: &str) -> io::Result<()> {
        let (old, new) = (self.mounts.join(from), self.mounts.join(to));
        self.mount_unlocked(from)?;
        std::fs::create_dir(&new)?;
        if let Err(e) = sandbox_sys::fs::bind_mount(&old, &new) {
            let _ = std::fs::remove_dir(&new);
            return Err(e);
        }
        std::fs::rename(self.image(from), self.image(to))?;
        unmount(&old);
        let _ = std::fs::remove_dir(&old);
        Ok(())
    }

    /// Unmounts and deletes workspace `name`'s volume, with its files.
    pub fn remove(&self, name: &str) {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.remove_unlocked(name);
    }

    fn remove_unlocked(&self, name: &str) {
        let dir = self.mounts.join(name);
        unmount(&dir);
        for gone in [std::fs::remove_dir(&dir), std::fs::remove_file(self.image(name))] {
            if let Err(e) = gone {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(volume = name, error = %e, "cannot remove a workspace volume");
                }
            }
        }
    }

    /// At shutdown: stops making spares (waiting for one being made), removes them, and
    /// unmounts every volume; they mount again when used.
    pub fn close(&self) {
        use std::sync::atomic::Ordering;
        self.closed.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.refilling.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.remove_spares();
        self.unmount_all();
    }

    /// Unmounts every volume; they mount again when used.
    fn unmount_all(&self) {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        for entry in std::fs::read_dir(&self.mounts).into_iter().flatten().flatten() {
            let dir = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if self.has(name) && is_mount_point(&dir) {
                unmount(&dir);
            }
        }
    }
}

/// Unmounts `dir` (if mounted); lazily if something still uses it, so it goes once unused.
fn unmount(dir: &Path) {
    while is_mount_point(dir) {
        if sandbox_sys::fs::unmount(dir, false).is_err() {
            if let Err(e) = sandbox_sys::fs::unmount(dir, true) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot unmount a workspace volume");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmounts and removes the named volumes when a test ends, passed or failed: a failed
    /// assertion must not leave a loop mount behind.
    struct Unmounted<'a>(&'a Volumes, &'a [&'a str]);

    impl Drop for Unmounted<'_> {
        fn drop(&mut self) {
            self.0.close();
            for name in self.1 {
                self.0.remove(name);
            }
        }
    }

    /// Needs root and loop devices. A pinned volume, one in use, or one with a file open stays
    /// mounted; an idle one is unmounted, keeps its files, and mounts again.
    #[test]
    fn only_idle_volumes_are_unmounted_and_they_keep_their_files() {
        let data = tempfile::tempdir_in("/tmp").expect("tempdir");
        let v = std::sync::Arc::new(
            Volumes::new(data.path().join("images"), data.path().join("ws"), 4 << 20, None).expect("volumes"),
        );
        let _cleanup = Unmounted(&v, &["ses_p"]);
        v.create("ses_p").expect("create");
        let dir = data.path().join("ws/ses_p");
        std::fs::write(dir.join("kept.txt"), b"kept").expect("write");
        assert_eq!(v.mounted(), ["ses_p"]);

        let pin = v.pin("ses_p");
        assert!(!v.unmount_if_idle("ses_p", || false), "pinned");
        drop(pin);
        assert!(!v.unmount_if_idle("ses_p", || true), "a sandbox uses it");
        let open = std::fs::File::open(dir.join("kept.txt")).expect("open");
        assert!(!v.unmount_if_idle("ses_p", || false), "a file is open");
        drop(open);
        assert!(v.unmount_if_idle("ses_p", || false));
        assert!(!is_mount_point(&dir) && v.mounted().is_empty());
        assert!(!dir.join("kept.txt").exists(), "the files are in the volume, not under it");
        v.mount("ses_p").expect("mount again");
        assert_eq!(std::fs::read(dir.join("kept.txt")).expect("read"), b"kept");
    }

    /// Needs root and loop devices, as sandboxd's own volumes do (CI runs as root).
    #[test]
    fn two_creates_of_one_workspace_make_one_volume_and_keep_it() {
        let data = tempfile::tempdir_in("/tmp").expect("tempdir");
        let v = std::sync::Arc::new(
            Volumes::new(data.path().join("images"), data.path().join("ws"), 4 << 20, None).expect("volumes"),
        );
        let _cleanup = Unmounted(&v, &["ses_a"]);
        let both: Vec<_> = (0..2)
            .map(|_| {
                let v = std::sync::Arc::clone(&v);
                std::thread::spawn(move || v.create("ses_a"))
            })
            .collect();
        for t in both {
            t.join().expect("thread").expect("create");
        }
        let dir = data.path().join("ws/ses_a");
        assert!(v.has("ses_a") && is_mount_point(&dir), "the volume stayed, mounted");
        std::fs::write(dir.join("f"), b"kept").expect("write");
        // A third create finds it and keeps its files.
        v.create("ses_a").expect("create again");
        assert_eq!(std::fs::read(dir.join("f")).expect("read"), b"kept");
        v.close();
        v.remove("ses_a");
        assert!(!is_mount_point(&dir) && !v.has("ses_a"));
    }
    /// A volume's usage comes from its filesystem's counts (no walk), counts an upload being
    /// written until [`crate::Workspace::usage_besides`] leaves it out, and holds after a
    /// rename (a bind mount of the volume).
    #[test]
    fn a_volume_knows_its_usage_without_a_walk() {
        let data = tempfile::tempdir_in("/tmp").expect("tempdir");
        let v = Volumes::new(data.path().join("images"), data.path().join("ws"), 8 << 20, None).expect("volumes");
        let _cleanup = Unmounted(&v, &["ses_b", "ses_c"]);
        v.create("ses_b").expect("create");
        let ws = crate::Workspace::open(&data.path().join("ws/ses_b"), None).expect("open");
        let empty = ws.usage().expect("usage");
        assert!(empty < 16 << 10, "an empty volume uses {empty} bytes");
        let mib = vec![3u8; 1 << 20];
        let mut staged = ws.stage().expect("stage");
        staged.write(&mib, u64::MAX).expect("write");
        let with_staged = ws.usage().expect("usage");
        assert!(with_staged >= empty + (1 << 20), "the volume holds the staged MiB: {with_staged}");
        assert!(ws.usage_besides(&staged).expect("usage") < empty + (16 << 10));
        ws.commit(staged, &crate::RelPath::parse("a.bin").expect("path")).expect("commit");
        drop(ws);
        v.rename("ses_b", "ses_c").expect("rename");
        let ws = crate::Workspace::open(&data.path().join("ws/ses_c"), None).expect("open");
        let used = ws.usage().expect("usage");
        assert!(used >= empty + (1 << 20) && used < empty + (1 << 20) + (16 << 10), "{used} after a 1 MiB file");
    }
}
