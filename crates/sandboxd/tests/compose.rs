//! `deploy/compose/docker-compose.yml` brought up for real: sandboxd in a container, on the
//! Docker runtime through the host's socket, its data on a named volume. A session runs code
//! through the published port, and what the code writes lands in the volume on the host: the
//! mount sources went through sandboxd's own container's mounts, not taken as host paths.
//!
//! Then sandboxd with an engine of its own (Docker-in-Docker, as
//! `deploy/compose/docker-compose.dind.yml` sets it up): the paths are that engine's,
//! untranslated, and nothing runs on the host's.
//!
//! Needs `docker-compose` (`scripts/install-docker.sh`) and the images `scripts/test.sh`
//! builds: the sandbox image, sandboxd's own (`scripts/build-sandboxd-image.sh`) and the
//! engine's (`images/dind`).

use std::path::Path;
use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, ExecutionReason, ExecutionStatus, Language};

const COMPOSE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/compose");

struct Stack {
    file: &'static str,
    project: String,
    port: u16,
}

impl Stack {
    fn command(&self, args: &[&str]) -> std::process::Command {
        // Debian's docker-compose where installed, else the compose plugin.
        let v1 = std::process::Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success());
        let mut c = std::process::Command::new(if v1 { "docker-compose" } else { "docker" });
        if !v1 {
            c.arg("compose");
        }
        c.args(["-f", &format!("{COMPOSE_DIR}/{}", self.file), "-p", &self.project])
            .args(args)
            .env("SANDBOXD_PORT", self.port.to_string())
            .stdin(std::process::Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "docker-compose {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.command(&["down", "-v", "--timeout", "20"]).output();
    }
}

impl Stack {
    fn new(file: &'static str, name: &str) -> anyhow::Result<Stack> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Stack { file, project: format!("sbx{name}{}", std::process::id()), port })
    }

    /// Makes a key (beyond its container's loopback, sandboxd starts only with one in force),
    /// brings the whole stack up, and waits until sandboxd is ready.
    async fn up(&self) -> anyhow::Result<sandbox_client::Client> {
        let key = self.run(&["run", "--rm", "-T", "sandboxd", "keys", "create", "--tenant", "compose"])?;
        let key = key.lines().last().unwrap_or_default().to_string();
        anyhow::ensure!(key.starts_with("sbx_"), "a key: {key:?}");
        self.run(&["up", "-d", "--no-build"])?;
        let client = sandbox_client::Client::with_key(&format!("http://127.0.0.1:{}", self.port), Some(&key));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match client.readiness().await {
                Ok((status, _)) if status.is_success() => return Ok(client),
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
                other => anyhow::bail!("the stack never got ready: {other:?}\n{}", self.run(&["logs"])?),
            }
        }
    }

    /// Runs code that writes a file in a new session, reads it back through the API, and
    /// returns where the data volume keeps that file on the host.
    async fn write_a_file(&self, client: &sandbox_client::Client) -> anyhow::Result<(String, std::path::PathBuf)> {
        let s = client.create_session(&CreateSession::default()).await?;
        let code =
            "open('from-compose.txt', 'w').write('written in a container')\nprint(open('from-compose.txt').read())";
        let e = client.execute(&s.id, &CreateExecution::new(Language::Python, code)).await?;
        assert_eq!((e.status, e.stdout.as_str()), (ExecutionStatus::Succeeded, "written in a container\n"), "{e:?}");
        assert_eq!(client.read_file(&s.id, "from-compose.txt").await?, b"written in a container");
        let volume =
            docker(&["volume", "inspect", &format!("{}_sandboxd-data", self.project), "--format", "{{.Mountpoint}}"])?;
        let on_host = Path::new(&volume).join("workspaces").join(&s.id).join("from-compose.txt");
        Ok((s.id, on_host))
    }
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker").args(args).output()?;
    anyhow::ensure!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// sandboxd's containers on the host's engine, by the instance label of its data dir there.
fn on_the_host_engine() -> usize {
    sandbox_test_support::docker_containers(Path::new("/var/lib/sandboxd"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_runs_a_session_with_its_files_on_the_volume() -> anyhow::Result<()> {
    let stack = Stack::new("docker-compose.yml", "compose")?;
    let client = stack.up().await?;
    let (session, on_host) = stack.write_a_file(&client).await?;
    assert_eq!(
        std::fs::read_to_string(&on_host)?,
        "written in a container",
        "the engine mounted the volume's own path"
    );
    // In its container, sandboxd cannot read its sandboxes' cgroups: the engine's OOM events
    // name the memory limit instead.
    let bomb = CreateExecution {
        fresh: Some(true),
        timeout_s: Some(30.0),
        ..CreateExecution::new(Language::Python, "x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))")
    };
    let e = client.execute(&session, &bomb).await?;
    assert_eq!((e.status, e.reason), (ExecutionStatus::Killed, Some(ExecutionReason::Memory)), "{e:?}");
    stack.run(&["down", "-v", "--timeout", "20"])?;
    assert_eq!(on_the_host_engine(), 0, "sandboxd's containers go with it");
    Ok(())
}

/// What `docker-compose.dind.yml` sets up, made with `docker run`: compose cannot unmask
/// /proc, which an engine in a container needs where `privileged` cannot be had (this host's
/// capability bounding set lacks SYS_RESOURCE, so runc refuses it). Removed on drop.
struct Dind {
    names: [String; 5],
}

impl Dind {
    fn network(&self) -> &str {
        &self.names[0]
    }
    fn engine(&self) -> &str {
        &self.names[1]
    }
    fn sandboxd(&self) -> &str {
        &self.names[2]
    }
    fn data(&self) -> &str {
        &self.names[3]
    }
}

impl Drop for Dind {
    fn drop(&mut self) {
        let [network, engine, sandboxd, data, engine_data] = &self.names;
        // In order, each given time to end its own: sandboxd (its containers end with it), then
        // the engine, which removes its containers' cgroups from the host's tree it was lent.
        let _ = docker(&["stop", "-t", "15", sandboxd]);
        let _ = docker(&["stop", "-t", "30", engine]);
        let _ = docker(&["rm", "-f", "-v", sandboxd, engine]);
        let _ = docker(&["volume", "rm", data, engine_data]);
        let _ = docker(&["network", "rm", network]);
    }
}

/// Every capability this process's bounding set holds, for the engine in a container (up to
/// AUDIT_READ: engine 20.10 knows no later one).
fn held_capabilities() -> anyhow::Result<Vec<String>> {
    const NAMES: [&str; 38] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
    ];
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap_or_default().trim();
    let mask = u64::from_str_radix(hex, 16)?;
    Ok(NAMES.iter().enumerate().filter(|(bit, _)| mask & (1 << bit) != 0).map(|(_, n)| n.to_string()).collect())
}

/// sandboxd in a container with an engine of its own (Docker-in-Docker), sharing the data
/// volume at the same path: sandboxd finds its own container, but not on that engine, so it
/// takes its paths as the engine's, untranslated. Sessions run on that engine, none on the
/// host's, and their files land in the shared volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxd_runs_sessions_on_an_engine_of_its_own() -> anyhow::Result<()> {
    let id = std::process::id();
    let d = Dind { names: ["net", "engine", "sandboxd", "data", "engine-data"].map(|n| format!("sbxdind-{n}-{id}")) };
    docker(&["network", "create", d.network()])?;
    let mut run: Vec<String> = ["run", "-d", "--name", d.engine(), "--network", d.network()].map(String::from).to_vec();
    for cap in held_capabilities()? {
        run.extend(["--cap-add".to_string(), cap]);
    }
    for opt in ["seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"] {
        run.extend(["--security-opt".to_string(), opt.to_string()]);
    }
    run.extend(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v"].map(String::from));
    run.extend([format!("{}:/var/lib/docker", d.names[4]), "-v".into(), format!("{}:/var/lib/sandboxd", d.data())]);
    run.push("sandbox-platform/dind:latest".into());
    docker(&run.iter().map(String::as_str).collect::<Vec<_>>())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while docker(&["exec", d.engine(), "docker", "version"]).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the inner engine never answered:\n{}",
            docker(&["logs", d.engine()])?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The engine of its own starts empty: give it the sandbox image, as an operator would.
    let load = format!("docker save sandbox-platform/sandbox:latest | docker exec -i {} docker load -q", d.engine());
    let loaded = std::process::Command::new("sh").args(["-c", &load]).output()?;
    anyhow::ensure!(loaded.status.success(), "image load: {}", String::from_utf8_lossy(&loaded.stderr));

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let engine = format!("DOCKER_HOST=tcp://{}:2375", d.engine());
    let volume = format!("{}:/var/lib/sandboxd", d.data());
    let common = ["--network", d.network(), "-e", &engine, "-v", &volume];
    let key = docker(
        &[&["run", "--rm"][..], &common, &["sandbox-platform/sandboxd:latest", "keys", "create", "--tenant", "dind"]]
            .concat(),
    )?;
    let key = key.lines().last().unwrap_or_default().to_string();
    let publish = format!("127.0.0.1:{port}:8080");
    docker(
        &[&["run", "-d", "--name", d.sandboxd(), "-p", &publish][..], &common, &["sandbox-platform/sandboxd:latest"]]
            .concat(),
    )?;
    let client = sandbox_client::Client::with_key(&format!("http://127.0.0.1:{port}"), Some(&key));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match client.readiness().await {
            Ok((status, _)) if status.is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
            other => anyhow::bail!("sandboxd never got ready: {other:?}\n{}", docker(&["logs", d.sandboxd()])?),
        }
    }
    let s = client.create_session(&CreateSession::default()).await?;
    let code =
        "open('from-dind.txt', 'w').write('written on an engine of its own')\nprint(open('from-dind.txt').read())";
    let e = client.execute(&s.id, &CreateExecution::new(Language::Python, code)).await?;
    assert_eq!(
        (e.status, e.stdout.as_str()),
        (ExecutionStatus::Succeeded, "written on an engine of its own\n"),
        "{e:?}"
    );
    let label = format!("label=org.sandbox-platform.sandbox={}", s.id);
    assert!(!docker(&["exec", d.engine(), "docker", "ps", "-q", "--filter", &label])?.is_empty(), "on its own engine");
    // By the session's own label: the compose stack's test may run beside this one on the
    // host's engine, with the same data dir path inside its container.
    assert!(docker(&["ps", "-aq", "--filter", &label])?.is_empty(), "and not on the host's");
    let mountpoint = docker(&["volume", "inspect", d.data(), "--format", "{{.Mountpoint}}"])?;
    let on_host = Path::new(&mountpoint).join("workspaces").join(&s.id).join("from-dind.txt");
    assert_eq!(std::fs::read_to_string(on_host)?, "written on an engine of its own", "in the shared volume");
    Ok(())
}
