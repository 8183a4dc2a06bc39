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
    sandbox_test_support::create_key(data, &["--tenant", tenant])
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

/// `method path` with `key` and a JSON body: the status and the body as JSON (null if none).
async fn call(
    url: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut req = reqwest::Client::new().request(method, format!("{url}{path}")).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_only_its_own() -> anyhow::Result<()> {
    use reqwest::Method;
    use serde_json::json;
    let data = tempfile::Builder::new().prefix("sandboxd-tenants-").tempdir_in("/tmp")?;
    let d = Daemon::start(data.path(), &QUIET)?;
    let acme = create_key(data.path(), "acme")?;
    let rival = create_key(data.path(), "rival")?;
    let admin = sandbox_test_support::create_key(data.path(), &["--tenant", "ops", "--admin"])?;
    let url = d.url.as_str();

    // Acme's session, with a file, an execution and a private template.
    let (_, session) = call(url, &acme, Method::POST, "/v1/sessions", Some(json!({}))).await?;
    let id = session["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(session["tenant"], "acme", "{session}");
    let put = reqwest::Client::new()
        .put(format!("{url}/v1/sessions/{id}/files/secret.txt"))
        .bearer_auth(&acme)
        .body("acme's secret")
        .send()
        .await?;
    assert_eq!(put.status(), 201);
    let run = json!({"language": "python", "code": "x = 42"});
    let (code, exec) = call(url, &acme, Method::POST, &format!("/v1/sessions/{id}/executions"), Some(run)).await?;
    assert_eq!(code, 200, "{exec}");
    let exec_id = exec["id"].as_str().unwrap_or_default().to_string();
    let (code, one_shot) =
        call(url, &acme, Method::POST, "/v1/run", Some(json!({"language": "python", "code": "print(1)"}))).await?;
    assert_eq!(code, 200, "{one_shot}");
    let run_id = one_shot["id"].as_str().unwrap_or_default().to_string();
    let (code, t) = call(url, &acme, Method::POST, "/v1/templates", Some(json!({"name": "acme-only"}))).await?;
    assert_eq!((code, &t["tenant"]), (201, &json!("acme")), "{t}");

    // To a rival, each of them answers exactly as an id that never was.
    let ghost = "ses_0123456789abcdef0123456789abcdef";
    let session_routes: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, "/v1/sessions/{}".into(), None),
        (Method::POST, "/v1/sessions/{}/executions".into(), Some(json!({"language": "python", "code": "print(x)"}))),
        (Method::GET, "/v1/sessions/{}/executions".into(), None),
        (Method::POST, "/v1/sessions/{}/interrupt".into(), None),
        (Method::POST, "/v1/sessions/{}/invoke".into(), Some(json!({"handler": "m.f"}))),
        (Method::POST, "/v1/sessions/{}/restart".into(), None),
        (Method::POST, "/v1/sessions/{}/resume".into(), None),
        (Method::POST, "/v1/sessions/{}/stop".into(), None),
        (Method::POST, "/v1/sessions/{}/packages".into(), Some(json!({"packages": ["six"]}))),
        (Method::GET, "/v1/sessions/{}/files".into(), None),
        (Method::GET, "/v1/sessions/{}/files/secret.txt".into(), None),
        (Method::POST, "/v1/sessions/{}/files/secret.txt:move".into(), Some(json!({"to": "mine.txt"}))),
        (Method::DELETE, "/v1/sessions/{}/files/secret.txt".into(), None),
        (Method::GET, "/v1/sessions/{}/archive".into(), None),
        (Method::DELETE, "/v1/sessions/{}".into(), None),
    ];
    for (method, path, body) in &session_routes {
        let theirs = call(url, &rival, method.clone(), &path.replace("{}", &id), body.clone()).await?;
        let none = call(url, &rival, method.clone(), &path.replace("{}", ghost), body.clone()).await?;
        let said = theirs.1.to_string().replace(&id, ghost);
        assert_eq!((theirs.0, said), (404, none.1.to_string()), "{method} {path}: {theirs:?} vs {none:?}");
    }
    for (path, missing) in
        [(format!("/v1/executions/{exec_id}"), "exe_none"), (format!("/v1/executions/{run_id}"), "exe_none")]
    {
        let theirs = call(url, &rival, Method::GET, &path, None).await?;
        assert_eq!(theirs.0, 404, "{path}: {theirs:?}");
        let none = call(url, &rival, Method::GET, &format!("/v1/executions/{missing}"), None).await?;
        assert_eq!(
            theirs.1.to_string().replace(path.rsplit('/').next().unwrap_or_default(), missing),
            none.1.to_string()
        );
    }
    let (code, _) = call(url, &rival, Method::GET, "/v1/templates/acme-only", None).await?;
    assert_eq!(code, 404);
    let (code, _) = call(url, &rival, Method::DELETE, "/v1/templates/acme-only", None).await?;
    assert_eq!(code, 404);
    let (code, refused) =
        call(url, &rival, Method::POST, "/v1/sessions", Some(json!({"template": "acme-only"}))).await?;
    assert_eq!(code, 422, "{refused}");
    assert!(!refused.to_string().contains("acme-only\""), "the list of templates leaves acme's out: {refused}");

    // Lists are filtered; an admin sees all.
    let listed = |v: &serde_json::Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str().or(s["name"].as_str()))
            .map(String::from)
            .collect()
    };
    let (_, mine) = call(url, &rival, Method::GET, "/v1/sessions", None).await?;
    assert!(listed(&mine, "sessions").is_empty(), "{mine}");
    let (_, templates) = call(url, &rival, Method::GET, "/v1/templates", None).await?;
    assert_eq!(listed(&templates, "templates"), ["default"], "{templates}");
    let (_, all) = call(url, &admin, Method::GET, "/v1/sessions", None).await?;
    assert_eq!(listed(&all, "sessions"), std::slice::from_ref(&id));
    let (_, templates) = call(url, &admin, Method::GET, "/v1/templates", None).await?;
    assert_eq!(listed(&templates, "templates"), ["default", "acme-only"]);
    assert_eq!(call(url, &admin, Method::GET, &format!("/v1/executions/{exec_id}"), None).await?.0, 200);
    // A shared template: every tenant uses it, only an admin deletes it.
    let (code, _) = call(url, &admin, Method::POST, "/v1/templates", Some(json!({"name": "shared"}))).await?;
    assert_eq!(code, 201);
    let (code, refused) = call(url, &rival, Method::DELETE, "/v1/templates/shared", None).await?;
    assert_eq!((code, &refused["error"]["code"]), (403, &json!("forbidden")), "{refused}");

    // The attack: take over a deleted session's workspace during its retention period.
    let (code, _) = call(url, &acme, Method::DELETE, &format!("/v1/sessions/{id}"), None).await?;
    assert_eq!(code, 204);
    let (code, refused) = call(url, &rival, Method::POST, "/v1/sessions", Some(json!({"workspace_from": id}))).await?;
    assert_eq!(code, 422, "{refused}");
    let (code, nothing) =
        call(url, &rival, Method::POST, "/v1/sessions", Some(json!({"workspace_from": ghost}))).await?;
    assert_eq!((code, refused.to_string().replace(&id, ghost)), (422, nothing.to_string()));
    // Acme itself may, and finds its file.
    let (code, heir) = call(url, &acme, Method::POST, "/v1/sessions", Some(json!({"workspace_from": id}))).await?;
    assert_eq!(code, 201, "{heir}");
    let heir = heir["id"].as_str().unwrap_or_default();
    let file = reqwest::Client::new()
        .get(format!("{url}/v1/sessions/{heir}/files/secret.txt"))
        .bearer_auth(&acme)
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(file, "acme's secret");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_held_to_its_limits() -> anyhow::Result<()> {
    use reqwest::Method;
    use serde_json::json;
    let data = tempfile::Builder::new().prefix("sandboxd-tenant-limits-").tempdir_in("/tmp")?;
    let mut env = QUIET.to_vec();
    env.extend([
        ("SANDBOXD_TENANT_MAX_SESSIONS", "1"),
        ("SANDBOXD_TENANT_MAX_EXECUTIONS", "1"),
        ("SANDBOXD_TENANT_MAX_WORKSPACE_MB", "1"),
    ]);
    let d = Daemon::start(data.path(), &env)?;
    let (acme, rival) = (create_key(data.path(), "acme")?, create_key(data.path(), "rival")?);
    let url = d.url.as_str();
    let refused_for = |(code, body): &(u16, serde_json::Value), status: u16, flag: &str| {
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(*code == status && message.contains(flag), "{status} naming {flag}: {code} {body}");
    };

    // Running sessions.
    let (code, first) = call(url, &acme, Method::POST, "/v1/sessions", Some(json!({}))).await?;
    assert_eq!(code, 201, "{first}");
    let first = first["id"].as_str().unwrap_or_default().to_string();
    let second = call(url, &acme, Method::POST, "/v1/sessions", Some(json!({}))).await?;
    refused_for(&second, 429, "--tenant-max-sessions 1");
    assert_eq!(second.1["error"]["code"], "tenant_limit");
    assert_eq!(call(url, &rival, Method::POST, "/v1/sessions", Some(json!({}))).await?.0, 201, "another tenant's own");

    // Executions queued or running.
    let sleeper = json!({"language": "python", "code": "import time; time.sleep(60)", "wait": false});
    let (code, _) = call(url, &acme, Method::POST, &format!("/v1/sessions/{first}/executions"), Some(sleeper)).await?;
    assert_eq!(code, 202);
    let quick = json!({"language": "python", "code": "print(1)"});
    let more = call(url, &acme, Method::POST, &format!("/v1/sessions/{first}/executions"), Some(quick.clone())).await?;
    refused_for(&more, 429, "--tenant-max-executions 1");
    refused_for(
        &call(url, &acme, Method::POST, "/v1/run", Some(quick.clone())).await?,
        429,
        "--tenant-max-executions 1",
    );
    assert_eq!(call(url, &rival, Method::POST, "/v1/run", Some(quick.clone())).await?.0, 200);
    let mut ran = (0, serde_json::Value::Null);
    for _ in 0..100 {
        // Until the sleeper runs, there is nothing to interrupt.
        call(url, &acme, Method::POST, &format!("/v1/sessions/{first}/interrupt"), None).await?;
        ran = call(url, &acme, Method::POST, &format!("/v1/sessions/{first}/executions"), Some(quick.clone())).await?;
        if ran.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ran.0, 200, "room again once the sleeper ended: {ran:?}");

    // Bytes in the tenant's workspaces.
    let upload = |name: &str| {
        reqwest::Client::new()
            .put(format!("{url}/v1/sessions/{first}/files/{name}"))
            .bearer_auth(&acme)
            .body(vec![7u8; 600 << 10])
            .send()
    };
    assert_eq!(upload("a.bin").await?.status(), 201);
    let over = upload("b.bin").await?;
    let over = (over.status().as_u16(), over.json::<serde_json::Value>().await?);
    refused_for(&over, 507, "--tenant-max-workspace-mb 1");

    // A stopped session counts again when it would resume.
    assert_eq!(call(url, &acme, Method::POST, &format!("/v1/sessions/{first}/stop"), None).await?.0, 200);
    let (code, other) = call(url, &acme, Method::POST, "/v1/sessions", Some(json!({}))).await?;
    assert_eq!(code, 201, "{other}");
    let again = call(url, &acme, Method::POST, &format!("/v1/sessions/{first}/resume"), None).await?;
    refused_for(&again, 429, "--tenant-max-sessions 1");
    let run_in_stopped =
        call(url, &acme, Method::POST, &format!("/v1/sessions/{first}/executions"), Some(quick)).await?;
    refused_for(&run_in_stopped, 429, "--tenant-max-sessions 1");
    Ok(())
}
