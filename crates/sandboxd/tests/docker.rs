//! The Docker runtime against the real engine `scripts/test.sh` starts, through the real
//! `sandboxd`: what a container lets code reach, what the engine recorded of it, what an
//! earlier run left, and the engine going away and coming back. (What every runtime must do
//! is the conformance suite's, in `sandbox-service`.)

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language};
use sandbox_test_support::{docker_containers, docker_instance, Daemon};

const QUIET: [(&str, &str); 3] =
    [("SANDBOXD_RUNTIME", "docker"), ("SANDBOXD_SESSION_POOL", "0"), ("SANDBOXD_RUN_POOL", "0")];

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker").args(args).output()?;
    anyhow::ensure!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn data_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("sandboxd-docker-").tempdir_in("/tmp")?)
}

/// Code in a session's container reaches no port of the host (sandboxd's own, or one open on
/// every address, by loopback or by the engine's bridge gateway) and no engine socket; it
/// runs as a non-root uid on a read-only root. And the engine holds the container to what
/// sandboxd asked, field by field, as `docker inspect` reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_in_a_container_reaches_no_host_port_no_engine_and_no_writable_root() -> anyhow::Result<()> {
    let data = data_dir()?;
    let d = Daemon::start(data.path(), &QUIET)?;
    let c = d.client();
    let sandboxd_port: u16 = d.url.rsplit(':').next().unwrap_or_default().trim_end_matches('/').parse()?;
    let open_everywhere = std::net::TcpListener::bind("0.0.0.0:0")?;
    let any_port = open_everywhere.local_addr()?.port();
    let gateway = docker(&["network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"])?;
    let s = c.create_session(&CreateSession::default()).await?;
    let code = format!(
        "import os, socket\n\
         def tcp(host, port):\n    try:\n        socket.create_connection((host, port), timeout=2).close(); return 'reached'\n    except OSError:\n        return 'no'\n\
         def unix(path):\n    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect(path); return 'reached'\n    except OSError:\n        return 'no'\n\
         print(tcp('127.0.0.1', {sandboxd_port}), tcp('127.0.0.1', {any_port}), tcp('{gateway}', {any_port}), tcp('{gateway}', {sandboxd_port}))\n\
         print(unix('/var/run/docker.sock'), unix('/run/docker.sock'), os.path.exists('/var/run/docker.sock'))\n\
         def write(p):\n    try:\n        open(p, 'w').write('x'); return 'wrote ' + p\n    except OSError:\n        return 'no'\n\
         print(write('/usr/bin/planted'), write('/planted'), write('/etc/planted'), write('/opt/planted'))\n\
         print(os.getuid(), os.getgid())"
    );
    let e = c.execute(&s.id, &CreateExecution::new(Language::Python, &code)).await?;
    assert_eq!(e.stdout, "no no no no\nno no False\nno no no no\n1000 1000\n", "{e:?}");

    let layers = c.get_session(&s.id).await?.isolation.unwrap_or_default();
    assert!(layers.starts_with("container (no network") && layers.contains("+ bubblewrap +"), "{layers}");
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", d.url)).await?.json().await?;
    assert_eq!(ready["runtime_detail"]["layers"], layers.as_str(), "readiness says the same");

    let label = format!("label=org.sandbox-platform.sandbox={}", s.id);
    let id = docker(&["ps", "-q", "--filter", &label])?;
    anyhow::ensure!(!id.is_empty() && !id.contains('\n'), "one container for the session: {id:?}");
    let inspect: serde_json::Value = serde_json::from_str(&docker(&["inspect", &id])?)?;
    let (config, host) = (&inspect[0]["Config"], &inspect[0]["HostConfig"]);
    let user = config["User"].as_str().unwrap_or_default();
    assert!(!user.is_empty() && !user.starts_with("0:") && user != "root", "not root: {user:?}");
    assert_eq!(host["NetworkMode"], "none");
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["CapAdd"], serde_json::Value::Null);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Privileged"], false);
    let opts: Vec<&str> = host["SecurityOpt"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    assert!(opts.contains(&"no-new-privileges:true"), "{opts:?}");
    assert!(opts.iter().any(|o| o.starts_with("seccomp={")), "our profile, not the default or unconfined");
    assert_eq!(host["Memory"], host["MemorySwap"], "no swap");
    assert_eq!(host["Memory"], 512u64 << 20, "the session's default memory limit");
    assert!(host["PidsLimit"].as_i64().unwrap_or(0) > 0 && host["CpuQuota"].as_i64().unwrap_or(0) > 0);
    assert!(host["Tmpfs"]["/tmp"].as_str().unwrap_or_default().contains("nosuid,nodev,size="));
    assert_eq!(host["LogConfig"]["Config"]["max-size"], "1m");
    assert_eq!(config["Labels"]["org.sandbox-platform.instance"], docker_instance(data.path()));
    assert_eq!(config["Labels"]["org.sandbox-platform.tenant"], "default");
    assert_eq!(config["Labels"]["org.sandbox-platform.template"], "default");
    drop(open_everywhere);
    Ok(())
}

/// Containers an earlier run of the same sandboxd left (a crash the attach stream did not end,
/// say) are removed when it starts; another instance's are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_an_earlier_run_are_removed_at_start() -> anyhow::Result<()> {
    let data = data_dir()?;
    let other = data_dir()?;
    let run = |instance: &str| {
        docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--label",
            &format!("org.sandbox-platform.instance={instance}"),
            "--label",
            "org.sandbox-platform.boot=an-earlier-one",
            "sandbox-platform/sandbox:latest",
            "sleep",
            "300",
        ])
    };
    run(&docker_instance(data.path()))?;
    let bystander = run(&docker_instance(other.path()))?;
    assert_eq!(docker_containers(data.path()), 1);
    let d = Daemon::start(data.path(), &QUIET)?;
    eventually("the orphan to be removed", Duration::from_secs(20), || docker_containers(data.path()) == 0).await?;
    let s = d.client().create_session(&CreateSession::default()).await?;
    let e = d.client().execute(&s.id, &CreateExecution::new(Language::Bash, "echo fine")).await?;
    assert_eq!(e.stdout, "fine\n");
    assert_eq!(docker_containers(other.path()), 1, "another sandboxd's container is not ours to remove");
    docker(&["rm", "-f", &bystander])?;
    Ok(())
}

/// A stand-in for the engine's socket that can be cut and restored: sandboxd sees the engine
/// go away (every connection dropped, new ones refused) and come back, while the real engine
/// goes on serving the other tests.
struct EngineLink {
    path: PathBuf,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl EngineLink {
    fn open(path: &Path) -> anyhow::Result<EngineLink> {
        let link = EngineLink { path: path.to_path_buf(), tasks: Arc::default() };
        link.restore()?;
        Ok(link)
    }

    fn restore(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.path);
        let listener = tokio::net::UnixListener::bind(&self.path)?;
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                tasks.lock().map(|mut t| t.push(conn)).ok();
            }
        });
        self.tasks.lock().map(|mut t| t.push(accept)).ok();
        Ok(())
    }

    fn cut(&self) {
        for t in self.tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The engine goes away: what needs it answers 503 saying so, readiness says so, and the
/// server stays up. It comes back: the same session runs again, with every file it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_going_away_is_a_clear_503_and_loses_no_file() -> anyhow::Result<()> {
    let data = data_dir()?;
    let link = EngineLink::open(&data.path().join("engine.sock"))?;
    let host = format!("unix://{}", data.path().join("engine.sock").display());
    let mut env = QUIET.to_vec();
    env.push(("DOCKER_HOST", &host));
    let d = Daemon::start(&data.path().join("data"), &env)?;
    let c = d.client();
    let s = c.create_session(&CreateSession::default()).await?;
    let e = c.execute(&s.id, &CreateExecution::new(Language::Bash, "echo kept > kept.txt")).await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");

    link.cut();
    // Its attach stream cut, the session's container ends (and an execution sent meanwhile
    // would end as `sandbox_died`); once it is gone, starting another needs the engine.
    let data_dir = data.path().join("data");
    eventually("the session's container to end", Duration::from_secs(20), || docker_containers(&data_dir) == 0).await?;
    let e = c.execute(&s.id, &CreateExecution::new(Language::Bash, "cat kept.txt")).await;
    let err = e.expect_err("no engine, no execution");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503), "{err}");
    assert!(err.to_string().contains("Docker engine"), "says what is missing: {err}");
    let new = c.create_session(&CreateSession::default()).await.expect_err("no engine, no new session");
    assert_eq!(new.status().map(|s| s.as_u16()), Some(503), "{new}");
    let ready = reqwest::get(format!("{}/readyz", d.url)).await?;
    assert_eq!(ready.status().as_u16(), 503);
    let body: serde_json::Value = ready.json().await?;
    assert!(body["sandbox"]["message"].as_str().unwrap_or_default().contains("Docker engine"), "{body}");
    assert_eq!(c.read_file(&s.id, "kept.txt").await?, b"kept\n", "files stay readable from the host");

    link.restore()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let e = loop {
        match c.execute(&s.id, &CreateExecution::new(Language::Bash, "cat kept.txt")).await {
            Ok(e) => break e,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(err) => anyhow::bail!("the engine came back, the session did not: {err}"),
        }
    };
    assert_eq!((e.status, e.stdout.as_str()), (ExecutionStatus::Succeeded, "kept\n"), "{e:?}");
    drop(d);
    link.cut();
    Ok(())
}

/// A template may name an image of its own (built FROM the sandbox image): its sessions run in
/// it. An image the engine does not have is refused with its name (422); the local runtime
/// refuses every image. Deleting the last template that names an image removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_runs_its_own_image_and_an_unknown_one_is_refused() -> anyhow::Result<()> {
    // One fixed tag: a failed run leaves at most this one image behind, replaced by the next.
    let tag = "sandbox-platform/test-derived:latest".to_string();
    let dockerfile = "FROM sandbox-platform/sandbox:latest\nUSER root\nRUN echo derived > /usr/share/derived-marker\nUSER 1000:1000\n";
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tag, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    use std::io::Write;
    build.stdin.take().map(|mut i| i.write_all(dockerfile.as_bytes())).transpose()?;
    anyhow::ensure!(build.wait()?.success(), "docker build of the derived image");

    let data = data_dir()?;
    let d = Daemon::start(data.path(), &QUIET)?;
    let c = d.client();
    let template = |name: &str, image: &str| sandbox_api::CreateTemplate {
        name: name.into(),
        description: None,
        rootfs: None,
        image: Some(image.into()),
        limits: None,
        timeout_s: None,
        kernel: None,
        env: None,
        packages: None,
        pool_size: None,
        idle_timeout_s: None,
        max_lifetime_s: None,
        allowed_uploads: None,
    };
    let t = c.create_template(&template("derived", &tag)).await?;
    assert_eq!(t.image.as_deref(), Some(tag.as_str()));
    let s = c.create_session(&CreateSession { template: Some("derived".into()), ..Default::default() }).await?;
    let e = c.execute(&s.id, &CreateExecution::new(Language::Bash, "cat /usr/share/derived-marker")).await?;
    assert_eq!(e.stdout, "derived\n", "{e:?}");

    let unknown = c.create_template(&template("missing", "sandbox-platform/no-such-image:1")).await;
    let err = unknown.expect_err("an image the engine lacks");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(422), "{err}");
    assert!(err.to_string().contains("sandbox-platform/no-such-image:1"), "names the image: {err}");

    c.delete_session(&s.id).await?;
    c.delete_template("derived").await?;
    let gone = std::process::Command::new("docker").args(["image", "inspect", &tag]).output()?;
    assert!(!gone.status.success(), "no template names it any more: removed");
    drop(d);

    let local = Daemon::start(&data.path().join("local"), &[("SANDBOXD_RUNTIME", "local")])?;
    let err =
        local.client().create_template(&template("any", &tag)).await.expect_err("the local runtime has no images");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(422), "{err}");
    Ok(())
}
