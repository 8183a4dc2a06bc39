//! Benchmarks of sandbox-platform against its anchors, run side by side in one process so
//! both see the same machine noise. Our calls and the anchor's alternate one by one; each
//! scenario prints p50 and p99 of both and the ratio of the p50s.
//!
//! - `stateless_session`: `print(1)` as a fresh Python process (`fresh: true`) in an existing
//!   session, through the HTTP API, vs bare `/usr/bin/python3 -c 'print(1)'` on the host.
//! - `one_shot_run`: `POST /v1/run` of `print(1)` (a new sandbox each time, taken from the
//!   warm pool) vs the bubblewrap floor, `shared/bench/anchors/floor_bwrap.sh`.
//! - `one_shot_run_cold`: the same against a second sandboxd with the pool off, so every run
//!   starts its sandbox (cgroup, namespaces, executor) on the request's path.
//! - `stateful_*`: the session kernel vs one warm ipykernel driven by jupyter_client
//!   (`shared/bench/anchors/floor_jupyter.py`): `print(1)` and a matplotlib PNG round trip, and
//!   a new session's first `print(1)` vs ipykernel's start. The anchor runs its own loop, so
//!   these run block-wise in the same invocation, not call by call.
//! - `doors` (not by default): a stateful `print(1)` through each door as its own official
//!   client sees it (REST with a lean keep-alive client, the E2B SDK, the MCP client:
//!   `bench/doors.py`, calls interleaved), then the Jupyter anchor in the same run.
//! - `replicas` (not by default, alone): SQLite against PostgreSQL and a forwarding replica,
//!   latency and sustained throughput (`replicas.rs`).

mod kubernetes;
mod load;
mod replicas;
mod sustained;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use sandbox_api::{CreateExecution, CreateSession, Execution, ExecutionStatus, Language, RunRequest};
use sandbox_client::Client;

#[derive(Parser)]
struct Args {
    /// Measured iterations per side and scenario.
    #[arg(short, default_value_t = 200)]
    n: usize,
    /// Where the anchor scripts are.
    #[arg(long, default_value = "../shared/bench/anchors")]
    anchors: PathBuf,
    /// The sandboxd binary to measure (by default the one next to this binary).
    #[arg(long)]
    sandboxd: Option<PathBuf>,
    /// Python with jupyter_client, ipykernel and matplotlib, for the Jupyter anchor
    /// (bench/run.sh makes one); without it the stateful anchors are skipped.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Scenarios to run (comma-separated): stateless, run, stateful, cold, files, and, not by
    /// default, load (minutes of 200 sessions under faults; `load.rs`), sustained (50
    /// sessions' stateful executions at once; `sustained.rs`), doors, and runtimes (the
    /// Docker runtime against the local one and llm-sandbox, on the local Docker engine), and
    /// replicas (one sandboxd on SQLite against replicas on PostgreSQL; `replicas.rs`), and
    /// kubernetes (the Kubernetes runtime on the fake cluster against the local runtime, or on
    /// `--kubeconfig`'s cluster against Docker; `kubernetes.rs`).
    #[arg(long, value_delimiter = ',', default_value = "stateless,run,stateful,cold,files")]
    only: Vec<String>,
    /// `load`: sessions created at once.
    #[arg(long, default_value_t = 200)]
    load_sessions: usize,
    /// `load`: stateful executions (each with a file written and read back) per session.
    #[arg(long, default_value_t = 20)]
    load_executions: usize,
    /// `sustained`: sessions running at once.
    #[arg(long, default_value_t = 50)]
    sustained_sessions: usize,
    /// `doors`: a Python with the E2B SDK, the MCP client and httpx
    /// (scripts/install-test-clients.sh makes one).
    #[arg(long, default_value = "target/test-venv/bin/python")]
    clients_python: PathBuf,
    /// `runtimes`: a Python with llm-sandbox's Docker backend, for its anchor (bench/run.sh
    /// makes one).
    #[arg(long, default_value = "target/llm-venv/bin/python")]
    llm_python: PathBuf,
    /// `sustained`: how long, seconds.
    #[arg(long, default_value_t = 20)]
    sustained_seconds: u64,
    /// `load`: kill kernels, sandboxes and sandboxd at random moments.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    load_faults: bool,
    /// `kubernetes`: a real cluster to measure (against the Docker runtime here); without
    /// one, the fake cluster of test-support (against the local runtime).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// `kubernetes` on a real cluster: the sandbox image it pulls.
    #[arg(long, default_value = "sandbox-platform/sandbox:latest")]
    kubernetes_image: String,
    /// `kubernetes` on a real cluster: the namespace of the sandbox pods.
    #[arg(long, default_value = "sandbox-bench")]
    kubernetes_namespace: String,
    /// `kubernetes` on a real cluster: the second layer, on or off.
    #[arg(long, default_value = "on")]
    kubernetes_second_layer: String,
}

struct Stats {
    p50: f64,
    p99: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    Stats { p50: at(0.50), p99: at(0.99) }
}

fn report(name: &str, ours: Vec<f64>, anchor_name: &str, anchor: Vec<f64>, goal: f64) {
    let (o, a) = (stats(ours), stats(anchor));
    let ratio = o.p50 / a.p50;
    println!(
        "{name}: ours p50={:.2}ms p99={:.2}ms | {anchor_name} p50={:.2}ms p99={:.2}ms | ratio_p50={ratio:.3} (goal <= {goal}) {}",
        o.p50,
        o.p99,
        a.p50,
        a.p99,
        if ratio <= goal { "MET" } else { "MISSED" }
    );
}

fn time_command(cmd: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() || out.stdout != b"1\n" {
        bail!("anchor failed: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(ms)
}

struct Daemon {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn start_sandboxd(bin: &std::path::Path, env: &[(&str, &str)]) -> anyhow::Result<Daemon> {
    let data = tempfile::Builder::new().prefix("sandbox-bench-").tempdir_in("/tmp")?;
    let mut child = Command::new(bin)
        .env("SANDBOXD_LISTEN", "127.0.0.1:0")
        .env("SANDBOXD_DATA_DIR", data.path())
        .env("SANDBOXD_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().context("sandboxd exited")??;
        if let Some(u) = line.strip_prefix("sandboxd listening on ") {
            break u.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Daemon { child, url, _data: data })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sandboxd = match args.sandboxd {
        Some(p) => p,
        None => std::env::current_exe()?.parent().context("exe dir")?.join("sandboxd"),
    };
    if args.only.iter().any(|o| o == "load") {
        return load::run(&sandboxd, args.load_sessions, args.load_executions, args.load_faults).await;
    }
    if args.only.iter().any(|o| o == "kubernetes") {
        let real = args.kubeconfig.map(|kubeconfig| kubernetes::RealCluster {
            kubeconfig,
            image: args.kubernetes_image,
            namespace: args.kubernetes_namespace,
            second_layer: args.kubernetes_second_layer,
        });
        return kubernetes::run(&sandboxd, &args.clients_python, args.n, real).await;
    }
    if args.only.iter().any(|o| o == "replicas") {
        return replicas::run(&sandboxd, args.n, args.sustained_sessions, args.sustained_seconds).await;
    }
    let floor = args.anchors.join("floor_bwrap.sh");
    if !floor.is_file() {
        bail!("anchor {} not found (pass --anchors)", floor.display());
    }
    let daemon = start_sandboxd(&sandboxd, &[])?;
    let client = Client::new(&daemon.url);
    let (status, r) = client.readiness().await?;
    if !status.is_success() {
        bail!("sandboxd not ready: {}", r.sandbox.message);
    }
    let cgroup = r.runtime_detail.get("cgroup").cloned().unwrap_or_default();
    println!("sandboxd {} (cgroup {cgroup}), n={} per side, calls interleaved", daemon.url, args.n);

    let session = client.create_session(&CreateSession::default()).await?;
    let exec = CreateExecution { fresh: Some(true), ..CreateExecution::new(Language::Python, "print(1)") };
    let run = RunRequest::new(Language::Python, "print(1)");
    let bare = || {
        let mut c = Command::new("/usr/bin/python3");
        c.args(["-c", "print(1)"]);
        c
    };
    let mut bwrap_floor = || {
        let mut c = Command::new("bash");
        c.arg(&floor);
        c
    };

    // Between runs, let the background tear-down of the last throwaway sandbox (and the
    // pool's refill) finish, as they would between an agent's calls, so they are not charged
    // to the anchor.
    let settle = Duration::from_millis(20);
    let wants = |name: &str| args.only.iter().any(|o| o == name);
    if wants("stateless") {
        let (ours, anchor) = side_by_side(args.n, Duration::ZERO, || client.execute(&session.id, &exec), bare).await?;
        report("stateless_session print(1)", ours, "bare python3", anchor, 1.2);
    }
    if wants("run") {
        let (ours, anchor) = side_by_side(args.n, settle, || client.run(&run), &mut bwrap_floor).await?;
        report("one_shot_run print(1)", ours, "floor_bwrap.sh", anchor, 1.3);
    }
    if wants("stateful") {
        stateful(&client, args.n, args.python.as_deref(), &args.anchors).await?;
    }
    if wants("runtimes") {
        runtimes(&sandboxd, &args.clients_python, &args.llm_python, &args.anchors, args.n).await?;
    }
    if wants("doors") {
        doors(&sandboxd, &args.clients_python, args.python.as_deref(), &args.anchors, args.n).await?;
    }
    if wants("sustained") {
        sustained::run(std::slice::from_ref(&client), args.sustained_sessions, args.sustained_seconds, "").await?;
    }
    if wants("files") {
        println!("files: workspace storage: {}", r.storage.message);
        files(&client, 5, "").await?;
    }
    drop(daemon);
    if wants("files") {
        // The same against plain directories: what a workspace volume (loop-mounted ext4) costs.
        let plain = start_sandboxd(&sandboxd, &[("SANDBOXD_WORKSPACE_VOLUMES", "off")])?;
        files(&Client::new(&plain.url), 5, " [plain dirs]").await?;
        drop(plain);
        // Through the executor inside the sandbox: what a runtime whose sandboxes do not share
        // sandboxd's disk pays for the file API.
        let remote = start_sandboxd(&sandboxd, &[("SANDBOXD_FILE_ACCESS", "executor")])?;
        files(&Client::new(&remote.url), 5, " [through the executor]").await?;
    }

    if wants("cold") {
        let cold = start_sandboxd(&sandboxd, &[("SANDBOXD_RUN_POOL", "0")])?;
        let cold_client = Client::new(&cold.url);
        let (ours, anchor) = side_by_side(args.n, settle, || cold_client.run(&run), &mut bwrap_floor).await?;
        report("one_shot_run_cold print(1)", ours, "floor_bwrap.sh", anchor, 1.3);
    }
    Ok(())
}

/// Upload and download of a 256 MiB file through the API vs `cp` of it, all on the disk of
/// sandboxd's data dir (/tmp), rounds interleaved; throughput ratio of the p50s.
async fn files(client: &Client, rounds: usize, label: &str) -> anyhow::Result<()> {
    const SIZE: usize = 256 << 20;
    let dir = tempfile::Builder::new().prefix("sandbox-bench-files-").tempdir_in("/tmp")?;
    let src = dir.path().join("src.bin");
    // Not all one byte: some filesystems and layers treat zeros specially.
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(&src, block.repeat(SIZE >> 20))?;
    let session = client.create_session(&CreateSession::default()).await?;
    // Each upload writes a new file, deleted afterwards outside the timing, as cp's copy is:
    // replacing a file would charge freeing the old one's blocks to the upload.
    let url = format!("{}{}", client.base(), sandbox_client::file_url(&session.id, "curl.bin"));
    let curl = |args: &[&str]| -> anyhow::Result<f64> {
        let start = Instant::now();
        let out = Command::new("curl").args(["-sS", "--fail"]).args(args).output()?;
        if !out.status.success() {
            bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };
    let src_arg = src.to_string_lossy().into_owned();
    let down_arg = dir.path().join("down.bin").to_string_lossy().into_owned();
    let (mut up, mut down, mut cp) = (Vec::new(), Vec::new(), Vec::new());
    let (mut curl_up, mut curl_down) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let t_curl_up = curl(&["-o", "/dev/null", "-T", &src_arg, &url])?;
        let t_curl_down = curl(&["-o", &down_arg, &url])?;
        std::fs::remove_file(dir.path().join("down.bin"))?;
        client.delete_file(&session.id, "curl.bin", false).await?;

        let start = Instant::now();
        let file = tokio::fs::File::open(&src).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        client.upload(&session.id, "big.bin", body, Some(SIZE as u64)).await?;
        let t_up = start.elapsed().as_secs_f64() * 1000.0;

        let start = Instant::now();
        let mut resp = client.download(&session.id, "big.bin").await?;
        let mut out = tokio::fs::File::create(dir.path().join("down.bin")).await?;
        while let Some(chunk) = resp.chunk().await? {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
        let t_down = start.elapsed().as_secs_f64() * 1000.0;
        std::fs::remove_file(dir.path().join("down.bin"))?;
        client.delete_file(&session.id, "big.bin", false).await?;

        let start = Instant::now();
        let status = Command::new("cp").arg(&src).arg(dir.path().join("cp.bin")).status()?;
        let t_cp = start.elapsed().as_secs_f64() * 1000.0;
        if !status.success() {
            bail!("cp failed");
        }
        std::fs::remove_file(dir.path().join("cp.bin"))?;
        if round > 0 {
            up.push(t_up);
            down.push(t_down);
            cp.push(t_cp);
            curl_up.push(t_curl_up);
            curl_down.push(t_curl_down);
        }
    }
    client.delete_session(&session.id).await?;
    let cp = stats(cp);
    let mbps = |ms: f64| (SIZE as f64 / 1048576.0) / (ms / 1000.0);
    println!("files{label} 256 MiB: cp p50={:.0}ms ({:.0} MiB/s)", cp.p50, mbps(cp.p50));
    for (what, times) in [
        ("upload (curl)", curl_up),
        ("download (curl)", curl_down),
        ("upload (sandbox-client)", up),
        ("download (sandbox-client)", down),
    ] {
        let ours = stats(times);
        let r = cp.p50 / ours.p50;
        println!(
            "files{label} {what}: p50={:.0}ms ({:.0} MiB/s), throughput vs cp: ratio={r:.3} (goal >= 0.5) {}",
            ours.p50,
            mbps(ours.p50),
            if r >= 0.5 { "MET" } else { "MISSED" }
        );
    }
    Ok(())
}

/// Memory of processes: resident (RSS, shared pages included) and unique (USS: pages no
/// other process maps, i.e. what one more of them costs the host), in bytes.
#[derive(Default, Clone, Copy)]
struct Mem {
    rss: u64,
    uss: u64,
}

impl std::ops::Add for Mem {
    type Output = Mem;
    fn add(self, o: Mem) -> Mem {
        Mem { rss: self.rss + o.rss, uss: self.uss + o.uss }
    }
}

/// From /proc/PID/smaps_rollup.
fn memory_of(pid: &str) -> Mem {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Mem { rss: field("Rss:"), uss: field("Private_Clean:") + field("Private_Dirty:") }
}

/// Memory of every process of an idle session (kernel warmed by one cell): a cold session, so
/// its cgroup carries the session id (`<id>.<n>`). Needs the host's cgroupfs (the bench runs as root here).
async fn idle_session_memory(client: &Client) -> anyhow::Result<Mem> {
    let s = client
        .create_session(&CreateSession {
            env: Some([("BENCH".to_string(), "idle".to_string())].into()),
            ..Default::default()
        })
        .await?;
    timed(client, &s.id, "print(1)").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut total = Mem::default();
    for root in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let Ok(dirs) = std::fs::read_dir(root) else { continue };
        for d in dirs.flatten().filter(|d| d.file_name().to_string_lossy().starts_with("sandboxd-")) {
            // A sandbox's cgroup is `<session id>.<n>`.
            let prefix = format!("{}.", s.id);
            let Ok(groups) = std::fs::read_dir(d.path()) else { continue };
            for g in groups.flatten().filter(|g| g.file_name().to_string_lossy().starts_with(&prefix)) {
                if let Ok(procs) = std::fs::read_to_string(g.path().join("cgroup.procs")) {
                    total = procs.lines().map(memory_of).fold(Mem::default(), |a, b| a + b);
                }
            }
        }
        if total.rss > 0 {
            break;
        }
    }
    client.delete_session(&s.id).await?;
    if total.rss == 0 {
        bail!("cannot find the session's cgroup to measure its memory");
    }
    Ok(total)
}

/// Memory of an ipykernel started by jupyter_client, after one `print(1)`.
fn idle_ipykernel_memory(python: &std::path::Path) -> anyhow::Result<Mem> {
    let script = "import time\nfrom jupyter_client.manager import start_new_kernel\nkm, kc = start_new_kernel(kernel_name='python3')\nkc.execute_interactive('print(1)', timeout=30, output_hook=lambda m: None)\ntime.sleep(0.5)\nprint('PID', km.provisioner.process.pid, flush=True)\ninput()\nkm.shutdown_kernel(now=True)";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("PID ").map(String::from))
        .unwrap_or_default();
    let mem = memory_of(line.trim());
    drop(child.stdin.take());
    let _ = child.wait();
    if mem.rss == 0 {
        bail!("could not measure the ipykernel (got {line:?})");
    }
    Ok(mem)
}

/// Times a call that must succeed, in ms.
async fn timed(client: &Client, session: &str, code: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let e = client.execute(session, &CreateExecution::new(Language::Python, code)).await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if e.status != ExecutionStatus::Succeeded {
        bail!("execution failed: {e:?}");
    }
    Ok(ms)
}

/// The session kernel vs jupyter_client on ipykernel (issue 4's goals).
/// A key=value line's number for `key`.
fn field_of(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{key}="))?.parse().ok())
}

/// The Docker runtime against the local one (`bench/runtimes.py`, two sandboxd side by side,
/// one lean keep-alive client), then llm-sandbox on the same engine and image as the anchor
/// of a cold start.
async fn runtimes(
    sandboxd: &std::path::Path,
    clients: &std::path::Path,
    llm_python: &std::path::Path,
    anchors: &std::path::Path,
    n: usize,
) -> anyhow::Result<()> {
    let local = start_sandboxd(sandboxd, &[])?;
    let docker = start_sandboxd(sandboxd, &[("SANDBOXD_RUNTIME", "docker")])?;
    for d in [&local, &docker] {
        let (ok, r) = Client::new(&d.url).readiness().await?;
        anyhow::ensure!(ok.is_success(), "not ready: {}", r.sandbox.message);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/runtimes.py");
    let out = Command::new(clients).arg(script).args([&local.url, &docker.url, &n.to_string()]).output()?;
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    if !out.status.success() {
        bail!("runtimes.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    drop((local, docker));
    println!("runtimes (docker vs local, lean keep-alive client, interleaved, n={n}): {line}");
    for what in ["ready_pool", "ready_cold", "stateless", "stateful", "png"] {
        let (Some(d), Some(l)) =
            (field_of(&line, &format!("{what}_docker_p50_ms")), field_of(&line, &format!("{what}_local_p50_ms")))
        else {
            continue;
        };
        println!("{what}: docker p50={d:.2}ms local p50={l:.2}ms ratio={:.3}", d / l);
    }
    if let Some(d) = field_of(&line, "ready_pool_docker_p50_ms") {
        println!(
            "pooled docker session ready: p50={d:.2}ms (goal <= 20 ms) {}",
            if d <= 20.0 { "MET" } else { "MISSED" }
        );
    }
    if let (Some(d), Some(l)) = (field_of(&line, "stateful_docker_p50_ms"), field_of(&line, "stateful_local_p50_ms")) {
        let r = d / l;
        println!(
            "stateful print(1) docker vs local: ratio={r:.3} (goal <= 1.2) {}",
            if r <= 1.2 { "MET" } else { "MISSED" }
        );
    }
    // llm-sandbox opens a container of the same image (plus the venv tools it sets up inside).
    let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/llm-anchor.Dockerfile");
    let built = Command::new("docker")
        .args(["build", "-q", "-t", "sandbox-platform/llm-anchor:latest", "-f", dockerfile, env!("CARGO_MANIFEST_DIR")])
        .output()?;
    anyhow::ensure!(built.status.success(), "llm anchor image: {}", String::from_utf8_lossy(&built.stderr));
    let out = Command::new(llm_python)
        .arg(anchors.join("anchor_llm_sandbox.py"))
        .args([&n.min(50).to_string(), "sandbox-platform/llm-anchor:latest"])
        .output()?;
    let anchor = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        bail!("anchor_llm_sandbox.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!("runtimes anchor (anchor_llm_sandbox.py, same engine and image): {anchor}");
    if let (Some(cold), Some(open)) = (field_of(&line, "ready_cold_docker_p50_ms"), field_of(&anchor, "llm_open_ms")) {
        let r = cold / open;
        println!(
            "docker cold session ready vs llm-sandbox open: ratio={r:.3} (goal <= 0.5) {}",
            if r <= 0.5 { "MET" } else { "MISSED" }
        );
    }
    if let (Some(d), Some(llm)) =
        (field_of(&line, "stateful_docker_p50_ms"), field_of(&anchor, "llm_run_print1_p50_ms"))
    {
        println!("stateful print(1) docker vs llm-sandbox run: ratio={:.3}", d / llm);
    }
    Ok(())
}

/// Stateful `print(1)` through REST, the E2B SDK and MCP (`bench/doors.py`) against a
/// sandboxd with an API key in force, as clients meet it, then the Jupyter anchor.
async fn doors(
    sandboxd: &std::path::Path,
    clients: &std::path::Path,
    python: Option<&std::path::Path>,
    anchors: &std::path::Path,
    n: usize,
) -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-bench-doors-").tempdir_in("/tmp")?;
    let out = Command::new(sandboxd)
        .args(["keys", "create", "--tenant", "bench"])
        .env("SANDBOXD_DATA_DIR", data.path())
        .output()?;
    let key = String::from_utf8(out.stdout)?.trim().to_string();
    let data_dir = data.path().to_string_lossy().to_string();
    let daemon = start_sandboxd(sandboxd, &[("SANDBOXD_DATA_DIR", data_dir.as_str())])?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/doors.py");
    let out = Command::new(clients).arg(script).args([daemon.url.as_str(), key.as_str(), &n.to_string()]).output()?;
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    if !out.status.success() {
        bail!("doors.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!("doors (stateful print(1), each door's own client, interleaved, n={n}): {line}");
    let rest = field_of(&line, "rest_p50_ms").context("no REST figure")?;
    for door in ["e2b", "mcp", "mcp_lean"] {
        if let Some(ms) = field_of(&line, &format!("{door}_p50_ms")) {
            let r = ms / rest;
            println!("{door} p50 vs REST p50: ratio={r:.3} (goal <= 1.5) {}", if r <= 1.5 { "MET" } else { "MISSED" });
        }
    }
    drop(daemon);
    let Some(python) = python else {
        println!("doors anchor skipped: pass --python with jupyter_client and ipykernel (bench/run.sh does)");
        return Ok(());
    };
    let out = Command::new(python).arg(anchors.join("floor_jupyter.py")).arg(n.to_string()).output()?;
    let anchor = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("doors anchor (floor_jupyter.py, a warm ipykernel through jupyter_client): {anchor}");
    if let Some(jupyter) = field_of(&anchor, "print1_p50_ms") {
        for door in ["rest", "e2b", "mcp"] {
            if let Some(ms) = field_of(&line, &format!("{door}_p50_ms")) {
                println!("{door} p50 vs jupyter_client p50: ratio={:.3}", ms / jupyter);
            }
        }
    }
    Ok(())
}

async fn stateful(
    client: &Client,
    n: usize,
    python: Option<&std::path::Path>,
    anchors: &std::path::Path,
) -> anyhow::Result<()> {
    // A new session until its kernel has run a first cell: what "ready" means to an agent.
    // From the pool (waiting, untimed, for it to refill as it would between an agent's
    // sessions), and cold (a session with its own environment cannot use the pool's kernel).
    let mut ready_pool = Vec::new();
    let mut ready_cold = Vec::new();
    for _ in 0..5 {
        for _ in 0..400 {
            if client.readiness().await?.1.pools.session > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        for (env, into) in
            [(None, &mut ready_pool), (Some([("BENCH".to_string(), "cold".to_string())].into()), &mut ready_cold)]
        {
            let start = Instant::now();
            let s = client.create_session(&CreateSession { env, ..Default::default() }).await?;
            timed(client, &s.id, "print(1)").await?;
            into.push(start.elapsed().as_secs_f64() * 1000.0);
            client.delete_session(&s.id).await?;
        }
    }
    // Pools refilling in the background start kernels: let them finish before timing cells.
    for _ in 0..400 {
        let pools = client.readiness().await?.1.pools;
        if pools.session >= 2 && pools.run >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let s = client.create_session(&CreateSession::default()).await?;
    timed(client, &s.id, "import matplotlib.pyplot as plt").await?;
    let mut print1 = Vec::new();
    for i in 0..n + 20 {
        let ms = timed(client, &s.id, "print(1)").await?;
        if i >= 20 {
            print1.push(ms);
        }
    }
    let mut png = Vec::new();
    for _ in 0..10 {
        png.push(timed(client, &s.id, "plt.plot([1,2,3]); plt.show()").await?);
    }
    client.delete_session(&s.id).await?;
    let (pool, cold, print1, png) = (stats(ready_pool), stats(ready_cold), stats(print1), stats(png));
    println!(
        "stateful ours: session_ready pool p50={:.1}ms cold p50={:.1}ms | print(1) p50={:.2}ms p99={:.2}ms | png p50={:.1}ms",
        pool.p50, cold.p50, print1.p50, print1.p99, png.p50
    );
    println!(
        "session ready from the pool: p50={:.1}ms (goal <= 20 ms) {}",
        pool.p50,
        if pool.p50 <= 20.0 { "MET" } else { "MISSED" }
    );
    let ours_idle = idle_session_memory(client).await?;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "stateful ours: idle session rss={:.1}MiB uss={:.1}MiB (bwrap + executor + kernel, after print(1))",
        mib(ours_idle.rss),
        mib(ours_idle.uss)
    );
    let Some(python) = python else {
        println!("stateful anchor skipped: pass --python with jupyter_client and ipykernel (bench/run.sh does)");
        return Ok(());
    };
    let anchor_idle = idle_ipykernel_memory(python)?;
    for (what, ours, anchor) in [("rss", ours_idle.rss, anchor_idle.rss), ("uss", ours_idle.uss, anchor_idle.uss)] {
        let r = ours as f64 / anchor as f64;
        println!(
            "idle memory ({what}) per session vs an idle ipykernel ({:.1}MiB): ratio={r:.3} (goal <= 0.6) {}",
            mib(anchor),
            if r <= 0.6 { "MET" } else { "MISSED" }
        );
    }
    let out = Command::new(python).arg(anchors.join("floor_jupyter.py")).arg(n.to_string()).output()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        bail!("floor_jupyter.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!("stateful anchor (floor_jupyter.py): {line}");
    let ratio = |name: &str, ours: f64, key: &str, goal: f64| {
        if let Some(anchor) = field_of(&line, key) {
            let r = ours / anchor;
            println!("{name}: ratio={r:.3} (goal <= {goal}) {}", if r <= goal { "MET" } else { "MISSED" });
        }
    };
    ratio("stateful print(1) p50 vs jupyter_client", print1.p50, "print1_p50_ms", 0.2);
    ratio("stateful png p50 vs jupyter_client", png.p50, "png_p50_ms", 0.7);
    ratio("session ready (cold) vs ipykernel start", cold.p50, "kernel_start_ms", 0.3);
    Ok(())
}

/// Calls ours and the anchor alternately, `WARMUP` times unmeasured then `n` times measured,
/// checking that ours printed `1`; returns (ours, anchor) in ms.
async fn side_by_side<F, Fut>(
    n: usize,
    settle: Duration,
    mut ours_call: F,
    mut anchor_cmd: impl FnMut() -> Command,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Execution, sandbox_client::ClientError>>,
{
    const WARMUP: usize = 10;
    let (mut ours, mut anchor) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + n {
        let start = Instant::now();
        let e = ours_call().await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if e.status != ExecutionStatus::Succeeded || e.stdout != "1\n" {
            bail!("execution failed: {e:?}");
        }
        let a = time_command(&mut anchor_cmd())?;
        if i >= WARMUP {
            ours.push(ms);
            anchor.push(a);
        }
        tokio::time::sleep(settle).await;
    }
    Ok((ours, anchor))
}
