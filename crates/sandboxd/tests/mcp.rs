//! The MCP tools, driven by the official MCP Python client (`tests/mcp/check.py`) against the
//! real daemon: over Streamable HTTP at `/mcp`, and over stdio through `sbx mcp`. Each run checks
//! the tools an agent needs, images, errors, progress, cancellation and tenants.

use sandbox_test_support::{binary, create_key, run_check_script, Daemon};

const QUIET: [(&str, &str); 2] = [("SANDBOXD_SESSION_POOL", "0"), ("SANDBOXD_RUN_POOL", "0")];

fn check(args: &[&str]) -> anyhow::Result<()> {
    run_check_script("tests/mcp/check.py", args, &[])
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

/// The MCP Inspector's command-line mode (`scripts/install-test-clients.sh` installs it):
/// `ARGS --method ...`, its answer as JSON.
fn inspector(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let bin = sandbox_test_support::target_dir().join("../test-node/node_modules/.bin/mcp-inspector");
    anyhow::ensure!(bin.is_file(), "{} is missing; run scripts/install-test-clients.sh", bin.display());
    let out = std::process::Command::new(bin).arg("--cli").args(args).output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_str(&said)?)
}

#[test]
fn the_mcp_inspector_cli_lists_and_calls_the_tools() -> anyhow::Result<()> {
    // Over stdio, through `sbx mcp`, with a key.
    let data = tempfile::Builder::new().prefix("sandboxd-mcp-").tempdir_in("/tmp")?;
    let d = Daemon::start(data.path(), &QUIET)?;
    let key = create_key(data.path(), &["--tenant", "acme"])?;
    let sbx = binary("sbx")?.to_string_lossy().to_string();
    let (key_env, url_env) = (format!("SANDBOX_API_KEY={key}"), format!("SANDBOX_URL={}", d.url));
    let stdio = |method: &[&str]| {
        inspector(
            &[&["-e", key_env.as_str(), "-e", url_env.as_str(), sbx.as_str(), "mcp", "--method"], method].concat(),
        )
    };
    let tools = stdio(&["tools/list"])?;
    let names: Vec<&str> = tools["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"run_code") && names.len() == 8, "{tools}");
    let ran = stdio(&["tools/call", "--tool-name", "run_code", "--tool-arg", "code=print(6*7)"])?;
    assert_eq!(ran["content"][0]["text"], "42\n", "{ran}");

    // Over Streamable HTTP (this Inspector sends no key: an open server on loopback).
    let open = tempfile::Builder::new().prefix("sandboxd-mcp-").tempdir_in("/tmp")?;
    let d = Daemon::start(open.path(), &QUIET)?;
    let url = format!("{}/mcp", d.url);
    let ran = inspector(&[
        &url,
        "--transport",
        "http",
        "--method",
        "tools/call",
        "--tool-name",
        "run_code",
        "--tool-arg",
        "code=6*7",
    ])?;
    assert_eq!(ran["content"][0]["text"], "42", "{ran}");
    assert_eq!(ran["structuredContent"]["execution"]["outputs"][0]["type"], "execute_result", "{ran}");
    Ok(())
}
