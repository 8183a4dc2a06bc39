//! The Docker runtime: each sandbox is a container of the engine's, with the executor inside
//! under bubblewrap, reached over the container's attach stream (never over a network code in
//! the sandbox could reach). [`container`] says what each container is; this module drives
//! the engine (bollard, with the API version negotiated down to the engine's).
//!
//! Every container carries this sandboxd's instance label and a boot id. At start-up, those of
//! an earlier boot are orphans (sandboxd keeps no sandbox across a restart: the service stops
//! their sessions and interrupts their executions) and are removed.

pub mod container;
pub mod paths;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use sandbox_protocol::ExecRequest;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex as AsyncMutex;

use crate::cgroup::SandboxCgroup;
use crate::executor_client::{ExecutorClient, OutputSink};
use crate::layout::HostLayout;
use crate::runtime::{
    Dir, ExecOutcome, InstallOutcome, PackageInstall, Readiness, ResourceLimits, Runtime, Sandbox, SandboxSpec,
    WorkspaceAccess,
};
use crate::RuntimeError;
use container::{Bind, Owner, Settings};
use paths::PathMap;

/// Whether code runs under the second layer (bubblewrap inside the container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondLayer {
    /// On where the engine allows it; where it does not, off, and readiness says why.
    Auto,
    /// Required: no sandbox starts without it.
    On,
    /// Off: the container and the executor's seccomp filter only.
    Off,
}

impl std::str::FromStr for SecondLayer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(SecondLayer::Auto),
            "on" => Ok(SecondLayer::On),
            "off" => Ok(SecondLayer::Off),
            _ => Err(format!("{s:?}: expected auto, on or off")),
        }
    }
}

impl std::fmt::Display for SecondLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecondLayer::Auto => "auto",
            SecondLayer::On => "on",
            SecondLayer::Off => "off",
        })
    }
}

/// Settings of the Docker runtime.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The engine's address (`unix:///var/run/docker.sock`, `tcp://host:2375`); `None`:
    /// `DOCKER_HOST`, else the default socket.
    pub host: Option<String>,
    pub image: String,
    /// Where sandboxd keeps workspaces, package and template directories (its own paths).
    pub dirs: HostLayout,
    /// Where the runtime keeps its own files (under the data dir, so the engine can mount them).
    pub state_dir: PathBuf,
    /// Identifies this sandboxd's containers among the engine's (a tag of its data dir).
    pub instance: String,
    /// The uid and gid containers run as; owns what code writes.
    pub user: (u32, u32),
    pub second_layer: SecondLayer,
    pub tmp_size_bytes: u64,
    pub ready_timeout: Duration,
    pub file_access: WorkspaceAccess,
}

/// What the last probe found.
#[derive(Debug, Clone)]
struct Probe {
    at: Instant,
    readiness: Readiness,
}

/// Out-of-memory kills the engine reported, by container id ([`watch_ooms`]).
type OomKills = Arc<Mutex<std::collections::HashMap<String, u64>>>;

pub struct DockerRuntime {
    config: DockerConfig,
    /// Which limit ended an execution, where sandboxd cannot read the container's cgroup.
    ooms: OomKills,
    docker: Result<Docker, String>,
    /// `docker` with the API version agreed with the engine: negotiated once, at the first
    /// call that reaches the engine, not at every sandbox start.
    negotiated: tokio::sync::OnceCell<Docker>,
    settings: Settings,
    /// How this sandboxd's paths become the engine's (found once, on first use).
    paths: tokio::sync::OnceCell<PathMap>,
    /// Whether the second layer works on this engine: `None` until a probe has told.
    second_layer: Mutex<Option<Result<(), String>>>,
    probe: AsyncMutex<Option<Probe>>,
    counter: AtomicU64,
}

fn engine_err(e: bollard::errors::Error) -> RuntimeError {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => {
            RuntimeError::Start(format!("the Docker engine answered {status_code}: {message}"))
        }
        e => RuntimeError::NotReady(format!("the Docker engine cannot be reached: {e}")),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

impl DockerRuntime {
    /// Prepares the runtime and, in the background, removes what an earlier run of this
    /// sandboxd left. Never fails: what is wrong is reported by [`Runtime::readiness`].
    pub fn new(config: DockerConfig) -> DockerRuntime {
        let docker = match &config.host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| {
            format!("cannot use the Docker engine at {}: {e}", config.host.as_deref().unwrap_or("DOCKER_HOST"))
        });
        let boot = format!("{}-{}", std::process::id(), epoch_seconds());
        let settings = Settings {
            image: config.image.clone(),
            user: config.user,
            instance: config.instance.clone(),
            boot,
            tmp_size_bytes: config.tmp_size_bytes,
        };
        let second_layer = match config.second_layer {
            SecondLayer::Off => Some(Err("off (--docker-second-layer off)".to_string())),
            SecondLayer::Auto | SecondLayer::On => None,
        };
        copy_ca_bundle(&config.state_dir);
        let runtime = DockerRuntime {
            ooms: OomKills::default(),
            config,
            docker,
            negotiated: tokio::sync::OnceCell::new(),
            settings,
            paths: tokio::sync::OnceCell::new(),
            second_layer: Mutex::new(second_layer),
            probe: AsyncMutex::new(None),
            counter: AtomicU64::new(0),
        };
        if let (Ok(docker), Ok(handle)) = (&runtime.docker, tokio::runtime::Handle::try_current()) {
            handle.spawn(remove_orphans(
                docker.clone(),
                runtime.settings.instance.clone(),
                runtime.settings.boot.clone(),
            ));
            handle.spawn(watch_ooms(docker.clone(), runtime.settings.instance.clone(), Arc::clone(&runtime.ooms)));
        }
        runtime
    }

    /// The engine, with the API version negotiated (the engine may be older than the client).
    async fn engine(&self) -> Result<Docker, RuntimeError> {
        let docker = self.docker.as_ref().map_err(|e| RuntimeError::NotReady(e.clone()))?;
        let negotiate = || async { docker.clone().negotiate_version().await.map_err(engine_err) };
        self.negotiated.get_or_try_init(negotiate).await.cloned()
    }

    /// After a call that found the engine unreachable: readiness must not go on saying
    /// "ready" from a probe made while it answered (a probe in progress holds the lock, and
    /// reports the error itself).
    fn forget_probe_if_unreachable<T>(&self, result: &Result<T, RuntimeError>) {
        if matches!(result, Err(RuntimeError::NotReady(_))) {
            if let Ok(mut cached) = self.probe.try_lock() {
                *cached = None;
            }
        }
    }

    async fn path_map(&self, docker: &Docker) -> &PathMap {
        self.paths.get_or_init(|| find_path_map(docker)).await
    }

    fn second_layer_state(&self) -> Option<Result<(), String>> {
        self.second_layer.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts a sandbox for `spec` on the engine; `second_layer` says whether under bubblewrap.
    async fn start(&self, spec: &SandboxSpec, second_layer: bool) -> Result<DockerSandbox, RuntimeError> {
        let docker = self.engine().await?;
        let map = self.path_map(&docker).await;
        let dirs = &self.config.dirs;
        let workspace = map.translate(&dirs.path(&Dir::Workspace(spec.workspace.clone())))?;
        let mounts = spec
            .mounts
            .iter()
            .map(|m| Ok(Bind { source: map.translate(&dirs.path(&m.dir))?, target: m.target.clone(), read_only: true }))
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let owner = Owner { sandbox: spec.name.clone(), template: spec.template.clone(), tenant: spec.tenant.clone() };
        let settings = match &spec.image {
            Some(image) => Settings { image: image.clone(), ..self.settings.clone() },
            None => self.settings.clone(),
        };
        let body = container::sandbox(&settings, &owner, &spec.limits, &workspace, &mounts, second_layer);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = container_name(&self.settings.instance, &spec.name, n);
        let created = docker
            .create_container(Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }), body)
            .await
            .map_err(|e| self.create_error(&settings.image, e))?;
        let layers = match (second_layer, self.second_layer_state()) {
            (true, _) => container::layers(None),
            (false, Some(Err(why))) => container::layers(Some(&why)),
            (false, _) => container::layers(Some("off")),
        };
        let sandbox =
            DockerSandbox::attach(docker, created.id, spec.name.clone(), layers, Arc::clone(&self.ooms)).await?;
        match sandbox.client.wait_ready(self.config.ready_timeout).await {
            Ok(sandbox_protocol::PROTOCOL_VERSION) => Ok(sandbox),
            Ok(version) => {
                sandbox.destroy().await;
                Err(RuntimeError::NotReady(format!(
                    "the executor in image {} speaks protocol {version}, this sandboxd {}: rebuild the image (scripts/build-sandbox-image.sh)",
                    self.config.image,
                    sandbox_protocol::PROTOCOL_VERSION
                )))
            }
            Err(e) => {
                // Its last words (bubblewrap's "Creating new namespace failed", say) say most;
                // give the stream reader a moment to catch up with the exit.
                for _ in 0..40 {
                    if !sandbox.tail().is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let tail = sandbox.tail();
                sandbox.destroy().await;
                Err(RuntimeError::Start(if tail.is_empty() { e.to_string() } else { tail }))
            }
        }
    }

    fn create_error(&self, image: &str, e: bollard::errors::Error) -> RuntimeError {
        if is_not_found(&e) {
            return RuntimeError::NotReady(format!(
                "image {image} not found on the engine: build it (scripts/build-sandbox-image.sh) or pass --docker-image"
            ));
        }
        engine_err(e)
    }

    /// Starts a sandbox under the second layer when it works (finding out on first use), or
    /// without it when the engine cannot give bubblewrap its namespaces and that is allowed.
    async fn start_layered(&self, spec: &SandboxSpec) -> Result<DockerSandbox, RuntimeError> {
        match self.second_layer_state() {
            Some(Ok(())) => self.start(spec, true).await,
            Some(Err(why)) if self.config.second_layer == SecondLayer::On => Err(RuntimeError::NotReady(format!(
                "the second layer (bubblewrap in the container) does not work here: {why}"
            ))),
            Some(Err(_)) => self.start(spec, false).await,
            None => match self.start(spec, true).await {
                Ok(sandbox) => {
                    *self.second_layer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ok(()));
                    Ok(sandbox)
                }
                Err(RuntimeError::Start(why)) if why.contains("bwrap") => {
                    tracing::warn!("the second layer does not work on this engine: {why}");
                    *self.second_layer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(why.clone()));
                    if self.config.second_layer == SecondLayer::On {
                        return Err(RuntimeError::NotReady(format!("the second layer does not work here: {why}")));
                    }
                    self.start(spec, false).await
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Which isolation layers a sandbox started now gets, in plain words.
    fn layers(&self) -> String {
        match self.second_layer_state() {
            Some(Ok(())) => container::layers(None),
            Some(Err(why)) => container::layers(Some(&why)),
            None => "not yet probed".into(),
        }
    }

    async fn probe(&self) -> Result<String, RuntimeError> {
        let docker = self.engine().await?;
        let version = docker.version().await.map_err(engine_err)?;
        docker.inspect_image(&self.config.image).await.map_err(|e| self.create_error(&self.config.image, e))?;
        let dir = self.config.dirs.workspaces.join(".probe");
        std::fs::create_dir_all(&dir).map_err(|source| RuntimeError::Io { op: "create", path: dir.clone(), source })?;
        sandbox_sys::chown(&dir, self.config.user.0, self.config.user.1).map_err(|source| RuntimeError::Io {
            op: "chown",
            path: dir.clone(),
            source,
        })?;
        let spec = SandboxSpec {
            name: format!("probe-{}", self.counter.fetch_add(1, Ordering::Relaxed)),
            workspace: ".probe".into(),
            limits: ResourceLimits { memory_bytes: 256 << 20, pids: 64, cpus: 1.0 },
            mounts: Vec::new(),
            image: None,
            template: None,
            tenant: None,
        };
        let sandbox = self.start_layered(&spec).await?;
        sandbox.destroy().await;
        Ok(format!("engine {} (API {})", version.version.unwrap_or_default(), version.api_version.unwrap_or_default()))
    }

    async fn install(&self, req: PackageInstall) -> Result<InstallOutcome, RuntimeError> {
        let docker = self.engine().await?;
        let map = self.path_map(&docker).await;
        let target_path = self.config.dirs.path(&req.into);
        let target = map.translate(&target_path)?;
        let cache = map.translate(&self.config.dirs.pip_cache)?;
        let ca_copy = ca_copy_path(&self.config.state_dir);
        let ca_bundle = match ca_copy.is_file() {
            true => Some(map.translate(&ca_copy)?),
            false => None,
        };
        let before = crate::layout::installed(&target_path);
        let owner = Owner { sandbox: req.name.clone(), template: None, tenant: None };
        let body = container::install(&self.settings, &owner, &req, &target, &cache, ca_bundle.as_deref());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = container_name(&self.settings.instance, &format!("install-{}", req.name), n);
        let created = docker
            .create_container(Some(CreateContainerOptions { name: Some(name), ..Default::default() }), body)
            .await
            .map_err(|e| self.create_error(&self.config.image, e))?;
        let id = created.id;
        let run = async {
            docker.start_container(&id, None).await.map_err(engine_err)?;
            let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
            let code = match wait.next().await {
                Some(Ok(r)) => r.status_code,
                // The engine reports a non-zero exit as an error of the wait stream.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                Some(Err(e)) => return Err(engine_err(e)),
                None => -1,
            };
            Ok::<i64, RuntimeError>(code)
        };
        let outcome = match tokio::time::timeout(req.timeout, run).await {
            Ok(Ok(code)) => {
                let log = container_log(&docker, &id).await;
                InstallOutcome {
                    success: code == 0,
                    log: crate::install::tail_of(&log, crate::install::LOG_BYTES),
                    timed_out: false,
                    installed: crate::layout::installed(&target_path).difference(&before).cloned().collect(),
                }
            }
            Ok(Err(e)) => {
                remove_container(&docker, &id).await;
                return Err(e);
            }
            Err(_) => InstallOutcome {
                success: false,
                log: format!("pip did not finish within {} s and was killed", req.timeout.as_secs()),
                timed_out: true,
                installed: Vec::new(),
            },
        };
        remove_container(&docker, &id).await;
        Ok(outcome)
    }
}

/// Copies this host's TLS roots where the engine can mount them into install containers (see
/// [`container::install`]); without them, installs trust the image's own.
fn copy_ca_bundle(state_dir: &std::path::Path) {
    let host = std::path::Path::new(container::CA_BUNDLE);
    if !host.is_file() {
        return;
    }
    let copied = std::fs::create_dir_all(state_dir).and_then(|()| std::fs::copy(host, ca_copy_path(state_dir)));
    if let Err(e) = copied {
        tracing::warn!(error = %e, "cannot copy the host's TLS roots for package installs");
    }
}

/// Where [`copy_ca_bundle`] keeps the copy.
fn ca_copy_path(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("ca-certificates.crt")
}

/// A short, unique-enough suffix for this boot (seconds since the epoch).
fn epoch_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Container names: the engine needs them unique; people read them in `docker ps`.
fn container_name(instance: &str, sandbox: &str, n: u64) -> String {
    let clean: String = sandbox
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' })
        .take(64)
        .collect();
    format!("sandbox-{instance}-{clean}.{n}")
}

async fn container_log(docker: &Docker, id: &str) -> String {
    let options = LogsOptions { stdout: true, stderr: true, ..Default::default() };
    let mut logs = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    text
}

/// Removes a container and its anonymous volumes, whatever it is doing; gone already is fine.
async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        let gone = is_not_found(&e)
            || matches!(&e, bollard::errors::Error::DockerResponseServerError { status_code: 409, .. });
        if !gone {
            tracing::warn!(container = id, error = %e, "cannot remove a sandbox container");
        }
    }
}

/// The containers of this instance, running or not, with their labels.
async fn containers_of(docker: &Docker, instance: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}={instance}", container::LABEL_INSTANCE)],
    )]);
    let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    match docker.list_containers(Some(options)).await {
        Ok(list) => {
            list.into_iter().filter_map(|c| Some((c.id?, c.labels.unwrap_or_default().into_iter().collect()))).collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list sandbox containers");
            Vec::new()
        }
    }
}

/// Removes the containers an earlier boot of this sandboxd left: nothing runs that the store
/// does not know (the service has stopped their sessions and interrupted their executions).
async fn remove_orphans(docker: Docker, instance: String, boot: String) {
    let Ok(docker) = docker.negotiate_version().await else { return };
    let orphans: Vec<String> = containers_of(&docker, &instance)
        .await
        .into_iter()
        .filter(|(_, labels)| labels.get(container::LABEL_BOOT) != Some(&boot))
        .map(|(id, _)| id)
        .collect();
    if !orphans.is_empty() {
        tracing::info!(count = orphans.len(), "removing sandbox containers of an earlier run");
    }
    for id in orphans {
        remove_container(&docker, &id).await;
    }
}

/// Counts the engine's out-of-memory kills in this instance's containers, for as long as the
/// runtime lives, reconnecting when the engine comes back. Any process of a container killed
/// for memory counts, not only its first.
async fn watch_ooms(docker: Docker, instance: String, ooms: OomKills) {
    let filters = std::collections::HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("event".to_string(), vec!["oom".to_string()]),
        ("label".to_string(), vec![format!("{}={instance}", container::LABEL_INSTANCE)]),
    ]);
    loop {
        if let Ok(engine) = docker.clone().negotiate_version().await {
            let options =
                bollard::query_parameters::EventsOptions { filters: Some(filters.clone()), ..Default::default() };
            let mut events = engine.events(Some(options));
            while let Some(Ok(event)) = events.next().await {
                if let Some(id) = event.actor.and_then(|a| a.id) {
                    *ooms.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default() += 1;
                }
            }
        }
        // The runtime is gone: nobody reads the counts any more.
        if Arc::strong_count(&ooms) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Finds how this sandboxd's paths become the engine's (see [`paths`]).
async fn find_path_map(docker: &Docker) -> PathMap {
    let Some(id) = std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| paths::own_container_id(&m))
    else {
        return PathMap::Same;
    };
    match docker.inspect_container(&id, None).await {
        Ok(own) => {
            let mounts = own
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| Some((PathBuf::from(m.destination?), m.source?)))
                .collect();
            tracing::info!(container = %id, "sandboxd runs in a container of the engine: mount sources go through its mounts");
            PathMap::Through(mounts)
        }
        // In a container, but not one of this engine's: an engine of its own (Docker-in-Docker).
        Err(_) => PathMap::Same,
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn workspace_access(&self) -> WorkspaceAccess {
        self.config.file_access
    }

    async fn readiness(&self) -> Readiness {
        let mut cached = self.probe.lock().await;
        if let Some(p) = cached.as_ref() {
            let ttl = if p.readiness.ready { Duration::from_secs(30) } else { Duration::from_secs(2) };
            if p.at.elapsed() < ttl {
                return p.readiness.clone();
            }
        }
        let (ready, message, engine) = match self.probe().await {
            Ok(engine) => (true, "ok".to_string(), engine),
            Err(e) => (false, e.to_string(), "unreachable".to_string()),
        };
        let detail = BTreeMap::from([
            ("engine".to_string(), engine),
            ("image".to_string(), self.config.image.clone()),
            ("layers".to_string(), self.layers()),
        ]);
        let readiness = Readiness { ready, message, runtime: "docker", detail };
        *cached = Some(Probe { at: Instant::now(), readiness: readiness.clone() });
        readiness
    }

    fn workspace_owner(&self) -> Option<(u32, u32)> {
        (sandbox_sys::real_uid() == 0).then_some(self.config.user)
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, RuntimeError> {
        let started = self.start_layered(&spec).await;
        self.forget_probe_if_unreachable(&started);
        Ok(Box::new(started?))
    }

    async fn install_packages(&self, req: PackageInstall) -> Result<InstallOutcome, RuntimeError> {
        let installed = self.install(req).await;
        self.forget_probe_if_unreachable(&installed);
        installed
    }

    async fn check_image(&self, image: &str) -> Result<(), RuntimeError> {
        match self.engine().await?.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(RuntimeError::Image(format!(
                "image {image:?} is not on the Docker engine: build it there (FROM the sandbox image) first"
            ))),
            Err(e) => Err(engine_err(e)),
        }
    }

    async fn release_image(&self, image: &str) {
        // The default image is every other session's.
        if image == self.config.image {
            return;
        }
        let Ok(docker) = self.engine().await else { return };
        // Never forced: an image a container (ours or anyone's) still uses stays.
        match docker.remove_image(image, None::<bollard::query_parameters::RemoveImageOptions>, None).await {
            Ok(_) => tracing::info!(image, "removed an image no template names any more"),
            Err(e) => tracing::info!(image, error = %e, "kept an image no template names any more"),
        }
    }
}

pub struct DockerSandbox {
    name: String,
    id: String,
    docker: Docker,
    client: ExecutorClient,
    /// The container's cgroup, when the engine runs on this host and sandboxd can read it:
    /// which limit ended an execution, and what it used.
    cgroup: Option<SandboxCgroup>,
    /// The engine's out-of-memory kills, read where `cgroup` cannot be.
    ooms: OomKills,
    layers: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    destroyed: AtomicBool,
}

impl DockerSandbox {
    /// Attaches to the created container `id`, starts it, and speaks the executor protocol over
    /// the attach stream: its stdout frames are the executor's events, its stdin the requests.
    async fn attach(
        docker: Docker,
        id: String,
        name: String,
        layers: String,
        ooms: OomKills,
    ) -> Result<DockerSandbox, RuntimeError> {
        let options =
            AttachContainerOptions { stdin: true, stdout: true, stderr: true, stream: true, ..Default::default() };
        let attached = match docker.attach_container(&id, Some(options)).await {
            Ok(a) => a,
            Err(e) => {
                remove_container(&docker, &id).await;
                return Err(engine_err(e));
            }
        };
        if let Err(e) = docker.start_container(&id, None).await {
            remove_container(&docker, &id).await;
            return Err(engine_err(e));
        }
        let (events_r, events_w) = tokio::io::duplex(1 << 20);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        tokio::spawn(pump(attached.output, events_w, tail, name.clone()));
        let cgroup = match docker.inspect_container(&id, None).await {
            Ok(c) => {
                c.state.and_then(|s| s.pid).and_then(|pid| u32::try_from(pid).ok()).and_then(SandboxCgroup::of_process)
            }
            Err(_) => None,
        };
        Ok(DockerSandbox {
            name,
            id,
            docker,
            client: ExecutorClient::new(events_r, attached.input),
            cgroup,
            ooms,
            layers,
            stderr_tail,
            destroyed: AtomicBool::new(false),
        })
    }

    fn tail(&self) -> String {
        let t = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn oom_kills(&self) -> u64 {
        self.ooms.lock().unwrap_or_else(|p| p.into_inner()).get(&self.id).copied().unwrap_or(0)
    }

    /// Whether the engine reported an out-of-memory kill since `before`: at once, or (after a
    /// kill, whose event may trail the result by a moment) within a fifth of a second.
    async fn oom_since(&self, before: u64, killed: bool) -> bool {
        let deadline = Instant::now() + Duration::from_millis(if killed { 200 } else { 0 });
        loop {
            if self.oom_kills() > before {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Splits the attach stream: stdout (the executor's events) into `events`, stderr lines (the
/// executor's and bubblewrap's own faults) into the log and `tail`. Ends when the container
/// does; dropping `events` then ends the executor client's stream.
async fn pump(
    mut output: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    mut events: tokio::io::DuplexStream,
    tail: Arc<Mutex<VecDeque<String>>>,
    name: String,
) {
    while let Some(Ok(chunk)) = output.next().await {
        let written = match chunk {
            LogOutput::StdOut { message } => events.write_all(&message).await,
            LogOutput::StdErr { message } => {
                for line in String::from_utf8_lossy(&message).lines() {
                    tracing::warn!(sandbox = %name, "{line}");
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() == 20 {
                        t.pop_front();
                    }
                    t.push_back(line.to_string());
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if written.is_err() {
            break;
        }
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn name(&self) -> &str {
        &self.name
    }

    async fn exec(&self, req: ExecRequest, sink: Option<OutputSink>) -> Result<ExecOutcome, RuntimeError> {
        let ooms_before = self.oom_kills();
        let mut outcome = crate::measured::exec(&self.client, self.cgroup.as_ref(), req, sink, || self.tail()).await;
        if self.cgroup.is_none() {
            // No cgroup to read (a remote engine, or sandboxd in a container): the engine's
            // OOM events tell the memory limit; a pid limit hit stays unnamed.
            match &mut outcome {
                Ok(o) if o.limit.is_none() => {
                    let killed = o.result.signal == Some(libc::SIGKILL) || o.result.kernel_died;
                    if self.oom_since(ooms_before, killed).await {
                        o.limit = Some(crate::LimitKind::Memory);
                    }
                }
                Err(RuntimeError::SandboxDied(why)) if self.oom_since(ooms_before, true).await => {
                    why.push_str(" (the sandbox hit its memory limit)");
                }
                _ => {}
            }
        }
        if outcome.is_err() {
            self.destroy().await;
        }
        outcome
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
        remove_container(&self.docker, &self.id).await;
        self.ooms.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_unique_and_readable() {
        assert_eq!(container_name("ab12", "sess_01/x", 3), "sandbox-ab12-sess_01-x.3");
        assert_ne!(container_name("ab12", "s", 1), container_name("ab12", "s", 2));
    }

    #[test]
    fn second_layer_modes_parse() {
        assert_eq!("auto".parse::<SecondLayer>(), Ok(SecondLayer::Auto));
        assert_eq!("on".parse::<SecondLayer>(), Ok(SecondLayer::On));
        assert!("maybe".parse::<SecondLayer>().is_err());
    }
}
