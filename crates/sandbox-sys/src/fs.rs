//! File operations beneath a directory that never follow a link, for the workspace file API.
//!
//! sandboxd reads and writes workspaces that sandboxed code also writes, and it runs with more
//! rights than that code. So every path is resolved by the kernel relative to the workspace's
//! directory fd with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV)`: a symlink (anywhere in the path, planted at any moment), `..`, an absolute
//! path or a mount point fails the call instead of leading outside. The `*_at` calls take a
//! single name in a directory opened that way and never follow a final symlink either.
//! All calls go through rustix's safe wrappers: no `unsafe` here.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};

/// What a directory entry is. Links are reported, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// FIFOs, sockets, devices: listed, never opened.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, u32),
    pub nlink: u64,
    /// Bytes of disk allocated to it (whole blocks; for ext4, written but not yet flushed too).
    pub allocated: u64,
}

fn stat_of(s: &rustix::fs::Stat) -> Stat {
    let kind = match rustix::fs::FileType::from_raw_mode(s.st_mode) {
        rustix::fs::FileType::RegularFile => Kind::File,
        rustix::fs::FileType::Directory => Kind::Dir,
        rustix::fs::FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    Stat {
        kind,
        size: s.st_size as u64,
        mtime: (s.st_mtime, s.st_mtime_nsec as u32),
        #[allow(clippy::unnecessary_cast)] // u64 on x86_64, u32 elsewhere
        nlink: s.st_nlink as u64,
        allocated: (s.st_blocks as u64).saturating_mul(512),
    }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// How to open a path beneath a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// A regular file for reading. `O_NONBLOCK` keeps a FIFO planted by sandboxed code from
    /// blocking the caller; callers check [`fstat`] for a regular file before reading.
    Read,
    /// A directory, to list it or to work in it.
    Dir,
}

/// Opens `rel` (relative; empty means `dir` itself) beneath `dir` without following any link.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &Path, how: Open) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let flags = match how {
        Open::Read => OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
        Open::Dir => OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
    };
    Ok(rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, Mode::empty(), BENEATH)?)
}

/// Creates `name` in `dir` for writing; fails if anything of that name exists (link or not).
pub fn create_new(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat2(dir, name, flags, Mode::from_raw_mode(mode), BENEATH)?;
    Ok(std::fs::File::from(fd))
}

/// An unnamed file in `dir`'s filesystem (`O_TMPFILE`), for writing: nobody sees it until
/// [`link_unnamed`] names it, and a crash before that leaves nothing behind.
pub fn create_unnamed(dir: BorrowedFd<'_>, mode: u32) -> io::Result<std::fs::File> {
    let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
    Ok(std::fs::File::from(rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(mode))?))
}

/// Names unnamed file `file` `name` in `dir` (fails if `name` exists). Through its
/// `/proc/self/fd` link, which needs no capability (`AT_EMPTY_PATH` would).
pub fn link_unnamed(file: &std::fs::File, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let magic = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(rustix::fs::linkat(rustix::fs::CWD, magic.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)?)
}

/// Mounts what is mounted at `source` at `target` too (the same filesystem; workspace volumes
/// change names this way, a syscall rather than a `mount` process on a hot path).
pub fn bind_mount(source: &Path, target: &Path) -> io::Result<()> {
    Ok(rustix::mount::mount_bind(source, target)?)
}

/// Unmounts `target`; `lazy` detaches it now and lets it go once nothing uses it.
pub fn unmount(target: &Path, lazy: bool) -> io::Result<()> {
    let flags = if lazy { rustix::mount::UnmountFlags::DETACH } else { rustix::mount::UnmountFlags::empty() };
    Ok(rustix::mount::unmount(target, flags)?)
}

/// Copies `src` to a new file `dst` (mode 0600), only its data: holes stay holes (found with
/// `SEEK_DATA`/`SEEK_HOLE`), so a sparse disk image of gigabytes costs what it holds.
pub fn copy_sparse(src: &Path, dst: &Path) -> io::Result<()> {
    use rustix::fs::SeekFrom;
    let from = std::fs::File::open(src)?;
    let size = from.metadata()?.len();
    let to = std::fs::OpenOptions::new().write(true).create_new(true).open(dst)?;
    std::fs::set_permissions(dst, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let mut at = 0u64;
    while at < size {
        let start = match rustix::fs::seek(&from, SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(&from, SeekFrom::Hole(start))?;
        let (mut off_in, mut off_out) = (start, start);
        while off_in < end {
            let len = (end - off_in) as usize;
            let n = rustix::fs::copy_file_range(&from, Some(&mut off_in), &to, Some(&mut off_out), len)?;
            if n == 0 {
                return Err(io::Error::other("copy_file_range copied nothing"));
            }
        }
        at = end;
    }
    to.set_len(size)?;
    Ok(())
}

/// Opens a directory by path (the workspace root itself, which sandboxd chose).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// `lstat` of `name` in `dir`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    Ok(stat_of(&rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?))
}

pub fn fstat(fd: impl AsFd) -> io::Result<Stat> {
    Ok(stat_of(&rustix::fs::fstat(fd)?))
}

/// Gives `name` in `dir` (never a link's target) to `uid`:`gid`.
pub fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
    Ok(rustix::fs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?)
}

pub fn chown_fd(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
    Ok(rustix::fs::fchown(fd, Some(u), Some(g))?)
}

/// Removes `name` from `dir`: an empty directory if `is_dir`, else a file or link.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
    Ok(rustix::fs::unlinkat(dir, name, flags)?)
}

/// Renames `old` in `old_dir` to `new` in `new_dir`; with `no_replace`, fails if `new` exists.
pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    no_replace: bool,
) -> io::Result<()> {
    let flags = if no_replace { RenameFlags::NOREPLACE } else { RenameFlags::empty() };
    Ok(rustix::fs::renameat_with(old_dir, old, new_dir, new, flags)?)
}

/// Bytes free for unprivileged users on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Bytes in use on the filesystem of `fd`: whole blocks, of files and directories alike.
pub fn used_bytes(fd: impl AsFd) -> io::Result<u64> {
    let st = rustix::fs::fstatvfs(fd)?;
    Ok(st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(st.f_frsize))
}

/// Whether directory `dir` is the root of a whole filesystem as mounted here: a mount root
/// (`STATX_ATTR_MOUNT_ROOT`; kernels before 5.8 do not say, and then it is not) whose mount shows the filesystem from its own root. A bind of a
/// subdirectory of a larger filesystem (an `emptyDir` of a pod, a plain workspace directory
/// bound into a sandbox) is a mount root too, but its filesystem's counts are the disk's, not
/// its own. Read from `/proc/self/mountinfo` by the mount's id; unknown: not.
pub fn is_filesystem_root(dir: BorrowedFd<'_>) -> io::Result<bool> {
    use rustix::fs::{StatxAttributes, StatxFlags};
    let st = rustix::fs::statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS | StatxFlags::MNT_ID)?;
    let mount_root = st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
    if !mount_root || !StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID) {
        return Ok(false);
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_shows_whole_filesystem(&mountinfo, st.stx_mnt_id))
}

/// Whether mount `id` of `mountinfo` shows its filesystem from the root (its fourth field).
fn mount_shows_whole_filesystem(mountinfo: &str, id: u64) -> bool {
    mountinfo.lines().any(|line| {
        let mut fields = line.split(' ');
        fields.next().and_then(|f| f.parse::<u64>().ok()) == Some(id) && fields.nth(2) == Some("/")
    })
}

/// Whether `e` is the refusal of a link on the way (`RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW`:
/// ELOOP) or of a mount point crossed (`RESOLVE_NO_XDEV`: EXDEV).
pub fn is_refused_link(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV))
}

/// The names in a directory, without `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_of_a_subdirectory_is_not_a_whole_filesystem() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    40 22 8:1 /var/lib/kubelet/pods/x/volumes/empty-dir/workspace /workspace rw - ext4 /dev/sda1 rw\n\
                    41 22 7:3 / /data/workspaces/s1 rw - ext4 /dev/loop3 rw\n";
        assert!(mount_shows_whole_filesystem(info, 22));
        assert!(!mount_shows_whole_filesystem(info, 40));
        assert!(mount_shows_whole_filesystem(info, 41));
        assert!(!mount_shows_whole_filesystem(info, 99), "an unknown mount is not");
    }

    #[test]
    fn links_and_parent_paths_never_lead_out() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "host").expect("write");
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("sub")).expect("mkdir");
        std::fs::write(root.path().join("sub/ok.txt"), "fine").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root.path().join("dirlink")).expect("symlink");
        let fd = open_dir(root.path()).expect("open root");
        let open = |p: &str, how| open_beneath(fd.as_fd(), Path::new(p), how);
        assert!(open("sub/ok.txt", Open::Read).is_ok());
        for bad in ["link", "dirlink/secret", "../x", "sub/../../x", "/etc/passwd", "/proc/self/root/etc/passwd"] {
            assert!(open(bad, Open::Read).is_err(), "{bad} must not open");
        }
        assert!(open("dirlink", Open::Dir).is_err());
        let link = stat_at(fd.as_fd(), OsStr::new("link")).expect("lstat");
        assert_eq!(link.kind, Kind::Symlink, "a link is reported as a link, not as its target");
        assert!(create_new(fd.as_fd(), OsStr::new("link"), 0o644).is_err(), "never written through");
        let mut names = list_dir(fd.as_fd()).expect("list");
        names.sort();
        assert_eq!(names, ["dirlink", "link", "sub"]);
    }
}
