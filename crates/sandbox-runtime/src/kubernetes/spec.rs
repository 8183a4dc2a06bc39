//! The objects the Kubernetes runtime sends to the API server, built as plain data: a sandbox's
//! Pod and the Secret that holds its executor's token, and the NetworkPolicy that fences every
//! sandbox pod of a namespace (the chart ships the same one). Tests check them field by field
//! and against the API's JSON schemas (`tests/kubernetes/validate.py`).
//!
//! A sandbox pod is locked down as a Docker sandbox container is: a fixed non-root uid and gid
//! (`fsGroup` too), no privilege escalation, every capability dropped, a read-only root
//! filesystem with `/tmp` an `emptyDir` of a set size, no service account token, no host
//! namespace, no service links, `restartPolicy: Never`, requests equal to limits (CPU, memory,
//! ephemeral storage) so the node reserves what the session may use. DNS points at nothing
//! (`dnsPolicy: None` needs one nameserver: loopback, where none answers) and the
//! NetworkPolicy lets in sandboxd's pods alone, to the executor's port, and lets nothing out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PersistentVolumeClaimVolumeSource, Pod, PodDNSConfig, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use crate::bwrap::{self, Layout};
use crate::ResourceLimits;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "sandboxd";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_SANDBOX: &str = "sandbox-platform.org/sandbox";
pub const LABEL_TENANT: &str = "sandbox-platform.org/tenant";
pub const LABEL_TEMPLATE: &str = "sandbox-platform.org/template";
pub const LABEL_REPLICA: &str = "sandbox-platform.org/replica";
/// The label of sandboxd's own pods (the chart sets it): the only peers let in.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const SANDBOXD_NAME: &str = "sandboxd";

/// The key of the executor's token in a sandbox's Secret.
pub const TOKEN_KEY: &str = "token";
const CONTAINER: &str = "sandbox";
/// Where the image keeps the executor (as the Docker image does). It is the container's PID 1
/// itself, not under the image's init: the container's environment holds the executor's
/// token, and an init's `/proc/1/environ` is readable by code of the same uid, where the
/// executor's is not (it is not dumpable). The executor reaps orphans as an init does.
pub const EXECUTOR_IN_IMAGE: &str = "/usr/local/bin/sandbox-executor";

/// How sandbox pods are confined beyond the container's own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    /// The container runtime's default profile (no second layer inside: it refuses the user
    /// namespace bubblewrap needs).
    RuntimeDefault,
    /// A profile already on every node, under the kubelet's seccomp directory (the chart's
    /// DaemonSet installs ours, the Docker runtime's rules).
    Localhost(String),
}

/// Where a sandbox's `/workspace` is.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkspaceVolume {
    /// An `emptyDir` of this size, filled from S3 storage at start and written back.
    Scratch { size_bytes: u64 },
    /// A directory (`sub_path`, the workspace's name) of a ReadWriteMany claim that every
    /// sandbox pod mounts (JuiceFS CSI, NFS, ...).
    Claim { claim: String },
}

/// What every sandbox pod of this runtime shares (from `[kubernetes]` in the config).
#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub image: String,
    /// The uid and gid sandboxes run as (never 0).
    pub user: (u32, u32),
    /// The replica that creates the pods, for their labels.
    pub replica: String,
    pub tmp_size_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub runtime_class: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub seccomp: Seccomp,
    /// Whether the second layer (bubblewrap inside the pod) runs: needs [`Seccomp::Localhost`]
    /// and a cluster with user namespaces for pods (`hostUsers: false`).
    pub second_layer: bool,
    pub workspace: WorkspaceVolume,
}

impl Default for Settings {
    /// The sandbox image's user, 256 MiB of /tmp, a 1 GiB emptyDir workspace, RuntimeDefault
    /// seccomp and no second layer, in namespace `sandboxes`.
    fn default() -> Self {
        Settings {
            namespace: "sandboxes".into(),
            image: "sandbox-platform/sandbox:latest".into(),
            user: (1000, 1000),
            replica: String::new(),
            tmp_size_bytes: 256 << 20,
            ephemeral_storage_bytes: 1536 << 20,
            runtime_class: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            seccomp: Seccomp::RuntimeDefault,
            second_layer: false,
            workspace: WorkspaceVolume::Scratch { size_bytes: 1 << 30 },
        }
    }
}

/// Who a sandbox is for.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub sandbox: String,
    pub template: Option<String>,
    pub tenant: Option<String>,
}

/// The name of sandbox `sandbox`'s pod and secret: a DNS label (`ses_0190ab...` becomes
/// `sbx-ses-0190ab...`), at most 63 characters.
pub fn object_name(sandbox: &str) -> String {
    let mut name: String = format!("sbx-{sandbox}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(63)
        .collect();
    while name.ends_with('-') {
        name.pop();
    }
    name
}

/// The name of one start of sandbox `sandbox`'s pod (and its token's Secret): its
/// [`object_name`] and `suffix`, unique per start, so that a new pod never waits for an old
/// one's deletion to finish.
pub fn pod_name(sandbox: &str, suffix: &str) -> String {
    let base: String = object_name(sandbox).chars().take(62 - suffix.len()).collect();
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

/// `value` as a label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending with a letter
/// or digit (anything else becomes `-`).
pub fn label_value(value: &str) -> String {
    let mapped: String =
        value.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).take(63).collect();
    mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// Node labels from a JSON object (`{"pool": "sandboxes"}`); none: any node.
pub fn parse_node_selector(json: Option<&str>) -> Result<BTreeMap<String, String>, String> {
    json.map_or(Ok(BTreeMap::new()), |j| {
        serde_json::from_str(j).map_err(|e| format!("node selector {j:?}: expected a JSON object of strings: {e}"))
    })
}

/// Tolerations from the API's JSON list; none: no toleration.
pub fn parse_tolerations(json: Option<&str>) -> Result<Vec<Toleration>, String> {
    json.map_or(Ok(Vec::new()), |j| {
        serde_json::from_str(j).map_err(|e| format!("tolerations {j:?}: expected the API's JSON list: {e}"))
    })
}

fn labels(s: &Settings, owner: &Owner) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_COMPONENT.to_string(), "sandbox".to_string()),
        (LABEL_SANDBOX.to_string(), label_value(&owner.sandbox)),
        (LABEL_REPLICA.to_string(), label_value(&s.replica)),
    ]);
    for (key, value) in [(LABEL_TEMPLATE, &owner.template), (LABEL_TENANT, &owner.tenant)] {
        if let Some(v) = value {
            l.insert(key.to_string(), label_value(v));
        }
    }
    l
}

fn bytes(n: u64) -> Quantity {
    Quantity(n.to_string())
}

/// CPU in millicores, at least one.
fn cpu(cpus: f64) -> Quantity {
    Quantity(format!("{}m", ((cpus * 1000.0).round() as u64).max(1)))
}

/// The Secret `name` (its pod's name) holding sandbox `owner`'s executor token; `pod` (once created) owns it, so it
/// goes when the pod goes.
pub fn token_secret(s: &Settings, owner: &Owner, name: &str, token: &str, pod: Option<OwnerReference>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(s, owner)),
            owner_references: pod.map(|p| vec![p]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), ByteString(token.as_bytes().to_vec()))])),
        ..Default::default()
    }
}

/// Pod `name` ([`pod_name`]) of one sandbox: the executor as its PID 1, listening on the
/// executor's port for sandboxd's pods (with the second layer: its relay, the executor under
/// bubblewrap).
pub fn sandbox_pod(s: &Settings, owner: &Owner, name: &str, limits: &ResourceLimits, image: Option<&str>) -> Pod {
    let name = name.to_string();
    let resources = BTreeMap::from([
        ("cpu".to_string(), cpu(limits.cpus)),
        ("memory".to_string(), bytes(limits.memory_bytes)),
        ("ephemeral-storage".to_string(), bytes(s.ephemeral_storage_bytes)),
    ]);
    let token = EnvVar {
        name: sandbox_protocol::TOKEN_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.clone(),
                key: TOKEN_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let env = vec![
        EnvVar { name: "PATH".into(), value: Some(sandbox_protocol::SANDBOX_PATH.into()), ..Default::default() },
        EnvVar { name: "LANG".into(), value: Some("C.UTF-8".into()), ..Default::default() },
        EnvVar {
            name: sandbox_protocol::LISTEN_ENV.into(),
            value: Some(format!("0.0.0.0:{}", sandbox_protocol::EXECUTOR_PORT)),
            ..Default::default()
        },
        token,
    ];
    let (workspace_volume, sub_path) = match &s.workspace {
        WorkspaceVolume::Scratch { size_bytes } => (
            Volume {
                name: "workspace".into(),
                empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(bytes(*size_bytes)), medium: None }),
                ..Default::default()
            },
            None,
        ),
        WorkspaceVolume::Claim { claim } => (
            Volume {
                name: "workspace".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            },
            Some(owner.sandbox.clone()),
        ),
    };
    let tmp = Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(bytes(s.tmp_size_bytes)), medium: None }),
        ..Default::default()
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image.unwrap_or(&s.image).to_string()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![EXECUTOR_IN_IMAGE.into()]),
        args: (s.second_layer).then(|| relay_args(s, limits)),
        working_dir: Some(sandbox_protocol::WORKSPACE_DIR.into()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("executor".into()),
            container_port: i32::from(sandbox_protocol::EXECUTOR_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            // bubblewrap mounts a fresh /proc for its PID namespace, which the masks refuse;
            // only with a user namespace of the pod's own (`hostUsers: false`).
            proc_mount: s.second_layer.then(|| "Unmasked".into()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "workspace".into(),
                mount_path: sandbox_protocol::WORKSPACE_DIR.into(),
                sub_path,
                ..Default::default()
            },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
        ]),
        stdin: Some(false),
        tty: Some(false),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let seccomp = match &s.seccomp {
        Seccomp::RuntimeDefault => SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None },
        Seccomp::Localhost(path) => SeccompProfile { type_: "Localhost".into(), localhost_profile: Some(path.clone()) },
    };
    let (uid, gid) = (i64::from(s.user.0), i64::from(s.user.1));
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(s, owner)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            host_users: s.second_layer.then_some(false),
            share_process_namespace: Some(false),
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some(vec!["127.0.0.1".into()]),
                searches: Some(Vec::new()),
                options: None,
            }),
            runtime_class_name: s.runtime_class.clone(),
            node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
            tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(uid),
                run_as_group: Some(gid),
                fs_group: Some(gid),
                seccomp_profile: Some(seccomp),
                ..Default::default()
            }),
            // The executor ends its processes at once on a shutdown; nothing to wait for.
            termination_grace_period_seconds: Some(5),
            volumes: Some(vec![workspace_volume, tmp]),
            ..Default::default()
        }),
        status: None,
    }
}

/// With the second layer, the executor's arguments: run as the relay, which listens on the
/// pod's network in front of the executor under bubblewrap (the Docker runtime's inner command
/// line), which has no network at all.
fn relay_args(s: &Settings, limits: &ResourceLimits) -> Vec<String> {
    let layout = Layout::merged_usr_image(EXECUTOR_IN_IMAGE.into(), s.tmp_size_bytes);
    let workspace = std::path::Path::new(sandbox_protocol::WORKSPACE_DIR);
    let mut args: Vec<String> = ["relay", "--", "bwrap"].map(String::from).into();
    args.extend(
        bwrap::args(&layout, workspace, &[], limits.memory_bytes).into_iter().map(|a| a.to_string_lossy().into_owned()),
    );
    args
}

/// The NetworkPolicy of the sandbox namespace: sandbox pods take connections from sandboxd's
/// pods (in `sandboxd_namespace`) on the executor's port alone, and open none.
pub fn sandbox_network_policy(namespace: &str, sandboxd_namespace: &str) -> NetworkPolicy {
    let sandboxes = LabelSelector {
        match_labels: Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (LABEL_COMPONENT.to_string(), "sandbox".to_string()),
        ])),
        ..Default::default()
    };
    let sandboxd = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(LABEL_NAME.to_string(), SANDBOXD_NAME.to_string())])),
            ..Default::default()
        }),
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                sandboxd_namespace.to_string(),
            )])),
            ..Default::default()
        }),
        ip_block: None,
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some("sandboxes".into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(sandboxes),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![sandboxd]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(sandbox_protocol::EXECUTOR_PORT))),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            // No rule: no egress at all (DNS included).
            egress: Some(Vec::new()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings() -> Settings {
        Settings {
            image: "registry.example/sandbox:1".into(),
            user: (10001, 10001),
            replica: "replica-a".into(),
            tmp_size_bytes: 64 << 20,
            ephemeral_storage_bytes: 1 << 30,
            ..Settings::default()
        }
    }

    pub(crate) fn owner() -> Owner {
        Owner { sandbox: "ses_0190AB_cd".into(), template: Some("data science".into()), tenant: Some("acme".into()) }
    }

    const LIMITS: ResourceLimits = ResourceLimits { memory_bytes: 512 << 20, pids: 128, cpus: 1.5 };

    #[test]
    fn names_and_labels_are_what_the_api_accepts() {
        assert_eq!(object_name("ses_0190AB_cd"), "sbx-ses-0190ab-cd");
        assert_eq!(object_name(&"x".repeat(100)).len(), 63);
        assert_eq!(object_name("run_"), "sbx-run");
        assert_eq!(pod_name("ses_0190AB_cd", "a1b2c3"), "sbx-ses-0190ab-cd-a1b2c3");
        assert_eq!(pod_name(&"x".repeat(100), "a1b2c3").len(), 63);
        assert_eq!(label_value("data science"), "data-science");
        assert_eq!(label_value("-a/b-"), "a-b");
        assert_eq!(label_value(&"y".repeat(80)).len(), 63);
    }

    #[test]
    fn a_sandbox_pod_is_locked_down() {
        let pod = sandbox_pod(&settings(), &owner(), "sbx-ses-0190ab-cd", &LIMITS, None);
        let spec = pod.spec.expect("spec");
        assert_eq!(pod.metadata.name.as_deref(), Some("sbx-ses-0190ab-cd"));
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels[LABEL_SANDBOX], "ses_0190AB_cd");
        assert_eq!((labels[LABEL_TENANT].as_str(), labels[LABEL_TEMPLATE].as_str()), ("acme", "data-science"));
        assert_eq!(labels[LABEL_REPLICA], "replica-a");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!((spec.host_network, spec.host_pid, spec.host_ipc), (Some(false), Some(false), Some(false)));
        assert_eq!(spec.dns_policy.as_deref(), Some("None"));
        let pod_security = spec.security_context.expect("pod security");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            (pod_security.run_as_user, pod_security.run_as_group, pod_security.fs_group),
            (Some(10001), Some(10001), Some(10001))
        );
        assert_eq!(pod_security.seccomp_profile.expect("seccomp").type_, "RuntimeDefault");
        assert_eq!(spec.host_users, None, "without the second layer the pod shares the host's users");
        let c = &spec.containers[0];
        let security = c.security_context.as_ref().expect("security");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_string()]));
        assert_eq!(security.proc_mount, None);
        assert_eq!(c.command, Some(vec![EXECUTOR_IN_IMAGE.to_string()]), "the executor is PID 1 and listens");
        assert_eq!(c.args, None);
        let resources = c.resources.as_ref().expect("resources");
        assert_eq!(resources.requests, resources.limits, "the node reserves what the session may use");
        let limits = resources.limits.as_ref().expect("limits");
        assert_eq!(limits["cpu"].0, "1500m");
        assert_eq!(limits["memory"].0, (512u64 << 20).to_string());
        let env = c.env.as_ref().expect("env");
        let token = env.iter().find(|e| e.name == sandbox_protocol::TOKEN_ENV).expect("token");
        assert!(token.value.is_none(), "the token comes from the Secret, never in the pod spec");
        let from = token.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()).expect("secret ref");
        assert_eq!((from.name.as_str(), from.key.as_str()), ("sbx-ses-0190ab-cd", TOKEN_KEY));
        let volumes = spec.volumes.expect("volumes");
        let tmp = volumes.iter().find(|v| v.name == "tmp").and_then(|v| v.empty_dir.clone()).expect("tmp");
        assert_eq!(tmp.size_limit, Some(Quantity((64u64 << 20).to_string())));
    }

    #[test]
    fn the_second_layer_needs_a_user_namespace_and_an_unmasked_proc() {
        let s = Settings {
            second_layer: true,
            seccomp: Seccomp::Localhost("sandbox-platform/seccomp.json".into()),
            runtime_class: Some("gvisor".into()),
            workspace: WorkspaceVolume::Claim { claim: "workspaces".into() },
            ..settings()
        };
        let pod = sandbox_pod(&s, &owner(), "sbx-ses-0190ab-cd", &LIMITS, Some("acme/data:1"));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.host_users, Some(false));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        let profile = spec.security_context.and_then(|p| p.seccomp_profile).expect("seccomp");
        assert_eq!(
            (profile.type_.as_str(), profile.localhost_profile.as_deref()),
            ("Localhost", Some("sandbox-platform/seccomp.json"))
        );
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("acme/data:1"), "a template's own image");
        assert_eq!(c.security_context.as_ref().and_then(|s| s.proc_mount.as_deref()), Some("Unmasked"));
        let args = c.args.clone().expect("args").join(" ");
        assert!(
            args.starts_with("relay -- bwrap --unshare-all --unshare-user --disable-userns"),
            "the relay listens, the executor runs under bubblewrap: {args}"
        );
        assert!(!args.contains("--share-net"), "code has no network at all: {args}");
        assert!(args.ends_with("--clearenv -- /.sandbox/executor"), "{args}");
        let workspace =
            c.volume_mounts.as_ref().and_then(|m| m.iter().find(|m| m.name == "workspace").cloned()).expect("mount");
        assert_eq!(workspace.sub_path.as_deref(), Some("ses_0190AB_cd"), "its own directory of the shared claim");
    }

    #[test]
    fn sandboxes_take_connections_from_sandboxd_alone_and_open_none() {
        let policy = sandbox_network_policy("sandboxes", "platform");
        let spec = policy.spec.expect("spec");
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string(), "Egress".to_string()]));
        assert_eq!(spec.egress, Some(Vec::new()));
        let ingress = spec.ingress.expect("ingress");
        assert_eq!(ingress.len(), 1);
        let port = ingress[0].ports.as_ref().and_then(|p| p[0].port.clone());
        assert_eq!(port, Some(IntOrString::Int(i32::from(sandbox_protocol::EXECUTOR_PORT))));
    }

    #[test]
    fn the_token_secret_is_immutable_and_owned_by_its_pod() {
        let pod = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "sbx-ses-0190ab-cd".into(),
            uid: "6f1c".into(),
            controller: None,
            block_owner_deletion: None,
        };
        let secret = token_secret(&settings(), &owner(), "sbx-ses-0190ab-cd", "s3cret", Some(pod));
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.data.expect("data")[TOKEN_KEY].0, b"s3cret");
        assert_eq!(secret.metadata.owner_references.expect("owner")[0].kind, "Pod");
    }
}
