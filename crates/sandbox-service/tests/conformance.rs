//! The runtime conformance suite: what every runtime must do, written against the
//! [`Runtime`]/[`Sandbox`] traits and the service API, never against one implementation.
//!
//! Each runtime is one line of [`conformance!`] at the end of this file: its name, how to
//! point a config at it, and how to count what it left running. The macro gives it every test
//! below as a module of its own (`cargo nextest run -E 'test(/^local::/)'` runs one runtime's).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sandbox_api::{
    CreateExecution, CreateSession, Execution, ExecutionReason, ExecutionStatus, Language, LimitsRequest, Output,
    SessionStatus,
};
use sandbox_protocol::ExecRequest;
use sandbox_runtime::{ResourceLimits, Sandbox};
use sandbox_service::access::auth::Caller;
use sandbox_service::config::Config;
use sandbox_service::executions::queue::Submission;
use sandbox_service::{Service, ServiceError};
use sandbox_test_support::kubernetes::TestCluster;
use sandbox_workspace::RelPath;

/// What a runtime brings to the suite.
pub struct Target {
    /// Points a test config (whose data dir is set) at the runtime.
    pub configure: fn(&mut Config),
    /// The same as `SANDBOXD_*` variables, for the tests that run the real `sandboxd` binary
    /// on the given data dir.
    pub env: fn(&Path) -> Vec<(String, String)>,
    /// How many sandboxes (processes, containers, pods) of the data dir's server still run.
    pub leftovers: fn(&Path) -> usize,
    /// Whether its sandboxes outlive sandboxd (a cluster's pods): a killed or stopped
    /// server leaves them running, and the next finds them again.
    pub keeps_sandboxes: bool,
    /// Whether a session's process limit is the runtime's to hold (on Kubernetes it is the
    /// node's `podPidsLimit`, the same for every pod).
    pub holds_pids_limit: bool,
    /// Removes what the data dir's server left running on purpose (pods it let go of).
    pub clean_up: fn(&Path),
}

/// A service in-process over the runtime, on a data dir of its own; shut down when dropped,
/// passed or failed (no sandbox left running, no volume left mounted).
struct Harness {
    service: Arc<Service>,
    target: &'static Target,
    data: tempfile::TempDir,
}

impl Harness {
    async fn start(target: &'static Target) -> anyhow::Result<Harness> {
        let data = tempfile::Builder::new().prefix("sandbox-conformance-").tempdir_in("/tmp")?;
        let mut config = sandbox_test_support::test_config(data.path())?;
        (target.configure)(&mut config);
        let service = Arc::new(Service::open(config).await?);
        // The harness first: on a runtime that is not ready, its drop still unmounts the
        // system volume that opening the service mounted.
        let harness = Harness { service, target, data };
        let readiness = harness.service.readiness().await;
        anyhow::ensure!(readiness.ready, "runtime not ready: {}", readiness.sandbox.message);
        Ok(harness)
    }

    async fn session(&self, limits: Option<LimitsRequest>) -> anyhow::Result<String> {
        Ok(self.service.create_session(&Caller::Open, CreateSession { limits, ..Default::default() }).await?.id)
    }

    async fn run(&self, session: &str, req: CreateExecution) -> anyhow::Result<Execution> {
        match self.service.submit_execution(&Caller::Open, session, req, false).await? {
            Submission::Finished(e) => Ok(e),
            _ => anyhow::bail!("a waiting submission must answer with the finished execution"),
        }
    }

    async fn python(&self, session: &str, code: &str) -> anyhow::Result<Execution> {
        self.run(session, CreateExecution::new(Language::Python, code)).await
    }

    /// A bare sandbox straight from the runtime, on a workspace of its own.
    async fn sandbox(&self, name: &str) -> anyhow::Result<Box<dyn Sandbox>> {
        let limits = ResourceLimits { memory_bytes: 256 << 20, pids: 64, cpus: 1.0 };
        Ok(self.service.start_bare_sandbox(name, limits).await?)
    }

    fn leftovers(&self) -> usize {
        (self.target.leftovers)(self.data.path())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let service = Arc::clone(&self.service);
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(service.shut_down_sandboxes());
        });
        self.service.unmount_system_dir();
        (self.target.clean_up)(self.data.path());
    }
}

fn request(language: Language, code: &str, kernel: bool) -> ExecRequest {
    sandbox_test_support::exec_request(&format!("conformance-{}", rand_suffix()), language, code, kernel)
}

fn rand_suffix() -> String {
    sandbox_service::executions::new_id("x")
}

fn last_error(e: &Execution) -> Option<&str> {
    e.outputs.iter().rev().find_map(|o| match o {
        Output::Error { ename, .. } => Some(ename.as_str()),
        _ => None,
    })
}

async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Python, Node.js and shell one-shot, and Python in the kernel, straight through the traits.
pub async fn runs_each_language(target: &'static Target) -> anyhow::Result<()> {
    let h = Harness::start(target).await?;
    let sandbox = h.sandbox("conformance-languages").await?;
    let cases = [
        (Language::Python, "import sys; print(sys.version_info[0])", "3\n"),
        (Language::Node, "console.log(6 * 7)", "42\n"),
        (Language::Bash, "echo $((40 + 2))", "42\n"),
    ];
    for (language, code, stdout) in cases {
        let out = sandbox.exec(request(language, code, false), None).await?;
        assert_eq!((out.result.exit_code, out.result.stdout.as_str()), (Some(0), stdout), "{language:?}: {out:?}");
    }
    sandbox.start_kernel(Default::default()).await?;
    sandbox.exec(request(Language::Python, "kept = 21", true), None).await?;
    let out = sandbox.exec(request(Language::Python, "print(kept * 2)", true), None).await?;
    assert_eq!(out.result.stdout, "42\n", "{out:?}");
    sandbox.destroy().await;
    Ok(())
}

/// The kernel keeps state, an interrupt ends a cell and keeps it, and a kernel that dies is
/// replaced by a fresh one.
pub async fn kernel_keeps_state_and_survives_interrupt_and_death(target: &'static Target) -> anyhow::Result<()> {
    let h = Harness::start(target).await?;
    let s = h.session(None).await?;
    let layers = h.service.session(&Caller::Open, &s).await?.isolation.unwrap_or_default();
    assert!(!layers.is_empty() && !layers.contains("NO "), "every layer is up, and the record says which: {layers}");
    h.python(&s, "x = 20").await?;
    assert_eq!(h.python(&s, "print(x + 22)").await?.stdout, "42\n");

    let mut long = CreateExecution::new(Language::Python, "import time\nopen('started', 'w').close()\ntime.sleep(60)");
    long.wait = Some(false);
    let Submission::Accepted(queued) = h.service.submit_execution(&Caller::Open, &s, long, false).await? else {
        anyhow::bail!("wait: false must be accepted");
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.service.files(&Caller::Open, &s).await?.stat(RelPath::parse("started")?).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the cell never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.service.interrupt(&Caller::Open, &s).await?, "a running cell to interrupt");
    assert_eq!(h.python(&s, "print(x)").await?.stdout, "20\n", "the state outlives an interrupt");
    let interrupted = h.service.execution(&Caller::Open, &queued.id).await?;
    assert_eq!(last_error(&interrupted), Some("KeyboardInterrupt"), "{interrupted:?}");

    let died = h.python(&s, "import os\nos._exit(3)").await?;
    assert_eq!((died.status, died.reason), (ExecutionStatus::KernelDied, Some(ExecutionReason::KernelExited)));
    assert_eq!(h.python(&s, "print('x' in globals())").await?.stdout, "False\n", "a fresh kernel");
    assert_eq!(h.service.session(&Caller::Open, &s).await?.kernel_restarts, 1);
    Ok(())
}

/// Memory, process count, time and output are each held to their limit, and the session
/// goes on after each.
pub async fn each_limit_ends_what_passes_it(target: &'static Target) -> anyhow::Result<()> {
    let h = Harness::start(target).await?;
    let limits = LimitsRequest { memory_mb: Some(128), pids: Some(32), cpu: None };
    let s = h.session(Some(limits)).await?;
    let fresh = |language, code: &str, timeout_s| CreateExecution {
        timeout_s: Some(timeout_s),
        fresh: Some(true),
        ..CreateExecution::new(language, code)
    };

    let memory = "x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))";
    let e = h.run(&s, fresh(Language::Python, memory, 20.0)).await?;
    assert_eq!((e.status, e.reason), (ExecutionStatus::Killed, Some(ExecutionReason::Memory)), "{e:?}");

    if target.holds_pids_limit {
        let fork_bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
        let e = h.run(&s, fresh(Language::Python, fork_bomb, 20.0)).await?;
        assert_eq!((e.status, e.reason), (ExecutionStatus::Killed, Some(ExecutionReason::Pids)), "{e:?}");
    }

    let started = Instant::now();
    let e = h.run(&s, fresh(Language::Bash, "sleep 60", 1.0)).await?;
    assert_eq!((e.status, e.reason), (ExecutionStatus::TimedOut, Some(ExecutionReason::Timeout)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout ended it in time");

    let e = h.python(&s, "import sys\nsys.stdout.write('a' * 3_000_000)").await?;
    assert_eq!((e.status, e.stdout_truncated, e.stdout.len()), (ExecutionStatus::Succeeded, true, 1 << 20));

    assert_eq!(h.python(&s, "print('still here')").await?.stdout, "still here\n");
    Ok(())
}

/// No network, no host file, no root.
pub async fn code_reaches_no_network_no_host_file_and_no_root(target: &'static Target) -> anyhow::Result<()> {
    let h = Harness::start(target).await?;
    let s = h.session(None).await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let secret = h.data.path().join("host-secret.txt");
    std::fs::write(&secret, "host only")?;
    let code = format!(
        "import os, socket\n\
         def reach(addr):\n    try:\n        socket.create_connection(addr, timeout=2).close()\n        return 'reached'\n    except OSError:\n        return 'refused'\n\
         print(reach(('127.0.0.1', {port})), reach(('1.1.1.1', 53)))\n\
         print([l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]])\n\
         print(os.path.exists({secret:?}), os.path.exists({data:?}))\n\
         print(os.getuid() != 0, os.geteuid() != 0)\n\
         try:\n    open('/etc/conformance', 'w')\n    print('wrote /etc')\nexcept OSError:\n    print('read-only /etc')",
        secret = secret.display().to_string(),
        data = h.data.path().display().to_string(),
    );
    let e = h.python(&s, &code).await?;
    assert_eq!(e.stdout, "refused refused\n['lo']\nFalse False\nTrue True\nread-only /etc\n", "{e:?}");
    Ok(())
}

/// A file written by code is read through the file API, and a file uploaded through the file
/// API is read by code, both at once.
pub async fn files_cross_between_code_and_the_file_api(target: &'static Target) -> anyhow::Result<()> {
    let h = Harness::start(target).await?;
    let s = h.session(None).await?;
    let files = h.service.files(&Caller::Open, &s).await?;
    let body = Bytes::from_static(b"uploaded,1\n");
    let mut stream = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(body.clone())]);
    files.upload(RelPath::parse("in/data.csv")?, Some(body.len() as u64), &mut stream).await?;
    let e = h.python(&s, "print(open('in/data.csv').read(), end='')").await?;
    assert_eq!(e.stdout, "uploaded,1\n", "{e:?}");
    let e = h.python(&s, "import os\nos.makedirs('out')\nopen('out/result.txt', 'w').write('from code')").await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    let (text, entry) = files.read_all(RelPath::parse("out/result.txt")?, 1 << 20).await?;
    assert_eq!((text.as_slice(), entry.size), (&b"from code"[..], 9));
    let (listed, _) = files.list(RelPath::root(), true).await?;
    let paths: Vec<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["in", "in/data.csv", "out", "out/result.txt"]);
    files.remove(RelPath::parse("in/data.csv")?, false).await?;
    let e = h.python(&s, "import os\nprint(os.path.exists('in/data.csv'))").await?;
    assert_eq!(e.stdout, "False\n", "a removal is seen by code at once");
    Ok(())
}

/// A stopped session keeps its files; resumed, it has them and a fresh kernel.
pub async fn stop_and_resume_keep_files(target: &'static Target) -> anyhow::Result<()> {
    let h = Harness::start(target).await?;
    let s = h.session(None).await?;
    h.python(&s, "open('kept.txt', 'w').write('kept'); x = 1").await?;
    assert_eq!(h.service.stop_session(&Caller::Open, &s).await?.status, SessionStatus::Stopped);
    eventually("a stopped session to run nothing", Duration::from_secs(10), || h.leftovers() == 0).await?;
    let (listed, _) = h.service.files(&Caller::Open, &s).await?.list(RelPath::root(), false).await?;
    assert_eq!(listed.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["kept.txt"], "files of a stopped session");
    assert_eq!(h.service.resume_session(&Caller::Open, &s).await?.status, SessionStatus::Running);
    let e = h.python(&s, "print(open('kept.txt').read(), 'x' in globals())").await?;
    assert_eq!(e.stdout, "kept False\n", "{e:?}");
    Ok(())
}

/// A destroyed sandbox runs nothing and takes no work; a deleted session takes no code.
pub async fn destroy_leaves_nothing_running(target: &'static Target) -> anyhow::Result<()> {
    let h = Harness::start(target).await?;
    let sandbox = h.sandbox("conformance-destroy").await?;
    let out = sandbox.exec(request(Language::Bash, "(sleep 300 &) ; echo started", false), None).await?;
    assert_eq!(out.result.stdout, "started\n");
    assert!(sandbox.is_alive() && h.leftovers() > 0);
    sandbox.destroy().await;
    assert!(!sandbox.is_alive());
    assert!(sandbox.exec(request(Language::Bash, "true", false), None).await.is_err(), "no work after destroy");
    eventually("the sandbox's processes to end", Duration::from_secs(10), || h.leftovers() == 0).await?;

    let s = h.session(None).await?;
    h.python(&s, "1").await?;
    h.service.delete_session(&Caller::Open, &s).await?;
    eventually("the session's sandbox to end", Duration::from_secs(10), || h.leftovers() == 0).await?;
    let refused =
        h.service.submit_execution(&Caller::Open, &s, CreateExecution::new(Language::Python, "1"), false).await;
    assert!(matches!(refused, Err(ServiceError::Conflict(_))), "a deleted session takes no code");
    Ok(())
}

/// The real `sandboxd`, killed with SIGKILL mid-execution and started again: the execution is
/// `interrupted`, the session stopped and resumable with its files, nothing left running.
pub async fn a_restarted_server_recovers_what_it_finds(target: &'static Target) -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandbox-conformance-").tempdir_in("/tmp")?;
    let _clean_up = CleanUp(target, data.path().to_path_buf());
    let mut env: Vec<(String, String)> =
        vec![("SANDBOXD_SESSION_POOL".into(), "0".into()), ("SANDBOXD_RUN_POOL".into(), "0".into())];
    env.extend((target.env)(data.path()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut d = sandbox_test_support::Daemon::start(data.path(), &env)?;
    let c = d.client();
    let s = c.create_session(&CreateSession::default()).await?;
    c.execute(&s.id, &CreateExecution::new(Language::Bash, "echo kept > kept.txt")).await?;
    let running =
        CreateExecution { execution_id: Some("cut-off".into()), ..CreateExecution::new(Language::Bash, "sleep 60") };
    let (c1, sid) = (c.clone(), s.id.clone());
    let in_flight = tokio::spawn(async move { c1.execute(&sid, &running).await });
    sandbox_test_support::until_running(&c, "cut-off").await?;
    d.signal(9)?;
    d.wait_exit(Duration::from_secs(5))?;
    let _ = in_flight.await;
    if target.keeps_sandboxes {
        assert_eq!((target.leftovers)(data.path()), 1, "the killed server's sandbox runs on");
    } else {
        eventually("the killed server's sandboxes to end", Duration::from_secs(10), || {
            (target.leftovers)(data.path()) == 0
        })
        .await?;
    }

    let d2 = sandbox_test_support::Daemon::start(data.path(), &env)?;
    let c = d2.client();
    let cut = c.get_execution("cut-off").await?;
    assert_eq!((cut.status, cut.reason), (ExecutionStatus::Interrupted, Some(ExecutionReason::ServerRestart)));
    let session = c.get_session(&s.id).await?;
    if target.keeps_sandboxes {
        // Found again on its next use, kernel and files as they were.
        assert_eq!(session.status, SessionStatus::Running, "{session:?}");
    } else {
        assert_eq!((session.status, session.stop_reason.as_deref()), (SessionStatus::Stopped, Some("server_restart")));
    }
    let again = c.execute(&s.id, &CreateExecution::new(Language::Bash, "cat kept.txt")).await?;
    assert_eq!(again.stdout, "kept\n", "{again:?}");
    drop(d2);
    let left = if target.keeps_sandboxes { 1 } else { 0 };
    assert_eq!((target.leftovers)(data.path()), left, "what runs after a clean stop");
    Ok(())
}

/// Runs the target's clean-up for a data dir when dropped, passed or failed.
struct CleanUp(&'static Target, std::path::PathBuf);

impl Drop for CleanUp {
    fn drop(&mut self) {
        (self.0.clean_up)(&self.1);
    }
}

/// A session's new sandbox may start while its last one is still being torn down (a resume
/// racing an idle stop): the two must not collide on anything named after the session. The
/// local runtime named the cgroup so, and the second start failed with a 500 (the fuzzer found it).
pub async fn a_sandbox_starts_while_the_last_of_its_name_still_lives(target: &'static Target) -> anyhow::Result<()> {
    let h = Harness::start(target).await?;
    let old = h.sandbox("conformance-twice").await?;
    let new = h.sandbox("conformance-twice").await?;
    let out = new.exec(request(Language::Bash, "echo fresh", false), None).await?;
    assert_eq!(out.result.stdout, "fresh\n", "{out:?}");
    old.destroy().await;
    let out = new.exec(request(Language::Bash, "echo still", false), None).await?;
    assert_eq!(out.result.stdout, "still\n", "the old one's end leaves the new one be: {out:?}");
    new.destroy().await;
    Ok(())
}

/// Every test above, as a module named after the runtime.
macro_rules! conformance {
    ($runtime:ident, $target:expr) => {
        mod $runtime {
            use super::*;
            static TARGET: Target = $target;
            conformance!(@tests
                runs_each_language,
                kernel_keeps_state_and_survives_interrupt_and_death,
                each_limit_ends_what_passes_it,
                code_reaches_no_network_no_host_file_and_no_root,
                files_cross_between_code_and_the_file_api,
                stop_and_resume_keep_files,
                destroy_leaves_nothing_running,
                a_restarted_server_recovers_what_it_finds,
                a_sandbox_starts_while_the_last_of_its_name_still_lives,
            );
        }
    };
    (@tests $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() -> anyhow::Result<()> {
                super::$test(&TARGET).await
            }
        )*
    };
}

/// The local runtime's sandboxes are bubblewrap processes whose command line names their
/// workspace, under the data dir.
fn local_leftovers(data_dir: &Path) -> usize {
    sandbox_test_support::processes_mentioning(&data_dir.to_string_lossy())
}

/// `SANDBOXD_*` variables, owned.
fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn nothing_to_clean(_: &Path) {}

conformance!(
    local,
    Target {
        configure: |c| c.runtime = sandbox_service::config::RuntimeKind::Local,
        env: |_| vars(&[("SANDBOXD_RUNTIME", "local")]),
        leftovers: local_leftovers,
        keeps_sandboxes: false,
        holds_pids_limit: true,
        clean_up: nothing_to_clean,
    }
);

// The local runtime again, with the file API through the executor inside each sandbox: the
// way a runtime whose sandboxes do not share sandboxd's disk reaches workspaces.
conformance!(
    local_files_through_executor,
    Target {
        configure: |c| {
            c.runtime = sandbox_service::config::RuntimeKind::Local;
            c.local.file_access = sandbox_service::config::FileAccess::Executor;
        },
        env: |_| vars(&[("SANDBOXD_RUNTIME", "local"), ("SANDBOXD_FILE_ACCESS", "executor")]),
        leftovers: local_leftovers,
        keeps_sandboxes: false,
        holds_pids_limit: true,
        clean_up: nothing_to_clean,
    }
);

/// The Docker runtime's sandboxes are containers labelled with the data dir's instance tag.
fn docker_leftovers(data_dir: &Path) -> usize {
    sandbox_test_support::docker_containers(data_dir)
}

// The Docker runtime, on the engine `scripts/test.sh` starts, with the image it builds.
conformance!(
    docker,
    Target {
        configure: |c| c.runtime = sandbox_service::config::RuntimeKind::Docker,
        env: |_| vars(&[("SANDBOXD_RUNTIME", "docker")]),
        leftovers: docker_leftovers,
        keeps_sandboxes: false,
        holds_pids_limit: true,
        clean_up: nothing_to_clean,
    }
);

/// The Kubernetes runtime's sandboxes are pods of the shared fake cluster, in a namespace of
/// the data dir's own; or of the real cluster `scripts/e2e-kubernetes.sh` names.
fn kubernetes_namespace(data_dir: &Path) -> String {
    let name = data_dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(60).collect();
    TestCluster::for_tests().namespace(&format!("c-{}", name.trim_matches('-')))
}

/// The second layer, unless a real cluster cannot give it (`scripts/e2e-kubernetes.sh
/// --second-layer off`: then the check that every layer is up fails, as it should).
fn kubernetes_second_layer() -> bool {
    std::env::var("SANDBOX_E2E_SECOND_LAYER").map_or(true, |v| v != "off")
}

fn kubernetes_env(data_dir: &Path) -> Vec<(String, String)> {
    let cluster = TestCluster::for_tests();
    let kubeconfig = cluster.kubeconfig_in(data_dir).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let layer = if kubernetes_second_layer() { "on" } else { "off" };
    let mut env = vars(&[("SANDBOXD_RUNTIME", "kubernetes"), ("SANDBOXD_KUBERNETES_SECOND_LAYER", layer)]);
    env.push(("SANDBOXD_KUBERNETES_KUBECONFIG".into(), kubeconfig));
    env.push(("SANDBOXD_KUBERNETES_NAMESPACE".into(), kubernetes_namespace(data_dir)));
    env.extend(cluster.image().map(|image| ("SANDBOXD_KUBERNETES_IMAGE".to_string(), image)));
    env
}

// The Kubernetes runtime, with the second layer, against the fake API server of test-support
// (whose pods run their own command lines in containers of the sandbox image), or a real
// cluster (`scripts/e2e-kubernetes.sh`). The fake's nodes hold a pod's memory to its limit as
// a kubelet on cgroup v2 does; the process limit is the node's (`podPidsLimit`), not a
// session's.
conformance!(
    kubernetes,
    Target {
        configure: |c| {
            let cluster = TestCluster::for_tests();
            c.runtime = sandbox_service::config::RuntimeKind::Kubernetes;
            c.kubernetes.kubeconfig = cluster.kubeconfig_in(&c.data_dir).ok();
            c.kubernetes.namespace = kubernetes_namespace(&c.data_dir);
            c.kubernetes.second_layer = kubernetes_second_layer();
            if let Some(image) = cluster.image() {
                c.kubernetes.image = image;
            }
        },
        env: kubernetes_env,
        leftovers: |data_dir| TestCluster::for_tests().pods(&kubernetes_namespace(data_dir)).len(),
        keeps_sandboxes: true,
        holds_pids_limit: false,
        clean_up: |data_dir| TestCluster::for_tests().delete_pods(&kubernetes_namespace(data_dir)),
    }
);
