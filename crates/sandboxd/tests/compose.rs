//! `deploy/compose/docker-compose.yml` brought up for real: sandboxd in a container, on the
//! Docker runtime through the host's socket, its data on a named volume. A session runs code
//! through the published port, and what the code writes lands in the volume on the host: the
//! mount sources went through sandboxd's own container's mounts, not taken as host paths.
//!
//! Needs `docker-compose` (`scripts/install-docker.sh`) and the images `scripts/test.sh`
//! builds: the sandbox image and sandboxd's own (`scripts/build-sandboxd-image.sh`).

use std::path::Path;
use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language};

const COMPOSE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/compose/docker-compose.yml");

struct Stack {
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
        c.args(["-f", COMPOSE_FILE, "-p", &self.project])
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_runs_a_session_with_its_files_on_the_volume() -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let stack = Stack { project: format!("sbxcompose{}", std::process::id()), port };

    // Beyond loopback (as it is in its container), sandboxd starts only with a key in force.
    let key = stack.run(&["run", "--rm", "-T", "sandboxd", "keys", "create", "--tenant", "compose"])?;
    let key = key.lines().last().unwrap_or_default().to_string();
    anyhow::ensure!(key.starts_with("sbx_"), "a key: {key:?}");
    stack.run(&["up", "-d", "--no-build"])?;

    let url = format!("http://127.0.0.1:{port}");
    let client = sandbox_client::Client::with_key(&url, Some(&key));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.readiness().await {
            Ok((status, _)) if status.is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
            other => anyhow::bail!("the stack never got ready: {other:?}\n{}", stack.run(&["logs"])?),
        }
    }
    let s = client.create_session(&CreateSession::default()).await?;
    let code = "open('from-compose.txt', 'w').write('written in a container')\nprint(open('from-compose.txt').read())";
    let e = client.execute(&s.id, &CreateExecution::new(Language::Python, code)).await?;
    assert_eq!((e.status, e.stdout.as_str()), (ExecutionStatus::Succeeded, "written in a container\n"), "{e:?}");
    assert_eq!(client.read_file(&s.id, "from-compose.txt").await?, b"written in a container");

    let out = std::process::Command::new("docker")
        .args(["volume", "inspect", &format!("{}_sandboxd-data", stack.project), "--format", "{{.Mountpoint}}"])
        .output()?;
    let volume = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let on_host = Path::new(&volume).join("workspaces").join(&s.id).join("from-compose.txt");
    assert_eq!(
        std::fs::read_to_string(&on_host)?,
        "written in a container",
        "the engine mounted the volume's own path"
    );

    stack.run(&["down", "-v", "--timeout", "20"])?;
    let left = sandbox_test_support::docker_containers(Path::new("/var/lib/sandboxd"));
    assert_eq!(left, 0, "sandboxd's containers go with it");
    Ok(())
}
