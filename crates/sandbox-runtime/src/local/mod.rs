//! The local runtime: each sandbox is a bubblewrap process on this host, with the executor as
//! PID 1, limits from cgroups, and the executor's seccomp filter on every process inside.
//!
//! When sandboxd runs as root, bwrap runs as a dedicated unprivileged user (`sandbox` by
//! default), so uid 1000 inside maps to that user outside and never to root. The pre-exec hook
//! joins the sandbox's cgroup first, while still root, then drops to that user.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sandbox_protocol::ExecRequest;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex as AsyncMutex;

use crate::bwrap;
use crate::cgroup::{CgroupMode, Cgroups, SandboxCgroup};
use crate::executor_client::{ExecutorClient, OutputSink};
use crate::layout::HostLayout;
use crate::runtime::{
    Dir, ExecOutcome, InstallOutcome, PackageInstall, Readiness, ResourceLimits, Runtime, Sandbox, SandboxSpec,
};
use crate::RuntimeError;

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// `bwrap` binary: a path, or a name looked up on PATH.
    pub bwrap: PathBuf,
    /// The `sandbox-executor` binary to run inside (copied into `state_dir`).
    pub executor: PathBuf,
    /// Where the runtime keeps its files (executor copy, etc files, probe workspace).
    pub state_dir: PathBuf,
    /// Where sandboxd keeps workspaces, package and template directories, by name.
    pub dirs: HostLayout,
    /// How sandboxd reaches workspace files: on its disk (the default), or through the
    /// executor as a remote runtime must (to test that path for real on one host).
    pub file_access: crate::WorkspaceAccess,
    /// Host uid/gid that sandboxes run as.
    pub run_as: RunAs,
    pub cgroups: CgroupMode,
    pub tmp_size_bytes: u64,
    pub ready_timeout: Duration,
}

/// Which host user a sandbox runs as.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAs {
    /// sandboxd's own user (when sandboxd is not root).
    Current,
    /// A dedicated unprivileged user (when sandboxd is root).
    User { uid: u32, gid: u32 },
    /// The dedicated user should be used but cannot be: sandboxes must not start.
    Unavailable(String),
}

impl RunAs {
    fn ids(&self) -> Option<(u32, u32)> {
        match self {
            RunAs::User { uid, gid } => Some((*uid, *gid)),
            RunAs::Current | RunAs::Unavailable(_) => None,
        }
    }
}

pub struct LocalRuntime {
    config: LocalConfig,
    bwrap: Result<PathBuf, String>,
    layout: Result<bwrap::Layout, String>,
    cgroups: Result<Cgroups, String>,
    /// What is wrong without starting anything, first cause first.
    problems: Vec<String>,
    probe: AsyncMutex<Option<(Instant, Readiness)>>,
    counter: AtomicU64,
}

/// The sandbox user must be able to reach the data dir: bwrap resolves mount sources as that
/// user. Returns the first ancestor others cannot traverse.
fn unreachable_ancestor(dir: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    dir.ancestors().find_map(|a| {
        let mode = std::fs::metadata(a).ok()?.permissions().mode();
        (mode & 0o001 == 0).then(|| {
            format!(
                "{} is not traversable by the sandbox user (mode {:o}); put the data dir elsewhere (--data-dir) or chmod o+x it",
                a.display(),
                mode & 0o7777
            )
        })
    })
}

/// Looks a program up on PATH unless it is already a path.
fn resolve_program(p: &Path) -> Result<PathBuf, String> {
    if p.components().count() > 1 {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(format!("{} does not exist", p.display())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .ok_or_else(|| format!("{} not found on PATH", p.display()))
}

/// FNV-1a: a stable short tag for a path (std's hasher may change between Rust releases).
pub fn tag(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", h as u32)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> String + 'a {
    move |e| format!("{op} {}: {e}", path.display())
}

/// Writes the files the sandboxes mount and copies the executor where the sandbox user can
/// read it (the original may sit under a directory like /root that it cannot traverse).
fn prepare_state_dir(config: &LocalConfig) -> Result<bwrap::Layout, String> {
    let dir = &config.state_dir;
    let etc = dir.join("etc");
    let bin = dir.join("bin");
    for d in [dir, &bin] {
        std::fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(io_err("chmod", dir))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &bin))?;
    bwrap::prepare_etc(&etc).map_err(io_err("prepare the sandbox /etc in", &etc))?;
    let exe = bin.join("sandbox-executor");
    let staged = bin.join(format!("sandbox-executor.{}", std::process::id()));
    std::fs::copy(&config.executor, &staged)
        .map_err(|e| format!("cannot copy the executor from {}: {e}", config.executor.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &staged))?;
    std::fs::rename(&staged, &exe).map_err(io_err("rename", &staged))?;
    Ok(bwrap::Layout::from_host(etc, exe, config.tmp_size_bytes))
}

impl Drop for LocalRuntime {
    fn drop(&mut self) {
        if let Ok(cgroups) = &self.cgroups {
            cgroups.remove_base();
        }
    }
}

impl LocalRuntime {
    /// Prepares the runtime. Never fails: what is wrong is reported by [`Runtime::readiness`].
    pub fn new(config: LocalConfig) -> LocalRuntime {
        let run_as = match &config.run_as {
            RunAs::Unavailable(why) => Err(why.clone()),
            RunAs::Current | RunAs::User { .. } => Ok(()),
        };
        let bwrap = resolve_program(&config.bwrap)
            .map_err(|e| format!("bubblewrap: {e}; install it (apt-get install bubblewrap) or pass --bwrap"));
        let layout = prepare_state_dir(&config);
        let cgroups = Cgroups::detect(config.cgroups, &tag(&config.state_dir.to_string_lossy()))
            .map_err(|e| format!("no cgroup hierarchy can enforce limits ({e}); fix the host or pass --cgroups off"));
        if let Ok(cg) = &cgroups {
            cg.remove_stale();
        }
        let reachable = match config.run_as.ids() {
            Some(_) => [&config.state_dir, &config.dirs.workspaces]
                .into_iter()
                .find_map(|d| unreachable_ancestor(d))
                .map_or(Ok(()), Err),
            None => Ok(()),
        };
        let problems = [
            run_as.err(),
            bwrap.as_ref().err().cloned(),
            layout.as_ref().err().cloned(),
            cgroups.as_ref().err().cloned(),
            reachable.err(),
        ]
        .into_iter()
        .flatten()
        .collect();
        LocalRuntime {
            config,
            bwrap,
            layout,
            cgroups,
            problems,
            probe: AsyncMutex::new(None),
            counter: AtomicU64::new(0),
        }
    }

    fn cgroup_version(&self) -> String {
        self.cgroups.as_ref().map(|c| c.version().to_string()).unwrap_or_else(|_| "none".into())
    }

    /// The first reason this runtime cannot work, found without starting anything.
    fn static_problem(&self) -> Option<String> {
        self.problems.first().cloned()
    }

    /// Starts and destroys one sandbox: the only proof that namespaces, mounts and cgroups all work.
    async fn probe(&self) -> Result<(), RuntimeError> {
        let workspace = self.config.state_dir.join("probe");
        std::fs::create_dir_all(&workspace).map_err(|source| RuntimeError::Io {
            op: "create",
            path: workspace.clone(),
            source,
        })?;
        if let Some((uid, gid)) = self.config.run_as.ids() {
            sandbox_sys::chown(&workspace, uid, gid).map_err(|source| RuntimeError::Io {
                op: "chown",
                path: workspace.clone(),
                source,
            })?;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("probe-{}-{n}", std::process::id());
        let limits = ResourceLimits { memory_bytes: 256 << 20, pids: 64, cpus: 1.0 };
        let sandbox = self.start(name, &workspace, &[], limits).await?;
        sandbox.destroy().await;
        Ok(())
    }

    /// Starts a sandbox named `name` on the host directory `workspace`.
    async fn start(
        &self,
        name: String,
        workspace: &Path,
        mounts: &[bwrap::RoBind],
        limits: ResourceLimits,
    ) -> Result<LocalSandbox, RuntimeError> {
        if let Some(problem) = self.static_problem() {
            return Err(RuntimeError::NotReady(problem));
        }
        let (Ok(bwrap_path), Ok(layout), Ok(cgroups)) = (&self.bwrap, &self.layout, &self.cgroups) else {
            return Err(RuntimeError::NotReady("runtime misconfigured".into()));
        };
        // One cgroup per sandbox, not per name: a session's next sandbox may start while its
        // last one's cgroup is still being emptied and removed. The name stays in it (tools
        // find a session's cgroup by its id).
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let cgroup = cgroups.create(&format!("{name}.{n}"), &limits)?;
        let args = bwrap::args(layout, workspace, mounts, limits.memory_bytes);
        let (mut child, info_r, block_w) = match self.spawn_held(bwrap_path, args, Stdio::piped()) {
            Ok(spawned) => spawned,
            Err(e) => {
                cgroup.iter().for_each(SandboxCgroup::remove);
                return Err(e);
            }
        };
        let (Some(stdin), Some(stdout), Some(stderr), Some(bwrap_pid)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take(), child.id())
        else {
            return Err(RuntimeError::Start("bwrap has no stdio pipes".into()));
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(log_stderr(name.clone(), stderr, Arc::clone(&stderr_tail)));
        let sandbox = LocalSandbox {
            name,
            client: ExecutorClient::new(stdout, stdin),
            child: AsyncMutex::new(Some(child)),
            cgroup,
            stderr_tail,
            destroyed: AtomicBool::new(false),
        };
        // While bwrap builds the namespaces and mounts, move it and its sandbox process into the
        // cgroup: bwrap holds that process on BLOCK_FD until we write to it, so nothing runs
        // inside before the limits apply, and the slow migration overlaps bwrap's own work.
        let cg = sandbox.cgroup.clone();
        let join =
            tokio::task::spawn_blocking(move || join_cgroup_then_release(bwrap_pid, info_r, block_w, cg.as_ref()));
        let timeout = self.config.ready_timeout;
        let started = match tokio::time::timeout(timeout, join).await {
            Ok(Ok(Ok(()))) => sandbox.client.wait_ready(timeout).await.map(drop),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => Err(RuntimeError::Start(format!("cgroup join task failed: {e}"))),
            Err(_) => Err(RuntimeError::Unresponsive(timeout.as_secs())),
        };
        if let Err(e) = started {
            sandbox.destroy().await;
            // bwrap's own message (e.g. "Creating new namespace failed") says most; give its
            // stderr reader a moment to catch up with the exit.
            for _ in 0..20 {
                if !sandbox.tail().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let tail = sandbox.tail();
            return Err(RuntimeError::Start(if tail.is_empty() { e.to_string() } else { tail }));
        }
        Ok(sandbox)
    }
}

impl LocalRuntime {
    /// Spawns bwrap with `args` as the sandbox user, held on its block fd before anything runs
    /// inside: the caller moves it into a cgroup, then releases it
    /// ([`join_cgroup_then_release`] with the returned info and block fds).
    fn spawn_held(
        &self,
        bwrap_path: &Path,
        args: Vec<std::ffi::OsString>,
        stdin: Stdio,
    ) -> Result<(tokio::process::Child, std::os::fd::OwnedFd, std::os::fd::OwnedFd), RuntimeError> {
        let pipes = sandbox_sys::pipe_cloexec().and_then(|info| Ok((info, sandbox_sys::pipe_cloexec()?)));
        let ((info_r, info_w), (block_r, block_w)) =
            pipes.map_err(|e| RuntimeError::Start(format!("cannot create control pipes: {e}")))?;
        let mut cmd = std::process::Command::new(bwrap_path);
        cmd.args(args).env_clear().stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child_fds = vec![(info_w, bwrap::INFO_FD), (block_r, bwrap::BLOCK_FD)];
        sandbox_sys::pre_exec_fds_and_drop(&mut cmd, child_fds, self.config.run_as.ids());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        // Note: bwrap's --die-with-parent watches the *thread* that spawns it. This runs on a
        // runtime worker thread, which lives as long as the server; never spawn from
        // spawn_blocking, whose threads exit when idle.
        let spawned = cmd.spawn();
        // Closes our copies of the child's pipe ends, so a dying bwrap shows as EOF.
        drop(cmd);
        let child = spawned.map_err(|e| RuntimeError::Start(format!("cannot run {}: {e}", bwrap_path.display())))?;
        Ok((child, info_r, block_w))
    }

    async fn install(&self, req: PackageInstall) -> Result<InstallOutcome, RuntimeError> {
        if let Some(problem) = self.static_problem() {
            return Err(RuntimeError::NotReady(problem));
        }
        let (Ok(bwrap_path), Ok(layout), Ok(cgroups)) = (&self.bwrap, &self.layout, &self.cgroups) else {
            return Err(RuntimeError::NotReady("runtime misconfigured".into()));
        };
        // pip unpacks wheels under /tmp before moving them into place: give it room.
        let layout =
            bwrap::Layout { tmp_size_bytes: layout.tmp_size_bytes.max(crate::install::TMP_BYTES), ..layout.clone() };
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let cgroup = cgroups.create(&format!("install-{}-{n}", req.name), &req.limits)?;
        let target = self.config.dirs.path(&req.into);
        let before = crate::layout::installed(&target);
        let args = bwrap::install_args(&layout, &target, &self.config.dirs.pip_cache, &req);
        let spawned = self.spawn_held(bwrap_path, args, Stdio::null());
        let (child, info_r, block_w) = match spawned {
            Ok(s) => s,
            Err(e) => {
                cgroup.iter().for_each(SandboxCgroup::remove);
                return Err(e);
            }
        };
        let cleanup = |cgroup: &Option<SandboxCgroup>| {
            if let Some(cg) = cgroup {
                cg.kill_all();
                cg.remove();
            }
        };
        let Some(pid) = child.id() else {
            cleanup(&cgroup);
            return Err(RuntimeError::Start("bwrap exited at once".into()));
        };
        let cg = cgroup.clone();
        let joined = tokio::task::spawn_blocking(move || join_cgroup_then_release(pid, info_r, block_w, cg.as_ref()))
            .await
            .map_err(|e| RuntimeError::Start(format!("cgroup join task failed: {e}")))
            .and_then(|r| r);
        if let Err(e) = joined {
            cleanup(&cgroup);
            return Err(e);
        }
        let outcome = match tokio::time::timeout(req.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
                log.push_str(&String::from_utf8_lossy(&out.stderr));
                InstallOutcome {
                    success: out.status.success(),
                    log: crate::install::tail_of(&log, crate::install::LOG_BYTES),
                    timed_out: false,
                    installed: crate::layout::installed(&target).difference(&before).cloned().collect(),
                }
            }
            Ok(Err(e)) => {
                cleanup(&cgroup);
                return Err(RuntimeError::Protocol(e));
            }
            // The child was dropped with the timed-out future, which kills bwrap (kill_on_drop).
            Err(_) => InstallOutcome {
                success: false,
                log: format!("pip did not finish within {} s and was killed", req.timeout.as_secs()),
                timed_out: true,
                installed: Vec::new(),
            },
        };
        cleanup(&cgroup);
        Ok(outcome)
    }
}

/// Moves bwrap, then the sandbox process it reports on its info fd, into `cgroup`, then lets
/// bwrap go on. The first move is the slow one (~7 ms: the kernel waits out an RCU grace period
/// after an idle moment); it starts at once, while bwrap is still cloning, and the second,
/// right after it, is fast. If anything fails, bwrap stays blocked and the caller destroys it.
fn join_cgroup_then_release(
    bwrap: u32,
    info: std::os::fd::OwnedFd,
    block: std::os::fd::OwnedFd,
    cgroup: Option<&SandboxCgroup>,
) -> Result<(), RuntimeError> {
    use std::io::{Read, Write};
    if let Some(cg) = cgroup {
        cg.add_process(bwrap)?;
    }
    let mut info = std::fs::File::from(info);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'}') {
        let n = info.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let pid =
        parse_child_pid(&buf).ok_or_else(|| RuntimeError::Start("bwrap exited before starting the sandbox".into()))?;
    // bwrap may have cloned before its own move: move the sandbox process explicitly too.
    if let Some(cg) = cgroup {
        cg.add_process(pid)?;
    }
    std::fs::File::from(block).write_all(b"1")?;
    Ok(())
}

/// The `"child-pid": N` of bwrap's info JSON.
fn parse_child_pid(info: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(info).ok()?;
    let rest = &s[s.find("\"child-pid\"")? + "\"child-pid\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

async fn log_stderr(name: String, stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(sandbox = %name, "{line}");
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() == 20 {
            t.pop_front();
        }
        t.push_back(line);
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn readiness(&self) -> Readiness {
        let mut cached = self.probe.lock().await;
        if let Some((at, r)) = cached.as_ref() {
            let ttl = if r.ready { Duration::from_secs(30) } else { Duration::from_secs(2) };
            if at.elapsed() < ttl {
                return r.clone();
            }
        }
        let (ready, message) = match self.probe().await {
            Ok(()) => (true, "ok".to_string()),
            Err(e) => (false, e.to_string()),
        };
        let detail = [("cgroup".to_string(), self.cgroup_version())].into();
        let r = Readiness { ready, message, runtime: "local", detail };
        *cached = Some((Instant::now(), r.clone()));
        r
    }

    fn workspace_access(&self) -> crate::WorkspaceAccess {
        self.config.file_access
    }

    fn workspace_owner(&self) -> Option<(u32, u32)> {
        self.config.run_as.ids()
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, RuntimeError> {
        let dirs = &self.config.dirs;
        let workspace = dirs.path(&Dir::Workspace(spec.workspace));
        let mounts: Vec<bwrap::RoBind> =
            spec.mounts.into_iter().map(|m| bwrap::RoBind { source: dirs.path(&m.dir), target: m.target }).collect();
        Ok(Box::new(self.start(spec.name, &workspace, &mounts, spec.limits).await?))
    }

    async fn install_packages(&self, req: PackageInstall) -> Result<InstallOutcome, RuntimeError> {
        self.install(req).await
    }

    async fn check_image(&self, image: &str) -> Result<(), RuntimeError> {
        Err(crate::runtime::no_images("local", image))
    }

    async fn release_image(&self, _image: &str) {}
}

pub struct LocalSandbox {
    name: String,
    client: ExecutorClient,
    child: AsyncMutex<Option<tokio::process::Child>>,
    cgroup: Option<SandboxCgroup>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    destroyed: AtomicBool,
}

impl LocalSandbox {
    fn tail(&self) -> String {
        let t = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn name(&self) -> &str {
        &self.name
    }

    async fn exec(&self, req: ExecRequest, sink: Option<OutputSink>) -> Result<ExecOutcome, RuntimeError> {
        let outcome = crate::measured::exec(&self.client, self.cgroup.as_ref(), req, sink, || self.tail()).await;
        if outcome.is_err() {
            self.destroy().await;
        }
        outcome
    }

    async fn start_kernel(&self, env: std::collections::BTreeMap<String, String>) -> Result<(), RuntimeError> {
        self.client.start_kernel(env).await
    }

    async fn interrupt(&self) -> Result<(), RuntimeError> {
        self.client.interrupt().await
    }

    async fn restart_kernel(&self) -> Result<(), RuntimeError> {
        self.client.restart_kernel().await
    }

    async fn file(
        &self,
        op: sandbox_protocol::files::FileOp,
    ) -> Result<sandbox_protocol::files::FileResult, RuntimeError> {
        self.client.file(op).await
    }

    fn isolation(&self) -> String {
        let limits = match &self.cgroup {
            Some(cg) => format!("cgroup {} limits", cg.version()),
            None => "NO cgroup limits (--cgroups off)".into(),
        };
        format!("bubblewrap (all namespaces new, no network) + executor seccomp + {limits}")
    }

    fn is_alive(&self) -> bool {
        !self.destroyed.load(Ordering::SeqCst) && self.client.is_alive()
    }

    async fn destroy(&self) {
        if self.destroyed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(mut child) = self.child.lock().await.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        if let Some(cg) = &self.cgroup {
            // Anything still in the cgroup (there should be nothing once PID 1 is gone).
            cg.kill_all();
            cg.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_pid_from_bwrap_info() {
        assert_eq!(parse_child_pid(b"{\n    \"child-pid\": 4321,\n    \"cgroup-namespace\": 1\n}\n"), Some(4321));
        assert_eq!(parse_child_pid(b"{}"), None);
        assert_eq!(parse_child_pid(b"garbage"), None);
    }

    #[test]
    fn tag_is_stable() {
        assert_eq!(tag("/var/lib/sandboxd"), tag("/var/lib/sandboxd"));
        assert_ne!(tag("/a"), tag("/b"));
        assert_eq!(tag("").len(), 8);
    }

    #[test]
    fn missing_program_is_reported() {
        assert!(resolve_program(Path::new("definitely-not-a-program-xyz")).is_err());
        assert!(resolve_program(Path::new("sh")).is_ok());
    }
}
