//! API keys, made with the real `sandboxd keys` commands beside a running server: open until
//! the first key, then every `/v1` request needs one in force; and no listening beyond loopback
//! without a key unless told `--insecure-no-auth`.

use std::path::Path;
use std::process::{Command, Output};

use sandbox_api::CreateSession;
use sandbox_client::Client;
use sandbox_test_support::{binary, Daemon};

const QUIET: [(&str, &str); 2] = [("SANDBOXD_SESSION_POOL", "0"), ("SANDBOXD_RUN_POOL", "0")];

/// Runs `sandboxd ARGS` on data dir `data`.
fn sandboxd(data: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let out = Command::new(binary("sandboxd")?)
        .args(args)
        .env("SANDBOXD_DATA_DIR", data)
        .env("SANDBOXD_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()?;
    Ok(out)
}

/// A new key for `tenant`, as `sandboxd keys create` prints it.
fn create_key(data: &Path, tenant: &str) -> anyhow::Result<String> {
    let out = sandboxd(data, &["keys", "create", "--tenant", tenant], &[])?;
    anyhow::ensure!(out.status.success(), "keys create: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Waits (at most 5 s) for the daemon's log to say `needle`.
async fn logged(d: &Daemon, needle: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if d.log.lock().map(|l| l.iter().any(|line| line.contains(needle))).unwrap_or(false) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let said = d.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    anyhow::bail!("the log never said {needle:?}:\n{said}")
}

async fn status(url: &str, path: &str, header: Option<(&str, &str)>) -> anyhow::Result<reqwest::Response> {
    let mut req = reqwest::Client::new().get(format!("{url}{path}"));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    Ok(req.send().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_key_locks_the_api() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-keys-").tempdir_in("/tmp")?;
    let d = Daemon::start(data.path(), &QUIET)?;
    // Open until the first key, on loopback.
    let open = Client::with_key(&d.url, None);
    open.create_session(&CreateSession::default()).await?;

    let key = create_key(data.path(), "acme")?;
    assert!(key.starts_with("sbx_") && !key.contains(char::is_whitespace), "{key}");
    let second = create_key(data.path(), "acme")?;
    let no_key = status(&d.url, "/v1/sessions", None).await?;
    assert_eq!(no_key.status(), 401);
    assert_eq!(no_key.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let body: serde_json::Value = no_key.json().await?;
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let last = if key.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &key[..key.len() - 1]);
    for wrong in ["sbx_nope_nope", "not-a-key", forged.as_str()] {
        let auth = format!("Bearer {wrong}");
        assert_eq!(status(&d.url, "/v1/sessions", Some(("authorization", &auth))).await?.status(), 401, "{wrong}");
    }
    let auth = format!("Bearer {key}");
    assert_eq!(status(&d.url, "/v1/sessions", Some(("authorization", &auth))).await?.status(), 200);
    assert_eq!(status(&d.url, "/v1/sessions", Some(("x-api-key", &key))).await?.status(), 200, "the E2B SDK's header");
    Client::with_key(&d.url, Some(&key)).create_session(&CreateSession::default()).await?;
    // Health and the API document stay open.
    assert_eq!(status(&d.url, "/healthz", None).await?.status(), 200);
    assert_eq!(status(&d.url, "/openapi.json", None).await?.status(), 200);

    // Listed without secrets; a revoked key is refused at once, the other goes on.
    let listed = sandboxd(data.path(), &["keys", "list"], &[])?;
    let listed = String::from_utf8(listed.stdout)?;
    let id = listed.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap_or_default().to_string();
    assert!(id.starts_with("key_") && listed.contains("acme"), "{listed}");
    assert!(!listed.contains(&key[key.len() - 16..]), "no secret in the list: {listed}");
    let revoked = sandboxd(data.path(), &["keys", "revoke", &id], &[])?;
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert_eq!(status(&d.url, "/v1/sessions", Some(("authorization", &auth))).await?.status(), 401);
    let again = sandboxd(data.path(), &["keys", "revoke", &id], &[])?;
    assert!(!again.status.success(), "a key is revoked once");
    let other = format!("Bearer {second}");
    assert_eq!(status(&d.url, "/v1/sessions", Some(("authorization", &other))).await?.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_listening_beyond_loopback_without_a_key() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-keys-").tempdir_in("/tmp")?;
    let wide = [("SANDBOXD_LISTEN", "0.0.0.0:0")];
    let refused = sandboxd(data.path(), &[], &wide)?;
    let log = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && log.contains("beyond loopback"), "{log}");

    let mut env = QUIET.to_vec();
    env.extend(wide);
    env.push(("SANDBOXD_INSECURE_NO_AUTH", "true"));
    let d = Daemon::start(data.path(), &env)?;
    logged(&d, "--insecure-no-auth").await?;
    drop(d);

    let key = create_key(data.path(), "acme")?;
    let mut env = QUIET.to_vec();
    env.extend(wide);
    let d = Daemon::start(data.path(), &env)?;
    logged(&d, "API keys in force").await?;
    let url = d.url.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(status(&url, "/v1/sessions", None).await?.status(), 401);
    assert_eq!(status(&url, "/v1/sessions", Some(("x-api-key", &key))).await?.status(), 200);
    Ok(())
}
