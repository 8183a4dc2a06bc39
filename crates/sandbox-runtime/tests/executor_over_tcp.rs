//! The real executor reached over TCP, as the Kubernetes runtime reaches it over a pod's
//! network: only a client with the sandbox's token is served, a newer client takes over from
//! an older one, and the kernel keeps its variables from one client to the next (a replica
//! that adopts a lost one's sessions finds them as they were).

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use sandbox_protocol::{ExecRequest, Language, Request};
use sandbox_runtime::{ExecutorClient, RuntimeError};

const TOKEN: &str = "a-sandbox-secret";

/// The executor under bubblewrap (a workspace at /workspace, the host's network), listening on
/// `addr`: what a sandbox pod runs.
struct Listening {
    child: Child,
    _workspace: tempfile::TempDir,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(addr: SocketAddr) -> anyhow::Result<Listening> {
    let workspace = tempfile::tempdir()?;
    let executor = sandbox_test_support::binary("sandbox-executor")?;
    let child = sandbox_test_support::kubernetes::sandboxed_executor(&executor, workspace.path())
        .env(sandbox_protocol::LISTEN_ENV, addr.to_string())
        .env(sandbox_protocol::TOKEN_ENV, TOKEN)
        .spawn()?;
    Ok(Listening { child, _workspace: workspace })
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

/// A client with `token`, once the executor listens.
async fn connect(addr: SocketAddr, token: &str) -> Result<ExecutorClient, RuntimeError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ExecutorClient::connect(addr, token, Duration::from_secs(5)).await {
            Err(RuntimeError::SandboxDied(why)) if why.contains("cannot reach") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn python(id: &str, code: &str) -> ExecRequest {
    sandbox_test_support::exec_request(id, Language::Python, code, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_outlives_its_client_and_only_the_token_holder_is_served() -> anyhow::Result<()> {
    let addr = free_addr()?;
    let mut sandbox = start(addr)?;

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

    // The second goes away, as a killed replica does: the next client finds the kernel as it was.
    drop(second);
    let third = connect(addr, TOKEN).await?;
    let got = third.exec(python("e3", "print(x)"), None).await?;
    assert_eq!(got.stdout, "41\n", "{got:?}");

    // Only a shutdown ends the sandbox.
    third.notify(&Request::Shutdown).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.child.try_wait()?.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the executor did not exit after Shutdown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[test]
fn an_executor_told_to_listen_with_no_token_refuses_to_start() -> anyhow::Result<()> {
    let workspace = tempfile::tempdir()?;
    let executor = sandbox_test_support::binary("sandbox-executor")?;
    let status = sandbox_test_support::kubernetes::sandboxed_executor(&executor, workspace.path())
        .env(sandbox_protocol::LISTEN_ENV, free_addr()?.to_string())
        .env_remove(sandbox_protocol::TOKEN_ENV)
        .status()?;
    assert_eq!(status.code(), Some(72));
    Ok(())
}
