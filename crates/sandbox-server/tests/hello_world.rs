//! The smallest complete test: a real server, a real sandbox, one line of Python.

use sandbox_api::{ExecutionStatus, Language};
use sandbox_test_support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let session = t.session().await?;
    let e = t.exec(&session.id, Language::Python, "print('hello, world')").await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(e.stdout, "hello, world\n");
    t.shutdown().await;
    Ok(())
}
