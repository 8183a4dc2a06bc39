//! The E2B-compatible API, driven by the official E2B SDKs from PyPI (`tests/e2b/check.py`,
//! run unchanged, pointed at sandboxd by `E2B_API_URL`, `E2B_SANDBOX_URL` and `E2B_API_KEY`),
//! and the host-routed addressing, with explicit `Host` headers.

use sandbox_test_support::{create_key, run_check_script, Daemon};

const QUIET: [(&str, &str); 3] =
    [("SANDBOXD_SESSION_POOL", "0"), ("SANDBOXD_RUN_POOL", "0"), ("SANDBOXD_SWEEP_INTERVAL_S", "1")];

/// Runs the check script against `d` with `key`, the SDK pointed at it by its own variables.
fn check(d: &Daemon, key: &str, args: &[&str]) -> anyhow::Result<()> {
    let env = [
        ("E2B_API_URL", format!("{}/e2b", d.url)),
        ("E2B_SANDBOX_URL", format!("{}/e2b/sandbox", d.url)),
        ("E2B_API_KEY", key.to_string()),
    ];
    run_check_script("tests/e2b/check.py", args, &env)
}

#[test]
fn the_e2b_sdk_runs_unchanged() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-e2b-").tempdir_in("/tmp")?;
    let d = Daemon::start(data.path(), &QUIET)?;
    let (key, other) =
        (create_key(data.path(), &["--tenant", "acme"])?, create_key(data.path(), &["--tenant", "rival"])?);
    check(&d, &key, &["main", &other])
}

#[test]
fn the_idle_timeout_stops_e2b_sandboxes_too() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-e2b-").tempdir_in("/tmp")?;
    let mut env = QUIET.to_vec();
    env.push(("SANDBOXD_IDLE_TIMEOUT_S", "3"));
    let d = Daemon::start(data.path(), &env)?;
    let key = create_key(data.path(), &["--tenant", "acme"])?;
    check(&d, &key, &["idle"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_reached_by_host_under_the_e2b_domain() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-e2b-").tempdir_in("/tmp")?;
    let mut env = QUIET.to_vec();
    env.push(("SANDBOXD_E2B_DOMAIN", "sbx.test"));
    let d = Daemon::start(data.path(), &env)?;
    let key = create_key(data.path(), &["--tenant", "acme"])?;
    let http = reqwest::Client::new();
    let at = |host: &str, method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", d.url)).header("host", host)
    };

    // https://api.<domain> is the control API.
    let created = at("api.sbx.test", reqwest::Method::POST, "/v2/sandboxes")
        .header("x-api-key", &key)
        .json(&serde_json::json!({"templateID": "code-interpreter-v1", "timeout": 60}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await?;
    let (id, token) =
        (created["sandboxID"].as_str().unwrap_or_default(), created["envdAccessToken"].as_str().unwrap_or_default());
    assert_eq!(created["domain"], "sbx.test", "{created}");
    let refused =
        at("api.sbx.test", reqwest::Method::POST, "/v2/sandboxes").json(&serde_json::json!({})).send().await?;
    assert_eq!(refused.status(), 401, "the control API needs the key by host too");

    // https://49999-<id>.<domain> is its code interpreter, https://49983-<id>.<domain> its envd.
    let interpreter = format!("49999-{id}.sbx.test");
    let ran = at(&interpreter, reqwest::Method::POST, "/execute")
        .header("x-access-token", token)
        .json(&serde_json::json!({"code": "print(6 * 7)"}))
        .send()
        .await?;
    assert_eq!(ran.status(), 200);
    let lines = ran.text().await?;
    assert!(lines.lines().any(|l| l.contains("\"stdout\"") && l.contains("42")), "{lines}");
    assert!(lines.lines().last().is_some_and(|l| l.contains("end_of_execution")), "{lines}");
    let envd = format!("49983-{id}.sbx.test");
    let put = at(&envd, reqwest::Method::POST, "/files?path=/home/user/a.txt")
        .header("x-access-token", token)
        .header("content-type", "application/octet-stream")
        .body("by host")
        .send()
        .await?;
    assert_eq!(put.status(), 200);
    let got = at(&envd, reqwest::Method::GET, "/files?path=a.txt").header("x-access-token", token).send().await?;
    assert_eq!(got.text().await?, "by host");

    // The token is the session's: a wrong one finds no sandbox, as an unknown id does; none is
    // refused as a request without a key; another host is not routed.
    let wrong =
        at(&envd, reqwest::Method::GET, "/files?path=a.txt").header("x-access-token", "0".repeat(64)).send().await?;
    assert_eq!(wrong.status(), 404);
    let ghost = at("49983-ses_0123456789abcdef0123456789abcdef.sbx.test", reqwest::Method::GET, "/files?path=a.txt")
        .header("x-access-token", token)
        .send()
        .await?;
    assert_eq!(ghost.status(), 404);
    assert_eq!(at(&envd, reqwest::Method::GET, "/files?path=a.txt").send().await?.status(), 401);
    let elsewhere = at("49983-x.other.test", reqwest::Method::GET, "/files?path=a.txt").send().await?;
    assert_eq!(elsewhere.status(), 404);
    Ok(())
}
