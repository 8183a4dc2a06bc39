//! The Kubernetes runtime against a fake API server (`sandbox_test_support::kubernetes`), which
//! answers as the real one does and runs each pod as the real executor under bubblewrap: a
//! sandbox starts, runs code in its kernel and goes with its token; and what goes wrong on a
//! cluster is said in the cluster's words, within a bound, leaving nothing behind.

use std::time::{Duration, Instant};

use sandbox_protocol::{ExecRequest, Language};
use sandbox_runtime::kubernetes::spec::{self, Settings};
use sandbox_runtime::kubernetes::KubernetesRuntime;
use sandbox_runtime::{ResourceLimits, Runtime, RuntimeError, SandboxSpec};
use sandbox_test_support::kubernetes::{Behaviour, FakeCluster, PodSecurity};

const NAMESPACE: &str = "sandboxes";

fn settings() -> Settings {
    Settings { namespace: NAMESPACE.into(), replica: "replica-a".into(), ..Settings::default() }
}

async fn cluster(behaviour: Behaviour) -> anyhow::Result<(FakeCluster, KubernetesRuntime)> {
    let fake = FakeCluster::start(sandbox_test_support::binary("sandbox-executor")?, behaviour).await?;
    let runtime = runtime_at(&fake.url, Duration::from_secs(4))?;
    Ok((fake, runtime))
}

fn runtime_at(url: &str, start_timeout: Duration) -> anyhow::Result<KubernetesRuntime> {
    runtime_with(url, settings(), start_timeout)
}

fn runtime_with(url: &str, settings: Settings, start_timeout: Duration) -> anyhow::Result<KubernetesRuntime> {
    let config = kube::Config::new(url.parse()?);
    let client = kube::Client::try_from(config)?;
    Ok(KubernetesRuntime::new(client, settings, start_timeout))
}

fn sandbox_spec(name: &str, memory_bytes: u64, image: Option<&str>) -> SandboxSpec {
    SandboxSpec {
        name: name.into(),
        workspace: name.into(),
        limits: ResourceLimits { memory_bytes, pids: 128, cpus: 1.0 },
        mounts: Vec::new(),
        image: image.map(String::from),
        template: Some("default".into()),
        tenant: Some("acme".into()),
    }
}

fn python(id: &str, code: &str) -> ExecRequest {
    sandbox_test_support::exec_request(id, Language::Python, code, true)
}

/// Waits until the fake holds no pod and no secret of the namespace.
async fn nothing_left(fake: &FakeCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(fake.pods(NAMESPACE).is_empty() && fake.secrets(NAMESPACE).is_empty()) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "left behind: pods {:?}, secrets {:?}",
            fake.pods(NAMESPACE),
            fake.secrets(NAMESPACE)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn start_error(result: Result<Box<dyn sandbox_runtime::Sandbox>, RuntimeError>) -> anyhow::Result<String> {
    match result {
        Err(RuntimeError::Start(why)) => Ok(why),
        Err(other) => anyhow::bail!("expected a start error, got {other}"),
        Ok(_) => anyhow::bail!("expected a start error, got a sandbox"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_pod_starts_runs_code_and_goes_with_its_token() -> anyhow::Result<()> {
    let (fake, runtime) = cluster(Behaviour::default()).await?;
    assert!(runtime.readiness().await.ready);
    let sandbox = runtime.create(sandbox_spec("ses_01", 256 << 20, None)).await?;
    let pods = fake.pods(NAMESPACE);
    assert!(pods.len() == 1 && pods[0].starts_with(&spec::object_name("ses_01")), "{pods:?}");
    let pod_name = pods[0].clone();
    let pod = fake.pod(NAMESPACE, &pod_name).expect("the pod");
    assert_eq!(pod["metadata"]["labels"][spec::LABEL_TENANT], "acme");
    let secret = fake.secrets(NAMESPACE);
    assert_eq!(secret, vec![pod_name.clone()], "its token");

    let set = sandbox.exec(python("e1", "x = 20"), None).await?;
    assert_eq!(set.result.exit_code, Some(0), "{:?}", set.result);
    let got = sandbox.exec(python("e2", "print(x * 2 + 2)"), None).await?;
    assert_eq!(got.result.stdout, "42\n", "{:?}", got.result);
    assert!(sandbox.isolation().contains("NO bubblewrap layer"), "{}", sandbox.isolation());

    sandbox.destroy().await;
    nothing_left(&fake).await
}

/// The second layer: the pod runs the relay and the executor under bubblewrap, and code runs
/// there; on nodes that mask /proc the start fails at once with bubblewrap's own words and
/// what to do about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_second_layer_code_runs_under_bubblewrap_or_the_start_says_why_not() -> anyhow::Result<()> {
    let fake = FakeCluster::start(sandbox_test_support::binary("sandbox-executor")?, Behaviour::default()).await?;
    let layered = Settings { second_layer: true, ..settings() };
    let runtime = runtime_with(&fake.url, layered, Duration::from_secs(10))?;
    // A namespace that enforces Pod Security's `restricted` refuses the unmasked /proc.
    let why = start_error(runtime.create(sandbox_spec("ses_09", 256 << 20, None)).await)?;
    assert!(why.contains("violates PodSecurity \"restricted:latest\"") && why.contains("procMount"), "{why}");
    nothing_left(&fake).await?;
    // `baseline` (what the chart labels the namespace with for the second layer) lets it in.
    fake.set_behaviour(Behaviour { pod_security: PodSecurity::Baseline, ..Default::default() });
    let sandbox = runtime.create(sandbox_spec("ses_10", 256 << 20, None)).await?;
    assert!(sandbox.isolation().contains("+ bubblewrap + executor seccomp"), "{}", sandbox.isolation());
    let set = sandbox.exec(python("e1", "x = 6"), None).await?;
    assert_eq!(set.result.exit_code, Some(0), "{:?}", set.result);
    // Inside bubblewrap: the uid is the image's, the network namespace holds nothing (not
    // even loopback is up), and the executor is PID 1 of a namespace of its own.
    let probe = "import os; print(x * 7, os.getuid(), sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else [], open('/proc/1/cmdline').read().split(chr(0))[0])";
    let got = sandbox.exec(python("e2", probe), None).await?;
    assert_eq!(got.result.stdout, "42 1000 [] /.sandbox/executor\n", "{:?}", got.result);
    sandbox.destroy().await;
    nothing_left(&fake).await?;

    fake.set_behaviour(Behaviour { masked_proc: true, pod_security: PodSecurity::Baseline, ..Default::default() });
    let started = Instant::now();
    let why = start_error(runtime.create(sandbox_spec("ses_11", 256 << 20, None)).await)?;
    assert!(why.contains("bwrap") && why.contains("proc"), "bubblewrap's own words: {why}");
    assert!(why.contains("--kubernetes-second-layer off"), "what to do: {why}");
    assert!(started.elapsed() < Duration::from_secs(10), "at once, not at the timeout: {:?}", started.elapsed());
    nothing_left(&fake).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_cluster_cannot_pull_fails_the_start_with_its_reason() -> anyhow::Result<()> {
    let behaviour = Behaviour { unpullable: vec!["acme/missing:1".into()], ..Default::default() };
    let (fake, runtime) = cluster(behaviour).await?;
    let started = Instant::now();
    let why = start_error(runtime.create(sandbox_spec("ses_02", 256 << 20, Some("acme/missing:1"))).await)?;
    assert!(why.contains("ErrImagePull") && why.contains("acme/missing:1"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(4), "at once, not at the timeout: {:?}", started.elapsed());
    nothing_left(&fake).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_no_node_has_room_for_fails_within_the_bound_saying_so() -> anyhow::Result<()> {
    let behaviour = Behaviour { node_memory_bytes: 1 << 30, ..Default::default() };
    let (fake, runtime) = cluster(behaviour).await?;
    let why = start_error(runtime.create(sandbox_spec("ses_03", 4 << 30, None)).await)?;
    assert!(why.contains("not ready within 4 s") && why.contains("Insufficient memory"), "{why}");
    nothing_left(&fake).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_a_limit_range_or_a_webhook_refusing_is_told_in_the_clusters_words() -> anyhow::Result<()> {
    let behaviour = Behaviour { quota_memory_bytes: 1 << 30, ..Default::default() };
    let (fake, runtime) = cluster(behaviour).await?;
    let why = start_error(runtime.create(sandbox_spec("ses_04", 2 << 30, None)).await)?;
    assert!(why.contains("exceeded quota") && why.contains("Forbidden"), "{why}");
    nothing_left(&fake).await?;

    fake.set_behaviour(Behaviour { limit_range_memory_bytes: 512 << 20, ..Default::default() });
    let why = start_error(runtime.create(sandbox_spec("ses_07", 1 << 30, None)).await)?;
    assert!(why.contains("maximum memory usage per Container"), "{why}");
    nothing_left(&fake).await?;

    let denial = "sandbox pods must carry a cost-center label".to_string();
    fake.set_behaviour(Behaviour { webhook_denies: Some(denial.clone()), ..Default::default() });
    let why = start_error(runtime.create(sandbox_spec("ses_08", 256 << 20, None)).await)?;
    assert!(why.contains("admission webhook") && why.contains(&denial), "{why}");
    nothing_left(&fake).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rbac_and_an_unreachable_api_server_show_in_readiness() -> anyhow::Result<()> {
    let (fake, runtime) = cluster(Behaviour { forbid_list: true, ..Default::default() }).await?;
    let r = runtime.readiness().await;
    assert!(!r.ready && r.message.contains("RBAC") && r.message.contains("cannot list resource"), "{r:?}");
    drop(fake);
    let gone = runtime_at("http://127.0.0.1:9", Duration::from_secs(1))?.readiness().await;
    assert!(!gone.ready && gone.message.contains("cannot be reached"), "{gone:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_ends_the_execution_as_killed_for_memory_and_a_pod_deleted_from_outside_says_so(
) -> anyhow::Result<()> {
    let (fake, runtime) = cluster(Behaviour::default()).await?;
    let sandbox = runtime.create(sandbox_spec("ses_05", 256 << 20, None)).await?;
    let pod = fake.pods(NAMESPACE).pop().expect("the pod");
    let (f, p) = (&fake, pod.clone());
    let running = sandbox.exec(python("e1", "import time; time.sleep(30)"), None);
    let kill = async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        f.oom_kill(NAMESPACE, &p);
    };
    let (outcome, ()) = tokio::join!(running, kill);
    let killed = outcome?;
    assert_eq!(killed.limit, Some(sandbox_runtime::LimitKind::Memory), "{killed:?}");
    assert!(killed.result.kernel_died && killed.result.stderr.contains("OOMKilled"), "{killed:?}");
    assert!(!sandbox.is_alive(), "the pod is gone: the session's next execution needs a new one");
    nothing_left(&fake).await?;

    let sandbox = runtime.create(sandbox_spec("ses_06", 256 << 20, None)).await?;
    let outside = reqwest::Client::new()
        .delete(format!("{}/api/v1/namespaces/{NAMESPACE}/pods/{}", fake.url, fake.pods(NAMESPACE)[0]))
        .send()
        .await?;
    assert!(outside.status().is_success());
    match sandbox.exec(python("e2", "print(1)"), None).await {
        Err(RuntimeError::SandboxDied(why)) => assert!(why.contains("deleted"), "{why}"),
        other => anyhow::bail!("a pod deleted from outside: {:?}", other.map(|o| o.result)),
    }
    nothing_left(&fake).await
}

/// A sandboxd that dies leaves its sandboxes' pods running; a new one (after a restart, or the
/// replica that adopts the lost one's sessions) finds each again by name and its kernel as it
/// was, and cuts off any client the executor still had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runtime_reattaches_to_a_running_pod_and_finds_its_kernel_as_it_was() -> anyhow::Result<()> {
    let (fake, first) = cluster(Behaviour::default()).await?;
    let sandbox = first.create(sandbox_spec("ses_07", 256 << 20, None)).await?;
    let set = sandbox.exec(python("e1", "x = 41"), None).await?;
    assert_eq!(set.result.exit_code, Some(0), "{:?}", set.result);

    // Another process's runtime, with a client of its own, while the first still holds on.
    let second = runtime_at(&fake.url, Duration::from_secs(4))?;
    let again = second.reattach("ses_07").await?.expect("the pod still runs");
    let got = again.exec(python("e2", "print(x + 1)"), None).await?;
    assert_eq!(got.result.stdout, "42\n", "{:?}", got.result);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sandbox.is_alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!sandbox.is_alive(), "the older client is cut off");

    assert!(second.reattach("ses_unknown").await?.is_none(), "no pod, nothing to find");
    again.destroy().await;
    assert!(second.reattach("ses_07").await?.is_none(), "a deleted pod is not found again");
    nothing_left(&fake).await
}
