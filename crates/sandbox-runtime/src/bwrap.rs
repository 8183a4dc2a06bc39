//! The bubblewrap command line of a sandbox: the first isolation layer of the local runtime,
//! and the second, inside the container, of the Docker runtime.
//!
//! Every namespace is new (user, PID, network with only `lo`, IPC, UTS, mount, cgroup), no
//! further user namespaces can be made inside, and the executor is PID 1. The filesystem is
//! built from nothing: the host's `/usr` read-only (with the merged-/usr links), an `/etc` of
//! our own (read-only), a private `/proc`, a minimal `/dev`, a size-capped `/tmp`, and the
//! workspace read-write. The host's `/root`, `/home`, `/tmp`, `/var` and the data dir are
//! simply never mounted.
//!
//! `/etc` is one directory the runtime fills at start-up ([`prepare_etc`]): a snapshot of the
//! world-readable host entries in [`HOST_ETC`] plus generated passwd, group and hosts files.
//! One mount instead of one per entry matters: bwrap re-reads the mount table for every
//! read-only bind, so each costs ~0.7 ms of sandbox start.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::runtime::PackageInstall;

/// Where the executor binary appears inside the sandbox.
pub const EXECUTOR_PATH: &str = "/.sandbox/executor";
/// The fds bwrap gets for its start-up handshake (see `LocalRuntime::start`).
pub const INFO_FD: i32 = 3;
pub const BLOCK_FD: i32 = 4;
/// Where the sandbox image keeps the `/etc` code sees (images/sandbox/Dockerfile).
pub const IMAGE_ETC: &str = "/opt/sandbox/etc";
/// The uid and gid user code runs as inside.
pub const SANDBOX_UID: u32 = 1000;

/// `/etc` entries worth sharing from the host when they exist: the dynamic linker, TLS roots,
/// time zones, MIME types, and interpreter and library configuration (plus `python3*`).
pub const HOST_ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "ca-certificates",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "mime.types",
    "matplotlibrc",
    "fonts",
    "bash.bashrc",
    "profile",
    "inputrc",
    "protocols",
    "services",
    "magic",
    "magic.mime",
];

/// Top-level host entries that are links into `/usr` on merged-/usr systems, or directories.
pub const HOST_ROOT: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// How a top-level host entry is reproduced inside.
#[derive(Debug, Clone, PartialEq)]
pub enum RootEntry {
    Symlink { name: String, target: PathBuf },
    Dir { name: String },
}

/// What the host offers, read once at start-up.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root_entries: Vec<RootEntry>,
    /// The sandbox's `/etc`, filled by [`prepare_etc`].
    pub etc_dir: PathBuf,
    pub executor: PathBuf,
    pub tmp_size_bytes: u64,
    /// bwrap waits on its block fd until sandboxd has moved it into the sandbox's cgroup (the
    /// local runtime); inside a container, the container's cgroup already holds it.
    pub held: bool,
}

impl Layout {
    pub fn from_host(etc_dir: PathBuf, executor: PathBuf, tmp_size_bytes: u64) -> Layout {
        let root_entries = HOST_ROOT
            .iter()
            .filter_map(|name| {
                let p = Path::new("/").join(name);
                let meta = std::fs::symlink_metadata(&p).ok()?;
                if meta.file_type().is_symlink() {
                    Some(RootEntry::Symlink { name: name.to_string(), target: std::fs::read_link(&p).ok()? })
                } else if meta.is_dir() {
                    Some(RootEntry::Dir { name: name.to_string() })
                } else {
                    None
                }
            })
            .collect();
        Layout { root_entries, etc_dir, executor, tmp_size_bytes, held: true }
    }

    /// The view inside a container of a merged-/usr image (the Docker runtime's second
    /// layer): its `/etc`, and the top-level directories as links into `/usr`.
    pub fn merged_usr_image(executor: PathBuf, tmp_size_bytes: u64) -> Layout {
        // The image's own /etc holds its users and more; code sees one made like the local
        // runtime's (images/sandbox/prepare-etc.sh, at image build time).
        let root_entries = ["bin", "sbin", "lib", "lib64"]
            .iter()
            .map(|name| RootEntry::Symlink { name: name.to_string(), target: Path::new("usr").join(name) })
            .collect();
        Layout { root_entries, etc_dir: IMAGE_ETC.into(), executor, tmp_size_bytes, held: false }
    }
}

fn push(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

/// The namespaces and the read-only system view every sandbox shares: the host's `/usr` and
/// merged-/usr links, our `/etc`, a private `/proc`, a minimal `/dev`, and `/tmp` and
/// `/dev/shm` as tmpfs of `--tmp-size-mb`, but each at most half the sandbox's memory: their
/// pages count against it, so a larger one let code that fills it be OOM-killed instead of
/// getting ENOSPC.
fn system_view(a: &mut Vec<OsString>, layout: &Layout, share_net: bool, memory_bytes: u64) {
    let uid = SANDBOX_UID.to_string();
    push(a, &["--unshare-all", "--unshare-user", "--disable-userns"]);
    if share_net {
        a.push("--share-net".into());
    }
    push(a, &["--die-with-parent", "--new-session"]);
    if layout.held {
        push(a, &["--info-fd", &INFO_FD.to_string(), "--block-fd", &BLOCK_FD.to_string()]);
    }
    push(a, &["--uid", &uid, "--gid", &uid, "--hostname", "sandbox"]);
    push(a, &["--ro-bind", "/usr", "/usr"]);
    for entry in &layout.root_entries {
        match entry {
            RootEntry::Symlink { name, target } => {
                a.push("--symlink".into());
                a.push(target.into());
                a.push(format!("/{name}").into());
            }
            RootEntry::Dir { name } => {
                let p = format!("/{name}");
                push(a, &["--ro-bind", &p, &p]);
            }
        }
    }
    a.push("--ro-bind".into());
    a.push(layout.etc_dir.clone().into());
    a.push("/etc".into());
    push(a, &["--proc", "/proc", "--dev", "/dev"]);
    let tmp_size = layout.tmp_size_bytes.min(memory_bytes / 2).max(1 << 20).to_string();
    push(a, &["--size", &tmp_size, "--tmpfs", "/tmp"]);
    push(a, &["--size", &tmp_size, "--tmpfs", "/dev/shm"]);
}

/// The root and `/dev` are tmpfs that bwrap makes (unsized) and the sandbox user owns: once
/// every mount point is in place they become read-only, so code writes only where it should.
fn seal(a: &mut Vec<OsString>) {
    push(a, &["--remount-ro", "/dev", "--remount-ro", "/"]);
}

fn bind(a: &mut Vec<OsString>, flag: &str, source: &Path, target: &str) {
    a.push(flag.into());
    a.push(source.into());
    a.push(target.into());
}

/// A host directory bound read-only at `target` inside.
#[derive(Debug, Clone, PartialEq)]
pub struct RoBind {
    pub source: PathBuf,
    pub target: String,
}

/// The full bwrap argument list for a sandbox on `workspace`, with `mounts` read-only.
pub fn args(layout: &Layout, workspace: &Path, mounts: &[RoBind], memory_bytes: u64) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    system_view(&mut a, layout, false, memory_bytes);
    a.push("--as-pid-1".into());
    for m in mounts {
        bind(&mut a, "--ro-bind", &m.source, &m.target);
    }
    bind(&mut a, "--bind", workspace, sandbox_protocol::WORKSPACE_DIR);
    bind(&mut a, "--ro-bind", &layout.executor, EXECUTOR_PATH);
    seal(&mut a);
    push(&mut a, &["--chdir", sandbox_protocol::WORKSPACE_DIR, "--clearenv", "--", EXECUTOR_PATH]);
    a
}

/// Where an installation's target and pip cache appear inside its sandbox.
pub const INSTALL_TARGET: &str = "/target";
pub const INSTALL_CACHE: &str = "/cache";

/// The bwrap argument list of a package installation: the same system view as a session, plus
/// the host network and its DNS settings, the target and cache directories read-write, and
/// `pip` as the only process. `--only-binary :all:` means wheels only: no package code (no
/// `setup.py`) runs at install time, so nothing untrusted ever runs with network access or can
/// reach the cache other sessions' installs share.
pub fn install_args(layout: &Layout, target: &Path, cache: &Path, req: &PackageInstall) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    system_view(&mut a, layout, true, req.limits.memory_bytes);
    if Path::new(RESOLV_CONF).exists() {
        push(&mut a, &["--ro-bind", RESOLV_CONF, RESOLV_CONF]);
    }
    bind(&mut a, "--bind", target, INSTALL_TARGET);
    bind(&mut a, "--bind", cache, INSTALL_CACHE);
    seal(&mut a);
    push(&mut a, &["--chdir", "/tmp", "--clearenv", "--setenv", "HOME", "/tmp"]);
    push(&mut a, &["--setenv", "PATH", sandbox_protocol::SANDBOX_PATH, "--setenv", "LANG", "C.UTF-8"]);
    a.push("--".into());
    a.extend(pip_command(req).into_iter().map(OsString::from));
    a
}

/// pip's command line for `req`, into [`INSTALL_TARGET`] with its cache at [`INSTALL_CACHE`]:
/// wheels only, and the package names after `--`, so none can be read as an option.
pub fn pip_command(req: &PackageInstall) -> Vec<String> {
    let mut a: Vec<&str> = vec!["python3", "-m", "pip", "install", "--target", INSTALL_TARGET, "--upgrade"];
    a.extend(["--cache-dir", INSTALL_CACHE, "--only-binary", ":all:", "--break-system-packages"]);
    a.extend(["--no-input", "--disable-pip-version-check", "--progress-bar", "off", "--no-warn-script-location"]);
    let mut a: Vec<String> = a.into_iter().map(String::from).collect();
    if let Some(url) = &req.index_url {
        a.extend(["--index-url".to_string(), url.clone()]);
    }
    a.push("--".into());
    a.extend(req.packages.iter().cloned());
    a
}

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Fills `dir` (emptied first) with the sandbox's `/etc`: world-readable copies of the host
/// entries in [`HOST_ETC`] and `python3*`, symlinks kept as symlinks, plus [`etc_files`].
/// Anything others may not read on the host (such as `/etc/ssl/private`) is left out.
pub fn prepare_etc(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut names: Vec<String> = HOST_ETC.iter().map(|s| s.to_string()).collect();
    if let Ok(etc) = std::fs::read_dir("/etc") {
        names.extend(
            etc.flatten().filter_map(|e| e.file_name().to_str().map(String::from)).filter(|n| n.starts_with("python3")),
        );
    }
    for name in names {
        copy_public(&Path::new("/etc").join(&name), &dir.join(&name))?;
    }
    for (name, content) in etc_files() {
        let p = dir.join(name);
        std::fs::write(&p, content)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// Copies `src` to `dst` if others may read it: files and symlinks as they are, directories
/// recursively. Missing sources are skipped.
fn copy_public(src: &Path, dst: &Path) -> std::io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(src) else { return Ok(()) };
    let mode = meta.permissions().mode();
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)
    } else if ft.is_dir() {
        if mode & 0o005 != 0o005 {
            return Ok(());
        }
        std::fs::create_dir(dst)?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(src)?.flatten() {
            copy_public(&entry.path(), &dst.join(entry.file_name()))?;
        }
        Ok(())
    } else if ft.is_file() && mode & 0o004 != 0 {
        std::fs::copy(src, dst)?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o644))?;
        // Keep the modification time: Python checks cached bytecode against its source's mtime
        // (Debian's sitecustomize lives here), and a new mtime means a recompile at every start.
        let file = std::fs::File::options().write(true).open(dst)?;
        file.set_times(std::fs::FileTimes::new().set_modified(meta.modified()?))
    } else {
        Ok(())
    }
}

/// The passwd, group and hosts files every sandbox sees: only the sandbox user, no host names.
pub fn etc_files() -> [(&'static str, String); 4] {
    let id = SANDBOX_UID;
    [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{id}:{id}:sandbox:/tmp:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        ("group", format!("root:x:0:\nsandbox:x:{id}:\nnogroup:x:65534:\n")),
        ("hosts", "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n".to_string()),
        // Empty: sandboxes have no network. Package installs bind the host's over it.
        ("resolv.conf", String::new()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            root_entries: vec![
                RootEntry::Symlink { name: "bin".into(), target: "usr/bin".into() },
                RootEntry::Dir { name: "lib64".into() },
            ],
            etc_dir: "/data/runtime/etc".into(),
            executor: "/data/runtime/bin/sandbox-executor".into(),
            tmp_size_bytes: 1 << 20,
            held: true,
        }
    }

    fn mounts() -> Vec<RoBind> {
        vec![RoBind { source: "/data/packages/s1".into(), target: "/opt/packages".into() }]
    }

    fn joined() -> String {
        args(&layout(), Path::new("/data/workspaces/s1"), &mounts(), 1 << 30)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn every_namespace_is_new_and_the_executor_is_pid_1() {
        let a = joined();
        for flag in ["--unshare-all", "--unshare-user", "--disable-userns", "--as-pid-1", "--die-with-parent"] {
            assert!(a.contains(flag), "{flag} missing from {a}");
        }
        assert!(!a.contains("--share-net"));
        assert!(a.ends_with("--clearenv -- /.sandbox/executor"), "{a}");
        assert!(a.contains("--uid 1000 --gid 1000"));
    }

    #[test]
    fn only_what_is_meant_to_be_visible_is_mounted() {
        let a = joined();
        assert!(a.contains("--ro-bind /usr /usr"));
        assert!(a.contains("--symlink usr/bin /bin"));
        assert!(a.contains("--ro-bind /lib64 /lib64"));
        assert!(a.contains("--ro-bind /data/runtime/etc /etc"));
        assert!(a.contains("--bind /data/workspaces/s1 /workspace"));
        assert!(a.contains(&format!("--size {} --tmpfs /tmp", 1 << 20)));
        assert!(a.contains(&format!("--size {} --tmpfs /dev/shm", 1 << 20)));
        assert!(a.contains("--ro-bind /data/packages/s1 /opt/packages"));
        for hidden in [" /root", " /home", "/var", "--bind /tmp", "--ro-bind /etc /etc", "--bind /data /"] {
            assert!(!a.contains(hidden), "{hidden} must not be mounted: {a}");
        }
        // The only writable bind is the workspace.
        let v = args(&layout(), Path::new("/w"), &mounts(), 1 << 30);
        assert_eq!(v.iter().filter(|s| *s == "--bind" || *s == "--dev-bind").count(), 1);
    }

    #[test]
    fn tmpfs_are_sized_below_the_memory_limit_and_root_and_dev_end_read_only() {
        let big = Layout { tmp_size_bytes: 256 << 20, ..layout() };
        let a = args(&big, Path::new("/w"), &[], 64 << 20);
        let a: Vec<String> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let joined = a.join(" ");
        let small = (32u64 << 20).to_string();
        assert!(joined.contains(&format!("--size {small} --tmpfs /tmp --size {small} --tmpfs /dev/shm")), "{joined}");
        // Sealed after the last mount point is made, before the executor runs.
        let sealed = a.iter().position(|s| s == "--remount-ro").unwrap_or(0);
        let last_mount = a.iter().rposition(|s| s.ends_with("bind") || s == "--tmpfs").unwrap_or(usize::MAX);
        assert!(sealed > last_mount, "{joined}");
        assert!(joined.contains("--remount-ro /dev --remount-ro / --chdir"), "{joined}");
    }

    #[test]
    fn etc_snapshot_keeps_public_entries_and_drops_private_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let etc = tmp.path().join("etc");
        prepare_etc(&etc).expect("prepare");
        assert!(std::fs::read_to_string(etc.join("passwd")).expect("passwd").contains("sandbox:x:1000"));
        if Path::new("/etc/ld.so.cache").exists() {
            assert!(etc.join("ld.so.cache").exists());
        }
        if Path::new("/etc/ssl/private").exists() {
            assert!(!etc.join("ssl/private").exists(), "private keys must not be copied");
        }
        assert!(!etc.join("shadow").exists());
        let host = std::fs::metadata("/etc/ld.so.cache").and_then(|m| m.modified());
        if let Ok(host_mtime) = host {
            let copy = std::fs::metadata(etc.join("ld.so.cache")).and_then(|m| m.modified()).expect("copied");
            assert_eq!(copy, host_mtime, "mtimes are kept (Python validates bytecode caches by them)");
        }
        // A second start replaces the snapshot rather than failing on existing files.
        prepare_etc(&etc).expect("prepare again");
    }

    /// The Docker runtime's image builds the same /etc at build time, with a shell script:
    /// the same entries, the same generated files.
    #[test]
    fn the_image_builds_the_same_etc() {
        let script = include_str!("../../../images/sandbox/prepare-etc.sh");
        let names =
            script.lines().find_map(|l| l.strip_prefix("for name in ")?.strip_suffix("; do")).unwrap_or_default();
        assert_eq!(names.split(' ').collect::<Vec<_>>(), HOST_ETC);
        for (name, content) in etc_files() {
            let escaped = content.replace('\n', "\\n");
            let written = match content.is_empty() {
                true => format!(": >\"$dir/{name}\""),
                false => format!("printf '{escaped}' >\"$dir/{name}\""),
            };
            assert!(script.contains(&written), "{name}: {written}");
        }
    }

    #[test]
    fn generated_passwd_names_no_host_user() {
        let [(_, passwd), ..] = etc_files();
        assert!(passwd.contains("sandbox:x:1000:1000"));
        assert!(!passwd.contains("/home/"));
    }

    fn install() -> PackageInstall {
        PackageInstall {
            name: "s1".into(),
            packages: vec!["six==1.17.0".into(), "attrs".into()],
            into: crate::Dir::SessionPackages("s1".into()),
            index_url: None,
            limits: crate::ResourceLimits { memory_bytes: 1 << 30, pids: 64, cpus: 1.0 },
            timeout: std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn installs_get_the_network_wheels_only_and_nothing_but_target_and_cache_writable() {
        let (target, cache) = (Path::new("/data/packages/s1"), Path::new("/data/pip-cache"));
        let v = install_args(&layout(), target, cache, &install());
        let a = v.iter().map(|s| s.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
        assert!(a.contains("--share-net") && a.contains("--unshare-user") && a.contains("--disable-userns"));
        assert!(a.contains("--uid 1000 --gid 1000"), "{a}");
        assert!(a.contains("--bind /data/packages/s1 /target") && a.contains("--bind /data/pip-cache /cache"));
        assert_eq!(v.iter().filter(|s| *s == "--bind" || *s == "--dev-bind").count(), 2);
        assert!(a.contains("--only-binary :all:"), "no sdist may run setup.py: {a}");
        // Package names come after `--`, so none can be read as an option of pip.
        assert!(a.ends_with("--target /target --upgrade --cache-dir /cache --only-binary :all: --break-system-packages --no-input --disable-pip-version-check --progress-bar off --no-warn-script-location -- six==1.17.0 attrs"), "{a}");
        let with_index = install_args(
            &layout(),
            target,
            cache,
            &PackageInstall { index_url: Some("https://mirror/simple".into()), ..install() },
        );
        assert!(with_index.iter().any(|s| s == "https://mirror/simple"));
    }

    #[test]
    fn sessions_never_get_the_network() {
        assert!(!joined().contains("--share-net"));
        assert!(!joined().contains("resolv.conf"));
    }
}
