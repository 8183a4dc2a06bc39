//! The runtime factory: `--runtime` names one, and this builds it from its config section.
//! A new runtime is a module of its own (in `sandbox-runtime`) plus one arm here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sandbox_runtime::docker::{DockerConfig, DockerRuntime};
use sandbox_runtime::local::{LocalConfig, LocalRuntime, RunAs};
use sandbox_runtime::{Runtime, WorkspaceAccess};

use crate::config::{Config, FileAccess, LocalSection, RuntimeKind};
use crate::files::system_dir::SystemDir;

/// The runtime `config` names, for replica `replica`. Never fails: what is wrong is reported
/// by its readiness.
pub async fn build(config: &Config, system: &SystemDir, replica: &str) -> Arc<dyn Runtime> {
    match config.runtime {
        RuntimeKind::Local => Arc::new(local(config, &config.local, system)),
        RuntimeKind::Docker => Arc::new(docker(config, system, replica)),
        RuntimeKind::Kubernetes => kubernetes(config, replica).await,
    }
}

/// The Kubernetes runtime on the cluster found as kubectl finds it (`KUBECONFIG`, the user's
/// kubeconfig, or the pod's service account); a runtime that says why not when there is none.
async fn kubernetes(config: &Config, replica: &str) -> Arc<dyn Runtime> {
    use sandbox_runtime::kubernetes::{spec, KubernetesRuntime, Unavailable};
    let k = &config.kubernetes;
    let settings = (|| -> Result<spec::Settings, String> {
        let workspace = match &k.workspace_claim {
            Some(claim) => spec::WorkspaceVolume::Claim { claim: claim.clone() },
            None => spec::WorkspaceVolume::Scratch { size_bytes: k.workspace_mb << 20 },
        };
        let scratch = if k.workspace_claim.is_some() { 0 } else { k.workspace_mb };
        Ok(spec::Settings {
            namespace: k.namespace.clone(),
            image: k.image.clone(),
            user: k.user,
            replica: replica.to_string(),
            tmp_size_bytes: k.tmp_mb << 20,
            // The workspace and /tmp on the node's disk, and room for the container's logs.
            ephemeral_storage_bytes: (scratch + k.tmp_mb + 256) << 20,
            runtime_class: k.runtime_class.clone(),
            node_selector: spec::parse_node_selector(k.node_selector.as_deref())?,
            tolerations: spec::parse_tolerations(k.tolerations.as_deref())?,
            seccomp: match &k.seccomp_profile {
                Some(path) => spec::Seccomp::Localhost(path.clone()),
                None => spec::Seccomp::RuntimeDefault,
            },
            second_layer: k.second_layer,
            workspace,
        })
    })();
    let settings = match settings {
        Ok(s) => s,
        Err(why) => return Arc::new(Unavailable(why)),
    };
    match KubernetesRuntime::connect(k.kubeconfig.as_deref(), settings, Duration::from_secs_f64(k.start_timeout_s))
        .await
    {
        Ok(runtime) => Arc::new(runtime),
        Err(why) => Arc::new(Unavailable(why)),
    }
}

fn file_access(section: &LocalSection) -> WorkspaceAccess {
    match section.file_access {
        FileAccess::Host => WorkspaceAccess::Host,
        FileAccess::Executor => WorkspaceAccess::Executor,
    }
}

/// The sandbox user of the sandbox image (images/sandbox/Dockerfile).
const IMAGE_UID: u32 = 1000;

fn docker(config: &Config, system: &SystemDir, replica: &str) -> DockerRuntime {
    let section = &config.docker;
    // Containers run as the sandbox user the local runtime would use, or as sandboxd's own
    // user when it is not root. A root sandboxd without that user (in a container of its
    // own, say) uses the image's uid 1000: never root. Workspaces are chowned to it.
    let user = match run_as(&config.local) {
        RunAs::User { uid, gid } => (uid, gid),
        RunAs::Current => (sandbox_sys::real_uid(), sandbox_sys::real_gid()),
        RunAs::Unavailable(why) => {
            tracing::info!("{why}: Docker sandboxes run as uid 1000");
            (IMAGE_UID, IMAGE_UID)
        }
    };
    DockerRuntime::new(DockerConfig {
        host: section.host.clone(),
        image: section.image.clone(),
        dirs: crate::files::workspace::host_layout(&config.data_dir, system),
        state_dir: system.runtime_dir().join("docker"),
        // Containers are labelled with the replica that runs them: at start, a replica removes
        // the orphans of its own earlier boots, never another replica's containers.
        instance: replica.to_string(),
        user,
        second_layer: section.second_layer,
        tmp_size_bytes: config.local.tmp_size_mb << 20,
        ready_timeout: Duration::from_secs(30),
        file_access: file_access(&config.local),
    })
}

fn local(config: &Config, section: &LocalSection, system: &SystemDir) -> LocalRuntime {
    LocalRuntime::new(LocalConfig {
        bwrap: section.bwrap.clone(),
        executor: section.executor.clone().unwrap_or_else(default_executor),
        state_dir: system.runtime_dir(),
        dirs: crate::files::workspace::host_layout(&config.data_dir, system),
        file_access: file_access(section),
        run_as: run_as(section),
        cgroups: section.cgroups,
        tmp_size_bytes: section.tmp_size_mb << 20,
        ready_timeout: Duration::from_secs(10),
    })
}

/// Which host user sandboxes run as: a dedicated one when we are root, else our own.
fn run_as(section: &LocalSection) -> RunAs {
    if sandbox_sys::real_uid() != 0 {
        return RunAs::Current;
    }
    let user = &section.sandbox_user;
    match sandbox_sys::lookup_user(user) {
        Ok(Some((uid, gid))) if uid != 0 => RunAs::User { uid, gid },
        Ok(Some(_)) => RunAs::Unavailable(format!("sandbox user {user:?} is root; pick an unprivileged user")),
        Ok(None) => RunAs::Unavailable(format!(
            "sandbox user {user:?} does not exist; create it (useradd --system --no-create-home {user}) or pass --sandbox-user"
        )),
        Err(e) => RunAs::Unavailable(format!("cannot look up sandbox user {user:?}: {e}")),
    }
}

/// The executor next to the running binary (sandboxd's, in a release).
fn default_executor() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sandbox-executor")))
        .unwrap_or_else(|| PathBuf::from("sandbox-executor"))
}
