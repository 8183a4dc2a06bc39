//! Runtimes: where a sandbox runs and how sandboxd drives the executor inside it.
//!
//! [`Runtime`] creates [`Sandbox`]es; a sandbox runs executions through the executor protocol
//! ([`executor_client`]). The [`local`] runtime (bubblewrap + cgroups + the executor's seccomp)
//! is the embedded default; [`fake`] is an in-memory stand-in for tests of the layers above.

pub mod bwrap;
pub mod cgroup;
pub mod docker;
pub mod error;
pub mod executor_client;
pub mod fake;
pub mod install;
pub mod kubernetes;
pub mod layout;
pub mod local;
pub mod measured;
pub mod runtime;
pub mod start_queue;

pub use error::RuntimeError;
pub use executor_client::{ExecutorClient, OutputSink};
pub use layout::HostLayout;
pub use runtime::{
    Dir, ExecOutcome, InstallOutcome, KeptSandbox, LimitKind, PackageInstall, ReadOnlyMount, Readiness, ResourceLimits,
    Runtime, Sandbox, SandboxSpec, WorkspaceAccess,
};
pub use start_queue::StartQueue;
