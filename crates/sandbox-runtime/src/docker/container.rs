//! The container a sandbox is: what sandboxd asks the Docker engine for, built as plain data
//! so that every field can be checked without an engine.
//!
//! The container is the first isolation layer: no network, no capabilities, no new
//! privileges, a seccomp profile of our own ([`SECCOMP_PROFILE`]), a read-only root, limits on
//! memory (no swap), CPU and processes, and a non-root user. Inside it, the executor runs
//! under bubblewrap (the second layer, the same command line the local runtime uses) unless
//! the engine cannot give bubblewrap its namespaces; then the executor runs alone, with only
//! its own seccomp filter beneath the container, and readiness says so.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};

use crate::bwrap::{self, Layout, RoBind};
use crate::runtime::{PackageInstall, ResourceLimits};

/// Docker's default profile's shape, with exactly the calls bubblewrap needs added (made by
/// `scripts/seccomp-profile.py`, which says what is allowed and why).
pub const SECCOMP_PROFILE: &str = include_str!("seccomp.json");

/// The layers of a sandbox container in plain words; `missing_second_layer` says why
/// bubblewrap is not among them.
pub fn layers(missing_second_layer: Option<&str>) -> String {
    let container = "container (no network, no capabilities, seccomp, read-only root, limits)";
    match missing_second_layer {
        None => format!("{container} + bubblewrap + executor seccomp"),
        Some(why) => format!("{container} + executor seccomp; NO bubblewrap layer: {why}"),
    }
}

/// Where Debian (and so the image, and its pip) keeps the TLS roots.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where the image keeps the executor and its init.
pub const EXECUTOR_IN_IMAGE: &str = "/usr/local/bin/sandbox-executor";
pub const INIT_IN_IMAGE: &str = "/usr/bin/tini";

/// The labels every container of ours carries: found by them after a restart.
pub const LABEL_INSTANCE: &str = "org.sandbox-platform.instance";
pub const LABEL_BOOT: &str = "org.sandbox-platform.boot";
pub const LABEL_SANDBOX: &str = "org.sandbox-platform.sandbox";
pub const LABEL_TEMPLATE: &str = "org.sandbox-platform.template";
pub const LABEL_TENANT: &str = "org.sandbox-platform.tenant";
pub const LABEL_ROLE: &str = "org.sandbox-platform.role";

/// CFS period for the CPU quota, microseconds (the kernel's default).
const CPU_PERIOD_US: i64 = 100_000;
/// Log size kept per container: the executor writes only its own faults to stderr.
const LOG_MAX_SIZE: &str = "1m";

/// What every container of this runtime shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub image: String,
    /// The uid and gid the container runs as (never 0).
    pub user: (u32, u32),
    /// Identifies this sandboxd (its data dir) among the engine's containers.
    pub instance: String,
    /// Identifies this run of it: containers of another boot are orphans.
    pub boot: String,
    pub tmp_size_bytes: u64,
}

/// A directory of sandboxd's, as the engine sees it, shown at `target` inside.
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// Who a sandbox is for, for its labels.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub sandbox: String,
    pub template: Option<String>,
    pub tenant: Option<String>,
}

fn bind_mount(b: &Bind) -> Mount {
    Mount {
        target: Some(b.target.clone()),
        source: Some(b.source.clone()),
        typ: Some(MountType::BIND),
        read_only: Some(b.read_only),
        ..Default::default()
    }
}

fn labels(s: &Settings, owner: &Owner, role: &str) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (LABEL_INSTANCE.to_string(), s.instance.clone()),
        (LABEL_BOOT.to_string(), s.boot.clone()),
        (LABEL_SANDBOX.to_string(), owner.sandbox.clone()),
        (LABEL_ROLE.to_string(), role.to_string()),
    ]);
    if let Some(t) = &owner.template {
        l.insert(LABEL_TEMPLATE.to_string(), t.clone());
    }
    if let Some(t) = &owner.tenant {
        l.insert(LABEL_TENANT.to_string(), t.clone());
    }
    l
}

/// What both kinds of container share: no capabilities, no new privileges, a read-only root,
/// limits, a sized `/tmp`, bounded logs, a non-root user, removed when it exits.
fn locked_down(limits: &ResourceLimits, tmp_bytes: u64, mounts: &[Bind]) -> HostConfig {
    let memory = limits.memory_bytes as i64;
    HostConfig {
        // No capability: the second layer needs none (bubblewrap makes a user namespace,
        // where it holds capabilities over its own namespaces only), nor does the executor.
        cap_drop: Some(vec!["ALL".into()]),
        readonly_rootfs: Some(true),
        memory: Some(memory),
        // Equal to the memory limit: no swap, so the limit is what the sandbox can hold.
        memory_swap: Some(memory),
        cpu_period: Some(CPU_PERIOD_US),
        cpu_quota: Some(((limits.cpus * CPU_PERIOD_US as f64) as i64).max(1000)),
        pids_limit: Some(limits.pids as i64),
        tmpfs: Some(HashMap::from([("/tmp".to_string(), format!("rw,nosuid,nodev,size={tmp_bytes}"))])),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                ("max-file".to_string(), "1".to_string()),
            ])),
        }),
        mounts: Some(mounts.iter().map(bind_mount).collect()),
        // A container is one sandbox's life: gone when its executor exits, which it does when
        // sandboxd's attach stream closes (sandboxd died), so nothing outlives a crash long.
        auto_remove: Some(true),
        // tini from the image is PID 1 (the entrypoint below), not the engine's docker-init.
        init: Some(false),
        ..Default::default()
    }
}

/// The container of one sandbox. `workspace` and `mounts` are the engine's paths of the
/// workspace and of the read-only directories (with their targets inside).
pub fn sandbox(
    s: &Settings,
    owner: &Owner,
    limits: &ResourceLimits,
    workspace: &str,
    mounts: &[Bind],
    second_layer: bool,
) -> ContainerCreateBody {
    let mut binds =
        vec![Bind { source: workspace.to_string(), target: sandbox_protocol::WORKSPACE_DIR.into(), read_only: false }];
    binds.extend(mounts.iter().cloned());
    // The inner layer's /tmp and /dev/shm are sized from the memory limit as the local
    // runtime's are; the container's own /tmp holds only bubblewrap's scratch root.
    let mut host = locked_down(limits, s.tmp_size_bytes.min(limits.memory_bytes / 2).max(1 << 20), &binds);
    host.network_mode = Some("none".into());
    host.security_opt = Some(vec!["no-new-privileges:true".into(), format!("seccomp={}", SECCOMP_PROFILE.trim())]);
    let cmd = if second_layer {
        // bubblewrap mounts a fresh /proc for its PID namespace (the executor is PID 1 there
        // and finds what to reap and kill in it). The kernel refuses that mount while the
        // engine's masks cover parts of the container's /proc, so the masks go, for the
        // container only: code runs inside the inner layer and sees the fresh /proc, whose
        // sensitive files bubblewrap covers read-only again (ARCHITECTURE.md measures what
        // is left).
        host.masked_paths = Some(Vec::new());
        host.readonly_paths = Some(Vec::new());
        let layout = Layout::merged_usr_image(EXECUTOR_IN_IMAGE.into(), s.tmp_size_bytes);
        let inner: Vec<RoBind> =
            mounts.iter().map(|m| RoBind { source: m.target.clone().into(), target: m.target.clone() }).collect();
        let mut cmd = vec!["bwrap".to_string()];
        cmd.extend(
            bwrap::args(&layout, std::path::Path::new(sandbox_protocol::WORKSPACE_DIR), &inner, limits.memory_bytes)
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        cmd
    } else {
        vec![EXECUTOR_IN_IMAGE.to_string()]
    };
    ContainerCreateBody {
        image: Some(s.image.clone()),
        entrypoint: Some(vec![INIT_IN_IMAGE.into(), "--".into()]),
        cmd: Some(cmd),
        user: Some(format!("{}:{}", s.user.0, s.user.1)),
        working_dir: Some(sandbox_protocol::WORKSPACE_DIR.into()),
        hostname: Some("sandbox".into()),
        env: Some(vec![format!("PATH={}", sandbox_protocol::SANDBOX_PATH), "LANG=C.UTF-8".into()]),
        // The executor's protocol runs over the attach stream: stdin stays open while
        // sandboxd is attached, and closes (ending the executor) when it detaches.
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        labels: Some(labels(s, owner, "sandbox")),
        host_config: Some(host),
        ..Default::default()
    }
}

/// A package installation's container: short-lived, with the default bridge network (pip
/// must reach the index), Docker's own default seccomp profile (no namespaces needed), and
/// nothing writable but the target and pip's cache. Wheels only, so no package code runs.
/// `ca_bundle` (the engine's path of a copy of sandboxd's host's TLS roots) replaces the
/// image's: pip trusts what the host trusts, as in the local runtime, where installs see the
/// host's `/etc/ssl` (a TLS-inspecting proxy's root, say).
pub fn install(
    s: &Settings,
    owner: &Owner,
    req: &PackageInstall,
    target: &str,
    cache: &str,
    ca_bundle: Option<&str>,
) -> ContainerCreateBody {
    let mut binds = vec![
        Bind { source: target.to_string(), target: bwrap::INSTALL_TARGET.into(), read_only: false },
        Bind { source: cache.to_string(), target: bwrap::INSTALL_CACHE.into(), read_only: false },
    ];
    if let Some(bundle) = ca_bundle {
        binds.push(Bind { source: bundle.to_string(), target: CA_BUNDLE.into(), read_only: true });
    }
    let mut host = locked_down(&req.limits, crate::install::TMP_BYTES, &binds);
    host.network_mode = Some("bridge".into());
    host.security_opt = Some(vec!["no-new-privileges:true".into()]);
    host.auto_remove = Some(false);
    let cmd = bwrap::pip_command(req);
    ContainerCreateBody {
        image: Some(s.image.clone()),
        entrypoint: Some(vec![INIT_IN_IMAGE.into(), "--".into()]),
        cmd: Some(cmd),
        user: Some(format!("{}:{}", s.user.0, s.user.1)),
        working_dir: Some("/tmp".into()),
        env: Some(vec!["HOME=/tmp".into(), format!("PATH={}", sandbox_protocol::SANDBOX_PATH), "LANG=C.UTF-8".into()]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        labels: Some(labels(s, owner, "install")),
        host_config: Some(host),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            image: "sandbox-platform/sandbox:latest".into(),
            user: (999, 998),
            instance: "abcd1234".into(),
            boot: "boot-1".into(),
            tmp_size_bytes: 256 << 20,
        }
    }

    fn owner() -> Owner {
        Owner { sandbox: "s1".into(), template: Some("default".into()), tenant: Some("acme".into()) }
    }

    const LIMITS: ResourceLimits = ResourceLimits { memory_bytes: 512 << 20, pids: 128, cpus: 1.5 };

    fn session(second_layer: bool) -> ContainerCreateBody {
        let mounts = [Bind { source: "/data/packages/s1".into(), target: "/opt/packages".into(), read_only: true }];
        sandbox(&settings(), &owner(), &LIMITS, "/data/workspaces/s1", &mounts, second_layer)
    }

    #[test]
    fn a_sandbox_container_is_locked_down_field_by_field() {
        let c = session(true);
        let h = c.host_config.clone().unwrap_or_default();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(c.network_disabled, Some(true));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.cap_add, None, "no capability is added back");
        assert_eq!(h.privileged, None);
        let opts = h.security_opt.clone().unwrap_or_default();
        assert_eq!(opts[0], "no-new-privileges:true");
        assert!(opts[1].starts_with("seccomp={") && !opts.iter().any(|o| o.contains("unconfined")), "{opts:?}");
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!((h.memory, h.memory_swap), (Some(512 << 20), Some(512 << 20)), "no swap");
        assert_eq!((h.cpu_period, h.cpu_quota), (Some(100_000), Some(150_000)));
        assert_eq!(h.pids_limit, Some(128));
        let tmp = h.tmpfs.clone().unwrap_or_default();
        assert_eq!(tmp.get("/tmp").map(String::as_str), Some("rw,nosuid,nodev,size=268435456"));
        let log = h.log_config.clone().unwrap_or_default();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap_or_default().get("max-size").map(String::as_str), Some("1m"));
        assert_eq!(c.user.as_deref(), Some("999:998"), "never root");
        assert_eq!(c.entrypoint, Some(vec!["/usr/bin/tini".to_string(), "--".to_string()]), "tini reaps");
        assert_eq!((c.open_stdin, c.stdin_once, c.tty), (Some(true), Some(true), Some(false)));
        assert_eq!(h.auto_remove, Some(true));
        let labels = c.labels.clone().unwrap_or_default();
        for (k, v) in [
            (LABEL_INSTANCE, "abcd1234"),
            (LABEL_BOOT, "boot-1"),
            (LABEL_SANDBOX, "s1"),
            (LABEL_TEMPLATE, "default"),
            (LABEL_TENANT, "acme"),
            (LABEL_ROLE, "sandbox"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
    }

    #[test]
    fn the_workspace_is_the_only_writable_mount() {
        let h = session(true).host_config.unwrap_or_default();
        let mounts = h.mounts.unwrap_or_default();
        let shown: Vec<(String, String, bool)> = mounts
            .iter()
            .map(|m| {
                (m.source.clone().unwrap_or_default(), m.target.clone().unwrap_or_default(), m.read_only == Some(true))
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("/data/workspaces/s1".into(), "/workspace".into(), false),
                ("/data/packages/s1".into(), "/opt/packages".into(), true)
            ]
        );
        assert!(mounts.iter().all(|m| m.typ == Some(MountType::BIND)));
    }

    #[test]
    fn the_second_layer_is_bubblewrap_with_a_fresh_proc_and_without_it_the_masks_stay() {
        let with = session(true);
        let cmd = with.cmd.clone().unwrap_or_default().join(" ");
        assert!(cmd.starts_with("bwrap --unshare-all --unshare-user --disable-userns"), "{cmd}");
        assert!(cmd.contains("--proc /proc") && cmd.contains("--as-pid-1"), "{cmd}");
        assert!(
            cmd.contains("--bind /workspace /workspace --ro-bind /usr/local/bin/sandbox-executor /.sandbox/executor")
        );
        assert!(cmd.contains("--ro-bind /opt/packages /opt/packages"), "{cmd}");
        assert!(cmd.contains("--ro-bind /opt/sandbox/etc /etc"), "an /etc of its own: {cmd}");
        assert!(!cmd.contains("--info-fd"), "nothing holds bwrap inside a container: {cmd}");
        let h = with.host_config.unwrap_or_default();
        assert_eq!((h.masked_paths, h.readonly_paths), (Some(vec![]), Some(vec![])));

        let without = session(false);
        assert_eq!(without.cmd, Some(vec![EXECUTOR_IN_IMAGE.to_string()]));
        let h = without.host_config.unwrap_or_default();
        assert_eq!((h.masked_paths, h.readonly_paths), (None, None), "the engine's masks stay");
    }

    #[test]
    fn an_install_has_a_network_and_only_its_target_and_cache_writable() {
        let req = PackageInstall {
            name: "s1".into(),
            packages: vec!["six==1.17.0".into()],
            into: crate::Dir::SessionPackages("s1".into()),
            index_url: None,
            limits: LIMITS,
            timeout: std::time::Duration::from_secs(60),
        };
        let c = install(&settings(), &owner(), &req, "/data/packages/s1", "/data/pip-cache", Some("/data/ca.crt"));
        let h = c.host_config.clone().unwrap_or_default();
        assert_eq!(h.network_mode.as_deref(), Some("bridge"));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.security_opt, Some(vec!["no-new-privileges:true".to_string()]), "Docker's default seccomp");
        assert_eq!(h.readonly_rootfs, Some(true));
        let writable: Vec<String> = h
            .mounts
            .clone()
            .unwrap_or_default()
            .iter()
            .filter(|m| m.read_only != Some(true))
            .filter_map(|m| m.target.clone())
            .collect();
        assert_eq!(writable, ["/target", "/cache"]);
        let mounts = h.mounts.clone().unwrap_or_default();
        let ca = mounts.iter().find(|m| m.target.as_deref() == Some(CA_BUNDLE));
        assert_eq!(ca.and_then(|m| m.source.as_deref()), Some("/data/ca.crt"), "the host's TLS roots, read-only");
        let cmd = c.cmd.unwrap_or_default().join(" ");
        assert!(cmd.contains("--only-binary :all:") && cmd.ends_with("-- six==1.17.0"), "{cmd}");
        assert_eq!(c.labels.unwrap_or_default().get(LABEL_ROLE).map(String::as_str), Some("install"));
    }

    #[test]
    fn the_profile_adds_exactly_the_namespace_calls_to_an_allowlist() {
        let p: serde_json::Value = serde_json::from_str(SECCOMP_PROFILE).unwrap_or_default();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO", "an allowlist");
        let allowed: Vec<&str> = p["syscalls"][0]["names"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(p["syscalls"][0]["action"], "SCMP_ACT_ALLOW");
        for call in ["unshare", "clone", "mount", "umount2", "pivot_root", "setns", "read", "execve"] {
            assert!(allowed.contains(&call), "{call} must be allowed");
        }
        for call in
            ["bpf", "keyctl", "kexec_load", "init_module", "ptrace", "io_uring_setup", "open_by_handle_at", "clone3"]
        {
            assert!(!allowed.contains(&call), "{call} must not be allowed");
        }
    }
}
