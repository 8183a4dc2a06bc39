//! The host: tmpfs, the root and /dev, processes and signals, admission, bursts, volumes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_are_sized_to_the_memory_limit_and_the_root_is_read_only() -> anyhow::Result<()> {
    // /tmp (256 MiB by default) filled in a 128 MiB sandbox was an OOM kill, not ENOSPC; / and
    // /dev were writable tmpfs with no size at all.
    let t = TestServer::start().await?;
    let limits = sandbox_api::LimitsRequest { memory_mb: Some(128), ..Default::default() };
    let s = t.client.create_session(&sandbox_api::CreateSession { limits: Some(limits), ..Default::default() }).await?;
    let code = "df -m --output=size /tmp /dev/shm | tail -n 2 | tr -d ' ' | tr '\\n' ' '; echo
for f in /x /dev/x /etc/x /usr/x; do (echo 1 > $f) 2>/dev/null && echo \"wrote $f\" || echo \"refused $f\"; done
dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1 | grep -o 'No space left on device' | head -n 1
rm /tmp/fill
dd if=/dev/zero of=/dev/shm/fill bs=1M count=200 2>&1 | grep -o 'No space left on device' | head -n 1
rm /dev/shm/fill
echo shm-ok > /dev/shm/note && cat /dev/shm/note";
    let e = t.exec(&s.id, Language::Bash, code).await?;
    assert_eq!(e.status, sandbox_api::ExecutionStatus::Succeeded, "{e:?}");
    assert_eq!(
        e.stdout,
        "64 64 \nrefused /x\nrefused /dev/x\nrefused /etc/x\nrefused /usr/x\nNo space left on device\nNo space left on device\nshm-ok\n",
        "{}",
        e.stderr
    );
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_killed_between_cells_is_replaced_before_the_next_one_runs() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    t.exec(&s.id, Language::Python, "x = 1").await?;
    // A one-shot execution in the same sandbox kills the kernel between cells.
    let e = t
        .exec(&s.id, Language::Bash, "pkill -9 -f 'kernel[.]py'; sleep 0.3; pgrep -f 'kernel[.]py' || echo gone")
        .await?;
    assert_eq!(e.stdout, "gone\n", "{e:?}");
    // The next cell was not its victim: it runs, in a fresh kernel.
    let e = t.exec(&s.id, Language::Python, "print('ran', 'x' in dir())").await?;
    assert_eq!((e.status, e.stdout.as_str()), (sandbox_api::ExecutionStatus::Succeeded, "ran False\n"), "{e:?}");
    let session = t.client.get_session(&s.id).await?;
    assert_eq!(session.kernel_restarts, 1);
    let why = session.last_kernel_death.unwrap_or_default();
    assert!(why.contains("signal 9") && why.ends_with("between executions"), "{why}");
    // A death during a cell is that cell's, and says so too.
    let e = t.exec(&s.id, Language::Python, "import os; os._exit(3)").await?;
    assert_eq!(e.status, sandbox_api::ExecutionStatus::KernelDied);
    let session = t.client.get_session(&s.id).await?;
    assert_eq!(session.kernel_restarts, 2);
    let why = session.last_kernel_death.unwrap_or_default();
    assert!(why.starts_with("exited with code 3, during exe_"), "{why}");
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

fn host_memory() -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no MemTotal"))?;
    Ok(kib << 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_sessions_that_would_overcommit_memory() -> anyhow::Result<()> {
    // Room for two sandboxes of 512 MiB and not three, whatever the host.
    let factor = (1280u64 << 20) as f64 / host_memory()? as f64;
    let t = TestServer::start_with(|c| c.memory_overcommit = factor).await?;
    let a = t.session().await?;
    let b = t.session().await?;
    let (status, body) = create_raw(&t, serde_json::json!({})).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""code":"overloaded""#) && body.contains("not enough memory"), "{body}");
    // A smaller one fits; a stopped session frees its share, and cannot resume while full.
    let (status, body) = create_raw(&t, serde_json::json!({"limits": {"memory_mb": 128}})).await?;
    assert_eq!(status, 201, "{body}");
    t.client.stop_session(&b.id).await?;
    let (status, body) = create_raw(&t, serde_json::json!({})).await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = t.client.raw(Method::POST, &format!("/v1/sessions/{}/resume", b.id), None).await?;
    assert_eq!(status, 503, "{body}");
    t.assert_healthy(&a.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_sessions_that_would_overcommit_disk() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.disk_overcommit = 1e-9).await?;
    let (status, body) = create_raw(&t, serde_json::json!({})).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not enough disk") && body.contains("--disk-overcommit"), "{body}");
    t.shutdown().await;
    let t = TestServer::start_with(|c| c.min_free_disk_mb = u64::MAX >> 21).await?;
    let (status, body) = create_raw(&t, serde_json::json!({})).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not enough free disk"), "{body}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_creates_is_served_in_turn_or_refused_at_once_never_timed_out() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| {
        c.max_concurrent_starts = 1;
        c.max_queued_starts = 2;
        // Making volumes is serialized, and would space the starts out.
        c.local.workspace_volumes = sandbox_server::config::VolumeMode::Off;
    })
    .await?;
    // Slow starts (a tenth of a core each), sent from a runtime of their own so that they
    // arrive together whatever the server's threads are doing.
    let body = serde_json::to_vec(&serde_json::json!({"kernel": "none", "limits": {"cpu": 0.1, "memory_mb": 64}}))?;
    // A machine busy with other tests can still space a burst out; a burst that found the
    // queue never full proves nothing either way, so it is sent again (at most three times).
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..3 {
        let client = t.client.clone();
        let body = body.clone();
        let answers = std::thread::spawn(move || -> anyhow::Result<Vec<_>> {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            Ok(rt.block_on(futures_util::future::join_all((0..40).map(|_| {
                let (client, body) = (client.clone(), body.clone());
                async move { client.raw(Method::POST, "/v1/sessions", Some(body)).await }
            }))))
        });
        let answers = tokio::task::block_in_place(|| answers.join()).map_err(|_| anyhow::anyhow!("burst thread"))??;
        by_status.clear();
        for answer in answers {
            let (status, text) = answer?;
            *by_status.entry(status.as_u16()).or_default() += 1;
            if status == 429 {
                assert!(text.contains("too many sandboxes are starting"), "{text}");
            }
        }
        if by_status.contains_key(&429) {
            break;
        }
    }
    let served = by_status.get(&201).copied().unwrap_or(0);
    let refused = by_status.get(&429).copied().unwrap_or(0);
    assert_eq!(served + refused, 40, "only 201 and 429: {by_status:?}");
    assert!(served >= 3 && refused >= 1, "{by_status:?}");
    // Once the burst is over, there is room again.
    let (status, text) = create_raw(&t, serde_json::json!({"kernel": "none"})).await?;
    assert_eq!(status, 201, "{text}");
    let s = t.session().await?;
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

/// Workspace volumes mounted on the host under `data_dir` (the spares made ahead left out).
fn mounted_under(data_dir: &std::path::Path) -> usize {
    let root = format!("{}/", data_dir.join("workspaces").to_string_lossy());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).and_then(|mount_point| mount_point.strip_prefix(&root)))
        .filter(|name| !name.starts_with('.'))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_without_a_sandbox_are_unmounted_and_lose_nothing() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.sweep_interval_s = 0.2).await?;
    // Create and delete: 348 such left 348 mounts behind, and every sandbox start slower.
    let body = serde_json::json!({"kernel": "none", "limits": {"memory_mb": 64}});
    for _ in 0..40 {
        let (status, text) = create_raw(&t, body.clone()).await?;
        anyhow::ensure!(status == 201, "{text}");
        let id = serde_json::from_str::<serde_json::Value>(&text)?["id"].as_str().unwrap_or_default().to_string();
        t.client.delete_session(&id).await?;
    }
    let mut after = mounted_under(t.data_dir());
    for _ in 0..20 {
        if after == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = mounted_under(t.data_dir());
    }
    assert_eq!(after, 0, "workspace volumes still mounted after 40 creates and deletes");

    // A stopped session's files: written by code, unmounted at the stop, read and written
    // through the API (mounted for it, unmounted again by the idle sweep), and there at resume.
    let s = t.session().await?;
    t.exec(&s.id, Language::Bash, "echo from-code > a.txt").await?;
    t.client.stop_session(&s.id).await?;
    let ws = t.data_dir().join("workspaces").join(&s.id);
    assert!(!sandbox_workspace::volume::is_mount_point(&ws), "unmounted once stopped");
    assert!(t.data_dir().join("volumes").join(format!("{}.img", s.id)).is_file(), "a volume (root, loop devices)");
    assert_eq!(t.client.read_file(&s.id, "a.txt").await?, b"from-code\n");
    t.client.upload(&s.id, "b.txt", reqwest::Body::from("from-api"), Some(8)).await?;
    for _ in 0..50 {
        if !sandbox_workspace::volume::is_mount_point(&ws) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!sandbox_workspace::volume::is_mount_point(&ws), "the idle sweep unmounts it again");
    assert!(!ws.join("a.txt").exists() && !ws.join("b.txt").exists(), "nothing was written under the mount point");
    t.client.resume_session(&s.id).await?;
    assert_eq!(t.exec(&s.id, Language::Bash, "cat a.txt b.txt").await?.stdout, "from-code\nfrom-api");
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inode_bomb_in_the_workspace_ends_at_its_volume() -> anyhow::Result<()> {
    // A small quota makes a small volume, with few inodes.
    let t = TestServer::start_with(|c| c.workspace_quota_bytes = 8 << 20).await?;
    let s = t.session().await?;
    let code = "mkdir bomb; cd bomb; i=0; while : 2>/dev/null > f$i; do i=$((i+1)); [ $i -gt 100000 ] && break; done; \
                [ $i -le 100000 ] && echo stopped || echo unbounded; touch again 2>&1 | grep -o 'No space left on device'";
    let e = t.exec(&s.id, Language::Bash, code).await?;
    assert_eq!(e.stdout, "stopped\nNo space left on device\n", "{e:?}");
    // The session goes on: removing the files frees the inodes again.
    let e = t.exec(&s.id, Language::Bash, "rm -rf bomb && touch fine && echo ok").await?;
    assert_eq!(e.stdout, "ok\n", "{e:?}");
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}
