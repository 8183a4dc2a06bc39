//! A fake Kubernetes API server: the subset the Kubernetes runtime uses, answering as the real
//! one answers (objects, lists, watches as JSON lines, `Status` errors), over real HTTP that
//! kube's own client speaks to. No API server can run on these machines; this one stands in
//! for it alone. Its pods are real: each runs the real executor under bubblewrap, in a PID
//! namespace of its own, listening at an address of its own on loopback (`127.x.y.z`, the
//! pod's "IP"), with its own workspace. What the API server and kubelet would say of a pod
//! that cannot start, the fake says the same way:
//!
//! - an image it is told it cannot pull: `ErrImagePull`, then `ImagePullBackOff`;
//! - more memory than its one node has: `PodScheduled=False`, `Unschedulable`;
//! - a token Secret that does not exist: `CreateContainerConfigError`;
//! - a pod that Pod Security's profile refuses (`restricted` by default; `baseline`, which
//!   lets a pod with a user namespace of its own unmask `/proc`, as of policy 1.35): 403 at
//!   admission;
//! - a memory request past the namespace's quota, a memory limit past its LimitRange, or a
//!   validating admission webhook that denies the pod: 403 at admission, in the words the
//!   API server uses;
//! - listing pods without the right: 403 (RBAC);
//! - an OOM kill ([`FakeCluster::oom_kill`], or a container past its memory limit in its
//!   cgroup, where the host lets the fake make one): the whole container killed (as with
//!   `memory.oom.group` on cgroup v2), `OOMKilled`, the pod `Failed`.
//!
//! Deleting a pod kills its executor and deletes the Secrets it owns, as the garbage
//! collector does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sandbox_runtime::bwrap;
use sandbox_runtime::cgroup::{CgroupMode, Cgroups, SandboxCgroup};
use sandbox_runtime::kubernetes::spec;
use sandbox_runtime::ResourceLimits;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// What the fake cluster refuses or cannot do, as a test sets it.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Images no node can pull.
    pub unpullable: Vec<String>,
    /// Memory of the one node (pods asking more are unschedulable); 0: no limit.
    pub node_memory_bytes: u64,
    /// The namespace's memory quota (a pod whose request passes it is refused); 0: none.
    pub quota_memory_bytes: u64,
    /// RBAC: listing pods is forbidden.
    pub forbid_list: bool,
    /// The namespace's LimitRange: most memory per container; 0: none.
    pub limit_range_memory_bytes: u64,
    /// A validating admission webhook that denies every pod, with this message.
    pub webhook_denies: Option<String>,
    /// The Pod Security level its namespaces enforce (`restricted` unless a test says).
    pub pod_security: PodSecurity,
    /// Nodes mask parts of a container's `/proc`, as container runtimes do unless a pod asks
    /// for `procMount: Unmasked` and may have it: bubblewrap cannot mount a /proc of its own.
    pub masked_proc: bool,
}

/// A Pod Security Standards level a namespace enforces (`pod-security.kubernetes.io/enforce`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PodSecurity {
    #[default]
    Restricted,
    /// What the chart labels the sandbox namespace with when the second layer is on.
    Baseline,
}

impl PodSecurity {
    fn as_str(self) -> &'static str {
        match self {
            PodSecurity::Restricted => "restricted",
            PodSecurity::Baseline => "baseline",
        }
    }
}

struct PodEntry {
    object: Value,
    process: Option<tokio::process::Child>,
    oom: Arc<AtomicBool>,
    _workspace: Option<tempfile::TempDir>,
}

struct Inner {
    version: u64,
    pods: BTreeMap<(String, String), PodEntry>,
    secrets: BTreeMap<(String, String), Value>,
    /// Every pod event, for watches that start from an older version.
    history: Vec<(u64, String, Value)>,
}

#[derive(Clone)]
struct Cluster {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<(u64, String, Value)>,
    behaviour: Arc<Mutex<Behaviour>>,
    image: Arc<FakeImage>,
    /// The node's cgroups, where the host lets the fake make them: pods are held to their
    /// memory limit as a kubelet holds them.
    cgroups: Option<Arc<Cgroups>>,
    uids: Arc<AtomicU64>,
}

pub struct FakeCluster {
    pub url: String,
    cluster: Cluster,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.server.abort();
        let mut inner = self.cluster.lock();
        for entry in inner.pods.values_mut() {
            if let Some(p) = entry.process.as_mut() {
                let _ = p.start_kill();
            }
        }
    }
}

impl FakeCluster {
    /// Starts the fake on a free loopback port; its pods run `executor`.
    pub async fn start(executor: PathBuf, behaviour: Behaviour) -> anyhow::Result<FakeCluster> {
        let (events, _) = broadcast::channel(1024);
        let cluster = Cluster {
            inner: Arc::new(Mutex::new(Inner {
                version: 1,
                pods: BTreeMap::new(),
                secrets: BTreeMap::new(),
                history: Vec::new(),
            })),
            events,
            behaviour: Arc::new(Mutex::new(behaviour)),
            image: Arc::new(FakeImage::new(executor)?),
            cgroups: Cgroups::detect(CgroupMode::Auto, "fake-kubelet")
                .map_err(|e| eprintln!("fake kubelet: no cgroups, so no memory limits: {e}"))
                .ok()
                .map(Arc::new),
            uids: Arc::new(AtomicU64::new(1)),
        };
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods).post(create_pod))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod).delete(delete_pod))
            .route("/api/v1/namespaces/{ns}/secrets", axum::routing::post(create_secret))
            .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret).patch(patch_secret).delete(delete_secret))
            .with_state(cluster.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeCluster { url, cluster, server })
    }

    /// One fake cluster for the whole test process, on a runtime of its own (each test has
    /// its own runtime, and the fake must outlive each). Its pods end with the process.
    pub fn shared() -> &'static FakeCluster {
        Self::shared_running(crate::binary("sandbox-executor"))
    }

    /// [`Self::shared`], its pods running `executor` (a benchmark's release build) if it is
    /// the first to start it.
    pub fn shared_running(executor: anyhow::Result<PathBuf>) -> &'static FakeCluster {
        static SHARED: std::sync::OnceLock<FakeCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
                let Ok(runtime) = runtime else { return };
                runtime.block_on(async move {
                    // Its namespaces are labelled as the chart labels a sandbox namespace with
                    // the second layer on: its users run the second layer.
                    let behaviour = Behaviour { pod_security: PodSecurity::Baseline, ..Behaviour::default() };
                    let started = match executor {
                        Ok(executor) => FakeCluster::start(executor, behaviour).await,
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(started);
                    std::future::pending::<()>().await;
                });
            });
            match rx.recv() {
                Ok(Ok(fake)) => fake,
                Ok(Err(e)) => panic!("the shared fake cluster did not start: {e:#}"),
                Err(_) => panic!("the shared fake cluster's thread ended"),
            }
        })
    }

    /// A kubeconfig in `dir` that points at this cluster, as kubectl's would at a real one.
    pub fn kubeconfig_in(&self, dir: &std::path::Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let server = &self.url;
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
            ),
        )?;
        Ok(path)
    }

    /// Deletes every pod of `namespace` (and the tokens they own), as `kubectl delete pods --all`.
    pub fn delete_pods(&self, namespace: &str) {
        let mut inner = self.cluster.lock();
        let names: Vec<String> = inner.pods.keys().filter(|(ns, _)| ns == namespace).map(|(_, n)| n.clone()).collect();
        for name in names {
            self.cluster.remove_pod(&mut inner, namespace, &name);
        }
    }

    /// Changes what the cluster refuses from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.cluster.behaviour.lock().unwrap_or_else(|p| p.into_inner()) = behaviour;
    }

    /// The names of the pods in `namespace`.
    pub fn pods(&self, namespace: &str) -> Vec<String> {
        self.cluster.lock().pods.keys().filter(|(ns, _)| ns == namespace).map(|(_, n)| n.clone()).collect()
    }

    /// The names of the Secrets in `namespace`.
    pub fn secrets(&self, namespace: &str) -> Vec<String> {
        self.cluster.lock().secrets.keys().filter(|(ns, _)| ns == namespace).map(|(_, n)| n.clone()).collect()
    }

    /// Pod `name` as the API server has it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.cluster.lock().pods.get(&(namespace.to_string(), name.to_string())).map(|e| e.object.clone())
    }

    /// Kills pod `name`'s container as the kernel's OOM killer would, and reports it so.
    pub fn oom_kill(&self, namespace: &str, name: &str) {
        let mut inner = self.cluster.lock();
        if let Some(entry) = inner.pods.get_mut(&(namespace.to_string(), name.to_string())) {
            entry.oom.store(true, Ordering::SeqCst);
            if let Some(p) = entry.process.as_mut() {
                let _ = p.start_kill();
            }
        }
    }
}

impl Cluster {
    /// Deletes pod `name` of `ns`, as the API server and kubelet do: its container is killed,
    /// watchers hear of it, and the garbage collector takes what the pod owned (its token).
    fn remove_pod(&self, inner: &mut Inner, ns: &str, name: &str) -> Option<Value> {
        let mut entry = inner.pods.remove(&(ns.to_string(), name.to_string()))?;
        if let Some(p) = entry.process.as_mut() {
            let _ = p.start_kill();
        }
        let mut object = entry.object.clone();
        self.pod_event(inner, "DELETED", ns, &mut object);
        let uid = object["metadata"]["uid"].clone();
        inner.secrets.retain(|(s_ns, _), secret| {
            let owned = secret["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
            !(s_ns == ns && owned)
        });
        Some(object)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn behaviour(&self) -> Behaviour {
        self.behaviour.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a change of pod `key` (its object set or removed) and tells the watches.
    fn pod_event(&self, inner: &mut Inner, kind: &str, ns: &str, object: &mut Value) {
        inner.version += 1;
        object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
        let event = json!({"type": kind, "object": object.clone()});
        inner.history.push((inner.version, ns.to_string(), event.clone()));
        let _ = self.events.send((inner.version, ns.to_string(), event));
    }

    /// Sets pod `name`'s status by `change`, if the pod still exists.
    fn update_status(&self, ns: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(mut object) = inner.pods.get(&key).map(|e| e.object.clone()) else { return };
        change(&mut object["status"]);
        self.pod_event(&mut inner, "MODIFIED", ns, &mut object);
        if let Some(entry) = inner.pods.get_mut(&key) {
            entry.object = object;
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", format!("{kind} \"{name}\" not found"))
}

/// `k=v,k2=v2` (equality only, as the runtime sends).
fn matches(selector: Option<&String>, values: &Value) -> bool {
    selector.is_none_or(|s| {
        s.split(',').filter(|p| !p.is_empty()).all(|pair| match pair.split_once('=') {
            Some((k, v)) => values.get(k).and_then(Value::as_str) == Some(v),
            None => false,
        })
    })
}

fn selected(q: &BTreeMap<String, String>, pod: &Value) -> bool {
    let name = json!({"metadata.name": pod["metadata"]["name"]});
    matches(q.get("labelSelector"), &pod["metadata"]["labels"]) && matches(q.get("fieldSelector"), &name)
}

async fn list_pods(
    State(c): State<Cluster>,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if c.behaviour().forbid_list {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("pods is forbidden: User \"system:serviceaccount:platform:sandboxd\" cannot list resource \"pods\" in API group \"\" in the namespace \"{ns}\""),
        );
    }
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let inner = c.lock();
        let items: Vec<Value> = inner
            .pods
            .iter()
            .filter(|((n, _), e)| *n == ns && selected(&q, &e.object))
            .map(|(_, e)| e.object.clone())
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": inner.version.to_string()}, "items": items});
        return Json(list).into_response();
    }
    // A watch: the events after the version given, then each as it happens, a JSON line each.
    let since: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (backlog, mut live) = {
        let inner = c.lock();
        let backlog: Vec<(u64, String, Value)> = inner.history.iter().filter(|(v, _, _)| *v > since).cloned().collect();
        (backlog, c.events.subscribe())
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let mut last = since;
        let keep = |ev_ns: &str, event: &Value| ev_ns == ns && selected(&q, &event["object"]);
        for (v, ev_ns, event) in backlog {
            last = v;
            if keep(&ev_ns, &event) && tx.send(Ok(line(&event))).await.is_err() {
                return;
            }
        }
        while let Ok((v, ev_ns, event)) = live.recv().await {
            if v <= last {
                continue;
            }
            last = v;
            if keep(&ev_ns, &event) && tx.send(Ok(line(&event))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn line(event: &Value) -> bytes::Bytes {
    let mut text = event.to_string();
    text.push('\n');
    bytes::Bytes::from(text)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn get_pod(State(c): State<Cluster>, Path((ns, name)): Path<(String, String)>) -> Response {
    match c.lock().pods.get(&(ns, name.clone())) {
        Some(e) => Json(e.object.clone()).into_response(),
        None => not_found("pods", &name),
    }
}

/// What Pod Security (policy version 1.35) refuses of `pod` at `level` (`restricted` or
/// `baseline`), in its words.
fn pod_security_violations(pod: &Value, level: PodSecurity) -> Vec<String> {
    let spec = &pod["spec"];
    let user_namespace = spec["hostUsers"] == json!(false);
    let unmasked: Vec<&str> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["securityContext"]["procMount"].as_str().is_some_and(|m| m != "Default"))
        .filter_map(|c| c["name"].as_str())
        .collect();
    let mut why = match level {
        PodSecurity::Restricted => restricted_violations(pod),
        PodSecurity::Baseline => Vec::new(),
    };
    if spec["hostNetwork"] == json!(true) || spec["hostPID"] == json!(true) || spec["hostIPC"] == json!(true) {
        why.push("host namespaces".into());
    }
    // Baseline lets a pod in a user namespace of its own unmask /proc (1.35+); restricted never.
    if !unmasked.is_empty() && (level == PodSecurity::Restricted || !user_namespace) {
        let names: Vec<String> = unmasked.iter().map(|n| format!("\"{n}\"")).collect();
        why.push(format!(
            "procMount (container {} must not set securityContext.procMount to \"Unmasked\")",
            names.join(", ")
        ));
    }
    why
}

/// Pod Security's "restricted" profile beyond baseline, the parts a sandbox pod must meet.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut why = Vec::new();
    let spec = &pod["spec"];
    let pod_non_root = spec["securityContext"]["runAsNonRoot"] == json!(true);
    let pod_seccomp = spec["securityContext"]["seccompProfile"]["type"].as_str();
    for c in spec["containers"].as_array().into_iter().flatten() {
        let sc = &c["securityContext"];
        let name = c["name"].as_str().unwrap_or_default();
        if sc["allowPrivilegeEscalation"] != json!(false) {
            why.push(format!("allowPrivilegeEscalation != false (container \"{name}\" must set securityContext.allowPrivilegeEscalation=false)"));
        }
        let drops_all = sc["capabilities"]["drop"].as_array().is_some_and(|d| d.contains(&json!("ALL")));
        if !drops_all {
            why.push(format!(
                "unrestricted capabilities (container \"{name}\" must set securityContext.capabilities.drop=[\"ALL\"])"
            ));
        }
        if !pod_non_root && sc["runAsNonRoot"] != json!(true) {
            why.push(format!("runAsNonRoot != true (container \"{name}\" must set securityContext.runAsNonRoot=true)"));
        }
        let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            why.push("seccompProfile (pod or containers must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")".into());
        }
    }
    why
}

/// Bytes of a quantity as the runtime writes them (plain integers).
fn quantity_bytes(q: &Value) -> u64 {
    q.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn create_pod(State(c): State<Cluster>, Path(ns): Path<String>, Json(mut pod): Json<Value>) -> Response {
    let Some(name) = pod["metadata"]["name"].as_str().map(String::from) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Pod \"\" is invalid: metadata.name: Required value".into(),
        );
    };
    let behaviour = c.behaviour();
    let violations = pod_security_violations(&pod, behaviour.pod_security);
    if !violations.is_empty() {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods \"{name}\" is forbidden: violates PodSecurity \"{}:latest\": {}",
                behaviour.pod_security.as_str(),
                violations.join(", ")
            ),
        );
    }
    let memory = quantity_bytes(&pod["spec"]["containers"][0]["resources"]["requests"]["memory"]);
    if behaviour.quota_memory_bytes > 0 && memory > behaviour.quota_memory_bytes {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods \"{name}\" is forbidden: exceeded quota: sandboxes, requested: requests.memory={memory}, used: requests.memory=0, limited: requests.memory={}",
                behaviour.quota_memory_bytes
            ),
        );
    }
    let limit = quantity_bytes(&pod["spec"]["containers"][0]["resources"]["limits"]["memory"]);
    if behaviour.limit_range_memory_bytes > 0 && limit > behaviour.limit_range_memory_bytes {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods \"{name}\" is forbidden: maximum memory usage per Container is {}, but limit is {limit}",
                behaviour.limit_range_memory_bytes
            ),
        );
    }
    if let Some(message) = &behaviour.webhook_denies {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("admission webhook \"pods.policy.example.com\" denied the request: {message}"),
        );
    }
    let mut inner = c.lock();
    let key = (ns.clone(), name.clone());
    if inner.pods.contains_key(&key) {
        return status(StatusCode::CONFLICT, "AlreadyExists", format!("pods \"{name}\" already exists"));
    }
    let uid = format!("00000000-0000-4000-8000-{:012}", c.uids.fetch_add(1, Ordering::SeqCst));
    pod["metadata"]["uid"] = json!(uid);
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["creationTimestamp"] = json!("2026-12-07T00:00:00Z");
    pod["status"] = json!({"phase": "Pending", "qosClass": "Guaranteed"});
    c.pod_event(&mut inner, "ADDED", &ns, &mut pod);
    let oom = Arc::new(AtomicBool::new(false));
    inner.pods.insert(key, PodEntry { object: pod.clone(), process: None, oom: Arc::clone(&oom), _workspace: None });
    drop(inner);
    let ip = pod_ip();
    tokio::spawn(kubelet(c.clone(), ns, name, ip, behaviour, memory, oom));
    (StatusCode::CREATED, Json(pod)).into_response()
}

/// The sandbox image as the fake's pods see it, and bubblewrap standing in for the container
/// runtime: the host's `/usr` (which has what the image has: Python, Node, bubblewrap),
/// with `/usr/local/bin` holding the executor alone, as in the image; the image's prepared
/// `/etc` for the second layer at [`bwrap::IMAGE_ETC`]; the host's `/etc` as the container's.
pub struct FakeImage {
    executor: PathBuf,
    etc: tempfile::TempDir,
}

impl FakeImage {
    pub fn new(executor: PathBuf) -> anyhow::Result<FakeImage> {
        let etc = tempfile::tempdir()?;
        bwrap::prepare_etc(etc.path())?;
        Ok(FakeImage { executor, etc })
    }

    /// `argv` in a container of this image, as a pod's container runs: as `user` in a user
    /// namespace of its own with no capabilities (a pod with `hostUsers: false`), `argv[0]` as
    /// PID 1 of a PID namespace of its own, `workspace` at /workspace, a fresh /tmp, and the
    /// host's network (a pod's own, in a real cluster). It ends with its parent.
    ///
    /// Run by root, the container is made by the host's unprivileged `sandbox` user (as the
    /// local runtime's sandboxes are), so that its user namespace maps no host root: a pod's
    /// does not either, and `/proc` is then mounted whole, as with `procMount: Unmasked` (with
    /// host root mapped, bubblewrap covers parts of it, and the second layer's own /proc
    /// mount is refused). `workspace` is given to that user.
    pub fn container(
        &self,
        workspace: &std::path::Path,
        user: (u32, u32),
        argv: &[String],
        masked_proc: bool,
    ) -> std::process::Command {
        self.command(&["bwrap"], workspace, user, argv, masked_proc)
    }

    /// `argv` in a container of this image, started by `program` (bubblewrap, or something
    /// that ends in running it).
    fn command(
        &self,
        program: &[&str],
        workspace: &std::path::Path,
        user: (u32, u32),
        argv: &[String],
        masked_proc: bool,
    ) -> std::process::Command {
        let mut command = std::process::Command::new(program[0]);
        command.args(&program[1..]);
        if sandbox_sys::real_uid() == 0 {
            if let Ok(Some((uid, gid))) = sandbox_sys::lookup_user("sandbox") {
                let _ = sandbox_sys::chown(workspace, uid, gid);
                use std::os::unix::process::CommandExt;
                command.uid(uid).gid(gid);
            }
        }
        command
            .args(["--unshare-pid", "--as-pid-1", "--unshare-user"])
            .args(["--uid", &user.0.to_string(), "--gid", &user.1.to_string()])
            .args(["--die-with-parent", "--tmpfs", "/", "--ro-bind", "/usr", "/usr"])
            .args(["--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin"])
            .args(["--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"])
            .args(["--ro-bind", "/etc", "/etc", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
        if masked_proc {
            // As a container runtime masks it: part of /proc covered read-only.
            command.args(["--ro-bind", "/proc/sys", "/proc/sys"]);
        }
        command
            .args(["--tmpfs", "/usr/local/bin", "--ro-bind"])
            .arg(&self.executor)
            .arg(spec::EXECUTOR_IN_IMAGE)
            .arg("--ro-bind")
            .arg(self.etc.path())
            .arg(bwrap::IMAGE_ETC)
            .arg("--bind")
            .arg(workspace)
            .args([sandbox_protocol::WORKSPACE_DIR, "--chdir", sandbox_protocol::WORKSPACE_DIR, "--"])
            .args(argv);
        command
    }
}

/// A loopback address no other pod has, in this process or another test process (each test
/// may run in a process of its own): the pod's number in the second octet, the process id in
/// the other two.
fn pod_ip() -> String {
    static PODS: AtomicU64 = AtomicU64::new(0);
    let n = PODS.fetch_add(1, Ordering::SeqCst) % 150;
    let pid = std::process::id();
    format!("127.{}.{}.{}", 100 + n, (pid >> 8) & 0xff, pid & 0xff)
}

/// What the scheduler and kubelet do with a new pod: place it, pull its image, start its
/// container (the executor at the pod's address), and report its end.
async fn kubelet(c: Cluster, ns: String, name: String, ip: String, b: Behaviour, memory: u64, oom: Arc<AtomicBool>) {
    let Some(pod) = c.lock().pods.get(&(ns.clone(), name.clone())).map(|e| e.object.clone()) else { return };
    if b.node_memory_bytes > 0 && memory > b.node_memory_bytes {
        c.update_status(&ns, &name, |s| {
            s["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."}]);
        });
        return;
    }
    c.update_status(&ns, &name, |s| {
        s["conditions"] = json!([{"type": "PodScheduled", "status": "True"}]);
        s["hostIP"] = json!("127.0.0.1");
        s["containerStatuses"] = json!([{"name": "sandbox", "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}]);
    });
    let container = &pod["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap_or_default().to_string();
    if b.unpullable.contains(&image) {
        let message = format!("failed to pull and unpack image \"{image}\": failed to resolve reference: not found");
        for reason in ["ErrImagePull", "ImagePullBackOff"] {
            let message = message.clone();
            c.update_status(&ns, &name, |s| {
                s["containerStatuses"][0]["state"] = json!({"waiting": {"reason": reason, "message": message}});
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return;
    }
    // The environment, with secret references resolved as the kubelet does (it retries while
    // a Secret is missing, then reports it).
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let key = var["name"].as_str().unwrap_or_default().to_string();
        if let Some(v) = var["value"].as_str() {
            env.insert(key, v.to_string());
            continue;
        }
        let reference = &var["valueFrom"]["secretKeyRef"];
        let (secret, field) =
            (reference["name"].as_str().unwrap_or_default(), reference["key"].as_str().unwrap_or_default());
        let mut value = None;
        for _ in 0..20 {
            value = c
                .lock()
                .secrets
                .get(&(ns.clone(), secret.to_string()))
                .and_then(|s| s["data"][field].as_str().map(String::from));
            if value.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match value.and_then(|v| base64_decode(&v)) {
            Some(v) => {
                env.insert(key, v);
            }
            None => {
                let message = format!("secret \"{secret}\" not found");
                c.update_status(&ns, &name, |s| {
                    s["containerStatuses"][0]["state"] =
                        json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}});
                });
                return;
            }
        }
    }
    // The pod's own address: `0.0.0.0` in a pod's network namespace is the pod's IP.
    env.insert(sandbox_protocol::LISTEN_ENV.into(), format!("{ip}:{}", sandbox_protocol::EXECUTOR_PORT));
    let Ok(workspace) = tempfile::tempdir() else { return };
    let argv: Vec<String> = ["command", "args"]
        .iter()
        .flat_map(|k| container[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let security = &pod["spec"]["securityContext"];
    let id = |key: &str| security[key].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let user = (id("runAsUser"), id("runAsGroup"));
    // Held before it starts until a line comes on its stdin: time to put it in its cgroup,
    // as a container runtime does before it runs anything of the container's.
    let held = ["sh", "-c", "read -r _ && exec \"$@\"", "sh", "bwrap"];
    let child = tokio::process::Command::from(c.image.command(&held, workspace.path(), user, &argv, b.masked_proc))
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else { return };
    // The container's cgroup, with its memory limit; an OOM kill in it ends the whole
    // container (`memory.oom.group`, as the kubelet sets on cgroup v2).
    let cpu = container["resources"]["limits"]["cpu"].as_str().unwrap_or("1");
    let cpus = match cpu.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
        None => cpu.parse::<f64>(),
    };
    let limits = ResourceLimits { memory_bytes: memory.max(1 << 20), pids: NODE_PIDS_LIMIT, cpus: cpus.unwrap_or(1.0) };
    let cgroup = Contained(c.cgroups.as_ref().and_then(|cgroups| {
        let made = cgroups.create(&format!("{ns}.{name}"), &limits);
        let cg = made.map_err(|e| eprintln!("fake kubelet: no cgroup for pod {name}: {e}")).ok().flatten()?;
        let joined = cg.oom_kills_whole().and_then(|()| match child.id() {
            Some(pid) => cg.add_process(pid),
            None => Ok(()), // it has ended already
        });
        match joined {
            Ok(()) => Some(cg),
            Err(e) => {
                eprintln!("fake kubelet: pod {name} not in its cgroup: {e}");
                cg.remove();
                None
            }
        }
    }));
    // In its cgroup: the container may start.
    if let Some(mut hold) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = hold.write_all(b"go\n").await;
    }
    // The container's log: echoed for the test's output, its tail kept for the termination
    // message (`FallbackToLogsOnError`).
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let (log, pod) = (Arc::clone(&log), name.clone());
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[pod {pod}] {line}");
                let mut tail = log.lock().unwrap_or_else(|p| p.into_inner());
                tail.push_str(&line);
                tail.push('\n');
                if tail.len() > 2048 {
                    let cut = tail.len() - 2048;
                    let cut = (cut..tail.len()).find(|&i| tail.is_char_boundary(i)).unwrap_or(0);
                    tail.drain(..cut);
                }
            }
        });
    }
    {
        let mut inner = c.lock();
        match inner.pods.get_mut(&(ns.clone(), name.clone())) {
            Some(entry) => {
                entry.process = Some(child);
                entry._workspace = Some(workspace);
            }
            None => return, // deleted meanwhile: the child is dropped, and killed
        }
    }
    // Ready once its container runs, as the kubelet says of a pod without a readiness probe:
    // the executor may not listen yet.
    c.update_status(&ns, &name, |s| {
        s["phase"] = json!("Running");
        s["podIP"] = json!(ip);
        s["podIPs"] = json!([{"ip": ip}]);
        s["conditions"] = json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"}]);
        s["containerStatuses"][0]["ready"] = json!(true);
        s["containerStatuses"][0]["started"] = json!(true);
        s["containerStatuses"][0]["state"] = json!({"running": {"startedAt": "2026-12-07T00:00:01Z"}});
    });
    // Its end, as the kubelet reports it.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let exited = {
            let mut inner = c.lock();
            let Some(entry) = inner.pods.get_mut(&(ns.clone(), name.clone())) else { return };
            match entry.process.as_mut().map(|p| p.try_wait()) {
                Some(Ok(Some(exit))) => Some(exit),
                Some(Ok(None)) => None,
                _ => return,
            }
        };
        let Some(exit) = exited else {
            if let Some(cg) = cgroup.0.as_ref().filter(|cg| cg.waiting_at_oom() || cg.counters().oom_kills > 0) {
                oom.store(true, Ordering::SeqCst);
                cg.kill_all();
            }
            continue;
        };
        let killed_for_memory = oom.load(Ordering::SeqCst);
        let code = exit.code().unwrap_or(137);
        let (phase, reason) = match (killed_for_memory, code) {
            (true, _) => ("Failed", "OOMKilled"),
            (false, 0) => ("Succeeded", "Completed"),
            (false, _) => ("Failed", "Error"),
        };
        let code = if killed_for_memory { 137 } else { code };
        // Give the log reader a moment to take the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let message = log.lock().unwrap_or_else(|p| p.into_inner()).trim_end().to_string();
        c.update_status(&ns, &name, |s| {
            s["phase"] = json!(phase);
            s["containerStatuses"][0]["ready"] = json!(false);
            s["containerStatuses"][0]["state"] = json!({"terminated": {"reason": reason, "exitCode": code}});
            if code != 0 && !killed_for_memory && !message.is_empty() {
                s["containerStatuses"][0]["state"]["terminated"]["message"] = json!(message);
            }
        });
        return;
    }
}

/// The node's process limit per pod (`podPidsLimit`): the same for every pod, whatever the
/// session's limits say.
const NODE_PIDS_LIMIT: u32 = 1024;

/// A container's cgroup: what is left in it is killed, and it is removed, when the container
/// is done with.
struct Contained(Option<SandboxCgroup>);

impl Drop for Contained {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            cg.kill_all();
            cg.remove();
        }
    }
}

fn base64_decode(text: &str) -> Option<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for b in text.bytes().filter(|b| *b != b'=') {
        let v = ALPHABET.iter().position(|a| *a == b)? as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn delete_pod(State(c): State<Cluster>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut inner = c.lock();
    match c.remove_pod(&mut inner, &ns, &name) {
        Some(object) => Json(object).into_response(),
        None => not_found("pods", &name),
    }
}

async fn create_secret(State(c): State<Cluster>, Path(ns): Path<String>, Json(mut secret): Json<Value>) -> Response {
    let Some(name) = secret["metadata"]["name"].as_str().map(String::from) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Secret \"\" is invalid: metadata.name: Required value".into(),
        );
    };
    let mut inner = c.lock();
    let key = (ns.clone(), name.clone());
    if inner.secrets.contains_key(&key) {
        return status(StatusCode::CONFLICT, "AlreadyExists", format!("secrets \"{name}\" already exists"));
    }
    inner.version += 1;
    secret["metadata"]["uid"] = json!(format!("secret-{}", c.uids.fetch_add(1, Ordering::SeqCst)));
    secret["metadata"]["namespace"] = json!(ns);
    secret["metadata"]["resourceVersion"] = json!(inner.version.to_string());
    inner.secrets.insert(key, secret.clone());
    (StatusCode::CREATED, Json(secret)).into_response()
}

async fn get_secret(State(c): State<Cluster>, Path((ns, name)): Path<(String, String)>) -> Response {
    match c.lock().secrets.get(&(ns, name.clone())) {
        Some(s) => Json(s.clone()).into_response(),
        None => not_found("secrets", &name),
    }
}

/// A JSON merge patch (RFC 7386), which is what the runtime sends.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    if let Some(map) = target.as_object_mut() {
                        map.remove(k);
                    }
                } else {
                    merge(&mut target[k], v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The body of a patch: kube sends it as `application/merge-patch+json`, which axum's `Json`
/// refuses.
async fn patch_secret(
    State(c): State<Cluster>,
    Path((ns, name)): Path<(String, String)>,
    body: bytes::Bytes,
) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "the patch is not JSON".into());
    };
    let mut inner = c.lock();
    inner.version += 1;
    let version = inner.version;
    match inner.secrets.get_mut(&(ns, name.clone())) {
        Some(secret) => {
            merge(secret, &patch);
            secret["metadata"]["resourceVersion"] = json!(version.to_string());
            Json(secret.clone()).into_response()
        }
        None => not_found("secrets", &name),
    }
}

async fn delete_secret(State(c): State<Cluster>, Path((ns, name)): Path<(String, String)>) -> Response {
    match c.lock().secrets.remove(&(ns, name.clone())) {
        Some(s) => Json(s).into_response(),
        None => not_found("secrets", &name),
    }
}

/// The cluster the Kubernetes tests that can run on a real one use: the shared fake, or the
/// real cluster `scripts/e2e-kubernetes.sh` names (`SANDBOX_E2E_KUBECONFIG`, with its sandbox
/// image in `SANDBOX_E2E_IMAGE` and its namespace in `SANDBOX_E2E_NAMESPACE`), reached with
/// `kubectl` as an operator would.
pub enum TestCluster {
    Fake(&'static FakeCluster),
    Real { kubeconfig: PathBuf, namespace: String, image: Option<String> },
}

impl TestCluster {
    pub fn for_tests() -> TestCluster {
        match std::env::var_os("SANDBOX_E2E_KUBECONFIG") {
            Some(kubeconfig) => TestCluster::Real {
                kubeconfig: PathBuf::from(kubeconfig),
                namespace: std::env::var("SANDBOX_E2E_NAMESPACE").unwrap_or_else(|_| "sandbox-e2e".into()),
                image: std::env::var("SANDBOX_E2E_IMAGE").ok(),
            },
            None => TestCluster::Fake(FakeCluster::shared()),
        }
    }

    /// A kubeconfig for the cluster (written into `dir` for the fake).
    pub fn kubeconfig_in(&self, dir: &std::path::Path) -> std::io::Result<PathBuf> {
        match self {
            TestCluster::Fake(fake) => fake.kubeconfig_in(dir),
            TestCluster::Real { kubeconfig, .. } => Ok(kubeconfig.clone()),
        }
    }

    /// The namespace a test's sandboxes run in: on the fake, `wanted` (a namespace per test);
    /// on a real cluster, the one the script made (tests run one at a time there).
    pub fn namespace(&self, wanted: &str) -> String {
        match self {
            TestCluster::Fake(_) => wanted.to_string(),
            TestCluster::Real { namespace, .. } => namespace.clone(),
        }
    }

    /// The sandbox image to run, where the cluster needs one named (the fake runs its own).
    pub fn image(&self) -> Option<String> {
        match self {
            TestCluster::Fake(_) => None,
            TestCluster::Real { image, .. } => image.clone(),
        }
    }

    /// The names of the sandbox pods in `namespace` (on a real cluster, those not yet being
    /// deleted).
    pub fn pods(&self, namespace: &str) -> Vec<String> {
        match self {
            TestCluster::Fake(fake) => fake.pods(namespace),
            TestCluster::Real { kubeconfig, .. } => {
                let template = "{range .items[?(!@.metadata.deletionTimestamp)]}{.metadata.name}{\"\\n\"}{end}";
                let out = std::process::Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["get", "pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=sandboxd"])
                    .args(["-o", &format!("jsonpath={template}")])
                    .output();
                match out {
                    Ok(o) if o.status.success() => {
                        String::from_utf8_lossy(&o.stdout).lines().filter(|l| !l.is_empty()).map(String::from).collect()
                    }
                    // Unknown is not none: a count the tests cannot mistake for a clean cluster.
                    _ => vec!["(kubectl failed)".to_string()],
                }
            }
        }
    }

    /// Deletes every sandbox pod of `namespace`.
    pub fn delete_pods(&self, namespace: &str) {
        match self {
            TestCluster::Fake(fake) => fake.delete_pods(namespace),
            TestCluster::Real { kubeconfig, .. } => {
                let _ = std::process::Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["delete", "pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=sandboxd"])
                    .args(["--wait=false", "--grace-period=0"])
                    .output();
            }
        }
    }
}
