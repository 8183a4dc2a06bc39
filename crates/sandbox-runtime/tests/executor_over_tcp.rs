//! The real executor reached over TCP, as the Kubernetes runtime reaches it over a pod's
//! network, run with the exact command line a sandbox pod runs (from `spec::sandbox_pod`) in a
//! container of the sandbox image (the fake cluster's): the executor listening itself, or,
//! with the second layer, its relay listening in front of the executor under bubblewrap. Either
//! way only a client with the sandbox's token is served, a newer client takes over from an
//! older one, and the kernel keeps its variables from one client to the next (a replica that
//! adopts a lost one's sessions finds them as they were).

use std::io::Write;
use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use sandbox_protocol::{ExecRequest, Language, Request};
use sandbox_runtime::kubernetes::spec::{self, Owner, Settings};
use sandbox_runtime::{ExecutorClient, ResourceLimits, RuntimeError};
use sandbox_test_support::kubernetes::FakeImage;

const TOKEN: &str = "a-sandbox-secret";
const LIMITS: ResourceLimits = ResourceLimits { memory_bytes: 512 << 20, pids: 128, cpus: 1.0 };

/// A sandbox pod's container, listening on `addr`.
struct Listening {
    child: Child,
    _image: FakeImage,
    _workspace: tempfile::TempDir,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a sandbox pod's container runs: its command and args.
fn pod_command(second_layer: bool) -> Vec<String> {
    let settings = Settings { second_layer, ..Settings::default() };
    let pod = spec::sandbox_pod(&settings, &Owner::default(), "sbx-test", &LIMITS, None);
    let container = pod.spec.map(|s| s.containers[0].clone()).unwrap_or_default();
    container.command.into_iter().chain(container.args).flatten().collect()
}

fn start(addr: SocketAddr, second_layer: bool, token: Option<&str>) -> anyhow::Result<Listening> {
    let workspace = tempfile::tempdir()?;
    let image = FakeImage::new(sandbox_test_support::binary("sandbox-executor")?)?;
    let mut command = image.container(workspace.path(), (1000, 1000), &pod_command(second_layer), false);
    command.env_clear().env(sandbox_protocol::LISTEN_ENV, addr.to_string());
    if let Some(token) = token {
        command.env(sandbox_protocol::TOKEN_ENV, token);
    }
    Ok(Listening { child: command.spawn()?, _image: image, _workspace: workspace })
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

/// A client with `token` (a refused connection is tried again while the pod starts).
async fn connect(addr: SocketAddr, token: &str) -> Result<ExecutorClient, RuntimeError> {
    ExecutorClient::connect(addr, token, Duration::from_secs(20)).await
}

fn python(id: &str, code: &str) -> ExecRequest {
    sandbox_test_support::exec_request(id, Language::Python, code, true)
}

async fn the_kernel_outlives_its_client_and_only_the_token_holder_is_served(second_layer: bool) -> anyhow::Result<()> {
    let addr = free_addr()?;
    let mut sandbox = start(addr, second_layer, Some(TOKEN))?;

    let refused = connect(addr, "a-guess").await;
    assert!(matches!(refused, Err(RuntimeError::SandboxDied(_))), "a wrong token is not served: {:?}", refused.err());

    let first = connect(addr, TOKEN).await?;
    let set = first.exec(python("e1", "x = 41"), None).await?;
    assert_eq!(set.exit_code, Some(0), "{set:?}");

    // A second replica takes over: the first client is cut off, the kernel is not.
    let second = connect(addr, TOKEN).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.is_alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!first.is_alive(), "the older client is cut off");
    let got = second.exec(python("e2", "print(x + 1)"), None).await?;
    assert_eq!(got.stdout, "42\n", "{got:?}");

    // The second goes away, as a killed replica does, in the middle of a request: the half
    // frame reaches no executor, and the next client finds the kernel as it was.
    drop(second);
    let mut cut = std::net::TcpStream::connect(addr)?;
    cut.write_all(&sandbox_protocol::encode(&sandbox_protocol::Hello { token: TOKEN.into() })?)?;
    // Served (the newest proven client wins, so the next must come after it).
    let ready = sandbox_protocol::read_raw_frame(&mut cut)?;
    assert!(ready.is_some(), "the cut client was served");
    let frame = sandbox_protocol::encode(&Request::Exec(python("e-cut", "x = 0")))?;
    cut.write_all(&frame[..frame.len() / 2])?;
    drop(cut);
    let third = connect(addr, TOKEN).await?;
    let got = third.exec(python("e3", "print(x)"), None).await?;
    assert_eq!(got.stdout, "41\n", "{got:?}");

    // Only a shutdown ends the sandbox.
    third.notify(&Request::Shutdown).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.child.try_wait()?.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the sandbox did not exit after Shutdown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_keeps_its_kernel_across_clients() -> anyhow::Result<()> {
    the_kernel_outlives_its_client_and_only_the_token_holder_is_served(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_its_relay_the_executor_under_bubblewrap_keeps_its_kernel_across_clients() -> anyhow::Result<()> {
    the_kernel_outlives_its_client_and_only_the_token_holder_is_served(true).await
}

/// Under the second layer code has no network at all: not the pod's address, where the
/// relay listens (without it, code shares the pod's network, which only the NetworkPolicy
/// fences). Either way the token is nowhere code can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_second_layer_code_reaches_neither_the_network_nor_the_token() -> anyhow::Result<()> {
    for second_layer in [true, false] {
        let got = probe(second_layer).await?;
        assert_eq!(got.contains("no network:"), second_layer, "second layer {second_layer}: {got}");
        assert!(got.contains("token seen: False"), "{got}");
        assert!(got.contains("env: []"), "{got}");
    }
    Ok(())
}

/// What code in a sandbox pod finds of the network and of the token.
async fn probe(second_layer: bool) -> anyhow::Result<String> {
    let addr = free_addr()?;
    let _sandbox = start(addr, second_layer, Some(TOKEN))?;
    let client = connect(addr, TOKEN).await?;
    let probe = format!(
        r#"
import os, socket, glob
try:
    socket.create_connection(("{ip}", {port}), timeout=2)
    print("reached the relay")
except OSError as e:
    print("no network:", type(e).__name__)
print("interfaces:", sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else "none")
seen = []
for path in glob.glob("/proc/*/environ"):
    try:
        seen.append(open(path, "rb").read())
    except OSError:
        pass
print("token seen:", any(b"{token}" in e for e in seen), "in", len(seen))
print("env:", sorted(k for k in os.environ if k.startswith("SANDBOX_EXECUTOR")))
"#,
        ip = addr.ip(),
        port = addr.port(),
        token = TOKEN
    );
    let got = client.exec(python("e1", &probe), None).await?;
    assert_eq!(got.exit_code, Some(0), "{got:?}");
    Ok(got.stdout)
}

#[test]
fn an_executor_or_relay_told_to_listen_with_no_token_refuses_to_start() -> anyhow::Result<()> {
    for second_layer in [false, true] {
        let mut sandbox = start(free_addr()?, second_layer, None)?;
        let status = sandbox.child.wait()?;
        assert_eq!(status.code(), Some(72), "second layer: {second_layer}");
    }
    Ok(())
}
