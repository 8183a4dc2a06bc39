//! Resource limits for local sandboxes with cgroups: v2 where the host delegates its
//! controllers to us, else the v1 memory, pids and cpu hierarchies.
//!
//! Each sandboxd owns one directory per hierarchy, `sandboxd-<tag>` under its own cgroup (the
//! tag comes from the data dir, so several servers on one host do not collide), and puts each
//! sandbox in a child of it. The sandbox's first process joins it before any code of ours or
//! the user's runs inside (see `local::LocalRuntime::start`).
//!
//! The Docker runtime reads the counters of the cgroup its engine made for a container
//! ([`SandboxCgroup::of_process`]) the same way, when that engine runs on this host.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{LimitKind, ResourceLimits, RuntimeError};

const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// v2 if delegated to us, else v1; an error if neither can enforce limits.
    Auto,
    V2,
    V1,
    /// No limits at all (an explicit operator choice).
    Off,
}

impl std::str::FromStr for CgroupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CgroupMode::Auto),
            "v2" => Ok(CgroupMode::V2),
            "v1" => Ok(CgroupMode::V1),
            "off" => Ok(CgroupMode::Off),
            other => Err(format!("unknown cgroup mode {other:?} (auto, v2, v1, off)")),
        }
    }
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupMode::Auto => "auto",
            CgroupMode::V2 => "v2",
            CgroupMode::V1 => "v1",
            CgroupMode::Off => "off",
        })
    }
}

#[derive(Debug, Clone)]
enum Kind {
    V2 {
        base: PathBuf,
    },
    /// `cpuacct` is `None` when it shares a hierarchy with `cpu` (`cpu,cpuacct`).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
    },
    Off,
}

/// This server's cgroup hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroups {
    kind: Kind,
}

/// One sandbox's cgroup (one directory per hierarchy).
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
}

/// Counters compared before and after an execution: which limit ended it, and what it used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub oom_kills: u64,
    pub pids_max_hits: u64,
    /// CPU time of every process in the sandbox so far, if the host accounts it.
    pub cpu_ns: Option<u64>,
    /// Peak memory since the last [`SandboxCgroup::reset_peak`] (v1) or since the start (v2).
    pub peak_memory_bytes: Option<u64>,
}

impl Counters {
    /// The limit that was hit between `self` (before) and `after`, memory first.
    pub fn limit_hit(&self, after: &Counters) -> Option<LimitKind> {
        if after.oom_kills > self.oom_kills {
            Some(LimitKind::Memory)
        } else if after.pids_max_hits > self.pids_max_hits {
            Some(LimitKind::Pids)
        } else {
            None
        }
    }
}

fn cg_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io { op, path: path.to_path_buf(), source }
}

fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    std::fs::write(path, value).map_err(cg_err("write", path))
}

/// Reads `key N` from a flat keyed file such as `memory.events`; 0 if absent.
fn keyed(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(key)).then(|| it.next()?.parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

/// A cgroup mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub root: String,
    pub point: PathBuf,
    pub v2: bool,
    pub controllers: Vec<String>,
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (root, point) = (*l.get(3)?, *l.get(4)?);
            let fstype = *r.first()?;
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = if v2 {
                Vec::new()
            } else {
                r.get(2)?.split(',').filter(|o| !matches!(*o, "rw" | "ro")).map(String::from).collect()
            };
            Some(Mount { root: root.into(), point: PathBuf::from(point.replace("\\040", " ")), v2, controllers })
        })
        .collect()
}

/// Our cgroup path per hierarchy from `/proc/self/cgroup`: (controllers, path); v2 has none.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = if ctrls.is_empty() { Vec::new() } else { ctrls.split(',').map(String::from).collect() };
            Some((ctrls, path.to_string()))
        })
        .collect()
}

/// Where our own cgroup is, as a directory under the mount.
fn own_dir(mount: &Mount, own_path: &str) -> PathBuf {
    let rel = own_path.strip_prefix(mount.root.as_str()).unwrap_or(own_path);
    mount.point.join(rel.trim_start_matches('/'))
}

impl Cgroups {
    /// Finds and prepares this server's hierarchy on the running host.
    pub fn detect(mode: CgroupMode, tag: &str) -> Result<Cgroups, String> {
        if mode == CgroupMode::Off {
            return Ok(Cgroups { kind: Kind::Off });
        }
        let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let own = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
        Self::detect_in(mode, tag, &mounts, &own)
    }

    /// As [`Cgroups::detect`], on given mounts and own paths (tests use a fake tree).
    pub fn detect_in(
        mode: CgroupMode,
        tag: &str,
        mounts: &[Mount],
        own: &[(Vec<String>, String)],
    ) -> Result<Cgroups, String> {
        let name = format!("sandboxd-{tag}");
        let v2 = || -> Result<Cgroups, String> {
            let mount = mounts.iter().find(|m| m.v2).ok_or("no cgroup2 mount")?;
            let path = own.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p.as_str()).unwrap_or("/");
            let dir = own_dir(mount, path);
            setup_v2(&dir, &name).map(|base| Cgroups { kind: Kind::V2 { base } })
        };
        let v1 = || -> Result<Cgroups, String> {
            let base_for = |ctrl: &str| -> Option<PathBuf> {
                let mount = mounts.iter().find(|m| !m.v2 && m.controllers.iter().any(|c| c == ctrl))?;
                let path = own.iter().find(|(c, _)| c.iter().any(|x| x == ctrl)).map(|(_, p)| p.as_str())?;
                let dir = own_dir(mount, path).join(&name);
                std::fs::create_dir_all(&dir).ok()?;
                Some(dir)
            };
            let memory = base_for("memory").ok_or("no writable cgroup v1 memory hierarchy")?;
            let pids = base_for("pids").ok_or("no writable cgroup v1 pids hierarchy")?;
            let cpu = base_for("cpu");
            let cpuacct = base_for("cpuacct").filter(|d| Some(d) != cpu.as_ref());
            Ok(Cgroups { kind: Kind::V1 { memory, pids, cpu, cpuacct } })
        };
        match mode {
            CgroupMode::V2 => v2(),
            CgroupMode::V1 => v1(),
            CgroupMode::Auto => v2().or_else(|e2| v1().map_err(|e1| format!("cgroup v2: {e2}; cgroup v1: {e1}"))),
            CgroupMode::Off => Ok(Cgroups { kind: Kind::Off }),
        }
    }

    pub fn version(&self) -> &'static str {
        match self.kind {
            Kind::V2 { .. } => "v2",
            Kind::V1 { .. } => "v1",
            Kind::Off => "off",
        }
    }

    /// Removes this server's own directories, once no sandbox cgroup is left in them (a
    /// directory that still has one stays): each data dir's server made its own, and a host
    /// that runs many (a test suite) would keep them all.
    pub fn remove_base(&self) {
        for base in self.bases() {
            let _ = std::fs::remove_dir(base);
        }
    }

    fn bases(&self) -> Vec<&Path> {
        match &self.kind {
            Kind::V2 { base } => vec![base],
            Kind::V1 { memory, pids, cpu, cpuacct } => {
                let mut v = vec![memory.as_path(), pids.as_path()];
                v.extend(cpu.as_deref());
                v.extend(cpuacct.as_deref());
                v
            }
            Kind::Off => Vec::new(),
        }
    }

    /// Creates the cgroup of one sandbox with its limits; `None` when cgroups are off.
    pub fn create(&self, name: &str, limits: &ResourceLimits) -> Result<Option<SandboxCgroup>, RuntimeError> {
        if matches!(self.kind, Kind::Off) {
            return Ok(None);
        }
        let cg = SandboxCgroup {
            v2: matches!(self.kind, Kind::V2 { .. }),
            dirs: self.bases().iter().map(|b| b.join(name)).collect(),
        };
        for dir in &cg.dirs {
            std::fs::create_dir(dir).map_err(cg_err("mkdir", dir))?;
        }
        if let Err(e) = cg.apply(limits) {
            cg.remove();
            return Err(e);
        }
        Ok(Some(cg))
    }

    /// Kills and removes sandbox cgroups left by an earlier run of this server.
    pub fn remove_stale(&self) {
        for base in self.bases() {
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let cg = SandboxCgroup { v2: matches!(self.kind, Kind::V2 { .. }), dirs: vec![e.path()] };
                    cg.kill_all();
                    cg.remove();
                }
            }
        }
    }
}

/// Prepares `dir/name` as a v2 subtree with memory, pids (and cpu if offered) enabled.
fn setup_v2(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let controllers =
        std::fs::read_to_string(dir.join("cgroup.controllers")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let offered: Vec<&str> = controllers.split_whitespace().collect();
    for needed in ["memory", "pids"] {
        if !offered.contains(&needed) {
            return Err(format!("controller {needed} not available in {} (offered: {controllers:?})", dir.display()));
        }
    }
    let enable = if offered.contains(&"cpu") { "+memory +pids +cpu" } else { "+memory +pids" };
    let subtree = dir.join("cgroup.subtree_control");
    if std::fs::write(&subtree, enable).is_err() {
        // "No internal processes": a non-root cgroup with processes cannot hand controllers to
        // children. Move ourselves into a leaf, then try again.
        let leaf = dir.join(format!("{name}-supervisor"));
        std::fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
        std::fs::write(leaf.join("cgroup.procs"), "0")
            .map_err(|e| format!("cannot move sandboxd into {}: {e}", leaf.display()))?;
        std::fs::write(&subtree, enable).map_err(|e| {
            format!("cannot enable controllers in {} (is the cgroup delegated to sandboxd?): {e}", dir.display())
        })?;
    }
    let base = dir.join(name);
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    std::fs::write(base.join("cgroup.subtree_control"), enable).map_err(|e| format!("{}: {e}", base.display()))?;
    Ok(base)
}

impl SandboxCgroup {
    /// The cgroup another manager made for process `pid` (a container's, made by the Docker
    /// engine on this host), to read its counters: the directories of the memory, pids and
    /// cpu accounting hierarchies it is in, as this host's mounts show them. `None` when the
    /// process is not on this host (a remote engine) or its cgroup is not mounted here.
    pub fn of_process(pid: u32) -> Option<SandboxCgroup> {
        let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?);
        let paths = parse_proc_cgroup(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?);
        Self::of_paths(&mounts, &paths)
    }

    /// As [`SandboxCgroup::of_process`], on given mounts and cgroup paths.
    pub fn of_paths(mounts: &[Mount], paths: &[(Vec<String>, String)]) -> Option<SandboxCgroup> {
        let v1 = |ctrl: &str| {
            let mount = mounts.iter().find(|m| !m.v2 && m.controllers.iter().any(|c| c == ctrl))?;
            let (_, path) = paths.iter().find(|(c, _)| c.iter().any(|x| x == ctrl))?;
            Some(own_dir(mount, path)).filter(|d| d.is_dir())
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for ctrl in ["memory", "pids", "cpuacct"] {
            if let Some(d) = v1(ctrl).filter(|d| !dirs.contains(d)) {
                dirs.push(d);
            }
        }
        if !dirs.is_empty() {
            return Some(SandboxCgroup { v2: false, dirs });
        }
        let mount = mounts.iter().find(|m| m.v2)?;
        let (_, path) = paths.iter().find(|(c, _)| c.is_empty())?;
        let dir = own_dir(mount, path);
        dir.join("memory.events").is_file().then(|| SandboxCgroup { v2: true, dirs: vec![dir] })
    }

    fn apply(&self, l: &ResourceLimits) -> Result<(), RuntimeError> {
        let quota = ((l.cpus * CPU_PERIOD_US as f64) as u64).max(1000);
        if self.v2 {
            let d = &self.dirs[0];
            write(&d.join("memory.max"), &l.memory_bytes.to_string())?;
            // No swap: the memory limit is the limit (absent when the host has no swap).
            let _ = std::fs::write(d.join("memory.swap.max"), "0");
            write(&d.join("pids.max"), &l.pids.to_string())?;
            if d.join("cpu.max").exists() {
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        } else {
            for d in &self.dirs {
                if d.join("memory.limit_in_bytes").exists() {
                    write(&d.join("memory.limit_in_bytes"), &l.memory_bytes.to_string())?;
                    let _ = std::fs::write(d.join("memory.memsw.limit_in_bytes"), l.memory_bytes.to_string());
                }
                if d.join("pids.max").exists() {
                    write(&d.join("pids.max"), &l.pids.to_string())?;
                }
                if d.join("cpu.cfs_quota_us").exists() {
                    write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// "v2" or "v1".
    pub fn version(&self) -> &'static str {
        if self.v2 {
            "v2"
        } else {
            "v1"
        }
    }

    /// Moves process `pid` into this cgroup in every hierarchy. Blocking, and slow after an
    /// idle moment (a migration waits for an RCU grace period: ~7 ms measured here), so callers
    /// overlap it with other work.
    pub fn add_process(&self, pid: u32) -> Result<(), RuntimeError> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn counters(&self) -> Counters {
        let mut c = Counters::default();
        let number = |p: PathBuf| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
        for d in &self.dirs {
            c.oom_kills += keyed(&d.join(if self.v2 { "memory.events" } else { "memory.oom_control" }), "oom_kill");
            c.pids_max_hits += keyed(&d.join("pids.events"), "max");
            if self.v2 {
                let usec = keyed(&d.join("cpu.stat"), "usage_usec");
                c.cpu_ns = c.cpu_ns.or((usec > 0).then_some(usec * 1000));
                c.peak_memory_bytes = c.peak_memory_bytes.or(number(d.join("memory.peak")));
            } else {
                c.cpu_ns = c.cpu_ns.or(number(d.join("cpuacct.usage")));
                c.peak_memory_bytes = c.peak_memory_bytes.or(number(d.join("memory.max_usage_in_bytes")));
            }
        }
        c
    }

    /// Starts a new peak-memory measurement (v1 only; v2's `memory.peak` cannot be reset on
    /// every kernel, so there it is the sandbox's peak so far).
    pub fn reset_peak(&self) {
        for d in &self.dirs {
            let _ = std::fs::write(d.join("memory.max_usage_in_bytes"), "0");
        }
    }

    /// Makes an OOM kill take every process of the cgroup at once, as a kubelet on cgroup v2
    /// has the kernel do for a container (`memory.oom.group`). v1 has no such thing: there
    /// the kernel's OOM killer is held off (`oom_kill_disable`), so processes wait at the
    /// limit ([`Self::waiting_at_oom`]) for the caller to kill them all.
    pub fn oom_kills_whole(&self) -> Result<(), RuntimeError> {
        if self.v2 {
            return write(&self.dirs[0].join("memory.oom.group"), "1");
        }
        match self.dirs.iter().find(|d| d.join("memory.oom_control").exists()) {
            Some(d) => write(&d.join("memory.oom_control"), "1"),
            None => Ok(()),
        }
    }

    /// Whether the cgroup's processes wait at its memory limit (v1, after
    /// [`Self::oom_kills_whole`]).
    pub fn waiting_at_oom(&self) -> bool {
        !self.v2 && self.dirs.iter().any(|d| keyed(&d.join("memory.oom_control"), "under_oom") > 0)
    }

    /// SIGKILLs every process in the cgroup.
    pub fn kill_all(&self) {
        if self.v2 && std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for _ in 0..20 {
            let pids: Vec<i32> = self
                .dirs
                .iter()
                .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
                .flat_map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
                .collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = sandbox_sys::kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the cgroup directories, waiting briefly for dying processes to leave.
    pub fn remove(&self) {
        for d in &self.dirs {
            for _ in 0..100 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
37 30 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 22 0:40 / /proc rw - proc proc rw";

    #[test]
    fn mountinfo_finds_v1_and_v2_mounts() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert!(m[0].v2);
        assert_eq!(m[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[3].point, PathBuf::from("/sys/fs/cgroup/pids"));
    }

    #[test]
    fn proc_cgroup_paths() {
        let own = parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/user.slice");
        assert_eq!(own[0], (vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(own[2], (vec![], "/user.slice".to_string()));
    }

    #[test]
    fn limit_hit_prefers_memory() {
        let before = Counters::default();
        let hit = |oom_kills, pids_max_hits| Counters { oom_kills, pids_max_hits, ..Counters::default() };
        assert_eq!(before.limit_hit(&hit(1, 1)), Some(LimitKind::Memory));
        assert_eq!(before.limit_hit(&hit(0, 3)), Some(LimitKind::Pids));
        assert_eq!(before.limit_hit(&before), None);
    }

    /// A v2 tree made of plain files: checks the exact files and values we write.
    #[test]
    fn v2_limits_written_to_a_fake_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids\n").expect("write");
        std::fs::write(root.join("cgroup.subtree_control"), "").expect("write");
        let mounts = vec![Mount { root: "/".into(), point: root.to_path_buf(), v2: true, controllers: vec![] }];
        let cg = Cgroups::detect_in(CgroupMode::V2, "t", &mounts, &[(vec![], "/".into())]).expect("v2");
        assert_eq!(cg.version(), "v2");
        assert_eq!(std::fs::read_to_string(root.join("cgroup.subtree_control")).expect("read"), "+memory +pids +cpu");
        let base = root.join("sandboxd-t");
        assert_eq!(std::fs::read_to_string(base.join("cgroup.subtree_control")).expect("read"), "+memory +pids +cpu");

        // Plain directories do not get kernel files: create the ones we write to.
        let sb = base.join("s1");
        let limits = ResourceLimits { memory_bytes: 64 << 20, pids: 32, cpus: 0.5 };
        std::fs::create_dir(&sb).expect("mkdir");
        std::fs::write(sb.join("cpu.max"), "").expect("write");
        let s = SandboxCgroup { v2: true, dirs: vec![sb.clone()] };
        s.apply(&limits).expect("apply");
        let read = |f: &str| std::fs::read_to_string(sb.join(f)).expect("read");
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("cpu.max"), "50000 100000");

        std::fs::write(sb.join("memory.events"), "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n").expect("write");
        std::fs::write(sb.join("pids.events"), "max 2\n").expect("write");
        std::fs::write(sb.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").expect("write");
        std::fs::write(sb.join("memory.peak"), "4096\n").expect("write");
        assert_eq!(
            s.counters(),
            Counters { oom_kills: 1, pids_max_hits: 2, cpu_ns: Some(1_500_000), peak_memory_bytes: Some(4096) }
        );
        s.add_process(4242).expect("add");
        assert_eq!(read("cgroup.procs"), "4242");
    }

    #[test]
    fn v2_without_memory_controller_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpu\n").expect("write");
        let mounts = vec![Mount { root: "/".into(), point: tmp.path().to_path_buf(), v2: true, controllers: vec![] }];
        let err = Cgroups::detect_in(CgroupMode::V2, "t", &mounts, &[]).expect_err("must fail");
        assert!(err.contains("memory"), "{err}");
    }
}
