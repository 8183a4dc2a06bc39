//! The real `sandboxd` with `--runtime kubernetes`, against the fake API server of
//! test-support (whose pods are real executors under bubblewrap): a session is a pod, code
//! runs in its kernel, files cross through the executor and outlive the pod, and the pod goes
//! with the session; a lost replica kills no pod (this one also on a real cluster, with
//! `scripts/e2e-kubernetes.sh`). And with no cluster configured, sandboxd says so in
//! `/readyz` instead of failing.

use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, Language};
use sandbox_runtime::kubernetes::spec;
use sandbox_test_support::kubernetes::{Behaviour, FakeCluster, TestCluster};
use sandbox_test_support::Daemon;

const NAMESPACE: &str = "sandboxes";

/// A fake cluster, and the real sandboxd on it with `extra` settings (pools off).
async fn sandboxd_on_a_fake(extra: &[(&str, &str)]) -> anyhow::Result<(FakeCluster, tempfile::TempDir, Daemon)> {
    let fake = FakeCluster::start(sandbox_test_support::binary("sandbox-executor")?, Behaviour::default()).await?;
    let data = tempfile::Builder::new().prefix("sandboxd-kubernetes-").tempdir_in("/tmp")?;
    let config = fake.kubeconfig_in(data.path())?.to_string_lossy().into_owned();
    let mut env = vec![
        ("SANDBOXD_RUNTIME", "kubernetes"),
        ("SANDBOXD_KUBERNETES_NAMESPACE", NAMESPACE),
        ("SANDBOXD_KUBERNETES_KUBECONFIG", config.as_str()),
        ("SANDBOXD_SESSION_POOL", "0"),
        ("SANDBOXD_RUN_POOL", "0"),
    ];
    env.extend_from_slice(extra);
    let d = Daemon::start(&data.path().join("data"), &env)?;
    Ok((fake, data, d))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_a_pod_that_runs_code_holds_files_and_goes_with_the_session() -> anyhow::Result<()> {
    let (fake, _data, d) = sandboxd_on_a_fake(&[]).await?;
    let c = d.client();
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", d.url)).await?.json().await?;
    assert_eq!(ready["ready"], true, "{ready}");

    let s = c.create_session(&CreateSession::default()).await?;
    let pods = fake.pods(NAMESPACE);
    assert!(pods.len() == 1 && pods[0].starts_with(&spec::object_name(&s.id)), "{pods:?}");
    let pod = pods[0].clone();
    let object = fake.pod(NAMESPACE, &pod).expect("the pod");
    assert_eq!(object["metadata"]["labels"][spec::LABEL_SANDBOX], s.id);
    let replica = c.replicas().await?.into_iter().find(|r| r.this).map(|r| r.id).unwrap_or_default();
    assert_eq!(object["metadata"]["labels"][spec::LABEL_REPLICA], replica);
    assert!(s.isolation.as_deref().unwrap_or_default().contains("pod"), "{:?}", s.isolation);

    let set = c.execute(&s.id, &CreateExecution::new(Language::Python, "x = 41")).await?;
    assert_eq!(set.exit_code, Some(0), "{set:?}");
    c.upload(&s.id, "in/data.txt", b"through the executor".to_vec(), None).await?;
    let got =
        c.execute(&s.id, &CreateExecution::new(Language::Python, "print(x + 1, open('in/data.txt').read())")).await?;
    assert_eq!(got.stdout, "42 through the executor\n", "{got:?}");
    c.execute(&s.id, &CreateExecution::new(Language::Python, "open('out.txt', 'w').write('from code')")).await?;
    assert_eq!(c.read_file(&s.id, "out.txt").await?, b"from code");

    c.delete_session(&s.id).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(fake.pods(NAMESPACE).is_empty() && fake.secrets(NAMESPACE).is_empty()) {
        anyhow::ensure!(Instant::now() < deadline, "left: {:?} {:?}", fake.pods(NAMESPACE), fake.secrets(NAMESPACE));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A session's files outlive its pods (each an `emptyDir`): sandboxd copies them out of the
/// pod (at each sync, at an upload, before a stop) to its copy, which S3 keeps, and into
/// each new pod. A stop and a resume, and a pod deleted from outside, lose nothing that was
/// synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_files_outlive_its_pods_through_s3() -> anyhow::Result<()> {
    let s3 = sandbox_test_support::S3Server::start().await?;
    s3.create_bucket("pods").await?;
    let (fake, _data, d) = sandboxd_on_a_fake(&[
        ("SANDBOXD_SYNC_INTERVAL_S", "1"),
        ("SANDBOXD_STORAGE", "s3://pods/site"),
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test-key"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
    ])
    .await?;
    let c = d.client();
    let s = c.create_session(&CreateSession::default()).await?;
    let key = |path: &str| format!("site/workspaces/{}/{path}", s.id);
    let python = |code: &str| CreateExecution::new(Language::Python, code);

    // Code writes files in the pod; an upload copies them out with it, and on to the bucket.
    let made = "import os; os.makedirs('deep/er', exist_ok=True); open('deep/er/made.txt', 'w').write('by code')";
    assert_eq!(c.execute(&s.id, &python(made)).await?.exit_code, Some(0));
    c.upload(&s.id, "up.txt", b"uploaded".to_vec(), None).await?;
    assert_eq!(s3.object("pods", &key("up.txt")).await?, b"uploaded");
    assert_eq!(s3.object("pods", &key("deep/er/made.txt")).await?, b"by code");

    // A stop deletes the pod; its files were copied out first. A resume is a new pod, filled.
    c.execute(&s.id, &python("open('before-stop.txt', 'w').write('kept')")).await?;
    c.stop_session(&s.id).await?;
    wait_until(|| fake.pods(NAMESPACE).is_empty(), "the stopped session's pod goes").await?;
    assert_eq!(s3.object("pods", &key("before-stop.txt")).await?, b"kept");
    let read = "print(open('deep/er/made.txt').read(), open('up.txt').read(), open('before-stop.txt').read())";
    let got = c.execute(&s.id, &python(read)).await?;
    assert_eq!(got.stdout, "by code uploaded kept\n", "{got:?}");
    let first_pods = fake.pods(NAMESPACE);
    assert_eq!(first_pods.len(), 1, "{first_pods:?}");

    // Code changes and removes files; the sync (each second here) brings both to the bucket.
    c.execute(&s.id, &python("import os; open('synced.txt', 'w').write('soon'); os.remove('up.txt')")).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while s3.object("pods", &key("synced.txt")).await.is_err() || s3.object("pods", &key("up.txt")).await.is_ok() {
        anyhow::ensure!(Instant::now() < deadline, "the sync did not bring the changes to the bucket");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The pod is deleted from outside: the next execution runs in a new pod with the files.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/api/v1/namespaces/{NAMESPACE}/pods/{}", fake.url, first_pods[0]))
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got =
            c.execute(&s.id, &python("import os; print(open('synced.txt').read(), os.path.exists('up.txt'))")).await?;
        if got.exit_code == Some(0) || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got.stdout, "soon False\n", "{got:?}");
    assert!(!fake.pods(NAMESPACE).contains(&first_pods[0]), "a new pod");
    c.delete_session(&s.id).await?;
    Ok(())
}

/// After a crash, a restart reconciles the pods it finds with the store: a running session's
/// pod stays and is found again, kernel and all; the pods of the crashed run's pools go (the
/// pools fill again with new ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_running_sessions_pods_and_removes_its_pools_pods() -> anyhow::Result<()> {
    let fake = FakeCluster::start(sandbox_test_support::binary("sandbox-executor")?, Behaviour::default()).await?;
    let data = tempfile::Builder::new().prefix("sandboxd-kubernetes-").tempdir_in("/tmp")?;
    let config = fake.kubeconfig_in(data.path())?.to_string_lossy().into_owned();
    let env = [
        ("SANDBOXD_RUNTIME", "kubernetes"),
        ("SANDBOXD_KUBERNETES_NAMESPACE", NAMESPACE),
        ("SANDBOXD_KUBERNETES_KUBECONFIG", config.as_str()),
        ("SANDBOXD_SESSION_POOL", "1"),
        ("SANDBOXD_RUN_POOL", "1"),
    ];
    let mut d = Daemon::start(&data.path().join("data"), &env)?;
    let c = d.client();
    let s = c
        .create_session(&CreateSession { env: Some([("OWN".into(), "1".into())].into()), ..Default::default() })
        .await?;
    c.execute(&s.id, &CreateExecution::new(Language::Python, "x = 41")).await?;
    // The session's pod, and one pod in each pool.
    wait_until(|| fake.pods(NAMESPACE).len() == 3, "the pools fill").await?;
    let session_pod: Vec<String> =
        fake.pods(NAMESPACE).into_iter().filter(|p| p.starts_with(&spec::object_name(&s.id))).collect();
    assert_eq!(session_pod.len(), 1, "{:?}", fake.pods(NAMESPACE));
    let pool_pods: Vec<String> = fake.pods(NAMESPACE).into_iter().filter(|p| *p != session_pod[0]).collect();

    d.signal(9)?;
    d.wait_exit(Duration::from_secs(5))?;
    assert_eq!(fake.pods(NAMESPACE).len(), 3, "a crash kills no pod");
    let d2 = Daemon::start(&data.path().join("data"), &env)?;
    wait_until(|| pool_pods.iter().all(|p| !fake.pods(NAMESPACE).contains(p)), "the crashed run's pool pods go")
        .await?;
    assert!(fake.pods(NAMESPACE).contains(&session_pod[0]), "the running session's pod stays");
    let got = d2.client().execute(&s.id, &CreateExecution::new(Language::Python, "print(x + 1)")).await?;
    assert_eq!(got.stdout, "42\n", "found again, kernel and all: {got:?}");
    drop(d2);
    fake.delete_pods(NAMESPACE);
    sandbox_test_support::unmount_under(data.path());
    Ok(())
}

async fn wait_until(done: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_sandboxd_starts_and_says_why_it_cannot_run_sandboxes() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-kubernetes-").tempdir_in("/tmp")?;
    let missing = data.path().join("no-such-kubeconfig").to_string_lossy().into_owned();
    let env = [
        ("SANDBOXD_RUNTIME", "kubernetes"),
        ("SANDBOXD_SESSION_POOL", "0"),
        ("SANDBOXD_RUN_POOL", "0"),
        ("KUBECONFIG", missing.as_str()),
        ("KUBERNETES_SERVICE_HOST", ""),
    ];
    let d = Daemon::start(&data.path().join("data"), &env)?;
    let ready = reqwest::get(format!("{}/readyz", d.url)).await?;
    assert_eq!(ready.status().as_u16(), 503);
    let text = ready.text().await?;
    assert!(text.contains("no Kubernetes cluster is configured"), "{text}");
    match d.client().create_session(&CreateSession::default()).await {
        Err(sandbox_client::ClientError::Api { status, message, .. }) => {
            assert_eq!(status.as_u16(), 503, "{message}");
            assert!(message.contains("no Kubernetes cluster"), "{message}");
        }
        other => anyhow::bail!("a session without a cluster: {other:?}"),
    }
    Ok(())
}

/// Two real replicas on one PostgreSQL, on the fake cluster (or a real one: see
/// `scripts/e2e-kubernetes.sh`): the replica that runs a session
/// is SIGKILLed, and its sandbox's pod runs on. The replica that adopts its work keeps the
/// session running, finds the pod again on the next request and the kernel as it was: no
/// second pod, no variable lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_kills_no_sandbox_and_the_adopter_finds_the_kernel_as_it_was() -> anyhow::Result<()> {
    use sandbox_store::testing::TestDatabase;
    // The shared fake, or the real cluster of `scripts/e2e-kubernetes.sh`.
    let cluster = TestCluster::for_tests();
    let namespace = cluster.namespace("replica-loss");
    let db = TestDatabase::new(sandbox_store::Backend::Postgres).await?;
    let dirs = tempfile::Builder::new().prefix("sandboxd-kubernetes-").tempdir_in("/tmp")?;
    let config = cluster.kubeconfig_in(dirs.path())?.to_string_lossy().into_owned();
    let image = cluster.image().unwrap_or_else(|| spec::Settings::default().image);
    let env = [
        ("SANDBOXD_RUNTIME", "kubernetes"),
        ("SANDBOXD_KUBERNETES_NAMESPACE", namespace.as_str()),
        ("SANDBOXD_KUBERNETES_KUBECONFIG", config.as_str()),
        ("SANDBOXD_KUBERNETES_IMAGE", image.as_str()),
        ("SANDBOXD_SESSION_POOL", "0"),
        ("SANDBOXD_RUN_POOL", "0"),
        ("SANDBOXD_DATABASE_URL", db.url.as_str()),
        ("SANDBOXD_REPLICA_LEASE_S", "3"),
        ("SANDBOXD_SWEEP_INTERVAL_S", "0.3"),
    ];
    let (a_dir, b_dir) = (dirs.path().join("a"), dirs.path().join("b"));
    let mut a = Daemon::start(&a_dir, &env)?;
    let b = Daemon::start(&b_dir, &env)?;
    let (ca, cb) = (a.client(), b.client());
    let idb = cb.replicas().await?.into_iter().find(|r| r.this).map(|r| r.id).unwrap_or_default();
    let s = ca.create_session(&CreateSession::default()).await?;
    ca.execute(&s.id, &CreateExecution::new(Language::Python, "x = 41")).await?;

    a.signal(9)?;
    a.wait_exit(Duration::from_secs(5))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = cb.replicas().await?;
        if listed.iter().any(|r| !r.this && r.adopted_by.as_deref() == Some(idb.as_str())) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "B never adopted A: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = cb.get_session(&s.id).await?;
    assert_eq!(kept.status, sandbox_api::SessionStatus::Running, "{kept:?}");
    assert_eq!(kept.replica.as_deref(), Some(idb.as_str()), "now B's");

    let got = cb.execute(&s.id, &CreateExecution::new(Language::Python, "print(x + 1)")).await?;
    assert_eq!(got.stdout, "42\n", "{got:?}");
    assert_eq!(cluster.pods(&namespace).len(), 1, "the same pod, not a second one");
    assert!(b.log.lock().map(|l| l.iter().any(|l| l.contains("sandbox found again"))).unwrap_or(false));

    cb.delete_session(&s.id).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.pods(&namespace).is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "left: {:?}", cluster.pods(&namespace));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a, b));
    // A was killed: what it had mounted stays until unmounted.
    sandbox_test_support::unmount_under(dirs.path());
    Ok(())
}
