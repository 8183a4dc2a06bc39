//! The runtime trait and the types that cross it.

use async_trait::async_trait;
use sandbox_protocol::{ExecRequest, ExecResult};

use crate::executor_client::OutputSink;
use crate::RuntimeError;

/// Resource limits of one sandbox, enforced by the runtime (cgroups for the local one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceLimits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// CPU time as a fraction of one core per wall second (1.5 = one and a half cores).
    pub cpus: f64,
}

/// A directory sandboxes use, by what it holds and whose it is. Where it lives is the
/// runtime's business: the trait carries no host path, so a runtime whose sandboxes do not
/// share sandboxd's disk keeps them where its sandboxes are (runtimes that share it find them
/// with a [`crate::HostLayout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dir {
    /// A session's (or a warm sandbox's) files, read-write at `/workspace`.
    Workspace(String),
    /// The Python packages installed for one session alone.
    SessionPackages(String),
    /// The environment a template's packages were installed into.
    Template(String),
}

/// What to create.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Unique among live sandboxes of this runtime (used for cgroup names and logs).
    pub name: String,
    /// The workspace ([`Dir::Workspace`]) mounted read-write at `/workspace`.
    pub workspace: String,
    pub limits: ResourceLimits,
    /// Directories shown read-only inside (template and per-session package environments).
    pub mounts: Vec<ReadOnlyMount>,
    /// The image to start it from, for runtimes with images (a template's own); `None`: the
    /// runtime's default.
    pub image: Option<String>,
    /// The template and tenant it runs for, if any: labels only (runtimes that keep labels,
    /// such as Docker's, show them to operators), never a decision.
    pub template: Option<String>,
    pub tenant: Option<String>,
}

/// A directory mounted read-only at `target` (an absolute path inside the sandbox).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOnlyMount {
    pub dir: Dir,
    pub target: String,
}

/// A package installation: `pip install` of `packages` into `into`, run with network access
/// outside any session's sandbox, with a pip cache the runtime keeps for all installations.
#[derive(Debug, Clone)]
pub struct PackageInstall {
    /// Used for cgroup names and logs.
    pub name: String,
    /// Requirement specifiers, already validated (no options, no URLs).
    pub packages: Vec<String>,
    /// Where the packages go (a session's packages, or a template's environment).
    pub into: Dir,
    /// Another package index than PyPI, if configured.
    pub index_url: Option<String>,
    pub limits: ResourceLimits,
    pub timeout: std::time::Duration,
}

/// How an installation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallOutcome {
    pub success: bool,
    /// The end of pip's output (its error, when it failed).
    pub log: String,
    pub timed_out: bool,
    /// The distributions it added or changed, by name and version.
    pub installed: Vec<(String, String)>,
}

/// Which limit ended an execution, when one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Memory,
    Pids,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Pids => "pids",
        }
    }
}

/// An execution's result with what only the runtime can see (which limit was hit, what the
/// sandbox used meanwhile).
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub result: ExecResult,
    pub limit: Option<LimitKind>,
    /// CPU time of the whole sandbox during the execution.
    pub cpu_ms: Option<u64>,
    /// Peak memory of the whole sandbox (during the execution where the host can tell).
    pub peak_memory_bytes: Option<u64>,
}

/// Whether the runtime can create sandboxes now, and how it enforces limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    /// Human-readable cause when not ready.
    pub message: String,
    pub runtime: &'static str,
    /// Facts of this runtime alone, as name and value (the local runtime: which cgroup
    /// version enforces limits).
    pub detail: std::collections::BTreeMap<String, String>,
}

/// How sandboxd reaches a workspace's files (the file API, uploads, archives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceAccess {
    /// On its own disk: the sandbox mounts the directory sandboxd keeps ([`crate::HostLayout`]).
    /// The fast way, for runtimes on sandboxd's host.
    Host,
    /// Through the executor inside the sandbox ([`Sandbox::file`]), for runtimes whose
    /// sandboxes do not share sandboxd's disk; the session's sandbox is started for it.
    Executor,
}

#[async_trait]
pub trait Runtime: Send + Sync {
    fn name(&self) -> &'static str;

    /// How sandboxd reaches the files of this runtime's workspaces.
    fn workspace_access(&self) -> WorkspaceAccess;

    /// Probes (or returns a recent probe of) whether sandboxes can be created.
    async fn readiness(&self) -> Readiness;

    /// Host uid/gid that code in a sandbox runs as, which must own the directories it writes
    /// (workspaces, package directories), if not sandboxd's own.
    fn workspace_owner(&self) -> Option<(u32, u32)>;

    /// Creates a sandbox and waits until its executor is ready.
    async fn create(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, RuntimeError>;

    /// Installs Python packages into a directory in a throwaway network-enabled sandbox
    /// (sessions themselves stay offline). Errors mean the installer could not run at all;
    /// a failed `pip` is an outcome with `success: false`.
    async fn install_packages(&self, req: PackageInstall) -> Result<InstallOutcome, RuntimeError>;

    /// Whether sandboxes can start from `image` (a template names it): [`RuntimeError::Image`]
    /// saying why not. Runtimes without images refuse every one ([`no_images`]). No default:
    /// a wrapper (the start queue) that forgot to pass it on would refuse every image.
    async fn check_image(&self, image: &str) -> Result<(), RuntimeError>;

    /// Lets the runtime drop `image`, which no template names any more (the Docker runtime
    /// removes it from the engine unless a container still uses it). Nothing for others.
    async fn release_image(&self, image: &str);

    /// Whether a sandbox keeps its workspace on a disk of its own (a pod's `emptyDir`), not
    /// on the host directory its spec names: then sandboxd copies that directory into a new
    /// sandbox before it serves the session, and copies the sandbox's files back out before
    /// it ends and whenever it writes the workspace back. A wrapper must pass this on.
    fn copies_workspace(&self) -> bool {
        false
    }

    /// Whether its sandboxes outlive sandboxd's process (a cluster's pods do): then a restart,
    /// or the replica that adopts a lost one's sessions, finds them again
    /// ([`Runtime::reattach`]) instead of stopping their sessions. A wrapper must pass this and
    /// the two below on.
    fn keeps_sandboxes(&self) -> bool {
        false
    }

    /// Sandbox `name` as the runtime still runs it, connected again; `None` if it does not.
    async fn reattach(&self, _name: &str) -> Result<Option<Box<dyn Sandbox>>, RuntimeError> {
        Ok(None)
    }

    /// Removes what the runtime still runs of sandbox `name` that no [`Sandbox`] here holds
    /// (a pod a lost replica started). Nothing where sandboxes end with sandboxd.
    async fn remove(&self, _name: &str) {}

    /// The sandboxes the runtime still runs, whoever started them: what a restart reconciles
    /// with the store. None where sandboxes end with sandboxd.
    async fn kept_sandboxes(&self) -> Result<Vec<KeptSandbox>, RuntimeError> {
        Ok(Vec::new())
    }
}

/// A sandbox that outlives sandboxd ([`Runtime::keeps_sandboxes`]), as the runtime lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptSandbox {
    /// The sandbox's name: a session's id, or a pool's or a one-shot run's name.
    pub name: String,
    /// Whether this replica started it.
    pub started_here: bool,
}

/// [`Runtime::check_image`]'s answer for runtimes that run no images.
pub fn no_images(runtime: &str, image: &str) -> RuntimeError {
    RuntimeError::Image(format!("the {runtime} runtime runs no images (image {image:?})"))
}

#[async_trait]
pub trait Sandbox: Send + Sync {
    fn name(&self) -> &str;

    /// Runs one execution; with a `sink`, its outputs also go there as they happen. Errors mean
    /// the sandbox itself failed, not the user's code.
    async fn exec(&self, req: ExecRequest, sink: Option<OutputSink>) -> Result<ExecOutcome, RuntimeError>;

    /// Starts the session kernel in the background with `env` (Python cells then run in it).
    async fn start_kernel(&self, env: std::collections::BTreeMap<String, String>) -> Result<(), RuntimeError>;

    /// Interrupts the running kernel cell (KeyboardInterrupt; the kernel's state is kept).
    async fn interrupt(&self) -> Result<(), RuntimeError>;

    /// Kills the kernel and waits until a fresh one is ready.
    async fn restart_kernel(&self) -> Result<(), RuntimeError>;

    /// Runs a file operation on the workspace, inside the sandbox (see
    /// [`WorkspaceAccess::Executor`]). Errors mean the sandbox failed; a failed operation is a
    /// [`FileResult::Failed`](sandbox_protocol::files::FileResult::Failed).
    async fn file(
        &self,
        op: sandbox_protocol::files::FileOp,
    ) -> Result<sandbox_protocol::files::FileResult, RuntimeError>;

    /// Its isolation layers, in plain words (recorded on its session): a layer the runtime
    /// could not set up is named as missing, never left out silently.
    fn isolation(&self) -> String;

    /// False once the sandbox has died or been destroyed.
    fn is_alive(&self) -> bool;

    /// Kills everything in the sandbox and releases its resources. Idempotent.
    async fn destroy(&self);
}
