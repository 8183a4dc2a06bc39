//! The Kubernetes runtime (issue 20, in progress): each sandbox a hardened Pod ([`spec`]), its
//! executor reached over the pod network with a token of its own
//! (`sandbox_executor::network`), never through the API server's attach: with `stdinOnce` a
//! pod's stdin closes when the first attach ends, so a sandbox would die with the replica that
//! attached it, and every execution's bytes would cross the API server. Over TCP, a replica
//! that adopts a lost one's sessions connects to their executors again.
//!
//! A start creates the token's Secret, then the Pod, then makes the Pod the Secret's owner (so
//! the cluster deletes the Secret with it); watches the Pod (a watch, never a sleep loop) until
//! its container is ready or the cluster says why it cannot be ([`pod_state`]), within
//! `start_timeout`; then connects to `podIP:7323`.
//!
//! With the second layer, the pod runs the executor's relay (`sandbox_executor::relay`), which
//! listens in the executor's stead and passes frames to the executor under bubblewrap.
//!
//! A pod's `emptyDir` workspace is filled from sandboxd's copy at start and copied back out
//! through the executor ([`Runtime::copies_workspace`]); with S3 storage that copy is the
//! bucket's cache, as on the other runtimes.
//!
//! Not built yet: package installs in a pod of their own.

pub mod spec;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use sandbox_protocol::ExecRequest;

use crate::executor_client::{ExecutorClient, OutputSink};
use crate::runtime::{ExecOutcome, InstallOutcome, PackageInstall, Readiness, Sandbox, SandboxSpec, WorkspaceAccess};
use crate::{Runtime, RuntimeError};

/// What a pod's status says of its start.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    /// Its container runs and is ready, at this address.
    Ready(IpAddr),
    /// Not yet; the cluster's reason so far, if it gave one (`Unschedulable: 0/3 nodes ...`).
    Waiting(Option<String>),
    /// It will not start, or it ended: the cluster's reason.
    Failed(String),
    /// Out of memory: its container was OOM-killed.
    OutOfMemory,
}

/// Container reasons that never clear by waiting.
const FATAL_WAITING: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerError",
    "CreateContainerConfigError",
];

/// Reads a pod's status as the kubelet and scheduler report it.
pub fn pod_state(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else { return PodState::Waiting(None) };
    let container = status.container_statuses.as_ref().and_then(|c| c.first());
    if let Some(state) = container.and_then(|c| c.state.as_ref()) {
        if let Some(t) = &state.terminated {
            if t.reason.as_deref() == Some("OOMKilled") {
                return PodState::OutOfMemory;
            }
            let why = t.reason.clone().unwrap_or_else(|| format!("exit code {}", t.exit_code));
            return PodState::Failed(join(&why, t.message.as_deref()));
        }
        if let Some(w) = &state.waiting {
            let reason = w.reason.clone().unwrap_or_default();
            if FATAL_WAITING.contains(&reason.as_str()) {
                return PodState::Failed(join(&reason, w.message.as_deref()));
            }
        }
    }
    match status.phase.as_deref() {
        Some("Failed") | Some("Succeeded") => {
            let why = status.reason.clone().unwrap_or_else(|| "the pod ended".into());
            return PodState::Failed(join(&why, status.message.as_deref()));
        }
        Some("Running") if container.is_some_and(|c| c.ready) => {
            if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) {
                return PodState::Ready(ip);
            }
        }
        _ => {}
    }
    // The latest word of the scheduler, or of the kubelet, while it waits.
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| join(c.reason.as_deref().unwrap_or("Unschedulable"), c.message.as_deref()));
    let waiting = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_deref().map(|r| join(r, w.message.as_deref())));
    PodState::Waiting(unscheduled.or(waiting))
}

fn join(reason: &str, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_string(),
    }
}

/// The API server's refusal in plain words: its own message (a quota, a LimitRange, Pod
/// Security or a webhook says what it refused and why).
fn refused(what: &str, e: kube::Error) -> RuntimeError {
    match e {
        kube::Error::Api(status) => {
            RuntimeError::Start(format!("the cluster refused {what}: {} ({})", status.message, status.reason))
        }
        other => RuntimeError::Start(format!("cannot reach the Kubernetes API to create {what}: {other}")),
    }
}

/// The API server out of reach, in plain words.
fn unreachable(e: kube::Error) -> RuntimeError {
    RuntimeError::NotReady(format!("cannot reach the Kubernetes API: {e}"))
}

/// A sandbox executor's token: 32 random bytes, hex.
fn new_token() -> Result<String, RuntimeError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| RuntimeError::Io { op: "read", path: "/dev/urandom".into(), source })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub struct KubernetesRuntime {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    settings: spec::Settings,
    /// How long a pod may take to be ready before its start fails with the cluster's reason.
    start_timeout: Duration,
}

impl KubernetesRuntime {
    pub fn new(client: kube::Client, settings: spec::Settings, start_timeout: Duration) -> KubernetesRuntime {
        KubernetesRuntime {
            pods: Api::namespaced(client.clone(), &settings.namespace),
            secrets: Api::namespaced(client, &settings.namespace),
            settings,
            start_timeout,
        }
    }

    /// On the cluster `kubeconfig` names, or without one the cluster found as kubectl finds
    /// it: `KUBECONFIG`, the user's kubeconfig, or the pod's service account inside a cluster.
    pub async fn connect(
        kubeconfig: Option<&std::path::Path>,
        settings: spec::Settings,
        start_timeout: Duration,
    ) -> Result<Self, String> {
        let client = match kubeconfig {
            Some(path) => {
                let read = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
                let options = kube::config::KubeConfigOptions::default();
                let config = kube::Config::from_custom_kubeconfig(read, &options)
                    .await
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
                kube::Client::try_from(config).map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
            }
            None => kube::Client::try_default().await.map_err(|e| {
                format!("no Kubernetes cluster is configured (KUBECONFIG, ~/.kube/config or a service account): {e}")
            })?,
        };
        Ok(KubernetesRuntime::new(client, settings, start_timeout))
    }

    /// The layers of a sandbox pod in plain words.
    fn layers(&self) -> String {
        let seccomp = match &self.settings.seccomp {
            spec::Seccomp::Localhost(profile) => format!("seccomp profile {profile}"),
            spec::Seccomp::RuntimeDefault => "RuntimeDefault seccomp".into(),
        };
        let class = self.settings.runtime_class.as_ref().map(|c| format!(", runtime class {c}")).unwrap_or_default();
        let pod = format!("pod (no network but sandboxd's, no capabilities, {seccomp}, read-only root, limits{class})");
        if self.settings.second_layer {
            format!("{pod} + bubblewrap + executor seccomp")
        } else {
            format!("{pod} + executor seccomp; NO bubblewrap layer: off (--kubernetes-second-layer off)")
        }
    }

    /// Watches pod `name` until it is ready or cannot start, within the start timeout.
    async fn wait_ready(&self, name: &str) -> Result<IpAddr, RuntimeError> {
        let mut states = pod_states(&self.pods, name);
        let mut last: Option<String> = None;
        let waited = tokio::time::timeout(self.start_timeout, async {
            while let Some(seen) = states.next().await {
                let state = match seen {
                    Ok(Some(state)) => state,
                    Ok(None) => return Err(RuntimeError::Start(format!("pod {name} was deleted while it started"))),
                    // The watcher retries by itself; say what failed if it never recovers.
                    Err(e) => {
                        last = Some(format!("watching the pod failed: {e}"));
                        continue;
                    }
                };
                match state {
                    PodState::Ready(ip) => return Ok(ip),
                    PodState::Waiting(why) => last = why.or(last.take()),
                    PodState::Failed(why) => return Err(RuntimeError::Start(format!("pod {name}: {why}"))),
                    PodState::OutOfMemory => {
                        return Err(RuntimeError::Start(format!("pod {name} ran out of memory as it started")))
                    }
                }
            }
            Err(RuntimeError::Start(format!("the watch of pod {name} ended")))
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(RuntimeError::Start(format!(
                "pod {name} was not ready within {} s{}",
                self.start_timeout.as_secs(),
                last.map(|why| format!(" ({why})")).unwrap_or_default()
            ))),
        }
    }

    async fn delete_pod(&self, name: &str) {
        delete_pod(&self.pods, name).await
    }

    async fn delete_secret(&self, name: &str) {
        match self.secrets.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => tracing::warn!(secret = name, error = %e, "cannot delete the sandbox's token"),
        }
    }

    /// The pods of sandbox `name` (one, but for a start whose delete is still under way).
    async fn pods_of(&self, name: &str) -> Result<Vec<Pod>, RuntimeError> {
        let selector = format!("{}={}", spec::LABEL_SANDBOX, spec::label_value(name));
        let listed = self.pods.list(&ListParams::default().labels(&selector)).await;
        listed.map(|l| l.items).map_err(unreachable)
    }

    /// Creates the token and the pod of `spec`, and waits until its executor answers.
    async fn start(&self, spec: &SandboxSpec, name: &str, token: &str) -> Result<ExecutorClient, RuntimeError> {
        let owner =
            spec::Owner { sandbox: spec.name.clone(), template: spec.template.clone(), tenant: spec.tenant.clone() };
        let name = name.to_string();
        let secret = spec::token_secret(&self.settings, &owner, &name, token, None);
        self.secrets.create(&PostParams::default(), &secret).await.map_err(|e| refused("the sandbox's token", e))?;
        let pod = spec::sandbox_pod(&self.settings, &owner, &name, &spec.limits, spec.image.as_deref());
        let created =
            self.pods.create(&PostParams::default(), &pod).await.map_err(|e| refused("the sandbox pod", e))?;
        // Owned by its pod, the token goes when the pod goes, whoever deletes it.
        if let Some(uid) = created.metadata.uid.clone() {
            let owned = serde_json::json!({"metadata": {"ownerReferences": [OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: name.clone(),
                uid,
                controller: None,
                block_owner_deletion: None,
            }]}});
            if let Err(e) = self.secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&owned)).await {
                tracing::warn!(secret = %name, error = %e, "cannot make the pod own its token; it is deleted with the pod by sandboxd");
            }
        }
        let ip = self.wait_ready(&name).await?;
        let addr = SocketAddr::new(ip, sandbox_protocol::EXECUTOR_PORT);
        // A pod is ready when its container runs; what runs in it may still fail (bubblewrap
        // refused by the node): its end, with the container's last words, is the reason.
        let within = Duration::from_secs(30);
        let failed = async {
            match pod_ended(&self.pods, &name, within).await {
                Some(ended) => ended,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            client = ExecutorClient::connect(addr, token, within) => client,
            ended = failed => Err(self.start_failure(&name, ended)),
        }
    }

    /// Why pod `name` ended as it started, in plain words.
    fn start_failure(&self, name: &str, ended: PodState) -> RuntimeError {
        let why = match ended {
            PodState::OutOfMemory => "it ran out of memory as it started (OOMKilled)".to_string(),
            PodState::Failed(why) | PodState::Waiting(Some(why)) => why,
            PodState::Waiting(None) | PodState::Ready(_) => "it ended".to_string(),
        };
        let hint = if self.settings.second_layer && why.contains("bwrap") {
            " (the second layer, bubblewrap inside the pod, cannot run on this cluster's nodes: \
             SECURITY.md says what it needs; --kubernetes-second-layer off runs without it)"
        } else {
            ""
        };
        RuntimeError::Start(format!("pod {name}: {why}{hint}"))
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn workspace_access(&self) -> WorkspaceAccess {
        WorkspaceAccess::Executor
    }

    async fn readiness(&self) -> Readiness {
        let namespace = &self.settings.namespace;
        let probe = self.pods.list(&ListParams::default().limit(1)).await;
        let (ready, message) = match probe {
            Ok(_) => (true, String::new()),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                (false, format!("sandboxd may not list pods in namespace {namespace} (RBAC): {}", status.message))
            }
            Err(kube::Error::Api(status)) => {
                (false, format!("the Kubernetes API refused to list pods in {namespace}: {}", status.message))
            }
            Err(e) => (false, format!("the Kubernetes API cannot be reached: {e}")),
        };
        Readiness {
            ready,
            message,
            runtime: "kubernetes",
            detail: BTreeMap::from([("namespace".to_string(), namespace.clone())]),
        }
    }

    fn workspace_owner(&self) -> Option<(u32, u32)> {
        None
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, RuntimeError> {
        let token = new_token()?;
        // Its own randomness, not the token's: the name is no secret.
        let pod = spec::pod_name(&spec.name, &new_token()?[..6]);
        match self.start(&spec, &pod, &token).await {
            Ok(client) => Ok(Box::new(KubernetesSandbox {
                name: spec.name,
                pod,
                client,
                pods: self.pods.clone(),
                layers: self.layers(),
                destroyed: AtomicBool::new(false),
            })),
            Err(e) => {
                // Nothing of a failed start stays behind: its pod, and its token (made first,
                // and not yet owned by a pod that was refused).
                self.delete_pod(&pod).await;
                self.delete_secret(&pod).await;
                Err(e)
            }
        }
    }

    async fn install_packages(&self, _req: PackageInstall) -> Result<InstallOutcome, RuntimeError> {
        Err(RuntimeError::NotReady("package installs on the Kubernetes runtime are not built yet".into()))
    }

    async fn check_image(&self, _image: &str) -> Result<(), RuntimeError> {
        // The cluster pulls it: whether it can shows when a pod starts (ErrImagePull).
        Ok(())
    }

    async fn release_image(&self, _image: &str) {}

    /// An `emptyDir` workspace lives and dies with its pod: sandboxd keeps a copy. A claim
    /// every pod mounts keeps the files itself.
    fn copies_workspace(&self) -> bool {
        matches!(self.settings.workspace, spec::WorkspaceVolume::Scratch { .. })
    }

    fn keeps_sandboxes(&self) -> bool {
        true
    }

    /// Finds sandbox `name`'s running pod (by its label) after sandboxd restarted, or when a
    /// replica takes over a lost one's sessions; reads the executor's token back from the
    /// pod's Secret and connects, which cuts off whatever client the executor had (a stalled
    /// replica's). The kernel and its variables are as they were. `None`: no running pod.
    async fn reattach(&self, name: &str) -> Result<Option<Box<dyn Sandbox>>, RuntimeError> {
        let running = self.pods_of(name).await?.into_iter().find_map(|pod| match pod_state(&pod) {
            PodState::Ready(ip) => pod.metadata.name.map(|n| (n, ip)),
            _ => None,
        });
        let Some((pod_name, ip)) = running else { return Ok(None) };
        let secret = self.secrets.get_opt(&pod_name).await;
        let secret = secret.map_err(unreachable)?;
        let token = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get(spec::TOKEN_KEY).map(|t| String::from_utf8_lossy(&t.0).into_owned()));
        let Some(token) = token else { return Ok(None) };
        let addr = SocketAddr::new(ip, sandbox_protocol::EXECUTOR_PORT);
        let client = ExecutorClient::connect(addr, &token, Duration::from_secs(30)).await?;
        Ok(Some(Box::new(KubernetesSandbox {
            name: name.to_string(),
            pod: pod_name,
            client,
            pods: self.pods.clone(),
            layers: self.layers(),
            destroyed: AtomicBool::new(false),
        })))
    }

    /// Every sandbox pod of the namespace, by its sandbox's and its replica's labels.
    async fn kept_sandboxes(&self) -> Result<Vec<crate::KeptSandbox>, RuntimeError> {
        let selector = format!("{}={},{}=sandbox", spec::LABEL_MANAGED_BY, spec::MANAGED_BY, spec::LABEL_COMPONENT);
        let pods = self.pods.list(&ListParams::default().labels(&selector)).await.map_err(unreachable)?;
        let label = |pod: &Pod, key: &str| pod.metadata.labels.as_ref().and_then(|l| l.get(key).cloned());
        let here = spec::label_value(&self.settings.replica);
        Ok(pods
            .items
            .iter()
            .filter_map(|pod| {
                let name = label(pod, spec::LABEL_SANDBOX)?;
                Some(crate::KeptSandbox { name, started_here: label(pod, spec::LABEL_REPLICA) == Some(here.clone()) })
            })
            .collect())
    }

    /// Deletes sandbox `name`'s pods and their tokens.
    async fn remove(&self, name: &str) {
        match self.pods_of(name).await {
            Ok(pods) => {
                for pod in pods.into_iter().filter_map(|p| p.metadata.name) {
                    self.delete_pod(&pod).await;
                    self.delete_secret(&pod).await;
                }
            }
            Err(e) => tracing::warn!(sandbox = name, error = %e, "cannot find the sandbox's pods to delete"),
        }
    }
}

/// The Kubernetes runtime when it cannot run at all (no cluster configured, settings that do
/// not parse): not ready, saying why, and every start refused with that.
pub struct Unavailable(pub String);

#[async_trait]
impl Runtime for Unavailable {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn workspace_access(&self) -> WorkspaceAccess {
        WorkspaceAccess::Executor
    }

    async fn readiness(&self) -> Readiness {
        Readiness { ready: false, message: self.0.clone(), runtime: "kubernetes", detail: BTreeMap::new() }
    }

    fn workspace_owner(&self) -> Option<(u32, u32)> {
        None
    }

    async fn create(&self, _spec: SandboxSpec) -> Result<Box<dyn Sandbox>, RuntimeError> {
        Err(RuntimeError::NotReady(self.0.clone()))
    }

    async fn install_packages(&self, _req: PackageInstall) -> Result<InstallOutcome, RuntimeError> {
        Err(RuntimeError::NotReady(self.0.clone()))
    }

    async fn check_image(&self, _image: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::NotReady(self.0.clone()))
    }

    async fn release_image(&self, _image: &str) {}
}

pub struct KubernetesSandbox {
    name: String,
    pod: String,
    client: ExecutorClient,
    pods: Api<Pod>,
    layers: String,
    destroyed: AtomicBool,
}

/// The states of pod `name` as the cluster reports them, from its current one on (a watch,
/// never a poll); `Ok(None)` once it is deleted, or when it was gone before the watch began.
fn pod_states(
    pods: &Api<Pod>,
    name: &str,
) -> futures_util::stream::BoxStream<'static, Result<Option<PodState>, watcher::Error>> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut listed = false;
    watcher(pods.clone(), config)
        .filter_map(move |event| {
            let seen = match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    listed = true;
                    Some(Ok(Some(pod_state(&pod))))
                }
                Ok(watcher::Event::Delete(_)) => Some(Ok(None)),
                // The first list did not have it.
                Ok(watcher::Event::InitDone) if !listed => Some(Ok(None)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            };
            std::future::ready(seen)
        })
        .boxed()
}

/// How pod `name` ended ([`PodState::Failed`] or [`PodState::OutOfMemory`]), once its status
/// says so (on a real cluster it lags a lost connection by a moment) or it is deleted; `None`
/// if it did not within `within`.
async fn pod_ended(pods: &Api<Pod>, name: &str, within: Duration) -> Option<PodState> {
    let mut states = pod_states(pods, name);
    let watched = tokio::time::timeout(within, async {
        while let Some(seen) = states.next().await {
            match seen {
                Ok(None) => return Some(PodState::Failed(format!("pod {name} was deleted from outside sandboxd"))),
                Ok(Some(ended @ (PodState::Failed(_) | PodState::OutOfMemory))) => return Some(ended),
                // Not ended, or the watch failed and retries by itself.
                Ok(Some(_)) | Err(_) => continue,
            }
        }
        None
    });
    watched.await.ok().flatten()
}

#[async_trait]
impl Sandbox for KubernetesSandbox {
    fn name(&self) -> &str {
        &self.name
    }

    async fn exec(&self, req: ExecRequest, sink: Option<OutputSink>) -> Result<ExecOutcome, RuntimeError> {
        let (id, kernel, started) = (req.id.clone(), req.kernel, std::time::Instant::now());
        let outcome = crate::measured::exec(&self.client, None, req, sink, String::new).await;
        match outcome {
            Ok(o) => Ok(o),
            Err(e) => {
                // The connection is gone: the pod's status says why (an OOM kill of the whole
                // container, a deletion, an exit).
                let why = match pod_ended(&self.pods, &self.pod, Duration::from_secs(5)).await {
                    // The node kills a container past its memory limit whole: the execution
                    // ends as killed by that limit, and the session's next one finds a new pod.
                    Some(PodState::OutOfMemory) => {
                        let why =
                            format!("pod {} was killed whole: the sandbox hit its memory limit (OOMKilled)", self.pod);
                        Ok(ExecOutcome {
                            result: killed_by_memory(id, kernel, started.elapsed(), &why),
                            limit: Some(crate::LimitKind::Memory),
                            cpu_ms: None,
                            peak_memory_bytes: None,
                        })
                    }
                    Some(PodState::Failed(why)) => Err(RuntimeError::SandboxDied(why)),
                    _ => Err(e),
                };
                self.destroy().await;
                why
            }
        }
    }

    async fn start_kernel(&self, env: BTreeMap<String, String>) -> Result<(), RuntimeError> {
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
        self.layers.clone()
    }

    fn is_alive(&self) -> bool {
        !self.destroyed.load(Ordering::SeqCst) && self.client.is_alive()
    }

    async fn destroy(&self) {
        if self.destroyed.swap(true, Ordering::SeqCst) {
            return;
        }
        delete_pod(&self.pods, &self.pod).await
    }
}

/// The result of execution `id` whose pod the node killed for memory (with the kernel, if it
/// ran in it).
fn killed_by_memory(id: String, kernel: bool, took: Duration, why: &str) -> sandbox_protocol::ExecResult {
    sandbox_protocol::ExecResult {
        id,
        exit_code: None,
        signal: Some(9),
        timed_out: false,
        stdout: String::new(),
        stderr: format!("{why}\n"),
        stdout_truncated: false,
        stderr_truncated: false,
        duration_ms: took.as_millis() as u64,
        spawn_error: None,
        outputs: Vec::new(),
        kernel_died: kernel,
        outputs_truncated: false,
        kernel_replaced: None,
        kernel_death: kernel.then(|| why.to_string()),
    }
}

/// Deletes pod `name` at once (no grace: the executor ends its processes itself); one already
/// gone is no error.
async fn delete_pod(pods: &Api<Pod>, name: &str) {
    let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() };
    match pods.delete(name, &now).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => tracing::warn!(pod = name, error = %e, "cannot delete the sandbox pod"),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };

    use super::*;

    fn pod(status: PodStatus) -> Pod {
        Pod { status: Some(status), ..Default::default() }
    }

    fn container(state: ContainerState, ready: bool) -> Option<Vec<ContainerStatus>> {
        Some(vec![ContainerStatus { name: "sandbox".into(), ready, state: Some(state), ..Default::default() }])
    }

    #[test]
    fn a_running_ready_pod_is_ready_at_its_address() {
        let running = ContainerState { running: Some(Default::default()), ..Default::default() };
        let ready = pod(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.1.2.3".into()),
            container_statuses: container(running.clone(), true),
            ..Default::default()
        });
        assert_eq!(pod_state(&ready), PodState::Ready("10.1.2.3".parse().expect("ip")));
        let not_yet = pod(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.1.2.3".into()),
            container_statuses: container(running, false),
            ..Default::default()
        });
        assert_eq!(pod_state(&not_yet), PodState::Waiting(None));
    }

    #[test]
    fn the_clusters_reasons_are_kept() {
        let unschedulable = pod(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available: 3 Insufficient memory.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            pod_state(&unschedulable),
            PodState::Waiting(Some("Unschedulable: 0/3 nodes are available: 3 Insufficient memory.".into()))
        );
        let pull = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("Back-off pulling image \"nope:1\"".into()),
            }),
            ..Default::default()
        };
        let failed = pod(PodStatus {
            phase: Some("Pending".into()),
            container_statuses: container(pull, false),
            ..Default::default()
        });
        assert_eq!(pod_state(&failed), PodState::Failed("ImagePullBackOff: Back-off pulling image \"nope:1\"".into()));
        let creating = ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some("ContainerCreating".into()), message: None }),
            ..Default::default()
        };
        let waiting = pod(PodStatus {
            phase: Some("Pending".into()),
            container_statuses: container(creating, false),
            ..Default::default()
        });
        assert_eq!(pod_state(&waiting), PodState::Waiting(Some("ContainerCreating".into())));
    }

    #[test]
    fn an_oom_kill_is_told_apart_from_other_ends() {
        let ended = |reason: &str, code: i32| ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some(reason.into()),
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        };
        let oom = pod(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: container(ended("OOMKilled", 137), false),
            ..Default::default()
        });
        assert_eq!(pod_state(&oom), PodState::OutOfMemory);
        let error = pod(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: container(ended("Error", 1), false),
            ..Default::default()
        });
        assert_eq!(pod_state(&error), PodState::Failed("Error".into()));
    }
}
