//! The MCP tools, driven by the official MCP Python client (`tests/mcp/check.py`) against the
//! real daemon: over Streamable HTTP at `/mcp`, and over stdio through `sbx mcp`. Each run checks
//! the tools an agent needs, images, errors, progress, cancellation and tenants.

use std::process::Command;

use sandbox_test_support::{binary, create_key, test_venv_python, Daemon};

const QUIET: [(&str, &str); 2] = [("SANDBOXD_SESSION_POOL", "0"), ("SANDBOXD_RUN_POOL", "0")];

/// Runs the check script with `args`; its output is the test's on failure.
fn check(args: &[&str]) -> anyhow::Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp/check.py");
    let out = Command::new(test_venv_python()?).arg(script).args(args).output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success() && said.contains("all checks passed"), "{said}");
    Ok(())
}

#[test]
fn the_official_client_over_streamable_http() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-mcp-").tempdir_in("/tmp")?;
    let d = Daemon::start(data.path(), &QUIET)?;
    let (key, other) =
        (create_key(data.path(), &["--tenant", "acme"])?, create_key(data.path(), &["--tenant", "rival"])?);
    check(&["http", &format!("{}/mcp", d.url), &key, &other])
}

#[test]
fn the_official_client_over_stdio_through_sbx() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-mcp-").tempdir_in("/tmp")?;
    let d = Daemon::start(data.path(), &QUIET)?;
    let (key, other) =
        (create_key(data.path(), &["--tenant", "acme"])?, create_key(data.path(), &["--tenant", "rival"])?);
    let sbx = binary("sbx")?;
    check(&["stdio", &sbx.to_string_lossy(), &d.url, &key, &other])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_needs_a_key_and_a_known_host() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-mcp-").tempdir_in("/tmp")?;
    let d = Daemon::start(data.path(), &QUIET)?;
    let key = create_key(data.path(), &["--tenant", "acme"])?;
    let initialize = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}});
    let post = |key: Option<&str>, host: Option<&str>| {
        let mut req = reqwest::Client::new()
            .post(format!("{}/mcp", d.url))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(host) = host {
            req = req.header("host", host);
        }
        req
    };
    let refused = post(None, None).send().await?;
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert_eq!(post(Some(&key), None).send().await?.status(), 200);
    // A page on another site that reaches this port through DNS rebinding names its own host.
    assert_eq!(post(Some(&key), Some("attacker.example")).send().await?.status(), 403);
    Ok(())
}
