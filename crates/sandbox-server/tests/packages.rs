//! Templates and package installs, with real pip against the real package registry (PyPI),
//! into real sandboxes. The packages are small pure-Python wheels that the host does not have.

use std::time::{Duration, Instant};

use sandbox_api::{
    CreateExecution, CreateSession, CreateTemplate, ExecutionStatus, InstallStatus, Language, LimitsRequest,
    TemplateStatus,
};
use sandbox_test_support::TestServer;

const BUILD_TIMEOUT: Duration = Duration::from_secs(240);

fn status_of(e: &sandbox_client::ClientError) -> u16 {
    e.status().map(|s| s.as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_packages_install_from_the_registry_into_the_running_kernel() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let other = t.session().await?;
    let probe = "import iniconfig; print(iniconfig.__file__)";
    let before = t.exec(&s.id, Language::Python, probe).await?;
    assert!(before.stderr.contains("ModuleNotFoundError"), "the host must not have iniconfig: {before:?}");

    let r = t.client.install_packages(&s.id, &["iniconfig"]).await?;
    assert_eq!(r.status, InstallStatus::Succeeded, "{r:?}");
    assert!(r.installed.iter().any(|p| p.name == "iniconfig"), "{r:?}");
    assert_eq!(r.requested, ["iniconfig"]);

    // The kernel that was already running finds it, without a restart, in the session's dir.
    let after = t.exec(&s.id, Language::Python, probe).await?;
    assert_eq!(after.status, ExecutionStatus::Succeeded, "{after:?}");
    assert!(after.stdout.starts_with("/opt/sandbox/packages/iniconfig/"), "{after:?}");
    // So does a fresh process.
    let fresh = CreateExecution { fresh: Some(true), ..CreateExecution::new(Language::Python, probe) };
    let fresh = t.client.execute(&s.id, &fresh).await?;
    assert_eq!(fresh.status, ExecutionStatus::Succeeded, "{fresh:?}");
    // Code in the session cannot change what was installed.
    let write = t.exec(&s.id, Language::Python, "open('/opt/sandbox/packages/evil.py', 'w')").await?;
    assert!(write.stderr.contains("Read-only file system"), "{write:?}");
    // The packages come from the system volume: their mount names no host path.
    let mounts = t.exec(&s.id, Language::Bash, "grep ' /opt/sandbox/packages ' /proc/self/mountinfo").await?;
    assert!(mounts.stdout.contains(&format!(" /packages/sessions/{} ", s.id)), "{mounts:?}");
    assert!(!mounts.stdout.contains(&t.data_dir().display().to_string()), "{mounts:?}");
    // The session itself is still offline.
    let net = t
        .exec(
            &s.id,
            Language::Python,
            "import socket\ntry:\n    socket.create_connection(('pypi.org', 443), timeout=3); print('online')\nexcept OSError as e:\n    print('offline', e)",
        )
        .await?;
    assert!(net.stdout.starts_with("offline"), "{net:?}");
    // Other sessions do not see it.
    let elsewhere = t.exec(&other.id, Language::Python, probe).await?;
    assert!(elsewhere.stderr.contains("ModuleNotFoundError"), "{elsewhere:?}");

    // A package that does not exist: the result says why, nothing is installed.
    let missing = t.client.install_packages(&s.id, &["surely-no-such-package-xq7"]).await?;
    assert_eq!(missing.status, InstallStatus::Failed);
    assert!(missing.installed.is_empty());
    let why = missing.error.unwrap_or_default();
    assert!(why.contains("No matching distribution"), "{why}");

    // pip options and URLs never reach pip.
    for bad in ["--index-url=http://127.0.0.1:1/simple", "iniconfig @ https://example.com/x.whl", "../x"] {
        let e = t.client.install_packages(&s.id, &[bad]).await.expect_err(bad);
        assert_eq!(status_of(&e), 422, "{bad}: {e}");
    }
    let e = t.client.install_packages("ses_unknown", &["iniconfig"]).await.expect_err("unknown session");
    assert_eq!(status_of(&e), 404);
    t.client.delete_session(&other.id).await?;
    assert!(!t.data_dir().join("system/packages/sessions").join(&other.id).exists(), "deleted with the session");
    let e = t.client.install_packages(&other.id, &["iniconfig"]).await.expect_err("deleted session");
    assert_eq!(status_of(&e), 409);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_preinstall_packages_and_give_sessions_their_defaults() -> anyhow::Result<()> {
    let mut t = TestServer::start().await?;
    let req = CreateTemplate {
        name: "writer".into(),
        description: Some("writes TOML".into()),
        packages: Some(vec!["tomli-w".into()]),
        env: Some([("TEMPLATE_VAR".to_string(), "from-template".to_string())].into()),
        limits: Some(LimitsRequest { memory_mb: Some(300), ..Default::default() }),
        timeout_s: Some(20.0),
        ..Default::default()
    };
    let created = t.client.create_template(&req).await?;
    assert_eq!(created.status, TemplateStatus::Building);
    // Not usable while it builds.
    let early = t.client.create_session(&CreateSession { template: Some("writer".into()), ..Default::default() }).await;
    if let Err(e) = &early {
        assert_eq!(status_of(e), 409, "{e}");
    }
    let built = t.client.wait_template("writer", BUILD_TIMEOUT).await?;
    assert_eq!(built.status, TemplateStatus::Ready, "{built:?}");
    assert!(built.installed.iter().any(|p| p.name == "tomli_w"), "{built:?}");
    let names: Vec<String> = t.client.list_templates().await?.templates.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["default", "writer"]);

    let s = t
        .client
        .create_session(&CreateSession {
            template: Some("writer".into()),
            env: Some([("OWN".to_string(), "1".to_string())].into()),
            ..Default::default()
        })
        .await?;
    assert_eq!((s.template.as_str(), s.limits.memory_mb, s.timeout_s), ("writer", 300, 20.0));
    assert_eq!(s.env.get("TEMPLATE_VAR").map(String::as_str), Some("from-template"));
    let code = "import os, tomli_w\nprint(tomli_w.__file__, os.environ['TEMPLATE_VAR'], os.environ['OWN'])\nprint(tomli_w.dumps({'a': 1}))";
    let e = t.exec(&s.id, Language::Python, code).await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    assert!(e.stdout.starts_with("/opt/sandbox/template/tomli_w/"), "{e:?}");
    assert!(e.stdout.contains("from-template 1\na = 1"), "{e:?}");
    let write = t.exec(&s.id, Language::Python, "open('/opt/sandbox/template/x.py', 'w')").await?;
    assert!(write.stderr.contains("Read-only file system"), "{write:?}");
    // The environment comes from the system volume: its mount names no host path.
    let mounts = t.exec(&s.id, Language::Bash, "grep ' /opt/sandbox/template ' /proc/self/mountinfo").await?;
    assert!(mounts.stdout.contains(" /templates/writer"), "{mounts:?}");
    assert!(!mounts.stdout.contains(&t.data_dir().display().to_string()), "{mounts:?}");
    // Sessions of the default template do not see it.
    let plain = t.session().await?;
    let e = t.exec(&plain.id, Language::Python, "import tomli_w").await?;
    assert!(e.stderr.contains("ModuleNotFoundError"), "{e:?}");

    // Templates survive a restart, and so do the sessions that use them.
    t.restart().await?;
    assert_eq!(t.client.get_template("writer").await?.status, TemplateStatus::Ready);
    let e = t.exec(&s.id, Language::Python, "import tomli_w; print('ok')").await?;
    assert_eq!(e.stdout, "ok\n", "{e:?}");

    // Deleting: refused while a session uses it, and for the built-in one.
    let e = t.client.delete_template("writer").await.expect_err("in use");
    assert_eq!(status_of(&e), 409, "{e}");
    t.client.delete_session(&s.id).await?;
    t.client.delete_template("writer").await?;
    assert_eq!(status_of(&t.client.get_template("writer").await.expect_err("gone")), 404);
    assert!(!t.data_dir().join("system/templates/writer").exists(), "its environment is removed");
    assert_eq!(status_of(&t.client.delete_template("default").await.expect_err("builtin")), 409);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_are_refused_or_fail_visibly() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let named = |name: &str| CreateTemplate { name: name.into(), ..Default::default() };
    for bad in ["", "Has-Caps", "-dash", "a/b", &"x".repeat(65)] {
        let e = t.client.create_template(&named(bad)).await.expect_err(bad);
        assert_eq!(status_of(&e), 422, "{bad:?}: {e}");
    }
    let cases = [
        CreateTemplate { rootfs: Some("ubuntu:24.04".into()), ..named("r") },
        CreateTemplate { kernel: Some("ruby".into()), ..named("k") },
        CreateTemplate { packages: Some(vec!["--pre".into()]), ..named("p") },
        CreateTemplate { limits: Some(LimitsRequest { memory_mb: Some(1), ..Default::default() }), ..named("l") },
        CreateTemplate { kernel: Some("none".into()), pool_size: Some(1), ..named("n") },
    ];
    for c in cases {
        let e = t.client.create_template(&c).await.expect_err(&c.name);
        assert_eq!(status_of(&e), 422, "{}: {e}", c.name);
    }
    assert_eq!(status_of(&t.client.create_template(&named("default")).await.expect_err("default")), 409);
    let plain = t.client.create_template(&CreateTemplate { kernel: Some("none".into()), ..named("plain") }).await?;
    assert_eq!(plain.status, TemplateStatus::Ready, "no packages: ready at once");
    assert_eq!(status_of(&t.client.create_template(&named("plain")).await.expect_err("twice")), 409);
    let s = t.client.create_session(&CreateSession { template: Some("plain".into()), ..Default::default() }).await?;
    assert_eq!(s.kernel, None);
    let e = t
        .client
        .create_session(&CreateSession { template: Some("nope".into()), ..Default::default() })
        .await
        .expect_err("unknown template");
    assert_eq!(status_of(&e), 422);
    assert!(e.to_string().contains("\"plain\""), "the message lists the templates: {e}");

    // A package that does not exist: the build fails, says why, and sessions are refused.
    let broken = CreateTemplate { packages: Some(vec!["surely-no-such-package-xq7".into()]), ..named("broken") };
    t.client.create_template(&broken).await?;
    let failed = t.client.wait_template("broken", BUILD_TIMEOUT).await?;
    assert_eq!(failed.status, TemplateStatus::Failed);
    assert!(failed.error.as_deref().unwrap_or("").contains("No matching distribution"), "{failed:?}");
    let e = t
        .client
        .create_session(&CreateSession { template: Some("broken".into()), ..Default::default() })
        .await
        .expect_err("failed template");
    assert_eq!(status_of(&e), 409);
    assert!(e.to_string().contains("No matching distribution"), "{e}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_keeps_its_own_warm_pool() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let req = CreateTemplate {
        name: "warm".into(),
        env: Some([("FLAVOUR".to_string(), "warm".to_string())].into()),
        pool_size: Some(1),
        ..Default::default()
    };
    t.client.create_template(&req).await?;
    let pooled = || async {
        let (_, r) = t.client.readiness().await?;
        anyhow::Ok(r.pools.templates.get("warm").copied().unwrap_or(0))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while pooled().await? < 1 {
        anyhow::ensure!(Instant::now() < deadline, "the template's pool never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = t.client.create_session(&CreateSession { template: Some("warm".into()), ..Default::default() }).await?;
    assert!(s.from_pool, "{s:?}");
    let e = t.exec(&s.id, Language::Python, "import os; print(os.environ['FLAVOUR'], os.getcwd())").await?;
    assert_eq!(e.stdout, "warm /workspace\n", "{e:?}");
    // Packages installed later reach a pooled session too (its package dir followed the rename).
    let r = t.client.install_packages(&s.id, &["iniconfig"]).await?;
    assert_eq!(r.status, InstallStatus::Succeeded, "{r:?}");
    let e = t.exec(&s.id, Language::Python, "import iniconfig; print('ok')").await?;
    assert_eq!(e.stdout, "ok\n", "{e:?}");
    // A session that differs from the pool's sandboxes starts cold.
    let other = CreateSession {
        template: Some("warm".into()),
        env: Some([("X".to_string(), "1".to_string())].into()),
        ..Default::default()
    };
    assert!(!t.client.create_session(&other).await?.from_pool);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pooled().await? < 1 {
        anyhow::ensure!(Instant::now() < deadline, "the template's pool never refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.shutdown().await;
    Ok(())
}
